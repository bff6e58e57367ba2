/* optim.c — Adam with per-step decay, and the EMA; see optim.h. */
#include "optim.h"

#include <math.h>

RtAdamConfig rt_adam_defaults(void) {
    RtAdamConfig c = {1e-3, 0.999995, 0.95, 0.9995, 1e-8, 0.9995};
    return c;
}

double rt_adam_lr(const RtAdamConfig *c, int64_t t) { return c->lr * pow(c->lr_decay, (double)(t - 1)); }

void rt_adam_step(const RtAdamConfig *c, int64_t t, float *params, const float *grad, float *m, float *v, int64_t n) {
    const float b1 = (float)c->beta1, b2 = (float)c->beta2;
    const float ob1 = (float)(1.0 - c->beta1), ob2 = (float)(1.0 - c->beta2);
    const float c1 = (float)(1.0 / (1.0 - pow(c->beta1, (double)t)));
    const float c2 = (float)(1.0 / (1.0 - pow(c->beta2, (double)t)));
    const float lr = (float)rt_adam_lr(c, t), eps = (float)c->eps;
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = b1 * m[i] + ob1 * g;
        float vi = b2 * v[i] + ob2 * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] -= lr * (mi * c1) / sqrtf(vi * c2 + eps);
    }
}

void rt_ema_update(double decay, int64_t t, float *ema, const float *params, int64_t n) {
    double warm = (1.0 + (double)t) / (10.0 + (double)t);
    float d = (float)(decay < warm ? decay : warm);
    for (int64_t i = 0; i < n; i++) ema[i] = d * ema[i] + (1.0f - d) * params[i];
}

int rt_all_finite(const float *x, int64_t n, int64_t *bad) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            if (bad) *bad = i;
            return 0;
        }
    return 1;
}
