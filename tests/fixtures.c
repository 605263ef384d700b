/* fixtures.c - test data helpers; see fixtures.h. */
#include "fixtures.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"
#include "rng.h"

/* ------------------------------------------------------------ directories */

/* See fixtures.h. */
int fixtures_tmpdir_make(char *out, size_t outlen)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    int k = snprintf(out, outlen, "%s/psd-test-XXXXXX", base);
    if (k < 0 || (size_t)k >= outlen) {
        fprintf(stderr, "fixtures: temp dir path under %s too long\n", base);
        return -1;
    }
    if (!mkdtemp(out)) {
        fprintf(stderr, "fixtures: mkdtemp %s: %s\n", out, strerror(errno));
        return -1;
    }
    return 0;
}

static int fixtures_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) < 0) {
        fprintf(stderr, "fixtures: remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* See fixtures.h. */
int fixtures_tmpdir_remove(const char *dir)
{
    if (!dir || !*dir)
        return -1;
    return nftw(dir, fixtures_rm_cb, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

/* See fixtures.h. */
int fixtures_path_join(char *out, size_t outlen, const char *dir, const char *name)
{
    int k = snprintf(out, outlen, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= outlen) {
        fprintf(stderr, "fixtures: path %s/%s too long\n", dir, name);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- encoding */

static void fixtures_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* See fixtures.h. */
int fixtures_idx_images_encode(const uint8_t *pixels, uint32_t n, uint32_t rows, uint32_t cols,
                               uint8_t **out, size_t *outlen)
{
    uint64_t body = pixels ? (uint64_t)n * rows * cols : 0;
    if (body > SIZE_MAX - 16)
        return -1;
    uint8_t *b = malloc(16 + (size_t)body);
    if (!b)
        return -1;
    fixtures_put_be32(b, IDX_MAGIC_IMAGES);
    fixtures_put_be32(b + 4, n);
    fixtures_put_be32(b + 8, rows);
    fixtures_put_be32(b + 12, cols);
    if (body)
        memcpy(b + 16, pixels, (size_t)body);
    *out = b;
    *outlen = 16 + (size_t)body;
    return 0;
}

/* See fixtures.h. */
int fixtures_idx_labels_encode(const uint8_t *labels, uint32_t n, uint8_t **out, size_t *outlen)
{
    size_t body = labels ? n : 0;
    uint8_t *b = malloc(8 + body);
    if (!b)
        return -1;
    fixtures_put_be32(b, IDX_MAGIC_LABELS);
    fixtures_put_be32(b + 4, n);
    if (body)
        memcpy(b + 8, labels, body);
    *out = b;
    *outlen = 8 + body;
    return 0;
}

/* See fixtures.h. */
int fixtures_gzip(const uint8_t *buf, size_t len, uint8_t **out, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    if (len > UINT32_MAX) {
        deflateEnd(&zs);
        return -1;
    }
    uLong bound = deflateBound(&zs, (uLong)len) + 32;
    uint8_t *b = malloc(bound);
    if (!b) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = (Bytef *)(uintptr_t)buf;
    zs.avail_in = (uInt)len;
    zs.next_out = b;
    zs.avail_out = (uInt)bound;
    int zr = deflate(&zs, Z_FINISH);
    size_t produced = bound - zs.avail_out;
    deflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        free(b);
        return -1;
    }
    *out = b;
    *outlen = produced;
    return 0;
}

/* ----------------------------------------------------------------- files */

static int fixtures_write_all(const char *path, const uint8_t *buf, size_t len, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
    if (fd < 0) {
        fprintf(stderr, "fixtures: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "fixtures: write %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0) {
        fprintf(stderr, "fixtures: close %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* See fixtures.h. */
int fixtures_file_write(const char *path, const uint8_t *buf, size_t len, int gzip)
{
    if (!gzip)
        return fixtures_write_all(path, buf, len, O_TRUNC);
    uint8_t *z;
    size_t zlen;
    if (fixtures_gzip(buf, len, &z, &zlen) < 0) {
        fprintf(stderr, "fixtures: gzip for %s failed\n", path);
        return -1;
    }
    int rc = fixtures_write_all(path, z, zlen, O_TRUNC);
    free(z);
    return rc;
}

/* See fixtures.h. */
int fixtures_file_read(const char *path, uint8_t **out, size_t *outlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fixtures: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int bad = !b || ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "fixtures: read %s failed\n", path);
        free(b);
        return -1;
    }
    *out = b;
    *outlen = len;
    return 0;
}

/* See fixtures.h. */
int fixtures_write_idx_images(const char *path, const uint8_t *pixels, uint32_t n,
                              uint32_t rows, uint32_t cols, int gzip)
{
    uint8_t *b;
    size_t len;
    if (fixtures_idx_images_encode(pixels, n, rows, cols, &b, &len) < 0)
        return -1;
    int rc = fixtures_file_write(path, b, len, gzip);
    free(b);
    return rc;
}

/* See fixtures.h. */
int fixtures_write_idx_labels(const char *path, const uint8_t *labels, uint32_t n, int gzip)
{
    uint8_t *b;
    size_t len;
    if (fixtures_idx_labels_encode(labels, n, &b, &len) < 0)
        return -1;
    int rc = fixtures_file_write(path, b, len, gzip);
    free(b);
    return rc;
}

/* See fixtures.h. */
int fixtures_write_idx_pair(const char *dir, const char *stem, const uint8_t *pixels,
                            const uint8_t *labels, size_t n, int gzip,
                            char *img_path_out, char *lbl_path_out, size_t pathlen)
{
    char name[512];
    const char *ext = gzip ? ".gz" : "";
    if (n > UINT32_MAX)
        return -1;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", stem, ext);
    if (fixtures_path_join(img_path_out, pathlen, dir, name) < 0)
        return -1;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", stem, ext);
    if (fixtures_path_join(lbl_path_out, pathlen, dir, name) < 0)
        return -1;
    if (fixtures_write_idx_images(img_path_out, pixels, (uint32_t)n, FIXTURES_SIDE,
                                  FIXTURES_SIDE, gzip) < 0)
        return -1;
    return fixtures_write_idx_labels(lbl_path_out, labels, (uint32_t)n, gzip);
}

/* ------------------------------------------------------------ corruption */

/* See fixtures.h. */
int fixtures_file_truncate(const char *path, size_t len)
{
    if (truncate(path, (off_t)len) < 0) {
        fprintf(stderr, "fixtures: truncate %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* See fixtures.h. */
int fixtures_file_append(const char *path, const uint8_t *bytes, size_t len)
{
    return fixtures_write_all(path, bytes, len, O_APPEND);
}

/* See fixtures.h. */
int fixtures_file_patch(const char *path, size_t offset, const uint8_t *bytes, size_t len)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "fixtures: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < (uint64_t)offset + len) {
        fprintf(stderr, "fixtures: patch %s: file too short\n", path);
        close(fd);
        return -1;
    }
    ssize_t w = pwrite(fd, bytes, len, (off_t)offset);
    close(fd);
    if (w < 0 || (size_t)w != len) {
        fprintf(stderr, "fixtures: pwrite %s failed\n", path);
        return -1;
    }
    return 0;
}

/* See fixtures.h. */
int fixtures_file_patch_be32(const char *path, size_t offset, uint32_t value)
{
    uint8_t b[4];
    fixtures_put_be32(b, value);
    return fixtures_file_patch(path, offset, b, sizeof b);
}

/* --------------------------------------------------------- synthetic data */

/* Seven-segment masks, bit 0..6 = segments a (top), b (upper right),
 * c (lower right), d (bottom), e (lower left), f (upper left), g (middle). */
static const uint8_t fixtures_segments[10] = {
    0x3F, 0x06, 0x5B, 0x4F, 0x66, 0x6D, 0x7D, 0x07, 0x7F, 0x6F,
};

/* Segment endpoints in units of the half-width / half-height of the glyph. */
static const float fixtures_seg_ends[7][4] = {
    {-1, -1, 1, -1}, /* a */
    {1, -1, 1, 0},   /* b */
    {1, 0, 1, 1},    /* c */
    {-1, 1, 1, 1},   /* d */
    {-1, 0, -1, 1},  /* e */
    {-1, -1, -1, 0}, /* f */
    {-1, 0, 1, 0},   /* g */
};

static float fixtures_seg_dist(float px, float py, float x0, float y0, float x1, float y1)
{
    float dx = x1 - x0, dy = y1 - y0;
    float l2 = dx * dx + dy * dy;
    float t = l2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / l2 : 0;
    if (t < 0)
        t = 0;
    if (t > 1)
        t = 1;
    float ex = x0 + t * dx - px, ey = y0 + t * dy - py;
    return sqrtf(ex * ex + ey * ey);
}

static void fixtures_synth_one(uint8_t *img, uint8_t *label, uint64_t seed, size_t i)
{
    rng r;
    rng_seed(&r, rng_splitmix64(seed) ^ rng_splitmix64((uint64_t)i * 0x9e3779b97f4a7c15ULL + 1));
    int c = (int)rng_below(&r, 10);
    float hw = 5.0f + 1.5f * rng_uniform(&r);        /* half width 5..6.5 */
    float hh = 8.0f + 1.5f * rng_uniform(&r);        /* half height 8..9.5 */
    float cx = 14.0f + (float)((int)rng_below(&r, 5) - 2);
    float cy = 14.0f + (float)((int)rng_below(&r, 5) - 2);
    float slant = 0.3f * (rng_uniform(&r) - 0.5f);   /* -0.15..0.15 */
    float radius = 0.8f + 0.8f * rng_uniform(&r);    /* half stroke width */
    float bright = 170.0f + 85.0f * rng_uniform(&r);

    float seg[7][4];
    int nseg = 0;
    for (int s = 0; s < 7; s++) {
        if (!(fixtures_segments[c] >> s & 1))
            continue;
        for (int e = 0; e < 2; e++) {
            float u = fixtures_seg_ends[s][2 * e] * hw;
            float v = fixtures_seg_ends[s][2 * e + 1] * hh;
            seg[nseg][2 * e] = cx + u - slant * v;
            seg[nseg][2 * e + 1] = cy + v;
        }
        nseg++;
    }
    for (int y = 0; y < FIXTURES_SIDE; y++) {
        for (int x = 0; x < FIXTURES_SIDE; x++) {
            float px = (float)x + 0.5f, py = (float)y + 0.5f, d = 1e9f;
            for (int s = 0; s < nseg; s++) {
                float ds = fixtures_seg_dist(px, py, seg[s][0], seg[s][1], seg[s][2], seg[s][3]);
                if (ds < d)
                    d = ds;
            }
            float cover = radius + 0.5f - d; /* antialiased edge */
            if (cover < 0)
                cover = 0;
            if (cover > 1)
                cover = 1;
            float v = bright * cover;
            if (rng_below(&r, 100) < 8)
                v += (float)rng_below(&r, 64);
            if (v > 255)
                v = 255;
            img[y * FIXTURES_SIDE + x] = (uint8_t)(v + 0.5f > 255 ? 255 : v + 0.5f);
        }
    }
    *label = (uint8_t)c;
}

/* See fixtures.h. */
int fixtures_synth_digits(size_t n, uint64_t seed, uint8_t *pixels, uint8_t *labels)
{
    if (n > 0 && (!pixels || !labels))
        return -1;
    for (size_t i = 0; i < n; i++)
        fixtures_synth_one(pixels + i * FIXTURES_SIDE * FIXTURES_SIDE, labels + i, seed, i);
    return 0;
}

/* See fixtures.h. */
int fixtures_synth_dataset(dataset *ds, size_t n, uint64_t seed)
{
    if (n == 0 || n > SIZE_MAX / (FIXTURES_SIDE * FIXTURES_SIDE))
        return -1;
    uint8_t *px = malloc(n * FIXTURES_SIDE * FIXTURES_SIDE), *lb = malloc(n);
    int rc = -1;
    char err[256];
    if (px && lb && fixtures_synth_digits(n, seed, px, lb) == 0) {
        rc = dataset_from_memory(ds, px, lb, n, FIXTURES_SIDE, FIXTURES_SIDE, DATASET_MNIST_MEAN,
                                 DATASET_MNIST_STD, err, sizeof err);
        if (rc < 0)
            fprintf(stderr, "fixtures: %s\n", err);
    }
    free(px);
    free(lb);
    return rc;
}

/* See fixtures.h. */
int fixtures_synth_write(const char *dir, const char *stem, size_t n, uint64_t seed, int gzip,
                         char *img_path_out, char *lbl_path_out, size_t pathlen)
{
    if (n == 0 || n > UINT32_MAX || n > SIZE_MAX / (FIXTURES_SIDE * FIXTURES_SIDE))
        return -1;
    uint8_t *px = malloc(n * FIXTURES_SIDE * FIXTURES_SIDE), *lb = malloc(n);
    int rc = -1;
    if (px && lb && fixtures_synth_digits(n, seed, px, lb) == 0)
        rc = fixtures_write_idx_pair(dir, stem, px, lb, n, gzip, img_path_out, lbl_path_out,
                                     pathlen);
    free(px);
    free(lb);
    return rc;
}
