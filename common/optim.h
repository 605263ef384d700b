/* optim.h - optimizer math shared by workerd --standalone and psd.
 *
 * SGD with momentum and weight decay (PyTorch semantics, dampening 0, no
 * Nesterov) and a learning-rate schedule over optimizer steps.
 */
#ifndef PSD_OPTIM_H
#define PSD_OPTIM_H

#include <stddef.h>

#include "kernels.h"

typedef enum optim_schedule {
    OPTIM_SCHED_CONSTANT = 0, /* lr */
    OPTIM_SCHED_STEP,         /* lr * gamma^floor(step / step_size) */
    OPTIM_SCHED_COSINE,       /* lr_min + (lr - lr_min) * (1 + cos(pi * step / total)) / 2 */
    OPTIM_SCHED_MAX
} optim_schedule;

typedef struct optim_config {
    float lr;
    float momentum;
    float weight_decay;
    optim_schedule schedule;
    long step_size;   /* STEP: steps between decays (> 0) */
    float gamma;      /* STEP: decay factor */
    long total_steps; /* COSINE: length of the schedule (> 0); lr_min after it */
    float lr_min;     /* COSINE: final learning rate */
    long warmup_steps; /* any schedule: ramp linearly up to it over the first
                        * warmup_steps steps (0: none) */
} optim_config;

/* Defaults: lr 0.05, momentum 0.9, weight decay 0, constant schedule,
 * step: step_size 1, gamma 0.1; cosine: lr_min 0; no warm-up. */
void optim_config_default(optim_config *c);

/* Check ranges (lr > 0, 0 <= momentum < 1, weight_decay >= 0, the
 * schedule's own fields).  Returns 0, or -1 with a message. */
int optim_config_check(const optim_config *c, char *err, size_t errlen);

/* Schedule names "constant", "step", "cosine" <-> enum; -1 if unknown. */
int optim_schedule_from_name(const char *name);
const char *optim_schedule_name(optim_schedule s);

/* Learning rate at optimizer step `step` (0-based): the schedule's value,
 * times (step + 1) / warmup_steps during the warm-up. */
float optim_lr_at(const optim_config *c, long step);

/* One SGD step on w (n) with momentum buffer mom (n) and gradient g (n), at
 * schedule step `step`, using kernel table k. */
void optim_sgd_step(const kern_ops *k, const optim_config *c, long step, float *w, float *mom,
                    const float *g, size_t n);

#endif
