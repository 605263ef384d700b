/* shard.c - see shard.h. */
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ps_shard_init(ps_shard *s, const cnn_model *m, const kern_ops *k, const optim_config *opt,
                  uint64_t seed, size_t lo, size_t hi, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    if (lo >= hi || hi > m->nparams) {
        snprintf(err, errlen, "shard range [%zu, %zu) is not inside %s's %zu parameters", lo,
                 hi, m->name, m->nparams);
        return -1;
    }
    if (optim_config_check(opt, err, errlen) != 0)
        return -1;
    size_t n = hi - lo;
    s->w = malloc(n * sizeof(float));
    s->mom = calloc(n, sizeof(float));
    if (!s->w || !s->mom) {
        free(s->w);
        free(s->mom);
        s->w = s->mom = NULL;
        snprintf(err, errlen, "out of memory for a shard of %zu parameters", n);
        return -1;
    }
    s->lo = lo;
    s->hi = hi;
    s->opt = *opt;
    s->k = k;
    cnn_params_init(m, seed, s->w, lo, hi);
    return 0;
}

void ps_shard_apply(ps_shard *s, const float *g)
{
    optim_sgd_step(s->k, &s->opt, (long)s->version, s->w, s->mom, g, s->hi - s->lo);
    s->version++;
}

void ps_shard_free(ps_shard *s)
{
    free(s->w);
    free(s->mom);
    memset(s, 0, sizeof(*s));
}
