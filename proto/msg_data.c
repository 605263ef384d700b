/* msg_data.c - PULL, WEIGHTS, PUSH and ACK: moving parameters and gradients
 * (docs/protocol.md).  Float slices are little-endian on the wire; decoders
 * return a pointer to them inside the payload and never cast it to float *
 * (it need not be aligned): proto_floats_decode() copies them out.
 */
#include <string.h>

#include "proto.h"

/* Float count of a slice [lo, hi) that must fit one frame with `fixed`
 * payload bytes before it; 0 if it cannot. */
static size_t slice_fits(uint64_t lo, uint64_t hi, size_t fixed)
{
    uint64_t n = hi - lo;
    if (hi <= lo || n > (PROTO_MAX_FRAME_LIMIT - PROTO_HEADER_SIZE - fixed) / 4)
        return 0;
    return (size_t)n;
}

/* Check a decoded slice: [lo, hi) non-empty, and exactly hi - lo floats in
 * the `body` bytes after the fixed part. */
static int slice_check(uint64_t lo, uint64_t hi, size_t body)
{
    if (hi <= lo)
        return PROTO_ERR_RANGE;
    if (body % 4 != 0 || hi - lo != body / 4)
        return PROTO_ERR_BAD_FRAME;
    return 0;
}

/* ------------------------------------------------------------------ PULL */

/* Encode a PULL frame. */
int proto_pull_encode(const proto_pull *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    *len = 0;
    if (m->hi <= m->lo)
        return PROTO_ERR_INVALID;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_PULL, 0, request_id, PROTO_PULL_SIZE);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->min_version);
    proto_put_be64(p + 8, m->lo);
    proto_put_be64(p + 16, m->hi);
    return 0;
}

/* Decode a PULL frame. */
int proto_pull_decode(const proto_frame *f, proto_pull *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_PULL);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    out->min_version = proto_get_be64(p);
    out->lo = proto_get_be64(p + 8);
    out->hi = proto_get_be64(p + 16);
    return out->hi <= out->lo ? PROTO_ERR_RANGE : 0;
}

/* --------------------------------------------------------------- WEIGHTS */

/* Encode a WEIGHTS frame. */
int proto_weights_encode_head(const proto_weights *m, uint32_t request_id, uint8_t *buf,
                              size_t cap, size_t *len, size_t *nfloats)
{
    *len = 0;
    *nfloats = 0;
    if (m->hi <= m->lo)
        return PROTO_ERR_INVALID;
    size_t n = 0;
    if (!m->not_modified) {
        n = slice_fits(m->lo, m->hi, PROTO_WEIGHTS_FIXED);
        if (n == 0)
            return PROTO_ERR_TOO_LARGE;
    }
    size_t whole;
    int rc = proto_frame_start(NULL, 0, &whole, PROTO_MSG_WEIGHTS,
                               m->not_modified ? PROTO_FLAG_NOT_MODIFIED : 0, request_id,
                               PROTO_WEIGHTS_FIXED + 4 * n);
    if (rc != PROTO_ERR_NOSPACE)
        return rc;
    *len = PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED;
    *nfloats = n;
    if (!buf || cap < *len)
        return PROTO_ERR_NOSPACE;
    rc = proto_header_encode(buf, PROTO_MSG_WEIGHTS,
                             m->not_modified ? PROTO_FLAG_NOT_MODIFIED : 0, request_id,
                             PROTO_WEIGHTS_FIXED + 4 * n);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->version);
    proto_put_be64(p + 8, m->lo);
    proto_put_be64(p + 16, m->hi);
    return 0;
}

int proto_weights_encode(const proto_weights *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len)
{
    size_t head, n;
    if (!m->not_modified && !m->values) {
        *len = 0;
        return PROTO_ERR_INVALID;
    }
    int rc = proto_weights_encode_head(m, request_id, NULL, 0, &head, &n);
    if (rc != PROTO_ERR_NOSPACE)
        return rc;
    *len = head + 4 * n;
    if (!buf || cap < *len)
        return PROTO_ERR_NOSPACE;
    rc = proto_weights_encode_head(m, request_id, buf, cap, &head, &n);
    if (rc)
        return rc;
    proto_floats_encode(buf + head, m->values, n);
    return 0;
}

/* Decode a WEIGHTS frame. */
int proto_weights_decode(const proto_frame *f, proto_weights *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_WEIGHTS);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    out->version = proto_get_be64(p);
    out->lo = proto_get_be64(p + 8);
    out->hi = proto_get_be64(p + 16);
    out->not_modified = (f->hdr.flags & PROTO_FLAG_NOT_MODIFIED) != 0;
    out->values = NULL;
    out->raw = NULL;
    size_t body = f->payload_len - PROTO_WEIGHTS_FIXED;
    if (out->not_modified) {
        if (out->hi <= out->lo)
            return PROTO_ERR_RANGE;
        return body == 0 ? 0 : PROTO_ERR_BAD_FRAME;
    }
    rc = slice_check(out->lo, out->hi, body);
    if (rc)
        return rc;
    out->raw = p + PROTO_WEIGHTS_FIXED;
    return 0;
}

/* ------------------------------------------------------------------ PUSH */

/* Encode a PUSH frame. */
int proto_push_encode(const proto_push *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    *len = 0;
    if (m->seq == 0 || m->samples == 0 || m->hi <= m->lo || !m->values)
        return PROTO_ERR_INVALID;
    size_t n = slice_fits(m->lo, m->hi, PROTO_PUSH_FIXED);
    if (n == 0)
        return PROTO_ERR_TOO_LARGE;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_PUSH, 0, request_id,
                               PROTO_PUSH_FIXED + 4 * n);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->seq);
    proto_put_be64(p + 8, m->base_version);
    proto_put_be64(p + 16, m->step);
    proto_put_be32(p + 24, m->samples);
    proto_put_be32(p + 28, 0); /* reserved */
    proto_put_be64(p + 32, m->lo);
    proto_put_be64(p + 40, m->hi);
    proto_floats_encode(p + PROTO_PUSH_FIXED, m->values, n);
    return 0;
}

/* Decode a PUSH frame. */
int proto_push_decode(const proto_frame *f, proto_push *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_PUSH);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    out->seq = proto_get_be64(p);
    out->base_version = proto_get_be64(p + 8);
    out->step = proto_get_be64(p + 16);
    out->samples = proto_get_be32(p + 24);
    out->lo = proto_get_be64(p + 32);
    out->hi = proto_get_be64(p + 40);
    out->values = NULL;
    out->raw = NULL;
    if (out->seq == 0 || out->samples == 0 || proto_get_be32(p + 28) != 0)
        return PROTO_ERR_BAD_FRAME;
    rc = slice_check(out->lo, out->hi, f->payload_len - PROTO_PUSH_FIXED);
    if (rc)
        return rc;
    out->raw = p + PROTO_PUSH_FIXED;
    return 0;
}

/* ------------------------------------------------------------------- ACK */

/* Encode an ACK frame. */
int proto_ack_encode(const proto_ack *m, uint32_t request_id, uint8_t *buf, size_t cap,
                     size_t *len)
{
    *len = 0;
    if (m->seq == 0 || m->status == 0 || m->status >= PROTO_ACK_STATUS_MAX)
        return PROTO_ERR_INVALID;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_ACK, 0, request_id, PROTO_ACK_SIZE);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->seq);
    proto_put_be64(p + 8, m->version);
    proto_put_be32(p + 16, m->status);
    return 0;
}

/* Decode an ACK frame. */
int proto_ack_decode(const proto_frame *f, proto_ack *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_ACK);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    out->seq = proto_get_be64(p);
    out->version = proto_get_be64(p + 8);
    out->status = proto_get_be32(p + 16);
    if (out->seq == 0 || out->status == 0 || out->status >= PROTO_ACK_STATUS_MAX)
        return PROTO_ERR_BAD_FRAME;
    return 0;
}
