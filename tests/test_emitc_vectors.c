/*
 * test_emitc_vectors.c — standalone C emitted from the three small networks
 * of shared/reference/model (models/pixelcnnpp_cifar10.yaml, R=1, F=8,
 * 8x8x3, 8x8x1, 8x8x3 with 4 classes), compiled with `cc -std=c11 -O2 -Wall
 * -Wextra -Werror` and OpenBLAS, against the independent PyTorch vectors
 * (weights, images, l, per-pixel nll, loss, d loss/d l, every parameter
 * gradient): loss within 1e-5 relative, l and nll within 1e-5 of their max,
 * d loss/d l and every gradient tensor within 1e-4 of its max.
 */
#include "test_emitc_util.h"

#include "safetensors.h"

/* ---- the PyTorch vectors ------------------------------------------------------------ */

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

static float *read_f32(const char *dir, const char *name, int64_t n) {
    return tu_read_f32(tu_path(dir, name), (size_t)n);
}

/* tensor `name` of st into dst[numel] (float), its shape checked */
static void st_copy(RtSafetensors *st, const ParamEntry *pe, float *dst) {
    const RtStTensor *t = rt_st_find(st, pe->name);
    if (!t) fail_msg("tensor %s missing from the reference file", pe->name);
    assert_int_equal(t->dtype, RT_ST_F32);
    assert_int_equal(rt_st_numel(t), pe->numel);
    memcpy(dst, t->data, (size_t)pe->numel * 4);
}

static void test_reference_vectors(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof vec_cases / sizeof vec_cases[0]; c++) {
        const VecCase *vc = &vec_cases[c];
        printf("%s\n", vc->name);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/model/%s", tu_reference_dir(), vc->name);
        EmNet e;
        em_build(&e, "pixelcnnpp_cifar10", vc->sets, 8, NULL);
        pxc_model *pm = e.m.model;
        const Graph *g = &e.g;
        int n = 2;
        int64_t np = e.pl.total, npix = (int64_t)n * g->H * g->W, nout = npix * pm->out_channels;
        char err[512];
        RtSafetensors *wst = rt_st_open(tu_path(dir, "weights.safetensors"), err, sizeof err);
        RtSafetensors *gst = rt_st_open(tu_path(dir, "grads.safetensors"), err, sizeof err);
        if (!wst || !gst) fail_msg("%s", err);
        float *params = malloc((size_t)np * 4), *want_g = malloc((size_t)np * 4);
        for (int k = 0; k < e.pl.n; k++) {
            st_copy(wst, &e.pl.p[k], params + e.pl.p[k].offset);
            st_copy(gst, &e.pl.p[k], want_g + e.pl.p[k].offset);
        }
        float *x = read_f32(dir, "x.bin", npix * g->C), *want_l = read_f32(dir, "l.bin", nout);
        float *want_nll = read_f32(dir, "nll_pixel.bin", npix), *want_loss = read_f32(dir, "loss.bin", 1);
        float *want_dl = read_f32(dir, "grad_l.bin", nout);
        int32_t *labels = NULL;
        if (g->classes > 0) {
            size_t len = 0;
            labels = tu_read_file(tu_path(dir, "labels.bin"), &len);
            assert_true(labels && len == (size_t)n * 4);
        }
        EmArena ar = em_arena(pm->arena_bytes(n));
        float *l = malloc((size_t)nout * 4), *nll = malloc((size_t)npix * 4), *grad = malloc((size_t)np * 4);
        double loss = pm->forward(params, x, labels, n, 1, 1, ar.p, l, nll);
        em_arena_check(&ar);
        printf("  loss %.9g, PyTorch %.9g\n", loss, (double)want_loss[0]);
        assert_true(fabs(loss - want_loss[0]) <= 1e-5 * fabs(want_loss[0]));
        double *dwant = malloc((size_t)(nout > np ? nout : np) * sizeof(double));
        for (int64_t i = 0; i < nout; i++) dwant[i] = want_l[i];
        assert_true(em_rel(l, dwant, nout, NULL) <= 1e-5);
        for (int64_t i = 0; i < npix; i++) dwant[i] = want_nll[i];
        assert_true(em_rel(nll, dwant, npix, NULL) <= 1e-5);
        memset(grad, 0xff, (size_t)np * 4);
        pm->backward(params, x, labels, n, ar.p, grad);
        em_arena_check(&ar);
        for (int64_t i = 0; i < np; i++) dwant[i] = want_g[i];
        em_check_grads(&e, grad, dwant, 1e-4, vc->name);
        /* the likelihood entry on the reference l */
        float *dl = malloc((size_t)nout * 4);
        double loss2 = pm->loss(want_l, x, n, dl, NULL);
        assert_true(fabs(loss2 - want_loss[0]) <= 1e-5 * fabs(want_loss[0]));
        for (int64_t i = 0; i < nout; i++) dwant[i] = want_dl[i];
        double rdl = em_rel(dl, dwant, nout, NULL);
        printf("  d loss / d l within %.2g of its max\n", rdl);
        assert_true(rdl <= 1e-4);
        rt_st_close(wst);
        rt_st_close(gst);
        free(params), free(want_g), free(x), free(want_l), free(want_nll), free(want_loss), free(want_dl);
        free(labels), free(l), free(nll), free(grad), free(dl), free(dwant), free(ar.p);
        em_free(&e);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
