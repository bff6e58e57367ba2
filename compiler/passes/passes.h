/*
 * passes.h — the decisions between the graph IR and the kernel IR:
 * fusion (which values are stored, which are recomputed inside the kernels
 * that read them) and memory planning (one arena, offsets from lifetimes).
 *
 * Fusion works on the differentiated graph. Every elementwise value
 * (add, elu, concat_elu, gate, shift, dropout, class_bias, their backward
 * ops, ...) is computed per pixel and channel from its inputs; it is
 * INLINE — evaluated inside each kernel that reads it (a store loop, an
 * im2col pack, a reduction) — unless storing it is cheaper: it is MAT
 * (materialised into a buffer by a kernel of its own) when two or more
 * kernels of the same pass (forward or backward) would otherwise evaluate
 * it and it costs more than one load, when one kernel of each pass reads it
 * and it has fewer channels than the stored values it is computed from
 * (storing it keeps less alive into backward: the residual sum x + gate),
 * or when its inlined expression grows too large. GEMM-based ops, weight norm, reductions and the likelihood are
 * always MAT. Forward values that backward reads are recomputed there from
 * stored values when INLINE (dropout masks included), never stored for it.
 *
 * Memory planning assigns every arena buffer of a KirProgram an offset
 * from the lifetimes of its uses (first to last step of forward followed by
 * backward; init planned on its own), reusing the space of dead buffers
 * (greedy by size). Buffers are either constant-sized (weights, per-channel
 * statistics) or per image (activations, packs): the arena is a constant
 * region followed by a region scaled by the batch n, so one plan holds for
 * every n.
 */
#ifndef PXC_PASSES_H
#define PXC_PASSES_H

#include "../ir/ir.h"
#include "../kernels/kir.h"

typedef enum FuseKind {
    FK_LEAF,    /* input, labels, param: already in an ABI buffer */
    FK_CONST,   /* ones, and broadcasts of ones: a constant */
    FK_INLINE,  /* recomputed where read */
    FK_MAT,     /* stored by its own kernel(s) */
} FuseKind;

typedef struct FusePlan {
    int n;              /* nodes */
    uint8_t *kind;      /* FuseKind per node */
    int *cost;          /* inlined cost: batched loads + 4 per transcendental */
    int *sites_fwd;     /* kernels of the forward pass that evaluate the node */
    int *sites_bwd;     /* ... of the backward pass */
} FusePlan;

/* True for the per-pixel elementwise ops that may be INLINE. */
bool fuse_is_pointwise(const Graph *g, int node);

/* Decide every node's FuseKind. no_fusion: every computed node is MAT. */
void fuse_plan(const Graph *g, bool no_fusion, FusePlan *fp);
void fuse_plan_free(FusePlan *fp);
/* "%12 concat_elu inline cost 5 sites 1/1" lines, for dumps and tests. */
void fuse_print(const Graph *g, const FusePlan *fp, FILE *f);

/* Plan the arena of p: set off0/off_n of every KB_ARENA buffer and
 * p->arena0/arena_n, p->naive0/naive_n. reuse false: every buffer gets its
 * own space (debugging). Lifetimes come from the steps of p's entries: forward
 * then backward as one sequence, init as another. */
void plan_arena(KirProgram *p, bool reuse);

#endif
