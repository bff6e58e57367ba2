/*
 * params_init.h — the starting values of a model's parameters, drawn from
 * the graph's PARAM nodes: a tensor whose attrs carry init_std > 0 (weight-
 * norm directions v, class weights hw) gets N(0, init_std^2) draws, any
 * other its init_value (g = 1, b = 0). The data-dependent initialisation
 * that follows (pxc_model.init on the first batch) is the caller's.
 *
 * Each tensor draws from its own stream, seeded by (seed, tensor name), so a
 * tensor's values do not change when another layer is added or removed, and
 * the result does not depend on where the back end puts the tensor.
 *
 * Also here: the parameter table of a graph (names, shapes, offsets as a
 * pxc_tensor array), for tools that need the layout without a back end.
 */
#ifndef PXC_PARAMS_INIT_H
#define PXC_PARAMS_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "pxc_model.h"

/* One standard normal draw from an RtRng-compatible splitmix64 state
 * (Box-Muller on two uniforms; the second value of the pair is dropped so
 * every draw costs exactly two uniforms). */
double rt_randn(uint64_t *state);

/* Fill params[nparams] for the tensors t[0..n) (offsets into params) from
 * the PARAM nodes of g with the same names. 0, or -1 with a message when a
 * tensor has no PARAM node in g or its element count differs. */
int rt_params_init(const Graph *g, const pxc_tensor *t, int n, uint64_t seed, float *params /*[nparams]*/,
                   char *err, size_t errlen);

/* The parameters of g as a pxc_tensor table (ir_param_layout order and
 * offsets). Names point into g's arena; free the array with free(). */
pxc_tensor *rt_param_table(const Graph *g, int *n, int64_t *nparams);

/* Index of the tensor that holds flat element `index`, or -1. */
int rt_param_tensor_at(const pxc_tensor *t, int n, int64_t index);

#endif
