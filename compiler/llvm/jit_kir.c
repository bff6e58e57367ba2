/*
 * jit_kir.c — the kernel IR printer of compiler/llvm: every KirFunc becomes
 * an LLVM function `void f(i64 n, i64 seed, T0 *noalias p0, ..., i64 a0, ...)`
 * (plus a thunk f.step taking its pointers and integers as arrays), every
 * entry of the program (forward, backward, loss, init) a trampoline with the
 * signature of runtime/pxc_model.h into run_entry, which walks the entry's
 * steps as data, and jit_compile wraps the compiled result as a pxc_model.
 *
 * How kernel IR maps to LLVM IR (kir.h defines the semantics):
 *   - a kernel's integer arguments (KX_ARG) are i64 parameters after its
 *     pointers; each call passes its step's constants.
 *   - expressions: one LLVM value per node, memoised within a statement
 *     (shared operands computed once); transcendentals are the inline
 *     polynomials of jit_ir.h, which follow kir.h's definitions exactly;
 *     I64 division and modulo are unsigned (kir.h: operands are >= 0).
 *   - loops: jir loops; KIR_LOOP_REDUCE adds llvm.loop.vectorize.enable, so
 *     float sums vectorise (reassociated, as kir.h allows).
 *   - a top-level KIR_LOOP_PARALLEL loop is outlined into
 *     `f.chunk<i>(n, seed, p..., lo, hi)` (noalias params, its own locals)
 *     and run through jit_rt_parallel_for over pxc's two threads, or called
 *     directly when the loop is too small to be worth a second thread.
 *   - KS_CONV is a register-tiled direct convolution over <16 x float>
 *     vectors (jit_conv.c), its rows or tiles split over the two threads.
 *   - KS_GEMM calls cblas_sgemm through jit_rt_sgemm (which blocks tall,
 *     narrow products by rows); large ones split M over the two threads
 *     (OpenBLAS at one thread, set by jit_add_runtime_symbols).
 *   - locals are allocas in the entry block (promoted to registers).
 */
#include "jit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Core.h>

#include "../../runtime/pxc_model.h"
#include "../kernels/kir.h"
#include "jit_ir.h"
#include "jit_prof.h"

/* Bump when the LLVM IR printed for the same kernel IR changes: the object
 * cache key includes it (and the build times of this file and jit_ir.c, so
 * a rebuilt pxc never trusts objects an older printer made). */
#define JIT_CODEGEN_VERSION 6

/* A parallel loop runs serially below this many (estimated) inner iterations. */
#define PAR_MIN_WORK 8192
/* A GEMM splits M over threads from this many multiply-adds. */
#define GEMM_PAR_MIN_MACS (1 << 18)

/* ---- printing one function ------------------------------------------------------ */

typedef struct MemoSlot {
    const KirExpr *key;
    unsigned gen;
    LLVMValueRef val;
} MemoSlot;

typedef struct FnCtx {
    JitIR *ir;
    const KirProgram *prog;
    const KirFunc *fn;
    LLVMValueRef n, seed;
    LLVMValueRef *params;      /* [fn->nparams] typed pointers */
    LLVMValueRef *ints;        /* [fn->nints] i64 integer arguments */
    LLVMValueRef *locals;      /* [fn->nlocals] allocas */
    LLVMValueRef *vars;        /* [fn->nvars] loop variables in scope */
    MemoSlot *memo;
    unsigned memo_cap, memo_n, gen;
    DiagList *dl;
    bool failed;
} FnCtx;

static LLVMTypeRef ty(JitIR *ir, KirType t) {
    switch (t) {
    case KT_BOOL: return ir->t_i1;
    case KT_I64: return ir->t_i64;
    case KT_F32: return ir->t_f32;
    case KT_F64: return ir->t_f64;
    case KT_I32: return ir->t_i32;
    case KT_U64: return ir->t_i64;
    }
    pxc_bug("kernel IR type %d", (int)t);
}

static bool is_float(KirType t) { return t == KT_F32 || t == KT_F64; }

static LLVMValueRef memo_get(FnCtx *c, const KirExpr *e) {
    unsigned h = (unsigned)(((uintptr_t)e >> 4) * 2654435761u) & (c->memo_cap - 1);
    for (;; h = (h + 1) & (c->memo_cap - 1)) {
        MemoSlot *s = &c->memo[h];
        if (s->gen != c->gen) return NULL;
        if (s->key == e) return s->val;
    }
}

static void memo_put(FnCtx *c, const KirExpr *e, LLVMValueRef v) {
    if (2 * (c->memo_n + 1) > c->memo_cap) {   /* grow: rehash the current generation */
        MemoSlot *old = c->memo;
        unsigned oc = c->memo_cap;
        c->memo_cap *= 2;
        c->memo = xcalloc(c->memo_cap, sizeof *c->memo);
        for (unsigned i = 0; i < oc; i++)
            if (old[i].gen == c->gen) {
                unsigned h = (unsigned)(((uintptr_t)old[i].key >> 4) * 2654435761u) & (c->memo_cap - 1);
                while (c->memo[h].gen == c->gen) h = (h + 1) & (c->memo_cap - 1);
                c->memo[h] = old[i];
            }
        free(old);
    }
    unsigned h = (unsigned)(((uintptr_t)e >> 4) * 2654435761u) & (c->memo_cap - 1);
    while (c->memo[h].gen == c->gen) h = (h + 1) & (c->memo_cap - 1);
    c->memo[h] = (MemoSlot){e, c->gen, v};
    c->memo_n++;
}

static void memo_reset(FnCtx *c) {
    c->gen++;
    c->memo_n = 0;
}

static LLVMValueRef expr(FnCtx *c, const KirExpr *e);

static LLVMValueRef elem_ptr(FnCtx *c, LLVMValueRef base, KirType elem, const KirExpr *index) {
    return jir_gep(c->ir, ty(c->ir, elem), base, expr(c, index));
}

static LLVMValueRef local_ptr(FnCtx *c, int local, const KirExpr *index) {
    JitIR *ir = c->ir;
    const KirLocal *l = &c->fn->locals[local];
    if (!index) return c->locals[local];
    LLVMValueRef idx[2] = {jir_i64(ir, 0), expr(c, index)};
    return LLVMBuildInBoundsGEP2(ir->b, LLVMArrayType(ty(ir, l->t), (unsigned)l->len), c->locals[local], idx, 2,
                                 "");
}

/* pxc_uniform of pxc_model.h, inline so dropout masks vectorise. */
static LLVMValueRef mix64(JitIR *ir, LLVMValueRef z) {
    LLVMBuilderRef b = ir->b;
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, jir_i64(ir, 30), ""), ""),
                     LLVMConstInt(ir->t_i64, 0xBF58476D1CE4E5B9ULL, 0), "");
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, jir_i64(ir, 27), ""), ""),
                     LLVMConstInt(ir->t_i64, 0x94D049BB133111EBULL, 0), "");
    return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, jir_i64(ir, 31), ""), "");
}

static LLVMValueRef uniform(FnCtx *c, LLVMValueRef stream, LLVMValueRef image, LLVMValueRef index) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    /* k = 0x9E3779B97F4A7C15 * ((uint32_t)stream + 1) (folded when the stream is a constant) */
    LLVMValueRef s32 = LLVMBuildAnd(b, stream, LLVMConstInt(ir->t_i64, 0xFFFFFFFFULL, 0), "");
    LLVMValueRef k = LLVMBuildMul(b, LLVMBuildAdd(b, s32, jir_i64(ir, 1), ""),
                                  LLVMConstInt(ir->t_i64, 0x9E3779B97F4A7C15ULL, 0), "");
    /* pxc_image_seed(seed, image) = seed + 0xD1B54A32D192ED03 * image */
    LLVMValueRef seed_b =
        LLVMBuildAdd(b, c->seed, LLVMBuildMul(b, image, LLVMConstInt(ir->t_i64, 0xD1B54A32D192ED03ULL, 0), ""), "");
    LLVMValueRef s = mix64(ir, LLVMBuildAdd(b, seed_b, k, ""));
    LLVMValueRef z = mix64(ir, LLVMBuildXor(b, s, index, ""));
    LLVMValueRef top = LLVMBuildLShr(b, z, jir_i64(ir, 40), "");
    return LLVMBuildFMul(b, LLVMBuildSIToFP(b, top, ir->t_f32, ""), jir_f32(ir, 1.0 / 16777216.0), "");
}

static LLVMValueRef bug_value(FnCtx *c, const KirExpr *e, const char *what) {
    if (!c->failed)
        diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': %s (expression kind %d, type %d; an internal error in pxc)",
                   c->fn->name, what, (int)e->k, (int)e->t);
    c->failed = true;
    return LLVMGetUndef(ty(c->ir, e->t));
}

static LLVMValueRef expr_uncached(FnCtx *c, const KirExpr *e) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    LLVMValueRef x0 = NULL, x1 = NULL, x2 = NULL;
    switch (e->k) {
    case KX_CONST:
        if (e->t == KT_I64) return jir_i64(ir, e->i);
        if (e->t == KT_F32) return jir_f32(ir, e->f);
        if (e->t == KT_F64) return LLVMConstReal(ir->t_f64, e->f);
        if (e->t == KT_BOOL) return LLVMConstInt(ir->t_i1, e->i != 0, 0);
        return bug_value(c, e, "constant of this type");
    case KX_BATCH: return c->n;
    case KX_ARG:
        if (e->i < 0 || e->i >= c->fn->nints) return bug_value(c, e, "no such integer argument");
        return c->ints[e->i];
    case KX_VAR:
        if (e->i < 0 || e->i >= c->fn->nvars || !c->vars[e->i]) return bug_value(c, e, "loop variable not in scope");
        return c->vars[e->i];
    case KX_LOCAL: {
        if (e->i < 0 || e->i >= c->fn->nlocals) return bug_value(c, e, "no such local");
        LLVMTypeRef t = ty(ir, c->fn->locals[e->i].t);
        return LLVMBuildLoad2(b, t, local_ptr(c, (int)e->i, e->x[0]), "");
    }
    case KX_LOAD: {
        if (e->i < 0 || e->i >= c->fn->nparams) return bug_value(c, e, "no such param");
        KirType et = c->fn->params[e->i].elem;
        LLVMValueRef v = LLVMBuildLoad2(b, ty(ir, et), elem_ptr(c, c->params[e->i], et, e->x[0]), "");
        LLVMSetAlignment(v, et == KT_F64 || et == KT_U64 ? 8 : 4);
        if (et == KT_I32) v = LLVMBuildSExt(b, v, ir->t_i64, "");
        return v;
    }
    default: break;
    }
    if (e->x[0]) x0 = expr(c, e->x[0]);
    if (e->x[1]) x1 = expr(c, e->x[1]);
    if (e->x[2]) x2 = expr(c, e->x[2]);
    KirType ot = e->x[0] ? e->x[0]->t : e->t;   /* operand type (compares: not the result's) */
    bool fl = is_float(ot);
    switch (e->k) {
    case KX_ADD: return fl ? LLVMBuildFAdd(b, x0, x1, "") : LLVMBuildNSWAdd(b, x0, x1, "");
    case KX_SUB: return fl ? LLVMBuildFSub(b, x0, x1, "") : LLVMBuildNSWSub(b, x0, x1, "");
    case KX_MUL: return fl ? LLVMBuildFMul(b, x0, x1, "") : LLVMBuildNSWMul(b, x0, x1, "");
    case KX_DIV: return fl ? LLVMBuildFDiv(b, x0, x1, "") : LLVMBuildUDiv(b, x0, x1, "");
    case KX_MOD:
        if (fl) return bug_value(c, e, "float modulo");
        return LLVMBuildURem(b, x0, x1, "");
    case KX_NEG: return fl ? LLVMBuildFNeg(b, x0, "") : LLVMBuildNSWNeg(b, x0, "");
    case KX_FMA: return jir_fmuladd(ir, x0, x1, x2);
    case KX_MAX:
        if (fl) return jir_max(ir, x0, x1);
        return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, x0, x1, ""), x0, x1, "");
    case KX_MIN:
        if (fl) return jir_min(ir, x0, x1);
        return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x0, x1, ""), x0, x1, "");
    case KX_LT: return fl ? LLVMBuildFCmp(b, LLVMRealOLT, x0, x1, "") : LLVMBuildICmp(b, LLVMIntSLT, x0, x1, "");
    case KX_LE: return fl ? LLVMBuildFCmp(b, LLVMRealOLE, x0, x1, "") : LLVMBuildICmp(b, LLVMIntSLE, x0, x1, "");
    case KX_GT: return fl ? LLVMBuildFCmp(b, LLVMRealOGT, x0, x1, "") : LLVMBuildICmp(b, LLVMIntSGT, x0, x1, "");
    case KX_GE: return fl ? LLVMBuildFCmp(b, LLVMRealOGE, x0, x1, "") : LLVMBuildICmp(b, LLVMIntSGE, x0, x1, "");
    case KX_EQ: return fl ? LLVMBuildFCmp(b, LLVMRealOEQ, x0, x1, "") : LLVMBuildICmp(b, LLVMIntEQ, x0, x1, "");
    /* C's != is true for NaN operands: unordered-or-not-equal */
    case KX_NE: return fl ? LLVMBuildFCmp(b, LLVMRealUNE, x0, x1, "") : LLVMBuildICmp(b, LLVMIntNE, x0, x1, "");
    case KX_AND: return LLVMBuildAnd(b, x0, x1, "");
    case KX_OR: return LLVMBuildOr(b, x0, x1, "");
    case KX_NOT: return LLVMBuildNot(b, x0, "");
    case KX_SELECT: return LLVMBuildSelect(b, x0, x1, x2, "");
    case KX_EXP: return jir_exp(ir, x0);
    case KX_LOG: return jir_log(ir, x0);
    case KX_LOG1P: return jir_log1p(ir, x0);
    case KX_SIGMOID: return jir_sigmoid(ir, x0);
    case KX_TANH: return jir_tanh(ir, x0);
    case KX_SQRT: return jir_sqrt(ir, x0);
    case KX_ABS:
        if (fl) return jir_fabs(ir, x0);
        return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x0, jir_i64(ir, 0), ""), LLVMBuildNSWNeg(b, x0, ""),
                               x0, "");
    case KX_CAST:
        if (e->t == ot) return x0;
        if (e->t == KT_F64 && ot == KT_F32) return LLVMBuildFPExt(b, x0, ir->t_f64, "");
        if (e->t == KT_F32 && ot == KT_F64) return LLVMBuildFPTrunc(b, x0, ir->t_f32, "");
        if (is_float(e->t) && ot == KT_I64) return LLVMBuildSIToFP(b, x0, ty(ir, e->t), "");
        if (e->t == KT_I64 && is_float(ot)) return LLVMBuildFPToSI(b, x0, ir->t_i64, "");
        return bug_value(c, e, "cast between these types");
    case KX_UNIFORM: return uniform(c, x2, x1, x0);
    default: return bug_value(c, e, "unknown expression kind");
    }
}

static LLVMValueRef expr(FnCtx *c, const KirExpr *e) {
    if (!e) {
        if (!c->failed) diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': missing operand (an internal error in pxc)",
                                   c->fn->name);
        c->failed = true;
        return LLVMGetUndef(c->ir->t_i64);
    }
    LLVMValueRef v = memo_get(c, e);
    if (v) return v;
    v = expr_uncached(c, e);
    memo_put(c, e, v);
    return v;
}

/* Convert a value to the storage type of a param or local. */
static LLVMValueRef to_storage(FnCtx *c, LLVMValueRef v, KirType elem) {
    if (elem == KT_I32) return LLVMBuildTrunc(c->ir->b, v, c->ir->t_i32, "");
    return v;
}

static void stmts(FnCtx *c, KirStmt *const *body, int n);

static unsigned loop_flags(unsigned kflags) {
    return (kflags & KIR_LOOP_REDUCE) ? JIR_LOOP_VECTORIZE : 0;
}

/* A KS_LOOP from lo to hi (already evaluated) with its body. */
static void loop_over(FnCtx *c, const KirStmt *s, LLVMValueRef lo, LLVMValueRef hi) {
    JirLoop L;
    jir_loop_begin(c->ir, &L, lo, hi, loop_flags(s->flags));
    if (s->var < 0 || s->var >= c->fn->nvars) {
        diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': loop variable %d out of range (an internal error in pxc)",
                   c->fn->name, s->var);
        c->failed = true;
    } else {
        c->vars[s->var] = L.iv;
    }
    stmts(c, s->body, s->nbody);
    if (s->var >= 0 && s->var < c->fn->nvars) c->vars[s->var] = NULL;
    jir_loop_end(c->ir, &L);
    memo_reset(c);   /* values computed in the body do not dominate what follows */
}

static void stmt(FnCtx *c, const KirStmt *s) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    memo_reset(c);
    switch (s->k) {
    case KS_LOOP: {
        LLVMValueRef lo = expr(c, s->lo), hi = expr(c, s->hi);
        loop_over(c, s, lo, hi);
        return;
    }
    case KS_STORE:
    case KS_ACCUM: {
        if (s->target < 0 || s->target >= c->fn->nparams) break;
        KirType et = c->fn->params[s->target].elem;
        LLVMValueRef v = expr(c, s->value);
        LLVMValueRef p = elem_ptr(c, c->params[s->target], et, s->index);
        if (s->k == KS_ACCUM) {
            LLVMValueRef old = LLVMBuildLoad2(b, ty(ir, et), p, "");
            LLVMSetAlignment(old, et == KT_F64 || et == KT_U64 ? 8 : 4);
            v = is_float(et) ? LLVMBuildFAdd(b, old, v, "") : LLVMBuildAdd(b, old, to_storage(c, v, et), "");
        }
        LLVMValueRef st = LLVMBuildStore(b, to_storage(c, v, et), p);
        LLVMSetAlignment(st, et == KT_F64 || et == KT_U64 ? 8 : 4);
        return;
    }
    case KS_SET: {
        if (s->target < 0 || s->target >= c->fn->nlocals) break;
        LLVMValueRef v = expr(c, s->value);
        LLVMBuildStore(b, v, local_ptr(c, s->target, s->index));
        return;
    }
    case KS_GEMM:
    case KS_CONV: break;   /* top level only: handled by the function printer */
    }
    diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': malformed statement (kind %d; an internal error in pxc)",
               c->fn->name, (int)s->k);
    c->failed = true;
}

static void stmts(FnCtx *c, KirStmt *const *body, int n) {
    for (int i = 0; i < n && !c->failed; i++) stmt(c, body[i]);
}

/* ---- functions: params, locals, parallel loops, GEMMs -------------------------------- */

static LLVMTypeRef ptr_ty(JitIR *ir, KirType elem) { return LLVMPointerType(ty(ir, elem), 0); }

/* The LLVM signature of a kernel: (i64 n, i64 seed, T0* p0, ..., i64 a0, ...[, i64 lo, i64 hi]). */
static LLVMTypeRef *kernel_params(JitIR *ir, const KirFunc *fn, bool range, int *np) {
    int n = 2 + fn->nparams + fn->nints + (range ? 2 : 0);
    LLVMTypeRef *ps = xmalloc((size_t)n * sizeof *ps);
    ps[0] = ir->t_i64;
    ps[1] = ir->t_i64;
    for (int i = 0; i < fn->nparams; i++) ps[2 + i] = ptr_ty(ir, fn->params[i].elem);
    for (int i = 0; i < fn->nints; i++) ps[2 + fn->nparams + i] = ir->t_i64;
    if (range) ps[n - 2] = ps[n - 1] = ir->t_i64;
    *np = n;
    return ps;
}

/* Bind n, seed, params and fresh locals of the function being defined. */
static void bind_function(FnCtx *c, LLVMValueRef f) {
    JitIR *ir = c->ir;
    c->n = LLVMGetParam(f, 0);
    c->seed = LLVMGetParam(f, 1);
    for (int i = 0; i < c->fn->nparams; i++) {
        c->params[i] = LLVMGetParam(f, (unsigned)(2 + i));
        jir_param_noalias(ir, f, 2 + i);
    }
    for (int i = 0; i < c->fn->nints; i++) c->ints[i] = LLVMGetParam(f, (unsigned)(2 + c->fn->nparams + i));
    for (int i = 0; i < c->fn->nlocals; i++) {
        const KirLocal *l = &c->fn->locals[i];
        LLVMTypeRef t = l->len > 1 ? LLVMArrayType(ty(ir, l->t), (unsigned)l->len) : ty(ir, l->t);
        c->locals[i] = LLVMBuildAlloca(ir->b, t, "");
    }
    for (int i = 0; i < c->fn->nvars; i++) c->vars[i] = NULL;
    memo_reset(c);
}

/* Estimated innermost iterations of a statement list at batch n with
 * integer arguments ints (a trip count known only at run time counts 64). */
static double body_work_n(KirStmt *const *body, int nb, int64_t n, const int64_t *ints, int nints) {
    double w = 0;
    for (int i = 0; i < nb; i++) {
        const KirStmt *s = body[i];
        if (s->k != KS_LOOP) {
            w += 1;
            continue;
        }
        int64_t lo = kir_eval_i64(s->lo, n, ints, nints), hi = kir_eval_i64(s->hi, n, ints, nints);
        double trip = lo >= 0 && hi >= 0 ? (double)(hi > lo ? hi - lo : 0) : 64;
        w += trip * body_work_n(s->body, s->nbody, n, ints, nints);
    }
    return w;
}

/* An I64 expression of constants, n and integer arguments only. */
static bool static_i64(const KirExpr *e) {
    if (!e) return true;
    if (e->k == KX_VAR || e->k == KX_LOCAL || e->k == KX_LOAD) return false;
    for (int i = 0; i < 3; i++)
        if (!static_i64(e->x[i])) return false;
    return true;
}

/* body_work_n at batch 1 as an i64 value of the function being printed:
 * a constant unless a trip count depends on an integer argument. */
static LLVMValueRef work_ir(FnCtx *c, KirStmt *const *body, int nb) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    LLVMValueRef w = jir_i64(ir, 0);
    for (int i = 0; i < nb; i++) {
        const KirStmt *s = body[i];
        if (s->k != KS_LOOP) {
            w = LLVMBuildAdd(b, w, jir_i64(ir, 1), "");
            continue;
        }
        int64_t lo = kir_eval_i64(s->lo, 1, NULL, 0), hi = kir_eval_i64(s->hi, 1, NULL, 0);
        LLVMValueRef trip;
        if (lo >= 0 && hi >= 0) {
            trip = jir_i64(ir, hi > lo ? hi - lo : 0);
        } else if (static_i64(s->lo) && static_i64(s->hi)) {
            LLVMValueRef d = LLVMBuildSub(b, expr(c, s->hi), expr(c, s->lo), "");
            trip = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, d, jir_i64(ir, 0), ""), d, jir_i64(ir, 0), "");
        } else {
            trip = jir_i64(ir, 64);
        }
        w = LLVMBuildAdd(b, w, LLVMBuildMul(b, trip, work_ir(c, s->body, s->nbody), ""), "");
    }
    return w;
}

static LLVMValueRef declare_parallel_for(JitIR *ir) {
    LLVMTypeRef bps[3] = {ir->t_pi8, ir->t_i64, ir->t_i64};
    LLVMTypeRef body = LLVMPointerType(LLVMFunctionType(ir->t_void, bps, 3, 0), 0);
    LLVMTypeRef ps[4] = {body, ir->t_pi8, ir->t_i64, ir->t_i64};
    return jir_declare(ir, "jit_rt_parallel_for", ir->t_void, ps, 4);
}

/* Store vals[i] into the fields of a fresh stack struct; returns it as i8*. */
static LLVMValueRef pack_ctx(JitIR *ir, LLVMValueRef entry_alloca_fn, LLVMTypeRef st, LLVMValueRef *vals, int n) {
    LLVMBasicBlockRef cur = LLVMGetInsertBlock(ir->b);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(entry_alloca_fn);
    LLVMPositionBuilder(ir->b, entry, LLVMGetFirstInstruction(entry));
    LLVMValueRef a = LLVMBuildAlloca(ir->b, st, "ctx");
    LLVMPositionBuilderAtEnd(ir->b, cur);
    for (int i = 0; i < n; i++) LLVMBuildStore(ir->b, vals[i], LLVMBuildStructGEP2(ir->b, st, a, (unsigned)i, ""));
    return LLVMBuildBitCast(ir->b, a, ir->t_pi8, "");
}

static LLVMValueRef unpack(JitIR *ir, LLVMTypeRef st, LLVMValueRef ctx, int i) {
    LLVMTypeRef ft = LLVMStructGetTypeAtIndex(st, (unsigned)i);
    return LLVMBuildLoad2(ir->b, ft, LLVMBuildStructGEP2(ir->b, st, ctx, (unsigned)i, ""), "");
}

/* A top-level parallel loop: f.chunk<k> runs [lo, hi) of it; f.par<k> is
 * the parallel-for body; f calls one or the other. */
static void parallel_loop(FnCtx *c, LLVMValueRef f, const KirStmt *s, int k) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    const KirFunc *fn = c->fn;
    LLVMValueRef lo = expr(c, s->lo), hi = expr(c, s->hi);
    LLVMBasicBlockRef resume = LLVMGetInsertBlock(b);
    LLVMValueRef *saved_params = c->params, *saved_locals = c->locals, *saved_ints = c->ints;
    LLVMValueRef saved_n = c->n, saved_seed = c->seed;
    LLVMValueRef params[fn->nparams + 1], locals[fn->nlocals + 1], ints[fn->nints + 1];
    c->params = params;
    c->locals = locals;
    c->ints = ints;
    int P = fn->nparams, I = fn->nints;

    /* f.chunk<k>(n, seed, p..., a..., lo, hi) */
    int np;
    LLVMTypeRef *ps = kernel_params(ir, fn, true, &np);
    char *name = xasprintf("%s.chunk%d", fn->name, k);
    LLVMValueRef chunk = jir_function(ir, name, ir->t_void, ps, np);
    LLVMSetLinkage(chunk, LLVMInternalLinkage);
    /* two callers (the serial path and the parallel body): inlining would
     * compile the loop nest twice */
    LLVMAddAttributeAtIndex(chunk, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(ir->ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0));
    free(name);
    bind_function(c, chunk);
    loop_over(c, s, LLVMGetParam(chunk, (unsigned)np - 2), LLVMGetParam(chunk, (unsigned)np - 1));
    LLVMBuildRetVoid(b);

    /* ctx = {n, seed, lo, p..., a...}; f.par<k>(ctx, x, y) = chunk(n, seed, p..., a..., lo + x, lo + y) */
    int nf = 3 + P + I;
    LLVMTypeRef *fts = xmalloc((size_t)nf * sizeof *fts);
    fts[0] = fts[1] = fts[2] = ir->t_i64;
    for (int i = 0; i < P + I; i++) fts[3 + i] = ps[2 + i];
    LLVMTypeRef st = LLVMStructTypeInContext(ir->ctx, fts, (unsigned)nf, 0);
    LLVMTypeRef bps[3] = {ir->t_pi8, ir->t_i64, ir->t_i64};
    name = xasprintf("%s.par%d", fn->name, k);
    LLVMValueRef par = jir_function(ir, name, ir->t_void, bps, 3);
    LLVMSetLinkage(par, LLVMInternalLinkage);
    free(name);
    LLVMValueRef ctx = LLVMBuildBitCast(b, LLVMGetParam(par, 0), LLVMPointerType(st, 0), "");
    LLVMValueRef *args = xmalloc((size_t)np * sizeof *args);
    args[0] = unpack(ir, st, ctx, 0);
    args[1] = unpack(ir, st, ctx, 1);
    LLVMValueRef base = unpack(ir, st, ctx, 2);
    for (int i = 0; i < P + I; i++) args[2 + i] = unpack(ir, st, ctx, 3 + i);
    args[np - 2] = LLVMBuildNSWAdd(b, base, LLVMGetParam(par, 1), "");
    args[np - 1] = LLVMBuildNSWAdd(b, base, LLVMGetParam(par, 2), "");
    jir_call(ir, chunk, args, np);
    LLVMBuildRetVoid(b);

    /* back in f: if (trip * work < PAR_MIN_WORK) chunk(..., lo, hi) else parallel_for(par, ctx, trip) */
    c->params = saved_params;
    c->locals = saved_locals;
    c->ints = saved_ints;
    c->n = saved_n;
    c->seed = saved_seed;
    ir->fn = f;
    LLVMPositionBuilderAtEnd(b, resume);
    LLVMValueRef trip = LLVMBuildSub(b, hi, lo, "");
    memo_reset(c);   /* (values of the chunk function must not leak into f) */
    LLVMValueRef per = work_ir(c, s->body, s->nbody);
    per = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, per, jir_i64(ir, 1), ""), jir_i64(ir, 1), per, "");
    LLVMValueRef work = LLVMBuildMul(b, trip, per, "");
    LLVMValueRef small = LLVMBuildICmp(b, LLVMIntSLT, work, jir_i64(ir, PAR_MIN_WORK), "");
    LLVMBasicBlockRef bs = LLVMAppendBasicBlockInContext(ir->ctx, f, "serial");
    LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(ir->ctx, f, "parallel");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(ir->ctx, f, "after");
    LLVMBuildCondBr(b, small, bs, bp);
    LLVMPositionBuilderAtEnd(b, bs);
    args[0] = c->n;
    args[1] = c->seed;
    for (int i = 0; i < P; i++) args[2 + i] = c->params[i];
    for (int i = 0; i < I; i++) args[2 + P + i] = c->ints[i];
    args[np - 2] = lo;
    args[np - 1] = hi;
    jir_call(ir, chunk, args, np);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, bp);
    LLVMValueRef *vals = xmalloc((size_t)nf * sizeof *vals);
    vals[0] = c->n;
    vals[1] = c->seed;
    vals[2] = lo;
    for (int i = 0; i < P; i++) vals[3 + i] = c->params[i];
    for (int i = 0; i < I; i++) vals[3 + P + i] = c->ints[i];
    LLVMValueRef cp = pack_ctx(ir, f, st, vals, nf);
    LLVMValueRef pargs[4] = {par, cp, trip, jir_i64(ir, 1)};
    jir_call(ir, declare_parallel_for(ir), pargs, 4);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
    memo_reset(c);
    free(vals);
    free(args);
    free(fts);
    free(ps);
}

static LLVMValueRef declare_sgemm(JitIR *ir) {
    LLVMTypeRef i32 = ir->t_i32, f32 = ir->t_f32, pf = ir->t_pf32;
    LLVMTypeRef ps[14] = {i32, i32, i32, i32, i32, i32, f32, pf, i32, pf, i32, f32, pf, i32};
    return jir_declare(ir, "jit_rt_sgemm", ir->t_void, ps, 14);   /* cblas_sgemm, M-blocked (jit.h) */
}

/* cblas_sgemm(RowMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc) with i64 m, n, k. */
static void call_sgemm(JitIR *ir, const KirGemm *g, LLVMValueRef m, LLVMValueRef n, LLVMValueRef k, LLVMValueRef A,
                       LLVMValueRef B, LLVMValueRef C) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef args[14] = {jir_i32(ir, 101),
                             jir_i32(ir, g->trans_a ? 112 : 111),
                             jir_i32(ir, g->trans_b ? 112 : 111),
                             LLVMBuildTrunc(b, m, ir->t_i32, ""),
                             LLVMBuildTrunc(b, n, ir->t_i32, ""),
                             LLVMBuildTrunc(b, k, ir->t_i32, ""),
                             jir_f32(ir, g->alpha),
                             A,
                             jir_i32(ir, (int32_t)g->lda),
                             B,
                             jir_i32(ir, (int32_t)g->ldb),
                             jir_f32(ir, g->beta),
                             C,
                             jir_i32(ir, (int32_t)g->ldc)};
    jir_call(ir, declare_sgemm(ir), args, 14);
}

static void gemm(FnCtx *c, LLVMValueRef f, const KirStmt *s, int k) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    const KirGemm *g = &s->gemm;
    if (g->a < 0 || g->a >= c->fn->nparams || g->b < 0 || g->b >= c->fn->nparams || g->c < 0 ||
        g->c >= c->fn->nparams) {
        diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': GEMM operand out of range (an internal error in pxc)",
                   c->fn->name);
        c->failed = true;
        return;
    }
    LLVMValueRef M = expr(c, g->m), N = expr(c, g->n), K = expr(c, g->k);
    LLVMValueRef A = jir_gep(ir, ir->t_f32, c->params[g->a], expr(c, g->a_off));
    LLVMValueRef B = jir_gep(ir, ir->t_f32, c->params[g->b], expr(c, g->b_off));
    LLVMValueRef C = jir_gep(ir, ir->t_f32, c->params[g->c], expr(c, g->c_off));

    /* f.gemm<k>(ctx = {A, B, C, N, K}, m0, m1): rows [m0, m1) of C */
    LLVMBasicBlockRef resume = LLVMGetInsertBlock(b);
    LLVMTypeRef fts[5] = {ir->t_pf32, ir->t_pf32, ir->t_pf32, ir->t_i64, ir->t_i64};
    LLVMTypeRef st = LLVMStructTypeInContext(ir->ctx, fts, 5, 0);
    LLVMTypeRef bps[3] = {ir->t_pi8, ir->t_i64, ir->t_i64};
    char *name = xasprintf("%s.gemm%d", c->fn->name, k);
    LLVMValueRef body = jir_function(ir, name, ir->t_void, bps, 3);
    LLVMSetLinkage(body, LLVMInternalLinkage);
    free(name);
    LLVMValueRef ctx = LLVMBuildBitCast(b, LLVMGetParam(body, 0), LLVMPointerType(st, 0), "");
    LLVMValueRef m0 = LLVMGetParam(body, 1), m1 = LLVMGetParam(body, 2);
    LLVMValueRef a_step = g->trans_a ? m0 : LLVMBuildNSWMul(b, m0, jir_i64(ir, g->lda), "");
    LLVMValueRef bA = jir_gep(ir, ir->t_f32, unpack(ir, st, ctx, 0), a_step);
    LLVMValueRef bC = jir_gep(ir, ir->t_f32, unpack(ir, st, ctx, 2), LLVMBuildNSWMul(b, m0, jir_i64(ir, g->ldc), ""));
    call_sgemm(ir, g, LLVMBuildSub(b, m1, m0, ""), unpack(ir, st, ctx, 3), unpack(ir, st, ctx, 4), bA,
               unpack(ir, st, ctx, 1), bC);
    LLVMBuildRetVoid(b);

    ir->fn = f;
    LLVMPositionBuilderAtEnd(b, resume);
    LLVMValueRef macs = LLVMBuildMul(b, LLVMBuildMul(b, M, N, ""), K, "");
    LLVMValueRef small = LLVMBuildICmp(b, LLVMIntSLT, macs, jir_i64(ir, GEMM_PAR_MIN_MACS), "");
    LLVMBasicBlockRef bs = LLVMAppendBasicBlockInContext(ir->ctx, f, "gemm_serial");
    LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(ir->ctx, f, "gemm_parallel");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(ir->ctx, f, "gemm_done");
    LLVMBuildCondBr(b, small, bs, bp);
    LLVMPositionBuilderAtEnd(b, bs);
    call_sgemm(ir, g, M, N, K, A, B, C);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, bp);
    LLVMValueRef vals[5] = {A, B, C, N, K};
    LLVMValueRef cp = pack_ctx(ir, f, st, vals, 5);
    LLVMValueRef pargs[4] = {body, cp, M, jir_i64(ir, 16)};
    jir_call(ir, declare_parallel_for(ir), pargs, 4);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
    memo_reset(c);
}

/* A direct convolution: jit_conv.c prints it. */
static void conv(FnCtx *c, LLVMValueRef f, const KirStmt *s, int k) {
    const KirConv *v = &s->conv;
    int np = c->fn->nparams;
    if (v->x < 0 || v->x >= np || v->w < 0 || v->w >= np || v->y < 0 || v->y >= np) {
        diag_error(c->dl, srcloc_none(), "JIT: kernel '%s': convolution operand out of range (an internal error in pxc)",
                   c->fn->name);
        c->failed = true;
        return;
    }
    char *name = xasprintf("%s.conv%d", c->fn->name, k);
    jit_conv_emit(c->ir, f, name, v, c->params[v->x], c->params[v->w], c->params[v->y], expr(c, v->images));
    free(name);
    memo_reset(c);
}

static bool has_reduce(KirStmt *const *body, int n) {
    for (int i = 0; i < n; i++)
        if (body[i]->k == KS_LOOP && ((body[i]->flags & KIR_LOOP_REDUCE) || has_reduce(body[i]->body, body[i]->nbody)))
            return true;
    return false;
}

static void print_thunk(JitIR *ir, const KirFunc *fn, LLVMValueRef f);

/* Print one kernel function (and its thunk f.step, see the entries below) into ir->mod. */
static bool print_func(JitIR *ir, const KirProgram *prog, const KirFunc *fn, DiagList *dl) {
    FnCtx c = {.ir = ir, .prog = prog, .fn = fn, .dl = dl};
    LLVMValueRef params[fn->nparams + 1], locals[fn->nlocals + 1], vars[fn->nvars + 1], ints[fn->nints + 1];
    c.params = params;
    c.ints = ints;
    c.locals = locals;
    c.vars = vars;
    c.memo_cap = 256;
    c.memo = xcalloc(c.memo_cap, sizeof *c.memo);
    c.gen = 1;
    int np;
    LLVMTypeRef *ps = kernel_params(ir, fn, false, &np);
    LLVMValueRef f = jir_function(ir, fn->name, ir->t_void, ps, np);
    free(ps);
    bind_function(&c, f);
    for (int i = 0; i < fn->nbody && !c.failed; i++) {
        const KirStmt *s = fn->body[i];
        if (s->k == KS_LOOP && (s->flags & KIR_LOOP_PARALLEL))
            parallel_loop(&c, f, s, i);
        else if (s->k == KS_GEMM)
            gemm(&c, f, s, i);
        else if (s->k == KS_CONV)
            conv(&c, f, s, i);
        else
            stmt(&c, s);
    }
    LLVMBuildRetVoid(ir->b);
    free(c.memo);
    if (!c.failed) print_thunk(ir, fn, f);
    return !c.failed;
}

/* ---- entries: trampolines into a step table ------------------------------------------------ */

/* An entry is data, not code: compiling one LLVM call per step (thousands in
 * a paper-size backward) cost more than half a second of codegen. Each
 * kernel f gets a thunk `f.step(n, seed, void **ptrs, int64_t *ints)` that
 * calls it with the pointers and integers of one step; each entry
 * (pxc_forward, ...) is a trampoline that gathers its pointer arguments into
 * an array indexed by KirBase and calls run_entry with the model's step
 * table (RtProgram, reached through the global pxc_program, which
 * jit_compile sets after linking). run_entry does what kir.h says an entry
 * does: fallbacks, the seed, the guards, the addresses, the calls. */

static const char *const entry_names[KE_COUNT] = {"pxc_forward", "pxc_backward", "pxc_loss", "pxc_init"};

typedef void (*RtStepFn)(int64_t n, uint64_t seed, void **ptrs, const int64_t *ints);

typedef struct RtAddr {      /* (char *)base[b] + off0 + off_n * n */
    int base;
    int64_t off0, off_n;
} RtAddr;

typedef struct RtStep {
    RtStepFn fn;
    int32_t kind;            /* JitKernelKind, for the opt-in profile */
    KirGuard when;
    int nargs;
    const RtAddr *args;
    const int64_t *ints;
} RtStep;

typedef struct RtEntry {
    RtStep *steps;
    int nsteps;
    int has_ret;
    RtAddr ret;
    int64_t stack_bytes;     /* rounded up to 64 */
} RtEntry;

typedef struct RtProgram {
    RtEntry entry[KE_COUNT];
    int has_seed, has_out_fb, has_nll_fb;
    RtAddr seed, out_fb, nll_fb;
    RtAddr *addrs;           /* every step's arguments */
    int64_t *ints;           /* every step's integers */
} RtProgram;

static void rt_program_free(RtProgram *rp) {
    if (!rp) return;
    for (int k = 0; k < KE_COUNT; k++) free(rp->entry[k].steps);
    free(rp->addrs);
    free(rp->ints);
    free(rp);
}

/* Which KirBase arguments an entry has (pxc_model.h); KB_STACK when it has scratch. */
static unsigned entry_bases(const KirProgram *prog, KirEntryKind k) {
    unsigned m = 0;
    switch (k) {
    case KE_FORWARD: m = 1u << KB_PARAMS | 1u << KB_X | 1u << KB_LABELS | 1u << KB_ARENA | 1u << KB_OUT | 1u << KB_NLL; break;
    case KE_BACKWARD: m = 1u << KB_PARAMS | 1u << KB_X | 1u << KB_LABELS | 1u << KB_ARENA | 1u << KB_GRAD; break;
    case KE_LOSS: m = 1u << KB_OUT | 1u << KB_X | 1u << KB_DL | 1u << KB_NLL; break;
    default: m = 1u << KB_PARAMS | 1u << KB_X | 1u << KB_LABELS | 1u << KB_ARENA; break;
    }
    if (prog->entry[k].stack_bytes > 0) m |= 1u << KB_STACK;
    return m;
}

static bool rt_addr(const KirProgram *prog, KirEntryKind k, int id, RtAddr *out, DiagList *dl) {
    const KirBuf *bf = id >= 0 && id < prog->nbufs ? &prog->bufs[id] : NULL;
    if (!bf || (unsigned)bf->base >= KB_COUNT || !(entry_bases(prog, k) & (1u << bf->base))) {
        diag_error(dl, srcloc_none(), "JIT: buffer %d%s%s is not available in entry %s (an internal error in pxc)", id,
                   bf ? " " : "", bf ? bf->name : "", entry_names[k]);
        return false;
    }
    *out = (RtAddr){bf->base, bf->off0, bf->off_n};
    return true;
}

static inline void *rt_ptr(char *const *base, const RtAddr *a, int64_t n) {
    return base[a->base] + a->off0 + a->off_n * n;
}

/* What every entry trampoline calls (a runtime symbol of the session). */
static double run_entry(const void *vprog, int32_t k, void **bases, int64_t n, uint64_t seed, int32_t training) {
    const RtProgram *rp = vprog;
    const RtEntry *en = &rp->entry[k];
    char *base[KB_COUNT];
    for (int i = 0; i < KB_COUNT; i++) base[i] = bases[i];
    void *heap = NULL;
    enum { STACK_MAX = 1 << 18 };
    bool small = en->stack_bytes > 0 && en->stack_bytes <= STACK_MAX;
    _Alignas(64) unsigned char scratch[small ? en->stack_bytes : 64];
    if (small) base[KB_STACK] = (char *)scratch;
    else if (en->stack_bytes > 0) base[KB_STACK] = heap = aligned_alloc(64, (size_t)en->stack_bytes);
    if (k == KE_FORWARD) {
        /* out and nll may be NULL: the arena holds them then */
        if (rp->has_out_fb && !base[KB_OUT]) base[KB_OUT] = rt_ptr(base, &rp->out_fb, n);
        if (rp->has_nll_fb && !base[KB_NLL]) base[KB_NLL] = rt_ptr(base, &rp->nll_fb, n);
    }
    if (rp->has_seed && k == KE_FORWARD) memcpy(rt_ptr(base, &rp->seed, n), &seed, sizeof seed);
    else if (rp->has_seed && k == KE_BACKWARD) memcpy(&seed, rt_ptr(base, &rp->seed, n), sizeof seed);
    else if (k != KE_FORWARD) seed = 0;
    void *ptrs[64];
    for (int s = 0; s < en->nsteps; s++) {
        const RtStep *st = &en->steps[s];
        if (st->when.training >= 0 && k == KE_FORWARD && (training != 0) != (st->when.training != 0)) continue;
        bool run = true;
        for (int b = 0; b < KB_COUNT && run; b++) {
            if ((st->when.if_nonnull >> b & 1) && !base[b]) run = false;
            if ((st->when.if_null >> b & 1) && base[b]) run = false;
        }
        if (!run) continue;
        for (int a = 0; a < st->nargs; a++) ptrs[a] = rt_ptr(base, &st->args[a], n);
        int64_t t0 = jit_rt_prof_begin();
        st->fn(n, seed, ptrs, st->ints);
        jit_rt_prof_end(st->kind, k << 20 | s, t0);
    }
    double r = 0;
    if (en->has_ret) memcpy(&r, rt_ptr(base, &en->ret, n), sizeof r);
    free(heap);
    return r;
}

/* The step table of prog with the thunks of session j; NULL with errors in dl. */
static RtProgram *rt_program(Jit *j, const KirProgram *prog, DiagList *dl) {
    RtProgram *rp = xcalloc(1, sizeof *rp);
    RtStepFn *thunk = xcalloc((size_t)prog->nfuncs + 1, sizeof *thunk);
    size_t naddr = 0, nint = 0;
    for (int k = 0; k < KE_COUNT; k++)
        for (int s = 0; s < prog->entry[k].nsteps; s++) {
            const KirStep *st = &prog->entry[k].steps[s];
            naddr += (size_t)st->nargs;
            if (st->func >= 0 && st->func < prog->nfuncs) nint += (size_t)prog->funcs[st->func].nints;
        }
    rp->addrs = xcalloc(naddr + 1, sizeof *rp->addrs);
    rp->ints = xcalloc(nint + 1, sizeof *rp->ints);
    size_t ia = 0, ii = 0;
    bool ok = true;
    for (int k = 0; k < KE_COUNT && ok; k++) {
        const KirEntry *en = &prog->entry[k];
        RtEntry *re = &rp->entry[k];
        re->steps = xcalloc((size_t)en->nsteps + 1, sizeof *re->steps);
        re->stack_bytes = (en->stack_bytes + 63) / 64 * 64;
        if (en->ret_buf >= 0 && (k == KE_FORWARD || k == KE_LOSS))
            ok = (re->has_ret = rt_addr(prog, (KirEntryKind)k, en->ret_buf, &re->ret, dl));
        for (int s = 0; s < en->nsteps && ok; s++) {
            const KirStep *st = &en->steps[s];
            if (st->func < 0 || st->func >= prog->nfuncs || st->nargs != prog->funcs[st->func].nparams ||
                st->nargs > 64 || (prog->funcs[st->func].nints && !st->ints)) {
                diag_error(dl, srcloc_none(), "JIT: step %d of entry %s is malformed (an internal error in pxc)", s,
                           entry_names[k]);
                ok = false;
                break;
            }
            const KirFunc *fn = &prog->funcs[st->func];
            if (!thunk[st->func]) {
                char *name = xasprintf("%s.step", fn->name);
                thunk[st->func] = (RtStepFn)jit_lookup(j, name, dl);
                free(name);
                if (!thunk[st->func]) {
                    ok = false;
                    break;
                }
            }
            RtStep *rs = &re->steps[re->nsteps++];
            rs->fn = thunk[st->func];
            rs->kind = (int32_t)jit_kernel_kind(fn->name);
            rs->when = st->when;
            rs->nargs = st->nargs;
            rs->args = &rp->addrs[ia];
            for (int a = 0; a < st->nargs && ok; a++) ok = rt_addr(prog, (KirEntryKind)k, st->args[a], &rp->addrs[ia++], dl);
            rs->ints = &rp->ints[ii];
            for (int a = 0; a < fn->nints; a++) rp->ints[ii++] = st->ints[a];
        }
    }
    if (ok && prog->seed_buf >= 0) ok = (rp->has_seed = rt_addr(prog, KE_FORWARD, prog->seed_buf, &rp->seed, dl)) &&
                                        rt_addr(prog, KE_BACKWARD, prog->seed_buf, &rp->seed, dl);
    if (ok && prog->out_fallback >= 0) ok = (rp->has_out_fb = rt_addr(prog, KE_FORWARD, prog->out_fallback, &rp->out_fb, dl));
    if (ok && prog->nll_fallback >= 0) ok = (rp->has_nll_fb = rt_addr(prog, KE_FORWARD, prog->nll_fallback, &rp->nll_fb, dl));
    free(thunk);
    if (!ok) {
        rt_program_free(rp);
        return NULL;
    }
    return rp;
}

/* f.step(n, seed, ptrs, ints) = f(n, seed, ptrs[0], ..., ints[0], ...) */
static void print_thunk(JitIR *ir, const KirFunc *fn, LLVMValueRef f) {
    LLVMBuilderRef b = ir->b;
    LLVMTypeRef ps[4] = {ir->t_i64, ir->t_i64, LLVMPointerType(ir->t_pi8, 0), ir->t_pi64};
    char *name = xasprintf("%s.step", fn->name);
    LLVMValueRef t = jir_function(ir, name, ir->t_void, ps, 4);
    free(name);
    int na = 2 + fn->nparams + fn->nints;
    LLVMValueRef *args = xmalloc((size_t)na * sizeof *args);
    args[0] = LLVMGetParam(t, 0);
    args[1] = LLVMGetParam(t, 1);
    for (int i = 0; i < fn->nparams; i++) {
        LLVMValueRef p = LLVMBuildLoad2(b, ir->t_pi8, jir_gep(ir, ir->t_pi8, LLVMGetParam(t, 2), jir_i64(ir, i)), "");
        args[2 + i] = LLVMBuildBitCast(b, p, ptr_ty(ir, fn->params[i].elem), "");
    }
    for (int i = 0; i < fn->nints; i++)
        args[2 + fn->nparams + i] = LLVMBuildLoad2(b, ir->t_i64, jir_gep(ir, ir->t_i64, LLVMGetParam(t, 3), jir_i64(ir, i)), "");
    LLVMValueRef call = jir_call(ir, f, args, na);
    /* f's only caller: inlining would compile its body twice */
    LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex,
                             LLVMCreateEnumAttribute(ir->ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0));
    LLVMBuildRetVoid(b);
    free(args);
}

/* An entry of pxc_model.h: its pointer arguments into bases[KirBase], then
 * run_entry(pxc_program, k, bases, n, seed, training). */
static bool print_entry(JitIR *ir, const KirProgram *prog, KirEntryKind k, DiagList *dl) {
    (void)prog;
    (void)dl;
    LLVMTypeRef pf = ir->t_pf32, pi8 = ir->t_pi8, i32 = ir->t_i32, i64 = ir->t_i64;
    LLVMBuilderRef b = ir->b;
    LLVMValueRef f, n, seed = jir_i64(ir, 0), training = jir_i32(ir, 0);
    LLVMValueRef base[KB_COUNT] = {0};
    switch (k) {
    case KE_FORWARD: {
        /* double forward(params, x, labels, n, seed, training, arena, out, nll) */
        LLVMTypeRef ps[9] = {pf, pf, ir->t_pi32, i32, i64, i32, pi8, pf, pf};
        f = jir_function(ir, entry_names[k], ir->t_f64, ps, 9);
        base[KB_PARAMS] = LLVMGetParam(f, 0);
        base[KB_X] = LLVMGetParam(f, 1);
        base[KB_LABELS] = LLVMGetParam(f, 2);
        n = LLVMGetParam(f, 3);
        seed = LLVMGetParam(f, 4);
        training = LLVMGetParam(f, 5);
        base[KB_ARENA] = LLVMGetParam(f, 6);
        base[KB_OUT] = LLVMGetParam(f, 7);
        base[KB_NLL] = LLVMGetParam(f, 8);
        break;
    }
    case KE_BACKWARD: {
        /* void backward(params, x, labels, n, arena, grad) */
        LLVMTypeRef ps[6] = {pf, pf, ir->t_pi32, i32, pi8, pf};
        f = jir_function(ir, entry_names[k], ir->t_void, ps, 6);
        base[KB_PARAMS] = LLVMGetParam(f, 0);
        base[KB_X] = LLVMGetParam(f, 1);
        base[KB_LABELS] = LLVMGetParam(f, 2);
        n = LLVMGetParam(f, 3);
        base[KB_ARENA] = LLVMGetParam(f, 4);
        base[KB_GRAD] = LLVMGetParam(f, 5);
        break;
    }
    case KE_LOSS: {
        /* double loss(l, x, n, dl, nll) */
        LLVMTypeRef ps[5] = {pf, pf, i32, pf, pf};
        f = jir_function(ir, entry_names[k], ir->t_f64, ps, 5);
        base[KB_OUT] = LLVMGetParam(f, 0);
        base[KB_X] = LLVMGetParam(f, 1);
        n = LLVMGetParam(f, 2);
        base[KB_DL] = LLVMGetParam(f, 3);
        base[KB_NLL] = LLVMGetParam(f, 4);
        break;
    }
    default: {
        /* void init(params, x, labels, n, arena) */
        LLVMTypeRef ps[5] = {pf, pf, ir->t_pi32, i32, pi8};
        f = jir_function(ir, entry_names[k], ir->t_void, ps, 5);
        base[KB_PARAMS] = LLVMGetParam(f, 0);
        base[KB_X] = LLVMGetParam(f, 1);
        base[KB_LABELS] = LLVMGetParam(f, 2);
        n = LLVMGetParam(f, 3);
        base[KB_ARENA] = LLVMGetParam(f, 4);
        break;
    }
    }
    LLVMTypeRef at = LLVMArrayType(pi8, KB_COUNT);
    LLVMValueRef arr = LLVMBuildAlloca(b, at, "bases");
    for (int i = 0; i < KB_COUNT; i++) {
        LLVMValueRef idx[2] = {jir_i64(ir, 0), jir_i64(ir, i)};
        LLVMValueRef v = base[i] ? LLVMBuildBitCast(b, base[i], pi8, "") : LLVMConstNull(pi8);
        LLVMBuildStore(b, v, LLVMBuildInBoundsGEP2(b, at, arr, idx, 2, ""));
    }
    LLVMValueRef g = LLVMGetNamedGlobal(ir->mod, "pxc_program");
    if (!g) {
        g = LLVMAddGlobal(ir->mod, pi8, "pxc_program");
        LLVMSetInitializer(g, LLVMConstNull(pi8));
    }
    LLVMTypeRef rps[6] = {pi8, i32, LLVMPointerType(pi8, 0), i64, i64, i32};
    LLVMValueRef run = jir_declare(ir, "jit_rt_run_entry", ir->t_f64, rps, 6);
    LLVMValueRef args[6] = {LLVMBuildLoad2(b, pi8, g, "prog"), jir_i32(ir, (int32_t)k),
                            LLVMBuildBitCast(b, arr, LLVMPointerType(pi8, 0), ""), LLVMBuildSExt(b, n, i64, "n"), seed,
                            training};
    LLVMValueRef r = jir_call(ir, run, args, 6);
    if (k == KE_FORWARD || k == KE_LOSS) LLVMBuildRet(b, r);
    else LLVMBuildRetVoid(b);
    return true;
}

/* size_t pxc_arena_bytes(int n) = arena0 + arena_n * n */
static void print_arena_bytes(JitIR *ir, const KirProgram *prog) {
    LLVMValueRef f = jir_function(ir, "pxc_arena_bytes", ir->t_i64, &ir->t_i32, 1);
    LLVMValueRef n = LLVMBuildSExt(ir->b, LLVMGetParam(f, 0), ir->t_i64, "");
    LLVMValueRef r = LLVMBuildAdd(ir->b, jir_i64(ir, prog->arena0), LLVMBuildMul(ir->b, n, jir_i64(ir, prog->arena_n), ""),
                                  "");
    LLVMBuildRet(ir->b, r);
}

/* ---- units and the model ---------------------------------------------------------------------- */

typedef struct FuncArg {
    const KirProgram *prog;
    int func;    /* a kernel, or -1: the entries and arena_bytes */
} FuncArg;

static bool build_kir_unit(JitIR *ir, void *arg, DiagList *dl) {
    const FuncArg *a = arg;
    if (a->func >= 0) return print_func(ir, a->prog, &a->prog->funcs[a->func], dl);
    for (int k = 0; k < KE_COUNT; k++)
        if (!print_entry(ir, a->prog, (KirEntryKind)k, dl)) return false;
    print_arena_bytes(ir, a->prog);
    return true;
}

/* A kernel is cold when neither forward nor backward calls it (init runs
 * once per training; pxc's runtime never calls the loss entry, which
 * exists for the ABI and tests, and its no-nll variants of the likelihood
 * cost a fifth of the compile), when it does little work per call (at a batch of COLD_BATCH images),
 * or when it is only GEMM calls (OpenBLAS does the work): O1 without
 * vectorisation costs such a kernel microseconds a call and saves most of
 * its compile time. */
#define COLD_BATCH 16
#define COLD_WORK 32768.0

static JitTier kernel_tier(const KirProgram *prog, int f, const bool *hot_entry_calls, bool tiering) {
    const KirFunc *fn = &prog->funcs[f];
    if (!tiering) return has_reduce(fn->body, fn->nbody) ? JIT_TIER_REDUCE : JIT_TIER_HOT;
    if (!hot_entry_calls[f]) return JIT_TIER_COLD;
    for (int i = 0; i < fn->nbody; i++)
        if (fn->body[i]->k == KS_CONV) return JIT_TIER_HOT;   /* its vector loops want the hot pipeline */
    bool only_gemm = fn->nbody > 0;
    for (int i = 0; i < fn->nbody; i++) only_gemm &= fn->body[i]->k == KS_GEMM;
    if (only_gemm) return JIT_TIER_COLD;
    /* the largest call decides (integer arguments differ between calls) */
    double work = 0;
    for (int e = 0; e < KE_COUNT; e++)
        for (int s = 0; s < prog->entry[e].nsteps; s++) {
            const KirStep *st = &prog->entry[e].steps[s];
            if (st->func != f) continue;
            double w = body_work_n(fn->body, fn->nbody, COLD_BATCH, st->ints, fn->nints);
            if (w > work) work = w;
        }
    if (work < COLD_WORK) return JIT_TIER_COLD;
    return has_reduce(fn->body, fn->nbody) ? JIT_TIER_REDUCE : JIT_TIER_HOT;
}

typedef struct ModelImpl {
    Jit *jit;
    pxc_tensor *params;
    char **names;
    int nnames;
    RtProgram *steps;     /* what the entries run (the JIT's pxc_program points here) */
    JitTimings timings;
    JitProfRow *sites;   /* the profile's call sites (jit_prof.c) */
    int nsites;
} ModelImpl;

static void model_release(pxc_model *m) {
    if (!m) return;
    ModelImpl *impl = m->impl;
    if (impl) {
        jit_free(impl->jit);
        rt_program_free(impl->steps);
        for (int i = 0; i < impl->nnames; i++) free(impl->names[i]);
        free(impl->names);
        free(impl->params);
        jit_prof_sites_free(impl->sites, impl->nsites);
        free(impl);
    }
    free(m);
}

const JitTimings *jit_model_timings(const pxc_model *m) {
    return m && m->release == model_release ? &((const ModelImpl *)m->impl)->timings : NULL;
}

int jit_model_profile(const pxc_model *m, JitProfRow **rows) {
    if (!m || m->release != model_release) return -1;
    ModelImpl *impl = m->impl;
    for (int i = 0; i < impl->nsites; i++) {
        JitProfRow *r = &impl->sites[i];
        if (!jit_rt_prof_site(r->entry, r->step, &r->seconds, &r->calls)) r->seconds = 0, r->calls = 0;
    }
    *rows = impl->sites;
    return impl->nsites;
}

void *jit_model_lookup(const pxc_model *m, const char *name, DiagList *dl) {
    if (!m || m->release != model_release) {
        diag_error(dl, srcloc_none(), "JIT: jit_model_lookup: the model was not compiled by the JIT");
        return NULL;
    }
    return jit_lookup(((const ModelImpl *)m->impl)->jit, name, dl);
}

pxc_model *jit_compile(const KirProgram *prog, const JitOptions *opt, DiagList *dl) {
    Jit *j = jit_create(opt, dl);
    if (!j) return NULL;
    JitSymbol run = {"jit_rt_run_entry", (void *)run_entry};
    if (!jit_add_runtime_symbols(j, dl) || !jit_define_symbols(j, &run, 1, dl)) {
        jit_free(j);
        return NULL;
    }
    /* the key: the program's stable text plus what decides the code we print */
    bool tiering = opt ? opt->tiering : true;
    char *key = NULL, *dir = jit_cache_dir(opt);
    size_t keylen = 0;
    if (dir) {   /* (the cache's own key adds the CPU, features, versions and opt level) */
        FILE *kf = open_memstream(&key, &keylen);
        if (!kf) pxc_bug("open_memstream failed");
        fprintf(kf, "pxc jit codegen %d built %s %s, %s; tiering %d\n", JIT_CODEGEN_VERSION, __DATE__, __TIME__,
                jir_build_stamp(), (int)tiering);
        kir_print(prog, kf);
        fclose(kf);
        free(dir);
    }

    /* kernels called from forward or backward (not only from init or loss) */
    bool *hot_calls = xcalloc((size_t)prog->nfuncs + 1, sizeof *hot_calls);
    for (int e = 0; e < KE_COUNT; e++)
        for (int s = 0; s < prog->entry[e].nsteps; s++) {
            int f = prog->entry[e].steps[s].func;
            if ((e == KE_FORWARD || e == KE_BACKWARD) && f >= 0 && f < prog->nfuncs) hot_calls[f] = true;
        }
    int nu = prog->nfuncs + 1;
    JitUnit *units = xcalloc((size_t)nu, sizeof *units);
    FuncArg *args = xcalloc((size_t)nu, sizeof *args);
    int calls = 0;
    for (int i = 0; i < prog->nfuncs; i++) {
        const KirFunc *fn = &prog->funcs[i];
        args[i] = (FuncArg){prog, i};
        units[i] = (JitUnit){fn->name, build_kir_unit, &args[i], kernel_tier(prog, i, hot_calls, tiering)};
        calls += fn->ncalls;
    }
    free(hot_calls);
    args[nu - 1] = (FuncArg){prog, -1};
    units[nu - 1] = (JitUnit){"the entries", build_kir_unit, &args[nu - 1], JIT_TIER_COLD};

    pxc_model *m = NULL;
    bool ok = jit_compile_units(j, units, nu, key, keylen, dl);
    free(key);
    free(units);
    free(args);
    void *fp[KE_COUNT + 1] = {0};
    for (int k = 0; k < KE_COUNT && ok; k++) ok = (fp[k] = jit_lookup(j, entry_names[k], dl)) != NULL;
    if (ok) ok = (fp[KE_COUNT] = jit_lookup(j, "pxc_arena_bytes", dl)) != NULL;
    RtProgram *steps = NULL;
    void **slot = NULL;
    if (ok) {
        ok = (steps = rt_program(j, prog, dl)) && (slot = jit_lookup(j, "pxc_program", dl));
        if (ok) *slot = steps;
    }
    if (!ok) {
        rt_program_free(steps);
        jit_free(j);
        return NULL;
    }
    m = xcalloc(1, sizeof *m);
    ModelImpl *impl = xcalloc(1, sizeof *impl);
    impl->jit = j;
    impl->steps = steps;
    impl->timings = *jit_timings(j);
    impl->timings.kernels = calls;
    impl->timings.kernels_unique = prog->nfuncs;
    impl->timings.kernels_exact = prog->nfuncs_exact ? prog->nfuncs_exact : prog->nfuncs;
    impl->sites = jit_prof_sites(prog, &impl->nsites);
    impl->params = xcalloc((size_t)(prog->nparams_tensors + 1), sizeof *impl->params);
    impl->names = xcalloc((size_t)(prog->nparams_tensors + 1), sizeof *impl->names);
    for (int i = 0; i < prog->nparams_tensors; i++) {
        const KirTensor *t = &prog->params[i];
        impl->names[i] = xstrdup(t->name);
        impl->params[i].name = impl->names[i];
        impl->params[i].rank = t->rank;
        memcpy(impl->params[i].shape, t->shape, sizeof t->shape);
        impl->params[i].offset = t->offset;
        impl->params[i].numel = t->numel;
    }
    impl->nnames = prog->nparams_tensors;
    m->abi_version = PXC_ABI_VERSION;
    m->height = prog->height;
    m->width = prog->width;
    m->channels = prog->channels;
    m->classes = prog->classes;
    m->head = prog->head;
    m->nr_mix = prog->nr_mix;
    m->out_channels = prog->out_channels;
    m->nparams = prog->nparams;
    m->nparam_tensors = prog->nparams_tensors;
    m->params = impl->params;
    m->arena_bytes = (size_t (*)(int))fp[KE_COUNT];
    m->forward = (double (*)(const float *, const float *, const int32_t *, int, uint64_t, int, void *, float *,
                             float *))fp[KE_FORWARD];
    m->backward = (void (*)(const float *, const float *, const int32_t *, int, void *, float *))fp[KE_BACKWARD];
    m->loss = (double (*)(const float *, const float *, int, float *, float *))fp[KE_LOSS];
    m->init = (void (*)(float *, const float *, const int32_t *, int, void *))fp[KE_INIT];
    m->release = model_release;
    m->impl = impl;
    return m;
}
