/*
 * test_safetensors.c — the safetensors reader and writer: a write → read
 * round trip with metadata (order kept, alignment, misaligned foreign
 * offsets), the PyTorch-written reference weights and gradients checked
 * against their manifest, and damaged files that must give clear errors.
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "runtime/fileio.h"
#include "runtime/safetensors.h"
#include "testutil.h"

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(tmpdir, sizeof tmpdir, "pxc_test_st_");
}

static int teardown(void **state) {
    (void)state;
    return tu_rmtree(tmpdir);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* A hand-made file: header JSON (padded to a multiple of 8 unless raw_len)
 * and ndata bytes of data 0, 1, 2, ... */
static const char *make_file(const char *name, const char *json, size_t ndata) {
    const char *path = tu_path(tmpdir, name);
    size_t jl = strlen(json), hl = (jl + 7) & ~(size_t)7;
    unsigned char *b = calloc(1, 8 + hl + ndata);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', hl - jl);
    for (size_t i = 0; i < ndata; i++) b[8 + hl + i] = (unsigned char)i;
    write_bytes(path, b, 8 + hl + ndata);
    free(b);
    return path;
}

/* Opening path must fail with an error naming the file and holding `want`. */
static void expect_error(const char *path, const char *want) {
    char err[512] = "";
    RtSafetensors *st = rt_st_open(path, err, sizeof err);
    if (st) {
        rt_st_close(st);
        fail_msg("%s opened, expected an error with '%s'", path, want);
    }
    if (getenv("PXC_TEST_VERBOSE")) fprintf(stderr, "  %s\n", err);
    if (!strstr(err, want) || !strstr(err, path)) fail_msg("error '%s' lacks '%s' or the path", err, want);
}

static void test_round_trip(void **state) {
    (void)state;
    float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};   /* [2,3] */
    uint8_t b[5] = {0, 1, 127, 128, 255};                     /* [5] */
    float c[3] = {7.0f, 8.0f, 9.0f};                          /* [3], lands at byte 29: misaligned */
    double d = 3.141592653589793;                             /* scalar */
    int32_t e[2] = {-5, 2147483647};                          /* [2] */
    RtStTensor t[5] = {
        {.name = "zeta", .dtype = RT_ST_F32, .rank = 2, .shape = {2, 3}, .data = a},
        {.name = "alpha", .dtype = RT_ST_U8, .rank = 1, .shape = {5}, .data = b},
        {.name = "mid.c", .dtype = RT_ST_F32, .rank = 1, .shape = {3}, .data = c},
        {.name = "scalar", .dtype = RT_ST_F64, .rank = 0, .data = &d},
        {.name = "ints", .dtype = RT_ST_I32, .rank = 1, .shape = {2}, .data = e},
    };
    const char *meta[] = {"step", "1200", "note", "quotes \" and \\ and ünïcode"};
    const char *path = tu_path(tmpdir, "rt.safetensors");
    char err[512] = "";
    assert_int_equal(rt_st_write(path, t, 5, meta, 2, err, sizeof err), 0);

    /* Raw layout: header length a multiple of 8, data right after, packed. */
    size_t n = 0;
    unsigned char *raw = tu_read_file(path, &n);
    assert_non_null(raw);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(n, 8 + hl + sizeof a + sizeof b + sizeof c + sizeof d + sizeof e);
    assert_memory_equal(raw + 8 + hl, a, sizeof a);
    assert_memory_equal(raw + 8 + hl + sizeof a, b, sizeof b);
    free(raw);

    RtSafetensors *st = rt_st_open(path, err, sizeof err);
    if (!st) fail_msg("%s", err);
    assert_int_equal(rt_st_count(st), 5);
    const char *order[] = {"zeta", "alpha", "mid.c", "scalar", "ints"};
    for (int i = 0; i < 5; i++) {
        assert_string_equal(rt_st_name(st, i), order[i]);
        const RtStTensor *r = rt_st_tensor(st, i);
        assert_int_equal(r->dtype, t[i].dtype);
        assert_int_equal(r->rank, t[i].rank);
        for (int k = 0; k < r->rank; k++) assert_int_equal(r->shape[k], t[i].shape[k]);
        assert_int_equal(r->nbytes, rt_st_numel(&t[i]) * rt_st_dtype_size(t[i].dtype));
        assert_int_equal((uintptr_t)r->data % rt_st_dtype_size(r->dtype), 0);
        assert_memory_equal(r->data, t[i].data, r->nbytes);
    }
    assert_ptr_equal(rt_st_find(st, "mid.c"), rt_st_tensor(st, 2));
    assert_null(rt_st_find(st, "nope"));
    assert_string_equal(rt_st_metadata(st, "step"), "1200");
    assert_string_equal(rt_st_metadata(st, "note"), meta[3]);
    assert_string_equal(rt_st_metadata(st, "writer"), "pxc " PXC_VERSION);
    assert_null(rt_st_metadata(st, "missing"));
    assert_int_equal(rt_st_metadata_count(st), 3);
    const char *k, *v;
    rt_st_metadata_at(st, 0, &k, &v);
    assert_string_equal(k, "writer");
    rt_st_metadata_at(st, 2, &k, &v);
    assert_string_equal(k, "note");
    rt_st_close(st);

    /* The writer refuses repeated names and metadata keys. */
    RtStTensor dup[2] = {t[0], t[0]};
    assert_int_equal(rt_st_write(path, dup, 2, NULL, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "repeated"));
    const char *dupmeta[] = {"a", "1", "a", "2"};
    assert_int_equal(rt_st_write(path, t, 1, dupmeta, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
}

static const char *f32_hdr = "{\"__metadata__\":{\"k\":\"v\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
                             "\"data_offsets\":[0,8]}";

static void test_foreign_files(void **state) {
    (void)state;
    char json[512], err[512];
    /* A header without padding and with a misaligned offset still reads. */
    const char *path = tu_path(tmpdir, "odd.safetensors");
    {
        const char *h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]}}";
        size_t hl = strlen(h);
        unsigned char buf[256] = {0};
        for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        float f = 42.5f;
        buf[8 + hl] = 9;
        memcpy(buf + 8 + hl + 1, &f, 4);
        write_bytes(path, buf, 8 + hl + 5);
        RtSafetensors *st = rt_st_open(path, err, sizeof err);
        if (!st) fail_msg("%s", err);
        const RtStTensor *t = rt_st_find(st, "f");
        assert_int_equal((uintptr_t)t->data % 4, 0);
        assert_true(*(const float *)t->data == 42.5f);
        assert_int_equal(*(const uint8_t *)rt_st_find(st, "b")->data, 9);
        rt_st_close(st);
    }
    /* Empty tensors are allowed anywhere in the tiling. */
    snprintf(json, sizeof json, "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
             "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
    RtSafetensors *st = rt_st_open(make_file("empty.safetensors", json, 8), err, sizeof err);
    if (!st) fail_msg("%s", err);
    assert_int_equal(rt_st_count(st), 2);
    rt_st_close(st);
}

static void test_damaged(void **state) {
    (void)state;
    char json[512];
    /* Valid baseline. */
    snprintf(json, sizeof json, "%s}", f32_hdr);
    char err[512];
    RtSafetensors *st = rt_st_open(make_file("ok.safetensors", json, 8), err, sizeof err);
    if (!st) fail_msg("%s", err);
    rt_st_close(st);

    expect_error(tu_path(tmpdir, "does-not-exist.safetensors"), "cannot open");
    expect_error(tmpdir, "not a regular file");
    write_bytes(tu_path(tmpdir, "tiny.safetensors"), "\x10\0\0", 3);
    expect_error(tu_path(tmpdir, "tiny.safetensors"), "too short");
    /* Header length beyond the file. */
    {
        unsigned char b[40] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
        write_bytes(tu_path(tmpdir, "longhdr.safetensors"), b, sizeof b);
        expect_error(tu_path(tmpdir, "longhdr.safetensors"), "past the end of the file");
        unsigned char h[16] = {0, 0, 0, 0, 0, 0, 0, 0x80};
        write_bytes(tu_path(tmpdir, "huge.safetensors"), h, sizeof h);
        expect_error(tu_path(tmpdir, "huge.safetensors"), "past the end of the file");
    }
    expect_error(make_file("badjson.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],", 8), "not valid JSON");
    expect_error(make_file("array.safetensors", "[1,2]", 0), "not an object");
    expect_error(make_file("dtype.safetensors", "{\"w\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                 "unknown dtype 'Q7'");
    expect_error(make_file("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8),
                 "missing \"shape\"");
    expect_error(make_file("negshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
                           8), "shape[0] is not a non-negative integer");
    expect_error(make_file("span.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                 "needs 12 bytes but data_offsets [0, 8] span 8");
    expect_error(make_file("backwards.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}",
                           8), "end before they begin");
    /* Offsets past the data (a truncated data section). */
    snprintf(json, sizeof json, "%s}", f32_hdr);
    expect_error(make_file("short.safetensors", json, 4), "go past the end of the data");
    expect_error(make_file("trailing.safetensors", json, 12), "4 bytes of trailing data");
    expect_error(make_file("overlap.safetensors",
                           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlap tensor 'a'");
    expect_error(make_file("gap.safetensors",
                           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12), "gap");
    expect_error(make_file("dupname.safetensors",
                           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "appears twice");
    expect_error(make_file("meta.safetensors", "{\"__metadata__\":{\"k\":3}}", 0), "entry 'k' is not a string");
    /* Errors in foreign files do not claim pxc wrote them. */
    expect_error(make_file("foreign.safetensors", json, 4), "truncated");
    rt_st_open(tu_path(tmpdir, "foreign.safetensors"), err, sizeof err);
    assert_null(strstr(err, "regenerate"));
}

/* A file pxc wrote, then damaged: the message says to regenerate it. */
static void test_damaged_pxc_file(void **state) {
    (void)state;
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = (float)i;
    RtStTensor t = {.name = "w", .dtype = RT_ST_F32, .rank = 2, .shape = {8, 8}, .data = w};
    const char *path = tu_path(tmpdir, "pxc.safetensors");
    char err[512];
    assert_int_equal(rt_st_write(path, &t, 1, NULL, 0, err, sizeof err), 0);
    size_t n = 0;
    unsigned char *b = tu_read_file(path, &n);
    write_bytes(path, b, n - 10);
    expect_error(path, "truncated");
    expect_error(path, "regenerate");
    free(b);
}

/* The reference weights and gradients (written by PyTorch tools): every
 * tensor of the manifest, in order, with its shape. */
static void test_reference_files(void **state) {
    (void)state;
    const char *dir = tu_path(tu_reference_dir(), "model");
    size_t n = 0;
    char *text = tu_read_file(tu_path(dir, "manifest.json"), &n);
    if (!text) fail_msg("cannot read the reference manifest in %s (set PXC_REFERENCE_DIR)", dir);
    cJSON *man = cJSON_Parse(text);
    assert_non_null(man);
    const cJSON *cases = cJSON_GetObjectItem(man, "cases");
    int ncases = 0;
    for (const cJSON *c = cases->child; c; c = c->next, ncases++) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        int ntensors = cJSON_GetObjectItem(c, "tensors")->valueint;
        const cJSON *weights = cJSON_GetObjectItem(c, "weights");
        assert_int_equal(cJSON_GetArraySize(weights), ntensors);
        const char *files[2] = {"weights.safetensors", "grads.safetensors"};
        for (int f = 0; f < 2; f++) {
            char path[1024], err[512];
            snprintf(path, sizeof path, "%s/%s/%s", dir, name, files[f]);
            RtSafetensors *st = rt_st_open(path, err, sizeof err);
            if (!st) fail_msg("%s", err);
            assert_int_equal(rt_st_count(st), ntensors);
            int i = 0;
            int64_t floats = 0;
            for (const cJSON *w = weights->child; w; w = w->next, i++) {
                const RtStTensor *t = rt_st_tensor(st, i);
                if (strcmp(t->name, cJSON_GetObjectItem(w, "name")->valuestring) != 0)
                    fail_msg("%s: tensor %d is '%s', manifest says '%s'", path, i, t->name,
                             cJSON_GetObjectItem(w, "name")->valuestring);
                assert_int_equal(t->dtype, RT_ST_F32);
                const cJSON *shape = cJSON_GetObjectItem(w, "shape");
                assert_int_equal(t->rank, cJSON_GetArraySize(shape));
                int k = 0;
                for (const cJSON *s = shape->child; s; s = s->next, k++) assert_int_equal(t->shape[k], s->valueint);
                floats += rt_st_numel(t);
            }
            if (f == 0) assert_int_equal(floats, cJSON_GetObjectItem(c, "params")->valueint);
            char cfg[16];
            snprintf(cfg, sizeof cfg, "%d", cJSON_GetObjectItem(c, "nr_filters")->valueint);
            assert_string_equal(rt_st_metadata(st, "nr_filters"), cfg);

            /* Rewriting it with pxc keeps names, order, data and metadata. */
            if (f == 0) {
                int nt = rt_st_count(st), nm = rt_st_metadata_count(st);
                RtStTensor *ts = calloc((size_t)nt, sizeof *ts);
                const char **kv = calloc(2 * (size_t)nm, sizeof *kv);
                for (int j = 0; j < nt; j++) ts[j] = *rt_st_tensor(st, j);
                for (int j = 0; j < nm; j++) rt_st_metadata_at(st, j, &kv[2 * j], &kv[2 * j + 1]);
                const char *copy = tu_path(tmpdir, "copy.safetensors");
                assert_int_equal(rt_st_write(copy, ts, nt, kv, nm, err, sizeof err), 0);
                RtSafetensors *st2 = rt_st_open(copy, err, sizeof err);
                if (!st2) fail_msg("%s", err);
                assert_int_equal(rt_st_count(st2), nt);
                for (int j = 0; j < nt; j++) {
                    assert_string_equal(rt_st_name(st2, j), ts[j].name);
                    assert_memory_equal(rt_st_tensor(st2, j)->data, ts[j].data, ts[j].nbytes);
                }
                for (int j = 0; j < nm; j++) assert_string_equal(rt_st_metadata(st2, kv[2 * j]), kv[2 * j + 1]);
                rt_st_close(st2);
                free(ts);
                free(kv);
            }
            rt_st_close(st);
        }
        /* The same file cut short and with a bad header length. */
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/weights.safetensors", dir, name);
        size_t len = 0;
        unsigned char *raw = tu_read_file(path, &len);
        const char *cut = tu_path(tmpdir, "cut.safetensors");
        write_bytes(cut, raw, len - 4);
        expect_error(cut, "truncated");
        raw[5] = 1;
        write_bytes(cut, raw, len);
        expect_error(cut, "past the end of the file");
        free(raw);
    }
    assert_int_equal(ncases, 3);
    cJSON_Delete(man);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_foreign_files),
        cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_damaged_pxc_file),
        cmocka_unit_test(test_reference_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
