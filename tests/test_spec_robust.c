/*
 * test_spec_robust.c — the spec front end (spec_compile_text) on broken and
 * hostile input, and on the shipped specs against figures derived here
 * independently of it.
 *
 * Broken input must give a clear error — a return of non-zero, at least one
 * error, no "internal" message, a location inside the text, and printed
 * diagnostics of bounded size — never a crash, a hang or unbounded memory:
 * empty and comment-only files, every 97th-byte prefix of the paper model,
 * 2000 random byte strings, 2000 random YAML-alphabet strings and 500
 * mutations of the paper model (fixed seeds), 10000-deep nesting, 1 MB
 * scalars, alias bombs, huge repeat counts, template recursion, NUL bytes.
 * The process's peak memory is checked at the end.
 *
 * Positive checks: parameter counts and forward FLOPs from a closed-form
 * count of the PixelCNN++ architecture (pp_params, pp_flops below, written
 * from reference/model/README.md's table) and the figures quoted for the
 * paper model; parameter names, shapes and order against the reference
 * manifest; `extends` merging; every spec under models/ compiling.
 */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check/check.h"
#include "spec/spec.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_state;
static uint64_t rng(void) {  /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static char *read_source(const char *rel, size_t *n) {
    char *t = tu_read_file(tu_path(tu_source_dir(), rel), n);
    assert_non_null(t);
    return t;
}

/* Lines in text[0, len): the largest line number a diagnostic may name. */
static int count_lines(const char *text, size_t len) {
    int n = 1;
    for (size_t i = 0; i < len; i++) n += text[i] == '\n';
    return n;
}

/* The diagnostics of a failed compile are clear: errors with words, no
 * internal errors, locations inside the text, a bounded printout. */
static void assert_clear_failure(const DiagList *dl, const char *name, int lines) {
    assert_true(dl->nerrors >= 1);
    assert_true(dl->n <= 3 * 20 + 60);  /* max_errors plus their notes */
    for (int i = 0; i < dl->n; i++) {
        const Diag *d = &dl->items[i];
        assert_non_null(d->msg);
        assert_true(strlen(d->msg) >= 8);
        if (strstr(d->msg, "internal")) {
            fprintf(stderr, "internal error on input: %s\n", d->msg);
            fail();
        }
        if (d->loc.file && !strcmp(d->loc.file, name)) {
            assert_true(d->loc.line >= 0);
            assert_true(d->loc.line <= lines + 1);
        }
    }
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    diag_print(dl, f, false);
    fclose(f);
    assert_true(blen > 0);
    assert_true(blen < 64 * 1024);
    free(buf);
}

/* Compile text; it must fail, clearly, with `want` in the first error. */
static void expect_error_n(const char *text, size_t len, const char *want) {
    Graph g;
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile_text("robust.yaml", text, len, NULL, 0, &g, &dl);
    if (rc == 0) fprintf(stderr, "compiled, but expected an error with '%s'\n", want);
    assert_int_not_equal(rc, 0);
    assert_clear_failure(&dl, "robust.yaml", count_lines(text, len));
    const char *first = NULL;
    for (int i = 0; i < dl.n && !first; i++)
        if (dl.items[i].level == DIAG_ERROR) first = dl.items[i].msg;
    if (!strstr(first, want)) {
        fprintf(stderr, "expected '%s' in the first error, found:\n", want);
        diag_print(&dl, stderr, false);
        fail();
    }
    diag_free(&dl);
    ir_graph_free(&g);
}

static void expect_error(const char *text, const char *want) { expect_error_n(text, strlen(text), want); }

/* Compile text that may or may not be valid; either way the result is
 * consistent. Returns the status. */
static int compile_any(const char *text, size_t len) {
    Graph g;
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile_text("robust.yaml", text, len, NULL, 0, &g, &dl);
    if (rc) {
        assert_clear_failure(&dl, "robust.yaml", count_lines(text, len));
    } else {
        assert_int_equal(dl.nerrors, 0);
        assert_true(g.loss >= 0 && g.nll >= 0 && g.out >= 0);
    }
    diag_free(&dl);
    ir_graph_free(&g);
    return rc;
}

/* A small valid spec; cases below edit it. */
static const char *tiny =
    "pxc: 1\n"
    "name: tiny\n"
    "params: {nr_filters: 8, nr_mix: 2}\n"
    "input: {height: 8, width: 8, channels: 3}\n"
    "head: {type: logistic_mixture, mixtures: nr_mix}\n"
    "templates:\n"
    "  block:\n"
    "    args: [x]\n"
    "    body:\n"
    "      - c = conv(concat_elu(x), 2 * nr_filters, [2, 3])\n"
    "      - return x + gate(c)\n"
    "network:\n"
    "  - init: u = down_shift(conv(x, nr_filters, [2, 3]))\n"
    "  - b0: u = block(u)\n"
    "  - BODY\n"
    "  - out: l = nin(elu(u), 10 * nr_mix)\n"
    "  - return l\n";

/* tiny with "  - BODY\n" replaced by `body` (several lines allowed). */
static char *tiny_with(const char *body) {
    const char *at = strstr(tiny, "  - BODY\n");
    return xasprintf("%.*s%s%s", (int)(at - tiny), tiny, body, at + strlen("  - BODY\n"));
}

/* ---- broken input ----------------------------------------------------------- */

static void test_tiny_compiles(void **state) {
    (void)state;
    char *t = tiny_with("");
    assert_int_equal(compile_any(t, strlen(t)), 0);
    free(t);
}

static void test_empty_and_blank(void **state) {
    (void)state;
    expect_error_n("", 0, "empty");
    expect_error("   \n\n  \n", "empty");
    expect_error("# only a comment\n   # and another\n\n", "empty");
    expect_error("---\n...\n", "empty");
    expect_error("~\n", "mapping");
    expect_error("- a\n- b\n", "mapping");
    expect_error("just words\n", "mapping");
    expect_error("pxc: 1\n", "input");
    expect_error("pxc: 1\n---\npxc: 1\n", "second");
}

static void test_truncated_paper_model(void **state) {
    (void)state;
    size_t len;
    char *text = read_source("models/pixelcnnpp_cifar10.yaml", &len);
    assert_int_equal(compile_any(text, len), 0);
    const char *ret = strstr(text, "  - return l");
    assert_non_null(ret);
    size_t complete = (size_t)(ret - text) + strlen("  - return l");
    int prefixes = 0;
    for (size_t off = 0; off < len; off += 97, prefixes++) {
        char *p = xstrndup(text, off);
        int rc = compile_any(p, off);
        /* only a prefix that keeps the final return compiles */
        assert_int_equal(rc == 0, off >= complete);
        free(p);
    }
    assert_true(prefixes >= 30);
    free(text);
}

static void test_random_bytes(void **state) {
    (void)state;
    rng_state = 0x5eed1234abcdULL;
    char buf[512];
    for (int k = 0; k < 2000; k++) {
        size_t n = rng() % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (char)(rng() & 0xff);
        assert_int_not_equal(compile_any(buf, n), 0);
    }
}

/* Random text from the characters YAML and statements give meaning to:
 * reaches the tree builder and the statement parser, not just the reader. */
static void test_random_yaml_alphabet(void **state) {
    (void)state;
    static const char alpha[] = "[]{}:-,  \n\n#&*!|>'\"?%@`pxc1:xnetworkinput()=+ 0.5e9\t";
    rng_state = 0xa11ce5ULL;
    char buf[400];
    for (int k = 0; k < 2000; k++) {
        size_t n = rng() % sizeof buf;
        size_t i = 0;
        if (k % 2) i = (size_t)snprintf(buf, sizeof buf, "pxc: 1\nnetwork:\n  - ");
        for (; i < n; i++) buf[i] = alpha[rng() % (sizeof alpha - 1)];
        compile_any(buf, n > i ? n : i);
    }
}

/* Small random edits of the paper model: every result is a clean success
 * or a clean failure. */
static void test_mutated_paper_model(void **state) {
    (void)state;
    static const char alpha[] = "[]{}:-, \n#()=+*0123456789xuls_.";
    size_t len;
    char *text = read_source("models/pixelcnnpp_cifar10.yaml", &len);
    rng_state = 0xfeedULL;
    int ok = 0;
    for (int k = 0; k < 500; k++) {
        char *m = xmalloc(len + 16);
        memcpy(m, text, len);
        size_t n = len;
        int edits = 1 + (int)(rng() % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = rng() % n;
            switch (rng() % 3) {
            case 0: m[at] = alpha[rng() % (sizeof alpha - 1)]; break;       /* replace */
            case 1: memmove(m + at, m + at + 1, n - at - 1), n--; break;    /* delete */
            default:                                                         /* insert */
                memmove(m + at + 1, m + at, n - at), n++;
                m[at] = alpha[rng() % (sizeof alpha - 1)];
            }
        }
        ok += compile_any(m, n) == 0;
        free(m);
    }
    printf("mutations of the paper model: %d of 500 still compile\n", ok);
    free(text);
}

static void test_deep_nesting(void **state) {
    (void)state;
    StrBuf sb = {0};
    sb_printf(&sb, "pxc: 1\nparams:\n  a: ");
    for (int i = 0; i < 10000; i++) sb_putc(&sb, '[');
    expect_error_n(sb.s, sb.len, "nests deeper");
    for (int i = 0; i < 10000; i++) sb_putc(&sb, ']');
    expect_error_n(sb.s, sb.len, "nests deeper");
    sb_free(&sb);

    sb_printf(&sb, "pxc: 1\nparams:\n  a: ");
    for (int i = 0; i < 10000; i++) sb_printf(&sb, "{k: ");
    sb_printf(&sb, "1");
    for (int i = 0; i < 10000; i++) sb_putc(&sb, '}');
    expect_error_n(sb.s, sb.len, "nests deeper");
    sb_free(&sb);

    /* block style: key i indented by i spaces (2000 deep, 2 MB) */
    sb_printf(&sb, "pxc: 1\nparams:\n");
    for (int i = 1; i <= 2000; i++) sb_printf(&sb, "%*sk%d:\n", i, "", i);
    expect_error_n(sb.s, sb.len, "nests deeper");
    sb_free(&sb);

    /* a 10000-deep mapping as sequences of one-key mappings: "- k:" nests too */
    sb_printf(&sb, "pxc: 1\nnetwork:\n");
    for (int i = 0; i < 10000; i++) sb_printf(&sb, "%*s- k:\n", (i % 40) + 2, "");
    compile_any(sb.s, sb.len);
    sb_free(&sb);

    /* deep expressions in one statement */
    char *t;
    StrBuf e = {0};
    sb_printf(&e, "  - k = ");
    for (int i = 0; i < 5000; i++) sb_putc(&e, '(');
    sb_printf(&e, "1\n");
    t = tiny_with(e.s);
    expect_error(t, "nests more than 100 levels");
    free(t), sb_free(&e);
    sb_printf(&e, "  - k = ");
    for (int i = 0; i < 100000; i++) sb_printf(&e, "not ");
    sb_printf(&e, "1\n");
    t = tiny_with(e.s);
    expect_error(t, "nests more than 100 levels");
    free(t), sb_free(&e);
    sb_printf(&e, "  - k = ");
    for (int i = 0; i < 50000; i++) sb_printf(&e, "1 if 1 else ");
    sb_printf(&e, "1\n");
    t = tiny_with(e.s);
    expect_error(t, "nests more than 100 levels");
    free(t), sb_free(&e);
    sb_printf(&e, "  - k = 1");
    for (int i = 0; i < 200000; i++) sb_printf(&e, "+1");
    sb_printf(&e, "\n");
    t = tiny_with(e.s);
    expect_error(t, "too long");
    free(t), sb_free(&e);
}

static void test_megabyte_scalars(void **state) {
    (void)state;
    size_t mb = 1u << 20;
    char *big = xmalloc(mb + 1);
    memset(big, 'a', mb);
    big[mb] = 0;
    char *body, *t;
    /* a 1 MB name in a statement */
    body = xasprintf("  - y = %s\n", big);
    t = tiny_with(body);
    expect_error(t, "more than 256 characters");
    free(body), free(t);
    /* a 1 MB key */
    t = xasprintf("pxc: 1\n%s: 1\n", big);
    expect_error(t, "expected ':'");
    free(t);
    /* a 1 MB quoted string where the head type goes */
    t = xasprintf("pxc: 1\ninput: {height: 8, width: 8, channels: 1}\nhead: {type: \"%s\"}\nnetwork: [return x]\n", big);
    expect_error(t, "unknown head type");
    free(t);
    /* a 1 MB number */
    memset(big, '9', mb);
    body = xasprintf("  - y = %s\n", big);
    t = tiny_with(body);
    expect_error(t, "more than 256 characters");
    free(body), free(t);
    /* a 1 MB name as a (valid) spec name compiles */
    memset(big, 'n', mb);
    char *spec = tiny_with("");
    t = xasprintf("name: %s\n%s", big, strstr(spec, "params:"));
    char *full = xasprintf("pxc: 1\n%s", t);
    assert_int_equal(compile_any(full, strlen(full)), 0);
    free(spec), free(t), free(full);
    free(big);
}

static void test_alias_bombs(void **state) {
    (void)state;
    expect_error("pxc: 1\n"
                 "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                 "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                 "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                 "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                 "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                 "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                 "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
                 "alias bomb");
    /* one wide anchor used many times: 1000 x 1000 nodes */
    StrBuf sb = {0};
    sb_printf(&sb, "pxc: 1\na: &a [");
    for (int i = 0; i < 1000; i++) sb_printf(&sb, "%sx", i ? "," : "");
    sb_printf(&sb, "]\nb: [");
    for (int i = 0; i < 1000; i++) sb_printf(&sb, "%s*a", i ? "," : "");
    sb_printf(&sb, "]\n");
    expect_error_n(sb.s, sb.len, "alias bomb");
    sb_free(&sb);
    expect_error("pxc: 1\na: *nothing\n", "names no anchor");
}

static void test_huge_repeats(void **state) {
    (void)state;
    char *t = tiny_with("  - repeat: 1e9\n    body:\n      - u = elu(u)\n");
    expect_error(t, "'repeat' must be a whole number from 0 to 100000");
    free(t);
    t = tiny_with("  - repeat: 1e999\n    body:\n      - u = elu(u)\n");
    expect_error(t, "'repeat' must be");
    free(t);
    t = tiny_with("  - repeat: -1\n    body:\n      - u = elu(u)\n");
    expect_error(t, "'repeat' must be");
    free(t);
    t = tiny_with("  - repeat: 0/0\n    body:\n      - u = elu(u)\n");
    expect_error(t, "division by zero");
    free(t);
    /* 10^10 iterations in two allowed loops: stopped by the statement bound */
    t = tiny_with("  - repeat: 100000\n    body:\n      - repeat: 100000\n        body:\n          - k = 1\n");
    expect_error(t, "statements");
    free(t);
    /* layers with parameters: stopped by the node bound */
    t = tiny_with("  - repeat: 100000\n    as: i\n    body:\n      - c{i}: u = conv(u, nr_filters, [2, 3])\n");
    expect_error(t, "nodes");
    free(t);
}

static void test_template_recursion(void **state) {
    (void)state;
    const char *direct =
        "pxc: 1\ninput: {height: 8, width: 8, channels: 3}\nhead: {type: logistic_mixture, mixtures: 1}\n"
        "templates:\n  t:\n    args: [x]\n    body:\n      - return t(x)\n"
        "network:\n  - l = t(x)\n  - return l\n";
    expect_error(direct, "template 't' calls itself");
    const char *mutual =
        "pxc: 1\ninput: {height: 8, width: 8, channels: 3}\nhead: {type: logistic_mixture, mixtures: 1}\n"
        "templates:\n"
        "  a:\n    args: [x]\n    body:\n      - return b(x)\n"
        "  b:\n    args: [x]\n    body:\n      - return a(x)\n"
        "network:\n  - l = a(x)\n  - return l\n";
    expect_error(mutual, "template 'a' calls itself through 'b'");
    /* 40 templates in a chain, no recursion: bounded nesting */
    StrBuf sb = {0};
    sb_printf(&sb, "pxc: 1\ninput: {height: 8, width: 8, channels: 3}\nhead: {type: logistic_mixture, mixtures: 1}\n"
                   "templates:\n");
    for (int i = 0; i < 40; i++) sb_printf(&sb, "  t%d:\n    args: [x]\n    body:\n      - return t%d(x)\n", i, i + 1);
    sb_printf(&sb, "  t40:\n    args: [x]\n    body:\n      - return nin(x, 30)\n");
    sb_printf(&sb, "network:\n  - l = t0(x)\n  - return l\n");
    expect_error_n(sb.s, sb.len, "templates nest deeper than");
    sb_free(&sb);
}

static void test_nul_bytes(void **state) {
    (void)state;
    static const char quoted[] = "pxc: 1\nname: \"ab\0cd\"\n";
    expect_error_n(quoted, sizeof quoted - 1, "control characters");
    static const char plain[] = "pxc: 1\nname: ab\0cd\n";
    expect_error_n(plain, sizeof plain - 1, "control characters");
    static const char key[] = "pxc: 1\nna\0me: abc\n";
    expect_error_n(key, sizeof key - 1, "control characters");
    expect_error("pxc: 1\nname: \"ab\\0cd\"\n", "NUL");
    char *t = tiny_with("  - \"y = a\\0b\"\n");
    expect_error(t, "NUL");
    free(t);
}

/* Every section of a spec given a value of every other kind: a clean
 * success or a clean failure, never a crash or an internal error. */
static void test_wrong_kinds(void **state) {
    (void)state;
    static const char *const vals[] = {"5", "[]", "{}", "~", "\"str\"", "[1, [2]]", "{a: 1}", "-1", "1e999", "x",
                                       "{repeat: 2}", "{repeat: 2, body: 3}", "{if: 1}", "{if: 1, body: [], else: 5}",
                                       "[return x]", "[[x]]", "{a: b, c: d}"};
    static const char *const places[] = {
        "params: {nr_filters: 8, nr_mix: 2}",  "params: {nr_filters: %s, nr_mix: 2}",
        "params: {nr_filters: 8, nr_mix: 2}",  "params: %s",
        "input: {height: 8, width: 8, channels: 3}", "input: {height: %s, width: 8, channels: 3}",
        "input: {height: 8, width: 8, channels: 3}", "input: %s",
        "head: {type: logistic_mixture, mixtures: nr_mix}", "head: {type: %s, mixtures: nr_mix}",
        "head: {type: logistic_mixture, mixtures: nr_mix}", "head: {type: logistic_mixture, mixtures: %s}",
        "head: {type: logistic_mixture, mixtures: nr_mix}", "head: %s",
        "    args: [x]", "    args: %s",
        "    args: [x]", "    args: [x, {a: %s}]",
        "  block:\n", "  block: %s\n  unused:\n",
        "  - BODY\n", "  - %s\n",
        "  - BODY\n", "  - b1: %s\n",
        "  - return l\n", "  - return %s\n",
        "name: tiny", "name: %s",
        "pxc: 1", "pxc: %s",
    };
    int failed = 0, total = 0;
    for (size_t p = 0; p < sizeof places / sizeof places[0]; p += 2)
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            const char *at = strstr(tiny, places[p]);
            assert_non_null(at);
            char *with = xasprintf(places[p + 1], vals[v]);
            char *t = xasprintf("%.*s%s%s", (int)(at - tiny), tiny, with, at + strlen(places[p]));
            failed += compile_any(t, strlen(t)) != 0;
            total++;
            free(with), free(t);
        }
    printf("wrong kinds: %d of %d specs rejected, the rest compile\n", failed, total);
    assert_true(failed > total / 2);
}

/* ---- figures derived independently ------------------------------------------------ */

/* Parameters of PixelCNN++ from reference/model/README.md's table: each
 * weight-normalised layer has v plus g and b of its outputs. */
static int64_t wn(int64_t v, int64_t out) { return v + 2 * out; }

static int64_t pp_params(int64_t C, int64_t R, int64_t F, int64_t mix, int64_t classes) {
    int64_t K = C == 1 ? 3 * mix : 10 * mix;
    int64_t p = wn(2 * 3 * (C + 1) * F, F) + wn(1 * 3 * (C + 1) * F, F) + wn(2 * 1 * (C + 1) * F, F);
    int64_t u_res = wn(2 * 3 * 2 * F * F, F) + wn(2 * 3 * 2 * F * 2 * F, 2 * F);
    int64_t ul_res = wn(2 * 2 * 2 * F * F, F) + wn(2 * F * F, F) + wn(2 * 2 * 2 * F * 2 * F, 2 * F);
    p += 3 * R * (u_res + ul_res);                                   /* up pass */
    p += 2 * (wn(2 * 3 * F * F, F) + wn(2 * 2 * F * F, F));          /* u_down, ul_down */
    int64_t nd = R + 2 * (R + 1);                                    /* down pass blocks */
    p += nd * (u_res + wn(2 * F * F, F));
    p += nd * (wn(2 * 2 * 2 * F * F, F) + wn(4 * F * F, F) + wn(2 * 2 * 2 * F * 2 * F, 2 * F));
    p += 2 * (wn(2 * 3 * F * F, F) + wn(2 * 2 * F * F, F));          /* u_up, ul_up */
    p += wn(F * K, K);                                               /* out */
    p += classes * 2 * F * (2 * 3 * R + 2 * nd);                     /* cond.hw per gated resnet */
    return p;
}

/* Forward FLOPs per image: 2 x multiply-adds of every conv, deconv and nin. */
static double conv_fl(double h, double w, double o, double kh, double kw, double c) { return 2 * h * w * o * kh * kw * c; }

static double pp_flops(int H, int W, int C, int R, int F, int mix) {
    double K = C == 1 ? 3 * mix : 10 * mix;
    double f = conv_fl(H, W, F, 2, 3, C + 1) + conv_fl(H, W, F, 1, 3, C + 1) + conv_fl(H, W, F, 2, 1, C + 1);
    for (int s = 0; s < 3; s++) {
        double h = H >> s, w = W >> s;
        f += R * (conv_fl(h, w, F, 2, 3, 2 * F) + conv_fl(h, w, 2 * F, 2, 3, 2 * F));                      /* u */
        f += R * (conv_fl(h, w, F, 2, 2, 2 * F) + conv_fl(h, w, F, 1, 1, 2 * F) + conv_fl(h, w, 2 * F, 2, 2, 2 * F));
        if (s < 2) f += conv_fl(h / 2, w / 2, F, 2, 3, F) + conv_fl(h / 2, w / 2, F, 2, 2, F);
    }
    for (int s = 0; s < 3; s++) {
        double h = H >> (2 - s), w = W >> (2 - s);
        int n = s == 0 ? R : R + 1;
        f += n * (conv_fl(h, w, F, 2, 3, 2 * F) + conv_fl(h, w, F, 1, 1, 2 * F) + conv_fl(h, w, 2 * F, 2, 3, 2 * F));
        f += n * (conv_fl(h, w, F, 2, 2, 2 * F) + conv_fl(h, w, F, 1, 1, 4 * F) + conv_fl(h, w, 2 * F, 2, 2, 2 * F));
        if (s < 2) f += conv_fl(h, w, F, 2, 3, F) + conv_fl(h, w, F, 2, 2, F);  /* deconvs, at their input size */
    }
    return f + conv_fl(H, W, K, 1, 1, F);
}

static void totals(const Graph *g, int64_t *params, double *flops) {
    *params = 0, *flops = 0;
    for (int i = 0; i < g->nfwd; i++) {
        if (g->nodes[i].op == IR_PARAM) *params += shape_numel(g->nodes[i].shape);
        *flops += ir_flops(g, &g->nodes[i]);
    }
}

static void compile_file(const char *rel, const char *const *sets, int nsets, Graph *g) {
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile(tu_path(tu_source_dir(), rel), sets, nsets, g, &dl);
    if (rc) diag_print(&dl, stderr, false);
    assert_int_equal(rc, 0);
    assert_int_equal(dl.n, 0);
    diag_free(&dl);
}

static void test_counts(void **state) {
    (void)state;
    static const struct {
        const char *spec;
        const char *sets[2];
        int nsets;
        int H, W, C, R, F, mix;
        int64_t quoted_params;
        double quoted_gflops;
    } cases[] = {
        {"models/pixelcnnpp_cifar10.yaml", {0}, 0, 32, 32, 3, 5, 160, 10, 53659080, 48.74},
        {"models/pixelcnnpp_cifar10.yaml", {"nr_resnet=2", "nr_filters=64"}, 2, 32, 32, 3, 2, 64, 10, 3874632, 3.58},
        {"models/fashion_mnist.yaml", {0}, 0, 28, 28, 1, 1, 32, 5, 575166, 0.414},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        Graph g;
        compile_file(cases[k].spec, cases[k].sets, cases[k].nsets, &g);
        int64_t params;
        double flops;
        totals(&g, &params, &flops);
        int64_t formula = pp_params(cases[k].C, cases[k].R, cases[k].F, cases[k].mix, 0);
        double fformula = pp_flops(cases[k].H, cases[k].W, cases[k].C, cases[k].R, cases[k].F, cases[k].mix);
        printf("%s %s %s: %lld parameters (formula %lld), %.4f GFLOP (formula %.4f)\n", cases[k].spec,
               cases[k].nsets ? cases[k].sets[0] : "", cases[k].nsets ? cases[k].sets[1] : "", (long long)params,
               (long long)formula, flops / 1e9, fformula / 1e9);
        assert_int_equal(formula, cases[k].quoted_params);
        assert_int_equal(params, cases[k].quoted_params);
        assert_true(fabs(flops - fformula) <= 1e-9 * fformula);
        assert_true(fabs(flops / 1e9 - cases[k].quoted_gflops) <= 0.01 * cases[k].quoted_gflops);
        assert_int_equal(g.H, cases[k].H);
        assert_int_equal(g.C, cases[k].C);
        ir_graph_free(&g);
    }
}

/* The paper spec with each reference case's config as --set overrides
 * makes exactly the manifest's parameters, in its order. */
static void test_reference_manifest(void **state) {
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/model", tu_reference_dir());
    char *mtext = tu_read_file(tu_path(dir, "manifest.json"), NULL);
    if (!mtext) fprintf(stderr, "cannot read %s/manifest.json (set PXC_REFERENCE_DIR)\n", dir);
    assert_non_null(mtext);
    cJSON *man = cJSON_Parse(mtext);
    assert_non_null(man);
    const cJSON *cases = cJSON_GetObjectItem(man, "cases");
    assert_true(cJSON_GetArraySize(cases) >= 3);
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cases) {
        const char *name = cJSON_GetObjectItem(cs, "name")->valuestring;
        char *cpath = xasprintf("%s/%s/config.json", dir, name);
        char *ctext = tu_read_file(cpath, NULL);
        free(cpath);
        assert_non_null(ctext);
        cJSON *cfg = cJSON_Parse(ctext);
        assert_non_null(cfg);
        static const char *const keys[][2] = {{"nr_resnet", "nr_resnet"}, {"nr_filters", "nr_filters"},
                                              {"nr_mix", "nr_mix"},       {"H", "height"},
                                              {"W", "width"},             {"C", "channels"},
                                              {"classes", "classes"}};
        char *sets[7];
        for (int i = 0; i < 7; i++) {
            const cJSON *v = cJSON_GetObjectItem(cfg, keys[i][0]);
            assert_non_null(v);
            sets[i] = xasprintf("%s=%d", keys[i][1], v->valueint);
        }
        Graph g;
        compile_file("models/pixelcnnpp_cifar10.yaml", (const char *const *)sets, 7, &g);
        ParamLayout pl = ir_param_layout(&g);
        const cJSON *ws = cJSON_GetObjectItem(cs, "weights");
        assert_int_equal(pl.n, cJSON_GetArraySize(ws));
        assert_int_equal(pl.n, cJSON_GetObjectItem(cs, "tensors")->valueint);
        assert_int_equal(pl.total, (int64_t)cJSON_GetObjectItem(cs, "params")->valuedouble);
        int i = 0;
        const cJSON *w;
        cJSON_ArrayForEach(w, ws) {
            const char *wname = cJSON_GetObjectItem(w, "name")->valuestring;
            if (strcmp(pl.p[i].name, wname)) {
                fprintf(stderr, "%s: parameter %d is '%s', the manifest has '%s'\n", name, i, pl.p[i].name, wname);
                fail();
            }
            const cJSON *shape = cJSON_GetObjectItem(w, "shape");
            assert_int_equal(pl.p[i].shape.rank, cJSON_GetArraySize(shape));
            for (int d = 0; d < pl.p[i].shape.rank; d++)
                assert_int_equal(pl.p[i].shape.d[d], cJSON_GetArrayItem(shape, d)->valueint);
            i++;
        }
        assert_int_equal(pl.total, pp_params(cJSON_GetObjectItem(cfg, "C")->valueint,
                                             cJSON_GetObjectItem(cfg, "nr_resnet")->valueint,
                                             cJSON_GetObjectItem(cfg, "nr_filters")->valueint,
                                             cJSON_GetObjectItem(cfg, "nr_mix")->valueint,
                                             cJSON_GetObjectItem(cfg, "classes")->valueint));
        printf("%s: %d parameter tensors, %lld floats, as in the manifest\n", name, pl.n, (long long)pl.total);
        ir_param_layout_free(&pl);
        ir_graph_free(&g);
        for (int k = 0; k < 7; k++) free(sets[k]);
        cJSON_Delete(cfg);
        free(ctext);
    }
    cJSON_Delete(man);
    free(mtext);
}

/* ---- extends ---------------------------------------------------------------------- */

static char tmpdir[256];

static void write_file(const char *name, const char *text) {
    FILE *f = fopen(tu_path(tmpdir, name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *resolved_value(const char *resolved, const char *key) {
    static char buf[128];
    char pat[64];
    snprintf(pat, sizeof pat, "%s=", key);
    for (const char *p = resolved; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, pat, strlen(pat))) {
            size_t n = strcspn(p + strlen(pat), "\n");
            snprintf(buf, sizeof buf, "%.*s", (int)n, p + strlen(pat));
            return buf;
        }
    return NULL;
}

static void test_extends(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pxc-spec-robust-%d", (int)getpid());
    mkdir(tmpdir, 0700);
    write_file("base.yaml",
               "pxc: 1\nname: base\nparams: {nr_filters: 8, nr_mix: 2, extra: false}\n"
               "input: {height: 8, width: 8, channels: 3}\nhead: {type: logistic_mixture, mixtures: nr_mix}\n"
               "templates:\n  block:\n    args: [x]\n    body:\n      - c = conv(concat_elu(x), 2 * nr_filters, [2, 3])\n"
               "      - return x + gate(c)\n"
               "network:\n  - init: u = down_shift(conv(x, nr_filters, [2, 3]))\n  - b0: u = block(u)\n"
               "  - out: l = nin(elu(u), 10 * nr_mix)\n  - return l\n");
    write_file("derived.yaml", "pxc: 1\nextends: base.yaml\nname: derived\nparams: {nr_filters: 4, depth: 2}\n"
                               "input: {height: 16}\n");
    write_file("net.yaml", "pxc: 1\nextends: derived.yaml\nname: net\n"
                           "network:\n  - init: u = down_shift(conv(x, nr_filters * depth, [2, 3]))\n"
                           "  - mid: u = nin(u, nr_filters)\n  - b: u = block(u)\n"
                           "  - out: l = nin(elu(u), 10 * nr_mix)\n  - return l\n");
    write_file("cycle_a.yaml", "pxc: 1\nextends: cycle_b.yaml\n");
    write_file("cycle_b.yaml", "pxc: 1\nextends: cycle_a.yaml\n");

    /* params and input merge key by key; name replaces */
    size_t len;
    char *text = tu_read_file(tu_path(tmpdir, "derived.yaml"), &len);
    Graph g;
    SpecInfo info;
    DiagList dl;
    diag_init(&dl);
    assert_int_equal(spec_compile_ex(tu_path(tmpdir, "derived.yaml"), text, len, NULL, 0, &g, &info, &dl), 0);
    assert_string_equal(info.name, "derived");
    assert_string_equal(resolved_value(info.resolved, "nr_filters"), "4");
    assert_string_equal(resolved_value(info.resolved, "nr_mix"), "2");
    assert_string_equal(resolved_value(info.resolved, "depth"), "2");
    assert_string_equal(resolved_value(info.resolved, "extra"), "0");
    assert_int_equal(g.H, 16);
    assert_int_equal(g.W, 8);
    int64_t params;
    double flops;
    totals(&g, &params, &flops);
    /* init [2,3,3,4]; block conv [2,3,8,8]; out [4,20]: each with g and b */
    assert_int_equal(params, wn(2 * 3 * 3 * 4, 4) + wn(2 * 3 * 8 * 8, 8) + wn(4 * 20, 20));
    spec_info_free(&info);
    ir_graph_free(&g);
    diag_free(&dl);
    free(text);

    /* a chain of two; network replaces the base's, templates come through */
    diag_init(&dl);
    assert_int_equal(spec_compile(tu_path(tmpdir, "net.yaml"), NULL, 0, &g, &dl), 0);
    totals(&g, &params, &flops);
    assert_int_equal(params, wn(2 * 3 * 3 * 8, 8) + wn(8 * 4, 4) + wn(2 * 3 * 8 * 8, 8) + wn(4 * 20, 20));
    assert_int_equal(g.H, 16);
    ir_graph_free(&g);
    diag_free(&dl);

    /* --set still reaches a parameter defined only in the base */
    diag_init(&dl);
    const char *sets[] = {"nr_mix=3"};
    assert_int_equal(spec_compile(tu_path(tmpdir, "net.yaml"), sets, 1, &g, &dl), 0);
    assert_int_equal(g.nodes[g.out].shape.d[2], 30);
    ir_graph_free(&g);
    diag_free(&dl);

    /* a cycle is an error at the extends line */
    diag_init(&dl);
    assert_int_not_equal(spec_compile(tu_path(tmpdir, "cycle_a.yaml"), NULL, 0, &g, &dl), 0);
    assert_true(dl.nerrors >= 1);
    assert_non_null(strstr(dl.items[0].msg, "cycle"));
    assert_int_equal(dl.items[0].loc.line, 2);
    ir_graph_free(&g);
    diag_free(&dl);

    /* the shipped derived spec: the paper's templates and network, its own sizes */
    Graph paper;
    compile_file("models/fashion_mnist.yaml", NULL, 0, &g);
    compile_file("models/pixelcnnpp_cifar10.yaml", (const char *const[]){"nr_resnet=1", "nr_filters=32", "nr_mix=5",
                                                                         "height=28", "width=28", "channels=1"},
                 6, &paper);
    ParamLayout a = ir_param_layout(&g), b = ir_param_layout(&paper);
    assert_int_equal(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        assert_string_equal(a.p[i].name, b.p[i].name);
        assert_true(shape_eq(a.p[i].shape, b.p[i].shape));
    }
    ir_param_layout_free(&a), ir_param_layout_free(&b);
    ir_graph_free(&g), ir_graph_free(&paper);

    static const char *const files[] = {"base.yaml", "derived.yaml", "net.yaml", "cycle_a.yaml", "cycle_b.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tu_path(tmpdir, files[i]));
    rmdir(tmpdir);
}

/* ---- the shipped specs ---------------------------------------------------------------- */

static void compile_tree(const char *dir, int *count) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char *path = xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        size_t n = strlen(e->d_name);
        if (S_ISDIR(st.st_mode)) {
            compile_tree(path, count);
        } else if (n > 5 && !strcmp(e->d_name + n - 5, ".yaml")) {
            Graph g;
            DiagList dl;
            diag_init(&dl);
            int rc = spec_compile(path, NULL, 0, &g, &dl);
            if (rc || dl.n) {
                fprintf(stderr, "%s:\n", path);
                diag_print(&dl, stderr, false);
            }
            assert_int_equal(rc, 0);
            assert_int_equal(dl.n, 0);
            assert_true(check_causality(&g, NULL, &dl));
            assert_true(g.loss >= 0);
            printf("%-60s compiles: %d forward nodes\n", path + strlen(tu_source_dir()) + 1, g.nfwd);
            ir_graph_free(&g);
            diag_free(&dl);
            ++*count;
        }
        free(path);
    }
    closedir(d);
}

static void test_shipped_specs(void **state) {
    (void)state;
    int count = 0;
    compile_tree(tu_path(tu_source_dir(), "models"), &count);
    assert_true(count >= 5);
}

/* Last: everything above ran within a bounded peak memory. */
static void test_peak_memory(void **state) {
    (void)state;
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    long mb = ru.ru_maxrss / 1024;
#if defined(__SANITIZE_ADDRESS__)
    long limit = 1536;  /* shadow memory and the allocator's quarantine */
#else
    long limit = 384;
#endif
    printf("peak resident memory: %ld MB (limit %ld MB)\n", mb, limit);
    assert_true(mb < limit);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_compiles),
        cmocka_unit_test(test_empty_and_blank),
        cmocka_unit_test(test_truncated_paper_model),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_random_yaml_alphabet),
        cmocka_unit_test(test_mutated_paper_model),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_megabyte_scalars),
        cmocka_unit_test(test_alias_bombs),
        cmocka_unit_test(test_huge_repeats),
        cmocka_unit_test(test_template_recursion),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_wrong_kinds),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_reference_manifest),
        cmocka_unit_test(test_extends),
        cmocka_unit_test(test_shipped_specs),
        cmocka_unit_test(test_peak_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
