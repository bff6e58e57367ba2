/*
 * test_dist.c — data-parallel training over MPI (runtime/dist.h):
 *   - launched normally: the world of one (rank 0 of 1; sums, broadcasts and
 *     agreements leave their values; finalize returns the status);
 *   - the sharding identity on the reference backend, without MPI: the loss
 *     and gradient of a batch of 8 (dropout 0.5) equal the sums over its two
 *     halves when the second half runs with pxc_image_seed(seed, 4), and
 *     differ clearly when it runs with the batch's seed (its masks would
 *     then be image 0..3's);
 *   - the primitives over two processes: this program re-launched by
 *     `mpirun -np 2` in a worker mode checks sums, broadcast, agreement,
 *     equality tests and that rank 1 prints nothing; a rank that fails alone
 *     while the other waits in a sum is aborted, with its message, instead
 *     of hanging the job;
 *   - `mpirun -np 2 pxc train` of the tiny spec (dropout 0.5) on generated
 *     8x8 IDX data ends with the parameters, EMA and Adam moments of a
 *     one-process run of the same global batch within 1e-5 relative per
 *     tensor, at the same step, with the same checkpoint layout and run
 *     directory;
 *   - resuming under MPI gives the same bytes as not stopping;
 *   - `mpirun -np 2 pxc eval` splits the test set and reports every image;
 *   - a batch that does not split over the processes is a clear error and
 *     writes nothing;
 *   - a write that fails on rank 0 alone (a file where the run directory
 *     needs a directory at setup; a file-size limit on rank 0 when the first
 *     checkpoint is written) stops both processes cleanly with rank 0's
 *     message: no hang, no abort.
 * The MPI parts are skipped, with a message, when mpirun is not installed
 * or pxc was built without MPI.
 */
#include "test_train_util.h"

#include <fcntl.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "runtime/checkpoint.h"
#include "runtime/dist.h"
#include "runtime/params_init.h"
#include "runtime/safetensors.h"
#include "runtime/train.h"
#include "spec/spec.h"

static const char *pxc_bin;
static char mpirun[512];
static char self_exe[1024];

/* ---- the worker modes (run under mpirun by the tests below) ---------------------- */

#define WCHECK(cond)                                                                            \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "rank %d: check failed: %s (line %d)\n", rank, #cond, __LINE__);    \
            return rt_dist_finalize(1);                                                         \
        }                                                                                       \
    } while (0)

static int worker(int argc, char **argv, const char *mode) {
    char err[512];
    if (rt_dist_init(&argc, &argv, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rank = rt_dist_rank(), P = rt_dist_size();
    if (!strcmp(mode, "primitives")) {
        WCHECK(P == 2);
        printf("stdout of rank %d\n", rank);
        fprintf(stderr, "stderr of rank %d\n", rank);
        float f[5];
        double d[3];
        for (int i = 0; i < 5; i++) f[i] = (float)(rank + 1) * (float)(i + 1);
        for (int i = 0; i < 3; i++) d[i] = rank ? 1e-17 : 1.0;
        rt_dist_allreduce_sum_f32(f, 5);
        rt_dist_allreduce_sum_f64(d, 3);
        for (int i = 0; i < 5; i++) WCHECK(f[i] == 3.0f * (float)(i + 1));
        for (int i = 0; i < 3; i++) WCHECK(d[i] == 1.0 + 1e-17);
        float b[3] = {(float)rank, 2.5f * (float)rank, -1};
        if (rank == 0) b[0] = 42, b[1] = -7, b[2] = 0.125f;
        rt_dist_broadcast_f32(b, 3);
        WCHECK(b[0] == 42 && b[1] == -7 && b[2] == 0.125f);
        WCHECK(rt_dist_any(rank == 1));
        WCHECK(!rt_dist_any(false));
        WCHECK(rt_dist_same_u64(77));
        WCHECK(!rt_dist_same_u64((uint64_t)rank));
        WCHECK(strstr(rt_dist_describe(), "2 processes") != NULL);
        rt_dist_barrier();
        return rt_dist_finalize(0);
    }
    if (!strcmp(mode, "fail-alone")) {
        /* rank 1 fails; rank 0 waits for it in a sum that never comes */
        if (rank == 1) {
            fprintf(stderr, "worker: rank 1 gives up\n");
            return rt_dist_finalize(3);
        }
        double x = 1;
        rt_dist_allreduce_sum_f64(&x, 1);
        return rt_dist_finalize(0);
    }
    fprintf(stderr, "unknown worker mode '%s'\n", mode);
    return rt_dist_finalize(2);
}

/* ---- running programs ------------------------------------------------------------ */

/* Run to completion with stdout and stderr in separate files; exit status. */
static int run(const Cmd *c, char **out, char **errout) {
    const char *po = tt_path("last_stdout.txt"), *pe = tt_path("last_stderr.txt");
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork failed");
    if (pid == 0) {
        int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0) _exit(126);
        dup2(fo, 1), dup2(fe, 2);
        close(fo), close(fe);
        execv(c->argv[0], (char *const *)c->argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) fail_msg("waitpid failed");
    size_t n;
    char *o = tu_read_file(po, &n), *e = tu_read_file(pe, &n);
    if (out) *out = o ? o : strdup("");
    else free(o);
    if (errout) *errout = e ? e : strdup("");
    else free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void run_ok(const Cmd *c) {
    char *o, *e;
    int rc = run(c, &o, &e);
    if (rc != 0) fail_msg("%s exited %d:\n%s%s", c->argv[0], rc, o, e);
    free(o);
    free(e);
}

/* mpirun with np processes, then the program. */
static Cmd mpi_cmd(int np) {
    Cmd c = {{0}, 0};
    cmd_add(&c, mpirun);
    cmd_add(&c, "--allow-run-as-root");
    cmd_add(&c, "--oversubscribe");
    cmd_add(&c, "-np");
    cmd_add(&c, np == 1 ? "1" : np == 2 ? "2" : "3");
    return c;
}

/* Skip (with a message) unless mpirun exists and this build speaks MPI. */
static void need_mpi(void) {
    if (!mpirun[0]) {
        print_message("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev): skipping the MPI runs\n");
        skip();
    }
    if (!rt_dist_built_with_mpi()) {
        print_message("this pxc was built without MPI (PXC_WITH_MPI=OFF): skipping the MPI runs\n");
        skip();
    }
    if (!pxc_bin) {
        print_message("PXC_BIN is not set: skipping\n");
        skip();
    }
}

/* `[mpirun -np P] pxc train` of the tiny spec. */
static Cmd train_cmd(int np, const char *data, const char *out, const char *steps) {
    Cmd c = {{0}, 0};
    if (np) c = mpi_cmd(np);
    cmd_add(&c, pxc_bin);
    cmd_add(&c, "train");
    cmd_add(&c, tu_path(tu_source_dir(), "models/pixelcnnpp_cifar10.yaml"));
    for (int i = 0; i < TT_NSETS; i++) cmd_add(&c, "--set"), cmd_add(&c, tt_sets[i]);
    cmd_add(&c, "--backend"), cmd_add(&c, "ref");
    cmd_add(&c, "--data"), cmd_add(&c, data);
    cmd_add(&c, "--out"), cmd_add(&c, out);
    cmd_add(&c, "--steps"), cmd_add(&c, steps);
    cmd_add(&c, "--batch"), cmd_add(&c, "8");
    cmd_add(&c, "--eval-batch"), cmd_add(&c, "5");
    cmd_add(&c, "--seed"), cmd_add(&c, "5");
    cmd_add(&c, "--checkpoint-every"), cmd_add(&c, "4");
    cmd_add(&c, "--eval-every"), cmd_add(&c, "4");
    cmd_add(&c, "--log-every"), cmd_add(&c, "2");
    cmd_add(&c, "--progress"), cmd_add(&c, "lines");
    return c;
}

/* ---- comparing checkpoints --------------------------------------------------------- */

static RtSafetensors *open_st(const char *path) {
    char err[1024];
    RtSafetensors *st = rt_st_open(path, err, sizeof err);
    if (!st) fail_msg("%s", err);
    return st;
}

/* Same tensors (names, order, dtypes, shapes) and metadata keys; the values
 * of every tensor within tol relative to its largest magnitude (tol 0:
 * identical bytes); the metadata values equal except the timing and the
 * checksum. Returns the worst relative difference. */
static double compare_ckpt(const char *pa, const char *pb, double tol) {
    RtSafetensors *a = open_st(pa), *b = open_st(pb);
    assert_int_equal(rt_st_count(a), rt_st_count(b));
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < rt_st_count(a); i++) {
        const RtStTensor *ta = rt_st_tensor(a, i), *tb = rt_st_tensor(b, i);
        assert_string_equal(ta->name, tb->name);
        assert_int_equal(ta->dtype, RT_ST_F32);
        assert_int_equal(tb->dtype, RT_ST_F32);
        assert_int_equal(ta->rank, tb->rank);
        for (int d = 0; d < ta->rank; d++) assert_int_equal(ta->shape[d], tb->shape[d]);
        const float *x = ta->data, *y = tb->data;
        int64_t n = rt_st_numel(ta);
        double diff = 0, mag = 0;
        for (int64_t k = 0; k < n; k++) {
            diff = fmax(diff, fabs((double)x[k] - (double)y[k]));
            mag = fmax(mag, fabs((double)y[k]));
        }
        double rel = diff == 0 ? 0 : diff / fmax(mag, 1e-30);
        if (rel > worst) worst = rel, worst_name = ta->name;
    }
    assert_int_equal(rt_st_metadata_count(a), rt_st_metadata_count(b));
    for (int i = 0; i < rt_st_metadata_count(a); i++) {
        const char *k, *va;
        rt_st_metadata_at(a, i, &k, &va);
        const char *vb = rt_st_metadata(b, k);
        if (!vb) fail_msg("metadata '%s' of %s is missing from %s", k, pa, pb);
        if (strcmp(k, "train_seconds") && strcmp(k, "checksum") && strcmp(va, vb))
            fail_msg("metadata '%s': %s has '%s', %s has '%s'", k, pa, va, pb, vb);
    }
    if (worst > tol) fail_msg("%s vs %s: tensor '%s' differs by %.3g relative (tolerance %.3g)", pa, pb, worst_name, worst, tol);
    rt_st_close(a);
    rt_st_close(b);
    return worst;
}

/* The newline-separated names in a run directory, sorted, as one string. */
static char *dir_listing(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -1 '%s'", dir);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen failed");
    char *buf = calloc(1, 8192);
    size_t n = fread(buf, 1, 8191, p);
    buf[n] = 0;
    pclose(p);
    return buf;
}

/* The "step" of every line of a metrics.jsonl, as one string "2,4,4,...". */
static char *metric_steps(const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    size_t n;
    char *text = tu_read_file(path, &n);
    if (!text) fail_msg("no %s", path);
    char *out = calloc(1, n + 1);
    for (const char *p = text; (p = strstr(p, "\"step\":")); p += 7) {
        long s = strtol(p + 7, NULL, 10);
        snprintf(out + strlen(out), n + 1 - strlen(out), "%s%ld", out[0] ? "," : "", s);
    }
    free(text);
    return out;
}

static int count(const char *hay, const char *needle) {
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) k++;
    return k;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_world_of_one(void **state) {
    (void)state;
    /* ctest does not start this program with mpirun */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK")) skip();
    int argc = 1;
    char *args[] = {"test_dist", NULL}, **argv = args;
    char err[256];
    assert_int_equal(rt_dist_init(&argc, &argv, err, sizeof err), 0);
    assert_int_equal(rt_dist_rank(), 0);
    assert_int_equal(rt_dist_size(), 1);
    assert_string_equal(rt_dist_describe(), "one process");
    float f[3] = {1.5f, -2, 1e-30f};
    double d[2] = {0.1, NAN};
    rt_dist_allreduce_sum_f32(f, 3);
    rt_dist_allreduce_sum_f64(d, 2);
    rt_dist_broadcast_f32(f, 3);
    assert_true(f[0] == 1.5f && f[1] == -2 && f[2] == 1e-30f);
    assert_true(d[0] == 0.1 && isnan(d[1]));
    assert_true(rt_dist_any(true));
    assert_false(rt_dist_any(false));
    assert_true(rt_dist_same_u64(12345));
    rt_dist_barrier();
    assert_int_equal(rt_dist_finalize(7), 7);
    assert_int_equal(rt_dist_finalize(0), 0);
}

/* forward + backward of images x[0..n) with seed; the loss, grad[np]. */
static double loss_grad(const pxc_model *m, const float *params, const float *x, int n, uint64_t seed, float *grad) {
    void *arena = aligned_alloc(64, (m->arena_bytes(n) + 63) / 64 * 64 + 64);
    double loss = m->forward(params, x, NULL, n, seed, 1, arena, NULL, NULL);
    m->backward(params, x, NULL, n, arena, grad);
    free(arena);
    return loss;
}

static void test_shard_identity(void **state) {
    (void)state;
    enum { N = 8, HALF = N / 2, NUMEL = 64 };
    Graph g;
    DiagList dl;
    diag_init(&dl);
    if (spec_compile(tu_path(tu_source_dir(), "models/pixelcnnpp_cifar10.yaml"), tt_sets, TT_NSETS, &g, &dl))
        fail_msg("the tiny spec does not compile");
    diag_free(&dl);
    char err[512];
    pxc_model *m = rt_build_model(&g, RT_BACKEND_REF, N, NULL, err, sizeof err);
    if (!m) fail_msg("%s", err);
    int64_t np = m->nparams;
    float *params = malloc((size_t)np * sizeof(float));
    if (rt_params_init(&g, m->params, m->nparam_tensors, 3, params, err, sizeof err)) fail_msg("%s", err);
    uint8_t px[N * NUMEL];
    tt_make_images(99, N, 8, 8, 1, px, NULL);
    float x[N * NUMEL];  /* [N,8,8,1] */
    rt_pixels_to_float(px, N * NUMEL, x);
    float *g_all = malloc((size_t)np * sizeof(float)), *g_a = malloc((size_t)np * sizeof(float)),
          *g_b = malloc((size_t)np * sizeof(float));
    const uint64_t seed = rt_step_seed(5, 1);
    double l_all = loss_grad(m, params, x, N, seed, g_all);
    double l_a = loss_grad(m, params, x, HALF, pxc_image_seed(seed, 0), g_a);
    double l_b = loss_grad(m, params, x + HALF * NUMEL, HALF, pxc_image_seed(seed, HALF), g_b);
    assert_true(fabs(l_all - (l_a + l_b)) <= 1e-9 * fabs(l_all));
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < np; i++) {
        diff = fmax(diff, fabs((double)g_all[i] - ((double)g_a[i] + (double)g_b[i])));
        mag = fmax(mag, fabs((double)g_all[i]));
    }
    assert_true(diff <= 1e-6 * mag);
    /* the second half with the batch's seed draws other masks */
    double l_wrong = loss_grad(m, params, x + HALF * NUMEL, HALF, seed, g_b);
    assert_true(fabs(l_all - (l_a + l_wrong)) > 1e-4 * fabs(l_all));
    double wrong = 0;
    for (int64_t i = 0; i < np; i++) wrong = fmax(wrong, fabs((double)g_all[i] - ((double)g_a[i] + (double)g_b[i])));
    assert_true(wrong > 1e-2 * mag);
    free(g_all), free(g_a), free(g_b), free(params);
    if (m->release) m->release(m);
    ir_graph_free(&g);
}

static void test_primitives_two_ranks(void **state) {
    (void)state;
    need_mpi();
    Cmd c = mpi_cmd(2);
    cmd_add(&c, self_exe);
    cmd_add(&c, "--dist-worker");
    cmd_add(&c, "primitives");
    char *o, *e;
    int rc = run(&c, &o, &e);
    if (rc != 0) fail_msg("the workers exited %d:\n%s%s", rc, o, e);
    /* rank 0 prints; rank 1 does not (it succeeded) */
    assert_non_null(strstr(o, "stdout of rank 0"));
    assert_non_null(strstr(e, "stderr of rank 0"));
    assert_null(strstr(o, "rank 1"));
    assert_null(strstr(e, "rank 1"));
    free(o);
    free(e);
}

static void test_rank_failing_alone_aborts(void **state) {
    (void)state;
    need_mpi();
    Cmd c = mpi_cmd(2);
    cmd_add(&c, self_exe);
    cmd_add(&c, "--dist-worker");
    cmd_add(&c, "fail-alone");
    char *o, *e;
    int rc = run(&c, &o, &e);  /* returns: rank 0 is not left waiting */
    assert_int_not_equal(rc, 0);
    /* rank 1's own message, marked with its rank, and why the job stopped */
    if (!strstr(e, "[rank 1] worker: rank 1 gives up") || !strstr(e, "process 1 of 2 failed"))
        fail_msg("unexpected output:\n%s%s", o, e);
    free(o);
    free(e);
}

static void test_train_two_ranks_equals_one(void **state) {
    (void)state;
    need_mpi();
    char data[1024], one[1024], two[1024], res[1024];  /* tt_path's buffers rotate */
    snprintf(data, sizeof data, "%s", tt_path("data"));
    snprintf(one, sizeof one, "%s", tt_path("one"));
    snprintf(two, sizeof two, "%s", tt_path("two"));
    snprintf(res, sizeof res, "%s", tt_path("resumed"));
    tt_make_data(data, 64, 13, 0);
    Cmd c1 = train_cmd(0, data, one, "10");
    run_ok(&c1);
    Cmd c2 = train_cmd(2, data, two, "10");
    char *o, *e;
    int rc = run(&c2, &o, &e);
    if (rc != 0) fail_msg("mpirun -np 2 pxc train exited %d:\n%s%s", rc, o, e);
    /* one set of messages: rank 0's */
    assert_int_equal(count(o, "test bits/dim:"), 1);
    assert_int_equal(count(e, "pxc train: done at step 10"), 1);
    assert_non_null(strstr(e, "data parallel: MPI"));
    assert_non_null(strstr(e, "4 images per process per step"));
    free(o);
    free(e);

    /* the same checkpoints, files and logged steps; values within 1e-5 */
    char *la = dir_listing(one), *lb = dir_listing(two);
    assert_string_equal(la, lb);
    assert_non_null(strstr(la, "ckpt-00000008.safetensors\nckpt-00000010.safetensors\n"));
    free(la), free(lb);
    char *sa = metric_steps(one), *sb = metric_steps(two);
    assert_string_equal(sa, sb);
    free(sa), free(sb);
    double w8 = compare_ckpt(tt_path("one/ckpt-00000008.safetensors"), tt_path("two/ckpt-00000008.safetensors"), 1e-5);
    double w10 = compare_ckpt(tt_path("one/ckpt-00000010.safetensors"), tt_path("two/ckpt-00000010.safetensors"), 1e-5);
    print_message("two processes vs one: worst relative difference per tensor %.2g (step 8), %.2g (step 10)\n", w8,
                  w10);

    /* resuming under MPI continues bit for bit */
    Cmd c3 = train_cmd(2, data, res, "4");
    run_ok(&c3);
    Cmd c4 = train_cmd(2, data, res, "10");
    cmd_add(&c4, "--resume");
    run_ok(&c4);
    compare_ckpt(tt_path("two/ckpt-00000010.safetensors"), tt_path("resumed/ckpt-00000010.safetensors"), 0);

    /* pxc eval over two processes: every test image once, the same figure */
    double bpd[2];
    for (int np = 0; np < 2; np++) {
        Cmd ce = {{0}, 0};
        if (np) ce = mpi_cmd(2);
        cmd_add(&ce, pxc_bin);
        cmd_add(&ce, "eval");
        cmd_add(&ce, tu_path(tu_source_dir(), "models/pixelcnnpp_cifar10.yaml"));
        for (int i = 0; i < TT_NSETS; i++) cmd_add(&ce, "--set"), cmd_add(&ce, tt_sets[i]);
        cmd_add(&ce, "--backend"), cmd_add(&ce, "ref");
        cmd_add(&ce, "--data"), cmd_add(&ce, data);
        cmd_add(&ce, "--checkpoint"), cmd_add(&ce, two);
        cmd_add(&ce, "--batch"), cmd_add(&ce, "4");
        cmd_add(&ce, "--json");
        rc = run(&ce, &o, &e);
        if (rc != 0) fail_msg("pxc eval exited %d:\n%s%s", rc, o, e);
        assert_int_equal(count(o, "\"bpd\""), 1);  /* rank 0 alone prints */
        cJSON *j = cJSON_Parse(o);
        if (!j) fail_msg("pxc eval --json printed:\n%s", o);
        assert_int_equal((int)cJSON_GetObjectItem(j, "images")->valuedouble, 13);
        bpd[np] = cJSON_GetObjectItem(j, "bpd")->valuedouble;
        cJSON_Delete(j);
        free(o), free(e);
    }
    assert_true(bpd[0] > 0 && fabs(bpd[0] - bpd[1]) <= 1e-12 * bpd[0]);
}

static void expect_clean_stop(const Cmd *c, const char *want, const char *ckpt_dir) {
    char *o, *e;
    int rc = run(c, &o, &e);
    assert_int_not_equal(rc, 0);
    if (count(e, want) != 1 || strstr(e, "MPI_ABORT") || strstr(e, "stopping them all") || strstr(e, "[rank 1]"))
    {
        fprintf(stderr, "%s%s", o, e);  /* cmocka shortens long messages */
        fail_msg("expected one '%s' and a clean stop (output above)", want);
    }
    int64_t *steps = NULL;
    int n = 0;
    char err[512];
    assert_int_equal(rt_ckpt_list(ckpt_dir, &steps, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(steps);
    free(o), free(e);
}

static void test_rank0_write_failure_stops_all(void **state) {
    (void)state;
    need_mpi();
    char data[1024], dir[1024], dir2[1024], metrics[1100];
    snprintf(data, sizeof data, "%s", tt_path("data_w"));
    snprintf(dir, sizeof dir, "%s", tt_path("wfail_setup"));
    snprintf(dir2, sizeof dir2, "%s", tt_path("wfail_loop"));
    tt_make_data(data, 32, 8, 0);
    /* at setup: rank 0 cannot create metrics.jsonl */
    mkdir(dir, 0755);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    mkdir(metrics, 0755);
    Cmd c = train_cmd(2, data, dir, "8");
    expect_clean_stop(&c, "Is a directory", dir);
    /* in the loop: rank 0 may write 20 KB per file (the spec files fit, a
     * checkpoint does not); SIGXFSZ ignored, so the write fails with EFBIG */
    Cmd t = train_cmd(2, data, dir2, "8");
    Cmd w = mpi_cmd(2);
    cmd_add(&w, "/bin/sh");
    cmd_add(&w, "-c");
    cmd_add(&w, "trap '' XFSZ; if [ \"$OMPI_COMM_WORLD_RANK\" = 0 ]; then ulimit -f 40; fi; exec \"$@\"");
    cmd_add(&w, "sh");
    for (int i = 5; i < t.argc; i++) cmd_add(&w, t.argv[i]);  /* pxc train ... without mpirun's words */
    expect_clean_stop(&w, "': File too large", dir2);
}

/* A pxc without MPI refuses to be one of several processes. */
static void test_without_mpi_refuses(void **state) {
    (void)state;
    if (!mpirun[0] || !pxc_bin || rt_dist_built_with_mpi()) skip();
    char data[1024], dir[1024];
    snprintf(data, sizeof data, "%s", tt_path("data_nompi"));
    snprintf(dir, sizeof dir, "%s", tt_path("nompi"));
    tt_make_data(data, 32, 8, 0);
    Cmd c = train_cmd(2, data, dir, "2");
    char *o, *e;
    assert_int_not_equal(run(&c, &o, &e), 0);
    if (!strstr(e, "this pxc was built without MPI but was started as one of 2 processes"))
        fail_msg("unexpected output:\n%s%s", o, e);
    free(o), free(e);
}

static void test_batch_must_split(void **state) {
    (void)state;
    need_mpi();
    char data[1024], dir[1024];
    snprintf(data, sizeof data, "%s", tt_path("data_split"));
    snprintf(dir, sizeof dir, "%s", tt_path("split"));
    tt_make_data(data, 32, 8, 0);
    Cmd c = train_cmd(2, data, dir, "2");
    for (int i = 0; i < c.argc; i++)
        if (!strcmp(c.argv[i], "--batch")) c.argv[i + 1] = "7";
    char *o, *e;
    int rc = run(&c, &o, &e);
    assert_int_not_equal(rc, 0);
    if (!strstr(e, "the batch (7 images) does not split evenly over 2 processes: use a multiple of 2, e.g. --batch 6"))
        fail_msg("unexpected output:\n%s%s", o, e);
    assert_int_equal(count(e, "does not split evenly"), 1);  /* rank 0 speaks for both */
    struct stat sb;
    assert_int_not_equal(stat(dir, &sb), 0);  /* nothing written */
    free(o), free(e);
}

/* mpirun from PATH, or "" */
static void find_mpirun(void) {
    const char *path = getenv("PATH");
    if (!path) return;
    char *dup = strdup(path);
    for (char *tok = strtok(dup, ":"); tok; tok = strtok(NULL, ":")) {
        char p[sizeof mpirun];
        snprintf(p, sizeof p, "%.500s/mpirun", tok);
        if (access(p, X_OK) == 0) {
            snprintf(mpirun, sizeof mpirun, "%s", p);
            break;
        }
    }
    free(dup);
}

static int setup(void **state) {
    (void)state;
    return tt_setup("test_dist");
}
static int teardown(void **state) {
    (void)state;
    return tt_teardown();
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "--dist-worker")) return worker(argc, argv, argv[2]);
    pxc_bin = getenv("PXC_BIN");
    find_mpirun();
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n > 0) self_exe[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_world_of_one),
        cmocka_unit_test(test_shard_identity),
        cmocka_unit_test(test_primitives_two_ranks),
        cmocka_unit_test(test_rank_failing_alone_aborts),
        cmocka_unit_test(test_train_two_ranks_equals_one),
        cmocka_unit_test(test_batch_must_split),
        cmocka_unit_test(test_rank0_write_failure_stops_all),
        cmocka_unit_test(test_without_mpi_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
