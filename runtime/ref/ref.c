/*
 * ref.c — the reference executor (see ref.h): one double buffer per node,
 * nodes run in graph order through the kernel table of ref_kernels.c, and
 * the data-dependent weight-norm init as a pass over the same order.
 */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref_kernels.h"

struct RefExec {
    const Graph *g;
    int n;          /* images per batch */
    int nfwd;       /* nodes [0, nfwd) are forward */
    double **val;   /* [g->n] value of each node */
    int64_t *len;   /* [g->n] doubles in val[i] */
    ParamLayout pl;
    uint64_t seed;
    bool training;
};

static int64_t value_len(const Node *nd, int n) { return (nd->shape.batched ? n : 1) * shape_numel(nd->shape); }

RefExec *ref_new(const Graph *g, int n) {
    PXC_ASSERT(n >= 1);
    RefExec *e = xcalloc(1, sizeof *e);
    e->g = g;
    e->n = n;
    e->nfwd = g->nfwd > 0 ? g->nfwd : g->n;
    e->val = xcalloc((size_t)g->n, sizeof *e->val);
    e->len = xcalloc((size_t)g->n, sizeof *e->len);
    for (int i = 0; i < g->n; i++) {
        e->len[i] = value_len(&g->nodes[i], n);
        e->val[i] = xcalloc((size_t)e->len[i], sizeof(double));
    }
    e->pl = ir_param_layout(g);
    return e;
}

void ref_free(RefExec *e) {
    if (!e) return;
    for (int i = 0; i < e->g->n; i++) free(e->val[i]);
    free(e->val);
    free(e->len);
    ir_param_layout_free(&e->pl);
    free(e);
}

static void run_node(RefExec *e, int i) {
    const Node *nd = &e->g->nodes[i];
    if (nd->op == IR_INPUT || nd->op == IR_LABELS || nd->op == IR_PARAM) return;
    const double *in[IR_MAX_INPUTS];
    for (int k = 0; k < nd->nin; k++) in[k] = e->val[nd->in[k]];
    RefRun r = {e->g, e->n, e->seed, e->training};
    memset(e->val[i], 0, (size_t)e->len[i] * sizeof(double));
    ref_kernels[nd->op](&r, nd, in, e->val[i]);
}

/* Copy params, x and labels into their nodes; false if the labels are
 * missing or out of range for a class_bias. */
static bool load_inputs(RefExec *e, const double *params, const double *x, const int32_t *labels) {
    const Graph *g = e->g;
    for (int p = 0; p < e->pl.n; p++)
        memcpy(e->val[e->pl.p[p].node], params + e->pl.p[p].offset, (size_t)e->pl.p[p].numel * sizeof(double));
    if (g->x >= 0) memcpy(e->val[g->x], x, (size_t)e->len[g->x] * sizeof(double));
    for (int i = 0; i < e->nfwd; i++) {
        if (g->nodes[i].op == IR_LABELS) {
            if (!labels) return false;
            for (int b = 0; b < e->n; b++) e->val[i][b] = labels[b];
        }
        if (g->nodes[i].op == IR_CLASS_BIAS) {
            int64_t classes = g->nodes[g->nodes[i].in[1]].shape.d[0];
            if (!labels) return false;
            for (int b = 0; b < e->n; b++)
                if (labels[b] < 0 || labels[b] >= classes) return false;
        }
    }
    return true;
}

double ref_forward(RefExec *e, const double *params, const double *x, const int32_t *labels, uint64_t seed,
                   bool training) {
    if (!load_inputs(e, params, x, labels)) return NAN;
    e->seed = seed;
    e->training = training;
    for (int i = 0; i < e->nfwd; i++) run_node(e, i);
    return e->g->loss >= 0 ? e->val[e->g->loss][0] : NAN;
}

void ref_backward(RefExec *e) {
    for (int i = e->nfwd; i < e->g->n; i++) run_node(e, i);
}

void ref_backward_from(RefExec *e, int grad_node, const double *value) {
    const Graph *g = e->g;
    PXC_ASSERT(grad_node >= e->nfwd && grad_node < g->n);
    bool *live = xcalloc((size_t)g->n, 1);
    live[grad_node] = true;
    for (int i = e->nfwd; i < g->n; i++) {
        if (i == grad_node) {
            memcpy(e->val[i], value, (size_t)e->len[i] * sizeof(double));
            continue;
        }
        const Node *nd = &g->nodes[i];
        for (int k = 0; k < nd->nin; k++)
            if (live[nd->in[k]]) live[i] = true;
        /* backward values are linear in the seed: what the seed does not reach is zero */
        if (live[i]) run_node(e, i);
        else memset(e->val[i], 0, (size_t)e->len[i] * sizeof(double));
    }
    free(live);
}

const double *ref_value(const RefExec *e, int node) {
    PXC_ASSERT(node >= 0 && node < e->g->n);
    return e->val[node];
}

void ref_grads(const RefExec *e, double *grad_params) {
    for (int p = 0; p < e->pl.n; p++) {
        const ParamEntry *pe = &e->pl.p[p];
        int gi = e->g->grad ? e->g->grad[pe->node] : -1;
        if (gi >= 0) memcpy(grad_params + pe->offset, e->val[gi], (size_t)pe->numel * sizeof(double));
        else memset(grad_params + pe->offset, 0, (size_t)pe->numel * sizeof(double));
    }
}

/* ---- data-dependent init ------------------------------------------------------ */

/* Is node i a conv/deconv over WNORM(v, g) with a PR_BIAS bias? Then *wn, *gp,
 * *bp receive the WNORM node, the g and the b parameter nodes. */
static bool wn_init_target(const Graph *g, int i, int *wn, int *gp, int *bp) {
    const Node *nd = &g->nodes[i];
    if ((nd->op != IR_CONV2D && nd->op != IR_DECONV2D) || nd->nin < 3) return false;
    const Node *w = &g->nodes[nd->in[1]], *b = &g->nodes[nd->in[2]];
    if (w->op != IR_WNORM || g->nodes[w->in[1]].op != IR_PARAM) return false;
    if (b->op != IR_PARAM || b->a.role != PR_BIAS) return false;
    *wn = nd->in[1];
    *gp = w->in[1];
    *bp = nd->in[2];
    return true;
}

void ref_init(RefExec *e, double *params, const double *x, const int32_t *labels) {
    const Graph *g = e->g;
    if (!load_inputs(e, params, x, labels)) return;
    e->seed = 0;
    e->training = false;
    for (int i = 0; i < e->nfwd; i++) {
        run_node(e, i);
        int wn, gp, bp;
        if (!wn_init_target(g, i, &wn, &gp, &bp)) continue;
        const Node *nd = &g->nodes[i];
        int64_t O = nd->shape.d[2], count = e->len[i] / O;
        double *gv = e->val[gp], *bv = e->val[bp], *y = e->val[i];
        for (int64_t o = 0; o < O; o++) gv[o] = 1.0, bv[o] = 0.0;
        run_node(e, wn);
        run_node(e, i);
        double scale = nd->a.init_scale != 0 ? nd->a.init_scale : 1.0;
        for (int64_t o = 0; o < O; o++) {
            double m = 0, v = 0;
            for (int64_t t = 0; t < count; t++) m += y[t * O + o];
            m /= (double)count;
            for (int64_t t = 0; t < count; t++) v += (y[t * O + o] - m) * (y[t * O + o] - m);
            v /= (double)count;
            gv[o] = scale / sqrt(v + 1e-10);
            bv[o] = -m * gv[o];
        }
        run_node(e, wn);
        run_node(e, i);
    }
    for (int p = 0; p < e->pl.n; p++)
        memcpy(params + e->pl.p[p].offset, e->val[e->pl.p[p].node], (size_t)e->pl.p[p].numel * sizeof(double));
}

/* ---- the likelihood alone ------------------------------------------------------ */

double ref_loss(const Graph *g, int n, const double *l, const double *x, double *dl, double *nll) {
    PXC_ASSERT(g->nll >= 0);
    const Node *head = &g->nodes[g->nll];
    PXC_ASSERT(head->op == IR_DMOL_NLL || head->op == IR_SOFTMAX_NLL);
    RefRun r = {g, n, 0, false};
    int64_t npix = n * shape_numel(head->shape);
    double *out = xcalloc((size_t)npix, sizeof(double));
    const double *in[3] = {l, x, NULL};
    ref_kernels[head->op](&r, head, in, out);
    double loss = 0;
    for (int64_t p = 0; p < npix; p++) loss += out[p];
    if (nll) memcpy(nll, out, (size_t)npix * sizeof(double));
    if (dl) {
        /* the head's backward node, as autodiff would emit it: (l, x, dnll = 1) */
        Node bwd = *head;
        bwd.op = head->op == IR_DMOL_NLL ? IR_DMOL_NLL_BWD : IR_SOFTMAX_NLL_BWD;
        bwd.nin = 3;
        bwd.in[2] = g->nll;
        bwd.shape = g->nodes[head->in[0]].shape;
        for (int64_t p = 0; p < npix; p++) out[p] = 1.0;
        in[2] = out;
        int64_t nl = n * shape_numel(bwd.shape);
        memset(dl, 0, (size_t)nl * sizeof(double));
        ref_kernels[bwd.op](&r, &bwd, in, dl);
    }
    free(out);
    return loss;
}
