/*
 * sample.h — naive autoregressive sampling from a compiled model, as in
 * PIXELCNNPP.md: start from an all-zero image (x = 0, mid grey) and, for
 * every pixel in raster order, run the whole network and draw that pixel
 * from its predicted distribution: H·W forwards per batch (H·W·C for the
 * 256-way softmax head on colour images, where a channel's logits depend on
 * the channels sampled before it).
 *
 * Each drawn value is rounded to its 8-bit bin before the network sees it,
 * so the images it conditions on are exactly the images written out.
 * Image i draws from its own random stream, seeded by (seed, i): the result
 * does not depend on how the images are split into batches.
 */
#ifndef PXC_SAMPLE_H
#define PXC_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "pxc_model.h"

/* Called after each forward with (done, total) forwards of the whole job. */
typedef void (*RtSampleProgress)(void *ctx, int64_t done, int64_t total);

/* Draw n images into out [n,H,W,C] (8-bit) with parameters params, batches
 * of at most max_batch. labels [n] (each in 0..classes-1) for a class-
 * conditional model, NULL otherwise. 0, or -1 with a message. */
int rt_sample(const pxc_model *m, const float *params /*[nparams]*/, int n, const int32_t *labels /*[n]*/,
              uint64_t seed, int max_batch, uint8_t *out /*[n,H,W,C]*/, RtSampleProgress progress, void *ctx,
              char *err, size_t errlen);

#endif
