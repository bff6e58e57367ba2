/*
 * bpd.c — a program that uses a model pxc emitted as standalone C: it loads
 * the weights file, reads images and prints the model's bits per dimension
 * on them. It needs nothing of pxc but the two emitted files.
 *
 *     pxc emit models/fashion_mnist.yaml --checkpoint run/ -o out/
 *     cc -std=c11 -O2 -Iout examples/bpd.c out/model.c -lopenblas -lm -o bpd
 *     ./bpd out/model.weights t10k-images-idx3-ubyte [labels] [max-images]
 *
 * (-DPXC_NO_CBLAS instead of -lopenblas: nothing but a C compiler.)
 *
 * Images: an IDX file of unsigned bytes (magic 0x00000803, [N,H,W], or
 * 0x00000804, [N,H,W,C]) or a raw file of N x H x W x C bytes (NHWC), with
 * the model's H, W, C. Labels (conditional models only): an IDX file of
 * unsigned bytes (0x00000801) or one raw byte per image.
 *
 * It reaches the model through the fixed names model.h defines
 * (PXC_EMITTED_MODEL, PXC_EMITTED_WEIGHTS), whatever the model is called.
 *
 * Prints "<b> bits/dim over <N> images (<nats> nats)": the negative
 * log-likelihood in nats summed over the images, divided by
 * ln 2 * N * H * W * C.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define BATCH 16

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            unsigned char *nb = realloc(buf, cap + 64);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The pixels of an IDX or raw image file: *count images of H x W x C bytes. */
static const unsigned char *image_bytes(const unsigned char *buf, size_t len, size_t per_image, size_t *count,
                                        const char *path) {
    uint32_t magic = len >= 4 ? be32(buf) : 0;
    if (magic == 0x00000803 || magic == 0x00000804) {
        int rank = (int)(magic & 0xff);
        size_t hdr = 4 + 4 * (size_t)rank, dims = 1;
        if (len < hdr) goto bad;
        for (int i = 1; i < rank; i++) dims *= be32(buf + 4 + 4 * i);
        if (dims != per_image) {
            fprintf(stderr, "bpd: %s holds images of %zu pixels; the model takes %zu\n", path, dims, per_image);
            return NULL;
        }
        *count = be32(buf + 4);
        if (len - hdr < *count * per_image) goto bad;
        return buf + hdr;
    }
    if (len == 0 || len % per_image) {
        fprintf(stderr, "bpd: %s is neither an IDX image file nor raw %zu-byte images\n", path, per_image);
        return NULL;
    }
    *count = len / per_image;
    return buf;
bad:
    fprintf(stderr, "bpd: %s is a truncated IDX file\n", path);
    return NULL;
}

int main(int argc, char **argv) {
    const pxc_model *m = &PXC_EMITTED_MODEL;
    if (argc < 3) {
        fprintf(stderr, "usage: bpd WEIGHTS IMAGES [LABELS] [MAX_IMAGES]\n");
        return 2;
    }
    int conditional = m->classes > 0;
    if (conditional && argc < 4) {
        fprintf(stderr, "bpd: the model is class-conditional (%d classes): give a labels file\n", m->classes);
        return 2;
    }
    size_t wlen = 0, ilen = 0, llen = 0;
    unsigned char *wbuf = read_file(argv[1], &wlen);
    if (!wbuf) {
        fprintf(stderr, "bpd: cannot read %s\n", argv[1]);
        return 1;
    }
    const float *params;
    int rc = PXC_EMITTED_WEIGHTS(wbuf, wlen, &params);
    if (rc != 0) {
        fprintf(stderr, "bpd: %s: %s\n", argv[1],
                rc == -1 ? "not a pxc weights file" : rc == -2 ? "weights of another format version (re-run pxc emit)"
                                                               : "weights of another model, or truncated (re-run pxc emit)");
        return 1;
    }
    unsigned char *ibuf = read_file(argv[2], &ilen);
    if (!ibuf) {
        fprintf(stderr, "bpd: cannot read %s\n", argv[2]);
        return 1;
    }
    size_t per_image = (size_t)m->height * m->width * m->channels, count = 0;
    const unsigned char *pix = image_bytes(ibuf, ilen, per_image, &count, argv[2]);
    if (!pix) return 1;
    const unsigned char *lab = NULL;
    unsigned char *lbuf = NULL;
    if (conditional) {
        lbuf = read_file(argv[3], &llen);
        if (!lbuf) {
            fprintf(stderr, "bpd: cannot read %s\n", argv[3]);
            return 1;
        }
        lab = llen >= 8 && be32(lbuf) == 0x00000801 ? lbuf + 8 : lbuf;
        if ((size_t)(lbuf + llen - lab) < count) {
            fprintf(stderr, "bpd: %s has fewer labels than the %zu images\n", argv[3], count);
            return 1;
        }
        for (size_t i = 0; i < count; i++)
            if (lab[i] >= m->classes) {
                fprintf(stderr, "bpd: label %d of image %zu is not below %d classes\n", lab[i], i, m->classes);
                return 1;
            }
    }
    int maxarg = conditional ? 4 : 3;
    if (argc > maxarg) {
        size_t lim = (size_t)strtoull(argv[maxarg], NULL, 10);
        if (lim > 0 && lim < count) count = lim;
    }
    if (count == 0) {
        fprintf(stderr, "bpd: no images in %s\n", argv[2]);
        return 1;
    }

    size_t abytes = (m->arena_bytes(BATCH) + 63) / 64 * 64;
    void *arena = aligned_alloc(64, abytes);
    float *x = malloc(BATCH * per_image * sizeof(float));
    int32_t labels[BATCH];
    if (!arena || !x) {
        fprintf(stderr, "bpd: out of memory\n");
        return 1;
    }
    double nats = 0;
    for (size_t at = 0; at < count; at += BATCH) {
        int n = (int)(count - at < BATCH ? count - at : BATCH);
        for (size_t i = 0; i < (size_t)n * per_image; i++) x[i] = ((float)pix[at * per_image + i] - 127.5f) / 127.5f;
        for (int i = 0; conditional && i < n; i++) labels[i] = lab[at + (size_t)i];
        nats += m->forward(params, x, conditional ? labels : NULL, n, 0, 0, arena, NULL, NULL);
    }
    double bpd = nats / (log(2.0) * (double)count * (double)per_image);
    printf("%.6f bits/dim over %zu images (%.3f nats)\n", bpd, count, nats);
    free(arena), free(x), free(wbuf), free(ibuf), free(lbuf);
    return 0;
}
