/*
 * jit_runtime.c — what JIT-compiled kernels call at run time: the symbol
 * table handed to the LLJIT (BLAS, libm, libc memory functions LLVM itself
 * emits calls to, pxc's helpers) and pxc's parallel-for.
 *
 * The parallel-for uses the calling thread plus one persistent worker (two
 * threads: this machine's cores) that claim chunks of a job from a shared
 * counter (see below). OpenBLAS is set to one thread: pxc splits GEMMs itself
 * (MEASURED.md: OpenBLAS's own two-thread mode is slower on small shapes,
 * and both together would oversubscribe the cores).
 */
#include "jit.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "../../runtime/pxc_model.h"

/* ---- the parallel-for -------------------------------------------------------------- */

/*
 * A job is split into nchunks contiguous chunks that the caller and the
 * worker claim one at a time from a shared counter; whoever is free takes
 * the next one. So a late worker (descheduled on a busy machine) costs
 * nothing: the caller claims the chunks it has not taken and never waits for
 * a thread that has not started. The counter carries the job generation in
 * its high 32 bits and the job's chunk count beside the index, so a worker
 * that wakes after its job has ended cannot claim a chunk of the next job by
 * mistake (its compare-and-swap fails), and a successful claim proves the
 * job's fields are still those it read.
 *
 * Waiting never burns a core another process could use: the worker spins
 * with sched_yield (which returns at once when nothing else wants the CPU)
 * for RT_SPIN_NS after a job, then sleeps on a condition variable; the
 * caller yields while waiting for the worker's last chunk.
 */

#define RT_THREADS 2
#define RT_SPIN_NS 100000   /* a worker polls this long for the next job */
#define RT_MAX_CHUNKS 8     /* loops (align 1) split into at most this many chunks */

static struct {
    pthread_once_t once;
    atomic_flag busy;              /* held by the thread running a parallel region */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t claim;        /* gen << 32 | nchunks << 16 | next chunk to claim */
    atomic_int finished;           /* chunks of the current job done */
    atomic_int sleeping;
    JitRtBody body;
    void *ctx;
    int64_t n, chunk;              /* chunk i is [i*chunk, min(n, (i+1)*chunk)) */
    int nchunks;
    bool ok;
} pool = {.once = PTHREAD_ONCE_INIT, .busy = ATOMIC_FLAG_INIT, .mu = PTHREAD_MUTEX_INITIALIZER,
          .cv = PTHREAD_COND_INITIALIZER};

static _Thread_local bool in_region;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t ns_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Claim and run chunks of job `gen` until none is left (or the job is
 * another one). Returns the number of chunks run. */
static int run_chunks(uint32_t gen) {
    int ran = 0;
    uint64_t c = atomic_load_explicit(&pool.claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen) break;
        uint32_t i = (uint32_t)c & 0xffff, nch = ((uint32_t)c >> 16) & 0xffff;
        if (i >= nch) break;
        if (!atomic_compare_exchange_weak_explicit(&pool.claim, &c, c + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* chunk i of job gen is ours: the job cannot end before we finish it */
        int64_t lo = (int64_t)i * pool.chunk, hi = lo + pool.chunk;
        if (hi > pool.n) hi = pool.n;
        if (hi > lo) pool.body(pool.ctx, lo, hi);
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_acq_rel);
        ran++;
        c = atomic_load_explicit(&pool.claim, memory_order_acquire);
    }
    return ran;
}

static void *worker_main(void *arg) {
    (void)arg;
    in_region = true;   /* nested parallel-fors inside a chunk run serially */
    uint32_t seen = 0;
    for (;;) {
        uint64_t t0 = ns_now();
        uint32_t g;
        int spins = 0;
        while ((g = (uint32_t)(atomic_load_explicit(&pool.claim, memory_order_acquire) >> 32)) == seen) {
            if (++spins < 64) {
                cpu_relax();
                continue;
            }
            sched_yield();
            if (spins % 16 == 0 && ns_now() - t0 > RT_SPIN_NS) {
                pthread_mutex_lock(&pool.mu);
                atomic_store(&pool.sleeping, 1);
                while ((g = (uint32_t)(atomic_load(&pool.claim) >> 32)) == seen)
                    pthread_cond_wait(&pool.cv, &pool.mu);
                atomic_store(&pool.sleeping, 0);
                pthread_mutex_unlock(&pool.mu);
                break;
            }
        }
        seen = g;
        run_chunks(g);
    }
    return NULL;
}

static void pool_start(void) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pool.ok = pthread_create(&t, &a, worker_main, NULL) == 0;
    pthread_attr_destroy(&a);
}

int jit_rt_threads(void) { return RT_THREADS; }

void jit_rt_parallel_for(JitRtBody body, void *ctx, int64_t n, int64_t align) {
    if (n <= 0) return;
    if (align < 1) align = 1;
    /* GEMMs (align > 1) split in two: each piece repacks B, so fewer is better;
     * loops in up to RT_MAX_CHUNKS so a late worker still takes its share */
    int64_t units = (n + align - 1) / align;
    int64_t want = align > 1 ? RT_THREADS : RT_MAX_CHUNKS;
    int64_t nch = units < want ? units : want;
    if (in_region || nch < 2) {
        body(ctx, 0, n);
        return;
    }
    pthread_once(&pool.once, pool_start);
    if (!pool.ok || atomic_flag_test_and_set(&pool.busy)) {
        body(ctx, 0, n);   /* no worker, or another thread's region is running */
        return;
    }
    int64_t chunk = (units + nch - 1) / nch * align;
    pool.body = body;
    pool.ctx = ctx;
    pool.n = n;
    pool.chunk = chunk;
    pool.nchunks = (int)((n + chunk - 1) / chunk);
    atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
    uint32_t g = (uint32_t)(atomic_load(&pool.claim) >> 32) + 1;
    atomic_store(&pool.claim, (uint64_t)g << 32 | (uint64_t)pool.nchunks << 16);   /* seq_cst: publishes the job, pairs with `sleeping` */
    if (atomic_load(&pool.sleeping)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_signal(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    in_region = true;
    run_chunks(g);
    in_region = false;
    for (int spins = 0; atomic_load_explicit(&pool.finished, memory_order_acquire) != pool.nchunks; spins++) {
        if (spins < 256) cpu_relax();
        else sched_yield();
    }
    atomic_flag_clear(&pool.busy);
}

/* ---- the time split by kernel kind (opt-in) -------------------------------------------- */

static atomic_int prof_on;
static _Atomic int64_t prof_ns[JIT_KIND_COUNT], prof_calls[JIT_KIND_COUNT];

static const char *const kind_names[JIT_KIND_COUNT] = {"gemm", "conv", "packing", "elementwise", "weight norm", "loss",
                                                       "other"};

JitKernelKind jit_kernel_kind(const char *name) {
    const char *u = name ? strchr(name, '_') : NULL;
    if (!u) return JIT_KIND_OTHER;
    u++;
    if (!strncmp(u, "gemm", 4)) return JIT_KIND_GEMM;
    if (!strncmp(u, "conv", 4)) return JIT_KIND_CONV;
    if (!strncmp(u, "pack", 4) || !strncmp(u, "col2im", 6)) return JIT_KIND_PACK;
    if (!strncmp(u, "wnorm", 5)) return JIT_KIND_WNORM;
    if (!strncmp(u, "dmol", 4) || !strncmp(u, "softmax", 7) || !strcmp(u, "sum")) return JIT_KIND_LOSS;
    if (!strncmp(u, "ew", 2) || !strncmp(u, "reduce", 6) || !strncmp(u, "fill", 4) || !strncmp(u, "add", 3) ||
        !strncmp(u, "zero", 4))
        return JIT_KIND_EW;
    return JIT_KIND_OTHER;
}

const char *jit_kernel_kind_name(JitKernelKind k) { return k >= 0 && k < JIT_KIND_COUNT ? kind_names[k] : "?"; }

void jit_rt_profile(bool on) {
    for (int i = 0; i < JIT_KIND_COUNT; i++) atomic_store(&prof_ns[i], 0), atomic_store(&prof_calls[i], 0);
    atomic_store(&prof_on, on);
}

void jit_rt_prof_read(double seconds[JIT_KIND_COUNT], int64_t calls[JIT_KIND_COUNT]) {
    for (int i = 0; i < JIT_KIND_COUNT; i++) {
        seconds[i] = 1e-9 * (double)atomic_load(&prof_ns[i]);
        calls[i] = atomic_load(&prof_calls[i]);
    }
}

int64_t jit_rt_prof_begin(void) {
    return atomic_load_explicit(&prof_on, memory_order_relaxed) ? (int64_t)ns_now() : 0;
}

void jit_rt_prof_end(int32_t kind, int64_t t0) {
    if (!t0 || kind < 0 || kind >= JIT_KIND_COUNT) return;
    atomic_fetch_add_explicit(&prof_ns[kind], (int64_t)ns_now() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&prof_calls[kind], 1, memory_order_relaxed);
}

/* ---- GEMM --------------------------------------------------------------------------------- */

/* cblas_sgemm, row-major, over M in blocks of JIT_RT_GEMM_MBLOCK rows when
 * M is large and N narrow. Measured here, one thread, OpenBLAS 0.3.21: the
 * small model's forward product (M 12544, N 32, K 384) runs 46 -> 54
 * GFLOP/s on a quiet machine and 16 -> 52 while other processes share the
 * cache; the other convolution shapes (N 160..576) stay within noise (+-3%),
 * wide ones (N 960) can lose, hence the N bound. Each element's sum over K
 * is the same either way. */
void jit_rt_sgemm(int32_t order, int32_t ta, int32_t tb, int32_t m, int32_t n, int32_t k, float alpha, const float *a,
                  int32_t lda, const float *b, int32_t ldb, float beta, float *c, int32_t ldc) {
    if (m >= 2 * JIT_RT_GEMM_MBLOCK && n < JIT_RT_GEMM_NARROW) {
        for (int32_t m0 = 0; m0 < m; m0 += JIT_RT_GEMM_MBLOCK) {
            int32_t mm = m - m0 < JIT_RT_GEMM_MBLOCK ? m - m0 : JIT_RT_GEMM_MBLOCK;
            const float *am = ta == CblasTrans ? a + m0 : a + (int64_t)m0 * lda;
            cblas_sgemm((CBLAS_ORDER)order, (CBLAS_TRANSPOSE)ta, (CBLAS_TRANSPOSE)tb, mm, n, k, alpha, am, lda, b, ldb,
                        beta, c + (int64_t)m0 * ldc, ldc);
        }
        return;
    }
    cblas_sgemm((CBLAS_ORDER)order, (CBLAS_TRANSPOSE)ta, (CBLAS_TRANSPOSE)tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
}

float jit_rt_uniform(uint64_t seed, uint32_t stream, uint64_t index) { return pxc_uniform(seed, stream, index); }

/* ---- the symbol table ------------------------------------------------------------------ */

static const JitSymbol runtime_symbols[] = {
    {"cblas_sgemm", (void *)cblas_sgemm},
    {"jit_rt_sgemm", (void *)jit_rt_sgemm},
    {"expf", (void *)expf},
    {"logf", (void *)logf},
    {"log1pf", (void *)log1pf},
    {"tanhf", (void *)tanhf},
    {"sqrtf", (void *)sqrtf},
    {"floorf", (void *)floorf},
    {"powf", (void *)powf},
    {"fmaf", (void *)fmaf},
    {"memset", (void *)memset},    /* LLVM turns zeroing and copy loops into these */
    {"memcpy", (void *)memcpy},
    {"memmove", (void *)memmove},
    {"jit_rt_parallel_for", (void *)jit_rt_parallel_for},
    {"jit_rt_uniform", (void *)jit_rt_uniform},
    {"jit_rt_prof_begin", (void *)jit_rt_prof_begin},
    {"jit_rt_prof_end", (void *)jit_rt_prof_end},
};

const JitSymbol *jit_runtime_symbols(int *n) {
    *n = (int)(sizeof runtime_symbols / sizeof runtime_symbols[0]);
    return runtime_symbols;
}

bool jit_add_runtime_symbols(Jit *j, DiagList *dl) {
    openblas_set_num_threads(1);
    int n;
    const JitSymbol *s = jit_runtime_symbols(&n);
    return jit_define_symbols(j, s, n, dl);
}
