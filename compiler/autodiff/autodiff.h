/*
 * autodiff.h — reverse-mode differentiation over the graph IR.
 *
 * ad_differentiate appends to a forward Graph the backward nodes that compute
 * d(g->loss)/d(every PARAM) and, when asked, d(g->loss)/d(INPUT). The
 * backward graph is ordinary IR: ir_print shows it, ir_verify checks it, and
 * every back end (reference, JIT, emitted C) runs it like the forward part.
 *
 * Each op's vector-Jacobian rule is one function ad_vjp_<name> in a table
 * indexed by OpKind (ops with grad = 0 in ops.def have none). Gradients that
 * fan out are summed with ADD. Backward nodes carry the SrcLoc, layer and
 * name of the forward node they differentiate, so diagnostics and dumps of
 * the backward graph still point at the YAML.
 *
 * This is not an optimiser: it emits one node per rule application and
 * leaves fusion and memory planning to compiler/passes.
 */
#ifndef PXC_AUTODIFF_H
#define PXC_AUTODIFF_H

#include "../ir/ir.h"

/* Append the backward graph of g. On entry g is a forward graph (g->grad is
 * NULL) with g->loss set; nodes [0, g->n) become the forward part
 * (g->nfwd = g->n). On success sets g->grad (malloc'd, g->n entries counted
 * after the append: for forward node i the node holding d loss / d node i,
 * -1 where none) and g->dx (the gradient of the INPUT node when want_dx,
 * else -1), and returns true. The seed d loss/d loss = 1 is a ONES node of
 * shape [1]. A parameter that does not reach the loss has g->grad -1 (its
 * gradient is zero). Returns false with a diagnostic in dl when the graph
 * cannot be differentiated (no loss, already differentiated, or an op on
 * the path to the loss has no vector-Jacobian rule). */
bool ad_differentiate(Graph *g, bool want_dx, DiagList *dl);

/* True when op k has a vector-Jacobian rule (the grad column of ops.def;
 * tests check the two agree). */
bool ad_has_vjp(OpKind k);

#endif
