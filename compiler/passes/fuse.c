/*
 * fuse.c — the fusion decision: which values are stored and which are
 * recomputed inside the kernels that read them (passes.h).
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

bool fuse_is_pointwise(const Graph *g, int node) {
    const Node *nd = &g->nodes[node];
    switch (nd->op) {
    case IR_SHIFT: case IR_CONCAT: case IR_SLICE: case IR_ELU: case IR_CONCAT_ELU: case IR_SIGMOID:
    case IR_TANH: case IR_GATE: case IR_DROPOUT: case IR_CLASS_BIAS: case IR_BROADCAST: case IR_SLICE_BWD:
    case IR_ELU_BWD: case IR_CONCAT_ELU_BWD: case IR_SIGMOID_BWD: case IR_TANH_BWD: case IR_GATE_BWD:
        return true;
    case IR_ADD:
        return nd->shape.batched;
    default:
        return false;
    }
}

/* Extra cost of evaluating the op itself (transcendentals, hashing). */
static int op_weight(OpKind op) {
    switch (op) {
    case IR_ELU: case IR_CONCAT_ELU: case IR_SIGMOID: case IR_TANH: case IR_GATE: case IR_ELU_BWD:
    case IR_GATE_BWD:
        return 4;
    case IR_CONCAT_ELU_BWD: return 8;
    case IR_DROPOUT: return 2;
    default: return 0;
    }
}

/* How many times the op reads input k per output element. */
static int reads(const Node *nd, int k) {
    switch (nd->op) {
    case IR_GATE: return 2;
    case IR_GATE_BWD: return k == 0 ? 2 : 1;
    case IR_CONCAT_ELU_BWD: return k == 1 ? 2 : 1;
    default: return 1;
    }
}

static bool is_const_node(const Graph *g, int i, const uint8_t *kind) {
    const Node *nd = &g->nodes[i];
    if (nd->op == IR_ONES) return true;
    if (nd->op == IR_BROADCAST) return kind[nd->in[0]] == FK_CONST;
    return false;
}

/* Reading a stored value costs one load; labels (one per image) and
 * unbatched values (per channel) are free. */
static int load_cost(const Graph *g, int i, const FusePlan *fp) {
    const Node *nd = &g->nodes[i];
    if (fp->kind[i] == FK_CONST || !nd->shape.batched || nd->op == IR_LABELS) return 0;
    return 1;
}

static void compute_costs(const Graph *g, FusePlan *fp) {
    for (int i = 0; i < g->n; i++) {
        const Node *nd = &g->nodes[i];
        if (fp->kind[i] != FK_INLINE) {
            fp->cost[i] = load_cost(g, i, fp);
            continue;
        }
        int c = op_weight(nd->op);
        for (int k = 0; k < nd->nin; k++) {
            const Node *in = &g->nodes[nd->in[k]];
            (void)in;
            int ci = fp->kind[nd->in[k]] == FK_INLINE ? fp->cost[nd->in[k]] : load_cost(g, nd->in[k], fp);
            if (nd->op == IR_CONCAT) c = ci > c ? ci : c;   /* an element comes from one input */
            else c += reads(nd, k) * ci;
        }
        fp->cost[i] = c;
    }
}

/* Channels of the stored values an inline node reads (each counted once). */
static int64_t leaf_channels(const Graph *g, const FusePlan *fp, int i, int *seen, int *nseen) {
    const Node *nd = &g->nodes[i];
    if (fp->kind[i] != FK_INLINE) {
        if (load_cost(g, i, fp) == 0) return 0;
        for (int k = 0; k < *nseen; k++)
            if (seen[k] == i) return 0;
        if (*nseen < 64) seen[(*nseen)++] = i;
        return nd->shape.d[2];
    }
    int64_t c = 0;
    for (int k = 0; k < nd->nin; k++) c += leaf_channels(g, fp, nd->in[k], seen, nseen);
    return c;
}

void fuse_plan(const Graph *g, bool no_fusion, FusePlan *fp) {
    int n = g->n;
    fp->n = n;
    fp->kind = xcalloc((size_t)n, 1);
    fp->cost = xcalloc((size_t)n, sizeof(int));
    fp->sites_fwd = xcalloc((size_t)n, sizeof(int));
    fp->sites_bwd = xcalloc((size_t)n, sizeof(int));
    int nfwd = g->nfwd > 0 ? g->nfwd : n;

    bool *must = xcalloc((size_t)n, sizeof(bool));   /* outputs of the program */
    if (g->out >= 0) must[g->out] = true;
    if (g->nll >= 0) must[g->nll] = true;
    if (g->grad)
        for (int i = 0; i < nfwd; i++)
            if (g->nodes[i].op == IR_PARAM && g->grad[i] >= 0) must[g->grad[i]] = true;
    if (g->dx >= 0) must[g->dx] = true;

    for (int i = 0; i < n; i++) {
        const Node *nd = &g->nodes[i];
        if (nd->op == IR_INPUT || nd->op == IR_LABELS || nd->op == IR_PARAM) fp->kind[i] = FK_LEAF;
        else if (is_const_node(g, i, fp->kind)) fp->kind[i] = FK_CONST;
        else if (fuse_is_pointwise(g, i) && !no_fusion && !must[i]) fp->kind[i] = FK_INLINE;
        else fp->kind[i] = FK_MAT;
    }
    compute_costs(g, fp);   /* an upper bound: every pointwise input still inline */

    /* Consumers first: sites(i) = kernels that evaluate i. */
    int *cons_start = xcalloc((size_t)n + 1, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) cons_start[g->nodes[i].in[k] + 1]++;
    for (int i = 0; i < n; i++) cons_start[i + 1] += cons_start[i];
    int *cons = xmalloc((size_t)(cons_start[n] ? cons_start[n] : 1) * sizeof(int));
    int *fill = xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < g->nodes[i].nin; k++) {
            int a = g->nodes[i].in[k];
            bool dup = false;
            for (int q = cons_start[a]; q < cons_start[a] + fill[a]; q++) dup |= cons[q] == i;
            if (!dup) cons[cons_start[a] + fill[a]++] = i;
        }
    /* Phase 0: values several kernels of one pass would evaluate; phase 1:
     * also values read once per pass that are cheaper to keep (once the
     * phase-0 decisions fix what they are computed from). Each phase runs
     * to a fixpoint; decisions only go from INLINE to MAT. */
    for (int phase = 0; phase < 2; phase++) {
        bool changed = true;
        while (changed) {
            changed = false;
            for (int i = n - 1; i >= 0; i--) {
                int sf = 0, sb = 0;
                for (int q = cons_start[i]; q < cons_start[i] + fill[i]; q++) {
                    int c = cons[q];
                    if (fp->kind[c] == FK_INLINE) {
                        sf += fp->sites_fwd[c];
                        sb += fp->sites_bwd[c];
                    } else if (c < nfwd) {
                        sf++;
                    } else {
                        sb++;
                    }
                }
                fp->sites_fwd[i] = sf;
                fp->sites_bwd[i] = sb;
                if (fp->kind[i] != FK_INLINE || fp->cost[i] < 2) continue;
                bool mat = sf >= 2 || sb >= 2;
                if (!mat && phase == 1 && sf >= 1 && sb >= 1) {
                    /* read once in each pass: store it when that keeps fewer
                     * channels alive into backward than the values it is
                     * computed from */
                    int seen[64], nseen = 0;
                    mat = g->nodes[i].shape.d[2] < leaf_channels(g, fp, i, seen, &nseen);
                }
                if (mat) fp->kind[i] = FK_MAT, changed = true;
            }
            compute_costs(g, fp);
        }
    }
    /* Decisions above used costs from before the inputs were decided: a
     * value that is now a plain copy of stored values (a concat of two
     * stored tensors) goes back to INLINE. That never raises a consumer's
     * cost, and its inputs are stored, so nothing else changes. */
    for (int i = 0; i < n; i++) {
        if (fp->kind[i] != FK_MAT || must[i] || no_fusion || !fuse_is_pointwise(g, i)) continue;
        fp->kind[i] = FK_INLINE;
        compute_costs(g, fp);
        if (fp->cost[i] > 1) {
            fp->kind[i] = FK_MAT;
            compute_costs(g, fp);
        }
    }
    /* Exact costs now; cap the size of inlined expressions. */
    compute_costs(g, fp);
    for (int i = 0; i < n; i++)
        if (fp->kind[i] == FK_INLINE && fp->cost[i] > 40) {
            fp->kind[i] = FK_MAT;
            compute_costs(g, fp);
        }
    free(must);
    free(cons_start);
    free(cons);
    free(fill);
}

void fuse_plan_free(FusePlan *fp) {
    free(fp->kind);
    free(fp->cost);
    free(fp->sites_fwd);
    free(fp->sites_bwd);
    memset(fp, 0, sizeof *fp);
}

void fuse_print(const Graph *g, const FusePlan *fp, FILE *f) {
    static const char *kn[] = {"leaf", "const", "inline", "mat"};
    for (int i = 0; i < g->n; i++)
        fprintf(f, "%%%d %s %s cost %d sites %d/%d\n", i, ir_op(g->nodes[i].op)->name, kn[fp->kind[i]], fp->cost[i],
                fp->sites_fwd[i], fp->sites_bwd[i]);
}
