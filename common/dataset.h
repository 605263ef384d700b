/* dataset.h - a labelled image set in memory, normalised on the way out.
 *
 * Pixels stay uint8 (a quarter of the memory of floats); dataset_gather()
 * normalises ((p/255 - mean) / std) while copying a minibatch out.
 */
#ifndef PSD_DATASET_H
#define PSD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_MNIST_MEAN 0.1307f
#define DATASET_MNIST_STD 0.3081f
#define DATASET_NUM_CLASSES 10

typedef struct dataset {
    size_t n;           /* number of examples */
    int rows, cols;     /* image size, e.g. 28 x 28 */
    uint8_t *pixels;    /* (n, rows, cols), owned */
    uint8_t *labels;    /* (n), each < DATASET_NUM_CLASSES, owned */
    float lut[256];     /* normalised value of each pixel byte */
} dataset;

/* Load images and labels (plain or .gz) and check that they belong together:
 * same count, every label < 10.  mean/std set the normalisation.
 * Returns 0, or -1 with a message naming the file and the problem. */
int dataset_load(dataset *ds, const char *images_path, const char *labels_path,
                 float mean, float std, char *err, size_t errlen);

/* Build a dataset from memory (copies); for tests.  Returns 0 or -1. */
int dataset_from_memory(dataset *ds, const uint8_t *pixels, const uint8_t *labels,
                        size_t n, int rows, int cols, float mean, float std,
                        char *err, size_t errlen);

void dataset_free(dataset *ds);

/* Worker `part` of `nparts` gets examples [*lo, *hi) of n: contiguous, sizes
 * differ by at most one, together they cover 0..n exactly once.
 * Returns 0, or -1 if part/nparts are out of range (part < 0, part >= nparts,
 * nparts < 1 or nparts > n). */
int dataset_partition(size_t n, int part, int nparts, size_t *lo, size_t *hi);

/* Fill order[0..count) with lo..lo+count-1 shuffled deterministically from
 * (seed, epoch): the same arguments always give the same order, and
 * different epochs give different orders (Fisher-Yates, xoshiro256**). */
void dataset_shuffle(uint32_t *order, size_t count, size_t lo, uint64_t seed, uint64_t epoch);

/* Copy examples idx[0..count) out: x (count, rows*cols) normalised floats,
 * y (count) labels.  Indices must be < ds->n. */
void dataset_gather(const dataset *ds, const uint32_t *idx, size_t count,
                    float *x, uint8_t *y);

/* The shift (dx, dy), each in [-max_shift, max_shift], that augmentation
 * gives example `index` in epoch `epoch`: a function of (seed, epoch, index)
 * only, so it does not depend on how the data is batched or partitioned. */
void dataset_shift_pick(uint64_t seed, uint64_t epoch, uint32_t index, int max_shift,
                        int *dx, int *dy);

/* Translate one gathered image x (rows, cols) in place by (dx, dy) pixels
 * (positive: right, down), filling the uncovered border with the
 * normalised value of a black pixel. */
void dataset_shift_image(const dataset *ds, float *x, int dx, int dy);

/* Random-shift augmentation of a gathered minibatch: x (count, rows*cols)
 * holds examples idx[0..count); each is shifted by dataset_shift_pick().
 * max_shift 0 leaves x unchanged. */
void dataset_augment_shift(const dataset *ds, float *x, const uint32_t *idx, size_t count,
                           int max_shift, uint64_t seed, uint64_t epoch);

#endif
