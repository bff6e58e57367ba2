/*
 * cmd_bench.c — `pxc bench`: the training step of a spec, measured.
 *
 * Compiles the spec, initialises it (parameters from the spec, then the
 * data-dependent init) on one fixed batch of random images, checks that the
 * first step's loss equals the reference backend's on the same images,
 * weights and dropout masks, runs warm-up steps, then times each measured
 * step: forward (training, dropout on), backward, and the Adam update. It
 * reports medians, images/s, the training FLOP/s (3 × forward FLOPs per
 * image × images/s), that figure as a fraction of the sgemm throughput this
 * machine reaches on the model's own GEMM shapes (measured here, M split over
 * two threads as pxc runs them), the arena size, the peak RSS and, on the
 * JIT, where the measured steps' time goes by kernel kind (GEMM, packing,
 * fused element-wise, weight norm, loss; the optimiser is timed here).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "bench.h"
#include "cmds.h"
#include "data.h"
#include "fileio.h"
#include "llvm/jit.h"
#include "optim.h"
#include "params_init.h"
#include "spec/spec.h"
#include "train.h"

static const char *bench_usage =
    "usage: pxc bench SPEC [--set k=v]... [--batch B] [--steps N] [--warmup W] [--seed S]\n"
    "                 [--backend auto|ref|jit] [--check-images N] [--profile [N]] [--json]\n"
    "  --profile [N]  per call site (a kernel call of an entry, with its YAML note): calls, ms, GFLOP/s or\n"
    "                 GB/s of the measured steps, the N costliest (default 25) and the same by kernel\n";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static bool parse_pos(const char *s, long lo, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > (1L << 30)) return false;
    *out = v;
    return true;
}

/* ---- the per-site profile (--profile) ---------------------------------------------------- */

static const char *entry_label(int e) {
    static const char *const names[] = {"forward", "backward", "loss", "init"};
    return e >= 0 && e < 4 ? names[e] : "?";
}

static const JitProfRow *sort_rows;
static int cmp_site(const void *a, const void *b) {
    double x = sort_rows[*(const int *)a].seconds, y = sort_rows[*(const int *)b].seconds;
    return x > y ? -1 : x < y;
}

/* Indices of rows, costliest first. */
static int *profile_order(const JitProfRow *rows, int n) {
    int *ord = xmalloc(sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) ord[i] = i;
    sort_rows = rows;
    qsort(ord, (size_t)n, sizeof *ord, cmp_site);
    return ord;
}

/* "123.4 GFLOP/s" for GEMMs and convolutions, else the argument bytes' "12.3 GB/s". */
static void rate(char *out, size_t len, double flops, double bytes, double seconds) {
    if (seconds <= 0) snprintf(out, len, "-");
    else if (flops > 0) snprintf(out, len, "%6.1f GFLOP/s", flops / seconds / 1e9);
    else snprintf(out, len, "%6.1f GB/s   ", bytes / seconds / 1e9);
}

static void print_profile(JitProfRow *rows, int n, int top, long steps, long batch, double step_s) {
    double total = 0;
    for (int i = 0; i < n; i++) total += rows[i].seconds;
    int *ord = profile_order(rows, n);
    printf("  call sites, costliest first (ms per measured step; GEMM/conv GFLOP/s, else GB/s of the argument buffers):\n");
    printf("    %8s %6s %6s %-15s  %-9s %-20s %s\n", "ms", "%", "calls", "rate", "entry", "kernel", "note");
    double shown = 0;
    int i = 0;
    for (; i < n && i < top && rows[ord[i]].calls > 0; i++) {
        const JitProfRow *r = &rows[ord[i]];
        double fl = (r->flops0 + r->flops_n * (double)batch) * (double)r->calls;
        double by = (r->bytes0 + r->bytes_n * (double)batch) * (double)r->calls;
        char rt[32];
        rate(rt, sizeof rt, fl, by, r->seconds);
        printf("    %8.2f %5.1f%% %6.0f %-15s  %-9s %-20s %s\n", 1e3 * r->seconds / (double)steps,
               100 * r->seconds / (double)steps / step_s, (double)r->calls / (double)steps, rt, entry_label(r->entry),
               r->kernel, r->note);
        shown += r->seconds;
    }
    int rest = 0;
    for (int k = i; k < n; k++) rest += rows[ord[k]].calls > 0;
    if (rest) printf("    %8.2f %5.1f%%   (%d more call sites)\n", 1e3 * (total - shown) / (double)steps,
                     100 * (total - shown) / (double)steps / step_s, rest);
    /* the same by kernel (a kernel serves every site that calls it) */
    typedef struct { const char *kernel; double s, fl, by, calls; int sites; } Agg;
    Agg *ag = xcalloc((size_t)n + 1, sizeof *ag);
    int na = 0;
    for (int k = 0; k < n; k++) {
        const JitProfRow *r = &rows[ord[k]];
        if (r->calls <= 0) continue;
        int a = 0;
        while (a < na && strcmp(ag[a].kernel, r->kernel)) a++;
        if (a == na) ag[na++].kernel = r->kernel;
        ag[a].s += r->seconds;
        ag[a].fl += (r->flops0 + r->flops_n * (double)batch) * (double)r->calls;
        ag[a].by += (r->bytes0 + r->bytes_n * (double)batch) * (double)r->calls;
        ag[a].calls += (double)r->calls;
        ag[a].sites++;
    }
    for (int a = 1; a < na; a++)   /* insertion sort by time, costliest first */
        for (int b = a; b > 0 && ag[b].s > ag[b - 1].s; b--) {
            Agg t = ag[b];
            ag[b] = ag[b - 1], ag[b - 1] = t;
        }
    printf("  kernels, costliest first:\n");
    printf("    %8s %6s %6s %-15s  %-20s %s\n", "ms", "%", "calls", "rate", "kernel", "sites");
    for (int a = 0; a < na && a < top; a++) {
        char rt[32];
        rate(rt, sizeof rt, ag[a].fl, ag[a].by, ag[a].s);
        printf("    %8.2f %5.1f%% %6.0f %-15s  %-20s %d\n", 1e3 * ag[a].s / (double)steps,
               100 * ag[a].s / (double)steps / step_s, ag[a].calls / (double)steps, rt, ag[a].kernel, ag[a].sites);
    }
    free(ag);
    free(ord);
}

int cmd_bench(int argc, char **argv) {
    const char *spec = NULL;
    const char **sets = xcalloc((size_t)argc, sizeof(char *));
    int nsets = 0;
    long batch = 16, steps = 5, warmup = 2, seed = 1, check_images = -1;
    bool json = false;
    long profile = 0;   /* --profile: rows to print (0: no per-site profile) */
    RtBackend backend = RT_BACKEND_AUTO;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *num = !strcmp(a, "--batch") ? &batch : !strcmp(a, "--steps") ? &steps : !strcmp(a, "--warmup") ? &warmup
                  : !strcmp(a, "--seed") ? &seed : !strcmp(a, "--check-images") ? &check_images : NULL;
        if (num) {
            long lo = num == &batch || num == &steps ? 1 : 0;
            if (!v || !parse_pos(v, lo, num)) {
                fprintf(stderr, "pxc bench: %s expects an integer >= %ld\n%s", a, lo, bench_usage);
                free(sets);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--set")) {
            if (!v || !strchr(v, '=')) {
                fprintf(stderr, "pxc bench: --set needs key=value\n%s", bench_usage);
                free(sets);
                return 2;
            }
            sets[nsets++] = v;
            i++;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--profile")) {
            profile = 25;
            if (v && parse_pos(v, 1, &profile)) i++;
        } else if (!strcmp(a, "--backend")) {
            int b = v ? rt_backend_from_name(v) : -1;
            if (b < 0) {
                fprintf(stderr, "pxc bench: --backend expects auto, ref or jit\n%s", bench_usage);
                free(sets);
                return 2;
            }
            backend = (RtBackend)b;
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "pxc bench: unknown option '%s'\n%s", a, bench_usage);
            free(sets);
            return 2;
        } else if (!spec) {
            spec = a;
        } else {
            fprintf(stderr, "pxc bench: unexpected argument '%s'\n%s", a, bench_usage);
            free(sets);
            return 2;
        }
    }
    if (!spec) {
        fprintf(stderr, "pxc bench: needs a SPEC\n%s", bench_usage);
        free(sets);
        return 2;
    }

    /* compile */
    char err[1024];
    size_t len = 0;
    char *text = rt_read_file(spec, &len, err, sizeof err);
    if (!text) {
        free(sets);
        return cmd_fail("bench", "%s", err);
    }
    Graph g;
    SpecInfo info;
    DiagList dl;
    diag_init(&dl);
    int rc = spec_compile_ex(spec, text, len, sets, nsets, &g, &info, &dl);
    diag_print(&dl, stderr, isatty(2));
    diag_free(&dl);
    free(text);
    free(sets);
    if (rc) {
        ir_graph_free(&g);
        return 1;
    }
    double flops_fwd = 0;
    for (int i = 0; i < g.nfwd; i++) flops_fwd += ir_flops(&g, &g.nodes[i]);
    double t0 = now_s();
    RtBackend chosen;
    pxc_model *m = rt_build_model(&g, backend, (int)batch, &chosen, err, sizeof err);
    double compile_s = now_s() - t0;
    if (!m) {
        spec_info_free(&info);
        ir_graph_free(&g);
        return cmd_fail("bench", "%s", err);
    }
    if (!json)
        fprintf(stderr, "pxc bench: %s on the %s back end, batch %ld (compiled in %.2f s)\n", info.name,
                rt_backend_name(chosen), batch, compile_s);

    /* one fixed batch of random images; parameters from the spec + data-dependent init */
    int64_t per = (int64_t)m->height * m->width * m->channels, nx = per * batch;
    uint8_t *pix = xmalloc((size_t)nx);
    uint64_t st = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int64_t i = 0; i < nx; i++) pix[i] = (uint8_t)(pxc_mix64(st + (uint64_t)i) >> 56);
    float *x = xmalloc(sizeof(float) * (size_t)nx);
    rt_pixels_to_float(pix, nx, x);
    int32_t *labels = xcalloc((size_t)batch, sizeof(int32_t));
    for (long b = 0; b < batch; b++) labels[b] = m->classes > 0 ? (int32_t)(b % m->classes) : 0;
    const int32_t *lab = m->classes > 0 ? labels : NULL;
    float *params = xmalloc(sizeof(float) * (size_t)m->nparams);
    float *grad = xmalloc(sizeof(float) * (size_t)m->nparams);
    float *am = xcalloc((size_t)m->nparams, sizeof(float)), *av = xcalloc((size_t)m->nparams, sizeof(float));
    if (rt_params_init(&g, m->params, m->nparam_tensors, (uint64_t)seed, params, err, sizeof err)) {
        rc = cmd_fail("bench", "%s", err);
        goto out;
    }
    size_t arena_bytes = m->arena_bytes((int)batch);
    void *arena = aligned_alloc(64, (arena_bytes + 63) / 64 * 64 + 64);
    m->init(params, x, lab, (int)batch, arena);

    /* accuracy: the first step's loss against the reference backend on the
     * same images, weights and dropout masks (its first images when the
     * whole batch would take the reference backend too long) */
    double ref_loss = NAN, our_loss = NAN, rel = NAN;
    long ncheck = check_images >= 0 ? (check_images < batch ? check_images : batch)
                                     : (long)fmax(1.0, fmin((double)batch, 4e9 / fmax(flops_fwd, 1.0)));
    uint64_t step_seed = rt_step_seed((uint64_t)seed, 1);
    if (ncheck > 0 && chosen != RT_BACKEND_REF) {
        pxc_model *r = rt_build_model(&g, RT_BACKEND_REF, (int)ncheck, NULL, err, sizeof err);
        if (!r) {
            rc = cmd_fail("bench", "the reference backend: %s", err);
            free(arena);
            goto out;
        }
        void *ra = aligned_alloc(64, (r->arena_bytes((int)ncheck) + 63) / 64 * 64 + 64);
        ref_loss = r->forward(params, x, lab, (int)ncheck, step_seed, 1, ra, NULL, NULL);
        our_loss = m->forward(params, x, lab, (int)ncheck, step_seed, 1, arena, NULL, NULL);
        rel = fabs(our_loss - ref_loss) / fabs(ref_loss);
        free(ra);
        if (r->release) r->release(r);
        if (!json)
            fprintf(stderr, "pxc bench: first-step loss on %ld image%s: %.6f nats, reference backend %.6f (rel. diff %.1e)\n",
                    ncheck, ncheck == 1 ? "" : "s", our_loss, ref_loss, rel);
        if (!(rel <= 1e-4)) {
            rc = cmd_fail("bench", "the %s back end's loss differs from the reference backend's by %.2e (more than 1e-4)",
                            rt_backend_name(chosen), rel);
            free(arena);
            goto out;
        }
    }

    /* the peak RSS reported is the training phase's: from here on (the model,
     * its arena, parameters and optimiser state stay resident; the reference
     * model of the check above is gone, and the heap it freed goes back to
     * the system rather than counting as resident) */
    size_t rss_before = rt_peak_rss_bytes();   /* compile and the check: the whole process's so far */
    malloc_trim(0);
    bool rss_reset = rt_peak_rss_reset();
    RtAdamConfig ac = rt_adam_defaults();
    int total = (int)(warmup + steps);
    double *tf = xcalloc((size_t)total, sizeof(double)), *tb = xcalloc((size_t)total, sizeof(double));
    double *to = xcalloc((size_t)total, sizeof(double)), *ts = xcalloc((size_t)total, sizeof(double));
    double first_loss = NAN;
    bool split = chosen == RT_BACKEND_JIT;
    JitProfRow *sites = NULL;
    int nsites = 0;
    for (int s = 0; s < total; s++) {
        if (split && s == warmup) jit_rt_profile(true);   /* the measured steps only */
        uint64_t sd = rt_step_seed((uint64_t)seed, s + 1);
        double a = now_s();
        double loss = m->forward(params, x, lab, (int)batch, sd, 1, arena, NULL, NULL);
        double b = now_s();
        m->backward(params, x, lab, (int)batch, arena, grad);
        double c = now_s();
        rt_adam_step(&ac, s + 1, params, grad, am, av, m->nparams);
        double d = now_s();
        if (s == 0) first_loss = loss;
        if (!isfinite(loss)) {
            rc = cmd_fail("bench", "non-finite loss at step %d", s + 1);
            break;
        }
        tf[s] = b - a, tb[s] = c - b, to[s] = d - c, ts[s] = d - a;
    }
    double kind_s[JIT_KIND_COUNT] = {0};
    int64_t kind_calls[JIT_KIND_COUNT] = {0};
    if (split) {
        jit_rt_prof_read(kind_s, kind_calls);
        if (profile) nsites = jit_model_profile(m, &sites);
        jit_rt_profile(false);
    }
    double opt_mean = 0, step_mean = 0;
    for (int s = (int)warmup; s < total; s++) opt_mean += to[s] / (double)steps, step_mean += ts[s] / (double)steps;
    if (rc == 0) {
        double step = median(ts + warmup, (int)steps), fwd = median(tf + warmup, (int)steps);
        double bwd = median(tb + warmup, (int)steps), opt = median(to + warmup, (int)steps);
        double ips = (double)batch / step, train_gflops = 3.0 * flops_fwd * ips / 1e9;
        /* before the sgemm measurement below, whose buffers are not the model's */
        size_t rss = rt_peak_rss_bytes(), rss_process = rt_process_peak_rss_bytes();
        if (rss_process < rss_before) rss_process = rss_before;
        RtGemmShape *shapes;
        int ns = rt_gemm_shapes(&g, (int)batch, &shapes);
        double peak = rt_sgemm_peak(shapes, ns, 2, 3);
        free(shapes);

        int64_t naive = 0;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "spec", spec);
            cJSON_AddStringToObject(o, "name", info.name);
            cJSON_AddStringToObject(o, "backend", rt_backend_name(chosen));
            cJSON_AddNumberToObject(o, "batch", (double)batch);
            cJSON_AddNumberToObject(o, "steps", (double)steps);
            cJSON_AddNumberToObject(o, "warmup", (double)warmup);
            cJSON_AddNumberToObject(o, "params", (double)m->nparams);
            cJSON_AddNumberToObject(o, "compile_s", compile_s);
            cJSON_AddNumberToObject(o, "step_ms_median", 1e3 * step);
            cJSON_AddNumberToObject(o, "forward_ms_median", 1e3 * fwd);
            cJSON_AddNumberToObject(o, "backward_ms_median", 1e3 * bwd);
            cJSON_AddNumberToObject(o, "optimiser_ms_median", 1e3 * opt);
            cJSON_AddNumberToObject(o, "images_per_s", ips);
            cJSON_AddNumberToObject(o, "flops_forward_per_image", flops_fwd);
            cJSON_AddNumberToObject(o, "training_gflops", train_gflops);
            cJSON_AddNumberToObject(o, "sgemm_peak_gflops", peak);
            cJSON_AddNumberToObject(o, "fraction_of_sgemm_peak", peak > 0 ? train_gflops / peak : 0);
            cJSON_AddNumberToObject(o, "arena_bytes", (double)arena_bytes);
            cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)rss);
            cJSON_AddNumberToObject(o, "peak_rss_process_bytes", (double)rss_process);
            cJSON_AddBoolToObject(o, "peak_rss_training_only", rss_reset);
            cJSON_AddNumberToObject(o, "first_step_loss_nats", first_loss);
            cJSON_AddNumberToObject(o, "first_step_bits_per_dim", first_loss / (log(2.0) * (double)nx));
            if (split) {
                /* mean seconds per measured step by kernel kind (the optimiser is Adam, timed here) */
                cJSON *sp = cJSON_AddObjectToObject(o, "split_ms_per_step");
                double att = opt_mean;
                for (int k = 0; k < JIT_KIND_COUNT; k++) {
                    cJSON_AddNumberToObject(sp, jit_kernel_kind_name((JitKernelKind)k), 1e3 * kind_s[k] / (double)steps);
                    att += kind_s[k] / (double)steps;
                }
                cJSON_AddNumberToObject(sp, "optimiser", 1e3 * opt_mean);
                cJSON_AddNumberToObject(sp, "unattributed", 1e3 * (step_mean - att));
                cJSON_AddNumberToObject(sp, "step_mean", 1e3 * step_mean);
                cJSON_AddNumberToObject(o, "kernel_calls_per_step", 0);
                double calls = 0;
                for (int k = 0; k < JIT_KIND_COUNT; k++) calls += (double)kind_calls[k] / (double)steps;
                cJSON_SetNumberValue(cJSON_GetObjectItem(o, "kernel_calls_per_step"), calls);
            }
            if (nsites > 0) {
                cJSON *pa = cJSON_AddArrayToObject(o, "profile");
                int *ord = profile_order(sites, nsites);
                for (int i = 0; i < nsites && sites[ord[i]].calls > 0; i++) {
                    const JitProfRow *r = &sites[ord[i]];
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddStringToObject(e, "entry", entry_label(r->entry));
                    cJSON_AddNumberToObject(e, "step", r->step);
                    cJSON_AddStringToObject(e, "kernel", r->kernel);
                    cJSON_AddStringToObject(e, "note", r->note);
                    cJSON_AddStringToObject(e, "kind", jit_kernel_kind_name(r->kind));
                    cJSON_AddNumberToObject(e, "calls_per_step", (double)r->calls / (double)steps);
                    cJSON_AddNumberToObject(e, "ms_per_step", 1e3 * r->seconds / (double)steps);
                    double fl = r->flops0 + r->flops_n * (double)batch, by = r->bytes0 + r->bytes_n * (double)batch;
                    cJSON_AddNumberToObject(e, "flops_per_call", fl);
                    cJSON_AddNumberToObject(e, "bytes_per_call", by);
                    cJSON_AddItemToArray(pa, e);
                }
                free(ord);
            }
            if (!isnan(rel)) {
                cJSON_AddNumberToObject(o, "check_images", (double)ncheck);
                cJSON_AddNumberToObject(o, "check_loss_nats", our_loss);
                cJSON_AddNumberToObject(o, "reference_loss_nats", ref_loss);
                cJSON_AddNumberToObject(o, "loss_rel_diff", rel);
            }
            char *s = cJSON_Print(o);
            puts(s);
            free(s);
            cJSON_Delete(o);
        } else {
            (void)naive;
            printf("%s: batch %ld, %ld steps after %ld warm-up (medians)\n", info.name, batch, steps, warmup);
            printf("  step          %9.2f ms   (forward %.2f, backward %.2f, optimiser %.2f)\n", 1e3 * step, 1e3 * fwd,
                   1e3 * bwd, 1e3 * opt);
            printf("  images/s      %9.2f\n", ips);
            printf("  training      %9.2f GFLOP/s  (3 x %.3f GFLOP forward per image, counted as the direct form does;\n"
                   "                                the Winograd convolutions execute fewer)\n",
                   train_gflops, flops_fwd / 1e9);
            printf("  sgemm peak    %9.2f GFLOP/s  on the model's GEMM shapes, 2 threads -> %.0f%% of it\n", peak,
                   peak > 0 ? 100 * train_gflops / peak : 0);
            printf("  arena         %9.1f MiB for batch %ld\n", (double)arena_bytes / 1048576.0, batch);
            printf("  peak RSS      %9.1f MiB  %s (whole process, the reference check included: %.1f MiB)\n",
                   (double)rss / 1048576.0, rss_reset ? "training" : "process", (double)rss_process / 1048576.0);
            printf("  compile       %9.2f s\n", compile_s);
            if (split) {
                printf("  time split (mean ms per measured step, %% of its %.2f ms):\n", 1e3 * step_mean);
                double att = opt_mean;
                for (int k = 0; k < JIT_KIND_COUNT; k++) {
                    double ms = 1e3 * kind_s[k] / (double)steps;
                    att += kind_s[k] / (double)steps;
                    printf("    %-12s %9.2f ms  %5.1f%%  (%.0f kernel calls)\n", jit_kernel_kind_name((JitKernelKind)k),
                           ms, 100 * ms / (1e3 * step_mean), (double)kind_calls[k] / (double)steps);
                }
                printf("    %-12s %9.2f ms  %5.1f%%\n", "optimiser", 1e3 * opt_mean, 100 * opt_mean / step_mean);
                printf("    %-12s %9.2f ms  %5.1f%%\n", "unattributed", 1e3 * (step_mean - att),
                       100 * (step_mean - att) / step_mean);
            }
            if (nsites > 0) print_profile(sites, nsites, (int)profile, steps, batch, step_mean);
        }
    }
    free(tf), free(tb), free(to), free(ts);
    free(arena);
out:
    free(pix), free(x), free(labels), free(params), free(grad), free(am), free(av);
    if (m->release) m->release(m);
    spec_info_free(&info);
    ir_graph_free(&g);
    return rc;
}
