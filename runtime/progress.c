/* progress.c — see progress.h. */
#define _GNU_SOURCE
#include "progress.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "fileio.h"

double rt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *rt_format_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

void rt_progress_init(RtProgress *p, FILE *f, RtProgressMode mode) {
    memset(p, 0, sizeof *p);
    p->f = f;
    p->quiet = mode == RT_PROGRESS_QUIET || !f;
    if (mode == RT_PROGRESS_AUTO) {
        const char *term = getenv("TERM");
        p->bar = f && isatty(fileno(f)) && !(term && !strcmp(term, "dumb"));
    } else {
        p->bar = mode == RT_PROGRESS_BAR;
    }
    p->width = 100;
    struct winsize ws;
    if (p->bar && ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) p->width = ws.ws_col;
    p->last_draw = -1e30;
}

static void clear_bar(RtProgress *p) {
    if (p->bar_visible) {
        fputs("\r\033[K", p->f);
        p->bar_visible = 0;
    }
}

void rt_progress_update(RtProgress *p, const RtStats *s, int force) {
    if (p->quiet || !p->bar) return;
    double now = rt_now();
    if (!force && now - p->last_draw < 0.2) return;
    p->last_draw = now;
    char head[64], tail[192], eta[32], bar[128];
    snprintf(head, sizeof head, "step %lld", (long long)s->step);
    int k = snprintf(tail, sizeof tail, " %.0f img/s", s->img_per_s);
    if (isfinite(s->train_bpd)) k += snprintf(tail + k, sizeof tail - (size_t)k, "  train %.3f", s->train_bpd);
    if (isfinite(s->test_bpd)) k += snprintf(tail + k, sizeof tail - (size_t)k, "  test %.3f", s->test_bpd);
    k += snprintf(tail + k, sizeof tail - (size_t)k, " bpd");
    if (isfinite(s->eta)) snprintf(tail + k, sizeof tail - (size_t)k, "  ETA %s", rt_format_duration(s->eta, eta, sizeof eta));
    int room = p->width - 1 - (int)strlen(head) - (int)strlen(tail) - 8;
    bar[0] = 0;
    if (isfinite(s->frac) && room >= 10) {
        int w = room > 40 ? 40 : room;
        double fr = s->frac < 0 ? 0 : s->frac > 1 ? 1 : s->frac;
        int fill = (int)(fr * w + 0.5);
        int j = 0;
        bar[j++] = ' ';
        bar[j++] = '[';
        for (int i = 0; i < w; i++) bar[j++] = i < fill ? '#' : '.';
        bar[j++] = ']';
        j += snprintf(bar + j, sizeof bar - (size_t)j, " %3d%%", (int)(fr * 100));
        bar[j] = 0;
    }
    fprintf(p->f, "\r\033[K%s%s%s", head, bar, tail);
    fflush(p->f);
    p->bar_visible = 1;
}

void rt_progress_line(RtProgress *p, const RtStats *s) {
    if (p->quiet || p->bar) return;
    char el[32], eta[32];
    fprintf(p->f, "step %lld  epoch %.2f", (long long)s->step, s->epoch);
    if (isfinite(s->train_bpd)) fprintf(p->f, "  train %.4f bpd", s->train_bpd);
    fprintf(p->f, "  %.1f img/s  lr %.3e  elapsed %s", s->img_per_s, s->lr,
            rt_format_duration(s->wall_time, el, sizeof el));
    if (isfinite(s->eta)) fprintf(p->f, "  ETA %s", rt_format_duration(s->eta, eta, sizeof eta));
    fputc('\n', p->f);
    fflush(p->f);
}

void rt_progress_message(RtProgress *p, const char *fmt, ...) {
    if (p->quiet) return;
    clear_bar(p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->f, fmt, ap);
    va_end(ap);
    fputc('\n', p->f);
    fflush(p->f);
    p->last_draw = -1e30;  /* the next update redraws the bar */
}

void rt_progress_finish(RtProgress *p) {
    if (p->quiet || !p->bar || !p->bar_visible) return;
    fputc('\n', p->f);
    fflush(p->f);
    p->bar_visible = 0;
}

/* ---- metrics.jsonl ---------------------------------------------------------- */

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

int rt_metrics_append(const char *path, const RtStats *s, char *err, size_t errlen) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)s->step);
    add_num(o, "wall_time", s->wall_time);
    add_num(o, "epoch", s->epoch);
    add_num(o, "train_bpd", s->train_bpd);
    add_num(o, "test_bpd", s->test_bpd);
    add_num(o, "lr", s->lr);
    add_num(o, "images_per_s", s->img_per_s);
    cJSON_AddNumberToObject(o, "time", (double)time(NULL));
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    FILE *f = fopen(path, "a");
    int rc = 0;
    if (!f || fprintf(f, "%s\n", txt) < 0 || fflush(f) != 0) {
        snprintf(err, errlen, "cannot append to '%s': %s", path, strerror(errno));
        rc = -1;
    }
    if (f && fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
        rc = -1;
    }
    free(txt);
    return rc;
}

int rt_metrics_truncate(const char *path, int64_t max_step, char *err, size_t errlen) {
    size_t len = 0;
    char *text = rt_read_file(path, &len, err, errlen);
    if (!text) return access(path, F_OK) == 0 ? -1 : 0;
    StrBuf out = {0};
    char *line = text;
    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        if (!nl) break;  /* a torn last line */
        *nl = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(st) && st->valuedouble <= (double)max_step) sb_printf(&out, "%s\n", line);
        cJSON_Delete(o);
        line = nl + 1;
    }
    RtChunk c = {out.s ? out.s : "", out.len};
    int rc = rt_write_atomic(path, &c, 1, err, errlen);
    sb_free(&out);
    free(text);
    return rc;
}
