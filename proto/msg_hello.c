/* msg_hello.c - HELLO, WELCOME and AUTH, the handshake (docs/protocol.md).
 *
 * Both start with the same 8 bytes (protocol version, role, auth method and
 * the three variable lengths) and end with node id, model name and auth
 * blob; WELCOME has the shard's range, version and the client's last seen
 * push seq in between.
 */
#include <string.h>

#include "proto.h"

/* Node ids and model names: printable ASCII without space, so they are safe
 * to log and to use as keys. */
static int name_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

/* The fields HELLO and WELCOME share, as the encoder sees them. */
typedef struct hs_common {
    uint8_t role, auth_method;
    uint16_t auth_len;
    const uint8_t *auth;
    uint64_t nparams;
    const char *node_id, *model;
} hs_common;

/* Validate c and return its payload size in *plen. */
static int hs_size(const hs_common *c, size_t fixed, size_t *plen, size_t *id_len,
                   size_t *model_len)
{
    *id_len = strnlen(c->node_id, PROTO_NODE_ID_MAX + 1);
    *model_len = strnlen(c->model, PROTO_MODEL_MAX + 1);
    if (*id_len == 0 || *id_len > PROTO_NODE_ID_MAX || *model_len > PROTO_MODEL_MAX)
        return PROTO_ERR_INVALID;
    if (!name_ok((const uint8_t *)c->node_id, *id_len) ||
        !name_ok((const uint8_t *)c->model, *model_len))
        return PROTO_ERR_INVALID;
    if (c->auth_len > PROTO_AUTH_MAX || (c->auth_len && !c->auth))
        return PROTO_ERR_INVALID;
    *plen = fixed + *id_len + *model_len + c->auth_len;
    return 0;
}

/* Write the shared 16 bytes (version .. nparams) at p and the strings at
 * p + fixed. */
static void hs_write(uint8_t *p, const hs_common *c, size_t fixed, size_t id_len,
                     size_t model_len)
{
    proto_put_be16(p, PROTO_VERSION);
    p[2] = c->role;
    p[3] = c->auth_method;
    p[4] = (uint8_t)id_len;
    p[5] = (uint8_t)model_len;
    proto_put_be16(p + 6, c->auth_len);
    proto_put_be64(p + 8, c->nparams);
    uint8_t *s = p + fixed;
    memcpy(s, c->node_id, id_len);
    memcpy(s + id_len, c->model, model_len);
    if (c->auth_len)
        memcpy(s + id_len + model_len, c->auth, c->auth_len);
}

/* The decoder's view of the shared part. */
typedef struct hs_decoded {
    uint8_t role, auth_method;
    uint16_t auth_len;
    const uint8_t *auth;
    uint64_t nparams;
} hs_decoded;

/* Decode the shared part of a payload with `fixed` fixed bytes; copy the
 * strings to node_id and model (NUL-terminated).  key_len is the blob
 * length the method PROTO_AUTH_KEY has in this message. */
static int hs_read(const uint8_t *p, size_t len, size_t fixed, size_t key_len, hs_decoded *c,
                   char *node_id, char *model)
{
    if (len < fixed)
        return PROTO_ERR_BAD_FRAME;
    if (proto_get_be16(p) != PROTO_VERSION)
        return PROTO_ERR_VERSION;
    c->role = p[2];
    c->auth_method = p[3];
    size_t id_len = p[4], model_len = p[5];
    c->auth_len = proto_get_be16(p + 6);
    c->nparams = proto_get_be64(p + 8);
    if (id_len == 0 || id_len > PROTO_NODE_ID_MAX || model_len > PROTO_MODEL_MAX ||
        c->auth_len > PROTO_AUTH_MAX)
        return PROTO_ERR_BAD_FRAME;
    if (len - fixed != id_len + model_len + c->auth_len)
        return PROTO_ERR_BAD_FRAME;
    const uint8_t *s = p + fixed;
    if (!name_ok(s, id_len) || !name_ok(s + id_len, model_len))
        return PROTO_ERR_BAD_FRAME;
    /* none carries no blob; KEY exactly its nonce (and proof) */
    if (!(c->auth_method == PROTO_AUTH_NONE && c->auth_len == 0) &&
        !(c->auth_method == PROTO_AUTH_KEY && c->auth_len == key_len))
        return PROTO_ERR_AUTH;
    memcpy(node_id, s, id_len);
    node_id[id_len] = '\0';
    memcpy(model, s + id_len, model_len);
    model[model_len] = '\0';
    c->auth = c->auth_len ? s + id_len + model_len : NULL;
    return 0;
}

/* Encode a HELLO frame. */
int proto_hello_encode(const proto_hello *m, uint32_t request_id, uint8_t *buf, size_t cap,
                       size_t *len)
{
    *len = 0;
    if (m->role != PROTO_ROLE_WORKER && m->role != PROTO_ROLE_OPERATOR)
        return PROTO_ERR_INVALID;
    hs_common c = {m->role, m->auth_method, m->auth_len, m->auth, m->nparams, m->node_id,
                   m->model};
    size_t plen, id_len, model_len;
    int rc = hs_size(&c, PROTO_HELLO_FIXED, &plen, &id_len, &model_len);
    if (rc)
        return rc;
    rc = proto_frame_start(buf, cap, len, PROTO_MSG_HELLO, 0, request_id, plen);
    if (rc)
        return rc;
    hs_write(buf + PROTO_FRAME_OVERHEAD, &c, PROTO_HELLO_FIXED, id_len, model_len);
    return 0;
}

/* Decode a HELLO frame. */
int proto_hello_decode(const proto_frame *f, proto_hello *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_HELLO);
    if (rc)
        return rc;
    hs_decoded c;
    rc = hs_read(f->payload, f->payload_len, PROTO_HELLO_FIXED, PROTO_HELLO_AUTH_KEY_LEN, &c,
                 out->node_id, out->model);
    if (rc)
        return rc;
    if (c.role != PROTO_ROLE_WORKER && c.role != PROTO_ROLE_OPERATOR)
        return PROTO_ERR_BAD_FRAME;
    out->role = c.role;
    out->auth_method = c.auth_method;
    out->auth_len = c.auth_len;
    out->auth = c.auth;
    out->nparams = c.nparams;
    return 0;
}

/* Encode a WELCOME frame. */
int proto_welcome_encode(const proto_welcome *m, uint32_t request_id, uint8_t *buf, size_t cap,
                         size_t *len)
{
    *len = 0;
    if (m->role != PROTO_ROLE_SHARD || m->lo >= m->hi || m->hi > m->nparams)
        return PROTO_ERR_INVALID;
    hs_common c = {m->role, m->auth_method, m->auth_len, m->auth, m->nparams, m->node_id,
                   m->model};
    size_t plen, id_len, model_len;
    int rc = hs_size(&c, PROTO_WELCOME_FIXED, &plen, &id_len, &model_len);
    if (rc)
        return rc;
    rc = proto_frame_start(buf, cap, len, PROTO_MSG_WELCOME, 0, request_id, plen);
    if (rc)
        return rc;
    uint8_t *p = buf + PROTO_FRAME_OVERHEAD;
    hs_write(p, &c, PROTO_WELCOME_FIXED, id_len, model_len);
    proto_put_be64(p + 16, m->lo);
    proto_put_be64(p + 24, m->hi);
    proto_put_be64(p + 32, m->param_version);
    proto_put_be64(p + 40, m->last_seq);
    return 0;
}

/* Decode a WELCOME frame. */
int proto_welcome_decode(const proto_frame *f, proto_welcome *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_WELCOME);
    if (rc)
        return rc;
    hs_decoded c;
    rc = hs_read(f->payload, f->payload_len, PROTO_WELCOME_FIXED, PROTO_WELCOME_AUTH_KEY_LEN, &c,
                 out->node_id, out->model);
    if (rc)
        return rc;
    if (c.role != PROTO_ROLE_SHARD)
        return PROTO_ERR_BAD_FRAME;
    const uint8_t *p = f->payload;
    uint64_t lo = proto_get_be64(p + 16), hi = proto_get_be64(p + 24);
    if (lo >= hi || hi > c.nparams)
        return PROTO_ERR_RANGE;
    out->role = c.role;
    out->auth_method = c.auth_method;
    out->auth_len = c.auth_len;
    out->auth = c.auth;
    out->nparams = c.nparams;
    out->lo = lo;
    out->hi = hi;
    out->param_version = proto_get_be64(p + 32);
    out->last_seq = proto_get_be64(p + 40);
    return 0;
}

/* Encode an AUTH frame. */
int proto_auth_encode(const proto_auth *m, uint32_t request_id, uint8_t *buf, size_t cap,
                      size_t *len)
{
    int rc = proto_frame_start(buf, cap, len, PROTO_MSG_AUTH, 0, request_id, PROTO_AUTH_SIZE);
    if (rc)
        return rc;
    memcpy(buf + PROTO_FRAME_OVERHEAD, m->proof, PROTO_AUTH_PROOF_SIZE);
    return 0;
}

/* Decode an AUTH frame. */
int proto_auth_decode(const proto_frame *f, proto_auth *out)
{
    int rc = proto_frame_check(f, PROTO_MSG_AUTH);
    if (rc)
        return rc;
    memcpy(out->proof, f->payload, PROTO_AUTH_PROOF_SIZE);
    return 0;
}
