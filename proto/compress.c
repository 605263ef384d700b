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
    case PROTO_CMP_GAP: return "malformed sparse index gap (over 5 bytes, above 2^32, or not minimal)";
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

/* Bytes of x as an unsigned LEB128 varint (1..5). */
static size_t varint_len(uint32_t x)
{
    size_t l = 1;
    while (x >= 0x80) {
        x >>= 7;
        l++;
    }
    return l;
}

static uint8_t *varint_put(uint8_t *p, uint32_t x)
{
    while (x >= 0x80) {
        *p++ = (uint8_t)(x | 0x80);
        x >>= 7;
    }
    *p++ = (uint8_t)x;
    return p;
}

/* One varint from [*p, end): 0 with *x set and *p past it, or a
 * PROTO_CMP_* error (running out of bytes, over 5 bytes or 2^32, or not
 * the shortest form: a last byte 0 after others). */
static int varint_get(const uint8_t **p, const uint8_t *end, uint32_t *x)
{
    uint64_t v = 0;
    const uint8_t *q = *p;
    for (int i = 0;; i++) {
        if (q == end)
            return PROTO_CMP_TRUNCATED;
        if (i == 5)
            return PROTO_CMP_GAP;
        uint8_t b = *q++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if ((i > 0 && b == 0) || v > UINT32_MAX)
                return PROTO_CMP_GAP;
            break;
        }
    }
    *x = (uint32_t)v;
    *p = q;
    return 0;
}

size_t proto_sparse_size(const uint32_t *idx, size_t count)
{
    size_t len = PROTO_SPARSE_HEAD + 4 * count;
    for (size_t j = 0; j < count; j++)
        len += varint_len(j == 0 ? idx[0] : idx[j] - idx[j - 1] - 1);
    return len;
}

void proto_sparse_encode(uint8_t *dst, const uint32_t *idx, const float *vals, size_t count)
{
    proto_put_be32(dst, (uint32_t)count);
    proto_floats_encode(dst + PROTO_SPARSE_HEAD, vals, count);
    uint8_t *p = dst + PROTO_SPARSE_HEAD + 4 * count;
    for (size_t j = 0; j < count; j++)
        p = varint_put(p, j == 0 ? idx[0] : idx[j] - idx[j - 1] - 1);
}

size_t proto_delta_size(const float *old, const float *cur, size_t n, size_t *count)
{
    size_t c = 0, len = PROTO_SPARSE_HEAD, prev = 0;
    for (size_t i = 0; i < n; i++) {
        if (f_bits(old[i]) == f_bits(cur[i]))
            continue;
        len += 4 + varint_len((uint32_t)(c == 0 ? i : i - prev - 1));
        prev = i;
        c++;
    }
    *count = c;
    return len;
}

void proto_delta_encode(uint8_t *dst, const float *old, const float *cur, size_t n, size_t count)
{
    proto_put_be32(dst, (uint32_t)count);
    uint8_t *v = dst + PROTO_SPARSE_HEAD;
    uint8_t *p = v + 4 * count;
    size_t c = 0, prev = 0;
    for (size_t i = 0; i < n && c < count; i++) {
        if (f_bits(old[i]) == f_bits(cur[i]))
            continue;
        proto_floats_encode(v, &cur[i], 1);
        v += 4;
        p = varint_put(p, (uint32_t)(c == 0 ? i : i - prev - 1));
        prev = i;
        c++;
    }
}

/* Walk a sparse body's indices (validating); with idx non-NULL also
 * store them.  0 with *count set, or a PROTO_CMP_* error. */
static int sparse_walk(const uint8_t *body, size_t len, size_t n, size_t *count, uint32_t *idx)
{
    if (len < PROTO_SPARSE_HEAD)
        return PROTO_CMP_TRUNCATED;
    uint32_t c = proto_get_be32(body);
    if (c > n)
        return PROTO_CMP_COUNT;
    if ((uint64_t)len < PROTO_SPARSE_HEAD + (uint64_t)PROTO_SPARSE_MIN_ENTRY * c)
        return PROTO_CMP_TRUNCATED;
    const uint8_t *p = body + PROTO_SPARSE_HEAD + 4 * (size_t)c, *end = body + len;
    uint64_t at = 0;
    for (uint32_t j = 0; j < c; j++) {
        uint32_t gap;
        int rc = varint_get(&p, end, &gap);
        if (rc)
            return rc;
        at = j == 0 ? gap : at + 1 + gap;
        if (at >= n)
            return PROTO_CMP_INDEX_RANGE;
        if (idx)
            idx[j] = (uint32_t)at;
    }
    if (p != end)
        return PROTO_CMP_EXTRA;
    *count = c;
    return 0;
}

int proto_sparse_check(const uint8_t *body, size_t len, size_t n, size_t *count)
{
    return sparse_walk(body, len, n, count, NULL);
}

int proto_sparse_decode(const uint8_t *body, size_t len, size_t n, uint32_t *idx, float *vals,
                        size_t *count)
{
    int rc = sparse_walk(body, len, n, count, idx);
    if (rc == 0)
        proto_floats_decode(vals, body + PROTO_SPARSE_HEAD, *count);
    return rc;
}

int proto_sparse_apply(const uint8_t *body, size_t len, size_t n, float *dst)
{
    size_t c;
    int rc = sparse_walk(body, len, n, &c, NULL);
    if (rc)
        return rc;
    const uint8_t *v = body + PROTO_SPARSE_HEAD, *p = v + 4 * c, *end = body + len;
    size_t at = 0;
    for (size_t j = 0; j < c; j++, v += 4) {
        uint32_t gap;
        (void)varint_get(&p, end, &gap); /* checked above */
        at = j == 0 ? gap : at + 1 + gap;
        proto_floats_decode(&dst[at], v, 1);
    }
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
