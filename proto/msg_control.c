/* msg_control.c - STATUS_REQ/STATUS, REPORT, CHECKPOINT, OK and ERROR: the
 * operator's and the monitoring side of the protocol (docs/protocol.md).
 */
#include <math.h>
#include <string.h>

#include "proto.h"

/* doubles travel as IEEE-754 binary64, little-endian, like the floats. */
static void put_f64le(uint8_t *p, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static double get_f64le(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* A frame with an empty payload. */
static int empty_encode(uint8_t type, uint32_t request_id, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    return proto_frame_start(buf, cap, len, type, 0, request_id, 0);
}

/* ------------------------------------------------------------ STATUS */

/* Encode a STATUS_REQ frame. */
int proto_status_req_encode(uint32_t request_id, uint8_t *buf, size_t cap, size_t *len)
{
    return empty_encode(PROTO_MSG_STATUS_REQ, request_id, buf, cap, len);
}

/* Decode a STATUS_REQ frame. */
int proto_status_req_decode(const proto_frame *f)
{
    return proto_frame_check(f, PROTO_MSG_STATUS_REQ);
}

/* Encode a STATUS frame. */
int proto_status_encode(const proto_status *m, uint32_t request_id, uint8_t *buf, size_t cap,
                        size_t *len)
{
    *len = 0;
    if (!m->json || m->len == 0 || m->len > PROTO_STATUS_MAX || memchr(m->json, 0, m->len))
        return PROTO_ERR_INVALID;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_STATUS, 0, request_id, m->len);
    if (rc)
        return rc;
    memcpy(buf + PROTO_FRAME_OVERHEAD, m->json, m->len);
    return 0;
}

/* Decode a STATUS frame. */
int proto_status_decode(const proto_frame *f, proto_status *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_STATUS);
    if (rc)
        return rc;
    if (memchr(f->payload, 0, f->payload_len))
        return PROTO_ERR_BAD_FRAME;
    out->json = (const char *)f->payload;
    out->len = f->payload_len;
    return 0;
}

/* ------------------------------------------------------------ REPORT */

static int report_ok(const proto_report *m)
{
    if (!isfinite(m->elapsed_s) || m->elapsed_s < 0)
        return 0;
    if (!isnan(m->test_acc) && !(m->test_acc >= 0 && m->test_acc <= 1))
        return 0;
    if (!isnan(m->test_loss) && !(m->test_loss >= 0))
        return 0;
    return 1;
}

/* Encode a REPORT frame. */
int proto_report_encode(const proto_report *m, uint32_t request_id, uint8_t *buf, size_t cap,
                        size_t *len)
{
    *len = 0;
    if (!report_ok(m))
        return PROTO_ERR_INVALID;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_REPORT, 0, request_id,
                               PROTO_REPORT_SIZE);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be64(p, m->step);
    proto_put_be64(p + 8, m->samples);
    put_f64le(p + 16, m->elapsed_s);
    put_f64le(p + 24, m->test_acc);
    put_f64le(p + 32, m->test_loss);
    return 0;
}

/* Decode a REPORT frame. */
int proto_report_decode(const proto_frame *f, proto_report *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_REPORT);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    out->step = proto_get_be64(p);
    out->samples = proto_get_be64(p + 8);
    out->elapsed_s = get_f64le(p + 16);
    out->test_acc = get_f64le(p + 24);
    out->test_loss = get_f64le(p + 32);
    return report_ok(out) ? 0 : PROTO_ERR_BAD_FRAME;
}

/* ------------------------------------------------------- CHECKPOINT, OK */

/* Encode a CHECKPOINT request frame. */
int proto_checkpoint_encode(uint32_t request_id, uint8_t *buf, size_t cap, size_t *len)
{
    return empty_encode(PROTO_MSG_CHECKPOINT, request_id, buf, cap, len);
}

/* Decode a CHECKPOINT request frame. */
int proto_checkpoint_decode(const proto_frame *f)
{
    return proto_frame_check(f, PROTO_MSG_CHECKPOINT);
}

/* Encode an OK frame. */
int proto_ok_encode(const proto_ok *m, uint32_t request_id, uint8_t *buf, size_t cap,
                    size_t *len)
{
    *len = 0;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_OK, 0, request_id, PROTO_OK_SIZE);
    if (rc)
        return rc;
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD, m->version);
    return 0;
}

/* Decode an OK frame. */
int proto_ok_decode(const proto_frame *f, proto_ok *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_OK);
    if (rc)
        return rc;
    out->version = proto_get_be64(f->payload);
    return 0;
}

/* -------------------------------------------------------------- DONE */

/* Encode a DONE frame. */
int proto_done_encode(const proto_done *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    *len = 0;
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_DONE, 0, request_id, PROTO_DONE_SIZE);
    if (rc)
        return rc;
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD, m->step);
    proto_put_be64(buf + PROTO_FRAME_OVERHEAD + 8, m->samples);
    return 0;
}

/* Decode a DONE frame. */
int proto_done_decode(const proto_frame *f, proto_done *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_DONE);
    if (rc)
        return rc;
    out->step = proto_get_be64(f->payload);
    out->samples = proto_get_be64(f->payload + 8);
    return 0;
}

/* ------------------------------------------------------------- ERROR */

/* Encode an ERROR frame, sanitising and cutting the text. */
int proto_error_encode(const proto_error *m, uint32_t request_id, uint8_t *buf, size_t cap,
                       size_t *len)
{
    *len = 0;
    if (m->code >= 0 || m->code < -65535)
        return PROTO_ERR_INVALID;
    size_t n = strnlen(m->text, PROTO_ERROR_TEXT_MAX);
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_ERROR, 0, request_id,
                               PROTO_ERROR_FIXED + n);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be16(p, (uint16_t)-m->code);
    proto_put_be16(p + 2, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)m->text[i];
        p[PROTO_ERROR_FIXED + i] = c >= 0x20 && c <= 0x7e ? c : '?';
    }
    return 0;
}

/* Decode an ERROR frame. */
int proto_error_decode(const proto_frame *f, proto_error *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_ERROR);
    if (rc)
        return rc;
    const uint8_t *p = f->payload;
    unsigned code = proto_get_be16(p);
    size_t n = proto_get_be16(p + 2);
    if (code == 0 || n > PROTO_ERROR_TEXT_MAX || f->payload_len - PROTO_ERROR_FIXED != n)
        return PROTO_ERR_BAD_FRAME;
    for (size_t i = 0; i < n; i++)
        if (p[PROTO_ERROR_FIXED + i] < 0x20 || p[PROTO_ERROR_FIXED + i] > 0x7e)
            return PROTO_ERR_BAD_FRAME;
    out->code = -(int)code;
    memcpy(out->text, p + PROTO_ERROR_FIXED, n);
    out->text[n] = '\0';
    return 0;
}
