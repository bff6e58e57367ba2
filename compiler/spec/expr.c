/*
 * expr.c — the lexer and recursive-descent parser of spec statements (the
 * grammar is in spec_internal.h). Every token knows its column, so an error
 * points at the exact character of the YAML scalar when the scalar sits on
 * one line.
 */
#include "spec_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef enum TokKind { T_EOF, T_NUM, T_IDENT, T_PUNCT } TokKind;

typedef struct Tok {
    TokKind kind;
    const char *s;
    int len;
    int off;  /* offset in the scalar */
} Tok;

typedef struct P {
    const YNode *node;
    const char *src;
    int pos;
    Tok tok;
    Arena *a;
    DiagList *dl;
    bool failed;
    int depth;   /* recursion of the parse functions (bounded: MAX_DEPTH) */
    int nexpr;   /* Expr nodes made (bounded: MAX_EXPRS, which bounds eval's recursion too) */
} P;

#define MAX_DEPTH 100
#define MAX_EXPRS 1000
#define MAX_TOKEN 256

static SrcLoc loc_at(P *p, int off) {
    SrcLoc l = p->node->loc;
    if (!p->node->multiline) l.col = p->node->text_col + off;
    return l;
}

static void perr(P *p, int off, const char *fmt, const char *arg) {
    if (p->failed) return;
    p->failed = true;
    diag_error(p->dl, loc_at(p, off), fmt, arg);
}

static const char *tok_text(P *p, Tok t) {
    if (t.kind == T_EOF) return "the end of the statement";
    return arena_printf(p->a, "'%.*s'", t.len, t.s);
}

static void next(P *p) {
    const char *s = p->src;
    int i = p->pos;
    while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') i++;
    Tok t = {T_EOF, s + i, 0, i};
    if (!s[i]) {
        p->tok = t;
        p->pos = i;
        return;
    }
    if (isdigit((unsigned char)s[i]) || (s[i] == '.' && isdigit((unsigned char)s[i + 1]))) {
        char *end;
        strtod(s + i, &end);
        t.kind = T_NUM;
        t.len = (int)(end - (s + i));
    } else if (isalpha((unsigned char)s[i]) || s[i] == '_') {
        int j = i;
        while (isalnum((unsigned char)s[j]) || s[j] == '_') j++;
        t.kind = T_IDENT;
        t.len = j - i;
    } else {
        static const char *two[] = {"<=", ">=", "==", "!="};
        t.kind = T_PUNCT;
        t.len = 1;
        for (int k = 0; k < 4; k++)
            if (s[i] == two[k][0] && s[i + 1] == two[k][1]) t.len = 2;
        if (!strchr("+-*/%()[],=<>!", s[i])) {
            p->tok = t;
            p->pos = i + 1;
            perr(p, i, "unexpected character %s in a statement", arena_printf(p->a, "'%c'", s[i]));
            p->tok.kind = T_EOF;
            return;
        }
    }
    p->tok = t;
    p->pos = i + t.len;
    if (t.len > MAX_TOKEN) {
        perr(p, i, "a name or number of more than %s characters", "256");
        p->tok.kind = T_EOF;
    }
}

static bool is_punct(P *p, const char *s) {
    return p->tok.kind == T_PUNCT && (int)strlen(s) == p->tok.len && strncmp(p->tok.s, s, (size_t)p->tok.len) == 0;
}

static bool is_word(P *p, const char *w) {
    return p->tok.kind == T_IDENT && (int)strlen(w) == p->tok.len && strncmp(p->tok.s, w, (size_t)p->tok.len) == 0;
}

static bool expect(P *p, const char *s) {
    if (is_punct(p, s)) {
        next(p);
        return true;
    }
    perr(p, p->tok.off, arena_printf(p->a, "expected '%s' but found %%s", s), tok_text(p, p->tok));
    return false;
}

/* expect() for a closing bracket: on failure, a note at the opening one. */
static bool expect_close(P *p, const char *s, int open_off) {
    bool was_failed = p->failed;
    if (expect(p, s)) return true;
    if (!was_failed && p->tok.off != open_off)
        diag_note(p->dl, loc_at(p, open_off), "to close the '%c' here", p->src[open_off]);
    return false;
}

static Expr *mk(P *p, EKind k, int off) {
    if (++p->nexpr == MAX_EXPRS + 1) perr(p, off, "the statement is too long (more than %s terms)", "1000");
    Expr *e = arena_alloc(p->a, sizeof *e);
    e->kind = k;
    e->loc = loc_at(p, off);
    return e;
}

static Expr *parse_expr(P *p);
static Expr *parse_cond(P *p);

/* Every recursive parse function enters and leaves: deep nesting and a
 * failed parse stop the descent. */
static bool enter(P *p) {
    if (p->failed) return false;
    if (++p->depth > MAX_DEPTH) {
        perr(p, p->tok.off, "the expression nests more than %s levels deep", "100");
        return false;
    }
    return true;
}

static Expr *parse_primary(P *p) {
    Tok t = p->tok;
    if (t.kind == T_NUM) {
        Expr *e = mk(p, E_NUM, t.off);
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", t.len, t.s);
        e->num = strtod(buf, NULL);
        e->is_int = !strpbrk(buf, ".eE");
        next(p);
        return e;
    }
    if (t.kind == T_IDENT && !is_word(p, "if") && !is_word(p, "else") && !is_word(p, "and") && !is_word(p, "or") &&
        !is_word(p, "not")) {
        char *name = arena_printf(p->a, "%.*s", t.len, t.s);
        next(p);
        if (!is_punct(p, "(")) {
            Expr *e = mk(p, E_NAME, t.off);
            e->name = name;
            return e;
        }
        int open_off = p->tok.off;
        next(p);
        Expr *e = mk(p, E_CALL, t.off);
        e->name = name;
        Expr *args[64];
        char *names[64];
        SrcLoc nlocs[64];
        int n = 0;
        while (!is_punct(p, ")") && !p->failed) {
            if (n == 64) {
                perr(p, p->tok.off, "more than 64 arguments in a call%s", "");
                return NULL;
            }
            names[n] = NULL;
            nlocs[n] = loc_at(p, p->tok.off);
            if (p->tok.kind == T_IDENT && p->src[p->pos] == '=' && p->src[p->pos + 1] != '=') {
                names[n] = arena_printf(p->a, "%.*s", p->tok.len, p->tok.s);
                next(p);
                next(p);
            } else if (p->tok.kind == T_IDENT) {
                /* keyword with spaces around '=': look ahead */
                int save = p->pos;
                Tok st = p->tok;
                next(p);
                if (is_punct(p, "=")) {
                    names[n] = arena_printf(p->a, "%.*s", st.len, st.s);
                    next(p);
                } else {
                    p->pos = save;
                    p->tok = st;
                }
            }
            args[n] = parse_expr(p);
            if (!args[n]) return NULL;
            n++;
            if (!is_punct(p, ",")) break;
            next(p);
        }
        if (!expect_close(p, ")", open_off)) return NULL;
        e->nargs = n;
        e->args = arena_alloc(p->a, sizeof(Expr *) * (size_t)(n ? n : 1));
        e->argnames = arena_alloc(p->a, sizeof(char *) * (size_t)(n ? n : 1));
        memcpy(e->args, args, sizeof(Expr *) * (size_t)n);
        memcpy(e->argnames, names, sizeof(char *) * (size_t)n);
        e->argnlocs = arena_alloc(p->a, sizeof(SrcLoc) * (size_t)(n ? n : 1));
        memcpy(e->argnlocs, nlocs, sizeof(SrcLoc) * (size_t)n);
        return e;
    }
    if (is_punct(p, "(")) {
        next(p);
        Expr *e = parse_expr(p);
        if (!e || !expect_close(p, ")", t.off)) return NULL;
        return e;
    }
    if (is_punct(p, "[")) {
        Expr *e = mk(p, E_LIST, t.off);
        next(p);
        Expr *items[64];
        int n = 0;
        while (!is_punct(p, "]") && !p->failed) {
            if (n == 64) {
                perr(p, p->tok.off, "more than 64 items in a list%s", "");
                return NULL;
            }
            if (!(items[n++] = parse_expr(p))) return NULL;
            if (!is_punct(p, ",")) break;
            next(p);
        }
        if (!expect_close(p, "]", t.off)) return NULL;
        e->nargs = n;
        e->args = arena_alloc(p->a, sizeof(Expr *) * (size_t)(n ? n : 1));
        memcpy(e->args, items, sizeof(Expr *) * (size_t)n);
        return e;
    }
    perr(p, t.off, "expected a value (a name, a number, a call or a list) but found %s", tok_text(p, t));
    return NULL;
}

static Expr *parse_unary(P *p) {
    if (!enter(p)) return NULL;
    Expr *r;
    if (is_punct(p, "-")) {
        Expr *e = mk(p, E_NEG, p->tok.off);
        next(p);
        e->lhs = parse_unary(p);
        r = e->lhs ? e : NULL;
    } else {
        r = parse_primary(p);
    }
    p->depth--;
    return r;
}

static Expr *bin(P *p, const char *op, int off, Expr *l, Expr *r) {
    if (!l || !r) return NULL;
    Expr *e = mk(p, E_BIN, off);
    snprintf(e->op, sizeof e->op, "%s", op);
    e->lhs = l;
    e->rhs = r;
    e->loc = l->loc;
    e->loc.col = loc_at(p, off).col;
    return e;
}

static Expr *parse_prod(P *p) {
    Expr *l = parse_unary(p);
    while (l && (is_punct(p, "*") || is_punct(p, "/") || is_punct(p, "%"))) {
        char op[3] = {p->tok.s[0], 0, 0};
        int off = p->tok.off;
        next(p);
        l = bin(p, op, off, l, parse_unary(p));
    }
    return l;
}

static Expr *parse_sum(P *p) {
    Expr *l = parse_prod(p);
    while (l && (is_punct(p, "+") || is_punct(p, "-"))) {
        char op[3] = {p->tok.s[0], 0, 0};
        int off = p->tok.off;
        next(p);
        l = bin(p, op, off, l, parse_prod(p));
    }
    return l;
}

static Expr *parse_cmp(P *p) {
    Expr *l = parse_sum(p);
    static const char *ops[] = {"<=", ">=", "==", "!=", "<", ">"};
    for (int k = 0; l && k < 6; k++)
        if (is_punct(p, ops[k])) {
            int off = p->tok.off;
            next(p);
            return bin(p, ops[k], off, l, parse_sum(p));
        }
    return l;
}

static Expr *parse_not(P *p) {
    if (!enter(p)) return NULL;
    Expr *r;
    if (is_word(p, "not")) {
        Expr *e = mk(p, E_NOT, p->tok.off);
        next(p);
        e->lhs = parse_not(p);
        r = e->lhs ? e : NULL;
    } else {
        r = parse_cmp(p);
    }
    p->depth--;
    return r;
}

static Expr *parse_and(P *p) {
    Expr *l = parse_not(p);
    while (l && is_word(p, "and")) {
        int off = p->tok.off;
        next(p);
        l = bin(p, "an", off, l, parse_not(p));
    }
    return l;
}

static Expr *parse_or(P *p) {
    Expr *l = parse_and(p);
    while (l && is_word(p, "or")) {
        int off = p->tok.off;
        next(p);
        l = bin(p, "or", off, l, parse_and(p));
    }
    return l;
}

/* `a if c else b`; a trailing `if c` without `else` is left for the
 * statement (a conditional statement). */
static Expr *parse_expr(P *p) {
    if (!enter(p)) return NULL;
    Expr *r = parse_cond(p);
    p->depth--;
    return r;
}

static Expr *parse_cond(P *p) {
    Expr *l = parse_or(p);
    if (!l || !is_word(p, "if")) return l;
    int save_pos = p->pos;
    Tok save_tok = p->tok;
    int off = p->tok.off;
    next(p);
    Expr *cond = parse_or(p);
    if (cond && is_word(p, "else")) {
        next(p);
        Expr *e = mk(p, E_COND, off);
        e->lhs = l;
        e->cond = cond;
        e->rhs = parse_expr(p);
        return e->rhs ? e : NULL;
    }
    if (p->failed) return NULL;
    p->pos = save_pos;
    p->tok = save_tok;
    return l;
}

static void init_p(P *p, const YNode *n, Arena *a, DiagList *dl) {
    memset(p, 0, sizeof *p);
    p->node = n;
    p->src = n->str;
    p->a = a;
    p->dl = dl;
    next(p);
}

Expr *expr_parse(const YNode *n, Arena *a, DiagList *dl) {
    P p;
    init_p(&p, n, a, dl);
    Expr *e = parse_expr(&p);
    if (e && p.tok.kind != T_EOF) perr(&p, p.tok.off, "unexpected %s after the expression", tok_text(&p, p.tok));
    return p.failed ? NULL : e;
}

Stmt *expr_parse_stmt(const YNode *n, Arena *a, DiagList *dl) {
    P p;
    init_p(&p, n, a, dl);
    Stmt *s = arena_alloc(a, sizeof *s);
    s->loc = loc_at(&p, p.tok.off);
    if (p.tok.kind == T_EOF) {
        perr(&p, 0, "empty statement%s", "");
        return NULL;
    }
    if (is_word(&p, "return")) {
        s->is_return = true;
        next(&p);
    } else if (p.tok.kind == T_IDENT && p.src[p.pos] != '(') {
        /* `name = ...`? */
        int save = p.pos;
        Tok st = p.tok;
        next(&p);
        if (is_punct(&p, "=")) {
            s->target = arena_printf(a, "%.*s", st.len, st.s);
            next(&p);
        } else {
            p.pos = save;
            p.tok = st;
        }
    }
    s->value = parse_expr(&p);
    if (!s->value) return NULL;
    if (is_word(&p, "if")) {
        next(&p);
        s->cond = parse_expr(&p);
        if (!s->cond) return NULL;
    }
    if (p.tok.kind != T_EOF) perr(&p, p.tok.off, "unexpected %s after the statement", tok_text(&p, p.tok));
    return p.failed ? NULL : s;
}
