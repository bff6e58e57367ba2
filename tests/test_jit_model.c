/*
 * test_jit_model.c — whole PixelCNN++ networks (models/pixelcnnpp_cifar10.yaml
 * at R=1, F=8, 8x8) compiled by the JIT, checked against
 *   - the independent PyTorch vectors of shared/reference/model (weights,
 *     images, l, per-pixel nll, loss, d loss/d l, every parameter gradient):
 *     loss within 1e-5 relative, l and nll within 1e-5 of their max, d loss/d l
 *     and every gradient tensor within 1e-4 of its max; evaluation mode (out
 *     and nll NULL) gives the training loss;
 *   - the standalone C the same kernel program emits (compiled with cc) and
 *     the reference backend (runtime/ref, double), with dropout 0.5 in
 *     training mode, class conditioning and data-dependent init: same bounds;
 *   - itself from the object cache: bit-identical results.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autodiff/autodiff.h"
#include "c/emitc.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "ref/ref.h"
#include "safetensors.h"
#include "spec/spec.h"
#include "testutil.h"

typedef struct Net {
    Graph g;
    DiagList dl;
    KirProgram *p;
    pxc_model *m;
    ParamLayout pl;
} Net;

static void net_build(Net *e, const char *const *sets, int nsets, const JitOptions *o) {
    memset(e, 0, sizeof *e);
    diag_init(&e->dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/pixelcnnpp_cifar10.yaml", tu_source_dir());
    if (spec_compile(path, sets, nsets, &e->g, &e->dl) != 0 || !ad_differentiate(&e->g, false, &e->dl) ||
        !(e->p = kir_lower(&e->g, NULL, &e->dl))) {
        diag_print(&e->dl, stderr, false);
        fail_msg("cannot build the network");
    }
    e->pl = ir_param_layout(&e->g);
    e->m = jit_compile(e->p, o, &e->dl);
    if (!e->m) {
        diag_print(&e->dl, stderr, false);
        fail_msg("jit_compile failed");
    }
    assert_int_equal(e->m->nparams, e->pl.total);
    assert_int_equal(e->m->nparam_tensors, e->pl.n);
    for (int i = 0; i < e->pl.n; i++) {
        assert_string_equal(e->m->params[i].name, e->pl.p[i].name);
        assert_int_equal(e->m->params[i].offset, e->pl.p[i].offset);
    }
}

static void net_free(Net *e) {
    e->m->release(e->m);
    kir_free(e->p);
    ir_param_layout_free(&e->pl);
    ir_graph_free(&e->g);
    diag_free(&e->dl);
}

static JitOptions no_cache(void) {
    JitOptions o = jit_options_default();
    o.use_cache = false;
    return o;
}

static void *arena_for(const pxc_model *m, int n) { return aligned_alloc(64, (m->arena_bytes(n) + 63) / 64 * 64); }

/* max |a - b| / max |b| over n floats, failing when above tol */
static double check_rel_max(const char *what, const float *a, const float *b, size_t n, double tol) {
    double mx = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(b[i]));
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;   /* NaN propagates */
    }
    double rel = d / fmax(mx, 1e-30);
    if (!(rel <= tol)) fail_msg("%s: max diff %.3g, max %.3g: %.3g of the max > %.3g", what, d, mx, rel, tol);
    return rel;
}

static void check_loss(const char *what, double got, double want, double tol) {
    double rel = fabs(got - want) / fabs(want);
    if (!(rel <= tol)) fail_msg("%s: loss %.9g, want %.9g (rel %.3g > %.3g)", what, got, want, rel, tol);
}

/* every parameter gradient tensor within tol of its max; returns the worst */
static double check_grads(const char *what, const ParamLayout *pl, const float *got, const float *want, double tol) {
    double worst = 0;
    for (int k = 0; k < pl->n; k++) {
        char label[256];
        snprintf(label, sizeof label, "%s: d loss / d %s", what, pl->p[k].name);
        double r = check_rel_max(label, got + pl->p[k].offset, want + pl->p[k].offset, (size_t)pl->p[k].numel, tol);
        worst = fmax(worst, r);
    }
    return worst;
}

/* ---- the PyTorch vectors ------------------------------------------------------------------- */

typedef struct VecCase {
    const char *name;
    const char *sets[8];
} VecCase;

static const VecCase vec_cases[] = {
    {"c3_r1_f8_m2_8x8",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=0", "dropout=0"}},
    {"c1_r1_f8_m3_8x8",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=3", "height=8", "width=8", "channels=1", "classes=0", "dropout=0"}},
    {"c3_r1_f8_m2_8x8_cond4",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=4", "dropout=0"}},
};

static void st_load(RtSafetensors *st, const ParamLayout *pl, float *dst) {
    for (int k = 0; k < pl->n; k++) {
        const RtStTensor *t = rt_st_find(st, pl->p[k].name);
        if (!t) fail_msg("tensor %s missing from the reference file", pl->p[k].name);
        assert_int_equal(t->dtype, RT_ST_F32);
        assert_int_equal(rt_st_numel(t), pl->p[k].numel);
        memcpy(dst + pl->p[k].offset, t->data, (size_t)pl->p[k].numel * 4);
    }
}

static void test_pytorch_vectors(void **state) {
    JitOptions o = no_cache();
    for (size_t c = 0; c < sizeof vec_cases / sizeof vec_cases[0]; c++) {
        const VecCase *vc = &vec_cases[c];
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/model/%s", tu_reference_dir(), vc->name);
        Net e;
        net_build(&e, vc->sets, 8, &o);
        pxc_model *m = e.m;
        const int n = 2;
        int64_t np = e.pl.total, npix = (int64_t)n * e.g.H * e.g.W, nout = npix * m->out_channels;
        char err[512];
        RtSafetensors *wst = rt_st_open(tu_path(dir, "weights.safetensors"), err, sizeof err);
        RtSafetensors *gst = rt_st_open(tu_path(dir, "grads.safetensors"), err, sizeof err);
        if (!wst || !gst) fail_msg("%s", err);
        float *params = malloc((size_t)np * 4), *want_g = malloc((size_t)np * 4), *grad = malloc((size_t)np * 4);
        st_load(wst, &e.pl, params);
        st_load(gst, &e.pl, want_g);
        float *x = tu_read_f32(tu_path(dir, "x.bin"), (size_t)(npix * e.g.C));
        float *want_l = tu_read_f32(tu_path(dir, "l.bin"), (size_t)nout);
        float *want_nll = tu_read_f32(tu_path(dir, "nll_pixel.bin"), (size_t)npix);
        float *want_loss = tu_read_f32(tu_path(dir, "loss.bin"), 1);
        float *want_dl = tu_read_f32(tu_path(dir, "grad_l.bin"), (size_t)nout);
        int32_t *labels = e.g.classes > 0 ? (int32_t *)tu_read_file(tu_path(dir, "labels.bin"), NULL) : NULL;
        if (e.g.classes > 0) assert_non_null(labels);
        float *l = malloc((size_t)nout * 4), *nll = malloc((size_t)npix * 4), *dl = malloc((size_t)nout * 4);
        void *arena = arena_for(m, n);

        double loss = m->forward(params, x, labels, n, 0, 1, arena, l, nll);
        check_loss(vc->name, loss, want_loss[0], 1e-5);
        check_rel_max("l", l, want_l, (size_t)nout, 1e-5);
        check_rel_max("nll", nll, want_nll, (size_t)npix, 1e-5);
        m->backward(params, x, labels, n, arena, grad);
        double gw = check_grads(vc->name, &e.pl, grad, want_g, 1e-4);

        /* the likelihood alone, on PyTorch's l */
        double lossl = m->loss(want_l, x, n, dl, nll);
        check_loss("loss entry", lossl, want_loss[0], 1e-5);
        double dw = check_rel_max("d loss / d l", dl, want_dl, (size_t)nout, 1e-4);
        check_rel_max("loss entry nll", nll, want_nll, (size_t)npix, 1e-5);
        /* evaluation mode, out and nll left to the arena */
        double loss_eval = m->forward(params, x, labels, n, 0, 0, arena, NULL, NULL);
        check_loss("evaluation", loss_eval, loss, 1e-6);
        print_message("%s: loss %.9g (PyTorch %.9g), worst gradient %.2g of its max, d loss/d l %.2g\n", vc->name,
                      loss, (double)want_loss[0], gw, dw);

        free(arena);
        free(l), free(nll), free(dl), free(labels);
        free(x), free(want_l), free(want_nll), free(want_loss), free(want_dl);
        free(params), free(want_g), free(grad);
        rt_st_close(wst);
        rt_st_close(gst);
        net_free(&e);
    }
}

/* ---- against the emitted C and the reference backend, dropout and classes on ------------------ */

static void fill_params(const ParamLayout *pl, float *p) {
    uint64_t s = 42;
    for (int k = 0; k < pl->n; k++) {
        const char *nm = pl->p[k].name;
        size_t len = strlen(nm);
        char last = len >= 2 && nm[len - 2] == '.' ? nm[len - 1] : 'v';
        for (int64_t i = 0; i < pl->p[k].numel; i++) {
            s = pxc_mix64(s + 1);
            float u = (float)(s >> 40) / 16777216.0f - 0.5f;
            p[pl->p[k].offset + i] = last == 'g' ? 1.0f + 0.2f * u : last == 'b' ? 0.1f * u : 0.2f * u;
        }
    }
}

static void test_emitted_c_and_reference(void **state) {
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8",
                          "channels=3",  "classes=4",    "dropout=0.5"};
    JitOptions o = no_cache();
    Net e;
    net_build(&e, sets, 8, &o);
    const int n = 3;
    char dir[] = "/tmp/pxc_test_jit_model_XXXXXX";
    assert_non_null(mkdtemp(dir));
    EmitcModule em;
    char err[16384];
    if (emitc_build_and_load(e.p, dir, "", &em, err, sizeof err) != 0) fail_msg("emitted C: %s", err);
    pxc_model *rm = ref_model_new(&e.g, n, err, sizeof err);
    if (!rm) fail_msg("reference model: %s", err);
    pxc_model *ms[3] = {e.m, em.model, rm};
    const char *names[3] = {"jit", "emitted C", "reference"};

    int64_t np = e.pl.total, npix = (int64_t)n * e.g.H * e.g.W, nout = npix * e.m->out_channels;
    size_t nx = (size_t)(npix * e.g.C);
    float *x = malloc(nx * 4);
    for (size_t i = 0; i < nx; i++) x[i] = (float)((pxc_mix64(i + 7) >> 56) & 255) / 127.5f - 1.0f;
    int32_t labels[3] = {2, 0, 3};
    float *p0 = malloc((size_t)np * 4);
    fill_params(&e.pl, p0);

    /* data-dependent init from the same start */
    float *pi[3], *l[3], *grad[3];
    double loss[3];
    for (int b = 0; b < 3; b++) {
        pi[b] = malloc((size_t)np * 4);
        memcpy(pi[b], p0, (size_t)np * 4);
        void *arena = arena_for(ms[b], n);
        ms[b]->init(pi[b], x, labels, n, arena);
        free(arena);
    }
    for (int b = 1; b < 3; b++) {
        char what[64];
        snprintf(what, sizeof what, "init (jit vs %s)", names[b]);
        for (int k = 0; k < e.pl.n; k++) {
            char label[256];
            snprintf(label, sizeof label, "%s: %s", what, e.pl.p[k].name);
            check_rel_max(label, pi[0] + e.pl.p[k].offset, pi[b] + e.pl.p[k].offset, (size_t)e.pl.p[k].numel, 1e-4);
        }
    }
    /* training step with dropout, every backend on the JIT's initialised parameters */
    for (int b = 0; b < 3; b++) {
        l[b] = malloc((size_t)nout * 4);
        grad[b] = malloc((size_t)np * 4);
        void *arena = arena_for(ms[b], n);
        loss[b] = ms[b]->forward(pi[0], x, labels, n, 1234, 1, arena, l[b], NULL);
        ms[b]->backward(pi[0], x, labels, n, arena, grad[b]);
        free(arena);
    }
    for (int b = 1; b < 3; b++) {
        char what[64];
        snprintf(what, sizeof what, "jit vs %s", names[b]);
        check_loss(what, loss[0], loss[b], 1e-5);
        double lw = check_rel_max(what, l[0], l[b], (size_t)nout, 1e-5);
        double gw = check_grads(what, &e.pl, grad[0], grad[b], 1e-4);
        print_message("%s: loss %.9g vs %.9g (rel %.2g), l %.2g of its max, worst gradient %.2g of its max\n", what,
                      loss[0], loss[b], fabs(loss[0] - loss[b]) / fabs(loss[b]), lw, gw);
    }
    /* dropout is on: another seed gives another loss */
    void *arena = arena_for(e.m, n);
    double other = e.m->forward(pi[0], x, labels, n, 99, 1, arena, NULL, NULL);
    assert_true(fabs(other - loss[0]) > 1e-3 * fabs(loss[0]));
    free(arena);

    for (int b = 0; b < 3; b++) free(pi[b]), free(l[b]), free(grad[b]);
    free(p0);
    free(x);
    rm->release(rm);
    emitc_unload(&em);
    snprintf(err, sizeof err, "rm -rf %s", dir);
    assert_int_equal(system(err), 0);
    net_free(&e);
}

/* ---- from the object cache ------------------------------------------------------------------------- */

static void test_cached_model(void **state) {
    char dir[] = "/tmp/pxc_test_jit_model_cache_XXXXXX";
    assert_non_null(mkdtemp(dir));
    JitOptions o = jit_options_default();
    o.cache_dir = dir;
    const VecCase *vc = &vec_cases[1];
    Net a, b;
    net_build(&a, vc->sets, 8, &o);
    assert_false(jit_model_timings(a.m)->cache_hit);
    net_build(&b, vc->sets, 8, &o);
    assert_true(jit_model_timings(b.m)->cache_hit);
    const int n = 2;
    int64_t np = a.pl.total, npix = (int64_t)n * a.g.H * a.g.W, nout = npix * a.m->out_channels;
    float *params = malloc((size_t)np * 4), *x = malloc((size_t)(npix * a.g.C) * 4);
    fill_params(&a.pl, params);
    for (int64_t i = 0; i < npix * a.g.C; i++) x[i] = (float)(i % 17) / 8.0f - 1.0f;
    float *la = malloc((size_t)nout * 4), *lb = malloc((size_t)nout * 4);
    float *ga = malloc((size_t)np * 4), *gb = malloc((size_t)np * 4);
    void *arena = arena_for(a.m, n);
    double lossa = a.m->forward(params, x, NULL, n, 5, 1, arena, la, NULL);
    a.m->backward(params, x, NULL, n, arena, ga);
    double lossb = b.m->forward(params, x, NULL, n, 5, 1, arena, lb, NULL);
    b.m->backward(params, x, NULL, n, arena, gb);
    assert_true(lossa == lossb);
    assert_memory_equal(la, lb, (size_t)nout * 4);
    assert_memory_equal(ga, gb, (size_t)np * 4);
    free(arena), free(params), free(x), free(la), free(lb), free(ga), free(gb);
    net_free(&a);
    net_free(&b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pytorch_vectors),
        cmocka_unit_test(test_emitted_c_and_reference),
        cmocka_unit_test(test_cached_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
