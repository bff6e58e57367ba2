/*
 * kir.h — pxc's kernel IR: the lowered form of a differentiated graph that
 * both back ends print (compiler/llvm → LLVM IR → ORC JIT, compiler/c →
 * standalone C). It is not an optimiser's IR: every decision (fusion, memory
 * plan, loop order, which loop is parallel) is already taken; a printer maps
 * each node to one construct of its target, in order.
 *
 * ---- Shape of a program ------------------------------------------------------
 *
 *   KirProgram
 *     bufs[]     named byte ranges at a base pointer (an ABI argument or the
 *                arena) with an offset and a size linear in the batch n
 *     funcs[]    kernels: deduplicated functions
 *                    void f(int64_t n, uint64_t seed, T0 *p0, T1 *p1, ...,
 *                           int64_t a0, int64_t a1, ...)
 *                whose body is a list of statements (loop nests, GEMMs,
 *                and the odd plain store or local assignment)
 *     entry[4]   forward / backward / loss / init (runtime/pxc_model.h):
 *                each a list of steps "call funcs[f] with bufs[a0], bufs[a1]...
 *                and the integers ints[0], ints[1]..."
 *
 * Printing an entry (pseudo C; `n` is the entry's batch argument):
 *
 *     double forward(const float *params, const float *x, const int32_t *labels,
 *                    int n, uint64_t seed, int training, void *arena,
 *                    float *out, float *nll) {
 *         if (!out) out = <address of bufs[prog->out_fallback]>;
 *         if (!nll) nll = <address of bufs[prog->nll_fallback]>;
 *         *(uint64_t *)<address of bufs[prog->seed_buf]> = seed;
 *         for each step s: if (guard(s)) funcs[s.func](n, seed, <addr of s.args[0]>, ...,
 *                                                       s.ints[0], ...);
 *         return ret_buf >= 0 ? *(double *)<address of bufs[ret_buf]> : 0;
 *     }
 *
 *   backward reads its seed from bufs[seed_buf] (written by the forward it
 *   follows); loss and init pass seed 0. The address of buffer b is
 *   (char *)<base pointer of b.base> + b.off0 + b.off_n * n. In the loss
 *   entry KB_OUT is its argument l, and its steps are guarded on whether dl
 *   and nll are NULL (it has no arena; its scratch is KB_STACK). A kernel may
 *   read and write one buffer through one (out) param, element by element.
 *
 * ---- Kernels -------------------------------------------------------------------
 *
 * Expressions are DAGs: an operand may be shared by several parents (a
 * printer may compute it once). A function's parameters are n (int64, the
 * batch), seed (uint64),
 * nparams pointers (float, double, int32 or uint64 elements; `out` says
 * whether the kernel writes through it) and nints integers a0.. (int64, read
 * by KX_ARG: constants of the call, see "Integer arguments" below). The caller promises the pointers
 * of one call never overlap where one of them is written (noalias is
 * correct), except that a param may be passed twice to the same function
 * only if neither is written. Statements run in order; a KS_LOOP runs its
 * body for var = lo, lo+1, ..., hi-1 (nothing when hi <= lo).
 *
 * Parallel loops (KIR_LOOP_PARALLEL, only on a top-level statement of a
 * function): iterations are independent — no iteration reads what another
 * writes, no two write the same element, and no local carries a value from
 * one iteration to the next. A printer may split [lo,hi) into contiguous
 * chunks over threads in any way, or run it serially.
 *
 * Reduction loops (KIR_LOOP_REDUCE): the loop accumulates floats (KS_ACCUM
 * to one element, or KS_SET local = local + ...) across its iterations; the
 * printer may reassociate those sums (LLVM: llvm.loop.vectorize.enable). The
 * lowering marks only loops where that is acceptable.
 *
 * GEMMs (KS_GEMM) are cblas_sgemm, row-major:
 *     C[m*ldc + j] = alpha * sum_k opA[m,k] * opB[k,j] + beta * C[m*ldc + j]
 *     opA[m,k] = trans_a ? A[k*lda + m] : A[m*lda + k]
 *     opB[k,j] = trans_b ? B[j*ldb + k] : B[k*ldb + j]
 * with A = params[a] + a_off (elements), likewise B, C. beta 0 means C is
 * written, never read (so it may hold garbage, even NaN). A printer may
 * split the M rows over threads (advance A by m0*lda, or by m0 when
 * trans_a; C by m0*ldc) and must then run OpenBLAS at one thread. A GEMM is
 * always a top-level statement of a function.
 *
 * Direct convolutions (KS_CONV; "implicit GEMM": no im2col buffer) are a
 * stride-1 kh x kw convolution over an input already padded (zero borders)
 * to Hp x Wp, with the weights in the [kh, kw, cin, cout] layout:
 *     x[((img*Hp + i + a)*Wp + j + d)*cin + c]   img < images, i < Ho, j < Wo
 *     w[((a*kw + d)*cin + c)*cout + o]           a < kh, d < kw, c < cin, o < cout
 *     y[((img*Ho + i)*Wo + j)*cout + o]          (Hp >= Ho + kh - 1, Wp >= Wo + kw - 1)
 * KIR_CONV_FORWARD writes y (x, w read):
 *     y[img,i,j,o] = sum_{a,d,c} x[img, i+a, j+d, c] * w[a,d,c,o]  + beta * y[img,i,j,o]
 * KIR_CONV_WGRAD writes w (x, y read; y is the output's gradient):
 *     w[a,d,c,o] = sum_{img,i,j} x[img, i+a, j+d, c] * y[img,i,j,o]  + beta * w[a,d,c,o]
 * beta is 0 (the target is written, never read: it may hold NaN) or 1.
 * pt, pb, pl, pr are a promise of the lowering (0 promises nothing): in
 * every image the first pt rows of x and its last pb rows (rows Hp-pb ..
 * Hp-1) are zero, likewise its first pl and last pr columns (the pad pack's
 * borders), so a printer may skip the terms that read them — the forward
 * form's taps a with i+a < pt or i+a >= Hp-pb, the weight gradient's
 * (output row i, tap a) and (output column j, tap d) pairs likewise — or
 * compute them; pt + pb <= Hp, pl + pr <= Wp. cout is a multiple of 16; the sums are float, in an order the printer
 * chooses. A printer may split the work over threads (the output rows of
 * the forward form, the (a, d, c) rows of the weight gradient: no two
 * threads write one element) and must tile registers as it likes. A
 * convolution is always a top-level statement of a function.
 *
 * ---- Integer arguments -----------------------------------------------------
 *
 * Many kernels differ only in integer constants (spatial sizes, channel
 * counts, strides, offsets, dropout streams). After lowering,
 * kir_parameterise merges each set of kernels whose text is equal up to such
 * constants into one function and turns the constants that differ between
 * them into integer arguments (KX_ARG), which every step passes
 * (KirStep.ints). Constants that steer code generation stay literal, so
 * kernels that differ in them are not merged: the bounds of innermost loops
 * (their trip counts and vector remainders), divisors and moduli of index
 * arithmetic that varies in the innermost loop (no hardware division per
 * element), and factors multiplying that loop's variable (its stride), see
 * kir_param.c. An argument holds a value the constant could have had: it is
 * never negative where the constant was not, and a divisor argument is
 * positive.
 *
 * ---- Expressions -----------------------------------------------------------
 *
 * Trees of KirExpr, typed: KT_BOOL (comparisons), KT_I64 (indices, loop
 * variables, n), KT_F32 (values), KT_F64 (accumulators). Operands of a
 * binary op have the node's type (compare: equal types, result bool).
 * Loads from an int32 param give KT_I64 (sign-extended). All loads are in
 * bounds for every value their loop variables take, also under a KX_SELECT
 * that does not choose them (the lowering clamps such indices), so a
 * printer may evaluate both arms of a select. Integer division and modulo
 * only see non-negative operands and positive constant divisors.
 *
 * Transcendentals are defined exactly, as operation sequences both printers
 * emit (fma(a,b,c) = a*b + c, fused or not at the printer's choice — the
 * one place where the printers may differ by a rounding; constants are
 * float literals):
 *
 * KX_EXP(x): max relative error 1.2e-7 on [-87, 88].
 *     x  = x > 88.0f ? 88.0f : x;           NaN passes through both selects
 *     x  = x < -87.0f ? -87.0f : x;
 *     n  = floor(fma(x, 1.44269504088896341f, 0.5f))
 *     r  = fma(n, -0.693359375f, x)
 *     r  = fma(n, 2.12194440e-4f, r)
 *     p  = 1.9875691500e-4f
 *     p  = fma(p, r, 1.3981999507e-3f)
 *     p  = fma(p, r, 8.3334519073e-3f)
 *     p  = fma(p, r, 4.1665795894e-2f)
 *     p  = fma(p, r, 1.6666665459e-1f)
 *     p  = fma(p, r, 5.0000001201e-1f)
 *     y  = fma(p, r * r, r) + 1.0f
 *     k  = (int32)min(max(n, -127.0f), 127.0f)   (fmaxf/fminf: NaN gives the bound)
 *     return y * bits_as_float((k + 127) << 23)
 *
 * KX_LOG(x): max relative error 2e-7 for normal x. x == 0: -inf, x < 0 or
 * NaN: NaN, +inf: +inf (the selects below are applied last).
 *     s  = x < 1.17549435e-38f ? 8388608.0f : 1.0f   (subnormals scaled by 2^23)
 *     xs = x * s
 *     e  = (float)((int32)(bits(xs) >> 23) - 126) - (s != 1.0f ? 23.0f : 0.0f)
 *     m  = bits_as_float((bits(xs) & 0x007fffff) | 0x3f000000)   m in [0.5, 1)
 *     lo = m < 0.707106781186547524f;  e = e - (lo ? 1.0f : 0.0f);  m = (lo ? m + m : m) - 1.0f
 *     z  = m * m
 *     p  = 7.0376836292e-2f
 *     p  = fma(p, m, -1.1514610310e-1f)
 *     p  = fma(p, m, 1.1676998740e-1f)
 *     p  = fma(p, m, -1.2420140846e-1f)
 *     p  = fma(p, m, 1.4249322787e-1f)
 *     p  = fma(p, m, -1.6668057665e-1f)
 *     p  = fma(p, m, 2.0000714765e-1f)
 *     p  = fma(p, m, -2.4999993993e-1f)
 *     p  = fma(p, m, 3.3333331174e-1f)
 *     y  = (p * m) * z
 *     y  = fma(e, -2.12194440e-4f, y)
 *     y  = fma(z, -0.5f, y)
 *     r  = m + y
 *     r  = fma(e, 0.693359375f, r)
 *     return x == 0 ? -inf : x < 0 ? NaN : x == +inf ? +inf : r   (NaN x: NaN)
 * KX_LOG1P(x) = u == 1.0f ? x : log(u) * (x / (u - 1.0f)),  u = 1.0f + x;  +inf: +inf
 * KX_SIGMOID(x) = 1.0f / (1.0f + exp(-x))
 * KX_TANH(x)    = 1.0f - 2.0f / (exp(x + x) + 1.0f)
 * KX_SQRT(x)    = IEEE square root (sqrtf / llvm.sqrt), correctly rounded.
 * KX_MAX(a,b)   = a > b ? a : b,  KX_MIN(a,b) = a < b ? a : b   (compare + select)
 * KX_UNIFORM(i, b) = pxc_uniform(pxc_image_seed(seed, b), stream, i) of
 *                 runtime/pxc_model.h, f32 (the element i within the image,
 *                 the image b and the stream, below 2^32, are i64 operands).
 *
 * The text form (kir_print) is stable; `pxc check --dump kernels` prints it
 * and tests diff it.
 */
#ifndef PXC_KIR_H
#define PXC_KIR_H

#include "../base/base.h"
#include "../ir/ir.h"

/* ---- types ------------------------------------------------------------------ */

typedef enum KirType {
    KT_BOOL,   /* comparison results, select conditions */
    KT_I64,    /* indices, loop variables, n; loads of int32 data */
    KT_F32,
    KT_F64,
    KT_I32,    /* storage only (labels): loads give KT_I64 */
    KT_U64,    /* storage only (the saved dropout seed) */
} KirType;

/* ---- expressions ------------------------------------------------------------- */

typedef enum KirExprKind {
    KX_CONST,   /* t F32/F64: value f (exactly representable in t); t I64: value i */
    KX_BATCH,   /* the batch size n (I64) */
    KX_VAR,     /* loop variable number i (I64) */
    KX_LOCAL,   /* local number i (its type); x[0]: element index (I64) or NULL for a scalar local */
    KX_LOAD,    /* param i at element index x[0] (I64): F32/F64 or, from int32 data, I64 */
    KX_ADD, KX_SUB, KX_MUL, KX_DIV,   /* x[0] op x[1]; I64 DIV truncates (operands >= 0) */
    KX_MOD,     /* I64 only: x[0] % x[1] (operands >= 0, x[1] a positive constant) */
    KX_NEG,     /* -x[0] */
    KX_FMA,     /* x[0] * x[1] + x[2]: may be fused (one rounding) or not */
    KX_MAX, KX_MIN,                    /* compare + select, see above; also I64 */
    KX_LT, KX_LE, KX_GT, KX_GE, KX_EQ, KX_NE,   /* ordered compares -> BOOL */
    KX_AND, KX_OR, KX_NOT,             /* BOOL */
    KX_SELECT,  /* x[0] (BOOL) ? x[1] : x[2]; both arms are safe to evaluate */
    KX_EXP, KX_LOG, KX_LOG1P, KX_SIGMOID, KX_TANH, KX_SQRT, KX_ABS,   /* F32 only */
    KX_CAST,    /* x[0] converted to t: F32<->F64, I64->F32/F64 */
    KX_UNIFORM, /* pxc_uniform(pxc_image_seed(seed, image = x[1]), stream = x[2], index = x[0]) -> F32 */
    KX_ARG,     /* integer argument number i of the function (I64) */
    KX_COUNT
} KirExprKind;

typedef struct KirExpr KirExpr;
struct KirExpr {
    KirExprKind k;
    KirType t;
    int64_t i;      /* KX_CONST I64 value; KX_VAR, KX_LOCAL, KX_LOAD, KX_ARG: the number */
    double f;       /* KX_CONST F32/F64 value */
    KirExpr *x[3];  /* operands (NULL when unused) */
};

/* ---- statements ------------------------------------------------------------- */

typedef enum KirStmtKind {
    KS_LOOP,    /* for (var = lo; var < hi; var++) body; lo, hi I64 (may use n) */
    KS_STORE,   /* params[param][index] = value */
    KS_ACCUM,   /* params[param][index] += value */
    KS_SET,     /* locals[local][index] = value  (index NULL for a scalar local) */
    KS_GEMM,    /* cblas_sgemm, see the header comment; top level only */
    KS_CONV,    /* direct stride-1 convolution, see the header comment; top level only */
} KirStmtKind;

enum {
    KIR_LOOP_PARALLEL = 1,  /* iterations independent; top-level loops only */
    KIR_LOOP_REDUCE = 2,    /* float sums across iterations may be reassociated */
};

typedef struct KirGemm {
    bool trans_a, trans_b;
    KirExpr *m, *n, *k;            /* I64; may use the batch n */
    int a, b, c;                   /* params (F32 pointers) */
    KirExpr *a_off, *b_off, *c_off;/* I64 element offsets into them */
    int64_t lda, ldb, ldc;
    float alpha, beta;             /* beta is 0 or 1 */
} KirGemm;

enum { KIR_CONV_FORWARD, KIR_CONV_WGRAD };

typedef struct KirConv {
    int form;                      /* KIR_CONV_FORWARD (writes y) or KIR_CONV_WGRAD (writes w) */
    int x, w, y;                   /* params (F32 pointers) */
    KirExpr *images;               /* I64; may use the batch n */
    int64_t Ho, Wo, Hp, Wp, kh, kw, cin, cout;
    int64_t pt, pb, pl, pr;        /* rows of x known zero at the top / bottom of each image, columns left / right */
    int64_t yt, yb;                /* rows of y above / below each image's Ho rows, neither read nor written:
                                      y is [images, yt + Ho + yb, Wo, cout] (0, 0: dense) */
    float beta;                    /* 0 or 1 */
} KirConv;

typedef struct KirStmt KirStmt;
struct KirStmt {
    KirStmtKind k;
    /* KS_LOOP */
    int var;
    KirExpr *lo, *hi;
    unsigned flags;                /* KIR_LOOP_* */
    KirStmt **body;
    int nbody, cbody;
    /* KS_STORE, KS_ACCUM: param; KS_SET: local */
    int target;
    KirExpr *index;                /* I64 (NULL for a scalar local) */
    KirExpr *value;                /* of the target's element type */
    /* KS_GEMM */
    KirGemm gemm;
    /* KS_CONV */
    KirConv conv;
};

/* ---- functions ----------------------------------------------------------------- */

typedef struct KirParam {
    const char *name;   /* e.g. "x", "col", "w" (for printing; unique in the function) */
    KirType elem;       /* F32, F64, I32 or U64 */
    bool out;           /* written by the function */
} KirParam;

typedef struct KirLocal {
    KirType t;          /* F32, F64 or I64 */
    int len;            /* 1: scalar (KX_LOCAL / KS_SET with index NULL); > 1: array */
} KirLocal;

typedef struct KirFunc {
    const char *name;       /* unique, a C identifier: "k7_pack_conv2d" */
    const char *comment;    /* what it computes: graph ops with YAML file:line:col, one per line */
    KirParam *params;
    int nparams;
    KirLocal *locals;       /* uninitialised at entry; private per parallel iteration */
    int nlocals;
    int nvars;              /* loop variables 0..nvars-1, each bound by exactly one KS_LOOP */
    int nints;              /* integer arguments a0..a(nints-1), after the pointers */
    KirStmt **body;         /* top-level statements, in order */
    int nbody, cbody;
    uint64_t hash;          /* of the printed body (deduplication) */
    int ncalls;             /* steps that call it, over all entries */
} KirFunc;

/* ---- buffers --------------------------------------------------------------------- */

/* Where a buffer lives: one of an entry's pointer arguments (pxc_model.h). */
typedef enum KirBase {
    KB_PARAMS,   /* params (init writes g and b through it) */
    KB_GRAD,     /* backward's grad */
    KB_X,        /* x */
    KB_LABELS,   /* labels (int32) */
    KB_OUT,      /* l: forward's out, the loss entry's l */
    KB_NLL,      /* per-pixel nll: forward's and the loss entry's */
    KB_DL,       /* the loss entry's dl */
    KB_ARENA,    /* the arena (forward, backward, init) */
    KB_STACK,    /* the entry's own scratch: KirEntry.stack_bytes in its stack
                    frame, 64-byte aligned, uninitialised (the loss entry has
                    no arena; small reductions use this) */
    KB_COUNT
} KirBase;

typedef struct KirBuf {
    const char *name;        /* e.g. "up.0.u.0.conv1.v", "%37 conv2d raw", "col 32x32x1920" */
    KirBase base;
    KirType elem;
    int64_t off0, off_n;     /* byte offset from the base: off0 + off_n * n (arena: multiples of 64) */
    int64_t size0, size_n;   /* bytes: size0 + size_n * n */
    int node;                /* graph node whose value it holds, -1 for scratch */
} KirBuf;

/* ---- entries ------------------------------------------------------------------------ */

typedef enum KirEntryKind { KE_FORWARD, KE_BACKWARD, KE_LOSS, KE_INIT, KE_COUNT } KirEntryKind;

/* When a step runs. training: -1 always, 1 only when forward's training
 * flag is non-zero, 0 only when it is zero (other entries: training -1).
 * if_nonnull / if_null: masks of (1u << KirBase) whose entry argument must
 * be non-NULL / NULL (the loss entry's dl and nll may be NULL). */
typedef struct KirGuard {
    int training;
    unsigned if_nonnull, if_null;
} KirGuard;

typedef struct KirStep {
    int func;
    int *args;           /* buffer ids, one per param of the function */
    int nargs;
    int64_t *ints;       /* the function's integer arguments, nints of them (NULL when none) */
    KirGuard when;
    const char *note;    /* what it computes, e.g. "up.0.u.0.conv1 conv2d @model.yaml:31:9" (may be NULL) */
} KirStep;

typedef struct KirEntry {
    KirStep *steps;
    int nsteps, csteps;
    int ret_buf;         /* F64 scalar buffer the entry returns (forward, loss), -1: none */
    int64_t stack_bytes; /* size of the KB_STACK scratch */
} KirEntry;

/* One parameter tensor (pxc_model.h's pxc_tensor). */
typedef struct KirTensor {
    const char *name;
    int rank;
    int64_t shape[4];
    int64_t offset;          /* floats from the start of params */
    int64_t numel;
} KirTensor;

/* ---- the program ---------------------------------------------------------------------- */

typedef struct KirProgram {
    Arena arena;             /* every node, name and array of the program */
    KirBuf *bufs;
    int nbufs, cbufs;
    KirFunc *funcs;
    int nfuncs, cfuncs;
    int nfuncs_exact;        /* distinct kernels before kir_parameterise merged them (0: not run) */
    KirEntry entry[KE_COUNT];
    int seed_buf;            /* U64 arena slot: forward saves its seed, backward reads it */
    int out_fallback;        /* arena buffers used when forward's out / nll is NULL */
    int nll_fallback;
    int64_t arena0, arena_n; /* arena bytes for n images: arena0 + arena_n * n */
    int64_t naive0, naive_n; /* bytes if every arena buffer had its own space */

    /* what pxc_model reports */
    const char *name;        /* model name (C identifier of the emitted instance) */
    int height, width, channels, classes;
    int head, nr_mix, out_channels;   /* PXC_HEAD_* */
    KirTensor *params;       /* the parameter layout (ir_param_layout order) */
    int nparams_tensors;
    int64_t nparams;         /* floats */
} KirProgram;

/* ---- lowering (compiler/passes + compiler/kernels) ------------------------------------------ */

typedef struct KirOptions {
    const char *name;        /* model name, a C identifier (default "model"; kir_valid_name) */
    bool no_fusion;          /* one kernel per graph op (debugging, tests) */
    bool no_reuse;           /* every arena buffer gets its own space */
    bool no_direct_conv;     /* every convolution as im2col + GEMM (no KS_CONV; tests, A/B runs) */
    bool no_winograd;        /* no Winograd F(4,3) form for 3-column convolutions (lower.c; tests, A/B runs) */
    bool exact_kernels;      /* keep every integer constant literal: no kir_parameterise */
} KirOptions;

/* Lower a differentiated graph (ad_differentiate done, g->grad set) to a
 * kernel program: fusion, memory planning, kernel dedup. NULL with an error
 * in dl when the graph uses something the lowering does not support (named
 * with the node's SrcLoc). The program does not point into g. */
KirProgram *kir_lower(const Graph *g, const KirOptions *opt, DiagList *dl);
/* Merge kernels equal up to integer constants (see "Integer arguments"):
 * functions are renumbered, steps retargeted and given their ints. Run by
 * kir_lower unless opt->exact_kernels; idempotent. */
void kir_parameterise(KirProgram *p);
void kir_free(KirProgram *p);
/* A model name the emitted C can use: an identifier under 64 characters, not
 * a C keyword or a name the emitted code uses, not starting with "pxc_" or
 * 'k' and a digit. */
bool kir_valid_name(const char *s);

/* Stable text of the whole program (buffers, functions, entries). */
void kir_print(const KirProgram *p, FILE *f);
void kir_print_func(const KirProgram *p, const KirFunc *fn, FILE *f);
void kir_print_expr(const KirExpr *e, FILE *f);

/* Arena bytes for n images (the planned one) and the naive sum of every
 * buffer; a short report of both to f when f is not NULL. */
size_t kir_arena_bytes(const KirProgram *p, int n);
size_t kir_arena_naive_bytes(const KirProgram *p, int n);
void kir_arena_report(const KirProgram *p, int n, FILE *f);

/* Scalar reference versions of the transcendentals defined above (fma as
 * a*b + c unfused): what emitted C computes, for tests. */
float kir_exp_ref(float x);
float kir_log_ref(float x);
float kir_log1p_ref(float x);

/* ---- building (the lowering uses these; tests may build programs by hand) ---- */

KirProgram *kir_program_new(const char *name);
int kir_buf(KirProgram *p, const char *name, KirBase base, KirType elem, int64_t off0, int64_t off_n,
            int64_t size0, int64_t size_n, int node);

KirExpr *kir_const_f32(KirProgram *p, float v);
KirExpr *kir_const_f64(KirProgram *p, double v);
KirExpr *kir_const_i64(KirProgram *p, int64_t v);
KirExpr *kir_batch(KirProgram *p);
KirExpr *kir_arg(KirProgram *p, const KirFunc *fn, int arg);   /* fn->nints > arg */
KirExpr *kir_var(KirProgram *p, int var);
KirExpr *kir_local(KirProgram *p, const KirFunc *fn, int local, KirExpr *index);
KirExpr *kir_load(KirProgram *p, const KirFunc *fn, int param, KirExpr *index);
/* Unary/binary/ternary ops; the type follows the operands (compares: BOOL). */
KirExpr *kir_op1(KirProgram *p, KirExprKind k, KirExpr *a);
KirExpr *kir_op2(KirProgram *p, KirExprKind k, KirExpr *a, KirExpr *b);
KirExpr *kir_op3(KirProgram *p, KirExprKind k, KirExpr *a, KirExpr *b, KirExpr *c);
KirExpr *kir_cast(KirProgram *p, KirType t, KirExpr *a);
KirExpr *kir_uniform(KirProgram *p, int stream, KirExpr *image, KirExpr *index);

/* A function under construction (append it with kir_func_finish). */
KirFunc *kir_func_begin(KirProgram *p, const char *stem);
int kir_func_param(KirProgram *p, KirFunc *fn, const char *name, KirType elem, bool out);
int kir_func_local(KirProgram *p, KirFunc *fn, KirType t, int len);
/* Statements go into `into` (a KS_LOOP) or, when NULL, the function's top level. */
KirStmt *kir_loop(KirProgram *p, KirFunc *fn, KirStmt *into, KirExpr *lo, KirExpr *hi, unsigned flags);
int kir_loop_var(const KirStmt *loop);   /* its variable: use kir_var(p, kir_loop_var(L)) */
void kir_store(KirProgram *p, KirFunc *fn, KirStmt *into, int param, KirExpr *index, KirExpr *value);
void kir_accum(KirProgram *p, KirFunc *fn, KirStmt *into, int param, KirExpr *index, KirExpr *value);
void kir_set(KirProgram *p, KirFunc *fn, KirStmt *into, int local, KirExpr *index, KirExpr *value);
void kir_gemm(KirProgram *p, KirFunc *fn, const KirGemm *g);
void kir_conv(KirProgram *p, KirFunc *fn, const KirConv *c);
/* Finish fn: returns the id of an identical existing function (fn is
 * dropped) or of fn, now appended to p->funcs. comment may be NULL. */
int kir_func_finish(KirProgram *p, KirFunc *fn, const char *comment);
/* The value of an I64 expression of constants, integer arguments (ints[0..nints),
 * ints NULL: unknown) and the batch n; -1 when it depends on anything else
 * or a step would go negative. */
int64_t kir_eval_i64(const KirExpr *e, int64_t n, const int64_t *ints, int nints);
/* Append a step to an entry. */
void kir_step(KirProgram *p, KirEntryKind e, int func, const int *args, int nargs, KirGuard when);
/* The same for a function with integer arguments (nints == its nints). */
void kir_step_ints(KirProgram *p, KirEntryKind e, int func, const int *args, int nargs, const int64_t *ints,
                   int nints, KirGuard when);
/* Add an integer argument to a function under construction; its number. */
int kir_func_int(KirProgram *p, KirFunc *fn);

/* The text deduplication compares (a function without its name and
 * comment), with every I64 constant for which hole(ctx, e) is true printed
 * as `#`; returns how many were. kir_parameterise's key. */
int kir_print_body_holes(const KirFunc *fn, bool (*hole)(void *ctx, const KirExpr *e), void *ctx, FILE *f);
KirGuard kir_always(void);

#endif
