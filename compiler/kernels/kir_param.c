/*
 * kir_param.c — kir_parameterise (kir.h, "Integer arguments"): kernels whose
 * text is equal up to integer constants become one function, the constants
 * that differ between them integer arguments every call passes.
 *
 * A network repeats the same layer at several sizes and positions, so most
 * of its kernels differ only in spatial sizes, channel offsets, strides and
 * dropout stream numbers; compiling each one costs the JIT about as much as
 * a new kernel. The key of a kernel is its printed body with every
 * hoistable I64 constant printed as `#` (kir_print_body_holes). Kernels with
 * equal keys have the same expression trees, so walking each in one fixed
 * order (walk_* below) pairs their constants position by position: a
 * position where all kernels of the set agree keeps its literal, the others
 * become arguments (positions with equal values in every kernel share one).
 *
 * Constants that steer code generation are never holes, so kernels that
 * differ in them stay apart:
 *   - both bounds of a loop without loops inside (the vectorised loop: its
 *     trip count decides the vector remainder and whether it vectorises);
 *   - inside a statement, with V the variable of the loop that directly
 *     holds it: the divisor of a division or modulo whose dividend varies
 *     with V (a constant divisor is a multiply; an argument would be a
 *     hardware division per element), and a constant factor of a product
 *     whose other factor varies with V (V's stride: 1 or not decides
 *     contiguous vector loads).
 * Index arithmetic that varies only in outer loops is loop-invariant in the
 * vectorised loop and costs nothing as an argument. A direct convolution
 * (KS_CONV) keeps all its sizes and zero borders (printed, so part of the
 * key): its printers tile registers and skip taps by them.
 */
#include "kir.h"

#include <stdlib.h>
#include <string.h>

/* ---- a set of expression pointers ---------------------------------------------- */

typedef struct PtrSet {
    const void **slot;
    size_t cap, n;
} PtrSet;

static size_t ptr_hash(const void *p) { return (size_t)(((uintptr_t)p >> 3) * 0x9E3779B97F4A7C15ULL); }

static bool pset_has(const PtrSet *s, const void *p) {
    if (!s->cap) return false;
    for (size_t h = ptr_hash(p) & (s->cap - 1);; h = (h + 1) & (s->cap - 1)) {
        if (!s->slot[h]) return false;
        if (s->slot[h] == p) return true;
    }
}

static void pset_add(PtrSet *s, const void *p) {
    if (pset_has(s, p)) return;
    if (2 * (s->n + 1) > s->cap) {
        PtrSet g = {xcalloc(s->cap ? 2 * s->cap : 64, sizeof *g.slot), s->cap ? 2 * s->cap : 64, 0};
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) pset_add(&g, s->slot[i]);
        free(s->slot);
        *s = g;
    }
    size_t h = ptr_hash(p) & (s->cap - 1);
    while (s->slot[h]) h = (h + 1) & (s->cap - 1);
    s->slot[h] = p;
    s->n++;
}

/* ---- which constants stay literal ---------------------------------------------- */

static bool uses_var(const KirExpr *e, int var) {
    if (!e) return false;
    if (e->k == KX_VAR) return e->i == var;
    for (int i = 0; i < 3; i++)
        if (uses_var(e->x[i], var)) return true;
    return false;
}

static void protect_all(PtrSet *keep, const KirExpr *e) {
    if (!e) return;
    if (e->k == KX_CONST) pset_add(keep, e);
    for (int i = 0; i < 3; i++) protect_all(keep, e->x[i]);
}

/* Constants of e that steer the loop over `var` (-1: not in a loop). */
static void protect_expr(PtrSet *keep, const KirExpr *e, int var) {
    if (!e || var < 0) return;
    if ((e->k == KX_DIV || e->k == KX_MOD) && e->t == KT_I64 && uses_var(e->x[0], var)) protect_all(keep, e->x[1]);
    if (e->k == KX_MUL && e->t == KT_I64) {
        if (e->x[0]->k == KX_CONST && uses_var(e->x[1], var)) pset_add(keep, e->x[0]);
        if (e->x[1]->k == KX_CONST && uses_var(e->x[0], var)) pset_add(keep, e->x[1]);
    }
    for (int i = 0; i < 3; i++) protect_expr(keep, e->x[i], var);
}

static void protect_stmts(PtrSet *keep, KirStmt *const *body, int n, int var) {
    for (int i = 0; i < n; i++) {
        const KirStmt *s = body[i];
        switch (s->k) {
        case KS_LOOP: {
            bool inner = true;
            for (int k = 0; k < s->nbody; k++) inner &= s->body[k]->k != KS_LOOP;
            if (inner) {
                protect_all(keep, s->lo);
                protect_all(keep, s->hi);
            }
            protect_expr(keep, s->lo, var);
            protect_expr(keep, s->hi, var);
            protect_stmts(keep, s->body, s->nbody, s->var);
            break;
        }
        case KS_STORE:
        case KS_ACCUM:
        case KS_SET:
            protect_expr(keep, s->index, var);
            protect_expr(keep, s->value, var);
            break;
        case KS_GEMM: break;   /* sizes and offsets: arguments of cblas_sgemm at run time anyway */
        case KS_CONV: protect_all(keep, s->conv.images); break;   /* its printers tile by the sizes */
        }
    }
}

typedef struct HoleCtx {
    const PtrSet *keep;
} HoleCtx;

static bool is_hole(void *ctx, const KirExpr *e) {
    const HoleCtx *h = ctx;
    return e->k == KX_CONST && e->t == KT_I64 && !pset_has(h->keep, e);
}

/* ---- walking a function in one fixed order ---------------------------------------- */

/* COLLECT: the value of every hole, in walk order. REWRITE: a copy of the
 * function's body with the holes replaced (hash-consed: equal subtrees
 * share one node, differing ones do not). */
typedef struct Walk {
    KirProgram *p;
    const KirFunc *fn;
    const PtrSet *keep;
    bool rewrite;
    int64_t *vals;            /* COLLECT: out */
    int nvals, cvals;
    const int *slot_arg;      /* REWRITE: per hole, its argument or -1: literal slot_val */
    const int64_t *slot_val;
    int pos, nslots;
    KirExpr **table;          /* REWRITE: hash-consing of the copy */
    size_t tcap, tn;
    bool failed;              /* a statement kind this walk does not know */
} Walk;

static uint64_t node_hash(const KirExpr *e) {
    uint64_t v[7] = {(uint64_t)e->k, (uint64_t)e->t, (uint64_t)e->i, 0, (uint64_t)(uintptr_t)e->x[0],
                     (uint64_t)(uintptr_t)e->x[1], (uint64_t)(uintptr_t)e->x[2]};
    memcpy(&v[3], &e->f, sizeof e->f);
    return hash_bytes(HASH_INIT, v, sizeof v);
}

static bool node_eq(const KirExpr *a, const KirExpr *b) {
    return a->k == b->k && a->t == b->t && a->i == b->i && memcmp(&a->f, &b->f, sizeof a->f) == 0 &&
           a->x[0] == b->x[0] && a->x[1] == b->x[1] && a->x[2] == b->x[2];
}

static KirExpr *intern(Walk *w, const KirExpr *proto) {
    if (2 * (w->tn + 1) > w->tcap) {
        size_t oc = w->tcap, nc = oc ? 2 * oc : 256;
        KirExpr **old = w->table;
        w->table = xcalloc(nc, sizeof *w->table);
        w->tcap = nc;
        for (size_t i = 0; i < oc; i++)
            if (old[i]) {
                size_t h = node_hash(old[i]) & (nc - 1);
                while (w->table[h]) h = (h + 1) & (nc - 1);
                w->table[h] = old[i];
            }
        free(old);
    }
    size_t h = node_hash(proto) & (w->tcap - 1);
    for (; w->table[h]; h = (h + 1) & (w->tcap - 1))
        if (node_eq(w->table[h], proto)) return w->table[h];
    KirExpr *e = arena_alloc(&w->p->arena, sizeof *e);
    *e = *proto;
    w->table[h] = e;
    w->tn++;
    return e;
}

static KirExpr *walk_expr(Walk *w, KirExpr *e) {
    if (!e) return NULL;
    if (e->k == KX_CONST && e->t == KT_I64 && !pset_has(w->keep, e)) {
        if (!w->rewrite) {
            VEC_PUSH(w->vals, w->nvals, w->cvals, e->i);
            return e;
        }
        if (w->pos >= w->nslots) {
            w->failed = true;
            return e;
        }
        int s = w->pos++;
        KirExpr proto = {.k = KX_CONST, .t = KT_I64, .i = w->slot_val[s]};
        if (w->slot_arg[s] >= 0) proto = (KirExpr){.k = KX_ARG, .t = KT_I64, .i = w->slot_arg[s]};
        return intern(w, &proto);
    }
    KirExpr proto = *e;
    for (int i = 0; i < 3; i++) proto.x[i] = walk_expr(w, e->x[i]);
    return w->rewrite ? intern(w, &proto) : e;
}

static KirStmt **walk_stmts(Walk *w, KirStmt *const *body, int n);

static KirStmt *walk_stmt(Walk *w, const KirStmt *s) {
    KirStmt c = *s;
    switch (s->k) {
    case KS_LOOP:
        c.lo = walk_expr(w, s->lo);
        c.hi = walk_expr(w, s->hi);
        c.body = walk_stmts(w, s->body, s->nbody);
        c.cbody = s->nbody;
        break;
    case KS_STORE:
    case KS_ACCUM:
    case KS_SET:
        c.index = walk_expr(w, s->index);
        c.value = walk_expr(w, s->value);
        break;
    case KS_GEMM:
        c.gemm.m = walk_expr(w, s->gemm.m);
        c.gemm.n = walk_expr(w, s->gemm.n);
        c.gemm.k = walk_expr(w, s->gemm.k);
        c.gemm.a_off = walk_expr(w, s->gemm.a_off);
        c.gemm.b_off = walk_expr(w, s->gemm.b_off);
        c.gemm.c_off = walk_expr(w, s->gemm.c_off);
        break;
    case KS_CONV: c.conv.images = walk_expr(w, s->conv.images); break;
    default: w->failed = true; break;
    }
    if (!w->rewrite) return NULL;
    KirStmt *ns = arena_alloc(&w->p->arena, sizeof *ns);
    *ns = c;
    return ns;
}

static KirStmt **walk_stmts(Walk *w, KirStmt *const *body, int n) {
    KirStmt **out = w->rewrite ? arena_alloc(&w->p->arena, (size_t)(n ? n : 1) * sizeof *out) : NULL;
    for (int i = 0; i < n; i++) {
        KirStmt *c = walk_stmt(w, body[i]);
        if (out) out[i] = c;
    }
    return out;
}

/* ---- the pass ---------------------------------------------------------------------- */

typedef struct Kernel {
    char *key;          /* body text with holes */
    size_t keylen;
    uint64_t hash;
    int64_t *vals;      /* hole values in walk order */
    int nvals;
    int group;          /* the first kernel with the same key (itself when first) */
    int slot;           /* its position within its group */
    bool exact;         /* not mergeable: keep it as it is */
} Kernel;

static void describe(KirProgram *p, KirFunc *f, const KirFunc *first, int nmembers) {
    const char *c = first->comment ? first->comment : "";
    char args[32];
    if (f->nints > 1) snprintf(args, sizeof args, "a0..a%d", f->nints - 1);
    else snprintf(args, sizeof args, "a0");
    f->comment = arena_printf(&p->arena, "%s%s(and %d more kernel%s equal up to the integer constants %s, which each call passes)",
                              c, *c ? "\n" : "", nmembers - 1, nmembers - 1 == 1 ? "" : "s", args);
}

void kir_parameterise(KirProgram *p) {
    int nf = p->nfuncs;
    if (!p->nfuncs_exact) p->nfuncs_exact = nf;
    if (nf < 2) return;
    Kernel *ks = xcalloc((size_t)nf, sizeof *ks);
    PtrSet *keep = xcalloc((size_t)nf, sizeof *keep);
    for (int f = 0; f < nf; f++) {
        const KirFunc *fn = &p->funcs[f];
        Kernel *k = &ks[f];
        k->group = f;
        if (fn->nints > 0) {   /* already parameterised */
            k->exact = true;
            continue;
        }
        protect_stmts(&keep[f], fn->body, fn->nbody, -1);
        HoleCtx hc = {&keep[f]};
        FILE *mf = open_memstream(&k->key, &k->keylen);
        if (!mf) pxc_bug("open_memstream failed");
        int printed = kir_print_body_holes(fn, is_hole, &hc, mf);
        fclose(mf);
        Walk w = {.p = p, .fn = fn, .keep = &keep[f]};
        walk_stmts(&w, fn->body, fn->nbody);
        k->vals = w.vals;
        k->nvals = w.nvals;
        /* the printer and the walk must see the same constants (a statement
         * kind only one of them knows: keep the kernel as it is) */
        k->exact = w.failed || printed != w.nvals || printed == 0;
        k->hash = hash_bytes(HASH_INIT, k->key, k->keylen);
    }
    /* group equal keys (in order: the first kernel of a group represents it) */
    int *size = xcalloc((size_t)nf, sizeof *size);
    for (int f = 0; f < nf; f++) {
        Kernel *k = &ks[f];
        if (!k->exact)
            for (int g = 0; g < f; g++) {
                const Kernel *o = &ks[g];
                if (o->exact || o->group != g || o->hash != k->hash || o->keylen != k->keylen ||
                    memcmp(o->key, k->key, k->keylen) != 0 || o->nvals != k->nvals)
                    continue;
                k->group = g;
                break;
            }
        k->slot = size[k->group]++;
    }

    /* the new function list: one per group, in the order of their first kernels */
    KirFunc *nfuncs = arena_alloc(&p->arena, (size_t)nf * sizeof *nfuncs);
    int *newid = xmalloc((size_t)nf * sizeof *newid);
    int64_t **ints_of = xcalloc((size_t)nf, sizeof *ints_of);   /* per merged kernel: what its steps pass */
    int nn = 0;
    for (int g = 0; g < nf; g++) {
        if (ks[g].group != g) continue;
        KirFunc f = p->funcs[g];
        int m = size[g], H = ks[g].nvals;
        if (m > 1) {
            /* the members, in order */
            int *mem = xmalloc((size_t)m * sizeof *mem);
            for (int i = g, c = 0; i < nf; i++)
                if (ks[i].group == g) mem[c++] = i;
            int *arg = xmalloc((size_t)(H ? H : 1) * sizeof *arg);
            int64_t *val = xmalloc((size_t)(H ? H : 1) * sizeof *val);
            int *first_slot = xmalloc((size_t)(H ? H : 1) * sizeof *first_slot);   /* slot defining argument a */
            int nargs = 0;
            for (int s = 0; s < H; s++) {
                val[s] = ks[g].vals[s];
                arg[s] = -1;
                bool same = true;
                for (int i = 1; i < m && same; i++) same = ks[mem[i]].vals[s] == val[s];
                if (same) continue;
                for (int a = 0; a < nargs && arg[s] < 0; a++) {
                    bool eq = true;
                    for (int i = 0; i < m && eq; i++) eq = ks[mem[i]].vals[first_slot[a]] == ks[mem[i]].vals[s];
                    if (eq) arg[s] = a;
                }
                if (arg[s] < 0) first_slot[nargs] = s, arg[s] = nargs++;
            }
            Walk w = {.p = p, .fn = &p->funcs[g], .keep = &keep[g], .rewrite = true, .slot_arg = arg,
                      .slot_val = val, .nslots = H};
            KirStmt **body = walk_stmts(&w, f.body, f.nbody);
            free(w.table);
            if (w.failed || w.pos != H) pxc_bug("kir_parameterise: %s: the rewrite saw %d of %d constants", f.name, w.pos, H);
            f.body = body;
            f.cbody = f.nbody;
            f.nints = nargs;
            /* the values each member passes */
            for (int i = 0; i < m; i++) {
                int64_t *iv = arena_alloc(&p->arena, (size_t)(nargs ? nargs : 1) * sizeof *iv);
                for (int a = 0; a < nargs; a++) iv[a] = ks[mem[i]].vals[first_slot[a]];
                ints_of[mem[i]] = iv;
            }
            if (nargs > 0) describe(p, &f, &p->funcs[g], m);
            free(mem);
            free(arg);
            free(val);
            free(first_slot);
        }
        const char *stem = strchr(f.name, '_');
        f.name = arena_printf(&p->arena, "k%d_%s", nn, stem ? stem + 1 : f.name);
        f.ncalls = 0;
        FILE *mf = NULL;
        char *text = NULL;
        size_t len = 0;
        mf = open_memstream(&text, &len);
        if (!mf) pxc_bug("open_memstream failed");
        kir_print_body_holes(&f, NULL, NULL, mf);
        fclose(mf);
        f.hash = hash_bytes(HASH_INIT, text, len);
        free(text);
        nfuncs[nn] = f;
        for (int i = g; i < nf; i++)
            if (ks[i].group == g) newid[i] = nn;
        nn++;
    }
    /* retarget the steps */
    for (int e = 0; e < KE_COUNT; e++) {
        KirEntry *en = &p->entry[e];
        for (int s = 0; s < en->nsteps; s++) {
            KirStep *st = &en->steps[s];
            int old = st->func;
            st->func = newid[old];
            if (size[ks[old].group] > 1) st->ints = ints_of[old];
            nfuncs[st->func].ncalls++;
        }
    }
    p->funcs = nfuncs;
    p->nfuncs = nn;
    p->cfuncs = nf;
    for (int f = 0; f < nf; f++) {
        free(ks[f].key);
        free(ks[f].vals);
        free(keep[f].slot);
    }
    free(ks);
    free(keep);
    free(size);
    free(newid);
    free(ints_of);
}
