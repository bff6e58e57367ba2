/*
 * jit.h — compiler/llvm, pxc's in-process back end: LLVM IR built through the
 * LLVM-C API, optimised for the host CPU (its name and feature string, so
 * AVX-512 where present; a trimmed vectorising pipeline for hot loops, O1 for
 * code that runs rarely),
 * compiled to objects on two threads, linked by ORC LLJIT, and handed out
 * as C-ABI function pointers.
 *
 * A Jit session owns one LLJIT. Work arrives as units: a unit is a callback
 * that builds one or more functions into a module (each compile thread has
 * its own LLVMContext and TargetMachine, so callbacks must only read shared
 * data). Objects are cached on disk, keyed by a canonical text of what the
 * units build plus the CPU, features, LLVM and pxc versions.
 *
 * Every LLVM failure (verifier, pass pipeline, codegen, linking, symbol
 * lookup) becomes an error in the caller's DiagList; pxc never aborts on one.
 * Such errors are pxc bugs, not spec errors, and their messages say so.
 *
 * Not here: kernel scheduling, memory planning (compiler/kernels), the C
 * emitter (compiler/c).
 */
#ifndef PXC_JIT_H
#define PXC_JIT_H

#include "../base/base.h"

/* How hard to optimise a unit. */
typedef enum JitTier {
    JIT_TIER_HOT,      /* vectorised for the host, no interleaving: elementwise loops */
    JIT_TIER_REDUCE,   /* vectorised and interleaved: float reductions */
    JIT_TIER_COLD,     /* O1, not vectorised, fast instruction selection: code
                          that runs rarely or briefly (entries, init-only kernels) */
    JIT_TIER_COUNT
} JitTier;

/* ---- options and timings -------------------------------------------------- */

typedef struct JitOptions {
    int threads;              /* compile threads (default 2) */
    int opt_level;            /* 0..2: "default<O%d>"; 3 (default): pxc's vectorising
                                 pipeline for hot units (jit.c, tier_pipeline) */
    int units_per_module;     /* units grouped into one LLVM module (default 8) */
    bool use_cache;           /* default true */
    const char *cache_dir;    /* NULL: $PXC_CACHE_DIR, else $XDG_CACHE_HOME/pxc, else ~/.cache/pxc */
    const char *dump_dir;     /* when set: write each module's optimised IR there as module_<i>.ll */
    bool tiering;             /* jit_compile: small and init-only kernels compile cold
                                 (default true; false: every kernel hot) */
} JitOptions;

JitOptions jit_options_default(void);

/* Where the time of the last compile went (seconds). IR build, optimise and
 * codegen are CPU time summed over the compile threads; compile_wall is
 * their wall time; the rest is wall time. For `pxc ... -v`. */
typedef struct JitTimings {
    double ir_build, optimise, codegen;
    double compile_wall;
    double link;              /* adding objects to the JIT + resolving entry points */
    double cache_load, cache_store;
    double total;
    int units, modules;
    int units_tier[JIT_TIER_COUNT];  /* units per tier (compiled or not) */
    size_t object_bytes;
    int kernels, kernels_unique;     /* jit_compile: kernel calls in the entries (one kernel
                                        each before deduplication) / functions compiled */
    int kernels_exact;               /* distinct kernels before those equal up to integer
                                        constants were merged (kir_parameterise) */
    bool cache_hit;
    char cache_note[160];     /* why a cache entry was not used ("", "absent", "checksum mismatch", ...) */
} JitTimings;

/* Two lines for `-v`:
 *   jit: 3181 kernel calls, 398 distinct kernels, 151 functions after merging those equal up to integer constants
 *   jit: 387 units (246 hot, 32 reduce, 109 cold) in 49 modules (1018.6 KiB of code); IR ..., optimise ... */
void jit_timings_print(const JitTimings *t, FILE *f);

/* ---- the session ------------------------------------------------------------ */

typedef struct Jit Jit;

/* NULL (with an error in dl) when LLVM cannot target this host. opt may be NULL. */
Jit *jit_create(const JitOptions *opt, DiagList *dl);
/* Frees the JIT and all code it produced. */
void jit_free(Jit *j);

/* The host as LLVM sees it (owned by the session). */
const char *jit_cpu_name(const Jit *j);
const char *jit_cpu_features(const Jit *j);
const char *jit_triple(const Jit *j);

/* A symbol JIT code may call or read. */
typedef struct JitSymbol {
    const char *name;
    void *addr;
} JitSymbol;

/* Make symbols visible to JIT code (each name at most once per session). */
bool jit_define_symbols(Jit *j, const JitSymbol *syms, int n, DiagList *dl);
/* The runtime pxc's kernels call: cblas_sgemm, logf, log1pf, expf, tanhf,
 * jit_rt_parallel_for, jit_rt_uniform, ... (see jit_runtime_symbols). Also
 * sets OpenBLAS to one thread: pxc splits GEMMs over its own threads. */
bool jit_add_runtime_symbols(Jit *j, DiagList *dl);
const JitSymbol *jit_runtime_symbols(int *n);

/* ---- compiling units ----------------------------------------------------------- */

struct JitIR;   /* jit_ir.h: context, module, builder and types of a compile thread */

/* Build the unit's functions into ir->mod. Runs on a compile thread. Returns
 * false after adding an error to dl (a per-thread list, merged afterwards). */
typedef bool (*JitBuildFn)(struct JitIR *ir, void *arg, DiagList *dl);

typedef struct JitUnit {
    const char *name;     /* for messages */
    JitBuildFn build;
    void *arg;
    JitTier tier;
} JitUnit;

/* Compile the units and add them to the session. key (len bytes) is the
 * canonical text of everything the units build; with the cache on, an
 * entry for (key, CPU, features, LLVM, pxc) is reused instead of compiling,
 * and a missing or unusable entry is (re)written. key NULL: no caching.
 * Units are grouped by tier, in order, up to opt.units_per_module per LLVM
 * module; modules compile on opt.threads threads, the slowest tier first.
 * Returns false with errors in dl. */
bool jit_compile_units(Jit *j, const JitUnit *units, int n, const void *key, size_t len, DiagList *dl);

/* Address of a function or global that compiled code defines (linking its
 * object on first use); NULL with an error in dl when it is missing or its
 * object cannot be linked. */
void *jit_lookup(Jit *j, const char *name, DiagList *dl);

const JitTimings *jit_timings(const Jit *j);

/* ---- compiling a kernel program (jit_kir.c) ------------------------------------- */

struct KirProgram;   /* compiler/kernels/kir.h */
struct pxc_model;    /* runtime/pxc_model.h */

/* Print every kernel and entry of prog as LLVM IR, compile (or load from the
 * object cache, keyed by kir_print's text) and link them in a session of
 * their own, and return the model: forward, backward, loss, init and
 * arena_bytes are JIT code; release() frees the session. The model does
 * not point into prog (it may be freed at once). NULL with errors in dl. */
struct pxc_model *jit_compile(const struct KirProgram *prog, const JitOptions *opt, DiagList *dl);
/* Timings of the compile that produced m (kernels: steps calling a kernel
 * over all entries; kernels_unique: distinct functions); NULL when m does
 * not come from jit_compile. */
const JitTimings *jit_model_timings(const struct pxc_model *m);
/* A kernel (KirFunc.name) or entry ("pxc_forward", ...) of a JIT model, for
 * tests and debugging; NULL with an error in dl. */
void *jit_model_lookup(const struct pxc_model *m, const char *name, DiagList *dl);

/* ---- the object cache (jit_cache.c) ---------------------------------------------- */

/* An object file in memory. */
typedef struct JitObject {
    void *data;
    size_t len;
} JitObject;

/* What an entry is keyed by. */
typedef struct JitCacheKey {
    uint64_t hash[2];       /* of the canonical kernel text */
    const char *cpu, *features, *llvm_version, *pxc_version;
} JitCacheKey;

/* The cache directory for opt (malloc'd), or NULL when the cache is off. */
char *jit_cache_dir(const JitOptions *opt);
/* The entry's file name inside dir (malloc'd). */
char *jit_cache_path(const char *dir, const JitCacheKey *key);
/* 1: hit, objs/nobjs filled (free with jit_objects_free). 0: miss — absent,
 * truncated, corrupt, another version or another key; the reason goes to
 * note. Never fails harder than a miss. */
int jit_cache_load(const char *dir, const JitCacheKey *key, JitObject **objs, int *nobjs, char *note,
                   size_t notelen);
/* Write an entry atomically (temporary file, fsync, rename). 0 or -1 with
 * the reason in note. */
int jit_cache_store(const char *dir, const JitCacheKey *key, const JitObject *objs, int nobjs, char *note,
                    size_t notelen);
void jit_objects_free(JitObject *objs, int n);

/* The on-disk format, for tests that corrupt entries on purpose. */
#define JIT_CACHE_MAGIC "PXCOBJ\r\n"   /* 8 bytes */
#define JIT_CACHE_FORMAT 1

/* ---- runtime entry points JIT code calls (jit_runtime.c) -------------------------- */

/* body(ctx, lo, hi) over [0, n) split into contiguous chunks (two when
 * align > 1, as for GEMM rows; up to eight for loops) that pxc's compute
 * threads (the caller plus one worker: two in all) claim one at a time; the
 * caller runs whatever the worker has not claimed and returns when all are
 * done. Chunks start at multiples of `align` (0/1: none). Serial when n is
 * small, when called from inside a parallel region, or while another thread
 * uses the pool. */
typedef void (*JitRtBody)(void *ctx, int64_t lo, int64_t hi);
void jit_rt_parallel_for(JitRtBody body, void *ctx, int64_t n, int64_t align);
/* Threads jit_rt_parallel_for uses (2; 1 after jit_rt_set_serial(true),
 * which makes every parallel-for run on its caller: for measuring one
 * core's throughput). */
int jit_rt_threads(void);
void jit_rt_set_serial(bool on);
/* cblas_sgemm (row-major only; order is passed through), in blocks of
 * JIT_RT_GEMM_MBLOCK rows when m >= 2 blocks and n < JIT_RT_GEMM_NARROW:
 * what JIT kernels call for KS_GEMM. */
#define JIT_RT_GEMM_MBLOCK 1024
#define JIT_RT_GEMM_NARROW 512
void jit_rt_sgemm(int32_t order, int32_t ta, int32_t tb, int32_t m, int32_t n, int32_t k, float alpha, const float *a,
                  int32_t lda, const float *b, int32_t ldb, float beta, float *c, int32_t ldc);

/* The opt-in profile: by kernel kind and by call site. Every step of a JIT
 * entry calls jit_rt_prof_begin before its kernel and
 * jit_rt_prof_end(kind, site, t0) after (site = entry << 20 | step index);
 * both return at once while profiling is off (the default), so the profile
 * costs two calls per step. jit_rt_profile(true) zeroes the totals and turns
 * it on; jit_rt_prof_read copies the seconds and calls per kind,
 * jit_rt_prof_site those of one call site (false past the table: entries
 * beyond JIT_PROF_ENTRIES or steps beyond JIT_PROF_MAX_STEPS count in the
 * kinds only). The counters are the process's: profile one model at a time.
 * A kernel's kind comes from its name (kernel IR: k<i>_<stem>),
 * jit_kernel_kind. jit_model_profile (below) names the sites. */
#define JIT_PROF_ENTRIES 4
#define JIT_PROF_MAX_STEPS 16384
typedef enum JitKernelKind {
    JIT_KIND_GEMM,      /* cblas_sgemm */
    JIT_KIND_CONV,      /* direct convolutions (KS_CONV) */
    JIT_KIND_PACK,      /* im2col packing and col2im */
    JIT_KIND_EW,        /* fused element-wise loops, bias/gain reductions, fills */
    JIT_KIND_WNORM,     /* weight normalisation and its gradient */
    JIT_KIND_LOSS,      /* the mixture likelihood, its gradient, the sum */
    JIT_KIND_OTHER,     /* init and anything else */
    JIT_KIND_COUNT
} JitKernelKind;
JitKernelKind jit_kernel_kind(const char *kernel_name);
const char *jit_kernel_kind_name(JitKernelKind k);
void jit_rt_profile(bool on);
void jit_rt_prof_read(double seconds[JIT_KIND_COUNT], int64_t calls[JIT_KIND_COUNT]);
int64_t jit_rt_prof_begin(void);
void jit_rt_prof_end(int32_t kind, int32_t site, int64_t t0);
bool jit_rt_prof_site(int entry, int step, double *seconds, int64_t *calls);

/* pxc_uniform of pxc_model.h as a callable function. */
float jit_rt_uniform(uint64_t seed, uint32_t stream, uint64_t index);

/* One call site of a JIT model (a step of an entry) and what the profile
 * measured there (jit_rt_profile): for `pxc bench --profile`. The work of a
 * call at batch n is flops0 + flops_n * n floating-point operations (GEMMs
 * and direct convolutions, 2 per multiply-add; 0 for other kernels) and
 * bytes0 + bytes_n * n bytes: the sizes of its argument buffers, each
 * counted once (a lower bound of its memory traffic). */
typedef struct JitProfRow {
    int entry, step;          /* KirEntryKind, step index */
    const char *kernel;       /* KirFunc.name */
    const char *note;         /* KirStep.note ("" when none) */
    JitKernelKind kind;
    double flops0, flops_n, bytes0, bytes_n;
    int64_t calls;            /* measured since jit_rt_profile(true) */
    double seconds;
} JitProfRow;
/* Every call site of m with its measured calls and seconds (valid while m
 * lives); the count, or -1 when m does not come from jit_compile. */
int jit_model_profile(const struct pxc_model *m, JitProfRow **rows);

#endif
