/*
 * safetensors.h — reading and writing standard safetensors files, the format
 * of pxc's weights, checkpoints and the reference vectors.
 *
 * Layout: 8 bytes little-endian unsigned header length L, L bytes of UTF-8
 * JSON, then the data. The JSON maps each tensor name to {"dtype", "shape",
 * "data_offsets": [begin, end]} (byte offsets relative to the start of the
 * data, C-contiguous, little-endian) and may hold "__metadata__", a
 * string → string map. pxc pads the JSON with spaces so the data starts at a
 * multiple of 8 and packs tensors back to back in the order given.
 *
 * Header order is kept: tensor i is the i-th key of the JSON (files written
 * by PyTorch tools in creation order stay in that order). The reader checks
 * everything before handing out a pointer: header length within the file,
 * JSON syntax, dtypes, shape × dtype size == offset span, offsets inside the
 * data, no overlaps, no gaps and no trailing bytes.
 *
 * This is not a lazy or memory-mapped reader: rt_st_open reads the whole file.
 * Host byte order is assumed little-endian (x86-64, aarch64).
 */
#ifndef PXC_SAFETENSORS_H
#define PXC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define RT_ST_MAX_RANK 8

typedef enum RtStDtype {
    RT_ST_BOOL, RT_ST_U8, RT_ST_I8, RT_ST_F8_E4M3, RT_ST_F8_E5M2,
    RT_ST_I16, RT_ST_U16, RT_ST_F16, RT_ST_BF16,
    RT_ST_I32, RT_ST_U32, RT_ST_F32,
    RT_ST_I64, RT_ST_U64, RT_ST_F64,
    RT_ST_NDTYPES
} RtStDtype;

/* One tensor. For reading, every field is filled and `data` points into the
 * open file's buffer (aligned to the element size). For writing, `nbytes` is
 * ignored: the size is shape × dtype size. */
typedef struct RtStTensor {
    const char *name;
    RtStDtype dtype;
    int rank;                         /* 0 for a scalar */
    int64_t shape[RT_ST_MAX_RANK];
    const void *data;                 /* [shape...] of dtype */
    size_t nbytes;
} RtStTensor;

typedef struct RtSafetensors RtSafetensors;

/* "F32", "I32", ... and back; -1 for an unknown name. */
const char *rt_st_dtype_name(RtStDtype dt);
int rt_st_dtype_from_name(const char *s);
size_t rt_st_dtype_size(RtStDtype dt);
/* Elements in a tensor (1 for a scalar). */
int64_t rt_st_numel(const RtStTensor *t);

/* Read and validate a whole file. NULL with a message naming the file and
 * the problem in err (for a file pxc wrote, the message says to regenerate). */
RtSafetensors *rt_st_open(const char *path, char *err, size_t errlen);
void rt_st_close(RtSafetensors *st);

int rt_st_count(const RtSafetensors *st);
const RtStTensor *rt_st_tensor(const RtSafetensors *st, int i);   /* header order */
const char *rt_st_name(const RtSafetensors *st, int i);
const RtStTensor *rt_st_find(const RtSafetensors *st, const char *name);   /* NULL if absent */
/* The __metadata__ value of key, or NULL. Entries are also listed in order. */
const char *rt_st_metadata(const RtSafetensors *st, const char *key);
int rt_st_metadata_count(const RtSafetensors *st);
void rt_st_metadata_at(const RtSafetensors *st, int i, const char **key, const char **value);

/* Write n tensors (in this order, packed back to back) and nmeta metadata
 * pairs meta_kv[2i] → meta_kv[2i+1] atomically to path (rt_write_atomic).
 * "writer" = "pxc <version>" is added to the metadata unless given. Tensor
 * data may point anywhere, e.g. into one flat parameter buffer.
 * Returns 0, or -1 with a message. */
int rt_st_write(const char *path, const RtStTensor *tensors, int n, const char *const *meta_kv, int nmeta,
                char *err, size_t errlen);

#endif
