/*
 * test_ref_util.h — helpers shared by the reference-backend and gradient
 * tests (test_ref_*.c, test_gradcheck*.c, test_autodiff*.c): a seeded random
 * generator, IR builder shorthands, the whole network from its spec, the
 * logistic mixture's branch signature, finite-difference comparison.
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
#include "spec/spec.h"
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

/* ---- the PixelCNN++ network, from the spec ------------------------------------------ */

/* Compile models/<model>.yaml with the overrides sets[0..nsets) into g
 * (a forward graph); fails the test with the diagnostics otherwise. */
static inline void net_compile(Graph *g, const char *model, const char *const *sets, int nsets) {
    DiagList dl;
    diag_init(&dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s.yaml", tu_source_dir(), model);
    if (spec_compile(path, sets, nsets, g, &dl) != 0) {
        diag_print(&dl, stderr, false);
        fail_msg("cannot compile %s", path);
    }
    diag_free(&dl);
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
