/*
 * jit_ir.h — compiler/llvm's private helpers for building LLVM IR through
 * the LLVM-C API: types and constants, intrinsics (llvm.fmuladd, floor,
 * min/max), noalias kernel functions, counted loops with loop-carried values
 * and vectorisation metadata, and vectorisable math (exp, log, log1p,
 * sigmoid, tanh, softplus) written as inline IR.
 *
 * Private to compiler/llvm and its tests; the stage's interface is jit.h.
 * It is not a general LLVM wrapper: it builds the scalar f32 loops pxc's
 * kernels need, in one function at a time.
 *
 * ---- The math, exactly (kir.h defines KX_EXP ... KX_TANH the same way and
 * ---- the C emitter prints the same operations) ----------------------------
 * fma(a,b,c) below is llvm.fmuladd: fused where the target has FMA (x86-64
 * with AVX2/AVX-512: always fused). Constants are float literals.
 *
 * exp(x): max relative error 8e-8 on [-87, 88] (test_jit_math measures it).
 *     x  = x > 88.0f ? 88.0f : x;           NaN passes through both selects
 *     x  = x < -87.0f ? -87.0f : x;         so exp(-inf) = exp(-87) = 1.6e-38
 *     n  = floor(fma(x, 1.44269504088896341f, 0.5f))
 *     r  = fma(n, -0.693359375f, x)         ln 2 = 0.693359375 - 2.12194440e-4
 *     r  = fma(n, 2.12194440e-4f, r)
 *     p  = 1.9875691500e-4f
 *     p  = fma(p, r, 1.3981999507e-3f)
 *     p  = fma(p, r, 8.3334519073e-3f)
 *     p  = fma(p, r, 4.1665795894e-2f)
 *     p  = fma(p, r, 1.6666665459e-1f)
 *     p  = fma(p, r, 5.0000001201e-1f)
 *     y  = fma(p, r * r, r) + 1.0f
 *     k  = (int32)min(max(n, -127.0f), 127.0f)   (NaN: fmax/fmin give the bound)
 *     return y * bits_as_float((k + 127) << 23)
 *   The coefficients are Cephes expf's: 1 + r + r^2 p(r), p of degree 5,
 *   on |r| <= ln2/2.
 *
 * log(x): max relative error 8e-8 for normal x.
 *     x <= 0 gives -inf (x == 0) or NaN (x < 0); +inf gives +inf; NaN gives NaN.
 *     s  = x < 1.17549435e-38f ? 8388608.0f : 1.0f   (subnormals scaled by 2^23)
 *     xs = x * s
 *     e  = (float)((bits(xs) >> 23) - 126) - (s != 1 ? 23 : 0)
 *     m  = bits_as_float((bits(xs) & 0x007fffff) | 0x3f000000)   m in [0.5, 1)
 *     if (m < 0.707106781186547524f) { e = e - 1; m = m + m - 1 } else m = m - 1
 *       (as selects: lo = m < 0.7071...; e -= lo ? 1 : 0; m = (lo ? m + m : m) - 1.0f)
 *     z  = m * m
 *     p  = 7.0376836292e-2f
 *     p  = fma(p, m, -1.1514610310e-1f)
 *     p  = fma(p, m, 1.1676998740e-1f)
 *     p  = fma(p, m, -1.2420140846e-1f)
 *     p  = fma(p, m, 1.4249322787e-1f)
 *     p  = fma(p, m, -1.6668057665e-1f)
 *     p  = fma(p, m, 2.0000714765e-1f)
 *     p  = fma(p, m, -2.4999993993e-1f)
 *     p  = fma(p, m, 3.3333331174e-1f)
 *     y  = p * m * z                         ((p * m) * z)
 *     y  = fma(e, -2.12194440e-4f, y)
 *     y  = fma(z, -0.5f, y)
 *     r  = m + y
 *     r  = fma(e, 0.693359375f, r)
 *   The coefficients are Cephes logf's.
 *
 * log1p(x) = u == 1 ? x : log(u) * (x / (u - 1)),  u = 1 + x   (Goldberg's
 *   trick; exact to a few ulp near 0). For x = +inf: +inf.
 * sigmoid(x) = 1 / (1 + exp(-x))
 * tanh(x)    = 1 - 2 / (exp(x + x) + 1)   (exactly ±1 in the tails; error
 *   1.8e-7 relative to max(|tanh|, 1); near 0 only absolute)
 * softplus(x) = max(x, 0) + log1p(exp(-|x|))      (max(x, 0) as llvm.maxnum / fmaxf)
 * Measured max relative errors: log1p 1.7e-7, sigmoid 1.4e-7,
 * softplus 2.1e-7.
 */
#ifndef PXC_JIT_IR_H
#define PXC_JIT_IR_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/Core.h>

/* What one compile thread builds into: its context, the module being built
 * and a builder, with the types every kernel uses. */
typedef struct JitIR {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMValueRef fn;                      /* function being built */
    LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_f64;
    LLVMTypeRef t_pi8, t_pi32, t_pi64, t_pf32, t_pf64;
    unsigned md_loop;                     /* "llvm.loop" kind id */
} JitIR;

void jir_init(JitIR *ir, LLVMContextRef ctx, LLVMModuleRef mod);
/* When this file was compiled: part of the object cache key, so a rebuilt
 * pxc never reuses objects an older IR printer produced. */
const char *jir_build_stamp(void);
void jir_dispose(JitIR *ir);

/* ---- constants ----------------------------------------------------------- */

LLVMValueRef jir_f32(JitIR *ir, double v);
LLVMValueRef jir_i32(JitIR *ir, int32_t v);
LLVMValueRef jir_i64(JitIR *ir, int64_t v);

/* ---- functions ------------------------------------------------------------ */

/* Define `name` (external linkage, nounwind) with the given signature and
 * position the builder in its entry block. */
LLVMValueRef jir_function(JitIR *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int nparams);
/* Mark parameter i (a pointer) noalias + nocapture: the caller promises no
 * other parameter reaches the same memory during the call. */
void jir_param_noalias(JitIR *ir, LLVMValueRef fn, int i);
/* Declare (or find) an external function, e.g. a runtime symbol. */
LLVMValueRef jir_declare(JitIR *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int nparams);
LLVMValueRef jir_call(JitIR *ir, LLVMValueRef fn, LLVMValueRef *args, int nargs);

/* ---- memory --------------------------------------------------------------- */

LLVMValueRef jir_gep(JitIR *ir, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef jir_load_f32(JitIR *ir, LLVMValueRef base, LLVMValueRef idx);   /* base[idx] */
void jir_store_f32(JitIR *ir, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx);

/* ---- arithmetic ---------------------------------------------------------- */

LLVMValueRef jir_intrinsic(JitIR *ir, const char *name, LLVMTypeRef overload, LLVMValueRef *args, int nargs);
LLVMValueRef jir_fmuladd(JitIR *ir, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);   /* a*b + c */
LLVMValueRef jir_floor(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_fabs(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_sqrt(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_minnum(JitIR *ir, LLVMValueRef a, LLVMValueRef b);   /* NaN-ignoring, like fminf */
LLVMValueRef jir_maxnum(JitIR *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef jir_copysign(JitIR *ir, LLVMValueRef mag, LLVMValueRef sgn);
/* a > b ? a : b and a < b ? a : b as compare + select (NaN in a: b). */
LLVMValueRef jir_max(JitIR *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef jir_min(JitIR *ir, LLVMValueRef a, LLVMValueRef b);

/* ---- math (see the header comment for the exact operations) --------------- */

LLVMValueRef jir_exp(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_log(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_log1p(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_sigmoid(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_tanh(JitIR *ir, LLVMValueRef x);
LLVMValueRef jir_softplus(JitIR *ir, LLVMValueRef x);

/* ---- loops ----------------------------------------------------------------- */

enum {
    JIR_LOOP_VECTORIZE = 1,     /* llvm.loop.vectorize.enable: lets a float
                                   reduction be reassociated and vectorised */
    JIR_LOOP_NO_VECTORIZE = 2,  /* llvm.loop.vectorize.width 1 */
    JIR_LOOP_NO_UNROLL = 4,     /* llvm.loop.unroll.disable */
};

#define JIR_LOOP_MAX_CARRY 16

/* for (iv = lo; iv < hi; iv++) over i64, with loop-carried values:
 *     JirLoop L;
 *     jir_loop_begin(ir, &L, lo, hi, JIR_LOOP_VECTORIZE);
 *     LLVMValueRef acc = jir_loop_carry(ir, &L, jir_f32(ir, 0));   (acc: value at iteration start)
 *     ... body using L.iv, may contain nested loops ...
 *     jir_loop_next(&L, 0, LLVMBuildFAdd(ir->b, acc, x, ""));
 *     jir_loop_end(ir, &L);
 *     acc is now the final value; the builder is after the loop. */
typedef struct JirLoop {
    LLVMBasicBlockRef pre, header, body, exit;
    LLVMValueRef iv;
    int ncarry;
    LLVMValueRef carry[JIR_LOOP_MAX_CARRY];
    LLVMValueRef next[JIR_LOOP_MAX_CARRY];
    unsigned flags;
} JirLoop;

void jir_loop_begin(JitIR *ir, JirLoop *L, LLVMValueRef lo, LLVMValueRef hi, unsigned flags);
LLVMValueRef jir_loop_carry(JitIR *ir, JirLoop *L, LLVMValueRef init);
void jir_loop_next(JirLoop *L, int k, LLVMValueRef next);
void jir_loop_end(JitIR *ir, JirLoop *L);

/* ---- direct convolutions (jit_conv.c) ------------------------------------ */

/* Print KS_CONV k into the kernel f being built (builder at the statement):
 * an internal body function `name` holding the register-tiled loops, and
 * the call (through jit_rt_parallel_for when large). X, W, Y: the float
 * pointers of k's params; images: I64. */
struct KirConv;
void jit_conv_emit(JitIR *ir, LLVMValueRef f, const char *name, const struct KirConv *k, LLVMValueRef X,
                   LLVMValueRef W, LLVMValueRef Y, LLVMValueRef images);

#endif
