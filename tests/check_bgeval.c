/* check_bgeval.c - workerd's background evaluation (workerd/bgeval.c): it
 * gives exactly the in-line evaluation's loss and accuracy, of the weights
 * as they were when it started, one evaluation at a time. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "bgeval.h"
#include "cnn.h"
#include "dataset.h"
#include "fixtures.h"
#include "kernels.h"
#include "trainer.h"

/* In-line reference: trainer_eval_params with the same 256-image chunks. */
static void eval_inline(const cnn_model *m, const float *params, const dataset *ds,
                        double *loss, double *acc)
{
    char err[256];
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    float *x = malloc(256 * in * sizeof *x);
    uint8_t *y = malloc(256);
    cnn_engine *e = cnn_engine_new(m, kern_active(), 1, 256, err, sizeof err);
    ck_assert_msg(x && y && e, "%s", err);
    ck_assert_int_eq(trainer_eval_params(m, e, params, ds, x, y, 256, loss, acc, err, sizeof err),
                     0);
    cnn_engine_free(e);
    free(x);
    free(y);
}

START_TEST(test_bgeval_matches_inline)
{
    char err[256];
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    cnn_model m;
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof err), 0);
    dataset test;
    ck_assert_int_eq(fixtures_synth_dataset(&test, 300, 2), 0);
    float *a = malloc(m.nparams * sizeof *a), *b = malloc(m.nparams * sizeof *b);
    ck_assert(a && b);
    cnn_params_init(&m, 1, a, 0, m.nparams);
    cnn_params_init(&m, 2, b, 0, m.nparams);
    double la, aa, lb, ab;
    eval_inline(&m, a, &test, &la, &aa);
    eval_inline(&m, b, &test, &lb, &ab);
    ck_assert_msg(la != lb, "two inits give the same loss: the test could not tell them apart");

    bgeval *bg = bgeval_new(&m, kern_active(), &test, err, sizeof err);
    ck_assert_msg(bg != NULL, "%s", err);
    bgeval_result r;
    /* nothing started: nothing to collect, even waiting */
    ck_assert_int_eq(bgeval_collect(bg, 0, &r, err, sizeof err), 0);
    ck_assert_int_eq(bgeval_collect(bg, 1, &r, err, sizeof err), 0);
    bgeval_tag tag = {.version = 7, .step = 3, .samples = 192};
    float *w = malloc(m.nparams * sizeof *w);
    ck_assert_ptr_nonnull(w);
    memcpy(w, a, m.nparams * sizeof *w);
    ck_assert_int_eq(bgeval_start(bg, w, &tag), 0);
    /* the caller trains on: the evaluation has its own copy */
    memcpy(w, b, m.nparams * sizeof *w);
    /* one at a time: refused until collected */
    ck_assert_int_eq(bgeval_start(bg, w, &tag), 1);
    ck_assert_int_eq(bgeval_collect(bg, 1, &r, err, sizeof err), 1);
    ck_assert_uint_eq(r.tag.version, 7);
    ck_assert_int_eq(r.tag.step, 3);
    ck_assert_uint_eq(r.tag.samples, 192);
    ck_assert_msg(r.loss == la && r.acc == aa, "background %.9g / %.2f, in line %.9g / %.2f",
                  r.loss, r.acc, la, aa);
    ck_assert(r.seconds >= 0.0);
    ck_assert_int_eq(bgeval_collect(bg, 0, &r, err, sizeof err), 0);
    /* the next one, of the other weights */
    tag.version = 8;
    ck_assert_int_eq(bgeval_start(bg, w, &tag), 0);
    ck_assert_int_eq(bgeval_collect(bg, 1, &r, err, sizeof err), 1);
    ck_assert_uint_eq(r.tag.version, 8);
    ck_assert(r.loss == lb && r.acc == ab);
    /* freed with one in flight: joins, nothing leaks (valgrind, ASan) */
    ck_assert_int_eq(bgeval_start(bg, a, &tag), 0);
    bgeval_free(bg);
    bgeval_free(NULL);
    free(w);
    free(a);
    free(b);
    dataset_free(&test);
}
END_TEST

/* Test images the model cannot take: the thread reports the error. */
START_TEST(test_bgeval_error)
{
    char err[256];
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    cnn_model m;
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof err), 0);
    dataset test;
    ck_assert_int_eq(fixtures_synth_dataset(&test, 10, 2), 0);
    test.rows = 27; /* ray takes 28x28 */
    float *w = calloc(m.nparams, sizeof *w);
    ck_assert_ptr_nonnull(w);
    bgeval *bg = bgeval_new(&m, kern_active(), &test, err, sizeof err);
    ck_assert_msg(bg != NULL, "%s", err);
    bgeval_tag tag = {0};
    bgeval_result r;
    ck_assert_int_eq(bgeval_start(bg, w, &tag), 0);
    ck_assert_int_eq(bgeval_collect(bg, 1, &r, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "test images are 27x28"), "%s", err);
    /* idle again after the failure */
    test.rows = 28;
    ck_assert_int_eq(bgeval_start(bg, w, &tag), 0);
    ck_assert_int_eq(bgeval_collect(bg, 1, &r, err, sizeof err), 1);
    bgeval_free(bg);
    free(w);
    dataset_free(&test);
}
END_TEST

Suite *bgeval_suite(void)
{
    Suite *s = suite_create("bgeval");
    TCase *tc = tcase_create("thread");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bgeval_matches_inline);
    tcase_add_test(tc, test_bgeval_error);
    suite_add_tcase(s, tc);
    return s;
}
