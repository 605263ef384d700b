/* remote.c - see remote.h. */
#include "remote.h"
#include "util.h"

#include "compress.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define POLL_CAP_MS 100 /* poll at most this long, so a stop request is seen */
#define RECV_CHUNK (64u << 10)

static const char *const level_names[REMOTE_LOG_LEVEL_MAX] = {"DEBUG", "INFO", "WARN", "ERROR"};

static const char *const state_names[REMOTE_CONN_STATE_MAX] = {"down", "connecting", "hello",
                                                               "auth", "ready", "wait",
                                                               "pipe", "ahead"};

static double now_s(void)
{
    return trainer_now();
}

void remote_log(const remote *r, remote_log_level level, const char *fmt, ...)
{
    if (level == REMOTE_LOG_DEBUG && !r->verbose)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "workerd[%s] %s %s\n", r->node_id, level_names[level], msg);
}

/* Jitter factor in [0.75, 1.25). */
static double jitter(remote *r)
{
    uint64_t x = r->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->rng = x;
    return 0.75 + 0.5 * (double)(x >> 11) / 9007199254740992.0;
}

/* The one place a connection changes state. */
static void conn_set_state(remote *r, remote_conn *c, remote_conn_state st)
{
    if (c->state != st)
        remote_log(r, REMOTE_LOG_DEBUG, "shard %d (%s:%d): %s -> %s", c->shard, c->host, c->port,
                   state_names[c->state], state_names[st]);
    c->state = st;
}

static void conn_close_fd(remote_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    proto_decoder_free(&c->dec);
    proto_decoder_init(&c->dec, 0);
    c->out_len = c->out_pos = 0;
    c->sealed = 0;
    c->ahead_ready = 0; /* the next pull asks again (the cache stays as it is) */
    secure_wipe(&c->sess, sizeof c->sess);
    secure_hs_wipe(&c->hs);
}

/* The connection broke (or never came up): close it and schedule the next
 * attempt.  Each back-off level is logged once. */
static void conn_fail(remote *r, remote_conn *c, const char *why)
{
    int was_up = c->state >= REMOTE_CONN_READY; /* welcomed: backoff_ms is 0 */
    conn_close_fd(c);
    conn_set_state(r, c, REMOTE_CONN_DOWN);
    if (c->backoff_ms == 0)
        c->backoff_ms = REMOTE_BACKOFF_MIN_MS;
    else
        c->backoff_ms = c->backoff_ms * 2 > REMOTE_BACKOFF_MAX_MS ? REMOTE_BACKOFF_MAX_MS
                                                                  : c->backoff_ms * 2;
    if (c->logged_ms != c->backoff_ms || was_up) {
        remote_log(r, was_up ? REMOTE_LOG_WARN : REMOTE_LOG_INFO,
                   "shard %d (%s:%d): %s; retrying every %d ms", c->shard, c->host, c->port, why,
                   c->backoff_ms);
        c->logged_ms = c->backoff_ms;
    }
    c->retry_at = now_s() + c->backoff_ms * jitter(r) / 1000.0;
}

/* Queue a frame for c behind what is still unsent (a PULL behind a PUSH):
 * enc is called once to size it, once to write it. */
typedef int (*encode_fn)(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                         size_t *len);

static int conn_send_frame(remote *r, remote_conn *c, encode_fn enc, uint32_t req)
{
    size_t len = 0;
    int rc = enc(r, c, req, NULL, 0, &len);
    if (rc != PROTO_ERR_NOSPACE)
        return rc < 0 ? rc : PROTO_ERR_INVALID;
    if (c->out_pos == c->out_len)
        c->out_pos = c->out_len = 0;
    size_t at = c->out_len;
    size_t need = at + len + (c->sealed ? PROTO_SEAL_TAG_SIZE : 0);
    if (need > c->out_cap) {
        uint8_t *b = realloc(c->out, need);
        if (!b)
            return PROTO_ERR_NOMEM;
        c->out = b;
        c->out_cap = need;
    }
    rc = enc(r, c, req, c->out + at, len, &len);
    if (rc == 0 && c->sealed)
        rc = secure_seal(&c->sess.tx, c->out + at, len, c->out_cap - at, &len);
    if (rc < 0)
        return rc;
    c->out_len = at + len;
    return 0;
}

/* Write what can be written now.  Returns 0 or -1 (connection broken). */
static int conn_flush(remote_conn *c)
{
    while (c->out_pos < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (w <= 0)
            return -1;
        c->out_pos += (size_t)w;
        c->bytes_out += (uint64_t)w;
    }
    c->out_len = c->out_pos = 0;
    return 0;
}

/* ------------------------------------------------------------ encoders */

static int enc_hello(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                     size_t *len)
{
    proto_hello h;
    memset(&h, 0, sizeof h);
    h.role = PROTO_ROLE_WORKER;
    h.auth_method = PROTO_AUTH_NONE;
    if (r->have_key) { /* the nonce drawn in conn_connected */
        h.auth_method = PROTO_AUTH_KEY;
        h.auth = c->hs.nonce;
        h.auth_len = PROTO_HELLO_AUTH_KEY_LEN;
    }
    h.nparams = r->nparams;
    snprintf(h.node_id, sizeof h.node_id, "%s", r->node_id);
    snprintf(h.model, sizeof h.model, "%s", r->model);
    return proto_hello_encode(&h, req, buf, cap, len);
}

static uint64_t pull_min_version(const remote *r, const remote_conn *c)
{
    if (r->mode == PLACEMENT_MODE_SYNC)
        return c->want_min;
    return c->have ? c->version + 1 : 0; /* NOT_MODIFIED if nothing new */
}

static int enc_pull(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                    size_t *len)
{
    proto_pull p = {.min_version = pull_min_version(r, c), .lo = c->lo, .hi = c->hi};
    /* a delta needs our copy: having dropped it on this connection, ask
     * once for the full weights (the shard then forgets its shadow); a new
     * connection starts with a full reply, unless the slice is still the
     * initial weights (then the shard sends the changes since them) */
    p.encoding = r->pull_enc == PLACEMENT_PULL_FP16                     ? PROTO_ENC_FP16
                 : (r->pull_enc == PLACEMENT_PULL_DELTA || r->pull_enc == PLACEMENT_PULL_TOPK) &&
                           !c->copy_lost
                     ? PROTO_ENC_SPARSE
                                                                        : PROTO_ENC_FP32;
    if (c->seed && p.encoding == PROTO_ENC_SPARSE) {
        p.seed = 1;
        p.seed_crc = c->seed_crc;
        p.min_version = 0;
    }
    return proto_pull_encode(&p, req, buf, cap, len);
}

static int enc_push(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                    size_t *len)
{
    proto_push p;
    memset(&p, 0, sizeof p);
    p.seq = c->push_seq;
    p.base_version = c->push_base;
    p.step = (uint64_t)r->push_step;
    p.samples = (uint32_t)r->push_samples;
    p.lo = c->lo;
    p.hi = c->hi;
    p.encoding = c->push_enc;
    switch (r->push_enc) {
    case PLACEMENT_PUSH_FP16:
        p.values = r->ef_send + c->lo;
        break;
    case PLACEMENT_PUSH_TOPK:
        if (c->push_enc == PROTO_ENC_SPARSE) {
            p.idx = r->ef_idx + c->lo;
            p.values = r->ef_vals + c->lo;
            p.count = c->push_count;
        } else {
            p.values = r->ef_send + c->lo; /* the sparse form would not be smaller */
        }
        break;
    default:
        p.values = r->push_grad + c->lo;
        break;
    }
    return proto_push_encode(&p, req, buf, cap, len);
}

static int enc_report(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                      size_t *len)
{
    return proto_report_encode(&r->report, req, buf, cap, len);
}

static int enc_done(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                    size_t *len)
{
    (void)c;
    return proto_done_encode(&r->done, req, buf, cap, len);
}

static int enc_auth(remote *r, remote_conn *c, uint32_t req, uint8_t *buf, size_t cap,
                    size_t *len)
{
    (void)r;
    proto_auth a;
    memcpy(a.proof, c->hs.expect, sizeof a.proof); /* the proof to send (conn_on_welcome) */
    return proto_auth_encode(&a, req, buf, cap, len);
}

/* ------------------------------------------------------------ connecting */

/* Start a non-blocking connect to c.  On failure schedules a retry. */
static void conn_start(remote *r, remote_conn *c)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    int g = getaddrinfo(c->host, port, &hints, &ai);
    if (g != 0 || !ai) {
        char why[PLACEMENT_HOST_MAX + 128];
        snprintf(why, sizeof why, "cannot resolve %s: %s", c->host, gai_strerror(g));
        conn_fail(r, c, why);
        return;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        conn_fail(r, c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char e2[512];
    if (r->tcp_congestion[0] && util_tcp_congestion(fd, r->tcp_congestion, e2, sizeof e2) != 0)
        remote_log(r, REMOTE_LOG_WARN, "shard %d: %s", c->shard, e2); /* checked at start */
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int e = errno;
    freeaddrinfo(ai);
    c->fd = fd;
    if (rc != 0 && e != EINPROGRESS) {
        conn_fail(r, c, strerror(e));
        return;
    }
    c->deadline = now_s() + REMOTE_CONNECT_MS / 1000.0;
    conn_set_state(r, c, REMOTE_CONN_CONNECTING);
}

/* The connect finished: check it, then say HELLO. */
static void conn_connected(remote *r, remote_conn *c)
{
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
        e = errno;
    if (e != 0) {
        conn_fail(r, c, strerror(e));
        return;
    }
    uint32_t req = c->next_req++;
    if (r->have_key)
        secure_client_hello(&c->hs, &(proto_hello){0});
    int rc = conn_send_frame(r, c, enc_hello, req);
    proto_frame hf;
    if (rc == 0 && r->have_key &&
        (proto_frame_parse(c->out, c->out_len, PROTO_MAX_FRAME, &hf) != (int)c->out_len ||
         secure_hs_hello(&c->hs, &hf) != 0))
        rc = PROTO_ERR_INVALID;
    if (rc < 0) {
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "cannot encode HELLO: %s",
                 proto_strerror(rc));
        r->fatal = 1;
        return;
    }
    c->wait_req = req;
    conn_set_state(r, c, REMOTE_CONN_HELLO);
    if (conn_flush(c) != 0)
        conn_fail(r, c, "connection lost while sending HELLO");
}

/* Queue the next pull's PULL behind the PUSH just sent (async and ssp). */
static int conn_pull_behind(remote *r, remote_conn *c)
{
    c->pull_req = c->next_req++;
    c->n_pull_sent++;
    c->n_pull_ahead++;
    return conn_send_frame(r, c, enc_pull, c->pull_req);
}

/* After queueing frames for c (rc from conn_send_frame): give up on an
 * encoding failure, else move c to st and write what can be written. */
static void conn_sent(remote *r, remote_conn *c, int rc, remote_conn_state st)
{
    if (rc < 0) {
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "shard %d: cannot encode a request: %s",
                 c->shard, proto_strerror(rc));
        r->fatal = 1;
        return;
    }
    conn_set_state(r, c, st);
    if (conn_flush(c) != 0)
        conn_fail(r, c, "connection lost while sending");
}

/* Send c's part of the current call; in async and ssp a PUSH takes the
 * next pull's PULL along (state PIPE), unless it leaves during the
 * backward pass (c->pull_later: remote_push sends the PULL once the whole
 * gradient is done, so the weights are as fresh as the last slice's). */
static void conn_issue(remote *r, remote_conn *c)
{
    encode_fn enc;
    switch (c->op) {
    case REMOTE_OP_PULL:
        enc = enc_pull;
        c->n_pull_sent++;
        c->ahead_ready = 0;
        break;
    case REMOTE_OP_PUSH:
        c->push_seq = ++c->seq;
        enc = enc_push;
        c->ahead_ready = 0; /* the PULL behind this PUSH brings newer weights */
        break;
    case REMOTE_OP_REPORT:
        enc = enc_report;
        break;
    case REMOTE_OP_DONE:
        enc = enc_done;
        break;
    default:
        c->op_done = 1;
        return;
    }
    uint32_t req = c->next_req++;
    int rc = conn_send_frame(r, c, enc, req);
    int pipe = rc == 0 && c->op == REMOTE_OP_PUSH && r->mode != PLACEMENT_MODE_SYNC &&
               !c->pull_later;
    if (pipe) /* sync: the pull's min_version comes with the ACK */
        rc = conn_pull_behind(r, c);
    if (rc == 0)
        c->wait_req = req;
    conn_sent(r, c, rc, pipe ? REMOTE_CONN_PIPE : REMOTE_CONN_WAIT);
}

/* ------------------------------------------------------------ replies */

/* An ERROR from the shard: a mismatch of model, range, version or auth is
 * a configuration problem (give up); anything else reconnects. */
static void conn_on_error(remote *r, remote_conn *c, const proto_frame *f)
{
    proto_error e;
    if (proto_error_decode(f, &e) != 0) {
        conn_fail(r, c, "undecodable ERROR from the shard");
        return;
    }
    int handshake = c->state == REMOTE_CONN_HELLO || c->state == REMOTE_CONN_AUTH;
    if (e.code == PROTO_ERR_MODEL || e.code == PROTO_ERR_RANGE ||
        e.code == PROTO_ERR_VERSION || (e.code == PROTO_ERR_AUTH && handshake)) {
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "shard %d (%s:%d) refused us: %s: %s",
                 c->shard, c->host, c->port, proto_strerror(e.code), e.text);
        r->fatal = 1;
        return;
    }
    if (c->state == REMOTE_CONN_WAIT && c->op == REMOTE_OP_REPORT && !proto_err_closes(e.code)) {
        remote_log(r, REMOTE_LOG_WARN, "shard %d: REPORT not taken: %s: %s", c->shard,
                   proto_strerror(e.code), e.text);
        c->op_done = 1;
        conn_set_state(r, c, REMOTE_CONN_READY);
        return;
    }
    char why[400];
    snprintf(why, sizeof why, "ERROR %s: %s", proto_strerror(e.code), e.text);
    conn_fail(r, c, why);
}

static void conn_on_welcome(remote *r, remote_conn *c, const proto_frame *f)
{
    proto_welcome w;
    int rc = proto_welcome_decode(f, &w);
    if (rc < 0) {
        conn_fail(r, c, "undecodable WELCOME");
        return;
    }
    if (w.nparams != r->nparams || w.lo != c->lo || w.hi != c->hi) {
        snprintf(r->fatal_msg, sizeof r->fatal_msg,
                 "shard %d (%s:%d) holds [%llu, %llu) of %llu parameters, the placement says "
                 "[%zu, %zu) of %zu",
                 c->shard, c->host, c->port, (unsigned long long)w.lo, (unsigned long long)w.hi,
                 (unsigned long long)w.nparams, c->lo, c->hi, r->nparams);
        r->fatal = 1;
        return;
    }
    if (r->have_key) {
        proto_auth a;
        rc = secure_client_welcome(&c->hs, r->key, f, &c->sess, &a);
        if (rc != 0) {
            snprintf(r->fatal_msg, sizeof r->fatal_msg,
                     "shard %d (%s:%d, node %s): its proof does not match our cluster key: %s",
                     c->shard, c->host, c->port, c->node,
                     w.auth_method == PROTO_AUTH_KEY
                         ? "it holds another key (or the WELCOME was altered on the way)"
                         : "it answered without the key method");
            r->fatal = 1;
            return;
        }
        memcpy(c->hs.expect, a.proof, sizeof a.proof); /* for enc_auth */
        uint32_t req = c->next_req++;
        rc = conn_send_frame(r, c, enc_auth, req);
        secure_hs_wipe(&c->hs);
        if (rc < 0) {
            conn_fail(r, c, "cannot encode AUTH");
            return;
        }
        c->sealed = 1; /* from here on both directions */
        c->wait_req = req;
    }
    if (c->backoff_ms)
        c->n_reconnects++;
    remote_log(r, c->backoff_ms ? REMOTE_LOG_WARN : REMOTE_LOG_INFO,
               "shard %d (%s:%d): connected%s, version %llu, last_seq %llu", c->shard, c->host,
               c->port, r->have_key ? " (authenticated)" : "", (unsigned long long)w.param_version,
               (unsigned long long)w.last_seq);
    c->backoff_ms = 0;
    c->logged_ms = 0;
    c->want_min = 0; /* carry on from the shard's current version */
    if (c->op == REMOTE_OP_PUSH && c->push_seq != 0 && w.last_seq >= c->push_seq) {
        /* the push in flight reached the shard before the connection broke */
        c->op_done = 1;
        c->push_seq = 0;
    }
    if (w.last_seq > c->seq)
        c->seq = w.last_seq;
    if (r->have_key) {
        conn_set_state(r, c, REMOTE_CONN_AUTH);
        if (conn_flush(c) != 0)
            conn_fail(r, c, "connection lost while sending AUTH");
        return;
    }
    conn_set_state(r, c, REMOTE_CONN_READY);
    if (c->op == REMOTE_OP_CONNECT)
        c->op_done = 1;
}

/* WEIGHTS for the pull in progress (WAIT) or for the PULL sent behind the
 * last PUSH (AHEAD): the latter completes a pull call waiting for it, or
 * is kept for the next one (ahead_ready). */
static void conn_on_weights(remote *r, remote_conn *c, const proto_frame *f)
{
    int ahead = c->state == REMOTE_CONN_AHEAD;
    proto_weights w;
    if (proto_weights_decode(f, &w) != 0 || w.lo != c->lo || w.hi != c->hi) {
        conn_fail(r, c, "bad WEIGHTS");
        return;
    }
    if (!w.not_modified && w.encoding == PROTO_ENC_SPARSE &&
        (!c->have || c->version != w.base_version)) {
        conn_fail(r, c, "a delta WEIGHTS against a version we do not hold");
        return;
    }
    conn_set_state(r, c, REMOTE_CONN_READY);
    c->want_min = 0;
    if (w.not_modified) {
        if (!c->have || w.version != c->version) {
            /* nothing cached to reuse: ask again for the current weights */
            c->have = 0;
            c->copy_lost = 1;
            return;
        }
    } else {
        /* fp32 and fp16 overwrite the slice, a delta changes its entries */
        if (proto_weights_values(&w, r->cache + c->lo) != 0) {
            conn_fail(r, c, "bad WEIGHTS");
            return;
        }
        c->version = w.version;
        c->have = 1;
        c->copy_lost = 0;
        if (c->seed) /* the first values on this slice */
            c->seed_used = w.encoding == PROTO_ENC_SPARSE;
        c->seed = 0;
    }
    if (!ahead) {
        c->op_done = 1;
    } else if (c->op == REMOTE_OP_PULL && !c->op_done) {
        c->op_done = 1;
        c->n_pull_served++;
    } else {
        c->ahead_ready = 1;
    }
}

static void conn_on_ack(remote *r, remote_conn *c, const proto_frame *f)
{
    proto_ack a;
    if (proto_ack_decode(f, &a) != 0 || a.seq != c->push_seq) {
        conn_fail(r, c, "bad ACK");
        return;
    }
    if (c->state == REMOTE_CONN_PIPE) { /* the WEIGHTS of the PULL behind it follow */
        c->wait_req = c->pull_req;
        conn_set_state(r, c, REMOTE_CONN_AHEAD);
    } else {
        conn_set_state(r, c, REMOTE_CONN_READY);
    }
    c->push_seq = 0;
    if (c->op == REMOTE_OP_PUSH)
        c->op_done = 1;
    switch (a.status) {
    case PROTO_ACK_APPLIED:
        c->n_applied++;
        break;
    case PROTO_ACK_WAITING:
        c->n_waiting++;
        c->want_min = a.version + 1; /* the version the round will produce */
        break;
    case PROTO_ACK_STALE:
        c->n_stale++;
        remote_log(r, REMOTE_LOG_DEBUG, "shard %d: push seq %llu at version %llu was stale (now %llu)",
                   c->shard, (unsigned long long)a.seq, (unsigned long long)c->version,
                   (unsigned long long)a.version);
        break;
    case PROTO_ACK_FINISHED:
        c->n_finished++;
        if (!r->finished)
            remote_log(r, REMOTE_LOG_INFO, "shard %d: the job has finished (version %llu)",
                       c->shard, (unsigned long long)a.version);
        r->finished = 1;
        break;
    case PROTO_ACK_DUPLICATE:
    default:
        c->n_dup++;
        remote_log(r, REMOTE_LOG_DEBUG, "shard %d: push seq %llu was a duplicate", c->shard,
                   (unsigned long long)a.seq);
        break;
    }
}

static void conn_on_frame(remote *r, remote_conn *c, const proto_frame *f)
{
    if ((c->state != REMOTE_CONN_HELLO && c->state != REMOTE_CONN_AUTH &&
         c->state != REMOTE_CONN_WAIT && c->state != REMOTE_CONN_PIPE &&
         c->state != REMOTE_CONN_AHEAD) ||
        f->hdr.request_id != c->wait_req) {
        char why[128];
        snprintf(why, sizeof why, "unexpected %s (request %u) in state %s",
                 proto_msg_name(f->hdr.type), f->hdr.request_id, state_names[c->state]);
        conn_fail(r, c, why);
        return;
    }
    int t = f->hdr.type;
    if (t == PROTO_MSG_ERROR) {
        conn_on_error(r, c, f);
        return;
    }
    if (c->state == REMOTE_CONN_HELLO && t == PROTO_MSG_WELCOME) {
        conn_on_welcome(r, c, f);
        return;
    }
    if (c->state == REMOTE_CONN_AUTH && t == PROTO_MSG_OK) { /* the session is on */
        conn_set_state(r, c, REMOTE_CONN_READY);
        if (c->op == REMOTE_OP_CONNECT)
            c->op_done = 1;
        return;
    }
    if (c->state == REMOTE_CONN_WAIT) {
        if (c->op == REMOTE_OP_PULL && t == PROTO_MSG_WEIGHTS) {
            conn_on_weights(r, c, f);
            return;
        }
        if (c->op == REMOTE_OP_PUSH && t == PROTO_MSG_ACK) {
            conn_on_ack(r, c, f);
            return;
        }
        if ((c->op == REMOTE_OP_REPORT || c->op == REMOTE_OP_DONE) && t == PROTO_MSG_OK) {
            conn_set_state(r, c, REMOTE_CONN_READY);
            c->op_done = 1;
            return;
        }
    }
    if (c->state == REMOTE_CONN_PIPE && t == PROTO_MSG_ACK) {
        conn_on_ack(r, c, f);
        return;
    }
    if (c->state == REMOTE_CONN_AHEAD && t == PROTO_MSG_WEIGHTS) {
        conn_on_weights(r, c, f);
        return;
    }
    char why[128];
    snprintf(why, sizeof why, "unexpected %s in state %s", proto_msg_name(t),
             state_names[c->state]);
    conn_fail(r, c, why);
}

/* A whole frame: opened first in a sealed session (in place: the payload
 * lies in remote_run's read buffer or the decoder's, both ours), then
 * handled.  Only a refused AUTH is answered in the clear. */
static void conn_frame(remote *r, remote_conn *c, const proto_frame *f)
{
    int sealed_in = (f->hdr.flags & PROTO_FLAG_SEALED) != 0;
    if (sealed_in != c->sealed &&
        !(c->state == REMOTE_CONN_AUTH && !sealed_in && f->hdr.type == PROTO_MSG_ERROR)) {
        conn_fail(r, c, sealed_in ? "a sealed frame from the shard outside a session"
                                  : "an unsealed frame from the shard in a sealed session");
        return;
    }
    if (!sealed_in) {
        conn_on_frame(r, c, f);
        return;
    }
    proto_frame plain;
    if (secure_open(&c->sess.rx, f, (uint8_t *)f->payload, f->payload_len, &plain) != 0) {
        conn_fail(r, c, "a frame from the shard failed authentication");
        return;
    }
    conn_on_frame(r, c, &plain);
}

/* Read what is there and handle every whole frame. */
static void conn_read(remote *r, remote_conn *c, uint8_t *buf)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, RECV_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            conn_fail(r, c, n == 0 ? "the shard closed the connection" : strerror(errno));
            return;
        }
        c->bytes_in += (uint64_t)n;
        const uint8_t *p = buf;
        size_t left = (size_t)n;
        while (left > 0 && c->fd >= 0) {
            size_t used = 0;
            proto_frame f;
            int rc = proto_decoder_feed(&c->dec, p, left, &used, &f);
            if (rc < 0) {
                char why[128];
                snprintf(why, sizeof why, "bad frame from the shard: %s", proto_strerror(rc));
                conn_fail(r, c, why);
                return;
            }
            p += used;
            left -= used;
            if (rc == 1)
                conn_frame(r, c, &f);
            if (r->fatal)
                return;
        }
        if (c->fd < 0)
            return;
    }
}

/* ------------------------------------------------------------ the loop */

/* Run the call set up in every connection's op until all are done.
 * timeout_s > 0 bounds it.  Returns 0, REMOTE_STOPPED, or -1 with a message. */
static int remote_run(remote *r, double timeout_s, char *err, size_t errlen)
{
    uint8_t *buf = malloc(RECV_CHUNK);
    struct pollfd *pfd = calloc((size_t)r->nshards, sizeof *pfd);
    int *who = calloc((size_t)r->nshards, sizeof *who);
    int ret = -1;
    if (!buf || !pfd || !who) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    double end = timeout_s > 0 ? now_s() + timeout_s : 0;
    for (;;) {
        if (r->stop && *r->stop) {
            snprintf(err, errlen, "stopped");
            ret = REMOTE_STOPPED;
            goto out;
        }
        if (r->fatal) {
            snprintf(err, errlen, "%s", r->fatal_msg);
            goto out;
        }
        double now = now_s();
        int all = 1;
        double wake = now + POLL_CAP_MS / 1000.0;
        for (int i = 0; i < r->nshards; i++) {
            remote_conn *c = &r->c[i];
            if (c->op == REMOTE_OP_NONE || c->op_done)
                continue;
            if (c->state == REMOTE_CONN_DOWN && now >= c->retry_at)
                conn_start(r, c);
            if (c->state == REMOTE_CONN_CONNECTING && now >= c->deadline)
                conn_fail(r, c, "connect timed out");
            if (c->state == REMOTE_CONN_READY && !c->op_done)
                conn_issue(r, c);
            if (r->fatal)
                break;
            if (c->state == REMOTE_CONN_DOWN && c->retry_at < wake)
                wake = c->retry_at;
            if (!c->op_done && !(r->until_sent && c->op == REMOTE_OP_PUSH &&
                                 (c->state == REMOTE_CONN_PIPE || c->state == REMOTE_CONN_AHEAD) &&
                                 c->out_len == 0))
                all = 0;
        }
        if (r->fatal)
            continue;
        if (all) {
            ret = 0;
            goto out;
        }
        if (end > 0 && now >= end) {
            int i = 0;
            while (i < r->nshards && (r->c[i].op == REMOTE_OP_NONE || r->c[i].op_done))
                i++;
            remote_conn *c = &r->c[i < r->nshards ? i : 0];
            snprintf(err, errlen, "shard %d (%s:%d, node %s) not reachable within %.0f s",
                     c->shard, c->host, c->port, c->node, timeout_s);
            goto out;
        }
        int n = 0;
        for (int i = 0; i < r->nshards; i++) {
            remote_conn *c = &r->c[i];
            if (c->fd < 0)
                continue;
            pfd[n].fd = c->fd;
            pfd[n].events = POLLIN;
            if (c->state == REMOTE_CONN_CONNECTING || c->out_pos < c->out_len)
                pfd[n].events |= POLLOUT;
            pfd[n].revents = 0;
            who[n++] = i;
        }
        int ms = (int)((wake - now) * 1000.0) + 1;
        if (ms < 0)
            ms = 0;
        if (ms > POLL_CAP_MS)
            ms = POLL_CAP_MS;
        int pr = poll(pfd, (nfds_t)n, ms);
        if (pr < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            goto out;
        }
        if (pr <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            remote_conn *c = &r->c[who[k]];
            short ev = pfd[k].revents;
            if (!ev || c->fd != pfd[k].fd)
                continue;
            if (c->state == REMOTE_CONN_CONNECTING) {
                conn_connected(r, c);
                continue;
            }
            if ((ev & POLLOUT) && conn_flush(c) != 0) {
                conn_fail(r, c, "connection lost while sending");
                continue;
            }
            if (ev & (POLLIN | POLLHUP | POLLERR))
                conn_read(r, c, buf);
            if (r->fatal)
                break;
        }
    }
out:
    free(buf);
    free(pfd);
    free(who);
    return ret;
}

/* Set every connection's op (or only shard `only`'s if >= 0). */
static void ops_set(remote *r, remote_op op, int only)
{
    for (int i = 0; i < r->nshards; i++) {
        r->c[i].op = only < 0 || only == i ? op : REMOTE_OP_NONE;
        r->c[i].op_done = 0;
    }
}

/* ------------------------------------------------------------ backend */

/* job.overlap: wait for the ACKs of the push that went out without them
 * (the ops it set are still in place: a connection lost meanwhile sends
 * the push again, or learns from the WELCOME that the shard has it). */
static int push_settle(remote *r, double timeout_s, char *err, size_t errlen)
{
    if (!r->push_pending)
        return 0;
    int rc = remote_run(r, timeout_s, err, errlen);
    if (rc == 0) {
        r->push_pending = 0;
        r->push_grad = NULL;
    }
    return rc;
}

static int remote_pull(remote *r, float *params, uint64_t *version, char *err, size_t errlen);

/* A pull or push call's wait, added to the step's (a step ends with the
 * next pull). */
static void wait_add(remote *r, double t0, int step_ends)
{
    double d = now_s() - t0;
    r->wait_s += d;
    r->step_wait_s += d;
    if (!step_ends)
        return;
    long bin = (long)(r->step_wait_s * 10000.0);
    r->wait_hist[bin < REMOTE_WAIT_BINS - 1 ? bin : REMOTE_WAIT_BINS - 1]++;
    r->wait_steps++;
    r->step_wait_s = 0;
}

static int remote_pull_cb(void *ctx, float *params, uint64_t *version, char *err,
                          size_t errlen)
{
    remote *r = ctx;
    double t0 = now_s();
    int first = r->pulls == 0;
    int rc = remote_pull(r, params, version, err, errlen);
    if (first && rc == 0) {
        uint64_t out, in;
        remote_bytes(r, &out, &in);
        int seeded = 0;
        char how[96] = "";
        for (int i = 0; i < r->nshards; i++)
            seeded += r->c[i].seed_used;
        if (r->pull_enc == PLACEMENT_PULL_DELTA || r->pull_enc == PLACEMENT_PULL_TOPK)
            snprintf(how, sizeof how, " (%d of %d shards sent the changes since the initial weights)",
                     seeded, r->nshards);
        remote_log(r, REMOTE_LOG_INFO, "first weights in %.0f ms, %llu bytes received so far%s",
                   (now_s() - t0) * 1000.0, (unsigned long long)in, how);
    }
    wait_add(r, t0, rc >= 0);
    return rc;
}

static int remote_pull(remote *r, float *params, uint64_t *version, char *err, size_t errlen)
{
    int settled = r->push_pending;
    if (push_settle(r, 0, err, errlen) != 0)
        return -1;
    ops_set(r, REMOTE_OP_PULL, -1);
    for (int i = 0; i < r->nshards; i++) {
        remote_conn *c = &r->c[i];
        /* pulled behind the last PUSH: here already (READY), or on the way
         * (PIPE, AHEAD: wait for it); a lost connection pulls anew */
        if (c->ahead_ready) {
            c->ahead_ready = 0;
            c->op_done = 1;
            c->n_pull_served++;
        }
    }
    int rc = remote_run(r, 0, err, errlen);
    if (rc != 0)
        return -1;
    memcpy(params, r->cache, r->nparams * sizeof(float));
    r->pulls++;
    for (int i = 0; i < r->nshards; i++)
        r->c[i].pulled[r->pulls % REMOTE_PULLS_KEPT] = r->c[i].version;
    *version = r->pulls;
    /* the push settled here was answered FINISHED: not applied */
    return settled && r->finished ? TRAINER_FINISHED : 0;
}

static int remote_push(remote *r, const float *grad, uint64_t version, long step, int samples,
                       char *err, size_t errlen);

static int remote_push_cb(void *ctx, const float *grad, uint64_t version, long step,
                          int samples, char *err, size_t errlen)
{
    remote *r = ctx;
    double t0 = now_s();
    int rc = remote_push(r, grad, version, step, samples, err, errlen);
    wait_add(r, t0, 0);
    return rc;
}

/* Start a push: its arguments, every shard's op, no slice prepared yet. */
static void push_begin(remote *r, const float *grad, uint64_t version, long step, int samples)
{
    r->push_grad = grad;
    r->push_version = version;
    r->push_step = step;
    r->push_samples = samples > 0 ? samples : 1;
    r->push_open = 1;
    ops_set(r, REMOTE_OP_PUSH, -1);
    for (int i = 0; i < r->nshards; i++)
        r->c[i].push_ready = 0;
}

/* Shard c's slice of the push: its base version and its error feedback,
 * then, if c is connected, the PUSH (with the PULL behind it) on its way
 * at once, before the next slice is compressed (or, early, while the
 * backward pass still runs: remote_grad_ready_cb; then without the PULL).
 * Returns 1 if sent, 0 if c is not ready (remote_run sends it), -1 on
 * failure (r->fatal). */
static int push_slice(remote *r, remote_conn *c, int early)
{
    const float *grad = r->push_grad;
    uint64_t version = r->push_version;
    size_t n = c->hi - c->lo;
    /* the version of the weights this gradient was computed on: pull call
     * #version's (the cache's if that is unknown) */
    int known = version >= 1 && version <= r->pulls && r->pulls - version < REMOTE_PULLS_KEPT;
    c->push_base = known ? c->pulled[version % REMOTE_PULLS_KEPT] : c->version;
    c->push_seq = 0;
    c->push_enc = PROTO_ENC_FP32;
    c->push_count = 0;
    /* error feedback, once per push (a resend after a reconnect sends the
     * same): r = g + r, send the compressed r, keep what was not sent */
    if (r->push_enc == PLACEMENT_PUSH_FP16) {
        proto_ef_fp16(grad + c->lo, r->residual + c->lo, r->ef_send + c->lo, n);
        c->push_enc = PROTO_ENC_FP16;
    } else if (r->push_enc == PLACEMENT_PUSH_TOPK) {
        size_t k = proto_topk_count(n, r->topk_percent);
        if (proto_ef_topk(grad + c->lo, r->residual + c->lo, n, k, r->ef_work,
                          r->ef_idx + c->lo, r->ef_vals + c->lo) != 0) {
            snprintf(r->fatal_msg, sizeof r->fatal_msg, "shard %d: top-k of %zu entries failed",
                     c->shard, n);
            r->fatal = 1;
            return -1;
        }
        if (proto_sparse_size(r->ef_idx + c->lo, k) < 4 * n) {
            c->push_enc = PROTO_ENC_SPARSE;
            c->push_count = k;
        } else { /* the same gradient as fp32 is not larger */
            float *d = r->ef_send + c->lo;
            memset(d, 0, n * sizeof *d);
            for (size_t j = 0; j < k; j++)
                d[r->ef_idx[c->lo + j]] = r->ef_vals[c->lo + j];
        }
    }
    c->push_ready = 1;
    if (c->state != REMOTE_CONN_READY)
        return 0;
    c->pull_later = early && r->mode != PLACEMENT_MODE_SYNC;
    conn_issue(r, c);
    if (c->state != REMOTE_CONN_WAIT)
        c->pull_later = 0;
    return r->fatal ? -1 : 1;
}

/* The backward pass has finished grad[from, nparams): send the slices it
 * covers now, while it computes the rest (not with overlap, whose pushes
 * leave after the gradient anyway). */
static void remote_grad_ready_cb(void *ctx, const float *grad, size_t from, uint64_t version,
                                 long step, int samples)
{
    remote *r = ctx;
    if (r->overlap || r->push_pending || r->fatal)
        return;
    if (!r->push_open)
        push_begin(r, grad, version, step, samples);
    for (int i = 0; i < r->nshards && !r->fatal; i++) {
        remote_conn *c = &r->c[i];
        if (!c->push_ready && c->lo >= from && push_slice(r, c, 1) == 1)
            c->n_push_early++;
    }
}

static int remote_push(remote *r, const float *grad, uint64_t version, long step, int samples,
                       char *err, size_t errlen)
{
    int settled = r->push_pending;
    if (push_settle(r, 0, err, errlen) != 0)
        return -1;
    if (settled && r->finished)
        return TRAINER_FINISHED;
    if (!r->push_open)
        push_begin(r, grad, version, step, samples);
    for (int i = 0; i < r->nshards && !r->fatal; i++)
        if (!r->c[i].push_ready)
            push_slice(r, &r->c[i], 0);
    for (int i = 0; i < r->nshards && !r->fatal; i++) {
        remote_conn *c = &r->c[i];
        if (!c->pull_later)
            continue;
        c->pull_later = 0; /* if c was lost meanwhile, remote_run sends both again */
        if (c->state == REMOTE_CONN_WAIT)
            conn_sent(r, c, conn_pull_behind(r, c), REMOTE_CONN_PIPE);
    }
    r->push_open = 0;
    r->until_sent = r->overlap;
    int rc = remote_run(r, 0, err, errlen);
    r->until_sent = 0;
    if (rc != 0) {
        r->push_grad = NULL;
        return -1;
    }
    for (int i = 0; r->overlap && i < r->nshards; i++)
        if (!r->c[i].op_done)
            r->push_pending = 1; /* push_grad stays: a reconnect sends it again */
    if (!r->push_pending)
        r->push_grad = NULL;
    return r->finished ? TRAINER_FINISHED : 0;
}

/* Overlap: each shard's slice of what this push sent (the gradient, its
 * fp16 values, or its top-k pairs), applied to params as one SGD step
 * without momentum at the learning rate of the shard's version as last
 * seen (the one the push meets, with no other worker pushing). */
static void remote_ahead_cb(void *ctx, const float *grad, float *params, float *scratch)
{
    remote *r = ctx;
    for (int i = 0; i < r->nshards; i++) {
        remote_conn *c = &r->c[i];
        size_t n = c->hi - c->lo;
        const float *sent = grad + c->lo;
        if (c->push_enc == PROTO_ENC_FP16 ||
            (r->push_enc == PLACEMENT_PUSH_TOPK && c->push_enc == PROTO_ENC_FP32)) {
            sent = r->ef_send + c->lo;
        } else if (c->push_enc == PROTO_ENC_SPARSE) {
            float *d = scratch + c->lo;
            memset(d, 0, n * sizeof *d);
            for (size_t j = 0; j < c->push_count; j++)
                d[r->ef_idx[c->lo + j]] = r->ef_vals[c->lo + j];
            sent = d;
        }
        r->k->sgd_step(params + c->lo, NULL, sent, n, optim_lr_at(&r->opt, (long)c->version),
                       0.0f, r->opt.weight_decay);
    }
}

/* Local steps: this worker's own gradient into params, each shard's slice
 * at the learning rate of that shard's version as last pulled. */
static void remote_local_step_cb(void *ctx, const float *grad, float *params, uint64_t version)
{
    remote *r = ctx;
    (void)version; /* the pull call's number; the shards' versions are per connection */
    for (int i = 0; i < r->nshards; i++) {
        remote_conn *c = &r->c[i];
        r->k->sgd_step(params + c->lo, NULL, grad + c->lo, c->hi - c->lo,
                       trainer_local_lr(&r->opt, c->version), 0.0f, r->opt.weight_decay);
    }
}

param_backend remote_backend(remote *r)
{
    param_backend be = {r, remote_pull_cb, remote_push_cb, r->overlap ? remote_ahead_cb : NULL,
                        r->overlap ? NULL : remote_grad_ready_cb, remote_local_step_cb};
    return be;
}

int remote_connect(remote *r, double timeout_s, char *err, size_t errlen)
{
    ops_set(r, REMOTE_OP_CONNECT, -1);
    for (int i = 0; i < r->nshards; i++)
        if (r->c[i].state >= REMOTE_CONN_READY)
            r->c[i].op_done = 1;
    return remote_run(r, timeout_s, err, errlen);
}

int remote_report(remote *r, const proto_report *rep, char *err, size_t errlen)
{
    int rc = push_settle(r, 0, err, errlen);
    if (rc != 0)
        return rc;
    r->report = *rep;
    ops_set(r, REMOTE_OP_REPORT, 0);
    return remote_run(r, 0, err, errlen);
}

int remote_done(remote *r, const proto_done *d, double timeout_s, char *err, size_t errlen)
{
    int rc = push_settle(r, timeout_s, err, errlen);
    if (rc != 0)
        return rc;
    r->done = *d;
    ops_set(r, REMOTE_OP_DONE, -1);
    return remote_run(r, timeout_s, err, errlen);
}

void remote_bytes(const remote *r, uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    for (int i = 0; i < r->nshards; i++) {
        *out += r->c[i].bytes_out;
        *in += r->c[i].bytes_in;
    }
}

void remote_wait_stats(const remote *r, double *total_s, double *p50_ms, double *p90_ms)
{
    *total_s = r->wait_s;
    *p50_ms = *p90_ms = 0;
    uint64_t seen = 0;
    for (int b = 0; b < REMOTE_WAIT_BINS && r->wait_steps > 0; b++) {
        uint64_t before = seen;
        seen += r->wait_hist[b];
        if (before * 2 < r->wait_steps && seen * 2 >= r->wait_steps)
            *p50_ms = (b + 1) / 10.0;
        if (before * 10 < r->wait_steps * 9 && seen * 10 >= r->wait_steps * 9)
            *p90_ms = (b + 1) / 10.0;
    }
}

uint64_t remote_version(const remote *r)
{
    return r->nshards > 0 ? r->c[0].version : 0;
}

int remote_init(remote *r, const placement *p, const placement_node *me, const cnn_model *m,
                volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->node_id, sizeof r->node_id, "%s", me->id);
    snprintf(r->model, sizeof r->model, "%s", m->name);
    r->nparams = m->nparams;
    r->mode = p->job.mode;
    r->overlap = p->job.overlap && p->job.mode != PLACEMENT_MODE_SYNC;
    r->opt = p->job.opt;
    r->k = kern_active();
    snprintf(r->tcp_congestion, sizeof r->tcp_congestion, "%s", p->job.tcp_congestion);
    if (r->tcp_congestion[0]) {
        char e2[512];
        if (util_tcp_congestion_check(r->tcp_congestion, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "%s: job.tcp_congestion: %s", p->source, e2);
            return -1;
        }
    }
    r->stop = stop;
    /* The jitter only spreads reconnects of many workers apart; it does not
     * touch training, so a per-process seed is fine here. */
    r->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)(now_s() * 1e9) ^ 0x9e3779b97f4a7c15ull;
    if (r->rng == 0)
        r->rng = 1;
    if (p->nshards < 1) {
        snprintf(err, errlen, "%s: no ps shards", p->source);
        return -1;
    }
    size_t maxf = proto_max_floats(0);
    r->c = calloc((size_t)p->nshards, sizeof *r->c);
    r->cache = calloc(m->nparams, sizeof(float));
    if (!r->c || !r->cache) {
        remote_free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->nshards = p->nshards;
    r->push_enc = p->job.compression.push;
    r->topk_percent = p->job.compression.topk_percent;
    r->pull_enc = p->job.compression.pull;
    size_t maxslice = 0;
    for (int s = 0; s < p->nshards; s++) {
        remote_conn *c = &r->c[s];
        c->fd = -1;
        proto_decoder_init(&c->dec, 0);
        c->next_req = 1;
        const placement_node *n = placement_shard_node(p, s);
        if (!n) {
            remote_free(r);
            snprintf(err, errlen, "%s: shard %d has no node", p->source, s);
            return -1;
        }
        c->shard = s;
        snprintf(c->node, sizeof c->node, "%s", n->id);
        snprintf(c->host, sizeof c->host, "%s", n->host);
        c->port = n->port;
        c->lo = n->lo;
        c->hi = n->hi;
        if (c->hi - c->lo > maxf) {
            remote_free(r);
            snprintf(err, errlen, "%s: shard %d holds %zu floats, more than one frame carries (%zu)",
                     p->source, s, c->hi - c->lo, maxf);
            return -1;
        }
        if (c->hi - c->lo > maxslice)
            maxslice = c->hi - c->lo;
    }
    /* delta and top-k pulls: start from the job's initial weights, built
     * here as every shard builds them, and ask each shard only for what
     * changed since (PULL with SEED: not the whole slice through a slow
     * link at start); a shard whose CRC of them differs sends it all */
    if (r->pull_enc == PLACEMENT_PULL_DELTA || r->pull_enc == PLACEMENT_PULL_TOPK) {
        cnn_params_init(m, p->job.seed, r->cache, 0, m->nparams);
        for (int s = 0; s < r->nshards; s++) {
            remote_conn *c = &r->c[s];
            c->seed = 1;
            c->seed_crc = cnn_params_crc(r->cache + c->lo, c->hi - c->lo);
            c->have = 1;
            c->version = 0;
        }
    }
    if (r->push_enc != PLACEMENT_PUSH_NONE) {
        r->residual = calloc(m->nparams, sizeof(float));
        r->ef_send = calloc(m->nparams, sizeof(float));
        if (r->push_enc == PLACEMENT_PUSH_TOPK) {
            r->ef_idx = calloc(m->nparams, sizeof(uint32_t));
            r->ef_vals = calloc(m->nparams, sizeof(float));
            r->ef_work = calloc(maxslice, sizeof(uint32_t));
        }
        if (!r->residual || !r->ef_send ||
            (r->push_enc == PLACEMENT_PUSH_TOPK && (!r->ef_idx || !r->ef_vals || !r->ef_work))) {
            remote_free(r);
            snprintf(err, errlen, "out of memory for the error-feedback residual");
            return -1;
        }
    }
    char cmp[96];
    placement_compression_describe(&p->job.compression, cmp, sizeof cmp);
    remote_log(r, REMOTE_LOG_INFO, "compression: %s%s", cmp,
               r->push_enc != PLACEMENT_PUSH_NONE ? " (error feedback on)" : "");
    return 0;
}

int remote_set_key(remote *r, const uint8_t *key, char *err, size_t errlen)
{
    if (secure_init() != 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return -1;
    }
    memcpy(r->key, key, SECURE_KEY_SIZE);
    r->have_key = 1;
    return 0;
}

void remote_free(remote *r)
{
    if (r->c) {
        for (int i = 0; i < r->nshards; i++) {
            remote_conn *c = &r->c[i];
            if (c->fd >= 0)
                close(c->fd);
            proto_decoder_free(&c->dec);
            free(c->out);
        }
    }
    if (r->verbose && r->c)
        for (int i = 0; i < r->nshards; i++)
            remote_log(r, REMOTE_LOG_DEBUG,
                       "shard %d: %llu applied, %llu waiting, %llu stale, %llu duplicate, %llu "
                       "finished, %llu reconnects; %llu pulls sent, %llu behind a push, "
                       "%llu pull calls served by those; %llu pushes sent before the gradient "
                       "was complete",
                       i, (unsigned long long)r->c[i].n_applied,
                       (unsigned long long)r->c[i].n_waiting, (unsigned long long)r->c[i].n_stale,
                       (unsigned long long)r->c[i].n_dup, (unsigned long long)r->c[i].n_finished,
                       (unsigned long long)r->c[i].n_reconnects,
                       (unsigned long long)r->c[i].n_pull_sent,
                       (unsigned long long)r->c[i].n_pull_ahead,
                       (unsigned long long)r->c[i].n_pull_served,
                       (unsigned long long)r->c[i].n_push_early);
    free(r->c);
    free(r->cache);
    free(r->residual);
    free(r->ef_send);
    free(r->ef_idx);
    free(r->ef_vals);
    free(r->ef_work);
    secure_wipe(r, sizeof(*r)); /* the key, the session keys */
}
