/* check_compress.c - gradient and weight compression (proto/compress.h and
 * the PUSH/PULL/WEIGHTS encodings): fp16 conversion (exact where
 * representable, within 2^-11 relative for normals, subnormals, inf, NaN),
 * top-k selection (the k largest magnitudes, ties to the smaller index),
 * sparse round trips and every rejection, error feedback conserving the
 * gradient sum, and the message codecs in each encoding.  Against a real
 * psd: PUSHes in every encoding applied exactly like ps_shard_apply of the
 * decoded gradient (and counted in bytes_in as sent), delta pulls that
 * reproduce the shard's weights bit for bit over many versions and after a
 * reconnect, fp16 pulls; and a cluster trained with topk 1% reaching the
 * accuracy of the same job uncompressed.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cluster.h"
#include "cnn.h"
#include "compress.h"
#include "kernels.h"
#include "placement.h"
#include "proto.h"
#include "psd_client.h"
#include "shard.h"

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* uniform in [-1, 1) */
static float frnd(void)
{
    return (float)((double)(rnd() >> 11) / 4503599627370496.0 - 1.0);
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------- fp16 */

/* Every binary16 value converts to float and back to itself (NaNs to a
 * NaN), and the float is the value the bits say. */
START_TEST(test_fp16_all_halves)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = proto_f16_to_f32((uint16_t)h);
        uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double want;
        if (e == 0)
            want = ldexp((double)m, -24);
        else if (e == 31)
            want = m ? NAN : INFINITY;
        else
            want = ldexp(1.0 + (double)m / 1024.0, (int)e - 15);
        if (h & 0x8000)
            want = -want;
        uint16_t back = proto_f32_to_f16(f);
        if (e == 31 && m) { /* a NaN keeps its payload both ways */
            if (!isnan(f) || back != h)
                ck_abort_msg("NaN 0x%04x -> %g -> 0x%04x", h, (double)f, back);
            continue;
        }
        if ((double)f != want || !!signbit(f) != !!(h & 0x8000))
            ck_abort_msg("0x%04x -> %.9g, want %.9g", h, (double)f, want);
        if (back != h)
            ck_abort_msg("0x%04x -> %.9g -> 0x%04x", h, (double)f, back);
    }
}
END_TEST

/* Normal range: relative error <= 2^-11; ties go to the even neighbour;
 * overflow, underflow and the subnormal boundary. */
START_TEST(test_fp16_rounding)
{
    for (int i = 0; i < 200000; i++) {
        float f = frnd() * ldexpf(1.0f, (int)(rnd() % 30) - 14); /* |f| in [2^-14, 2^15) mostly */
        if (fabsf(f) < 0x1p-14f)
            continue;
        float r = proto_f16_round(f);
        double rel = fabs(((double)r - (double)f) / (double)f);
        if (rel > 0x1p-11)
            ck_abort_msg("%.9g -> %.9g: relative error %g > 2^-11", (double)f, (double)r, rel);
    }
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to even (1) */
    ck_assert(proto_f16_round(1.0f + 0x1p-11f) == 1.0f);
    /* 1 + 3 * 2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: to even (1 + 2^-9) */
    ck_assert(proto_f16_round(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
    /* just above the halfway point rounds up */
    ck_assert(proto_f16_round(nextafterf(1.0f + 0x1p-11f, 2.0f)) == 1.0f + 0x1p-10f);
    ck_assert_uint_eq(proto_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(proto_f32_to_f16(65519.0f), 0x7bff);     /* below the halfway point */
    ck_assert_uint_eq(proto_f32_to_f16(65520.0f), 0x7c00);     /* the tie goes to inf */
    ck_assert_uint_eq(proto_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(proto_f32_to_f16(-1e10f), 0xfc00);
    ck_assert_uint_eq(proto_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(proto_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert(isnan(proto_f16_round(NAN)));
    ck_assert(isnan(proto_f16_round(from_bits(0xff800001u)))); /* payload below the top 10 bits */
    ck_assert_uint_eq(proto_f32_to_f16(from_bits(0xff800001u)), 0xfe00);
    ck_assert_uint_eq(proto_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    ck_assert_uint_eq(proto_f32_to_f16(-0.0f), 0x8000);
    /* subnormals: 2^-24 is the smallest; 2^-25 is a tie to 0; just above rounds up */
    ck_assert_uint_eq(proto_f32_to_f16(0x1p-24f), 0x0001);
    ck_assert_uint_eq(proto_f32_to_f16(0x1p-25f), 0x0000);
    ck_assert_uint_eq(proto_f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    ck_assert_uint_eq(proto_f32_to_f16(-0x1p-26f), 0x8000);
    ck_assert_uint_eq(proto_f32_to_f16(3 * 0x1p-25f), 0x0002);     /* 1.5 ulp: tie to even 2 */
    ck_assert_uint_eq(proto_f32_to_f16(5 * 0x1p-25f), 0x0002);     /* 2.5 ulp: tie to even 2 */
    ck_assert_uint_eq(proto_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400); /* rounds up to normal */
    ck_assert_uint_eq(proto_f32_to_f16(0x3ffp-24f), 0x03ff);         /* largest subnormal */
    /* subnormal results: absolute error <= 2^-25 */
    for (int i = 0; i < 100000; i++) {
        float f = frnd() * 0x1p-14f;
        float r = proto_f16_round(f);
        if (fabs((double)r - (double)f) > 0x1p-25)
            ck_abort_msg("subnormal %.9g -> %.9g", (double)f, (double)r);
    }
    /* the array codec is little-endian binary16 */
    float v[3] = {1.0f, -2.0f, 0.5f};
    uint8_t b[6];
    proto_fp16_encode(b, v, 3);
    static const uint8_t want[6] = {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38};
    ck_assert_mem_eq(b, want, 6);
    float back[3];
    proto_fp16_decode(back, b, 3);
    ck_assert(back[0] == 1.0f && back[1] == -2.0f && back[2] == 0.5f);
}
END_TEST

/* ------------------------------------------------------------- top-k */

/* Reference: a full sort by (|v| desc, index asc). */
static const float *ref_v;
static int ref_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    uint32_t ki = bits(ref_v[i]) & 0x7fffffffu, kj = bits(ref_v[j]) & 0x7fffffffu;
    if (ki != kj)
        return ki > kj ? -1 : 1;
    return i < j ? -1 : i > j;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    return i < j ? -1 : i > j;
}

START_TEST(test_topk_select)
{
    size_t sizes[] = {1, 2, 3, 7, 64, 1000, 4099};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        float *v = malloc(n * sizeof *v);
        uint32_t *work = malloc(n * sizeof *work), *idx = malloc(n * sizeof *idx),
                 *ref = malloc(n * sizeof *ref);
        ck_assert(v && work && idx && ref);
        for (int trial = 0; trial < 8; trial++) {
            for (size_t i = 0; i < n; i++) {
                switch (trial) {
                case 0: v[i] = frnd(); break;
                case 1: v[i] = (float)(rnd() % 5) - 2.0f; break; /* many ties, signs */
                case 2: v[i] = 1.0f; break;                       /* all tied */
                case 3: v[i] = (float)i; break;                   /* sorted */
                case 4: v[i] = -(float)i; break;
                case 5: v[i] = (rnd() % 7 == 0) ? NAN : frnd(); break;
                case 6: /* one high-bit bin: the keys differ in the low 12 bits */
                    v[i] = from_bits((0x3f800000u + (uint32_t)(rnd() % 4096)) |
                                     (rnd() % 2 ? 0x80000000u : 0));
                    break;
                default: { /* zeros of both signs, subnormals, infinities */
                    static const uint32_t b[] = {0, 0x80000000u, 1, 0x80000002u, 0x007fffffu,
                                                 0x7f800000u, 0xff800000u, 0x00800000u};
                    v[i] = from_bits(b[rnd() % 8]);
                    break;
                }
                }
            }
            ref_v = v;
            for (size_t i = 0; i < n; i++)
                ref[i] = (uint32_t)i;
            qsort(ref, n, sizeof *ref, ref_cmp);
            size_t ks[] = {1, n / 100 + 1, n / 3, n - 1, n};
            for (size_t ki = 0; ki < 5; ki++) {
                size_t k = ks[ki];
                if (k == 0 || k > n)
                    continue;
                ck_assert_int_eq(proto_topk_select(v, n, k, work, idx), 0);
                qsort(ref, k, sizeof *ref, u32_cmp); /* the k first, in index order */
                if (memcmp(idx, ref, k * sizeof *idx) != 0)
                    ck_abort_msg("n %zu k %zu trial %d: selection differs from the sort", n, k,
                                 trial);
                for (size_t i = 0; i < n; i++)
                    ref[i] = (uint32_t)i;
                qsort(ref, n, sizeof *ref, ref_cmp);
            }
        }
        free(v);
        free(work);
        free(idx);
        free(ref);
    }
    /* ties go to the smaller index */
    float t[6] = {1, -3, 3, 2, -3, 0};
    uint32_t w6[6], i2[2];
    ck_assert_int_eq(proto_topk_select(t, 6, 2, w6, i2), 0);
    ck_assert_uint_eq(i2[0], 1);
    ck_assert_uint_eq(i2[1], 2);
    ck_assert_int_eq(proto_topk_select(t, 6, 7, w6, i2), PROTO_CMP_INVALID);
    ck_assert_int_eq(proto_topk_select(t, 6, 0, w6, i2), 0);
    /* k from a percentage */
    ck_assert_uint_eq(proto_topk_count(1000, 1.0), 10);
    ck_assert_uint_eq(proto_topk_count(1001, 1.0), 11);
    ck_assert_uint_eq(proto_topk_count(50, 1.0), 1);
    ck_assert_uint_eq(proto_topk_count(7, 0.0001), 1);
    ck_assert_uint_eq(proto_topk_count(7, 100.0), 7);
    ck_assert_uint_eq(proto_topk_count(431080, 1.0), 4311);
}
END_TEST

/* ----------------------------------------------------------- sparse */

START_TEST(test_sparse_round_trip)
{
    size_t n = 1000;
    float v[1000], out[1000], r[1000];
    uint32_t work[1000], idx[1000];
    for (size_t i = 0; i < n; i++)
        v[i] = frnd();
    size_t k = 37;
    ck_assert_int_eq(proto_topk_select(v, n, k, work, idx), 0);
    float vals[1000];
    for (size_t j = 0; j < k; j++)
        vals[j] = v[idx[j]];
    uint8_t buf[4 + 9 * 1000];
    size_t len = proto_sparse_size(idx, k);
    ck_assert_uint_le(len, proto_sparse_size_max(k));
    proto_sparse_encode(buf, idx, vals, k);
    size_t c = 0;
    ck_assert_int_eq(proto_sparse_check(buf, len, n, &c), 0);
    ck_assert_uint_eq(c, k);
    memset(out, 0, sizeof out);
    ck_assert_int_eq(proto_sparse_apply(buf, len, n, out), 0);
    size_t nz = 0;
    for (size_t i = 0; i < n; i++)
        if (out[i] != 0.0f) {
            nz++;
            ck_assert(out[i] == v[i]);
        }
    ck_assert_uint_eq(nz, k);
    uint32_t idx2[1000];
    float vals2[1000];
    ck_assert_int_eq(proto_sparse_decode(buf, len, n, idx2, vals2, &c), 0);
    ck_assert_uint_eq(c, k);
    ck_assert_mem_eq(idx2, idx, k * sizeof idx[0]);
    ck_assert_mem_eq(vals2, vals, k * sizeof vals[0]);
    /* big-endian count, little-endian values, then the gaps */
    ck_assert_uint_eq(proto_get_be32(buf), k);
    float f0;
    proto_floats_decode(&f0, buf + 4, 1);
    ck_assert(f0 == v[idx[0]]);
    /* empty */
    proto_sparse_encode(buf, idx, vals, 0);
    ck_assert_uint_eq(proto_sparse_size(idx, 0), 4);
    ck_assert_int_eq(proto_sparse_check(buf, 4, n, &c), 0);
    ck_assert_uint_eq(c, 0);
    /* delta: old -> cur bit for bit (a -0, a NaN payload) */
    for (size_t i = 0; i < n; i++)
        r[i] = v[i];
    r[3] = -r[3];
    r[10] = -0.0f;
    v[10] = 0.0f;
    r[500] = from_bits(0x7fc00001u);
    v[500] = from_bits(0x7fc00002u);
    r[999] += 1.0f;
    size_t dc;
    len = proto_delta_size(v, r, n, &dc);
    ck_assert_uint_eq(dc, 4);
    /* gaps 3, 6, 489, 498: 1 + 1 + 2 + 2 bytes */
    ck_assert_uint_eq(len, 4 + 4 * 4 + 6);
    proto_delta_encode(buf, v, r, n, dc);
    memcpy(out, v, sizeof out);
    ck_assert_int_eq(proto_sparse_apply(buf, len, n, out), 0);
    ck_assert_mem_eq(out, r, sizeof out);
}
END_TEST

/* Gaps of every varint length, the largest index a slice can have, and the
 * exact bytes of the documented example. */
START_TEST(test_sparse_gaps)
{
    static const uint32_t idx[] = {0, 1, 128, 128 + 1 + 16383, 128 + 1 + 16383 + 1 + 2097152,
                                   0xfffffffeu};
    float vals[6] = {1, 2, 3, 4, 5, 6}, back[6];
    uint32_t got[6];
    uint8_t buf[4 + 9 * 6];
    /* gaps 0, 0, 126, 16383, 2097152, the rest: 1, 1, 1, 2, 4, 5 bytes */
    size_t len = proto_sparse_size(idx, 6);
    ck_assert_uint_eq(len, 4 + 24 + 1 + 1 + 1 + 2 + 4 + 5);
    proto_sparse_encode(buf, idx, vals, 6);
    size_t c;
    ck_assert_int_eq(proto_sparse_decode(buf, len, 0xffffffffu, got, back, &c), 0);
    ck_assert_uint_eq(c, 6);
    ck_assert_mem_eq(got, idx, sizeof idx);
    ck_assert_mem_eq(back, vals, sizeof vals);
    ck_assert_int_eq(proto_sparse_check(buf, len, 0xfffffffeu, &c), PROTO_CMP_INDEX_RANGE);
    /* docs/protocol.md: index 1 = 1.0, index 5 = 2.0 */
    static const uint8_t doc[] = {0, 0, 0, 2, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40,
                                  0x01, 0x03};
    uint32_t di[2] = {1, 5};
    float dv[2] = {1.0f, 2.0f};
    ck_assert_uint_eq(proto_sparse_size(di, 2), sizeof doc);
    proto_sparse_encode(buf, di, dv, 2);
    ck_assert_mem_eq(buf, doc, sizeof doc);
}
END_TEST

/* Every malformed body is refused with its code, and dst is untouched. */
START_TEST(test_sparse_rejects)
{
    uint8_t b[64];
    size_t c;
    float dst[8] = {0};
    float keep[8] = {0};
    /* count 2: (1, 1.0), (5, 2.0) for n = 8: 4 + 8 + gaps 1, 3 */
    uint32_t idx[2] = {1, 5};
    float vals[2] = {1.0f, 2.0f};
    proto_sparse_encode(b, idx, vals, 2);
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), 0);
    for (size_t len = 0; len < 14; len++)
        ck_assert_int_eq(proto_sparse_check(b, len, 8, &c), PROTO_CMP_TRUNCATED);
    b[14] = 0;
    ck_assert_int_eq(proto_sparse_check(b, 15, 8, &c), PROTO_CMP_EXTRA);
    ck_assert_int_eq(proto_sparse_check(b, 22, 8, &c), PROTO_CMP_EXTRA);
    /* index == n, index far out (second gap 0x7f: 1 + 1 + 127) */
    ck_assert_int_eq(proto_sparse_check(b, 14, 5, &c), PROTO_CMP_INDEX_RANGE);
    b[13] = 0x7f;
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), PROTO_CMP_INDEX_RANGE);
    ck_assert_int_eq(proto_sparse_apply(b, 14, 8, dst), PROTO_CMP_INDEX_RANGE);
    ck_assert_mem_eq(dst, keep, sizeof dst);
    /* a gap's continuation runs out of bytes */
    b[13] = 0x83;
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), PROTO_CMP_TRUNCATED);
    /* not the shortest form: 3 as 0x83 0x00 */
    b[14] = 0x00;
    ck_assert_int_eq(proto_sparse_check(b, 15, 8, &c), PROTO_CMP_GAP);
    ck_assert_int_eq(proto_sparse_apply(b, 15, 8, dst), PROTO_CMP_GAP);
    ck_assert_mem_eq(dst, keep, sizeof dst);
    /* over 5 bytes; 5 bytes above 2^32 */
    memset(b + 13, 0x80, 5);
    b[18] = 0x01;
    ck_assert_int_eq(proto_sparse_check(b, 19, 8, &c), PROTO_CMP_GAP);
    memset(b + 13, 0xff, 4);
    b[17] = 0x10;
    ck_assert_int_eq(proto_sparse_check(b, 18, 0xffffffffu, &c), PROTO_CMP_GAP);
    /* the index sum passes 2^32 (the walk is not fooled by wrap-around) */
    static const uint8_t wrap[] = {0xfe, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f};
    proto_sparse_encode(b, idx, vals, 2);
    memcpy(b + 12, wrap, sizeof wrap);
    ck_assert_int_eq(proto_sparse_check(b, 22, 0xffffffffu, &c), PROTO_CMP_INDEX_RANGE);
    /* count > n (no allocation depends on it: it is checked first) */
    proto_sparse_encode(b, idx, vals, 2);
    proto_put_be32(b, 9);
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), PROTO_CMP_COUNT);
    proto_put_be32(b, 0xffffffffu);
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), PROTO_CMP_COUNT);
    /* a count the bytes cannot hold is refused before any gap is read */
    proto_put_be32(b, 3);
    ck_assert_int_eq(proto_sparse_check(b, 14, 8, &c), PROTO_CMP_TRUNCATED);
    ck_assert_str_eq(proto_cmp_strerror(PROTO_CMP_GAP),
                     "malformed sparse index gap (over 5 bytes, above 2^32, or not minimal)");
}
END_TEST

/* ---------------------------------------------------- error feedback */

/* Over many steps, what was sent plus the final residual adds up to every
 * gradient (per entry, within float rounding): nothing is lost. */
static void ef_conserves(int fp16)
{
    enum { N = 2000, STEPS = 300 };
    float *g = malloc(N * sizeof *g), *r = calloc(N, sizeof *r), *send = malloc(N * sizeof *send);
    double *sum_g = calloc(N, sizeof *sum_g), *sum_sent = calloc(N, sizeof *sum_sent);
    uint32_t *work = malloc(N * sizeof *work), *idx = malloc(N * sizeof *idx);
    float *vals = malloc(N * sizeof *vals);
    ck_assert(g && r && send && sum_g && sum_sent && work && idx && vals);
    size_t k = proto_topk_count(N, 1.0);
    double scale = 0;
    for (int s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < N; i++) {
            g[i] = frnd() * (i % 10 == 0 ? 1.0f : 0.01f) + 0.001f;
            sum_g[i] += g[i];
            scale += fabs(g[i]);
        }
        if (fp16) {
            proto_ef_fp16(g, r, send, N);
            uint8_t *b = malloc(2 * N);
            ck_assert_ptr_nonnull(b);
            proto_fp16_encode(b, send, N);
            proto_fp16_decode(send, b, N); /* what the shard decodes */
            free(b);
            for (size_t i = 0; i < N; i++)
                sum_sent[i] += send[i];
        } else {
            ck_assert_int_eq(proto_ef_topk(g, r, N, k, work, idx, vals), 0);
            for (size_t j = 0; j < k; j++)
                sum_sent[idx[j]] += vals[j];
        }
    }
    double total_g = 0, total = 0, worst = 0;
    for (size_t i = 0; i < N; i++) {
        double e = fabs(sum_sent[i] + r[i] - sum_g[i]);
        if (e > worst)
            worst = e;
        total_g += sum_g[i];
        total += sum_sent[i] + r[i];
    }
    /* float accumulation in r: a few ulps of the running magnitudes per step */
    double tol = 1e-5 * scale / N;
    fprintf(stderr, "ef %s: sum of gradients %.6f, sent + residual %.6f, worst entry %.3g (tol %.3g)\n",
            fp16 ? "fp16" : "topk 1%", total_g, total, worst, tol);
    ck_assert_msg(worst <= tol, "an entry lost %g (tolerance %g)", worst, tol);
    ck_assert_msg(fabs(total - total_g) <= tol * N, "the sum lost %g", fabs(total - total_g));
    if (!fp16) {
        /* and something was still owed: the test would see a leak */
        double owed = 0;
        for (size_t i = 0; i < N; i++)
            owed += fabs(r[i]);
        ck_assert(owed > 0);
    }
    free(g), free(r), free(send), free(sum_g), free(sum_sent), free(work), free(idx), free(vals);
}

START_TEST(test_ef_topk_conserves)
{
    ef_conserves(0);
}
END_TEST

START_TEST(test_ef_fp16_conserves)
{
    ef_conserves(1);
}
END_TEST

/* --------------------------------------------------------- messages */

static proto_frame frame_from(const uint8_t *buf, size_t len)
{
    proto_frame f;
    ck_assert_int_eq(proto_frame_parse(buf, len, PROTO_MAX_FRAME_LIMIT, &f), (int)len);
    return f;
}

START_TEST(test_push_encodings)
{
    enum { N = 300 };
    float g[N], out[N];
    uint32_t work[N], idx[N];
    float vals[N];
    for (size_t i = 0; i < N; i++)
        g[i] = frnd();
    proto_push p = {.seq = 3, .base_version = 4, .step = 5, .samples = 6, .lo = 32, .hi = 32 + N,
                    .values = g};
    size_t len;
    uint8_t *buf = malloc(64 + 8 * N);
    ck_assert_ptr_nonnull(buf);
    /* fp32: byte-compatible with the old frame (encoding field 0) */
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_PUSH_FIXED + 4 * N);
    ck_assert_uint_eq(proto_get_be32(buf + PROTO_FRAME_OVERHEAD + 28), 0);
    proto_frame f = frame_from(buf, len);
    proto_push d;
    ck_assert_int_eq(proto_push_decode(&f, &d), 0);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_FP32);
    proto_push_values(&d, out);
    ck_assert_mem_eq(out, g, sizeof g);
    /* fp16 */
    p.encoding = PROTO_ENC_FP16;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_PUSH_FIXED + 2 * N);
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), 0);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_FP16);
    proto_push_values(&d, out);
    for (size_t i = 0; i < N; i++)
        ck_assert(out[i] == proto_f16_round(g[i]));
    /* topk */
    ck_assert_int_eq(proto_topk_select(g, N, 7, work, idx), 0);
    for (size_t j = 0; j < 7; j++)
        vals[j] = g[idx[j]];
    p.encoding = PROTO_ENC_SPARSE;
    p.idx = idx;
    p.values = vals;
    p.count = 7;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_PUSH_FIXED + proto_sparse_size(idx, 7));
    ck_assert_uint_le(proto_sparse_size(idx, 7), 4 + 4 * 7 + 2 * 7); /* gaps < 2^14 */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), 0);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(d.count, 7);
    proto_push_values(&d, out);
    for (size_t i = 0, j = 0; i < N; i++) {
        if (j < 7 && idx[j] == i)
            ck_assert(out[i] == g[idx[j++]]);
        else
            ck_assert(out[i] == 0.0f);
    }
    /* the encoder refuses bad indices */
    uint32_t bad[2] = {5, 5};
    p.idx = bad;
    p.count = 2;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), PROTO_ERR_INVALID);
    bad[1] = N;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), PROTO_ERR_INVALID);
    p.encoding = 3;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), PROTO_ERR_INVALID);
    /* the decoder refuses an unknown encoding, a wrong fp16 size, a bad sparse body */
    p.encoding = PROTO_ENC_SPARSE;
    p.idx = idx;
    p.count = 7;
    ck_assert_int_eq(proto_push_encode(&p, 1, buf, 64 + 8 * N, &len), 0);
    uint8_t *pl = buf + PROTO_FRAME_OVERHEAD;
    proto_put_be32(pl + 28, 3);
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    proto_put_be32(pl + 28, PROTO_ENC_SPARSE);
    proto_put_be64(pl + 40, 32 + idx[6]); /* hi: the last index = n */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_RANGE);
    proto_put_be64(pl + 40, 32 + N);
    buf[len - 1] |= 0x80; /* the last gap runs past the end */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    buf[len - 1] &= 0x7f;
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), 0);
    proto_put_be32(pl + PROTO_PUSH_FIXED, N + 1); /* count above n */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    proto_put_be32(pl + PROTO_PUSH_FIXED, 20); /* count 20: 4 + 100 bytes at least */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    proto_put_be32(pl + 28, PROTO_ENC_FP16); /* 4 + 28 + gaps is not 2 * 300 */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_push_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    free(buf);
}
END_TEST

START_TEST(test_pull_weights_encodings)
{
    enum { N = 200 };
    float w[N], base[N], out[N];
    for (size_t i = 0; i < N; i++)
        base[i] = w[i] = frnd();
    w[7] += 1.0f;
    w[150] = -w[150];
    uint8_t buf[64 + 8 * N];
    size_t len;
    /* PULL: the encoding as a flag */
    for (int e = 0; e < PROTO_ENC_MAX; e++) {
        proto_pull p = {.min_version = 2, .lo = 16, .hi = 16 + N, .encoding = (uint8_t)e};
        ck_assert_int_eq(proto_pull_encode(&p, 1, buf, sizeof buf, &len), 0);
        ck_assert_uint_eq(buf[PROTO_PREFIX_SIZE + 7],
                          e == 0 ? 0 : e == 1 ? PROTO_FLAG_FP16 : PROTO_FLAG_DELTA);
        proto_frame f = frame_from(buf, len);
        proto_pull d;
        ck_assert_int_eq(proto_pull_decode(&f, &d), 0);
        ck_assert_uint_eq(d.encoding, e);
    }
    proto_pull pb = {.lo = 0, .hi = 1, .encoding = PROTO_ENC_MAX};
    ck_assert_int_eq(proto_pull_encode(&pb, 1, buf, sizeof buf, &len), PROTO_ERR_INVALID);
    pb.encoding = 0;
    ck_assert_int_eq(proto_pull_encode(&pb, 1, buf, sizeof buf, &len), 0);
    buf[PROTO_PREFIX_SIZE + 7] = PROTO_FLAG_FP16 | PROTO_FLAG_DELTA;
    proto_frame fb = frame_from(buf, len);
    proto_pull db;
    ck_assert_int_eq(proto_pull_decode(&fb, &db), PROTO_ERR_BAD_FRAME);

    /* WEIGHTS fp32, fp16, delta */
    proto_weights m = {.version = 9, .lo = 16, .hi = 16 + N, .values = w};
    proto_weights d;
    ck_assert_int_eq(proto_weights_encode(&m, 1, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 4 * N);
    proto_frame f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), 0);
    ck_assert_int_eq(proto_weights_values(&d, out), 0);
    ck_assert_mem_eq(out, w, sizeof w);

    m.encoding = PROTO_ENC_FP16;
    ck_assert_int_eq(proto_weights_encode(&m, 1, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 2 * N);
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), 0);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_FP16);
    ck_assert_int_eq(proto_weights_values(&d, out), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert(out[i] == proto_f16_round(w[i]));

    m.encoding = PROTO_ENC_SPARSE;
    m.base = base;
    m.base_version = 8;
    ck_assert_int_eq(proto_weights_encode(&m, 1, NULL, 0, &len), PROTO_ERR_NOSPACE);
    /* entries 7 and 150: 4 + 2 * 4 + gaps 7 (1 byte) and 142 (2 bytes) */
    ck_assert_uint_eq(len, PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 8 + 4 + 8 + 3);
    ck_assert_int_eq(proto_weights_encode(&m, 1, buf, sizeof buf, &len), 0);
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), 0);
    ck_assert_uint_eq(d.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(d.base_version, 8);
    ck_assert_uint_eq(d.count, 2);
    memcpy(out, base, sizeof out);
    ck_assert_int_eq(proto_weights_values(&d, out), 0);
    ck_assert_mem_eq(out, w, sizeof w);
    /* the same delta from its indices (psd's top-k pull): the same bytes */
    uint8_t again[sizeof buf];
    size_t len2;
    uint32_t di[2] = {7, 150};
    float dv[2] = {w[7], w[150]};
    proto_weights mi = m;
    mi.base = NULL;
    mi.idx = di;
    mi.values = dv;
    mi.count = 2;
    ck_assert_int_eq(proto_weights_encode(&mi, 1, again, sizeof again, &len2), 0);
    ck_assert_uint_eq(len2, len);
    ck_assert_mem_eq(again, buf, len);
    di[1] = 7; /* not increasing */
    ck_assert_int_eq(proto_weights_encode(&mi, 1, again, sizeof again, &len2), PROTO_ERR_INVALID);
    di[1] = N;
    ck_assert_int_eq(proto_weights_encode(&mi, 1, again, sizeof again, &len2), PROTO_ERR_INVALID);
    /* a delta index out of the slice, both flags, a flag with NOT_MODIFIED */
    uint8_t *first = buf + PROTO_FRAME_OVERHEAD + PROTO_WEIGHTS_FIXED + 8 + 4 + 8;
    *first = 0x7f; /* 127 + 1 + 142 */
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_RANGE);
    *first = 7;
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), 0);
    buf[PROTO_PREFIX_SIZE + 7] = PROTO_FLAG_DELTA | PROTO_FLAG_FP16;
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    proto_weights nm = {.version = 9, .lo = 16, .hi = 20, .not_modified = 1};
    ck_assert_int_eq(proto_weights_encode(&nm, 1, buf, sizeof buf, &len), 0);
    buf[PROTO_PREFIX_SIZE + 7] |= PROTO_FLAG_FP16;
    f = frame_from(buf, len);
    ck_assert_int_eq(proto_weights_decode(&f, &d), PROTO_ERR_BAD_FRAME);
    /* encode_head is for fp32/fp16 only */
    size_t head, nf;
    ck_assert_int_eq(proto_weights_encode_head(&m, 1, NULL, 0, &head, &nf), PROTO_ERR_INVALID);
}
END_TEST

/* ------------------------------------------------------------ psd */

/* The shard the daemon holds, built here from the same placement. */
static void local_shard(ps_shard *sh)
{
    char err[1024];
    ck_assert_msg(kern_init(err, sizeof err) == 0, "%s", err);
    placement pl;
    ck_assert_msg(placement_load(g_cl.conf, &pl, err, sizeof err) == 0, "%s", err);
    cnn_model m;
    ck_assert_int_eq(placement_model_init(&pl, &m, err, sizeof err), 0);
    ck_assert_int_eq(ps_shard_init(sh, &m, kern_active(), &pl.job.opt, pl.job.seed, 0, NP, err,
                                   sizeof err),
                     0);
    placement_free(&pl);
}

static void one_shard(void)
{
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 1");
    cl_psd_start(0, 1);
}

static void worker_hello_as(psd_client *c, const char *id)
{
    proto_welcome w;
    ck_assert_int_eq(psc_connect(c, g_cl.port[0], 2000, 5000), 0);
    int rc = psc_hello(c, PROTO_ROLE_WORKER, id, "ray", NP, &w);
    ck_assert_msg(rc == 0, "HELLO: %d %s", rc, c->last_error.text);
}

static void worker_hello(psd_client *c)
{
    worker_hello_as(c, "w0");
}

static uint64_t status_bytes_in(void)
{
    cJSON *j = cl_shard_status(0);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "bytes_in");
    ck_assert(cJSON_IsNumber(b));
    uint64_t v = (uint64_t)b->valuedouble;
    cJSON_Delete(j);
    return v;
}

/* A compressed PUSH of encoding enc for gradient g: built in *p (idx/vals
 * are its storage), and what the shard must decode into dec. */
static void push_build(proto_push *p, int enc, const float *g, uint32_t *work, uint32_t *idx,
                       float *vals, float *dec)
{
    p->encoding = (uint32_t)enc;
    p->values = g;
    p->idx = NULL;
    p->count = 0;
    if (enc == PROTO_ENC_FP16) {
        for (size_t i = 0; i < NP; i++)
            dec[i] = proto_f16_round(g[i]);
    } else if (enc == PROTO_ENC_SPARSE) {
        size_t k = proto_topk_count(NP, 1.0);
        ck_assert_int_eq(proto_topk_select(g, NP, k, work, idx), 0);
        memset(dec, 0, NP * sizeof *dec);
        for (size_t j = 0; j < k; j++)
            dec[idx[j]] = vals[j] = g[idx[j]];
        p->idx = idx;
        p->values = vals;
        p->count = k;
    } else {
        memcpy(dec, g, NP * sizeof *dec);
    }
}

/* PUSHes in fp32, fp16 and topk, each applied by psd exactly as
 * ps_shard_apply applies the decoded gradient here; bytes_in grows by the
 * frames as sent. */
START_TEST(test_psd_applies_compressed_push)
{
    one_shard();
    ps_shard ref;
    local_shard(&ref);
    psd_client c;
    worker_hello(&c);
    static float g[NP], dec[NP], vals[NP], got[NP];
    static uint32_t work[NP], idx[NP];
    for (int step = 1; step <= 9; step++) {
        int enc = step % 3;
        for (size_t i = 0; i < NP; i++)
            g[i] = frnd() * 0.1f;
        proto_push p = {.seq = (uint64_t)step, .base_version = ref.version, .step = (uint64_t)step,
                        .samples = 32, .lo = 0, .hi = NP};
        push_build(&p, enc, g, work, idx, vals, dec);
        size_t len;
        ck_assert_int_eq(proto_push_encode(&p, 1, NULL, 0, &len), PROTO_ERR_NOSPACE);
        /* what one STATUS probe itself adds (its HELLO and STATUS_REQ) */
        uint64_t b0 = status_bytes_in();
        uint64_t before = status_bytes_in();
        uint64_t probe = before - b0;
        ck_assert_int_gt(psc_push_send_msg(&c, &p), 0);
        proto_ack a;
        ck_assert_int_eq(psc_ack_recv(&c, &a), 0);
        ck_assert_uint_eq(a.status, PROTO_ACK_APPLIED);
        uint64_t after = status_bytes_in();
        /* the PUSH as sent, plus the second probe */
        ck_assert_msg(after - before == len + probe,
                      "encoding %d: bytes_in grew by %llu, the frame is %zu bytes", enc,
                      (unsigned long long)(after - before), len);
        ps_shard_apply(&ref, dec);
        uint64_t v;
        int nm;
        ck_assert_int_eq(psc_pull(&c, 0, 0, NP, &v, &nm, got), 0);
        ck_assert_uint_eq(v, ref.version);
        if (memcmp(got, ref.w, sizeof got) != 0)
            ck_abort_msg("step %d (encoding %d): psd's weights differ from ps_shard_apply", step,
                         enc);
        if (step <= 3)
            fprintf(stderr, "ray PUSH of %d floats: %s %zu bytes\n", NP,
                    enc == 0 ? "fp32" : enc == 1 ? "fp16" : "topk 1%", len);
    }
    psc_close(&c);
    ps_shard_free(&ref);
}
END_TEST

/* Delta pulls: the first is a full frame (no copy yet), later ones carry
 * only the changed entries; the copy equals the shard's weights bit for bit
 * at every version, and again after a reconnect (a full frame first).
 * fp16 pulls give the rounded weights; NOT_MODIFIED still works. */
START_TEST(test_psd_delta_pulls)
{
    one_shard();
    ps_shard ref;
    local_shard(&ref);
    psd_client c;
    worker_hello(&c);
    static float g[NP], dec[NP], vals[NP], copy[NP];
    static uint32_t work[NP], idx[NP];
    proto_weights w;
    uint64_t seq = 0;
    for (int round = 0; round < 2; round++) {
        ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_msg(w.encoding == PROTO_ENC_FP32, "the first reply on a connection is full");
        ck_assert_mem_eq(copy, ref.w, sizeof copy);
        int deltas = 0;
        for (int step = 0; step < 8; step++) {
            for (size_t i = 0; i < NP; i++)
                g[i] = frnd() * 0.1f;
            seq++;
            proto_push p = {.seq = seq, .base_version = ref.version, .step = seq,
                            .samples = 32, .lo = 0, .hi = NP};
            push_build(&p, PROTO_ENC_SPARSE, g, work, idx, vals, dec);
            proto_ack a;
            ck_assert_int_gt(psc_push_send_msg(&c, &p), 0);
            ck_assert_int_eq(psc_ack_recv(&c, &a), 0);
            ps_shard_apply(&ref, dec);
            uint64_t base = w.version;
            ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
            ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
            ck_assert_uint_eq(w.version, ref.version);
            if (w.encoding == PROTO_ENC_SPARSE) {
                deltas++;
                ck_assert_uint_eq(w.base_version, base);
                ck_assert_msg(w.count > 0 && w.count < NP / 2, "a delta of %zu entries", w.count);
                if (step == 0)
                    fprintf(stderr, "delta pull after one topk step: %zu entries\n", w.count);
            }
            if (memcmp(copy, ref.w, sizeof copy) != 0)
                ck_abort_msg("round %d step %d: the copy differs from the shard", round, step);
        }
        ck_assert_msg(deltas >= 4, "only %d of 8 pulls were deltas", deltas);
        /* a full pull in between: the shard forgets its shadow, the next
         * delta pull is answered in full, the one after as a delta */
        ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_FP32), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_int_eq(w.encoding, PROTO_ENC_FP32);
        ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_int_eq(w.encoding, PROTO_ENC_SPARSE);
        ck_assert_uint_eq(w.count, 0); /* nothing changed since */
        ck_assert_mem_eq(copy, ref.w, sizeof copy);
        /* nothing newer: NOT_MODIFIED, copy unchanged */
        ck_assert_int_gt(psc_pull_send_enc(&c, ref.version + 1, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_int_eq(w.not_modified, 1);
        /* reconnect: the shard has no copy for the new connection */
        psc_close(&c);
        worker_hello(&c);
    }
    /* fp16 */
    ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_FP16), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
    ck_assert_uint_eq(w.encoding, PROTO_ENC_FP16);
    for (size_t i = 0; i < NP; i++)
        if (copy[i] != proto_f16_round(ref.w[i]))
            ck_abort_msg("fp16 pull: entry %zu is %.9g, want %.9g", i, (double)copy[i],
                         (double)proto_f16_round(ref.w[i]));
    psc_close(&c);
    ps_shard_free(&ref);
}
END_TEST

/* One shard, async, pull "topk" at 10%; the reference shard in ref. */
static void topk10_shard(ps_shard *ref)
{
    cl_init(1, 1);
    cl_conf_write("async", "\"epochs\": 1, \"compression\": {\"pull\": \"topk\", "
                           "\"topk_percent\": 10}");
    cl_psd_start(0, 1);
    local_shard(ref);
}

/* Push g as step `seq` (fp32) and apply it to the reference too. */
static void push_both(psd_client *c, ps_shard *ref, uint64_t seq, const float *g)
{
    proto_ack a;
    ck_assert_int_eq(psc_push(c, seq, ref->version, seq, 0, NP, g, &a), 0);
    ps_shard_apply(ref, g);
}

/* Pull "topk" (10%): every delta reply carries at most k entries, the
 * largest differences between the worker's copy and the weights; what it
 * leaves out is sent by later replies, so pulling again at the same
 * version ends with the exact weights. */
START_TEST(test_psd_topk_pulls)
{
    ps_shard ref;
    topk10_shard(&ref);
    psd_client c;
    worker_hello(&c);
    static float g[NP], copy[NP], before[NP];
    const size_t k = proto_topk_count(NP, 10);
    proto_weights w;
    ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_FP32); /* no copy yet: full */
    ck_assert_mem_eq(copy, ref.w, sizeof copy);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < NP; i++)
            g[i] = frnd() * 0.1f;
        push_both(&c, &ref, (uint64_t)step + 1, g);
    }
    /* momentum moved every entry: k per reply, the largest differences */
    int pulls = 0;
    while (memcmp(copy, ref.w, sizeof copy) != 0) {
        memcpy(before, copy, sizeof copy);
        ck_assert_int_gt(psc_pull_send_enc(&c, 0, 0, NP, PROTO_ENC_SPARSE), 0);
        ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
        ck_assert_uint_eq(w.version, ref.version);
        ck_assert_int_eq(w.encoding, PROTO_ENC_SPARSE);
        ck_assert_msg(w.count > 0 && w.count <= k, "pull %d: %zu entries, k = %zu", pulls,
                      w.count, k);
        /* the entries sent are exact, and none left out differs more */
        float min_sent = INFINITY, max_left = 0;
        for (size_t i = 0; i < NP; i++) {
            float d = fabsf(ref.w[i] - before[i]);
            if (copy[i] != before[i]) {
                if (copy[i] != ref.w[i])
                    ck_abort_msg("pull %d: entry %zu sent as %.9g, weight %.9g", pulls, i,
                                 (double)copy[i], (double)ref.w[i]);
                if (d < min_sent)
                    min_sent = d;
            } else if (d > max_left) {
                max_left = d;
            }
        }
        ck_assert_msg(max_left <= min_sent, "pull %d: left out a change of %g, sent one of %g",
                      pulls, (double)max_left, (double)min_sent);
        ck_assert_int_lt(++pulls, 12);
    }
    ck_assert_int_ge(pulls, (int)((NP + k - 1) / k) - 1);
    psc_close(&c);
    ps_shard_free(&ref);
}
END_TEST

/* A PULL that holds the initial weights (SEED) with their CRC gets the
 * changes since them, all of them even with pull "topk" (a worker joining
 * late must not train on mostly initial weights), as a delta against
 * version 0; nothing changed: an empty delta.  A wrong CRC gets the
 * weights in full (and a log line); the seeded copy is the connection's
 * shadow, so the next pulls are top-k deltas against it. */
START_TEST(test_psd_seed_pulls)
{
    ps_shard ref;
    topk10_shard(&ref);
    static float init[NP], copy[NP], g[NP];
    memcpy(init, ref.w, sizeof init);
    const uint32_t crc = cnn_params_crc(init, NP);
    const size_t k = proto_topk_count(NP, 10);
    proto_pull seed = {.lo = 0, .hi = NP, .encoding = PROTO_ENC_SPARSE, .seed = 1,
                       .seed_crc = crc};
    proto_weights w;
    psd_client c, late, bad;
    worker_hello(&c);
    memcpy(copy, init, sizeof copy);
    ck_assert_int_gt(psc_pull_send_msg(&c, &seed), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&c, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(w.base_version, 0);
    ck_assert_uint_eq(w.version, 0);
    ck_assert_uint_eq(w.count, 0);
    ck_assert_mem_eq(copy, init, sizeof copy);
    /* three sparse gradients: 30% of the entries change, 3k */
    for (int step = 0; step < 3; step++) {
        memset(g, 0, sizeof g);
        for (size_t i = (size_t)step; i < NP; i += 10)
            g[i] = 0.25f + frnd() * 0.1f;
        push_both(&c, &ref, (uint64_t)step + 1, g);
    }
    size_t changed = 0;
    for (size_t i = 0; i < NP; i++)
        changed += ref.w[i] != init[i];
    ck_assert_uint_gt(changed, 2 * k);
    /* a worker joining now: every change, exact */
    worker_hello_as(&late, "w1");
    memcpy(copy, init, sizeof copy);
    ck_assert_int_gt(psc_pull_send_msg(&late, &seed), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&late, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(w.base_version, 0);
    ck_assert_uint_eq(w.version, ref.version);
    ck_assert_uint_eq(w.count, changed);
    ck_assert_mem_eq(copy, ref.w, sizeof copy);
    /* ... and from there top-k deltas against that copy */
    for (size_t i = 0; i < NP; i++)
        g[i] = frnd() * 0.1f;
    push_both(&c, &ref, 4, g);
    ck_assert_int_gt(psc_pull_send_enc(&late, 0, 0, NP, PROTO_ENC_SPARSE), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&late, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_SPARSE);
    ck_assert_uint_eq(w.base_version, 3);
    ck_assert_uint_eq(w.count, k);
    /* another CRC (another model build or seed): in full */
    worker_hello_as(&bad, "w2");
    proto_pull wrong = seed;
    wrong.seed_crc = crc ^ 1u;
    memcpy(copy, init, sizeof copy);
    ck_assert_int_gt(psc_pull_send_msg(&bad, &wrong), 0);
    ck_assert_int_eq(psc_weights_recv_msg(&bad, &w, copy, NP), 0);
    ck_assert_int_eq(w.encoding, PROTO_ENC_FP32);
    ck_assert_mem_eq(copy, ref.w, sizeof copy);
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "ps0");
    char *ps = cl_file_text(log);
    ck_assert_msg(strstr(ps, "sending them in full"), "no log line:\n%s", ps);
    free(ps);
    psc_close(&c);
    psc_close(&late);
    psc_close(&bad);
    ps_shard_free(&ref);
}
END_TEST

/* ------------------------------------------------------------ cluster */

/* One shard, `nw` workers, sync, ray, 1 epoch, pull `pull`: the shard's
 * final weights into w. */
static void sync_weights(int nw, const char *pull, float *w, uint64_t *version)
{
    char job[128];
    snprintf(job, sizeof job, "\"epochs\": 2, \"compression\": {\"pull\": \"%s\"}", pull);
    cl_init(1, nw);
    cl_conf_write("sync", job);
    cl_psd_start(0, 1);
    for (int i = 0; i < nw; i++)
        cl_worker_start(i, NULL);
    for (int i = 0; i < nw; i++) {
        char *l = cl_worker_wait_ok(i, RUN_MS);
        /* delta: started from the initial weights, built by the worker */
        int seeded = strstr(l, "(1 of 1 shards sent the changes since the initial") != NULL;
        ck_assert_msg(strstr(l, "first weights in ") && seeded == !strcmp(pull, "delta"),
                      "pull %s:\n%s", pull, l);
        free(l);
    }
    cl_shard_weights(0, 0, NP, w, version);
    cl_teardown();
}

/* Delta pulls are exact: a job trains to the same weights, bit for bit, as
 * with full pulls (the delta workers start from the initial weights they
 * build themselves, and pull only the changes since). */
START_TEST(test_cluster_delta_exact)
{
    static float full[NP], delta[NP];
    uint64_t vf, vd;
    for (int nw = 1; nw <= 1; nw++) {
        sync_weights(nw, "full", full, &vf);
        sync_weights(nw, "delta", delta, &vd);
        ck_assert_uint_eq(vf, vd);
        for (int i = 0; i < NP; i++)
            if (memcmp(&full[i], &delta[i], 4) != 0)
                ck_abort_msg("%d worker(s): weight %d is %.9g with full pulls, %.9g with delta",
                             nw, i, (double)full[i], (double)delta[i]);
    }
}
END_TEST

/* lenet, two shards, one worker, sync, `epochs`; compression (a JSON
 * object or NULL).  One worker: with two, the rounds still depend a little
 * on timing (two uncompressed runs can end 2 points apart), more than the
 * 0.5 points compared here; one worker in sync mode is deterministic.
 * Returns the worker's final test accuracy; *bytes_out and *bytes_in get
 * its bytes sent and received in the first epoch. */

static double train_run(const char *compression, int epochs, unsigned long long *bytes_out,
                        unsigned long long *bytes_in)
{
    char job[256];
    snprintf(job, sizeof job, "\"epochs\": %d%s%s", epochs, compression ? ", \"compression\": " : "",
             compression ? compression : "");
    cl_init(2, 1);
    /* lenet at lr 0.05 diverges with momentum 0.9 (compressed or not); and
     * cl_teardown sets it back to 0.9 after each run */
    g_momentum = "0.5";
    cl_conf_write("sync", job);
    { /* lenet: cl_conf_write writes ray */
        char *t = cl_file_text(g_cl.conf);
        char *m = strstr(t, "\"model\": \"ray\"");
        ck_assert_ptr_nonnull(m);
        size_t n = strlen(t);
        char *u = malloc(n + 8);
        ck_assert_ptr_nonnull(u);
        size_t pre = (size_t)(m - t);
        memcpy(u, t, pre);
        size_t o = pre + (size_t)sprintf(u + pre, "\"model\": \"lenet\"");
        memcpy(u + o, m + strlen("\"model\": \"ray\""), n - pre - strlen("\"model\": \"ray\"") + 1);
        ck_assert_int_eq(fixtures_file_write(g_cl.conf, (const uint8_t *)u, strlen(u), 0), 0);
        free(u);
        free(t);
    }
    cl_psd_start(0, 1);
    cl_psd_start(1, 1);
    cl_worker_start(0, NULL);
    char *l0 = cl_worker_wait_ok(0, RUN_MS);
    ck_assert_msg(cl_count_lines(l0, "epoch=") == epochs, "w0 log:\n%s", l0);
    const char *b = strstr(l0, "bytes_out=");
    ck_assert_msg(b && strstr(l0, "bytes_in="), "no bytes in the epoch line:\n%s", l0);
    *bytes_out = strtoull(b + strlen("bytes_out="), NULL, 10);
    *bytes_in = strtoull(strstr(l0, "bytes_in=") + strlen("bytes_in="), NULL, 10);
    if (compression)
        ck_assert_msg(strstr(l0, "compression: push"), "the setting is not logged:\n%s", l0);
    double acc = cl_last_test_acc(l0);
    fprintf(stderr, "%s: test_acc by epoch:", compression ? compression : "uncompressed");
    for (const char *q = strstr(l0, "\nepoch="); q; q = strstr(q + 1, "\nepoch=")) {
        const char *a = strstr(q, " test_acc="), *e = strchr(q + 1, '\n');
        if (a && (!e || a < e))
            fprintf(stderr, " %.2f", strtod(a + strlen(" test_acc="), NULL));
    }
    fprintf(stderr, "\n");
    char log[FIXTURES_PATH_MAX + 32];
    cl_log_path(log, sizeof log, "ps0");
    char *ps = cl_file_text(log);
    ck_assert_msg(strstr(ps, "compression: "), "psd does not log the setting:\n%s", ps);
    free(ps);
    free(l0);
    cl_teardown();
    return acc;
}

START_TEST(test_cluster_topk_accuracy)
{
    int epochs = 5;
    unsigned long long b_none, b_topk, i_none, i_topk;
    double none = train_run(NULL, epochs, &b_none, &i_none);
    double topk = train_run("{\"push\": \"topk\", \"topk_percent\": 1, \"pull\": \"delta\"}",
                            epochs, &b_topk, &i_topk);
    fprintf(stderr,
            "lenet, sync, 2 shards x 1 worker, %d epochs: test accuracy uncompressed %.2f%%, "
            "topk 1%% + delta pulls %.2f%%; epoch 1: sent %llu vs %llu bytes, received %llu vs %llu\n",
            epochs, none, topk, b_none, b_topk, i_none, i_topk);
    ck_assert_msg(none > 50.0, "the uncompressed job did not learn (%.2f%%)", none);
    ck_assert_msg(topk >= none - 0.5, "topk 1%%: %.2f%%, uncompressed %.2f%%: more than 0.5 "
                  "points apart", topk, none);
    ck_assert_msg(b_topk * 5 < b_none, "topk sent %llu bytes, uncompressed %llu", b_topk, b_none);
}
END_TEST

Suite *compress_suite(void)
{
    Suite *s = suite_create("compress");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, test_fp16_all_halves);
    tcase_add_test(tc, test_fp16_rounding);
    tcase_add_test(tc, test_topk_select);
    tcase_add_test(tc, test_sparse_round_trip);
    tcase_add_test(tc, test_sparse_gaps);
    tcase_add_test(tc, test_sparse_rejects);
    tcase_add_test(tc, test_ef_topk_conserves);
    tcase_add_test(tc, test_ef_fp16_conserves);
    suite_add_tcase(s, tc);
    tc = tcase_create("messages");
    tcase_add_test(tc, test_push_encodings);
    tcase_add_test(tc, test_pull_weights_encodings);
    suite_add_tcase(s, tc);
    tc = tcase_create("daemons");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, NULL, cl_teardown);
    tcase_add_test(tc, test_psd_applies_compressed_push);
    tcase_add_test(tc, test_psd_delta_pulls);
    tcase_add_test(tc, test_psd_topk_pulls);
    tcase_add_test(tc, test_psd_seed_pulls);
    tcase_add_test(tc, test_cluster_delta_exact);
    tcase_add_test(tc, test_cluster_topk_accuracy);
    suite_add_tcase(s, tc);
    return s;
}
