/*
 * test_ref_util.h — helpers shared by the reference-backend and gradient
 * tests (test_ref_*.c, test_gradcheck*.c, test_autodiff*.c): a seeded random
 * generator, IR builder shorthands, finite-difference comparison, and a
 * builder of the whole PixelCNN++ network written from
 * shared/reference/model/README.md (parameter names and order as there).
 * Everything is static inline: each test program includes what it uses.
 */
#ifndef PXC_TEST_REF_UTIL_H
#define PXC_TEST_REF_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff/autodiff.h"
#include "ir/ir.h"
#include "ref/ref.h"
#include "testutil.h"

/* ---- random numbers (xorshift64*, Box-Muller) ------------------------------ */

typedef struct TRng { uint64_t s; } TRng;

static inline uint64_t trng_next(TRng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}
static inline double trng_uniform(TRng *r) { return (double)(trng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline double trng_range(TRng *r, double lo, double hi) { return lo + (hi - lo) * trng_uniform(r); }
static inline double trng_normal(TRng *r) {
    double u = trng_uniform(r), v = trng_uniform(r);
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- building graphs ----------------------------------------------------------- */

static inline int tb_check(int id, DiagList *dl) {
    if (id < 0) {
        diag_print(dl, stderr, false);
        fail_msg("graph construction failed");
    }
    return id;
}

static inline int tb_op(Graph *g, DiagList *dl, OpKind op, const int *in, int nin, const Attrs *a) {
    return tb_check(ir_add(g, dl, op, in, nin, a, srcloc_none()), dl);
}
static inline int tb_op1(Graph *g, DiagList *dl, OpKind op, int x) { return tb_op(g, dl, op, &x, 1, NULL); }
static inline int tb_op2(Graph *g, DiagList *dl, OpKind op, int x, int y) {
    int in[2] = {x, y};
    return tb_op(g, dl, op, in, 2, NULL);
}

static inline int tb_param(Graph *g, const char *name, int rank, const int64_t *d, ParamRole role, double std,
                           double value) {
    return ir_param(g, name, ir_shape(rank, d, false), role, std, value, srcloc_none());
}

static inline const Shape *tb_shape(const Graph *g, int node) { return &g->nodes[node].shape; }

/* Zero padding of a causal conv: down pads kh-1 on top, (kw-1)/2 left and
 * right; down_right pads kh-1 on top and kw-1 on the left. */
static inline void tb_conv_attrs(Attrs *a, int kh, int kw, int stride, ShiftKind shift) {
    memset(a, 0, sizeof *a);
    a->kh = kh, a->kw = kw, a->stride = stride, a->shift = shift;
    if (shift == SHIFT_DOWN) a->pad_t = kh - 1, a->pad_l = a->pad_r = (kw - 1) / 2;
    if (shift == SHIFT_DOWN_RIGHT) a->pad_t = kh - 1, a->pad_l = kw - 1;
}

/* Fill every parameter: v and plain weights N(0, std^2), g in [0.5, 1.5],
 * b and hw N(0, std^2). params is in ParamLayout order. */
static inline void tb_random_params(const Graph *g, double *params, TRng *r, double std) {
    ParamLayout pl = ir_param_layout(g);
    for (int p = 0; p < pl.n; p++) {
        ParamRole role = g->nodes[pl.p[p].node].a.role;
        for (int64_t t = 0; t < pl.p[p].numel; t++)
            params[pl.p[p].offset + t] = role == PR_WN_G ? trng_range(r, 0.5, 1.5) : std * trng_normal(r);
    }
    ir_param_layout_free(&pl);
}

/* ---- the PixelCNN++ network ------------------------------------------------------ */

typedef struct NetCfg {
    int H, W, C, R, F, nr_mix, classes;
    double dropout;
} NetCfg;

typedef struct NetB {
    Graph *g;
    DiagList *dl;
    int labels;
    int streams;   /* dropout streams handed out */
    double dropout;
    int classes;
} NetB;

/* A weight-normalised conv P over x: P.v [kh,kw,C,O] (or [C,O] for nin when
 * nin is true), P.g, P.b. */
static inline int net_conv(NetB *b, const char *P, int x, int O, int kh, int kw, int stride, ShiftKind shift,
                           double init_scale, bool nin) {
    Graph *g = b->g;
    char nm[256];
    int64_t C = tb_shape(g, x)->d[2];
    ir_add_layer(g, P, nin ? "nin" : "conv2d", srcloc_none());
    snprintf(nm, sizeof nm, "%s.v", P);
    int64_t dv4[4] = {kh, kw, C, O}, dv2[2] = {C, O}, dO[1] = {O};
    int v = nin ? tb_param(g, nm, 2, dv2, PR_WN_V, 0.05, 0) : tb_param(g, nm, 4, dv4, PR_WN_V, 0.05, 0);
    snprintf(nm, sizeof nm, "%s.g", P);
    int gg = tb_param(g, nm, 1, dO, PR_WN_G, 0, 1);
    snprintf(nm, sizeof nm, "%s.b", P);
    int bb = tb_param(g, nm, 1, dO, PR_BIAS, 0, 0);
    Attrs wa = {0};
    wa.axis = nin ? 1 : 3;
    int in2[2] = {v, gg};
    int w = tb_op(g, b->dl, IR_WNORM, in2, 2, &wa);
    Attrs a;
    tb_conv_attrs(&a, nin ? 1 : kh, nin ? 1 : kw, stride, nin ? SHIFT_NONE : shift);
    a.init_scale = init_scale;
    int in3[3] = {x, w, bb};
    return tb_op(g, b->dl, IR_CONV2D, in3, 3, &a);
}

/* A weight-normalised stride-2 deconv: P.v [kh,kw,O,C]. */
static inline int net_deconv(NetB *b, const char *P, int x, int O, int kh, int kw, ShiftKind shift) {
    Graph *g = b->g;
    char nm[256];
    int64_t C = tb_shape(g, x)->d[2];
    ir_add_layer(g, P, "deconv2d", srcloc_none());
    int64_t dv[4] = {kh, kw, O, C}, dO[1] = {O};
    snprintf(nm, sizeof nm, "%s.v", P);
    int v = tb_param(g, nm, 4, dv, PR_WN_V, 0.05, 0);
    snprintf(nm, sizeof nm, "%s.g", P);
    int gg = tb_param(g, nm, 1, dO, PR_WN_G, 0, 1);
    snprintf(nm, sizeof nm, "%s.b", P);
    int bb = tb_param(g, nm, 1, dO, PR_BIAS, 0, 0);
    Attrs wa = {0};
    wa.axis = 2;
    int in2[2] = {v, gg};
    int w = tb_op(g, b->dl, IR_WNORM, in2, 2, &wa);
    Attrs a = {0};
    a.kh = kh, a.kw = kw, a.stride = 2, a.shift = shift;
    a.crop_l = shift == SHIFT_DOWN ? (kw - 1) / 2 : 0;
    int in3[3] = {x, w, bb};
    return tb_op(g, b->dl, IR_DECONV2D, in3, 3, &a);
}

/* gated_resnet(x, P, a): conv = down [2,3] (u stream) or down_right [2,2] */
static inline int net_gated_resnet(NetB *b, const char *P, int x, int a, bool u_stream) {
    Graph *g = b->g;
    DiagList *dl = b->dl;
    char nm[256];
    int F = (int)tb_shape(g, x)->d[2];
    int kh = 2, kw = u_stream ? 3 : 2;
    ShiftKind sh = u_stream ? SHIFT_DOWN : SHIFT_DOWN_RIGHT;
    snprintf(nm, sizeof nm, "%s.conv1", P);
    int c1 = net_conv(b, nm, tb_op1(g, dl, IR_CONCAT_ELU, x), F, kh, kw, 1, sh, 0, false);
    if (a >= 0) {
        snprintf(nm, sizeof nm, "%s.nin", P);
        c1 = tb_op2(g, dl, IR_ADD, c1, net_conv(b, nm, tb_op1(g, dl, IR_CONCAT_ELU, a), F, 1, 1, 1, SHIFT_NONE, 0, true));
    }
    c1 = tb_op1(g, dl, IR_CONCAT_ELU, c1);
    if (b->dropout > 0) {
        Attrs da = {0};
        da.p = b->dropout;
        da.stream = b->streams++;
        c1 = tb_op(g, dl, IR_DROPOUT, &c1, 1, &da);
    }
    snprintf(nm, sizeof nm, "%s.conv2", P);
    int c2 = net_conv(b, nm, c1, 2 * F, kh, kw, 1, sh, 0.1, false);
    if (b->classes > 0) {
        snprintf(nm, sizeof nm, "%s.cond.hw", P);
        int64_t d[2] = {b->classes, 2 * F};
        int hw = tb_param(g, nm, 2, d, PR_CLASS_HW, 0.05, 0);
        int in3[3] = {c2, hw, b->labels};
        c2 = tb_op(g, dl, IR_CLASS_BIAS, in3, 3, NULL);
    }
    return tb_op2(g, dl, IR_ADD, x, tb_op1(g, dl, IR_GATE, c2));
}

static inline int net_shift(NetB *b, int x, int dy, int dx) {
    Attrs a = {0};
    a.dy = dy, a.dx = dx;
    return tb_op(b->g, b->dl, IR_SHIFT, &x, 1, &a);
}

/* Build the forward graph of the network (README "The network"). */
static inline void net_build(Graph *g, DiagList *dl, const NetCfg *cfg) {
    ir_graph_init(g);
    g->H = cfg->H, g->W = cfg->W, g->C = cfg->C, g->classes = cfg->classes;
    NetB b = {g, dl, -1, 0, cfg->dropout, cfg->classes};
    int F = cfg->F, R = cfg->R;
    ir_add_layer(g, "input", "input", srcloc_none());
    g->x = tb_op(g, dl, IR_INPUT, NULL, 0, NULL);
    if (cfg->classes > 0) b.labels = g->labels = tb_op(g, dl, IR_LABELS, NULL, 0, NULL);
    Attrs oa = {0};
    oa.ref_shape = shape_hwc(cfg->H, cfg->W, 1);
    int ones = tb_op(g, dl, IR_ONES, NULL, 0, &oa);
    int x1 = tb_op2(g, dl, IR_CONCAT, g->x, ones);

    int u = net_shift(&b, net_conv(&b, "init.u", x1, F, 2, 3, 1, SHIFT_DOWN, 0, false), 1, 0);
    int ula = net_shift(&b, net_conv(&b, "init.ul_above", x1, F, 1, 3, 1, SHIFT_DOWN, 0, false), 1, 0);
    int ull = net_shift(&b, net_conv(&b, "init.ul_left", x1, F, 2, 1, 1, SHIFT_DOWN_RIGHT, 0, false), 0, 1);
    int ul = tb_op2(g, dl, IR_ADD, ula, ull);
    int U[64], L[64], nu = 0, nl = 0;
    char nm[128];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < R; i++) {
            snprintf(nm, sizeof nm, "up.%d.u.%d", s, i);
            u = net_gated_resnet(&b, nm, u, -1, true);
            U[nu++] = u;
            snprintf(nm, sizeof nm, "up.%d.ul.%d", s, i);
            ul = net_gated_resnet(&b, nm, ul, u, false);
            L[nl++] = ul;
        }
        if (s < 2) {
            snprintf(nm, sizeof nm, "up.%d.u_down", s);
            u = net_conv(&b, nm, u, F, 2, 3, 2, SHIFT_DOWN, 0, false);
            U[nu++] = u;
            snprintf(nm, sizeof nm, "up.%d.ul_down", s);
            ul = net_conv(&b, nm, ul, F, 2, 2, 2, SHIFT_DOWN_RIGHT, 0, false);
            L[nl++] = ul;
        }
    }
    u = U[--nu];
    ul = L[--nl];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < (s == 0 ? R : R + 1); i++) {
            snprintf(nm, sizeof nm, "down.%d.u.%d", s, i);
            u = net_gated_resnet(&b, nm, u, U[--nu], true);
            snprintf(nm, sizeof nm, "down.%d.ul.%d", s, i);
            ul = net_gated_resnet(&b, nm, ul, tb_op2(g, dl, IR_CONCAT, u, L[--nl]), false);
        }
        if (s < 2) {
            snprintf(nm, sizeof nm, "down.%d.u_up", s);
            u = net_deconv(&b, nm, u, F, 2, 3, SHIFT_DOWN);
            snprintf(nm, sizeof nm, "down.%d.ul_up", s);
            ul = net_deconv(&b, nm, ul, F, 2, 2, SHIFT_DOWN_RIGHT);
        }
    }
    if (nu != 0 || nl != 0) fail_msg("net builder: stacks not empty (%d, %d)", nu, nl);
    int K = cfg->C == 1 ? 3 * cfg->nr_mix : 10 * cfg->nr_mix;
    g->out = net_conv(&b, "out", tb_op1(g, dl, IR_ELU, ul), K, 1, 1, 1, SHIFT_NONE, 0, true);
    ir_add_layer(g, "loss", "dmol", srcloc_none());
    Attrs la = {0};
    la.nr_mix = cfg->nr_mix;
    int in2[2] = {g->out, g->x};
    g->nll = tb_op(g, dl, IR_DMOL_NLL, in2, 2, &la);
    g->loss = tb_op1(g, dl, IR_SUM, g->nll);
    g->nfwd = g->n;
}

/* ---- the logistic mixture's branches (for declaring kinks) ----------------------
 * Per pixel, channel and component: 0 edge low, 1 edge high, 2 interior
 * (d > 1e-5), 3 density; +4 when the raw log-scale is clamped. Written from
 * shared/reference/loss/README.md independently of runtime/ref. */
static inline void dmol_branches(const double *l, const double *x, int64_t npix, int C, int M, int *out) {
    int K = C == 3 ? 10 * M : 3 * M;
    for (int64_t p = 0; p < npix; p++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < M; k++) {
                const double *lp = l + p * K, *xp = x + p * C;
                int base = C == 3 ? M + 3 * M * c : M;
                double mu = lp[base + k], raw = C == 3 ? lp[base + M + k] : lp[2 * M + k];
                if (C == 3 && c == 1) mu += tanh(lp[M + 2 * M + k]) * xp[0];
                if (C == 3 && c == 2) mu += tanh(lp[M + 3 * M + 2 * M + k]) * xp[0] + tanh(lp[M + 6 * M + 2 * M + k]) * xp[1];
                double s = raw < -7 ? -7 : raw, inv = exp(-s), cen = xp[c] - mu;
                double d = 1 / (1 + exp(-inv * (cen + 1 / 255.0))) - 1 / (1 + exp(-inv * (cen - 1 / 255.0)));
                int br = xp[c] < -0.999 ? 0 : xp[c] > 0.999 ? 1 : d > 1e-5 ? 2 : 3;
                out[(p * C + c) * M + k] = br + (raw < -7 ? 4 : 0);
            }
}

/* ---- finite differences ------------------------------------------------------------ */

/* |fd - an| <= atol + rtol max(|fd|, |an|) */
static inline bool fd_close(double fd, double an, double rtol, double atol) {
    return fabs(fd - an) <= atol + rtol * fmax(fabs(fd), fabs(an));
}

#endif
