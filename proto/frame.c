/* frame.c - the frame header, the incremental stream decoder, the per-type
 * flag and size table, float conversion, and error names.
 *
 * The decoder is a two-state machine (head -> payload -> head ...): the
 * 16 bytes of prefix and header are always gathered in a small array, the
 * prefix is judged as soon as its 4 bytes are in (so an oversized frame is
 * refused before anything else is read or allocated), the header as soon as
 * its 12 are in, and the payload is handed out in place when it arrived in
 * one piece, else gathered into a buffer of exactly the declared size.
 */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* ------------------------------------------------------------ type table */

typedef struct type_info {
    const char *name;
    uint8_t flags;     /* flags allowed on this type */
    uint32_t min, max; /* payload size bounds */
} type_info;

static const type_info types[PROTO_MSG_MAX] = {
    [0] = {"?", 0, 0, 0},
    [PROTO_MSG_HELLO] = {"HELLO", 0, PROTO_HELLO_FIXED,
                         PROTO_HELLO_FIXED + PROTO_NODE_ID_MAX + PROTO_MODEL_MAX + PROTO_AUTH_MAX},
    [PROTO_MSG_WELCOME] = {"WELCOME", 0, PROTO_WELCOME_FIXED,
                           PROTO_WELCOME_FIXED + PROTO_NODE_ID_MAX + PROTO_MODEL_MAX +
                               PROTO_AUTH_MAX},
    [PROTO_MSG_PULL] = {"PULL", PROTO_FLAG_FP16 | PROTO_FLAG_DELTA | PROTO_FLAG_SEED,
                        PROTO_PULL_SIZE, PROTO_PULL_SIZE + 4},
    [PROTO_MSG_WEIGHTS] = {"WEIGHTS", PROTO_FLAG_NOT_MODIFIED | PROTO_FLAG_FP16 | PROTO_FLAG_DELTA,
                           PROTO_WEIGHTS_FIXED, UINT32_MAX},
    [PROTO_MSG_PUSH] = {"PUSH", 0, PROTO_PUSH_FIXED, UINT32_MAX},
    [PROTO_MSG_ACK] = {"ACK", 0, PROTO_ACK_SIZE, PROTO_ACK_SIZE},
    [PROTO_MSG_STATUS_REQ] = {"STATUS_REQ", 0, 0, 0},
    [PROTO_MSG_STATUS] = {"STATUS", 0, 1, PROTO_STATUS_MAX},
    [PROTO_MSG_REPORT] = {"REPORT", 0, PROTO_REPORT_SIZE, PROTO_REPORT_SIZE},
    [PROTO_MSG_CHECKPOINT] = {"CHECKPOINT", 0, 0, 0},
    [PROTO_MSG_OK] = {"OK", 0, PROTO_OK_SIZE, PROTO_OK_SIZE},
    [PROTO_MSG_ERROR] = {"ERROR", 0, PROTO_ERROR_FIXED, PROTO_ERROR_FIXED + PROTO_ERROR_TEXT_MAX},
    [PROTO_MSG_DONE] = {"DONE", 0, PROTO_DONE_SIZE, PROTO_DONE_SIZE},
    [PROTO_MSG_AUTH] = {"AUTH", 0, PROTO_AUTH_SIZE, PROTO_AUTH_SIZE},
};

/* The handshake's frames are never sealed: the session starts after them. */
static int type_sealable(uint8_t type)
{
    return type != PROTO_MSG_HELLO && type != PROTO_MSG_WELCOME && type != PROTO_MSG_AUTH;
}

/* Name of a message type, "?" if unknown. */
const char *proto_msg_name(int type)
{
    if (type <= 0 || type >= PROTO_MSG_MAX)
        return "?";
    return types[type].name;
}

/* --------------------------------------------------------------- errors */

/* Description of an error code (negative, or the wire's positive value). */
const char *proto_strerror(int code)
{
    if (code > 0)
        code = -code;
    switch (code) {
    case 0: return "success";
    case PROTO_ERR_BAD_FRAME: return "malformed frame";
    case PROTO_ERR_MAGIC: return "bad magic: not a psd frame";
    case PROTO_ERR_VERSION: return "protocol version mismatch";
    case PROTO_ERR_TOO_LARGE: return "frame too large";
    case PROTO_ERR_UNKNOWN_TYPE: return "unknown message type";
    case PROTO_ERR_MODEL: return "model mismatch";
    case PROTO_ERR_RANGE: return "bad parameter range";
    case PROTO_ERR_STATE: return "message not valid in this state";
    case PROTO_ERR_AUTH: return "authentication refused";
    case PROTO_ERR_BUSY: return "busy, try again later";
    case PROTO_ERR_INTERNAL: return "internal error";
    case PROTO_ERR_NOMEM: return "out of memory";
    case PROTO_ERR_NOSPACE: return "buffer too small";
    case PROTO_ERR_INVALID: return "invalid argument";
    case PROTO_ERR_TIMEOUT: return "timed out";
    default: return "unknown error";
    }
}

/* 1 if the connection closes after an ERROR with this code, else 0. */
int proto_err_closes(int code)
{
    if (code > 0)
        code = -code;
    return !(code == PROTO_ERR_BUSY || code == PROTO_ERR_INTERNAL || code == PROTO_ERR_NOMEM);
}

/* --------------------------------------------------------------- floats */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    !defined(PROTO_PORTABLE_FLOATS)
#define PROTO_HOST_LE 1
#else
#define PROTO_HOST_LE 0
#endif

/* Write n floats as little-endian IEEE-754 at dst (any alignment). */
void proto_floats_encode(uint8_t *dst, const float *src, size_t n)
{
    if (n == 0)
        return;
#if PROTO_HOST_LE
    memcpy(dst, src, n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[4 * i] = (uint8_t)u;
        dst[4 * i + 1] = (uint8_t)(u >> 8);
        dst[4 * i + 2] = (uint8_t)(u >> 16);
        dst[4 * i + 3] = (uint8_t)(u >> 24);
    }
#endif
}

/* Read n little-endian IEEE-754 floats at src (any alignment) into dst. */
void proto_floats_decode(float *dst, const uint8_t *src, size_t n)
{
    if (n == 0)
        return;
#if PROTO_HOST_LE
    memcpy(dst, src, n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + 4 * i;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        memcpy(&dst[i], &u, 4);
    }
#endif
}

/* Floats one WEIGHTS/PUSH frame can carry under max_frame. */
size_t proto_max_floats(size_t max_frame)
{
    if (max_frame == 0)
        max_frame = PROTO_MAX_FRAME;
    size_t fixed = PROTO_HEADER_SIZE + PROTO_SEAL_TAG_SIZE +
                   (PROTO_PUSH_FIXED > PROTO_WEIGHTS_FIXED ? PROTO_PUSH_FIXED
                                                           : PROTO_WEIGHTS_FIXED);
    return max_frame > fixed ? (max_frame - fixed) / 4 : 0;
}

/* --------------------------------------------------------------- header */

/* Write prefix and header for a payload of payload_len bytes. */
int proto_header_encode(uint8_t *buf, uint8_t type, uint8_t flags, uint32_t request_id,
                        size_t payload_len)
{
    if (payload_len > PROTO_MAX_FRAME_LIMIT - PROTO_HEADER_SIZE)
        return PROTO_ERR_TOO_LARGE;
    proto_put_be32(buf, (uint32_t)(PROTO_HEADER_SIZE + payload_len));
    proto_put_be32(buf + 4, PROTO_MAGIC);
    proto_put_be16(buf + 8, PROTO_VERSION);
    buf[10] = type;
    buf[11] = flags;
    proto_put_be32(buf + 12, request_id);
    return 0;
}

/* Size a frame, and write its header if it fits in cap. */
int proto_frame_start(uint8_t *buf, size_t cap, size_t *len, uint8_t type, uint8_t flags,
                      uint32_t request_id, size_t payload_len)
{
    if (payload_len > PROTO_MAX_FRAME_LIMIT - PROTO_HEADER_SIZE) {
        *len = 0;
        return PROTO_ERR_TOO_LARGE;
    }
    *len = PROTO_FRAME_OVERHEAD + payload_len;
    if (!buf || cap < *len)
        return PROTO_ERR_NOSPACE;
    return proto_header_encode(buf, type, flags, request_id, payload_len);
}

/* The prefix alone: BAD_FRAME if it cannot hold a header, TOO_LARGE above
 * the maximum. */
static int prefix_check(uint32_t length, size_t max_frame)
{
    if (length < PROTO_HEADER_SIZE)
        return PROTO_ERR_BAD_FRAME;
    if (length > max_frame)
        return PROTO_ERR_TOO_LARGE;
    return 0;
}

/* Flags and payload size against the type's entry (type already valid).  A
 * sealed payload is the plain one plus the tag. */
static int type_check(uint8_t type, uint8_t flags, size_t payload_len)
{
    const type_info *t = &types[type];
    uint8_t allowed = t->flags | (type_sealable(type) ? PROTO_FLAG_SEALED : 0);
    if (flags & ~allowed)
        return PROTO_ERR_BAD_FRAME;
    if (flags & PROTO_FLAG_SEALED) {
        if (payload_len < PROTO_SEAL_TAG_SIZE)
            return PROTO_ERR_BAD_FRAME;
        payload_len -= PROTO_SEAL_TAG_SIZE;
    }
    if (payload_len < t->min || payload_len > t->max)
        return PROTO_ERR_BAD_FRAME;
    return 0;
}

/* Validate a frame start and fill *out once the magic matched. */
int proto_header_decode(const uint8_t *buf, size_t max_frame, proto_header *out)
{
    uint32_t length = proto_get_be32(buf);
    int rc = prefix_check(length, max_frame);
    if (rc)
        return rc;
    if (proto_get_be32(buf + 4) != PROTO_MAGIC)
        return PROTO_ERR_MAGIC;
    out->length = length;
    out->version = proto_get_be16(buf + 8);
    out->type = buf[10];
    out->flags = buf[11];
    out->request_id = proto_get_be32(buf + 12);
    if (out->version != PROTO_VERSION)
        return PROTO_ERR_VERSION;
    if (out->type == 0 || out->type >= PROTO_MSG_MAX)
        return PROTO_ERR_UNKNOWN_TYPE;
    return type_check(out->type, out->flags, length - PROTO_HEADER_SIZE);
}

/* One-shot parse of a frame at the start of buf. */
int proto_frame_parse(const uint8_t *buf, size_t len, size_t max_frame, proto_frame *out)
{
    if (max_frame == 0)
        max_frame = PROTO_MAX_FRAME;
    if (max_frame > PROTO_MAX_FRAME_LIMIT)
        return PROTO_ERR_INVALID;
    if (len < PROTO_PREFIX_SIZE)
        return 0;
    int rc = prefix_check(proto_get_be32(buf), max_frame);
    if (rc)
        return rc;
    if (len < PROTO_FRAME_OVERHEAD)
        return 0;
    rc = proto_header_decode(buf, max_frame, &out->hdr);
    if (rc)
        return rc;
    size_t total = PROTO_PREFIX_SIZE + (size_t)out->hdr.length;
    if (len < total)
        return 0;
    out->payload_len = total - PROTO_FRAME_OVERHEAD;
    out->payload = out->payload_len ? buf + PROTO_FRAME_OVERHEAD : NULL;
    return (int)total;
}

/* Type, flags and size of a frame handed to a message decoder. */
int proto_frame_check(const proto_frame *f, uint8_t type)
{
    if (!f || f->hdr.type != type || type == 0 || type >= PROTO_MSG_MAX)
        return PROTO_ERR_INVALID;
    if ((f->payload_len && !f->payload) || (f->hdr.flags & PROTO_FLAG_SEALED))
        return PROTO_ERR_INVALID;
    return type_check(type, f->hdr.flags, f->payload_len);
}

/* -------------------------------------------------------------- decoder */

/* Initialise d (allocates nothing). */
int proto_decoder_set_max(proto_decoder *d, size_t max_frame)
{
    if (max_frame < PROTO_HEADER_SIZE || max_frame > PROTO_MAX_FRAME_LIMIT ||
        !proto_decoder_idle(d) || d->state == PROTO_DEC_ERROR)
        return PROTO_ERR_INVALID;
    d->max_frame = max_frame;
    return 0;
}

int proto_decoder_init(proto_decoder *d, size_t max_frame)
{
    memset(d, 0, sizeof *d);
    if (max_frame == 0)
        max_frame = PROTO_MAX_FRAME;
    d->state = PROTO_DEC_HEAD;
    d->malloc_fn = malloc;
    d->max_frame = max_frame;
    if (max_frame < PROTO_HEADER_SIZE || max_frame > PROTO_MAX_FRAME_LIMIT) {
        d->state = PROTO_DEC_ERROR;
        d->err = PROTO_ERR_INVALID;
        return PROTO_ERR_INVALID;
    }
    return 0;
}

/* Free d's payload buffer. */
void proto_decoder_free(proto_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
}

/* The header of the current or failed frame, if its magic matched. */
const proto_header *proto_decoder_header(const proto_decoder *d)
{
    return d->have_hdr ? &d->hdr : NULL;
}

/* 1 between frames. */
int proto_decoder_idle(const proto_decoder *d)
{
    return d->state == PROTO_DEC_HEAD && d->head_len == 0;
}

static int decoder_fail(proto_decoder *d, int rc)
{
    d->state = PROTO_DEC_ERROR;
    d->err = rc;
    return rc;
}

/* Hand out the finished frame and get ready for the next one. */
static int decoder_done(proto_decoder *d, const uint8_t *payload, proto_frame *out)
{
    out->hdr = d->hdr;
    out->payload_len = d->need;
    out->payload = d->need ? payload : NULL;
    d->state = PROTO_DEC_HEAD;
    d->head_len = 0;
    d->have = 0;
    d->need = 0;
    return 1;
}

/* Feed bytes; see proto.h. */
int proto_decoder_feed(proto_decoder *d, const uint8_t *buf, size_t len, size_t *consumed,
                       proto_frame *out)
{
    size_t pos = 0;
    *consumed = 0;
    if (d->state == PROTO_DEC_ERROR)
        return d->err;
    if (len && !buf)
        return PROTO_ERR_INVALID;
    /* Between frames the previous frame's payload is no longer in use: drop
     * a large buffer rather than keep it for an idle connection. */
    if (proto_decoder_idle(d) && d->cap > PROTO_DECODER_KEEP)
        proto_decoder_free(d);

    for (;;) {
        if (d->state == PROTO_DEC_HEAD) {
            if (d->head_len == 0)
                d->have_hdr = 0;
            /* Up to the end of the prefix first, so that it is judged
             * before any header byte is taken. */
            size_t stop = d->head_len < PROTO_PREFIX_SIZE ? PROTO_PREFIX_SIZE
                                                          : PROTO_FRAME_OVERHEAD;
            size_t take = stop - d->head_len;
            if (take > len - pos)
                take = len - pos;
            if (take) {
                memcpy(d->head + d->head_len, buf + pos, take);
                d->head_len += take;
                pos += take;
            }
            if (d->head_len < stop) {
                *consumed = pos;
                return 0;
            }
            if (stop == PROTO_PREFIX_SIZE) {
                int rc = prefix_check(proto_get_be32(d->head), d->max_frame);
                if (rc) {
                    *consumed = pos;
                    return decoder_fail(d, rc);
                }
                continue;
            }
            int rc = proto_header_decode(d->head, d->max_frame, &d->hdr);
            d->have_hdr = rc != PROTO_ERR_MAGIC;
            if (rc) {
                *consumed = pos;
                return decoder_fail(d, rc);
            }
            d->need = d->hdr.length - PROTO_HEADER_SIZE;
            d->have = 0;
            d->state = PROTO_DEC_PAYLOAD;
            if (d->need == 0) {
                *consumed = pos;
                return decoder_done(d, NULL, out);
            }
        }

        /* PROTO_DEC_PAYLOAD, need > 0 */
        size_t avail = len - pos;
        if (d->have == 0 && avail >= d->need) { /* in one piece: zero-copy */
            const uint8_t *p = buf + pos;
            pos += d->need;
            *consumed = pos;
            return decoder_done(d, p, out);
        }
        if (avail == 0) {
            *consumed = pos;
            return 0;
        }
        if (d->have == 0 && d->cap < d->need) {
            free(d->buf);
            d->buf = NULL;
            d->cap = 0;
            d->buf = d->malloc_fn(d->need);
            if (!d->buf) {
                *consumed = pos;
                return decoder_fail(d, PROTO_ERR_NOMEM);
            }
            d->cap = d->need;
        }
        size_t take = d->need - d->have;
        if (take > avail)
            take = avail;
        memcpy(d->buf + d->have, buf + pos, take);
        d->have += take;
        pos += take;
        *consumed = pos;
        if (d->have == d->need)
            return decoder_done(d, d->buf, out);
        return 0;
    }
}
