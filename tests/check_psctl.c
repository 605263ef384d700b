/* check_psctl.c - psctl, the operator's tool, against two real psd shards.
 *
 * Each test writes a two-shard "ray" placement (async) on ephemeral
 * 127.0.0.1 ports, starts $PSD_BIN/psd for ps0 and ps1, moves the shards to
 * different versions with the blocking test client (tests/psd_client.h),
 * sends a REPORT to shard 0, and then runs $PSD_BIN/psctl and checks its
 * output and exit status: status (table and --json), accuracy, checkpoint,
 * a killed shard, a shard that never answers (timeout), and the command
 * line.  export and eval: the exported file holds exactly the shards'
 * weights and versions; eval prints what an in-process evaluation of the
 * same weights gives, on synthetic digits (tests/fixtures.h); the errors.
 * The job line of status is checked against real shards and against fake
 * ones (a forked process speaking the protocol) that report a finished
 * job or disagree.
 *
 * Every process is started with PR_SET_PDEATHSIG, waited for with a
 * deadline and killed in the teardown, so a failing test neither hangs nor
 * leaves a daemon behind.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cnn.h"
#include "dataset.h"
#include "fixtures.h"
#include "kernels.h"
#include "modelfile.h"
#include "proto.h"
#include "psd_client.h"

#define NP 1960      /* ray */
#define SPLIT 976    /* two equal shares of ray: [0, 976), [976, 1960) */
#define READ_MS 5000 /* every socket read times out after this */
#define RUN_MS 20000 /* psctl must finish within this */

typedef struct ctl_env {
    char dir[FIXTURES_PATH_MAX];
    char conf[FIXTURES_PATH_MAX];
    char state[FIXTURES_PATH_MAX];
    char log[2][FIXTURES_PATH_MAX];
    char out[FIXTURES_PATH_MAX]; /* psctl's stdout */
    char err[FIXTURES_PATH_MAX]; /* psctl's stderr */
    int port[2];
    pid_t pid[2];
} ctl_env;

static ctl_env g_env;
static int g_env_ready;

/* What the last run_psctl() printed (NUL-terminated, owned here). */
static char *g_out, *g_err;

static char *file_text(const char *path)
{
    uint8_t *b = NULL;
    size_t n = 0;
    if (fixtures_file_read(path, &b, &n) != 0)
        return strdup("");
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, b, n);
    s[n] = '\0';
    free(b);
    return s;
}

/* Wait up to ms for pid: its exit status, 128+signal, or -1 if running. */
static int wait_exit(pid_t pid, int ms)
{
    double end = psc_now() + ms / 1000.0;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR)
            return -2;
        if (psc_now() > end)
            return -1;
        usleep(10000);
    }
}

static pid_t spawn(const char *prog, const char *const *args, const char *out, const char *err)
{
    pid_t pid = psc_spawn(prog, args, out, err);
    ck_assert_int_gt(pid, 0);
    return pid;
}

/* Run psctl with args; its output goes to g_out / g_err.  Returns its exit
 * status; fails the test if it hangs or leaves a sanitizer report. */
static int run_psctl(const char *const *args)
{
    free(g_out);
    free(g_err);
    g_out = g_err = NULL;
    unlink(g_env.out);
    unlink(g_env.err);
    pid_t pid = spawn("psctl", args, g_env.out, g_env.err);
    int st = wait_exit(pid, RUN_MS);
    if (st == -1) {
        kill(pid, SIGKILL);
        wait_exit(pid, 5000);
    }
    g_out = file_text(g_env.out);
    g_err = file_text(g_env.err);
    ck_assert_msg(st >= 0, "psctl did not finish within %d ms", RUN_MS);
    ck_assert_msg(!strstr(g_err, "Sanitizer") && !strstr(g_err, "runtime error:"),
                  "sanitizer report from psctl:\n%s", g_err);
    return st;
}

/* Write the placement: ps0 and ps1 on the given ports, two workers, the
 * job ending after max_steps versions. */
static void conf_write_steps(const char *path, int port0, int port1, int max_steps)
{
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": %d},\n"
                     " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},\n"
                     " \"nodes\": [\n"
                     "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                     "  {\"id\": \"ps1\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                     "  {\"id\": \"w0\", \"address\": \"127.0.0.1\", \"role\": \"worker\"},\n"
                     "  {\"id\": \"w1\", \"address\": \"127.0.0.1\", \"role\": \"worker\"}]}\n",
                     max_steps, port0, port1);
    ck_assert(n > 0 && (size_t)n < sizeof text);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)text, (size_t)n, 0), 0);
}

/* The same with max_steps 100 (the cluster of cluster_start runs on). */
static void conf_write(const char *path, int port0, int port1)
{
    conf_write_steps(path, port0, port1, 100);
}

/* Start shard i and wait until it accepts connections. */
static void shard_start(int i)
{
    ctl_env *e = &g_env;
    const char *args[] = {"--placement", e->conf, "--node", i ? "ps1" : "ps0",
                          "--state-dir", e->state, NULL};
    e->pid[i] = spawn("psd", args, e->log[i], e->log[i]);
    double end = psc_now() + 10;
    for (;;) {
        psd_client probe;
        if (psc_connect(&probe, e->port[i], 0, READ_MS) == 0) {
            psc_close(&probe);
            return;
        }
        int st = wait_exit(e->pid[i], 0);
        if (st != -1) {
            e->pid[i] = -1;
            char *l = file_text(e->log[i]);
            ck_abort_msg("psd ps%d exited with %d before listening:\n%s", i, st, l);
        }
        ck_assert_msg(psc_now() < end, "psd ps%d did not start listening", i);
        usleep(20000);
    }
}

/* Kill shard i now (SIGKILL: no final checkpoint, like a crashed box). */
static void shard_kill(int i)
{
    if (g_env.pid[i] > 0) {
        kill(g_env.pid[i], SIGKILL);
        wait_exit(g_env.pid[i], 5000);
        g_env.pid[i] = -1;
    }
}

static void env_setup(void)
{
    ctl_env *e = &g_env;
    memset(e, 0, sizeof(*e));
    e->pid[0] = e->pid[1] = -1;
    ck_assert_int_eq(fixtures_tmpdir_make(e->dir, sizeof e->dir), 0);
    g_env_ready = 1;
    ck_assert_int_eq(fixtures_path_join(e->conf, sizeof e->conf, e->dir, "p.conf"), 0);
    ck_assert_int_eq(fixtures_path_join(e->state, sizeof e->state, e->dir, "state"), 0);
    ck_assert_int_eq(fixtures_path_join(e->log[0], sizeof e->log[0], e->dir, "psd0.log"), 0);
    ck_assert_int_eq(fixtures_path_join(e->log[1], sizeof e->log[1], e->dir, "psd1.log"), 0);
    ck_assert_int_eq(fixtures_path_join(e->out, sizeof e->out, e->dir, "psctl.out"), 0);
    ck_assert_int_eq(fixtures_path_join(e->err, sizeof e->err, e->dir, "psctl.err"), 0);
    e->port[0] = psc_free_port();
    do
        e->port[1] = psc_free_port();
    while (e->port[1] == e->port[0]);
    conf_write(e->conf, e->port[0], e->port[1]);
}

static void env_teardown(void)
{
    if (!g_env_ready)
        return;
    for (int i = 0; i < 2; i++)
        shard_kill(i);
    fixtures_tmpdir_remove(g_env.dir);
    g_env_ready = 0;
    free(g_out);
    free(g_err);
    g_out = g_err = NULL;
}

/* Both shards up; shard 0 at version 1, shard 1 at version 2, and one
 * REPORT from w0 on shard 0 (step 42, 91.25 %, loss 0.3125). */
static void cluster_start(void)
{
    shard_start(0);
    shard_start(1);
    static float g[NP];
    for (int i = 0; i < NP; i++)
        g[i] = (float)((i % 7) - 3) * 0.125f;
    const uint64_t lo[2] = {0, SPLIT}, hi[2] = {SPLIT, NP};
    for (int s = 0; s < 2; s++) {
        psd_client c;
        proto_welcome w;
        ck_assert_int_eq(psc_connect(&c, g_env.port[s], 2000, READ_MS), 0);
        int rc = psc_hello(&c, PROTO_ROLE_WORKER, "w0", "ray", NP, &w);
        ck_assert_msg(rc == 0, "HELLO shard %d: %d %s", s, rc, c.last_error.text);
        ck_assert_uint_eq(w.lo, lo[s]);
        ck_assert_uint_eq(w.hi, hi[s]);
        for (int k = 0; k <= s; k++) {
            proto_ack a;
            ck_assert_int_eq(psc_push(&c, (uint64_t)k + 1, (uint64_t)k, (uint64_t)k + 1, lo[s],
                                      hi[s], g + lo[s], &a),
                             0);
            ck_assert_uint_eq(a.status, PROTO_ACK_APPLIED);
            ck_assert_uint_eq(a.version, (uint64_t)k + 1);
        }
        if (s == 0) {
            proto_report r = {.step = 42, .samples = 1344, .elapsed_s = 12.5,
                              .test_acc = 0.9125, .test_loss = 0.3125};
            uint64_t v;
            ck_assert_int_eq(psc_report(&c, &r, &v), 0);
            ck_assert_uint_eq(v, 1);
        }
        psc_close(&c);
    }
}

/* The line of stdout that starts with prefix, as a malloc'd string. */
static char *out_line(const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *p = g_out; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len >= pl && strncmp(p, prefix, pl) == 0)
            return strndup(p, len);
        p = nl ? nl + 1 : p + len;
    }
    return NULL;
}

/* Cell k of a table line: cells are separated by two or more spaces.
 * Returns a malloc'd string, "" past the end. */
static char *cell(const char *line, int k)
{
    const char *p = line;
    for (int i = 0;; i++) {
        const char *e = strstr(p, "  ");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (i == k)
            return strndup(p, len);
        if (!e)
            return strdup("");
        p = e;
        while (*p == ' ')
            p++;
    }
}

static void assert_cell(const char *line, int k, const char *want)
{
    ck_assert_ptr_nonnull(line);
    char *c = cell(line, k);
    ck_assert_msg(strcmp(c, want) == 0, "cell %d of \"%s\" is \"%s\", not \"%s\"", k, line, c,
                  want);
    free(c);
}

static const cJSON *obj(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "no key \"%s\"", k);
    return v;
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_status_table)
{
    cluster_start();
    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_out, "SHARD") && strstr(g_out, "VERSION"), "no header:\n%s", g_out);
    char addr[64];
    char *l0 = out_line("0 ");
    char *l1 = out_line("1 ");
    ck_assert_msg(l0 && l1, "a shard line is missing:\n%s", g_out);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_env.port[0]);
    ck_assert_msg(strstr(l0, "ps0") && strstr(l0, addr) && strstr(l0, "[0, 976)") &&
                      strstr(l0, "async"),
                  "shard 0 line: %s", l0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_env.port[1]);
    ck_assert_msg(strstr(l1, "ps1") && strstr(l1, addr) && strstr(l1, "[976, 1960)"),
                  "shard 1 line: %s", l1);
    /* SHARD NODE ADDRESS RANGE VERSION MODE ... LAST CHECKPOINT */
    assert_cell(l0, 3, "[0, 976)");
    assert_cell(l0, 4, "1");
    assert_cell(l1, 3, "[976, 1960)");
    assert_cell(l1, 4, "2");
    assert_cell(l0, 10, "never");
    free(l0);
    free(l1);
    /* w0 pushed to both shards: one merged worker line */
    char *w = out_line("w0 ");
    ck_assert_msg(w != NULL, "no worker line:\n%s", g_out);
    /* WORKER ADDRESS CONNECTED STEP ...: disconnected now, step 2 on shard 1 */
    assert_cell(w, 2, "0/2");
    assert_cell(w, 3, "2");
    free(w);
    w = out_line("w1 ");
    ck_assert_ptr_null(w);
}
END_TEST

START_TEST(test_status_json)
{
    cluster_start();
    const char *args[] = {"status", "--json", "--placement", g_env.conf, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    const cJSON *shards = obj(doc, "shards");
    ck_assert_int_eq(cJSON_GetArraySize(shards), 2);
    for (int s = 0; s < 2; s++) {
        const cJSON *o = cJSON_GetArrayItem(shards, s);
        ck_assert_int_eq((int)obj(o, "shard")->valuedouble, s);
        ck_assert_int_eq((int)obj(o, "version")->valuedouble, s + 1);
        ck_assert_str_eq(obj(o, "node")->valuestring, s ? "ps1" : "ps0");
        ck_assert_str_eq(obj(o, "mode")->valuestring, "async");
        const cJSON *ws = obj(o, "workers");
        ck_assert_int_eq(cJSON_GetArraySize(ws), 1);
        ck_assert_str_eq(obj(cJSON_GetArrayItem(ws, 0), "id")->valuestring, "w0");
    }
    ck_assert_int_eq(cJSON_GetArraySize(obj(doc, "unreachable")), 0);
    cJSON_Delete(doc);
}
END_TEST

START_TEST(test_accuracy)
{
    cluster_start();
    const char *args[] = {"--placement", g_env.conf, "accuracy", NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_out, "ACCURACY") && strstr(g_out, "LOSS"), "header:\n%s", g_out);
    char *l = out_line("42 ");
    ck_assert_msg(l != NULL, "no line for step 42:\n%s", g_out);
    ck_assert_msg(strstr(l, "91.25%") && strstr(l, "0.3125") && strstr(l, "12s") &&
                      strstr(l, "w0"),
                  "report line: %s", l);
    free(l);

    const char *jargs[] = {"--placement", g_env.conf, "accuracy", "--json", NULL};
    st = run_psctl(jargs);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    const cJSON *h = obj(doc, "history");
    ck_assert_int_eq(cJSON_GetArraySize(h), 1);
    const cJSON *r = cJSON_GetArrayItem(h, 0);
    ck_assert_int_eq((int)obj(r, "step")->valuedouble, 42);
    ck_assert_double_eq_tol(obj(r, "test_acc")->valuedouble, 0.9125, 1e-12);
    ck_assert_double_eq_tol(obj(r, "test_loss")->valuedouble, 0.3125, 1e-12);
    ck_assert_double_eq_tol(obj(r, "elapsed_s")->valuedouble, 12.5, 1e-12);
    cJSON_Delete(doc);
}
END_TEST

START_TEST(test_checkpoint)
{
    cluster_start();
    char ck0[FIXTURES_PATH_MAX + 32], ck1[FIXTURES_PATH_MAX + 32];
    snprintf(ck0, sizeof ck0, "%s/shard0.ckpt", g_env.state);
    snprintf(ck1, sizeof ck1, "%s/shard1.ckpt", g_env.state);
    struct stat sb;
    ck_assert_int_ne(stat(ck0, &sb), 0);
    ck_assert_int_ne(stat(ck1, &sb), 0);
    const char *args[] = {"--placement", g_env.conf, "checkpoint", NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_out, "shard 0: checkpoint at version 1\n") &&
                      strstr(g_out, "shard 1: checkpoint at version 2\n"),
                  "output:\n%s", g_out);
    ck_assert_int_eq(stat(ck0, &sb), 0);
    ck_assert_int_eq(stat(ck1, &sb), 0);
    /* status now shows the checkpoint */
    const char *sargs[] = {"--placement", g_env.conf, "status", NULL};
    ck_assert_int_eq(run_psctl(sargs), 0);
    char *l1 = out_line("1 ");
    ck_assert_msg(l1 && strstr(l1, "version 2, "), "shard 1 line: %s", l1 ? l1 : g_out);
    free(l1);
}
END_TEST

START_TEST(test_unreachable)
{
    cluster_start();
    shard_kill(1);
    char addr1[64];
    snprintf(addr1, sizeof addr1, "127.0.0.1:%d", g_env.port[1]);

    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    char *l0 = out_line("0 ");
    char *l1 = out_line("1 ");
    ck_assert_msg(l0 != NULL, "shard 0 still printed:\n%s", g_out);
    assert_cell(l0, 4, "1");
    ck_assert_msg(l1 && strstr(l1, addr1) && strstr(l1, "UNREACHABLE") &&
                      strstr(l1, "connection refused"),
                  "shard 1 named:\n%s", g_out);
    free(l0);
    free(l1);
    ck_assert_msg(strstr(g_err, "shard 1") && strstr(g_err, addr1), "stderr:\n%s", g_err);
    char *w = out_line("w0 ");
    ck_assert_msg(w != NULL, "workers of shard 0 still printed:\n%s", g_out);
    free(w);

    const char *jargs[] = {"--placement", g_env.conf, "status", "--json", NULL};
    st = run_psctl(jargs);
    ck_assert_int_eq(st, 1);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    ck_assert_int_eq(cJSON_GetArraySize(obj(doc, "shards")), 1);
    ck_assert_int_eq((int)obj(cJSON_GetArrayItem(obj(doc, "shards"), 0), "shard")->valuedouble,
                     0);
    const cJSON *un = obj(doc, "unreachable");
    ck_assert_int_eq(cJSON_GetArraySize(un), 1);
    const cJSON *u = cJSON_GetArrayItem(un, 0);
    ck_assert_int_eq((int)obj(u, "shard")->valuedouble, 1);
    ck_assert_str_eq(obj(u, "address")->valuestring, addr1);
    ck_assert_str_eq(obj(u, "error")->valuestring, "connection refused");
    cJSON_Delete(doc);

    const char *cargs[] = {"--placement", g_env.conf, "checkpoint", NULL};
    st = run_psctl(cargs);
    ck_assert_int_eq(st, 1);
    ck_assert_msg(strstr(g_out, "shard 0: checkpoint at version 1\n"), "output:\n%s", g_out);
    ck_assert_msg(strstr(g_err, "shard 1") && strstr(g_err, "connection refused"), "stderr:\n%s",
                  g_err);

    /* accuracy asks shard 0, which is up */
    const char *aargs[] = {"--placement", g_env.conf, "accuracy", NULL};
    ck_assert_int_eq(run_psctl(aargs), 0);
    shard_kill(0);
    ck_assert_int_eq(run_psctl(aargs), 1);
    ck_assert_msg(strstr(g_err, "shard 0") && strstr(g_err, "connection refused"), "stderr:\n%s",
                  g_err);
}
END_TEST

/* A shard whose port accepts connections (the kernel's backlog) but never
 * answers: psctl gives up after --timeout and names it. */
START_TEST(test_timeout)
{
    shard_start(0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    socklen_t sl = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    conf_write(g_env.conf, g_env.port[0], ntohs(a.sin_port));
    const char *args[] = {"--placement", g_env.conf, "--timeout", "300", "status", NULL};
    double t0 = psc_now();
    int st = run_psctl(args);
    double dt = psc_now() - t0;
    close(fd);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(dt < 5.0, "took %.1f s with --timeout 300", dt);
    char *l0 = out_line("0 ");
    ck_assert_msg(l0 != NULL, "shard 0 printed:\n%s", g_out);
    free(l0);
    ck_assert_msg(strstr(g_err, "shard 1") && strstr(g_err, "timed out after 300 ms"),
                  "stderr:\n%s", g_err);
}
END_TEST

/* Both shards hang: they are asked at once, so psctl needs one timeout,
 * not one per shard (asked one after the other it would need 3 s). */
START_TEST(test_concurrent)
{
    int fds[2], ports[2];
    for (int i = 0; i < 2; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(fds[i], 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(bind(fds[i], (struct sockaddr *)&a, sizeof a), 0);
        ck_assert_int_eq(listen(fds[i], 4), 0);
        socklen_t sl = sizeof a;
        ck_assert_int_eq(getsockname(fds[i], (struct sockaddr *)&a, &sl), 0);
        ports[i] = ntohs(a.sin_port);
    }
    conf_write(g_env.conf, ports[0], ports[1]);
    const char *args[] = {"--placement", g_env.conf, "--timeout", "1500", "checkpoint", NULL};
    double t0 = psc_now();
    int st = run_psctl(args);
    double dt = psc_now() - t0;
    close(fds[0]);
    close(fds[1]);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(dt >= 1.4 && dt < 2.7, "took %.2f s with --timeout 1500 and 2 shards", dt);
    ck_assert_msg(strstr(g_out, "shard 0: FAILED") && strstr(g_out, "shard 1: FAILED") &&
                      strstr(g_out, "timed out after 1500 ms"),
                  "output:\n%s", g_out);
}
END_TEST

/* Shard 1's port is served by a psd of another job (lenet): it answers the
 * HELLO with ERROR MODEL, and psctl names it with the shard's reason. */
START_TEST(test_refused)
{
    shard_start(0);
    char other[FIXTURES_PATH_MAX + 16], state1[FIXTURES_PATH_MAX + 16];
    snprintf(other, sizeof other, "%s/lenet.conf", g_env.dir);
    snprintf(state1, sizeof state1, "%s/state1", g_env.dir);
    conf_write(other, psc_free_port(), g_env.port[1]);
    char *text = file_text(other);
    char *m = strstr(text, "\"ray\"");
    ck_assert_ptr_nonnull(m);
    *m = '\0';
    char *lenet = NULL; /* "ray" -> "lenet" */
    ck_assert_int_gt(asprintf(&lenet, "%s\"lenet\"%s", text, m + 5), 0);
    ck_assert_int_eq(fixtures_file_write(other, (const uint8_t *)lenet, strlen(lenet), 0), 0);
    free(lenet);
    free(text);
    const char *args1[] = {"--placement", other, "--node", "ps1", "--state-dir", state1, NULL};
    g_env.pid[1] = spawn("psd", args1, g_env.log[1], g_env.log[1]);
    double end = psc_now() + 10;
    for (;;) {
        psd_client probe;
        if (psc_connect(&probe, g_env.port[1], 0, READ_MS) == 0) {
            psc_close(&probe);
            break;
        }
        ck_assert_msg(psc_now() < end, "lenet psd did not start");
        usleep(20000);
    }
    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    char *l0 = out_line("0 ");
    char *l1 = out_line("1 ");
    ck_assert_msg(l0 != NULL, "shard 0 printed:\n%s", g_out);
    assert_cell(l0, 4, "0");
    ck_assert_msg(l1 && strstr(l1, "FAILED: handshake refused: model mismatch") &&
                      strstr(l1, "lenet"),
                  "shard 1 line:\n%s", g_out);
    free(l0);
    free(l1);
    const char *cargs[] = {"--placement", g_env.conf, "checkpoint", NULL};
    ck_assert_int_eq(run_psctl(cargs), 1);
    ck_assert_msg(strstr(g_out, "shard 0: checkpoint at version 0\n"), "output:\n%s", g_out);
    ck_assert_msg(strstr(g_err, "shard 1") && strstr(g_err, "model mismatch"), "stderr:\n%s",
                  g_err);
}
END_TEST

/* Shard 1's port is served by something that is not psd: it writes an
 * HTTP error.  psctl reports a bad frame, prints shard 0, exits 1. */
START_TEST(test_not_psd)
{
    shard_start(0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    socklen_t sl = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    conf_write(g_env.conf, g_env.port[0], ntohs(a.sin_port));
    pid_t parent = getpid();
    pid_t srv = fork();
    ck_assert_int_ge(srv, 0);
    if (srv == 0) { /* answer one connection with garbage, then linger */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        alarm(20);
        int c = accept(fd, NULL, NULL);
        static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
        if (c >= 0 && write(c, junk, sizeof junk - 1) < 0)
            _exit(1);
        sleep(5);
        _exit(0);
    }
    const char *args[] = {"--placement", g_env.conf, "status", "--json", NULL};
    int st = run_psctl(args);
    kill(srv, SIGKILL);
    wait_exit(srv, 5000);
    close(fd);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    ck_assert_int_eq(cJSON_GetArraySize(obj(doc, "shards")), 1);
    const cJSON *un = obj(doc, "unreachable");
    ck_assert_int_eq(cJSON_GetArraySize(un), 1);
    const char *e = obj(cJSON_GetArrayItem(un, 0), "error")->valuestring;
    ck_assert_msg(strstr(e, "bad frame") != NULL, "error: %s", e);
    cJSON_Delete(doc);
}
END_TEST

START_TEST(test_cli)
{
    const char *help[] = {"--help", NULL};
    ck_assert_int_eq(run_psctl(help), 0);
    ck_assert_msg(strstr(g_out, "usage: psctl") && strstr(g_out, "export FILE") &&
                      strstr(g_out, "eval FILE"),
                  "help:\n%s", g_out);
    static const char *const cmds[] = {"status", "accuracy", "checkpoint", "export", "eval"};
    for (size_t i = 0; i < 5; i++) {
        const char *ch[] = {cmds[i], "--help", NULL};
        ck_assert_int_eq(run_psctl(ch), 0);
        char want[64];
        snprintf(want, sizeof want, " %s", cmds[i]);
        ck_assert_msg(strncmp(g_out, "usage: psctl", 12) == 0 && strstr(g_out, want),
                      "%s --help:\n%s", cmds[i], g_out);
    }
    const char *eh[] = {"--help", "eval", NULL};
    ck_assert_int_eq(run_psctl(eh), 0);
    ck_assert_msg(strstr(g_out, "--test-images") && strstr(g_out, "test_acc="), "%s", g_out);

    const char *const bad[][6] = {
        {NULL},                                         /* no command */
        {"frob", NULL},                                 /* unknown command */
        {"status", "extra", NULL},                      /* stray argument */
        {"--bogus", "status", NULL},                    /* unknown option */
        {"status", "--placement", NULL},                /* option without its value */
        {"--timeout", "0", "status", NULL},             /* out of range */
        {"--timeout", "12ms", "status", NULL},          /* not a number */
        {"--timeout", "", "status", NULL},              /* empty */
        {"--placement", "", "status", NULL},            /* empty path */
        {"checkpoint", "--json", NULL},                 /* --json is not for checkpoint */
        {"export", NULL},                               /* no FILE */
        {"eval", NULL},                                 /* no FILE */
        {"export", "a", "b", NULL},                     /* two FILEs */
        {"export", "", NULL},                           /* empty FILE */
        {"status", "--test-images", "x", NULL},         /* an eval option */
        {"export", "f", "--threads", "2", NULL},        /* an eval option */
        {"eval", "f", "--threads", "0", NULL},          /* out of range */
        {"eval", "f", "--timeout", "100", NULL},        /* eval asks no shard */
        {"eval", "f", "--test-images", "x", NULL},      /* images without labels */
        {"eval", "f", "--test-labels", "x", NULL},      /* labels without images */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = run_psctl(bad[i]);
        ck_assert_msg(st == 2, "case %zu (%s): exit %d", i, bad[i][0] ? bad[i][0] : "-", st);
        ck_assert_msg(strstr(g_err, "psctl: ") != NULL, "case %zu: no message", i);
    }

    const char *missing[] = {"--placement", "/nonexistent/p.conf", "status", NULL};
    ck_assert_int_eq(run_psctl(missing), 1);
    ck_assert_msg(strstr(g_err, "/nonexistent/p.conf"), "stderr:\n%s", g_err);
    ck_assert_str_eq(g_out, "");

    const char *badconf = "{\"job\": {\"model\": \"ray\"}}";
    ck_assert_int_eq(
        fixtures_file_write(g_env.conf, (const uint8_t *)badconf, strlen(badconf), 0), 0);
    const char *bc[] = {"--placement", g_env.conf, "checkpoint", NULL};
    ck_assert_int_eq(run_psctl(bc), 1);
    ck_assert_msg(strstr(g_err, g_env.conf), "stderr:\n%s", g_err);
}
END_TEST

/* ------------------------------------------------------ export and eval */

/* Pull [lo, hi) from the shard on port (as an operator). */
static uint64_t pull_range(int port, uint64_t lo, uint64_t hi, float *out)
{
    psd_client c;
    proto_welcome w;
    ck_assert_int_eq(psc_connect(&c, port, 2000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "check.pull", "ray", NP, &w), 0);
    ck_assert_uint_eq(w.lo, lo);
    ck_assert_uint_eq(w.hi, hi);
    uint64_t v;
    int nm;
    ck_assert_int_eq(psc_pull(&c, 0, lo, hi, &v, &nm, out), 0);
    ck_assert_int_eq(nm, 0);
    psc_close(&c);
    return v;
}

static void model_path(char *out, size_t outlen, const char *name)
{
    ck_assert_int_eq(fixtures_path_join(out, outlen, g_env.dir, name), 0);
}

START_TEST(test_export)
{
    cluster_start();
    char file[FIXTURES_PATH_MAX];
    model_path(file, sizeof file, "ray.psdm");
    const char *args[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    char want[FIXTURES_PATH_MAX + 128];
    snprintf(want, sizeof want, "exported ray (1,960 parameters, versions 1/2) to %s\n", file);
    ck_assert_str_eq(g_out, want);
    /* async shards at versions 1 and 2: exported, with a warning */
    ck_assert_msg(strstr(g_err, "warning: the shards are at different versions (1/2)") &&
                      strstr(g_err, "async"),
                  "stderr:\n%s", g_err);

    /* the file holds exactly what the shards serve */
    static float w[NP];
    uint64_t v0 = pull_range(g_env.port[0], 0, SPLIT, w);
    uint64_t v1 = pull_range(g_env.port[1], SPLIT, NP, w + SPLIT);
    ck_assert_uint_eq(v0, 1);
    ck_assert_uint_eq(v1, 2);
    modelfile mf;
    cnn_model m;
    char err[1024];
    ck_assert_msg(modelfile_load(file, &mf, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(mf.model, "ray");
    ck_assert_uint_eq(mf.nparams, NP);
    ck_assert_int_eq(memcmp(mf.params, w, sizeof w), 0);
    ck_assert_uint_eq(mf.nshards, 2);
    ck_assert_str_eq(mf.shards[0].node, "ps0");
    ck_assert_str_eq(mf.shards[1].node, "ps1");
    ck_assert_uint_eq(mf.shards[0].lo, 0);
    ck_assert_uint_eq(mf.shards[0].hi, SPLIT);
    ck_assert_uint_eq(mf.shards[1].lo, SPLIT);
    ck_assert_uint_eq(mf.shards[1].hi, NP);
    ck_assert_uint_eq(mf.shards[0].version, 1);
    ck_assert_uint_eq(mf.shards[1].version, 2);
    ck_assert(mf.mean == DATASET_MNIST_MEAN && mf.std == DATASET_MNIST_STD);
    time_t now = time(NULL);
    ck_assert_msg(mf.created_unix <= now && mf.created_unix > now - 60, "created %lld",
                  (long long)mf.created_unix);
    modelfile_free(&mf);

    /* --json; overwriting the file */
    const char *jargs[] = {"--placement", g_env.conf, "export", "--json", file, NULL};
    st = run_psctl(jargs);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    ck_assert(cJSON_IsTrue(obj(doc, "exported")));
    ck_assert_str_eq(obj(doc, "file")->valuestring, file);
    ck_assert_str_eq(obj(doc, "model")->valuestring, "ray");
    ck_assert_int_eq((int)obj(doc, "nparams")->valuedouble, NP);
    ck_assert(cJSON_IsFalse(obj(doc, "versions_equal")));
    struct stat sb;
    ck_assert_int_eq(stat(file, &sb), 0);
    ck_assert_int_eq((int)obj(doc, "bytes")->valuedouble, (int)sb.st_size);
    const cJSON *sh = obj(doc, "shards");
    ck_assert_int_eq(cJSON_GetArraySize(sh), 2);
    for (int s = 0; s < 2; s++) {
        const cJSON *o = cJSON_GetArrayItem(sh, s);
        ck_assert_int_eq((int)obj(o, "shard")->valuedouble, s);
        ck_assert_int_eq((int)obj(o, "version")->valuedouble, s + 1);
        ck_assert_int_eq((int)obj(o, "lo")->valuedouble, s ? SPLIT : 0);
    }
    ck_assert_int_eq(cJSON_GetArraySize(obj(doc, "unreachable")), 0);
    cJSON_Delete(doc);
}
END_TEST

/* Shards at one version: no warning. */
START_TEST(test_export_same_version)
{
    shard_start(0);
    shard_start(1);
    char file[FIXTURES_PATH_MAX];
    model_path(file, sizeof file, "fresh.psdm");
    const char *args[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_out, "versions 0/0) to "), "%s", g_out);
    ck_assert_msg(!strstr(g_err, "warning"), "stderr:\n%s", g_err);
    /* a fresh job holds the seeded initialisation */
    modelfile mf;
    cnn_model m;
    char err[1024];
    ck_assert_msg(modelfile_load(file, &mf, &m, err, sizeof err) == 0, "%s", err);
    static float init[NP];
    cnn_params_init(&m, 1, init, 0, NP);
    ck_assert_int_eq(memcmp(mf.params, init, sizeof init), 0);
    modelfile_free(&mf);
}
END_TEST

/* A shard down: it is named, nothing is written, an older file stays. */
START_TEST(test_export_unreachable)
{
    cluster_start();
    shard_kill(1);
    char addr1[64], file[FIXTURES_PATH_MAX];
    snprintf(addr1, sizeof addr1, "127.0.0.1:%d", g_env.port[1]);
    model_path(file, sizeof file, "m.psdm");
    const char *args[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_err, "shard 1") && strstr(g_err, addr1) &&
                      strstr(g_err, "connection refused") && strstr(g_err, "nothing written"),
                  "stderr:\n%s", g_err);
    ck_assert_str_eq(g_out, "");
    struct stat sb;
    ck_assert_int_ne(stat(file, &sb), 0);

    static const uint8_t old[] = "an older export";
    ck_assert_int_eq(fixtures_file_write(file, old, sizeof old, 0), 0);
    const char *jargs[] = {"--placement", g_env.conf, "export", file, "--json", NULL};
    st = run_psctl(jargs);
    ck_assert_int_eq(st, 1);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    ck_assert(cJSON_IsFalse(obj(doc, "exported")));
    ck_assert_msg(strstr(obj(doc, "error")->valuestring, "nothing written"), "%s", g_out);
    const cJSON *un = obj(doc, "unreachable");
    ck_assert_int_eq(cJSON_GetArraySize(un), 1);
    ck_assert_str_eq(obj(cJSON_GetArrayItem(un, 0), "address")->valuestring, addr1);
    cJSON_Delete(doc);
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(fixtures_file_read(file, &b, &n), 0);
    ck_assert_uint_eq(n, sizeof old);
    ck_assert_int_eq(memcmp(b, old, n), 0);
    free(b);
    /* no temporary file left behind either */
    DIR *d = opendir(g_env.dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        ck_assert_msg(!strstr(de->d_name, ".tmp"), "left behind: %s", de->d_name);
    closedir(d);
}
END_TEST

/* Shard 1's port is served by a psd of a three-shard placement of the same
 * model: it answers, but its range is not the rest of the model. */
START_TEST(test_export_not_tiling)
{
    shard_start(0);
    char other[FIXTURES_PATH_MAX + 16], state1[FIXTURES_PATH_MAX + 16];
    snprintf(other, sizeof other, "%s/three.conf", g_env.dir);
    snprintf(state1, sizeof state1, "%s/state1", g_env.dir);
    char text[2048];
    int len = snprintf(text, sizeof text,
                       "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": 100},\n"
                       " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},\n"
                       " \"nodes\": [\n"
                       "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                       "  {\"id\": \"ps1\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                       "  {\"id\": \"ps2\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                       "  {\"id\": \"w0\", \"address\": \"127.0.0.1\", \"role\": \"worker\"}]}\n",
                       psc_free_port(), g_env.port[1], psc_free_port());
    ck_assert_int_eq(fixtures_file_write(other, (const uint8_t *)text, (size_t)len, 0), 0);
    const char *args1[] = {"--placement", other, "--node", "ps1", "--state-dir", state1, NULL};
    g_env.pid[1] = spawn("psd", args1, g_env.log[1], g_env.log[1]);
    double end = psc_now() + 10;
    for (;;) {
        psd_client probe;
        if (psc_connect(&probe, g_env.port[1], 0, READ_MS) == 0) {
            psc_close(&probe);
            break;
        }
        ck_assert_msg(psc_now() < end, "three-shard psd did not start");
        usleep(20000);
    }
    char file[FIXTURES_PATH_MAX];
    model_path(file, sizeof file, "m.psdm");
    const char *args[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 1, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_err, "do not tile [0, 1960): shard 1 (ps1") &&
                      strstr(g_err, "holds [656, 1312)") && strstr(g_err, "ends at 976"),
                  "stderr:\n%s", g_err);
    struct stat sb;
    ck_assert_int_ne(stat(file, &sb), 0);
}
END_TEST

/* What an in-process evaluation of the model file gives: the same engine
 * path as psctl (batches of 256, one thread), written independently. */
static void eval_inproc(const char *file, const char *img, const char *lbl, size_t *n,
                        size_t *correct, double *loss_mean)
{
    char err[1024];
    modelfile mf;
    cnn_model m;
    ck_assert_msg(modelfile_load(file, &mf, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    dataset ds;
    ck_assert_msg(dataset_load(&ds, img, lbl, mf.mean, mf.std, err, sizeof err) == 0, "%s",
                  err);
    cnn_engine *e = cnn_engine_new(&m, kern_active(), 1, 256, err, sizeof err);
    ck_assert_msg(e != NULL, "%s", err);
    size_t in = (size_t)m.in_h * m.in_w;
    float *x = malloc(ds.n * in * sizeof(float));
    uint8_t *y = malloc(ds.n);
    uint32_t *idx = malloc(ds.n * sizeof(*idx));
    ck_assert(x && y && idx);
    for (size_t i = 0; i < ds.n; i++)
        idx[i] = (uint32_t)i;
    dataset_gather(&ds, idx, ds.n, x, y);
    double loss = 0;
    cnn_engine_eval(e, mf.params, x, y, ds.n, &loss, correct);
    *n = ds.n;
    *loss_mean = loss / (double)ds.n;
    free(idx);
    free(y);
    free(x);
    cnn_engine_free(e);
    dataset_free(&ds);
    modelfile_free(&mf);
}

/* The value of key=... in psctl's eval line. */
static double eval_field(const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(g_out, pat);
    ck_assert_msg(p != NULL, "no %s in:\n%s", key, g_out);
    return strtod(p + strlen(pat), NULL);
}

/* Run psctl eval on file and compare with eval_inproc. */
static void eval_check(const char *file, const char *img, const char *lbl, double min_acc)
{
    size_t n, correct;
    double loss;
    eval_inproc(file, img, lbl, &n, &correct, &loss);
    double acc = 100.0 * (double)correct / (double)n;
    ck_assert_msg(acc >= min_acc, "in-process accuracy %.2f%% < %.2f%%", acc, min_acc);
    if (min_acc > 0)
        fprintf(stderr, "eval test: %s: %.2f%% on %zu synthetic digits\n", file, acc, n);

    const char *args[] = {"eval", file, "--test-images", img, "--test-labels", lbl, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    char want[64];
    snprintf(want, sizeof want, " test_acc=%.2f\n", acc);
    ck_assert_msg(strstr(g_out, want) != NULL, "expected%s in:\n%s", want, g_out);
    ck_assert_msg(strncmp(g_out, "model=ray ", 10) == 0, "%s", g_out);
    ck_assert_double_eq(eval_field("n"), (double)n);
    ck_assert_double_eq(eval_field("correct"), (double)correct);
    ck_assert_double_eq_tol(eval_field("test_loss"), loss, 6e-5);

    const char *jargs[] = {"eval", "--json", "--threads", "2", file, "--test-images", img,
                           "--test-labels", lbl, NULL};
    st = run_psctl(jargs);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_msg(doc != NULL, "not JSON:\n%s", g_out);
    ck_assert_str_eq(obj(doc, "model")->valuestring, "ray");
    ck_assert_str_eq(obj(doc, "file")->valuestring, file);
    ck_assert_int_eq((int)obj(doc, "n")->valuedouble, (int)n);
    ck_assert_int_eq((int)obj(doc, "correct")->valuedouble, (int)correct);
    ck_assert_double_eq_tol(obj(doc, "test_acc")->valuedouble, acc, 1e-9);
    ck_assert_double_eq_tol(obj(doc, "test_loss")->valuedouble, loss, 1e-4 * (1 + loss));
    ck_assert_int_eq((int)obj(doc, "threads")->valuedouble, 2);
    ck_assert_str_eq(obj(doc, "test_images")->valuestring, img);
    cJSON_Delete(doc);
}

/* Train ray in-process on synthetic digits (plain SGD with momentum) and
 * save it as a model file: a model worth evaluating. */
static void trained_model_write(const char *file)
{
    char err[1024];
    cnn_model m;
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof err), 0);
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    const kern_ops *k = kern_active();
    dataset train;
    ck_assert_int_eq(fixtures_synth_dataset(&train, 2000, 11), 0);
    cnn_engine *e = cnn_engine_new(&m, k, 1, 32, err, sizeof err);
    ck_assert_msg(e != NULL, "%s", err);
    float *p = malloc(NP * sizeof(float)), *g = malloc(NP * sizeof(float));
    float *mom = calloc(NP, sizeof(float)), *x = malloc(32 * 784 * sizeof(float));
    uint8_t y[32];
    uint32_t idx[32];
    ck_assert(p && g && mom && x);
    cnn_params_init(&m, 3, p, 0, NP);
    for (int ep = 0; ep < 2; ep++)
        for (size_t off = 0; off + 32 <= train.n; off += 32) {
            for (int i = 0; i < 32; i++)
                idx[i] = (uint32_t)(off + (size_t)i);
            dataset_gather(&train, idx, 32, x, y);
            cnn_engine_grad(e, p, x, y, 32, g, NULL, NULL);
            k->sgd_step(p, mom, g, NP, 0.05f, 0.9f, 0);
        }
    modelfile mf = {.nparams = NP, .mean = DATASET_MNIST_MEAN, .std = DATASET_MNIST_STD,
                    .created_unix = 1795692115, .nshards = 1, .params = p};
    snprintf(mf.model, sizeof mf.model, "ray");
    modelfile_shard one = {.shard = 0, .lo = 0, .hi = NP, .version = 124};
    mf.shards = &one;
    ck_assert_msg(modelfile_save(file, &mf, NULL, err, sizeof err) == 0, "%s", err);
    free(p);
    free(g);
    free(mom);
    free(x);
    cnn_engine_free(e);
    dataset_free(&train);
}

START_TEST(test_eval)
{
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], file[FIXTURES_PATH_MAX],
        trained[FIXTURES_PATH_MAX];
    ck_assert_int_eq(fixtures_synth_write(g_env.dir, "t10k", 500, 7, 1, img, lbl, sizeof img), 0);
    /* the weights of a running cluster, exported */
    cluster_start();
    model_path(file, sizeof file, "cluster.psdm");
    const char *args[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    eval_check(file, img, lbl, 0);
    /* a trained model: well above chance */
    model_path(trained, sizeof trained, "trained.psdm");
    trained_model_write(trained);
    eval_check(trained, img, lbl, 90);
}
END_TEST

/* eval without --test-images/--test-labels takes the placement's test set
 * (relative paths resolved against the placement's directory). */
START_TEST(test_eval_placement_test_set)
{
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], file[FIXTURES_PATH_MAX];
    ck_assert_int_eq(fixtures_synth_write(g_env.dir, "t10k", 300, 8, 0, img, lbl, sizeof img), 0);
    model_path(file, sizeof file, "trained.psdm");
    trained_model_write(file);
    char conf[FIXTURES_PATH_MAX + 16], text[2048];
    snprintf(conf, sizeof conf, "%s/eval.conf", g_env.dir);
    int len = snprintf(text, sizeof text,
                       "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": 100},\n"
                       " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\",\n"
                       "          \"test_images\": \"t10k-images-idx3-ubyte\",\n"
                       "          \"test_labels\": \"t10k-labels-idx1-ubyte\"},\n"
                       " \"nodes\": [\n"
                       "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": 1, \"role\": \"ps\"},\n"
                       "  {\"id\": \"w0\", \"address\": \"127.0.0.1\", \"role\": \"worker\"}]}\n");
    ck_assert_int_eq(fixtures_file_write(conf, (const uint8_t *)text, (size_t)len, 0), 0);
    size_t n, correct;
    double loss;
    eval_inproc(file, img, lbl, &n, &correct, &loss);
    const char *args[] = {"--placement", conf, "eval", file, NULL};
    int st = run_psctl(args);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    char want[64];
    snprintf(want, sizeof want, " n=300 correct=%zu ", correct);
    ck_assert_msg(strstr(g_out, want), "expected%s in:\n%s", want, g_out);

    /* a placement without a test set (g_env.conf) says so */
    const char *nargs[] = {"--placement", g_env.conf, "eval", file, NULL};
    ck_assert_int_eq(run_psctl(nargs), 1);
    ck_assert_msg(strstr(g_err, "no data.test_images/test_labels") && strstr(g_err, g_env.conf),
                  "stderr:\n%s", g_err);
    ck_assert_str_eq(g_out, "");
}
END_TEST

START_TEST(test_eval_errors)
{
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX], file[FIXTURES_PATH_MAX];
    model_path(file, sizeof file, "trained.psdm");
    trained_model_write(file);

    /* 20x20 images: not what ray takes */
    static uint8_t px[10 * 20 * 20], lb[10];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 7);
    model_path(img, sizeof img, "small-images");
    model_path(lbl, sizeof lbl, "small-labels");
    ck_assert_int_eq(fixtures_write_idx_images(img, px, 10, 20, 20, 0), 0);
    ck_assert_int_eq(fixtures_write_idx_labels(lbl, lb, 10, 0), 0);
    const char *a1[] = {"eval", file, "--test-images", img, "--test-labels", lbl, NULL};
    ck_assert_int_eq(run_psctl(a1), 1);
    ck_assert_msg(strstr(g_err, "images are 20x20, model ray takes 1x28x28") &&
                      strstr(g_err, img),
                  "stderr:\n%s", g_err);
    ck_assert_str_eq(g_out, "");

    /* a missing test file is named */
    char good_img[FIXTURES_PATH_MAX], good_lbl[FIXTURES_PATH_MAX];
    ck_assert_int_eq(
        fixtures_synth_write(g_env.dir, "t", 50, 9, 0, good_img, good_lbl, sizeof good_img), 0);
    const char *a2[] = {"eval", file, "--test-images", "/nonexistent/imgs", "--test-labels",
                        good_lbl, NULL};
    ck_assert_int_eq(run_psctl(a2), 1);
    ck_assert_msg(strstr(g_err, "/nonexistent/imgs"), "stderr:\n%s", g_err);

    /* a missing model file */
    const char *a3[] = {"eval", "/nonexistent/m.psdm", "--test-images", good_img,
                        "--test-labels", good_lbl, NULL};
    ck_assert_int_eq(run_psctl(a3), 1);
    ck_assert_msg(strstr(g_err, "/nonexistent/m.psdm") && strstr(g_err, "No such file"),
                  "stderr:\n%s", g_err);

    /* a corrupt model file: one flipped byte in the floats */
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(fixtures_file_read(file, &b, &n), 0);
    b[n - 100] ^= 0x10;
    ck_assert_int_eq(fixtures_file_write(file, b, n, 0), 0);
    const char *a4[] = {"eval", file, "--test-images", good_img, "--test-labels", good_lbl,
                        NULL};
    ck_assert_int_eq(run_psctl(a4), 1);
    ck_assert_msg(strstr(g_err, file) && strstr(g_err, "CRC mismatch"), "stderr:\n%s", g_err);
    /* truncated */
    ck_assert_int_eq(fixtures_file_write(file, b, n / 2, 0), 0);
    ck_assert_int_eq(run_psctl(a4), 1);
    ck_assert_msg(strstr(g_err, "truncated"), "stderr:\n%s", g_err);
    /* not a model file at all (an IDX file) */
    const char *a5[] = {"eval", good_img, "--test-images", good_img, "--test-labels", good_lbl,
                        NULL};
    ck_assert_int_eq(run_psctl(a5), 1);
    ck_assert_msg(strstr(g_err, "not a psd model file"), "stderr:\n%s", g_err);
    free(b);
}
END_TEST

/* ------------------------------------------------------------- job state */

/* A fake shard on listening socket fd: answers every connection's HELLO
 * with a WELCOME for [lo, hi) of ray and its STATUS_REQ with json.  Runs in
 * a child until killed; returns its pid. */
static pid_t fake_shard_start(int fd, uint64_t lo, uint64_t hi, const char *json)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    alarm(60);
    static uint8_t in[65536], out[PROTO_STATUS_MAX + 64];
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            _exit(1);
        size_t have = 0;
        int replies = 0;
        while (replies < 2) {
            proto_frame f;
            int r = proto_frame_parse(in, have, PROTO_MAX_FRAME, &f);
            if (r < 0)
                break;
            if (r == 0) {
                ssize_t got = read(c, in + have, sizeof in - have);
                if (got <= 0)
                    break;
                have += (size_t)got;
                continue;
            }
            size_t len = 0;
            if (f.hdr.type == PROTO_MSG_HELLO) {
                proto_welcome w = {.role = PROTO_ROLE_SHARD, .nparams = NP, .lo = lo, .hi = hi};
                snprintf(w.node_id, sizeof w.node_id, "fake");
                snprintf(w.model, sizeof w.model, "ray");
                proto_welcome_encode(&w, f.hdr.request_id, out, sizeof out, &len);
            } else {
                proto_status stt = {.json = json, .len = strlen(json)};
                proto_status_encode(&stt, f.hdr.request_id, out, sizeof out, &len);
            }
            if (write(c, out, len) != (ssize_t)len)
                break;
            replies++;
            memmove(in, in + r, have - (size_t)r);
            have -= (size_t)r;
        }
        close(c);
    }
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    socklen_t sl = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Run status (table and --json) against two fake shards with these STATUS
 * documents. */
static void status_fake(const char *json0, const char *json1, cJSON **doc)
{
    int ports[2], fds[2];
    pid_t pids[2];
    fds[0] = listen_any(&ports[0]);
    fds[1] = listen_any(&ports[1]);
    pids[0] = fake_shard_start(fds[0], 0, SPLIT, json0);
    pids[1] = fake_shard_start(fds[1], SPLIT, NP, json1);
    conf_write(g_env.conf, ports[0], ports[1]);
    const char *jargs[] = {"--placement", g_env.conf, "status", "--json", NULL};
    int st = run_psctl(jargs);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    *doc = cJSON_Parse(g_out);
    ck_assert_msg(*doc != NULL, "not JSON:\n%s", g_out);
    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    st = run_psctl(args);
    for (int i = 0; i < 2; i++) {
        kill(pids[i], SIGKILL);
        wait_exit(pids[i], 5000);
        close(fds[i]);
    }
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
}

START_TEST(test_status_job_real)
{
    cluster_start();
    /* does this psd report the job's state yet? */
    psd_client c;
    proto_welcome w;
    ck_assert_int_eq(psc_connect(&c, g_env.port[0], 2000, READ_MS), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "check", "", 0, &w), 0);
    char *js = NULL;
    ck_assert_int_eq(psc_status(&c, &js), 0);
    psc_close(&c);
    cJSON *sd = cJSON_Parse(js);
    free(js);
    ck_assert_ptr_nonnull(sd);
    int has_job = cJSON_IsObject(cJSON_GetObjectItem(sd, "job"));
    cJSON_Delete(sd);

    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    ck_assert_int_eq(run_psctl(args), 0);
    char *jl = out_line("job:");
    const char *jargs[] = {"--placement", g_env.conf, "status", "--json", NULL};
    ck_assert_int_eq(run_psctl(jargs), 0);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_ptr_nonnull(doc);
    const cJSON *job = obj(doc, "job");
    if (has_job) { /* a fresh async job with max_steps 100 at versions 1 and 2 */
        ck_assert_msg(jl && strcmp(jl, "job: running") == 0, "job line: %s", jl ? jl : "none");
        ck_assert_str_eq(obj(job, "state")->valuestring, "running");
        ck_assert(cJSON_IsTrue(obj(job, "agree")));
    } else {
        ck_assert_msg(jl == NULL, "job line without job state: %s", jl);
        ck_assert(cJSON_IsNull(job));
    }
    free(jl);
    cJSON_Delete(doc);
}
END_TEST

/* max_steps 2: cluster_start leaves shard 1 at version 2 (finished) and
 * shard 0 at version 1 (running): real shards that disagree.  Export still
 * reads a finished shard. */
START_TEST(test_status_job_finished_real)
{
    conf_write_steps(g_env.conf, g_env.port[0], g_env.port[1], 2);
    time_t t0 = time(NULL);
    cluster_start();
    const char *jargs[] = {"--placement", g_env.conf, "status", "--json", NULL};
    ck_assert_int_eq(run_psctl(jargs), 0);
    cJSON *doc = cJSON_Parse(g_out);
    ck_assert_ptr_nonnull(doc);
    const cJSON *s1 = cJSON_GetArrayItem(obj(doc, "shards"), 1);
    if (!cJSON_IsObject(cJSON_GetObjectItem(s1, "job"))) { /* psd without job state */
        cJSON_Delete(doc);
        return;
    }
    const cJSON *job = obj(doc, "job");
    ck_assert_str_eq(obj(job, "state")->valuestring, "finished");
    ck_assert_str_eq(obj(job, "reason")->valuestring, "max_steps 2 reached");
    ck_assert_int_eq((int)obj(job, "shard")->valuedouble, 1);
    ck_assert_int_eq((int)obj(job, "version")->valuedouble, 2);
    ck_assert(cJSON_IsFalse(obj(job, "agree")));
    double fin = obj(job, "finished_unix")->valuedouble;
    ck_assert_msg(fin >= (double)t0 && fin <= (double)time(NULL), "finished_unix %.0f", fin);
    cJSON_Delete(doc);

    const char *args[] = {"--placement", g_env.conf, "status", NULL};
    ck_assert_int_eq(run_psctl(args), 0);
    char when[64], want[256];
    time_t ft = (time_t)fin;
    struct tm tm;
    ck_assert_ptr_nonnull(localtime_r(&ft, &tm));
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(want, sizeof want,
             "job: finished (max_steps 2 reached) at %s, version 2 (shards disagree: running "
             "on 0; finished on 1)",
             when);
    char *jl = out_line("job:");
    ck_assert_msg(jl && strcmp(jl, want) == 0, "job line \"%s\", want \"%s\"", jl, want);
    free(jl);

    char file[FIXTURES_PATH_MAX];
    model_path(file, sizeof file, "final.psdm");
    const char *eargs[] = {"--placement", g_env.conf, "export", file, NULL};
    int st = run_psctl(eargs);
    ck_assert_msg(st == 0, "exit %d\n%s%s", st, g_out, g_err);
    ck_assert_msg(strstr(g_out, "versions 1/2) to "), "%s", g_out);
}
END_TEST

#define STATUS_BASE "\"node\": \"fake\", \"version\": 1234, \"mode\": \"sync\", \"workers\": []"

START_TEST(test_status_job_fake)
{
    static const char fin[] =
        "{" STATUS_BASE ", \"shard\": 0, \"job\": {\"state\": \"finished\", \"reason\": "
        "\"all 2 workers done\", \"finished_unix\": 1795694401, \"version\": 1234}}";
    static const char run[] =
        "{" STATUS_BASE ", \"shard\": 1, \"job\": {\"state\": \"running\", \"reason\": null, "
        "\"finished_unix\": null, \"version\": 1233}}";
    static const char old[] = "{" STATUS_BASE ", \"shard\": 1}";
    char when[64];
    time_t t = 1795694401;
    struct tm tm;
    ck_assert_ptr_nonnull(localtime_r(&t, &tm));
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    char want[256];
    cJSON *doc;

    /* both finished */
    status_fake(fin, fin, &doc);
    snprintf(want, sizeof want, "job: finished (all 2 workers done) at %s, version 1234", when);
    char *jl = out_line("job:");
    ck_assert_msg(jl && strcmp(jl, want) == 0, "job line \"%s\", want \"%s\"", jl, want);
    free(jl);
    const cJSON *job = obj(doc, "job");
    ck_assert_str_eq(obj(job, "state")->valuestring, "finished");
    ck_assert_str_eq(obj(job, "reason")->valuestring, "all 2 workers done");
    ck_assert_double_eq(obj(job, "finished_unix")->valuedouble, 1795694401);
    ck_assert_double_eq(obj(job, "version")->valuedouble, 1234);
    ck_assert(cJSON_IsTrue(obj(job, "agree")));
    ck_assert_int_eq(cJSON_GetArraySize(obj(obj(job, "shards"), "finished")), 2);
    cJSON_Delete(doc);

    /* disagreeing: finished wins, and the line says who says what */
    status_fake(run, fin, &doc);
    snprintf(want, sizeof want,
             "job: finished (all 2 workers done) at %s, version 1234 (shards disagree: "
             "running on 0; finished on 1)",
             when);
    jl = out_line("job:");
    ck_assert_msg(jl && strcmp(jl, want) == 0, "job line \"%s\", want \"%s\"", jl, want);
    free(jl);
    job = obj(doc, "job");
    ck_assert_str_eq(obj(job, "state")->valuestring, "finished");
    ck_assert_int_eq((int)obj(job, "shard")->valuedouble, 1);
    ck_assert(cJSON_IsFalse(obj(job, "agree")));
    cJSON_Delete(doc);

    /* running on one, nothing from an older shard */
    status_fake(run, old, &doc);
    jl = out_line("job:");
    ck_assert_msg(jl && strcmp(jl, "job: running (shards disagree: running on 0; no job state "
                                   "from 1)") == 0,
                  "job line \"%s\"", jl);
    free(jl);
    cJSON_Delete(doc);

    /* older shards only: no job line, "job": null */
    status_fake(old, old, &doc);
    jl = out_line("job:");
    ck_assert_msg(jl == NULL, "job line \"%s\"", jl);
    ck_assert(cJSON_IsNull(obj(doc, "job")));
    cJSON_Delete(doc);
}
END_TEST

/* ------------------------------------------------------------ cluster key */

/* path := the placement g_env.conf with "auth": {"key_file": key}. */
static void conf_keyed(const char *path, const char *plain, const char *key)
{
    char *t = file_text(plain);
    size_t n = strlen(t);
    ck_assert(n > 3 && strcmp(t + n - 3, "]}\n") == 0);
    t[n - 3] = 0;
    char *u = NULL;
    ck_assert_int_gt(asprintf(&u, "%s],\n \"auth\": {\"key_file\": \"%s\"}}\n", t, key), 0);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)u, strlen(u), 0), 0);
    free(t);
    free(u);
}

/* keygen; the shards with a key: status and export work with it, and psctl
 * without it, with another key, or with a key file others can read fails
 * with a message. */
START_TEST(test_key)
{
    char key[FIXTURES_PATH_MAX + 16], other[FIXTURES_PATH_MAX + 16];
    char plain[FIXTURES_PATH_MAX + 16], wrong[FIXTURES_PATH_MAX + 16];
    char model[FIXTURES_PATH_MAX + 16];
    snprintf(key, sizeof key, "%s/cluster.key", g_env.dir);
    snprintf(other, sizeof other, "%s/other.key", g_env.dir);
    snprintf(plain, sizeof plain, "%s/plain.conf", g_env.dir);
    snprintf(wrong, sizeof wrong, "%s/wrong.conf", g_env.dir);
    snprintf(model, sizeof model, "%s/m.psdm", g_env.dir);

    const char *kg[] = {"keygen", key, NULL};
    ck_assert_int_eq(run_psctl(kg), 0);
    ck_assert_msg(strstr(g_out, "wrote a new cluster key to ") && strstr(g_out, "mode 0600"), "%s",
                  g_out);
    struct stat st;
    ck_assert_int_eq(stat(key, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    ck_assert_int_eq((int)st.st_size, 65);
    char *k1 = file_text(key);
    ck_assert_int_eq(run_psctl(kg), 1);
    ck_assert_msg(strstr(g_err, "not overwritten"), "%s", g_err);
    char *k2 = file_text(key);
    ck_assert_str_eq(k1, k2); /* untouched */
    free(k2);
    const char *kg2[] = {"keygen", other, NULL};
    ck_assert_int_eq(run_psctl(kg2), 0);
    k2 = file_text(other);
    ck_assert_str_ne(k1, k2); /* random */
    free(k1);
    free(k2);
    const char *u1[] = {"keygen", NULL};
    ck_assert_int_eq(run_psctl(u1), 2);
    const char *u2[] = {"keygen", "--json", other, NULL};
    ck_assert_int_eq(run_psctl(u2), 2);
    const char *u3[] = {"--placement", g_env.conf, "keygen", "x.key", NULL};
    ck_assert_int_eq(run_psctl(u3), 2);
    const char *u4[] = {"keygen", "a", "b", NULL};
    ck_assert_int_eq(run_psctl(u4), 2);

    /* the cluster with the key */
    char *t = file_text(g_env.conf);
    ck_assert_int_eq(fixtures_file_write(plain, (const uint8_t *)t, strlen(t), 0), 0);
    free(t);
    conf_keyed(wrong, plain, "other.key");
    conf_keyed(g_env.conf, plain, "cluster.key");
    shard_start(0);
    shard_start(1);
    const char *sa[] = {"--placement", g_env.conf, "status", NULL};
    int rc = run_psctl(sa);
    ck_assert_msg(rc == 0, "exit %d\n%s%s", rc, g_out, g_err);
    char *l0 = out_line("0 ");
    char *l1 = out_line("1 ");
    ck_assert_msg(l0 && l1 && !strstr(g_out, "FAILED"), "%s", g_out);
    free(l0);
    free(l1);
    const char *ea[] = {"--placement", g_env.conf, "export", model, NULL};
    rc = run_psctl(ea);
    ck_assert_msg(rc == 0 && strstr(g_out, "exported ray"), "exit %d\n%s%s", rc, g_out, g_err);
    const char *ca[] = {"--placement", g_env.conf, "checkpoint", NULL};
    ck_assert_int_eq(run_psctl(ca), 0);

    /* without the key, with another key */
    const char *pa[] = {"--placement", plain, "status", NULL};
    ck_assert_int_eq(run_psctl(pa), 1);
    ck_assert_msg(strstr(g_err, "shard 0") && strstr(g_err, "this cluster requires the key"),
                  "%s", g_err);
    const char *wa[] = {"--placement", wrong, "status", NULL};
    ck_assert_int_eq(run_psctl(wa), 1);
    ck_assert_msg(strstr(g_err, "the shard's proof does not match our cluster key"), "%s", g_err);
    /* a key file others can read */
    ck_assert_int_eq(chmod(key, 0604), 0);
    ck_assert_int_eq(run_psctl(sa), 1);
    ck_assert_msg(strstr(g_err, "mode 0604 lets others read") && strstr(g_err, "chmod 600"), "%s",
                  g_err);
    ck_assert_str_eq(g_out, "");
}
END_TEST

Suite *psctl_suite(void)
{
    Suite *s = suite_create("psctl");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, env_setup, env_teardown);
    tcase_add_test(tc, test_cli);
    tcase_add_test(tc, test_key);
    tcase_add_test(tc, test_status_table);
    tcase_add_test(tc, test_status_json);
    tcase_add_test(tc, test_accuracy);
    tcase_add_test(tc, test_checkpoint);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_concurrent);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_not_psd);
    tcase_add_test(tc, test_export);
    tcase_add_test(tc, test_export_same_version);
    tcase_add_test(tc, test_export_unreachable);
    tcase_add_test(tc, test_export_not_tiling);
    tcase_add_test(tc, test_eval);
    tcase_add_test(tc, test_eval_placement_test_set);
    tcase_add_test(tc, test_eval_errors);
    tcase_add_test(tc, test_status_job_real);
    tcase_add_test(tc, test_status_job_finished_real);
    tcase_add_test(tc, test_status_job_fake);
    suite_add_tcase(s, tc);
    return s;
}
