/*
 * test_ref_model.c — the whole network on the reference backend against the
 * independent PyTorch vectors of shared/reference/model: the graph comes
 * from models/pixelcnnpp_cifar10.yaml with --set overrides, the weights from
 * weights.safetensors (matched by name), and the raw output l, the
 * per-image NLL, the loss, d loss/d l and every parameter gradient
 * (autodiff + ref_backward) must match to the float64 bound of the README:
 * 1e-7·|expected| + 1e-9·max|that tensor| per element.
 *
 * Then the pxc_model adapter over the same executor (float in and out) must
 * reproduce those double results up to float rounding.
 */
#include "test_ref_util.h"

#include <cjson/cJSON.h>

typedef struct Case {
    const char *name;
    const char *sets[8];
} Case;

static const Case cases[] = {
    {"c3_r1_f8_m2_8x8",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=0", "dropout=0"}},
    {"c1_r1_f8_m3_8x8",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=3", "height=8", "width=8", "channels=1", "classes=0", "dropout=0"}},
    {"c3_r1_f8_m2_8x8_cond4",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=4", "dropout=0"}},
};

/* A safetensors file held in memory: its parsed header and data. */
typedef struct St {
    char *buf;
    size_t len;
    cJSON *hdr;
    const unsigned char *data;
} St;

static void st_open(St *st, const char *path) {
    st->buf = tu_read_file(path, &st->len);
    if (!st->buf || st->len < 8) fail_msg("cannot read %s", path);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | (unsigned char)st->buf[i];
    if (8 + hl > st->len) fail_msg("%s: header length %llu past the end", path, (unsigned long long)hl);
    st->hdr = cJSON_ParseWithLength(st->buf + 8, (size_t)hl);
    if (!st->hdr) fail_msg("%s: bad JSON header", path);
    st->data = (const unsigned char *)st->buf + 8 + hl;
}

static void st_close(St *st) {
    cJSON_Delete(st->hdr);
    free(st->buf);
}

/* The F32 tensor `name` as doubles; its shape must be `shape`. */
static void st_get(const St *st, const char *name, Shape shape, double *out) {
    cJSON *t = cJSON_GetObjectItemCaseSensitive(st->hdr, name);
    if (!t) fail_msg("tensor %s missing from the reference file", name);
    cJSON *sh = cJSON_GetObjectItem(t, "shape"), *off = cJSON_GetObjectItem(t, "data_offsets");
    if (cJSON_GetArraySize(sh) != shape.rank) fail_msg("%s: rank %d, graph says %d", name, cJSON_GetArraySize(sh), shape.rank);
    for (int k = 0; k < shape.rank; k++)
        if ((int64_t)cJSON_GetArrayItem(sh, k)->valuedouble != shape.d[k]) fail_msg("%s: dimension %d differs", name, k);
    size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    int64_t n = shape_numel(shape);
    for (int64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, st->data + b + 4 * (size_t)i, 4);
        out[i] = f;
    }
}

/* max over a tensor of |got - want| / (1e-7 |want| + 1e-9 max|want|) */
static double worst_ratio(const double *got, const double *want, int64_t n) {
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double tol = 1e-7 * fabs(want[i]) + 1e-9 * mx;
        double r = fabs(got[i] - want[i]) / (tol > 0 ? tol : 1e-300);
        if (got[i] == want[i]) r = 0;
        worst = fmax(worst, r);
    }
    return worst;
}

static double *read_f64(const char *dir, const char *name, size_t count) {
    float *f = tu_read_f32(tu_path(dir, name), count);
    double *d = malloc(count * sizeof(double));
    for (size_t i = 0; i < count; i++) d[i] = f[i];
    free(f);
    return d;
}

static void run_case(void **state) {
    const Case *c = *state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model/%s", tu_reference_dir(), c->name);
    Graph g;
    net_compile(&g, "pixelcnnpp_cifar10", c->sets, 8);
    DiagList dl;
    diag_init(&dl);
    assert_true(ad_differentiate(&g, false, &dl));
    assert_true(ir_verify(&g, &dl));

    const int N = 2;
    int H = g.H, W = g.W, C = g.C, K = (int)tb_shape(&g, g.out)->d[2];
    size_t npix = (size_t)N * H * W;
    ParamLayout pl = ir_param_layout(&g);
    double *params = malloc((size_t)pl.total * sizeof(double)), *grad_want = malloc((size_t)pl.total * sizeof(double));
    double *grad = malloc((size_t)pl.total * sizeof(double));
    St ws, gs;
    st_open(&ws, tu_path(dir, "weights.safetensors"));
    st_open(&gs, tu_path(dir, "grads.safetensors"));
    /* every tensor of the file is a parameter of the graph, in the same order */
    int k = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, ws.hdr) {
        if (!strcmp(it->string, "__metadata__")) continue;
        if (k >= pl.n || strcmp(it->string, pl.p[k].name))
            fail_msg("tensor %d of the file is %s, the graph's is %s", k, it->string, k < pl.n ? pl.p[k].name : "(none)");
        k++;
    }
    assert_int_equal(k, pl.n);
    for (int p = 0; p < pl.n; p++) {
        st_get(&ws, pl.p[p].name, pl.p[p].shape, params + pl.p[p].offset);
        st_get(&gs, pl.p[p].name, pl.p[p].shape, grad_want + pl.p[p].offset);
    }
    double *x = read_f64(dir, "x.bin", npix * C);
    int32_t labels[2] = {0, 0};
    if (g.classes) {
        size_t nb;
        int32_t *lb = tu_read_file(tu_path(dir, "labels.bin"), &nb);
        assert_true(lb && nb == sizeof labels);
        memcpy(labels, lb, sizeof labels);
        free(lb);
    }
    double *l_want = read_f64(dir, "l.bin", npix * K), *gl_want = read_f64(dir, "grad_l.bin", npix * K);
    double *nll_img_want = read_f64(dir, "nll_image.bin", N);

    RefExec *e = ref_new(&g, N);
    double loss = ref_forward(e, params, x, g.classes ? labels : NULL, 0, true);
    ref_backward(e);
    ref_grads(e, grad);

    /* the loss in full precision from the manifest */
    size_t mlen;
    char *mtext = tu_read_file(tu_path(tu_path(tu_reference_dir(), "model"), "manifest.json"), &mlen);
    cJSON *man = cJSON_Parse(mtext), *mc;
    double loss_nats = NAN;
    cJSON_ArrayForEach(mc, cJSON_GetObjectItem(man, "cases"))
        if (!strcmp(cJSON_GetObjectItem(mc, "name")->valuestring, c->name))
            loss_nats = cJSON_GetObjectItem(mc, "loss_nats")->valuedouble;
    cJSON_Delete(man);
    free(mtext);

    double nll_img[2] = {0, 0};
    const double *nll = ref_value(e, g.nll);
    for (size_t p = 0; p < npix; p++) nll_img[p / (npix / N)] += nll[p];
    double r_l = worst_ratio(ref_value(e, g.out), l_want, (int64_t)(npix * K));
    double r_gl = worst_ratio(ref_value(e, g.grad[g.out]), gl_want, (int64_t)(npix * K));
    double r_nll = worst_ratio(nll_img, nll_img_want, N), r_grad = 0;
    const char *worst_name = "";
    for (int p = 0; p < pl.n; p++) {
        double r = worst_ratio(grad + pl.p[p].offset, grad_want + pl.p[p].offset, pl.p[p].numel);
        if (r > r_grad) r_grad = r, worst_name = pl.p[p].name;
    }
    printf("  %s: loss %.10f (manifest %.10f, rel %.1e); of the tolerance 1e-7|v| + 1e-9 max|v|: "
           "l %.3f, nll_image %.3f, grad_l %.3f, grads %.3f (worst %s)\n",
           c->name, loss, loss_nats, fabs(loss - loss_nats) / loss_nats, r_l, r_nll, r_gl, r_grad, worst_name);
    assert_true(fabs(loss - loss_nats) <= 1e-10 * loss_nats);
    assert_true(r_l <= 1 && r_nll <= 1 && r_gl <= 1 && r_grad <= 1);

    /* the float adapter: same arithmetic, float at the boundary */
    char err[256];
    pxc_model *m = ref_model_new(&g, 4, err, sizeof err);
    if (!m) fail_msg("ref_model_new: %s", err);
    assert_int_equal(m->nparams, pl.total);
    assert_int_equal(m->nparam_tensors, pl.n);
    assert_string_equal(m->params[0].name, pl.p[0].name);
    assert_int_equal(m->out_channels, K);
    float *pf = malloc((size_t)pl.total * sizeof(float)), *gf = malloc((size_t)pl.total * sizeof(float));
    float *xf = malloc(npix * C * sizeof(float)), *lf = malloc(npix * K * sizeof(float));
    float *nllf = malloc(npix * sizeof(float)), *dlf = malloc(npix * K * sizeof(float));
    for (int64_t i = 0; i < pl.total; i++) pf[i] = (float)params[i];
    for (size_t i = 0; i < npix * C; i++) xf[i] = (float)x[i];
    void *arena = aligned_alloc(64, (m->arena_bytes(N) + 63) / 64 * 64);
    double lossf = m->forward(pf, xf, g.classes ? labels : NULL, N, 0, 1, arena, lf, nllf);
    m->backward(pf, xf, g.classes ? labels : NULL, N, arena, gf);
    assert_true(lossf == loss);
    for (size_t i = 0; i < npix * K; i++) assert_true(lf[i] == (float)ref_value(e, g.out)[i]);
    for (size_t i = 0; i < npix; i++) assert_true(nllf[i] == (float)nll[i]);
    for (int64_t i = 0; i < pl.total; i++) assert_true(gf[i] == (float)grad[i]);
    /* the likelihood alone on the network's output */
    double lossl = m->loss(lf, xf, N, dlf, NULL);
    assert_true(fabs(lossl - loss) <= 1e-6 * loss);
    double gmax = 0;
    for (size_t i = 0; i < npix * K; i++) gmax = fmax(gmax, fabs(gl_want[i]));
    for (size_t i = 0; i < npix * K; i++) assert_true(fabs(dlf[i] - gl_want[i]) <= 1e-4 * gmax);
    m->release(m);
    free(arena), free(pf), free(gf), free(xf), free(lf), free(nllf), free(dlf);

    ref_free(e);
    st_close(&ws);
    st_close(&gs);
    free(params), free(grad_want), free(grad), free(x), free(l_want), free(gl_want), free(nll_img_want);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    struct CMUnitTest tests[3];
    memset(tests, 0, sizeof tests);
    for (int i = 0; i < 3; i++) {
        tests[i].name = cases[i].name;
        tests[i].test_func = run_case;
        tests[i].initial_state = (void *)&cases[i];
    }
    return _cmocka_run_group_tests("ref_model", tests, 3, NULL, NULL);
}
