/* bench_load - load generator for one psd shard, using the real codec.
 *
 * Opens N "active" worker connections (and --idle M more that only say
 * HELLO and sit) to one psd over TCP, all on one libuv loop in one thread.
 * Every active connection first checks the shard: HELLO -> WELCOME, then one
 * PULL whose WEIGHTS must decode, cover the WELCOME's whole range of
 * --floats floats (lenet: 431,080) and hold finite values.  Only when every
 * connection passed does the clock start.  Then, for --seconds, each active
 * connection loops with at most one request in flight:
 *
 *   push   PUSH the whole shard (seq + 1, base_version from the last
 *          WEIGHTS/ACK) and wait for its ACK
 *   pull   PULL the whole shard (min_version 0) and wait for the WEIGHTS
 *   mixed  PUSH, then PULL, then PUSH ... (a worker's step)
 *
 * It prints one key=value line (bench=load ...): pushes/s, GB/s of gradient
 * applied (floats x 4 bytes per ACK that says APPLIED, 1 GB = 1e9 bytes),
 * the ACKs that were not APPLIED, push and pull latency p50/p99 (from
 * handing the request to the socket to the whole reply decoded), and this
 * process's CPU use (client_cpu, 1.0 = one core busy: near 1.0 would mean
 * the generator, not psd, is the bottleneck).  check=ok, or check=FAIL and
 * exit status 1 on any protocol error, timeout or failed check.
 *
 * With --key-file FILE (a cluster key, docs/security.md) every connection
 * does the key handshake (HELLO with a nonce, the shard's proof checked,
 * AUTH, the sealed OK) and every request and reply is sealed, so the line
 * (auth=key) measures what authentication and encryption cost.
 *
 * usage: bench_load --host 127.0.0.1 --port P --workers N --seconds S
 *                   [--mode push|pull|mixed] [--idle M] [--floats F]
 *                   [--model lenet] [--id-prefix load] [--key-file FILE]
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "placement.h"
#include "proto.h"
#include "secure.h"

#define BL_READ_ACTIVE (256u << 10) /* read buffer of an active connection */
#define BL_READ_IDLE (4u << 10)     /* ... of an idle one */
#define BL_CONNECTS_INFLIGHT 32     /* connects + HELLOs outstanding at once */
#define BL_SETUP_MS 30000           /* every connection ready within this */
#define BL_DRAIN_MS 5000            /* in-flight replies after the end */
#define BL_SAMPLES 8                /* samples per PUSH */

typedef enum bl_mode {
    BL_MODE_PUSH = 0,
    BL_MODE_PULL,
    BL_MODE_MIXED,
    BL_MODE_MAX
} bl_mode;

static const char *const bl_mode_names[BL_MODE_MAX] = {"push", "pull", "mixed"};

typedef enum bl_conn_state {
    BL_CONN_CONNECTING = 0, /* uv_tcp_connect issued */
    BL_CONN_HELLO,          /* HELLO sent, waiting for WELCOME */
    BL_CONN_AUTH,           /* --key-file: AUTH sent, waiting for the sealed OK */
    BL_CONN_CHECK,          /* active: first PULL sent, waiting for WEIGHTS */
    BL_CONN_READY,          /* checked (active) or welcomed (idle): waiting for the start */
    BL_CONN_RUN,            /* measuring: one request in flight */
    BL_CONN_DONE,           /* the run ended and its last reply came */
    BL_CONN_CLOSED,         /* uv_close called */
    BL_CONN_STATE_MAX
} bl_conn_state;

typedef struct bl_bench bl_bench;

/* One connection.  tcp.data, creq.data and wreq.data point back to it; it
 * is freed by bench_free after the loop has closed every handle. */
typedef struct bl_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    bl_bench *b;
    int idx;
    int active;
    bl_conn_state state;
    proto_decoder dec;
    uint8_t *rbuf;
    size_t rcap;
    uint8_t *wbuf;             /* the request being written (one at a time) */
    size_t wcap;
    int writing;               /* wbuf is owned by libuv until write_cb */
    int want_send;             /* a reply came while writing: send when it completes */
    uint32_t next_req;         /* request ids: 1, 2, ... */
    uint32_t want_req;         /* id of the reply awaited */
    uint8_t want_type;         /* type of the reply awaited */
    uint64_t lo, hi;           /* the shard's range (WELCOME) */
    uint64_t version;          /* last version seen (WEIGHTS/ACK) */
    uint64_t seq;              /* last PUSH seq sent */
    uint64_t step;
    int next_pull;             /* mixed: the next request is a PULL */
    double sent_at;            /* when the request in flight was written */
    secure_hs hs;              /* --key-file: the handshake in progress */
    secure_session sess;
    int sealed;                /* AUTH sent: every frame sealed both ways */
} bl_conn;

/* Latencies in milliseconds, growable. */
typedef struct bl_lat {
    double *v;
    size_t n, cap;
} bl_lat;

struct bl_bench {
    /* options */
    const char *host;
    int port;
    int workers, idle;
    double seconds;
    bl_mode mode;
    uint64_t floats;
    const char *model;
    const char *prefix;
    const char *key_file;
    int have_key;
    uint8_t key[PLACEMENT_KEY_SIZE];
    /* state */
    uv_loop_t loop;
    uv_timer_t timer;
    struct sockaddr_in addr;
    bl_conn **conns;
    int nconns, launched, connecting;
    int ready, done;
    int started, stopping, failed, finished;
    float *grad;               /* the gradient pushed, floats */
    float *scratch;            /* decoded weights for the check */
    double t0, t_end, t_wait;
    double cpu0, cpu1;
    /* results (replies received in [t0, t_end)) */
    uint64_t pushes, applied, not_applied, pulls, not_modified;
    uint64_t bytes_in, bytes_out;
    bl_lat push_lat, pull_lat;
};

static double bl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double bl_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int lat_add(bl_lat *l, double ms)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4096;
        double *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ms;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..1] of l (sorted here); NAN if empty. */
static double lat_pct(bl_lat *l, double p)
{
    if (l->n == 0)
        return NAN;
    qsort(l->v, l->n, sizeof(double), cmp_double);
    size_t k = (size_t)ceil(p * (double)l->n);
    if (k < 1)
        k = 1;
    return l->v[k - 1];
}

/* ------------------------------------------------------------ failure */

static void bench_fail(bl_bench *b, const bl_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Report the first failure and stop the loop; main() prints check=FAIL. */
static void bench_fail(bl_bench *b, const bl_conn *c, const char *fmt, ...)
{
    if (b->failed)
        return;
    b->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_load: ");
    if (c)
        fprintf(stderr, "conn %d (%s): ", c->idx, c->active ? "active" : "idle");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    uv_stop(&b->loop);
}

/* ------------------------------------------------------------ sending */

static void conn_write_cb(uv_write_t *req, int status);
static void conn_next(bl_conn *c);

/* Make room for len bytes in c->wbuf.  Returns 0 or -1. */
static int conn_wbuf(bl_conn *c, size_t len)
{
    if (c->wcap >= len)
        return 0;
    uint8_t *p = realloc(c->wbuf, len);
    if (!p)
        return -1;
    c->wbuf = p;
    c->wcap = len;
    return 0;
}

/* Write the len bytes in c->wbuf, expecting a reply of type `reply` to
 * request id `req`. */
static void conn_send(bl_conn *c, size_t len, uint8_t reply, uint32_t req)
{
    bl_bench *b = c->b;
    uv_buf_t buf = uv_buf_init((char *)c->wbuf, (unsigned)len);
    c->want_req = req;
    c->want_type = reply;
    c->writing = 1;
    c->sent_at = bl_now();
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, conn_write_cb);
    if (rc != 0) {
        c->writing = 0;
        bench_fail(b, c, "write: %s", uv_strerror(rc));
        return;
    }
    if (b->started && !b->stopping)
        b->bytes_out += len;
}

/* Encode with one of proto's encoders (an expression using buf_, cap_ and
 * &len_) into c->wbuf, growing it to the size the encoder asks for (and
 * the tag, in a sealed session: then the frame is sealed there). */
#define BL_ENCODE(c, call, lenp)                                                               \
    do {                                                                                       \
        uint8_t *buf_ = NULL;                                                                  \
        size_t cap_ = 0, len_ = 0;                                                             \
        int rc_ = (call);                                                                      \
        if (rc_ == PROTO_ERR_NOSPACE) {                                                        \
            size_t tag_ = (c)->sealed ? PROTO_SEAL_TAG_SIZE : 0;                               \
            if (conn_wbuf((c), len_ + tag_) != 0) {                                            \
                rc_ = PROTO_ERR_NOMEM;                                                         \
            } else {                                                                           \
                buf_ = (c)->wbuf;                                                              \
                cap_ = len_;                                                                   \
                rc_ = (call);                                                                  \
                if (rc_ == 0 && tag_)                                                          \
                    rc_ = secure_seal(&(c)->sess.tx, buf_, len_, (c)->wcap, &len_);            \
            }                                                                                  \
        } else if (rc_ == 0) {                                                                 \
            rc_ = PROTO_ERR_INVALID; /* sized into a NULL buffer: cannot be */                 \
        }                                                                                      \
        *(lenp) = rc_ == 0 ? len_ : 0;                                                         \
        if (rc_ != 0)                                                                          \
            bench_fail((c)->b, (c), "encode: %s", proto_strerror(rc_));                        \
    } while (0)

static void conn_send_hello(bl_conn *c)
{
    bl_bench *b = c->b;
    proto_hello h = {0};
    h.role = PROTO_ROLE_WORKER;
    h.auth_method = PROTO_AUTH_NONE;
    h.nparams = b->floats;
    snprintf(h.node_id, sizeof h.node_id, "%s-%s%d", b->prefix, c->active ? "w" : "idle",
             c->idx);
    snprintf(h.model, sizeof h.model, "%s", b->model);
    if (b->have_key)
        secure_client_hello(&c->hs, &h);
    uint32_t req = c->next_req++;
    size_t len;
    BL_ENCODE(c, proto_hello_encode(&h, req, buf_, cap_, &len_), &len);
    proto_frame hf;
    if (len && b->have_key &&
        (proto_frame_parse(c->wbuf, len, PROTO_MAX_FRAME, &hf) != (int)len ||
         secure_hs_hello(&c->hs, &hf) != 0)) {
        bench_fail(b, c, "HELLO: handshake state");
        return;
    }
    if (len)
        conn_send(c, len, PROTO_MSG_WELCOME, req);
}

/* --key-file: the WELCOME's proof checked, AUTH sent; the session starts. */
static void conn_send_auth(bl_conn *c, const proto_frame *welcome)
{
    bl_bench *b = c->b;
    proto_auth a;
    int rc = secure_client_welcome(&c->hs, b->key, welcome, &c->sess, &a);
    if (rc != 0) {
        bench_fail(b, c, "the shard's proof does not match the key in %s", b->key_file);
        return;
    }
    uint32_t req = c->next_req++;
    size_t len;
    BL_ENCODE(c, proto_auth_encode(&a, req, buf_, cap_, &len_), &len);
    if (!len)
        return;
    c->sealed = 1; /* from here on both directions */
    c->state = BL_CONN_AUTH;
    conn_send(c, len, PROTO_MSG_OK, req);
}

static void conn_send_pull(bl_conn *c)
{
    proto_pull p = {.min_version = 0, .lo = c->lo, .hi = c->hi};
    uint32_t req = c->next_req++;
    size_t len;
    BL_ENCODE(c, proto_pull_encode(&p, req, buf_, cap_, &len_), &len);
    if (len)
        conn_send(c, len, PROTO_MSG_WEIGHTS, req);
}

static void conn_send_push(bl_conn *c)
{
    proto_push p = {0};
    p.seq = ++c->seq;
    p.base_version = c->version;
    p.step = ++c->step;
    p.samples = BL_SAMPLES;
    p.lo = c->lo;
    p.hi = c->hi;
    p.values = c->b->grad;
    uint32_t req = c->next_req++;
    size_t len;
    BL_ENCODE(c, proto_push_encode(&p, req, buf_, cap_, &len_), &len);
    if (len)
        conn_send(c, len, PROTO_MSG_ACK, req);
}

/* Send the next measured request, unless the run is over. */
static void conn_next(bl_conn *c)
{
    bl_bench *b = c->b;
    if (c->writing) { /* the reply overtook our write_cb: send from there */
        c->want_send = 1;
        return;
    }
    if (b->stopping) {
        c->state = BL_CONN_DONE;
        if (++b->done == b->workers)
            uv_stop(&b->loop);
        return;
    }
    int pull = b->mode == BL_MODE_PULL || (b->mode == BL_MODE_MIXED && c->next_pull);
    c->next_pull = !c->next_pull;
    if (pull)
        conn_send_pull(c);
    else
        conn_send_push(c);
}

static void conn_write_cb(uv_write_t *req, int status)
{
    bl_conn *c = req->data;
    c->writing = 0;
    if (status < 0) {
        if (c->state != BL_CONN_CLOSED)
            bench_fail(c->b, c, "write: %s", uv_strerror(status));
        return;
    }
    if (c->want_send) {
        c->want_send = 0;
        conn_next(c);
    }
}

/* ------------------------------------------------------------ the run */

static void bench_start(bl_bench *b);
static void conn_launch(bl_bench *b);

/* A connection finished its setup (checked or welcomed). */
static void conn_ready(bl_conn *c)
{
    bl_bench *b = c->b;
    c->state = BL_CONN_READY;
    b->connecting--;
    b->ready++;
    conn_launch(b);
    if (b->ready == b->nconns)
        bench_start(b);
}

static void conn_welcomed(bl_conn *c);

static void handle_welcome(bl_conn *c, const proto_frame *f)
{
    bl_bench *b = c->b;
    proto_welcome w;
    int rc = proto_welcome_decode(f, &w);
    if (rc != 0) {
        bench_fail(b, c, "WELCOME does not decode: %s", proto_strerror(rc));
        return;
    }
    if (w.nparams != b->floats) {
        bench_fail(b, c, "WELCOME: the shard serves %llu parameters, expected %llu",
                   (unsigned long long)w.nparams, (unsigned long long)b->floats);
        return;
    }
    c->lo = w.lo;
    c->hi = w.hi;
    c->version = w.param_version;
    c->seq = w.last_seq; /* keep numbering after what the shard consumed */
    if (b->have_key && c->state == BL_CONN_HELLO) {
        conn_send_auth(c, f);
        return;
    }
    conn_welcomed(c);
}

/* Welcomed (and with a key, authenticated): idle connections are ready,
 * active ones check the weights first. */
static void conn_welcomed(bl_conn *c)
{
    if (!c->active) {
        conn_ready(c);
        return;
    }
    c->state = BL_CONN_CHECK;
    conn_send_pull(c);
}

static void handle_weights(bl_conn *c, const proto_frame *f, double now)
{
    bl_bench *b = c->b;
    proto_weights w;
    int rc = proto_weights_decode(f, &w);
    if (rc != 0) {
        bench_fail(b, c, "WEIGHTS does not decode: %s", proto_strerror(rc));
        return;
    }
    if (w.lo != c->lo || w.hi != c->hi) {
        bench_fail(b, c, "WEIGHTS [%llu, %llu), asked for [%llu, %llu)",
                   (unsigned long long)w.lo, (unsigned long long)w.hi,
                   (unsigned long long)c->lo, (unsigned long long)c->hi);
        return;
    }
    c->version = w.version;
    if (w.not_modified) { /* min_version 0 never gets it */
        bench_fail(b, c, "WEIGHTS NOT_MODIFIED for min_version 0");
        return;
    }
    if (c->state == BL_CONN_CHECK) {
        if (w.hi - w.lo != b->floats) {
            bench_fail(b, c, "the shard holds %llu floats [%llu, %llu), expected %llu (the "
                       "whole %s vector in one shard)",
                       (unsigned long long)(w.hi - w.lo), (unsigned long long)w.lo,
                       (unsigned long long)w.hi, (unsigned long long)b->floats, b->model);
            return;
        }
        proto_floats_decode(b->scratch, w.raw, (size_t)(w.hi - w.lo));
        for (size_t i = 0; i < (size_t)(w.hi - w.lo); i++)
            if (!isfinite(b->scratch[i])) {
                bench_fail(b, c, "WEIGHTS: weight %zu is not finite", i);
                return;
            }
        conn_ready(c);
        return;
    }
    if (b->started && !b->stopping) {
        b->pulls++;
        if (lat_add(&b->pull_lat, (now - c->sent_at) * 1e3) != 0) {
            bench_fail(b, c, "out of memory");
            return;
        }
    }
    conn_next(c);
}

static void handle_ack(bl_conn *c, const proto_frame *f, double now)
{
    bl_bench *b = c->b;
    proto_ack a;
    int rc = proto_ack_decode(f, &a);
    if (rc != 0) {
        bench_fail(b, c, "ACK does not decode: %s", proto_strerror(rc));
        return;
    }
    if (a.seq != c->seq) {
        bench_fail(b, c, "ACK for seq %llu, pushed %llu", (unsigned long long)a.seq,
                   (unsigned long long)c->seq);
        return;
    }
    c->version = a.version;
    if (b->started && !b->stopping) {
        b->pushes++;
        if (a.status == PROTO_ACK_APPLIED)
            b->applied++;
        else
            b->not_applied++;
        if (lat_add(&b->push_lat, (now - c->sent_at) * 1e3) != 0) {
            bench_fail(b, c, "out of memory");
            return;
        }
    }
    conn_next(c);
}

static void handle_frame(bl_conn *c, const proto_frame *f)
{
    bl_bench *b = c->b;
    double now = bl_now();
    if (f->hdr.type == PROTO_MSG_ERROR) {
        proto_error e;
        if (proto_error_decode(f, &e) == 0)
            bench_fail(b, c, "psd answered ERROR %s: %s", proto_strerror(e.code), e.text);
        else
            bench_fail(b, c, "psd answered an ERROR that does not decode");
        return;
    }
    if (f->hdr.type != c->want_type || f->hdr.request_id != c->want_req) {
        bench_fail(b, c, "got %s for request %u, expected %s for request %u",
                   proto_msg_name(f->hdr.type), f->hdr.request_id, proto_msg_name(c->want_type),
                   c->want_req);
        return;
    }
    switch (f->hdr.type) {
    case PROTO_MSG_WELCOME: handle_welcome(c, f); break;
    case PROTO_MSG_OK: conn_welcomed(c); break; /* the AUTH's */
    case PROTO_MSG_WEIGHTS: handle_weights(c, f, now); break;
    case PROTO_MSG_ACK: handle_ack(c, f, now); break;
    default: bench_fail(b, c, "unexpected %s", proto_msg_name(f->hdr.type)); break;
    }
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    bl_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->rbuf, (unsigned)c->rcap);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    bl_conn *c = st->data;
    bl_bench *b = c->b;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (!b->finished)
            bench_fail(b, c, "read: %s", nread == UV_EOF ? "psd closed the connection"
                                                          : uv_strerror((int)nread));
        uv_read_stop(st);
        return;
    }
    if (b->started && !b->stopping)
        b->bytes_in += (uint64_t)nread;
    const uint8_t *p = (const uint8_t *)buf->base;
    size_t left = (size_t)nread;
    while (left > 0 && !b->failed) {
        size_t used = 0;
        proto_frame f;
        int rc = proto_decoder_feed(&c->dec, p, left, &used, &f);
        if (rc < 0) {
            bench_fail(b, c, "bad frame from psd: %s", proto_strerror(rc));
            return;
        }
        p += used;
        left -= used;
        if (rc != 1)
            continue;
        if (((f.hdr.flags & PROTO_FLAG_SEALED) != 0) != c->sealed &&
            !(c->state == BL_CONN_AUTH && f.hdr.type == PROTO_MSG_ERROR)) {
            bench_fail(b, c, "%s frame from psd", c->sealed ? "an unsealed" : "a sealed");
            return;
        }
        if (f.hdr.flags & PROTO_FLAG_SEALED) {
            proto_frame plain;
            /* in place: the payload is in c->rbuf or the decoder's buffer */
            if (secure_open(&c->sess.rx, &f, (uint8_t *)f.payload, f.payload_len, &plain) != 0) {
                bench_fail(b, c, "a frame from psd failed authentication");
                return;
            }
            f = plain;
        }
        handle_frame(c, &f);
    }
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    bl_conn *c = req->data;
    bl_bench *b = c->b;
    if (status < 0) {
        bench_fail(b, c, "connect to %s:%d: %s", b->host, b->port, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rc != 0) {
        bench_fail(b, c, "read: %s", uv_strerror(rc));
        return;
    }
    c->state = BL_CONN_HELLO;
    conn_send_hello(c);
}

/* Open connections until BL_CONNECTS_INFLIGHT are being set up (psd's
 * listen backlog is 128: opening hundreds at once would overflow it). */
static void conn_launch(bl_bench *b)
{
    while (!b->failed && b->launched < b->nconns && b->connecting < BL_CONNECTS_INFLIGHT) {
        bl_conn *c = b->conns[b->launched++];
        int rc = uv_tcp_init(&b->loop, &c->tcp);
        if (rc != 0) {
            bench_fail(b, c, "tcp: %s", uv_strerror(rc));
            return;
        }
        c->tcp.data = c;
        c->creq.data = c;
        c->wreq.data = c;
        c->state = BL_CONN_CONNECTING;
        b->connecting++;
        rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&b->addr,
                            conn_connect_cb);
        if (rc != 0) {
            bench_fail(b, c, "connect: %s (ulimit -n is too low for %d connections?)",
                       uv_strerror(rc), b->nconns);
            return;
        }
    }
}

static void timer_cb(uv_timer_t *t)
{
    bl_bench *b = t->data;
    if (!b->started) {
        bench_fail(b, NULL, "setup timed out: %d of %d connections ready after %d ms",
                   b->ready, b->nconns, BL_SETUP_MS);
        return;
    }
    if (!b->stopping) {
        b->stopping = 1;
        b->t_end = bl_now();
        b->cpu1 = bl_cpu();
        if (b->workers == 0) {
            uv_stop(&b->loop);
            return;
        }
        uv_timer_start(&b->timer, timer_cb, BL_DRAIN_MS, 0);
        return;
    }
    bench_fail(b, NULL, "%d of %d connections still waiting for a reply %d ms after the end",
               b->workers - b->done, b->workers, BL_DRAIN_MS);
}

/* Every connection is set up: start the clock and the requests. */
static void bench_start(bl_bench *b)
{
    b->started = 1;
    b->t0 = bl_now();
    b->cpu0 = bl_cpu();
    uv_timer_stop(&b->timer);
    uv_timer_start(&b->timer, timer_cb, (uint64_t)(b->seconds * 1000 + 0.5), 0);
    for (int i = 0; i < b->nconns; i++) {
        bl_conn *c = b->conns[i];
        if (!c->active)
            continue;
        c->state = BL_CONN_RUN;
        conn_next(c);
    }
}

static void bench_close_cb(uv_handle_t *h)
{
    (void)h;
}

static void bench_walk_close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, bench_close_cb);
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_load --port P --workers N --seconds S [--host 127.0.0.1]\n"
            "                  [--mode push|pull|mixed] [--idle M] [--floats F] [--model lenet]\n"
            "                  [--id-prefix load] [--key-file FILE]\n"
            "\n"
            "N worker connections load one psd shard (one request in flight each);\n"
            "--idle M more only say HELLO and stay connected until the end.\n"
            "--key-file FILE: the cluster key of a psd with \"auth\" (docs/security.md):\n"
            "every connection authenticates and every frame is sealed.\n"
            "Prints one line: bench=load ... check=ok|FAIL.\n");
}

/* Parse a whole decimal integer in [lo, hi]; -1 if s is not one. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

enum { OPT_HOST = 256, OPT_PORT, OPT_WORKERS, OPT_SECONDS, OPT_MODE, OPT_IDLE, OPT_FLOATS,
       OPT_MODEL, OPT_PREFIX, OPT_KEY_FILE };

static const struct option long_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"mode", required_argument, NULL, OPT_MODE},
    {"idle", required_argument, NULL, OPT_IDLE},
    {"floats", required_argument, NULL, OPT_FLOATS},
    {"model", required_argument, NULL, OPT_MODEL},
    {"id-prefix", required_argument, NULL, OPT_PREFIX},
    {"key-file", required_argument, NULL, OPT_KEY_FILE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Raise the soft limit on open files to what n connections need, if the
 * hard limit allows.  Returns 0, or -1 with a message. */
static int raise_nofile(int n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)n + 32;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
            fprintf(stderr, "bench_load: %d connections need %llu open files; the hard limit "
                    "is %llu (raise it: ulimit -Hn)\n", n, (unsigned long long)need,
                    (unsigned long long)rl.rlim_max);
            return -1;
        }
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "bench_load: cannot raise the open-file limit to %llu: %s\n",
                    (unsigned long long)need, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void bench_free(bl_bench *b)
{
    for (int i = 0; i < b->nconns; i++) {
        bl_conn *c = b->conns[i];
        if (!c)
            continue;
        proto_decoder_free(&c->dec);
        free(c->rbuf);
        free(c->wbuf);
        free(c);
    }
    free(b->conns);
    free(b->grad);
    free(b->scratch);
    free(b->push_lat.v);
    free(b->pull_lat.v);
}

static void bench_report(bl_bench *b)
{
    double wall = b->t_end - b->t0;
    double cpu = wall > 0 ? (b->cpu1 - b->cpu0) / wall : 0;
    double gbs = wall > 0 ? (double)b->applied * (double)b->floats * 4.0 / wall / 1e9 : 0;
    double pushp50 = lat_pct(&b->push_lat, 0.50), pushp99 = lat_pct(&b->push_lat, 0.99);
    double pullp50 = lat_pct(&b->pull_lat, 0.50), pullp99 = lat_pct(&b->pull_lat, 0.99);
    printf("bench=load mode=%s workers=%d idle=%d floats=%llu seconds=%.2f "
           "pushes=%llu pushes/s=%.1f applied=%llu not_applied=%llu gb/s=%.3f "
           "push_p50_ms=%.3f push_p99_ms=%.3f pulls=%llu pulls/s=%.1f "
           "pull_p50_ms=%.3f pull_p99_ms=%.3f wire_in_gb/s=%.3f wire_out_gb/s=%.3f "
           "client_cpu=%.2f auth=%s check=%s\n",
           bl_mode_names[b->mode], b->workers, b->idle, (unsigned long long)b->floats, wall,
           (unsigned long long)b->pushes, wall > 0 ? (double)b->pushes / wall : 0,
           (unsigned long long)b->applied, (unsigned long long)b->not_applied, gbs, pushp50,
           pushp99, (unsigned long long)b->pulls, wall > 0 ? (double)b->pulls / wall : 0,
           pullp50, pullp99, wall > 0 ? (double)b->bytes_in / wall / 1e9 : 0,
           wall > 0 ? (double)b->bytes_out / wall / 1e9 : 0, cpu, b->have_key ? "key" : "none",
           b->failed ? "FAIL" : "ok");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    bl_bench *b = calloc(1, sizeof(*b));
    if (!b) {
        fprintf(stderr, "bench_load: out of memory\n");
        return 1;
    }
    b->host = "127.0.0.1";
    b->port = -1;
    b->workers = -1;
    b->seconds = -1;
    b->mode = BL_MODE_PUSH;
    b->floats = 431080; /* lenet */
    b->model = "lenet";
    b->prefix = "load";
    long v = 0;
    double d = 0;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); free(b); return 0;
        case OPT_HOST: b->host = optarg; break;
        case OPT_PORT: bad = parse_long(optarg, 1, 65535, &v); b->port = (int)v; break;
        case OPT_WORKERS: bad = parse_long(optarg, 0, 100000, &v); b->workers = (int)v; break;
        case OPT_IDLE: bad = parse_long(optarg, 0, 100000, &v); b->idle = (int)v; break;
        case OPT_SECONDS: bad = parse_double(optarg, 0.01, 86400, &d); b->seconds = d; break;
        case OPT_FLOATS:
            bad = parse_long(optarg, 1, (long)proto_max_floats(0), &v);
            b->floats = (uint64_t)v;
            break;
        case OPT_MODEL: b->model = optarg; break;
        case OPT_PREFIX: b->prefix = optarg; break;
        case OPT_KEY_FILE: b->key_file = optarg; break;
        case OPT_MODE:
            bad = -1;
            for (int m = 0; m < BL_MODE_MAX; m++)
                if (strcmp(optarg, bl_mode_names[m]) == 0) {
                    b->mode = (bl_mode)m;
                    bad = 0;
                }
            break;
        default:
            fprintf(stderr, "bench_load: unknown option or missing value: '%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            free(b);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench_load: bad value for %s: '%s'\n", argv[optind - 2], optarg);
            free(b);
            return 2;
        }
    }
    if (optind < argc || b->port < 0 || b->workers < 0 || b->seconds < 0 ||
        b->workers + b->idle == 0) {
        fprintf(stderr, "bench_load: --port, --workers and --seconds are required "
                        "(and at least one connection)\n");
        usage(stderr);
        free(b);
        return 2;
    }
    if (uv_ip4_addr(b->host, b->port, &b->addr) != 0) {
        fprintf(stderr, "bench_load: --host: not an IPv4 address: '%s'\n", b->host);
        free(b);
        return 2;
    }
    if (b->key_file) {
        char kerr[4400] = "cannot initialise libsodium";
        if (secure_init() != 0 || placement_key_load(b->key_file, b->key, kerr, sizeof kerr) != 0) {
            fprintf(stderr, "bench_load: %s\n", kerr);
            free(b);
            return 1;
        }
        b->have_key = 1;
    }
    b->nconns = b->workers + b->idle;
    if (raise_nofile(b->nconns) != 0) {
        free(b);
        return 1;
    }
    int rc = 1;
    b->conns = calloc((size_t)b->nconns, sizeof(*b->conns));
    b->grad = malloc(b->floats * sizeof(float));
    b->scratch = malloc(b->floats * sizeof(float));
    if (!b->conns || !b->grad || !b->scratch)
        goto oom;
    /* A small, fixed gradient (the values do not change psd's work). */
    for (uint64_t i = 0; i < b->floats; i++)
        b->grad[i] = (float)((long)(i % 97) - 48) * 1e-6f;
    for (int i = 0; i < b->nconns; i++) {
        bl_conn *k = calloc(1, sizeof(*k));
        if (!k)
            goto oom;
        b->conns[i] = k;
        k->b = b;
        k->active = i < b->workers;
        k->idx = k->active ? i : i - b->workers;
        k->next_req = 1;
        k->rcap = k->active ? BL_READ_ACTIVE : BL_READ_IDLE;
        k->rbuf = malloc(k->rcap);
        if (!k->rbuf || proto_decoder_init(&k->dec, 0) != 0)
            goto oom;
    }
    if (uv_loop_init(&b->loop) != 0) {
        fprintf(stderr, "bench_load: cannot create the event loop\n");
        bench_free(b);
        free(b);
        return 1;
    }
    uv_timer_init(&b->loop, &b->timer);
    b->timer.data = b;
    uv_timer_start(&b->timer, timer_cb, BL_SETUP_MS, 0);
    conn_launch(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (!b->failed && b->started) {
        b->finished = 1;
        bench_report(b);
        rc = 0;
    } else {
        if (b->started && !b->t_end) {
            b->t_end = bl_now();
            b->cpu1 = bl_cpu();
        }
        b->finished = 1;
        b->failed = 1;
        bench_report(b);
    }
    b->finished = 1;
    uv_walk(&b->loop, bench_walk_close_cb, NULL);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&b->loop) != 0)
        fprintf(stderr, "bench_load: event loop closed with handles still open\n");
    bench_free(b);
    free(b);
    return rc;
oom:
    fprintf(stderr, "bench_load: out of memory\n");
    bench_free(b);
    free(b);
    return 1;
}
