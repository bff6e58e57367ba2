/*
 * test_reference_loss.c — the discretized logistic mixture (runtime/loss.h)
 * against the independent reference vectors in
 * $PXC_REFERENCE_DIR/loss (manifest.json + raw float32 arrays; see its
 * README). Every case the manifest lists is checked, in double and in float:
 *   loss      within 2e-5 relative of loss.bin (f64 also 1e-12 of loss_nats,
 *           tighter than the 1e-9 asked: the sums agree to 1e-15)
 *   nll_pixel within 2e-5 relative per pixel (f64: 1e-6)
 *   grad_l    every element within 5e-4 · max|grad_l| of its case (f64: 1e-6 ·)
 * and the maximum errors of each case are printed.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/loss.h"

typedef struct RefCase {
    char name[128];
    char dir[4096];                /* the loss reference folder */
    int N, H, W, C, M, K;
    double loss_nats;
    char path[5][512];             /* x, l, loss, nll_pixel, grad_l, relative to dir */
} RefCase;

enum { F_X, F_L, F_LOSS, F_NLL, F_GRAD };
static const char *const file_keys[5] = {"x", "l", "loss", "nll_pixel", "grad_l"};
static const char *const file_names[5] = {"x.bin", "l.bin", "loss.bin", "nll_pixel.bin", "grad_l.bin"};

static RefCase *g_cases;
static int g_ncases;
static char g_manifest_error[4608];

static int json_int(const cJSON *o, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    *out = v->valueint;
    return 0;
}

/* Check the manifest's shape for a file against what the case implies. */
static int shape_is(const cJSON *file, const int64_t *dims, int rank) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(file, "shape");
    if (!shape) return 1; /* not given: the byte count is still checked */
    if (cJSON_GetArraySize(shape) != rank) return 0;
    for (int i = 0; i < rank; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        if (!cJSON_IsNumber(d) || (int64_t)d->valuedouble != dims[i]) return 0;
    }
    return 1;
}

static void load_manifest(void) {
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/loss", tu_reference_dir());
    char *text = tu_read_file(tu_path(dir, "manifest.json"), NULL);
    if (!text) {
        snprintf(g_manifest_error, sizeof g_manifest_error, "cannot read %s/manifest.json", dir);
        return;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *cases = root ? cJSON_GetObjectItemCaseSensitive(root, "cases") : NULL;
    if (!cJSON_IsArray(cases)) {
        snprintf(g_manifest_error, sizeof g_manifest_error, "%s/manifest.json: no \"cases\" array", dir);
        cJSON_Delete(root);
        return;
    }
    int n = cJSON_GetArraySize(cases);
    g_cases = calloc((size_t)(n ? n : 1), sizeof *g_cases);
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        RefCase *rc = &g_cases[g_ncases];
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(c, "files");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(c, "loss_nats");
        if (!cJSON_IsString(name) || json_int(c, "N", &rc->N) || json_int(c, "H", &rc->H) ||
            json_int(c, "W", &rc->W) || json_int(c, "C", &rc->C) || json_int(c, "nr_mix", &rc->M) ||
            json_int(c, "K", &rc->K) || !cJSON_IsNumber(loss)) {
            snprintf(g_manifest_error, sizeof g_manifest_error,
                     "case %d of the manifest lacks name, N, H, W, C, nr_mix, K or loss_nats", g_ncases);
            break;
        }
        snprintf(rc->name, sizeof rc->name, "%s", name->valuestring);
        snprintf(rc->dir, sizeof rc->dir, "%s", dir);
        rc->loss_nats = loss->valuedouble;
        const int64_t xdims[4] = {rc->N, rc->H, rc->W, rc->C}, ldims[4] = {rc->N, rc->H, rc->W, rc->K},
                      one[1] = {1}, ndims[3] = {rc->N, rc->H, rc->W};
        const int64_t *dims[5] = {xdims, ldims, one, ndims, ldims};
        const int ranks[5] = {4, 4, 1, 3, 4};
        for (int f = 0; f < 5; f++) {
            const cJSON *fe = files ? cJSON_GetObjectItemCaseSensitive(files, file_keys[f]) : NULL;
            const cJSON *p = fe ? cJSON_GetObjectItemCaseSensitive(fe, "path") : NULL;
            if (cJSON_IsString(p))
                snprintf(rc->path[f], sizeof rc->path[f], "%s", p->valuestring);
            else
                snprintf(rc->path[f], sizeof rc->path[f], "%s/%s", rc->name, file_names[f]);
            if (fe && !shape_is(fe, dims[f], ranks[f]))
                snprintf(g_manifest_error, sizeof g_manifest_error, "case %s: %s has a shape other than implied",
                         rc->name, file_keys[f]);
        }
        g_ncases++;
    }
    cJSON_Delete(root);
}

static void test_manifest(void **state) {
    (void)state;
    if (g_manifest_error[0]) fail_msg("%s", g_manifest_error);
    if (g_ncases == 0) fail_msg("the loss manifest lists no case");
    print_message("%d loss reference cases\n", g_ncases);
}

typedef struct Loaded {
    float *x, *l, *loss, *nll, *grad;
    int64_t npix;
    double gmax; /* max |grad_l| */
} Loaded;

static void load_case(const RefCase *rc, Loaded *d) {
    if (rt_dmol_k(rc->C, rc->M) != rc->K)
        fail_msg("case %s: K = %d but C = %d, nr_mix = %d implies %d", rc->name, rc->K, rc->C, rc->M,
                 rt_dmol_k(rc->C, rc->M));
    d->npix = (int64_t)rc->N * rc->H * rc->W;
    size_t np = (size_t)d->npix;
    d->x = tu_read_f32(tu_path(rc->dir, rc->path[F_X]), np * (size_t)rc->C);
    d->l = tu_read_f32(tu_path(rc->dir, rc->path[F_L]), np * (size_t)rc->K);
    d->loss = tu_read_f32(tu_path(rc->dir, rc->path[F_LOSS]), 1);
    d->nll = tu_read_f32(tu_path(rc->dir, rc->path[F_NLL]), np);
    d->grad = tu_read_f32(tu_path(rc->dir, rc->path[F_GRAD]), np * (size_t)rc->K);
    d->gmax = 0;
    for (size_t i = 0; i < np * (size_t)rc->K; i++) d->gmax = fmax(d->gmax, fabs((double)d->grad[i]));
}

static void free_case(Loaded *d) {
    free(d->x);
    free(d->l);
    free(d->loss);
    free(d->nll);
    free(d->grad);
}

/* Worst per-pixel relative error max(|a-b|/max(|b|,1)); index into *worst. */
static double nll_err(const double *a, const float *b, int64_t n, int64_t *worst) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - (double)b[i]) / fmax(fabs((double)b[i]), 1.0);
        if (!(d <= e)) e = d, *worst = i;
    }
    return e;
}

/* Worst |a-b| / gmax. */
static double grad_err(const double *a, const float *b, int64_t n, double gmax, int64_t *worst) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - (double)b[i]) / gmax;
        if (!(d <= e)) e = d, *worst = i;
    }
    return e;
}

static void test_case_f64(void **state) {
    const RefCase *rc = *state;
    Loaded d;
    load_case(rc, &d);
    int64_t np = d.npix, nl = np * rc->K, nx = np * rc->C;
    double *x = malloc(sizeof(double) * (size_t)nx), *l = malloc(sizeof(double) * (size_t)nl);
    double *nll = malloc(sizeof(double) * (size_t)np), *dl = malloc(sizeof(double) * (size_t)nl);
    for (int64_t i = 0; i < nx; i++) x[i] = d.x[i];
    for (int64_t i = 0; i < nl; i++) l[i] = d.l[i];
    rt_dmol_nll_f64(l, x, np, rc->C, rc->M, nll);
    rt_dmol_nll_bwd_f64(l, x, NULL, np, rc->C, rc->M, dl, NULL);
    double loss = 0;
    for (int64_t i = 0; i < np; i++) loss += nll[i];
    double e_loss = fabs(loss - d.loss[0]) / fabs((double)d.loss[0]);
    double e_nats = fabs(loss - rc->loss_nats) / fabs(rc->loss_nats);
    int64_t wn = 0, wg = 0;
    double e_nll = nll_err(nll, d.nll, np, &wn);
    double e_grad = grad_err(dl, d.grad, nl, d.gmax, &wg);
    print_message("%-22s f64: loss %.6f (ref %.6f) rel %.2e, vs loss_nats %.2e; nll rel %.2e (pixel %lld); "
                  "grad %.2e of max|g| %.4g (element %lld)\n",
                  rc->name, loss, rc->loss_nats, e_loss, e_nats, e_nll, (long long)wn, e_grad, d.gmax,
                  (long long)wg);
    int ok = e_loss <= 2e-5 && e_nats <= 1e-12 && e_nll <= 1e-6 && e_grad <= 1e-6;
    free(x), free(l), free(nll), free(dl);
    free_case(&d);
    if (!ok) fail_msg("case %s (f64) outside tolerance", rc->name);
}

static void test_case_f32(void **state) {
    const RefCase *rc = *state;
    Loaded d;
    load_case(rc, &d);
    int64_t np = d.npix, nl = np * rc->K;
    float *nll = malloc(sizeof(float) * (size_t)np), *dl = malloc(sizeof(float) * (size_t)nl);
    float *nll2 = malloc(sizeof(float) * (size_t)np), *dl2 = malloc(sizeof(float) * (size_t)nl);
    double *nlld = malloc(sizeof(double) * (size_t)np), *dld = malloc(sizeof(double) * (size_t)nl);
    double loss = rt_dmol_loss_f32(d.l, d.x, np, rc->C, rc->M, nll, dl);
    /* the separate forward and backward agree with the fused pass */
    rt_dmol_nll_f32(d.l, d.x, np, rc->C, rc->M, nll2);
    rt_dmol_nll_bwd_f32(d.l, d.x, NULL, np, rc->C, rc->M, dl2, NULL);
    int same = memcmp(nll, nll2, sizeof(float) * (size_t)np) == 0 &&
               memcmp(dl, dl2, sizeof(float) * (size_t)nl) == 0;
    for (int64_t i = 0; i < np; i++) nlld[i] = nll[i];
    for (int64_t i = 0; i < nl; i++) dld[i] = dl[i];
    double e_loss = fabs(loss - d.loss[0]) / fabs((double)d.loss[0]);
    double e_nats = fabs(loss - rc->loss_nats) / fabs(rc->loss_nats);
    int64_t wn = 0, wg = 0;
    double e_nll = nll_err(nlld, d.nll, np, &wn);
    double e_grad = grad_err(dld, d.grad, nl, d.gmax, &wg);
    print_message("%-22s f32: loss %.6f rel %.2e (vs loss_nats %.2e); nll rel %.2e (pixel %lld); "
                  "grad %.2e of max|g| (element %lld)\n",
                  rc->name, loss, e_loss, e_nats, e_nll, (long long)wn, e_grad, (long long)wg);
    int ok = same && e_loss <= 2e-5 && e_nll <= 2e-5 && e_grad <= 5e-4;
    free(nll), free(dl), free(nll2), free(dl2), free(nlld), free(dld);
    free_case(&d);
    if (!same) fail_msg("case %s: rt_dmol_loss_f32 differs from rt_dmol_nll_f32 / _bwd_f32", rc->name);
    if (!ok) fail_msg("case %s (f32) outside tolerance", rc->name);
}

int main(void) {
    load_manifest();
    int ntests = 1 + 2 * g_ncases;
    struct CMUnitTest *tests = calloc((size_t)ntests, sizeof *tests);
    char (*names)[160] = calloc((size_t)ntests, sizeof *names);
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_manifest);
    for (int i = 0; i < g_ncases; i++) {
        snprintf(names[1 + 2 * i], 160, "%s_f64", g_cases[i].name);
        snprintf(names[2 + 2 * i], 160, "%s_f32", g_cases[i].name);
        tests[1 + 2 * i] = (struct CMUnitTest)cmocka_unit_test_prestate(test_case_f64, &g_cases[i]);
        tests[2 + 2 * i] = (struct CMUnitTest)cmocka_unit_test_prestate(test_case_f32, &g_cases[i]);
        tests[1 + 2 * i].name = names[1 + 2 * i];
        tests[2 + 2 * i].name = names[2 + 2 * i];
    }
    int rc = _cmocka_run_group_tests("reference_loss", tests, (size_t)ntests, NULL, NULL);
    free(tests);
    free(names);
    free(g_cases);
    return rc;
}
