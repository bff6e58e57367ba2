/*
 * pxc_model.h — the C ABI of a compiled pxc model.
 *
 * The JIT and the C emitter both produce a `pxc_model`: plain functions
 * over flat float buffers, plus a layout table of the parameters. The
 * runtime (training, eval, sampling, checkpoints) and user programs that
 * link emitted C only ever see this struct. It is stable: a change that is
 * not backward compatible bumps PXC_ABI_VERSION.
 *
 * Conventions
 *   - Images are NHWC float32, x = v / 127.5 - 1 for 8-bit values v.
 *   - The raw network output l is [n,H,W,out_channels] (the head's
 *     parameters, openai/pixel-cnn layout for the logistic mixture).
 *   - Parameters live in one buffer of nparams floats; params[i] says where
 *     each named tensor is (C-contiguous, shapes as in the reference
 *     naming scheme: conv v [kh,kw,in,out], deconv v [kh,kw,out,in],
 *     nin v [in,out], g and b [out], class weights hw [classes,out]).
 *   - The arena is scratch owned by the caller, arena_bytes(n) bytes,
 *     64-byte aligned. forward(training=1) leaves in it what backward needs;
 *     nothing else may touch it in between.
 *   - Losses are in nats, summed over the batch (not averaged).
 */
#ifndef PXC_MODEL_H
#define PXC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define PXC_ABI_VERSION 1

enum { PXC_HEAD_LOGISTIC_MIXTURE = 0, PXC_HEAD_SOFTMAX256 = 1 };

typedef struct pxc_tensor {
    const char *name;   /* e.g. "up.0.u.0.conv1.v" */
    int rank;
    int64_t shape[4];
    int64_t offset;     /* in floats from the start of the parameter buffer */
    int64_t numel;
} pxc_tensor;

typedef struct pxc_model {
    int abi_version;
    int height, width, channels, classes;   /* classes 0: unconditional */
    int head;                               /* PXC_HEAD_* */
    int nr_mix;                             /* logistic mixture components */
    int out_channels;                       /* channels of l */
    int64_t nparams;                        /* floats in the parameter buffer */
    int nparam_tensors;
    const pxc_tensor *params;

    /* Scratch bytes for a batch of n images. */
    size_t (*arena_bytes)(int n);

    /* Run the network and its likelihood on n images. labels may be NULL
     * for unconditional models. seed drives dropout (used when training is
     * non-zero; evaluation is deterministic). Writes l to out and the
     * per-pixel negative log-likelihood [n,H,W] to nll when they are not
     * NULL. Returns the loss: nats summed over the batch. */
    double (*forward)(const float *params, const float *x, const int32_t *labels, int n, uint64_t seed,
                      int training, void *arena, float *out, float *nll);

    /* Gradient of the last forward(training = 1)'s loss with respect to
     * every parameter, written (not accumulated) into grad[nparams]. Same
     * params, x, labels, n and arena as that forward. */
    void (*backward)(const float *params, const float *x, const int32_t *labels, int n, void *arena,
                     float *grad);

    /* The likelihood alone: loss of output l for images x; its gradient
     * into dl [n,H,W,out_channels] and per-pixel nll when not NULL. */
    double (*loss)(const float *l, const float *x, int n, float *dl, float *nll);

    /* Data-dependent weight-norm initialisation on one batch: params holds
     * every v (and hw) already drawn; sets each layer's g and b so that its
     * output has per-channel mean 0 and standard deviation init_scale on
     * this batch, recomputing the layer before the next one sees it. */
    void (*init)(float *params, const float *x, const int32_t *labels, int n, void *arena);

    /* Release what the model owns (JIT code, tables); may be NULL. */
    void (*release)(struct pxc_model *self);
    void *impl;
} pxc_model;

/* Dropout's random stream, shared by every back end so they agree bit for
 * bit: in a forward with seed `seed`, element e (flat over one image's
 * [H,W,C]) of image b of dropout stream `stream` is kept when
 *     pxc_uniform(pxc_image_seed(seed, b), stream, e) >= p.
 * pxc_image_seed is additive in b, so images [a, a+n) of a batch run with
 * seed S are masked exactly as a batch of n run with seed
 * pxc_image_seed(S, a): a batch split over several processes (runtime/dist.h)
 * keeps every image's masks. */
static inline uint64_t pxc_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t pxc_image_seed(uint64_t seed, int64_t image) {
    return seed + 0xD1B54A32D192ED03ULL * (uint64_t)image;
}
static inline float pxc_uniform(uint64_t seed, uint32_t stream, uint64_t index) {
    uint64_t z = pxc_mix64(seed + 0x9E3779B97F4A7C15ULL * ((uint64_t)stream + 1)) ^ index;
    return (float)(pxc_mix64(z) >> 40) * (1.0f / 16777216.0f);
}

#endif
