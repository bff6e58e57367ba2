/*
 * test_ref_ops.c — the reference kernels against hand-computed values and
 * against independent direct formulas written here differently (explicit
 * padding arrays, gathers instead of scatters), plus the logistic mixture
 * against the independent PyTorch loss vectors in shared/reference/loss.
 */
#include "test_ref_util.h"

#include <cjson/cJSON.h>

/* A forward-only graph: INPUT [H,W,C] (plus LABELS when classes > 0). */
static void graph_with_input(Graph *g, DiagList *dl, int H, int W, int C, int classes) {
    ir_graph_init(g);
    diag_init(dl);
    g->H = H, g->W = W, g->C = C, g->classes = classes;
    g->x = tb_op(g, dl, IR_INPUT, NULL, 0, NULL);
    if (classes) g->labels = tb_op(g, dl, IR_LABELS, NULL, 0, NULL);
}

/* Run g's forward on n images and copy node y's value (n·numel) to out. */
static void run_forward(const Graph *g, int n, const double *params, const double *x, const int32_t *labels,
                        int y, double *out, bool training, uint64_t seed) {
    RefExec *e = ref_new(g, n);
    ref_forward(e, params, x, labels, seed, training);
    const Shape *s = tb_shape(g, y);
    memcpy(out, ref_value(e, y), (size_t)((s->batched ? n : 1) * shape_numel(*s)) * sizeof(double));
    ref_free(e);
}

static void expect_array(const double *got, const double *want, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol))
            fail_msg("%s[%lld]: got %.15g, expected %.15g", what, (long long)i, got[i], want[i]);
}

static int conv_node(Graph *g, DiagList *dl, int x, int w, int b, int kh, int kw, int stride, ShiftKind sh) {
    Attrs a;
    tb_conv_attrs(&a, kh, kw, stride, sh);
    int in[3] = {x, w, b};
    return tb_op(g, dl, IR_CONV2D, in, b >= 0 ? 3 : 2, &a);
}

/* ---- conv2d ------------------------------------------------------------------ */

/* x = 1..12 on a 3x4 image, a 2x3 kernel of ones, shift down: each output
 * sums the rows i-1..i and columns j-1..j+1 that exist. */
static void test_conv_down_2x3_by_hand(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 3, 4, 1, 0);
    int64_t d[4] = {2, 3, 1, 1};
    int y = conv_node(&g, &dl, g.x, tb_param(&g, "w", 4, d, PR_PLAIN, 0, 0), -1, 2, 3, 1, SHIFT_DOWN);
    double w[6] = {1, 1, 1, 1, 1, 1}, x[12], out[12];
    for (int i = 0; i < 12; i++) x[i] = i + 1;
    run_forward(&g, 1, w, x, NULL, y, out, false, 0);
    double want[12] = {3, 6, 9, 7, 14, 24, 30, 22, 30, 48, 54, 38};
    expect_array(out, want, 12, 1e-12, "down conv");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* Random 2x3 down-shifted conv, stride 1 and 2, N=2 H=4 W=6 C=2 O=3, against
 * an explicit zero-padded copy of x and a direct sum. */
static void check_conv_down_direct(int S) {
    enum { N = 2, H = 4, W = 6, C = 2, O = 3, KH = 2, KW = 3 };
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, H, W, C, 0);
    int64_t dw[4] = {KH, KW, C, O}, db[1] = {O};
    int wp = tb_param(&g, "w", 4, dw, PR_PLAIN, 0, 0), bp = tb_param(&g, "b", 1, db, PR_PLAIN, 0, 0);
    int y = conv_node(&g, &dl, g.x, wp, bp, KH, KW, S, SHIFT_DOWN);
    TRng r = {12345 + (uint64_t)S};
    double params[KH * KW * C * O + O], x[N * H * W * C], out[N * H * W * O];
    for (size_t i = 0; i < sizeof params / sizeof *params; i++) params[i] = trng_normal(&r);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = trng_normal(&r);
    run_forward(&g, N, params, x, NULL, y, out, false, 0);

    /* padding: KH-1 = 1 row on top, (KW-1)/2 = 1 column on each side */
    double xp[N][H + 1][W + 2][C];
    memset(xp, 0, sizeof xp);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                for (int c = 0; c < C; c++) xp[n][i + 1][j + 1][c] = x[((n * H + i) * W + j) * C + c];
    double(*w)[KW][C][O] = (double(*)[KW][C][O])params;
    const double *b = params + KH * KW * C * O;
    int Ho = H / S, Wo = W / S;
    assert_int_equal(tb_shape(&g, y)->d[0], Ho);
    assert_int_equal(tb_shape(&g, y)->d[1], Wo);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < Ho; i++)
            for (int j = 0; j < Wo; j++)
                for (int o = 0; o < O; o++) {
                    double want = b[o];
                    for (int a = 0; a < KH; a++)
                        for (int dd = 0; dd < KW; dd++)
                            for (int c = 0; c < C; c++) want += xp[n][S * i + a][S * j + dd][c] * w[a][dd][c][o];
                    double got = out[((n * Ho + i) * Wo + j) * O + o];
                    if (fabs(got - want) > 1e-12) fail_msg("stride %d (%d,%d,%d,%d): %g vs %g", S, n, i, j, o, got, want);
                }
    ir_graph_free(&g);
    diag_free(&dl);
}
static void test_conv_down_direct_s1(void **state) { (void)state; check_conv_down_direct(1); }
static void test_conv_down_direct_s2(void **state) { (void)state; check_conv_down_direct(2); }

/* nin: y[..., o] = b[o] + sum_c x[..., c] w[c, o] with a rank-2 weight */
static void test_nin_by_hand(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 1, 2, 2, 0);
    int64_t dw[2] = {2, 3}, db[1] = {3};
    int wp = tb_param(&g, "w", 2, dw, PR_PLAIN, 0, 0), bp = tb_param(&g, "b", 1, db, PR_PLAIN, 0, 0);
    int y = conv_node(&g, &dl, g.x, wp, bp, 1, 1, 1, SHIFT_NONE);
    double params[9] = {1, 2, 3, 4, 5, 6, /* b */ 10, 20, 30}, x[4] = {1, -1, 2, 0.5}, out[6];
    run_forward(&g, 1, params, x, NULL, y, out, false, 0);
    /* pixel 0: (1,-1) -> (1-4, 2-5, 3-6) + b; pixel 1: (2, .5) -> (2+2, 4+2.5, 6+3) + b */
    double want[6] = {7, 17, 27, 14, 26.5, 39};
    expect_array(out, want, 6, 1e-12, "nin");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* ---- deconv2d ------------------------------------------------------------------ */

static int deconv_node(Graph *g, DiagList *dl, int x, int w, int b, int kh, int kw, ShiftKind sh) {
    Attrs a = {0};
    a.kh = kh, a.kw = kw, a.stride = 2, a.shift = sh, a.crop_l = sh == SHIFT_DOWN ? (kw - 1) / 2 : 0;
    int in[3] = {x, w, b};
    return tb_op(g, dl, IR_DECONV2D, in, b >= 0 ? 3 : 2, &a);
}

/* down_right [2,2] with a kernel of ones: every input pixel fills its 2x2
 * block; down [2,3]: blocks 3 wide overlap by a column, then one column is
 * cropped on the left. */
static void test_deconv_by_hand(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 2, 2, 1, 0);
    int64_t d[4] = {2, 2, 1, 1};
    int y = deconv_node(&g, &dl, g.x, tb_param(&g, "w", 4, d, PR_PLAIN, 0, 0), -1, 2, 2, SHIFT_DOWN_RIGHT);
    double w[4] = {1, 1, 1, 1}, x[4] = {1, 2, 3, 4}, out[16];
    run_forward(&g, 1, w, x, NULL, y, out, false, 0);
    double want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    expect_array(out, want, 16, 1e-12, "down_right deconv");
    ir_graph_free(&g);
    diag_free(&dl);

    graph_with_input(&g, &dl, 1, 2, 1, 0);
    int64_t d3[4] = {2, 3, 1, 1};
    y = deconv_node(&g, &dl, g.x, tb_param(&g, "w", 4, d3, PR_PLAIN, 0, 0), -1, 2, 3, SHIFT_DOWN);
    double w3[6] = {1, 1, 1, 1, 1, 1}, x3[2] = {1, 2}, out3[8];
    run_forward(&g, 1, w3, x3, NULL, y, out3, false, 0);
    /* full row: x0 at columns 0..2, x1 at 2..4 -> [1,1,3,2,2]; crop 1 left */
    double want3[8] = {1, 3, 2, 2, 1, 3, 2, 2};
    expect_array(out3, want3, 8, 1e-12, "down deconv");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* Random down-right [2,2] and down [2,3] deconvs against a gather: output
 * (r, q) collects x[i, j] for every kernel tap with 2i + a = r and
 * 2j + d = q + crop_l. */
static void check_deconv_gather(ShiftKind sh) {
    enum { N = 2, H = 2, W = 3, C = 2, O = 3, KH = 2 };
    const int KW = sh == SHIFT_DOWN ? 3 : 2, crop = sh == SHIFT_DOWN ? 1 : 0;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, H, W, C, 0);
    int64_t dw[4] = {KH, KW, O, C}, db[1] = {O};
    int wp = tb_param(&g, "w", 4, dw, PR_PLAIN, 0, 0), bp = tb_param(&g, "b", 1, db, PR_PLAIN, 0, 0);
    int y = deconv_node(&g, &dl, g.x, wp, bp, KH, KW, sh);
    TRng r = {777 + (uint64_t)sh};
    int nw = KH * KW * O * C;
    double params[2 * 3 * 3 * 2 + 3], x[N * H * W * C], out[N * 2 * H * 2 * W * O];
    for (int i = 0; i < nw + O; i++) params[i] = trng_normal(&r);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = trng_normal(&r);
    run_forward(&g, N, params, x, NULL, y, out, false, 0);
    for (int n = 0; n < N; n++)
        for (int rr = 0; rr < 2 * H; rr++)
            for (int q = 0; q < 2 * W; q++)
                for (int o = 0; o < O; o++) {
                    double want = params[nw + o];
                    for (int a = 0; a < KH; a++)
                        for (int d = 0; d < KW; d++) {
                            int ti = rr - a, tj = q + crop - d;
                            if (ti < 0 || tj < 0 || ti % 2 || tj % 2 || ti / 2 >= H || tj / 2 >= W) continue;
                            for (int c = 0; c < C; c++)
                                want += x[((n * H + ti / 2) * W + tj / 2) * C + c] * params[((a * KW + d) * O + o) * C + c];
                        }
                    double got = out[((n * 2 * H + rr) * 2 * W + q) * O + o];
                    if (fabs(got - want) > 1e-12) fail_msg("deconv (%d,%d,%d,%d): %g vs %g", n, rr, q, o, got, want);
                }
    ir_graph_free(&g);
    diag_free(&dl);
}
static void test_deconv_down_right_gather(void **state) { (void)state; check_deconv_gather(SHIFT_DOWN_RIGHT); }
static void test_deconv_down_gather(void **state) { (void)state; check_deconv_gather(SHIFT_DOWN); }

/* ---- shift, concat_elu, gate, class_bias, dropout ------------------------------------ */

static void test_shift(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 3, 4, 1, 0);
    Attrs a = {0};
    a.dy = 1;
    int down = tb_op(&g, &dl, IR_SHIFT, &g.x, 1, &a);
    a.dy = 0, a.dx = 1;
    int right = tb_op(&g, &dl, IR_SHIFT, &g.x, 1, &a);
    double x[12], out[12];
    for (int i = 0; i < 12; i++) x[i] = i + 1;
    run_forward(&g, 1, NULL, x, NULL, down, out, false, 0);
    double want_down[12] = {0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    expect_array(out, want_down, 12, 0, "down_shift");
    run_forward(&g, 1, NULL, x, NULL, right, out, false, 0);
    double want_right[12] = {0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11};
    expect_array(out, want_right, 12, 0, "right_shift");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* channels [0,C) elu(x), [C,2C) elu(-x) */
static void test_concat_elu_order(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 1, 1, 2, 0);
    int y = tb_op1(&g, &dl, IR_CONCAT_ELU, g.x);
    double x[2] = {1, -2}, out[4];
    run_forward(&g, 1, NULL, x, NULL, y, out, false, 0);
    double want[4] = {1, exp(-2) - 1, exp(-1) - 1, 2};
    expect_array(out, want, 4, 1e-15, "concat_elu");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* y = a sigmoid(b), a the first half of the channels */
static void test_gate(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 1, 1, 4, 0);
    int y = tb_op1(&g, &dl, IR_GATE, g.x);
    double x[4] = {2, -3, 0, log(3.0)}, out[2];
    run_forward(&g, 1, NULL, x, NULL, y, out, false, 0);
    double want[2] = {1, -2.25}; /* 2 sigmoid(0), -3 sigmoid(ln 3) = -3 * 3/4 */
    expect_array(out, want, 2, 1e-15, "gate");
    ir_graph_free(&g);
    diag_free(&dl);
}

static void test_class_bias(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 1, 1, 2, 3);
    int64_t d[2] = {3, 2};
    int in[3] = {g.x, tb_param(&g, "hw", 2, d, PR_CLASS_HW, 0, 0), g.labels};
    int y = tb_op(&g, &dl, IR_CLASS_BIAS, in, 3, NULL);
    double hw[6] = {1, 2, 3, 4, 5, 6}, x[4] = {0.5, 0.25, -1, -2}, out[4];
    int32_t labels[2] = {2, 0};
    run_forward(&g, 2, hw, x, labels, y, out, false, 0);
    double want[4] = {5.5, 6.25, 0, 0};
    expect_array(out, want, 4, 0, "class_bias");
    /* a label outside [0, classes) makes the forward pass refuse */
    RefExec *e = ref_new(&g, 2);
    int32_t bad[2] = {0, 3};
    assert_true(isnan(ref_forward(e, hw, x, bad, 0, false)));
    assert_true(isnan(ref_forward(e, hw, x, NULL, 0, false)));
    ref_free(e);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* eval: identity; training: element e of image b kept (scaled by 1/(1-p))
 * exactly when pxc_uniform(pxc_image_seed(seed, b), stream, e) >= p, about a
 * fraction 1-p of them; another stream draws another mask; the second image
 * run alone with seed pxc_image_seed(seed, 1) gets its mask from the batch. */
static void test_dropout(void **state) {
    (void)state;
    enum { N = 2, H = 8, W = 8, C = 8, T = N * H * W * C };
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, H, W, C, 0);
    Attrs a = {0};
    a.p = 0.25, a.stream = 5;
    int y = tb_op(&g, &dl, IR_DROPOUT, &g.x, 1, &a);
    a.stream = 6;
    int y2 = tb_op(&g, &dl, IR_DROPOUT, &g.x, 1, &a);
    static double x[T], out[T], out2[T];
    for (int t = 0; t < T; t++) x[t] = 1 + t % 7;
    run_forward(&g, N, NULL, x, NULL, y, out, false, 99);
    expect_array(out, x, T, 0, "dropout (eval)");
    run_forward(&g, N, NULL, x, NULL, y, out, true, 99);
    run_forward(&g, N, NULL, x, NULL, y2, out2, true, 99);
    int kept = 0, differ = 0;
    const int per = T / N;
    for (int t = 0; t < T; t++) {
        bool keep = pxc_uniform(pxc_image_seed(99, t / per), 5, (uint64_t)(t % per)) >= 0.25f;
        assert_true(out[t] == (keep ? x[t] / 0.75 : 0.0));
        kept += keep;
        differ += (out[t] == 0) != (out2[t] == 0);
    }
    assert_true(kept > 0.70 * T && kept < 0.80 * T);
    assert_true(differ > 0.2 * T);
    /* the images' masks differ from each other */
    int img_differ = 0;
    for (int e = 0; e < per; e++) img_differ += (out[e] == 0) != (out[per + e] == 0);
    assert_true(img_differ > 0.2 * per);
    /* image 1 alone, seed shifted by one image: the batch's mask of image 1 */
    static double one[T / N];
    run_forward(&g, 1, NULL, x + per, NULL, y, one, true, pxc_image_seed(99, 1));
    for (int e = 0; e < per; e++) assert_true(one[e] == out[per + e]);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* ---- weight normalisation on each layout ----------------------------------------------- */

static void check_wnorm(int rank, const int64_t *d, int axis, const double *v, const double *gain,
                        const double *want) {
    Graph g;
    DiagList dl;
    graph_with_input(&g, &dl, 1, 1, 1, 0);
    int vp = tb_param(&g, "v", rank, d, PR_WN_V, 0, 0);
    int64_t O = d[axis];
    int gp = tb_param(&g, "g", 1, &O, PR_WN_G, 0, 0);
    Attrs a = {0};
    a.axis = axis;
    int in[2] = {vp, gp};
    int w = tb_op(&g, &dl, IR_WNORM, in, 2, &a);
    int64_t nv = shape_numel(*tb_shape(&g, vp));
    double params[16], out[16];
    memcpy(params, v, (size_t)nv * sizeof(double));
    memcpy(params + nv, gain, (size_t)O * sizeof(double));
    double x = 0;
    run_forward(&g, 1, params, &x, NULL, w, out, false, 0);
    expect_array(out, want, nv, 1e-15, "wnorm");
    ir_graph_free(&g);
    diag_free(&dl);
}

/* output channel 0 of v is (3, 4) (norm 5), channel 1 is (1, 0) (norm 1);
 * g = (2, 3): w channel 0 = (1.2, 1.6), channel 1 = (3, 0) */
static void test_wnorm_layouts(void **state) {
    (void)state;
    double gain[2] = {2, 3};
    /* nin [in, out], axis 1: v[c][o] */
    int64_t dn[2] = {2, 2};
    double vn[4] = {3, 1, 4, 0}, wn[4] = {1.2, 3, 1.6, 0};
    check_wnorm(2, dn, 1, vn, gain, wn);
    /* conv [kh, kw, in, out] = [1,1,2,2], axis 3: same memory order as nin */
    int64_t dc[4] = {1, 1, 2, 2};
    check_wnorm(4, dc, 3, vn, gain, wn);
    /* deconv [kh, kw, out, in] = [1,1,2,2], axis 2: v[o][c] */
    double vd[4] = {3, 4, 1, 0}, wd[4] = {1.2, 1.6, 3, 0};
    check_wnorm(4, dc, 2, vd, gain, wd);
    /* a [2,1,1,2] conv: channel o spans kernel rows 0 and 1 */
    int64_t dk[4] = {2, 1, 1, 2};
    double vk[4] = {3, 1, 4, 0};
    check_wnorm(4, dk, 3, vk, gain, wn);
}

/* ---- the likelihood heads ----------------------------------------------------------------- */

/* A graph whose nll node is op(l, x), l a placeholder of K channels. */
static void head_graph(Graph *g, DiagList *dl, OpKind op, int H, int W, int C, int K, int nr_mix) {
    graph_with_input(g, dl, H, W, C, 0);
    Attrs oa = {0};
    oa.ref_shape = shape_hwc(H, W, K);
    int l = tb_op(g, dl, IR_ONES, NULL, 0, &oa);
    Attrs a = {0};
    a.nr_mix = nr_mix;
    int in[2] = {l, g->x};
    g->nll = tb_op(g, dl, op, in, 2, &a);
    g->out = l;
}

static double *read_f64(const char *dir, const char *name, size_t count) {
    float *f = tu_read_f32(tu_path(dir, name), count);
    double *d = malloc(count * sizeof(double));
    for (size_t i = 0; i < count; i++) d[i] = f[i];
    free(f);
    return d;
}

/* Every case of shared/reference/loss: loss, per-pixel nll and d loss/d l
 * (float64 values rounded to float32) within 1e-6 relative. */
static void test_dmol_reference_vectors(void **state) {
    (void)state;
    char root[2048], dir[4096];
    snprintf(root, sizeof root, "%s/loss", tu_reference_dir());
    size_t len;
    char *text = tu_read_file(tu_path(root, "manifest.json"), &len);
    if (!text) fail_msg("cannot read %s/manifest.json", root);
    cJSON *m = cJSON_Parse(text);
    cJSON *cases = cJSON_GetObjectItem(m, "cases"), *c;
    int ncases = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        int N = cJSON_GetObjectItem(c, "N")->valueint, H = cJSON_GetObjectItem(c, "H")->valueint;
        int W = cJSON_GetObjectItem(c, "W")->valueint, C = cJSON_GetObjectItem(c, "C")->valueint;
        int M = cJSON_GetObjectItem(c, "nr_mix")->valueint, K = cJSON_GetObjectItem(c, "K")->valueint;
        double loss_nats = cJSON_GetObjectItem(c, "loss_nats")->valuedouble;
        snprintf(dir, sizeof dir, "%s/%s", root, name);
        size_t npix = (size_t)N * H * W;
        double *x = read_f64(dir, "x.bin", npix * C), *l = read_f64(dir, "l.bin", npix * K);
        double *nll_want = read_f64(dir, "nll_pixel.bin", npix), *dl_want = read_f64(dir, "grad_l.bin", npix * K);
        double *nll = malloc(npix * sizeof(double)), *dl_ = malloc(npix * K * sizeof(double));
        Graph g;
        DiagList dlist;
        head_graph(&g, &dlist, IR_DMOL_NLL, H, W, C, K, M);
        double loss = ref_loss(&g, N, l, x, dl_, nll);
        double gmax = 0, worst_nll = 0, worst_g = 0;
        for (size_t i = 0; i < npix * K; i++) gmax = fmax(gmax, fabs(dl_want[i]));
        for (size_t p = 0; p < npix; p++) worst_nll = fmax(worst_nll, fabs(nll[p] - nll_want[p]) / fabs(nll_want[p]));
        for (size_t i = 0; i < npix * K; i++)
            worst_g = fmax(worst_g, fabs(dl_[i] - dl_want[i]) / (1e-6 * gmax + 1e-6 * fabs(dl_want[i])));
        printf("  %-20s loss %.10f (expected %.10f, rel %.1e); nll_pixel rel %.1e; grad_l %.2f of tolerance\n",
               name, loss, loss_nats, fabs(loss - loss_nats) / loss_nats, worst_nll, worst_g);
        assert_true(fabs(loss - loss_nats) <= 1e-12 * fabs(loss_nats));
        assert_true(worst_nll <= 1e-6);
        assert_true(worst_g <= 1.0);
        free(x), free(l), free(nll_want), free(dl_want), free(nll), free(dl_);
        ir_graph_free(&g);
        diag_free(&dlist);
        ncases++;
    }
    assert_true(ncases >= 8);
    cJSON_Delete(m);
    free(text);
}

/* Logits all zero: every sub-pixel costs log 256; d/dl = 1/256 - one-hot. */
static void test_softmax_by_hand(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    head_graph(&g, &dl, IR_SOFTMAX_NLL, 1, 1, 3, 768, 0);
    double l[768] = {0}, x[3] = {-1, (double)((200 - 127.5f) / 127.5f), 1}, nll, dlv[768];
    double loss = ref_loss(&g, 1, l, x, dlv, &nll);
    assert_true(fabs(loss - 3 * log(256.0)) < 1e-12 && fabs(nll - loss) == 0);
    int target[3] = {0, 200, 255};
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < 256; j++)
            assert_true(fabs(dlv[256 * c + j] - (1.0 / 256 - (j == target[c]))) < 1e-15);
    /* a logit of ln 3 on the target among zeros: -log(3 / 258) */
    l[200 + 256] = log(3.0);
    loss = ref_loss(&g, 1, l, x, NULL, NULL);
    assert_true(fabs(loss - (2 * log(256.0) - log(3.0 / 258.0))) < 1e-12);
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_down_2x3_by_hand),
        cmocka_unit_test(test_conv_down_direct_s1),
        cmocka_unit_test(test_conv_down_direct_s2),
        cmocka_unit_test(test_nin_by_hand),
        cmocka_unit_test(test_deconv_by_hand),
        cmocka_unit_test(test_deconv_down_right_gather),
        cmocka_unit_test(test_deconv_down_gather),
        cmocka_unit_test(test_shift),
        cmocka_unit_test(test_concat_elu_order),
        cmocka_unit_test(test_gate),
        cmocka_unit_test(test_class_bias),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_wnorm_layouts),
        cmocka_unit_test(test_dmol_reference_vectors),
        cmocka_unit_test(test_softmax_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
