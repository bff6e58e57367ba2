/*
 * cmd_emit.c — `pxc emit`: the compiled program as standalone C.
 *
 *     pxc emit SPEC [--set k=v]... [--checkpoint C [--raw]] [--name NAME] -o DIR
 *
 * writes DIR/model.h (the pxc_model ABI, the parameter layout, the model
 * instance), DIR/model.c (one function per fused kernel, each naming its
 * YAML source) and DIR/model.weights (the parameters: a checkpoint's EMA
 * weights, its raw ones with --raw, or without a checkpoint the spec's
 * initial values before data-dependent init). The same kernel IR that the
 * JIT compiles is printed, so both run the same arithmetic.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autodiff/autodiff.h"
#include "base/base.h"
#include "c/emitc.h"
#include "checkpoint.h"
#include "cmds.h"
#include "fileio.h"
#include "kernels/kir.h"
#include "params_init.h"
#include "spec/spec.h"

static const char *emit_usage =
    "usage: pxc emit SPEC [--set k=v]... [--checkpoint C [--raw]] [--name NAME] -o DIR\n";

/* A C identifier from the spec's name, or "model". */
static char *model_name(const char *spec_name) {
    char *s = xstrdup(spec_name ? spec_name : "model");
    for (char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) *p = '_';
    if (!kir_valid_name(s)) {
        free(s);
        s = xstrdup("model");
    }
    return s;
}

int cmd_emit(int argc, char **argv) {
    const char *spec = NULL, *out = NULL, *ckpt = NULL, *name = NULL;
    bool raw = false;
    const char **sets = xcalloc((size_t)argc, sizeof(char *));
    int nsets = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(a, "-o") || !strcmp(a, "--output") ? &out : !strcmp(a, "--checkpoint") ? &ckpt
                          : !strcmp(a, "--name") ? &name : NULL;
        if (slot || !strcmp(a, "--set")) {
            if (!v || (!slot && !strchr(v, '='))) {
                fprintf(stderr, "pxc emit: %s needs %s\n%s", a, slot ? "a value" : "key=value", emit_usage);
                free(sets);
                return 2;
            }
            if (slot) *slot = v;
            else sets[nsets++] = v;
            i++;
        } else if (!strcmp(a, "--raw")) {
            raw = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "pxc emit: unknown option '%s'\n%s", a, emit_usage);
            free(sets);
            return 2;
        } else if (!spec) {
            spec = a;
        } else {
            fprintf(stderr, "pxc emit: unexpected argument '%s'\n%s", a, emit_usage);
            free(sets);
            return 2;
        }
    }
    if (!spec || !out) {
        fprintf(stderr, "pxc emit: needs a SPEC and -o DIR\n%s", emit_usage);
        free(sets);
        return 2;
    }
    if (raw && !ckpt) {
        fprintf(stderr, "pxc emit: --raw selects a checkpoint's raw weights; give --checkpoint\n%s", emit_usage);
        free(sets);
        return 2;
    }
    if (name && !kir_valid_name(name)) {
        free(sets);
        return cmd_fail("emit", "--name '%s' is not a usable C identifier (letters, digits, '_'; not a C keyword; "
                         "not starting with 'pxc_')", name);
    }

    char err[1024];
    size_t len;
    char *text = rt_read_file(spec, &len, err, sizeof err);
    if (!text) {
        free(sets);
        return cmd_fail("emit", "%s", err);
    }
    Graph g;
    SpecInfo info;
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile_ex(spec, text, len, sets, nsets, &g, &info, &dl);
    free(text);
    free(sets);
    if (rc == 0 && !ad_differentiate(&g, false, &dl)) rc = 1;
    char *mname = name ? xstrdup(name) : model_name(rc == 0 ? info.name : NULL);
    KirOptions ko = {0};
    ko.name = mname;
    KirProgram *prog = rc == 0 ? kir_lower(&g, &ko, &dl) : NULL;
    diag_print(&dl, stderr, isatty(2));
    diag_free(&dl);
    if (!prog) {
        free(mname);
        if (rc == 0) spec_info_free(&info);
        ir_graph_free(&g);
        return 1;
    }

    /* the weights */
    int nt = 0;
    int64_t np = 0;
    pxc_tensor *table = rt_param_table(&g, &nt, &np);
    float *params = NULL;
    RtCheckpoint ck;
    memset(&ck, 0, sizeof ck);
    if (ckpt) {
        if (rt_ckpt_read(ckpt, table, nt, np, &ck, err, sizeof err)) {
            rc = cmd_fail("emit", "%s", err);
            goto done;
        }
        params = raw ? ck.params : ck.ema;
    } else {
        params = xmalloc(sizeof(float) * (size_t)(np ? np : 1));
        if (rt_params_init(&g, table, nt, 1, params, err, sizeof err)) {
            rc = cmd_fail("emit", "%s", err);
            goto done;
        }
    }

    if (rt_mkdirs(out, err, sizeof err)) {
        rc = cmd_fail("emit", "%s", err);
        goto done;
    }
    StrBuf cmd = {0};
    for (int i = 0; i < argc; i++) sb_printf(&cmd, "%s%s", i ? " " : "", argv[i]);
    EmitcOptions eo = {cmd.s, spec, "model.h"};
    char *hp = xasprintf("%s/model.h", out), *cp = xasprintf("%s/model.c", out), *wp = xasprintf("%s/model.weights", out);
    FILE *h = fopen(hp, "w"), *c = fopen(cp, "w"), *w = fopen(wp, "wb");
    if (!h || !c || !w) {
        rc = cmd_fail("emit", "cannot create the files in '%s': %s", out, strerror(errno));
    } else if (emitc_program(prog, h, c, &eo) || emitc_write_weights(prog, params, w)) {
        rc = cmd_fail("emit", "cannot write the files in '%s': %s", out, strerror(errno));
    }
    if (h && fclose(h)) rc = cmd_fail("emit", "cannot write '%s'", hp);
    if (c && fclose(c)) rc = cmd_fail("emit", "cannot write '%s'", cp);
    if (w && fclose(w)) rc = cmd_fail("emit", "cannot write '%s'", wp);
    if (rc == 0)
        printf("pxc emit: %s/model.h, %s/model.c and %s/model.weights (%lld parameters, %s) for model '%s'\n"
               "build: cc -std=c11 -O2 -c %s/model.c (link a CBLAS and -lm; or -DPXC_NO_CBLAS for plain C)\n",
               out, out, out, (long long)np, ckpt ? (raw ? "raw weights" : "EMA weights") : "initial values", mname,
               out);
    free(hp), free(cp), free(wp);
    sb_free(&cmd);
done:
    if (!ckpt) free(params);
    rt_ckpt_free(&ck);
    free(table);
    kir_free(prog);
    free(mname);
    spec_info_free(&info);
    ir_graph_free(&g);
    return rc;
}
