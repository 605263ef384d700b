/* trainer.c - see trainer.h. */
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double trainer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleep s seconds (less if a signal comes: a stop request should not wait
 * for it).  Returns the seconds slept. */
static double trainer_sleep(double s)
{
    double t0 = trainer_now();
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    return trainer_now() - t0;
}

float trainer_local_lr(const optim_config *c, uint64_t version)
{
    return optim_lr_at(c, (long)version) / (1.0f - c->momentum);
}

static int local_pull(void *ctx, float *params, uint64_t *version, char *err, size_t errlen)
{
    ps_shard *s = ctx;
    memcpy(params, s->w, (s->hi - s->lo) * sizeof(float));
    *version = s->version;
    return 0;
}

/* The push just made was applied at version - 1: the same step without
 * momentum (exactly the shard's step when momentum is 0). */
static void local_ahead(void *ctx, const float *grad, float *params, float *scratch)
{
    ps_shard *s = ctx;
    (void)scratch;
    s->k->sgd_step(params, NULL, grad, s->hi - s->lo, optim_lr_at(&s->opt, (long)s->version - 1),
                   0.0f, s->opt.weight_decay);
}

static void local_local_step(void *ctx, const float *grad, float *params, uint64_t version)
{
    ps_shard *s = ctx;
    s->k->sgd_step(params, NULL, grad, s->hi - s->lo, trainer_local_lr(&s->opt, version), 0.0f,
                   s->opt.weight_decay);
}

static int local_push(void *ctx, const float *grad, uint64_t version, long step, int samples,
                      char *err, size_t errlen)
{
    ps_shard *s = ctx;
    /* one version late: a trainer with overlap (its gradient was computed
     * while the last one was applied) */
    if (version != s->version && version + 1 != s->version) {
        snprintf(err, errlen, "gradient of version %llu pushed to local weights at %llu",
                 (unsigned long long)version, (unsigned long long)s->version);
        return -1;
    }
    ps_shard_apply(s, grad);
    return 0;
}

param_backend trainer_local_backend(ps_shard *whole)
{
    param_backend be = { whole, local_pull, local_push, local_ahead, NULL, local_local_step };
    return be;
}

int trainer_init(trainer *t, const cnn_model *m, cnn_engine *engine, const dataset *train,
                 int part, int nparts, int batch, uint64_t seed, param_backend be, char *err,
                 size_t errlen)
{
    memset(t, 0, sizeof(*t));
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    if ((size_t)train->rows * (size_t)train->cols != in) {
        snprintf(err, errlen, "model %s takes %dx%d images, the data has %dx%d", m->name,
                 m->in_h, m->in_w, train->rows, train->cols);
        return -1;
    }
    if (dataset_partition(train->n, part, nparts, &t->lo, &t->hi) != 0) {
        snprintf(err, errlen, "cannot give part %d of %d of %zu training examples", part,
                 nparts, train->n);
        return -1;
    }
    if (batch < 1) {
        snprintf(err, errlen, "batch size must be at least 1 (got %d)", batch);
        return -1;
    }
    t->m = m;
    t->engine = engine;
    t->train = train;
    t->batch = batch;
    t->seed = seed;
    t->be = be;
    t->slowdown = 1.0f;
    t->local_steps = 1;
    t->params = malloc(m->nparams * sizeof(float));
    t->grad = malloc(m->nparams * sizeof(float));
    t->x = malloc((size_t)batch * in * sizeof(float));
    t->y = malloc((size_t)batch);
    t->order = malloc((t->hi - t->lo) * sizeof(uint32_t));
    if (!t->params || !t->grad || !t->x || !t->y || !t->order) {
        trainer_free(t);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

void trainer_free(trainer *t)
{
    free(t->params);
    free(t->grad);
    free(t->grad_alt);
    free(t->acc);
    free(t->x);
    free(t->y);
    free(t->order);
    memset(t, 0, sizeof(*t));
}

/* cnn_engine_on_grad_ready: hand the final part of the gradient to the
 * backend.  A slowed-down worker sleeps for the compute so far first, so
 * the part leaves when it would on a box that much slower. */
static void trainer_grad_ready(void *ctx, size_t from)
{
    trainer *t = ctx;
    if (t->slowdown > 1.0f)
        t->ready_slept +=
            trainer_sleep((double)(t->slowdown - 1.0f) * (trainer_now() - t->ready_mark));
    const float *g = t->grad;
    if (t->local_done > 0) { /* the round's sum so far, and this slice of the last gradient */
        for (size_t i = from; i < t->ready_to; i++)
            t->acc[i] += t->grad[i];
        t->ready_to = from;
        g = t->acc;
    }
    t->be.grad_ready(t->be.ctx, g, from, t->ready_version, t->step, t->ready_n);
    t->ready_mark = trainer_now();
}

/* A minibatch trained on: the step counters and the epoch's figures. */
static void trainer_count(trainer *t, trainer_stats *st, int n, double loss, int correct)
{
    t->step++;
    t->samples += (size_t)n;
    st->steps++;
    st->samples += (size_t)n;
    st->loss_sum += loss;
    st->correct += (size_t)correct;
}

int trainer_run_epoch(trainer *t, long epoch, long max_steps, trainer_stats *st, char *err,
                      size_t errlen)
{
    memset(st, 0, sizeof(*st));
    if (t->overlap && !t->grad_alt && !(t->grad_alt = malloc(t->m->nparams * sizeof(float)))) {
        snprintf(err, errlen, "out of memory for the second gradient buffer");
        return -1;
    }
    int rounds = t->local_steps > 1;
    if (rounds && (t->overlap || !t->be.local_step)) {
        snprintf(err, errlen, "local steps need a backend that takes a step locally, and no overlap");
        return -1;
    }
    if (rounds && !t->acc && !(t->acc = malloc(t->m->nparams * sizeof(float)))) {
        snprintf(err, errlen, "out of memory for the sum of the local steps' gradients");
        return -1;
    }
    size_t count = t->hi - t->lo;
    dataset_shuffle(t->order, count, t->lo, t->seed, (uint64_t)epoch);
    double t0 = trainer_now();
    for (size_t off = 0; off < count && !t->finished; off += (size_t)t->batch) {
        if (max_steps > 0 && t->step >= max_steps)
            break;
        int n = (int)(count - off < (size_t)t->batch ? count - off : (size_t)t->batch);
        uint64_t version;
        double c0;
        int rc;
        /* this minibatch closes the round of local steps (or there are none) */
        int closes = t->local_done + 1 >= t->local_steps || off + (size_t)n >= count ||
                     (max_steps > 0 && t->step + 1 >= max_steps);
        if (t->local_done > 0) { /* within a round: the weights at hand, no pull */
            version = t->local_version;
        } else if (t->overlap && t->ahead) { /* pulled while the last gradient was computed */
            version = t->ahead_version;
            t->ahead = 0;
        } else {
            c0 = trainer_now();
            rc = t->be.pull(t->be.ctx, t->params, &version, err, errlen);
            st->comm_seconds += trainer_now() - c0;
            t->inflight = 0;
            if (rc == TRAINER_FINISHED) {
                t->finished = 1;
                break;
            }
            if (rc != 0)
                return -1;
        }
        dataset_gather(t->train, t->order + off, (size_t)n, t->x, t->y);
        dataset_augment_shift(t->train, t->x, t->order + off, (size_t)n, t->augment_shift,
                              t->seed, (uint64_t)epoch);
        double loss;
        int correct;
        int early = t->be.grad_ready && !t->overlap && closes;
        t->ready_version = version;
        t->ready_n = t->local_samples + n;
        t->ready_to = t->m->nparams;
        t->ready_slept = 0;
        if (early)
            cnn_engine_on_grad_ready(t->engine, trainer_grad_ready, t);
        t->ready_mark = trainer_now();
        cnn_engine_grad(t->engine, t->params, t->x, t->y, n, t->grad, &loss, &correct);
        if (early)
            cnn_engine_on_grad_ready(t->engine, NULL, NULL);
        if (t->slowdown > 1.0f)
            st->slow_seconds += t->ready_slept + trainer_sleep((double)(t->slowdown - 1.0f) *
                                                               (trainer_now() - t->ready_mark));
        const float *send = t->grad;
        int send_n = n;
        if (rounds) {
            if (t->local_done == 0 && !closes) {
                memcpy(t->acc, t->grad, t->m->nparams * sizeof(float));
            } else if (t->local_done > 0) { /* what grad_ready has not added yet */
                for (size_t i = 0; i < t->ready_to; i++)
                    t->acc[i] += t->grad[i];
                send = t->acc;
                send_n = t->local_samples + n;
            }
            if (!closes) { /* a local step: train on, push later */
                t->be.local_step(t->be.ctx, t->grad, t->params, version);
                t->local_version = version;
                t->local_done++;
                t->local_samples += n;
                trainer_count(t, st, n, loss, correct);
                continue;
            }
            t->local_done = 0;
            t->local_samples = 0;
        }
        c0 = trainer_now();
        if (t->overlap && t->inflight) {
            /* the last push's reply and the weights behind it: the next
             * step's; this gradient goes out computed on the ones before */
            rc = t->be.pull(t->be.ctx, t->params, &t->ahead_version, err, errlen);
            t->inflight = 0;
            if (rc == TRAINER_FINISHED) { /* the last push was not applied */
                st->comm_seconds += trainer_now() - c0;
                t->finished = 1;
                break;
            }
            if (rc != 0)
                return -1;
            t->ahead = 1;
        }
        rc = t->be.push(t->be.ctx, send, version, t->step, send_n, err, errlen);
        st->comm_seconds += trainer_now() - c0;
        if (rc == TRAINER_FINISHED) { /* not applied: not counted */
            t->finished = 1;
            break;
        }
        if (rc != 0)
            return -1;
        if (t->overlap) {
            float *g = t->grad; /* in flight: the next gradient goes to the other buffer */
            t->grad = t->grad_alt;
            t->grad_alt = g;
            t->inflight = 1;
            if (!t->ahead) { /* train on these weights again while it travels */
                t->ahead = 1;
                t->ahead_version = version;
            }
            if (t->be.ahead) /* ... with this worker's own step already taken */
                t->be.ahead(t->be.ctx, t->grad_alt, t->params, t->grad);
        }
        trainer_count(t, st, n, loss, correct);
        if (t->after_step) {
            rc = t->after_step(t->after_step_ctx, t, err, errlen);
            if (rc == TRAINER_FINISHED)
                t->finished = 1;
            else if (rc != 0)
                return -1;
        }
    }
    st->seconds = trainer_now() - t0;
    return 0;
}

int trainer_evaluate(trainer *t, const dataset *ds, double *loss_mean, double *acc_percent,
                     char *err, size_t errlen)
{
    uint64_t version;
    if (t->be.pull(t->be.ctx, t->params, &version, err, errlen) < 0)
        return -1;
    if (t->overlap) { /* the freshest weights: the next step trains on them */
        t->inflight = 0;
        t->ahead = 1;
        t->ahead_version = version;
    }
    return trainer_eval_params(t->m, t->engine, t->params, ds, t->x, t->y,
                               (size_t)t->batch, loss_mean, acc_percent, err, errlen);
}

int trainer_eval_params(const cnn_model *m, cnn_engine *engine, const float *params,
                        const dataset *ds, float *x, uint8_t *y, size_t chunk,
                        double *loss_mean, double *acc_percent, char *err, size_t errlen)
{
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    if ((size_t)ds->rows * (size_t)ds->cols != in) {
        snprintf(err, errlen, "test images are %dx%d, model %s takes %dx%d", ds->rows,
                 ds->cols, m->name, m->in_h, m->in_w);
        return -1;
    }
    double loss_sum = 0;
    size_t correct = 0;
    /* gather in chunks of the caller's buffers (sequential order) */
    uint32_t idx[256];
    if (chunk > 256)
        chunk = 256;
    for (size_t off = 0; off < ds->n; off += chunk) {
        size_t n = ds->n - off < chunk ? ds->n - off : chunk;
        for (size_t i = 0; i < n; i++)
            idx[i] = (uint32_t)(off + i);
        dataset_gather(ds, idx, n, x, y);
        double l;
        size_t c;
        cnn_engine_eval(engine, params, x, y, n, &l, &c);
        loss_sum += l;
        correct += c;
    }
    *loss_mean = ds->n ? loss_sum / (double)ds->n : 0;
    *acc_percent = ds->n ? 100.0 * (double)correct / (double)ds->n : 0;
    return 0;
}
