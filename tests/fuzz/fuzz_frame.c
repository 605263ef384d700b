/* fuzz_frame.c - libFuzzer target: the incremental frame decoder
 * (proto_decoder_*, proto/frame.c) on a byte stream cut into fuzzed pieces.
 *
 * Input layout:
 *   byte 0        the decoder's maximum frame: 12 + 16 * byte (12 .. 4092)
 *   byte 1        bits 0-2: k, the number of split bytes that follow (0-7);
 *                 bit 6: a second maximum follows; bit 7: the decoder's
 *                 allocator always fails
 *   [byte]        with bit 6: a second maximum, 12 + 16 * byte; the decoder
 *                 starts with it and switches between the two after every
 *                 frame (proto_decoder_set_max, as a server that lowers the
 *                 limit before HELLO and raises it after)
 *   k bytes       piece lengths, used in turn until the stream ends
 *                 (0 = the whole rest; k = 0: the stream in one piece)
 *   the rest      the byte stream
 *
 * Every piece is copied so that it ends right before an unreadable guard
 * page (mapped once), so a read past what was fed faults at once, without a
 * heap allocation per piece (byte-at-a-time streams would be slow).
 * Checked, besides the sanitizers:
 *  - the decoder agrees with the one-shot parser (proto_frame_parse) run over
 *    the whole stream: the same frames, at the same offsets, with the same
 *    payload bytes, then the same error at the same frame, or "need more"
 *    at the same place when the stream ends mid-frame;
 *  - consumed counts stay within what was fed, "need more" consumes it all;
 *  - an error is sticky (same code, nothing consumed), and
 *    proto_decoder_header() is known exactly when the magic was read;
 *  - proto_decoder_set_max is refused in the middle of a frame and after an
 *    error;
 *  - proto_decoder_idle() at the end says whether the stream ended between
 *    frames; the payload buffer never exceeds the maximum payload;
 *  - every frame goes to its type's message decoder, and what decodes must
 *    re-encode to the same bytes (fuzz_msg_check).
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

/* Room for the largest input (run.sh's -max_len is far smaller), then a
 * PROT_NONE page. */
#define GUARD_ROOM (1u << 20)
static uint8_t *guard_end; /* first byte of the guard page */

/* Copy len bytes so that they end at the guard page; return where. */
static uint8_t *guard_put(const uint8_t *src, size_t len)
{
    FUZZ_ASSERT(len <= GUARD_ROOM, "piece of %zu bytes", len);
    uint8_t *p = guard_end - len;
    if (len)
        memcpy(p, src, len);
    return p;
}

static void *fail_malloc(size_t n)
{
    (void)n;
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_msg_table_check();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *m = mmap(NULL, GUARD_ROOM + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + GUARD_ROOM, page, PROT_NONE) != 0) {
        perror("fuzz_frame: guard page");
        abort();
    }
    guard_end = m + GUARD_ROOM;
    return 0;
}

/* What proto_decoder_header() must say after error rc on the frame that
 * starts at s (the stream has at least the bytes the decoder had seen). */
static void check_error_header(const proto_decoder *d, int rc, const uint8_t *s, size_t avail)
{
    const proto_header *h = proto_decoder_header(d);
    int prefix_error = avail >= PROTO_PREFIX_SIZE &&
                       (proto_get_be32(s) < PROTO_HEADER_SIZE || proto_get_be32(s) > d->max_frame);
    int known = !prefix_error && rc != PROTO_ERR_MAGIC;
    FUZZ_ASSERT((h != NULL) == known, "after error %d (%s) the header is %s", rc,
                proto_strerror(rc), h ? "known" : "unknown");
    if (h) {
        FUZZ_ASSERT(avail >= PROTO_FRAME_OVERHEAD, "header known with %zu bytes", avail);
        FUZZ_ASSERT(h->request_id == proto_get_be32(s + 12) && h->type == s[10] &&
                        h->flags == s[11] && h->version == proto_get_be16(s + 8) &&
                        h->length == proto_get_be32(s),
                    "the failed frame's header differs from its bytes");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_a = PROTO_HEADER_SIZE + 16 * (size_t)data[0];
    size_t nsplit = data[1] & 7u;
    int two_max = (data[1] & 0x40u) != 0;
    int fail_alloc = (data[1] & 0x80u) != 0;
    size_t skip = 2 + (size_t)two_max + nsplit;
    if (size < skip)
        return 0;
    size_t max_b = two_max ? PROTO_HEADER_SIZE + 16 * (size_t)data[2] : max_a;
    size_t max_frame = max_b; /* the decoder's maximum for the current frame */
    size_t max_cap = (max_a > max_b ? max_a : max_b) - PROTO_HEADER_SIZE;
    const uint8_t *splits = data + 2 + two_max;
    const uint8_t *s = data + skip;
    size_t n = size - skip;

    proto_decoder d;
    FUZZ_ASSERT(proto_decoder_init(&d, max_frame) == 0, "init with max %zu", max_frame);
    if (fail_alloc)
        d.malloc_fn = fail_malloc;

    size_t pos = 0;   /* stream bytes fed so far (whole pieces) */
    size_t opos = 0;  /* where the one-shot parser stands: the next frame's start */
    size_t ki = 0;
    int err = 0;
    while (pos < n && !err) {
        size_t want = nsplit ? splits[ki++ % nsplit] : 0;
        if (want == 0 || want > n - pos)
            want = n - pos;
        uint8_t *piece = guard_put(s + pos, want);

        size_t off = 0;
        while (off < want) {
            size_t used = (size_t)-1;
            proto_frame fr;
            int rc = proto_decoder_feed(&d, piece + off, want - off, &used, &fr);
            FUZZ_ASSERT(used <= want - off, "consumed %zu of %zu", used, want - off);
            off += used;
            FUZZ_ASSERT(d.cap <= max_cap, "payload buffer of %zu bytes, largest payload %zu",
                        d.cap, max_cap);
            if (rc == 0) {
                FUZZ_ASSERT(off == want, "need more, but %zu of %zu bytes left", want - off,
                            want);
                FUZZ_ASSERT(!proto_decoder_idle(&d), "need more, but idle");
                FUZZ_ASSERT(proto_decoder_set_max(&d, max_frame) == PROTO_ERR_INVALID,
                            "maximum changed in the middle of a frame");
                break;
            }
            proto_frame of;
            int orc = proto_frame_parse(s + opos, n - opos, max_frame, &of);
            if (rc < 0) {
                if (rc == PROTO_ERR_NOMEM && fail_alloc) {
                    /* The one-shot parser allocates nothing: it sees a whole frame. */
                    FUZZ_ASSERT(orc >= 0, "NOMEM where the parser says %d", orc);
                    FUZZ_ASSERT(proto_decoder_header(&d) != NULL, "NOMEM without a header");
                } else {
                    FUZZ_ASSERT(orc == rc,
                                "decoder error %d (%s) at stream offset %zu, one-shot parser %d",
                                rc, proto_strerror(rc), opos, orc);
                    check_error_header(&d, rc, s + opos, n - opos);
                }
                size_t again = 1;
                proto_frame fr2;
                int rc2 = proto_decoder_feed(&d, piece + off, want - off, &again, &fr2);
                FUZZ_ASSERT(rc2 == rc && again == 0,
                            "error not sticky: %d then %d, consumed %zu", rc, rc2, again);
                FUZZ_ASSERT(!proto_decoder_idle(&d), "idle after an error");
                FUZZ_ASSERT(proto_decoder_set_max(&d, max_a) == PROTO_ERR_INVALID,
                            "maximum changed after an error");
                err = rc;
                break;
            }
            FUZZ_ASSERT(rc == 1, "feed returned %d", rc);
            FUZZ_ASSERT(orc > 0, "decoder gave a frame at offset %zu, one-shot parser %d (%s)",
                        opos, orc, proto_strerror(orc));
            FUZZ_ASSERT(opos + (size_t)orc == pos + off,
                        "frame at offset %zu ends at %zu for the decoder, %zu for the parser",
                        opos, pos + off, opos + (size_t)orc);
            FUZZ_ASSERT(memcmp(&fr.hdr, &of.hdr, sizeof fr.hdr) == 0,
                        "headers differ at offset %zu", opos);
            FUZZ_ASSERT(fr.payload_len == of.payload_len &&
                            fr.payload_len == fr.hdr.length - PROTO_HEADER_SIZE &&
                            (fr.payload_len == 0) == (fr.payload == NULL),
                        "payload of %zu bytes (pointer %p), header says %u", fr.payload_len,
                        (const void *)fr.payload, (unsigned)fr.hdr.length);
            FUZZ_ASSERT(fr.payload_len == 0 ||
                            memcmp(fr.payload, of.payload, fr.payload_len) == 0,
                        "payload bytes differ at offset %zu", opos);
            FUZZ_ASSERT(proto_decoder_idle(&d), "not idle right after a frame");
            opos += (size_t)orc;
            fuzz_msg_check(&fr, fr.hdr.type);
            if (two_max) {
                max_frame = max_frame == max_b ? max_a : max_b;
                FUZZ_ASSERT(proto_decoder_set_max(&d, max_frame) == 0,
                            "maximum %zu refused between frames", max_frame);
            }
        }
        pos += want;
    }

    if (!err) {
        proto_frame of;
        int orc = proto_frame_parse(s + opos, n - opos, max_frame, &of);
        FUZZ_ASSERT(proto_decoder_idle(&d) == (opos == n),
                    "idle %d at the end, the last frame ends at %zu of %zu",
                    proto_decoder_idle(&d), opos, n);
        FUZZ_ASSERT(opos == n || orc == 0,
                    "stream ended mid-frame for the decoder, the parser says %d at %zu", orc,
                    opos);
    }
    proto_decoder_free(&d);
    return 0;
}
