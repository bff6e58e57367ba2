/*
 * plan.c — memory planning: one arena, offsets from buffer lifetimes
 * (passes.h).
 *
 * Two sequences of steps are planned apart: forward followed by backward
 * (a training step; forward values that backward reads stay live until
 * their last backward use), and init. A buffer lives from the first to the
 * last step (inclusive) that passes it; two buffers may share bytes only if
 * their lifetimes are disjoint — never within one step, so no kernel sees
 * an input aliasing an output. Placement is greedy by size (largest first,
 * lowest offset that fits beside every placed buffer it overlaps in time),
 * done separately for the constant-sized buffers and, in bytes per image,
 * for the per-image ones. The arena is then
 *     [constant region, max over both sequences][per-image region x n].
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 64

static int64_t align_up(int64_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

typedef struct Item {
    int buf;
    int64_t size;   /* bytes (constant) or bytes per image */
    int first, last;
    int64_t off;
} Item;

static int by_size_desc(const void *a, const void *b) {
    const Item *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    if (x->first != y->first) return x->first - y->first;
    return x->buf - y->buf;
}

static int by_off(const void *a, const void *b) {
    const Item *x = *(const Item *const *)a, *y = *(const Item *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Greedy placement; returns the peak. */
static int64_t place(Item *it, int n, bool reuse) {
    qsort(it, (size_t)n, sizeof *it, by_size_desc);
    int64_t peak = 0;
    Item **live = xmalloc((size_t)(n ? n : 1) * sizeof *live);
    for (int i = 0; i < n; i++) {
        int64_t off = 0;
        if (!reuse) {
            off = peak;
        } else {
            /* the lowest offset clear of every placed buffer live at the same
             * time: sweep those in order of offset, stepping past each one
             * the candidate range overlaps */
            int nl = 0;
            for (int k = 0; k < i; k++)
                if (!(it[k].last < it[i].first || it[i].last < it[k].first)) live[nl++] = &it[k];
            qsort(live, (size_t)nl, sizeof *live, by_off);
            for (int k = 0; k < nl && live[k]->off < off + it[i].size; k++)
                if (live[k]->off + live[k]->size > off) off = live[k]->off + live[k]->size;
        }
        it[i].off = off;
        if (off + it[i].size > peak) peak = off + it[i].size;
    }
    free(live);
    return peak;
}

typedef struct Seq {
    int *first, *last;   /* per buffer, -1 if unused */
} Seq;

static void seq_uses(const KirProgram *p, const KirEntryKind *entries, int ne, int *first, int *last) {
    int t = 0;
    for (int b = 0; b < p->nbufs; b++) first[b] = last[b] = -1;
    for (int e = 0; e < ne; e++) {
        const KirEntry *en = &p->entry[entries[e]];
        for (int s = 0; s < en->nsteps; s++, t++)
            for (int a = 0; a < en->steps[s].nargs; a++) {
                int b = en->steps[s].args[a];
                if (first[b] < 0) first[b] = t;
                last[b] = t;
            }
    }
}

void plan_arena(KirProgram *p, bool reuse) {
    int nb = p->nbufs;
    int *f1 = xmalloc((size_t)(nb ? nb : 1) * sizeof(int)), *l1 = xmalloc((size_t)(nb ? nb : 1) * sizeof(int));
    int *f2 = xmalloc((size_t)(nb ? nb : 1) * sizeof(int)), *l2 = xmalloc((size_t)(nb ? nb : 1) * sizeof(int));
    KirEntryKind train[2] = {KE_FORWARD, KE_BACKWARD}, init[1] = {KE_INIT};
    seq_uses(p, train, 2, f1, l1);
    seq_uses(p, init, 1, f2, l2);
    /* The seed and the fallbacks live through the whole training step. */
    int total1 = p->entry[KE_FORWARD].nsteps + p->entry[KE_BACKWARD].nsteps;
    int pinned[3] = {p->seed_buf, p->out_fallback, p->nll_fallback};
    for (int k = 0; k < 3; k++)
        if (pinned[k] >= 0) f1[pinned[k]] = 0, l1[pinned[k]] = total1 > 0 ? total1 - 1 : 0;

    for (int b = 0; b < nb; b++)
        if (p->bufs[b].base == KB_ARENA && f1[b] >= 0 && f2[b] >= 0)
            pxc_bug("arena buffer b%d (%s) is used by both the training step and init", b, p->bufs[b].name);

    Item *items = xmalloc((size_t)(nb ? nb : 1) * sizeof *items);
    int64_t peak_c[2] = {0, 0}, peak_n[2] = {0, 0};
    p->naive0 = p->naive_n = 0;
    for (int b = 0; b < nb; b++) {
        KirBuf *bf = &p->bufs[b];
        if (bf->base != KB_ARENA) continue;
        PXC_ASSERT(bf->size0 == 0 || bf->size_n == 0);
        p->naive0 += align_up(bf->size0);
        p->naive_n += align_up(bf->size_n);
    }
    /* per sequence, per region */
    for (int sq = 0; sq < 2; sq++) {
        int *fs = sq == 0 ? f1 : f2, *ls = sq == 0 ? l1 : l2;
        for (int region = 0; region < 2; region++) {
            int ni = 0;
            for (int b = 0; b < nb; b++) {
                KirBuf *bf = &p->bufs[b];
                if (bf->base != KB_ARENA || fs[b] < 0) continue;
                int64_t sz = region == 0 ? bf->size0 : bf->size_n;
                if (sz == 0 || (region == 0) != (bf->size_n == 0)) continue;
                Item itm = {b, align_up(sz), fs[b], ls[b], 0};
                items[ni++] = itm;
            }
            int64_t peak = place(items, ni, reuse);
            for (int i = 0; i < ni; i++) {
                KirBuf *bf = &p->bufs[items[i].buf];
                if (region == 0) bf->off0 = items[i].off, bf->off_n = 0;
                else bf->off0 = 0, bf->off_n = items[i].off;   /* rebased below */
            }
            if (region == 0) peak_c[sq] = peak;
            else peak_n[sq] = peak;
        }
    }
    int64_t c = align_up(peak_c[0] > peak_c[1] ? peak_c[0] : peak_c[1]);
    for (int b = 0; b < nb; b++) {
        KirBuf *bf = &p->bufs[b];
        if (bf->base == KB_ARENA && bf->size_n != 0) bf->off0 = c;
    }
    /* Unused buffers (no step passes them) get offset 0; nothing touches them. */
    p->arena0 = c;
    p->arena_n = peak_n[0] > peak_n[1] ? peak_n[0] : peak_n[1];
    if (p->arena0 == 0 && p->arena_n == 0) p->arena0 = ALIGN;
    free(items);
    free(f1), free(l1), free(f2), free(l2);
}
