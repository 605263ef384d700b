/* compress.c - see compress.h.  The generic C reference for every
 * operation; there is no SIMD path (fp16 conversion is a small part of a
 * push next to the backward pass). */
#include "compress.h"

#include <math.h>
#include <string.h>

#include "proto.h"

const char *proto_cmp_strerror(int code)
{
    switch (code) {
    case PROTO_CMP_OK: return "success";
    case PROTO_CMP_TRUNCATED: return "sparse body shorter than its count says";
    case PROTO_CMP_EXTRA: return "bytes after the last sparse entry";
    case PROTO_CMP_COUNT: return "more sparse entries than the slice has";
    case PROTO_CMP_INDEX_RANGE: return "sparse index outside the slice";
    case PROTO_CMP_INDEX_ORDER: return "sparse indices not strictly increasing";
    case PROTO_CMP_INVALID: return "invalid argument";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------- fp16 */

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float f_from(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even in integer arithmetic (F. Giesen's
 * float_to_half_fast3_rtne, with the subnormal case done in integers too,
 * so the FPU's rounding mode does not matter). */
uint16_t proto_f32_to_f16(float f)
{
    uint32_t u = f_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) { /* NaN: the top 10 payload bits, never 0 (that is inf) */
        uint16_t m = (uint16_t)((u >> 13) & 0x3ffu);
        return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u));
    }
    if (u == 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u);
    if (u >= 0x47800000u) /* >= 65536: rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (u < 0x38800000u) { /* below 2^-14: a binary16 subnormal or zero */
        if (u < 0x33000000u) /* below 2^-25: rounds to zero (2^-25 itself is a tie to 0) */
            return sign;
        uint32_t e = u >> 23;               /* 102..112 */
        uint32_t m = (u & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;           /* value = m * 2^(e-150); units of 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q); /* q may reach 0x400: the smallest normal, right */
    }
    uint32_t mant_odd = (u >> 13) & 1;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + mant_odd;
    return (uint16_t)(sign | (u >> 13)); /* a carry into the exponent is right too */
}

float proto_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact */
        return f_from(f_bits(v) | sign);
    }
    if (e == 31)
        return f_from(sign | 0x7f800000u | (m << 13));
    return f_from(sign | ((e + 112) << 23) | (m << 13));
}

float proto_f16_round(float f)
{
    return proto_f16_to_f32(proto_f32_to_f16(f));
}

void proto_fp16_encode(uint8_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h = proto_f32_to_f16(src[i]);
        dst[2 * i] = (uint8_t)h;
        dst[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

void proto_fp16_decode(float *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = proto_f16_to_f32((uint16_t)(src[2 * i] | (unsigned)src[2 * i + 1] << 8));
}

/* ------------------------------------------------------------- top-k */

/* The order key: |v| as bits (monotonic in the magnitude; NaNs above inf). */
static inline uint32_t mag_key(const float *v, uint32_t i)
{
    return f_bits(v[i]) & 0x7fffffffu;
}

/* Of the hist[0..bins) counts, from the top bin down: the bin holding the
 * need-th largest entry; *above = how many lie in the bins above it. */
static size_t radix_bin(const uint32_t *hist, size_t bins, size_t need, size_t *above)
{
    size_t b = bins - 1, a = 0;
    while (a + hist[b] < need) {
        a += hist[b];
        b--;
    }
    *above = a;
    return b;
}

/* A radix select on the 31-bit magnitude keys, 11 + 10 + 10 bits: a
 * histogram of the top bits over all n finds the bin of the k-th key; the
 * indices in that bin (work) are narrowed by the next bits, then the last.
 * That gives the threshold key t and how many entries equal to it are in
 * (need); one pass then writes every key above t and the first `need` equal
 * to it, in index order: the smaller index wins a tie.  Three passes over
 * v whatever the data (all equal: the bin holds everything, still linear). */
int proto_topk_select(const float *v, size_t n, size_t k, uint32_t *work, uint32_t *idx)
{
    if (k > n || n > UINT32_MAX)
        return PROTO_CMP_INVALID;
    if (k == 0)
        return 0;
    if (k == n) {
        for (size_t i = 0; i < n; i++)
            idx[i] = (uint32_t)i;
        return 0;
    }
    uint32_t hist[2048];
    size_t above, need = k;
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++)
        hist[mag_key(v, (uint32_t)i) >> 20]++;
    uint32_t b1 = (uint32_t)radix_bin(hist, 2048, need, &above);
    need -= above;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (mag_key(v, (uint32_t)i) >> 20 == b1)
            work[m++] = (uint32_t)i;
    memset(hist, 0, 1024 * sizeof hist[0]);
    for (size_t j = 0; j < m; j++)
        hist[mag_key(v, work[j]) >> 10 & 1023u]++;
    uint32_t b2 = (uint32_t)radix_bin(hist, 1024, need, &above);
    need -= above;
    size_t m2 = 0;
    for (size_t j = 0; j < m; j++)
        if ((mag_key(v, work[j]) >> 10 & 1023u) == b2)
            work[m2++] = work[j];
    memset(hist, 0, 1024 * sizeof hist[0]);
    for (size_t j = 0; j < m2; j++)
        hist[mag_key(v, work[j]) & 1023u]++;
    uint32_t b3 = (uint32_t)radix_bin(hist, 1024, need, &above);
    need -= above; /* 1 <= need <= the count of keys equal to t */
    uint32_t t = b1 << 20 | b2 << 10 | b3;
    size_t j = 0;
    for (size_t i = 0; i < n && j < k; i++) {
        uint32_t key = mag_key(v, (uint32_t)i);
        if (key > t || (key == t && need > 0 && need--))
            idx[j++] = (uint32_t)i;
    }
    return 0;
}

size_t proto_topk_count(size_t n, double percent)
{
    if (n == 0)
        return 0;
    double x = ceil(percent * (double)n / 100.0);
    if (!(x >= 1.0))
        return 1;
    if (x >= (double)n)
        return n;
    return (size_t)x;
}

/* ----------------------------------------------------------- sparse */

void proto_sparse_encode(uint8_t *dst, const uint32_t *idx, const float *vals, size_t count)
{
    proto_put_be32(dst, (uint32_t)count);
    uint8_t *p = dst + PROTO_SPARSE_HEAD;
    for (size_t j = 0; j < count; j++, p += PROTO_SPARSE_PAIR) {
        proto_put_be32(p, idx[j]);
        proto_floats_encode(p + 4, &vals[j], 1);
    }
}

size_t proto_delta_count(const float *old, const float *cur, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += f_bits(old[i]) != f_bits(cur[i]);
    return c;
}

void proto_delta_encode(uint8_t *dst, const float *old, const float *cur, size_t n)
{
    uint8_t *p = dst + PROTO_SPARSE_HEAD;
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (f_bits(old[i]) == f_bits(cur[i]))
            continue;
        proto_put_be32(p, (uint32_t)i);
        proto_floats_encode(p + 4, &cur[i], 1);
        p += PROTO_SPARSE_PAIR;
        c++;
    }
    proto_put_be32(dst, (uint32_t)c);
}

int proto_sparse_check(const uint8_t *body, size_t len, size_t n, size_t *count)
{
    if (len < PROTO_SPARSE_HEAD)
        return PROTO_CMP_TRUNCATED;
    uint32_t c = proto_get_be32(body);
    if (c > n)
        return PROTO_CMP_COUNT;
    size_t pairs = (len - PROTO_SPARSE_HEAD) / PROTO_SPARSE_PAIR;
    size_t tail = (len - PROTO_SPARSE_HEAD) % PROTO_SPARSE_PAIR;
    if (pairs < c)
        return PROTO_CMP_TRUNCATED;
    if (pairs > c || tail != 0)
        return PROTO_CMP_EXTRA;
    const uint8_t *p = body + PROTO_SPARSE_HEAD;
    uint64_t prev = 0;
    for (uint32_t j = 0; j < c; j++, p += PROTO_SPARSE_PAIR) {
        uint32_t i = proto_get_be32(p);
        if (i >= n)
            return PROTO_CMP_INDEX_RANGE;
        if (j > 0 && (uint64_t)i <= prev)
            return PROTO_CMP_INDEX_ORDER;
        prev = i;
    }
    *count = c;
    return 0;
}

int proto_sparse_apply(const uint8_t *body, size_t len, size_t n, float *dst)
{
    size_t c;
    int rc = proto_sparse_check(body, len, n, &c);
    if (rc)
        return rc;
    const uint8_t *p = body + PROTO_SPARSE_HEAD;
    for (size_t j = 0; j < c; j++, p += PROTO_SPARSE_PAIR)
        proto_floats_decode(&dst[proto_get_be32(p)], p + 4, 1);
    return 0;
}

/* ---------------------------------------------------- error feedback */

void proto_ef_fp16(const float *g, float *r, float *send, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float x = g[i] + r[i];
        send[i] = x;
        r[i] = x - proto_f16_round(x);
        if (!isfinite(r[i])) /* x was inf/NaN or rounded to inf: keep no debt */
            r[i] = 0.0f;
    }
}

int proto_ef_topk(const float *g, float *r, size_t n, size_t k, uint32_t *work, uint32_t *idx,
                  float *vals)
{
    if (k > n || n > UINT32_MAX)
        return PROTO_CMP_INVALID;
    for (size_t i = 0; i < n; i++)
        r[i] += g[i];
    int rc = proto_topk_select(r, n, k, work, idx);
    if (rc)
        return rc;
    for (size_t j = 0; j < k; j++) {
        vals[j] = r[idx[j]];
        r[idx[j]] = 0.0f;
    }
    return 0;
}
