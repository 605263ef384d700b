/* trainer.h - a worker's training loop, independent of where the weights live.
 *
 * Each step: pull the global weights from a parameter backend, compute the
 * mean gradient of the next minibatch of this worker's part of the data, push
 * it back.  workerd --standalone uses a backend that is one in-process shard
 * holding the whole vector; a distributed worker uses one that talks to psd.
 */
#ifndef PSD_TRAINER_H
#define PSD_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "dataset.h"
#include "shard.h"

/* A backend's pull/push return: the job has finished (nothing applied);
 * the worker stops training. */
#define TRAINER_FINISHED 1

/* Where the global weights live.  Both calls return 0, TRAINER_FINISHED, or
 * -1 with a message. */
typedef struct param_backend {
    void *ctx;
    /* Fill params (nparams) with the current weights; *version gets what
     * names them to push (their version; for workerd's remote backend the
     * pull call's number, docs in workerd/remote.h). */
    int (*pull)(void *ctx, float *params, uint64_t *version, char *err, size_t errlen);
    /* Hand over grad (nparams), the mean over `samples` examples, computed
     * on the weights a pull named `version` by this worker's step `step`. */
    int (*push)(void *ctx, const float *grad, uint64_t version, long step, int samples,
                char *err, size_t errlen);
    /* Optional, for overlap: right after push(grad), take into params the
     * step the shards will make with it, as far as this worker knows -- one
     * SGD step of what was sent, at the learning rate of the version it
     * will meet, without the shards' momentum (which holds every worker's
     * gradients).  So the next gradient is computed on weights that already
     * hold this worker's own last one.  scratch (nparams) is free to use. */
    void (*ahead)(void *ctx, const float *grad, float *params, float *scratch);
    /* Optional, not with overlap: during the backward pass, grad[from ..
     * nparams) of the gradient being computed is final (cnn_engine_on_grad_ready)
     * and may be sent now; the push call that follows passes the same
     * grad, version, step and samples. */
    void (*grad_ready)(void *ctx, const float *grad, size_t from, uint64_t version, long step,
                       int samples);
    /* Optional, for local steps: take this worker's own gradient (the mean
     * over one minibatch, computed on params from the weights a pull named
     * `version`) into params as one plain SGD step: the learning rate of
     * that version over (1 - momentum), the step the shards' momentum takes
     * on a steady gradient, with weight decay, without a momentum buffer. */
    void (*local_step)(void *ctx, const float *grad, float *params, uint64_t version);
} param_backend;

/* A backend that is one in-process shard covering the whole vector: pull
 * copies its weights, push applies the optimizer. */
param_backend trainer_local_backend(ps_shard *whole);

/* The learning rate of a local step from the weights of `version`
 * (param_backend.local_step): the schedule's at that version over
 * (1 - momentum). */
float trainer_local_lr(const optim_config *c, uint64_t version);

struct trainer;

typedef struct trainer {
    const cnn_model *m;
    cnn_engine *engine;
    const dataset *train;
    size_t lo, hi;     /* this worker's part of the training set */
    int batch;
    uint64_t seed;
    param_backend be;
    long step;         /* steps taken so far */
    size_t samples;    /* samples trained on so far */
    float *params;     /* (nparams) */
    float *grad;       /* (nparams) */
    float *x;          /* (batch, in) */
    uint8_t *y;        /* (batch) */
    uint32_t *order;   /* (hi - lo) */
    int augment_shift; /* random shifts of up to this many pixels (0: none);
                        * set after trainer_init */
    float slowdown;    /* >= 1: after each gradient, sleep (slowdown - 1)
                        * times its compute time, as a box this many times
                        * slower would take (1 after trainer_init) */
    /* Overlap (set after trainer_init; for a backend whose push may return
     * before the shards have the gradient, like workerd's with
     * job.overlap): the next gradient is computed on the weights at hand
     * while the last push and the weights pulled behind it are on the wire,
     * and those weights are taken after it.  Each gradient is then one step
     * staler; the two gradient buffers alternate, so the one in flight stays
     * intact (a reconnect sends it again). */
    int overlap;
    /* Local steps (set after trainer_init; 1: none; needs be.local_step
     * and no overlap when above 1): the worker trains on up to local_steps
     * minibatches between two pushes from one pull, taking each gradient
     * into its copy of the weights (be.local_step) and pushing their sum,
     * counted as all their samples.  A round ends early at the end of an
     * epoch and at max_steps, so nothing is left unsent. */
    int local_steps;
    float *acc;          /* local steps: the sum of the round's gradients (nparams) */
    int local_done;      /* minibatches of the round so far */
    int local_samples;
    uint64_t local_version; /* the pull the round trains from */
    size_t ready_to;     /* local steps with be.grad_ready: acc holds the sum from here up */
    float *grad_alt;   /* overlap: the other gradient buffer (nparams) */
    int inflight;      /* overlap: a push whose weights the next pull brings */
    int ahead;         /* overlap: params hold weights not trained on yet */
    uint64_t ahead_version;
    /* Called after every step (may be NULL; set after trainer_init):
     * returns 0 to go on, TRAINER_FINISHED to stop, -1 to fail with a
     * message in err. */
    int (*after_step)(void *ctx, struct trainer *t, char *err, size_t errlen);
    void *after_step_ctx;
    int finished;      /* the backend or after_step said the job finished */
    /* the step in progress, for be.grad_ready */
    uint64_t ready_version;
    int ready_n;
    double ready_mark;  /* compute since then not yet slowed down */
    double ready_slept; /* slowdown's sleeps inside the backward pass */
} trainer;

typedef struct trainer_stats {
    long steps;
    size_t samples;
    double loss_sum;   /* summed per-sample training loss */
    size_t correct;    /* training argmax hits */
    double seconds;    /* wall time of the steps */
    double comm_seconds; /* of which waiting for pulls and pushes */
    double slow_seconds; /* of which the slowdown's sleeps */
    int have_bytes;      /* set by the caller (workerd with shards), not the trainer: */
    uint64_t bytes_out, bytes_in; /* wire bytes sent and received in the epoch */
} trainer_stats;

/* Set up a trainer for part `part` of `nparts` of train, in minibatches of
 * `batch`.  Returns 0, or -1 with a message. */
int trainer_init(trainer *t, const cnn_model *m, cnn_engine *engine, const dataset *train,
                 int part, int nparts, int batch, uint64_t seed, param_backend be, char *err,
                 size_t errlen);
void trainer_free(trainer *t);

/* One pass over this worker's part in the order given by (seed, epoch); the
 * last minibatch may be smaller.  max_steps > 0 stops early after that many
 * steps in total (t->step).  If the backend or after_step says the job has
 * finished, the pass stops and t->finished is set.  Returns 0, or -1 with
 * the backend's message. */
int trainer_run_epoch(trainer *t, long epoch, long max_steps, trainer_stats *st, char *err,
                      size_t errlen);

/* Evaluate the current weights (pulled from the backend) on a dataset.
 * Returns 0 or -1. */
int trainer_evaluate(trainer *t, const dataset *ds, double *loss_mean, double *acc_percent,
                     char *err, size_t errlen);

/* The mean loss and the accuracy (percent) of params on ds, through engine
 * (one caller at a time) in chunks of at most chunk (<= 256) images
 * gathered into x and y (room for chunk images).  Returns 0, or -1 with a
 * message if the images do not fit the model. */
int trainer_eval_params(const cnn_model *m, cnn_engine *engine, const float *params,
                        const dataset *ds, float *x, uint8_t *y, size_t chunk,
                        double *loss_mean, double *acc_percent, char *err, size_t errlen);

/* Seconds on a monotonic clock. */
double trainer_now(void);

#endif
