/* dataset.c - a labelled image set in memory: loading, partitioning across
 * workers, per-epoch shuffles and normalised minibatch gathers.
 */
#include "dataset.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx.h"
#include "rng.h"

__attribute__((format(printf, 3, 4)))
static void dataset_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Checks mean/std and fills the lookup table.  name goes in the message. */
static int dataset_lut_init(dataset *ds, float mean, float std, const char *name,
                            char *err, size_t errlen)
{
    if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f)) {
        dataset_err(err, errlen, "%s: normalisation mean %g / std %g: std must be finite and > 0",
                    name, (double)mean, (double)std);
        return -1;
    }
    for (int p = 0; p < 256; p++)
        ds->lut[p] = ((float)p / 255.0f - mean) / std;
    return 0;
}

/* First label >= DATASET_NUM_CLASSES, or n if all are valid. */
static size_t dataset_bad_label(const uint8_t *labels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (labels[i] >= DATASET_NUM_CLASSES)
            return i;
    return n;
}

/* Load and cross-check an image file and a label file; see dataset.h.
 * On success ds owns its buffers (dataset_free); on failure ds is zeroed. */
int dataset_load(dataset *ds, const char *images_path, const char *labels_path,
                 float mean, float std, char *err, size_t errlen)
{
    idx_images im;
    idx_labels lb;

    memset(ds, 0, sizeof *ds);
    if (dataset_lut_init(ds, mean, std, images_path, err, errlen) < 0)
        return -1;
    if (idx_images_load(images_path, &im, err, errlen) < 0)
        goto fail;
    if (idx_labels_load(labels_path, &lb, err, errlen) < 0) {
        idx_images_free(&im);
        goto fail;
    }
    if (im.n != lb.n) {
        dataset_err(err, errlen, "%s: %u images but %s has %u labels", images_path,
                    (unsigned)im.n, labels_path, (unsigned)lb.n);
        goto fail_both;
    }
    size_t bad = dataset_bad_label(lb.labels, lb.n);
    if (bad < lb.n) {
        dataset_err(err, errlen, "%s: label %u at index %zu is not a class 0-%d", labels_path,
                    (unsigned)lb.labels[bad], bad, DATASET_NUM_CLASSES - 1);
        goto fail_both;
    }
    ds->n = im.n;
    ds->rows = (int)im.rows; /* <= IDX_MAX_SIDE */
    ds->cols = (int)im.cols;
    ds->pixels = im.pixels;  /* ownership moves to ds */
    ds->labels = lb.labels;
    return 0;

fail_both:
    idx_images_free(&im);
    idx_labels_free(&lb);
fail:
    memset(ds, 0, sizeof *ds);
    return -1;
}

/* Copy pixels (n, rows, cols) and labels (n) into a new dataset; see
 * dataset.h.  Messages name the source "<memory>".  On failure ds is zeroed. */
int dataset_from_memory(dataset *ds, const uint8_t *pixels, const uint8_t *labels,
                        size_t n, int rows, int cols, float mean, float std,
                        char *err, size_t errlen)
{
    static const char name[] = "<memory>";

    memset(ds, 0, sizeof *ds);
    if (!pixels || !labels || n == 0) {
        dataset_err(err, errlen, "%s: no examples", name);
        return -1;
    }
    if (rows < 1 || cols < 1 || rows > (int)IDX_MAX_SIDE || cols > (int)IDX_MAX_SIDE) {
        dataset_err(err, errlen, "%s: image size %dx%d is not within 1x1..%ux%u", name, rows,
                    cols, (unsigned)IDX_MAX_SIDE, (unsigned)IDX_MAX_SIDE);
        return -1;
    }
    if (n > IDX_MAX_ITEMS) {
        dataset_err(err, errlen, "%s: %zu examples, more than the limit of %u", name, n,
                    (unsigned)IDX_MAX_ITEMS);
        return -1;
    }
    size_t per = (size_t)rows * (size_t)cols;
    if (n > SIZE_MAX / per) {
        dataset_err(err, errlen, "%s: %zu images of %dx%d are too large for this machine",
                    name, n, rows, cols);
        return -1;
    }
    size_t bad = dataset_bad_label(labels, n);
    if (bad < n) {
        dataset_err(err, errlen, "%s: label %u at index %zu is not a class 0-%d", name,
                    (unsigned)labels[bad], bad, DATASET_NUM_CLASSES - 1);
        return -1;
    }
    if (dataset_lut_init(ds, mean, std, name, err, errlen) < 0)
        return -1;
    ds->pixels = malloc(n * per);
    ds->labels = malloc(n);
    if (!ds->pixels || !ds->labels) {
        dataset_free(ds);
        dataset_err(err, errlen, "%s: out of memory for %zu examples", name, n);
        return -1;
    }
    memcpy(ds->pixels, pixels, n * per);
    memcpy(ds->labels, labels, n);
    ds->n = n;
    ds->rows = rows;
    ds->cols = cols;
    return 0;
}

/* Free the buffers and zero *ds; safe on a zeroed struct or NULL. */
void dataset_free(dataset *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* The contiguous share [*lo, *hi) of worker part; see dataset.h.  The first
 * n % nparts workers get one extra example.  On failure *lo = *hi = 0. */
int dataset_partition(size_t n, int part, int nparts, size_t *lo, size_t *hi)
{
    if (!lo || !hi)
        return -1;
    *lo = *hi = 0;
    if (nparts < 1 || part < 0 || part >= nparts || (size_t)nparts > n)
        return -1;
    size_t np = (size_t)nparts, p = (size_t)part;
    size_t base = n / np, rem = n % np;
    *lo = p * base + (p < rem ? p : rem); /* <= n: no overflow */
    *hi = *lo + base + (p < rem ? 1 : 0);
    return 0;
}

/* Fisher-Yates shuffle of lo..lo+count-1 into order; see dataset.h.  The
 * generator is seeded from both seed and epoch through splitmix64, so
 * neighbouring seeds or epochs give unrelated orders.  lo + count must not
 * exceed 2^32 (datasets hold at most IDX_MAX_ITEMS examples). */
void dataset_shuffle(uint32_t *order, size_t count, size_t lo, uint64_t seed, uint64_t epoch)
{
    if (!order || count == 0)
        return;
    for (size_t i = 0; i < count; i++)
        order[i] = (uint32_t)(lo + i);
    rng r;
    rng_seed(&r, rng_splitmix64(seed) ^ rng_splitmix64(epoch ^ 0x5eed5eed5eed5eedULL) * 3);
    for (size_t i = count - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(&r, (uint64_t)i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Copy examples idx[0..count) out through the lut; see dataset.h.  x or y
 * may be NULL to skip that output. */
void dataset_gather(const dataset *ds, const uint32_t *idx, size_t count,
                    float *x, uint8_t *y)
{
    size_t per = (size_t)ds->rows * (size_t)ds->cols;
    for (size_t k = 0; k < count; k++) {
        size_t e = idx[k];
        if (x) {
            const uint8_t *src = ds->pixels + e * per;
            float *dst = x + k * per;
            for (size_t p = 0; p < per; p++)
                dst[p] = ds->lut[src[p]];
        }
        if (y)
            y[k] = ds->labels[e];
    }
}

void dataset_shift_pick(uint64_t seed, uint64_t epoch, uint32_t index, int max_shift,
                        int *dx, int *dy)
{
    uint64_t span = 2 * (uint64_t)max_shift + 1;
    uint64_t r = rng_splitmix64(rng_splitmix64(seed ^ 0x5348494654ULL) + epoch);
    r = rng_splitmix64(r ^ ((uint64_t)index * 0x9e3779b97f4a7c15ULL));
    *dx = (int)((r & 0xffffffffu) % span) - max_shift;
    *dy = (int)((r >> 32) % span) - max_shift;
}

void dataset_shift_image(const dataset *ds, float *x, int dx, int dy)
{
    int h = ds->rows, w = ds->cols;
    float bg = ds->lut[0];
    if (dx == 0 && dy == 0)
        return;
    /* move rows in the order that never overwrites a source not yet read */
    int y0 = dy > 0 ? h - 1 : 0, y1 = dy > 0 ? -1 : h, ystep = dy > 0 ? -1 : 1;
    for (int y = y0; y != y1; y += ystep) {
        float *dst = x + (size_t)y * w;
        int sy = y - dy;
        if (sy < 0 || sy >= h) {
            for (int i = 0; i < w; i++)
                dst[i] = bg;
            continue;
        }
        const float *src = x + (size_t)sy * w;
        /* memmove handles the overlap when dy == 0 */
        if (dx >= 0) {
            int n = dx < w ? w - dx : 0;
            memmove(dst + (w - n), src, (size_t)n * sizeof(float));
            for (int i = 0; i < w - n; i++)
                dst[i] = bg;
        } else {
            int n = -dx < w ? w + dx : 0;
            memmove(dst, src + (w - n), (size_t)n * sizeof(float));
            for (int i = n; i < w; i++)
                dst[i] = bg;
        }
    }
}

void dataset_augment_shift(const dataset *ds, float *x, const uint32_t *idx, size_t count,
                           int max_shift, uint64_t seed, uint64_t epoch)
{
    if (max_shift <= 0)
        return;
    size_t per = (size_t)ds->rows * (size_t)ds->cols;
    for (size_t k = 0; k < count; k++) {
        int dx, dy;
        dataset_shift_pick(seed, epoch, idx[k], max_shift, &dx, &dy);
        dataset_shift_image(ds, x + k * per, dx, dy);
    }
}
