/*
 * fileio.h — durable file writing for the runtime: a file is written to a
 * temporary name beside its destination, fsynced, renamed over it, and the
 * directory fsynced, so a crash leaves either the old file or the new one.
 */
#ifndef PXC_FILEIO_H
#define PXC_FILEIO_H

#include <stddef.h>

/* A piece of a file to write, for writing several buffers as one file. */
typedef struct RtChunk {
    const void *data;
    size_t len;
} RtChunk;

/* Write the chunks, in order, atomically to `path`. Returns 0, or -1 with a
 * message (what failed and why) in err. */
int rt_write_atomic(const char *path, const RtChunk *chunks, int nchunks, char *err, size_t errlen);
/* Read a whole file into a malloc'd buffer (NUL-terminated for text).
 * Returns NULL with a message in err. */
void *rt_read_file(const char *path, size_t *len, char *err, size_t errlen);
/* mkdir -p; 0 or -1 with a message. */
int rt_mkdirs(const char *path, char *err, size_t errlen);

#endif
