/* check_idx.c - the IDX reader: good files (plain, gzip, multi-member),
 * every kind of bad file (each must fail with "<path>: <problem>"), every
 * truncation of a valid file in memory and on disk, and reads that end at an
 * unreadable guard page.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fixtures.h"
#include "idx.h"

#define N_IMG 3
#define ROWS 4
#define COLS 5
#define NPIX (N_IMG * ROWS * COLS)

static char tdir[FIXTURES_PATH_MAX];
static uint8_t pixels[NPIX];
static const uint8_t labels[N_IMG] = {3, 0, 9};

static void setup(void)
{
    for (int i = 0; i < NPIX; i++)
        pixels[i] = (uint8_t)(i * 37 + 11);
    ck_assert_int_eq(fixtures_tmpdir_make(tdir, sizeof tdir), 0);
}

static void teardown(void)
{
    fixtures_tmpdir_remove(tdir);
}

/* Path of name inside the test's temp dir (static buffer, rotates over 4). */
static const char *tpath(const char *name)
{
    static char bufs[4][FIXTURES_PATH_MAX];
    static int k;
    char *p = bufs[k++ & 3];
    ck_assert_int_eq(fixtures_path_join(p, FIXTURES_PATH_MAX, tdir, name), 0);
    return p;
}

static void encode_images(uint8_t **buf, size_t *len)
{
    ck_assert_int_eq(fixtures_idx_images_encode(pixels, N_IMG, ROWS, COLS, buf, len), 0);
    ck_assert_uint_eq(*len, 16 + NPIX);
}

static void encode_labels(uint8_t **buf, size_t *len)
{
    ck_assert_int_eq(fixtures_idx_labels_encode(labels, N_IMG, buf, len), 0);
    ck_assert_uint_eq(*len, 8 + N_IMG);
}

/* The loader must fail, leave *out zeroed, and say "<path>: ...<want>...". */
static void expect_images_fail(const char *path, const char *want)
{
    idx_images im;
    char err[512] = "";
    memset(&im, 0xAB, sizeof im);
    ck_assert_int_eq(idx_images_load(path, &im, err, sizeof err), -1);
    ck_assert_ptr_null(im.pixels);
    ck_assert_uint_eq(im.n, 0);
    ck_assert_msg(strncmp(err, path, strlen(path)) == 0 && strncmp(err + strlen(path), ": ", 2) == 0,
                  "message does not start with the path: '%s'", err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in '%s'", want, err);
}

static void expect_labels_fail(const char *path, const char *want)
{
    idx_labels lb;
    char err[512] = "";
    memset(&lb, 0xAB, sizeof lb);
    ck_assert_int_eq(idx_labels_load(path, &lb, err, sizeof err), -1);
    ck_assert_ptr_null(lb.labels);
    ck_assert_uint_eq(lb.n, 0);
    ck_assert_msg(strncmp(err, path, strlen(path)) == 0 && strncmp(err + strlen(path), ": ", 2) == 0,
                  "message does not start with the path: '%s'", err);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in '%s'", want, err);
}

static void expect_images_ok(const char *path)
{
    idx_images im;
    char err[512] = "";
    ck_assert_msg(idx_images_load(path, &im, err, sizeof err) == 0, "load failed: %s", err);
    ck_assert_uint_eq(im.n, N_IMG);
    ck_assert_uint_eq(im.rows, ROWS);
    ck_assert_uint_eq(im.cols, COLS);
    ck_assert_mem_eq(im.pixels, pixels, NPIX);
    idx_images_free(&im);
    ck_assert_ptr_null(im.pixels);
}

static void expect_labels_ok(const char *path)
{
    idx_labels lb;
    char err[512] = "";
    ck_assert_msg(idx_labels_load(path, &lb, err, sizeof err) == 0, "load failed: %s", err);
    ck_assert_uint_eq(lb.n, N_IMG);
    ck_assert_mem_eq(lb.labels, labels, N_IMG);
    idx_labels_free(&lb);
}

/* ------------------------------------------------------------- good files */

START_TEST(test_load_plain_and_gzip)
{
    const char *ip = tpath("img"), *lp = tpath("lbl");
    const char *igz = tpath("img.gz"), *lgz = tpath("lbl.gz");
    ck_assert_int_eq(fixtures_write_idx_images(ip, pixels, N_IMG, ROWS, COLS, 0), 0);
    ck_assert_int_eq(fixtures_write_idx_labels(lp, labels, N_IMG, 0), 0);
    ck_assert_int_eq(fixtures_write_idx_images(igz, pixels, N_IMG, ROWS, COLS, 1), 0);
    ck_assert_int_eq(fixtures_write_idx_labels(lgz, labels, N_IMG, 1), 0);
    expect_images_ok(ip);
    expect_labels_ok(lp);
    expect_images_ok(igz);
    expect_labels_ok(lgz);
}
END_TEST

/* Compression is decided by content: names do not matter. */
START_TEST(test_content_not_name_decides)
{
    const char *plain_gz = tpath("plain.gz"), *gz_plain = tpath("gzip.idx3");
    ck_assert_int_eq(fixtures_write_idx_images(plain_gz, pixels, N_IMG, ROWS, COLS, 0), 0);
    ck_assert_int_eq(fixtures_write_idx_images(gz_plain, pixels, N_IMG, ROWS, COLS, 1), 0);
    expect_images_ok(plain_gz);
    expect_images_ok(gz_plain);
}
END_TEST

/* gzip(1) concatenates members (cat a.gz b.gz); the result is one file. */
START_TEST(test_gzip_multi_member)
{
    uint8_t *buf, *z1, *z2;
    size_t len, l1, l2;
    encode_images(&buf, &len);
    size_t cut = 23; /* inside the pixels */
    ck_assert_int_eq(fixtures_gzip(buf, cut, &z1, &l1), 0);
    ck_assert_int_eq(fixtures_gzip(buf + cut, len - cut, &z2, &l2), 0);
    const char *p = tpath("multi.gz");
    ck_assert_int_eq(fixtures_file_write(p, z1, l1, 0), 0);
    ck_assert_int_eq(fixtures_file_append(p, z2, l2), 0);
    expect_images_ok(p);
    /* An empty member in between is fine too. */
    uint8_t *z0;
    size_t l0;
    ck_assert_int_eq(fixtures_gzip(buf, 0, &z0, &l0), 0);
    ck_assert_int_eq(fixtures_file_write(p, z1, l1, 0), 0);
    ck_assert_int_eq(fixtures_file_append(p, z0, l0), 0);
    ck_assert_int_eq(fixtures_file_append(p, z2, l2), 0);
    expect_images_ok(p);
    free(buf);
    free(z0);
    free(z1);
    free(z2);
}
END_TEST

/* A payload larger than the loader's first buffer and the raw buffer, so
 * both grow and the direct-read path is used. */
START_TEST(test_load_large)
{
    const uint32_t n = 3000, side = 28;
    size_t np = (size_t)n * side * side;
    uint8_t *big = malloc(np);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < np; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "big.gz" : "big");
        ck_assert_int_eq(fixtures_write_idx_images(p, big, n, side, side, gz), 0);
        idx_images im;
        char err[512] = "";
        ck_assert_msg(idx_images_load(p, &im, err, sizeof err) == 0, "%s", err);
        ck_assert_uint_eq(im.n, n);
        ck_assert_int_eq(memcmp(im.pixels, big, np), 0);
        idx_images_free(&im);
    }
    free(big);
}
END_TEST

/* A non-regular file (a pipe) has no size to check up front: the loader
 * must still find truncation and trailing data while streaming. */
START_TEST(test_load_from_pipe)
{
    uint8_t *buf;
    size_t len;
    encode_images(&buf, &len);
    struct {
        size_t len;
        int extra;
        const char *want;
    } cases[] = {
        {len, 0, NULL},
        {len - 1, 0, "truncated: header promises 60 bytes of pixels, file has 59"},
        {len, 1, "trailing data"},
        {10, 0, "truncated header"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        ck_assert_int_eq(write(fds[1], buf, cases[c].len), (ssize_t)cases[c].len);
        if (cases[c].extra)
            ck_assert_int_eq(write(fds[1], "x", 1), 1);
        close(fds[1]);
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fds[0]);
        if (cases[c].want)
            expect_images_fail(p, cases[c].want);
        else
            expect_images_ok(p);
        close(fds[0]);
    }
    free(buf);
}
END_TEST

/* -------------------------------------------------------------- bad files */

START_TEST(test_nonexistent_and_directory)
{
    const char *p = tpath("does-not-exist");
    char want[FIXTURES_PATH_MAX + 64];
    snprintf(want, sizeof want, "%s: %s", p, strerror(ENOENT));
    idx_images im;
    char err[FIXTURES_PATH_MAX + 64];
    ck_assert_int_eq(idx_images_load(p, &im, err, sizeof err), -1);
    ck_assert_str_eq(err, want);
    expect_labels_fail(p, strerror(ENOENT));
    expect_images_fail(tdir, "is a directory");
    /* Reading offset 0 of our own address space fails with EIO. */
    if (access("/proc/self/mem", R_OK) == 0)
        expect_images_fail("/proc/self/mem", "read error: ");
}
END_TEST

START_TEST(test_empty)
{
    const char *p = tpath("empty"), *pgz = tpath("empty.gz");
    ck_assert_int_eq(fixtures_file_write(p, (const uint8_t *)"", 0, 0), 0);
    ck_assert_int_eq(fixtures_file_write(pgz, (const uint8_t *)"", 0, 1), 0);
    expect_images_fail(p, "empty file");
    expect_labels_fail(p, "empty file");
    expect_images_fail(pgz, "empty file");
    expect_labels_fail(pgz, "empty file");
}
END_TEST

START_TEST(test_truncated_header)
{
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "short.gz" : "short");
        for (size_t cut = 1; cut < 16; cut++) {
            ck_assert_int_eq(fixtures_file_write(p, ib, cut, gz), 0);
            expect_images_fail(p, "truncated header");
        }
        for (size_t cut = 1; cut < 8; cut++) {
            ck_assert_int_eq(fixtures_file_write(p, lb, cut, gz), 0);
            expect_labels_fail(p, "truncated header");
        }
    }
    free(ib);
    free(lb);
}
END_TEST

START_TEST(test_truncated_data)
{
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    char want[128];
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "cut.gz" : "cut");
        size_t cuts[] = {16, 17, 16 + NPIX / 2, il - 1};
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            ck_assert_int_eq(fixtures_file_write(p, ib, cuts[k], gz), 0);
            snprintf(want, sizeof want, "truncated: header promises %d bytes of pixels, file has %zu",
                     NPIX, cuts[k] - 16);
            expect_images_fail(p, want);
        }
        for (size_t cut = 8; cut < ll; cut++) {
            ck_assert_int_eq(fixtures_file_write(p, lb, cut, gz), 0);
            snprintf(want, sizeof want, "truncated: header promises %d bytes of labels, file has %zu",
                     N_IMG, cut - 8);
            expect_labels_fail(p, want);
        }
    }
    /* The same through the truncate helper on a file written whole. */
    const char *p = tpath("cut2");
    ck_assert_int_eq(fixtures_file_write(p, ib, il, 0), 0);
    ck_assert_int_eq(fixtures_file_truncate(p, il - 7), 0);
    snprintf(want, sizeof want, "truncated: header promises %d bytes of pixels, file has %d", NPIX,
             NPIX - 7);
    expect_images_fail(p, want);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(test_bad_magic)
{
    for (int gz = 0; gz < 2; gz++) {
        const char *ip = tpath(gz ? "i.gz" : "i"), *lp = tpath(gz ? "l.gz" : "l");
        uint8_t *ib, *lb;
        size_t il, ll;
        encode_images(&ib, &il);
        encode_labels(&lb, &ll);
        static const uint32_t bad[] = {0x12345678u, 0x01000803u, 0x00010803u, 0xffffffffu,
                                       0x08030000u};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            for (int i = 0; i < 4; i++) {
                ib[i] = (uint8_t)(bad[k] >> (24 - 8 * i));
                lb[i] = (uint8_t)(bad[k] >> (24 - 8 * i));
            }
            ck_assert_int_eq(fixtures_file_write(ip, ib, il, gz), 0);
            ck_assert_int_eq(fixtures_file_write(lp, lb, ll, gz), 0);
            expect_images_fail(ip, "bad magic");
            expect_labels_fail(lp, "bad magic");
        }
        free(ib);
        free(lb);
    }
}
END_TEST

START_TEST(test_kind_swapped)
{
    const char *ip = tpath("img"), *lp = tpath("lbl");
    ck_assert_int_eq(fixtures_write_idx_images(ip, pixels, N_IMG, ROWS, COLS, 0), 0);
    ck_assert_int_eq(fixtures_write_idx_labels(lp, labels, N_IMG, 0), 0);
    expect_images_fail(lp, "bad magic 2049: this is a label file");
    expect_labels_fail(ip, "bad magic 2051: this is an image file");
    /* Wrong number of dimensions that is neither kind. */
    ck_assert_int_eq(fixtures_file_patch_be32(ip, 0, 0x00000802u), 0);
    expect_images_fail(ip, "2 dimensions, expected 3");
    expect_labels_fail(ip, "2 dimensions, expected 1");
}
END_TEST

START_TEST(test_bad_type_byte)
{
    static const uint8_t types[] = {0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF};
    const char *ip = tpath("img"), *lp = tpath("lbl");
    char want[64];
    for (size_t k = 0; k < sizeof types; k++) {
        ck_assert_int_eq(fixtures_write_idx_images(ip, pixels, N_IMG, ROWS, COLS, 0), 0);
        ck_assert_int_eq(fixtures_write_idx_labels(lp, labels, N_IMG, 0), 0);
        ck_assert_int_eq(fixtures_file_patch(ip, 2, &types[k], 1), 0);
        ck_assert_int_eq(fixtures_file_patch(lp, 2, &types[k], 1), 0);
        snprintf(want, sizeof want, "data type 0x%02x", types[k]);
        expect_images_fail(ip, want);
        expect_labels_fail(lp, want);
    }
}
END_TEST

START_TEST(test_zero_dims)
{
    const char *p = tpath("zero");
    ck_assert_int_eq(fixtures_write_idx_images(p, NULL, 0, ROWS, COLS, 0), 0);
    expect_images_fail(p, "dimension 0 (count) is zero");
    ck_assert_int_eq(fixtures_write_idx_images(p, NULL, N_IMG, 0, COLS, 0), 0);
    expect_images_fail(p, "dimension 1 (rows) is zero");
    ck_assert_int_eq(fixtures_write_idx_images(p, NULL, N_IMG, ROWS, 0, 1), 0);
    expect_images_fail(p, "dimension 2 (cols) is zero");
    ck_assert_int_eq(fixtures_write_idx_labels(p, NULL, 0, 0), 0);
    expect_labels_fail(p, "dimension 0 (count) is zero");
}
END_TEST

/* Headers at and beyond the limits.  Within the limits the promise is still
 * absurd for a 60-byte file: the loader must say so without allocating it
 * (under ASan an attempt to malloc 1.6 PB aborts the test). */
START_TEST(test_huge_dims)
{
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "huge.gz" : "huge");
        ck_assert_int_eq(fixtures_write_idx_images(p, NULL, IDX_MAX_ITEMS + 1, 28, 28, gz), 0);
        expect_images_fail(p, "more than the limit");
        ck_assert_int_eq(fixtures_write_idx_images(p, NULL, 0xffffffffu, 28, 28, gz), 0);
        expect_images_fail(p, "more than the limit");
        ck_assert_int_eq(fixtures_write_idx_images(p, NULL, 10, IDX_MAX_SIDE + 1, 28, gz), 0);
        expect_images_fail(p, "exceeds the limit");
        ck_assert_int_eq(fixtures_write_idx_images(p, NULL, 10, 28, 0xffffffffu, gz), 0);
        expect_images_fail(p, "exceeds the limit");
        ck_assert_int_eq(fixtures_write_idx_labels(p, NULL, 0xffffffffu, gz), 0);
        expect_labels_fail(p, "more than the limit");

        /* Largest legal header, 60 bytes of data. */
        uint8_t *b;
        size_t len;
        ck_assert_int_eq(fixtures_idx_images_encode(NULL, IDX_MAX_ITEMS, IDX_MAX_SIDE, IDX_MAX_SIDE,
                                                    &b, &len), 0);
        uint8_t *full = malloc(len + NPIX);
        memcpy(full, b, len);
        memcpy(full + len, pixels, NPIX);
        ck_assert_int_eq(fixtures_file_write(p, full, len + NPIX, gz), 0);
        char want[128];
        snprintf(want, sizeof want, "truncated: header promises %llu bytes of pixels, file has %d",
                 (unsigned long long)IDX_MAX_ITEMS * IDX_MAX_SIDE * IDX_MAX_SIDE, NPIX);
        expect_images_fail(p, want);
        free(b);
        ck_assert_int_eq(fixtures_idx_labels_encode(NULL, IDX_MAX_ITEMS, &b, &len), 0);
        memcpy(full, b, len);
        ck_assert_int_eq(fixtures_file_write(p, full, len + 1, gz), 0);
        snprintf(want, sizeof want, "truncated: header promises %u bytes of labels, file has 1",
                 IDX_MAX_ITEMS);
        expect_labels_fail(p, want);
        free(full);
        free(b);
    }
}
END_TEST

START_TEST(test_trailing_garbage)
{
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    const char *p = tpath("trail");
    char want[128];

    ck_assert_int_eq(fixtures_file_write(p, ib, il, 0), 0);
    ck_assert_int_eq(fixtures_file_append(p, (const uint8_t *)"\0", 1), 0);
    snprintf(want, sizeof want, "trailing data: header promises %d bytes of pixels, file has %d",
             NPIX, NPIX + 1);
    expect_images_fail(p, want);
    ck_assert_int_eq(fixtures_file_write(p, lb, ll, 0), 0);
    ck_assert_int_eq(fixtures_file_append(p, (const uint8_t *)"garbage", 7), 0);
    expect_labels_fail(p, "trailing data: header promises 3 bytes of labels, file has 10");

    /* Inside the compressed data. */
    const char *pgz = tpath("trail.gz");
    uint8_t *more = malloc(il + 1000);
    memcpy(more, ib, il);
    memset(more + il, 0, 1000);
    ck_assert_int_eq(fixtures_file_write(pgz, more, il + 1, 1), 0);
    expect_images_fail(pgz, "trailing data: header promises 60 bytes of pixels, file has more");
    ck_assert_int_eq(fixtures_file_write(pgz, more, il + 1000, 1), 0);
    expect_images_fail(pgz, "trailing data");

    /* After the compressed data: garbage, zero padding, a lone 1f. */
    static const uint8_t *tails[] = {(const uint8_t *)"garbage", (const uint8_t *)"\0\0\0\0",
                                     (const uint8_t *)"\x1f"};
    static const size_t tail_len[] = {7, 4, 1};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(fixtures_file_write(pgz, ib, il, 1), 0);
        ck_assert_int_eq(fixtures_file_append(pgz, tails[k], tail_len[k]), 0);
        expect_images_fail(pgz, "trailing garbage after the gzip data");
    }
    /* A second gzip member holding more bytes is trailing data too. */
    uint8_t *z;
    size_t zl;
    ck_assert_int_eq(fixtures_gzip((const uint8_t *)"x", 1, &z, &zl), 0);
    ck_assert_int_eq(fixtures_file_write(pgz, lb, ll, 1), 0);
    ck_assert_int_eq(fixtures_file_append(pgz, z, zl), 0);
    expect_labels_fail(pgz, "trailing data");
    free(z);
    free(more);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(test_corrupt_gzip)
{
    uint8_t *ib, *z;
    size_t il, zl;
    encode_images(&ib, &il);
    ck_assert_int_eq(fixtures_gzip(ib, il, &z, &zl), 0);
    const char *p = tpath("bad.gz");
    uint8_t *c = malloc(zl);

    /* The CRC (trailer bytes -8..-5), the length (-4..-1), the method byte. */
    size_t spots[] = {zl - 8, zl - 5, zl - 4, zl - 1, 2};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        memcpy(c, z, zl);
        c[spots[k]] ^= 0x55;
        ck_assert_int_eq(fixtures_file_write(p, c, zl, 0), 0);
        expect_images_fail(p, "corrupt gzip data");
    }
    /* Flags that are reserved. */
    memcpy(c, z, zl);
    c[3] = 0xE0;
    ck_assert_int_eq(fixtures_file_write(p, c, zl, 0), 0);
    expect_images_fail(p, "corrupt gzip data");
    /* An invalid block type (11) in the first deflate block header. */
    memcpy(c, z, zl);
    c[10] |= 0x06;
    ck_assert_int_eq(fixtures_file_write(p, c, zl, 0), 0);
    expect_images_fail(p, "corrupt gzip data");

    /* Every byte of the deflate body and trailer flipped: each must fail
     * (data error, CRC error, or truncation) and none may crash.  The
     * header's mtime/xfl/os bytes (4..9) are not checked by anyone. */
    for (size_t i = 10; i < zl; i++) {
        memcpy(c, z, zl);
        c[i] ^= 0xFF;
        ck_assert_int_eq(fixtures_file_write(p, c, zl, 0), 0);
        idx_images im;
        char err[512];
        ck_assert_msg(idx_images_load(p, &im, err, sizeof err) == -1, "flip at %zu loaded", i);
        ck_assert_msg(strncmp(err, p, strlen(p)) == 0, "%s", err);
    }
    free(c);
    free(z);
    free(ib);
}
END_TEST

/* Every prefix of a gzip file must fail: most end inside the deflate data,
 * the last eight lose (part of) the CRC and length trailer. */
START_TEST(test_truncated_gzip_every_length)
{
    uint8_t *ib, *z;
    size_t il, zl;
    encode_images(&ib, &il);
    ck_assert_int_eq(fixtures_gzip(ib, il, &z, &zl), 0);
    const char *p = tpath("cut.gz");
    for (size_t cut = 1; cut < zl; cut++) {
        ck_assert_int_eq(fixtures_file_write(p, z, cut, 0), 0);
        expect_images_fail(p, cut == 1 ? "truncated header" : "truncated gzip data");
    }
    ck_assert_int_eq(fixtures_file_write(p, z, zl, 0), 0);
    expect_images_ok(p);
    free(z);
    free(ib);
}
END_TEST

START_TEST(test_error_buffer_limits)
{
    const char *p = tpath("missing");
    idx_images im;
    idx_labels lb;
    char small[6];
    memset(small, 'Z', sizeof small);
    ck_assert_int_eq(idx_images_load(p, &im, small, sizeof small), -1);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(strncmp(small, p, sizeof small - 1), 0);
    ck_assert_int_eq(idx_images_load(p, &im, NULL, 0), -1);
    ck_assert_int_eq(idx_labels_load(NULL, &lb, NULL, 0), -1);
    ck_assert_int_eq(idx_images_parse(NULL, 0, "x", &im, small, 1), -1);
    ck_assert_str_eq(small, "");
    idx_images_free(NULL);
    idx_labels_free(NULL);
    idx_images_free(&im); /* zeroed by the failed load */
}
END_TEST

/* -------------------------------------------------------------- in memory */

START_TEST(test_parse_ok)
{
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    idx_images im;
    idx_labels lab;
    char err[256];
    ck_assert_int_eq(idx_images_parse(ib, il, "mem", &im, err, sizeof err), 0);
    ck_assert_uint_eq(im.n, N_IMG);
    ck_assert_uint_eq(im.rows, ROWS);
    ck_assert_uint_eq(im.cols, COLS);
    ck_assert_mem_eq(im.pixels, pixels, NPIX);
    ck_assert_ptr_ne(im.pixels, ib + 16); /* a copy */
    idx_images_free(&im);
    ck_assert_int_eq(idx_labels_parse(lb, ll, "mem", &lab, err, sizeof err), 0);
    ck_assert_uint_eq(lab.n, N_IMG);
    ck_assert_mem_eq(lab.labels, labels, N_IMG);
    idx_labels_free(&lab);
    free(ib);
    free(lb);
}
END_TEST

/* Feeds each prefix in an exactly sized heap buffer (ASan catches an
 * over-read) and only the full length may succeed. */
static void parse_every_prefix(const uint8_t *buf, size_t len, int images)
{
    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t *b = malloc(cut ? cut : 1);
        memcpy(b, buf, cut);
        char err[256] = "";
        int rc;
        if (images) {
            idx_images im;
            rc = idx_images_parse(b, cut, "mem.idx", &im, err, sizeof err);
            if (rc == 0)
                idx_images_free(&im);
        } else {
            idx_labels lb;
            rc = idx_labels_parse(b, cut, "mem.idx", &lb, err, sizeof err);
            if (rc == 0)
                idx_labels_free(&lb);
        }
        free(b);
        if (cut == len) {
            ck_assert_msg(rc == 0, "full length failed: %s", err);
        } else {
            ck_assert_msg(rc == -1, "prefix of %zu/%zu bytes parsed", cut, len);
            ck_assert_msg(strncmp(err, "mem.idx: ", 9) == 0, "'%s'", err);
            const char *want = cut == 0 ? "empty file"
                             : cut < (images ? 16u : 8u) ? "truncated header" : "truncated: ";
            ck_assert_msg(strstr(err, want), "prefix %zu: expected '%s' in '%s'", cut, want, err);
        }
    }
}

START_TEST(test_parse_every_prefix)
{
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    parse_every_prefix(ib, il, 1);
    parse_every_prefix(lb, ll, 0);
    free(ib);
    free(lb);
}
END_TEST

/* Each prefix placed so that it ends exactly at an unreadable page. */
START_TEST(test_parse_guard_page)
{
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *map = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    ck_assert_int_eq(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
    uint8_t *ib, *lb;
    size_t il, ll;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    for (int images = 0; images < 2; images++) {
        const uint8_t *src = images ? ib : lb;
        size_t len = images ? il : ll;
        for (size_t cut = 0; cut <= len; cut++) {
            uint8_t *b = map + pg - cut;
            memcpy(b, src, cut);
            char err[256];
            int rc;
            if (images) {
                idx_images im;
                rc = idx_images_parse(b, cut, "g", &im, err, sizeof err);
                idx_images_free(&im);
            } else {
                idx_labels lab;
                rc = idx_labels_parse(b, cut, "g", &lab, err, sizeof err);
                idx_labels_free(&lab);
            }
            ck_assert_int_eq(rc, cut == len ? 0 : -1);
        }
    }
    munmap(map, 2 * (size_t)pg);
    free(ib);
    free(lb);
}
END_TEST

START_TEST(test_parse_bad_inputs)
{
    uint8_t *ib, *lb, *z;
    size_t il, ll, zl;
    encode_images(&ib, &il);
    encode_labels(&lb, &ll);
    idx_images im;
    idx_labels lab;
    char err[256];

    /* Two files back to back are one file with trailing data. */
    uint8_t *two = malloc(2 * il);
    memcpy(two, ib, il);
    memcpy(two + il, ib, il);
    ck_assert_int_eq(idx_images_parse(two, 2 * il, "two", &im, err, sizeof err), -1);
    ck_assert_str_eq(err, "two: trailing data: header promises 60 bytes of pixels, file has 136");
    /* The parser takes decompressed bytes only. */
    ck_assert_int_eq(fixtures_gzip(ib, il, &z, &zl), 0);
    ck_assert_int_eq(idx_images_parse(z, zl, "z", &im, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "gzip-compressed"));
    /* Swapped kinds. */
    ck_assert_int_eq(idx_images_parse(lb, ll, "l", &im, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "label file"));
    ck_assert_int_eq(idx_labels_parse(ib, il, "i", &lab, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "image file"));
    ck_assert_ptr_null(lab.labels);
    /* NULL buffer. */
    ck_assert_int_eq(idx_labels_parse(NULL, 100, "n", &lab, err, sizeof err), -1);
    ck_assert_str_eq(err, "n: empty file");
    free(z);
    free(two);
    free(ib);
    free(lb);
}
END_TEST

Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_load_plain_and_gzip);
    tcase_add_test(tc, test_content_not_name_decides);
    tcase_add_test(tc, test_gzip_multi_member);
    tcase_add_test(tc, test_load_large);
    tcase_add_test(tc, test_load_from_pipe);
    tcase_add_test(tc, test_nonexistent_and_directory);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_truncated_header);
    tcase_add_test(tc, test_truncated_data);
    tcase_add_test(tc, test_bad_magic);
    tcase_add_test(tc, test_kind_swapped);
    tcase_add_test(tc, test_bad_type_byte);
    tcase_add_test(tc, test_zero_dims);
    tcase_add_test(tc, test_huge_dims);
    tcase_add_test(tc, test_trailing_garbage);
    tcase_add_test(tc, test_corrupt_gzip);
    tcase_add_test(tc, test_truncated_gzip_every_length);
    tcase_add_test(tc, test_error_buffer_limits);
    suite_add_tcase(s, tc);

    TCase *tm = tcase_create("memory");
    tcase_add_checked_fixture(tm, setup, teardown);
    tcase_add_test(tm, test_parse_ok);
    tcase_add_test(tm, test_parse_every_prefix);
    tcase_add_test(tm, test_parse_guard_page);
    tcase_add_test(tm, test_parse_bad_inputs);
    suite_add_tcase(s, tm);
    return s;
}
