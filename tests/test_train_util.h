/*
 * test_train_util.h — helpers for the training tests (test_train.c,
 * test_e2e_train.c): the tiny spec they train, a temporary directory, and
 * small IDX data sets written here (8x8 grayscale images with structure a
 * model can learn: a bright rectangle on a dark, noisy background).
 * Header-only: each test program includes it once.
 */
#ifndef PXC_TEST_TRAIN_UTIL_H
#define PXC_TEST_TRAIN_UTIL_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

/* models/pixelcnnpp_cifar10.yaml shrunk to 8x8x1 (dropout stays 0.5). */
static const char *const tt_sets[] = {"channels=1", "height=8", "width=8", "nr_resnet=1", "nr_filters=4",
                                      "nr_mix=2"};
enum { TT_NSETS = 6 };

static char tt_tmp[256];

static int tt_rm_entry(const char *p, const struct stat *s, int flag, struct FTW *f) {
    (void)s, (void)flag, (void)f;
    return remove(p);
}
static int tt_setup(const char *name) {
    snprintf(tt_tmp, sizeof tt_tmp, "/tmp/pxc_%s_XXXXXX", name);
    return mkdtemp(tt_tmp) ? 0 : -1;
}
static int tt_teardown(void) {
    if (getenv("PXC_KEEP_TMP")) return 0;
    return nftw(tt_tmp, tt_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* "<tt_tmp>/<fmt...>" in a rotating static buffer. */
__attribute__((format(printf, 1, 2))) static const char *tt_path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    int n = snprintf(b, 1024, "%s/", tt_tmp);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, (size_t)(1024 - n), fmt, ap);
    va_end(ap);
    return b;
}

static uint64_t tt_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void tt_write_file(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb)) fail_msg("cannot write %s", path);
    fclose(f);
}

static void tt_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* IDX files <dir>/<prefix>-images-idx3-ubyte (n images HxW) and, when
 * labels is not NULL, <dir>/<prefix>-labels-idx1-ubyte. */
static void tt_write_idx(const char *dir, const char *prefix, const uint8_t *pixels, int n, int H, int W,
                         const uint8_t *labels) {
    unsigned char h[16];
    tt_be32(h, 0x803), tt_be32(h + 4, (uint32_t)n), tt_be32(h + 8, (uint32_t)H), tt_be32(h + 12, (uint32_t)W);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, prefix);
    tt_write_file(p, h, 16, pixels, (size_t)n * H * W);
    if (labels) {
        tt_be32(h, 0x801), tt_be32(h + 4, (uint32_t)n);
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, prefix);
        tt_write_file(p, h, 8, labels, (size_t)n);
    }
}

/* n structured HxW images and labels in 0..nclass-1 from seed. */
static void tt_make_images(uint64_t seed, int n, int H, int W, int nclass, uint8_t *px, uint8_t *lab) {
    uint64_t s = seed;
    for (int k = 0; k < n; k++) {
        int r0 = (int)(tt_rand(&s) % (uint64_t)(H / 2 + 1)), c0 = (int)(tt_rand(&s) % (uint64_t)(W / 2 + 1));
        int h = 2 + (int)(tt_rand(&s) % (uint64_t)(H / 2 - 1)), w = 2 + (int)(tt_rand(&s) % (uint64_t)(W / 2 - 1));
        int v = 120 + (int)(tt_rand(&s) % 136);
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                int x = (i >= r0 && i < r0 + h && j >= c0 && j < c0 + w) ? v : 0;
                x += (int)(tt_rand(&s) % 21);
                px[((size_t)k * H + i) * W + j] = (uint8_t)(x > 255 ? 255 : x);
            }
        if (lab) lab[k] = (uint8_t)(tt_rand(&s) % (uint64_t)nclass);
    }
}

/* A data directory of ntrain + ntest 8x8 images (labels 0..9 when labelled). */
static void tt_make_data(const char *dir, int ntrain, int ntest, int labelled) {
    mkdir(dir, 0755);
    uint8_t *px = malloc((size_t)(ntrain + ntest) * 64), *lab = malloc((size_t)(ntrain + ntest));
    tt_make_images(12345, ntrain + ntest, 8, 8, 10, px, lab);
    tt_write_idx(dir, "train", px, ntrain, 8, 8, labelled ? lab : NULL);
    tt_write_idx(dir, "t10k", px + (size_t)ntrain * 64, ntest, 8, 8, labelled ? lab + ntrain : NULL);
    free(px);
    free(lab);
}

/* A command line for execv: argv[0..argc) and a NULL after them. */
#define MAXARGS 64

typedef struct Cmd {
    const char *argv[MAXARGS + 1];
    int argc;
} Cmd;

static inline void cmd_add(Cmd *c, const char *a) {
    if (c->argc >= MAXARGS) {
        fail_msg("too many arguments");
        return;
    }
    c->argv[c->argc++] = a;
    c->argv[c->argc] = NULL;
}

#endif
