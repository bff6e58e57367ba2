/* train.c — see train.h. */
#define _GNU_SOURCE
#include "train.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autodiff/autodiff.h"
#include "base/base.h"
#include "checkpoint.h"
#include "dist.h"
#include "fileio.h"
#include "image.h"
#include "loss.h"
#include "params_init.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "ref/ref.h"
#include "sample.h"

/* ---- back ends ------------------------------------------------------------ */

const char *rt_backend_name(RtBackend b) {
    switch (b) {
    case RT_BACKEND_AUTO: return "auto";
    case RT_BACKEND_REF: return "ref";
    case RT_BACKEND_JIT: return "jit";
    }
    return "?";
}

int rt_backend_from_name(const char *s) {
    if (!strcmp(s, "auto")) return RT_BACKEND_AUTO;
    if (!strcmp(s, "ref")) return RT_BACKEND_REF;
    if (!strcmp(s, "jit")) return RT_BACKEND_JIT;
    return -1;
}

pxc_model *rt_build_model(Graph *g, RtBackend which, int max_batch, RtBackend *chosen, char *err, size_t errlen) {
    /* ======================= THE BACK-END CHOICE ==========================
     * `auto` means the fastest back end built into this pxc: the JIT. */
    const RtBackend fastest = RT_BACKEND_JIT;
    RtBackend b = which == RT_BACKEND_AUTO ? fastest : which;
    /* ====================================================================== */
    if (chosen) *chosen = b;
    if (!g->grad) {
        DiagList dl;
        diag_init(&dl);
        if (!ad_differentiate(g, false, &dl)) {
            snprintf(err, errlen, "cannot differentiate the spec: %s",
                     dl.n ? dl.items[0].msg : "unknown autodiff error");
            diag_free(&dl);
            return NULL;
        }
        diag_free(&dl);
    }
    switch (b) {
    case RT_BACKEND_REF: return ref_model_new(g, max_batch, err, errlen);
    case RT_BACKEND_JIT: {
        DiagList dl;
        diag_init(&dl);
        KirOptions ko = {0};
        KirProgram *prog = kir_lower(g, &ko, &dl);
        pxc_model *m = prog ? jit_compile(prog, NULL, &dl) : NULL;
        if (prog) kir_free(prog);
        if (!m) snprintf(err, errlen, "cannot compile the model: %s", dl.n ? dl.items[0].msg : "unknown error");
        diag_free(&dl);
        return m;
    }
    case RT_BACKEND_AUTO: break;
    }
    snprintf(err, errlen, "unknown back end %d", (int)b);
    return NULL;
}

/* ---- shared helpers --------------------------------------------------------- */

/* The model's scratch arena, grown to fit a batch of n. */
typedef struct Scratch {
    void *p;
    size_t cap;
} Scratch;

static void *scratch_for(const pxc_model *m, Scratch *s, int n) {
    size_t need = (m->arena_bytes(n) + 63) / 64 * 64;
    if (need == 0) need = 64;
    if (need > s->cap) {
        free(s->p);
        s->p = aligned_alloc(64, need);
        if (!s->p) pxc_bug("out of memory for a %zu-byte model arena", need);
        s->cap = need;
    }
    return s->p;
}

static int64_t image_numel(const pxc_model *m) { return (int64_t)m->height * m->width * m->channels; }

/* x [n,H,W,C] and labels [n] of the images idx[0..n). */
static void load_batch(const RtDataset *ds, const int64_t *idx, int n, float *x, int32_t *labels) {
    int64_t numel = (int64_t)ds->H * ds->W * ds->C;
    for (int i = 0; i < n; i++) {
        rt_pixels_to_float(ds->pixels + idx[i] * numel, numel, x + (int64_t)i * numel);
        if (labels) labels[i] = ds->labels ? ds->labels[idx[i]] : 0;
    }
}

int rt_check_data(const pxc_model *m, const RtDataset *ds, const char *what, char *err, size_t errlen) {
    if (ds->n <= 0) {
        snprintf(err, errlen, "%s holds no images", what);
        return -1;
    }
    if (ds->H != m->height || ds->W != m->width || ds->C != m->channels) {
        snprintf(err, errlen,
                 "%s holds %dx%dx%d images (height x width x channels) but the spec's input is %dx%dx%d; "
                 "change the spec's input or override it, e.g. --set height=%d --set width=%d --set channels=%d",
                 what, ds->H, ds->W, ds->C, m->height, m->width, m->channels, ds->H, ds->W, ds->C);
        return -1;
    }
    if (m->classes > 0) {
        if (!ds->labels) {
            snprintf(err, errlen, "the spec is class-conditional (%d classes) but %s has no labels", m->classes,
                     what);
            return -1;
        }
        if (ds->classes > m->classes) {
            snprintf(err, errlen, "%s has %d classes but the spec has %d (--set classes=%d)", what, ds->classes,
                     m->classes, ds->classes);
            return -1;
        }
        for (int64_t i = 0; i < ds->n; i++)
            if (ds->labels[i] < 0 || ds->labels[i] >= m->classes) {
                snprintf(err, errlen, "%s: image %lld has label %d, outside the spec's classes 0..%d", what,
                         (long long)i, ds->labels[i], m->classes - 1);
                return -1;
            }
    }
    return 0;
}

/* ---- evaluation -------------------------------------------------------------- */

/* Over several processes (dist.h) each evaluates a contiguous share of the
 * images, [r·n/P, (r+1)·n/P), and the nats are summed over them. */
static int evaluate(const pxc_model *m, const float *params, const RtDataset *ds, int batch, Scratch *sc,
                    RtEvalResult *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    double t0 = rt_now();
    int64_t numel = image_numel(m);
    if (batch < 1) batch = 1;
    float *x = xmalloc((size_t)(batch * numel) * sizeof(float));  /* [batch,H,W,C] */
    int32_t *labels = xcalloc((size_t)batch, sizeof(int32_t));     /* [batch] */
    int64_t *idx = xmalloc((size_t)batch * sizeof(int64_t));
    int rc = 0;
    const int P = rt_dist_size(), rank = rt_dist_rank();
    const int64_t lo = ds->n * rank / P, hi = ds->n * (rank + 1) / P;
    for (int64_t b0 = lo; b0 < hi; b0 += batch) {
        int nb = (int)(hi - b0 < batch ? hi - b0 : batch);
        for (int i = 0; i < nb; i++) idx[i] = b0 + i;
        load_batch(ds, idx, nb, x, labels);
        double nats = m->forward(params, x, m->classes > 0 ? labels : NULL, nb, 0, 0, scratch_for(m, sc, nb),
                                 NULL, NULL);
        if (!isfinite(nats)) {
            snprintf(err, errlen, "evaluation: the loss of images %lld..%lld is not finite (%g)", (long long)b0,
                     (long long)(b0 + nb - 1), nats);
            rc = -1;
            break;
        }
        r->nats += nats;
        r->images += nb;
    }
    double sum[3] = {r->nats, (double)r->images, rc != 0};  /* over every process */
    rt_dist_allreduce_sum_f64(sum, 3);
    if (sum[2] > 0 && rc == 0) {
        snprintf(err, errlen, "evaluation: the loss of another process's share of the images is not finite");
        rc = -1;
    }
    r->nats = sum[0], r->images = (int64_t)sum[1];
    r->subpixels = r->images * numel;
    r->bpd = rc == 0 ? rt_bits_per_dim(r->nats, r->subpixels) : NAN;
    r->seconds = rt_now() - t0;
    free(idx);
    free(labels);
    free(x);
    return rc;
}

int rt_evaluate(const pxc_model *m, const float *params, const RtDataset *ds, int batch, RtEvalResult *r, char *err,
                size_t errlen) {
    Scratch sc = {0};
    int rc = evaluate(m, params, ds, batch, &sc, r, err, errlen);
    free(sc.p);
    return rc;
}

/* ---- training ------------------------------------------------------------------ */

uint64_t rt_step_seed(uint64_t seed, int64_t t) {
    return pxc_mix64(seed ^ pxc_mix64(0xD409D409ULL + (uint64_t)t));
}
static uint64_t data_seed_of(uint64_t seed) { return pxc_mix64(seed ^ 0xDA7A5EEDULL); }
static uint64_t init_seed_of(uint64_t seed) { return pxc_mix64(seed ^ 0x1217BA7CULL); }

typedef struct Trainer {
    const pxc_model *m;
    const RtTrainConfig *cfg;
    const RtDataset *train, *test;
    const pxc_tensor *t;
    int nt;
    int64_t np;
    float *params, *ema, *adam_m, *adam_v, *grad;  /* [np] each */
    int batch, eval_batch;
    uint64_t seed;
    RtAdamConfig adam;
    RtBatcher batcher;
    int64_t step;
    double base_seconds;  /* train_seconds of the checkpoint resumed from */
    int64_t images_seen;
    Scratch sc;
    RtProgress pr;
    char *metrics_path;
    char last_ckpt[1024];
    int64_t last_ckpt_step;
    /* data parallel (dist.h): this process is `rank` of `nproc`; it runs
     * images [shard_off, shard_off + shard_n) of each global batch */
    int rank, nproc;
    int shard_off, shard_n;
} Trainer;

static void tr_free(Trainer *T) {
    free(T->params);
    free(T->ema);
    free(T->adam_m);
    free(T->adam_v);
    free(T->grad);
    rt_batcher_free(&T->batcher);
    free(T->sc.p);
    free(T->metrics_path);
}

static int write_text(const char *dir, const char *name, const char *text, char *err, size_t errlen) {
    char *p = xasprintf("%s/%s", dir, name);
    RtChunk c = {text, strlen(text)};
    int rc = rt_write_atomic(p, &c, 1, err, errlen);
    free(p);
    return rc;
}

static int append_command(const RtTrainConfig *cfg, char *err, size_t errlen) {
    char *p = xasprintf("%s/commands.txt", cfg->run_dir);
    FILE *f = fopen(p, "a");
    int rc = 0;
    if (!f) {
        snprintf(err, errlen, "cannot write '%s': %s", p, strerror(errno));
        rc = -1;
    } else {
        char ts[64];
        time_t now = time(NULL);
        struct tm tmv;
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tmv));
        fprintf(f, "%s  %s\n", ts, cfg->command ? cfg->command : "(API call)");
        if (fclose(f) != 0) {
            snprintf(err, errlen, "cannot write '%s': %s", p, strerror(errno));
            rc = -1;
        }
    }
    free(p);
    return rc;
}

/* The first line where two "k=v" texts differ, for a mismatch message. */
static void first_difference(const char *a, const char *b, char *out, size_t n) {
    snprintf(out, n, " (the resolved parameters agree: the spec text or the --set values, or their order, differ)");
    while (*a || *b) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || strncmp(a, b, la)) {
            snprintf(out, n, "; first difference: checkpoint '%.*s', now '%.*s'", (int)la, a, (int)lb, b);
            return;
        }
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
}


static int init_params(Trainer *T, const Graph *g, char *err, size_t errlen) {
    const pxc_model *m = T->m;
    if (rt_params_init(g, T->t, T->nt, T->seed, T->params, err, errlen)) return -1;
    /* Data-dependent init on one batch drawn apart from the training order. */
    int nb = (int)(T->train->n < T->batch ? T->train->n : T->batch);
    int64_t *perm = xmalloc((size_t)T->train->n * sizeof(int64_t));
    rt_batcher_permutation(init_seed_of(T->seed), 0, T->train->n, perm);
    float *x = xmalloc((size_t)(nb * image_numel(m)) * sizeof(float));
    int32_t *labels = xcalloc((size_t)nb, sizeof(int32_t));
    load_batch(T->train, perm, nb, x, labels);
    m->init(T->params, x, m->classes > 0 ? labels : NULL, nb, scratch_for(m, &T->sc, nb));
    free(labels);
    free(x);
    free(perm);
    int64_t bad;
    if (!rt_all_finite(T->params, T->np, &bad)) {
        int k = rt_param_tensor_at(T->t, T->nt, bad);
        snprintf(err, errlen,
                 "the data-dependent initialisation produced a non-finite value in parameter '%s' (are the "
                 "first %d training images all identical?)",
                 k >= 0 ? T->t[k].name : "?", nb);
        return -1;
    }
    memcpy(T->ema, T->params, (size_t)T->np * sizeof(float));
    memset(T->adam_m, 0, (size_t)T->np * sizeof(float));
    memset(T->adam_v, 0, (size_t)T->np * sizeof(float));
    T->step = 0;
    T->images_seen = 0;
    T->base_seconds = 0;
    rt_batcher_init(&T->batcher, data_seed_of(T->seed), T->train->n);
    return 0;
}

static int resume(Trainer *T, const char *path, char *err, size_t errlen) {
    const RtTrainConfig *cfg = T->cfg;
    RtCheckpoint ck;
    char e2[768];
    int r = rt_ckpt_read(path, T->t, T->nt, T->np, &ck, e2, sizeof e2);
    if (r) {
        snprintf(err, errlen, "cannot resume: %s", e2);
        return r == -1 ? -1 : -2;
    }
    int rc = -2;
    char diff[256];
    if (ck.spec_hash != cfg->spec_hash) {
        first_difference(ck.spec_resolved, cfg->spec_resolved ? cfg->spec_resolved : "", diff, sizeof diff);
        snprintf(err, errlen,
                 "cannot resume from '%s': it was trained with spec '%s' (hash %016" PRIx64
                 ") but the spec now resolves to hash %016" PRIx64 "%s; resume with the same spec and --set values",
                 path, ck.spec_name, ck.spec_hash, cfg->spec_hash, diff);
    } else if (cfg->batch && cfg->batch != ck.batch) {
        snprintf(err, errlen, "cannot resume from '%s' with --batch %d: the run uses batch %d (drop --batch)", path,
                 cfg->batch, ck.batch);
    } else if (cfg->has_seed && cfg->seed != ck.seed) {
        snprintf(err, errlen, "cannot resume from '%s' with --seed %" PRIu64 ": the run uses seed %" PRIu64
                 " (drop --seed)", path, cfg->seed, ck.seed);
    } else if (ck.data_n != T->train->n) {
        snprintf(err, errlen,
                 "cannot resume from '%s': the run's training set had %" PRId64 " images, this one has %" PRId64
                 " (the data order would differ); use the same data",
                 path, ck.data_n, T->train->n);
    } else if ((cfg->adam.lr && cfg->adam.lr != ck.adam.lr) || (cfg->adam.lr_decay && cfg->adam.lr_decay != ck.adam.lr_decay) ||
               (cfg->adam.ema_decay && cfg->adam.ema_decay != ck.adam.ema_decay)) {
        snprintf(err, errlen,
                 "cannot resume from '%s' with other optimiser settings: the run uses lr %g, lr decay %.9g, EMA "
                 "decay %.9g (drop --lr, --lr-decay, --ema-decay)",
                 path, ck.adam.lr, ck.adam.lr_decay, ck.adam.ema_decay);
    } else if (ck.batch < 1 || ck.data_pos > ck.data_n) {
        snprintf(err, errlen, "checkpoint '%s' has an impossible data position (batch %d, position %" PRId64
                 " of %" PRId64 ")", path, ck.batch, ck.data_pos, ck.data_n);
    } else {
        rc = 0;
    }
    if (rc == 0) {
        memcpy(T->params, ck.params, (size_t)T->np * sizeof(float));
        memcpy(T->ema, ck.ema, (size_t)T->np * sizeof(float));
        memcpy(T->adam_m, ck.adam_m, (size_t)T->np * sizeof(float));
        memcpy(T->adam_v, ck.adam_v, (size_t)T->np * sizeof(float));
        T->step = ck.step;
        T->seed = ck.seed;
        T->batch = ck.batch;
        T->adam = ck.adam;
        T->images_seen = ck.images_seen;
        T->base_seconds = ck.train_seconds;
        rt_batcher_init(&T->batcher, ck.data_seed, ck.data_n);
        T->batcher.epoch = ck.data_epoch;
        T->batcher.pos = ck.data_pos;
        snprintf(T->last_ckpt, sizeof T->last_ckpt, "%s", path);
        T->last_ckpt_step = ck.step;
    }
    rt_ckpt_free(&ck);
    return rc;
}

static int write_checkpoint(Trainer *T, double seconds, char *err, size_t errlen) {
    const RtTrainConfig *cfg = T->cfg;
    RtCheckpoint ck = {0};
    ck.params = T->params, ck.ema = T->ema, ck.adam_m = T->adam_m, ck.adam_v = T->adam_v;
    ck.step = T->step;
    ck.seed = T->seed;
    ck.data_seed = T->batcher.seed;
    ck.data_epoch = T->batcher.epoch;
    ck.data_pos = T->batcher.pos;
    ck.data_n = T->batcher.n;
    ck.batch = T->batch;
    ck.adam = T->adam;
    ck.train_seconds = seconds;
    ck.images_seen = T->images_seen;
    ck.spec_name = (char *)(cfg->spec_name ? cfg->spec_name : "");
    ck.spec_resolved = (char *)(cfg->spec_resolved ? cfg->spec_resolved : "");
    ck.spec_hash = cfg->spec_hash;
    char *path = rt_ckpt_path(cfg->run_dir, T->step);
    int rc = rt_ckpt_write(path, T->t, T->nt, &ck, err, errlen);
    if (rc == 0) {
        snprintf(T->last_ckpt, sizeof T->last_ckpt, "%s", path);
        T->last_ckpt_step = T->step;
        rc = rt_ckpt_prune(cfg->run_dir, cfg->keep > 0 ? cfg->keep : 3, err, errlen);
    }
    free(path);
    return rc;
}

/* ---- data parallel (dist.h) ------------------------------------------------------ */

/* This process's share of every global batch: with batch B over P
 * processes, rank r runs images [r·B/P, (r+1)·B/P) of it. */
static int shard_batch(Trainer *T, char *err, size_t errlen) {
    if (T->batch % T->nproc) {
        int lo = T->batch / T->nproc * T->nproc;
        if (T->cfg->resume)
            snprintf(err, errlen,
                     "the run's batch (%d images) does not split evenly over %d processes: resume it on a number "
                     "of processes that divides %d",
                     T->batch, T->nproc, T->batch);
        else
            snprintf(err, errlen,
                     "the batch (%d images) does not split evenly over %d processes: use a multiple of %d, e.g. "
                     "--batch %d",
                     T->batch, T->nproc, T->nproc, lo > 0 ? lo : T->nproc);
        return -1;
    }
    T->shard_n = T->batch / T->nproc;
    T->shard_off = T->rank * T->shard_n;
    return 0;
}

/* True on every process when all hold the same parameters and position
 * (trivially in one process). */
static bool same_everywhere(const Trainer *T) {
    if (T->nproc == 1) return true;
    int64_t pos[3] = {T->step, T->batcher.epoch, T->batcher.pos};
    uint64_t h = hash_bytes(HASH_INIT, T->params, (size_t)T->np * sizeof(float));
    return rt_dist_same_u64(hash_bytes(h, pos, sizeof pos));
}

/* After setup every process must hold the same state: a fresh run takes
 * rank 0's initialisation (every rank computes the same one, but a back end
 * need not be bit-reproducible across processes); a resumed run checks that
 * every process read the same checkpoint. */
static int dist_sync_start(Trainer *T, char *err, size_t errlen) {
    if (T->nproc == 1) return 0;
    if (!T->cfg->resume) {
        rt_dist_broadcast_f32(T->params, T->np);
        memcpy(T->ema, T->params, (size_t)T->np * sizeof(float));
    }
    if (!same_everywhere(T)) {
        snprintf(err, errlen,
                 "the %d processes read different checkpoints from '%s' (resuming needs the run directory on a "
                 "file system that every process sees)",
                 T->nproc, T->cfg->run_dir);
        return -1;
    }
    return 0;
}

/* The message for a non-finite loss or gradient at step t. */
static void nonfinite_message(const Trainer *T, int64_t t, double loss, int bad_grad, int bad_param, char *err,
                              size_t errlen) {
    char where[512] = "";
    int k = bad_grad >= 0 ? bad_grad : bad_param;
    if (k >= 0) {
        const char *nm = T->t[k].name;
        const char *dot = strrchr(nm, '.');
        snprintf(where, sizeof where, "; the first non-finite %s is in parameter '%s' (layer '%.*s')",
                 bad_grad >= 0 ? "gradient" : "value", nm, dot ? (int)(dot - nm) : (int)strlen(nm), nm);
    }
    char ck[1200];
    if (T->last_ckpt[0]) snprintf(ck, sizeof ck, "the last good checkpoint, '%s' (step %" PRId64 "), is untouched",
                                  T->last_ckpt, T->last_ckpt_step);
    else snprintf(ck, sizeof ck, "no checkpoint was written");
    snprintf(err, errlen,
             "training stopped at step %" PRId64 ": the loss is %s (%g)%s; %s. Try a smaller --lr, or look at the "
             "data and the spec",
             t, isfinite(loss) ? "finite but a gradient is not" : "not finite", loss, where, ck);
}

int rt_train(const pxc_model *m, const Graph *g, const RtDataset *train, const RtDataset *test,
             const RtTrainConfig *cfg, RtTrainResult *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    res->test_bpd = NAN;
    res->train_bpd = NAN;
    char e2[1024];
    if (rt_check_data(m, train, "the training data", err, errlen)) return -1;
    if (test && rt_check_data(m, test, "the test data", err, errlen)) return -1;
    if (!cfg->run_dir || !cfg->run_dir[0]) {
        snprintf(err, errlen, "no run directory given");
        return -1;
    }

    Trainer T;
    memset(&T, 0, sizeof T);
    T.m = m, T.cfg = cfg, T.train = train, T.test = test;
    T.t = m->params, T.nt = m->nparam_tensors, T.np = m->nparams;
    size_t bytes = (size_t)(T.np ? T.np : 1) * sizeof(float);
    T.params = xmalloc(bytes), T.ema = xmalloc(bytes), T.adam_m = xmalloc(bytes), T.adam_v = xmalloc(bytes);
    T.grad = xmalloc(bytes);
    T.batch = cfg->batch > 0 ? cfg->batch : 16;
    T.seed = cfg->has_seed ? cfg->seed : 1;
    RtAdamConfig def = rt_adam_defaults();
    T.adam = cfg->adam;
    if (!T.adam.lr) T.adam.lr = def.lr;
    if (!T.adam.lr_decay) T.adam.lr_decay = def.lr_decay;
    if (!T.adam.beta1) T.adam.beta1 = def.beta1;
    if (!T.adam.beta2) T.adam.beta2 = def.beta2;
    if (!T.adam.eps) T.adam.eps = def.eps;
    if (!T.adam.ema_decay) T.adam.ema_decay = def.ema_decay;
    T.rank = rt_dist_rank(), T.nproc = rt_dist_size();
    const bool rank0 = T.rank == 0;  /* the one process that writes files and prints */
    rt_progress_init(&T.pr, rank0 ? cfg->out : NULL, cfg->out && rank0 ? cfg->progress : RT_PROGRESS_QUIET);
    int rc = -1;
    int64_t *steps = NULL;
    int nsteps = 0;

    /* ---- the run directory: fresh or resumed ----
     * Every process reads; rank 0 alone writes. A failure on any process
     * is agreed on at setup_agree before anything collective happens. */
    bool setup_ok = false;
    T.metrics_path = xasprintf("%s/metrics.jsonl", cfg->run_dir);
    if (rt_ckpt_list(cfg->run_dir, &steps, &nsteps, err, errlen)) goto setup_agree;
    if (cfg->resume) {
        if (nsteps == 0) {
            snprintf(err, errlen, "--resume: '%s' holds no checkpoint (ckpt-*.safetensors) to resume from",
                     cfg->run_dir);
            goto setup_agree;
        }
        char *path = rt_ckpt_path(cfg->run_dir, steps[nsteps - 1]);
        int r = resume(&T, path, err, errlen);
        if (r == -1 && nsteps > 1) {  /* a damaged file, not a mismatch */
            size_t k = strlen(err);
            snprintf(err + k, errlen - k, " (an older checkpoint is kept: move '%s' aside to resume from step %" PRId64 ")",
                     path, steps[nsteps - 2]);
        }
        free(path);
        if (r) goto setup_agree;
        if (shard_batch(&T, err, errlen)) goto setup_agree;
        int removed = rank0 ? rt_ckpt_clean_temps(cfg->run_dir) : 0;
        if (rank0 && rt_metrics_truncate(T.metrics_path, T.step, err, errlen)) goto setup_agree;
        rt_progress_message(&T.pr, "resuming %s from step %" PRId64 " (%s)%s", cfg->run_dir, T.step, T.last_ckpt,
                            removed ? "; removed a partly written checkpoint" : "");
    } else {
        if (nsteps > 0) {
            snprintf(err, errlen,
                     "'%s' already holds checkpoints (the newest at step %" PRId64
                     "); pass --resume to continue that run, or choose another --out",
                     cfg->run_dir, steps[nsteps - 1]);
            goto setup_agree;
        }
        if (T.train->n < T.batch) {
            snprintf(err, errlen, "the training data has %" PRId64 " images, fewer than one batch (%d); use a smaller --batch",
                     T.train->n, T.batch);
            goto setup_agree;
        }
        if (shard_batch(&T, err, errlen)) goto setup_agree;
        if (rank0 && rt_mkdirs(cfg->run_dir, err, errlen)) goto setup_agree;
        if (init_params(&T, g, err, errlen)) goto setup_agree;
        if (!rank0) goto setup_done;
        if (cfg->spec_text && write_text(cfg->run_dir, "spec.yaml", cfg->spec_text, err, errlen)) goto setup_agree;
        char *res_txt = xasprintf("name: %s\nhash: %016" PRIx64 "\n%s", cfg->spec_name ? cfg->spec_name : "",
                                  cfg->spec_hash, cfg->spec_resolved ? cfg->spec_resolved : "");
        int r = write_text(cfg->run_dir, "spec.resolved", res_txt, err, errlen);
        free(res_txt);
        if (r) goto setup_agree;
        /* A fresh run starts a fresh metrics file. */
        RtChunk empty = {"", 0};
        if (rt_write_atomic(T.metrics_path, &empty, 1, err, errlen)) goto setup_agree;
        rt_progress_message(&T.pr, "new run in %s: %lld parameters, data-dependent init on %d images", cfg->run_dir,
                            (long long)T.np, (int)(T.train->n < T.batch ? T.train->n : T.batch));
    }
    if (rank0 && append_command(cfg, err, errlen)) goto setup_agree;
setup_done:
    setup_ok = true;
setup_agree:
    if (rt_dist_any(!setup_ok)) {
        if (setup_ok) snprintf(err, errlen, "stopped: another process (see rank 0's message) could not set up the run");
        goto out;
    }
    if (dist_sync_start(&T, err, errlen)) goto out;
    T.eval_batch = cfg->eval_batch > 0 ? cfg->eval_batch : T.batch;

    /* ---- when to stop, log, evaluate, checkpoint ---- */
    const int64_t spe = T.train->n / T.batch;  /* steps per epoch */
    if (spe < 1) {
        snprintf(err, errlen, "the training data has %" PRId64 " images, fewer than one batch (%d)", T.train->n,
                 T.batch);
        goto out;
    }
    int64_t target = INT64_MAX;
    if (cfg->steps > 0) target = cfg->steps;
    if (cfg->epochs > 0 && cfg->epochs * spe < target) target = cfg->epochs * spe;
    if (cfg->steps <= 0 && cfg->epochs <= 0 && cfg->time_seconds <= 0) target = spe;
    const double budget = cfg->time_seconds > 0 ? cfg->time_seconds : INFINITY;
    const int64_t eval_every = cfg->eval_every > 0 ? cfg->eval_every : cfg->eval_every == 0 ? spe : 0;
    const int64_t ckpt_every = cfg->ckpt_every > 0 ? cfg->ckpt_every : 1000;
    const double ckpt_seconds = cfg->ckpt_seconds > 0 ? cfg->ckpt_seconds : 600;
    const int64_t log_every = cfg->log_every > 0 ? cfg->log_every : 100;
    const double log_seconds = cfg->log_seconds > 0 ? cfg->log_seconds : 30;

    RtDataset test_view;  /* the test images evaluated: all, or the first eval_images */
    if (test) {
        test_view = *test;
        if (cfg->eval_images > 0 && cfg->eval_images < test->n) test_view.n = cfg->eval_images;
        test = &test_view;
    }
    const int64_t numel = image_numel(m);
    const double ln2_dims = log(2.0) * (double)T.batch * (double)numel;
    float *x = xmalloc((size_t)(T.shard_n * numel) * sizeof(float));  /* [shard_n,H,W,C] */
    int32_t *labels = xcalloc((size_t)T.shard_n, sizeof(int32_t));     /* [shard_n] */
    int64_t *idx = xmalloc((size_t)T.batch * sizeof(int64_t));        /* [batch]: the global batch */
    const int64_t step0 = T.step;
    /* Rank 0's file writes may fail where the others cannot see it: the
     * failure is kept in io_failed (its message in err) and every process
     * stops at the next agreement instead of leaving a collective behind. */
    bool io_failed = false;
#define RANK0_IO(call)                                          \
    do {                                                        \
        if (rank0 && !io_failed && (call)) io_failed = true;    \
    } while (0)
    if (T.nproc > 1)
        rt_progress_message(&T.pr, "data parallel: %s; %d images per process per step", rt_dist_describe(),
                            T.shard_n);
    const double t0 = rt_now();
    double last_log = t0, last_ckpt = t0, step_time_avg = NAN, ewma_bpd = NAN;
    double log_bpd = 0, log_time = 0;
    int64_t log_steps = 0, last_eval_step = -1;
    double last_test = NAN;
    RtStats st;
    memset(&st, 0, sizeof st);

#define STATS_NOW()                                                                                               \
    do {                                                                                                          \
        double now_ = rt_now();                                                                                   \
        st.step = T.step;                                                                                         \
        st.epoch = (double)T.batcher.epoch + fmin(1.0, (double)T.batcher.pos / (double)(spe * T.batch));        \
        st.lr = rt_adam_lr(&T.adam, T.step > 0 ? T.step : 1);                                                     \
        st.wall_time = T.base_seconds + (now_ - t0);                                                              \
        st.test_bpd = last_test;                                                                                  \
        double left_ = INFINITY;                                                                                  \
        st.frac = NAN;                                                                                            \
        if (target != INT64_MAX) {                                                                                \
            st.frac = (double)T.step / (double)target;                                                            \
            if (isfinite(step_time_avg)) left_ = (double)(target - T.step) * step_time_avg;                      \
        }                                                                                                         \
        if (isfinite(budget)) {                                                                                   \
            double f_ = (now_ - t0) / budget;                                                                     \
            if (!(st.frac >= f_)) st.frac = f_;                                                                   \
            if (budget - (now_ - t0) < left_) left_ = budget - (now_ - t0);                                      \
        }                                                                                                         \
        st.eta = isfinite(left_) ? (left_ > 0 ? left_ : 0) : NAN;                                                 \
    } while (0)

    for (;;) {
        /* ---- stop? every process decides alike: on rank 0's clock, and
         * on any process's failure or stop request ---- */
        double flag[3] = {io_failed, rank0 && rt_now() - t0 >= budget, cfg->stop && *cfg->stop};
        rt_dist_allreduce_sum_f64(flag, 3);
        if (flag[0] > 0) {
            rt_progress_finish(&T.pr);
            if (!io_failed) snprintf(err, errlen, "stopped: rank 0 could not write to the run directory (see its message)");
            goto out_loop;
        }
        if (T.step >= target) break;
        if (flag[1] > 0) break;
        if (flag[2] > 0) {
            res->interrupted = true;
            break;
        }
        /* ---- one step: this process's shard of the global batch; the
         * sums of the loss and gradient over every process ---- */
        double ts = rt_now();
        int64_t got = rt_batcher_next(&T.batcher, T.batch, idx);
        if (got != T.batch) pxc_bug("batcher returned %lld of %d images", (long long)got, T.batch);
        load_batch(T.train, idx + T.shard_off, T.shard_n, x, labels);
        const int64_t t = T.step + 1;
        const int32_t *lab = m->classes > 0 ? labels : NULL;
        void *arena = scratch_for(m, &T.sc, T.shard_n);
        /* dropout masks as in one process: the shard's images keep their
         * place in the global batch (pxc_image_seed, pxc_model.h) */
        double loss = m->forward(T.params, x, lab, T.shard_n, pxc_image_seed(rt_step_seed(T.seed, t), T.shard_off), 1,
                                 arena, NULL, NULL);
        rt_dist_allreduce_sum_f64(&loss, 1);
        int64_t bad = -1;
        if (isfinite(loss)) {
            m->backward(T.params, x, lab, T.shard_n, arena, T.grad);
            rt_dist_allreduce_sum_f32(T.grad, T.np);
        }
        if (!isfinite(loss) || !rt_all_finite(T.grad, T.np, &bad)) {
            int k = isfinite(loss) ? rt_param_tensor_at(T.t, T.nt, bad) : -1;
            int kp = -1;
            if (!isfinite(loss) && !rt_all_finite(T.params, T.np, &bad)) kp = rt_param_tensor_at(T.t, T.nt, bad);
            rt_progress_finish(&T.pr);
            nonfinite_message(&T, t, loss, k, kp, err, errlen);
            goto out_loop;
        }
        rt_adam_step(&T.adam, t, T.params, T.grad, T.adam_m, T.adam_v, T.np);
        rt_ema_update(T.adam.ema_decay, t, T.ema, T.params, T.np);
        T.step = t;
        T.images_seen += T.batch;
        double dt = rt_now() - ts;
        step_time_avg = isfinite(step_time_avg) ? 0.9 * step_time_avg + 0.1 * dt : dt;
        ewma_bpd = isfinite(ewma_bpd) ? 0.9 * ewma_bpd + 0.1 * (loss / ln2_dims) : loss / ln2_dims;
        log_bpd += loss / ln2_dims;
        log_time += dt;
        log_steps++;

        /* ---- log ---- */
        double now = rt_now();
        if (T.step % log_every == 0 || now - last_log >= log_seconds || T.step == target) {
            STATS_NOW();
            st.train_bpd = log_bpd / (double)log_steps;
            st.img_per_s = (double)(log_steps * T.batch) / (log_time > 0 ? log_time : 1e-9);
            res->train_bpd = st.train_bpd;
            rt_progress_line(&T.pr, &st);
            RANK0_IO(rt_metrics_append(T.metrics_path, &st, err, errlen));
            log_bpd = 0, log_time = 0, log_steps = 0;
            last_log = now;
        }
        /* the bar shows smoothed figures */
        STATS_NOW();
        st.train_bpd = ewma_bpd;
        st.img_per_s = (double)T.batch / step_time_avg;
        rt_progress_update(&T.pr, &st, T.step == target);

        /* ---- evaluate ---- */
        if (test && eval_every > 0 && T.step % eval_every == 0) {
            RtEvalResult er;
            if (evaluate(m, cfg->eval_raw ? T.params : T.ema, test, T.eval_batch, &T.sc, &er, err, errlen))
                goto out_loop;
            last_test = er.bpd;
            last_eval_step = T.step;
            STATS_NOW();
            st.train_bpd = NAN;
            st.img_per_s = NAN;
            rt_progress_message(&T.pr, "step %" PRId64 "  test %.4f bpd (%lld of %lld images, %s weights, %.1f s)",
                                T.step, er.bpd, (long long)er.images, (long long)T.test->n, cfg->eval_raw ? "raw" : "EMA",
                                er.seconds);
            RANK0_IO(rt_metrics_append(T.metrics_path, &st, err, errlen));
        }
        /* ---- checkpoint (rank 0; when the others check that they still
         * hold rank 0's state) ---- */
        now = rt_now();
        if (T.step % ckpt_every == 0 && !same_everywhere(&T)) goto diverged;
        if (rank0 && !io_failed && (T.step % ckpt_every == 0 || now - last_ckpt >= ckpt_seconds)) {
            RANK0_IO(write_checkpoint(&T, T.base_seconds + (now - t0), err, errlen));
            last_ckpt = rt_now();
            if (!io_failed) rt_progress_message(&T.pr, "step %" PRId64 "  checkpoint %s", T.step, T.last_ckpt);
        }
    }
    if (log_steps > 0) {  /* the steps since the last logged line */
        STATS_NOW();
        st.train_bpd = log_bpd / (double)log_steps;
        st.img_per_s = (double)(log_steps * T.batch) / (log_time > 0 ? log_time : 1e-9);
        res->train_bpd = st.train_bpd;
        rt_progress_line(&T.pr, &st);
        RANK0_IO(rt_metrics_append(T.metrics_path, &st, err, errlen));
    }
    rt_progress_finish(&T.pr);
    res->seconds = rt_now() - t0;
    res->steps_run = T.step - step0;
    if (res->interrupted) rt_progress_message(&T.pr, "interrupted at step %" PRId64, T.step);
    if (!same_everywhere(&T)) goto diverged;
    if (rank0 && !io_failed && (T.step != T.last_ckpt_step || !T.last_ckpt[0])) {
        RANK0_IO(write_checkpoint(&T, T.base_seconds + res->seconds, err, errlen));
        if (!io_failed) rt_progress_message(&T.pr, "step %" PRId64 "  checkpoint %s", T.step, T.last_ckpt);
    }
    if (rt_dist_any(io_failed)) {
        if (!io_failed) snprintf(err, errlen, "stopped: rank 0 could not write to the run directory (see its message)");
        goto out_loop;
    }
    /* From here on only rank 0 does anything that can fail alone: it writes
     * after the last collective operation (the evaluation). */
    if (!rank0) {
        char *path = rt_ckpt_path(cfg->run_dir, T.step);
        snprintf(T.last_ckpt, sizeof T.last_ckpt, "%s", path);
        free(path);
    }
    if (!res->interrupted && test && last_eval_step != T.step) {
        RtEvalResult er;
        if (evaluate(m, cfg->eval_raw ? T.params : T.ema, test, T.eval_batch, &T.sc, &er, err, errlen)) goto out_loop;
        last_test = er.bpd;
        last_eval_step = T.step;
        STATS_NOW();
        st.train_bpd = NAN;
        st.img_per_s = NAN;
        rt_progress_message(&T.pr, "step %" PRId64 "  test %.4f bpd (%lld of %lld images, %s weights, %.1f s)", T.step,
                            er.bpd, (long long)er.images, (long long)T.test->n, cfg->eval_raw ? "raw" : "EMA",
                            er.seconds);
        if (rank0 && rt_metrics_append(T.metrics_path, &st, err, errlen)) goto out_loop;
        res->test_images = er.images;
    } else if (test) {
        res->test_images = test->n;
    }
    res->test_images_total = T.test ? T.test->n : 0;
    res->test_bpd = last_test;
    res->test_step = last_eval_step;
    if (rank0 && !res->interrupted && cfg->samples > 0) {
        int n = cfg->samples;
        uint8_t *img = xmalloc((size_t)(n * numel));
        int32_t *sl = xcalloc((size_t)n, sizeof(int32_t));
        for (int i = 0; i < n; i++) sl[i] = m->classes > 0 ? i % m->classes : 0;
        double ts = rt_now();
        int r = rt_sample(m, T.ema, n, m->classes > 0 ? sl : NULL, rt_step_seed(T.seed, -1), T.eval_batch, img, NULL,
                          NULL, e2, sizeof e2);
        char *path = xasprintf("%s/samples.png", cfg->run_dir);
        if (r == 0) r = rt_png_write_grid(path, img, n, m->height, m->width, m->channels, 0, 2, e2, sizeof e2);
        if (r == 0) rt_progress_message(&T.pr, "%d samples in %s (%.1f s)", n, path, rt_now() - ts);
        else snprintf(err, errlen, "sampling: %s", e2);
        free(path);
        free(sl);
        free(img);
        if (r) goto out_loop;
    }
    res->step = T.step;
    snprintf(res->checkpoint, sizeof res->checkpoint, "%s", T.last_ckpt);
    rc = 0;
    goto out_loop;
diverged:
    rt_progress_finish(&T.pr);
    snprintf(err, errlen,
             "at step %" PRId64 " the %d processes no longer hold the same parameters (the back end or the MPI sums "
             "are not reproducible across processes); the last checkpoint is %s",
             T.step, T.nproc, T.last_ckpt[0] ? T.last_ckpt : "none");
out_loop:
#undef RANK0_IO
    res->step = T.step;
    free(idx);
    free(labels);
    free(x);
out:
    free(steps);
    tr_free(&T);
    return rc;
#undef STATS_NOW
}
