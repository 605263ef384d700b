/* bgeval.c - see bgeval.h.  A thread waits on a condition variable for a
 * copy of the weights, evaluates it with its own engine, and leaves the
 * result for the owner to collect; the mutex guards the state below. */
#include "bgeval.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

#define BGEVAL_CHUNK 256 /* images per forward pass */

typedef enum { BG_IDLE, BG_RUNNING, BG_DONE } bg_state;

struct bgeval {
    const cnn_model *m;
    const dataset *test;
    cnn_engine *engine; /* the thread's */
    float *params;      /* the copy being evaluated */
    float *x;           /* BGEVAL_CHUNK images */
    uint8_t *y;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* state or quit changed */
    bg_state state;
    int quit;
    bgeval_tag tag;
    bgeval_result res;
    int failed;
    char err[512];
};

static void *bg_main(void *arg)
{
    bgeval *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->state != BG_RUNNING && !b->quit)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->quit)
            break;
        pthread_mutex_unlock(&b->mu);
        /* params, x, y and the engine are the thread's while RUNNING */
        bgeval_result r = {.tag = b->tag};
        char err[512] = "";
        double t0 = trainer_now();
        int rc = trainer_eval_params(b->m, b->engine, b->params, b->test, b->x, b->y,
                                     BGEVAL_CHUNK, &r.loss, &r.acc, err, sizeof err);
        r.seconds = trainer_now() - t0;
        pthread_mutex_lock(&b->mu);
        b->res = r;
        b->failed = rc != 0;
        snprintf(b->err, sizeof b->err, "%s", err);
        b->state = BG_DONE;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

bgeval *bgeval_new(const cnn_model *m, const kern_ops *k, const dataset *test, char *err,
                   size_t errlen)
{
    bgeval *b = calloc(1, sizeof *b);
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    if (!b) {
        snprintf(err, errlen, "out of memory for the background evaluation");
        return NULL;
    }
    b->m = m;
    b->test = test;
    b->params = malloc(m->nparams * sizeof(float));
    b->x = malloc(BGEVAL_CHUNK * in * sizeof(float));
    b->y = malloc(BGEVAL_CHUNK);
    if (!b->params || !b->x || !b->y) {
        snprintf(err, errlen, "out of memory for the background evaluation");
        goto fail;
    }
    b->engine = cnn_engine_new(m, k, 1, BGEVAL_CHUNK, err, errlen);
    if (!b->engine)
        goto fail;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    int rc = pthread_create(&b->th, NULL, bg_main, b);
    if (rc != 0) {
        snprintf(err, errlen, "background evaluation thread: %s", strerror(rc));
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        goto fail;
    }
    return b;
fail:
    cnn_engine_free(b->engine);
    free(b->params);
    free(b->x);
    free(b->y);
    free(b);
    return NULL;
}

int bgeval_start(bgeval *b, const float *params, const bgeval_tag *tag)
{
    pthread_mutex_lock(&b->mu);
    bg_state st = b->state;
    pthread_mutex_unlock(&b->mu);
    if (st != BG_IDLE)
        return 1;
    /* IDLE: the thread does not touch params until told */
    memcpy(b->params, params, b->m->nparams * sizeof(float));
    pthread_mutex_lock(&b->mu);
    b->tag = *tag;
    b->state = BG_RUNNING;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

int bgeval_collect(bgeval *b, int wait, bgeval_result *out, char *err, size_t errlen)
{
    pthread_mutex_lock(&b->mu);
    while (wait && b->state == BG_RUNNING)
        pthread_cond_wait(&b->cv, &b->mu);
    int rc = 0;
    if (b->state == BG_DONE) {
        b->state = BG_IDLE;
        if (b->failed) {
            snprintf(err, errlen, "%s", b->err);
            rc = -1;
        } else {
            *out = b->res;
            rc = 1;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void bgeval_free(bgeval *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->quit = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->th, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    cnn_engine_free(b->engine);
    free(b->params);
    free(b->x);
    free(b->y);
    free(b);
}
