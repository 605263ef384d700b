/* check_dataset.c - datasets: loading a pair of IDX files and checking they
 * belong together, copies from memory, worker partitions, per-epoch shuffles,
 * normalised gathers, the synthetic digit fixtures, and (when the Debian
 * package is installed) the real Fashion-MNIST files.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "fixtures.h"

#define SIDE FIXTURES_SIDE
#define PER (SIDE * SIDE)

static char tdir[FIXTURES_PATH_MAX];

static void setup(void)
{
    ck_assert_int_eq(fixtures_tmpdir_make(tdir, sizeof tdir), 0);
}

static void teardown(void)
{
    fixtures_tmpdir_remove(tdir);
}

static void synth(size_t n, uint64_t seed, uint8_t **px, uint8_t **lb)
{
    *px = malloc(n * PER);
    *lb = malloc(n);
    ck_assert_ptr_nonnull(*px);
    ck_assert_ptr_nonnull(*lb);
    ck_assert_int_eq(fixtures_synth_digits(n, seed, *px, *lb), 0);
}

static int ds_is_zero(const dataset *ds)
{
    static const dataset zero;
    return memcmp(ds, &zero, sizeof zero) == 0;
}

/* ---------------------------------------------------------------- loading */

START_TEST(test_load_pair)
{
    const size_t n = 57;
    uint8_t *px, *lb;
    synth(n, 7, &px, &lb);
    for (int gz = 0; gz < 2; gz++) {
        char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], err[512] = "";
        ck_assert_int_eq(fixtures_write_idx_pair(tdir, gz ? "gz" : "plain", px, lb, n, gz, img, lbl,
                                                 sizeof img), 0);
        ck_assert_int_eq(strcmp(img + strlen(img) - (gz ? 3 : 5), gz ? ".gz" : "ubyte"), 0);
        dataset ds;
        ck_assert_msg(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                                   sizeof err) == 0, "%s", err);
        ck_assert_uint_eq(ds.n, n);
        ck_assert_int_eq(ds.rows, SIDE);
        ck_assert_int_eq(ds.cols, SIDE);
        ck_assert_mem_eq(ds.pixels, px, n * PER);
        ck_assert_mem_eq(ds.labels, lb, n);
        ck_assert_float_eq_tol(ds.lut[0], -0.1307f / 0.3081f, 1e-6f);
        dataset_free(&ds);
        ck_assert(ds_is_zero(&ds));
    }
    free(px);
    free(lb);
}
END_TEST

START_TEST(test_load_synth_write)
{
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], err[512] = "";
    ck_assert_int_eq(fixtures_synth_write(tdir, "train", 100, 3, 1, img, lbl, sizeof img), 0);
    dataset ds, mem;
    ck_assert_msg(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                               sizeof err) == 0, "%s", err);
    ck_assert_int_eq(fixtures_synth_dataset(&mem, 100, 3), 0);
    ck_assert_uint_eq(ds.n, mem.n);
    ck_assert_mem_eq(ds.pixels, mem.pixels, 100 * PER);
    ck_assert_mem_eq(ds.labels, mem.labels, 100);
    ck_assert_mem_eq(ds.lut, mem.lut, sizeof ds.lut);
    dataset_free(&ds);
    dataset_free(&mem);
}
END_TEST

START_TEST(test_load_count_mismatch)
{
    uint8_t *px, *lb;
    synth(9, 1, &px, &lb);
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], err[2 * FIXTURES_PATH_MAX];
    char want[2 * FIXTURES_PATH_MAX + 64];
    ck_assert_int_eq(fixtures_write_idx_pair(tdir, "m", px, lb, 9, 0, img, lbl, sizeof img), 0);
    ck_assert_int_eq(fixtures_write_idx_labels(lbl, lb, 8, 0), 0);
    dataset ds;
    memset(&ds, 0x5A, sizeof ds);
    ck_assert_int_eq(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                                  sizeof err), -1);
    snprintf(want, sizeof want, "%s: 9 images but %s has 8 labels", img, lbl);
    ck_assert_str_eq(err, want);
    ck_assert(ds_is_zero(&ds));
    free(px);
    free(lb);
}
END_TEST

START_TEST(test_load_bad_label)
{
    uint8_t *px, *lb;
    synth(9, 1, &px, &lb);
    lb[5] = 12;
    lb[7] = 200;
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], err[2 * FIXTURES_PATH_MAX];
    char want[2 * FIXTURES_PATH_MAX + 64];
    ck_assert_int_eq(fixtures_write_idx_pair(tdir, "b", px, lb, 9, 1, img, lbl, sizeof img), 0);
    dataset ds;
    ck_assert_int_eq(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                                  sizeof err), -1);
    snprintf(want, sizeof want, "%s: label 12 at index 5 is not a class 0-9", lbl);
    ck_assert_str_eq(err, want);
    ck_assert(ds_is_zero(&ds));
    /* 10 is the first bad value. */
    lb[5] = 3;
    lb[7] = 10;
    ck_assert_int_eq(fixtures_write_idx_labels(lbl, lb, 9, 0), 0);
    ck_assert_int_eq(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                                  sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "label 10 at index 7"));
    free(px);
    free(lb);
}
END_TEST

/* A failure in either file is reported with that file's name. */
START_TEST(test_load_errors_name_the_file)
{
    uint8_t *px, *lb;
    synth(4, 1, &px, &lb);
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], err[2 * FIXTURES_PATH_MAX];
    char missing[FIXTURES_PATH_MAX];
    ck_assert_int_eq(fixtures_write_idx_pair(tdir, "e", px, lb, 4, 0, img, lbl, sizeof img), 0);
    ck_assert_int_eq(fixtures_path_join(missing, sizeof missing, tdir, "missing"), 0);
    dataset ds;
    ck_assert_int_eq(dataset_load(&ds, missing, lbl, 0.1f, 0.3f, err, sizeof err), -1);
    ck_assert_int_eq(strncmp(err, missing, strlen(missing)), 0);
    ck_assert_int_eq(dataset_load(&ds, img, missing, 0.1f, 0.3f, err, sizeof err), -1);
    ck_assert_int_eq(strncmp(err, missing, strlen(missing)), 0);
    /* Images and labels swapped. */
    ck_assert_int_eq(dataset_load(&ds, lbl, img, 0.1f, 0.3f, err, sizeof err), -1);
    ck_assert_int_eq(strncmp(err, lbl, strlen(lbl)), 0);
    ck_assert_ptr_nonnull(strstr(err, "label file"));
    /* Truncated labels. */
    ck_assert_int_eq(fixtures_file_truncate(lbl, 10), 0);
    ck_assert_int_eq(dataset_load(&ds, img, lbl, 0.1f, 0.3f, err, sizeof err), -1);
    ck_assert_int_eq(strncmp(err, lbl, strlen(lbl)), 0);
    ck_assert_ptr_nonnull(strstr(err, "truncated: header promises 4 bytes of labels, file has 2"));
    /* Bad normalisation. */
    ck_assert_int_eq(fixtures_write_idx_pair(tdir, "e", px, lb, 4, 0, img, lbl, sizeof img), 0);
    ck_assert_int_eq(dataset_load(&ds, img, lbl, 0.1f, 0.0f, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "std"));
    ck_assert_int_eq(dataset_load(&ds, img, lbl, NAN, 1.0f, err, sizeof err), -1);
    ck_assert_int_eq(dataset_load(&ds, img, lbl, 0.1f, -1.0f, err, sizeof err), -1);
    ck_assert(ds_is_zero(&ds));
    ck_assert_int_eq(dataset_load(&ds, img, lbl, 0.1f, 0.3f, err, sizeof err), 0);
    dataset_free(&ds);
    dataset_free(NULL);
    free(px);
    free(lb);
}
END_TEST

START_TEST(test_from_memory)
{
    uint8_t px[3 * 2 * 2] = {0, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    uint8_t lb[3] = {0, 9, 4};
    char err[256];
    dataset ds;
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, 2, 0.0f, 1.0f, err, sizeof err), 0);
    px[0] = 77;
    lb[0] = 7;
    ck_assert_uint_eq(ds.n, 3);
    ck_assert_int_eq(ds.rows, 2);
    ck_assert_int_eq(ds.cols, 2);
    ck_assert_uint_eq(ds.pixels[0], 0); /* copied, not aliased */
    ck_assert_uint_eq(ds.labels[0], 0);
    ck_assert_uint_eq(ds.labels[1], 9);
    dataset_free(&ds);

    lb[2] = 11;
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, 2, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_str_eq(err, "<memory>: label 11 at index 2 is not a class 0-9");
    ck_assert(ds_is_zero(&ds));
    lb[2] = 1;
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 0, 2, 2, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_int_eq(dataset_from_memory(&ds, NULL, lb, 3, 2, 2, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 0, 2, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, -1, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 5000, 2, 0.0f, 1.0f, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "5000x2"));
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, 2, 0.0f, 0.0f, err, sizeof err), -1);
    ck_assert(ds_is_zero(&ds));
}
END_TEST

/* ------------------------------------------------------------- partition */

/* Plain ifs in the hot loops: each ck_assert costs a message to the runner. */
static void check_partition(size_t n, int nparts)
{
    size_t prev_hi = 0, min = SIZE_MAX, max = 0;
    for (int p = 0; p < nparts; p++) {
        size_t lo = 77, hi = 77;
        if (dataset_partition(n, p, nparts, &lo, &hi) != 0)
            ck_abort_msg("n=%zu part %d/%d rejected", n, p, nparts);
        if (lo != prev_hi)
            ck_abort_msg("n=%zu part %d/%d starts at %zu, expected %zu", n, p, nparts, lo, prev_hi);
        if (hi <= lo)
            ck_abort_msg("n=%zu part %d/%d is empty", n, p, nparts);
        if (hi - lo < min)
            min = hi - lo;
        if (hi - lo > max)
            max = hi - lo;
        prev_hi = hi;
    }
    if (prev_hi != n)
        ck_abort_msg("n=%zu nparts=%d covers %zu", n, nparts, prev_hi);
    if (max - min > 1)
        ck_abort_msg("n=%zu nparts=%d sizes %zu..%zu", n, nparts, min, max);
}

START_TEST(test_partition_covers_once)
{
    for (size_t n = 1; n <= 300; n++)
        for (int np = 1; np <= 64 && (size_t)np <= n; np++)
            check_partition(n, np);
    check_partition(60000, 7);
    check_partition(60000, 60000);
    check_partition(10000, 3);
    /* No overflow near the top of size_t. */
    check_partition(SIZE_MAX, 3);
    check_partition(SIZE_MAX - 1, 1000);
    size_t lo, hi;
    ck_assert_int_eq(dataset_partition(10, 0, 3, &lo, &hi), 0);
    ck_assert_uint_eq(lo, 0);
    ck_assert_uint_eq(hi, 4);
    ck_assert_int_eq(dataset_partition(10, 2, 3, &lo, &hi), 0);
    ck_assert_uint_eq(lo, 7);
    ck_assert_uint_eq(hi, 10);
}
END_TEST

START_TEST(test_partition_bad_args)
{
    size_t lo = 5, hi = 5;
    ck_assert_int_eq(dataset_partition(10, -1, 3, &lo, &hi), -1);
    ck_assert_uint_eq(lo, 0);
    ck_assert_uint_eq(hi, 0);
    ck_assert_int_eq(dataset_partition(10, 3, 3, &lo, &hi), -1);
    ck_assert_int_eq(dataset_partition(10, 0, 0, &lo, &hi), -1);
    ck_assert_int_eq(dataset_partition(10, 0, -2, &lo, &hi), -1);
    ck_assert_int_eq(dataset_partition(10, 0, 11, &lo, &hi), -1);
    ck_assert_int_eq(dataset_partition(0, 0, 1, &lo, &hi), -1);
    ck_assert_int_eq(dataset_partition(10, 0, 1, NULL, &hi), -1);
    ck_assert_int_eq(dataset_partition(10, 0, 1, &lo, NULL), -1);
    ck_assert_int_eq(dataset_partition(10, 9, 10, &lo, &hi), 0);
    ck_assert_uint_eq(lo, 9);
    ck_assert_uint_eq(hi, 10);
}
END_TEST

/* --------------------------------------------------------------- shuffle */

static void check_permutation(const uint32_t *order, size_t count, size_t lo)
{
    uint8_t *seen = calloc(count, 1);
    ck_assert_ptr_nonnull(seen);
    for (size_t i = 0; i < count; i++) {
        if (order[i] < lo || order[i] >= lo + count)
            ck_abort_msg("order[%zu]=%u outside [%zu,%zu)", i, order[i], lo, lo + count);
        if (seen[order[i] - lo])
            ck_abort_msg("%u appears twice", order[i]);
        seen[order[i] - lo] = 1;
    }
    free(seen);
}

START_TEST(test_shuffle_permutation)
{
    static const size_t counts[] = {1, 2, 3, 10, 1000, 60000};
    static const size_t los[] = {0, 1, 12345};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        uint32_t *o = malloc(counts[c] * sizeof *o);
        for (size_t l = 0; l < sizeof los / sizeof los[0]; l++) {
            for (uint64_t e = 0; e < 3; e++) {
                dataset_shuffle(o, counts[c], los[l], 42, e);
                check_permutation(o, counts[c], los[l]);
            }
        }
        free(o);
    }
    dataset_shuffle(NULL, 0, 0, 1, 1); /* nothing to do */
}
END_TEST

START_TEST(test_shuffle_deterministic_and_varied)
{
    enum { N = 1000 };
    uint32_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    dataset_shuffle(a, N, 100, 42, 3);
    dataset_shuffle(b, N, 100, 42, 3);
    ck_assert_mem_eq(a, b, N * sizeof *a);
    /* Not the identity. */
    size_t fixed = 0;
    for (size_t i = 0; i < N; i++)
        fixed += a[i] == 100 + i;
    ck_assert_uint_lt(fixed, 10);
    /* Other epochs and other seeds give other orders, and the shift of lo
     * alone does not change the order. */
    for (uint64_t e = 0; e < 20; e++) {
        if (e == 3)
            continue;
        dataset_shuffle(b, N, 100, 42, e);
        ck_assert_msg(memcmp(a, b, N * sizeof *a) != 0, "epoch %llu repeats epoch 3",
                      (unsigned long long)e);
    }
    for (uint64_t s = 0; s < 20; s++) {
        if (s == 42)
            continue;
        dataset_shuffle(b, N, 100, s, 3);
        ck_assert_msg(memcmp(a, b, N * sizeof *a) != 0, "seed %llu repeats seed 42",
                      (unsigned long long)s);
    }
    /* (seed, epoch) is not just seed + epoch or seed ^ epoch. */
    dataset_shuffle(b, N, 100, 43, 2);
    ck_assert(memcmp(a, b, N * sizeof *a) != 0);
    dataset_shuffle(b, N, 100, 3, 42);
    ck_assert(memcmp(a, b, N * sizeof *a) != 0);
    dataset_shuffle(b, N, 0, 42, 3);
    for (size_t i = 0; i < N; i++)
        ck_assert_uint_eq(b[i] + 100, a[i]);
    free(a);
    free(b);
}
END_TEST

/* Every value lands in every position about equally often (a biased
 * Fisher-Yates, e.g. j drawn from [0, i) or [0, n), fails this). */
START_TEST(test_shuffle_uniform)
{
    enum { N = 5, TRIALS = 20000 };
    unsigned hits[N][N] = {{0}};
    uint32_t o[N];
    for (uint64_t e = 0; e < TRIALS; e++) {
        dataset_shuffle(o, N, 0, 7, e);
        for (int i = 0; i < N; i++)
            hits[i][o[i]]++;
    }
    /* Expected 4000 each; sd about 57. */
    for (int i = 0; i < N; i++)
        for (int v = 0; v < N; v++)
            ck_assert_msg(hits[i][v] > 3700 && hits[i][v] < 4300, "position %d value %d: %u", i,
                          v, hits[i][v]);
}
END_TEST

/* ---------------------------------------------------------------- gather */

START_TEST(test_gather_normalises)
{
    uint8_t px[3 * 2 * 2] = {0, 255, 128, 1, 10, 20, 30, 40, 50, 60, 70, 80};
    uint8_t lb[3] = {4, 5, 6};
    char err[256];
    dataset ds;
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, 2, DATASET_MNIST_MEAN,
                                         DATASET_MNIST_STD, err, sizeof err), 0);
    ck_assert_float_eq_tol(ds.lut[0], -0.4242129f, 1e-6f);
    ck_assert_float_eq_tol(ds.lut[255], 2.8214865f, 1e-5f);
    for (int p = 0; p < 256; p++)
        ck_assert_float_eq_tol(ds.lut[p], ((float)p / 255.0f - 0.1307f) / 0.3081f, 1e-6f);

    uint32_t idx[4] = {2, 0, 2, 1};
    float x[4 * 4];
    uint8_t y[4];
    memset(x, 0xFF, sizeof x);
    dataset_gather(&ds, idx, 4, x, y);
    for (int k = 0; k < 4; k++) {
        ck_assert_uint_eq(y[k], lb[idx[k]]);
        for (int p = 0; p < 4; p++) {
            float want = ((float)px[idx[k] * 4 + p] / 255.0f - 0.1307f) / 0.3081f;
            ck_assert_float_eq_tol(x[k * 4 + p], want, 1e-6f);
        }
    }
    ck_assert_float_eq_tol(x[4], -0.1307f / 0.3081f, 1e-6f);   /* pixel 0 */
    ck_assert_float_eq_tol(x[5], (1 - 0.1307f) / 0.3081f, 1e-5f); /* pixel 255 */
    /* Labels only / pixels only. */
    memset(y, 0, sizeof y);
    dataset_gather(&ds, idx, 4, NULL, y);
    ck_assert_uint_eq(y[3], 5);
    dataset_gather(&ds, idx, 1, x, NULL);
    dataset_free(&ds);

    /* mean 0, std 1 leaves p / 255. */
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 3, 2, 2, 0.0f, 1.0f, err, sizeof err), 0);
    dataset_gather(&ds, idx, 2, x, y);
    ck_assert_float_eq_tol(x[0], 50.0f / 255.0f, 1e-7f);
    ck_assert_float_eq_tol(x[5], 1.0f, 1e-7f);
    dataset_free(&ds);
}
END_TEST

/* --------------------------------------------------------- synthetic data */

START_TEST(test_synth_deterministic)
{
    uint8_t *a, *la, *b, *lb2;
    synth(200, 5, &a, &la);
    synth(200, 5, &b, &lb2);
    ck_assert_mem_eq(a, b, 200 * PER);
    ck_assert_mem_eq(la, lb2, 200);
    /* The first k of n are the set of k. */
    ck_assert_int_eq(fixtures_synth_digits(50, 5, b, lb2), 0);
    ck_assert_mem_eq(a, b, 50 * PER);
    /* Another seed, other images. */
    ck_assert_int_eq(fixtures_synth_digits(200, 6, b, lb2), 0);
    ck_assert(memcmp(a, b, 200 * PER) != 0);
    unsigned count[DATASET_NUM_CLASSES] = {0};
    for (size_t i = 0; i < 200; i++) {
        ck_assert_uint_lt(la[i], DATASET_NUM_CLASSES);
        count[la[i]]++;
        /* Every image has ink and background. */
        unsigned ink = 0;
        for (int p = 0; p < PER; p++)
            ink += a[i * PER + p] > 128;
        ck_assert_msg(ink > 15 && ink < PER / 2, "image %zu has %u inked pixels", i, ink);
    }
    for (int c = 0; c < DATASET_NUM_CLASSES; c++)
        ck_assert_msg(count[c] >= 5, "class %d appears %u times in 200", c, count[c]);
    ck_assert_int_eq(fixtures_synth_digits(0, 1, NULL, NULL), 0);
    ck_assert_int_eq(fixtures_synth_digits(1, 1, NULL, la), -1);
    free(a);
    free(la);
    free(b);
    free(lb2);
}
END_TEST

/* The same bytes on every architecture and compiler setting (x86-64 with or
 * without FMA, aarch64 under make test-arm64), so a learning test that
 * passes on one passes on all.  Changing the generator on purpose changes
 * this hash: update it then. */
START_TEST(test_synth_golden)
{
    enum { N = 200 };
    uint8_t *px, *lb;
    synth(N, 1, &px, &lb);
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < N * PER; i++)
        h = (h ^ px[i]) * 1099511628211ULL;
    for (size_t i = 0; i < N; i++)
        h = (h ^ lb[i]) * 1099511628211ULL;
    ck_assert_msg(h == 0x64c7400df325b436ULL, "synthetic digits hash %016llx",
                  (unsigned long long)h);
    free(px);
    free(lb);
}
END_TEST

/* The classes are learnable: class means from one set classify another set
 * well, and clearly better than a single class would. */
START_TEST(test_synth_learnable)
{
    enum { NTRAIN = 2000, NTEST = 1000 };
    uint8_t *px, *lb, *tp, *tl;
    synth(NTRAIN, 11, &px, &lb);
    synth(NTEST, 12, &tp, &tl);
    static double mean[DATASET_NUM_CLASSES][PER];
    unsigned cnt[DATASET_NUM_CLASSES] = {0};
    memset(mean, 0, sizeof mean);
    for (size_t i = 0; i < NTRAIN; i++) {
        cnt[lb[i]]++;
        for (int p = 0; p < PER; p++)
            mean[lb[i]][p] += px[i * PER + p];
    }
    for (int c = 0; c < DATASET_NUM_CLASSES; c++)
        for (int p = 0; p < PER; p++)
            mean[c][p] /= cnt[c];
    unsigned correct = 0;
    for (size_t i = 0; i < NTEST; i++) {
        int best = -1;
        double bestd = 0;
        for (int c = 0; c < DATASET_NUM_CLASSES; c++) {
            double d = 0;
            for (int p = 0; p < PER; p++) {
                double e = tp[i * PER + p] - mean[c][p];
                d += e * e;
            }
            if (best < 0 || d < bestd) {
                best = c;
                bestd = d;
            }
        }
        correct += best == tl[i];
    }
    double acc = (double)correct / NTEST;
    printf("synthetic digits: nearest-centroid held-out accuracy %.3f\n", acc);
    ck_assert_msg(acc > 0.70, "nearest-centroid accuracy %.3f", acc);
    free(px);
    free(lb);
    free(tp);
    free(tl);
}
END_TEST

/* One epoch of SGD on a softmax-linear model learns the classes (about 95%
 * held out); a shuffled-label control stays near chance, so the score comes
 * from the images and not from a label imbalance. */
static double softmax_one_epoch(const uint8_t *px, const uint8_t *lb, size_t ntrain,
                                const uint8_t *tp, const uint8_t *tl, size_t ntest)
{
    static float w[DATASET_NUM_CLASSES][PER + 1];
    memset(w, 0, sizeof w);
    float x[PER + 1], z[DATASET_NUM_CLASSES];
    x[PER] = 1.0f;
    for (size_t i = 0; i < ntrain; i++) {
        for (int p = 0; p < PER; p++)
            x[p] = px[i * PER + p] / 255.0f;
        float m = -INFINITY, sum = 0;
        for (int c = 0; c < DATASET_NUM_CLASSES; c++) {
            z[c] = 0;
            for (int p = 0; p <= PER; p++)
                z[c] += w[c][p] * x[p];
            m = fmaxf(m, z[c]);
        }
        for (int c = 0; c < DATASET_NUM_CLASSES; c++)
            sum += z[c] = expf(z[c] - m);
        for (int c = 0; c < DATASET_NUM_CLASSES; c++) {
            float g = z[c] / sum - (c == lb[i]);
            for (int p = 0; p <= PER; p++)
                w[c][p] -= 0.01f * g * x[p];
        }
    }
    size_t correct = 0;
    for (size_t i = 0; i < ntest; i++) {
        for (int p = 0; p < PER; p++)
            x[p] = tp[i * PER + p] / 255.0f;
        int best = 0;
        float bz = -INFINITY;
        for (int c = 0; c < DATASET_NUM_CLASSES; c++) {
            float s = 0;
            for (int p = 0; p <= PER; p++)
                s += w[c][p] * x[p];
            if (s > bz) {
                bz = s;
                best = c;
            }
        }
        correct += best == tl[i];
    }
    return (double)correct / (double)ntest;
}

START_TEST(test_synth_linear_learnable)
{
    enum { NTRAIN = 2000, NTEST = 1000 };
    uint8_t *px, *lb, *tp, *tl;
    synth(NTRAIN, 21, &px, &lb);
    synth(NTEST, 22, &tp, &tl);
    double acc = softmax_one_epoch(px, lb, NTRAIN, tp, tl, NTEST);
    ck_assert_msg(acc > 0.90, "softmax-linear held-out accuracy %.3f after one epoch", acc);
    uint32_t *perm = malloc(NTRAIN * sizeof *perm);
    uint8_t *shuffled = malloc(NTRAIN);
    dataset_shuffle(perm, NTRAIN, 0, 1, 0);
    for (size_t i = 0; i < NTRAIN; i++)
        shuffled[i] = lb[perm[i]];
    double control = softmax_one_epoch(px, shuffled, NTRAIN, tp, tl, NTEST);
    ck_assert_msg(control < 0.25, "shuffled-label control reached %.3f", control);
    free(perm);
    free(shuffled);
    free(px);
    free(lb);
    free(tp);
    free(tl);
}
END_TEST

/* ---------------------------------------------------------- Fashion-MNIST */

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static void check_fashion(const char *stem, size_t n, const uint8_t *first8)
{
    char img[256], lbl[256], err[512] = "";
    snprintf(img, sizeof img, FASHION_DIR "/%s-images-idx3-ubyte.gz", stem);
    snprintf(lbl, sizeof lbl, FASHION_DIR "/%s-labels-idx1-ubyte.gz", stem);
    if (access(img, R_OK) != 0 || access(lbl, R_OK) != 0) {
        printf("fashion-mnist %s: skipped: %s or %s not readable "
               "(install the Debian package dataset-fashion-mnist)\n", stem, img, lbl);
        return;
    }
    dataset ds;
    ck_assert_msg(dataset_load(&ds, img, lbl, DATASET_MNIST_MEAN, DATASET_MNIST_STD, err,
                               sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(ds.n, n);
    ck_assert_int_eq(ds.rows, 28);
    ck_assert_int_eq(ds.cols, 28);
    ck_assert_mem_eq(ds.labels, first8, 8);
    /* Balanced classes: n / 10 of each. */
    size_t count[DATASET_NUM_CLASSES] = {0};
    for (size_t i = 0; i < n; i++)
        count[ds.labels[i]]++;
    for (int c = 0; c < DATASET_NUM_CLASSES; c++)
        ck_assert_uint_eq(count[c], n / 10);
    /* Mean pixel intensity of Fashion-MNIST is about 0.286. */
    double sum = 0;
    for (size_t i = 0; i < n * 28 * 28; i++)
        sum += ds.pixels[i];
    double mean = sum / (255.0 * (double)n * 28 * 28);
    ck_assert_msg(mean > 0.27 && mean < 0.30, "mean pixel %.4f", mean);
    dataset_free(&ds);
}

START_TEST(test_fashion_mnist)
{
    static const uint8_t train8[8] = {9, 0, 0, 3, 0, 2, 7, 2};
    static const uint8_t test8[8] = {9, 2, 1, 1, 6, 1, 4, 6};
    check_fashion("train", 60000, train8);
    check_fashion("t10k", 10000, test8);
}
END_TEST

/* Shift augmentation: a known image moves by exactly (dx, dy) with a black
 * border; picks are deterministic, bounded, use every offset, and vary by
 * epoch; max_shift 0 changes nothing. */
START_TEST(test_augment_shift)
{
    enum { H = 6, W = 5 };
    uint8_t px[H * W], lb[1] = { 0 };
    for (int i = 0; i < H * W; i++)
        px[i] = (uint8_t)(10 + i);
    dataset ds;
    char err[256];
    ck_assert_int_eq(dataset_from_memory(&ds, px, lb, 1, H, W, 0.0f, 1.0f, err, sizeof(err)), 0);
    uint32_t idx0 = 0;
    for (int dy = -3; dy <= 3; dy++)
        for (int dx = -3; dx <= 3; dx++) {
            float x[H * W];
            dataset_gather(&ds, &idx0, 1, x, NULL);
            dataset_shift_image(&ds, x, dx, dy);
            for (int y = 0; y < H; y++)
                for (int c = 0; c < W; c++) {
                    int sy = y - dy, sx = c - dx;
                    float want = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? ds.lut[px[sy * W + sx]]
                                                                          : ds.lut[0];
                    if (x[y * W + c] != want)
                        ck_abort_msg("shift (%d,%d): pixel (%d,%d) is %g, want %g", dx, dy, y, c,
                                     (double)x[y * W + c], (double)want);
                }
        }
    int seen[5][5] = { { 0 } }, differ = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        int dx, dy, dx2, dy2, dx3, dy3;
        dataset_shift_pick(7, 1, i, 2, &dx, &dy);
        dataset_shift_pick(7, 1, i, 2, &dx2, &dy2);
        dataset_shift_pick(7, 2, i, 2, &dx3, &dy3);
        ck_assert(dx == dx2 && dy == dy2);
        ck_assert(dx >= -2 && dx <= 2 && dy >= -2 && dy <= 2);
        seen[dy + 2][dx + 2]++;
        differ += dx != dx3 || dy != dy3;
    }
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            ck_assert_msg(seen[a][b] > 40, "offset (%d,%d) picked %d times of 2000", b - 2, a - 2,
                          seen[a][b]);
    ck_assert_int_gt(differ, 1500);
    float x[H * W], y[H * W];
    dataset_gather(&ds, &idx0, 1, x, NULL);
    memcpy(y, x, sizeof(x));
    dataset_augment_shift(&ds, x, &idx0, 1, 0, 7, 1);
    ck_assert_mem_eq(x, y, sizeof(x));
    dataset_free(&ds);
}
END_TEST

Suite *dataset_suite(void)
{
    Suite *s = suite_create("dataset");
    TCase *tl = tcase_create("load");
    tcase_add_checked_fixture(tl, setup, teardown);
    tcase_add_test(tl, test_load_pair);
    tcase_add_test(tl, test_load_synth_write);
    tcase_add_test(tl, test_load_count_mismatch);
    tcase_add_test(tl, test_load_bad_label);
    tcase_add_test(tl, test_load_errors_name_the_file);
    tcase_add_test(tl, test_from_memory);
    suite_add_tcase(s, tl);

    TCase *tp = tcase_create("order");
    tcase_set_timeout(tp, 60);
    tcase_add_test(tp, test_partition_covers_once);
    tcase_add_test(tp, test_partition_bad_args);
    tcase_add_test(tp, test_shuffle_permutation);
    tcase_add_test(tp, test_shuffle_deterministic_and_varied);
    tcase_add_test(tp, test_shuffle_uniform);
    tcase_add_test(tp, test_gather_normalises);
    tcase_add_test(tp, test_augment_shift);
    suite_add_tcase(s, tp);

    TCase *ts = tcase_create("synth");
    tcase_set_timeout(ts, 60);
    tcase_add_test(ts, test_synth_deterministic);
    tcase_add_test(ts, test_synth_golden);
    tcase_add_test(ts, test_synth_learnable);
    tcase_add_test(ts, test_synth_linear_learnable);
    suite_add_tcase(s, ts);

    TCase *tf = tcase_create("fashion");
    tcase_set_timeout(tf, 120);
    tcase_add_test(tf, test_fashion_mnist);
    suite_add_tcase(s, tf);
    return s;
}
