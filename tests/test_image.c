/*
 * test_image.c — PNG grids and the PNG reader. Grids are decoded with
 * libpng's simplified API (not pxc's reader) and compared pixel by pixel;
 * the reader is fed palette, 16-bit, alpha and damaged files made here.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/image.h"
#include "testutil.h"

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(tmpdir, sizeof tmpdir, "pxc_test_img_");
}

static int teardown(void **state) {
    (void)state;
    return tu_rmtree(tmpdir);
}

/* Decode with libpng's simplified API into format (PNG_FORMAT_GRAY/RGB). */
static uint8_t *libpng_decode(const char *path, png_uint_32 format, int *H, int *W, png_uint_32 *file_format) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path)) fail_msg("libpng cannot read %s: %s", path, im.message);
    if (file_format) *file_format = im.format;
    im.format = format;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
    if (!png_image_finish_read(&im, NULL, buf, 0, NULL)) fail_msg("libpng cannot decode %s: %s", path, im.message);
    *H = (int)im.height;
    *W = (int)im.width;
    return buf;
}

static void libpng_write(const char *path, png_uint_32 format, int H, int W, const void *pixels,
                         const void *colormap, int ncolors) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.format = format;
    im.width = (png_uint_32)W;
    im.height = (png_uint_32)H;
    im.colormap_entries = (png_uint_32)ncolors;
    if (!png_image_write_to_file(&im, path, 0, pixels, 0, colormap)) fail_msg("libpng cannot write %s", path);
}

/* A deterministic test pattern [n,H,W,C]. */
static uint8_t *pattern(int n, int H, int W, int C) {
    uint8_t *p = malloc((size_t)n * H * W * C);
    for (size_t i = 0; i < (size_t)n * H * W * C; i++) p[i] = (uint8_t)(i * 37 + i / 7);
    return p;
}

static void check_grid(int n, int H, int W, int C, int cols, int pad, int want_cols) {
    uint8_t *px = pattern(n, H, W, C);
    const char *path = tu_path(tmpdir, "grid.png");
    char err[512];
    if (rt_png_write_grid(path, px, n, H, W, C, cols, pad, err, sizeof err) != 0) fail_msg("%s", err);
    int rows = (n + want_cols - 1) / want_cols;
    int GH, GW;
    png_uint_32 ff;
    uint8_t *g = libpng_decode(path, C == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB, &GH, &GW, &ff);
    assert_int_equal(ff & PNG_FORMAT_FLAG_COLOR, C == 3 ? PNG_FORMAT_FLAG_COLOR : 0);
    assert_int_equal(GH, rows * H + (rows + 1) * pad);
    assert_int_equal(GW, want_cols * W + (want_cols + 1) * pad);
    for (int y = 0; y < GH; y++)
        for (int x = 0; x < GW; x++) {
            int r = (y - pad) / (H + pad), ry = (y - pad) % (H + pad);
            int c = (x - pad) / (W + pad), cx = (x - pad) % (W + pad);
            int inside = y >= pad && x >= pad && ry < H && cx < W && r * want_cols + c < n;
            for (int k = 0; k < C; k++) {
                int want = inside ? px[(((size_t)(r * want_cols + c) * H + ry) * W + cx) * C + k] : 255;
                int got = g[((size_t)y * GW + x) * C + k];
                if (got != want) fail_msg("grid pixel (%d,%d,%d) is %d, expected %d", y, x, k, got, want);
            }
        }
    /* pxc's own reader agrees. */
    RtImage im;
    if (rt_png_read(path, &im, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(im.H, GH);
    assert_int_equal(im.W, GW);
    assert_int_equal(im.C, C);
    assert_memory_equal(im.pixels, g, (size_t)GH * GW * C);
    rt_image_free(&im);
    free(g);
    free(px);
}

static void test_grid_rgb(void **state) {
    (void)state;
    check_grid(5, 3, 4, 3, 3, 2, 3);   /* 2 rows, one empty cell */
    check_grid(6, 5, 2, 3, 0, 1, 3);   /* cols chosen: ceil(sqrt(6)) */
    check_grid(1, 7, 7, 3, 4, 0, 1);   /* no padding, cols clamped to n */
}

static void test_grid_gray(void **state) {
    (void)state;
    check_grid(16, 4, 4, 1, 4, 1, 4);
    check_grid(3, 2, 9, 1, 1, 3, 1);
}

static void test_grid_bad_args(void **state) {
    (void)state;
    uint8_t px[12] = {0};
    char err[512];
    assert_int_equal(rt_png_write_grid(tu_path(tmpdir, "x.png"), px, 1, 2, 2, 2, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "C = 1 or 3"));
    assert_int_equal(rt_png_write_grid(tu_path(tmpdir, "x.png"), px, 0, 2, 2, 1, 1, 0, err, sizeof err), -1);
    assert_int_equal(rt_png_write_grid(tu_path(tmpdir, "no/such/dir/x.png"), px, 1, 2, 2, 1, 1, 0, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "no/such/dir"));
}

static void expect_read_error(const char *path, const char *want) {
    RtImage im;
    char err[512] = "";
    if (rt_png_read(path, &im, err, sizeof err) == 0) {
        rt_image_free(&im);
        fail_msg("%s read, expected an error with '%s'", path, want);
    }
    if (getenv("PXC_TEST_VERBOSE")) fprintf(stderr, "  %s\n", err);
    if (!strstr(err, want) || !strstr(err, path)) fail_msg("error '%s' lacks '%s' or the path", err, want);
}

static void test_read_kinds(void **state) {
    (void)state;
    char err[512];
    RtImage im;
    /* Palette → RGB with the palette's colours. */
    uint8_t cmap[3 * 3] = {10, 20, 30, 200, 100, 0, 255, 255, 255};
    uint8_t idx[2 * 3] = {0, 1, 2, 2, 1, 0};
    const char *pal = tu_path(tmpdir, "pal.png");
    libpng_write(pal, PNG_FORMAT_RGB_COLORMAP, 2, 3, idx, cmap, 3);
    if (rt_png_read(pal, &im, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(im.C, 3);
    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 3; k++) assert_int_equal(im.pixels[i * 3 + k], cmap[idx[i] * 3 + k]);
    rt_image_free(&im);

    /* Opaque RGBA: alpha dropped. Translucent: refused. */
    uint8_t rgba[2 * 2 * 4] = {1, 2, 3, 255, 4, 5, 6, 255, 7, 8, 9, 255, 10, 11, 12, 255};
    char op[512];
    snprintf(op, sizeof op, "%s/opaque.png", tmpdir);
    libpng_write(op, PNG_FORMAT_RGBA, 2, 2, rgba, NULL, 0);
    if (rt_png_read(op, &im, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(im.C, 3);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 3; k++) assert_int_equal(im.pixels[i * 3 + k], rgba[i * 4 + k]);
    rt_image_free(&im);
    rgba[7] = 128;
    libpng_write(tu_path(tmpdir, "translucent.png"), PNG_FORMAT_RGBA, 2, 2, rgba, NULL, 0);
    expect_read_error(tu_path(tmpdir, "translucent.png"), "translucent");

    /* Gray + opaque alpha → 1 channel. */
    uint8_t ga[2 * 2] = {77, 255, 99, 255};
    libpng_write(tu_path(tmpdir, "ga.png"), PNG_FORMAT_GA, 1, 2, ga, NULL, 0);
    if (rt_png_read(tu_path(tmpdir, "ga.png"), &im, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(im.C, 1);
    assert_int_equal(im.pixels[0], 77);
    assert_int_equal(im.pixels[1], 99);
    rt_image_free(&im);

    /* 16-bit. */
    uint16_t deep[4] = {0, 1000, 40000, 65535};
    libpng_write(tu_path(tmpdir, "deep.png"), PNG_FORMAT_LINEAR_Y, 2, 2, deep, NULL, 0);
    expect_read_error(tu_path(tmpdir, "deep.png"), "16-bit");

    /* Not a PNG, and a truncated one. */
    FILE *f = fopen(tu_path(tmpdir, "text.png"), "wb");
    fputs("hello, not a png", f);
    fclose(f);
    expect_read_error(tu_path(tmpdir, "text.png"), "not a PNG");
    size_t n = 0;
    uint8_t *raw = tu_read_file(op, &n);
    f = fopen(tu_path(tmpdir, "cut.png"), "wb");
    fwrite(raw, 1, n / 2, f);
    fclose(f);
    free(raw);
    expect_read_error(tu_path(tmpdir, "cut.png"), "damaged PNG");
    expect_read_error(tu_path(tmpdir, "missing.png"), "cannot open");
    expect_read_error(tmpdir, "not a regular file");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_rgb),
        cmocka_unit_test(test_grid_gray),
        cmocka_unit_test(test_grid_bad_args),
        cmocka_unit_test(test_read_kinds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
