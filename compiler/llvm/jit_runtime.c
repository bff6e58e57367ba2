/*
 * jit_runtime.c — what JIT-compiled kernels call at run time: the symbol
 * table handed to the LLJIT (BLAS, libm, libc memory functions LLVM itself
 * emits calls to, pxc's helpers) and pxc's parallel-for.
 *
 * The parallel-for uses the calling thread plus one persistent worker (two
 * threads: this machine's cores). The worker spins briefly after a job so
 * back-to-back kernels do not pay a sleep/wake each, then sleeps on a
 * condition variable. OpenBLAS is set to one thread: pxc splits GEMMs itself
 * (MEASURED.md: OpenBLAS's own two-thread mode is slower on small shapes,
 * and both together would oversubscribe the cores).
 */
#include "jit.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "../../runtime/pxc_model.h"

/* ---- the parallel-for -------------------------------------------------------------- */

#define RT_THREADS 2
#define RT_SPIN_NS 200000   /* a worker spins this long for the next job */

static struct {
    pthread_once_t once;
    atomic_flag busy;              /* held by the thread running a parallel region */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;               /* job generation: bumped to start a job */
    atomic_uint done;              /* = gen when the worker finished it */
    atomic_int sleeping;
    JitRtBody body;
    void *ctx;
    int64_t lo, hi;
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

static void *worker_main(void *arg) {
    (void)arg;
    in_region = true;   /* nested parallel-fors inside a chunk run serially */
    unsigned seen = 0;
    for (;;) {
        uint64_t t0 = ns_now();
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            cpu_relax();
            if (++spins % 256 == 0 && ns_now() - t0 > RT_SPIN_NS) {
                pthread_mutex_lock(&pool.mu);
                atomic_store(&pool.sleeping, 1);
                while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
                atomic_store(&pool.sleeping, 0);
                pthread_mutex_unlock(&pool.mu);
                break;
            }
        }
        seen = g;
        if (pool.hi > pool.lo) pool.body(pool.ctx, pool.lo, pool.hi);
        atomic_store_explicit(&pool.done, g, memory_order_release);
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
    int64_t mid = (n / 2 + align - 1) / align * align;
    if (in_region || mid <= 0 || mid >= n) {
        body(ctx, 0, n);
        return;
    }
    pthread_once(&pool.once, pool_start);
    if (!pool.ok || atomic_flag_test_and_set(&pool.busy)) {
        body(ctx, 0, n);   /* no worker, or another thread's region is running */
        return;
    }
    pool.body = body;
    pool.ctx = ctx;
    pool.lo = mid;
    pool.hi = n;
    unsigned g = atomic_fetch_add(&pool.gen, 1) + 1;   /* seq_cst: pairs with `sleeping` */
    if (atomic_load(&pool.sleeping)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_signal(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    in_region = true;
    body(ctx, 0, mid);
    in_region = false;
    while (atomic_load_explicit(&pool.done, memory_order_acquire) != g) cpu_relax();
    atomic_flag_clear(&pool.busy);
}

float jit_rt_uniform(uint64_t seed, uint32_t stream, uint64_t index) { return pxc_uniform(seed, stream, index); }

/* ---- the symbol table ------------------------------------------------------------------ */

static const JitSymbol runtime_symbols[] = {
    {"cblas_sgemm", (void *)cblas_sgemm},
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
