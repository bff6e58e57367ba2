/*
 * autodiff.c — reverse mode over the graph IR (see autodiff.h).
 *
 * The walk: mark the forward nodes that need a gradient (those that depend
 * on a parameter, or on the input when dx is wanted, and that the loss
 * depends on); seed d loss = 1; visit the forward nodes in reverse order,
 * where every consumer of a node has already contributed, so the node's
 * gradient is complete; apply its op's vector-Jacobian rule, which appends
 * backward nodes and hands each needing input its contribution. A second
 * contribution to the same node is summed with ADD.
 *
 * Every rule below is the transpose of its ops.def math line; the reference
 * backend (runtime/ref) implements the backward ops those rules emit and
 * tests/test_gradcheck_ops.c checks each rule by finite differences.
 */
#include "autodiff.h"

#include <stdlib.h>
#include <string.h>

typedef struct Ad {
    Graph *g;
    DiagList *dl;
    int nfwd;
    int *grad;   /* [nfwd] accumulated gradient node of each forward node, -1: none yet */
    bool *need;  /* [nfwd] the node needs a gradient */
    bool failed;
} Ad;

/* Append a backward node on behalf of forward node `from`: it carries that
 * node's SrcLoc, layer and (for non-parameters) name. */
static int emit(Ad *ad, int from, OpKind op, const int *in, int nin, const Attrs *a) {
    if (ad->failed) return -1;
    Graph *g = ad->g;
    const Node *f = &g->nodes[from];
    SrcLoc loc = f->loc;
    int layer = f->layer;
    const char *name = f->op == IR_PARAM ? NULL : f->name;
    int id = ir_add(g, ad->dl, op, in, nin, a, loc);
    if (id < 0) {
        diag_error(ad->dl, loc, "internal: the gradient of %%%d %s does not shape-check (%s)", from,
                   ir_op(f->op)->name, ir_op(op)->name);
        ad->failed = true;
        return -1;
    }
    g->nodes[id].layer = layer;
    g->nodes[id].name = name;
    return id;
}

/* Add contribution d to the gradient of node `to` (if it needs one). */
static void accum(Ad *ad, int to, int d) {
    if (ad->failed || d < 0 || !ad->need[to]) return;
    if (ad->grad[to] < 0) {
        ad->grad[to] = d;
        return;
    }
    int in[2] = {ad->grad[to], d};
    ad->grad[to] = emit(ad, to, IR_ADD, in, 2, NULL);
}

static bool needs(const Ad *ad, int node) { return ad->need[node]; }
static const Node *nd(const Ad *ad, int i) { return &ad->g->nodes[i]; }

/* ---- vector-Jacobian rules: one per op with grad = 1 in ops.def -----------
 * Each receives the forward node id `y` and its gradient node `dy`. Node
 * pointers are re-read after emit() since emit may grow the node array. */

typedef void (*VjpFn)(Ad *ad, int y, int dy);

/* w = g v / ||v||: dv = WNORM_DV(v, g, dw), dg = WNORM_DG(v, dw). */
static void ad_vjp_wnorm(Ad *ad, int y, int dy) {
    int v = nd(ad, y)->in[0], gg = nd(ad, y)->in[1];
    Attrs a = {0};
    a.axis = nd(ad, y)->a.axis;
    if (needs(ad, v)) {
        int in[3] = {v, gg, dy};
        accum(ad, v, emit(ad, y, IR_WNORM_DV, in, 3, &a));
    }
    if (needs(ad, gg)) {
        int in[2] = {v, dy};
        accum(ad, gg, emit(ad, y, IR_WNORM_DG, in, 2, &a));
    }
}

/* y = conv(x, w) + b (or its transposed twin): dx is the transposed
 * operation, dw the correlation of x with dy, db the sum of dy over
 * everything but channels. The two ops differ only in their gradient ops. */
static void vjp_conv_like(Ad *ad, int y, int dy, OpKind dx_op, OpKind dw_op) {
    Node f = *nd(ad, y);
    int x = f.in[0], w = f.in[1];
    Attrs a = f.a;
    a.init_scale = 0;
    if (needs(ad, x)) {
        int in[2] = {dy, w};
        a.ref_shape = nd(ad, x)->shape;
        accum(ad, x, emit(ad, y, dx_op, in, 2, &a));
    }
    if (needs(ad, w)) {
        int in[2] = {x, dy};
        a.ref_shape = nd(ad, w)->shape;
        accum(ad, w, emit(ad, y, dw_op, in, 2, &a));
    }
    if (f.nin > 2 && needs(ad, f.in[2])) {
        int in[1] = {dy};
        accum(ad, f.in[2], emit(ad, y, IR_BIAS_GRAD, in, 1, NULL));
    }
}

static void ad_vjp_conv2d(Ad *ad, int y, int dy) { vjp_conv_like(ad, y, dy, IR_CONV2D_DX, IR_CONV2D_DW); }

static void ad_vjp_deconv2d(Ad *ad, int y, int dy) { vjp_conv_like(ad, y, dy, IR_DECONV2D_DX, IR_DECONV2D_DW); }

/* y[i,j] = x[i-dy, j-dx]: dx[i,j] = dy[i+dy, j+dx], the opposite shift. */
static void ad_vjp_shift(Ad *ad, int y, int dy) {
    int x = nd(ad, y)->in[0];
    Attrs a = {0};
    a.dy = -nd(ad, y)->a.dy;
    a.dx = -nd(ad, y)->a.dx;
    int in[1] = {dy};
    accum(ad, x, emit(ad, y, IR_SHIFT, in, 1, &a));
}

/* Channel concatenation: each input's gradient is its slice of dy. */
static void ad_vjp_concat(Ad *ad, int y, int dy) {
    Node f = *nd(ad, y);
    int start = 0;
    for (int k = 0; k < f.nin; k++) {
        int x = f.in[k], C = (int)nd(ad, x)->shape.d[2];
        if (needs(ad, x)) {
            Attrs a = {0};
            a.start = start;
            a.len = C;
            int in[1] = {dy};
            accum(ad, x, emit(ad, y, IR_SLICE, in, 1, &a));
        }
        start += C;
    }
}

/* y = x[..., start:start+len]: dx = dy placed back among zeros. */
static void ad_vjp_slice(Ad *ad, int y, int dy) {
    int x = nd(ad, y)->in[0];
    Attrs a = {0};
    a.start = nd(ad, y)->a.start;
    a.len = nd(ad, y)->a.len;
    a.total = (int)nd(ad, x)->shape.d[2];
    int in[1] = {dy};
    accum(ad, x, emit(ad, y, IR_SLICE_BWD, in, 1, &a));
}

static void ad_vjp_add(Ad *ad, int y, int dy) {
    accum(ad, nd(ad, y)->in[0], dy);
    accum(ad, nd(ad, y)->in[1], dy);
}

/* Pointwise ops whose backward reads the forward input x. */
static void vjp_of_input(Ad *ad, int y, int dy, OpKind bwd) {
    int x = nd(ad, y)->in[0];
    int in[2] = {x, dy};
    accum(ad, x, emit(ad, y, bwd, in, 2, NULL));
}

/* Pointwise ops whose backward reads the forward output y. */
static void vjp_of_output(Ad *ad, int y, int dy, OpKind bwd) {
    int x = nd(ad, y)->in[0];
    int in[2] = {y, dy};
    accum(ad, x, emit(ad, y, bwd, in, 2, NULL));
}

static void ad_vjp_elu(Ad *ad, int y, int dy) { vjp_of_input(ad, y, dy, IR_ELU_BWD); }
static void ad_vjp_concat_elu(Ad *ad, int y, int dy) { vjp_of_input(ad, y, dy, IR_CONCAT_ELU_BWD); }
static void ad_vjp_gate(Ad *ad, int y, int dy) { vjp_of_input(ad, y, dy, IR_GATE_BWD); }
static void ad_vjp_sigmoid(Ad *ad, int y, int dy) { vjp_of_output(ad, y, dy, IR_SIGMOID_BWD); }
static void ad_vjp_tanh(Ad *ad, int y, int dy) { vjp_of_output(ad, y, dy, IR_TANH_BWD); }

/* y = mask * x / (1-p): the same op on dy, with the same stream, applies
 * the same mask (it is recomputed from seed, stream and element index). */
static void ad_vjp_dropout(Ad *ad, int y, int dy) {
    int x = nd(ad, y)->in[0];
    Attrs a = {0};
    a.p = nd(ad, y)->a.p;
    a.stream = nd(ad, y)->a.stream;
    int in[1] = {dy};
    accum(ad, x, emit(ad, y, IR_DROPOUT, in, 1, &a));
}

/* y = x + hw[label]: dx = dy; dhw sums dy per class. Labels get nothing. */
static void ad_vjp_class_bias(Ad *ad, int y, int dy) {
    Node f = *nd(ad, y);
    accum(ad, f.in[0], dy);
    if (needs(ad, f.in[1])) {
        Attrs a = {0};
        a.classes = (int)nd(ad, f.in[1])->shape.d[0];
        int in[2] = {dy, f.in[2]};
        accum(ad, f.in[1], emit(ad, y, IR_CLASS_BIAS_DHW, in, 2, &a));
    }
}

static void ad_vjp_dmol_nll(Ad *ad, int y, int dy) {
    Node f = *nd(ad, y);
    Attrs a = {0};
    a.nr_mix = f.a.nr_mix;
    int in[3] = {f.in[0], f.in[1], dy};
    if (needs(ad, f.in[0])) accum(ad, f.in[0], emit(ad, y, IR_DMOL_NLL_BWD, in, 3, &a));
    if (needs(ad, f.in[1])) accum(ad, f.in[1], emit(ad, y, IR_DMOL_NLL_DX, in, 3, &a));
}

/* The target x enters only through the index of its 256-way bin, a step
 * function: it gets no gradient. */
static void ad_vjp_softmax_nll(Ad *ad, int y, int dy) {
    Node f = *nd(ad, y);
    int in[3] = {f.in[0], f.in[1], dy};
    if (needs(ad, f.in[0])) accum(ad, f.in[0], emit(ad, y, IR_SOFTMAX_NLL_BWD, in, 3, NULL));
}

/* loss = sum over the batch: every element's gradient is dloss. */
static void ad_vjp_sum(Ad *ad, int y, int dy) {
    int x = nd(ad, y)->in[0];
    Attrs a = {0};
    a.ref_shape = nd(ad, x)->shape;
    int in[1] = {dy};
    accum(ad, x, emit(ad, y, IR_BROADCAST, in, 1, &a));
}

static const VjpFn vjp_table[IR_OP_COUNT] = {
    [IR_WNORM] = ad_vjp_wnorm,         [IR_CONV2D] = ad_vjp_conv2d,
    [IR_DECONV2D] = ad_vjp_deconv2d,   [IR_SHIFT] = ad_vjp_shift,
    [IR_CONCAT] = ad_vjp_concat,       [IR_SLICE] = ad_vjp_slice,
    [IR_ADD] = ad_vjp_add,             [IR_ELU] = ad_vjp_elu,
    [IR_CONCAT_ELU] = ad_vjp_concat_elu, [IR_SIGMOID] = ad_vjp_sigmoid,
    [IR_TANH] = ad_vjp_tanh,           [IR_GATE] = ad_vjp_gate,
    [IR_DROPOUT] = ad_vjp_dropout,     [IR_CLASS_BIAS] = ad_vjp_class_bias,
    [IR_DMOL_NLL] = ad_vjp_dmol_nll,   [IR_SOFTMAX_NLL] = ad_vjp_softmax_nll,
    [IR_SUM] = ad_vjp_sum,
};
_Static_assert(sizeof vjp_table / sizeof vjp_table[0] == IR_OP_COUNT, "vjp table out of sync with ops.def");

bool ad_has_vjp(OpKind k) { return k >= 0 && k < IR_OP_COUNT && vjp_table[k] != NULL; }

/* ---- the walk ----------------------------------------------------------- */

/* Which forward nodes need a gradient: they depend on a parameter (or on the
 * input when want_dx) and the loss depends on them. */
static void mark_needed(Ad *ad, bool want_dx) {
    const Graph *g = ad->g;
    int n = ad->nfwd;
    bool *dep = xcalloc((size_t)n, sizeof *dep), *reach = xcalloc((size_t)n, sizeof *reach);
    for (int i = 0; i < n; i++) {
        const Node *f = &g->nodes[i];
        if (f->op == IR_PARAM) dep[i] = true;
        else if (f->op == IR_INPUT) dep[i] = want_dx;
        for (int k = 0; k < f->nin; k++) dep[i] = dep[i] || dep[f->in[k]];
    }
    reach[g->loss] = true;
    for (int i = n - 1; i >= 0; i--)
        if (reach[i])
            for (int k = 0; k < g->nodes[i].nin; k++) reach[g->nodes[i].in[k]] = true;
    for (int i = 0; i < n; i++) ad->need[i] = dep[i] && reach[i];
    free(dep);
    free(reach);
}

bool ad_differentiate(Graph *g, bool want_dx, DiagList *dl) {
    SrcLoc none = srcloc_none();
    if (g->grad) {
        diag_error(dl, none, "internal: the graph is already differentiated");
        return false;
    }
    if (g->loss < 0 || g->loss >= g->n) {
        diag_error(dl, none, "internal: the graph has no loss to differentiate");
        return false;
    }
    if (want_dx && g->x < 0) {
        diag_error(dl, none, "internal: the gradient w.r.t. the input was asked for, but the graph has no input");
        return false;
    }
    const Shape *ls = &g->nodes[g->loss].shape;
    if (ls->batched || shape_numel(*ls) != 1) {
        char b[64];
        diag_error(dl, g->nodes[g->loss].loc, "internal: the loss must be an unbatched scalar, found %s",
                   shape_str(*ls, b, sizeof b));
        return false;
    }
    g->nfwd = g->n;
    Ad ad = {g, dl, g->n, NULL, NULL, false};
    ad.grad = xmalloc((size_t)ad.nfwd * sizeof *ad.grad);
    ad.need = xcalloc((size_t)ad.nfwd, sizeof *ad.need);
    for (int i = 0; i < ad.nfwd; i++) ad.grad[i] = -1;
    mark_needed(&ad, want_dx);

    if (ad.need[g->loss]) {
        Attrs seed = {0};
        int64_t one = 1;
        seed.ref_shape = ir_shape(1, &one, false);
        ad.grad[g->loss] = emit(&ad, g->loss, IR_ONES, NULL, 0, &seed);
    }
    for (int i = ad.nfwd - 1; i >= 0 && !ad.failed; i--) {
        const Node *f = &g->nodes[i];
        if (!ad.need[i] || ad.grad[i] < 0 || f->nin == 0) continue;
        VjpFn rule = vjp_table[f->op];
        if (!rule) {
            diag_error(dl, f->loc, "internal: %%%d %s lies on the path to the loss but has no gradient rule", i,
                       ir_op(f->op)->name);
            ad.failed = true;
            break;
        }
        rule(&ad, i, ad.grad[i]);
    }
    if (!ad.failed) {
        g->grad = xmalloc((size_t)g->n * sizeof *g->grad);
        for (int i = 0; i < g->n; i++) g->grad[i] = i < ad.nfwd ? ad.grad[i] : -1;
        g->dx = want_dx ? ad.grad[g->x] : -1;
    } else {
        g->n = ad.nfwd;  /* drop the partial backward graph */
    }
    free(ad.grad);
    free(ad.need);
    return !ad.failed;
}
