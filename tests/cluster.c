/* cluster.c - see cluster.h. */
#include "cluster.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "psd_client.h"

cluster g_cl;
static pid_t g_pids[MAXPROC];

const char *g_momentum = "0.9";

static void cl_pid_track(pid_t pid)
{
    for (int i = 0; i < MAXPROC; i++)
        if (g_pids[i] <= 0) {
            g_pids[i] = pid;
            return;
        }
}

static void cl_pid_untrack(pid_t pid)
{
    for (int i = 0; i < MAXPROC; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
}

/* Wait up to ms for pid: its exit status, 128+signal, or -1 if running. */
int cl_wait_exit(pid_t pid, int ms)
{
    double end = psc_now() + ms / 1000.0;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            cl_pid_untrack(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 && errno == ECHILD)
            return -2;
        if (psc_now() > end)
            return -1;
        usleep(20000);
    }
}

void cl_teardown(void)
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
pid_t cl_spawn(const char *prog, const char *const *args, const char *log)
{
    pid_t pid = psc_spawn(prog, args, log, log);
    ck_assert_int_gt(pid, 0);
    cl_pid_track(pid);
    return pid;
}

char *cl_file_text(const char *path)
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

const char *cl_tail(const char *log)
{
    size_t n = strlen(log);
    if (n <= 16384)
        return log;
    const char *p = log + n - 16384;
    const char *nl = strchr(p, '\n');
    return nl ? nl + 1 : p;
}

void cl_log_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s.log", g_cl.dir, name);
}

/* Data and ports; the placement is written by cl_conf_write. */
void cl_init(int nshards, int nworkers)
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
void cl_conf_write(const char *mode, const char *job_extra)
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
    if (strcmp(mode, "sync") != 0 || (job_extra && strstr(job_extra, "barrier_timeout_ms"))) {
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

void cl_psd_start_args(int s, int wait_listen, int fresh)
{
    char node[16], state[FIXTURES_PATH_MAX + 32], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "ps%d", s);
    snprintf(state, sizeof state, "%s/state%d", g_cl.dir, s);
    cl_log_path(log, sizeof log, node);
    const char *args[] = {"--placement", g_cl.conf, "--node", node, "--state-dir", state,
                          fresh ? "--fresh" : NULL, NULL};
    g_cl.psd[s] = cl_spawn("psd", args, log);
    if (!wait_listen)
        return;
    double end = psc_now() + 10;
    for (;;) {
        psd_client probe;
        if (psc_connect(&probe, g_cl.port[s], 0, 2000) == 0) {
            psc_close(&probe);
            return;
        }
        int st = cl_wait_exit(g_cl.psd[s], 0);
        if (st >= 0) {
            char *l = cl_file_text(log);
            ck_abort_msg("psd %d exited with %d before listening:\n%s", s, st, l);
        }
        ck_assert_msg(psc_now() < end, "psd %d did not start listening", s);
        usleep(20000);
    }
}

void cl_psd_start(int s, int wait_listen)
{
    cl_psd_start_args(s, wait_listen, 1);
}

pid_t cl_worker_start(int w, const char *extra)
{
    char node[16], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "w%d", w);
    cl_log_path(log, sizeof log, node);
    const char *args[] = {"--placement", g_cl.conf, "--node", node, extra, NULL};
    g_cl.worker[w] = cl_spawn("workerd", args, log);
    return g_cl.worker[w];
}

/* Wait for worker w to exit; assert status 0 and return its log (caller
 * frees). */
char *cl_worker_wait_ok(int w, int ms)
{
    char node[16], log[FIXTURES_PATH_MAX + 32];
    snprintf(node, sizeof node, "w%d", w);
    cl_log_path(log, sizeof log, node);
    int st = cl_wait_exit(g_cl.worker[w], ms);
    char *l = cl_file_text(log);
    ck_assert_msg(st == 0, "workerd %s exited with %d:\n%s", node, st, cl_tail(l));
    ck_assert_msg(!strstr(l, "Sanitizer") && !strstr(l, "runtime error:"),
                  "sanitizer report:\n%s", cl_tail(l));
    return l;
}

/* The last and the highest "test_acc=" values in a log (-1 if none). */
static void test_acc_scan(const char *l, double *last, double *best)
{
    *last = *best = -1;
    for (const char *p = strstr(l, "test_acc="); p; p = strstr(p + 1, "test_acc=")) {
        *last = strtod(p + strlen("test_acc="), NULL);
        if (*last > *best)
            *best = *last;
    }
}

double cl_last_test_acc(const char *l)
{
    double last, best;
    test_acc_scan(l, &last, &best);
    return last;
}

double cl_best_test_acc(const char *l)
{
    double last, best;
    test_acc_scan(l, &last, &best);
    return best;
}

int cl_count_lines(const char *l, const char *what)
{
    int n = 0;
    for (const char *p = strstr(l, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* Shard s's STATUS, parsed (caller cJSON_Delete()s it). */
cJSON *cl_shard_status(int s)
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
void cl_shard_weights(int s, size_t lo, size_t hi, float *out, uint64_t *version)
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
void cl_expect_finished(int s, const char *why, uint64_t version)
{
    cJSON *j = cl_shard_status(s);
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
