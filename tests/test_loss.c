/*
 * test_loss.c — the likelihood heads of runtime/loss.h checked against
 * independent sources: central finite differences (double) of the mixture
 * with respect to l and x and of the 256-way softmax, skipping elements
 * whose perturbation changes a branch; hand-computed one-pixel cases in
 * long double written from the probabilities (sigmoid differences, the
 * logistic density) rather than the log-space formula; the float path
 * against the double one; the samplers against the distributions they
 * sample; splitmix64 against its published first outputs.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/loss.h"

/* ---- random test data ------------------------------------------------------ */

static double normal(RtRng *r) {
    double u1 = rt_rng_uniform(r), u2 = rt_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

static double unif(RtRng *r, double a, double b) { return a + (b - a) * rt_rng_uniform(r); }

/* x on the 8-bit grid, about 15 % of the sub-pixels at each edge. */
static void random_x(RtRng *r, double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double u = rt_rng_uniform(r);
        int k = u < 0.15 ? 0 : u < 0.30 ? 255 : 1 + (int)(rt_rng_uniform(r) * 254);
        x[i] = (double)(((float)k - 127.5f) / 127.5f);
    }
}

/* Mixture parameters: logits N(0, 2²), means U(-1.1, 1.1), log-scales
 * U(-5, 0.5) or (one in ten) U(-10, -7.5) so the clamp is exercised, raw
 * coefficients N(0, 1). */
static void random_l(RtRng *r, double *l, int64_t npix, int C, int M) {
    int K = rt_dmol_k(C, M);
    for (int64_t i = 0; i < npix; i++) {
        double *p = l + i * K;
        for (int k = 0; k < M; k++) p[k] = 2.0 * normal(r);
        for (int c = 0; c < C; c++) {
            int base = M + 3 * M * c;
            int ls = C == 1 ? 2 * M : base + M;
            for (int k = 0; k < M; k++) {
                p[base + k] = unif(r, -1.1, 1.1);
                p[ls + k] = rt_rng_uniform(r) < 0.1 ? unif(r, -10, -7.5) : unif(r, -5, 0.5);
                if (C == 3) p[base + 2 * M + k] = normal(r);
            }
        }
    }
}

/* ---- an independent statement of the branch choice ------------------------- */

enum { B_EDGE0, B_EDGE255, B_CDF, B_PDF };

static long double sigl(long double t) { return 1.0L / (1.0L + expl(-t)); }

/* Branch of every term (c, k) of one pixel into sig[c*M + k]; returns the
 * smallest |log(d / 1e-5)| over interior terms (distance to the switch). */
static double branches(const double *l, const double *x, int C, int M, int *sig) {
    double closest = INFINITY;
    for (int k = 0; k < M; k++) {
        for (int c = 0; c < C; c++) {
            int base = M + 3 * M * c;
            long double mu = l[base + k], raw = C == 1 ? l[2 * M + k] : l[base + M + k];
            if (C == 3 && c == 1) mu += tanhl(l[M + 2 * M + k]) * x[0];
            if (C == 3 && c == 2) mu += tanhl(l[4 * M + 2 * M + k]) * x[0] + tanhl(l[7 * M + 2 * M + k]) * x[1];
            long double s = raw < -7 ? -7 : raw, inv = expl(-s), cen = x[c] - mu;
            int b;
            if (x[c] < -0.999) b = B_EDGE0;
            else if (x[c] > 0.999) b = B_EDGE255;
            else {
                long double d = sigl(inv * (cen + 1.0L / 255)) - sigl(inv * (cen - 1.0L / 255));
                b = d > 1e-5L ? B_CDF : B_PDF;
                closest = fmin(closest, fabs((double)logl(d / 1e-5L)));
            }
            sig[c * M + k] = b;
        }
    }
    return closest;
}

/* ---- finite differences of the mixture --------------------------------------- */

typedef struct FdStats {
    int checked[4];   /* elements checked, by the branch of the term they move (pdf etc.) */
    int checked_l, checked_x, skipped, clamped_zero;
    double max_err;   /* max |fd - analytic| / max(1, |analytic|) */
} FdStats;

/* sum_i dnll[i]·nll[i] restricted to pixel p, which is all a perturbation moves. */
static double pixel_obj(const double *l, const double *x, int C, int M, double dnll) {
    double v;
    rt_dmol_nll_f64(l, x, 1, C, M, &v);
    return dnll * v;
}

static void fd_dmol(int C, int M, uint64_t seed, FdStats *st) {
    RtRng r = {seed};
    const int64_t npix = 24;
    int K = rt_dmol_k(C, M);
    double *l = malloc(sizeof(double) * npix * K), *x = malloc(sizeof(double) * npix * C);
    double *dl = malloc(sizeof(double) * npix * K), *dx = malloc(sizeof(double) * npix * C);
    double *dnll = malloc(sizeof(double) * npix);
    int *sig0 = malloc(sizeof(int) * C * M), *sig1 = malloc(sizeof(int) * C * M), *sig2 = malloc(sizeof(int) * C * M);
    random_l(&r, l, npix, C, M);
    random_x(&r, x, npix * C);
    for (int64_t i = 0; i < npix; i++) dnll[i] = unif(&r, 0.5, 2.0);
    for (int64_t i = 0; i < npix * K; i++) dl[i] = NAN; /* written, not accumulated */
    for (int64_t i = 0; i < npix * C; i++) dx[i] = NAN;
    rt_dmol_nll_bwd_f64(l, x, dnll, npix, C, M, dl, dx);
    const double h = 1e-6;
    memset(st, 0, sizeof *st);
    for (int64_t p = 0; p < npix; p++) {
        double *lp = l + p * K, *xp = x + p * C;
        branches(lp, xp, C, M, sig0);
        for (int j = 0; j < K + C; j++) {
            int is_x = j >= K;
            double *v = is_x ? &xp[j - K] : &lp[j];
            double an = is_x ? dx[p * C + j - K] : dl[p * K + j];
            double keep = *v;
            *v = keep + h;
            double fp = pixel_obj(lp, xp, C, M, dnll[p]);
            double c1 = branches(lp, xp, C, M, sig1);
            *v = keep - h;
            double fm = pixel_obj(lp, xp, C, M, dnll[p]);
            double c2 = branches(lp, xp, C, M, sig2);
            *v = keep;
            int moved = memcmp(sig0, sig1, sizeof(int) * C * M) || memcmp(sig0, sig2, sizeof(int) * C * M);
            int near_switch = fmin(c1, c2) < 1e-3;
            int near_clamp = !is_x && fabs(keep + 7.0) < 2 * h;
            if (moved || near_switch || near_clamp) {
                st->skipped++;
                continue;
            }
            double fd = (fp - fm) / (2 * h);
            double err = fabs(fd - an) / fmax(1.0, fabs(an));
            if (err > st->max_err) st->max_err = err;
            if (err > 1e-5)
                print_message("C=%d M=%d pixel %lld %s %d: analytic %.10g fd %.10g\n", C, M, (long long)p,
                              is_x ? "x" : "l", is_x ? j - K : j, an, fd);
            if (is_x) st->checked_x++;
            else st->checked_l++;
            /* which branch the element's component is in (for coverage) */
            int k = is_x ? 0 : (j < M ? j : (j - M) % M);
            int c = is_x ? j - K : (j < M ? 0 : (C == 1 ? 0 : (j - M) / (3 * M)));
            st->checked[sig0[c * M + k]]++;
            if (!is_x && keep < -7.0 && an == 0.0) st->clamped_zero++;
        }
    }
    free(l), free(x), free(dl), free(dx), free(dnll), free(sig0), free(sig1), free(sig2);
}

static void test_dmol_finite_differences(void **state) {
    (void)state;
    const int Cs[2] = {1, 3}, Ms[3] = {1, 2, 5};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++) {
            FdStats st;
            fd_dmol(Cs[a], Ms[b], 1000 + 10 * a + b, &st);
            print_message("dmol FD C=%d M=%d: %d l + %d x elements, %d skipped (branch/clamp), "
                          "by branch edge0 %d edge255 %d cdf %d pdf %d, clamped %d; max rel err %.2e\n",
                          Cs[a], Ms[b], st.checked_l, st.checked_x, st.skipped, st.checked[B_EDGE0],
                          st.checked[B_EDGE255], st.checked[B_CDF], st.checked[B_PDF], st.clamped_zero,
                          st.max_err);
            assert_true(st.max_err <= 1e-5);
            for (int br = 0; br < 4; br++) assert_true(st.checked[br] > 0);
            assert_true(st.checked_x >= 24 * Cs[a] / 2);
            assert_true(st.clamped_zero > 0);
        }
}

/* More components than the stack scratch holds: the float path agrees with
 * the double one, and a few finite differences hold. */
static void test_dmol_many_components(void **state) {
    (void)state;
    for (int C = 1; C <= 3; C += 2) {
        const int M = 70;
        FdStats st;
        fd_dmol(C, M, 77 + C, &st);
        print_message("dmol FD C=%d M=%d: %d elements, max rel err %.2e\n", C, M, st.checked_l + st.checked_x,
                      st.max_err);
        assert_true(st.max_err <= 1e-5);
        assert_true(st.checked_l > 100);
    }
}

/* ---- the float path follows the double path ------------------------------------ */

static void test_dmol_f32_matches_f64(void **state) {
    (void)state;
    for (int C = 1; C <= 3; C += 2) {
        const int M = 4, npix = 64, K = rt_dmol_k(C, M);
        RtRng r = {42 + C};
        double *l = malloc(sizeof(double) * npix * K), *x = malloc(sizeof(double) * npix * C);
        random_l(&r, l, npix, C, M);
        random_x(&r, x, npix * C);
        float *lf = malloc(sizeof(float) * npix * K), *xf = malloc(sizeof(float) * npix * C);
        for (int i = 0; i < npix * K; i++) lf[i] = (float)l[i], l[i] = lf[i];
        for (int i = 0; i < npix * C; i++) xf[i] = (float)x[i], x[i] = xf[i];
        double nll[64], *dl = malloc(sizeof(double) * npix * K), dx[64 * 3];
        float nllf[64], *dlf = malloc(sizeof(float) * npix * K), dxf[64 * 3];
        rt_dmol_nll_f64(l, x, npix, C, M, nll);
        rt_dmol_nll_bwd_f64(l, x, NULL, npix, C, M, dl, dx);
        rt_dmol_nll_f32(lf, xf, npix, C, M, nllf);
        rt_dmol_nll_bwd_f32(lf, xf, NULL, npix, C, M, dlf, dxf);
        double total = 0, gmax = 0, e_nll = 0, e_dl = 0, e_dx = 0, dxmax = 0;
        for (int i = 0; i < npix; i++) {
            total += nll[i];
            e_nll = fmax(e_nll, fabs(nllf[i] - nll[i]) / fmax(1, fabs(nll[i])));
        }
        for (int i = 0; i < npix * K; i++) gmax = fmax(gmax, fabs(dl[i]));
        for (int i = 0; i < npix * K; i++) e_dl = fmax(e_dl, fabs(dlf[i] - dl[i]) / gmax);
        for (int i = 0; i < npix * C; i++) dxmax = fmax(dxmax, fabs(dx[i]));
        for (int i = 0; i < npix * C; i++) e_dx = fmax(e_dx, fabs(dxf[i] - dx[i]) / dxmax);
        double lossf = rt_dmol_loss_f32(lf, xf, npix, C, M, NULL, NULL);
        print_message("f32 vs f64 C=%d: loss rel %.2e, nll %.2e, dl %.2e, dx %.2e of max\n", C,
                      fabs(lossf - total) / total, e_nll, e_dl, e_dx);
        assert_true(fabs(lossf - total) <= 1e-5 * fabs(total));
        assert_true(e_nll <= 2e-5 && e_dl <= 1e-4 && e_dx <= 1e-4);
        free(l), free(x), free(lf), free(xf), free(dl), free(dlf);
    }
}

/* ---- hand-computed one-pixel cases ------------------------------------------------ */

/* P(x | mu, s) of one 8-bit sub-pixel, written from the probabilities:
 * the logistic CDF at the bin edges, or the density times the bin width. */
static long double bin_prob(long double x, long double mu, long double raw_s) {
    long double s = raw_s > -7 ? raw_s : -7, scale = expl(s), y = x - mu;
    long double cdf_hi = sigl((y + 1.0L / 255) / scale), cdf_lo = sigl((y - 1.0L / 255) / scale);
    if (x < -0.999L) return cdf_hi;
    if (x > 0.999L) return 1.0L - cdf_lo;
    if (cdf_hi - cdf_lo > 1e-5L) return cdf_hi - cdf_lo;
    long double z = y / scale;
    long double density = expl(-z) / (scale * (1 + expl(-z)) * (1 + expl(-z)));
    return density * (2.0L / 255);
}

static void test_dmol_hand_one_channel(void **state) {
    (void)state;
    /* x, mean, raw log-scale: one per branch, and one clamped */
    const double cases[5][3] = {
        {-1.0, -0.95, -3.0},   /* k = 0 edge: log CDF(x + 1/255) */
        {1.0, 0.9, -2.0},      /* k = 255 edge: log(1 - CDF(x - 1/255)) */
        {0.1, 0.05, -2.0},     /* interior, CDF difference */
        {0.5, -0.5, -4.0},     /* interior, far in the tail: density × bin width */
        {0.2, 0.2, -9.0},      /* clamped to -7: CDF difference */
    };
    const int expect_branch[5] = {B_EDGE0, B_EDGE255, B_CDF, B_PDF, B_CDF};
    for (int i = 0; i < 5; i++) {
        double l[3] = {0.7, cases[i][1], cases[i][2]}, x = cases[i][0];
        int sig;
        branches(l, &x, 1, 1, &sig);
        assert_int_equal(sig, expect_branch[i]);
        long double want = -logl(bin_prob(x, l[1], l[2]));
        double got;
        rt_dmol_nll_f64(l, &x, 1, 1, 1, &got);
        float lf[3] = {(float)l[0], (float)l[1], (float)l[2]}, xf = (float)x, gotf;
        rt_dmol_nll_f32(lf, &xf, 1, 1, 1, &gotf);
        print_message("hand C=1 M=1 branch %d: nll %.15g, expected %.15Lg, f32 %.8g\n", expect_branch[i], got,
                      want, gotf);
        assert_true(fabsl((long double)got - want) <= 1e-12L * fmaxl(1, fabsl(want)));
        /* the float inputs equal the double ones up to rounding of mean/x */
        long double wantf = -logl(bin_prob(xf, lf[1], lf[2]));
        assert_true(fabsl((long double)gotf - wantf) <= 2e-5L * fmaxl(1, fabsl(wantf)));
    }
    /* in the pdf branch the density × bin width stands in for the tiny CDF
     * difference: close to it (log ratio log(sinh(w/2)/(w/2)), w = 2·e^4/255)
     * but not equal */
    {
        double l[3] = {0, -0.5, -4.0}, x = 0.5, got;
        rt_dmol_nll_f64(l, &x, 1, 1, 1, &got);
        long double y = 1.0L, sc = expl(-4.0L);
        /* upper tail, so the difference does not cancel */
        long double dcdf = sigl(-(y - 1.0L / 255) / sc) - sigl(-(y + 1.0L / 255) / sc);
        assert_true(dcdf < 1e-5L);
        long double w = 2 * expl(4.0L) / 255;
        assert_true(fabsl(-logl(dcdf) - got + logl(sinhl(w / 2) / (w / 2))) < 1e-9L);
    }
}

/* Two components and three channels: -log sum_k pi_k prod_c P_c,k with the
 * channel coefficients applied by hand. */
static void test_dmol_hand_mixture(void **state) {
    (void)state;
    const int M = 2, C = 3, K = 20;
    double l[20];
    const double logits[2] = {0.3, -1.2};
    const double mean[3][2] = {{0.1, -0.4}, {0.05, 0.2}, {-0.3, 0.6}};
    const double ls[3][2] = {{-2.5, -1.0}, {-3.0, -6.0}, {-2.0, -8.0}};
    const double coef[3][2] = {{0.4, -1.1}, {-0.7, 0.2}, {1.3, 0.5}};
    for (int k = 0; k < M; k++) {
        l[k] = logits[k];
        for (int c = 0; c < C; c++) {
            l[M + 3 * M * c + k] = mean[c][k];
            l[M + 3 * M * c + M + k] = ls[c][k];
            l[M + 3 * M * c + 2 * M + k] = coef[c][k];
        }
    }
    const double xs[3][3] = {{0.12, 0.08, -0.2}, {-1.0, 0.3, 1.0}, {0.5, -0.9, 0.0}};
    for (int t = 0; t < 3; t++) {
        const double *x = xs[t];
        long double z = expl(logits[0]) + expl(logits[1]), p = 0;
        for (int k = 0; k < M; k++) {
            long double a = tanhl(coef[0][k]), b = tanhl(coef[1][k]), g = tanhl(coef[2][k]);
            long double pr = bin_prob(x[0], mean[0][k], ls[0][k]);
            long double pg = bin_prob(x[1], mean[1][k] + a * x[0], ls[1][k]);
            long double pb = bin_prob(x[2], mean[2][k] + b * x[0] + g * x[1], ls[2][k]);
            p += expl(logits[k]) / z * pr * pg * pb;
        }
        long double want = -logl(p);
        double got;
        rt_dmol_nll_f64(l, x, 1, C, M, &got);
        print_message("hand C=3 M=2 case %d: nll %.15g expected %.15Lg\n", t, got, want);
        assert_true(fabsl((long double)got - want) <= 1e-11L * fmaxl(1, fabsl(want)));
    }
    (void)K;
}

/* ---- the 256-way softmax ----------------------------------------------------------- */

static void test_softmax_bins(void **state) {
    (void)state;
    for (int k = 0; k < 256; k++) {
        float xf = ((float)k - 127.5f) / 127.5f;
        assert_int_equal(rt_softmax_bin(xf), k);
        assert_int_equal(rt_softmax_bin(k / 127.5 - 1.0), k);
    }
    assert_int_equal(rt_softmax_bin(-1.7), 0);
    assert_int_equal(rt_softmax_bin(1.3), 255);
    assert_int_equal(rt_softmax_bin(NAN), 0);
}

static void test_softmax_values_and_fd(void **state) {
    (void)state;
    for (int C = 1; C <= 3; C += 2) {
        const int npix = 3, K = 256 * C;
        RtRng r = {5 + C};
        double *l = malloc(sizeof(double) * npix * K), *dl = malloc(sizeof(double) * npix * K);
        double x[9], dnll[3], nll[3];
        for (int i = 0; i < npix * K; i++) l[i] = 3.0 * normal(&r);
        random_x(&r, x, npix * C);
        for (int i = 0; i < npix; i++) dnll[i] = unif(&r, 0.5, 2.0);
        /* value, written from the probabilities */
        rt_softmax_nll_f64(l, x, npix, C, nll);
        for (int i = 0; i < npix; i++) {
            long double p = 1;
            for (int c = 0; c < C; c++) {
                const double *lc = l + (i * C + c) * 256;
                long double z = 0;
                for (int j = 0; j < 256; j++) z += expl(lc[j]);
                p *= expl(lc[rt_softmax_bin(x[i * C + c])]) / z;
            }
            assert_true(fabsl(nll[i] + logl(p)) <= 1e-12L * fmaxl(1, fabsl(logl(p))));
        }
        /* gradient by central differences, every element */
        rt_softmax_nll_bwd_f64(l, x, dnll, npix, C, dl);
        double max_err = 0, h = 1e-6;
        for (int i = 0; i < npix; i++)
            for (int j = 0; j < K; j++) {
                double *v = &l[i * K + j], keep = *v, fp, fm;
                *v = keep + h;
                rt_softmax_nll_f64(l + i * K, x + i * C, 1, C, &fp);
                *v = keep - h;
                rt_softmax_nll_f64(l + i * K, x + i * C, 1, C, &fm);
                *v = keep;
                double fd = dnll[i] * (fp - fm) / (2 * h), an = dl[i * K + j];
                max_err = fmax(max_err, fabs(fd - an) / fmax(1, fabs(an)));
            }
        /* float path */
        float *lf = malloc(sizeof(float) * npix * K), *dlf = malloc(sizeof(float) * npix * K);
        float xf[9], nllf[3], dnllf[3], nll2[3];
        for (int i = 0; i < npix * K; i++) lf[i] = (float)l[i];
        for (int i = 0; i < npix * C; i++) xf[i] = (float)x[i];
        for (int i = 0; i < npix; i++) dnllf[i] = (float)dnll[i];
        rt_softmax_nll_f32(lf, xf, npix, C, nllf);
        rt_softmax_nll_bwd_f32(lf, xf, dnllf, npix, C, dlf);
        double ef = 0, tot = 0;
        for (int i = 0; i < npix; i++) ef = fmax(ef, fabs(nllf[i] - nll[i]) / fmax(1, fabs(nll[i]))), tot += nllf[i];
        for (int i = 0; i < npix * K; i++) ef = fmax(ef, fabs(dlf[i] - dl[i]));
        double lt = rt_softmax_loss_f32(lf, xf, npix, C, nll2, NULL);
        print_message("softmax C=%d: FD max rel err %.2e over %d elements; f32 max err %.2e\n", C, max_err,
                      npix * K, ef);
        assert_true(max_err <= 1e-6);
        assert_true(ef <= 1e-5);
        assert_true(fabs(lt - tot) <= 1e-9 * fabs(tot) && memcmp(nll2, nllf, sizeof nllf) == 0);
        free(l), free(dl), free(lf), free(dlf);
    }
    /* uniform logits: exactly C·log 256 */
    double l0[768] = {0}, x0[3] = {-1, 0.1, 1}, v;
    rt_softmax_nll_f64(l0, x0, 1, 3, &v);
    assert_true(fabs(v - 3 * log(256.0)) < 1e-12);
}

/* ---- random numbers and samplers ----------------------------------------------------- */

static void test_rng(void **state) {
    (void)state;
    /* splitmix64 from state 0: the published reference outputs */
    RtRng r = {0};
    assert_true(rt_rng_next(&r) == 0xE220A8397B1DCDAFULL);
    assert_true(rt_rng_next(&r) == 0x6E789E6AA1B965F4ULL);
    assert_true(rt_rng_next(&r) == 0x06C45D188009454FULL);
    RtRng a = {123}, b = a;
    double mean = 0;
    for (int i = 0; i < 10000; i++) {
        double u = rt_rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
        assert_true(u == rt_rng_uniform(&b));
        mean += u / 10000;
    }
    assert_true(fabs(mean - 0.5) < 0.01);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Mixture layout helper for the sampler tests (float l). */
static void set_comp(float *l, int C, int M, int c, int k, float mean, float ls, float coef) {
    int base = M + 3 * M * c;
    l[base + k] = mean;
    l[(C == 1 ? 2 * M : base + M) + k] = ls;
    if (C == 3) l[base + 2 * M + k] = coef;
}

static void test_sample_sharp_component(void **state) {
    (void)state;
    /* One component at log-scale -7 (scale e^-7): the logistic noise is at
     * most 11.5 scales (u clipped to 1e-5) = 0.0105 and mostly within one bin. */
    const float bound = 11.52f * expf(-7.0f) + 1e-6f;
    float l[3] = {0, 0.3f, -7.0f}, x;
    RtRng r = {9};
    int within = 0, n = 2000;
    for (int i = 0; i < n; i++) {
        rt_dmol_sample_pixel(l, 1, 1, &r, &x);
        assert_true(fabsf(x - 0.3f) <= bound);
        within += fabsf(x - 0.3f) <= 1.0f / 255;
    }
    print_message("sharp component: %d of %d samples within 1/255\n", within, n);
    assert_true(within >= n * 95 / 100);
    /* clamp below -7: an even smaller raw log-scale behaves the same */
    l[2] = -20.0f;
    for (int i = 0; i < 200; i++) {
        rt_dmol_sample_pixel(l, 1, 1, &r, &x);
        assert_true(fabsf(x - 0.3f) <= bound);
    }
}

static void test_sample_picks_component(void **state) {
    (void)state;
    const int M = 4, C = 3;
    const float means[4] = {-0.6f, -0.2f, 0.2f, 0.6f};
    float l[40];
    RtRng r = {11};
    for (int j = 0; j < M; j++) {
        for (int k = 0; k < M; k++) {
            l[k] = k == j ? 30.0f : 0.0f;
            for (int c = 0; c < C; c++) set_comp(l, C, M, c, k, means[k], -7.0f, 0.0f);
        }
        for (int i = 0; i < 100; i++) {
            float x[3];
            rt_dmol_sample_pixel(l, C, M, &r, x);
            for (int c = 0; c < C; c++) assert_true(fabsf(x[c] - means[j]) < 0.011f);
        }
    }
    /* moderate logits: the component frequencies follow softmax(logits) */
    const float logits[4] = {0.0f, logf(2.0f), logf(3.0f), logf(4.0f)};
    for (int k = 0; k < M; k++) l[k] = logits[k];
    int count[4] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        float x[3];
        rt_dmol_sample_pixel(l, C, M, &r, x);
        int best = 0;
        for (int k = 1; k < M; k++)
            if (fabsf(x[0] - means[k]) < fabsf(x[0] - means[best])) best = k;
        count[best]++;
    }
    for (int k = 0; k < M; k++) {
        double p = (k + 1) / 10.0, f = (double)count[k] / n, se = sqrt(p * (1 - p) / n);
        print_message("component %d: frequency %.4f, expected %.4f\n", k, f, p);
        assert_true(fabs(f - p) < 5 * se);
    }
}

static void test_sample_logistic_moments(void **state) {
    (void)state;
    const float mu = 0.1f, s = logf(0.05f);
    float l[3] = {1.5f, mu, s};
    const int n = 20000;
    float *xs = malloc(sizeof(float) * n);
    RtRng r = {2024};
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) {
        rt_dmol_sample_pixel(l, 1, 1, &r, &xs[i]);
        mean += xs[i];
    }
    mean /= n;
    for (int i = 0; i < n; i++) var += (xs[i] - mean) * (xs[i] - mean) / (n - 1);
    qsort(xs, n, sizeof(float), cmp_float);
    double median = 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
    double sd = 0.05 * M_PI / sqrt(3.0); /* logistic standard deviation */
    print_message("logistic mu %.3f scale 0.05: mean %.5f median %.5f sd %.5f (expected %.5f)\n", mu, mean, median,
                  sqrt(var), sd);
    assert_true(fabs(mean - mu) < 5 * sd / sqrt(n));
    assert_true(fabs(median - mu) < 5 * 0.05 * 2 / sqrt(n)); /* se of the median: 1/(2 f(mu) sqrt n) = 2s/sqrt n */
    assert_true(fabs(sqrt(var) / sd - 1) < 0.03);
    /* near the edge the sample is clipped to [-1, 1] */
    l[1] = 0.98f;
    int at_one = 0;
    for (int i = 0; i < 2000; i++) {
        float x;
        rt_dmol_sample_pixel(l, 1, 1, &r, &x);
        assert_true(x >= -1.0f && x <= 1.0f);
        at_one += x == 1.0f;
    }
    assert_true(at_one > 2000 / 4);
    free(xs);
}

static void test_sample_channel_dependency(void **state) {
    (void)state;
    const int M = 1, C = 3;
    float l[10] = {0};
    /* R wide, G and B sharp: G - alpha·x_R and B - beta·x_R - gamma·x_G sit
     * at their own means whatever R was drawn */
    const float alpha = 0.6f, beta = 0.5f, gamma = -0.5f;
    set_comp(l, C, M, 0, 0, 0.0f, logf(0.2f), atanhf(alpha));
    set_comp(l, C, M, 1, 0, 0.1f, -7.0f, atanhf(beta));
    set_comp(l, C, M, 2, 0, -0.2f, -7.0f, atanhf(gamma));
    RtRng r = {31};
    double corr_num = 0, rr = 0;
    for (int i = 0; i < 2000; i++) {
        float x[3];
        rt_dmol_sample_pixel(l, C, M, &r, x);
        float g_rest = x[1] - alpha * x[0];
        float b_rest = x[2] - beta * x[0] - gamma * x[1];
        if (fabsf(x[1]) < 1.0f) assert_true(fabsf(g_rest - 0.1f) < 0.011f);
        if (fabsf(x[2]) < 1.0f) assert_true(fabsf(b_rest + 0.2f) < 0.011f);
        corr_num += x[0] * (x[1] - 0.1);
        rr += x[0] * x[0];
    }
    /* the regression of G on R recovers alpha */
    print_message("G on R slope %.4f (alpha %.2f)\n", corr_num / rr, alpha);
    assert_true(fabs(corr_num / rr - alpha) < 0.01);
    /* all sharp: R at 0.5 moves G to 0.1 + 0.6·0.5 = 0.4, B to -0.2 + 0.25 - 0.2 = -0.15 */
    set_comp(l, C, M, 0, 0, 0.5f, -7.0f, atanhf(alpha));
    for (int i = 0; i < 200; i++) {
        float x[3];
        rt_dmol_sample_pixel(l, C, M, &r, x);
        assert_true(fabsf(x[0] - 0.5f) < 0.011f);
        assert_true(fabsf(x[1] - 0.4f) < 0.02f);
        assert_true(fabsf(x[2] + 0.15f) < 0.03f);
    }
}

static void test_sample_softmax(void **state) {
    (void)state;
    float l[768];
    RtRng r = {77};
    /* one bin strongly favoured per channel */
    for (int j = 0; j < 768; j++) l[j] = 0;
    l[200] = 40, l[256 + 3] = 40, l[512 + 255] = 40;
    float x[3];
    for (int i = 0; i < 100; i++) {
        rt_softmax_sample_pixel(l, 3, &r, x);
        assert_true(x[0] == (200 - 127.5f) / 127.5f);
        assert_true(x[1] == (3 - 127.5f) / 127.5f);
        assert_true(x[2] == 1.0f);
    }
    /* four bins with probabilities 1:2:3:4, the rest impossible */
    for (int j = 0; j < 256; j++) l[j] = -1e4f;
    const int bins[4] = {0, 17, 128, 255};
    for (int k = 0; k < 4; k++) l[bins[k]] = logf((float)(k + 1));
    int count[4] = {0};
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        rt_softmax_sample_pixel(l, 1, &r, x);
        int v = rt_softmax_bin(x[0]), found = 0;
        for (int k = 0; k < 4; k++)
            if (v == bins[k]) count[k]++, found = 1;
        assert_true(found);
    }
    for (int k = 0; k < 4; k++) {
        double p = (k + 1) / 10.0, f = (double)count[k] / n;
        assert_true(fabs(f - p) < 5 * sqrt(p * (1 - p) / n));
    }
}

/* The likelihood sums to one over all 256^C values of a pixel, and the
 * sampler draws from it: the marginal of every channel of samples (rounded
 * to bins, in 16 groups of 16 bins) matches the marginal of exp(-nll). */
static void check_sampler_against_likelihood(int C, int M, uint64_t seed) {
    int K = rt_dmol_k(C, M);
    RtRng r = {seed};
    double l[30];
    float lf[30];
    random_l(&r, l, 1, C, M);
    for (int c = 0; c < C; c++) {   /* widen: no component sharper than scale 0.02 */
        int ls = C == 1 ? 2 * M : M + 3 * M * c + M;
        for (int k = 0; k < M; k++) l[ls + k] = fmax(l[ls + k], log(0.02));
    }
    for (int j = 0; j < K; j++) lf[j] = (float)l[j], l[j] = lf[j];
    /* C = 1: one batch of the 256 values; C = 3: for each R a batch of all (G, B) */
    const int64_t np = C == 1 ? 256 : 256 * 256;
    const int nbatch = C == 1 ? 1 : 256;
    double *x = malloc(sizeof(double) * np * C), *L = malloc(sizeof(double) * np * K);
    double *nll = malloc(sizeof(double) * np);
    for (int64_t i = 0; i < np; i++) memcpy(L + i * K, l, sizeof(double) * K);
    double marg[3][256] = {{0}}, total = 0;
    for (int o = 0; o < nbatch; o++) {
        for (int64_t i = 0; i < np; i++) {
            int v[3] = {C == 1 ? (int)i : o, (int)(i >> 8), (int)(i & 255)};
            for (int c = 0; c < C; c++) x[i * C + c] = v[c] / 127.5 - 1.0;
        }
        rt_dmol_nll_f64(L, x, np, C, M, nll);
        for (int64_t i = 0; i < np; i++) {
            int v[3] = {C == 1 ? (int)i : o, (int)(i >> 8), (int)(i & 255)};
            double p = exp(-nll[i]);
            total += p;
            for (int c = 0; c < C; c++) marg[c][v[c]] += p;
        }
    }
    print_message("C=%d M=%d: sum of p over all %d^%d values = %.9f\n", C, M, 256, C, total);
    assert_true(fabs(total - 1.0) < 1e-4);
    const int n = 20000;
    int hist[3][16] = {{0}};
    for (int i = 0; i < n; i++) {
        float xs[3];
        rt_dmol_sample_pixel(lf, C, M, &r, xs);
        for (int c = 0; c < C; c++) hist[c][rt_softmax_bin(xs[c]) / 16]++;
    }
    double worst = 0;
    for (int c = 0; c < C; c++)
        for (int g = 0; g < 16; g++) {
            double p = 0;
            for (int b = 0; b < 16; b++) p += marg[c][16 * g + b];
            double f = (double)hist[c][g] / n, z = fabs(f - p) / sqrt(fmax(p * (1 - p), 1e-6) / n);
            worst = fmax(worst, z);
        }
    print_message("C=%d M=%d: sampled marginals within %.2f standard errors of the likelihood's\n", C, M, worst);
    assert_true(worst < 5.0);
    free(x), free(L), free(nll);
}

static void test_sampler_matches_likelihood(void **state) {
    (void)state;
    check_sampler_against_likelihood(1, 3, 501);
    check_sampler_against_likelihood(3, 2, 502);
}

static void test_bits_per_dim(void **state) {
    (void)state;
    assert_true(fabs(rt_bits_per_dim(log(2.0) * 3072 * 16, 3072 * 16) - 1.0) < 1e-15);
    /* the c1_m1_4x4 reference case: 1135.194936645723 nats over 32 sub-pixels */
    assert_true(fabs(rt_bits_per_dim(1135.194936645723, 32) - 51.17937829815767) < 1e-10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dmol_finite_differences),
        cmocka_unit_test(test_dmol_many_components),
        cmocka_unit_test(test_dmol_f32_matches_f64),
        cmocka_unit_test(test_dmol_hand_one_channel),
        cmocka_unit_test(test_dmol_hand_mixture),
        cmocka_unit_test(test_softmax_bins),
        cmocka_unit_test(test_softmax_values_and_fd),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_sample_sharp_component),
        cmocka_unit_test(test_sample_picks_component),
        cmocka_unit_test(test_sample_logistic_moments),
        cmocka_unit_test(test_sample_channel_dependency),
        cmocka_unit_test(test_sample_softmax),
        cmocka_unit_test(test_sampler_matches_likelihood),
        cmocka_unit_test(test_bits_per_dim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
