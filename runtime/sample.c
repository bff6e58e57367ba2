/* sample.c — see sample.h. */
#include "sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "loss.h"

static uint8_t to_bin(float x) {
    long v = lrintf((x + 1.0f) * 127.5f);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}
static float from_bin(uint8_t v) { return ((float)v - 127.5f) / 127.5f; }

int rt_sample(const pxc_model *m, const float *params, int n, const int32_t *labels, uint64_t seed, int max_batch,
              uint8_t *out, RtSampleProgress progress, void *ctx, char *err, size_t errlen) {
    const int H = m->height, W = m->width, C = m->channels, K = m->out_channels;
    if (n < 1 || max_batch < 1) {
        snprintf(err, errlen, "sampling needs n >= 1 and a batch >= 1 (found n = %d, batch = %d)", n, max_batch);
        return -1;
    }
    if (m->classes > 0 && !labels) {
        snprintf(err, errlen, "the model is class-conditional (%d classes): sampling needs a label per image",
                 m->classes);
        return -1;
    }
    for (int i = 0; labels && m->classes > 0 && i < n; i++)
        if (labels[i] < 0 || labels[i] >= m->classes) {
            snprintf(err, errlen, "label %d of image %d is outside 0..%d", labels[i], i, m->classes - 1);
            return -1;
        }
    const int softmax = m->head == PXC_HEAD_SOFTMAX256;
    const int passes = softmax ? C : 1;   /* forwards per pixel */
    int B = n < max_batch ? n : max_batch;
    float *x = xcalloc((size_t)B * H * W * C, sizeof(float));      /* [B,H,W,C] */
    float *l = xmalloc((size_t)B * H * W * K * sizeof(float));     /* [B,H,W,K] */
    size_t abytes = m->arena_bytes(B);
    void *arena = aligned_alloc(64, (abytes + 63) / 64 * 64 + 64);
    RtRng *rng = xmalloc((size_t)B * sizeof *rng);
    int64_t total = (int64_t)((n + B - 1) / B) * H * W * passes, done = 0;
    for (int b0 = 0; b0 < n; b0 += B) {
        int nb = n - b0 < B ? n - b0 : B;
        memset(x, 0, (size_t)nb * H * W * C * sizeof(float));
        for (int i = 0; i < nb; i++) rng[i].s = pxc_mix64(seed ^ pxc_mix64(0x5A4D504CULL + (uint64_t)(b0 + i)));
        const int32_t *lab = m->classes > 0 ? labels + b0 : NULL;
        for (int p = 0; p < H * W; p++) {
            for (int c = 0; c < passes; c++) {
                m->forward(params, x, lab, nb, 0, 0, arena, l, NULL);
                for (int i = 0; i < nb; i++) {
                    const float *lp = l + ((size_t)i * H * W + p) * K;  /* [K] */
                    float *xp = x + ((size_t)i * H * W + p) * C;         /* [C] */
                    float v[3];
                    if (softmax) {
                        float all[3];
                        rt_softmax_sample_pixel(lp + 256 * c, 1, &rng[i], all);
                        xp[c] = from_bin(to_bin(all[0]));
                    } else {
                        rt_dmol_sample_pixel(lp, C, m->nr_mix, &rng[i], v);
                        for (int k = 0; k < C; k++) xp[k] = from_bin(to_bin(v[k]));
                    }
                }
                done++;
                if (progress) progress(ctx, done, total);
            }
        }
        for (int64_t k = 0; k < (int64_t)nb * H * W * C; k++) out[(int64_t)b0 * H * W * C + k] = to_bin(x[k]);
    }
    free(rng);
    free(arena);
    free(l);
    free(x);
    return 0;
}
