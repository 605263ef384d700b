/* check_cluster.c - real clusters on 127.0.0.1: $PSD_BIN/psd shards and
 * $PSD_BIN/workerd --placement workers on free ports, training "ray" on a
 * small synthetic digit set (tests/fixtures.h): async and sync with two
 * shards and two workers, sync with one shard and one worker giving the
 * same weights as workerd --standalone, two shards giving the same weights
 * as one, the end of the job (all workers done, max_steps, target
 * accuracy: final checkpoint, "finished" in the status), evaluation
 * intervals, a worker started before its shard, SIGTERM, and
 * placement/data errors.
 *
 * Every process is started with PR_SET_PDEATHSIG, waited for with a
 * timeout and SIGKILLed in the teardown, so a failing test neither hangs
 * nor leaves a daemon behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fixtures.h"
#include "proto.h"
#include "psd_client.h"

#define NP 1960 /* ray */
#define MAXPROC 8
#define RUN_MS 120000 /* a training run must end within this */

typedef struct cluster {
    char dir[FIXTURES_PATH_MAX];
    char conf[FIXTURES_PATH_MAX];
    char train_img[FIXTURES_PATH_MAX], train_lbl[FIXTURES_PATH_MAX];
    char test_img[FIXTURES_PATH_MAX], test_lbl[FIXTURES_PATH_MAX];
    int nshards, nworkers;
    int port[2];
    pid_t psd[2];
    pid_t worker[2];
} cluster;

static cluster g_cl;
static pid_t g_pids[MAXPROC];

/* Momentum of the job's SGD: async workers apply each other's gradients
 * with a step of delay, which 0.9 does not survive at lr 0.05. */
static const char *g_momentum = "0.9";


static void pid_track(pid_t pid)
{
    for (int i = 0; i < MAXPROC; i++)
        if (g_pids[i] <= 0) {
            g_pids[i] = pid;
            return;
        }
}

static void pid_untrack(pid_t pid)
{
    for (int i = 0; i < MAXPROC; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
}

/* Wait up to ms for pid: its exit status, 128+signal, or -1 if running. */
static int wait_exit(pid_t pid, int ms)
{
    double end = psc_now() + ms / 1000.0;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            pid_untrack(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 && errno == ECHILD)
            return -2;
        if (psc_now() > end)
            return -1;
        usleep(20000);
    }
}

static void cluster_teardown(void)
{
    for (int i = 0; i < MAXPROC; i++)
        if (g_pids[i] > 0) {
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
    if (g_cl.dir[0])
        fixtures_tmpdir_remove(g_cl.dir);
    memset(&g_cl, 0, sizeof g_cl);
    g_momentum = "0.9";
}

/* Start $PSD_BIN/<prog> with args (NULL-terminated); stdout and stderr go
 * to the file log.  The pid is tracked for teardown. */
static pid_t spawn(const char *prog, const char *const *args, const char *log)
{
    pid_t pid = psc_spawn(prog, args, log, log);
    ck_assert_int_gt(pid, 0);
    pid_track(pid);
    return pid;
}

static char *file_text(const char *path)
{
    uint8_t *b = NULL;
    size_t n = 0;
    if (access(path, F_OK) != 0 || fixtures_file_read(path, &b, &n) != 0)
        return strdup("");
    char *s = malloc(n + 1);
    memcpy(s, b, n);
    s[n] = '\0';
    free(b);
    return s;
}

static void log_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s.log", g_cl.dir, name);
}

/* Data and ports; the placement is written by conf_write. */
static void cluster_init(int nshards, int nworkers)
{
    memset(&g_cl, 0, sizeof g_cl);
    ck_assert_int_eq(fixtures_tmpdir_make(g_cl.dir, sizeof g_cl.dir), 0);
    ck_assert_int_eq(fixtures_path_join(g_cl.conf, sizeof g_cl.conf, g_cl.dir, "p.conf"), 0);
    ck_assert_int_eq(fixtures_synth_write(g_cl.dir, "train", 1200, 11, 1, g_cl.train_img,
                                          g_cl.train_lbl, FIXTURES_PATH_MAX),
                     0);
    ck_assert_int_eq(fixtures_synth_write(g_cl.dir, "test", 400, 12, 0, g_cl.test_img,
                                          g_cl.test_lbl, FIXTURES_PATH_MAX),
                     0);
    g_cl.nshards = nshards;
    g_cl.nworkers = nworkers;
    for (int s = 0; s < nshards; s++) {
        g_cl.port[s] = psc_free_port();
        ck_assert_int_gt(g_cl.port[s], 0);
        if (s == 1 && g_cl.port[1] == g_cl.port[0])
            g_cl.port[1] = psc_free_port();
    }
}

/* The placement: ps0..ps<n-1>, w0..w<n-1> (w0 evaluates). */
static void conf_write(const char *mode, const char *job_extra)
{
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "{\"job\": {\"model\": \"ray\", \"mode\": \"%s\", \"batch\": 32, "
                     "\"seed\": 7, \"barrier_timeout_ms\": 20000, "
                     "\"optimizer\": {\"lr\": 0.05, \"momentum\": %s, \"schedule\": \"constant\"}"
                     "%s%s},\n"
                     " \"data\": {\"train_images\": \"%s\", \"train_labels\": \"%s\",\n"
                     "          \"test_images\": \"%s\", \"test_labels\": \"%s\"},\n"
                     " \"nodes\": [\n",
                     mode, g_momentum, job_extra ? ", " : "", job_extra ? job_extra : "", g_cl.train_img,
                     g_cl.train_lbl, g_cl.test_img, g_cl.test_lbl);
    if (strcmp(mode, "sync") != 0) {
        /* barrier_timeout_ms is for sync only */
        char *b = strstr(text, "\"barrier_timeout_ms\": 20000, ");
        if (b)
            memmove(b, b + strlen("\"barrier_timeout_ms\": 20000, "),
                    strlen(b + strlen("\"barrier_timeout_ms\": 20000, ")) + 1);
        n = (int)strlen(text);
    }
    for (int s = 0; s < g_cl.nshards; s++)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "  {\"id\": \"ps%d\", \"address\": \"127.0.0.1\", \"port\": %d, "
                      "\"role\": \"ps\"},\n",
                      s, g_cl.port[s]);
    for (int w = 0; w < g_cl.nworkers; w++)
        n += snprintf(text + n, sizeof text - (size_t)n,
                      "  {\"id\": \"w%d\", \"address\": \"127.0.0.1\", \"role\": \"worker\", "
                      "\"threads\": 1%s}%s\n",
                      w, w == 0 ? ", \"evaluate\": true" : "",
                      w + 1 < g_cl.nworkers ? "," : "");
    n += snprintf(text + n, sizeof text - (size_t)n, " ]}\n");
    ck_assert(n > 0 && (size_t)n < sizeof text);
    ck_assert_int_eq(fixtures_file_write(g_cl.conf, (const uint8_t *)text, (size_t)n, 0), 0);
}

static void psd_start_args(int s, int wait_listen, int fresh)
{
    char node[16], state[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "ps%d", s);
    snprintf(state, sizeof state, "%s/state%d", g_cl.dir, s);
    log_path(log, sizeof log, node);
    const char *args[] = {"--placement", g_cl.conf, "--node", node, "--state-dir", state,
                          fresh ? "--fresh" : NULL, NULL};
    g_cl.psd[s] = spawn("psd", args, log);
    if (!wait_listen)
        return;
    double end = psc_now() + 10;
    for (;;) {
        psd_client probe;
        if (psc_connect(&probe, g_cl.port[s], 0, 2000) == 0) {
            psc_close(&probe);
            return;
        }
        int st = wait_exit(g_cl.psd[s], 0);
        if (st >= 0) {
            char *l = file_text(log);
            ck_abort_msg("psd %d exited with %d before listening:\n%s", s, st, l);
        }
        ck_assert_msg(psc_now() < end, "psd %d did not start listening", s);
        usleep(20000);
    }
}

static void psd_start(int s, int wait_listen)
{
    psd_start_args(s, wait_listen, 1);
}

static pid_t worker_start(int w, const char *extra)
{
    char node[16], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "w%d", w);
    log_path(log, sizeof log, node);
    const char *args[] = {"--placement", g_cl.conf, "--node", node, extra, NULL};
    g_cl.worker[w] = spawn("workerd", args, log);
    return g_cl.worker[w];
}

/* Wait for worker w to exit; assert status 0 and return its log (caller
 * frees). */
static char *worker_wait_ok(int w, int ms)
{
    char node[16], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "w%d", w);
    log_path(log, sizeof log, node);
    int st = wait_exit(g_cl.worker[w], ms);
    char *l = file_text(log);
    ck_assert_msg(st == 0, "workerd %s exited with %d:\n%s", node, st, l);
    ck_assert_msg(!strstr(l, "Sanitizer") && !strstr(l, "runtime error:"),
                  "sanitizer report:\n%s", l);
    return l;
}

/* The last "test_acc=" value in a log, or -1. */
static double last_test_acc(const char *l)
{
    double acc = -1;
    for (const char *p = strstr(l, "test_acc="); p; p = strstr(p + 1, "test_acc="))
        acc = strtod(p + strlen("test_acc="), NULL);
    return acc;
}

static int count_lines(const char *l, const char *what)
{
    int n = 0;
    for (const char *p = strstr(l, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* Shard s's STATUS, parsed (caller cJSON_Delete()s it). */
static cJSON *shard_status(int s)
{
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[s], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    char *json = NULL;
    ck_assert_int_eq(psc_status(&c, &json), 0);
    psc_close(&c);
    cJSON *j = cJSON_Parse(json);
    ck_assert_msg(j != NULL, "status is not JSON: %s", json);
    free(json);
    return j;
}

/* Shard s's whole range of weights; *version gets its version. */
static void shard_weights(int s, size_t lo, size_t hi, float *out, uint64_t *version)
{
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[s], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    int nm = 0;
    ck_assert_int_eq(psc_pull(&c, 0, lo, hi, version, &nm, out), 0);
    psc_close(&c);
}

/* Assert shard s says the job finished for a reason containing `why`, at
 * `version` (0: any), and wrote its final checkpoint at that version. */
static void expect_finished(int s, const char *why, uint64_t version)
{
    cJSON *j = shard_status(s);
    const cJSON *job = cJSON_GetObjectItemCaseSensitive(j, "job");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(job, "state");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(job, "reason");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(job, "version");
    char *txt = cJSON_PrintUnformatted(j);
    ck_assert_msg(cJSON_IsString(st) && strcmp(st->valuestring, "finished") == 0,
                  "shard %d: %s", s, txt);
    ck_assert_msg(cJSON_IsString(reason) && strstr(reason->valuestring, why), "shard %d: %s", s,
                  txt);
    ck_assert_msg(cJSON_IsNumber(v) && (version == 0 || (uint64_t)v->valuedouble == version),
                  "shard %d, want version %llu: %s", s, (unsigned long long)version, txt);
    const cJSON *ck = cJSON_GetObjectItemCaseSensitive(j, "last_checkpoint");
    const cJSON *cv = cJSON_GetObjectItemCaseSensitive(ck, "version");
    ck_assert_msg(cJSON_IsNumber(cv) && cv->valuedouble == v->valuedouble,
                  "shard %d: no final checkpoint: %s", s, txt);
    free(txt);
    cJSON_Delete(j);
}

/* Two shards, two workers, 2 epochs in `mode`: both exit 0, w0 learns. */
static void two_by_two(const char *mode, const char *job)
{
    cluster_init(2, 2);
    conf_write(mode, job);
    psd_start(0, 1);
    psd_start(1, 1);
    worker_start(0, NULL);
    worker_start(1, NULL);
    char *l0 = worker_wait_ok(0, RUN_MS);
    char *l1 = worker_wait_ok(1, RUN_MS);
    ck_assert_msg(count_lines(l0, "epoch=") == 2, "w0 log:\n%s", l0);
    ck_assert_msg(count_lines(l1, "epoch=") == 2, "w1 log:\n%s", l1);
    ck_assert_msg(strstr(l1, "test_acc=") == NULL, "w1 does not evaluate:\n%s", l1);
    double acc = last_test_acc(l0);
    ck_assert_msg(acc > 50.0, "w0's test accuracy %.2f%% is not far above chance:\n%s", acc, l0);
    /* shard 0 got w0's REPORTs */
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[0], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    char *json = NULL;
    ck_assert_int_eq(psc_status(&c, &json), 0);
    ck_assert_msg(strstr(json, "w0") && strstr(json, "w1"), "status: %s", json);
    ck_assert_msg(count_lines(json, "\"test_acc\"") == 2, "two REPORTs from w0: %s", json);
    free(json);
    psc_close(&c);
    /* both workers said DONE: the job is finished on both shards */
    ck_assert_msg(strstr(l0, "all epochs done") && strstr(l1, "all epochs done"), "%s\n%s", l0,
                  l1);
    expect_finished(0, "all 2 workers done", 0);
    expect_finished(1, "all 2 workers done", 0);
    free(l0);
    free(l1);
}

START_TEST(test_async_two_shards_two_workers)
{
    g_momentum = "0.5";
    two_by_two("async", "\"epochs\": 2");
}
END_TEST

START_TEST(test_sync_two_shards_two_workers)
{
    two_by_two("sync", "\"epochs\": 2");
}
END_TEST

START_TEST(test_ssp_two_shards_two_workers)
{
    g_momentum = "0.5";
    two_by_two("ssp", "\"epochs\": 2, \"staleness\": 1");
}
END_TEST

/* A shard that stops mid-run (SIGTERM: it checkpoints) and comes back:
 * the worker reconnects, carries on from the shard's version, finishes. */
START_TEST(test_shard_restart)
{
    g_momentum = "0.5";
    cluster_init(2, 1);
    conf_write("async", "\"epochs\": 500");
    psd_start(0, 1);
    psd_start(1, 1);
    worker_start(0, NULL);
    char log[FIXTURES_PATH_MAX + 32];
    log_path(log, sizeof log, "w0");
    double end = psc_now() + 20;
    for (;;) {
        char *l = file_text(log);
        int up = strstr(l, "epoch=") != NULL;
        free(l);
        if (up)
            break;
        ck_assert_msg(psc_now() < end, "w0 did not finish an epoch");
        ck_assert_int_eq(wait_exit(g_cl.worker[0], 0), -1);
        usleep(20000);
    }
    kill(g_cl.psd[1], SIGTERM);
    ck_assert_int_eq(wait_exit(g_cl.psd[1], 10000), 0);
    usleep(700000);
    ck_assert_int_eq(wait_exit(g_cl.worker[0], 0), -1); /* still waiting for shard 1 */
    psd_start_args(1, 1, 0); /* resumes from its checkpoint */
    char *l = worker_wait_ok(0, RUN_MS);
    ck_assert_msg(count_lines(l, "epoch=") == 500, "%s", l);
    ck_assert_msg(strstr(l, "retrying"), "%s", l);
    ck_assert_msg(count_lines(l, "shard 1 (127.0.0.1") >= 3, "%s", l);
    double acc = last_test_acc(l);
    ck_assert_msg(acc > 50.0, "accuracy %.2f after the restart", acc);
    free(l);
}
END_TEST

/* Sync with one shard and one worker is the standalone run, step for step. */
START_TEST(test_sync_equals_standalone)
{
    cluster_init(1, 1);
    conf_write("sync", "\"epochs\": 2");
    psd_start(0, 1);
    worker_start(0, NULL);
    char *l0 = worker_wait_ok(0, RUN_MS);

    float *dist = calloc(NP, sizeof(float));
    float *alone = calloc(NP, sizeof(float));
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[0], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    uint64_t version = 0;
    int nm = 0;
    ck_assert_int_eq(psc_pull(&c, 0, 0, NP, &version, &nm, dist), 0);
    psc_close(&c);
    ck_assert_int_eq((int)version, 2 * ((1200 + 31) / 32));

    char wpath[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/alone.f32", g_cl.dir);
    log_path(log, sizeof log, "alone");
    const char *args[] = {"--standalone", "--model", "ray", "--train-images", g_cl.train_img,
                          "--train-labels", g_cl.train_lbl, "--epochs", "2", "--batch", "32",
                          "--lr", "0.05", "--momentum", "0.9", "--schedule", "constant",
                          "--seed", "7", "--threads", "1", "--save-weights", wpath, NULL};
    pid_t pid = spawn("workerd", args, log);
    int st = wait_exit(pid, RUN_MS);
    char *la = file_text(log);
    ck_assert_msg(st == 0, "standalone exited with %d:\n%s", st, la);
    uint8_t *raw = NULL;
    size_t n = 0;
    ck_assert_int_eq(fixtures_file_read(wpath, &raw, &n), 0);
    ck_assert_int_eq((int)n, NP * 4);
    proto_floats_decode(alone, raw, NP);
    double maxdiff = 0;
    for (int i = 0; i < NP; i++) {
        double d = fabs((double)dist[i] - (double)alone[i]);
        if (d > maxdiff)
            maxdiff = d;
    }
    ck_assert_msg(maxdiff < 1e-5, "distributed and standalone weights differ by %g", maxdiff);
    /* and the printed training loss of each epoch matches */
    const char *p = strstr(l0, " loss="), *q = strstr(la, " loss=");
    ck_assert(p && q);
    ck_assert_msg(fabs(strtod(p + 6, NULL) - strtod(q + 6, NULL)) < 1e-3, "%s\n%s", l0, la);
    free(raw);
    free(la);
    free(l0);
    free(dist);
    free(alone);
}
END_TEST

/* Sync, one worker: two shards end with the same weights as one shard. */
START_TEST(test_two_shards_equal_one)
{
    float *one = calloc(NP, sizeof(float)), *two = calloc(NP, sizeof(float));
    uint64_t v1 = 0, va = 0, vb = 0;
    cluster_init(1, 1);
    conf_write("sync", "\"epochs\": 1");
    psd_start(0, 1);
    worker_start(0, NULL);
    free(worker_wait_ok(0, RUN_MS));
    shard_weights(0, 0, NP, one, &v1);
    cluster_teardown();

    cluster_init(2, 1);
    conf_write("sync", "\"epochs\": 1");
    psd_start(0, 1);
    psd_start(1, 1);
    worker_start(0, NULL);
    free(worker_wait_ok(0, RUN_MS));
    cJSON *j = shard_status(0);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "range");
    ck_assert(cJSON_GetArraySize(r) == 2);
    size_t mid = (size_t)cJSON_GetArrayItem(r, 1)->valuedouble;
    cJSON_Delete(j);
    ck_assert(mid > 0 && mid < NP);
    shard_weights(0, 0, mid, two, &va);
    shard_weights(1, mid, NP, two + mid, &vb);
    ck_assert_uint_eq(v1, (1200 + 31) / 32);
    ck_assert_uint_eq(va, v1);
    ck_assert_uint_eq(vb, v1);
    for (int i = 0; i < NP; i++)
        if (one[i] != two[i])
            ck_abort_msg("weight %d: %.9g with one shard, %.9g with two", i, (double)one[i],
                         (double)two[i]);
    free(one);
    free(two);
}
END_TEST

/* job.max_steps counts the shards' versions: async with two workers stops
 * at exactly that version, both workers exit 0, both shards finish. */
START_TEST(test_max_steps)
{
    g_momentum = "0.5";
    cluster_init(2, 2);
    conf_write("async", "\"epochs\": 100, \"max_steps\": 45");
    psd_start(0, 1);
    psd_start(1, 1);
    worker_start(0, NULL);
    worker_start(1, NULL);
    char *l0 = worker_wait_ok(0, RUN_MS);
    char *l1 = worker_wait_ok(1, RUN_MS);
    ck_assert_msg(count_lines(l0, "epoch=") <= 2, "%s", l0);
    expect_finished(0, "max_steps 45 reached", 45);
    expect_finished(1, "max_steps 45 reached", 45);
    ck_assert_msg(last_test_acc(l0) > 0, "w0 evaluated at the end:\n%s", l0);
    free(l0);
    free(l1);
    /* sync: the same, and the version is exactly max_steps too */
    cluster_teardown();
    cluster_init(1, 2);
    conf_write("sync", "\"epochs\": 100, \"max_steps\": 30");
    psd_start(0, 1);
    worker_start(0, NULL);
    worker_start(1, NULL);
    free(worker_wait_ok(0, RUN_MS));
    free(worker_wait_ok(1, RUN_MS));
    expect_finished(0, "max_steps 30 reached", 30);
}
END_TEST

/* job.target_accuracy: shard 0 ends the job at the first REPORT that
 * reaches it (evaluations every 10 versions); the workers stop long before
 * their 200 epochs, tell both shards, and both finish. */
START_TEST(test_target_accuracy)
{
    cluster_init(2, 2);
    conf_write("sync", "\"epochs\": 200, \"eval_every_steps\": 10, \"target_accuracy\": 70");
    psd_start(0, 1);
    psd_start(1, 1);
    worker_start(0, NULL);
    worker_start(1, NULL);
    char *l0 = worker_wait_ok(0, RUN_MS);
    char *l1 = worker_wait_ok(1, RUN_MS);
    ck_assert_msg(strstr(l0, "the job has finished") && strstr(l1, "the job has finished"),
                  "%s\n%s", l0, l1);
    ck_assert_msg(count_lines(l0, "epoch=") < 20, "%s", l0);
    expect_finished(0, "target accuracy 70.00% reached", 0);
    expect_finished(1, "all 2 workers done", 0);
    /* the history holds evaluations every 10 versions */
    cJSON *j = shard_status(0);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "history");
    int n = cJSON_GetArraySize(h);
    ck_assert_int_ge(n, 2);
    const cJSON *last = cJSON_GetArrayItem(h, n - 1);
    ck_assert(cJSON_GetObjectItemCaseSensitive(last, "test_acc")->valuedouble >= 0.70);
    for (int i = 0; i + 1 < n; i++) {
        double a = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(h, i), "test_acc")
                       ->valuedouble;
        ck_assert_msg(a < 0.70, "evaluation %d already reached the target (%.3f)", i, a);
    }
    cJSON_Delete(j);
    free(l0);
    free(l1);
}
END_TEST

/* A worker started before its shard keeps trying and trains once it is up. */
START_TEST(test_worker_waits_for_shard)
{
    cluster_init(1, 1);
    conf_write("async", "\"epochs\": 1");
    worker_start(0, NULL);
    usleep(1500000);
    ck_assert_int_eq(wait_exit(g_cl.worker[0], 0), -1); /* still trying */
    psd_start(0, 0);
    char *l = worker_wait_ok(0, RUN_MS);
    ck_assert_msg(strstr(l, "retrying"), "no retry logged:\n%s", l);
    ck_assert_msg(count_lines(l, "epoch=") == 1, "%s", l);
    free(l);
}
END_TEST

/* SIGTERM while training (or waiting): exit 0, promptly. */
START_TEST(test_sigterm)
{
    cluster_init(1, 1);
    conf_write("async", "\"epochs\": 1000");
    psd_start(0, 1);
    worker_start(0, NULL);
    char log[FIXTURES_PATH_MAX + 32];
    log_path(log, sizeof log, "w0");
    double end = psc_now() + 20;
    for (;;) {
        char *l = file_text(log);
        int up = strstr(l, "epoch=") != NULL;
        free(l);
        if (up)
            break;
        ck_assert_msg(psc_now() < end, "w0 did not finish an epoch");
        ck_assert_int_eq(wait_exit(g_cl.worker[0], 0), -1);
        usleep(50000);
    }
    kill(g_cl.worker[0], SIGTERM);
    char *l = worker_wait_ok(0, 5000);
    free(l);
    /* a worker whose shard never comes up stops too */
    kill(g_cl.psd[0], SIGKILL);
    wait_exit(g_cl.psd[0], 5000);
    worker_start(0, NULL);
    usleep(500000);
    kill(g_cl.worker[0], SIGTERM);
    l = worker_wait_ok(0, 5000);
    free(l);
}
END_TEST

/* Placement and data errors: a message and a non-zero exit. */
START_TEST(test_errors)
{
    cluster_init(1, 1);
    conf_write("async", "\"epochs\": 1");
    char log[FIXTURES_PATH_MAX + 32];
    log_path(log, sizeof log, "bad");
    const char *a1[] = {"--placement", g_cl.conf, "--node", "nosuch", NULL};
    int st = wait_exit(spawn("workerd", a1, log), 10000);
    char *l = file_text(log);
    ck_assert_msg(st > 0 && st < 128, "exit %d:\n%s", st, l);
    ck_assert_msg(strstr(l, "no node \"nosuch\""), "%s", l);
    free(l);

    /* a ps node is not a worker */
    unlink(log);
    const char *a2[] = {"--placement", g_cl.conf, "--node", "ps0", NULL};
    st = wait_exit(spawn("workerd", a2, log), 10000);
    l = file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "ps0"), "exit %d:\n%s", st, l);
    free(l);

    /* a missing placement file */
    unlink(log);
    const char *a3[] = {"--placement", "/nonexistent/p.conf", "--node", "w0", NULL};
    st = wait_exit(spawn("workerd", a3, log), 10000);
    l = file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "/nonexistent/p.conf"), "exit %d:\n%s", st, l);
    free(l);

    /* a missing data file: named in the message */
    unlink(g_cl.train_img);
    unlink(log);
    const char *a4[] = {"--placement", g_cl.conf, "--node", "w0", NULL};
    st = wait_exit(spawn("workerd", a4, log), 10000);
    l = file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "train-images"), "exit %d:\n%s", st, l);
    free(l);

    /* standalone-only options are refused with --placement */
    unlink(log);
    const char *a5[] = {"--placement", g_cl.conf, "--lr", "0.1", NULL};
    st = wait_exit(spawn("workerd", a5, log), 10000);
    l = file_text(log);
    ck_assert_msg(st == 2 && strstr(l, "--lr"), "exit %d:\n%s", st, l);
    free(l);
}
END_TEST

Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 180);
    tcase_add_checked_fixture(tc, NULL, cluster_teardown);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_async_two_shards_two_workers);
    tcase_add_test(tc, test_sync_two_shards_two_workers);
    tcase_add_test(tc, test_ssp_two_shards_two_workers);
    tcase_add_test(tc, test_shard_restart);
    tcase_add_test(tc, test_sync_equals_standalone);
    tcase_add_test(tc, test_two_shards_equal_one);
    tcase_add_test(tc, test_max_steps);
    tcase_add_test(tc, test_target_accuracy);
    tcase_add_test(tc, test_worker_waits_for_shard);
    tcase_add_test(tc, test_sigterm);
    suite_add_tcase(s, tc);
    return s;
}
