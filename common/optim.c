/* optim.c - see optim.h. */
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const optim_schedule_names[OPTIM_SCHED_MAX] = { "constant", "step",
                                                                    "cosine" };

void optim_config_default(optim_config *c)
{
    memset(c, 0, sizeof(*c));
    c->lr = 0.05f;
    c->momentum = 0.9f;
    c->weight_decay = 0.0f;
    c->schedule = OPTIM_SCHED_CONSTANT;
    c->step_size = 1;
    c->gamma = 0.1f;
    c->total_steps = 1;
    c->lr_min = 0.0f;
}

int optim_config_check(const optim_config *c, char *err, size_t errlen)
{
    if (!(c->lr > 0.0f) || !isfinite(c->lr)) {
        snprintf(err, errlen, "learning rate must be > 0 (got %g)", (double)c->lr);
        return -1;
    }
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f)) {
        snprintf(err, errlen, "momentum must be in [0, 1) (got %g)", (double)c->momentum);
        return -1;
    }
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay)) {
        snprintf(err, errlen, "weight decay must be >= 0 (got %g)", (double)c->weight_decay);
        return -1;
    }
    if (c->warmup_steps < 0) {
        snprintf(err, errlen, "warm-up steps must be >= 0 (got %ld)", c->warmup_steps);
        return -1;
    }
    switch (c->schedule) {
    case OPTIM_SCHED_CONSTANT:
        return 0;
    case OPTIM_SCHED_STEP:
        if (c->step_size < 1) {
            snprintf(err, errlen, "step schedule: step size must be >= 1 (got %ld)",
                     c->step_size);
            return -1;
        }
        if (!(c->gamma > 0.0f && c->gamma <= 1.0f)) {
            snprintf(err, errlen, "step schedule: gamma must be in (0, 1] (got %g)",
                     (double)c->gamma);
            return -1;
        }
        return 0;
    case OPTIM_SCHED_COSINE:
        if (c->total_steps < 1) {
            snprintf(err, errlen, "cosine schedule: total steps must be >= 1 (got %ld)",
                     c->total_steps);
            return -1;
        }
        if (!(c->lr_min >= 0.0f && c->lr_min <= c->lr)) {
            snprintf(err, errlen, "cosine schedule: lr_min must be in [0, lr] (got %g)",
                     (double)c->lr_min);
            return -1;
        }
        return 0;
    default:
        snprintf(err, errlen, "unknown learning-rate schedule %d", (int)c->schedule);
        return -1;
    }
}

int optim_schedule_from_name(const char *name)
{
    for (int i = 0; i < OPTIM_SCHED_MAX; i++)
        if (name && strcmp(name, optim_schedule_names[i]) == 0)
            return i;
    return -1;
}

const char *optim_schedule_name(optim_schedule s)
{
    return s >= 0 && s < OPTIM_SCHED_MAX ? optim_schedule_names[s] : "?";
}

static float optim_schedule_lr(const optim_config *c, long step)
{
    switch (c->schedule) {
    case OPTIM_SCHED_STEP:
        return c->lr * powf(c->gamma, (float)(step / c->step_size));
    case OPTIM_SCHED_COSINE: {
        if (step >= c->total_steps)
            return c->lr_min;
        double t = (double)step / (double)c->total_steps;
        return (float)(c->lr_min + (c->lr - c->lr_min) * 0.5 * (1.0 + cos(M_PI * t)));
    }
    default:
        return c->lr;
    }
}

float optim_lr_at(const optim_config *c, long step)
{
    if (step < 0)
        step = 0;
    float lr = optim_schedule_lr(c, step);
    if (step < c->warmup_steps)
        lr *= (float)(step + 1) / (float)c->warmup_steps;
    return lr;
}

void optim_sgd_step(const kern_ops *k, const optim_config *c, long step, float *w, float *mom,
                    const float *g, size_t n)
{
    k->sgd_step(w, mom, g, n, optim_lr_at(c, step), c->momentum, c->weight_decay);
}
