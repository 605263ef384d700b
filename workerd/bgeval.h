/* bgeval.h - evaluation of the global model on the test set in a
 * background thread, so that the evaluating worker keeps training while
 * it runs (`workerd --help`; docs/placement.md, node "evaluate").
 *
 * One evaluation at a time, on a copy of the weights taken when it starts:
 * the thread has its own engine and batch buffers and only reads the test
 * set; the caller owns everything else and collects the result from its
 * own thread (the REPORT goes out from there).
 */
#ifndef PSD_BGEVAL_H
#define PSD_BGEVAL_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "dataset.h"
#include "kernels.h"

/* What the copy was: the caller's labels, given back with the result. */
typedef struct bgeval_tag {
    uint64_t version; /* shard 0's version when the copy was taken */
    long step;        /* the worker's step */
    size_t samples;   /* the worker's samples */
} bgeval_tag;

typedef struct bgeval_result {
    bgeval_tag tag;
    double loss, acc; /* mean test loss, accuracy in percent */
    double seconds;   /* the evaluation's wall time */
} bgeval_result;

typedef struct bgeval bgeval;

/* An idle evaluator of model m (kernels k, one thread) on test (which must
 * outlive it).  NULL with a message if memory or the thread cannot be had. */
bgeval *bgeval_new(const cnn_model *m, const kern_ops *k, const dataset *test, char *err,
                   size_t errlen);

/* Start evaluating a copy of params (m->nparams floats).  Returns 0, or 1
 * (nothing done) while an evaluation is running or its result has not been
 * collected. */
int bgeval_start(bgeval *b, const float *params, const bgeval_tag *tag);

/* The result of the last evaluation started: 1 with *out set (the
 * evaluator is idle again), 0 if there is none to collect (wait != 0:
 * blocks until the running one ends; 0 only when none runs), or -1 with a
 * message if it failed. */
int bgeval_collect(bgeval *b, int wait, bgeval_result *out, char *err, size_t errlen);

/* Stop the thread (after the evaluation in flight, whose result is
 * dropped) and free b.  NULL is fine. */
void bgeval_free(bgeval *b);

#endif
