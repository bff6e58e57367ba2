/* data.c — see data.h. Readers for IDX (raw or gzip, through zlib's gz*
 * API, which reads uncompressed files transparently), CIFAR-10 binary
 * batches and PNG folders, and the shuffled batch order. */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/base.h"
#include "fileio.h"
#include "image.h"

/* Data sets larger than this many bytes are refused (a damaged header). */
#define RT_MAX_DATA_BYTES (INT64_C(1) << 40)

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_file(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISREG(s.st_mode);
}

static int is_dir(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

void rt_dataset_free(RtDataset *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->labels);
    if (ds->class_names)
        for (int i = 0; i < ds->classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    free(ds->desc);
    memset(ds, 0, sizeof *ds);
}

void rt_pixels_to_float(const uint8_t *p, int64_t count, float *x) {
    for (int64_t i = 0; i < count; i++) x[i] = ((float)p[i] - 127.5f) / 127.5f;
}

/* ---- IDX ------------------------------------------------------------------ */

/* An IDX file of unsigned bytes: magic 00 00 08 <ndim>, ndim big-endian
 * 32-bit sizes, then the data. */
typedef struct Idx {
    int ndim;
    int64_t dims[4];
    uint8_t *data;   /* [dims...] */
    int64_t bytes;
} Idx;

static int gz_fail(gzFile f, const char *path, char *err, size_t errlen) {
    int zerr = 0;
    const char *m = gzerror(f, &zerr);
    fail(err, errlen, "'%s': damaged gzip data: %s", path, zerr == Z_ERRNO ? strerror(errno) : m);
    return -1;
}

/* Read exactly n bytes or report how many there were. Returns bytes read,
 * or -1 after a gzip error (message in err). */
static int64_t gz_read_n(gzFile f, const char *path, uint8_t *dst, int64_t n, char *err, size_t errlen) {
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got > (1 << 24) ? (1 << 24) : n - got;
        int r = gzread(f, dst + got, (unsigned)want);
        if (r < 0) return gz_fail(f, path, err, errlen);
        if (r == 0) break;
        got += r;
    }
    return got;
}

/* Read an IDX file whose rank is in [min_rank, max_rank]. `what` names the
 * expected content for messages ("images", "labels"). */
static int idx_read(const char *path, int min_rank, int max_rank, const char *what, Idx *out, char *err,
                    size_t errlen) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) return fail(err, errlen, "cannot open '%s': %s", path, errno ? strerror(errno) : "gzopen failed");
    gzbuffer(f, 1 << 17);
    uint8_t head[4 + 4 * 4];
    int rc = -1;
    int64_t r = gz_read_n(f, path, head, 4, err, errlen);
    if (r < 0) goto out;
    if (r < 4) {
        fail(err, errlen, "'%s': file is %lld bytes, too short for the 4-byte IDX magic number", path,
             (long long)r);
        goto out;
    }
    unsigned magic = (unsigned)head[0] << 24 | (unsigned)head[1] << 16 | (unsigned)head[2] << 8 | head[3];
    if (head[0] != 0 || head[1] != 0 || head[3] < 1 || head[3] > 4) {
        fail(err, errlen, "'%s': bad magic number 0x%08x: not an IDX file of %s (expected 0x%08x)", path, magic,
             what, 0x800u | (unsigned)min_rank);
        goto out;
    }
    if (head[2] != 0x08) {
        fail(err, errlen, "'%s': IDX data type 0x%02x, expected 0x08 (unsigned bytes) for %s", path, head[2], what);
        goto out;
    }
    int nd = head[3];
    if (nd < min_rank || nd > max_rank) {
        fail(err, errlen, "'%s': bad magic number 0x%08x: an IDX file of rank %d, expected %s of rank %d%s (magic "
             "0x%08x)", path, magic, nd, what, min_rank, max_rank > min_rank ? " or more" : "",
             0x800u | (unsigned)min_rank);
        goto out;
    }
    r = gz_read_n(f, path, head + 4, 4 * nd, err, errlen);
    if (r < 0) goto out;
    if (r < 4 * nd) {
        fail(err, errlen, "'%s': file ends inside the IDX header (expected %d dimension sizes)", path, nd);
        goto out;
    }
    int64_t total = 1;
    char dims[96] = "";
    size_t dl = 0;
    for (int i = 0; i < nd; i++) {
        const uint8_t *b = head + 4 + 4 * i;
        out->dims[i] = (int64_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
        dl += (size_t)snprintf(dims + dl, sizeof dims - dl, "%s%lld", i ? "x" : "", (long long)out->dims[i]);
        if (out->dims[i] == 0) {
            fail(err, errlen, "'%s': IDX dimensions %s: dimension %d is zero (no %s)", path, dims, i, what);
            goto out;
        }
        if (total > RT_MAX_DATA_BYTES / out->dims[i]) {
            fail(err, errlen, "'%s': IDX dimensions are too large (over 2^40 bytes): damaged header?", path);
            goto out;
        }
        total *= out->dims[i];
    }
    out->ndim = nd;
    /* Grow the buffer as data arrives so a damaged header cannot make us
     * allocate far more than the file holds. */
    int64_t cap = total < (1 << 22) ? total : (1 << 22), got = 0;
    uint8_t *buf = malloc((size_t)cap);
    if (!buf) {
        fail(err, errlen, "'%s': out of memory", path);
        goto out;
    }
    for (;;) {
        r = gz_read_n(f, path, buf + got, cap - got, err, errlen);
        if (r < 0) {
            free(buf);
            goto out;
        }
        got += r;
        if (got < cap || cap == total) break;
        cap = cap * 2 < total ? cap * 2 : total;
        uint8_t *nb = realloc(buf, (size_t)cap);
        if (!nb) {
            free(buf);
            fail(err, errlen, "'%s': out of memory for %lld bytes", path, (long long)total);
            goto out;
        }
        buf = nb;
    }
    if (got < total) {
        free(buf);
        fail(err, errlen, "'%s': short file: the IDX header says %s = %lld bytes of %s, but the file holds only "
             "%lld (truncated?)", path, dims, (long long)total, what, (long long)got);
        goto out;
    }
    uint8_t extra[64];
    r = gz_read_n(f, path, extra, sizeof extra, err, errlen);
    if (r != 0) {
        free(buf);
        if (r > 0)
            fail(err, errlen, "'%s': wrong dimensions: the IDX header says %s = %lld bytes of %s, but the file "
                 "holds more (trailing bytes)", path, dims, (long long)total, what);
        goto out;
    }
    out->data = buf;
    out->bytes = total;
    rc = 0;
out:
    gzclose_r(f);
    return rc;
}

/* dir/<prefix>-<kind>[.gz] or dir/<prefix>-<kind with '.' before idx>[.gz];
 * kind is "images-idx3-ubyte" or "labels-idx1-ubyte". malloc'd or NULL. */
static char *idx_find(const char *dir, const char *prefix, const char *kind) {
    char alt[64];
    snprintf(alt, sizeof alt, "%s", kind);
    char *dash = strchr(alt, '-');
    if (dash) *dash = '.';
    const char *kinds[2] = {kind, alt};
    for (int k = 0; k < 2; k++)
        for (int gz = 0; gz < 2; gz++) {
            char *p = xasprintf("%s/%s-%s%s", dir, prefix, kinds[k], gz ? ".gz" : "");
            if (is_file(p)) return p;
            free(p);
        }
    return NULL;
}

/* Images [n,H,W] (C = 1) or [n,H,W,C] (C = 1 or 3) and optional labels [n]. */
static int idx_load(const char *images, const char *labels, RtDataset *out, char *err, size_t errlen) {
    Idx im, lb;
    if (idx_read(images, 3, 4, "images", &im, err, errlen) != 0) return -1;
    int64_t C = im.ndim == 4 ? im.dims[3] : 1;
    if (C != 1 && C != 3) {
        free(im.data);
        return fail(err, errlen, "'%s': wrong dimensions: images with %lld channels, expected 1 or 3", images,
                    (long long)C);
    }
    if (im.dims[1] > 65536 || im.dims[2] > 65536) {
        free(im.data);
        return fail(err, errlen, "'%s': wrong dimensions: images of %lldx%lld pixels", images,
                    (long long)im.dims[1], (long long)im.dims[2]);
    }
    out->n = im.dims[0];
    out->H = (int)im.dims[1];
    out->W = (int)im.dims[2];
    out->C = (int)C;
    out->pixels = im.data;
    if (!labels) return 0;
    if (idx_read(labels, 1, 1, "labels", &lb, err, errlen) != 0) return -1;
    if (lb.dims[0] != out->n) {
        free(lb.data);
        return fail(err, errlen, "image count differs from label count: '%s' holds %lld images but '%s' holds "
                    "%lld labels", images, (long long)out->n, labels, (long long)lb.dims[0]);
    }
    out->labels = xmalloc((size_t)out->n * sizeof *out->labels);
    int maxl = 0;
    for (int64_t i = 0; i < out->n; i++) {
        out->labels[i] = lb.data[i];
        if (lb.data[i] > maxl) maxl = lb.data[i];
    }
    out->classes = maxl + 1;
    free(lb.data);
    return 0;
}

static char *shape_desc(const RtDataset *d) {
    const char *s = d->n == 1 ? "" : "s";
    if (d->classes) return xasprintf("%lld image%s %dx%dx%d, %d classes", (long long)d->n, s, d->H, d->W, d->C,
                                     d->classes);
    return xasprintf("%lld image%s %dx%dx%d, unlabelled", (long long)d->n, s, d->H, d->W, d->C);
}

static int load_idx_dir(const char *dir, RtDatasetSplit split, RtDataset *out, char *err, size_t errlen) {
    const char *prefix = split == RT_SPLIT_TRAIN ? "train" : "t10k";
    char *images = idx_find(dir, prefix, "images-idx3-ubyte");
    if (!images)
        return fail(err, errlen, "'%s' has no %s images: expected %s-images-idx3-ubyte or %s-images-idx3-ubyte.gz",
                    dir, split == RT_SPLIT_TRAIN ? "training" : "test", prefix, prefix);
    char *labels = idx_find(dir, prefix, "labels-idx1-ubyte");
    int rc = idx_load(images, labels, out, err, errlen);
    if (rc == 0) {
        char *s = shape_desc(out);
        out->desc = xasprintf("IDX %s: %s (%s%s%s)", split == RT_SPLIT_TRAIN ? "train" : "test", s, images,
                              labels ? ", " : "", labels ? labels : ", no labels file");
        free(s);
    }
    free(images);
    free(labels);
    return rc;
}

/* A single IDX images file; labels from its "labels-idx1" sibling if any. */
static int load_idx_file(const char *path, RtDataset *out, char *err, size_t errlen) {
    char *labels = NULL;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *at = strstr(base, "images");
    if (at) {
        char *cand = xstrdup(path);
        char *c = cand + (at - path);
        memcpy(c, "labels", 6);
        char *idx = strstr(c, "idx3");
        if (idx) idx[3] = '1';
        for (int gz = 0; gz < 3 && !labels; gz++) {
            char *p = gz == 0 ? xstrdup(cand)
                    : gz == 1 ? xasprintf("%s.gz", cand)
                              : (ends_with(cand, ".gz") ? xstrndup(cand, strlen(cand) - 3) : NULL);
            if (p && strcmp(p, path) != 0 && is_file(p)) labels = p;
            else free(p);
        }
        free(cand);
    }
    int rc = idx_load(path, labels, out, err, errlen);
    if (rc == 0) {
        char *s = shape_desc(out);
        out->desc = xasprintf("IDX file: %s (%s%s%s; one file serves as both train and test split)", s, path,
                              labels ? ", " : "", labels ? labels : ", no labels file");
        free(s);
    }
    free(labels);
    return rc;
}

/* ---- CIFAR-10 binary ------------------------------------------------------ */

#define CIFAR_HW 32
#define CIFAR_REC (1 + 3 * CIFAR_HW * CIFAR_HW)

static int cifar_present(const char *dir) {
    char *a = xasprintf("%s/data_batch_1.bin", dir), *b = xasprintf("%s/test_batch.bin", dir);
    int r = is_file(a) || is_file(b);
    free(a);
    free(b);
    return r;
}

/* Class names from batches.meta.txt (one per line), when it is there. */
static void cifar_class_names(const char *dir, RtDataset *out) {
    char *p = xasprintf("%s/batches.meta.txt", dir);
    char e[8];
    size_t len;
    char *text = is_file(p) ? rt_read_file(p, &len, e, sizeof e) : NULL;
    free(p);
    if (!text) return;
    char *names[10], *save = NULL;
    int k = 0;
    for (char *line = strtok_r(text, "\r\n", &save); line && k < 10;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
        if (n) names[k++] = xstrndup(line, n);
    }
    free(text);
    if (k == 10) {
        out->class_names = xmalloc(10 * sizeof *out->class_names);
        memcpy(out->class_names, names, sizeof names);
    } else {
        for (int i = 0; i < k; i++) free(names[i]);
    }
}

static int load_cifar_dir(const char *dir, RtDatasetSplit split, RtDataset *out, char *err, size_t errlen) {
    char *files[5];
    int nf = 0, rc = -1;
    if (split == RT_SPLIT_TEST) {
        files[nf] = xasprintf("%s/test_batch.bin", dir);
        if (!is_file(files[nf])) {
            fail(err, errlen, "'%s' has no CIFAR-10 test batch: expected test_batch.bin", dir);
            free(files[nf]);
            return -1;
        }
        nf++;
    } else {
        int missing = 0;
        for (int k = 1; k <= 5; k++) {
            char *p = xasprintf("%s/data_batch_%d.bin", dir, k);
            if (!is_file(p)) {
                if (!missing) missing = k;
                free(p);
                continue;
            }
            if (missing) {
                fail(err, errlen, "'%s': CIFAR-10 batch data_batch_%d.bin is missing (expected data_batch_1.bin up "
                     "to data_batch_%d.bin, which exists)", dir, missing, k);
                free(p);
                goto out;
            }
            files[nf++] = p;
        }
        if (nf == 0) {
            fail(err, errlen, "'%s' has no CIFAR-10 training batches: expected data_batch_1.bin .. "
                 "data_batch_5.bin", dir);
            return -1;
        }
    }
    unsigned char *bufs[5] = {0};
    size_t lens[5] = {0};
    int64_t n = 0;
    for (int i = 0; i < nf; i++) {
        bufs[i] = rt_read_file(files[i], &lens[i], err, errlen);
        if (!bufs[i]) goto free_bufs;
        if (lens[i] == 0 || lens[i] % CIFAR_REC != 0) {
            fail(err, errlen, "'%s' is %zu bytes, not a whole number of %d-byte CIFAR-10 records (1 label byte + "
                 "32x32x3 pixels)%s", files[i], lens[i], CIFAR_REC, lens[i] ? ": truncated or wrong format" : "");
            goto free_bufs;
        }
        n += (int64_t)(lens[i] / CIFAR_REC);
    }
    const int P = CIFAR_HW * CIFAR_HW;
    out->pixels = malloc((size_t)n * P * 3);
    if (!out->pixels) {
        fail(err, errlen, "'%s': out of memory for %lld images", dir, (long long)n);
        goto free_bufs;
    }
    out->labels = xmalloc((size_t)n * sizeof *out->labels);
    int64_t at = 0;
    for (int i = 0; i < nf; i++) {
        int64_t m = (int64_t)(lens[i] / CIFAR_REC);
        for (int64_t r = 0; r < m; r++, at++) {
            const unsigned char *rec = bufs[i] + r * CIFAR_REC;
            if (rec[0] > 9) {
                fail(err, errlen, "'%s': record %lld has label %d; CIFAR-10 labels are 0..9 (not a CIFAR-10 "
                     "binary batch?)", files[i], (long long)r, rec[0]);
                rt_dataset_free(out);
                goto free_bufs;
            }
            out->labels[at] = rec[0];
            uint8_t *dst = out->pixels + at * P * 3; /* [32,32,3] from planes [3][32*32] */
            for (int p = 0; p < P; p++)
                for (int c = 0; c < 3; c++) dst[p * 3 + c] = rec[1 + c * P + p];
        }
    }
    out->n = n;
    out->H = out->W = CIFAR_HW;
    out->C = 3;
    out->classes = 10;
    cifar_class_names(dir, out);
    {
        char *s = shape_desc(out);
        out->desc = xasprintf("CIFAR-10 binary %s: %s (%d batch file%s in %s)",
                              split == RT_SPLIT_TRAIN ? "train" : "test", s, nf, nf > 1 ? "s" : "", dir);
        free(s);
    }
    rc = 0;
free_bufs:
    for (int i = 0; i < nf; i++) free(bufs[i]);
out:
    for (int i = 0; i < nf; i++) free(files[i]);
    return rc;
}

/* ---- PNG folders ---------------------------------------------------------- */

typedef struct Names {
    char **v;
    int n, cap;
} Names;

static void names_free(Names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int str_ptr_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The visible *.png files and subdirectories of dir, each sorted by name. */
static int list_dir(const char *dir, Names *pngs, Names *subdirs, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) return fail(err, errlen, "cannot open directory '%s': %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        if (is_dir(p)) VEC_PUSH(subdirs->v, subdirs->n, subdirs->cap, xstrdup(e->d_name));
        else if (ends_with(e->d_name, ".png") && is_file(p)) VEC_PUSH(pngs->v, pngs->n, pngs->cap, xstrdup(e->d_name));
        free(p);
    }
    closedir(d);
    if (pngs->n) qsort(pngs->v, (size_t)pngs->n, sizeof *pngs->v, str_ptr_cmp);
    if (subdirs->n) qsort(subdirs->v, (size_t)subdirs->n, sizeof *subdirs->v, str_ptr_cmp);
    return 0;
}

/* Does dir hold PNG images, directly or one folder down? */
static int png_present(const char *dir) {
    Names p = {0}, s = {0};
    char e[8];
    int found = list_dir(dir, &p, &s, e, sizeof e) == 0 && p.n > 0;
    for (int i = 0; i < s.n && !found; i++) {
        char *sub = xasprintf("%s/%s", dir, s.v[i]);
        Names p2 = {0}, s2 = {0};
        found = list_dir(sub, &p2, &s2, e, sizeof e) == 0 && p2.n > 0;
        names_free(&p2);
        names_free(&s2);
        free(sub);
    }
    names_free(&p);
    names_free(&s);
    return found;
}

/* A list of image files with their labels (-1: unlabelled). */
typedef struct Item {
    char *path;
    int label;
} Item;

typedef struct Items {
    Item *v;
    int n, cap;
} Items;

static void items_push(Items *it, char *path, int label) {
    Item x = {path, label};
    VEC_PUSH(it->v, it->n, it->cap, x);
}

static void items_free(Items *it) {
    for (int i = 0; i < it->n; i++) free(it->v[i].path);
    free(it->v);
    memset(it, 0, sizeof *it);
}

/* "a, b, c" (at most 8 names, then "..."), malloc'd. */
static char *names_join(const Names *s) {
    StrBuf sb = {0};
    for (int i = 0; i < s->n && i < 8; i++) sb_printf(&sb, "%s%s", i ? ", " : "", s->v[i]);
    if (s->n > 8) sb_printf(&sb, ", ...");
    if (!sb.s) sb_printf(&sb, "none");
    return sb.s;
}

/* Collect the images of one tree (dir, without its test/ when skip_test):
 * flat *.png (unlabelled) or <class>/<name>.png. For the test tree, `classes`
 * are those of the training tree: class folders map to them by name.
 * For the training tree, classes (out) receives the sorted class names. */
static int png_collect(const char *dir, int skip_test, Names *classes, int is_test_tree, Items *out, char *err,
                       size_t errlen) {
    Names pngs = {0}, subs = {0};
    int rc = -1;
    if (list_dir(dir, &pngs, &subs, err, errlen) != 0) return -1;
    if (skip_test)
        for (int i = 0; i < subs.n; i++)
            if (strcmp(subs.v[i], "test") == 0) {
                free(subs.v[i]);
                memmove(subs.v + i, subs.v + i + 1, (size_t)(subs.n - i - 1) * sizeof *subs.v);
                subs.n--;
                break;
            }
    if (pngs.n && subs.n) {
        fail(err, errlen, "'%s' holds both PNG files ('%s') and folders ('%s'): expected either images only, or "
             "one folder of images per class", dir, pngs.v[0], subs.v[0]);
        goto out;
    }
    if (is_test_tree && classes->n && pngs.n) {
        fail(err, errlen, "'%s' holds PNG files directly, but the training images are in class folders: expected "
             "the same class folders in the test folder", dir);
        goto out;
    }
    if (is_test_tree && !classes->n && subs.n) {
        fail(err, errlen, "'%s' holds folders ('%s'), but the training images are not in class folders", dir,
             subs.v[0]);
        goto out;
    }
    for (int i = 0; i < pngs.n; i++) items_push(out, xasprintf("%s/%s", dir, pngs.v[i]), -1);
    for (int i = 0; i < subs.n; i++) {
        int label = i;
        if (is_test_tree) {
            label = -1;
            for (int k = 0; k < classes->n; k++)
                if (strcmp(classes->v[k], subs.v[i]) == 0) label = k;
            if (label < 0) {
                char *names = names_join(classes);
                fail(err, errlen, "'%s/%s' is not a class of the training images (their class folders: %s)", dir,
                     subs.v[i], names);
                free(names);
                goto out;
            }
        }
        char *sub = xasprintf("%s/%s", dir, subs.v[i]);
        Names p2 = {0}, s2 = {0};
        int r = list_dir(sub, &p2, &s2, err, errlen);
        if (r == 0 && p2.n == 0)
            r = fail(err, errlen, "class folder '%s' holds no PNG images (expected %s/*.png)", sub, sub);
        for (int k = 0; r == 0 && k < p2.n; k++) items_push(out, xasprintf("%s/%s", sub, p2.v[k]), label);
        names_free(&p2);
        names_free(&s2);
        free(sub);
        if (r) goto out;
    }
    if (!is_test_tree) {
        *classes = subs;
        memset(&subs, 0, sizeof subs);
    }
    rc = 0;
out:
    names_free(&pngs);
    names_free(&subs);
    return rc;
}

static int load_png_dir(const char *dir, RtDatasetSplit split, RtDataset *out, char *err, size_t errlen) {
    Names classes = {0};
    Items train = {0}, test = {0}, *use;
    int rc = -1;
    char *testdir = xasprintf("%s/test", dir);
    int has_test = is_dir(testdir);
    if (png_collect(dir, has_test, &classes, 0, &train, err, errlen) != 0) goto out;
    if (train.n == 0) {
        fail(err, errlen, "'%s' holds no PNG training images", dir);
        goto out;
    }
    const char *how;
    if (has_test) {
        if (split == RT_SPLIT_TEST && png_collect(testdir, 0, &classes, 1, &test, err, errlen) != 0) goto out;
        how = split == RT_SPLIT_TEST ? "the test/ folder" : "all but test/";
    } else {
        /* Last 10% (rounded down) of each class, in name order, for test. */
        Items keep = {0};
        for (int i = 0; i < train.n;) {
            int j = i;
            while (j < train.n && train.v[j].label == train.v[i].label) j++;
            int ntest = (j - i) / 10;
            for (int k = i; k < j; k++) items_push(k >= j - ntest ? &test : &keep, train.v[k].path, train.v[k].label);
            i = j;
        }
        free(train.v); /* the paths moved to keep and test */
        train = keep;
        how = split == RT_SPLIT_TEST ? "the last 10% of each class" : "the first 90% of each class";
    }
    use = split == RT_SPLIT_TRAIN ? &train : &test;
    if (use->n == 0) {
        if (has_test) fail(err, errlen, "'%s' holds no PNG images", testdir);
        else
            fail(err, errlen, "'%s' has no test images: %d image%s too few for a 10%% test split (a class needs "
                 "10 images to give one); add a '%s' folder", dir, train.n,
                 train.n == 1 ? " is" : "s are", testdir);
        goto out;
    }
    for (int i = 0; i < use->n; i++) {
        RtImage img;
        if (rt_png_read(use->v[i].path, &img, err, errlen) != 0) {
            rt_dataset_free(out);
            goto out;
        }
        if (i == 0) {
            out->H = img.H;
            out->W = img.W;
            out->C = img.C;
            out->pixels = malloc((size_t)use->n * img.H * img.W * img.C);
            if (!out->pixels) {
                rt_image_free(&img);
                fail(err, errlen, "'%s': out of memory for %d images", dir, use->n);
                goto out;
            }
        } else if (img.H != out->H || img.W != out->W || img.C != out->C) {
            fail(err, errlen, "mixed sizes: '%s' is %dx%dx%d but '%s' is %dx%dx%d (HxWxC); all images of a data "
                 "set must have one size and channel count", use->v[i].path, img.H, img.W, img.C, use->v[0].path,
                 out->H, out->W, out->C);
            rt_image_free(&img);
            rt_dataset_free(out);
            goto out;
        }
        size_t sz = (size_t)img.H * img.W * img.C;
        memcpy(out->pixels + (size_t)i * sz, img.pixels, sz);
        rt_image_free(&img);
    }
    out->n = use->n;
    if (classes.n) {
        out->classes = classes.n;
        out->labels = xmalloc((size_t)use->n * sizeof *out->labels);
        for (int i = 0; i < use->n; i++) out->labels[i] = use->v[i].label;
        out->class_names = classes.v;
        memset(&classes, 0, sizeof classes);
    }
    {
        char *s = shape_desc(out);
        out->desc = xasprintf("PNG folder %s: %s (%s of %s)", split == RT_SPLIT_TRAIN ? "train" : "test", s, how,
                              dir);
        free(s);
    }
    rc = 0;
out:
    items_free(&test);
    items_free(&train);
    names_free(&classes);
    free(testdir);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------- */

int rt_dataset_load(const char *path, RtDatasetSplit split, RtDataset *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    struct stat s;
    if (stat(path, &s) != 0) return fail(err, errlen, "cannot open data set '%s': %s", path, strerror(errno));
    if (S_ISREG(s.st_mode)) return load_idx_file(path, out, err, errlen);
    if (!S_ISDIR(s.st_mode)) return fail(err, errlen, "data set '%s' is neither a file nor a directory", path);
    int rc;
    char *cif = xasprintf("%s/cifar-10-batches-bin", path);
    char *a = idx_find(path, "train", "images-idx3-ubyte"), *b = idx_find(path, "t10k", "images-idx3-ubyte");
    if (a || b) rc = load_idx_dir(path, split, out, err, errlen);
    else if (cifar_present(path)) rc = load_cifar_dir(path, split, out, err, errlen);
    else if (is_dir(cif) && cifar_present(cif)) rc = load_cifar_dir(cif, split, out, err, errlen);
    else if (png_present(path)) rc = load_png_dir(path, split, out, err, errlen);
    else
        rc = fail(err, errlen, "no data set found in '%s': expected IDX files (train-images-idx3-ubyte[.gz], "
                  "train-labels-idx1-ubyte[.gz], t10k-...), CIFAR-10 binary batches (data_batch_1.bin .. "
                  "data_batch_5.bin, test_batch.bin) or PNG images (*.png, optionally in one folder per class)",
                  path);
    free(a);
    free(b);
    free(cif);
    if (rc != 0) rt_dataset_free(out);
    return rc;
}

/* ---- batches -------------------------------------------------------------- */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* SplitMix64: the next value of the stream at *s. */
static uint64_t splitmix64(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ULL;
    return mix64(*s);
}

/* Uniform in [0, range), unbiased (Lemire's multiply-and-reject). */
static uint64_t uniform_below(uint64_t *s, uint64_t range) {
    unsigned __int128 m = (unsigned __int128)splitmix64(s) * range;
    uint64_t lo = (uint64_t)m;
    if (lo < range) {
        uint64_t t = -range % range;
        while (lo < t) {
            m = (unsigned __int128)splitmix64(s) * range;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

void rt_batcher_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
    uint64_t s = mix64(mix64(seed ^ 0x243F6A8885A308D3ULL) + (uint64_t)epoch);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)uniform_below(&s, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void rt_batcher_init(RtBatcher *b, uint64_t seed, int64_t n) {
    memset(b, 0, sizeof *b);
    b->seed = seed;
    b->n = n > 0 ? n : 0;
    b->perm_epoch = -1;
}

void rt_batcher_free(RtBatcher *b) {
    free(b->perm);
    b->perm = NULL;
    b->perm_epoch = -1;
}

int64_t rt_batcher_next(RtBatcher *b, int64_t batch, int64_t *indices_out) {
    if (b->n <= 0 || batch <= 0) return 0;
    if (batch > b->n) batch = b->n;
    if (b->pos < 0) b->pos = 0;
    if (b->pos + batch > b->n) {
        b->epoch++;
        b->pos = 0;
    }
    if (!b->perm || b->perm_epoch != b->epoch) {
        if (!b->perm) b->perm = xmalloc((size_t)b->n * sizeof *b->perm);
        rt_batcher_permutation(b->seed, b->epoch, b->n, b->perm);
        b->perm_epoch = b->epoch;
    }
    memcpy(indices_out, b->perm + b->pos, (size_t)batch * sizeof *indices_out);
    b->pos += batch;
    if (b->pos == b->n) {
        b->epoch++;
        b->pos = 0;
    }
    return batch;
}
