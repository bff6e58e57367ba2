/*
 * loss.c — the likelihood heads (see loss.h): discretized logistic mixture
 * and 256-way softmax, forward, backward and samplers, in double and float.
 *
 * The arithmetic is written once, between LOSS_TEMPLATE guards, and this
 * file includes itself twice to instantiate it: T = double with the plain
 * libm calls (suffix _f64), then T = float with the f-suffixed calls
 * (suffix _f32), so the float path never widens to double.
 */
#ifndef LOSS_TEMPLATE

#include "loss.h"

#include <math.h>
#include <stdlib.h>

#include "base/base.h"

/* M up to this many components runs on stack scratch; more allocates. */
#define DMOL_STACK_MIX 64

uint64_t rt_rng_next(RtRng *rng) {
    uint64_t z = (rng->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double rt_rng_uniform(RtRng *rng) { return (double)(rt_rng_next(rng) >> 11) * 0x1.0p-53; }

int rt_dmol_k(int C, int nr_mix) {
    if (nr_mix < 1) return 0;
    if (C == 1) return 3 * nr_mix;
    if (C == 3) return 10 * nr_mix;
    return 0;
}

int rt_softmax_bin(double x) {
    double v = floor((x + 1.0) * 127.5 + 0.5);
    if (!(v > 0)) return 0; /* also NaN */
    if (v > 255) return 255;
    return (int)v;
}

double rt_bits_per_dim(double nats, int64_t n_subpixels) {
    return nats / (log(2.0) * (double)n_subpixels);
}

/* ---- instantiate the arithmetic for double and float -------------------- */

#define LOSS_TEMPLATE 1
#define T double
#define SFX(name) name##_f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#define EXPM1 expm1
#define TANH tanh
#define FABS fabs
#include "loss.c"
#undef T
#undef SFX
#undef EXP
#undef LOG
#undef LOG1P
#undef EXPM1
#undef TANH
#undef FABS

#define T float
#define SFX(name) name##_f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#define EXPM1 expm1f
#define TANH tanhf
#define FABS fabsf
#include "loss.c"
#undef T
#undef SFX
#undef EXP
#undef LOG
#undef LOG1P
#undef EXPM1
#undef TANH
#undef FABS
#undef LOSS_TEMPLATE

/* ---- public entry points ------------------------------------------------- */

double rt_dmol_loss_f32(const float *l, const float *x, int64_t npix, int C, int nr_mix, float *nll,
                        float *dl) {
    return dmol_run_f32(l, x, NULL, npix, C, nr_mix, nll, dl, NULL);
}

void rt_dmol_nll_f64(const double *l, const double *x, int64_t npix, int C, int nr_mix, double *nll) {
    dmol_run_f64(l, x, NULL, npix, C, nr_mix, nll, NULL, NULL);
}

void rt_dmol_nll_f32(const float *l, const float *x, int64_t npix, int C, int nr_mix, float *nll) {
    dmol_run_f32(l, x, NULL, npix, C, nr_mix, nll, NULL, NULL);
}

void rt_dmol_nll_bwd_f64(const double *l, const double *x, const double *dnll, int64_t npix, int C,
                         int nr_mix, double *dl, double *dx) {
    dmol_run_f64(l, x, dnll, npix, C, nr_mix, NULL, dl, dx);
}

void rt_dmol_nll_bwd_f32(const float *l, const float *x, const float *dnll, int64_t npix, int C,
                         int nr_mix, float *dl, float *dx) {
    dmol_run_f32(l, x, dnll, npix, C, nr_mix, NULL, dl, dx);
}

void rt_softmax_nll_f64(const double *l, const double *x, int64_t npix, int C, double *nll) {
    softmax_run_f64(l, x, NULL, npix, C, nll, NULL);
}

void rt_softmax_nll_f32(const float *l, const float *x, int64_t npix, int C, float *nll) {
    softmax_run_f32(l, x, NULL, npix, C, nll, NULL);
}

void rt_softmax_nll_bwd_f64(const double *l, const double *x, const double *dnll, int64_t npix, int C,
                            double *dl) {
    softmax_run_f64(l, x, dnll, npix, C, NULL, dl);
}

void rt_softmax_nll_bwd_f32(const float *l, const float *x, const float *dnll, int64_t npix, int C,
                            float *dl) {
    softmax_run_f32(l, x, dnll, npix, C, NULL, dl);
}

double rt_softmax_loss_f32(const float *l, const float *x, int64_t npix, int C, float *nll, float *dl) {
    return softmax_run_f32(l, x, NULL, npix, C, nll, dl);
}

/* ---- samplers (double arithmetic on float parameters) ---------------------- */

/* U(1e-5, 1 - 1e-5), as the reference sampler draws. */
static double uniform_clipped(RtRng *rng) { return 1e-5 + (1.0 - 2e-5) * rt_rng_uniform(rng); }

static double clip1(double v) { return v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v; }

void rt_dmol_sample_pixel(const float *l, int C, int nr_mix, RtRng *rng, float *x) {
    int M = nr_mix;
    int best = 0;
    double best_v = -INFINITY;
    for (int k = 0; k < M; k++) {
        double v = (double)l[k] - log(-log(uniform_clipped(rng)));
        if (v > best_v) best_v = v, best = k;
    }
    double xs[3] = {0, 0, 0};
    for (int c = 0; c < C; c++) {
        /* C = 1: means at M, log-scales at 2M; C = 3: block c at M + 3Mc. */
        int base = M + 3 * M * c;
        int ls_at = C == 1 ? 2 * M : base + M;
        double mu = l[base + best];
        double s = fmax((double)l[ls_at + best], -7.0);
        if (C == 3 && c == 1) mu += tanh((double)l[M + 2 * M + best]) * xs[0];
        if (C == 3 && c == 2)
            mu += tanh((double)l[M + 3 * M + 2 * M + best]) * xs[0] +
                  tanh((double)l[M + 6 * M + 2 * M + best]) * xs[1];
        double u = uniform_clipped(rng);
        xs[c] = clip1(mu + exp(s) * (log(u) - log1p(-u)));
        x[c] = (float)xs[c];
    }
}

void rt_softmax_sample_pixel(const float *l, int C, RtRng *rng, float *x) {
    for (int c = 0; c < C; c++) {
        const float *lc = l + 256 * c;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < 256; j++) mx = fmax(mx, (double)lc[j]);
        for (int j = 0; j < 256; j++) sum += exp((double)lc[j] - mx);
        double target = rt_rng_uniform(rng) * sum, acc = 0;
        int v = -1;
        for (int j = 0; j < 256; j++) {
            double p = exp((double)lc[j] - mx);
            if (p > 0) v = j; /* last bin with mass: the fallback at round-off */
            acc += p;
            if (p > 0 && target < acc) break;
        }
        x[c] = ((float)v - 127.5f) / 127.5f;
    }
}

#else /* LOSS_TEMPLATE: the arithmetic, for one scalar type T */

static inline T SFX(softplus)(T v) { return (v > 0 ? v : (T)0) + LOG1P(EXP(-FABS(v))); }

static inline T SFX(sigmoid)(T v) {
    if (v >= 0) return (T)1 / ((T)1 + EXP(-v));
    T e = EXP(v);
    return e / ((T)1 + e);
}

/* One colour's log-probability lp for one component, and (when dcen is not
 * NULL) d lp / d cen and d lp / d raw_log_scale, branch held constant.
 *   s = max(raw, -7), cen = x - mu, inv = exp(-s),
 *   plus = inv (cen + 1/255), minus = inv (cen - 1/255), mid = inv cen
 *   x < -0.999: lp = plus - softplus(plus)                 (log sigmoid(plus))
 *   x >  0.999: lp = -softplus(minus)                      (log(1 - sigmoid(minus)))
 *   d = sigmoid(plus) - sigmoid(minus) > 1e-5: lp = log d, computed as
 *         log sigmoid(plus) + log sigmoid(-minus) + log(1 - exp(-delta)),
 *         delta = plus - minus = 2 inv / 255 (no cancellation)
 *   else: lp = mid - s - 2 softplus(mid) - log 127.5       (density × bin width) */
static T SFX(dmol_term)(T xc, T mu, T raw, T *dcen, T *draw) {
    const T half_bin = (T)(1.0 / 255.0), bin = (T)(2.0 / 255.0);
    const T log_min_d = (T)-11.512925464970229;   /* log 1e-5 */
    const T log_127_5 = (T)4.848116364598481;     /* log 127.5 */
    int clamped = raw < (T)-7;
    T s = clamped ? (T)-7 : raw;
    T cen = xc - mu;
    T inv = EXP(-s);
    T plus = inv * (cen + half_bin), minus = inv * (cen - half_bin);
    T lp, gc, gs; /* d lp / d cen, d lp / d s */
    if (xc < (T)-0.999) {
        lp = plus - SFX(softplus)(plus);
        T sp = SFX(sigmoid)(-plus);
        gc = inv * sp;
        gs = -plus * sp;
    } else if (xc > (T)0.999) {
        lp = -SFX(softplus)(minus);
        T sm = SFX(sigmoid)(minus);
        gc = -inv * sm;
        gs = minus * sm;
    } else {
        T delta = inv * bin;
        T lpd = plus - SFX(softplus)(plus) - SFX(softplus)(minus) + LOG(-EXPM1(-delta));
        if (lpd > log_min_d) {
            lp = lpd;
            T sp = SFX(sigmoid)(-plus), sm = SFX(sigmoid)(minus);
            gc = inv * (sp - sm);
            gs = -plus * sp + minus * sm - delta / EXPM1(delta);
        } else {
            T mid = inv * cen;
            lp = mid - s - (T)2 * SFX(softplus)(mid) - log_127_5;
            T t = (T)1 - (T)2 * SFX(sigmoid)(mid);
            gc = inv * t;
            gs = -mid * t - (T)1;
        }
    }
    if (dcen) {
        *dcen = gc;
        *draw = clamped ? (T)0 : gs;
    }
    return lp;
}

/* One pixel: returns its nll; with dl, writes dnll · d nll / d l and, with
 * dx, dnll · d nll / d x. scratch holds 7M values. */
static T SFX(dmol_pixel)(const T *l /*[K]*/, const T *x /*[C]*/, int C, int M, T dnll, T *dl, T *dx,
                        T *scratch) {
    T *lpk = scratch;                 /* [M] logit_k + sum_c lp_{c,k} */
    T *gcen = scratch + M;            /* [C*M] d lp_{c,k} / d cen */
    T *graw = scratch + M + 3 * M;    /* [C*M] d lp_{c,k} / d raw log-scale */
    int want = dl != NULL;
    T logit_max = l[0];
    for (int k = 1; k < M; k++)
        if (l[k] > logit_max) logit_max = l[k];
    T lp_max = -INFINITY;
    for (int k = 0; k < M; k++) {
        T acc = l[k];
        if (C == 1) {
            acc += SFX(dmol_term)(x[0], l[M + k], l[2 * M + k], want ? &gcen[k] : NULL, &graw[k]);
        } else {
            T alpha = TANH(l[M + 2 * M + k]);
            T beta = TANH(l[M + 3 * M + 2 * M + k]);
            T gamma = TANH(l[M + 6 * M + 2 * M + k]);
            T mu[3] = {l[M + k], l[M + 3 * M + k] + alpha * x[0],
                       l[M + 6 * M + k] + beta * x[0] + gamma * x[1]};
            for (int c = 0; c < 3; c++)
                acc += SFX(dmol_term)(x[c], mu[c], l[M + 3 * M * c + M + k],
                                      want ? &gcen[c * M + k] : NULL, &graw[c * M + k]);
        }
        lpk[k] = acc;
        if (acc > lp_max) lp_max = acc;
    }
    T sum_logit = 0, sum_lp = 0;
    for (int k = 0; k < M; k++) {
        sum_logit += EXP(l[k] - logit_max);
        sum_lp += EXP(lpk[k] - lp_max);
    }
    T lse_logit = logit_max + LOG(sum_logit);
    T lse_lp = lp_max + LOG(sum_lp);
    T nll = lse_logit - lse_lp;
    if (!want) return nll;

    if (dx)
        for (int c = 0; c < C; c++) dx[c] = 0;
    for (int k = 0; k < M; k++) {
        T w = EXP(lpk[k] - lse_lp);          /* posterior of component k */
        T p = EXP(l[k] - lse_logit);         /* prior softmax */
        dl[k] = dnll * (p - w);
        T scale = -dnll * w;                 /* d (dnll·nll) / d lp_{c,k} */
        if (C == 1) {
            T g = scale * gcen[k];
            dl[M + k] = -g;
            dl[2 * M + k] = scale * graw[k];
            if (dx) dx[0] += g;
        } else {
            T alpha = TANH(l[M + 2 * M + k]);
            T beta = TANH(l[M + 3 * M + 2 * M + k]);
            T gamma = TANH(l[M + 6 * M + 2 * M + k]);
            T g[3];
            for (int c = 0; c < 3; c++) {
                int base = M + 3 * M * c;
                g[c] = scale * gcen[c * M + k];             /* d / d cen_c */
                dl[base + k] = -g[c];                       /* cen_c = x_c - mean_c - ... */
                dl[base + M + k] = scale * graw[c * M + k];
            }
            dl[M + 2 * M + k] = -g[1] * x[0] * ((T)1 - alpha * alpha);
            dl[M + 3 * M + 2 * M + k] = -g[2] * x[0] * ((T)1 - beta * beta);
            dl[M + 6 * M + 2 * M + k] = -g[2] * x[1] * ((T)1 - gamma * gamma);
            if (dx) {
                dx[0] += g[0] - alpha * g[1] - beta * g[2];
                dx[1] += g[1] - gamma * g[2];
                dx[2] += g[2];
            }
        }
    }
    return nll;
}

/* The mixture over npix pixels; any of nll, dl, dx may be NULL (dx needs
 * dl). Returns the sum of the nlls in double. */
static double SFX(dmol_run)(const T *l, const T *x, const T *dnll, int64_t npix, int C, int M, T *nll,
                            T *dl, T *dx) {
    int K = rt_dmol_k(C, M);
    if (K == 0 || npix <= 0) return 0;
    T stack[7 * DMOL_STACK_MIX];
    T *scratch = M <= DMOL_STACK_MIX ? stack : xmalloc(sizeof(T) * 7 * (size_t)M);
    double total = 0;
    for (int64_t i = 0; i < npix; i++) {
        T v = SFX(dmol_pixel)(l + i * K, x + i * C, C, M, dnll ? dnll[i] : (T)1, dl ? dl + i * K : NULL,
                              dl && dx ? dx + i * C : NULL, scratch);
        if (nll) nll[i] = v;
        total += (double)v;
    }
    if (scratch != stack) free(scratch);
    return total;
}

/* The 256-way softmax over npix pixels; nll and dl may be NULL. */
static double SFX(softmax_run)(const T *l, const T *x, const T *dnll, int64_t npix, int C, T *nll,
                               T *dl) {
    double total = 0;
    for (int64_t i = 0; i < npix; i++) {
        T v = 0;
        T g = dnll ? dnll[i] : (T)1;
        for (int c = 0; c < C; c++) {
            const T *lc = l + (i * C + c) * 256;
            int bin = rt_softmax_bin((double)x[i * C + c]);
            T mx = lc[0];
            for (int j = 1; j < 256; j++)
                if (lc[j] > mx) mx = lc[j];
            T sum = 0;
            for (int j = 0; j < 256; j++) sum += EXP(lc[j] - mx);
            T lse = mx + LOG(sum);
            v += lse - lc[bin];
            if (dl) {
                T *dc = dl + (i * C + c) * 256;
                for (int j = 0; j < 256; j++) dc[j] = g * EXP(lc[j] - lse);
                dc[bin] -= g;
            }
        }
        if (nll) nll[i] = v;
        total += (double)v;
    }
    return total;
}

#endif /* LOSS_TEMPLATE */
