/* msg_data.c - PULL, WEIGHTS, PUSH and ACK: moving parameters and gradients
 * (docs/protocol.md).  Float slices are little-endian on the wire; decoders
 * return a pointer to them inside the payload and never cast it to float *
 * (it need not be aligned): proto_floats_decode() copies them out.
 */
#include <string.h>

#include "compress.h"
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

/* A dense body (fp32 or fp16) of [lo, hi): exactly one value per entry. */
static int dense_check(uint8_t enc, uint64_t lo, uint64_t hi, size_t body)
{
    if (enc == PROTO_ENC_FP32)
        return slice_check(lo, hi, body);
    if (hi <= lo)
        return PROTO_ERR_RANGE;
    return body % 2 != 0 || hi - lo != body / 2 ? PROTO_ERR_BAD_FRAME : 0;
}

/* The header flag of an encoding on PULL/WEIGHTS; 0xff if it has none. */
static uint8_t enc_flag(uint8_t enc)
{
    switch (enc) {
    case PROTO_ENC_FP32: return 0;
    case PROTO_ENC_FP16: return PROTO_FLAG_FP16;
    case PROTO_ENC_SPARSE: return PROTO_FLAG_DELTA;
    default: return 0xff;
    }
}

/* The encoding of PULL/WEIGHTS flags, or -1 if both encoding flags are set. */
static int flag_enc(uint8_t flags)
{
    int f16 = (flags & PROTO_FLAG_FP16) != 0, delta = (flags & PROTO_FLAG_DELTA) != 0;
    if (f16 && delta)
        return -1;
    return f16 ? PROTO_ENC_FP16 : delta ? PROTO_ENC_SPARSE : PROTO_ENC_FP32;
}

/* A sparse body's error as the message decoders report it. */
static int cmp_to_proto(int rc)
{
    return rc == PROTO_CMP_INDEX_RANGE ? PROTO_ERR_RANGE : PROTO_ERR_BAD_FRAME;
}

/* ------------------------------------------------------------------ PULL */

/* Encode a PULL frame (seed: only with SPARSE). */
int proto_pull_encode(const proto_pull *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    *len = 0;
    uint8_t fl = enc_flag(m->encoding);
    if (m->hi <= m->lo || fl == 0xff || (m->seed && m->encoding != PROTO_ENC_SPARSE))
        return PROTO_ERR_INVALID;
    if (m->seed)
        fl |= PROTO_FLAG_SEED;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_PULL, fl, request_id,
                               PROTO_PULL_SIZE + (m->seed ? 4 : 0));
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->min_version);
    proto_put_be64(p + 8, m->lo);
    proto_put_be64(p + 16, m->hi);
    if (m->seed)
        proto_put_be32(p + 24, m->seed_crc);
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
    int enc = flag_enc(f->hdr.flags);
    out->seed = (f->hdr.flags & PROTO_FLAG_SEED) != 0;
    out->seed_crc = 0;
    /* SEED: only with DELTA, and then exactly 4 more bytes */
    if (enc < 0 || (out->seed && enc != PROTO_ENC_SPARSE) ||
        f->payload_len != PROTO_PULL_SIZE + (out->seed ? 4u : 0u))
        return PROTO_ERR_BAD_FRAME;
    if (out->seed)
        out->seed_crc = proto_get_be32(p + 24);
    out->encoding = (uint8_t)enc;
    return out->hi <= out->lo ? PROTO_ERR_RANGE : 0;
}

/* --------------------------------------------------------------- WEIGHTS */

/* Payload bytes of a WEIGHTS for m (not modified, FP32, FP16 or a delta);
 * 0 if it cannot be encoded (range, encoding, size). */
static size_t weights_payload(const proto_weights *m, size_t *nvals)
{
    *nvals = 0;
    if (m->hi <= m->lo)
        return 0;
    if (m->not_modified)
        return PROTO_WEIGHTS_FIXED;
    size_t n = slice_fits(m->lo, m->hi, PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED);
    if (n == 0)
        return 0;
    switch (m->encoding) {
    case PROTO_ENC_FP32:
        *nvals = n;
        return PROTO_WEIGHTS_FIXED + 4 * n;
    case PROTO_ENC_FP16:
        *nvals = n;
        return PROTO_WEIGHTS_FIXED + 2 * n;
    case PROTO_ENC_SPARSE: {
        if (!m->values || (!m->base && !m->idx) || (m->idx && m->count > n))
            return 0;
        size_t c = m->count;
        size_t body = m->idx ? proto_sparse_size(m->idx, c) : proto_delta_size(m->base, m->values, n, &c);
        *nvals = c;
        if (body > PROTO_MAX_FRAME_LIMIT - PROTO_HEADER_SIZE - PROTO_WEIGHTS_FIXED -
                       PROTO_WEIGHTS_DELTA_FIXED)
            return 0;
        return PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED + body;
    }
    default:
        return 0;
    }
}

static uint8_t weights_flags(const proto_weights *m)
{
    return m->not_modified ? PROTO_FLAG_NOT_MODIFIED : enc_flag(m->encoding);
}

/* Encode the head of a FP32/FP16 WEIGHTS frame. */
int proto_weights_encode_head(const proto_weights *m, uint32_t request_id, uint8_t *buf,
                              size_t cap, size_t *len, size_t *nfloats)
{
    *len = 0;
    *nfloats = 0;
    if (m->hi <= m->lo || (!m->not_modified && m->encoding != PROTO_ENC_FP32 &&
                           m->encoding != PROTO_ENC_FP16))
        return PROTO_ERR_INVALID;
    size_t n;
    size_t payload = weights_payload(m, &n);
    if (payload == 0)
        return PROTO_ERR_TOO_LARGE;
    size_t whole;
    int rc = proto_frame_start(NULL, 0, &whole, PROTO_MSG_WEIGHTS, weights_flags(m), request_id,
                               payload);
    if (rc != PROTO_ERR_NOSPACE)
        return rc;
    *len = PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED;
    *nfloats = n;
    if (!buf || cap < *len)
        return PROTO_ERR_NOSPACE;
    rc = proto_header_encode(buf, PROTO_MSG_WEIGHTS, weights_flags(m), request_id, payload);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->version);
    proto_put_be64(p + 8, m->lo);
    proto_put_be64(p + 16, m->hi);
    return 0;
}

/* Encode a WEIGHTS frame. */
int proto_weights_encode(const proto_weights *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len)
{
    *len = 0;
    if (m->hi <= m->lo || (!m->not_modified && (!m->values || m->encoding >= PROTO_ENC_MAX ||
                                                (m->encoding == PROTO_ENC_SPARSE && !m->base &&
                                                 !m->idx))))
        return PROTO_ERR_INVALID;
    if (!m->not_modified && m->encoding == PROTO_ENC_SPARSE && m->idx)
        for (size_t j = 0; j < m->count; j++)
            if (m->idx[j] >= m->hi - m->lo || (j > 0 && m->idx[j] <= m->idx[j - 1]))
                return PROTO_ERR_INVALID;
    if (m->not_modified || m->encoding != PROTO_ENC_SPARSE) {
        size_t head, n;
        int rc = proto_weights_encode_head(m, request_id, NULL, 0, &head, &n);
        if (rc != PROTO_ERR_NOSPACE)
            return rc;
        size_t esz = m->encoding == PROTO_ENC_FP16 ? 2 : 4;
        *len = head + esz * n;
        if (!buf || cap < *len)
            return PROTO_ERR_NOSPACE;
        rc = proto_weights_encode_head(m, request_id, buf, cap, &head, &n);
        if (rc)
            return rc;
        if (m->encoding == PROTO_ENC_FP16)
            proto_fp16_encode(buf + head, m->values, n);
        else
            proto_floats_encode(buf + head, m->values, n);
        return 0;
    }
    size_t c;
    size_t payload = weights_payload(m, &c);
    if (payload == 0)
        return PROTO_ERR_TOO_LARGE;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_WEIGHTS, PROTO_FLAG_DELTA, request_id,
                               payload);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->version);
    proto_put_be64(p + 8, m->lo);
    proto_put_be64(p + 16, m->hi);
    proto_put_be64(p + 24, m->base_version);
    uint8_t *body = p + PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED;
    if (m->idx)
        proto_sparse_encode(body, m->idx, m->values, c);
    else
        proto_delta_encode(body, m->base, m->values, (size_t)(m->hi - m->lo), c);
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
    out->base = NULL;
    out->raw = NULL;
    out->raw_len = 0;
    out->count = 0;
    out->base_version = 0;
    int enc = flag_enc(f->hdr.flags);
    if (enc < 0 || (out->not_modified && enc != PROTO_ENC_FP32))
        return PROTO_ERR_BAD_FRAME;
    out->encoding = (uint8_t)enc;
    size_t body = f->payload_len - PROTO_WEIGHTS_FIXED;
    if (out->hi <= out->lo)
        return PROTO_ERR_RANGE;
    if (out->not_modified)
        return body == 0 ? 0 : PROTO_ERR_BAD_FRAME;
    uint64_t n = out->hi - out->lo;
    switch (enc) {
    case PROTO_ENC_FP32:
    case PROTO_ENC_FP16:
        rc = dense_check((uint8_t)enc, out->lo, out->hi, body);
        if (rc)
            return rc;
        break;
    default: /* delta: a range no full frame could carry is refused, as the encoder does */
        if (body < PROTO_WEIGHTS_DELTA_FIXED)
            return PROTO_ERR_BAD_FRAME;
        if (slice_fits(out->lo, out->hi, PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED) == 0)
            return PROTO_ERR_RANGE;
        out->base_version = proto_get_be64(p + PROTO_WEIGHTS_FIXED);
        rc = proto_sparse_check(p + PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED,
                                body - PROTO_WEIGHTS_DELTA_FIXED, n > SIZE_MAX ? SIZE_MAX : (size_t)n,
                                &out->count);
        if (rc)
            return cmp_to_proto(rc);
        out->raw = p + PROTO_WEIGHTS_FIXED + PROTO_WEIGHTS_DELTA_FIXED;
        out->raw_len = body - PROTO_WEIGHTS_DELTA_FIXED;
        return 0;
    }
    out->raw = p + PROTO_WEIGHTS_FIXED;
    out->raw_len = body;
    return 0;
}

/* A decoded WEIGHTS' values into dst. */
int proto_weights_values(const proto_weights *w, float *dst)
{
    if (w->not_modified || !w->raw)
        return PROTO_ERR_INVALID;
    size_t n = (size_t)(w->hi - w->lo);
    switch (w->encoding) {
    case PROTO_ENC_FP32:
        proto_floats_decode(dst, w->raw, n);
        return 0;
    case PROTO_ENC_FP16:
        proto_fp16_decode(dst, w->raw, n);
        return 0;
    default:
        return proto_sparse_apply(w->raw, w->raw_len, n, dst) == 0 ? 0 : PROTO_ERR_INVALID;
    }
}

/* ------------------------------------------------------------------ PUSH */

/* Body bytes of m's values; 0 if they cannot be encoded. */
static size_t push_body(const proto_push *m)
{
    size_t n = slice_fits(m->lo, m->hi, PROTO_PUSH_FIXED);
    if (n == 0)
        return 0;
    switch (m->encoding) {
    case PROTO_ENC_FP32: return 4 * n;
    case PROTO_ENC_FP16: return 2 * n;
    case PROTO_ENC_SPARSE: {
        if (m->count > n)
            return 0;
        size_t b = proto_sparse_size(m->idx, m->count);
        return b > PROTO_MAX_FRAME_LIMIT - PROTO_HEADER_SIZE - PROTO_PUSH_FIXED ? 0 : b;
    }
    default: return 0;
    }
}

/* Encode a PUSH frame. */
int proto_push_encode(const proto_push *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    *len = 0;
    if (m->seq == 0 || m->samples == 0 || m->hi <= m->lo || m->encoding >= PROTO_ENC_MAX ||
        (!m->values && !(m->encoding == PROTO_ENC_SPARSE && m->count == 0)))
        return PROTO_ERR_INVALID;
    if (m->encoding == PROTO_ENC_SPARSE) {
        if (m->count > 0 && !m->idx)
            return PROTO_ERR_INVALID;
        for (size_t j = 0; j < m->count; j++)
            if (m->idx[j] >= m->hi - m->lo || (j > 0 && m->idx[j] <= m->idx[j - 1]))
                return PROTO_ERR_INVALID;
    }
    size_t body = push_body(m);
    if (body == 0)
        return PROTO_ERR_TOO_LARGE;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_PUSH, 0, request_id,
                               PROTO_PUSH_FIXED + body);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->seq);
    proto_put_be64(p + 8, m->base_version);
    proto_put_be64(p + 16, m->step);
    proto_put_be32(p + 24, m->samples);
    proto_put_be32(p + 28, m->encoding);
    proto_put_be64(p + 32, m->lo);
    proto_put_be64(p + 40, m->hi);
    size_t n = (size_t)(m->hi - m->lo);
    switch (m->encoding) {
    case PROTO_ENC_FP32:
        proto_floats_encode(p + PROTO_PUSH_FIXED, m->values, n);
        break;
    case PROTO_ENC_FP16:
        proto_fp16_encode(p + PROTO_PUSH_FIXED, m->values, n);
        break;
    default:
        proto_sparse_encode(p + PROTO_PUSH_FIXED, m->idx, m->values, m->count);
        break;
    }
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
    out->encoding = proto_get_be32(p + 28);
    out->lo = proto_get_be64(p + 32);
    out->hi = proto_get_be64(p + 40);
    out->values = NULL;
    out->idx = NULL;
    out->count = 0;
    out->raw = NULL;
    out->raw_len = 0;
    if (out->seq == 0 || out->samples == 0 || out->encoding >= PROTO_ENC_MAX)
        return PROTO_ERR_BAD_FRAME;
    size_t body = f->payload_len - PROTO_PUSH_FIXED;
    if (out->hi <= out->lo)
        return PROTO_ERR_RANGE;
    uint64_t n = out->hi - out->lo;
    switch (out->encoding) {
    case PROTO_ENC_FP32:
    case PROTO_ENC_FP16:
        rc = dense_check(out->encoding, out->lo, out->hi, body);
        if (rc)
            return rc;
        break;
    default: /* a range no fp32 frame could carry is refused, as the encoder does */
        if (slice_fits(out->lo, out->hi, PROTO_PUSH_FIXED) == 0)
            return PROTO_ERR_RANGE;
        rc = proto_sparse_check(p + PROTO_PUSH_FIXED, body, n > SIZE_MAX ? SIZE_MAX : (size_t)n,
                                &out->count);
        if (rc)
            return cmp_to_proto(rc);
        break;
    }
    out->raw = p + PROTO_PUSH_FIXED;
    out->raw_len = body;
    return 0;
}

/* A decoded PUSH's gradient into dst. */
void proto_push_values(const proto_push *p, float *dst)
{
    size_t n = (size_t)(p->hi - p->lo);
    switch (p->encoding) {
    case PROTO_ENC_FP32:
        proto_floats_decode(dst, p->raw, n);
        break;
    case PROTO_ENC_FP16:
        proto_fp16_decode(dst, p->raw, n);
        break;
    default:
        memset(dst, 0, n * sizeof(float));
        (void)proto_sparse_apply(p->raw, p->raw_len, n, dst); /* checked by the decoder */
        break;
    }
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
