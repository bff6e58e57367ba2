/*
 * test_emitc_util.h — helpers of the emitted-C tests (test_emitc*.c): a
 * network from its spec, differentiated and lowered, emitted as C into a
 * fresh temporary directory, compiled with the system C compiler and
 * loaded; comparisons of its float results with the reference backend's
 * doubles. Everything is static inline: each test program includes what it uses.
 */
#ifndef PXC_TEST_EMITC_UTIL_H
#define PXC_TEST_EMITC_UTIL_H

#include <dirent.h>
#include <unistd.h>

#include "test_ref_util.h"

#include "c/emitc.h"
#include "kernels/kir.h"

typedef struct EmNet {
    Graph g;
    DiagList dl;          /* owns the spec text the SrcLocs point into */
    KirProgram *p;
    EmitcModule m;
    ParamLayout pl;
    char dir[64];
} EmNet;

/* Compile models/<model>.yaml with sets, differentiate, lower (the emitted
 * instance named `name`, NULL: "model"); make a fresh temporary directory.
 * Fails the test on any error. */
static inline void em_prepare_named(EmNet *e, const char *model, const char *const *sets, int nsets, const char *name) {
    memset(e, 0, sizeof *e);
    diag_init(&e->dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s.yaml", tu_source_dir(), model);
    if (spec_compile(path, sets, nsets, &e->g, &e->dl) != 0) {
        diag_print(&e->dl, stderr, false);
        fail_msg("cannot compile %s", path);
    }
    if (!ad_differentiate(&e->g, false, &e->dl)) {
        diag_print(&e->dl, stderr, false);
        fail_msg("autodiff failed");
    }
    KirOptions o;
    memset(&o, 0, sizeof o);
    o.name = name;
    e->p = kir_lower(&e->g, &o, &e->dl);
    if (!e->p) {
        diag_print(&e->dl, stderr, false);
        fail_msg("kir_lower failed");
    }
    e->pl = ir_param_layout(&e->g);
    snprintf(e->dir, sizeof e->dir, "/tmp/pxc_emitc_XXXXXX");
    if (!mkdtemp(e->dir)) fail_msg("mkdtemp failed");
}

static inline void em_prepare(EmNet *e, const char *model, const char *const *sets, int nsets) {
    em_prepare_named(e, model, sets, nsets, NULL);
}

/* em_prepare, then emit into the directory, build (cc ... extra_cflags) and load. */
static inline void em_build(EmNet *e, const char *model, const char *const *sets, int nsets, const char *extra_cflags) {
    em_prepare(e, model, sets, nsets);
    char err[16384];
    if (emitc_build_and_load(e->p, e->dir, extra_cflags, &e->m, err, sizeof err) != 0)
        fail_msg("emitted C does not build or load:\n%s", err);
}

/* em_prepare_named, then write model.h and model.c into the directory. */
static inline void em_emit(EmNet *e, const char *model, const char *const *sets, int nsets, const char *name) {
    em_prepare_named(e, model, sets, nsets, name);
    char hp[128], cp[128];
    snprintf(hp, sizeof hp, "%s/model.h", e->dir);
    snprintf(cp, sizeof cp, "%s/model.c", e->dir);
    FILE *h = fopen(hp, "w"), *c = fopen(cp, "w");
    assert_true(h && c);
    assert_int_equal(emitc_program(e->p, h, c, NULL), 0);
    assert_int_equal(fclose(h), 0);
    assert_int_equal(fclose(c), 0);
}

static inline void em_free(EmNet *e) {
    emitc_unload(&e->m);
    DIR *d = opendir(e->dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", e->dir, de->d_name);
            unlink(p);
        }
        closedir(d);
        rmdir(e->dir);
    }
    ir_param_layout_free(&e->pl);
    kir_free(e->p);
    ir_graph_free(&e->g);
    diag_free(&e->dl);
}

/* max |a - b| / max |b| (0 when b is all zero and a equals it). */
static inline double em_rel(const float *a, const double *b, int64_t n, int64_t *worst) {
    double mx = 0, md = 0;
    int64_t w = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d, w = i;
    }
    if (worst) *worst = w;
    return mx > 0 ? md / mx : md;
}

/* Every parameter's gradient tensor within tol x max|tensor| of the reference. */
static inline void em_check_grads(const EmNet *e, const float *grad, const double *want, double tol, const char *what) {
    double worst = 0;
    const char *wname = "";
    for (int k = 0; k < e->pl.n; k++) {
        int64_t w;
        double r = em_rel(grad + e->pl.p[k].offset, want + e->pl.p[k].offset, e->pl.p[k].numel, &w);
        if (r > worst) worst = r, wname = e->pl.p[k].name;
        if (!(r <= tol))
            fail_msg("%s: gradient of %s off by %.3g of its max (element %lld: %.9g, want %.9g)", what, e->pl.p[k].name, r,
                     (long long)w, grad[e->pl.p[k].offset + w], want[e->pl.p[k].offset + w]);
    }
    printf("  %s: worst gradient tensor %s at %.2g of its max\n", what, wname, worst);
}

/* A 64-byte aligned arena of exactly `bytes` followed by a 4 KiB canary. */
typedef struct EmArena {
    unsigned char *p;
    size_t bytes;
} EmArena;

static inline EmArena em_arena(size_t bytes) {
    EmArena a = {aligned_alloc(64, (bytes + 4096 + 63) / 64 * 64), bytes};
    memset(a.p, 0x5a, bytes + 4096);
    return a;
}

static inline void em_arena_check(const EmArena *a) {
    for (size_t i = 0; i < 4096; i++)
        if (a->p[a->bytes + i] != 0x5a) fail_msg("the model wrote past its arena (byte %zu after the end)", i);
}

/* Images with the likelihood's edge bins well represented: 10% of 0, 10% of 255. */
static inline void em_images(TRng *r, float *x, double *xd, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double u = trng_uniform(r);
        int k = u < 0.1 ? 0 : u > 0.9 ? 255 : (int)(trng_uniform(r) * 256);
        x[i] = ((float)k - 127.5f) / 127.5f;
        if (xd) xd[i] = x[i];
    }
}

/* The emitted model against the reference backend on n random images:
 * data-dependent init (every g and b within 1e-4 of its tensor's max), then a training step
 * (seed 7) with parameters moved off their initial values: loss within
 * 1e-5 relative, l and nll within 1e-5 of their max, every gradient tensor
 * within 1e-4 of its max; the likelihood entry alone; evaluation mode. */
static inline void em_compare_with_ref(EmNet *e, int n, bool conditional, uint64_t rng_seed) {
    const Graph *g = &e->g;
    pxc_model *pm = e->m.model;
    TRng r = {rng_seed};
    int64_t np = e->pl.total, nx = (int64_t)n * g->H * g->W * g->C, npix = (int64_t)n * g->H * g->W;
    int64_t nout = npix * pm->out_channels;
    assert_int_equal(pm->nparams, np);
    assert_int_equal(pm->abi_version, PXC_ABI_VERSION);
    double *pd = malloc((size_t)np * sizeof(double)), *xd = malloc((size_t)nx * sizeof(double));
    float *pf = malloc((size_t)np * sizeof(float)), *xf = malloc((size_t)nx * sizeof(float));
    int32_t *labels = NULL;
    if (conditional) {
        labels = malloc((size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++) labels[i] = (int32_t)((i * 3 + 1) % g->classes);
    }
    tb_random_params(g, pd, &r, 0.05);
    for (int64_t i = 0; i < np; i++) pf[i] = (float)pd[i], pd[i] = pf[i];
    em_images(&r, xf, xd, nx);
    RefExec *ex = ref_new(g, n);
    EmArena ar = em_arena(pm->arena_bytes(n));

    /* data-dependent init */
    ref_init(ex, pd, xd, labels);
    pm->init(pf, xf, labels, n, ar.p);
    em_arena_check(&ar);
    for (int k = 0; k < e->pl.n; k++) {   /* every g and b within 1e-4 of its tensor's max */
        int64_t w, off = e->pl.p[k].offset;
        double rel = em_rel(pf + off, pd + off, e->pl.p[k].numel, &w);
        if (!(rel <= 1e-4))
            fail_msg("init: %s off by %.3g of its max (element %lld: %.9g, reference %.9g)", e->pl.p[k].name, rel,
                     (long long)w, pf[off + w], pd[off + w]);
    }
    for (int64_t i = 0; i < np; i++) {
        pf[i] = (float)(pd[i] * (1 + 0.05 * trng_normal(&r)) + 0.01 * trng_normal(&r));
        pd[i] = pf[i];
    }

    /* a training step */
    float *out = malloc((size_t)nout * 4), *nll = malloc((size_t)npix * 4), *grad = malloc((size_t)np * 4);
    double *gd = malloc((size_t)np * sizeof(double));
    double lr = ref_forward(ex, pd, xd, labels, 7, true);
    double lf = pm->forward(pf, xf, labels, n, 7, 1, ar.p, out, nll);
    em_arena_check(&ar);
    printf("  loss %.9g, reference %.9g (%.2g relative)\n", lf, lr, fabs(lf - lr) / fabs(lr));
    assert_true(fabs(lf - lr) <= 1e-5 * fabs(lr));
    int64_t w;
    double rl = em_rel(out, ref_value(ex, g->out), nout, &w), rn = em_rel(nll, ref_value(ex, g->nll), npix, &w);
    printf("  l within %.2g of its max, nll within %.2g\n", rl, rn);
    assert_true(rl <= 1e-5 && rn <= 1e-5);
    memset(grad, 0xff, (size_t)np * 4);   /* NaN everywhere: backward must write every element */
    ref_backward(ex);
    ref_grads(ex, gd);
    pm->backward(pf, xf, labels, n, ar.p, grad);
    em_arena_check(&ar);
    em_check_grads(e, grad, gd, 1e-4, "training step");

    /* the same forward without out and nll: the same loss, bit for bit */
    double lf2 = pm->forward(pf, xf, labels, n, 7, 1, ar.p, NULL, NULL);
    assert_true(lf2 == lf);

    /* the likelihood alone, with and without its outputs */
    double *dld = malloc((size_t)nout * sizeof(double)), *nlld = malloc((size_t)npix * sizeof(double));
    float *dlf = malloc((size_t)nout * 4), *nll2 = malloc((size_t)npix * 4);
    double lr3 = ref_loss(g, n, ref_value(ex, g->out), xd, dld, nlld);
    double lf3 = pm->loss(out, xf, n, dlf, nll2);
    assert_true(fabs(lf3 - lr3) <= 1e-5 * fabs(lr3));
    assert_true(em_rel(dlf, dld, nout, &w) <= 1e-4);
    assert_true(em_rel(nll2, nlld, npix, &w) <= 1e-5);
    assert_true(pm->loss(out, xf, n, NULL, NULL) == lf3);
    assert_true(pm->loss(out, xf, n, dlf, NULL) == lf3);
    assert_true(pm->loss(out, xf, n, NULL, nll2) == lf3);

    /* evaluation: no dropout */
    double le = ref_forward(ex, pd, xd, labels, 7, false);
    double lfe = pm->forward(pf, xf, labels, n, 99, 0, ar.p, out, NULL);
    assert_true(fabs(lfe - le) <= 1e-5 * fabs(le));
    assert_true(em_rel(out, ref_value(ex, g->out), nout, &w) <= 1e-5);

    ref_free(ex);
    free(ar.p);
    free(pd), free(xd), free(pf), free(xf), free(labels), free(out), free(nll), free(grad), free(gd);
    free(dld), free(nlld), free(dlf), free(nll2);
}

#endif
