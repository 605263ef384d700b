/* fuzz_idx.c - libFuzzer target: the IDX reader (common/idx.c), from memory
 * and through its file loader, plain and gzip.
 *
 * Input layout:
 *   byte 0     mode: bit 0 clear: the file is the data as it is (so the
 *              fuzzer also writes gzip headers, members and trailers itself);
 *              bit 0 set: the file is the data gzip-compressed here, in one
 *              member, or (bit 1 also set) in two members cut at byte 1
 *   byte 1     where the two members are cut: data length * byte / 256
 *   the rest   the data
 *
 * The data goes to idx_images_parse and idx_labels_parse (the in-memory
 * entry points; libFuzzer's input is an exact heap copy, so over-reads are
 * ASan reports), and the file to idx_images_load and idx_labels_load, which
 * only take a path: the file is a memfd, written once per input and opened
 * through /proc/self/fd/N, so nothing touches a disk.  Checked, besides the
 * sanitizers: the loader and the in-memory parser agree (both fail, or both
 * give the same dimensions and bytes) whenever the file decompresses to the
 * data, i.e. for compressed data and for plain data that does not start with
 * the gzip magic; every failure leaves a NUL-terminated message starting
 * with the name it was given, and an empty result.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "idx.h"

static int mfd = -1;
static char mpath[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mfd = memfd_create("fuzz_idx", MFD_CLOEXEC);
    if (mfd < 0) {
        perror("fuzz_idx: memfd_create");
        abort();
    }
    snprintf(mpath, sizeof mpath, "/proc/self/fd/%d", mfd);
    return 0;
}

static void file_set(const uint8_t *buf, size_t len)
{
    FUZZ_ASSERT(ftruncate(mfd, 0) == 0, "ftruncate: %s", strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = pwrite(mfd, buf + off, len - off, (off_t)off);
        FUZZ_ASSERT(w > 0, "pwrite: %s", strerror(errno));
        off += (size_t)w;
    }
}

static void check_err(int rc, const char *err, const char *name, const void *out, size_t outlen)
{
    if (rc == 0)
        return;
    FUZZ_ASSERT(rc == -1, "returned %d", rc);
    FUZZ_ASSERT(memchr(err, 0, 256) != NULL, "message not NUL-terminated");
    FUZZ_ASSERT(strncmp(err, name, strlen(name)) == 0 && err[strlen(name)] == ':',
                "message does not start with \"%s:\": %s", name, err);
    static const uint8_t zero[64];
    FUZZ_ASSERT(outlen <= sizeof zero && memcmp(out, zero, outlen) == 0,
                "result not empty after a failure");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int mode = data[0];
    size_t cut_at = data[1];
    const uint8_t *d = data + 2;
    size_t n = size - 2;

    /* The file. */
    uint8_t *file = NULL;
    size_t flen = 0;
    int same = 0; /* the file decompresses to d */
    if (mode & 1) {
        size_t cut = (mode & 2) ? n * cut_at / 256 : n;
        uint8_t *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        FUZZ_ASSERT(fuzz_gzip(d, cut, 1, &a, &al) == 0, "gzip of %zu bytes", cut);
        if (cut < n)
            FUZZ_ASSERT(fuzz_gzip(d + cut, n - cut, 1, &b, &bl) == 0, "gzip of %zu bytes",
                        n - cut);
        file = malloc(al + bl);
        FUZZ_ASSERT(file != NULL, "out of memory");
        memcpy(file, a, al);
        if (bl)
            memcpy(file + al, b, bl);
        flen = al + bl;
        free(a);
        free(b);
        same = 1;
    } else {
        file = malloc(n ? n : 1);
        FUZZ_ASSERT(file != NULL, "out of memory");
        if (n)
            memcpy(file, d, n);
        flen = n;
        same = !(n >= 2 && d[0] == 0x1f && d[1] == 0x8b);
    }
    file_set(file, flen);
    free(file);

    char err[256], lerr[256];
    idx_images im, lim;
    int rc = idx_images_parse(d, n, "mem", &im, err, sizeof err);
    check_err(rc, err, "mem", &im, sizeof im);
    int lrc = idx_images_load(mpath, &lim, lerr, sizeof lerr);
    check_err(lrc, lerr, mpath, &lim, sizeof lim);
    if (same) {
        FUZZ_ASSERT(rc == lrc, "images: in memory %d (%s), from the file %d (%s)", rc,
                    rc ? err : "ok", lrc, lrc ? lerr : "ok");
        if (rc == 0) {
            FUZZ_ASSERT(im.n == lim.n && im.rows == lim.rows && im.cols == lim.cols,
                        "images: %ux%ux%u in memory, %ux%ux%u from the file", im.n, im.rows,
                        im.cols, lim.n, lim.rows, lim.cols);
            FUZZ_ASSERT(memcmp(im.pixels, lim.pixels, (size_t)im.n * im.rows * im.cols) == 0,
                        "images: pixels differ");
        }
    }
    if (rc == 0)
        FUZZ_ASSERT(n == 16 + (size_t)im.n * im.rows * im.cols, "images: %zu bytes for %ux%ux%u",
                    n, im.n, im.rows, im.cols);
    idx_images_free(&im);
    idx_images_free(&lim);

    idx_labels lb, llb;
    rc = idx_labels_parse(d, n, "mem", &lb, err, sizeof err);
    check_err(rc, err, "mem", &lb, sizeof lb);
    lrc = idx_labels_load(mpath, &llb, lerr, sizeof lerr);
    check_err(lrc, lerr, mpath, &llb, sizeof llb);
    if (same) {
        FUZZ_ASSERT(rc == lrc, "labels: in memory %d (%s), from the file %d (%s)", rc,
                    rc ? err : "ok", lrc, lrc ? lerr : "ok");
        if (rc == 0)
            FUZZ_ASSERT(lb.n == llb.n && memcmp(lb.labels, llb.labels, lb.n) == 0,
                        "labels: %u in memory, %u from the file, or different bytes", lb.n,
                        llb.n);
    }
    if (rc == 0)
        FUZZ_ASSERT(n == 8 + (size_t)lb.n, "labels: %zu bytes for %u", n, lb.n);
    idx_labels_free(&lb);
    idx_labels_free(&llb);
    return 0;
}
