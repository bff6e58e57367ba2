/*
 * test_kir.c — the kernel IR without a C compiler: the transcendentals'
 * reference versions against libm in double, the builder's folding, the
 * printer's text, kernel deduplication and merging up to integer constants
 * (kir_parameterise), the arena planner (hand-computed
 * placements, and on a whole network: no two buffers live at the same time
 * share a byte, for several batch sizes), the fusion decisions on the
 * PixelCNN++ graph, and the diagnostics for what the lowering does not take.
 */
#include "test_ref_util.h"

#include "kernels/kir.h"
#include "passes/passes.h"

/* ---- math ------------------------------------------------------------------------ */

static void test_exp(void **state) {
    (void)state;
    double worst = 0;
    for (double x = -87.0; x <= 88.0; x += 0.001237) {
        float xf = (float)x;
        double rel = fabs((double)kir_exp_ref(xf) - exp((double)xf)) / exp((double)xf);
        if (rel > worst) worst = rel;
    }
    assert_true(worst <= 2e-7);
    assert_true(worst > 0);   /* it is a polynomial, not libm */
    assert_true(kir_exp_ref(0.0f) == 1.0f);
    assert_true(isnan(kir_exp_ref(NAN)));
    assert_true(kir_exp_ref(-INFINITY) < 1e-37f && kir_exp_ref(-INFINITY) > 0);
    assert_true(kir_exp_ref(1000.0f) > 1e38f);
}

static void test_log(void **state) {
    (void)state;
    double worst = 0;
    for (double e = -44; e <= 38; e += 0.0173) {
        float xf = (float)pow(10.0, e);
        double rel = fabs((double)kir_log_ref(xf) - log((double)xf)) / fmax(fabs(log((double)xf)), 1e-30);
        if (fabs(log((double)xf)) > 1e-3 && rel > worst) worst = rel;
    }
    assert_true(worst <= 3e-7);
    for (float x = 0.5f; x < 2.0f; x += 0.0007f)   /* near 1: absolute error */
        assert_true(fabs((double)kir_log_ref(x) - log((double)x)) <= 1.2e-7 * fmax(1.0, fabs(log((double)x))));
    assert_true(kir_log_ref(0.0f) == -INFINITY);
    assert_true(isnan(kir_log_ref(-1.0f)));
    assert_true(kir_log_ref(INFINITY) == INFINITY);
    assert_true(kir_log_ref(1.0f) == 0.0f);
    float sub = 1e-42f;   /* subnormal input */
    assert_true(fabs(kir_log_ref(sub) - log((double)sub)) / fabs(log((double)sub)) < 3e-7);
}

static void test_log1p(void **state) {
    (void)state;
    double worst = 0;
    for (double x = -0.9; x < 1000; x = x < 0 ? x + 0.0011 : x * 1.01 + 1e-7) {
        float xf = (float)x;
        double ref = log1p((double)xf);
        if (ref == 0) continue;
        double rel = fabs((double)kir_log1p_ref(xf) - ref) / fabs(ref);
        if (rel > worst) worst = rel;
    }
    assert_true(worst <= 4e-7);
    assert_true(kir_log1p_ref(1e-30f) == 1e-30f);
    assert_true(kir_log1p_ref(INFINITY) == INFINITY);
}

/* ---- builder, printer, dedup ----------------------------------------------------------- */

/* y[p*C + c] = a[p*C + c] + b[c] over n*4 pixels, 8 channels. */
static int build_add(KirProgram *p, float k) {
    KirFunc *fn = kir_func_begin(p, "biasadd");
    int y = kir_func_param(p, fn, "y", KT_F32, true);
    int a = kir_func_param(p, fn, "a", KT_F32, false);
    int b = kir_func_param(p, fn, "b", KT_F32, false);
    KirStmt *lp = kir_loop(p, fn, NULL, kir_const_i64(p, 0), kir_op2(p, KX_MUL, kir_batch(p), kir_const_i64(p, 4)),
                           KIR_LOOP_PARALLEL);
    KirStmt *lc = kir_loop(p, fn, lp, kir_const_i64(p, 0), kir_const_i64(p, 8), 0);
    KirExpr *pv = kir_var(p, kir_loop_var(lp)), *cv = kir_var(p, kir_loop_var(lc));
    KirExpr *idx = kir_op2(p, KX_ADD, kir_op2(p, KX_MUL, pv, kir_const_i64(p, 8)), kir_op2(p, KX_ADD, cv, kir_const_i64(p, 0)));
    KirExpr *v = kir_op2(p, KX_ADD, kir_load(p, fn, a, idx), kir_op2(p, KX_MUL, kir_load(p, fn, b, cv), kir_const_f32(p, k)));
    kir_store(p, fn, lc, y, idx, v);
    return kir_func_finish(p, fn, "a test kernel");
}

static char *print_to_string(const KirProgram *p, const KirFunc *fn) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (fn) kir_print_func(p, fn, f);
    else kir_print(p, f);
    fclose(f);
    return buf;
}

static void test_print_and_dedup(void **state) {
    (void)state;
    KirProgram *p = kir_program_new("t");
    int f1 = build_add(p, 0.5f);
    int f2 = build_add(p, 0.5f);
    int f3 = build_add(p, 0.25f);
    assert_int_equal(f1, f2);          /* identical body: one function */
    assert_int_not_equal(f1, f3);      /* another constant: another function */
    assert_int_equal(p->nfuncs, 2);
    char *s = print_to_string(p, &p->funcs[f1]);
    const char *want =
        "# a test kernel\n"
        "func k0_biasadd(n, seed, out f32 y, f32 a, f32 b) {\n"
        "  for v0 in [0, (n * 4)) parallel {\n"
        "    for v1 in [0, 8) {\n"
        "      y[((v0 * 8) + v1)] = (a[((v0 * 8) + v1)] + (b[v1] * 0.5f));\n"
        "    }\n"
        "  }\n"
        "}\n";
    if (strcmp(s, want) != 0) fail_msg("printed:\n%s\nexpected:\n%s", s, want);
    free(s);
    /* folding: (x + 3) - 5 -> x - 2; 2 * 3 -> 6; x * 1 -> x */
    KirExpr *x = kir_var(p, 0);
    KirExpr *e = kir_op2(p, KX_SUB, kir_op2(p, KX_ADD, x, kir_const_i64(p, 3)), kir_const_i64(p, 5));
    assert_int_equal(e->k, KX_ADD);
    assert_true(e->x[0] == x && e->x[1]->k == KX_CONST && e->x[1]->i == -2);
    e = kir_op2(p, KX_MUL, kir_const_i64(p, 2), kir_const_i64(p, 3));
    assert_true(e->k == KX_CONST && e->i == 6);
    assert_true(kir_op2(p, KX_MUL, x, kir_const_i64(p, 1)) == x);
    assert_int_equal(kir_op2(p, KX_LT, x, x)->t, KT_BOOL);
    kir_free(p);
}

/* ---- merging kernels equal up to integer constants (kir_parameterise) --------------------- */

/* y[v0*C + v1] = a[v0*C + v1] + uniform(stream, v0 / R, v0 * C + v1) (+ a[v1 / D] when D > 0)
 * over v0 in [0, n*R), v1 in [0, C). */
static int build_rows(KirProgram *p, int64_t R, int64_t C, int stream, int64_t D) {
    KirFunc *fn = kir_func_begin(p, "rows");
    int y = kir_func_param(p, fn, "y", KT_F32, true);
    int a = kir_func_param(p, fn, "a", KT_F32, false);
    KirStmt *l0 = kir_loop(p, fn, NULL, kir_const_i64(p, 0), kir_op2(p, KX_MUL, kir_batch(p), kir_const_i64(p, R)),
                           KIR_LOOP_PARALLEL);
    KirStmt *l1 = kir_loop(p, fn, l0, kir_const_i64(p, 0), kir_const_i64(p, C), 0);
    KirExpr *v0 = kir_var(p, kir_loop_var(l0)), *v1 = kir_var(p, kir_loop_var(l1));
    KirExpr *idx = kir_op2(p, KX_ADD, kir_op2(p, KX_MUL, v0, kir_const_i64(p, C)), v1);
    KirExpr *v = kir_op2(p, KX_ADD, kir_load(p, fn, a, idx),
                         kir_uniform(p, stream, kir_op2(p, KX_DIV, v0, kir_const_i64(p, R)), idx));
    if (D > 0) v = kir_op2(p, KX_ADD, v, kir_load(p, fn, a, kir_op2(p, KX_DIV, v1, kir_const_i64(p, D))));
    kir_store(p, fn, l1, y, idx, v);
    return kir_func_finish(p, fn, "rows");
}

static void test_parameterise(void **state) {
    (void)state;
    KirProgram *p = kir_program_new("t");
    int ya = kir_buf(p, "y", KB_ARENA, KT_F32, 0, 0, 0, 4096, -1), xa = kir_buf(p, "x", KB_X, KT_F32, 0, 0, 0, 4096, -1);
    int f[6] = {
        build_rows(p, 4, 8, 1, 0),
        build_rows(p, 2, 8, 3, 0),    /* R and the stream differ: merged with f[0] */
        build_rows(p, 4, 16, 1, 0),   /* the inner trip count differs: kept apart */
        build_rows(p, 4, 8, 1, 3),
        build_rows(p, 4, 8, 1, 5),    /* a divisor of the inner variable differs: kept apart */
        build_rows(p, 6, 8, 1, 3),    /* R differs from f[3]: merged with it */
    };
    assert_int_equal(p->nfuncs, 6);
    for (int i = 0; i < 6; i++) kir_step(p, KE_FORWARD, f[i], (int[]){ya, xa}, 2, kir_always());
    kir_step(p, KE_FORWARD, f[1], (int[]){ya, xa}, 2, kir_always());
    kir_parameterise(p);
    assert_int_equal(p->nfuncs_exact, 6);
    assert_int_equal(p->nfuncs, 4);
    const KirStep *st = p->entry[KE_FORWARD].steps;
    int m = st[0].func;
    assert_int_equal(st[1].func, m);
    assert_int_equal(st[6].func, m);
    assert_int_equal(p->funcs[m].nints, 2);   /* R (the bound and the divisor share it) and the stream */
    assert_int_equal(p->funcs[m].ncalls, 3);
    int64_t want[3][2] = {{4, 1}, {2, 3}, {2, 3}};
    for (int k = 0; k < 3; k++) {
        const KirStep *s = &st[k == 2 ? 6 : k];
        assert_int_equal(s->ints[0], want[k][0]);
        assert_int_equal(s->ints[1], want[k][1]);
    }
    char *s = print_to_string(p, &p->funcs[m]);
    const char *body =
        "func k0_rows(n, seed, out f32 y, f32 a, i64 a0, i64 a1) {\n"
        "  for v0 in [0, (n * a0)) parallel {\n"
        "    for v1 in [0, 8) {\n"
        "      y[((v0 * 8) + v1)] = (a[((v0 * 8) + v1)] + uniform(a1, (v0 / a0), ((v0 * 8) + v1)));\n"
        "    }\n"
        "  }\n"
        "}\n";
    if (!strstr(s, body)) fail_msg("printed:\n%s\nexpected to contain:\n%s", s, body);
    free(s);
    assert_int_equal(st[2].func, 1);
    assert_int_equal(p->funcs[1].nints, 0);
    assert_null(st[2].ints);
    assert_int_not_equal(st[3].func, st[4].func);
    assert_int_equal(st[5].func, st[3].func);
    assert_int_equal(p->funcs[st[3].func].nints, 1);
    assert_int_equal(st[5].ints[0], 6);
    s = print_to_string(p, &p->funcs[st[3].func]);
    assert_non_null(strstr(s, "(v1 / 3)"));   /* the divisor stayed literal */
    free(s);
    /* a second run merges nothing more */
    kir_parameterise(p);
    assert_int_equal(p->nfuncs, 4);
    assert_int_equal(p->nfuncs_exact, 6);
    kir_free(p);
}

/* ---- the arena planner ------------------------------------------------------------------ */

static int one_buf_kernel(KirProgram *p, int nbufs) {
    KirFunc *fn = kir_func_begin(p, "touch");
    for (int i = 0; i < nbufs; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "p%d", i);
        kir_func_param(p, fn, nm, KT_F32, true);
    }
    KirStmt *l = kir_loop(p, fn, NULL, kir_const_i64(p, 0), kir_const_i64(p, 1), 0);
    for (int i = 0; i < nbufs; i++) kir_store(p, fn, l, i, kir_const_i64(p, 0), kir_const_f32(p, 0));
    return kir_func_finish(p, fn, NULL);
}

static void test_plan_by_hand(void **state) {
    (void)state;
    KirProgram *p = kir_program_new("t");
    /* per-image buffers A (steps 0-1), B (1-2), C (2-3); constant D (0-3) */
    int A = kir_buf(p, "A", KB_ARENA, KT_F32, 0, 0, 0, 1000, -1);
    int B = kir_buf(p, "B", KB_ARENA, KT_F32, 0, 0, 0, 500, -1);
    int C = kir_buf(p, "C", KB_ARENA, KT_F32, 0, 0, 0, 900, -1);
    int D = kir_buf(p, "D", KB_ARENA, KT_F32, 0, 0, 100, 0, -1);
    int k1 = one_buf_kernel(p, 1), k2 = one_buf_kernel(p, 2);
    int s0[2] = {A, D}, s1[2] = {A, B}, s2[2] = {B, C}, s3[2] = {C, D};
    kir_step(p, KE_FORWARD, k2, s0, 2, kir_always());
    kir_step(p, KE_FORWARD, k2, s1, 2, kir_always());
    kir_step(p, KE_FORWARD, k2, s2, 2, kir_always());
    kir_step(p, KE_BACKWARD, k2, s3, 2, kir_always());
    (void)k1;
    plan_arena(p, true);
    /* sizes round to 64: A 1024, B 512, C 960; A and C may share (A dies at step 1, C is born at 2) */
    assert_int_equal(p->bufs[D].off0, 0);
    assert_int_equal(p->arena0, 128);   /* D's 100 bytes, rounded */
    assert_int_equal(p->bufs[A].off0, 128);
    assert_int_equal(p->bufs[A].off_n, 0);
    assert_int_equal(p->bufs[C].off_n, 0);   /* reuses A's space */
    assert_int_equal(p->bufs[B].off_n, 1024);
    assert_int_equal(p->arena_n, 1536);
    assert_int_equal(p->naive_n, 1024 + 512 + 960);
    assert_int_equal(kir_arena_bytes(p, 3), 128 + 3 * 1536);
    plan_arena(p, false);
    assert_int_equal(p->arena_n, 1024 + 512 + 960);
    kir_free(p);
}

/* ---- the network ---------------------------------------------------------------------------- */

typedef struct Net {
    Graph g;
    DiagList dl;   /* owns the spec text the SrcLocs point into */
    KirProgram *p;
} Net;

static void net_build(Net *net, const char *model, const char *const *sets, int nsets, bool no_fusion) {
    diag_init(&net->dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s.yaml", tu_source_dir(), model);
    if (spec_compile(path, sets, nsets, &net->g, &net->dl) != 0) {
        diag_print(&net->dl, stderr, false);
        fail_msg("cannot compile %s", path);
    }
    assert_true(ad_differentiate(&net->g, false, &net->dl));
    KirOptions o = {0};
    o.no_fusion = no_fusion;
    net->p = kir_lower(&net->g, &o, &net->dl);
    if (!net->p) {
        diag_print(&net->dl, stderr, false);
        fail_msg("kir_lower failed");
    }
}

static void net_free(Net *net) {
    kir_free(net->p);
    ir_graph_free(&net->g);
    diag_free(&net->dl);
}

static const char *small_sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2", "height=8",
                                   "width=8",     "channels=3",    "classes=4", "dropout=0.5"};

/* No two arena buffers that are live at the same step overlap, for several n. */
static void check_plan(const KirProgram *p) {
    int nb = p->nbufs;
    int *first = malloc((size_t)nb * sizeof(int)), *last = malloc((size_t)nb * sizeof(int));
    for (int seq = 0; seq < 2; seq++) {
        KirEntryKind es[2] = {KE_FORWARD, KE_BACKWARD};
        int ne = seq == 0 ? 2 : 1;
        if (seq == 1) es[0] = KE_INIT;
        for (int b = 0; b < nb; b++) first[b] = last[b] = -1;
        int t = 0;
        for (int e = 0; e < ne; e++)
            for (int s = 0; s < p->entry[es[e]].nsteps; s++, t++)
                for (int a = 0; a < p->entry[es[e]].steps[s].nargs; a++) {
                    int b = p->entry[es[e]].steps[s].args[a];
                    if (first[b] < 0) first[b] = t;
                    last[b] = t;
                }
        if (seq == 0)
            for (int k = 0; k < 3; k++) {
                int b = k == 0 ? p->seed_buf : k == 1 ? p->out_fallback : p->nll_fallback;
                first[b] = 0, last[b] = t - 1;
            }
        for (int n = 1; n <= 5; n += 2) {
            int64_t total = (int64_t)kir_arena_bytes(p, n);
            for (int a = 0; a < nb; a++) {
                const KirBuf *x = &p->bufs[a];
                if (x->base != KB_ARENA || first[a] < 0) continue;
                int64_t xo = x->off0 + x->off_n * n, xs = x->size0 + x->size_n * n;
                assert_true(xo % 64 == 0);
                if (xo + xs > total) fail_msg("%s ends at %lld past the arena (%lld)", x->name, (long long)(xo + xs), (long long)total);
                for (int b = a + 1; b < nb; b++) {
                    const KirBuf *y = &p->bufs[b];
                    if (y->base != KB_ARENA || first[b] < 0) continue;
                    if (last[a] < first[b] || last[b] < first[a]) continue;
                    int64_t yo = y->off0 + y->off_n * n, ys = y->size0 + y->size_n * n;
                    if (xo < yo + ys && yo < xo + xs)
                        fail_msg("n=%d: '%s' [%lld,+%lld) and '%s' [%lld,+%lld) are live together and overlap", n,
                                 x->name, (long long)xo, (long long)xs, y->name, (long long)yo, (long long)ys);
                }
            }
        }
    }
    free(first);
    free(last);
}

static void test_network_plan(void **state) {
    (void)state;
    Net net;
    net_build(&net, "pixelcnnpp_cifar10", small_sets, 8, false);
    check_plan(net.p);
    /* kernels equal up to integer constants were merged; every call passes its integers */
    assert_true(net.p->nfuncs < net.p->nfuncs_exact);
    int merged = 0;
    for (int i = 0; i < net.p->nfuncs; i++) merged += net.p->funcs[i].nints > 0;
    assert_true(merged > 0);
    for (int e = 0; e < KE_COUNT; e++)
        for (int k = 0; k < net.p->entry[e].nsteps; k++) {
            const KirStep *st = &net.p->entry[e].steps[k];
            assert_true(net.p->funcs[st->func].nints == 0 || st->ints != NULL);
        }
    assert_true(kir_arena_bytes(net.p, 16) * 4 < kir_arena_naive_bytes(net.p, 16));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    kir_arena_report(net.p, 16, f);
    fclose(f);
    assert_non_null(strstr(buf, "arena at batch 16:"));
    free(buf);
    net_free(&net);
}

/* The fusions the design asks for, on the lowered PixelCNN++ graph. */
static void test_fusion(void **state) {
    (void)state;
    Net net;
    net_build(&net, "pixelcnnpp_cifar10", small_sets, 8, false);
    const Graph *g = &net.g;
    FusePlan fp;
    fuse_plan(g, false, &fp);
    int gates = 0;
    for (int i = 0; i < g->nfwd; i++) {
        const Node *nd = &g->nodes[i];
        /* concat_elu and dropout are folded into the packs of the convs that read them */
        if (nd->op == IR_CONCAT_ELU || nd->op == IR_DROPOUT) assert_int_equal(fp.kind[i], FK_INLINE);
        if (nd->op == IR_GATE) {
            /* class bias + gate + residual add: one pass whose output is the add */
            assert_int_equal(fp.kind[i], FK_INLINE);
            int consumer = -1;
            for (int j = i + 1; j < g->nfwd; j++)
                for (int k = 0; k < g->nodes[j].nin; k++)
                    if (g->nodes[j].in[k] == i) consumer = j;
            assert_true(consumer >= 0 && g->nodes[consumer].op == IR_ADD);
            /* the sum is stored, or computed straight into the one stored value that reads it */
            int reader = -1, nreaders = 0;
            for (int j = consumer + 1; j < g->n; j++)
                for (int k = 0; k < g->nodes[j].nin; k++)
                    if (g->nodes[j].in[k] == consumer) reader = j, nreaders++;
            assert_true(fp.kind[consumer] == FK_MAT || (nreaders == 1 && fp.kind[reader] == FK_MAT));
            assert_int_equal(fp.kind[g->nodes[i].in[0]], FK_INLINE);   /* the class bias */
            gates++;
        }
    }
    assert_true(gates > 0);
    fuse_plan_free(&fp);
    /* every conv2d reads its input through one pack or directly: no forward
     * kernel computes a concat_elu on its own, except to apply a dropout
     * once before a kh x kw pack. (A Winograd conv2d is six KS_CONVs between
     * three packs: the input, the weight and the output transforms.) */
    const KirEntry *fw = &net.p->entry[KE_FORWARD];
    int packs = 0, gemms = 0;
    for (int s = 0; s < fw->nsteps; s++) {
        const KirFunc *fn = &net.p->funcs[fw->steps[s].func];
        if (strstr(fn->name, "_pack")) packs++;
        if (strstr(fn->name, "_gemm") || strstr(fn->name, "_conv")) gemms++;
        /* (a dropout is computed once before the pack that repeats it) */
        if (strstr(fn->name, "_ew") && strstr(fn->comment, "concat_elu")) assert_non_null(strstr(fn->comment, "dropout"));
    }
    assert_true(gemms > 0 && packs > 0 && packs <= 2 * gemms);
    /* deduplication: fewer functions than steps */
    int steps = 0;
    for (int e = 0; e < KE_COUNT; e++) steps += net.p->entry[e].nsteps;
    assert_true(net.p->nfuncs < steps);
    /* the unfused program stores every op and needs more arena */
    Net raw;
    net_build(&raw, "pixelcnnpp_cifar10", small_sets, 8, true);
    assert_true(kir_arena_naive_bytes(raw.p, 4) > kir_arena_naive_bytes(net.p, 4));
    assert_true(raw.p->entry[KE_FORWARD].nsteps > net.p->entry[KE_FORWARD].nsteps);
    check_plan(raw.p);
    net_free(&raw);
    net_free(&net);
}

/* The printed program is stable text: the same twice, and it names what it computes. */
static void test_print_program(void **state) {
    (void)state;
    Net a, b;
    net_build(&a, "pixelcnnpp_cifar10", small_sets, 8, false);
    net_build(&b, "pixelcnnpp_cifar10", small_sets, 8, false);
    char *sa = print_to_string(a.p, NULL), *sb = print_to_string(b.p, NULL);
    assert_string_equal(sa, sb);
    assert_non_null(strstr(sa, "entry forward returns"));
    assert_non_null(strstr(sa, "entry backward {"));
    assert_non_null(strstr(sa, "up.0.u.0.conv1"));
    assert_non_null(strstr(sa, "pixelcnnpp_cifar10.yaml:"));
    assert_non_null(strstr(sa, " if training"));
    assert_non_null(strstr(sa, "gemm A^T("));
    free(sa);
    free(sb);
    net_free(&a);
    net_free(&b);
}

/* What the lowering does not take is a diagnostic at the YAML, not a crash:
 * here the gradient with respect to the image (the kernels compute parameter
 * gradients only). */
static void test_unsupported(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/pixelcnnpp_cifar10.yaml", tu_source_dir());
    if (spec_compile(path, small_sets, 8, &g, &dl) != 0) {
        diag_print(&dl, stderr, false);
        fail_msg("cannot compile %s", path);
    }
    assert_true(ad_differentiate(&g, true, &dl));
    KirProgram *p = kir_lower(&g, NULL, &dl);
    assert_null(p);
    assert_true(dl.nerrors == 1);
    assert_non_null(strstr(dl.items[dl.n - 1].msg, "with respect to the image"));
    assert_true(dl.items[dl.n - 1].loc.line > 0);
    ir_graph_free(&g);
    diag_free(&dl);
    /* a model name that is not a C identifier */
    diag_init(&dl);
    assert_int_equal(spec_compile(path, small_sets, 8, &g, &dl), 0);
    assert_true(ad_differentiate(&g, false, &dl));
    KirOptions o = {0};
    o.name = "my-model";
    assert_null(kir_lower(&g, &o, &dl));
    assert_non_null(strstr(dl.items[dl.n - 1].msg, "my-model"));
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_log1p),
        cmocka_unit_test(test_print_and_dedup),
        cmocka_unit_test(test_parameterise),
        cmocka_unit_test(test_plan_by_hand),
        cmocka_unit_test(test_network_plan),
        cmocka_unit_test(test_fusion),
        cmocka_unit_test(test_print_program),
        cmocka_unit_test(test_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
