/*
 * ops.c — the op table's rows: names, shape rules and FLOP counts.
 *
 * Shape rules say what was expected and what was found, naming the op, so
 * a user sees "conv2d expects 160 input channels but its input has 320".
 * The diagnostic points at the node's SrcLoc (its YAML statement).
 */
#include "ir.h"

#include <string.h>

static const OpInfo op_table[] = {
#define OP(E, nm, nin, grad, math) {#nm, nin, grad, math},
#include "ops.def"
#undef OP
};
_Static_assert(sizeof op_table / sizeof op_table[0] == IR_OP_COUNT, "op table out of sync with ops.def");

const OpInfo *ir_op(OpKind k) {
    PXC_ASSERT((int)k >= 0 && k < IR_OP_COUNT);
    return &op_table[k];
}

int ir_op_by_name(const char *name) {
    for (int i = 0; i < IR_OP_COUNT; i++)
        if (strcmp(op_table[i].name, name) == 0) return i;
    return -1;
}

/* ---- helpers ------------------------------------------------------------ */

Shape ir_shape(int rank, const int64_t *d, bool batched) {
    Shape s;
    memset(&s, 0, sizeof s);
    s.rank = rank;
    for (int i = 0; i < rank; i++) s.d[i] = d[i];
    s.batched = batched;
    return s;
}

Shape shape_hwc(int64_t h, int64_t w, int64_t c) {
    int64_t d[3] = {h, w, c};
    return ir_shape(3, d, true);
}

int64_t shape_numel(Shape s) {
    int64_t n = 1;
    for (int i = 0; i < s.rank; i++) n *= s.d[i];
    return n;
}

bool shape_eq(Shape a, Shape b) {
    if (a.rank != b.rank || a.batched != b.batched) return false;
    for (int i = 0; i < a.rank; i++)
        if (a.d[i] != b.d[i]) return false;
    return true;
}

const char *shape_str(Shape s, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    if (s.batched && s.rank == 3) {
        snprintf(buf, n, "%lldx%lldx%lld", (long long)s.d[0], (long long)s.d[1], (long long)s.d[2]);
        return buf;
    }
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < s.rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)s.d[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

static const Shape *in_shape(const Graph *g, const Node *n, int i) { return &g->nodes[n->in[i]].shape; }

#define FAIL(...) do { diag_error(dl, n->loc, __VA_ARGS__); return false; } while (0)

static bool want_act(const Graph *g, const Node *n, int i, DiagList *dl) {
    const Shape *s = in_shape(g, n, i);
    if (!s->batched || s->rank != 3)
        FAIL("%s expects an image-shaped tensor (HxWxC) as input %d", ir_op(n->op)->name, i + 1);
    return true;
}

/* ---- shape rules -------------------------------------------------------- */

static bool shape_conv2d(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0), *w = in_shape(g, n, 1);
    int64_t C = x->d[2], O;
    const Attrs *a = &n->a;
    char b1[64], b2[64];
    if (a->kh < 1 || a->kw < 1 || a->stride < 1) FAIL("conv2d needs a positive kernel size and stride");
    if (w->rank == 4) {
        if (w->d[0] != a->kh || w->d[1] != a->kw || w->d[2] != C)
            FAIL("conv2d weight is %s but a %dx%d convolution over %lld channels needs [%d,%d,%lld,O]",
                 shape_str(*w, b1, sizeof b1), a->kh, a->kw, (long long)C, a->kh, a->kw, (long long)C);
        O = w->d[3];
    } else if (w->rank == 2 && a->kh == 1 && a->kw == 1) {
        if (w->d[0] != C)
            FAIL("nin expects %lld input channels (its weight is %s) but its input is %s",
                 (long long)w->d[0], shape_str(*w, b1, sizeof b1), shape_str(*x, b2, sizeof b2));
        O = w->d[1];
    } else {
        FAIL("conv2d weight has rank %d; expected 4 ([kh,kw,in,out])", w->rank);
    }
    if (n->nin > 2) {
        const Shape *b = in_shape(g, n, 2);
        if (b->rank != 1 || b->d[0] != O) FAIL("conv2d bias is %s but the layer has %lld outputs", shape_str(*b, b1, sizeof b1), (long long)O);
    }
    int64_t H = x->d[0], W = x->d[1], S = a->stride;
    if (H % S || W % S)
        FAIL("stride %lld does not divide the input size %lldx%lld", (long long)S, (long long)H, (long long)W);
    int64_t Hp = H + a->pad_t + a->pad_b, Wp = W + a->pad_l + a->pad_r;
    if (Hp < a->kh || Wp < a->kw)
        FAIL("a %dx%d kernel does not fit the %lldx%lld input", a->kh, a->kw, (long long)H, (long long)W);
    int64_t Ho = (Hp - a->kh) / S + 1, Wo = (Wp - a->kw) / S + 1;
    n->shape = shape_hwc(Ho, Wo, O);
    return true;
}

static bool shape_deconv2d(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0), *w = in_shape(g, n, 1);
    char b1[64];
    if (n->a.stride != 2) FAIL("deconv2d supports stride 2 only, found stride %d", n->a.stride);
    if (w->rank != 4 || w->d[0] != n->a.kh || w->d[1] != n->a.kw || w->d[3] != x->d[2])
        FAIL("deconv2d weight is %s but a %dx%d deconvolution of %lld channels needs [%d,%d,O,%lld]",
             shape_str(*w, b1, sizeof b1), n->a.kh, n->a.kw, (long long)x->d[2], n->a.kh, n->a.kw,
             (long long)x->d[2]);
    int64_t O = w->d[2];
    if (n->nin > 2) {
        const Shape *b = in_shape(g, n, 2);
        if (b->rank != 1 || b->d[0] != O) FAIL("deconv2d bias is %s but the layer has %lld outputs", shape_str(*b, b1, sizeof b1), (long long)O);
    }
    if (n->a.crop_l < 0 || n->a.crop_l > n->a.kw - 1) FAIL("deconv2d crop %d outside [0,%d]", n->a.crop_l, n->a.kw - 1);
    n->shape = shape_hwc(2 * x->d[0], 2 * x->d[1], O);
    return true;
}

static bool shape_same(const Graph *g, Node *n, DiagList *dl) {
    (void)dl;
    n->shape = *in_shape(g, n, 0);
    return true;
}

static bool shape_act_same(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    n->shape = *in_shape(g, n, 0);
    return true;
}

static bool shape_wnorm(const Graph *g, Node *n, DiagList *dl) {
    const Shape *v = in_shape(g, n, 0), *gs = in_shape(g, n, 1);
    char b1[64];
    if (n->a.axis < 0 || n->a.axis >= v->rank) FAIL("wnorm axis %d outside the weight's rank %d", n->a.axis, v->rank);
    if (gs->rank != 1 || gs->d[0] != v->d[n->a.axis])
        FAIL("wnorm gain is %s but the weight has %lld output channels", shape_str(*gs, b1, sizeof b1),
             (long long)v->d[n->a.axis]);
    n->shape = *v;
    return true;
}

static bool shape_concat(const Graph *g, Node *n, DiagList *dl) {
    char b1[64], b2[64];
    if (n->nin < 1) FAIL("concat needs at least one input");
    int64_t C = 0;
    for (int i = 0; i < n->nin; i++) {
        if (!want_act(g, n, i, dl)) return false;
        const Shape *s = in_shape(g, n, i), *s0 = in_shape(g, n, 0);
        if (s->d[0] != s0->d[0] || s->d[1] != s0->d[1])
            FAIL("concat input %d is %s but input 1 is %s: sizes must agree", i + 1,
                 shape_str(*s, b1, sizeof b1), shape_str(*s0, b2, sizeof b2));
        C += s->d[2];
    }
    n->shape = shape_hwc(in_shape(g, n, 0)->d[0], in_shape(g, n, 0)->d[1], C);
    return true;
}

static bool shape_slice(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0);
    if (n->a.start < 0 || n->a.len < 1 || n->a.start + n->a.len > x->d[2])
        FAIL("slice [%d,%d) outside the input's %lld channels", n->a.start, n->a.start + n->a.len, (long long)x->d[2]);
    n->shape = shape_hwc(x->d[0], x->d[1], n->a.len);
    return true;
}

static bool shape_add(const Graph *g, Node *n, DiagList *dl) {
    char b1[64], b2[64];
    const Shape *a = in_shape(g, n, 0), *b = in_shape(g, n, 1);
    if (!shape_eq(*a, *b))
        FAIL("add of %s and %s: shapes must be equal", shape_str(*a, b1, sizeof b1), shape_str(*b, b2, sizeof b2));
    n->shape = *a;
    return true;
}

static bool shape_concat_elu(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0);
    n->shape = shape_hwc(x->d[0], x->d[1], 2 * x->d[2]);
    return true;
}

static bool shape_gate(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0);
    if (x->d[2] % 2) FAIL("gate splits channels in two halves but its input has %lld channels", (long long)x->d[2]);
    n->shape = shape_hwc(x->d[0], x->d[1], x->d[2] / 2);
    return true;
}

static bool shape_class_bias(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl)) return false;
    const Shape *x = in_shape(g, n, 0), *hw = in_shape(g, n, 1);
    char b1[64];
    if (hw->rank != 2 || hw->d[1] != x->d[2])
        FAIL("class_bias weight is %s but the input has %lld channels", shape_str(*hw, b1, sizeof b1), (long long)x->d[2]);
    n->shape = *x;
    return true;
}

static int64_t dmol_k(int64_t C, int nr_mix) { return C == 1 ? 3 * nr_mix : 10 * nr_mix; }

static bool shape_dmol_nll(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl) || !want_act(g, n, 1, dl)) return false;
    const Shape *l = in_shape(g, n, 0), *x = in_shape(g, n, 1);
    if (x->d[2] != 1 && x->d[2] != 3) FAIL("the logistic mixture head supports 1 or 3 channels, found %lld", (long long)x->d[2]);
    if (n->a.nr_mix < 1) FAIL("the logistic mixture needs at least one component");
    if (l->d[0] != x->d[0] || l->d[1] != x->d[1])
        FAIL("the network output is %lldx%lld but the image is %lldx%lld", (long long)l->d[0], (long long)l->d[1],
             (long long)x->d[0], (long long)x->d[1]);
    if (l->d[2] != dmol_k(x->d[2], n->a.nr_mix))
        FAIL("a %d-component logistic mixture over %lld channels needs %lld output channels, found %lld",
             n->a.nr_mix, (long long)x->d[2], (long long)dmol_k(x->d[2], n->a.nr_mix), (long long)l->d[2]);
    n->shape = shape_hwc(x->d[0], x->d[1], 1);
    return true;
}

static bool shape_softmax_nll(const Graph *g, Node *n, DiagList *dl) {
    if (!want_act(g, n, 0, dl) || !want_act(g, n, 1, dl)) return false;
    const Shape *l = in_shape(g, n, 0), *x = in_shape(g, n, 1);
    if (l->d[0] != x->d[0] || l->d[1] != x->d[1])
        FAIL("the network output is %lldx%lld but the image is %lldx%lld", (long long)l->d[0], (long long)l->d[1],
             (long long)x->d[0], (long long)x->d[1]);
    if (l->d[2] != 256 * x->d[2])
        FAIL("a 256-way softmax over %lld channels needs %lld output channels, found %lld", (long long)x->d[2],
             (long long)(256 * x->d[2]), (long long)l->d[2]);
    n->shape = shape_hwc(x->d[0], x->d[1], 1);
    return true;
}

static bool shape_sum(const Graph *g, Node *n, DiagList *dl) {
    (void)g, (void)dl;
    int64_t one = 1;
    n->shape = ir_shape(1, &one, false);
    return true;
}

static bool shape_ref(const Graph *g, Node *n, DiagList *dl) {
    (void)g, (void)dl;
    n->shape = n->a.ref_shape;
    return true;
}

static bool shape_bias_grad(const Graph *g, Node *n, DiagList *dl) {
    (void)dl;
    int64_t c = in_shape(g, n, 0)->d[2];
    n->shape = ir_shape(1, &c, false);
    return true;
}

static bool shape_wnorm_dg(const Graph *g, Node *n, DiagList *dl) {
    (void)dl;
    int64_t c = in_shape(g, n, 0)->d[n->a.axis];
    n->shape = ir_shape(1, &c, false);
    return true;
}

static bool shape_slice_bwd(const Graph *g, Node *n, DiagList *dl) {
    (void)dl;
    const Shape *s = in_shape(g, n, 0);
    n->shape = shape_hwc(s->d[0], s->d[1], n->a.total);
    return true;
}

static bool shape_in1(const Graph *g, Node *n, DiagList *dl) {  /* like the second input */
    (void)dl;
    n->shape = *in_shape(g, n, 1);
    return true;
}

static bool shape_class_dhw(const Graph *g, Node *n, DiagList *dl) {
    (void)dl;
    int64_t d[2] = {n->a.classes, in_shape(g, n, 0)->d[2]};
    n->shape = ir_shape(2, d, false);
    return true;
}

static bool shape_leaf(const Graph *g, Node *n, DiagList *dl) {
    (void)g, (void)dl;
    return true;  /* set by the builder */
}

typedef bool (*ShapeFn)(const Graph *, Node *, DiagList *);

static const ShapeFn shape_fns[IR_OP_COUNT] = {
    [IR_INPUT] = shape_leaf, [IR_LABELS] = shape_leaf, [IR_PARAM] = shape_leaf, [IR_ONES] = shape_ref,
    [IR_WNORM] = shape_wnorm, [IR_CONV2D] = shape_conv2d, [IR_DECONV2D] = shape_deconv2d,
    [IR_SHIFT] = shape_act_same, [IR_CONCAT] = shape_concat, [IR_SLICE] = shape_slice, [IR_ADD] = shape_add,
    [IR_ELU] = shape_act_same, [IR_CONCAT_ELU] = shape_concat_elu, [IR_SIGMOID] = shape_act_same,
    [IR_TANH] = shape_act_same, [IR_GATE] = shape_gate, [IR_DROPOUT] = shape_act_same,
    [IR_CLASS_BIAS] = shape_class_bias, [IR_DMOL_NLL] = shape_dmol_nll, [IR_SOFTMAX_NLL] = shape_softmax_nll,
    [IR_SUM] = shape_sum, [IR_BROADCAST] = shape_ref, [IR_CONV2D_DX] = shape_ref, [IR_CONV2D_DW] = shape_ref,
    [IR_DECONV2D_DX] = shape_ref, [IR_DECONV2D_DW] = shape_ref, [IR_BIAS_GRAD] = shape_bias_grad,
    [IR_WNORM_DV] = shape_same, [IR_WNORM_DG] = shape_wnorm_dg, [IR_SLICE_BWD] = shape_slice_bwd,
    [IR_ELU_BWD] = shape_same, [IR_CONCAT_ELU_BWD] = shape_same, [IR_SIGMOID_BWD] = shape_same,
    [IR_TANH_BWD] = shape_same, [IR_GATE_BWD] = shape_same, [IR_CLASS_BIAS_DHW] = shape_class_dhw,
    [IR_DMOL_NLL_BWD] = shape_same, [IR_DMOL_NLL_DX] = shape_in1, [IR_SOFTMAX_NLL_BWD] = shape_same,
};

bool ir_infer_shape(const Graph *g, Node *n, DiagList *dl) {
    ShapeFn f = shape_fns[n->op];
    if (!f) pxc_bug("op %s has no shape rule", ir_op(n->op)->name);
    return f(g, n, dl);
}

/* ---- FLOPs ---------------------------------------------------------------
 * The figure pxc reports is 2 x the multiply-adds of the convolutions,
 * deconvolutions and nins (the GEMM work), as the paper's cost is usually
 * quoted; elementwise ops are memory-bound and counted as 0 here. The
 * backward GEMMs (conv2d_dx, conv2d_dw, ...) cost the same as their forward.
 */
double ir_flops(const Graph *g, const Node *n) {
    switch (n->op) {
    case IR_CONV2D: {
        const Shape *x = in_shape(g, n, 0);
        return 2.0 * (double)n->shape.d[0] * (double)n->shape.d[1] * (double)n->shape.d[2] * n->a.kh * n->a.kw *
               (double)x->d[2];
    }
    case IR_DECONV2D: {
        const Shape *x = in_shape(g, n, 0);
        return 2.0 * (double)x->d[0] * (double)x->d[1] * (double)x->d[2] * n->a.kh * n->a.kw * (double)n->shape.d[2];
    }
    default:
        return 0.0;
    }
}
