/*
 * jit.c — the JIT session: one ORC LLJIT, runtime symbols, compiling units
 * to objects on two threads (each with its own LLVMContext and
 * TargetMachine), the object cache round trip, symbol lookup, timings.
 * See jit.h.
 */
#include "jit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/ErrorHandling.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

#include "jit_ir.h"

struct Jit {
    JitOptions opt;
    LLVMOrcLLJITRef lljit;
    LLVMOrcJITDylibRef jd;
    char *triple, *cpu, *features, *datalayout;
    pthread_mutex_t lock;    /* guards `reported` */
    DiagList reported;       /* errors the ExecutionSession reported asynchronously */
    JitTimings t;
};

JitOptions jit_options_default(void) {
    JitOptions o;
    memset(&o, 0, sizeof o);
    o.threads = 2;
    o.opt_level = 3;
    o.units_per_module = 8;
    o.use_cache = true;
    o.cache_dir = NULL;
    o.tiering = true;
    return o;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Turn an LLVMErrorRef into a diagnostic (consuming it). True when no error. */
static bool check_llvm(LLVMErrorRef e, DiagList *dl, const char *what) {
    if (!e) return true;
    char *m = LLVMGetErrorMessage(e);
    diag_error(dl, srcloc_none(), "JIT: %s: %s (an internal error in pxc's LLVM back end)", what, m);
    LLVMDisposeErrorMessage(m);
    return false;
}

static void report_error(void *ctx, LLVMErrorRef e) {
    Jit *j = ctx;
    pthread_mutex_lock(&j->lock);
    check_llvm(e, &j->reported, "linking");
    pthread_mutex_unlock(&j->lock);
}

/* Move errors the session reported asynchronously into dl. */
static void drain_reported(Jit *j, DiagList *dl) {
    pthread_mutex_lock(&j->lock);
    for (int i = 0; i < j->reported.n; i++)
        diag_add(dl, j->reported.items[i].level, j->reported.items[i].loc, "%s", j->reported.items[i].msg);
    diag_free(&j->reported);
    diag_init(&j->reported);
    pthread_mutex_unlock(&j->lock);
}

/* LLVM stops the process on its own fatal errors; say whose bug it is first. */
static void llvm_fatal(const char *reason) { pxc_bug("LLVM fatal error: %s", reason); }

static void init_llvm(void) {
    LLVMInstallFatalErrorHandler(llvm_fatal);
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
}

/* A TargetMachine for the host at codegen level `level` (0..3), for one
 * thread. NULL with an error in dl. */
static LLVMTargetMachineRef host_tm(const Jit *j, int level, DiagList *dl) {
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(j->triple, &target, &err)) {
        diag_error(dl, srcloc_none(), "JIT: LLVM has no target for '%s': %s", j->triple, err ? err : "?");
        LLVMDisposeMessage(err);
        return NULL;
    }
    LLVMCodeGenOptLevel lv = level <= 0   ? LLVMCodeGenLevelNone
                             : level == 1 ? LLVMCodeGenLevelLess
                             : level == 2 ? LLVMCodeGenLevelDefault
                                          : LLVMCodeGenLevelAggressive;
    /* The JIT defaults (static relocation, the JIT's large code model) are
     * what LLJIT itself uses; objects may land anywhere in the address space. */
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, j->triple, j->cpu, j->features, lv, LLVMRelocDefault,
                                                      LLVMCodeModelJITDefault);
    if (!tm) diag_error(dl, srcloc_none(), "JIT: LLVM cannot create a target machine for %s (%s)", j->triple, j->cpu);
    return tm;
}

Jit *jit_create(const JitOptions *opt, DiagList *dl) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_llvm);
    Jit *j = xcalloc(1, sizeof *j);
    j->opt = opt ? *opt : jit_options_default();
    if (j->opt.threads < 1) j->opt.threads = 1;
    if (j->opt.units_per_module < 1) j->opt.units_per_module = 1;
    if (j->opt.opt_level > 3) j->opt.opt_level = 3;
    pthread_mutex_init(&j->lock, NULL);
    diag_init(&j->reported);
    char *s = LLVMGetDefaultTargetTriple();
    j->triple = xstrdup(s);
    LLVMDisposeMessage(s);
    s = LLVMGetHostCPUName();
    j->cpu = xstrdup(s);
    LLVMDisposeMessage(s);
    s = LLVMGetHostCPUFeatures();
    j->features = xstrdup(s);
    LLVMDisposeMessage(s);

    LLVMTargetMachineRef tm = host_tm(j, j->opt.opt_level, dl);
    if (!tm) goto fail;
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    s = LLVMCopyStringRepOfTargetData(td);
    j->datalayout = xstrdup(s);
    LLVMDisposeMessage(s);
    LLVMDisposeTargetData(td);
    LLVMDisposeTargetMachine(tm);

    if (!check_llvm(LLVMOrcCreateLLJIT(&j->lljit, NULL), dl, "creating the LLJIT")) goto fail;
    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j->lljit), report_error, j);
    j->jd = LLVMOrcLLJITGetMainJITDylib(j->lljit);
    return j;
fail:
    jit_free(j);
    return NULL;
}

void jit_free(Jit *j) {
    if (!j) return;
    if (j->lljit) {
        DiagList ignored;
        diag_init(&ignored);
        check_llvm(LLVMOrcDisposeLLJIT(j->lljit), &ignored, "disposing the LLJIT");
        diag_free(&ignored);
    }
    free(j->triple);
    free(j->cpu);
    free(j->features);
    free(j->datalayout);
    diag_free(&j->reported);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

const char *jit_cpu_name(const Jit *j) { return j->cpu; }
const char *jit_cpu_features(const Jit *j) { return j->features; }
const char *jit_triple(const Jit *j) { return j->triple; }
const JitTimings *jit_timings(const Jit *j) { return &j->t; }

bool jit_define_symbols(Jit *j, const JitSymbol *syms, int n, DiagList *dl) {
    if (n <= 0) return true;
    LLVMOrcCSymbolMapPairs pairs = xcalloc((size_t)n, sizeof *pairs);   /* (the element type's name changed in LLVM 16) */
    for (int i = 0; i < n; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->lljit, syms[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)syms[i].addr;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    /* The materialization unit takes over the pool entries. */
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)n);
    free(pairs);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(j->jd, mu);
    if (e) {
        LLVMOrcDisposeMaterializationUnit(mu);
        return check_llvm(e, dl, "defining runtime symbols");
    }
    return true;
}

/* ---- compiling ---------------------------------------------------------------- */

typedef struct Group {
    int first, n;            /* indices into `order` */
    JitTier tier;
} Group;

typedef struct Work {
    Jit *j;
    const JitUnit *units;
    const int *order;        /* units sorted by tier */
    Group *groups;
    int ngroups;
    atomic_int next;
    JitObject *objs;         /* [ngroups] */
} Work;

/* One compile thread: its own context, TargetMachines and pass options. */
typedef struct ThreadOut {
    Work *w;
    DiagList dl;
    double ir_build, optimise, codegen;   /* thread CPU seconds */
    LLVMTargetMachineRef tm[2];           /* [cold]: the codegen levels */
    LLVMPassBuilderOptionsRef popt[JIT_TIER_COUNT];
} ThreadOut;

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* LLVM's own diagnostics (remarks, "loop not vectorized" warnings): errors
 * become pxc errors, the rest is dropped rather than printed. */
static void llvm_diagnostic(LLVMDiagnosticInfoRef di, void *ctx) {
    ThreadOut *o = ctx;
    if (LLVMGetDiagInfoSeverity(di) != LLVMDSError) return;
    char *m = LLVMGetDiagInfoDescription(di);
    diag_error(&o->dl, srcloc_none(), "JIT: LLVM: %s (an internal error in pxc)", m ? m : "?");
    LLVMDisposeMessage(m);
}

/* Hot tiers at level 3: pxc's own function pipeline rather than
 * default<O3>. Kernel IR arrives already fused, outlined and with every
 * decision taken, so what it needs is: locals to registers (sroa), common
 * index arithmetic shared (early-cse, instcombine), loops rotated with
 * their invariant address arithmetic hoisted (loop-rotate, licm), loops
 * that run once removed (loop-deletion: a 1x1 kernel's tap loop, so the
 * channel loop around it is the one vectorised), the loop vectoriser (interleaving only for reductions; never unrolled: full
 * unrolling of constant trip counts multiplies code size and compile time
 * for little speed), and a clean-up. Inlining, GVN, jump threading, SLP and
 * the rest of O3 found nothing to improve in pxc's kernels and cost more
 * than half of the optimiser's time. Levels 0..2: default<O%d>. Cold: O1
 * without vectorisation, and the fastest instruction selection. */
static const char *tier_pipeline(const Jit *j, JitTier t, char *buf, size_t n) {
    int lv = j->opt.opt_level < 0 ? 0 : j->opt.opt_level;
    if (t == JIT_TIER_COLD && lv > 1) lv = 1;
    if (lv >= 3)
        snprintf(buf, n,
                 "function(sroa,early-cse<memssa>,instcombine,simplifycfg,loop-mssa(loop-rotate,licm),"
                 "loop(loop-deletion),simplifycfg,"
                 "loop-vectorize<%sinterleave-forced-only;no-vectorize-forced-only>,instcombine,simplifycfg,"
                 "loop-mssa(licm),early-cse)",
                 t == JIT_TIER_REDUCE ? "no-" : "");
    else
        snprintf(buf, n, "default<O%d>", lv);
    return buf;
}

static bool compile_group(ThreadOut *o, LLVMContextRef ctx, int gi) {
    Work *w = o->w;
    Jit *j = w->j;
    Group *g = &w->groups[gi];
    bool cold = g->tier == JIT_TIER_COLD;
    if (!o->tm[cold]) {
        o->tm[cold] = host_tm(j, cold ? 0 : j->opt.opt_level, &o->dl);
        if (!o->tm[cold]) return false;
    }
    LLVMTargetMachineRef tm = o->tm[cold];
    char name[32];
    snprintf(name, sizeof name, "pxc_module_%d", gi);
    double t0 = cpu_s();
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext(name, ctx);
    LLVMSetTarget(m, j->triple);
    LLVMSetDataLayout(m, j->datalayout);
    JitIR ir;
    jir_init(&ir, ctx, m);
    bool ok = true;
    for (int k = 0; k < g->n && ok; k++) {
        const JitUnit *u = &w->units[w->order[g->first + k]];
        int before = o->dl.nerrors;
        if (!u->build(&ir, u->arg, &o->dl) || o->dl.nerrors > before) {
            if (o->dl.nerrors == before)
                diag_error(&o->dl, srcloc_none(), "JIT: building '%s' failed", u->name ? u->name : "?");
            ok = false;
        }
    }
    jir_dispose(&ir);
    char *msg = NULL;
    if (ok && LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
        const JitUnit *u = &w->units[w->order[g->first]];
        diag_error(&o->dl, srcloc_none(),
                   "JIT: the LLVM module holding '%s'%s is invalid (an internal error in pxc): %s",
                   u->name ? u->name : "?", g->n > 1 ? " and other units" : "", msg ? msg : "?");
        ok = false;
    }
    LLVMDisposeMessage(msg);
    double t1 = cpu_s();
    o->ir_build += t1 - t0;
    if (ok) {
        char passes[512];
        tier_pipeline(j, g->tier, passes, sizeof passes);
        ok = check_llvm(LLVMRunPasses(m, passes, tm, o->popt[g->tier]), &o->dl, "optimising");
    }
    double t2 = cpu_s();
    o->optimise += t2 - t1;
    if (ok && j->opt.dump_dir) {
        char *path = xasprintf("%s/module_%d.ll", j->opt.dump_dir, gi);
        char *err = NULL;
        if (LLVMPrintModuleToFile(m, path, &err))
            diag_add(&o->dl, DIAG_WARNING, srcloc_none(), "JIT: cannot write '%s': %s", path, err ? err : "?");
        LLVMDisposeMessage(err);
        free(path);
    }
    if (ok) {
        char *err = NULL;
        LLVMMemoryBufferRef buf = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &err, &buf)) {
            diag_error(&o->dl, srcloc_none(), "JIT: code generation failed (an internal error in pxc): %s",
                       err ? err : "?");
            ok = false;
        } else {
            size_t len = LLVMGetBufferSize(buf);
            w->objs[gi].data = xmalloc(len);
            memcpy(w->objs[gi].data, LLVMGetBufferStart(buf), len);
            w->objs[gi].len = len;
            LLVMDisposeMemoryBuffer(buf);
        }
        LLVMDisposeMessage(err);
    }
    o->codegen += cpu_s() - t2;
    LLVMDisposeModule(m);
    return ok && !o->dl.nerrors;
}

static void *compile_thread(void *arg) {
    ThreadOut *o = arg;
    Work *w = o->w;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMContextSetDiagnosticHandler(ctx, llvm_diagnostic, o);
    for (int t = 0; t < JIT_TIER_COUNT; t++) {
        o->popt[t] = LLVMCreatePassBuilderOptions();
        LLVMPassBuilderOptionsSetLoopVectorization(o->popt[t], t != JIT_TIER_COLD);
        LLVMPassBuilderOptionsSetSLPVectorization(o->popt[t], t != JIT_TIER_COLD);
        LLVMPassBuilderOptionsSetLoopInterleaving(o->popt[t], t == JIT_TIER_REDUCE);
        LLVMPassBuilderOptionsSetLoopUnrolling(o->popt[t], 0);
    }
    for (;;) {
        int gi = atomic_fetch_add(&w->next, 1);
        if (gi >= w->ngroups) break;
        if (!compile_group(o, ctx, gi)) atomic_store(&w->next, w->ngroups);  /* stop early */
    }
    for (int t = 0; t < JIT_TIER_COUNT; t++) LLVMDisposePassBuilderOptions(o->popt[t]);
    for (int k = 0; k < 2; k++)
        if (o->tm[k]) LLVMDisposeTargetMachine(o->tm[k]);
    LLVMContextDispose(ctx);
    return NULL;
}

/* Compile every group to objs[]; errors into dl. */
static bool compile_all(Jit *j, const JitUnit *units, int n, JitObject **objs_out, int *nobjs_out,
                        DiagList *dl) {
    int *order = xmalloc((size_t)n * sizeof *order);
    Group *groups = xmalloc((size_t)n * sizeof *groups);
    int no = 0, ng = 0;
    /* the slowest tier first, so the two threads finish together */
    static const JitTier tiers[JIT_TIER_COUNT] = {JIT_TIER_REDUCE, JIT_TIER_HOT, JIT_TIER_COLD};
    for (int ti = 0; ti < JIT_TIER_COUNT; ti++) {
        int start = no;
        for (int i = 0; i < n; i++)
            if (units[i].tier == tiers[ti]) order[no++] = i;
        for (int s = start; s < no; s += j->opt.units_per_module) {
            groups[ng].first = s;
            groups[ng].n = no - s < j->opt.units_per_module ? no - s : j->opt.units_per_module;
            groups[ng].tier = tiers[ti];
            ng++;
        }
    }
    for (int i = 0; i < n; i++)
        if ((unsigned)units[i].tier >= JIT_TIER_COUNT) pxc_bug("JIT unit '%s' has tier %d", units[i].name, (int)units[i].tier);
    Work w = {.j = j, .units = units, .order = order, .groups = groups, .ngroups = ng};
    atomic_init(&w.next, 0);
    w.objs = xcalloc((size_t)(ng ? ng : 1), sizeof *w.objs);
    int nt = j->opt.threads < ng ? j->opt.threads : ng;
    if (nt < 1) nt = 1;
    ThreadOut *outs = xcalloc((size_t)nt, sizeof *outs);
    pthread_t *tids = xcalloc((size_t)nt, sizeof *tids);
    double t0 = now_s();
    for (int t = 0; t < nt; t++) {
        outs[t].w = &w;
        diag_init(&outs[t].dl);
        if (t > 0 && pthread_create(&tids[t], NULL, compile_thread, &outs[t]) != 0) {
            diag_error(&outs[t].dl, srcloc_none(), "JIT: cannot start a compile thread");
            tids[t] = 0;
        }
    }
    compile_thread(&outs[0]);
    for (int t = 1; t < nt; t++)
        if (tids[t]) pthread_join(tids[t], NULL);
    j->t.compile_wall = now_s() - t0;
    bool ok = true;
    for (int t = 0; t < nt; t++) {
        for (int i = 0; i < outs[t].dl.n; i++)
            diag_add(dl, outs[t].dl.items[i].level, outs[t].dl.items[i].loc, "%s", outs[t].dl.items[i].msg);
        if (outs[t].dl.nerrors) ok = false;
        j->t.ir_build += outs[t].ir_build;
        j->t.optimise += outs[t].optimise;
        j->t.codegen += outs[t].codegen;
        diag_free(&outs[t].dl);
    }
    for (int g = 0; g < ng && ok; g++)
        if (!w.objs[g].data) ok = false;   /* a thread stopped early without a message */
    if (!ok && !dl->nerrors) diag_error(dl, srcloc_none(), "JIT: compilation stopped without a message");
    free(outs);
    free(tids);
    free(order);
    free(groups);
    j->t.modules = ng;
    if (!ok) {
        jit_objects_free(w.objs, ng);
        return false;
    }
    *objs_out = w.objs;
    *nobjs_out = ng;
    return true;
}

static bool add_objects(Jit *j, const JitObject *objs, int n, DiagList *dl) {
    double t0 = now_s();
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        char name[32];
        snprintf(name, sizeof name, "pxc_object_%d", i);
        LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(objs[i].data, objs[i].len, name);
        ok = check_llvm(LLVMOrcLLJITAddObjectFile(j->lljit, j->jd, buf), dl, "adding an object");
        j->t.object_bytes += objs[i].len;
    }
    j->t.link += now_s() - t0;
    drain_reported(j, dl);
    return ok && !dl->nerrors;
}

static JitCacheKey cache_key(const Jit *j, const void *key, size_t len) {
    char extra[64];
    int el = snprintf(extra, sizeof extra, "|O%d|format%d", j->opt.opt_level, JIT_CACHE_FORMAT);
    JitCacheKey k;
    k.hash[0] = hash_bytes(hash_bytes(HASH_INIT, key, len), extra, (size_t)el);
    k.hash[1] = hash_bytes(hash_bytes(HASH_INIT ^ 0x9E3779B97F4A7C15ULL, extra, (size_t)el), key, len);
    k.hash[1] = hash_bytes(k.hash[1], &len, sizeof len);
    k.cpu = j->cpu;
    k.features = j->features;
    k.llvm_version = LLVM_VERSION_STRING;
    k.pxc_version = PXC_VERSION;
    return k;
}

bool jit_compile_units(Jit *j, const JitUnit *units, int n, const void *key, size_t len, DiagList *dl) {
    double t0 = now_s();
    int kernels = j->t.kernels, unique = j->t.kernels_unique, exact = j->t.kernels_exact;
    memset(&j->t, 0, sizeof j->t);
    j->t.kernels = kernels;
    j->t.kernels_unique = unique;
    j->t.kernels_exact = exact;
    j->t.units = n;
    for (int i = 0; i < n; i++)
        if ((unsigned)units[i].tier < JIT_TIER_COUNT) j->t.units_tier[units[i].tier]++;
    drain_reported(j, dl);
    char *dir = key && j->opt.use_cache ? jit_cache_dir(&j->opt) : NULL;
    JitCacheKey ck;
    JitObject *objs = NULL;
    int nobjs = 0;
    bool ok;
    if (dir) {
        ck = cache_key(j, key, len);
        double c0 = now_s();
        if (jit_cache_load(dir, &ck, &objs, &nobjs, j->t.cache_note, sizeof j->t.cache_note) == 1)
            j->t.cache_hit = true;
        j->t.cache_load = now_s() - c0;
    } else {
        snprintf(j->t.cache_note, sizeof j->t.cache_note, "off");
    }
    if (j->t.cache_hit) {
        j->t.modules = nobjs;
        ok = true;
    } else {
        ok = compile_all(j, units, n, &objs, &nobjs, dl);
        if (ok && dir) {
            double c0 = now_s();
            char note[160];
            /* A cache that cannot be written only costs the next run time. */
            if (jit_cache_store(dir, &ck, objs, nobjs, note, sizeof note) != 0)
                snprintf(j->t.cache_note, sizeof j->t.cache_note, "not stored: %.140s", note);
            j->t.cache_store = now_s() - c0;
        }
    }
    if (ok) ok = add_objects(j, objs, nobjs, dl);
    jit_objects_free(objs, nobjs);
    free(dir);
    j->t.total = now_s() - t0;
    return ok;
}

void *jit_lookup(Jit *j, const char *name, DiagList *dl) {
    double t0 = now_s();
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->lljit, &addr, name);
    j->t.link += now_s() - t0;
    j->t.total += now_s() - t0;
    if (e) {
        drain_reported(j, dl);
        char what[200];
        snprintf(what, sizeof what, "looking up '%.150s'", name);
        check_llvm(e, dl, what);
        return NULL;
    }
    drain_reported(j, dl);
    return (void *)(uintptr_t)addr;
}

void jit_timings_print(const JitTimings *t, FILE *f) {
    if (t->kernels && t->kernels_exact > t->kernels_unique)
        fprintf(f, "jit: %d kernel calls, %d distinct kernels, %d functions after merging those equal up to integer "
                "constants\n", t->kernels, t->kernels_exact, t->kernels_unique);
    else if (t->kernels)
        fprintf(f, "jit: %d kernel calls, %d distinct kernels after deduplication\n", t->kernels, t->kernels_unique);
    if (t->cache_hit)
        fprintf(f, "jit: %d units, %d objects (%.1f KiB) from the cache in %.3f s; link %.3f s; total %.3f s\n",
                t->units, t->modules, (double)t->object_bytes / 1024, t->cache_load, t->link, t->total);
    else
        fprintf(f,
                "jit: %d units (%d hot, %d reduce, %d cold) in %d modules (%.1f KiB of code); IR %.3f s, "
                "optimise %.3f s, codegen %.3f s (CPU, both threads; wall %.3f s); link %.3f s; cache %s%s%.3f s; "
                "total %.3f s\n",
                t->units, t->units_tier[JIT_TIER_HOT], t->units_tier[JIT_TIER_REDUCE], t->units_tier[JIT_TIER_COLD],
                t->modules, (double)t->object_bytes / 1024, t->ir_build, t->optimise, t->codegen,
                t->compile_wall, t->link, t->cache_note[0] ? t->cache_note : "miss", t->cache_note[0] ? ", " : " ",
                t->cache_load + t->cache_store, t->total);
}
