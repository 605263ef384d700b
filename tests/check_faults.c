/* check_faults.c - faults of a running cluster on 127.0.0.1 (tests/cluster.h):
 *
 *  - kill -9 of a worker: async training goes on; the restarted worker
 *    rejoins and the job still ends;
 *  - a stopped (hung) worker in sync mode: the barrier drops it within its
 *    timeout and the others go on; restarted, it rejoins;
 *  - kill -9 of a shard, restarted with the same command: it resumes from its
 *    last checkpoint, the workers reconnect by themselves, and the job ends
 *    with accuracy within 1 point of the same job without the fault;
 *  - a checkpoint directory that is full or read-only (a tmpfs, as root):
 *    an error in the log, training goes on, the last good checkpoint stays;
 *  - a training file truncated while the workers run: they read it at start
 *    and go on; a worker restarted against it stops with a clear error, and
 *    the other still finishes.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "cluster.h"
#include "fixtures.h"
#include "proto.h"
#include "psd_client.h"

/* Wait until file `path` contains `what` at least n times (fails after ms). */
static void wait_for(const char *path, const char *what, int n, int ms)
{
    double end = psc_now() + ms / 1000.0;
    for (;;) {
        char *l = cl_file_text(path);
        int k = cl_count_lines(l, what);
        if (k >= n) {
            free(l);
            return;
        }
        if (psc_now() > end)
            ck_abort_msg("%s: \"%s\" seen %d times, want %d, after %d ms:\n%s", path, what, k, n,
                         ms, l);
        free(l);
        usleep(20000);
    }
}

static void node_log(char *out, size_t len, const char *node)
{
    cl_log_path(out, len, node);
}

/* Shard s's version, from its STATUS. */
static uint64_t shard_version(int s)
{
    cJSON *j = cl_shard_status(s);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    ck_assert(cJSON_IsNumber(v));
    uint64_t r = (uint64_t)v->valuedouble;
    cJSON_Delete(j);
    return r;
}

/* ------------------------------------------------------------- workers */

/* kill -9 a worker in async mode: the other goes on; restarted, it rejoins;
 * both finish and the job ends. */
START_TEST(test_worker_kill9_async)
{
    g_momentum = "0.5";
    cl_init(2, 2);
    cl_conf_write("async", "\"epochs\": 150");
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char w0[FIXTURES_PATH_MAX + 32], w1[FIXTURES_PATH_MAX + 32], p0[FIXTURES_PATH_MAX + 32];
    node_log(w0, sizeof w0, "w0");
    node_log(w1, sizeof w1, "w1");
    node_log(p0, sizeof p0, "ps0");
    wait_for(w1, "epoch=", 3, 30000);
    kill(g_cl.worker[1], SIGKILL);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[1], 5000), 128 + SIGKILL);
    wait_for(p0, "worker w1 disconnected", 1, 5000);
    /* w0 goes on alone: its epochs keep coming and the version keeps rising */
    char *l = cl_file_text(w0);
    int e0 = cl_count_lines(l, "epoch=");
    free(l);
    uint64_t v0 = shard_version(0);
    wait_for(w0, "epoch=", e0 + 3, 30000);
    ck_assert_uint_gt(shard_version(0), v0);
    /* the restarted w1 rejoins (same node id: its seq goes on from the
     * shard's last_seq) */
    unlink(w1);
    cl_worker_start(1, NULL);
    wait_for(p0, "worker w1 joined", 2, 10000);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    ck_assert_msg(cl_count_lines(l1, "epoch=") == 150, "%s", l1);
    ck_assert_msg(cl_last_test_acc(l0) > 50.0, "%s", l0);
    cl_expect_finished(0, "all 2 workers done", 0);
    cl_expect_finished(1, "all 2 workers done", 0);
    free(l0);
    free(l1);
}
END_TEST

/* A hung worker (SIGSTOP) in sync mode: each round waits at most the
 * barrier timeout (400 ms), then goes on without it; killed and restarted,
 * it rejoins the rounds. */
START_TEST(test_worker_hung_sync)
{
    cl_init(1, 2);
    cl_conf_write("sync", "\"epochs\": 100, \"barrier_timeout_ms\": 400");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char w1[FIXTURES_PATH_MAX + 32], p0[FIXTURES_PATH_MAX + 32];
    node_log(w1, sizeof w1, "w1");
    node_log(p0, sizeof p0, "ps0");
    wait_for(w1, "epoch=", 2, 30000);
    kill(g_cl.worker[1], SIGSTOP);
    double t0 = psc_now();
    wait_for(p0, "barrier timeout", 1, 5000);
    double dt = psc_now() - t0;
    ck_assert_msg(dt < 2.0, "first barrier timeout after %.2f s", dt);
    uint64_t v0 = shard_version(0);
    wait_for(p0, "without w1", 4, 10000); /* rounds go on, one per timeout */
    ck_assert_uint_ge(shard_version(0), v0 + 3);
    kill(g_cl.worker[1], SIGKILL);
    ck_assert_int_eq(cl_wait_exit(g_cl.worker[1], 5000), 128 + SIGKILL);
    unlink(w1);
    cl_worker_start(1, NULL);
    wait_for(p0, "worker w1 joined", 2, 10000);
    free(cl_worker_wait_ok(0, RUN_MS));
    free(cl_worker_wait_ok(1, RUN_MS));
    cl_expect_finished(0, "all 2 workers done", 0);
}
END_TEST

/* ------------------------------------------------------------- shards */

/* One sync job, 2 shards + 2 workers, checkpoints every second; if
 * `fault`, shard 1 is killed with SIGKILL after its first checkpoint and
 * started again with the same command.  Returns w0's final accuracy; sets
 * *lost to the versions shard 1 lost. */
static double shard_job(int fault, uint64_t *lost)
{
    cl_init(2, 2);
    cl_conf_write("sync", "\"epochs\": 400, \"checkpoint_interval_s\": 1");
    cl_psd_start_args(0, 1, 0);
    cl_psd_start_args(1, 1, 0);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    *lost = 0;
    if (fault) {
        char p1[FIXTURES_PATH_MAX + 32];
        node_log(p1, sizeof p1, "ps1");
        wait_for(p1, "checkpoint: version", 1, 30000);
        uint64_t before = shard_version(1);
        kill(g_cl.psd[1], SIGKILL);
        ck_assert_int_eq(cl_wait_exit(g_cl.psd[1], 5000), 128 + SIGKILL);
        cl_psd_start_args(1, 1, 0); /* the same command: no --fresh */
        uint64_t after = shard_version(1);
        char *l = cl_file_text(p1);
        ck_assert_msg(strstr(l, "resumed from"), "%s", l);
        free(l);
        ck_assert_msg(after <= before && after > 0, "before %llu, resumed at %llu",
                      (unsigned long long)before, (unsigned long long)after);
        *lost = before - after;
    }
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    char *l1 = cl_worker_wait_ok(1, RUN_MS);
    if (fault)
        ck_assert_msg(strstr(l0, "retrying") || strstr(l0, "shard 1 (127.0.0.1"),
                      "w0 did not notice the restart:\n%s", l0);
    double acc = cl_last_test_acc(l0);
    cl_expect_finished(0, "all 2 workers done", 0);
    cl_expect_finished(1, "all 2 workers done", 0);
    free(l0);
    free(l1);
    cl_teardown();
    return acc;
}

START_TEST(test_shard_kill9_resumes)
{
    uint64_t lost0, lost1;
    double clean = shard_job(0, &lost0);
    double faulted = shard_job(1, &lost1);
    ck_assert_msg(clean > 50.0, "the unfaulted run reached only %.2f%%", clean);
    ck_assert_msg(faulted > clean - 1.0, "faulted run %.2f%%, unfaulted %.2f%% (%llu versions lost)",
                  faulted, clean, (unsigned long long)lost1);
    fprintf(stderr, "faults: shard kill -9: %.2f%% vs %.2f%% unfaulted, %llu versions lost\n",
            faulted, clean, (unsigned long long)lost1);
}
END_TEST

/* ------------------------------------------------------ checkpoint dir */

static char g_mnt[FIXTURES_PATH_MAX + 32];

static void mnt_teardown(void)
{
    if (g_mnt[0]) {
        umount2(g_mnt, MNT_DETACH);
        g_mnt[0] = '\0';
    }
    cl_teardown();
}

/* Checkpoint of shard 0 in the state dir: its version (the file must decode). */
static uint64_t ckpt_file_version(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[512];
    ck_assert_msg(psd_ckpt_file_read(path, &buf, &len, err, sizeof err) == 0, "%s", err);
    psd_ckpt ck;
    ck_assert_msg(psd_ckpt_decode(buf, len, &ck, err, sizeof err) == 0, "%s: %s", path, err);
    uint64_t v = ck.version;
    psd_ckpt_free(&ck);
    free(buf);
    return v;
}

/* The state dir on a 24 KiB tmpfs: room for one ray checkpoint (16 KiB),
 * not for the temporary file of the next.  Later remounted read-only. */
START_TEST(test_ckpt_dir_full_readonly)
{
    if (geteuid() != 0) {
        fprintf(stderr, "faults: checkpoint-dir test skipped: it mounts a tmpfs, which needs "
                        "root (euid %d)\n", (int)geteuid());
        return;
    }
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 100000");
    snprintf(g_mnt, sizeof g_mnt, "%s/state0", g_cl.dir);
    ck_assert_int_eq(mkdir(g_mnt, 0755), 0);
    if (mount("psd-test", g_mnt, "tmpfs", 0, "size=24k") != 0) {
        fprintf(stderr, "faults: checkpoint-dir test skipped: mount tmpfs: %s\n",
                strerror(errno));
        g_mnt[0] = '\0';
        return;
    }
    char ck[FIXTURES_PATH_MAX + 64], p0[FIXTURES_PATH_MAX + 32];
    snprintf(ck, sizeof ck, "%s/shard0.ckpt", g_mnt);
    node_log(p0, sizeof p0, "ps0");
    cl_psd_start(0, 1);
    psd_client op;
    proto_welcome wel;
    ck_assert_int_eq(psc_connect(&op, g_cl.port[0], 2000, 5000), 0);
    ck_assert_int_eq(psc_hello(&op, PROTO_ROLE_OPERATOR, "op", "", 0, &wel), 0);
    uint64_t v = 0;
    ck_assert_int_eq(psc_checkpoint(&op, &v), 0); /* the first one fits */
    ck_assert_uint_eq(ckpt_file_version(ck), v);
    cl_worker_start(0, NULL);
    char w0[FIXTURES_PATH_MAX + 32];
    node_log(w0, sizeof w0, "w0");
    wait_for(w0, "epoch=", 2, 30000);
    /* full: ERROR INTERNAL naming the cause, the old file intact */
    int rc = psc_checkpoint(&op, &v);
    ck_assert_int_eq(rc, PROTO_ERR_INTERNAL);
    ck_assert_msg(strstr(op.last_error.text, "No space left"), "%s", op.last_error.text);
    ck_assert_uint_eq(ckpt_file_version(ck), 0);
    wait_for(p0, "checkpoint failed", 1, 1000);
    /* training goes on */
    uint64_t a = shard_version(0);
    char *l = cl_file_text(w0);
    int e = cl_count_lines(l, "epoch=");
    free(l);
    wait_for(w0, "epoch=", e + 2, 30000);
    ck_assert_uint_gt(shard_version(0), a);
    /* read-only: the same */
    ck_assert_int_eq(mount(NULL, g_mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
    rc = psc_checkpoint(&op, &v);
    ck_assert_int_eq(rc, PROTO_ERR_INTERNAL);
    ck_assert_msg(strstr(op.last_error.text, "Read-only"), "%s", op.last_error.text);
    ck_assert_uint_eq(ckpt_file_version(ck), 0);
    psc_close(&op);
    e += 2;
    wait_for(w0, "epoch=", e + 2, 30000);
    /* SIGTERM: the final checkpoint cannot be written either: exit 1 and
     * say so; the file is still the good one */
    kill(g_cl.worker[0], SIGTERM);
    cl_wait_exit(g_cl.worker[0], 5000);
    kill(g_cl.psd[0], SIGTERM);
    ck_assert_int_eq(cl_wait_exit(g_cl.psd[0], 10000), 1);
    ck_assert_uint_eq(ckpt_file_version(ck), 0);
}
END_TEST

/* ---------------------------------------------------------------- data */

/* The training file is truncated while both workers run: they loaded it at
 * start and go on.  w1, killed and restarted against the truncated file,
 * stops with an error naming it; w0 finishes. */
START_TEST(test_data_truncated_mid_run)
{
    g_momentum = "0.5";
    cl_init(1, 2);
    cl_conf_write("async", "\"epochs\": 200");
    cl_psd_start(0, 1);
    cl_worker_start(0, NULL);
    cl_worker_start(1, NULL);
    char w1[FIXTURES_PATH_MAX + 32];
    node_log(w1, sizeof w1, "w1");
    wait_for(w1, "epoch=", 2, 30000);
    struct stat st;
    ck_assert_int_eq(stat(g_cl.train_img, &st), 0);
    ck_assert_int_eq(truncate(g_cl.train_img, st.st_size / 2), 0);
    kill(g_cl.worker[1], SIGKILL);
    cl_wait_exit(g_cl.worker[1], 5000);
    unlink(w1);
    pid_t again = cl_worker_start(1, NULL);
    int code = cl_wait_exit(again, 30000);
    char *l = cl_file_text(w1);
    ck_assert_msg(code > 0 && code < 128, "exit %d:\n%s", code, l);
    ck_assert_msg(strstr(l, "train-images") && strstr(l, "truncated"), "%s", l);
    free(l);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    ck_assert_msg(cl_count_lines(l0, "epoch=") == 200, "%s", l0);
    free(l0);
}
END_TEST

Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, NULL, mnt_teardown);
    tcase_add_test(tc, test_worker_kill9_async);
    tcase_add_test(tc, test_worker_hung_sync);
    tcase_add_test(tc, test_shard_kill9_resumes);
    tcase_add_test(tc, test_ckpt_dir_full_readonly);
    tcase_add_test(tc, test_data_truncated_mid_run);
    suite_add_tcase(s, tc);
    return s;
}
