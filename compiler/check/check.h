/*
 * check.h — compiler/check: whole-graph checks that go beyond the per-op
 * shape rules of compiler/ir. Today: the causality prover and the receptive
 * field of every value (the `pxc check` layer table shows both).
 *
 * The prover is exact, not a pattern match on shift attributes: it
 * propagates, for every value and every spatial position, the set of input
 * image pixels that position depends on (channels merged), through every op
 * of the forward graph, and then proves that the network output at pixel p
 * depends only on input pixels strictly before p in raster order. See
 * check_causal.c for the rules per op and for how the offending layer of a
 * non-causal graph is chosen.
 */
#ifndef PXC_CHECK_H
#define PXC_CHECK_H

#include "../ir/ir.h"

/* The receptive field of one value, measured at one position. */
typedef struct CheckField {
    int64_t deps_count;  /* input pixels the value at (at_i, at_j) depends on */
    int rows, cols;      /* their bounding box, in input pixels (0 x 0 when none) */
    int top, left;       /* the box's first input row and column (-1 when none) */
    int at_i, at_j;      /* the position measured, in the value's own [h,w]
                          * coordinates: the centre-most one (h/2, w/2); -1, -1
                          * for a value without pixels (parameters, the loss),
                          * whose field is the union over the whole tensor */
    bool leaky;          /* some position (i,j) of the value, mapped to input
                          * coordinates (i*H/h, j*W/w), depends on an input
                          * pixel at or after it in raster order (a pure
                          * per-pixel image of x, such as concat(x, ones), is
                          * not counted as leaky unless it is the output) */
} CheckField;

typedef struct CheckReport {
    int n;               /* nodes covered: [0, n) = the forward graph */
    CheckField *field;   /* [n], one per node */
    int bad_node;        /* the first offending node; -1 if causal */
    int out_i, out_j;    /* witness: output pixel (out_i, out_j) ... */
    int in_i, in_j;      /* ... depends on input pixel (in_i, in_j); -1 if causal */
} CheckReport;

/* Prove the forward graph [0, g->nfwd) (every node if nfwd == 0) causal.
 * Returns true if g->out at every pixel depends only on input pixels strictly
 * before it in raster order. Otherwise adds one error at the offending
 * layer's SrcLoc with a witness pair, a note with the dependency path (and,
 * for a layer inside a template call, a note at each enclosing call), and
 * returns false. rep (may be NULL) receives the receptive fields; free it
 * with check_report_free. Never prints. */
bool check_causality(const Graph *g, CheckReport *rep, DiagList *dl);
void check_report_free(CheckReport *rep);

#endif
