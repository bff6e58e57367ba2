/*
 * test_optim.c — Adam and the EMA against a hand-written double-precision
 * transcription of openai/pixel-cnn's adam_updates (a different formulation:
 * bias corrections applied to the moments, lr decayed by repeated products).
 */
#include <math.h>
#include <stdlib.h>

#include "testutil.h"
#include "optim.h"

static void test_adam_matches_reference_formula(void **state) {
    (void)state;
    RtAdamConfig c = rt_adam_defaults();
    enum { N = 7, STEPS = 50 };
    float p[N], m[N] = {0}, v[N] = {0};
    double pd[N], md[N] = {0}, vd[N] = {0};
    for (int i = 0; i < N; i++) p[i] = (float)(pd[i] = 0.1 * (i - 3));
    double lr = c.lr;
    for (int t = 1; t <= STEPS; t++) {
        float g[N];
        for (int i = 0; i < N; i++) g[i] = (float)(sin(t * 0.7 + i) * (i + 1));
        rt_adam_step(&c, t, p, g, m, v, N);
        for (int i = 0; i < N; i++) {
            md[i] = 0.95 * md[i] + 0.05 * g[i];
            vd[i] = 0.9995 * vd[i] + 0.0005 * (double)g[i] * g[i];
            double mh = md[i] / (1 - pow(0.95, t)), vh = vd[i] / (1 - pow(0.9995, t));
            pd[i] -= lr * mh / sqrt(vh + 1e-8);
        }
        lr *= 0.999995;
    }
    for (int i = 0; i < N; i++) assert_true(fabs(p[i] - pd[i]) < 2e-6);
    /* the first step moves every parameter by about lr (sign of g) */
    float q = 0, mm = 0, vv = 0, gg = -3;
    rt_adam_step(&c, 1, &q, &gg, &mm, &vv, 1);
    assert_true(fabs(q - 1e-3) < 1e-7);
}

static void test_ema_warmup(void **state) {
    (void)state;
    float e = 0, p = 1;
    rt_ema_update(0.9995, 0, &e, &p, 1);   /* d = 0.1 */
    assert_true(fabs(e - 0.9f) < 1e-7);
    e = 0;
    rt_ema_update(0.9995, 1000000, &e, &p, 1);  /* d = 0.9995 */
    assert_true(fabs(e - 0.0005f) < 1e-7);
    int64_t bad = -1;
    float x[3] = {1, NAN, 2};
    assert_false(rt_all_finite(x, 3, &bad));
    assert_int_equal(bad, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam_matches_reference_formula),
        cmocka_unit_test(test_ema_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
