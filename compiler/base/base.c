/*
 * base.c — diagnostics, checked allocation, the compilation arena and small
 * string helpers shared by every stage. See base.h.
 */
#include "base.h"

#include <stdlib.h>
#include <string.h>

/* ---- internal bugs ----------------------------------------------------- */

_Noreturn void pxc_bug_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "pxc: internal compiler error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(this is a bug in pxc, not in your spec)\n");
    abort();
}

/* ---- memory ------------------------------------------------------------ */

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) pxc_bug("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) pxc_bug("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) pxc_bug("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static char *vasprintf_x(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vasprintf_x(fmt, ap);
    va_end(ap);
    return s;
}

struct ArenaBlock {
    ArenaBlock *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    ArenaBlock *b = a->head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 65536 ? n : 65536;
        b = xmalloc(sizeof *b + cap);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strdup(Arena *a, const char *s) {
    size_t n = strlen(s);
    char *d = arena_alloc(a, n + 1);
    memcpy(d, s, n);
    return d;
}

char *arena_printf(Arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vasprintf_x(fmt, ap);
    va_end(ap);
    char *d = arena_strdup(a, s);
    free(s);
    return d;
}

void arena_free(Arena *a) {
    ArenaBlock *b = a->head;
    while (b) {
        ArenaBlock *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

/* ---- diagnostics ------------------------------------------------------ */

void diag_init(DiagList *dl) { memset(dl, 0, sizeof *dl); }

void diag_free(DiagList *dl) {
    for (int i = 0; i < dl->n; i++) free(dl->items[i].msg);
    free(dl->items);
    for (int i = 0; i < dl->nsources; i++) {
        free(dl->sources[i].name);
        free(dl->sources[i].text);
    }
    free(dl->sources);
    memset(dl, 0, sizeof *dl);
}

bool diag_full(const DiagList *dl) {
    int max = dl->max_errors ? dl->max_errors : 20;
    return dl->nerrors >= max;
}

void diag_vadd(DiagList *dl, DiagLevel lv, SrcLoc loc, const char *fmt, va_list ap) {
    if (lv == DIAG_ERROR && diag_full(dl)) return;
    if (lv == DIAG_NOTE && dl->n > 0 && diag_full(dl) && dl->items[dl->n - 1].level != DIAG_ERROR
        && dl->items[dl->n - 1].level != DIAG_NOTE)
        return;
    Diag d = {lv, loc, vasprintf_x(fmt, ap)};
    int cap = dl->cap;
    VEC_PUSH(dl->items, dl->n, cap, d);
    dl->cap = cap;
    if (lv == DIAG_ERROR) dl->nerrors++;
}

void diag_add(DiagList *dl, DiagLevel lv, SrcLoc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(dl, lv, loc, fmt, ap);
    va_end(ap);
}

const char *diag_add_source(DiagList *dl, const char *name, const char *text, size_t len) {
    for (int i = 0; i < dl->nsources; i++)
        if (strcmp(dl->sources[i].name, name) == 0) return dl->sources[i].name;
    dl->sources = xrealloc(dl->sources, (size_t)(dl->nsources + 1) * sizeof *dl->sources);
    SourceText *s = &dl->sources[dl->nsources++];
    s->name = xstrdup(name);
    s->text = xstrndup(text, len);
    s->len = len;
    return s->name;
}

static const SourceText *find_source(const DiagList *dl, const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < dl->nsources; i++)
        if (dl->sources[i].name == name || strcmp(dl->sources[i].name, name) == 0)
            return &dl->sources[i];
    return NULL;
}

/* Print line `line` of src (1-based) and a caret under column `col`. */
static void print_source_line(FILE *f, const SourceText *src, int line, int col, bool color) {
    const char *p = src->text, *end = src->text + src->len;
    for (int l = 1; l < line && p < end; p++)
        if (*p == '\n') l++;
    if (p >= end && line > 1) return;
    const char *e = p;
    while (e < end && *e != '\n') e++;
    /* a long line shows 160 characters around the column, "..." for the rest */
    const char *a = p, *b = e;
    int skip = 0;
    if (e - p > 160) {
        a = col - 1 > 80 ? p + (col - 1 - 80) : p;
        if (a > e) a = e;
        b = e - a > 160 ? a + 160 : e;
        skip = (int)(a - p);
    }
    fprintf(f, "%5d | %s", line, a > p ? "..." : "");
    for (const char *q = a; q < b; q++) fputc(*q == '\t' ? ' ' : (unsigned char)*q < 32 ? '?' : *q, f);
    fprintf(f, "%s\n      | %s", b < e ? "..." : "", a > p ? "   " : "");
    for (int c = 1 + skip; c < col && p + c - 1 < b; c++) fputc(' ', f);
    fprintf(f, "%s^%s\n", color ? "\033[1;32m" : "", color ? "\033[0m" : "");
}

void diag_print(const DiagList *dl, FILE *f, bool color) {
    static const char *names[] = {"error", "warning", "note"};
    static const char *colors[] = {"\033[1;31m", "\033[1;35m", "\033[1;36m"};
    for (int i = 0; i < dl->n; i++) {
        const Diag *d = &dl->items[i];
        if (color) fputs("\033[1m", f);
        if (d->loc.file && d->loc.line > 0)
            fprintf(f, "%s:%d:%d: ", d->loc.file, d->loc.line, d->loc.col);
        else if (d->loc.file)
            fprintf(f, "%s: ", d->loc.file);
        else
            fputs("pxc: ", f);
        fprintf(f, "%s%s:%s%s %s%s\n", color ? colors[d->level] : "", names[d->level],
                color ? "\033[0m" : "", color ? "\033[1m" : "", d->msg, color ? "\033[0m" : "");
        const SourceText *src = find_source(dl, d->loc.file);
        if (src && d->loc.line > 0) print_source_line(f, src, d->loc.line, d->loc.col, color);
    }
}

/* ---- strings ----------------------------------------------------------- */

int str_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1000;
    int row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = cur;
        }
    }
    return row[lb];
}

const char *str_closest(const char *word, const char *const *cands, int ncands) {
    int best = 1 << 30;
    const char *bs = NULL;
    int lim = (int)strlen(word) / 3;
    if (lim < 2) lim = 2;
    if (lim > 21) return NULL;  /* over 64 characters: str_edit_distance does not measure */
    for (int i = 0; i < ncands; i++) {
        if (!cands[i]) continue;
        int d = str_edit_distance(word, cands[i]);
        if (d < best) best = d, bs = cands[i];
    }
    return best <= lim ? bs : NULL;
}

void sb_putc(StrBuf *sb, char c) {
    if (sb->len + 2 > sb->cap) {
        sb->cap = sb->cap ? 2 * sb->cap : 256;
        sb->s = xrealloc(sb->s, sb->cap);
    }
    sb->s[sb->len++] = c;
    sb->s[sb->len] = 0;
}

void sb_printf(StrBuf *sb, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (sb->len + (size_t)n + 1 > sb->cap) {
        while (sb->len + (size_t)n + 1 > sb->cap) sb->cap = sb->cap ? 2 * sb->cap : 256;
        sb->s = xrealloc(sb->s, sb->cap);
    }
    vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
    sb->len += (size_t)n;
    va_end(ap);
}

void sb_free(StrBuf *sb) {
    free(sb->s);
    memset(sb, 0, sizeof *sb);
}

uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}
