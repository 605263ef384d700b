/* pool.h - a fixed set of threads that run one function together.
 *
 * pool_run(p, fn, arg) calls fn(arg, t, T) once for every t in 0..T-1, the
 * caller itself being thread 0, and returns when all calls have returned.
 * It is how the CNN engine splits a minibatch across cores.
 */
#ifndef PSD_POOL_H
#define PSD_POOL_H

#include <stddef.h>

typedef void (*pool_fn)(void *arg, int tid, int nthreads);
typedef struct task_pool task_pool;

/* Start threads-1 helper threads (threads >= 1).  Returns NULL with a
 * message in err on failure. */
task_pool *pool_new(int threads, char *err, size_t errlen);

/* Number of threads, the caller included. */
int pool_size(const task_pool *p);

/* Run fn on every thread and wait for all.  Not reentrant. */
void pool_run(task_pool *p, pool_fn fn, void *arg);

/* Stop and join the helpers, free the pool.  NULL is allowed. */
void pool_free(task_pool *p);

#endif
