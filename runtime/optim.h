/*
 * optim.h — the optimiser of the reference training recipe, and Polyak
 * averaging.
 *
 * Adam as openai/pixel-cnn's adam_updates: with t counted from 1,
 *   m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,
 *   p -= lr_t * (m / (1-b1^t)) / sqrt(v / (1-b2^t) + eps)   (eps inside the root)
 * and lr_t = lr * decay^(t-1): the rate decays every step.
 * The EMA of the parameters uses decay min(d, (1+t)/(10+t)) at step t so a
 * short run is not evaluated with near-initial weights.
 */
#ifndef PXC_OPTIM_H
#define PXC_OPTIM_H

#include <stdint.h>

typedef struct RtAdamConfig {
    double lr;        /* 1e-3 */
    double lr_decay;  /* per step, 0.999995 */
    double beta1;     /* 0.95 */
    double beta2;     /* 0.9995 */
    double eps;       /* 1e-8, inside the square root */
    double ema_decay; /* 0.9995 */
} RtAdamConfig;

RtAdamConfig rt_adam_defaults(void);

/* Learning rate at step t (1-based). */
double rt_adam_lr(const RtAdamConfig *c, int64_t t);

/* One Adam step t (1-based) over n floats: params, m, v updated in place. */
void rt_adam_step(const RtAdamConfig *c, int64_t t, float *params /*[n]*/, const float *grad /*[n]*/,
                  float *m /*[n]*/, float *v /*[n]*/, int64_t n);

/* ema = d ema + (1-d) params with d = min(decay, (1+t)/(10+t)). */
void rt_ema_update(double decay, int64_t t, float *ema /*[n]*/, const float *params /*[n]*/, int64_t n);

/* True when every value is finite; otherwise *bad is the first index. */
int rt_all_finite(const float *x, int64_t n, int64_t *bad);

#endif
