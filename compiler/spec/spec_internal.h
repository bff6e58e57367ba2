/*
 * spec_internal.h — private to compiler/spec: the YAML tree and the
 * expression AST of spec statements.
 */
#ifndef PXC_SPEC_INTERNAL_H
#define PXC_SPEC_INTERNAL_H

#include "spec.h"

/* ---- YAML tree (yaml.c) ------------------------------------------------- */

typedef enum YKind { Y_SCALAR, Y_SEQ, Y_MAP } YKind;

typedef struct YNode YNode;
struct YNode {
    YKind kind;
    SrcLoc loc;
    /* scalar */
    char *str;
    size_t len;
    bool quoted, multiline;
    int text_col;      /* column of the scalar's first character of text */
    /* spec.c's parse of the scalar, kept so a statement in a loop or a
     * template is parsed (and its syntax errors reported) once */
    void *parsed;
    int parse_state;   /* 0 not yet, 1 statement, 2 expression, -1 failed */
    /* sequence items, or mapping values with keys[i] */
    YNode **items, **keys;
    int n, cap;
};

YNode *yaml_load(const char *file, const char *text, size_t len, Arena *arena, DiagList *dl);
YNode *ymap_get(const YNode *map, const char *key);
const char *ynode_kind_name(YKind k);

/* ---- statement expressions (expr.c) --------------------------------------
 *
 *   stmt    := 'return' expr | [IDENT '='] expr ['if' expr]
 *   expr    := or ['if' or 'else' expr]      (a conditional value)
 *   or      := and ('or' and)*          and := not ('and' not)*
 *   not     := 'not' not | cmp          cmp := sum [('<'|'<='|'>'|'>='|'=='|'!=') sum]
 *   sum     := prod (('+'|'-') prod)*   prod := unary (('*'|'/'|'%') unary)*
 *   unary   := '-' unary | primary
 *   primary := NUMBER | IDENT | IDENT '(' [arg (',' arg)*] ')' | '(' expr ')'
 *            | '[' [expr (',' expr)*] ']'
 *   arg     := [IDENT '='] expr
 */

typedef enum EKind { E_NUM, E_NAME, E_CALL, E_BIN, E_NEG, E_NOT, E_LIST, E_COND } EKind;

typedef struct Expr Expr;
struct Expr {
    EKind kind;
    SrcLoc loc;
    double num;          /* E_NUM */
    bool is_int;
    char *name;          /* E_NAME, E_CALL (function) */
    char op[3];          /* E_BIN: "+", "<=", "an" (and), "or" ... */
    Expr *lhs, *rhs;     /* E_BIN; E_NEG/E_NOT use lhs; E_COND: then, else */
    Expr *cond;          /* E_COND */
    Expr **args;         /* E_CALL arguments, E_LIST items */
    char **argnames;     /* E_CALL: keyword or NULL */
    SrcLoc *argnlocs;    /* E_CALL: where each keyword is written */
    int nargs;
};

typedef struct Stmt {
    SrcLoc loc;
    char *target;        /* assigned variable, or NULL */
    bool is_return;
    Expr *value;
    Expr *cond;          /* trailing 'if', or NULL */
} Stmt;

/* Parse one statement from a scalar node; NULL after a diagnostic. */
Stmt *expr_parse_stmt(const YNode *scalar, Arena *a, DiagList *dl);
/* Parse one expression (for repeat counts, if conditions, defaults). */
Expr *expr_parse(const YNode *scalar, Arena *a, DiagList *dl);

#endif
