/* safetensors.c — see safetensors.h. */
#define _GNU_SOURCE /* memmem */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "fileio.h"

/* Headers larger than this are refused as damaged (the reference
 * implementation uses the same bound). */
#define ST_MAX_HEADER (100u << 20)

static const struct { const char *name; size_t size; } dtypes[RT_ST_NDTYPES] = {
    [RT_ST_BOOL] = {"BOOL", 1}, [RT_ST_U8] = {"U8", 1}, [RT_ST_I8] = {"I8", 1},
    [RT_ST_F8_E4M3] = {"F8_E4M3", 1}, [RT_ST_F8_E5M2] = {"F8_E5M2", 1},
    [RT_ST_I16] = {"I16", 2}, [RT_ST_U16] = {"U16", 2}, [RT_ST_F16] = {"F16", 2}, [RT_ST_BF16] = {"BF16", 2},
    [RT_ST_I32] = {"I32", 4}, [RT_ST_U32] = {"U32", 4}, [RT_ST_F32] = {"F32", 4},
    [RT_ST_I64] = {"I64", 8}, [RT_ST_U64] = {"U64", 8}, [RT_ST_F64] = {"F64", 8},
};

const char *rt_st_dtype_name(RtStDtype dt) {
    return (unsigned)dt < RT_ST_NDTYPES ? dtypes[dt].name : "?";
}

size_t rt_st_dtype_size(RtStDtype dt) { return (unsigned)dt < RT_ST_NDTYPES ? dtypes[dt].size : 0; }

int rt_st_dtype_from_name(const char *s) {
    for (int i = 0; i < RT_ST_NDTYPES; i++)
        if (strcmp(s, dtypes[i].name) == 0) return i;
    return -1;
}

int64_t rt_st_numel(const RtStTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

struct RtSafetensors {
    char *path;
    unsigned char *buf;     /* the whole file */
    size_t len;
    RtStTensor *tensors;    /* [ntensors], header order */
    int ntensors;
    char **meta;            /* [2*nmeta] key, value */
    int nmeta;
    void **copies;          /* aligned copies of tensors the file left misaligned */
    int ncopies;
};

/* ---- errors -------------------------------------------------------------- */

typedef struct StErr {
    const char *path;
    char *err;
    size_t errlen;
    int by_pxc;     /* the file says pxc wrote it: tell the user to regenerate */
} StErr;

__attribute__((format(printf, 2, 3)))
static int st_fail(const StErr *e, const char *fmt, ...) {
    if (!e->err || !e->errlen) return -1;
    int k = snprintf(e->err, e->errlen, "%s: ", e->path);
    if (k < 0 || (size_t)k >= e->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(e->err + k, e->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(k + m) >= e->errlen) return -1;
    if (e->by_pxc)
        snprintf(e->err + k + m, e->errlen - (size_t)(k + m),
                 " (this file was written by pxc and is damaged: it cannot be repaired; regenerate it by "
                 "re-running the pxc command that wrote it)");
    return -1;
}

/* ---- reading --------------------------------------------------------------- */

void rt_st_close(RtSafetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->ntensors; i++) free((char *)st->tensors[i].name);
    for (int i = 0; i < 2 * st->nmeta; i++) free(st->meta[i]);
    for (int i = 0; i < st->ncopies; i++) free(st->copies[i]);
    free(st->tensors);
    free(st->meta);
    free(st->copies);
    free(st->buf);
    free(st->path);
    free(st);
}

/* A JSON number that is an integer in [0, 2^53]; -1 otherwise. */
static int64_t json_uint(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return -1;
    return (int64_t)d;
}

/* One tensor's header entry: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}. */
static int parse_entry(const StErr *e, const cJSON *ent, RtStTensor *t, int64_t off[2]) {
    const char *name = ent->string;
    if (!cJSON_IsObject(ent)) return st_fail(e, "tensor '%s': expected an object in the header, found %s", name,
                                             cJSON_IsArray(ent) ? "an array" : "a scalar");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(ent, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(ent, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(ent, "data_offsets");
    if (!cJSON_IsString(dt)) return st_fail(e, "tensor '%s': missing \"dtype\" string", name);
    if (!cJSON_IsArray(sh)) return st_fail(e, "tensor '%s': missing \"shape\" array", name);
    if (!cJSON_IsArray(of)) return st_fail(e, "tensor '%s': missing \"data_offsets\" array", name);
    int d = rt_st_dtype_from_name(dt->valuestring);
    if (d < 0)
        return st_fail(e, "tensor '%s': unknown dtype '%s' (expected F32, F64, I32, U8, ...)", name,
                       dt->valuestring);
    t->dtype = (RtStDtype)d;
    int rank = cJSON_GetArraySize(sh);
    if (rank > RT_ST_MAX_RANK)
        return st_fail(e, "tensor '%s': rank %d is more than the %d dimensions pxc reads", name, rank,
                       RT_ST_MAX_RANK);
    t->rank = rank;
    int i = 0;
    /* Elements × size, checked against overflow past 2^62. */
    uint64_t bytes = rt_st_dtype_size(t->dtype);
    int overflow = 0;
    for (const cJSON *s = sh->child; s; s = s->next, i++) {
        int64_t v = json_uint(s);
        if (v < 0) return st_fail(e, "tensor '%s': shape[%d] is not a non-negative integer", name, i);
        t->shape[i] = v;
        if (v && bytes > (UINT64_C(1) << 62) / (uint64_t)v) overflow = 1;
        bytes *= (uint64_t)v;
    }
    if (cJSON_GetArraySize(of) != 2)
        return st_fail(e, "tensor '%s': data_offsets must be [begin, end], found %d numbers", name,
                       cJSON_GetArraySize(of));
    off[0] = json_uint(of->child);
    off[1] = json_uint(of->child->next);
    if (off[0] < 0 || off[1] < 0) return st_fail(e, "tensor '%s': data_offsets are not non-negative integers", name);
    if (off[1] < off[0])
        return st_fail(e, "tensor '%s': data_offsets [%lld, %lld] end before they begin", name, (long long)off[0],
                       (long long)off[1]);
    if (overflow || bytes != (uint64_t)(off[1] - off[0])) {
        char shp[160], need[32];
        size_t k = 0;
        shp[0] = 0;
        for (int j = 0; j < rank && k + 24 < sizeof shp; j++)
            k += (size_t)snprintf(shp + k, sizeof shp - k, "%s%lld", j ? "," : "", (long long)t->shape[j]);
        if (overflow) snprintf(need, sizeof need, "more than 2^62");
        else snprintf(need, sizeof need, "%llu", (unsigned long long)bytes);
        return st_fail(e, "tensor '%s': shape [%s] of %s needs %s bytes but data_offsets [%lld, %lld] span %lld",
                       name, shp, rt_st_dtype_name(t->dtype), need, (long long)off[0], (long long)off[1],
                       (long long)(off[1] - off[0]));
    }
    t->nbytes = (size_t)bytes;
    return 0;
}

typedef struct Span {
    int64_t b, e;
    int i;
} Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    if (x->e != y->e) return x->e < y->e ? -1 : 1;
    return x->i - y->i;
}

static int name_cmp(const void *a, const void *b) {
    const RtStTensor *x = *(RtStTensor *const *)a, *y = *(RtStTensor *const *)b;
    return strcmp(x->name, y->name);
}

/* Check and index the parsed header; the data section is [data, data + dlen). */
static int index_header(RtSafetensors *st, StErr *e, const cJSON *root, const unsigned char *data, size_t dlen) {
    if (!cJSON_IsObject(root)) return st_fail(e, "header is JSON but not an object of tensors");
    int cap = cJSON_GetArraySize(root);
    st->tensors = xcalloc((size_t)cap + 1, sizeof *st->tensors);
    Span *spans = xcalloc((size_t)cap + 1, sizeof *spans);
    int rc = -1;
    for (const cJSON *ent = root->child; ent; ent = ent->next) {
        if (strcmp(ent->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(ent)) {
                st_fail(e, "\"__metadata__\" must be an object of strings");
                goto out;
            }
            int nm = cJSON_GetArraySize(ent);
            st->meta = xcalloc(2 * (size_t)nm + 1, sizeof *st->meta);
            for (const cJSON *m = ent->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    st_fail(e, "\"__metadata__\" entry '%s' is not a string", m->string);
                    goto out;
                }
                st->meta[2 * st->nmeta] = xstrdup(m->string);
                st->meta[2 * st->nmeta + 1] = xstrdup(m->valuestring);
                st->nmeta++;
            }
            continue;
        }
        RtStTensor *t = &st->tensors[st->ntensors];
        int64_t off[2] = {0, 0};
        if (parse_entry(e, ent, t, off) != 0) goto out;
        t->name = xstrdup(ent->string);
        spans[st->ntensors] = (Span){off[0], off[1], st->ntensors};
        st->ntensors++;
    }
    /* Names are unique. */
    RtStTensor **byname = xmalloc(((size_t)st->ntensors + 1) * sizeof *byname);
    for (int i = 0; i < st->ntensors; i++) byname[i] = &st->tensors[i];
    qsort(byname, (size_t)st->ntensors, sizeof *byname, name_cmp);
    for (int i = 1; i < st->ntensors; i++)
        if (strcmp(byname[i - 1]->name, byname[i]->name) == 0) {
            st_fail(e, "tensor '%s' appears twice in the header", byname[i]->name);
            free(byname);
            goto out;
        }
    free(byname);
    /* The tensors tile the data exactly: sorted by offset, each begins where
     * the previous one ended, and the last ends at the end of the file. */
    qsort(spans, (size_t)st->ntensors, sizeof *spans, span_cmp);
    int64_t at = 0;
    for (int k = 0; k < st->ntensors; k++) {
        const Span *s = &spans[k];
        const char *name = st->tensors[s->i].name;
        if ((uint64_t)s->e > dlen) {
            st_fail(e, "tensor '%s': data_offsets [%lld, %lld] go past the end of the data (%zu bytes): the file is "
                       "truncated or damaged", name, (long long)s->b, (long long)s->e, dlen);
            goto out;
        }
        if (s->b < at) {
            st_fail(e, "tensor '%s': data_offsets [%lld, %lld] overlap tensor '%s' (which ends at %lld)", name,
                    (long long)s->b, (long long)s->e, st->tensors[spans[k - 1].i].name, (long long)at);
            goto out;
        }
        if (s->b > at) {
            st_fail(e, "tensor '%s': data_offsets begin at %lld, leaving a gap of %lld unused bytes after %s", name,
                    (long long)s->b, (long long)(s->b - at),
                    k ? st->tensors[spans[k - 1].i].name : "the header");
            goto out;
        }
        at = s->e;
    }
    if ((uint64_t)at != dlen) {
        st_fail(e, "%zu bytes of trailing data after the last tensor (data section is %zu bytes, tensors end at "
                   "%lld)", dlen - (size_t)at, dlen, (long long)at);
        goto out;
    }
    /* Hand out pointers aligned to the element size (copy the rare tensor
     * a foreign file left misaligned). */
    int ccap = 0;
    for (int k = 0; k < st->ntensors; k++) {
        RtStTensor *t = &st->tensors[spans[k].i];
        const unsigned char *p = data + spans[k].b;
        size_t a = rt_st_dtype_size(t->dtype);
        if ((uintptr_t)p % a != 0) {
            void *c = xmalloc(t->nbytes);
            memcpy(c, p, t->nbytes);
            VEC_PUSH(st->copies, st->ncopies, ccap, c);
            p = c;
        }
        t->data = p;
    }
    rc = 0;
out:
    free(spans);
    return rc;
}

RtSafetensors *rt_st_open(const char *path, char *err, size_t errlen) {
    StErr e = {path, err, errlen, 0};
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        st_fail(&e, "not a regular file (expected a .safetensors file)");
        return NULL;
    }
    size_t len = 0;
    unsigned char *buf = rt_read_file(path, &len, err, errlen);
    if (!buf) return NULL;
    RtSafetensors *st = xcalloc(1, sizeof *st);
    st->path = xstrdup(path);
    st->buf = buf;
    st->len = len;
    if (len < 8) {
        st_fail(&e, "file is %zu bytes, too short for the 8-byte header length that starts a safetensors file",
                len);
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    if (hl > len - 8) {
        st_fail(&e, "header length %llu goes past the end of the file (%zu bytes): truncated, or not a "
                    "safetensors file", (unsigned long long)hl, len);
        goto fail;
    }
    if (hl > ST_MAX_HEADER) {
        st_fail(&e, "header length %llu is over the %u-byte limit: not a safetensors file", (unsigned long long)hl,
                ST_MAX_HEADER);
        goto fail;
    }
    static const char mark[] = "\"writer\":\"pxc";
    if (memmem(buf + 8, (size_t)hl, mark, sizeof mark - 1)) e.by_pxc = 1;
    char *hdr = xstrndup((const char *)buf + 8, (size_t)hl);
    if (strlen(hdr) != hl) {
        st_fail(&e, "header holds a NUL byte at offset %zu: not a safetensors file", strlen(hdr) + 8);
        free(hdr);
        goto fail;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(hdr, &end, 1);
    if (!root) {
        size_t at = end ? (size_t)(end - hdr) : 0;
        char near[24];
        snprintf(near, sizeof near, "%.20s", end ? end : "");
        for (char *q = near; *q; q++)
            if ((unsigned char)*q < 32) *q = ' ';
        if (*near)
            st_fail(&e, "header is not valid JSON (syntax error at byte %zu of %llu, near '%s')", at,
                    (unsigned long long)hl, near);
        else
            st_fail(&e, "header is not valid JSON (it ends early, at byte %zu of %llu)", at, (unsigned long long)hl);
        free(hdr);
        goto fail;
    }
    free(hdr);
    size_t dstart = 8 + (size_t)hl;
    int rc = index_header(st, &e, root, buf + dstart, len - dstart);
    cJSON_Delete(root);
    if (rc != 0) goto fail;
    return st;
fail:
    rt_st_close(st);
    return NULL;
}

int rt_st_count(const RtSafetensors *st) { return st->ntensors; }

const RtStTensor *rt_st_tensor(const RtSafetensors *st, int i) {
    return i >= 0 && i < st->ntensors ? &st->tensors[i] : NULL;
}

const char *rt_st_name(const RtSafetensors *st, int i) {
    return i >= 0 && i < st->ntensors ? st->tensors[i].name : NULL;
}

const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name) {
    for (int i = 0; i < st->ntensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *rt_st_metadata(const RtSafetensors *st, const char *key) {
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

int rt_st_metadata_count(const RtSafetensors *st) { return st->nmeta; }

void rt_st_metadata_at(const RtSafetensors *st, int i, const char **key, const char **value) {
    *key = i >= 0 && i < st->nmeta ? st->meta[2 * i] : NULL;
    *value = i >= 0 && i < st->nmeta ? st->meta[2 * i + 1] : NULL;
}

/* ---- writing ---------------------------------------------------------------- */

int rt_st_write(const char *path, const RtStTensor *tensors, int n, const char *const *meta_kv, int nmeta,
                char *err, size_t errlen) {
    StErr e = {path, err, errlen, 0};
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    int has_writer = 0;
    for (int i = 0; i < nmeta; i++) {
        if (strcmp(meta_kv[2 * i], "writer") == 0) has_writer = 1;
        for (int j = 0; j < i; j++)
            if (strcmp(meta_kv[2 * i], meta_kv[2 * j]) == 0) {
                cJSON_Delete(root);
                return st_fail(&e, "cannot write: metadata key '%s' given twice", meta_kv[2 * i]);
            }
    }
    if (!has_writer) cJSON_AddStringToObject(meta, "writer", "pxc " PXC_VERSION);
    for (int i = 0; i < nmeta; i++) cJSON_AddStringToObject(meta, meta_kv[2 * i], meta_kv[2 * i + 1]);
    RtChunk *chunks = xcalloc((size_t)n + 2, sizeof *chunks);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const RtStTensor *t = &tensors[i];
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0 ||
            cJSON_GetObjectItemCaseSensitive(root, t->name)) {
            free(chunks);
            cJSON_Delete(root);
            return st_fail(&e, "cannot write tensor %d: name '%s' is empty, reserved or repeated", i,
                           t->name ? t->name : "");
        }
        if ((unsigned)t->dtype >= RT_ST_NDTYPES || t->rank < 0 || t->rank > RT_ST_MAX_RANK) {
            free(chunks);
            cJSON_Delete(root);
            return st_fail(&e, "cannot write tensor '%s': bad dtype or rank", t->name);
        }
        uint64_t bytes = rt_st_dtype_size(t->dtype) * (uint64_t)rt_st_numel(t);
        if (bytes && !t->data) {
            free(chunks);
            cJSON_Delete(root);
            return st_fail(&e, "cannot write tensor '%s': no data", t->name);
        }
        cJSON *ent = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(ent, "dtype", rt_st_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(ent, "shape");
        for (int d = 0; d < t->rank; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(ent, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)at));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(at + bytes)));
        chunks[i + 1] = (RtChunk){t->data, (size_t)bytes};
        at += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jl = strlen(json);
    size_t hl = (jl + 7) & ~(size_t)7;
    unsigned char *head = xmalloc(8 + hl);
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(head + 8, json, jl);
    memset(head + 8 + jl, ' ', hl - jl);
    free(json);
    chunks[0] = (RtChunk){head, 8 + hl};
    int rc = rt_write_atomic(path, chunks, n + 1, err, errlen);
    free(head);
    free(chunks);
    return rc;
}
