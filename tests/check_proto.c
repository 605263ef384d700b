/* check_proto.c - the wire protocol: exact bytes of the header and of the
 * number formats, a round trip of every message, a stream of every message
 * type cut at every split point (and one byte at a time, and at every pair
 * of split points of a shorter stream), each kind of bad frame (oversized
 * length refused after the prefix alone and before any allocation, short
 * length, wrong magic, wrong version, unknown type, bad flags, a size the
 * type does not allow, truncation), message-specific bad payloads, encoder
 * argument checks, allocation failures, and reads that end at an unreadable
 * guard page.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proto.h"

/* ------------------------------------------------------------- helpers */

/* A mapping whose last `size` readable bytes end right before a PROT_NONE
 * page: any read past the end faults, with or without ASan. */
typedef struct guard_buf {
    uint8_t *base;
    size_t map_len, usable;
} guard_buf;

static void guard_init(guard_buf *g, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t usable = (size + page - 1) / page * page;
    if (usable == 0)
        usable = page;
    g->map_len = usable + page;
    void *p = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    g->base = p;
    g->usable = usable;
    ck_assert_int_eq(mprotect(g->base + usable, page, PROT_NONE), 0);
}

/* Copy n bytes so that they end at the guard page; return where they are. */
static uint8_t *guard_put(guard_buf *g, const uint8_t *src, size_t n)
{
    ck_assert_uint_le(n, g->usable);
    uint8_t *p = g->base + g->usable - n;
    if (n)
        memcpy(p, src, n);
    return p;
}

static void guard_free(guard_buf *g)
{
    munmap(g->base, g->map_len);
}

/* A frame struct over a payload, as a decoder would hand it out. */
static proto_frame frame_of(uint8_t type, uint8_t flags, uint32_t rid, const uint8_t *payload,
                            size_t plen)
{
    proto_frame f;
    memset(&f, 0, sizeof f);
    f.hdr.length = (uint32_t)(PROTO_HEADER_SIZE + plen);
    f.hdr.version = PROTO_VERSION;
    f.hdr.type = type;
    f.hdr.flags = flags;
    f.hdr.request_id = rid;
    f.payload = plen ? payload : NULL;
    f.payload_len = plen;
    return f;
}

/* Parse a whole encoded frame (must be exactly one). */
static proto_frame parse_one(const uint8_t *buf, size_t len)
{
    proto_frame f;
    ck_assert_int_eq(proto_frame_parse(buf, len, 0, &f), (int)len);
    return f;
}

/* Counting allocator for the decoder: fails the fail_at-th call (1-based),
 * 0 = never. */
static int alloc_calls, alloc_fail_at;

static void *counting_malloc(size_t n)
{
    alloc_calls++;
    if (alloc_fail_at && alloc_calls == alloc_fail_at)
        return NULL;
    return malloc(n);
}

/* ------------------------------------------------------ sample messages */

static const float w_vals[37] = {
    1.0f, -2.0f, 0.5f, 3.25f, -0.0f, 1e-30f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f,
    14.0f, 15.0f, 16.0f, 17.0f, 18.0f, 19.0f, 20.0f, 21.0f, 22.0f, 23.0f, 24.0f, 25.0f,
    26.0f, 27.0f, 28.0f, 29.0f, 30.0f, 31.0f, 32.0f, 33.0f, 34.0f, 35.0f, 36.0f, 1e30f};
static const float g_vals[13] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f,
                                 -0.8f, 0.9f, -1.0f, 1.1f, -1.2f, 1.3f};
static const char status_json[] = "{\"version\":42,\"workers\":[\"w1\",\"w2\"]}";

static proto_hello sample_hello(void)
{
    proto_hello m;
    memset(&m, 0, sizeof m);
    m.role = PROTO_ROLE_WORKER;
    m.auth_method = PROTO_AUTH_NONE;
    m.nparams = 431080;
    strcpy(m.node_id, "box-3.worker-0");
    strcpy(m.model, "lenet");
    return m;
}

static proto_welcome sample_welcome(void)
{
    proto_welcome m;
    memset(&m, 0, sizeof m);
    m.role = PROTO_ROLE_SHARD;
    m.nparams = 431080;
    m.lo = 215540;
    m.hi = 431080;
    m.param_version = 0x0102030405060708ull;
    m.last_seq = 77;
    strcpy(m.node_id, "shard-1");
    strcpy(m.model, "lenet");
    return m;
}

static proto_weights sample_weights(void)
{
    proto_weights m = {.version = 9, .lo = 100, .hi = 137, .values = w_vals};
    return m;
}

static proto_push sample_push(void)
{
    proto_push m = {.seq = 5, .base_version = 8, .step = 1234, .samples = 64,
                    .lo = 1000, .hi = 1013, .values = g_vals};
    return m;
}

static proto_report sample_report(void)
{
    proto_report m = {.step = 938, .samples = 60000, .elapsed_s = 12.5, .test_acc = 0.9047,
                      .test_loss = 0.2638};
    return m;
}

/* A stream with one frame of every type (WEIGHTS twice: with floats and not
 * modified); request ids 1, 2, ...  Returns the length; offs[i] is where
 * frame i starts (offs[n] = total). */
#define STREAM_MAX 4096
#define STREAM_FRAMES 14

static size_t build_stream(uint8_t *buf, size_t offs[STREAM_FRAMES + 1])
{
    size_t pos = 0, len = 0;
    int i = 0;
#define APPEND(call)                                          \
    do {                                                      \
        offs[i++] = pos;                                      \
        ck_assert_int_eq((call), 0);                          \
        pos += len;                                           \
    } while (0)
    proto_hello h = sample_hello();
    proto_welcome w = sample_welcome();
    proto_pull pl = {.min_version = 3, .lo = 100, .hi = 137};
    proto_weights wt = sample_weights();
    proto_weights nm = {.version = 9, .lo = 100, .hi = 137, .not_modified = 1};
    proto_push ps = sample_push();
    proto_ack ak = {.seq = 5, .version = 9, .status = PROTO_ACK_APPLIED};
    proto_status st = {status_json, sizeof status_json - 1};
    proto_report rp = sample_report();
    proto_ok ok = {.version = 9};
    proto_error er = {.code = PROTO_ERR_RANGE};
    strcpy(er.text, "range [0,5) is not this shard's");
    proto_done dn = {.step = 0x0102030405060708ull, .samples = 4500};
    APPEND(proto_hello_encode(&h, 1, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_welcome_encode(&w, 2, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_pull_encode(&pl, 3, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_weights_encode(&wt, 4, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_weights_encode(&nm, 5, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_push_encode(&ps, 6, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_ack_encode(&ak, 7, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_status_req_encode(8, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_status_encode(&st, 9, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_report_encode(&rp, 10, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_checkpoint_encode(11, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_ok_encode(&ok, 12, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_error_encode(&er, 13, buf + pos, STREAM_MAX - pos, &len));
    APPEND(proto_done_encode(&dn, 14, buf + pos, STREAM_MAX - pos, &len));
#undef APPEND
    ck_assert_int_eq(i, STREAM_FRAMES);
    offs[i] = pos;
    return pos;
}

/* Decode frame f with the decoder for its type and compare it with the
 * sample it was built from (build_stream's request id rid). */
static void check_sample(const proto_frame *f, uint32_t rid)
{
    ck_assert_uint_eq(f->hdr.request_id, rid);
    switch (rid) {
    case 1: {
        proto_hello m, e = sample_hello();
        ck_assert_int_eq(f->hdr.type, PROTO_MSG_HELLO);
        ck_assert_int_eq(proto_hello_decode(f, &m), 0);
        ck_assert_int_eq(m.role, e.role);
        ck_assert_int_eq(m.auth_method, 0);
        ck_assert_int_eq(m.auth_len, 0);
        ck_assert_ptr_null(m.auth);
        ck_assert(m.nparams == e.nparams);
        ck_assert_str_eq(m.node_id, e.node_id);
        ck_assert_str_eq(m.model, e.model);
        break;
    }
    case 2: {
        proto_welcome m, e = sample_welcome();
        ck_assert_int_eq(proto_welcome_decode(f, &m), 0);
        ck_assert_int_eq(m.role, PROTO_ROLE_SHARD);
        ck_assert(m.nparams == e.nparams && m.lo == e.lo && m.hi == e.hi);
        ck_assert(m.param_version == e.param_version && m.last_seq == e.last_seq);
        ck_assert_str_eq(m.node_id, e.node_id);
        ck_assert_str_eq(m.model, e.model);
        break;
    }
    case 3: {
        proto_pull m;
        ck_assert_int_eq(proto_pull_decode(f, &m), 0);
        ck_assert(m.min_version == 3 && m.lo == 100 && m.hi == 137);
        break;
    }
    case 4: {
        proto_weights m;
        float got[37];
        ck_assert_int_eq(proto_weights_decode(f, &m), 0);
        ck_assert(m.version == 9 && m.lo == 100 && m.hi == 137 && !m.not_modified);
        ck_assert_ptr_nonnull(m.raw);
        proto_floats_decode(got, m.raw, 37);
        ck_assert_mem_eq(got, w_vals, sizeof w_vals);
        break;
    }
    case 5: {
        proto_weights m;
        ck_assert_int_eq(f->hdr.flags, PROTO_FLAG_NOT_MODIFIED);
        ck_assert_int_eq(proto_weights_decode(f, &m), 0);
        ck_assert(m.version == 9 && m.lo == 100 && m.hi == 137 && m.not_modified);
        ck_assert_ptr_null(m.raw);
        break;
    }
    case 6: {
        proto_push m, e = sample_push();
        float got[13];
        ck_assert_int_eq(proto_push_decode(f, &m), 0);
        ck_assert(m.seq == e.seq && m.base_version == e.base_version && m.step == e.step);
        ck_assert(m.samples == e.samples && m.lo == e.lo && m.hi == e.hi);
        proto_floats_decode(got, m.raw, 13);
        ck_assert_mem_eq(got, g_vals, sizeof g_vals);
        break;
    }
    case 7: {
        proto_ack m;
        ck_assert_int_eq(proto_ack_decode(f, &m), 0);
        ck_assert(m.seq == 5 && m.version == 9 && m.status == PROTO_ACK_APPLIED);
        break;
    }
    case 8:
        ck_assert_int_eq(f->hdr.type, PROTO_MSG_STATUS_REQ);
        ck_assert_int_eq(proto_status_req_decode(f), 0);
        break;
    case 9: {
        proto_status m;
        ck_assert_int_eq(proto_status_decode(f, &m), 0);
        ck_assert_uint_eq(m.len, sizeof status_json - 1);
        ck_assert_mem_eq(m.json, status_json, m.len);
        break;
    }
    case 10: {
        proto_report m, e = sample_report();
        ck_assert_int_eq(proto_report_decode(f, &m), 0);
        ck_assert(m.step == e.step && m.samples == e.samples);
        ck_assert(m.elapsed_s == e.elapsed_s && m.test_acc == e.test_acc &&
                  m.test_loss == e.test_loss);
        break;
    }
    case 11:
        ck_assert_int_eq(f->hdr.type, PROTO_MSG_CHECKPOINT);
        ck_assert_int_eq(proto_checkpoint_decode(f), 0);
        break;
    case 12: {
        proto_ok m;
        ck_assert_int_eq(proto_ok_decode(f, &m), 0);
        ck_assert(m.version == 9);
        break;
    }
    case 13: {
        proto_error m;
        ck_assert_int_eq(proto_error_decode(f, &m), 0);
        ck_assert_int_eq(m.code, PROTO_ERR_RANGE);
        ck_assert_str_eq(m.text, "range [0,5) is not this shard's");
        break;
    }
    case 14: {
        proto_done m;
        ck_assert_int_eq(f->hdr.type, PROTO_MSG_DONE);
        ck_assert_int_eq(proto_done_decode(f, &m), 0);
        ck_assert(m.step == 0x0102030405060708ull);
        ck_assert(m.samples == 4500);
        break;
    }
    default:
        ck_abort_msg("unexpected request id %u", (unsigned)rid);
    }
}

/* The stream's frames as proto_frame_parse sees them, for byte-exact
 * comparison in the split tests (which avoid ck_assert in their inner
 * loops: each passing ck_assert costs Check a write). */
static proto_frame ref_frames[STREAM_FRAMES];

static void ref_init(const uint8_t *buf, const size_t *offs)
{
    for (int i = 0; i < STREAM_FRAMES; i++)
        ref_frames[i] = parse_one(buf + offs[i], offs[i + 1] - offs[i]);
}

/* 1 if f is the same frame as the reference (header and payload bytes). */
static int same_frame(const proto_frame *f, const proto_frame *r)
{
    return f->hdr.length == r->hdr.length && f->hdr.version == r->hdr.version &&
           f->hdr.type == r->hdr.type && f->hdr.flags == r->hdr.flags &&
           f->hdr.request_id == r->hdr.request_id && f->payload_len == r->payload_len &&
           (f->payload_len == 0 ? f->payload == NULL
                                : memcmp(f->payload, r->payload, f->payload_len) == 0);
}

/* Feed buf[0..len) to d as the pieces cut at cuts[0..ncuts) (increasing),
 * comparing each frame that comes out with ref_frames in order; returns
 * the number of frames, and fails the test on any mismatch. */
static int feed_pieces(proto_decoder *d, const uint8_t *buf, size_t len, const size_t *cuts,
                       int ncuts)
{
    int got = 0;
    size_t start = 0;
    for (int k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        const uint8_t *p = buf + start;
        size_t left = end - start;
        for (;;) {
            size_t used = 0;
            proto_frame f;
            int rc = proto_decoder_feed(d, p, left, &used, &f);
            if (rc < 0 || used > left || (rc == 0 && used != left) || (rc == 1 && used == 0))
                ck_abort_msg("cuts %zu/%zu: rc %d (%s), used %zu of %zu", cuts ? cuts[0] : 0,
                             ncuts > 1 ? cuts[1] : 0, rc, proto_strerror(rc), used, left);
            if (rc == 0)
                break;
            if (got >= STREAM_FRAMES || !same_frame(&f, &ref_frames[got]))
                ck_abort_msg("cuts %zu/%zu: frame %d differs", cuts ? cuts[0] : 0,
                             ncuts > 1 ? cuts[1] : 0, got);
            got++;
            p += used;
            left -= used;
            if (left == 0)
                break;
        }
        start = end;
    }
    return got;
}

/* ------------------------------------------------------- exact bytes */

START_TEST(test_header_bytes)
{
    uint8_t buf[64];
    size_t len = 0;
    proto_pull m = {.min_version = 5, .lo = 6, .hi = 7};
    ck_assert_int_eq(proto_pull_encode(&m, 0x01020304u, buf, sizeof buf, &len), 0);
    static const uint8_t want[40] = {
        0x00, 0x00, 0x00, 0x24,                         /* length 12 + 24 */
        0x50, 0x53, 0x44, 0x57,                         /* "PSDW" */
        0x00, 0x03,                                     /* version 3 */
        PROTO_MSG_PULL, 0x00,                           /* type, flags */
        0x01, 0x02, 0x03, 0x04,                         /* request id */
        0, 0, 0, 0, 0, 0, 0, 5,                         /* min_version */
        0, 0, 0, 0, 0, 0, 0, 6,                         /* lo */
        0, 0, 0, 0, 0, 0, 0, 7};                        /* hi */
    ck_assert_uint_eq(len, sizeof want);
    ck_assert_mem_eq(buf, want, sizeof want);
    ck_assert_int_eq(PROTO_MSG_PULL, 3);

    proto_header h;
    ck_assert_int_eq(proto_header_decode(buf, PROTO_MAX_FRAME, &h), 0);
    ck_assert_uint_eq(h.length, 36);
    ck_assert_uint_eq(h.version, PROTO_VERSION);
    ck_assert_uint_eq(h.type, PROTO_MSG_PULL);
    ck_assert_uint_eq(h.flags, 0);
    ck_assert_uint_eq(h.request_id, 0x01020304u);
}
END_TEST

/* A PULL that holds the initial weights (SEED): 4 more bytes, the CRC,
 * only with DELTA; every other combination of the flag and the size is
 * refused by the decoder. */
START_TEST(test_pull_seed)
{
    uint8_t buf[64];
    size_t len = 0;
    proto_pull m = {.min_version = 0, .lo = 6, .hi = 7, .encoding = PROTO_ENC_SPARSE,
                    .seed = 1, .seed_crc = 0xdeadbeefu};
    ck_assert_int_eq(proto_pull_encode(&m, 0x01020304u, buf, sizeof buf, &len), 0);
    static const uint8_t want[44] = {
        0x00, 0x00, 0x00, 0x28,                         /* length 12 + 28 */
        0x50, 0x53, 0x44, 0x57, 0x00, 0x03,             /* "PSDW", version 3 */
        PROTO_MSG_PULL, 0x0c,                           /* type, flags DELTA | SEED */
        0x01, 0x02, 0x03, 0x04,                         /* request id */
        0, 0, 0, 0, 0, 0, 0, 0,                         /* min_version */
        0, 0, 0, 0, 0, 0, 0, 6,                         /* lo */
        0, 0, 0, 0, 0, 0, 0, 7,                         /* hi */
        0xde, 0xad, 0xbe, 0xef};                        /* seed_crc */
    ck_assert_uint_eq(len, sizeof want);
    ck_assert_mem_eq(buf, want, sizeof want);
    proto_frame f;
    ck_assert_int_eq(proto_frame_parse(buf, len, 0, &f), (int)len);
    proto_pull d;
    memset(&d, 0x55, sizeof d);
    ck_assert_int_eq(proto_pull_decode(&f, &d), 0);
    ck_assert_uint_eq(d.seed, 1);
    ck_assert_uint_eq(d.seed_crc, 0xdeadbeefu);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(d.lo, 6);
    ck_assert_uint_eq(d.hi, 7);
    /* without the flag: seed 0, and 24 bytes as before */
    m.seed = 0;
    ck_assert_int_eq(proto_pull_encode(&m, 1, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_PULL_SIZE);
    ck_assert_int_eq(proto_frame_parse(buf, len, 0, &f), (int)len);
    ck_assert_int_eq(proto_pull_decode(&f, &d), 0);
    ck_assert_uint_eq(d.seed, 0);
    ck_assert_uint_eq(d.seed_crc, 0);
    /* the encoder: SEED only with a delta */
    m.seed = 1;
    m.encoding = PROTO_ENC_FP32;
    ck_assert_int_eq(proto_pull_encode(&m, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    m.encoding = PROTO_ENC_FP16;
    ck_assert_int_eq(proto_pull_encode(&m, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    /* the decoder, on frames made by hand */
    static const struct {
        uint8_t flags;
        size_t plen;
    } bad[] = {
        {PROTO_FLAG_SEED, PROTO_PULL_SIZE + 4},                       /* no DELTA */
        {PROTO_FLAG_SEED | PROTO_FLAG_FP16, PROTO_PULL_SIZE + 4},     /* fp16 */
        {PROTO_FLAG_SEED | PROTO_FLAG_DELTA, PROTO_PULL_SIZE},        /* no CRC */
        {PROTO_FLAG_SEED | PROTO_FLAG_DELTA, PROTO_PULL_SIZE + 1},
        {PROTO_FLAG_DELTA, PROTO_PULL_SIZE + 4},                      /* CRC without flag */
        {0, PROTO_PULL_SIZE + 4},
        {0, PROTO_PULL_SIZE + 2},
    };
    uint8_t payload[PROTO_PULL_SIZE + 4] = {0};
    payload[23] = 1; /* lo 0, hi 1 */
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        f = frame_of(PROTO_MSG_PULL, bad[k].flags, 1, payload, bad[k].plen);
        ck_assert_msg(proto_pull_decode(&f, &d) == PROTO_ERR_BAD_FRAME, "case %zu", k);
    }
    f = frame_of(PROTO_MSG_PULL, PROTO_FLAG_SEED | PROTO_FLAG_DELTA, 1, payload,
                 PROTO_PULL_SIZE + 4);
    ck_assert_int_eq(proto_pull_decode(&f, &d), 0);
}
END_TEST

/* Floats little-endian, bit-exact for the special values. */
START_TEST(test_float_bytes)
{
    uint8_t buf[128];
    size_t len;
    const float two[2] = {1.0f, -2.0f};
    proto_weights m = {.version = 1, .lo = 0, .hi = 2, .values = two};
    ck_assert_int_eq(proto_weights_encode(&m, 1, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 8);
    static const uint8_t want[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};
    ck_assert_mem_eq(buf + PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED, want, 8);

    static const uint32_t bits[] = {0x7fc00001u, 0x80000000u, 0x7f800000u, 0xff800000u,
                                    0x00000001u, 0xffffffffu, 0x3f800000u, 0x12345678u};
    enum { NB = sizeof bits / sizeof bits[0] };
    float in[NB], out[NB];
    uint8_t raw[4 * NB + 1];
    memcpy(in, bits, sizeof in);
    proto_floats_encode(raw + 1, in, NB); /* unaligned on purpose */
    for (int i = 0; i < NB; i++) {
        uint32_t u = (uint32_t)raw[1 + 4 * i] | (uint32_t)raw[2 + 4 * i] << 8 |
                     (uint32_t)raw[3 + 4 * i] << 16 | (uint32_t)raw[4 + 4 * i] << 24;
        ck_assert_uint_eq(u, bits[i]);
    }
    proto_floats_decode(out, raw + 1, NB);
    ck_assert_mem_eq(out, bits, sizeof bits);

    /* REPORT's doubles are little-endian too: 12.5 = 0x4029000000000000. */
    proto_report r = sample_report();
    ck_assert_int_eq(proto_report_encode(&r, 1, buf, sizeof buf, &len), 0);
    static const uint8_t d125[8] = {0, 0, 0, 0, 0, 0, 0x29, 0x40};
    ck_assert_mem_eq(buf + PROTO_FRAME_OVERHEAD + 16, d125, 8);
}
END_TEST

/* ----------------------------------------------------------- round trips */

/* Every message through its encoder, proto_frame_parse and its decoder. */
START_TEST(test_round_trip_all)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    size_t total = build_stream(buf, offs);
    for (int i = 0; i < STREAM_FRAMES; i++) {
        proto_frame f = parse_one(buf + offs[i], offs[i + 1] - offs[i]);
        check_sample(&f, (uint32_t)i + 1);
    }
    /* proto_frame_parse over the whole stream takes one frame at a time. */
    size_t pos = 0;
    int n = 0;
    while (pos < total) {
        proto_frame f;
        int rc = proto_frame_parse(buf + pos, total - pos, 0, &f);
        ck_assert_int_gt(rc, 0);
        ck_assert_uint_eq(pos, offs[n]);
        check_sample(&f, (uint32_t)++n);
        pos += (size_t)rc;
    }
    ck_assert_int_eq(n, STREAM_FRAMES);
}
END_TEST

/* Optional fields and limits: an operator HELLO with no model, names of the
 * maximum length, ACK statuses, REPORT with unmeasured metrics, an empty
 * ERROR text, and every error code through ERROR. */
START_TEST(test_round_trip_variants)
{
    uint8_t buf[1024];
    size_t len;
    proto_hello h;
    memset(&h, 0, sizeof h);
    h.role = PROTO_ROLE_OPERATOR;
    strcpy(h.node_id, "psctl");
    ck_assert_int_eq(proto_hello_encode(&h, 9, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_HELLO_FIXED + 5);
    proto_frame f = parse_one(buf, len);
    proto_hello hd;
    ck_assert_int_eq(proto_hello_decode(&f, &hd), 0);
    ck_assert_int_eq(hd.role, PROTO_ROLE_OPERATOR);
    ck_assert_str_eq(hd.model, "");
    ck_assert(hd.nparams == 0);

    memset(h.node_id, 'n', PROTO_NODE_ID_MAX);
    h.node_id[PROTO_NODE_ID_MAX] = '\0';
    memset(h.model, 'm', PROTO_MODEL_MAX);
    h.model[PROTO_MODEL_MAX] = '\0';
    ck_assert_int_eq(proto_hello_encode(&h, 9, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_hello_decode(&f, &hd), 0);
    ck_assert_uint_eq(strlen(hd.node_id), PROTO_NODE_ID_MAX);
    ck_assert_uint_eq(strlen(hd.model), PROTO_MODEL_MAX);

    for (uint32_t s = PROTO_ACK_APPLIED; s < PROTO_ACK_STATUS_MAX; s++) {
        proto_ack a = {.seq = UINT64_MAX, .version = UINT64_MAX - 1, .status = s}, ad;
        ck_assert_int_eq(proto_ack_encode(&a, UINT32_MAX, buf, sizeof buf, &len), 0);
        f = parse_one(buf, len);
        ck_assert_uint_eq(f.hdr.request_id, UINT32_MAX);
        ck_assert_int_eq(proto_ack_decode(&f, &ad), 0);
        ck_assert(ad.seq == UINT64_MAX && ad.version == UINT64_MAX - 1 && ad.status == s);
    }

    proto_report r = {.step = 1, .samples = 64, .elapsed_s = 0, .test_acc = NAN,
                      .test_loss = INFINITY}, rd;
    ck_assert_int_eq(proto_report_encode(&r, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_report_decode(&f, &rd), 0);
    ck_assert(isnan(rd.test_acc) && isinf(rd.test_loss) && rd.elapsed_s == 0);

    for (int code = -1; code >= PROTO_ERR_MIN; code--) {
        proto_error e = {.code = code}, ed;
        ck_assert_int_eq(proto_error_encode(&e, 0, buf, sizeof buf, &len), 0);
        ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_ERROR_FIXED);
        ck_assert_uint_eq(proto_get_be16(buf + PROTO_FRAME_OVERHEAD), (unsigned)-code);
        f = parse_one(buf, len);
        ck_assert_int_eq(proto_error_decode(&f, &ed), 0);
        ck_assert_int_eq(ed.code, code);
        ck_assert_str_eq(ed.text, "");
    }
}
END_TEST

/* A full lenet vector in one WEIGHTS frame under the default maximum: in
 * one piece (zero-copy) and in 64 KiB reads (buffered). */
START_TEST(test_lenet_sized_weights)
{
    const size_t n = 431080;
    ck_assert_uint_ge(proto_max_floats(0), n);
    float *v = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
    ck_assert(v && back);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)i * 0.25f - 1000.0f;
    proto_weights m = {.version = 3, .lo = 0, .hi = n, .values = v};
    size_t len = 0;
    ck_assert_int_eq(proto_weights_encode(&m, 7, NULL, 0, &len), PROTO_ERR_NOSPACE);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 4 * n);
    ck_assert_uint_le(len - PROTO_PREFIX_SIZE, PROTO_MAX_FRAME);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    size_t len2;
    ck_assert_int_eq(proto_weights_encode(&m, 7, buf, len, &len2), 0);
    ck_assert_uint_eq(len2, len);

    proto_decoder d;
    ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
    proto_frame f;
    size_t used;
    ck_assert_int_eq(proto_decoder_feed(&d, buf, len, &used, &f), 1);
    ck_assert_uint_eq(used, len);
    ck_assert_ptr_eq(f.payload, buf + PROTO_FRAME_OVERHEAD); /* zero-copy */
    ck_assert_ptr_null(d.buf);
    proto_weights wd;
    ck_assert_int_eq(proto_weights_decode(&f, &wd), 0);
    proto_floats_decode(back, wd.raw, n);
    ck_assert_int_eq(memcmp(back, v, n * sizeof(float)), 0);

    size_t pos = 0, chunk = 65536;
    int rc = 0;
    while (pos < len) {
        size_t c = len - pos < chunk ? len - pos : chunk;
        rc = proto_decoder_feed(&d, buf + pos, c, &used, &f);
        ck_assert_int_ge(rc, 0);
        ck_assert_uint_eq(used, c);
        pos += c;
    }
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_eq(f.payload, d.buf); /* buffered */
    ck_assert_uint_eq(d.cap, len - PROTO_FRAME_OVERHEAD);
    memset(back, 0, n * sizeof(float));
    ck_assert_int_eq(proto_weights_decode(&f, &wd), 0);
    proto_floats_decode(back, wd.raw, n);
    ck_assert_int_eq(memcmp(back, v, n * sizeof(float)), 0);
    /* The next call releases the big buffer (kept only up to 64 KiB). */
    ck_assert_int_eq(proto_decoder_feed(&d, buf, 2, &used, &f), 0);
    ck_assert_ptr_null(d.buf);
    proto_decoder_free(&d);
    free(buf);
    free(v);
    free(back);
}
END_TEST

/* ------------------------------------------------------- stream splits */

START_TEST(test_stream_whole)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    size_t total = build_stream(buf, offs);
    ref_init(buf, offs);
    proto_decoder d;
    ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
    d.malloc_fn = counting_malloc;
    alloc_calls = 0;
    ck_assert_int_eq(feed_pieces(&d, buf, total, NULL, 0), STREAM_FRAMES);
    ck_assert_int_eq(alloc_calls, 0); /* every frame zero-copy */
    ck_assert(proto_decoder_idle(&d));
    proto_decoder_free(&d);
}
END_TEST

START_TEST(test_stream_every_split)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    size_t total = build_stream(buf, offs);
    ref_init(buf, offs);
    for (size_t cut = 0; cut <= total; cut++) {
        proto_decoder d;
        proto_decoder_init(&d, 0);
        int n = feed_pieces(&d, buf, total, &cut, 1);
        if (n != STREAM_FRAMES || !proto_decoder_idle(&d))
            ck_abort_msg("cut %zu: %d frames", cut, n);
        proto_decoder_free(&d);
    }
}
END_TEST

START_TEST(test_stream_one_byte_at_a_time)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    size_t total = build_stream(buf, offs);
    proto_decoder d;
    ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
    int got = 0;
    for (size_t i = 0; i < total; i++) {
        size_t used;
        proto_frame f;
        int rc = proto_decoder_feed(&d, buf + i, 1, &used, &f);
        ck_assert_int_ge(rc, 0);
        ck_assert_uint_eq(used, 1);
        /* Idle exactly at frame boundaries. */
        int boundary = 0;
        for (int k = 0; k <= STREAM_FRAMES; k++)
            boundary |= offs[k] == i + 1;
        ck_assert_int_eq(rc, boundary);
        ck_assert_int_eq(proto_decoder_idle(&d), boundary);
        if (rc == 1)
            check_sample(&f, (uint32_t)++got);
        /* An empty feed changes nothing. */
        ck_assert_int_eq(proto_decoder_feed(&d, buf, 0, &used, &f), 0);
        ck_assert_uint_eq(used, 0);
    }
    ck_assert_int_eq(got, STREAM_FRAMES);
    proto_decoder_free(&d);
}
END_TEST

/* Every pair of cut points over the first four frames (three pieces: a
 * frame, or its header, may straddle two cuts). */
START_TEST(test_stream_every_two_splits)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    build_stream(buf, offs);
    ref_init(buf, offs);
    size_t total = offs[4]; /* HELLO, WELCOME, PULL, WEIGHTS */
    long runs = 0;
    for (size_t a = 0; a <= total; a++)
        for (size_t b = a; b <= total; b++) {
            size_t cuts[2] = {a, b};
            proto_decoder d;
            proto_decoder_init(&d, 0);
            int n = feed_pieces(&d, buf, total, cuts, 2);
            if (n != 4 || !proto_decoder_idle(&d))
                ck_abort_msg("cuts %zu/%zu: %d frames", a, b, n);
            proto_decoder_free(&d);
            runs++;
        }
    ck_assert_int_eq(runs, (long)(total + 1) * (long)(total + 2) / 2);
}
END_TEST

/* ---------------------------------------------------------- bad frames */

/* A prefix above the maximum is refused as soon as its 4 bytes are in,
 * before any allocation, whatever follows. */
START_TEST(test_too_large_after_prefix)
{
    static const uint32_t lens[] = {PROTO_MAX_FRAME + 1, 0x7fffffffu, 0xffffffffu};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint8_t buf[64];
        memset(buf, 0, sizeof buf);
        ck_assert_int_eq(proto_header_encode(buf, PROTO_MSG_PUSH, 0, 42, 100), 0);
        proto_put_be32(buf, lens[k]);
        proto_decoder d;
        size_t used;
        proto_frame f;

        /* whole buffer: stops right after the prefix */
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        d.malloc_fn = counting_malloc;
        alloc_calls = 0;
        ck_assert_int_eq(proto_decoder_feed(&d, buf, sizeof buf, &used, &f),
                         PROTO_ERR_TOO_LARGE);
        ck_assert_uint_eq(used, PROTO_PREFIX_SIZE);
        ck_assert_int_eq(alloc_calls, 0);
        ck_assert_ptr_null(d.buf);
        ck_assert_ptr_null(proto_decoder_header(&d));
        /* sticky */
        ck_assert_int_eq(proto_decoder_feed(&d, buf, sizeof buf, &used, &f),
                         PROTO_ERR_TOO_LARGE);
        ck_assert_uint_eq(used, 0);
        proto_decoder_free(&d);

        /* the prefix alone is enough to know */
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        ck_assert_int_eq(proto_decoder_feed(&d, buf, PROTO_PREFIX_SIZE, &used, &f),
                         PROTO_ERR_TOO_LARGE);
        proto_decoder_free(&d);

        /* one byte at a time: need more, more, more, refused */
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(proto_decoder_feed(&d, buf + i, 1, &used, &f), 0);
        ck_assert_int_eq(proto_decoder_feed(&d, buf + 3, 1, &used, &f), PROTO_ERR_TOO_LARGE);
        proto_decoder_free(&d);

        /* one-shot parse too */
        ck_assert_int_eq(proto_frame_parse(buf, PROTO_PREFIX_SIZE, 0, &f), PROTO_ERR_TOO_LARGE);
    }
}
END_TEST

/* The runtime maximum: a frame of exactly max passes, one byte more fails. */
START_TEST(test_runtime_max)
{
    float v[10] = {0};
    proto_weights m = {.version = 1, .lo = 0, .hi = 10, .values = v};
    uint8_t buf[256];
    size_t len;
    ck_assert_int_eq(proto_weights_encode(&m, 1, buf, sizeof buf, &len), 0);
    size_t max = len - PROTO_PREFIX_SIZE; /* the prefix's value */
    proto_decoder d;
    size_t used;
    proto_frame f;
    ck_assert_int_eq(proto_decoder_init(&d, max), 0);
    ck_assert_int_eq(proto_decoder_feed(&d, buf, len, &used, &f), 1);
    proto_decoder_free(&d);
    ck_assert_int_eq(proto_decoder_init(&d, max - 1), 0);
    ck_assert_int_eq(proto_decoder_feed(&d, buf, len, &used, &f), PROTO_ERR_TOO_LARGE);
    ck_assert_uint_eq(used, PROTO_PREFIX_SIZE);
    proto_decoder_free(&d);
    ck_assert_int_eq(proto_frame_parse(buf, len, max, &f), (int)len);
    ck_assert_int_eq(proto_frame_parse(buf, len, max - 1, &f), PROTO_ERR_TOO_LARGE);
    /* PUSH's fixed part is 24 bytes longer than WEIGHTS', and a sealed
     * frame carries a 16-byte tag: 10 floats fewer */
    ck_assert_uint_eq(proto_max_floats(max), 0);
    ck_assert_uint_eq(proto_max_floats(max + 40), 10);

    ck_assert_int_eq(proto_decoder_init(&d, PROTO_HEADER_SIZE - 1), PROTO_ERR_INVALID);
    ck_assert_int_eq(proto_decoder_feed(&d, buf, len, &used, &f), PROTO_ERR_INVALID);
    ck_assert_int_eq(proto_decoder_init(&d, (size_t)PROTO_MAX_FRAME_LIMIT + 1),
                     PROTO_ERR_INVALID);
    ck_assert_int_eq(proto_decoder_init(&d, PROTO_MAX_FRAME_LIMIT), 0);
}
END_TEST

/* A prefix too small to hold a header. */
START_TEST(test_short_length)
{
    for (uint32_t l = 0; l < PROTO_HEADER_SIZE; l++) {
        uint8_t buf[PROTO_FRAME_OVERHEAD];
        ck_assert_int_eq(proto_header_encode(buf, PROTO_MSG_OK, 0, 1, 0), 0);
        proto_put_be32(buf, l);
        proto_decoder d;
        size_t used;
        proto_frame f;
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        ck_assert_int_eq(proto_decoder_feed(&d, buf, sizeof buf, &used, &f),
                         PROTO_ERR_BAD_FRAME);
        ck_assert_uint_eq(used, PROTO_PREFIX_SIZE);
        proto_decoder_free(&d);
        ck_assert_int_eq(proto_frame_parse(buf, PROTO_PREFIX_SIZE, 0, &f), PROTO_ERR_BAD_FRAME);
    }
}
END_TEST

/* Run the 16 header bytes through the decoder (whole and one byte at a
 * time) and the one-shot parser: each must fail with want right after the
 * header, without the payload. */
static void expect_header_error(const uint8_t *head, int want, int echo, uint32_t rid)
{
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        proto_decoder d;
        size_t used;
        proto_frame f;
        int rc = 0;
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        d.malloc_fn = counting_malloc;
        alloc_calls = 0;
        if (bytewise) {
            for (int i = 0; i < PROTO_FRAME_OVERHEAD && rc == 0; i++) {
                rc = proto_decoder_feed(&d, head + i, 1, &used, &f);
                if (i < PROTO_FRAME_OVERHEAD - 1)
                    ck_assert_int_eq(rc, 0);
            }
        } else {
            rc = proto_decoder_feed(&d, head, PROTO_FRAME_OVERHEAD, &used, &f);
            ck_assert_uint_eq(used, PROTO_FRAME_OVERHEAD);
        }
        ck_assert_msg(rc == want, "got %d (%s), want %d (%s)", rc, proto_strerror(rc), want,
                      proto_strerror(want));
        ck_assert_int_eq(alloc_calls, 0);
        const proto_header *h = proto_decoder_header(&d);
        if (echo) {
            ck_assert_ptr_nonnull(h);
            ck_assert_uint_eq(h->request_id, rid);
        } else {
            ck_assert_ptr_null(h);
        }
        proto_decoder_free(&d);
    }
    proto_frame f;
    proto_header h;
    ck_assert_int_eq(proto_frame_parse(head, PROTO_FRAME_OVERHEAD, 0, &f), want);
    ck_assert_int_eq(proto_header_decode(head, PROTO_MAX_FRAME, &h), want);
}

START_TEST(test_bad_magic)
{
    uint8_t head[PROTO_FRAME_OVERHEAD];
    ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_PULL, 0, 5, PROTO_PULL_SIZE), 0);
    for (int i = 4; i < 8; i++) {
        uint8_t h2[PROTO_FRAME_OVERHEAD];
        memcpy(h2, head, sizeof h2);
        h2[i] ^= 0x20;
        expect_header_error(h2, PROTO_ERR_MAGIC, 0, 0);
    }
    /* e.g. an HTTP client: "GET / HTTP/1.1" is a 1.2 GB frame -> too large */
    const uint8_t http[PROTO_FRAME_OVERHEAD] = "GET / HTTP/1.1\r";
    proto_frame f;
    ck_assert_int_eq(proto_frame_parse(http, sizeof http, 0, &f), PROTO_ERR_TOO_LARGE);
}
END_TEST

START_TEST(test_bad_version)
{
    /* 1: the old sparse layout; 2: no PULL SEED */
    static const uint16_t versions[] = {0, 1, 2, 4, 0x0300, 0xffff};
    for (size_t k = 0; k < sizeof versions / sizeof versions[0]; k++) {
        uint8_t head[PROTO_FRAME_OVERHEAD];
        ck_assert_int_eq(proto_header_encode(head, PROTO_MSG_HELLO, 0, 0xabcd, 40), 0);
        proto_put_be16(head + 8, versions[k]);
        expect_header_error(head, PROTO_ERR_VERSION, 1, 0xabcd);
        proto_header h;
        proto_header_decode(head, PROTO_MAX_FRAME, &h);
        ck_assert_uint_eq(h.version, versions[k]);
    }
}
END_TEST

START_TEST(test_unknown_type)
{
    static const uint8_t bad[] = {0, PROTO_MSG_MAX, PROTO_MSG_MAX + 1, 0x80, 0xff};
    for (size_t k = 0; k < sizeof bad; k++) {
        uint8_t head[PROTO_FRAME_OVERHEAD];
        ck_assert_int_eq(proto_header_encode(head, bad[k], 0, 77, 8), 0);
        expect_header_error(head, PROTO_ERR_UNKNOWN_TYPE, 1, 77);
    }
    ck_assert_str_eq(proto_msg_name(0), "?");
    ck_assert_str_eq(proto_msg_name(PROTO_MSG_MAX), "?");
    ck_assert_str_eq(proto_msg_name(PROTO_MSG_WEIGHTS), "WEIGHTS");
}
END_TEST

/* Flags not allowed on the type, and payload sizes the type cannot have,
 * are refused on the header alone. */
START_TEST(test_bad_flags_and_sizes)
{
    static const struct {
        uint8_t type, flags;
        size_t plen;
    } cases[] = {
        {PROTO_MSG_PULL, PROTO_FLAG_NOT_MODIFIED, PROTO_PULL_SIZE},
        {PROTO_MSG_WEIGHTS, 0x08, PROTO_WEIGHTS_FIXED},
        {PROTO_MSG_PULL, 0x10, PROTO_PULL_SIZE},
        {PROTO_MSG_WEIGHTS, 0x40, PROTO_WEIGHTS_FIXED + 4},
        {PROTO_MSG_PUSH, PROTO_FLAG_NOT_MODIFIED, PROTO_PUSH_FIXED + 4},
        {PROTO_MSG_PULL, 0, PROTO_PULL_SIZE - 1},
        {PROTO_MSG_PULL, 0, PROTO_PULL_SIZE + 5},
        {PROTO_MSG_ACK, 0, PROTO_ACK_SIZE + 1},
        {PROTO_MSG_REPORT, 0, 0},
        {PROTO_MSG_OK, 0, 0},
        {PROTO_MSG_STATUS_REQ, 0, 1},
        {PROTO_MSG_CHECKPOINT, 0, 8},
        {PROTO_MSG_STATUS, 0, 0},
        {PROTO_MSG_STATUS, 0, PROTO_STATUS_MAX + 1},
        {PROTO_MSG_HELLO, 0, PROTO_HELLO_FIXED - 1},
        {PROTO_MSG_HELLO, 0, PROTO_HELLO_FIXED + PROTO_NODE_ID_MAX + PROTO_MODEL_MAX +
                                 PROTO_AUTH_MAX + 1},
        {PROTO_MSG_WELCOME, 0, PROTO_WELCOME_FIXED - 1},
        {PROTO_MSG_WEIGHTS, 0, PROTO_WEIGHTS_FIXED - 1},
        {PROTO_MSG_PUSH, 0, PROTO_PUSH_FIXED - 1},
        {PROTO_MSG_ERROR, 0, PROTO_ERROR_FIXED - 1},
        {PROTO_MSG_DONE, 0, PROTO_DONE_SIZE - 1},
        {PROTO_MSG_DONE, 0, PROTO_DONE_SIZE + 1},
        {PROTO_MSG_DONE, PROTO_FLAG_NOT_MODIFIED, PROTO_DONE_SIZE},
        {PROTO_MSG_ERROR, 0, PROTO_ERROR_FIXED + PROTO_ERROR_TEXT_MAX + 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint8_t head[PROTO_FRAME_OVERHEAD];
        ck_assert_int_eq(proto_header_encode(head, cases[k].type, cases[k].flags,
                                             (uint32_t)k + 100, cases[k].plen), 0);
        expect_header_error(head, PROTO_ERR_BAD_FRAME, 1, (uint32_t)k + 100);
        /* and the message decoders say the same on a frame made by hand */
        uint8_t *payload = calloc(1, cases[k].plen + 1);
        ck_assert_ptr_nonnull(payload);
        proto_frame f = frame_of(cases[k].type, cases[k].flags, 1, payload, cases[k].plen);
        ck_assert_int_eq(proto_frame_check(&f, cases[k].type), PROTO_ERR_BAD_FRAME);
        free(payload);
    }
}
END_TEST

/* A frame cut short: need more, never a frame, never an error; at end of
 * stream the decoder is not idle. */
START_TEST(test_truncated)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    build_stream(buf, offs);
    for (int i = 0; i < STREAM_FRAMES; i++) {
        size_t n = offs[i + 1] - offs[i];
        for (size_t k = 1; k < n; k++) {
            proto_decoder d;
            size_t used;
            proto_frame f;
            ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
            ck_assert_int_eq(proto_decoder_feed(&d, buf + offs[i], k, &used, &f), 0);
            ck_assert_uint_eq(used, k);
            ck_assert(!proto_decoder_idle(&d));
            proto_decoder_free(&d);
            ck_assert_int_eq(proto_frame_parse(buf + offs[i], k, 0, &f), 0);
        }
    }
}
END_TEST

/* The decoder's only allocation (a payload split across reads) fails in
 * turn at each frame: NOMEM, sticky; otherwise every frame comes out. */
START_TEST(test_alloc_failure)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    size_t total = build_stream(buf, offs);
    /* How many allocations a byte-at-a-time run makes. */
    proto_decoder d;
    size_t used;
    proto_frame f;
    ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
    d.malloc_fn = counting_malloc;
    alloc_calls = 0;
    alloc_fail_at = 0;
    for (size_t i = 0; i < total; i++)
        if (proto_decoder_feed(&d, buf + i, 1, &used, &f) < 0)
            ck_abort_msg("feed failed at byte %zu", i);
    int calls = alloc_calls;
    proto_decoder_free(&d);
    ck_assert_int_ge(calls, 1);

    for (int fail = 1; fail <= calls + 1; fail++) {
        ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
        d.malloc_fn = counting_malloc;
        alloc_calls = 0;
        alloc_fail_at = fail;
        int rc = 0, frames = 0;
        size_t i;
        for (i = 0; i < total; i++) {
            rc = proto_decoder_feed(&d, buf + i, 1, &used, &f);
            if (rc < 0)
                break;
            if (rc == 1)
                check_sample(&f, (uint32_t)++frames);
        }
        if (fail <= calls) {
            ck_assert_int_eq(rc, PROTO_ERR_NOMEM);
            ck_assert_int_eq(proto_decoder_feed(&d, buf, 1, &used, &f), PROTO_ERR_NOMEM);
            ck_assert_ptr_nonnull(proto_decoder_header(&d));
        } else {
            ck_assert_int_eq(frames, STREAM_FRAMES);
        }
        proto_decoder_free(&d);
    }
    alloc_fail_at = 0;
}
END_TEST

/* ------------------------------------------------- message-specific */

START_TEST(test_bad_weights)
{
    uint8_t good[512], buf[512];
    size_t len;
    proto_weights m = sample_weights(), d;
    ck_assert_int_eq(proto_weights_encode(&m, 1, good, sizeof good, &len), 0);
    proto_frame f;

    /* hi one more than the floats sent; one fewer */
    memcpy(buf, good, len);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 138);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 136);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    /* hi < lo, hi == lo */
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 99);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_RANGE);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 100);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_RANGE);
    /* hi < lo although hi - lo wraps around to exactly the float count */
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 8, UINT64_MAX - 26);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 10);
    ck_assert(UINT64_C(10) - (UINT64_MAX - 26) == 37);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_RANGE);
    /* a payload that is not whole floats */
    memcpy(buf, good, len);
    ck_assert_int_eq(proto_header_encode(buf, PROTO_MSG_WEIGHTS, 0, 1, len - 16 - 1), 0);
    f = parse_one(buf, len - 1);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    /* not modified, but with floats */
    memcpy(buf, good, len);
    buf[11] = PROTO_FLAG_NOT_MODIFIED;
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    /* not modified with an empty range */
    proto_weights nm = {.version = 1, .lo = 5, .hi = 6, .not_modified = 1};
    ck_assert_int_eq(proto_weights_encode(&nm, 1, buf, sizeof buf, &len), 0);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 5);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_RANGE);
    /* the wrong decoder for the frame is a caller bug */
    proto_pull pl;
    ck_assert_int_eq(proto_pull_decode(&f, &pl), PROTO_ERR_INVALID);
}
END_TEST

START_TEST(test_bad_push)
{
    uint8_t good[512], buf[512];
    size_t len;
    proto_push m = sample_push(), d;
    ck_assert_int_eq(proto_push_encode(&m, 1, good, sizeof good, &len), 0);
    proto_frame f = parse_one(good, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), 0);
    static const struct {
        size_t off;
        uint64_t val;
        int width; /* 4 or 8 */
        int want;
    } cases[] = {
        {0, 0, 8, PROTO_ERR_BAD_FRAME},     /* seq 0 */
        {24, 0, 4, PROTO_ERR_BAD_FRAME},    /* samples 0 */
        {28, 1, 4, PROTO_ERR_BAD_FRAME},    /* reserved */
        {40, 1014, 8, PROTO_ERR_BAD_FRAME}, /* hi: count mismatch */
        {40, 1012, 8, PROTO_ERR_BAD_FRAME},
        {40, 999, 8, PROTO_ERR_RANGE},      /* hi < lo */
        {32, 1013, 8, PROTO_ERR_RANGE},     /* lo == hi */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(buf, good, len);
        uint8_t *p = buf + PROTO_FRAME_OVERHEAD + cases[k].off;
        if (cases[k].width == 8)
            proto_put_be64(p, cases[k].val);
        else
            proto_put_be32(p, (uint32_t)cases[k].val);
        f = parse_one(buf, len);
        ck_assert_msg(proto_push_decode(&f, &d) == cases[k].want, "case %zu", k);
    }
}
END_TEST

START_TEST(test_bad_pull_ack_ok)
{
    uint8_t buf[128];
    size_t len;
    proto_frame f;
    proto_pull pm = {.min_version = 0, .lo = 4, .hi = 9}, pd;
    ck_assert_int_eq(proto_pull_encode(&pm, 1, buf, sizeof buf, &len), 0);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 4);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_pull_decode(&f, &pd), PROTO_ERR_RANGE);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 16, 3);
    ck_assert_int_eq(proto_pull_decode(&f, &pd), PROTO_ERR_RANGE);

    proto_ack am = {.seq = 1, .version = 2, .status = PROTO_ACK_STALE}, ad;
    ck_assert_int_eq(proto_ack_encode(&am, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_ack_decode(&f, &ad), 0);
    proto_put_be32(buf + PROTO_FRAME_OVERHEAD + 16, 0);
    ck_assert_int_eq(proto_ack_decode(&f, &ad), PROTO_ERR_BAD_FRAME);
    proto_put_be32(buf + PROTO_FRAME_OVERHEAD + 16, PROTO_ACK_STATUS_MAX);
    ck_assert_int_eq(proto_ack_decode(&f, &ad), PROTO_ERR_BAD_FRAME);
    proto_put_be32(buf + PROTO_FRAME_OVERHEAD + 16, PROTO_ACK_WAITING);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD, 0);
    ck_assert_int_eq(proto_ack_decode(&f, &ad), PROTO_ERR_BAD_FRAME);

    proto_ok om = {.version = 5}, od;
    ck_assert_int_eq(proto_ok_encode(&om, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_ack_decode(&f, &ad), PROTO_ERR_INVALID);
    ck_assert_int_eq(proto_ok_decode(&f, &od), 0);
    ck_assert(od.version == 5);
}
END_TEST

/* A HELLO payload written by hand: version, role, auth method, the three
 * lengths, nparams, then the bytes given. */
static size_t hello_raw(uint8_t *p, uint16_t ver, uint8_t role, uint8_t auth, uint8_t idl,
                        uint8_t ml, uint16_t al, const char *tail, size_t tail_len)
{
    proto_put_be16(p, ver);
    p[2] = role;
    p[3] = auth;
    p[4] = idl;
    p[5] = ml;
    proto_put_be16(p + 6, al);
    proto_put_be64(p + 8, 1960);
    memcpy(p + PROTO_HELLO_FIXED, tail, tail_len);
    return PROTO_HELLO_FIXED + tail_len;
}

START_TEST(test_bad_hello)
{
    uint8_t p[512];
    char tail[300];
    memset(tail, 'x', sizeof tail);
    proto_hello d;
    proto_frame f;
    size_t n;
#define HELLO_EXPECT(want, ...)                                                   \
    do {                                                                          \
        n = hello_raw(p, __VA_ARGS__);                                            \
        f = frame_of(PROTO_MSG_HELLO, 0, 1, p, n);                                \
        int rc_ = proto_hello_decode(&f, &d);                                     \
        ck_assert_msg(rc_ == (want), "line %d: got %d (%s)", __LINE__, rc_,       \
                      proto_strerror(rc_));                                       \
    } while (0)
    HELLO_EXPECT(0, PROTO_VERSION, PROTO_ROLE_WORKER, 0, 3, 3, 0, "w01ray", 6);
    ck_assert_str_eq(d.node_id, "w01");
    ck_assert_str_eq(d.model, "ray");
    HELLO_EXPECT(PROTO_ERR_VERSION, 1, PROTO_ROLE_WORKER, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_VERSION, 2, PROTO_ROLE_WORKER, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_VERSION, 4, PROTO_ROLE_WORKER, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_VERSION, 0, PROTO_ROLE_WORKER, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 0, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, PROTO_ROLE_SHARD, 0, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, PROTO_ROLE_MAX, 0, 3, 3, 0, "w01ray", 6);
    /* lengths that do not add up to the payload */
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w01ray", 7);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w01ray", 5);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 4, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 255, 255, 0xffff, "w01ray", 6);
    /* node id empty or 65 bytes; model 33 bytes (payload size consistent) */
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 0, 3, 0, "ray", 3);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 65, 0, 0, tail, 65);
    HELLO_EXPECT(0, PROTO_VERSION, 1, 0, 64, 0, 0, tail, 64);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 1, 33, 0, tail, 34);
    HELLO_EXPECT(0, PROTO_VERSION, 1, 0, 1, 32, 0, tail, 33);
    /* characters: space, control, NUL, DEL, high bit */
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w 1ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w\n1ray", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w01r\0y", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w01ra\x7f", 6);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, 0, "w\xc3\xa9ray", 6);
    /* authentication: none without a blob, KEY with exactly its nonce */
    HELLO_EXPECT(PROTO_ERR_AUTH, PROTO_VERSION, 1, 1, 3, 3, 0, "w01ray", 6);
    HELLO_EXPECT(PROTO_ERR_AUTH, PROTO_VERSION, 1, 0, 3, 3, 4, "w01raykey!", 10);
    HELLO_EXPECT(PROTO_ERR_BAD_FRAME, PROTO_VERSION, 1, 0, 3, 3, PROTO_AUTH_MAX + 1, tail, 6);
#undef HELLO_EXPECT

    /* the encoder writes any blob; the decoder wants KEY's nonce size */
    proto_hello h = sample_hello();
    const uint8_t key[5] = {1, 2, 3, 4, 5};
    h.auth_method = 1;
    h.auth = key;
    h.auth_len = sizeof key;
    uint8_t buf[512];
    size_t len;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_hello_decode(&f, &d), PROTO_ERR_AUTH);
}
END_TEST

/* PROTO_AUTH_KEY: HELLO carries a 32-byte nonce, WELCOME nonce and proof
 * (64 bytes); AUTH is a fixed 32-byte proof, never sealed. */
START_TEST(test_auth_key_messages)
{
    uint8_t blob[PROTO_WELCOME_AUTH_KEY_LEN], buf[512];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)(i * 7 + 1);
    size_t len;
    proto_frame f;
    proto_hello h = sample_hello(), hd;
    h.auth_method = PROTO_AUTH_KEY;
    h.auth = blob;
    h.auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_hello_decode(&f, &hd), 0);
    ck_assert_int_eq(hd.auth_method, PROTO_AUTH_KEY);
    ck_assert_int_eq(hd.auth_len, PROTO_AUTH_NONCE_SIZE);
    ck_assert_mem_eq(hd.auth, blob, PROTO_AUTH_NONCE_SIZE);
    h.auth_len = PROTO_WELCOME_AUTH_KEY_LEN; /* a WELCOME's blob in a HELLO */
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_hello_decode(&f, &hd), PROTO_ERR_AUTH);
    h.auth_method = 2; /* unknown */
    h.auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_hello_decode(&f, &hd), PROTO_ERR_AUTH);

    proto_welcome w = sample_welcome(), wd;
    w.auth_method = PROTO_AUTH_KEY;
    w.auth = blob;
    w.auth_len = PROTO_WELCOME_AUTH_KEY_LEN;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_welcome_decode(&f, &wd), 0);
    ck_assert_int_eq(wd.auth_len, PROTO_WELCOME_AUTH_KEY_LEN);
    ck_assert_mem_eq(wd.auth, blob, sizeof blob);
    ck_assert_mem_eq(buf + len - PROTO_AUTH_PROOF_SIZE, blob + PROTO_AUTH_NONCE_SIZE,
                     PROTO_AUTH_PROOF_SIZE); /* the proof is the frame's last bytes */
    w.auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_welcome_decode(&f, &wd), PROTO_ERR_AUTH);

    /* AUTH: the bytes, and every other size refused from the header */
    proto_auth a, ad;
    memcpy(a.proof, blob, sizeof a.proof);
    ck_assert_int_eq(proto_auth_encode(&a, 0x0a0b0c0d, NULL, 0, &len), PROTO_ERR_NOSPACE);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_AUTH_SIZE);
    ck_assert_int_eq(proto_auth_encode(&a, 0x0a0b0c0d, buf, sizeof buf, &len), 0);
    static const uint8_t head[] = {0, 0, 0, 44, 0x50, 0x53, 0x44, 0x57, 0, 3, 14, 0,
                                   0x0a, 0x0b, 0x0c, 0x0d};
    ck_assert_mem_eq(buf, head, sizeof head);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_auth_decode(&f, &ad), 0);
    ck_assert_mem_eq(ad.proof, a.proof, sizeof a.proof);
    ck_assert_str_eq(proto_msg_name(PROTO_MSG_AUTH), "AUTH");
    uint8_t h2[PROTO_FRAME_OVERHEAD];
    proto_header hh;
    ck_assert_int_eq(proto_header_encode(h2, PROTO_MSG_AUTH, 0, 1, PROTO_AUTH_SIZE - 1), 0);
    ck_assert_int_eq(proto_header_decode(h2, PROTO_MAX_FRAME, &hh), PROTO_ERR_BAD_FRAME);
    ck_assert_int_eq(proto_header_encode(h2, PROTO_MSG_AUTH, 0, 1, PROTO_AUTH_SIZE + 1), 0);
    ck_assert_int_eq(proto_header_decode(h2, PROTO_MAX_FRAME, &hh), PROTO_ERR_BAD_FRAME);
    ck_assert_int_eq(proto_header_encode(h2, PROTO_MSG_AUTH, PROTO_FLAG_SEALED, 1,
                                         PROTO_AUTH_SIZE + PROTO_SEAL_TAG_SIZE), 0);
    ck_assert_int_eq(proto_header_decode(h2, PROTO_MAX_FRAME, &hh), PROTO_ERR_BAD_FRAME);
}
END_TEST

START_TEST(test_bad_welcome)
{
    uint8_t good[512], buf[512];
    size_t len;
    proto_welcome m = sample_welcome(), d;
    ck_assert_int_eq(proto_welcome_encode(&m, 1, good, sizeof good, &len), 0);
    proto_frame f;
    memcpy(buf, good, len);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 24, 431081); /* hi > nparams */
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_welcome_decode(&f, &d), PROTO_ERR_RANGE);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 24, 215540); /* hi == lo */
    ck_assert_int_eq(proto_welcome_decode(&f, &d), PROTO_ERR_RANGE);
    memcpy(buf, good, len);
    buf[PROTO_FRAME_OVERHEAD + 2] = PROTO_ROLE_WORKER;
    ck_assert_int_eq(proto_welcome_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    memcpy(buf, good, len);
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD, 7);
    ck_assert_int_eq(proto_welcome_decode(&f, &d), PROTO_ERR_VERSION);
    memcpy(buf, good, len);
    buf[PROTO_FRAME_OVERHEAD + 4]++; /* node id length */
    ck_assert_int_eq(proto_welcome_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    memcpy(buf, good, len);
    ck_assert_int_eq(proto_welcome_decode(&f, &d), 0);
}
END_TEST

START_TEST(test_bad_control)
{
    uint8_t buf[1024];
    size_t len;
    proto_frame f;

    /* STATUS with a NUL byte */
    const uint8_t js[] = {'{', '}', 0, ' '};
    proto_status sd;
    f = frame_of(PROTO_MSG_STATUS, 0, 1, js, sizeof js);
    ck_assert_int_eq(proto_status_decode(&f, &sd), PROTO_ERR_BAD_FRAME);
    f = frame_of(PROTO_MSG_STATUS, 0, 1, js, 2);
    ck_assert_int_eq(proto_status_decode(&f, &sd), 0);

    /* REPORT values out of range */
    static const struct {
        size_t off;
        double v;
    } rep[] = {{16, -1.0}, {16, NAN}, {16, INFINITY}, {24, 1.5}, {24, -0.1},
               {24, INFINITY}, {32, -1.0}, {32, -INFINITY}};
    proto_report r = sample_report(), rd;
    for (size_t k = 0; k < sizeof rep / sizeof rep[0]; k++) {
        ck_assert_int_eq(proto_report_encode(&r, 1, buf, sizeof buf, &len), 0);
        uint64_t u;
        memcpy(&u, &rep[k].v, 8);
        for (int i = 0; i < 8; i++)
            buf[PROTO_FRAME_OVERHEAD + rep[k].off + i] = (uint8_t)(u >> (8 * i));
        f = parse_one(buf, len);
        ck_assert_msg(proto_report_decode(&f, &rd) == PROTO_ERR_BAD_FRAME, "case %zu", k);
    }

    /* ERROR: code 0, length mismatch, unprintable text */
    proto_error e = {.code = PROTO_ERR_STATE}, ed;
    strcpy(e.text, "push before hello");
    ck_assert_int_eq(proto_error_encode(&e, 1, buf, sizeof buf, &len), 0);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_error_decode(&f, &ed), 0);
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD, 0);
    ck_assert_int_eq(proto_error_decode(&f, &ed), PROTO_ERR_BAD_FRAME);
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD, 8);
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD + 2, 16);
    ck_assert_int_eq(proto_error_decode(&f, &ed), PROTO_ERR_BAD_FRAME);
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD + 2, 17);
    buf[PROTO_FRAME_OVERHEAD + 4 + 4] = '\n';
    ck_assert_int_eq(proto_error_decode(&f, &ed), PROTO_ERR_BAD_FRAME);
    buf[PROTO_FRAME_OVERHEAD + 4 + 4] = 0;
    ck_assert_int_eq(proto_error_decode(&f, &ed), PROTO_ERR_BAD_FRAME);
    buf[PROTO_FRAME_OVERHEAD + 4 + 4] = '_';
    ck_assert_int_eq(proto_error_decode(&f, &ed), 0);
    ck_assert_int_eq(ed.code, PROTO_ERR_STATE);
    ck_assert_str_eq(ed.text, "push_before hello");
    /* a wire code we do not know yet still decodes (negated) */
    proto_put_be16(buf + PROTO_FRAME_OVERHEAD, 999);
    ck_assert_int_eq(proto_error_decode(&f, &ed), 0);
    ck_assert_int_eq(ed.code, -999);
    ck_assert_str_eq(proto_strerror(ed.code), "unknown error");
}
END_TEST

/* ------------------------------------------------------------ encoders */

START_TEST(test_encoder_args)
{
    uint8_t buf[2048];
    size_t len;
    proto_hello h = sample_hello();
    h.role = PROTO_ROLE_SHARD;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h = sample_hello();
    h.node_id[0] = '\0';
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h = sample_hello();
    memset(h.node_id, 'a', sizeof h.node_id); /* 65, unterminated */
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h = sample_hello();
    memset(h.model, 'a', sizeof h.model);
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h = sample_hello();
    strcpy(h.node_id, "has space");
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h = sample_hello();
    h.auth_len = PROTO_AUTH_MAX + 1;
    h.auth = buf;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    h.auth_len = 1;
    h.auth = NULL;
    ck_assert_int_eq(proto_hello_encode(&h, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);

    proto_welcome w = sample_welcome();
    w.hi = w.nparams + 1;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    w = sample_welcome();
    w.lo = w.hi;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    w = sample_welcome();
    w.role = PROTO_ROLE_WORKER;
    ck_assert_int_eq(proto_welcome_encode(&w, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);

    proto_pull pl = {.lo = 5, .hi = 5};
    ck_assert_int_eq(proto_pull_encode(&pl, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    proto_weights wt = sample_weights();
    wt.values = NULL;
    ck_assert_int_eq(proto_weights_encode(&wt, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    wt = sample_weights();
    wt.hi = wt.lo - 1;
    ck_assert_int_eq(proto_weights_encode(&wt, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    /* too many floats for any frame: refused before values is read */
    wt = sample_weights();
    wt.lo = 0;
    wt.hi = (uint64_t)1 << 28;
    ck_assert_int_eq(proto_weights_encode(&wt, 1, NULL, 0, &len), PROTO_ERR_TOO_LARGE);
    proto_push ps = sample_push();
    ps.hi = (uint64_t)1 << 40;
    ck_assert_int_eq(proto_push_encode(&ps, 1, NULL, 0, &len), PROTO_ERR_TOO_LARGE);
    ps = sample_push();
    ps.seq = 0;
    ck_assert_int_eq(proto_push_encode(&ps, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    ps = sample_push();
    ps.samples = 0;
    ck_assert_int_eq(proto_push_encode(&ps, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    ps = sample_push();
    ps.values = NULL;
    ck_assert_int_eq(proto_push_encode(&ps, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    proto_ack ak = {.seq = 1, .status = 0};
    ck_assert_int_eq(proto_ack_encode(&ak, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    ak.status = PROTO_ACK_STATUS_MAX;
    ck_assert_int_eq(proto_ack_encode(&ak, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    ak.status = PROTO_ACK_APPLIED;
    ak.seq = 0;
    ck_assert_int_eq(proto_ack_encode(&ak, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    proto_status st = {"{}", 0};
    ck_assert_int_eq(proto_status_encode(&st, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    st.json = "{\0}";
    st.len = 3;
    ck_assert_int_eq(proto_status_encode(&st, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    st.len = (size_t)PROTO_STATUS_MAX + 1;
    ck_assert_int_eq(proto_status_encode(&st, 1, NULL, 0, &len), PROTO_ERR_INVALID);
    proto_report r = sample_report();
    r.test_acc = 90.47; /* a percentage, not a fraction */
    ck_assert_int_eq(proto_report_encode(&r, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    r = sample_report();
    r.elapsed_s = -0.5;
    ck_assert_int_eq(proto_report_encode(&r, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    proto_error e = {.code = 0};
    ck_assert_int_eq(proto_error_encode(&e, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    e.code = 5;
    ck_assert_int_eq(proto_error_encode(&e, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    e.code = -65536;
    ck_assert_int_eq(proto_error_encode(&e, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
}
END_TEST

/* Size queries, and a buffer one byte short is never written: it ends at
 * the guard page, so a write past cap would fault. */
START_TEST(test_encoder_nospace)
{
    uint8_t ref[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    build_stream(ref, offs);
    guard_buf g;
    guard_init(&g, STREAM_MAX);
    for (int i = 0; i < STREAM_FRAMES; i++) {
        size_t want = offs[i + 1] - offs[i];
        uint8_t *dst = g.base + g.usable - (want - 1);
        memset(dst, 0xEE, want - 1);
        for (int round = 0; round < 3; round++) {
            size_t len = 12345, cap = round == 0 ? 0 : round == 1 ? want - 1 : want;
            uint8_t *b = round == 0 ? NULL : round == 1 ? dst : g.base + g.usable - want;
            int rc;
            proto_hello h = sample_hello();
            proto_welcome w = sample_welcome();
            proto_pull pl = {.min_version = 3, .lo = 100, .hi = 137};
            proto_weights wt = sample_weights();
            proto_weights nm = {.version = 9, .lo = 100, .hi = 137, .not_modified = 1};
            proto_push ps = sample_push();
            proto_ack ak = {.seq = 5, .version = 9, .status = PROTO_ACK_APPLIED};
            proto_status st = {status_json, sizeof status_json - 1};
            proto_report rp = sample_report();
            proto_ok ok = {.version = 9};
            proto_error er = {.code = PROTO_ERR_RANGE};
            strcpy(er.text, "range [0,5) is not this shard's");
            proto_done dn = {.step = 0x0102030405060708ull, .samples = 4500};
            uint32_t rid = (uint32_t)i + 1;
            switch (i) {
            case 0: rc = proto_hello_encode(&h, rid, b, cap, &len); break;
            case 1: rc = proto_welcome_encode(&w, rid, b, cap, &len); break;
            case 2: rc = proto_pull_encode(&pl, rid, b, cap, &len); break;
            case 3: rc = proto_weights_encode(&wt, rid, b, cap, &len); break;
            case 4: rc = proto_weights_encode(&nm, rid, b, cap, &len); break;
            case 5: rc = proto_push_encode(&ps, rid, b, cap, &len); break;
            case 6: rc = proto_ack_encode(&ak, rid, b, cap, &len); break;
            case 7: rc = proto_status_req_encode(rid, b, cap, &len); break;
            case 8: rc = proto_status_encode(&st, rid, b, cap, &len); break;
            case 9: rc = proto_report_encode(&rp, rid, b, cap, &len); break;
            case 10: rc = proto_checkpoint_encode(rid, b, cap, &len); break;
            case 11: rc = proto_ok_encode(&ok, rid, b, cap, &len); break;
            case 12: rc = proto_error_encode(&er, rid, b, cap, &len); break;
            default: rc = proto_done_encode(&dn, rid, b, cap, &len); break;
            }
            ck_assert_uint_eq(len, want);
            if (round < 2) {
                ck_assert_int_eq(rc, PROTO_ERR_NOSPACE);
            } else {
                ck_assert_int_eq(rc, 0);
                ck_assert_mem_eq(b, ref + offs[i], want);
            }
        }
    }
    guard_free(&g);
}
END_TEST

/* ERROR text is sanitised and cut rather than refused. */
START_TEST(test_error_text_sanitised)
{
    uint8_t buf[1024];
    size_t len;
    proto_error e = {.code = PROTO_ERR_BAD_FRAME}, d;
    strcpy(e.text, "bad\n\x01\xff byte");
    ck_assert_int_eq(proto_error_encode(&e, 3, buf, sizeof buf, &len), 0);
    proto_frame f = parse_one(buf, len);
    ck_assert_int_eq(proto_error_decode(&f, &d), 0);
    ck_assert_str_eq(d.text, "bad??? byte");
    memset(e.text, 'z', sizeof e.text); /* 257 bytes, no NUL */
    ck_assert_int_eq(proto_error_encode(&e, 3, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_ERROR_FIXED + PROTO_ERROR_TEXT_MAX);
    f = parse_one(buf, len);
    ck_assert_int_eq(proto_error_decode(&f, &d), 0);
    ck_assert_uint_eq(strlen(d.text), PROTO_ERROR_TEXT_MAX);
}
END_TEST

START_TEST(test_strerror_and_policy)
{
    for (int a = -1; a >= PROTO_ERR_MIN; a--) {
        ck_assert_str_ne(proto_strerror(a), "unknown error");
        ck_assert_str_eq(proto_strerror(a), proto_strerror(-a));
        for (int b = a - 1; b >= PROTO_ERR_MIN; b--)
            ck_assert_str_ne(proto_strerror(a), proto_strerror(b));
    }
    ck_assert_str_eq(proto_strerror(PROTO_ERR_MIN - 1), "unknown error");
    ck_assert_str_eq(proto_strerror(PROTO_ERR_TOO_LARGE), "frame too large");
    ck_assert_int_eq(proto_err_closes(PROTO_ERR_VERSION), 1);
    ck_assert_int_eq(proto_err_closes(PROTO_ERR_MODEL), 1);
    ck_assert_int_eq(proto_err_closes(-PROTO_ERR_BAD_FRAME), 1);
    ck_assert_int_eq(proto_err_closes(PROTO_ERR_BUSY), 0);
    ck_assert_int_eq(proto_err_closes(PROTO_ERR_INTERNAL), 0);
    for (int t = 1; t < PROTO_MSG_MAX; t++)
        for (int u = t + 1; u < PROTO_MSG_MAX; u++)
            ck_assert_str_ne(proto_msg_name(t), proto_msg_name(u));
}
END_TEST

/* -------------------------------------------------------- guard page */

/* Every frame of the stream, and every prefix of it, placed to end at the
 * guard page: the one-shot parser, the decoder and the message decoder
 * never read past the end. */
START_TEST(test_guard_page_frames)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    build_stream(buf, offs);
    guard_buf g;
    guard_init(&g, STREAM_MAX);
    for (int i = 0; i < STREAM_FRAMES; i++) {
        size_t n = offs[i + 1] - offs[i];
        for (size_t k = 0; k <= n; k++) {
            const uint8_t *p = guard_put(&g, buf + offs[i], k);
            proto_frame f;
            ck_assert_int_eq(proto_frame_parse(p, k, 0, &f), k == n ? (int)n : 0);
            proto_decoder d;
            size_t used;
            ck_assert_int_eq(proto_decoder_init(&d, 0), 0);
            ck_assert_int_eq(proto_decoder_feed(&d, p, k, &used, &f), k == n);
            ck_assert_uint_eq(used, k);
            if (k == n) {
                ck_assert_ptr_eq(f.payload, f.payload_len ? p + PROTO_FRAME_OVERHEAD : NULL);
                check_sample(&f, (uint32_t)i + 1);
            }
            proto_decoder_free(&d);
        }
    }
    guard_free(&g);
}
END_TEST

/* Each message decoder on its payload and on every shortened payload,
 * ending at the guard page: fixed-size and length-checked messages must
 * refuse every shortening, none may read past the end. */
START_TEST(test_guard_page_payloads)
{
    uint8_t buf[STREAM_MAX];
    size_t offs[STREAM_FRAMES + 1];
    build_stream(buf, offs);
    guard_buf g;
    guard_init(&g, STREAM_MAX);
    for (int i = 0; i < STREAM_FRAMES; i++) {
        proto_frame whole = parse_one(buf + offs[i], offs[i + 1] - offs[i]);
        size_t n = whole.payload_len;
        for (size_t k = 0; k <= n; k++) {
            const uint8_t *p = guard_put(&g, whole.payload, k);
            proto_frame f = frame_of(whole.hdr.type, whole.hdr.flags, whole.hdr.request_id,
                                     p, k);
            int rc;
            union {
                proto_hello h;
                proto_welcome w;
                proto_pull pl;
                proto_weights wt;
                proto_push ps;
                proto_ack ak;
                proto_status st;
                proto_report rp;
                proto_ok ok;
                proto_error er;
                proto_done dn;
            } u;
            switch (whole.hdr.type) {
            case PROTO_MSG_HELLO: rc = proto_hello_decode(&f, &u.h); break;
            case PROTO_MSG_WELCOME: rc = proto_welcome_decode(&f, &u.w); break;
            case PROTO_MSG_PULL: rc = proto_pull_decode(&f, &u.pl); break;
            case PROTO_MSG_WEIGHTS: rc = proto_weights_decode(&f, &u.wt); break;
            case PROTO_MSG_PUSH: rc = proto_push_decode(&f, &u.ps); break;
            case PROTO_MSG_ACK: rc = proto_ack_decode(&f, &u.ak); break;
            case PROTO_MSG_STATUS_REQ: rc = proto_status_req_decode(&f); break;
            case PROTO_MSG_STATUS: rc = proto_status_decode(&f, &u.st); break;
            case PROTO_MSG_REPORT: rc = proto_report_decode(&f, &u.rp); break;
            case PROTO_MSG_CHECKPOINT: rc = proto_checkpoint_decode(&f); break;
            case PROTO_MSG_OK: rc = proto_ok_decode(&f, &u.ok); break;
            case PROTO_MSG_ERROR: rc = proto_error_decode(&f, &u.er); break;
            case PROTO_MSG_DONE: rc = proto_done_decode(&f, &u.dn); break;
            default: rc = 1; ck_abort();
            }
            if (k == n)
                ck_assert_int_eq(rc, 0);
            else if (whole.hdr.type != PROTO_MSG_STATUS || k == 0)
                ck_assert_msg(rc < 0, "%s payload cut to %zu of %zu accepted",
                              proto_msg_name(whole.hdr.type), k, n);
        }
    }
    guard_free(&g);
}
END_TEST

/* The head encoder plus the floats written separately is byte for byte the
 * whole WEIGHTS frame (what psd sends without copying the weights). */
START_TEST(test_weights_head_zero_copy)
{
    float v[37];
    for (int i = 0; i < 37; i++)
        v[i] = (float)i * 0.25f - 3.0f;
    proto_weights m = {0};
    m.version = 99;
    m.lo = 1000;
    m.hi = 1037;
    m.values = v;
    uint8_t whole[256], split[256];
    size_t wl, hl, n;
    ck_assert_int_eq(proto_weights_encode(&m, 7, whole, sizeof(whole), &wl), 0);
    ck_assert_int_eq(proto_weights_encode_head(&m, 7, NULL, 0, &hl, &n), PROTO_ERR_NOSPACE);
    ck_assert_uint_eq(hl, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED);
    ck_assert_uint_eq(n, 37);
    ck_assert_int_eq(proto_weights_encode_head(&m, 7, split, hl, &hl, &n), 0);
    proto_floats_encode(split + hl, v, n);
    ck_assert_uint_eq(hl + 4 * n, wl);
    ck_assert_mem_eq(split, whole, wl);
    /* not modified: no floats follow */
    m.not_modified = 1;
    ck_assert_int_eq(proto_weights_encode(&m, 7, whole, sizeof(whole), &wl), 0);
    ck_assert_int_eq(proto_weights_encode_head(&m, 7, split, sizeof(split), &hl, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(hl, wl);
    ck_assert_mem_eq(split, whole, wl);
    m.hi = m.lo;
    ck_assert_int_eq(proto_weights_encode_head(&m, 7, split, sizeof(split), &hl, &n),
                     PROTO_ERR_INVALID);
}
END_TEST

Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("bytes");
    tcase_add_test(tc, test_header_bytes);
    tcase_add_test(tc, test_pull_seed);
    tcase_add_test(tc, test_float_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("round_trip");
    tcase_add_test(tc, test_round_trip_all);
    tcase_add_test(tc, test_round_trip_variants);
    tcase_add_test(tc, test_lenet_sized_weights);
    tcase_add_test(tc, test_weights_head_zero_copy);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_stream_whole);
    tcase_add_test(tc, test_stream_every_split);
    tcase_add_test(tc, test_stream_one_byte_at_a_time);
    tcase_add_test(tc, test_stream_every_two_splits);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_frames");
    tcase_add_test(tc, test_too_large_after_prefix);
    tcase_add_test(tc, test_runtime_max);
    tcase_add_test(tc, test_short_length);
    tcase_add_test(tc, test_bad_magic);
    tcase_add_test(tc, test_bad_version);
    tcase_add_test(tc, test_unknown_type);
    tcase_add_test(tc, test_bad_flags_and_sizes);
    tcase_add_test(tc, test_auth_key_messages);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_alloc_failure);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_payloads");
    tcase_add_test(tc, test_bad_weights);
    tcase_add_test(tc, test_bad_push);
    tcase_add_test(tc, test_bad_pull_ack_ok);
    tcase_add_test(tc, test_bad_hello);
    tcase_add_test(tc, test_bad_welcome);
    tcase_add_test(tc, test_bad_control);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoders");
    tcase_add_test(tc, test_encoder_args);
    tcase_add_test(tc, test_encoder_nospace);
    tcase_add_test(tc, test_error_text_sanitised);
    tcase_add_test(tc, test_strerror_and_policy);
    suite_add_tcase(s, tc);

    tc = tcase_create("guard_page");
    tcase_add_test(tc, test_guard_page_frames);
    tcase_add_test(tc, test_guard_page_payloads);
    suite_add_tcase(s, tc);
    return s;
}
