/*
 * pxc.c — the pxc program: a thin driver over libpxc and the runtime. It is
 * the only place that prints diagnostics and exits; each command reads as
 * one call per pipeline stage.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "autodiff/autodiff.h"
#include "cmds.h"
#include "check/check.h"
#include "kernels/kir.h"
#include "llvm/jit.h"
#include "pxc_model.h"
#include "ir/ir.h"
#include "spec/spec.h"

static const char *usage =
    "usage: pxc <command> [options]\n"
    "\n"
    "commands:\n"
    "  check SPEC [--set k=v]... [--json] [--all] [--batch B] [-v] [--dump ir,grad,kernels]\n"
    "        parse, expand and shape-check a spec; print its layer table\n"
    "        (name, op, output shape, parameters, forward FLOPs per image) and totals.\n"
    "        --json   the same as one JSON object (params, flops_forward, layers)\n"
    "        --all    list nested layers too (the layers inside each template call)\n"
    "        --batch B  arena bytes for batch B (default 16) and the naive sum of activations\n"
    "        -v       also JIT-compile the model and print where the compile time goes\n"
    "        --dump ir    print the forward graph IR as stable text instead of the table\n"
    "        --dump grad  print the backward graph autodiff appends (ir,grad: both)\n"
    "        --dump kernels  print the kernel IR both back ends compile, and the arena plan\n"
    "%s"
    "  bench SPEC [--set k=v]... [--batch B] [--steps N] [--warmup W] [--seed S] [--json]\n"
    "        [--backend auto|ref|jit] [--check-images N] [--profile [N]]\n"
    "        time the training step (forward, backward, Adam) on a fixed random batch:\n"
    "        medians, images/s, training GFLOP/s (3 x the forward's FLOPs as the direct\n"
    "        form counts them) and its fraction of the sgemm peak measured on the\n"
    "        model's own GEMM shapes, arena bytes, peak RSS, time by kernel kind\n"
    "        (--profile: by call site, the N costliest); first checks the step's loss\n"
    "        against the reference backend (1e-4 relative)\n"
    "  emit SPEC [--set k=v]... [--checkpoint C [--raw]] [--name NAME] -o DIR\n"
    "        standalone C: DIR/model.h (the pxc_model ABI and the parameter layout),\n"
    "        DIR/model.c (one function per fused kernel) and DIR/model.weights (a\n"
    "        checkpoint's EMA weights, its raw ones with --raw, else initial values);\n"
    "        builds with any C11 compiler, a CBLAS and libm, or -DPXC_NO_CBLAS alone\n"
    "  help   this text\n"
    "\n"
    "Every command that takes a SPEC accepts --set key=value (repeatable) to override\n"
    "any parameter of the spec: a name under 'params', height, width, channels,\n"
    "classes, head (logistic_mixture|softmax256) or head.mixtures.\n";

typedef struct Args {
    const char *spec;
    const char **sets;
    int nsets;
    bool json, all, verbose;
    int batch;
    const char *dump;
} Args;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "pxc: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'pxc help' for usage\n");
    return 2;
}

static int parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->batch = 16;
    a->sets = xcalloc((size_t)argc, sizeof(char *));
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--set")) {
            if (i + 1 >= argc) return usage_error("--set needs key=value%s", "");
            a->sets[a->nsets++] = argv[++i];
        } else if (!strncmp(s, "--set=", 6)) {
            a->sets[a->nsets++] = s + 6;
        } else if (!strcmp(s, "--json")) {
            a->json = true;
        } else if (!strcmp(s, "--all")) {
            a->all = true;
        } else if (!strcmp(s, "-v") || !strcmp(s, "--verbose")) {
            a->verbose = true;
        } else if (!strcmp(s, "--batch")) {
            char *end;
            long b = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || *end || b < 1 || b > 1 << 20) return usage_error("--batch needs a positive integer%s", "");
            a->batch = (int)b;
            i++;
        } else if (!strcmp(s, "--dump")) {
            if (i + 1 >= argc) return usage_error("--dump needs a stage name (ir)%s", "");
            a->dump = argv[++i];
        } else if (!strncmp(s, "--dump=", 7)) {
            a->dump = s + 7;
        } else if (s[0] == '-' && s[1]) {
            return usage_error("unknown option '%s'", s);
        } else if (!a->spec) {
            a->spec = s;
        } else {
            return usage_error("unexpected argument '%s'", s);
        }
    }
    if (!a->spec) return usage_error("%s needs a SPEC file", argv[1]);
    return 0;
}

/* Load, shape-check and prove causal a spec, collecting diagnostics in dl
 * (the caller prints them). 0 on success. rep may be NULL. */
static int load_spec(const Args *a, Graph *g, SpecInfo *info, CheckReport *rep, DiagList *dl_out) {
    DiagList dl;
    diag_init(&dl);
    int rc = 0;
    size_t len = 0;
    FILE *f = fopen(a->spec, "rb");
    if (!f) {
        fprintf(stderr, "pxc: cannot open spec '%s'\n", a->spec);
        *dl_out = dl;
        return 1;
    }
    StrBuf sb = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (sb.len + n > (64u << 20)) {
            fprintf(stderr, "pxc: spec '%s' is larger than 64 MiB\n", a->spec);
            fclose(f);
            sb_free(&sb);
            *dl_out = dl;
            return 1;
        }
        if (sb.len + n + 1 > sb.cap) {
            sb.cap = (sb.len + n + 1) * 2;
            sb.s = xrealloc(sb.s, sb.cap);
        }
        memcpy(sb.s + sb.len, buf, n);
        sb.len += n;
    }
    fclose(f);
    len = sb.len;
    if (spec_compile_ex(a->spec, sb.s ? sb.s : "", len, a->sets, a->nsets, g, info, &dl) != 0) rc = 1;
    else if (!check_causality(g, rep, &dl)) rc = 1;
    sb_free(&sb);
    *dl_out = dl;
    return rc;
}

/* ---- pxc check ------------------------------------------------------------- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct LayerStats {
    int64_t params;
    double flops;
} LayerStats;

static void layer_stats(const Graph *g, LayerStats *st) {
    memset(st, 0, sizeof(LayerStats) * (size_t)(g->nlayers ? g->nlayers : 1));
    for (int i = 0; i < g->nfwd; i++) {
        const Node *n = &g->nodes[i];
        int64_t p = n->op == IR_PARAM ? shape_numel(n->shape) : 0;
        double fl = ir_flops(g, n);
        for (int l = n->layer; l >= 0; l = g->layers[l].parent) {
            st[l].params += p;
            st[l].flops += fl;
        }
    }
}

static int check_compiled(const Args *a, Graph g, SpecInfo info, CheckReport rep);

/* The spec's diagnostics list also holds its source text, which every
 * SrcLoc (and so every later printout) points into: it lives until the end. */
static int cmd_check(const Args *a) {
    Graph g;
    SpecInfo info;
    CheckReport rep;
    DiagList src;
    memset(&info, 0, sizeof info);
    memset(&rep, 0, sizeof rep);
    int rc = load_spec(a, &g, &info, &rep, &src);
    diag_print(&src, stderr, isatty(2));
    if (rc) {
        ir_graph_free(&g);
        spec_info_free(&info);
        check_report_free(&rep);
        diag_free(&src);
        return 1;
    }
    rc = check_compiled(a, g, info, rep);
    diag_free(&src);
    return rc;
}

static int check_compiled(const Args *a, Graph g, SpecInfo info, CheckReport rep) {
    DiagList dl;
    int rc = 0;
    if (a->dump) {
        /* --dump ir,grad: the stages, in pipeline order */
        bool want_ir = false, want_grad = false, want_kernels = false;
        char *list = xstrdup(a->dump);
        for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
            if (!strcmp(t, "ir")) want_ir = true;
            else if (!strcmp(t, "grad")) want_grad = true;
            else if (!strcmp(t, "kernels")) want_kernels = true;
            else {
                fprintf(stderr, "pxc: unknown --dump stage '%s'; expected ir, grad or kernels\n", t);
                free(list);
                ir_graph_free(&g);
                spec_info_free(&info);
                check_report_free(&rep);
                return 2;
            }
        }
        free(list);
        int nfwd = g.n;
        KirProgram *kp = NULL;
        if (want_grad || want_kernels) {
            diag_init(&dl);
            if (!ad_differentiate(&g, false, &dl)) rc = 1;
            if (!rc && want_kernels) {
                KirOptions ko = {0};
                if (!(kp = kir_lower(&g, &ko, &dl))) rc = 1;
            }
            diag_print(&dl, stderr, isatty(2));
            diag_free(&dl);
        }
        if (want_ir) ir_print(&g, stdout, 0, nfwd);
        if (want_grad && !rc) {
            if (want_ir) printf("\n");
            printf("# backward: d loss / d every parameter\n");
            ir_print(&g, stdout, g.nfwd, g.n);
        }
        if (kp) {
            if (want_ir || want_grad) printf("\n");
            kir_print(kp, stdout);
            kir_arena_report(kp, a->batch, stdout);
            kir_free(kp);
        }
        ir_graph_free(&g);
        spec_info_free(&info);
        check_report_free(&rep);
        return rc;
    }
    /* the back half: autodiff, kernel lowering and memory planning (arena
     * sizes), and with -v the JIT compile and where its time goes */
    double t0 = now_s();
    diag_init(&dl);
    KirProgram *prog = NULL;
    double t_ad = 0, t_lower = 0;
    if (ad_differentiate(&g, false, &dl)) {
        t_ad = now_s() - t0;
        KirOptions ko = {0};
        double t1 = now_s();
        prog = kir_lower(&g, &ko, &dl);
        t_lower = now_s() - t1;
    }
    diag_print(&dl, stderr, isatty(2));
    diag_free(&dl);
    if (!prog) {
        ir_graph_free(&g);
        spec_info_free(&info);
        check_report_free(&rep);
        return 1;
    }
    size_t arena = kir_arena_bytes(prog, a->batch), naive = kir_arena_naive_bytes(prog, a->batch);
    JitTimings jt;
    memset(&jt, 0, sizeof jt);
    bool jitted = false;
    if (a->verbose) {
        diag_init(&dl);
        pxc_model *m = jit_compile(prog, NULL, &dl);
        diag_print(&dl, stderr, isatty(2));
        diag_free(&dl);
        if (!m) {
            kir_free(prog);
            ir_graph_free(&g);
            spec_info_free(&info);
            check_report_free(&rep);
            return 1;
        }
        const JitTimings *tp = jit_model_timings(m);
        if (tp) jt = *tp, jitted = true;
        if (m->release) m->release(m);
    }
    kir_free(prog);
    LayerStats *st = xcalloc((size_t)(g.nlayers + 1), sizeof *st);
    layer_stats(&g, st);
    int64_t total_params = 0;
    double total_flops = 0;
    for (int i = 0; i < g.nfwd; i++) {
        if (g.nodes[i].op == IR_PARAM) total_params += shape_numel(g.nodes[i].shape);
        total_flops += ir_flops(&g, &g.nodes[i]);
    }
    char buf[64];
    if (a->json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "spec", a->spec);
        cJSON_AddStringToObject(root, "name", info.name);
        cJSON *in = cJSON_AddObjectToObject(root, "input");
        cJSON_AddNumberToObject(in, "height", g.H);
        cJSON_AddNumberToObject(in, "width", g.W);
        cJSON_AddNumberToObject(in, "channels", g.C);
        cJSON_AddNumberToObject(in, "classes", g.classes);
        cJSON_AddNumberToObject(root, "params", (double)total_params);
        cJSON_AddNumberToObject(root, "flops_forward", total_flops);
        cJSON_AddNumberToObject(root, "batch", a->batch);
        cJSON_AddNumberToObject(root, "arena_bytes", (double)arena);
        cJSON_AddNumberToObject(root, "activations_naive_bytes", (double)naive);
        if (jitted) {
            cJSON *c = cJSON_AddObjectToObject(root, "compile");
            cJSON_AddNumberToObject(c, "autodiff_s", t_ad);
            cJSON_AddNumberToObject(c, "lower_s", t_lower);
            cJSON_AddNumberToObject(c, "jit_total_s", jt.total);
            cJSON_AddNumberToObject(c, "jit_ir_build_s", jt.ir_build);
            cJSON_AddNumberToObject(c, "jit_optimise_s", jt.optimise);
            cJSON_AddNumberToObject(c, "jit_codegen_s", jt.codegen);
            cJSON_AddNumberToObject(c, "jit_link_s", jt.link);
            cJSON_AddBoolToObject(c, "cache_hit", jt.cache_hit);
            cJSON_AddNumberToObject(c, "kernels", jt.kernels);
            cJSON_AddNumberToObject(c, "kernels_unique", jt.kernels_unique);
        }
        cJSON *layers = cJSON_AddArrayToObject(root, "layers");
        for (int l = 0; l < g.nlayers; l++) {
            const Layer *L = &g.layers[l];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", L->name);
            cJSON_AddStringToObject(o, "op", L->kind);
            if (L->parent >= 0) cJSON_AddStringToObject(o, "parent", g.layers[L->parent].name);
            if (L->result >= 0) cJSON_AddStringToObject(o, "shape", shape_str(g.nodes[L->result].shape, buf, sizeof buf));
            cJSON_AddNumberToObject(o, "params", (double)st[l].params);
            cJSON_AddNumberToObject(o, "flops_forward", st[l].flops);
            if (L->result >= 0 && L->result < rep.n && rep.field[L->result].at_i >= 0) {
                const CheckField *cf = &rep.field[L->result];
                cJSON *rf = cJSON_AddObjectToObject(o, "receptive_field");
                cJSON_AddNumberToObject(rf, "pixels", (double)cf->deps_count);
                cJSON_AddNumberToObject(rf, "rows", cf->rows);
                cJSON_AddNumberToObject(rf, "cols", cf->cols);
            }
            char loc[32];
            snprintf(loc, sizeof loc, "%d:%d", L->loc.line, L->loc.col);
            cJSON_AddStringToObject(o, "loc", loc);
            cJSON_AddItemToArray(layers, o);
        }
        char *txt = cJSON_Print(root);
        puts(txt);
        free(txt);
        cJSON_Delete(root);
    } else {
        printf("%s (%s): input %dx%dx%d%s\n", info.name, a->spec, g.H, g.W, g.C,
               g.classes ? xasprintf(", %d classes", g.classes) : "");
        printf("%-28s %-16s %-12s %10s %10s  %s\n", "layer", "op", "output", "params", "MFLOP/img",
               "receptive field (centre pixel)");
        for (int l = 0; l < g.nlayers; l++) {
            const Layer *L = &g.layers[l];
            int depth = 0;
            for (int p = L->parent; p >= 0; p = g.layers[p].parent) depth++;
            if (depth > 0 && !a->all) continue;
            char name[64];
            snprintf(name, sizeof name, "%*s%s", 2 * depth, "", L->name);
            char rf[64] = "-";
            if (L->result >= 0 && L->result < rep.n && rep.field[L->result].at_i >= 0) {
                const CheckField *cf = &rep.field[L->result];
                snprintf(rf, sizeof rf, "%lld px in %dx%d", (long long)cf->deps_count, cf->rows, cf->cols);
            }
            printf("%-28s %-16s %-12s %10lld %10.2f  %s\n", name, L->kind,
                   L->result >= 0 ? shape_str(g.nodes[L->result].shape, buf, sizeof buf) : "-",
                   (long long)st[l].params, st[l].flops / 1e6, rf);
        }
        printf("total: %lld parameters, %.3f GFLOP forward per image; causal (every output pixel depends only on "
               "earlier pixels)\n", (long long)total_params, total_flops / 1e9);
        printf("memory at batch %d: arena %.1f MiB for forward + backward (every activation kept separately: %.1f MiB)\n",
               a->batch, (double)arena / 1048576.0, (double)naive / 1048576.0);
        if (a->verbose) {
            printf("compile: autodiff %.3f s, kernel lowering + fusion + memory plan %.3f s\n", t_ad, t_lower);
            jit_timings_print(&jt, stdout);
        }
    }
    free(st);
    ir_graph_free(&g);
    spec_info_free(&info);
    check_report_free(&rep);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(argc < 2 ? stderr : stdout, usage, cmd_run_usage);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pxc %s\n", PXC_VERSION);
        return 0;
    }
    Args a;
    if (!strcmp(argv[1], "check")) {
        int r = parse_args(argc, argv, &a);
        if (r) return r;
        r = cmd_check(&a);
        free(a.sets);
        return r;
    }
    if (!strcmp(argv[1], "train")) return cmd_train(argc, argv);
    if (!strcmp(argv[1], "eval")) return cmd_eval(argc, argv);
    if (!strcmp(argv[1], "sample")) return cmd_sample(argc, argv);
    if (!strcmp(argv[1], "import")) return cmd_import(argc, argv);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc, argv);
    if (!strcmp(argv[1], "emit")) return cmd_emit(argc, argv);
    fprintf(stderr, "pxc: unknown command '%s'\n", argv[1]);
    fprintf(stderr, usage, cmd_run_usage);
    return 2;
}
