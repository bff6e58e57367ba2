/*
 * cmd_run.c — the pxc commands that run a model: `train`, `eval`, `sample`
 * and `import`. Each parses its options, compiles the spec, builds the model
 * on a back end (rt_build_model, the one place that chooses), loads data or
 * a checkpoint, and calls the runtime (runtime/train.h, sample.h,
 * checkpoint.h). The only code here is the command line and the printing.
 */
#define _GNU_SOURCE
#include "cmds.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "checkpoint.h"
#include "data.h"
#include "dist.h"
#include "fileio.h"
#include "image.h"
#include "ir/ir.h"
#include "params_init.h"
#include "progress.h"
#include "safetensors.h"
#include "sample.h"
#include "spec/spec.h"
#include "train.h"

const char cmd_run_usage[] =
    "  train SPEC [--data PATH] [--out RUN_DIR] [--set k=v]... [--batch B]\n"
    "        [--steps N | --epochs E | --time SECONDS] [--seed S] [--resume]\n"
    "        train on a data set (default " RT_DEFAULT_DATA "): data-dependent init,\n"
    "        Adam with per-step lr decay, EMA weights; test bits/dim, checkpoints and\n"
    "        metrics.jsonl in RUN_DIR (default runs/<spec name>).\n"
    "        --steps/--epochs count the whole run (a resumed run continues to them);\n"
    "        --time bounds this invocation (60, 90s, 10m, 2h); without any: one epoch.\n"
    "        --resume         continue exactly from the newest checkpoint in RUN_DIR\n"
    "        --lr X (1e-3)  --lr-decay X (0.999995 per step)  --ema-decay X (0.9995)\n"
    "        --eval-every N   steps between test evaluations (default: each epoch; -1: end only)\n"
    "        --eval-batch B   --eval-raw (evaluate raw weights, not the EMA)\n"
    "        --eval-images N  evaluate on the first N test images only (default: all)\n"
    "        --checkpoint-every N (1000 steps)  --checkpoint-minutes M (10)  --keep K (3)\n"
    "        --log-every N (100)  --samples N (a grid in RUN_DIR/samples.png at the end)\n"
    "        --progress auto|bar|lines|quiet  --backend auto|ref|jit\n"
    "        --dry-run        check the spec and data, print the plan (and back end), stop\n"
    "  eval SPEC --checkpoint C [--data PATH] [--json] [--raw] [--split test|train] [--batch B]\n"
    "        [--limit N]\n"
    "        exact bits/dim over every image of the split (or its first N), EMA weights\n"
    "        unless --raw.\n"
    "        C is a checkpoint file or a run directory (its newest checkpoint).\n"
    "  sample SPEC --checkpoint C [-n N] [-o grid.png] [--seed S] [--label L] [--raw] [--batch B]\n"
    "        naive autoregressive sampling (H*W forwards), written as a PNG grid;\n"
    "        class-conditional specs use label L, or cycle through the classes.\n"
    "  import SPEC --from WEIGHTS.safetensors -o CKPT\n"
    "        a checkpoint from weights in the reference naming scheme (every name and\n"
    "        shape checked); its params and EMA are those weights.\n";

/* ---- options -------------------------------------------------------------------- */

enum { C_TRAIN = 1, C_EVAL = 2, C_SAMPLE = 4, C_IMPORT = 8 };

typedef struct Opts {
    const char *cmd;
    int which;
    const char *spec;
    const char **sets;
    int nsets;
    const char *data, *out, *checkpoint, *from, *output, *split;
    int batch, eval_batch, n, label, keep, cols;
    bool has_label, has_seed, resume, json, raw, eval_raw, dry_run;
    uint64_t seed;
    int64_t steps, epochs, eval_every, ckpt_every, log_every, eval_images, limit;
    bool has_eval_every;
    double time_s, lr, lr_decay, ema_decay, ckpt_minutes;
    int samples;
    RtProgressMode progress;
    RtBackend backend;
} Opts;

static int usage_error(const Opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const Opts *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pxc %s: ", o->cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nrun 'pxc help' for usage\n");
    return 2;
}

int cmd_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "pxc %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static bool parse_int64(const char *s, int64_t lo, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < lo) return false;
    *v = x;
    return true;
}

static bool parse_double(const char *s, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) return false;
    *v = x;
    return true;
}

/* "600", "90s", "10m", "2h" → seconds. */
static bool parse_duration(const char *s, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || !isfinite(x) || x <= 0) return false;
    if (!strcmp(end, "") || !strcmp(end, "s")) *v = x;
    else if (!strcmp(end, "m") || !strcmp(end, "min")) *v = 60 * x;
    else if (!strcmp(end, "h")) *v = 3600 * x;
    else return false;
    return true;
}

typedef enum OptKind { O_FLAG, O_STR, O_INT, O_POS, O_I64, O_U64, O_DOUBLE, O_DURATION, O_SPECIAL } OptKind;

typedef struct OptDef {
    const char *name;   /* "--batch" */
    const char *alias;  /* "-n" or NULL */
    int cmds;           /* C_* mask */
    OptKind kind;
    size_t off;         /* field in Opts */
    size_t has_off;     /* bool field set when given (0: none) */
} OptDef;

#define F(f) offsetof(Opts, f)
static const OptDef opt_defs[] = {
    {"--data", NULL, C_TRAIN | C_EVAL, O_STR, F(data), 0},
    {"--out", NULL, C_TRAIN, O_STR, F(out), 0},
    {"--checkpoint", NULL, C_EVAL | C_SAMPLE, O_STR, F(checkpoint), 0},
    {"--from", NULL, C_IMPORT, O_STR, F(from), 0},
    {"--output", "-o", C_SAMPLE | C_IMPORT, O_STR, F(output), 0},
    {"--split", NULL, C_EVAL, O_STR, F(split), 0},
    {"--batch", NULL, C_TRAIN | C_EVAL | C_SAMPLE, O_POS, F(batch), 0},
    {"--eval-batch", NULL, C_TRAIN, O_POS, F(eval_batch), 0},
    {"--num", "-n", C_SAMPLE, O_POS, F(n), 0},
    {"--label", NULL, C_SAMPLE, O_INT, F(label), F(has_label)},
    {"--keep", NULL, C_TRAIN, O_POS, F(keep), 0},
    {"--cols", NULL, C_SAMPLE, O_POS, F(cols), 0},
    {"--seed", NULL, C_TRAIN | C_SAMPLE, O_U64, F(seed), F(has_seed)},
    {"--resume", NULL, C_TRAIN, O_FLAG, F(resume), 0},
    {"--dry-run", NULL, C_TRAIN, O_FLAG, F(dry_run), 0},
    {"--json", NULL, C_EVAL, O_FLAG, F(json), 0},
    {"--raw", NULL, C_EVAL | C_SAMPLE, O_FLAG, F(raw), 0},
    {"--eval-raw", NULL, C_TRAIN, O_FLAG, F(eval_raw), 0},
    {"--steps", NULL, C_TRAIN, O_I64, F(steps), 0},
    {"--epochs", NULL, C_TRAIN, O_I64, F(epochs), 0},
    {"--eval-every", NULL, C_TRAIN, O_SPECIAL, F(eval_every), F(has_eval_every)},
    {"--checkpoint-every", NULL, C_TRAIN, O_I64, F(ckpt_every), 0},
    {"--log-every", NULL, C_TRAIN, O_I64, F(log_every), 0},
    {"--eval-images", NULL, C_TRAIN, O_I64, F(eval_images), 0},
    {"--limit", NULL, C_EVAL, O_I64, F(limit), 0},
    {"--time", NULL, C_TRAIN, O_DURATION, F(time_s), 0},
    {"--lr", NULL, C_TRAIN, O_DOUBLE, F(lr), 0},
    {"--lr-decay", NULL, C_TRAIN, O_DOUBLE, F(lr_decay), 0},
    {"--ema-decay", NULL, C_TRAIN, O_DOUBLE, F(ema_decay), 0},
    {"--checkpoint-minutes", NULL, C_TRAIN, O_DOUBLE, F(ckpt_minutes), 0},
    {"--samples", NULL, C_TRAIN, O_INT, F(samples), 0},
    {"--progress", NULL, C_TRAIN, O_SPECIAL, F(progress), 0},
    {"--backend", NULL, C_TRAIN | C_EVAL | C_SAMPLE, O_SPECIAL, F(backend), 0},
};
#undef F

static int parse_opts(int argc, char **argv, int which, Opts *o) {
    memset(o, 0, sizeof *o);
    o->cmd = argv[1];
    o->which = which;
    o->sets = xcalloc((size_t)argc, sizeof(char *));
    o->progress = RT_PROGRESS_AUTO;
    o->backend = RT_BACKEND_AUTO;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            const char *v = s[5] == '=' ? s + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !strchr(v, '=')) return usage_error(o, "--set needs key=value");
            o->sets[o->nsets++] = v;
            continue;
        }
        if (s[0] != '-' || !s[1]) {
            if (o->spec) return usage_error(o, "unexpected argument '%s' (the spec is '%s')", s, o->spec);
            o->spec = s;
            continue;
        }
        const char *eq = strchr(s, '=');
        size_t nlen = eq ? (size_t)(eq - s) : strlen(s);
        const OptDef *d = NULL;
        for (size_t k = 0; k < sizeof opt_defs / sizeof *opt_defs && !d; k++)
            if ((strlen(opt_defs[k].name) == nlen && !strncmp(s, opt_defs[k].name, nlen)) ||
                (opt_defs[k].alias && strlen(opt_defs[k].alias) == nlen && !strncmp(s, opt_defs[k].alias, nlen)))
                d = &opt_defs[k];
        if (!d || !(d->cmds & which)) {
            const char *names[sizeof opt_defs / sizeof *opt_defs + 1];
            int nn = 0;
            for (size_t k = 0; k < sizeof opt_defs / sizeof *opt_defs; k++)
                if (opt_defs[k].cmds & which) names[nn++] = opt_defs[k].name;
            names[nn++] = "--set";
            char *word = xstrndup(s, nlen);
            const char *near = str_closest(word, names, nn);
            int r = near ? usage_error(o, "unknown option '%s'; did you mean '%s'?", word, near)
                         : usage_error(o, "unknown option '%s'", word);
            free(word);
            return r;
        }
        char *field = (char *)o + d->off;
        if (d->has_off) *(bool *)((char *)o + d->has_off) = true;
        if (d->kind == O_FLAG) {
            if (eq) return usage_error(o, "%s takes no value", d->name);
            *(bool *)field = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return usage_error(o, "%s needs a value", d->name);
        int64_t iv;
        double dv;
        switch (d->kind) {
        case O_STR: *(const char **)field = v; break;
        case O_INT:
        case O_POS:
            if (!parse_int64(v, d->kind == O_POS ? 1 : 0, &iv) || iv > (1 << 30))
                return usage_error(o, "%s expects a %s integer, found '%s'", d->name,
                                   d->kind == O_POS ? "positive" : "non-negative", v);
            *(int *)field = (int)iv;
            break;
        case O_I64:
            if (!parse_int64(v, 1, &iv)) return usage_error(o, "%s expects a positive integer, found '%s'", d->name, v);
            *(int64_t *)field = iv;
            break;
        case O_U64:
            if (!parse_int64(v, 0, &iv)) return usage_error(o, "%s expects a non-negative integer, found '%s'", d->name, v);
            *(uint64_t *)field = (uint64_t)iv;
            break;
        case O_DOUBLE:
            if (!parse_double(v, &dv) || dv <= 0) return usage_error(o, "%s expects a positive number, found '%s'", d->name, v);
            *(double *)field = dv;
            break;
        case O_DURATION:
            if (!parse_duration(v, &dv))
                return usage_error(o, "%s expects a duration (600, 90s, 10m, 2h), found '%s'", d->name, v);
            *(double *)field = dv;
            break;
        case O_SPECIAL:
            if (!strcmp(d->name, "--eval-every")) {
                if (!strcmp(v, "-1") || !strcmp(v, "end")) o->eval_every = -1;
                else if (!parse_int64(v, 1, &o->eval_every))
                    return usage_error(o, "--eval-every expects a positive number of steps or -1, found '%s'", v);
            } else if (!strcmp(d->name, "--progress")) {
                static const char *modes[] = {"auto", "bar", "lines", "quiet"};
                int k = 0;
                while (k < 4 && strcmp(v, modes[k])) k++;
                if (k == 4) return usage_error(o, "--progress expects auto, bar, lines or quiet, found '%s'", v);
                o->progress = (RtProgressMode)k;
            } else {
                int b = rt_backend_from_name(v);
                if (b < 0) return usage_error(o, "--backend expects auto, ref or jit, found '%s'", v);
                o->backend = (RtBackend)b;
            }
            break;
        case O_FLAG: break;
        }
    }
    if (!o->spec) return usage_error(o, "needs a SPEC file");
    return 0;
}

/* ---- shared steps ------------------------------------------------------------------ */

typedef struct Loaded {
    Graph g;
    SpecInfo info;
    char *text;
    bool have_graph;
} Loaded;

static void loaded_free(Loaded *L) {
    if (L->have_graph) ir_graph_free(&L->g);
    spec_info_free(&L->info);
    free(L->text);
}

/* Compile the spec; diagnostics go to stderr. 0 on success. */
static int load_spec(const Opts *o, Loaded *L) {
    memset(L, 0, sizeof *L);
    char err[512];
    size_t len = 0;
    L->text = rt_read_file(o->spec, &len, err, sizeof err);
    if (!L->text) return cmd_fail(o->cmd, "%s", err);
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile_ex(o->spec, L->text, len, o->sets, o->nsets, &L->g, &L->info, &dl);
    L->have_graph = true;
    diag_print(&dl, stderr, isatty(2));
    diag_free(&dl);
    return rc ? 1 : 0;
}

/* A checkpoint path: the file itself, or a run directory's newest. */
static char *resolve_checkpoint(const char *cmd, const char *c) {
    struct stat sb;
    if (stat(c, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        int64_t *steps;
        int n;
        char err[512];
        if (rt_ckpt_list(c, &steps, &n, err, sizeof err)) {
            cmd_fail(cmd, "%s", err);
            return NULL;
        }
        if (n == 0) {
            cmd_fail(cmd, "run directory '%s' holds no checkpoint (ckpt-*.safetensors)", c);
            free(steps);
            return NULL;
        }
        char *p = rt_ckpt_path(c, steps[n - 1]);
        free(steps);
        return p;
    }
    return xstrdup(c);
}

static char *join_command(int argc, char **argv) {
    StrBuf sb = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool plain = *a != 0;
        for (const char *p = a; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,+@%", *p)) plain = false;
        if (i) sb_putc(&sb, ' ');
        if (plain) {
            sb_printf(&sb, "%s", a);
        } else {
            sb_putc(&sb, '\'');
            for (const char *p = a; *p; p++) {
                if (*p == '\'') sb_printf(&sb, "'\\''");
                else sb_putc(&sb, *p);
            }
            sb_putc(&sb, '\'');
        }
    }
    return sb.s ? sb.s : xstrdup("");
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

/* ---- data parallel: `mpirun -np P pxc train|eval ...` (runtime/dist.h) ----------------- */

static int train_main(int argc, char **argv);
static int eval_main(int argc, char **argv);

static int run_dist(int (*body)(int, char **), int argc, char **argv) {
    char err[512];
    if (rt_dist_init(&argc, &argv, err, sizeof err)) return cmd_fail(argv[1], "%s", err);
    return rt_dist_finalize(body(argc, argv));
}

int cmd_train(int argc, char **argv) { return run_dist(train_main, argc, argv); }
int cmd_eval(int argc, char **argv) { return run_dist(eval_main, argc, argv); }

/* ---- pxc train ------------------------------------------------------------------------ */

static int train_main(int argc, char **argv) {
    Opts o;
    int rc = parse_opts(argc, argv, C_TRAIN, &o);
    if (rc) {
        free(o.sets);
        return rc;
    }
    Loaded L;
    RtDataset tr = {0}, te = {0};
    pxc_model *m = NULL;
    char err[2048];
    char *command = NULL, *out_dir = NULL;
    if ((rc = load_spec(&o, &L))) goto done;
    const char *data = o.data ? o.data : RT_DEFAULT_DATA;
    if (rt_dataset_load(data, RT_SPLIT_TRAIN, &tr, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s%s", err,
                  o.data ? "" : " (the default data set is Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist, or pass --data PATH)");
        goto done;
    }
    if (rt_dataset_load(data, RT_SPLIT_TEST, &te, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    int batch = o.batch ? o.batch : 16;
    int eval_batch = o.eval_batch ? o.eval_batch : batch;
    RtBackend chosen;
    m = rt_build_model(&L.g, o.backend, batch > eval_batch ? batch : eval_batch, &chosen, err, sizeof err);
    if (!m) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    /* Data that does not fit is an error before anything is written. */
    char what[1200];
    snprintf(what, sizeof what, "the training data '%s'", data);
    if (rt_check_data(m, &tr, what, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    snprintf(what, sizeof what, "the test data '%s'", data);
    if (rt_check_data(m, &te, what, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    out_dir = o.out ? xstrdup(o.out) : xasprintf("runs/%s", L.info.name ? L.info.name : "run");
    command = join_command(argc, argv);

    RtTrainConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.run_dir = out_dir;
    cfg.resume = o.resume;
    cfg.batch = o.batch;
    cfg.has_seed = o.has_seed;
    cfg.seed = o.seed;
    cfg.adam.lr = o.lr;
    cfg.adam.lr_decay = o.lr_decay;
    cfg.adam.ema_decay = o.ema_decay;
    cfg.steps = o.steps;
    cfg.epochs = o.epochs;
    cfg.time_seconds = o.time_s;
    cfg.eval_every = o.has_eval_every ? o.eval_every : 0;
    cfg.eval_batch = eval_batch;
    cfg.eval_raw = o.eval_raw;
    cfg.eval_images = o.eval_images;
    cfg.ckpt_every = o.ckpt_every;
    cfg.ckpt_seconds = o.ckpt_minutes * 60;
    cfg.keep = o.keep;
    cfg.log_every = o.log_every;
    cfg.samples = o.samples;
    cfg.spec_text = L.text;
    cfg.spec_name = L.info.name;
    cfg.spec_resolved = L.info.resolved;
    cfg.spec_hash = L.info.hash;
    cfg.command = command;
    cfg.out = stderr;
    cfg.progress = o.progress;
    cfg.stop = &stop_flag;

    char stop_desc[160] = "";
    size_t k = 0;
    if (o.steps) k += (size_t)snprintf(stop_desc + k, sizeof stop_desc - k, "%s%" PRId64 " steps", k ? ", " : "", o.steps);
    if (o.epochs) k += (size_t)snprintf(stop_desc + k, sizeof stop_desc - k, "%s%" PRId64 " epochs", k ? ", " : "", o.epochs);
    if (o.time_s > 0) k += (size_t)snprintf(stop_desc + k, sizeof stop_desc - k, "%s%.0f s", k ? ", " : "", o.time_s);
    if (!k) snprintf(stop_desc, sizeof stop_desc, "1 epoch");
    fprintf(stderr, "pxc train: spec %s (%s, %lld parameters) on the %s back end\n", L.info.name, o.spec,
            (long long)m->nparams, rt_backend_name(chosen));
    fprintf(stderr, "pxc train: data %s: train %s; test %s\n", data, tr.desc ? tr.desc : "?", te.desc ? te.desc : "?");
    fprintf(stderr, "pxc train: batch %d, stop after %s (whichever first); run directory %s%s\n", batch, stop_desc,
            out_dir, o.resume ? " (resuming)" : "");

    if (o.dry_run) goto done;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = (int)SA_RESETHAND;  /* a second Ctrl-C stops at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    RtTrainResult res;
    if (rt_train(m, &L.g, &tr, &te, &cfg, &res, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    char el[32];
    fprintf(stderr, "pxc train: %s at step %" PRId64 " (%" PRId64 " steps in %s); checkpoint %s\n",
            res.interrupted ? "interrupted" : "done", res.step, res.steps_run,
            rt_format_duration(res.seconds, el, sizeof el), res.checkpoint);
    if (isfinite(res.test_bpd))
        printf("test bits/dim: %.4f (%lld of %lld images, %s weights, step %" PRId64 ")\n", res.test_bpd,
               (long long)res.test_images, (long long)res.test_images_total, o.eval_raw ? "raw" : "EMA",
               res.test_step);
    if (res.interrupted) {
        fprintf(stderr, "pxc train: continue with the same command and --resume\n");
        rc = 130;
    }
done:
    if (m && m->release) m->release(m);
    rt_dataset_free(&tr);
    rt_dataset_free(&te);
    if (L.have_graph || L.text) loaded_free(&L);
    free(command);
    free(out_dir);
    free(o.sets);
    return rc;
}

/* ---- checkpoints for eval and sample ---------------------------------------------------- */

/* Read a checkpoint for model m; warn when it came from another spec. */
static int load_weights(const Opts *o, const Loaded *L, const pxc_model *m, RtCheckpoint *ck, char **path) {
    char err[1024];
    *path = resolve_checkpoint(o->cmd, o->checkpoint);
    if (!*path) return 1;
    if (rt_ckpt_read(*path, m->params, m->nparam_tensors, m->nparams, ck, err, sizeof err)) return cmd_fail(o->cmd, "%s", err);
    if (ck->spec_hash != L->info.hash)
        fprintf(stderr,
                "pxc %s: warning: checkpoint '%s' was written for spec '%s' (hash %016" PRIx64 "), not this one (%s, "
                "hash %016" PRIx64 "); every tensor's name and shape matches, so it is used\n",
                o->cmd, *path, ck->spec_name, ck->spec_hash, L->info.name, L->info.hash);
    return 0;
}

/* parse_opts for a command that reads a checkpoint: --checkpoint is
 * required. On failure o's buffers are freed and the exit status returned. */
static int parse_opts_with_checkpoint(int argc, char **argv, int which, Opts *o) {
    int rc = parse_opts(argc, argv, which, o);
    if (!rc && !o->checkpoint) rc = usage_error(o, "needs --checkpoint C (a checkpoint file or a run directory)");
    if (rc) free(o->sets);
    return rc;
}

/* ---- pxc eval ------------------------------------------------------------------------------ */

static int eval_main(int argc, char **argv) {
    Opts o;
    int rc = parse_opts_with_checkpoint(argc, argv, C_EVAL, &o);
    if (rc) return rc;
    RtDataset ds = {0};
    RtCheckpoint ck = {0};
    pxc_model *m = NULL;
    char *path = NULL;
    char err[2048];
    const char *split = o.split ? o.split : "test";
    if (strcmp(split, "test") && strcmp(split, "train")) {
        free(o.sets);
        return usage_error(&o, "--split expects test or train, found '%s'", split);
    }
    Loaded L;
    if ((rc = load_spec(&o, &L))) goto done;
    int batch = o.batch ? o.batch : 16;
    RtBackend chosen;
    m = rt_build_model(&L.g, o.backend, batch, &chosen, err, sizeof err);
    if (!m) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    if ((rc = load_weights(&o, &L, m, &ck, &path))) goto done;
    const char *data = o.data ? o.data : RT_DEFAULT_DATA;
    if (rt_dataset_load(data, strcmp(split, "test") ? RT_SPLIT_TRAIN : RT_SPLIT_TEST, &ds, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    char what[1200];
    snprintf(what, sizeof what, "the %s data '%s'", split, data);
    if (rt_check_data(m, &ds, what, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    RtEvalResult r;
    RtDataset view = ds;  /* every image, or the first --limit */
    if (o.limit > 0 && o.limit < ds.n) view.n = o.limit;
    if (rt_evaluate(m, o.raw ? ck.params : ck.ema, &view, batch, &r, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "bpd", r.bpd);
        cJSON_AddNumberToObject(j, "nats", r.nats);
        cJSON_AddNumberToObject(j, "images", (double)r.images);
        cJSON_AddNumberToObject(j, "images_in_split", (double)ds.n);
        cJSON_AddNumberToObject(j, "subpixels", (double)r.subpixels);
        cJSON_AddStringToObject(j, "weights", o.raw ? "raw" : "ema");
        cJSON_AddNumberToObject(j, "step", (double)ck.step);
        cJSON_AddStringToObject(j, "checkpoint", path);
        cJSON_AddStringToObject(j, "split", split);
        cJSON_AddStringToObject(j, "data", data);
        cJSON_AddStringToObject(j, "backend", rt_backend_name(chosen));
        cJSON_AddNumberToObject(j, "seconds", r.seconds);
        char *txt = cJSON_Print(j);
        puts(txt);
        free(txt);
        cJSON_Delete(j);
    } else {
        printf("%s bits/dim: %.4f (%lld of %lld images, %lld sub-pixels, %.1f nats; %s weights of step %" PRId64 ")\n",
               split, r.bpd, (long long)r.images, (long long)ds.n, (long long)r.subpixels, r.nats, o.raw ? "raw" : "EMA",
               ck.step);
    }
done:
    if (m && m->release) m->release(m);
    rt_ckpt_free(&ck);
    rt_dataset_free(&ds);
    if (L.have_graph || L.text) loaded_free(&L);
    free(path);
    free(o.sets);
    return rc;
}

/* ---- pxc sample ------------------------------------------------------------------------------ */

typedef struct SampleBar {
    bool tty;
    double last;
} SampleBar;

static void sample_progress(void *ctx, int64_t done, int64_t total) {
    SampleBar *b = ctx;
    if (!b->tty) return;
    double now = rt_now();
    if (done != total && now - b->last < 0.2) return;
    b->last = now;
    fprintf(stderr, "\r\033[Ksampling: %lld/%lld forwards", (long long)done, (long long)total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

int cmd_sample(int argc, char **argv) {
    Opts o;
    int rc = parse_opts_with_checkpoint(argc, argv, C_SAMPLE, &o);
    if (rc) return rc;
    RtCheckpoint ck = {0};
    pxc_model *m = NULL;
    char *path = NULL;
    uint8_t *img = NULL;
    int32_t *labels = NULL;
    char err[2048];
    int n = o.n ? o.n : 16;
    const char *outp = o.output ? o.output : "samples.png";
    Loaded L;
    if ((rc = load_spec(&o, &L))) goto done;
    int batch = o.batch ? o.batch : (n < 16 ? n : 16);
    m = rt_build_model(&L.g, o.backend, batch, NULL, err, sizeof err);
    if (!m) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    if ((rc = load_weights(&o, &L, m, &ck, &path))) goto done;
    if (o.has_label && m->classes == 0) {
        rc = cmd_fail(o.cmd, "--label %d: the spec is not class-conditional (classes = 0)", o.label);
        goto done;
    }
    if (o.has_label && o.label >= m->classes) {
        rc = cmd_fail(o.cmd, "--label %d is outside the spec's classes 0..%d", o.label, m->classes - 1);
        goto done;
    }
    labels = xcalloc((size_t)n, sizeof(int32_t));
    for (int i = 0; i < n; i++) labels[i] = o.has_label ? o.label : m->classes > 0 ? i % m->classes : 0;
    img = xmalloc((size_t)n * (size_t)(m->height * m->width * m->channels));
    SampleBar bar = {isatty(2) != 0, -1e30};
    double t0 = rt_now();
    uint64_t seed = o.has_seed ? o.seed : 1;
    if (rt_sample(m, o.raw ? ck.params : ck.ema, n, m->classes > 0 ? labels : NULL, seed, batch, img, sample_progress,
                  &bar, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    if (rt_png_write_grid(outp, img, n, m->height, m->width, m->channels, o.cols, 2, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    fprintf(stderr, "pxc sample: %d images (%s weights of step %" PRId64 ", seed %" PRIu64 ") in %.1f s → %s\n", n,
            o.raw ? "raw" : "EMA", ck.step, seed, rt_now() - t0, outp);
done:
    if (m && m->release) m->release(m);
    rt_ckpt_free(&ck);
    if (L.have_graph || L.text) loaded_free(&L);
    free(labels);
    free(img);
    free(path);
    free(o.sets);
    return rc;
}

/* ---- pxc import ------------------------------------------------------------------------------ */

int cmd_import(int argc, char **argv) {
    Opts o;
    int rc = parse_opts(argc, argv, C_IMPORT, &o);
    if (rc) {
        free(o.sets);
        return rc;
    }
    if (!o.from || !o.output) {
        free(o.sets);
        return usage_error(&o, "needs --from WEIGHTS.safetensors and -o CKPT");
    }
    pxc_tensor *t = NULL;
    float *params = NULL;
    RtSafetensors *st = NULL;
    char err[2048];
    Loaded L;
    if ((rc = load_spec(&o, &L))) goto done;
    int n;
    int64_t np;
    t = rt_param_table(&L.g, &n, &np);
    st = rt_st_open(o.from, err, sizeof err);
    if (!st) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    params = xcalloc((size_t)(np ? np : 1), sizeof(float));
    for (int i = 0; i < n; i++) {
        const RtStTensor *s = rt_st_find(st, t[i].name);
        if (!s) {
            rc = cmd_fail(o.cmd, "'%s' has no tensor '%s', which the spec needs", o.from, t[i].name);
            goto done;
        }
        bool same = s->rank == t[i].rank && s->dtype == RT_ST_F32;
        for (int d = 0; same && d < s->rank; d++) same = s->shape[d] == t[i].shape[d];
        if (!same) {
            char a[96] = "[", b[96] = "[";
            for (int d = 0; d < s->rank; d++) snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", d ? "," : "", (long long)s->shape[d]);
            for (int d = 0; d < t[i].rank; d++) snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
            rc = cmd_fail(o.cmd, "'%s': tensor '%s' is %s %s] but the spec needs F32 %s]", o.from, t[i].name,
                      rt_st_dtype_name(s->dtype), a, b);
            goto done;
        }
        memcpy(params + t[i].offset, s->data, (size_t)t[i].numel * sizeof(float));
    }
    if (rt_st_count(st) != n) {
        for (int i = 0; i < rt_st_count(st); i++) {
            const char *nm = rt_st_name(st, i);
            bool known = false;
            for (int j = 0; j < n && !known; j++) known = !strcmp(nm, t[j].name);
            if (!known) {
                rc = cmd_fail(o.cmd, "'%s' has a tensor '%s' that the spec does not have", o.from, nm);
                goto done;
            }
        }
    }
    int64_t bad;
    if (!rt_all_finite(params, np, &bad)) {
        int k = rt_param_tensor_at(t, n, bad);
        rc = cmd_fail(o.cmd, "'%s': tensor '%s' holds a non-finite value", o.from, k >= 0 ? t[k].name : "?");
        goto done;
    }
    RtCheckpoint ck;
    memset(&ck, 0, sizeof ck);
    ck.params = params;
    ck.ema = params;
    ck.adam = rt_adam_defaults();
    ck.spec_name = L.info.name;
    ck.spec_resolved = L.info.resolved;
    ck.spec_hash = L.info.hash;
    if (rt_ckpt_write(o.output, t, n, &ck, err, sizeof err)) {
        rc = cmd_fail(o.cmd, "%s", err);
        goto done;
    }
    fprintf(stderr, "pxc import: %d tensors (%lld parameters) from %s → %s\n", n, (long long)np, o.from, o.output);
done:
    if (st) rt_st_close(st);
    free(params);
    free(t);
    if (L.have_graph || L.text) loaded_free(&L);
    free(o.sets);
    return rc;
}
