/* jit_ir.c — IR building helpers for compiler/llvm; see jit_ir.h (which
 * also spells out the exact math the C emitter must match). */
#include "jit_ir.h"

#include <math.h>
#include <string.h>

#include <llvm-c/DebugInfo.h>

#include "../base/base.h"

const char *jir_build_stamp(void) { return __DATE__ " " __TIME__; }

void jir_init(JitIR *ir, LLVMContextRef ctx, LLVMModuleRef mod) {
    memset(ir, 0, sizeof *ir);
    ir->ctx = ctx;
    ir->mod = mod;
    ir->b = LLVMCreateBuilderInContext(ctx);
    ir->t_void = LLVMVoidTypeInContext(ctx);
    ir->t_i1 = LLVMInt1TypeInContext(ctx);
    ir->t_i8 = LLVMInt8TypeInContext(ctx);
    ir->t_i32 = LLVMInt32TypeInContext(ctx);
    ir->t_i64 = LLVMInt64TypeInContext(ctx);
    ir->t_f32 = LLVMFloatTypeInContext(ctx);
    ir->t_f64 = LLVMDoubleTypeInContext(ctx);
    ir->t_pi8 = LLVMPointerType(ir->t_i8, 0);
    ir->t_pi32 = LLVMPointerType(ir->t_i32, 0);
    ir->t_pi64 = LLVMPointerType(ir->t_i64, 0);
    ir->t_pf32 = LLVMPointerType(ir->t_f32, 0);
    ir->t_pf64 = LLVMPointerType(ir->t_f64, 0);
    ir->md_loop = LLVMGetMDKindIDInContext(ctx, "llvm.loop", 9);
}

void jir_dispose(JitIR *ir) {
    if (ir->b) LLVMDisposeBuilder(ir->b);
    ir->b = NULL;
}

/* ---- constants ------------------------------------------------------------ */

LLVMValueRef jir_f32(JitIR *ir, double v) { return LLVMConstReal(ir->t_f32, (double)(float)v); }
LLVMValueRef jir_i32(JitIR *ir, int32_t v) { return LLVMConstInt(ir->t_i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef jir_i64(JitIR *ir, int64_t v) { return LLVMConstInt(ir->t_i64, (unsigned long long)v, 1); }

/* ---- functions ------------------------------------------------------------ */

static void add_fn_attr(JitIR *ir, LLVMValueRef fn, unsigned idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    PXC_ASSERT(kind != 0);
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(ir->ctx, kind, 0));
}

LLVMValueRef jir_function(JitIR *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int nparams) {
    LLVMTypeRef ft = LLVMFunctionType(ret, params, (unsigned)nparams, 0);
    PXC_ASSERT(!LLVMGetNamedFunction(ir->mod, name));
    LLVMValueRef fn = LLVMAddFunction(ir->mod, name, ft);
    LLVMSetLinkage(fn, LLVMExternalLinkage);
    add_fn_attr(ir, fn, LLVMAttributeFunctionIndex, "nounwind");
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(ir->ctx, fn, "entry");
    LLVMPositionBuilderAtEnd(ir->b, entry);
    ir->fn = fn;
    return fn;
}

void jir_param_noalias(JitIR *ir, LLVMValueRef fn, int i) {
    PXC_ASSERT(LLVMGetTypeKind(LLVMTypeOf(LLVMGetParam(fn, (unsigned)i))) == LLVMPointerTypeKind);
    add_fn_attr(ir, fn, (unsigned)i + 1, "noalias");
    add_fn_attr(ir, fn, (unsigned)i + 1, "nocapture");
}

LLVMValueRef jir_declare(JitIR *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int nparams) {
    LLVMValueRef fn = LLVMGetNamedFunction(ir->mod, name);
    if (fn) return fn;
    fn = LLVMAddFunction(ir->mod, name, LLVMFunctionType(ret, params, (unsigned)nparams, 0));
    add_fn_attr(ir, fn, LLVMAttributeFunctionIndex, "nounwind");
    return fn;
}

LLVMValueRef jir_call(JitIR *ir, LLVMValueRef fn, LLVMValueRef *args, int nargs) {
    LLVMTypeRef ft = LLVMGetElementType(LLVMTypeOf(fn));
    return LLVMBuildCall2(ir->b, ft, fn, args, (unsigned)nargs, "");
}

/* ---- memory ---------------------------------------------------------------- */

LLVMValueRef jir_gep(JitIR *ir, LLVMTypeRef elem, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(ir->b, elem, base, &idx, 1, "");
}

LLVMValueRef jir_load_f32(JitIR *ir, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef v = LLVMBuildLoad2(ir->b, ir->t_f32, jir_gep(ir, ir->t_f32, base, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

void jir_store_f32(JitIR *ir, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef s = LLVMBuildStore(ir->b, v, jir_gep(ir, ir->t_f32, base, idx));
    LLVMSetAlignment(s, 4);
}

/* ---- arithmetic ------------------------------------------------------------ */

LLVMValueRef jir_intrinsic(JitIR *ir, const char *name, LLVMTypeRef overload, LLVMValueRef *args, int nargs) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id) pxc_bug("unknown LLVM intrinsic %s", name);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(ir->mod, id, &overload, overload ? 1 : 0);
    LLVMTypeRef ft = LLVMIntrinsicGetType(ir->ctx, id, &overload, overload ? 1 : 0);
    return LLVMBuildCall2(ir->b, ft, fn, args, (unsigned)nargs, "");
}

static LLVMValueRef intr1(JitIR *ir, const char *name, LLVMValueRef x) {
    return jir_intrinsic(ir, name, LLVMTypeOf(x), &x, 1);
}

static LLVMValueRef intr2(JitIR *ir, const char *name, LLVMValueRef a, LLVMValueRef b) {
    LLVMValueRef args[2] = {a, b};
    return jir_intrinsic(ir, name, LLVMTypeOf(a), args, 2);
}

LLVMValueRef jir_fmuladd(JitIR *ir, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef args[3] = {a, b, c};
    return jir_intrinsic(ir, "llvm.fmuladd", LLVMTypeOf(a), args, 3);
}

LLVMValueRef jir_floor(JitIR *ir, LLVMValueRef x) { return intr1(ir, "llvm.floor", x); }
LLVMValueRef jir_fabs(JitIR *ir, LLVMValueRef x) { return intr1(ir, "llvm.fabs", x); }
LLVMValueRef jir_sqrt(JitIR *ir, LLVMValueRef x) { return intr1(ir, "llvm.sqrt", x); }
LLVMValueRef jir_minnum(JitIR *ir, LLVMValueRef a, LLVMValueRef b) { return intr2(ir, "llvm.minnum", a, b); }
LLVMValueRef jir_maxnum(JitIR *ir, LLVMValueRef a, LLVMValueRef b) { return intr2(ir, "llvm.maxnum", a, b); }
LLVMValueRef jir_copysign(JitIR *ir, LLVMValueRef mag, LLVMValueRef sgn) { return intr2(ir, "llvm.copysign", mag, sgn); }

LLVMValueRef jir_max(JitIR *ir, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildSelect(ir->b, LLVMBuildFCmp(ir->b, LLVMRealOGT, a, b, ""), a, b, "");
}

LLVMValueRef jir_min(JitIR *ir, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildSelect(ir->b, LLVMBuildFCmp(ir->b, LLVMRealOLT, a, b, ""), a, b, "");
}

/* ---- math ------------------------------------------------------------------- */

static LLVMValueRef fmuladd_c(JitIR *ir, LLVMValueRef a, LLVMValueRef b, double c) {
    return jir_fmuladd(ir, a, b, jir_f32(ir, c));
}

static LLVMValueRef as_i32(JitIR *ir, LLVMValueRef f) { return LLVMBuildBitCast(ir->b, f, ir->t_i32, ""); }
static LLVMValueRef as_f32(JitIR *ir, LLVMValueRef i) { return LLVMBuildBitCast(ir->b, i, ir->t_f32, ""); }

LLVMValueRef jir_exp(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef hi = jir_f32(ir, 88.0), lo = jir_f32(ir, -87.0);
    x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
    x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, lo, ""), lo, x, "");
    LLVMValueRef n = jir_floor(ir, fmuladd_c(ir, x, jir_f32(ir, 1.44269504088896341), 0.5));
    LLVMValueRef r = jir_fmuladd(ir, n, jir_f32(ir, -0.693359375), x);
    r = jir_fmuladd(ir, n, jir_f32(ir, 2.12194440e-4), r);
    LLVMValueRef p = jir_f32(ir, 1.9875691500e-4);
    p = fmuladd_c(ir, p, r, 1.3981999507e-3);
    p = fmuladd_c(ir, p, r, 8.3334519073e-3);
    p = fmuladd_c(ir, p, r, 4.1665795894e-2);
    p = fmuladd_c(ir, p, r, 1.6666665459e-1);
    p = fmuladd_c(ir, p, r, 5.0000001201e-1);
    LLVMValueRef y = jir_fmuladd(ir, p, LLVMBuildFMul(b, r, r, ""), r);
    y = LLVMBuildFAdd(b, y, jir_f32(ir, 1.0), "");
    LLVMValueRef nc = jir_minnum(ir, jir_maxnum(ir, n, jir_f32(ir, -127.0)), jir_f32(ir, 127.0));
    LLVMValueRef k = LLVMBuildFPToSI(b, nc, ir->t_i32, "");
    LLVMValueRef bits = LLVMBuildShl(b, LLVMBuildAdd(b, k, jir_i32(ir, 127), ""), jir_i32(ir, 23), "");
    return LLVMBuildFMul(b, y, as_f32(ir, bits), "");
}

LLVMValueRef jir_log(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef one = jir_f32(ir, 1.0);
    LLVMValueRef sub = LLVMBuildFCmp(b, LLVMRealOLT, x, jir_f32(ir, 1.17549435e-38), "");
    LLVMValueRef s = LLVMBuildSelect(b, sub, jir_f32(ir, 8388608.0), one, "");
    LLVMValueRef xi = as_i32(ir, LLVMBuildFMul(b, x, s, ""));
    LLVMValueRef ei = LLVMBuildSub(b, LLVMBuildLShr(b, xi, jir_i32(ir, 23), ""), jir_i32(ir, 126), "");
    LLVMValueRef e = LLVMBuildSIToFP(b, ei, ir->t_f32, "");
    e = LLVMBuildFSub(b, e, LLVMBuildSelect(b, sub, jir_f32(ir, 23.0), jir_f32(ir, 0.0), ""), "");
    LLVMValueRef mi = LLVMBuildOr(b, LLVMBuildAnd(b, xi, jir_i32(ir, 0x007fffff), ""), jir_i32(ir, 0x3f000000), "");
    LLVMValueRef m = as_f32(ir, mi);
    LLVMValueRef lo = LLVMBuildFCmp(b, LLVMRealOLT, m, jir_f32(ir, 0.707106781186547524), "");
    e = LLVMBuildFSub(b, e, LLVMBuildSelect(b, lo, one, jir_f32(ir, 0.0), ""), "");
    m = LLVMBuildFSub(b, LLVMBuildSelect(b, lo, LLVMBuildFAdd(b, m, m, ""), m, ""), one, "");
    LLVMValueRef z = LLVMBuildFMul(b, m, m, "");
    LLVMValueRef p = jir_f32(ir, 7.0376836292e-2);
    p = fmuladd_c(ir, p, m, -1.1514610310e-1);
    p = fmuladd_c(ir, p, m, 1.1676998740e-1);
    p = fmuladd_c(ir, p, m, -1.2420140846e-1);
    p = fmuladd_c(ir, p, m, 1.4249322787e-1);
    p = fmuladd_c(ir, p, m, -1.6668057665e-1);
    p = fmuladd_c(ir, p, m, 2.0000714765e-1);
    p = fmuladd_c(ir, p, m, -2.4999993993e-1);
    p = fmuladd_c(ir, p, m, 3.3333331174e-1);
    LLVMValueRef y = LLVMBuildFMul(b, LLVMBuildFMul(b, p, m, ""), z, "");
    y = jir_fmuladd(ir, e, jir_f32(ir, -2.12194440e-4), y);
    y = jir_fmuladd(ir, z, jir_f32(ir, -0.5), y);
    LLVMValueRef r = LLVMBuildFAdd(b, m, y, "");
    r = jir_fmuladd(ir, e, jir_f32(ir, 0.693359375), r);
    /* special values */
    r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, x, jir_f32(ir, INFINITY), ""), x, r, "");
    r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, x, jir_f32(ir, 0.0), ""), jir_f32(ir, -INFINITY), r, "");
    r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, jir_f32(ir, 0.0), ""), jir_f32(ir, NAN), r, "");
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, x, x, ""), x, r, "");
}

LLVMValueRef jir_log1p(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef one = jir_f32(ir, 1.0);
    LLVMValueRef u = LLVMBuildFAdd(b, one, x, "");
    LLVMValueRef d = LLVMBuildFSub(b, u, one, "");
    LLVMValueRef q = LLVMBuildFMul(b, jir_log(ir, u), LLVMBuildFDiv(b, x, d, ""), "");
    LLVMValueRef r = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, u, one, ""), x, q, "");
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, x, jir_f32(ir, INFINITY), ""), x, r, "");
}

LLVMValueRef jir_sigmoid(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef e = jir_exp(ir, LLVMBuildFNeg(b, x, ""));
    return LLVMBuildFDiv(b, jir_f32(ir, 1.0), LLVMBuildFAdd(b, jir_f32(ir, 1.0), e, ""), "");
}

LLVMValueRef jir_tanh(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef e = jir_exp(ir, LLVMBuildFAdd(b, x, x, ""));
    LLVMValueRef q = LLVMBuildFDiv(b, jir_f32(ir, 2.0), LLVMBuildFAdd(b, e, jir_f32(ir, 1.0), ""), "");
    return LLVMBuildFSub(b, jir_f32(ir, 1.0), q, "");
}

LLVMValueRef jir_softplus(JitIR *ir, LLVMValueRef x) {
    LLVMBuilderRef b = ir->b;
    LLVMValueRef t = jir_log1p(ir, jir_exp(ir, LLVMBuildFNeg(b, jir_fabs(ir, x), "")));
    return LLVMBuildFAdd(b, jir_maxnum(ir, x, jir_f32(ir, 0.0)), t, "");
}

/* ---- loops -------------------------------------------------------------------- */

void jir_loop_begin(JitIR *ir, JirLoop *L, LLVMValueRef lo, LLVMValueRef hi, unsigned flags) {
    memset(L, 0, sizeof *L);
    L->flags = flags;
    LLVMValueRef fn = LLVMGetBasicBlockParent(LLVMGetInsertBlock(ir->b));
    L->pre = LLVMGetInsertBlock(ir->b);
    L->header = LLVMAppendBasicBlockInContext(ir->ctx, fn, "loop");
    L->body = LLVMAppendBasicBlockInContext(ir->ctx, fn, "body");
    L->exit = LLVMAppendBasicBlockInContext(ir->ctx, fn, "done");
    LLVMBuildBr(ir->b, L->header);
    LLVMPositionBuilderAtEnd(ir->b, L->header);
    L->iv = LLVMBuildPhi(ir->b, ir->t_i64, "i");
    LLVMAddIncoming(L->iv, &lo, &L->pre, 1);
    LLVMValueRef cond = LLVMBuildICmp(ir->b, LLVMIntSLT, L->iv, hi, "");
    LLVMBuildCondBr(ir->b, cond, L->body, L->exit);
    LLVMPositionBuilderAtEnd(ir->b, L->body);
}

LLVMValueRef jir_loop_carry(JitIR *ir, JirLoop *L, LLVMValueRef init) {
    PXC_ASSERT(L->ncarry < JIR_LOOP_MAX_CARRY);
    LLVMBasicBlockRef cur = LLVMGetInsertBlock(ir->b);
    LLVMPositionBuilder(ir->b, L->header, LLVMGetFirstInstruction(L->header));
    LLVMValueRef phi = LLVMBuildPhi(ir->b, LLVMTypeOf(init), "acc");
    LLVMAddIncoming(phi, &init, &L->pre, 1);
    LLVMPositionBuilderAtEnd(ir->b, cur);
    L->carry[L->ncarry] = phi;
    L->next[L->ncarry] = NULL;
    L->ncarry++;
    return phi;
}

void jir_loop_next(JirLoop *L, int k, LLVMValueRef next) {
    PXC_ASSERT(k >= 0 && k < L->ncarry);
    L->next[k] = next;
}

static LLVMMetadataRef md_str(JitIR *ir, const char *s) { return LLVMMDStringInContext2(ir->ctx, s, strlen(s)); }

static LLVMMetadataRef md_prop(JitIR *ir, const char *name, LLVMValueRef v) {
    LLVMMetadataRef ops[2] = {md_str(ir, name), v ? LLVMValueAsMetadata(v) : NULL};
    return LLVMMDNodeInContext2(ir->ctx, ops, v ? 2 : 1);
}

/* A loop ID: a node whose first operand is itself, then the properties. */
static LLVMMetadataRef loop_id(JitIR *ir, unsigned flags) {
    LLVMMetadataRef ops[4];
    int n = 0;
    LLVMMetadataRef tmp = LLVMTemporaryMDNode(ir->ctx, NULL, 0);
    ops[n++] = tmp;
    if (flags & JIR_LOOP_VECTORIZE)
        ops[n++] = md_prop(ir, "llvm.loop.vectorize.enable", LLVMConstInt(ir->t_i1, 1, 0));
    if (flags & JIR_LOOP_NO_VECTORIZE)
        ops[n++] = md_prop(ir, "llvm.loop.vectorize.width", jir_i32(ir, 1));
    if (flags & JIR_LOOP_NO_UNROLL) ops[n++] = md_prop(ir, "llvm.loop.unroll.disable", NULL);
    LLVMMetadataRef id = LLVMMDNodeInContext2(ir->ctx, ops, (size_t)n);
    LLVMMetadataReplaceAllUsesWith(tmp, id);
    return id;
}

void jir_loop_end(JitIR *ir, JirLoop *L) {
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(ir->b);
    LLVMValueRef one = jir_i64(ir, 1);
    LLVMValueRef inext = LLVMBuildNSWAdd(ir->b, L->iv, one, "");
    LLVMValueRef br = LLVMBuildBr(ir->b, L->header);
    LLVMAddIncoming(L->iv, &inext, &latch, 1);
    for (int k = 0; k < L->ncarry; k++) {
        LLVMValueRef v = L->next[k] ? L->next[k] : L->carry[k];
        LLVMAddIncoming(L->carry[k], &v, &latch, 1);
    }
    if (L->flags) LLVMSetMetadata(br, ir->md_loop, LLVMMetadataAsValue(ir->ctx, loop_id(ir, L->flags)));
    LLVMPositionBuilderAtEnd(ir->b, L->exit);
}
