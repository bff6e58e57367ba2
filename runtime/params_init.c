/* params_init.c — see params_init.h. */
#include "params_init.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"

double rt_randn(uint64_t *state) {
    RtRng rng = {*state};
    double u1 = 1.0 - rt_rng_uniform(&rng);  /* (0, 1]: log is finite */
    double u2 = rt_rng_uniform(&rng);
    *state = rng.s;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* The PARAM node named `name`, trying `hint` first (the usual case: the
 * back end keeps the graph's order). */
static const Node *find_param(const Graph *g, const ParamLayout *pl, int hint, const char *name) {
    if (hint >= 0 && hint < pl->n && !strcmp(pl->p[hint].name, name)) return &g->nodes[pl->p[hint].node];
    for (int i = 0; i < pl->n; i++)
        if (!strcmp(pl->p[i].name, name)) return &g->nodes[pl->p[i].node];
    return NULL;
}

int rt_params_init(const Graph *g, const pxc_tensor *t, int n, uint64_t seed, float *params, char *err,
                   size_t errlen) {
    ParamLayout pl = ir_param_layout(g);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const Node *nd = find_param(g, &pl, i, t[i].name);
        if (!nd) {
            snprintf(err, errlen, "parameter '%s' of the model is not a parameter of the spec", t[i].name);
            rc = -1;
            break;
        }
        if (shape_numel(nd->shape) != t[i].numel) {
            snprintf(err, errlen, "parameter '%s' has %lld values in the model but %lld in the spec", t[i].name,
                     (long long)t[i].numel, (long long)shape_numel(nd->shape));
            rc = -1;
            break;
        }
        float *p = params + t[i].offset;  /* [numel] */
        if (nd->a.init_std > 0) {
            uint64_t s = pxc_mix64(seed ^ hash_bytes(HASH_INIT, t[i].name, strlen(t[i].name)));
            for (int64_t k = 0; k < t[i].numel; k++) p[k] = (float)(nd->a.init_std * rt_randn(&s));
        } else {
            for (int64_t k = 0; k < t[i].numel; k++) p[k] = (float)nd->a.init_value;
        }
    }
    ir_param_layout_free(&pl);
    return rc;
}

pxc_tensor *rt_param_table(const Graph *g, int *n, int64_t *nparams) {
    ParamLayout pl = ir_param_layout(g);
    pxc_tensor *t = xcalloc((size_t)(pl.n ? pl.n : 1), sizeof *t);
    for (int i = 0; i < pl.n; i++) {
        t[i].name = pl.p[i].name;
        t[i].rank = pl.p[i].shape.rank;
        for (int k = 0; k < t[i].rank; k++) t[i].shape[k] = pl.p[i].shape.d[k];
        t[i].offset = pl.p[i].offset;
        t[i].numel = pl.p[i].numel;
    }
    *n = pl.n;
    *nparams = pl.total;
    ir_param_layout_free(&pl);
    return t;
}

int rt_param_tensor_at(const pxc_tensor *t, int n, int64_t index) {
    for (int i = 0; i < n; i++)
        if (index >= t[i].offset && index < t[i].offset + t[i].numel) return i;
    return -1;
}
