/* server.c - psd's event loop: connections, the protocol state machine,
 * the three consistency modes, checkpoints and housekeeping.
 *
 * Ownership: every uv handle is embedded in exactly one struct whose memory
 * outlives the handle.  The listener, timer and signal handles live in the
 * psd_server (on psd_server_run's stack, which returns only after the loop
 * has closed them all); a ps_conn owns its uv_tcp_t and is freed only in
 * conn_close_cb.  A ps_write carries its uv_write_t and its bytes and is
 * freed in write_cb.
 *
 * A connection reads into its own buffer; frames are cut with the proto
 * decoder and handled at once.  A request that must wait (a sync PULL for
 * the next version, an SSP ACK held back at the staleness bound) parks the
 * connection: nothing more is handled or read from it until it is answered.
 * Reading also stops while more than out_limit bytes wait to be written
 * (back-pressure), so a peer that does not read costs bounded memory.
 *
 * With a cluster key (docs/security.md) a connection goes HANDSHAKE ->
 * AUTH (WELCOME sent with the shard's proof; only the client's AUTH is
 * taken) -> READY, and from READY on every frame in and out is sealed: the
 * input is opened in place in the connection's own buffer, each reply is
 * sealed into its write's buffer (WEIGHTS included: the floats are copied
 * out of the snapshot and encrypted per connection, so the zero-copy path
 * is for unauthenticated clusters only).  A worker joins (its record, its
 * older connection closed) only once its AUTH is verified.
 */
#include "psd.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "ckpt.h"
#include "compress.h"
#include "kernels.h"
#include "proto.h"
#include "secure.h"
#include "shard.h"
#include "util.h"

#define PS_READ_BUF (64u << 10)     /* per-connection read buffer */
#define PS_TICK_MS 100              /* housekeeping period */
#define PS_DRAIN_MS 2000            /* linger after an ERROR before closing */
#define PS_FLUSH_MS 10000           /* give up writing to a closing peer */
#define PS_REPORTS_MAX 256          /* accuracy history kept */
#define PS_SAMPLE_MAX 32            /* bytes of bad input shown in a log line */
#define PS_BATCH (16u << 10)        /* small replies are gathered up to this size */
#define PS_HELLO_FRAME (4u << 10)   /* frame limit before HELLO (a HELLO is <= 1,152) */
#define PS_OPERATOR_FRAME (64u << 10) /* an operator's requests are small */

typedef enum ps_log_level {
    PS_LOG_DEBUG = 0,
    PS_LOG_INFO,
    PS_LOG_WARN,
    PS_LOG_ERROR,
    PS_LOG_LEVEL_MAX
} ps_log_level;

typedef enum ps_conn_state {
    PS_CONN_HANDSHAKE = 0, /* waiting for HELLO */
    PS_CONN_AUTH,          /* cluster key: WELCOME sent, waiting for AUTH */
    PS_CONN_READY,         /* serving requests (sealed with a cluster key) */
    PS_CONN_CLOSING,       /* close after write: flushing replies, reading nothing */
    PS_CONN_DRAINING,      /* FIN sent: discarding input until EOF or timeout */
    PS_CONN_CLOSED,        /* uv_close called; freed in conn_close_cb */
    PS_CONN_STATE_MAX
} ps_conn_state;

static const char *const ps_conn_state_names[PS_CONN_STATE_MAX] = {
    "handshake", "auth", "ready", "closing", "draining", "closed",
};

typedef enum ps_park {
    PS_PARK_NONE = 0,
    PS_PARK_PULL, /* sync: PULL for the next version */
    PS_PARK_ACK,  /* ssp: ACK held back at the staleness bound */
    PS_PARK_MAX
} ps_park;

struct ps_conn;
typedef struct ps_write ps_write;

typedef struct ps_worker {
    char id[PROTO_NODE_ID_MAX + 1];
    uint64_t last_seq;         /* highest PUSH seq consumed */
    uint64_t step;             /* the step of its last PUSH */
    struct ps_conn *conn;      /* its live connection, or NULL */
    char addr[64];             /* last address seen */
    uint64_t last_push_ms;     /* loop time of the last PUSH, 0 = never */
    uint64_t samples, samples_prev;
    double samples_rate;
    uint64_t staleness;        /* version - base_version of its last PUSH */
    float *grad;               /* sync: its gradient for the current round */
    int in_round;              /* sync: grad holds a gradient of this round */
    int done;                  /* sent DONE: no longer waited for */
    int seen;                  /* joined since this psd started */
} ps_worker;

typedef struct ps_report {
    char worker[PROTO_NODE_ID_MAX + 1];
    uint64_t version;
    proto_report r;
} ps_report;

typedef struct psd_server psd_server;

typedef struct ps_conn {
    uv_tcp_t tcp;              /* owned; tcp.data = this */
    uv_shutdown_t shutdown_req;
    psd_server *srv;
    struct ps_conn *prev, *next;
    ps_conn_state state;
    uint64_t state_ms;         /* loop time of the last state change */
    uint64_t id;
    char addr[64];
    int role;                  /* proto_role after HELLO, else 0 */
    ps_worker *worker;         /* role worker: its record */
    proto_decoder dec;
    uint8_t *rbuf;             /* PS_READ_BUF bytes, owned */
    size_t rlen, rpos;         /* filled / handled */
    size_t out_bytes;          /* queued for writing (batch not included) */
    ps_write *batch;           /* small replies gathered for one write, or NULL */
    ps_write *big;             /* a reply too large for the batch, being encoded */
    unsigned nwrites;
    int reading;
    ps_park park;
    uint32_t park_req;
    uint64_t park_ms;
    proto_pull park_pull;
    proto_ack park_ack;
    uint64_t rx_ms;            /* loop time of the last bytes received */
    uint64_t frame_ms;         /* loop time a partial frame began (0: between frames) */
    int quiet;                 /* refused at accept: its ERROR is not logged */
    /* cluster key */
    int sealed;                /* READY with a key: every frame sealed both ways */
    secure_hs hs;              /* AUTH: the handshake's state */
    secure_session sess;       /* derived at HELLO, used from AUTH on */
    int hello_role;            /* AUTH: the HELLO's role and node id, to join with */
    char hello_id[PROTO_NODE_ID_MAX + 1];
    /* delta pulls: the exact weights this connection's peer holds (the last
     * WEIGHTS sent on it), so the next reply sends only what changed */
    float *shadow;             /* shadow_hi - shadow_lo floats (owned), or NULL */
    uint64_t shadow_version;
    uint64_t shadow_lo, shadow_hi;
} ps_conn;

/* The shard's weights at one version, encoded for the wire once and shared
 * by every WEIGHTS reply of that version (zero copy: each reply writes its
 * own 40-byte head, then points into this).  Freed when the server and
 * every write holding it have let go. */
typedef struct ps_snap {
    unsigned refs;
    uint64_t version;
    size_t nfloats;            /* the shard's hi - lo */
    size_t esize;              /* bytes per value: 4 (fp32) or 2 (fp16) */
    uint8_t data[];            /* nfloats little-endian floats or binary16 */
} ps_snap;

struct ps_write {
    uv_write_t req;            /* req.data = the connection */
    size_t len;                /* bytes of data to write */
    size_t cap;                /* bytes allocated for data */
    ps_snap *snap;             /* then snap_len bytes of snap->data from snap_off, or NULL */
    size_t snap_off, snap_len;
    uint8_t data[];
};

struct psd_server {
    const psd_config *cfg;
    const placement_job *job;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t timer;
    uv_signal_t sigterm, sigint;
    char tag[32];
    ps_shard shard;
    ps_snap *snap;             /* the weights as last sent, or NULL (one ref) */
    ps_snap *snap16;           /* the same as binary16 (pull fp16), or NULL (one ref) */
    size_t n;                  /* hi - lo */
    char ckpt_path[4096];
    ps_conn *conns;
    uint64_t next_conn_id;
    ps_worker **workers;
    size_t nworkers, capworkers;
    float *gbuf;               /* n floats: decode and average scratch */
    /* pull "topk" scratch (n each, allocated at the first such pull) */
    float *tk_diff, *tk_send;
    uint32_t *tk_work, *tk_idx;
    size_t max_frame, out_limit;
    size_t nconns;             /* connections not closed */
    int max_conns;
    long handshake_ms, idle_ms, frame_ms;
    uint64_t refused, refused_logged_ms;
    /* sync round */
    size_t round_n;
    uint64_t round_start_ms;
    int rounds_done;           /* a round completed since this psd started */
    /* re-entrancy guard for ps_progress */
    int progressing, progress_again;
    /* stats */
    uint64_t start_ms;
    uint64_t pushes, pushes_prev, rate_ms;
    double pushes_rate;
    uint64_t bytes_in, bytes_out;
    uint64_t ckpt_ms;          /* loop time of the last checkpoint (or start) */
    int have_ckpt;
    time_t ckpt_wall;
    uint64_t ckpt_version;
    uint64_t changes;          /* bumped by every change a checkpoint holds */
    uint64_t ckpt_changes;     /* `changes` at the last checkpoint */
    ps_report reports[PS_REPORTS_MAX];
    size_t nreports, report_next;
    /* the job */
    int finished;              /* no more updates: every push gets ACK FINISHED */
    char finish_reason[160];
    time_t finish_wall;
    uint64_t finish_version;
    int stopping;
    int exit_code;
};

static void ps_log(psd_server *s, ps_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ps_log(psd_server *s, ps_log_level lvl, const char *fmt, ...)
{
    static const char *const names[PS_LOG_LEVEL_MAX] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (lvl == PS_LOG_DEBUG && !s->cfg->verbose)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++) /* one event, one line */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "psd[%s] %s %s\n", s->tag, names[lvl], line);
}

/* A printable sample of untrusted bytes: \xNN for anything outside ' '..'~'. */
static void ps_sanitize(const uint8_t *b, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    if (n > PS_SAMPLE_MAX)
        n = PS_SAMPLE_MAX;
    for (size_t i = 0; i < n && o + 5 < outlen; i++) {
        if (b[i] >= ' ' && b[i] <= '~' && b[i] != '\\' && b[i] != '"')
            out[o++] = (char)b[i];
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", b[i]);
    }
    out[o] = '\0';
}

static uint64_t ps_now(psd_server *s)
{
    return uv_now(&s->loop);
}

/* ------------------------------------------------------------ connections */

static void conn_process(ps_conn *c);
static void conn_close(ps_conn *c);
static void ps_progress(psd_server *s);

/* The one place a connection changes state. */
static void conn_set_state(ps_conn *c, ps_conn_state st)
{
    if (c->state == st)
        return;
    ps_log(c->srv, PS_LOG_DEBUG, "conn %llu %s: %s -> %s", (unsigned long long)c->id, c->addr,
           ps_conn_state_names[c->state], ps_conn_state_names[st]);
    c->state = st;
    c->state_ms = ps_now(c->srv);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ps_conn *c = h->data;
    (void)suggested;
    if (c->state == PS_CONN_DRAINING) { /* discarding */
        *buf = uv_buf_init((char *)c->rbuf, PS_READ_BUF);
        return;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(PS_READ_BUF - c->rlen));
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Read exactly when there is room and a reason to. */
static void conn_update_reading(ps_conn *c)
{
    int want;
    if (c->state == PS_CONN_DRAINING)
        want = 1;
    else
        want = (c->state == PS_CONN_HANDSHAKE || c->state == PS_CONN_AUTH ||
                c->state == PS_CONN_READY) &&
               c->park == PS_PARK_NONE && c->out_bytes <= c->srv->out_limit &&
               c->rpos == c->rlen;
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
        if (rc != 0) {
            ps_log(c->srv, PS_LOG_WARN, "conn %llu %s: read: %s", (unsigned long long)c->id,
                   c->addr, uv_strerror(rc));
            conn_close(c);
            return;
        }
        c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    ps_conn *c = req->data;
    if (status < 0)
        conn_close(c);
}

static void snap_release(ps_snap *p)
{
    if (p && --p->refs == 0)
        free(p);
}

/* The snapshot of the shard's current version in fp32 or fp16 (made now if
 * the last one is older), or NULL if out of memory.  The caller takes a
 * reference. */
static ps_snap *snap_current(psd_server *s, int fp16)
{
    ps_snap **slot = fp16 ? &s->snap16 : &s->snap;
    if (*slot && (*slot)->version == s->shard.version)
        return *slot;
    snap_release(*slot);
    size_t n = s->shard.hi - s->shard.lo, esize = fp16 ? 2 : 4;
    *slot = malloc(sizeof(ps_snap) + esize * n);
    if (!*slot)
        return NULL;
    ps_snap *p = *slot;
    p->refs = 1;
    p->version = s->shard.version;
    p->nfloats = n;
    p->esize = esize;
    if (fp16)
        proto_fp16_encode(p->data, s->shard.w, n);
    else
        proto_floats_encode(p->data, s->shard.w, n);
    return p;
}

/* Free a write and let go of its snapshot. */
static void write_free(ps_write *w)
{
    if (w)
        snap_release(w->snap);
    free(w);
}

static void conn_write_cb(uv_write_t *req, int status)
{
    ps_write *w = (ps_write *)req;
    ps_conn *c = req->data;
    c->out_bytes -= w->len + w->snap_len;
    c->nwrites--;
    write_free(w);
    if (c->state == PS_CONN_CLOSED)
        return;
    if (status < 0) {
        ps_log(c->srv, PS_LOG_INFO, "conn %llu %s: write: %s", (unsigned long long)c->id,
               c->addr, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->state == PS_CONN_CLOSING) {
        if (c->nwrites == 0) {
            conn_set_state(c, PS_CONN_DRAINING);
            c->shutdown_req.data = c;
            if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_shutdown_cb) != 0) {
                conn_close(c);
                return;
            }
            conn_update_reading(c);
        }
        return;
    }
    conn_process(c); /* maybe below the limit again */
}

/* Queue len bytes (already in w->data) for writing.  Takes w. */
static void conn_send(ps_conn *c, ps_write *w)
{
    if (c->state == PS_CONN_CLOSED || c->state == PS_CONN_DRAINING) {
        write_free(w);
        return;
    }
    uv_buf_t b[2] = { uv_buf_init((char *)w->data, (unsigned)w->len) };
    unsigned nb = 1;
    if (w->snap)
        b[nb++] = uv_buf_init((char *)w->snap->data + w->snap_off, (unsigned)w->snap_len);
    w->req.data = c;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, b, nb, conn_write_cb);
    if (rc != 0) {
        ps_log(c->srv, PS_LOG_INFO, "conn %llu %s: write: %s", (unsigned long long)c->id,
               c->addr, uv_strerror(rc));
        write_free(w);
        conn_close(c);
        return;
    }
    c->out_bytes += w->len + w->snap_len;
    c->nwrites++;
    c->srv->bytes_out += w->len + w->snap_len;
}

static ps_write *write_new(size_t cap)
{
    ps_write *w = malloc(sizeof(*w) + cap);
    if (w) {
        w->len = 0;
        w->cap = cap;
        w->snap = NULL;
        w->snap_off = w->snap_len = 0;
    }
    return w;
}

/* Write the gathered small replies, if any. */
static void conn_flush(ps_conn *c)
{
    ps_write *b = c->batch;
    c->batch = NULL;
    if (b && b->len > 0)
        conn_send(c, b);
    else
        write_free(b);
}

/* Room for len bytes of output: in the batch if they fit, else (after
 * flushing the batch, to keep replies in order) in a write of their own.
 * NULL if out of memory.  conn_commit() sends or keeps them. */
static uint8_t *conn_reserve(ps_conn *c, size_t len)
{
    if (c->batch && c->batch->cap - c->batch->len >= len)
        return c->batch->data + c->batch->len;
    conn_flush(c);
    if (len <= PS_BATCH) {
        c->batch = write_new(PS_BATCH);
        return c->batch ? c->batch->data : NULL;
    }
    c->big = write_new(len);
    return c->big ? c->big->data : NULL;
}

/* The len bytes at conn_reserve()'s pointer are a whole frame (ok) or
 * garbage (!ok, dropped). */
static void conn_commit(ps_conn *c, size_t len, int ok)
{
    if (c->big) {
        ps_write *w = c->big;
        c->big = NULL;
        w->len = len;
        if (ok)
            conn_send(c, w);
        else
            write_free(w);
    } else if (ok && c->batch) {
        c->batch->len += len;
    }
}

/* Encode with one of proto's encoders (an expression using buf_, cap_ and
 * &len_) into the connection's output; on failure log and close. */
#define CONN_SEND_MSG(c, encode_call_with_buf_cap_len)                                        \
    do {                                                                                     \
        uint8_t *buf_ = NULL;                                                                \
        size_t cap_ = 0, len_ = 0;                                                           \
        int rc_ = encode_call_with_buf_cap_len;                                              \
        if (rc_ == PROTO_ERR_NOSPACE) {                                                      \
            size_t tag_ = (c)->sealed ? PROTO_SEAL_TAG_SIZE : 0;                             \
            buf_ = conn_reserve((c), len_ + tag_);                                           \
            if (!buf_) {                                                                     \
                ps_log((c)->srv, PS_LOG_ERROR, "out of memory for a %zu-byte reply", len_);   \
                conn_close(c);                                                               \
                break;                                                                       \
            }                                                                                \
            cap_ = len_;                                                                     \
            rc_ = encode_call_with_buf_cap_len;                                              \
            if (rc_ == 0 && tag_)                                                            \
                rc_ = secure_seal(&(c)->sess.tx, buf_, len_, len_ + tag_, &len_);            \
            conn_commit((c), len_, rc_ == 0);                                                \
            if (rc_ == 0)                                                                    \
                break;                                                                       \
        }                                                                                    \
        ps_log((c)->srv, PS_LOG_ERROR, "encode failed: %s", proto_strerror(rc_));            \
        conn_close(c);                                                                       \
    } while (0)

/* Answer ERROR code (negative PROTO_ERR_*) to request_id.  If the code
 * closes (or `force_close`), the connection is closed after the write and
 * reads nothing more.  Logs one line. */
static void conn_error_sample(ps_conn *c, uint32_t request_id, int code, int force_close,
                              const char *sample, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define conn_error(c, req, code, force_close, ...) \
    conn_error_sample((c), (req), (code), (force_close), NULL, __VA_ARGS__)

/* As conn_error; `sample` (sanitised input, or NULL) goes into the log line. */
static void conn_error_sample(ps_conn *c, uint32_t request_id, int code, int force_close,
                              const char *sample, const char *fmt, ...)
{
    proto_error e;
    e.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.text, sizeof e.text, fmt, ap);
    va_end(ap);
    int closes = force_close || proto_err_closes(code);
    if (!c->quiet)
        ps_log(c->srv, closes ? PS_LOG_WARN : PS_LOG_INFO, "conn %llu %s: ERROR %s: %s%s%s%s%s",
           (unsigned long long)c->id, c->addr, proto_strerror(code), e.text,
           closes ? " (closing)" : "", sample ? ", input \"" : "", sample ? sample : "",
           sample ? "\"" : "");
    CONN_SEND_MSG(c, proto_error_encode(&e, request_id, buf_, cap_, &len_));
    if (closes && c->state != PS_CONN_CLOSED) {
        conn_flush(c);
        conn_set_state(c, PS_CONN_CLOSING);
        conn_update_reading(c);
        if (c->nwrites == 0)
            conn_close(c);
    }
}

static void conn_close_cb(uv_handle_t *h)
{
    ps_conn *c = h->data;
    psd_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    proto_decoder_free(&c->dec);
    free(c->rbuf);
    free(c->shadow);
    secure_wipe(c, sizeof *c); /* session keys */
    free(c);
}

/* Detach the connection from its worker record (dropping its gradient from
 * an open sync round) and close it; freed in conn_close_cb. */
static void conn_close(ps_conn *c)
{
    if (c->state == PS_CONN_CLOSED)
        return;
    psd_server *s = c->srv;
    ps_worker *w = c->worker;
    c->worker = NULL;
    c->park = PS_PARK_NONE;
    free(c->batch);
    free(c->big);
    c->batch = c->big = NULL;
    conn_set_state(c, PS_CONN_CLOSED);
    s->nconns--;
    c->reading = 0;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    if (w && w->conn == c) {
        w->conn = NULL;
        if (w->in_round) {
            w->in_round = 0;
            s->round_n--;
            ps_log(s, PS_LOG_INFO, "worker %s disconnected: its gradient leaves round %llu",
                   w->id, (unsigned long long)s->shard.version + 1);
        } else {
            ps_log(s, PS_LOG_INFO, "worker %s disconnected (%s)", w->id, c->addr);
        }
        ps_progress(s);
    }
}

/* ----------------------------------------------------------- worker table */

static ps_worker *worker_find(psd_server *s, const char *id)
{
    for (size_t i = 0; i < s->nworkers; i++)
        if (strcmp(s->workers[i]->id, id) == 0)
            return s->workers[i];
    return NULL;
}

static ps_worker *worker_add(psd_server *s, const char *id)
{
    if (s->nworkers == s->capworkers) {
        size_t cap = s->capworkers ? 2 * s->capworkers : 8;
        if (cap > PSD_CKPT_MAX_WORKERS)
            return NULL;
        ps_worker **nw = realloc(s->workers, cap * sizeof(*nw));
        if (!nw)
            return NULL;
        s->workers = nw;
        s->capworkers = cap;
    }
    ps_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    snprintf(w->id, sizeof w->id, "%s", id);
    s->workers[s->nworkers++] = w;
    return w;
}

/* A worker the shard waits for: connected and not done. */
static int worker_live(const ps_worker *w)
{
    return w->conn != NULL && !w->done;
}

/* ------------------------------------------------------------ the job */

static int ps_checkpoint(psd_server *s, char *err, size_t errlen);

/* End the job: no update is applied from now on (every PUSH is answered
 * ACK FINISHED), waiting pulls and held acks are answered, and the final
 * checkpoint is written.  Logs one line. */
static void job_finish(psd_server *s, const char *reason)
{
    if (s->finished)
        return;
    s->finished = 1;
    snprintf(s->finish_reason, sizeof s->finish_reason, "%s", reason);
    s->finish_wall = time(NULL);
    s->finish_version = s->shard.version;
    s->changes++;
    ps_log(s, PS_LOG_INFO, "job finished: %s (version %llu)", reason,
           (unsigned long long)s->shard.version);
    char err[512];
    ps_checkpoint(s, err, sizeof err); /* a failure is logged there */
    ps_progress(s);
}

/* Finish the job if it is over: max_steps versions applied, or every
 * worker of the placement said DONE. */
static void job_check(psd_server *s)
{
    if (s->finished)
        return;
    char reason[160];
    if (s->job->max_steps > 0 && s->shard.version >= (uint64_t)s->job->max_steps) {
        snprintf(reason, sizeof reason, "max_steps %ld reached", s->job->max_steps);
        job_finish(s, reason);
        return;
    }
    const placement *pl = s->cfg->pl;
    int nw = 0;
    for (int i = 0; i < pl->nnodes; i++) {
        if (pl->nodes[i].role != PLACEMENT_ROLE_WORKER)
            continue;
        const ps_worker *w = worker_find(s, pl->nodes[i].id);
        if (!w || !w->done)
            return;
        nw++;
    }
    if (nw == 0)
        return;
    snprintf(reason, sizeof reason, "all %d worker%s done", nw, nw == 1 ? "" : "s");
    job_finish(s, reason);
}

/* ------------------------------------------------------------ modes */

/* A sealed WEIGHTS: the head and the floats of m's range written into the
 * write's own buffer and sealed there for this connection. */
static void send_weights_sealed(ps_conn *c, uint32_t req, const proto_weights *m)
{
    psd_server *s = c->srv;
    size_t head, n;
    size_t esize = m->encoding == PROTO_ENC_FP16 ? 2 : 4;
    int rc = proto_weights_encode_head(m, req, NULL, 0, &head, &n);
    ps_write *w = NULL;
    if (rc == PROTO_ERR_NOSPACE && !(w = write_new(head + esize * n + PROTO_SEAL_TAG_SIZE)))
        rc = PROTO_ERR_NOMEM;
    if (w)
        rc = proto_weights_encode_head(m, req, w->data, head, &head, &n);
    if (rc == 0) {
        if (esize == 2)
            proto_fp16_encode(w->data + head, s->shard.w + (m->lo - s->shard.lo), n);
        else
            proto_floats_encode(w->data + head, s->shard.w + (m->lo - s->shard.lo), n);
        rc = secure_seal(&c->sess.tx, w->data, head + esize * n, w->cap, &w->len);
    }
    if (rc != 0) {
        free(w);
        ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: %s", proto_strerror(rc));
        conn_close(c);
        return;
    }
    conn_flush(c); /* replies stay in order */
    conn_send(c, w);
}

/* Pull "topk": the topk_percent of entries where the weights cur differ
 * most from the peer's copy (shadow), into s->tk_idx (increasing) and
 * s->tk_send (their current values); returns how many.  The rest stays
 * different in the shadow too, so it is sent once it is among the
 * largest: delayed, not lost.  Returns (size_t)-1 out of memory. */
static size_t topk_target(psd_server *s, const float *shadow, const float *cur, size_t n)
{
    if (!s->tk_diff) {
        s->tk_diff = malloc(s->n * sizeof(float));
        s->tk_send = malloc(s->n * sizeof(float));
        s->tk_work = malloc(s->n * sizeof(uint32_t));
        s->tk_idx = malloc(s->n * sizeof(uint32_t));
        if (!s->tk_diff || !s->tk_send || !s->tk_work || !s->tk_idx) {
            free(s->tk_diff);
            free(s->tk_send);
            free(s->tk_work);
            free(s->tk_idx);
            s->tk_diff = s->tk_send = NULL;
            s->tk_work = s->tk_idx = NULL;
            return (size_t)-1;
        }
    }
    for (size_t i = 0; i < n; i++)
        s->tk_diff[i] = cur[i] - shadow[i];
    size_t k = proto_topk_count(n, s->job->compression.topk_percent);
    if (proto_topk_select(s->tk_diff, n, k, s->tk_work, s->tk_idx) != 0)
        return (size_t)-1;
    for (size_t j = 0; j < k; j++)
        s->tk_send[j] = cur[s->tk_idx[j]];
    return k;
}

/* A delta WEIGHTS (pull "delta") for this connection: the entries that
 * changed since the copy its peer holds (c->shadow), or the full fp32
 * weights when it holds none of this range or the delta would not be
 * smaller; either way the shadow becomes the weights sent.  Pull "topk":
 * only the largest of those changes (topk_target), encoded straight from
 * their indices (no pass over the slice), unless `exact` (the changes
 * since the initial weights a PULL with SEED holds: all of them, so a
 * worker that joins late starts from the current weights).  Encoded into
 * the write's own buffer (per connection: nothing to share). */
static void send_weights_delta(ps_conn *c, uint32_t req, proto_weights *m, int exact)
{
    psd_server *s = c->srv;
    size_t n = (size_t)(m->hi - m->lo);
    const float *cur = s->shard.w + (m->lo - s->shard.lo);
    size_t len = 0, full_len = 0;
    int rc, have_len = 0; /* len is the frame's already */
    m->values = cur;
    if (!c->shadow || c->shadow_lo != m->lo || c->shadow_hi != m->hi) {
        free(c->shadow);
        c->shadow = malloc(n * sizeof(float));
        c->shadow_lo = c->shadow_hi = 0;
        if (!c->shadow) {
            ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: out of memory");
            conn_close(c);
            return;
        }
        m->encoding = PROTO_ENC_FP32;
    } else {
        m->base = c->shadow;
        m->base_version = c->shadow_version;
        if (s->job->compression.pull == PLACEMENT_PULL_TOPK && !exact) {
            size_t k = topk_target(s, c->shadow, cur, n);
            if (k == (size_t)-1) {
                ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: out of memory");
                conn_close(c);
                return;
            }
            m->base = NULL;
            m->idx = s->tk_idx;
            m->values = s->tk_send;
            m->count = k;
        }
        proto_weights full = *m;
        full.encoding = PROTO_ENC_FP32;
        full.values = cur;
        proto_weights_encode(&full, req, NULL, 0, &full_len);
        rc = proto_weights_encode(m, req, NULL, 0, &len);
        if (rc != PROTO_ERR_NOSPACE || len >= full_len) {
            m->encoding = PROTO_ENC_FP32;
            m->values = cur;
            m->idx = NULL;
        } else {
            have_len = 1;
        }
    }
    size_t tag = c->sealed ? PROTO_SEAL_TAG_SIZE : 0;
    rc = have_len ? PROTO_ERR_NOSPACE : proto_weights_encode(m, req, NULL, 0, &len);
    ps_write *w = NULL;
    if (rc == PROTO_ERR_NOSPACE && !(w = write_new(len + tag)))
        rc = PROTO_ERR_NOMEM;
    if (w)
        rc = proto_weights_encode(m, req, w->data, len, &len);
    if (rc == 0 && tag)
        rc = secure_seal(&c->sess.tx, w->data, len, w->cap, &len);
    if (rc != 0) {
        free(w);
        ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: %s", proto_strerror(rc));
        conn_close(c);
        return;
    }
    w->len = len;
    if (m->encoding == PROTO_ENC_SPARSE && m->idx) /* the peer's copy: the shadow with these */
        for (size_t j = 0; j < m->count; j++)
            c->shadow[m->idx[j]] = m->values[j];
    else
        memcpy(c->shadow, m->values, n * sizeof(float));
    c->shadow_lo = m->lo;
    c->shadow_hi = m->hi;
    c->shadow_version = m->version;
    conn_flush(c); /* replies stay in order */
    conn_send(c, w);
}

/* A PULL whose client says it holds the job's initial weights of [lo, hi)
 * (PROTO_FLAG_SEED): when their CRC is that of ours (the same model code
 * and seed), they become this connection's shadow at version 0 and the
 * reply sends only what changed since them.  Returns 1 (shadow set), 0
 * (CRC differs: no shadow, the reply is full) or -1 (out of memory: the
 * connection is closed). */
static int seed_shadow(ps_conn *c, const proto_pull *p)
{
    psd_server *s = c->srv;
    size_t n = (size_t)(p->hi - p->lo);
    free(c->shadow);
    c->shadow_lo = c->shadow_hi = 0;
    if (!(c->shadow = malloc(n * sizeof(float)))) {
        ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: out of memory");
        conn_close(c);
        return -1;
    }
    cnn_params_init(s->cfg->model, s->job->seed, c->shadow, (size_t)p->lo, (size_t)p->hi);
    uint32_t crc = cnn_params_crc(c->shadow, n);
    if (crc != p->seed_crc) {
        ps_log(s, PS_LOG_WARN,
               "conn %llu %s: PULL says it holds the initial weights of [%llu, %llu) with CRC "
               "%08x, this shard's are %08x (another model build or seed?): sending them in full",
               (unsigned long long)c->id, c->addr, (unsigned long long)p->lo, (unsigned long long)p->hi,
               (unsigned)p->seed_crc, (unsigned)crc);
        return 0;
    }
    c->shadow_lo = p->lo;
    c->shadow_hi = p->hi;
    c->shadow_version = 0;
    return 1;
}

/* WEIGHTS for a PULL of [p->lo, p->hi) (inside the shard's range) in the
 * encoding it asks for.  fp32 and fp16: a 40-byte head of its own, then the
 * values straight from the shared snapshot of this version in that
 * encoding, written by the kernel from there (sealed sessions:
 * send_weights_sealed).  Delta: send_weights_delta. */
static void send_weights(ps_conn *c, uint32_t req, const proto_pull *p)
{
    psd_server *s = c->srv;
    proto_weights m = {0};
    m.version = s->shard.version;
    m.lo = p->lo;
    m.hi = p->hi;
    m.not_modified = p->min_version > s->shard.version;
    m.encoding = p->encoding;
    int seeded = p->seed ? seed_shadow(c, p) : 0;
    if (seeded < 0)
        return;
    if (!m.not_modified && m.encoding == PROTO_ENC_SPARSE) {
        send_weights_delta(c, req, &m, seeded);
        return;
    }
    if (!m.not_modified) /* the peer's copy is no longer the shadow */
        c->shadow_lo = c->shadow_hi = 0;
    if (c->sealed) {
        send_weights_sealed(c, req, &m);
        return;
    }
    size_t head, n;
    int rc = proto_weights_encode_head(&m, req, NULL, 0, &head, &n);
    ps_snap *snap = NULL;
    ps_write *w = NULL;
    if (rc == PROTO_ERR_NOSPACE && n > 0 &&
        !(snap = snap_current(s, m.encoding == PROTO_ENC_FP16)))
        rc = PROTO_ERR_NOMEM;
    else if (rc == PROTO_ERR_NOSPACE && !(w = write_new(head)))
        rc = PROTO_ERR_NOMEM;
    if (w)
        rc = proto_weights_encode_head(&m, req, w->data, head, &head, &n);
    if (rc != 0) {
        free(w);
        ps_log(s, PS_LOG_ERROR, "WEIGHTS reply: %s", proto_strerror(rc));
        conn_close(c);
        return;
    }
    w->len = head;
    if (n > 0) {
        snap->refs++;
        w->snap = snap;
        w->snap_off = snap->esize * (size_t)(p->lo - s->shard.lo);
        w->snap_len = snap->esize * n;
    }
    conn_flush(c); /* replies stay in order */
    conn_send(c, w);
}

static void send_ack(ps_conn *c, uint32_t req, const proto_ack *a)
{
    CONN_SEND_MSG(c, proto_ack_encode(a, req, buf_, cap_, &len_));
}

/* ssp: the slowest live worker's step (UINT64_MAX if none). */
static uint64_t ssp_min_step(psd_server *s)
{
    uint64_t m = UINT64_MAX;
    for (size_t i = 0; i < s->nworkers; i++)
        if (worker_live(s->workers[i]) && s->workers[i]->step < m)
            m = s->workers[i]->step;
    return m;
}

static int ssp_may_go(psd_server *s, const ps_worker *w)
{
    uint64_t m = ssp_min_step(s);
    return m == UINT64_MAX || w->step <= m || w->step - m <= (uint64_t)s->job->staleness;
}

/* sync: apply the round if every live worker gave a gradient (or `force`,
 * the barrier timeout, with at least one).  Returns 1 if applied. */
static int sync_try_complete(psd_server *s, int force)
{
    if (s->round_n == 0)
        return 0;
    size_t live = 0;
    for (size_t i = 0; i < s->nworkers; i++)
        if (worker_live(s->workers[i]))
            live++;
    /* The first round since start also waits (up to the barrier timeout)
     * for the placement's workers that have not connected yet: the job does
     * not start with whichever worker came first. */
    char missing[256] = "";
    size_t mo = 0, absent = 0;
    if (!s->rounds_done) {
        const placement *pl = s->cfg->pl;
        for (int i = 0; i < pl->nnodes; i++) {
            if (pl->nodes[i].role != PLACEMENT_ROLE_WORKER)
                continue;
            const ps_worker *w = worker_find(s, pl->nodes[i].id);
            if (w && (w->seen || w->done))
                continue;
            absent++;
            if (mo + strlen(pl->nodes[i].id) + 20 < sizeof missing)
                mo += (size_t)snprintf(missing + mo, sizeof missing - mo, "%s%s (not connected)",
                                       mo ? ", " : "", pl->nodes[i].id);
        }
    }
    if (!force && s->round_n < live + absent)
        return 0;
    size_t n = s->n, k = 0;
    memset(s->gbuf, 0, n * sizeof(float));
    for (size_t i = 0; i < s->nworkers; i++) {
        ps_worker *w = s->workers[i];
        if (!w->in_round) {
            if (worker_live(w) && mo + strlen(w->id) + 3 < sizeof missing)
                mo += (size_t)snprintf(missing + mo, sizeof missing - mo, "%s%s", mo ? ", " : "",
                                       w->id);
            continue;
        }
        for (size_t j = 0; j < n; j++)
            s->gbuf[j] += w->grad[j];
        w->in_round = 0;
        k++;
    }
    if (k > 1) /* the mean, summed in worker-table order */
        for (size_t j = 0; j < n; j++)
            s->gbuf[j] /= (float)k;
    ps_shard_apply(&s->shard, s->gbuf);
    s->round_n = 0;
    s->rounds_done = 1;
    if (force && mo)
        ps_log(s, PS_LOG_WARN, "barrier timeout: version %llu from %zu gradients, without %s",
               (unsigned long long)s->shard.version, k, missing);
    else
        ps_log(s, PS_LOG_DEBUG, "version %llu from %zu gradients",
               (unsigned long long)s->shard.version, k);
    return 1;
}

/* Complete what can complete and answer what was waiting for it.  Safe to
 * call from anywhere: a nested call only asks the outer one to loop. */
static void ps_progress(psd_server *s)
{
    if (s->stopping) /* the final checkpoint is written: change nothing */
        return;
    if (s->progressing) {
        s->progress_again = 1;
        return;
    }
    s->progressing = 1;
    do {
        s->progress_again = 0;
        if (s->job->mode == PLACEMENT_MODE_SYNC && !s->finished && sync_try_complete(s, 0))
            job_check(s);
        for (ps_conn *c = s->conns; c; c = c->next) {
            if (c->state != PS_CONN_READY || c->park == PS_PARK_NONE)
                continue;
            if (c->park == PS_PARK_PULL &&
                (s->shard.version >= c->park_pull.min_version || s->finished)) {
                c->park = PS_PARK_NONE;
                send_weights(c, c->park_req, &c->park_pull);
                conn_process(c);
            } else if (c->park == PS_PARK_ACK && c->worker &&
                       (ssp_may_go(s, c->worker) || s->finished)) {
                c->park = PS_PARK_NONE;
                ps_log(s, PS_LOG_DEBUG, "ssp: %s released at step %llu", c->worker->id,
                       (unsigned long long)c->worker->step);
                send_ack(c, c->park_req, &c->park_ack);
                conn_process(c);
            }
        }
    } while (s->progress_again);
    s->progressing = 0;
}

/* ------------------------------------------------------------ checkpoints */

/* Write the checkpoint now.  Returns 0, or -1 with a message. */
static int ps_checkpoint(psd_server *s, char *err, size_t errlen)
{
    psd_ckpt ck = {0};
    snprintf(ck.model, sizeof ck.model, "%s", s->job->model);
    ck.shard = (uint32_t)s->cfg->me->shard;
    ck.nparams = s->cfg->model->nparams;
    ck.lo = s->shard.lo;
    ck.hi = s->shard.hi;
    ck.seed = s->job->seed;
    ck.version = s->shard.version;
    ck.w = s->shard.w;
    ck.mom = s->shard.mom;
    ck.nworkers = (uint32_t)s->nworkers;
    ck.finished = s->finished;
    psd_ckpt_worker *ws = NULL;
    if (s->nworkers) {
        ws = calloc(s->nworkers, sizeof(*ws));
        if (!ws) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < s->nworkers; i++) {
            snprintf(ws[i].id, sizeof ws[i].id, "%s", s->workers[i]->id);
            ws[i].last_seq = s->workers[i]->last_seq;
            ws[i].step = s->workers[i]->step;
            ws[i].done = s->workers[i]->done;
        }
    }
    ck.workers = ws;
    size_t len = psd_ckpt_size(&ck);
    uint8_t *buf = len ? malloc(len) : NULL;
    int rc = -1;
    if (!buf)
        snprintf(err, errlen, "cannot encode a checkpoint of %zu bytes", len);
    else if (psd_ckpt_encode(&ck, buf, len, &len, err, errlen) == 0 &&
             psd_ckpt_file_write(s->ckpt_path, buf, len, err, errlen) == 0)
        rc = 0;
    free(buf);
    free(ws);
    s->ckpt_ms = ps_now(s);
    if (rc == 0) {
        s->ckpt_changes = s->changes;
        s->have_ckpt = 1;
        s->ckpt_wall = time(NULL);
        s->ckpt_version = s->shard.version;
        ps_log(s, PS_LOG_INFO, "checkpoint: version %llu written to %s (%zu bytes)",
               (unsigned long long)s->shard.version, s->ckpt_path, len);
    } else {
        ps_log(s, PS_LOG_ERROR, "checkpoint failed: %s", err);
    }
    return rc;
}

/* Resume from the checkpoint file if there is one.  Returns 0 (resumed or
 * nothing to resume), or -1 with a message. */
static int ps_resume(psd_server *s, char *err, size_t errlen)
{
    uint8_t *buf;
    size_t len;
    char e[512];
    int rc = psd_ckpt_file_read(s->ckpt_path, &buf, &len, e, sizeof e);
    if (rc == 1) {
        ps_log(s, PS_LOG_INFO, "no checkpoint at %s: starting from seed %llu", s->ckpt_path,
               (unsigned long long)s->job->seed);
        return 0;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    if (s->cfg->fresh) {
        free(buf);
        ps_log(s, PS_LOG_WARN, "--fresh: ignoring checkpoint %s (it is replaced at the next one)",
               s->ckpt_path);
        return 0;
    }
    psd_ckpt ck;
    if (psd_ckpt_decode(buf, len, &ck, e, sizeof e) != 0) {
        free(buf);
        snprintf(err, errlen, "checkpoint %s: %s (start with --fresh to discard it)",
                 s->ckpt_path, e);
        return -1;
    }
    free(buf);
    psd_ckpt want = {0};
    snprintf(want.model, sizeof want.model, "%s", s->job->model);
    want.shard = (uint32_t)s->cfg->me->shard;
    want.nparams = s->cfg->model->nparams;
    want.lo = s->shard.lo;
    want.hi = s->shard.hi;
    want.seed = s->job->seed;
    if (psd_ckpt_match(&ck, &want, e, sizeof e) != 0) {
        psd_ckpt_free(&ck);
        snprintf(err, errlen,
                 "checkpoint %s belongs to another job: %s (start with --fresh to discard it)",
                 s->ckpt_path, e);
        return -1;
    }
    memcpy(s->shard.w, ck.w, s->n * sizeof(float));
    memcpy(s->shard.mom, ck.mom, s->n * sizeof(float));
    s->shard.version = ck.version;
    for (uint32_t i = 0; i < ck.nworkers; i++) {
        ps_worker *w = worker_find(s, ck.workers[i].id);
        if (!w)
            w = worker_add(s, ck.workers[i].id);
        if (!w) {
            psd_ckpt_free(&ck);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        w->last_seq = ck.workers[i].last_seq;
        w->step = ck.workers[i].step;
        w->done = ck.workers[i].done;
    }
    if (ck.finished) {
        s->finished = 1;
        s->finish_wall = time(NULL);
        s->finish_version = ck.version;
        snprintf(s->finish_reason, sizeof s->finish_reason,
                 "finished before this restart (checkpoint at version %llu)",
                 (unsigned long long)ck.version);
    }
    s->have_ckpt = 1;
    s->ckpt_version = ck.version;
    s->ckpt_wall = time(NULL);
    ps_log(s, PS_LOG_INFO, "resumed from %s: version %llu, %u workers%s", s->ckpt_path,
           (unsigned long long)ck.version, ck.nworkers,
           ck.finished ? ", job finished" : "");
    psd_ckpt_free(&ck);
    return 0;
}

/* ------------------------------------------------------------ requests */

/* The client is who its HELLO said (and, with a key, proved it): a worker
 * takes its record (its older connection is closed), and the decoder's
 * maximum becomes the role's.  Returns the worker's last_seq, or -1 after
 * an ERROR. */
static int64_t conn_join(ps_conn *c, uint32_t req, int role, const char *node_id)
{
    psd_server *s = c->srv;
    uint64_t last_seq = 0;
    if (role == PROTO_ROLE_WORKER) {
        ps_worker *w = worker_find(s, node_id);
        if (!w)
            w = worker_add(s, node_id);
        if (!w) {
            conn_error(c, req, PROTO_ERR_NOMEM, 1, "worker table full or out of memory");
            return -1;
        }
        if (s->job->mode == PLACEMENT_MODE_SYNC && !w->grad) {
            w->grad = malloc(s->n * sizeof(float));
            if (!w->grad) {
                conn_error(c, req, PROTO_ERR_NOMEM, 1, "out of memory for a gradient");
                return -1;
            }
        }
        if (w->conn) {
            ps_log(s, PS_LOG_INFO, "worker %s reconnected from %s: closing its older connection %s",
                   w->id, c->addr, w->conn->addr);
            conn_close(w->conn);
        }
        w->conn = c;
        w->seen = 1;
        c->worker = w;
        if (w->done && !s->finished) { /* back for more: wait for it again */
            w->done = 0;
            s->changes++;
        }
        snprintf(w->addr, sizeof w->addr, "%s", c->addr);
        last_seq = w->last_seq;
        ps_log(s, PS_LOG_INFO, "worker %s joined from %s (last_seq %llu, version %llu%s)", w->id,
               c->addr, (unsigned long long)last_seq, (unsigned long long)s->shard.version,
               c->sealed ? ", authenticated" : "");
    } else {
        ps_log(s, PS_LOG_INFO, "operator %s connected from %s%s", node_id, c->addr,
               c->sealed ? " (authenticated)" : "");
    }
    c->role = role;
    /* the largest frame this peer may send: a PUSH of the whole shard */
    size_t push_frame = PROTO_HEADER_SIZE + PROTO_PUSH_FIXED + 4 * s->n + PROTO_SEAL_TAG_SIZE;
    proto_decoder_set_max(&c->dec, role == PROTO_ROLE_WORKER && push_frame > PS_OPERATOR_FRAME
                                       ? push_frame
                                       : PS_OPERATOR_FRAME);
    return (int64_t)last_seq;
}

/* WELCOME with a cluster key: the shard's nonce and proof; the session is
 * derived now and used once the client's AUTH is verified. */
static void send_welcome_keyed(ps_conn *c, uint32_t req, proto_welcome *m)
{
    psd_server *s = c->srv;
    secure_shard_welcome_prepare(&c->hs, m);
    size_t len = 0;
    int rc = proto_welcome_encode(m, req, NULL, 0, &len);
    uint8_t *buf = rc == PROTO_ERR_NOSPACE ? conn_reserve(c, len) : NULL;
    if (buf) {
        rc = proto_welcome_encode(m, req, buf, len, &len);
        if (rc == 0)
            rc = secure_shard_welcome_finish(&c->hs, s->cfg->key, buf, len, &c->sess);
        conn_commit(c, len, rc == 0);
    } else if (rc == PROTO_ERR_NOSPACE) {
        rc = PROTO_ERR_NOMEM;
    }
    if (rc != 0) {
        ps_log(s, PS_LOG_ERROR, "WELCOME: %s", proto_strerror(rc));
        conn_close(c);
    }
}

static void handle_hello(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    proto_hello h;
    int rc = proto_hello_decode(f, &h);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad HELLO: %s", proto_strerror(rc));
        return;
    }
    const char *model = s->job->model;
    uint64_t np = s->cfg->model->nparams;
    if (s->cfg->key && h.auth_method != PROTO_AUTH_KEY) {
        conn_error(c, req, PROTO_ERR_AUTH, 1,
                   "this cluster requires the key: %s %s said HELLO without it (give the "
                   "client the placement's auth.key_file)",
                   h.role == PROTO_ROLE_WORKER ? "worker" : "operator", h.node_id);
        return;
    }
    if (!s->cfg->key && h.auth_method != PROTO_AUTH_NONE) {
        conn_error(c, req, PROTO_ERR_AUTH, 1,
                   "this shard does not use a key (its placement has no auth), but %s "
                   "offered one",
                   h.node_id);
        return;
    }
    if (h.role == PROTO_ROLE_WORKER) {
        if (strcmp(h.model, model) != 0 || h.nparams != np) {
            conn_error(c, req, PROTO_ERR_MODEL, 1,
                       "model mismatch: you have \"%s\" with %llu parameters, this shard "
                       "serves \"%s\" with %llu",
                       h.model, (unsigned long long)h.nparams, model, (unsigned long long)np);
            return;
        }
    } else if (h.role == PROTO_ROLE_OPERATOR) {
        if ((h.model[0] && strcmp(h.model, model) != 0) || (h.nparams && h.nparams != np)) {
            conn_error(c, req, PROTO_ERR_MODEL, 1,
                       "model mismatch: you have \"%s\" with %llu parameters, this shard "
                       "serves \"%s\" with %llu",
                       h.model, (unsigned long long)h.nparams, model, (unsigned long long)np);
            return;
        }
    } else {
        conn_error(c, req, PROTO_ERR_STATE, 1, "role %u may not connect to a shard", h.role);
        return;
    }
    proto_welcome m = {0};
    m.role = PROTO_ROLE_SHARD;
    m.auth_method = PROTO_AUTH_NONE;
    m.nparams = np;
    m.lo = s->shard.lo;
    m.hi = s->shard.hi;
    m.param_version = s->shard.version;
    snprintf(m.node_id, sizeof m.node_id, "%s", s->cfg->me->id);
    snprintf(m.model, sizeof m.model, "%s", model);
    if (s->cfg->key) {
        /* nothing is joined before the AUTH: an unauthenticated HELLO must
         * not take a worker's place */
        const ps_worker *w = h.role == PROTO_ROLE_WORKER ? worker_find(s, h.node_id) : NULL;
        m.last_seq = w ? w->last_seq : 0;
        c->hello_role = h.role;
        snprintf(c->hello_id, sizeof c->hello_id, "%s", h.node_id);
        if (secure_hs_hello(&c->hs, f) != 0) {
            conn_error(c, req, PROTO_ERR_INTERNAL, 1, "handshake state");
            return;
        }
        conn_set_state(c, PS_CONN_AUTH);
        send_welcome_keyed(c, req, &m);
        return;
    }
    int64_t last_seq = conn_join(c, req, h.role, h.node_id);
    if (last_seq < 0)
        return;
    m.last_seq = (uint64_t)last_seq;
    conn_set_state(c, PS_CONN_READY);
    CONN_SEND_MSG(c, proto_welcome_encode(&m, req, buf_, cap_, &len_));
}

/* AUTH: the client's proof.  Verified, the session starts: from here every
 * frame is sealed, beginning with this OK. */
static void handle_auth(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    proto_auth a;
    int rc = proto_auth_decode(f, &a);
    if (rc == 0)
        rc = secure_shard_auth(&c->hs, &a);
    if (rc != 0) {
        secure_wipe(&c->sess, sizeof c->sess);
        conn_error(c, req, PROTO_ERR_AUTH, 1,
                   "wrong key: the proof of %s %s does not match this cluster's key (or it "
                   "replayed an old handshake)",
                   c->hello_role == PROTO_ROLE_WORKER ? "worker" : "operator", c->hello_id);
        return;
    }
    c->sealed = 1;
    if (conn_join(c, req, c->hello_role, c->hello_id) < 0)
        return;
    conn_set_state(c, PS_CONN_READY);
    proto_ok ok = {.version = s->shard.version};
    CONN_SEND_MSG(c, proto_ok_encode(&ok, req, buf_, cap_, &len_));
}

static void handle_pull(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    proto_pull p;
    int rc = proto_pull_decode(f, &p);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad PULL: %s", proto_strerror(rc));
        return;
    }
    if (p.lo < s->shard.lo || p.hi > s->shard.hi) {
        conn_error(c, req, PROTO_ERR_RANGE, 1, "PULL [%llu, %llu) is not within [%zu, %zu)",
                   (unsigned long long)p.lo, (unsigned long long)p.hi, s->shard.lo,
                   s->shard.hi);
        return;
    }
    if (s->job->mode == PLACEMENT_MODE_SYNC && !s->finished &&
        p.min_version == s->shard.version + 1) {
        c->park = PS_PARK_PULL;
        c->park_req = req;
        c->park_pull = p;
        c->park_ms = ps_now(s);
        return;
    }
    send_weights(c, req, &p);
}

static void handle_push(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    ps_worker *w = c->worker;
    proto_push p;
    int rc = proto_push_decode(f, &p);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad PUSH: %s", proto_strerror(rc));
        return;
    }
    if (p.lo != s->shard.lo || p.hi != s->shard.hi) {
        conn_error(c, req, PROTO_ERR_RANGE, 1, "PUSH [%llu, %llu) is not this shard's [%zu, %zu)",
                   (unsigned long long)p.lo, (unsigned long long)p.hi, s->shard.lo,
                   s->shard.hi);
        return;
    }
    proto_ack a = {.seq = p.seq, .version = s->shard.version};
    if (p.seq <= w->last_seq) {
        a.status = PROTO_ACK_DUPLICATE;
        ps_log(s, PS_LOG_DEBUG, "worker %s: seq %llu is a duplicate (last %llu)", w->id,
               (unsigned long long)p.seq, (unsigned long long)w->last_seq);
        send_ack(c, req, &a);
        return;
    }
    if (s->finished) { /* not consumed: a resend is answered the same */
        a.status = PROTO_ACK_FINISHED;
        send_ack(c, req, &a);
        return;
    }
    w->last_seq = p.seq;
    w->step = p.step;
    s->changes++;
    w->samples += p.samples;
    w->last_push_ms = ps_now(s);
    w->staleness = s->shard.version >= p.base_version ? s->shard.version - p.base_version : 0;
    s->pushes++;
    switch (s->job->mode) {
    case PLACEMENT_MODE_SYNC:
        /* A push one version late (its round closed by the barrier timeout
         * while it was on the way) joins the current round: dropping it
         * would leave this worker a round behind here but not on the other
         * shards, and every later round would then wait for the timeout. */
        if ((p.base_version != s->shard.version && p.base_version + 1 != s->shard.version) ||
            w->in_round) {
            a.status = PROTO_ACK_STALE;
            ps_log(s, PS_LOG_INFO, "worker %s: push seq %llu for version %llu dropped (now %llu%s)",
                   w->id, (unsigned long long)p.seq, (unsigned long long)p.base_version,
                   (unsigned long long)s->shard.version,
                   w->in_round ? ", already in this round" : "");
            send_ack(c, req, &a);
            return;
        }
        if (p.base_version != s->shard.version)
            ps_log(s, PS_LOG_INFO, "worker %s: push seq %llu for version %llu joins round %llu",
                   w->id, (unsigned long long)p.seq, (unsigned long long)p.base_version,
                   (unsigned long long)s->shard.version);
        proto_push_values(&p, w->grad);
        w->in_round = 1;
        if (s->round_n++ == 0)
            s->round_start_ms = ps_now(s);
        a.status = PROTO_ACK_WAITING;
        send_ack(c, req, &a);
        ps_progress(s);
        return;
    case PLACEMENT_MODE_SSP:
    case PLACEMENT_MODE_ASYNC:
    default:
        proto_push_values(&p, s->gbuf);
        ps_shard_apply(&s->shard, s->gbuf);
        a.status = PROTO_ACK_APPLIED;
        a.version = s->shard.version;
        job_check(s);
        if (s->job->mode == PLACEMENT_MODE_SSP && !s->finished && !ssp_may_go(s, w)) {
            ps_log(s, PS_LOG_DEBUG, "ssp: %s waits at step %llu (slowest %llu, bound %ld)", w->id,
                   (unsigned long long)w->step, (unsigned long long)ssp_min_step(s),
                   s->job->staleness);
            c->park = PS_PARK_ACK;
            c->park_req = req;
            c->park_ack = a;
            c->park_ms = ps_now(s);
        } else {
            send_ack(c, req, &a);
        }
        ps_progress(s); /* others may be released */
        return;
    }
}

static void json_add_u64(cJSON *o, const char *k, uint64_t v)
{
    cJSON_AddNumberToObject(o, k, (double)v);
}

static void json_add_num_or_null(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static char *status_json(psd_server *s)
{
    uint64_t now = ps_now(s);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "node", s->cfg->me->id);
    cJSON_AddNumberToObject(o, "shard", s->cfg->me->shard);
    cJSON_AddStringToObject(o, "model", s->job->model);
    json_add_u64(o, "nparams", s->cfg->model->nparams);
    cJSON *r = cJSON_AddArrayToObject(o, "range");
    if (r) {
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)s->shard.lo));
        cJSON_AddItemToArray(r, cJSON_CreateNumber((double)s->shard.hi));
    }
    json_add_u64(o, "version", s->shard.version);
    cJSON_AddStringToObject(o, "mode", placement_mode_name(s->job->mode));
    if (s->job->mode == PLACEMENT_MODE_SSP)
        cJSON_AddNumberToObject(o, "staleness", (double)s->job->staleness);
    if (s->job->mode == PLACEMENT_MODE_SYNC) {
        cJSON_AddNumberToObject(o, "round_gradients", (double)s->round_n);
        cJSON_AddNumberToObject(o, "barrier_timeout_ms", (double)s->job->barrier_timeout_ms);
    }
    cJSON_AddNumberToObject(o, "uptime_s", (double)(now - s->start_ms) / 1000.0);
    json_add_u64(o, "pushes", s->pushes);
    cJSON_AddNumberToObject(o, "pushes_per_s", s->pushes_rate);
    json_add_u64(o, "bytes_in", s->bytes_in);
    json_add_u64(o, "bytes_out", s->bytes_out);
    size_t nconn = 0;
    for (ps_conn *c = s->conns; c; c = c->next)
        if (c->state != PS_CONN_CLOSED)
            nconn++;
    cJSON_AddNumberToObject(o, "connections", (double)nconn);
    if (s->have_ckpt) {
        cJSON *ck = cJSON_AddObjectToObject(o, "last_checkpoint");
        if (ck) {
            json_add_u64(ck, "version", s->ckpt_version);
            cJSON_AddNumberToObject(ck, "unix_time", (double)s->ckpt_wall);
            cJSON_AddNumberToObject(ck, "age_s", difftime(time(NULL), s->ckpt_wall));
            cJSON_AddStringToObject(ck, "path", s->ckpt_path);
        }
    } else {
        cJSON_AddNullToObject(o, "last_checkpoint");
    }
    cJSON *job = cJSON_AddObjectToObject(o, "job");
    if (job) {
        cJSON_AddStringToObject(job, "state", s->finished ? "finished" : "running");
        if (s->finished) {
            cJSON_AddStringToObject(job, "reason", s->finish_reason);
            cJSON_AddNumberToObject(job, "finished_unix", (double)s->finish_wall);
        } else {
            cJSON_AddNullToObject(job, "reason");
            cJSON_AddNullToObject(job, "finished_unix");
        }
        json_add_u64(job, "version", s->finished ? s->finish_version : s->shard.version);
        if (s->job->max_steps > 0)
            json_add_u64(job, "max_steps", (uint64_t)s->job->max_steps);
        else
            cJSON_AddNullToObject(job, "max_steps");
    }
    cJSON *ws = cJSON_AddArrayToObject(o, "workers");
    for (size_t i = 0; ws && i < s->nworkers; i++) {
        ps_worker *w = s->workers[i];
        cJSON *wo = cJSON_CreateObject();
        if (!wo)
            break;
        cJSON_AddStringToObject(wo, "id", w->id);
        cJSON_AddStringToObject(wo, "address", w->addr);
        cJSON_AddBoolToObject(wo, "connected", w->conn != NULL);
        cJSON_AddBoolToObject(wo, "done", w->done);
        json_add_u64(wo, "step", w->step);
        json_add_u64(wo, "samples", w->samples);
        json_add_u64(wo, "last_seq", w->last_seq);
        if (w->last_push_ms)
            cJSON_AddNumberToObject(wo, "last_push_age_s", (double)(now - w->last_push_ms) / 1000.0);
        else
            cJSON_AddNullToObject(wo, "last_push_age_s");
        cJSON_AddNumberToObject(wo, "samples_per_s", w->samples_rate);
        json_add_u64(wo, "staleness", w->staleness);
        cJSON_AddItemToArray(ws, wo);
    }
    cJSON *hist = cJSON_AddArrayToObject(o, "history");
    size_t first = (s->report_next + PS_REPORTS_MAX - s->nreports) % PS_REPORTS_MAX;
    for (size_t i = 0; hist && i < s->nreports; i++) {
        const ps_report *rp = &s->reports[(first + i) % PS_REPORTS_MAX];
        cJSON *ro = cJSON_CreateObject();
        if (!ro)
            break;
        cJSON_AddStringToObject(ro, "worker", rp->worker);
        json_add_u64(ro, "version", rp->version);
        json_add_u64(ro, "step", rp->r.step);
        json_add_u64(ro, "samples", rp->r.samples);
        cJSON_AddNumberToObject(ro, "elapsed_s", rp->r.elapsed_s);
        json_add_num_or_null(ro, "test_acc", rp->r.test_acc);
        json_add_num_or_null(ro, "test_loss", rp->r.test_loss);
        cJSON_AddItemToArray(hist, ro);
    }
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return txt;
}

static void handle_status(ps_conn *c, const proto_frame *f)
{
    uint32_t req = f->hdr.request_id;
    int rc = proto_status_req_decode(f);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad STATUS_REQ: %s", proto_strerror(rc));
        return;
    }
    char *txt = status_json(c->srv);
    if (!txt) {
        conn_error(c, req, PROTO_ERR_NOMEM, 0, "out of memory for the status");
        return;
    }
    proto_status st = {.json = txt, .len = strlen(txt)};
    CONN_SEND_MSG(c, proto_status_encode(&st, req, buf_, cap_, &len_));
    cJSON_free(txt);
}

static void handle_report(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    proto_report r;
    int rc = proto_report_decode(f, &r);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad REPORT: %s", proto_strerror(rc));
        return;
    }
    ps_report *rp = &s->reports[s->report_next];
    snprintf(rp->worker, sizeof rp->worker, "%s", c->worker->id);
    rp->version = s->shard.version;
    rp->r = r;
    s->report_next = (s->report_next + 1) % PS_REPORTS_MAX;
    if (s->nreports < PS_REPORTS_MAX)
        s->nreports++;
    ps_log(s, PS_LOG_INFO, "report from %s: step %llu, %llu samples, acc %.4f, loss %.4f",
           c->worker->id, (unsigned long long)r.step, (unsigned long long)r.samples, r.test_acc,
           r.test_loss);
    proto_ok ok = {.version = s->shard.version};
    CONN_SEND_MSG(c, proto_ok_encode(&ok, req, buf_, cap_, &len_));
    double target = s->job->target_accuracy;
    if (target > 0 && !s->finished && isfinite(r.test_acc) && 100.0 * r.test_acc >= target) {
        char reason[160];
        snprintf(reason, sizeof reason, "target accuracy %.2f%% reached (%.2f%% from %s)", target,
                 100.0 * r.test_acc, c->worker->id);
        job_finish(s, reason);
    }
}

static void handle_done(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    proto_done d;
    int rc = proto_done_decode(f, &d);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad DONE: %s", proto_strerror(rc));
        return;
    }
    ps_worker *w = c->worker;
    if (!w->done) {
        w->done = 1;
        s->changes++;
        ps_log(s, PS_LOG_INFO, "worker %s done after %llu steps, %llu samples", w->id,
               (unsigned long long)d.step, (unsigned long long)d.samples);
    }
    proto_ok ok = {.version = s->shard.version};
    CONN_SEND_MSG(c, proto_ok_encode(&ok, req, buf_, cap_, &len_));
    job_check(s);
    ps_progress(s); /* the barrier and the ssp bound stop waiting for it */
}

static void handle_checkpoint(ps_conn *c, const proto_frame *f)
{
    psd_server *s = c->srv;
    uint32_t req = f->hdr.request_id;
    int rc = proto_checkpoint_decode(f);
    if (rc < 0) {
        conn_error(c, req, rc, 1, "bad CHECKPOINT: %s", proto_strerror(rc));
        return;
    }
    char err[512];
    if (ps_checkpoint(s, err, sizeof err) != 0) {
        conn_error(c, req, PROTO_ERR_INTERNAL, 0, "checkpoint failed: %s", err);
        return;
    }
    proto_ok ok = {.version = s->shard.version};
    CONN_SEND_MSG(c, proto_ok_encode(&ok, req, buf_, cap_, &len_));
}

static void handle_frame(ps_conn *c, const proto_frame *f)
{
    uint8_t t = f->hdr.type;
    uint32_t req = f->hdr.request_id;
    switch (t) {
    case PROTO_MSG_WELCOME:
    case PROTO_MSG_WEIGHTS:
    case PROTO_MSG_ACK:
    case PROTO_MSG_STATUS:
    case PROTO_MSG_OK:
    case PROTO_MSG_ERROR:
        conn_error(c, req, PROTO_ERR_STATE, 1, "%s is a reply, not a request", proto_msg_name(t));
        return;
    default:
        break;
    }
    if (c->state == PS_CONN_HANDSHAKE) {
        if (t != PROTO_MSG_HELLO)
            conn_error(c, req, PROTO_ERR_STATE, 1, "%s before HELLO", proto_msg_name(t));
        else
            handle_hello(c, f);
        return;
    }
    if (c->state == PS_CONN_AUTH) {
        if (t != PROTO_MSG_AUTH)
            conn_error(c, req, PROTO_ERR_STATE, 1, "%s before AUTH", proto_msg_name(t));
        else
            handle_auth(c, f);
        return;
    }
    /* after the handshake: each request, and the role allowed to send it (0: any) */
    static const struct {
        uint8_t type;
        uint8_t role;
        void (*handle)(ps_conn *c, const proto_frame *f);
    } routes[] = {
        {PROTO_MSG_PULL, 0, handle_pull},
        {PROTO_MSG_STATUS_REQ, 0, handle_status},
        {PROTO_MSG_PUSH, PROTO_ROLE_WORKER, handle_push},
        {PROTO_MSG_REPORT, PROTO_ROLE_WORKER, handle_report},
        {PROTO_MSG_DONE, PROTO_ROLE_WORKER, handle_done},
        {PROTO_MSG_CHECKPOINT, PROTO_ROLE_OPERATOR, handle_checkpoint},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].type != t)
            continue;
        if (routes[i].role && routes[i].role != c->role)
            conn_error(c, req, PROTO_ERR_STATE, 1, "%s is for %s", proto_msg_name(t),
                       routes[i].role == PROTO_ROLE_WORKER ? "workers" : "operators");
        else
            routes[i].handle(c, f);
        return;
    }
    switch (t) {
    case PROTO_MSG_HELLO:
        conn_error(c, req, PROTO_ERR_STATE, 1, "second HELLO");
        return;
    case PROTO_MSG_AUTH:
        conn_error(c, req, PROTO_ERR_STATE, 1, "AUTH %s",
                   c->sealed ? "twice" : "without a cluster key (this shard uses none)");
        return;
    default:
        conn_error(c, req, PROTO_ERR_UNKNOWN_TYPE, 1, "message type %u", t);
        return;
    }
}

/* A whole frame from the decoder: opened first in a sealed session (in
 * place: its payload lies in this connection's read buffer or decoder
 * buffer, both its own), then handled. */
static void conn_frame(ps_conn *c, const proto_frame *f)
{
    int sealed_in = (f->hdr.flags & PROTO_FLAG_SEALED) != 0;
    if (!c->sealed) {
        if (sealed_in)
            conn_error(c, f->hdr.request_id, PROTO_ERR_AUTH, 1,
                       "a sealed %s outside an authenticated session", proto_msg_name(f->hdr.type));
        else
            handle_frame(c, f);
        return;
    }
    proto_frame plain;
    int rc = sealed_in ? secure_open(&c->sess.rx, f, (uint8_t *)f->payload, f->payload_len, &plain)
                       : PROTO_ERR_AUTH;
    if (rc != 0) {
        /* one line, one (sealed) ERROR, and the connection is closed: its
         * frames can no longer be trusted */
        conn_error(c, f->hdr.request_id, PROTO_ERR_AUTH, 1, "frame authentication failed (%s %s)",
                   sealed_in ? "sealed" : "unsealed", proto_msg_name(f->hdr.type));
        return;
    }
    handle_frame(c, &plain);
}

/* Handle the buffered input while the connection may go on. */
static void conn_process(ps_conn *c)
{
    while ((c->state == PS_CONN_HANDSHAKE || c->state == PS_CONN_AUTH ||
            c->state == PS_CONN_READY) &&
           c->park == PS_PARK_NONE && c->out_bytes <= c->srv->out_limit && c->rpos < c->rlen) {
        size_t used = 0;
        proto_frame f;
        const uint8_t *at = c->rbuf + c->rpos;
        size_t avail = c->rlen - c->rpos;
        int rc = proto_decoder_feed(&c->dec, at, avail, &used, &f);
        if (rc < 0) {
            const proto_header *h = proto_decoder_header(&c->dec);
            char sample[PS_SAMPLE_MAX * 4 + 8];
            ps_sanitize(at, avail, sample, sizeof sample);
            c->rpos = c->rlen;
            conn_error_sample(c, h ? h->request_id : 0, rc, 1, sample, "bad frame: %s",
                              proto_strerror(rc));
            break;
        }
        c->rpos += used;
        if (rc == 1)
            conn_frame(c, &f);
    }
    if (c->state == PS_CONN_CLOSED)
        return;
    conn_flush(c);
    if (c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    conn_update_reading(c);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    ps_conn *c = st->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state == PS_CONN_AUTH)
            ps_log(c->srv, PS_LOG_WARN,
                   "conn %llu %s: %s closed the connection before its AUTH (%s; does it hold "
                   "another cluster key?)",
                   (unsigned long long)c->id, c->addr, c->hello_id,
                   nread == UV_EOF ? "end of stream" : uv_strerror((int)nread));
        else if (nread != UV_EOF)
            ps_log(c->srv, PS_LOG_INFO, "conn %llu %s: read: %s", (unsigned long long)c->id,
                   c->addr, uv_strerror((int)nread));
        else if ((c->state == PS_CONN_READY || c->state == PS_CONN_HANDSHAKE) &&
                 !proto_decoder_idle(&c->dec))
            ps_log(c->srv, PS_LOG_INFO, "conn %llu %s: closed in the middle of a frame",
                   (unsigned long long)c->id, c->addr);
        conn_close(c);
        return;
    }
    c->srv->bytes_in += (uint64_t)nread;
    c->rx_ms = ps_now(c->srv);
    if (c->state == PS_CONN_DRAINING)
        return;
    c->rlen += (size_t)nread;
    conn_process(c);
    if (c->state != PS_CONN_CLOSED) {
        if (proto_decoder_idle(&c->dec) && c->rpos == c->rlen)
            c->frame_ms = 0;
        else if (!c->frame_ms)
            c->frame_ms = c->rx_ms;
    }
}

static void listener_cb(uv_stream_t *server, int status)
{
    psd_server *s = server->data;
    if (status < 0) {
        ps_log(s, PS_LOG_WARN, "accept: %s", uv_strerror(status));
        return;
    }
    ps_conn *c = calloc(1, sizeof(*c));
    uint8_t *rbuf = malloc(PS_READ_BUF);
    /* max_frame was checked at start, so the decoder init cannot fail */
    if (!c || !rbuf || proto_decoder_init(&c->dec, s->max_frame) != 0 ||
        uv_tcp_init(&s->loop, &c->tcp) != 0) {
        ps_log(s, PS_LOG_ERROR, "out of memory for a connection");
        free(c);
        free(rbuf);
        return;
    }
    c->tcp.data = c;
    c->srv = s;
    c->rbuf = rbuf;
    c->id = ++s->next_conn_id;
    c->state = PS_CONN_HANDSHAKE;
    c->state_ms = ps_now(s);
    snprintf(c->addr, sizeof c->addr, "?");
    c->rx_ms = c->state_ms;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    /* before HELLO only a HELLO-sized frame is taken */
    proto_decoder_set_max(&c->dec, PS_HELLO_FRAME);
    if (s->nconns > (size_t)s->max_conns) { /* this one is over the limit */
        c->quiet = 1;
        s->refused++;
        uint64_t now = ps_now(s);
        if (now - s->refused_logged_ms >= 1000) {
            ps_log(s, PS_LOG_WARN, "too many connections (max %d): %llu refused so far",
                   s->max_conns, (unsigned long long)s->refused);
            s->refused_logged_ms = now;
        }
        conn_error(c, 0, PROTO_ERR_BUSY, 1, "too many connections (max %d)", s->max_conns);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 60); /* notice half-open peers eventually */
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
            snprintf(c->addr, sizeof c->addr, "%s:%d", ip, port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(c->addr, sizeof c->addr, "[%s]:%d", ip, port);
        }
    }
    ps_log(s, PS_LOG_DEBUG, "conn %llu from %s", (unsigned long long)c->id, c->addr);
    conn_update_reading(c);
}

/* ------------------------------------------------------------ loop */

static void ps_stop(psd_server *s, const char *why);

static void timer_cb(uv_timer_t *t)
{
    psd_server *s = t->data;
    uint64_t now = ps_now(s);
    /* rates, once a second */
    if (now - s->rate_ms >= 1000) {
        double dt = (double)(now - s->rate_ms) / 1000.0;
        s->pushes_rate = (double)(s->pushes - s->pushes_prev) / dt;
        s->pushes_prev = s->pushes;
        for (size_t i = 0; i < s->nworkers; i++) {
            ps_worker *w = s->workers[i];
            w->samples_rate = (double)(w->samples - w->samples_prev) / dt;
            w->samples_prev = w->samples;
        }
        s->rate_ms = now;
    }
    /* sync barrier timeout, and pulls that waited as long */
    uint64_t bt = (uint64_t)s->job->barrier_timeout_ms;
    if (s->job->mode == PLACEMENT_MODE_SYNC) {
        if (s->round_n > 0 && !s->finished && now - s->round_start_ms >= bt &&
            sync_try_complete(s, 1)) {
            job_check(s);
            ps_progress(s);
        }
        for (ps_conn *c = s->conns; c; c = c->next)
            if (c->state == PS_CONN_READY && c->park == PS_PARK_PULL && now - c->park_ms >= bt &&
                s->round_n == 0) {
                c->park = PS_PARK_NONE;
                send_weights(c, c->park_req, &c->park_pull); /* not modified */
                conn_process(c);
            }
    }
    /* limits: no HELLO in time, a frame left unfinished, idle */
    for (ps_conn *c = s->conns; c; c = c->next) {
        if (c->state == PS_CONN_HANDSHAKE && now - c->state_ms >= (uint64_t)s->handshake_ms)
            conn_error(c, 0, PROTO_ERR_TIMEOUT, 1, "no HELLO within %.0f s",
                       (double)s->handshake_ms / 1000.0);
        else if (c->state == PS_CONN_AUTH && now - c->state_ms >= (uint64_t)s->handshake_ms)
            conn_error(c, 0, PROTO_ERR_TIMEOUT, 1, "no AUTH within %.0f s of the WELCOME",
                       (double)s->handshake_ms / 1000.0);
        else if ((c->state == PS_CONN_READY || c->state == PS_CONN_HANDSHAKE ||
                  c->state == PS_CONN_AUTH) && c->frame_ms &&
                 now - c->frame_ms >= (uint64_t)s->frame_ms)
            conn_error(c, 0, PROTO_ERR_TIMEOUT, 1, "a frame still incomplete after %.0f s",
                       (double)s->frame_ms / 1000.0);
        else if (c->state == PS_CONN_READY && s->idle_ms > 0 && c->park == PS_PARK_NONE &&
                 c->out_bytes == 0 && c->nwrites == 0 && now - c->rx_ms >= (uint64_t)s->idle_ms)
            conn_error(c, 0, PROTO_ERR_TIMEOUT, 1, "idle for %.0f s",
                       (double)s->idle_ms / 1000.0);
    }
    /* connections that will not finish closing */
    for (ps_conn *c = s->conns; c; c = c->next) {
        if ((c->state == PS_CONN_DRAINING && now - c->state_ms >= PS_DRAIN_MS) ||
            (c->state == PS_CONN_CLOSING && now - c->state_ms >= PS_FLUSH_MS))
            conn_close(c);
    }
    /* periodic checkpoint */
    long iv = s->job->checkpoint_interval_s;
    if (iv > 0 && now - s->ckpt_ms >= (uint64_t)iv * 1000) {
        if (!s->have_ckpt || s->ckpt_changes != s->changes) {
            char err[512];
            ps_checkpoint(s, err, sizeof err); /* logs either way */
        } else {
            s->ckpt_ms = now;
        }
    }
}

static void ps_handle_noop_cb(uv_handle_t *h)
{
    (void)h;
}

static void ps_stop(psd_server *s, const char *why)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    ps_log(s, PS_LOG_INFO, "%s: writing a checkpoint and stopping", why);
    char err[512];
    if (ps_checkpoint(s, err, sizeof err) != 0)
        s->exit_code = 1;
    for (ps_conn *c = s->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&s->listener, ps_handle_noop_cb);
    uv_close((uv_handle_t *)&s->timer, ps_handle_noop_cb);
    uv_close((uv_handle_t *)&s->sigterm, ps_handle_noop_cb);
    uv_close((uv_handle_t *)&s->sigint, ps_handle_noop_cb);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    ps_stop(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int ps_listen(psd_server *s, char *err, size_t errlen)
{
    const placement_node *me = s->cfg->me;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc;
    if (me->addr_kind == PLACEMENT_ADDR_IPV4) {
        rc = uv_ip4_addr(me->host, me->port, (struct sockaddr_in *)&ss);
    } else if (me->addr_kind == PLACEMENT_ADDR_IPV6) {
        rc = uv_ip6_addr(me->host, me->port, (struct sockaddr_in6 *)&ss);
    } else {
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int g = getaddrinfo(me->host, NULL, &hints, &ai);
        if (g != 0 || !ai) {
            snprintf(err, errlen, "cannot resolve %s (node %s): %s", me->host, me->id,
                     gai_strerror(g));
            return -1;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)me->port);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)me->port);
        rc = 0;
    }
    if (rc != 0) {
        snprintf(err, errlen, "bad address %s: %s", me->host, uv_strerror(rc));
        return -1;
    }
    rc = uv_tcp_init(&s->loop, &s->listener);
    if (rc != 0) {
        snprintf(err, errlen, "tcp: %s", uv_strerror(rc));
        return -1;
    }
    s->listener.data = s;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0 && s->job->tcp_congestion[0]) { /* accepted connections inherit it */
        uv_os_fd_t fd;
        char e2[512];
        if (uv_fileno((uv_handle_t *)&s->listener, &fd) != 0 ||
            util_tcp_congestion(fd, s->job->tcp_congestion, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "job.tcp_congestion: %s", e2);
            uv_close((uv_handle_t *)&s->listener, ps_handle_noop_cb);
            return -1;
        }
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, listener_cb);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s port %d (node %s): %s", me->host, me->port,
                 me->id, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, ps_handle_noop_cb);
        return -1;
    }
    return 0;
}

static void ps_free(psd_server *s)
{
    for (size_t i = 0; i < s->nworkers; i++) {
        free(s->workers[i]->grad);
        free(s->workers[i]);
    }
    free(s->workers);
    free(s->gbuf);
    free(s->tk_diff);
    free(s->tk_send);
    free(s->tk_work);
    free(s->tk_idx);
    snap_release(s->snap);
    s->snap = NULL;
    snap_release(s->snap16);
    s->snap16 = NULL;
    ps_shard_free(&s->shard);
}

int psd_server_run(const psd_config *cfg)
{
    psd_server *s = calloc(1, sizeof(*s));
    if (!s) {
        fprintf(stderr, "psd: out of memory\n");
        return 1;
    }
    s->cfg = cfg;
    s->job = &cfg->pl->job;
    snprintf(s->tag, sizeof s->tag, "shard%d", cfg->me->shard);
    char err[8192];
    if (uv_loop_init(&s->loop) != 0) {
        ps_log(s, PS_LOG_ERROR, "cannot create the event loop");
        free(s);
        return 1;
    }
    int ret = 1;
    if (ps_shard_init(&s->shard, cfg->model, kern_active(), &s->job->opt, s->job->seed,
                      cfg->me->lo, cfg->me->hi, err, sizeof err) != 0) {
        ps_log(s, PS_LOG_ERROR, "%s", err);
        goto out_loop;
    }
    s->n = s->shard.hi - s->shard.lo;
    if (s->n > proto_max_floats(PROTO_MAX_FRAME_LIMIT)) {
        ps_log(s, PS_LOG_ERROR, "shard of %zu parameters is too large for one frame", s->n);
        goto out_free;
    }
    s->max_conns = cfg->max_conns > 0 ? cfg->max_conns : PSD_MAX_CONNS;
    s->handshake_ms = cfg->handshake_ms > 0 ? cfg->handshake_ms : PSD_HANDSHAKE_MS;
    s->idle_ms = cfg->idle_ms != 0 ? cfg->idle_ms : PSD_IDLE_MS;
    s->frame_ms = cfg->frame_ms > 0 ? cfg->frame_ms : PSD_FRAME_MS;
    size_t push_frame = PROTO_HEADER_SIZE + PROTO_PUSH_FIXED + 4 * s->n + PROTO_SEAL_TAG_SIZE;
    s->max_frame = push_frame > PROTO_MAX_FRAME ? push_frame : PROTO_MAX_FRAME;
    s->out_limit = 2 * (PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 4 * s->n +
                        PROTO_SEAL_TAG_SIZE) + (64u << 10);
    s->gbuf = malloc(s->n * sizeof(float));
    if (!s->gbuf) {
        ps_log(s, PS_LOG_ERROR, "out of memory");
        goto out_free;
    }
    const char *dir = cfg->state_dir;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        ps_log(s, PS_LOG_ERROR, "state directory %s: %s", dir, strerror(errno));
        goto out_free;
    }
    if ((size_t)snprintf(s->ckpt_path, sizeof s->ckpt_path, "%s/shard%d.ckpt", dir,
                         cfg->me->shard) >= sizeof s->ckpt_path) {
        ps_log(s, PS_LOG_ERROR, "state directory path too long");
        goto out_free;
    }
    if (ps_resume(s, err, sizeof err) != 0) {
        ps_log(s, PS_LOG_ERROR, "%s", err);
        goto out_free;
    }
    if (ps_listen(s, err, sizeof err) != 0) {
        ps_log(s, PS_LOG_ERROR, "%s", err);
        uv_run(&s->loop, UV_RUN_DEFAULT); /* let the listener close */
        goto out_free;
    }
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, signal_cb, SIGTERM);
    uv_signal_start(&s->sigint, signal_cb, SIGINT);
    uv_update_time(&s->loop);
    s->start_ms = s->rate_ms = s->ckpt_ms = ps_now(s);
    uv_timer_start(&s->timer, timer_cb, PS_TICK_MS, PS_TICK_MS);
    ps_log(s, PS_LOG_INFO,
           "node %s listening on %s port %d: %s [%zu, %zu) of %zu, mode %s, version %llu",
           cfg->me->id, cfg->me->host, cfg->me->port, s->job->model, s->shard.lo, s->shard.hi,
           cfg->model->nparams, placement_mode_name(s->job->mode),
           (unsigned long long)s->shard.version);
    char cmp[96];
    placement_compression_describe(&s->job->compression, cmp, sizeof cmp);
    ps_log(s, PS_LOG_INFO, "compression: %s (a PUSH is decoded in whatever encoding it declares)",
           cmp);
    if (cfg->key)
        ps_log(s, PS_LOG_INFO, "cluster key from %s: every connection authenticated and sealed",
               cfg->key_path ? cfg->key_path : "?");
    else
        ps_log(s, PS_LOG_WARN,
               "no cluster key (the placement has no auth): anyone who can reach port %d can "
               "read and change the model (docs/security.md)",
               cfg->me->port);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    ret = s->exit_code;
    ps_log(s, PS_LOG_INFO, "stopped (exit %d)", ret);
out_free:
    ps_free(s);
out_loop:
    if (uv_loop_close(&s->loop) != 0) {
        ps_log(s, PS_LOG_WARN, "event loop closed with handles still open");
        if (ret == 0)
            ret = 1;
    }
    free(s);
    return ret;
}
