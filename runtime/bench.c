/* bench.c — sgemm peak on the model's shapes, peak RSS; see bench.h. */
#include "bench.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/base.h"
#include "llvm/jit.h"

int rt_gemm_shapes(const Graph *g, int batch, RtGemmShape **out) {
    RtGemmShape *s = NULL;
    int n = 0, cap = 0;
    int end = g->nfwd ? g->nfwd : g->n;
    for (int i = 0; i < end; i++) {
        const Node *nd = &g->nodes[i];
        const Shape *x = nd->nin ? &g->nodes[nd->in[0]].shape : NULL;
        RtGemmShape cur = {0, 0, 0, 1, false, false};
        if (nd->op == IR_CONV2D) {
            cur.m = (int64_t)batch * nd->shape.d[0] * nd->shape.d[1];
            cur.n = nd->shape.d[2];
            cur.k = (int64_t)nd->a.kh * nd->a.kw * x->d[2];
        } else if (nd->op == IR_DECONV2D) {
            cur.m = (int64_t)batch * x->d[0] * x->d[1];
            cur.n = (int64_t)nd->a.kh * nd->a.kw * nd->shape.d[2];
            cur.k = x->d[2];
        } else {
            continue;
        }
        RtGemmShape three[3] = {cur, {cur.m, cur.k, cur.n, 1, false, true}, {cur.k, cur.n, cur.m, 1, true, false}};
        for (int t = 0; t < 3; t++) {
            RtGemmShape c = three[t];
            int j = 0;
            while (j < n && !(s[j].m == c.m && s[j].n == c.n && s[j].k == c.k && s[j].ta == c.ta && s[j].tb == c.tb)) j++;
            if (j < n) s[j].count++;
            else VEC_PUSH(s, n, cap, c);
        }
    }
    *out = s;
    return n;
}

typedef struct Part {
    const float *a, *b;
    float *c;
    int64_t m, n, k, lda, ldb;
    bool ta, tb;
} Part;

static void *run_part(void *arg) {
    Part *p = arg;
    if (p->m > 0)
        jit_rt_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans, p->tb ? CblasTrans : CblasNoTrans, (int)p->m,
                     (int)p->n, (int)p->k, 1.0f, p->a, (int)p->lda, p->b, (int)p->ldb, 0.0f, p->c, (int)p->n);
    return NULL;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double rt_sgemm_peak(const RtGemmShape *s, int n, int threads, int reps) {
    if (threads < 1) threads = 1;
    if (threads > 8) threads = 8;
    openblas_set_num_threads(1);
    double flops = 0, secs = 0;
    for (int i = 0; i < n; i++) {
        size_t na = (size_t)(s[i].m * s[i].k), nb = (size_t)(s[i].k * s[i].n), nc = (size_t)(s[i].m * s[i].n);
        float *a = xmalloc(na * sizeof(float)), *b = xmalloc(nb * sizeof(float)), *c = xmalloc(nc * sizeof(float));
        for (size_t q = 0; q < na; q++) a[q] = (float)((q * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t q = 0; q < nb; q++) b[q] = (float)((q * 40503u) % 1000) * 1e-3f - 0.5f;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            Part parts[8];
            pthread_t th[8];
            double t0 = now_s();
            int64_t chunk = (s[i].m + threads - 1) / threads;
            for (int t = 0; t < threads; t++) {
                int64_t m0 = t * chunk, m1 = m0 + chunk > s[i].m ? s[i].m : m0 + chunk;
                int64_t lda = s[i].ta ? s[i].m : s[i].k, ldb = s[i].tb ? s[i].k : s[i].n;
                parts[t] = (Part){s[i].ta ? a + m0 : a + m0 * lda, b, c + m0 * s[i].n, m1 > m0 ? m1 - m0 : 0,
                                  s[i].n, s[i].k, lda, ldb, s[i].ta, s[i].tb};
                if (t) pthread_create(&th[t], NULL, run_part, &parts[t]);
            }
            run_part(&parts[0]);
            for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
        }
        flops += 2.0 * (double)s[i].m * (double)s[i].n * (double)s[i].k * s[i].count;
        secs += best * s[i].count;
        free(a), free(b), free(c);
    }
    return secs > 0 ? flops / secs / 1e9 : 0;
}

bool rt_peak_rss_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    bool ok = fputs("5", f) >= 0;   /* 5: reset the peak resident set size (Linux >= 4.0) */
    return fclose(f) == 0 && ok;
}

size_t rt_peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long kb = -1;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
        fclose(f);
        if (kb >= 0) return (size_t)kb * 1024;
    }
    return rt_process_peak_rss_bytes();
}

size_t rt_process_peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024;
}
