/* check_optim.c - SGD with momentum and weight decay, the learning-rate
 * schedules, and the parameter shard that applies them. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "optim.h"
#include "rng.h"
#include "shard.h"

/* PyTorch's SGD (dampening 0, no Nesterov) written out in double:
 *   d = g + wd*w; buf = d at the first step, else momentum*buf + d;
 *   w -= lr*buf.  (buf starting at 0 makes the first step the same.) */
static void ref_sgd(double *w, double *buf, const float *g, size_t n, double lr, double mom,
                    double wd)
{
    for (size_t i = 0; i < n; i++) {
        double d = g[i] + wd * w[i];
        buf[i] = mom * buf[i] + d;
        w[i] -= lr * buf[i];
    }
}

static void check_sgd_path(const kern_ops *k)
{
    const size_t n = 1037; /* not a multiple of any vector width */
    float *w = malloc(n * 4), *mom = calloc(n, 4), *g = malloc(n * 4);
    double *wd_ = malloc(n * 8), *bd = calloc(n, 8);
    rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < n; i++) {
        w[i] = rng_uniform(&r) * 2 - 1;
        wd_[i] = w[i];
    }
    optim_config c;
    optim_config_default(&c);
    c.lr = 0.1f;
    c.momentum = 0.9f;
    c.weight_decay = 1e-2f;
    c.schedule = OPTIM_SCHED_STEP;
    c.step_size = 2;
    c.gamma = 0.5f;
    for (long step = 0; step < 5; step++) {
        for (size_t i = 0; i < n; i++)
            g[i] = rng_uniform(&r) - 0.5f;
        optim_sgd_step(k, &c, step, w, mom, g, n);
        ref_sgd(wd_, bd, g, n, 0.1 * pow(0.5, (double)(step / 2)), 0.9, 1e-2);
    }
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(fabs(w[i] - wd_[i]) <= 1e-5 * (1 + fabs(wd_[i])), "%s w[%zu] %g vs %g",
                      k->name, i, (double)w[i], wd_[i]);
        ck_assert_msg(fabs(mom[i] - bd[i]) <= 1e-5 * (1 + fabs(bd[i])), "%s mom[%zu]", k->name, i);
    }
    /* momentum 0: plain SGD, the buffer is not needed */
    c.momentum = 0;
    c.weight_decay = 0;
    c.schedule = OPTIM_SCHED_CONSTANT;
    for (size_t i = 0; i < n; i++)
        wd_[i] = w[i];
    optim_sgd_step(k, &c, 0, w, NULL, g, n);
    for (size_t i = 0; i < n; i++)
        ck_assert(fabs(w[i] - (wd_[i] - 0.1 * g[i])) <= 1e-6);
    free(w); free(mom); free(g); free(wd_); free(bd);
}

START_TEST(test_sgd_matches_pytorch_formula)
{
    int tested = 0;
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        const kern_ops *k = kern_find((kern_path)p);
        if (k) {
            check_sgd_path(k);
            tested++;
        }
    }
    ck_assert_int_ge(tested, 1);
}
END_TEST

START_TEST(test_schedules)
{
    optim_config c;
    optim_config_default(&c);
    c.lr = 0.1f;
    ck_assert_float_eq(optim_lr_at(&c, 0), 0.1f);
    ck_assert_float_eq(optim_lr_at(&c, 100000), 0.1f);

    c.schedule = OPTIM_SCHED_STEP;
    c.step_size = 10;
    c.gamma = 0.1f;
    ck_assert_float_eq_tol(optim_lr_at(&c, 9), 0.1f, 1e-9f);
    ck_assert_float_eq_tol(optim_lr_at(&c, 10), 0.01f, 1e-9f);
    ck_assert_float_eq_tol(optim_lr_at(&c, 25), 0.001f, 1e-9f);

    c.schedule = OPTIM_SCHED_COSINE;
    c.total_steps = 100;
    c.lr_min = 0.001f;
    ck_assert_float_eq_tol(optim_lr_at(&c, 0), 0.1f, 1e-7f);
    ck_assert_float_eq_tol(optim_lr_at(&c, 50), 0.0505f, 1e-6f);
    ck_assert_float_eq_tol(optim_lr_at(&c, 100), 0.001f, 1e-7f);
    ck_assert_float_eq_tol(optim_lr_at(&c, 1000), 0.001f, 1e-7f);
    /* monotone decreasing */
    for (long s = 1; s <= 100; s++)
        ck_assert(optim_lr_at(&c, s) <= optim_lr_at(&c, s - 1));

    ck_assert_int_eq(optim_schedule_from_name("cosine"), OPTIM_SCHED_COSINE);
    ck_assert_int_eq(optim_schedule_from_name("step"), OPTIM_SCHED_STEP);
    ck_assert_int_eq(optim_schedule_from_name("constant"), OPTIM_SCHED_CONSTANT);
    ck_assert_int_eq(optim_schedule_from_name("linear"), -1);
    ck_assert_str_eq(optim_schedule_name(OPTIM_SCHED_STEP), "step");
}
END_TEST

START_TEST(test_config_check)
{
    optim_config c;
    char err[256];
    optim_config_default(&c);
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), 0);
    c.lr = 0;
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "learning rate"));
    optim_config_default(&c);
    c.momentum = 1.0f;
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "momentum"));
    optim_config_default(&c);
    c.weight_decay = -1;
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), -1);
    optim_config_default(&c);
    c.schedule = OPTIM_SCHED_STEP;
    c.step_size = 0;
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "step size"));
    optim_config_default(&c);
    c.schedule = OPTIM_SCHED_COSINE;
    c.total_steps = 0;
    ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_shard)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof(err)), 0);
    optim_config c;
    optim_config_default(&c);
    c.momentum = 0.5f;
    ps_shard s;
    ck_assert_int_eq(ps_shard_init(&s, &m, &kern_generic_ops, &c, 11, 16, 1000, err, sizeof(err)), 0);
    float *full = malloc(m.nparams * 4);
    cnn_params_init(&m, 11, full, 0, m.nparams);
    ck_assert_mem_eq(s.w, full + 16, (1000 - 16) * 4);
    ck_assert_uint_eq(s.version, 0);
    float *g = malloc(984 * 4);
    for (int i = 0; i < 984; i++)
        g[i] = 1.0f;
    ps_shard_apply(&s, g);
    ps_shard_apply(&s, g);
    ck_assert_uint_eq(s.version, 2);
    /* two steps of momentum 0.5 with g = 1: w -= lr*(1) + lr*(1.5) */
    ck_assert_float_eq_tol(s.w[0], full[16] - 0.05f * 2.5f, 1e-6f);
    ck_assert_float_eq_tol(s.mom[0], 1.5f, 1e-6f);
    ps_shard_free(&s);
    ck_assert_int_eq(ps_shard_init(&s, &m, &kern_generic_ops, &c, 1, 100, 5000, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "not inside"));
    free(full);
    free(g);
}
END_TEST

Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("sgd");
    tcase_add_test(tc, test_sgd_matches_pytorch_formula);
    tcase_add_test(tc, test_schedules);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_shard);
    suite_add_tcase(s, tc);
    return s;
}
