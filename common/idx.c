/* idx.c - reader for MNIST-style IDX files, plain or gzip-compressed.
 *
 * An IDX file is a 4-byte magic (0x00 0x00 <type> <ndims>), ndims big-endian
 * uint32 dimensions, then the data.  We accept type 0x08 (uint8) only, with 3
 * dimensions for images (magic 0x00000803 = 2051) and 1 for labels
 * (0x00000801 = 2049).
 *
 * Compression is decided by the content, not the name: a file starting with
 * the gzip magic 1f 8b is inflated (several concatenated gzip members are
 * allowed, as gzip(1) allows), anything else is read as plain IDX.  So a plain
 * file called foo.gz loads, and so does a gzip file without the suffix.
 *
 * Order of checks in the loaders, so that a hostile header never makes us
 * allocate what the file cannot back: header fields against the limits, then
 * (plain regular files) the promised size against the file size, and only then
 * the allocation.  For gzip and other unsized inputs the buffer grows
 * geometrically as data actually arrives, capped at what the header promises,
 * so memory stays within twice the data really present.
 */
#include "idx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum idx_kind {
    IDX_KIND_IMAGES,
    IDX_KIND_LABELS,
};

#define IDX_HDR_MAX 16               /* 4-byte magic + 3 dimensions */
#define IDX_TYPE_UBYTE 0x08u
#define IDX_GROW_START (1u << 20)    /* first buffer size for unsized inputs */

typedef struct idx_hdr {
    uint32_t dim[3];   /* images: n, rows, cols; labels: n */
    size_t hdr_len;    /* bytes of header: 16 or 8 */
    uint64_t payload;  /* bytes of data the header promises */
} idx_hdr;

static const char *idx_kind_data(enum idx_kind kind)
{
    return kind == IDX_KIND_IMAGES ? "pixels" : "labels";
}

static unsigned idx_kind_ndims(enum idx_kind kind)
{
    return kind == IDX_KIND_IMAGES ? 3u : 1u;
}

/* "<name>: <problem>" into err (which may be NULL or tiny). */
__attribute__((format(printf, 4, 5)))
static void idx_err(char *err, size_t errlen, const char *name, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    int k = snprintf(err, errlen, "%s: ", name ? name : "(null)");
    if (k < 0) {
        err[0] = '\0';
        return;
    }
    if ((size_t)k >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
}

/* Thread-safe strerror: the loaders may run on several threads at once. */
static const char *idx_strerror(int e, char *buf, size_t len)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(e, buf, len); /* GNU variant: returns the message */
#else
    return strerror_r(e, buf, len) == 0 ? buf : "unknown error";
#endif
}

static uint32_t idx_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Parse and check the header at buf[0..len).  len may be shorter than the
 * header (a truncated file): that is an error here, since callers always pass
 * everything they have.  Fills h; returns 0 or -1 with a message. */
static int idx_hdr_parse(const uint8_t *buf, size_t len, enum idx_kind kind,
                         const char *name, idx_hdr *h, char *err, size_t errlen)
{
    unsigned want_ndims = idx_kind_ndims(kind);
    uint32_t want_magic = kind == IDX_KIND_IMAGES ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
    const char *what = kind == IDX_KIND_IMAGES ? "images" : "labels";

    if (len == 0) {
        idx_err(err, errlen, name, "empty file");
        return -1;
    }
    if (len < 4) {
        idx_err(err, errlen, name, "truncated header: %zu bytes, need 4 for the magic", len);
        return -1;
    }
    uint32_t magic = idx_be32(buf);
    if (buf[0] == 0x1f && buf[1] == 0x8b) {
        idx_err(err, errlen, name,
                "bad magic 0x%08x: gzip-compressed data where decompressed IDX %s were expected",
                (unsigned)magic, what);
        return -1;
    }
    if (buf[0] != 0 || buf[1] != 0) {
        idx_err(err, errlen, name,
                "bad magic 0x%08x (%u): not an IDX file, expected %u (IDX %s)",
                (unsigned)magic, (unsigned)magic, (unsigned)want_magic, what);
        return -1;
    }
    if (buf[2] != IDX_TYPE_UBYTE) {
        idx_err(err, errlen, name,
                "bad magic 0x%08x: data type 0x%02x, only 0x08 (unsigned byte) is supported",
                (unsigned)magic, (unsigned)buf[2]);
        return -1;
    }
    if (buf[3] != want_ndims) {
        if (kind == IDX_KIND_IMAGES && buf[3] == 1)
            idx_err(err, errlen, name,
                    "bad magic %u: this is a label file, expected images (magic %u)",
                    (unsigned)magic, (unsigned)IDX_MAGIC_IMAGES);
        else if (kind == IDX_KIND_LABELS && buf[3] == 3)
            idx_err(err, errlen, name,
                    "bad magic %u: this is an image file, expected labels (magic %u)",
                    (unsigned)magic, (unsigned)IDX_MAGIC_LABELS);
        else
            idx_err(err, errlen, name,
                    "bad magic 0x%08x: %u dimensions, expected %u (IDX %s, magic %u)",
                    (unsigned)magic, (unsigned)buf[3], want_ndims, what,
                    (unsigned)want_magic);
        return -1;
    }

    size_t hdr_len = 4 + 4 * (size_t)want_ndims;
    if (len < hdr_len) {
        idx_err(err, errlen, name, "truncated header: %zu bytes, an IDX %s header has %zu",
                len, what, hdr_len);
        return -1;
    }
    for (unsigned i = 0; i < want_ndims; i++)
        h->dim[i] = idx_be32(buf + 4 + 4 * i);
    for (unsigned i = want_ndims; i < 3; i++)
        h->dim[i] = 1;

    static const char *const dim_names[3] = {"count", "rows", "cols"};
    for (unsigned i = 0; i < want_ndims; i++) {
        if (h->dim[i] == 0) {
            idx_err(err, errlen, name, "header dimension %u (%s) is zero", i, dim_names[i]);
            return -1;
        }
    }
    if (h->dim[0] > IDX_MAX_ITEMS) {
        idx_err(err, errlen, name, "header promises %u %s, more than the limit of %u",
                (unsigned)h->dim[0], what, (unsigned)IDX_MAX_ITEMS);
        return -1;
    }
    if (kind == IDX_KIND_IMAGES && (h->dim[1] > IDX_MAX_SIDE || h->dim[2] > IDX_MAX_SIDE)) {
        idx_err(err, errlen, name, "image size %ux%u exceeds the limit of %ux%u",
                (unsigned)h->dim[1], (unsigned)h->dim[2], (unsigned)IDX_MAX_SIDE,
                (unsigned)IDX_MAX_SIDE);
        return -1;
    }
    /* With the limits above the product is < 2^51: no uint64_t overflow. */
    uint64_t payload = (uint64_t)h->dim[0] * h->dim[1] * h->dim[2];
    if (payload > (uint64_t)(SIZE_MAX - hdr_len)) {
        idx_err(err, errlen, name, "header promises %llu bytes of %s, too many for this machine",
                (unsigned long long)payload, idx_kind_data(kind));
        return -1;
    }
    h->hdr_len = hdr_len;
    h->payload = payload;
    return 0;
}

static void idx_err_truncated(char *err, size_t errlen, const char *name, enum idx_kind kind,
                              uint64_t promised, uint64_t have)
{
    idx_err(err, errlen, name, "truncated: header promises %llu bytes of %s, file has %llu",
            (unsigned long long)promised, idx_kind_data(kind), (unsigned long long)have);
}

static void idx_err_trailing(char *err, size_t errlen, const char *name, enum idx_kind kind,
                             uint64_t promised, uint64_t have)
{
    idx_err(err, errlen, name, "trailing data: header promises %llu bytes of %s, file has %llu",
            (unsigned long long)promised, idx_kind_data(kind), (unsigned long long)have);
}

/* In-memory parse shared by both kinds: header, exact length, then copy. */
static int idx_parse(const uint8_t *buf, size_t len, const char *name, enum idx_kind kind,
                     idx_hdr *h, uint8_t **data, char *err, size_t errlen)
{
    *data = NULL;
    if (!buf)
        len = 0;
    if (idx_hdr_parse(buf, len, kind, name, h, err, errlen) < 0)
        return -1;
    size_t have = len - h->hdr_len;
    if (have < h->payload) {
        idx_err_truncated(err, errlen, name, kind, h->payload, have);
        return -1;
    }
    if (have > h->payload) {
        idx_err_trailing(err, errlen, name, kind, h->payload, have);
        return -1;
    }
    uint8_t *p = malloc((size_t)h->payload);
    if (!p) {
        idx_err(err, errlen, name, "out of memory (%llu bytes of %s)",
                (unsigned long long)h->payload, idx_kind_data(kind));
        return -1;
    }
    memcpy(p, buf + h->hdr_len, (size_t)h->payload);
    *data = p;
    return 0;
}

/* Parse an in-memory image file; see idx.h.  On success out->pixels is
 * malloc'd and owned by out (idx_images_free). */
int idx_images_parse(const uint8_t *buf, size_t len, const char *name,
                     idx_images *out, char *err, size_t errlen)
{
    idx_hdr h;
    uint8_t *data;
    memset(out, 0, sizeof *out);
    if (idx_parse(buf, len, name, IDX_KIND_IMAGES, &h, &data, err, errlen) < 0)
        return -1;
    out->n = h.dim[0];
    out->rows = h.dim[1];
    out->cols = h.dim[2];
    out->pixels = data;
    return 0;
}

/* Parse an in-memory label file; see idx.h.  On success out->labels is
 * malloc'd and owned by out (idx_labels_free). */
int idx_labels_parse(const uint8_t *buf, size_t len, const char *name,
                     idx_labels *out, char *err, size_t errlen)
{
    idx_hdr h;
    uint8_t *data;
    memset(out, 0, sizeof *out);
    if (idx_parse(buf, len, name, IDX_KIND_LABELS, &h, &data, err, errlen) < 0)
        return -1;
    out->n = h.dim[0];
    out->labels = data;
    return 0;
}

/* ------------------------------------------------------------------ files */

/* A byte source over a file descriptor: plain bytes, or inflated gzip. */
typedef struct idx_src {
    int fd;
    const char *path;
    int gz;            /* inflating gzip members */
    int zs_live;       /* inflateInit2 done */
    int member_end;    /* the current gzip member is complete */
    int raw_eof;       /* read() returned 0 */
    z_stream zs;
    size_t in_pos, in_len;
    uint8_t in[1 << 16];
} idx_src;

/* Top up the raw buffer (keeping unread bytes).  Returns 0 or -1. */
static int idx_src_fill(idx_src *s, char *err, size_t errlen)
{
    if (s->raw_eof)
        return 0;
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
    }
    if (s->in_len == sizeof s->in)
        return 0;
    ssize_t r;
    do {
        r = read(s->fd, s->in + s->in_len, sizeof s->in - s->in_len);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        char eb[128];
        idx_err(err, errlen, s->path, "read error: %s", idx_strerror(errno, eb, sizeof eb));
        return -1;
    }
    if (r == 0)
        s->raw_eof = 1;
    s->in_len += (size_t)r;
    return 0;
}

/* Raw bytes buffered and not yet consumed. */
static size_t idx_src_avail(const idx_src *s)
{
    return s->in_len - s->in_pos;
}

/* Make at least `want` raw bytes available unless the file ends first. */
static int idx_src_fill_to(idx_src *s, size_t want, char *err, size_t errlen)
{
    while (idx_src_avail(s) < want && !s->raw_eof)
        if (idx_src_fill(s, err, errlen) < 0)
            return -1;
    return 0;
}

/* Open path and sniff the gzip magic.  Returns 0 or -1 with a message. */
static int idx_src_open(idx_src *s, const char *path, struct stat *st, char *err, size_t errlen)
{
    memset(s, 0, offsetof(idx_src, in));
    s->path = path;
    s->fd = -1;
    if (!path) {
        idx_err(err, errlen, path, "no path given");
        return -1;
    }
    do {
        s->fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (s->fd < 0 && errno == EINTR);
    if (s->fd < 0) {
        char eb[128];
        idx_err(err, errlen, path, "%s", idx_strerror(errno, eb, sizeof eb));
        return -1;
    }
    if (fstat(s->fd, st) < 0) {
        char eb[128];
        idx_err(err, errlen, path, "stat: %s", idx_strerror(errno, eb, sizeof eb));
        return -1;
    }
    if (S_ISDIR(st->st_mode)) {
        idx_err(err, errlen, path, "is a directory");
        return -1;
    }
    if (idx_src_fill_to(s, 2, err, errlen) < 0)
        return -1;
    if (idx_src_avail(s) == 0) {
        idx_err(err, errlen, path, "empty file");
        return -1;
    }
    if (idx_src_avail(s) >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
        s->gz = 1;
        /* 16 + MAX_WBITS: gzip wrapper only, with its CRC and length check. */
        if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) {
            idx_err(err, errlen, path, "cannot start gzip decompression: %s",
                    s->zs.msg ? s->zs.msg : "out of memory");
            return -1;
        }
        s->zs_live = 1;
    }
    return 0;
}

static void idx_src_close(idx_src *s)
{
    if (s->zs_live)
        inflateEnd(&s->zs);
    s->zs_live = 0;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* Read up to want bytes (after decompression) into dst; *got < want only at
 * the end of the data.  Returns 0, or -1 with a message (read error, corrupt
 * or truncated gzip, garbage after the gzip data). */
static int idx_src_read(idx_src *s, uint8_t *dst, size_t want, size_t *got,
                        char *err, size_t errlen)
{
    size_t n = 0;
    *got = 0;
    if (!s->gz) {
        while (n < want) {
            if (idx_src_avail(s) == 0) {
                if (s->raw_eof)
                    break;
                if (want - n >= sizeof s->in) {
                    /* Large reads go straight to the destination. */
                    ssize_t r;
                    do {
                        r = read(s->fd, dst + n, want - n);
                    } while (r < 0 && errno == EINTR);
                    if (r < 0) {
                        char eb[128];
                        idx_err(err, errlen, s->path, "read error: %s",
                                idx_strerror(errno, eb, sizeof eb));
                        return -1;
                    }
                    if (r == 0)
                        s->raw_eof = 1;
                    n += (size_t)r;
                    continue;
                }
                if (idx_src_fill(s, err, errlen) < 0)
                    return -1;
                continue;
            }
            size_t k = idx_src_avail(s);
            if (k > want - n)
                k = want - n;
            memcpy(dst + n, s->in + s->in_pos, k);
            s->in_pos += k;
            n += k;
        }
        *got = n;
        return 0;
    }

    while (n < want) {
        if (s->member_end) {
            /* Another gzip member, the clean end, or garbage. */
            if (idx_src_fill_to(s, 2, err, errlen) < 0)
                return -1;
            size_t avail = idx_src_avail(s);
            if (avail == 0)
                break;
            if (avail < 2 || s->in[s->in_pos] != 0x1f || s->in[s->in_pos + 1] != 0x8b) {
                idx_err(err, errlen, s->path, "trailing garbage after the gzip data");
                return -1;
            }
            if (inflateReset(&s->zs) != Z_OK) {
                idx_err(err, errlen, s->path, "corrupt gzip data (cannot reset the stream)");
                return -1;
            }
            s->member_end = 0;
        }
        if (idx_src_avail(s) == 0) {
            if (idx_src_fill(s, err, errlen) < 0)
                return -1;
            if (idx_src_avail(s) == 0) {
                idx_err(err, errlen, s->path, "truncated gzip data: the stream ends early");
                return -1;
            }
        }
        size_t out_room = want - n;
        if (out_room > UINT_MAX)
            out_room = UINT_MAX;
        size_t in_have = idx_src_avail(s);
        if (in_have > UINT_MAX)
            in_have = UINT_MAX;
        s->zs.next_in = s->in + s->in_pos;
        s->zs.avail_in = (uInt)in_have;
        s->zs.next_out = dst + n;
        s->zs.avail_out = (uInt)out_room;
        int zr = inflate(&s->zs, Z_NO_FLUSH);
        s->in_pos += in_have - s->zs.avail_in;
        n += out_room - s->zs.avail_out;
        switch (zr) {
        case Z_OK:
            break;
        case Z_STREAM_END:
            s->member_end = 1;
            break;
        case Z_BUF_ERROR:
            /* No progress: inflate consumed everything and wants more input,
             * which the next turn of the loop reads (or reports as truncated). */
            break;
        case Z_MEM_ERROR:
            idx_err(err, errlen, s->path, "out of memory while decompressing");
            return -1;
        case Z_NEED_DICT:
            idx_err(err, errlen, s->path, "corrupt gzip data (needs a preset dictionary)");
            return -1;
        default:
            idx_err(err, errlen, s->path, "corrupt gzip data (%s)",
                    s->zs.msg ? s->zs.msg : "unknown error");
            return -1;
        }
    }
    *got = n;
    return 0;
}

/* Load a whole IDX file of the given kind: header, size checks, payload. */
static int idx_load(const char *path, enum idx_kind kind, idx_hdr *h, uint8_t **data,
                    char *err, size_t errlen)
{
    idx_src *s = malloc(sizeof *s);
    uint8_t *buf = NULL;
    int rc = -1;
    struct stat st;

    *data = NULL;
    if (!s) {
        idx_err(err, errlen, path, "out of memory");
        return -1;
    }
    if (idx_src_open(s, path, &st, err, errlen) < 0)
        goto out;

    /* The header: exactly as many bytes as this kind's header has, so the
     * parser sees a short read as a truncated header. */
    uint8_t hdr[IDX_HDR_MAX];
    size_t hdr_want = 4 + 4 * (size_t)idx_kind_ndims(kind), got;
    if (idx_src_read(s, hdr, hdr_want, &got, err, errlen) < 0)
        goto out;
    if (got == 0 && s->gz) {
        idx_err(err, errlen, path, "empty file (the gzip data decompresses to nothing)");
        goto out;
    }
    if (idx_hdr_parse(hdr, got, kind, path, h, err, errlen) < 0)
        goto out;

    /* A plain regular file's size is known: check it before allocating. */
    if (!s->gz && S_ISREG(st.st_mode)) {
        uint64_t have = (uint64_t)st.st_size > h->hdr_len ? (uint64_t)st.st_size - h->hdr_len : 0;
        if (have < h->payload) {
            idx_err_truncated(err, errlen, path, kind, h->payload, have);
            goto out;
        }
        if (have > h->payload) {
            idx_err_trailing(err, errlen, path, kind, h->payload, have);
            goto out;
        }
    }

    /* The payload, grown as data arrives, never past what was promised. */
    size_t want = (size_t)h->payload, cap = 0, len = 0;
    while (len < want) {
        if (len == cap) {
            size_t ncap = cap == 0 ? IDX_GROW_START : cap * 2;
            if (ncap > want || ncap < cap)
                ncap = want;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                idx_err(err, errlen, path, "out of memory (%zu bytes of %s)", ncap,
                        idx_kind_data(kind));
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        if (idx_src_read(s, buf + len, cap - len, &got, err, errlen) < 0)
            goto out;
        len += got;
        if (len < cap)
            break; /* end of data */
    }
    if (len < want) {
        idx_err_truncated(err, errlen, path, kind, h->payload, len);
        goto out;
    }

    /* Nothing may follow; for gzip this also checks the stream's trailer. */
    uint8_t extra;
    if (idx_src_read(s, &extra, 1, &got, err, errlen) < 0)
        goto out;
    if (got != 0) {
        idx_err(err, errlen, path, "trailing data: header promises %llu bytes of %s, file has more",
                (unsigned long long)h->payload, idx_kind_data(kind));
        goto out;
    }
    *data = buf;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    idx_src_close(s);
    free(s);
    return rc;
}

/* Load an image file (plain or gzip); see idx.h.  On success out->pixels is
 * owned by out (idx_images_free); on failure out is zeroed. */
int idx_images_load(const char *path, idx_images *out, char *err, size_t errlen)
{
    idx_hdr h;
    uint8_t *data;
    memset(out, 0, sizeof *out);
    if (idx_load(path, IDX_KIND_IMAGES, &h, &data, err, errlen) < 0)
        return -1;
    out->n = h.dim[0];
    out->rows = h.dim[1];
    out->cols = h.dim[2];
    out->pixels = data;
    return 0;
}

/* Free the pixels and zero *im; safe on a zeroed struct or NULL. */
void idx_images_free(idx_images *im)
{
    if (!im)
        return;
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

/* Load a label file (plain or gzip); see idx.h.  On success out->labels is
 * owned by out (idx_labels_free); on failure out is zeroed. */
int idx_labels_load(const char *path, idx_labels *out, char *err, size_t errlen)
{
    idx_hdr h;
    uint8_t *data;
    memset(out, 0, sizeof *out);
    if (idx_load(path, IDX_KIND_LABELS, &h, &data, err, errlen) < 0)
        return -1;
    out->n = h.dim[0];
    out->labels = data;
    return 0;
}

/* Free the labels and zero *lb; safe on a zeroed struct or NULL. */
void idx_labels_free(idx_labels *lb)
{
    if (!lb)
        return;
    free(lb->labels);
    memset(lb, 0, sizeof *lb);
}
