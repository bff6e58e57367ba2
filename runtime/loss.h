/*
 * loss.h — the likelihood heads of pxc as plain runtime C: the discretized
 * logistic mixture (PixelCNN++) and the 256-way softmax (the paper's
 * ablation), their per-pixel negative log-likelihoods, gradients and
 * one-pixel samplers, plus the small deterministic random generator the
 * runtime shares, and bits per dimension.
 *
 * This is not the compiled model: it works on one flat array of pixels,
 * knows nothing of images, batches or the graph IR, and never allocates on
 * the common path (M <= 64 mixture components).
 *
 * Shapes. npix is the number of pixels (N·H·W flattened, NHWC so a pixel's
 * channels are contiguous). C is 1 or 3 colour channels, M = nr_mix.
 *   Logistic mixture, openai/pixel-cnn layout, K values per pixel:
 *     C = 3, K = 10·M: l[0..M) logits; for colour c = 0,1,2, base = M + 3·M·c:
 *       l[base+k] mean, l[base+M+k] log-scale, l[base+2M+k] raw coefficient,
 *       alpha = tanh(block 0 coeff) (G += alpha·x_R), beta = tanh(block 1)
 *       (B += beta·x_R), gamma = tanh(block 2) (B += gamma·x_G).
 *     C = 1, K = 3·M: l[0..M) logits, l[M..2M) means, l[2M..3M) log-scales.
 *   256-way softmax, K = 256·C: channel c's logits at l[256c .. 256c+256).
 *   x is [npix, C] in [-1, 1] (x = v/127.5 - 1).
 *
 * The mixture formula is exactly that of shared/reference/loss/README.md
 * (branch order, clamps, thresholds); gradients are those of the piecewise
 * expression with the branch choices held constant, the log-scale clamp at
 * -7 passing no gradient below it. The one liberty: the interior term
 * log(sigmoid(plus) - sigmoid(minus)) is evaluated in the algebraically
 * identical, cancellation-free form
 *     log sigmoid(plus) + log sigmoid(-minus) + log(1 - exp(minus - plus)),
 * and its branch test d > 1e-5 as log d > log 1e-5.
 *
 * The _f32 functions compute in float throughout; the _f64 in double.
 */
#ifndef PXC_LOSS_H
#define PXC_LOSS_H

#include <stdint.h>

/* ---- random numbers ---------------------------------------------------- */

/* splitmix64: a 64-bit counter s, advanced by the golden-ratio increment and
 * hashed. Seed it by setting s to anything (0 is fine); copying the struct
 * forks an identical stream. Deterministic on every platform. */
typedef struct RtRng {
    uint64_t s;
} RtRng;

/* The next 64 random bits. */
uint64_t rt_rng_next(RtRng *rng);
/* A double uniform on [0, 1), 53 random bits (one rt_rng_next). */
double rt_rng_uniform(RtRng *rng);

/* ---- discretized logistic mixture ------------------------------------- */

/* K per pixel for the mixture head: 3·M (C = 1) or 10·M (C = 3); 0 if C is
 * neither or M < 1. */
int rt_dmol_k(int C, int nr_mix);

/* nll[i] = -log p(x[i,:] | l[i,:]) in nats. */
void rt_dmol_nll_f64(const double *l /*[npix,K]*/, const double *x /*[npix,C]*/, int64_t npix, int C,
                     int nr_mix, double *nll /*[npix]*/);
void rt_dmol_nll_f32(const float *l /*[npix,K]*/, const float *x /*[npix,C]*/, int64_t npix, int C,
                     int nr_mix, float *nll /*[npix]*/);

/* Gradients of sum_i dnll[i]·nll[i]: dl written; dx (may be NULL) written
 * with the gradient through the centred values and the linear channel
 * means (x_R in mu_G and mu_B, x_G in mu_B). dnll NULL means all ones. */
void rt_dmol_nll_bwd_f64(const double *l /*[npix,K]*/, const double *x /*[npix,C]*/,
                         const double *dnll /*[npix] or NULL*/, int64_t npix, int C, int nr_mix,
                         double *dl /*[npix,K]*/, double *dx /*[npix,C] or NULL*/);
void rt_dmol_nll_bwd_f32(const float *l /*[npix,K]*/, const float *x /*[npix,C]*/,
                         const float *dnll /*[npix] or NULL*/, int64_t npix, int C, int nr_mix,
                         float *dl /*[npix,K]*/, float *dx /*[npix,C] or NULL*/);

/* The loss in nats (float per-pixel terms summed in double), with the
 * per-pixel nll and d loss / d l written when not NULL; one fused pass. */
double rt_dmol_loss_f32(const float *l /*[npix,K]*/, const float *x /*[npix,C]*/, int64_t npix, int C,
                        int nr_mix, float *nll /*[npix] or NULL*/, float *dl /*[npix,K] or NULL*/);

/* One pixel's sample: component k by Gumbel-max on the logits
 * (argmax_k logit_k - log(-log g_k), g_k ~ U(1e-5, 1-1e-5)), then for
 * c = 0..C-1: u ~ U(1e-5, 1-1e-5),
 * x_c = clip(mu_c + exp(s_c)·(log u - log(1-u)), -1, 1), s_c = max(raw, -7),
 * mu_G and mu_B using the already sampled (clipped) x_R, x_G.
 * Draws exactly M + C uniforms from rng, in that order. */
void rt_dmol_sample_pixel(const float *l /*[K]*/, int C, int nr_mix, RtRng *rng, float *x /*[C]*/);

/* ---- 256-way softmax ---------------------------------------------------- */

/* Target bin of a sub-pixel: round((x+1)·127.5) clamped to 0..255. */
int rt_softmax_bin(double x);

/* nll[i] = -sum_c log softmax(l[i, 256c .. 256c+256))[bin(x[i,c])]. */
void rt_softmax_nll_f64(const double *l /*[npix,256C]*/, const double *x /*[npix,C]*/, int64_t npix,
                        int C, double *nll /*[npix]*/);
void rt_softmax_nll_f32(const float *l /*[npix,256C]*/, const float *x /*[npix,C]*/, int64_t npix,
                        int C, float *nll /*[npix]*/);
/* dl written: dnll[i]·(softmax - onehot); dnll NULL means all ones. */
void rt_softmax_nll_bwd_f64(const double *l /*[npix,256C]*/, const double *x /*[npix,C]*/,
                            const double *dnll /*[npix] or NULL*/, int64_t npix, int C,
                            double *dl /*[npix,256C]*/);
void rt_softmax_nll_bwd_f32(const float *l /*[npix,256C]*/, const float *x /*[npix,C]*/,
                            const float *dnll /*[npix] or NULL*/, int64_t npix, int C,
                            float *dl /*[npix,256C]*/);
/* The loss in nats (summed in double), nll and dl written when not NULL. */
double rt_softmax_loss_f32(const float *l /*[npix,256C]*/, const float *x /*[npix,C]*/, int64_t npix,
                           int C, float *nll /*[npix] or NULL*/, float *dl /*[npix,256C] or NULL*/);

/* Each channel's bin v_c drawn from softmax(l[256c .. 256c+256)) by inverse
 * CDF on one uniform per channel (C draws in all), x_c = (v_c - 127.5)/127.5.
 * The channels are drawn from the logits given: a model whose G logits
 * depend on the sampled R must be re-run between channels by the caller. */
void rt_softmax_sample_pixel(const float *l /*[256C]*/, int C, RtRng *rng, float *x /*[C]*/);

/* ---- reporting ----------------------------------------------------------- */

/* nats / (ln 2 · n_subpixels): n_subpixels = N·H·W·C exactly. */
double rt_bits_per_dim(double nats, int64_t n_subpixels);

#endif
