/*
 * jit_conv.c — compiler/llvm's printer of KS_CONV (kir.h): a direct stride-1
 * convolution as register-tiled LLVM IR over explicit <16 x float> vectors,
 * run over pxc's two threads through jit_rt_parallel_for.
 *
 * Output channels go in chunks of NV vectors (NV = 4, 3, 2 or 1, the largest
 * dividing cout/16), so every chunk has the same tile shape:
 *
 *   forward   a tile is MR consecutive pixels of one output row x NV vectors
 *             of output channels: MR*NV accumulators (<= 28 of the 32 zmm
 *             registers); per (tap, input channel) NV weight vectors are
 *             loaded and each pixel's input is broadcast once:
 *                 acc[r][v] = fmuladd(splat(x[pix r + tap, c]), w[tap, c, v], acc[r][v])
 *             Rows of the image tile into MR-pixel tiles plus one tail tile
 *             (Wo % MR pixels, its own instance). The output rows (image,
 *             row) are split over the threads.
 *   wgrad     a tile is MR input channels x NV vectors of output channels of
 *             one tap; per output pixel NV gradient vectors are loaded and
 *             each channel's input broadcast once. The pixels go in blocks
 *             of rows small enough to stay in L2 while every tile of the
 *             thread passes over them (the tile is loaded from and stored
 *             back to w around each block); the tiles are split over the
 *             threads (two contiguous halves), so no element has two writers.
 *
 * Both forms skip the terms reading x's zero rows (KirConv pt, pb): the
 * forward form per output row narrows its taps a, the weight gradient skips
 * the output rows whose row i + a of x is zero. The weight gradient also
 * narrows its output columns per tap d to those reading no zero column (pl,
 * pr); the forward form computes the zero columns (its tiles are runs of
 * pixels, one set of taps for all).
 *
 * Accumulators live in allocas that SROA promotes to registers. Everything
 * but the image count is a constant of the generated code.
 */
#include <string.h>

#include "../kernels/kir.h"
#include "jit.h"
#include "jit_ir.h"

/* Below this many multiply-adds a convolution runs on the calling thread. */
#define CONV_PAR_MIN_MACS (1 << 18)
/* wgrad: floats of input and output-gradient rows per block of pixels (~192 KiB) */
#define WGRAD_BLOCK_FLOATS 49152

/* Pixels (forward) or input channels (wgrad) per tile for NV vectors. */
static int tile_rows(int nv) {
    static const int mr[5] = {0, 24, 14, 8, 6};
    return mr[nv];
}

/* Vectors per output-channel chunk: the largest of 4..1 dividing cout/16. */
static int chunk_vectors(int64_t cout) {
    int64_t nvec = cout / 16;
    for (int nv = 4; nv > 1; nv--)
        if (nvec % nv == 0) return nv;
    return 1;
}

typedef struct CV {
    JitIR *ir;
    const KirConv *k;
    LLVMTypeRef v16, pv16;
    LLVMValueRef X, W, Y;   /* float pointers inside the body function */
    LLVMValueRef acc[28];   /* <16 x float> allocas */
    int nv;
} CV;

static LLVMValueRef I(CV *c, int64_t v) { return jir_i64(c->ir, v); }
static LLVMValueRef add(CV *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(c->ir->b, a, b, ""); }
static LLVMValueRef mul(CV *c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(c->ir->b, a, b, ""); }
static LLVMValueRef addc(CV *c, LLVMValueRef a, int64_t v) { return v ? add(c, a, I(c, v)) : a; }
static LLVMValueRef mulc(CV *c, LLVMValueRef a, int64_t v) { return v == 1 ? a : mul(c, a, I(c, v)); }

static LLVMValueRef vptr(CV *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildBitCast(c->ir->b, jir_gep(c->ir, c->ir->t_f32, base, idx), c->pv16, "");
}

static LLVMValueRef vload(CV *c, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef v = LLVMBuildLoad2(c->ir->b, c->v16, vptr(c, base, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

static void vstore(CV *c, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef s = LLVMBuildStore(c->ir->b, v, vptr(c, base, idx));
    LLVMSetAlignment(s, 4);
}

static LLVMValueRef splat(CV *c, LLVMValueRef s) {
    LLVMBuilderRef b = c->ir->b;
    LLVMValueRef v = LLVMBuildInsertElement(b, LLVMGetUndef(c->v16), s, jir_i32(c->ir, 0), "");
    return LLVMBuildShuffleVector(b, v, LLVMGetUndef(c->v16), LLVMConstNull(LLVMVectorType(c->ir->t_i32, 16)), "");
}

static LLVMValueRef acc_get(CV *c, int i) { return LLVMBuildLoad2(c->ir->b, c->v16, c->acc[i], ""); }
static void acc_set(CV *c, int i, LLVMValueRef v) { LLVMBuildStore(c->ir->b, v, c->acc[i]); }

static void loop(CV *c, JirLoop *L, LLVMValueRef lo, LLVMValueRef hi) {
    jir_loop_begin(c->ir, L, lo, hi, JIR_LOOP_NO_VECTORIZE);
}

/* Forward tile: mr pixels from xb (x offset of the tile's first pixel, tap
 * (0,0), channel 0) and yb (y offset of its first pixel, channel o0), over
 * the tap rows [alo, ahi) (the others read zero rows of x). */
static void fwd_tile(CV *c, int mr, LLVMValueRef xb, LLVMValueRef yb, LLVMValueRef o0, LLVMValueRef alo,
                     LLVMValueRef ahi) {
    JitIR *ir = c->ir;
    const KirConv *k = c->k;
    int nv = c->nv;
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++)
            acc_set(c, r * nv + v,
                    k->beta != 0 ? vload(c, c->Y, addc(c, yb, r * k->cout + 16 * v)) : LLVMConstNull(c->v16));
    JirLoop La, Ld, Lc;
    loop(c, &La, alo, ahi);
    loop(c, &Ld, I(c, 0), I(c, k->kw));
    LLVMValueRef tap = add(c, mulc(c, La.iv, k->kw), Ld.iv);
    LLVMValueRef xa = add(c, xb, mulc(c, add(c, mulc(c, La.iv, k->Wp), Ld.iv), k->cin));
    LLVMValueRef wa = add(c, mulc(c, tap, k->cin * k->cout), o0);
    loop(c, &Lc, I(c, 0), I(c, k->cin));
    LLVMValueRef wc = add(c, wa, mulc(c, Lc.iv, k->cout)), xc = add(c, xa, Lc.iv);
    LLVMValueRef w[4];
    for (int v = 0; v < nv; v++) w[v] = vload(c, c->W, addc(c, wc, 16 * v));
    for (int r = 0; r < mr; r++) {
        LLVMValueRef s = splat(c, jir_load_f32(ir, c->X, addc(c, xc, r * k->cin)));
        for (int v = 0; v < nv; v++) acc_set(c, r * nv + v, jir_fmuladd(ir, s, w[v], acc_get(c, r * nv + v)));
    }
    jir_loop_end(ir, &Lc);
    jir_loop_end(ir, &Ld);
    jir_loop_end(ir, &La);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) vstore(c, acc_get(c, r * nv + v), c->Y, addc(c, yb, r * k->cout + 16 * v));
}

/* [*lo, *hi): the u in [0, count) for which u + v lies outside the zero
 * borders (zlo first, zhi last of the P rows or columns of x):
 * max(0, zlo - v) <= u < min(count, P - zhi - v). */
static void unzeroed(CV *c, LLVMValueRef v, int64_t zlo, int64_t zhi, int64_t P, int64_t count, LLVMValueRef *lo,
                     LLVMValueRef *hi) {
    LLVMBuilderRef b = c->ir->b;
    *lo = I(c, 0), *hi = I(c, count);
    if (zlo) {
        LLVMValueRef t = LLVMBuildNSWSub(b, I(c, zlo), v, "");
        *lo = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, t, *lo, ""), t, *lo, "");
    }
    if (zhi) {
        LLVMValueRef t = LLVMBuildNSWSub(b, I(c, P - zhi), v, "");
        *hi = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, t, *hi, ""), t, *hi, "");
    }
}

/* body(ctx, lo, hi): output rows [lo, hi) (row = image * Ho + i). */
static void fwd_body(CV *c) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    const KirConv *k = c->k;
    int mr = tile_rows(c->nv);
    if (mr > k->Wo) mr = (int)k->Wo;
    int64_t nfull = k->Wo / mr, tail = k->Wo % mr, nchunks = k->cout / (16 * c->nv);
    LLVMValueRef lo = LLVMGetParam(ir->fn, 1), hi = LLVMGetParam(ir->fn, 2);
    JirLoop Lr, Lo, Lj;
    loop(c, &Lr, lo, hi);
    LLVMValueRef img = LLVMBuildUDiv(b, Lr.iv, I(c, k->Ho), ""), i = LLVMBuildURem(b, Lr.iv, I(c, k->Ho), "");
    LLVMValueRef xrow = mulc(c, add(c, mulc(c, img, k->Hp), i), k->Wp * k->cin);
    LLVMValueRef yrow = mulc(c, add(c, mulc(c, img, k->yt + k->Ho + k->yb), addc(c, i, k->yt)), k->Wo * k->cout);
    /* the taps a reading rows i + a of x outside its zero borders:
     * max(0, pt - i) <= a < min(kh, Hp - pb - i) */
    LLVMValueRef alo, ahi;
    unzeroed(c, i, k->pt, k->pb, k->Hp, k->kh, &alo, &ahi);
    loop(c, &Lo, I(c, 0), I(c, nchunks));
    LLVMValueRef o0 = mulc(c, Lo.iv, 16 * c->nv);
    LLVMValueRef yo = add(c, yrow, o0);
    loop(c, &Lj, I(c, 0), I(c, nfull));
    LLVMValueRef j0 = mulc(c, Lj.iv, mr);
    fwd_tile(c, mr, add(c, xrow, mulc(c, j0, k->cin)), add(c, yo, mulc(c, j0, k->cout)), o0, alo, ahi);
    jir_loop_end(ir, &Lj);
    if (tail)
        fwd_tile(c, (int)tail, addc(c, xrow, nfull * mr * k->cin), addc(c, yo, nfull * mr * k->cout), o0, alo, ahi);
    jir_loop_end(ir, &Lo);
    jir_loop_end(ir, &Lr);
}

/* wgrad tile: mr input channels from c0 x nv vectors from o0 of tap (a, d),
 * over output rows [r0, r1); first: this is the first block (beta 0: start
 * from zero rather than what w holds). */
static void wgrad_tile(CV *c, int mr, LLVMValueRef a, LLVMValueRef d, LLVMValueRef c0, LLVMValueRef o0,
                       LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef first) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    const KirConv *k = c->k;
    int nv = c->nv;
    LLVMValueRef tap = add(c, mulc(c, a, k->kw), d);
    LLVMValueRef wb = add(c, mulc(c, add(c, mulc(c, tap, k->cin), c0), k->cout), o0);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            LLVMValueRef old = vload(c, c->W, addc(c, wb, r * k->cout + 16 * v));
            if (k->beta == 0) old = LLVMBuildSelect(b, first, LLVMConstNull(c->v16), old, "");
            acc_set(c, r * nv + v, old);
        }
    /* the output columns j whose column j + d of x is not a zero border:
     * max(0, pl - d) <= j < min(Wo, Wp - pr - d) */
    LLVMValueRef jlo, jhi;
    unzeroed(c, d, k->pl, k->pr, k->Wp, k->Wo, &jlo, &jhi);
    JirLoop Lr, Lj;
    loop(c, &Lr, r0, r1);
    LLVMValueRef img = LLVMBuildUDiv(b, Lr.iv, I(c, k->Ho), ""), i = LLVMBuildURem(b, Lr.iv, I(c, k->Ho), "");
    /* rows i + a of x in its zero borders contribute nothing: skipped */
    LLVMBasicBlockRef skip = NULL;
    if (k->pt || k->pb) {
        LLVMValueRef xi = add(c, i, a), live = NULL;
        if (k->pt) live = LLVMBuildICmp(b, LLVMIntSGE, xi, I(c, k->pt), "");
        if (k->pb) {
            LLVMValueRef lt = LLVMBuildICmp(b, LLVMIntSLT, xi, I(c, k->Hp - k->pb), "");
            live = live ? LLVMBuildAnd(b, live, lt, "") : lt;
        }
        LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "live_row");
        skip = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "next_row");
        LLVMBuildCondBr(b, live, run, skip);
        LLVMPositionBuilderAtEnd(b, run);
    }
    /* x[img, i + a, d + j, c0 + r] and y[row, j, o0 + 16 v] */
    LLVMValueRef xrow = add(c, mulc(c, add(c, mulc(c, add(c, mulc(c, img, k->Hp), add(c, i, a)), k->Wp), d), k->cin), c0);
    LLVMValueRef yrow =
        add(c, mulc(c, add(c, mulc(c, img, k->yt + k->Ho + k->yb), addc(c, i, k->yt)), k->Wo * k->cout), o0);
    loop(c, &Lj, jlo, jhi);
    LLVMValueRef xj = add(c, xrow, mulc(c, Lj.iv, k->cin)), yj = add(c, yrow, mulc(c, Lj.iv, k->cout));
    LLVMValueRef g[4];
    for (int v = 0; v < nv; v++) g[v] = vload(c, c->Y, addc(c, yj, 16 * v));
    for (int r = 0; r < mr; r++) {
        LLVMValueRef s = splat(c, jir_load_f32(ir, c->X, addc(c, xj, r)));
        for (int v = 0; v < nv; v++) acc_set(c, r * nv + v, jir_fmuladd(ir, s, g[v], acc_get(c, r * nv + v)));
    }
    jir_loop_end(ir, &Lj);
    if (skip) {
        LLVMBuildBr(b, skip);
        LLVMPositionBuilderAtEnd(b, skip);
    }
    jir_loop_end(ir, &Lr);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) vstore(c, acc_get(c, r * nv + v), c->W, addc(c, wb, r * k->cout + 16 * v));
}

/* Tiles of the wgrad form: (tap, channel tile, output chunk), output chunk fastest. */
static void wgrad_tiles(const KirConv *k, int nv, int *mr, int64_t *nct, int64_t *nchunks) {
    *mr = tile_rows(nv);
    if (*mr > k->cin) *mr = (int)k->cin;
    *nct = (k->cin + *mr - 1) / *mr;
    *nchunks = k->cout / (16 * nv);
}

/* body(ctx, lo, hi): tiles [lo, hi) over every block of output rows. */
static void wgrad_body(CV *c, LLVMValueRef rows) {
    JitIR *ir = c->ir;
    LLVMBuilderRef b = ir->b;
    const KirConv *k = c->k;
    int mr;
    int64_t nct, nchunks;
    wgrad_tiles(k, c->nv, &mr, &nct, &nchunks);
    int64_t tail = k->cin % mr;
    int64_t rb = WGRAD_BLOCK_FLOATS / (k->Wo * k->cout + k->Wp * k->cin);
    if (rb < 1) rb = 1;
    LLVMValueRef lo = LLVMGetParam(ir->fn, 1), hi = LLVMGetParam(ir->fn, 2);
    /* at least one block: with no rows, beta 0 still writes zeros */
    LLVMValueRef nblocks = LLVMBuildUDiv(b, addc(c, rows, rb - 1), I(c, rb), "");
    nblocks = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, nblocks, I(c, 1), ""), I(c, 1), nblocks, "");
    JirLoop Lb, Lu;
    loop(c, &Lb, I(c, 0), nblocks);
    LLVMValueRef r0 = mulc(c, Lb.iv, rb), r1 = addc(c, r0, rb);
    r1 = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, r1, rows, ""), r1, rows, "");
    LLVMValueRef first = LLVMBuildICmp(b, LLVMIntEQ, Lb.iv, I(c, 0), "");
    loop(c, &Lu, lo, hi);
    LLVMValueRef oc = LLVMBuildURem(b, Lu.iv, I(c, nchunks), "");
    LLVMValueRef rest = LLVMBuildUDiv(b, Lu.iv, I(c, nchunks), "");
    LLVMValueRef ct = LLVMBuildURem(b, rest, I(c, nct), ""), tap = LLVMBuildUDiv(b, rest, I(c, nct), "");
    LLVMValueRef a = LLVMBuildUDiv(b, tap, I(c, k->kw), ""), d = LLVMBuildURem(b, tap, I(c, k->kw), "");
    LLVMValueRef c0 = mulc(c, ct, mr), o0 = mulc(c, oc, 16 * c->nv);
    if (!tail) {
        wgrad_tile(c, mr, a, d, c0, o0, r0, r1, first);
    } else {
        LLVMValueRef fn = ir->fn;
        LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(ir->ctx, fn, "full");
        LLVMBasicBlockRef bt = LLVMAppendBasicBlockInContext(ir->ctx, fn, "tail");
        LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(ir->ctx, fn, "tiled");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntULT, ct, I(c, nct - 1), ""), bf, bt);
        LLVMPositionBuilderAtEnd(b, bf);
        wgrad_tile(c, mr, a, d, c0, o0, r0, r1, first);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bt);
        wgrad_tile(c, (int)tail, a, d, c0, o0, r0, r1, first);
        LLVMBuildBr(b, bj);
        LLVMPositionBuilderAtEnd(b, bj);
    }
    jir_loop_end(ir, &Lu);
    jir_loop_end(ir, &Lb);
}

void jit_conv_emit(JitIR *ir, LLVMValueRef f, const char *name, const KirConv *k, LLVMValueRef X, LLVMValueRef W,
                   LLVMValueRef Y, LLVMValueRef images) {
    LLVMBuilderRef b = ir->b;
    CV c;
    memset(&c, 0, sizeof c);
    c.ir = ir;
    c.k = k;
    c.v16 = LLVMVectorType(ir->t_f32, 16);
    c.pv16 = LLVMPointerType(c.v16, 0);
    c.nv = chunk_vectors(k->cout);
    bool fwd = k->form == KIR_CONV_FORWARD;

    /* name(ctx = {X, W, Y, images}, lo, hi) */
    LLVMBasicBlockRef resume = LLVMGetInsertBlock(b);
    LLVMTypeRef fts[4] = {ir->t_pf32, ir->t_pf32, ir->t_pf32, ir->t_i64};
    LLVMTypeRef st = LLVMStructTypeInContext(ir->ctx, fts, 4, 0);
    LLVMTypeRef bps[3] = {ir->t_pi8, ir->t_i64, ir->t_i64};
    LLVMValueRef body = jir_function(ir, name, ir->t_void, bps, 3);
    LLVMSetLinkage(body, LLVMInternalLinkage);
    LLVMValueRef ctx = LLVMBuildBitCast(b, LLVMGetParam(body, 0), LLVMPointerType(st, 0), "");
    LLVMValueRef fld[4];
    for (unsigned i = 0; i < 4; i++)
        fld[i] = LLVMBuildLoad2(b, fts[i], LLVMBuildStructGEP2(b, st, ctx, i, ""), "");
    c.X = fld[0], c.W = fld[1], c.Y = fld[2];
    for (int i = 0; i < 28; i++) c.acc[i] = LLVMBuildAlloca(b, c.v16, "");
    LLVMValueRef rows = mulc(&c, fld[3], k->Ho);
    if (fwd) fwd_body(&c);
    else wgrad_body(&c, rows);
    LLVMBuildRetVoid(b);

    /* back in f: body(ctx, 0, units) or the parallel-for over units */
    ir->fn = f;
    LLVMPositionBuilderAtEnd(b, resume);
    int mr;
    int64_t nct, nchunks;
    wgrad_tiles(k, c.nv, &mr, &nct, &nchunks);
    int64_t tiles = k->kh * k->kw * nct * nchunks;
    LLVMValueRef units = fwd ? mulc(&c, images, k->Ho) : I(&c, tiles);
    /* the weight gradient in two halves of the tiles: each half streams the
     * whole input once */
    LLVMValueRef align = I(&c, fwd ? 1 : (tiles + 1) / 2);
    LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(f);
    LLVMPositionBuilder(b, entry, LLVMGetFirstInstruction(entry));
    LLVMValueRef cp = LLVMBuildAlloca(b, st, "conv");
    LLVMPositionBuilderAtEnd(b, resume);
    LLVMValueRef vals[4] = {X, W, Y, images};
    for (unsigned i = 0; i < 4; i++) LLVMBuildStore(b, vals[i], LLVMBuildStructGEP2(b, st, cp, i, ""));
    LLVMValueRef cpi = LLVMBuildBitCast(b, cp, ir->t_pi8, "");
    LLVMValueRef macs = mulc(&c, images, k->Ho * k->Wo * k->kh * k->kw * k->cin * k->cout);
    LLVMValueRef small = LLVMBuildICmp(b, LLVMIntSLT, macs, I(&c, CONV_PAR_MIN_MACS), "");
    LLVMBasicBlockRef bs = LLVMAppendBasicBlockInContext(ir->ctx, f, "conv_serial");
    LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(ir->ctx, f, "conv_parallel");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(ir->ctx, f, "conv_done");
    LLVMBuildCondBr(b, small, bs, bp);
    LLVMPositionBuilderAtEnd(b, bs);
    LLVMValueRef sargs[3] = {cpi, I(&c, 0), units};
    jir_call(ir, body, sargs, 3);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, bp);
    LLVMTypeRef bt = LLVMPointerType(LLVMFunctionType(ir->t_void, bps, 3, 0), 0);
    LLVMTypeRef ps[4] = {bt, ir->t_pi8, ir->t_i64, ir->t_i64};
    LLVMValueRef pf = jir_declare(ir, "jit_rt_parallel_for", ir->t_void, ps, 4);
    LLVMValueRef pargs[4] = {body, cpi, units, align};
    jir_call(ir, pf, pargs, 4);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
}
