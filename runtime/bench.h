/*
 * bench.h — what `pxc bench` measures besides the training step itself: the
 * machine's sgemm throughput on the model's own GEMM shapes (the limit a
 * convolution-as-GEMM back end is measured against) and the process's peak
 * resident memory.
 */
#ifndef PXC_BENCH_H
#define PXC_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* One GEMM shape of the model, M x N x K (row-major, op(A) transposed when
 * ta, op(B) when tb), and how many times a training step runs it. */
typedef struct RtGemmShape {
    int64_t m, n, k;
    int count;
    bool ta, tb;
} RtGemmShape;

/* The GEMMs of a training step of g at batch `batch`: every conv2d as
 * (batch·Ho·Wo) x O x (kh·kw·C) and every deconv2d as (batch·H·W) x
 * (kh·kw·O) x C (forward, NN), each with its two backward products: the
 * input gradient M x K x N (NT) and the weight gradient K x N x M (TN);
 * deduplicated. *out is malloc'd. */
int rt_gemm_shapes(const Graph *g, int batch, RtGemmShape **out);

/* sgemm GFLOP/s over those shapes, weighted by their FLOPs: each shape run
 * with M split over `threads` threads of pxc's own and OpenBLAS at one
 * thread, tall narrow products blocked by rows (jit_rt_sgemm: how pxc runs
 * its GEMMs), best of `reps` timings. */
double rt_sgemm_peak(const RtGemmShape *s, int n, int threads, int reps);

/* Peak resident set of this process since it started or since the last
 * rt_peak_rss_reset (VmHWM), bytes; rt_process_peak_rss_bytes never resets
 * (getrusage). rt_peak_rss_reset sets the peak to the current resident set
 * (/proc/self/clear_refs); false when the system does not allow it. */
size_t rt_peak_rss_bytes(void);
size_t rt_process_peak_rss_bytes(void);
bool rt_peak_rss_reset(void);

#endif
