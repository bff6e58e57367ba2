/*
 * kir.c — the kernel IR's builder, deduplication, printer and the scalar
 * reference math (kir.h). The lowering from graph IR is in lower.c; memory
 * planning in compiler/passes.
 *
 * Every node, name and array of a program lives in its Arena; kir_free
 * releases it as a whole.
 */
#include "kir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Grow an arena-backed array (old storage is left to the arena). */
static void *agrow(Arena *a, void *ptr, int n, int *cap, size_t elem) {
    if (n < *cap) return ptr;
    int nc = *cap ? 2 * *cap : 8;
    void *np = arena_alloc(a, (size_t)nc * elem);
    if (n) memcpy(np, ptr, (size_t)n * elem);
    *cap = nc;
    return np;
}
#define APUSH(ar, ptr, n, cap, val) do { \
    (ptr) = agrow((ar), (ptr), (n), &(cap), sizeof *(ptr)); (ptr)[(n)++] = (val); } while (0)

/* ---- programs and buffers --------------------------------------------------- */

KirProgram *kir_program_new(const char *name) {
    KirProgram *p = xcalloc(1, sizeof *p);
    p->name = arena_strdup(&p->arena, name ? name : "model");
    p->seed_buf = p->out_fallback = p->nll_fallback = -1;
    for (int e = 0; e < KE_COUNT; e++) p->entry[e].ret_buf = -1;
    return p;
}

void kir_free(KirProgram *p) {
    if (!p) return;
    arena_free(&p->arena);
    free(p);
}

int kir_buf(KirProgram *p, const char *name, KirBase base, KirType elem, int64_t off0, int64_t off_n,
            int64_t size0, int64_t size_n, int node) {
    KirBuf b = {arena_strdup(&p->arena, name ? name : ""), base, elem, off0, off_n, size0, size_n, node};
    APUSH(&p->arena, p->bufs, p->nbufs, p->cbufs, b);
    return p->nbufs - 1;
}

/* ---- expressions ------------------------------------------------------------- */

static KirExpr *mk(KirProgram *p, KirExprKind k, KirType t) {
    KirExpr *e = arena_alloc(&p->arena, sizeof *e);
    e->k = k;
    e->t = t;
    return e;
}

KirExpr *kir_const_f32(KirProgram *p, float v) {
    KirExpr *e = mk(p, KX_CONST, KT_F32);
    e->f = v;
    return e;
}

KirExpr *kir_const_f64(KirProgram *p, double v) {
    KirExpr *e = mk(p, KX_CONST, KT_F64);
    e->f = v;
    return e;
}

KirExpr *kir_const_i64(KirProgram *p, int64_t v) {
    KirExpr *e = mk(p, KX_CONST, KT_I64);
    e->i = v;
    return e;
}

KirExpr *kir_batch(KirProgram *p) { return mk(p, KX_BATCH, KT_I64); }

KirExpr *kir_arg(KirProgram *p, const KirFunc *fn, int arg) {
    PXC_ASSERT(arg >= 0 && arg < fn->nints);
    KirExpr *e = mk(p, KX_ARG, KT_I64);
    e->i = arg;
    return e;
}

KirExpr *kir_var(KirProgram *p, int var) {
    KirExpr *e = mk(p, KX_VAR, KT_I64);
    e->i = var;
    return e;
}

KirExpr *kir_local(KirProgram *p, const KirFunc *fn, int local, KirExpr *index) {
    PXC_ASSERT(local >= 0 && local < fn->nlocals);
    PXC_ASSERT((index != NULL) == (fn->locals[local].len > 1));
    KirExpr *e = mk(p, KX_LOCAL, fn->locals[local].t);
    e->i = local;
    e->x[0] = index;
    return e;
}

KirExpr *kir_load(KirProgram *p, const KirFunc *fn, int param, KirExpr *index) {
    PXC_ASSERT(param >= 0 && param < fn->nparams);
    PXC_ASSERT(index && index->t == KT_I64);
    KirType t = fn->params[param].elem;
    PXC_ASSERT(t != KT_U64);
    KirExpr *e = mk(p, KX_LOAD, t == KT_I32 ? KT_I64 : t);
    e->i = param;
    e->x[0] = index;
    return e;
}

static bool is_cmp(KirExprKind k) { return k >= KX_LT && k <= KX_NE; }
static bool is_ci(const KirExpr *e, int64_t v) { return e->k == KX_CONST && e->t == KT_I64 && e->i == v; }

KirExpr *kir_op1(KirProgram *p, KirExprKind k, KirExpr *a) {
    switch (k) {
    case KX_NEG:
        if (a->k == KX_CONST && a->t == KT_I64) return kir_const_i64(p, -a->i);
        break;
    case KX_NOT: PXC_ASSERT(a->t == KT_BOOL); break;
    case KX_EXP: case KX_LOG: case KX_LOG1P: case KX_SIGMOID: case KX_TANH: case KX_SQRT:
        PXC_ASSERT(a->t == KT_F32);
        break;
    case KX_ABS: break;
    default: pxc_bug("kir_op1: %d is not a unary op", (int)k);
    }
    KirExpr *e = mk(p, k, a->t);
    e->x[0] = a;
    return e;
}

KirExpr *kir_op2(KirProgram *p, KirExprKind k, KirExpr *a, KirExpr *b) {
    if (a->t != b->t) pxc_bug("kir_op2 %d: operand types %d and %d differ", (int)k, (int)a->t, (int)b->t);
    if (a->t == KT_I64) {   /* fold integer index arithmetic */
        if (a->k == KX_CONST && b->k == KX_CONST) {
            int64_t x = a->i, y = b->i;
            switch (k) {
            case KX_ADD: return kir_const_i64(p, x + y);
            case KX_SUB: return kir_const_i64(p, x - y);
            case KX_MUL: return kir_const_i64(p, x * y);
            case KX_DIV: if (y > 0 && x >= 0) return kir_const_i64(p, x / y); break;
            case KX_MOD: if (y > 0 && x >= 0) return kir_const_i64(p, x % y); break;
            case KX_MAX: return kir_const_i64(p, x > y ? x : y);
            case KX_MIN: return kir_const_i64(p, x < y ? x : y);
            default: break;
            }
        }
        if (k == KX_ADD && is_ci(a, 0)) return b;
        if ((k == KX_ADD || k == KX_SUB) && is_ci(b, 0)) return a;
        if (k == KX_MUL && (is_ci(a, 0) || is_ci(b, 0))) return kir_const_i64(p, 0);
        if (k == KX_MUL && is_ci(a, 1)) return b;
        if ((k == KX_MUL || k == KX_DIV) && is_ci(b, 1)) return a;
        if (k == KX_MOD && is_ci(b, 1)) return kir_const_i64(p, 0);
        /* (x + c1) + c2 -> x + (c1 + c2) */
        if ((k == KX_ADD || k == KX_SUB) && b->k == KX_CONST && a->k == KX_ADD && a->x[1]->k == KX_CONST)
            return kir_op2(p, KX_ADD, a->x[0], kir_const_i64(p, a->x[1]->i + (k == KX_ADD ? b->i : -b->i)));
        if (k == KX_SUB && b->k == KX_CONST && b->i > 0) return kir_op2(p, KX_ADD, a, kir_const_i64(p, -b->i));
    }
    if (k == KX_MOD) PXC_ASSERT(a->t == KT_I64);
    if (k == KX_AND || k == KX_OR) PXC_ASSERT(a->t == KT_BOOL);
    if (!(k >= KX_ADD && k <= KX_MOD) && !(k == KX_MAX || k == KX_MIN) && !is_cmp(k) && k != KX_AND && k != KX_OR)
        pxc_bug("kir_op2: %d is not a binary op", (int)k);
    KirExpr *e = mk(p, k, is_cmp(k) ? KT_BOOL : a->t);
    e->x[0] = a;
    e->x[1] = b;
    return e;
}

KirExpr *kir_op3(KirProgram *p, KirExprKind k, KirExpr *a, KirExpr *b, KirExpr *c) {
    KirExpr *e;
    if (k == KX_SELECT) {
        PXC_ASSERT(a->t == KT_BOOL && b->t == c->t);
        e = mk(p, k, b->t);
    } else if (k == KX_FMA) {
        PXC_ASSERT(a->t == b->t && b->t == c->t && (a->t == KT_F32 || a->t == KT_F64));
        e = mk(p, k, a->t);
    } else {
        pxc_bug("kir_op3: %d is not a ternary op", (int)k);
    }
    e->x[0] = a;
    e->x[1] = b;
    e->x[2] = c;
    return e;
}

KirExpr *kir_cast(KirProgram *p, KirType t, KirExpr *a) {
    if (a->t == t) return a;
    PXC_ASSERT(t == KT_F32 || t == KT_F64);
    KirExpr *e = mk(p, KX_CAST, t);
    e->x[0] = a;
    return e;
}

KirExpr *kir_uniform(KirProgram *p, int stream, KirExpr *image, KirExpr *index) {
    PXC_ASSERT(index->t == KT_I64 && image->t == KT_I64);
    PXC_ASSERT(stream >= 0);
    KirExpr *e = mk(p, KX_UNIFORM, KT_F32);
    e->x[0] = index;
    e->x[1] = image;
    e->x[2] = kir_const_i64(p, stream);
    return e;
}

/* ---- functions ---------------------------------------------------------------- */

KirFunc *kir_func_begin(KirProgram *p, const char *stem) {
    KirFunc *fn = arena_alloc(&p->arena, sizeof *fn);
    fn->name = arena_strdup(&p->arena, stem ? stem : "kernel");
    return fn;
}

int kir_func_param(KirProgram *p, KirFunc *fn, const char *name, KirType elem, bool out) {
    int cap = fn->nparams;   /* arrays are exact-size: regrow on every push */
    KirParam prm = {arena_strdup(&p->arena, name), elem, out};
    KirParam *np = arena_alloc(&p->arena, (size_t)(cap + 1) * sizeof *np);
    if (cap) memcpy(np, fn->params, (size_t)cap * sizeof *np);
    np[cap] = prm;
    fn->params = np;
    return fn->nparams++;
}

int kir_func_int(KirProgram *p, KirFunc *fn) {
    (void)p;
    return fn->nints++;
}

int kir_func_local(KirProgram *p, KirFunc *fn, KirType t, int len) {
    PXC_ASSERT(len >= 1 && (t == KT_F32 || t == KT_F64 || t == KT_I64));
    KirLocal *nl = arena_alloc(&p->arena, (size_t)(fn->nlocals + 1) * sizeof *nl);
    if (fn->nlocals) memcpy(nl, fn->locals, (size_t)fn->nlocals * sizeof *nl);
    nl[fn->nlocals].t = t;
    nl[fn->nlocals].len = len;
    fn->locals = nl;
    return fn->nlocals++;
}

static void add_stmt(KirProgram *p, KirFunc *fn, KirStmt *into, KirStmt *s) {
    if (into) {
        PXC_ASSERT(into->k == KS_LOOP);
        APUSH(&p->arena, into->body, into->nbody, into->cbody, s);
    } else {
        APUSH(&p->arena, fn->body, fn->nbody, fn->cbody, s);
    }
}

KirStmt *kir_loop(KirProgram *p, KirFunc *fn, KirStmt *into, KirExpr *lo, KirExpr *hi, unsigned flags) {
    PXC_ASSERT(lo->t == KT_I64 && hi->t == KT_I64);
    if (flags & KIR_LOOP_PARALLEL) PXC_ASSERT(into == NULL);
    KirStmt *s = arena_alloc(&p->arena, sizeof *s);
    s->k = KS_LOOP;
    s->var = fn->nvars++;
    s->lo = lo;
    s->hi = hi;
    s->flags = flags;
    add_stmt(p, fn, into, s);
    return s;
}

int kir_loop_var(const KirStmt *loop) { return loop->var; }

static void mem_stmt(KirProgram *p, KirFunc *fn, KirStmt *into, KirStmtKind k, int param, KirExpr *index,
                     KirExpr *value) {
    PXC_ASSERT(param >= 0 && param < fn->nparams && fn->params[param].out);
    PXC_ASSERT(index && index->t == KT_I64);
    PXC_ASSERT(value->t == fn->params[param].elem);
    KirStmt *s = arena_alloc(&p->arena, sizeof *s);
    s->k = k;
    s->target = param;
    s->index = index;
    s->value = value;
    add_stmt(p, fn, into, s);
}

void kir_store(KirProgram *p, KirFunc *fn, KirStmt *into, int param, KirExpr *index, KirExpr *value) {
    mem_stmt(p, fn, into, KS_STORE, param, index, value);
}

void kir_accum(KirProgram *p, KirFunc *fn, KirStmt *into, int param, KirExpr *index, KirExpr *value) {
    mem_stmt(p, fn, into, KS_ACCUM, param, index, value);
}

void kir_set(KirProgram *p, KirFunc *fn, KirStmt *into, int local, KirExpr *index, KirExpr *value) {
    PXC_ASSERT(local >= 0 && local < fn->nlocals);
    PXC_ASSERT((index != NULL) == (fn->locals[local].len > 1));
    PXC_ASSERT(value->t == fn->locals[local].t);
    KirStmt *s = arena_alloc(&p->arena, sizeof *s);
    s->k = KS_SET;
    s->target = local;
    s->index = index;
    s->value = value;
    add_stmt(p, fn, into, s);
}

void kir_gemm(KirProgram *p, KirFunc *fn, const KirGemm *g) {
    PXC_ASSERT(g->beta == 0 || g->beta == 1);
    PXC_ASSERT(fn->params[g->c].out && fn->params[g->c].elem == KT_F32);
    KirStmt *s = arena_alloc(&p->arena, sizeof *s);
    s->k = KS_GEMM;
    s->gemm = *g;
    add_stmt(p, fn, NULL, s);
}

void kir_conv(KirProgram *p, KirFunc *fn, const KirConv *c) {
    PXC_ASSERT(c->beta == 0 || c->beta == 1);
    PXC_ASSERT(c->form == KIR_CONV_FORWARD || c->form == KIR_CONV_WGRAD);
    PXC_ASSERT(c->cout > 0 && c->cout % 16 == 0 && c->cin > 0 && c->kh > 0 && c->kw > 0 && c->Ho > 0 && c->Wo > 0);
    PXC_ASSERT(c->Hp >= c->Ho + c->kh - 1 && c->Wp >= c->Wo + c->kw - 1);
    PXC_ASSERT(c->pt >= 0 && c->pb >= 0 && c->pt + c->pb <= c->Hp && c->pl >= 0 && c->pr >= 0 &&
               c->pl + c->pr <= c->Wp);
    PXC_ASSERT(c->yt >= 0 && c->yb >= 0);
    int out = c->form == KIR_CONV_FORWARD ? c->y : c->w;
    PXC_ASSERT(fn->params[out].out && fn->params[c->x].elem == KT_F32 && fn->params[c->w].elem == KT_F32 &&
               fn->params[c->y].elem == KT_F32);
    KirStmt *s = arena_alloc(&p->arena, sizeof *s);
    s->k = KS_CONV;
    s->conv = *c;
    add_stmt(p, fn, NULL, s);
}

/* ---- printing ------------------------------------------------------------------- */

static const char *type_name(KirType t) {
    static const char *n[] = {"bool", "i64", "f32", "f64", "i32", "u64"};
    return n[t];
}

static void print_float(FILE *f, double v, KirType t) {
    if (isinf(v)) { fputs(v > 0 ? "inf" : "-inf", f); return; }
    if (isnan(v)) { fputs("nan", f); return; }
    if (t == KT_F32) {
        char buf[64];
        for (int prec = 6; prec <= 9; prec++) {   /* shortest form that reads back the same float */
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if ((float)strtod(buf, NULL) == (float)v) break;
        }
        fputs(buf, f);
        if (!strpbrk(buf, ".en")) fputs(".0", f);
        fputc('f', f);
    } else {
        fprintf(f, "%.17g", v);
    }
}

typedef struct PrintCtx {
    const KirFunc *fn;
    bool (*hole)(void *ctx, const KirExpr *e);   /* print these I64 constants as `#` */
    void *hole_ctx;
    int nholes;
} PrintCtx;

/* A decimal integer (the printers' hot path: dedup prints every kernel). */
static void put_i64(FILE *f, int64_t v) {
    char buf[24], *q = buf + sizeof buf;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    *--q = 0;
    do *--q = (char)('0' + u % 10); while (u /= 10);
    if (v < 0) *--q = '-';
    fputs(q, f);
}

static void pexpr(PrintCtx *c, const KirExpr *e, FILE *f) {
    static const char *bin[KX_COUNT] = {
        [KX_ADD] = "+", [KX_SUB] = "-", [KX_MUL] = "*", [KX_DIV] = "/", [KX_MOD] = "%",
        [KX_LT] = "<", [KX_LE] = "<=", [KX_GT] = ">", [KX_GE] = ">=", [KX_EQ] = "==", [KX_NE] = "!=",
        [KX_AND] = "&&", [KX_OR] = "||"};
    static const char *fun[KX_COUNT] = {
        [KX_EXP] = "exp", [KX_LOG] = "log", [KX_LOG1P] = "log1p", [KX_SIGMOID] = "sigmoid", [KX_TANH] = "tanh",
        [KX_SQRT] = "sqrt", [KX_ABS] = "abs", [KX_MAX] = "max", [KX_MIN] = "min", [KX_FMA] = "fma",
        [KX_SELECT] = "select"};
    switch (e->k) {
    case KX_CONST:
        if (e->t == KT_I64 && c->hole && c->hole(c->hole_ctx, e)) {
            fputc('#', f);
            c->nholes++;
        } else if (e->t == KT_I64) {
            put_i64(f, e->i);
        } else {
            print_float(f, e->f, e->t);
        }
        return;
    case KX_ARG: fputc('a', f), put_i64(f, e->i); return;
    case KX_BATCH: fputs("n", f); return;
    case KX_VAR: fputc('v', f), put_i64(f, e->i); return;
    case KX_LOCAL:
        fputc('l', f), put_i64(f, e->i);
        if (e->x[0]) { fputc('[', f); pexpr(c, e->x[0], f); fputc(']', f); }
        return;
    case KX_LOAD:
        fputs(c->fn ? c->fn->params[e->i].name : "p", f);
        fputc('[', f);
        pexpr(c, e->x[0], f);
        fputc(']', f);
        return;
    case KX_NEG: fputs("(-", f); pexpr(c, e->x[0], f); fputc(')', f); return;
    case KX_NOT: fputs("(!", f); pexpr(c, e->x[0], f); fputc(')', f); return;
    case KX_CAST: fprintf(f, "%s(", type_name(e->t)); pexpr(c, e->x[0], f); fputc(')', f); return;
    case KX_UNIFORM:
        fputs("uniform(", f);
        pexpr(c, e->x[2], f);
        fputs(", ", f);
        pexpr(c, e->x[1], f);
        fputs(", ", f);
        pexpr(c, e->x[0], f);
        fputc(')', f);
        return;
    default: break;
    }
    if (e->k == KX_ADD && e->t == KT_I64 && e->x[1]->k == KX_CONST && e->x[1]->i < 0 &&
        !(c->hole && c->hole(c->hole_ctx, e->x[1]))) {
        fputc('(', f);
        pexpr(c, e->x[0], f);
        fputs(" - ", f), put_i64(f, -e->x[1]->i), fputc(')', f);
        return;
    }
    if (bin[e->k]) {
        fputc('(', f);
        pexpr(c, e->x[0], f);
        fputc(' ', f), fputs(bin[e->k], f), fputc(' ', f);
        pexpr(c, e->x[1], f);
        fputc(')', f);
        return;
    }
    if (!fun[e->k]) pxc_bug("kir print: expression kind %d", (int)e->k);
    fputs(fun[e->k], f), fputc('(', f);
    for (int i = 0; i < 3 && e->x[i]; i++) {
        if (i) fputs(", ", f);
        pexpr(c, e->x[i], f);
    }
    fputc(')', f);
}

void kir_print_expr(const KirExpr *e, FILE *f) {
    PrintCtx c = {NULL, NULL, NULL, 0};
    pexpr(&c, e, f);
}

static void indent(FILE *f, int d) {
    for (int i = 0; i < d; i++) fputs("  ", f);
}

static void pstmt(PrintCtx *c, const KirStmt *s, FILE *f, int d) {
    const KirFunc *fn = c->fn;
    indent(f, d);
    switch (s->k) {
    case KS_LOOP:
        fputs("for v", f), put_i64(f, s->var), fputs(" in [", f);
        pexpr(c, s->lo, f);
        fputs(", ", f);
        pexpr(c, s->hi, f);
        fputc(')', f);
        if (s->flags & KIR_LOOP_PARALLEL) fputs(" parallel", f);
        if (s->flags & KIR_LOOP_REDUCE) fputs(" reduce", f);
        fputs(" {\n", f);
        for (int i = 0; i < s->nbody; i++) pstmt(c, s->body[i], f, d + 1);
        indent(f, d);
        fputs("}\n", f);
        return;
    case KS_STORE:
    case KS_ACCUM:
        fputs(fn->params[s->target].name, f), fputc('[', f);
        pexpr(c, s->index, f);
        fputs(s->k == KS_STORE ? "] = " : "] += ", f);
        pexpr(c, s->value, f);
        fputs(";\n", f);
        return;
    case KS_SET:
        fputc('l', f), put_i64(f, s->target);
        if (s->index) { fputc('[', f); pexpr(c, s->index, f); fputc(']', f); }
        fputs(" = ", f);
        pexpr(c, s->value, f);
        fputs(";\n", f);
        return;
    case KS_GEMM: {
        const KirGemm *g = &s->gemm;
        fprintf(f, "gemm%s%s(M=", g->trans_a ? " A^T" : "", g->trans_b ? " B^T" : "");
        pexpr(c, g->m, f);
        fputs(", N=", f);
        pexpr(c, g->n, f);
        fputs(", K=", f);
        pexpr(c, g->k, f);
        fprintf(f, ", alpha=%g, A=%s+", (double)g->alpha, fn->params[g->a].name);
        pexpr(c, g->a_off, f);
        fprintf(f, " lda=%lld, B=%s+", (long long)g->lda, fn->params[g->b].name);
        pexpr(c, g->b_off, f);
        fprintf(f, " ldb=%lld, beta=%g, C=%s+", (long long)g->ldb, (double)g->beta, fn->params[g->c].name);
        pexpr(c, g->c_off, f);
        fprintf(f, " ldc=%lld);\n", (long long)g->ldc);
        return;
    }
    case KS_CONV: {
        const KirConv *v = &s->conv;
        fprintf(f, "conv %s(images=", v->form == KIR_CONV_FORWARD ? "forward" : "wgrad");
        pexpr(c, v->images, f);
        fprintf(f, ", x=%s %lldx%lldx%lld, w=%s %lldx%lldx%lldx%lld, y=%s %lldx%lldx%lld, beta=%g",
                fn->params[v->x].name, (long long)v->Hp, (long long)v->Wp, (long long)v->cin, fn->params[v->w].name,
                (long long)v->kh, (long long)v->kw, (long long)v->cin, (long long)v->cout, fn->params[v->y].name,
                (long long)v->Ho, (long long)v->Wo, (long long)v->cout, (double)v->beta);
        /* the zero rows and columns of x (part of kir_param's key: printers skip by them) */
        if (v->pt || v->pb) fprintf(f, ", zero rows=%lld top %lld bottom", (long long)v->pt, (long long)v->pb);
        if (v->pl || v->pr) fprintf(f, ", zero columns=%lld left %lld right", (long long)v->pl, (long long)v->pr);
        if (v->yt || v->yb) fprintf(f, ", y rows=%lld above %lld below", (long long)v->yt, (long long)v->yb);
        fputs(");\n", f);
        return;
    }
    }
}

/* The function without its name and comment: what deduplication compares. */
static int print_body_c(PrintCtx *c, const KirFunc *fn, FILE *f) {
    fputs("(n, seed", f);
    for (int i = 0; i < fn->nparams; i++)
        fputs(fn->params[i].out ? ", out " : ", ", f), fputs(type_name(fn->params[i].elem), f), fputc(' ', f),
            fputs(fn->params[i].name, f);
    for (int i = 0; i < fn->nints; i++) fprintf(f, ", i64 a%d", i);
    fputs(") {\n", f);
    for (int i = 0; i < fn->nlocals; i++) {
        fprintf(f, "  local l%d %s", i, type_name(fn->locals[i].t));
        if (fn->locals[i].len > 1) fprintf(f, "[%d]", fn->locals[i].len);
        fputc('\n', f);
    }
    for (int i = 0; i < fn->nbody; i++) pstmt(c, fn->body[i], f, 1);
    fputs("}\n", f);
    return c->nholes;
}

static void print_body(const KirFunc *fn, FILE *f) {
    PrintCtx c = {fn, NULL, NULL, 0};
    print_body_c(&c, fn, f);
}

int kir_print_body_holes(const KirFunc *fn, bool (*hole)(void *ctx, const KirExpr *e), void *ctx, FILE *f) {
    PrintCtx c = {fn, hole, ctx, 0};
    return print_body_c(&c, fn, f);
}

void kir_print_func(const KirProgram *p, const KirFunc *fn, FILE *f) {
    (void)p;
    if (fn->comment && *fn->comment) {
        const char *s = fn->comment;
        while (*s) {
            const char *e = strchr(s, '\n');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            fprintf(f, "# %.*s\n", (int)len, s);
            s += len + (e ? 1 : 0);
        }
    }
    fprintf(f, "func %s", fn->name);
    print_body(fn, f);
}

static char *body_text(const KirFunc *fn, size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f) pxc_bug("open_memstream failed");
    print_body(fn, f);
    fclose(f);
    return buf;
}

int kir_func_finish(KirProgram *p, KirFunc *fn, const char *comment) {
    size_t len;
    char *text = body_text(fn, &len);
    uint64_t h = hash_bytes(HASH_INIT, text, len);
    for (int i = 0; i < p->nfuncs; i++) {
        if (p->funcs[i].hash != h) continue;
        size_t l2;
        char *t2 = body_text(&p->funcs[i], &l2);
        bool same = l2 == len && memcmp(text, t2, len) == 0;
        free(t2);
        if (same) {
            free(text);
            return i;
        }
    }
    free(text);
    fn->hash = h;
    fn->comment = comment ? arena_strdup(&p->arena, comment) : NULL;
    fn->name = arena_printf(&p->arena, "k%d_%s", p->nfuncs, fn->name);
    APUSH(&p->arena, p->funcs, p->nfuncs, p->cfuncs, *fn);
    return p->nfuncs - 1;
}

KirGuard kir_always(void) {
    KirGuard g = {-1, 0, 0};
    return g;
}

void kir_step(KirProgram *p, KirEntryKind e, int func, const int *args, int nargs, KirGuard when) {
    kir_step_ints(p, e, func, args, nargs, NULL, 0, when);
}

void kir_step_ints(KirProgram *p, KirEntryKind e, int func, const int *args, int nargs, const int64_t *ints,
                   int nints, KirGuard when) {
    PXC_ASSERT(func >= 0 && func < p->nfuncs && nargs == p->funcs[func].nparams);
    PXC_ASSERT(nints == p->funcs[func].nints);
    KirStep s;
    memset(&s, 0, sizeof s);
    s.func = func;
    s.nargs = nargs;
    s.args = arena_alloc(&p->arena, (size_t)(nargs ? nargs : 1) * sizeof(int));
    for (int i = 0; i < nargs; i++) {
        PXC_ASSERT(args[i] >= 0 && args[i] < p->nbufs);
        s.args[i] = args[i];
    }
    if (nints) {
        s.ints = arena_alloc(&p->arena, (size_t)nints * sizeof *s.ints);
        memcpy(s.ints, ints, (size_t)nints * sizeof *s.ints);
    }
    s.when = when;
    KirEntry *en = &p->entry[e];
    APUSH(&p->arena, en->steps, en->nsteps, en->csteps, s);
    p->funcs[func].ncalls++;
}

static const char *base_name(KirBase b) {
    static const char *n[] = {"params", "grad", "x", "labels", "out", "nll", "dl", "arena", "stack"};
    return n[b];
}

static const char *entry_name(KirEntryKind e) {
    static const char *n[] = {"forward", "backward", "loss", "init"};
    return n[e];
}

static void print_lin(FILE *f, int64_t c0, int64_t cn) {
    if (cn == 0) fprintf(f, "%lld", (long long)c0);
    else if (c0 == 0) fprintf(f, "%lld*n", (long long)cn);
    else fprintf(f, "%lld+%lld*n", (long long)c0, (long long)cn);
}

void kir_print(const KirProgram *p, FILE *f) {
    fprintf(f, "program %s: image %dx%dx%d classes %d head %d nr_mix %d out_channels %d params %lld\n", p->name,
            p->height, p->width, p->channels, p->classes, p->head, p->nr_mix, p->out_channels,
            (long long)p->nparams);
    fputs("arena bytes ", f);
    print_lin(f, p->arena0, p->arena_n);
    fputs(" (without reuse ", f);
    print_lin(f, p->naive0, p->naive_n);
    fputs(")\n", f);
    fprintf(f, "seed b%d, out fallback b%d, nll fallback b%d\n\n", p->seed_buf, p->out_fallback, p->nll_fallback);
    for (int i = 0; i < p->nbufs; i++) {
        const KirBuf *b = &p->bufs[i];
        fprintf(f, "buf b%d %s %s+", i, type_name(b->elem), base_name(b->base));
        print_lin(f, b->off0, b->off_n);
        fputs(" size ", f);
        print_lin(f, b->size0, b->size_n);
        fprintf(f, " \"%s\"", b->name);
        if (b->node >= 0) fprintf(f, " %%%d", b->node);
        fputc('\n', f);
    }
    fputc('\n', f);
    for (int i = 0; i < p->nfuncs; i++) {
        kir_print_func(p, &p->funcs[i], f);
        fputc('\n', f);
    }
    for (int e = 0; e < KE_COUNT; e++) {
        const KirEntry *en = &p->entry[e];
        fprintf(f, "entry %s", entry_name((KirEntryKind)e));
        if (en->ret_buf >= 0) fprintf(f, " returns b%d", en->ret_buf);
        if (en->stack_bytes) fprintf(f, " stack %lld", (long long)en->stack_bytes);
        fputs(" {\n", f);
        for (int s = 0; s < en->nsteps; s++) {
            const KirStep *st = &en->steps[s];
            fprintf(f, "  %s(", p->funcs[st->func].name);
            for (int a = 0; a < st->nargs; a++) fprintf(f, a ? ", b%d" : "b%d", st->args[a]);
            for (int a = 0; a < p->funcs[st->func].nints; a++) fprintf(f, a ? ", %lld" : "; %lld", (long long)st->ints[a]);
            fputc(')', f);
            if (st->when.training >= 0) fprintf(f, " if %straining", st->when.training ? "" : "!");
            for (int b = 0; b < KB_COUNT; b++) {
                if (st->when.if_nonnull & (1u << b)) fprintf(f, " if %s", base_name((KirBase)b));
                if (st->when.if_null & (1u << b)) fprintf(f, " if !%s", base_name((KirBase)b));
            }
            if (st->note) fprintf(f, "  # %s", st->note);
            fputc('\n', f);
        }
        fputs("}\n", f);
    }
}

/* ---- arena ------------------------------------------------------------------------ */

size_t kir_arena_bytes(const KirProgram *p, int n) { return (size_t)(p->arena0 + p->arena_n * n); }
size_t kir_arena_naive_bytes(const KirProgram *p, int n) { return (size_t)(p->naive0 + p->naive_n * n); }

void kir_arena_report(const KirProgram *p, int n, FILE *f) {
    if (!f) return;
    double a = (double)kir_arena_bytes(p, n), b = (double)kir_arena_naive_bytes(p, n);
    fprintf(f, "arena at batch %d: %.1f MiB planned, %.1f MiB without reuse (%.1f%%)\n", n, a / 1048576.0,
            b / 1048576.0, b > 0 ? 100.0 * a / b : 0.0);
}

/* ---- the reference math (kir.h; fma unfused) ----------------------------------------- */

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

float kir_exp_ref(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = n * -0.693359375f + x;
    r = n * 2.12194440e-4f + r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * (r * r) + r + 1.0f;
    float kc = fminf(fmaxf(n, -127.0f), 127.0f);
    int32_t k = (int32_t)kc;
    return y * bits_f((uint32_t)(k + 127) << 23);
}

float kir_log_ref(float x) {
    float s = x < 1.17549435e-38f ? 8388608.0f : 1.0f;
    float xs = x * s;
    uint32_t b = f_bits(xs);
    float e = (float)((int32_t)(b >> 23) - 126) - (s != 1.0f ? 23.0f : 0.0f);
    float m = bits_f((b & 0x007fffffu) | 0x3f000000u);
    bool lo = m < 0.707106781186547524f;
    e = e - (lo ? 1.0f : 0.0f);
    m = (lo ? m + m : m) - 1.0f;
    float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m + -1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m + -1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m + -1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m + -2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = (p * m) * z;
    y = e * -2.12194440e-4f + y;
    y = z * -0.5f + y;
    float r = m + y;
    r = e * 0.693359375f + r;
    return x == 0.0f ? -INFINITY : x < 0.0f ? NAN : x == INFINITY ? INFINITY : r;
}

float kir_log1p_ref(float x) {
    float u = 1.0f + x;
    if (x == INFINITY) return INFINITY;
    return u == 1.0f ? x : kir_log_ref(u) * (x / (u - 1.0f));
}

int64_t kir_eval_i64(const KirExpr *e, int64_t n, const int64_t *ints, int nints) {
    if (!e) return -1;
    if (e->k == KX_CONST && e->t == KT_I64) return e->i;
    if (e->k == KX_BATCH) return n;
    if (e->k == KX_ARG) return ints && e->i >= 0 && e->i < nints ? ints[e->i] : -1;
    int64_t a = e->x[0] ? kir_eval_i64(e->x[0], n, ints, nints) : -1;
    int64_t b = e->x[1] ? kir_eval_i64(e->x[1], n, ints, nints) : -1;
    if (a < 0 || b < 0) return -1;
    switch (e->k) {
    case KX_ADD: return a + b;
    case KX_SUB: return a - b >= 0 ? a - b : -1;
    case KX_MUL: return a * b;
    case KX_DIV: return b > 0 ? a / b : -1;
    case KX_MOD: return b > 0 ? a % b : -1;
    case KX_MAX: return a > b ? a : b;
    case KX_MIN: return a < b ? a : b;
    default: return -1;
    }
}
