/* fixtures.h - test data: IDX files on disk (plain, gzip, deliberately
 * broken), temporary directories, and a small learnable synthetic digit set.
 *
 * Every function returns 0 on success or -1 on failure (errno-style problems
 * are printed to stderr with the path, since these run only in tests).  Paths
 * written to caller buffers are NUL-terminated; a buffer too small is an error.
 *
 * Typical use in a test that needs real files (e.g. a CLI test):
 *
 *     char dir[FIXTURES_PATH_MAX], img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX];
 *     ck_assert_int_eq(fixtures_tmpdir_make(dir, sizeof dir), 0);
 *     ck_assert_int_eq(fixtures_synth_write(dir, "train", 600, 42, 1,
 *                                           img, lbl, sizeof img), 0);
 *     ... run workerd --images img --labels lbl ...
 *     fixtures_tmpdir_remove(dir);
 *
 * and for an in-memory learning test:
 *
 *     dataset ds;
 *     ck_assert_int_eq(fixtures_synth_dataset(&ds, 2000, 1), 0);
 *     ... train on ds ...
 *     dataset_free(&ds);
 */
#ifndef PSD_TESTS_FIXTURES_H
#define PSD_TESTS_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

#define FIXTURES_PATH_MAX 4096
#define FIXTURES_SIDE 28 /* synthetic digits are 28x28, like MNIST */

/* ------------------------------------------------------------ directories */

/* Create a fresh directory "psd-test-XXXXXX" under $TMPDIR (or /tmp) and
 * write its path to out. */
int fixtures_tmpdir_make(char *out, size_t outlen);

/* Remove dir and everything under it.  Returns 0 or -1. */
int fixtures_tmpdir_remove(const char *dir);

/* out = dir + "/" + name. */
int fixtures_path_join(char *out, size_t outlen, const char *dir, const char *name);

/* ------------------------------------------------------------- encoding */

/* IDX image bytes for pixels (n, rows, cols): header (magic 2051, the three
 * dims, big-endian) then the pixels.  *out is malloc'd, caller frees.  The
 * dims are written as given (not checked), so tests can encode zero or huge
 * ones; pixels may be NULL when n*rows*cols is not what you want written, in
 * which case only the 16-byte header is produced. */
int fixtures_idx_images_encode(const uint8_t *pixels, uint32_t n, uint32_t rows, uint32_t cols,
                               uint8_t **out, size_t *outlen);

/* IDX label bytes: magic 2049, n, labels (or header only if labels is NULL).
 * *out is malloc'd, caller frees. */
int fixtures_idx_labels_encode(const uint8_t *labels, uint32_t n, uint8_t **out, size_t *outlen);

/* Compress buf into one gzip member (with header, CRC and length trailer).
 * *out is malloc'd, caller frees. */
int fixtures_gzip(const uint8_t *buf, size_t len, uint8_t **out, size_t *outlen);

/* ----------------------------------------------------------------- files */

/* Write buf to path (create/truncate), gzip-compressed if gzip != 0. */
int fixtures_file_write(const char *path, const uint8_t *buf, size_t len, int gzip);

/* Read a whole file into a malloc'd buffer (caller frees). */
int fixtures_file_read(const char *path, uint8_t **out, size_t *outlen);

/* Write an IDX image file (n, rows, cols) to path, plain or gzip. */
int fixtures_write_idx_images(const char *path, const uint8_t *pixels, uint32_t n,
                              uint32_t rows, uint32_t cols, int gzip);

/* Write an IDX label file (n) to path, plain or gzip. */
int fixtures_write_idx_labels(const char *path, const uint8_t *labels, uint32_t n, int gzip);

/* Write the pair "<dir>/<stem>-images-idx3-ubyte[.gz]" and
 * "<dir>/<stem>-labels-idx1-ubyte[.gz]" for n 28x28 images, and put their
 * paths into img_path_out / lbl_path_out (each pathlen bytes). */
int fixtures_write_idx_pair(const char *dir, const char *stem, const uint8_t *pixels,
                            const uint8_t *labels, size_t n, int gzip,
                            char *img_path_out, char *lbl_path_out, size_t pathlen);

/* ------------------------------------------------------------ corruption */

/* Cut the file at path to len bytes. */
int fixtures_file_truncate(const char *path, size_t len);

/* Append len bytes to the file at path. */
int fixtures_file_append(const char *path, const uint8_t *bytes, size_t len);

/* Overwrite len bytes at offset (e.g. a wrong magic at offset 0, a bad type
 * byte at offset 2, a dimension at offset 4/8/12).  The file must already
 * extend to offset + len. */
int fixtures_file_patch(const char *path, size_t offset, const uint8_t *bytes, size_t len);

/* Overwrite the big-endian uint32 at offset (magic or a dimension). */
int fixtures_file_patch_be32(const char *path, size_t offset, uint32_t value);

/* --------------------------------------------------------- synthetic data */

/* Fill pixels (n, 28, 28) and labels (n) with n synthetic digits from seed:
 * each class is a seven-segment-style glyph of its digit (0-9), drawn with
 * random shift (+-2 px), size, slant, stroke width and brightness, over a
 * background of sparse noise.  Labels are uniform random in 0..9.  The same
 * (n, seed) always gives the same bytes, and the first k examples of a set
 * of n are the same as those of a set of k.  Difficulty, checked by
 * tests/check_dataset.c: one epoch of SGD on a softmax-linear model over
 * 2000 examples scores about 95% held out (99% after five epochs), nearest
 * centroid about 78%; 8, 0, 6 and 9 differ by one segment, and so do 1 and
 * 7.
 * Returns 0, or -1 if pixels or labels is NULL with n > 0. */
int fixtures_synth_digits(size_t n, uint64_t seed, uint8_t *pixels, uint8_t *labels);

/* fixtures_synth_digits into a new dataset (28x28, MNIST mean/std); the
 * caller frees it with dataset_free(). */
int fixtures_synth_dataset(dataset *ds, size_t n, uint64_t seed);

/* fixtures_synth_digits written as an IDX pair in dir (see
 * fixtures_write_idx_pair for the names), for tests that need files. */
int fixtures_synth_write(const char *dir, const char *stem, size_t n, uint64_t seed, int gzip,
                         char *img_path_out, char *lbl_path_out, size_t pathlen);

#endif
