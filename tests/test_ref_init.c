/*
 * test_ref_init.c — the data-dependent weight-norm initialisation of the
 * reference backend. After ref_init on a batch, a fresh evaluation-mode
 * forward pass with the returned parameters must show every
 * weight-normalised layer's output with per-channel mean 0 and variance
 * init_scale^2 on that batch (which holds only if each layer was recomputed
 * with its new g and b before later layers saw it), parameters other than g
 * and b untouched. Checked on a small hand-built network (conv, strided
 * conv, deconv, nin with init_scale 0.1) and on the spec's whole network,
 * conditional and not, and through the float adapter.
 */
#include "test_ref_util.h"

/* Per-channel mean and variance of node y (batched, n images) after a
 * forward pass; returns the worst |mean| / scale and |var / scale^2 - 1|. */
static void layer_stats(const RefExec *e, const Graph *g, int y, int n, double scale, double *worst_mean,
                        double *worst_var) {
    const Shape *s = tb_shape(g, y);
    int64_t O = s->d[2], count = n * shape_numel(*s) / O;
    const double *v = ref_value(e, y);
    for (int64_t o = 0; o < O; o++) {
        double m = 0, q = 0;
        for (int64_t t = 0; t < count; t++) m += v[t * O + o];
        m /= (double)count;
        for (int64_t t = 0; t < count; t++) q += (v[t * O + o] - m) * (v[t * O + o] - m);
        q /= (double)count;
        *worst_mean = fmax(*worst_mean, fabs(m) / scale);
        *worst_var = fmax(*worst_var, fabs(q / (scale * scale) - 1));
    }
}

/* Is y a conv/deconv over WNORM(v, g) with a PR_BIAS bias (what init sets)? */
static bool is_wn_layer(const Graph *g, int y) {
    const Node *nd = &g->nodes[y];
    if ((nd->op != IR_CONV2D && nd->op != IR_DECONV2D) || nd->nin < 3) return false;
    return g->nodes[nd->in[1]].op == IR_WNORM && g->nodes[nd->in[2]].op == IR_PARAM &&
           g->nodes[nd->in[2]].a.role == PR_BIAS;
}

/* Run ref_init, then check every layer on a fresh forward pass; returns the
 * number of layers checked. */
static int init_and_check(const Graph *g, int n, double *params, const double *x, const int32_t *labels) {
    ParamLayout pl = ir_param_layout(g);
    double *before = malloc((size_t)pl.total * sizeof(double));
    memcpy(before, params, (size_t)pl.total * sizeof(double));
    RefExec *e = ref_new(g, n);
    ref_init(e, params, x, labels);
    for (int p = 0; p < pl.n; p++) {
        ParamRole role = g->nodes[pl.p[p].node].a.role;
        bool changed = memcmp(before + pl.p[p].offset, params + pl.p[p].offset,
                              (size_t)pl.p[p].numel * sizeof(double)) != 0;
        if (role != PR_WN_G && role != PR_BIAS && changed) fail_msg("init changed %s", pl.p[p].name);
        if ((role == PR_WN_G || role == PR_BIAS) && !changed) fail_msg("init left %s alone", pl.p[p].name);
    }
    RefExec *f = ref_new(g, n);
    ref_forward(f, params, x, labels, 0, false);
    int layers = 0;
    for (int i = 0; i < g->n; i++) {
        if (!is_wn_layer(g, i)) continue;
        double scale = g->nodes[i].a.init_scale != 0 ? g->nodes[i].a.init_scale : 1.0, wm = 0, wv = 0;
        layer_stats(f, g, i, n, scale, &wm, &wv);
        if (wm > 1e-9 || wv > 1e-6)
            fail_msg("layer %%%d (%s, init_scale %g): per-channel mean off by %.2g·scale, variance by %.2g relative",
                     i, g->nodes[i].layer >= 0 ? g->layers[g->nodes[i].layer].name : "?", scale, wm, wv);
        layers++;
    }
    ref_free(f);
    ref_free(e);
    free(before);
    ir_param_layout_free(&pl);
    return layers;
}

static int wn_param(Graph *g, const char *P, const char *part, int rank, const int64_t *d, ParamRole role) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.%s", P, part);
    return tb_param(g, nm, rank, d, role, role == PR_WN_V ? 0.05 : 0, role == PR_WN_G ? 1 : 0);
}

/* conv(x, P) with w = WNORM(P.v, P.g) and bias P.b */
static int wn_conv(Graph *g, DiagList *dl, const char *P, int x, int O, int kh, int kw, int stride, ShiftKind sh,
                   double init_scale, bool deconv) {
    int64_t C = tb_shape(g, x)->d[2];
    int64_t dv[4] = {kh, kw, deconv ? O : C, deconv ? C : O}, dn[2] = {C, O}, dO[1] = {O};
    bool nin = kh == 1 && kw == 1 && !deconv;
    int v = nin ? wn_param(g, P, "v", 2, dn, PR_WN_V) : wn_param(g, P, "v", 4, dv, PR_WN_V);
    int gg = wn_param(g, P, "g", 1, dO, PR_WN_G), b = wn_param(g, P, "b", 1, dO, PR_BIAS);
    Attrs wa = {0};
    wa.axis = nin ? 1 : deconv ? 2 : 3;
    int in2[2] = {v, gg};
    int w = tb_op(g, dl, IR_WNORM, in2, 2, &wa);
    Attrs a;
    tb_conv_attrs(&a, kh, kw, stride, sh);
    if (deconv) a.pad_t = a.pad_l = a.pad_r = 0, a.crop_l = sh == SHIFT_DOWN ? (kw - 1) / 2 : 0;
    a.init_scale = init_scale;
    int in3[3] = {x, w, b};
    return tb_op(g, dl, deconv ? IR_DECONV2D : IR_CONV2D, in3, 3, &a);
}

/* x → conv [2,3] → concat_elu → strided conv [2,2] → elu → deconv [2,3] →
 * concat_elu → nin (init_scale 0.1) → conv [2,2] (init_scale 0) */
static void test_init_small_network(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    ir_graph_init(&g);
    diag_init(&dl);
    g.H = 8, g.W = 8, g.C = 3;
    g.x = tb_op(&g, &dl, IR_INPUT, NULL, 0, NULL);
    int y = wn_conv(&g, &dl, "a", g.x, 6, 2, 3, 1, SHIFT_DOWN, 1.0, false);
    y = wn_conv(&g, &dl, "b", tb_op1(&g, &dl, IR_CONCAT_ELU, y), 5, 2, 2, 2, SHIFT_DOWN_RIGHT, 1.0, false);
    y = wn_conv(&g, &dl, "c", tb_op1(&g, &dl, IR_ELU, y), 4, 2, 3, 2, SHIFT_DOWN, 1.0, true);
    y = wn_conv(&g, &dl, "d", tb_op1(&g, &dl, IR_CONCAT_ELU, y), 7, 1, 1, 1, SHIFT_NONE, 0.1, false);
    y = wn_conv(&g, &dl, "e", y, 3, 2, 2, 1, SHIFT_DOWN_RIGHT, 0, false);
    g.nfwd = g.n;
    enum { N = 4 };
    TRng r = {2024};
    ParamLayout pl = ir_param_layout(&g);
    double *params = malloc((size_t)pl.total * sizeof(double));
    for (int p = 0; p < pl.n; p++)
        for (int64_t t = 0; t < pl.p[p].numel; t++)
            params[pl.p[p].offset + t] = g.nodes[pl.p[p].node].a.role == PR_WN_V ? 0.05 * trng_normal(&r) : 0.5;
    double x[N * 8 * 8 * 3];
    for (size_t t = 0; t < sizeof x / sizeof *x; t++) x[t] = trng_range(&r, -1, 1);
    assert_int_equal(init_and_check(&g, N, params, x, NULL), 5);
    free(params);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* The spec's whole network (R=1, F=8), unconditional and conditional; and
 * the float adapter's init agrees with ref_init to float rounding. */
static void check_spec_network(const char *const *sets, int nsets) {
    Graph g;
    net_compile(&g, "pixelcnnpp_cifar10", sets, nsets);
    DiagList dl;
    diag_init(&dl);
    assert_true(ad_differentiate(&g, false, &dl));
    enum { N = 4 };
    TRng r = {99};
    ParamLayout pl = ir_param_layout(&g);
    double *params = malloc((size_t)pl.total * sizeof(double));
    for (int p = 0; p < pl.n; p++) {
        const Node *nd = &g.nodes[pl.p[p].node];
        for (int64_t t = 0; t < pl.p[p].numel; t++)
            params[pl.p[p].offset + t] = nd->a.init_std > 0 ? nd->a.init_std * trng_normal(&r) : nd->a.init_value;
    }
    int64_t nx = (int64_t)N * g.H * g.W * g.C;
    double *x = malloc((size_t)nx * sizeof(double));
    for (int64_t t = 0; t < nx; t++) x[t] = (double)(float)((float)(trng_next(&r) % 256) / 127.5f - 1.0f);
    int32_t labels[N] = {0, 1, 2, 3};
    float *pf = malloc((size_t)pl.total * sizeof(float)), *xf = malloc((size_t)nx * sizeof(float));
    for (int64_t t = 0; t < pl.total; t++) pf[t] = (float)params[t];
    for (int64_t t = 0; t < nx; t++) xf[t] = (float)x[t];

    int layers = init_and_check(&g, N, params, x, g.classes ? labels : NULL);
    printf("  %d weight-normalised layers at mean 0, variance init_scale^2\n", layers);
    assert_true(layers > 40);

    char err[256];
    pxc_model *m = ref_model_new(&g, N, err, sizeof err);
    if (!m) fail_msg("%s", err);
    m->init(pf, xf, g.classes ? labels : NULL, N, NULL);
    for (int64_t t = 0; t < pl.total; t++)
        if (fabs(pf[t] - params[t]) > 1e-5 * fmax(1, fabs(params[t])))
            fail_msg("adapter init differs at %lld: %g vs %g", (long long)t, pf[t], params[t]);
    m->release(m);
    free(pf), free(xf), free(params), free(x);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

static void test_init_spec_network(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "dropout=0.5"};
    check_spec_network(sets, 6);
}

static void test_init_spec_network_conditional(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=3", "height=8", "width=8", "channels=1",
                          "classes=4"};
    check_spec_network(sets, 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_small_network),
        cmocka_unit_test(test_init_spec_network),
        cmocka_unit_test(test_init_spec_network_conditional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
