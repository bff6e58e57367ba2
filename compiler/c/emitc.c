/*
 * emitc.c — the C printer of the kernel IR (emitc.h).
 *
 * One C function per kernel, preceded by a comment naming the graph ops it
 * computes and their YAML locations; a top-level parallel loop becomes an
 * outlined body run through the optional parallel-for hook; a GEMM becomes
 * cblas_sgemm (or the plain-C fallback), split over M rows by the hook; a
 * direct convolution (KS_CONV) a call of plain C loops (pxc_conv_*_body),
 * split over output rows or weight rows by the hook. The
 * transcendentals are the exact operation sequences of kir.h, printed once
 * as static inline functions. The entries (forward, backward, loss, init)
 * call the kernels with pointers computed from the arena plan.
 */
#include "emitc.h"

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char abi_text[] =
#include "abi.inc"
    ;

/* A loop-invariant subexpression printed before its loop as `const T hN`. */
typedef struct Hoist {
    const KirExpr *e;
    int id;
} Hoist;

typedef struct Emit {
    FILE *f;
    const KirProgram *p;
    const KirFunc *fn;
    const char *name;
    int ntmp;
    Hoist *hoist;     /* the hoisted values in scope (a stack) */
    int nhoist, choist, nhoisted;
} Emit;

static int hoisted(const Emit *E, const KirExpr *e) {
    for (int i = E->nhoist - 1; i >= 0; i--)
        if (E->hoist[i].e == e) return E->hoist[i].id;
    return -1;
}

/* ---- the preamble of model.c ---------------------------------------------------- */

static const char preamble[] =
    "#include <math.h>\n"
    "#include <stdint.h>\n"
    "#include <string.h>\n"
    "\n"
    "#if defined(__GNUC__)\n"
    "#define PXC_NOINLINE __attribute__((noinline))\n"
    "#else\n"
    "#define PXC_NOINLINE\n"
    "#endif\n"
    "\n"
    "/* a*b + c; kir.h lets it be fused or not (the JIT fuses where the CPU has FMA) */\n"
    "#define PXC_FMA(a, b, c) ((a) * (b) + (c))\n"
    "\n"
    "static inline float pxc_bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }\n"
    "static inline uint32_t pxc_f_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }\n"
    "static inline double pxc_bits_d(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }\n"
    "static inline uint64_t pxc_d_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }\n"
    "/* c ? a : b on values already computed, as a bit blend: no branch, so compilers\n"
    " * vectorise the loops around it even under -ftrapping-math */\n"
    "static inline float pxc_self(int c, float a, float b) {\n"
    "    uint32_t m = 0u - (uint32_t)(c != 0);\n"
    "    return pxc_bits_f((pxc_f_bits(a) & m) | (pxc_f_bits(b) & ~m));\n"
    "}\n"
    "static inline double pxc_seld(int c, double a, double b) {\n"
    "    uint64_t m = 0u - (uint64_t)(c != 0);\n"
    "    return pxc_bits_d((pxc_d_bits(a) & m) | (pxc_d_bits(b) & ~m));\n"
    "}\n"
    "static inline float pxc_maxf(float a, float b) { return pxc_self(a > b, a, b); }\n"
    "static inline float pxc_minf(float a, float b) { return pxc_self(a < b, a, b); }\n"
    "static inline double pxc_maxd(double a, double b) { return pxc_seld(a > b, a, b); }\n"
    "static inline double pxc_mind(double a, double b) { return pxc_seld(a < b, a, b); }\n"
    "static inline int64_t pxc_maxi(int64_t a, int64_t b) { return a > b ? a : b; }\n"
    "static inline int64_t pxc_mini(int64_t a, int64_t b) { return a < b ? a : b; }\n"
    "static inline int64_t pxc_absi(int64_t a) { return a < 0 ? -a : a; }\n"
    "\n"
    "/* ---- the math of kir.h, operation for operation ---- */\n"
    "\n"
    "/* exp: Cephes expf's reduction and polynomial, max relative error 1.2e-7 on [-87, 88] */\n"
    "static inline float pxc_exp(float x) {\n"
    "    x = pxc_self(x > 88.0f, 88.0f, x);              /* NaN passes through both */\n"
    "    x = pxc_self(x < -87.0f, -87.0f, x);\n"
    "    float y0 = PXC_FMA(x, 1.44269504088896341f, 0.5f);\n"
    "    float yc = pxc_self(y0 == y0, y0, 0.0f);         /* floor(y0): |y0| < 128 here */\n"
    "    float t = (float)(int32_t)yc;\n"
    "    float n = pxc_self(y0 == y0, t - pxc_self(t > yc, 1.0f, 0.0f), y0);\n"
    "    float r = PXC_FMA(n, -0.693359375f, x);\n"
    "    r = PXC_FMA(n, 2.12194440e-4f, r);\n"
    "    float p = 1.9875691500e-4f;\n"
    "    p = PXC_FMA(p, r, 1.3981999507e-3f);\n"
    "    p = PXC_FMA(p, r, 8.3334519073e-3f);\n"
    "    p = PXC_FMA(p, r, 4.1665795894e-2f);\n"
    "    p = PXC_FMA(p, r, 1.6666665459e-1f);\n"
    "    p = PXC_FMA(p, r, 5.0000001201e-1f);\n"
    "    float y = PXC_FMA(p, r * r, r) + 1.0f;\n"
    "    float kc = pxc_self(n >= -127.0f, n, -127.0f);   /* fmaxf/fminf: NaN gives the bound */\n"
    "    kc = pxc_self(kc <= 127.0f, kc, 127.0f);\n"
    "    int32_t k = (int32_t)kc;\n"
    "    return y * pxc_bits_f((uint32_t)(k + 127) << 23);\n"
    "}\n"
    "\n"
    "/* log: Cephes logf's polynomial, max relative error 2e-7 for normal x */\n"
    "static inline float pxc_log(float x) {\n"
    "    float s = pxc_self(x < 1.17549435e-38f, 8388608.0f, 1.0f);   /* subnormals scaled by 2^23 */\n"
    "    float xs = x * s;\n"
    "    uint32_t b = pxc_f_bits(xs);\n"
    "    float e = (float)((int32_t)(b >> 23) - 126) - pxc_self(s != 1.0f, 23.0f, 0.0f);\n"
    "    float m = pxc_bits_f((b & 0x007fffffu) | 0x3f000000u);\n"
    "    int lo = m < 0.707106781186547524f;\n"
    "    e = e - pxc_self(lo, 1.0f, 0.0f);\n"
    "    m = pxc_self(lo, m + m, m) - 1.0f;\n"
    "    float z = m * m;\n"
    "    float p = 7.0376836292e-2f;\n"
    "    p = PXC_FMA(p, m, -1.1514610310e-1f);\n"
    "    p = PXC_FMA(p, m, 1.1676998740e-1f);\n"
    "    p = PXC_FMA(p, m, -1.2420140846e-1f);\n"
    "    p = PXC_FMA(p, m, 1.4249322787e-1f);\n"
    "    p = PXC_FMA(p, m, -1.6668057665e-1f);\n"
    "    p = PXC_FMA(p, m, 2.0000714765e-1f);\n"
    "    p = PXC_FMA(p, m, -2.4999993993e-1f);\n"
    "    p = PXC_FMA(p, m, 3.3333331174e-1f);\n"
    "    float y = (p * m) * z;\n"
    "    y = PXC_FMA(e, -2.12194440e-4f, y);\n"
    "    y = PXC_FMA(z, -0.5f, y);\n"
    "    float r = m + y;\n"
    "    r = PXC_FMA(e, 0.693359375f, r);\n"
    "    r = pxc_self(x == INFINITY, INFINITY, r);\n"
    "    r = pxc_self(x < 0.0f, NAN, r);\n"
    "    return pxc_self(x == 0.0f, -INFINITY, r);\n"
    "}\n"
    "\n"
    "static inline float pxc_log1p(float x) {\n"
    "    float u = 1.0f + x;\n"
    "    float r = pxc_log(u) * (x / (u - 1.0f));\n"
    "    return pxc_self(x == INFINITY, INFINITY, pxc_self(u == 1.0f, x, r));\n"
    "}\n"
    "static inline float pxc_sigmoid(float x) { return 1.0f / (1.0f + pxc_exp(-x)); }\n"
    "static inline float pxc_tanh(float x) { return 1.0f - 2.0f / (pxc_exp(x + x) + 1.0f); }\n"
    "\n";

static const char gemm_text[] =
    "/* ---- GEMM: row-major sgemm over rows [0, M) ---- */\n"
    "#ifndef PXC_NO_CBLAS\n"
    "#include <cblas.h>\n"
    "static inline void pxc_sgemm_rows(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,\n"
    "                                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,\n"
    "                                  float *C, int64_t ldc) {\n"
    "    if (M <= 0 || N <= 0) return;\n"
    "    /* tall, narrow products in 1024-row blocks, as pxc's JIT runs them (faster with OpenBLAS) */\n"
    "    int64_t blk = M >= 2048 && N < 512 ? 1024 : M;\n"
    "    for (int64_t m0 = 0; m0 < M; m0 += blk) {\n"
    "        int64_t mm = M - m0 < blk ? M - m0 : blk;\n"
    "        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)mm,\n"
    "                    (int)N, (int)K, alpha, ta ? A + m0 : A + m0 * lda, (int)lda, B, (int)ldb, beta, C + m0 * ldc,\n"
    "                    (int)ldc);\n"
    "    }\n"
    "}\n"
    "#else\n"
    "/* plain C: C = alpha op(A) op(B) + beta C; beta 0 never reads C */\n"
    "static inline void pxc_sgemm_rows(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,\n"
    "                                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,\n"
    "                                  float *C, int64_t ldc) {\n"
    "    for (int64_t i = 0; i < M; i++) {\n"
    "        float *c = C + i * ldc;\n"
    "        for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];\n"
    "        for (int64_t k = 0; k < K; k++) {\n"
    "            float a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);\n"
    "            if (!tb) {\n"
    "                const float *b = B + k * ldb;\n"
    "                for (int64_t j = 0; j < N; j++) c[j] += a * b[j];\n"
    "            } else {\n"
    "                for (int64_t j = 0; j < N; j++) c[j] += a * B[j * ldb + k];\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "#endif\n"
    "\n"
    "typedef struct pxc_gemm_ctx {\n"
    "    int ta, tb;\n"
    "    int64_t N, K;\n"
    "    float alpha, beta;\n"
    "    const float *A, *B;\n"
    "    float *C;\n"
    "    int64_t lda, ldb, ldc;\n"
    "} pxc_gemm_ctx;\n"
    "\n"
    "static inline void pxc_gemm_body(void *vc, int64_t b, int64_t e) {\n"
    "    const pxc_gemm_ctx *g = (const pxc_gemm_ctx *)vc;\n"
    "    pxc_sgemm_rows(g->ta, g->tb, e - b, g->N, g->K, g->alpha, g->ta ? g->A + b : g->A + b * g->lda, g->lda,\n"
    "                   g->B, g->ldb, g->beta, g->C + b * g->ldc, g->ldc);\n"
    "}\n"
    "\n"
    "/* ---- direct stride-1 convolutions (kir.h KS_CONV): x [images, Hp, Wp, cin] padded,\n"
    " * w [kh, kw, cin, cout], y [images, yt + Ho + yb, Wo, cout] (rows yt..yt+Ho-1 of each image);\n"
    " * out is y (forward) or w (wgrad) ---- */\n"
    "typedef struct pxc_conv_ctx {\n"
    "    const float *x, *w, *y;\n"
    "    float *out;\n"
    "    int64_t rows, Ho, Wo, Hp, Wp, kh, kw, cin, cout, Hy, yt;\n"
    "    float beta;\n"
    "} pxc_conv_ctx;\n"
    "\n"
    "/* forward over output rows (image * Ho + i) [b, e) */\n"
    "static inline void pxc_conv_fwd_body(void *vc, int64_t b, int64_t e) {\n"
    "    const pxc_conv_ctx *k = (const pxc_conv_ctx *)vc;\n"
    "    for (int64_t row = b; row < e; row++) {\n"
    "        int64_t img = row / k->Ho, i = row % k->Ho;\n"
    "        for (int64_t j = 0; j < k->Wo; j++) {\n"
    "            float *y = k->out + ((img * k->Hy + k->yt + i) * k->Wo + j) * k->cout;\n"
    "            if (k->beta == 0.0f)\n"
    "                for (int64_t o = 0; o < k->cout; o++) y[o] = 0.0f;\n"
    "            for (int64_t a = 0; a < k->kh; a++)\n"
    "                for (int64_t d = 0; d < k->kw; d++) {\n"
    "                    const float *xp = k->x + ((img * k->Hp + i + a) * k->Wp + j + d) * k->cin;\n"
    "                    const float *wp = k->w + (a * k->kw + d) * k->cin * k->cout;\n"
    "                    for (int64_t c = 0; c < k->cin; c++) {\n"
    "                        float xv = xp[c];\n"
    "                        const float *wc = wp + c * k->cout;\n"
    "                        for (int64_t o = 0; o < k->cout; o++) y[o] += xv * wc[o];\n"
    "                    }\n"
    "                }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n"
    "/* weight gradient over weight rows (a * kw + d) * cin + c in [b, e) */\n"
    "static inline void pxc_conv_wgrad_body(void *vc, int64_t b, int64_t e) {\n"
    "    const pxc_conv_ctx *k = (const pxc_conv_ctx *)vc;\n"
    "    for (int64_t q = b; q < e; q++) {\n"
    "        int64_t t = q / k->cin, c = q % k->cin, a = t / k->kw, d = t % k->kw;\n"
    "        float *w = k->out + q * k->cout;\n"
    "        if (k->beta == 0.0f)\n"
    "            for (int64_t o = 0; o < k->cout; o++) w[o] = 0.0f;\n"
    "        for (int64_t row = 0; row < k->rows; row++) {\n"
    "            int64_t img = row / k->Ho, i = row % k->Ho;\n"
    "            const float *xp = k->x + ((img * k->Hp + i + a) * k->Wp + d) * k->cin + c;\n"
    "            for (int64_t j = 0; j < k->Wo; j++) {\n"
    "                float xv = xp[j * k->cin];\n"
    "                const float *g = k->y + ((img * k->Hy + k->yt + i) * k->Wo + j) * k->cout;\n"
    "                for (int64_t o = 0; o < k->cout; o++) w[o] += xv * g[o];\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n";

/* ---- names and literals -------------------------------------------------------------- */

static const char *ctype(KirType t) {
    switch (t) {
    case KT_BOOL: return "int";
    case KT_I64: return "int64_t";
    case KT_F32: return "float";
    case KT_F64: return "double";
    case KT_I32: return "int32_t";
    case KT_U64: return "uint64_t";
    }
    return "void";
}

static void c_int(FILE *f, int64_t v) {
    if (v > 2147483647LL || v < -2147483647LL) fprintf(f, "INT64_C(%lld)", (long long)v);
    else if (v < 0) fprintf(f, "(%lld)", (long long)v);
    else fprintf(f, "%lld", (long long)v);
}

static void c_float(FILE *f, double v, KirType t) {
    if (isinf(v)) { fputs(v > 0 ? (t == KT_F32 ? "INFINITY" : "(double)INFINITY") : (t == KT_F32 ? "(-INFINITY)" : "(-(double)INFINITY)"), f); return; }
    if (isnan(v)) { fputs("NAN", f); return; }
    char buf[64];
    if (t == KT_F32) {
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if ((float)strtod(buf, NULL) == (float)v) break;
        }
    } else {
        snprintf(buf, sizeof buf, "%.17g", v);
    }
    bool neg = buf[0] == '-';
    if (neg) fputc('(', f);
    fputs(buf, f);
    if (!strpbrk(buf, ".e")) fputs(".0", f);
    if (t == KT_F32) fputc('f', f);
    if (neg) fputc(')', f);
}

/* ---- expressions with temporaries for shared subexpressions ---------------------------- */

typedef struct Use {
    const KirExpr *e;
    int count, tmp;
} Use;

typedef struct Uses {
    Use *u;
    int n, cap;
} Uses;

static Use *use_of(Uses *us, const KirExpr *e) {
    for (int i = 0; i < us->n; i++)
        if (us->u[i].e == e) return &us->u[i];
    return NULL;
}

static void count_uses(const Emit *E, Uses *us, const KirExpr *e) {
    if (!e) return;
    Use *u = use_of(us, e);
    if (u) {
        u->count++;
        return;
    }
    Use nu = {e, 1, -1};
    VEC_PUSH(us->u, us->n, us->cap, nu);
    if (hoisted(E, e) >= 0) return;
    for (int i = 0; i < 3; i++) count_uses(E, us, e->x[i]);
}

static bool tmp_worthy(const Emit *E, const KirExpr *e) {
    if (hoisted(E, e) >= 0) return false;
    switch (e->k) {
    case KX_CONST: case KX_VAR: case KX_BATCH: case KX_ARG: return false;
    case KX_LOCAL: return e->x[0] != NULL;
    default: return true;
    }
}

/* The arms of a select are computed before it (kir.h: both are safe to
 * evaluate), so `c ? a : b` has no work in its arms and compilers turn it
 * into a blend instead of a branch that stops vectorisation. */
static void force_select_arms(const Emit *E, Uses *us, const KirExpr *e) {
    if (!e || hoisted(E, e) >= 0) return;
    for (int i = 0; i < 3; i++) force_select_arms(E, us, e->x[i]);
    if (e->k == KX_SELECT)
        for (int i = 0; i < 3; i++) {
            Use *u = use_of(us, e->x[i]);
            if (u && u->count < 2) u->count = 2;
        }
}

static void c_expr(Emit *E, Uses *us, const KirExpr *e);

static void c_args(Emit *E, Uses *us, const KirExpr *e, int n) {
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", E->f);
        c_expr(E, us, e->x[i]);
    }
    fputc(')', E->f);
}

static void c_expr(Emit *E, Uses *us, const KirExpr *e) {
    FILE *f = E->f;
    int h = hoisted(E, e);
    if (h >= 0) {
        fprintf(f, "h%d", h);
        return;
    }
    Use *u = us ? use_of(us, e) : NULL;
    if (u && u->tmp >= 0) {
        fprintf(f, "t%d", u->tmp);
        return;
    }
    static const char *bin[KX_COUNT] = {
        [KX_ADD] = "+", [KX_SUB] = "-", [KX_MUL] = "*", [KX_DIV] = "/", [KX_MOD] = "%",
        [KX_LT] = "<", [KX_LE] = "<=", [KX_GT] = ">", [KX_GE] = ">=", [KX_EQ] = "==", [KX_NE] = "!=",
        [KX_AND] = "&", [KX_OR] = "|"};   /* operands are 0/1: no short circuit, no branch */
    switch (e->k) {
    case KX_CONST:
        if (e->t == KT_I64) {
            c_int(f, e->i);
        } else {
            c_float(f, e->f, e->t);
        }
        return;
    case KX_BATCH: fputs("n", f); return;
    case KX_ARG: fprintf(f, "a%lld", (long long)e->i); return;
    case KX_VAR: fprintf(f, "v%lld", (long long)e->i); return;
    case KX_LOCAL:
        fprintf(f, "l%lld", (long long)e->i);
        if (e->x[0]) { fputc('[', f); c_expr(E, us, e->x[0]); fputc(']', f); }
        return;
    case KX_LOAD:
        if (E->fn->params[e->i].elem == KT_I32) fputs("(int64_t)", f);
        fprintf(f, "%s[", E->fn->params[e->i].name);
        c_expr(E, us, e->x[0]);
        fputc(']', f);
        return;
    case KX_NEG: fputs("(-", f); c_expr(E, us, e->x[0]); fputc(')', f); return;
    case KX_NOT: fputs("(!", f); c_expr(E, us, e->x[0]); fputc(')', f); return;
    case KX_FMA: fputs("PXC_FMA(", f); c_args(E, us, e, 3); return;
    case KX_MAX: fprintf(f, "pxc_max%s(", e->t == KT_F32 ? "f" : e->t == KT_F64 ? "d" : "i"); c_args(E, us, e, 2); return;
    case KX_MIN: fprintf(f, "pxc_min%s(", e->t == KT_F32 ? "f" : e->t == KT_F64 ? "d" : "i"); c_args(E, us, e, 2); return;
    case KX_SELECT:
        if (e->t == KT_F32 || e->t == KT_F64) {
            fputs(e->t == KT_F32 ? "pxc_self(" : "pxc_seld(", f);
            c_args(E, us, e, 3);
            return;
        }
        fputc('(', f);
        c_expr(E, us, e->x[0]);
        fputs(" ? ", f);
        c_expr(E, us, e->x[1]);
        fputs(" : ", f);
        c_expr(E, us, e->x[2]);
        fputc(')', f);
        return;
    case KX_EXP: fputs("pxc_exp(", f); c_args(E, us, e, 1); return;
    case KX_LOG: fputs("pxc_log(", f); c_args(E, us, e, 1); return;
    case KX_LOG1P: fputs("pxc_log1p(", f); c_args(E, us, e, 1); return;
    case KX_SIGMOID: fputs("pxc_sigmoid(", f); c_args(E, us, e, 1); return;
    case KX_TANH: fputs("pxc_tanh(", f); c_args(E, us, e, 1); return;
    case KX_SQRT: fputs(e->t == KT_F32 ? "sqrtf(" : "sqrt(", f); c_args(E, us, e, 1); return;
    case KX_ABS: fputs(e->t == KT_F32 ? "fabsf(" : e->t == KT_F64 ? "fabs(" : "pxc_absi(", f); c_args(E, us, e, 1); return;
    case KX_CAST: fprintf(f, "((%s)", ctype(e->t)); c_expr(E, us, e->x[0]); fputc(')', f); return;
    case KX_UNIFORM:
        fputs("pxc_uniform(pxc_image_seed(seed, ", f);
        c_expr(E, us, e->x[1]);
        if (e->x[2]->k == KX_CONST) {
            fprintf(f, "), %lldu, (uint64_t)", (long long)e->x[2]->i);
        } else {
            fputs("), (uint32_t)", f);
            c_expr(E, us, e->x[2]);
            fputs(", (uint64_t)", f);
        }
        c_expr(E, us, e->x[0]);
        fputc(')', f);
        return;
    default: break;
    }
    if (!bin[e->k]) pxc_bug("emitc: expression kind %d", (int)e->k);
    if (e->k == KX_ADD && e->t == KT_I64 && e->x[1]->k == KX_CONST && e->x[1]->i < 0) {
        fputc('(', f);
        c_expr(E, us, e->x[0]);
        fprintf(f, " - %lld)", -(long long)e->x[1]->i);
        return;
    }
    fputc('(', f);
    c_expr(E, us, e->x[0]);
    fprintf(f, " %s ", bin[e->k]);
    c_expr(E, us, e->x[1]);
    fputc(')', f);
}

static void indent(FILE *f, int d) {
    for (int i = 0; i < d; i++) fputs("    ", f);
}

/* Print `const T tN = ...;` for every shared subexpression of e, operands first. */
static void c_temps(Emit *E, Uses *us, const KirExpr *e, int d) {
    if (!e || hoisted(E, e) >= 0) return;
    Use *u = use_of(us, e);
    if (u->tmp >= 0) return;
    for (int i = 0; i < 3; i++) c_temps(E, us, e->x[i], d);
    u = use_of(us, e);
    if (u->count >= 2 && tmp_worthy(E, e) && u->tmp < 0) {
        indent(E->f, d);
        fprintf(E->f, "const %s t%d = ", ctype(e->t), E->ntmp);
        c_expr(E, us, e);
        fputs(";\n", E->f);
        u->tmp = E->ntmp++;
    }
}

/* ---- statements ------------------------------------------------------------------------- */

/* True when e has the same value in every iteration of the loop over var
 * (and every loop inside it: their variables are numbered after var). */
static bool invariant(const Emit *E, const KirExpr *e, int var) {
    if (!e || hoisted(E, e) >= 0) return true;
    switch (e->k) {
    case KX_VAR: return e->i < var;
    case KX_LOCAL: return false;
    case KX_LOAD:
        if (E->fn->params[e->i].out) return false;   /* the loop may write it */
        break;
    default: break;
    }
    for (int i = 0; i < 3; i++)
        if (!invariant(E, e->x[i], var)) return false;
    return true;
}

/* Print the maximal invariant subexpressions of e as `const T hN = ...;`. */
static void hoist_invariants(Emit *E, const KirExpr *e, int var, int d) {
    if (!e || hoisted(E, e) >= 0 || e->k == KX_CONST || e->k == KX_VAR || e->k == KX_BATCH || e->k == KX_ARG) return;
    if (invariant(E, e, var)) {
        indent(E->f, d);
        fprintf(E->f, "const %s h%d = ", ctype(e->t), E->nhoisted);
        c_expr(E, NULL, e);
        fputs(";\n", E->f);
        Hoist h = {e, E->nhoisted++};
        VEC_PUSH(E->hoist, E->nhoist, E->choist, h);
        return;
    }
    for (int i = 0; i < 3; i++) hoist_invariants(E, e->x[i], var, d);
}

static void c_stmt(Emit *E, const KirStmt *s, int d);

static void c_body(Emit *E, KirStmt *const *body, int n, int d) {
    for (int i = 0; i < n; i++) c_stmt(E, body[i], d);
}

static void c_loop_head(Emit *E, const KirStmt *s, const char *lo, const char *hi) {
    FILE *f = E->f;
    fprintf(f, "for (int64_t v%d = ", s->var);
    if (lo) fputs(lo, f);
    else c_expr(E, NULL, s->lo);
    fprintf(f, "; v%d < ", s->var);
    if (hi) fputs(hi, f);
    else c_expr(E, NULL, s->hi);
    fprintf(f, "; v%d++) {\n", s->var);
}

static void c_stmt(Emit *E, const KirStmt *s, int d) {
    FILE *f = E->f;
    const KirFunc *fn = E->fn;
    switch (s->k) {
    case KS_LOOP: {
        /* values that do not change in the loop are computed once before it
         * (compilers vectorise a loop whose addresses are plainly affine) */
        int mark = E->nhoist;
        for (int i = 0; i < s->nbody; i++) {
            const KirStmt *b = s->body[i];
            if (b->k == KS_STORE || b->k == KS_ACCUM || b->k == KS_SET) {
                hoist_invariants(E, b->index, s->var, d);
                hoist_invariants(E, b->value, s->var, d);
            }
        }
        indent(f, d);
        c_loop_head(E, s, NULL, NULL);
        c_body(E, s->body, s->nbody, d + 1);
        indent(f, d);
        fputs("}\n", f);
        E->nhoist = mark;
        return;
    }
    case KS_STORE:
    case KS_ACCUM:
    case KS_SET: {
        Uses us = {0};
        count_uses(E, &us, s->index);
        count_uses(E, &us, s->value);
        force_select_arms(E, &us, s->value);
        c_temps(E, &us, s->index, d);
        c_temps(E, &us, s->value, d);
        indent(f, d);
        if (s->k == KS_SET) fprintf(f, "l%d", s->target);
        else fputs(fn->params[s->target].name, f);
        if (s->index) {
            fputc('[', f);
            c_expr(E, &us, s->index);
            fputc(']', f);
        }
        fputs(s->k == KS_ACCUM ? " += " : " = ", f);
        c_expr(E, &us, s->value);
        fputs(";\n", f);
        free(us.u);
        return;
    }
    case KS_GEMM: {
        const KirGemm *g = &s->gemm;
        indent(f, d);
        fputs("{\n", f);
        indent(f, d + 1);
        fprintf(f, "pxc_gemm_ctx g = {%d, %d, ", g->trans_a, g->trans_b);
        c_expr(E, NULL, g->n);
        fputs(", ", f);
        c_expr(E, NULL, g->k);
        fputs(", ", f);
        c_float(f, g->alpha, KT_F32);
        fputs(", ", f);
        c_float(f, g->beta, KT_F32);
        fprintf(f, ", %s + ", fn->params[g->a].name);
        c_expr(E, NULL, g->a_off);
        fprintf(f, ", %s + ", fn->params[g->b].name);
        c_expr(E, NULL, g->b_off);
        fprintf(f, ", %s + ", fn->params[g->c].name);
        c_expr(E, NULL, g->c_off);
        fprintf(f, ", %lld, %lld, %lld};\n", (long long)g->lda, (long long)g->ldb, (long long)g->ldc);
        indent(f, d + 1);
        fputs("int64_t m = ", f);
        c_expr(E, NULL, g->m);
        fputs(";\n", f);
        indent(f, d + 1);
        fprintf(f, "if (%s_parallel_for && m > 1) %s_parallel_for(pxc_gemm_body, &g, 0, m);\n", E->name, E->name);
        indent(f, d + 1);
        fputs("else pxc_gemm_body(&g, 0, m);\n", f);
        indent(f, d);
        fputs("}\n", f);
        return;
    }
    case KS_CONV: {
        const KirConv *v = &s->conv;
        bool fwd = v->form == KIR_CONV_FORWARD;
        indent(f, d);
        fprintf(f, "{\n");
        indent(f, d + 1);
        fprintf(f, "pxc_conv_ctx k = {%s, %s, %s, %s, (", fn->params[v->x].name, fn->params[v->w].name,
                fn->params[v->y].name, fn->params[fwd ? v->y : v->w].name);
        c_expr(E, NULL, v->images);
        fprintf(f, ") * %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, ", (long long)v->Ho,
                (long long)v->Ho, (long long)v->Wo, (long long)v->Hp, (long long)v->Wp, (long long)v->kh,
                (long long)v->kw, (long long)v->cin, (long long)v->cout, (long long)(v->yt + v->Ho + v->yb),
                (long long)v->yt);
        c_float(f, v->beta, KT_F32);
        fputs("};\n", f);
        indent(f, d + 1);
        fprintf(f, "int64_t units = %s;\n", fwd ? "k.rows" : "k.kh * k.kw * k.cin");
        indent(f, d + 1);
        fprintf(f, "if (%s_parallel_for && units > 1) %s_parallel_for(%s, &k, 0, units);\n", E->name, E->name,
                fwd ? "pxc_conv_fwd_body" : "pxc_conv_wgrad_body");
        indent(f, d + 1);
        fprintf(f, "else %s(&k, 0, units);\n", fwd ? "pxc_conv_fwd_body" : "pxc_conv_wgrad_body");
        indent(f, d);
        fputs("}\n", f);
        return;
    }
    }
}

/* ---- functions ------------------------------------------------------------------------- */

static void c_params(Emit *E, const KirFunc *fn) {
    FILE *f = E->f;
    fputs("int64_t n, uint64_t seed", f);
    for (int i = 0; i < fn->nparams; i++)
        fprintf(f, ", %s%s *restrict %s", fn->params[i].out ? "" : "const ", ctype(fn->params[i].elem),
                fn->params[i].name);
    for (int i = 0; i < fn->nints; i++) fprintf(f, ", int64_t a%d", i);
}

static void c_unused_and_locals(Emit *E, const KirFunc *fn, int d, bool params) {
    FILE *f = E->f;
    indent(f, d);
    fputs("(void)n;\n", f);
    indent(f, d);
    fputs("(void)seed;\n", f);
    for (int i = 0; i < fn->nints; i++) {
        indent(f, d);
        fprintf(f, "(void)a%d;\n", i);
    }
    if (params)
        for (int i = 0; i < fn->nparams; i++) {
            indent(f, d);
            fprintf(f, "(void)%s;\n", fn->params[i].name);
        }
    for (int i = 0; i < fn->nlocals; i++) {
        indent(f, d);
        if (fn->locals[i].len > 1) fprintf(f, "%s l%d[%d] = {0};\n", ctype(fn->locals[i].t), i, fn->locals[i].len);
        else fprintf(f, "%s l%d = 0;\n", ctype(fn->locals[i].t), i);
        indent(f, d);
        fprintf(f, "(void)l%d;\n", i);
    }
}

static void c_func(Emit *E, const KirFunc *fn) {
    FILE *f = E->f;
    E->fn = fn;
    E->ntmp = 0;
    E->nhoist = 0;
    E->nhoisted = 0;
    fprintf(f, "/* %s", fn->name);
    if (fn->ncalls > 1) fprintf(f, " (called %d times)", fn->ncalls);
    fputs(":\n", f);
    if (fn->comment) {
        const char *s = fn->comment;
        while (*s) {
            const char *e = strchr(s, '\n');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            fputs(" *   ", f);
            for (size_t i = 0; i < len; i++) {   /* never close the comment early */
                if (s[i] == '*' && i + 1 < len && s[i + 1] == '/') fputc(' ', f);
                else fputc(s[i], f);
            }
            fputc('\n', f);
            s += len + (e ? 1 : 0);
        }
    }
    fputs(" */\n", f);
    bool any_par = false;
    for (int i = 0; i < fn->nbody; i++) any_par |= fn->body[i]->k == KS_LOOP && (fn->body[i]->flags & KIR_LOOP_PARALLEL);
    if (any_par) {
        fputs("typedef struct {\n    int64_t n;\n    uint64_t seed;\n", f);
        for (int i = 0; i < fn->nparams; i++)
            fprintf(f, "    %s%s *%s;\n", fn->params[i].out ? "" : "const ", ctype(fn->params[i].elem), fn->params[i].name);
        for (int i = 0; i < fn->nints; i++) fprintf(f, "    int64_t a%d;\n", i);
        fprintf(f, "} %s_ctx;\n\n", fn->name);
        for (int i = 0; i < fn->nbody; i++) {
            const KirStmt *s = fn->body[i];
            if (s->k != KS_LOOP || !(s->flags & KIR_LOOP_PARALLEL)) continue;
            /* the loop over [begin, end) with its pointers as restrict parameters
             * (kept out of line: inlined, compilers forget restrict) */
            fprintf(f, "PXC_NOINLINE static void %s_loop%d(int64_t begin, int64_t end, ", fn->name, i);
            c_params(E, fn);
            fputs(") {\n", f);
            c_unused_and_locals(E, fn, 1, true);
            indent(f, 1);
            c_loop_head(E, s, "begin", "end");
            c_body(E, s->body, s->nbody, 2);
            fputs("    }\n}\n\n", f);
            fprintf(f, "static void %s_par%d(void *vctx, int64_t begin, int64_t end) {\n", fn->name, i);
            fprintf(f, "    const %s_ctx *c = (const %s_ctx *)vctx;\n", fn->name, fn->name);
            fprintf(f, "    %s_loop%d(begin, end, c->n, c->seed", fn->name, i);
            for (int k = 0; k < fn->nparams; k++) fprintf(f, ", c->%s", fn->params[k].name);
            for (int k = 0; k < fn->nints; k++) fprintf(f, ", c->a%d", k);
            fputs(");\n}\n\n", f);
        }
    }
    fprintf(f, "static void %s(", fn->name);
    c_params(E, fn);
    fputs(") {\n", f);
    c_unused_and_locals(E, fn, 1, false);
    for (int i = 0; i < fn->nbody; i++) {
        const KirStmt *s = fn->body[i];
        if (s->k == KS_LOOP && (s->flags & KIR_LOOP_PARALLEL)) {
            fprintf(f, "    {\n        %s_ctx c = {n, seed", fn->name);
            for (int k = 0; k < fn->nparams; k++) fprintf(f, ", %s", fn->params[k].name);
            for (int k = 0; k < fn->nints; k++) fprintf(f, ", a%d", k);
            fputs("};\n        int64_t lo = ", f);
            c_expr(E, NULL, s->lo);
            fputs(", hi = ", f);
            c_expr(E, NULL, s->hi);
            fprintf(f, ";\n        if (%s_parallel_for && hi - lo > 1) %s_parallel_for(%s_par%d, &c, lo, hi);\n", E->name,
                    E->name, fn->name, i);
            fprintf(f, "        else %s_par%d(&c, lo, hi);\n    }\n", fn->name, i);
        } else {
            c_stmt(E, s, 1);
        }
    }
    fputs("}\n\n", f);
}

/* ---- entries ------------------------------------------------------------------------------- */

static const char *entry_base(KirEntryKind e, KirBase b) {
    switch (b) {
    case KB_PARAMS: return e == KE_LOSS ? NULL : "params";
    case KB_GRAD: return e == KE_BACKWARD ? "grad" : NULL;
    case KB_X: return "x";
    case KB_LABELS: return e == KE_LOSS ? NULL : "labels";
    case KB_OUT: return e == KE_FORWARD ? "out" : e == KE_LOSS ? "l" : NULL;
    case KB_NLL: return e == KE_FORWARD || e == KE_LOSS ? "nll" : NULL;
    case KB_DL: return e == KE_LOSS ? "dl" : NULL;
    case KB_ARENA: return e == KE_LOSS ? NULL : "ar";
    case KB_STACK: return "stack";
    default: return NULL;
    }
}

static void c_addr(Emit *E, KirEntryKind e, int b) {
    const KirBuf *bf = &E->p->bufs[b];
    const char *base = entry_base(e, bf->base);
    if (!base) pxc_bug("emitc: buffer b%d (%s) is not reachable from this entry", b, bf->name);
    fprintf(E->f, "(%s *)((unsigned char *)%s + %lld", ctype(bf->elem), base, (long long)bf->off0);
    if (bf->off_n) fprintf(E->f, " + %lld * n", (long long)bf->off_n);
    fputc(')', E->f);
}

static void c_entry(Emit *E, KirEntryKind e) {
    FILE *f = E->f;
    const KirProgram *p = E->p;
    const KirEntry *en = &p->entry[e];
    static const char *sig[KE_COUNT] = {
        "static double %s_forward(const float *params, const float *x, const int32_t *labels, int n_, uint64_t seed,\n"
        "                         int training, void *arena, float *out, float *nll) {\n",
        "static void %s_backward(const float *params, const float *x, const int32_t *labels, int n_, void *arena,\n"
        "                        float *grad) {\n",
        "static double %s_loss(const float *l, const float *x, int n_, float *dl, float *nll) {\n",
        "static void %s_init(float *params, const float *x, const int32_t *labels, int n_, void *arena) {\n"};
    fprintf(f, sig[e], E->name);
    fputs("    int64_t n = n_;\n", f);
    if (e != KE_LOSS) fputs("    unsigned char *ar = (unsigned char *)arena;\n    (void)ar;\n    (void)params;\n    (void)labels;\n", f);
    fputs("    (void)x;\n", f);
    if (en->stack_bytes) fprintf(f, "    _Alignas(64) unsigned char stack[%lld];\n", (long long)en->stack_bytes);
    if (e == KE_FORWARD) {
        fputs("    (void)training;\n", f);
        if (p->out_fallback >= 0) {
            fputs("    if (!out) out = ", f);
            c_addr(E, e, p->out_fallback);
            fputs(";\n", f);
        }
        if (p->nll_fallback >= 0) {
            fputs("    if (!nll) nll = ", f);
            c_addr(E, e, p->nll_fallback);
            fputs(";\n", f);
        }
        if (p->seed_buf >= 0) {
            fputs("    memcpy(", f);
            c_addr(E, e, p->seed_buf);
            fputs(", &seed, sizeof seed);\n", f);
        }
    } else if (e == KE_BACKWARD) {
        fputs("    uint64_t seed = 0;\n", f);
        if (p->seed_buf >= 0) {
            fputs("    memcpy(&seed, ", f);
            c_addr(E, e, p->seed_buf);
            fputs(", sizeof seed);\n", f);
        }
        fputs("    (void)grad;\n", f);
    } else {
        fputs("    uint64_t seed = 0;\n", f);
        if (e == KE_LOSS) fputs("    (void)l;\n    (void)dl;\n    (void)nll;\n", f);
    }
    for (int s = 0; s < en->nsteps; s++) {
        const KirStep *st = &en->steps[s];
        const KirFunc *fn = &p->funcs[st->func];
        if (st->note) {
            fputs("    /* ", f);
            for (const char *c = st->note; *c; c++) fputc(*c == '*' && c[1] == '/' ? ' ' : *c, f);
            fputs(" */\n", f);
        }
        fputs("    ", f);
        bool guarded = st->when.training >= 0 || st->when.if_nonnull || st->when.if_null;
        if (guarded) {
            fputs("if (", f);
            const char *sep = "";
            if (st->when.training >= 0) fprintf(f, "%s%straining", sep, st->when.training ? "" : "!"), sep = " && ";
            for (int b = 0; b < KB_COUNT; b++) {
                if (st->when.if_nonnull & (1u << b)) fprintf(f, "%s%s", sep, entry_base(e, (KirBase)b)), sep = " && ";
                if (st->when.if_null & (1u << b)) fprintf(f, "%s!%s", sep, entry_base(e, (KirBase)b)), sep = " && ";
            }
            fputs(") ", f);
        }
        fprintf(f, "%s(n, seed", fn->name);
        for (int a = 0; a < st->nargs; a++) {
            fputs(",\n        ", f);
            c_addr(E, e, st->args[a]);
        }
        if (fn->nints) fputs(",\n        ", f);
        for (int a = 0; a < fn->nints; a++) {
            if (a) fputs(", ", f);
            c_int(f, st->ints[a]);
        }
        fputs(");\n", f);
    }
    if (en->ret_buf >= 0) {
        fputs("    double ret;\n    memcpy(&ret, ", f);
        c_addr(E, e, en->ret_buf);
        fputs(", sizeof ret);\n    return ret;\n", f);
    } else if (e == KE_FORWARD || e == KE_LOSS) {
        fputs("    return 0.0;\n", f);
    }
    fputs("}\n\n", f);
}

/* ---- weights ---------------------------------------------------------------------------------- */

uint64_t emitc_layout_hash(const KirProgram *p) {
    uint64_t h = HASH_INIT;
    for (int i = 0; i < p->nparams_tensors; i++) {
        const KirTensor *t = &p->params[i];
        h = hash_bytes(h, t->name, strlen(t->name) + 1);
        int64_t v[6] = {t->rank, t->offset, t->shape[0], t->shape[1], t->shape[2], t->shape[3]};
        for (int k = t->rank + 2; k < 6; k++) v[k] = 0;
        h = hash_bytes(h, v, sizeof v);
    }
    return h;
}

static void put_u32(unsigned char *b, uint32_t v) { for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *b, uint64_t v) { for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i)); }

void emitc_weights_header(const KirProgram *p, unsigned char hdr[EMITC_WEIGHTS_HEADER]) {
    memset(hdr, 0, EMITC_WEIGHTS_HEADER);
    memcpy(hdr, EMITC_WEIGHTS_MAGIC, 4);
    put_u32(hdr + 4, EMITC_WEIGHTS_VERSION);
    put_u64(hdr + 8, (uint64_t)p->nparams);
    put_u64(hdr + 16, emitc_layout_hash(p));
}

int emitc_write_weights(const KirProgram *p, const float *params, FILE *f) {
    unsigned char hdr[EMITC_WEIGHTS_HEADER];
    emitc_weights_header(p, hdr);
    if (fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr) return -1;
    if (p->nparams && fwrite(params, sizeof(float), (size_t)p->nparams, f) != (size_t)p->nparams) return -1;
    return ferror(f) ? -1 : 0;
}

/* ---- the two files ------------------------------------------------------------------------------ */

static void provenance(FILE *f, const KirProgram *p, const EmitcOptions *o, const char *what) {
    fprintf(f, "/*\n * %s — %s, generated by pxc %s.\n", what, p->name, PXC_VERSION);
    if (o && o->command_line) {
        fputs(" * command: ", f);
        for (const char *c = o->command_line; *c; c++) fputc(*c == '*' && c[1] == '/' ? ' ' : *c, f);
        fputc('\n', f);
    }
    if (o && o->spec_path) fprintf(f, " * spec: %s\n", o->spec_path);
    fprintf(f, " * image %dx%dx%d, %d classes, %lld parameters in %d tensors, %d kernels.\n", p->height, p->width,
            p->channels, p->classes, (long long)p->nparams, p->nparams_tensors, p->nfuncs);
    fputs(" * Do not edit: regenerate with `pxc emit`.\n */\n", f);
}

static void c_header(Emit *E, FILE *h, const EmitcOptions *o) {
    const KirProgram *p = E->p;
    provenance(h, p, o, "model.h");
    fprintf(h, "#ifndef PXC_EMITTED_%s_H\n#define PXC_EMITTED_%s_H\n\n", p->name, p->name);
    fputs("#include <stddef.h>\n#include <stdint.h>\n\n", h);
    fputs("/* ---- the pxc model ABI (identical to pxc's runtime/pxc_model.h) ---- */\n", h);
    fputs(abi_text, h);
    fputs("\n/* ---- this model ---- */\n\n", h);
    fprintf(h, "#define %s_NPARAMS %lldLL\n\n", p->name, (long long)p->nparams);
    fputs("/* Parameters: one float buffer, C-contiguous tensors at these offsets (floats).\n", h);
    for (int i = 0; i < p->nparams_tensors; i++) {
        const KirTensor *t = &p->params[i];
        fprintf(h, " *   %-32s [", t->name);
        for (int d = 0; d < t->rank; d++) fprintf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        fprintf(h, "] at %lld\n", (long long)t->offset);
    }
    fputs(" */\n", h);
    fprintf(h, "extern pxc_model %s;\n\n", p->name);
    fprintf(h, "/* The same under fixed names, for programs that work with any emitted model. */\n");
    fprintf(h, "#define PXC_EMITTED_MODEL %s\n#define PXC_EMITTED_WEIGHTS %s_weights\n"
               "#define PXC_EMITTED_PARALLEL_FOR %s_parallel_for\n\n", p->name, p->name, p->name);
    fprintf(h, "/* Optional: split [begin,end) over threads, run body on each piece, return when all are done. */\n");
    fprintf(h, "extern void (*%s_parallel_for)(void (*body)(void *ctx, int64_t begin, int64_t end), void *ctx,\n"
               "                                int64_t begin, int64_t end);\n\n", p->name);
    fprintf(h, "/* Check a weights file image; on success *params points at its floats. 0, or -1 not a pxc\n"
               " * weights file, -2 another format version, -3 another model or truncated. */\n");
    fprintf(h, "int %s_weights(const void *file, size_t size, const float **params);\n\n", p->name);
    fputs("#endif\n", h);
}

static void c_source(Emit *E, const EmitcOptions *o) {
    FILE *f = E->f;
    const KirProgram *p = E->p;
    provenance(f, p, o, "model.c");
    fprintf(f, "#include \"%s\"\n\n", o && o->header_name ? o->header_name : "model.h");
    fputs(preamble, f);
    fprintf(f, "void (*%s_parallel_for)(void (*body)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t begin,\n"
               "                        int64_t end) = 0;\n\n", E->name);
    fputs(gemm_text, f);
    fputs("/* ---- kernels ---- */\n\n", f);
    for (int i = 0; i < p->nfuncs; i++) c_func(E, &p->funcs[i]);
    fputs("/* ---- entries ---- */\n\n", f);
    fprintf(f, "static size_t %s_arena_bytes(int n) { return (size_t)(%lldLL + %lldLL * (int64_t)n); }\n\n", E->name,
            (long long)p->arena0, (long long)p->arena_n);
    for (int e = 0; e < KE_COUNT; e++) c_entry(E, (KirEntryKind)e);
    fprintf(f, "static const pxc_tensor %s_tensors[] = {\n", E->name);
    for (int i = 0; i < p->nparams_tensors; i++) {
        const KirTensor *t = &p->params[i];
        fputs("    {\"", f);
        for (const char *c = t->name; *c; c++) {
            if (*c == '"' || *c == '\\') fputc('\\', f);
            fputc(*c, f);
        }
        fprintf(f, "\", %d, {%lld, %lld, %lld, %lld}, %lld, %lld},\n", t->rank, (long long)t->shape[0],
                (long long)(t->rank > 1 ? t->shape[1] : 0), (long long)(t->rank > 2 ? t->shape[2] : 0),
                (long long)(t->rank > 3 ? t->shape[3] : 0), (long long)t->offset, (long long)t->numel);
    }
    if (p->nparams_tensors == 0) fputs("    {\"\", 0, {0, 0, 0, 0}, 0, 0},\n", f);
    fputs("};\n\n", f);
    fprintf(f,
            "pxc_model %s = {\n"
            "    .abi_version = PXC_ABI_VERSION,\n"
            "    .height = %d, .width = %d, .channels = %d, .classes = %d,\n"
            "    .head = %d, .nr_mix = %d, .out_channels = %d,\n"
            "    .nparams = %lldLL, .nparam_tensors = %d, .params = %s_tensors,\n"
            "    .arena_bytes = %s_arena_bytes, .forward = %s_forward, .backward = %s_backward,\n"
            "    .loss = %s_loss, .init = %s_init, .release = 0, .impl = 0,\n"
            "};\n\n",
            E->name, p->height, p->width, p->channels, p->classes, p->head, p->nr_mix, p->out_channels,
            (long long)p->nparams, p->nparams_tensors, E->name, E->name, E->name, E->name, E->name, E->name);
    uint64_t h = emitc_layout_hash(p);
    fprintf(f,
            "int %s_weights(const void *file, size_t size, const float **params) {\n"
            "    const unsigned char *b = (const unsigned char *)file;\n"
            "    uint32_t version = 0;\n"
            "    uint64_t np = 0, hash = 0;\n"
            "    if (size < %d || memcmp(b, \"%s\", 4) != 0) return -1;\n"
            "    for (int i = 0; i < 4; i++) version |= (uint32_t)b[4 + i] << (8 * i);\n"
            "    if (version != %d) return -2;\n"
            "    for (int i = 0; i < 8; i++) np |= (uint64_t)b[8 + i] << (8 * i), hash |= (uint64_t)b[16 + i] << (8 * i);\n"
            "    if (np != (uint64_t)%s_NPARAMS || hash != UINT64_C(%llu) || (size - %d) / 4 < np) return -3;\n"
            "    *params = (const float *)(const void *)(b + %d);\n"
            "    return 0;\n"
            "}\n",
            E->name, EMITC_WEIGHTS_HEADER, EMITC_WEIGHTS_MAGIC, EMITC_WEIGHTS_VERSION, E->name,
            (unsigned long long)h, EMITC_WEIGHTS_HEADER, EMITC_WEIGHTS_HEADER);
}

int emitc_program(const KirProgram *p, FILE *h, FILE *c, const EmitcOptions *opt) {
    Emit E;
    memset(&E, 0, sizeof E);
    E.f = c, E.p = p, E.name = p->name;
    c_header(&E, h, opt);
    c_source(&E, opt);
    free(E.hoist);
    return ferror(h) || ferror(c) ? -1 : 0;
}

/* ---- build and load (tests) --------------------------------------------------------------------- */

int emitc_build_and_load(const KirProgram *p, const char *dir, const char *extra_cflags, EmitcModule *out,
                         char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    char *hp = xasprintf("%s/model.h", dir), *cp = xasprintf("%s/model.c", dir), *so = xasprintf("%s/model.so", dir);
    char *logp = xasprintf("%s/cc.log", dir);
    int rc = -1;
    FILE *h = fopen(hp, "w"), *c = fopen(cp, "w");
    if (!h || !c) {
        snprintf(err, errlen, "cannot write %s: %s", h ? cp : hp, strerror(errno));
        if (h) fclose(h);
        if (c) fclose(c);
        goto done;
    }
    EmitcOptions o = {"(test)", NULL, "model.h"};
    int w = emitc_program(p, h, c, &o);
    w |= fclose(h);
    w |= fclose(c);
    if (w) {
        snprintf(err, errlen, "writing %s failed", cp);
        goto done;
    }
    const char *cc = getenv("CC"), *bcf = getenv("PXC_CBLAS_CFLAGS"), *bl = getenv("PXC_CBLAS_LIBS");
    bool noblas = extra_cflags && strstr(extra_cflags, "PXC_NO_CBLAS");
    char *cmd = xasprintf("%s -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC %s %s %s -o %s %s -lm > %s 2>&1",
                          cc && *cc ? cc : "cc", extra_cflags ? extra_cflags : "", noblas || !bcf ? "" : bcf, cp, so,
                          noblas ? "" : bl ? bl : "-lopenblas", logp);
    int st = system(cmd);
    free(cmd);
    if (st != 0) {
        size_t n = 0;
        FILE *lf = fopen(logp, "r");
        if (lf) {
            n = fread(err, 1, errlen - 1, lf);
            fclose(lf);
        }
        err[n] = 0;
        if (!n) snprintf(err, errlen, "the C compiler failed (status %d)", st);
        goto done;
    }
    out->handle = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!out->handle) {
        snprintf(err, errlen, "dlopen %s: %s", so, dlerror());
        goto done;
    }
    out->model = dlsym(out->handle, p->name);
    char *hook = xasprintf("%s_parallel_for", p->name);
    out->parallel_for = dlsym(out->handle, hook);
    free(hook);
    if (!out->model) {
        snprintf(err, errlen, "%s has no symbol %s", so, p->name);
        dlclose(out->handle);
        out->handle = NULL;
        goto done;
    }
    rc = 0;
done:
    free(hp), free(cp), free(so), free(logp);
    return rc;
}

void emitc_unload(EmitcModule *m) {
    if (m->handle) dlclose(m->handle);
    memset(m, 0, sizeof *m);
}
