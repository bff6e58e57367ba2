/*
 * check_causal.c — the causality prover and the receptive fields.
 *
 * What it computes. For every value v of the forward graph and every spatial
 * position (i,j) of v, dep(v,i,j): the set of input pixels (positions of
 * g->x, all channels merged) that v[i,j,:] depends on, as an H*W-bit set in
 * uint64 words. Values without pixels (parameters, labels, the loss) carry
 * one set for the whole tensor. The sets are exact for every forward op, by
 * the op's index map (ops.def):
 *
 *   input          dep(x,i,j) = {(i,j)}
 *   param, labels, ones        {}  (no pixel dependency; class_bias's table
 *                  and labels, conv weights and biases are such values)
 *   conv2d         y[i,j] <- xpad[S*i+a, S*j+d], a < kh, d < kw; xpad row r
 *                  is x row r - pad_t, column c is x column c - pad_l, zero
 *                  outside x (pad_r, pad_b only widen the zero border)
 *   deconv2d       y[r,q] <- x[i,j] for every 2i+a = r, 2j+d = q + crop_l,
 *                  a < kh, d < kw (stride 2, output 2h x 2w)
 *   shift          y[i,j] <- x[i-dy, j-dx], zero outside
 *   concat, slice, add, elu, concat_elu, sigmoid, tanh, gate, dropout,
 *   class_bias, dmol_nll, softmax_nll:  position-wise (union of the inputs
 *                  at the same position; dropout's mask is a hash of the
 *                  step, never of pixels)
 *   sum, wnorm, and a value with pixels read by a value without: the union
 *                  over every position of every input
 * Backward ops do not belong to the forward graph; if one appears there it
 * is treated conservatively (every output position depends on everything its
 * inputs depend on) — sound, though no longer exact.
 *
 * What it proves. With g->out of size h x w (normally H x W), position
 * (i,j) maps to input pixel P(i,j) = (i*H/h, j*W/w); the graph is causal iff
 * no dep(out,i,j) holds a pixel at or after P(i,j) in raster order (index
 * r*W + c). The witness of a failure is the first such output position p in
 * raster order and the first such input pixel q.
 *
 * Which layer is blamed. A value is *leaky* if some position of it (mapped
 * by P) depends on an input pixel at or after that position — except that a
 * value whose every position depends at most on its own pixel P(i,j) (x
 * itself, concat(x, ones), elu(x), ...) is not leaky unless it is g->out:
 * those are what a correctly shifted first layer consumes. Given the witness
 * (p, q), the prover builds one concrete dependency path from (g->out, p)
 * back to (g->x, q) in which every step really carries q (value m at position
 * s reads value m' at position s', and dep(m', s') holds q); at each step it
 * prefers a leaky input, then the lower input index, then the op's own tap
 * order. Along that path x = m_0, ..., m_k = g->out, the offending node is
 * the earliest m_t such that m_t, ..., m_k are all leaky (g->out is leaky
 * whenever the proof fails, so one exists). Hence the blamed layer (a) lies
 * on a real path that takes q to output pixel p, (b) is itself leaky, (c) is
 * reached from a non-leaky value (or the image itself) on that path, so the
 * leak starts there, and (d) is never repaired afterwards on that path. The
 * error points at that node's SrcLoc (its layer's when the node has none) and
 * names its layer: g->layers[node->layer].name, else the node's name, else
 * the op's name. A note gives the witness path, one entry per top-level
 * layer, and for a layer inside a template call one more note per enclosing
 * layer points at the call.
 *
 * Cost. Positions x words: the paper's model at 32x32 has sets of 16 words
 * and a few thousand taps per conv; a value's sets are freed after the last
 * node that reads them. The witness path is found by a second, one-bit pass
 * (does (m, s) depend on q?) that runs only when the proof fails.
 *
 * Receptive fields (CheckReport): for each value, at its centre-most position
 * (h/2, w/2): how many input pixels it depends on and their bounding box.
 */
#include "check.h"

#include <stdlib.h>
#include <string.h>

/* How output positions of a node read one of its inputs. */
typedef enum GatherKind {
    GK_GLOBAL,  /* the input has no pixels: its one set reaches every position */
    GK_POINT,   /* same position */
    GK_CONV,    /* conv2d taps */
    GK_DECONV,  /* deconv2d taps */
    GK_SHIFT,   /* shifted position */
    GK_ALL,     /* every position reads the union over the whole input */
} GatherKind;

static bool has_pixels(const Node *n) { return n->shape.batched && n->shape.rank == 3; }
static int val_h(const Node *n) { return has_pixels(n) ? (int)n->shape.d[0] : 1; }
static int val_w(const Node *n) { return has_pixels(n) ? (int)n->shape.d[1] : 1; }
static int npos(const Node *n) { return val_h(n) * val_w(n); }

static GatherKind gather_kind(const Graph *g, const Node *n, int k) {
    const Node *in = &g->nodes[n->in[k]];
    if (!has_pixels(in)) return GK_GLOBAL;
    if (!has_pixels(n)) return GK_ALL;
    bool same = in->shape.d[0] == n->shape.d[0] && in->shape.d[1] == n->shape.d[1];
    switch (n->op) {
    case IR_CONV2D: return k == 0 ? GK_CONV : GK_ALL;
    case IR_DECONV2D: return k == 0 ? GK_DECONV : GK_ALL;
    case IR_SHIFT: return same ? GK_SHIFT : GK_ALL;
    case IR_CONCAT:
    case IR_SLICE:
    case IR_ADD:
    case IR_ELU:
    case IR_CONCAT_ELU:
    case IR_SIGMOID:
    case IR_TANH:
    case IR_GATE:
    case IR_DROPOUT:
    case IR_CLASS_BIAS:
    case IR_DMOL_NLL:
    case IR_SOFTMAX_NLL: return same ? GK_POINT : GK_ALL;
    /* leaves have no inputs; the rest mix everything (see the header) */
    case IR_INPUT:
    case IR_LABELS:
    case IR_PARAM:
    case IR_ONES:
    case IR_WNORM:
    case IR_SUM:
    case IR_BROADCAST:
    case IR_CONV2D_DX:
    case IR_CONV2D_DW:
    case IR_DECONV2D_DX:
    case IR_DECONV2D_DW:
    case IR_BIAS_GRAD:
    case IR_WNORM_DV:
    case IR_WNORM_DG:
    case IR_SLICE_BWD:
    case IR_ELU_BWD:
    case IR_CONCAT_ELU_BWD:
    case IR_SIGMOID_BWD:
    case IR_TANH_BWD:
    case IR_GATE_BWD:
    case IR_CLASS_BIAS_DHW:
    case IR_DMOL_NLL_BWD:
    case IR_DMOL_NLL_DX:
    case IR_SOFTMAX_NLL_BWD:
    case IR_OP_COUNT: break;
    }
    return GK_ALL;
}

/* The input positions that output (oi,oj) of n reads from input k, for the
 * structured kinds; writes at most kh*kw (or 1) entries to buf. */
static int gather_list(const Graph *g, const Node *n, int k, GatherKind kind, int oi, int oj, int *buf) {
    const Node *in = &g->nodes[n->in[k]];
    int hin = val_h(in), win = val_w(in), cnt = 0;
    const Attrs *a = &n->a;
    switch (kind) {
    case GK_POINT: buf[cnt++] = oi * win + oj; break;
    case GK_SHIFT: {
        int r = oi - a->dy, c = oj - a->dx;
        if (r >= 0 && r < hin && c >= 0 && c < win) buf[cnt++] = r * win + c;
        break;
    }
    case GK_CONV:
        for (int t = 0; t < a->kh; t++) {
            int r = a->stride * oi + t - a->pad_t;
            if (r < 0 || r >= hin) continue;
            for (int d = 0; d < a->kw; d++) {
                int c = a->stride * oj + d - a->pad_l;
                if (c >= 0 && c < win) buf[cnt++] = r * win + c;
            }
        }
        break;
    case GK_DECONV:
        for (int t = 0; t < a->kh; t++) {
            int r2 = oi - t;
            if (r2 < 0 || r2 % 2 || r2 / 2 >= hin) continue;
            for (int d = 0; d < a->kw; d++) {
                int c2 = oj + a->crop_l - d;
                if (c2 < 0 || c2 % 2 || c2 / 2 >= win) continue;
                buf[cnt++] = (r2 / 2) * win + c2 / 2;
            }
        }
        break;
    case GK_GLOBAL:
    case GK_ALL: pxc_bug("gather_list on a non-structured input");
    }
    return cnt;
}

typedef struct Prover {
    const Graph *g;
    int nend;           /* nodes [0, nend) */
    int H, W;           /* the input image */
    int nw;             /* uint64 words per set (at least 1) */
    uint64_t **bits;    /* [nend][npos * nw], NULL once freed */
    int *last_use;      /* [nend]: last reader in [0, nend), -1 if none */
    bool *leaky;        /* [nend] */
    int *taps;          /* scratch [maxtaps] */
    uint64_t *tmp;      /* scratch [nw] */
} Prover;

static void or_words(uint64_t *restrict dst, const uint64_t *restrict src, int nw) {
    for (int w = 0; w < nw; w++) dst[w] |= src[w];
}

/* The input pixel (raster index) that position (i,j) of an h x w value
 * stands for. */
static int mapped(const Prover *P, int h, int w, int i, int j) {
    return (int)((int64_t)i * P->H / h) * P->W + (int)((int64_t)j * P->W / w);
}

/* The first pixel index >= from in set s, or -1. */
static int first_at_or_after(const uint64_t *s, int nw, int from) {
    int w0 = from >> 6;
    if (w0 >= nw) return -1;
    uint64_t m = s[w0] & (~0ULL << (from & 63));
    for (int w = w0;;) {
        if (m) return w * 64 + __builtin_ctzll(m);
        if (++w >= nw) return -1;
        m = s[w];
    }
}

static bool subset_of_pixel(const uint64_t *s, int nw, int pix) {
    for (int w = 0; w < nw; w++) {
        uint64_t own = (pix >> 6) == w ? 1ULL << (pix & 63) : 0;
        if (s[w] & ~own) return false;
    }
    return true;
}

static CheckField field_of(const Prover *P, const Node *n, const uint64_t *s) {
    CheckField f;
    memset(&f, 0, sizeof f);
    f.top = f.left = -1;
    f.at_i = f.at_j = -1;
    int pos = 0;
    if (has_pixels(n)) {
        f.at_i = val_h(n) / 2;
        f.at_j = val_w(n) / 2;
        pos = f.at_i * val_w(n) + f.at_j;
    }
    const uint64_t *set = s + (size_t)pos * P->nw;
    int r0 = P->H, r1 = -1, c0 = P->W, c1 = -1;
    for (int w = 0; w < P->nw; w++)
        for (uint64_t m = set[w]; m; m &= m - 1) {
            int b = w * 64 + __builtin_ctzll(m), r = b / P->W, c = b % P->W;
            f.deps_count++;
            if (r < r0) r0 = r;
            if (r > r1) r1 = r;
            if (c < c0) c0 = c;
            if (c > c1) c1 = c;
        }
    if (f.deps_count) {
        f.rows = r1 - r0 + 1;
        f.cols = c1 - c0 + 1;
        f.top = r0;
        f.left = c0;
    }
    return f;
}

/* Compute node i's sets from its inputs'. */
static uint64_t *propagate(Prover *P, int i) {
    const Graph *g = P->g;
    const Node *n = &g->nodes[i];
    int np = npos(n), h = val_h(n), w = val_w(n), nw = P->nw;
    uint64_t *o = xcalloc((size_t)np * nw, sizeof *o);
    if (i == P->g->x && has_pixels(n) && h == P->H && w == P->W)
        for (int p = 0; p < np; p++) o[(size_t)p * nw + (p >> 6)] |= 1ULL << (p & 63);
    for (int k = 0; k < n->nin; k++) {
        const Node *in = &g->nodes[n->in[k]];
        const uint64_t *s = P->bits[n->in[k]];
        PXC_ASSERT(s);
        GatherKind kind = gather_kind(g, n, k);
        switch (kind) {
        case GK_GLOBAL:
            for (int p = 0; p < np; p++) or_words(o + (size_t)p * nw, s, nw);
            break;
        case GK_ALL:
            memset(P->tmp, 0, (size_t)nw * sizeof *P->tmp);
            for (int p = 0; p < npos(in); p++) or_words(P->tmp, s + (size_t)p * nw, nw);
            for (int p = 0; p < np; p++) or_words(o + (size_t)p * nw, P->tmp, nw);
            break;
        case GK_POINT:
            for (int p = 0; p < np; p++) or_words(o + (size_t)p * nw, s + (size_t)p * nw, nw);
            break;
        default:
            for (int oi = 0; oi < h; oi++)
                for (int oj = 0; oj < w; oj++) {
                    int cnt = gather_list(g, n, k, kind, oi, oj, P->taps);
                    uint64_t *dst = o + ((size_t)oi * w + oj) * nw;
                    for (int t = 0; t < cnt; t++) or_words(dst, s + (size_t)P->taps[t] * nw, nw);
                }
        }
    }
    return o;
}

/* ---- the witness path (only when the proof fails) ------------------------ */

typedef struct Step { int node, pos; } Step;

/* reach[m][s]: does value m at position s depend on input pixel q? */
static unsigned char **reach_of(const Prover *P, int q) {
    const Graph *g = P->g;
    unsigned char **reach = xcalloc((size_t)P->nend, sizeof *reach);
    for (int i = 0; i < P->nend; i++) {
        const Node *n = &g->nodes[i];
        int np = npos(n), h = val_h(n), w = val_w(n);
        unsigned char *o = reach[i] = xcalloc((size_t)np, 1);
        if (i == g->x && has_pixels(n) && h == P->H && w == P->W) o[q] = 1;
        for (int k = 0; k < n->nin; k++) {
            const Node *in = &g->nodes[n->in[k]];
            const unsigned char *s = reach[n->in[k]];
            GatherKind kind = gather_kind(g, n, k);
            if (kind == GK_GLOBAL || kind == GK_ALL) {
                bool any = false;
                for (int p = 0; p < npos(in) && !any; p++) any = s[p];
                if (any) memset(o, 1, (size_t)np);
            } else {
                for (int oi = 0; oi < h; oi++)
                    for (int oj = 0; oj < w; oj++) {
                        int cnt = gather_list(g, n, k, kind, oi, oj, P->taps);
                        for (int t = 0; t < cnt; t++) o[oi * w + oj] |= s[P->taps[t]];
                    }
            }
        }
    }
    return reach;
}

/* The path from (g->out, p) back to (g->x, q); returns its length, path[0]
 * is the output. */
static int witness_path(const Prover *P, int p, int q, Step *path) {
    const Graph *g = P->g;
    unsigned char **reach = reach_of(P, q);
    int len = 0, cur = g->out, pos = p;
    PXC_ASSERT(reach[cur][pos]);
    path[len++] = (Step){cur, pos};
    while (cur != g->x) {
        const Node *n = &g->nodes[cur];
        int w = val_w(n);
        Step best = {-1, -1};
        for (int k = 0; k < n->nin && !(best.node >= 0 && P->leaky[best.node]); k++) {
            int src = n->in[k];
            if (best.node >= 0 && !P->leaky[src]) continue;
            const unsigned char *s = reach[src];
            GatherKind kind = gather_kind(g, n, k);
            int found = -1;
            if (kind == GK_GLOBAL || kind == GK_ALL) {
                for (int c = 0; c < npos(&g->nodes[src]) && found < 0; c++)
                    if (s[c]) found = c;
            } else {
                int cnt = gather_list(g, n, k, kind, pos / w, pos % w, P->taps);
                for (int t = 0; t < cnt && found < 0; t++)
                    if (s[P->taps[t]]) found = P->taps[t];
            }
            if (found >= 0) best = (Step){src, found};
        }
        PXC_ASSERT(best.node >= 0);
        cur = best.node;
        pos = best.pos;
        path[len++] = best;
    }
    for (int i = 0; i < P->nend; i++) free(reach[i]);
    free(reach);
    return len;
}

static const char *node_name(const Graph *g, int i) {
    const Node *n = &g->nodes[i];
    if (n->layer >= 0 && n->layer < g->nlayers && g->layers[n->layer].name) return g->layers[n->layer].name;
    if (n->name && n->op != IR_PARAM) return n->name;
    return ir_op(n->op)->name;
}

/* The outermost layer a node belongs to (a template call's own name), -1
 * if none. */
static int top_layer(const Graph *g, int i) {
    int l = g->nodes[i].layer;
    if (l < 0 || l >= g->nlayers) return -1;
    while (g->layers[l].parent >= 0 && g->layers[l].parent < g->nlayers) l = g->layers[l].parent;
    return l;
}

static SrcLoc node_loc(const Graph *g, int i) {
    const Node *n = &g->nodes[i];
    if (n->loc.line > 0 || n->layer < 0 || n->layer >= g->nlayers) return n->loc;
    return g->layers[n->layer].loc;
}

/* One top-level layer on the witness path: consecutive nodes of the same
 * top-level layer merge, keeping the position of the last one; nodes outside
 * every layer show their op's name. */
typedef struct Seg { const char *name; int node, pos; } Seg;

static void put_seg(StrBuf *sb, const Graph *g, Seg s) {
    const Node *n = &g->nodes[s.node];
    if (has_pixels(n)) sb_printf(sb, " -> '%s' (%d,%d)", s.name, s.pos / val_w(n), s.pos % val_w(n));
    else sb_printf(sb, " -> '%s'", s.name);
}

/* "input pixel (0,1) -> 'x1' (0,1) -> 'bad' (0,0) -> 'head' (0,0)"; paths
 * of more than 8 layers keep the layer before the culprit, the culprit, two
 * after it, and the output. */
static char *path_text(const Graph *g, const Step *path, int len, int culprit_step, int W) {
    Seg *seg = xmalloc((size_t)len * sizeof *seg);
    int ns = 0, cseg = 0;
    int prev_top = -2;
    for (int t = len - 2; t >= 0; t--) {  /* forward order, skipping the input */
        int top = top_layer(g, path[t].node);
        const char *nm = top >= 0 ? g->layers[top].name : ir_op(g->nodes[path[t].node].op)->name;
        bool same = top >= 0 && top == prev_top;
        prev_top = top;
        if (same) {
            seg[ns - 1].node = path[t].node;
            seg[ns - 1].pos = path[t].pos;
        } else {
            seg[ns++] = (Seg){nm, path[t].node, path[t].pos};
        }
        if (t == culprit_step) cseg = ns - 1;
    }
    StrBuf sb = {0};
    int q = path[len - 1].pos;
    sb_printf(&sb, "input pixel (%d,%d)", q / W, q % W);
    int from = 0, to = ns - 1;
    if (ns > 8) {
        from = cseg > 0 ? cseg - 1 : 0;
        to = cseg + 2 < ns - 1 ? cseg + 2 : ns - 1;
    }
    if (from > 0) sb_printf(&sb, " -> ...");
    for (int s = from; s <= to; s++) put_seg(&sb, g, seg[s]);
    if (to < ns - 1) {
        if (to < ns - 2) sb_printf(&sb, " -> ...");
        put_seg(&sb, g, seg[ns - 1]);
    }
    free(seg);
    return sb.s;
}

/* ---- the prover ---------------------------------------------------------- */

void check_report_free(CheckReport *rep) {
    if (!rep) return;
    free(rep->field);
    memset(rep, 0, sizeof *rep);
    rep->bad_node = -1;
}

bool check_causality(const Graph *g, CheckReport *rep, DiagList *dl) {
    Prover P;
    memset(&P, 0, sizeof P);
    P.g = g;
    P.nend = g->nfwd > 0 && g->nfwd <= g->n ? g->nfwd : g->n;
    if (g->x >= 0 && g->x < P.nend && has_pixels(&g->nodes[g->x])) {
        P.H = (int)g->nodes[g->x].shape.d[0];
        P.W = (int)g->nodes[g->x].shape.d[1];
    }
    int npix = P.H * P.W;
    P.nw = npix > 0 ? (npix + 63) / 64 : 1;
    if (rep) {
        memset(rep, 0, sizeof *rep);
        rep->n = P.nend;
        rep->field = xcalloc((size_t)(P.nend > 0 ? P.nend : 1), sizeof *rep->field);
        rep->bad_node = -1;
        rep->out_i = rep->out_j = rep->in_i = rep->in_j = -1;
    }
    if (g->out >= P.nend) {
        diag_error(dl, srcloc_none(), "internal: the network output %%%d is not in the forward graph [0,%d)", g->out,
                   P.nend);
        return false;
    }

    int maxtaps = 1;
    P.last_use = xmalloc((size_t)(P.nend > 0 ? P.nend : 1) * sizeof *P.last_use);
    for (int i = 0; i < P.nend; i++) {
        const Node *n = &g->nodes[i];
        P.last_use[i] = -1;
        for (int k = 0; k < n->nin; k++) P.last_use[n->in[k]] = i;
        if ((n->op == IR_CONV2D || n->op == IR_DECONV2D) && n->a.kh * n->a.kw > maxtaps) maxtaps = n->a.kh * n->a.kw;
    }
    P.taps = xmalloc((size_t)maxtaps * sizeof *P.taps);
    P.tmp = xmalloc((size_t)P.nw * sizeof *P.tmp);
    P.bits = xcalloc((size_t)(P.nend > 0 ? P.nend : 1), sizeof *P.bits);
    P.leaky = xcalloc((size_t)(P.nend > 0 ? P.nend : 1), sizeof *P.leaky);

    int wit_p = -1, wit_q = -1;
    bool out_shapeless = false;
    for (int i = 0; i < P.nend; i++) {
        const Node *n = &g->nodes[i];
        uint64_t *s = P.bits[i] = propagate(&P, i);
        if (rep) rep->field[i] = field_of(&P, n, s);
        if (has_pixels(n) && npix > 0) {
            int h = val_h(n), w = val_w(n);
            bool bad = false, ident = true;
            for (int p = 0; p < h * w; p++) {
                const uint64_t *set = s + (size_t)p * P.nw;
                int pix = mapped(&P, h, w, p / w, p % w);
                int q = first_at_or_after(set, P.nw, pix);
                if (q >= 0 && !bad) {
                    bad = true;
                    if (i == g->out) wit_p = p, wit_q = q;
                }
                if (ident && !subset_of_pixel(set, P.nw, pix)) ident = false;
                if (bad && !ident) break;
            }
            P.leaky[i] = bad && (i == g->out || !ident);
        } else if (i == g->out) {
            out_shapeless = true;
        }
        if (rep) rep->field[i].leaky = P.leaky[i];
        for (int k = 0; k < n->nin; k++)
            if (P.last_use[n->in[k]] == i) {
                free(P.bits[n->in[k]]);
                P.bits[n->in[k]] = NULL;
            }
        if (P.last_use[i] < 0) {
            free(P.bits[i]);
            P.bits[i] = NULL;
        }
    }

    bool ok = true;
    if (out_shapeless) {
        char b[64];
        diag_error(dl, node_loc(g, g->out),
                   "the network output '%s' is %s; causality is defined for an image-shaped output (HxWxC)",
                   node_name(g, g->out), shape_str(g->nodes[g->out].shape, b, sizeof b));
        ok = false;
    } else if (wit_p >= 0) {
        Step *path = xmalloc((size_t)(P.nend + 1) * sizeof *path);
        int len = witness_path(&P, wit_p, wit_q, path);
        int t = 0;
        while (t + 1 < len && P.leaky[path[t + 1].node]) t++;
        int bad = path[t].node, ow = val_w(&g->nodes[g->out]);
        diag_error(dl, node_loc(g, bad),
                   "layer '%s' is not causal: output pixel (%d,%d) depends on input pixel (%d,%d), which comes at "
                   "or after it in raster order",
                   node_name(g, bad), wit_p / ow, wit_p % ow, wit_q / P.W, wit_q % P.W);
        char *txt = path_text(g, path, len, t, P.W);
        diag_note(dl, node_loc(g, bad),
                  "the dependency enters at '%s' (%s) and reaches the output along %s (positions in each "
                  "layer's own grid)",
                  node_name(g, bad), ir_op(g->nodes[bad].op)->name, txt);
        free(txt);
        const Node *bn = &g->nodes[bad];
        if (bn->layer >= 0 && bn->layer < g->nlayers)
            for (int l = g->layers[bn->layer].parent, c = bn->layer; l >= 0 && l < g->nlayers;
                 c = l, l = g->layers[l].parent)
                diag_note(dl, g->layers[l].loc, "'%s' is part of '%s' (%s), here", g->layers[c].name,
                          g->layers[l].name, g->layers[l].kind);
        free(path);
        if (rep) {
            rep->bad_node = bad;
            rep->out_i = wit_p / ow;
            rep->out_j = wit_p % ow;
            rep->in_i = wit_q / P.W;
            rep->in_j = wit_q % P.W;
        }
        ok = false;
    }

    for (int i = 0; i < P.nend; i++) free(P.bits[i]);
    free(P.bits);
    free(P.last_use);
    free(P.leaky);
    free(P.taps);
    free(P.tmp);
    return ok;
}
