/*
 * checkpoint.h — training checkpoints: standard safetensors files holding
 * everything needed to continue a run bit for bit, and the run directory's
 * list of them.
 *
 * Tensors, for every parameter P of the model (F32, P's shape):
 *     param/P    the trained weights
 *     ema/P      their Polyak average (used for evaluation and sampling)
 *     adam_m/P   Adam's first moment
 *     adam_v/P   Adam's second moment
 * Metadata (strings, in __metadata__):
 *     format = "pxc-checkpoint", format_version = "1", pxc_version, abi_version
 *     step, seed (the run's seed: parameter init, data order, dropout),
 *     data_seed, data_epoch, data_pos, data_n (the shuffled-batch position
 *     and the training set's size), batch, lr, lr_decay, beta1, beta2, eps,
 *     ema_decay, train_seconds, images_seen,
 *     spec_name, spec_hash (16 hex digits), spec_resolved ("k=v" lines),
 *     checksum: FNV-1a 64 of those metadata values and every tensor's bytes.
 * The random state of a run is a pure function of (seed, step) and the data
 * position, so these fields are the whole state.
 *
 * Files are written atomically (temporary file, fsync, rename, directory
 * fsync); a reader never sees half a checkpoint. Reading validates the file
 * (structure, metadata, checksum, every tensor's name, dtype and shape
 * against the model) and names what is wrong.
 *
 * In a run directory checkpoints are named ckpt-<step, 8 digits>.safetensors.
 */
#ifndef PXC_CHECKPOINT_H
#define PXC_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "optim.h"
#include "pxc_model.h"

#define RT_CKPT_FORMAT "pxc-checkpoint"
#define RT_CKPT_FORMAT_VERSION 1

typedef struct RtCheckpoint {
    /* [nparams] each, in the layout of the parameter table used to read or
     * write. adam_m and adam_v may be NULL when writing (zeros are written). */
    float *params, *ema, *adam_m, *adam_v;
    int64_t step;
    uint64_t seed;
    uint64_t data_seed;
    int64_t data_epoch, data_pos, data_n;
    int batch;
    RtAdamConfig adam;
    double train_seconds;
    int64_t images_seen;
    /* The spec the run was compiled from. Borrowed when writing; owned
     * (freed by rt_ckpt_free) after rt_ckpt_read. */
    char *spec_name;
    char *spec_resolved;
    uint64_t spec_hash;
    char *pxc_version;   /* read only */
    int owned;           /* set by rt_ckpt_read */
} RtCheckpoint;

/* Write ck for the parameters t[0..n) (offsets into ck's buffers) to path.
 * 0, or -1 with a message. */
int rt_ckpt_write(const char *path, const pxc_tensor *t, int n, const RtCheckpoint *ck, char *err,
                  size_t errlen);

/* Read and validate path against the parameter table t[0..n) with nparams
 * floats; allocates ck's four buffers. 0 on success; otherwise a message
 * naming the file and what is wrong, and -1 when the file is unreadable,
 * damaged or not a pxc checkpoint (truncated, checksum mismatch, bad
 * metadata), -2 when it is a sound checkpoint of another spec (a tensor
 * missing, extra or of another shape). */
int rt_ckpt_read(const char *path, const pxc_tensor *t, int n, int64_t nparams, RtCheckpoint *ck, char *err,
                 size_t errlen);
void rt_ckpt_free(RtCheckpoint *ck);

/* "dir/ckpt-00000123.safetensors", malloc'd. */
char *rt_ckpt_path(const char *dir, int64_t step);
/* The steps of the checkpoints in dir, ascending (malloc'd, *n of them; a
 * missing directory has none). Only well-formed names count. 0 or -1. */
int rt_ckpt_list(const char *dir, int64_t **steps, int *n, char *err, size_t errlen);
/* Delete all but the newest `keep` checkpoints in dir. 0 or -1. */
int rt_ckpt_prune(const char *dir, int keep, char *err, size_t errlen);
/* Delete the temporary files a killed writer may have left in dir
 * (ckpt-*.safetensors.tmp.*). Returns how many were removed. */
int rt_ckpt_clean_temps(const char *dir);

#endif
