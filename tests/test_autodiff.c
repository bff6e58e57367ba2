/*
 * test_autodiff.c — the structure of the backward graph ad_differentiate
 * appends: its printed text on a small graph (fan-out summed with ADD, the
 * seed, the rule of each op), SrcLoc and layer carried from the forward
 * node, g->grad and g->dx, ir_verify on the result, parameters that do not
 * reach the loss, and the errors (no loss, differentiated twice, an op
 * without a rule on the path) with the graph left as it was.
 */
#include "test_ref_util.h"

static SrcLoc at(int line, int col) {
    SrcLoc l = {"m.yaml", line, col};
    return l;
}

/* x → conv2d (layer c1) → elu, add(elu, conv) (layer act) → sum; optionally
 * a parameter nobody uses. Returns the conv node. */
static int small_graph(Graph *g, DiagList *dl, bool unused_param) {
    ir_graph_init(g);
    g->H = 2, g->W = 3, g->C = 2;
    ir_add_layer(g, "in", "input", at(1, 1));
    g->x = ir_add(g, dl, IR_INPUT, NULL, 0, NULL, at(2, 3));
    g->cur_layer = -1;
    ir_add_layer(g, "c1", "conv2d", at(3, 5));
    int64_t d[4] = {2, 3, 2, 4}, db[1] = {4};
    int w = ir_param(g, "c1.w", ir_shape(4, d, false), PR_PLAIN, 0.1, 0, at(3, 5));
    int b = ir_param(g, "c1.b", ir_shape(1, db, false), PR_BIAS, 0, 0, at(3, 5));
    if (unused_param) ir_param(g, "spare", ir_shape(1, db, false), PR_PLAIN, 0.1, 0, at(3, 7));
    Attrs a;
    tb_conv_attrs(&a, 2, 3, 1, SHIFT_DOWN);
    int in[3] = {g->x, w, b};
    int c = ir_add(g, dl, IR_CONV2D, in, 3, &a, at(3, 9));
    g->cur_layer = -1;
    ir_add_layer(g, "act", "elu", at(4, 5));
    int e = ir_add(g, dl, IR_ELU, &c, 1, NULL, at(4, 9));
    int in2[2] = {e, c};
    int s = ir_add(g, dl, IR_ADD, in2, 2, NULL, at(5, 9));
    g->loss = ir_add(g, dl, IR_SUM, &s, 1, NULL, at(6, 9));
    return c;
}

static char *print_to_string(const Graph *g, int from, int to) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ir_print(g, f, from, to);
    fclose(f);
    return buf;
}

/* The backward graph as text: seed, broadcast of the sum, elu's rule, the
 * conv's gradient summed over its two consumers, then the conv's three
 * rules; every line keeps the layer and YAML position of its forward node. */
static void test_backward_text(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    small_graph(&g, &dl, false);
    assert_true(ad_differentiate(&g, true, &dl));
    assert_true(ir_verify(&g, &dl));
    assert_int_equal(g.nfwd, 7);
    char *text = print_to_string(&g, g.nfwd, g.n);
    const char *want =
        "%7 = ones() : [1]  # act @6:9\n"
        "%8 = broadcast(%7) : 2x3x4  # act @6:9\n"
        "%9 = elu_bwd(%3, %8) : 2x3x4  # act @4:9\n"
        "%10 = add(%8, %9) : 2x3x4  # c1 @3:9\n"
        "%11 = conv2d_dx(%10, %1) {k=2x3 stride=1 pad=1,1,1,0 shift=down} : 2x3x2  # c1 @3:9\n"
        "%12 = conv2d_dw(%0, %10) {k=2x3 stride=1 pad=1,1,1,0 shift=down} : [2,3,2,4]  # c1 @3:9\n"
        "%13 = bias_grad(%10) : [4]  # c1 @3:9\n";
    assert_string_equal(text, want);
    free(text);
    /* g->grad: one entry per node, the forward nodes' gradients, -1 elsewhere */
    int want_grad[14] = {11, 12, 13, 10, 8, 8, 7, -1, -1, -1, -1, -1, -1, -1};
    assert_int_equal(g.n, 14);
    for (int i = 0; i < 14; i++) assert_int_equal(g.grad[i], want_grad[i]);
    assert_int_equal(g.dx, 11);
    for (int i = g.nfwd; i < g.n; i++) assert_string_equal(g.nodes[i].loc.file, "m.yaml");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* Without want_dx nothing is spent on the input's gradient. */
static void test_no_dx(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    small_graph(&g, &dl, false);
    assert_true(ad_differentiate(&g, false, &dl));
    assert_int_equal(g.dx, -1);
    assert_int_equal(g.grad[g.x], -1);
    for (int i = g.nfwd; i < g.n; i++) assert_true(g.nodes[i].op != IR_CONV2D_DX);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* A parameter that does not reach the loss has no gradient node, and the
 * reference backend reports zeros for it. */
static void test_unused_param(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    small_graph(&g, &dl, true);
    assert_true(ad_differentiate(&g, false, &dl));
    ParamLayout pl = ir_param_layout(&g);
    assert_int_equal(pl.n, 3);
    assert_string_equal(pl.p[2].name, "spare");
    assert_int_equal(g.grad[pl.p[2].node], -1);
    double params[48 + 4 + 4], grad[56], x[2 * 2 * 3 * 2]; /* w [2,3,2,4], b [4], spare [4] */
    for (int i = 0; i < 56; i++) params[i] = 0.1 * (i % 7) - 0.3, grad[i] = 99;
    for (int i = 0; i < 24; i++) x[i] = 0.05 * i - 0.5;
    RefExec *e = ref_new(&g, 2);
    ref_forward(e, params, x, NULL, 0, true);
    ref_backward(e);
    ref_grads(e, grad);
    for (int i = 52; i < 56; i++) assert_true(grad[i] == 0.0);
    for (int i = 48; i < 52; i++) assert_true(grad[i] != 0.0 && grad[i] != 99); /* db = sum of dy */
    ref_free(e);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

static void test_errors(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    /* no loss */
    small_graph(&g, &dl, false);
    g.loss = -1;
    assert_false(ad_differentiate(&g, false, &dl));
    assert_int_equal(dl.nerrors, 1);
    assert_null(g.grad);
    ir_graph_free(&g);
    /* twice */
    small_graph(&g, &dl, false);
    assert_true(ad_differentiate(&g, false, &dl));
    int n = g.n;
    assert_false(ad_differentiate(&g, false, &dl));
    assert_int_equal(g.n, n);
    assert_int_equal(dl.nerrors, 2);
    ir_graph_free(&g);
    /* a backward-only op on the path to the loss: no rule; the graph is left as it was */
    small_graph(&g, &dl, false);
    int s = g.nodes[g.loss].in[0];
    int in[2] = {s, s};
    int bad = ir_add(&g, &dl, IR_ELU_BWD, in, 2, NULL, at(9, 1));
    g.loss = ir_add(&g, &dl, IR_SUM, &bad, 1, NULL, at(9, 5));
    int before = g.n;
    assert_false(ad_differentiate(&g, false, &dl));
    assert_int_equal(g.n, before);
    assert_null(g.grad);
    assert_int_equal(dl.nerrors, 3);
    assert_non_null(strstr(dl.items[dl.n - 1].msg, "elu_bwd"));
    assert_int_equal(dl.items[dl.n - 1].loc.line, 9);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* The whole network from the spec: every parameter gets a gradient node,
 * every backward node a layer and a YAML line, and the result verifies. */
static void test_spec_network(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "classes=4"};
    Graph g;
    net_compile(&g, "pixelcnnpp_cifar10", sets, 6);
    DiagList dl;
    diag_init(&dl);
    assert_true(ad_differentiate(&g, true, &dl));
    assert_true(ir_verify(&g, &dl));
    assert_true(g.dx >= 0);
    assert_true(shape_eq(g.nodes[g.dx].shape, g.nodes[g.x].shape));
    for (int i = 0; i < g.nfwd; i++)
        if (g.nodes[i].op == IR_PARAM) {
            int d = g.grad[i];
            if (d < 0) fail_msg("parameter %s has no gradient", g.nodes[i].name);
            assert_true(shape_eq(g.nodes[d].shape, g.nodes[i].shape));
        }
    int no_line = 0;
    for (int i = g.nfwd; i < g.n; i++) no_line += g.nodes[i].loc.line <= 0;
    assert_int_equal(no_line, 0);
    printf("  %d forward nodes, %d backward nodes\n", g.nfwd, g.n - g.nfwd);
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_text),
        cmocka_unit_test(test_no_dx),
        cmocka_unit_test(test_unused_param),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_spec_network),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
