/*
 * test_gradcheck_net.c — whole small PixelCNN++ networks (R=1, F=8, K=2,
 * 3, 8x8x3 and 8x8x1, batch 2, conditional and not, two with dropout 0.5 in
 * training mode, one with the 256-way softmax head) from
 * models/pixelcnnpp_cifar10.yaml: the gradient that
 * autodiff + the reference backend compute w.r.t. the input image and a
 * sample of the elements of every parameter tensor (v, g, b, hw) must match
 * central differences of the loss (the five-point stencil, whose O(h^4)
 * error lets the step be large enough to keep the forward pass's rounding
 * out of the quotient).
 *
 * Parameters: drawn as the spec says, data-dependent init on the batch, then
 * g ·= 1 + 0.05·N(0,1) and b += 0.05·N(0,1) so nothing sits at its initial
 * value. Declared kinks: the sign of every elu/concat_elu input (elu's
 * second derivative jumps at 0) and the mixture's branches. An element whose
 * stencil crosses one is retried with a step 8 times smaller, then skipped
 * and counted (at most 10 %: one elu input within ~1e-6 of zero makes every
 * parameter upstream of it cross).
 */
#include "test_ref_util.h"

typedef struct NetCase {
    const char *name;
    const char *sets[9];
    int nsets;
    bool training;   /* dropout active (seed 7) */
    int nr_mix;      /* 0: the softmax head */
} NetCase;

static const NetCase cases[] = {
    {"8x8x3 unconditional, dropout 0.5 (training)",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=0", "dropout=0.5"}, 8,
     true, 2},
    {"8x8x1 unconditional",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=1", "classes=0", "dropout=0"}, 8,
     false, 2},
    {"8x8x3 conditional (4 classes)",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=3", "classes=4", "dropout=0"}, 8,
     false, 2},
    {"8x8x1 conditional (4 classes), dropout 0.5 (training)",
     {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8", "width=8", "channels=1", "classes=4", "dropout=0.5"}, 8,
     true, 2},
    {"8x8x3 256-way softmax head",
     {"nr_resnet=1", "nr_filters=8", "height=8", "width=8", "channels=3", "classes=0", "dropout=0", "head=softmax256"}, 8,
     false, 0},
};
enum { NCASES = sizeof cases / sizeof cases[0], N_IMAGES = 2, SAMPLES_PER_TENSOR = 2, SAMPLES_X = 24 };

static const double H_STEP = 3e-5, RTOL = 2e-6, ATOL = 1e-6;

/* Branch signature: signs of every elu/concat_elu input, then the mixture's
 * branch per pixel, channel and component. */
typedef struct Sig {
    int *v;
    int64_t n;
} Sig;

static void signature(const Graph *g, const RefExec *e, int nr_mix, Sig *s) {
    int64_t k = 0;
    for (int i = 0; i < g->nfwd; i++) {
        const Node *nd = &g->nodes[i];
        if (nd->op != IR_ELU && nd->op != IR_CONCAT_ELU) continue;
        const double *v = ref_value(e, nd->in[0]);
        int64_t n = N_IMAGES * shape_numel(g->nodes[nd->in[0]].shape);
        for (int64_t t = 0; t < n; t++) s->v[k++] = v[t] > 0;
    }
    int64_t npix = (int64_t)N_IMAGES * g->H * g->W;
    s->n = k;
    if (nr_mix == 0) return; /* the softmax head: smooth in l */
    dmol_branches(ref_value(e, g->out), ref_value(e, g->x), npix, g->C, nr_mix, s->v + k);
    s->n = k + npix * g->C * nr_mix;
}

static int64_t signature_len(const Graph *g, int nr_mix) {
    int64_t k = 0;
    for (int i = 0; i < g->nfwd; i++)
        if (g->nodes[i].op == IR_ELU || g->nodes[i].op == IR_CONCAT_ELU)
            k += N_IMAGES * shape_numel(g->nodes[g->nodes[i].in[0]].shape);
    return k + (int64_t)N_IMAGES * g->H * g->W * g->C * nr_mix + 1;
}

/* The five-point stencil (error O(h^4)) of the loss w.r.t. *p, restored
 * afterwards; false when a step changes a declared branch. */
static bool stencil(const Graph *g, RefExec *e, const NetCase *c, const double *params, const double *x,
                    const int32_t *lab, double *p, double h, const Sig *s0, Sig *s1, int64_t nsig, double *fd) {
    double keep = *p, f[4], steps[4] = {2 * h, h, -h, -2 * h};
    bool same = true;
    for (int k = 0; k < 4; k++) {
        *p = keep + steps[k];
        f[k] = ref_forward(e, params, x, lab, 7, c->training);
        signature(g, e, c->nr_mix, s1);
        same = same && memcmp(s0->v, s1->v, (size_t)nsig * sizeof(int)) == 0;
    }
    *p = keep;
    *fd = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * h);
    return same;
}

static void run_case(void **state) {
    const NetCase *c = *state;
    Graph g;
    net_compile(&g, "pixelcnnpp_cifar10", c->sets, c->nsets);
    DiagList dl;
    diag_init(&dl);
    assert_true(ad_differentiate(&g, true, &dl));
    assert_true(ir_verify(&g, &dl));

    TRng r = {0xC0FFEEULL + (uint64_t)(c - cases)};
    ParamLayout pl = ir_param_layout(&g);
    double *params = malloc((size_t)pl.total * sizeof(double)), *an = malloc((size_t)pl.total * sizeof(double));
    for (int p = 0; p < pl.n; p++) {
        const Node *nd = &g.nodes[pl.p[p].node];
        for (int64_t t = 0; t < pl.p[p].numel; t++)
            params[pl.p[p].offset + t] = nd->a.init_std > 0 ? nd->a.init_std * trng_normal(&r) : nd->a.init_value;
    }
    int64_t nx = (int64_t)N_IMAGES * g.H * g.W * g.C;
    double *x = malloc((size_t)nx * sizeof(double)), *dx = malloc((size_t)nx * sizeof(double));
    for (int64_t t = 0; t < nx; t++) {
        double u = trng_uniform(&r);
        int k = u < 0.1 ? 0 : u < 0.2 ? 255 : (int)(trng_next(&r) % 256);
        x[t] = (double)(float)((k - 127.5f) / 127.5f);
    }
    int32_t labels[N_IMAGES] = {3, 1};
    const int32_t *lab = g.classes ? labels : NULL;

    RefExec *e = ref_new(&g, N_IMAGES);
    ref_init(e, params, x, lab);
    for (int p = 0; p < pl.n; p++) {
        ParamRole role = g.nodes[pl.p[p].node].a.role;
        for (int64_t t = 0; t < pl.p[p].numel; t++) {
            double *v = &params[pl.p[p].offset + t];
            if (role == PR_WN_G) *v *= 1 + 0.05 * trng_normal(&r);
            if (role == PR_BIAS) *v += 0.05 * trng_normal(&r);
        }
    }
    double f0 = ref_forward(e, params, x, lab, 7, c->training);
    assert_true(isfinite(f0));
    ref_backward(e);
    ref_grads(e, an);
    memcpy(dx, ref_value(e, g.dx), (size_t)nx * sizeof(double));
    int64_t nsig = signature_len(&g, c->nr_mix);
    Sig s0 = {calloc((size_t)nsig, sizeof(int)), 0}, s1 = {calloc((size_t)nsig, sizeof(int)), 0};
    signature(&g, e, c->nr_mix, &s0);

    int64_t checked = 0, skipped = 0, failed = 0, retried = 0;
    double worst = 0;
    char worst_at[160] = "";
    /* element k of the sampled list: the input first, then each tensor */
    for (int p = -1; p < pl.n; p++) {
        int64_t numel = p < 0 ? nx : pl.p[p].numel, ns = p < 0 ? SAMPLES_X : SAMPLES_PER_TENSOR;
        double *base = p < 0 ? x : params + pl.p[p].offset;
        const double *grad = p < 0 ? dx : an + pl.p[p].offset;
        for (int64_t q = 0; q < ns && q < numel; q++) {
            int64_t t = numel <= ns ? q : (int64_t)(trng_next(&r) % (uint64_t)numel);
            /* the five-point stencil; when it crosses a kink, once more
             * with a step 8 times smaller (and a tolerance for rounding 8
             * times larger) */
            double fd, h = H_STEP, atol = ATOL;
            bool ok = stencil(&g, e, c, params, x, lab, &base[t], h, &s0, &s1, nsig, &fd);
            if (!ok) {
                h /= 8, atol *= 8;
                ok = stencil(&g, e, c, params, x, lab, &base[t], h, &s0, &s1, nsig, &fd);
                retried++;
            }
            if (!ok) {
                skipped++;
                continue;
            }
            double a = grad[t];
            double ratio = fabs(fd - a) / (atol + RTOL * fmax(fabs(fd), fabs(a)));
            if (ratio > worst) {
                worst = ratio;
                snprintf(worst_at, sizeof worst_at, "%s[%lld]", p < 0 ? "x" : pl.p[p].name, (long long)t);
            }
            checked++;
            if (ratio > 1) {
                if (failed < 8)
                    fprintf(stderr, "  %s[%lld]: finite difference %.10g, autodiff %.10g\n",
                            p < 0 ? "x" : pl.p[p].name, (long long)t, fd, a);
                failed++;
            }
        }
    }
    printf("  %s: loss %.6f nats; %lld elements of x and of %d tensors checked (%lld near a kink with h/8), "
           "%lld skipped at kinks; worst error %.3f of tolerance at %s (h %g, rtol %g, atol %g)\n",
           c->name, f0, (long long)checked, pl.n, (long long)retried, (long long)skipped, worst, worst_at, H_STEP,
           RTOL, ATOL);
    assert_int_equal(failed, 0);
    assert_true(skipped * 10 <= checked);

    ref_free(e);
    free(s0.v), free(s1.v), free(params), free(an), free(x), free(dx);
    ir_param_layout_free(&pl);
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    struct CMUnitTest tests[NCASES];
    memset(tests, 0, sizeof tests);
    for (int i = 0; i < NCASES; i++) {
        tests[i].name = cases[i].name;
        tests[i].test_func = run_case;
        tests[i].initial_state = (void *)&cases[i];
    }
    return _cmocka_run_group_tests("gradcheck_net", tests, NCASES, NULL, NULL);
}
