/* kernels_gemm.h - the blocked, packed SGEMM driver shared by the SIMD paths
 * (internal to the kernels; not part of the engine's interface).
 *
 * GotoBLAS/BLIS structure, in row-major terms.  For C (m,n) += op(A) op(B):
 *
 *   for ic over m in blocks of mc:
 *     for pc over k in blocks of kc:        (later blocks accumulate into C)
 *       pack op(A)[ic.., pc..] (mc,kc) as micro-panels of mr rows
 *       for jc over n in blocks of nc:
 *         pack op(B)[pc.., jc..] (kc,nc) as micro-panels of nr columns
 *         for each B micro-panel (kc,nr):          L1-resident
 *           for each A micro-panel (mr,kc):       from L2
 *             ukernel: C tile (mr,nr) (+)= Ap * Bp
 *
 * A micro-panel is stored k-major, (kc, MR): element (i,p) at p*MR + i; a B
 * micro-panel (kc, NR): element (p,j) at p*NR + j, zero-padded to NR columns.
 * The packing routines absorb ta/tb, so one micro-kernel serves all four
 * cases.  Packed buffers are 64-byte aligned, per thread, grown on demand and
 * freed at thread exit, so concurrent calls from several threads are safe.
 *
 * C = A B^T (ta == 0, tb == 1) with k >= dot_min_k takes the arch's dot
 * path instead when it has one (see kern_gemm_arch.dot).  When beta is
 * neither 0 nor 1, C is scaled first and then accumulated into.
 *
 * Each SIMD file supplies a kern_gemm_arch (its micro-kernel, packing
 * routines and block sizes) and calls kern_gemm_run().
 */
#ifndef PSD_KERNELS_GEMM_H
#define PSD_KERNELS_GEMM_H

/* C tile (mr,nr; ldc) = [C +] Ap (kc,MR) * Bp (kc,NR), mr <= MR, nr <= NR.
 * With accumulate == 0, C is written without being read. */
typedef void (*kern_gemm_ukernel_fn)(int mr, int nr, int kc,
                                     const float *restrict ap, const float *restrict bp,
                                     float *restrict c, int ldc, int accumulate);

/* Packs one A micro-panel: rows <= MR rows of op(A) starting at src, kc
 * columns, into dst (kc,MR).  src points at op(A)(i0,p0): a + i0*lda + p0
 * when !trans, a + p0*lda + i0 when trans (A stored (k,m)). */
typedef void (*kern_gemm_pack_a_fn)(int trans, int rows, int kc, const float *restrict src,
                                    int ld, float *restrict dst);

/* Packs a B block: cols columns of op(B) starting at src (any number; a
 * block holds several micro-panels), kc rows, into ceil(cols/NR)
 * micro-panels (kc,NR), panel q at dst + q*NR*kc, zero-padding the last
 * panel's columns past cols.  src points at op(B)(p0,j0): b + p0*ldb + j0
 * when !trans, b + j0*ldb + p0 when trans (B stored (n,k)).  A whole block
 * at once lets the untransposed case copy each source row in one long run,
 * which the hardware prefetchers follow. */
typedef void (*kern_gemm_pack_b_fn)(int trans, int cols, int kc, const float *restrict src,
                                    int ld, float *restrict dst);

/* Dot-product kernel for C = A B^T with A (m,k) and B stored (n,k), both
 * k-contiguous, read in place (no packing, no padding):
 * C tile (rows,cols; ldc) = [C +] A (rows,kc; lda) * B (cols,kc; ldb)^T,
 * rows <= dr, cols <= ds. */
typedef void (*kern_gemm_dot_fn)(int rows, int cols, int kc, const float *restrict a, int lda,
                                 const float *restrict b, int ldb, float *restrict c, int ldc,
                                 int accumulate);

typedef struct kern_gemm_arch {
    int mr, nr;     /* micro-tile */
    int mc, kc, nc; /* cache blocks; mc a multiple of mr, nc of nr */
    kern_gemm_ukernel_fn ukernel;
    kern_gemm_pack_a_fn pack_a;
    kern_gemm_pack_b_fn pack_b;
    /* Optional (NULL when absent): the dot-product path for ta == 0,
     * tb == 1 with a deep k, which needs no transposing packs and wastes no
     * lanes on narrow C; dr x ds tiles, k blocked by dkc, m by dmc. */
    kern_gemm_dot_fn dot;
    int dr, ds, dkc, dmc;
    int dot_min_k; /* use the dot path when k >= dot_min_k */
} kern_gemm_arch;

/* Portable packing routines with the layouts above, for an arch whose
 * micro-tile is mr x nr: an A micro-panel (kc,mr) or a B block of (kc,nr)
 * micro-panels, zeroing the padding rows/columns. */
void kern_gemm_pack_a_ref(int mr, int trans, int rows, int kc, const float *restrict src,
                          int ld, float *restrict dst);
void kern_gemm_pack_b_ref(int nr, int trans, int cols, int kc, const float *restrict src,
                          int ld, float *restrict dst);

/* C (m,n; ldc) = op(A) (m,k) * op(B) (k,n) + beta * C with arch's kernels;
 * the kern_ops.sgemm contract (beta == 0: C not read).  If the packing
 * buffer cannot be allocated it falls back to the generic sgemm. */
void kern_gemm_run(const kern_gemm_arch *arch, int ta, int tb, int m, int n, int k,
                   const float *a, int lda, const float *b, int ldb,
                   float beta, float *c, int ldc);

#endif
