/*
 * test_data.c — data sets: IDX (raw and gzip), CIFAR-10 binary batches and
 * PNG folders made here in a temporary directory and read back exactly;
 * malformed inputs that must give clear errors; pixels → float against the
 * reference vectors; the shuffled batch order and its exact resumption; and,
 * when Debian's dataset-fashion-mnist is installed, the real data set.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdarg.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "runtime/data.h"
#include "runtime/image.h"
#include "testutil.h"

static char tmpdir[256];

__attribute__((format(printf, 2, 3)))
static void pathf(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, 1024, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= 1024) fail_msg("path too long");
}

#define PATH(var, ...) \
    char var[1024];    \
    pathf(var, __VA_ARGS__)

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(tmpdir, sizeof tmpdir, "pxc_test_data_");
}

static int teardown(void **state) {
    (void)state;
    return tu_rmtree(tmpdir);
}

static void mkdir_in(const char *path) {
    if (mkdir(path, 0755) != 0) fail_msg("cannot create %s", path);
}

static void write_bytes(const char *path, const void *p, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, p, (unsigned)n), (int)n);
        gzclose(f);
        return;
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* An IDX file: magic 00 00 <type> <ndim>, big-endian sizes, then `extra`
 * more (or, if negative, fewer) data bytes than the sizes say. */
static void write_idx(const char *path, int gz, int type, int ndim, const int *dims, const uint8_t *data, int extra) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    size_t total = 4 + 4 * (size_t)ndim + n + (size_t)(extra > 0 ? extra : 0) - (size_t)(extra < 0 ? -extra : 0);
    uint8_t *b = calloc(1, 4 + 4 * (size_t)ndim + n + 64);
    b[2] = (uint8_t)type;
    b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b[7 + 4 * i] = (uint8_t)dims[i];
    }
    memcpy(b + 4 + 4 * ndim, data, n);
    write_bytes(path, b, total, gz);
    free(b);
}

static uint8_t *make_pixels(size_t n, unsigned seed) {
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 13 + seed + i / 251);
    return p;
}

static void expect_load_error(const char *path, RtDatasetSplit split, const char *want, const char *want2) {
    RtDataset ds;
    char err[1024] = "";
    if (rt_dataset_load(path, split, &ds, err, sizeof err) == 0) {
        rt_dataset_free(&ds);
        fail_msg("%s loaded, expected an error with '%s'", path, want);
    }
    if (getenv("PXC_TEST_VERBOSE")) fprintf(stderr, "  %s\n", err);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
    if (want2 && !strstr(err, want2)) fail_msg("error '%s' lacks '%s'", err, want2);
    assert_null(ds.pixels);
    assert_null(ds.labels);
    assert_null(ds.desc);
}

static RtDataset load_ok(const char *path, RtDatasetSplit split) {
    RtDataset ds;
    char err[1024];
    if (rt_dataset_load(path, split, &ds, err, sizeof err) != 0) fail_msg("%s", err);
    assert_non_null(ds.desc);
    if (getenv("PXC_TEST_VERBOSE")) fprintf(stderr, "  %s\n", ds.desc);
    return ds;
}

/* ---- IDX ------------------------------------------------------------------ */

/* prefix-images-idx3-ubyte[.gz] and prefix-labels-idx1-ubyte[.gz] in dir:
 * n images H x W, labels i % 3. */
static void make_idx_split(const char *dir, const char *prefix, int n, int H, int W, int gz, unsigned seed) {
    int dims[3] = {n, H, W};
    uint8_t *px = make_pixels((size_t)n * H * W, seed);
    uint8_t *lb = malloc((size_t)n);
    for (int i = 0; i < n; i++) lb[i] = (uint8_t)(i % 3);
    PATH(ip, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    PATH(lp, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_idx(ip, gz, 8, 3, dims, px, 0);
    write_idx(lp, gz, 8, 1, &n, lb, 0);
    free(px);
    free(lb);
}

static void check_idx_split(const char *dir, RtDatasetSplit split, int n, int H, int W, unsigned seed) {
    RtDataset ds = load_ok(dir, split);
    assert_int_equal(ds.n, n);
    assert_int_equal(ds.H, H);
    assert_int_equal(ds.W, W);
    assert_int_equal(ds.C, 1);
    assert_int_equal(ds.classes, 3);
    uint8_t *px = make_pixels((size_t)n * H * W, seed);
    assert_memory_equal(ds.pixels, px, (size_t)n * H * W);
    for (int i = 0; i < n; i++) assert_int_equal(ds.labels[i], i % 3);
    free(px);
    rt_dataset_free(&ds);
    assert_null(ds.pixels);
}

static void test_idx_dir(void **state) {
    (void)state;
    for (int gz = 0; gz < 2; gz++) {
        PATH(dir, "%s/idx%d", tmpdir, gz);
        mkdir_in(dir);
        make_idx_split(dir, "train", 7, 5, 4, gz, 1);
        make_idx_split(dir, "t10k", 3, 5, 4, gz, 2);
        check_idx_split(dir, RT_SPLIT_TRAIN, 7, 5, 4, 1);
        check_idx_split(dir, RT_SPLIT_TEST, 3, 5, 4, 2);
    }
    /* The "train-images.idx3-ubyte" spelling. */
    PATH(dir, "%s/idxdot", tmpdir);
    mkdir_in(dir);
    make_idx_split(dir, "train", 4, 2, 2, 0, 3);
    PATH(from, "%s/train-images-idx3-ubyte", dir);
    PATH(to, "%s/train-images.idx3-ubyte", dir);
    assert_int_equal(rename(from, to), 0);
    check_idx_split(dir, RT_SPLIT_TRAIN, 4, 2, 2, 3);
    expect_load_error(dir, RT_SPLIT_TEST, "has no test images", "t10k-images-idx3-ubyte");
}

static void test_idx_file(void **state) {
    (void)state;
    PATH(dir, "%s/idxfile", tmpdir);
    mkdir_in(dir);
    make_idx_split(dir, "train", 6, 3, 3, 1, 5);
    /* The sibling labels file is found. */
    PATH(ip, "%s/train-images-idx3-ubyte.gz", dir);
    RtDataset ds = load_ok(ip, RT_SPLIT_TEST);
    assert_int_equal(ds.n, 6);
    assert_int_equal(ds.classes, 3);
    assert_non_null(ds.labels);
    assert_int_equal(ds.labels[5], 2);
    rt_dataset_free(&ds);
    /* A lone RGB file of rank 4: unlabelled. */
    int dims[4] = {2, 3, 2, 3};
    uint8_t *px = make_pixels(36, 9);
    PATH(rgb, "%s/faces.idx", dir);
    write_idx(rgb, 0, 8, 4, dims, px, 0);
    ds = load_ok(rgb, RT_SPLIT_TRAIN);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.H, 3);
    assert_int_equal(ds.W, 2);
    assert_int_equal(ds.C, 3);
    assert_int_equal(ds.classes, 0);
    assert_null(ds.labels);
    assert_memory_equal(ds.pixels, px, 36);
    rt_dataset_free(&ds);
    free(px);
}

static void test_idx_errors(void **state) {
    (void)state;
    PATH(dir, "%s/idxbad", tmpdir);
    mkdir_in(dir);
    uint8_t px[4 * 5 * 5] = {0}, lb[5] = {0};
    int dims[3] = {4, 5, 5};
    PATH(ip, "%s/train-images-idx3-ubyte", dir);
    PATH(lp, "%s/train-labels-idx1-ubyte", dir);
    int four = 4, five = 5;
    write_idx(lp, 0, 8, 1, &four, lb, 0);

    /* Bad magic. */
    write_bytes(ip, "\x12\x34\x56\x78\0\0\0\0", 8, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "bad magic number 0x12345678", ip);
    /* A labels file where images are expected. */
    write_idx(ip, 0, 8, 1, &five, lb, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "bad magic number 0x00000801", "expected images");
    /* Not unsigned bytes. */
    write_idx(ip, 0, 0x0D, 3, dims, px, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "data type 0x0d", ip);
    /* Truncated, raw and gzip. */
    write_idx(ip, 0, 8, 3, dims, px, -7);
    expect_load_error(dir, RT_SPLIT_TRAIN, "short file", "100 bytes of images, but the file holds only 93");
    write_bytes(ip, "\0\0\x08", 3, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "too short for the 4-byte IDX magic", ip);
    write_bytes(ip, "\0\0\x08\x03\0\0", 6, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "ends inside the IDX header", ip);
    {
        PATH(gp, "%s.gz", ip);
        uint8_t big[4 * 5 * 5];
        for (int i = 0; i < 100; i++) big[i] = (uint8_t)(i * 101);
        write_idx(gp, 1, 8, 3, dims, big, 0);
        size_t n = 0;
        uint8_t *raw = tu_read_file(gp, &n);
        write_bytes(gp, raw, n - 12, 0); /* cut the gzip trailer and some data */
        free(raw);
        remove(ip);
        RtDataset ds;
        char err[1024];
        assert_int_equal(rt_dataset_load(dir, RT_SPLIT_TRAIN, &ds, err, sizeof err), -1);
        if (getenv("PXC_TEST_VERBOSE")) fprintf(stderr, "  %s\n", err);
        assert_non_null(strstr(err, gp));
        remove(gp);
    }
    /* Trailing bytes: dimensions that do not match the data. */
    write_idx(ip, 0, 8, 3, dims, px, 5);
    expect_load_error(dir, RT_SPLIT_TRAIN, "wrong dimensions", "trailing bytes");
    /* A zero dimension. */
    int zero[3] = {4, 0, 5};
    write_idx(ip, 0, 8, 3, zero, px, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "dimension 1 is zero", ip);
    /* A header that claims 2^40 bytes. */
    write_bytes(ip, "\0\0\x08\x03\x7f\xff\xff\xff\x7f\xff\xff\xff\x7f\xff\xff\xff", 16, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "too large", ip);
    /* A header that claims far more than the file holds. */
    write_bytes(ip, "\0\0\x08\x03\0\x01\x86\xa0\0\0\0\x1c\0\0\0\x1c" "abc", 19, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "100000x28x28 = 78400000 bytes of images, but the file holds only 3", ip);
    /* Image count ≠ label count. */
    write_idx(ip, 0, 8, 3, dims, px, 0);
    write_idx(lp, 0, 8, 1, &five, lb, 0);
    expect_load_error(dir, RT_SPLIT_TRAIN, "image count differs from label count", "holds 4 images");
    /* Missing test split; missing path. */
    expect_load_error(dir, RT_SPLIT_TEST, "has no test images", dir);
    PATH(nope, "%s/nope", tmpdir);
    expect_load_error(nope, RT_SPLIT_TRAIN, "cannot open data set", "No such file");
}

/* ---- CIFAR-10 ------------------------------------------------------------- */

#define REC 3073

/* n records; record r of batch b has label (r + b) % 10 and pixel bytes
 * from make_pixels. */
static uint8_t *cifar_batch(int n, unsigned b) {
    uint8_t *d = malloc((size_t)n * REC);
    uint8_t *px = make_pixels((size_t)n * 3072, b);
    for (int r = 0; r < n; r++) {
        d[r * REC] = (uint8_t)((r + b) % 10);
        memcpy(d + r * REC + 1, px + (size_t)r * 3072, 3072);
    }
    free(px);
    return d;
}

static void write_cifar(const char *dir, const char *name, int n, unsigned b) {
    PATH(p, "%s/%s", dir, name);
    uint8_t *d = cifar_batch(n, b);
    write_bytes(p, d, (size_t)n * REC, 0);
    free(d);
}

/* Image i of ds equals record r of batch b (planes R, G, B → NHWC). */
static void check_cifar_image(const RtDataset *ds, int64_t i, int r, unsigned b, int n) {
    uint8_t *d = cifar_batch(n, b);
    const uint8_t *rec = d + r * REC;
    assert_int_equal(ds->labels[i], rec[0]);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(ds->pixels[((i * 32 + y) * 32 + x) * 3 + c], rec[1 + c * 1024 + y * 32 + x]);
    free(d);
}

static void test_cifar(void **state) {
    (void)state;
    PATH(root, "%s/cifar", tmpdir);
    mkdir_in(root);
    PATH(dir, "%s/cifar-10-batches-bin", root);
    mkdir_in(dir);
    write_cifar(dir, "data_batch_1.bin", 3, 1);
    write_cifar(dir, "data_batch_2.bin", 2, 2);
    write_cifar(dir, "test_batch.bin", 2, 7);
    PATH(meta, "%s/batches.meta.txt", dir);
    const char *names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    write_bytes(meta, names, strlen(names), 0);
    for (int k = 0; k < 2; k++) {
        RtDataset ds = load_ok(k ? root : dir, RT_SPLIT_TRAIN);
        assert_int_equal(ds.n, 5);
        assert_int_equal(ds.H, 32);
        assert_int_equal(ds.W, 32);
        assert_int_equal(ds.C, 3);
        assert_int_equal(ds.classes, 10);
        assert_string_equal(ds.class_names[0], "airplane");
        assert_string_equal(ds.class_names[9], "truck");
        for (int r = 0; r < 3; r++) check_cifar_image(&ds, r, r, 1, 3);
        for (int r = 0; r < 2; r++) check_cifar_image(&ds, 3 + r, r, 2, 2);
        rt_dataset_free(&ds);
    }
    RtDataset ds = load_ok(dir, RT_SPLIT_TEST);
    assert_int_equal(ds.n, 2);
    check_cifar_image(&ds, 1, 1, 7, 2);
    rt_dataset_free(&ds);

    /* Malformed batches. */
    PATH(bad, "%s/cifarbad", tmpdir);
    mkdir_in(bad);
    PATH(b1, "%s/data_batch_1.bin", bad);
    uint8_t *d = cifar_batch(2, 0);
    write_bytes(b1, d, 2 * REC - 1, 0);
    expect_load_error(bad, RT_SPLIT_TRAIN, "not a whole number of 3073-byte CIFAR-10 records", b1);
    d[REC] = 10;
    write_bytes(b1, d, 2 * REC, 0);
    expect_load_error(bad, RT_SPLIT_TRAIN, "record 1 has label 10", "0..9");
    d[REC] = 3;
    write_bytes(b1, d, 2 * REC, 0);
    write_cifar(bad, "data_batch_3.bin", 1, 3);
    expect_load_error(bad, RT_SPLIT_TRAIN, "data_batch_2.bin is missing", bad);
    expect_load_error(bad, RT_SPLIT_TEST, "no CIFAR-10 test batch", "test_batch.bin");
    free(d);
}

/* ---- PNG folders ---------------------------------------------------------- */

/* An H x W x C image whose pixels encode (tag, position). */
static void write_png_tagged(const char *path, int H, int W, int C, int tag) {
    uint8_t *p = malloc((size_t)H * W * C);
    for (int i = 0; i < H * W * C; i++) p[i] = (uint8_t)(tag * 31 + i * 7);
    char err[512];
    if (rt_png_write(path, p, H, W, C, err, sizeof err) != 0) fail_msg("%s", err);
    free(p);
}

static void check_tagged(const RtDataset *ds, int64_t i, int tag) {
    size_t sz = (size_t)ds->H * ds->W * ds->C;
    for (size_t k = 0; k < sz; k++)
        if (ds->pixels[(size_t)i * sz + k] != (uint8_t)(tag * 31 + k * 7))
            fail_msg("image %lld byte %zu: %d, expected tag %d's %d", (long long)i, k, ds->pixels[i * sz + k], tag,
                     (uint8_t)(tag * 31 + k * 7));
}

static void test_png_classes_with_test_folder(void **state) {
    (void)state;
    PATH(dir, "%s/pngcls", tmpdir);
    mkdir_in(dir);
    /* Classes by name: ant = 0, cat = 1. Tags: ant 10.., cat 20.., test 30... */
    const char *cls[2] = {"cat", "ant"};
    int counts[2] = {3, 2};
    for (int c = 0; c < 2; c++) {
        PATH(cd, "%s/%s", dir, cls[c]);
        mkdir_in(cd);
        for (int i = 0; i < counts[c]; i++) {
            PATH(p, "%s/img%d.png", cd, i);
            write_png_tagged(p, 6, 5, 1, (c ? 10 : 20) + i);
        }
    }
    PATH(td, "%s/test", dir);
    mkdir_in(td);
    PATH(tcat, "%s/cat", td);
    mkdir_in(tcat);
    PATH(t0, "%s/x.png", tcat);
    write_png_tagged(t0, 6, 5, 1, 30);

    RtDataset ds = load_ok(dir, RT_SPLIT_TRAIN);
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.H, 6);
    assert_int_equal(ds.W, 5);
    assert_int_equal(ds.C, 1);
    assert_int_equal(ds.classes, 2);
    assert_string_equal(ds.class_names[0], "ant");
    assert_string_equal(ds.class_names[1], "cat");
    int want_label[5] = {0, 0, 1, 1, 1}, want_tag[5] = {10, 11, 20, 21, 22};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ds.labels[i], want_label[i]);
        check_tagged(&ds, i, want_tag[i]);
    }
    rt_dataset_free(&ds);
    ds = load_ok(dir, RT_SPLIT_TEST);
    assert_int_equal(ds.n, 1);
    assert_int_equal(ds.classes, 2);
    assert_int_equal(ds.labels[0], 1);
    check_tagged(&ds, 0, 30);
    rt_dataset_free(&ds);

    /* A test class the training set lacks. */
    PATH(tdog, "%s/dog", td);
    mkdir_in(tdog);
    PATH(t1, "%s/y.png", tdog);
    write_png_tagged(t1, 6, 5, 1, 31);
    expect_load_error(dir, RT_SPLIT_TEST, "is not a class of the training images", "ant, cat");
    /* The training split does not look at test/. */
    ds = load_ok(dir, RT_SPLIT_TRAIN);
    rt_dataset_free(&ds);
}

static void test_png_flat_rgb_split(void **state) {
    (void)state;
    PATH(dir, "%s/pngflat", tmpdir);
    mkdir_in(dir);
    for (int i = 0; i < 21; i++) {
        PATH(p, "%s/im%02d.png", dir, 20 - i); /* written in reverse: order comes from names */
        write_png_tagged(p, 4, 3, 3, 20 - i);
    }
    RtDataset ds = load_ok(dir, RT_SPLIT_TRAIN);
    assert_int_equal(ds.n, 19);
    assert_int_equal(ds.C, 3);
    assert_int_equal(ds.classes, 0);
    assert_null(ds.labels);
    for (int i = 0; i < 19; i++) check_tagged(&ds, i, i);
    rt_dataset_free(&ds);
    ds = load_ok(dir, RT_SPLIT_TEST);
    assert_int_equal(ds.n, 2);
    check_tagged(&ds, 0, 19);
    check_tagged(&ds, 1, 20);
    rt_dataset_free(&ds);
}

static void test_png_per_class_split(void **state) {
    (void)state;
    PATH(dir, "%s/pngsplit", tmpdir);
    mkdir_in(dir);
    int counts[2] = {10, 12};
    for (int c = 0; c < 2; c++) {
        PATH(cd, "%s/%c", dir, 'a' + c);
        mkdir_in(cd);
        for (int i = 0; i < counts[c]; i++) {
            PATH(p, "%s/%02d.png", cd, i);
            write_png_tagged(p, 2, 2, 1, 50 * c + i);
        }
    }
    RtDataset tr = load_ok(dir, RT_SPLIT_TRAIN), te = load_ok(dir, RT_SPLIT_TEST);
    assert_int_equal(tr.n, 9 + 11);
    assert_int_equal(te.n, 2);
    assert_int_equal(te.labels[0], 0);
    assert_int_equal(te.labels[1], 1);
    check_tagged(&te, 0, 9);
    check_tagged(&te, 1, 61);
    check_tagged(&tr, 8, 8);
    check_tagged(&tr, 9, 50);
    assert_int_equal(tr.labels[9], 1);
    rt_dataset_free(&tr);
    rt_dataset_free(&te);
}

static void test_png_errors(void **state) {
    (void)state;
    /* Mixed sizes. */
    PATH(mixed, "%s/pngmixed", tmpdir);
    mkdir_in(mixed);
    PATH(m0, "%s/a.png", mixed);
    PATH(m1, "%s/b.png", mixed);
    write_png_tagged(m0, 4, 4, 1, 0);
    write_png_tagged(m1, 4, 5, 1, 1);
    expect_load_error(mixed, RT_SPLIT_TRAIN, "mixed sizes", "b.png' is 4x5x1 but");
    write_png_tagged(m1, 4, 4, 3, 1);
    expect_load_error(mixed, RT_SPLIT_TRAIN, "mixed sizes", "4x4x3");
    /* 16-bit image in the folder. */
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.format = PNG_FORMAT_LINEAR_Y;
    im.width = 4;
    im.height = 4;
    uint16_t deep[16] = {0};
    assert_true(png_image_write_to_file(&im, m1, 0, deep, 0, NULL));
    expect_load_error(mixed, RT_SPLIT_TRAIN, "16-bit", m1);
    /* A palette image is converted to RGB. */
    PATH(pal, "%s/pngpal", tmpdir);
    mkdir_in(pal);
    PATH(p0, "%s/p.png", pal);
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.format = PNG_FORMAT_RGB_COLORMAP;
    im.width = 2;
    im.height = 1;
    im.colormap_entries = 2;
    uint8_t cmap[6] = {1, 2, 3, 4, 5, 6}, idx[2] = {1, 0};
    assert_true(png_image_write_to_file(&im, p0, 0, idx, 0, cmap));
    RtDataset ds = load_ok(pal, RT_SPLIT_TRAIN);
    assert_int_equal(ds.C, 3);
    uint8_t want[6] = {4, 5, 6, 1, 2, 3};
    assert_memory_equal(ds.pixels, want, 6);
    rt_dataset_free(&ds);
    /* Too few images for a 10% test split. */
    expect_load_error(pal, RT_SPLIT_TEST, "too few for a 10% test split", "/test");
    /* PNG files next to class folders; an empty class folder. */
    PATH(both, "%s/pngboth", tmpdir);
    mkdir_in(both);
    PATH(bc, "%s/cls", both);
    mkdir_in(bc);
    PATH(bp, "%s/x.png", bc);
    write_png_tagged(bp, 2, 2, 1, 0);
    PATH(bempty, "%s/empty", both);
    mkdir_in(bempty);
    expect_load_error(both, RT_SPLIT_TRAIN, "holds no PNG images", bempty);
    PATH(btop, "%s/top.png", both);
    write_png_tagged(btop, 2, 2, 1, 0);
    expect_load_error(both, RT_SPLIT_TRAIN, "both PNG files", "folder of images per class");
    /* An empty directory, and one with unrelated files. */
    PATH(empty, "%s/emptydir", tmpdir);
    mkdir_in(empty);
    expect_load_error(empty, RT_SPLIT_TRAIN, "no data set found", "train-images-idx3-ubyte");
    PATH(junk, "%s/notes.txt", empty);
    write_bytes(junk, "hello", 5, 0);
    expect_load_error(empty, RT_SPLIT_TRAIN, "no data set found", empty);
    /* A damaged PNG among good ones. */
    PATH(dmg, "%s/c.png", mixed);
    write_png_tagged(m1, 4, 4, 1, 1);
    write_bytes(dmg, "\x89PNG\r\n\x1a\n\0\0", 10, 0);
    expect_load_error(mixed, RT_SPLIT_TRAIN, "damaged PNG", dmg);
}

/* ---- pixels → float ------------------------------------------------------- */

static void test_pixels_to_float(void **state) {
    (void)state;
    uint8_t all[256];
    float x[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    rt_pixels_to_float(all, 256, x);
    assert_true(x[0] == -1.0f);
    assert_true(x[255] == 1.0f);
    assert_true(x[127] == -0.5f / 127.5f);
    assert_true(x[128] == 0.5f / 127.5f);
    for (int i = 1; i < 256; i++) assert_true(x[i] > x[i - 1]);
    /* Bit-exact against the reference vectors' x.bin. */
    const char *cases[] = {"loss/c1_m5_8x8", "loss/c3_m10_8x8", "model/c3_r1_f8_m2_8x8"};
    for (int c = 0; c < 3; c++) {
        PATH(dir, "%s/%s", tu_reference_dir(), cases[c]);
        size_t n = 0;
        uint8_t *u8 = tu_read_file(tu_path(dir, "x_u8.bin"), &n);
        if (!u8) fail_msg("cannot read %s/x_u8.bin (set PXC_REFERENCE_DIR)", dir);
        float *want = tu_read_f32(tu_path(dir, "x.bin"), n);
        float *got = malloc(n * sizeof *got);
        rt_pixels_to_float(u8, (int64_t)n, got);
        assert_memory_equal(got, want, n * sizeof *got);
        free(u8);
        free(want);
        free(got);
    }
}

/* ---- batches ---------------------------------------------------------------- */

static void test_batcher_permutations(void **state) {
    (void)state;
    enum { N = 10, B = 3 };
    RtBatcher b;
    rt_batcher_init(&b, 1234, N);
    int64_t idx[B];
    for (int64_t e = 0; e < 5; e++) {
        int64_t perm[N];
        rt_batcher_permutation(1234, e, N, perm);
        int seen[N] = {0};
        for (int k = 0; k < N; k++) seen[perm[k]]++;
        for (int k = 0; k < N; k++) assert_int_equal(seen[k], 1);
        /* Three full batches per epoch, the 10th index skipped. */
        for (int j = 0; j < 3; j++) {
            /* The skip to the next epoch happens when the next batch is taken. */
            assert_int_equal(b.epoch, j == 0 && e > 0 ? e - 1 : e);
            assert_int_equal(b.pos, j == 0 && e > 0 ? 3 * B : j * B);
            assert_int_equal(rt_batcher_next(&b, B, idx), B);
            assert_memory_equal(idx, perm + j * B, sizeof idx);
        }
    }
    /* A pure function of (seed, epoch); seeds and epochs differ. */
    int64_t p1[100], p2[100], p3[100], p4[100];
    rt_batcher_permutation(7, 3, 100, p1);
    rt_batcher_permutation(7, 3, 100, p2);
    rt_batcher_permutation(8, 3, 100, p3);
    rt_batcher_permutation(7, 4, 100, p4);
    assert_memory_equal(p1, p2, sizeof p1);
    assert_memory_not_equal(p1, p3, sizeof p1);
    assert_memory_not_equal(p1, p4, sizeof p1);
    /* Batch larger than the set; an exact multiple moves to the next epoch. */
    int64_t big[N];
    assert_int_equal(rt_batcher_next(&b, 50, big), N);
    rt_batcher_free(&b);
    rt_batcher_init(&b, 1, 6);
    assert_int_equal(rt_batcher_next(&b, 3, idx), 3);
    assert_int_equal(rt_batcher_next(&b, 3, idx), 3);
    assert_int_equal(b.epoch, 1);
    assert_int_equal(b.pos, 0);
    assert_int_equal(rt_batcher_next(&b, 0, idx), 0);
    rt_batcher_free(&b);
    RtBatcher z;
    rt_batcher_init(&z, 1, 0);
    assert_int_equal(rt_batcher_next(&z, 4, idx), 0);
    rt_batcher_free(&z);
}

/* Every index lands in every position about equally often. */
static void test_batcher_uniform(void **state) {
    (void)state;
    enum { N = 5, E = 5000 };
    int count[N][N] = {{0}};
    int64_t p[N];
    for (int e = 0; e < E; e++) {
        rt_batcher_permutation(99, e, N, p);
        for (int k = 0; k < N; k++) count[k][p[k]]++;
    }
    /* Expected E/N = 1000 each, standard deviation ~28. */
    for (int k = 0; k < N; k++)
        for (int v = 0; v < N; v++)
            if (count[k][v] < 880 || count[k][v] > 1120)
                fail_msg("index %d at position %d %d times in %d epochs", v, k, count[k][v], E);
}

static void test_batcher_resume(void **state) {
    (void)state;
    enum { N = 37, B = 8, BEFORE = 11, AFTER = 20 };
    RtBatcher a;
    rt_batcher_init(&a, 0xfeedULL, N);
    int64_t idx[B];
    for (int i = 0; i < BEFORE; i++) rt_batcher_next(&a, B, idx);
    uint64_t seed = a.seed;
    int64_t epoch = a.epoch, pos = a.pos;
    assert_true(epoch > 0 && pos > 0);
    int64_t want[AFTER][B];
    for (int i = 0; i < AFTER; i++) rt_batcher_next(&a, B, want[i]);
    rt_batcher_free(&a);

    RtBatcher r;
    rt_batcher_init(&r, seed, N);
    r.epoch = epoch;
    r.pos = pos;
    for (int i = 0; i < AFTER; i++) {
        assert_int_equal(rt_batcher_next(&r, B, idx), B);
        assert_memory_equal(idx, want[i], sizeof idx);
    }
    rt_batcher_free(&r);
}

/* ---- the real data set ------------------------------------------------------ */

static void test_fashion_mnist(void **state) {
    (void)state;
    PATH(probe, "%s/train-images-idx3-ubyte.gz", RT_DEFAULT_DATA);
    struct stat s;
    if (stat(probe, &s) != 0) {
        print_message("  %s absent (Debian's dataset-fashion-mnist): skipped\n", RT_DEFAULT_DATA);
        skip();
    }
    RtDataset tr = load_ok(RT_DEFAULT_DATA, RT_SPLIT_TRAIN);
    assert_int_equal(tr.n, 60000);
    assert_int_equal(tr.H, 28);
    assert_int_equal(tr.W, 28);
    assert_int_equal(tr.C, 1);
    assert_int_equal(tr.classes, 10);
    int per[10] = {0};
    for (int64_t i = 0; i < tr.n; i++) per[tr.labels[i]]++;
    for (int k = 0; k < 10; k++) assert_int_equal(per[k], 6000);
    rt_dataset_free(&tr);
    RtDataset te = load_ok(RT_DEFAULT_DATA, RT_SPLIT_TEST);
    assert_int_equal(te.n, 10000);
    assert_int_equal(te.classes, 10);
    /* The first test labels, read from the file with zcat | xxd. */
    int first[8] = {9, 2, 1, 1, 6, 1, 4, 6};
    for (int i = 0; i < 8; i++) assert_int_equal(te.labels[i], first[i]);
    rt_dataset_free(&te);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_dir),
        cmocka_unit_test(test_idx_file),
        cmocka_unit_test(test_idx_errors),
        cmocka_unit_test(test_cifar),
        cmocka_unit_test(test_png_classes_with_test_folder),
        cmocka_unit_test(test_png_flat_rgb_split),
        cmocka_unit_test(test_png_per_class_split),
        cmocka_unit_test(test_png_errors),
        cmocka_unit_test(test_pixels_to_float),
        cmocka_unit_test(test_batcher_permutations),
        cmocka_unit_test(test_batcher_uniform),
        cmocka_unit_test(test_batcher_resume),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
