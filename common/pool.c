/* pool.c - see pool.h. */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct task_pool {
    int nthreads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start_cv; /* helpers wait here for a new generation */
    pthread_cond_t done_cv;  /* the caller waits here for pending == 0 */
    unsigned long generation;
    int pending;             /* helpers still running this generation */
    int stopping;
    pool_fn fn;
    void *arg;
};

typedef struct pool_helper_arg {
    task_pool *pool;
    int tid;
} pool_helper_arg;

static void *pool_helper_main(void *p)
{
    pool_helper_arg *ha = p;
    task_pool *pool = ha->pool;
    int tid = ha->tid;
    free(ha);
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        while (pool->generation == seen && !pool->stopping)
            pthread_cond_wait(&pool->start_cv, &pool->mu);
        if (pool->stopping) {
            pthread_mutex_unlock(&pool->mu);
            return NULL;
        }
        seen = pool->generation;
        pool_fn fn = pool->fn;
        void *arg = pool->arg;
        pthread_mutex_unlock(&pool->mu);

        fn(arg, tid, pool->nthreads);

        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0)
            pthread_cond_signal(&pool->done_cv);
        pthread_mutex_unlock(&pool->mu);
    }
}

task_pool *pool_new(int threads, char *err, size_t errlen)
{
    if (threads < 1) {
        snprintf(err, errlen, "thread count must be at least 1 (got %d)", threads);
        return NULL;
    }
    task_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->nthreads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (threads > 1) {
        p->threads = calloc((size_t)threads - 1, sizeof(pthread_t));
        if (!p->threads) {
            snprintf(err, errlen, "out of memory");
            pool_free(p);
            return NULL;
        }
    }
    for (int t = 1; t < threads; t++) {
        pool_helper_arg *ha = malloc(sizeof(*ha));
        int rc = ha ? 0 : -1;
        if (ha) {
            ha->pool = p;
            ha->tid = t;
            rc = pthread_create(&p->threads[t - 1], NULL, pool_helper_main, ha);
            if (rc != 0)
                free(ha);
        }
        if (rc != 0) {
            snprintf(err, errlen, "cannot start thread %d of %d: %s", t + 1, threads,
                     rc > 0 ? strerror(rc) : "out of memory");
            p->nthreads = t; /* join only those started */
            pool_free(p);
            return NULL;
        }
    }
    return p;
}

int pool_size(const task_pool *p)
{
    return p->nthreads;
}

void pool_run(task_pool *p, pool_fn fn, void *arg)
{
    if (p->nthreads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->nthreads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);

    fn(arg, 0, p->nthreads);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void pool_free(task_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->nthreads; t++)
        pthread_join(p->threads[t - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}
