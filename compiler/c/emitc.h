/*
 * emitc.h — kernel IR → standalone C (model.h + model.c + a weights file).
 *
 * The emitted code is C11 over libc, libm and CBLAS; compiled with
 * -DPXC_NO_CBLAS it carries a plain-C GEMM and needs nothing but a C
 * compiler. It never allocates and never does I/O: the caller owns the
 * parameter buffer, the arena (model.arena_bytes(n) bytes, 64-byte aligned)
 * and the outputs. It runs serially unless the program installs a
 * parallel-for hook:
 *
 *     void my_for(void (*body)(void *ctx, int64_t begin, int64_t end),
 *                 void *ctx, int64_t begin, int64_t end);
 *     <name>_parallel_for = my_for;   // split [begin,end) over threads, call body
 *                                     // on each piece, return when all are done
 *
 * (with CBLAS, keep OpenBLAS at one thread then: OPENBLAS_NUM_THREADS=1).
 *
 * model.h declares the pxc_model ABI (runtime/pxc_model.h, guarded by the
 * same include guard), the parameter layout as a comment, the instance
 * `extern pxc_model <name>;`, the hook, and
 *     int <name>_weights(const void *file, size_t size, const float **params);
 * which checks a weights file image (magic, version, layout hash, size) and
 * points *params at its floats (0 on success; -1 not a pxc weights file,
 * -2 another version, -3 another model's layout or a truncated file).
 *
 * Weights file: 32-byte header, then nparams float32 little-endian:
 *     "PXCW"  u32 version (1)  u64 nparams  u64 layout hash  u64 0
 * The layout hash covers every tensor's name, shape and offset.
 */
#ifndef PXC_EMITC_H
#define PXC_EMITC_H

#include "../kernels/kir.h"
#include "../../runtime/pxc_model.h"

typedef struct EmitcOptions {
    const char *command_line;   /* for the provenance header (may be NULL) */
    const char *spec_path;      /* ditto */
    const char *header_name;    /* what model.c includes (default "model.h") */
} EmitcOptions;

/* Write model.h to h and model.c to c. Returns 0, or -1 if a write failed. */
int emitc_program(const KirProgram *p, FILE *h, FILE *c, const EmitcOptions *opt);

#define EMITC_WEIGHTS_MAGIC "PXCW"
#define EMITC_WEIGHTS_VERSION 1
#define EMITC_WEIGHTS_HEADER 32

/* The layout hash of p's parameter table. */
uint64_t emitc_layout_hash(const KirProgram *p);
/* The 32-byte header of p's weights file (the floats follow it). */
void emitc_weights_header(const KirProgram *p, unsigned char hdr[EMITC_WEIGHTS_HEADER]);
/* Write header + p->nparams floats to f. 0, or -1 if a write failed. */
int emitc_write_weights(const KirProgram *p, const float *params, FILE *f);

/* ---- for tests: emit, compile with the system C compiler, dlopen ---------- */

typedef struct EmitcModule {
    pxc_model *model;          /* the emitted instance, inside the loaded object */
    void *handle;              /* dlopen handle */
    void (**parallel_for)(void (*)(void *, int64_t, int64_t), void *, int64_t, int64_t);
} EmitcModule;

/* Emit p into dir (model.h, model.c), compile it with
 *     $CC -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC <extra_cflags> $PXC_CBLAS_CFLAGS model.c
 *         -o model.so ${PXC_CBLAS_LIBS:--lopenblas} -lm
 * ($CC defaults to cc; no BLAS flags when extra_cflags defines PXC_NO_CBLAS) and load it.
 * Returns 0, or -1 with the compiler's output or the loader's error in err. */
int emitc_build_and_load(const KirProgram *p, const char *dir, const char *extra_cflags, EmitcModule *out,
                         char *err, size_t errlen);
void emitc_unload(EmitcModule *m);

#endif
