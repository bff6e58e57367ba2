/*
 * test_jit_models.c — every shipped spec (the .yaml files of models/ and models/ablations/)
 * at reduced size (R=1, F=8 and F=16 — the second runs the direct
 * convolutions — 2 mixtures, 8x8), compiled by the JIT and run
 * against the reference backend (runtime/ref, double) in training mode with
 * the spec's own dropout: loss within 1e-5 relative, l within 1e-5 of its max,
 * every parameter gradient within 1e-4 of its max. A spec the kernel back end
 * does not support must be refused with a located diagnostic, not crash.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff/autodiff.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "ref/ref.h"
#include "spec/spec.h"
#include "testutil.h"

static const char *const small[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8"};
/* 16 filters: the stride-1 convolutions run as direct convolutions (KS_CONV),
 * those with 3 columns of taps in the Winograd form unless kopt says otherwise */
static const char *const small16[] = {"nr_resnet=1", "nr_filters=16", "nr_mix=2", "height=8", "width=8"};
/* rows of 44, 22 and 11 columns (Winograd tiles of 4 with 0, 2 and 3 columns
 * left over), and of 36, 18, 9 (0, 2, 1) */
static const char *const wide44[] = {"nr_resnet=1", "nr_filters=16", "nr_mix=2", "height=4", "width=44"};
static const char *const wide36[] = {"nr_resnet=1", "nr_filters=16", "nr_mix=2", "height=4", "width=36"};
static const char *const *sets = small;
static const KirOptions *kopt = NULL;

/* 1: compared, 0: refused by the back end with a located error */
static int check_model(const char *path) {
    DiagList dl;
    diag_init(&dl);
    Graph g;
    if (spec_compile(path, sets, 5, &g, &dl) != 0 || !ad_differentiate(&g, false, &dl)) {
        diag_print(&dl, stderr, false);
        fail_msg("%s does not compile at reduced size", path);
    }
    KirProgram *p = kir_lower(&g, kopt, &dl);
    if (!p) {
        assert_true(dl.nerrors > 0);
        assert_true(dl.items[0].loc.line > 0);
        print_message("%s: refused by the kernel back end: %s\n", path, dl.items[0].msg);
        ir_graph_free(&g);
        diag_free(&dl);
        return 0;
    }
    JitOptions o = jit_options_default();
    o.use_cache = false;
    pxc_model *m = jit_compile(p, &o, &dl);
    if (!m) {
        diag_print(&dl, stderr, false);
        fail_msg("%s: jit_compile failed", path);
    }
    kir_free(p);   /* the model does not point into the program */
    const int n = 2;
    char err[256];
    pxc_model *r = ref_model_new(&g, n, err, sizeof err);
    if (!r) fail_msg("%s: reference model: %s", path, err);
    assert_int_equal(m->nparams, r->nparams);

    int64_t np = m->nparams, npix = (int64_t)n * g.H * g.W, nout = npix * m->out_channels;
    float *params = malloc((size_t)np * 4), *gj = malloc((size_t)np * 4), *gr = malloc((size_t)np * 4);
    float *x = malloc((size_t)(npix * g.C) * 4), *lj = malloc((size_t)nout * 4), *lr = malloc((size_t)nout * 4);
    uint64_t s = 3;
    for (int k = 0; k < m->nparam_tensors; k++) {
        const pxc_tensor *t = &m->params[k];
        size_t len = strlen(t->name);
        bool gain = len >= 2 && !strcmp(t->name + len - 2, ".g");
        for (int64_t i = 0; i < t->numel; i++) {
            s = pxc_mix64(s + 1);
            float u = (float)(s >> 40) / 16777216.0f - 0.5f;
            params[t->offset + i] = gain ? 1.0f + 0.1f * u : 0.2f * u;
        }
    }
    for (int64_t i = 0; i < npix * g.C; i++) x[i] = (float)((pxc_mix64((uint64_t)i) >> 56) & 255) / 127.5f - 1.0f;
    int32_t labels[2] = {1, g.classes > 2 ? 2 : 0};
    void *aj = aligned_alloc(64, (m->arena_bytes(n) + 63) / 64 * 64);
    void *ar = aligned_alloc(64, (r->arena_bytes(n) + 63) / 64 * 64);
    const int32_t *lab = g.classes > 0 ? labels : NULL;
    double lossj = m->forward(params, x, lab, n, 77, 1, aj, lj, NULL);
    double lossr = r->forward(params, x, lab, n, 77, 1, ar, lr, NULL);
    m->backward(params, x, lab, n, aj, gj);
    r->backward(params, x, lab, n, ar, gr);

    double rel = fabs(lossj - lossr) / fabs(lossr);
    if (!(rel <= 1e-5)) fail_msg("%s: loss %.9g, reference %.9g (rel %.3g)", path, lossj, lossr, rel);
    double lmax = 0, ld = 0;
    for (int64_t i = 0; i < nout; i++) lmax = fmax(lmax, fabs(lr[i])), ld = fmax(ld, fabs(lj[i] - lr[i]));
    if (!(ld <= 1e-5 * lmax)) fail_msg("%s: l differs by %.3g (max %.3g)", path, ld, lmax);
    double worst = 0;
    for (int k = 0; k < m->nparam_tensors; k++) {
        const pxc_tensor *t = &m->params[k];
        double mx = 0, d = 0;
        for (int64_t i = 0; i < t->numel; i++) {
            mx = fmax(mx, fabs(gr[t->offset + i]));
            double e = fabs(gj[t->offset + i] - gr[t->offset + i]);
            if (!(e <= d)) d = e;
        }
        double r2 = d / fmax(mx, 1e-30);
        if (!(r2 <= 1e-4)) fail_msg("%s: d loss / d %s differs by %.3g of its max %.3g", path, t->name, r2, mx);
        worst = fmax(worst, r2);
    }
    print_message("%s: loss %.9g (reference %.9g, rel %.2g), worst gradient %.2g of its max\n", path, lossj, lossr,
                  rel, worst);
    free(aj), free(ar), free(params), free(gj), free(gr), free(x), free(lj), free(lr);
    r->release(r);
    m->release(m);
    ir_graph_free(&g);
    diag_free(&dl);
    return 1;
}

static int scan(const char *dir, int *refused) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    char *names[64];
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nn < 64) {
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".yaml")) names[nn++] = strdup(de->d_name);
    }
    closedir(d);
    int compared = 0;
    for (int i = 0; i < nn; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (check_model(path))
            compared++;
        else
            (*refused)++;
        free(names[i]);
    }
    return compared;
}

static void test_shipped_models(void **state) {
    char dir[4096];
    int refused = 0, compared = 0;
    snprintf(dir, sizeof dir, "%s/models", tu_source_dir());
    compared += scan(dir, &refused);
    snprintf(dir, sizeof dir, "%s/models/ablations", tu_source_dir());
    compared += scan(dir, &refused);
    assert_true(compared >= 8);   /* the paper's model, its conditional variant, Fashion-MNIST (two), four ablations */
    assert_int_equal(refused, 0);
}

/* The same with 16 filters: direct convolutions forward, weight and input gradients. */
static void test_shipped_models_direct(void **state) {
    KirOptions o = {0};
    o.no_winograd = true;
    kopt = &o;
    sets = small16;
    test_shipped_models(state);
    sets = small;
    kopt = NULL;
}

/* ... and with the 3-column convolutions in the Winograd form (lower.c). */
static void test_shipped_models_winograd(void **state) {
    sets = small16;
    test_shipped_models(state);
    sets = small;
}

/* The Winograd form on rows that are not whole tiles (the last tile's
 * columns past the row: zero input, output not written, no gradient). */
static void test_winograd_widths(void **state) {
    (void)state;
    static const char *const specs[] = {"models/pixelcnnpp_cifar10.yaml", "models/fashion_mnist.yaml"};
    const char *const *const widths[] = {wide44, wide36};
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 2; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", tu_source_dir(), specs[i]);
            sets = widths[w];
            assert_int_equal(check_model(path), 1);
        }
    sets = small;
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shipped_models), cmocka_unit_test(test_shipped_models_direct),
                                       cmocka_unit_test(test_shipped_models_winograd),
                                       cmocka_unit_test(test_winograd_widths)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
