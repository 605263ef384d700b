/* check_psd.c - the parameter server: the checkpoint codec (pure), and the
 * real bin/psd (from $PSD_BIN) started on ephemeral 127.0.0.1 ports with a
 * one-shard "ray" placement, driven by blocking test clients that use the
 * real codec (tests/psd_client.h): handshake and mismatches, async/sync/ssp
 * updates compared bit for bit with ps_shard_apply run here, at-most-once
 * pushes, checkpoints across restarts, corrupt checkpoints, garbage input,
 * a peer that never reads (back-pressure), a lenet shard not starting at 0,
 * signals and the command line.
 *
 * Every daemon is started with PR_SET_PDEATHSIG and killed in the test's
 * cleanup, and every socket read has a timeout, so a failing test neither
 * hangs nor leaves a psd behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "cnn.h"
#include "fixtures.h"
#include "kernels.h"
#include "placement.h"
#include "proto.h"
#include "psd_client.h"
#include "shard.h"

/* The checkpoint codec is psd's, compiled in here: the test runner links
 * libcommon and tests/, not psd/. */
#include "ckpt.h"
#include "compress.h"

#define NP 1960          /* ray */
#define READ_MS 5000     /* every socket read times out after this */

/* ------------------------------------------------------------ helpers */

typedef struct daemon_t {
    pid_t pid;
    int port;
    char dir[FIXTURES_PATH_MAX];
    char conf[FIXTURES_PATH_MAX];
    char state[FIXTURES_PATH_MAX];
    char log[FIXTURES_PATH_MAX];
    char ckpt[FIXTURES_PATH_MAX + 32];
} daemon_t;

static daemon_t *g_daemons[4];

/* Write the placement: one ps (ps0 on d->port), three workers; job_extra
 * adds keys to "job" (e.g. "\"staleness\": 1"). */
static void conf_write(daemon_t *d, const char *mode, const char *job_extra)
{
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"ray\", \"mode\": \"%s\", \"max_steps\": 100000%s%s},\n"
                     " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},\n"
                     " \"nodes\": [\n"
                     "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                     "  {\"id\": \"w0\", \"address\": \"127.0.0.1\", \"role\": \"worker\"},\n"
                     "  {\"id\": \"w1\", \"address\": \"127.0.0.1\", \"role\": \"worker\"},\n"
                     "  {\"id\": \"w2\", \"address\": \"127.0.0.1\", \"role\": \"worker\"}]}\n",
                     mode, job_extra ? ", " : "", job_extra ? job_extra : "", d->port);
    ck_assert(n > 0 && (size_t)n < sizeof text);
    ck_assert_int_eq(fixtures_file_write(d->conf, (const uint8_t *)text, (size_t)n, 0), 0);
}

static void daemon_init(daemon_t *d, const char *mode, const char *job_extra)
{
    memset(d, 0, sizeof(*d));
    d->pid = -1;
    ck_assert_int_eq(fixtures_tmpdir_make(d->dir, sizeof d->dir), 0);
    ck_assert_int_eq(fixtures_path_join(d->conf, sizeof d->conf, d->dir, "p.conf"), 0);
    ck_assert_int_eq(fixtures_path_join(d->state, sizeof d->state, d->dir, "state"), 0);
    ck_assert_int_eq(fixtures_path_join(d->log, sizeof d->log, d->dir, "psd.log"), 0);
    snprintf(d->ckpt, sizeof d->ckpt, "%s/shard0.ckpt", d->state);
    d->port = psc_free_port();
    conf_write(d, mode, job_extra);
    for (int i = 0; i < 4; i++)
        if (!g_daemons[i]) {
            g_daemons[i] = d;
            break;
        }
}

/* Start $PSD_BIN/psd with args; stdout and stderr go to d->log. */
static pid_t spawn(daemon_t *d, const char *const *args)
{
    pid_t pid = psc_spawn("psd", args, d->log, d->log);
    ck_assert_int_gt(pid, 0);
    return pid;
}

/* Wait up to ms for pid to exit: its exit status, 128+signal, or -1 if it
 * is still running. */
static int wait_exit(pid_t pid, int ms)
{
    double end = psc_now() + ms / 1000.0;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (psc_now() > end)
            return -1;
        usleep(10000);
    }
}

static char *log_text(const daemon_t *d)
{
    uint8_t *b = NULL;
    size_t n = 0;
    if (fixtures_file_read(d->log, &b, &n) != 0)
        return strdup("");
    char *s = malloc(n + 1);
    memcpy(s, b, n);
    s[n] = '\0';
    free(b);
    return s;
}

/* Start the daemon with up to 8 extra args (NULL-terminated) and wait until
 * it accepts. */
static void daemon_start_args(daemon_t *d, const char *const *extra)
{
    const char *args[16] = {"--placement", d->conf, "--node", "ps0", "--state-dir", d->state};
    int n = 6;
    for (int i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    d->pid = spawn(d, args);
    psd_client probe;
    double end = psc_now() + 10;
    for (;;) {
        if (psc_connect(&probe, d->port, 0, READ_MS) == 0) {
            psc_close(&probe);
            return;
        }
        int st = wait_exit(d->pid, 0);
        if (st >= 0) {
            d->pid = -1;
            char *l = log_text(d);
            ck_abort_msg("psd exited with %d before listening:\n%s", st, l);
        }
        ck_assert_msg(psc_now() < end, "psd did not start listening");
        usleep(20000);
    }
}

/* Start the daemon (one extra arg, e.g. "--fresh", or NULL). */
static void daemon_start(daemon_t *d, const char *extra)
{
    const char *args[] = {extra, NULL};
    daemon_start_args(d, args);
}

/* Signal the daemon and return its exit status (fails the test on a hang). */
static int daemon_signal_stop(daemon_t *d, int sig)
{
    ck_assert_int_gt(d->pid, 0);
    kill(d->pid, sig);
    int st = wait_exit(d->pid, 10000);
    if (st < 0) {
        kill(d->pid, SIGKILL);
        wait_exit(d->pid, 5000);
    }
    d->pid = -1;
    ck_assert_msg(st >= 0, "psd did not stop on signal %d", sig);
    char *l = log_text(d);
    int san = strstr(l, "Sanitizer") || strstr(l, "runtime error:");
    ck_assert_msg(!san, "sanitizer report in the psd log:\n%s", l);
    free(l);
    return st;
}

static void daemons_teardown(void)
{
    for (int i = 0; i < 4; i++) {
        daemon_t *d = g_daemons[i];
        if (!d)
            continue;
        if (d->pid > 0) {
            kill(d->pid, SIGKILL);
            wait_exit(d->pid, 5000);
            d->pid = -1;
        }
        fixtures_tmpdir_remove(d->dir);
        g_daemons[i] = NULL;
    }
}

/* The local reference: the same shard the daemon holds, from the same file. */
static void local_shard(const daemon_t *d, ps_shard *s)
{
    char err[1024];
    ck_assert_msg(kern_init(err, sizeof err) == 0, "%s", err);
    placement pl;
    ck_assert_msg(placement_load(d->conf, &pl, err, sizeof err) == 0, "%s", err);
    cnn_model m;
    ck_assert_int_eq(placement_model_init(&pl, &m, err, sizeof err), 0);
    ck_assert_int_eq(ps_shard_init(s, &m, kern_active(), &pl.job.opt, pl.job.seed, 0, NP, err,
                                   sizeof err),
                     0);
    placement_free(&pl);
}

/* A gradient exactly representable, so sums of a few are exact. */
static void grad_fill(float *g, int k)
{
    for (int i = 0; i < NP; i++)
        g[i] = (float)(((i * 31 + k * 17) % 15) - 7) * 0.0625f;
}

static void worker_connect(daemon_t *d, psd_client *c, const char *id, proto_welcome *w)
{
    proto_welcome tmp;
    ck_assert_int_eq(psc_connect(c, d->port, 2000, READ_MS), 0);
    int rc = psc_hello(c, PROTO_ROLE_WORKER, id, "ray", NP, w ? w : &tmp);
    ck_assert_msg(rc == 0, "HELLO %s: %d %s", id, rc, c->last_error.text);
}

static void assert_weights(psd_client *c, const ps_shard *ref)
{
    static float got[NP];
    uint64_t v;
    int nm;
    int rc = psc_pull(c, 0, 0, NP, &v, &nm, got);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(nm, 0);
    ck_assert_uint_eq(v, ref->version);
    ck_assert_msg(memcmp(got, ref->w, sizeof got) == 0, "weights differ from ps_shard_apply");
}

static int log_has(const daemon_t *d, const char *needle)
{
    char *l = log_text(d);
    int r = strstr(l, needle) != NULL;
    free(l);
    return r;
}

/* ------------------------------------------------------- checkpoint codec */

START_TEST(test_ckpt_codec)
{
    float w[64], mom[64];
    for (int i = 0; i < 64; i++) {
        w[i] = (float)i * 0.5f - 3.f;
        mom[i] = -(float)i / 7.f;
    }
    psd_ckpt_worker ws[2] = {{"w0", 5, 9, 1}, {"box-3.worker-0", 77, 1, 0}};
    psd_ckpt c = {.model = "ray", .shard = 1, .nparams = NP, .lo = 16, .hi = 80, .seed = 42,
                  .version = 123, .finished = 1, .w = w, .mom = mom, .nworkers = 2,
                  .workers = ws};
    char err[256];
    size_t len = 0;
    ck_assert_int_eq(psd_ckpt_encode(&c, NULL, 0, &len, err, sizeof err), -1);
    ck_assert_uint_eq(len, psd_ckpt_size(&c));
    uint8_t *buf = malloc(len);
    ck_assert_int_eq(psd_ckpt_encode(&c, buf, len, &len, err, sizeof err), 0);
    psd_ckpt d;
    ck_assert_msg(psd_ckpt_decode(buf, len, &d, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(d.model, "ray");
    ck_assert_uint_eq(d.shard, 1);
    ck_assert_uint_eq(d.lo, 16);
    ck_assert_uint_eq(d.hi, 80);
    ck_assert_uint_eq(d.seed, 42);
    ck_assert_uint_eq(d.version, 123);
    ck_assert_uint_eq(d.nworkers, 2);
    ck_assert_str_eq(d.workers[1].id, "box-3.worker-0");
    ck_assert_uint_eq(d.workers[1].last_seq, 77);
    ck_assert_uint_eq(d.workers[0].step, 9);
    ck_assert_int_eq(d.finished, 1);
    ck_assert_int_eq(d.workers[0].done, 1);
    ck_assert_int_eq(d.workers[1].done, 0);
    ck_assert(memcmp(d.w, w, sizeof w) == 0 && memcmp(d.mom, mom, sizeof mom) == 0);
    ck_assert_int_eq(psd_ckpt_match(&d, &c, err, sizeof err), 0);
    psd_ckpt other = c;
    other.seed = 43;
    ck_assert_int_eq(psd_ckpt_match(&d, &other, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "seed"));
    other = c;
    other.hi = 96;
    ck_assert_int_eq(psd_ckpt_match(&d, &other, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "range"));
    psd_ckpt_free(&d);
    /* every single flipped byte is caught; every truncation too */
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x10;
        ck_assert_msg(psd_ckpt_decode(buf, len, &d, err, sizeof err) == -1, "flip at %zu", i);
        buf[i] ^= 0x10;
    }
    for (size_t l = 0; l < len; l++)
        ck_assert_int_eq(psd_ckpt_decode(buf, l, &d, err, sizeof err), -1);
    ck_assert_int_eq(psd_ckpt_decode(buf, len, &d, err, sizeof err), 0);
    psd_ckpt_free(&d);

    /* A format-1 file (before the job end existed: a zero reserved field, no
     * per-worker flags byte) is still read, as running and not done. */
    uint8_t *old = malloc(len);
    size_t ol = 0, ip = PSD_CKPT_HEADER;
    memcpy(old, buf, PSD_CKPT_HEADER);
    proto_put_be32(old + 8, 1);
    proto_put_be32(old + 92, 0);
    ol = PSD_CKPT_HEADER;
    for (int i = 0; i < 2; i++) {
        size_t rec = 1 + buf[ip] + 16;
        memcpy(old + ol, buf + ip, rec);
        ol += rec;
        ip += rec + 1;
    }
    memcpy(old + ol, buf + ip, len - 4 - ip);
    ol += len - 4 - ip;
    proto_put_be32(old + ol, (uint32_t)crc32(0L, old, (uInt)ol));
    ol += 4;
    ck_assert_msg(psd_ckpt_decode(old, ol, &d, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(d.finished, 0);
    ck_assert_int_eq(d.workers[0].done, 0);
    ck_assert_uint_eq(d.workers[1].last_seq, 77);
    ck_assert_uint_eq(d.version, 123);
    ck_assert(memcmp(d.w, w, sizeof w) == 0 && memcmp(d.mom, mom, sizeof mom) == 0);
    psd_ckpt_free(&d);
    /* format 1 with the finished bit set is refused (it had no flags) */
    proto_put_be32(old + 92, 1);
    proto_put_be32(old + ol - 4, (uint32_t)crc32(0L, old, (uInt)(ol - 4)));
    ck_assert_int_eq(psd_ckpt_decode(old, ol, &d, err, sizeof err), -1);
    free(old);

    /* Found by fuzz_ckpt: bytes strlen() would not see.  A NUL inside a
     * worker id ("w0\0" would restore onto w0's last_seq), a control
     * character in the model name, and a worker id given twice are refused,
     * each with a correct CRC. */
    uint8_t *bad = malloc(len);
    for (int k = 0; k < 2; k++) {
        memcpy(bad, buf, len);
        if (k == 0) /* records start at 96 with id_len 2: "w0" -> "w\0" */
            bad[PSD_CKPT_HEADER + 2] = 0;
        else /* model "ray" -> "r\x01y" */
            bad[17] = 1;
        proto_put_be32(bad + len - 4, (uint32_t)crc32(0L, bad, (uInt)(len - 4)));
        ck_assert_msg(psd_ckpt_decode(bad, len, &d, err, sizeof err) == -1, "case %d accepted", k);
        ck_assert_ptr_nonnull(strstr(err, k == 0 ? "bad node id" : "bad model name"));
    }
    free(bad);
    /* a worker id twice, built by the encoder's rules (same length ids) */
    psd_ckpt_worker twice[2] = {{"w0", 1, 1, 0}, {"w1", 2, 2, 0}};
    psd_ckpt c2 = c;
    c2.workers = twice;
    size_t l2 = psd_ckpt_size(&c2);
    uint8_t *b2 = malloc(l2);
    ck_assert_int_eq(psd_ckpt_encode(&c2, b2, l2, &l2, err, sizeof err), 0);
    b2[PSD_CKPT_HEADER + 1 + 2 + 17 + 2] = '0'; /* "w1" -> "w0" */
    proto_put_be32(b2 + l2 - 4, (uint32_t)crc32(0L, b2, (uInt)(l2 - 4)));
    ck_assert_int_eq(psd_ckpt_decode(b2, l2, &d, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "appears twice"));
    free(b2);
    free(buf);
    /* invalid contents are refused */
    c.lo = 80;
    ck_assert_int_eq(psd_ckpt_size(&c), 0);
}
END_TEST

/* ------------------------------------------------------------- handshake */

START_TEST(test_handshake_status)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    psd_client w, op;
    proto_welcome wel;
    worker_connect(&d, &w, "w0", &wel);
    ck_assert_uint_eq(wel.role, PROTO_ROLE_SHARD);
    ck_assert_uint_eq(wel.nparams, NP);
    ck_assert_uint_eq(wel.lo, 0);
    ck_assert_uint_eq(wel.hi, NP);
    ck_assert_uint_eq(wel.param_version, 0);
    ck_assert_uint_eq(wel.last_seq, 0);
    ck_assert_str_eq(wel.node_id, "ps0");
    ck_assert_str_eq(wel.model, "ray");
    proto_report r = {.step = 7, .samples = 448, .elapsed_s = 1.5, .test_acc = 0.5,
                      .test_loss = 1.25};
    uint64_t v = 99;
    ck_assert_int_eq(psc_report(&w, &r, &v), 0);
    ck_assert_uint_eq(v, 0);

    ck_assert_int_eq(psc_connect(&op, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&op, PROTO_ROLE_OPERATOR, "psctl", "", 0, &wel), 0);
    char *json = NULL;
    ck_assert_int_eq(psc_status(&op, &json), 0);
    cJSON *o = cJSON_Parse(json);
    ck_assert_msg(o != NULL, "not JSON: %s", json);
    ck_assert_int_eq(cJSON_GetObjectItem(o, "shard")->valueint, 0);
    ck_assert_int_eq(cJSON_GetObjectItem(o, "version")->valueint, 0);
    ck_assert_str_eq(cJSON_GetObjectItem(o, "mode")->valuestring, "async");
    cJSON *range = cJSON_GetObjectItem(o, "range");
    ck_assert_int_eq(cJSON_GetArrayItem(range, 1)->valueint, NP);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "uptime_s"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "pushes_per_s"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "bytes_in"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "bytes_out"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "last_checkpoint"));
    cJSON *ws = cJSON_GetObjectItem(o, "workers");
    ck_assert_int_eq(cJSON_GetArraySize(ws), 1);
    cJSON *w0 = cJSON_GetArrayItem(ws, 0);
    ck_assert_str_eq(cJSON_GetObjectItem(w0, "id")->valuestring, "w0");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(w0, "connected")));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(w0, "address"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(w0, "samples_per_s"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(w0, "staleness"));
    cJSON *h = cJSON_GetObjectItem(o, "history");
    ck_assert_int_eq(cJSON_GetArraySize(h), 1);
    ck_assert(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 0), "test_acc")->valuedouble == 0.5);
    cJSON_Delete(o);
    free(json);

    /* an operator may not push; the connection is closed */
    static float g[NP];
    grad_fill(g, 1);
    proto_ack a;
    ck_assert_int_eq(psc_push(&op, 1, 0, 1, 0, NP, g, &a), PROTO_ERR_STATE);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&op, &f), PSC_ERR_EOF);
    psc_close(&op);
    /* the worker is unaffected */
    ck_assert_int_eq(psc_report(&w, &r, &v), 0);
    psc_close(&w);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_mismatch)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    psd_client c;
    proto_welcome wel;
    proto_frame f;
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_WORKER, "w0", "lenet", 431080, &wel),
                     PROTO_ERR_MODEL);
    ck_assert_int_eq(psc_recv(&c, &f), PSC_ERR_EOF);
    psc_close(&c);
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_WORKER, "w0", "ray", NP + 1, &wel),
                     PROTO_ERR_MODEL);
    psc_close(&c);
    /* protocol version 1 (the old sparse layout) in the header */
    proto_hello h = {.role = PROTO_ROLE_WORKER, .nparams = NP};
    strcpy(h.node_id, "w0");
    strcpy(h.model, "ray");
    uint8_t buf[256];
    size_t len;
    ck_assert_int_eq(proto_hello_encode(&h, 5, buf, sizeof buf, &len), 0);
    proto_put_be16(buf + 8, 1);
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_send_raw(&c, buf, len), 0);
    ck_assert_int_eq(psc_error_recv(&c), PROTO_ERR_VERSION);
    ck_assert_int_eq(psc_recv(&c, &f), PSC_ERR_EOF);
    psc_close(&c);
    /* PULL before HELLO */
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_gt(psc_pull_send(&c, 0, 0, NP), 0);
    ck_assert_int_eq(psc_error_recv(&c), PROTO_ERR_STATE);
    psc_close(&c);
    /* a range that is not the shard's */
    worker_connect(&d, &c, "w0", NULL);
    static float g[NP];
    proto_ack a;
    ck_assert_int_eq(psc_push(&c, 1, 0, 1, 0, NP - 16, g, &a), PROTO_ERR_RANGE);
    psc_close(&c);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- async */

START_TEST(test_async_applies_every_push)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a, b;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    assert_weights(&a, &ref); /* the initialisation matches */
    static float g[NP];
    for (int k = 1; k <= 6; k++) {
        grad_fill(g, k);
        proto_ack ack;
        psd_client *c = (k & 1) ? &a : &b;
        ck_assert_int_eq(psc_push(c, (uint64_t)k, ref.version, (uint64_t)k, 0, NP, g, &ack), 0);
        ps_shard_apply(&ref, g);
        ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
        ck_assert_uint_eq(ack.seq, (uint64_t)k);
        ck_assert_uint_eq(ack.version, ref.version);
    }
    assert_weights(&b, &ref);
    /* nothing newer: not modified */
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_pull(&a, 7, 0, NP, &v, &nm, NULL), 0);
    ck_assert_int_eq(nm, 1);
    ck_assert_uint_eq(v, 6);
    /* a sub-range */
    static float part[32];
    ck_assert_int_eq(psc_pull(&a, 0, 100, 132, &v, &nm, part), 0);
    ck_assert(memcmp(part, ref.w + 100, sizeof part) == 0);
    psc_close(&a);
    psc_close(&b);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_duplicate_seq)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a;
    worker_connect(&d, &a, "w0", NULL);
    static float g[NP];
    grad_fill(g, 3);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 5, 0, 1, 0, NP, g, &ack), 0);
    ps_shard_apply(&ref, g);
    ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
    ck_assert_int_eq(psc_push(&a, 5, 0, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_DUPLICATE);
    ck_assert_uint_eq(ack.version, 1);
    ck_assert_int_eq(psc_push(&a, 4, 0, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_DUPLICATE);
    psc_close(&a);
    /* after a reconnect the WELCOME says what was consumed, and a resend
     * is still a duplicate */
    proto_welcome wel;
    worker_connect(&d, &a, "w0", &wel);
    ck_assert_uint_eq(wel.last_seq, 5);
    ck_assert_uint_eq(wel.param_version, 1);
    ck_assert_int_eq(psc_push(&a, 5, 0, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_DUPLICATE);
    assert_weights(&a, &ref);
    /* another node id has its own numbering */
    psd_client b;
    worker_connect(&d, &b, "w1", &wel);
    ck_assert_uint_eq(wel.last_seq, 0);
    ck_assert_int_eq(psc_push(&b, 1, 1, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
    ps_shard_apply(&ref, g);
    assert_weights(&a, &ref);
    /* a second connection with the same node id replaces the first */
    psd_client b2;
    worker_connect(&d, &b2, "w1", &wel);
    ck_assert_uint_eq(wel.last_seq, 1);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&b, &f), PSC_ERR_EOF);
    ck_assert_int_eq(psc_push(&b2, 1, 2, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_DUPLICATE);
    psc_close(&b2);
    psc_close(&a);
    psc_close(&b);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- sync */

static void mean_apply(ps_shard *ref, const float *const *gs, int k)
{
    static float m[NP];
    for (int i = 0; i < NP; i++) {
        float s = 0.f;
        for (int j = 0; j < k; j++)
            s += gs[j][i];
        m[i] = s / (float)k;
    }
    ps_shard_apply(ref, m);
}

START_TEST(test_sync_three)
{
    daemon_t d;
    daemon_init(&d, "sync", "\"barrier_timeout_ms\": 20000");
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client c[3];
    const char *ids[3] = {"w0", "w1", "w2"};
    for (int i = 0; i < 3; i++)
        worker_connect(&d, &c[i], ids[i], NULL);
    static float g[3][NP];
    uint64_t seq = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++)
            grad_fill(g[i], 10 * round + i);
        proto_ack ack;
        seq++;
        ck_assert_int_eq(psc_push(&c[0], seq, ref.version, seq, 0, NP, g[0], &ack), 0);
        ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
        ck_assert_uint_eq(ack.version, ref.version);
        /* c0 waits for the next version */
        ck_assert_int_gt(psc_pull_send(&c[0], ref.version + 1, 0, NP), 0);
        ck_assert_int_eq(psc_push(&c[1], seq, ref.version, seq, 0, NP, g[1], &ack), 0);
        ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
        ck_assert_msg(!psc_readable(&c[0], 300), "the barrier let a PULL through early");
        ck_assert_int_eq(psc_push(&c[2], seq, ref.version, seq, 0, NP, g[2], &ack), 0);
        ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
        const float *gs[3] = {g[0], g[1], g[2]};
        mean_apply(&ref, gs, 3);
        static float got[NP];
        uint64_t v;
        int nm;
        ck_assert_int_eq(psc_weights_recv(&c[0], &v, &nm, got, NP), 0);
        ck_assert_int_eq(nm, 0);
        ck_assert_uint_eq(v, ref.version);
        ck_assert_msg(memcmp(got, ref.w, sizeof got) == 0, "round %d: not the mean", round);
        assert_weights(&c[1], &ref);
        assert_weights(&c[2], &ref);
    }
    ck_assert_uint_eq(ref.version, 2);
    /* a gradient for an old version is dropped, not applied */
    proto_ack ack;
    ck_assert_int_eq(psc_push(&c[0], 10, 0, 10, 0, NP, g[0], &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_STALE);
    assert_weights(&c[1], &ref);
    for (int i = 0; i < 3; i++)
        psc_close(&c[i]);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_sync_killed_worker)
{
    daemon_t d;
    daemon_init(&d, "sync", "\"barrier_timeout_ms\": 30000");
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    /* the third worker is a process of its own, killed mid-barrier */
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t kid = fork();
    ck_assert_int_ge(kid, 0);
    if (kid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        psd_client k;
        proto_welcome wel;
        if (psc_connect(&k, d.port, 2000, READ_MS) != 0 ||
            psc_hello(&k, PROTO_ROLE_WORKER, "w2", "ray", NP, &wel) != 0)
            _exit(1);
        if (write(pfd[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char x;
    ck_assert_int_eq(read(pfd[0], &x, 1), 1);
    close(pfd[0]);
    psd_client a, b;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    static float ga[NP], gb[NP];
    grad_fill(ga, 1);
    grad_fill(gb, 2);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, ga, &ack), 0);
    ck_assert_int_eq(psc_push(&b, 1, 0, 1, 0, NP, gb, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_int_gt(psc_pull_send(&a, 1, 0, NP), 0);
    ck_assert(!psc_readable(&a, 200));
    double t0 = psc_now();
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    static float got[NP];
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_weights_recv(&a, &v, &nm, got, NP), 0);
    ck_assert_msg(psc_now() - t0 < 5, "the barrier waited for the dead worker");
    const float *gs[2] = {ga, gb};
    mean_apply(&ref, gs, 2);
    ck_assert_uint_eq(v, 1);
    ck_assert(memcmp(got, ref.w, sizeof got) == 0);
    /* it rejoins, and the next round needs it again */
    psd_client k;
    worker_connect(&d, &k, "w2", NULL);
    grad_fill(ga, 3);
    grad_fill(gb, 4);
    static float gk[NP];
    grad_fill(gk, 5);
    ck_assert_int_eq(psc_push(&a, 2, 1, 2, 0, NP, ga, &ack), 0);
    ck_assert_int_eq(psc_push(&b, 2, 1, 2, 0, NP, gb, &ack), 0);
    ck_assert_int_gt(psc_pull_send(&a, 2, 0, NP), 0);
    ck_assert(!psc_readable(&a, 200));
    ck_assert_int_eq(psc_push(&k, 1, 1, 2, 0, NP, gk, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_int_eq(psc_weights_recv(&a, &v, &nm, got, NP), 0);
    const float *gs3[3] = {ga, gb, gk};
    mean_apply(&ref, gs3, 3);
    ck_assert_uint_eq(v, 2);
    ck_assert(memcmp(got, ref.w, sizeof got) == 0);
    psc_close(&a);
    psc_close(&b);
    psc_close(&k);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* The first round waits for the placement's workers that have not
 * connected yet (w2 here), not only for the connected ones; later rounds
 * wait for the connected ones only. */
START_TEST(test_sync_start_waits)
{
    daemon_t d;
    daemon_init(&d, "sync", "\"barrier_timeout_ms\": 20000");
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a, b, late;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    static float ga[NP], gb[NP], gl[NP], got[NP];
    grad_fill(ga, 1);
    grad_fill(gb, 2);
    grad_fill(gl, 3);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, ga, &ack), 0);
    ck_assert_int_eq(psc_push(&b, 1, 0, 1, 0, NP, gb, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_int_gt(psc_pull_send(&a, 1, 0, NP), 0);
    ck_assert_msg(!psc_readable(&a, 500), "round 1 completed without w2, which never connected");
    worker_connect(&d, &late, "w2", NULL);
    ck_assert_int_eq(psc_push(&late, 1, 0, 1, 0, NP, gl, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    const float *gs[3] = {ga, gb, gl};
    mean_apply(&ref, gs, 3);
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_weights_recv(&a, &v, &nm, got, NP), 0);
    ck_assert_uint_eq(v, 1);
    ck_assert_msg(memcmp(got, ref.w, sizeof got) == 0, "round 1 is not the mean of all three");
    /* w2 leaves: round 2 completes with the two that are connected */
    psc_close(&late);
    usleep(100000);
    ck_assert_int_eq(psc_push(&a, 2, 1, 2, 0, NP, ga, &ack), 0);
    ck_assert_int_eq(psc_push(&b, 2, 1, 2, 0, NP, gb, &ack), 0);
    const float *gs2[2] = {ga, gb};
    mean_apply(&ref, gs2, 2);
    double t0 = psc_now();
    ck_assert_int_eq(psc_pull(&a, 2, 0, NP, &v, &nm, got), 0);
    ck_assert_msg(psc_now() - t0 < 5.0, "round 2 waited for the departed w2");
    ck_assert_uint_eq(v, 2);
    ck_assert(memcmp(got, ref.w, sizeof got) == 0);
    psc_close(&a);
    psc_close(&b);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_sync_barrier_timeout)
{
    daemon_t d;
    daemon_init(&d, "sync", "\"barrier_timeout_ms\": 300");
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a, b, slow;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    worker_connect(&d, &slow, "w2", NULL);
    static float ga[NP], gb[NP];
    grad_fill(ga, 1);
    grad_fill(gb, 2);
    proto_ack ack;
    double t0 = psc_now();
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, ga, &ack), 0);
    ck_assert_int_eq(psc_push(&b, 1, 0, 1, 0, NP, gb, &ack), 0);
    static float got[NP];
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_pull(&a, 1, 0, NP, &v, &nm, got), 0);
    double dt = psc_now() - t0;
    ck_assert_msg(dt >= 0.25 && dt < 3, "barrier released after %.3f s", dt);
    const float *gs[2] = {ga, gb};
    mean_apply(&ref, gs, 2);
    ck_assert_uint_eq(v, 1);
    ck_assert(memcmp(got, ref.w, sizeof got) == 0);
    /* the late gradient (from version 0) joins round 1 instead of being
     * lost; a second push in that round is refused */
    static float gs_late[NP], ga2[NP], gb2[NP];
    grad_fill(gs_late, 3);
    grad_fill(ga2, 4);
    grad_fill(gb2, 5);
    ck_assert_int_eq(psc_push(&slow, 1, 0, 1, 0, NP, gs_late, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_uint_eq(ack.version, 1);
    ck_assert_int_eq(psc_push(&slow, 2, 1, 2, 0, NP, ga, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_STALE);
    ck_assert_int_eq(psc_push(&a, 2, 1, 2, 0, NP, ga2, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_int_eq(psc_push(&b, 2, 1, 2, 0, NP, gb2, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    const float *gs2[3] = {ga2, gb2, gs_late}; /* worker-table order */
    mean_apply(&ref, gs2, 3);
    ck_assert_int_eq(psc_pull(&slow, 2, 0, NP, &v, &nm, got), 0);
    ck_assert_uint_eq(v, 2);
    ck_assert_msg(memcmp(got, ref.w, sizeof got) == 0, "round 2 is not the mean of all three");
    /* two versions late is too late */
    ck_assert_int_eq(psc_push(&slow, 3, 0, 3, 0, NP, ga, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_STALE);
    assert_weights(&slow, &ref);
    /* a PULL for a version that nobody is producing does not hang */
    ck_assert_int_eq(psc_pull(&b, 3, 0, NP, &v, &nm, NULL), 0);
    ck_assert_int_eq(nm, 1);
    ck_assert_uint_eq(v, 2);
    psc_close(&a);
    psc_close(&b);
    psc_close(&slow);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- ssp */

START_TEST(test_ssp_bound)
{
    daemon_t d;
    daemon_init(&d, "ssp", "\"staleness\": 1");
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a, b;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    static float g1[NP], g2[NP], g3[NP];
    grad_fill(g1, 1);
    grad_fill(g2, 2);
    grad_fill(g3, 3);
    proto_ack ack;
    /* a: step 1 is within the bound (1 ahead of b) */
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, g1, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
    ps_shard_apply(&ref, g1);
    /* a: step 2 would be 2 ahead: applied, but its ACK waits */
    ck_assert_int_gt(psc_push_send(&a, 2, 1, 2, 0, NP, g2), 0);
    ck_assert_msg(!psc_readable(&a, 400), "ssp let a worker run past the bound");
    ps_shard_apply(&ref, g2);
    /* b: step 1 releases a */
    ck_assert_int_eq(psc_push(&b, 1, 0, 1, 0, NP, g3, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
    ps_shard_apply(&ref, g3);
    ck_assert_uint_eq(ack.version, 3);
    ck_assert_int_eq(psc_ack_recv(&a, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
    ck_assert_uint_eq(ack.seq, 2);
    ck_assert_uint_eq(ack.version, 2);
    assert_weights(&a, &ref);
    /* a slow worker that leaves no longer holds the others back */
    ck_assert_int_gt(psc_push_send(&a, 3, 3, 3, 0, NP, g1), 0);
    ck_assert(!psc_readable(&a, 300));
    psc_close(&b);
    ck_assert_int_eq(psc_ack_recv(&a, &ack), 0);
    ck_assert_uint_eq(ack.seq, 3);
    psc_close(&a);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- checkpoints */

START_TEST(test_checkpoint_restart)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a, op;
    worker_connect(&d, &a, "w0", NULL);
    static float g[NP];
    proto_ack ack;
    for (int k = 1; k <= 3; k++) {
        grad_fill(g, k);
        ck_assert_int_eq(psc_push(&a, (uint64_t)k, ref.version, (uint64_t)k, 0, NP, g, &ack), 0);
        ps_shard_apply(&ref, g);
    }
    ck_assert_int_eq(psc_connect(&op, d.port, 2000, READ_MS), 0);
    proto_welcome wel;
    ck_assert_int_eq(psc_hello(&op, PROTO_ROLE_OPERATOR, "psctl", "", 0, &wel), 0);
    uint64_t v = 0;
    ck_assert_int_eq(psc_checkpoint(&op, &v), 0);
    ck_assert_uint_eq(v, 3);
    /* the file holds exactly the shard's weights and momentum */
    uint8_t *buf;
    size_t len;
    char err[512];
    ck_assert_int_eq(psd_ckpt_file_read(d.ckpt, &buf, &len, err, sizeof err), 0);
    psd_ckpt ck;
    ck_assert_msg(psd_ckpt_decode(buf, len, &ck, err, sizeof err) == 0, "%s", err);
    free(buf);
    ck_assert_uint_eq(ck.version, 3);
    ck_assert(memcmp(ck.w, ref.w, NP * sizeof(float)) == 0);
    ck_assert(memcmp(ck.mom, ref.mom, NP * sizeof(float)) == 0);
    ck_assert_uint_eq(ck.nworkers, 1);
    ck_assert_uint_eq(ck.workers[0].last_seq, 3);
    psd_ckpt_free(&ck);
    psc_close(&op);
    psc_close(&a);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);

    daemon_start(&d, NULL);
    worker_connect(&d, &a, "w0", &wel);
    ck_assert_uint_eq(wel.param_version, 3);
    ck_assert_uint_eq(wel.last_seq, 3);
    assert_weights(&a, &ref);
    ck_assert_int_eq(psc_push(&a, 3, 3, 3, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_DUPLICATE);
    /* momentum came back too: the next step matches bit for bit */
    grad_fill(g, 4);
    ck_assert_int_eq(psc_push(&a, 4, 3, 4, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.version, 4);
    ps_shard_apply(&ref, g);
    assert_weights(&a, &ref);
    psc_close(&a);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_checkpoint_corrupt)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client a;
    worker_connect(&d, &a, "w0", NULL);
    static float g[NP];
    grad_fill(g, 1);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, g, &ack), 0);
    psc_close(&a);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
    /* one flipped byte in the weights */
    uint8_t byte = 0x5a;
    ck_assert_int_eq(fixtures_file_patch(d.ckpt, 300, &byte, 1), 0);
    const char *args[] = {"--placement", d.conf, "--node", "ps0", "--state-dir", d.state, NULL};
    d.pid = spawn(&d, args);
    int st = wait_exit(d.pid, 10000);
    d.pid = -1;
    ck_assert_int_eq(st, 1);
    ck_assert_msg(log_has(&d, "checksum") && log_has(&d, "--fresh"), "no clear message");
    /* --fresh starts over from the seed */
    daemon_start(&d, "--fresh");
    proto_welcome wel;
    worker_connect(&d, &a, "w0", &wel);
    ck_assert_uint_eq(wel.param_version, 0);
    ck_assert_uint_eq(wel.last_seq, 0);
    assert_weights(&a, &ref);
    psc_close(&a);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGINT), 0);
    /* a checkpoint of another job (other seed) is refused too */
    conf_write(&d, "async", "\"seed\": 2");
    d.pid = spawn(&d, args);
    st = wait_exit(d.pid, 10000);
    d.pid = -1;
    ck_assert_int_eq(st, 1);
    ck_assert_msg(log_has(&d, "seed is 1, expected 2"), "no clear message");
    ps_shard_free(&ref);
}
END_TEST

START_TEST(test_sigterm_checkpoints)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    psd_client a;
    worker_connect(&d, &a, "w0", NULL);
    static float g[NP];
    grad_fill(g, 1);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, g, &ack), 0);
    ck_assert_int_eq(psc_push(&a, 2, 1, 2, 0, NP, g, &ack), 0);
    struct stat sb;
    ck_assert_int_ne(stat(d.ckpt, &sb), 0);
    /* a connected client does not keep it from stopping */
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&a, &f), PSC_ERR_EOF);
    psc_close(&a);
    uint8_t *buf;
    size_t len;
    char err[512];
    ck_assert_int_eq(psd_ckpt_file_read(d.ckpt, &buf, &len, err, sizeof err), 0);
    psd_ckpt ck;
    ck_assert_msg(psd_ckpt_decode(buf, len, &ck, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(ck.version, 2);
    psd_ckpt_free(&ck);
    free(buf);
}
END_TEST

START_TEST(test_sigterm_mid_barrier)
{
    daemon_t d;
    daemon_init(&d, "sync", "\"barrier_timeout_ms\": 20000");
    daemon_start(&d, NULL);
    psd_client a, b;
    worker_connect(&d, &a, "w0", NULL);
    worker_connect(&d, &b, "w1", NULL);
    static float g[NP];
    grad_fill(g, 1);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, g, &ack), 0);
    ck_assert_uint_eq(ack.status, PROTO_ACK_WAITING);
    ck_assert_int_gt(psc_pull_send(&a, 1, 0, NP), 0); /* parked */
    ck_assert(!psc_readable(&a, 100));
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&a, &f), PSC_ERR_EOF);
    psc_close(&a);
    psc_close(&b);
    /* the open round was not applied; the seq was consumed */
    uint8_t *buf;
    size_t len;
    char err[512];
    ck_assert_int_eq(psd_ckpt_file_read(d.ckpt, &buf, &len, err, sizeof err), 0);
    psd_ckpt ck;
    ck_assert_msg(psd_ckpt_decode(buf, len, &ck, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(ck.version, 0);
    ck_assert_uint_eq(ck.nworkers, 2);
    ck_assert_uint_eq(ck.workers[0].last_seq, 1);
    psd_ckpt_free(&ck);
    free(buf);
}
END_TEST

START_TEST(test_periodic_checkpoint)
{
    daemon_t d;
    daemon_init(&d, "async", "\"checkpoint_interval_s\": 1");
    daemon_start(&d, NULL);
    psd_client a;
    worker_connect(&d, &a, "w0", NULL);
    static float g[NP];
    grad_fill(g, 1);
    proto_ack ack;
    ck_assert_int_eq(psc_push(&a, 1, 0, 1, 0, NP, g, &ack), 0);
    struct stat sb;
    double end = psc_now() + 5;
    while (stat(d.ckpt, &sb) != 0 && psc_now() < end)
        usleep(50000);
    ck_assert_int_eq(stat(d.ckpt, &sb), 0);
    psc_close(&a);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- bad input */

START_TEST(test_garbage)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client good, bad;
    worker_connect(&d, &good, "w0", NULL);
    ck_assert_int_eq(psc_connect(&bad, d.port, 2000, READ_MS), 0);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(psc_send_raw(&bad, http, strlen(http)), 0);
    ck_assert_int_eq(psc_error_recv(&bad), PROTO_ERR_TOO_LARGE);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&bad, &f), PSC_ERR_EOF);
    psc_close(&bad);
    /* a frame-sized lump with a bad magic, mid-session */
    worker_connect(&d, &bad, "w1", NULL);
    uint8_t junk[64];
    memset(junk, 0xee, sizeof junk);
    proto_put_be32(junk, 60);
    ck_assert_int_eq(psc_send_raw(&bad, junk, sizeof junk), 0);
    ck_assert_int_eq(psc_error_recv(&bad), PROTO_ERR_MAGIC);
    ck_assert_int_eq(psc_recv(&bad, &f), PSC_ERR_EOF);
    psc_close(&bad);
    /* the other client keeps being served */
    assert_weights(&good, &ref);
    ck_assert_msg(log_has(&d, "GET / HTTP/1.1\\x0d\\x0aHost"), "no sanitised sample in the log");
    psc_close(&good);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* Seconds until c gets an ERROR with `code` and then EOF; fails otherwise. */
static double expect_closed_with(psd_client *c, int code)
{
    double t0 = psc_now();
    int rc = psc_error_recv(c);
    ck_assert_msg(rc == code, "got %d (%s), want %d", rc, c->last_error.text, code);
    proto_frame f;
    ck_assert_int_eq(psc_recv(c, &f), PSC_ERR_EOF);
    return psc_now() - t0;
}

/* Limits: a client that never says HELLO, one that sends a frame a byte at
 * a time, an idle operator, frames larger than the peer's role allows, and
 * more connections than --max-connections: each gets ERROR and a close in
 * time, while a worker keeps being served and memory stays put. */
START_TEST(test_limits)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    const char *extra[] = {"--handshake-timeout", "1", "--frame-timeout", "2",
                           "--idle-timeout", "6", "--max-connections", "4", NULL};
    daemon_start_args(&d, extra);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client good, silent, slow, big, idle;
    worker_connect(&d, &good, "w0", NULL);
    /* no HELLO: closed after the handshake timeout (1 s) */
    ck_assert_int_eq(psc_connect(&silent, d.port, 2000, READ_MS), 0);
    /* a HELLO trickled a byte at a time: the frame timeout (2 s) */
    ck_assert_int_eq(psc_connect(&slow, d.port, 2000, READ_MS), 0);
    proto_hello h = {.role = PROTO_ROLE_WORKER, .nparams = NP};
    strcpy(h.node_id, "w1");
    strcpy(h.model, "ray");
    uint8_t hb[256];
    size_t hl = 0;
    ck_assert_int_eq(proto_hello_encode(&h, 1, hb, sizeof hb, &hl), 0);
    double t0 = psc_now();
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(psc_send_raw(&slow, hb + i, 1), 0);
    /* more connections than allowed: good, silent, slow + this = 4; the 5th is refused */
    ck_assert_int_eq(psc_connect(&big, d.port, 2000, READ_MS), 0);
    psd_client over;
    ck_assert_int_eq(psc_connect(&over, d.port, 2000, READ_MS), 0);
    expect_closed_with(&over, PROTO_ERR_BUSY);
    ck_assert_ptr_nonnull(strstr(over.last_error.text, "too many connections (max 4)"));
    psc_close(&over);
    /* before HELLO a frame may be at most a few KiB: a 1 MB header is refused */
    uint8_t hdr[PROTO_FRAME_OVERHEAD];
    ck_assert_int_eq(proto_header_encode(hdr, PROTO_MSG_HELLO, 0, 9, 1u << 20), 0);
    ck_assert_int_eq(psc_send_raw(&big, hdr, sizeof hdr), 0);
    expect_closed_with(&big, PROTO_ERR_TOO_LARGE);
    psc_close(&big);
    double dt = expect_closed_with(&silent, PROTO_ERR_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(silent.last_error.text, "no HELLO within 1 s"));
    psc_close(&silent);
    assert_weights(&good, &ref);
    for (size_t i = 5; i < 9; i++) { /* still trickling, still not a whole frame */
        ck_assert_int_eq(psc_send_raw(&slow, hb + i, 1), 0);
        usleep(200000);
    }
    expect_closed_with(&slow, PROTO_ERR_TIMEOUT);
    dt = psc_now() - t0;
    ck_assert_msg(dt >= 1.0 && dt < 4.0, "closed after %.2f s", dt);
    psc_close(&slow);
    assert_weights(&good, &ref);
    psc_close(&good); /* it would be idle as long as the operator below */
    /* an operator may not send a large frame (a worker may: a lenet PUSH) */
    ck_assert_int_eq(psc_connect(&big, d.port, 2000, READ_MS), 0);
    proto_welcome wel;
    ck_assert_int_eq(psc_hello(&big, PROTO_ROLE_OPERATOR, "op", "", 0, &wel), 0);
    ck_assert_int_eq(proto_header_encode(hdr, PROTO_MSG_PUSH, 0, 2, 1u << 20), 0);
    ck_assert_int_eq(psc_send_raw(&big, hdr, sizeof hdr), 0);
    expect_closed_with(&big, PROTO_ERR_TOO_LARGE);
    psc_close(&big);
    /* an idle operator: closed after 6 s of nothing (the worker above pulled
     * often enough not to be idle; under load the phases can take seconds) */
    ck_assert_int_eq(psc_connect(&idle, d.port, 2000, 12000), 0);
    ck_assert_int_eq(psc_hello(&idle, PROTO_ROLE_OPERATOR, "op2", "", 0, &wel), 0);
    t0 = psc_now();
    expect_closed_with(&idle, PROTO_ERR_TIMEOUT);
    dt = psc_now() - t0;
    ck_assert_msg(dt >= 5.5 && dt < 9.0, "idle close after %.2f s", dt);
    psc_close(&idle);
    /* connections are taken again */
    worker_connect(&d, &good, "w0", NULL);
    assert_weights(&good, &ref);
    char *l = log_text(&d);
    ck_assert_msg(strstr(l, "too many connections (max 4): 1 refused so far"), "%s", l);
    free(l);
    psc_close(&good);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_slow_reader)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    daemon_start(&d, NULL);
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client slow, good;
    worker_connect(&d, &slow, "w0", NULL);
    worker_connect(&d, &good, "w1", NULL);
    /* pipeline far more PULLs than the output limit without reading */
    uint8_t one[64];
    size_t len;
    proto_pull p = {.min_version = 0, .lo = 0, .hi = NP};
    ck_assert_int_eq(proto_pull_encode(&p, 1, one, sizeof one, &len), 0);
    size_t n = 600000; /* 24 MB of PULLs asking for 4.7 GB of WEIGHTS */
    uint8_t *many = malloc(n * len);
    for (size_t i = 0; i < n; i++)
        memcpy(many + i * len, one, len);
    int fl = fcntl(slow.fd, F_GETFL);
    fcntl(slow.fd, F_SETFL, fl | O_NONBLOCK);
    size_t sent = 0;
    double end = psc_now() + 3;
    while (sent < n * len && psc_now() < end) {
        ssize_t w = send(slow.fd, many + sent, n * len - sent, MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else
            usleep(10000);
    }
    free(many);
    ck_assert_msg(sent < n * len, "the shard read everything from a peer that does not read");
    /* meanwhile others are served */
    assert_weights(&good, &ref);
    char *json;
    ck_assert_int_eq(psc_status(&good, &json), 0);
    free(json);
    psc_close(&slow);
    assert_weights(&good, &ref);
    psc_close(&good);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------------- command line */

static int run_psd(daemon_t *d, const char *const *args)
{
    pid_t pid = spawn(d, args);
    int st = wait_exit(pid, 10000);
    if (st < 0) {
        kill(pid, SIGKILL);
        wait_exit(pid, 5000);
    }
    return st;
}

START_TEST(test_cli)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    const char *help[] = {"--help", NULL};
    ck_assert_int_eq(run_psd(&d, help), 0);
    ck_assert(log_has(&d, "usage: psd --placement FILE"));
    const char *none[] = {NULL};
    ck_assert_int_eq(run_psd(&d, none), 2);
    const char *bogus[] = {"--placement", d.conf, "--bogus", NULL};
    ck_assert_int_eq(run_psd(&d, bogus), 2);
    const char *extra[] = {"--placement", d.conf, "stray", NULL};
    ck_assert_int_eq(run_psd(&d, extra), 2);
    const char *worker[] = {"--placement", d.conf, "--node", "w0", NULL};
    ck_assert_int_eq(run_psd(&d, worker), 1);
    ck_assert(log_has(&d, "not a ps node"));
    const char *nonode[] = {"--placement", d.conf, "--node", "nobody", NULL};
    ck_assert_int_eq(run_psd(&d, nonode), 1);
    ck_assert(log_has(&d, "no node \"nobody\""));
    const char *missing[] = {"--placement", "/nonexistent/p.conf", "--node", "ps0", NULL};
    ck_assert_int_eq(run_psd(&d, missing), 1);
    ck_assert(log_has(&d, "/nonexistent/p.conf"));
    const char *bad = "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": 1},"
                      " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},"
                      " \"nodes\": [{\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": \"80a\","
                      " \"role\": \"ps\"}, {\"id\": \"w0\", \"address\": \"127.0.0.1\","
                      " \"role\": \"worker\"}]}";
    ck_assert_int_eq(fixtures_file_write(d.conf, (const uint8_t *)bad, strlen(bad), 0), 0);
    const char *badconf[] = {"--placement", d.conf, "--node", "ps0", NULL};
    ck_assert_int_eq(run_psd(&d, badconf), 1);
    ck_assert_msg(log_has(&d, "nodes[0].port"), "no field path in the message");
    /* the port is taken: a clear error, exit 1 */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    d.port = ntohs(a.sin_port);
    conf_write(&d, "async", NULL);
    const char *busy[] = {"--placement", d.conf, "--node", "ps0", "--state-dir", d.state, NULL};
    ck_assert_int_eq(run_psd(&d, busy), 1);
    ck_assert(log_has(&d, "cannot listen"));
    close(fd);
}
END_TEST

/* lenet's second shard of two: a 862 KB frame each way, split across many
 * reads, at a range that does not start at 0. */
START_TEST(test_lenet_second_shard)
{
    daemon_t d;
    daemon_init(&d, "async", NULL);
    int port0 = psc_free_port();
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"lenet\", \"mode\": \"async\", \"max_steps\": 1000},"
                     " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},"
                     " \"nodes\": [{\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": %d,"
                     " \"role\": \"ps\"}, {\"id\": \"ps1\", \"address\": \"127.0.0.1\","
                     " \"port\": %d, \"role\": \"ps\"}, {\"id\": \"w0\", \"address\":"
                     " \"127.0.0.1\", \"role\": \"worker\"}]}",
                     port0, d.port);
    ck_assert_int_eq(fixtures_file_write(d.conf, (const uint8_t *)text, (size_t)n, 0), 0);
    const char *args[] = {"--placement", d.conf, "--node", "ps1", "--state-dir", d.state, NULL};
    d.pid = spawn(&d, args);
    char err[1024];
    ck_assert_msg(kern_init(err, sizeof err) == 0, "%s", err);
    placement pl;
    ck_assert_msg(placement_load(d.conf, &pl, err, sizeof err) == 0, "%s", err);
    cnn_model m;
    ck_assert_int_eq(placement_model_init(&pl, &m, err, sizeof err), 0);
    const placement_node *me = placement_node_find(&pl, "ps1");
    ck_assert_ptr_nonnull(me);
    ps_shard ref;
    ck_assert_int_eq(ps_shard_init(&ref, &m, kern_active(), &pl.job.opt, pl.job.seed, me->lo,
                                   me->hi, err, sizeof err),
                     0);
    size_t lo = me->lo, hi = me->hi, len = hi - lo;
    ck_assert_uint_gt(lo, 0);
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, d.port, 5000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_WORKER, "w0", "lenet", m.nparams, &wel), 0);
    ck_assert_uint_eq(wel.lo, lo);
    ck_assert_uint_eq(wel.hi, hi);
    float *g = malloc(len * sizeof(float)), *got = malloc(len * sizeof(float));
    for (int k = 1; k <= 2; k++) {
        for (size_t i = 0; i < len; i++)
            g[i] = (float)((int)((i * 7 + (size_t)k) % 9) - 4) * 0.01f;
        proto_ack ack;
        ck_assert_int_eq(psc_push(&c, (uint64_t)k, ref.version, 1, lo, hi, g, &ack), 0);
        ck_assert_uint_eq(ack.status, PROTO_ACK_APPLIED);
        ps_shard_apply(&ref, g);
    }
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_pull(&c, 0, lo, hi, &v, &nm, got), 0);
    ck_assert_uint_eq(v, 2);
    ck_assert(memcmp(got, ref.w, len * sizeof(float)) == 0);
    free(g);
    free(got);
    psc_close(&c);
    ps_shard_free(&ref);
    placement_free(&pl);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

START_TEST(test_default_node_is_hostname)
{
    char host[256] = "";
    ck_assert_int_eq(gethostname(host, sizeof host - 1), 0);
    char *dot = strchr(host, '.');
    if (dot)
        *dot = '\0'; /* placement_node_select also tries the short name */
    size_t hl = strlen(host);
    int ok = hl > 0 && hl <= PLACEMENT_ID_MAX && strcmp(host, "w0") && strcmp(host, "w1");
    for (size_t i = 0; i < hl; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", host[i]))
            ok = 0;
    if (!ok)
        return; /* this host's name cannot be a node id */
    daemon_t d;
    daemon_init(&d, "async", NULL);
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": 1000},"
                     " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},"
                     " \"nodes\": [{\"id\": \"%s\", \"address\": \"127.0.0.1\", \"port\": %d,"
                     " \"role\": \"ps\"}, {\"id\": \"w0\", \"address\": \"127.0.0.1\","
                     " \"role\": \"worker\"}]}",
                     host, d.port);
    ck_assert_int_eq(fixtures_file_write(d.conf, (const uint8_t *)text, (size_t)n, 0), 0);
    const char *args[] = {"--placement", d.conf, "--state-dir", d.state, NULL};
    d.pid = spawn(&d, args);
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, d.port, 5000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_WORKER, "w0", "ray", NP, &wel), 0);
    ck_assert_str_eq(wel.node_id, host);
    psc_close(&c);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* ------------------------------------------------------- cluster key */

static const uint8_t g_key[PLACEMENT_KEY_SIZE] = {
    0x5e, 0xc7, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
    0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e};

/* daemon_init, plus "auth": {"key_file": "cluster.key"} (next to the
 * placement) and that file with g_key at `mode`. */
static void daemon_init_key(daemon_t *d, const char *mode, mode_t key_mode)
{
    daemon_init(d, mode, NULL);
    uint8_t *t;
    size_t n;
    ck_assert_int_eq(fixtures_file_read(d->conf, &t, &n), 0);
    char *text = malloc(n + 128);
    ck_assert_ptr_nonnull(text);
    memcpy(text, t, n);
    free(t);
    ck_assert(n > 3 && memcmp(text + n - 3, "]}\n", 3) == 0);
    n -= 3;
    n += (size_t)sprintf(text + n, "],\n \"auth\": {\"key_file\": \"cluster.key\"}}\n");
    ck_assert_int_eq(fixtures_file_write(d->conf, (const uint8_t *)text, n, 0), 0);
    free(text);
    char key[FIXTURES_PATH_MAX], err[FIXTURES_PATH_MAX + 256];
    ck_assert_int_eq(fixtures_path_join(key, sizeof key, d->dir, "cluster.key"), 0);
    ck_assert_msg(placement_key_save(key, g_key, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(chmod(key, key_mode), 0);
}

/* A worker (or operator) with `key` (NULL: none); returns psc_hello's result. */
static int key_connect(daemon_t *d, psd_client *c, int role, const char *id, const uint8_t *key,
                       int unchecked)
{
    proto_welcome w;
    ck_assert_int_eq(psc_connect(c, d->port, 2000, READ_MS), 0);
    psc_set_key(c, key);
    c->unchecked = unchecked;
    return psc_hello(c, role, id, role == PROTO_ROLE_WORKER ? "ray" : "", role == PROTO_ROLE_WORKER ? NP : 0,
                     &w);
}

static int log_count(const daemon_t *d, const char *needle)
{
    char *l = log_text(d);
    int n = 0;
    for (const char *p = strstr(l, needle); p; p = strstr(p + 1, needle))
        n++;
    free(l);
    return n;
}

/* One async push and pull with the reference, on c. */
static void push_check(psd_client *c, ps_shard *ref, uint64_t seq)
{
    static float g[NP];
    grad_fill(g, (int)seq);
    proto_ack a;
    ck_assert_int_eq(psc_push(c, seq, ref->version, seq, 0, NP, g, &a), 0);
    ck_assert_int_eq(a.status, PROTO_ACK_APPLIED);
    ps_shard_apply(ref, g);
    assert_weights(c, ref);
}

/* With a key, compressed traffic is sealed like the rest: fp16 and top-k
 * PUSHes applied as their decoded gradients, delta and fp16 pulls (each
 * reply sealed per connection) exact. */
START_TEST(test_auth_compressed)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0600);
    daemon_start(&d, "--fresh");
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client w0;
    ck_assert_int_eq(key_connect(&d, &w0, PROTO_ROLE_WORKER, "w0", g_key, 0), 0);
    ck_assert(w0.sealed);
    static float g[NP], dec[NP], copy[NP], vals[NP];
    static uint32_t work[NP], idx[NP];
    proto_weights w;
    ck_assert_int_gt(psc_pull_send_enc(&w0, 0, 0, NP, PROTO_ENC_SPARSE), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&w0, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_FP32); /* no copy yet: full */
    for (uint64_t k = 1; k <= 4; k++) {
        grad_fill(g, (int)k);
        proto_push p = {.seq = k, .base_version = ref.version, .step = k, .samples = 32,
                        .lo = 0, .hi = NP, .values = g};
        if (k % 2) {
            p.encoding = PROTO_ENC_FP16;
            for (int i = 0; i < NP; i++)
                dec[i] = proto_f16_round(g[i]);
        } else {
            size_t kk = proto_topk_count(NP, 1.0);
            ck_assert_int_eq(proto_topk_select(g, NP, kk, work, idx), 0);
            memset(dec, 0, sizeof dec);
            for (size_t j = 0; j < kk; j++)
                dec[idx[j]] = vals[j] = g[idx[j]];
            p.encoding = PROTO_ENC_SPARSE;
            p.idx = idx;
            p.values = vals;
            p.count = kk;
        }
        ck_assert_int_gt(psc_push_send_msg(&w0, &p), 0);
        proto_ack a;
        ck_assert_int_eq(psc_ack_recv(&w0, &a), 0);
        ck_assert_int_eq(a.status, PROTO_ACK_APPLIED);
        ps_shard_apply(&ref, dec);
        ck_assert_int_gt(psc_pull_send_enc(&w0, 0, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&w0, &w, copy, NP), 0);
        ck_assert_uint_eq(w.version, ref.version);
        ck_assert_msg(memcmp(copy, ref.w, sizeof copy) == 0, "sealed delta pull %llu differs",
                      (unsigned long long)k);
    }
    ck_assert_int_gt(psc_pull_send_enc(&w0, 0, 0, NP, PROTO_ENC_FP16), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&w0, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_FP16);
    for (int i = 0; i < NP; i++)
        if (copy[i] != proto_f16_round(ref.w[i]))
            ck_abort_msg("sealed fp16 pull: entry %d", i);
    psc_close(&w0);
    ps_shard_free(&ref);
}
END_TEST

/* With a key: workers and operators that hold it are served exactly as
 * without one (bit for bit), over sealed frames. */
START_TEST(test_auth_ok)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0600);
    daemon_start(&d, "--fresh");
    ck_assert(log_has(&d, "cluster key from "));
    ck_assert(!log_has(&d, "no cluster key"));
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client w0, w1, op;
    ck_assert_int_eq(key_connect(&d, &w0, PROTO_ROLE_WORKER, "w0", g_key, 0), 0);
    ck_assert_int_eq(key_connect(&d, &w1, PROTO_ROLE_WORKER, "w1", g_key, 0), 0);
    ck_assert(w0.sealed && w1.sealed);
    assert_weights(&w0, &ref);
    for (uint64_t k = 1; k <= 3; k++) {
        push_check(&w0, &ref, k);
        push_check(&w1, &ref, k);
    }
    ck_assert_int_eq(key_connect(&d, &op, PROTO_ROLE_OPERATOR, "op", g_key, 0), 0);
    char *json = NULL;
    ck_assert_int_eq(psc_status(&op, &json), 0);
    ck_assert_msg(strstr(json, "\"version\":6"), "%s", json);
    free(json);
    uint64_t v;
    ck_assert_int_eq(psc_checkpoint(&op, &v), 0);
    ck_assert_uint_eq(v, 6);
    /* a sealed frame still pipelines: two PULLs, two WEIGHTS */
    ck_assert_int_gt(psc_pull_send(&w0, 0, 0, NP), 0);
    ck_assert_int_gt(psc_pull_send(&w0, 0, 0, 16), 0);
    int nm;
    static float got[NP];
    ck_assert_int_eq(psc_weights_recv(&w0, &v, &nm, got, NP), 0);
    ck_assert_int_eq(psc_weights_recv(&w0, &v, &nm, got, 16), 0);
    ck_assert(log_has(&d, "worker w0 joined from") && log_has(&d, "authenticated"));
    psc_close(&w0);
    psc_close(&w1);
    psc_close(&op);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* Configured differently, or another key: ERROR AUTH (or the client sees
 * the shard's proof fail), one log line, close; a worker with the key is
 * served all along. */
START_TEST(test_auth_refused)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0600);
    daemon_start(&d, "--fresh");
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client good, c;
    ck_assert_int_eq(key_connect(&d, &good, PROTO_ROLE_WORKER, "w0", g_key, 0), 0);
    push_check(&good, &ref, 1);

    /* no key */
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w1", NULL, 0), PROTO_ERR_AUTH);
    ck_assert_msg(strstr(c.last_error.text, "this cluster requires the key"), "%s",
                  c.last_error.text);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&c, &f), PSC_ERR_EOF);
    psc_close(&c);
    push_check(&good, &ref, 2);

    /* another key, and the client notices: it never sends AUTH */
    uint8_t other[PLACEMENT_KEY_SIZE];
    memcpy(other, g_key, sizeof other);
    other[7] ^= 0x10;
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w1", other, 0), PROTO_ERR_AUTH);
    psc_close(&c);
    double end = psc_now() + 5;
    while (!log_has(&d, "before its AUTH") && psc_now() < end)
        usleep(10000);
    ck_assert_int_eq(log_count(&d, "before its AUTH"), 1);
    push_check(&good, &ref, 3);

    /* another key, and the client sends its AUTH anyway: the shard refuses */
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w0", other, 1), PROTO_ERR_AUTH);
    ck_assert_msg(strstr(c.last_error.text, "wrong key"), "%s", c.last_error.text);
    ck_assert_int_eq(psc_recv(&c, &f), PSC_ERR_EOF);
    psc_close(&c);
    ck_assert_int_eq(log_count(&d, "wrong key"), 1);
    /* ... and it did not take w0's place */
    push_check(&good, &ref, 4);
    ck_assert_int_eq(log_count(&d, "worker w0 joined"), 1);

    /* an operator without the key cannot read the status either */
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_OPERATOR, "op", NULL, 0), PROTO_ERR_AUTH);
    psc_close(&c);
    push_check(&good, &ref, 5);
    psc_close(&good);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);

    /* the other way round: a shard without a key, a client with one */
    daemon_t u;
    daemon_init(&u, "async", NULL);
    daemon_start(&u, "--fresh");
    ck_assert(log_has(&u, "WARN no cluster key (the placement has no auth): anyone who can "
                          "reach port"));
    ck_assert_int_eq(key_connect(&u, &c, PROTO_ROLE_WORKER, "w0", g_key, 0), PROTO_ERR_AUTH);
    ck_assert_msg(strstr(c.last_error.text, "this shard does not use a key"), "%s",
                  c.last_error.text);
    psc_close(&c);
    ck_assert_int_eq(daemon_signal_stop(&u, SIGTERM), 0);
}
END_TEST

/* A recorded handshake replayed byte for byte: the shard's fresh nonce
 * makes the old AUTH wrong.  And nothing but AUTH is taken before it. */
START_TEST(test_auth_replay)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0600);
    daemon_start(&d, "--fresh");
    psd_client c;
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    psc_set_key(&c, g_key);
    psc_record(&c);
    proto_welcome w;
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_WORKER, "w0", "ray", NP, &w), 0);
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_pull(&c, 0, 0, NP, &v, &nm, NULL), 0);
    size_t rec_len = c.rec_len;
    uint8_t *rec = malloc(rec_len);
    memcpy(rec, c.rec, rec_len);
    psc_close(&c);
    size_t hello_len = PROTO_PREFIX_SIZE + proto_get_be32(rec);
    size_t auth_len = PROTO_FRAME_OVERHEAD + PROTO_AUTH_SIZE;
    ck_assert_uint_gt(rec_len, hello_len + auth_len);
    ck_assert_uint_eq(rec[hello_len + 10], PROTO_MSG_AUTH);

    /* HELLO, then the old AUTH */
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_send_raw(&c, rec, hello_len), 0);
    proto_frame f;
    ck_assert_int_eq(psc_recv(&c, &f), 0);
    ck_assert_uint_eq(f.hdr.type, PROTO_MSG_WELCOME);
    ck_assert_int_eq(psc_send_raw(&c, rec + hello_len, auth_len), 0);
    expect_closed_with(&c, PROTO_ERR_AUTH);
    psc_close(&c);
    /* the whole session at once: the same */
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_send_raw(&c, rec, rec_len), 0);
    ck_assert_int_eq(psc_recv(&c, &f), 0);
    ck_assert_uint_eq(f.hdr.type, PROTO_MSG_WELCOME);
    expect_closed_with(&c, PROTO_ERR_AUTH);
    psc_close(&c);
    ck_assert_int_eq(log_count(&d, "wrong key"), 2);
    /* the sealed PULL alone, after a fresh HELLO: no session yet */
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_send_raw(&c, rec, hello_len), 0);
    ck_assert_int_eq(psc_recv(&c, &f), 0);
    ck_assert_int_eq(psc_send_raw(&c, rec + hello_len + auth_len, rec_len - hello_len - auth_len),
                     0);
    expect_closed_with(&c, PROTO_ERR_AUTH);
    psc_close(&c);
    /* a plain request before AUTH */
    ck_assert_int_eq(psc_connect(&c, d.port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_send_raw(&c, rec, hello_len), 0);
    ck_assert_int_eq(psc_recv(&c, &f), 0);
    ck_assert_int_gt(psc_pull_send(&c, 0, 0, NP), 0);
    expect_closed_with(&c, PROTO_ERR_STATE);
    ck_assert(log_has(&d, "PULL before AUTH"));
    psc_close(&c);
    free(rec);
    /* still serving */
    psd_client good;
    ck_assert_int_eq(key_connect(&d, &good, PROTO_ROLE_WORKER, "w1", g_key, 0), 0);
    ck_assert_int_eq(psc_pull(&good, 0, 0, NP, &v, &nm, NULL), 0);
    psc_close(&good);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* In a session: a sealed PUSH with one byte changed on the wire, a frame
 * sent twice, an unsealed frame: ERROR AUTH, close, one WARN line each,
 * nothing applied; another worker goes on. */
START_TEST(test_auth_tamper)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0600);
    daemon_start(&d, "--fresh");
    ps_shard ref;
    local_shard(&d, &ref);
    psd_client good, c;
    ck_assert_int_eq(key_connect(&d, &good, PROTO_ROLE_WORKER, "w0", g_key, 0), 0);
    push_check(&good, &ref, 1);

    static float g[NP];
    grad_fill(g, 9);
    proto_push p = {.seq = 1, .base_version = 1, .step = 1, .samples = 32, .lo = 0, .hi = NP,
                    .values = g};
    size_t len;
    ck_assert_int_eq(proto_push_encode(&p, 7, NULL, 0, &len), PROTO_ERR_NOSPACE);
    uint8_t *buf = malloc(len + PROTO_SEAL_TAG_SIZE), *copy = malloc(len + PROTO_SEAL_TAG_SIZE);
    const size_t flips[] = {3, 11, 12, 40, 1000, 7000};
    for (size_t k = 0; k < sizeof flips / sizeof flips[0]; k++) {
        ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w1", g_key, 0), 0);
        ck_assert_int_eq(proto_push_encode(&p, 7, buf, len, &len), 0);
        size_t sl;
        ck_assert_int_eq(psc_seal(&c, buf, len, len + PROTO_SEAL_TAG_SIZE, &sl), 0);
        size_t at = flips[k] < sl ? flips[k] : sl - 1;
        buf[at] ^= 0x04;
        ck_assert_int_eq(psc_send_raw(&c, buf, sl), 0);
        int rc = psc_error_recv(&c);
        if (at == 3 || at == 11) {
            /* the length or the SEALED flag: the decoder or the open refuses */
            ck_assert_msg(rc < 0 && rc != PSC_ERR_IO, "flip at %zu: %d", at, rc);
        } else {
            ck_assert_msg(rc == PROTO_ERR_AUTH, "flip at %zu: %d %s", at, rc, c.last_error.text);
            ck_assert_msg(strstr(c.last_error.text, "frame authentication failed"), "%s",
                          c.last_error.text);
        }
        psc_close(&c);
        push_check(&good, &ref, 2 + k); /* the other worker goes on; nothing else applied */
    }
    ck_assert_int_ge(log_count(&d, "frame authentication failed"), 4);

    /* a frame sent twice: the second is a replay */
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w1", g_key, 0), 0);
    ck_assert_int_eq(proto_push_encode(&p, 8, buf, len, &len), 0);
    size_t sl;
    ck_assert_int_eq(psc_seal(&c, buf, len, len + PROTO_SEAL_TAG_SIZE, &sl), 0);
    memcpy(copy, buf, sl);
    ck_assert_int_eq(psc_send_raw(&c, buf, sl), 0);
    proto_ack a;
    ck_assert_int_eq(psc_ack_recv(&c, &a), 0);
    ck_assert_int_eq(a.status, PROTO_ACK_APPLIED);
    ps_shard_apply(&ref, g);
    ck_assert_int_eq(psc_send_raw(&c, copy, sl), 0);
    expect_closed_with(&c, PROTO_ERR_AUTH);
    psc_close(&c);
    assert_weights(&good, &ref); /* applied once */

    /* an unsealed frame in a sealed session */
    ck_assert_int_eq(key_connect(&d, &c, PROTO_ROLE_WORKER, "w1", g_key, 0), 0);
    ck_assert_int_eq(proto_push_encode(&p, 9, buf, len, &len), 0);
    ck_assert_int_eq(psc_send_raw(&c, buf, len), 0);
    expect_closed_with(&c, PROTO_ERR_AUTH);
    psc_close(&c);
    push_check(&good, &ref, 20);
    free(buf);
    free(copy);
    psc_close(&good);
    ps_shard_free(&ref);
    ck_assert_int_eq(daemon_signal_stop(&d, SIGTERM), 0);
}
END_TEST

/* The key file must be there, well-formed and the owner's alone: psd says
 * which file, why, and how to fix it, and exits 1. */
START_TEST(test_auth_key_file)
{
    daemon_t d;
    daemon_init_key(&d, "async", 0644);
    const char *args[] = {"--placement", d.conf, "--node", "ps0", "--state-dir", d.state, NULL};
    d.pid = spawn(&d, args);
    ck_assert_int_eq(wait_exit(d.pid, 10000), 1);
    d.pid = -1;
    char *l = log_text(&d);
    ck_assert_msg(strstr(l, "psd: cluster key file ") && strstr(l, "cluster.key: mode 0644 lets "
                                                              "group and others read") &&
                      strstr(l, "chmod 600 "),
                  "%s", l);
    free(l);
    char key[FIXTURES_PATH_MAX];
    ck_assert_int_eq(fixtures_path_join(key, sizeof key, d.dir, "cluster.key"), 0);
    ck_assert_int_eq(chmod(key, 0640), 0);
    d.pid = spawn(&d, args);
    ck_assert_int_eq(wait_exit(d.pid, 10000), 1);
    d.pid = -1;
    ck_assert(log_has(&d, "mode 0640 lets its group read"));
    ck_assert_int_eq(fixtures_file_write(key, (const uint8_t *)"abc\n", 4, 0), 0);
    ck_assert_int_eq(chmod(key, 0600), 0);
    d.pid = spawn(&d, args);
    ck_assert_int_eq(wait_exit(d.pid, 10000), 1);
    d.pid = -1;
    ck_assert(log_has(&d, "expected 64 hex digits"));
    ck_assert_int_eq(unlink(key), 0);
    d.pid = spawn(&d, args);
    ck_assert_int_eq(wait_exit(d.pid, 10000), 1);
    d.pid = -1;
    ck_assert(log_has(&d, "No such file or directory (make one with: psctl keygen FILE)"));
}
END_TEST

Suite *psd_suite(void)
{
    Suite *s = suite_create("psd");
    TCase *tc = tcase_create("ckpt");
    tcase_add_test(tc, test_ckpt_codec);
    suite_add_tcase(s, tc);
    tc = tcase_create("daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, daemons_teardown);
    tcase_add_test(tc, test_cli);
    tcase_add_test(tc, test_default_node_is_hostname);
    tcase_add_test(tc, test_handshake_status);
    tcase_add_test(tc, test_mismatch);
    tcase_add_test(tc, test_async_applies_every_push);
    tcase_add_test(tc, test_duplicate_seq);
    tcase_add_test(tc, test_sync_three);
    tcase_add_test(tc, test_sync_killed_worker);
    tcase_add_test(tc, test_sync_barrier_timeout);
    tcase_add_test(tc, test_sync_start_waits);
    tcase_add_test(tc, test_ssp_bound);
    tcase_add_test(tc, test_checkpoint_restart);
    tcase_add_test(tc, test_checkpoint_corrupt);
    tcase_add_test(tc, test_sigterm_checkpoints);
    tcase_add_test(tc, test_sigterm_mid_barrier);
    tcase_add_test(tc, test_periodic_checkpoint);
    tcase_add_test(tc, test_garbage);
    tcase_add_test(tc, test_slow_reader);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_lenet_second_shard);
    suite_add_tcase(s, tc);
    tc = tcase_create("auth");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, daemons_teardown);
    tcase_add_test(tc, test_auth_ok);
    tcase_add_test(tc, test_auth_compressed);
    tcase_add_test(tc, test_auth_refused);
    tcase_add_test(tc, test_auth_replay);
    tcase_add_test(tc, test_auth_tamper);
    tcase_add_test(tc, test_auth_key_file);
    suite_add_tcase(s, tc);
    return s;
}
