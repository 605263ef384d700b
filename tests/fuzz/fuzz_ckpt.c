/* fuzz_ckpt.c - libFuzzer target: psd's checkpoint decoder (psd_ckpt_decode,
 * psd/ckpt.c; pure, no I/O).
 *
 * Input layout:
 *   byte 0     bit 0 clear: the last 4 bytes of the checkpoint are replaced
 *              by the right CRC-32 before decoding, so that mutations reach
 *              the fields behind the checksum; bit 0 set: taken as they are
 *   the rest   the checkpoint file (copied into a heap buffer of exactly its
 *              size: over-reads are ASan reports)
 *
 * Checked, besides the sanitizers: a failure leaves a NUL-terminated message
 * and nothing to free in *out; a success re-encodes (psd_ckpt_encode) to exactly the
 * input when the input is in the current format (PSD_CKPT_FORMAT), and in
 * any readable format decodes again to the same contents (header fields,
 * worker table, and the weight and momentum bits); psd_ckpt_match of a
 * checkpoint with itself is 0.
 */
#include <string.h>
#include <zlib.h>

#include "ckpt.h"
#include "fuzz.h"

/* Two decoded checkpoints hold the same contents. */
static void same_ckpt(const psd_ckpt *a, const psd_ckpt *b)
{
    psd_ckpt ha = *a, hb = *b;
    ha.w = hb.w = ha.mom = hb.mom = NULL;
    ha.workers = hb.workers = NULL;
    FUZZ_ASSERT(memcmp(&ha, &hb, sizeof ha) == 0, "header fields differ after re-encoding");
    size_t n = (size_t)(a->hi - a->lo);
    FUZZ_ASSERT(memcmp(a->w, b->w, n * sizeof(float)) == 0 &&
                    memcmp(a->mom, b->mom, n * sizeof(float)) == 0,
                "weights or momentum differ after re-encoding");
    FUZZ_ASSERT(a->nworkers == 0 ||
                    memcmp(a->workers, b->workers, a->nworkers * sizeof *a->workers) == 0,
                "worker table differs after re-encoding");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_crc = !(data[0] & 1);
    size_t len = size - 1;
    uint8_t *buf = malloc(len ? len : 1);
    FUZZ_ASSERT(buf != NULL, "out of memory");
    if (len)
        memcpy(buf, data + 1, len);
    if (fix_crc && len >= 4) {
        uLong crc = crc32(0L, buf, (uInt)(len - 4));
        proto_put_be32(buf + len - 4, (uint32_t)crc);
    }

    psd_ckpt c;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = psd_ckpt_decode(buf, len, &c, err, sizeof err);
    if (rc != 0) {
        FUZZ_ASSERT(rc == -1, "psd_ckpt_decode returned %d", rc);
        FUZZ_ASSERT(memchr(err, 0, sizeof err) != NULL && err[0] != 0,
                    "no NUL-terminated message");
        /* ckpt.h: "then *out holds nothing to free". */
        FUZZ_ASSERT(!c.w && !c.mom && !c.workers, "allocations left in *out after a failure");
        free(buf);
        return 0;
    }
    FUZZ_ASSERT(c.lo < c.hi && c.hi <= c.nparams && c.w && c.mom &&
                    (c.nworkers == 0 || c.workers),
                "decoded [%llu, %llu) of %llu", (unsigned long long)c.lo,
                (unsigned long long)c.hi, (unsigned long long)c.nparams);
    FUZZ_ASSERT(psd_ckpt_match(&c, &c, err, sizeof err) == 0, "does not match itself: %s", err);

    size_t need = psd_ckpt_size(&c), elen = 0;
    FUZZ_ASSERT(need > 0, "a decoded checkpoint has no encoded size");
    uint8_t *enc = malloc(need);
    FUZZ_ASSERT(enc != NULL, "out of memory");
    FUZZ_ASSERT(psd_ckpt_encode(&c, enc, need, &elen, err, sizeof err) == 0 && elen == need,
                "re-encoding: %s", err);
    FUZZ_ASSERT(psd_ckpt_encode(&c, enc, need - 1, &elen, err, sizeof err) != 0,
                "encoded into one byte less than its size");
    if (proto_get_be32(buf + 8) == PSD_CKPT_FORMAT) {
        FUZZ_ASSERT(need == len, "re-encoded into %zu bytes, the input has %zu", need, len);
        if (memcmp(enc, buf, len) != 0)
            for (size_t i = 0; i < len; i++)
                FUZZ_ASSERT(enc[i] == buf[i], "encode(decode(x)) differs at byte %zu of %zu",
                            i, len);
    }
    psd_ckpt c2;
    FUZZ_ASSERT(psd_ckpt_decode(enc, need, &c2, err, sizeof err) == 0,
                "decoding the re-encoded checkpoint: %s", err);
    same_ckpt(&c, &c2);
    psd_ckpt_free(&c2);
    psd_ckpt_free(&c);
    free(enc);
    free(buf);
    return 0;
}
