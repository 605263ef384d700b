/* remote.h - the distributed worker's parameter backend: one connection per
 * psd shard, spoken to with the real codec (proto/).
 *
 * Sockets are non-blocking and driven by one poll() loop, so a pull sends a
 * PULL to every shard at once and gathers the WEIGHTS as they come, and a
 * push sends every shard its slice of the gradient at once and waits for all
 * the ACKs.  A connection that breaks (or a shard that is not up yet) is
 * retried with exponential back-off (100 ms doubling to 5 s, +-25% jitter),
 * says HELLO again and carries on from the shard's current version; the
 * other shards' requests go on meanwhile.
 *
 * Modes: sync pulls after a WAITING ack ask for the next version
 * (min_version = v + 1), which the shard answers when the round completes;
 * ssp's held ACK is simply waited for.  In async and ssp a push sends each
 * shard its PULL right behind the PUSH (the shard handles a connection's
 * frames in order, and in ssp reads nothing more while it holds the ACK):
 * the ACK and then the WEIGHTS come back, push returns on the ACKs, and
 * the next pull (training or evaluation) only waits for those WEIGHTS
 * instead of sending a PULL of its own: one round trip per step instead of
 * two.  A connection lost before they arrived pulls again the normal way.
 * With job.overlap a push returns as soon as its frames (PULL included) are
 * written, without the ACKs: the worker computes its next gradient while
 * they travel, and the next call (pull, push, report, done) first waits for
 * them; the gradient stays the caller's until then (a reconnect sends it
 * again).  Its `ahead` callback then applies what was sent to the
 * trainer's weights (one SGD step without momentum, at the learning rate of
 * the shard's version), so the next gradient sees this worker's own step.
 * STALE and DUPLICATE acks are counted and logged at DEBUG, never fatal.
 * The `version` a pull hands the trainer is the pull call's number: a push
 * naming it sends each shard the version of the slice that pull delivered
 * as its base_version (with overlap that is the pull before the last).
 *
 * With a cluster key (remote_set_key; docs/security.md) each connection
 * says HELLO with a nonce, checks the shard's proof in the WELCOME (a
 * mismatch is fatal: the shard holds another key), answers AUTH, and from
 * the shard's OK on seals every frame it sends and opens every frame it
 * gets; a frame that does not open breaks the connection (reconnect).
 *
 * Library code: nothing exits; a stop request (the caller's flag, set by a
 * signal handler) makes the current call return REMOTE_STOPPED.
 */
#ifndef PSD_WORKERD_REMOTE_H
#define PSD_WORKERD_REMOTE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "kernels.h"
#include "optim.h"
#include "placement.h"
#include "proto.h"
#include "secure.h"
#include "trainer.h"

#define REMOTE_STOPPED (-2)       /* a call's return: *stop was set */
#define REMOTE_BACKOFF_MIN_MS 100 /* first retry delay */
#define REMOTE_BACKOFF_MAX_MS 5000
#define REMOTE_CONNECT_MS 3000    /* one connect attempt gives up after this */
#define REMOTE_PULLS_KEPT 4       /* pull calls whose shard versions a push can name */

typedef enum remote_log_level {
    REMOTE_LOG_DEBUG = 0,
    REMOTE_LOG_INFO,
    REMOTE_LOG_WARN,
    REMOTE_LOG_ERROR,
    REMOTE_LOG_LEVEL_MAX
} remote_log_level;

typedef enum remote_conn_state {
    REMOTE_CONN_DOWN = 0,   /* no socket; next attempt at retry_at */
    REMOTE_CONN_CONNECTING, /* non-blocking connect() in progress */
    REMOTE_CONN_HELLO,      /* HELLO sent, waiting for WELCOME */
    REMOTE_CONN_AUTH,       /* cluster key: AUTH sent, waiting for the sealed OK */
    REMOTE_CONN_READY,      /* idle */
    REMOTE_CONN_WAIT,       /* a request sent, waiting for its reply */
    REMOTE_CONN_PIPE,       /* async/ssp: PUSH and a PULL behind it sent, waiting for the ACK */
    REMOTE_CONN_AHEAD,      /* the ACK came: waiting for the WEIGHTS of that PULL (wait_req) */
    REMOTE_CONN_STATE_MAX
} remote_conn_state;

typedef enum remote_op {
    REMOTE_OP_NONE = 0,  /* this connection takes no part in the call */
    REMOTE_OP_CONNECT,   /* done when connected and welcomed */
    REMOTE_OP_PULL,      /* done when its WEIGHTS arrived */
    REMOTE_OP_PUSH,      /* done when its ACK arrived */
    REMOTE_OP_REPORT,    /* done when its OK arrived */
    REMOTE_OP_DONE,      /* done when its OK arrived */
    REMOTE_OP_MAX
} remote_op;

/* One shard's connection. */
typedef struct remote_conn {
    int shard;
    char node[PLACEMENT_ID_MAX + 1]; /* the shard's node id */
    char host[PLACEMENT_HOST_MAX + 1];
    int port;
    size_t lo, hi;                   /* the shard's range */
    int fd;                          /* -1 when down */
    remote_conn_state state;
    proto_decoder dec;
    uint8_t *out;                    /* the frame being sent (owned) */
    size_t out_len, out_pos, out_cap;
    uint32_t next_req, wait_req;
    uint32_t pull_req;               /* PIPE: the PULL sent behind the PUSH */
    int ahead_ready;                 /* READY: the cache holds the WEIGHTS pulled behind the
                                      * last PUSH: the next pull sends no PULL */
    double deadline;                 /* CONNECTING: give up at this time */
    /* cluster key */
    secure_hs hs;                    /* HELLO: the handshake in progress */
    secure_session sess;
    int sealed;                      /* AUTH sent: every frame sealed both ways */
    /* parameters */
    uint64_t version;                /* version of the slice in the cache */
    uint64_t pulled[REMOTE_PULLS_KEPT]; /* version handed out by pull call #n at [n % KEPT] */
    uint64_t push_base;              /* the push's base_version: its weights' version here */
    int have;                        /* the cache holds this shard's slice */
    int copy_lost;                   /* have was dropped: the next PULL is not a delta */
    int seed;                        /* the slice is the job's initial weights (version 0),
                                      * built here: PULL says so (PROTO_FLAG_SEED) */
    uint32_t seed_crc;               /* cnn_params_crc of them */
    int seed_used;                   /* the first WEIGHTS was a delta against them */
    uint64_t want_min;               /* sync: min_version of the next PULL (0: now) */
    uint64_t seq;                    /* last PUSH seq used (or the shard's last_seq) */
    uint64_t push_seq;               /* seq of the PUSH in flight, 0 if none */
    uint32_t push_enc;               /* proto_encoding of this push (remote_push_cb) */
    size_t push_count;               /* SPARSE: its pairs */
    int push_ready;                  /* this push's slice is compressed (push_slice) */
    int pull_later;                  /* its PUSH left during the backward pass, alone: the
                                      * PULL follows when the gradient is done */
    /* the current call */
    remote_op op;
    int op_done;
    /* back-off */
    double retry_at;
    int backoff_ms;                  /* 0: connected or never failed */
    int logged_ms;                   /* back-off level last logged */
    /* counters */
    uint64_t n_applied, n_waiting, n_stale, n_dup, n_finished, n_reconnects;
    uint64_t bytes_out, bytes_in;    /* wire bytes sent to and received from the shard */
    uint64_t n_pull_sent;            /* PULL frames sent (those behind a PUSH included) */
    uint64_t n_pull_ahead;           /* PULL frames sent behind a PUSH */
    uint64_t n_pull_served;          /* pull calls answered by those: no PULL of their own */
    uint64_t n_push_early;           /* PUSHes sent while the backward pass still ran */
} remote_conn;

/* The backend: every shard of one placement. */
#define REMOTE_WAIT_BINS 10000 /* per-step wait histogram: 0.1 ms bins, the last open */

typedef struct remote {
    char node_id[PLACEMENT_ID_MAX + 1]; /* this worker's id (HELLO) */
    char model[CNN_NAME_MAX];
    size_t nparams;
    placement_mode mode;
    int nshards;
    uint64_t pulls;                     /* pull calls completed */
    remote_conn *c;                     /* nshards (owned) */
    float *cache;                       /* nparams: the weights last pulled (owned) */
    volatile sig_atomic_t *stop;        /* the caller's stop flag (may be NULL) */
    int verbose;                        /* log DEBUG lines */
    int have_key;                       /* remote_set_key was called */
    uint8_t key[SECURE_KEY_SIZE];
    uint64_t rng;                       /* jitter only (xorshift) */
    /* compression (job.compression; docs/placement.md) */
    placement_push_enc push_enc;
    double topk_percent;
    placement_pull_enc pull_enc;
    float *residual;                    /* nparams: error feedback (fp16, topk), owned */
    float *ef_send;                     /* nparams: this push's values where not push_grad */
    uint32_t *ef_idx;                   /* nparams: topk indices, shard s's at c[s].lo */
    float *ef_vals;                     /* nparams: their values, likewise */
    uint32_t *ef_work;                  /* the largest slice's uint32: topk scratch */
    /* job.overlap (async/ssp): push returns once its frames are written;
     * the next call first waits for their ACKs (push_settle) */
    int overlap;
    optim_config opt;                   /* the job's optimizer (the look-ahead, local steps) */
    const kern_ops *k;                  /* its SGD step */
    char tcp_congestion[16];            /* job.tcp_congestion ("": the host's) */
    int push_pending;                   /* a push is out, its ACKs not all in */
    int until_sent;                     /* remote_run: a PUSH is done once written */
    /* arguments of the call in progress */
    const float *push_grad;
    uint64_t push_version;              /* the pull call whose weights it was computed on */
    int push_open;                      /* begun (maybe by remote_grad_ready_cb), not yet run */
    long push_step;
    int push_samples;
    proto_report report;
    proto_done done;
    int finished;                       /* a shard answered ACK FINISHED */
    /* time the training loop spent in pull and push calls (waiting for
     * the shards, and the push's compression: top-k ~1.2 ms for lenet),
     * per step: between two pull calls (remote_wait_stats) */
    double wait_s, step_wait_s;
    uint64_t wait_steps;
    uint32_t wait_hist[REMOTE_WAIT_BINS];
    int fatal;                          /* a configuration mismatch: give up */
    char fatal_msg[1024];
} remote;

/* Set up (without connecting) a backend for worker `me` of placement p,
 * whose model is m.  stop, if not NULL, is polled: once non-zero every call
 * returns REMOTE_STOPPED.  Returns 0, or -1 with a message. */
int remote_init(remote *r, const placement *p, const placement_node *me, const cnn_model *m,
                volatile sig_atomic_t *stop, char *err, size_t errlen);

/* Authenticate every connection with the cluster key key (32 bytes,
 * copied; docs/security.md).  Call before remote_connect.  Returns 0, or
 * -1 with a message if libsodium cannot start. */
int remote_set_key(remote *r, const uint8_t *key, char *err, size_t errlen);

/* Close every connection and free what r owns. */
void remote_free(remote *r);

/* Connect to every shard and say HELLO, retrying with back-off; timeout_s >
 * 0 gives up after that many seconds (0: keep trying).  Returns 0,
 * REMOTE_STOPPED, or -1 with a message (timeout, model or range mismatch). */
int remote_connect(remote *r, double timeout_s, char *err, size_t errlen);

/* The param_backend over r (r must outlive it).  pull/push return -1 with
 * "stopped" in err when the stop flag was set (check the flag); push
 * returns TRAINER_FINISHED once a shard answered ACK FINISHED (the job is
 * over: r->finished). */
param_backend remote_backend(remote *r);

/* Send REPORT to shard 0 and wait for its OK.  Returns 0, REMOTE_STOPPED or
 * -1 with a message. */
int remote_report(remote *r, const proto_report *rep, char *err, size_t errlen);

/* Tell every shard this worker is done (DONE) and wait for their OKs, at
 * most timeout_s seconds (> 0).  Returns 0, REMOTE_STOPPED or -1 with a
 * message naming a shard that did not answer. */
int remote_done(remote *r, const proto_done *d, double timeout_s, char *err, size_t errlen);

/* Time spent waiting for the shards in pull and push calls (compressing
 * the push included): total_s in
 * all, and the median and 90th percentile per step (ms, to 0.1 ms: the
 * upper edge of the histogram bin; 1000 for 1 s or more).  0 when no step
 * completed. */
void remote_wait_stats(const remote *r, double *total_s, double *p50_ms, double *p90_ms);

/* Shard 0's version as last seen (for the printed learning rate). */
uint64_t remote_version(const remote *r);

/* Wire bytes sent to and received from every shard so far (frames as
 * written and read, sealing included). */
void remote_bytes(const remote *r, uint64_t *out, uint64_t *in);

/* One line "workerd[node] LEVEL message" on stderr (DEBUG only if verbose). */
void remote_log(const remote *r, remote_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
