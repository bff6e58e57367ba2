/* checkpoint.c — see checkpoint.h. */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "safetensors.h"

static const char *const kinds[4] = {"param/", "ema/", "adam_m/", "adam_v/"};

/* The metadata keys covered by the checksum, in this order. */
enum {
    MK_FORMAT, MK_FORMAT_VERSION, MK_PXC_VERSION, MK_ABI_VERSION, MK_STEP, MK_SEED, MK_DATA_SEED,
    MK_DATA_EPOCH, MK_DATA_POS, MK_DATA_N, MK_BATCH, MK_LR, MK_LR_DECAY, MK_BETA1, MK_BETA2, MK_EPS,
    MK_EMA_DECAY, MK_TRAIN_SECONDS, MK_IMAGES_SEEN, MK_SPEC_NAME, MK_SPEC_HASH, MK_SPEC_RESOLVED, MK_COUNT
};
static const char *const meta_keys[MK_COUNT] = {
    "format", "format_version", "pxc_version", "abi_version", "step", "seed", "data_seed",
    "data_epoch", "data_pos", "data_n", "batch", "lr", "lr_decay", "beta1", "beta2", "eps",
    "ema_decay", "train_seconds", "images_seen", "spec_name", "spec_hash", "spec_resolved",
};

static uint64_t hash_meta(uint64_t h, const char *const *values) {
    for (int k = 0; k < MK_COUNT; k++) {
        h = hash_bytes(h, meta_keys[k], strlen(meta_keys[k]) + 1);
        h = hash_bytes(h, values[k], strlen(values[k]) + 1);
    }
    return h;
}

/* ---- writing ---------------------------------------------------------------- */

int rt_ckpt_write(const char *path, const pxc_tensor *t, int n, const RtCheckpoint *ck, char *err,
                  size_t errlen) {
    char *values[MK_COUNT];
    values[MK_FORMAT] = xstrdup(RT_CKPT_FORMAT);
    values[MK_FORMAT_VERSION] = xasprintf("%d", RT_CKPT_FORMAT_VERSION);
    values[MK_PXC_VERSION] = xstrdup(PXC_VERSION);
    values[MK_ABI_VERSION] = xasprintf("%d", PXC_ABI_VERSION);
    values[MK_STEP] = xasprintf("%" PRId64, ck->step);
    values[MK_SEED] = xasprintf("%" PRIu64, ck->seed);
    values[MK_DATA_SEED] = xasprintf("%" PRIu64, ck->data_seed);
    values[MK_DATA_EPOCH] = xasprintf("%" PRId64, ck->data_epoch);
    values[MK_DATA_POS] = xasprintf("%" PRId64, ck->data_pos);
    values[MK_DATA_N] = xasprintf("%" PRId64, ck->data_n);
    values[MK_BATCH] = xasprintf("%d", ck->batch);
    values[MK_LR] = xasprintf("%.17g", ck->adam.lr);
    values[MK_LR_DECAY] = xasprintf("%.17g", ck->adam.lr_decay);
    values[MK_BETA1] = xasprintf("%.17g", ck->adam.beta1);
    values[MK_BETA2] = xasprintf("%.17g", ck->adam.beta2);
    values[MK_EPS] = xasprintf("%.17g", ck->adam.eps);
    values[MK_EMA_DECAY] = xasprintf("%.17g", ck->adam.ema_decay);
    values[MK_TRAIN_SECONDS] = xasprintf("%.17g", ck->train_seconds);
    values[MK_IMAGES_SEEN] = xasprintf("%" PRId64, ck->images_seen);
    values[MK_SPEC_NAME] = xstrdup(ck->spec_name ? ck->spec_name : "");
    values[MK_SPEC_HASH] = xasprintf("%016" PRIx64, ck->spec_hash);
    values[MK_SPEC_RESOLVED] = xstrdup(ck->spec_resolved ? ck->spec_resolved : "");

    int64_t nparams = 0;
    for (int i = 0; i < n; i++)
        if (t[i].offset + t[i].numel > nparams) nparams = t[i].offset + t[i].numel;
    float *zeros = NULL;
    const float *bufs[4] = {ck->params, ck->ema, ck->adam_m, ck->adam_v};
    for (int k = 0; k < 4; k++)
        if (!bufs[k]) bufs[k] = zeros ? zeros : (zeros = xcalloc((size_t)(nparams ? nparams : 1), sizeof(float)));

    RtStTensor *ts = xcalloc((size_t)(4 * n + 1), sizeof *ts);
    char **names = xcalloc((size_t)(4 * n + 1), sizeof *names);
    uint64_t h = hash_meta(HASH_INIT, (const char *const *)values);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < n; i++) {
            RtStTensor *s = &ts[k * n + i];
            names[k * n + i] = xasprintf("%s%s", kinds[k], t[i].name);
            s->name = names[k * n + i];
            s->dtype = RT_ST_F32;
            s->rank = t[i].rank;
            for (int d = 0; d < t[i].rank; d++) s->shape[d] = t[i].shape[d];
            s->data = bufs[k] + t[i].offset;
            h = hash_bytes(h, s->data, (size_t)t[i].numel * sizeof(float));
        }
    char *checksum = xasprintf("%016" PRIx64, h);
    const char *kv[2 * (MK_COUNT + 2)];
    int nkv = 0;
    for (int k = 0; k < MK_COUNT; k++) kv[2 * nkv] = meta_keys[k], kv[2 * nkv + 1] = values[k], nkv++;
    kv[2 * nkv] = "checksum", kv[2 * nkv + 1] = checksum, nkv++;
    kv[2 * nkv] = "writer", kv[2 * nkv + 1] = "pxc " PXC_VERSION, nkv++;
    int rc = rt_st_write(path, ts, 4 * n, kv, nkv, err, errlen);

    free(checksum);
    for (int i = 0; i < 4 * n; i++) free(names[i]);
    free(names);
    free(ts);
    free(zeros);
    for (int k = 0; k < MK_COUNT; k++) free(values[k]);
    return rc;
}

/* ---- reading ------------------------------------------------------------------ */

static int parse_i64(const char *s, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *v = x;
    return 0;
}
static int parse_u64(const char *s, uint64_t *v, int base) {
    char *end;
    errno = 0;
    if (*s == '-') return -1;
    unsigned long long x = strtoull(s, &end, base);
    if (errno || end == s || *end) return -1;
    *v = x;
    return 0;
}
static int parse_f64(const char *s, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end) return -1;
    *v = x;
    return 0;
}

static const char *shape_text(int rank, const int64_t *d, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)d[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

void rt_ckpt_free(RtCheckpoint *ck) {
    free(ck->params);
    free(ck->ema);
    free(ck->adam_m);
    free(ck->adam_v);
    if (ck->owned) {
        free(ck->spec_name);
        free(ck->spec_resolved);
        free(ck->pxc_version);
    }
    memset(ck, 0, sizeof *ck);
}

int rt_ckpt_read(const char *path, const pxc_tensor *t, int n, int64_t nparams, RtCheckpoint *ck, char *err,
                 size_t errlen) {
    memset(ck, 0, sizeof *ck);
    RtSafetensors *st = rt_st_open(path, err, errlen);
    if (!st) return -1;
    const char *values[MK_COUNT];
    const char *format = rt_st_metadata(st, "format");
    if (!format || strcmp(format, RT_CKPT_FORMAT)) {
        snprintf(err, errlen,
                 "'%s' is a safetensors file but not a pxc checkpoint (its metadata has no format = \"%s\"); "
                 "a file of reference weights can be converted with 'pxc import'",
                 path, RT_CKPT_FORMAT);
        rt_st_close(st);
        return -1;
    }
    for (int k = 0; k < MK_COUNT; k++) {
        values[k] = rt_st_metadata(st, meta_keys[k]);
        if (!values[k]) {
            snprintf(err, errlen, "checkpoint '%s' lacks the metadata entry '%s'; it is damaged or was not written by pxc",
                     path, meta_keys[k]);
            rt_st_close(st);
            return -1;
        }
    }
    int64_t fv = 0;
    if (parse_i64(values[MK_FORMAT_VERSION], &fv) || fv != RT_CKPT_FORMAT_VERSION) {
        snprintf(err, errlen, "checkpoint '%s' has format version '%s'; this pxc (%s) reads version %d", path,
                 values[MK_FORMAT_VERSION], PXC_VERSION, RT_CKPT_FORMAT_VERSION);
        rt_st_close(st);
        return -1;
    }
    int bad = -1;
    int64_t batch = 0;
    if (parse_i64(values[MK_STEP], &ck->step) || ck->step < 0) bad = MK_STEP;
    else if (parse_u64(values[MK_SEED], &ck->seed, 10)) bad = MK_SEED;
    else if (parse_u64(values[MK_DATA_SEED], &ck->data_seed, 10)) bad = MK_DATA_SEED;
    else if (parse_i64(values[MK_DATA_EPOCH], &ck->data_epoch) || ck->data_epoch < 0) bad = MK_DATA_EPOCH;
    else if (parse_i64(values[MK_DATA_POS], &ck->data_pos) || ck->data_pos < 0) bad = MK_DATA_POS;
    else if (parse_i64(values[MK_DATA_N], &ck->data_n) || ck->data_n < 0) bad = MK_DATA_N;
    else if (parse_i64(values[MK_BATCH], &batch) || batch < 0 || batch > (1 << 30)) bad = MK_BATCH;
    else if (parse_f64(values[MK_LR], &ck->adam.lr)) bad = MK_LR;
    else if (parse_f64(values[MK_LR_DECAY], &ck->adam.lr_decay)) bad = MK_LR_DECAY;
    else if (parse_f64(values[MK_BETA1], &ck->adam.beta1)) bad = MK_BETA1;
    else if (parse_f64(values[MK_BETA2], &ck->adam.beta2)) bad = MK_BETA2;
    else if (parse_f64(values[MK_EPS], &ck->adam.eps)) bad = MK_EPS;
    else if (parse_f64(values[MK_EMA_DECAY], &ck->adam.ema_decay)) bad = MK_EMA_DECAY;
    else if (parse_f64(values[MK_TRAIN_SECONDS], &ck->train_seconds)) bad = MK_TRAIN_SECONDS;
    else if (parse_i64(values[MK_IMAGES_SEEN], &ck->images_seen)) bad = MK_IMAGES_SEEN;
    else if (parse_u64(values[MK_SPEC_HASH], &ck->spec_hash, 16) || strlen(values[MK_SPEC_HASH]) != 16)
        bad = MK_SPEC_HASH;
    if (bad >= 0) {
        snprintf(err, errlen, "checkpoint '%s' has a malformed metadata entry %s = '%.60s'", path, meta_keys[bad],
                 values[bad]);
        rt_st_close(st);
        return -1;
    }
    ck->batch = (int)batch;

    /* The checksum: metadata, then every tensor in file order. */
    const char *sum = rt_st_metadata(st, "checksum");
    uint64_t want = 0;
    if (!sum || parse_u64(sum, &want, 16)) {
        snprintf(err, errlen, "checkpoint '%s' has no valid 'checksum' metadata entry; it is damaged", path);
        rt_st_close(st);
        return -1;
    }
    uint64_t h = hash_meta(HASH_INIT, values);
    for (int i = 0; i < rt_st_count(st); i++) {
        const RtStTensor *s = rt_st_tensor(st, i);
        h = hash_bytes(h, s->data, s->nbytes);
    }
    if (h != want) {
        snprintf(err, errlen,
                 "checkpoint '%s' is corrupted: its contents hash to %016" PRIx64 " but it records %016" PRIx64
                 " (the file was changed after pxc wrote it); use an older checkpoint",
                 path, h, want);
        rt_st_close(st);
        return -1;
    }

    /* Every tensor the model needs, with its shape; nothing else. */
    float *bufs[4];
    for (int k = 0; k < 4; k++) bufs[k] = xcalloc((size_t)(nparams ? nparams : 1), sizeof(float));
    ck->params = bufs[0], ck->ema = bufs[1], ck->adam_m = bufs[2], ck->adam_v = bufs[3];
    char name[512], b1[96], b2[96];
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "%s%s", kinds[k], t[i].name);
            const RtStTensor *s = rt_st_find(st, name);
            if (!s) {
                snprintf(err, errlen,
                         "checkpoint '%s' has no tensor '%s', which the spec needs: it was written for spec "
                         "'%s' (hash %s), not this one",
                         path, name, values[MK_SPEC_NAME], values[MK_SPEC_HASH]);
                goto mismatch;
            }
            if (s->dtype != RT_ST_F32) {
                snprintf(err, errlen, "checkpoint '%s': tensor '%s' is %s; expected F32", path, name,
                         rt_st_dtype_name(s->dtype));
                goto fail;
            }
            int same = s->rank == t[i].rank;
            for (int d = 0; same && d < s->rank; d++) same = s->shape[d] == t[i].shape[d];
            if (!same) {
                snprintf(err, errlen,
                         "checkpoint '%s': tensor '%s' is %s but the spec needs %s (checkpoint of spec '%s', hash %s)",
                         path, name, shape_text(s->rank, s->shape, b1, sizeof b1),
                         shape_text(t[i].rank, t[i].shape, b2, sizeof b2), values[MK_SPEC_NAME],
                         values[MK_SPEC_HASH]);
                goto mismatch;
            }
            memcpy(bufs[k] + t[i].offset, s->data, (size_t)t[i].numel * sizeof(float));
        }
    if (rt_st_count(st) != 4 * n) {
        for (int i = 0; i < rt_st_count(st); i++) {
            const char *nm = rt_st_name(st, i);
            int known = 0;
            for (int k = 0; k < 4 && !known; k++) {
                size_t pl = strlen(kinds[k]);
                if (strncmp(nm, kinds[k], pl)) continue;
                for (int j = 0; j < n && !known; j++) known = !strcmp(nm + pl, t[j].name);
            }
            if (!known) {
                snprintf(err, errlen,
                         "checkpoint '%s' has a tensor '%s' that the spec does not have: it was written for spec "
                         "'%s' (hash %s), not this one",
                         path, nm, values[MK_SPEC_NAME], values[MK_SPEC_HASH]);
                goto mismatch;
            }
        }
        snprintf(err, errlen, "checkpoint '%s' holds %d tensors; expected %d", path, rt_st_count(st), 4 * n);
        goto fail;
    }
    ck->spec_name = xstrdup(values[MK_SPEC_NAME]);
    ck->spec_resolved = xstrdup(values[MK_SPEC_RESOLVED]);
    ck->pxc_version = xstrdup(values[MK_PXC_VERSION]);
    ck->owned = 1;
    rt_st_close(st);
    return 0;
fail:
    rt_st_close(st);
    rt_ckpt_free(ck);
    return -1;
mismatch:
    rt_st_close(st);
    rt_ckpt_free(ck);
    return -2;
}

/* ---- the run directory ---------------------------------------------------------- */

char *rt_ckpt_path(const char *dir, int64_t step) { return xasprintf("%s/ckpt-%08" PRId64 ".safetensors", dir, step); }

/* The step of a well-formed checkpoint name, or -1. */
static int64_t name_step(const char *nm) {
    if (strncmp(nm, "ckpt-", 5)) return -1;
    const char *p = nm + 5;
    int64_t s = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 18) s = s * 10 + (*p++ - '0'), digits++;
    if (digits < 8 || strcmp(p, ".safetensors")) return -1;
    return s;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int rt_ckpt_list(const char *dir, int64_t **steps, int *n, char *err, size_t errlen) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot read directory '%s': %s", dir, strerror(errno));
        return -1;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = name_step(e->d_name);
        if (s >= 0) VEC_PUSH(*steps, *n, cap, s);
    }
    closedir(d);
    if (*n) qsort(*steps, (size_t)*n, sizeof **steps, cmp_i64);
    return 0;
}

int rt_ckpt_prune(const char *dir, int keep, char *err, size_t errlen) {
    int64_t *steps;
    int n;
    if (rt_ckpt_list(dir, &steps, &n, err, errlen)) return -1;
    int rc = 0;
    for (int i = 0; i < n - (keep > 0 ? keep : 1); i++) {
        char *p = rt_ckpt_path(dir, steps[i]);
        if (unlink(p) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot delete old checkpoint '%s': %s", p, strerror(errno));
            rc = -1;
        }
        free(p);
    }
    free(steps);
    return rc;
}

int rt_ckpt_clean_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        const char *tmp = strstr(nm, ".safetensors.tmp.");
        if (strncmp(nm, "ckpt-", 5) || !tmp) continue;
        char *p = xasprintf("%s/%s", dir, nm);
        if (unlink(p) == 0) removed++;
        free(p);
    }
    closedir(d);
    return removed;
}
