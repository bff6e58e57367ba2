/*
 * test_gradcheck_ops.c — every vector-Jacobian rule of compiler/autodiff,
 * checked by central differences on the reference backend in double.
 *
 * Each case is a tiny graph: INPUT (and LABELS) → the op under test (with
 * parameters as needed) → a fixed random linear functional (the "probe": a
 * VALID conv whose kernel covers the whole output, weights drawn at random)
 * → SUM, the loss. The likelihood heads end in SUM directly. The analytic
 * gradient (ad_differentiate, then ref_backward) of every element of the
 * input and of every parameter is compared with (f(+h) - f(-h)) / 2h, within
 * a per-case tolerance. Declared kinks: the sign of elu's input (its second
 * derivative jumps at 0), and the branches of the logistic mixture (edge
 * bins, interior, density, the -7 clamp); elements whose perturbation
 * changes a branch are skipped and counted (at most 10 % may be).
 *
 * The first test enumerates the op table: every op with a vector-Jacobian
 * rule must have a case here, and autodiff's table must agree with the grad
 * column of ops.def.
 */
#include "test_ref_util.h"

typedef enum { KINK_NONE, KINK_SIGN, KINK_DMOL } KinkKind;

typedef struct Built {
    int y;          /* the op's output, fed to the probe (or to SUM) */
    int kink;       /* KINK_SIGN: node whose element signs are a branch; KINK_DMOL: the l node */
    int kink_x;     /* KINK_DMOL: the x node */
} Built;

typedef struct Case {
    const char *name;
    OpKind op;
    int H, W, C, classes;
    Built (*build)(Graph *g, DiagList *dl);
    void (*fill)(double *x, int n, int H, int W, int C, TRng *r); /* NULL: N(0,1) */
    bool no_probe;       /* SUM the op's output directly */
    bool training;       /* dropout active */
    double h, rtol, atol;
    KinkKind kink;
    int nr_mix;          /* KINK_DMOL */
} Case;

enum { N_IMAGES = 2 };

/* ---- builders --------------------------------------------------------------- */

static int plain_param(Graph *g, const char *name, int rank, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t d[4] = {d0, d1, d2, d3};
    return tb_param(g, name, rank, d, PR_PLAIN, 0.5, 0);
}

/* conv2d over x with a plain [kh,kw,C,O] weight (or [C,O] when nin) and bias */
static int conv_plain(Graph *g, DiagList *dl, int x, int O, int kh, int kw, int stride, ShiftKind shift,
                      bool bias, bool nin) {
    int64_t C = tb_shape(g, x)->d[2];
    int w = nin ? plain_param(g, "w", 2, C, O, 0, 0) : plain_param(g, "w", 4, kh, kw, C, O);
    Attrs a;
    tb_conv_attrs(&a, kh, kw, stride, shift);
    int in[3] = {x, w, bias ? plain_param(g, "b", 1, O, 0, 0, 0) : -1};
    return tb_op(g, dl, IR_CONV2D, in, bias ? 3 : 2, &a);
}

#define SIMPLE(name, expr)                                \
    static Built name(Graph *g, DiagList *dl) {           \
        Built b = {-1, -1, -1};                           \
        int x = g->x;                                     \
        (void)dl, (void)x;                                \
        b.y = (expr);                                     \
        return b;                                         \
    }

SIMPLE(b_conv_down_s1, conv_plain(g, dl, x, 4, 2, 3, 1, SHIFT_DOWN, true, false))
SIMPLE(b_conv_down_s2, conv_plain(g, dl, x, 4, 2, 3, 2, SHIFT_DOWN, true, false))
SIMPLE(b_conv_downright_s1, conv_plain(g, dl, x, 4, 2, 2, 1, SHIFT_DOWN_RIGHT, true, false))
SIMPLE(b_conv_downright_s2, conv_plain(g, dl, x, 4, 2, 2, 2, SHIFT_DOWN_RIGHT, true, false))
SIMPLE(b_conv_down_1x3, conv_plain(g, dl, x, 3, 1, 3, 1, SHIFT_DOWN, true, false))
SIMPLE(b_conv_downright_2x1, conv_plain(g, dl, x, 3, 2, 1, 1, SHIFT_DOWN_RIGHT, true, false))
SIMPLE(b_conv_nobias, conv_plain(g, dl, x, 2, 2, 3, 1, SHIFT_DOWN, false, false))
SIMPLE(b_nin, conv_plain(g, dl, x, 5, 1, 1, 1, SHIFT_NONE, true, true))

/* a non-causal 3x3 conv padded on all four sides (pad_b exercised) */
static Built b_conv_none_3x3(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int w = plain_param(g, "w", 4, 3, 3, tb_shape(g, g->x)->d[2], 2);
    Attrs a;
    tb_conv_attrs(&a, 3, 3, 1, SHIFT_NONE);
    a.pad_t = a.pad_l = a.pad_r = a.pad_b = 1;
    int in[2] = {g->x, w};
    b.y = tb_op(g, dl, IR_CONV2D, in, 2, &a);
    return b;
}

static int deconv_plain(Graph *g, DiagList *dl, int x, int O, int kh, int kw, ShiftKind shift) {
    int64_t C = tb_shape(g, x)->d[2];
    Attrs a = {0};
    a.kh = kh, a.kw = kw, a.stride = 2, a.shift = shift, a.crop_l = shift == SHIFT_DOWN ? (kw - 1) / 2 : 0;
    int in[3] = {x, plain_param(g, "w", 4, kh, kw, O, C), plain_param(g, "b", 1, O, 0, 0, 0)};
    return tb_op(g, dl, IR_DECONV2D, in, 3, &a);
}
SIMPLE(b_deconv_down, deconv_plain(g, dl, x, 3, 2, 3, SHIFT_DOWN))
SIMPLE(b_deconv_downright, deconv_plain(g, dl, x, 3, 2, 2, SHIFT_DOWN_RIGHT))

/* weight norm on each layout: conv [kh,kw,in,out] axis 3, deconv
 * [kh,kw,out,in] axis 2, nin [in,out] axis 1 */
static int wn(Graph *g, DiagList *dl, int rank, const int64_t *d, int axis) {
    int v = tb_param(g, "v", rank, d, PR_WN_V, 0.5, 0);
    int64_t O = d[axis];
    int gg = tb_param(g, "g", 1, &O, PR_WN_G, 0, 1);
    Attrs a = {0};
    a.axis = axis;
    int in[2] = {v, gg};
    return tb_op(g, dl, IR_WNORM, in, 2, &a);
}
static Built b_wnorm_conv(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int64_t d[4] = {2, 3, tb_shape(g, g->x)->d[2], 4};
    Attrs a;
    tb_conv_attrs(&a, 2, 3, 1, SHIFT_DOWN);
    int in[3] = {g->x, wn(g, dl, 4, d, 3), plain_param(g, "b", 1, 4, 0, 0, 0)};
    b.y = tb_op(g, dl, IR_CONV2D, in, 3, &a);
    return b;
}
static Built b_wnorm_deconv(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int64_t d[4] = {2, 2, 3, tb_shape(g, g->x)->d[2]};
    Attrs a = {0};
    a.kh = 2, a.kw = 2, a.stride = 2, a.shift = SHIFT_DOWN_RIGHT;
    int in[3] = {g->x, wn(g, dl, 4, d, 2), plain_param(g, "b", 1, 3, 0, 0, 0)};
    b.y = tb_op(g, dl, IR_DECONV2D, in, 3, &a);
    return b;
}
static Built b_wnorm_nin(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int64_t d[2] = {tb_shape(g, g->x)->d[2], 5};
    Attrs a;
    tb_conv_attrs(&a, 1, 1, 1, SHIFT_NONE);
    int in[3] = {g->x, wn(g, dl, 2, d, 1), plain_param(g, "b", 1, 5, 0, 0, 0)};
    b.y = tb_op(g, dl, IR_CONV2D, in, 3, &a);
    return b;
}

static int shift(Graph *g, DiagList *dl, int x, int dy, int dx) {
    Attrs a = {0};
    a.dy = dy, a.dx = dx;
    return tb_op(g, dl, IR_SHIFT, &x, 1, &a);
}
SIMPLE(b_shift_down, shift(g, dl, x, 1, 0))
SIMPLE(b_shift_right, shift(g, dl, x, 0, 1))
SIMPLE(b_shift_both, shift(g, dl, x, 1, 1))

/* concat of three inputs, one of them twice (fan-out is summed) */
static Built b_concat(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int in[3] = {g->x, tb_op1(g, dl, IR_TANH, g->x), g->x};
    b.y = tb_op(g, dl, IR_CONCAT, in, 3, NULL);
    return b;
}
static Built b_slice(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    Attrs a = {0};
    a.start = 1, a.len = 2;
    b.y = tb_op(g, dl, IR_SLICE, &g->x, 1, &a);
    return b;
}
SIMPLE(b_add, tb_op2(g, dl, IR_ADD, x, tb_op1(g, dl, IR_SIGMOID, x)))
SIMPLE(b_add_self, tb_op2(g, dl, IR_ADD, x, x))
static Built b_elu(Graph *g, DiagList *dl) {
    Built b = {tb_op1(g, dl, IR_ELU, g->x), g->x, -1};
    return b;
}
static Built b_concat_elu(Graph *g, DiagList *dl) {
    Built b = {tb_op1(g, dl, IR_CONCAT_ELU, g->x), g->x, -1};
    return b;
}
SIMPLE(b_sigmoid, tb_op1(g, dl, IR_SIGMOID, x))
SIMPLE(b_tanh, tb_op1(g, dl, IR_TANH, x))
SIMPLE(b_gate, tb_op1(g, dl, IR_GATE, x))
static Built b_dropout(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    Attrs a = {0};
    a.p = 0.5, a.stream = 3;
    b.y = tb_op(g, dl, IR_DROPOUT, &g->x, 1, &a);
    return b;
}
static Built b_class_bias(Graph *g, DiagList *dl) {
    Built b = {-1, -1, -1};
    int in[3] = {g->x, plain_param(g, "hw", 2, g->classes, tb_shape(g, g->x)->d[2], 0, 0), g->labels};
    b.y = tb_op(g, dl, IR_CLASS_BIAS, in, 3, NULL);
    return b;
}
SIMPLE(b_sum, x)

/* Likelihood heads: the input's first K channels are l, the last C the image. */
static Built head(Graph *g, DiagList *dl, OpKind op, int K, int C, int nr_mix) {
    Built b = {-1, -1, -1};
    Attrs sl = {0};
    sl.start = 0, sl.len = K;
    int l = tb_op(g, dl, IR_SLICE, &g->x, 1, &sl);
    sl.start = K, sl.len = C;
    int xi = tb_op(g, dl, IR_SLICE, &g->x, 1, &sl);
    Attrs a = {0};
    a.nr_mix = nr_mix;
    int in[2] = {l, xi};
    b.y = tb_op(g, dl, op, in, 2, &a);
    b.kink = l, b.kink_x = xi;
    return b;
}
static Built b_dmol_c3(Graph *g, DiagList *dl) { return head(g, dl, IR_DMOL_NLL, 20, 3, 2); }
static Built b_dmol_c1(Graph *g, DiagList *dl) { return head(g, dl, IR_DMOL_NLL, 9, 1, 3); }
static Built b_softmax_c1(Graph *g, DiagList *dl) { return head(g, dl, IR_SOFTMAX_NLL, 256, 1, 0); }
static Built b_softmax_c3(Graph *g, DiagList *dl) { return head(g, dl, IR_SOFTMAX_NLL, 768, 3, 0); }

/* ---- input fillers for the heads ------------------------------------------------ */

/* an 8-bit pixel value, 15 % at each edge */
static double pixel(TRng *r) {
    double u = trng_uniform(r);
    int k = u < 0.15 ? 0 : u < 0.3 ? 255 : (int)(trng_uniform(r) * 256) % 256;
    return ((double)(float)((k - 127.5f) / 127.5f));
}

/* l as in the loss test vectors (logits N(0,2^2), means U(-1.1,1.1),
 * log-scales U(-5,0.5), coefficients N(0,1)), then the image; plus one
 * clamped log-scale and one sharp component far from the value (the
 * density branch). */
static void fill_dmol(double *x, int n, int H, int W, int Ctot, TRng *r) {
    int C = Ctot == 23 ? 3 : 1, M = C == 3 ? 2 : 3, K = Ctot - C;
    for (int p = 0; p < n * H * W; p++) {
        double *l = x + (int64_t)p * Ctot, *v = l + K;
        for (int t = 0; t < K; t++) {
            int kind; /* 0 logit, 1 mean, 2 log-scale, 3 coefficient */
            if (t < M) kind = 0;
            else if (C == 3) kind = 1 + ((t - M) % (3 * M)) / M;
            else kind = t < 2 * M ? 1 : 2;
            l[t] = kind == 0 ? 2 * trng_normal(r) : kind == 1 ? trng_range(r, -1.1, 1.1)
                 : kind == 2 ? trng_range(r, -5, 0.5) : trng_normal(r);
        }
        for (int c = 0; c < C; c++) v[c] = pixel(r);
        int ls0 = C == 3 ? M + M : 2 * M;  /* log-scale of channel 0, component 0 */
        if (p % 4 == 0) l[ls0 + 1] = -9.0; /* clamped: no gradient */
        if (p % 4 == 1) {                  /* sharp and far: d <= 1e-5 */
            v[0] = 0.2;
            l[M] = 0.5;
            l[ls0] = -6.5;
        }
    }
}

static void fill_softmax(double *x, int n, int H, int W, int Ctot, TRng *r) {
    int C = Ctot / 257, K = 256 * C;
    for (int p = 0; p < n * H * W; p++) {
        double *l = x + (int64_t)p * Ctot;
        for (int t = 0; t < K; t++) l[t] = trng_normal(r);
        for (int c = 0; c < C; c++) l[K + c] = pixel(r);
    }
}

/* ---- the cases --------------------------------------------------------------------- */

#define TOL 1e-5, 1e-6, 1e-8
static const Case cases[] = {
    {"conv2d down 2x3 stride 1", IR_CONV2D, 4, 6, 3, 0, b_conv_down_s1, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d down 2x3 stride 2", IR_CONV2D, 4, 6, 3, 0, b_conv_down_s2, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d down_right 2x2 stride 1", IR_CONV2D, 4, 6, 3, 0, b_conv_downright_s1, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d down_right 2x2 stride 2", IR_CONV2D, 4, 6, 3, 0, b_conv_downright_s2, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d down 1x3", IR_CONV2D, 3, 4, 2, 0, b_conv_down_1x3, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d down_right 2x1", IR_CONV2D, 3, 4, 2, 0, b_conv_downright_2x1, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d none 3x3 padded", IR_CONV2D, 3, 4, 2, 0, b_conv_none_3x3, NULL, false, false, TOL, KINK_NONE, 0},
    {"conv2d without bias", IR_CONV2D, 3, 4, 2, 0, b_conv_nobias, NULL, false, false, TOL, KINK_NONE, 0},
    {"nin (rank-2 weight)", IR_CONV2D, 3, 4, 3, 0, b_nin, NULL, false, false, TOL, KINK_NONE, 0},
    {"deconv2d down 2x3", IR_DECONV2D, 3, 4, 2, 0, b_deconv_down, NULL, false, false, TOL, KINK_NONE, 0},
    {"deconv2d down_right 2x2", IR_DECONV2D, 3, 4, 2, 0, b_deconv_downright, NULL, false, false, TOL, KINK_NONE, 0},
    {"wnorm conv [kh,kw,in,out] axis 3", IR_WNORM, 3, 4, 2, 0, b_wnorm_conv, NULL, false, false, TOL, KINK_NONE, 0},
    {"wnorm deconv [kh,kw,out,in] axis 2", IR_WNORM, 3, 4, 2, 0, b_wnorm_deconv, NULL, false, false, TOL, KINK_NONE, 0},
    {"wnorm nin [in,out] axis 1", IR_WNORM, 3, 4, 3, 0, b_wnorm_nin, NULL, false, false, TOL, KINK_NONE, 0},
    {"shift down", IR_SHIFT, 3, 4, 2, 0, b_shift_down, NULL, false, false, TOL, KINK_NONE, 0},
    {"shift right", IR_SHIFT, 3, 4, 2, 0, b_shift_right, NULL, false, false, TOL, KINK_NONE, 0},
    {"shift down and right", IR_SHIFT, 3, 4, 2, 0, b_shift_both, NULL, false, false, TOL, KINK_NONE, 0},
    {"concat", IR_CONCAT, 3, 4, 2, 0, b_concat, NULL, false, false, TOL, KINK_NONE, 0},
    {"slice", IR_SLICE, 3, 4, 4, 0, b_slice, NULL, false, false, TOL, KINK_NONE, 0},
    {"add", IR_ADD, 3, 4, 2, 0, b_add, NULL, false, false, TOL, KINK_NONE, 0},
    {"add of a value to itself", IR_ADD, 3, 4, 2, 0, b_add_self, NULL, false, false, TOL, KINK_NONE, 0},
    {"elu", IR_ELU, 3, 4, 2, 0, b_elu, NULL, false, false, TOL, KINK_SIGN, 0},
    {"concat_elu", IR_CONCAT_ELU, 3, 4, 2, 0, b_concat_elu, NULL, false, false, TOL, KINK_SIGN, 0},
    {"sigmoid", IR_SIGMOID, 3, 4, 2, 0, b_sigmoid, NULL, false, false, TOL, KINK_NONE, 0},
    {"tanh", IR_TANH, 3, 4, 2, 0, b_tanh, NULL, false, false, TOL, KINK_NONE, 0},
    {"gate", IR_GATE, 3, 4, 4, 0, b_gate, NULL, false, false, TOL, KINK_NONE, 0},
    {"dropout (training, seed 42)", IR_DROPOUT, 3, 4, 2, 0, b_dropout, NULL, false, true, TOL, KINK_NONE, 0},
    {"class_bias", IR_CLASS_BIAS, 3, 4, 2, 3, b_class_bias, NULL, false, false, TOL, KINK_NONE, 0},
    {"dmol_nll C=3 M=2", IR_DMOL_NLL, 3, 3, 23, 0, b_dmol_c3, fill_dmol, true, false, 1e-6, 1e-5, 1e-6, KINK_DMOL, 2},
    {"dmol_nll C=1 M=3", IR_DMOL_NLL, 3, 3, 10, 0, b_dmol_c1, fill_dmol, true, false, 1e-6, 1e-5, 1e-6, KINK_DMOL, 3},
    {"softmax_nll C=1", IR_SOFTMAX_NLL, 2, 2, 257, 0, b_softmax_c1, fill_softmax, true, false, TOL, KINK_NONE, 0},
    {"softmax_nll C=3", IR_SOFTMAX_NLL, 1, 2, 771, 0, b_softmax_c3, fill_softmax, true, false, TOL, KINK_NONE, 0},
    {"sum", IR_SUM, 3, 4, 2, 0, b_sum, NULL, true, false, TOL, KINK_NONE, 0},
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* ---- the harness ---------------------------------------------------------------------- */

/* The branch signature of the current state: element signs or mixture branches. */
static void signature(const Case *c, const Graph *g, const RefExec *e, const Built *b, int *sig, int64_t nsig) {
    if (c->kink == KINK_SIGN) {
        const double *v = ref_value(e, b->kink);
        for (int64_t t = 0; t < nsig; t++) sig[t] = v[t] > 0;
    } else if (c->kink == KINK_DMOL) {
        const Shape *xs = tb_shape(g, b->kink_x);
        int64_t npix = N_IMAGES * xs->d[0] * xs->d[1];
        dmol_branches(ref_value(e, b->kink), ref_value(e, b->kink_x), npix, (int)xs->d[2], c->nr_mix, sig);
    }
}

static int64_t signature_len(const Case *c, const Graph *g, const Built *b) {
    if (c->kink == KINK_SIGN) return N_IMAGES * shape_numel(*tb_shape(g, b->kink));
    if (c->kink == KINK_DMOL) {
        const Shape *xs = tb_shape(g, b->kink_x);
        return N_IMAGES * xs->d[0] * xs->d[1] * xs->d[2] * c->nr_mix;
    }
    return 0;
}

typedef struct Stats {
    int64_t checked, skipped, failed;
    double worst;       /* largest |fd - an| / (atol + rtol max(|fd|,|an|)) */
} Stats;

/* Central difference of the loss w.r.t. *p (restored afterwards); false when
 * the perturbation changes a declared branch. */
static bool central(const Case *c, const Graph *g, RefExec *e, const Built *b, const double *params,
                    const double *x, const int32_t *labels, double *p, const int *sig0, int *sig, int64_t nsig,
                    double *fd) {
    double keep = *p, fp, fm;
    bool same = true;
    *p = keep + c->h;
    fp = ref_forward(e, params, x, labels, 42, c->training);
    signature(c, g, e, b, sig, nsig);
    same = same && memcmp(sig, sig0, (size_t)nsig * sizeof *sig) == 0;
    *p = keep - c->h;
    fm = ref_forward(e, params, x, labels, 42, c->training);
    signature(c, g, e, b, sig, nsig);
    same = same && memcmp(sig, sig0, (size_t)nsig * sizeof *sig) == 0;
    *p = keep;
    *fd = (fp - fm) / (2 * c->h);
    return same;
}

static void compare(const Case *c, Stats *st, double fd, double an, const char *what, int64_t idx) {
    st->checked++;
    double ratio = fabs(fd - an) / (c->atol + c->rtol * fmax(fabs(fd), fabs(an)));
    if (ratio > st->worst) st->worst = ratio;
    if (!fd_close(fd, an, c->rtol, c->atol)) {
        if (st->failed < 5) fprintf(stderr, "  %s: %s[%lld]: finite difference %.12g, autodiff %.12g\n", c->name,
                                    what, (long long)idx, fd, an);
        st->failed++;
    }
}

static void run_case(void **state) {
    const Case *c = *state;
    DiagList dl;
    diag_init(&dl);
    Graph g;
    ir_graph_init(&g);
    g.H = c->H, g.W = c->W, g.C = c->C, g.classes = c->classes;
    g.x = tb_op(&g, &dl, IR_INPUT, NULL, 0, NULL);
    if (c->classes) g.labels = tb_op(&g, &dl, IR_LABELS, NULL, 0, NULL);
    Built b = c->build(&g, &dl);
    int y = b.y;
    if (!c->no_probe) {
        const Shape *ys = tb_shape(&g, y);
        int64_t d[4] = {ys->d[0], ys->d[1], ys->d[2], 1};
        Attrs a;
        tb_conv_attrs(&a, (int)ys->d[0], (int)ys->d[1], 1, SHIFT_NONE);
        int in[2] = {y, tb_param(&g, "probe", 4, d, PR_PLAIN, 1.0, 0)};
        y = tb_op(&g, &dl, IR_CONV2D, in, 2, &a);
    }
    g.loss = tb_op1(&g, &dl, IR_SUM, y);
    assert_true(ad_differentiate(&g, true, &dl));
    assert_true(ir_verify(&g, &dl));
    assert_true(g.dx >= 0);

    TRng r = {0x5eed0000ULL + (uint64_t)(c - cases) * 7919};
    ParamLayout pl = ir_param_layout(&g);
    double *params = calloc((size_t)pl.total + 1, sizeof(double));
    double *an = calloc((size_t)pl.total + 1, sizeof(double));
    tb_random_params(&g, params, &r, 0.5);
    int64_t nx = (int64_t)N_IMAGES * c->H * c->W * c->C;
    double *x = malloc((size_t)nx * sizeof(double)), *dx = malloc((size_t)nx * sizeof(double));
    if (c->fill) c->fill(x, N_IMAGES, c->H, c->W, c->C, &r);
    else
        for (int64_t t = 0; t < nx; t++) x[t] = trng_normal(&r);
    int32_t labels[N_IMAGES] = {2, 0};

    RefExec *e = ref_new(&g, N_IMAGES);
    double f0 = ref_forward(e, params, x, labels, 42, c->training);
    assert_true(isfinite(f0));
    ref_backward(e);
    ref_grads(e, an);
    memcpy(dx, ref_value(e, g.dx), (size_t)nx * sizeof(double));
    int64_t nsig = signature_len(c, &g, &b);
    int *sig0 = calloc((size_t)nsig + 1, sizeof(int)), *sig = calloc((size_t)nsig + 1, sizeof(int));
    signature(c, &g, e, &b, sig0, nsig);

    Stats st = {0, 0, 0, 0};
    double fd;
    for (int64_t t = 0; t < nx; t++) {
        if (!central(c, &g, e, &b, params, x, labels, &x[t], sig0, sig, nsig, &fd)) {
            st.skipped++;
            continue;
        }
        compare(c, &st, fd, dx[t], "x", t);
    }
    for (int p = 0; p < pl.n; p++)
        for (int64_t t = 0; t < pl.p[p].numel; t++) {
            int64_t k = pl.p[p].offset + t;
            if (!central(c, &g, e, &b, params, x, labels, &params[k], sig0, sig, nsig, &fd)) {
                st.skipped++;
                continue;
            }
            compare(c, &st, fd, an[k], pl.p[p].name, t);
        }
    printf("  %-36s %5lld elements checked, %lld skipped at kinks, worst error %.3f of tolerance "
           "(h %g, rtol %g, atol %g)\n",
           c->name, (long long)st.checked, (long long)st.skipped, st.worst, c->h, c->rtol, c->atol);
    if (c->kink == KINK_DMOL) { /* the case must reach every branch */
        int seen[8] = {0};
        for (int64_t t = 0; t < nsig; t++) seen[sig0[t]] = 1;
        for (int br = 0; br < 4; br++)
            if (!seen[br] && !seen[br + 4]) fail_msg("%s: no element takes mixture branch %d", c->name, br);
        assert_true(seen[4] || seen[5] || seen[6] || seen[7]);
    }
    assert_int_equal(st.failed, 0);
    assert_true(st.skipped * 10 <= st.checked + st.skipped);
    assert_true(st.checked > 0);

    ref_free(e);
    free(sig0), free(sig), free(x), free(dx), free(params), free(an);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

/* Every op with a vector-Jacobian rule has a case above; autodiff's table
 * and the grad column of ops.def agree. */
static void test_every_vjp_has_a_case(void **state) {
    (void)state;
    for (int k = 0; k < IR_OP_COUNT; k++) {
        const OpInfo *oi = ir_op((OpKind)k);
        if (ad_has_vjp((OpKind)k) != oi->has_vjp)
            fail_msg("op %s: grad column says %d but autodiff %s a rule", oi->name, oi->has_vjp,
                     ad_has_vjp((OpKind)k) ? "has" : "lacks");
        if (!oi->has_vjp) continue;
        bool found = false;
        for (int i = 0; i < NCASES; i++) found = found || cases[i].op == (OpKind)k;
        if (!found) fail_msg("op %s has a vector-Jacobian rule but no gradcheck case", oi->name);
    }
}

int main(void) {
    struct CMUnitTest tests[NCASES + 1];
    memset(tests, 0, sizeof tests);
    tests[0].name = "every op with a VJP has a gradcheck case";
    tests[0].test_func = test_every_vjp_has_a_case;
    for (int i = 0; i < NCASES; i++) {
        tests[i + 1].name = cases[i].name;
        tests[i + 1].test_func = run_case;
        tests[i + 1].initial_state = (void *)&cases[i];
    }
    return _cmocka_run_group_tests("gradcheck_ops", tests, NCASES + 1, NULL, NULL);
}
