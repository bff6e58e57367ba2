/*
 * test_e2e_train.c — the pxc program ($PXC_BIN) end to end:
 *   - SIGKILL mid-run: `pxc train` killed with SIGKILL once its first
 *     checkpoint exists; every checkpoint left is sound; `--resume` finishes,
 *     and the result is byte-identical to an uninterrupted run;
 *   - training on a few hundred real Fashion-MNIST images (cropped to 24x24
 *     and averaged down to 12x12 so the reference backend runs it in
 *     seconds; generated images when dataset-fashion-mnist is absent):
 *     test bits/dim goes down; `pxc eval` reproduces the run's figure;
 *     `pxc sample` writes a PNG grid of the right size;
 *   - `pxc import` of the reference weights, then `pxc eval` on the
 *     reference images reproduces the reference loss (shared/reference);
 *   - clear errors for data of the wrong size and mismatched weights.
 */
#include "test_train_util.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "runtime/checkpoint.h"
#include "runtime/data.h"
#include "runtime/image.h"
#include "runtime/params_init.h"
#include "spec/spec.h"

static const char *pxc_bin;

static int setup(void **state) {
    (void)state;
    pxc_bin = getenv("PXC_BIN");
    return tt_setup("test_e2e");
}
static int teardown(void **state) {
    (void)state;
    return tt_teardown();
}

/* ---- running pxc ---------------------------------------------------------------- */

static const char *spec_path(void) { return tu_path(tu_source_dir(), "models/pixelcnnpp_cifar10.yaml"); }

/* pxc <cmd> SPEC with the tiny spec's --set values (each key in `over`
 * replacing tt_sets' value). */
static Cmd pxc_cmd(const char *cmd, const char *const *over, int nover) {
    Cmd c = {{0}, 0};
    if (!pxc_bin) skip();
    cmd_add(&c, pxc_bin);
    cmd_add(&c, cmd);
    cmd_add(&c, spec_path());
    for (int i = 0; i < TT_NSETS; i++) {
        size_t kl = strcspn(tt_sets[i], "=");
        bool replaced = false;
        for (int j = 0; j < nover; j++) replaced |= !strncmp(over[j], tt_sets[i], kl + 1);
        if (!replaced) cmd_add(&c, "--set"), cmd_add(&c, tt_sets[i]);
    }
    for (int j = 0; j < nover; j++) cmd_add(&c, "--set"), cmd_add(&c, over[j]);
    return c;
}

static pid_t spawn(const Cmd *c, const char *out_path) {
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork failed");
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execv(c->argv[0], (char *const *)c->argv);
        _exit(127);
    }
    return pid;
}

/* Run to completion; returns the exit status, output in *out (malloc'd). */
static int run(const Cmd *c, char **out) {
    const char *log = tt_path("last_output.txt");
    pid_t pid = spawn(c, log);
    int st;
    if (waitpid(pid, &st, 0) != pid) fail_msg("waitpid failed");
    size_t n;
    char *text = tu_read_file(log, &n);
    if (out) *out = text ? text : strdup("");
    else free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void run_ok(const Cmd *c) {
    char *out;
    int rc = run(c, &out);
    if (rc != 0) fail_msg("pxc %s exited %d:\n%s", c->argv[1], rc, out);
    free(out);
}

/* The tiny spec's parameter table (names and shapes), without a back end. */
typedef struct Table {
    Graph g;
    pxc_tensor *t;
    int n;
    int64_t np;
} Table;

static void table_new(Table *tb, const char *const *over, int nover) {
    const char *sets[16];
    int n = 0;
    for (int i = 0; i < TT_NSETS; i++) {
        size_t kl = strcspn(tt_sets[i], "=");
        bool replaced = false;
        for (int j = 0; j < nover; j++) replaced |= !strncmp(over[j], tt_sets[i], kl + 1);
        if (!replaced) sets[n++] = tt_sets[i];
    }
    for (int j = 0; j < nover; j++) sets[n++] = over[j];
    DiagList dl;
    diag_init(&dl);
    if (spec_compile(spec_path(), sets, n, &tb->g, &dl)) fail_msg("spec does not compile");
    diag_free(&dl);
    tb->t = rt_param_table(&tb->g, &tb->n, &tb->np);
}
static void table_free(Table *tb) {
    free(tb->t);
    ir_graph_free(&tb->g);
}

static void read_ckpt(const Table *tb, const char *path, RtCheckpoint *ck) {
    char err[1024];
    if (rt_ckpt_read(path, tb->t, tb->n, tb->np, ck, err, sizeof err)) fail_msg("%s", err);
}

/* ---- SIGKILL and resume ----------------------------------------------------------- */

static void add_train_args(Cmd *c, const char *data, const char *out) {
    cmd_add(c, "--data"), cmd_add(c, data);
    cmd_add(c, "--out"), cmd_add(c, out);
    cmd_add(c, "--steps"), cmd_add(c, "60");
    cmd_add(c, "--checkpoint-every"), cmd_add(c, "3");
    cmd_add(c, "--eval-every"), cmd_add(c, "20");
    cmd_add(c, "--log-every"), cmd_add(c, "5");
    cmd_add(c, "--seed"), cmd_add(c, "3");
    cmd_add(c, "--progress"), cmd_add(c, "lines");
}

static void test_sigkill_resume(void **state) {
    (void)state;
    const char *data = tt_path("kill_data");
    tt_make_data(data, 64, 16, 1);
    Cmd straight = pxc_cmd("train", NULL, 0);
    add_train_args(&straight, data, tt_path("straight"));
    run_ok(&straight);

    const char *dir = tt_path("killed");
    Cmd c = pxc_cmd("train", NULL, 0);
    add_train_args(&c, data, dir);
    pid_t pid = spawn(&c, tt_path("killed_output.txt"));
    int64_t *steps = NULL;
    int n = 0;
    char err[512];
    for (int i = 0; i < 20000 && n == 0; i++) {  /* up to 100 s */
        free(steps);
        rt_ckpt_list(dir, &steps, &n, err, sizeof err);
        if (!n) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
    }
    free(steps);
    assert_true(n > 0);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) fail_msg("pxc train ended before the kill (status %d)", st);

    /* every checkpoint on disk is whole */
    Table tb;
    table_new(&tb, NULL, 0);
    assert_int_equal(rt_ckpt_list(dir, &steps, &n, err, sizeof err), 0);
    assert_true(n >= 1);
    int64_t killed_at = steps[n - 1];
    assert_true(killed_at < 60);
    for (int i = 0; i < n; i++) {
        RtCheckpoint ck;
        char *p = rt_ckpt_path(dir, steps[i]);
        read_ckpt(&tb, p, &ck);
        assert_int_equal(ck.step, steps[i]);
        rt_ckpt_free(&ck);
        free(p);
    }
    free(steps);

    /* resume to the end: identical to the run never killed */
    cmd_add(&c, "--resume");
    char *out;
    int rc = run(&c, &out);
    if (rc != 0) fail_msg("resume exited %d:\n%s", rc, out);
    char want[64];
    snprintf(want, sizeof want, "resuming %s from step %lld", dir, (long long)killed_at);
    if (!strstr(out, want)) fail_msg("no '%s' in:\n%s", want, out);
    free(out);
    RtCheckpoint a, b;
    read_ckpt(&tb, tt_path("straight/ckpt-00000060.safetensors"), &a);
    read_ckpt(&tb, tt_path("killed/ckpt-00000060.safetensors"), &b);
    size_t bytes = (size_t)tb.np * sizeof(float);
    assert_memory_equal(a.params, b.params, bytes);
    assert_memory_equal(a.ema, b.ema, bytes);
    assert_memory_equal(a.adam_m, b.adam_m, bytes);
    assert_memory_equal(a.adam_v, b.adam_v, bytes);
    rt_ckpt_free(&a);
    rt_ckpt_free(&b);
    /* only the last 3 checkpoints are kept, and no temporary file */
    assert_int_equal(rt_ckpt_list(dir, &steps, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(steps[2], 60);
    free(steps);

    /* metrics.jsonl: training records strictly increasing in step (the
     * killed run's records past its checkpoint were dropped), the same
     * test figures as the straight run */
    size_t len;
    char *m1 = tu_read_file(tt_path("killed/metrics.jsonl"), &len);
    char *m2 = tu_read_file(tt_path("straight/metrics.jsonl"), &len);
    assert_non_null(m1);
    assert_non_null(m2);
    double last = -1, tests1[8], tests2[8];
    int nt1 = 0, nt2 = 0, ntrain = 0;
    for (char *line = strtok(m1, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        assert_non_null(o);
        double s = cJSON_GetObjectItem(o, "step")->valuedouble;
        if (cJSON_IsNumber(cJSON_GetObjectItem(o, "train_bpd"))) {
            assert_true(s > last);
            last = s;
            ntrain++;
        }
        cJSON *t = cJSON_GetObjectItem(o, "test_bpd");
        if (cJSON_IsNumber(t) && !cJSON_IsNumber(cJSON_GetObjectItem(o, "train_bpd")) && nt1 < 8) tests1[nt1++] = t->valuedouble;
        cJSON_Delete(o);
    }
    assert_int_equal(ntrain, 12);  /* every 5 steps to 60 */
    for (char *line = strtok(m2, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cJSON *t = cJSON_GetObjectItem(o, "test_bpd");
        if (cJSON_IsNumber(t) && !cJSON_IsNumber(cJSON_GetObjectItem(o, "train_bpd")) && nt2 < 8) tests2[nt2++] = t->valuedouble;
        cJSON_Delete(o);
    }
    assert_int_equal(nt1, 3);
    assert_int_equal(nt2, 3);
    for (int i = 0; i < 3; i++) assert_true(tests1[i] == tests2[i]);
    free(m1);
    free(m2);
    /* the run directory records the spec and both command lines */
    char *cmds = tu_read_file(tt_path("killed/commands.txt"), &len);
    assert_non_null(cmds);
    int lines = 0;
    for (char *p = cmds; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 2);
    assert_non_null(strstr(cmds, "--resume"));
    free(cmds);
    char *res = tu_read_file(tt_path("killed/spec.resolved"), &len);
    assert_non_null(res);
    assert_non_null(strstr(res, "nr_filters=4"));
    free(res);
    assert_int_equal(access(tt_path("killed/spec.yaml"), F_OK), 0);
    table_free(&tb);
}

/* ---- real data, end to end ---------------------------------------------------------- */

/* 28x28 → crop 2 pixels each side → 24x24 → mean of 2x2 blocks → 12x12. */
static void shrink(const uint8_t *src, uint8_t *dst) {
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 12; j++) {
            int s = 0;
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) s += src[(2 + 2 * i + a) * 28 + 2 + 2 * j + b];
            dst[i * 12 + j] = (uint8_t)((s + 2) / 4);
        }
}

static double json_number(const char *text, const char *key) {
    cJSON *o = cJSON_Parse(text);
    if (!o) fail_msg("not JSON: %s", text);
    cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number '%s' in %s", key, text);
    double d = v->valuedouble;
    cJSON_Delete(o);
    return d;
}

/* The test_bpd of the last evaluation record in a metrics file. */
static double last_test_bpd(const char *path, int64_t *step) {
    size_t len;
    char *m = tu_read_file(path, &len);
    assert_non_null(m);
    double bpd = NAN;
    for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cJSON *t = cJSON_GetObjectItem(o, "test_bpd");
        if (cJSON_IsNumber(t)) bpd = t->valuedouble, *step = (int64_t)cJSON_GetObjectItem(o, "step")->valuedouble;
        cJSON_Delete(o);
    }
    free(m);
    return bpd;
}

static void test_e2e_fashion(void **state) {
    (void)state;
    enum { NTRAIN = 320, NTEST = 64 };
    const char *data = tt_path("fashion12");
    mkdir(data, 0755);
    uint8_t *tr = malloc(NTRAIN * 144), *te = malloc(NTEST * 144), *ltr = malloc(NTRAIN), *lte = malloc(NTEST);
    RtDataset full_tr, full_te;
    char err[512];
    bool real = rt_dataset_load(RT_DEFAULT_DATA, RT_SPLIT_TRAIN, &full_tr, err, sizeof err) == 0 &&
                rt_dataset_load(RT_DEFAULT_DATA, RT_SPLIT_TEST, &full_te, err, sizeof err) == 0;
    if (real) {
        for (int i = 0; i < NTRAIN; i++) shrink(full_tr.pixels + (size_t)i * 784, tr + i * 144), ltr[i] = (uint8_t)full_tr.labels[i];
        for (int i = 0; i < NTEST; i++) shrink(full_te.pixels + (size_t)i * 784, te + i * 144), lte[i] = (uint8_t)full_te.labels[i];
        rt_dataset_free(&full_tr);
        rt_dataset_free(&full_te);
    } else {
        fprintf(stderr, "test_e2e_fashion: %s absent, using generated images\n", RT_DEFAULT_DATA);
        tt_make_images(777, NTRAIN, 12, 12, 10, tr, ltr);
        tt_make_images(778, NTEST, 12, 12, 10, te, lte);
    }
    tt_write_idx(data, "train", tr, NTRAIN, 12, 12, ltr);
    tt_write_idx(data, "t10k", te, NTEST, 12, 12, lte);
    free(tr), free(te), free(ltr), free(lte);

    const char *over[] = {"height=12", "width=12", "nr_filters=8", "dropout=0"};
    const char *rundir = tt_path("fashion_run");
    /* 4 steps, then resumed to 100 with evaluations along the way */
    Cmd c = pxc_cmd("train", over, 4);
    cmd_add(&c, "--data"), cmd_add(&c, data);
    cmd_add(&c, "--out"), cmd_add(&c, rundir);
    cmd_add(&c, "--lr"), cmd_add(&c, "0.004");
    cmd_add(&c, "--progress"), cmd_add(&c, "lines");
    Cmd c1 = c;
    cmd_add(&c1, "--steps"), cmd_add(&c1, "4");
    run_ok(&c1);
    int64_t s0;
    double bpd0 = last_test_bpd(tu_path(rundir, "metrics.jsonl"), &s0);
    assert_int_equal(s0, 4);
    Cmd c2 = c;
    cmd_add(&c2, "--steps"), cmd_add(&c2, "100");
    cmd_add(&c2, "--eval-every"), cmd_add(&c2, "25");
    cmd_add(&c2, "--resume");
    run_ok(&c2);
    int64_t s1;
    double bpd1 = last_test_bpd(tu_path(rundir, "metrics.jsonl"), &s1);
    assert_int_equal(s1, 100);
    fprintf(stderr, "test_e2e_fashion (%s): test bits/dim %.4f at step 4, %.4f at step 100\n",
            real ? "Fashion-MNIST" : "generated", bpd0, bpd1);
    if (!(bpd1 < bpd0 - 0.5)) fail_msg("test bits/dim did not go down: %.4f at step 4, %.4f at step 100", bpd0, bpd1);

    /* pxc eval reproduces the run's final figure, every test image counted */
    Cmd e = pxc_cmd("eval", over, 4);
    cmd_add(&e, "--checkpoint"), cmd_add(&e, rundir);
    cmd_add(&e, "--data"), cmd_add(&e, data);
    cmd_add(&e, "--batch"), cmd_add(&e, "7");
    cmd_add(&e, "--json");
    char *out;
    int rc = run(&e, &out);
    if (rc) fail_msg("pxc eval exited %d:\n%s", rc, out);
    double bpd_eval = json_number(out, "bpd");
    assert_int_equal(json_number(out, "images"), NTEST);
    assert_int_equal(json_number(out, "subpixels"), NTEST * 144);
    assert_int_equal(json_number(out, "step"), 100);
    if (fabs(bpd_eval - bpd1) > 1e-9) fail_msg("pxc eval: %.12f, the run: %.12f", bpd_eval, bpd1);
    free(out);

    /* pxc sample: a 3x3 grid of 12x12 images with 2-pixel gaps */
    const char *png = tt_path("grid.png");
    Cmd sm = pxc_cmd("sample", over, 4);
    cmd_add(&sm, "--checkpoint"), cmd_add(&sm, rundir);
    cmd_add(&sm, "-n"), cmd_add(&sm, "9");
    cmd_add(&sm, "-o"), cmd_add(&sm, png);
    cmd_add(&sm, "--seed"), cmd_add(&sm, "5");
    run_ok(&sm);
    RtImage img;
    if (rt_png_read(png, &img, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(img.H, 3 * 12 + 4 * 2);
    assert_int_equal(img.W, 3 * 12 + 4 * 2);
    assert_int_equal(img.C, 1);
    int distinct = 0, seen[256] = {0};
    for (int i = 0; i < img.H * img.W; i++) distinct += !seen[img.pixels[i]]++;
    assert_true(distinct > 10);
    rt_image_free(&img);

    /* data of another size: a clear error, nothing trained */
    const char *d8 = tt_path("d8");
    tt_make_data(d8, 32, 8, 1);
    Cmd bad = pxc_cmd("eval", over, 4);
    cmd_add(&bad, "--checkpoint"), cmd_add(&bad, rundir);
    cmd_add(&bad, "--data"), cmd_add(&bad, d8);
    rc = run(&bad, &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "8x8x1") || !strstr(out, "12x12x1")) fail_msg("message: %s", out);
    free(out);
    Cmd badt = pxc_cmd("train", over, 4);
    cmd_add(&badt, "--data"), cmd_add(&badt, d8);
    cmd_add(&badt, "--out"), cmd_add(&badt, tt_path("never"));
    rc = run(&badt, &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, "8x8x1") || !strstr(out, "--set height=8")) fail_msg("message: %s", out);
    assert_int_equal(access(tt_path("never"), F_OK), -1);
    free(out);
}

/* ---- import of the reference weights ------------------------------------------------- */

static void test_import_reference(void **state) {
    (void)state;
    char ref[1024];
    snprintf(ref, sizeof ref, "%s/model/c1_r1_f8_m3_8x8", tu_reference_dir());
    size_t n;
    uint8_t *x = tu_read_file(tu_path(ref, "x_u8.bin"), &n);
    if (!x) skip();
    assert_int_equal(n, 2 * 64);
    float *loss = tu_read_f32(tu_path(ref, "loss.bin"), 1);
    const char *data = tt_path("refdata");
    mkdir(data, 0755);
    tt_write_idx(data, "train", x, 2, 8, 8, NULL);
    tt_write_idx(data, "t10k", x, 2, 8, 8, NULL);

    const char *over[] = {"nr_filters=8", "nr_mix=3", "dropout=0"};
    const char *ck = tt_path("imported.safetensors");
    Cmd im = pxc_cmd("import", over, 3);
    cmd_add(&im, "--from"), cmd_add(&im, tu_path(ref, "weights.safetensors"));
    cmd_add(&im, "-o"), cmd_add(&im, ck);
    run_ok(&im);
    for (int raw = 0; raw < 2; raw++) {
        Cmd e = pxc_cmd("eval", over, 3);
        cmd_add(&e, "--checkpoint"), cmd_add(&e, ck);
        cmd_add(&e, "--data"), cmd_add(&e, data);
        cmd_add(&e, "--json");
        if (raw) cmd_add(&e, "--raw");
        char *out;
        int rc = run(&e, &out);
        if (rc) fail_msg("pxc eval exited %d:\n%s", rc, out);
        double nats = json_number(out, "nats");
        /* the reference's float64 loss rounded to float32 */
        if (fabs(nats - loss[0]) > 1e-6 * loss[0]) fail_msg("imported weights: %.7f nats, reference %.7f", nats, loss[0]);
        double bpd = loss[0] / (log(2.0) * 128);   /* to the same relative tolerance as the nats */
        assert_true(fabs(json_number(out, "bpd") - bpd) <= 1e-6 * bpd);
        free(out);
    }
    /* weights of another shape, and a file of another model */
    const char *wrong[] = {"nr_filters=4", "nr_mix=3"};
    Cmd w = pxc_cmd("import", wrong, 2);
    cmd_add(&w, "--from"), cmd_add(&w, tu_path(ref, "weights.safetensors"));
    cmd_add(&w, "-o"), cmd_add(&w, tt_path("wrong.safetensors"));
    char *out;
    assert_int_equal(run(&w, &out), 1);
    if (!strstr(out, "init.u.v") || !strstr(out, "[2,3,2,8]") || !strstr(out, "[2,3,2,4]")) fail_msg("message: %s", out);
    free(out);
    const char *cond[] = {"nr_filters=8", "nr_mix=3", "classes=4"};
    Cmd w2 = pxc_cmd("import", cond, 3);
    cmd_add(&w2, "--from"), cmd_add(&w2, tu_path(ref, "weights.safetensors"));
    cmd_add(&w2, "-o"), cmd_add(&w2, tt_path("wrong.safetensors"));
    assert_int_equal(run(&w2, &out), 1);
    if (!strstr(out, "cond.hw")) fail_msg("message: %s", out);
    free(out);
    assert_int_equal(access(tt_path("wrong.safetensors"), F_OK), -1);
    free(loss);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_resume),
        cmocka_unit_test(test_e2e_fashion),
        cmocka_unit_test(test_import_reference),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
