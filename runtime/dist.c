/* dist.c — see dist.h. Built with MPI when PXC_HAVE_MPI is defined (CMake
 * option PXC_WITH_MPI); otherwise only the world of one exists. */
#define _GNU_SOURCE
#include "dist.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef PXC_HAVE_MPI
#include <mpi.h>
#endif

static struct {
    bool active;        /* MPI_Init was called by rt_dist_init */
    int rank, size;
    char desc[160];
    int saved_stderr;   /* rank > 0: the real stderr, or -1 when not captured */
    FILE *capture;      /* rank > 0: where stderr goes until it is needed */
#ifdef PXC_HAVE_MPI
    MPI_Comm fin_comm;  /* a communicator of its own for rt_dist_finalize */
#endif
} g = {false, 0, 1, "", -1, NULL
#ifdef PXC_HAVE_MPI
       , MPI_COMM_NULL
#endif
};

/* The world size an MPI launcher announces in the environment (0: none). */
static int launcher_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v) > 0 ? atoi(v) : 1;
    }
    if (getenv("PMIX_RANK") || getenv("PMI_RANK")) return 1;  /* launched; size unknown */
    return 0;
}

bool rt_dist_built_with_mpi(void) {
#ifdef PXC_HAVE_MPI
    return true;
#else
    return false;
#endif
}

int rt_dist_rank(void) { return g.rank; }
int rt_dist_size(void) { return g.size; }
const char *rt_dist_describe(void) { return g.desc[0] ? g.desc : "one process"; }

#ifdef PXC_HAVE_MPI

/* Rank > 0: stdout to /dev/null, stderr to a temporary file (dist.h). */
static void capture_output(void) {
    const char *all = getenv("PXC_ALL_RANKS_PRINT");
    if (g.rank == 0 || (all && *all && strcmp(all, "0"))) return;
    fflush(stdout);
    fflush(stderr);
    FILE *cap = tmpfile();
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int saved = dup(2);
    if (!cap || null_fd < 0 || saved < 0) {  /* keep printing rather than lose messages */
        if (cap) fclose(cap);
        if (null_fd >= 0) close(null_fd);
        if (saved >= 0) close(saved);
        return;
    }
    dup2(null_fd, 1);
    close(null_fd);
    dup2(fileno(cap), 2);
    g.capture = cap;
    g.saved_stderr = saved;
}

/* Print what rank > 0 wrote to stderr on the real stderr, "[rank R] " before each line. */
static void replay_output(void) {
    if (!g.capture) return;
    fflush(stderr);
    int fd = fileno(g.capture);
    char buf[4096], prefix[32];
    int np = snprintf(prefix, sizeof prefix, "[rank %d] ", g.rank);
    bool at_line_start = true;
    off_t off = 0;
    ssize_t k;
    while ((k = pread(fd, buf, sizeof buf, off)) > 0) {
        off += k;
        for (ssize_t i = 0; i < k;) {
            if (at_line_start && write(g.saved_stderr, prefix, (size_t)np) < 0) return;
            ssize_t j = i;
            while (j < k && buf[j] != '\n') j++;
            bool nl = j < k;
            if (write(g.saved_stderr, buf + i, (size_t)(j - i + nl)) < 0) return;
            at_line_start = nl;
            i = j + nl;
        }
    }
    if (!at_line_start && write(g.saved_stderr, "\n", 1) < 0) return;
}

int rt_dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    if (g.active || launcher_size() == 0) return 0;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        /* A rank that waits for the others in a sum yields its core rather
         * than spin on it: pxc's steps are long next to the sums, and the
         * core may be the one another rank (or its threads) needs. The
         * user's own setting (mpirun --mca mpi_yield_when_idle 0) wins. */
        setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
        int provided;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            snprintf(err, errlen, "MPI_Init failed (pxc was started by an MPI launcher)");
            return -1;
        }
    }
    g.active = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    MPI_Comm_dup(MPI_COMM_WORLD, &g.fin_comm);
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, ",\n")] = 0;
    lib[100] = 0;
    snprintf(g.desc, sizeof g.desc, "MPI (%.100s), %d process%s", lib, g.size, g.size == 1 ? "" : "es");
    capture_output();
    return 0;
}

/* MPI counts are ints: large buffers go in pieces. */
#define CHUNK ((int64_t)1 << 30)

void rt_dist_allreduce_sum_f32(float *buf, int64_t n) {
    if (!g.active || g.size == 1) return;
    for (int64_t i = 0; i < n; i += CHUNK)
        MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

void rt_dist_allreduce_sum_f64(double *buf, int64_t n) {
    if (!g.active || g.size == 1) return;
    for (int64_t i = 0; i < n; i += CHUNK)
        MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void rt_dist_broadcast_f32(float *buf, int64_t n) {
    if (!g.active || g.size == 1) return;
    for (int64_t i = 0; i < n; i += CHUNK)
        MPI_Bcast(buf + i, (int)(n - i < CHUNK ? n - i : CHUNK), MPI_FLOAT, 0, MPI_COMM_WORLD);
}

bool rt_dist_any(bool flag) {
    if (!g.active || g.size == 1) return flag;
    int v = flag, any = 0;
    MPI_Allreduce(&v, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return any != 0;
}

bool rt_dist_same_u64(uint64_t v) {
    if (!g.active || g.size == 1) return true;
    uint64_t lo = v, hi = v;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == v && hi == v;
}

void rt_dist_barrier(void) {
    if (g.active && g.size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* How long a failed rank waits for the others before aborting them all. */
#define FAIL_WAIT_SECONDS 5.0

int rt_dist_finalize(int status) {
    if (!g.active) return status;
    fflush(stdout);
    fflush(stderr);
    /* Every rank's status, gathered on a communicator of its own: a rank
     * blocked in a collective operation on MPI_COMM_WORLD (waiting for this
     * one) never joins, and is then aborted rather than left hanging. */
    int *all = calloc((size_t)g.size, sizeof(int));
    MPI_Request rq;
    MPI_Iallgather(&status, 1, MPI_INT, all, 1, MPI_INT, g.fin_comm, &rq);
    const double deadline = mono_now() + FAIL_WAIT_SECONDS;
    int done = 0;
    for (;;) {
        MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        if (done || (status != 0 && mono_now() > deadline)) break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (!done) {
        replay_output();
        int fd = g.capture ? g.saved_stderr : 2;
        char msg[256];
        int k = snprintf(msg, sizeof msg,
                         "pxc: process %d of %d failed while the others still run; stopping them all\n", g.rank,
                         g.size);
        if (write(fd, msg, (size_t)k) < 0) { /* nothing more to do */ }
        MPI_Abort(MPI_COMM_WORLD, status);
        _exit(status);
    }
    /* Rank 0 reports a failure it shares; a rank that failed alone speaks for itself. */
    if (status != 0 && g.rank != 0 && all[0] == 0) replay_output();
    free(all);
    MPI_Comm_free(&g.fin_comm);
    MPI_Finalize();
    g.active = false;
    return status;
}

#else /* !PXC_HAVE_MPI: the world of one */

int rt_dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    (void)argc, (void)argv;
    int n = launcher_size();
    if (n > 1) {
        snprintf(err, errlen,
                 "this pxc was built without MPI but was started as one of %d processes (by mpirun?); every "
                 "process would train the whole run on its own. Rebuild with MPI (apt-get install "
                 "libopenmpi-dev, then cmake -DPXC_WITH_MPI=ON) or run pxc without mpirun",
                 n);
        return -1;
    }
    return 0;
}

void rt_dist_allreduce_sum_f32(float *buf, int64_t n) { (void)buf, (void)n; }
void rt_dist_allreduce_sum_f64(double *buf, int64_t n) { (void)buf, (void)n; }
void rt_dist_broadcast_f32(float *buf, int64_t n) { (void)buf, (void)n; }
bool rt_dist_any(bool flag) { return flag; }
bool rt_dist_same_u64(uint64_t v) { (void)v; return true; }
void rt_dist_barrier(void) {}
int rt_dist_finalize(int status) { return status; }

#endif
