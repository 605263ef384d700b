/* cluster.h - real clusters for the tests: $PSD_BIN/psd shards and
 * $PSD_BIN/workerd --placement workers on 127.0.0.1 and free ports, training
 * "ray" on a small synthetic digit set (tests/fixtures.h).
 *
 * Every process is started with PR_SET_PDEATHSIG (psc_spawn), tracked, and
 * SIGKILLed in cl_teardown(), so a failing test neither hangs nor leaves a
 * daemon behind.  Functions fail the current Check test on any error.
 */
#ifndef PSD_TESTS_CLUSTER_H
#define PSD_TESTS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "fixtures.h"

#define NP 1960 /* ray */
#define MAXPROC 16
#define RUN_MS 120000 /* a training run must end within this */
#define CL_MAX_SHARDS 2
#define CL_MAX_WORKERS 4

typedef struct cluster {
    char dir[FIXTURES_PATH_MAX];
    char conf[FIXTURES_PATH_MAX];
    char train_img[FIXTURES_PATH_MAX], train_lbl[FIXTURES_PATH_MAX];
    char test_img[FIXTURES_PATH_MAX], test_lbl[FIXTURES_PATH_MAX];
    int nshards, nworkers;
    int port[CL_MAX_SHARDS];
    pid_t psd[CL_MAX_SHARDS];
    pid_t worker[CL_MAX_WORKERS];
} cluster;

extern cluster g_cl;
/* Momentum of the job's SGD: async workers apply each other's gradients
 * with a step of delay, which 0.9 does not survive at lr 0.05. */
extern const char *g_momentum;

/* Wait up to ms for pid: its exit status, 128+signal, or -1 if running. */
int cl_wait_exit(pid_t pid, int ms);

void cl_teardown(void);

/* Start $PSD_BIN/<prog> with args (NULL-terminated); stdout and stderr go
 * to the file log.  The pid is tracked for teardown. */
pid_t cl_spawn(const char *prog, const char *const *args, const char *log);

char *cl_file_text(const char *path);

/* The last lines of a log (at most ~16 KiB), for failure messages. */
const char *cl_tail(const char *log);

void cl_log_path(char *out, size_t len, const char *name);

/* Data and ports; the placement is written by cl_conf_write. */
void cl_init(int nshards, int nworkers);

/* The placement: ps0..ps<n-1>, w0..w<n-1> (w0 evaluates). */
void cl_conf_write(const char *mode, const char *job_extra);

void cl_psd_start_args(int s, int wait_listen, int fresh);

void cl_psd_start(int s, int wait_listen);

pid_t cl_worker_start(int w, const char *extra);

/* Wait for worker w to exit; assert status 0 and return its log (caller
 * frees). */
char *cl_worker_wait_ok(int w, int ms);

/* The last "test_acc=" value in a log, or -1. */
double cl_last_test_acc(const char *l);
/* The highest test_acc= in a worker's log (-1 if none).  Async and ssp
 * runs of the tiny ray model swing: in 6-epoch runs an evaluation now and
 * then dipped from ~99% to 37-70%, mid-run or at the last one (stale
 * gradients; sync's runs are deterministic), so a test that asks "did it
 * learn" asks for the best evaluation, not the last. */
double cl_best_test_acc(const char *l);

int cl_count_lines(const char *l, const char *what);

/* Shard s's STATUS, parsed (caller cJSON_Delete()s it). */
cJSON *cl_shard_status(int s);

/* Shard s's whole range of weights; *version gets its version. */
void cl_shard_weights(int s, size_t lo, size_t hi, float *out, uint64_t *version);

/* Assert shard s says the job finished for a reason containing `why`, at
 * `version` (0: any), and wrote its final checkpoint at that version. */
void cl_expect_finished(int s, const char *why, uint64_t version);

#endif
