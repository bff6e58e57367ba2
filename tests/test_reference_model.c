/*
 * test_reference_model.c — whole-model parity with an independent
 * implementation, and the runtime causality probe.
 *
 * For every case listed in $PXC_REFERENCE_DIR/model/manifest.json (any
 * sizes, any number of cases): build models/pixelcnnpp_cifar10.yaml with
 * --set overrides from the case's config.json, import weights.safetensors by
 * name (pxc's parameter names are the reference naming scheme), and check
 * against the case's files:
 *   - the reference backend in double: raw output l, per-pixel and
 *     per-image NLL, the loss and every parameter gradient, each element
 *     within 1e-7·|expected| + 1e-9·max|tensor| (the README's float64 bound;
 *     the expected values are float64 results rounded to float32, so the
 *     first term is at least the float32 rounding);
 *   - every pxc_model back end in float (the reference adapter here; the
 *     compiled back ends in their own tests): loss and nll_image within
 *     1e-4 relative, l within 2e-5·max|l|, every gradient tensor within
 *     3e-3·max|tensor| element by element (the README's float32 bounds).
 * The causality probe seeds backward with a random vector on the network
 * output at one pixel p and checks that the gradient reaching the input
 * image is exactly zero at p and at every later pixel (all channels), and
 * non-zero somewhere before p.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "autodiff/autodiff.h"
#include "ir/ir.h"
#include "ref/ref.h"
#include "safetensors.h"
#include "spec/spec.h"

typedef struct Case {
    char name[128];
    char dir[4096];
    int N, H, W, C, R, F, M, classes, K;
    double loss_nats;
    double nll_image[64];
} Case;

static int load_cases(Case **out) {
    const char *ref = tu_reference_dir();
    char *text = tu_read_file(tu_path(ref, "model/manifest.json"), NULL);
    if (!text) fail_msg("no manifest at %s/model/manifest.json (set PXC_REFERENCE_DIR)", ref);
    cJSON *m = cJSON_Parse(text);
    free(text);
    assert_non_null(m);
    cJSON *cases = cJSON_GetObjectItem(m, "cases");
    int n = cJSON_GetArraySize(cases);
    if (n < 1) fail_msg("the model manifest lists no case");
    Case *cs = calloc((size_t)(n > 0 ? n : 1), sizeof *cs);
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_GetArrayItem(cases, i);
        Case *k = &cs[i];
        snprintf(k->name, sizeof k->name, "%s", cJSON_GetObjectItem(c, "name")->valuestring);
        snprintf(k->dir, sizeof k->dir, "%s/model/%s", ref, k->name);
        char *ctext = tu_read_file(tu_path(k->dir, "config.json"), NULL);
        if (!ctext) fail_msg("%s: no config.json", k->name);
        cJSON *cfg = cJSON_Parse(ctext);
        free(ctext);
        k->N = cJSON_GetObjectItem(cfg, "N")->valueint;
        k->H = cJSON_GetObjectItem(cfg, "H")->valueint;
        k->W = cJSON_GetObjectItem(cfg, "W")->valueint;
        k->C = cJSON_GetObjectItem(cfg, "C")->valueint;
        k->R = cJSON_GetObjectItem(cfg, "nr_resnet")->valueint;
        k->F = cJSON_GetObjectItem(cfg, "nr_filters")->valueint;
        k->M = cJSON_GetObjectItem(cfg, "nr_mix")->valueint;
        k->classes = cJSON_GetObjectItem(cfg, "classes")->valueint;
        k->K = cJSON_GetObjectItem(cfg, "K")->valueint;
        cJSON_Delete(cfg);
        k->loss_nats = cJSON_GetObjectItem(c, "loss_nats")->valuedouble;
        cJSON *ni = cJSON_GetObjectItem(c, "nll_image_nats");
        assert_true(cJSON_GetArraySize(ni) == k->N && k->N <= 64);
        for (int j = 0; j < k->N; j++) k->nll_image[j] = cJSON_GetArrayItem(ni, j)->valuedouble;
    }
    cJSON_Delete(m);
    *out = cs;
    return n;
}

/* The shipped spec with the case's sizes; differentiated (with dx). */
static void build_graph(const Case *k, Graph *g) {
    char sets[8][64];
    snprintf(sets[0], 64, "nr_resnet=%d", k->R);
    snprintf(sets[1], 64, "nr_filters=%d", k->F);
    snprintf(sets[2], 64, "nr_mix=%d", k->M);
    snprintf(sets[3], 64, "height=%d", k->H);
    snprintf(sets[4], 64, "width=%d", k->W);
    snprintf(sets[5], 64, "channels=%d", k->C);
    snprintf(sets[6], 64, "classes=%d", k->classes);
    snprintf(sets[7], 64, "dropout=0");
    const char *sp[8];
    for (int i = 0; i < 8; i++) sp[i] = sets[i];
    DiagList dl;
    diag_init(&dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/pixelcnnpp_cifar10.yaml", tu_source_dir());
    if (spec_compile(path, sp, 8, g, &dl) != 0 || !ad_differentiate(g, true, &dl)) {
        diag_print(&dl, stderr, false);
        fail_msg("%s: the spec does not build", k->name);
    }
    diag_free(&dl);
    assert_int_equal(shape_numel(g->nodes[g->out].shape), (int64_t)k->H * k->W * k->K);
}

/* Import a safetensors file by pxc's parameter names into a flat buffer. */
static double *import_params(const Case *k, const ParamLayout *pl, const char *file) {
    char err[512];
    RtSafetensors *st = rt_st_open(tu_path(k->dir, file), err, sizeof err);
    if (!st) fail_msg("%s", err);
    if (rt_st_count(st) != pl->n)
        fail_msg("%s/%s holds %d tensors, the spec has %d parameters", k->name, file, rt_st_count(st), pl->n);
    double *p = calloc((size_t)pl->total, sizeof(double));
    for (int i = 0; i < pl->n; i++) {
        const RtStTensor *t = rt_st_find(st, pl->p[i].name);
        if (!t) fail_msg("%s/%s has no tensor '%s'", k->name, file, pl->p[i].name);
        if (t->dtype != RT_ST_F32 || t->rank != pl->p[i].shape.rank) fail_msg("%s: '%s' dtype/rank", k->name, t->name);
        for (int d = 0; d < t->rank; d++)
            if (t->shape[d] != pl->p[i].shape.d[d]) fail_msg("%s: '%s' has another shape", k->name, t->name);
        const float *src = t->data;
        for (int64_t e = 0; e < pl->p[i].numel; e++) p[pl->p[i].offset + e] = src[e];
    }
    rt_st_close(st);
    return p;
}

static double *read_f32_as_f64(const char *path, size_t count) {
    float *f = tu_read_f32(path, count);
    double *d = malloc(count * sizeof(double));
    for (size_t i = 0; i < count; i++) d[i] = f[i];
    free(f);
    return d;
}

/* Every element within 1e-7|e| + 1e-9 max|e|; returns the worst ratio of
 * error to bound (<= 1 passes). */
static double f64_check(const double *got, const double *exp, size_t n) {
    double mx = 0, worst = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(exp[i]));
    for (size_t i = 0; i < n; i++) {
        double bound = 1e-7 * fabs(exp[i]) + 1e-9 * mx;
        double r = fabs(got[i] - exp[i]) / (bound > 0 ? bound : 1e-300);
        if (!(r <= worst)) worst = r;
    }
    return worst;
}

static void test_model_parity_f64(void **state) {
    (void)state;
    Case *cs;
    int ncases = load_cases(&cs);
    for (int ci = 0; ci < ncases; ci++) {
        const Case *k = &cs[ci];
        Graph g;
        build_graph(k, &g);
        ParamLayout pl = ir_param_layout(&g);
        double *params = import_params(k, &pl, "weights.safetensors");
        double *gexp = import_params(k, &pl, "grads.safetensors");
        size_t nx = (size_t)k->N * k->H * k->W * k->C, npix = (size_t)k->N * k->H * k->W;
        double *x = read_f32_as_f64(tu_path(k->dir, "x.bin"), nx);
        int32_t *labels = NULL;
        if (k->classes) {
            size_t nb = 0;
            labels = tu_read_file(tu_path(k->dir, "labels.bin"), &nb);
            assert_true(labels && nb == (size_t)k->N * 4);
        }
        RefExec *e = ref_new(&g, k->N);
        double loss = ref_forward(e, params, x, labels, 0, false);
        double *lexp = read_f32_as_f64(tu_path(k->dir, "l.bin"), npix * (size_t)k->K);
        double *nexp = read_f32_as_f64(tu_path(k->dir, "nll_pixel.bin"), npix);
        double rl = f64_check(ref_value(e, g.out), lexp, npix * (size_t)k->K);
        double rn = f64_check(ref_value(e, g.nll), nexp, npix);
        double loss_rel = fabs(loss - k->loss_nats) / k->loss_nats, img_rel = 0;
        const double *nll = ref_value(e, g.nll);
        for (int b = 0; b < k->N; b++) {
            double s = 0;
            for (int p = 0; p < k->H * k->W; p++) s += nll[b * k->H * k->W + p];
            img_rel = fmax(img_rel, fabs(s - k->nll_image[b]) / k->nll_image[b]);
        }
        ref_backward(e);
        double *grad = calloc((size_t)pl.total, sizeof(double));
        ref_grads(e, grad);
        double rg = 0;
        const char *worst = "";
        for (int i = 0; i < pl.n; i++) {
            double r = f64_check(grad + pl.p[i].offset, gexp + pl.p[i].offset, (size_t)pl.p[i].numel);
            if (r > rg) rg = r, worst = pl.p[i].name;
        }
        printf("%s (f64 reference backend): loss rel %.2e, nll_image rel %.2e; error/bound: l %.3f, nll_pixel %.3f, "
               "grads %.3f (worst %s)\n", k->name, loss_rel, img_rel, rl, rn, rg, worst);
        assert_true(loss_rel < 1e-9);
        assert_true(img_rel < 1e-9);
        assert_true(rl <= 1 && rn <= 1 && rg <= 1);
        ref_free(e);
        free(grad), free(lexp), free(nexp), free(x), free(labels), free(params), free(gexp);
        ir_param_layout_free(&pl);
        ir_graph_free(&g);
    }
    free(cs);
}

/* Element-wise max |a - e| / max|e| over a tensor. */
static double rel_to_max_f(const float *a, const double *e, size_t n) {
    double mx = 0, md = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(e[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - e[i]);
        if (!(d <= md)) md = d;
    }
    return mx > 0 ? md / mx : md;
}

/* Check one float pxc_model against a case; used for every back end. */
static void check_model_f32(const Case *k, pxc_model *m, const ParamLayout *pl, const char *backend) {
    double *pd = import_params(k, pl, "weights.safetensors");
    double *gexp = import_params(k, pl, "grads.safetensors");
    float *params = malloc(sizeof(float) * (size_t)pl->total);
    for (int64_t i = 0; i < pl->total; i++) params[i] = (float)pd[i];
    size_t nx = (size_t)k->N * k->H * k->W * k->C, npix = (size_t)k->N * k->H * k->W;
    float *x = tu_read_f32(tu_path(k->dir, "x.bin"), nx);
    int32_t *labels = k->classes ? tu_read_file(tu_path(k->dir, "labels.bin"), NULL) : NULL;
    void *arena = aligned_alloc(64, (m->arena_bytes(k->N) + 63) / 64 * 64 + 64);
    float *l = malloc(sizeof(float) * npix * (size_t)k->K), *nll = malloc(sizeof(float) * npix);
    float *grad = malloc(sizeof(float) * (size_t)pl->total);
    double loss = m->forward(params, x, labels, k->N, 0, 1, arena, l, nll);
    m->backward(params, x, labels, k->N, arena, grad);
    double *lexp = read_f32_as_f64(tu_path(k->dir, "l.bin"), npix * (size_t)k->K);
    double rl = rel_to_max_f(l, lexp, npix * (size_t)k->K), img_rel = 0, rg = 0;
    for (int b = 0; b < k->N; b++) {
        double s = 0;
        for (int p = 0; p < k->H * k->W; p++) s += nll[b * k->H * k->W + p];
        img_rel = fmax(img_rel, fabs(s - k->nll_image[b]) / k->nll_image[b]);
    }
    const char *worst = "";
    for (int i = 0; i < pl->n; i++) {
        double r = rel_to_max_f(grad + pl->p[i].offset, gexp + pl->p[i].offset, (size_t)pl->p[i].numel);
        if (r > rg) rg = r, worst = pl->p[i].name;
    }
    double loss_rel = fabs(loss - k->loss_nats) / k->loss_nats;
    printf("%s (%s, float): loss rel %.2e, nll_image rel %.2e, l %.2e of max, worst gradient %.2e of its max (%s)\n",
           k->name, backend, loss_rel, img_rel, rl, rg, worst);
    assert_true(loss_rel <= 1e-4);
    assert_true(img_rel <= 1e-4);
    assert_true(rl <= 2e-5);
    assert_true(rg <= 3e-3);
    free(pd), free(gexp), free(params), free(x), free(labels), free(arena), free(l), free(nll), free(grad), free(lexp);
}

static void test_model_parity_f32_ref_adapter(void **state) {
    (void)state;
    Case *cs;
    int ncases = load_cases(&cs);
    for (int ci = 0; ci < ncases; ci++) {
        Graph g;
        build_graph(&cs[ci], &g);
        ParamLayout pl = ir_param_layout(&g);
        char err[512];
        pxc_model *m = ref_model_new(&g, cs[ci].N, err, sizeof err);
        if (!m) fail_msg("%s", err);
        assert_int_equal(m->nparams, pl.total);
        check_model_f32(&cs[ci], m, &pl, "reference adapter");
        if (m->release) m->release(m);
        ir_param_layout_free(&pl);
        ir_graph_free(&g);
    }
    free(cs);
}

/* The causality probe: d(sum_k r_k l[b,p,k]) / dx is exactly 0 at p and
 * after (every channel), for each image b, and non-zero before p. */
static void test_runtime_causality_probe(void **state) {
    (void)state;
    Case *cs;
    int ncases = load_cases(&cs);
    for (int ci = 0; ci < ncases; ci++) {
        const Case *k = &cs[ci];
        Graph g;
        build_graph(k, &g);
        assert_true(g.dx >= 0 && g.grad[g.out] >= 0);
        ParamLayout pl = ir_param_layout(&g);
        double *params = import_params(k, &pl, "weights.safetensors");
        size_t nx = (size_t)k->N * k->H * k->W * k->C;
        double *x = read_f32_as_f64(tu_path(k->dir, "x.bin"), nx);
        int32_t *labels = k->classes ? tu_read_file(tu_path(k->dir, "labels.bin"), NULL) : NULL;
        RefExec *e = ref_new(&g, k->N);
        ref_forward(e, params, x, labels, 0, false);
        size_t nl = (size_t)k->N * k->H * k->W * k->K;
        double *seed = calloc(nl, sizeof(double));
        int HW = k->H * k->W, probes = 0;
        for (int p = 0; p < HW; p += (p < 2 * k->W ? 1 : 3)) {
            memset(seed, 0, nl * sizeof(double));
            for (int b = 0; b < k->N; b++)
                for (int q = 0; q < k->K; q++) seed[((size_t)b * HW + p) * k->K + q] = sin(1.0 + p + 7.0 * q + 13.0 * b);
            ref_backward_from(e, g.grad[g.out], seed);
            const double *dx = ref_value(e, g.dx);
            for (int b = 0; b < k->N; b++) {
                double before = 0;
                for (int r = 0; r < HW; r++)
                    for (int c = 0; c < k->C; c++) {
                        double v = dx[((size_t)b * HW + r) * k->C + c];
                        if (r >= p && v != 0)
                            fail_msg("%s: output pixel %d of image %d depends on input pixel %d channel %d (gradient %g)",
                                     k->name, p, b, r, c, v);
                        if (r < p) before += fabs(v);
                    }
                if (p > 0 && !(before > 0))
                    fail_msg("%s: output pixel %d of image %d depends on no earlier pixel", k->name, p, b);
            }
            probes++;
        }
        printf("%s: causality probe at %d output pixels: no dependency on the pixel itself or later ones\n", k->name,
               probes);
        ref_free(e);
        free(seed), free(x), free(labels), free(params);
        ir_param_layout_free(&pl);
        ir_graph_free(&g);
    }
    free(cs);
}

/* The same probe on every shipped spec at a small size, random weights. */
static void test_runtime_causality_probe_shipped(void **state) {
    (void)state;
    static const char *specs[] = {"models/pixelcnnpp_cifar10.yaml", "models/pixelcnnpp_cifar10_conditional.yaml",
                                  "models/fashion_mnist.yaml", "models/fashion_mnist_conditional.yaml",
                                  "models/ablations/no_shortcuts.yaml", "models/ablations/no_dropout.yaml",
                                  "models/ablations/softmax256.yaml", "models/ablations/no_downsampling.yaml"};
    const char *sets[] = {"nr_resnet=1", "nr_filters=4", "nr_mix=2", "height=8", "width=8", "dropout=0"};
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", tu_source_dir(), specs[si]);
        Graph g;
        DiagList dl;
        diag_init(&dl);
        if (spec_compile(path, sets, 6, &g, &dl) != 0 || !ad_differentiate(&g, true, &dl)) {
            diag_print(&dl, stderr, false);
            fail_msg("%s does not build", specs[si]);
        }
        diag_free(&dl);
        ParamLayout pl = ir_param_layout(&g);
        double *params = malloc(sizeof(double) * (size_t)pl.total);
        for (int64_t i = 0; i < pl.total; i++) params[i] = 0.5 * sin(0.37 * (double)i + 1.0);
        int N = 2, HW = g.H * g.W, K = (int)g.nodes[g.out].shape.d[2];
        size_t nx = (size_t)N * HW * g.C, nl = (size_t)N * HW * K;
        double *x = malloc(nx * sizeof(double)), *seed = malloc(nl * sizeof(double));
        for (size_t i = 0; i < nx; i++) x[i] = sin(1.7 * (double)i);
        int32_t labels[2] = {0, g.classes > 1 ? 1 : 0};
        RefExec *e = ref_new(&g, N);
        ref_forward(e, params, x, g.classes ? labels : NULL, 0, false);
        int blind = 0;   /* output pixels that see no earlier pixel (an ablation may have some) */
        for (int p = 0; p < HW; p++) {
            memset(seed, 0, nl * sizeof(double));
            for (int b = 0; b < N; b++)
                for (int q = 0; q < K; q++) seed[((size_t)b * HW + p) * K + q] = cos(p + 3.0 * q + 5.0 * b);
            ref_backward_from(e, g.grad[g.out], seed);
            const double *dx = ref_value(e, g.dx);
            for (int b = 0; b < N; b++) {
                double before = 0;
                for (int r = 0; r < HW; r++)
                    for (int c = 0; c < g.C; c++) {
                        double v = dx[((size_t)b * HW + r) * g.C + c];
                        if (r >= p && v != 0)
                            fail_msg("%s: output pixel %d depends on input pixel %d channel %d", specs[si], p, r, c);
                        if (r < p) before += fabs(v);
                    }
                if (p > 0 && !(before > 0)) {
                    blind++;
                    if (p == HW - 1) fail_msg("%s: the last output pixel sees no earlier pixel", specs[si]);
                }
            }
        }
        printf("%s (8x8, R=1, F=4): every output pixel depends on earlier pixels only (%d of %d see none)\n",
               specs[si], blind / N, HW - 1);
        ref_free(e);
        free(params), free(x), free(seed);
        ir_param_layout_free(&pl);
        ir_graph_free(&g);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_parity_f64),
        cmocka_unit_test(test_model_parity_f32_ref_adapter),
        cmocka_unit_test(test_runtime_causality_probe),
        cmocka_unit_test(test_runtime_causality_probe_shipped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
