/*
 * dist.h — data-parallel training over MPI: which of the processes this one
 * is, and the few collective operations the training loop needs.
 *
 * `mpirun -np P pxc train ...` starts P copies of pxc. Each runs the same
 * compiled model on its share of every batch; gradients and losses are
 * summed over the processes before the (identical) optimiser step; rank 0
 * alone writes files. The training loop has ONE code path: when pxc was not
 * started by an MPI launcher (or was built without MPI), this is a world of
 * one process, the sums leave their buffers as they are, and nothing here
 * costs anything.
 *
 * Output. Ranks other than 0 print nothing: their stdout goes to /dev/null
 * and their stderr to a private temporary file that is printed (each line
 * prefixed "[rank R] ") only when that rank fails on its own, not when rank
 * 0 reports the failure. PXC_ALL_RANKS_PRINT=1 in the environment turns this
 * off (every rank prints everything).
 *
 * Failures. A rank that fails alone while the others wait in a collective
 * operation would hang the job; rt_dist_finalize notices (within a few
 * seconds) and aborts every process instead. Code that may fail on one rank
 * only (rank 0's file writes) makes the others aware with rt_dist_any before
 * the next collective step, so an ordinary error ends every process cleanly.
 *
 * Waiting. Unless the user sets it, rt_dist_init asks Open MPI to yield
 * the core while a rank waits in a collective (mpi_yield_when_idle=1):
 * steps are long next to the sums, and spinning would take the core from a
 * rank that is still computing.
 *
 * Not thread-safe: call these from the thread that called rt_dist_init.
 */
#ifndef PXC_DIST_H
#define PXC_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Join the job when started by an MPI launcher (Open MPI's mpirun, or any
 * launcher that sets PMI/PMIx variables); otherwise a world of one. Call it
 * once, first thing; argc/argv may be adjusted by MPI. 0, or -1 with a
 * message (e.g. this pxc was built without MPI but launched as one of
 * several processes). */
int rt_dist_init(int *argc, char ***argv, char *err, size_t errlen);

/* True when this pxc was built with MPI (CMake option PXC_WITH_MPI). */
bool rt_dist_built_with_mpi(void);

/* This process's rank in 0..size-1, and the number of processes (1 when
 * not launched by MPI or before rt_dist_init). */
int rt_dist_rank(void);
int rt_dist_size(void);

/* "MPI (Open MPI v4.1.4), 2 processes" or "one process" — for logs. */
const char *rt_dist_describe(void);

/* Element-wise sums over every process, in place: afterwards every rank
 * holds the same n values. No-ops in a world of one. */
void rt_dist_allreduce_sum_f32(float *buf /*[n]*/, int64_t n);
void rt_dist_allreduce_sum_f64(double *buf /*[n]*/, int64_t n);

/* Rank 0's n values into every rank's buf. */
void rt_dist_broadcast_f32(float *buf /*[n]*/, int64_t n);

/* True on every rank when flag is true on any rank. */
bool rt_dist_any(bool flag);

/* True on every rank when every rank passed the same v. */
bool rt_dist_same_u64(uint64_t v);

/* Wait until every rank gets here. */
void rt_dist_barrier(void);

/* Leave the job; returns status (the process's exit status). When status is
 * non-zero and some other rank does not reach rt_dist_finalize within a few
 * seconds (it is waiting for this one in a collective operation), every
 * process is aborted with that status. */
int rt_dist_finalize(int status);

#endif
