/* check_cluster.c - real clusters on 127.0.0.1: $PSD_BIN/psd shards and
 * $PSD_BIN/workerd --placement workers on free ports, training "ray" on a
 * small synthetic digit set (tests/fixtures.h): async and sync with two
 * shards and two workers, sync with one shard and one worker giving the
 * same weights as workerd --standalone, two shards giving the same weights
 * as one, the end of the job (all workers done, max_steps, target
 * accuracy: final checkpoint, "finished" in the status), evaluation
 * intervals, a worker started before its shard, SIGTERM, placement/data
 * errors, and a cluster with a key (docs/security.md): trained over sealed
 * connections, workers with another key or none refused.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fixtures.h"
#include "placement.h"
#include "proto.h"
#include "psd_client.h"
#include "cluster.h"

/* Two shards, two workers, `epochs` epochs in `mode`: both exit 0, w0 learns
 * (an evaluation reaches `min_acc`: the last in sync, which is deterministic,
 * the best in async and ssp, see cl_best_test_acc). */
static void two_by_two(const char *mode, int epochs, const char *extra, double min_acc)
{
    char job[256];
    snprintf(job, sizeof job, "\"epochs\": %d%s", epochs, extra);
    cl_init(2, 2);
    cl_conf_write(mode, job);
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    ck_assert_msg(cl_count_lines(l0, "epoch=") == epochs, "w0 log:\n%s", l0);
    ck_assert_msg(cl_count_lines(l1, "epoch=") == epochs, "w1 log:\n%s", l1);
    ck_assert_msg(strstr(l1, "test_acc=") == NULL, "w1 does not evaluate:\n%s", l1);
    double acc = strcmp(mode, "sync") == 0 ? cl_last_test_acc(l0) : cl_best_test_acc(l0);
    ck_assert_msg(acc >= min_acc, "w0's test accuracy %.2f%% is below %.0f%%:\n%s", acc, min_acc,
                  l0);
    /* shard 0 got w0's REPORTs */
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[0], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    char *json = NULL;
    ck_assert_int_eq(psc_status(&c, &json), 0);
    ck_assert_msg(strstr(json, "w0") && strstr(json, "w1"), "status: %s", json);
    ck_assert_msg(cl_count_lines(json, "\"test_acc\"") == epochs, "a REPORT per epoch from w0: %s",
                  json);
    free(json);
    psc_close(&c);
    /* both workers said DONE: the job is finished on both shards */
    ck_assert_msg(strstr(l0, "all epochs done") && strstr(l1, "all epochs done"), "%s\n%s", l0,
                  l1);
    cl_expect_finished(0, "all 2 workers done", 0);
    cl_expect_finished(1, "all 2 workers done", 0);
    free(l0);
    free(l1);
}

/* Async and ssp run 6 epochs: after 2 (38 steps a worker), w0's accuracy
 * depended on how the two workers happened to interleave: over 40 loops it
 * fell as low as 56% (async) and 63% (ssp), and one CI run under ASan ended
 * at 37%.  After 6 the last still dipped now and then (down to 72% async,
 * 38% in the ssp pipelined test), but the best was at least 90.75% in 55
 * loops of each of the four tests (40 native, 15 under ASan).  Sync is
 * deterministic (see test_sync_equals_standalone). */
START_TEST(test_async_two_shards_two_workers)
{
    g_momentum = "0.5";
    two_by_two("async", 6, "", 80.0);
}
END_TEST

START_TEST(test_sync_two_shards_two_workers)
{
    two_by_two("sync", 2, "", 50.0);
}
END_TEST

START_TEST(test_ssp_two_shards_two_workers)
{
    g_momentum = "0.5";
    two_by_two("ssp", 6, ", \"staleness\": 1", 80.0);
}
END_TEST

/* workerd's closing line says how long it waited for the shards: in sync
 * mode with w1 twenty times slower, w0 spends most of each round waiting for
 * w1's gradient at the barrier, w1 much less (ray's gradient takes a fraction
 * of a millisecond: at 3x the round trip still dominated both, 68% vs 49%). */
static void wait_stats(const char *log, double *share, double *p50, double *p90)
{
    const char *p = strstr(log, "waited for the shards ");
    ck_assert_msg(p != NULL, "no wait statistics:\n%s", log);
    double s;
    int n = sscanf(p, "waited for the shards %lf s = %lf%%, per step median %lf ms, p90 %lf ms",
                   &s, share, p50, p90);
    ck_assert_msg(n == 4 && s >= 0 && *share >= 0 && *share <= 100 && *p50 <= *p90,
                  "bad wait statistics: %.80s", p);
}

START_TEST(test_wait_stats)
{
    cl_init(1, 2);
    cl_conf_write("sync", "\"epochs\": 2");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, "--slowdown=20");
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    double s0, a0, b0, s1, a1, b1;
    wait_stats(l0, &s0, &a0, &b0);
    wait_stats(l1, &s1, &a1, &b1);
    fprintf(stderr, "wait stats: w0 waited %.0f%% (median %.1f ms), w1 at 20x %.0f%% (%.1f ms)\n",
            s0, a0, s1, a1);
    ck_assert_msg(s0 >= 50.0 && s0 > s1 + 25.0 && a0 > a1,
                  "w0 (fast) waited %.0f%% (median %.1f ms), w1 (20x slower) %.0f%% (%.1f ms)",
                  s0, a0, s1, a1);
    free(l0);
    free(l1);
}
END_TEST

/* A shard that stops mid-run (SIGTERM: it checkpoints) and comes back:
 * the worker reconnects, carries on from the shard's version, finishes. */
START_TEST(test_shard_restart)
{
    g_momentum = "0.5";
    cl_init(2, 1);
    cl_conf_write("async", "\"epochs\": 500");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "w0");
    double end = psc_now() + 20;
    for (;;) {
        char *l = cl_file_text(log);
        int up = strstr(l, "epoch=") != NULL;
        free(l);
        if (up)
            break;
        ck_assert_msg(psc_now() < end, "w0 did not finish an epoch");
        ck_assert_int_eq(cl_wait_exit(g_cl.worker[0], 0), -1);
        usleep(20000);
    }
    kill(g_cl.psd[1], SIGTERM);
    ck_assert_int_eq(cl_wait_exit(g_cl.psd[1], 10000), 0);
    usleep(700000);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[0], 0), -1); /* still waiting for shard 1 */
    cl_psd_start_args(1, 1, 0); /* resumes from its checkpoint */
    char *l = cl_worker_wait_ok(0, RUN_MS);
    ck_assert_msg(cl_count_lines(l, "epoch=") == 500, "%s", l);
    ck_assert_msg(strstr(l, "retrying"), "%s", l);
    ck_assert_msg(cl_count_lines(l, "shard 1 (127.0.0.1") >= 3, "%s", l);
    double acc = cl_last_test_acc(l);
    ck_assert_msg(acc > 50.0, "accuracy %.2f after the restart", acc);
    free(l);
}
END_TEST

/* Sync with one shard and one worker is the standalone run, step for step. */
/* Shard 0's whole weight vector (NP floats) into dist; returns its version. */
static uint64_t shard0_pull_all(float *dist)
{
    psd_client c;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&c, g_cl.port[0], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
    uint64_t version = 0;
    int nm = 0;
    ck_assert_int_eq(psc_pull(&c, 0, 0, NP, &version, &nm, dist), 0);
    psc_close(&c);
    return version;
}

/* The weights `workerd --standalone --save-weights wpath` wrote are dist's
 * (NP floats), to within 1e-5. */
static void expect_saved_weights(const char *wpath, const float *dist)
{
    uint8_t *raw = NULL;
    size_t n = 0;
    ck_assert_int_eq(fixtures_file_read(wpath, &raw, &n), 0);
    ck_assert_int_eq((int)n, NP * 4);
    float *alone = calloc(NP, sizeof(float));
    proto_floats_decode(alone, raw, NP);
    double maxdiff = 0;
    for (int i = 0; i < NP; i++) {
        double d = fabs((double)dist[i] - (double)alone[i]);
        if (d > maxdiff)
            maxdiff = d;
    }
    ck_assert_msg(maxdiff < 1e-5, "distributed and standalone weights differ by %g", maxdiff);
    free(alone);
    free(raw);
}

START_TEST(test_sync_equals_standalone)
{
    cl_init(1, 1);
    cl_conf_write("sync", "\"epochs\": 2");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);

    float *dist = calloc(NP, sizeof(float));
    uint64_t version = shard0_pull_all(dist);
    ck_assert_int_eq((int)version, 2 * ((1200 + 31) / 32));

    char wpath[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/alone.f32", g_cl.dir);
    cl_log_path(log, sizeof log, "alone");
    const char *args[] = {"--standalone", "--model", "ray", "--train-images", g_cl.train_img,
                          "--train-labels", g_cl.train_lbl, "--epochs", "2", "--batch", "32",
                          "--lr", "0.05", "--momentum", "0.9", "--schedule", "constant",
                          "--seed", "7", "--threads", "1", "--save-weights", wpath, NULL};
    pid_t pid = cl_spawn("workerd", args, log);
    int st = cl_wait_exit(pid, RUN_MS);
    char *la = cl_file_text(log);
    ck_assert_msg(st == 0, "standalone exited with %d:\n%s", st, la);
    expect_saved_weights(wpath, dist);
    /* and the printed training loss of each epoch matches */
    const char *p = strstr(l0, " loss="), *q = strstr(la, " loss=");
    ck_assert(p && q);
    ck_assert_msg(fabs(strtod(p + 6, NULL) - strtod(q + 6, NULL)) < 1e-3, "%s\n%s", l0, la);
    free(la);
    free(l0);
    free(dist);
}
END_TEST

/* Sync, one worker: two shards end with the same weights as one shard. */
/* Standalone run of lenet for 2 epochs (a model whose gradient is most of
 * a step, also under ASan), --slowdown `slow` (NULL: none): its log
 * (caller frees); the weights go to <dir>/<name>.f32. */
static char *standalone_run(const char *name, const char *slow)
{
    char wpath[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/%s.f32", g_cl.dir, name);
    cl_log_path(log, sizeof log, name);
    const char *args[] = {"--standalone", "--model", "lenet", "--train-images", g_cl.train_img,
                          "--train-labels", g_cl.train_lbl, "--epochs", "2", "--batch", "32",
                          "--momentum", "0.5", "--seed", "7", "--save-weights", wpath,
                          slow ? "--slowdown" : NULL, slow, NULL};
    pid_t pid = cl_spawn("workerd", args, log);
    int st = cl_wait_exit(pid, RUN_MS);
    char *l = cl_file_text(log);
    ck_assert_msg(st == 0, "standalone exited with %d:\n%s", st, cl_tail(l));
    return l;
}

/* --slowdown 3 (an emulated box a third as fast): after each gradient the
 * worker sleeps twice the gradient's compute time, says so (slow_s=), and
 * trains exactly the same weights.  The epoch line has no gradient time of
 * its own: time_s - comm_s - slow_s also holds the batch gathering, so the
 * bound is 1.8x, not 2x. */
START_TEST(test_slowdown)
{
    cl_init(1, 1);
    char *fast = standalone_run("fast", NULL);
    char *slow = standalone_run("slow", "3");
    ck_assert_msg(strstr(fast, "slow_s=") == NULL, "%s", fast);
    int epochs = 0;
    for (const char *p = strstr(slow, "epoch="); p; p = strstr(p + 1, "\nepoch=")) {
        const char *t = strstr(p, "time_s="), *c = strstr(p, "comm_s="), *s = strstr(p, "slow_s=");
        ck_assert_msg(t && c && s, "%s", slow);
        double sl = strtod(s + 7, NULL);
        double compute = strtod(t + 7, NULL) - strtod(c + 7, NULL) - sl;
        ck_assert_msg(compute > 0 && sl >= 1.8 * compute,
                      "epoch %d: slept %.4f s for %.4f s of compute (want 2x)", epochs + 1, sl,
                      compute);
        epochs++;
    }
    ck_assert_int_eq(epochs, 2);
    char a[FIXTURES_PATH_MAX + 32], b[FIXTURES_PATH_MAX + 32];
    snprintf(a, sizeof a, "%s/fast.f32", g_cl.dir);
    snprintf(b, sizeof b, "%s/slow.f32", g_cl.dir);
    uint8_t *wa = NULL, *wb = NULL;
    size_t na = 0, nb = 0;
    ck_assert_int_eq(fixtures_file_read(a, &wa, &na), 0);
    ck_assert_int_eq(fixtures_file_read(b, &wb, &nb), 0);
    ck_assert_msg(na == nb && na > 0 && memcmp(wa, wb, na) == 0,
                  "--slowdown changed the trained weights");
    /* a bad factor is refused with the option's name */
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "bad");
    const char *args[] = {"--standalone", "--slowdown", "0.5", NULL};
    int st = cl_wait_exit(cl_spawn("workerd", args, log), 10000);
    char *l = cl_file_text(log);
    ck_assert_msg(st == 2 && strstr(l, "--slowdown"), "exit %d:\n%s", st, l);
    free(l);
    free(wa);
    free(wb);
    free(fast);
    free(slow);
}
END_TEST

START_TEST(test_two_shards_equal_one)
{
    float *one = calloc(NP, sizeof(float)), *two = calloc(NP, sizeof(float));
    uint64_t v1 = 0, va = 0, vb = 0;
    cl_init(1, 1);
    cl_conf_write("sync", "\"epochs\": 1");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    free(cl_worker_wait_ok(0, RUN_MS));
    cl_shard_weights(0, 0, NP, one, &v1);
    cl_teardown();

    cl_init(2, 1);
    cl_conf_write("sync", "\"epochs\": 1");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    free(cl_worker_wait_ok(0, RUN_MS));
    cJSON *j = cl_shard_status(0);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "range");
    ck_assert(cJSON_GetArraySize(r) == 2);
    size_t mid = (size_t)cJSON_GetArrayItem(r, 1)->valuedouble;
    cJSON_Delete(j);
    ck_assert(mid > 0 && mid < NP);
    cl_shard_weights(0, 0, mid, two, &va);
    cl_shard_weights(1, mid, NP, two + mid, &vb);
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
    cl_init(2, 2);
    cl_conf_write("async", "\"epochs\": 100, \"max_steps\": 45");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    /* 45 versions, 19 steps an epoch: w0 alone (w1 started late) does 3 */
    ck_assert_msg(cl_count_lines(l0, "epoch=") <= 3, "%s", l0);
    cl_expect_finished(0, "max_steps 45 reached", 45);
    cl_expect_finished(1, "max_steps 45 reached", 45);
    ck_assert_msg(cl_last_test_acc(l0) > 0, "w0 evaluated at the end:\n%s", l0);
    free(l0);
    free(l1);
    /* sync: the same, and the version is exactly max_steps too */
    cl_teardown();
    cl_init(1, 2);
    cl_conf_write("sync", "\"epochs\": 100, \"max_steps\": 30");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    free(cl_worker_wait_ok(0, RUN_MS));
    free(cl_worker_wait_ok(1, RUN_MS));
    cl_expect_finished(0, "max_steps 30 reached", 30);
}
END_TEST

/* job.target_accuracy: shard 0 ends the job at the first REPORT that
 * reaches it (evaluations every 10 versions); the workers stop long before
 * their 200 epochs, tell both shards, and both finish. */
START_TEST(test_target_accuracy)
{
    cl_init(2, 2);
    cl_conf_write("sync", "\"epochs\": 200, \"eval_every_steps\": 10, \"target_accuracy\": 70");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    ck_assert_msg(strstr(l0, "the job has finished") && strstr(l1, "the job has finished"),
                  "%s\n%s", l0, l1);
    ck_assert_msg(cl_count_lines(l0, "epoch=") < 20, "%s", l0);
    cl_expect_finished(0, "target accuracy 70.00% reached", 0);
    cl_expect_finished(1, "all 2 workers done", 0);
    /* the job ended at the first evaluation that reached the target: the
     * reason quotes it (later REPORTs may follow: w0 learns of the end only
     * at its next push) */
    cJSON *j = cl_shard_status(0);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "history");
    const cJSON *job = cJSON_GetObjectItemCaseSensitive(j, "job");
    const char *reason = cJSON_GetObjectItemCaseSensitive(job, "reason")->valuestring;
    int n = cJSON_GetArraySize(h), first = -1;
    for (int i = 0; i < n && first < 0; i++)
        if (cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(h, i), "test_acc")->valuedouble *
                100.0 >= 70.0)
            first = i;
    char *txt = cJSON_PrintUnformatted(h);
    ck_assert_msg(first >= 0, "no evaluation reached the target: %s", txt);
    char want[64];
    snprintf(want, sizeof want, "(%.2f%% from w0)",
             100.0 * cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(h, first), "test_acc")
                         ->valuedouble);
    ck_assert_msg(strstr(reason, want), "reason \"%s\", first at target: %s in %s", reason, want,
                  txt);
    ck_assert_msg(n - first <= 2, "%d evaluations after the end: %s", n - first - 1, txt);
    free(txt);
    cJSON_Delete(j);
    free(l0);
    free(l1);
}
END_TEST

/* A worker started before its shard keeps trying and trains once it is up. */
START_TEST(test_worker_waits_for_shard)
{
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 1");
    cl_worker_start(0, NULL);
    usleep(1500000);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[0], 0), -1); /* still trying */
    cl_psd_start(0, 0);
    char *l = cl_worker_wait_ok(0, RUN_MS);
    ck_assert_msg(strstr(l, "retrying"), "no retry logged:\n%s", l);
    ck_assert_msg(cl_count_lines(l, "epoch=") == 1, "%s", l);
    free(l);
}
END_TEST

/* SIGTERM while training (or waiting): exit 0, promptly. */
START_TEST(test_sigterm)
{
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 1000");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "w0");
    double end = psc_now() + 20;
    for (;;) {
        char *l = cl_file_text(log);
        int up = strstr(l, "epoch=") != NULL;
        free(l);
        if (up)
            break;
        ck_assert_msg(psc_now() < end, "w0 did not finish an epoch");
        ck_assert_int_eq(cl_wait_exit(g_cl.worker[0], 0), -1);
        usleep(50000);
    }
    kill(g_cl.worker[0], SIGTERM);
    char *l = cl_worker_wait_ok(0, 5000);
    free(l);
    /* a worker whose shard never comes up stops too */
    kill(g_cl.psd[0], SIGKILL);
    cl_wait_exit(g_cl.psd[0], 5000);
    cl_worker_start(0, NULL);
    usleep(500000);
    kill(g_cl.worker[0], SIGTERM);
    l = cl_worker_wait_ok(0, 5000);
    free(l);
}
END_TEST

/* Placement and data errors: a message and a non-zero exit. */
START_TEST(test_errors)
{
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 1");
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "bad");
    const char *a1[] = {"--placement", g_cl.conf, "--node", "nosuch", NULL};
    int st = cl_wait_exit(cl_spawn("workerd", a1, log), 10000);
    char *l = cl_file_text(log);
    ck_assert_msg(st > 0 && st < 128, "exit %d:\n%s", st, l);
    ck_assert_msg(strstr(l, "no node \"nosuch\""), "%s", l);
    free(l);

    /* a ps node is not a worker */
    unlink(log);
    const char *a2[] = {"--placement", g_cl.conf, "--node", "ps0", NULL};
    st = cl_wait_exit(cl_spawn("workerd", a2, log), 10000);
    l = cl_file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "ps0"), "exit %d:\n%s", st, l);
    free(l);

    /* a missing placement file */
    unlink(log);
    const char *a3[] = {"--placement", "/nonexistent/p.conf", "--node", "w0", NULL};
    st = cl_wait_exit(cl_spawn("workerd", a3, log), 10000);
    l = cl_file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "/nonexistent/p.conf"), "exit %d:\n%s", st, l);
    free(l);

    /* a missing data file: named in the message */
    unlink(g_cl.train_img);
    unlink(log);
    const char *a4[] = {"--placement", g_cl.conf, "--node", "w0", NULL};
    st = cl_wait_exit(cl_spawn("workerd", a4, log), 10000);
    l = cl_file_text(log);
    ck_assert_msg(st > 0 && st < 128 && strstr(l, "train-images"), "exit %d:\n%s", st, l);
    free(l);

    /* standalone-only options are refused with --placement */
    unlink(log);
    const char *a5[] = {"--placement", g_cl.conf, "--lr", "0.1", NULL};
    st = cl_wait_exit(cl_spawn("workerd", a5, log), 10000);
    l = cl_file_text(log);
    ck_assert_msg(st == 2 && strstr(l, "--lr"), "exit %d:\n%s", st, l);
    free(l);
}
END_TEST

/* ------------------------------------------------------------ cluster key */

/* Write conf with "auth": {"key_file": key_name} into path. */
static void conf_with_key(const char *path, const char *key_name)
{
    char *t = cl_file_text(g_cl.conf);
    size_t n = strlen(t);
    ck_assert(n > 3 && strcmp(t + n - 3, "]}\n") == 0);
    t[n - 3] = 0;
    char *u = NULL;
    ck_assert_int_gt(asprintf(&u, "%s],\n \"auth\": {\"key_file\": \"%s\"}}\n", t, key_name), 0);
    ck_assert_int_eq(fixtures_file_write(path, (const uint8_t *)u, strlen(u), 0), 0);
    free(t);
    free(u);
}

/* A new random key in g_cl.dir/name. */
static void key_new(const char *name)
{
    char path[FIXTURES_PATH_MAX + 32], err[FIXTURES_PATH_MAX + 256];
    uint8_t key[PLACEMENT_KEY_SIZE];
    ck_assert_int_eq(secure_init(), 0);
    secure_random(key, sizeof key);
    snprintf(path, sizeof path, "%s/%s", g_cl.dir, name);
    ck_assert_msg(placement_key_save(path, key, err, sizeof err) == 0, "%s", err);
}

/* workerd with placement conf as w<w>: its exit status and log. */
static int worker_run(const char *conf, int w, const char *logname, char **log)
{
    char node[16], path[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "w%d", w);
    cl_log_path(path, sizeof path, logname);
    const char *args[] = {"--placement", conf, "--node", node, "--connect-timeout", "20", NULL};
    int st = cl_wait_exit(cl_spawn("workerd", args, path), 30000);
    *log = cl_file_text(path);
    return st;
}

/* Two shards and two workers with a cluster key: sync training over sealed
 * connections learns as without one; a worker with another key, one
 * without the key, and one whose key file others can read are refused with
 * a message, and the shards go on serving the right ones. */
START_TEST(test_key_cluster)
{
    cl_init(2, 2);
    cl_conf_write("sync", "\"epochs\": 2");
    key_new("cluster.key");
    key_new("other.key");
    char plain[FIXTURES_PATH_MAX + 32], other[FIXTURES_PATH_MAX + 32];
    snprintf(plain, sizeof plain, "%s/plain.conf", g_cl.dir);
    snprintf(other, sizeof other, "%s/other.conf", g_cl.dir);
    /* plain.conf: without auth; other.conf: another key; the cluster's own
     * placement (g_cl.conf, what cl_psd_start/cl_worker_start use): the key */
    char *t = cl_file_text(g_cl.conf);
    ck_assert_int_eq(fixtures_file_write(plain, (const uint8_t *)t, strlen(t), 0), 0);
    free(t);
    conf_with_key(other, "other.key");
    conf_with_key(g_cl.conf, "cluster.key");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);

    /* another key: the worker sees the shard's proof fail and stops */
    char *l = NULL;
    int st = worker_run(other, 1, "w1-other", &l);
    ck_assert_msg(st == 1 && strstr(l, "its proof does not match our cluster key"), "exit %d:\n%s",
                  st, l);
    free(l);
    /* no key */
    st = worker_run(plain, 1, "w1-plain", &l);
    ck_assert_msg(st == 1 && strstr(l, "this cluster requires the key"), "exit %d:\n%s", st, l);
    free(l);
    /* a key file others may read: refused before anything is loaded */
    char kp[FIXTURES_PATH_MAX + 32];
    snprintf(kp, sizeof kp, "%s/cluster.key", g_cl.dir);
    ck_assert_int_eq(chmod(kp, 0644), 0);
    st = worker_run(g_cl.conf, 1, "w1-mode", &l);
    ck_assert_msg(st == 1 && strstr(l, "mode 0644") && strstr(l, "chmod 600"), "exit %d:\n%s", st,
                  l);
    free(l);
    ck_assert_int_eq(chmod(kp, 0600), 0);

    /* the real workers */
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    ck_assert_msg(cl_count_lines(l0, "epoch=") == 2 && cl_count_lines(l1, "epoch=") == 2,
                  "%s\n%s", l0, l1);
    ck_assert_msg(cl_count_lines(l0, "connected (authenticated)") == 2, "%s", l0);
    double acc = cl_last_test_acc(l0);
    ck_assert_msg(acc > 50.0, "w0's test accuracy %.2f%% with a key:\n%s", acc, l0);
    for (int i = 0; i < 2; i++) {
        char log[FIXTURES_PATH_MAX + 32], name[8];
        snprintf(name, sizeof name, "ps%d", i);
        cl_log_path(log, sizeof log, name);
        char *ps = cl_file_text(log);
        ck_assert_msg(strstr(ps, "cluster key from") && strstr(ps, "worker w0 joined") &&
                          !strstr(ps, "frame authentication failed"),
                      "%s", ps);
        ck_assert_msg(cl_count_lines(ps, "this cluster requires the key") == 1 &&
                          cl_count_lines(ps, "before its AUTH") == 1,
                      "%s", ps);
        free(ps);
    }
    /* the job finished on both shards; an operator needs the key to see it */
    uint8_t key[PLACEMENT_KEY_SIZE];
    char err[FIXTURES_PATH_MAX + 256];
    ck_assert_msg(placement_key_load(kp, key, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 2; i++) {
        psd_client c;
        proto_welcome wel;
        ck_assert_int_eq(psc_connect(&c, g_cl.port[i], 2000, 5000), 0);
        ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), PROTO_ERR_AUTH);
        psc_close(&c);
        ck_assert_int_eq(psc_connect(&c, g_cl.port[i], 2000, 5000), 0);
        psc_set_key(&c, key);
        ck_assert_int_eq(psc_hello(&c, PROTO_ROLE_OPERATOR, "probe", "", 0, &wel), 0);
        char *json = NULL;
        ck_assert_int_eq(psc_status(&c, &json), 0);
        ck_assert_msg(strstr(json, "\"state\":\"finished\"") && strstr(json, "all 2 workers done"),
                      "shard %d: %s", i, json);
        free(json);
        psc_close(&c);
    }
    free(l0);
    free(l1);
}
END_TEST

/* ------------------------------------------------------------ pipelined pulls */

/* The size of one frame: rc and *len from its encoder called with cap 0. */
static size_t frame_len(int rc, const size_t *len)
{
    ck_assert_int_eq(rc, PROTO_ERR_NOSPACE);
    return *len;
}

/* The sum of "key=" numbers on a log's epoch lines. */
static unsigned long long epoch_sum(const char *l, const char *key)
{
    unsigned long long n = 0;
    size_t kl = strlen(key);
    for (const char *p = strstr(l, "epoch="); p; p = strstr(p + 1, "\nepoch=")) {
        const char *e = strchr(p + 1, '\n');
        const char *k = strstr(p, key);
        ck_assert_msg(k && (!e || k < e), "no %s on an epoch line:\n%s", key, cl_tail(l));
        n += strtoull(k + kl, NULL, 10);
    }
    return n;
}

/* A --verbose worker's closing count for shard s: PULLs sent, sent behind
 * a PUSH, pull calls those served, PUSHes sent during the backward pass. */
static void pull_counts(const char *l, int s, unsigned long long *sent, unsigned long long *ahead,
                        unsigned long long *served, unsigned long long *early)
{
    char key[32];
    snprintf(key, sizeof key, "shard %d: ", s);
    const char *p = l;
    while ((p = strstr(p, key)) && !strstr(p, " applied, "))
        p++;
    for (; p; p = strstr(p + 1, key)) {
        const char *q = strstr(p, " reconnects; ");
        const char *e = strchr(p, '\n');
        if (q && (!e || q < e) &&
            sscanf(q,
                   " reconnects; %llu pulls sent, %llu behind a push, %llu pull calls served "
                   "by those; %llu pushes sent before",
                   sent, ahead, served, early) == 4)
            return;
    }
    ck_abort_msg("no pull counts for shard %d in:\n%s", s, cl_tail(l));
}

/* Async and ssp send each step's PULL right behind its PUSH (remote.h):
 * every push took one along, every pull call but the first and those after
 * an evaluation was answered by it, and no pull call sent a second PULL.
 * The shard's own count of bytes received agrees: exactly the workers'
 * HELLOs, PUSHes, PULLs and DONEs and our probe, so it got one PULL per
 * step (plus the first and the evaluations'), not two. */
static void pipelined(const char *mode, const char *job)
{
    cl_init(2, 2);
    cl_conf_write(mode, job);
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, "--verbose");
    cl_worker_start(1, "--verbose");
    char *l[2];
    l[0] = cl_worker_wait_ok(0, RUN_MS);
    l[1] = cl_worker_wait_ok(1, RUN_MS);
    ck_assert_msg(cl_best_test_acc(l[0]) >= 80.0, "%s", cl_tail(l[0]));
    unsigned long long steps[2], sent1 = 0;
    for (int w = 0; w < 2; w++) {
        steps[w] = epoch_sum(l[w], "steps=");
        unsigned long long evals = (unsigned long long)cl_count_lines(l[w], "eval: version");
        ck_assert_msg(steps[w] > 10 && (w == 1 || evals >= 2) && (w == 0 || evals == 0),
                      "w%d: %llu steps, %llu evaluations:\n%s", w, steps[w], evals, cl_tail(l[w]));
        for (int s = 0; s < 2; s++) {
            unsigned long long sent, ahead, served, early;
            pull_counts(l[w], s, &sent, &ahead, &served, &early);
            /* shard 1's slice is all in ray's last layer: its PUSH leaves
             * while the backward pass goes on through the conv layer;
             * shard 0's holds the conv layer's, done last */
            ck_assert_msg(early == (s == 1 ? steps[w] : 0),
                          "w%d shard %d: %llu of %llu pushes sent during the backward pass", w,
                          s, early, steps[w]);
            unsigned long long calls = steps[w] + evals; /* trainer steps and evaluations */
            ck_assert_msg(ahead == steps[w] && sent - ahead == calls - served &&
                              served + 1 + evals >= calls && served < calls,
                          "w%d shard %d: %llu pull calls, %llu PULLs sent, %llu behind a push, "
                          "%llu calls served by those (%llu steps)",
                          w, s, calls, sent, ahead, served, steps[w]);
            if (s == 1)
                sent1 += sent;
        }
    }
    /* shard 1's view */
    uint8_t zero[4] = {0};
    proto_hello hw = {.role = PROTO_ROLE_WORKER, .nparams = NP};
    snprintf(hw.node_id, sizeof hw.node_id, "w0");
    snprintf(hw.model, sizeof hw.model, "ray");
    proto_hello hp = {.role = PROTO_ROLE_OPERATOR};
    snprintf(hp.node_id, sizeof hp.node_id, "probe");
    cJSON *j = cl_shard_status(1);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "range");
    ck_assert(cJSON_GetArraySize(r) == 2);
    uint64_t lo = (uint64_t)cJSON_GetArrayItem(r, 0)->valuedouble;
    uint64_t hi = (uint64_t)cJSON_GetArrayItem(r, 1)->valuedouble;
    float *vals = calloc(hi - lo, sizeof(float));
    proto_push ph = {.seq = 1, .samples = 1, .lo = lo, .hi = hi, .encoding = PROTO_ENC_FP32,
                     .values = vals};
    proto_pull pl = {.lo = lo, .hi = hi, .encoding = PROTO_ENC_FP32};
    proto_done dn = {0};
    size_t n = 0;
    size_t hello_w = frame_len(proto_hello_encode(&hw, 1, zero, 0, &n), &n);
    size_t hello_p = frame_len(proto_hello_encode(&hp, 1, zero, 0, &n), &n);
    size_t push = frame_len(proto_push_encode(&ph, 1, zero, 0, &n), &n);
    size_t pull = frame_len(proto_pull_encode(&pl, 1, zero, 0, &n), &n);
    size_t done = frame_len(proto_done_encode(&dn, 1, zero, 0, &n), &n);
    size_t sreq = frame_len(proto_status_req_encode(1, zero, 0, &n), &n);
    free(vals);
    double pushes = cJSON_GetObjectItemCaseSensitive(j, "pushes")->valuedouble;
    double bytes_in = cJSON_GetObjectItemCaseSensitive(j, "bytes_in")->valuedouble;
    ck_assert_msg(pushes == (double)(steps[0] + steps[1]), "shard 1: %.0f pushes for %llu steps",
                  pushes, steps[0] + steps[1]);
    double want = 2.0 * (double)(hello_w + done) + (double)(steps[0] + steps[1]) * (double)push +
                  (double)sent1 * (double)pull + (double)(hello_p + sreq);
    ck_assert_msg(bytes_in == want,
                  "shard 1 received %.0f bytes; %llu PULLs (%zu B), %.0f PUSHes (%zu B), HELLOs "
                  "and DONEs make %.0f",
                  bytes_in, sent1, pull, pushes, push, want);
    cJSON_Delete(j);
    free(l[0]);
    free(l[1]);
}

/* momentum 0.3 in both: at 0.5 the ssp run once ended below 50%; 6 epochs
 * (see test_async_two_shards_two_workers) */
START_TEST(test_async_pipelined_pull)
{
    g_momentum = "0.3";
    pipelined("async", "\"epochs\": 6");
}
END_TEST

START_TEST(test_ssp_pipelined_pull)
{
    g_momentum = "0.3";
    pipelined("ssp", "\"epochs\": 6, \"staleness\": 1");
}
END_TEST

/* 2 shards x 2 async workers, 300 epochs, checkpoints every second, job
 * settings `extra`: shard 1 is killed with SIGKILL once it has written a
 * checkpoint (whatever was in flight: a PUSH, the PULL behind it, their
 * replies) and started again from it.  Both workers reconnect, fall back
 * to plain pulls where the pipelined WEIGHTS were lost, never see a reply
 * they did not expect, finish every epoch, and the model still learns. */
static void kill9_shard1(const char *extra)
{
    cl_init(2, 2);
    char job[256];
    snprintf(job, sizeof job, "\"epochs\": 300, \"checkpoint_interval_s\": 1, %s", extra);
    cl_conf_write("async", job);
    cl_psd_start_args(0, 1, 0);
    cl_psd_start_args(1, 1, 0);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char p1[FIXTURES_PATH_MAX + 32];
    cl_log_path(p1, sizeof p1, "ps1");
    double end = psc_now() + 30;
    for (;;) {
        char *l = cl_file_text(p1);
        int up = strstr(l, "checkpoint: version") != NULL;
        free(l);
        if (up)
            break;
        ck_assert_msg(psc_now() < end, "shard 1 wrote no checkpoint");
        usleep(20000);
    }
    kill(g_cl.psd[1], SIGKILL);
    ck_assert_int_eq(cl_wait_exit(g_cl.psd[1], 5000), 128 + SIGKILL);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[0], 0), -1);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[1], 0), -1);
    cl_psd_start_args(1, 1, 0); /* resumes from its checkpoint */
    char *l[2];
    l[0] = cl_worker_wait_ok(0, RUN_MS);
    l[1] = cl_worker_wait_ok(1, RUN_MS);
    for (int w = 0; w < 2; w++) {
        ck_assert_msg(cl_count_lines(l[w], "epoch=") == 300, "w%d:\n%s", w, cl_tail(l[w]));
        ck_assert_msg(strstr(l[w], "retrying") && !strstr(l[w], "unexpected") &&
                          !strstr(l[w], "bad ACK") && !strstr(l[w], "bad WEIGHTS") &&
                          !strstr(l[w], "a delta WEIGHTS against"),
                      "w%d:\n%s", w, cl_tail(l[w]));
    }
    double acc = cl_last_test_acc(l[0]);
    ck_assert_msg(acc > 50.0, "accuracy %.2f after the restart", acc);
    cl_expect_finished(0, "all 2 workers done", 0);
    cl_expect_finished(1, "all 2 workers done", 0);
    free(l[0]);
    free(l[1]);
}

/* Async with delta pulls. */
START_TEST(test_async_shard_kill9_pipelined)
{
    g_momentum = "0.5";
    kill9_shard1("\"compression\": {\"pull\": \"delta\"}");
}
END_TEST

/* Async with job.overlap, one shard and one worker, is `workerd
 * --standalone --overlap` step for step: every gradient computed on the
 * weights one version before the ones it is applied to plus the worker's
 * own look-ahead step (the freshest ones after each epoch's evaluation),
 * none lost, none applied twice. */
START_TEST(test_overlap_equals_standalone)
{
    g_momentum = "0.5";
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 2, \"overlap\": true");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    float *dist = calloc(NP, sizeof(float));
    uint64_t version = shard0_pull_all(dist);
    ck_assert_int_eq((int)version, 2 * ((1200 + 31) / 32));

    char wpath[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/alone.f32", g_cl.dir);
    cl_log_path(log, sizeof log, "alone");
    const char *args[] = {"--standalone", "--overlap", "--model", "ray", "--train-images",
                          g_cl.train_img, "--train-labels", g_cl.train_lbl, "--test-images",
                          g_cl.test_img, "--test-labels", g_cl.test_lbl, "--epochs", "2",
                          "--batch", "32", "--lr", "0.05", "--momentum", "0.5", "--schedule",
                          "constant", "--seed", "7", "--threads", "1", "--save-weights", wpath,
                          NULL};
    int st = cl_wait_exit(cl_spawn("workerd", args, log), RUN_MS);
    char *la = cl_file_text(log);
    ck_assert_msg(st == 0 && strstr(la, "overlap=1"), "standalone exited with %d:\n%s", st, la);
    expect_saved_weights(wpath, dist);

    /* The look-ahead (param_backend.ahead) takes the worker's own last
     * step before the next gradient: without momentum that is exactly the
     * shard's step, so overlap then trains the very same weights as plain
     * SGD, bit for bit. */
    uint8_t *w[2] = {NULL, NULL};
    size_t wn[2] = {0, 0};
    for (int ov = 0; ov < 2; ov++) {
        char name[8];
        snprintf(name, sizeof name, "mom0_%d", ov);
        snprintf(wpath, sizeof wpath, "%s/%s.f32", g_cl.dir, name);
        cl_log_path(log, sizeof log, name);
        const char *a0[] = {"--standalone", "--model", "ray", "--train-images", g_cl.train_img,
                            "--train-labels", g_cl.train_lbl, "--epochs", "2", "--batch", "32",
                            "--lr", "0.05", "--momentum", "0", "--schedule", "cosine", "--seed",
                            "7", "--threads", "1", "--save-weights", wpath,
                            ov ? "--overlap" : NULL, NULL};
        st = cl_wait_exit(cl_spawn("workerd", a0, log), RUN_MS);
        ck_assert_int_eq(st, 0);
        ck_assert_int_eq(fixtures_file_read(wpath, &w[ov], &wn[ov]), 0);
    }
    ck_assert_msg(wn[0] == NP * 4 && wn[1] == wn[0] && memcmp(w[0], w[1], wn[0]) == 0,
                  "momentum 0: overlap with the look-ahead trained other weights than plain SGD");
    free(w[0]);
    free(w[1]);
    free(la);
    free(l0);
    free(dist);
}
END_TEST

/* job.local_steps 2, one worker and one shard: the shard applied one step
 * per round of two minibatches (a round ends with its epoch: 38 minibatches
 * of 32, 19 rounds), counted every sample, and ended with the weights of
 * `workerd --standalone --local-steps 2` on the same data and settings. */
START_TEST(test_local_steps_equals_standalone)
{
    g_momentum = "0.5";
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 2, \"local_steps\": 2");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    ck_assert_msg(strstr(l0, "local_steps=2") && epoch_sum(l0, "steps=") == 2 * 38, "%s",
                  cl_tail(l0));
    cJSON *j = cl_shard_status(0);
    double pushes = cJSON_GetObjectItemCaseSensitive(j, "pushes")->valuedouble;
    const cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "workers"), 0);
    ck_assert(w != NULL);
    double samples = cJSON_GetObjectItemCaseSensitive(w, "samples")->valuedouble;
    ck_assert_msg(pushes == 2 * 19 && samples == 2 * 1200, "%.0f pushes, %.0f samples", pushes,
                  samples);
    cJSON_Delete(j);
    float *dist = calloc(NP, sizeof(float));
    uint64_t version = shard0_pull_all(dist);
    ck_assert_int_eq((int)version, 2 * 19);

    char wpath[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/alone.f32", g_cl.dir);
    cl_log_path(log, sizeof log, "alone");
    const char *args[] = {"--standalone", "--local-steps", "2", "--model", "ray",
                          "--train-images", g_cl.train_img, "--train-labels", g_cl.train_lbl,
                          "--test-images", g_cl.test_img, "--test-labels", g_cl.test_lbl,
                          "--epochs", "2", "--batch", "32", "--lr", "0.05", "--momentum", "0.5",
                          "--schedule", "constant", "--seed", "7", "--threads", "1",
                          "--save-weights", wpath, NULL};
    int st = cl_wait_exit(cl_spawn("workerd", args, log), RUN_MS);
    char *la = cl_file_text(log);
    ck_assert_msg(st == 0 && strstr(la, "local_steps=2"), "standalone exited with %d:\n%s", st,
                  la);
    expect_saved_weights(wpath, dist);
    free(la);
    free(l0);
    free(dist);
}
END_TEST

/* Local steps with 2 shards x 2 workers and top-k both ways: each round's
 * last minibatch sends shard 1's slice of the round's sum early; the model
 * learns as in test_async_two_shards_two_workers. */
START_TEST(test_async_local_steps)
{
    g_momentum = "0.5";
    two_by_two("async", 6,
               ", \"local_steps\": 2, \"compression\": {\"push\": \"topk\", "
               "\"topk_percent\": 10, \"pull\": \"topk\"}",
               80.0);
}
END_TEST

/* One async worker and one shard, with and without job.overlap: the shard
 * applied exactly the worker's steps either way (none lost, none twice)
 * and the model learns; with overlap each gradient was computed while the
 * one before was on the wire, so it reaches the shard one version stale
 * (the last push's staleness is 1), without overlap it is fresh (0). */
START_TEST(test_async_overlap)
{
    for (int overlap = 0; overlap <= 1; overlap++) {
        g_momentum = "0.5";
        cl_init(1, 1);
        cl_conf_write("async", overlap ? "\"epochs\": 3, \"overlap\": true" : "\"epochs\": 3");
        cl_psd_start(0, 1);
        cl_worker_start(0, "--verbose");
        char *l = cl_worker_wait_ok(0, RUN_MS);
        char want[32];
        snprintf(want, sizeof want, "overlap=%d", overlap);
        ck_assert_msg(strstr(l, want), "no %s in:\n%s", want, cl_tail(l));
        unsigned long long steps = epoch_sum(l, "steps=");
        ck_assert_msg(steps > 30 && cl_last_test_acc(l) > 50.0, "overlap %d: %llu steps:\n%s",
                      overlap, steps, cl_tail(l));
        cJSON *j = cl_shard_status(0);
        double pushes = cJSON_GetObjectItemCaseSensitive(j, "pushes")->valuedouble;
        double version = cJSON_GetObjectItemCaseSensitive(j, "version")->valuedouble;
        const cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "workers"), 0);
        ck_assert(w != NULL);
        double stale = cJSON_GetObjectItemCaseSensitive(w, "staleness")->valuedouble;
        ck_assert_msg(pushes == (double)steps && version == (double)steps,
                      "overlap %d: %llu steps, the shard applied %.0f pushes (version %.0f)",
                      overlap, steps, pushes, version);
        ck_assert_msg(stale == overlap, "overlap %d: the last push was %.0f versions stale",
                      overlap, stale);
        cJSON_Delete(j);
        free(l);
        cl_teardown();
    }
}
END_TEST

/* Overlap in ssp (staleness 1), 2 shards x 2 workers: the shard holds an
 * ACK at the bound while the worker already computes its next gradient;
 * both finish every epoch, the shards applied exactly the workers' steps,
 * and the model learns. */
START_TEST(test_ssp_overlap)
{
    g_momentum = "0.3";
    cl_init(2, 2);
    cl_conf_write("ssp", "\"epochs\": 3, \"staleness\": 1, \"overlap\": true");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l[2];
    l[0] = cl_worker_wait_ok(0, RUN_MS);
    l[1] = cl_worker_wait_ok(1, RUN_MS);
    unsigned long long steps = 0;
    for (int w = 0; w < 2; w++) {
        ck_assert_msg(cl_count_lines(l[w], "epoch=") == 3 && strstr(l[w], "overlap=1"),
                      "w%d:\n%s", w, cl_tail(l[w]));
        steps += epoch_sum(l[w], "steps=");
    }
    ck_assert_msg(cl_last_test_acc(l[0]) > 50.0, "%s", cl_tail(l[0]));
    for (int s = 0; s < 2; s++) {
        cJSON *j = cl_shard_status(s);
        double pushes = cJSON_GetObjectItemCaseSensitive(j, "pushes")->valuedouble;
        ck_assert_msg(pushes == (double)steps, "shard %d applied %.0f pushes of %llu steps", s,
                      pushes, steps);
        cJSON_Delete(j);
    }
    cl_expect_finished(0, "all 2 workers done", 0);
    free(l[0]);
    free(l[1]);
}
END_TEST

/* Overlap with 2 shards x 2 workers, top-k both ways and checkpoints:
 * shard 1 is killed with SIGKILL while pushes are out unacknowledged and
 * started again from its checkpoint; the workers send those pushes again
 * (or learn from the WELCOME that the shard had them), finish every epoch
 * and never see a reply they did not expect.  Momentum 0: the extra step
 * of staleness acts as momentum of its own (0.5 on top drifts off over
 * these 300 epochs). */
START_TEST(test_overlap_shard_kill9)
{
    g_momentum = "0";
    kill9_shard1("\"overlap\": true, \"compression\": {\"push\": \"topk\", \"pull\": "
                 "\"topk\", \"topk_percent\": 10}");
}
END_TEST

/* job.tcp_congestion: both ends of every connection use the named
 * congestion control (reno, which every host allows; this machine's
 * default is bbr, a Debian box's cubic), as ss(8) shows mid-run; a name
 * the host does not have stops psd and workerd at start, saying so. */
START_TEST(test_tcp_congestion)
{
    g_momentum = "0.5";
    cl_init(1, 2);
    cl_conf_write("async", "\"epochs\": 100000, \"tcp_congestion\": \"reno\"");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    double end = psc_now() + 30;
    for (;;) { /* both workers connected and training */
        cJSON *j = cl_shard_status(0);
        int going = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "workers")) == 2 &&
                    cJSON_GetObjectItemCaseSensitive(j, "pushes")->valuedouble >= 10;
        cJSON_Delete(j);
        if (going)
            break;
        ck_assert_msg(psc_now() < end, "the workers did not start training");
        usleep(50000);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd,
             "ss -tinH state established '( sport = :%d or dport = :%d )' 2>&1", g_cl.port[0],
             g_cl.port[0]);
    FILE *f = popen(cmd, "r");
    ck_assert_msg(f != NULL, "cannot run ss");
    char line[4096], all[16384] = "";
    int reno = 0, other = 0;
    while (fgets(line, sizeof line, f)) {
        if (strlen(all) + strlen(line) < sizeof all)
            strcat(all, line);
        if (line[0] != ' ' && line[0] != '\t')
            continue; /* the address line; the details follow indented */
        char cc[32] = "";
        if (sscanf(line, " %31s", cc) == 1 && strcmp(cc, "reno") == 0)
            reno++;
        else
            other++;
    }
    pclose(f);
    /* two workers, both ends of each connection */
    ck_assert_msg(reno >= 4 && other == 0, "%d reno, %d other connections:\n%s", reno, other, all);

    kill(g_cl.worker[0], SIGKILL);
    kill(g_cl.worker[1], SIGKILL);
    kill(g_cl.psd[0], SIGKILL);
    ck_assert_int_eq(cl_wait_exit(g_cl.psd[0], 5000), 128 + SIGKILL);
    cl_conf_write("async", "\"epochs\": 1, \"tcp_congestion\": \"nosuchcc\"");
    cl_psd_start(0, 0);
    cl_worker_start(0, NULL);
    const char *who[2] = {"ps0", "w0"};
    pid_t pid[2] = {g_cl.psd[0], g_cl.worker[0]};
    for (int i = 0; i < 2; i++) {
        int st = cl_wait_exit(pid[i], 10000);
        char log[FIXTURES_PATH_MAX + 32];
        cl_log_path(log, sizeof log, who[i]);
        char *l = cl_file_text(log);
        ck_assert_msg(st > 0 && st < 128 && strstr(l, "job.tcp_congestion") &&
                          strstr(l, "\"nosuchcc\" cannot be used here") &&
                          strstr(l, "this host has: "),
                      "%s exited with %d:\n%s", who[i], st, l);
        free(l);
    }
}
END_TEST

/* Async with a cluster key and fp16 both ways: the PULL behind each PUSH
 * is sealed after it (the session's counters stay in step), the workers
 * train and finish, and nothing fails to open on either side. */
START_TEST(test_async_key_pipelined)
{
    g_momentum = "0.3"; /* 2 epochs at 0.5 once ended at 45.5% (ASan run): async noise */
    cl_init(2, 2);
    cl_conf_write("async",
                  "\"epochs\": 5, \"compression\": {\"push\": \"fp16\", \"pull\": \"fp16\"}");
    key_new("cluster.key");
    conf_with_key(g_cl.conf, "cluster.key");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char *l[2];
    l[0] = cl_worker_wait_ok(0, RUN_MS);
    l[1] = cl_worker_wait_ok(1, RUN_MS);
    for (int w = 0; w < 2; w++)
        ck_assert_msg(cl_count_lines(l[w], "epoch=") == 5 &&
                          cl_count_lines(l[w], "connected (authenticated)") == 2 &&
                          !strstr(l[w], "retrying") && !strstr(l[w], "failed authentication"),
                      "w%d:\n%s", w, cl_tail(l[w]));
    double acc = cl_last_test_acc(l[0]);
    ck_assert_msg(acc > 50.0, "w0's test accuracy %.2f%% with a key:\n%s", acc, cl_tail(l[0]));
    for (int i = 0; i < 2; i++) {
        char log[FIXTURES_PATH_MAX + 32], name[8];
        snprintf(name, sizeof name, "ps%d", i);
        cl_log_path(log, sizeof log, name);
        char *ps = cl_file_text(log);
        ck_assert_msg(!strstr(ps, "frame authentication failed") && !strstr(ps, "bad frame"),
                      "%s", cl_tail(ps));
        free(ps);
    }
    free(l[0]);
    free(l[1]);
}
END_TEST

Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 180);
    tcase_add_checked_fixture(tc, NULL, cl_teardown);
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
    tcase_add_test(tc, test_key_cluster);
    tcase_add_test(tc, test_slowdown);
    tcase_add_test(tc, test_wait_stats);
    tcase_add_test(tc, test_async_pipelined_pull);
    tcase_add_test(tc, test_ssp_pipelined_pull);
    tcase_add_test(tc, test_async_shard_kill9_pipelined);
    tcase_add_test(tc, test_async_key_pipelined);
    tcase_add_test(tc, test_async_overlap);
    tcase_add_test(tc, test_overlap_equals_standalone);
    tcase_add_test(tc, test_overlap_shard_kill9);
    tcase_add_test(tc, test_ssp_overlap);
    tcase_add_test(tc, test_local_steps_equals_standalone);
    tcase_add_test(tc, test_async_local_steps);
    tcase_add_test(tc, test_tcp_congestion);
    suite_add_tcase(s, tc);
    return s;
}
