/*
 * data.h — image data sets for training and evaluation: loading a split into
 * memory as 8-bit NHWC pixels with optional labels, converting pixels to the
 * model's float inputs, and a deterministic, resumable shuffled batch order.
 *
 * rt_dataset_load picks the reader from what it finds at `path`:
 *   - a directory of IDX files (MNIST / Fashion-MNIST names):
 *       train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
 *       t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
 *     ('.' instead of the '-' before "idx" is accepted too; a missing labels
 *     file gives an unlabelled split);
 *   - a single IDX image file (the same data for both splits; labels from the
 *     sibling file named with "labels-idx1" for "images-idx3", if present);
 *   - a CIFAR-10 binary directory (or its parent holding
 *     cifar-10-batches-bin/): data_batch_1..5.bin for train, test_batch.bin
 *     for test, 3073-byte records (label, 1024 R, 1024 G, 1024 B), 32x32x3;
 *   - a folder of PNG images (8-bit grayscale or RGB, all one size), flat or
 *     with class subfolders <dir>/<class>/<name>.png (classes sorted by name give
 *     the labels). The test split is <dir>/test/ (laid out like <dir>) if it
 *     exists; otherwise the last 10% (rounded down) of each class's files in
 *     name order, and the train split is the rest.
 * Anything malformed is an error naming the file, what was expected and what
 * was found. Nothing is printed.
 *
 * The default data set is Debian's dataset-fashion-mnist: RT_DEFAULT_DATA.
 */
#ifndef PXC_DATA_H
#define PXC_DATA_H

#include <stddef.h>
#include <stdint.h>

#define RT_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

typedef enum RtDatasetSplit { RT_SPLIT_TRAIN, RT_SPLIT_TEST } RtDatasetSplit;

typedef struct RtDataset {
    int64_t n;               /* images */
    int H, W, C;             /* C = 1 or 3 */
    int classes;             /* 0 if no labels */
    uint8_t *pixels;         /* [n,H,W,C] */
    int32_t *labels;         /* [n] in 0..classes-1, or NULL */
    char **class_names;      /* [classes]: PNG class folders, CIFAR batches.meta.txt; or NULL */
    char *desc;              /* one line: format, files, sizes */
} RtDataset;

/* Load one split. 0, or -1 with a message in err (out is left empty). */
int rt_dataset_load(const char *path, RtDatasetSplit split, RtDataset *out, char *err, size_t errlen);
void rt_dataset_free(RtDataset *ds);

/* x = ((float)v - 127.5f) / 127.5f in float32, for count values. */
void rt_pixels_to_float(const uint8_t *p /*[count]*/, int64_t count, float *x /*[count]*/);

/*
 * Shuffled batches. Each epoch visits a permutation of 0..n-1 that is a pure
 * function of (seed, epoch); batches are consecutive runs of it. A batch
 * never straddles two epochs: when fewer than `batch` indices are left, the
 * rest of the epoch is skipped (a different remainder each epoch) and the
 * next epoch begins. The whole state is (seed, epoch, pos): save those three,
 * and rt_batcher_init + setting epoch and pos resumes the exact sequence.
 * perm is a cache of the current epoch's permutation, rebuilt when needed.
 */
typedef struct RtBatcher {
    uint64_t seed;
    int64_t n;
    int64_t epoch, pos;      /* next batch starts at perm(epoch)[pos] */
    int64_t *perm;           /* [n] cache: permutation of perm_epoch */
    int64_t perm_epoch;      /* -1: no cache */
} RtBatcher;

void rt_batcher_init(RtBatcher *b, uint64_t seed, int64_t n);
void rt_batcher_free(RtBatcher *b);
/* The next batch's indices into indices_out[min(batch, n)]; returns how many
 * (0 if n == 0 or batch <= 0). Advances epoch and pos. */
int64_t rt_batcher_next(RtBatcher *b, int64_t batch, int64_t *indices_out);
/* The permutation of an epoch, perm[n] (Fisher-Yates on a SplitMix64 stream). */
void rt_batcher_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

#endif
