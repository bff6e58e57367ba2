/*
 * test_emitc.c — standalone C emitted from small PixelCNN++ networks
 * (models/pixelcnnpp_cifar10.yaml, R=1, F=8, 8x8), compiled with
 * `cc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC` (with OpenBLAS, or
 * with -DPXC_NO_CBLAS) and loaded (test_emitc_vectors.c checks it against
 * the PyTorch vectors):
 *   - against the reference backend (runtime/ref, double) with dropout 0.5
 *     in training mode, class conditioning, data-dependent init, the
 *     likelihood entry alone and evaluation mode (test_emitc_util.h);
 *   - its parallel-for hook (two threads) against the serial run;
 *   - its ABI declaration against runtime/pxc_model.h, and its weights-file
 *     check on good and damaged files.
 */
#include "test_emitc_util.h"

#include <dlfcn.h>
#include <pthread.h>


/* ---- against the reference backend ---------------------------------------------------- */

static void test_dropout_conditional(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8",
                          "width=8",     "channels=3",    "classes=4", "dropout=0.5"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 8, NULL);
    em_compare_with_ref(&e, 3, true, 99);
    em_free(&e);
}

static void test_no_cblas(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=3", "height=8",
                          "width=8",     "channels=1",    "classes=3", "dropout=0.5"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 8, "-DPXC_NO_CBLAS");
    em_compare_with_ref(&e, 2, true, 5);
    em_free(&e);
}

/* ---- the parallel-for hook ---------------------------------------------------------------- */

typedef struct Piece {
    void (*body)(void *, int64_t, int64_t);
    void *ctx;
    int64_t b, e;
} Piece;

static int hook_calls;

static void *run_piece(void *v) {
    Piece *p = v;
    p->body(p->ctx, p->b, p->e);
    return NULL;
}

static void two_threads(void (*body)(void *, int64_t, int64_t), void *ctx, int64_t begin, int64_t end) {
    int64_t mid = begin + (end - begin) / 2;
    Piece a = {body, ctx, begin, mid}, b = {body, ctx, mid, end};
    pthread_t t;
    hook_calls++;
    if (pthread_create(&t, NULL, run_piece, &b) != 0) {
        body(ctx, begin, end);
        return;
    }
    run_piece(&a);
    pthread_join(t, NULL);
}

static void test_parallel_hook(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8",
                          "width=8",     "channels=3",    "classes=0", "dropout=0.5"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 8, NULL);
    pxc_model *pm = e.m.model;
    assert_non_null(e.m.parallel_for);
    int n = 4;
    int64_t np = e.pl.total, nx = (int64_t)n * 8 * 8 * 3;
    TRng r = {3};
    double *pd = malloc((size_t)np * sizeof(double));
    tb_random_params(&e.g, pd, &r, 0.05);
    float *pf = malloc((size_t)np * 4), *x = malloc((size_t)nx * 4);
    for (int64_t i = 0; i < np; i++) pf[i] = (float)pd[i];
    em_images(&r, x, NULL, nx);
    EmArena ar = em_arena(pm->arena_bytes(n));
    float *g1 = malloc((size_t)np * 4), *g2 = malloc((size_t)np * 4);
    double l1 = pm->forward(pf, x, NULL, n, 11, 1, ar.p, NULL, NULL);
    pm->backward(pf, x, NULL, n, ar.p, g1);
    *e.m.parallel_for = two_threads;
    hook_calls = 0;
    double l2 = pm->forward(pf, x, NULL, n, 11, 1, ar.p, NULL, NULL);
    pm->backward(pf, x, NULL, n, ar.p, g2);
    *e.m.parallel_for = NULL;
    em_arena_check(&ar);
    assert_true(hook_calls > 50);
    /* the same kernels on other row splits: GEMM blocking may round differently */
    assert_true(fabs(l1 - l2) <= 1e-6 * fabs(l1));
    double *gd = malloc((size_t)np * sizeof(double));
    for (int64_t i = 0; i < np; i++) gd[i] = g1[i];
    em_check_grads(&e, g2, gd, 1e-5, "two threads vs one");
    free(pd), free(pf), free(x), free(g1), free(g2), free(gd), free(ar.p);
    em_free(&e);
}

/* ---- the files ---------------------------------------------------------------------------- */

static void test_abi_and_weights(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=1", "classes=0"};
    EmNet e;
    em_build(&e, "pixelcnnpp_cifar10", sets, 7, "-DPXC_NO_CBLAS");
    /* model.h carries runtime/pxc_model.h verbatim from its include guard on */
    size_t len = 0;
    char *abi = tu_read_file(tu_path(tu_source_dir(), "runtime/pxc_model.h"), &len);
    char *hdr = tu_read_file(tu_path(e.dir, "model.h"), &len);
    assert_non_null(abi);
    assert_non_null(hdr);
    const char *guard = strstr(abi, "#ifndef PXC_MODEL_H");
    assert_non_null(guard);
    if (!strstr(hdr, guard)) fail_msg("model.h does not carry runtime/pxc_model.h (compiler/c/abi.inc is stale)");
    assert_non_null(strstr(hdr, "extern pxc_model model;"));
    assert_non_null(strstr(hdr, "up.0.u.0.conv1.v"));
    char *src = tu_read_file(tu_path(e.dir, "model.c"), &len);
    assert_non_null(strstr(src, "generated by pxc"));
    assert_non_null(strstr(src, "pixelcnnpp_cifar10.yaml:"));   /* kernels name their YAML lines */
    assert_null(strstr(src, "malloc"));
    assert_null(strstr(src, "stdio"));
    free(abi), free(hdr), free(src);

    /* the weights file, checked by the emitted code */
    int (*check)(const void *, size_t, const float **) = (int (*)(const void *, size_t, const float **))dlsym(e.m.handle, "model_weights");
    assert_non_null(check);
    int64_t np = e.pl.total;
    float *params = malloc((size_t)np * 4);
    for (int64_t i = 0; i < np; i++) params[i] = (float)i * 0.25f;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    assert_int_equal(emitc_write_weights(e.p, params, f), 0);
    fclose(f);
    assert_int_equal(blen, EMITC_WEIGHTS_HEADER + 4 * (size_t)np);
    void *img = aligned_alloc(64, (blen + 63) / 64 * 64);
    memcpy(img, buf, blen);
    const float *got = NULL;
    assert_int_equal(check(img, blen, &got), 0);
    assert_memory_equal(got, params, (size_t)np * 4);
    assert_int_equal(check(img, blen - 4, &got), -3);           /* truncated */
    ((unsigned char *)img)[17] ^= 1;                            /* another layout */
    assert_int_equal(check(img, blen, &got), -3);
    ((unsigned char *)img)[17] ^= 1;
    ((unsigned char *)img)[4] = 2;                              /* another version */
    assert_int_equal(check(img, blen, &got), -2);
    ((unsigned char *)img)[0] = 'X';                            /* not a weights file */
    assert_int_equal(check(img, blen, &got), -1);
    free(buf), free(img), free(params);
    em_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dropout_conditional),
        cmocka_unit_test(test_no_cblas),
        cmocka_unit_test(test_parallel_hook),
        cmocka_unit_test(test_abi_and_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
