/*
 * ref_kernels.h — private to runtime/ref: the reference kernels' signature
 * and table (ref_kernels.c). The executor (ref.c) is their only user.
 */
#ifndef PXC_REF_KERNELS_H
#define PXC_REF_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/ir.h"

/* What a kernel may read besides its node and inputs. */
typedef struct RefRun {
    const Graph *g;    /* input shapes: g->nodes[nd->in[k]].shape */
    int n;             /* images in the batch */
    uint64_t seed;     /* dropout */
    bool training;
} RefRun;

/* Compute node nd into out, which is zeroed beforehand (n·numel doubles
 * when batched, numel otherwise); in[k] is the value of input k. */
typedef void (*RefKernel)(const RefRun *r, const Node *nd, const double *const *in, double *out);

/* Indexed by OpKind, generated from ops.def. The kernels of the leaves
 * INPUT, LABELS and PARAM do nothing: the executor loads those values. */
extern const RefKernel ref_kernels[IR_OP_COUNT];

#endif
