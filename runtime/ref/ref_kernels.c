/*
 * ref_kernels.c — one naive double-precision kernel per op of ops.def,
 * written straight from its math line. Loops are plain nested loops over
 * named indices; nothing is fused, tiled, cached or vectorised, and nothing
 * here is shared with the compiled kernels.
 *
 * Conventions: N images (r->n) for batched values, NHWC, last index fastest.
 * Every kernel receives a zeroed output and may accumulate into it.
 */
#include "ref_kernels.h"

#include <math.h>
#include <string.h>

#include "pxc_model.h"

/* ---- helpers --------------------------------------------------------------- */

static const Shape *in_shape(const RefRun *r, const Node *nd, int k) { return &r->g->nodes[nd->in[k]].shape; }

/* Images held by a value of shape s: N when batched, else 1. */
static int64_t images(const RefRun *r, const Shape *s) { return s->batched ? r->n : 1; }

/* Elements of a whole value of shape s (all images). */
static int64_t total(const RefRun *r, const Shape *s) { return images(r, s) * shape_numel(*s); }

/* Index of (b,i,j,c) in an [N,H,W,C] array. */
static int64_t at4(int64_t b, int64_t i, int64_t j, int64_t c, int64_t H, int64_t W, int64_t C) {
    return ((b * H + i) * W + j) * C + c;
}

static double sigmoid(double t) { return t >= 0 ? 1.0 / (1.0 + exp(-t)) : exp(t) / (1.0 + exp(t)); }
static double softplus(double t) { return fmax(t, 0.0) + log1p(exp(-fabs(t))); }
static double elu(double t) { return t > 0 ? t : expm1(t); }
static double elu_deriv(double t) { return t > 0 ? 1.0 : exp(t); }

/* ---- leaves --------------------------------------------------------------- */

/* INPUT, LABELS and PARAM: the executor loads their values before a run. */
static void ref_input(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    (void)r, (void)nd, (void)in, (void)out;
}
static void ref_labels(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    (void)r, (void)nd, (void)in, (void)out;
}
static void ref_param(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    (void)r, (void)nd, (void)in, (void)out;
}

/* constant 1.0 */
static void ref_ones(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    (void)in;
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = 1.0;
}

/* ---- weight normalisation -------------------------------------------------
 * The output channel of flat element t of v is its coordinate on `axis`:
 * (t / stride) % D with stride the product of the later dimensions. */

static void wn_axis(const Shape *v, int axis, int64_t *stride, int64_t *D) {
    *stride = 1;
    for (int k = axis + 1; k < v->rank; k++) *stride *= v->d[k];
    *D = v->d[axis];
}

/* norm2[o] = sum of v^2 over the elements of output channel o */
static void wn_norm2(const Shape *vs, int axis, const double *v, double *norm2 /*[D]*/) {
    int64_t st, D;
    wn_axis(vs, axis, &st, &D);
    for (int64_t o = 0; o < D; o++) norm2[o] = 0;
    for (int64_t t = 0; t < shape_numel(*vs); t++) norm2[(t / st) % D] += v[t] * v[t];
}

/* w = g v / ||v||, per output channel */
static void ref_wnorm(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *vs = in_shape(r, nd, 0);
    const double *v = in[0], *g = in[1];
    int64_t st, D;
    wn_axis(vs, nd->a.axis, &st, &D);
    double norm2[D];
    wn_norm2(vs, nd->a.axis, v, norm2);
    for (int64_t t = 0; t < shape_numel(*vs); t++) {
        int64_t o = (t / st) % D;
        out[t] = g[o] * v[t] / sqrt(norm2[o]);
    }
}

/* dv = g/||v|| (dw - <dw,v> v/||v||^2), per output channel (inputs v, g, dw) */
static void ref_wnorm_dv(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *vs = in_shape(r, nd, 0);
    const double *v = in[0], *g = in[1], *dw = in[2];
    int64_t st, D;
    wn_axis(vs, nd->a.axis, &st, &D);
    double norm2[D], dot[D];
    wn_norm2(vs, nd->a.axis, v, norm2);
    for (int64_t o = 0; o < D; o++) dot[o] = 0;
    for (int64_t t = 0; t < shape_numel(*vs); t++) dot[(t / st) % D] += dw[t] * v[t];
    for (int64_t t = 0; t < shape_numel(*vs); t++) {
        int64_t o = (t / st) % D;
        out[t] = g[o] / sqrt(norm2[o]) * (dw[t] - dot[o] * v[t] / norm2[o]);
    }
}

/* dg = <dw, v> / ||v||, per output channel (inputs v, dw) */
static void ref_wnorm_dg(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *vs = in_shape(r, nd, 0);
    const double *v = in[0], *dw = in[1];
    int64_t st, D;
    wn_axis(vs, nd->a.axis, &st, &D);
    double norm2[D];
    wn_norm2(vs, nd->a.axis, v, norm2);
    for (int64_t t = 0; t < shape_numel(*vs); t++) out[(t / st) % D] += dw[t] * v[t];
    for (int64_t o = 0; o < D; o++) out[o] /= sqrt(norm2[o]);
}

/* ---- convolution -----------------------------------------------------------
 * x [H,W,C] zero-padded by pad_t rows on top, pad_l columns on the left
 * (pad_r, pad_b on the other sides only bound the output size, which the
 * shape rule computed): xpad[r,q] = x[r - pad_t, q - pad_l], 0 outside.
 * w is [kh,kw,C,O], or [C,O] for a nin (kh = kw = 1). */

static int64_t conv_w_index(const Shape *ws, int a, int d, int64_t c, int64_t o, int kw, int64_t C, int64_t O) {
    if (ws->rank == 2) return c * O + o;
    return ((a * kw + d) * C + c) * O + o;
}

/* y[i,j,o] = b[o] + sum_{a,d,c} xpad[S*i+a, S*j+d, c] w[a,d,c,o] */
static void ref_conv2d(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *xs = in_shape(r, nd, 0), *ws = in_shape(r, nd, 1);
    const double *x = in[0], *w = in[1], *bias = nd->nin > 2 ? in[2] : NULL;
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2];
    int64_t Ho = nd->shape.d[0], Wo = nd->shape.d[1], O = nd->shape.d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++)
                for (int64_t o = 0; o < O; o++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int a = 0; a < kh; a++)
                        for (int d = 0; d < kw; d++) {
                            int64_t row = S * i + a - nd->a.pad_t, col = S * j + d - nd->a.pad_l;
                            if (row < 0 || row >= H || col < 0 || col >= W) continue;
                            for (int64_t c = 0; c < C; c++)
                                acc += x[at4(b, row, col, c, H, W, C)] * w[conv_w_index(ws, a, d, c, o, kw, C, O)];
                        }
                    out[at4(b, i, j, o, Ho, Wo, O)] = acc;
                }
}

/* dx[row,col,c] += dy[i,j,o] w[a,d,c,o] for row = S*i+a-pad_t, col = S*j+d-pad_l
 * inside x (inputs dy, w; output x's shape) */
static void ref_conv2d_dx(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *dys = in_shape(r, nd, 0), *ws = in_shape(r, nd, 1);
    const double *dy = in[0], *w = in[1];
    int64_t H = nd->shape.d[0], W = nd->shape.d[1], C = nd->shape.d[2];
    int64_t Ho = dys->d[0], Wo = dys->d[1], O = dys->d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++)
                for (int64_t o = 0; o < O; o++)
                    for (int a = 0; a < kh; a++)
                        for (int d = 0; d < kw; d++) {
                            int64_t row = S * i + a - nd->a.pad_t, col = S * j + d - nd->a.pad_l;
                            if (row < 0 || row >= H || col < 0 || col >= W) continue;
                            for (int64_t c = 0; c < C; c++)
                                out[at4(b, row, col, c, H, W, C)] +=
                                    dy[at4(b, i, j, o, Ho, Wo, O)] * w[conv_w_index(ws, a, d, c, o, kw, C, O)];
                        }
}

/* dw[a,d,c,o] = sum_{b,i,j} xpad[S*i+a, S*j+d, c] dy[i,j,o] (inputs x, dy;
 * output w's shape) */
static void ref_conv2d_dw(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *xs = in_shape(r, nd, 0), *dys = in_shape(r, nd, 1);
    const double *x = in[0], *dy = in[1];
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2];
    int64_t Ho = dys->d[0], Wo = dys->d[1], O = dys->d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++)
                for (int64_t o = 0; o < O; o++)
                    for (int a = 0; a < kh; a++)
                        for (int d = 0; d < kw; d++) {
                            int64_t row = S * i + a - nd->a.pad_t, col = S * j + d - nd->a.pad_l;
                            if (row < 0 || row >= H || col < 0 || col >= W) continue;
                            for (int64_t c = 0; c < C; c++)
                                out[conv_w_index(&nd->shape, a, d, c, o, kw, C, O)] +=
                                    x[at4(b, row, col, c, H, W, C)] * dy[at4(b, i, j, o, Ho, Wo, O)];
                        }
}

/* ---- transposed convolution ------------------------------------------------
 * x [H,W,C], w [kh,kw,O,C], stride S: the full output Y[S*i+a, S*j+d, o]
 * += x[i,j,c] w[a,d,o,c]; the kept window is y[row,col] = Y[row, col+crop_l]
 * for row < Ho, col < Wo (rows past Ho are cropped at the bottom). */

/* y[row,col,o] = b[o] + Y[row, col + crop_l, o] */
static void ref_deconv2d(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *xs = in_shape(r, nd, 0);
    const double *x = in[0], *w = in[1], *bias = nd->nin > 2 ? in[2] : NULL;
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2];
    int64_t Ho = nd->shape.d[0], Wo = nd->shape.d[1], O = nd->shape.d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++)
                for (int a = 0; a < kh; a++)
                    for (int d = 0; d < kw; d++) {
                        int64_t row = S * i + a, col = S * j + d - nd->a.crop_l;
                        if (row >= Ho || col < 0 || col >= Wo) continue;
                        for (int64_t o = 0; o < O; o++)
                            for (int64_t c = 0; c < C; c++)
                                out[at4(b, row, col, o, Ho, Wo, O)] +=
                                    x[at4(b, i, j, c, H, W, C)] * w[((a * kw + d) * O + o) * C + c];
                    }
    if (bias)
        for (int64_t t = 0; t < r->n * Ho * Wo; t++)
            for (int64_t o = 0; o < O; o++) out[t * O + o] += bias[o];
}

/* dx[i,j,c] = sum_{a,d,o} dy[S*i+a, S*j+d-crop_l, o] w[a,d,o,c] over the kept
 * window (inputs dy, w; output x's shape) */
static void ref_deconv2d_dx(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *dys = in_shape(r, nd, 0);
    const double *dy = in[0], *w = in[1];
    int64_t H = nd->shape.d[0], W = nd->shape.d[1], C = nd->shape.d[2];
    int64_t Ho = dys->d[0], Wo = dys->d[1], O = dys->d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++)
                for (int a = 0; a < kh; a++)
                    for (int d = 0; d < kw; d++) {
                        int64_t row = S * i + a, col = S * j + d - nd->a.crop_l;
                        if (row >= Ho || col < 0 || col >= Wo) continue;
                        for (int64_t o = 0; o < O; o++)
                            for (int64_t c = 0; c < C; c++)
                                out[at4(b, i, j, c, H, W, C)] +=
                                    dy[at4(b, row, col, o, Ho, Wo, O)] * w[((a * kw + d) * O + o) * C + c];
                    }
}

/* dw[a,d,o,c] = sum_{b,i,j} x[i,j,c] dy[S*i+a, S*j+d-crop_l, o] (inputs x, dy) */
static void ref_deconv2d_dw(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *xs = in_shape(r, nd, 0), *dys = in_shape(r, nd, 1);
    const double *x = in[0], *dy = in[1];
    int64_t H = xs->d[0], W = xs->d[1], C = xs->d[2];
    int64_t Ho = dys->d[0], Wo = dys->d[1], O = dys->d[2];
    int kh = nd->a.kh, kw = nd->a.kw, S = nd->a.stride;
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++)
                for (int a = 0; a < kh; a++)
                    for (int d = 0; d < kw; d++) {
                        int64_t row = S * i + a, col = S * j + d - nd->a.crop_l;
                        if (row >= Ho || col < 0 || col >= Wo) continue;
                        for (int64_t o = 0; o < O; o++)
                            for (int64_t c = 0; c < C; c++)
                                out[((a * kw + d) * O + o) * C + c] +=
                                    x[at4(b, i, j, c, H, W, C)] * dy[at4(b, row, col, o, Ho, Wo, O)];
                    }
}

/* db[c] = sum_{b,i,j} dy[b,i,j,c] */
static void ref_bias_grad(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *s = in_shape(r, nd, 0);
    int64_t C = s->d[2], pixels = total(r, s) / C;
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) out[c] += in[0][p * C + c];
}

/* ---- data movement ---------------------------------------------------------- */

/* y[i,j] = x[i-dy, j-dx], zero outside */
static void ref_shift(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t H = nd->shape.d[0], W = nd->shape.d[1], C = nd->shape.d[2];
    for (int64_t b = 0; b < r->n; b++)
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = 0; j < W; j++) {
                int64_t si = i - nd->a.dy, sj = j - nd->a.dx;
                if (si < 0 || si >= H || sj < 0 || sj >= W) continue;
                for (int64_t c = 0; c < C; c++) out[at4(b, i, j, c, H, W, C)] = in[0][at4(b, si, sj, c, H, W, C)];
            }
}

/* channel concatenation, inputs in order */
static void ref_concat(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = nd->shape.d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++) {
        int64_t c0 = 0;
        for (int k = 0; k < nd->nin; k++) {
            int64_t Ck = in_shape(r, nd, k)->d[2];
            for (int64_t c = 0; c < Ck; c++) out[p * C + c0 + c] = in[k][p * Ck + c];
            c0 += Ck;
        }
    }
}

/* y = x[..., start:start+len] */
static void ref_slice(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t Cin = in_shape(r, nd, 0)->d[2], L = nd->a.len, pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < L; c++) out[p * L + c] = in[0][p * Cin + nd->a.start + c];
}

/* dx = zeros [.., total] with dy at channels [start, start+len) */
static void ref_slice_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t T = nd->a.total, L = nd->a.len, pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < L; c++) out[p * T + nd->a.start + c] = in[0][p * L + c];
}

/* y = a + b */
static void ref_add(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = in[0][t] + in[1][t];
}

/* ---- pointwise -------------------------------------------------------------- */

static void ref_elu(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = elu(in[0][t]);
}

/* dx = dy * (x > 0 ? 1 : exp(x)) (inputs x, dy) */
static void ref_elu_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = in[1][t] * elu_deriv(in[0][t]);
}

/* y = elu(concat(x, -x)): channels [0,C) elu(x), [C,2C) elu(-x) */
static void ref_concat_elu(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = in_shape(r, nd, 0)->d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) {
            out[p * 2 * C + c] = elu(in[0][p * C + c]);
            out[p * 2 * C + C + c] = elu(-in[0][p * C + c]);
        }
}

/* dx = dy[:C] elu'(x) - dy[C:] elu'(-x) (inputs x, dy) */
static void ref_concat_elu_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = nd->shape.d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) {
            double x = in[0][p * C + c];
            out[p * C + c] = in[1][p * 2 * C + c] * elu_deriv(x) - in[1][p * 2 * C + C + c] * elu_deriv(-x);
        }
}

static void ref_sigmoid(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = sigmoid(in[0][t]);
}

/* dx = dy y (1 - y) (inputs y, dy) */
static void ref_sigmoid_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = in[1][t] * in[0][t] * (1.0 - in[0][t]);
}

static void ref_tanh(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = tanh(in[0][t]);
}

/* dx = dy (1 - y^2) (inputs y, dy) */
static void ref_tanh_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = in[1][t] * (1.0 - in[0][t] * in[0][t]);
}

/* y = a sigmoid(b), a = x[..., :C], b = x[..., C:] */
static void ref_gate(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = nd->shape.d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) out[p * C + c] = in[0][p * 2 * C + c] * sigmoid(in[0][p * 2 * C + C + c]);
}

/* d[a,b] = [dy s, dy a s (1-s)], s = sigmoid(b) (inputs x, dy; output x's shape) */
static void ref_gate_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = nd->shape.d[2] / 2, pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) {
            double a = in[0][p * 2 * C + c], s = sigmoid(in[0][p * 2 * C + C + c]), dy = in[1][p * C + c];
            out[p * 2 * C + c] = dy * s;
            out[p * 2 * C + C + c] = dy * a * s * (1.0 - s);
        }
}

/* training: y = keep ? x / (1-p) : 0, keep = pxc_uniform(pxc_image_seed(seed, b), stream, e) >= p
 * for element e (flat within the image's [H,W,C]) of image b; eval: y = x */
static void ref_dropout(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    double p = nd->a.p;
    int64_t per_image = shape_numel(nd->shape);
    for (int64_t t = 0; t < total(r, &nd->shape); t++) {
        if (!r->training) {
            out[t] = in[0][t];
            continue;
        }
        bool keep = (double)pxc_uniform(pxc_image_seed(r->seed, t / per_image), (uint32_t)nd->a.stream,
                                        (uint64_t)(t % per_image)) >= p;
        out[t] = keep ? in[0][t] / (1.0 - p) : 0.0;
    }
}

/* ---- conditioning ---------------------------------------------------------- */

/* y[b,i,j,c] = x[b,i,j,c] + hw[label[b], c] (inputs x, hw, labels) */
static void ref_class_bias(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = nd->shape.d[2], per_image = shape_numel(nd->shape);
    for (int64_t b = 0; b < r->n; b++) {
        int64_t k = (int64_t)in[2][b];
        for (int64_t t = 0; t < per_image; t++) {
            int64_t e = b * per_image + t;
            out[e] = in[0][e] + in[1][k * C + t % C];
        }
    }
}

/* dhw[k,c] = sum_{b: label b = k} sum_{i,j} dy[b,i,j,c] (inputs dy, labels) */
static void ref_class_bias_dhw(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *s = in_shape(r, nd, 0);
    int64_t C = s->d[2], per_image = shape_numel(*s);
    for (int64_t b = 0; b < r->n; b++) {
        int64_t k = (int64_t)in[1][b];
        for (int64_t t = 0; t < per_image; t++) out[k * C + t % C] += in[0][b * per_image + t];
    }
}

/* ---- discretized logistic mixture ------------------------------------------
 * One pixel, straight from shared/reference/loss/README.md. l holds K values
 * (C = 3: 10M, C = 1: 3M), x holds C values. Returns -log p(x | l); when dl
 * (K) or dx (C) is not NULL, writes d nll/d l or d nll/d x there, the
 * derivative of the piecewise expression with the branch choices held
 * constant and the -7 clamp passing no gradient below it. */

enum { DMOL_EDGE_LO, DMOL_EDGE_HI, DMOL_INTERIOR, DMOL_DENSITY };

static double dmol_pixel(const double *l, const double *x, int C, int M, double *dl, double *dx) {
    if (M < 1 || (C != 1 && C != 3)) pxc_bug("dmol_nll with %d components over %d channels", M, C);
    /* slots of component k, channel c in l */
    int mean_at[3][M], ls_at[3][M], coef_at[3][M];
    for (int c = 0; c < C; c++)
        for (int k = 0; k < M; k++) {
            int base = C == 3 ? M + 3 * M * c : M;
            mean_at[c][k] = base + k;
            ls_at[c][k] = C == 3 ? base + M + k : 2 * M + k;
            coef_at[c][k] = C == 3 ? base + 2 * M + k : -1;
        }
    double logp[M], gcen[3][M], gs[3][M], alpha[M], beta[M], gamma_[M];
    for (int k = 0; k < M; k++) {
        alpha[k] = C == 3 ? tanh(l[coef_at[0][k]]) : 0;
        beta[k] = C == 3 ? tanh(l[coef_at[1][k]]) : 0;
        gamma_[k] = C == 3 ? tanh(l[coef_at[2][k]]) : 0;
    }
    /* log_softmax of the mixture logits */
    double lmax = l[0];
    for (int k = 1; k < M; k++) lmax = fmax(lmax, l[k]);
    double lsum = 0;
    for (int k = 0; k < M; k++) lsum += exp(l[k] - lmax);
    double log_norm = lmax + log(lsum);

    for (int k = 0; k < M; k++) {
        logp[k] = l[k] - log_norm;
        for (int c = 0; c < C; c++) {
            double mu = l[mean_at[c][k]];
            if (c == 1) mu += alpha[k] * x[0];
            if (c == 2) mu += beta[k] * x[0] + gamma_[k] * x[1];
            double s = fmax(l[ls_at[c][k]], -7.0);
            double cen = x[c] - mu, inv = exp(-s);
            double plus = inv * (cen + 1.0 / 255.0), minus = inv * (cen - 1.0 / 255.0), mid = inv * cen;
            double lp, g_cen, g_s; /* lp and its derivatives w.r.t. cen and s */
            if (x[c] < -0.999) {
                lp = plus - softplus(plus);
                g_cen = sigmoid(-plus) * inv;
                g_s = -sigmoid(-plus) * plus;
            } else if (x[c] > 0.999) {
                lp = -softplus(minus);
                g_cen = -sigmoid(minus) * inv;
                g_s = sigmoid(minus) * minus;
            } else {
                double sp = sigmoid(plus), sm = sigmoid(minus), d = sp - sm;
                if (d > 1e-5) {
                    lp = log(fmax(d, 1e-12));
                    double dp = sp * (1 - sp), dm = sm * (1 - sm);
                    g_cen = (dp - dm) * inv / d;
                    g_s = -(dp * plus - dm * minus) / d;
                } else {
                    lp = mid - s - 2.0 * softplus(mid) - log(127.5);
                    g_cen = (1.0 - 2.0 * sigmoid(mid)) * inv;
                    g_s = -(1.0 - 2.0 * sigmoid(mid)) * mid - 1.0;
                }
            }
            logp[k] += lp;
            gcen[c][k] = g_cen;
            gs[c][k] = g_s;
        }
    }
    double pmax = logp[0];
    for (int k = 1; k < M; k++) pmax = fmax(pmax, logp[k]);
    double psum = 0;
    for (int k = 0; k < M; k++) psum += exp(logp[k] - pmax);
    double lse = pmax + log(psum);

    if (dl || dx) {
        double wk[M]; /* posterior responsibility of each component */
        for (int k = 0; k < M; k++) wk[k] = exp(logp[k] - lse);
        if (dl) {
            int K = C == 3 ? 10 * M : 3 * M;
            for (int t = 0; t < K; t++) dl[t] = 0;
            for (int k = 0; k < M; k++) {
                dl[k] = exp(l[k] - log_norm) - wk[k];
                for (int c = 0; c < C; c++) {
                    dl[mean_at[c][k]] = wk[k] * gcen[c][k];
                    dl[ls_at[c][k]] = l[ls_at[c][k]] >= -7.0 ? -wk[k] * gs[c][k] : 0.0;
                }
                if (C == 3) {
                    dl[coef_at[0][k]] = wk[k] * gcen[1][k] * x[0] * (1 - alpha[k] * alpha[k]);
                    dl[coef_at[1][k]] = wk[k] * gcen[2][k] * x[0] * (1 - beta[k] * beta[k]);
                    dl[coef_at[2][k]] = wk[k] * gcen[2][k] * x[1] * (1 - gamma_[k] * gamma_[k]);
                }
            }
        }
        if (dx) {
            for (int c = 0; c < C; c++) dx[c] = 0;
            for (int k = 0; k < M; k++) {
                if (C == 3) {
                    dx[0] -= wk[k] * (gcen[0][k] - alpha[k] * gcen[1][k] - beta[k] * gcen[2][k]);
                    dx[1] -= wk[k] * (gcen[1][k] - gamma_[k] * gcen[2][k]);
                    dx[2] -= wk[k] * gcen[2][k];
                } else {
                    dx[0] -= wk[k] * gcen[0][k];
                }
            }
        }
    }
    return -lse;
}

/* nll[i,j] = -log p(x[i,j,:] | l[i,j,:]) (inputs l, x) */
static void ref_dmol_nll(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t K = in_shape(r, nd, 0)->d[2], C = in_shape(r, nd, 1)->d[2];
    int64_t pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        out[p] = dmol_pixel(in[0] + p * K, in[1] + p * C, (int)C, nd->a.nr_mix, NULL, NULL);
}

/* dl = dnll d nll/d l (inputs l, x, dnll) */
static void ref_dmol_nll_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t K = in_shape(r, nd, 0)->d[2], C = in_shape(r, nd, 1)->d[2];
    int64_t pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++) {
        dmol_pixel(in[0] + p * K, in[1] + p * C, (int)C, nd->a.nr_mix, out + p * K, NULL);
        for (int64_t t = 0; t < K; t++) out[p * K + t] *= in[2][p];
    }
}

/* dx = dnll d nll/d x, directly and through the channel coefficients
 * (inputs l, x, dnll) */
static void ref_dmol_nll_dx(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t K = in_shape(r, nd, 0)->d[2], C = in_shape(r, nd, 1)->d[2];
    int64_t pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++) {
        dmol_pixel(in[0] + p * K, in[1] + p * C, (int)C, nd->a.nr_mix, NULL, out + p * C);
        for (int64_t c = 0; c < C; c++) out[p * C + c] *= in[2][p];
    }
}

/* ---- 256-way softmax --------------------------------------------------------
 * The target of sub-pixel x is its 8-bit value v = round((x + 1) 127.5),
 * clamped to [0, 255]. */

static int64_t softmax_target(double x) {
    double v = nearbyint((x + 1.0) * 127.5);
    return v < 0 ? 0 : v > 255 ? 255 : (int64_t)v;
}

/* log sum_j exp(z[j]) over 256 logits */
static double logsumexp256(const double *z) {
    double m = z[0], s = 0;
    for (int j = 1; j < 256; j++) m = fmax(m, z[j]);
    for (int j = 0; j < 256; j++) s += exp(z[j] - m);
    return m + log(s);
}

/* nll[i,j] = -sum_c log softmax(l[i,j,256c:256c+256])[v_c] (inputs l, x) */
static void ref_softmax_nll(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = in_shape(r, nd, 1)->d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) {
            const double *z = in[0] + p * 256 * C + 256 * c;
            out[p] += logsumexp256(z) - z[softmax_target(in[1][p * C + c])];
        }
}

/* dl[256c+j] = dnll (softmax_j - [j == v_c]) (inputs l, x, dnll) */
static void ref_softmax_nll_bwd(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    int64_t C = in_shape(r, nd, 1)->d[2], pixels = r->n * nd->shape.d[0] * nd->shape.d[1];
    for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < C; c++) {
            const double *z = in[0] + p * 256 * C + 256 * c;
            double lse = logsumexp256(z);
            int64_t v = softmax_target(in[1][p * C + c]);
            for (int j = 0; j < 256; j++)
                out[p * 256 * C + 256 * c + j] = in[2][p] * (exp(z[j] - lse) - (j == v ? 1.0 : 0.0));
        }
}

/* ---- reductions ------------------------------------------------------------- */

/* loss = sum of every element over the batch */
static void ref_sum(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    const Shape *s = in_shape(r, nd, 0);
    for (int64_t t = 0; t < total(r, s); t++) out[0] += in[0][t];
}

/* y = dloss[0] everywhere in the attr shape */
static void ref_broadcast(const RefRun *r, const Node *nd, const double *const *in, double *out) {
    for (int64_t t = 0; t < total(r, &nd->shape); t++) out[t] = in[0][0];
}

/* Every row of ops.def names its kernel ref_<name>: a missing kernel is a
 * compile error. */
const RefKernel ref_kernels[] = {
#define OP(E, name, nin, grad, math) [IR_##E] = ref_##name,
#include "ir/ops.def"
#undef OP
};
_Static_assert(sizeof ref_kernels / sizeof ref_kernels[0] == IR_OP_COUNT, "ref kernel table out of sync with ops.def");
