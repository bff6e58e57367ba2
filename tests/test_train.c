/*
 * test_train.c — the training runtime (runtime/train.h) on the reference
 * backend with a tiny spec (models/pixelcnnpp_cifar10.yaml at 8x8x1, R=1,
 * F=4, K=2, dropout 0.5) and generated 8x8 IDX data:
 *   - parameter init: normal draws with the spec's std, g = 1, b = 0,
 *     per-tensor streams independent of the table;
 *   - determinism: the same seed gives byte-identical parameters, EMA and
 *     Adam moments; another seed does not;
 *   - exact resume: 2N steps straight == N steps, stop, resume N more
 *     (parameters, EMA, Adam state byte for byte; across epoch ends);
 *   - one step recomputed by hand from checkpoint N (its batch, dropout
 *     seed, Adam with eps inside the root and decayed lr, the warmed-up
 *     EMA, all in double) against checkpoint N+1;
 *   - evaluation counts every test image once, whatever the batch;
 *   - a NaN gradient or loss stops training naming the step and the
 *     parameter, leaving the last checkpoint untouched;
 *   - data / run-directory mismatches are errors before training;
 *   - the sampler: raster order, feedback of each drawn pixel, determinism,
 *     independence from the batch split.
 */
#include "test_train_util.h"

#include <math.h>
#include <unistd.h>

#include "autodiff/autodiff.h"
#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/params_init.h"
#include "runtime/sample.h"
#include "runtime/train.h"
#include "spec/spec.h"

/* ---- the tiny model ----------------------------------------------------------- */

typedef struct Tiny {
    Graph g;
    SpecInfo info;
    pxc_model *m;
} Tiny;

/* tt_sets with the extra "k=v" overrides replacing or adding to them. */
static void tiny_new_sets(Tiny *t, const char *const *extra, int nextra, int max_batch) {
    const char *sets[16];
    int n = 0;
    for (int i = 0; i < TT_NSETS; i++) {
        size_t kl = strcspn(tt_sets[i], "=");
        bool replaced = false;
        for (int j = 0; j < nextra; j++) replaced |= !strncmp(extra[j], tt_sets[i], kl + 1);
        if (!replaced) sets[n++] = tt_sets[i];
    }
    for (int i = 0; i < nextra; i++) sets[n++] = extra[i];
    char path[1024];
    snprintf(path, sizeof path, "%s/models/pixelcnnpp_cifar10.yaml", tu_source_dir());
    size_t len;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    DiagList dl;
    diag_init(&dl);
    memset(&t->info, 0, sizeof t->info);
    if (spec_compile_ex(path, text, len, sets, n, &t->g, &t->info, &dl)) {
        diag_print(&dl, stderr, false);
        fail_msg("the tiny spec does not compile");
    }
    diag_free(&dl);
    free(text);
    char err[512];
    t->m = rt_build_model(&t->g, RT_BACKEND_REF, max_batch, NULL, err, sizeof err);
    if (!t->m) fail_msg("%s", err);
}
static void tiny_new(Tiny *t) { tiny_new_sets(t, NULL, 0, 16); }
static void tiny_free(Tiny *t) {
    t->m->release(t->m);
    ir_graph_free(&t->g);
    spec_info_free(&t->info);
}

static RtDataset train_ds, test_ds;

static int setup(void **state) {
    (void)state;
    if (tt_setup("test_train")) return -1;
    /* 40 training images: 2 steps of 16 per epoch (8 left over), so a few
     * steps cross epoch boundaries. */
    tt_make_data(tt_path("data"), 40, 21, 1);
    char err[512];
    if (rt_dataset_load(tt_path("data"), RT_SPLIT_TRAIN, &train_ds, err, sizeof err)) return -1;
    if (rt_dataset_load(tt_path("data"), RT_SPLIT_TEST, &test_ds, err, sizeof err)) return -1;
    return 0;
}
static int teardown(void **state) {
    (void)state;
    rt_dataset_free(&train_ds);
    rt_dataset_free(&test_ds);
    return tt_teardown();
}

static RtTrainConfig config(const Tiny *t, const char *dir, int64_t steps) {
    RtTrainConfig c;
    memset(&c, 0, sizeof c);
    c.run_dir = dir;
    c.steps = steps;
    c.batch = 16;
    c.has_seed = true;
    c.seed = 7;
    c.eval_every = -1;
    c.ckpt_every = 1;
    c.keep = 1000;
    c.spec_name = t->info.name;
    c.spec_resolved = t->info.resolved;
    c.spec_hash = t->info.hash;
    c.spec_text = "tiny";
    c.progress = RT_PROGRESS_QUIET;
    return c;
}

static void train_ok(const Tiny *t, const RtTrainConfig *c, RtTrainResult *r) {
    char err[2048];
    RtTrainResult rr;
    if (rt_train(t->m, &t->g, &train_ds, &test_ds, c, r ? r : &rr, err, sizeof err)) fail_msg("%s", err);
}

static void read_ckpt(const Tiny *t, const char *dir, int64_t step, RtCheckpoint *ck) {
    char err[1024];
    char *p = rt_ckpt_path(dir, step);
    if (rt_ckpt_read(p, t->m->params, t->m->nparam_tensors, t->m->nparams, ck, err, sizeof err)) fail_msg("%s", err);
    free(p);
}

static void assert_same_state(const Tiny *t, const RtCheckpoint *a, const RtCheckpoint *b) {
    size_t n = (size_t)t->m->nparams * sizeof(float);
    assert_memory_equal(a->params, b->params, n);
    assert_memory_equal(a->ema, b->ema, n);
    assert_memory_equal(a->adam_m, b->adam_m, n);
    assert_memory_equal(a->adam_v, b->adam_v, n);
    assert_int_equal(a->step, b->step);
    assert_int_equal(a->data_epoch, b->data_epoch);
    assert_int_equal(a->data_pos, b->data_pos);
    assert_true(a->data_seed == b->data_seed);
    assert_int_equal(a->images_seen, b->images_seen);
}

/* ---- parameter init ------------------------------------------------------------- */

static void test_randn(void **state) {
    (void)state;
    uint64_t s = 99;
    double m1 = 0, m2 = 0, m4 = 0;
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        double z = rt_randn(&s);
        m1 += z, m2 += z * z, m4 += z * z * z * z;
    }
    m1 /= N, m2 /= N, m4 /= N;
    /* standard errors: mean 1/sqrt(N) = 0.0022, var sqrt(2/N) = 0.0032, 4th moment sqrt(96/N) = 0.022 */
    assert_true(fabs(m1) < 0.01);
    assert_true(fabs(m2 - 1) < 0.015);
    assert_true(fabs(m4 - 3) < 0.1);
}

static void test_params_init(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    const pxc_model *m = t.m;
    float *a = malloc((size_t)m->nparams * 4), *b = malloc((size_t)m->nparams * 4);
    char err[512];
    assert_int_equal(rt_params_init(&t.g, m->params, m->nparam_tensors, 5, a, err, sizeof err), 0);
    assert_int_equal(rt_params_init(&t.g, m->params, m->nparam_tensors, 5, b, err, sizeof err), 0);
    assert_memory_equal(a, b, (size_t)m->nparams * 4);
    int nv = 0;
    for (int i = 0; i < m->nparam_tensors; i++) {
        const pxc_tensor *p = &m->params[i];
        const char *suffix = strrchr(p->name, '.');
        const float *x = a + p->offset;
        if (!strcmp(suffix, ".g") || !strcmp(suffix, ".b")) {
            float want = suffix[1] == 'g' ? 1.0f : 0.0f;
            for (int64_t k = 0; k < p->numel; k++) assert_true(x[k] == want);
        } else {
            assert_string_equal(suffix, ".v");
            double s2 = 0, s1 = 0;
            for (int64_t k = 0; k < p->numel; k++) s1 += x[k], s2 += (double)x[k] * x[k];
            double sd = sqrt(s2 / (double)p->numel);
            if (p->numel >= 256) {  /* std within 4 standard errors of 0.05 */
                assert_true(fabs(sd - 0.05) < 4 * 0.05 / sqrt(2.0 * (double)p->numel));
                assert_true(fabs(s1 / (double)p->numel) < 4 * 0.05 / sqrt((double)p->numel));
                nv++;
            }
        }
    }
    assert_true(nv >= 10);
    /* another seed gives other values */
    assert_int_equal(rt_params_init(&t.g, m->params, m->nparam_tensors, 6, b, err, sizeof err), 0);
    assert_true(memcmp(a, b, (size_t)m->nparams * 4) != 0);
    /* a tensor's draws do not depend on the rest of the table or its offset */
    const pxc_tensor *p = &m->params[m->nparam_tensors - 3];  /* out.v */
    pxc_tensor one = *p;
    one.offset = 0;
    float *c = calloc((size_t)one.numel, 4);
    assert_int_equal(rt_params_init(&t.g, &one, 1, 5, c, err, sizeof err), 0);
    assert_memory_equal(c, a + p->offset, (size_t)one.numel * 4);
    /* a name the spec lacks */
    one.name = "out.w";
    assert_int_equal(rt_params_init(&t.g, &one, 1, 5, c, err, sizeof err), -1);
    assert_non_null(strstr(err, "'out.w'"));
    free(c);
    free(a);
    free(b);
    tiny_free(&t);
}

/* ---- determinism and exact resume -------------------------------------------------- */

static void test_determinism(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    RtTrainConfig c = config(&t, tt_path("det_a"), 5);
    train_ok(&t, &c, NULL);
    c.run_dir = tt_path("det_b");
    train_ok(&t, &c, NULL);
    c.run_dir = tt_path("det_c");
    c.seed = 8;
    train_ok(&t, &c, NULL);
    RtCheckpoint a, b, d;
    read_ckpt(&t, tt_path("det_a"), 5, &a);
    read_ckpt(&t, tt_path("det_b"), 5, &b);
    read_ckpt(&t, tt_path("det_c"), 5, &d);
    assert_same_state(&t, &a, &b);
    assert_true(memcmp(a.params, d.params, (size_t)t.m->nparams * 4) != 0);
    /* training moved the parameters away from the init (checkpoint 1 vs 5) */
    RtCheckpoint one;
    read_ckpt(&t, tt_path("det_a"), 1, &one);
    assert_true(memcmp(a.params, one.params, (size_t)t.m->nparams * 4) != 0);
    assert_true(memcmp(a.ema, a.params, (size_t)t.m->nparams * 4) != 0);
    rt_ckpt_free(&one);
    rt_ckpt_free(&a);
    rt_ckpt_free(&b);
    rt_ckpt_free(&d);
    tiny_free(&t);
}

static void test_resume_exact(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    RtTrainConfig c = config(&t, tt_path("straight"), 8);
    RtTrainResult r;
    train_ok(&t, &c, &r);
    assert_int_equal(r.step, 8);
    assert_int_equal(r.steps_run, 8);
    c.run_dir = tt_path("resumed");
    c.steps = 4;
    train_ok(&t, &c, &r);
    assert_int_equal(r.step, 4);
    c.steps = 8;
    c.resume = true;
    c.has_seed = false;  /* the checkpoint's seed */
    c.batch = 0;         /* and batch */
    train_ok(&t, &c, &r);
    assert_int_equal(r.step, 8);
    assert_int_equal(r.steps_run, 4);
    for (int64_t s = 4; s <= 8; s++) {
        RtCheckpoint a, b;
        read_ckpt(&t, tt_path("straight"), s, &a);
        read_ckpt(&t, tt_path("resumed"), s, &b);
        assert_same_state(&t, &a, &b);
        /* 2 steps per epoch, 8 images left over: after step 8 the 4th epoch's
         * two batches are done and the next call starts the 5th */
        if (s == 8) assert_int_equal(a.data_epoch * 100 + a.data_pos, 3 * 100 + 32);
        rt_ckpt_free(&a);
        rt_ckpt_free(&b);
    }
    /* resuming a finished run does nothing and keeps its checkpoint */
    train_ok(&t, &c, &r);
    assert_int_equal(r.steps_run, 0);
    assert_int_equal(r.step, 8);
    tiny_free(&t);
}

/* Step N+1 recomputed from checkpoint N with the recipe's formulas in double. */
static void test_one_step_by_hand(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    const pxc_model *m = t.m;
    RtTrainConfig c = config(&t, tt_path("hand"), 3);
    c.adam.lr = 2e-3;         /* not the default, to see it used */
    c.adam.lr_decay = 0.99;   /* visible over 3 steps */
    train_ok(&t, &c, NULL);
    RtCheckpoint a, b;
    read_ckpt(&t, tt_path("hand"), 2, &a);
    read_ckpt(&t, tt_path("hand"), 3, &b);
    /* the batch of step 3: the batcher state saved at step 2 */
    RtBatcher bt;
    rt_batcher_init(&bt, a.data_seed, a.data_n);
    bt.epoch = a.data_epoch, bt.pos = a.data_pos;
    int64_t idx[16];
    assert_int_equal(rt_batcher_next(&bt, 16, idx), 16);
    rt_batcher_free(&bt);
    float *x = malloc(16 * 64 * sizeof(float));
    for (int i = 0; i < 16; i++) rt_pixels_to_float(train_ds.pixels + idx[i] * 64, 64, x + i * 64);
    float *grad = malloc((size_t)m->nparams * 4);
    double loss = m->forward(a.params, x, NULL, 16, rt_step_seed(7, 3), 1, NULL, NULL, NULL);
    assert_true(isfinite(loss));
    m->backward(a.params, x, NULL, 16, NULL, grad);
    const double b1 = 0.95, b2 = 0.9995, eps = 1e-8, lr = 2e-3 * 0.99 * 0.99;  /* lr_t = lr decay^(t-1) */
    const double d = fmin(0.9995, (1.0 + 3) / (10.0 + 3));
    double worst_p = 0, worst_e = 0, worst_m = 0, worst_v = 0;
    for (int64_t i = 0; i < m->nparams; i++) {
        double g = grad[i];
        double mi = b1 * a.adam_m[i] + (1 - b1) * g;
        double vi = b2 * a.adam_v[i] + (1 - b2) * g * g;
        double p = a.params[i] - lr * (mi / (1 - pow(b1, 3))) / sqrt(vi / (1 - pow(b2, 3)) + eps);
        double e = d * a.ema[i] + (1 - d) * p;
        /* relative to the terms summed, so cancellation does not inflate it */
        worst_m = fmax(worst_m, fabs(mi - b.adam_m[i]) / (b1 * fabs(a.adam_m[i]) + (1 - b1) * fabs(g) + 1e-30));
        worst_v = fmax(worst_v, fabs(vi - b.adam_v[i]) / (fabs(vi) + 1e-30));
        worst_p = fmax(worst_p, fabs(p - b.params[i]));
        worst_e = fmax(worst_e, fabs(e - b.ema[i]));
    }
    /* float32 arithmetic vs double: relative 1e-5 on m; 1e-4 on v, because
     * runtime/optim.c forms 1 - beta2 in float (5.0002e-4 for 5e-4, 4.7e-5
     * relative); the parameter step is lr·O(1) = 2e-3, so 1e-6 absolute is
     * 0.05% of it */
    if (worst_m > 1e-5 || worst_v > 1e-4 || worst_p > 1e-6 || worst_e > 1e-6)
        fail_msg("step 3 by hand: m %g v %g params %g ema %g", worst_m, worst_v, worst_p, worst_e);
    /* and with a wrong dropout seed the parameters do not match */
    m->forward(a.params, x, NULL, 16, rt_step_seed(7, 2), 1, NULL, NULL, NULL);
    m->backward(a.params, x, NULL, 16, NULL, grad);
    double worst_wrong = 0;
    for (int64_t i = 0; i < m->nparams; i++) {
        double g = grad[i];
        double mi = b1 * a.adam_m[i] + (1 - b1) * g;
        double vi = b2 * a.adam_v[i] + (1 - b2) * g * g;
        double p = a.params[i] - lr * (mi / (1 - pow(b1, 3))) / sqrt(vi / (1 - pow(b2, 3)) + eps);
        worst_wrong = fmax(worst_wrong, fabs(p - b.params[i]));
    }
    assert_true(worst_wrong > 1e-5);
    free(grad);
    free(x);
    rt_ckpt_free(&a);
    rt_ckpt_free(&b);
    tiny_free(&t);
}

/* ---- evaluation ------------------------------------------------------------------ */

static void test_eval_exact(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    const pxc_model *m = t.m;
    RtCheckpoint a;
    RtTrainConfig c = config(&t, tt_path("eval"), 2);
    train_ok(&t, &c, NULL);
    read_ckpt(&t, tt_path("eval"), 2, &a);
    /* per image, one at a time */
    double total = 0;
    float x[64];
    for (int64_t i = 0; i < test_ds.n; i++) {
        rt_pixels_to_float(test_ds.pixels + i * 64, 64, x);
        total += m->forward(a.ema, x, NULL, 1, 0, 0, NULL, NULL, NULL);
    }
    char err[512];
    const int batches[3] = {16, 5, 1};  /* 21 images: 16+5, 5*4+1, 1*21 */
    for (int k = 0; k < 3; k++) {
        RtEvalResult r;
        assert_int_equal(rt_evaluate(m, a.ema, &test_ds, batches[k], &r, err, sizeof err), 0);
        assert_int_equal(r.images, 21);
        assert_int_equal(r.subpixels, 21 * 64);
        if (fabs(r.nats - total) > 1e-9 * total) fail_msg("batch %d: %.12g nats, one by one %.12g", batches[k], r.nats, total);
        assert_true(fabs(r.bpd - total / (log(2.0) * 21 * 64)) < 1e-9);
    }
    /* the run's final evaluation is this one (EMA weights) */
    RtTrainConfig c2 = config(&t, tt_path("eval2"), 2);
    RtTrainResult res;
    train_ok(&t, &c2, &res);
    assert_int_equal(res.test_images, 21);
    assert_true(fabs(res.test_bpd - total / (log(2.0) * 21 * 64)) < 1e-9);
    rt_ckpt_free(&a);
    tiny_free(&t);
}

/* ---- non-finite values -------------------------------------------------------------- */

/* A model that forwards to the tiny model but poisons one step. */
static const pxc_model *inner;
static int backward_calls, poison_grad_at, poison_loss_at;
static int64_t poison_index;
static size_t w_arena_bytes(int n) { return inner->arena_bytes(n); }
static double w_forward(const float *p, const float *x, const int32_t *l, int n, uint64_t seed, int training,
                        void *arena, float *out, float *nll) {
    double r = inner->forward(p, x, l, n, seed, training, arena, out, nll);
    return training && backward_calls + 1 == poison_loss_at ? NAN : r;
}
static void w_backward(const float *p, const float *x, const int32_t *l, int n, void *arena, float *grad) {
    inner->backward(p, x, l, n, arena, grad);
    if (++backward_calls == poison_grad_at) {
        grad[poison_index] = INFINITY;
        grad[poison_index + 3] = NAN;
    }
}
static void w_init(float *p, const float *x, const int32_t *l, int n, void *arena) { inner->init(p, x, l, n, arena); }

static void test_nonfinite(void **state) {
    (void)state;
    Tiny t;
    tiny_new(&t);
    inner = t.m;
    pxc_model w = *t.m;
    w.arena_bytes = w_arena_bytes, w.forward = w_forward, w.backward = w_backward, w.init = w_init, w.release = NULL;
    const pxc_tensor *bad = NULL;
    for (int i = 0; i < w.nparam_tensors; i++)
        if (!strcmp(w.params[i].name, "up.1.ul.0.nin.v")) bad = &w.params[i];
    assert_non_null(bad);
    poison_index = bad->offset + 5;

    RtTrainConfig c = config(&t, tt_path("nan"), 10);
    c.ckpt_every = 2;
    backward_calls = 0, poison_grad_at = 5, poison_loss_at = 0;
    char err[2048];
    RtTrainResult r;
    assert_int_equal(rt_train(&w, &t.g, &train_ds, &test_ds, &c, &r, err, sizeof err), -1);
    if (!strstr(err, "step 5") || !strstr(err, "'up.1.ul.0.nin.v'") || !strstr(err, "ckpt-00000004"))
        fail_msg("message: %s", err);
    assert_int_equal(access(tt_path("nan/ckpt-00000005.safetensors"), F_OK), -1);
    size_t len4;
    char *before = tu_read_file(tt_path("nan/ckpt-00000004.safetensors"), &len4);
    assert_non_null(before);

    /* resume: a non-finite loss at step 7 (the 3rd step of this call) */
    c.resume = true;
    backward_calls = 0, poison_grad_at = 0, poison_loss_at = 3;
    assert_int_equal(rt_train(&w, &t.g, &train_ds, &test_ds, &c, &r, err, sizeof err), -1);
    if (!strstr(err, "step 7") || !strstr(err, "loss is not finite") || !strstr(err, "ckpt-00000006"))
        fail_msg("message: %s", err);
    size_t len4b;
    char *after = tu_read_file(tt_path("nan/ckpt-00000004.safetensors"), &len4b);
    assert_int_equal(len4, len4b);
    assert_memory_equal(before, after, len4);
    assert_int_equal(access(tt_path("nan/ckpt-00000007.safetensors"), F_OK), -1);
    /* the checkpoint written before the failure is sound */
    RtCheckpoint ck;
    read_ckpt(&t, tt_path("nan"), 6, &ck);
    assert_int_equal(ck.step, 6);
    rt_ckpt_free(&ck);
    free(before);
    free(after);
    tiny_free(&t);
}

/* ---- errors before training ------------------------------------------------------------ */

static void expect_train_error(const Tiny *t, const RtTrainConfig *c, const RtDataset *tr, const char *n1,
                               const char *n2) {
    char err[2048];
    RtTrainResult r;
    if (rt_train(t->m, &t->g, tr, &test_ds, c, &r, err, sizeof err) != -1) fail_msg("training did not fail");
    if ((n1 && !strstr(err, n1)) || (n2 && !strstr(err, n2))) fail_msg("message: %s", err);
}

static void test_setup_errors(void **state) {
    (void)state;
    /* a spec for 12x12 images */
    Tiny big;
    const char *s12[] = {"height=12", "width=12"};
    tiny_new_sets(&big, s12, 2, 16);
    RtTrainConfig c = config(&big, tt_path("err_size"), 2);
    expect_train_error(&big, &c, &train_ds, "8x8x1", "12x12x1");
    assert_int_equal(access(tt_path("err_size"), F_OK), -1);  /* nothing written */
    tiny_free(&big);

    /* a class-conditional spec: unlabelled data, and labels beyond its classes */
    Tiny cond;
    const char *s4[] = {"classes=4"};
    tiny_new_sets(&cond, s4, 1, 16);
    c = config(&cond, tt_path("err_cond"), 2);
    expect_train_error(&cond, &c, &train_ds, "10 classes", "has 4");
    tt_make_data(tt_path("nolabels"), 40, 5, 0);
    RtDataset nl;
    char err[512];
    assert_int_equal(rt_dataset_load(tt_path("nolabels"), RT_SPLIT_TRAIN, &nl, err, sizeof err), 0);
    expect_train_error(&cond, &c, &nl, "class-conditional", "no labels");
    rt_dataset_free(&nl);
    tiny_free(&cond);

    Tiny t;
    tiny_new(&t);
    /* fewer images than a batch */
    RtDataset few = train_ds;
    few.n = 10;
    c = config(&t, tt_path("err_few"), 2);
    expect_train_error(&t, &c, &few, "10 images", "batch (16)");
    /* --resume without a checkpoint */
    c = config(&t, tt_path("err_resume"), 2);
    c.resume = true;
    expect_train_error(&t, &c, &train_ds, "no checkpoint", "err_resume");
    assert_int_equal(access(tt_path("err_resume"), F_OK), -1);  /* nothing created */
    /* a fresh run over an existing one */
    c.resume = false;
    train_ok(&t, &c, NULL);
    expect_train_error(&t, &c, &train_ds, "already holds checkpoints", "--resume");
    /* resuming with another batch, seed, lr or spec */
    c.resume = true;
    c.steps = 4;
    c.batch = 8;
    expect_train_error(&t, &c, &train_ds, "--batch 8", "batch 16");
    c.batch = 16;
    c.seed = 9;
    expect_train_error(&t, &c, &train_ds, "--seed 9", "seed 7");
    c.seed = 7;
    c.adam.lr = 5e-4;
    expect_train_error(&t, &c, &train_ds, "optimiser", "lr 0.001");
    c.adam.lr = 0;
    c.spec_hash ^= 1;
    expect_train_error(&t, &c, &train_ds, "spec", "hash");
    c.spec_hash ^= 1;
    RtDataset fewer = train_ds;
    fewer.n = 39;
    expect_train_error(&t, &c, &fewer, "40 images", "39");
    /* a damaged newest checkpoint: named, and the older one offered */
    FILE *f = fopen(tt_path("err_resume/ckpt-00000002.safetensors"), "r+b");
    assert_non_null(f);
    fseek(f, -9, SEEK_END);
    fputc(0x5a, f);
    fclose(f);
    expect_train_error(&t, &c, &train_ds, "ckpt-00000002.safetensors' is corrupted", "resume from step 1");
    tiny_free(&t);
}

/* ---- sampling -------------------------------------------------------------------------- */

/* A 4x4 one-channel stand-in model, K = 3 (one component): pixel p's mean
 * is the previous pixel's value plus 2 bins, log-scale -7 (97% of the mass
 * within half a bin of the mean, all within 1.5 bins), so the drawn image
 * climbs by 2 per pixel only when every pixel is fed back before the next
 * is drawn. It also checks the raster order: at the forward that draws
 * pixel p, pixels >= p must still be 0 (mid grey). */
static int stub_calls, stub_violations;
static size_t stub_arena(int n) { return (size_t)n; }
static double stub_forward(const float *p, const float *x, const int32_t *l, int n, uint64_t seed, int training,
                           void *arena, float *out, float *nll) {
    (void)p, (void)l, (void)seed, (void)arena, (void)nll;
    if (training) stub_violations++;
    int pix = stub_calls++ % 16;
    for (int b = 0; b < n; b++)
        for (int q = 0; q < 16; q++) {
            float prev = q == 0 ? -1.0f : x[b * 16 + q - 1];
            if (q >= pix && x[b * 16 + q] != 0.0f) stub_violations++;
            float *o = out + (b * 16 + q) * 3;
            o[0] = 0.0f;                      /* logit */
            o[1] = prev + 2.0f / 127.5f;      /* mean */
            o[2] = -7.0f;                     /* log scale */
        }
    return 0;
}

static void test_sampler(void **state) {
    (void)state;
    pxc_model s;
    memset(&s, 0, sizeof s);
    s.height = 4, s.width = 4, s.channels = 1, s.nr_mix = 1, s.out_channels = 3;
    s.head = PXC_HEAD_LOGISTIC_MIXTURE;
    s.arena_bytes = stub_arena;
    s.forward = stub_forward;
    uint8_t img[5 * 16];
    char err[512];
    stub_calls = 0, stub_violations = 0;
    assert_int_equal(rt_sample(&s, NULL, 5, NULL, 1, 2, img, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(stub_calls, 3 * 16);  /* batches 2, 2, 1: 16 forwards each */
    assert_int_equal(stub_violations, 0);
    int exact = 0;
    for (int b = 0; b < 5; b++)
        for (int q = 0; q < 16; q++) {
            int step = img[b * 16 + q] - (q ? img[b * 16 + q - 1] : 0);
            if (step < 1 || step > 3) fail_msg("image %d pixel %d: %d after %d", b, q, img[b * 16 + q], q ? img[b * 16 + q - 1] : 0);
            exact += step == 2;
        }
    assert_true(exact >= 70);  /* of 80; 97% expected */

    /* the tiny model: deterministic, independent of the batch split, seed-dependent */
    Tiny t;
    tiny_new(&t);
    RtTrainConfig c = config(&t, tt_path("samp"), 2);
    train_ok(&t, &c, NULL);
    RtCheckpoint a;
    read_ckpt(&t, tt_path("samp"), 2, &a);
    uint8_t x1[6 * 64], x2[6 * 64], x3[6 * 64];
    assert_int_equal(rt_sample(t.m, a.ema, 6, NULL, 11, 6, x1, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(rt_sample(t.m, a.ema, 6, NULL, 11, 4, x2, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(rt_sample(t.m, a.ema, 6, NULL, 12, 6, x3, NULL, NULL, err, sizeof err), 0);
    assert_memory_equal(x1, x2, sizeof x1);
    assert_true(memcmp(x1, x3, sizeof x1) != 0);
    assert_true(memcmp(x1, x1 + 64, 64) != 0);  /* images differ from each other */
    rt_ckpt_free(&a);
    tiny_free(&t);

    /* labels are checked for a class-conditional model */
    s.classes = 3;
    int32_t lab[2] = {0, 3};
    assert_int_equal(rt_sample(&s, NULL, 2, lab, 1, 2, img, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "label 3"));
    assert_int_equal(rt_sample(&s, NULL, 2, NULL, 1, 2, img, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "class-conditional"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_randn),
        cmocka_unit_test(test_params_init),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_resume_exact),
        cmocka_unit_test(test_one_step_by_hand),
        cmocka_unit_test(test_eval_exact),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_setup_errors),
        cmocka_unit_test(test_sampler),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
