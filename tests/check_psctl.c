/* check_psctl.c - psctl, the operator's tool, against two real psd shards.
 *
 * Each test writes a two-shard "ray" placement (async) on ephemeral
 * 127.0.0.1 ports, starts $PSD_BIN/psd for ps0 and ps1, moves the shards to
 * different versions with the blocking test client (tests/psd_client.h),
 * sends a REPORT to shard 0, and then runs $PSD_BIN/psctl and checks its
 * output and exit status: status (table and --json), accuracy, checkpoint,
 * a killed shard, a shard that never answers (timeout), and the command
 * line.
 *
 * Every process is started with PR_SET_PDEATHSIG, waited for with a
 * deadline and killed in the teardown, so a failing test neither hangs nor
 * leaves a daemon behind.
 */
#include <arpa/inet.h>
#include <check.h>
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

#include "fixtures.h"
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

/* Write the placement: ps0 and ps1 on the given ports, two workers. */
static void conf_write(const char *path, int port0, int port1)
{
    char text[2048];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"ray\", \"mode\": \"async\", \"max_steps\": 100},\n"
                     " \"data\": {\"train_images\": \"a\", \"train_labels\": \"b\"},\n"
                     " \"nodes\": [\n"
                     "  {\"id\": \"ps0\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                     "  {\"id\": \"ps1\", \"address\": \"127.0.0.1\", \"port\": %d, \"role\": \"ps\"},\n"
                     "  {\"id\": \"w0\", \"address\": \"127.0.0.1\", \"role\": \"worker\"},\n"
                     "  {\"id\": \"w1\", \"address\": \"127.0.0.1\", \"role\": \"worker\"}]}\n",
                     port0, port1);
    ck_assert(n > 0 && (size_t)n < sizeof text);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)text, (size_t)n, 0), 0);
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
    ck_assert_msg(strstr(g_out, "usage: psctl"), "help:\n%s", g_out);

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

Suite *psctl_suite(void)
{
    Suite *s = suite_create("psctl");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, env_setup, env_teardown);
    tcase_add_test(tc, test_cli);
    tcase_add_test(tc, test_status_table);
    tcase_add_test(tc, test_status_json);
    tcase_add_test(tc, test_accuracy);
    tcase_add_test(tc, test_checkpoint);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_concurrent);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_not_psd);
    suite_add_tcase(s, tc);
    return s;
}
