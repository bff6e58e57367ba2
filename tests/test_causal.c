/*
 * test_causal.c — the causality prover (compiler/check): graphs built with
 * the IR builder, the mini PixelCNN++ of the shifts and its broken variants
 * (each rejected at the right layer with an exact message), hand-computed
 * receptive fields, and the full PixelCNN++ topology (up and down passes,
 * gated resnets, U-net shortcuts) at 32x32.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"

/* ---- a tiny graph builder over ir_add ------------------------------------ */

typedef struct TB {
    Graph g;
    DiagList dl;
    int line;   /* each layer gets the next line of a pretend t.yaml */
} TB;

static SrcLoc at_line(int line) { return (SrcLoc){"t.yaml", line, 3}; }

static void tb_init(TB *t, int H, int W, int C) {
    ir_graph_init(&t->g);
    diag_init(&t->dl);
    t->g.H = H, t->g.W = W, t->g.C = C;
    t->line = 1;
    t->g.x = ir_add(&t->g, &t->dl, IR_INPUT, NULL, 0, NULL, at_line(1));
    assert_true(t->g.x >= 0);
}

static void tb_free(TB *t) {
    ir_graph_free(&t->g);
    diag_free(&t->dl);
}

/* Start a layer; returns its line. */
static int layer(TB *t, const char *name, const char *kind) {
    t->line++;
    t->g.cur_layer = -1;  /* top level */
    ir_add_layer(&t->g, name, kind, at_line(t->line));
    return t->line;
}

static int node(TB *t, OpKind op, const int *in, int nin, const Attrs *a) {
    int id = ir_add(&t->g, &t->dl, op, in, nin, a, at_line(t->line));
    if (id < 0) diag_print(&t->dl, stderr, false);
    assert_true(id >= 0);
    return id;
}

static int op1(TB *t, OpKind op, int x) { return node(t, op, &x, 1, NULL); }
static int op2(TB *t, OpKind op, int x, int y) {
    int in[2] = {x, y};
    return node(t, op, in, 2, NULL);
}

static int channels(TB *t, int v) { return (int)t->g.nodes[v].shape.d[2]; }

static int param(TB *t, const char *what, int rank, const int64_t *d, ParamRole role) {
    char name[160];
    snprintf(name, sizeof name, "%s.%s.%d", t->g.layers[t->g.nlayers - 1].name, what, t->g.n);
    return ir_param(&t->g, name, ir_shape(rank, d, false), role, role == PR_WN_V ? 0.05 : 0, 1, at_line(t->line));
}

/* A weight-normalised conv2d with explicit zero padding. */
static int conv_pads(TB *t, int x, int O, int kh, int kw, int stride, int pt, int pl, int pr, int pb, ShiftKind sh) {
    int64_t vd[4] = {kh, kw, channels(t, x), O}, od = O;
    int v = param(t, "v", 4, vd, PR_WN_V), gn = param(t, "g", 1, &od, PR_WN_G), b = param(t, "b", 1, &od, PR_BIAS);
    Attrs wa = {0};
    wa.axis = 3;
    int in_w[2] = {v, gn};
    int w = node(t, IR_WNORM, in_w, 2, &wa);
    Attrs a = {0};
    a.kh = kh, a.kw = kw, a.stride = stride, a.pad_t = pt, a.pad_l = pl, a.pad_r = pr, a.pad_b = pb, a.shift = sh;
    int in[3] = {x, w, b};
    return node(t, IR_CONV2D, in, 3, &a);
}

/* down_shifted / down_right_shifted conv2d of PIXELCNNPP.md. */
static int conv_down(TB *t, int x, int O, int kh, int kw, int stride) {
    return conv_pads(t, x, O, kh, kw, stride, kh - 1, (kw - 1) / 2, (kw - 1) / 2, 0, SHIFT_DOWN);
}
static int conv_dr(TB *t, int x, int O, int kh, int kw, int stride) {
    return conv_pads(t, x, O, kh, kw, stride, kh - 1, kw - 1, 0, 0, SHIFT_DOWN_RIGHT);
}

/* nin: a 1x1 conv2d with a [C,O] weight. */
static int nin(TB *t, int x, int O) {
    int64_t vd[2] = {channels(t, x), O}, od = O;
    int v = param(t, "v", 2, vd, PR_WN_V), gn = param(t, "g", 1, &od, PR_WN_G), b = param(t, "b", 1, &od, PR_BIAS);
    Attrs wa = {0};
    wa.axis = 1;
    int in_w[2] = {v, gn};
    int w = node(t, IR_WNORM, in_w, 2, &wa);
    Attrs a = {0};
    a.kh = a.kw = a.stride = 1;
    int in[3] = {x, w, b};
    return node(t, IR_CONV2D, in, 3, &a);
}

/* Stride-2 deconv2d, cropped at column crop_l. */
static int deconv(TB *t, int x, int O, int kh, int kw, int crop_l, ShiftKind sh) {
    int64_t vd[4] = {kh, kw, O, channels(t, x)}, od = O;
    int v = param(t, "v", 4, vd, PR_WN_V), gn = param(t, "g", 1, &od, PR_WN_G), b = param(t, "b", 1, &od, PR_BIAS);
    Attrs wa = {0};
    wa.axis = 2;
    int in_w[2] = {v, gn};
    int w = node(t, IR_WNORM, in_w, 2, &wa);
    Attrs a = {0};
    a.kh = kh, a.kw = kw, a.stride = 2, a.crop_l = crop_l, a.shift = sh;
    int in[3] = {x, w, b};
    return node(t, IR_DECONV2D, in, 3, &a);
}

static int shift(TB *t, int x, int dy, int dx) {
    Attrs a = {0};
    a.dy = dy, a.dx = dx;
    return node(t, IR_SHIFT, &x, 1, &a);
}

static int concat(TB *t, int x, int y) { return op2(t, IR_CONCAT, x, y); }

/* x1 = concat(x, ones) */
static int pad_ones(TB *t) {
    Attrs a = {0};
    a.ref_shape = shape_hwc(t->g.H, t->g.W, 1);
    int ones = node(t, IR_ONES, NULL, 0, &a);
    return concat(t, t->g.x, ones);
}

/* The discretized logistic mixture head over out (one component). */
static void head_and_loss(TB *t, int out) {
    Attrs a = {0};
    a.nr_mix = 1;
    int in[2] = {out, t->g.x};
    t->g.out = out;
    t->g.nll = node(t, IR_DMOL_NLL, in, 2, &a);
    t->g.loss = op1(t, IR_SUM, t->g.nll);
    t->g.nfwd = t->g.n;
}

/* ---- the mini PixelCNN++ and its broken variants --------------------------- */

enum { BREAK_NONE, BREAK_MID_3X3, BREAK_NO_DOWN_SHIFT, BREAK_NO_RIGHT_SHIFT };

/* Lines in t.yaml: input 1, x1 2, u_init 3, ul_init.d 4, ul_init.dr 5,
 * ul_init 6, u_res 7, then 'bad' 8 when present, and the rest after. */
typedef struct Mini { int u, ul, u2, ul2, out; } Mini;

static Mini mini_pixelcnn(TB *t, int H, int W, int brk) {
    const int F = 4;
    tb_init(t, H, W, 3);
    layer(t, "x1", "pad");
    int x1 = pad_ones(t);

    layer(t, "u_init", "conv2d");
    int u = conv_down(t, x1, F, 2, 3, 1);
    if (brk != BREAK_NO_DOWN_SHIFT) u = shift(t, u, 1, 0);

    layer(t, "ul_init.d", "conv2d");
    int uld = shift(t, conv_down(t, x1, F, 1, 3, 1), 1, 0);
    layer(t, "ul_init.dr", "conv2d");
    int ulr = brk == BREAK_NO_RIGHT_SHIFT ? conv_dr(t, x1, F, 2, 2, 1) : shift(t, conv_dr(t, x1, F, 2, 1, 1), 0, 1);
    layer(t, "ul_init", "add");
    int ul = op2(t, IR_ADD, uld, ulr);

    layer(t, "u_res", "resnet");
    int u2 = op2(t, IR_ADD, u, conv_down(t, op1(t, IR_CONCAT_ELU, u), F, 2, 3, 1));
    if (brk == BREAK_MID_3X3) {
        layer(t, "bad", "conv2d");
        u2 = conv_pads(t, u2, F, 3, 3, 1, 1, 1, 1, 1, SHIFT_NONE);
    }

    layer(t, "ul_res", "gated_resnet");
    int c = conv_dr(t, op1(t, IR_CONCAT_ELU, ul), 2 * F, 2, 2, 1);
    c = op2(t, IR_ADD, c, nin(t, op1(t, IR_CONCAT_ELU, u2), 2 * F));
    int ul2 = op2(t, IR_ADD, ul, op1(t, IR_GATE, c));

    layer(t, "u_down", "conv2d");
    int us = conv_down(t, u2, F, 2, 3, 2);
    layer(t, "ul_down", "conv2d");
    int uls = conv_dr(t, ul2, F, 2, 2, 2);
    layer(t, "u_up", "deconv2d");
    int ud = deconv(t, us, F, 2, 3, 1, SHIFT_DOWN);
    layer(t, "ul_up", "deconv2d");
    int ulu = deconv(t, uls, F, 2, 2, 0, SHIFT_DOWN_RIGHT);
    layer(t, "ul_mix", "conv2d");
    int ul3 = op2(t, IR_ADD, ul2, conv_dr(t, concat(t, ulu, ud), F, 2, 2, 1));

    layer(t, "out", "nin");
    int out = nin(t, op1(t, IR_ELU, ul3), 10);
    layer(t, "loss", "dmol");
    head_and_loss(t, out);
    DiagList vd;
    diag_init(&vd);
    assert_true(ir_verify(&t->g, &vd));
    diag_free(&vd);
    return (Mini){u, ul, u2, ul2, out};
}

/* Run the prover on a graph expected to be rejected; check the one error
 * and its note exactly. */
static void expect_rejected(TB *t, const char *layer_name, int line, const char *err, const char *note) {
    CheckReport rep;
    assert_false(check_causality(&t->g, &rep, &t->dl));
    if (t->dl.n != 2) diag_print(&t->dl, stderr, false);
    assert_int_equal(t->dl.n, 2);
    assert_int_equal(t->dl.nerrors, 1);
    assert_int_equal(t->dl.items[0].level, DIAG_ERROR);
    assert_string_equal(t->dl.items[0].msg, err);
    assert_int_equal(t->dl.items[0].loc.line, line);
    assert_string_equal(t->dl.items[0].loc.file, "t.yaml");
    assert_int_equal(t->dl.items[1].level, DIAG_NOTE);
    assert_string_equal(t->dl.items[1].msg, note);
    assert_int_equal(t->dl.items[1].loc.line, line);
    assert_true(rep.bad_node >= 0);
    assert_string_equal(t->g.layers[t->g.nodes[rep.bad_node].layer].name, layer_name);
    assert_true(rep.field[rep.bad_node].leaky);
    check_report_free(&rep);
}

static void assert_field(CheckField f, int at_i, int at_j, int64_t count, int top, int left, int rows, int cols) {
    assert_int_equal(f.at_i, at_i);
    assert_int_equal(f.at_j, at_j);
    assert_int_equal(f.deps_count, count);
    assert_int_equal(f.top, top);
    assert_int_equal(f.left, left);
    assert_int_equal(f.rows, rows);
    assert_int_equal(f.cols, cols);
}

/* Receptive fields by hand, at position (i,j) of each value:
 *   u   = down_shift(conv [2,3] down)       rows i-2..i-1, cols j-1..j+1
 *   ul  = down_shift(conv [1,3]) + right_shift(conv [2,1] down_right)
 *                                           (i-1, j-1..j+1) and (i, j-1)
 *   u2  = u + conv [2,3] down (u)           rows i-3..i-1, cols j-2..j+2
 *   ul2 = ul + conv [2,2] dr (ul) + u2      rows i-3..i-1 cols j-2..j+2, (i, j-2..j-1)
 *   us(I,J)  = conv [2,3] stride 2 (u2)     rows 2I-4..2I-1, cols 2J-3..2J+3
 *   uls(I,J) = conv [2,2] stride 2 (ul2)    rows 2I-4..2I-1 cols 2J-3..2J+2, (2I, 2J-3..2J-1)
 *   ud(r,q)  reads us(r/2, J) for 2J + d = q + 1, d < 3;  ulu(r,q) reads uls(r/2, q/2)
 *   out = nin(elu(ul2 + conv [2,2] dr (concat(ulu, ud))))
 * At (4,4) of 8x8: ud over (3..4, 3..4) reads us(1..2, 1..2) = rows 0..3,
 * every column; ulu adds row 4 cols 0..3; ul2 adds nothing new: 4*8 + 4 =
 * 36 pixels, rows 0..4, cols 0..7. */
static void test_mini_causal_square(void **state) {
    (void)state;
    TB t;
    Mini m = mini_pixelcnn(&t, 8, 8, BREAK_NONE);
    CheckReport rep;
    bool ok = check_causality(&t.g, &rep, &t.dl);
    if (!ok) diag_print(&t.dl, stderr, false);
    assert_true(ok);
    assert_int_equal(t.dl.n, 0);
    assert_int_equal(rep.bad_node, -1);
    assert_int_equal(rep.in_i, -1);
    assert_int_equal(rep.n, t.g.n);
    assert_field(rep.field[m.u], 4, 4, 6, 2, 3, 2, 3);
    assert_field(rep.field[m.ul], 4, 4, 4, 3, 3, 2, 3);
    assert_field(rep.field[m.u2], 4, 4, 15, 1, 2, 3, 5);
    assert_field(rep.field[m.ul2], 4, 4, 17, 1, 2, 4, 5);
    assert_field(rep.field[m.out], 4, 4, 36, 0, 0, 5, 8);
    assert_false(rep.field[m.out].leaky);
    assert_false(rep.field[m.u2].leaky);
    /* the input itself and the loss */
    assert_field(rep.field[t.g.x], 4, 4, 1, 4, 4, 1, 1);
    assert_field(rep.field[t.g.loss], -1, -1, 64, 0, 0, 8, 8);
    check_report_free(&rep);
    tb_free(&t);
}

/* At (6,8) of 12x16: ud reads us(2..3, 3..4) = rows 0..5, cols 3..11; ulu
 * reads uls(2..3, 3..4) = rows 0..5 cols 3..10 and row 6 cols 3..7; ul2's
 * (6, 6..7) is inside: 6*9 + 5 = 59 pixels, rows 0..6, cols 3..11. */
static void test_mini_causal_nonsquare(void **state) {
    (void)state;
    TB t;
    Mini m = mini_pixelcnn(&t, 12, 16, BREAK_NONE);
    CheckReport rep;
    bool ok = check_causality(&t.g, &rep, &t.dl);
    if (!ok) diag_print(&t.dl, stderr, false);
    assert_true(ok);
    assert_int_equal(t.dl.n, 0);
    assert_int_equal(rep.bad_node, -1);
    assert_field(rep.field[m.ul2], 6, 8, 17, 3, 6, 4, 5);
    assert_field(rep.field[m.out], 6, 8, 59, 0, 3, 7, 9);
    check_report_free(&rep);
    tb_free(&t);
}

static void test_mid_3x3_rejected(void **state) {
    (void)state;
    TB t;
    mini_pixelcnn(&t, 8, 8, BREAK_MID_3X3);
    expect_rejected(&t, "bad", 8,
                    "layer 'bad' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes at or "
                    "after it in raster order",
                    "the dependency enters at 'bad' (conv2d) and reaches the output along input pixel (0,0) -> "
                    "'x1' (0,0) -> 'u_init' (1,0) -> 'u_res' (1,0) -> 'bad' (0,0) -> 'ul_res' (0,0) -> "
                    "'ul_mix' (0,0) -> 'out' (0,0) (positions in each layer's own grid)");
    tb_free(&t);
}

static void test_missing_down_shift_rejected(void **state) {
    (void)state;
    TB t;
    mini_pixelcnn(&t, 8, 8, BREAK_NO_DOWN_SHIFT);
    expect_rejected(&t, "u_init", 3,
                    "layer 'u_init' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes at or "
                    "after it in raster order",
                    "the dependency enters at 'u_init' (conv2d) and reaches the output along input pixel (0,0) -> "
                    "'x1' (0,0) -> 'u_init' (0,0) -> 'u_res' (0,0) -> 'ul_res' (0,0) -> 'ul_mix' (0,0) -> "
                    "'out' (0,0) (positions in each layer's own grid)");
    tb_free(&t);
}

static void test_missing_right_shift_rejected(void **state) {
    (void)state;
    TB t;
    mini_pixelcnn(&t, 8, 8, BREAK_NO_RIGHT_SHIFT);
    expect_rejected(&t, "ul_init.dr", 5,
                    "layer 'ul_init.dr' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes "
                    "at or after it in raster order",
                    "the dependency enters at 'ul_init.dr' (conv2d) and reaches the output along input pixel "
                    "(0,0) -> 'x1' (0,0) -> 'ul_init.dr' (0,0) -> 'ul_init' (0,0) -> 'ul_res' (0,0) -> "
                    "'ul_mix' (0,0) -> 'out' (0,0) (positions in each layer's own grid)");
    tb_free(&t);
}

/* (e) A two-layer stack, by hand at the centre (4,4) of 8x8:
 *   l1 = down_shift(conv [1,3]) + right_shift(conv [2,1] down_right):
 *        {(3,3), (3,4), (3,5), (4,3)}: 4 pixels, rows 3..4, cols 3..5
 *   l2 = conv [2,2] down_right (l1) reads l1 at (3..4, 3..4):
 *        row 2: cols 2..5; row 3: cols 2..5; row 4: cols 2..3 -> 10 pixels,
 *        rows 2..4, cols 2..5
 * and a strided stack: s1 = down_shift(conv [2,3] down) (rows i-2..i-1, cols
 * j-1..j+1), s2 = conv [2,3] down stride 2 (s1), 4x4, at (2,2) reads s1 at
 * rows 3..4, cols 3..5: rows 1..3, cols 2..6 -> 15 pixels. */
static void test_receptive_field_two_layers(void **state) {
    (void)state;
    TB t;
    tb_init(&t, 8, 8, 1);
    layer(&t, "x1", "pad");
    int x1 = pad_ones(&t);
    layer(&t, "l1", "ul_init");
    int l1 = op2(&t, IR_ADD, shift(&t, conv_down(&t, x1, 2, 1, 3, 1), 1, 0),
                 shift(&t, conv_dr(&t, x1, 2, 2, 1, 1), 0, 1));
    layer(&t, "l2", "conv2d");
    int l2 = conv_dr(&t, l1, 2, 2, 2, 1);
    layer(&t, "s1", "conv2d");
    int s1 = shift(&t, conv_down(&t, x1, 2, 2, 3, 1), 1, 0);
    layer(&t, "s2", "conv2d");
    int s2 = conv_down(&t, s1, 2, 2, 3, 2);
    t.g.out = l2;
    CheckReport rep;
    assert_true(check_causality(&t.g, &rep, &t.dl));
    assert_int_equal(t.dl.n, 0);
    assert_int_equal(rep.n, t.g.n);  /* nfwd == 0: every node */
    assert_field(rep.field[l1], 4, 4, 4, 3, 3, 2, 3);
    assert_field(rep.field[l2], 4, 4, 10, 2, 2, 3, 4);
    assert_field(rep.field[s1], 4, 4, 6, 2, 3, 2, 3);
    assert_field(rep.field[s2], 2, 2, 15, 1, 2, 3, 5);
    assert_false(rep.field[l2].leaky);
    assert_false(rep.field[s2].leaky);  /* (2,2) stands for input pixel (4,4) */
    assert_true(rep.field[x1 - 1].deps_count == 0);  /* ones */
    check_report_free(&rep);
    tb_free(&t);
}

/* A shift by -1 row undoes the down shift: the leak starts at that shift,
 * not at the conv before it. */
static void test_up_shift_rejected(void **state) {
    (void)state;
    TB t;
    tb_init(&t, 4, 5, 1);
    layer(&t, "x1", "pad");
    int x1 = pad_ones(&t);
    layer(&t, "u", "conv2d");
    int u = shift(&t, conv_down(&t, x1, 2, 2, 3, 1), 1, 0);
    layer(&t, "up", "shift");
    int v = shift(&t, u, -1, 0);
    layer(&t, "head", "nin");
    t.g.out = nin(&t, v, 3);
    t.g.nfwd = t.g.n;
    /* head(0,0) = up(0,0) = u(1,0) = conv(0,0): x row 0 cols 0..1; the first
     * at or after (0,0) is (0,0) itself */
    expect_rejected(&t, "up", 4,
                    "layer 'up' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes at or "
                    "after it in raster order",
                    "the dependency enters at 'up' (shift) and reaches the output along input pixel (0,0) -> 'x1' "
                    "(0,0) -> 'u' (1,0) -> 'up' (0,0) -> 'head' (0,0) (positions in each layer's own grid)");
    tb_free(&t);
}

/* A head straight on the image: x1 = concat(x, ones) and elu(x1) depend only
 * on each pixel itself, which is not counted as leaky, so the blame falls on
 * the node that is the output, the nin's conv2d. */
static void test_head_on_image_rejected(void **state) {
    (void)state;
    TB t;
    tb_init(&t, 3, 3, 3);
    layer(&t, "x1", "pad");
    int x1 = pad_ones(&t);
    layer(&t, "head", "nin");
    int out = nin(&t, op1(&t, IR_ELU, x1), 10);
    layer(&t, "loss", "dmol");
    head_and_loss(&t, out);
    expect_rejected(&t, "head", 3,
                    "layer 'head' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes at or "
                    "after it in raster order",
                    "the dependency enters at 'head' (conv2d) and reaches the output along input pixel (0,0) -> 'x1' "
                    "(0,0) -> 'head' (0,0) (positions in each layer's own grid)");
    tb_free(&t);
}

/* The output must have pixels for causality to mean anything. */
static void test_output_without_pixels(void **state) {
    (void)state;
    TB t;
    mini_pixelcnn(&t, 4, 4, BREAK_NONE);
    t.g.out = t.g.loss;
    CheckReport rep;
    assert_false(check_causality(&t.g, &rep, &t.dl));
    assert_int_equal(t.dl.n, 1);
    assert_string_equal(t.dl.items[0].msg, "the network output 'loss' is [1]; causality is defined for an "
                                           "image-shaped output (HxWxC)");
    assert_int_equal(t.dl.items[0].loc.line, 15);
    check_report_free(&rep);
    tb_free(&t);
}

/* ---- the full PixelCNN++ topology (PIXELCNNPP.md, "The network") -------- */

static int stream_id;

/* gated_resnet(x, a = concat(a, a2) when a2 >= 0, conv): down_shifted [2,3]
 * for the u stream (dr false), down-right shifted [2,2] for ul. */
static int gated_resnet(TB *t, const char *name, int x, int a, int a2, bool dr) {
    layer(t, name, "gated_resnet");
    int F = channels(t, x);
    if (a2 >= 0) a = concat(t, a, a2);
    int c1 = op1(t, IR_CONCAT_ELU, x);
    c1 = dr ? conv_dr(t, c1, F, 2, 2, 1) : conv_down(t, c1, F, 2, 3, 1);
    if (a >= 0) c1 = op2(t, IR_ADD, c1, nin(t, op1(t, IR_CONCAT_ELU, a), F));
    c1 = op1(t, IR_CONCAT_ELU, c1);
    Attrs da = {0};
    da.p = 0.5;
    da.stream = stream_id++;
    c1 = node(t, IR_DROPOUT, &c1, 1, &da);
    int c2 = dr ? conv_dr(t, c1, 2 * F, 2, 2, 1) : conv_down(t, c1, 2 * F, 2, 3, 1);
    return op2(t, IR_ADD, x, op1(t, IR_GATE, c2));
}

/* The whole network with R resnets per stage, F filters, K mixture
 * components; the layer named `wrong` (a ul resnet) gets the u stream's
 * [2,3] down-shifted conv. */
static void pixelcnnpp(TB *t, int H, int W, int C, int R, int F, int K, const char *wrong) {
    char nm[64];
    int us[64], uls[64], nu = 0, nul = 0;
    tb_init(t, H, W, C);
    layer(t, "x1", "pad");
    int x1 = pad_ones(t);
    layer(t, "init.u", "conv2d");
    int u = shift(t, conv_down(t, x1, F, 2, 3, 1), 1, 0);
    layer(t, "init.ul", "conv2d");
    int ul = op2(t, IR_ADD, shift(t, conv_down(t, x1, F, 1, 3, 1), 1, 0),
                 shift(t, conv_dr(t, x1, F, 2, 1, 1), 0, 1));
    us[nu++] = u;
    uls[nul++] = ul;
    for (int st = 0; st < 3; st++) {
        for (int r = 0; r < R; r++) {
            snprintf(nm, sizeof nm, "up.%d.u.%d", st, r);
            us[nu++] = u = gated_resnet(t, nm, u, -1, -1, false);
            snprintf(nm, sizeof nm, "up.%d.ul.%d", st, r);
            uls[nul++] = ul = gated_resnet(t, nm, ul, u, -1, !(wrong && !strcmp(wrong, nm)));
        }
        if (st < 2) {
            snprintf(nm, sizeof nm, "up.%d.u.down", st);
            layer(t, nm, "conv2d");
            us[nu++] = u = conv_down(t, u, F, 2, 3, 2);
            snprintf(nm, sizeof nm, "up.%d.ul.down", st);
            layer(t, nm, "conv2d");
            uls[nul++] = ul = conv_dr(t, ul, F, 2, 2, 2);
        }
    }
    u = us[--nu];
    ul = uls[--nul];
    for (int st = 0; st < 3; st++) {
        for (int r = 0; r < (st ? R + 1 : R); r++) {
            snprintf(nm, sizeof nm, "down.%d.u.%d", st, r);
            u = gated_resnet(t, nm, u, us[--nu], -1, false);
            snprintf(nm, sizeof nm, "down.%d.ul.%d", st, r);
            ul = gated_resnet(t, nm, ul, u, uls[--nul], !(wrong && !strcmp(wrong, nm)));
        }
        if (st < 2) {
            snprintf(nm, sizeof nm, "down.%d.u.up", st);
            layer(t, nm, "deconv2d");
            u = deconv(t, u, F, 2, 3, 1, SHIFT_DOWN);
            snprintf(nm, sizeof nm, "down.%d.ul.up", st);
            layer(t, nm, "deconv2d");
            ul = deconv(t, ul, F, 2, 2, 0, SHIFT_DOWN_RIGHT);
        }
    }
    assert_int_equal(nu, 0);
    assert_int_equal(nul, 0);
    layer(t, "out", "nin");
    int out = nin(t, op1(t, IR_ELU, ul), C == 1 ? 3 * K : 10 * K);
    layer(t, "loss", "dmol");
    Attrs a = {0};
    a.nr_mix = K;
    int in[2] = {out, t->g.x};
    t->g.out = out;
    t->g.nll = node(t, IR_DMOL_NLL, in, 2, &a);
    t->g.loss = op1(t, IR_SUM, t->g.nll);
    t->g.nfwd = t->g.n;
    DiagList vd;
    diag_init(&vd);
    assert_true(ir_verify(&t->g, &vd));
    diag_free(&vd);
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The paper's network (R = 5) at 32x32 is causal; the last pixel sees every
 * pixel before it (the receptive field of PixelCNN++ covers the whole
 * causal half-plane) — checked at the centre: all rows above, and the
 * centre row up to but not including column 16. */
static void test_paper_model_causal(void **state) {
    (void)state;
    TB t;
    pixelcnnpp(&t, 32, 32, 3, 5, 4, 10, NULL);
    CheckReport rep;
    double t0 = seconds();
    bool ok = check_causality(&t.g, &rep, &t.dl);
    double dt = seconds() - t0;
    if (!ok) diag_print(&t.dl, stderr, false);
    assert_true(ok);
    printf("paper model (R=5) at 32x32: %d forward nodes, causality checked in %.1f ms\n", t.g.nfwd, 1e3 * dt);
    CheckField f = rep.field[t.g.out];
    assert_int_equal(f.at_i, 16);
    assert_int_equal(f.at_j, 16);
    assert_int_equal(f.deps_count, 16 * 32 + 16);
    assert_int_equal(f.top, 0);
    assert_int_equal(f.left, 0);
    assert_int_equal(f.rows, 17);
    assert_int_equal(f.cols, 32);
    check_report_free(&rep);
    tb_free(&t);
}

static void test_paper_model_nonsquare_gray(void **state) {
    (void)state;
    TB t;
    pixelcnnpp(&t, 12, 20, 1, 1, 2, 2, NULL);
    CheckReport rep;
    bool ok = check_causality(&t.g, &rep, &t.dl);
    if (!ok) diag_print(&t.dl, stderr, false);
    assert_true(ok);
    check_report_free(&rep);
    tb_free(&t);
}

/* A down-pass ul resnet built with the u stream's [2,3] conv reads ul one
 * column to the right on its own row: rejected, naming that resnet. */
static void test_paper_model_wrong_conv_rejected(void **state) {
    (void)state;
    TB t;
    pixelcnnpp(&t, 16, 16, 3, 2, 4, 5, "down.1.ul.0");
    int line = -1;
    for (int l = 0; l < t.g.nlayers; l++)
        if (!strcmp(t.g.layers[l].name, "down.1.ul.0")) line = t.g.layers[l].loc.line;
    CheckReport rep;
    assert_false(check_causality(&t.g, &rep, &t.dl));
    assert_int_equal(t.dl.n, 2);
    assert_int_equal(t.dl.nerrors, 1);
    const char *want = "layer 'down.1.ul.0' is not causal: output pixel (";
    assert_memory_equal(t.dl.items[0].msg, want, strlen(want));
    assert_int_equal(t.dl.items[0].loc.line, line);
    assert_string_equal(t.g.layers[t.g.nodes[rep.bad_node].layer].name, "down.1.ul.0");
    assert_int_equal(t.g.nodes[rep.bad_node].op, IR_CONV2D);
    /* the witness: an input pixel at or after the output pixel */
    assert_true(rep.in_i * 16 + rep.in_j >= rep.out_i * 16 + rep.out_j);
    char tail[128];
    snprintf(tail, sizeof tail, "output pixel (%d,%d) depends on input pixel (%d,%d), which", rep.out_i, rep.out_j,
             rep.in_i, rep.in_j);
    assert_non_null(strstr(t.dl.items[0].msg, tail));
    /* a long path is shortened around the culprit and ends at the output */
    assert_non_null(strstr(t.dl.items[1].msg, " -> ... -> "));
    assert_non_null(strstr(t.dl.items[1].msg, "'down.1.ul.0'"));
    assert_non_null(strstr(t.dl.items[1].msg, "-> 'out' ("));
    fprintf(stderr, "%s\n%s\n", t.dl.items[0].msg, t.dl.items[1].msg);
    check_report_free(&rep);
    tb_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mini_causal_square),
        cmocka_unit_test(test_mini_causal_nonsquare),
        cmocka_unit_test(test_mid_3x3_rejected),
        cmocka_unit_test(test_missing_down_shift_rejected),
        cmocka_unit_test(test_missing_right_shift_rejected),
        cmocka_unit_test(test_receptive_field_two_layers),
        cmocka_unit_test(test_up_shift_rejected),
        cmocka_unit_test(test_head_on_image_rejected),
        cmocka_unit_test(test_output_without_pixels),
        cmocka_unit_test(test_paper_model_causal),
        cmocka_unit_test(test_paper_model_nonsquare_gray),
        cmocka_unit_test(test_paper_model_wrong_conv_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
