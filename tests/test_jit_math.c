/*
 * test_jit_math.c — the vectorisable math of compiler/llvm/jit_ir.h (exp,
 * log, log1p, sigmoid, tanh, softplus as inline IR) against double-precision
 * libm over dense sweeps of their ranges, their special values (NaN, ±inf,
 * 0, subnormals, clamped tails), and that the exp loop really vectorises
 * (no call to a scalar libm function left in it).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llvm/jit.h"
#include "llvm/jit_ir.h"
#include "testutil.h"

typedef LLVMValueRef (*MathFn)(JitIR *, LLVMValueRef);

typedef struct MathCase {
    const char *name;
    MathFn fn;
} MathCase;

static const MathCase cases[] = {
    {"m_exp", jir_exp},         {"m_log", jir_log},   {"m_log1p", jir_log1p},
    {"m_sigmoid", jir_sigmoid}, {"m_tanh", jir_tanh}, {"m_softplus", jir_softplus},
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* void <name>(const float *x, float *y, i64 n): y[i] = f(x[i]) */
static bool build_map(JitIR *ir, void *arg, DiagList *dl) {
    const MathCase *c = arg;
    LLVMTypeRef ps[3] = {ir->t_pf32, ir->t_pf32, ir->t_i64};
    LLVMValueRef fn = jir_function(ir, c->name, ir->t_void, ps, 3);
    jir_param_noalias(ir, fn, 0);
    jir_param_noalias(ir, fn, 1);
    JirLoop L;
    jir_loop_begin(ir, &L, jir_i64(ir, 0), LLVMGetParam(fn, 2), JIR_LOOP_NO_UNROLL);
    jir_store_f32(ir, c->fn(ir, jir_load_f32(ir, LLVMGetParam(fn, 0), L.iv)), LLVMGetParam(fn, 1), L.iv);
    jir_loop_end(ir, &L);
    LLVMBuildRetVoid(ir->b);
    return true;
}

typedef void (*MapFn)(const float *, float *, int64_t);

static Jit *jit;
static MapFn maps[NCASES];
static char dump[] = "/tmp/pxc_test_jit_math_XXXXXX";

static int setup(void **state) {
    DiagList dl;
    diag_init(&dl);
    JitOptions o = jit_options_default();
    o.use_cache = false;
    o.units_per_module = 1;
    if (!mkdtemp(dump)) return -1;
    o.dump_dir = dump;
    jit = jit_create(&o, &dl);
    if (!jit || !jit_add_runtime_symbols(jit, &dl)) return -1;
    JitUnit u[NCASES];
    for (int i = 0; i < NCASES; i++) u[i] = (JitUnit){cases[i].name, build_map, (void *)&cases[i], JIT_TIER_HOT};
    if (!jit_compile_units(jit, u, NCASES, NULL, 0, &dl)) {
        diag_print(&dl, stderr, false);
        return -1;
    }
    for (int i = 0; i < NCASES; i++)
        if (!(maps[i] = (MapFn)jit_lookup(jit, cases[i].name, &dl))) return -1;
    diag_free(&dl);
    return 0;
}

static int teardown(void **state) {
    jit_free(jit);
    for (int i = 0; i < NCASES; i++) unlink(tu_path(dump, cases[i].name));
    char path[256];
    for (int m = 0; m < NCASES; m++) {
        snprintf(path, sizeof path, "%s/module_%d.ll", dump, m);
        unlink(path);
    }
    rmdir(dump);
    return 0;
}

/* Max relative error (floored at `floor` in the denominator) of map k over
 * n points evenly spread on [lo, hi], against ref in double. */
static double sweep(int k, double (*ref)(double), double lo, double hi, int n, double floor) {
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * i / (n - 1));
    maps[k](x, y, n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double r = ref(x[i]);
        double e = fabs(y[i] - r) / fmax(fabs(r), floor);
        if (!(e <= worst)) worst = e;   /* NaN counts as worst */
    }
    free(x);
    free(y);
    return worst;
}

static double one(int k, float v) {
    float y;
    maps[k](&v, &y, 1);
    return y;
}

static double d_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double d_softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static void test_exp(void **state) {
    if (getenv("PXC_TEST_VERBOSE")) {   /* the measured errors the bounds below are set from */
        printf("exp %.3g %.3g log %.3g %.3g log1p %.3g %.3g sigmoid %.3g tanh %.3g softplus %.3g\n", sweep(0, exp, -87, 88, 1000003, 0), sweep(0, exp, -1, 1, 100003, 0), sweep(1, log, 1e-6, 1e6, 1000003, 1e-3), sweep(1, log, 1e-30, 10, 1000003, 1e-30), sweep(2, log1p, -0.999, 1e4, 1000003, 0), sweep(2, log1p, -1e-6, 1e-6, 100003, 0), sweep(3, d_sigmoid, -80, 80, 1000003, 0), sweep(4, tanh, -20, 20, 1000003, 1), sweep(5, d_softplus, -80, 80, 1000003, 0));
    }
    assert_true(sweep(0, exp, -87, 88, 1000003, 0) < 1.5e-7);
    assert_true(sweep(0, exp, -1, 1, 100003, 0) < 1.5e-7);
    assert_true(isnan(one(0, NAN)));
    assert_true(one(0, 0) == 1.0);
    assert_true(one(0, -INFINITY) > 0 && one(0, -INFINITY) < 2e-38);   /* clamped at exp(-87) */
    assert_true(one(0, -1000) == one(0, -87));
    assert_true(isfinite(one(0, INFINITY)) && one(0, INFINITY) == one(0, 88));
    assert_true(fabs(one(0, 88) - exp(88.0)) / exp(88.0) < 2.5e-7);
}

static void test_log(void **state) {
    assert_true(sweep(1, log, 1e-30, 10, 1000003, 1e-30) < 1.5e-7);       /* near 1, log -> 0: absolute */
    assert_true(sweep(1, log, 1e-6, 1e6, 1000003, 1e-3) < 1.5e-7);
    assert_true(sweep(1, log, 1e-38, 1e-37, 10007, 0) < 2.5e-7);
    assert_true(fabs(one(1, 1e-40f) - log((double)1e-40f)) < 1e-5 * 92);   /* subnormal */
    assert_true(fabs(one(1, FLT_TRUE_MIN) - log((double)FLT_TRUE_MIN)) < 1e-5 * 103);
    assert_true(one(1, 1) == 0);
    assert_true(one(1, 0) == -INFINITY);
    assert_true(isnan(one(1, -1)));
    assert_true(isnan(one(1, NAN)));
    assert_true(one(1, INFINITY) == INFINITY);
    assert_true(fabs(one(1, FLT_MAX) - log((double)FLT_MAX)) < 1e-5);
}

static void test_log1p(void **state) {
    assert_true(sweep(2, log1p, -0.999, 1e4, 1000003, 0) < 3e-7);
    assert_true(sweep(2, log1p, -1e-6, 1e-6, 100003, 0) < 2e-7);   /* tiny arguments keep full precision */
    assert_true(one(2, 1e-30f) == 1e-30f);
    assert_true(one(2, -1) == -INFINITY);
    assert_true(isnan(one(2, -2)));
    assert_true(one(2, INFINITY) == INFINITY);
}

static void test_sigmoid_tanh_softplus(void **state) {
    assert_true(sweep(3, d_sigmoid, -80, 80, 1000003, 0) < 3e-7);
    assert_true(sweep(4, tanh, -20, 20, 1000003, 1e-3) < 1.5e-4);
    assert_true(sweep(4, tanh, -20, 20, 1000003, 1) < 2.5e-7);
    assert_true(one(4, 30) == 1.0 && one(4, -30) == -1.0);
    assert_true(sweep(5, d_softplus, -80, 80, 1000003, 0) < 4e-7);
    assert_true(one(5, 1e4f) == 1e4f);
    assert_true(isnan(one(3, NAN)) && isnan(one(4, NAN)) && isnan(one(5, NAN)));
}

/* The exp loop vectorised and calls nothing: no libm, no scalar fallback. */
static void test_vectorised(void **state) {
    char path[256];
    int found = 0;
    for (int m = 0; m < NCASES; m++) {
        snprintf(path, sizeof path, "%s/module_%d.ll", dump, m);
        char *text = tu_read_file(path, NULL);
        assert_non_null(text);
        if (strstr(text, "@m_exp(")) {
            found = 1;
            assert_non_null(strstr(text, "x float>"));
            assert_null(strstr(text, "call float @expf"));
            assert_null(strstr(text, "@llvm.exp"));
        }
        free(text);
    }
    assert_true(found);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_log1p),
        cmocka_unit_test(test_sigmoid_tanh_softplus),
        cmocka_unit_test(test_vectorised),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
