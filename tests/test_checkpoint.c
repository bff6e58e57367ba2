/*
 * test_checkpoint.c — checkpoints (runtime/checkpoint.h) and metrics files:
 * an exact round trip of every tensor and metadata field; the file parsed
 * independently as standard safetensors (length, JSON header, offsets,
 * names, dtypes, shapes, metadata); damaged files (a flipped data byte, an
 * edited metadata value, truncation, garbage, a plain safetensors file,
 * another spec's tensors or shapes) each refused with a message naming the
 * problem; the run directory's checkpoint list, pruning and temporary-file
 * cleanup; metrics.jsonl truncation on resume.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "runtime/checkpoint.h"
#include "runtime/progress.h"
#include "runtime/safetensors.h"
#include "testutil.h"

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(tmpdir, sizeof tmpdir, "pxc_test_ckpt_");
}
static int teardown(void **state) {
    (void)state;
    return tu_rmtree(tmpdir);
}

/* A three-tensor model: a [2,3,1,4] conv v, its g [4], and an hw [3,2]. */
static const pxc_tensor table[3] = {
    {"init.u.v", 4, {2, 3, 1, 4}, 0, 24},
    {"init.u.g", 1, {4}, 24, 4},
    {"up.0.u.0.cond.hw", 2, {3, 2}, 28, 6},
};
enum { NP = 34 };

static void fill(float *p, float base) {
    for (int i = 0; i < NP; i++) p[i] = base + 0.25f * (float)i - (i % 3 ? 0.0f : 1e-7f * (float)i);
}

static float P[NP], E[NP], M[NP], V[NP];

static RtCheckpoint sample_ckpt(void) {
    fill(P, 1.0f), fill(E, -2.0f), fill(M, 3.5f), fill(V, 1e-9f);
    RtCheckpoint ck;
    memset(&ck, 0, sizeof ck);
    ck.params = P, ck.ema = E, ck.adam_m = M, ck.adam_v = V;
    ck.step = 1234;
    ck.seed = 18446744073709551557ULL;  /* needs all 64 bits */
    ck.data_seed = 42;
    ck.data_epoch = 3, ck.data_pos = 160, ck.data_n = 320;
    ck.batch = 16;
    ck.adam = rt_adam_defaults();
    ck.adam.lr = 3e-4;
    ck.train_seconds = 123.456789;
    ck.images_seen = 19744;
    ck.spec_name = "tiny";
    ck.spec_resolved = "nr_resnet=1\nnr_filters=4\n";
    ck.spec_hash = 0x0123456789abcdefULL;
    return ck;
}

static const char *path_in(const char *name) { return tu_path(tmpdir, name); }

static void write_sample(const char *path) {
    RtCheckpoint ck = sample_ckpt();
    char err[512];
    if (rt_ckpt_write(path, table, 3, &ck, err, sizeof err)) fail_msg("%s", err);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *path = path_in("rt.safetensors");
    write_sample(path);
    RtCheckpoint r;
    char err[512];
    if (rt_ckpt_read(path, table, 3, NP, &r, err, sizeof err)) fail_msg("%s", err);
    assert_memory_equal(r.params, P, sizeof P);
    assert_memory_equal(r.ema, E, sizeof E);
    assert_memory_equal(r.adam_m, M, sizeof M);
    assert_memory_equal(r.adam_v, V, sizeof V);
    assert_int_equal(r.step, 1234);
    assert_true(r.seed == 18446744073709551557ULL);
    assert_true(r.data_seed == 42);
    assert_int_equal(r.data_epoch, 3);
    assert_int_equal(r.data_pos, 160);
    assert_int_equal(r.data_n, 320);
    assert_int_equal(r.batch, 16);
    assert_true(r.adam.lr == 3e-4);
    assert_true(r.adam.lr_decay == 0.999995);
    assert_true(r.adam.beta1 == 0.95 && r.adam.beta2 == 0.9995 && r.adam.eps == 1e-8);
    assert_true(r.adam.ema_decay == 0.9995);
    assert_true(r.train_seconds == 123.456789);
    assert_int_equal(r.images_seen, 19744);
    assert_string_equal(r.spec_name, "tiny");
    assert_string_equal(r.spec_resolved, "nr_resnet=1\nnr_filters=4\n");
    assert_true(r.spec_hash == 0x0123456789abcdefULL);
    assert_string_equal(r.pxc_version, PXC_VERSION);
    rt_ckpt_free(&r);
}

/* Parse the file as the safetensors format defines it, without pxc's reader. */
static void test_standard_safetensors(void **state) {
    (void)state;
    const char *path = path_in("std.safetensors");
    write_sample(path);
    size_t len;
    unsigned char *buf = tu_read_file(path, &len);
    assert_non_null(buf);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    assert_true(8 + hl <= len);
    assert_int_equal((8 + hl) % 8, 0);
    char *json = strndup((char *)buf + 8, hl);
    cJSON *h = cJSON_Parse(json);
    assert_non_null(h);
    const char *kinds[4] = {"param/", "ema/", "adam_m/", "adam_v/"};
    const float *bufs[4] = {P, E, M, V};
    size_t data_len = len - 8 - hl, covered = 0;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 3; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", kinds[k], table[i].name);
            cJSON *t = cJSON_GetObjectItemCaseSensitive(h, name);
            if (!t) fail_msg("no tensor %s in the header", name);
            assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, "F32");
            cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
            assert_int_equal(cJSON_GetArraySize(shape), table[i].rank);
            for (int d = 0; d < table[i].rank; d++)
                assert_int_equal(cJSON_GetArrayItem(shape, d)->valuedouble, table[i].shape[d]);
            cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
            size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble, e = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
            assert_int_equal(e - b, table[i].numel * 4);
            assert_true(e <= data_len);
            assert_memory_equal(buf + 8 + hl + b, bufs[k] + table[i].offset, e - b);
            covered += e - b;
        }
    assert_int_equal(covered, data_len);
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    assert_non_null(meta);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "pxc-checkpoint");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "step")->valuestring, "1234");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "spec_hash")->valuestring, "0123456789abcdef");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "data_pos")->valuestring, "160");
    /* every metadata value is a string, as the format requires */
    for (cJSON *it = meta->child; it; it = it->next) assert_true(cJSON_IsString(it));
    cJSON_Delete(h);
    free(json);
    free(buf);
}

/* Read path and expect failure code `code` with every needle in the message. */
static void expect_error(const char *path, const pxc_tensor *t, int n, int64_t np, int code, const char *needle1,
                         const char *needle2) {
    RtCheckpoint r;
    char err[1024];
    int rc = rt_ckpt_read(path, t, n, np, &r, err, sizeof err);
    if (rc != code) fail_msg("reading %s returned %d, expected %d (%s)", path, rc, code, rc ? err : "");
    if (needle1 && !strstr(err, needle1)) fail_msg("message lacks '%s': %s", needle1, err);
    if (needle2 && !strstr(err, needle2)) fail_msg("message lacks '%s': %s", needle2, err);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_damaged(void **state) {
    (void)state;
    const char *good = path_in("good.safetensors");
    write_sample(good);
    size_t len;
    unsigned char *buf = tu_read_file(good, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];

    /* one flipped bit in the data */
    unsigned char *c = malloc(len);
    memcpy(c, buf, len);
    c[8 + hl + 37] ^= 0x10;
    const char *p1 = path_in("flip.safetensors");
    write_bytes(p1, c, len);
    expect_error(p1, table, 3, NP, -1, "corrupted", "flip.safetensors");

    /* a metadata value edited in place (same length): step 1234 -> 1235 */
    memcpy(c, buf, len);
    char *s = memmem(c, 8 + hl, "\"1234\"", 6);
    assert_non_null(s);
    s[4] = '5';
    const char *p2 = path_in("meta.safetensors");
    write_bytes(p2, c, len);
    expect_error(p2, table, 3, NP, -1, "corrupted", NULL);

    /* truncated: half the file, and only the header */
    const char *p3 = path_in("trunc.safetensors");
    write_bytes(p3, buf, len / 2);
    expect_error(p3, table, 3, NP, -1, "trunc.safetensors", NULL);
    write_bytes(p3, buf, 8 + hl);
    expect_error(p3, table, 3, NP, -1, "trunc.safetensors", NULL);
    write_bytes(p3, buf, 5);
    expect_error(p3, table, 3, NP, -1, "trunc.safetensors", NULL);

    /* empty, garbage, missing */
    const char *p4 = path_in("garbage.safetensors");
    write_bytes(p4, "", 0);
    expect_error(p4, table, 3, NP, -1, "garbage.safetensors", NULL);
    write_bytes(p4, "this is not a checkpoint at all, just some text\n", 48);
    expect_error(p4, table, 3, NP, -1, "garbage.safetensors", NULL);
    expect_error(path_in("missing.safetensors"), table, 3, NP, -1, "missing.safetensors", NULL);

    /* a standard safetensors file that is not a checkpoint (e.g. reference weights) */
    RtStTensor t = {"init.u.v", RT_ST_F32, 4, {2, 3, 1, 4}, P, 0};
    char err[512];
    const char *p5 = path_in("weights.safetensors");
    if (rt_st_write(p5, &t, 1, NULL, 0, err, sizeof err)) fail_msg("%s", err);
    expect_error(p5, table, 3, NP, -1, "not a pxc checkpoint", "pxc import");

    /* another spec: a tensor the checkpoint lacks, one of another shape, one too many */
    pxc_tensor other[3];
    memcpy(other, table, sizeof other);
    other[2].name = "up.0.u.0.cond.hx";
    expect_error(good, other, 3, NP, -2, "no tensor 'param/up.0.u.0.cond.hx'", "spec 'tiny'");
    memcpy(other, table, sizeof other);
    other[2].shape[0] = 2, other[2].shape[1] = 3;
    expect_error(good, other, 3, NP, -2, "'param/up.0.u.0.cond.hw' is [3,2] but the spec needs [2,3]", NULL);
    expect_error(good, table, 2, 28, -2, "'param/up.0.u.0.cond.hw' that the spec does not have", NULL);
    free(c);
    free(buf);
}

static void touch(const char *dir, const char *name) {
    FILE *f = fopen(tu_path(dir, name), "w");
    assert_non_null(f);
    fclose(f);
}

static void test_run_dir(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/run", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    int64_t *steps;
    int n;
    char err[512];
    assert_int_equal(rt_ckpt_list(tu_path(tmpdir, "nonexistent"), &steps, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    touch(dir, "ckpt-00000500.safetensors");
    touch(dir, "ckpt-00000020.safetensors");
    touch(dir, "ckpt-00001000.safetensors");
    touch(dir, "ckpt-123456789.safetensors");
    touch(dir, "ckpt-00000100.safetensors");
    touch(dir, "ckpt-00000700.safetensors.tmp.4242");  /* a writer killed mid-write */
    touch(dir, "ckpt-1.safetensors");                  /* not a name pxc writes */
    touch(dir, "ckpt-00000300.safetensors.bak");
    touch(dir, "metrics.jsonl");
    assert_int_equal(rt_ckpt_list(dir, &steps, &n, err, sizeof err), 0);
    assert_int_equal(n, 5);
    const int64_t want[5] = {20, 100, 500, 1000, 123456789};
    for (int i = 0; i < 5; i++) assert_int_equal(steps[i], want[i]);
    free(steps);
    char *p = rt_ckpt_path(dir, 77);
    assert_string_equal(p, tu_path(dir, "ckpt-00000077.safetensors"));
    free(p);
    assert_int_equal(rt_ckpt_prune(dir, 3, err, sizeof err), 0);
    assert_int_equal(rt_ckpt_list(dir, &steps, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(steps[0], 500);
    assert_int_equal(steps[2], 123456789);
    free(steps);
    assert_int_equal(rt_ckpt_clean_temps(dir), 1);
    assert_int_equal(access(tu_path(dir, "ckpt-00000700.safetensors.tmp.4242"), F_OK), -1);
    assert_int_equal(access(tu_path(dir, "ckpt-00000300.safetensors.bak"), F_OK), 0);
    assert_int_equal(access(tu_path(dir, "metrics.jsonl"), F_OK), 0);
}

static void test_metrics(void **state) {
    (void)state;
    const char *path = path_in("metrics.jsonl");
    char err[512];
    RtStats s;
    memset(&s, 0, sizeof s);
    for (int step = 10; step <= 50; step += 10) {
        s.step = step;
        s.train_bpd = 8.0 - 0.01 * step;
        s.test_bpd = step == 30 ? 7.5 : NAN;
        s.lr = 1e-3;
        s.img_per_s = 100;
        s.wall_time = step;
        s.epoch = NAN;
        assert_int_equal(rt_metrics_append(path, &s, err, sizeof err), 0);
    }
    FILE *f = fopen(path, "a");
    fputs("{\"step\": 60, \"train_b", f);  /* torn by a kill */
    fclose(f);
    assert_int_equal(rt_metrics_truncate(path, 30, err, sizeof err), 0);
    size_t len;
    char *text = tu_read_file(path, &len);
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        lines++;
        assert_int_equal(cJSON_GetObjectItem(o, "step")->valuedouble, 10 * lines);
        cJSON *tb = cJSON_GetObjectItem(o, "test_bpd");
        if (lines == 3) assert_true(tb->valuedouble == 7.5);
        else assert_true(cJSON_IsNull(tb));
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "epoch")));
        assert_non_null(cJSON_GetObjectItem(o, "wall_time"));
        assert_non_null(cJSON_GetObjectItem(o, "lr"));
        assert_non_null(cJSON_GetObjectItem(o, "images_per_s"));
        cJSON_Delete(o);
    }
    assert_int_equal(lines, 3);
    free(text);
    /* a missing file is fine */
    assert_int_equal(rt_metrics_truncate(path_in("none.jsonl"), 5, err, sizeof err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_standard_safetensors),
        cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_run_dir),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
