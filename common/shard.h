/* shard.h - a range of the global parameter vector with its optimizer state.
 *
 * psd holds one shard; workerd --standalone holds one shard covering the
 * whole vector.  Both apply gradients through ps_shard_apply(), so a single
 * process and a cluster run the same optimizer code.
 */
#ifndef PSD_SHARD_H
#define PSD_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "cnn.h"
#include "kernels.h"
#include "optim.h"

typedef struct ps_shard {
    size_t lo, hi;       /* [lo, hi) of the flat vector */
    float *w;            /* (hi - lo) weights, owned */
    float *mom;          /* (hi - lo) momentum buffer, owned */
    uint64_t version;    /* number of updates applied */
    optim_config opt;
    const kern_ops *k;
} ps_shard;

/* Allocate and initialise [lo, hi) of model m's parameters from `seed`
 * (exactly the values cnn_params_init gives), momentum zero, version 0.
 * Returns 0, or -1 with a message. */
int ps_shard_init(ps_shard *s, const cnn_model *m, const kern_ops *k, const optim_config *opt,
                  uint64_t seed, size_t lo, size_t hi, char *err, size_t errlen);

/* Apply one optimizer step with gradient g (hi - lo) at schedule step
 * s->version, then increment the version. */
void ps_shard_apply(ps_shard *s, const float *g);

void ps_shard_free(ps_shard *s);

#endif
