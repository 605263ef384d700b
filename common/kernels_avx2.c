/* kernels_avx2.c - AVX2 + FMA kernels; compiled with -mavx2 -mfma and only
 * used after kern_find() has checked the CPU and the OS (YMM state enabled
 * in XCR0).
 *
 * SGEMM: the shared packed driver (kernels_gemm.c) with a 6x16 micro-kernel
 * (12 ymm accumulators, two ymm loads of B and six broadcasts of A per k)
 * and packing routines that transpose 8x8 blocks in registers.  Row tails
 * use one specialised kernel per row count, column tails masked C accesses.
 *
 * For C = A B^T with a deep k, a 3x4 tile of dot products reads both
 * k-contiguous operands in place (no transposing packs, no wasted lanes).
 */
#include <immintrin.h>

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "kernels_gemm.h"

#define A2_MR 6
#define A2_NR 16
#define A2_NV (A2_NR / 8)

/* Load/store mask for the first n (0..8) lanes of a ymm. */
static inline __m256i a2_mask(int n)
{
    static const int32_t tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(tab + 8 - n));
}

/* ------------------------------------------------------------ micro-kernel */

/* C tile (mr,nr; ldc) = [C +] ap (kc,A2_MR) * bp (kc,A2_NR), with mr and nv
 * (ymm columns used, 1 or 2) compile-time constants after inlining. */
static inline __attribute__((always_inline)) void
a2_ukr_body(const int mr, const int nv, int nr, int kc, const float *restrict ap,
            const float *restrict bp, float *restrict c, int ldc, int acc)
{
    __m256 r[A2_MR][A2_NV];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            r[i][v] = _mm256_setzero_ps();
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b[A2_NV];
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            b[v] = _mm256_load_ps(bp + 8 * v);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 ai = _mm256_broadcast_ss(ap + i);
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                r[i][v] = _mm256_fmadd_ps(ai, b[v], r[i][v]);
        }
        ap += A2_MR;
        bp += A2_NR;
    }
    if (nr == 8 * nv) {
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) {
                __m256 x = r[i][v];
                if (acc)
                    x = _mm256_add_ps(x, _mm256_loadu_ps(ci + 8 * v));
                _mm256_storeu_ps(ci + 8 * v, x);
            }
        }
        return;
    }
    __m256i mask[A2_NV];
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++)
        mask[v] = a2_mask(nr - 8 * v);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m256 x = r[i][v];
            if (acc)
                x = _mm256_add_ps(x, _mm256_maskload_ps(ci + 8 * v, mask[v]));
            _mm256_maskstore_ps(ci + 8 * v, mask[v], x);
        }
    }
}

#define A2_UKR(M)                                                                      \
    static void a2_ukr_##M(int nr, int kc, const float *restrict ap,                  \
                           const float *restrict bp, float *restrict c, int ldc, int acc) \
    {                                                                                  \
        if (nr > 8)                                                                    \
            a2_ukr_body(M, 2, nr, kc, ap, bp, c, ldc, acc);                            \
        else                                                                           \
            a2_ukr_body(M, 1, nr, kc, ap, bp, c, ldc, acc);                            \
    }
A2_UKR(1) A2_UKR(2) A2_UKR(3) A2_UKR(4) A2_UKR(5) A2_UKR(6)

typedef void (*a2_ukr_fn)(int, int, const float *restrict, const float *restrict,
                          float *restrict, int, int);
static const a2_ukr_fn a2_ukr_tab[A2_MR + 1] = {
    NULL, a2_ukr_1, a2_ukr_2, a2_ukr_3, a2_ukr_4, a2_ukr_5, a2_ukr_6,
};

/* C (mr,nr; ldc) [+]= ap (kc,A2_MR) * bp (kc,A2_NR). */
static void a2_ukernel(int mr, int nr, int kc, const float *restrict ap,
                       const float *restrict bp, float *restrict c, int ldc, int acc)
{
    a2_ukr_tab[mr](nr, kc, ap, bp, c, ldc, acc);
}

/* ------------------------------------------------------------ packing */

/* In-place transpose of the 8x8 block r[row][col]. */
static inline __attribute__((always_inline)) void a2_transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) {
        u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    for (int cc = 0; cc < 4; cc++) {
        r[cc] = _mm256_permute2f128_ps(u[cc], u[4 + cc], 0x20);
        r[4 + cc] = _mm256_permute2f128_ps(u[cc], u[4 + cc], 0x31);
    }
}

/* Loads 8 rows (nrows valid, row stride ld) of 8 k values (km masks the k
 * tail) from src into r, transposed: r[q] = column q. */
static inline __attribute__((always_inline)) void
a2_load_transposed(__m256 r[8], int nrows, const float *restrict src, int ld, int rem,
                   __m256i km)
{
    for (int j = 0; j < 8; j++) {
        const float *s = src + (size_t)j * ld;
        r[j] = j >= nrows ? _mm256_setzero_ps()
               : rem == 8 ? _mm256_loadu_ps(s)
                          : _mm256_maskload_ps(s, km);
    }
    a2_transpose8(r);
}

/* A micro-panel (kc,A2_MR) from rows of op(A); see kern_gemm_pack_a_fn. */
static void a2_pack_a(int trans, int rows, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    if (trans) {
        for (int p = 0; p < kc; p++) {
            const float *s = src + (size_t)p * ld;
            float *d = dst + (size_t)p * A2_MR;
            if (rows == A2_MR) {
                _mm_storeu_ps(d, _mm_loadu_ps(s));
                const __m128 tail = _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(s + 4));
                _mm_storel_pi((__m64 *)(d + 4), tail);
            } else {
                int i = 0;
                for (; i < rows; i++)
                    d[i] = s[i];
                for (; i < A2_MR; i++)
                    d[i] = 0.0f;
            }
        }
        return;
    }
    for (int p0 = 0; p0 < kc; p0 += 8) {
        const int rem = kc - p0 < 8 ? kc - p0 : 8;
        __m256 r[8];
        a2_load_transposed(r, rows, src + p0, ld, rem, a2_mask(rem));
        for (int q = 0; q < rem; q++) {
            float *d = dst + (size_t)(p0 + q) * A2_MR;
            _mm_storeu_ps(d, _mm256_castps256_ps128(r[q]));
            _mm_storel_pi((__m64 *)(d + 4), _mm256_extractf128_ps(r[q], 1));
        }
    }
}

/* B block: micro-panels (kc,A2_NR) from columns of op(B); see
 * kern_gemm_pack_b_fn. */
static void a2_pack_b(int trans, int cols, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    if (trans) {
        for (int j0 = 0; j0 < cols; j0 += A2_NR) {
            const int w = cols - j0;
            const float *s = src + (size_t)j0 * ld;
            float *d = dst + (size_t)j0 * kc;
            for (int p0 = 0; p0 < kc; p0 += 8) {
                const int rem = kc - p0 < 8 ? kc - p0 : 8;
                const __m256i km = a2_mask(rem);
                __m256 r0[8], r1[8];
                a2_load_transposed(r0, w, s + p0, ld, rem, km);
                a2_load_transposed(r1, w - 8, w > 8 ? s + (size_t)8 * ld + p0 : s, ld, rem, km);
                for (int q = 0; q < rem; q++) {
                    _mm256_store_ps(d + (size_t)(p0 + q) * A2_NR, r0[q]);
                    _mm256_store_ps(d + (size_t)(p0 + q) * A2_NR + 8, r1[q]);
                }
            }
        }
        return;
    }
    const int full = cols / A2_NR * A2_NR;
    const int w = cols - full;
    const __m256i m0 = a2_mask(w), m1 = a2_mask(w - 8);
    for (int p = 0; p < kc; p++) {
        const float *s = src + (size_t)p * ld;
        float *d = dst + (size_t)p * A2_NR;
        for (int j0 = 0; j0 < full; j0 += A2_NR) {
            _mm256_store_ps(d + (size_t)j0 * kc, _mm256_loadu_ps(s + j0));
            _mm256_store_ps(d + (size_t)j0 * kc + 8, _mm256_loadu_ps(s + j0 + 8));
        }
        if (w) {
            _mm256_store_ps(d + (size_t)full * kc, _mm256_maskload_ps(s + full, m0));
            _mm256_store_ps(d + (size_t)full * kc + 8, _mm256_maskload_ps(s + full + 8, m1));
        }
    }
}

/* ------------------------------------------------------------ dot kernel */

#define A2_DR 3
#define A2_DS 4

/* Sums of four vectors: lane j of the result is the sum of the lanes of
 * v[j]. */
static inline __attribute__((always_inline)) __m128 a2_reduce4(__m256 v0, __m256 v1, __m256 v2,
                                                               __m256 v3)
{
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* C (R,S; ldc) = [C +] A (R,kc; lda) * B (S,kc; ldb)^T with R, S
 * compile-time constants after inlining: R*S ymm dot accumulators over 8 k
 * values per step, the k tail masked, reduced once at the end.  3 x 4 needs
 * 12 accumulators + 4 B + 1 A = 17 registers, one more than AVX2 has; gcc
 * keeps one B vector as a memory operand of its FMAs (an L1 hit), and this
 * measured faster than 4 x 3 (16 registers) and 2 x 5 on Zen 4. */
static inline __attribute__((always_inline)) void
a2_dot_body(const int R, const int S, int kc, const float *restrict a, int lda,
            const float *restrict b, int ldb, float *restrict c, int ldc, int acc)
{
    __m256 r[A2_DR][A2_DS];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int j = 0; j < S; j++)
            r[i][j] = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 bv[A2_DS];
#pragma GCC unroll 4
        for (int j = 0; j < S; j++)
            bv[j] = _mm256_loadu_ps(b + (size_t)j * ldb + p);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 av = _mm256_loadu_ps(a + (size_t)i * lda + p);
#pragma GCC unroll 4
            for (int j = 0; j < S; j++)
                r[i][j] = _mm256_fmadd_ps(av, bv[j], r[i][j]);
        }
    }
    if (p < kc) {
        const __m256i km = a2_mask(kc - p);
        __m256 bv[A2_DS];
#pragma GCC unroll 4
        for (int j = 0; j < S; j++)
            bv[j] = _mm256_maskload_ps(b + (size_t)j * ldb + p, km);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 av = _mm256_maskload_ps(a + (size_t)i * lda + p, km);
#pragma GCC unroll 4
            for (int j = 0; j < S; j++)
                r[i][j] = _mm256_fmadd_ps(av, bv[j], r[i][j]);
        }
    }
    const __m256 z = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        float t[4];
        _mm_storeu_ps(t, a2_reduce4(r[i][0], S > 1 ? r[i][1] : z, S > 2 ? r[i][2] : z,
                                    S > 3 ? r[i][3] : z));
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < S; j++)
            ci[j] = acc ? ci[j] + t[j] : t[j];
    }
}

#define A2_DOT(R, S)                                                                   \
    static void a2_dot_##R##S(int kc, const float *restrict a, int lda,                \
                              const float *restrict b, int ldb, float *restrict c, int ldc, \
                              int acc)                                                 \
    {                                                                                  \
        a2_dot_body(R, S, kc, a, lda, b, ldb, c, ldc, acc);                            \
    }
A2_DOT(1, 1) A2_DOT(1, 2) A2_DOT(1, 3) A2_DOT(1, 4)
A2_DOT(2, 1) A2_DOT(2, 2) A2_DOT(2, 3) A2_DOT(2, 4)
A2_DOT(3, 1) A2_DOT(3, 2) A2_DOT(3, 3) A2_DOT(3, 4)

typedef void (*a2_dot_fn)(int, const float *restrict, int, const float *restrict, int,
                          float *restrict, int, int);
static const a2_dot_fn a2_dot_tab[A2_DR][A2_DS] = {
    {a2_dot_11, a2_dot_12, a2_dot_13, a2_dot_14},
    {a2_dot_21, a2_dot_22, a2_dot_23, a2_dot_24},
    {a2_dot_31, a2_dot_32, a2_dot_33, a2_dot_34},
};

/* C (rows,cols; ldc) [+]= A (rows,kc; lda) * B (cols,kc; ldb)^T. */
static void a2_dot(int rows, int cols, int kc, const float *restrict a, int lda,
                   const float *restrict b, int ldb, float *restrict c, int ldc, int acc)
{
    a2_dot_tab[rows - 1][cols - 1](kc, a, lda, b, ldb, c, ldc, acc);
}

/* Zen 4: kc 256 keeps a B micro-panel (256 x 16 floats, 16 KiB) in L1
 * while the A block (up to 504 x 256, 504 KiB) is streamed from L2; the dot
 * path keeps four B rows of 1024 k (16 KiB) in L1. */
static const kern_gemm_arch a2_gemm_arch = {
    .mr = A2_MR,
    .nr = A2_NR,
    .mc = 504,
    .kc = 256,
    .nc = 128,
    .ukernel = a2_ukernel,
    .pack_a = a2_pack_a,
    .pack_b = a2_pack_b,
    .dot = a2_dot,
    .dr = A2_DR,
    .ds = A2_DS,
    .dkc = 1024,
    .dmc = 96,
    .dot_min_k = 128,
};

/* See kern_ops.sgemm. */
static void a2_sgemm(int ta, int tb, int m, int n, int k, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    kern_gemm_run(&a2_gemm_arch, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------------ element-wise */

/* w, mom, grad (n); see kern_ops.sgd_step. */
static void a2_sgd_step(float *restrict w, float *restrict mom, const float *restrict grad,
                        size_t n, float lr, float momentum, float wd)
{
    const __m256 vlr = _mm256_set1_ps(lr), vmo = _mm256_set1_ps(momentum);
    const __m256 vwd = _mm256_set1_ps(wd);
    size_t i = 0;
    if (momentum == 0.0f) {
        for (; i + 8 <= n; i += 8) {
            __m256 wv = _mm256_loadu_ps(w + i);
            __m256 g = _mm256_fmadd_ps(vwd, wv, _mm256_loadu_ps(grad + i));
            _mm256_storeu_ps(w + i, _mm256_fnmadd_ps(vlr, g, wv));
        }
        for (; i < n; i++) {
            float g = grad[i] + wd * w[i];
            w[i] -= lr * g;
        }
        return;
    }
    for (; i + 8 <= n; i += 8) {
        __m256 wv = _mm256_loadu_ps(w + i);
        __m256 g = _mm256_fmadd_ps(vwd, wv, _mm256_loadu_ps(grad + i));
        __m256 mv = _mm256_fmadd_ps(vmo, _mm256_loadu_ps(mom + i), g);
        _mm256_storeu_ps(mom + i, mv);
        _mm256_storeu_ps(w + i, _mm256_fnmadd_ps(vlr, mv, wv));
    }
    for (; i < n; i++) {
        float g = grad[i] + wd * w[i];
        mom[i] = momentum * mom[i] + g;
        w[i] -= lr * mom[i];
    }
}

/* y, x (n): y += a * x. */
static void a2_axpy(float *restrict y, const float *restrict x, float a, size_t n)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        _mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i + 8),
                                                    _mm256_loadu_ps(y + i + 8)));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* x (n): x = max(x, 0); NaN becomes 0 (vmaxps returns the second operand). */
static void a2_relu_forward(float *x, size_t n)
{
    const __m256 z = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_max_ps(_mm256_loadu_ps(x + i), z));
    for (; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx, y (n): dx = y > 0 ? dx : 0. */
static void a2_relu_backward(float *restrict dx, const float *restrict y, size_t n)
{
    const __m256 z = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pos = _mm256_cmp_ps(_mm256_loadu_ps(y + i), z, _CMP_GT_OQ);
        _mm256_storeu_ps(dx + i, _mm256_and_ps(pos, _mm256_loadu_ps(dx + i)));
    }
    for (; i < n; i++)
        dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
}

/* Twelve independent ymm FMA chains: two FMA units with a 4-cycle latency
 * need at least eight in flight. */
static double a2_fma_peak(long iters)
{
    volatile float seed = 0.999999f;
    const __m256 m = _mm256_set1_ps(seed), s = _mm256_set1_ps(1e-6f * seed);
    __m256 x[12];
    for (int j = 0; j < 12; j++)
        x[j] = _mm256_set1_ps(0.05f * (float)j * seed);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            x[j] = _mm256_fmadd_ps(x[j], m, s);
    }
    __m256 t = x[0];
    for (int j = 1; j < 12; j++)
        t = _mm256_add_ps(t, x[j]);
    float lanes[8];
    _mm256_storeu_ps(lanes, t);
    volatile float sink = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] +
                          lanes[6] + lanes[7];
    (void)sink;
    return (double)iters * 12 * 8 * 2;
}

/* This path's table; kern_find(KERN_PATH_AVX2) returns it when the CPU (and OS)
 * can run it. */
const kern_ops kern_avx2_ops = {
    .name = "avx2",
    .path = KERN_PATH_AVX2,
    .sgemm = a2_sgemm,
    .sgd_step = a2_sgd_step,
    .axpy = a2_axpy,
    .relu_forward = a2_relu_forward,
    .relu_backward = a2_relu_backward,
    .fma_peak = a2_fma_peak,
};
