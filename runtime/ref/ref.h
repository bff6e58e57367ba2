/*
 * ref.h — pxc's reference backend: runs graph IR op by op in double
 * precision with naive loops written straight from the math lines of
 * compiler/ir/ops.def.
 *
 * It is slow on purpose and shares no code with the compiled kernels: it
 * exists to check them (and autodiff) against something obviously correct.
 * Every op, forward and backward, has one kernel ref_<name> in a table
 * indexed by OpKind.
 *
 * Values. Batched values (activations, labels) hold n images, NHWC, image
 * after image: n·numel doubles, element (b,i,j,c) of an [H,W,C] value at
 * ((b·H + i)·W + j)·C + c. Unbatched values (parameters, the loss, parameter
 * gradients) hold numel doubles. Labels are stored as doubles too.
 * Parameters come and go in one flat buffer in ParamLayout order
 * (ir_param_layout).
 *
 * Dropout: element e (flat over one image's [H,W,C]) of image b of a
 * dropout with stream s is kept when
 * pxc_uniform(pxc_image_seed(seed, b), s, e) >= p and then scaled by
 * 1/(1-p), in forward and backward alike (runtime/pxc_model.h).
 */
#ifndef PXC_REF_H
#define PXC_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "pxc_model.h"

typedef struct RefExec RefExec;

/* An executor of g for batches of exactly n images. g must outlive it. A
 * forward-only graph (nfwd == 0) runs every node as forward. */
RefExec *ref_new(const Graph *g, int n);
void ref_free(RefExec *e);

/* Run the forward nodes [0, nfwd) on params (ParamLayout order), the images
 * x [n,H,W,C] and labels [n] (NULL for an unconditional graph). seed drives
 * dropout when training. Returns the loss (nats over the batch), or NAN when
 * labels are missing or one lies outside [0, classes). */
double ref_forward(RefExec *e, const double *params, const double *x, const int32_t *labels, uint64_t seed,
                   bool training);
/* Run the backward nodes [nfwd, g->n) on the state of the last forward. */
void ref_backward(RefExec *e);
/* Backward seeded at one backward node instead of the loss: grad_node's
 * value is set to `value` (its value_len doubles) and every backward node it
 * does not reach is zero — so g->dx then holds d<value, node>/dx, e.g. the
 * gradient of one output pixel. For probes (causality) and tests. */
void ref_backward_from(RefExec *e, int grad_node, const double *value);
/* The value of a node after forward/backward: n·numel doubles when batched,
 * numel otherwise. */
const double *ref_value(const RefExec *e, int node);
/* d loss / d params after ref_backward, ParamLayout order (zero for a
 * parameter without a gradient node). */
void ref_grads(const RefExec *e, double *grad_params);

/* Data-dependent weight-norm initialisation on one batch (evaluation mode,
 * no dropout). Runs the forward graph in order; at every CONV2D/DECONV2D
 * whose weight is WNORM(v, g) with g a PARAM and whose bias is a PARAM of
 * role PR_BIAS it first computes the output with g = 1, b = 0, takes each
 * output channel's mean m and variance s^2 over the batch and positions,
 * sets g = init_scale/sqrt(s^2 + 1e-10) (init_scale 0 means 1) and
 * b = -m·g, and recomputes the layer before later nodes run. params
 * (ParamLayout order) holds every v and hw already drawn; its g and b
 * entries are overwritten. */
void ref_init(RefExec *e, double *params, const double *x, const int32_t *labels);

/* The likelihood head of g (the op of g->nll, DMOL_NLL or SOFTMAX_NLL) alone
 * on n images: l [n,H,W,out channels], x [n,H,W,C]. Writes d loss / d l to
 * dl and the per-pixel nll [n,H,W] when not NULL; returns the loss. */
double ref_loss(const Graph *g, int n, const double *l, const double *x, double *dl, double *nll);

/* The pxc_model ABI over the reference executor (slow, exact; float in and
 * out, double inside), for the training runtime and parity tests. g must
 * have been differentiated (ad_differentiate); the model keeps its own copy
 * of the graph. Batches of 1..max_batch images. Returns NULL with a message
 * in err when g is not usable or too many reference models are alive (the
 * ABI's functions take no model pointer, so each live model occupies one of
 * a fixed number of slots; release() frees it). Create and release models
 * from one thread. */
pxc_model *ref_model_new(const Graph *g_with_backward, int max_batch, char *err, size_t errlen);

#endif
