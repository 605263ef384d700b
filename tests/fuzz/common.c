/* common.c - the message table of the fuzz targets (every decoder in proto/,
 * with its encoder for the round trip) and a small gzip helper; see fuzz.h.
 *
 * A message type added to proto/proto.h is one line in FUZZ_MSGS below, if
 * its functions follow the usual shape
 *     int proto_<name>_decode(const proto_frame *f, proto_<name> *out);
 *     int proto_<name>_encode(const proto_<name> *m, uint32_t request_id,
 *                             uint8_t *buf, size_t cap, size_t *len);
 * (MSG), or the shape of an empty request such as STATUS_REQ (EMPTY).
 * fuzz_msg_table_check() fails every target at start-up while a type below
 * PROTO_MSG_MAX has no line, so a new message cannot go unfuzzed.
 */
#include <string.h>
#include <zlib.h>

#include "fuzz.h"

/* ---------------------------------------------------- before re-encoding */

/* Decoders point at the encoded values inside the payload (raw); encoders
 * read floats (and, sparse, indices) from arrays.  Each prep builds what
 * re-encodes to the same bytes and returns what to free. */
#define FUZZ_DENSE_MAX (1u << 16)
static char fuzz_skip_token;
#define FUZZ_SKIP ((void *)&fuzz_skip_token)

static void *alloc_or_die(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    FUZZ_ASSERT(p != NULL, "out of memory for %zu bytes", bytes);
    return p;
}

/* A sparse body's pairs into idx[]/vals[] (count of them; already
 * validated for a slice of n). */
static void sparse_split(const uint8_t *raw, size_t len, size_t n, size_t count, uint32_t *idx,
                         float *vals)
{
    size_t c;
    FUZZ_ASSERT(proto_sparse_decode(raw, len, n, idx, vals, &c) == 0 && c == count,
                "a decoded sparse body does not decode again");
}

/* The n values of a dense (fp32 or fp16) body, decoded (caller frees). */
static float *dense_decode(uint8_t enc, const uint8_t *raw, size_t n)
{
    float *v = alloc_or_die(n * sizeof *v);
    if (enc == PROTO_ENC_FP16)
        proto_fp16_decode(v, raw, n);
    else
        proto_floats_decode(v, raw, n);
    return v;
}

static void *prep_weights(proto_weights *m)
{
    if (!m->raw)
        return NULL;
    size_t n = (size_t)(m->hi - m->lo);
    if (m->encoding != PROTO_ENC_SPARSE) {
        float *v = dense_decode(m->encoding, m->raw, n);
        m->values = v;
        return v;
    }
    /* a delta: values equal to base except at its entries, where base has
     * the inverted bits (so they differ).  Its range need not fit in the
     * input (up to 2^28 floats): above FUZZ_DENSE_MAX the dense arrays would
     * cost more than the round trip finds, so it is skipped. */
    if (n > FUZZ_DENSE_MAX)
        return FUZZ_SKIP;
    float *v = alloc_or_die(2 * n * sizeof *v), *base = v + n;
    memset(v, 0, 2 * n * sizeof *v);
    FUZZ_ASSERT(proto_sparse_apply(m->raw, m->raw_len, n, v) == 0, "a decoded delta does not apply");
    uint8_t *blk = alloc_or_die(m->count * (sizeof(uint32_t) + sizeof(float)));
    uint32_t *idx = (uint32_t *)(void *)blk;
    sparse_split(m->raw, m->raw_len, n, m->count, idx, (float *)(void *)(blk + m->count * 4));
    for (size_t j = 0; j < m->count; j++) {
        uint32_t u;
        memcpy(&u, &v[idx[j]], 4);
        u = ~u;
        memcpy(&base[idx[j]], &u, 4);
    }
    free(blk);
    m->values = v;
    m->base = base;
    return v;
}

static void *prep_push(proto_push *m)
{
    if (!m->raw)
        return NULL;
    size_t n = (size_t)(m->hi - m->lo);
    if (m->encoding == PROTO_ENC_SPARSE) {
        uint8_t *blk = alloc_or_die(m->count * (sizeof(uint32_t) + sizeof(float)));
        uint32_t *idx = (uint32_t *)(void *)blk;
        float *vals = (float *)(void *)(blk + m->count * sizeof(uint32_t));
        sparse_split(m->raw, m->raw_len, n, m->count, idx, vals);
        m->idx = idx;
        m->values = vals;
        return blk;
    }
    float *v = dense_decode((uint8_t)m->encoding, m->raw, n);
    m->values = v;
    return v;
}

#define prep_none(m) NULL

/* ------------------------------------------------------------ the table */

/* Every message type: MSG(TYPE, name, prep) or EMPTY(TYPE, name). */
#define FUZZ_MSGS(MSG, EMPTY)              \
    MSG(HELLO, hello, prep_none)           \
    MSG(WELCOME, welcome, prep_none)       \
    MSG(PULL, pull, prep_none)             \
    MSG(WEIGHTS, weights, prep_weights)    \
    MSG(PUSH, push, prep_push)             \
    MSG(ACK, ack, prep_none)               \
    EMPTY(STATUS_REQ, status_req)          \
    MSG(STATUS, status, prep_none)         \
    MSG(REPORT, report, prep_none)         \
    EMPTY(CHECKPOINT, checkpoint)          \
    MSG(OK, ok, prep_none)                 \
    MSG(ERROR, error, prep_none)           \
    MSG(DONE, done, prep_none)             \
    MSG(AUTH, auth, prep_none)

typedef int (*encode_fn)(const void *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len);

/* The encoder must give back f's bytes exactly (see fuzz.h). */
static void roundtrip(const proto_frame *f, const char *name, encode_fn enc, const void *m)
{
    uint32_t rid = f->hdr.request_id;
    size_t want = PROTO_FRAME_OVERHEAD + f->payload_len, need = 0, len = 0;

    int rc = enc(m, rid, NULL, 0, &need);
    FUZZ_ASSERT(rc == PROTO_ERR_NOSPACE && need == want,
                "%s: re-encoding what was decoded: size query gives %d (%s) and %zu bytes, "
                "the frame has %zu", name, rc, proto_strerror(rc), need, want);

    uint8_t *buf = malloc(need);
    FUZZ_ASSERT(buf != NULL, "out of memory");
    rc = enc(m, rid, buf, need, &len);
    FUZZ_ASSERT(rc == 0 && len == want, "%s: re-encoding into %zu bytes: %d (%s), len %zu",
                name, need, rc, proto_strerror(rc), len);
    uint8_t head[PROTO_FRAME_OVERHEAD];
    FUZZ_ASSERT(proto_header_encode(head, f->hdr.type, f->hdr.flags, rid, f->payload_len) == 0,
                "%s: header of %zu payload bytes", name, f->payload_len);
    if (memcmp(buf, head, PROTO_FRAME_OVERHEAD) != 0 ||
        (f->payload_len &&
         memcmp(buf + PROTO_FRAME_OVERHEAD, f->payload, f->payload_len) != 0)) {
        for (size_t i = 0; i < want; i++) {
            uint8_t orig =
                i < PROTO_FRAME_OVERHEAD ? head[i] : f->payload[i - PROTO_FRAME_OVERHEAD];
            FUZZ_ASSERT(buf[i] == orig,
                        "%s: encode(decode(frame)) differs at byte %zu of %zu "
                        "(payload offset %ld): 0x%02x, the frame has 0x%02x",
                        name, i, want, (long)i - PROTO_FRAME_OVERHEAD, buf[i], orig);
        }
    }
    free(buf);

    /* One byte short: refused, nothing written past the buffer (ASan). */
    buf = malloc(need - 1);
    FUZZ_ASSERT(buf != NULL, "out of memory");
    len = 0;
    rc = enc(m, rid, buf, need - 1, &len);
    FUZZ_ASSERT(rc == PROTO_ERR_NOSPACE && len == want,
                "%s: re-encoding into %zu bytes (one short): %d (%s), len %zu", name,
                need - 1, rc, proto_strerror(rc), len);
    free(buf);
}

#define DEFINE_MSG(T, name, prep)                                                          \
    static int enc_##name(const void *m, uint32_t rid, uint8_t *buf, size_t cap,          \
                          size_t *len)                                                     \
    {                                                                                      \
        return proto_##name##_encode((const proto_##name *)m, rid, buf, cap, len);         \
    }                                                                                      \
    static int check_##name(const proto_frame *f)                                         \
    {                                                                                      \
        proto_##name m;                                                                    \
        memset(&m, 0, sizeof m);                                                           \
        int rc = proto_##name##_decode(f, &m);                                             \
        if (rc == 0) {                                                                     \
            void *scratch = prep(&m);                                                      \
            if (scratch != FUZZ_SKIP) {                                                    \
                roundtrip(f, #T, enc_##name, &m);                                          \
                free(scratch);                                                             \
            }                                                                              \
        }                                                                                  \
        return rc;                                                                         \
    }

#define DEFINE_EMPTY(T, name)                                                              \
    static int enc_##name(const void *m, uint32_t rid, uint8_t *buf, size_t cap,          \
                          size_t *len)                                                     \
    {                                                                                      \
        (void)m;                                                                           \
        return proto_##name##_encode(rid, buf, cap, len);                                  \
    }                                                                                      \
    static int check_##name(const proto_frame *f)                                         \
    {                                                                                      \
        int rc = proto_##name##_decode(f);                                                 \
        if (rc == 0)                                                                       \
            roundtrip(f, #T, enc_##name, NULL);                                            \
        return rc;                                                                         \
    }

FUZZ_MSGS(DEFINE_MSG, DEFINE_EMPTY)

#define ENTRY_MSG(T, name, prep) [PROTO_MSG_##T] = check_##name,
#define ENTRY_EMPTY(T, name) [PROTO_MSG_##T] = check_##name,

static int (*const checks[PROTO_MSG_MAX])(const proto_frame *f) = {
    FUZZ_MSGS(ENTRY_MSG, ENTRY_EMPTY)
};

/* Decode with the decoder of `type` and check the round trip; see fuzz.h. */
int fuzz_msg_check(const proto_frame *f, int type)
{
    FUZZ_ASSERT(type > 0 && type < PROTO_MSG_MAX && checks[type],
                "no decoder for message type %d in tests/fuzz/common.c", type);
    int rc = checks[type](f);
    FUZZ_ASSERT(rc <= 0 && rc >= PROTO_ERR_MIN, "%s decoder returned %d, not 0 or a PROTO_ERR_*",
                proto_msg_name(type), rc);
    if (f->hdr.type != type)
        FUZZ_ASSERT(rc == PROTO_ERR_INVALID,
                    "the %s decoder accepted a frame of type %d (%s): %d (%s)",
                    proto_msg_name(type), f->hdr.type, proto_msg_name(f->hdr.type), rc,
                    proto_strerror(rc));
    return rc;
}

/* Every type below PROTO_MSG_MAX has a line in FUZZ_MSGS. */
void fuzz_msg_table_check(void)
{
    for (int t = 1; t < PROTO_MSG_MAX; t++) {
        if (!checks[t]) {
            fprintf(stderr,
                    "fuzz: message type %d (%s) has no decoder in the fuzz table: add a line "
                    "for it to FUZZ_MSGS in tests/fuzz/common.c\n",
                    t, proto_msg_name(t) ? proto_msg_name(t) : "no name");
            abort();
        }
    }
}

/* ----------------------------------------------------------------- gzip */

/* One gzip member of buf; see fuzz.h.  A small window and memLevel keep
 * deflate's own allocations small (it runs once per input). */
int fuzz_gzip(const uint8_t *buf, size_t len, int level, uint8_t **out, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    *out = NULL;
    *outlen = 0;
    if (deflateInit2(&zs, level, Z_DEFLATED, 16 + 9, 1, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t cap = deflateBound(&zs, (uLong)len) + 32;
    uint8_t *o = malloc(cap);
    if (!o) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = (Bytef *)(uintptr_t)buf;
    zs.avail_in = (uInt)len;
    zs.next_out = o;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        free(o);
        return -1;
    }
    *out = o;
    *outlen = n;
    return 0;
}
