/*
 * pxc.c — the pxc program: a thin driver over libpxc and the runtime. It is
 * the only place that prints diagnostics and exits; each command reads as
 * one call per pipeline stage.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "ir/ir.h"
#include "spec/spec.h"

static const char *usage =
    "usage: pxc <command> [options]\n"
    "\n"
    "commands:\n"
    "  check SPEC [--set k=v]... [--json] [--all] [--dump ir]\n"
    "        parse, expand and shape-check a spec; print its layer table\n"
    "        (name, op, output shape, parameters, forward FLOPs per image) and totals.\n"
    "        --json   the same as one JSON object (params, flops_forward, layers)\n"
    "        --all    list nested layers too (the layers inside each template call)\n"
    "        --dump ir  print the graph IR as stable text instead of the table\n"
    "  help   this text\n"
    "\n"
    "Every command that takes a SPEC accepts --set key=value (repeatable) to override\n"
    "any parameter of the spec: a name under 'params', height, width, channels,\n"
    "classes, head (logistic_mixture|softmax256) or head.mixtures.\n";

typedef struct Args {
    const char *spec;
    const char **sets;
    int nsets;
    bool json, all;
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

/* Load and check a spec; prints diagnostics. 0 on success. */
static int load_spec(const Args *a, Graph *g, SpecInfo *info) {
    DiagList dl;
    diag_init(&dl);
    int rc = 0;
    size_t len = 0;
    FILE *f = fopen(a->spec, "rb");
    if (!f) {
        fprintf(stderr, "pxc: cannot open spec '%s'\n", a->spec);
        diag_free(&dl);
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
            diag_free(&dl);
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
    diag_print(&dl, stderr, isatty(2));
    diag_free(&dl);
    sb_free(&sb);
    return rc;
}

/* ---- pxc check ------------------------------------------------------------- */

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

static int cmd_check(const Args *a) {
    Graph g;
    SpecInfo info;
    memset(&info, 0, sizeof info);
    if (load_spec(a, &g, &info)) {
        ir_graph_free(&g);
        spec_info_free(&info);
        return 1;
    }
    if (a->dump) {
        if (strcmp(a->dump, "ir")) {
            fprintf(stderr, "pxc: unknown --dump stage '%s'; expected ir\n", a->dump);
            ir_graph_free(&g);
            spec_info_free(&info);
            return 2;
        }
        ir_print(&g, stdout, 0, g.n);
        ir_graph_free(&g);
        spec_info_free(&info);
        return 0;
    }
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
        printf("%-28s %-16s %-14s %12s %12s\n", "layer", "op", "output", "params", "MFLOP/img");
        for (int l = 0; l < g.nlayers; l++) {
            const Layer *L = &g.layers[l];
            int depth = 0;
            for (int p = L->parent; p >= 0; p = g.layers[p].parent) depth++;
            if (depth > 0 && !a->all) continue;
            char name[64];
            snprintf(name, sizeof name, "%*s%s", 2 * depth, "", L->name);
            printf("%-28s %-16s %-14s %12lld %12.2f\n", name, L->kind,
                   L->result >= 0 ? shape_str(g.nodes[L->result].shape, buf, sizeof buf) : "-",
                   (long long)st[l].params, st[l].flops / 1e6);
        }
        printf("total: %lld parameters, %.3f GFLOP forward per image\n", (long long)total_params, total_flops / 1e9);
    }
    free(st);
    ir_graph_free(&g);
    spec_info_free(&info);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
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
    fprintf(stderr, "pxc: unknown command '%s'\n%s", argv[1], usage);
    return 2;
}
