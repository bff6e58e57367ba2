/*
 * progress.h — what a training run tells its user while it runs, and what it
 * leaves behind for later: a live progress bar on a terminal (step, images/s,
 * train bits/dim, last test bits/dim, ETA) or plain lines when the output is
 * a file or a pipe; and RUN_DIR/metrics.jsonl, one JSON object per logged
 * figure set.
 *
 * The bar is one line redrawn in place (at most 5 times a second); messages
 * (evaluations, checkpoints, warnings) print above it and it is redrawn
 * under them. Nothing here decides when to log: the training loop does.
 */
#ifndef PXC_PROGRESS_H
#define PXC_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef enum RtProgressMode {
    RT_PROGRESS_AUTO,   /* a bar when f is a terminal (and TERM is not "dumb"), else lines */
    RT_PROGRESS_BAR,
    RT_PROGRESS_LINES,
    RT_PROGRESS_QUIET,  /* nothing at all */
} RtProgressMode;

/* One set of figures. NAN where a figure is not known. */
typedef struct RtStats {
    int64_t step;
    double epoch;        /* fractional epochs of the training set seen */
    double train_bpd;    /* mean over the steps since the last log */
    double test_bpd;     /* the last evaluation */
    double lr;
    double img_per_s;
    double wall_time;    /* seconds of training in this run, across resumes */
    double eta;          /* seconds left, or NAN */
    double frac;         /* fraction done in [0,1], or NAN */
} RtStats;

typedef struct RtProgress {
    FILE *f;
    int bar;             /* drawing a bar */
    int quiet;
    int bar_visible;     /* a bar line is on the screen */
    double last_draw;    /* monotonic seconds */
    int width;           /* terminal columns */
} RtProgress;

void rt_progress_init(RtProgress *p, FILE *f, RtProgressMode mode);
/* Bar mode: redraw the bar (rate-limited unless force). Lines mode: nothing. */
void rt_progress_update(RtProgress *p, const RtStats *s, int force);
/* Lines mode: print one line of figures. Bar mode: nothing (the bar shows them). */
void rt_progress_line(RtProgress *p, const RtStats *s);
/* A message on its own line (above the bar in bar mode). */
void rt_progress_message(RtProgress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Leave the bar on screen as a finished line. */
void rt_progress_finish(RtProgress *p);

/* "1:02:03" or "2:03" for a number of seconds. */
const char *rt_format_duration(double seconds, char *buf, size_t n);
/* Monotonic clock, seconds. */
double rt_now(void);

/* Append one record to a metrics.jsonl file: {"step", "wall_time", "epoch",
 * "train_bpd", "test_bpd", "lr", "images_per_s", "time"} (null for NAN;
 * "time" is the Unix time). 0, or -1 with a message. */
int rt_metrics_append(const char *path, const RtStats *s, char *err, size_t errlen);
/* Keep only the records with step <= max_step (and drop a torn last line),
 * rewriting the file atomically; for resuming from a checkpoint. A missing
 * file is fine. 0 or -1. */
int rt_metrics_truncate(const char *path, int64_t max_step, char *err, size_t errlen);

#endif
