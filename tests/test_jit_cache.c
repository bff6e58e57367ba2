/*
 * test_jit_cache.c — the on-disk object cache of compiler/llvm: round trip;
 * every single-byte flip, every truncation, appended garbage, a wrong
 * format version, a wrong key and absurd lengths behind a valid checksum
 * are all detected as misses with a reason (never a crash); and a JIT
 * session reuses an entry, rebuilds a corrupted one and keeps working when
 * the cache cannot be written.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llvm/jit.h"
#include "llvm/jit_ir.h"
#include "testutil.h"

static char dir[] = "/tmp/pxc_test_jit_cache_XXXXXX";

static JitCacheKey key_a(void) {
    JitCacheKey k = {{0x1234567890abcdefULL, 0x0fedcba987654321ULL}, "znver3", "+avx,+fma", "14.0.6", "0.1.0"};
    return k;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    unlink(path);   /* a fresh file: truncating one in place is slow on ext4 */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static uint64_t fnv(const unsigned char *p, size_t n) { return hash_bytes(HASH_INIT, p, n); }

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Rewrite the trailing checksum so only the change under test differs. */
static void reseal(unsigned char *buf, size_t n) { put64(buf + n - 8, fnv(buf, n - 8)); }

static int expect_miss(const JitCacheKey *k, const char *why) {
    JitObject *objs = (JitObject *)1;
    int n = -1;
    char note[160] = "";
    int r = jit_cache_load(dir, k, &objs, &n, note, sizeof note);
    assert_int_equal(r, 0);
    assert_null(objs);
    assert_int_equal(n, 0);
    assert_true(note[0] != 0);
    if (why && !strstr(note, why)) fail_msg("expected a miss for '%s', got '%s'", why, note);
    return r;
}

static JitObject fake[3];

static void make_fake(size_t l0, size_t l1, size_t l2) {
    size_t lens[3] = {l0, l1, l2};
    for (int i = 0; i < 3; i++) {
        fake[i].len = lens[i];
        fake[i].data = malloc(lens[i]);
        for (size_t b = 0; b < lens[i]; b++) ((unsigned char *)fake[i].data)[b] = (unsigned char)(b * 31 + i * 7);
    }
}

static void free_fake(void) {
    for (int i = 0; i < 3; i++) free(fake[i].data);
}

static void test_round_trip(void **state) {
    JitCacheKey k = key_a();
    char note[160];
    expect_miss(&k, "absent");
    make_fake(1, 100, 5000);
    assert_int_equal(jit_cache_store(dir, &k, fake, 3, note, sizeof note), 0);
    JitObject *objs;
    int n;
    assert_int_equal(jit_cache_load(dir, &k, &objs, &n, note, sizeof note), 1);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(objs[i].len, fake[i].len);
        assert_memory_equal(objs[i].data, fake[i].data, fake[i].len);
    }
    jit_objects_free(objs, n);
    /* another pxc version, CPU or program: another file */
    JitCacheKey k2 = k;
    k2.pxc_version = "0.2.0";
    expect_miss(&k2, "absent");
    k2 = k;
    k2.cpu = "skylake-avx512";
    expect_miss(&k2, "absent");
    k2 = k;
    k2.hash[1]++;
    expect_miss(&k2, "absent");
    free_fake();
}

static void test_corruption(void **state) {
    JitCacheKey k = key_a();
    char note[160];
    make_fake(40, 300, 17);
    assert_int_equal(jit_cache_store(dir, &k, fake, 3, note, sizeof note), 0);
    char *path = jit_cache_path(dir, &k);
    size_t n;
    unsigned char *good = tu_read_file(path, &n);
    assert_non_null(good);
    unsigned char *buf = malloc(n + 16);

    /* every single-byte flip */
    for (size_t i = 0; i < n; i++) {
        memcpy(buf, good, n);
        buf[i] ^= (unsigned char)(1u << (i % 8));
        write_bytes(path, buf, n);
        expect_miss(&k, NULL);
    }
    /* every truncation */
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, good, len);
        expect_miss(&k, NULL);
    }
    /* garbage appended */
    memcpy(buf, good, n);
    memset(buf + n, 0xab, 16);
    write_bytes(path, buf, n + 16);
    expect_miss(&k, "checksum");
    /* a future format, correctly sealed */
    memcpy(buf, good, n);
    buf[8] = 2;
    reseal(buf, n);
    write_bytes(path, buf, n);
    expect_miss(&k, "format version 2");
    /* another pxc version in the header, correctly sealed */
    JitCacheKey old = k;
    old.pxc_version = "0.0.9";
    assert_int_equal(jit_cache_store(dir, &old, fake, 3, note, sizeof note), 0);
    char *oldpath = jit_cache_path(dir, &old);
    assert_int_equal(rename(oldpath, path), 0);
    expect_miss(&k, "pxc version");
    free(oldpath);
    /* another program's hash in the header */
    memcpy(buf, good, n);
    buf[16] ^= 1;
    reseal(buf, n);
    write_bytes(path, buf, n);
    expect_miss(&k, "another kernel program");
    /* absurd object count and lengths behind a valid checksum */
    size_t off_lens = 36 + strlen(k.cpu) + strlen(k.features) + strlen(k.llvm_version) + strlen(k.pxc_version) + 4;
    memcpy(buf, good, n);
    put64(buf + off_lens, (uint64_t)1 << 60);
    reseal(buf, n);
    write_bytes(path, buf, n);
    expect_miss(&k, "bad object length");
    memcpy(buf, good, n);
    buf[12] = 0xff, buf[13] = 0xff, buf[14] = 0xff, buf[15] = 0x7f;
    reseal(buf, n);
    write_bytes(path, buf, n);
    expect_miss(&k, "object count");
    memcpy(buf, good, n);
    put64(buf + off_lens, 39);   /* lengths no longer add up */
    reseal(buf, n);
    write_bytes(path, buf, n);
    expect_miss(&k, "add up");
    /* not a cache file at all */
    write_bytes(path, "hello, world, this is not an object cache entry\n", 48);
    expect_miss(&k, "magic");
    /* a directory where the file should be */
    unlink(path);
    assert_int_equal(mkdir(path, 0755), 0);
    expect_miss(&k, NULL);
    rmdir(path);
    /* and the good bytes load again */
    write_bytes(path, good, n);
    JitObject *objs;
    int no;
    assert_int_equal(jit_cache_load(dir, &k, &objs, &no, note, sizeof note), 1);
    jit_objects_free(objs, no);
    unlink(path);
    free(path);
    free(buf);
    free(good);
    free_fake();
}

/* ---- through a JIT session ------------------------------------------------------- */

static atomic_int builds;

/* float twice_plus(float x) = 2x + k */
static bool build_twice(JitIR *ir, void *arg, DiagList *dl) {
    atomic_fetch_add(&builds, 1);
    LLVMValueRef fn = jir_function(ir, "twice_plus", ir->t_f32, &ir->t_f32, 1);
    LLVMValueRef x = LLVMGetParam(fn, 0);
    LLVMBuildRet(ir->b, jir_fmuladd(ir, x, jir_f32(ir, 2), jir_f32(ir, (double)(intptr_t)arg)));
    return true;
}

/* One session compiling `twice_plus` (+k) under key; returns f(10). */
static float run_session(const char *cache_dir, const char *key, int k, JitTimings *t) {
    DiagList dl;
    diag_init(&dl);
    JitOptions o = jit_options_default();
    o.cache_dir = cache_dir;
    Jit *j = jit_create(&o, &dl);
    assert_non_null(j);
    JitUnit u = {"twice_plus", build_twice, (void *)(intptr_t)k, JIT_TIER_HOT};
    assert_true(jit_compile_units(j, &u, 1, key, strlen(key), &dl));
    float (*f)(float) = (float (*)(float))jit_lookup(j, "twice_plus", &dl);
    assert_non_null(f);
    assert_int_equal(dl.nerrors, 0);
    float r = f(10);
    *t = *jit_timings(j);
    jit_free(j);
    diag_free(&dl);
    return r;
}

/* The one entry file in d. */
static char *only_entry(const char *d) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s/*.pxo", d);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[400], *found = NULL;
    int count = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        free(found);
        found = strdup(line);
        count++;
    }
    pclose(p);
    assert_int_equal(count, 1);
    return found;
}

static void test_session(void **state) {
    JitTimings t;
    char da[256], db[256];
    snprintf(da, sizeof da, "%s/a", dir);   /* created by the first store */
    snprintf(db, sizeof db, "%s/b", dir);
    atomic_store(&builds, 0);
    assert_true(run_session(da, "program A", 1, &t) == 21.0f);
    assert_false(t.cache_hit);
    assert_string_equal(t.cache_note, "absent");
    assert_int_equal(atomic_load(&builds), 1);

    /* the same key: from the cache, the builder is not called (k = 5 would give 25) */
    assert_true(run_session(da, "program A", 5, &t) == 21.0f);
    assert_true(t.cache_hit);
    assert_int_equal(atomic_load(&builds), 1);

    /* another key: compiled */
    assert_true(run_session(db, "program B", 5, &t) == 25.0f);
    assert_false(t.cache_hit);
    assert_int_equal(atomic_load(&builds), 2);
    assert_true(run_session(da, "program B", 6, &t) == 26.0f);
    assert_false(t.cache_hit);
    assert_int_equal(atomic_load(&builds), 3);
    char *path = only_entry(db);
    unlink(path);
    free(path);
    rmdir(db);

    /* both programs now live in da */
    assert_true(run_session(da, "program B", 8, &t) == 26.0f);
    assert_true(t.cache_hit);

    char cmd[600];
    /* corrupt an entry (in a directory of its own, to know its file) */
    char dc[256];
    snprintf(dc, sizeof dc, "%s/c", dir);
    assert_true(run_session(dc, "program A", 1, &t) == 21.0f);
    int before = atomic_load(&builds);
    path = only_entry(dc);
    size_t n;
    unsigned char *bytes = tu_read_file(path, &n);
    assert_non_null(bytes);
    bytes[n / 2] ^= 0x40;
    write_bytes(path, bytes, n);
    free(bytes);
    assert_true(run_session(dc, "program A", 1, &t) == 21.0f);
    assert_false(t.cache_hit);
    assert_non_null(strstr(t.cache_note, "checksum"));
    assert_int_equal(atomic_load(&builds), before + 1);
    assert_true(run_session(dc, "program A", 7, &t) == 21.0f);   /* rewritten: a hit */
    assert_true(t.cache_hit);
    assert_int_equal(atomic_load(&builds), before + 1);
    unlink(path);
    free(path);
    rmdir(dc);

    /* a cache that cannot be written: compiles, says so, works */
    assert_true(run_session("/proc/pxc-no-such-dir", "program A", 2, &t) == 22.0f);
    assert_false(t.cache_hit);
    assert_non_null(strstr(t.cache_note, "not stored"));

    snprintf(cmd, sizeof cmd, "rm -f %s/*.pxo && rmdir %s", da, da);
    assert_int_equal(system(cmd), 0);
}

static void test_cache_dir(void **state) {
    JitOptions o = jit_options_default();
    setenv("PXC_CACHE_DIR", "/somewhere/pxc-cache", 1);
    char *d = jit_cache_dir(&o);
    assert_string_equal(d, "/somewhere/pxc-cache");
    free(d);
    unsetenv("PXC_CACHE_DIR");
    setenv("HOME", "/home/someone", 1);
    unsetenv("XDG_CACHE_HOME");
    d = jit_cache_dir(&o);
    assert_string_equal(d, "/home/someone/.cache/pxc");
    free(d);
    o.cache_dir = "";
    assert_null(jit_cache_dir(&o));
    o.cache_dir = NULL;
    o.use_cache = false;
    assert_null(jit_cache_dir(&o));
}

static int setup(void **state) { return mkdtemp(dir) ? 0 : -1; }
static int teardown(void **state) { return rmdir(dir); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_session),
        cmocka_unit_test(test_cache_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
