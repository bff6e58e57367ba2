/*
 * ref_model.c — the pxc_model ABI (runtime/pxc_model.h) over the reference
 * executor: float buffers in and out, double inside. Slow and exact; it lets
 * the training runtime and the parity tests run on the reference backend.
 *
 * The ABI's functions take no model pointer (a compiled model bakes its
 * state into its code), so each live reference model owns one of
 * REF_MODEL_SLOTS slots, and the functions it hands out are that slot's
 * trampolines. The scratch arena of the ABI is not used: the executor keeps
 * its own buffers (sized for the batch last run).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

#define REF_MODEL_SLOTS 8

typedef struct RefModel {
    pxc_model m;
    Graph g;            /* a private copy of the differentiated graph */
    int max_batch;
    RefExec *exec;      /* for exec_n images, created on demand */
    int exec_n;
    pxc_tensor *tensors;
    double *params, *grad; /* [nparams] */
    double *x;             /* [max_batch, H, W, C] */
    double *l, *dl;        /* [max_batch, H, W, out channels], for loss() */
} RefModel;

static RefModel *slots[REF_MODEL_SLOTS];

/* ---- a private copy of the graph --------------------------------------------- */

static void clone_graph(Graph *dst, const Graph *src) {
    ir_graph_init(dst);
    dst->n = dst->cap = src->n;
    dst->nodes = xmalloc((size_t)src->n * sizeof *dst->nodes);
    memcpy(dst->nodes, src->nodes, (size_t)src->n * sizeof *dst->nodes);
    for (int i = 0; i < src->n; i++) {
        Node *nd = &dst->nodes[i];
        nd->name = nd->name ? arena_strdup(&dst->arena, nd->name) : NULL;
        nd->loc = srcloc_none();  /* the source text is not kept */
    }
    dst->nlayers = dst->lcap = src->nlayers;
    dst->layers = xmalloc((size_t)(src->nlayers ? src->nlayers : 1) * sizeof *dst->layers);
    for (int i = 0; i < src->nlayers; i++) {
        dst->layers[i].name = arena_strdup(&dst->arena, src->layers[i].name);
        dst->layers[i].kind = arena_strdup(&dst->arena, src->layers[i].kind);
        dst->layers[i].loc = srcloc_none();
    }
    dst->H = src->H, dst->W = src->W, dst->C = src->C, dst->classes = src->classes;
    dst->x = src->x, dst->labels = src->labels, dst->out = src->out, dst->nll = src->nll;
    dst->loss = src->loss, dst->nfwd = src->nfwd, dst->dx = src->dx;
    dst->grad = xmalloc((size_t)src->n * sizeof *dst->grad);
    memcpy(dst->grad, src->grad, (size_t)src->n * sizeof *dst->grad);
}

/* ---- the ABI functions, given their model ------------------------------------- */

static RefExec *exec_for(RefModel *rm, int n) {
    if (rm->exec && rm->exec_n == n) return rm->exec;
    ref_free(rm->exec);
    rm->exec = ref_new(&rm->g, n);
    rm->exec_n = n;
    return rm->exec;
}

static void to_double(double *d, const float *f, int64_t k) {
    for (int64_t i = 0; i < k; i++) d[i] = f[i];
}
static void to_float(float *f, const double *d, int64_t k) {
    for (int64_t i = 0; i < k; i++) f[i] = (float)d[i];
}

static int64_t image_numel(const RefModel *rm) { return (int64_t)rm->m.height * rm->m.width * rm->m.channels; }
static int64_t out_numel(const RefModel *rm) { return (int64_t)rm->m.height * rm->m.width * rm->m.out_channels; }

static size_t slot_arena_bytes(RefModel *rm, int n) {
    (void)rm, (void)n;
    return 64;
}

static double slot_forward(RefModel *rm, const float *params, const float *x, const int32_t *labels, int n,
                           uint64_t seed, int training, void *arena, float *out, float *nll) {
    (void)arena;
    if (n < 1 || n > rm->max_batch) return NAN;
    RefExec *e = exec_for(rm, n);
    to_double(rm->params, params, rm->m.nparams);
    to_double(rm->x, x, n * image_numel(rm));
    double loss = ref_forward(e, rm->params, rm->x, labels, seed, training != 0);
    if (out) to_float(out, ref_value(e, rm->g.out), n * out_numel(rm));
    if (nll) to_float(nll, ref_value(e, rm->g.nll), (int64_t)n * rm->m.height * rm->m.width);
    return loss;
}

static void slot_backward(RefModel *rm, const float *params, const float *x, const int32_t *labels, int n,
                          void *arena, float *grad) {
    (void)params, (void)x, (void)labels, (void)arena;
    if (n < 1 || n > rm->max_batch || !rm->exec || rm->exec_n != n) return;
    ref_backward(rm->exec);
    ref_grads(rm->exec, rm->grad);
    to_float(grad, rm->grad, rm->m.nparams);
}

static double slot_loss(RefModel *rm, const float *l, const float *x, int n, float *dl, float *nll) {
    if (n < 1 || n > rm->max_batch) return NAN;
    to_double(rm->l, l, n * out_numel(rm));
    to_double(rm->x, x, n * image_numel(rm));
    int64_t npix = (int64_t)n * rm->m.height * rm->m.width;
    double *nll_d = nll ? xmalloc((size_t)npix * sizeof(double)) : NULL;
    double loss = ref_loss(&rm->g, n, rm->l, rm->x, dl ? rm->dl : NULL, nll_d);
    if (dl) to_float(dl, rm->dl, n * out_numel(rm));
    if (nll) to_float(nll, nll_d, npix);
    free(nll_d);
    return loss;
}

static void slot_init(RefModel *rm, float *params, const float *x, const int32_t *labels, int n, void *arena) {
    (void)arena;
    if (n < 1 || n > rm->max_batch) return;
    RefExec *e = exec_for(rm, n);
    to_double(rm->params, params, rm->m.nparams);
    to_double(rm->x, x, n * image_numel(rm));
    ref_init(e, rm->params, rm->x, labels);
    to_float(params, rm->params, rm->m.nparams);
}

static void free_model(RefModel *rm) {
    ref_free(rm->exec);
    ir_graph_free(&rm->g);
    free(rm->tensors);
    free(rm->params);
    free(rm->grad);
    free(rm->x);
    free(rm->l);
    free(rm->dl);
    free(rm);
}

static void slot_release(RefModel *rm) {
    for (int k = 0; k < REF_MODEL_SLOTS; k++)
        if (slots[k] == rm) slots[k] = NULL;
    free_model(rm);
}

/* ---- per-slot trampolines ------------------------------------------------------ */

#define SLOT_FUNCS(k)                                                                                          \
    static size_t arena_bytes_##k(int n) { return slot_arena_bytes(slots[k], n); }                            \
    static double forward_##k(const float *p, const float *x, const int32_t *lab, int n, uint64_t seed,        \
                              int training, void *arena, float *out, float *nll) {                             \
        return slot_forward(slots[k], p, x, lab, n, seed, training, arena, out, nll);                          \
    }                                                                                                          \
    static void backward_##k(const float *p, const float *x, const int32_t *lab, int n, void *arena,           \
                             float *grad) {                                                                    \
        slot_backward(slots[k], p, x, lab, n, arena, grad);                                                    \
    }                                                                                                          \
    static double loss_##k(const float *l, const float *x, int n, float *dl, float *nll) {                     \
        return slot_loss(slots[k], l, x, n, dl, nll);                                                          \
    }                                                                                                          \
    static void init_##k(float *p, const float *x, const int32_t *lab, int n, void *arena) {                   \
        slot_init(slots[k], p, x, lab, n, arena);                                                              \
    }                                                                                                          \
    static void release_##k(pxc_model *self) {                                                                 \
        (void)self;                                                                                            \
        slot_release(slots[k]);                                                                                \
    }
SLOT_FUNCS(0)
SLOT_FUNCS(1)
SLOT_FUNCS(2)
SLOT_FUNCS(3)
SLOT_FUNCS(4)
SLOT_FUNCS(5)
SLOT_FUNCS(6)
SLOT_FUNCS(7)
#undef SLOT_FUNCS

static void bind_slot(pxc_model *m, int k) {
#define BIND(i)                                                                                                \
    case i:                                                                                                    \
        m->arena_bytes = arena_bytes_##i, m->forward = forward_##i, m->backward = backward_##i;                \
        m->loss = loss_##i, m->init = init_##i, m->release = release_##i;                                      \
        break;
    switch (k) {
        BIND(0) BIND(1) BIND(2) BIND(3) BIND(4) BIND(5) BIND(6) BIND(7)
    default: pxc_bug("reference model slot %d", k);
    }
#undef BIND
}
_Static_assert(REF_MODEL_SLOTS == 8, "one SLOT_FUNCS and one BIND per slot");

/* ---- construction -------------------------------------------------------------- */

pxc_model *ref_model_new(const Graph *g, int max_batch, char *err, size_t errlen) {
    if (errlen) err[0] = 0;
    if (!g->grad) {
        snprintf(err, errlen, "the reference model needs a differentiated graph (ad_differentiate)");
        return NULL;
    }
    if (g->x < 0 || g->out < 0 || g->nll < 0 || g->loss < 0) {
        snprintf(err, errlen, "the graph lacks its input, output, nll or loss node");
        return NULL;
    }
    OpKind head = g->nodes[g->nll].op;
    if (head != IR_DMOL_NLL && head != IR_SOFTMAX_NLL) {
        snprintf(err, errlen, "the graph's likelihood is %s; expected dmol_nll or softmax_nll", ir_op(head)->name);
        return NULL;
    }
    if (max_batch < 1) {
        snprintf(err, errlen, "max_batch must be at least 1, found %d", max_batch);
        return NULL;
    }
    int slot = -1;
    for (int k = 0; k < REF_MODEL_SLOTS && slot < 0; k++)
        if (!slots[k]) slot = k;
    if (slot < 0) {
        snprintf(err, errlen, "%d reference models are alive; release one first", REF_MODEL_SLOTS);
        return NULL;
    }
    RefModel *rm = xcalloc(1, sizeof *rm);
    clone_graph(&rm->g, g);
    rm->max_batch = max_batch;
    pxc_model *m = &rm->m;
    m->abi_version = PXC_ABI_VERSION;
    m->height = g->H, m->width = g->W, m->channels = g->C, m->classes = g->classes;
    m->head = head == IR_DMOL_NLL ? PXC_HEAD_LOGISTIC_MIXTURE : PXC_HEAD_SOFTMAX256;
    m->nr_mix = head == IR_DMOL_NLL ? g->nodes[g->nll].a.nr_mix : 0;
    m->out_channels = (int)g->nodes[g->out].shape.d[2];

    ParamLayout pl = ir_param_layout(&rm->g);
    rm->tensors = xcalloc((size_t)(pl.n ? pl.n : 1), sizeof *rm->tensors);
    for (int p = 0; p < pl.n; p++) {
        pxc_tensor *t = &rm->tensors[p];
        t->name = pl.p[p].name;  /* lives in rm->g's arena */
        t->rank = pl.p[p].shape.rank;
        for (int k = 0; k < t->rank; k++) t->shape[k] = pl.p[p].shape.d[k];
        t->offset = pl.p[p].offset;
        t->numel = pl.p[p].numel;
    }
    m->nparams = pl.total;
    m->nparam_tensors = pl.n;
    m->params = rm->tensors;
    ir_param_layout_free(&pl);

    rm->params = xcalloc((size_t)(m->nparams ? m->nparams : 1), sizeof(double));
    rm->grad = xcalloc((size_t)(m->nparams ? m->nparams : 1), sizeof(double));
    rm->x = xcalloc((size_t)(max_batch * image_numel(rm)), sizeof(double));
    rm->l = xcalloc((size_t)(max_batch * out_numel(rm)), sizeof(double));
    rm->dl = xcalloc((size_t)(max_batch * out_numel(rm)), sizeof(double));
    m->impl = rm;
    slots[slot] = rm;
    bind_slot(m, slot);
    return m;
}
