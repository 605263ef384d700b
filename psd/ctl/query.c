/* query.c - ask many psd shards one request each, concurrently (ctl.h).
 *
 * Ownership: the ctl_query (on ctl_query_run's stack) owns the loop, the
 * one timeout timer and the array of ctl_conns; each ctl_conn embeds its
 * uv_tcp_t and its requests.  Nothing is freed before uv_run has returned,
 * i.e. before every handle's close callback has run, so no callback can see
 * freed memory.
 *
 * A connection's life, driven by conn_set_state():
 *   RESOLVING (host names only) -> CONNECTING -> WAITING (HELLO and the
 *   request written, reading the WELCOME and the reply) -> DONE or FAILED.
 * A PULL cannot be pipelined: it must name the shard's range, which the
 * WELCOME tells, so it is written when the WELCOME arrives (its own write
 * request and buffer, as the HELLO's write may not have completed yet).
 * The WEIGHTS reply (1.7 MB for a lenet shard) is assembled by the frame
 * decoder, bounded by PROTO_MAX_FRAME, and copied out at once.
 * DONE/FAILED are final: the result is recorded once, the socket closed,
 * and later callbacks (a cancelled connect, a late getaddrinfo) are ignored.
 *
 * With a cluster key the HELLO goes alone; the WELCOME's proof is checked,
 * and AUTH (request id 3) and the sealed request (id 2) are written
 * together; the shard's sealed OK to the AUTH comes before the reply.
 */
#include "ctl.h"
#include "secure.h"

#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define CTL_READ_BUF (64u << 10)
#define CTL_OUT_MAX 512 /* HELLO (16 + 64 + 32) and a request (16) */

typedef enum ctl_conn_state {
    CTL_CONN_IDLE = 0,
    CTL_CONN_RESOLVING,
    CTL_CONN_CONNECTING,
    CTL_CONN_WAITING,
    CTL_CONN_DONE,
    CTL_CONN_FAILED,
    CTL_CONN_STATE_MAX
} ctl_conn_state;

static const char *const ctl_conn_state_names[CTL_CONN_STATE_MAX] = {
    "idle", "resolving", "connecting", "waiting for the reply", "done", "failed",
};

typedef struct ctl_query ctl_query;

typedef struct ctl_conn {
    uv_tcp_t tcp;              /* tcp.data = this; open iff tcp_open */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai_req;
    uv_write_t write_req;
    int tcp_open;
    ctl_query *q;
    const placement_node *node;
    ctl_result *res;
    ctl_conn_state state;
    int got_welcome;
    proto_decoder dec;
    uint8_t out[CTL_OUT_MAX];
    size_t out_len;
    uv_write_t pull_req;       /* the PULL, written after the WELCOME */
    uint8_t pull_out[PROTO_FRAME_OVERHEAD + PROTO_PULL_SIZE];
    uint8_t *rbuf;             /* CTL_READ_BUF bytes, owned */
    /* cluster key */
    secure_hs hs;
    secure_session sess;
    int sealed;                /* AUTH written: every frame sealed both ways */
    int authed;                /* the shard's sealed OK to the AUTH came */
    uv_write_t auth_req;       /* AUTH and the sealed request, after the WELCOME */
    uint8_t auth_out[2 * PROTO_FRAME_OVERHEAD + PROTO_AUTH_SIZE + PROTO_PULL_SIZE +
                     PROTO_SEAL_TAG_SIZE];
} ctl_conn;

struct ctl_query {
    uv_loop_t loop;
    uv_timer_t timer;
    int timer_open;
    ctl_req req;
    int timeout_ms;
    const placement *pl;
    ctl_conn *conns;
    int n;
    int unfinished;            /* connections not DONE/FAILED */
    char node_id[PROTO_NODE_ID_MAX + 1];
    const uint8_t *key;        /* the cluster key, or NULL */
};

void ctl_address_format(const placement_node *n, char *out, size_t outlen)
{
    if (n->addr_kind == PLACEMENT_ADDR_IPV6)
        snprintf(out, outlen, "[%s]:%d", n->host, n->port);
    else
        snprintf(out, outlen, "%s:%d", n->host, n->port);
}

void ctl_result_free(ctl_result *r)
{
    free(r->json);
    r->json = NULL;
    r->json_len = 0;
    free(r->weights);
    r->weights = NULL;
}

static void ctl_noop_close_cb(uv_handle_t *h)
{
    (void)h;
}

/* The one place a connection changes state.  Entering DONE or FAILED
 * closes the socket and, after the last connection, the timer. */
static void conn_set_state(ctl_conn *c, ctl_conn_state st)
{
    if (c->state == st)
        return;
    c->state = st;
    if (st != CTL_CONN_DONE && st != CTL_CONN_FAILED)
        return;
    c->res->ok = st == CTL_CONN_DONE;
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, ctl_noop_close_cb);
    ctl_query *q = c->q;
    if (--q->unfinished == 0 && q->timer_open && !uv_is_closing((uv_handle_t *)&q->timer))
        uv_close((uv_handle_t *)&q->timer, ctl_noop_close_cb);
}

static int conn_final(const ctl_conn *c)
{
    return c->state == CTL_CONN_DONE || c->state == CTL_CONN_FAILED;
}

static void conn_fail(ctl_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Record why c failed (the first reason wins) and close it. */
static void conn_fail(ctl_conn *c, const char *fmt, ...)
{
    if (conn_final(c))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res->error, sizeof c->res->error, fmt, ap);
    va_end(ap);
    conn_set_state(c, CTL_CONN_FAILED);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ctl_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->rbuf, CTL_READ_BUF);
}

static void conn_write_cb(uv_write_t *req, int status);

/* The WELCOME named the shard's range: ask for all of it (request id 2). */
static void conn_pull_send(ctl_conn *c)
{
    proto_pull p = {.min_version = 0, .lo = c->res->lo, .hi = c->res->hi};
    size_t len = 0;
    if (proto_pull_encode(&p, 2, c->pull_out, sizeof c->pull_out, &len) != 0) {
        conn_fail(c, "cannot encode the PULL");
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->pull_out, (unsigned)len);
    c->pull_req.data = c;
    int rc = uv_write(&c->pull_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rc != 0)
        conn_fail(c, "write: %s", uv_strerror(rc));
}

/* The request (id 2) for this query into buf (cap bytes); *len its size. */
static int request_encode(ctl_conn *c, uint8_t *buf, size_t cap, size_t *len)
{
    switch (c->q->req) {
    case CTL_REQ_STATUS: return proto_status_req_encode(2, buf, cap, len);
    case CTL_REQ_CHECKPOINT: return proto_checkpoint_encode(2, buf, cap, len);
    case CTL_REQ_PULL: {
        proto_pull p = {.min_version = 0, .lo = c->res->lo, .hi = c->res->hi};
        return proto_pull_encode(&p, 2, buf, cap, len);
    }
    default: return PROTO_ERR_INVALID;
    }
}

/* Cluster key: check the WELCOME's proof, then write AUTH (id 3) and the
 * sealed request (id 2) in one write. */
static void conn_auth_send(ctl_conn *c, const proto_frame *welcome)
{
    proto_auth a;
    int rc = secure_client_welcome(&c->hs, c->q->key, welcome, &c->sess, &a);
    if (rc != 0) {
        conn_fail(c, "the shard's proof does not match our cluster key: it holds another key "
                     "(or the WELCOME was altered on the way)");
        return;
    }
    size_t la = 0, lr = 0;
    rc = proto_auth_encode(&a, 3, c->auth_out, sizeof c->auth_out, &la);
    secure_wipe(&a, sizeof a);
    if (rc == 0)
        rc = request_encode(c, c->auth_out + la, sizeof c->auth_out - la - PROTO_SEAL_TAG_SIZE,
                            &lr);
    if (rc == 0)
        rc = secure_seal(&c->sess.tx, c->auth_out + la, lr, sizeof c->auth_out - la, &lr);
    if (rc != 0) {
        conn_fail(c, "cannot encode the AUTH: %s", proto_strerror(rc));
        return;
    }
    c->sealed = 1;
    uv_buf_t b = uv_buf_init((char *)c->auth_out, (unsigned)(la + lr));
    c->auth_req.data = c;
    rc = uv_write(&c->auth_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rc != 0)
        conn_fail(c, "write: %s", uv_strerror(rc));
}

/* The WEIGHTS answering the PULL: must be the whole range asked for.
 * Copies the floats into the result.  Returns 0, or -1 after conn_fail. */
static int conn_weights(ctl_conn *c, const proto_frame *f)
{
    if (f->hdr.type != PROTO_MSG_WEIGHTS) {
        conn_fail(c, "expected WEIGHTS, got %s", proto_msg_name(f->hdr.type));
        return -1;
    }
    proto_weights w;
    int rc = proto_weights_decode(f, &w);
    if (rc != 0) {
        conn_fail(c, "bad WEIGHTS: %s", proto_strerror(rc));
        return -1;
    }
    if (w.not_modified || w.lo != c->res->lo || w.hi != c->res->hi) {
        conn_fail(c, "WEIGHTS of [%llu, %llu)%s, asked for [%llu, %llu)",
                  (unsigned long long)w.lo, (unsigned long long)w.hi,
                  w.not_modified ? " without floats" : "", (unsigned long long)c->res->lo,
                  (unsigned long long)c->res->hi);
        return -1;
    }
    size_t n = (size_t)(w.hi - w.lo); /* the frame holds 4n bytes: bounded by the decoder */
    c->res->weights = malloc(n * sizeof(float));
    if (!c->res->weights) {
        conn_fail(c, "out of memory for %zu weights", n);
        return -1;
    }
    proto_floats_decode(c->res->weights, w.raw, n);
    c->res->weights_version = w.version;
    return 0;
}

/* Handle one frame from the shard: the WELCOME, then the reply. */
static void conn_frame(ctl_conn *c, const proto_frame *f)
{
    if (f->hdr.type == PROTO_MSG_ERROR) {
        proto_error e;
        if (proto_error_decode(f, &e) != 0) {
            conn_fail(c, "malformed ERROR reply");
            return;
        }
        const char *what = c->got_welcome ? "request refused" : "handshake refused";
        const char *name = proto_strerror(e.code);
        if (!e.text[0])
            conn_fail(c, "%s: %s", what, name);
        else if (strncmp(e.text, name, strlen(name)) == 0) /* psd's text often starts so */
            conn_fail(c, "%s: %s", what, e.text);
        else
            conn_fail(c, "%s: %s: %s", what, name, e.text);
        return;
    }
    if (!c->got_welcome) {
        proto_welcome w;
        if (f->hdr.type != PROTO_MSG_WELCOME || f->hdr.request_id != 1) {
            conn_fail(c, "expected WELCOME, got %s", proto_msg_name(f->hdr.type));
            return;
        }
        int rc = proto_welcome_decode(f, &w);
        if (rc != 0) {
            conn_fail(c, "bad WELCOME: %s", proto_strerror(rc));
            return;
        }
        c->got_welcome = 1;
        c->res->lo = w.lo;
        c->res->hi = w.hi;
        c->res->version = w.param_version;
        c->res->nparams = w.nparams;
        snprintf(c->res->model, sizeof c->res->model, "%s", w.model);
        if (c->q->key)
            conn_auth_send(c, f);
        else if (c->q->req == CTL_REQ_PULL)
            conn_pull_send(c);
        return;
    }
    if (c->q->key && !c->authed) {
        proto_ok ok;
        if (f->hdr.type != PROTO_MSG_OK || f->hdr.request_id != 3 || proto_ok_decode(f, &ok) != 0) {
            conn_fail(c, "expected OK to the AUTH, got %s", proto_msg_name(f->hdr.type));
            return;
        }
        c->authed = 1;
        return;
    }
    if (f->hdr.request_id != 2) {
        conn_fail(c, "reply with unexpected request id %u", f->hdr.request_id);
        return;
    }
    if (c->q->req == CTL_REQ_STATUS) {
        proto_status st;
        if (f->hdr.type != PROTO_MSG_STATUS || proto_status_decode(f, &st) != 0) {
            conn_fail(c, "expected STATUS, got %s", proto_msg_name(f->hdr.type));
            return;
        }
        c->res->json = malloc(st.len + 1);
        if (!c->res->json) {
            conn_fail(c, "out of memory for a %zu-byte status", st.len);
            return;
        }
        memcpy(c->res->json, st.json, st.len);
        c->res->json[st.len] = '\0';
        c->res->json_len = st.len;
    } else if (c->q->req == CTL_REQ_PULL) {
        if (conn_weights(c, f) != 0)
            return;
    } else {
        proto_ok ok;
        if (f->hdr.type != PROTO_MSG_OK || proto_ok_decode(f, &ok) != 0) {
            conn_fail(c, "expected OK, got %s", proto_msg_name(f->hdr.type));
            return;
        }
        c->res->ckpt_version = ok.version;
    }
    conn_set_state(c, CTL_CONN_DONE);
}

/* A whole frame: opened first in a sealed session (in place, in c->rbuf
 * or the decoder's buffer), then handled.  Only a refused AUTH comes in
 * the clear. */
static void conn_frame_open(ctl_conn *c, const proto_frame *f)
{
    int sealed_in = (f->hdr.flags & PROTO_FLAG_SEALED) != 0;
    if (sealed_in != c->sealed &&
        !(c->sealed && !c->authed && !sealed_in && f->hdr.type == PROTO_MSG_ERROR)) {
        conn_fail(c, "%s frame from the shard %s", sealed_in ? "a sealed" : "an unsealed",
                  sealed_in ? "outside a session (it uses a key we do not have?)"
                            : "in a sealed session");
        return;
    }
    if (!sealed_in) {
        conn_frame(c, f);
        return;
    }
    proto_frame plain;
    if (secure_open(&c->sess.rx, f, (uint8_t *)f->payload, f->payload_len, &plain) != 0) {
        conn_fail(c, "a frame from the shard failed authentication");
        return;
    }
    conn_frame(c, &plain);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    ctl_conn *c = st->data;
    (void)buf;
    if (conn_final(c) || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            conn_fail(c, "connection closed by the shard (%s)",
                      c->got_welcome ? "after the handshake" : "during the handshake");
        else
            conn_fail(c, "read: %s", uv_strerror((int)nread));
        return;
    }
    const uint8_t *p = c->rbuf;
    size_t left = (size_t)nread;
    while (left > 0 && !conn_final(c)) {
        size_t used = 0;
        proto_frame f;
        int rc = proto_decoder_feed(&c->dec, p, left, &used, &f);
        if (rc < 0) {
            conn_fail(c, "bad frame from the shard: %s", proto_strerror(rc));
            return;
        }
        p += used;
        left -= used;
        if (rc == 1)
            conn_frame_open(c, &f);
    }
}

static void conn_write_cb(uv_write_t *req, int status)
{
    ctl_conn *c = req->data;
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, "write: %s", uv_strerror(status));
}

/* Encode HELLO (request id 1) and the request (id 2) into c->out. */
static int conn_encode(ctl_conn *c)
{
    const ctl_query *q = c->q;
    proto_hello h = {0};
    h.role = PROTO_ROLE_OPERATOR;
    h.auth_method = PROTO_AUTH_NONE;
    h.nparams = q->pl->nparams;
    snprintf(h.node_id, sizeof h.node_id, "%s", q->node_id);
    snprintf(h.model, sizeof h.model, "%s", q->pl->job.model);
    if (q->key)
        secure_client_hello(&c->hs, &h);
    size_t a = 0, b = 0;
    if (proto_hello_encode(&h, 1, c->out, sizeof c->out, &a) != 0)
        return -1;
    if (q->key) { /* the request follows the AUTH, sealed (conn_auth_send) */
        proto_frame hf;
        if (proto_frame_parse(c->out, a, PROTO_MAX_FRAME, &hf) != (int)a ||
            secure_hs_hello(&c->hs, &hf) != 0)
            return -1;
        c->out_len = a;
        return 0;
    }
    if (q->req == CTL_REQ_PULL) { /* sent after the WELCOME (conn_pull_send) */
        c->out_len = a;
        return 0;
    }
    int rc = q->req == CTL_REQ_STATUS
                 ? proto_status_req_encode(2, c->out + a, sizeof c->out - a, &b)
                 : proto_checkpoint_encode(2, c->out + a, sizeof c->out - a, &b);
    if (rc != 0)
        return -1;
    c->out_len = a + b;
    return 0;
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    ctl_conn *c = req->data;
    if (conn_final(c))
        return;
    if (status < 0) {
        conn_fail(c, "%s", uv_strerror(status));
        return;
    }
    c->res->reached = 1;
    if (conn_encode(c) != 0) {
        conn_fail(c, "cannot encode the request");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rc != 0) {
        conn_fail(c, "%s", uv_strerror(rc));
        return;
    }
    conn_set_state(c, CTL_CONN_WAITING);
}

static void conn_connect(ctl_conn *c, const struct sockaddr *sa)
{
    int rc = uv_tcp_init(&c->q->loop, &c->tcp);
    if (rc != 0) {
        conn_fail(c, "tcp: %s", uv_strerror(rc));
        return;
    }
    c->tcp.data = c;
    c->tcp_open = 1;
    c->connect_req.data = c;
    conn_set_state(c, CTL_CONN_CONNECTING);
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, sa, conn_connect_cb);
    if (rc != 0)
        conn_fail(c, "%s", uv_strerror(rc));
}

static void conn_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    ctl_conn *c = req->data;
    if (!conn_final(c)) {
        if (status < 0 || !ai) {
            conn_fail(c, "cannot resolve %s: %s", c->node->host, uv_strerror(status));
        } else {
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof ss);
            memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
            conn_connect(c, (const struct sockaddr *)&ss);
        }
    }
    uv_freeaddrinfo(ai);
}

static void conn_start(ctl_conn *c)
{
    const placement_node *n = c->node;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc;
    if (n->addr_kind == PLACEMENT_ADDR_IPV4) {
        rc = uv_ip4_addr(n->host, n->port, (struct sockaddr_in *)&ss);
    } else if (n->addr_kind == PLACEMENT_ADDR_IPV6) {
        rc = uv_ip6_addr(n->host, n->port, (struct sockaddr_in6 *)&ss);
    } else {
        char port[16];
        snprintf(port, sizeof port, "%d", n->port);
        struct addrinfo hints = {0};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        c->gai_req.data = c;
        conn_set_state(c, CTL_CONN_RESOLVING);
        rc = uv_getaddrinfo(&c->q->loop, &c->gai_req, conn_resolved_cb, n->host, port, &hints);
        if (rc != 0)
            conn_fail(c, "cannot resolve %s: %s", n->host, uv_strerror(rc));
        return;
    }
    if (rc != 0) {
        conn_fail(c, "bad address %s: %s", n->host, uv_strerror(rc));
        return;
    }
    conn_connect(c, (const struct sockaddr *)&ss);
}

static void query_timeout_cb(uv_timer_t *t)
{
    ctl_query *q = t->data;
    for (int i = 0; i < q->n; i++) {
        ctl_conn *c = &q->conns[i];
        if (conn_final(c))
            continue;
        if (c->state == CTL_CONN_RESOLVING)
            uv_cancel((uv_req_t *)&c->gai_req); /* its callback still runs */
        conn_fail(c, "timed out after %d ms (%s)", q->timeout_ms, ctl_conn_state_names[c->state]);
    }
}

int ctl_query_run(const placement *pl, const int *shards, int n, ctl_req req, int timeout_ms,
                  const uint8_t *key, ctl_result *out, char *err, size_t errlen)
{
    if (n < 0 || req < 0 || req >= CTL_REQ_MAX || timeout_ms <= 0) {
        snprintf(err, errlen, "bad query arguments");
        return -1;
    }
    ctl_query q;
    memset(&q, 0, sizeof q);
    q.req = req;
    q.timeout_ms = timeout_ms;
    q.pl = pl;
    q.n = n;
    q.key = key;
    if (key && secure_init() != 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return -1;
    }
    snprintf(q.node_id, sizeof q.node_id, "psctl.%ld", (long)getpid());
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].shard = shards[i];
        const placement_node *node = placement_shard_node(pl, shards[i]);
        if (node) {
            snprintf(out[i].node, sizeof out[i].node, "%s", node->id);
            ctl_address_format(node, out[i].address, sizeof out[i].address);
        } else {
            snprintf(out[i].error, sizeof out[i].error, "no shard %d in the placement",
                     shards[i]);
        }
    }
    if (n == 0)
        return 0;
    q.conns = calloc((size_t)n, sizeof(*q.conns));
    if (!q.conns) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < n; i++) {
        ctl_conn *c = &q.conns[i];
        c->q = &q;
        c->res = &out[i];
        c->node = placement_shard_node(pl, shards[i]);
        c->rbuf = malloc(CTL_READ_BUF);
        if (!c->rbuf || proto_decoder_init(&c->dec, 0) != 0) {
            snprintf(err, errlen, "out of memory");
            goto out_free;
        }
    }
    if (uv_loop_init(&q.loop) != 0) {
        snprintf(err, errlen, "cannot create the event loop");
        goto out_free;
    }
    uv_timer_init(&q.loop, &q.timer);
    q.timer.data = &q;
    q.timer_open = 1;
    q.unfinished = n;
    uv_timer_start(&q.timer, query_timeout_cb, (uint64_t)timeout_ms, 0);
    for (int i = 0; i < n; i++) {
        ctl_conn *c = &q.conns[i];
        if (!c->node)
            conn_set_state(c, CTL_CONN_FAILED); /* error already set */
        else
            conn_start(c);
    }
    uv_run(&q.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&q.loop) != 0) {
        snprintf(err, errlen, "event loop closed with handles still open");
        goto out_free;
    }
    rc = 0;
out_free:
    for (int i = 0; i < n; i++) {
        proto_decoder_free(&q.conns[i].dec);
        free(q.conns[i].rbuf);
    }
    secure_wipe(q.conns, (size_t)n * sizeof(*q.conns)); /* session keys */
    free(q.conns);
    return rc;
}
