/* rng.h - small deterministic random numbers (no global state).
 *
 * splitmix64 for seeding and for counter-based values (the value at index i
 * of stream s depends only on (s, i), so a parameter-server shard can
 * initialise any range of the parameter vector on its own), and
 * xoshiro256** for sequences (shuffles, test data).
 */
#ifndef PSD_RNG_H
#define PSD_RNG_H

#include <stdint.h>

static inline uint64_t rng_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Uniform float in [0, 1) from 64 random bits (24 significant bits). */
static inline float rng_to_unit(uint64_t r)
{
    return (float)(r >> 40) * (1.0f / 16777216.0f);
}

/* Counter-based uniform in [0,1): stream s, index i. */
static inline float rng_unit_at(uint64_t s, uint64_t i)
{
    return rng_to_unit(rng_splitmix64(rng_splitmix64(s) ^ (i * 0xd1b54a32d192ed03ULL)));
}

typedef struct rng {
    uint64_t s[4];
} rng;

static inline void rng_seed(rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9e3779b97f4a7c15ULL;
        r->s[i] = rng_splitmix64(x);
    }
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* Next 64 random bits (xoshiro256**). */
static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return result;
}

/* Uniform float in [0,1). */
static inline float rng_uniform(rng *r)
{
    return rng_to_unit(rng_next(r));
}

/* Uniform integer in [0, n), n > 0, without modulo bias. */
static inline uint64_t rng_below(rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = rng_next(r);
    } while (x >= limit);
    return x % n;
}

#endif
