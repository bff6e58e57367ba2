/*
 * train.h — training, evaluation and the choice of back end: what
 * `pxc train` and `pxc eval` run, written against the compiled-model ABI
 * (runtime/pxc_model.h) so the reference backend and the compiled one are
 * interchangeable.
 *
 * The recipe is the reference code's (PIXELCNNPP.md, "Training recipe"):
 * parameters drawn from the spec (params_init.h), data-dependent weight-norm
 * initialisation on one batch, the loss a sum of nats over the batch, Adam
 * with the learning rate decayed every step, and a warmed-up EMA of the
 * parameters used for evaluation and sampling. Dropout's seed at step t is
 * a pure function of (seed, t) and the data order of (seed, epoch), so a run
 * is determined by its seed, and a checkpoint (checkpoint.h) holds its whole
 * state: stopping and resuming gives the same bytes as never stopping.
 *
 * A run directory holds ckpt-*.safetensors (the last few), metrics.jsonl,
 * spec.yaml (the spec text), spec.resolved (its resolved parameters and
 * hash), commands.txt (every command line that ran in it) and samples.png.
 */
#ifndef PXC_TRAIN_H
#define PXC_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "ir/ir.h"
#include "optim.h"
#include "progress.h"
#include "pxc_model.h"

/* ---- back ends ------------------------------------------------------------ */

typedef enum RtBackend {
    RT_BACKEND_AUTO,   /* the fastest one built into this pxc */
    RT_BACKEND_REF,    /* runtime/ref: exact, double precision, slow */
    RT_BACKEND_JIT,    /* compiler/llvm: the compiled model */
} RtBackend;

const char *rt_backend_name(RtBackend b);
/* "auto", "ref", "jit" → the enum; -1 for anything else. */
int rt_backend_from_name(const char *s);

/* Build the model of forward graph g (differentiated in place when it has
 * no backward part yet) on back end `which`, for batches of 1..max_batch
 * images. *chosen (may be NULL) receives the back end used. NULL with a
 * message when that back end is unavailable or refuses the graph. This is
 * the one place where pxc picks a back end. */
pxc_model *rt_build_model(Graph *g, RtBackend which, int max_batch, RtBackend *chosen, char *err, size_t errlen);

/* ---- data and evaluation ------------------------------------------------------ */

/* Check that data set ds fits model m (image size, channels; labels in
 * 0..classes-1 for a class-conditional model). `what` names the data in the
 * message ("training data 'PATH'"). 0, or -1 with a message. */
int rt_check_data(const pxc_model *m, const RtDataset *ds, const char *what, char *err, size_t errlen);

typedef struct RtEvalResult {
    double nats;          /* total negative log-likelihood */
    int64_t images;       /* every image of the set, once */
    int64_t subpixels;    /* images · H · W · C */
    double bpd;           /* nats / (ln 2 · subpixels) */
    double seconds;
} RtEvalResult;

/* Exact bits/dim of params on every image of ds, in order, batches of at
 * most `batch` (the last one partial), evaluation mode (no dropout).
 * 0, or -1 with a message (a non-finite loss names the batch). Over several
 * processes (dist.h) every process must call it: each evaluates a
 * contiguous share of ds and the result is summed over them. */
int rt_evaluate(const pxc_model *m, const float *params /*[nparams]*/, const RtDataset *ds, int batch,
                RtEvalResult *r, char *err, size_t errlen);

/* ---- training ------------------------------------------------------------------ */

typedef struct RtTrainConfig {
    const char *run_dir;
    bool resume;          /* continue from the newest checkpoint in run_dir */
    /* When resuming, 0 (or has_seed false) takes the checkpoint's value; a
     * value that differs from the checkpoint's is an error. */
    int batch;            /* 0: 16 */
    bool has_seed;
    uint64_t seed;        /* default 1 */
    RtAdamConfig adam;    /* fields 0: rt_adam_defaults() */
    /* Stopping: whichever comes first; none set means one epoch. */
    int64_t steps;        /* total steps of the run (not of this invocation) */
    int64_t epochs;       /* total epochs: epochs · floor(n_train / batch) steps */
    double time_seconds;  /* wall time of this invocation's training loop */
    /* Cadences (0: default). */
    int64_t eval_every;   /* steps between test evaluations; 0: once per epoch; < 0: only at the end */
    int eval_batch;       /* 0: batch */
    bool eval_raw;        /* evaluate the raw weights instead of the EMA */
    int64_t eval_images;  /* evaluate on the first this many test images; 0: all */
    int64_t ckpt_every;   /* steps between checkpoints; 0: 1000 */
    double ckpt_seconds;  /* also checkpoint after this many seconds; 0: 600 */
    int keep;             /* checkpoints kept; 0: 3 */
    int64_t log_every;    /* steps between logged lines/metrics; 0: 100 */
    double log_seconds;   /* also log after this many seconds; 0: 30 */
    int samples;          /* images in RUN_DIR/samples.png at the end; 0: none */
    /* What the run directory records. */
    const char *spec_text;      /* copied to spec.yaml on a fresh run (may be NULL) */
    const char *spec_name;
    const char *spec_resolved;  /* "k=v" lines */
    uint64_t spec_hash;
    const char *command;        /* appended to commands.txt */
    const char *data_desc;      /* one line about the data, for the log */
    /* Output. */
    FILE *out;                  /* progress and messages; NULL: silent */
    RtProgressMode progress;
    volatile sig_atomic_t *stop;  /* set (e.g. by SIGINT) to stop after the current step */
} RtTrainConfig;

typedef struct RtTrainResult {
    int64_t step;         /* steps done in all */
    int64_t steps_run;    /* steps done by this call */
    double train_bpd;     /* the last logged interval's mean */
    double test_bpd;      /* the last evaluation (NAN if none) */
    int64_t test_step;    /* the step it evaluated */
    int64_t test_images;  /* images in that evaluation */
    int64_t test_images_total;  /* images in the test set */
    double seconds;       /* this call's training loop */
    bool interrupted;     /* stopped by cfg->stop */
    char checkpoint[1024];   /* the last checkpoint written or read */
} RtTrainResult;

/* Train model m (built from g, which supplies the parameters' init
 * attributes) on train, evaluating on test (may be NULL). Over several
 * processes (dist.h) every process calls it alike: each runs its share of
 * every batch, rank 0 alone writes the run directory and prints. The model must
 * accept batches up to max(batch, eval_batch). 0, or -1 with a message:
 * bad data, an unusable run directory, a checkpoint that does not fit, a
 * non-finite loss or gradient (naming the step and the parameter; the last
 * good checkpoint is not touched). */
int rt_train(const pxc_model *m, const Graph *g, const RtDataset *train, const RtDataset *test,
             const RtTrainConfig *cfg, RtTrainResult *res, char *err, size_t errlen);

/* The dropout seed of step t (1-based) of a run with seed `seed`. */
uint64_t rt_step_seed(uint64_t seed, int64_t t);

#endif
