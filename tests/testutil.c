/* testutil.c — see testutil.h. */
#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <sys/stat.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PXC_SOURCE_DIR
#define PXC_SOURCE_DIR "."
#endif

const char *tu_source_dir(void) {
    const char *s = getenv("PXC_SOURCE_DIR");
    return s && *s ? s : PXC_SOURCE_DIR;
}

const char *tu_reference_dir(void) {
    static char buf[4096];
    const char *s = getenv("PXC_REFERENCE_DIR");
    if (s && *s) return s;
    snprintf(buf, sizeof buf, "%s/../shared/reference", tu_source_dir());
    return buf;
}

const char *tu_path(const char *dir, const char *name) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

void *tu_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

float *tu_read_f32(const char *path, size_t count) {
    size_t n = 0;
    float *p = tu_read_file(path, &n);
    if (!p) fail_msg("cannot read %s", path);
    if (n != count * sizeof(float)) fail_msg("%s holds %zu bytes, expected %zu floats", path, n, count);
    return p;
}

double tu_max_rel_to_max(const float *a, const float *b, size_t n, size_t *worst) {
    double mx = 0, md = 0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d, w = i;
    }
    if (worst) *worst = w;
    return mx > 0 ? md / mx : md;
}

int tu_mkdtemp(char *buf, size_t n, const char *prefix) {
    snprintf(buf, n, "/tmp/%sXXXXXX", prefix);
    return mkdtemp(buf) ? 0 : -1;
}

static int rm_entry(const char *p, const struct stat *s, int flag, struct FTW *f) {
    (void)s, (void)flag, (void)f;
    return remove(p);
}

int tu_rmtree(const char *dir) { return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }
