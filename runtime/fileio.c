/* fileio.c — see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *what, const char *path) {
    snprintf(err, errlen, "%s '%s': %s", what, path, strerror(errno));
    return -1;
}

int rt_write_atomic(const char *path, const RtChunk *chunks, int nchunks, char *err, size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return snprintf(err, errlen, "out of memory"), -1;
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int r = fail(err, errlen, "cannot create", tmp);
        free(tmp);
        return r;
    }
    for (int i = 0; i < nchunks; i++) {
        const char *p = chunks[i].data;
        size_t left = chunks[i].len;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                fail(err, errlen, "cannot write", tmp);
                close(fd);
                unlink(tmp);
                free(tmp);
                return -1;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fail(err, errlen, "cannot sync", tmp);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fail(err, errlen, "cannot rename into place", path);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    char *dcopy = strdup(path);
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
    free(dcopy);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

void *rt_read_file(const char *path, size_t *len, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a regular file", path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, "cannot open", path), NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fail(err, errlen, "cannot seek", path);
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0) {
        fail(err, errlen, "cannot read", path);
        fclose(f);
        return NULL;
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory reading '%s'", path);
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fail(err, errlen, "cannot read", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

int rt_mkdirs(const char *path, char *err, size_t errlen) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return fail(err, errlen, "cannot create directory", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return fail(err, errlen, "cannot create directory", buf);
    return 0;
}
