/*
 * lower.c — graph IR (forward + backward) → kernel IR (kir.h).
 *
 * The fusion plan (compiler/passes) says which values are stored (MAT) and
 * which are recomputed where they are read (INLINE). This file turns every
 * MAT node into kernels, in graph order, for each entry:
 *
 *   pointwise MAT      one pass: rows of the image in parallel, the node's
 *                      whole inlined expression per channel segment
 *   conv2d (stride 1, cout % 16 == 0, several taps)   a pad pack (the input
 *                      once, with its padding as zero borders; the inlined
 *                      expression folded in as below) + a direct convolution
 *                      (KS_CONV) reading it in place
 *   conv2d (others)    im2col pack (causal padding folded in, the input's
 *                      inlined expression — concat_elu — folded into the
 *                      pack; a dropout, a hash per element, is computed
 *                      once into scratch first, as the pack repeats every
 *                      element kh*kw times) + sgemm; the bias is never
 *                      added by a pass of its own: readers add it (NV_RAW)
 *   nin (1x1 conv)     sgemm straight on the input buffer when it is one
 *   deconv2d           sgemm to columns + a gather (col2im) that adds bias
 *   conv2d_dx          sgemm with w^T + gather;   conv2d_dw: pack + sgemm A^T
 *                      (direct ones: conv2d_dw is a KS_CONV weight gradient
 *                      on the forward's pad pack and dy; conv2d_dx, when the
 *                      input has a multiple of 16 channels, a KS_CONV
 *                      forward of dy zero-bordered on the opposite sides
 *                      with the weight's taps flipped, channels swapped)
 *   deconv2d_dx / _dw  pack of dy + sgemm (the two share the pack)
 *   wnorm              per-channel norms + scaling; wnorm_dv/dg fused
 *   bias_grad, class_bias_dhw   reductions (float64 accumulators)
 *   dmol_nll / softmax_nll (+ its gradient in training)   one per-pixel
 *                      pass with the batch's loss accumulated in chunks
 *   conv + nin summed  the second GEMM accumulates into the first's output
 *
 * Values are read through val(): a load from a buffer (plus bias for
 * NV_RAW), a constant, or the inlined expression of the node at a pixel
 * (img, i, j) and channel. Pointwise expressions change over channel ranges
 * (concat, concat_elu halves, gate halves, slices), so every channel loop
 * is split into segments within which one expression holds (cuts()).
 */
#include "kir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../passes/passes.h"
#include "../../runtime/pxc_model.h"

#define NCHUNK 16   /* reductions split the batch into this many parallel chunks */

enum { NV_NONE, NV_BUF, NV_RAW, NV_CONST, NV_INLINE, NV_ABSORBED /* summed into another GEMM's output */ };

typedef struct NodeVal {
    int kind;
    int buf;          /* NV_BUF, NV_RAW */
    int nbias;        /* NV_RAW: bias nodes added on read */
    int bias[2];
    float c;          /* NV_CONST */
} NodeVal;

typedef struct Lower {
    const Graph *g;
    KirProgram *p;
    DiagList *dl;
    KirOptions opt;
    FusePlan fp;
    NodeVal *val;       /* the current entry's view of every node */
    KirEntryKind entry;
    int training;       /* building kernels with dropout active */
    KirGuard guard;     /* guard of the steps being emitted */
    int *param_buf;     /* per PARAM node: its KB_PARAMS buffer */
    int *grad_param;    /* per node: the PARAM whose gradient it is, -1 */
    int *nuses;         /* per node: inputs of other nodes that are it */
    int *user;          /* per node: its last consumer */
    int x_buf, labels_buf, out_buf, nll_buf, dl_buf;
    int part_buf, ret_buf;   /* KB_STACK: per-chunk partial sums, the returned sum */
    int *pack_key_node;      /* pack cache of the current entry */
    int *pack_key_geo;
    int *pack_buf;
    int npack, cpack;
    bool failed;
} Lower;

/* ---- small helpers ----------------------------------------------------------- */

static const Node *ND(const Lower *L, int i) { return &L->g->nodes[i]; }

static const char *node_where(const Lower *L, int i, char *buf, size_t n) {
    const Node *nd = ND(L, i);
    const char *layer = nd->layer >= 0 && nd->layer < L->g->nlayers ? L->g->layers[nd->layer].name : NULL;
    const char *name = nd->op == IR_PARAM ? nd->name : layer;
    if (nd->loc.line > 0)
        snprintf(buf, n, "%%%d %s%s%s @%s:%d:%d", i, ir_op(nd->op)->name, name ? " " : "", name ? name : "",
                 nd->loc.file ? nd->loc.file : "?", nd->loc.line, nd->loc.col);
    else
        snprintf(buf, n, "%%%d %s%s%s", i, ir_op(nd->op)->name, name ? " " : "", name ? name : "");
    return buf;
}

static int64_t numel(const Lower *L, int i) { return shape_numel(ND(L, i)->shape); }
static int chans(const Lower *L, int i) { return (int)ND(L, i)->shape.d[2]; }

/* ---- expression shorthands ------------------------------------------------------ */

#define P (L->p)
static KirExpr *ic(Lower *L, int64_t v) { return kir_const_i64(P, v); }
static KirExpr *iadd(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_ADD, a, b); }
static KirExpr *imul(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_MUL, a, b); }
static KirExpr *idiv(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_DIV, a, b); }
static KirExpr *imod(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_MOD, a, b); }
static KirExpr *iaddc(Lower *L, KirExpr *a, int64_t c) { return iadd(L, a, ic(L, c)); }
static KirExpr *imulc(Lower *L, KirExpr *a, int64_t c) { return imul(L, a, ic(L, c)); }
static KirExpr *fc(Lower *L, double v) { return kir_const_f32(P, (float)v); }
static KirExpr *fadd(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_ADD, a, b); }
static KirExpr *fsub(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_SUB, a, b); }
static KirExpr *fmul(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_MUL, a, b); }
static KirExpr *fdiv(Lower *L, KirExpr *a, KirExpr *b) { return kir_op2(P, KX_DIV, a, b); }
static KirExpr *fneg(Lower *L, KirExpr *a) { return kir_op1(P, KX_NEG, a); }
static KirExpr *fexp(Lower *L, KirExpr *a) { return kir_op1(P, KX_EXP, a); }
static KirExpr *fsel(Lower *L, KirExpr *c, KirExpr *a, KirExpr *b) { return kir_op3(P, KX_SELECT, c, a, b); }
static KirExpr *cmp(Lower *L, KirExprKind k, KirExpr *a, KirExpr *b) { return kir_op2(P, k, a, b); }
static KirExpr *band(Lower *L, KirExpr *a, KirExpr *b) {
    if (!a) return b;
    if (!b) return a;
    return kir_op2(P, KX_AND, a, b);
}

/* ---- kernels under construction ----------------------------------------------------- */

#define KB_MAXARGS 64

typedef struct KB {
    Lower *L;
    KirFunc *fn;
    int args[KB_MAXARGS];
    int nargs;
    /* the pixel being evaluated: image, row, column; its grid */
    KirExpr *img, *ii, *jj;
    KirExpr *row;   /* img*H + ii when that is a loop variable (NULL otherwise) */
    int H, W;
    StrBuf comment;
    int noted[32];
    int nnoted;
    bool used_dropout;
} KB;

static void kb_note(KB *kb, int node) {
    for (int i = 0; i < kb->nnoted; i++)
        if (kb->noted[i] == node) return;
    if (kb->nnoted < 32) kb->noted[kb->nnoted++] = node;
    char buf[512];
    sb_printf(&kb->comment, "%s\n", node_where(kb->L, node, buf, sizeof buf));
}

static void kb_begin(KB *kb, Lower *L, const char *stem) {
    memset(kb, 0, sizeof *kb);
    kb->L = L;
    kb->fn = kir_func_begin(L->p, stem);
}

/* The function's param for buffer b (one param per buffer). */
static int kb_arg(KB *kb, int buf, bool out, const char *name) {
    for (int i = 0; i < kb->nargs; i++)
        if (kb->args[i] == buf) {
            if (out) kb->fn->params[i].out = true;
            return i;
        }
    if (kb->nargs == KB_MAXARGS) pxc_bug("kernel with more than %d buffers", KB_MAXARGS);
    char nm[64];
    int k = 0;
    snprintf(nm, sizeof nm, "%s", name);
    for (;;) {
        bool clash = false;
        for (int i = 0; i < kb->fn->nparams; i++) clash |= strcmp(kb->fn->params[i].name, nm) == 0;
        if (!clash) break;
        snprintf(nm, sizeof nm, "%s%d", name, ++k);
    }
    kb->args[kb->nargs++] = buf;
    return kir_func_param(kb->L->p, kb->fn, nm, kb->L->p->bufs[buf].elem, out);
}

static int kb_local(KB *kb, KirType t, int len) { return kir_func_local(kb->L->p, kb->fn, t, len); }
/* An array local (kir.h: length 1 means a scalar, so arrays have at least 2). */
static int kb_array(KB *kb, KirType t, int len) { return kb_local(kb, t, len < 2 ? 2 : len); }

/* A scalar local set to e (a named temporary): returns its read. */
static KirExpr *kb_let(KB *kb, KirStmt *into, KirExpr *e) {
    Lower *L = kb->L;
    int l = kb_local(kb, e->t, 1);
    kir_set(P, kb->fn, into, l, NULL, e);
    return kir_local(P, kb->fn, l, NULL);
}

static KirExpr *kb_load(KB *kb, int buf, KirExpr *idx, const char *name) {
    int a = kb_arg(kb, buf, false, name);
    return kir_load(kb->L->p, kb->fn, a, idx);
}

/* Finish and append a step with the current guard. */
static void kb_finish(KB *kb, const char *note) {
    Lower *L = kb->L;
    int f = kir_func_finish(P, kb->fn, kb->comment.s);
    kir_step(P, L->entry, f, kb->args, kb->nargs, L->guard);
    KirEntry *en = &P->entry[L->entry];
    en->steps[en->nsteps - 1].note = note ? arena_strdup(&P->arena, note) : NULL;
    sb_free(&kb->comment);
}

/* Build a kernel with `build`; when it reads a dropout and the forward
 * pass is being lowered, build it twice: for training and for evaluation. */
typedef void (*BuildFn)(KB *kb, void *ctx);

static void emit_kernel(Lower *L, const char *stem, BuildFn build, void *ctx, const char *note) {
    KB kb;
    KirGuard saved = L->guard;
    int saved_tr = L->training;
    kb_begin(&kb, L, stem);
    build(&kb, ctx);
    if (kb.used_dropout && L->entry == KE_FORWARD && L->training) {
        L->guard.training = 1;
        kb_finish(&kb, note);
        L->training = 0;
        L->guard.training = 0;
        kb_begin(&kb, L, stem);
        build(&kb, ctx);
        PXC_ASSERT(!kb.used_dropout);
        kb_finish(&kb, note);
    } else {
        kb_finish(&kb, note);
    }
    L->guard = saved;
    L->training = saved_tr;
}

/* ---- buffers --------------------------------------------------------------------- */

static int new_arena_buf(Lower *L, const char *what, int node, int64_t bytes, bool batched) {
    char buf[512];
    const char *nm = what;
    if (node >= 0) {
        char w[400];
        snprintf(buf, sizeof buf, "%s%s%s", node_where(L, node, w, sizeof w), what && *what ? " " : "", what ? what : "");
        nm = buf;
    }
    return kir_buf(P, nm, KB_ARENA, KT_F32, 0, 0, batched ? 0 : bytes, batched ? bytes : 0, node);
}

/* The buffer a MAT node's value goes to: the parameter-gradient slot, the
 * ABI's out / nll, or the arena. */
static int value_buf(Lower *L, int node, const char *what) {
    const Node *nd = ND(L, node);
    int64_t bytes = 4 * numel(L, node);
    if (L->entry == KE_BACKWARD && L->grad_param[node] >= 0) {
        int prm = L->grad_param[node];
        const KirBuf *pb = &P->bufs[L->param_buf[prm]];
        char w[400];
        return kir_buf(P, node_where(L, prm, w, sizeof w), KB_GRAD, KT_F32, pb->off0, 0, pb->size0, 0, node);
    }
    return new_arena_buf(L, what, node, bytes, nd->shape.batched);
}

/* ---- reading values ------------------------------------------------------------------ */

static KirExpr *val(KB *kb, int node, KirExpr *ch, int64_t lo);

static KirExpr *pixel_index(KB *kb) {
    Lower *L = kb->L;
    if (kb->row) return iadd(L, imulc(L, kb->row, kb->W), kb->jj);
    return iadd(L, imulc(L, iadd(L, imulc(L, kb->img, kb->H), kb->ii), kb->W), kb->jj);
}

static const char *arg_name(const Lower *L, int node) {
    const Node *nd = ND(L, node);
    switch (nd->op) {
    case IR_INPUT: return "x";
    case IR_PARAM: return "prm";
    default: return ir_op(nd->op)->name;
    }
}

/* Element `idx` of an unbatched value (a parameter, a bias). */
static KirExpr *val_flat(KB *kb, int node, KirExpr *idx) {
    Lower *L = kb->L;
    NodeVal *v = &L->val[node];
    if (v->kind == NV_CONST) return fc(L, v->c);
    if (v->kind != NV_BUF) pxc_bug("%%%d %s read flat but not stored", node, ir_op(ND(L, node)->op)->name);
    return kb_load(kb, v->buf, idx, arg_name(L, node));
}

/* Evaluate `node` with the pixel moved to (img, i, j). */
static KirExpr *val_at(KB *kb, int node, KirExpr *ch, int64_t lo, KirExpr *i, KirExpr *j) {
    KirExpr *si = kb->ii, *sj = kb->jj, *sr = kb->row;
    kb->ii = i;
    kb->jj = j;
    kb->row = NULL;
    KirExpr *e = val(kb, node, ch, lo);
    kb->ii = si;
    kb->jj = sj;
    kb->row = sr;
    return e;
}

/* elu(t) = t > 0 ? t : exp(t) - 1, its exp taken of -|t| (the same value
 * where it is chosen), so elu(t) and elu(-t) computed side by side share one
 * exp (see paired_halves). */
static KirExpr *elu_of(Lower *L, KirExpr *t) {
    /* |-u| written |u|: elu(u) and elu(-u) then have the same exp to share */
    KirExpr *e = fexp(L, fneg(L, kir_op1(P, KX_ABS, t->k == KX_NEG ? t->x[0] : t)));
    return fsel(L, cmp(L, KX_GT, t, fc(L, 0)), t, fsub(L, e, fc(L, 1)));
}
static KirExpr *elu_grad(Lower *L, KirExpr *t) { return fsel(L, cmp(L, KX_GT, t, fc(L, 0)), fc(L, 1), fexp(L, t)); }

static KirExpr *inline_val(KB *kb, int node, KirExpr *ch, int64_t lo) {
    Lower *L = kb->L;
    const Node *nd = ND(L, node);
    const Attrs *a = &nd->a;
    kb_note(kb, node);
    switch (nd->op) {
    case IR_ADD: return fadd(L, val(kb, nd->in[0], ch, lo), val(kb, nd->in[1], ch, lo));
    case IR_SHIFT: {
        /* y[i,j] = x[i-dy, j-dx], zero outside; indices clamped so the load is in bounds */
        KirExpr *i = iaddc(L, kb->ii, -a->dy), *j = iaddc(L, kb->jj, -a->dx), *cond = NULL;
        if (a->dy > 0) cond = band(L, cond, cmp(L, KX_GE, i, ic(L, 0))), i = kir_op2(P, KX_MAX, i, ic(L, 0));
        if (a->dy < 0) cond = band(L, cond, cmp(L, KX_LT, i, ic(L, kb->H))), i = kir_op2(P, KX_MIN, i, ic(L, kb->H - 1));
        if (a->dx > 0) cond = band(L, cond, cmp(L, KX_GE, j, ic(L, 0))), j = kir_op2(P, KX_MAX, j, ic(L, 0));
        if (a->dx < 0) cond = band(L, cond, cmp(L, KX_LT, j, ic(L, kb->W))), j = kir_op2(P, KX_MIN, j, ic(L, kb->W - 1));
        KirExpr *e = val_at(kb, nd->in[0], ch, lo, i, j);
        return cond ? fsel(L, cond, e, fc(L, 0)) : e;
    }
    case IR_CONCAT: {
        int64_t pos = 0;
        for (int k = 0; k < nd->nin; k++) {
            int64_t C = chans(L, nd->in[k]);
            if (lo < pos + C) return val(kb, nd->in[k], iaddc(L, ch, -pos), lo - pos);
            pos += C;
        }
        pxc_bug("concat channel %lld out of range", (long long)lo);
    }
    case IR_SLICE: return val(kb, nd->in[0], iaddc(L, ch, a->start), lo + a->start);
    case IR_ELU: return elu_of(L, val(kb, nd->in[0], ch, lo));
    case IR_CONCAT_ELU: {
        int64_t C = chans(L, nd->in[0]);
        if (lo < C) return elu_of(L, val(kb, nd->in[0], ch, lo));
        return elu_of(L, fneg(L, val(kb, nd->in[0], iaddc(L, ch, -C), lo - C)));
    }
    case IR_SIGMOID: return kir_op1(P, KX_SIGMOID, val(kb, nd->in[0], ch, lo));
    case IR_TANH: return kir_op1(P, KX_TANH, val(kb, nd->in[0], ch, lo));
    case IR_GATE: {
        int64_t Ch = nd->shape.d[2];
        KirExpr *x1 = val(kb, nd->in[0], ch, lo);
        KirExpr *x2 = val(kb, nd->in[0], iaddc(L, ch, Ch), lo + Ch);
        return fmul(L, x1, kir_op1(P, KX_SIGMOID, x2));
    }
    case IR_DROPOUT: {
        KirExpr *x = val(kb, nd->in[0], ch, lo);
        if (!L->training || a->p <= 0) return x;
        kb->used_dropout = true;
        /* element e of image b: pxc_uniform(pxc_image_seed(seed, b), stream, e) */
        KirExpr *e = iadd(L, imulc(L, iadd(L, imulc(L, kb->ii, kb->W), kb->jj), nd->shape.d[2]), ch);
        KirExpr *keep = cmp(L, KX_GE, kir_uniform(P, a->stream, kb->img, e), fc(L, a->p));
        /* x / keep_p: as x * (1 / keep_p) when that reciprocal is exact (keep_p a
         * power of two, e.g. 0.5): the same correctly rounded value without a
         * vector division per element */
        float kp = (float)(1.0 - a->p);
        int ex;
        if (frexpf(kp, &ex) == 0.5f) return fsel(L, keep, fmul(L, x, fc(L, 1.0 / kp)), fc(L, 0));
        return fsel(L, keep, fdiv(L, x, fc(L, kp)), fc(L, 0));
    }
    case IR_CLASS_BIAS: {
        int64_t C = nd->shape.d[2], classes = ND(L, nd->in[1])->shape.d[0];
        KirExpr *lab = val_flat(kb, nd->in[2], kb->img);
        lab = kir_op2(P, KX_MIN, kir_op2(P, KX_MAX, lab, ic(L, 0)), ic(L, classes - 1));
        return fadd(L, val(kb, nd->in[0], ch, lo), val_flat(kb, nd->in[1], iadd(L, imulc(L, lab, C), ch)));
    }
    case IR_BROADCAST: return val_flat(kb, nd->in[0], ic(L, 0));
    case IR_SLICE_BWD:
        if (lo >= a->start && lo < a->start + a->len) return val(kb, nd->in[0], iaddc(L, ch, -a->start), lo - a->start);
        return fc(L, 0);
    case IR_ELU_BWD: return fmul(L, val(kb, nd->in[1], ch, lo), elu_grad(L, val(kb, nd->in[0], ch, lo)));
    case IR_CONCAT_ELU_BWD: {
        int64_t C = chans(L, nd->in[0]);
        KirExpr *t = val(kb, nd->in[0], ch, lo);
        KirExpr *d1 = val(kb, nd->in[1], ch, lo), *d2 = val(kb, nd->in[1], iaddc(L, ch, C), lo + C);
        /* elu'(t) = t > 0 ? 1 : exp(t) and elu'(-t) = -t > 0 ? 1 : exp(-t) pick
         * their exp only where its argument is -|t|: one shared exp(-|t|)
         * gives both, bit for bit */
        KirExpr *e = fexp(L, fneg(L, kir_op1(P, KX_ABS, t)));
        KirExpr *g1 = fsel(L, cmp(L, KX_GT, t, fc(L, 0)), fc(L, 1), e);
        KirExpr *g2 = fsel(L, cmp(L, KX_GT, fneg(L, t), fc(L, 0)), fc(L, 1), e);
        return fsub(L, fmul(L, d1, g1), fmul(L, d2, g2));
    }
    case IR_SIGMOID_BWD: {
        KirExpr *y = val(kb, nd->in[0], ch, lo);
        return fmul(L, fmul(L, val(kb, nd->in[1], ch, lo), y), fsub(L, fc(L, 1), y));
    }
    case IR_TANH_BWD: {
        KirExpr *y = val(kb, nd->in[0], ch, lo);
        return fmul(L, val(kb, nd->in[1], ch, lo), fsub(L, fc(L, 1), fmul(L, y, y)));
    }
    case IR_GATE_BWD: {
        int64_t Ch = chans(L, nd->in[1]);
        if (lo < Ch) {
            KirExpr *d = val(kb, nd->in[1], ch, lo);
            KirExpr *s = kir_op1(P, KX_SIGMOID, val(kb, nd->in[0], iaddc(L, ch, Ch), lo + Ch));
            return fmul(L, d, s);
        }
        KirExpr *c2 = iaddc(L, ch, -Ch);
        KirExpr *d = val(kb, nd->in[1], c2, lo - Ch);
        KirExpr *x1 = val(kb, nd->in[0], c2, lo - Ch);
        KirExpr *s = kir_op1(P, KX_SIGMOID, val(kb, nd->in[0], ch, lo));
        return fmul(L, fmul(L, fmul(L, d, x1), s), fsub(L, fc(L, 1), s));
    }
    default:
        pxc_bug("%%%d %s cannot be inlined", node, ir_op(nd->op)->name);
    }
}

static KirExpr *val(KB *kb, int node, KirExpr *ch, int64_t lo) {
    Lower *L = kb->L;
    NodeVal *v = &L->val[node];
    const Node *nd = ND(L, node);
    switch (v->kind) {
    case NV_CONST: return fc(L, v->c);
    case NV_BUF:
    case NV_RAW: {
        KirExpr *e;
        if (nd->shape.batched) e = kb_load(kb, v->buf, iadd(L, imulc(L, pixel_index(kb), nd->shape.d[2]), ch), arg_name(L, node));
        else e = kb_load(kb, v->buf, ch, arg_name(L, node));
        for (int k = 0; k < (v->kind == NV_RAW ? v->nbias : 0); k++) e = fadd(L, e, val_flat(kb, v->bias[k], ch));
        return e;
    }
    case NV_INLINE: return inline_val(kb, node, ch, lo);
    case NV_ABSORBED: pxc_bug("%%%d %s read alone after it was summed into another GEMM", node, ir_op(nd->op)->name);
    default: pxc_bug("%%%d %s read before it is computed", node, ir_op(nd->op)->name);
    }
}

/* ---- channel segments ------------------------------------------------------------------- */

typedef struct Cuts {
    int64_t c[256];
    int n;
} Cuts;

static void cut_add(Cuts *cs, int64_t c) {
    for (int i = 0; i < cs->n; i++)
        if (cs->c[i] == c) return;
    if (cs->n == 256) pxc_bug("too many channel segments");
    cs->c[cs->n++] = c;
}

/* Points in (lo, hi) (node channels; output channel = node channel + off)
 * where the inlined expression of node changes form. */
static void cuts_rec(const Lower *L, int node, int64_t lo, int64_t hi, int64_t off, Cuts *cs) {
    if (lo >= hi || L->val[node].kind != NV_INLINE) return;
    const Node *nd = ND(L, node);
    const Attrs *a = &nd->a;
#define CUT(x) do { if ((x) > lo && (x) < hi) cut_add(cs, (x) + off); } while (0)
    switch (nd->op) {
    case IR_ADD: case IR_SHIFT: case IR_ELU: case IR_SIGMOID: case IR_TANH: case IR_DROPOUT: case IR_ELU_BWD:
    case IR_SIGMOID_BWD: case IR_TANH_BWD:
        for (int k = 0; k < nd->nin; k++) cuts_rec(L, nd->in[k], lo, hi, off, cs);
        return;
    case IR_CLASS_BIAS: cuts_rec(L, nd->in[0], lo, hi, off, cs); return;
    case IR_CONCAT: {
        int64_t pos = 0;
        for (int k = 0; k < nd->nin; k++) {
            int64_t C = chans(L, nd->in[k]);
            CUT(pos);
            int64_t l2 = lo > pos ? lo : pos, h2 = hi < pos + C ? hi : pos + C;
            cuts_rec(L, nd->in[k], l2 - pos, h2 - pos, off + pos, cs);
            pos += C;
        }
        return;
    }
    case IR_SLICE: cuts_rec(L, nd->in[0], lo + a->start, hi + a->start, off - a->start, cs); return;
    case IR_CONCAT_ELU: {
        int64_t C = chans(L, nd->in[0]);
        CUT(C);
        cuts_rec(L, nd->in[0], lo, hi < C ? hi : C, off, cs);
        cuts_rec(L, nd->in[0], (lo > C ? lo : C) - C, hi - C, off + C, cs);
        return;
    }
    case IR_GATE: {
        int64_t Ch = nd->shape.d[2];
        cuts_rec(L, nd->in[0], lo, hi, off, cs);
        cuts_rec(L, nd->in[0], lo + Ch, hi + Ch, off - Ch, cs);
        return;
    }
    case IR_GATE_BWD: {
        int64_t Ch = chans(L, nd->in[1]);
        CUT(Ch);
        int64_t h1 = hi < Ch ? hi : Ch, l2 = lo > Ch ? lo : Ch;
        cuts_rec(L, nd->in[1], lo, h1, off, cs);
        cuts_rec(L, nd->in[0], lo, h1, off, cs);
        cuts_rec(L, nd->in[0], lo + Ch, h1 + Ch, off - Ch, cs);
        cuts_rec(L, nd->in[1], l2 - Ch, hi - Ch, off + Ch, cs);
        cuts_rec(L, nd->in[0], l2 - Ch, hi - Ch, off + Ch, cs);
        cuts_rec(L, nd->in[0], l2, hi, off, cs);
        return;
    }
    case IR_CONCAT_ELU_BWD: {
        int64_t C = chans(L, nd->in[0]);
        cuts_rec(L, nd->in[0], lo, hi, off, cs);
        cuts_rec(L, nd->in[1], lo, hi, off, cs);
        cuts_rec(L, nd->in[1], lo + C, hi + C, off - C, cs);
        return;
    }
    case IR_SLICE_BWD: {
        CUT(a->start);
        CUT(a->start + a->len);
        int64_t l2 = lo > a->start ? lo : a->start, h2 = hi < a->start + a->len ? hi : a->start + a->len;
        cuts_rec(L, nd->in[0], l2 - a->start, h2 - a->start, off + a->start, cs);
        return;
    }
    default: return;
    }
#undef CUT
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segments [seg[k], seg[k+1]) of [0, C) over which node's expression is uniform. */
static int segments(const Lower *L, int node, int64_t C, int64_t *seg) {
    Cuts cs;
    cs.n = 0;
    if (L->val[node].kind == NV_INLINE) cuts_rec(L, node, 0, C, 0, &cs);
    qsort(cs.c, (size_t)cs.n, sizeof cs.c[0], cmp_i64);
    int n = 0;
    seg[n++] = 0;
    for (int i = 0; i < cs.n; i++) seg[n++] = cs.c[i];
    seg[n++] = C;
    return n - 1;
}

/* Do the two channel halves of node share their costly parts (concat_elu:
 * one exp for elu(t) and elu(-t); gate_bwd: one sigmoid), and do its
 * segments (seg[0..ns]) mirror about C/2? Then one loop computes channel c
 * and c + C/2 side by side and the compiler shares the common work. */
static bool paired_halves(const Lower *L, int node, const int64_t *seg, int ns, int64_t C) {
    int k = node;
    while (L->val[k].kind == NV_INLINE && ND(L, k)->op == IR_DROPOUT) k = ND(L, k)->in[0];
    OpKind op = ND(L, k)->op;
    if (L->val[k].kind != NV_INLINE || (op != IR_CONCAT_ELU && op != IR_GATE_BWD) || C % 2 || ns % 2) return false;
    if (chans(L, k) != C) return false;
    int h = ns / 2;
    if (seg[h] != C / 2) return false;
    for (int i = 0; i <= h; i++)
        if (seg[h + i] != seg[i] + C / 2) return false;
    return true;
}

/* For every channel segment of `node` ([0,C)): loop c and store
 * out[base + c] = value. into: the enclosing loop. */
static void store_channels(KB *kb, KirStmt *into, int node, bool as_inline, int out_arg, KirExpr *base, int64_t C) {
    Lower *L = kb->L;
    int64_t seg[258];
    NodeVal saved = L->val[node];
    if (as_inline) L->val[node].kind = NV_INLINE;
    int ns = segments(L, node, C, seg);
    bool pair = paired_halves(L, node, seg, ns, C);
    for (int s = 0; s < (pair ? ns / 2 : ns); s++) {
        KirStmt *lc = kir_loop(P, kb->fn, into, ic(L, seg[s]), ic(L, seg[s + 1]), 0);
        KirExpr *c = kir_var(P, kir_loop_var(lc));
        kir_store(P, kb->fn, lc, out_arg, iadd(L, base, c), val(kb, node, c, seg[s]));
        if (pair) {
            KirExpr *c2 = iaddc(L, c, C / 2);
            kir_store(P, kb->fn, lc, out_arg, iadd(L, base, c2), val(kb, node, c2, seg[s] + C / 2));
        }
    }
    L->val[node] = saved;
}

/* for r in [0, n*H) parallel { for j in [0, W) { ... } }: sets the pixel. */
static KirStmt *pixel_loops(KB *kb, int H, int W, KirExpr **row) {
    Lower *L = kb->L;
    KirStmt *lr = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), H), KIR_LOOP_PARALLEL);
    KirExpr *r = kir_var(P, kir_loop_var(lr));
    KirStmt *lj = kir_loop(P, kb->fn, lr, ic(L, 0), ic(L, W), 0);
    kb->H = H;
    kb->W = W;
    kb->img = idiv(L, r, ic(L, H));
    kb->ii = imod(L, r, ic(L, H));
    kb->jj = kir_var(P, kir_loop_var(lj));
    kb->row = r;
    if (row) *row = r;
    return lj;
}

/* ---- pointwise MAT nodes ------------------------------------------------------------------ */

typedef struct PwCtx {
    int node, out;
} PwCtx;

static void build_pointwise(KB *kb, void *vctx) {
    PwCtx *c = vctx;
    Lower *L = kb->L;
    const Node *nd = ND(L, c->node);
    int64_t C = nd->shape.d[2];
    KirExpr *r;
    KirStmt *lj = pixel_loops(kb, (int)nd->shape.d[0], (int)nd->shape.d[1], &r);
    int o = kb_arg(kb, c->out, true, "y");
    KirExpr *base = imulc(L, iadd(L, imulc(L, r, nd->shape.d[1]), kir_var(P, kir_loop_var(lj))), C);
    store_channels(kb, lj, c->node, true, o, base, C);
}

/* An unbatched pointwise node (the sum of two parameter-gradient parts). */
static void build_flat_add(KB *kb, void *vctx) {
    PwCtx *c = vctx;
    Lower *L = kb->L;
    const Node *nd = ND(L, c->node);
    kb_note(kb, c->node);
    KirStmt *li = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, numel(L, c->node)), KIR_LOOP_PARALLEL);
    KirExpr *i = kir_var(P, kir_loop_var(li));
    int o = kb_arg(kb, c->out, true, "y");
    kir_store(P, kb->fn, li, o, i, fadd(L, val_flat(kb, nd->in[0], i), val_flat(kb, nd->in[1], i)));
}

/* ---- packs (im2col) -------------------------------------------------------------------------- */

/* col[(img*Ho + io)*Wo + jo][(a*kw + d)*C + c] = src[img, S*io + a - pt, S*jo + d - pl, c],
 * zero where that lies outside src (Hs x Ws). */
typedef struct PackGeo {
    int Ho, Wo, kh, kw, S, pt, pl, Hs, Ws;
    int kind;   /* cache key only: 0 a pack, PACK_WINO_IN / PACK_WINO_DY the Winograd transforms */
} PackGeo;
enum { PACK_WINO_IN = 1, PACK_WINO_DY = 2 };

typedef struct PackCtx {
    int src, col;
    PackGeo g;
    int for_node;   /* the GEMM node it feeds (provenance) */
} PackCtx;

static void build_pack(KB *kb, void *vctx) {
    PackCtx *pc = vctx;
    Lower *L = kb->L;
    const PackGeo *g = &pc->g;
    if (pc->for_node >= 0) kb_note(kb, pc->for_node);
    int64_t C = chans(L, pc->src), K = (int64_t)g->kh * g->kw * C;
    KirExpr *r;
    KirStmt *lj = pixel_loops(kb, g->Ho, g->Wo, &r);
    KirExpr *img = kb->img, *io = kb->ii, *jo = kb->jj;
    int colp = kb_arg(kb, pc->col, true, "col");
    KirStmt *la = kir_loop(P, kb->fn, lj, ic(L, 0), ic(L, g->kh), 0);
    KirStmt *ld = kir_loop(P, kb->fn, la, ic(L, 0), ic(L, g->kw), 0);
    KirExpr *av = kir_var(P, kir_loop_var(la)), *dv = kir_var(P, kir_loop_var(ld));
    KirExpr *si = iadd(L, imulc(L, io, g->S), iaddc(L, av, -g->pt));
    KirExpr *sj = iadd(L, imulc(L, jo, g->S), iaddc(L, dv, -g->pl));
    KirExpr *cond = NULL;
    /* only the bounds that can be crossed */
    if (g->pt > 0) cond = band(L, cond, cmp(L, KX_GE, si, ic(L, 0))), si = kir_op2(P, KX_MAX, si, ic(L, 0));
    if ((int64_t)g->S * (g->Ho - 1) + g->kh - 1 - g->pt >= g->Hs)
        cond = band(L, cond, cmp(L, KX_LT, si, ic(L, g->Hs))), si = kir_op2(P, KX_MIN, si, ic(L, g->Hs - 1));
    if (g->pl > 0) cond = band(L, cond, cmp(L, KX_GE, sj, ic(L, 0))), sj = kir_op2(P, KX_MAX, sj, ic(L, 0));
    if ((int64_t)g->S * (g->Wo - 1) + g->kw - 1 - g->pl >= g->Ws)
        cond = band(L, cond, cmp(L, KX_LT, sj, ic(L, g->Ws))), sj = kir_op2(P, KX_MIN, sj, ic(L, g->Ws - 1));
    KirExpr *base = iadd(L, imulc(L, iadd(L, imulc(L, r, g->Wo), jo), K),
                         imulc(L, iadd(L, imulc(L, av, g->kw), dv), C));
    kb->img = img;
    kb->ii = si;
    kb->jj = sj;
    kb->row = NULL;
    kb->H = g->Hs;
    kb->W = g->Ws;
    int64_t seg[258];
    int ns = segments(L, pc->src, C, seg);
    bool pair = paired_halves(L, pc->src, seg, ns, C);
    for (int s = 0; s < (pair ? ns / 2 : ns); s++) {
        KirStmt *lc = kir_loop(P, kb->fn, ld, ic(L, seg[s]), ic(L, seg[s + 1]), 0);
        KirExpr *c = kir_var(P, kir_loop_var(lc));
        for (int half = 0; half < (pair ? 2 : 1); half++) {
            KirExpr *ch = half ? iaddc(L, c, C / 2) : c;
            KirExpr *v = val(kb, pc->src, ch, seg[s] + (half ? C / 2 : 0));
            if (cond) v = fsel(L, cond, v, fc(L, 0));
            kir_store(P, kb->fn, lc, colp, iadd(L, base, ch), v);
        }
    }
}

static bool geo_eq(const PackGeo *a, const PackGeo *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Does the inlined expression of node draw dropout masks (when training)? */
static bool has_dropout(const Lower *L, int node) {
    if (L->val[node].kind != NV_INLINE) return false;
    const Node *nd = ND(L, node);
    if (nd->op == IR_DROPOUT && nd->a.p > 0) return true;
    for (int k = 0; k < nd->nin; k++)
        if (has_dropout(L, nd->in[k])) return true;
    return false;
}

static void pack_remember(Lower *L, int src, const PackGeo *g, int buf) {
    if (L->npack == L->cpack) {
        L->cpack = L->cpack ? 2 * L->cpack : 16;
        L->pack_key_node = xrealloc(L->pack_key_node, (size_t)L->cpack * sizeof(int));
        L->pack_key_geo = xrealloc(L->pack_key_geo, (size_t)L->cpack * 10 * sizeof(int));
        L->pack_buf = xrealloc(L->pack_buf, (size_t)L->cpack * sizeof(int));
    }
    _Static_assert(sizeof(PackGeo) == 10 * sizeof(int), "PackGeo is 10 ints");
    L->pack_key_node[L->npack] = src;
    memcpy(&L->pack_key_geo[L->npack * 10], g, sizeof *g);
    L->pack_buf[L->npack++] = buf;
}

static int pack_cached(const Lower *L, int src, const PackGeo *g) {
    for (int i = 0; i < L->npack; i++)
        if (L->pack_key_node[i] == src && geo_eq((const PackGeo *)&L->pack_key_geo[i * 10], g)) return L->pack_buf[i];
    return -1;
}

/* The pack of src with geometry g (cached within the entry). */
static int pack(Lower *L, int src, const PackGeo *g, int for_node, const char *note) {
    int cached = pack_cached(L, src, g);
    if (cached >= 0) return cached;
    int64_t C = chans(L, src);
    char what[96];
    snprintf(what, sizeof what, "pack %dx%d/%d", g->kh, g->kw, g->S);
    int col = new_arena_buf(L, what, src, 4LL * g->Ho * g->Wo * g->kh * g->kw * C, true);
    PackCtx pc = {src, col, *g, for_node};
    NodeVal saved = L->val[src];
    if (g->kh * g->kw > 1 && has_dropout(L, src)) {
        /* a pack repeats each input element kh*kw times: compute a dropout
         * (a hash per element) once into a scratch buffer, then copy */
        int tmp = new_arena_buf(L, "before packing", src, 4 * numel(L, src), true);
        PwCtx pw = {src, tmp};   /* (build_pointwise notes src and what it inlines) */
        emit_kernel(L, "ew", build_pointwise, &pw, note);
        L->val[src].kind = NV_BUF;
        L->val[src].buf = tmp;
    }
    emit_kernel(L, "pack", build_pack, &pc, note);
    L->val[src] = saved;
    pack_remember(L, src, g, col);
    return col;
}

/* src as a dense [n*H*W, C] matrix: its buffer, or a 1x1 pack. */
static int dense(Lower *L, int src, int for_node, const char *note) {
    if (L->val[src].kind == NV_BUF) return L->val[src].buf;
    const Shape *s = &ND(L, src)->shape;
    PackGeo g = {(int)s->d[0], (int)s->d[1], 1, 1, 1, 0, 0, (int)s->d[0], (int)s->d[1], 0};
    return pack(L, src, &g, for_node, note);
}

/* ---- GEMM kernels ------------------------------------------------------------------------------ */

typedef struct GemmCtx {
    int a, b, c;               /* buffers */
    bool ta, tb;
    int64_t m_per_image, m_const;   /* M = m_per_image * n + m_const */
    int64_t N, K_per_image, K_const;
    int64_t lda, ldb, ldc;
    float beta;
    int note_node;
} GemmCtx;

static void build_gemm(KB *kb, void *vctx) {
    GemmCtx *gc = vctx;
    Lower *L = kb->L;
    if (gc->note_node >= 0) kb_note(kb, gc->note_node);
    KirGemm g;
    memset(&g, 0, sizeof g);
    g.trans_a = gc->ta;
    g.trans_b = gc->tb;
    g.m = iadd(L, imulc(L, kir_batch(P), gc->m_per_image), ic(L, gc->m_const));
    g.n = ic(L, gc->N);
    g.k = iadd(L, imulc(L, kir_batch(P), gc->K_per_image), ic(L, gc->K_const));
    g.a = kb_arg(kb, gc->a, false, "a");
    g.b = kb_arg(kb, gc->b, false, "b");
    g.c = kb_arg(kb, gc->c, true, "c");
    g.a_off = g.b_off = g.c_off = ic(L, 0);
    g.lda = gc->lda;
    g.ldb = gc->ldb;
    g.ldc = gc->ldc;
    g.alpha = 1.0f;
    g.beta = gc->beta;
    kir_gemm(P, kb->fn, &g);
}

static void gemm(Lower *L, GemmCtx gc, const char *note) { emit_kernel(L, "gemm", build_gemm, &gc, note); }

/* ---- direct convolutions ---------------------------------------------------------------------- */

/* KS_CONV over a zero-bordered input x [n, Hp, Wp, cin] (a pad pack). */
typedef struct ConvCtx {
    int form;                  /* KIR_CONV_FORWARD: y written; KIR_CONV_WGRAD: w written */
    int x, w, y;               /* buffers */
    int64_t Ho, Wo, Hp, Wp, kh, kw, cin, cout;
    int64_t pt, pb, pl, pr;    /* zero rows and columns of x: the pad pack's borders */
    float beta;
    int note_node;
    int64_t yt, yb;            /* rows of y outside each image's Ho (kir.h) */
} ConvCtx;

static void build_conv(KB *kb, void *vctx) {
    ConvCtx *cc = vctx;
    Lower *L = kb->L;
    if (cc->note_node >= 0) kb_note(kb, cc->note_node);
    bool fwd = cc->form == KIR_CONV_FORWARD;
    KirConv k;
    memset(&k, 0, sizeof k);
    k.form = cc->form;
    k.x = kb_arg(kb, cc->x, false, "x");
    k.w = kb_arg(kb, cc->w, !fwd, "w");
    k.y = kb_arg(kb, cc->y, fwd, "y");
    k.images = kir_batch(P);
    k.Ho = cc->Ho, k.Wo = cc->Wo, k.Hp = cc->Hp, k.Wp = cc->Wp, k.kh = cc->kh, k.kw = cc->kw;
    k.cin = cc->cin, k.cout = cc->cout, k.pt = cc->pt, k.pb = cc->pb, k.pl = cc->pl, k.pr = cc->pr, k.beta = cc->beta;
    k.yt = cc->yt, k.yb = cc->yb;
    kir_conv(P, kb->fn, &k);
}

/* Does a conv2d with these attributes and cout output channels run as a
 * direct convolution (stride 1, padding within the kernel, cout a multiple
 * of 16; 1x1 included)? The rest keeps im2col + sgemm. */
static bool direct_conv(const Lower *L, const Attrs *a, int64_t cout) {
    if (L->opt.no_direct_conv) return false;
    return a->stride == 1 && cout % 16 == 0 && a->pad_t >= 0 && a->pad_t < a->kh &&
           a->pad_b >= 0 && a->pad_b < a->kh && a->pad_l >= 0 && a->pad_l < a->kw && a->pad_r >= 0 &&
           a->pad_r < a->kw;
}

/* The conv's input with its padding as zero borders: [n, Ho+kh-1, Wo+kw-1, C]
 * (the pack with a 1x1 window; cached like any pack). A 1x1 convolution
 * (no padding) reads a materialised input in place. */
static int pad_pack(Lower *L, int src, const Attrs *a, int64_t Ho, int64_t Wo, int for_node, const char *note) {
    const Shape *s = &ND(L, src)->shape;
    if (a->kh == 1 && a->kw == 1 && L->val[src].kind == NV_BUF) return L->val[src].buf;
    PackGeo g = {(int)(Ho + a->kh - 1), (int)(Wo + a->kw - 1), 1, 1, 1, a->pad_t, a->pad_l, (int)s->d[0], (int)s->d[1], 0};
    return pack(L, src, &g, for_node, note);
}

/* wt[((a*kw + d)*O + o)*C + c] = w[(((kh-1-a)*kw + kw-1-d)*C + c)*O + o]: the weight
 * of the input gradient as a forward convolution (taps flipped, channels swapped). */
typedef struct FlipCtx {
    int w, out;
    int64_t taps, C, O;
    int note_node;
} FlipCtx;

static void build_wflip(KB *kb, void *vctx) {
    FlipCtx *fc_ = vctx;
    Lower *L = kb->L;
    kb_note(kb, fc_->note_node);
    int src = kb_arg(kb, fc_->w, false, "w"), dst = kb_arg(kb, fc_->out, true, "wt");
    KirStmt *lt = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, fc_->taps), 0);
    KirStmt *lo = kir_loop(P, kb->fn, lt, ic(L, 0), ic(L, fc_->O), 0);
    KirStmt *lc = kir_loop(P, kb->fn, lo, ic(L, 0), ic(L, fc_->C), 0);
    KirExpr *t = kir_var(P, kir_loop_var(lt)), *o = kir_var(P, kir_loop_var(lo)), *c = kir_var(P, kir_loop_var(lc));
    KirExpr *flipped = kir_op2(P, KX_SUB, ic(L, fc_->taps - 1), t);
    KirExpr *si = iadd(L, imulc(L, iadd(L, imulc(L, flipped, fc_->C), c), fc_->O), o);
    KirExpr *di = iadd(L, imulc(L, iadd(L, imulc(L, t, fc_->O), o), fc_->C), c);
    kir_store(P, kb->fn, lc, dst, di, kir_load(P, kb->fn, src, si));
}

/* x is pad_pack's output for a source of Hs x Ws: its first pad_t rows and
 * the rows past pad_t + Hs are zero, likewise the columns (kir.h: pt, pb,
 * pl, pr). */
static ConvCtx conv_ctx(int form, int x, int w, int y, const Attrs *a, int64_t Hs, int64_t Ws, int64_t Ho,
                        int64_t Wo, int64_t cin, int64_t cout, float beta, int note_node) {
    int64_t Hp = Ho + a->kh - 1, Wp = Wo + a->kw - 1;
    int64_t pt = a->pad_t < Hp ? a->pad_t : Hp, pb = Hp - pt - Hs;
    int64_t pl = a->pad_l < Wp ? a->pad_l : Wp, pr = Wp - pl - Ws;
    ConvCtx c = {form, x, w, y, Ho, Wo, Hp, Wp, a->kh, a->kw, cin, cout, pt, pb < 0 ? 0 : pb, pl, pr < 0 ? 0 : pr,
                 beta, note_node, 0, 0};
    return c;
}

/* ---- Winograd F(4,3) and F(4,2) along the width --------------------------------------------------
 *
 * A stride-1 convolution with r = 3 or 2 columns of taps whose output is the
 * size of its input runs, per tile of 4 output columns, in the transformed
 * domain of the minimal filtering algorithm F(4,r) with nk = 4 + r - 1
 * points (F(4,3): 0, 1, -1, 2, -2, inf; F(4,2): 0, 1, -1, 2, inf). With P
 * the zero-bordered input and T = ceil(Wo/4) tiles per row:
 *     V_k[r, t, c]    = sum_j BT[k][j] P[r, 4t + j, c]         (j < nk; columns past P are 0)
 *     U_k[a, c, o]    = sum_d G[k][d] w[a, d, c, o]
 *     M_k[i, t, o]    = sum_a,c V_k[i + a, t, c] U_k[a, c, o]   (KS_CONV, kh x 1 taps, T columns)
 *     y[i, 4t + m, o] = sum_k AT[m][k] M_k[i, t, o]              (m < 4, 4t + m < Wo)
 * nk convolutions of kh x 1 taps: nk multiply-adds per tap row and 4 output
 * columns where the direct form does 4r (F(4,3): 6 for 12, F(4,2): 5 for 8).
 * The gradients are the adjoints:
 *     dM_k[i, t, o]  = sum_m AT[m][k] dy[i, 4t + m, o]
 *     dw[a, d, c, o] = sum_k G[k][d] sum_i,t V_k[i + a, t, c] dM_k[i, t, o]   (KS_CONV wgrad)
 *     dV_k[r, t, c]  = sum_a,o dM_k[r - a, t, o] U_k[a, c, o]     (KS_CONV forward, taps flipped)
 *     dx[i, q, c]    = sum over 4t + j = q + pad_l of sum_k BT[k][j] dV_k[i + pad_t, t, c]
 * dM is stored with kh - 1 - pad_t zero rows above each image and pad_t below,
 * so the input gradient's convolution reads it as its zero-bordered input
 * and the weight gradient's reads its rows in place (KirConv yt, yb). V, U,
 * M, dM, dV are nk buffers each, one per k, with consecutive ids.
 */
typedef struct WinoAlg {
    int r, nk;          /* taps per row; points (= the input window of a tile) */
    double BT[6][6], G[6][3], AT[4][6];
} WinoAlg;

static const WinoAlg WINO_F43 = {
    3, 6,
    {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}},
    {{1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
     {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}},
    {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}},
};
static const WinoAlg WINO_F42 = {
    2, 5,
    {{2, -1, -2, 1, 0}, {0, -2, -1, 1, 0}, {0, 2, -3, 1, 0}, {0, -1, 0, 1, 0}, {0, 2, -1, -2, 1}},
    {{1.0 / 2, 0}, {-1.0 / 2, -1.0 / 2}, {-1.0 / 6, 1.0 / 6}, {1.0 / 6, 1.0 / 3}, {0, 1}},
    {{1, 1, 1, 1, 0}, {0, 1, -1, 2, 0}, {0, 1, 1, 4, 0}, {0, 1, -1, 8, 1}},
};

/* The algorithm for this conv2d (x -> y), or NULL: the direct form. Its
 * input gradient needs cin a multiple of 16 (its convolution's cout). */
static const WinoAlg *winograd(const Lower *L, const Attrs *a, const Shape *xs, const Shape *ys) {
    if (L->opt.no_winograd || !direct_conv(L, a, ys->d[2]) || xs->d[2] % 16 || xs->d[0] != ys->d[0] ||
        xs->d[1] != ys->d[1] || ys->d[1] < 4)
        return NULL;
    return a->kw == 3 ? &WINO_F43 : a->kw == 2 ? &WINO_F42 : NULL;
}

/* sum_j coef[j * stride] x[j] over j < n, the +-1 terms as adds and subtracts */
static KirExpr *wino_sum(Lower *L, const double *coef, int stride, KirExpr *const *x, int n) {
    KirExpr *s = NULL;
    for (int j = 0; j < n; j++) {
        double c = coef[j * stride];
        if (c == 0) continue;
        KirExpr *t = c == 1 || c == -1 ? x[j] : fmul(L, fc(L, c), x[j]);
        if (!s) s = c == -1 ? fneg(L, t) : t;
        else s = c == -1 ? fsub(L, s, t) : fadd(L, s, t);
    }
    return s ? s : fc(L, 0);
}

/* nk buffers with consecutive ids: "what 0" .. */
static int wino_bufs(Lower *L, int nk, const char *what, int node, int64_t bytes, bool batched) {
    int b0 = -1;
    for (int k = 0; k < nk; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s %d", what, k);
        int b = new_arena_buf(L, nm, node, bytes, batched);
        if (k == 0) b0 = b;
        PXC_ASSERT(b == b0 + k);
    }
    return b0;
}

/* nk args for buffers b .. b + nk - 1 */
static void wino_args(KB *kb, int *args, int b, int nk, bool out, const char *name) {
    for (int k = 0; k < nk; k++) args[k] = kb_arg(kb, b + k, out, name);
}

/* out_k[(r*T + t)*C + c] = sum_j coef[k*ks + j*js] src[img, r % Hr - top, 4t + j - left, c]
 * over j < nj, zero where that lies outside src (Hs x Ws); r over [0, n*Hr), k < nk. */
typedef struct WinoInCtx {
    int src, buf;
    int64_t Hr, top, left, Hs, Ws, T;
    int nk, nj;
    const double *coef;
    int ks, js;
    int for_node;
} WinoInCtx;

static void build_wino_in(KB *kb, void *vctx) {
    WinoInCtx *w = vctx;
    Lower *L = kb->L;
    kb_note(kb, w->for_node);
    int64_t C = chans(L, w->src);
    KirStmt *lr = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), w->Hr), KIR_LOOP_PARALLEL);
    KirExpr *r = kir_var(P, kir_loop_var(lr));
    KirStmt *lt = kir_loop(P, kb->fn, lr, ic(L, 0), ic(L, w->T), 0);
    KirExpr *t = kir_var(P, kir_loop_var(lt));
    int o[6];
    wino_args(kb, o, w->buf, w->nk, true, "tile");
    KirExpr *si = iaddc(L, imod(L, r, ic(L, w->Hr)), -w->top), *rowc = NULL;
    if (w->top > 0) rowc = cmp(L, KX_GE, si, ic(L, 0)), si = kir_op2(P, KX_MAX, si, ic(L, 0));
    if (w->Hr - w->top > w->Hs)
        rowc = band(L, rowc, cmp(L, KX_LT, si, ic(L, w->Hs))), si = kir_op2(P, KX_MIN, si, ic(L, w->Hs - 1));
    kb->img = idiv(L, r, ic(L, w->Hr));
    kb->row = NULL;
    kb->H = (int)w->Hs;
    kb->W = (int)w->Ws;
    KirExpr *base = imulc(L, iadd(L, imulc(L, r, w->T), t), C);
    int64_t seg[258];
    int ns = segments(L, w->src, C, seg);
    bool pair = paired_halves(L, w->src, seg, ns, C);
    for (int s = 0; s < (pair ? ns / 2 : ns); s++) {
        KirStmt *lc = kir_loop(P, kb->fn, lt, ic(L, seg[s]), ic(L, seg[s + 1]), 0);
        KirExpr *c = kir_var(P, kir_loop_var(lc));
        /* every value of the window (both halves) before any store, so the
         * back ends share what the halves have in common (pair) */
        KirExpr *x[2][6], *chs[2];
        for (int half = 0; half < (pair ? 2 : 1); half++) {
            KirExpr *ch = chs[half] = half ? iaddc(L, c, C / 2) : c;
            for (int j = 0; j < w->nj; j++) {
                KirExpr *sj = iaddc(L, imulc(L, t, 4), j - w->left), *cond = rowc;
                if (j - w->left < 0) cond = band(L, cond, cmp(L, KX_GE, sj, ic(L, 0))), sj = kir_op2(P, KX_MAX, sj, ic(L, 0));
                if (4 * (w->T - 1) + j - w->left >= w->Ws)
                    cond = band(L, cond, cmp(L, KX_LT, sj, ic(L, w->Ws))), sj = kir_op2(P, KX_MIN, sj, ic(L, w->Ws - 1));
                KirExpr *v = val_at(kb, w->src, ch, seg[s] + (half ? C / 2 : 0), si, sj);
                x[half][j] = kb_let(kb, lc, cond ? fsel(L, cond, v, fc(L, 0)) : v);
            }
        }
        for (int half = 0; half < (pair ? 2 : 1); half++)
            for (int k = 0; k < w->nk; k++)
                kir_store(P, kb->fn, lc, o[k], iadd(L, base, chs[half]),
                          wino_sum(L, w->coef + k * w->ks, w->js, x[half], w->nj));
    }
}

/* V for the convolution of src (cached within the entry). */
static int wino_input(Lower *L, const WinoAlg *al, int src, const Attrs *a, int64_t Ho, int64_t Wo, int for_node,
                      const char *note) {
    const Shape *s = &ND(L, src)->shape;
    int64_t Hp = Ho + a->kh - 1, T = (Wo + 3) / 4;
    PackGeo g = {(int)Hp, (int)T, a->kh, al->r, 1, a->pad_t, a->pad_l, (int)s->d[0], (int)s->d[1], PACK_WINO_IN};
    int b = pack_cached(L, src, &g);
    if (b >= 0) return b;
    b = wino_bufs(L, al->nk, "winograd input", src, 4 * Hp * T * s->d[2], true);
    WinoInCtx w = {src, b, Hp, a->pad_t, a->pad_l, s->d[0], s->d[1], T, al->nk, al->nk, &al->BT[0][0], 6, 1, for_node};
    emit_kernel(L, "pack_winograd", build_wino_in, &w, note);
    pack_remember(L, src, &g, b);
    return b;
}

/* dM for the gradients of a convolution with output gradient dy (cached within the entry). */
static int wino_dy(Lower *L, const WinoAlg *al, int dy, const Attrs *a, int for_node, const char *note) {
    const Shape *s = &ND(L, dy)->shape;
    int64_t Hq = s->d[0] + a->kh - 1, yt = a->kh - 1 - a->pad_t, T = (s->d[1] + 3) / 4;
    PackGeo g = {(int)Hq, (int)T, a->kh, al->r, 1, (int)yt, 0, (int)s->d[0], (int)s->d[1], PACK_WINO_DY};
    int b = pack_cached(L, dy, &g);
    if (b >= 0) return b;
    b = wino_bufs(L, al->nk, "winograd output gradient", dy, 4 * Hq * T * s->d[2], true);
    WinoInCtx w = {dy, b, Hq, yt, 0, s->d[0], s->d[1], T, al->nk, 4, &al->AT[0][0], 1, 6, for_node};
    emit_kernel(L, "pack_winograd", build_wino_in, &w, note);
    pack_remember(L, dy, &g, b);
    return b;
}

/* U_k (flip: U_k with its rows flipped and laid out [a][o][c], for the input gradient). */
typedef struct WinoWCtx {
    const WinoAlg *al;
    int w, buf;
    int64_t kh, C, O;
    bool flip;
    int note_node;
} WinoWCtx;

static void build_wino_w(KB *kb, void *vctx) {
    WinoWCtx *c = vctx;
    Lower *L = kb->L;
    const WinoAlg *al = c->al;
    kb_note(kb, c->note_node);
    int src = kb_arg(kb, c->w, false, "w"), o[6];
    wino_args(kb, o, c->buf, al->nk, true, "wt");
    KirStmt *la = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, c->kh), 0);
    KirStmt *lp = kir_loop(P, kb->fn, la, ic(L, 0), ic(L, c->flip ? c->O : c->C), 0);
    KirStmt *lq = kir_loop(P, kb->fn, lp, ic(L, 0), ic(L, c->flip ? c->C : c->O), 0);
    KirExpr *a = kir_var(P, kir_loop_var(la)), *p = kir_var(P, kir_loop_var(lp)), *q = kir_var(P, kir_loop_var(lq));
    KirExpr *ch = c->flip ? q : p, *oc = c->flip ? p : q;
    KirExpr *sa = c->flip ? kir_op2(P, KX_SUB, ic(L, c->kh - 1), a) : a;
    KirExpr *g[3];
    for (int d = 0; d < al->r; d++) {
        KirExpr *si = iadd(L, imulc(L, iadd(L, imulc(L, iaddc(L, imulc(L, sa, al->r), d), c->C), ch), c->O), oc);
        g[d] = kb_let(kb, lq, kir_load(P, kb->fn, src, si));
    }
    KirExpr *di = c->flip ? iadd(L, imulc(L, iadd(L, imulc(L, a, c->O), oc), c->C), ch)
                          : iadd(L, imulc(L, iadd(L, imulc(L, a, c->C), ch), c->O), oc);
    for (int k = 0; k < al->nk; k++) kir_store(P, kb->fn, lq, o[k], di, wino_sum(L, al->G[k], 1, g, al->r));
}

/* y[(r*Wo + 4t + m)*O + o] (= or +=) sum_k AT[m][k] M_k[(r*T + t)*O + o], r over [0, n*Ho). */
typedef struct WinoOutCtx {
    const WinoAlg *al;
    int buf, out;
    int64_t Ho, Wo, T, O;
    float beta;
    int note_node;
} WinoOutCtx;

static void build_wino_out(KB *kb, void *vctx) {
    WinoOutCtx *c = vctx;
    Lower *L = kb->L;
    int nk = c->al->nk;
    kb_note(kb, c->note_node);
    int m[6], y = kb_arg(kb, c->out, true, "y");
    wino_args(kb, m, c->buf, nk, false, "prod");
    KirStmt *lr = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), c->Ho), KIR_LOOP_PARALLEL);
    KirExpr *r = kir_var(P, kir_loop_var(lr));
    /* the whole tiles, then the last one's Wo % 4 columns */
    for (int part = 0; part < 2; part++) {
        int64_t t0 = part ? c->Wo / 4 : 0, t1 = part ? (c->Wo % 4 ? t0 + 1 : t0) : c->Wo / 4;
        int cols = part ? (int)(c->Wo % 4) : 4;
        if (t0 >= t1) continue;
        KirStmt *lt = kir_loop(P, kb->fn, lr, ic(L, t0), ic(L, t1), 0);
        KirExpr *t = kir_var(P, kir_loop_var(lt));
        KirStmt *lo = kir_loop(P, kb->fn, lt, ic(L, 0), ic(L, c->O), 0);
        KirExpr *o = kir_var(P, kir_loop_var(lo));
        KirExpr *x[6];
        for (int k = 0; k < nk; k++)
            x[k] = kb_let(kb, lo, kir_load(P, kb->fn, m[k], iadd(L, imulc(L, iadd(L, imulc(L, r, c->T), t), c->O), o)));
        for (int j = 0; j < cols; j++) {
            KirExpr *yi = iadd(L, imulc(L, iadd(L, imulc(L, r, c->Wo), iaddc(L, imulc(L, t, 4), j)), c->O), o);
            KirExpr *v = wino_sum(L, c->al->AT[j], 1, x, nk);
            if (c->beta != 0) kir_accum(P, kb->fn, lo, y, yi, v);
            else kir_store(P, kb->fn, lo, y, yi, v);
        }
    }
}

/* dx[(r*W + q)*C + c] = sum over 4t + j = q + left of sum_k BT[k][j] dV_k[(r*T + t)*C + c], r over [0, n*H). */
typedef struct WinoDxCtx {
    const WinoAlg *al;
    int buf, out;
    int64_t H, W, T, C, left;
    int note_node;
} WinoDxCtx;

static void build_wino_dx(KB *kb, void *vctx) {
    WinoDxCtx *c = vctx;
    Lower *L = kb->L;
    int nk = c->al->nk;
    kb_note(kb, c->note_node);
    int v[6], y = kb_arg(kb, c->out, true, "dx");
    wino_args(kb, v, c->buf, nk, false, "grad");
    KirStmt *lr = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), c->H), KIR_LOOP_PARALLEL);
    KirExpr *r = kir_var(P, kir_loop_var(lr));
    for (int m = 0; m < 4; m++) {
        /* the columns q = 4t + m - left in [0, W) (left < r <= 3, W >= 4); tile t
         * gives them its point j = m (t < T), tile t - 1 its point m + 4 (m + 4 < nk) */
        int64_t tlo = c->left - m > 0 ? 1 : 0, thi = (c->W - 1 + c->left - m) / 4 + 1;
        int64_t cut[4] = {tlo, 1, c->T, thi};
        for (int piece = 0; piece < 3; piece++) {
            int64_t p0 = cut[piece] > tlo ? cut[piece] : tlo, p1 = cut[piece + 1] < thi ? cut[piece + 1] : thi;
            if (piece == 2) p1 = thi;
            if (p0 >= p1) continue;
            bool hasA = p0 < c->T, hasB = m + 4 < nk && p0 >= 1 && p0 <= c->T;
            PXC_ASSERT(hasA || hasB);   /* every column has a tile */
            KirStmt *lt = kir_loop(P, kb->fn, lr, ic(L, p0), ic(L, p1), 0);
            KirExpr *t = kir_var(P, kir_loop_var(lt));
            KirStmt *lc = kir_loop(P, kb->fn, lt, ic(L, 0), ic(L, c->C), 0);
            KirExpr *ch = kir_var(P, kir_loop_var(lc)), *sum = NULL;
            for (int src = 0; src < 2; src++) {
                if (src ? !hasB : !hasA) continue;
                KirExpr *tt = src ? iaddc(L, t, -1) : t, *x[6];
                KirExpr *idx = iadd(L, imulc(L, iadd(L, imulc(L, r, c->T), tt), c->C), ch);
                for (int k = 0; k < nk; k++) x[k] = kir_load(P, kb->fn, v[k], idx);
                KirExpr *e = wino_sum(L, &c->al->BT[0][m + 4 * src], 6, x, nk);
                sum = sum ? fadd(L, sum, e) : e;
            }
            KirExpr *q = iaddc(L, imulc(L, t, 4), m - c->left);
            kir_store(P, kb->fn, lc, y, iadd(L, imulc(L, iadd(L, imulc(L, r, c->W), q), c->C), ch), sum);
        }
    }
}

/* dw[((a*r + d)*C + c)*O + o] = sum_k G[k][d] dU_k[(a*C + c)*O + o] */
typedef struct WinoDwCtx {
    const WinoAlg *al;
    int buf, out;
    int64_t kh, C, O;
    int note_node;
} WinoDwCtx;

static void build_wino_dw(KB *kb, void *vctx) {
    WinoDwCtx *c = vctx;
    Lower *L = kb->L;
    const WinoAlg *al = c->al;
    kb_note(kb, c->note_node);
    int u[6], y = kb_arg(kb, c->out, true, "dw");
    wino_args(kb, u, c->buf, al->nk, false, "wgrad");
    KirStmt *la = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, c->kh), 0);
    KirStmt *lc = kir_loop(P, kb->fn, la, ic(L, 0), ic(L, c->C), 0);
    KirStmt *lo = kir_loop(P, kb->fn, lc, ic(L, 0), ic(L, c->O), 0);
    KirExpr *a = kir_var(P, kir_loop_var(la)), *ch = kir_var(P, kir_loop_var(lc)), *o = kir_var(P, kir_loop_var(lo));
    KirExpr *x[6];
    for (int k = 0; k < al->nk; k++)
        x[k] = kb_let(kb, lo, kir_load(P, kb->fn, u[k], iadd(L, imulc(L, iadd(L, imulc(L, a, c->C), ch), c->O), o)));
    for (int d = 0; d < al->r; d++) {
        KirExpr *di = iadd(L, imulc(L, iadd(L, imulc(L, iaddc(L, imulc(L, a, al->r), d), c->C), ch), c->O), o);
        kir_store(P, kb->fn, lo, y, di, wino_sum(L, &al->G[0][d], 3, x, al->nk));
    }
}

/* The nk convolutions of a Winograd pair (x_k, w_k) -> y_k: kh x 1 taps over T columns. */
static void wino_convs(Lower *L, int nk, int form, int x, int w, int y, const Attrs *a, int64_t Hs, int64_t Ho,
                       int64_t T, int64_t cin, int64_t cout, int64_t yt, int64_t yb, int note_node, const char *note) {
    Attrs a1 = *a;
    a1.kw = 1, a1.pad_l = 0, a1.pad_r = 0;
    for (int k = 0; k < nk; k++) {
        ConvCtx cc = conv_ctx(form, x + k, w + k, y + k, &a1, Hs, T, Ho, T, cin, cout, 0, note_node);
        cc.yt = yt, cc.yb = yb;
        emit_kernel(L, "conv", build_conv, &cc, note);
    }
}

/* out (beta 0 or 1) = the convolution of conv2d node i's input by the weight in buffer wb. */
static void wino_forward(Lower *L, const WinoAlg *al, int i, int wb, int out, float beta, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int x = nd->in[0];
    int64_t C = chans(L, x), Ho = nd->shape.d[0], Wo = nd->shape.d[1], O = nd->shape.d[2], T = (Wo + 3) / 4;
    int V = wino_input(L, al, x, a, Ho, Wo, i, note);
    int U = wino_bufs(L, al->nk, "winograd weight", i, 4LL * a->kh * C * O, false);
    WinoWCtx wc = {al, wb, U, a->kh, C, O, false, i};
    emit_kernel(L, "pack_weight", build_wino_w, &wc, note);
    int M = wino_bufs(L, al->nk, "winograd product", i, 4 * Ho * T * O, true);
    wino_convs(L, al->nk, KIR_CONV_FORWARD, V, U, M, a, Ho, Ho, T, C, O, 0, 0, i, note);
    WinoOutCtx oc = {al, M, out, Ho, Wo, T, O, beta, i};
    emit_kernel(L, "pack_winograd_out", build_wino_out, &oc, note);
}

/* out[p, o] = bias[o] for every pixel (before a GEMM with beta 1). */
typedef struct FillCtx {
    int out, bias_node;
    int64_t pixels_per_image, C;
} FillCtx;

static void build_fill_bias(KB *kb, void *vctx) {
    FillCtx *fc_ = vctx;
    Lower *L = kb->L;
    KirStmt *lp = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), fc_->pixels_per_image), KIR_LOOP_PARALLEL);
    KirStmt *lc = kir_loop(P, kb->fn, lp, ic(L, 0), ic(L, fc_->C), 0);
    KirExpr *p = kir_var(P, kir_loop_var(lp)), *c = kir_var(P, kir_loop_var(lc));
    int o = kb_arg(kb, fc_->out, true, "y");
    kir_store(P, kb->fn, lc, o, iadd(L, imulc(L, p, fc_->C), c), val_flat(kb, fc_->bias_node, c));
}

/* Gather (col2im): out[img, r, q, c] = bias[c] + sum over (a, d) of
 * col[img, (r + pt - a)/S, (q + pl - d)/S, (a*kw + d)*C + c] where the
 * division is exact and the source lies in the Hc x Wc grid. Used by
 * deconv2d (S = 2, pt = 0, pl = -crop: source row (r - a)/2, column
 * (q + crop - d)/2) and conv2d_dx (source (i + pt - a)/S). */
typedef struct GatherCtx {
    int col, out, bias_node;   /* bias_node -1: none */
    int Ho, Wo;                /* output grid */
    int Hc, Wc;                /* the col's pixel grid */
    int kh, kw, S, pt, pl;
    int64_t C;
    int note_node;
} GatherCtx;

static void build_gather(KB *kb, void *vctx) {
    GatherCtx *gc = vctx;
    Lower *L = kb->L;
    if (gc->note_node >= 0) kb_note(kb, gc->note_node);
    KirExpr *r;
    KirStmt *lj = pixel_loops(kb, gc->Ho, gc->Wo, &r);
    KirExpr *img = kb->img, *i = kb->ii, *j = kb->jj;
    int o = kb_arg(kb, gc->out, true, "y");
    KirStmt *lc = kir_loop(P, kb->fn, lj, ic(L, 0), ic(L, gc->C), 0);
    KirExpr *c = kir_var(P, kir_loop_var(lc));
    KirExpr *sum = gc->bias_node >= 0 ? val_flat(kb, gc->bias_node, c) : NULL;
    int64_t K2 = (int64_t)gc->kh * gc->kw * gc->C;
    for (int a = 0; a < gc->kh; a++)
        for (int d = 0; d < gc->kw; d++) {
            /* t = position in the col grid times S */
            KirExpr *ti = iaddc(L, i, gc->pt - a), *tj = iaddc(L, j, gc->pl - d);
            KirExpr *cond = NULL;
            int64_t tmin_i = gc->pt - a, tmax_i = gc->Ho - 1 + gc->pt - a;
            int64_t tmin_j = gc->pl - d, tmax_j = gc->Wo - 1 + gc->pl - d;
            if (tmin_i < 0) cond = band(L, cond, cmp(L, KX_GE, ti, ic(L, 0))), ti = kir_op2(P, KX_MAX, ti, ic(L, 0));
            if (tmin_j < 0) cond = band(L, cond, cmp(L, KX_GE, tj, ic(L, 0))), tj = kir_op2(P, KX_MAX, tj, ic(L, 0));
            if (gc->S > 1) {
                cond = band(L, cond, cmp(L, KX_EQ, imod(L, ti, ic(L, gc->S)), ic(L, 0)));
                cond = band(L, cond, cmp(L, KX_EQ, imod(L, tj, ic(L, gc->S)), ic(L, 0)));
                ti = idiv(L, ti, ic(L, gc->S));
                tj = idiv(L, tj, ic(L, gc->S));
            }
            if (tmax_i / gc->S >= gc->Hc)
                cond = band(L, cond, cmp(L, KX_LT, ti, ic(L, gc->Hc))), ti = kir_op2(P, KX_MIN, ti, ic(L, gc->Hc - 1));
            if (tmax_j / gc->S >= gc->Wc)
                cond = band(L, cond, cmp(L, KX_LT, tj, ic(L, gc->Wc))), tj = kir_op2(P, KX_MIN, tj, ic(L, gc->Wc - 1));
            KirExpr *pix = iadd(L, imulc(L, iadd(L, imulc(L, img, gc->Hc), ti), gc->Wc), tj);
            KirExpr *idx = iadd(L, imulc(L, pix, K2), iaddc(L, c, ((int64_t)a * gc->kw + d) * gc->C));
            KirExpr *t = kb_load(kb, gc->col, idx, "col");
            if (cond) t = fsel(L, cond, t, fc(L, 0));
            sum = sum ? fadd(L, sum, t) : t;
        }
    kir_store(P, kb->fn, lc, o, iadd(L, imulc(L, iadd(L, imulc(L, r, gc->Wo), j), gc->C), c), sum);
}

/* ---- the value of a weight (PARAM or WNORM output) ------------------------------------------------ */

static void emit_wnorm(Lower *L, int i, const char *note);

static int weight_buf(Lower *L, int w, int user) {
    if (L->val[w].kind == NV_NONE && ND(L, w)->op == IR_WNORM) {
        /* backward recomputes a normalised weight where it needs it (a
         * parameter-sized pass) rather than keep every w from forward */
        char note[512];
        emit_wnorm(L, w, node_where(L, w, note, sizeof note));
    }
    if (L->val[w].kind != NV_BUF || ND(L, w)->shape.batched) {
        diag_error(L->dl, ND(L, user)->loc, "%s: its weight must be a parameter or a weight-normalised parameter",
                   ir_op(ND(L, user)->op)->name);
        L->failed = true;
        return -1;
    }
    return L->val[w].buf;
}

/* ---- weight normalisation ----------------------------------------------------------------------- */

/* Loops over a weight with output-channel axis `axis`: outer, o, inner. */
static void wn_dims(const Shape *s, int axis, int64_t *outer, int64_t *O, int64_t *inner) {
    *outer = 1, *inner = 1;
    for (int k = 0; k < axis; k++) *outer *= s->d[k];
    *O = s->d[axis];
    for (int k = axis + 1; k < s->rank; k++) *inner *= s->d[k];
}

typedef struct WnCtx {
    int node;          /* WNORM, or WNORM_DV / WNORM_DG */
    int v, gnode;      /* v and g nodes (gnode -1: g = 1, the init pass) */
    int out;           /* w */
    int ns;            /* scratch [O]: sum of v^2 */
    int dw, dot, dv, dg;  /* backward: dw node; scratch; outputs (-1 if absent) */
} WnCtx;

/* Emits loops outer (reduce), o, inner (reduce) into `into` (NULL: top). */
static KirStmt *wn_loops(KB *kb, const Shape *s, int axis, KirExpr **idx, KirExpr **o) {
    Lower *L = kb->L;
    int64_t outer, O, inner;
    wn_dims(s, axis, &outer, &O, &inner);
    KirStmt *l1 = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, outer), KIR_LOOP_REDUCE);
    KirStmt *l2 = kir_loop(P, kb->fn, l1, ic(L, 0), ic(L, O), 0);
    KirStmt *l3 = kir_loop(P, kb->fn, l2, ic(L, 0), ic(L, inner), KIR_LOOP_REDUCE);
    KirExpr *po = kir_var(P, kir_loop_var(l1)), *pi = kir_var(P, kir_loop_var(l3));
    *o = kir_var(P, kir_loop_var(l2));
    *idx = iadd(L, imulc(L, iadd(L, imulc(L, po, O), *o), inner), pi);
    return l3;
}

static void zero_loop(KB *kb, int arg, int64_t count, KirType t) {
    Lower *L = kb->L;
    KirStmt *lz = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, count), 0);
    KirExpr *z = t == KT_F64 ? kir_const_f64(P, 0) : fc(L, 0);
    kir_store(P, kb->fn, lz, arg, kir_var(P, kir_loop_var(lz)), z);
}

static void build_wnorm(KB *kb, void *vctx) {
    WnCtx *c = vctx;
    Lower *L = kb->L;
    const Node *nd = ND(L, c->node);
    const Shape *s = &ND(L, c->v)->shape;
    int64_t outer, O, inner;
    wn_dims(s, nd->a.axis, &outer, &O, &inner);
    kb_note(kb, c->node);
    int nsa = kb_arg(kb, c->ns, true, "ns");
    zero_loop(kb, nsa, O, KT_F32);
    KirExpr *idx, *o;
    KirStmt *in = wn_loops(kb, s, nd->a.axis, &idx, &o);
    KirExpr *v = val_flat(kb, c->v, idx);
    kir_accum(P, kb->fn, in, nsa, o, fmul(L, v, v));
    int wa = kb_arg(kb, c->out, true, "w");
    in = wn_loops(kb, s, nd->a.axis, &idx, &o);
    v = val_flat(kb, c->v, idx);
    KirExpr *norm = kir_op1(P, KX_SQRT, kir_load(P, kb->fn, nsa, o));
    KirExpr *scale = c->gnode >= 0 ? fdiv(L, val_flat(kb, c->gnode, o), norm) : fdiv(L, fc(L, 1), norm);
    kir_store(P, kb->fn, in, wa, idx, fmul(L, v, scale));
}

/* dg[o] = <dw,v>/|v|;  dv = g/|v| (dw - <dw,v> v / |v|^2). */
static void build_wnorm_bwd(KB *kb, void *vctx) {
    WnCtx *c = vctx;
    Lower *L = kb->L;
    const Node *nd = ND(L, c->node);
    const Shape *s = &ND(L, c->v)->shape;
    int64_t outer, O, inner;
    wn_dims(s, nd->a.axis, &outer, &O, &inner);
    kb_note(kb, c->node);
    int nsa = kb_arg(kb, c->ns, true, "ns"), dota = kb_arg(kb, c->dot, true, "dot");
    zero_loop(kb, nsa, O, KT_F32);
    zero_loop(kb, dota, O, KT_F32);
    KirExpr *idx, *o;
    KirStmt *in = wn_loops(kb, s, nd->a.axis, &idx, &o);
    KirExpr *v = val_flat(kb, c->v, idx), *dw = val_flat(kb, c->dw, idx);
    kir_accum(P, kb->fn, in, nsa, o, fmul(L, v, v));
    kir_accum(P, kb->fn, in, dota, o, fmul(L, dw, v));
    if (c->dg >= 0) {
        int dga = kb_arg(kb, c->dg, true, "dg");
        KirStmt *lo = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, O), 0);
        KirExpr *oo = kir_var(P, kir_loop_var(lo));
        kir_store(P, kb->fn, lo, dga, oo,
                  fdiv(L, kir_load(P, kb->fn, dota, oo), kir_op1(P, KX_SQRT, kir_load(P, kb->fn, nsa, oo))));
    }
    if (c->dv >= 0) {
        int dva = kb_arg(kb, c->dv, true, "dv");
        in = wn_loops(kb, s, nd->a.axis, &idx, &o);
        v = val_flat(kb, c->v, idx);
        dw = val_flat(kb, c->dw, idx);
        KirExpr *ns = kir_load(P, kb->fn, nsa, o);
        KirExpr *scale = fdiv(L, val_flat(kb, c->gnode, o), kir_op1(P, KX_SQRT, ns));
        KirExpr *proj = fdiv(L, kir_load(P, kb->fn, dota, o), ns);
        kir_store(P, kb->fn, in, dva, idx, fmul(L, scale, fsub(L, dw, fmul(L, proj, v))));
    }
}

/* ---- reductions ---------------------------------------------------------------------------------- */

typedef struct RedCtx {
    int node;      /* BIAS_GRAD or CLASS_BIAS_DHW */
    int src;       /* dy node */
    int out, acc;  /* F32 output, F64 scratch */
    int64_t C, classes;
} RedCtx;

static void build_reduce(KB *kb, void *vctx) {
    RedCtx *c = vctx;
    Lower *L = kb->L;
    const Node *nd = ND(L, c->node), *src = ND(L, c->src);
    kb_note(kb, c->node);
    int64_t nout = c->classes > 0 ? c->classes * c->C : c->C;
    int acc = kb_arg(kb, c->acc, true, "acc");
    zero_loop(kb, acc, nout, KT_F64);
    int H = (int)src->shape.d[0], W = (int)src->shape.d[1];
    KirStmt *lr = kir_loop(P, kb->fn, NULL, ic(L, 0), imulc(L, kir_batch(P), H), KIR_LOOP_REDUCE);
    KirExpr *r = kir_var(P, kir_loop_var(lr));
    KirStmt *lj = kir_loop(P, kb->fn, lr, ic(L, 0), ic(L, W), KIR_LOOP_REDUCE);
    kb->H = H, kb->W = W;
    kb->img = idiv(L, r, ic(L, H));
    kb->ii = imod(L, r, ic(L, H));
    kb->jj = kir_var(P, kir_loop_var(lj));
    kb->row = r;
    KirExpr *rowbase = ic(L, 0);
    if (c->classes > 0) {
        KirExpr *lab = val_flat(kb, nd->in[1], kb->img);
        lab = kir_op2(P, KX_MIN, kir_op2(P, KX_MAX, lab, ic(L, 0)), ic(L, c->classes - 1));
        rowbase = imulc(L, lab, c->C);
    }
    int64_t seg[258];
    int ns = segments(L, c->src, c->C, seg);
    for (int s = 0; s < ns; s++) {
        KirStmt *lc = kir_loop(P, kb->fn, lj, ic(L, seg[s]), ic(L, seg[s + 1]), 0);
        KirExpr *ch = kir_var(P, kir_loop_var(lc));
        kir_accum(P, kb->fn, lc, acc, iadd(L, rowbase, ch), kir_cast(P, KT_F64, val(kb, c->src, ch, seg[s])));
    }
    int o = kb_arg(kb, c->out, true, "y");
    KirStmt *lo = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, nout), 0);
    KirExpr *i = kir_var(P, kir_loop_var(lo));
    kir_store(P, kb->fn, lo, o, i, kir_cast(P, KT_F32, kir_load(P, kb->fn, acc, i)));
}

/* ---- zero fill -------------------------------------------------------------------------------------- */

typedef struct ZeroCtx {
    int buf;
    int64_t count;
} ZeroCtx;

static void build_zero(KB *kb, void *vctx) {
    ZeroCtx *z = vctx;
    Lower *L = kb->L;
    int a = kb_arg(kb, z->buf, true, "y");
    KirStmt *l = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, z->count), KIR_LOOP_PARALLEL);
    kir_store(P, kb->fn, l, a, kir_var(P, kir_loop_var(l)), fc(L, 0));
}

/* ---- the discretized logistic mixture -------------------------------------------------------------- */

typedef struct DmolCtx {
    int node;              /* DMOL_NLL */
    int l, x;              /* buffers of l [n,H,W,K] and x [n,H,W,C] */
    int nll, dl;           /* outputs, -1 when not stored */
    int part;              /* KB_STACK F64 [NCHUNK] */
    int dnll_node;         /* scale of dl (a constant 1 in training) or -1 */
    int H, W, C, M;
} DmolCtx;

typedef struct SigPair {
    KirExpr *pos, *neg, *softplus;   /* sigma(v), sigma(-v), softplus(v) */
} SigPair;

static SigPair sig_pair(KB *kb, KirStmt *into, KirExpr *v) {
    Lower *L = kb->L;
    KirExpr *e = kb_let(kb, into, fexp(L, fneg(L, kir_op1(P, KX_ABS, v))));
    KirExpr *big = kb_let(kb, into, fdiv(L, fc(L, 1), fadd(L, fc(L, 1), e)));   /* sigma(|v|) */
    KirExpr *small = kb_let(kb, into, fmul(L, e, big));                          /* sigma(-|v|) */
    KirExpr *nonneg = cmp(L, KX_GE, v, fc(L, 0));
    SigPair sp;
    sp.pos = kb_let(kb, into, fsel(L, nonneg, big, small));
    sp.neg = kb_let(kb, into, fsel(L, nonneg, small, big));
    sp.softplus = kb_let(kb, into, fadd(L, kir_op2(P, KX_MAX, v, fc(L, 0)), kir_op1(P, KX_LOG1P, e)));
    return sp;
}

static void build_dmol(KB *kb, void *vctx) {
    DmolCtx *c = vctx;
    Lower *L = kb->L;
    KirFunc *fn = kb->fn;
    int M = c->M, C = c->C, K = C == 3 ? 10 * M : 3 * M;
    kb_note(kb, c->node);
    int la = kb_arg(kb, c->l, false, "l"), xa = kb_arg(kb, c->x, false, "x");
    int nlla = c->nll >= 0 ? kb_arg(kb, c->nll, true, "nll") : -1;
    int dla = c->dl >= 0 ? kb_arg(kb, c->dl, true, "dl") : -1;
    int parta = kb_arg(kb, c->part, true, "part");
    int lp = kb_array(kb, KT_F32, M);                 /* log pi_k + sum_c log P_ck */
    int dmu = kb_array(kb, KT_F32, M * C), dls = kb_array(kb, KT_F32, M * C);  /* d lp_ck / d mu_ck, / d raw s_ck */
    int acc = kb_local(kb, KT_F64, 1), mx = kb_local(kb, KT_F32, 1), sm = kb_local(kb, KT_F32, 1);

    /* chunks of pixels in parallel: t in [0, NCHUNK): p in [t*NP/NCHUNK, (t+1)*NP/NCHUNK) */
    KirStmt *lt = kir_loop(P, fn, NULL, ic(L, 0), ic(L, NCHUNK), KIR_LOOP_PARALLEL);
    KirExpr *t = kir_var(P, kir_loop_var(lt));
    KirExpr *np = imulc(L, kir_batch(P), (int64_t)c->H * c->W);
    kir_set(P, fn, lt, acc, NULL, kir_const_f64(P, 0));
    KirStmt *lp_ = kir_loop(P, fn, lt, idiv(L, imul(L, t, np), ic(L, NCHUNK)), idiv(L, imul(L, iaddc(L, t, 1), np), ic(L, NCHUNK)), 0);
    KirExpr *p = kir_var(P, kir_loop_var(lp_));
    KirExpr *lbase = imulc(L, p, K), *xbase = imulc(L, p, C);
#define LD(off) kir_load(P, fn, la, iadd(L, lbase, (off)))
#define LOC(l, i) kir_local(P, fn, (l), (i))

    /* log-softmax of the mixture logits */
    kir_set(P, fn, lp_, mx, NULL, fc(L, -INFINITY));
    KirStmt *lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
    KirExpr *k = kir_var(P, kir_loop_var(lk));
    kir_set(P, fn, lk, mx, NULL, kir_op2(P, KX_MAX, LOC(mx, NULL), LD(k)));
    kir_set(P, fn, lp_, sm, NULL, fc(L, 0));
    lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
    k = kir_var(P, kir_loop_var(lk));
    kir_set(P, fn, lk, sm, NULL, fadd(L, LOC(sm, NULL), fexp(L, fsub(L, LD(k), LOC(mx, NULL)))));
    KirExpr *lse_pi = kb_let(kb, lp_, fadd(L, LOC(mx, NULL), kir_op1(P, KX_LOG, LOC(sm, NULL))));

    /* observed values of this pixel */
    KirExpr *xv[3];
    for (int ch = 0; ch < C; ch++) xv[ch] = kb_let(kb, lp_, kir_load(P, fn, xa, iaddc(L, xbase, ch)));

    /* per component */
    lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
    k = kir_var(P, kir_loop_var(lk));
    KirExpr *sum = fsub(L, LD(k), lse_pi);
    for (int ch = 0; ch < C; ch++) {
        int base = C == 3 ? M + 3 * M * ch : M + M * ch;
        int lsoff = C == 3 ? base + M : 2 * M;
        KirExpr *mu = LD(iaddc(L, k, base));
        if (C == 3 && ch == 1) {
            KirExpr *alpha = kir_op1(P, KX_TANH, LD(iaddc(L, k, M + 2 * M)));
            mu = fadd(L, mu, fmul(L, alpha, xv[0]));
        } else if (C == 3 && ch == 2) {
            KirExpr *beta = kir_op1(P, KX_TANH, LD(iaddc(L, k, M + 3 * M + 2 * M)));
            KirExpr *gamma = kir_op1(P, KX_TANH, LD(iaddc(L, k, M + 6 * M + 2 * M)));
            mu = fadd(L, fadd(L, mu, fmul(L, beta, xv[0])), fmul(L, gamma, xv[1]));
        }
        mu = kb_let(kb, lk, mu);
        KirExpr *raw_s = kb_let(kb, lk, LD(iaddc(L, k, lsoff)));
        KirExpr *s = kb_let(kb, lk, kir_op2(P, KX_MAX, raw_s, fc(L, -7)));
        KirExpr *cen = kb_let(kb, lk, fsub(L, xv[ch], mu));
        KirExpr *inv = kb_let(kb, lk, fexp(L, fneg(L, s)));
        KirExpr *plus = kb_let(kb, lk, fmul(L, inv, fadd(L, cen, fc(L, 1.0 / 255))));
        KirExpr *minus = kb_let(kb, lk, fmul(L, inv, fsub(L, cen, fc(L, 1.0 / 255))));
        KirExpr *mid = kb_let(kb, lk, fmul(L, inv, cen));
        /* sigmoids and softplus from one exp each: with e = exp(-|v|), sigma(|v|) = 1/(1+e),
         * sigma(-|v|) = e/(1+e), softplus(v) = max(v,0) + log1p(e); the bin mass d is taken
         * as a difference of the small tails, never of two values near 1 */
        SigPair P1 = sig_pair(kb, lk, plus), P2 = sig_pair(kb, lk, minus), P3 = sig_pair(kb, lk, mid);
        /* the bin mass without cancellation: sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(-(a-b))),
         * a - b = inv 2/255, and 1 - exp(-t) = -expm1(-t) by Kahan's (u-1) t / log u, u = exp(-t) */
        KirExpr *delta = kb_let(kb, lk, fmul(L, inv, fc(L, 2.0 / 255)));
        KirExpr *u = kb_let(kb, lk, fexp(L, fneg(L, delta)));
        KirExpr *em = kb_let(kb, lk, fsel(L, cmp(L, KX_EQ, u, fc(L, 1)), delta,
                                          fdiv(L, fmul(L, fsub(L, fc(L, 1), u), delta), fneg(L, kir_op1(P, KX_LOG, u)))));
        KirExpr *d = kb_let(kb, lk, fmul(L, fmul(L, P1.pos, P2.neg), em));
        KirExpr *is_lo = cmp(L, KX_LT, xv[ch], fc(L, -0.999));
        KirExpr *is_hi = cmp(L, KX_GT, xv[ch], fc(L, 0.999));
        KirExpr *is_mid = cmp(L, KX_GT, d, fc(L, 1e-5));
        KirExpr *lp_lo = fsub(L, plus, P1.softplus);
        KirExpr *lp_hi = fneg(L, P2.softplus);
        KirExpr *lp_mid = kir_op1(P, KX_LOG, kir_op2(P, KX_MAX, d, fc(L, 1e-12)));
        KirExpr *lp_tiny = fsub(L, fsub(L, fsub(L, mid, s), fmul(L, fc(L, 2), P3.softplus)), fc(L, log(127.5)));
        KirExpr *lpc = fsel(L, is_lo, lp_lo, fsel(L, is_hi, lp_hi, fsel(L, is_mid, lp_mid, lp_tiny)));
        sum = fadd(L, sum, lpc);
        if (dla >= 0) {
            /* d lp / d mu and d lp / d s per branch (a = plus, b = minus, m = mid):
             *   low edge  lp = log sigma(a):        mu: -inv sigma(-a)             s: -a sigma(-a)
             *   high edge lp = log sigma(-b):       mu:  inv sigma(b)              s:  b sigma(b)
             *   interior  lp = log sigma(a) + log sigma(-b) + log(1 - exp(-delta)):
             *                                       mu: -inv (sigma(-a) - sigma(b))
             *                                       s:  -a sigma(-a) + b sigma(b) - delta exp(-delta) / (1 - exp(-delta))
             *   density   lp = m - s - 2 softplus(m) - log 127.5:
             *                                       mu: -inv (sigma(-m) - sigma(m))  s: -m (sigma(-m) - sigma(m)) - 1 */
            KirExpr *aa = fmul(L, plus, P1.neg), *bb = fmul(L, minus, P2.pos);
            KirExpr *gm = fsub(L, P3.neg, P3.pos);
            KirExpr *dmu_v = fsel(L, is_lo, fneg(L, fmul(L, inv, P1.neg)),
                                  fsel(L, is_hi, fmul(L, inv, P2.pos),
                                       fsel(L, is_mid, fneg(L, fmul(L, inv, fsub(L, P1.neg, P2.pos))),
                                            fneg(L, fmul(L, inv, gm)))));
            KirExpr *ds = fsel(L, is_lo, fneg(L, aa),
                               fsel(L, is_hi, bb,
                                    fsel(L, is_mid, fsub(L, fsub(L, bb, aa), fdiv(L, fmul(L, delta, u), em)),
                                         fsub(L, fneg(L, fmul(L, mid, gm)), fc(L, 1)))));
            ds = fsel(L, cmp(L, KX_GT, raw_s, fc(L, -7)), ds, fc(L, 0));
            KirExpr *ix = iaddc(L, imulc(L, k, C), ch);
            kir_set(P, fn, lk, dmu, ix, dmu_v);
            kir_set(P, fn, lk, dls, ix, ds);
        }
    }
    kir_set(P, fn, lk, lp, k, sum);

    /* nll = -logsumexp_k lp_k */
    kir_set(P, fn, lp_, mx, NULL, fc(L, -INFINITY));
    lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
    k = kir_var(P, kir_loop_var(lk));
    kir_set(P, fn, lk, mx, NULL, kir_op2(P, KX_MAX, LOC(mx, NULL), LOC(lp, k)));
    kir_set(P, fn, lp_, sm, NULL, fc(L, 0));
    lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
    k = kir_var(P, kir_loop_var(lk));
    kir_set(P, fn, lk, sm, NULL, fadd(L, LOC(sm, NULL), fexp(L, fsub(L, LOC(lp, k), LOC(mx, NULL)))));
    KirExpr *lse = kb_let(kb, lp_, fadd(L, LOC(mx, NULL), kir_op1(P, KX_LOG, LOC(sm, NULL))));
    KirExpr *nll = fneg(L, lse);
    kir_set(P, fn, lp_, acc, NULL, fadd(L, LOC(acc, NULL), kir_cast(P, KT_F64, nll)));
    if (nlla >= 0) kir_store(P, fn, lp_, nlla, p, nll);

    if (dla >= 0) {
        /* d nll / d logit_k = pi_k - r_k;  d nll / d lp_ck = -r_k */
        KirExpr *scale = fc(L, 1);
        if (c->dnll_node >= 0 && L->val[c->dnll_node].kind != NV_CONST) {
            kb->img = idiv(L, p, ic(L, (int64_t)c->H * c->W));
            kb->ii = idiv(L, imod(L, p, ic(L, (int64_t)c->H * c->W)), ic(L, c->W));
            kb->jj = imod(L, p, ic(L, c->W));
            kb->H = c->H, kb->W = c->W;
            scale = kb_let(kb, lp_, val(kb, c->dnll_node, ic(L, 0), 0));
        } else if (c->dnll_node >= 0) {
            scale = fc(L, L->val[c->dnll_node].c);
        }
        lk = kir_loop(P, fn, lp_, ic(L, 0), ic(L, M), 0);
        k = kir_var(P, kir_loop_var(lk));
        KirExpr *rk = kb_let(kb, lk, fexp(L, fsub(L, LOC(lp, k), lse)));
        KirExpr *pik = fexp(L, fsub(L, LD(k), lse_pi));
        KirExpr *nr = kb_let(kb, lk, fmul(L, fneg(L, rk), scale));   /* d loss / d lp_k */
        kir_store(P, fn, lk, dla, iadd(L, lbase, k), fmul(L, fsub(L, pik, rk), scale));
        for (int ch = 0; ch < C; ch++) {
            int base = C == 3 ? M + 3 * M * ch : M + M * ch;
            int lsoff = C == 3 ? base + M : 2 * M;
            KirExpr *ix = iaddc(L, imulc(L, k, C), ch);
            KirExpr *gmu = kb_let(kb, lk, fmul(L, nr, LOC(dmu, ix)));
            kir_store(P, fn, lk, dla, iadd(L, lbase, iaddc(L, k, base)), gmu);
            kir_store(P, fn, lk, dla, iadd(L, lbase, iaddc(L, k, lsoff)), fmul(L, nr, LOC(dls, ix)));
        }
        if (C == 3) {
            /* alpha_k = tanh(raw at M+2M+k) moves mu_G by alpha x_R; beta (M+5M+k) and gamma (M+8M+k) move mu_B */
            KirExpr *gG = fmul(L, nr, LOC(dmu, iaddc(L, imulc(L, k, C), 1)));
            KirExpr *gB = fmul(L, nr, LOC(dmu, iaddc(L, imulc(L, k, C), 2)));
            KirExpr *ta = kir_op1(P, KX_TANH, LD(iaddc(L, k, 3 * M)));
            KirExpr *tb = kir_op1(P, KX_TANH, LD(iaddc(L, k, 6 * M)));
            KirExpr *tg = kir_op1(P, KX_TANH, LD(iaddc(L, k, 9 * M)));
            ta = kb_let(kb, lk, ta), tb = kb_let(kb, lk, tb), tg = kb_let(kb, lk, tg);
            kir_store(P, fn, lk, dla, iadd(L, lbase, iaddc(L, k, 3 * M)),
                      fmul(L, fmul(L, gG, xv[0]), fsub(L, fc(L, 1), fmul(L, ta, ta))));
            kir_store(P, fn, lk, dla, iadd(L, lbase, iaddc(L, k, 6 * M)),
                      fmul(L, fmul(L, gB, xv[0]), fsub(L, fc(L, 1), fmul(L, tb, tb))));
            kir_store(P, fn, lk, dla, iadd(L, lbase, iaddc(L, k, 9 * M)),
                      fmul(L, fmul(L, gB, xv[1]), fsub(L, fc(L, 1), fmul(L, tg, tg))));
        }
    }
    kir_store(P, fn, lt, parta, t, LOC(acc, NULL));
#undef LD
#undef LOC
}

/* The 256-way softmax per sub-pixel (same context and chunking as the
 * mixture): nll = sum_c logsumexp(z_c) - z_c[v_c], v_c = round((x_c+1) 127.5)
 * clamped to [0,255], picked by comparing against every j (no float-to-int
 * conversion in the IR); dl_j = dnll (softmax_j - [j == v_c]). */
static void build_softmax(KB *kb, void *vctx) {
    DmolCtx *c = vctx;
    Lower *L = kb->L;
    KirFunc *fn = kb->fn;
    int C = c->C, K = 256 * C;
    kb_note(kb, c->node);
    int la = kb_arg(kb, c->l, false, "l"), xa = kb_arg(kb, c->x, false, "x");
    int nlla = c->nll >= 0 ? kb_arg(kb, c->nll, true, "nll") : -1;
    int dla = c->dl >= 0 ? kb_arg(kb, c->dl, true, "dl") : -1;
    int parta = kb_arg(kb, c->part, true, "part");
    int acc = kb_local(kb, KT_F64, 1), mx = kb_local(kb, KT_F32, 1), sm = kb_local(kb, KT_F32, 1);
    int tg = kb_local(kb, KT_F32, 1), nl = kb_local(kb, KT_F32, 1);
    KirStmt *lt = kir_loop(P, fn, NULL, ic(L, 0), ic(L, NCHUNK), KIR_LOOP_PARALLEL);
    KirExpr *t = kir_var(P, kir_loop_var(lt));
    KirExpr *np = imulc(L, kir_batch(P), (int64_t)c->H * c->W);
    kir_set(P, fn, lt, acc, NULL, kir_const_f64(P, 0));
    KirStmt *lp_ = kir_loop(P, fn, lt, idiv(L, imul(L, t, np), ic(L, NCHUNK)), idiv(L, imul(L, iaddc(L, t, 1), np), ic(L, NCHUNK)), 0);
    KirExpr *p = kir_var(P, kir_loop_var(lp_));
    kir_set(P, fn, lp_, nl, NULL, fc(L, 0));
    for (int ch = 0; ch < C; ch++) {
        KirExpr *zb = iaddc(L, imulc(L, p, K), 256 * ch);
        KirExpr *tv = fmul(L, fadd(L, kir_load(P, fn, xa, iaddc(L, imulc(L, p, C), ch)), fc(L, 1)), fc(L, 127.5));
        tv = kb_let(kb, lp_, kir_op2(P, KX_MIN, kir_op2(P, KX_MAX, tv, fc(L, 0)), fc(L, 255)));
        kir_set(P, fn, lp_, mx, NULL, fc(L, -INFINITY));
        kir_set(P, fn, lp_, tg, NULL, fc(L, 0));
        KirStmt *lj = kir_loop(P, fn, lp_, ic(L, 0), ic(L, 256), 0);
        KirExpr *j = kir_var(P, kir_loop_var(lj));
        KirExpr *z = kir_load(P, fn, la, iadd(L, zb, j));
        KirExpr *hit = cmp(L, KX_LT, kir_op1(P, KX_ABS, fsub(L, tv, kir_cast(P, KT_F32, j))), fc(L, 0.5));
        kir_set(P, fn, lj, mx, NULL, kir_op2(P, KX_MAX, kir_local(P, fn, mx, NULL), z));
        kir_set(P, fn, lj, tg, NULL, fadd(L, kir_local(P, fn, tg, NULL), fsel(L, hit, z, fc(L, 0))));
        kir_set(P, fn, lp_, sm, NULL, fc(L, 0));
        lj = kir_loop(P, fn, lp_, ic(L, 0), ic(L, 256), 0);
        j = kir_var(P, kir_loop_var(lj));
        z = kir_load(P, fn, la, iadd(L, zb, j));
        kir_set(P, fn, lj, sm, NULL, fadd(L, kir_local(P, fn, sm, NULL), fexp(L, fsub(L, z, kir_local(P, fn, mx, NULL)))));
        KirExpr *lse = kb_let(kb, lp_, fadd(L, kir_local(P, fn, mx, NULL), kir_op1(P, KX_LOG, kir_local(P, fn, sm, NULL))));
        kir_set(P, fn, lp_, nl, NULL, fadd(L, kir_local(P, fn, nl, NULL), fsub(L, lse, kir_local(P, fn, tg, NULL))));
        if (dla >= 0) {
            KirExpr *scale = c->dnll_node >= 0 ? fc(L, L->val[c->dnll_node].c) : fc(L, 1);
            lj = kir_loop(P, fn, lp_, ic(L, 0), ic(L, 256), 0);
            j = kir_var(P, kir_loop_var(lj));
            z = kir_load(P, fn, la, iadd(L, zb, j));
            hit = cmp(L, KX_LT, kir_op1(P, KX_ABS, fsub(L, tv, kir_cast(P, KT_F32, j))), fc(L, 0.5));
            KirExpr *g = fsub(L, fexp(L, fsub(L, z, lse)), fsel(L, hit, fc(L, 1), fc(L, 0)));
            kir_store(P, fn, lj, dla, iadd(L, zb, j), fmul(L, scale, g));
        }
    }
    KirExpr *nll = kir_local(P, fn, nl, NULL);
    kir_set(P, fn, lp_, acc, NULL, fadd(L, kir_local(P, fn, acc, NULL), kir_cast(P, KT_F64, nll)));
    if (nlla >= 0) kir_store(P, fn, lp_, nlla, p, nll);
    kir_store(P, fn, lt, parta, t, kir_local(P, fn, acc, NULL));
}

/* ret = sum of the NCHUNK partial sums */
typedef struct SumCtx {
    int part, ret;
} SumCtx;

static void build_sum(KB *kb, void *vctx) {
    SumCtx *s = vctx;
    Lower *L = kb->L;
    int pa = kb_arg(kb, s->part, false, "part"), ra = kb_arg(kb, s->ret, true, "ret");
    int acc = kb_local(kb, KT_F64, 1);
    kir_set(P, kb->fn, NULL, acc, NULL, kir_const_f64(P, 0));
    KirStmt *l = kir_loop(P, kb->fn, NULL, ic(L, 0), ic(L, NCHUNK), 0);
    kir_set(P, kb->fn, l, acc, NULL,
            fadd(L, kir_local(P, kb->fn, acc, NULL), kir_load(P, kb->fn, pa, kir_var(P, kir_loop_var(l)))));
    kir_store(P, kb->fn, NULL, ra, ic(L, 0), kir_local(P, kb->fn, acc, NULL));
}

/* ---- data-dependent init: statistics, g and b, rescale -------------------------------------------- */

typedef struct InitCtx {
    int node;          /* the conv2d / deconv2d */
    int y;             /* its output without bias, g = 1 (rescaled in place) */
    int gbuf, bbuf;    /* KB_PARAMS buffers of g and b */
    int acc;           /* F64 scratch [2*O] */
    int64_t pixels, O; /* pixels per image, channels */
    float scale;
    bool add_bias;     /* deconv: y becomes y*g + b; conv: y*g (readers add b) */
} InitCtx;

static void build_init(KB *kb, void *vctx) {
    InitCtx *c = vctx;
    Lower *L = kb->L;
    KirFunc *fn = kb->fn;
    kb_note(kb, c->node);
    int ya = kb_arg(kb, c->y, true, "y"), ga = kb_arg(kb, c->gbuf, true, "g"), ba = kb_arg(kb, c->bbuf, true, "b");
    int acc = kb_arg(kb, c->acc, true, "acc");
    int64_t O = c->O;
    zero_loop(kb, acc, 2 * O, KT_F64);
    KirExpr *np = imulc(L, kir_batch(P), c->pixels);
    KirExpr *count = kir_cast(P, KT_F64, np);
    /* mean */
    KirStmt *lp = kir_loop(P, fn, NULL, ic(L, 0), np, KIR_LOOP_REDUCE);
    KirStmt *lo = kir_loop(P, fn, lp, ic(L, 0), ic(L, O), 0);
    KirExpr *p = kir_var(P, kir_loop_var(lp)), *o = kir_var(P, kir_loop_var(lo));
    KirExpr *y = kir_load(P, fn, ya, iadd(L, imulc(L, p, O), o));
    kir_accum(P, fn, lo, acc, o, kir_cast(P, KT_F64, y));
    lo = kir_loop(P, fn, NULL, ic(L, 0), ic(L, O), 0);
    o = kir_var(P, kir_loop_var(lo));
    kir_store(P, fn, lo, acc, o, fdiv(L, kir_load(P, fn, acc, o), count));
    /* variance about the mean */
    lp = kir_loop(P, fn, NULL, ic(L, 0), np, KIR_LOOP_REDUCE);
    lo = kir_loop(P, fn, lp, ic(L, 0), ic(L, O), 0);
    p = kir_var(P, kir_loop_var(lp)), o = kir_var(P, kir_loop_var(lo));
    y = kir_load(P, fn, ya, iadd(L, imulc(L, p, O), o));
    KirExpr *d = kb_let(kb, lo, fsub(L, kir_cast(P, KT_F64, y), kir_load(P, fn, acc, o)));
    kir_accum(P, fn, lo, acc, iaddc(L, o, O), fmul(L, d, d));
    /* g = scale / sqrt(var + 1e-10), b = -mean g */
    lo = kir_loop(P, fn, NULL, ic(L, 0), ic(L, O), 0);
    o = kir_var(P, kir_loop_var(lo));
    KirExpr *var = kir_cast(P, KT_F32, fdiv(L, kir_load(P, fn, acc, iaddc(L, o, O)), count));
    KirExpr *gg = kb_let(kb, lo, fdiv(L, fc(L, c->scale), kir_op1(P, KX_SQRT, fadd(L, var, fc(L, 1e-10)))));
    kir_store(P, fn, lo, ga, o, gg);
    kir_store(P, fn, lo, ba, o, fneg(L, fmul(L, kir_cast(P, KT_F32, kir_load(P, fn, acc, o)), gg)));
    /* recompute the layer: conv(x, g v/|v|) = g conv(x, v/|v|) */
    lp = kir_loop(P, fn, NULL, ic(L, 0), np, KIR_LOOP_PARALLEL);
    lo = kir_loop(P, fn, lp, ic(L, 0), ic(L, O), 0);
    p = kir_var(P, kir_loop_var(lp)), o = kir_var(P, kir_loop_var(lo));
    KirExpr *idx = iadd(L, imulc(L, p, O), o);
    KirExpr *ny = fmul(L, kir_load(P, fn, ya, idx), kir_load(P, fn, ga, o));
    if (c->add_bias) ny = fadd(L, ny, kir_load(P, fn, ba, o));
    kir_store(P, fn, lp->body[0], ya, idx, ny);
}

/* conv2d / deconv2d whose weight is wnorm(v, g PARAM) with a PARAM bias:
 * the layers the init entry initialises. */
static bool is_init_layer(const Lower *L, int i) {
    const Node *nd = ND(L, i);
    if ((nd->op != IR_CONV2D && nd->op != IR_DECONV2D) || nd->nin < 3) return false;
    const Node *w = ND(L, nd->in[1]);
    return w->op == IR_WNORM && ND(L, w->in[1])->op == IR_PARAM && ND(L, nd->in[2])->op == IR_PARAM;
}

static void run_init(Lower *L, int i, int y, bool add_bias, const char *note) {
    const Node *nd = ND(L, i);
    int O = (int)nd->shape.d[2];
    int acc = kir_buf(P, "init statistics", KB_ARENA, KT_F64, 0, 0, 16LL * O, 0, i);
    InitCtx c = {i, y, L->param_buf[ND(L, nd->in[1])->in[1]], L->param_buf[nd->in[2]], acc,
                 nd->shape.d[0] * nd->shape.d[1], O, nd->a.init_scale != 0 ? (float)nd->a.init_scale : 1.0f, add_bias};
    emit_kernel(L, "init_layer", build_init, &c, note);
}

/* ---- one MAT node ------------------------------------------------------------------------------------ */

static void unsupported(Lower *L, int i, const char *why) {
    diag_error(L->dl, ND(L, i)->loc, "the kernel back end does not support %s (%s)", ir_op(ND(L, i)->op)->name, why);
    L->failed = true;
}

static bool no_pad(const Attrs *a) { return a->pad_t == 0 && a->pad_l == 0 && a->pad_r == 0 && a->pad_b == 0; }

static GemmCtx gemm_ctx(int a, int b, int c, int note_node) {
    GemmCtx g;
    memset(&g, 0, sizeof g);
    g.a = a, g.b = b, g.c = c, g.note_node = note_node;
    return g;
}

static void emit_conv(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int x = nd->in[0], b = nd->nin > 2 ? nd->in[2] : -1;
    const Shape *xs = &ND(L, x)->shape;
    int64_t C = xs->d[2], Ho = nd->shape.d[0], Wo = nd->shape.d[1], O = nd->shape.d[2];
    int64_t K2 = (int64_t)a->kh * a->kw * C;
    int wb = weight_buf(L, nd->in[1], i);
    if (wb < 0) return;
    bool init = L->entry == KE_INIT && is_init_layer(L, i);
    int A;
    int64_t lda;
    bool direct = direct_conv(L, a, O);
    const WinoAlg *wino = winograd(L, a, xs, &nd->shape);
    if (wino) {
        A = -1, lda = 0;
    } else if (direct) {
        A = pad_pack(L, x, a, Ho, Wo, i, note), lda = 0;
    } else if (a->kh == 1 && a->kw == 1 && a->stride == 1 && no_pad(a) && L->val[x].kind == NV_BUF) {
        A = L->val[x].buf, lda = C;
    } else {
        PackGeo g = {(int)Ho, (int)Wo, a->kh, a->kw, a->stride, a->pad_t, a->pad_l, (int)xs->d[0], (int)xs->d[1], 0};
        A = pack(L, x, &g, i, note), lda = K2;
    }
    bool to_out = L->entry == KE_FORWARD && i == L->g->out;
    /* conv + conv summed and read nowhere else (a gated resnet's conv1 + nin):
     * the second GEMM accumulates into the first's output (beta 1) */
    int sum = L->nuses[i] == 1 ? L->user[i] : -1, other = -1;
    if (sum >= 0 && !init && !to_out && ND(L, sum)->op == IR_ADD && sum != L->g->out) {
        other = ND(L, sum)->in[0] == i ? ND(L, sum)->in[1] : ND(L, sum)->in[0];
        const NodeVal *ov = &L->val[other];
        if (other == i || ND(L, other)->op != IR_CONV2D || L->nuses[other] != 1 || ov->kind != NV_RAW ||
            ov->nbias + (b >= 0) > 2 || !shape_eq(ND(L, other)->shape, nd->shape) || L->val[sum].kind == NV_BUF)
            other = -1;
    }
    if (other >= 0) {
        NodeVal *ov = &L->val[other];
        if (wino) {
            wino_forward(L, wino, i, wb, ov->buf, 1, note);
        } else if (direct) {
            ConvCtx cc = conv_ctx(KIR_CONV_FORWARD, A, wb, ov->buf, a, xs->d[0], xs->d[1], Ho, Wo, C, O, 1, i);
            emit_kernel(L, "conv", build_conv, &cc, note);
        } else {
            GemmCtx gc = gemm_ctx(A, wb, ov->buf, i);
            gc.m_per_image = Ho * Wo, gc.N = O, gc.K_const = K2, gc.lda = lda, gc.ldb = O, gc.ldc = O, gc.beta = 1;
            gemm(L, gc, note);
        }
        NodeVal *sv = &L->val[sum];
        *sv = *ov;
        if (b >= 0) sv->bias[sv->nbias++] = b;
        L->val[i].kind = NV_ABSORBED;
        L->val[other].kind = NV_ABSORBED;
        return;
    }
    int out = to_out ? L->out_buf : value_buf(L, i, "raw");
    float beta = 0;
    if (to_out && b >= 0) {
        FillCtx f = {out, b, Ho * Wo, O};
        emit_kernel(L, "fill_bias", build_fill_bias, &f, note);
        beta = 1;
    }
    if (wino) {
        wino_forward(L, wino, i, wb, out, beta, note);
    } else if (direct) {
        ConvCtx cc = conv_ctx(KIR_CONV_FORWARD, A, wb, out, a, xs->d[0], xs->d[1], Ho, Wo, C, O, beta, i);
        emit_kernel(L, "conv", build_conv, &cc, note);
    } else {
        GemmCtx gc = gemm_ctx(A, wb, out, i);
        gc.m_per_image = Ho * Wo, gc.N = O, gc.K_const = K2, gc.lda = lda, gc.ldb = O, gc.ldc = O, gc.beta = beta;
        gemm(L, gc, note);
    }
    NodeVal *v = &L->val[i];
    v->buf = out;
    if (init) run_init(L, i, out, false, note);
    if (b >= 0 && !to_out) {
        v->kind = NV_RAW, v->nbias = 1, v->bias[0] = b;
    } else {
        v->kind = NV_BUF;
    }
}

static void emit_deconv(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int x = nd->in[0], b = nd->nin > 2 ? nd->in[2] : -1;
    const Shape *xs = &ND(L, x)->shape;
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2], O = nd->shape.d[2], K2 = (int64_t)a->kh * a->kw * O;
    int wb = weight_buf(L, nd->in[1], i);
    if (wb < 0) return;
    bool init = L->entry == KE_INIT && is_init_layer(L, i);
    int A = dense(L, x, i, note);
    int col = new_arena_buf(L, "columns", i, 4 * H * W * K2, true);
    GemmCtx gc = gemm_ctx(A, wb, col, i);
    gc.tb = true, gc.m_per_image = H * W, gc.N = K2, gc.K_const = C, gc.lda = C, gc.ldb = C, gc.ldc = K2;
    gemm(L, gc, note);
    int out = (L->entry == KE_FORWARD && i == L->g->out) ? L->out_buf : value_buf(L, i, NULL);
    GatherCtx g = {col, out, init ? -1 : b, (int)(2 * H), (int)(2 * W), (int)H, (int)W, a->kh, a->kw, 2, 0,
                   a->crop_l, O, i};
    emit_kernel(L, "col2im", build_gather, &g, note);
    if (init) run_init(L, i, out, true, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = out;
}

static void emit_conv_dx(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int dy = nd->in[0];
    const Shape *ds = &ND(L, dy)->shape;
    int64_t Ho = ds->d[0], Wo = ds->d[1], O = ds->d[2];
    int64_t H = nd->shape.d[0], W = nd->shape.d[1], C = nd->shape.d[2], K2 = (int64_t)a->kh * a->kw * C;
    int wb = weight_buf(L, nd->in[1], i);
    if (wb < 0) return;
    const WinoAlg *al = winograd(L, a, &nd->shape, ds);
    if (al) {
        /* dV_k = the forward convolution of dM_k (zero rows where dy's rows
         * end) with U_k's rows flipped; dx gathers dV's tiles */
        Attrs fa = *a;
        fa.pad_t = a->kh - 1 - a->pad_t, fa.pad_b = a->kh - 1 - a->pad_b;
        int64_t T = (Wo + 3) / 4;
        int D = wino_dy(L, al, dy, a, i, note);
        int U = wino_bufs(L, al->nk, "winograd flipped weight", i, 4LL * a->kh * C * O, false);
        WinoWCtx wc = {al, wb, U, a->kh, C, O, true, i};
        emit_kernel(L, "pack_weight", build_wino_w, &wc, note);
        int dV = wino_bufs(L, al->nk, "winograd input gradient", i, 4 * H * T * C, true);
        wino_convs(L, al->nk, KIR_CONV_FORWARD, D, U, dV, &fa, Ho, H, T, O, C, 0, 0, i, note);
        int out = value_buf(L, i, NULL);
        WinoDxCtx xc = {al, dV, out, H, W, T, C, a->pad_l, i};
        emit_kernel(L, "pack_winograd_dx", build_wino_dx, &xc, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = out;
        return;
    }
    if (direct_conv(L, a, O) && C % 16 == 0) {
        /* the gather form: dx = a forward convolution of dy, zero-bordered on
         * the opposite sides, with the flipped, transposed weight */
        Attrs fa = *a;
        fa.pad_t = a->kh - 1 - a->pad_t, fa.pad_b = a->kh - 1 - a->pad_b;
        fa.pad_l = a->kw - 1 - a->pad_l, fa.pad_r = a->kw - 1 - a->pad_r;
        int Dp = pad_pack(L, dy, &fa, H, W, i, note);
        int wt = new_arena_buf(L, "flipped weight", i, 4LL * a->kh * a->kw * C * O, false);
        FlipCtx fl = {wb, wt, (int64_t)a->kh * a->kw, C, O, i};
        emit_kernel(L, "pack_weight", build_wflip, &fl, note);
        int out = value_buf(L, i, NULL);
        ConvCtx cc = conv_ctx(KIR_CONV_FORWARD, Dp, wt, out, &fa, Ho, Wo, H, W, O, C, 0, i);
        emit_kernel(L, "conv", build_conv, &cc, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = out;
        return;
    }
    int D = dense(L, dy, i, note);
    int out = value_buf(L, i, NULL);
    if (a->kh == 1 && a->kw == 1 && a->stride == 1 && no_pad(a)) {
        GemmCtx gc = gemm_ctx(D, wb, out, i);
        gc.tb = true, gc.m_per_image = Ho * Wo, gc.N = C, gc.K_const = O, gc.lda = O, gc.ldb = O, gc.ldc = C;
        gemm(L, gc, note);
    } else {
        int col = new_arena_buf(L, "columns", i, 4 * Ho * Wo * K2, true);
        GemmCtx gc = gemm_ctx(D, wb, col, i);
        gc.tb = true, gc.m_per_image = Ho * Wo, gc.N = K2, gc.K_const = O, gc.lda = O, gc.ldb = O, gc.ldc = K2;
        gemm(L, gc, note);
        GatherCtx g = {col, out, -1, (int)H, (int)W, (int)Ho, (int)Wo, a->kh, a->kw, a->stride, a->pad_t, a->pad_l,
                       C, i};
        emit_kernel(L, "col2im", build_gather, &g, note);
    }
    L->val[i].kind = NV_BUF;
    L->val[i].buf = out;
}

static void emit_conv_dw(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int x = nd->in[0], dy = nd->in[1];
    const Shape *xs = &ND(L, x)->shape, *ds = &ND(L, dy)->shape;
    int64_t C = xs->d[2], Ho = ds->d[0], Wo = ds->d[1], O = ds->d[2], K2 = (int64_t)a->kh * a->kw * C;
    const WinoAlg *al = winograd(L, a, xs, ds);
    if (al) {
        /* dU_k = sum over pixels of V_k x dM_k (dM read in place, between its zero rows); dw = G' dU */
        int64_t T = (Wo + 3) / 4;
        int V = wino_input(L, al, x, a, Ho, Wo, i, note);
        int D = wino_dy(L, al, dy, a, i, note);
        int dU = wino_bufs(L, al->nk, "winograd weight gradient", i, 4LL * a->kh * C * O, false);
        wino_convs(L, al->nk, KIR_CONV_WGRAD, V, dU, D, a, xs->d[0], Ho, T, C, O, a->kh - 1 - a->pad_t, a->pad_t, i,
                   note);
        int out = value_buf(L, i, NULL);
        WinoDwCtx dc = {al, dU, out, a->kh, C, O, i};
        emit_kernel(L, "pack_winograd_dw", build_wino_dw, &dc, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = out;
        return;
    }
    if (direct_conv(L, a, O)) {
        /* dw[a,d,c,o] = sum over pixels of x_padded[pixel + (a,d), c] * dy[pixel, o], x read in place */
        int X = pad_pack(L, x, a, Ho, Wo, i, note);
        int D = dense(L, dy, i, note);
        int out = value_buf(L, i, NULL);
        ConvCtx cc = conv_ctx(KIR_CONV_WGRAD, X, out, D, a, xs->d[0], xs->d[1], Ho, Wo, C, O, 0, i);
        emit_kernel(L, "conv", build_conv, &cc, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = out;
        return;
    }
    int A;
    if (a->kh == 1 && a->kw == 1 && a->stride == 1 && no_pad(a) && L->val[x].kind == NV_BUF) {
        A = L->val[x].buf;
    } else {
        PackGeo g = {(int)Ho, (int)Wo, a->kh, a->kw, a->stride, a->pad_t, a->pad_l, (int)xs->d[0], (int)xs->d[1], 0};
        A = pack(L, x, &g, i, note);
    }
    int D = dense(L, dy, i, note);
    int out = value_buf(L, i, NULL);
    GemmCtx gc = gemm_ctx(A, D, out, i);
    gc.ta = true, gc.m_const = K2, gc.N = O, gc.K_per_image = Ho * Wo, gc.lda = K2, gc.ldb = O, gc.ldc = O;
    gemm(L, gc, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = out;
}

/* The pack of dy that deconv2d_dx and _dw share: col[(i,j), (a,d,o)] = dy[2i+a, 2j+d-crop, o]. */
static int deconv_dy_pack(Lower *L, int i, int dy, int64_t H, int64_t W, const char *note) {
    const Attrs *a = &ND(L, i)->a;
    PackGeo g = {(int)H, (int)W, a->kh, a->kw, 2, 0, a->crop_l, (int)(2 * H), (int)(2 * W), 0};
    return pack(L, dy, &g, i, note);
}

static void emit_deconv_dx(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int dy = nd->in[0];
    int64_t H = nd->shape.d[0], W = nd->shape.d[1], C = nd->shape.d[2], O = ND(L, dy)->shape.d[2];
    int64_t K2 = (int64_t)a->kh * a->kw * O;
    int wb = weight_buf(L, nd->in[1], i);
    if (wb < 0) return;
    int col = deconv_dy_pack(L, i, dy, H, W, note);
    int out = value_buf(L, i, NULL);
    GemmCtx gc = gemm_ctx(col, wb, out, i);
    gc.m_per_image = H * W, gc.N = C, gc.K_const = K2, gc.lda = K2, gc.ldb = C, gc.ldc = C;
    gemm(L, gc, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = out;
}

static void emit_deconv_dw(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    const Attrs *a = &nd->a;
    int x = nd->in[0], dy = nd->in[1];
    const Shape *xs = &ND(L, x)->shape;
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2], O = ND(L, dy)->shape.d[2];
    int64_t K2 = (int64_t)a->kh * a->kw * O;
    int col = deconv_dy_pack(L, i, dy, H, W, note);
    int B = dense(L, x, i, note);
    int out = value_buf(L, i, NULL);
    GemmCtx gc = gemm_ctx(col, B, out, i);
    gc.ta = true, gc.m_const = K2, gc.N = C, gc.K_per_image = H * W, gc.lda = K2, gc.ldb = C, gc.ldc = C;
    gemm(L, gc, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = out;
}

static void emit_wnorm(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    int64_t outer, O, inner;
    wn_dims(&nd->shape, nd->a.axis, &outer, &O, &inner);
    bool g1 = false;
    if (L->entry == KE_INIT)   /* the init entry runs layers it initialises with g = 1 */
        for (int k = i + 1; k < L->g->nfwd && !g1; k++)
            g1 = is_init_layer(L, k) && ND(L, k)->in[1] == i;
    WnCtx c;
    memset(&c, 0, sizeof c);
    c.node = i, c.v = nd->in[0], c.gnode = g1 ? -1 : nd->in[1];
    c.out = value_buf(L, i, NULL);
    c.ns = new_arena_buf(L, "norms", i, 4 * O, false);
    emit_kernel(L, "wnorm", build_wnorm, &c, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = c.out;
}

static void emit_wnorm_bwd(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    int v = nd->in[0], dw = nd->op == IR_WNORM_DV ? nd->in[2] : nd->in[1];
    int dv = -1, dg = -1;
    for (int k = L->g->nfwd; k < L->g->n; k++) {
        const Node *o = ND(L, k);
        if (o->op == IR_WNORM_DV && o->in[0] == v && o->in[2] == dw && L->val[k].kind == NV_NONE) dv = k;
        if (o->op == IR_WNORM_DG && o->in[0] == v && o->in[1] == dw && L->val[k].kind == NV_NONE) dg = k;
    }
    int64_t outer, O, inner;
    wn_dims(&ND(L, v)->shape, nd->a.axis, &outer, &O, &inner);
    WnCtx c;
    memset(&c, 0, sizeof c);
    c.node = i, c.v = v, c.dw = dw, c.gnode = dv >= 0 ? ND(L, dv)->in[1] : -1;
    c.ns = new_arena_buf(L, "norms", i, 4 * O, false);
    c.dot = new_arena_buf(L, "dots", i, 4 * O, false);
    c.dv = dv >= 0 ? value_buf(L, dv, NULL) : -1;
    c.dg = dg >= 0 ? value_buf(L, dg, NULL) : -1;
    emit_kernel(L, "wnorm_bwd", build_wnorm_bwd, &c, note);
    if (dv >= 0) L->val[dv].kind = NV_BUF, L->val[dv].buf = c.dv;
    if (dg >= 0) L->val[dg].kind = NV_BUF, L->val[dg].buf = c.dg;
}

static void emit_reduce(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    RedCtx c;
    memset(&c, 0, sizeof c);
    c.node = i, c.src = nd->in[0];
    c.C = chans(L, c.src);
    c.classes = nd->op == IR_CLASS_BIAS_DHW ? nd->shape.d[0] : 0;
    int64_t nout = c.classes > 0 ? c.classes * c.C : c.C;
    c.out = value_buf(L, i, NULL);
    c.acc = kir_buf(P, "reduction accumulators", KB_ARENA, KT_F64, 0, 0, 8 * nout, 0, i);
    emit_kernel(L, "reduce", build_reduce, &c, note);
    L->val[i].kind = NV_BUF;
    L->val[i].buf = c.out;
}

static int find_dmol_bwd(const Lower *L, int nllnode) {
    OpKind want = ND(L, nllnode)->op == IR_DMOL_NLL ? IR_DMOL_NLL_BWD : IR_SOFTMAX_NLL_BWD;
    for (int k = L->g->nfwd; k < L->g->n; k++)
        if (ND(L, k)->op == want && ND(L, k)->in[0] == ND(L, nllnode)->in[0]) return k;
    return -1;
}

static void emit_dmol_forward(Lower *L, int i, const char *note) {
    const Node *nd = ND(L, i);
    int lnode = nd->in[0], xnode = nd->in[1];
    if (L->val[lnode].kind != NV_BUF || L->val[xnode].kind != NV_BUF) {
        unsupported(L, i, "the likelihood must read the network output and the input image directly");
        return;
    }
    DmolCtx c = {i, L->val[lnode].buf, L->val[xnode].buf, L->nll_buf, -1, L->part_buf, -1,
                 (int)nd->shape.d[0], (int)nd->shape.d[1], (int)chans(L, xnode), nd->a.nr_mix};
    int bwd = L->g->grad ? find_dmol_bwd(L, i) : -1;
    bool sm = nd->op == IR_SOFTMAX_NLL;
    KirGuard saved = L->guard;
    if (bwd >= 0) {
        int dnll = ND(L, bwd)->in[2];
        if (L->val[dnll].kind != NV_CONST) {
            unsupported(L, bwd, "the gradient of the likelihood must be seeded by the loss sum");
            return;
        }
        c.dnll_node = dnll;
        c.dl = value_buf(L, bwd, "dl");
        L->val[bwd].kind = NV_BUF;
        L->val[bwd].buf = c.dl;
        L->guard.training = 1;
        emit_kernel(L, sm ? "softmax_nll_grad" : "dmol_nll_grad", sm ? build_softmax : build_dmol, &c, note);
        L->guard.training = 0;
        c.dl = -1;
    }
    emit_kernel(L, sm ? "softmax_nll" : "dmol_nll", sm ? build_softmax : build_dmol, &c, note);
    L->guard = saved;
    L->val[i].kind = NV_BUF;
    L->val[i].buf = L->nll_buf;
}

static void emit_node(Lower *L, int i) {
    const Node *nd = ND(L, i);
    char note[512];
    node_where(L, i, note, sizeof note);
    if (L->val[i].kind != NV_NONE) return;   /* computed with a sibling */
    if (fuse_is_pointwise(L->g, i)) {
        PwCtx c = {i, (L->entry == KE_FORWARD && i == L->g->out) ? L->out_buf : value_buf(L, i, NULL)};
        emit_kernel(L, "ew", build_pointwise, &c, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = c.out;
        return;
    }
    switch (nd->op) {
    case IR_ADD: {
        PwCtx c = {i, value_buf(L, i, NULL)};
        emit_kernel(L, "add", build_flat_add, &c, note);
        L->val[i].kind = NV_BUF;
        L->val[i].buf = c.out;
        return;
    }
    case IR_CONV2D: emit_conv(L, i, note); return;
    case IR_DECONV2D: emit_deconv(L, i, note); return;
    case IR_CONV2D_DX: emit_conv_dx(L, i, note); return;
    case IR_CONV2D_DW: emit_conv_dw(L, i, note); return;
    case IR_DECONV2D_DX: emit_deconv_dx(L, i, note); return;
    case IR_DECONV2D_DW: emit_deconv_dw(L, i, note); return;
    case IR_WNORM: emit_wnorm(L, i, note); return;
    case IR_WNORM_DV: case IR_WNORM_DG: emit_wnorm_bwd(L, i, note); return;
    case IR_BIAS_GRAD: case IR_CLASS_BIAS_DHW: emit_reduce(L, i, note); return;
    case IR_DMOL_NLL:
    case IR_SOFTMAX_NLL:
        if (L->entry == KE_FORWARD) emit_dmol_forward(L, i, note);
        return;
    case IR_SUM:
        if (L->entry == KE_FORWARD) {
            if (nd->in[0] != L->g->nll) {
                unsupported(L, i, "the loss must be the sum of the per-pixel likelihood");
                return;
            }
            SumCtx s = {L->part_buf, L->ret_buf};
            emit_kernel(L, "sum", build_sum, &s, note);
        }
        return;
    case IR_DMOL_NLL_DX: unsupported(L, i, "gradients with respect to the image"); return;
    case IR_DMOL_NLL_BWD: case IR_SOFTMAX_NLL_BWD:
        unsupported(L, i, "a likelihood gradient not seeded by the loss sum");
        return;
    default: unsupported(L, i, "no lowering"); return;
    }
}

/* ---- entries ---------------------------------------------------------------------------------------- */

static void init_vals(Lower *L) {
    const Graph *g = L->g;
    for (int i = 0; i < g->n; i++) {
        NodeVal *v = &L->val[i];
        memset(v, 0, sizeof *v);
        const Node *nd = ND(L, i);
        switch (L->fp.kind[i]) {
        case FK_LEAF:
            v->kind = NV_BUF;
            v->buf = nd->op == IR_INPUT ? L->x_buf : nd->op == IR_LABELS ? L->labels_buf : L->param_buf[i];
            break;
        case FK_CONST: v->kind = NV_CONST, v->c = 1.0f; break;
        case FK_INLINE: v->kind = NV_INLINE; break;
        default: v->kind = NV_NONE; break;
        }
    }
    L->npack = 0;
}

static void lower_forward(Lower *L) {
    L->entry = KE_FORWARD;
    L->training = 1;
    L->guard = kir_always();
    for (int i = 0; i < L->g->nfwd && !L->failed; i++)
        if (L->fp.kind[i] == FK_MAT) emit_node(L, i);
    P->entry[KE_FORWARD].ret_buf = L->ret_buf;
    P->entry[KE_FORWARD].stack_bytes = 8 * (NCHUNK + 1);
}

static void lower_backward(Lower *L) {
    L->entry = KE_BACKWARD;
    L->training = 1;
    L->guard = kir_always();
    L->npack = 0;
    const Graph *g = L->g;
    for (int i = 0; i < g->nfwd; i++)   /* recomputed on demand (weight_buf) */
        if (ND(L, i)->op == IR_WNORM && L->val[i].kind == NV_BUF) L->val[i].kind = NV_NONE;
    for (int i = g->nfwd; i < g->n && !L->failed; i++)
        if (L->fp.kind[i] == FK_MAT) emit_node(L, i);
    /* parameters without a gradient node get zeros */
    for (int i = 0; i < g->nfwd; i++) {
        if (ND(L, i)->op != IR_PARAM || (g->grad && g->grad[i] >= 0)) continue;
        const KirBuf *pb = &P->bufs[L->param_buf[i]];
        char w[400];
        ZeroCtx z = {kir_buf(P, node_where(L, i, w, sizeof w), KB_GRAD, KT_F32, pb->off0, 0, pb->size0, 0, i),
                     numel(L, i)};
        emit_kernel(L, "zero", build_zero, &z, "parameter without gradient");
    }
}

static void lower_loss(Lower *L) {
    L->entry = KE_LOSS;
    L->training = 0;
    const Graph *g = L->g;
    const Node *nd = ND(L, g->nll);
    DmolCtx c = {g->nll, L->out_buf, L->x_buf, -1, -1, L->part_buf, -1, (int)nd->shape.d[0], (int)nd->shape.d[1],
                 (int)g->C, nd->a.nr_mix};
    for (int v = 0; v < 4; v++) {
        bool with_nll = v & 1, with_dl = v & 2;
        c.nll = with_nll ? L->nll_buf : -1;
        c.dl = with_dl ? L->dl_buf : -1;
        L->guard = kir_always();
        L->guard.if_nonnull = (with_nll ? 1u << KB_NLL : 0) | (with_dl ? 1u << KB_DL : 0);
        L->guard.if_null = (with_nll ? 0 : 1u << KB_NLL) | (with_dl ? 0 : 1u << KB_DL);
        bool sm = nd->op == IR_SOFTMAX_NLL;
        emit_kernel(L, sm ? (with_dl ? "softmax_nll_grad" : "softmax_nll") : (with_dl ? "dmol_nll_grad" : "dmol_nll"),
                    sm ? build_softmax : build_dmol, &c, "the likelihood");
    }
    L->guard = kir_always();
    SumCtx s = {L->part_buf, L->ret_buf};
    emit_kernel(L, "sum", build_sum, &s, "the loss");
    P->entry[KE_LOSS].ret_buf = L->ret_buf;
    P->entry[KE_LOSS].stack_bytes = 8 * (NCHUNK + 1);
}

static void lower_init(Lower *L) {
    L->entry = KE_INIT;
    L->training = 0;
    L->guard = kir_always();
    init_vals(L);
    for (int i = 0; i < L->g->nfwd && !L->failed; i++) {
        if (L->fp.kind[i] != FK_MAT) continue;
        OpKind op = ND(L, i)->op;
        if (op == IR_DMOL_NLL || op == IR_SOFTMAX_NLL || op == IR_SUM) continue;
        emit_node(L, i);
    }
}

bool kir_valid_name(const char *s) {
    static const char *const reserved[] = {
        "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
        "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
        "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
        "main", "n", "seed", "params", "x", "labels", "arena", "out", "nll", "grad", "l", "dl", "stack", "ar"};
    if (!s || !*s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) return false;
    if (strncmp(s, "pxc_", 4) == 0 || strncmp(s, "PXC_", 4) == 0 || (s[0] == 'k' && s[1] >= '0' && s[1] <= '9'))
        return false;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(s, reserved[i]) == 0) return false;
    return strlen(s) < 64;
}

KirProgram *kir_lower(const Graph *g, const KirOptions *opt, DiagList *dl) {
    Lower Lv, *L = &Lv;
    memset(L, 0, sizeof *L);
    KirOptions defaults = {0};
    L->opt = opt ? *opt : defaults;
    L->g = g;
    L->dl = dl;
    if (g->out < 0 || g->nll < 0 || g->loss < 0 || g->x < 0) {
        diag_error(dl, srcloc_none(), "the graph has no %s", g->x < 0 ? "input" : g->out < 0 ? "output" : "loss");
        return NULL;
    }
    const Node *nllnode = &g->nodes[g->nll];
    if (nllnode->op != IR_DMOL_NLL && nllnode->op != IR_SOFTMAX_NLL) {
        diag_error(dl, nllnode->loc,
                   "the kernel back end supports the logistic mixture and 256-way softmax likelihoods (found %s)",
                   ir_op(nllnode->op)->name);
        return NULL;
    }
    if (opt && opt->name && !kir_valid_name(opt->name)) {
        diag_error(dl, srcloc_none(),
                   "the model name '%s' cannot name emitted C: expected a C identifier (letters, digits, '_'; "
                   "not a keyword, not starting with 'pxc_' or 'k' and a digit)",
                   opt->name);
        return NULL;
    }
    Graph gv = *g;   /* a graph without backward runs forward only */
    if (!g->grad || g->nfwd <= 0) gv.nfwd = g->n;
    L->g = &gv;
    L->p = kir_program_new(L->opt.name);
    fuse_plan(L->g, L->opt.no_fusion, &L->fp);
    L->val = xcalloc((size_t)g->n, sizeof *L->val);
    L->param_buf = xmalloc((size_t)g->n * sizeof(int));
    L->grad_param = xmalloc((size_t)g->n * sizeof(int));
    L->nuses = xcalloc((size_t)g->n, sizeof(int));
    L->user = xmalloc((size_t)g->n * sizeof(int));
    for (int i = 0; i < g->n; i++) L->param_buf[i] = L->grad_param[i] = L->user[i] = -1;
    for (int i = 0; i < g->n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) L->nuses[g->nodes[i].in[k]]++, L->user[g->nodes[i].in[k]] = i;

    /* metadata and the parameter table */
    P->height = g->H, P->width = g->W, P->channels = g->C, P->classes = g->classes;
    P->head = nllnode->op == IR_DMOL_NLL ? PXC_HEAD_LOGISTIC_MIXTURE : PXC_HEAD_SOFTMAX256;
    P->nr_mix = nllnode->op == IR_DMOL_NLL ? nllnode->a.nr_mix : 0;
    P->out_channels = (int)g->nodes[g->out].shape.d[2];
    ParamLayout pl = ir_param_layout(g);
    P->params = arena_alloc(&P->arena, (size_t)(pl.n ? pl.n : 1) * sizeof *P->params);
    P->nparams_tensors = pl.n;
    P->nparams = pl.total;
    for (int k = 0; k < pl.n; k++) {
        KirTensor *t = &P->params[k];
        t->name = arena_strdup(&P->arena, pl.p[k].name);
        t->rank = pl.p[k].shape.rank;
        for (int d = 0; d < t->rank; d++) t->shape[d] = pl.p[k].shape.d[d];
        t->offset = pl.p[k].offset;
        t->numel = pl.p[k].numel;
        L->param_buf[pl.p[k].node] =
            kir_buf(P, pl.p[k].name, KB_PARAMS, KT_F32, 4 * pl.p[k].offset, 0, 4 * pl.p[k].numel, 0, pl.p[k].node);
        if (g->grad && g->grad[pl.p[k].node] >= 0) L->grad_param[g->grad[pl.p[k].node]] = pl.p[k].node;
    }
    ir_param_layout_free(&pl);

    /* the ABI's buffers */
    int64_t HW = (int64_t)g->H * g->W;
    L->x_buf = kir_buf(P, "x", KB_X, KT_F32, 0, 0, 0, 4 * HW * g->C, g->x);
    L->labels_buf = g->labels >= 0 ? kir_buf(P, "labels", KB_LABELS, KT_I32, 0, 0, 0, 4, g->labels) : -1;
    L->out_buf = kir_buf(P, "l", KB_OUT, KT_F32, 0, 0, 0, 4 * HW * P->out_channels, g->out);
    L->nll_buf = kir_buf(P, "nll", KB_NLL, KT_F32, 0, 0, 0, 4 * HW, g->nll);
    L->dl_buf = kir_buf(P, "dl", KB_DL, KT_F32, 0, 0, 0, 4 * HW * P->out_channels, -1);
    L->part_buf = kir_buf(P, "partial sums", KB_STACK, KT_F64, 0, 0, 8 * NCHUNK, 0, -1);
    L->ret_buf = kir_buf(P, "loss", KB_STACK, KT_F64, 8 * NCHUNK, 0, 8, 0, -1);
    P->seed_buf = kir_buf(P, "seed", KB_ARENA, KT_U64, 0, 0, 8, 0, -1);
    P->out_fallback = kir_buf(P, "l (when out is NULL)", KB_ARENA, KT_F32, 0, 0, 0, 4 * HW * P->out_channels, -1);
    P->nll_fallback = kir_buf(P, "nll (when nll is NULL)", KB_ARENA, KT_F32, 0, 0, 0, 4 * HW, -1);

    init_vals(L);
    lower_forward(L);
    if (!L->failed && L->g->nfwd < g->n) lower_backward(L);
    if (!L->failed) lower_loss(L);
    if (!L->failed) lower_init(L);
    if (!L->failed) plan_arena(P, !L->opt.no_reuse);
    if (!L->failed && !L->opt.exact_kernels) kir_parameterise(P);

    KirProgram *prog = P;
    fuse_plan_free(&L->fp);
    free(L->val);
    free(L->param_buf);
    free(L->grad_param);
    free(L->nuses);
    free(L->user);
    free(L->pack_key_node);
    free(L->pack_key_geo);
    free(L->pack_buf);
    if (L->failed) {
        kir_free(prog);
        return NULL;
    }
    return prog;
}
