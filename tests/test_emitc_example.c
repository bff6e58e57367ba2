/*
 * test_emitc_example.c — examples/bpd.c, a program that links emitted C,
 * loads the weights file and prints bits/dim: emit a small 8x8x1
 * class-conditional PixelCNN++, write its weights file, build bpd with
 * `cc -std=c11 -O2 -Wall -Wextra -Werror -DPXC_NO_CBLAS` (no library but
 * libm), run it on IDX and raw image files, and compare the bits/dim it
 * prints with the reference backend's likelihood of the same images. A
 * weights file of another model must be refused.
 */
#include "test_emitc_util.h"

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Run cmd; its first output line in out; returns the exit status. */
static int run(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = 0;
    if (!fgets(out, (int)n, p)) out[0] = 0;
    char sink[256];
    while (fgets(sink, sizeof sink, p)) {}
    return pclose(p);
}

static void test_bpd_program(void **state) {
    (void)state;
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=3", "height=8", "width=8", "channels=1", "classes=3", "dropout=0.5"};
    EmNet e;
    em_emit(&e, "pixelcnnpp_cifar10", sets, 8, "tiny_mnist");   /* bpd.c works with any instance name */
    const Graph *g = &e.g;
    enum { N = 21 };   /* one full batch of 16 and a partial one */
    int64_t np = e.pl.total, per = (int64_t)g->H * g->W * g->C;
    TRng r = {41};
    double *pd = malloc((size_t)np * sizeof(double));
    float *pf = malloc((size_t)np * 4);
    tb_random_params(g, pd, &r, 0.05);
    unsigned char img[N * 64];
    int32_t labels[N];
    unsigned char lab8[N];
    double *xd = malloc(N * (size_t)per * sizeof(double));
    for (int i = 0; i < N * per; i++) {
        double u = trng_uniform(&r);
        img[i] = u < 0.1 ? 0 : u > 0.9 ? 255 : (unsigned char)(trng_uniform(&r) * 256);
        xd[i] = (double)(((float)img[i] - 127.5f) / 127.5f);
    }
    for (int i = 0; i < N; i++) labels[i] = i % 3, lab8[i] = (unsigned char)(i % 3);
    RefExec *ex = ref_new(g, N);
    ref_init(ex, pd, xd, labels);   /* realistic weights: the data-dependent init */
    for (int64_t i = 0; i < np; i++) pf[i] = (float)pd[i], pd[i] = pf[i];
    double nats = ref_forward(ex, pd, xd, labels, 0, false);
    double want = nats / (log(2.0) * N * (double)per);

    char path[512], cmd[4096], out[512];
    snprintf(path, sizeof path, "%s/model.weights", e.dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(emitc_write_weights(e.p, pf, f), 0);
    assert_int_equal(fclose(f), 0);
    unsigned char idx[16 + N * 64];
    put_be32(idx, 0x00000803), put_be32(idx + 4, N), put_be32(idx + 8, 8), put_be32(idx + 12, 8);
    memcpy(idx + 16, img, sizeof img);
    snprintf(path, sizeof path, "%s/images.idx", e.dir);
    write_bytes(path, idx, sizeof idx);
    snprintf(path, sizeof path, "%s/images.raw", e.dir);
    write_bytes(path, img, sizeof img);
    unsigned char lidx[8 + N];
    put_be32(lidx, 0x00000801), put_be32(lidx + 4, N);
    memcpy(lidx + 8, lab8, N);
    snprintf(path, sizeof path, "%s/labels.idx", e.dir);
    write_bytes(path, lidx, sizeof lidx);

    const char *cc = getenv("CC");
    snprintf(cmd, sizeof cmd, "%s -std=c11 -O2 -Wall -Wextra -Werror -DPXC_NO_CBLAS -I%s %s/examples/bpd.c %s/model.c -lm -o %s/bpd 2>&1",
             cc && *cc ? cc : "cc", e.dir, tu_source_dir(), e.dir, e.dir);
    if (run(cmd, out, sizeof out) != 0) fail_msg("examples/bpd.c does not build: %s", out);

    const char *inputs[2] = {"images.idx", "images.raw"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s/bpd %s/model.weights %s/%s %s/labels.idx", e.dir, e.dir, e.dir, inputs[k], e.dir);
        assert_int_equal(run(cmd, out, sizeof out), 0);
        double got = 0;
        unsigned count = 0;
        if (sscanf(out, "%lf bits/dim over %u images", &got, &count) != 2) fail_msg("bpd printed '%s'", out);
        printf("  %s: %.6f bits/dim, reference %.6f\n", inputs[k], got, want);
        assert_int_equal(count, N);
        assert_true(fabs(got - want) <= 2e-5 * want);   /* printed with 6 decimals */
    }
    /* a weights file of another model is refused with a message */
    const char *other[] = {"nr_resnet=1", "nr_filters=4", "nr_mix=3", "height=8", "width=8", "channels=1", "classes=3"};
    EmNet e2;
    em_prepare(&e2, "pixelcnnpp_cifar10", other, 7);
    float *p2 = calloc((size_t)e2.pl.total, 4);
    snprintf(path, sizeof path, "%s/other.weights", e.dir);
    f = fopen(path, "wb");
    assert_int_equal(emitc_write_weights(e2.p, p2, f), 0);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/bpd %s %s/images.idx %s/labels.idx 2>&1", e.dir, path, e.dir, e.dir);
    assert_int_not_equal(run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "another model"));
    free(p2);
    em_free(&e2);
    ref_free(ex);
    free(pd), free(pf), free(xd);
    em_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpd_program),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
