/*
 * bench.h — what `pxc bench` measures besides the training step itself: the
 * machine's sgemm throughput on the model's own GEMM shapes (the limit a
 * convolution-as-GEMM back end is measured against) and the process's peak
 * resident memory.
 */
#ifndef PXC_BENCH_H
#define PXC_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* One GEMM shape of the model, M x N x K, and how many times a training
 * step runs it. */
typedef struct RtGemmShape {
    int64_t m, n, k;
    int count;
} RtGemmShape;

/* The GEMMs of a forward pass of g at batch `batch`: every conv2d as
 * (batch·Ho·Wo) x O x (kh·kw·C) and every deconv2d as (batch·H·W) x
 * (kh·kw·O) x C, deduplicated. *out is malloc'd. */
int rt_gemm_shapes(const Graph *g, int batch, RtGemmShape **out);

/* sgemm GFLOP/s over those shapes, weighted by their FLOPs: each shape run
 * with M split over `threads` threads of pxc's own and OpenBLAS at one
 * thread (how pxc runs its GEMMs), best of `reps` timings. */
double rt_sgemm_peak(const RtGemmShape *s, int n, int threads, int reps);

/* Peak resident set of this process, bytes. */
size_t rt_peak_rss_bytes(void);

#endif
