/*
 * spec.c — a spec (YAML tree) → the forward graph IR.
 *
 * The spec is interpreted once, top to bottom: parameters (with --set
 * overrides applied where each is defined), the input, the head, templates,
 * then the `network` body, whose statements build graph nodes as they run.
 * Templates are expanded at each call, `repeat` blocks unrolled and skip
 * stacks resolved here, so the graph that comes out is flat; every node
 * keeps the YAML location of the statement (and the exact column of the
 * call) that made it.
 *
 * Schema (see README.md "The spec language"):
 *
 *   pxc: 1                               # format version
 *   extends: PATH                        # optional: start from another spec
 *   name: STRING
 *   params: {NAME: EXPR, ...}            # in order; later ones may use earlier ones
 *   input: {height: EXPR, width: EXPR, channels: EXPR, classes: EXPR}
 *   head: {type: logistic_mixture | softmax256, mixtures: EXPR}
 *   stacks: [NAME, ...]
 *   templates: {NAME: {args: [NAME | {NAME: DEFAULT}], body: BODY}}
 *   network: BODY                        # ends with `return EXPR`
 *
 *   BODY := [ ITEM ... ]
 *   ITEM := "STMT"                       # unnamed statement
 *         | {LAYER_NAME: "STMT"}         # named; {var} placeholders expand
 *         | {repeat: EXPR, as: NAME, body: BODY}
 *         | {if: EXPR, body: BODY, else: BODY}
 *
 * Errors are collected, not fatal: a failed statement binds its target to
 * an error value that later statements accept silently, so independent
 * mistakes are all reported in one run.
 */
#include "spec_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATE_DEPTH 32
#define MAX_REPEAT 100000
#define MAX_NODES 200000        /* ~60 MB of nodes; the paper model has 1392 */
#define MAX_STATEMENTS 200000

/* ---- values --------------------------------------------------------------- */

typedef enum VKind { V_NONE, V_NUM, V_SYM, V_TENSOR, V_LIST, V_STACK, V_ERR } VKind;

typedef struct Value Value;
struct Value {
    VKind k;
    double num;
    bool is_int;
    const char *sym;   /* V_SYM text; V_STACK name */
    int node;          /* V_TENSOR */
    bool popped;       /* V_TENSOR taken from a stack ... */
    SrcLoc pushed_at;  /* ... pushed here */
    const char *pushed_when;  /* ... in this loop iteration ("s=1, i=4"), or "" */
    const char *stack; /* ... of this stack */
    Value *items;      /* V_LIST */
    int n;
};

static Value v_none(void) { Value v; memset(&v, 0, sizeof v); return v; }
static Value v_err(void) { Value v = v_none(); v.k = V_ERR; return v; }
static Value v_num(double x, bool is_int) { Value v = v_none(); v.k = V_NUM; v.num = x; v.is_int = is_int; return v; }
static Value v_tensor(int node) { Value v = v_none(); v.k = V_TENSOR; v.node = node; return v; }

static const char *vkind_name(VKind k) {
    static const char *n[] = {"none", "a number", "a name", "a tensor", "a list", "a stack", "an error"};
    return n[k];
}

typedef struct Var {
    const char *name;
    Value val;
    SrcLoc loc;
} Var;

typedef struct Scope {
    Var *vars;
    int n, cap;
} Scope;

typedef struct Template {
    const char *name;
    SrcLoc loc;
    const YNode *args;   /* sequence */
    const YNode *body;
    bool no_return_reported;
} Template;

typedef struct Stack {
    const char *name;
    SrcLoc loc;
    Value *items;
    int n, cap;
} Stack;

typedef struct Override {
    const char *key, *value;
    bool used;
} Override;

/* Full layer names → where each was first made: an open-addressing set. */
typedef struct LayerName {
    const char *name;
    SrcLoc loc;
} LayerName;

typedef struct LayerSet {
    LayerName *slots;
    size_t cap, n;
} LayerSet;

typedef struct Ctx {
    Graph *g;
    DiagList *dl;
    Arena *a;
    const char *file;
    Scope params;        /* params and input fields, visible everywhere */
    Template *tmpl;
    int ntmpl, tcap;
    Stack *stacks;
    int nstacks, scap;
    Override *ovr;
    int novr;
    const char *callstack[MAX_TEMPLATE_DEPTH + 1];
    SrcLoc callsite[MAX_TEMPLATE_DEPTH + 1];   /* where each active call is written */
    const char *loopvar[64];   /* active repeat loops, outermost first ... */
    long loopval[64];          /* ... and their counters */
    int nloops;
    int first_n, mark_n; /* diagnostics: this compilation's first; those followed up by flush_errors */
    int depth;
    char prefix[1024];   /* the current layer-name scope, e.g. "up.0.u.0" */
    /* the statement being run: its layer name and whether a parametric
     * call used it already */
    const char *stmt_name;
    int stmt_param_calls;
    SrcLoc stmt_loc;
    int dropout_streams;
    int auto_names;
    long statements;
    bool returned;
    Value retval;
    SrcLoc retloc;       /* the return statement that set retval */
    bool stopped;        /* a size limit was hit: stop running statements */
    SrcLoc *recursions;  /* template calls already reported as recursive */
    int nrec, reccap;
    const char **bad_tmpl;  /* templates whose definition failed: calls stay quiet */
    int nbad, badcap;
    LayerSet layers;     /* full layer names, to find one used twice */
    SpecHead head;
    int nr_mix;
} Ctx;



#define ERR(loc, ...) diag_error(c->dl, (loc), __VA_ARGS__)

/* ---- scopes ------------------------------------------------------------------ */

static Var *scope_find(Scope *s, const char *name) {
    for (int i = s->n - 1; i >= 0; i--)
        if (strcmp(s->vars[i].name, name) == 0) return &s->vars[i];
    return NULL;
}

static void scope_set(Ctx *c, Scope *s, const char *name, Value v, SrcLoc loc) {
    Var *var = scope_find(s, name);
    if (var) {
        var->val = v;
        var->loc = loc;
        return;
    }
    Var nv = {arena_strdup(c->a, name), v, loc};
    VEC_PUSH(s->vars, s->n, s->cap, nv);
}

/* Add `name`; if it is there already, return its first entry instead. */
static const LayerName *layerset_add(LayerSet *ls, const char *name, SrcLoc loc) {
    if (2 * (ls->n + 1) > ls->cap) {
        LayerSet big = {xcalloc(ls->cap ? 2 * ls->cap : 256, sizeof(LayerName)), ls->cap ? 2 * ls->cap : 256, 0};
        for (size_t i = 0; i < ls->cap; i++)
            if (ls->slots[i].name) layerset_add(&big, ls->slots[i].name, ls->slots[i].loc);
        free(ls->slots);
        *ls = big;
    }
    size_t i = hash_bytes(HASH_INIT, name, strlen(name)) & (ls->cap - 1);
    for (; ls->slots[i].name; i = (i + 1) & (ls->cap - 1))
        if (!strcmp(ls->slots[i].name, name)) return &ls->slots[i];
    ls->slots[i].name = name;
    ls->slots[i].loc = loc;
    ls->n++;
    return NULL;
}

/* Follow up the diagnostics added since the last call: an error that
 * repeats one already reported (same place, same words: a template that
 * fails the same way at every call) is dropped with its notes; otherwise,
 * inside a template, notes name the calls that led there, innermost first. */
static void flush_errors(Ctx *c) {
    DiagList *dl = c->dl;
    if (dl->n == c->mark_n) return;
    bool any = false, all_dup = true;
    for (int i = c->mark_n; i < dl->n; i++) {
        const Diag *d = &dl->items[i];
        if (d->level != DIAG_ERROR) continue;
        any = true;
        bool dup = false;
        for (int j = c->first_n; j < c->mark_n && !dup; j++) {
            const Diag *e = &dl->items[j];
            dup = e->level == DIAG_ERROR && e->loc.line == d->loc.line && e->loc.col == d->loc.col &&
                  (e->loc.file == d->loc.file || (e->loc.file && d->loc.file && !strcmp(e->loc.file, d->loc.file))) &&
                  !strcmp(e->msg, d->msg);
        }
        if (!dup) all_dup = false;
    }
    if (any && all_dup) {
        for (int i = c->mark_n; i < dl->n; i++) {
            if (dl->items[i].level == DIAG_ERROR) dl->nerrors--;
            free(dl->items[i].msg);
        }
        dl->n = c->mark_n;
    } else if (any) {
        for (int k = c->depth - 1; k >= 0; k--)
            diag_note(dl, c->callsite[k], "in template '%s', called here", c->callstack[k]);
    }
    c->mark_n = dl->n;
}

/* A size limit stops the run; diag_full too. */
static bool halted(Ctx *c) { return c->stopped || diag_full(c->dl); }

static const char *const builtin_names[] = {
    "conv", "deconv", "nin", "class_bias", "concat_elu", "elu", "sigmoid", "tanh", "gate", "down_shift",
    "right_shift", "shift", "concat", "slice", "dropout", "ones", "push", "pop",
};
enum { NBUILTINS = sizeof builtin_names / sizeof builtin_names[0] };

/* A user's text for a message: at most 64 characters of it. */
static const char *clip(Ctx *c, const char *s) {
    return strlen(s) <= 64 ? s : arena_printf(c->a, "%.60s...", s);
}

/* Did-you-mean, but not a candidate that shares nothing with the word (for
 * one-letter names every other one-letter name is "close"). */
static const char *closest(const char *word, const char *const *cands, int ncands) {
    const char *r = str_closest(word, cands, ncands);
    if (r && str_edit_distance(word, r) >= (int)strlen(word)) return NULL;
    return r;
}

/* Did-you-mean over the variables in scope, params, templates and builtins. */
static const char *suggest_name(Ctx *c, Scope *s, const char *word, bool calls) {
    const char **cands = xmalloc(sizeof(char *) * (size_t)(s->n + c->params.n + c->ntmpl + NBUILTINS + c->nstacks + 1));
    int n = 0;
    if (!calls) {
        for (int i = 0; i < s->n; i++) cands[n++] = s->vars[i].name;
        for (int i = 0; i < c->params.n; i++) cands[n++] = c->params.vars[i].name;
        for (int i = 0; i < c->nstacks; i++) cands[n++] = c->stacks[i].name;
    } else {
        for (int i = 0; i < c->ntmpl; i++) cands[n++] = c->tmpl[i].name;
        for (int i = 0; i < NBUILTINS; i++) cands[n++] = builtin_names[i];
    }
    const char *r = closest(word, cands, n);
    free(cands);
    return r;
}

/* ---- YAML schema helpers ---------------------------------------------------- */

/* Report every key of `map` not in `allowed`, with a did-you-mean. A key
 * with a suggestion that the map lacks is then read as that key, so later
 * checks do not repeat the error ("needs 'height'"); a key reported once is
 * not reported again when a loop or a template runs the same map. */
static void check_keys(Ctx *c, const YNode *map, const char *what, const char *const *allowed, int nallowed) {
    for (int i = 0; i < map->n; i++) {
        const char *k = map->keys[i]->str;
        bool ok = false;
        for (int j = 0; j < nallowed; j++)
            if (strcmp(k, allowed[j]) == 0) ok = true;
        if (ok || map->keys[i]->parse_state == -2) continue;
        const char *s = closest(k, allowed, nallowed);
        if (s)
            ERR(map->keys[i]->loc, "unknown key '%s' in %s; did you mean '%s'?", k, what, s);
        else {
            StrBuf sb = {0};
            for (int j = 0; j < nallowed; j++) sb_printf(&sb, "%s'%s'", j ? ", " : "", allowed[j]);
            ERR(map->keys[i]->loc, "unknown key '%s' in %s; expected one of %s", k, what, sb.s);
            sb_free(&sb);
        }
        YNode *key = arena_alloc(c->a, sizeof *key);
        *key = *map->keys[i];
        key->parse_state = -2;
        if (s && !ymap_get(map, s)) key->str = arena_strdup(c->a, s), key->len = strlen(s);
        ((YNode *)map)->keys[i] = key;
    }
}

/* True if `map` has an unknown key that check_keys took for a misspelling
 * of `key` (so "needs 'key'" would only repeat that error). */
static bool misspelt(const YNode *map, const char *key, const char *const *allowed, int nallowed) {
    for (int i = 0; i < map->n; i++) {
        const char *k = map->keys[i]->str;
        bool ok = false;
        for (int j = 0; j < nallowed; j++)
            if (strcmp(k, allowed[j]) == 0) ok = true;
        const char *s = ok ? NULL : closest(k, allowed, nallowed);
        if (s && !strcmp(s, key)) return true;
    }
    return false;
}

static bool want_kind(Ctx *c, const YNode *n, YKind k, const char *what) {
    if (n->kind == k) return true;
    ERR(n->loc, "%s must be a %s, found a %s", what, ynode_kind_name(k), ynode_kind_name(n->kind));
    return false;
}

static bool valid_ident(const char *s) {
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
    return true;
}

/* ---- evaluation ----------------------------------------------------------------- */

static Value eval(Ctx *c, Scope *s, const Expr *e);
static Value run_body(Ctx *c, Scope *s, const YNode *body);

static bool truthy(Value v) {
    switch (v.k) {
    case V_NUM: return v.num != 0;
    case V_NONE: return false;
    default: return true;
    }
}

static const Node *node_of(Ctx *c, Value v) { return &c->g->nodes[v.node]; }

static const char *describe(Ctx *c, Value v) {
    char buf[64];
    if (v.k == V_TENSOR) return arena_printf(c->a, "a %s tensor", shape_str(node_of(c, v)->shape, buf, sizeof buf));
    if (v.k == V_NUM) return arena_printf(c->a, "the number %g", v.num);
    if (v.k == V_SYM) return arena_printf(c->a, "the name '%s'", v.sym);
    if (v.k == V_LIST) return arena_printf(c->a, "a list of %d item%s", v.n, v.n == 1 ? "" : "s");
    return vkind_name(v.k);
}

/* After a shape error: where each input that came off a stack was pushed. */
static void popped_notes(Ctx *c, const Value *ins, int nin, bool operands) {
    char buf[64];
    for (int i = 0; i < nin; i++) {
        if (!ins[i].popped) continue;
        const char *which = operands ? (i ? "the right operand" : "the left operand") : arena_printf(c->a, "input %d", i + 1);
        diag_note(c->dl, ins[i].pushed_at, "%s (%s) was popped from stack '%s'; it was pushed here%s", which,
                  shape_str(node_of(c, ins[i])->shape, buf, sizeof buf), ins[i].stack, ins[i].pushed_when);
    }
}

/* Add a node; on a shape error, also point at where popped inputs were pushed. */
static Value add_node(Ctx *c, OpKind op, const Value *ins, int nin, const Attrs *a, SrcLoc loc) {
    int idx[IR_MAX_INPUTS];
    for (int i = 0; i < nin; i++) {
        if (ins[i].k == V_ERR) return v_err();
        idx[i] = ins[i].node;
    }
    if (c->stopped) return v_err();
    if (c->g->n > MAX_NODES) {
        ERR(loc, "the network has more than %d nodes; is a repeat count too large?", MAX_NODES);
        c->stopped = true;
        return v_err();
    }
    int before = c->dl->nerrors;
    int id = ir_add(c->g, c->dl, op, idx, nin, a, loc);
    if (id < 0) {
        if (c->dl->nerrors > before) popped_notes(c, ins, nin, false);
        return v_err();
    }
    return v_tensor(id);
}

static bool want_tensor(Ctx *c, Value v, const Expr *e, const char *fn, const char *arg) {
    if (v.k == V_TENSOR || v.k == V_ERR) return true;
    ERR(e->loc, "%s: argument '%s' must be a tensor, found %s", fn, arg, describe(c, v));
    return false;
}

/* The first name in `e` that holds a number or a list. */
static const Expr *first_name(const Expr *e, int depth) {
    if (!e || depth > 50) return NULL;
    if (e->kind == E_NAME) return e;
    if (e->kind == E_CALL) return NULL;
    const Expr *parts[3] = {e->cond, e->lhs, e->rhs};
    for (int i = 0; i < 3; i++) {
        const Expr *r = first_name(parts[i], depth + 1);
        if (r) return r;
    }
    for (int i = 0; e->kind == E_LIST && i < e->nargs; i++) {
        const Expr *r = first_name(e->args[i], depth + 1);
        if (r) return r;
    }
    return NULL;
}

/* After an error about a value: a note at where the name it came from got
 * that value (a parameter, --set, a template argument, an assignment). */
static void note_origin(Ctx *c, Scope *s, const Expr *e) {
    const Expr *n = first_name(e, 0);
    if (!n) return;
    Var *v = s ? scope_find(s, n->name) : NULL;
    bool param = false;
    if (!v) v = scope_find(&c->params, n->name), param = true;
    if (!v || (v->val.k != V_NUM && v->val.k != V_LIST && v->val.k != V_SYM)) return;
    if (param && v->loc.line == 0) {
        for (int i = 0; i < c->novr; i++)
            if (c->ovr[i].used && (!strcmp(c->ovr[i].key, n->name) || (!strncmp(c->ovr[i].key, "params.", 7) &&
                                                                      !strcmp(c->ovr[i].key + 7, n->name)))) {
                diag_note(c->dl, srcloc_none(), "'%s' is set by --set '%s=%s'", n->name, c->ovr[i].key, c->ovr[i].value);
                return;
            }
        return;
    }
    if (v->loc.line == n->loc.line && v->loc.col == n->loc.col && v->loc.file == n->loc.file) return;
    diag_note(c->dl, v->loc, param ? "'%s' is defined here" : "'%s' gets its value here", n->name);
}

static bool want_int(Ctx *c, Scope *s, Value v, const Expr *e, const char *fn, const char *arg, long lo, long *out) {
    if (v.k == V_ERR) return false;
    if (v.k != V_NUM || v.num != floor(v.num)) {
        ERR(e->loc, "%s: argument '%s' must be a whole number, found %s", fn, arg, describe(c, v));
        note_origin(c, s, e);
        return false;
    }
    if (v.num < lo || v.num > 1e9) {
        if (v.num < lo)
            ERR(e->loc, "%s: argument '%s' must be at least %ld, found %g", fn, arg, lo, v.num);
        else
            ERR(e->loc, "%s: argument '%s' must be at most 1e9, found %g", fn, arg, v.num);
        note_origin(c, s, e);
        return false;
    }
    *out = (long)v.num;
    return true;
}

/* A builtin's signature: names of its parameters; a trailing '?' marks an
 * optional one (value none unless given). */
typedef struct Sig {
    const char *name;
    const char *params[8];
    int nparams;
    bool variadic;
} Sig;

/* Bind call arguments to a signature; missing optional ones are V_NONE. */
static bool bind_args(Ctx *c, Scope *s, const Expr *call, const Sig *sig, Value *out, const Expr **where) {
    int np = sig->nparams;
    bool given[8] = {0};
    for (int i = 0; i < np; i++) out[i] = v_none(), where[i] = call;
    int pos = 0;
    bool ok = true;
    for (int i = 0; i < call->nargs; i++) {
        int slot = -1;
        if (call->argnames[i]) {
            for (int j = 0; j < np; j++) {
                size_t l = strcspn(sig->params[j], "?");
                if (strlen(call->argnames[i]) == l && strncmp(call->argnames[i], sig->params[j], l) == 0) slot = j;
            }
            if (slot < 0) {
                const char *cands[8];
                for (int j = 0; j < np; j++) cands[j] = arena_printf(c->a, "%.*s", (int)strcspn(sig->params[j], "?"), sig->params[j]);
                const char *sug = closest(call->argnames[i], cands, np);
                if (sug) {
                    ERR(call->argnlocs[i], "%s has no argument '%s'; did you mean '%s'?", sig->name, call->argnames[i], sug);
                } else {
                    StrBuf sb = {0};
                    for (int j = 0; j < np; j++) sb_printf(&sb, "%s%s", j ? ", " : "", cands[j]);
                    ERR(call->argnlocs[i], "%s has no argument '%s'; its arguments are %s", sig->name, call->argnames[i], sb.s);
                    sb_free(&sb);
                }
                ok = false;
                continue;
            }
        } else {
            if (pos >= np) {
                ERR(call->args[i]->loc, "%s takes at most %d arguments, found %d", sig->name, np, call->nargs);
                return false;
            }
            slot = pos++;
        }
        if (given[slot]) {
            ERR(call->argnames[i] ? call->argnlocs[i] : call->args[i]->loc, "%s: argument '%.*s' given twice", sig->name, (int)strcspn(sig->params[slot], "?"),
                sig->params[slot]);
            ok = false;
            continue;
        }
        given[slot] = true;
        out[slot] = eval(c, s, call->args[i]);
        where[slot] = call->args[i];
        if (out[slot].k == V_ERR) ok = false;
    }
    for (int j = 0; j < np && ok; j++)
        if (!given[j] && !strchr(sig->params[j], '?')) {
            ERR(call->loc, "%s needs argument '%s'", sig->name, sig->params[j]);
            ok = false;
        }
    return ok;
}

/* The layer name for a parametric call in the current statement. */
static const char *layer_name(Ctx *c, const Expr *call, const char *fn) {
    const char *base;
    if (c->stmt_name && c->stmt_param_calls == 0) {
        base = c->stmt_name;
    } else if (c->stmt_name) {
        ERR(call->loc, "statement '%s' creates more than one layer with parameters; give the %s call a statement of its own",
            c->stmt_name, fn);
        return NULL;
    } else {
        base = arena_printf(c->a, "%s_%d", fn, c->auto_names++);
    }
    c->stmt_param_calls++;
    const char *full = c->prefix[0] ? arena_printf(c->a, "%s.%s", c->prefix, base) : arena_strdup(c->a, base);
    const LayerName *first = layerset_add(&c->layers, full, call->loc);
    if (first) {
        ERR(call->loc, "layer name '%s' is used twice; layer names must be unique (their parameters would clash)", full);
        diag_note(c->dl, first->loc, "'%s' is first used here", full);
        return NULL;
    }
    return full;
}

static Value make_param(Ctx *c, const char *layer, const char *suffix, Shape sh, ParamRole role, double std,
                        double val, SrcLoc loc) {
    const char *nm = arena_printf(c->a, "%s.%s", layer, suffix);
    return v_tensor(ir_param(c->g, nm, sh, role, std, val, loc));
}

/* conv / deconv / nin: a weight-normalised layer. */
static Value call_wn_layer(Ctx *c, Scope *s, const Expr *call, int kind /*0 conv 1 deconv 2 nin*/) {
    static const Sig sigs[3] = {
        {"conv", {"x", "filters", "kernel", "shift?", "stride?", "init_scale?"}, 6, false},
        {"deconv", {"x", "filters", "kernel", "shift?", "stride?", "init_scale?"}, 6, false},
        {"nin", {"x", "filters", "init_scale?"}, 3, false},
    };
    const Sig *sig = &sigs[kind];
    Value a[8];
    const Expr *w[8];
    if (!bind_args(c, s, call, sig, a, w)) return v_err();
    if (!want_tensor(c, a[0], w[0], sig->name, "x")) return v_err();
    long F, kh = 1, kw = 1, stride = kind == 1 ? 2 : 1;
    if (!want_int(c, s, a[1], w[1], sig->name, "filters", 1, &F)) return v_err();
    ShiftKind shift = kind == 2 ? SHIFT_NONE : SHIFT_DOWN;
    double init_scale = 1.0;
    if (kind != 2) {
        if (a[2].k != V_LIST || a[2].n != 2 || a[2].items[0].k != V_NUM || a[2].items[1].k != V_NUM) {
            ERR(w[2]->loc, "%s: argument 'kernel' must be a list [height, width], found %s", sig->name, describe(c, a[2]));
            return v_err();
        }
        bool lit = w[2]->kind == E_LIST && w[2]->nargs == 2;
        if (!want_int(c, s, a[2].items[0], lit ? w[2]->args[0] : w[2], sig->name, "kernel height", 1, &kh) ||
            !want_int(c, s, a[2].items[1], lit ? w[2]->args[1] : w[2], sig->name, "kernel width", 1, &kw))
            return v_err();
        if (a[3].k != V_NONE) {
            const char *sh = a[3].k == V_SYM ? a[3].sym : "";
            if (!strcmp(sh, "down")) shift = SHIFT_DOWN;
            else if (!strcmp(sh, "down_right")) shift = SHIFT_DOWN_RIGHT;
            else if (!strcmp(sh, "none")) shift = SHIFT_NONE;
            else {
                ERR(w[3]->loc, "%s: 'shift' must be down, down_right or none, found %s", sig->name, describe(c, a[3]));
                return v_err();
            }
        }
        if (a[4].k != V_NONE && !want_int(c, s, a[4], w[4], sig->name, "stride", 1, &stride)) return v_err();
        if (kind == 1 && stride != 2) {
            ERR(w[4]->loc, "deconv supports stride 2 only, found %ld", stride);
            return v_err();
        }
        if (a[5].k != V_NONE) {
            if (a[5].k != V_NUM || !(a[5].num > 0)) {
                ERR(w[5]->loc, "%s: 'init_scale' must be a positive number, found %s", sig->name, describe(c, a[5]));
                return v_err();
            }
            init_scale = a[5].num;
        }
    } else if (a[2].k != V_NONE) {
        if (a[2].k != V_NUM || !(a[2].num > 0)) {
            ERR(w[2]->loc, "nin: 'init_scale' must be a positive number, found %s", describe(c, a[2]));
            return v_err();
        }
        init_scale = a[2].num;
    }
    if (a[0].k == V_ERR) return v_err();
    const char *name = layer_name(c, call, sig->name);
    if (!name) return v_err();
    int64_t C = node_of(c, a[0])->shape.d[2];
    static const char *kinds[] = {"conv2d", "deconv2d", "nin"};
    int saved = c->g->cur_layer;
    int layer = ir_add_layer(c->g, name, kinds[kind], call->loc);
    Shape vs;
    int axis;
    if (kind == 0) {
        int64_t d[4] = {kh, kw, C, F};
        vs = ir_shape(4, d, false), axis = 3;
    } else if (kind == 1) {
        int64_t d[4] = {kh, kw, F, C};
        vs = ir_shape(4, d, false), axis = 2;
    } else {
        int64_t d[2] = {C, F};
        vs = ir_shape(2, d, false), axis = 1;
    }
    int64_t fd = F;
    Value v = make_param(c, name, "v", vs, PR_WN_V, 0.05, 0, call->loc);
    Value gg = make_param(c, name, "g", ir_shape(1, &fd, false), PR_WN_G, 0, 1, call->loc);
    Value b = make_param(c, name, "b", ir_shape(1, &fd, false), PR_BIAS, 0, 0, call->loc);
    Attrs at;
    memset(&at, 0, sizeof at);
    at.axis = axis;
    Value vg[2] = {v, gg};
    Value wv = add_node(c, IR_WNORM, vg, 2, &at, call->loc);
    memset(&at, 0, sizeof at);
    at.kh = (int)kh, at.kw = (int)kw, at.stride = (int)stride, at.shift = shift;
    at.init_scale = init_scale;
    OpKind op = IR_CONV2D;
    if (kind == 1) {
        op = IR_DECONV2D;
        at.crop_l = shift == SHIFT_DOWN ? (int)(kw - 1) / 2 : shift == SHIFT_DOWN_RIGHT ? 0 : (int)(kw - 1) / 2;
        if (shift == SHIFT_NONE) {
            ERR(w[3]->loc, "deconv needs a causal shift (down or down_right), found none");
            c->g->cur_layer = saved;
            return v_err();
        }
    } else if (shift == SHIFT_DOWN) {
        at.pad_t = (int)kh - 1, at.pad_l = (int)(kw - 1) / 2, at.pad_r = (int)(kw - 1) - at.pad_l;
    } else if (shift == SHIFT_DOWN_RIGHT) {
        at.pad_t = (int)kh - 1, at.pad_l = (int)kw - 1;
    } else {
        at.pad_t = (int)(kh - 1) / 2, at.pad_b = (int)(kh - 1) - at.pad_t;
        at.pad_l = (int)(kw - 1) / 2, at.pad_r = (int)(kw - 1) - at.pad_l;
    }
    Value ins[3] = {a[0], wv, b};
    Value y = add_node(c, op, ins, 3, &at, call->loc);
    if (y.k == V_TENSOR) c->g->layers[layer].result = y.node;
    c->g->cur_layer = saved;
    return y;
}

/* " (s=1, i=4)" for the repeat loops running now, "" outside loops. */
static const char *loop_text(Ctx *c) {
    if (c->nloops == 0) return "";
    StrBuf sb = {0};
    int shown = 0;
    for (int i = 0; i < c->nloops && i < 64; i++)
        if (c->loopvar[i]) sb_printf(&sb, "%s%s=%ld", shown++ ? ", " : " (", c->loopvar[i], c->loopval[i]);
    if (!shown) {
        sb_free(&sb);
        return "";
    }
    sb_putc(&sb, ')');
    const char *r = arena_strdup(c->a, sb.s);
    sb_free(&sb);
    return r;
}

static Stack *find_stack(Ctx *c, const char *name) {
    for (int i = 0; i < c->nstacks; i++)
        if (strcmp(c->stacks[i].name, name) == 0) return &c->stacks[i];
    return NULL;
}

static Stack *stack_arg(Ctx *c, const Expr *call, const char *fn) {
    if (call->nargs < 1 || call->args[0]->kind != E_NAME) {
        ERR(call->loc, "%s: the first argument must name a stack declared under 'stacks'", fn);
        return NULL;
    }
    Stack *st = find_stack(c, call->args[0]->name);
    if (!st) {
        const char **names = xmalloc(sizeof(char *) * (size_t)(c->nstacks + 1));
        for (int i = 0; i < c->nstacks; i++) names[i] = c->stacks[i].name;
        const char *sug = closest(call->args[0]->name, names, c->nstacks);
        free(names);
        if (sug) {
            ERR(call->args[0]->loc, "unknown stack '%s'; did you mean '%s'?", call->args[0]->name, sug);
            return find_stack(c, sug);  /* go on as if it were spelt right: no cascade of pops */
        } else
            ERR(call->args[0]->loc, "unknown stack '%s'; declare it under 'stacks'", call->args[0]->name);
    }
    return st;
}

static Value call_template(Ctx *c, Scope *s, const Expr *call, Template *t);

static Value call_builtin(Ctx *c, Scope *s, const Expr *call) {
    const char *fn = call->name;
    Attrs at;
    memset(&at, 0, sizeof at);
    if (!strcmp(fn, "conv")) return call_wn_layer(c, s, call, 0);
    if (!strcmp(fn, "deconv")) return call_wn_layer(c, s, call, 1);
    if (!strcmp(fn, "nin")) return call_wn_layer(c, s, call, 2);
    if (!strcmp(fn, "push")) {
        Stack *st = stack_arg(c, call, "push");
        if (!st) return v_err();
        if (call->nargs != 2) {
            ERR(call->loc, "push takes a stack and a tensor, found %d arguments", call->nargs);
            return v_err();
        }
        Value v = eval(c, s, call->args[1]);
        if (!want_tensor(c, v, call->args[1], "push", "x")) return v_err();
        v.popped = true;
        v.pushed_at = call->loc;
        v.pushed_when = loop_text(c);
        v.stack = st->name;
        VEC_PUSH(st->items, st->n, st->cap, v);
        return v_none();
    }
    if (!strcmp(fn, "pop")) {
        Stack *st = stack_arg(c, call, "pop");
        if (!st) return v_err();
        if (call->nargs != 1) {
            ERR(call->loc, "pop takes one argument (a stack), found %d", call->nargs);
            return v_err();
        }
        if (st->n == 0) {
            ERR(call->loc, "pop from empty stack '%s'", st->name);
            diag_note(c->dl, st->loc, "stack '%s' is declared here; every pop needs an earlier push", st->name);
            return v_err();
        }
        return st->items[--st->n];
    }
    static const struct {
        const char *name;
        OpKind op;
    } unary[] = {
        {"concat_elu", IR_CONCAT_ELU}, {"elu", IR_ELU}, {"sigmoid", IR_SIGMOID}, {"tanh", IR_TANH},
        {"gate", IR_GATE}, {"down_shift", IR_SHIFT}, {"right_shift", IR_SHIFT}, {"ones", IR_ONES},
        {"class_bias", IR_CLASS_BIAS},
    };
    for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++) {
        if (strcmp(fn, unary[i].name)) continue;
        Sig sig = {fn, {"x"}, 1, false};
        Value a[1];
        const Expr *w[1];
        if (!bind_args(c, s, call, &sig, a, w) || !want_tensor(c, a[0], w[0], fn, "x")) return v_err();
        if (a[0].k == V_ERR) return v_err();
        if (!strcmp(fn, "down_shift")) at.dy = 1;
        if (!strcmp(fn, "right_shift")) at.dx = 1;
        if (unary[i].op == IR_ONES) {
            const Shape *xs = &node_of(c, a[0])->shape;
            at.ref_shape = shape_hwc(xs->d[0], xs->d[1], 1);
            return add_node(c, IR_ONES, NULL, 0, &at, call->loc);
        }
        if (unary[i].op == IR_CLASS_BIAS) {
            if (c->g->classes <= 0) {
                ERR(call->loc, "class_bias needs a class-conditional input (input.classes > 0), but classes is %d",
                    c->g->classes);
                return v_err();
            }
            const char *name = layer_name(c, call, "class_bias");
            if (!name) return v_err();
            int saved = c->g->cur_layer;
            int layer = ir_add_layer(c->g, name, "class_bias", call->loc);
            int64_t d[2] = {c->g->classes, node_of(c, a[0])->shape.d[2]};
            Value hw = make_param(c, name, "hw", ir_shape(2, d, false), PR_CLASS_HW, 0.05, 0, call->loc);
            Value ins[3] = {a[0], hw, v_tensor(c->g->labels)};
            Value y = add_node(c, IR_CLASS_BIAS, ins, 3, &at, call->loc);
            if (y.k == V_TENSOR) c->g->layers[layer].result = y.node;
            c->g->cur_layer = saved;
            return y;
        }
        return add_node(c, unary[i].op, a, 1, &at, call->loc);
    }
    if (!strcmp(fn, "shift") || !strcmp(fn, "slice") || !strcmp(fn, "dropout")) {
        Sig sig_shift = {"shift", {"x", "dy", "dx"}, 3, false};
        Sig sig_slice = {"slice", {"x", "start", "len"}, 3, false};
        Sig sig_drop = {"dropout", {"x", "p"}, 2, false};
        const Sig *sig = !strcmp(fn, "shift") ? &sig_shift : !strcmp(fn, "slice") ? &sig_slice : &sig_drop;
        Value a[3];
        const Expr *w[3];
        if (!bind_args(c, s, call, sig, a, w) || !want_tensor(c, a[0], w[0], fn, "x")) return v_err();
        if (sig == &sig_drop) {
            if (a[1].k != V_NUM || !(a[1].num >= 0 && a[1].num < 1)) {
                ERR(w[1]->loc, "dropout: 'p' must be a number in [0, 1), found %s", describe(c, a[1]));
                return v_err();
            }
            if (a[1].num == 0) return a[0];  /* no dropout: no node */
            at.p = a[1].num;
            at.stream = c->dropout_streams++;
            return add_node(c, IR_DROPOUT, a, 1, &at, call->loc);
        }
        long v1, v2;
        if (sig == &sig_shift) {
            if (a[1].k != V_NUM || a[2].k != V_NUM || a[1].num != floor(a[1].num) || a[2].num != floor(a[2].num) ||
                fabs(a[1].num) > 1e6 || fabs(a[2].num) > 1e6) {
                ERR(call->loc, "shift: 'dy' and 'dx' must be whole numbers");
                return v_err();
            }
            at.dy = (int)a[1].num, at.dx = (int)a[2].num;
            return add_node(c, IR_SHIFT, a, 1, &at, call->loc);
        }
        if (!want_int(c, s, a[1], w[1], fn, "start", 0, &v1) || !want_int(c, s, a[2], w[2], fn, "len", 1, &v2)) return v_err();
        at.start = (int)v1, at.len = (int)v2;
        return add_node(c, IR_SLICE, a, 1, &at, call->loc);
    }
    if (!strcmp(fn, "concat")) {
        if (call->nargs < 1 || call->nargs > IR_MAX_INPUTS) {
            ERR(call->loc, "concat takes 1 to %d tensors, found %d", IR_MAX_INPUTS, call->nargs);
            return v_err();
        }
        Value a[IR_MAX_INPUTS];
        bool ok = true;
        for (int i = 0; i < call->nargs; i++) {
            if (call->argnames[i]) {
                ERR(call->args[i]->loc, "concat takes no named arguments");
                return v_err();
            }
            a[i] = eval(c, s, call->args[i]);
            if (!want_tensor(c, a[i], call->args[i], "concat", "x")) ok = false;
        }
        if (!ok) return v_err();
        return add_node(c, IR_CONCAT, a, call->nargs, &at, call->loc);
    }
    for (int i = 0; i < c->ntmpl; i++)
        if (!strcmp(c->tmpl[i].name, fn)) return call_template(c, s, call, &c->tmpl[i]);
    for (int i = 0; i < c->nbad; i++)
        if (!strcmp(c->bad_tmpl[i], fn)) return v_err();  /* its definition was reported */
    const char *sug = suggest_name(c, s, fn, true);
    if (sug)
        ERR(call->loc, "unknown function or template '%s'; did you mean '%s'?", fn, sug);
    else
        ERR(call->loc, "unknown function or template '%s'", fn);
    return v_err();
}

/* A scalar's statement or expression, parsed at its first use only. */
static void *parse_cached(Ctx *c, const YNode *n, bool stmt) {
    YNode *m = (YNode *)n;  /* the cache is the only field written after loading */
    if (m->parse_state == (stmt ? 1 : 2)) return m->parsed;
    if (m->parse_state == -1) return NULL;
    m->parsed = stmt ? (void *)expr_parse_stmt(n, c->a, c->dl) : (void *)expr_parse(n, c->a, c->dl);
    m->parse_state = m->parsed ? (stmt ? 1 : 2) : -1;
    return m->parsed;
}

/* Evaluate a YAML value used as a default or literal: a scalar is an
 * expression, a sequence a list. */
static Value eval_ynode(Ctx *c, Scope *s, const YNode *n) {
    if (n->kind == Y_SCALAR) {
        Expr *e = parse_cached(c, n, false);
        return e ? eval(c, s, e) : v_err();
    }
    if (n->kind == Y_SEQ) {
        Value v = v_none();
        v.k = V_LIST;
        v.n = n->n;
        v.items = arena_alloc(c->a, sizeof(Value) * (size_t)(n->n ? n->n : 1));
        for (int i = 0; i < n->n; i++)
            if ((v.items[i] = eval_ynode(c, s, n->items[i])).k == V_ERR) return v_err();
        return v;
    }
    ERR(n->loc, "expected a value or a list, found a mapping");
    return v_err();
}

/* "template 'block' takes (x, a = none)", at its args. */
static void template_args_note(Ctx *c, Template *t, const char **argnames, int na) {
    StrBuf sb = {0};
    for (int j = 0; j < na; j++) sb_printf(&sb, "%s%s", j ? ", " : "", argnames[j]);
    diag_note(c->dl, t->args ? t->args->loc : t->loc, "template '%s' takes %s%s%s", t->name, na ? "(" : "no arguments",
              na ? sb.s : "", na ? ")" : "");
    sb_free(&sb);
}

static Value call_template(Ctx *c, Scope *s, const Expr *call, Template *t) {
    for (int i = 0; i < c->depth; i++)
        if (c->callstack[i] == t->name) {
            for (int r = 0; r < c->nrec; r++)
                if (c->recursions[r].line == call->loc.line && c->recursions[r].col == call->loc.col &&
                    c->recursions[r].file == call->loc.file)
                    return v_err();
            VEC_PUSH(c->recursions, c->nrec, c->reccap, call->loc);
            StrBuf via = {0};
            for (int j = i + 1; j < c->depth; j++) sb_printf(&via, "%s'%s'", j > i + 1 ? ", " : " through ", c->callstack[j]);
            ERR(call->loc, "template '%s' calls itself%s; templates cannot recurse", t->name, via.s ? via.s : "");
            sb_free(&via);
            diag_note(c->dl, t->loc, "template '%s' is defined here", t->name);
            return v_err();
        }
    if (c->depth >= MAX_TEMPLATE_DEPTH) {
        ERR(call->loc, "templates nest deeper than %d calls", MAX_TEMPLATE_DEPTH);
        return v_err();
    }
    /* bind arguments */
    Scope local = {0};
    int na = t->args ? t->args->n : 0;
    bool *given = xcalloc((size_t)(na + 1), 1);
    int pos = 0;
    bool ok = true;
    const char **argnames = xcalloc((size_t)(na + 1), sizeof(char *));
    for (int i = 0; i < na; i++) {
        const YNode *an = t->args->items[i];
        argnames[i] = an->kind == Y_SCALAR ? an->str : an->keys[0]->str;
    }
    for (int i = 0; i < call->nargs && ok; i++) {
        int slot = -1;
        if (call->argnames[i]) {
            for (int j = 0; j < na; j++)
                if (!strcmp(argnames[j], call->argnames[i])) slot = j;
            if (slot < 0) {
                const char *sug = closest(call->argnames[i], argnames, na);
                if (sug)
                    ERR(call->argnlocs[i], "template '%s' has no argument '%s'; did you mean '%s'?", t->name,
                        call->argnames[i], sug);
                else
                    ERR(call->argnlocs[i], "template '%s' has no argument '%s'", t->name, call->argnames[i]);
                template_args_note(c, t, argnames, na);
                ok = false;
                break;
            }
        } else {
            if (pos >= na) {
                ERR(call->args[i]->loc, "template '%s' takes at most %d argument%s, found %d", t->name, na,
                    na == 1 ? "" : "s", call->nargs);
                template_args_note(c, t, argnames, na);
                ok = false;
                break;
            }
            slot = pos++;
        }
        if (given[slot]) {
            ERR(call->argnames[i] ? call->argnlocs[i] : call->args[i]->loc, "template '%s': argument '%s' given twice",
                t->name, argnames[slot]);
            ok = false;
            break;
        }
        given[slot] = true;
        Value v = eval(c, s, call->args[i]);
        if (v.k == V_ERR) ok = false;
        scope_set(c, &local, argnames[slot], v, call->args[i]->loc);
    }
    for (int j = 0; j < na && ok; j++) {
        if (given[j]) continue;
        const YNode *an = t->args->items[j];
        if (an->kind == Y_SCALAR) {
            ERR(call->loc, "template '%s' needs argument '%s'", t->name, argnames[j]);
            diag_note(c->dl, an->loc, "'%s' is declared here without a default", argnames[j]);
            ok = false;
            break;
        }
        Value v = eval_ynode(c, &local, an->items[0]);
        if (v.k == V_ERR) ok = false;
        scope_set(c, &local, argnames[j], v, an->loc);
    }
    free(given);
    free(argnames);
    if (!ok) {
        free(local.vars);
        return v_err();
    }
    /* enter the template's naming scope and layer */
    const char *name = layer_name(c, call, t->name);
    if (!name) {
        free(local.vars);
        return v_err();
    }
    char saved_prefix[sizeof c->prefix];
    memcpy(saved_prefix, c->prefix, sizeof c->prefix);
    snprintf(c->prefix, sizeof c->prefix, "%s", name);
    int saved_layer = c->g->cur_layer;
    int layer = ir_add_layer(c->g, name, t->name, call->loc);
    const char *saved_stmt = c->stmt_name;
    int saved_calls = c->stmt_param_calls;
    flush_errors(c);
    c->callsite[c->depth] = call->loc;
    c->callstack[c->depth++] = t->name;
    bool saved_ret = c->returned;
    c->returned = false;
    c->retval = v_none();
    run_body(c, &local, t->body);
    Value r = c->returned ? c->retval : v_none();
    if (!c->returned && !halted(c)) {
        if (!t->no_return_reported) ERR(t->loc, "template '%s' ends without 'return'", t->name);
        t->no_return_reported = true;
        r = v_err();
    }
    flush_errors(c);
    c->returned = saved_ret;
    c->depth--;
    c->stmt_name = saved_stmt;
    c->stmt_param_calls = saved_calls;
    if (r.k == V_TENSOR) c->g->layers[layer].result = r.node;
    c->g->cur_layer = saved_layer;
    memcpy(c->prefix, saved_prefix, sizeof c->prefix);
    free(local.vars);
    return r;
}

static double arith(const char *op, double a, double b, bool *bad) {
    switch (op[0]) {
    case '+': return a + b;
    case '-': return a - b;
    case '*': return a * b;
    case '/': if (b == 0) { *bad = true; return 0; } return a / b;
    case '%': if (b == 0) { *bad = true; return 0; } return fmod(a, b);
    case '<': return op[1] == '=' ? a <= b : a < b;
    case '>': return op[1] == '=' ? a >= b : a > b;
    case '=': return a == b;
    case '!': return a != b;
    }
    *bad = true;
    return 0;
}

static Value eval(Ctx *c, Scope *s, const Expr *e) {
    switch (e->kind) {
    case E_NUM: return v_num(e->num, e->is_int);
    case E_NAME: {
        Var *v = scope_find(s, e->name);
        if (!v) v = scope_find(&c->params, e->name);
        if (v) return v->val;
        if (!strcmp(e->name, "none")) return v_none();
        if (!strcmp(e->name, "true")) return v_num(1, true);
        if (!strcmp(e->name, "false")) return v_num(0, true);
        if (!strcmp(e->name, "down") || !strcmp(e->name, "down_right")) {
            Value r = v_none();
            r.k = V_SYM;
            r.sym = e->name;
            return r;
        }
        if (find_stack(c, e->name)) {
            ERR(e->loc, "stack '%s' can only be used with push and pop", e->name);
            return v_err();
        }
        const char *sug = suggest_name(c, s, e->name, false);
        if (sug)
            ERR(e->loc, "unknown name '%s'; did you mean '%s'?", e->name, sug);
        else
            ERR(e->loc, "unknown name '%s'", e->name);
        return v_err();
    }
    case E_CALL: return call_builtin(c, s, e);
    case E_LIST: {
        Value v = v_none();
        v.k = V_LIST;
        v.n = e->nargs;
        v.items = arena_alloc(c->a, sizeof(Value) * (size_t)(e->nargs ? e->nargs : 1));
        for (int i = 0; i < e->nargs; i++)
            if ((v.items[i] = eval(c, s, e->args[i])).k == V_ERR) return v_err();
        return v;
    }
    case E_NEG: {
        Value v = eval(c, s, e->lhs);
        if (v.k == V_ERR) return v;
        if (v.k != V_NUM) {
            ERR(e->loc, "cannot negate %s", describe(c, v));
            return v_err();
        }
        return v_num(-v.num, v.is_int);
    }
    case E_COND: {
        Value cv = eval(c, s, e->cond);
        if (cv.k == V_ERR) return cv;
        return eval(c, s, truthy(cv) ? e->lhs : e->rhs);
    }
    case E_NOT: {
        Value v = eval(c, s, e->lhs);
        if (v.k == V_ERR) return v;
        return v_num(!truthy(v), true);
    }
    case E_BIN: {
        if (!strcmp(e->op, "an") || !strcmp(e->op, "or")) {
            Value l = eval(c, s, e->lhs);
            if (l.k == V_ERR) return l;
            bool lt = truthy(l);
            if (e->op[0] == 'a' ? !lt : lt) return v_num(lt, true);
            Value r = eval(c, s, e->rhs);
            if (r.k == V_ERR) return r;
            return v_num(truthy(r), true);
        }
        Value l = eval(c, s, e->lhs), r = eval(c, s, e->rhs);
        if (l.k == V_ERR || r.k == V_ERR) return v_err();
        if (l.k == V_TENSOR && r.k == V_TENSOR && !strcmp(e->op, "+")) {
            Value ins[2] = {l, r};
            Shape sa = node_of(c, l)->shape, sb = node_of(c, r)->shape;
            if (!shape_eq(sa, sb)) {
                char b1[64], b2[64];
                bool same_size = sa.rank == 3 && sb.rank == 3 && sa.d[0] == sb.d[0] && sa.d[1] == sb.d[1];
                ERR(e->loc, "cannot add %s and %s: %s", shape_str(sa, b1, sizeof b1), shape_str(sb, b2, sizeof b2),
                    same_size ? arena_printf(c->a, "the channels differ (%lld vs %lld)", (long long)sa.d[2],
                                             (long long)sb.d[2])
                              : "the sizes differ");
                popped_notes(c, ins, 2, true);
                return v_err();
            }
            Attrs at;
            memset(&at, 0, sizeof at);
            return add_node(c, IR_ADD, ins, 2, &at, e->loc);
        }
        if (l.k == V_NUM && r.k == V_NUM) {
            bool bad = false;
            double x = arith(e->op, l.num, r.num, &bad);
            if (bad) {
                ERR(e->loc, "division by zero");
                return v_err();
            }
            bool isint = l.is_int && r.is_int && e->op[0] != '/';
            if (e->op[0] == '/' && l.is_int && r.is_int && fmod(l.num, r.num) == 0) isint = true;
            return v_num(x, isint);
        }
        if ((l.k == V_SYM || r.k == V_SYM) && (!strcmp(e->op, "==") || !strcmp(e->op, "!="))) {
            bool eq = l.k == r.k && l.k == V_SYM && !strcmp(l.sym, r.sym);
            return v_num(e->op[0] == '=' ? eq : !eq, true);
        }
        ERR(e->loc, "operator '%s' cannot combine %s and %s", !strcmp(e->op, "an") ? "and" : e->op, describe(c, l),
            describe(c, r));
        return v_err();
    }
    }
    pxc_bug("unknown expression kind %d", e->kind);
}

/* ---- statements and bodies ---------------------------------------------------- */

/* Expand {var} placeholders in a layer name with numbers from scope. */
static const char *expand_name(Ctx *c, Scope *s, const YNode *key) {
    StrBuf sb = {0};
    const char *p = key->str;
    while (*p) {
        if (*p != '{') {
            sb_putc(&sb, *p++);
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) {
            ERR(key->loc, "unclosed '{' in layer name '%s'", key->str);
            sb_free(&sb);
            return NULL;
        }
        char *var = arena_printf(c->a, "%.*s", (int)(end - p - 1), p + 1);
        Var *v = scope_find(s, var);
        if (!v) v = scope_find(&c->params, var);
        if (!v || v->val.k != V_NUM) {
            ERR(key->loc, "layer name '%s': '{%s}' is not a number in scope", key->str, var);
            sb_free(&sb);
            return NULL;
        }
        sb_printf(&sb, "%g", v->val.num);
        p = end + 1;
    }
    if (!sb.s) sb_putc(&sb, 0);
    for (const char *q = sb.s; *q; q++)
        if (!(isalnum((unsigned char)*q) || *q == '_' || *q == '.' || *q == '-')) {
            ERR(key->loc, "layer name '%s' may hold only letters, digits, '_', '-' and '.'", key->str);
            sb_free(&sb);
            return NULL;
        }
    const char *r = arena_strdup(c->a, sb.s);
    sb_free(&sb);
    return r;
}

static void run_stmt(Ctx *c, Scope *s, const YNode *scalar, const char *name) {
    if (++c->statements > MAX_STATEMENTS) {
        ERR(scalar->loc, "the spec runs more than %d statements; is a repeat count too large?", MAX_STATEMENTS);
        c->stopped = true;
        return;
    }
    Stmt *st = parse_cached(c, scalar, true);
    if (!st) {
        /* bind what the statement would have set, so later uses stay quiet */
        const char *p = scalar->str;
        while (*p == ' ') p++;
        size_t n = 0;
        while (isalnum((unsigned char)p[n]) || p[n] == '_') n++;
        const char *q = p + n;
        while (*q == ' ') q++;
        if (n == 6 && !strncmp(p, "return", 6)) {
            c->returned = true;
            c->retval = v_err();
        } else if (n && q[0] == '=' && q[1] != '=' && !isdigit((unsigned char)p[0])) {
            scope_set(c, s, arena_printf(c->a, "%.*s", (int)n, p), v_err(), scalar->loc);
        }
        return;
    }
    if (st->cond) {
        Value cv = eval(c, s, st->cond);
        if (cv.k == V_ERR) {
            if (st->target) scope_set(c, s, st->target, v_err(), st->loc);
            return;
        }
        if (!truthy(cv)) return;
    }
    c->stmt_name = name;
    c->stmt_param_calls = 0;
    c->stmt_loc = st->loc;
    Value v = eval(c, s, st->value);
    c->stmt_name = NULL;
    if (st->is_return) {
        c->returned = true;
        c->retval = v;
        c->retloc = st->loc;
        return;
    }
    if (st->target) {
        if (find_stack(c, st->target)) {
            ERR(st->loc, "cannot assign to stack '%s'", st->target);
            return;
        }
        if (scope_find(&c->params, st->target) && !scope_find(s, st->target)) {
            ERR(st->loc, "'%s' is a parameter of the spec; assign to another name", st->target);
            return;
        }
        if (!valid_ident(st->target)) return;
        scope_set(c, s, st->target, v, st->loc);
    } else if (name && v.k != V_ERR && v.k != V_NONE) {
        ERR(st->loc, "the value of statement '%s' is not used; assign it (name = ...) or return it", name);
    }
}

static Value run_body(Ctx *c, Scope *s, const YNode *body) {
    if (!body) return v_none();
    if (!want_kind(c, body, Y_SEQ, "a body")) return v_err();
    /* after each item, follow up its errors (flush_errors) */
    for (int i = 0; i < body->n && !c->returned && !halted(c); flush_errors(c), i++) {
        const YNode *item = body->items[i];
        if (item->kind == Y_SCALAR) {
            run_stmt(c, s, item, NULL);
            continue;
        }
        if (item->kind == Y_SEQ) {
            ERR(item->loc, "a body item must be a statement, a named statement, 'repeat' or 'if'; found a sequence");
            continue;
        }
        const YNode *rep = ymap_get(item, "repeat"), *iff = ymap_get(item, "if");
        if (rep) {
            static const char *const keys[] = {"repeat", "as", "body"};
            check_keys(c, item, "a repeat block", keys, 3);
            const YNode *as = ymap_get(item, "as"), *rb = ymap_get(item, "body");
            if (!rb) {
                ERR(item->loc, "a repeat block needs a 'body'");
                continue;
            }
            Value n = eval_ynode(c, s, rep);
            if (n.k == V_ERR) continue;
            if (n.k != V_NUM || n.num != floor(n.num) || n.num < 0 || n.num > MAX_REPEAT) {
                ERR(rep->loc, "'repeat' must be a whole number from 0 to %d, found %s", MAX_REPEAT, describe(c, n));
                continue;
            }
            const char *var = NULL;
            if (as) {
                if (as->kind != Y_SCALAR || !valid_ident(as->str)) {
                    ERR(as->loc, "'as' must name a loop variable");
                    continue;
                }
                var = as->str;
            }
            int slot = c->nloops++;
            for (long k = 0; k < (long)n.num && !c->returned && !halted(c); k++) {
                if (var) scope_set(c, s, var, v_num((double)k, true), as->loc);
                if (slot < 64) c->loopvar[slot] = var, c->loopval[slot] = k;
                run_body(c, s, rb);
            }
            c->nloops--;
            continue;
        }
        if (iff) {
            static const char *const keys[] = {"if", "body", "else"};
            check_keys(c, item, "an if block", keys, 3);
            Value cv = eval_ynode(c, s, iff);
            if (cv.k == V_ERR) continue;
            const YNode *b = truthy(cv) ? ymap_get(item, "body") : ymap_get(item, "else");
            if (!ymap_get(item, "body")) ERR(item->loc, "an if block needs a 'body'");
            else run_body(c, s, b);
            continue;
        }
        if (item->n != 1) {
            ERR(item->loc, "a named statement is one 'name: statement' pair; found %d keys (a repeat or if block "
                           "starts with 'repeat:' or 'if:')", item->n);
            continue;
        }
        const YNode *stmt = item->items[0];
        if (stmt->kind != Y_SCALAR) {
            ERR(stmt->loc, "statement '%s' must be a string like \"y = conv(x, 64, [2,3])\", found a %s",
                item->keys[0]->str, ynode_kind_name(stmt->kind));
            continue;
        }
        const char *name = expand_name(c, s, item->keys[0]);
        if (name) run_stmt(c, s, stmt, name);
    }
    return v_none();
}

/* ---- top level ------------------------------------------------------------------ */

#define MAX_EXTENDS 8

/* `extends: base.yaml` — the base spec (path relative to this one) is loaded
 * first; this spec's params, input, head and templates are merged into the
 * base's key by key, and its other keys (name, stacks, network) replace the
 * base's. Chains are followed up to MAX_EXTENDS deep; a cycle is an error. */
static YNode *resolve_extends(Ctx *c, YNode *root, const char *file, int depth, const char **chain) {
    const YNode *ext = ymap_get(root, "extends");
    if (!ext) return root;
    if (ext->kind != Y_SCALAR) {
        ERR(ext->loc, "'extends' must be the path of another spec, found a %s", ynode_kind_name(ext->kind));
        return NULL;
    }
    if (depth >= MAX_EXTENDS) {
        ERR(ext->loc, "'extends' chains deeper than %d specs", MAX_EXTENDS);
        return NULL;
    }
    const char *slash = strrchr(file, '/');
    const char *path = ext->str[0] == '/' || !slash
                           ? arena_strdup(c->a, ext->str)
                           : arena_printf(c->a, "%.*s/%s", (int)(slash - file), file, ext->str);
    for (int i = 0; i <= depth; i++)
        if (!strcmp(chain[i], path)) {
            ERR(ext->loc, "'extends' forms a cycle: '%s' extends itself", path);
            return NULL;
        }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ERR(ext->loc, "cannot open the base spec '%s': %s", path, strerror(errno));
        return NULL;
    }
    StrBuf sb = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0 && sb.len < (16u << 20))
        for (size_t i = 0; i < n; i++) sb_putc(&sb, buf[i]);
    fclose(f);
    diag_add_source(c->dl, path, sb.s ? sb.s : "", sb.len);
    const char *bfile = arena_strdup(&c->g->arena, path);
    YNode *base = yaml_load(bfile, sb.s ? sb.s : "", sb.len, c->a, c->dl);
    sb_free(&sb);
    if (!base) return NULL;
    chain[depth + 1] = path;
    base = resolve_extends(c, base, bfile, depth + 1, chain);
    if (!base) return NULL;
    /* merge root into base */
    for (int i = 0; i < root->n; i++) {
        const char *k = root->keys[i]->str;
        if (!strcmp(k, "extends")) continue;
        YNode *bv = ymap_get(base, k);
        YNode *rv = root->items[i];
        bool merge = !strcmp(k, "params") || !strcmp(k, "input") || !strcmp(k, "head") || !strcmp(k, "templates");
        if (bv && merge && bv->kind == Y_MAP && rv->kind == Y_MAP) {
            for (int j = 0; j < rv->n; j++) {
                int slot = -1;
                for (int q = 0; q < bv->n; q++)
                    if (!strcmp(bv->keys[q]->str, rv->keys[j]->str)) slot = q;
                if (slot >= 0) {
                    bv->items[slot] = rv->items[j];
                } else {
                    YNode **keys = arena_alloc(c->a, sizeof(YNode *) * (size_t)(bv->n + 1));
                    YNode **items = arena_alloc(c->a, sizeof(YNode *) * (size_t)(bv->n + 1));
                    memcpy(keys, bv->keys, sizeof(YNode *) * (size_t)bv->n);
                    memcpy(items, bv->items, sizeof(YNode *) * (size_t)bv->n);
                    keys[bv->n] = rv->keys[j];
                    items[bv->n] = rv->items[j];
                    bv->keys = keys, bv->items = items, bv->n++, bv->cap = bv->n;
                }
            }
        } else if (bv) {
            for (int q = 0; q < base->n; q++)
                if (!strcmp(base->keys[q]->str, k)) base->items[q] = rv, base->keys[q] = root->keys[i];
        } else {
            YNode **keys = arena_alloc(c->a, sizeof(YNode *) * (size_t)(base->n + 1));
            YNode **items = arena_alloc(c->a, sizeof(YNode *) * (size_t)(base->n + 1));
            memcpy(keys, base->keys, sizeof(YNode *) * (size_t)base->n);
            memcpy(items, base->items, sizeof(YNode *) * (size_t)base->n);
            keys[base->n] = root->keys[i];
            items[base->n] = rv;
            base->keys = keys, base->items = items, base->n++, base->cap = base->n;
        }
    }
    return base;
}

/* The last --set of key (or its alias): a later --set wins, and the earlier
 * ones count as used. */
static Override *find_override(Ctx *c, const char *key, const char *alt) {
    Override *found = NULL;
    for (int i = 0; i < c->novr; i++)
        if (!strcmp(c->ovr[i].key, key) || (alt && !strcmp(c->ovr[i].key, alt))) {
            if (found) found->used = true;
            found = &c->ovr[i];
        }
    return found;
}

/* A parameter's value text: an expression over the earlier parameters; a
 * bare word that names nothing is a symbol value (e.g. a mode). */
static Value param_value(Ctx *c, const YNode *n) {
    Expr *e = expr_parse(n, c->a, c->dl);
    if (!e) return v_err();
    if (e->kind == E_NAME && !scope_find(&c->params, e->name) && strcmp(e->name, "none") && strcmp(e->name, "true") &&
        strcmp(e->name, "false")) {
        Value v = v_none();
        v.k = V_SYM;
        v.sym = arena_strdup(c->a, e->name);
        return v;
    }
    Scope empty = {0};
    return eval(c, &empty, e);
}

/* Evaluate an override's value text (as a parameter's value when `param`,
 * else as an expression); its errors name the --set. */
static Value eval_override(Ctx *c, Override *o, bool param) {
    o->used = true;
    YNode n;
    memset(&n, 0, sizeof n);
    n.kind = Y_SCALAR;
    n.str = (char *)o->value;
    n.len = strlen(o->value);
    n.multiline = true;
    DiagList tmp, *saved = c->dl;
    diag_init(&tmp);
    c->dl = &tmp;
    Value v;
    if (param) {
        v = param_value(c, &n);
    } else {
        Expr *e = expr_parse(&n, c->a, c->dl);
        Scope empty = {0};
        v = e ? eval(c, &empty, e) : v_err();
    }
    c->dl = saved;
    for (int i = 0; i < tmp.n; i++) {
        const Diag *d = &tmp.items[i];
        if (d->level == DIAG_ERROR) ERR(srcloc_none(), "--set '%s=%s': %s", o->key, o->value, d->msg);
        else if (d->loc.line > 0) diag_add(c->dl, d->level, d->loc, "%s", d->msg);
    }
    diag_free(&tmp);
    return v;
}

/* The text naming an overridden input field in messages. */
static const char *set_what(Ctx *c, Override *o, const char *what) {
    return o ? arena_printf(c->a, "--set '%s=%s': %s", o->key, o->value, what) : what;
}

static bool positive_int(Ctx *c, Value v, SrcLoc loc, const char *what, long lo, long hi, int *out) {
    if (v.k == V_ERR) return false;
    if (v.k != V_NUM || v.num != floor(v.num)) {
        ERR(loc, "%s must be a whole number, found %s", what, describe(c, v));
        return false;
    }
    if (v.num < lo || v.num > hi) {
        if (lo == 1 && v.num < 1)
            ERR(loc, "%s must be positive, found %g", what, v.num);
        else
            ERR(loc, "%s must be between %ld and %ld, found %g", what, lo, hi, v.num);
        return false;
    }
    *out = (int)v.num;
    return true;
}

static void load_params(Ctx *c, const YNode *params) {
    if (!params) return;
    if (!want_kind(c, params, Y_MAP, "'params'")) return;
    for (int i = 0; i < params->n; i++) {
        const YNode *k = params->keys[i];
        if (!valid_ident(k->str)) {
            ERR(k->loc, "parameter name '%s' must be an identifier (letters, digits, '_')", k->str);
            continue;
        }
        static const char *const reserved[] = {"x", "labels", "none", "true", "false", "down", "down_right",
                                               "height", "width", "channels", "classes", "head_channels"};
        bool res = false;
        for (size_t r = 0; r < sizeof reserved / sizeof reserved[0]; r++)
            if (!strcmp(k->str, reserved[r])) res = true;
        if (res) {
            ERR(k->loc, "'%s' is a reserved name and cannot be a parameter", k->str);
            continue;
        }
        Override *o = find_override(c, k->str, arena_printf(c->a, "params.%s", k->str));
        const YNode *yv = params->items[i];
        Value v;
        if (o) {
            v = eval_override(c, o, true);
            /* an override keeps the kind of the spec's own value */
            if (v.k != V_ERR && yv->kind == Y_SCALAR) {
                DiagList tmp, *saved = c->dl;
                diag_init(&tmp);
                c->dl = &tmp;
                Value sv = param_value(c, yv);
                c->dl = saved;
                diag_free(&tmp);
                if ((sv.k == V_NUM || sv.k == V_SYM) && v.k != sv.k) {
                    ERR(srcloc_none(), "--set '%s=%s': '%s' must be %s like its value in the spec (%s), found %s",
                        o->key, o->value, k->str, sv.k == V_NUM ? "a number" : "a name",
                        sv.k == V_NUM ? arena_printf(c->a, "%g", sv.num) : sv.sym, describe(c, v));
                    diag_note(c->dl, yv->loc, "'%s' is defined here", k->str);
                    v = v_err();
                }
            }
        } else if (yv->kind == Y_SCALAR) {
            v = param_value(c, yv);
        } else {
            ERR(yv->loc, "parameter '%s' must be a number or a name, found a %s", k->str, ynode_kind_name(yv->kind));
            v = v_err();
        }
        if (v.k == V_TENSOR || v.k == V_LIST) {
            if (o)
                ERR(srcloc_none(), "--set '%s=%s': parameter '%s' must be a number or a name, found %s", o->key,
                    o->value, k->str, describe(c, v));
            else
                ERR(yv->loc, "parameter '%s' must be a number or a name, found %s", k->str, describe(c, v));
            v = v_err();
        }
        scope_set(c, &c->params, k->str, v, o ? srcloc_none() : yv->loc);
    }
}

static void load_input(Ctx *c, const YNode *root) {
    const YNode *in = ymap_get(root, "input");
    SrcLoc top = {c->file, 1, 1};
    if (!in) {
        ERR(top, "the spec has no 'input' (height, width, channels)");
        return;
    }
    if (!want_kind(c, in, Y_MAP, "'input'")) return;
    static const char *const keys[] = {"height", "width", "channels", "classes"};
    check_keys(c, in, "'input'", keys, 4);
    int vals[4] = {0, 0, 0, 0};
    SrcLoc locs[4] = {in->loc, in->loc, in->loc, in->loc};
    for (int i = 0; i < 4; i++) {
        const YNode *n = ymap_get(in, keys[i]);
        Override *o = find_override(c, keys[i], arena_printf(c->a, "input.%s", keys[i]));
        Value v;
        SrcLoc loc = o ? srcloc_none() : n ? n->loc : in->loc;
        if (o) {
            v = eval_override(c, o, false);
        } else if (n) {
            Scope empty = {0};
            if (n->kind != Y_SCALAR || n->quoted) {
                ERR(n->loc, "input %s must be a number, found %s", keys[i],
                    n->kind == Y_SCALAR ? arena_printf(c->a, "the string \"%s\"", clip(c, n->str))
                                        : arena_printf(c->a, "a %s", ynode_kind_name(n->kind)));
                continue;
            }
            Expr *e = expr_parse(n, c->a, c->dl);
            v = e ? eval(c, &empty, e) : v_err();
        } else if (i == 3) {
            v = v_num(0, true);
        } else {
            if (!misspelt(in, keys[i], keys, 4)) ERR(in->loc, "'input' needs '%s'", keys[i]);
            continue;
        }
        const char *what = set_what(c, o, arena_printf(c->a, "input %s", keys[i]));
        if (i == 2) {
            if (positive_int(c, v, loc, what, 1, 4, &vals[i]) && vals[i] != 1 && vals[i] != 3)
                ERR(loc, "%s must be 1 (grayscale) or 3 (RGB), found %d", what, vals[i]);
        } else if (i == 3) {
            positive_int(c, v, loc, what, 0, 100000, &vals[i]);
        } else {
            positive_int(c, v, loc, what, 1, 4096, &vals[i]);
        }
        locs[i] = loc;
    }
    c->g->H = vals[0], c->g->W = vals[1], c->g->C = vals[2], c->g->classes = vals[3];
    for (int i = 0; i < 4; i++) scope_set(c, &c->params, keys[i], v_num(vals[i], true), locs[i]);
}

static void load_head(Ctx *c, const YNode *root) {
    const YNode *h = ymap_get(root, "head");
    SrcLoc top = {c->file, 1, 1};
    c->head = SPEC_HEAD_LOGISTIC_MIXTURE;
    c->nr_mix = 0;
    /* until the head is known: uses of head_channels stay quiet */
    scope_set(c, &c->params, "head_channels", v_err(), top);
    if (!h) {
        ERR(top, "the spec has no 'head' (e.g. {type: logistic_mixture, mixtures: 10})");
        return;
    }
    if (!want_kind(c, h, Y_MAP, "'head'")) return;
    static const char *const keys[] = {"type", "mixtures"};
    check_keys(c, h, "'head'", keys, 2);
    const YNode *t = ymap_get(h, "type");
    Override *o = find_override(c, "head", "head.type");
    const char *type = o ? (o->used = true, o->value) : t && t->kind == Y_SCALAR ? t->str : NULL;
    SrcLoc tl = o ? srcloc_none() : t ? t->loc : h->loc;
    static const char *const types[] = {"logistic_mixture", "softmax256"};
    if (!type) {
        if (t) ERR(t->loc, "the head 'type' must be logistic_mixture or softmax256, found a %s", ynode_kind_name(t->kind));
        else if (!misspelt(h, "type", keys, 2)) ERR(h->loc, "'head' needs a 'type': logistic_mixture or softmax256");
        return;
    }
    if (!strcmp(type, types[0])) c->head = SPEC_HEAD_LOGISTIC_MIXTURE;
    else if (!strcmp(type, types[1])) c->head = SPEC_HEAD_SOFTMAX256;
    else {
        const char *sug = closest(type, types, 2);
        ERR(tl, "%sunknown head type '%s'; %s%s%s", o ? arena_printf(c->a, "--set '%s=%s': ", o->key, o->value) : "",
            clip(c, type), sug ? "did you mean '" : "expected logistic_mixture or softmax256", sug ? sug : "", sug ? "'?" : "");
        return;
    }
    const YNode *m = ymap_get(h, "mixtures");
    Override *om = find_override(c, "head.mixtures", NULL);
    int channels = c->g->C;
    if (c->head == SPEC_HEAD_LOGISTIC_MIXTURE) {
        Value v;
        SrcLoc ml = om ? srcloc_none() : m ? m->loc : h->loc;
        if (om) {
            v = eval_override(c, om, false);
        } else if (m && m->kind == Y_SCALAR && !m->quoted) {
            Expr *e = expr_parse(m, c->a, c->dl);
            Scope empty = {0};
            v = e ? eval(c, &empty, e) : v_err();
        } else if (m) {
            ERR(m->loc, "head mixtures must be a number, found %s",
                m->kind == Y_SCALAR ? arena_printf(c->a, "the string \"%s\"", clip(c, m->str))
                                    : arena_printf(c->a, "a %s", ynode_kind_name(m->kind)));
            return;
        } else {
            if (!misspelt(h, "mixtures", keys, 2))
                ERR(h->loc, "a logistic_mixture head needs 'mixtures' (the number of components)");
            return;
        }
        if (!positive_int(c, v, ml, set_what(c, om, "head mixtures"), 1, 1000, &c->nr_mix)) return;
        scope_set(c, &c->params, "head_channels", v_num(channels == 1 ? 3 * c->nr_mix : 10 * c->nr_mix, true), h->loc);
    } else {
        /* 'mixtures' is read by the logistic mixture only (a spec that
         * extends one may keep it). */
        scope_set(c, &c->params, "head_channels", v_num(256.0 * channels, true), h->loc);
    }
}

static void load_templates(Ctx *c, const YNode *root) {
    const YNode *ts = ymap_get(root, "templates");
    if (!ts || !want_kind(c, ts, Y_MAP, "'templates'")) return;
    for (int i = 0; i < ts->n; i++) {
        const YNode *k = ts->keys[i], *t = ts->items[i];
        if (!valid_ident(k->str)) {
            ERR(k->loc, "template name '%s' must be an identifier", k->str);
            continue;
        }
        bool clash = false;
        for (int b = 0; b < NBUILTINS; b++)
            if (!strcmp(builtin_names[b], k->str)) clash = true;
        if (clash) {
            ERR(k->loc, "template '%s' has the name of a built-in function", k->str);
            continue;
        }
        if (!want_kind(c, t, Y_MAP, arena_printf(c->a, "template '%s'", k->str))) {
            VEC_PUSH(c->bad_tmpl, c->nbad, c->badcap, k->str);
            continue;
        }
        static const char *const keys[] = {"args", "body"};
        check_keys(c, t, arena_printf(c->a, "template '%s'", k->str), keys, 2);
        const YNode *args = ymap_get(t, "args"), *body = ymap_get(t, "body");
        bool ok = true;
        if (!body) {
            if (!misspelt(t, "body", keys, 2)) ERR(k->loc, "template '%s' needs a 'body'", k->str);
            ok = false;
        }
        if (args && !want_kind(c, args, Y_SEQ, "template 'args'")) ok = false;
        for (int j = 0; ok && args && j < args->n; j++) {
            const YNode *an = args->items[j];
            const char *nm = an->kind == Y_SCALAR ? an->str : an->kind == Y_MAP && an->n == 1 ? an->keys[0]->str : NULL;
            if (!nm || !valid_ident(nm)) {
                ERR(an->loc, "a template argument is a name, or {name: default}");
                ok = false;
                continue;
            }
            for (int q = 0; q < j; q++) {
                const YNode *bn = args->items[q];
                const char *pn = bn->kind == Y_SCALAR ? bn->str : bn->kind == Y_MAP && bn->n == 1 ? bn->keys[0]->str : "";
                if (!strcmp(pn, nm)) {
                    ERR(an->loc, "template '%s' declares argument '%s' twice", k->str, nm);
                    ok = false;
                }
            }
        }
        if (!ok) {
            VEC_PUSH(c->bad_tmpl, c->nbad, c->badcap, k->str);
            continue;
        }
        Template tm = {k->str, k->loc, args, body, false};
        VEC_PUSH(c->tmpl, c->ntmpl, c->tcap, tm);
    }
}

static void load_stacks(Ctx *c, const YNode *root) {
    const YNode *st = ymap_get(root, "stacks");
    if (!st || !want_kind(c, st, Y_SEQ, "'stacks'")) return;
    for (int i = 0; i < st->n; i++) {
        const YNode *n = st->items[i];
        if (n->kind != Y_SCALAR || !valid_ident(n->str)) {
            ERR(n->loc, "a stack name must be an identifier");
            continue;
        }
        if (find_stack(c, n->str)) {
            ERR(n->loc, "stack '%s' is declared twice", n->str);
            continue;
        }
        Stack s = {n->str, n->loc, NULL, 0, 0};
        VEC_PUSH(c->stacks, c->nstacks, c->scap, s);
    }
}

static void build_head(Ctx *c, Value l, SrcLoc loc) {
    Graph *g = c->g;
    g->out = l.node;
    Value ins[2] = {l, v_tensor(g->x)};
    Attrs at;
    memset(&at, 0, sizeof at);
    at.nr_mix = c->nr_mix;
    int saved = g->cur_layer;
    ir_add_layer(g, "head", c->head == SPEC_HEAD_SOFTMAX256 ? "softmax256" : "logistic_mixture", loc);
    Value nll = add_node(c, c->head == SPEC_HEAD_SOFTMAX256 ? IR_SOFTMAX_NLL : IR_DMOL_NLL, ins, 2, &at, loc);
    if (nll.k != V_TENSOR) return;
    g->nll = nll.node;
    Value loss = add_node(c, IR_SUM, &nll, 1, &at, loc);
    if (loss.k == V_TENSOR) g->loss = loss.node;
    g->layers[g->nlayers - 1].result = g->nll;
    g->cur_layer = saved;
}

static void resolved_text(Ctx *c, SpecInfo *info) {
    StrBuf sb = {0};
    for (int i = 0; i < c->params.n; i++) {
        Value v = c->params.vars[i].val;
        if (v.k == V_NUM) sb_printf(&sb, "%s=%.17g\n", c->params.vars[i].name, v.num);
        else if (v.k == V_SYM) sb_printf(&sb, "%s=%s\n", c->params.vars[i].name, v.sym);
    }
    sb_printf(&sb, "head=%s\n", c->head == SPEC_HEAD_SOFTMAX256 ? "softmax256" : "logistic_mixture");
    info->resolved = sb.s ? sb.s : xstrdup("");
}

int spec_compile_ex(const char *name, const char *text, size_t len, const char *const *sets, int nsets, Graph *out,
                    SpecInfo *info, DiagList *dl) {
    Arena arena = {0};
    diag_add_source(dl, name, text, len);
    int errors0 = dl->nerrors;
    ir_graph_init(out);
    /* SrcLocs name their file by a string the graph owns, so they stay valid
     * as long as the graph (kernel programs and emitted code print them) */
    const char *file = arena_strdup(&out->arena, name);
    Ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    Ctx *c = &ctx;
    c->g = out;
    c->dl = dl;
    c->a = &arena;
    c->file = file;
    c->first_n = c->mark_n = dl->n;
    /* overrides */
    c->ovr = xcalloc((size_t)(nsets + 1), sizeof *c->ovr);
    SrcLoc cmd = srcloc_none();
    for (int i = 0; i < nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        if (!eq || eq == sets[i] || !eq[1]) {
            ERR(cmd, "--set '%s': expected key=value", sets[i]);
            continue;
        }
        c->ovr[c->novr].key = arena_printf(c->a, "%.*s", (int)(eq - sets[i]), sets[i]);
        c->ovr[c->novr].value = arena_strdup(c->a, eq + 1);
        c->novr++;
    }
    YNode *root = yaml_load(file, text, len, &arena, dl);
    const char *chain[MAX_EXTENDS + 2] = {file};
    if (root) {
        static const char *const keys[] = {"pxc", "extends", "name", "params", "input", "head", "stacks",
                                           "templates", "network"};
        check_keys(c, root, "the spec", keys, 9);
        root = resolve_extends(c, root, file, 0, chain);
    }
    if (root) {
        const YNode *ver = ymap_get(root, "pxc");
        if (!ver)
            ERR(root->loc, "the spec must start with 'pxc: 1' (the spec format version)");
        else if (ver->kind != Y_SCALAR || strcmp(ver->str, "1") != 0)
            ERR(ver->loc, "unsupported spec format version '%s'; this pxc reads version 1",
                ver->kind == Y_SCALAR ? clip(c, ver->str) : ynode_kind_name(ver->kind));
        const YNode *name_node = ymap_get(root, "name");
        if (name_node && (name_node->kind != Y_SCALAR || name_node->len == 0))
            ERR(name_node->loc, "'name' must be the model's name, found %s",
                name_node->kind == Y_SCALAR ? "nothing" : arena_printf(c->a, "a %s", ynode_kind_name(name_node->kind)));
        load_params(c, ymap_get(root, "params"));
        load_input(c, root);
        load_head(c, root);
        load_stacks(c, root);
        load_templates(c, root);
        /* overrides that named nothing */
        for (int i = 0; i < c->novr; i++) {
            if (c->ovr[i].used) continue;
            const char **cands = xmalloc(sizeof(char *) * (size_t)(c->params.n + 3));
            int n = 0;
            for (int j = 0; j < c->params.n; j++)
                if (strcmp(c->params.vars[j].name, "head_channels")) cands[n++] = c->params.vars[j].name;
            cands[n++] = "head";
            cands[n++] = "head.mixtures";
            const char *sug = closest(c->ovr[i].key, cands, n);
            free(cands);
            if (sug)
                ERR(cmd, "--set '%s=%s': the spec has no parameter '%s'; did you mean '%s'?", c->ovr[i].key,
                    c->ovr[i].value, c->ovr[i].key, sug);
            else
                ERR(cmd, "--set '%s=%s': the spec has no parameter '%s'", c->ovr[i].key, c->ovr[i].value, c->ovr[i].key);
        }
        static const char *const top_keys[] = {"pxc", "extends", "name", "params", "input", "head", "stacks",
                                               "templates", "network"};
        const YNode *net = NULL, *netkey = NULL;
        for (int i = 0; i < root->n; i++)
            if (!strcmp(root->keys[i]->str, "network")) net = root->items[i], netkey = root->keys[i];
        if (!net && !misspelt(root, "network", top_keys, 9))
            ERR(root->loc, "the spec has no 'network' (the list of statements that computes the output)");
        /* the network runs whenever the input is known, so its mistakes are
         * reported together with those above */
        Graph *g = c->g;
        if (net && g->H > 0 && g->W > 0 && (g->C == 1 || g->C == 3)) {
            Attrs at;
            memset(&at, 0, sizeof at);
            g->x = ir_add(g, dl, IR_INPUT, NULL, 0, &at, net->loc);
            if (g->classes > 0) g->labels = ir_add(g, dl, IR_LABELS, NULL, 0, &at, net->loc);
            Scope top = {0};
            scope_set(c, &top, "x", v_tensor(g->x), net->loc);
            run_body(c, &top, net);
            free(top.vars);
            if (!halted(c) && !c->returned) {
                ERR(netkey->loc, "the network ends without 'return' of its output");
                if (net->kind == Y_SEQ && net->n > 0)
                    diag_note(dl, net->items[net->n - 1]->loc, "its last statement is here; end the network with "
                              "'- return' and the output, e.g. '- return l'");
            } else if (!halted(c) && c->retval.k != V_TENSOR && c->retval.k != V_ERR) {
                ERR(c->retloc, "the network returns %s, not a tensor", describe(c, c->retval));
            } else if (c->retval.k == V_TENSOR && dl->nerrors == errors0) {
                build_head(c, c->retval, net->loc);
            }
            for (int i = 0; i < c->nstacks && dl->nerrors == errors0; i++) {
                Stack *st = &c->stacks[i];
                if (st->n == 0) continue;
                ERR(st->items[st->n - 1].pushed_at, "stack '%s' still holds %d tensor%s at the end of the network; "
                    "every push needs a pop (the last one left was pushed here%s)", st->name, st->n,
                    st->n == 1 ? "" : "s", st->items[st->n - 1].pushed_when);
                diag_note(dl, st->loc, "stack '%s' is declared here", st->name);
            }
        }
        if (info) {
            memset(info, 0, sizeof *info);
            const YNode *nm = ymap_get(root, "name");
            info->name = xstrdup(nm && nm->kind == Y_SCALAR ? nm->str : name);
            info->head = c->head;
            info->nr_mix = c->nr_mix;
            resolved_text(c, info);
            uint64_t h = hash_bytes(HASH_INIT, text, len);
            for (int i = 0; i < nsets; i++) h = hash_bytes(h, sets[i], strlen(sets[i]) + 1);
            info->hash = h;
        }
    }
    out->nfwd = out->n;
    for (int i = 0; i < c->nstacks; i++) free(c->stacks[i].items);
    free(c->stacks);
    free(c->tmpl);
    free(c->params.vars);
    free(c->ovr);
    free(c->recursions);
    free(c->bad_tmpl);
    free(c->layers.slots);
    arena_free(&arena);
    if (dl->nerrors != errors0) return 1;
    if (!ir_verify(out, dl)) return 1;
    return 0;
}

int spec_compile_text(const char *name, const char *text, size_t len, const char *const *sets, int nsets, Graph *out,
                      DiagList *dl) {
    return spec_compile_ex(name, text, len, sets, nsets, out, NULL, dl);
}

int spec_compile(const char *path, const char *const *sets, int nsets, Graph *out, DiagList *dl) {
    FILE *f = fopen(path, "rb");
    SrcLoc loc = {path, 0, 0};
    if (!f) {
        diag_error(dl, loc, "cannot open the spec: %s", strerror(errno));
        ir_graph_init(out);
        return 1;
    }
    StrBuf sb = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (sb.len + n > (64u << 20)) {
            diag_error(dl, loc, "the spec is larger than 64 MiB");
            fclose(f);
            sb_free(&sb);
            ir_graph_init(out);
            return 1;
        }
        for (size_t i = 0; i < n; i++) sb_putc(&sb, buf[i]);
    }
    fclose(f);
    int r = spec_compile_text(path, sb.s ? sb.s : "", sb.len, sets, nsets, out, dl);
    sb_free(&sb);
    return r;
}

void spec_info_free(SpecInfo *info) {
    free(info->name);
    free(info->resolved);
    memset(info, 0, sizeof *info);
}
