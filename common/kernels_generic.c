/* kernels_generic.c - the portable reference of every kernel.
 *
 * Plain C, no intrinsics: the SIMD paths are tested against these functions,
 * so they favour obviously-correct loops over speed (while staying usable:
 * loop orders walk memory contiguously and the compiler may vectorise them).
 */
#include "kernels.h"

#include <stddef.h>

/* op(A)(i,p): A is (m,k) with leading dim lda, or (k,m) when ta. */
static inline float gen_a_at(int ta, const float *a, int lda, int i, int p)
{
    return ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
}

/* C (m,n; ldc) = op(A) (m,k) * op(B) (k,n) + beta * C.
 * Row i of C is first set to beta * C (or to 0 when beta == 0, without
 * reading C), then accumulated:
 *   B not transposed: i-k-j order, row p of B is contiguous;
 *   B transposed (stored (n,k)): dot products of op(A) row i with row j of
 *   the stored B, four columns at a time. */
static void gen_sgemm(int ta, int tb, int m, int n, int k,
                      const float *a, int lda, const float *b, int ldb,
                      float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        float *restrict ci = c + (size_t)i * ldc;
        for (int j = 0; j < n; j++)
            ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        if (!tb) {
            for (int p = 0; p < k; p++) {
                const float aip = gen_a_at(ta, a, lda, i, p);
                const float *restrict bp = b + (size_t)p * ldb;
                for (int j = 0; j < n; j++)
                    ci[j] += aip * bp[j];
            }
        } else {
            int j = 0;
            for (; j + 4 <= n; j += 4) {
                const float *b0 = b + (size_t)j * ldb;
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                for (int p = 0; p < k; p++) {
                    const float aip = gen_a_at(ta, a, lda, i, p);
                    s0 += aip * b0[p];
                    s1 += aip * b0[(size_t)ldb + p];
                    s2 += aip * b0[2 * (size_t)ldb + p];
                    s3 += aip * b0[3 * (size_t)ldb + p];
                }
                ci[j] += s0;
                ci[j + 1] += s1;
                ci[j + 2] += s2;
                ci[j + 3] += s3;
            }
            for (; j < n; j++) {
                const float *bj = b + (size_t)j * ldb;
                float s = 0.0f;
                for (int p = 0; p < k; p++)
                    s += gen_a_at(ta, a, lda, i, p) * bj[p];
                ci[j] += s;
            }
        }
    }
}

/* w, mom, grad (n); see kern_ops.sgd_step. */
static void gen_sgd_step(float *restrict w, float *restrict mom, const float *restrict grad,
                         size_t n, float lr, float momentum, float wd)
{
    if (momentum == 0.0f) {
        for (size_t i = 0; i < n; i++) {
            float g = grad[i] + wd * w[i];
            w[i] -= lr * g;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + wd * w[i];
        mom[i] = momentum * mom[i] + g;
        w[i] -= lr * mom[i];
    }
}

/* y, x (n): y += a * x. */
static void gen_axpy(float *restrict y, const float *restrict x, float a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* x (n): x = max(x, 0); NaN becomes 0, like the vector max instructions. */
static void gen_relu_forward(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx, y (n): dx = y > 0 ? dx : 0. */
static void gen_relu_backward(float *restrict dx, const float *restrict y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
}

/* Scalar FMA-shaped loop: eight independent multiply-add chains. */
static double gen_fma_peak(long iters)
{
    volatile float seed = 0.999999f;
    float m = seed, s = 1e-6f * seed;
    float x0 = 0.0f, x1 = 0.1f, x2 = 0.2f, x3 = 0.3f;
    float x4 = 0.4f, x5 = 0.5f, x6 = 0.6f, x7 = 0.7f;
    for (long it = 0; it < iters; it++) {
        x0 = x0 * m + s;
        x1 = x1 * m + s;
        x2 = x2 * m + s;
        x3 = x3 * m + s;
        x4 = x4 * m + s;
        x5 = x5 * m + s;
        x6 = x6 * m + s;
        x7 = x7 * m + s;
    }
    volatile float sink = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    (void)sink;
    return (double)iters * 8 * 2;
}

/* The reference table (declared in kernels.h). */
const kern_ops kern_generic_ops = {
    .name = "scalar",
    .path = KERN_PATH_SCALAR,
    .sgemm = gen_sgemm,
    .sgd_step = gen_sgd_step,
    .axpy = gen_axpy,
    .relu_forward = gen_relu_forward,
    .relu_backward = gen_relu_backward,
    .fma_peak = gen_fma_peak,
};
