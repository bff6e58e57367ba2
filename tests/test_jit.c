/*
 * test_jit.c — the JIT session of compiler/llvm on hand-built LLVM modules:
 * elementwise and reduction loops (checked against double-precision C, and
 * that the reduction really vectorised), calls into the runtime (cblas_sgemm
 * against a naive product, the parallel-for), many units on two compile
 * threads, and every failure path (undefined symbol, invalid module, failing
 * builder, unknown name, duplicate runtime symbol) as diagnostics, not crashes.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llvm/jit.h"
#include "llvm/jit_ir.h"
#include "testutil.h"

static JitOptions no_cache(void) {
    JitOptions o = jit_options_default();
    o.use_cache = false;
    return o;
}

static Jit *new_jit(const JitOptions *o, DiagList *dl) {
    diag_init(dl);
    Jit *j = jit_create(o, dl);
    assert_non_null(j);
    assert_true(jit_add_runtime_symbols(j, dl));
    assert_int_equal(dl->nerrors, 0);
    return j;
}

static bool has_error(const DiagList *dl, const char *needle) {
    for (int i = 0; i < dl->n; i++)
        if (dl->items[i].level == DIAG_ERROR && strstr(dl->items[i].msg, needle)) return true;
    return false;
}

/* ---- builders ------------------------------------------------------------------ */

/* void saxpy(float a, const float *noalias x, float *noalias y, i64 n): y[i] = a*x[i] + y[i] */
static bool build_saxpy(JitIR *ir, void *arg, DiagList *dl) {
    LLVMTypeRef ps[4] = {ir->t_f32, ir->t_pf32, ir->t_pf32, ir->t_i64};
    LLVMValueRef fn = jir_function(ir, "saxpy", ir->t_void, ps, 4);
    jir_param_noalias(ir, fn, 1);
    jir_param_noalias(ir, fn, 2);
    JirLoop L;
    jir_loop_begin(ir, &L, jir_i64(ir, 0), LLVMGetParam(fn, 3), JIR_LOOP_NO_UNROLL);
    LLVMValueRef x = jir_load_f32(ir, LLVMGetParam(fn, 1), L.iv);
    LLVMValueRef y = jir_load_f32(ir, LLVMGetParam(fn, 2), L.iv);
    jir_store_f32(ir, jir_fmuladd(ir, LLVMGetParam(fn, 0), x, y), LLVMGetParam(fn, 2), L.iv);
    jir_loop_end(ir, &L);
    LLVMBuildRetVoid(ir->b);
    return true;
}

/* float sum(const float *x, i64 n), a reduction vectorised by loop metadata */
static bool build_sum(JitIR *ir, void *arg, DiagList *dl) {
    LLVMTypeRef ps[2] = {ir->t_pf32, ir->t_i64};
    LLVMValueRef fn = jir_function(ir, "sum", ir->t_f32, ps, 2);
    jir_param_noalias(ir, fn, 0);
    JirLoop L;
    jir_loop_begin(ir, &L, jir_i64(ir, 0), LLVMGetParam(fn, 1), JIR_LOOP_VECTORIZE);
    LLVMValueRef acc = jir_loop_carry(ir, &L, jir_f32(ir, 0));
    jir_loop_next(&L, 0, LLVMBuildFAdd(ir->b, acc, jir_load_f32(ir, LLVMGetParam(fn, 0), L.iv), ""));
    jir_loop_end(ir, &L);
    LLVMBuildRet(ir->b, acc);
    return true;
}

/* void gemm(const float *A [M,K], const float *B [K,N], float *C [M,N], i32 M, i32 N, i32 K)
 * through the runtime's cblas_sgemm */
static bool build_gemm(JitIR *ir, void *arg, DiagList *dl) {
    LLVMTypeRef ps[6] = {ir->t_pf32, ir->t_pf32, ir->t_pf32, ir->t_i32, ir->t_i32, ir->t_i32};
    LLVMValueRef fn = jir_function(ir, "gemm", ir->t_void, ps, 6);
    LLVMTypeRef cps[14] = {ir->t_i32, ir->t_i32, ir->t_i32, ir->t_i32, ir->t_i32, ir->t_i32, ir->t_f32,
                           ir->t_pf32, ir->t_i32, ir->t_pf32, ir->t_i32, ir->t_f32, ir->t_pf32, ir->t_i32};
    LLVMValueRef sgemm = jir_declare(ir, "cblas_sgemm", ir->t_void, cps, 14);
    LLVMValueRef M = LLVMGetParam(fn, 3), N = LLVMGetParam(fn, 4), K = LLVMGetParam(fn, 5);
    LLVMValueRef args[14] = {jir_i32(ir, 101), jir_i32(ir, 111), jir_i32(ir, 111), M, N, K, jir_f32(ir, 1.0),
                             LLVMGetParam(fn, 0), K, LLVMGetParam(fn, 1), N, jir_f32(ir, 0.0),
                             LLVMGetParam(fn, 2), N};
    jir_call(ir, sgemm, args, 14);
    LLVMBuildRetVoid(ir->b);
    return true;
}

/* void fill_body(i8 *ctx, i64 lo, i64 hi): ((float *)ctx)[i] = 2*i + 1 on [lo, hi)
 * void fill(float *out, i64 n): jit_rt_parallel_for(fill_body, out, n, 16) */
static bool build_fill(JitIR *ir, void *arg, DiagList *dl) {
    LLVMTypeRef bps[3] = {ir->t_pi8, ir->t_i64, ir->t_i64};
    LLVMValueRef body = jir_function(ir, "fill_body", ir->t_void, bps, 3);
    LLVMValueRef out = LLVMBuildBitCast(ir->b, LLVMGetParam(body, 0), ir->t_pf32, "");
    JirLoop L;
    jir_loop_begin(ir, &L, LLVMGetParam(body, 1), LLVMGetParam(body, 2), 0);
    LLVMValueRef v = LLVMBuildSIToFP(ir->b, L.iv, ir->t_f32, "");
    jir_store_f32(ir, jir_fmuladd(ir, v, jir_f32(ir, 2), jir_f32(ir, 1)), out, L.iv);
    jir_loop_end(ir, &L);
    LLVMBuildRetVoid(ir->b);

    LLVMTypeRef fps[2] = {ir->t_pf32, ir->t_i64};
    LLVMValueRef fill = jir_function(ir, "fill", ir->t_void, fps, 2);
    LLVMTypeRef pfps[4] = {LLVMTypeOf(body), ir->t_pi8, ir->t_i64, ir->t_i64};
    LLVMValueRef pf = jir_declare(ir, "jit_rt_parallel_for", ir->t_void, pfps, 4);
    LLVMValueRef args[4] = {body, LLVMBuildBitCast(ir->b, LLVMGetParam(fill, 0), ir->t_pi8, ""),
                            LLVMGetParam(fill, 1), jir_i64(ir, 16)};
    jir_call(ir, pf, args, 4);
    LLVMBuildRetVoid(ir->b);
    return true;
}

/* void addk_<k>(float *x, i64 n): x[i] += k */
static bool build_addk(JitIR *ir, void *arg, DiagList *dl) {
    int k = (int)(intptr_t)arg;
    char name[32];
    snprintf(name, sizeof name, "addk_%d", k);
    LLVMTypeRef ps[2] = {ir->t_pf32, ir->t_i64};
    LLVMValueRef fn = jir_function(ir, name, ir->t_void, ps, 2);
    JirLoop L;
    jir_loop_begin(ir, &L, jir_i64(ir, 0), LLVMGetParam(fn, 1), 0);
    LLVMValueRef x = jir_load_f32(ir, LLVMGetParam(fn, 0), L.iv);
    jir_store_f32(ir, LLVMBuildFAdd(ir->b, x, jir_f32(ir, k), ""), LLVMGetParam(fn, 0), L.iv);
    jir_loop_end(ir, &L);
    LLVMBuildRetVoid(ir->b);
    return true;
}

static bool build_undefined(JitIR *ir, void *arg, DiagList *dl) {
    LLVMValueRef fn = jir_function(ir, "calls_missing", ir->t_void, NULL, 0);
    (void)fn;
    LLVMValueRef missing = jir_declare(ir, "pxc_no_such_function", ir->t_void, NULL, 0);
    jir_call(ir, missing, NULL, 0);
    LLVMBuildRetVoid(ir->b);
    return true;
}

/* A function returning float that returns nothing: the verifier must object. */
static bool build_invalid(JitIR *ir, void *arg, DiagList *dl) {
    jir_function(ir, "invalid", ir->t_f32, NULL, 0);
    LLVMBuildRetVoid(ir->b);
    return true;
}

static bool build_fails(JitIR *ir, void *arg, DiagList *dl) {
    diag_error(dl, srcloc_none(), "kernel 'k7' has no lowering for op 'frobnicate'");
    return false;
}

/* ---- tests --------------------------------------------------------------------- */

static void test_host(void **state) {
    DiagList dl;
    JitOptions o = no_cache();
    Jit *j = new_jit(&o, &dl);
    assert_true(strlen(jit_cpu_name(j)) > 0);
    assert_non_null(strstr(jit_triple(j), "x86_64"));
    /* the feature string is LLVM's "+a,-b,..." list */
    assert_true(jit_cpu_features(j)[0] == '+' || jit_cpu_features(j)[0] == '-');
    jit_free(j);
    diag_free(&dl);
}

static void test_saxpy_sum_gemm(void **state) {
    DiagList dl;
    JitOptions o = no_cache();
    char dump[] = "/tmp/pxc_test_jit_XXXXXX";
    assert_non_null(mkdtemp(dump));
    o.dump_dir = dump;
    o.units_per_module = 1;
    Jit *j = new_jit(&o, &dl);
    JitUnit units[3] = {{"saxpy", build_saxpy, NULL, JIT_TIER_HOT}, {"sum", build_sum, NULL, JIT_TIER_REDUCE},
                        {"gemm", build_gemm, NULL, JIT_TIER_COLD}};
    assert_true(jit_compile_units(j, units, 3, NULL, 0, &dl));
    assert_int_equal(dl.nerrors, 0);
    assert_int_equal(jit_timings(j)->modules, 3);

    void (*saxpy)(float, const float *, float *, int64_t) = (void (*)(float, const float *, float *, int64_t))jit_lookup(j, "saxpy", &dl);
    float (*sum)(const float *, int64_t) = (float (*)(const float *, int64_t))jit_lookup(j, "sum", &dl);
    void (*gemm)(const float *, const float *, float *, int, int, int) =
        (void (*)(const float *, const float *, float *, int, int, int))jit_lookup(j, "gemm", &dl);
    assert_non_null(saxpy);
    assert_non_null(sum);
    assert_non_null(gemm);

    enum { N = 1003 };   /* not a multiple of any vector width: the epilogue runs too */
    float x[N], y[N], y0[N];
    for (int i = 0; i < N; i++) {
        x[i] = sinf((float)i) * 3;
        y[i] = y0[i] = cosf((float)i * 0.7f);
    }
    saxpy(1.5f, x, y, N);
    for (int i = 0; i < N; i++) assert_true(fabs(y[i] - (1.5 * x[i] + y0[i])) <= 1e-6 * (1 + fabs(y[i])));

    double ds = 0, sabs = 0;
    for (int i = 0; i < N; i++) ds += x[i], sabs += fabs(x[i]);
    float s = sum(x, N);
    assert_true(fabs(s - ds) <= 1e-6 * sabs);
    assert_true(sum(x, 0) == 0.0f);

    enum { M = 7, NN = 5, K = 9 };
    float A[M * K], B[K * NN], C[M * NN];
    for (int i = 0; i < M * K; i++) A[i] = (float)(i % 5) - 2;
    for (int i = 0; i < K * NN; i++) B[i] = (float)(i % 7) * 0.5f - 1;
    gemm(A, B, C, M, NN, K);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < NN; n++) {
            double c = 0;
            for (int k = 0; k < K; k++) c += (double)A[m * K + k] * B[k * NN + n];
            assert_true(fabs(C[m * NN + n] - c) < 1e-5);
        }

    /* The reduction was vectorised (whichever module holds it). */
    size_t n;
    char path[128];
    int found = 0;
    for (int m = 0; m < 3; m++) {
        snprintf(path, sizeof path, "%s/module_%d.ll", dump, m);
        char *text = tu_read_file(path, &n);
        assert_non_null(text);
        if (strstr(text, "define float @sum")) {
            found = 1;
            assert_non_null(strstr(text, "x float>"));            /* vector loads/adds */
            assert_non_null(strstr(text, "llvm.loop.isvectorized"));
        }
        free(text);
        unlink(path);
    }
    assert_true(found);
    rmdir(dump);
    jit_free(j);
    diag_free(&dl);
}

static void test_parallel_fill(void **state) {
    DiagList dl;
    JitOptions o = no_cache();
    Jit *j = new_jit(&o, &dl);
    JitUnit u = {"fill", build_fill, NULL, JIT_TIER_HOT};
    assert_true(jit_compile_units(j, &u, 1, NULL, 0, &dl));
    void (*fill)(float *, int64_t) = (void (*)(float *, int64_t))jit_lookup(j, "fill", &dl);
    assert_non_null(fill);
    enum { N = 10007 };
    float *out = calloc(N, sizeof *out);
    for (int rep = 0; rep < 50; rep++) {
        memset(out, 0, N * sizeof *out);
        fill(out, N - rep);
        for (int i = 0; i < N - rep; i++) assert_true(out[i] == 2.0f * (float)i + 1.0f);
        for (int i = N - rep; i < N; i++) assert_true(out[i] == 0.0f);
    }
    free(out);
    jit_free(j);
    diag_free(&dl);
}

/* The parallel-for itself: chunks are aligned and cover [0, n) exactly once,
 * whichever thread runs them (the caller takes the chunks a busy worker has
 * not claimed); GEMM-style calls (align > 1) make two chunks, loops up to 8. */
typedef struct Chunks {
    int64_t lo[16], hi[16];
    int n;
    pthread_mutex_t mu;
} Chunks;

static void record(void *ctx, int64_t lo, int64_t hi) {
    Chunks *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->n < 16) {
        c->lo[c->n] = lo;
        c->hi[c->n] = hi;
    }
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

/* The recorded chunks, sorted, tile [0, n) and start at multiples of align. */
static void assert_tiles(Chunks *c, int64_t n, int64_t align) {
    for (int i = 1; i < c->n; i++)
        for (int j = i; j > 0 && c->lo[j - 1] > c->lo[j]; j--) {
            int64_t t = c->lo[j]; c->lo[j] = c->lo[j - 1]; c->lo[j - 1] = t;
            t = c->hi[j]; c->hi[j] = c->hi[j - 1]; c->hi[j - 1] = t;
        }
    assert_int_equal(c->lo[0], 0);
    for (int i = 0; i < c->n; i++) {
        assert_true(c->hi[i] > c->lo[i]);
        assert_int_equal(c->lo[i] % align, 0);
        if (i) assert_int_equal(c->lo[i], c->hi[i - 1]);
    }
    assert_int_equal(c->hi[c->n - 1], n);
}

static void test_parallel_for(void **state) {
    assert_int_equal(jit_rt_threads(), 2);
    for (int rep = 0; rep < 100; rep++) {
        Chunks c = {.mu = PTHREAD_MUTEX_INITIALIZER};
        int64_t n = 1000 + rep;
        jit_rt_parallel_for(record, &c, n, 64);
        assert_int_equal(c.n, 2);
        assert_tiles(&c, n, 64);
        Chunks d = {.mu = PTHREAD_MUTEX_INITIALIZER};
        jit_rt_parallel_for(record, &d, n, 1);
        assert_int_equal(d.n, 8);
        assert_tiles(&d, n, 1);
        Chunks e = {.mu = PTHREAD_MUTEX_INITIALIZER};
        jit_rt_parallel_for(record, &e, 3 + rep % 4, 1);   /* fewer units than chunks: one each */
        assert_int_equal(e.n, 3 + rep % 4);
        assert_tiles(&e, 3 + rep % 4, 1);
    }
    Chunks c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    jit_rt_parallel_for(record, &c, 60, 64);   /* too small to split at 64 */
    assert_int_equal(c.n, 1);
    assert_int_equal(c.hi[0], 60);
    Chunks z = {.mu = PTHREAD_MUTEX_INITIALIZER};
    jit_rt_parallel_for(record, &z, 0, 1);
    assert_int_equal(z.n, 0);
}

static void test_many_units(void **state) {
    DiagList dl;
    JitOptions o = no_cache();
    o.units_per_module = 3;
    Jit *j = new_jit(&o, &dl);
    enum { U = 20 };
    JitUnit units[U];
    for (int k = 0; k < U; k++) units[k] = (JitUnit){"addk", build_addk, (void *)(intptr_t)k, JIT_TIER_HOT};
    assert_true(jit_compile_units(j, units, U, NULL, 0, &dl));
    assert_int_equal(jit_timings(j)->modules, 7);
    assert_int_equal(jit_timings(j)->units, U);
    for (int k = U - 1; k >= 0; k--) {
        char name[32];
        snprintf(name, sizeof name, "addk_%d", k);
        void (*f)(float *, int64_t) = (void (*)(float *, int64_t))jit_lookup(j, name, &dl);
        assert_non_null(f);
        float x[33];
        for (int i = 0; i < 33; i++) x[i] = (float)i;
        f(x, 33);
        for (int i = 0; i < 33; i++) assert_true(x[i] == (float)(i + k));
    }
    assert_int_equal(dl.nerrors, 0);
    jit_free(j);
    diag_free(&dl);
}

static void test_errors(void **state) {
    DiagList dl;
    JitOptions o = no_cache();
    Jit *j = new_jit(&o, &dl);

    /* an unknown name */
    assert_null(jit_lookup(j, "nothing_here", &dl));
    assert_true(has_error(&dl, "nothing_here"));
    diag_free(&dl);
    diag_init(&dl);

    /* a call to a symbol nobody defined: compiles, then cannot link */
    JitUnit u = {"calls_missing", build_undefined, NULL, JIT_TIER_HOT};
    assert_true(jit_compile_units(j, &u, 1, NULL, 0, &dl));
    assert_null(jit_lookup(j, "calls_missing", &dl));
    assert_true(has_error(&dl, "pxc_no_such_function"));
    diag_free(&dl);
    diag_init(&dl);

    /* an invalid module */
    JitUnit bad = {"invalid", build_invalid, NULL, JIT_TIER_HOT};
    assert_false(jit_compile_units(j, &bad, 1, NULL, 0, &dl));
    assert_true(has_error(&dl, "invalid"));
    assert_true(has_error(&dl, "internal error"));
    diag_free(&dl);
    diag_init(&dl);

    /* a builder that reports its own error, beside good units */
    JitUnit mixed[3] = {{"saxpy", build_saxpy, NULL, JIT_TIER_HOT}, {"k7", build_fails, NULL, JIT_TIER_HOT},
                        {"sum", build_sum, NULL, JIT_TIER_REDUCE}};
    assert_false(jit_compile_units(j, mixed, 3, NULL, 0, &dl));
    assert_true(has_error(&dl, "frobnicate"));
    diag_free(&dl);
    diag_init(&dl);

    /* the runtime symbols twice */
    assert_false(jit_add_runtime_symbols(j, &dl));
    assert_true(dl.nerrors > 0);
    diag_free(&dl);
    diag_init(&dl);

    /* the session still works */
    JitUnit ok = {"addk", build_addk, (void *)(intptr_t)3, JIT_TIER_COLD};
    assert_true(jit_compile_units(j, &ok, 1, NULL, 0, &dl));
    void (*f)(float *, int64_t) = (void (*)(float *, int64_t))jit_lookup(j, "addk_3", &dl);
    assert_non_null(f);
    float x[2] = {1, 2};
    f(x, 2);
    assert_true(x[0] == 4 && x[1] == 5);
    jit_free(j);
    diag_free(&dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host),          cmocka_unit_test(test_saxpy_sum_gemm),
        cmocka_unit_test(test_parallel_fill), cmocka_unit_test(test_parallel_for),
        cmocka_unit_test(test_many_units),    cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
