/*
 * test_jit_kir.c — the kernel IR printer of compiler/llvm on hand-built
 * kernel programs: every expression kind and statement kind against values
 * computed here in double precision with libm (and the bit-level formulas
 * of pxc_model.h's pxc_uniform), reductions (accumulate into one element and
 * into an f64 local), GEMMs in every transpose form with offsets and beta 0
 * and 1 (large ones split over threads), and the four entries of the
 * pxc_model ABI: buffers at base + off0 + off_n * n, the arena fallbacks for
 * NULL out/nll, training and NULL-argument guards, the saved dropout seed,
 * returned f64 scalars and the entry's stack scratch; and kernels merged
 * by kir_parameterise, whose integer arguments each call passes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/pxc_model.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "testutil.h"

static KirProgram *P;
#define C32(v) kir_const_f32(P, (float)(v))
#define C64(v) kir_const_f64(P, (double)(v))
#define CI(v) kir_const_i64(P, (int64_t)(v))
#define OP1(k, a) kir_op1(P, KX_##k, (a))
#define OP2(k, a, b) kir_op2(P, KX_##k, (a), (b))
#define OP3(k, a, b, c) kir_op3(P, KX_##k, (a), (b), (c))
#define VAR(L) kir_var(P, kir_loop_var(L))

static JitOptions opts(void) {
    JitOptions o = jit_options_default();
    o.use_cache = false;
    return o;
}

/* Compile p with every kernel at the hot tier (tiering off) or tiered. */
static pxc_model *compile_tiered(KirProgram *p, bool tiering) {
    DiagList dl;
    diag_init(&dl);
    JitOptions o = opts();
    o.tiering = tiering;
    pxc_model *m = jit_compile(p, &o, &dl);
    if (!m) diag_print(&dl, stderr, false);
    assert_non_null(m);
    assert_int_equal(dl.nerrors, 0);
    diag_free(&dl);
    return m;
}

static pxc_model *compile(KirProgram *p) { return compile_tiered(p, true); }

static void *lookup(pxc_model *m, const char *name) {
    DiagList dl;
    diag_init(&dl);
    void *f = jit_model_lookup(m, name, &dl);
    if (!f) diag_print(&dl, stderr, false);
    assert_non_null(f);
    diag_free(&dl);
    return f;
}

static void close_rel(double got, double want, double tol, const char *what, int64_t i) {
    double e = fabs(got - want) / fmax(fabs(want), 1e-30);
    if (!(e <= tol) && !(fabs(got - want) <= 1e-30))
        fail_msg("%s[%lld]: got %.9g, want %.9g (rel %.3g > %.3g)", what, (long long)i, got, want, e, tol);
}

/* ---- every expression kind, elementwise -------------------------------------------- */

enum { ROWS = 37, COLS = 16 };

/* k_zoo(x f32 [n*ROWS], d f64 [4], lab i32 [5], out y f32 [n*ROWS*COLS], out z f64 [n*ROWS]) */
static int build_zoo(void) {
    KirFunc *fn = kir_func_begin(P, "zoo");
    int x = kir_func_param(P, fn, "x", KT_F32, false);
    int d = kir_func_param(P, fn, "d", KT_F64, false);
    int lab = kir_func_param(P, fn, "lab", KT_I32, false);
    int y = kir_func_param(P, fn, "y", KT_F32, true);
    int z = kir_func_param(P, fn, "z", KT_F64, true);
    int l0 = kir_func_local(P, fn, KT_F32, 1);
    int l1 = kir_func_local(P, fn, KT_F32, 4);
    KirStmt *L = kir_loop(P, fn, NULL, CI(0), OP2(MUL, kir_batch(P), CI(ROWS)), KIR_LOOP_PARALLEL);
    KirExpr *v = VAR(L);
    KirExpr *xi = kir_load(P, fn, x, v);
    KirExpr *ax = OP1(ABS, xi);
    KirExpr *row = OP2(MUL, v, CI(COLS));
#define Y(col, e) kir_store(P, fn, L, y, OP2(ADD, row, CI(col)), (e))
    Y(0, OP1(EXP, xi));
    Y(1, OP1(LOG, OP2(ADD, ax, C32(0.001))));
    Y(2, OP1(LOG1P, ax));
    Y(3, OP1(SIGMOID, xi));
    Y(4, OP1(TANH, xi));
    Y(5, OP1(SQRT, ax));
    KirExpr *c6 = OP2(OR, OP2(AND, OP2(GT, xi, C32(0)), OP1(NOT, OP2(GE, xi, C32(1)))), OP2(EQ, xi, C32(-0.5)));
    Y(6, OP3(SELECT, c6, OP2(MAX, xi, C32(0.25)), OP2(MIN, xi, C32(-0.25))));
    Y(7, OP2(SUB, OP2(DIV, OP3(FMA, xi, C32(2), C32(1)), OP2(ADD, OP2(MUL, xi, xi), C32(1))), OP1(NEG, xi)));
    KirExpr *iv = OP2(ADD, OP2(SUB, OP2(ADD, OP2(MUL, OP2(MOD, v, CI(3)), CI(2)), OP2(DIV, v, CI(5))),
                               OP2(MIN, v, CI(7))),
                      OP2(MAX, v, CI(100)));
    Y(8, kir_cast(P, KT_F32, iv));
    Y(9, kir_uniform(P, 3, OP2(MOD, v, CI(3)), OP2(ADD, v, kir_batch(P))));
    KirExpr *labv = kir_load(P, fn, lab, OP2(MOD, v, CI(5)));
    KirExpr *c10 = OP2(ADD, OP2(ADD, OP3(SELECT, OP2(LE, xi, C32(0.5)), C32(1), C32(0)),
                                OP3(SELECT, OP2(NE, xi, C32(0.25)), C32(2), C32(0))),
                       OP2(ADD, OP3(SELECT, OP2(GE, labv, CI(2)), C32(4), C32(0)),
                           OP3(SELECT, OP2(LT, labv, CI(-1)), C32(8), C32(0))));
    Y(10, c10);
    KirExpr *f64 = OP2(ADD, OP2(MUL, kir_cast(P, KT_F64, xi), kir_load(P, fn, d, OP2(MOD, v, CI(4)))), C64(1.5));
    Y(11, kir_cast(P, KT_F32, f64));
    Y(12, kir_cast(P, KT_F32, labv));
    kir_store(P, fn, L, z, v, OP2(SUB, OP2(DIV, kir_cast(P, KT_F64, v), C64(3)), OP1(NEG, C64(0.25))));
    Y(13, OP2(SUB, OP1(ABS, OP2(SUB, xi, C32(0.5))), OP2(MAX, OP1(NEG, ax), C32(-0.125))));
    Y(14, C32(1));
    kir_accum(P, fn, L, y, OP2(ADD, row, CI(14)), xi);
    kir_set(P, fn, L, l0, NULL, OP2(MUL, xi, C32(3)));
    kir_set(P, fn, L, l0, NULL, OP2(ADD, kir_local(P, fn, l0, NULL), C32(1)));
    KirStmt *K = kir_loop(P, fn, L, CI(0), CI(4), 0);
    kir_set(P, fn, K, l1, VAR(K), OP2(MUL, xi, kir_cast(P, KT_F32, VAR(K))));
    Y(15, kir_local(P, fn, l0, NULL));
    kir_accum(P, fn, L, y, OP2(ADD, row, CI(15)),
              OP2(ADD, kir_local(P, fn, l1, CI(3)), kir_local(P, fn, l1, CI(1))));
#undef Y
    return kir_func_finish(P, fn, "every expression kind");
}

static double d_sigmoid(double x) { return 1 / (1 + exp(-x)); }

static void run_zoo(bool tiering) {
    P = kir_program_new("zoo");
    int f = build_zoo();
    pxc_model *m = compile_tiered(P, tiering);
    assert_int_equal(jit_model_timings(m)->units_tier[JIT_TIER_COLD], tiering ? 2 : 1);   /* the kernel, the entries */
    void (*zoo)(int64_t, uint64_t, const float *, const double *, const int32_t *, float *, double *) =
        (void (*)(int64_t, uint64_t, const float *, const double *, const int32_t *, float *, double *))lookup(
            m, P->funcs[f].name);
    enum { N = 300 };   /* 300 * 37 rows: enough to run on both threads */
    int64_t rows = (int64_t)N * ROWS;
    float *x = malloc((size_t)rows * sizeof *x);
    float *y = malloc((size_t)rows * COLS * sizeof *y);
    double *z = malloc((size_t)rows * sizeof *z);
    double d[4] = {0.5, -2, 3.25, 1e-3};
    int32_t lab[5] = {0, 1, 2, 3, -4};
    for (int64_t i = 0; i < rows; i++) x[i] = (float)(4 * sin(0.37 * (double)i) + (i % 97 == 0 ? 0.5 : 0));
    x[3] = 0.25f;
    x[5] = -0.5f;
    x[7] = 1.0f;
    x[11] = 0.0f;
    uint64_t seed = 0x1234abcdULL;
    zoo(N, seed, x, d, lab, y, z);
    for (int64_t i = 0; i < rows; i++) {
        double xi = x[i], ax = fabs(xi);
        const float *r = y + i * COLS;
        close_rel(r[0], exp(xi), 3e-7, "exp", i);
        close_rel(r[1], log((double)(fabsf(x[i]) + 0.001f)), 3e-7, "log", i);
        close_rel(r[2], log1p(ax), 3e-7, "log1p", i);
        close_rel(r[3], d_sigmoid(xi), 3e-7, "sigmoid", i);
        assert_true(fabs(r[4] - tanh(xi)) < 3e-7);
        close_rel(r[5], sqrt(ax), 1e-7, "sqrt", i);
        double e6 = ((xi > 0 && !(xi >= 1)) || xi == -0.5) ? fmax(xi, 0.25) : fmin(xi, -0.25);
        assert_true(r[6] == (float)e6);
        double t7 = (2 * xi + 1) / (xi * xi + 1);   /* a few roundings of terms this large */
        assert_true(fabs(r[7] - (t7 + xi)) <= 3e-7 * (fabs(t7) + fabs(xi)));
        double e8 = (double)((i % 3) * 2 + i / 5 - (i < 7 ? i : 7) + (i > 100 ? i : 100));
        assert_true(r[8] == (float)e8);
        assert_true(r[9] == pxc_uniform(pxc_image_seed(seed, i % 3), 3, (uint64_t)(i + N)));
        int32_t lv = lab[i % 5];
        double e10 = (xi <= 0.5 ? 1 : 0) + (xi != 0.25 ? 2 : 0) + (lv >= 2 ? 4 : 0) + (lv < -1 ? 8 : 0);
        assert_true(r[10] == (float)e10);
        assert_true(r[11] == (float)((double)x[i] * d[i % 4] + 1.5));
        assert_true(r[12] == (float)lv);
        assert_true(z[i] == (double)i / 3 + 0.25);
        float fx = x[i], m13 = -fabsf(fx) > -0.125f ? -fabsf(fx) : -0.125f;
        assert_true(r[13] == fabsf(fx - 0.5f) - m13);
        assert_true(r[14] == (float)(1 + xi));
        float l0 = fx * 3.0f + 1.0f, l13 = fx * 3.0f + fx * 1.0f;   /* separate roundings: no contraction */
        assert_true(r[15] == l0 + l13);
    }
    free(x);
    free(y);
    free(z);
    m->release(m);
    kir_free(P);
}

/* small: cold (O1, scalar) when tiered; hot (O3, vectorised) otherwise */
static void test_zoo(void **state) {
    run_zoo(true);
    run_zoo(false);
}

/* ---- reductions -------------------------------------------------------------------------- */

/* k_reduce(x f32 [n*ROWS], out s f32 [ROWS], out t f64 [1]):
 *   s[r] = sum_i x[i*ROWS + r];  t = sum over all of x, in f64 */
static int build_reduce(void) {
    KirFunc *fn = kir_func_begin(P, "reduce");
    int x = kir_func_param(P, fn, "x", KT_F32, false);
    int s = kir_func_param(P, fn, "s", KT_F32, true);
    int t = kir_func_param(P, fn, "t", KT_F64, true);
    int acc = kir_func_local(P, fn, KT_F64, 1);
    KirStmt *R = kir_loop(P, fn, NULL, CI(0), CI(ROWS), KIR_LOOP_PARALLEL);
    kir_store(P, fn, R, s, VAR(R), C32(0));
    KirStmt *I = kir_loop(P, fn, R, CI(0), kir_batch(P), KIR_LOOP_REDUCE);
    kir_accum(P, fn, I, s, VAR(R), kir_load(P, fn, x, OP2(ADD, OP2(MUL, VAR(I), CI(ROWS)), VAR(R))));
    kir_set(P, fn, NULL, acc, NULL, C64(0));
    KirStmt *A = kir_loop(P, fn, NULL, CI(0), OP2(MUL, kir_batch(P), CI(ROWS)), KIR_LOOP_REDUCE);
    kir_set(P, fn, A, acc, NULL, OP2(ADD, kir_local(P, fn, acc, NULL), kir_cast(P, KT_F64, kir_load(P, fn, x, VAR(A)))));
    kir_store(P, fn, NULL, t, CI(0), kir_local(P, fn, acc, NULL));
    return kir_func_finish(P, fn, "reductions");
}

static void run_reduce(bool tiering) {
    P = kir_program_new("reduce");
    int f = build_reduce();
    pxc_model *m = compile_tiered(P, tiering);
    void (*red)(int64_t, uint64_t, const float *, float *, double *) =
        (void (*)(int64_t, uint64_t, const float *, float *, double *))lookup(m, P->funcs[f].name);
    for (int n = 0; n < 200; n += 37) {
        float *x = malloc((size_t)(n * ROWS + 1) * sizeof *x);
        for (int i = 0; i < n * ROWS; i++) x[i] = (float)cos(0.1 * i) * (1 + i % 5);
        float s[ROWS];
        double t = -1;
        red(n, 0, x, s, &t);
        double all = 0, absall = 0;
        for (int r = 0; r < ROWS; r++) {
            double e = 0, ea = 0;
            for (int i = 0; i < n; i++) e += x[i * ROWS + r], ea += fabs(x[i * ROWS + r]);
            assert_true(fabs(s[r] - e) <= 1e-6 * ea + 1e-30);
            all += e;
            absall += ea;
        }
        assert_true(fabs(t - all) <= 1e-12 * absall + 1e-300);
        free(x);
    }
    m->release(m);
    kir_free(P);
}

static void test_reduce(void **state) {
    run_reduce(true);
    run_reduce(false);
}

/* ---- GEMMs ------------------------------------------------------------------------------- */

typedef struct GemmCase {
    bool ta, tb;
    int M, N, K;      /* M is per image: the kernel uses M * n */
    int lda, ldb, ldc, aoff, boff, coff;   /* lda >= 3 M when trans_a: n goes up to 3 */
    float alpha, beta;
} GemmCase;

static const GemmCase gcases[] = {
    {false, false, 5, 7, 3, 3, 7, 7, 0, 0, 0, 1.0f, 0.0f},
    {true, false, 4, 6, 5, 4 * 3, 8, 9, 2, 1, 3, -0.5f, 1.0f},
    {false, true, 6, 3, 4, 5, 4, 3, 1, 0, 2, 2.0f, 0.0f},
    {true, true, 3, 5, 6, 3 * 3, 7, 6, 0, 3, 0, 1.0f, 1.0f},
    {false, false, 128, 64, 96, 96, 64, 64, 0, 0, 0, 1.0f, 1.0f},   /* large: M split over threads */
};
enum { NG = sizeof gcases / sizeof gcases[0] };

/* k_gemm(A, B, out C): one KS_GEMM with M = case.M * n */
static int build_gemm(const GemmCase *g) {
    KirFunc *fn = kir_func_begin(P, "gemm");
    KirGemm kg;
    memset(&kg, 0, sizeof kg);
    kg.trans_a = g->ta;
    kg.trans_b = g->tb;
    kg.a = kir_func_param(P, fn, "A", KT_F32, false);
    kg.b = kir_func_param(P, fn, "B", KT_F32, false);
    kg.c = kir_func_param(P, fn, "C", KT_F32, true);
    kg.m = OP2(MUL, kir_batch(P), CI(g->M));
    kg.n = CI(g->N);
    kg.k = CI(g->K);
    kg.a_off = CI(g->aoff);
    kg.b_off = CI(g->boff);
    kg.c_off = CI(g->coff);
    kg.lda = g->lda;
    kg.ldb = g->ldb;
    kg.ldc = g->ldc;
    kg.alpha = g->alpha;
    kg.beta = g->beta;
    kir_gemm(P, fn, &kg);
    return kir_func_finish(P, fn, NULL);
}

static void test_gemm(void **state) {
    P = kir_program_new("gemm");
    int f[NG];
    for (int i = 0; i < NG; i++) f[i] = build_gemm(&gcases[i]);
    pxc_model *m = compile(P);
    for (int gi = 0; gi < NG; gi++) {
        const GemmCase *g = &gcases[gi];
        void (*k)(int64_t, uint64_t, const float *, const float *, float *) =
            (void (*)(int64_t, uint64_t, const float *, const float *, float *))lookup(m, P->funcs[f[gi]].name);
        for (int n = 1; n <= 3; n++) {
            int M = g->M * n;
            size_t asz = (size_t)g->aoff + (size_t)(g->ta ? g->K * g->lda : M * g->lda);
            size_t bsz = (size_t)g->boff + (size_t)(g->tb ? g->N * g->ldb : g->K * g->ldb);
            size_t csz = (size_t)g->coff + (size_t)M * g->ldc;
            float *A = malloc(asz * sizeof *A), *B = malloc(bsz * sizeof *B), *C = malloc(csz * sizeof *C);
            float *C0 = malloc(csz * sizeof *C0);
            for (size_t i = 0; i < asz; i++) A[i] = (float)((int)(i * 7 % 11) - 5) * 0.25f;
            for (size_t i = 0; i < bsz; i++) B[i] = (float)((int)(i * 5 % 13) - 6) * 0.125f;
            for (size_t i = 0; i < csz; i++) C[i] = C0[i] = g->beta == 0 ? NAN : (float)(i % 3);
            k(n, 0, A, B, C);
            for (int r = 0; r < M; r++)
                for (int c = 0; c < g->N; c++) {
                    double s = 0;
                    for (int q = 0; q < g->K; q++) {
                        double a = g->ta ? A[g->aoff + q * g->lda + r] : A[g->aoff + r * g->lda + q];
                        double b = g->tb ? B[g->boff + c * g->ldb + q] : B[g->boff + q * g->ldb + c];
                        s += a * b;
                    }
                    size_t ci = (size_t)g->coff + (size_t)r * g->ldc + c;
                    double want = g->alpha * s + (g->beta != 0 ? g->beta * C0[ci] : 0);
                    if (fabs(C[ci] - want) > 1e-4 * (1 + fabs(want)))
                        fail_msg("gemm case %d n %d C[%d,%d] = %g, want %g", gi, n, r, c, C[ci], want);
                }
            /* what lies outside the M x N block (ldc padding, the offset) is untouched */
            for (size_t i = 0; i < (size_t)g->coff; i++) assert_true(isnan(C0[i]) ? isnan(C[i]) : C[i] == C0[i]);
            for (int r = 0; r < M; r++)
                for (int c = g->N; c < g->ldc; c++) {
                    size_t ci = (size_t)g->coff + (size_t)r * g->ldc + c;
                    assert_true(isnan(C0[ci]) ? isnan(C[ci]) : C[ci] == C0[ci]);
                }
            free(A);
            free(B);
            free(C);
            free(C0);
        }
    }
    m->release(m);
    kir_free(P);
}

/* ---- entries: a toy model through the pxc_model ABI --------------------------------------------- */

enum { PIX = 6 };   /* floats per image */

/* Buffers (bytes; arena offsets multiples of 64):
 *   b_seed  u64  arena+0         b_h   f32 arena+64 size 24n       b_ofb f32 arena+64+64n (out fallback)
 *   b_nfb   f32  arena+64+128n   b_ret f64 arena+128+192n           b_w   f32 params+0 [4]
 *   b_x f32 x   b_out f32 out   b_nll f32 nll   b_grad f32 grad   b_dl f32 dl   b_lret f64 stack+0 */
typedef struct Toy {
    int seed, h, ofb, nfb, ret, w, x, out, nll, grad, dl, lret, w3;
} Toy;

static int unary_kernel(const char *stem, KirType tin, KirType tout, int kind) {
    KirFunc *fn = kir_func_begin(P, stem);
    int in = kir_func_param(P, fn, "in", tin, false);
    int out = kir_func_param(P, fn, "out", tout, true);
    KirExpr *npix = OP2(MUL, kir_batch(P), CI(PIX));
    if (kind == 0) {   /* out = in + 1 */
        KirStmt *L = kir_loop(P, fn, NULL, CI(0), npix, KIR_LOOP_PARALLEL);
        kir_store(P, fn, L, out, VAR(L), OP2(ADD, kir_load(P, fn, in, VAR(L)), C32(1)));
    } else if (kind == 1) {   /* dropout-like: out = uniform(0, i) >= 0.5 ? in * 2 : 0, in place */
        KirStmt *L = kir_loop(P, fn, NULL, CI(0), npix, KIR_LOOP_PARALLEL);
        KirExpr *keep = OP2(GE, kir_uniform(P, 0, CI(0), VAR(L)), C32(0.5));
        kir_store(P, fn, L, out, VAR(L),
                  OP3(SELECT, keep, OP2(MUL, kir_load(P, fn, in, VAR(L)), C32(2)), C32(0)));
    } else if (kind == 2) {   /* out f64 = sum in */
        int acc = kir_func_local(P, fn, KT_F64, 1);
        kir_set(P, fn, NULL, acc, NULL, C64(0));
        KirStmt *L = kir_loop(P, fn, NULL, CI(0), npix, KIR_LOOP_REDUCE);
        kir_set(P, fn, L, acc, NULL, OP2(ADD, kir_local(P, fn, acc, NULL), kir_cast(P, KT_F64, kir_load(P, fn, in, VAR(L)))));
        kir_store(P, fn, NULL, out, CI(0), kir_local(P, fn, acc, NULL));
    } else if (kind == 3) {   /* out = in * 0.5 */
        KirStmt *L = kir_loop(P, fn, NULL, CI(0), npix, KIR_LOOP_PARALLEL);
        kir_store(P, fn, L, out, VAR(L), OP2(MUL, kir_load(P, fn, in, VAR(L)), C32(0.5)));
    } else if (kind == 4) {   /* out f64 += 1000 */
        kir_accum(P, fn, NULL, out, CI(0), C64(1000));
    } else {   /* init: out[0] = 7 + n (a single float) */
        kir_store(P, fn, NULL, out, CI(0), OP2(ADD, kir_cast(P, KT_F32, kir_batch(P)), C32(7)));
        (void)in;
    }
    return kir_func_finish(P, fn, stem);
}

static void build_toy(Toy *t) {
    P = kir_program_new("toy");
    P->height = 1, P->width = 2, P->channels = 3, P->classes = 0, P->head = PXC_HEAD_LOGISTIC_MIXTURE;
    P->nr_mix = 1, P->out_channels = 3, P->nparams = 4;
    P->params = arena_alloc(&P->arena, sizeof *P->params);
    P->params[0] = (KirTensor){"w", 1, {4, 0, 0, 0}, 0, 4};
    P->nparams_tensors = 1;
    t->seed = kir_buf(P, "seed", KB_ARENA, KT_U64, 0, 0, 8, 0, -1);
    t->h = kir_buf(P, "h", KB_ARENA, KT_F32, 64, 0, 0, 24, -1);
    t->ofb = kir_buf(P, "out fallback", KB_ARENA, KT_F32, 64, 64, 0, 24, -1);
    t->nfb = kir_buf(P, "nll fallback", KB_ARENA, KT_F32, 64, 128, 0, 24, -1);
    t->ret = kir_buf(P, "loss", KB_ARENA, KT_F64, 128, 192, 8, 0, -1);
    t->w = kir_buf(P, "w", KB_PARAMS, KT_F32, 0, 0, 16, 0, -1);
    t->w3 = kir_buf(P, "w[3]", KB_PARAMS, KT_F32, 12, 0, 4, 0, -1);
    t->x = kir_buf(P, "x", KB_X, KT_F32, 0, 0, 0, 24, -1);
    t->out = kir_buf(P, "out", KB_OUT, KT_F32, 0, 0, 0, 24, -1);
    t->nll = kir_buf(P, "nll", KB_NLL, KT_F32, 0, 0, 0, 24, -1);
    t->grad = kir_buf(P, "grad", KB_GRAD, KT_F32, 0, 0, 16, 0, -1);
    t->dl = kir_buf(P, "dl", KB_DL, KT_F32, 0, 0, 0, 24, -1);
    t->lret = kir_buf(P, "loss (stack)", KB_STACK, KT_F64, 0, 0, 8, 0, -1);
    P->seed_buf = t->seed;
    P->out_fallback = t->ofb;
    P->nll_fallback = t->nfb;
    P->arena0 = 192;
    P->arena_n = 192;
    P->naive0 = P->arena0;
    P->naive_n = P->arena_n;
    int add1 = unary_kernel("add1", KT_F32, KT_F32, 0);
    int drop = unary_kernel("drop", KT_F32, KT_F32, 1);
    int sum = unary_kernel("sum", KT_F32, KT_F64, 2);
    int half = unary_kernel("half", KT_F32, KT_F32, 3);
    int big = unary_kernel("big", KT_F32, KT_F64, 4);
    int init = unary_kernel("init", KT_F32, KT_F32, 5);
    KirGuard train = kir_always(), notrain = kir_always(), ifnll = kir_always(), ifdl = kir_always(),
             nodl = kir_always();
    train.training = 1;
    notrain.training = 0;
    ifnll.if_nonnull = 1u << KB_NLL;
    ifdl.if_nonnull = 1u << KB_DL;
    nodl.if_null = 1u << KB_DL;
    /* forward: h = x + 1; (training) h = drop(h); out = h + 1; nll = out / 2; return sum(out) */
    kir_step(P, KE_FORWARD, add1, (int[]){t->x, t->h}, 2, kir_always());
    kir_step(P, KE_FORWARD, drop, (int[]){t->h, t->h}, 2, train);
    kir_step(P, KE_FORWARD, half, (int[]){t->h, t->h}, 2, notrain);
    kir_step(P, KE_FORWARD, add1, (int[]){t->h, t->out}, 2, kir_always());
    kir_step(P, KE_FORWARD, half, (int[]){t->out, t->nll}, 2, ifnll);
    kir_step(P, KE_FORWARD, sum, (int[]){t->out, t->ret}, 2, kir_always());
    P->entry[KE_FORWARD].ret_buf = t->ret;
    /* backward: grad = drop(x) with forward's seed (grad holds n*PIX floats here) */
    kir_step(P, KE_BACKWARD, drop, (int[]){t->x, t->grad}, 2, kir_always());
    /* loss: stack = sum(l); dl = l + 1 if dl; stack += 1000 if !dl; nll = l / 2 if nll */
    kir_step(P, KE_LOSS, sum, (int[]){t->out, t->lret}, 2, kir_always());
    kir_step(P, KE_LOSS, add1, (int[]){t->out, t->dl}, 2, ifdl);
    kir_step(P, KE_LOSS, big, (int[]){t->out, t->lret}, 2, nodl);
    kir_step(P, KE_LOSS, half, (int[]){t->out, t->nll}, 2, ifnll);
    P->entry[KE_LOSS].ret_buf = t->lret;
    P->entry[KE_LOSS].stack_bytes = 8;
    /* init: w[3] = 7 + n */
    kir_step(P, KE_INIT, init, (int[]){t->x, t->w3}, 2, kir_always());
}

static float dropped(uint64_t seed, int64_t i, float v) { return pxc_uniform(seed, 0, (uint64_t)i) >= 0.5f ? v * 2 : 0; }

static void test_entries(void **state) {
    Toy t;
    build_toy(&t);
    pxc_model *m = compile(P);
    assert_int_equal(m->abi_version, PXC_ABI_VERSION);
    assert_int_equal(m->nparam_tensors, 1);
    assert_string_equal(m->params[0].name, "w");
    assert_int_equal(m->params[0].numel, 4);
    assert_int_equal(m->nparams, 4);
    assert_int_equal(m->channels, 3);
    assert_int_equal(m->arena_bytes(5), 192 + 192 * 5);
    const JitTimings *tm = jit_model_timings(m);
    assert_non_null(tm);
    assert_int_equal(tm->kernels_unique, 6);
    assert_int_equal(tm->kernels, 12);

    enum { N = 5, NP = N * PIX };
    float params[4] = {1, 2, 3, 4}, x[NP], out[NP], nll[NP], dl[NP], grad[NP];
    for (int i = 0; i < NP; i++) x[i] = (float)i * 0.5f - 3;
    void *arena = aligned_alloc(64, m->arena_bytes(N));
    uint64_t seed = 99;

    /* training: dropout on, out and nll given */
    double loss = m->forward(params, x, NULL, N, seed, 1, arena, out, nll);
    double want = 0;
    for (int i = 0; i < NP; i++) {
        float h = dropped(seed, i, x[i] + 1) + 1;
        assert_true(out[i] == h);
        assert_true(nll[i] == h * 0.5f);
        want += h;
    }
    assert_true(fabs(loss - want) < 1e-9 * (1 + fabs(want)));
    /* backward sees forward's seed */
    m->backward(params, x, NULL, N, arena, grad);
    for (int i = 0; i < NP; i++) assert_true(grad[i] == dropped(seed, i, x[i]));

    /* evaluation, out and nll NULL: the arena fallbacks take them */
    memset(arena, 0, m->arena_bytes(N));
    loss = m->forward(params, x, NULL, N, 7, 0, arena, NULL, NULL);
    const float *ofb = (const float *)((char *)arena + 64 + 64 * N);
    const float *nfb = (const float *)((char *)arena + 64 + 128 * N);
    want = 0;
    for (int i = 0; i < NP; i++) {
        float h = (x[i] + 1) * 0.5f + 1;
        assert_true(ofb[i] == h);
        assert_true(nfb[i] == h * 0.5f);
        want += h;
    }
    assert_true(fabs(loss - want) < 1e-9 * (1 + fabs(want)));
    assert_true(*(uint64_t *)arena == 7);

    /* loss: with dl and nll, then with neither */
    for (int i = 0; i < NP; i++) nll[i] = dl[i] = -1;
    double l1 = m->loss(x, x, N, dl, nll);
    want = 0;
    for (int i = 0; i < NP; i++) {
        want += x[i];
        assert_true(dl[i] == x[i] + 1);
        assert_true(nll[i] == x[i] * 0.5f);
    }
    assert_true(fabs(l1 - want) < 1e-9);
    double l2 = m->loss(x, x, N, NULL, NULL);
    assert_true(fabs(l2 - (want + 1000)) < 1e-9);

    /* init writes w[3] = 7 + n */
    m->init(params, x, NULL, N, arena);
    assert_true(params[3] == 12.0f && params[0] == 1.0f && params[2] == 3.0f);
    free(arena);
    m->release(m);
    kir_free(P);
}

/* ---- failures are diagnostics ------------------------------------------------------------- */

/* ---- integer arguments: kernels merged by kir_parameterise -------------------------------------- */

/* out[v0*2 + v1] = in[v0*2 + v1] * (v0 / R) + (uniform(stream, v0 / R, (v0 % R) * 2 + v1) >= 0.5 ? 1 : 0)
 * over v0 in [0, n*R), v1 in [0, 2) */
static int rows_kernel(int64_t R, int stream) {
    KirFunc *fn = kir_func_begin(P, "rows");
    int in = kir_func_param(P, fn, "in", KT_F32, false);
    int out = kir_func_param(P, fn, "out", KT_F32, true);
    KirStmt *L0 = kir_loop(P, fn, NULL, CI(0), OP2(MUL, kir_batch(P), CI(R)), KIR_LOOP_PARALLEL);
    KirStmt *L1 = kir_loop(P, fn, L0, CI(0), CI(2), 0);
    KirExpr *idx = OP2(ADD, OP2(MUL, VAR(L0), CI(2)), VAR(L1));
    KirExpr *img = OP2(DIV, VAR(L0), CI(R));
    KirExpr *e = OP2(ADD, OP2(MUL, OP2(MOD, VAR(L0), CI(R)), CI(2)), VAR(L1));
    KirExpr *keep = OP3(SELECT, OP2(GE, kir_uniform(P, stream, img, e), C32(0.5)), C32(1), C32(0));
    kir_store(P, fn, L1, out, idx, OP2(ADD, OP2(MUL, kir_load(P, fn, in, idx), kir_cast(P, KT_F32, img)), keep));
    return kir_func_finish(P, fn, "rows");
}

static float rows_want(const float *x, int64_t R, int stream, uint64_t seed, int64_t i) {
    int64_t v0 = i / 2, v1 = i % 2, img = v0 / R;
    float u = pxc_uniform(pxc_image_seed(seed, (uint64_t)img), (uint32_t)stream, (uint64_t)((v0 % R) * 2 + v1));
    return x[i] * (float)img + (u >= 0.5f ? 1.0f : 0.0f);
}

/* Two kernels that differ in R and the stream become one function with two
 * integer arguments; the JIT's entries pass each call's values. */
static void test_integer_args(void **state) {
    (void)state;
    P = kir_program_new("rows");
    P->height = 1, P->width = 2, P->channels = 3, P->head = PXC_HEAD_LOGISTIC_MIXTURE, P->nr_mix = 1,
    P->out_channels = 3;
    P->params = arena_alloc(&P->arena, sizeof *P->params);
    int x = kir_buf(P, "x", KB_X, KT_F32, 0, 0, 0, 24, -1);
    int out = kir_buf(P, "out", KB_OUT, KT_F32, 0, 0, 0, 24, -1);
    int nll = kir_buf(P, "nll", KB_NLL, KT_F32, 0, 0, 0, 24, -1);
    int a = rows_kernel(3, 1), b = rows_kernel(2, 4);
    assert_int_not_equal(a, b);
    kir_step(P, KE_FORWARD, a, (int[]){x, out}, 2, kir_always());
    kir_step(P, KE_FORWARD, b, (int[]){x, nll}, 2, kir_always());
    kir_parameterise(P);
    assert_int_equal(P->nfuncs, 1);
    assert_int_equal(P->funcs[0].nints, 2);
    pxc_model *m = compile(P);
    enum { N = 700, NP = N * 6 };   /* enough rows to run on both threads */
    float *xs = malloc(NP * sizeof *xs), *o = malloc(NP * sizeof *o), *q = malloc(NP * sizeof *q);
    for (int i = 0; i < NP; i++) xs[i] = (float)(i % 13) * 0.25f - 1, o[i] = q[i] = -7;
    uint64_t seed = 12345;
    m->forward(NULL, xs, NULL, N, seed, 1, NULL, o, q);
    for (int64_t i = 0; i < NP; i++) {
        if (o[i] != rows_want(xs, 3, 1, seed, i)) fail_msg("out[%lld] = %g, want %g", (long long)i, o[i], rows_want(xs, 3, 1, seed, i));
        float w = i < N * 4 ? rows_want(xs, 2, 4, seed, i) : -7;   /* R = 2 covers 4 floats per image */
        if (q[i] != w) fail_msg("nll[%lld] = %g, want %g", (long long)i, q[i], w);
    }
    free(xs);
    free(o);
    free(q);
    m->release(m);
    kir_free(P);
}

static void test_bad_program(void **state) {
    P = kir_program_new("bad");
    int f = unary_kernel("add1", KT_F32, KT_F32, 0);
    int b = kir_buf(P, "x", KB_X, KT_F32, 0, 0, 0, 24, -1);
    int g = kir_buf(P, "grad", KB_GRAD, KT_F32, 0, 0, 0, 24, -1);
    /* the forward entry has no grad argument */
    kir_step(P, KE_FORWARD, f, (int[]){b, g}, 2, kir_always());
    DiagList dl;
    diag_init(&dl);
    JitOptions o = opts();
    assert_null(jit_compile(P, &o, &dl));
    assert_true(dl.nerrors > 0);
    assert_non_null(strstr(dl.items[0].msg, "grad"));
    diag_free(&dl);
    kir_free(P);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zoo),     cmocka_unit_test(test_reduce),      cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_entries), cmocka_unit_test(test_integer_args), cmocka_unit_test(test_bad_program),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
