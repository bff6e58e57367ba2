/*
 * spec.h — the spec front end: a YAML model spec (plus --set overrides) →
 * a forward graph in IR, shape-checked, every node carrying its YAML
 * location. The spec language is documented in README.md ("The spec
 * language"); models/ holds examples.
 *
 * The front end never prints or exits: problems are diagnostics in `dl`
 * (several per run where they are independent), and the call returns
 * non-zero.
 */
#ifndef PXC_SPEC_H
#define PXC_SPEC_H

#include "../ir/ir.h"

/* Head kinds, as the spec names them. */
typedef enum SpecHead { SPEC_HEAD_LOGISTIC_MIXTURE, SPEC_HEAD_SOFTMAX256 } SpecHead;

/* What the spec resolved to, beyond the graph: for run records, hashes and
 * the layer table. */
typedef struct SpecInfo {
    char *name;            /* the spec's `name` */
    SpecHead head;
    int nr_mix;
    char *resolved;        /* the resolved parameters as "k=v" lines */
    uint64_t hash;         /* of the spec text and every override */
} SpecInfo;

/* Compile the spec at `path` with "key=value" overrides `sets`. On success
 * returns 0 with a forward graph in *out (out, nll and loss set). */
int spec_compile(const char *path, const char *const *sets, int nsets, Graph *out, DiagList *dl);
int spec_compile_text(const char *name, const char *text, size_t len, const char *const *sets, int nsets,
                      Graph *out, DiagList *dl);
/* The same, also filling *info (free with spec_info_free). */
int spec_compile_ex(const char *name, const char *text, size_t len, const char *const *sets, int nsets,
                    Graph *out, SpecInfo *info, DiagList *dl);
void spec_info_free(SpecInfo *info);

#endif
