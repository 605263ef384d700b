/* kernels_neon.c - aarch64 AdvSIMD (NEON) kernels.  AdvSIMD is part of the
 * aarch64 base architecture, so this table is always usable on aarch64
 * builds (the only builds that compile this file).
 *
 * SGEMM: the shared packed driver (kernels_gemm.c) with an 8x12 micro-kernel:
 * 24 q-register accumulators, three q loads of B and two of A per k, and
 * fused multiply-adds by lane.  Row tails use one specialised kernel per row
 * count; column tails store only the columns that exist.  Packing uses the
 * portable routines of the driver.
 */
#include <arm_neon.h>

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "kernels_gemm.h"

#define NE_MR 8
#define NE_NR 12
#define NE_NV (NE_NR / 4)

/* ------------------------------------------------------------ micro-kernel */

/* One A value times the B vectors: lane l of a0 (rows 0-3) or a1 (4-7). */
#define NE_FMA_ROW(i, av, lane)                                                  \
    do {                                                                         \
        if ((i) < mr) {                                                          \
            r[i][0] = vfmaq_laneq_f32(r[i][0], b0, av, lane);                   \
            if (nv > 1)                                                          \
                r[i][1] = vfmaq_laneq_f32(r[i][1], b1, av, lane);               \
            if (nv > 2)                                                          \
                r[i][2] = vfmaq_laneq_f32(r[i][2], b2, av, lane);               \
        }                                                                        \
    } while (0)

/* C tile (mr,nr; ldc) = [C +] ap (kc,NE_MR) * bp (kc,NE_NR), with mr and nv
 * (q columns used, 1..3) compile-time constants after inlining. */
static inline __attribute__((always_inline)) void
ne_ukr_body(const int mr, const int nv, int nr, int kc, const float *restrict ap,
            const float *restrict bp, float *restrict c, int ldc, int acc)
{
    float32x4_t r[NE_MR][NE_NV];
    const float32x4_t z = vdupq_n_f32(0.0f);
#pragma GCC unroll 8
    for (int i = 0; i < NE_MR; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NE_NV; v++)
            r[i][v] = z;
    for (int p = 0; p < kc; p++) {
        const float32x4_t b0 = vld1q_f32(bp);
        const float32x4_t b1 = nv > 1 ? vld1q_f32(bp + 4) : z;
        const float32x4_t b2 = nv > 2 ? vld1q_f32(bp + 8) : z;
        const float32x4_t a0 = vld1q_f32(ap);
        const float32x4_t a1 = mr > 4 ? vld1q_f32(ap + 4) : z;
        NE_FMA_ROW(0, a0, 0);
        NE_FMA_ROW(1, a0, 1);
        NE_FMA_ROW(2, a0, 2);
        NE_FMA_ROW(3, a0, 3);
        NE_FMA_ROW(4, a1, 0);
        NE_FMA_ROW(5, a1, 1);
        NE_FMA_ROW(6, a1, 2);
        NE_FMA_ROW(7, a1, 3);
        ap += NE_MR;
        bp += NE_NR;
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) {
            const int left = nr - 4 * v;
            float32x4_t x = r[i][v];
            if (left >= 4) {
                if (acc)
                    x = vaddq_f32(x, vld1q_f32(ci + 4 * v));
                vst1q_f32(ci + 4 * v, x);
            } else {
                float t[4];
                vst1q_f32(t, x);
                for (int j = 0; j < left; j++)
                    ci[4 * v + j] = acc ? ci[4 * v + j] + t[j] : t[j];
            }
        }
    }
}

#define NE_UKR(M)                                                                      \
    static void ne_ukr_##M(int nr, int kc, const float *restrict ap,                  \
                           const float *restrict bp, float *restrict c, int ldc, int acc) \
    {                                                                                  \
        if (nr > 8)                                                                    \
            ne_ukr_body(M, 3, nr, kc, ap, bp, c, ldc, acc);                            \
        else if (nr > 4)                                                               \
            ne_ukr_body(M, 2, nr, kc, ap, bp, c, ldc, acc);                            \
        else                                                                           \
            ne_ukr_body(M, 1, nr, kc, ap, bp, c, ldc, acc);                            \
    }
NE_UKR(1) NE_UKR(2) NE_UKR(3) NE_UKR(4) NE_UKR(5) NE_UKR(6) NE_UKR(7) NE_UKR(8)

typedef void (*ne_ukr_fn)(int, int, const float *restrict, const float *restrict,
                          float *restrict, int, int);
static const ne_ukr_fn ne_ukr_tab[NE_MR + 1] = {
    NULL, ne_ukr_1, ne_ukr_2, ne_ukr_3, ne_ukr_4, ne_ukr_5, ne_ukr_6, ne_ukr_7, ne_ukr_8,
};

/* C (mr,nr; ldc) [+]= ap (kc,NE_MR) * bp (kc,NE_NR). */
static void ne_ukernel(int mr, int nr, int kc, const float *restrict ap,
                       const float *restrict bp, float *restrict c, int ldc, int acc)
{
    ne_ukr_tab[mr](nr, kc, ap, bp, c, ldc, acc);
}

/* A micro-panel (kc,NE_MR); see kern_gemm_pack_a_fn. */
static void ne_pack_a(int trans, int rows, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    kern_gemm_pack_a_ref(NE_MR, trans, rows, kc, src, ld, dst);
}

/* B block of micro-panels (kc,NE_NR); see kern_gemm_pack_b_fn.  The
 * untransposed full panels are copied with q loads and stores. */
static void ne_pack_b(int trans, int cols, int kc, const float *restrict src, int ld,
                      float *restrict dst)
{
    const int full = trans ? 0 : cols / NE_NR * NE_NR;
    for (int p = 0; p < kc; p++) {
        const float *s = src + (size_t)p * ld;
        float *d = dst + (size_t)p * NE_NR;
        for (int j0 = 0; j0 < full; j0 += NE_NR) {
            float *dj = d + (size_t)j0 * kc;
            vst1q_f32(dj, vld1q_f32(s + j0));
            vst1q_f32(dj + 4, vld1q_f32(s + j0 + 4));
            vst1q_f32(dj + 8, vld1q_f32(s + j0 + 8));
        }
    }
    if (full < cols) {
        const float *rest = trans ? src + (size_t)full * ld : src + full;
        kern_gemm_pack_b_ref(NE_NR, trans, cols - full, kc, rest, ld, dst + (size_t)full * kc);
    }
}

static const kern_gemm_arch ne_gemm_arch = {
    .mr = NE_MR,
    .nr = NE_NR,
    .mc = 256,
    .kc = 256,
    .nc = 384,
    .ukernel = ne_ukernel,
    .pack_a = ne_pack_a,
    .pack_b = ne_pack_b,
    .dot = NULL,
};

/* See kern_ops.sgemm. */
static void ne_sgemm(int ta, int tb, int m, int n, int k, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    kern_gemm_run(&ne_gemm_arch, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* ------------------------------------------------------------ element-wise */

/* w, mom, grad (n); see kern_ops.sgd_step. */
static void ne_sgd_step(float *restrict w, float *restrict mom, const float *restrict grad,
                        size_t n, float lr, float momentum, float wd)
{
    const float32x4_t vlr = vdupq_n_f32(lr), vmo = vdupq_n_f32(momentum);
    const float32x4_t vwd = vdupq_n_f32(wd);
    size_t i = 0;
    if (momentum == 0.0f) {
        for (; i + 4 <= n; i += 4) {
            float32x4_t wv = vld1q_f32(w + i);
            float32x4_t g = vfmaq_f32(vld1q_f32(grad + i), vwd, wv);
            vst1q_f32(w + i, vfmsq_f32(wv, vlr, g));
        }
        for (; i < n; i++) {
            float g = grad[i] + wd * w[i];
            w[i] -= lr * g;
        }
        return;
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t wv = vld1q_f32(w + i);
        float32x4_t g = vfmaq_f32(vld1q_f32(grad + i), vwd, wv);
        float32x4_t mv = vfmaq_f32(g, vmo, vld1q_f32(mom + i));
        vst1q_f32(mom + i, mv);
        vst1q_f32(w + i, vfmsq_f32(wv, vlr, mv));
    }
    for (; i < n; i++) {
        float g = grad[i] + wd * w[i];
        mom[i] = momentum * mom[i] + g;
        w[i] -= lr * mom[i];
    }
}

/* y, x (n): y += a * x. */
static void ne_axpy(float *restrict y, const float *restrict x, float a, size_t n)
{
    const float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
        vst1q_f32(y + i + 4, vfmaq_f32(vld1q_f32(y + i + 4), va, vld1q_f32(x + i + 4)));
    }
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* x (n): x = x > 0 ? x : 0.  A compare and mask rather than vmaxq, which
 * would propagate NaN where the reference gives 0. */
static void ne_relu_forward(float *x, size_t n)
{
    const float32x4_t z = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        uint32x4_t pos = vcgtq_f32(v, z);
        vst1q_f32(x + i, vreinterpretq_f32_u32(vandq_u32(pos, vreinterpretq_u32_f32(v))));
    }
    for (; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx, y (n): dx = y > 0 ? dx : 0. */
static void ne_relu_backward(float *restrict dx, const float *restrict y, size_t n)
{
    const float32x4_t z = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32x4_t pos = vcgtq_f32(vld1q_f32(y + i), z);
        float32x4_t d = vld1q_f32(dx + i);
        vst1q_f32(dx + i, vreinterpretq_f32_u32(vandq_u32(pos, vreinterpretq_u32_f32(d))));
    }
    for (; i < n; i++)
        dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
}

/* Twelve independent q-register FMA chains (enough for up to four FMA
 * pipes with a 3-4 cycle latency). */
static double ne_fma_peak(long iters)
{
    volatile float seed = 0.999999f;
    const float32x4_t m = vdupq_n_f32(seed), s = vdupq_n_f32(1e-6f * seed);
    float32x4_t x[12];
    for (int j = 0; j < 12; j++)
        x[j] = vdupq_n_f32(0.05f * (float)j * seed);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++)
            x[j] = vfmaq_f32(s, x[j], m);
    }
    float32x4_t t = x[0];
    for (int j = 1; j < 12; j++)
        t = vaddq_f32(t, x[j]);
    volatile float sink = vaddvq_f32(t);
    (void)sink;
    return (double)iters * 12 * 4 * 2;
}

/* This path's table; kern_find(KERN_PATH_NEON) returns it when the CPU (and OS)
 * can run it. */
const kern_ops kern_neon_ops = {
    .name = "neon",
    .path = KERN_PATH_NEON,
    .sgemm = ne_sgemm,
    .sgd_step = ne_sgd_step,
    .axpy = ne_axpy,
    .relu_forward = ne_relu_forward,
    .relu_backward = ne_relu_backward,
    .fma_peak = ne_fma_peak,
};
