/* psd_client.c - see psd_client.h. */
#include "psd_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <signal.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void psc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int psc_connect(psd_client *c, int port, int wait_ms, int timeout_ms)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_req = 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int waited = 0;; waited += 20) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return PSC_ERR_IO;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->fd = fd;
            return 0;
        }
        close(fd);
        if (waited >= wait_ms)
            return PSC_ERR_IO;
        psc_sleep_ms(20);
    }
}

void psc_close(psd_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->frame);
    c->frame = NULL;
    free(c->rec);
    c->rec = NULL;
    c->rec_len = c->rec_cap = 0;
    secure_wipe(&c->sess, sizeof c->sess);
    secure_wipe(c->key, sizeof c->key);
    c->sealed = c->have_key = 0;
}

void psc_set_key(psd_client *c, const uint8_t *key)
{
    c->have_key = key != NULL;
    if (key)
        memcpy(c->key, key, SECURE_KEY_SIZE);
    if (secure_init() != 0)
        abort();
}

void psc_record(psd_client *c)
{
    c->record = 1;
}

int psc_seal(psd_client *c, uint8_t *buf, size_t len, size_t cap, size_t *out)
{
    return secure_seal(&c->sess.tx, buf, len, cap, out);
}

int psc_send_raw(psd_client *c, const void *buf, size_t len)
{
    if (c->record && len) {
        if (c->rec_len + len > c->rec_cap) {
            size_t cap = 2 * (c->rec_len + len);
            uint8_t *r = realloc(c->rec, cap);
            if (!r)
                return PSC_ERR_IO;
            c->rec = r;
            c->rec_cap = cap;
        }
        memcpy(c->rec + c->rec_len, buf, len);
        c->rec_len += len;
    }
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return PSC_ERR_IO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_exact(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return PSC_ERR_EOF;
        if (r < 0)
            return PSC_ERR_IO;
        got += (size_t)r;
    }
    return 0;
}

int psc_recv(psd_client *c, proto_frame *f)
{
    free(c->frame);
    c->frame = NULL;
    uint8_t pre[4];
    int rc = read_exact(c->fd, pre, 4);
    if (rc)
        return rc;
    uint32_t len = proto_get_be32(pre);
    if (len < PROTO_HEADER_SIZE || len > PROTO_MAX_FRAME)
        return PROTO_ERR_BAD_FRAME;
    c->frame = malloc(4 + (size_t)len);
    if (!c->frame)
        return PSC_ERR_IO;
    memcpy(c->frame, pre, 4);
    rc = read_exact(c->fd, c->frame + 4, len);
    if (rc)
        return rc;
    int n = proto_frame_parse(c->frame, 4 + (size_t)len, PROTO_MAX_FRAME, f);
    if (n <= 0)
        return n == 0 ? PROTO_ERR_BAD_FRAME : n;
    int sealed_in = (f->hdr.flags & PROTO_FLAG_SEALED) != 0;
    if (!c->sealed)
        return sealed_in ? PSC_ERR_REPLY : 0;
    if (!sealed_in) /* only a refused AUTH is answered in the clear */
        return f->hdr.type == PROTO_MSG_ERROR ? 0 : PSC_ERR_REPLY;
    proto_frame in = *f;
    rc = secure_open(&c->sess.rx, &in, c->frame + PROTO_FRAME_OVERHEAD, in.payload_len, f);
    return rc == 0 ? 0 : PSC_ERR_REPLY;
}

int psc_readable(psd_client *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

/* Receive a frame of type `type` into *f, or turn an ERROR into its code. */
static int recv_type(psd_client *c, int type, proto_frame *f)
{
    int rc = psc_recv(c, f);
    if (rc)
        return rc;
    if (f->hdr.type == PROTO_MSG_ERROR) {
        if (proto_error_decode(f, &c->last_error) != 0)
            return PSC_ERR_REPLY;
        return c->last_error.code;
    }
    return f->hdr.type == type ? 0 : PSC_ERR_REPLY;
}

static int ok_recv(psd_client *c, uint64_t *version);

/* Encode with a proto encoder into a heap buffer and send it. */
#define PSC_SEND(c, call)                                                                    \
    do {                                                                                     \
        uint8_t *buf_ = NULL;                                                                \
        size_t cap_ = 0, len_ = 0;                                                           \
        int rc_ = call;                                                                      \
        if (rc_ != PROTO_ERR_NOSPACE)                                                        \
            return PSC_ERR_IO;                                                               \
        buf_ = malloc(len_ + PROTO_SEAL_TAG_SIZE);                                           \
        cap_ = len_;                                                                         \
        if (!buf_)                                                                           \
            return PSC_ERR_IO;                                                               \
        rc_ = call;                                                                          \
        if (rc_ == 0 && (c)->sealed)                                                         \
            rc_ = secure_seal(&(c)->sess.tx, buf_, len_, len_ + PROTO_SEAL_TAG_SIZE, &len_); \
        if (rc_ == 0)                                                                        \
            rc_ = psc_send_raw(c, buf_, len_);                                               \
        free(buf_);                                                                          \
        if (rc_)                                                                             \
            return PSC_ERR_IO;                                                               \
    } while (0)

int psc_hello(psd_client *c, int role, const char *node, const char *model, uint64_t nparams,
              proto_welcome *w)
{
    proto_hello h = {0};
    h.role = (uint8_t)role;
    h.nparams = nparams;
    strncpy(h.node_id, node, PROTO_NODE_ID_MAX);
    strncpy(h.model, model, PROTO_MODEL_MAX);
    secure_hs hs;
    if (c->have_key)
        secure_client_hello(&hs, &h);
    uint32_t id = c->next_req++;
    uint8_t hello[PROTO_FRAME_OVERHEAD + PROTO_HELLO_FIXED + PROTO_NODE_ID_MAX + PROTO_MODEL_MAX +
                  PROTO_AUTH_NONCE_SIZE];
    size_t hl;
    proto_frame hf;
    if (proto_hello_encode(&h, id, hello, sizeof hello, &hl) != 0 ||
        proto_frame_parse(hello, hl, PROTO_MAX_FRAME, &hf) != (int)hl)
        return PSC_ERR_IO;
    if (c->have_key && secure_hs_hello(&hs, &hf) != 0)
        return PSC_ERR_IO;
    if (psc_send_raw(c, hello, hl) != 0)
        return PSC_ERR_IO;
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_WELCOME, &f);
    if (rc)
        return rc;
    if (f.hdr.request_id != id || proto_welcome_decode(&f, w) != 0)
        return PSC_ERR_REPLY;
    if (!c->have_key)
        return 0;
    proto_auth a;
    rc = c->unchecked ? secure_client_proof_unchecked(&hs, c->key, &f, &c->sess, &a)
                      : secure_client_welcome(&hs, c->key, &f, &c->sess, &a);
    if (rc) {
        c->last_error.code = rc;
        snprintf(c->last_error.text, sizeof c->last_error.text,
                 "the shard's proof does not match our key");
        return rc;
    }
    id = c->next_req++;
    PSC_SEND(c, proto_auth_encode(&a, id, buf_, cap_, &len_));
    c->sealed = 1;
    uint64_t version;
    return ok_recv(c, &version);
}

long psc_pull_send(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi)
{
    proto_pull p = {.min_version = min_version, .lo = lo, .hi = hi};
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_pull_encode(&p, id, buf_, cap_, &len_));
    return (long)id;
}

int psc_weights_recv(psd_client *c, uint64_t *version, int *not_modified, float *out, size_t n)
{
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_WEIGHTS, &f);
    if (rc)
        return rc;
    proto_weights w;
    if (proto_weights_decode(&f, &w) != 0)
        return PSC_ERR_REPLY;
    *version = w.version;
    *not_modified = w.not_modified;
    if (!w.not_modified && out) {
        if (w.hi - w.lo != n)
            return PSC_ERR_REPLY;
        if (w.encoding == PROTO_ENC_SPARSE || proto_weights_values(&w, out) != 0)
            return PSC_ERR_REPLY; /* a delta needs psc_weights_recv_msg */
    }
    return 0;
}

long psc_pull_send_msg(psd_client *c, const proto_pull *p)
{
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_pull_encode(p, id, buf_, cap_, &len_));
    return (long)id;
}

long psc_pull_send_enc(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi,
                       uint8_t encoding)
{
    proto_pull p = {.min_version = min_version, .lo = lo, .hi = hi, .encoding = encoding};
    return psc_pull_send_msg(c, &p);
}

int psc_weights_recv_msg(psd_client *c, proto_weights *w, float *copy, size_t n)
{
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_WEIGHTS, &f);
    if (rc)
        return rc;
    if (proto_weights_decode(&f, w) != 0 || (!w->not_modified && w->hi - w->lo != n))
        return PSC_ERR_REPLY;
    if (!w->not_modified && proto_weights_values(w, copy) != 0)
        return PSC_ERR_REPLY;
    w->raw = NULL; /* points into c->frame: not valid after the next receive */
    return 0;
}

long psc_push_send_msg(psd_client *c, const proto_push *m)
{
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_push_encode(m, id, buf_, cap_, &len_));
    return (long)id;
}

int psc_pull(psd_client *c, uint64_t min_version, uint64_t lo, uint64_t hi, uint64_t *version,
             int *not_modified, float *out)
{
    long id = psc_pull_send(c, min_version, lo, hi);
    if (id < 0)
        return (int)id;
    return psc_weights_recv(c, version, not_modified, out, (size_t)(hi - lo));
}

long psc_push_send(psd_client *c, uint64_t seq, uint64_t base_version, uint64_t step,
                   uint64_t lo, uint64_t hi, const float *g)
{
    proto_push p = {.seq = seq, .base_version = base_version, .step = step, .samples = 32,
                    .lo = lo, .hi = hi, .values = g};
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_push_encode(&p, id, buf_, cap_, &len_));
    return (long)id;
}

int psc_ack_recv(psd_client *c, proto_ack *a)
{
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_ACK, &f);
    if (rc)
        return rc;
    return proto_ack_decode(&f, a) == 0 ? 0 : PSC_ERR_REPLY;
}

int psc_push(psd_client *c, uint64_t seq, uint64_t base_version, uint64_t step, uint64_t lo,
             uint64_t hi, const float *g, proto_ack *a)
{
    long id = psc_push_send(c, seq, base_version, step, lo, hi, g);
    if (id < 0)
        return (int)id;
    return psc_ack_recv(c, a);
}

int psc_status(psd_client *c, char **json)
{
    *json = NULL;
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_status_req_encode(id, buf_, cap_, &len_));
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_STATUS, &f);
    if (rc)
        return rc;
    proto_status st;
    if (proto_status_decode(&f, &st) != 0)
        return PSC_ERR_REPLY;
    *json = malloc(st.len + 1);
    if (!*json)
        return PSC_ERR_IO;
    memcpy(*json, st.json, st.len);
    (*json)[st.len] = '\0';
    return 0;
}

static int ok_recv(psd_client *c, uint64_t *version)
{
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_OK, &f);
    if (rc)
        return rc;
    proto_ok ok;
    if (proto_ok_decode(&f, &ok) != 0)
        return PSC_ERR_REPLY;
    *version = ok.version;
    return 0;
}

int psc_report(psd_client *c, const proto_report *r, uint64_t *version)
{
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_report_encode(r, id, buf_, cap_, &len_));
    return ok_recv(c, version);
}

int psc_checkpoint(psd_client *c, uint64_t *version)
{
    uint32_t id = c->next_req++;
    PSC_SEND(c, proto_checkpoint_encode(id, buf_, cap_, &len_));
    return ok_recv(c, version);
}

int psc_error_recv(psd_client *c)
{
    proto_frame f;
    int rc = recv_type(c, PROTO_MSG_ERROR, &f);
    return rc < 0 ? rc : PSC_ERR_REPLY;
}

int psc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
             getsockname(fd, (struct sockaddr *)&a, &l) == 0;
    close(fd);
    return ok ? ntohs(a.sin_port) : -1;
}

double psc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

pid_t psc_spawn(const char *prog, const char *const *args, const char *out, const char *err)
{
    const char *bin = getenv("PSD_BIN");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", bin && *bin ? bin : "bin", prog);
    const char *argv[32];
    int n = 0;
    argv[n++] = path;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int fo = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fo >= 0)
        dup2(fo, 1);
    int fe = strcmp(out, err) == 0 ? -1 : open(err, O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fe >= 0 ? fe : fo, 2);
    if (fo > 2)
        close(fo);
    if (fe > 2)
        close(fe);
    execv(path, (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
    _exit(127);
}
