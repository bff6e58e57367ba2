/*
 * jit_prof.c — the call sites of a JIT model for its opt-in profile: one row
 * per step of each entry naming the kernel, the step's note (the graph op and
 * its YAML position) and the work of one call (FLOPs of its GEMMs and direct
 * convolutions, with the step's integer arguments; bytes of its argument
 * buffers), linear in the batch. The runtime (jit_runtime.c) counts each
 * site's calls and nanoseconds while profiling is on; jit_model_profile
 * (jit_kir.c) joins the two.
 */
#include <stdlib.h>

#include "../kernels/kir.h"
#include "jit.h"
#include "jit_prof.h"


/* FLOPs of one call of fn at batch n (GEMMs and convolutions; unknown sizes count 0). */
static double func_flops(const KirFunc *fn, const int64_t *ints, int64_t n) {
    double f = 0;
    for (int i = 0; i < fn->nbody; i++) {
        const KirStmt *s = fn->body[i];
        if (s->k == KS_GEMM) {
            int64_t m = kir_eval_i64(s->gemm.m, n, ints, fn->nints), nn = kir_eval_i64(s->gemm.n, n, ints, fn->nints),
                    k = kir_eval_i64(s->gemm.k, n, ints, fn->nints);
            if (m > 0 && nn > 0 && k > 0) f += 2.0 * (double)m * (double)nn * (double)k;
        } else if (s->k == KS_CONV) {
            const KirConv *c = &s->conv;
            int64_t im = kir_eval_i64(c->images, n, ints, fn->nints);
            if (im > 0) f += 2.0 * (double)im * (double)(c->Ho * c->Wo * c->kh * c->kw) * (double)(c->cin * c->cout);
        }
    }
    return f;
}

JitProfSite *jit_prof_sites(const KirProgram *prog, int *nsites) {
    int n = 0;
    for (int e = 0; e < KE_COUNT; e++) n += prog->entry[e].nsteps;
    JitProfSite *t = xcalloc((size_t)n + 1, sizeof *t);
    int k = 0;
    for (int e = 0; e < KE_COUNT; e++)
        for (int s = 0; s < prog->entry[e].nsteps; s++) {
            const KirStep *st = &prog->entry[e].steps[s];
            if (st->func < 0 || st->func >= prog->nfuncs) continue;
            const KirFunc *fn = &prog->funcs[st->func];
            JitProfSite *r = &t[k++];
            r->entry = e;
            r->step = s;
            r->kernel = xstrdup(fn->name);
            r->note = xstrdup(st->note ? st->note : "");
            r->kind = jit_kernel_kind(fn->name);
            double f1 = func_flops(fn, st->ints, 1), f2 = func_flops(fn, st->ints, 2);
            r->flops_n = f2 - f1;
            r->flops0 = f1 - r->flops_n;
            for (int a = 0; a < st->nargs; a++) {
                if (st->args[a] < 0 || st->args[a] >= prog->nbufs) continue;
                const KirBuf *b = &prog->bufs[st->args[a]];
                r->bytes0 += (double)b->size0;
                r->bytes_n += (double)b->size_n;
            }
        }
    *nsites = k;
    return t;
}

void jit_prof_sites_free(JitProfSite *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free((char *)t[i].kernel), free((char *)t[i].note);
    free(t);
}
