/* kernels.h - the numeric kernels of the CNN engine and their dispatch table.
 *
 * Every kernel has a portable reference in kernels_generic.c.  The files
 * kernels_avx2.c, kernels_avx512.c and kernels_neon.c are the only ones that
 * include intrinsics headers; each fills its own kern_ops table.  One table is
 * chosen at start-up by kern_init() from the CPU's features (cpuid plus the
 * OS's saved-register check), or forced with the environment variable
 * PSD_SIMD=scalar|avx2|avx512|neon.
 *
 * Matrices are row-major with explicit leading dimensions.
 */
#ifndef PSD_KERNELS_H
#define PSD_KERNELS_H

#include <stddef.h>

typedef enum kern_path {
    KERN_PATH_SCALAR = 0,
    KERN_PATH_AVX2,
    KERN_PATH_AVX512,
    KERN_PATH_NEON,
    KERN_PATH_MAX
} kern_path;

typedef struct kern_ops {
    const char *name;  /* "scalar", "avx2", "avx512", "neon" */
    kern_path path;

    /* C(m,n) = op(A)(m,k) * op(B)(k,n) + beta * C, beta is 0 or 1.
     * op(A) = A (m,k) with leading dim lda, or A^T when ta (A stored (k,m)).
     * op(B) = B (k,n) with leading dim ldb, or B^T when tb (B stored (n,k)).
     * With beta == 0, C is not read (it may hold garbage or NaN). */
    void (*sgemm)(int ta, int tb, int m, int n, int k,
                  const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc);

    /* SGD with momentum and weight decay, PyTorch semantics (dampening 0):
     *   g = grad[i] + wd * w[i];  mom[i] = momentum * mom[i] + g;
     *   w[i] -= lr * mom[i].
     * With momentum == 0, mom is not touched and may be NULL. (n) */
    void (*sgd_step)(float *w, float *mom, const float *grad, size_t n,
                     float lr, float momentum, float wd);

    /* y[i] += a * x[i]  (n) */
    void (*axpy)(float *y, const float *x, float a, size_t n);

    /* x[i] = max(x[i], 0) in place  (n) */
    void (*relu_forward)(float *x, size_t n);

    /* dx[i] = y[i] > 0 ? dx[i] : 0, y is the ReLU output  (n) */
    void (*relu_backward)(float *dx, const float *y, size_t n);

    /* Peak FMA microbenchmark: runs iters rounds of independent vector FMAs
     * on registers (enough accumulators to hide the FMA latency) and returns
     * the floating-point operations performed (2 per lane per FMA), so that
     * a caller timing it gets the path's peak FLOP/s. */
    double (*fma_peak)(long iters);
} kern_ops;

/* The portable reference table; always available. */
extern const kern_ops kern_generic_ops;

/* Returns the table for a path if this build has it and this CPU and OS run
 * it, else NULL.  Does not change the active table. */
const kern_ops *kern_find(kern_path path);

/* Looks a path up by name ("scalar", "avx2", "avx512", "neon").
 * Returns its kern_path, or -1 for an unknown name. */
int kern_path_from_name(const char *name);

/* Chooses the active table once: PSD_SIMD if set, else the best path the
 * CPU supports.  Returns 0, or -1 with a message in err (size errlen) when
 * PSD_SIMD names an unknown path or one this CPU cannot run. */
int kern_init(char *err, size_t errlen);

/* The active table (kern_init must have succeeded; before that, generic). */
const kern_ops *kern_active(void);

#endif
