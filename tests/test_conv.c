/*
 * test_conv.c — direct convolutions (kir.h KS_CONV) as the JIT prints them,
 * on hand-built kernels, against a naive double-precision loop computed
 * here: both forms (forward, weight gradient), beta 0 (the target starts as
 * NaN) and 1, over awkward geometries — rows not a multiple of the register
 * tile, rows shorter than a tile, one image and odd batches, 1 to 6 taps,
 * input channels not a multiple of the channel tile, 1x1 kernels, cout
 * 16/32/48/64/160 — large enough that the work is split over threads, and
 * small enough to run serially. Elements outside the written tensor are checked untouched.
 *
 * Zero rows (KirConv pt, pb; 0 or 1 rows at the top / bottom, kernels of 1
 * to 3 rows): the JIT skips the terms reading them, so here those rows hold
 * NaN (beyond the promise, to see every one skipped) while the rows next to
 * them hold data: a term skipped that reads a data row, or one computed
 * that reads a border row, makes the sum differ from the naive loop, which
 * leaves out exactly the border rows. Zero columns (pl, pr) likewise, NaN
 * where the JIT skips them (the weight gradient), zero where it computes
 * them (the forward form).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/pxc_model.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "testutil.h"

typedef struct ConvCase {
    int form;
    int Ho, Wo, kh, kw, cin, cout;
    int padh, padw;   /* extra columns/rows of x beyond Ho + kh - 1 / Wo + kw - 1 */
    float beta;
    int pt, pb;       /* zero rows of x at the top / bottom of each image */
    int pl, pr;       /* zero columns of x at the left / right */
    int yt, yb;       /* rows of y above / below each image's Ho rows (never read or written) */
} ConvCase;

static const ConvCase cases[] = {
    {KIR_CONV_FORWARD, 28, 28, 2, 3, 64, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0},   /* the small model's shapes */
    {KIR_CONV_FORWARD, 28, 28, 2, 2, 64, 64, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_FORWARD, 5, 13, 2, 3, 7, 48, 1, 2, 0, 0, 0, 0, 0, 0, 0},     /* 13 = 8 + 5: a tail tile */
    {KIR_CONV_FORWARD, 3, 5, 1, 3, 3, 16, 0, 0, 1, 0, 0, 0, 0, 0, 0},      /* rows shorter than a tile */
    {KIR_CONV_FORWARD, 4, 9, 2, 1, 20, 160, 0, 1, 0, 0, 0, 0, 0, 0, 0},    /* 160: chunks of 2 vectors */
    {KIR_CONV_FORWARD, 7, 7, 3, 3, 33, 64, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_FORWARD, 28, 28, 1, 1, 64, 32, 0, 0, 1, 0, 0, 0, 0, 0, 0},   /* a 1x1 (nin) conv, in place */
    {KIR_CONV_FORWARD, 14, 14, 1, 1, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0},   /* ... and its input gradient */
    {KIR_CONV_WGRAD, 28, 28, 2, 3, 64, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_WGRAD, 14, 14, 2, 2, 64, 64, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_WGRAD, 5, 13, 2, 3, 7, 48, 1, 2, 0, 0, 0, 0, 0, 0, 0},       /* 7 channels: a channel tail */
    {KIR_CONV_WGRAD, 3, 5, 1, 3, 3, 16, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_WGRAD, 4, 9, 2, 1, 29, 160, 0, 1, 0, 0, 0, 0, 0, 0, 0},      /* 29 = 2 tiles of 14 + 1 */
    {KIR_CONV_WGRAD, 7, 7, 3, 3, 33, 64, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {KIR_CONV_WGRAD, 28, 28, 1, 1, 64, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0},     /* 1x1 */
    {KIR_CONV_WGRAD, 7, 7, 1, 1, 20, 16, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    /* zero rows */
    {KIR_CONV_FORWARD, 28, 28, 2, 3, 64, 32, 0, 0, 0, 1, 0, 1, 1, 0, 0},   /* the small model's down-shifted conv */
    {KIR_CONV_FORWARD, 7, 7, 2, 2, 33, 64, 0, 0, 1, 0, 1, 0, 1, 0, 0},     /* its input gradient: zeros below */
    {KIR_CONV_FORWARD, 5, 13, 3, 3, 7, 48, 1, 2, 0, 1, 1, 2, 1, 0, 0},     /* a tail tile, extra rows */
    {KIR_CONV_FORWARD, 6, 9, 1, 1, 20, 16, 0, 0, 1, 1, 1, 0, 0, 0, 0},     /* 1 row: first and last rows read only zeros */
    {KIR_CONV_FORWARD, 4, 9, 3, 1, 20, 160, 0, 1, 0, 1, 0, 0, 0, 0, 0},
    {KIR_CONV_FORWARD, 1, 5, 3, 2, 20, 32, 0, 0, 0, 1, 1, 0, 0, 0, 0},     /* one output row, taps 0 and 2 skipped */
    {KIR_CONV_WGRAD, 28, 28, 2, 3, 64, 32, 0, 0, 0, 1, 0, 1, 1, 0, 0},
    {KIR_CONV_WGRAD, 14, 14, 2, 2, 64, 64, 0, 0, 1, 0, 1, 0, 1, 0, 0},
    {KIR_CONV_WGRAD, 5, 13, 3, 3, 7, 48, 1, 2, 0, 1, 1, 1, 2, 0, 0},
    {KIR_CONV_WGRAD, 6, 9, 1, 1, 20, 16, 0, 0, 1, 1, 1, 1, 1, 0, 0},     /* 1 column: first and last columns skipped */
    {KIR_CONV_WGRAD, 4, 9, 3, 2, 29, 160, 0, 0, 0, 0, 1, 0, 0, 0, 0},
    {KIR_CONV_WGRAD, 1, 5, 3, 2, 20, 32, 0, 0, 0, 1, 1, 1, 1, 0, 0},       /* taps 0 and 2 read only zeros: written 0 */
    /* y inside a taller tensor (rows above / below each image that are neither read nor written) */
    {KIR_CONV_FORWARD, 28, 7, 2, 1, 64, 64, 0, 0, 0, 1, 0, 0, 0, 0, 1},
    {KIR_CONV_FORWARD, 5, 13, 2, 3, 7, 48, 1, 2, 0, 0, 1, 1, 1, 2, 1},
    {KIR_CONV_WGRAD, 28, 7, 2, 1, 64, 64, 0, 0, 0, 1, 0, 0, 0, 0, 1},
    {KIR_CONV_WGRAD, 14, 4, 2, 1, 64, 32, 0, 0, 0, 0, 1, 0, 0, 1, 0},
    {KIR_CONV_WGRAD, 5, 13, 3, 3, 7, 48, 1, 2, 0, 1, 1, 1, 2, 2, 3},
};
enum { NC = sizeof cases / sizeof cases[0] };

static KirProgram *P;

static int build(const ConvCase *c) {
    KirFunc *fn = kir_func_begin(P, "conv");
    bool fwd = c->form == KIR_CONV_FORWARD;
    KirConv k;
    memset(&k, 0, sizeof k);
    k.form = c->form;
    k.x = kir_func_param(P, fn, "x", KT_F32, false);
    k.w = kir_func_param(P, fn, "w", KT_F32, !fwd);
    k.y = kir_func_param(P, fn, "y", KT_F32, fwd);
    k.images = kir_batch(P);
    k.Ho = c->Ho, k.Wo = c->Wo, k.kh = c->kh, k.kw = c->kw, k.cin = c->cin, k.cout = c->cout;
    k.Hp = c->Ho + c->kh - 1 + c->padh;
    k.Wp = c->Wo + c->kw - 1 + c->padw;
    k.beta = c->beta;
    k.pt = c->pt, k.pb = c->pb, k.pl = c->pl, k.pr = c->pr;
    k.yt = c->yt, k.yb = c->yb;
    kir_conv(P, fn, &k);
    return kir_func_finish(P, fn, NULL);
}

static float val(uint64_t i, uint64_t salt) { return (float)((int)((i * 2654435761u + salt) % 97) - 48) / 32.0f; }

/* Is row r (column q) of x one of its zero rows (columns), skipped by the reference? */
static bool zero_row(const ConvCase *c, int64_t Hp, int64_t r) { return r < c->pt || r >= Hp - c->pb; }
static bool zero_col(const ConvCase *c, int64_t Wp, int64_t q) { return q < c->pl || q >= Wp - c->pr; }

static void run_case(pxc_model *m, int f, const ConvCase *c, int n) {
    typedef void (*Kern)(int64_t, uint64_t, float *, float *, float *);
    DiagList dl;
    diag_init(&dl);
    Kern k = (Kern)jit_model_lookup(m, P->funcs[f].name, &dl);
    if (!k) diag_print(&dl, stderr, false);
    assert_non_null(k);
    diag_free(&dl);
    int64_t Hp = c->Ho + c->kh - 1 + c->padh, Wp = c->Wo + c->kw - 1 + c->padw;
    int64_t nx = (int64_t)n * Hp * Wp * c->cin, nw = (int64_t)c->kh * c->kw * c->cin * c->cout;
    int64_t Hy = c->yt + c->Ho + c->yb, ny = (int64_t)n * Hy * c->Wo * c->cout;
    bool fwd = c->form == KIR_CONV_FORWARD;
    /* one guard element after the written tensor */
    float *x = malloc((size_t)nx * 4), *w = malloc((size_t)(nw + 1) * 4), *y = malloc((size_t)(ny + 1) * 4);
    float *t0 = malloc((size_t)((fwd ? ny : nw) + 1) * 4);
    for (int64_t i = 0; i < nx; i++) {
        int64_t r = i / (Wp * c->cin) % Hp, q = i / c->cin % Wp;   /* the row and column of x */
        x[i] = zero_row(c, Hp, r) ? NAN : zero_col(c, Wp, q) ? (fwd ? 0.0f : NAN) : val((uint64_t)i, 1);
    }
    for (int64_t i = 0; i <= nw; i++) w[i] = val((uint64_t)i, 2);
    for (int64_t i = 0; i <= ny; i++) {
        int64_t r = i / (c->Wo * c->cout) % Hy;   /* the row of y: outside [yt, yt + Ho) never read */
        y[i] = i < ny && (r < c->yt || r >= c->yt + c->Ho) ? NAN : val((uint64_t)i, 3);
    }
    float *out = fwd ? y : w;
    int64_t nout = fwd ? ny : nw;
    if (c->beta == 0)
        for (int64_t i = 0; i < nout; i++) out[i] = NAN;
    memcpy(t0, out, (size_t)(nout + 1) * 4);
    k(n, 0, x, w, y);
    int64_t bad = 0;
    for (int64_t e = 0; e < nout; e++) {
        double s = 0, mag = 0;
        int64_t o = e % c->cout;
        if (fwd) {
            int64_t pix = e / c->cout, j = pix % c->Wo, iy = pix / c->Wo % Hy, img = pix / c->Wo / Hy, i = iy - c->yt;
            if (iy < c->yt || iy >= c->yt + c->Ho) {   /* not written: still its NaN */
                if (!isnan(out[e]) && bad++ < 5) print_error("row %lld of y outside its Ho rows written\n", (long long)iy);
                continue;
            }
            for (int a = 0; a < c->kh; a++)
                for (int d = 0; d < c->kw; d++)
                    for (int ch = 0; ch < c->cin && !zero_row(c, Hp, i + a) && !zero_col(c, Wp, j + d); ch++) {
                        double p = (double)x[((img * Hp + i + a) * Wp + j + d) * c->cin + ch] *
                                   w[((a * c->kw + d) * c->cin + ch) * c->cout + o];
                        s += p, mag += fabs(p);
                    }
        } else {
            int64_t row = e / c->cout, ch = row % c->cin, t = row / c->cin, a = t / c->kw, d = t % c->kw;
            for (int img = 0; img < n; img++)
                for (int i = 0; i < c->Ho; i++)
                    for (int j = 0; j < c->Wo && !zero_row(c, Hp, i + a); j++) {
                        if (zero_col(c, Wp, j + d)) continue;
                        double p = (double)x[((img * Hp + i + a) * Wp + j + d) * c->cin + ch] *
                                   y[((img * Hy + c->yt + i) * c->Wo + j) * c->cout + o];
                        s += p, mag += fabs(p);
                    }
        }
        if (c->beta != 0) s += t0[e], mag += fabs(t0[e]);
        if (!(fabs(out[e] - s) <= 1e-5 * (mag + 1e-6)) && bad++ < 5)
            print_error("form %d %dx%d taps %dx%d cin %d cout %d beta %g zero rows %d+%d n %d: element %lld = %.9g, want %.9g\n",
                        c->form, c->Ho, c->Wo, c->kh, c->kw, c->cin, c->cout, (double)c->beta, c->pt, c->pb, n,
                        (long long)e,
                        (double)out[e], s);
    }
    if (bad) fail_msg("%lld wrong elements", (long long)bad);
    assert_true(out[nout] == t0[nout]);   /* nothing written past the tensor */
    free(x);
    free(w);
    free(y);
    free(t0);
}

static void test_conv(void **state) {
    (void)state;
    P = kir_program_new("conv");
    int f[NC];
    for (int i = 0; i < NC; i++) f[i] = build(&cases[i]);
    JitOptions o = jit_options_default();
    o.use_cache = false;
    DiagList dl;
    diag_init(&dl);
    pxc_model *m = jit_compile(P, &o, &dl);
    if (!m) diag_print(&dl, stderr, false);
    assert_non_null(m);
    static const int batches[] = {1, 3, 4};
    for (int i = 0; i < NC; i++)
        for (int b = 0; b < 3; b++) run_case(m, f[i], &cases[i], batches[b]);
    m->release(m);
    kir_free(P);
    diag_free(&dl);
}

/* kir_print names the form, the geometry and beta (pxc check --dump kernels). */
static void test_conv_print(void **state) {
    (void)state;
    P = kir_program_new("conv");
    int f = build(&cases[2]);
    char *text = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&text, &len);
    kir_print_func(P, &P->funcs[f], mf);
    fclose(mf);
    assert_non_null(strstr(text, "conv forward(images=n, x=x 7x17x7, w=w 2x3x7x48, y=y 5x13x48, beta=0);"));
    free(text);
    /* the zero rows are printed (and so part of the key kir_parameterise merges by) */
    f = build(&cases[24]);   /* 5x13, taps 3x3, zero rows and columns */
    mf = open_memstream(&text, &len);
    kir_print_func(P, &P->funcs[f], mf);
    fclose(mf);
    assert_non_null(strstr(text, "conv wgrad(images=n, x=x 8x17x7, w=w 3x3x7x48, y=y 5x13x48, beta=0, "
                                 "zero rows=1 top 1 bottom, zero columns=1 left 2 right);"));
    free(text);
    /* so are y's rows outside its Ho */
    f = build(&cases[NC - 1]);
    mf = open_memstream(&text, &len);
    kir_print_func(P, &P->funcs[f], mf);
    fclose(mf);
    assert_non_null(strstr(text, "zero columns=1 left 2 right, y rows=2 above 3 below);"));
    free(text);
    kir_free(P);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_conv), cmocka_unit_test(test_conv_print)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
