/* kernels_gemm.c - the blocked, packed SGEMM driver shared by the SIMD paths.
 *
 * See kernels_gemm.h for the loop structure and the packed layouts.  This
 * file has no intrinsics: the arch files supply the micro-kernel and the
 * packing routines through a kern_gemm_arch.
 */
#include "kernels_gemm.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* ------------------------------------------------------------ scratch */

/* One packing buffer per thread, kept for the thread's lifetime (so the hot
 * path does not allocate) and freed by the key's destructor at thread exit. */
typedef struct gemm_scratch {
    float *buf;   /* 64-byte aligned */
    size_t cap;   /* floats */
} gemm_scratch;

static pthread_key_t gemm_scratch_key;
static pthread_once_t gemm_scratch_once = PTHREAD_ONCE_INIT;
static int gemm_scratch_key_ok;

static void gemm_scratch_free_cb(void *p)
{
    gemm_scratch *s = p;
    free(s->buf);
    free(s);
}

static void gemm_scratch_key_init(void)
{
    gemm_scratch_key_ok = pthread_key_create(&gemm_scratch_key, gemm_scratch_free_cb) == 0;
}

/* Returns this thread's buffer of at least n floats, or NULL when out of
 * memory.  The buffer belongs to the thread; callers must not free it. */
static float *gemm_scratch_get(size_t n)
{
    pthread_once(&gemm_scratch_once, gemm_scratch_key_init);
    if (!gemm_scratch_key_ok)
        return NULL;
    gemm_scratch *s = pthread_getspecific(gemm_scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(gemm_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap < n) {
        size_t cap = n + n / 4;
        size_t bytes = (cap * sizeof(float) + 63) & ~(size_t)63;
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0)
            return NULL;
        free(s->buf);
        s->buf = p;
        s->cap = cap;
    }
    return s->buf;
}

/* ------------------------------------------------------------ packing */

/* See kernels_gemm.h: dst (kc,mr) from rows of op(A), zero padding rows. */
void kern_gemm_pack_a_ref(int mr, int trans, int rows, int kc, const float *restrict src,
                          int ld, float *restrict dst)
{
    for (int p = 0; p < kc; p++) {
        float *restrict d = dst + (size_t)p * mr;
        int i = 0;
        if (trans) {
            const float *s = src + (size_t)p * ld;
            for (; i < rows; i++)
                d[i] = s[i];
        } else {
            for (; i < rows; i++)
                d[i] = src[(size_t)i * ld + p];
        }
        for (; i < mr; i++)
            d[i] = 0.0f;
    }
}

/* See kernels_gemm.h: micro-panels (kc,nr) from columns of op(B), zero
 * padding. */
void kern_gemm_pack_b_ref(int nr, int trans, int cols, int kc, const float *restrict src,
                          int ld, float *restrict dst)
{
    for (int j0 = 0; j0 < cols; j0 += nr) {
        const int w = cols - j0 < nr ? cols - j0 : nr;
        float *restrict panel = dst + (size_t)j0 * kc;
        for (int p = 0; p < kc; p++) {
            float *restrict d = panel + (size_t)p * nr;
            int j = 0;
            if (trans) {
                for (; j < w; j++)
                    d[j] = src[(size_t)(j0 + j) * ld + p];
            } else {
                const float *s = src + (size_t)p * ld + j0;
                for (; j < w; j++)
                    d[j] = s[j];
            }
            for (; j < nr; j++)
                d[j] = 0.0f;
        }
    }
}

/* ------------------------------------------------------------ driver */

/* Splits len into the fewest blocks of at most max, of nearly equal size
 * rounded up to a multiple of unit; returns the block size. */
static int gemm_block(int len, int max, int unit)
{
    int nblk = (len + max - 1) / max;
    int b = (len + nblk - 1) / nblk;
    b = (b + unit - 1) / unit * unit;
    return b < max ? b : max;
}

/* C (m,n; ldc) *= beta; beta == 0 writes zeros without reading C. */
static void gemm_scale_c(int m, int n, float beta, float *c, int ldc)
{
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, (size_t)n * sizeof *ci);
        else
            for (int j = 0; j < n; j++)
                ci[j] *= beta;
    }
}

/* The dot-product path (ta == 0, tb == 1): k blocks of dkc keep the B
 * rows of one tile in L1 and the A rows of an m block in L2 while every
 * tile of the block is computed; later k blocks accumulate into C. */
static void gemm_dot_run(const kern_gemm_arch *arch, int m, int n, int k, const float *a,
                         int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    const int dr = arch->dr, ds = arch->ds;
    const int mcb = gemm_block(m, arch->dmc, dr);
    const int kcb = gemm_block(k, arch->dkc, 16);
    for (int ic = 0; ic < m; ic += mcb) {
        const int mc = m - ic < mcb ? m - ic : mcb;
        for (int pc = 0; pc < k; pc += kcb) {
            const int kc = k - pc < kcb ? k - pc : kcb;
            const int acc = pc > 0 || beta != 0.0f;
            for (int jt = 0; jt < n; jt += ds) {
                const int cols = n - jt < ds ? n - jt : ds;
                const float *bt = b + (size_t)jt * ldb + pc;
                for (int it = ic; it < ic + mc; it += dr) {
                    const int rows = ic + mc - it < dr ? ic + mc - it : dr;
                    arch->dot(rows, cols, kc, a + (size_t)it * lda + pc, lda, bt, ldb,
                              c + (size_t)it * ldc + jt, ldc, acc);
                }
            }
        }
    }
}

/* See kernels_gemm.h. */
void kern_gemm_run(const kern_gemm_arch *arch, int ta, int tb, int m, int n, int k,
                   const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0 || (beta != 0.0f && beta != 1.0f)) {
        gemm_scale_c(m, n, beta, c, ldc);
        if (k <= 0)
            return;
        beta = 1.0f;
    }
    if (arch->dot && !ta && tb && k >= arch->dot_min_k) {
        gemm_dot_run(arch, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const int MR = arch->mr, NR = arch->nr;
    const int mcb = gemm_block(m, arch->mc, MR);
    const int kcb = gemm_block(k, arch->kc, 1);
    const int ncb = gemm_block(n, arch->nc, NR);
    /* The A block, then the B block, each a whole number of cache lines so
     * that both start 64-byte aligned. */
    const size_t a_len = ((size_t)mcb * kcb + 15) & ~(size_t)15;
    const size_t b_len = ((size_t)ncb * kcb + 15) & ~(size_t)15;
    float *buf = gemm_scratch_get(a_len + b_len);
    if (!buf) {
        kern_generic_ops.sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    float *ap = buf, *bp = buf + a_len;

    for (int ic = 0; ic < m; ic += mcb) {
        const int mc = m - ic < mcb ? m - ic : mcb;
        for (int pc = 0; pc < k; pc += kcb) {
            const int kc = k - pc < kcb ? k - pc : kcb;
            const int acc = pc > 0 || beta != 0.0f;
            for (int ir = 0; ir < mc; ir += MR) {
                const int rows = mc - ir < MR ? mc - ir : MR;
                const float *src = ta ? a + (size_t)pc * lda + (ic + ir)
                                      : a + (size_t)(ic + ir) * lda + pc;
                arch->pack_a(ta, rows, kc, src, lda, ap + (size_t)ir * kc);
            }
            for (int jc = 0; jc < n; jc += ncb) {
                const int nc = n - jc < ncb ? n - jc : ncb;
                arch->pack_b(tb, nc, kc, tb ? b + (size_t)jc * ldb + pc : b + (size_t)pc * ldb + jc,
                             ldb, bp);
                for (int jr = 0; jr < nc; jr += NR) {
                    const int cols = nc - jr < NR ? nc - jr : NR;
                    const float *bpanel = bp + (size_t)jr * kc;
                    for (int ir = 0; ir < mc; ir += MR) {
                        const int rows = mc - ir < MR ? mc - ir : MR;
                        float *ct = c + (size_t)(ic + ir) * ldc + (jc + jr);
                        arch->ukernel(rows, cols, kc, ap + (size_t)ir * kc, bpanel, ct, ldc, acc);
                    }
                }
            }
        }
    }
}
