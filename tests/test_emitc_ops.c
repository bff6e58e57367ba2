/*
 * test_emitc_ops.c — networks built by hand with the IR builder that use the
 * ops and forms the PixelCNN++ specs do not: plain (not weight-normalised)
 * weights, a conv without bias, a non-causal 3x3 'none' conv (bottom
 * padding), a stride-2 conv, a deconv of a bias-free conv, slice, sigmoid,
 * tanh, elu, a shift up and left (negative), a parameter used twice (its
 * gradient is a sum), and a parameter that does not reach the loss (its
 * gradient must be zero). Emitted C (cc -std=c11 -O2 -Wall -Wextra -Werror,
 * plain-C GEMM) against the reference backend: loss within 1e-5 relative,
 * every gradient tensor within 1e-4 of its max.
 *
 * A second network puts the Winograd forms (lower.c) on geometries the
 * specs do not: a 3x3 same-size conv (three tap rows, one zero column each
 * side), a 2-column conv padded on the right (no column on the left), a
 * 3-column conv padded two columns on the left, rows of 13 columns (three
 * whole tiles and one column) — through the emitted C and the JIT.
 */
#include "llvm/jit.h"
#include "test_emitc_util.h"

static int conv(Graph *g, DiagList *dl, int x, int w, int b, int kh, int kw, int stride, ShiftKind sh) {
    Attrs a;
    tb_conv_attrs(&a, kh, kw, stride, sh);
    int in[3] = {x, w, b};
    return tb_op(g, dl, IR_CONV2D, in, b >= 0 ? 3 : 2, &a);
}

static int wn(Graph *g, DiagList *dl, const char *name, int rank, const int64_t *d, int axis) {
    char nv[64], ng[64];
    snprintf(nv, sizeof nv, "%s.v", name);
    snprintf(ng, sizeof ng, "%s.g", name);
    int v = tb_param(g, nv, rank, d, PR_WN_V, 0.05, 0);
    int64_t o = d[axis];
    int gg = tb_param(g, ng, 1, &o, PR_WN_G, 0, 1);
    Attrs a;
    memset(&a, 0, sizeof a);
    a.axis = axis;
    int in[2] = {v, gg};
    return tb_op(g, dl, IR_WNORM, in, 2, &a);
}

/* x [8,8,3] -> ... -> l [8,8,10] -> dmol (1 component) -> loss */
/* g->nll and g->loss: one logistic per channel (nr_mix 1) of g->out, summed */
static void dmol_head(Graph *g, DiagList *dl) {
    Attrs ad;
    memset(&ad, 0, sizeof ad);
    ad.nr_mix = 1;
    int in[2] = {g->out, g->x};
    g->nll = tb_op(g, dl, IR_DMOL_NLL, in, 2, &ad);
    g->loss = tb_op1(g, dl, IR_SUM, g->nll);
}

/* e->g built: lower it, emit C and load it (e->m), and lay out its parameters. */
static void lower_and_emit(EmNet *e) {
    e->p = kir_lower(&e->g, NULL, &e->dl);
    if (!e->p) {
        diag_print(&e->dl, stderr, false);
        fail_msg("kir_lower failed");
    }
    e->pl = ir_param_layout(&e->g);
    snprintf(e->dir, sizeof e->dir, "/tmp/pxc_emitc_XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    char err[16384];
    if (emitc_build_and_load(e->p, e->dir, "-DPXC_NO_CBLAS", &e->m, err, sizeof err) != 0) fail_msg("%s", err);
}

static void build(Graph *g, DiagList *dl) {
    ir_graph_init(g);
    diag_init(dl);
    g->H = 8, g->W = 8, g->C = 3, g->classes = 0;
    g->x = tb_op(g, dl, IR_INPUT, NULL, 0, NULL);
    int64_t d1[4] = {2, 2, 3, 8}, d8 = 8;
    int w1 = tb_param(g, "w1", 4, d1, PR_PLAIN, 0.3, 0);
    int b1 = tb_param(g, "b1", 1, &d8, PR_BIAS, 0.1, 0);
    int a = conv(g, dl, g->x, w1, b1, 2, 2, 1, SHIFT_DOWN_RIGHT);          /* [8,8,8] */
    Attrs sl;
    memset(&sl, 0, sizeof sl);
    sl.start = 0, sl.len = 5;
    int s = tb_op1(g, dl, IR_SIGMOID, tb_op(g, dl, IR_SLICE, &a, 1, &sl));
    sl.start = 5, sl.len = 3;
    int t = tb_op1(g, dl, IR_TANH, tb_op(g, dl, IR_SLICE, &a, 1, &sl));
    int in2[2] = {s, t};
    int m = tb_op1(g, dl, IR_ELU, tb_op(g, dl, IR_CONCAT, in2, 2, NULL));   /* [8,8,8] */
    int64_t d3[4] = {3, 3, 8, 8};
    Attrs a3;
    tb_conv_attrs(&a3, 3, 3, 1, SHIFT_NONE);
    a3.pad_t = a3.pad_b = a3.pad_l = a3.pad_r = 1;                         /* non-causal, same size */
    int in3[2] = {m, tb_param(g, "w3", 4, d3, PR_PLAIN, 0.1, 0)};
    int c3 = tb_op(g, dl, IR_CONV2D, in3, 2, &a3);                           /* no bias */
    int64_t d4[4] = {2, 3, 8, 8};
    int c4 = conv(g, dl, c3, wn(g, dl, "down", 4, d4, 3), -1, 2, 3, 2, SHIFT_DOWN);   /* [4,4,8] */
    int64_t d5[4] = {2, 3, 8, 8};
    Attrs a5;
    memset(&a5, 0, sizeof a5);
    a5.kh = 2, a5.kw = 3, a5.stride = 2, a5.shift = SHIFT_DOWN, a5.crop_l = 1;
    int in5[3] = {c4, wn(g, dl, "up", 4, d5, 2), tb_param(g, "up.b", 1, &d8, PR_BIAS, 0.1, 0)};
    int up = tb_op(g, dl, IR_DECONV2D, in5, 3, &a5);                         /* [8,8,8] */
    Attrs sh;
    memset(&sh, 0, sizeof sh);
    sh.dy = -1, sh.dx = -1;                                                  /* up and left */
    int h = tb_op2(g, dl, IR_ADD, up, tb_op(g, dl, IR_SHIFT, &m, 1, &sh));
    int64_t dm[2] = {8, 8};
    h = tb_op2(g, dl, IR_ADD, h, conv(g, dl, m, tb_param(g, "mix", 2, dm, PR_PLAIN, 0.1, 0), -1, 1, 1, 1, SHIFT_NONE));
    int64_t dn[2] = {8, 10}, d10 = 10;
    int wout = tb_param(g, "out.w", 2, dn, PR_PLAIN, 0.2, 0);
    int l1 = conv(g, dl, h, wout, tb_param(g, "out.b", 1, &d10, PR_BIAS, 0.1, 0), 1, 1, 1, SHIFT_NONE);
    int l2 = conv(g, dl, tb_op1(g, dl, IR_ELU, h), wout, -1, 1, 1, 1, SHIFT_NONE);   /* out.w used twice */
    g->out = tb_op2(g, dl, IR_ADD, l1, l2);
    dmol_head(g, dl);
    /* a parameter that does not reach the loss */
    tb_param(g, "dangling", 1, &d8, PR_PLAIN, 0.1, 0);
    assert_true(ir_verify(g, dl));
    assert_true(ad_differentiate(g, false, dl));
}

static void test_hand_built(void **state) {
    (void)state;
    EmNet e;
    memset(&e, 0, sizeof e);
    build(&e.g, &e.dl);
    lower_and_emit(&e);
    pxc_model *pm = e.m.model;
    const Graph *g = &e.g;
    int n = 3;
    int64_t np = e.pl.total, nx = (int64_t)n * 8 * 8 * 3;
    TRng r = {9};
    double *pd = malloc((size_t)np * sizeof(double)), *xd = malloc((size_t)nx * sizeof(double));
    float *pf = malloc((size_t)np * 4), *xf = malloc((size_t)nx * 4), *grad = malloc((size_t)np * 4);
    ParamLayout *pl = &e.pl;
    for (int k = 0; k < pl->n; k++) {
        const Node *nd = &g->nodes[pl->p[k].node];
        for (int64_t i = 0; i < pl->p[k].numel; i++)
            pd[pl->p[k].offset + i] = nd->a.role == PR_WN_G ? trng_range(&r, 0.5, 1.5) : nd->a.init_std * trng_normal(&r);
    }
    for (int64_t i = 0; i < np; i++) pf[i] = (float)pd[i], pd[i] = pf[i];
    em_images(&r, xf, xd, nx);
    RefExec *ex = ref_new(g, n);
    EmArena ar = em_arena(pm->arena_bytes(n));
    double lr = ref_forward(ex, pd, xd, NULL, 0, true);
    double lf = pm->forward(pf, xf, NULL, n, 0, 1, ar.p, NULL, NULL);
    printf("  loss %.9g, reference %.9g\n", lf, lr);
    assert_true(fabs(lf - lr) <= 1e-5 * fabs(lr));
    ref_backward(ex);
    double *gd = malloc((size_t)np * sizeof(double));
    ref_grads(ex, gd);
    memset(grad, 0xff, (size_t)np * 4);
    pm->backward(pf, xf, NULL, n, ar.p, grad);
    em_arena_check(&ar);
    em_check_grads(&e, grad, gd, 1e-4, "hand-built network");
    for (int k = 0; k < pl->n; k++)
        if (!strcmp(pl->p[k].name, "dangling"))
            for (int64_t i = 0; i < pl->p[k].numel; i++) assert_true(grad[pl->p[k].offset + i] == 0.0f);
    ref_free(ex);
    free(pd), free(xd), free(pf), free(xf), free(grad), free(gd), free(ar.p);
    em_free(&e);
}

/* 16 channels throughout, rows of 13: every stride-1 conv past the first is Winograd. */
static void build_wino(Graph *g, DiagList *dl) {
    ir_graph_init(g);
    diag_init(dl);
    g->H = 5, g->W = 13, g->C = 3, g->classes = 0;
    g->x = tb_op(g, dl, IR_INPUT, NULL, 0, NULL);
    int64_t d1[4] = {2, 2, 3, 16}, d16 = 16;
    int a = conv(g, dl, g->x, tb_param(g, "w1", 4, d1, PR_PLAIN, 0.3, 0), tb_param(g, "b1", 1, &d16, PR_BIAS, 0.1, 0),
                 2, 2, 1, SHIFT_DOWN_RIGHT);   /* [5,13,16]; 3 input channels: direct form */
    int m = tb_op1(g, dl, IR_ELU, a);
    static const int geo[3][6] = {
        /* kh, kw, pad_t, pad_b, pad_l, pad_r */
        {3, 3, 1, 1, 1, 1},   /* F(4,3), three tap rows */
        {2, 2, 1, 0, 0, 1},   /* F(4,2), padded on the right only */
        {2, 3, 1, 0, 2, 0},   /* F(4,3), two columns on the left */
    };
    for (int k = 0; k < 3; k++) {
        int64_t dw[4] = {geo[k][0], geo[k][1], 16, 16};
        char wn_[16], bn[16];   /* (ir_param copies the names) */
        snprintf(wn_, sizeof wn_, "w%d", k + 2);
        snprintf(bn, sizeof bn, "b%d", k + 2);
        Attrs at;
        tb_conv_attrs(&at, geo[k][0], geo[k][1], 1, SHIFT_NONE);
        at.pad_t = geo[k][2], at.pad_b = geo[k][3], at.pad_l = geo[k][4], at.pad_r = geo[k][5];
        int in[3] = {m, tb_param(g, wn_, 4, dw, PR_PLAIN, 0.1, 0), tb_param(g, bn, 1, &d16, PR_BIAS, 0.1, 0)};
        int c = tb_op(g, dl, IR_CONV2D, in, 3, &at);
        m = tb_op1(g, dl, IR_ELU, tb_op2(g, dl, IR_ADD, c, m));
    }
    int64_t dn[2] = {16, 10}, d10 = 10;
    g->out = conv(g, dl, m, tb_param(g, "out.w", 2, dn, PR_PLAIN, 0.2, 0), tb_param(g, "out.b", 1, &d10, PR_BIAS, 0.1, 0),
                  1, 1, 1, SHIFT_NONE);
    dmol_head(g, dl);
    assert_true(ir_verify(g, dl));
    assert_true(ad_differentiate(g, false, dl));
}

static void test_winograd_geometries(void **state) {
    (void)state;
    EmNet e;
    memset(&e, 0, sizeof e);
    build_wino(&e.g, &e.dl);
    lower_and_emit(&e);
    /* all three run in the Winograd form: one output transform each */
    int outs = 0;
    const KirEntry *fw = &e.p->entry[KE_FORWARD];
    for (int i = 0; i < fw->nsteps; i++) outs += strstr(e.p->funcs[fw->steps[i].func].name, "_pack_winograd_out") != NULL;
    assert_int_equal(outs, 3);
    JitOptions o = jit_options_default();
    o.use_cache = false;
    pxc_model *jm = jit_compile(e.p, &o, &e.dl);
    if (!jm) {
        diag_print(&e.dl, stderr, false);
        fail_msg("jit_compile failed");
    }
    const Graph *g = &e.g;
    int n = 3;
    int64_t np = e.pl.total, nx = (int64_t)n * g->H * g->W * g->C;
    TRng r = {11};
    double *pd = malloc((size_t)np * sizeof(double)), *xd = malloc((size_t)nx * sizeof(double));
    float *pf = malloc((size_t)np * 4), *xf = malloc((size_t)nx * 4), *grad = malloc((size_t)np * 4);
    for (int k = 0; k < e.pl.n; k++) {
        const Node *nd = &g->nodes[e.pl.p[k].node];
        for (int64_t i = 0; i < e.pl.p[k].numel; i++) pd[e.pl.p[k].offset + i] = nd->a.init_std * trng_normal(&r);
    }
    for (int64_t i = 0; i < np; i++) pf[i] = (float)pd[i], pd[i] = pf[i];
    em_images(&r, xf, xd, nx);
    RefExec *ex = ref_new(g, n);
    double lr = ref_forward(ex, pd, xd, NULL, 0, true);
    ref_backward(ex);
    double *gd = malloc((size_t)np * sizeof(double));
    ref_grads(ex, gd);
    pxc_model *models[2] = {e.m.model, jm};
    const char *names[2] = {"emitted C", "JIT"};
    for (int k = 0; k < 2; k++) {
        pxc_model *pm = models[k];
        EmArena ar = em_arena(pm->arena_bytes(n));
        double lf = pm->forward(pf, xf, NULL, n, 0, 1, ar.p, NULL, NULL);
        printf("  %s: loss %.9g, reference %.9g\n", names[k], lf, lr);
        assert_true(fabs(lf - lr) <= 1e-5 * fabs(lr));
        memset(grad, 0xff, (size_t)np * 4);
        pm->backward(pf, xf, NULL, n, ar.p, grad);
        em_arena_check(&ar);
        em_check_grads(&e, grad, gd, 1e-4, names[k]);
        free(ar.p);
    }
    jm->release(jm);
    ref_free(ex);
    free(pd), free(xd), free(pf), free(xf), free(grad), free(gd);
    em_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_built),
        cmocka_unit_test(test_winograd_geometries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
