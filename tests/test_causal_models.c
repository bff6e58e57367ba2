/*
 * test_causal_models.c — the causality prover on the shipped specs: every
 * spec in models/ and models/ablations/ compiles (as shipped, no overrides)
 * to a causal graph; the paper model's check time is printed;
 * broken edits of the paper spec are rejected at the right YAML line.
 */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"
#include "spec/spec.h"

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.yaml files of dir (relative to the source tree), sorted. */
static int list_specs(const char *dir, char **out, int max) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tu_source_dir(), dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".yaml") && n < max)
            out[n++] = xasprintf("%s/%s", path, e->d_name);
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, cmp_str);
    return n;
}

static void check_spec_file(const char *path, int *checked) {
    Graph g;
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile(path, NULL, 0, &g, &dl);
    if (rc) diag_print(&dl, stderr, false);
    assert_int_equal(rc, 0);
    CheckReport rep;
    double t0 = seconds();
    bool ok = check_causality(&g, &rep, &dl);
    double dt = seconds() - t0;
    if (!ok) diag_print(&dl, stderr, false);
    assert_true(ok);
    assert_int_equal(dl.n, 0);
    assert_int_equal(rep.bad_node, -1);
    const CheckField *f = &rep.field[g.out];
    printf("%-48s %dx%d, %5d forward nodes: causal, checked in %6.1f ms; output (%d,%d) sees %lld pixels\n",
           strrchr(path, '/') + 1, g.H, g.W, g.nfwd, 1e3 * dt, f->at_i, f->at_j, (long long)f->deps_count);
    /* never its own pixel or a later one: every dependency is strictly
     * before (at_i, at_j) */
    assert_true(f->top + f->rows - 1 <= f->at_i);
    (*checked)++;
    check_report_free(&rep);
    ir_graph_free(&g);
    diag_free(&dl);
}

static void test_shipped_specs_causal(void **state) {
    (void)state;
    char *specs[64];
    int n = list_specs("models", specs, 64);
    n += list_specs("models/ablations", specs + n, 64 - n);
    assert_true(n >= 4);
    int checked = 0;
    for (int i = 0; i < n; i++) {
        check_spec_file(specs[i], &checked);
        free(specs[i]);
    }
    assert_int_equal(checked, n);
}

/* The paper model at 32x32 sees the whole causal half-plane from its centre:
 * all 16 rows above and the 16 pixels to its left, 16 * 32 + 16 = 528. So
 * does the no-downsampling ablation there: its u stream alone grows by two
 * rows per gated resnet (two [2,3] convs), and it has 30 of them. With one
 * resnet per stage (nr_resnet=1) the ablation's field no longer covers it. */
static void test_paper_receptive_field(void **state) {
    (void)state;
    const char *names[3] = {"models/pixelcnnpp_cifar10.yaml", "models/ablations/no_downsampling.yaml",
                            "models/ablations/no_downsampling.yaml"};
    const char *r1[] = {"nr_resnet=1"};
    int64_t count[3];
    for (int k = 0; k < 3; k++) {
        Graph g;
        DiagList dl;
        diag_init(&dl);
        assert_int_equal(spec_compile(tu_path(tu_source_dir(), names[k]), r1, k == 2, &g, &dl), 0);
        CheckReport rep;
        assert_true(check_causality(&g, &rep, &dl));
        const CheckField *f = &rep.field[g.out];
        assert_int_equal(f->at_i, 16);
        assert_int_equal(f->at_j, 16);
        count[k] = f->deps_count;
        if (k < 2) {
            assert_int_equal(f->deps_count, 16 * 32 + 16);
            assert_int_equal(f->top, 0);
            assert_int_equal(f->rows, 17);
            assert_int_equal(f->cols, 32);
        }
        check_report_free(&rep);
        ir_graph_free(&g);
        diag_free(&dl);
    }
    printf("receptive field at (16,16): %lld pixels (paper), %lld (no downsampling), %lld (no downsampling, "
           "nr_resnet=1)\n", (long long)count[0], (long long)count[1], (long long)count[2]);
    assert_true(count[2] < count[1]);
}

/* ---- broken edits of the paper spec -------------------------------------- */

/* The paper spec with `from` replaced by `to`, compiled small. */
static void compile_edited(const char *from, const char *to, Graph *g, DiagList *dl) {
    size_t len;
    char *text = tu_read_file(tu_path(tu_source_dir(), "models/pixelcnnpp_cifar10.yaml"), &len);
    assert_non_null(text);
    char *at = strstr(text, from);
    assert_non_null(at);
    char *edited = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    const char *sets[] = {"nr_resnet=1", "nr_filters=8", "nr_mix=2"};
    int rc = spec_compile_text("edited.yaml", edited, strlen(edited), sets, 3, g, dl);
    if (rc) diag_print(dl, stderr, false);
    assert_int_equal(rc, 0);
    free(edited);
    free(text);
}

static void expect_diag(const DiagList *dl, int i, DiagLevel lv, int line, int col, const char *msg) {
    assert_true(i < dl->n);
    assert_int_equal(dl->items[i].level, lv);
    assert_string_equal(dl->items[i].msg, msg);
    assert_int_equal(dl->items[i].loc.line, line);
    assert_int_equal(dl->items[i].loc.col, col);
}

static void test_spec_missing_down_shift(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    compile_edited("u = down_shift(conv(x1, nr_filters, [2, 3]))", "u = conv(x1, nr_filters, [2, 3])", &g, &dl);
    CheckReport rep;
    assert_false(check_causality(&g, &rep, &dl));
    assert_int_equal(dl.nerrors, 1);
    expect_diag(&dl, 0, DIAG_ERROR, 33, 17,
                "layer 'init.u' is not causal: output pixel (0,0) depends on input pixel (0,0), which comes at or "
                "after it in raster order");
    expect_diag(&dl, 1, DIAG_NOTE, 33, 17,
                "the dependency enters at 'init.u' (conv2d) and reaches the output along input pixel (0,0) -> "
                "'concat' (0,0) -> 'init.u' (0,0) -> 'up.0.u.0' (0,0) -> 'up.0.ul.0' (0,0) -> ... -> 'out' (0,0) "
                "(positions in each layer's own grid)");
    assert_int_equal(dl.n, 2);
    check_report_free(&rep);
    ir_graph_free(&g);
    diag_free(&dl);
}

static void test_spec_ul_with_u_conv(void **state) {
    (void)state;
    Graph g;
    DiagList dl;
    diag_init(&dl);
    compile_edited("up.{s}.ul.{i}: ul = gated_resnet(ul, u, [2, 2], down_right)",
                   "up.{s}.ul.{i}: ul = gated_resnet(ul, u, [2, 3], down)", &g, &dl);
    CheckReport rep;
    assert_false(check_causality(&g, &rep, &dl));
    assert_int_equal(dl.nerrors, 1);
    expect_diag(&dl, 0, DIAG_ERROR, 24, 20,
                "layer 'up.0.ul.0.conv1' is not causal: output pixel (0,0) depends on input pixel (0,0), which "
                "comes at or after it in raster order");
    expect_diag(&dl, 1, DIAG_NOTE, 24, 20,
                "the dependency enters at 'up.0.ul.0.conv1' (conv2d) and reaches the output along input pixel "
                "(0,0) -> ... -> 'add' (0,1) -> 'up.0.ul.0' (0,0) -> 'up.0.ul_down' (0,0) -> 'up.1.ul.0' (0,0) "
                "-> ... -> 'out' (0,0) (positions in each layer's own grid)");
    expect_diag(&dl, 2, DIAG_NOTE, 45, 33, "'up.0.ul.0.conv1' is part of 'up.0.ul.0' (gated_resnet), here");
    assert_int_equal(dl.n, 3);
    check_report_free(&rep);
    ir_graph_free(&g);
    diag_free(&dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_specs_causal),
        cmocka_unit_test(test_paper_receptive_field),
        cmocka_unit_test(test_spec_missing_down_shift),
        cmocka_unit_test(test_spec_ul_with_u_conv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
