/*
 * ir.c — building, printing and verifying graphs. The op rows themselves
 * (shape rules, FLOPs) are in ops.c.
 */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

void ir_graph_init(Graph *g) {
    memset(g, 0, sizeof *g);
    g->x = g->labels = g->out = g->nll = g->loss = g->dx = -1;
    g->cur_layer = -1;
}

void ir_graph_free(Graph *g) {
    arena_free(&g->arena);
    free(g->nodes);
    free(g->layers);
    free(g->grad);
    memset(g, 0, sizeof *g);
}

static int push_node(Graph *g, const Node *n) {
    VEC_PUSH(g->nodes, g->n, g->cap, *n);
    return g->n - 1;
}

int ir_add(Graph *g, DiagList *dl, OpKind op, const int *in, int nin, const Attrs *a, SrcLoc loc) {
    const OpInfo *oi = ir_op(op);
    if (oi->nin >= 0 && nin != oi->nin && !((op == IR_CONV2D || op == IR_DECONV2D) && nin == 2))
        pxc_bug("%s takes %d inputs, given %d", oi->name, oi->nin, nin);
    if (nin > IR_MAX_INPUTS) {
        diag_error(dl, loc, "%s has %d inputs; at most %d are supported", oi->name, nin, IR_MAX_INPUTS);
        return -1;
    }
    Node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.dtype = DT_F32;
    n.nin = nin;
    for (int i = 0; i < nin; i++) {
        if (in[i] < 0 || in[i] >= g->n) pxc_bug("%s input %d is %d (graph has %d nodes)", oi->name, i, in[i], g->n);
        n.in[i] = in[i];
    }
    if (a) n.a = *a;
    n.loc = loc;
    n.layer = g->cur_layer;
    if (op == IR_INPUT) n.shape = shape_hwc(g->H, g->W, g->C);
    if (op == IR_LABELS) {
        int64_t one = 1;
        n.shape = ir_shape(1, &one, true);
        n.dtype = DT_I32;
    }
    if (!ir_infer_shape(g, &n, dl)) return -1;
    return push_node(g, &n);
}

int ir_param(Graph *g, const char *name, Shape shape, ParamRole role, double init_std, double init_value, SrcLoc loc) {
    Node n;
    memset(&n, 0, sizeof n);
    n.op = IR_PARAM;
    n.dtype = DT_F32;
    n.shape = shape;
    n.shape.batched = false;
    n.a.role = role;
    n.a.init_std = init_std;
    n.a.init_value = init_value;
    n.loc = loc;
    n.name = arena_strdup(&g->arena, name);
    n.layer = g->cur_layer;
    return push_node(g, &n);
}

int ir_add_layer(Graph *g, const char *name, const char *kind, SrcLoc loc) {
    Layer l = {arena_strdup(&g->arena, name), arena_strdup(&g->arena, kind), loc, g->cur_layer, -1};
    VEC_PUSH(g->layers, g->nlayers, g->lcap, l);
    g->cur_layer = g->nlayers - 1;
    return g->nlayers - 1;
}

ParamLayout ir_param_layout(const Graph *g) {
    ParamLayout pl = {0};
    int cap = 0;
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        if (n->op != IR_PARAM) continue;
        ParamEntry e = {n->name, i, n->shape, pl.total, shape_numel(n->shape)};
        pl.total += e.numel;
        VEC_PUSH(pl.p, pl.n, cap, e);
    }
    return pl;
}

void ir_param_layout_free(ParamLayout *pl) {
    free(pl->p);
    memset(pl, 0, sizeof *pl);
}

/* ---- printer ------------------------------------------------------------ */

static void print_attrs(FILE *f, const Node *n) {
    const Attrs *a = &n->a;
    static const char *shifts[] = {"none", "down", "down_right"};
    switch (n->op) {
    case IR_CONV2D:
    case IR_CONV2D_DX:
    case IR_CONV2D_DW:
        fprintf(f, " {k=%dx%d stride=%d pad=%d,%d,%d,%d shift=%s", a->kh, a->kw, a->stride, a->pad_t, a->pad_l,
                a->pad_r, a->pad_b, shifts[a->shift]);
        if (a->init_scale != 0 && n->op == IR_CONV2D) fprintf(f, " init_scale=%g", a->init_scale);
        fputc('}', f);
        break;
    case IR_DECONV2D:
    case IR_DECONV2D_DX:
    case IR_DECONV2D_DW:
        fprintf(f, " {k=%dx%d stride=%d crop_l=%d shift=%s", a->kh, a->kw, a->stride, a->crop_l, shifts[a->shift]);
        if (a->init_scale != 0 && n->op == IR_DECONV2D) fprintf(f, " init_scale=%g", a->init_scale);
        fputc('}', f);
        break;
    case IR_SHIFT: fprintf(f, " {dy=%d dx=%d}", a->dy, a->dx); break;
    case IR_WNORM:
    case IR_WNORM_DV:
    case IR_WNORM_DG: fprintf(f, " {axis=%d}", a->axis); break;
    case IR_SLICE: fprintf(f, " {start=%d len=%d}", a->start, a->len); break;
    case IR_SLICE_BWD: fprintf(f, " {start=%d len=%d total=%d}", a->start, a->len, a->total); break;
    case IR_DROPOUT: fprintf(f, " {p=%g stream=%d}", a->p, a->stream); break;
    case IR_DMOL_NLL:
    case IR_DMOL_NLL_BWD:
    case IR_DMOL_NLL_DX: fprintf(f, " {nr_mix=%d}", a->nr_mix); break;
    case IR_CLASS_BIAS_DHW: fprintf(f, " {classes=%d}", a->classes); break;
    case IR_PARAM:
        if (a->init_std > 0) fprintf(f, " {init=normal(%g)}", a->init_std);
        else fprintf(f, " {init=%g}", a->init_value);
        break;
    default: break;
    }
}

void ir_print(const Graph *g, FILE *f, int from, int to) {
    char buf[64];
    if (to < 0 || to > g->n) to = g->n;
    for (int i = from; i < to; i++) {
        const Node *n = &g->nodes[i];
        fprintf(f, "%%%d = %s", i, ir_op(n->op)->name);
        if (n->op == IR_PARAM) fprintf(f, " \"%s\"", n->name);
        fputc('(', f);
        for (int k = 0; k < n->nin; k++) fprintf(f, k ? ", %%%d" : "%%%d", n->in[k]);
        fputc(')', f);
        print_attrs(f, n);
        fprintf(f, " : %s%s", shape_str(n->shape, buf, sizeof buf), n->dtype == DT_I32 ? " i32" : "");
        if (n->op != IR_PARAM && n->layer >= 0 && n->layer < g->nlayers) fprintf(f, "  # %s", g->layers[n->layer].name);
        if (n->loc.line > 0) fprintf(f, " @%d:%d", n->loc.line, n->loc.col);
        fputc('\n', f);
    }
    if (from == 0) {
        if (g->out >= 0) fprintf(f, "out %%%d\n", g->out);
        if (g->loss >= 0) fprintf(f, "loss %%%d\n", g->loss);
    }
}

/* ---- verifier ------------------------------------------------------------ */

static int cmp_param_name(const void *a, const void *b) {
    const Node *x = *(const Node *const *)a, *y = *(const Node *const *)b;
    int r = strcmp(x->name, y->name);
    return r ? r : (x < y ? -1 : x > y);
}

bool ir_verify(const Graph *g, DiagList *dl) {
    int before = dl->nerrors;
    char b1[64], b2[64];
    for (int i = 0; i < g->n; i++) {
        const Node *n = &g->nodes[i];
        const OpInfo *oi = ir_op(n->op);
        SrcLoc here = n->loc;
        if (oi->nin >= 0 && n->nin != oi->nin && !((n->op == IR_CONV2D || n->op == IR_DECONV2D) && n->nin == 2))
            diag_error(dl, here, "internal: %%%d %s has %d inputs, expected %d", i, oi->name, n->nin, oi->nin);
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] < 0 || n->in[k] >= i)
                diag_error(dl, here, "internal: %%%d %s input %d is %%%d, not an earlier node", i, oi->name, k, n->in[k]);
        if (n->op == IR_PARAM || n->op == IR_INPUT || n->op == IR_LABELS) continue;
        Node copy = *n;
        DiagList tmp;
        diag_init(&tmp);
        if (!ir_infer_shape(g, &copy, &tmp))
            diag_error(dl, here, "internal: %%%d %s fails its shape rule: %s", i, oi->name, tmp.n ? tmp.items[0].msg : "");
        else if (!shape_eq(copy.shape, n->shape))
            diag_error(dl, here, "internal: %%%d %s has shape %s, its rule gives %s", i, oi->name,
                       shape_str(n->shape, b1, sizeof b1), shape_str(copy.shape, b2, sizeof b2));
        diag_free(&tmp);
    }
    /* parameter names are unique: sort them (O(P log P), a spec may make
     * many) and compare neighbours */
    const Node **ps = xmalloc(sizeof *ps * (size_t)(g->n ? g->n : 1));
    size_t np = 0;
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].op == IR_PARAM) ps[np++] = &g->nodes[i];
    qsort(ps, np, sizeof *ps, cmp_param_name);
    for (size_t i = 1; i < np; i++)
        if (strcmp(ps[i - 1]->name, ps[i]->name) == 0)
            diag_error(dl, ps[i]->loc, "parameter '%s' is defined twice", ps[i]->name);
    free(ps);
    return dl->nerrors == before;
}
