/*
 * base.h — what every stage of pxc shares: source locations, diagnostics,
 * and the compilation arena.
 *
 * The compiler is a library. No function behind this header (or any other
 * compiler header) prints to a terminal or exits on user input: problems in
 * the spec become Diag records in a DiagList that the caller prints. Internal
 * bugs are different: pxc_bug() reports the compiler's own file and line.
 */
#ifndef PXC_BASE_H
#define PXC_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PXC_VERSION "0.1.0"

/* ---- source locations ------------------------------------------------- */

/* A position in a spec file, 1-based line and column; file is owned by the
 * SourceFile registry of the DiagList (or static). line == 0: no location. */
typedef struct SrcLoc {
    const char *file;
    int line, col;
} SrcLoc;

static inline SrcLoc srcloc_none(void) { SrcLoc l = {0, 0, 0}; return l; }

/* ---- diagnostics ------------------------------------------------------ */

typedef enum DiagLevel { DIAG_ERROR, DIAG_WARNING, DIAG_NOTE } DiagLevel;

typedef struct Diag {
    DiagLevel level;
    SrcLoc loc;
    char *msg;
} Diag;

/* Sources kept so diagnostics can quote the offending line. */
typedef struct SourceText {
    char *name;
    char *text;
    size_t len;
} SourceText;

typedef struct DiagList {
    Diag *items;
    int n, cap;
    int nerrors;
    int max_errors;       /* stop collecting after this many (0: 20) */
    SourceText *sources;
    int nsources;
} DiagList;

void diag_init(DiagList *dl);
void diag_free(DiagList *dl);
/* Add a diagnostic (printf-style). Notes attach to the preceding error. */
void diag_add(DiagList *dl, DiagLevel lv, SrcLoc loc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void diag_vadd(DiagList *dl, DiagLevel lv, SrcLoc loc, const char *fmt, va_list ap);
#define diag_error(dl, loc, ...) diag_add((dl), DIAG_ERROR, (loc), __VA_ARGS__)
#define diag_note(dl, loc, ...) diag_add((dl), DIAG_NOTE, (loc), __VA_ARGS__)
/* Register a source's text (copied) so diagnostics can quote it; returns the
 * stable name pointer to use in SrcLoc.file. */
const char *diag_add_source(DiagList *dl, const char *name, const char *text, size_t len);
/* Print every diagnostic: "file:line:col: error: msg", the source line and
 * a caret under the column. */
void diag_print(const DiagList *dl, FILE *f, bool color);
/* True once max_errors errors were collected: stages stop early. */
bool diag_full(const DiagList *dl);

/* ---- internal bugs ----------------------------------------------------- */

/* An internal compiler error: never caused by user input. Prints the
 * compiler's file:line and aborts — the one place libpxc may stop. */
_Noreturn void pxc_bug_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define pxc_bug(...) pxc_bug_at(__FILE__, __LINE__, __VA_ARGS__)
#define PXC_ASSERT(c) do { if (!(c)) pxc_bug("assertion failed: %s", #c); } while (0)

/* ---- memory ------------------------------------------------------------ */

/* Checked allocation: out of memory is an internal failure, not user input. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Grow a dynamic array (ptr, count, capacity) to hold one more element. */
#define VEC_PUSH(ptr, n, cap, val) do { \
    if ((n) == (cap)) { (cap) = (cap) ? 2 * (cap) : 8; \
        (ptr) = xrealloc((ptr), (size_t)(cap) * sizeof *(ptr)); } \
    (ptr)[(n)++] = (val); } while (0)

/* A compilation's scratch memory, freed as a whole. */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena { ArenaBlock *head; } Arena;
void *arena_alloc(Arena *a, size_t n);      /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_printf(Arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);

/* ---- small string helpers ---------------------------------------------- */

/* Edit distance, for "did you mean" suggestions. */
int str_edit_distance(const char *a, const char *b);
/* The closest candidate within distance max(2, len/3), or NULL. */
const char *str_closest(const char *word, const char *const *cands, int ncands);

/* A growable string. */
typedef struct StrBuf { char *s; size_t len, cap; } StrBuf;
void sb_printf(StrBuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_putc(StrBuf *sb, char c);
void sb_free(StrBuf *sb);

/* FNV-1a 64-bit, for cache keys and spec hashes. */
uint64_t hash_bytes(uint64_t h, const void *p, size_t n);
#define HASH_INIT 1469598103934665603ULL

#endif
