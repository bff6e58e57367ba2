/*
 * ir.h — pxc's graph IR: values, the op table, the builder, the printer and
 * the verifier.
 *
 * A Graph is a list of Nodes in topological order; every node produces one
 * value. Activations are per-image NHWC tensors [H,W,C] with the batch N
 * implicit (chosen at run time); parameters are plain tensors. The forward
 * graph ends in the network output `out` (the raw head parameters l) and the
 * scalar `loss` (nats, summed over the batch). compiler/autodiff appends the
 * backward nodes to the same graph; `nfwd` marks where they start.
 *
 * Every node keeps the SrcLoc of the spec text that produced it, so checks
 * and passes can point at the YAML.
 */
#ifndef PXC_IR_H
#define PXC_IR_H

#include "../base/base.h"

typedef enum OpKind {
#define OP(E, name, nin, grad, math) IR_##E,
#include "ops.def"
#undef OP
    IR_OP_COUNT
} OpKind;

typedef enum DType { DT_F32, DT_I32 } DType;

/* The causal shift of a convolution, as the spec names it. */
typedef enum ShiftKind { SHIFT_NONE, SHIFT_DOWN, SHIFT_DOWN_RIGHT } ShiftKind;

/* Init of a PARAM: normal(0, std) when init_std > 0, else the constant. */
typedef enum ParamRole { PR_PLAIN, PR_WN_V, PR_WN_G, PR_BIAS, PR_CLASS_HW } ParamRole;

#define IR_MAX_RANK 4
#define IR_MAX_INPUTS 8

typedef struct Shape {
    int rank;
    int64_t d[IR_MAX_RANK];
    bool batched;  /* leading N implicit */
} Shape;

/* Attributes of every op; each op reads only its own (see ops.def). */
typedef struct Attrs {
    int kh, kw, stride;       /* conv2d, deconv2d (and their _dx/_dw) */
    int pad_t, pad_l, pad_r;  /* conv2d zero padding (bottom: none) */
    int pad_b;                /* conv2d bottom padding (only a non-causal 'none' shift uses it) */
    int crop_l;               /* deconv2d: first kept column of the full output */
    ShiftKind shift;          /* conv2d, deconv2d: as written in the spec */
    int dy, dx;               /* shift */
    int axis;                 /* wnorm, wnorm_dv, wnorm_dg: the output-channel axis */
    int start, len, total;    /* slice, slice_bwd */
    int nr_mix;               /* dmol_nll and its gradients */
    int classes;              /* class_bias_dhw */
    int stream;               /* dropout: its own random stream */
    double p;                 /* dropout probability */
    double init_scale;        /* conv2d/deconv2d over wnorm: data-dependent init target */
    double init_std;          /* param: N(0, init_std^2) when > 0 */
    double init_value;        /* param: constant otherwise */
    ParamRole role;           /* param */
    Shape ref_shape;          /* broadcast: target; *_dx: the input's shape */
} Attrs;

typedef struct Node {
    OpKind op;
    DType dtype;
    int nin;
    int in[IR_MAX_INPUTS];
    Attrs a;
    Shape shape;
    SrcLoc loc;
    const char *name;   /* params: full parameter name; else the layer name or NULL */
    int layer;          /* index into Graph.layers, -1 if none */
} Node;

/* A spec-level layer: what `pxc check` lists in its table. */
typedef struct Layer {
    const char *name;   /* e.g. "up.0.u.0.conv1" */
    const char *kind;   /* e.g. "conv2d", "nin", "gated_resnet" */
    SrcLoc loc;
    int parent;         /* enclosing layer (a template call), -1 at top level */
    int result;         /* the node holding the layer's output, -1 if none */
} Layer;

typedef struct Graph {
    Arena arena;         /* names and other strings live here */
    Node *nodes;
    int n, cap;
    Layer *layers;
    int nlayers, lcap;
    int cur_layer;         /* layer that new nodes belong to (-1: none) */
    int H, W, C, classes;  /* the input image and number of classes */
    int x, labels;         /* INPUT and LABELS nodes (labels -1 if unconditional) */
    int out;               /* raw network output l */
    int nll;               /* per-pixel negative log-likelihood [H,W,1] */
    int loss;              /* SUM of nll: nats over the batch, unbatched [1] */
    int nfwd;              /* nodes [0, nfwd) are the forward graph */
    /* filled by ad_differentiate: gradient node of each node (-1: none) */
    int *grad;
    int dx;                /* gradient w.r.t. the input image, -1 unless asked for */
} Graph;

/* ---- the op table ----------------------------------------------------- */

typedef struct OpInfo {
    const char *name;
    int nin;        /* -1: variadic */
    bool has_vjp;
    const char *math;
} OpInfo;

const OpInfo *ir_op(OpKind k);
/* Look an op up by its text name; -1 if none. */
int ir_op_by_name(const char *name);

/* ---- building ---------------------------------------------------------- */

void ir_graph_init(Graph *g);
void ir_graph_free(Graph *g);
/* Append a node; computes and checks its shape with the op's shape rule.
 * Returns the node id, or -1 after adding a diagnostic to dl at loc. */
int ir_add(Graph *g, DiagList *dl, OpKind op, const int *in, int nin, const Attrs *a, SrcLoc loc);
int ir_param(Graph *g, const char *name, Shape shape, ParamRole role, double init_std,
             double init_value, SrcLoc loc);
/* Append a layer whose parent is the current layer, and enter it: nodes
 * added next belong to it until g->cur_layer is set back. */
int ir_add_layer(Graph *g, const char *name, const char *kind, SrcLoc loc);
Shape ir_shape(int rank, const int64_t *d, bool batched);
Shape shape_hwc(int64_t h, int64_t w, int64_t c);
int64_t shape_numel(Shape s);   /* per image when batched */
bool shape_eq(Shape a, Shape b);
/* "32x32x160", "[2,3,320,160]" */
const char *shape_str(Shape s, char *buf, size_t n);

/* ---- the shape rules and FLOP counts (ops.c) --------------------------- */

/* Compute n->shape from its inputs; on a mismatch add an error naming what
 * was expected and what was found and return false. */
bool ir_infer_shape(const Graph *g, Node *n, DiagList *dl);
/* Floating-point operations per image of one node (2 per multiply-add). */
double ir_flops(const Graph *g, const Node *n);

/* ---- parameters -------------------------------------------------------- */

typedef struct ParamEntry {
    const char *name;
    int node;
    Shape shape;
    int64_t offset;   /* in floats, into one flat parameter buffer */
    int64_t numel;
} ParamEntry;

typedef struct ParamLayout {
    ParamEntry *p;
    int n;
    int64_t total;    /* floats */
} ParamLayout;

/* Parameters in graph order (the order of creation = the spec's order). */
ParamLayout ir_param_layout(const Graph *g);
void ir_param_layout_free(ParamLayout *pl);

/* ---- printing and verifying --------------------------------------------- */

/* Stable text: one line per node, "%12 = conv2d(%4, %10, %11) {kh=2 ...} : 32x32x160  # file:line:col". */
void ir_print(const Graph *g, FILE *f, int from, int to);
/* Structural checks (inputs precede uses, arity, shapes recomputed equal).
 * Violations are internal bugs: returns false with a message in dl. */
bool ir_verify(const Graph *g, DiagList *dl);

#endif
