/*
 * testutil.h — helpers shared by the test programs: locating the reference
 * vectors, reading raw arrays, and comparing tensors with a report of the
 * worst element. Tests use cmocka for their assertions.
 */
#ifndef PXC_TESTUTIL_H
#define PXC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* $PXC_REFERENCE_DIR, or ../shared/reference beside the source tree. */
const char *tu_reference_dir(void);
/* $PXC_SOURCE_DIR or the compiled-in source directory. */
const char *tu_source_dir(void);
/* Read a whole file; NULL if missing. *n receives the byte count. */
void *tu_read_file(const char *path, size_t *n);
/* Read a file of exactly `count` float32 values (fails the test otherwise). */
float *tu_read_f32(const char *path, size_t count);
/* max |a-b| / max(|b|, floor) over the arrays; *worst receives the index. */
double tu_max_rel_to_max(const float *a, const float *b, size_t n, size_t *worst);
/* A fresh directory /tmp/<prefix>XXXXXX, its path in buf; 0 or -1. */
int tu_mkdtemp(char *buf, size_t n, const char *prefix);
/* Remove a directory and everything below it; 0 or -1. */
int tu_rmtree(const char *dir);
/* The path join of dir and name (static buffer rotation of 8). */
const char *tu_path(const char *dir, const char *name);

#endif
