/* check_train.c - training end to end in one process: the trainer loop
 * learns, and `workerd --standalone` behaves as a user expects (output
 * format, JSON, determinism, clear errors).  Data: synthetic digits written
 * as IDX files by tests/fixtures.c, so nothing outside the tree is needed. */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cnn.h"
#include "dataset.h"
#include "fixtures.h"
#include "kernels.h"
#include "shard.h"
#include "trainer.h"

/* ------------------------------------------------------------ learning */

/* Train model `name` on synthetic digits for `epochs`, pushing every
 * local_steps minibatches, and return held-out accuracy in percent. */
static double train_synthetic(const char *name, int epochs, int threads, size_t ntrain,
                              int local_steps)
{
    char err[256];
    ck_assert_int_eq(kern_init(err, sizeof(err)), 0);
    cnn_model m;
    ck_assert_int_eq(cnn_model_init(&m, name, err, sizeof(err)), 0);
    dataset train, test;
    ck_assert_int_eq(fixtures_synth_dataset(&train, ntrain, 1), 0);
    ck_assert_int_eq(fixtures_synth_dataset(&test, 1000, 2), 0);
    optim_config c;
    optim_config_default(&c);
    ps_shard whole;
    ck_assert_msg(ps_shard_init(&whole, &m, kern_active(), &c, 1, 0, m.nparams, err,
                                sizeof(err)) == 0, "%s", err);
    cnn_engine *e = cnn_engine_new(&m, kern_active(), threads, 64, err, sizeof(err));
    ck_assert_msg(e != NULL, "%s", err);
    trainer t;
    ck_assert_msg(trainer_init(&t, &m, e, &train, 0, 1, 64, 1, trainer_local_backend(&whole),
                               err, sizeof(err)) == 0, "%s", err);
    t.local_steps = local_steps;
    double acc0, loss0, acc, loss;
    ck_assert_int_eq(trainer_evaluate(&t, &test, &loss0, &acc0, err, sizeof(err)), 0);
    trainer_stats st;
    for (int ep = 1; ep <= epochs; ep++)
        ck_assert_int_eq(trainer_run_epoch(&t, ep, 0, &st, err, sizeof(err)), 0);
    ck_assert_int_eq(trainer_evaluate(&t, &test, &loss, &acc, err, sizeof(err)), 0);
    ck_assert_uint_eq(st.samples, ntrain);
    /* one optimizer step per push: a round of local steps ends with its epoch */
    long batches = (long)((ntrain + 63) / 64);
    ck_assert_uint_eq(whole.version, (uint64_t)(epochs * ((batches + local_steps - 1) / local_steps)));
    ck_assert_int_eq(t.step, epochs * batches);
    ck_assert_msg(loss < loss0, "%s: loss did not fall: %g -> %g", name, loss0, loss);
    fprintf(stderr, "learning test: %s accuracy %.1f%% -> %.1f%% (loss %.3f -> %.3f)\n", name,
            acc0, acc, loss0, loss);
    trainer_free(&t);
    cnn_engine_free(e);
    ps_shard_free(&whole);
    dataset_free(&train);
    dataset_free(&test);
    return acc;
}

START_TEST(test_lenet_learns)
{
    double acc = train_synthetic("lenet", 1, 2, 4000, 1);
    ck_assert_msg(acc >= 80.0, "lenet reached only %.1f%% (chance is 10%%)", acc);
}
END_TEST

START_TEST(test_ray_learns)
{
    double acc = train_synthetic("ray", 3, 1, 4000, 1);
    ck_assert_msg(acc >= 60.0, "ray reached only %.1f%% (chance is 10%%)", acc);
}
END_TEST

/* Two minibatches per push (job.local_steps 2): half the optimizer steps,
 * each the sum of two local ones, and it learns as well. */
START_TEST(test_ray_learns_local_steps)
{
    double acc = train_synthetic("ray", 3, 1, 4000, 2);
    ck_assert_msg(acc >= 60.0, "ray with 2 local steps reached only %.1f%%", acc);
}
END_TEST

/* ------------------------------------------------------- local steps */

/* A backend that pulls fixed weights and records what the trainer hands
 * it: the pushes, and the slices grad_ready reports as final. */
typedef struct {
    const float *w;
    size_t n;
    float lr;
    int pulls, pushes, ready;
    float *pushed[4];
    int push_samples[4];
    long push_step[4];
    float *ready_vals[4]; /* per push: each grad_ready slice, where reported */
    size_t ready_from[4];
    long ready_step[8];
    int ready_samples[8];
} rec_backend;

static int rec_pull(void *ctx, float *params, uint64_t *version, char *err, size_t errlen)
{
    rec_backend *r = ctx;
    memcpy(params, r->w, r->n * sizeof(float));
    *version = (uint64_t)r->pulls++;
    return 0;
}

static int rec_push(void *ctx, const float *grad, uint64_t version, long step, int samples,
                    char *err, size_t errlen)
{
    rec_backend *r = ctx;
    ck_assert_int_lt(r->pushes, 4);
    ck_assert_uint_eq(version, (uint64_t)r->pulls - 1); /* the round's one pull */
    r->pushed[r->pushes] = malloc(r->n * sizeof(float));
    memcpy(r->pushed[r->pushes], grad, r->n * sizeof(float));
    r->push_samples[r->pushes] = samples;
    r->push_step[r->pushes] = step;
    r->pushes++;
    return 0;
}

static void rec_ready(void *ctx, const float *grad, size_t from, uint64_t version, long step,
                      int samples)
{
    rec_backend *r = ctx;
    ck_assert_int_lt(r->ready, 8);
    int p = r->pushes; /* the push this slice belongs to */
    if (!r->ready_vals[p]) {
        r->ready_vals[p] = malloc(r->n * sizeof(float));
        r->ready_from[p] = r->n;
    }
    /* each call reports the part below the last one's */
    ck_assert_uint_lt(from, r->ready_from[p]);
    memcpy(r->ready_vals[p] + from, grad + from, (r->ready_from[p] - from) * sizeof(float));
    r->ready_from[p] = from;
    r->ready_step[r->ready] = step;
    r->ready_samples[r->ready] = samples;
    r->ready++;
}

static void rec_local_step(void *ctx, const float *grad, float *params, uint64_t version)
{
    rec_backend *r = ctx;
    for (size_t i = 0; i < r->n; i++)
        params[i] -= r->lr * grad[i];
}

/* 5 minibatches of 16 with local_steps 2: rounds of 2, 2 and 1 (the epoch
 * ends it), one pull each.  Each push is, bit for bit, the gradient of the
 * round's first minibatch on the pulled weights plus that of the second on
 * those weights after the local step; with grad_ready, only the round's
 * last minibatch reports slices, and they hold that sum. */
START_TEST(test_local_steps_rounds)
{
    char err[256];
    ck_assert_int_eq(kern_init(err, sizeof(err)), 0);
    cnn_model m;
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof(err)), 0);
    dataset train;
    ck_assert_int_eq(fixtures_synth_dataset(&train, 80, 3), 0);
    optim_config c;
    optim_config_default(&c);
    ps_shard init;
    ck_assert_msg(ps_shard_init(&init, &m, kern_active(), &c, 7, 0, m.nparams, err,
                                sizeof(err)) == 0, "%s", err);
    cnn_engine *e = cnn_engine_new(&m, kern_active(), 1, 16, err, sizeof(err));
    ck_assert_msg(e != NULL, "%s", err);
    rec_backend r;
    memset(&r, 0, sizeof(r));
    r.w = init.w;
    r.n = m.nparams;
    r.lr = 0.125f;
    param_backend be = { &r, rec_pull, rec_push, NULL, rec_ready, rec_local_step };
    trainer t;
    ck_assert_msg(trainer_init(&t, &m, e, &train, 0, 1, 16, 5, be, err, sizeof(err)) == 0,
                  "%s", err);
    t.local_steps = 2;
    trainer_stats st;
    ck_assert_msg(trainer_run_epoch(&t, 1, 0, &st, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(st.steps, 5);
    ck_assert_uint_eq(st.samples, 80);
    ck_assert_int_eq(r.pulls, 3);
    ck_assert_int_eq(r.pushes, 3);
    const int want_samples[3] = { 32, 32, 16 };
    const long want_step[3] = { 1, 3, 4 };

    /* the same minibatches, the same arithmetic, done here */
    uint32_t order[80];
    dataset_shuffle(order, 80, 0, 5, 1);
    size_t in = (size_t)m.in_c * m.in_h * m.in_w;
    float *x = malloc(16 * in * sizeof(float)), *p = malloc(r.n * sizeof(float));
    float *g = malloc(r.n * sizeof(float)), *want = malloc(r.n * sizeof(float));
    uint8_t y[16];
    int b = 0;
    for (int k = 0; k < 3; k++) {
        memcpy(p, init.w, r.n * sizeof(float));
        for (int j = 0; j < (k < 2 ? 2 : 1); j++, b++) {
            double loss;
            int correct;
            dataset_gather(&train, order + 16 * b, 16, x, y);
            cnn_engine_grad(e, p, x, y, 16, g, &loss, &correct);
            for (size_t i = 0; i < r.n; i++) {
                want[i] = j == 0 ? g[i] : want[i] + g[i];
                p[i] -= r.lr * g[i];
            }
        }
        ck_assert_int_eq(r.push_samples[k], want_samples[k]);
        ck_assert_int_eq(r.push_step[k], want_step[k]);
        ck_assert_msg(memcmp(r.pushed[k], want, r.n * sizeof(float)) == 0,
                      "push %d is not the sum of its round's gradients", k);
        /* ray: one layer's slice above the first one's, reported early */
        ck_assert_ptr_nonnull(r.ready_vals[k]);
        ck_assert_uint_gt(r.ready_from[k], 0);
        ck_assert_msg(memcmp(r.ready_vals[k] + r.ready_from[k], want + r.ready_from[k],
                             (r.n - r.ready_from[k]) * sizeof(float)) == 0,
                      "push %d: a grad_ready slice is not the round's sum", k);
    }
    ck_assert_int_eq(r.ready, 3); /* none from the local steps */
    for (int k = 0; k < r.ready; k++) {
        ck_assert_int_eq(r.ready_step[k], want_step[k]);
        ck_assert_int_eq(r.ready_samples[k], want_samples[k]);
    }
    for (int k = 0; k < 4; k++) {
        free(r.pushed[k]);
        free(r.ready_vals[k]);
    }
    free(x);
    free(p);
    free(g);
    free(want);
    trainer_free(&t);
    cnn_engine_free(e);
    ps_shard_free(&init);
    dataset_free(&train);
}
END_TEST

/* ---------------------------------------------------------------- CLI */

static char tmpdir[FIXTURES_PATH_MAX];
static char train_img[FIXTURES_PATH_MAX], train_lbl[FIXTURES_PATH_MAX];
static char test_img[FIXTURES_PATH_MAX], test_lbl[FIXTURES_PATH_MAX];

static void cli_setup(void)
{
    ck_assert_int_eq(fixtures_tmpdir_make(tmpdir, sizeof(tmpdir)), 0);
    ck_assert_int_eq(fixtures_synth_write(tmpdir, "train", 1500, 1, 1, train_img, train_lbl,
                                          sizeof(train_img)), 0);
    ck_assert_int_eq(fixtures_synth_write(tmpdir, "test", 500, 2, 0, test_img, test_lbl,
                                          sizeof(test_img)), 0);
}

static void cli_teardown(void)
{
    fixtures_tmpdir_remove(tmpdir);
}

typedef struct cmd_result {
    int status; /* exit code, or -1 if killed */
    char out[65536];
    char err[65536];
} cmd_result;

static void read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t r;
    while (len + 1 < cap && (r = read(fd, buf + len, cap - 1 - len)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        len += (size_t)r;
    }
    buf[len] = 0;
}

/* Run $PSD_BIN/workerd with args (NULL-terminated) and capture its output
 * (stdout and stderr go to files, so neither can block the other). */
static void run_workerd(cmd_result *res, const char *const *args)
{
    const char *bin = getenv("PSD_BIN");
    ck_assert_msg(bin != NULL, "PSD_BIN is not set (run through make test)");
    char path[FIXTURES_PATH_MAX], outp[FIXTURES_PATH_MAX], errp[FIXTURES_PATH_MAX];
    snprintf(path, sizeof(path), "%s/workerd", bin);
    fixtures_path_join(outp, sizeof(outp), tmpdir, "stdout");
    fixtures_path_join(errp, sizeof(errp), tmpdir, "stderr");
    const char *argv[64];
    int n = 0;
    argv[n++] = path;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0)
            _exit(127);
        dup2(o, 1);
        dup2(e, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    res->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    int fd = open(outp, O_RDONLY);
    read_all(fd, res->out, sizeof(res->out));
    close(fd);
    fd = open(errp, O_RDONLY);
    read_all(fd, res->err, sizeof(res->err));
    close(fd);
}

/* Value of key=... in a key=value line, or NAN. */
static double kv_get(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *p = strstr(line, pat);
    if (!p && strncmp(line, pat + 1, strlen(pat + 1)) == 0)
        p = line - 1;
    if (!p)
        return NAN;
    return strtod(p + strlen(pat), NULL);
}

START_TEST(test_cli_trains)
{
    const char *args[] = { "--standalone", "--model", "ray", "--train-images", train_img,
                           "--train-labels", train_lbl, "--test-images", test_img,
                           "--test-labels", test_lbl, "--epochs", "3", "--batch", "32",
                           "--lr", "0.05", "--seed", "3", NULL };
    static cmd_result r;
    run_workerd(&r, args);
    ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
    /* one line per epoch with the documented fields */
    char *save, *line = strtok_r(r.out, "\n", &save);
    double first_loss = NAN, last_loss = NAN, last_acc = NAN;
    for (int ep = 1; ep <= 3; ep++) {
        ck_assert_ptr_nonnull(line);
        ck_assert_double_eq(kv_get(line, "epoch"), ep);
        ck_assert(kv_get(line, "samples/s") > 0);
        ck_assert_double_eq(kv_get(line, "samples"), 1500);
        ck_assert(!isnan(kv_get(line, "loss")));
        last_acc = kv_get(line, "test_acc");
        ck_assert(last_acc >= 0 && last_acc <= 100);
        last_loss = kv_get(line, "loss");
        if (ep == 1)
            first_loss = last_loss;
        line = strtok_r(NULL, "\n", &save);
    }
    ck_assert_ptr_null(line);
    ck_assert_msg(last_loss < first_loss, "loss %g -> %g", first_loss, last_loss);
    ck_assert_msg(last_acc > 40, "test_acc %g after 3 epochs of ray", last_acc);
}
END_TEST

START_TEST(test_cli_json_and_determinism)
{
    const char *args[] = { "--standalone", "--model", "ray", "--train-images", train_img,
                           "--train-labels", train_lbl, "--test-images", test_img,
                           "--test-labels", test_lbl, "--epochs", "2", "--seed", "9",
                           "--threads", "2", "--json", NULL };
    static cmd_result a, b;
    run_workerd(&a, args);
    ck_assert_msg(a.status == 0, "%s", a.err);
    run_workerd(&b, args);
    ck_assert_int_eq(b.status, 0);
    char *sa, *sb, *la = strtok_r(a.out, "\n", &sa), *lb = strtok_r(b.out, "\n", &sb);
    int lines = 0;
    while (la && lb) {
        cJSON *ja = cJSON_Parse(la), *jb = cJSON_Parse(lb);
        ck_assert_msg(ja && jb, "not JSON: %s", la);
        const char *keys[] = { "epoch", "samples/s", "loss", "test_acc", "test_loss", "steps" };
        for (int i = 0; i < 6; i++)
            ck_assert_msg(cJSON_IsNumber(cJSON_GetObjectItem(ja, keys[i])), "no %s", keys[i]);
        /* the same seed gives the same training, to the bit */
        ck_assert_double_eq(cJSON_GetObjectItem(ja, "loss")->valuedouble,
                            cJSON_GetObjectItem(jb, "loss")->valuedouble);
        ck_assert_double_eq(cJSON_GetObjectItem(ja, "test_acc")->valuedouble,
                            cJSON_GetObjectItem(jb, "test_acc")->valuedouble);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        lines++;
        la = strtok_r(NULL, "\n", &sa);
        lb = strtok_r(NULL, "\n", &sb);
    }
    ck_assert_int_eq(lines, 2);
}
END_TEST

START_TEST(test_cli_help)
{
    const char *args[] = { "--help", NULL };
    static cmd_result r;
    run_workerd(&r, args);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "usage: workerd"));
    ck_assert_ptr_nonnull(strstr(r.out, "--threads"));
}
END_TEST

/* Each bad invocation: non-zero exit and a message that says what is wrong. */
START_TEST(test_cli_errors)
{
    char missing[FIXTURES_PATH_MAX], trunc_img[FIXTURES_PATH_MAX], trunc_lbl[FIXTURES_PATH_MAX];
    fixtures_path_join(missing, sizeof(missing), tmpdir, "no-such-file");
    ck_assert_int_eq(fixtures_synth_write(tmpdir, "trunc", 100, 4, 0, trunc_img, trunc_lbl,
                                          sizeof(trunc_img)), 0);
    ck_assert_int_eq(fixtures_file_truncate(trunc_img, 16 + 784 * 50 + 3), 0);
    struct {
        const char *args[16];
        int status;
        const char *needle;
    } cases[] = {
        { { "--standalone", "--model", "ray", "--train-images", train_img, "--train-labels",
            train_lbl, "--batch", "abc", NULL }, 2, "--batch 'abc'" },
        { { "--standalone", "--model", "ray", "--train-images", train_img, "--train-labels",
            train_lbl, "--lr", "-1", NULL }, 2, "--lr '-1'" },
        { { "--standalone", "--model", "resnet", "--train-images", train_img,
            "--train-labels", train_lbl, NULL }, 2, "unknown model 'resnet'" },
        { { "--standalone", "--model", "ray", "--train-labels", train_lbl, NULL }, 2,
          "--train-images" },
        { { "--model", "ray", "--train-images", train_img, "--train-labels", train_lbl, NULL },
          2, "--standalone" },
        { { "--standalone", "--bogus", NULL }, 2, "--bogus" },
        { { "--standalone", "--model", "ray", "--train-images", train_img, "--train-labels",
            train_lbl, "--local-steps", "0", NULL }, 2, "--local-steps '0'" },
        { { "--standalone", "--model", "ray", "--train-images", train_img, "--train-labels",
            train_lbl, "--local-steps", "2", "--overlap", NULL }, 2, "exclude each other" },
        { { "--standalone", "--model", "ray", "--train-images", missing, "--train-labels",
            train_lbl, NULL }, 1, "no-such-file" },
        { { "--standalone", "--model", "ray", "--train-images", trunc_img, "--train-labels",
            trunc_lbl, NULL }, 1, "truncated" },
        { { "--standalone", "--model", "ray", "--train-images", train_img, "--train-labels",
            test_lbl, NULL }, 1, "labels" },
        { { "--standalone", "--model", "ray", "--train-images", test_lbl, "--train-labels",
            train_lbl, NULL }, 1, "magic" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static cmd_result r;
        run_workerd(&r, cases[i].args);
        ck_assert_msg(r.status == cases[i].status, "case %zu: exit %d, want %d; stderr: %s", i,
                      r.status, cases[i].status, r.err);
        ck_assert_msg(strstr(r.err, cases[i].needle) != NULL,
                      "case %zu: stderr lacks '%s': %s", i, cases[i].needle, r.err);
        ck_assert_msg(r.out[0] == 0, "case %zu printed results: %s", i, r.out);
    }
}
END_TEST

START_TEST(test_cli_simd_env)
{
    const char *args[] = { "--standalone", "--model", "ray", "--train-images", train_img,
                           "--train-labels", train_lbl, "--max-steps", "3", NULL };
    static cmd_result r;
    setenv("PSD_SIMD", "scalar", 1);
    run_workerd(&r, args);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_ptr_nonnull(strstr(r.err, "simd=scalar"));
    ck_assert_double_eq(kv_get(r.out, "steps"), 3);
    setenv("PSD_SIMD", "sse9", 1);
    run_workerd(&r, args);
    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "sse9"));
    unsetenv("PSD_SIMD");
}
END_TEST

Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("learning");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_lenet_learns);
    tcase_add_test(tc, test_ray_learns);
    tcase_add_test(tc, test_ray_learns_local_steps);
    tcase_add_test(tc, test_local_steps_rounds);
    suite_add_tcase(s, tc);
    if (!getenv("PSD_BIN")) {
        /* e.g. the aarch64 run under qemu, which builds no workerd binary */
        fprintf(stderr, "train suite: workerd CLI tests skipped: PSD_BIN is not set\n");
        return s;
    }
    tc = tcase_create("workerd-cli");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, cli_setup, cli_teardown);
    tcase_add_test(tc, test_cli_trains);
    tcase_add_test(tc, test_cli_json_and_determinism);
    tcase_add_test(tc, test_cli_help);
    tcase_add_test(tc, test_cli_errors);
    tcase_add_test(tc, test_cli_simd_env);
    suite_add_tcase(s, tc);
    return s;
}
