/* kernels_avx512.c - AVX-512 (F/VL/BW/DQ) kernels; compiled with the
 * matching -m flags and only used after kern_find() has checked the CPU and
 * the OS (opmask and ZMM state enabled in XCR0).
 *
 * SGEMM: the shared packed driver (kernels_gemm.c) with a 14x32 micro-kernel
 * (28 zmm accumulators, two zmm loads of B and 14 broadcasts of A per k) and
 * AVX-512 packing routines that transpose 16x16 blocks in registers.  Row and
 * column tails use one specialised kernel per row count and masked C
 * accesses, so no flops are spent on rows past m.
 *
 * For C = A B^T with a deep k (the CNN's weight gradients), a 4x5 tile of
 * dot products reads both k-contiguous operands in place: no transposing
 * packs and no lanes wasted on a narrow C (n = 25 or 10).
 */
#include <immintrin.h>

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "kernels_gemm.h"

#define A5_MR 14
#define A5_NR 32
#define A5_NV (A5_NR / 16)

/* ------------------------------------------------------------ micro-kernel */

/* C tile (mr,nr; ldc) = [C +] ap (kc,A5_MR) * bp (kc,A5_NR), with mr and nv
 * (zmm columns actually used, 1 or 2) compile-time constants after
 * inlining, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void
a5_ukr_body(const int mr, const int nv, int nr, int kc, const float *restrict ap,
            const float *restrict bp, float *restrict c, int ldc, int acc)
{
    __m512 r[A5_MR][A5_NV];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            r[i][v] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
        if (nv > 1)
            _mm_prefetch((const char *)(c + (size_t)i * ldc + 16), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m512 b[A5_NV];
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            b[v] = _mm512_load_ps(bp + 16 * v);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            __m512 ai = _mm512_set1_ps(ap[i]);
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                r[i][v] = _mm512_fmadd_ps(ai, b[v], r[i][v]);
        }
        ap += A5_MR;
        bp += A5_NR;
    }
    __mmask16 mask[A5_NV];
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
        int left = nr - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    }
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m512 x = r[i][v];
            if (acc)
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v));
            _mm512_mask_storeu_ps(ci + 16 * v, mask[v], x);
        }
    }
}

#define A5_UKR(M)                                                                      \
    static void a5_ukr_##M(int nr, int kc, const float *restrict ap,                  \
                           const float *restrict bp, float *restrict c, int ldc, int acc) \
    {                                                                                  \
        if (nr > 16)                                                                   \
            a5_ukr_body(M, 2, nr, kc, ap, bp, c, ldc, acc);                            \
        else                                                                           \
            a5_ukr_body(M, 1, nr, kc, ap, bp, c, ldc, acc);                            \
    }
A5_UKR(1) A5_UKR(2) A5_UKR(3) A5_UKR(4) A5_UKR(5) A5_UKR(6) A5_UKR(7)
A5_UKR(8) A5_UKR(9) A5_UKR(10) A5_UKR(11) A5_UKR(12) A5_UKR(13) A5_UKR(14)

typedef void (*a5_ukr_fn)(int, int, const float *restrict, const float *restrict,
                          float *restrict, int, int);
static const a5_ukr_fn a5_ukr_tab[A5_MR + 1] = {
    NULL, a5_ukr_1, a5_ukr_2, a5_ukr_3, a5_ukr_4, a5_ukr_5, a5_ukr_6, a5_ukr_7,
    a5_ukr_8, a5_ukr_9, a5_ukr_10, a5_ukr_11, a5_ukr_12, a5_ukr_13, a5_ukr_14,
};

/* C (mr,nr; ldc) [+]= ap (kc,A5_MR) * bp (kc,A5_NR). */
static void a5_ukernel(int mr, int nr, int kc, const float *restrict ap,
                       const float *restrict bp, float *restrict c, int ldc, int acc)
{
    a5_ukr_tab[mr](nr, kc, ap, bp, c, ldc, acc);
}

/* ------------------------------------------------------------ packing */

/* In-place transpose of the 16x16 block r[row][col]. */
static inline __attribute__((always_inline)) void a5_transpose16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + c]: lane L holds column 4L + c of rows 4g..4g+3. */
    for (int g = 0; g < 4; g++) {
        __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
        __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int cc = 0; cc < 4; cc++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[cc], u[4 + cc], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[cc], u[4 + cc], 0xdd);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + cc], u[12 + cc], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + cc], u[12 + cc], 0xdd);
        r[cc] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[8 + cc] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[4 + cc] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + cc] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

static inline __mmask16 a5_mask(int n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Transposing pack: nrows (<= 16) rows of src (row stride ld, kc contiguous
 * values each) become kc rows of dst (stride dstride), width out_mask.
 * Rows past nrows are zero.  16 k values per step; the k tail is masked. */
static inline __attribute__((always_inline)) void
a5_pack_transpose(int nrows, int kc, const float *restrict src, int ld,
                  float *restrict dst, int dstride, __mmask16 out_mask)
{
    for (int p0 = 0; p0 < kc; p0 += 16) {
        const int rem = kc - p0 < 16 ? kc - p0 : 16;
        const __mmask16 km = a5_mask(rem);
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = j < nrows ? _mm512_maskz_loadu_ps(km, src + (size_t)j * ld + p0)
                             : _mm512_setzero_ps();
        a5_transpose16(r);
        for (int q = 0; q < rem; q++)
            _mm512_mask_storeu_ps(dst + (size_t)(p0 + q) * dstride, out_mask, r[q]);
    }
}

/* A micro-panel (kc,A5_MR) from rows of op(A); see kern_gemm_pack_a_fn. */
static void a5_pack_a(int trans, int rows, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    const __mmask16 out = a5_mask(A5_MR);
    if (trans) {
        const __mmask16 in = a5_mask(rows);
        for (int p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(dst + (size_t)p * A5_MR, out,
                                  _mm512_maskz_loadu_ps(in, src + (size_t)p * ld));
    } else {
        a5_pack_transpose(rows, kc, src, ld, dst, A5_MR, out);
    }
}

/* B block: micro-panels (kc,A5_NR) from columns of op(B); see
 * kern_gemm_pack_b_fn. */
static void a5_pack_b(int trans, int cols, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    if (trans) {
        for (int j0 = 0; j0 < cols; j0 += A5_NR) {
            const int w = cols - j0;
            const float *s = src + (size_t)j0 * ld;
            float *d = dst + (size_t)j0 * kc;
            a5_pack_transpose(w, kc, s, ld, d, A5_NR, 0xffff);
            a5_pack_transpose(w - 16, kc, w > 16 ? s + (size_t)16 * ld : s, ld, d + 16, A5_NR,
                              0xffff);
        }
        return;
    }
    const int full = cols / A5_NR * A5_NR;
    const int w = cols - full;
    const __mmask16 m0 = a5_mask(w), m1 = a5_mask(w > 16 ? w - 16 : 0);
    for (int p = 0; p < kc; p++) {
        const float *s = src + (size_t)p * ld;
        float *d = dst + (size_t)p * A5_NR;
        for (int j0 = 0; j0 < full; j0 += A5_NR) {
            _mm512_store_ps(d + (size_t)j0 * kc, _mm512_loadu_ps(s + j0));
            _mm512_store_ps(d + (size_t)j0 * kc + 16, _mm512_loadu_ps(s + j0 + 16));
        }
        if (w) {
            _mm512_store_ps(d + (size_t)full * kc, _mm512_maskz_loadu_ps(m0, s + full));
            _mm512_store_ps(d + (size_t)full * kc + 16, _mm512_maskz_loadu_ps(m1, s + full + 16));
        }
    }
}

/* ------------------------------------------------------------ dot kernel */

#define A5_DR 4
#define A5_DS 5

/* Sums of four vectors: lane j of the result is the sum of the lanes of
 * v[j]. */
static inline __attribute__((always_inline)) __m128 a5_reduce4(__m512 v0, __m512 v1, __m512 v2,
                                                               __m512 v3)
{
    __m256 h0 = _mm256_add_ps(_mm512_castps512_ps256(v0), _mm512_extractf32x8_ps(v0, 1));
    __m256 h1 = _mm256_add_ps(_mm512_castps512_ps256(v1), _mm512_extractf32x8_ps(v1, 1));
    __m256 h2 = _mm256_add_ps(_mm512_castps512_ps256(v2), _mm512_extractf32x8_ps(v2, 1));
    __m256 h3 = _mm256_add_ps(_mm512_castps512_ps256(v3), _mm512_extractf32x8_ps(v3, 1));
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(h0, h1), _mm256_hadd_ps(h2, h3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* C (R,S; ldc) = [C +] A (R,kc; lda) * B (S,kc; ldb)^T with R, S
 * compile-time constants after inlining: R*S zmm dot accumulators over
 * 16 k values per step, the k tail masked, reduced once at the end. */
static inline __attribute__((always_inline)) void
a5_dot_body(const int R, const int S, int kc, const float *restrict a, int lda,
            const float *restrict b, int ldb, float *restrict c, int ldc, int acc)
{
    __m512 r[A5_DR][A5_DS];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 5
        for (int j = 0; j < S; j++)
            r[i][j] = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= kc; p += 16) {
        __m512 bv[A5_DS];
#pragma GCC unroll 5
        for (int j = 0; j < S; j++)
            bv[j] = _mm512_loadu_ps(b + (size_t)j * ldb + p);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 av = _mm512_loadu_ps(a + (size_t)i * lda + p);
#pragma GCC unroll 5
            for (int j = 0; j < S; j++)
                r[i][j] = _mm512_fmadd_ps(av, bv[j], r[i][j]);
        }
    }
    if (p < kc) {
        const __mmask16 km = a5_mask(kc - p);
        __m512 bv[A5_DS];
#pragma GCC unroll 5
        for (int j = 0; j < S; j++)
            bv[j] = _mm512_maskz_loadu_ps(km, b + (size_t)j * ldb + p);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 av = _mm512_maskz_loadu_ps(km, a + (size_t)i * lda + p);
#pragma GCC unroll 5
            for (int j = 0; j < S; j++)
                r[i][j] = _mm512_fmadd_ps(av, bv[j], r[i][j]);
        }
    }
    const __m512 z = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        float t[8];
        _mm_storeu_ps(t, a5_reduce4(r[i][0], S > 1 ? r[i][1] : z, S > 2 ? r[i][2] : z,
                                    S > 3 ? r[i][3] : z));
        if (S > 4)
            _mm_storeu_ps(t + 4, a5_reduce4(r[i][4], z, z, z));
        float *ci = c + (size_t)i * ldc;
        for (int j = 0; j < S; j++)
            ci[j] = acc ? ci[j] + t[j] : t[j];
    }
}

#define A5_DOT(R, S)                                                                   \
    static void a5_dot_##R##S(int kc, const float *restrict a, int lda,                \
                              const float *restrict b, int ldb, float *restrict c, int ldc, \
                              int acc)                                                 \
    {                                                                                  \
        a5_dot_body(R, S, kc, a, lda, b, ldb, c, ldc, acc);                            \
    }
A5_DOT(1, 1) A5_DOT(1, 2) A5_DOT(1, 3) A5_DOT(1, 4) A5_DOT(1, 5)
A5_DOT(2, 1) A5_DOT(2, 2) A5_DOT(2, 3) A5_DOT(2, 4) A5_DOT(2, 5)
A5_DOT(3, 1) A5_DOT(3, 2) A5_DOT(3, 3) A5_DOT(3, 4) A5_DOT(3, 5)
A5_DOT(4, 1) A5_DOT(4, 2) A5_DOT(4, 3) A5_DOT(4, 4) A5_DOT(4, 5)

typedef void (*a5_dot_fn)(int, const float *restrict, int, const float *restrict, int,
                          float *restrict, int, int);
static const a5_dot_fn a5_dot_tab[A5_DR][A5_DS] = {
    {a5_dot_11, a5_dot_12, a5_dot_13, a5_dot_14, a5_dot_15},
    {a5_dot_21, a5_dot_22, a5_dot_23, a5_dot_24, a5_dot_25},
    {a5_dot_31, a5_dot_32, a5_dot_33, a5_dot_34, a5_dot_35},
    {a5_dot_41, a5_dot_42, a5_dot_43, a5_dot_44, a5_dot_45},
};

/* C (rows,cols; ldc) [+]= A (rows,kc; lda) * B (cols,kc; ldb)^T. */
static void a5_dot(int rows, int cols, int kc, const float *restrict a, int lda,
                   const float *restrict b, int ldb, float *restrict c, int ldc, int acc)
{
    a5_dot_tab[rows - 1][cols - 1](kc, a, lda, b, ldb, c, ldc, acc);
}

/* Zen 4 (32 KiB L1d, 1 MiB L2): kc 128 keeps a B micro-panel (128 x 32
 * floats, 16 KiB) in L1 while the A block (up to 504 x 128, 252 KiB) is
 * streamed from L2; nc 512 lets B be packed in long row runs.  The dot
 * path keeps five B rows of 1024 k (20 KiB) in L1. */
static const kern_gemm_arch a5_gemm_arch = {
    .mr = A5_MR,
    .nr = A5_NR,
    .mc = 504,
    .kc = 128,
    .nc = 512,
    .ukernel = a5_ukernel,
    .pack_a = a5_pack_a,
    .pack_b = a5_pack_b,
    .dot = a5_dot,
    .dr = A5_DR,
    .ds = A5_DS,
    .dkc = 1024,
    .dmc = 96,
    .dot_min_k = 128,
};

/* See kern_ops.sgemm. */
static void a5_sgemm(int ta, int tb, int m, int n, int k, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    kern_gemm_run(&a5_gemm_arch, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------------ element-wise */

/* w, mom, grad (n); see kern_ops.sgd_step. */
static void a5_sgd_step(float *restrict w, float *restrict mom, const float *restrict grad,
                        size_t n, float lr, float momentum, float wd)
{
    const __m512 vlr = _mm512_set1_ps(lr), vmo = _mm512_set1_ps(momentum);
    const __m512 vwd = _mm512_set1_ps(wd);
    size_t i = 0;
    if (momentum == 0.0f) {
        for (; i + 16 <= n; i += 16) {
            __m512 wv = _mm512_loadu_ps(w + i);
            __m512 g = _mm512_fmadd_ps(vwd, wv, _mm512_loadu_ps(grad + i));
            _mm512_storeu_ps(w + i, _mm512_fnmadd_ps(vlr, g, wv));
        }
        for (; i < n; i++) {
            float g = grad[i] + wd * w[i];
            w[i] -= lr * g;
        }
        return;
    }
    for (; i + 16 <= n; i += 16) {
        __m512 wv = _mm512_loadu_ps(w + i);
        __m512 g = _mm512_fmadd_ps(vwd, wv, _mm512_loadu_ps(grad + i));
        __m512 mv = _mm512_fmadd_ps(vmo, _mm512_loadu_ps(mom + i), g);
        _mm512_storeu_ps(mom + i, mv);
        _mm512_storeu_ps(w + i, _mm512_fnmadd_ps(vlr, mv, wv));
    }
    for (; i < n; i++) {
        float g = grad[i] + wd * w[i];
        mom[i] = momentum * mom[i] + g;
        w[i] -= lr * mom[i];
    }
}

/* y, x (n): y += a * x. */
static void a5_axpy(float *restrict y, const float *restrict x, float a, size_t n)
{
    const __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
        _mm512_storeu_ps(y + i + 16, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i + 16),
                                                     _mm512_loadu_ps(y + i + 16)));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* x (n): x = max(x, 0); NaN becomes 0 (vmaxps returns the second operand). */
static void a5_relu_forward(float *x, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_max_ps(_mm512_loadu_ps(x + i), z));
    for (; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx, y (n): dx = y > 0 ? dx : 0. */
static void a5_relu_backward(float *restrict dx, const float *restrict y, size_t n)
{
    const __m512 z = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __mmask16 pos = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + i), z, _CMP_GT_OQ);
        _mm512_storeu_ps(dx + i, _mm512_maskz_mov_ps(pos, _mm512_loadu_ps(dx + i)));
    }
    for (; i < n; i++)
        dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
}

/* Twelve independent zmm FMA chains (Zen 4: 4-cycle latency, one 512-bit
 * FMA per cycle; Intel: two per cycle) -- enough to saturate the FMA units. */
static double a5_fma_peak(long iters)
{
    volatile float seed = 0.999999f;
    const __m512 m = _mm512_set1_ps(seed), s = _mm512_set1_ps(1e-6f * seed);
    __m512 x[12];
    for (int j = 0; j < 12; j++)
        x[j] = _mm512_set1_ps(0.05f * (float)j * seed);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            x[j] = _mm512_fmadd_ps(x[j], m, s);
    }
    __m512 t = x[0];
    for (int j = 1; j < 12; j++)
        t = _mm512_add_ps(t, x[j]);
    volatile float sink = _mm512_reduce_add_ps(t);
    (void)sink;
    return (double)iters * 12 * 16 * 2;
}

/* This path's table; kern_find(KERN_PATH_AVX512) returns it when the CPU (and OS)
 * can run it. */
const kern_ops kern_avx512_ops = {
    .name = "avx512",
    .path = KERN_PATH_AVX512,
    .sgemm = a5_sgemm,
    .sgd_step = a5_sgd_step,
    .axpy = a5_axpy,
    .relu_forward = a5_relu_forward,
    .relu_backward = a5_relu_backward,
    .fma_peak = a5_fma_peak,
};
