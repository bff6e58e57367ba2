/*
 * jit_cache.c — the on-disk object cache of compiler/llvm. See jit.h.
 *
 * One file per compiled kernel program, named by a hash of its whole key:
 *
 *   offset  size   field
 *   0       8      magic JIT_CACHE_MAGIC
 *   8       4      format version JIT_CACHE_FORMAT (little-endian u32)
 *   12      4      number of objects n
 *   16      16     hash of the kernel text (two u64)
 *   32      4      length L of the key strings
 *   36      L      cpu, features, LLVM version, pxc version, each NUL-terminated
 *   36+L    8n     object lengths (u64)
 *   ...            the objects, back to back
 *   end-8   8      FNV-1a 64 checksum of every byte before it
 *
 * A reader trusts nothing: every length is bounds-checked against the file
 * size before use, so a truncated, corrupted or foreign file is a miss with a
 * reason, never a crash. Entries are written to a temporary file beside the
 * destination, fsynced and renamed over it: readers see the old entry or
 * the new one. Entries are never deleted by pxc; `rm -r` the directory to
 * reclaim space.
 */
#include "jit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *jit_cache_dir(const JitOptions *opt) {
    if (opt && !opt->use_cache) return NULL;
    if (opt && opt->cache_dir) return opt->cache_dir[0] ? xstrdup(opt->cache_dir) : NULL;
    const char *e = getenv("PXC_CACHE_DIR");
    if (e && e[0]) return xstrdup(e);
    e = getenv("XDG_CACHE_HOME");
    if (e && e[0] == '/') return xasprintf("%s/pxc", e);
    e = getenv("HOME");
    if (e && e[0]) return xasprintf("%s/.cache/pxc", e);
    return NULL;
}

static uint64_t key_file_hash(const JitCacheKey *k) {
    uint64_t h = hash_bytes(HASH_INIT, k->hash, sizeof k->hash);
    const char *parts[4] = {k->cpu, k->features, k->llvm_version, k->pxc_version};
    for (int i = 0; i < 4; i++) h = hash_bytes(h, parts[i], strlen(parts[i]) + 1);
    return h;
}

char *jit_cache_path(const char *dir, const JitCacheKey *key) {
    return xasprintf("%s/%016llx%016llx.pxo", dir, (unsigned long long)key_file_hash(key),
                     (unsigned long long)key->hash[0]);
}

void jit_objects_free(JitObject *objs, int n) {
    if (!objs) return;
    for (int i = 0; i < n; i++) free(objs[i].data);
    free(objs);
}

/* ---- little-endian fields ------------------------------------------------------- */

static void put32(StrBuf *sb, uint32_t v) {
    for (int i = 0; i < 4; i++) sb_putc(sb, (char)(v >> (8 * i)));
}
static void put64(StrBuf *sb, uint64_t v) {
    for (int i = 0; i < 8; i++) sb_putc(sb, (char)(v >> (8 * i)));
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void key_strings(StrBuf *sb, const JitCacheKey *k) {
    const char *parts[4] = {k->cpu, k->features, k->llvm_version, k->pxc_version};
    for (int i = 0; i < 4; i++) {
        for (const char *s = parts[i]; *s; s++) sb_putc(sb, *s);
        sb_putc(sb, 0);
    }
}

/* ---- reading ----------------------------------------------------------------------- */

static int miss(char *note, size_t notelen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int miss(char *note, size_t notelen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note, notelen, fmt, ap);
    va_end(ap);
    return 0;
}
#define NOTE(...) miss(note, notelen, __VA_ARGS__)

int jit_cache_load(const char *dir, const JitCacheKey *key, JitObject **objs, int *nobjs, char *note,
                   size_t notelen) {
    *objs = NULL;
    *nobjs = 0;
    char *path = jit_cache_path(dir, key);
    int fd = open(path, O_RDONLY);
    free(path);
    if (fd < 0) return errno == ENOENT ? NOTE("absent") : NOTE("unreadable: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || st.st_size > (off_t)1 << 34) {
        close(fd);
        return NOTE("unreadable size");
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = xmalloc(size + 1);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    int result = 0;
    StrBuf ks = {0};
    key_strings(&ks, key);
    if (got != size) {
        NOTE("short read");
        goto done;
    }
    if (size < 36 + 8 || memcmp(buf, JIT_CACHE_MAGIC, 8) != 0) {
        NOTE(size < 44 ? "truncated (%zu bytes)" : "not a pxc object cache entry (bad magic)", size);
        goto done;
    }
    uint32_t format = get32(buf + 8);
    if (format != JIT_CACHE_FORMAT) {
        NOTE("format version %u, this pxc reads %d", format, JIT_CACHE_FORMAT);
        goto done;
    }
    uint64_t sum = get64(buf + size - 8);
    if (hash_bytes(HASH_INIT, buf, size - 8) != sum) {
        NOTE("checksum mismatch (corrupt or truncated)");
        goto done;
    }
    uint32_t n = get32(buf + 12);
    if (get64(buf + 16) != key->hash[0] || get64(buf + 24) != key->hash[1]) {
        NOTE("another kernel program (hash collision in the file name)");
        goto done;
    }
    uint32_t L = get32(buf + 32);
    size_t body = size - 8;
    if ((size_t)L > body - 36 || L != ks.len || memcmp(buf + 36, ks.s, L) != 0) {
        NOTE("built for another CPU, feature set, LLVM or pxc version");
        goto done;
    }
    size_t off = 36 + (size_t)L;
    if (n == 0 || n > 1u << 20 || (size_t)n * 8 > body - off) {
        NOTE("bad object count %u", n);
        goto done;
    }
    size_t data = off + (size_t)n * 8, total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t len = get64(buf + off + 8 * (size_t)i);
        if (len == 0 || len > body - data - total) {
            NOTE("bad object length");
            goto done;
        }
        total += (size_t)len;
    }
    if (data + total != body) {
        NOTE("object lengths do not add up");
        goto done;
    }
    *objs = xcalloc(n, sizeof **objs);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = (size_t)get64(buf + off + 8 * (size_t)i);
        (*objs)[i].data = xmalloc(len);
        memcpy((*objs)[i].data, buf + data, len);
        (*objs)[i].len = len;
        data += len;
    }
    *nobjs = (int)n;
    snprintf(note, notelen, "hit");
    result = 1;
done:
    sb_free(&ks);
    free(buf);
    return result;
}

/* ---- writing ------------------------------------------------------------------------- */

static int mkdirs(const char *path, char *note, size_t notelen) {
    char *p = xstrdup(path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                snprintf(note, notelen, "cannot create '%s': %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

int jit_cache_store(const char *dir, const JitCacheKey *key, const JitObject *objs, int nobjs, char *note,
                    size_t notelen) {
    static atomic_uint counter;
    if (mkdirs(dir, note, notelen) != 0) return -1;
    StrBuf sb = {0};
    for (int i = 0; i < 8; i++) sb_putc(&sb, JIT_CACHE_MAGIC[i]);
    put32(&sb, JIT_CACHE_FORMAT);
    put32(&sb, (uint32_t)nobjs);
    put64(&sb, key->hash[0]);
    put64(&sb, key->hash[1]);
    StrBuf ks = {0};
    key_strings(&ks, key);
    put32(&sb, (uint32_t)ks.len);
    for (size_t i = 0; i < ks.len; i++) sb_putc(&sb, ks.s[i]);
    sb_free(&ks);
    for (int i = 0; i < nobjs; i++) put64(&sb, objs[i].len);
    uint64_t sum = hash_bytes(HASH_INIT, sb.s, sb.len);
    for (int i = 0; i < nobjs; i++) sum = hash_bytes(sum, objs[i].data, objs[i].len);
    char *path = jit_cache_path(dir, key);
    char *tmp = xasprintf("%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(note, notelen, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char tail[8];
    for (int i = 0; i < 8; i++) tail[i] = (unsigned char)(sum >> (8 * i));
    int nchunks = nobjs + 2;
    for (int c = 0; c < nchunks; c++) {
        const char *p = c == 0 ? sb.s : c == nchunks - 1 ? (const char *)tail : objs[c - 1].data;
        size_t left = c == 0 ? sb.len : c == nchunks - 1 ? 8 : objs[c - 1].len;
        while (left > 0) {
            ssize_t wr = write(fd, p, left);
            if (wr < 0 && errno == EINTR) continue;
            if (wr <= 0) {
                snprintf(note, notelen, "cannot write '%s': %s", tmp, wr < 0 ? strerror(errno) : "short write");
                close(fd);
                unlink(tmp);
                goto out;
            }
            p += wr;
            left -= (size_t)wr;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(note, notelen, "cannot flush '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        snprintf(note, notelen, "cannot rename '%s': %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(path);
    sb_free(&sb);
    return rc;
}
