/* psd_client.h - a blocking test client for psd, built on the real codec
 * (proto/).  Every read has a timeout (SO_RCVTIMEO), so a test never hangs
 * on a silent daemon.  Test code only: failures are returned, not asserted.
 *
 * Return values: 0 on success; a negative PROTO_ERR_* when the shard
 * answered ERROR (its code; the text is in c->last_error); PSC_ERR_IO on a
 * socket error or timeout; PSC_ERR_EOF when the shard closed; PSC_ERR_REPLY
 * for an unexpected reply.
 */
#ifndef PSD_TESTS_PSD_CLIENT_H
#define PSD_TESTS_PSD_CLIENT_H

#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>

#include "proto.h"
#include "secure.h"

#define PSC_ERR_IO (-100)
#define PSC_ERR_EOF (-101)
#define PSC_ERR_REPLY (-102)

typedef struct psd_client {
    int fd;
    uint32_t next_req;
    uint8_t *frame;            /* the last frame received (owned) */
    proto_error last_error;    /* the last ERROR received */
    /* cluster key (psc_set_key): psc_hello does the whole handshake, then
     * every frame is sealed and opened here */
    int have_key;
    uint8_t key[SECURE_KEY_SIZE];
    int unchecked;             /* play a client with another key that sends AUTH anyway */
    int sealed;                /* the session is established */
    secure_session sess;
    /* psc_record(): every byte sent, for replaying */
    int record;
    uint8_t *rec;
    size_t rec_len, rec_cap;
} psd_client;

/* Connect to 127.0.0.1:port, retrying for up to wait_ms (a daemon that is
 * starting); reads time out after timeout_ms.  Returns 0 or PSC_ERR_IO. */
int psc_connect(psd_client *c, int port, int wait_ms, int timeout_ms);

/* Close the socket and free the client's buffer. */
void psc_close(psd_client *c);

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
 * released); -1 on failure. */
int psc_free_port(void);

/* Seconds on a monotonic clock. */
double psc_now(void);

/* Start $PSD_BIN/<prog> (default bin/) with args (NULL-terminated, at most
 * 30), stdout appended to the file out and stderr to err (may be the same
 * path).  The child dies with the test process (PR_SET_PDEATHSIG).
 * Returns the pid, or -1 if fork failed. */
pid_t psc_spawn(const char *prog, const char *const *args, const char *out, const char *err);

/* Send raw bytes.  Returns 0 or PSC_ERR_IO. */
int psc_send_raw(psd_client *c, const void *buf, size_t len);

/* Receive one whole frame into *f (valid until the next receive).  Returns
 * 0, PSC_ERR_EOF, PSC_ERR_IO (timeout or error) or a frame error. */
int psc_recv(psd_client *c, proto_frame *f);

/* 1 if bytes (or EOF) arrive within ms milliseconds, else 0. */
int psc_readable(psd_client *c, int ms);

/* HELLO as role with node id, model and nparams; on WELCOME fills *w.
 * With a key: HELLO with a nonce, the WELCOME's proof checked (else
 * PROTO_ERR_AUTH, nothing more sent, text in last_error), AUTH, and its
 * sealed OK; from then on every frame is sealed. */
int psc_hello(psd_client *c, int role, const char *node, const char *model, uint64_t nparams,
              proto_welcome *w);

/* Use the cluster key key (32 bytes) from the next psc_hello on; NULL: none. */
void psc_set_key(psd_client *c, const uint8_t *key);

/* Keep a copy of every byte sent from now on (c->rec, c->rec_len). */
void psc_record(psd_client *c);

/* Seal the whole frame buf[0..len) in place for this session (cap >= len
 * + PROTO_SEAL_TAG_SIZE); *out = the sealed length.  For tests that then
 * change bytes and send them raw.  Returns 0 or a PROTO_ERR_*. */
int psc_seal(psd_client *c, uint8_t *buf, size_t len, size_t cap, size_t *out);

/* Send a PULL; returns the request id (> 0) or PSC_ERR_IO. */
long psc_pull_send(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi);

/* Receive a WEIGHTS: *version, *not_modified, and (if out and modified)
 * hi - lo floats into out. */
int psc_weights_recv(psd_client *c, uint64_t *version, int *not_modified, float *out,
                     size_t n);

/* Send a PULL asking for encoding (proto_encoding: FP32 full, FP16,
 * SPARSE delta); returns the request id (> 0) or PSC_ERR_IO. */
long psc_pull_send_enc(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi,
                       uint8_t encoding);

/* Send the PULL p (any fields: PROTO_FLAG_SEED too).  Returns the request
 * id or PSC_ERR_IO. */
long psc_pull_send_msg(psd_client *c, const proto_pull *p);

/* Receive a WEIGHTS in any encoding into *w (raw cleared) and, if
 * modified, apply it to copy[0..n) (overwritten, or changed where a delta
 * says: copy must hold the delta's base).  Returns 0 or an error. */
int psc_weights_recv_msg(psd_client *c, proto_weights *w, float *copy, size_t n);

/* Send the PUSH m (any encoding; request id chosen here).  Returns the
 * request id or PSC_ERR_IO. */
long psc_push_send_msg(psd_client *c, const proto_push *m);

/* PULL and wait for its WEIGHTS. */
int psc_pull(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi, uint64_t *version,
             int *not_modified, float *out);

/* Send a PUSH of g (hi - lo floats).  Returns the request id or PSC_ERR_IO. */
long psc_push_send(psd_client *c, uint64_t seq, uint64_t base_version, uint64_t step,
                   uint64_t lo, uint64_t hi, const float *g);

/* Receive an ACK into *a. */
int psc_ack_recv(psd_client *c, proto_ack *a);

/* PUSH and wait for its ACK. */
int psc_push(psd_client *c, uint64_t seq, uint64_t base_version, uint64_t step, uint64_t lo,
             uint64_t hi, const float *g, proto_ack *a);

/* STATUS_REQ; *json is a malloc'd NUL-terminated copy (caller frees). */
int psc_status(psd_client *c, char **json);

/* REPORT; *version from the OK. */
int psc_report(psd_client *c, const proto_report *r, uint64_t *version);

/* CHECKPOINT; *version from the OK. */
int psc_checkpoint(psd_client *c, uint64_t *version);

/* Receive a frame that must be ERROR: returns its (negative) code, or
 * PSC_ERR_REPLY / PSC_ERR_EOF / PSC_ERR_IO. */
int psc_error_recv(psd_client *c);

#endif
