/* idx.h - reader for MNIST-style IDX files, plain or gzip-compressed.
 *
 * Images: magic 2051, dims n x rows x cols, uint8 pixels.
 * Labels: magic 2049, dim n, uint8 labels.
 * The reader trusts nothing: it checks the magic, the dimensions, and that the
 * file holds exactly the bytes its header promises, and reports every failure
 * as a message naming the file and the problem.
 */
#ifndef PSD_IDX_H
#define PSD_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_MAGIC_IMAGES 2051u
#define IDX_MAGIC_LABELS 2049u
/* Upper bounds that keep a hostile header from asking for absurd memory. */
#define IDX_MAX_ITEMS 100000000u
#define IDX_MAX_SIDE 4096u

typedef struct idx_images {
    uint32_t n, rows, cols;
    uint8_t *pixels; /* (n, rows, cols), owned */
} idx_images;

typedef struct idx_labels {
    uint32_t n;
    uint8_t *labels; /* (n), owned */
} idx_labels;

/* Load an image file.  Returns 0, or -1 with "<path>: <problem>" in err.
 * On failure *out is left empty (nothing to free). */
int idx_images_load(const char *path, idx_images *out, char *err, size_t errlen);
void idx_images_free(idx_images *im);

/* Load a label file.  Returns 0, or -1 with "<path>: <problem>" in err. */
int idx_labels_load(const char *path, idx_labels *out, char *err, size_t errlen);
void idx_labels_free(idx_labels *lb);

/* Parse an IDX file already in memory (decompressed), for tests and fuzzers.
 * name is used in messages.  Same return convention as the loaders. */
int idx_images_parse(const uint8_t *buf, size_t len, const char *name,
                     idx_images *out, char *err, size_t errlen);
int idx_labels_parse(const uint8_t *buf, size_t len, const char *name,
                     idx_labels *out, char *err, size_t errlen);

#endif
