/* check_kernels.c - the numeric kernels and their dispatch.
 *
 * The generic sgemm is checked against a naive double-precision triple
 * loop; every other path this machine runs (kern_find() != NULL) is checked
 * against the generic one on the same inputs:
 *   - integer-valued matrices, whose products and sums are exact in float
 *     whatever the summation order, so the results must be EQUAL (any
 *     dropped, doubled or misplaced term shows);
 *   - uniform random matrices, within a tolerance scaled by |A||B| and
 *     sqrt(k) (different summation orders and FMA rounding);
 * over shapes around the micro-tiles and cache blocks of every path, the
 * CNN's shapes, all four ta/tb combinations, tight and odd leading
 * dimensions, beta 0 with a NaN-filled C and beta 1.  Guard cells around C
 * must stay untouched.  The element-wise kernels are compared on lengths
 * around the vector widths and at unaligned offsets.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "rng.h"

/* ------------------------------------------------------------ helpers */

/* Like ck_assert_msg, for checks inside loops over elements: a passing
 * ck_assert costs a message to the runner, a passing EXPECT nothing. */
#define EXPECT(cond, ...)                  \
    do {                                   \
        if (!(cond))                       \
            ck_abort_msg(__VA_ARGS__);     \
    } while (0)

enum { DATA_INT, DATA_UNIFORM };

static float *xalloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    EXPECT(p != NULL, "out of memory");
    return p;
}

/* Floats of a stored (rows,cols) matrix with leading dimension ld. */
static size_t mat_extent(int rows, int cols, int ld)
{
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * ld + cols : 0;
}

static void fill(rng *r, float *x, size_t n, int kind)
{
    for (size_t i = 0; i < n; i++)
        x[i] = kind == DATA_INT ? (float)((int)rng_below(r, 7) - 3) : 2.0f * rng_uniform(r) - 1.0f;
}

static float nan_bits(void)
{
    return nanf("");
}

/* The tables to compare with the generic one: every path kern_find()
 * returns except scalar.  Returns how many (at most KERN_PATH_MAX). */
static int simd_tables(const kern_ops **out)
{
    int n = 0;
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        const kern_ops *k = kern_find((kern_path)p);
        if (k && p != KERN_PATH_SCALAR)
            out[n++] = k;
    }
    return n;
}

/* One sgemm problem: operands stored as the flags say, C with ldc and a
 * guard row, reference result and |A||B| bound. */
typedef struct gemm_prob {
    int ta, tb, m, n, k, lda, ldb, ldc;
    float beta;
    float *a, *b;      /* exactly mat_extent() floats: overreads hit ASan */
    float *c0;         /* initial C, (m+1) * ldc (a guard row) */
    size_t c_len;
    float *ref;        /* reference result, same layout as c0 */
    float *absab;      /* |A||B| per element (float; a tolerance scale), or NULL */
} gemm_prob;

static void prob_init(gemm_prob *p, int ta, int tb, int m, int n, int k, int pad, float beta,
                      int kind, uint64_t seed)
{
    rng r;
    rng_seed(&r, seed);
    memset(p, 0, sizeof *p);
    p->ta = ta, p->tb = tb, p->m = m, p->n = n, p->k = k, p->beta = beta;
    p->lda = (ta ? m : k) + (pad ? 3 : 0);
    p->ldb = (tb ? k : n) + (pad ? 5 : 0);
    p->ldc = n + (pad ? 7 : 0);
    if (p->lda < 1)
        p->lda = 1;
    if (p->ldb < 1)
        p->ldb = 1;
    if (p->ldc < 1)
        p->ldc = 1;
    size_t na = ta ? mat_extent(k, m, p->lda) : mat_extent(m, k, p->lda);
    size_t nb = tb ? mat_extent(n, k, p->ldb) : mat_extent(k, n, p->ldb);
    p->a = xalloc(na);
    p->b = xalloc(nb);
    fill(&r, p->a, na, kind);
    fill(&r, p->b, nb, kind);
    p->c_len = (size_t)(m + 1) * p->ldc;
    p->c0 = xalloc(p->c_len);
    /* Guard cells: a recognisable value; the m x n block: NaN when beta is
     * 0 (must not be read), data otherwise. */
    for (size_t i = 0; i < p->c_len; i++)
        p->c0[i] = -12345.0f;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            p->c0[(size_t)i * p->ldc + j] =
                beta == 0.0f ? nan_bits()
                             : (kind == DATA_INT ? (float)((int)rng_below(&r, 7) - 3)
                                                 : 2.0f * rng_uniform(&r) - 1.0f);
    p->ref = xalloc(p->c_len);
    memcpy(p->ref, p->c0, p->c_len * sizeof(float));
    kern_generic_ops.sgemm(ta, tb, m, n, k, p->a, p->lda, p->b, p->ldb, beta, p->ref, p->ldc);
    if (kind != DATA_INT) {
        float *aa = xalloc(na), *bb = xalloc(nb);
        for (size_t i = 0; i < na; i++)
            aa[i] = fabsf(p->a[i]);
        for (size_t i = 0; i < nb; i++)
            bb[i] = fabsf(p->b[i]);
        p->absab = xalloc(p->c_len);
        kern_generic_ops.sgemm(ta, tb, m, n, k, aa, p->lda, bb, p->ldb, 0.0f, p->absab, p->ldc);
        free(aa);
        free(bb);
    }
}

static void prob_free(gemm_prob *p)
{
    free(p->a);
    free(p->b);
    free(p->c0);
    free(p->ref);
    free(p->absab);
}

/* Runs ops->sgemm on p and checks it against p->ref: equal when tol == 0,
 * else |c - ref| <= tol * sqrt(k) * FLT_EPSILON * (|A||B| + |C0|) + tiny;
 * guard cells bit-identical. */
static void prob_check(const gemm_prob *p, const kern_ops *ops, double tol)
{
    float *c = xalloc(p->c_len);
    memcpy(c, p->c0, p->c_len * sizeof(float));
    ops->sgemm(p->ta, p->tb, p->m, p->n, p->k, p->a, p->lda, p->b, p->ldb, p->beta, c, p->ldc);
    for (int i = 0; i <= p->m; i++) {
        for (int j = 0; j < p->ldc; j++) {
            size_t at = (size_t)i * p->ldc + j;
            if (i == p->m || j >= p->n) {
                EXPECT(memcmp(&c[at], &p->c0[at], sizeof(float)) == 0,
                              "%s sgemm ta=%d tb=%d m=%d n=%d k=%d: guard cell (%d,%d) changed",
                              ops->name, p->ta, p->tb, p->m, p->n, p->k, i, j);
                continue;
            }
            double got = c[at], want = p->ref[at];
            double bound = 0.0;
            if (tol > 0.0) {
                double scale = p->absab[at] + (p->beta != 0.0f ? fabs(p->c0[at]) : 0.0);
                bound = tol * sqrt((double)(p->k > 1 ? p->k : 1)) * FLT_EPSILON * scale + 1e-30;
            }
            EXPECT(!isnan(got) && fabs(got - want) <= bound,
                          "%s sgemm ta=%d tb=%d m=%d n=%d k=%d lda=%d ldb=%d ldc=%d beta=%g: "
                          "C(%d,%d) = %.9g, reference %.9g (bound %.3g)",
                          ops->name, p->ta, p->tb, p->m, p->n, p->k, p->lda, p->ldb, p->ldc,
                          (double)p->beta, i, j, got, want, bound);
        }
    }
    free(c);
}

/* Naive double-precision C = op(A) op(B) + beta C0 for (i,j). */
static double naive_at(const gemm_prob *p, int i, int j, double *absab)
{
    double s = 0.0, abs_s = 0.0;
    for (int q = 0; q < p->k; q++) {
        double av = p->ta ? p->a[(size_t)q * p->lda + i] : p->a[(size_t)i * p->lda + q];
        double bv = p->tb ? p->b[(size_t)j * p->ldb + q] : p->b[(size_t)q * p->ldb + j];
        s += av * bv;
        abs_s += fabs(av * bv);
    }
    if (p->beta != 0.0f) {
        double c0 = p->c0[(size_t)i * p->ldc + j];
        s += p->beta * c0;
        abs_s += fabs(p->beta * c0);
    }
    *absab = abs_s;
    return s;
}

/* ------------------------------------------------------------ shapes */

typedef struct shape {
    int m, n, k;
} shape;

/* Around the micro-tiles (6x16 avx2, 14x32 avx512, 8x12 neon), the dot
 * tiles (3x4, 4x5), the k thresholds and blocks (128, 256, 1024), the m and
 * n blocks (504, 512), primes, ones and empty. */
static const shape edge_shapes[] = {
    {1, 1, 1},     {1, 1, 7},      {1, 33, 1},     {15, 1, 1},     {2, 3, 4},
    {7, 13, 5},    {1, 17, 300},   {3, 1, 129},    {5, 11, 17},    {6, 12, 31},
    {7, 13, 97},   {8, 15, 127},   {9, 16, 128},   {13, 17, 129},  {14, 31, 255},
    {15, 32, 256}, {16, 33, 257},  {28, 47, 101},  {29, 48, 383},  {30, 49, 251},
    {6, 16, 1023}, {14, 32, 1024}, {4, 5, 1025},   {3, 4, 1040},   {12, 20, 2053},
    {17, 10, 509}, {505, 9, 3},    {3, 513, 5},    {503, 40, 33},  {40, 511, 37},
    {2, 2, 4099},  {1, 100, 1},    {100, 1, 700},  {33, 65, 0},    {0, 5, 5},
    {5, 0, 5},
};

/* The LeNet training step (batch 64) and the halves two threads see. */
static const struct cnn_shape {
    int m, n, k, ta, tb;
} cnn_shapes[] = {
    {20, 36864, 25, 0, 0}, {20, 25, 36864, 0, 1}, {50, 4096, 500, 0, 0},
    {50, 500, 4096, 0, 1}, {500, 4096, 50, 1, 0},  {64, 500, 800, 0, 1},
    {500, 800, 64, 1, 0},  {64, 800, 500, 0, 0},   {64, 10, 500, 0, 1},
    {10, 500, 64, 1, 0},   {64, 500, 10, 0, 0},    {20, 18432, 25, 0, 0},
    {10, 25, 36864, 0, 1}, {20, 13, 36864, 0, 1},  {25, 500, 4096, 0, 1},
    {250, 4096, 50, 1, 0}, {32, 500, 800, 0, 1},   {250, 800, 64, 1, 0},
    {32, 800, 500, 0, 0},  {64, 5, 500, 0, 1},
};

#define NSHAPES(a) (sizeof(a) / sizeof((a)[0]))

/* Tolerance factor for random data, in units of sqrt(k) * FLT_EPSILON *
 * |A||B|: the observed worst case is below 1; a dropped block of 16 terms
 * exceeds it by far (integer data catches single terms). */
#define GEMM_TOL 4.0

/* ------------------------------------------------------------ generic sgemm */

/* The generic sgemm against a naive double loop: exact on integer data,
 * within the float error bound on random data. */
START_TEST(test_generic_sgemm_vs_double)
{
    uint64_t seed = 100;
    for (size_t s = 0; s < NSHAPES(edge_shapes); s++) {
        const shape sh = edge_shapes[s];
        if ((double)sh.m * sh.n * sh.k > 2e6)
            continue;
        for (int combo = 0; combo < 4; combo++) {
            for (int kind = 0; kind < 2; kind++) {
                gemm_prob p;
                float beta = (s + combo) % 2 ? 1.0f : 0.0f;
                prob_init(&p, combo >> 1, combo & 1, sh.m, sh.n, sh.k, (int)(s % 2), beta, kind,
                          seed++);
                for (int i = 0; i < sh.m; i++) {
                    for (int j = 0; j < sh.n; j++) {
                        double absab;
                        double want = naive_at(&p, i, j, &absab);
                        double got = p.ref[(size_t)i * p.ldc + j];
                        double bound = kind == DATA_INT ? 0.0 : 2.0 * sh.k * FLT_EPSILON * absab;
                        EXPECT(!isnan(got) && fabs(got - want) <= bound,
                                      "generic sgemm ta=%d tb=%d m=%d n=%d k=%d beta=%g: "
                                      "C(%d,%d) = %.9g, double %.9g",
                                      p.ta, p.tb, sh.m, sh.n, sh.k, (double)beta, i, j, got, want);
                    }
                }
                prob_free(&p);
            }
        }
    }
}
END_TEST

/* A hand-computed case, so that the double loop itself is checked:
 * A = [1 2 3; 4 5 6], B = [7 8; 9 10; 11 12] gives [58 64; 139 154]. */
START_TEST(test_generic_sgemm_known)
{
    const float a[6] = {1, 2, 3, 4, 5, 6}, at[6] = {1, 4, 2, 5, 3, 6};
    const float b[6] = {7, 8, 9, 10, 11, 12}, bt[6] = {7, 9, 11, 8, 10, 12};
    const float want[4] = {58, 64, 139, 154};
    for (int combo = 0; combo < 4; combo++) {
        int ta = combo >> 1, tb = combo & 1;
        float c[4] = {NAN, NAN, NAN, NAN};
        kern_generic_ops.sgemm(ta, tb, 2, 2, 3, ta ? at : a, ta ? 2 : 3, tb ? bt : b, tb ? 3 : 2,
                               0.0f, c, 2);
        for (int i = 0; i < 4; i++)
            ck_assert_float_eq(c[i], want[i]);
        kern_generic_ops.sgemm(ta, tb, 2, 2, 3, ta ? at : a, ta ? 2 : 3, tb ? bt : b, tb ? 3 : 2,
                               1.0f, c, 2);
        for (int i = 0; i < 4; i++)
            ck_assert_float_eq(c[i], 2 * want[i]);
    }
}
END_TEST

/* ------------------------------------------------------------ SIMD sgemm */

/* Every SIMD path equals the generic sgemm on integer data over the edge
 * shapes, all ta/tb, beta 0 (NaN C) and 1, tight and odd leading dims. */
START_TEST(test_simd_sgemm_exact_edges)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    uint64_t seed = 1000;
    for (size_t s = 0; s < NSHAPES(edge_shapes); s++) {
        const shape sh = edge_shapes[s];
        for (int combo = 0; combo < 4; combo++)
            for (int bi = 0; bi < 2; bi++)
                for (int pad = 0; pad < 2; pad++) {
                    gemm_prob p;
                    prob_init(&p, combo >> 1, combo & 1, sh.m, sh.n, sh.k, pad, (float)bi,
                              DATA_INT, seed++);
                    for (int t = 0; t < nt; t++)
                        prob_check(&p, tabs[t], 0.0);
                    prob_free(&p);
                }
    }
}
END_TEST

/* The same shapes with random data, within the tolerance. */
START_TEST(test_simd_sgemm_random_edges)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    uint64_t seed = 2000;
    for (size_t s = 0; s < NSHAPES(edge_shapes); s++) {
        const shape sh = edge_shapes[s];
        for (int combo = 0; combo < 4; combo++) {
            gemm_prob p;
            prob_init(&p, combo >> 1, combo & 1, sh.m, sh.n, sh.k, (int)((s + combo) % 2),
                      (float)((s + combo / 2) % 2), DATA_UNIFORM, seed++);
            for (int t = 0; t < nt; t++)
                prob_check(&p, tabs[t], GEMM_TOL);
            prob_free(&p);
        }
    }
}
END_TEST

/* The CNN's shapes (and their halves): exact on integer data, within the
 * tolerance on random data; beta 0 with NaN C, beta 1 on every other one. */
START_TEST(test_simd_sgemm_cnn_shapes)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    uint64_t seed = 3000;
    for (size_t s = 0; s < NSHAPES(cnn_shapes); s++) {
        const struct cnn_shape sh = cnn_shapes[s];
        for (int kind = 0; kind < 2; kind++) {
            gemm_prob p;
            prob_init(&p, sh.ta, sh.tb, sh.m, sh.n, sh.k, 0, (float)((s + kind) % 2), kind,
                      seed++);
            for (int t = 0; t < nt; t++)
                prob_check(&p, tabs[t], kind == DATA_INT ? 0.0 : GEMM_TOL);
            prob_free(&p);
        }
    }
}
END_TEST

/* Results do not depend on which thread calls or on calls running at the
 * same time (per-thread packing buffers). */
typedef struct thread_job {
    const kern_ops *ops;
    const gemm_prob *p;
    float *c;
    int rounds;
} thread_job;

static void *thread_job_run(void *arg)
{
    thread_job *j = arg;
    const gemm_prob *p = j->p;
    for (int r = 0; r < j->rounds; r++) {
        memcpy(j->c, p->c0, p->c_len * sizeof(float));
        j->ops->sgemm(p->ta, p->tb, p->m, p->n, p->k, p->a, p->lda, p->b, p->ldb, p->beta, j->c,
                      p->ldc);
        if (memcmp(j->c, p->ref, p->c_len * sizeof(float)) != 0)
            return (void *)1;
    }
    return NULL;
}

START_TEST(test_simd_sgemm_threads)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    enum { NTHREADS = 4 };
    const struct cnn_shape shapes[NTHREADS] = {
        {50, 300, 300, 0, 0}, {20, 25, 3000, 0, 1}, {300, 200, 50, 1, 0}, {33, 47, 129, 1, 1},
    };
    gemm_prob probs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        prob_init(&probs[i], shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k,
                  i % 2, 0.0f, DATA_INT, 4000 + i);
    for (int t = 0; t < nt; t++) {
        pthread_t th[NTHREADS];
        thread_job jobs[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            jobs[i] = (thread_job){tabs[t], &probs[i], xalloc(probs[i].c_len), 3};
            ck_assert_int_eq(pthread_create(&th[i], NULL, thread_job_run, &jobs[i]), 0);
        }
        for (int i = 0; i < NTHREADS; i++) {
            void *ret;
            ck_assert_int_eq(pthread_join(th[i], &ret), 0);
            ck_assert_msg(ret == NULL, "%s sgemm wrong in thread %d", tabs[t]->name, i);
            free(jobs[i].c);
        }
    }
    for (int i = 0; i < NTHREADS; i++)
        prob_free(&probs[i]);
}
END_TEST

/* The tolerance test can fail: a result off by the contribution of a few
 * k terms is rejected. */
START_TEST(test_sgemm_check_catches_errors)
{
    gemm_prob p;
    prob_init(&p, 0, 1, 20, 25, 4096, 0, 0.0f, DATA_UNIFORM, 5000);
    /* Recompute with the last 16 k terms dropped and compare by hand. */
    float *c = xalloc(p.c_len);
    memcpy(c, p.c0, p.c_len * sizeof(float));
    kern_generic_ops.sgemm(0, 1, p.m, p.n, p.k - 16, p.a, p.lda, p.b, p.ldb, 0.0f, c, p.ldc);
    int rejected = 0;
    for (int i = 0; i < p.m; i++)
        for (int j = 0; j < p.n; j++) {
            size_t at = (size_t)i * p.ldc + j;
            double bound = GEMM_TOL * sqrt((double)p.k) * FLT_EPSILON * p.absab[at];
            rejected += fabs((double)c[at] - p.ref[at]) > bound;
        }
    ck_assert_msg(rejected > p.m * p.n / 2, "only %d of %d wrong elements rejected", rejected,
                  p.m * p.n);
    free(c);
    prob_free(&p);
}
END_TEST

/* ------------------------------------------------------------ element-wise */

static const size_t ew_lengths[] = {0,  1,  3,  4,  5,  7,  8,    9,   15, 16,
                                    17, 31, 32, 33, 63, 64, 65, 1000, 4099};

/* x (n) with specials mixed in: NaN, infinities, signed zeros, denormals. */
static void fill_specials(rng *r, float *x, size_t n)
{
    static const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, 1e-40f, -1e-40f, FLT_MAX};
    for (size_t i = 0; i < n; i++) {
        uint64_t u = rng_below(r, 10);
        x[i] = u < 7 ? sp[u] : 2.0f * rng_uniform(r) - 1.0f;
    }
    if (n > 2)
        x[n / 2] = nan_bits();
}

static int same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

START_TEST(test_simd_relu)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    rng r;
    rng_seed(&r, 6000);
    for (size_t li = 0; li < NSHAPES(ew_lengths); li++) {
        for (size_t off = 0; off < 3; off += 2) {
            size_t n = ew_lengths[li];
            float *x = xalloc(n + off), *y = xalloc(n + off), *dx = xalloc(n + off);
            float *fx = xalloc(n + off), *fd = xalloc(n + off);
            fill_specials(&r, x, n + off);
            fill_specials(&r, dx, n + off);
            memcpy(y, x, (n + off) * sizeof(float));
            kern_generic_ops.relu_forward(y + off, n);
            /* the reference itself: max(x, 0) with NaN -> 0 */
            for (size_t i = 0; i < n; i++) {
                float v = x[off + i];
                EXPECT(same_float(y[off + i], v > 0.0f ? v : 0.0f), "generic relu_forward at %zu",
                       i);
            }
            for (int t = 0; t < nt; t++) {
                memcpy(fx, x, (n + off) * sizeof(float));
                tabs[t]->relu_forward(fx + off, n);
                for (size_t i = 0; i < n + off; i++)
                    EXPECT(same_float(fx[i], y[i]), "%s relu_forward n=%zu off=%zu at %zu",
                                  tabs[t]->name, n, off, i);
                memcpy(fd, dx, (n + off) * sizeof(float));
                tabs[t]->relu_backward(fd + off, y + off, n);
                for (size_t i = 0; i < n + off; i++) {
                    float want = i < off ? dx[i] : (y[i] > 0.0f ? dx[i] : 0.0f);
                    EXPECT(same_float(fd[i], want), "%s relu_backward n=%zu off=%zu at %zu",
                                  tabs[t]->name, n, off, i);
                }
            }
            memcpy(fd, dx, (n + off) * sizeof(float));
            kern_generic_ops.relu_backward(fd + off, y + off, n);
            for (size_t i = 0; i < n; i++)
                EXPECT(same_float(fd[off + i], y[off + i] > 0.0f ? dx[off + i] : 0.0f),
                       "generic relu_backward at %zu", i);
            free(x);
            free(y);
            free(dx);
            free(fx);
            free(fd);
        }
    }
}
END_TEST

/* |got - want| <= 4 ulp of the magnitude scale. */
static int close_to(float got, double want, double scale)
{
    return fabs((double)got - want) <= 4.0 * FLT_EPSILON * scale + 1e-30;
}

START_TEST(test_simd_axpy)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    rng r;
    rng_seed(&r, 7000);
    const kern_ops *all[KERN_PATH_MAX + 1];
    all[0] = &kern_generic_ops;
    for (int t = 0; t < nt; t++)
        all[t + 1] = tabs[t];
    for (size_t li = 0; li < NSHAPES(ew_lengths); li++) {
        for (size_t off = 0; off < 2; off++) {
            size_t n = ew_lengths[li] + off;
            float *x = xalloc(n), *y = xalloc(n), *out = xalloc(n);
            fill(&r, x, n, DATA_UNIFORM);
            fill(&r, y, n, DATA_UNIFORM);
            const float a = -0.37f;
            for (int t = 0; t < nt + 1; t++) {
                memcpy(out, y, n * sizeof(float));
                all[t]->axpy(out + off, x + off, a, n - off);
                for (size_t i = 0; i < n; i++) {
                    double want = i < off ? y[i] : (double)y[i] + (double)a * x[i];
                    double scale = fabs(y[i]) + fabs(a * x[i]);
                    EXPECT(close_to(out[i], want, scale),
                                  "%s axpy n=%zu at %zu: %.9g, want %.9g", all[t]->name, n - off,
                                  i, (double)out[i], want);
                }
            }
            free(x);
            free(y);
            free(out);
        }
    }
}
END_TEST

START_TEST(test_simd_sgd_step)
{
    const kern_ops *tabs[KERN_PATH_MAX];
    int nt = simd_tables(tabs);
    rng r;
    rng_seed(&r, 8000);
    const kern_ops *all[KERN_PATH_MAX + 1];
    all[0] = &kern_generic_ops;
    for (int t = 0; t < nt; t++)
        all[t + 1] = tabs[t];
    const float lr = 0.05f, wd = 5e-3f;
    for (size_t li = 0; li < NSHAPES(ew_lengths); li++) {
        for (int with_mom = 0; with_mom < 2; with_mom++) {
            size_t n = ew_lengths[li];
            float *w = xalloc(n), *mom = xalloc(n), *g = xalloc(n);
            float *w2 = xalloc(n), *mom2 = xalloc(n);
            fill(&r, w, n, DATA_UNIFORM);
            fill(&r, mom, n, DATA_UNIFORM);
            fill(&r, g, n, DATA_UNIFORM);
            const float momentum = with_mom ? 0.9f : 0.0f;
            for (int t = 0; t < nt + 1; t++) {
                memcpy(w2, w, n * sizeof(float));
                memcpy(mom2, mom, n * sizeof(float));
                /* momentum 0: mom may be NULL and is not touched */
                all[t]->sgd_step(w2, with_mom ? mom2 : NULL, g, n, lr, momentum, wd);
                for (size_t i = 0; i < n; i++) {
                    double gi = (double)g[i] + (double)wd * w[i];
                    double m = with_mom ? 0.9 * (double)mom[i] + gi : gi;
                    double want_w = (double)w[i] - (double)lr * m;
                    double scale = fabs(w[i]) + lr * (fabs(g[i]) + fabs(wd * w[i]) +
                                                      (with_mom ? fabs(0.9 * mom[i]) : 0.0));
                    EXPECT(close_to(w2[i], want_w, scale),
                                  "%s sgd_step n=%zu momentum=%g: w[%zu] = %.9g, want %.9g",
                                  all[t]->name, n, (double)momentum, i, (double)w2[i], want_w);
                    if (with_mom)
                        EXPECT(close_to(mom2[i], m, fabs(0.9 * mom[i]) + fabs(g[i]) +
                                                              fabs(wd * w[i])),
                                      "%s sgd_step: mom[%zu] = %.9g, want %.9g", all[t]->name, i,
                                      (double)mom2[i], m);
                    else
                        EXPECT(memcmp(&mom2[i], &mom[i], sizeof(float)) == 0,
                               "%s sgd_step touched mom with momentum 0", all[t]->name);
                }
            }
            free(w);
            free(mom);
            free(g);
            free(w2);
            free(mom2);
        }
    }
}
END_TEST

/* fma_peak reports 2 flops per lane per FMA, linear in iters, for every
 * usable table (including scalar). */
START_TEST(test_fma_peak_counts)
{
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        const kern_ops *k = kern_find((kern_path)p);
        if (!k)
            continue;
        ck_assert_ptr_nonnull(k->fma_peak);
        double one = k->fma_peak(1000), two = k->fma_peak(2000);
        ck_assert_msg(one > 0.0 && two == 2.0 * one, "%s fma_peak: %g then %g", k->name, one, two);
        ck_assert_msg(fmod(one, 2000.0) == 0.0, "%s fma_peak(1000) = %g", k->name, one);
        ck_assert(k->fma_peak(0) == 0.0);
    }
}
END_TEST

/* ------------------------------------------------------------ dispatch */

static char *saved_simd;

static void dispatch_setup(void)
{
    const char *v = getenv("PSD_SIMD");
    saved_simd = v ? strdup(v) : NULL;
    unsetenv("PSD_SIMD");
}

static void dispatch_teardown(void)
{
    if (saved_simd)
        setenv("PSD_SIMD", saved_simd, 1);
    else
        unsetenv("PSD_SIMD");
    free(saved_simd);
    saved_simd = NULL;
    char err[256];
    (void)kern_init(err, sizeof err);
}

START_TEST(test_path_from_name)
{
    ck_assert_int_eq(kern_path_from_name("scalar"), KERN_PATH_SCALAR);
    ck_assert_int_eq(kern_path_from_name("avx2"), KERN_PATH_AVX2);
    ck_assert_int_eq(kern_path_from_name("avx512"), KERN_PATH_AVX512);
    ck_assert_int_eq(kern_path_from_name("neon"), KERN_PATH_NEON);
    ck_assert_int_eq(kern_path_from_name("AVX2"), -1);
    ck_assert_int_eq(kern_path_from_name("avx"), -1);
    ck_assert_int_eq(kern_path_from_name("avx5120"), -1);
    ck_assert_int_eq(kern_path_from_name(""), -1);
    ck_assert_int_eq(kern_path_from_name(NULL), -1);
}
END_TEST

START_TEST(test_find_tables)
{
    ck_assert_ptr_eq(kern_find(KERN_PATH_SCALAR), &kern_generic_ops);
    ck_assert_ptr_null(kern_find((kern_path)-1));
    ck_assert_ptr_null(kern_find(KERN_PATH_MAX));
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        const kern_ops *k = kern_find((kern_path)p);
        if (!k)
            continue;
        ck_assert_int_eq(k->path, p);
        ck_assert_int_eq(kern_path_from_name(k->name), p);
        ck_assert(k->sgemm && k->sgd_step && k->axpy && k->relu_forward && k->relu_backward &&
                  k->fma_peak);
    }
#if defined(__x86_64__)
    ck_assert_ptr_null(kern_find(KERN_PATH_NEON));
    /* A CPU with AVX-512 (F/VL/BW/DQ) has AVX2 too. */
    if (kern_find(KERN_PATH_AVX512))
        ck_assert_ptr_nonnull(kern_find(KERN_PATH_AVX2));
#elif defined(__aarch64__)
    ck_assert_ptr_nonnull(kern_find(KERN_PATH_NEON));
    ck_assert_ptr_null(kern_find(KERN_PATH_AVX2));
    ck_assert_ptr_null(kern_find(KERN_PATH_AVX512));
#endif
}
END_TEST

/* Unset (or empty) PSD_SIMD: the best usable path. */
START_TEST(test_init_default_best)
{
    static const kern_path order[] = {KERN_PATH_AVX512, KERN_PATH_AVX2, KERN_PATH_NEON,
                                      KERN_PATH_SCALAR};
    const kern_ops *best = NULL;
    for (size_t i = 0; i < NSHAPES(order) && !best; i++)
        best = kern_find(order[i]);
    char err[256] = "";
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    ck_assert_ptr_eq(kern_active(), best);
    setenv("PSD_SIMD", "", 1);
    ck_assert_int_eq(kern_init(err, sizeof err), 0);
    ck_assert_ptr_eq(kern_active(), best);
}
END_TEST

START_TEST(test_init_bad_name)
{
    char err[256] = "";
    const kern_ops *before = kern_active();
    ck_assert_ptr_nonnull(before);
    setenv("PSD_SIMD", "sse9", 1);
    ck_assert_int_eq(kern_init(err, sizeof err), -1);
    ck_assert_msg(strstr(err, "PSD_SIMD=sse9") && strstr(err, "unknown"), "message: %s", err);
    ck_assert_ptr_eq(kern_active(), before);
    /* NULL / zero-length error buffers are allowed */
    ck_assert_int_eq(kern_init(NULL, 0), -1);
}
END_TEST

/* PSD_SIMD=<each path>: chosen when usable, else -1 naming the path. */
START_TEST(test_init_each_path)
{
    static const char *const isa[KERN_PATH_MAX] = {"scalar", "AVX2", "AVX-512", "NEON"};
    for (int p = 0; p < KERN_PATH_MAX; p++) {
        static const char *const names[KERN_PATH_MAX] = {"scalar", "avx2", "avx512", "neon"};
        char err[256] = "";
        setenv("PSD_SIMD", names[p], 1);
        const kern_ops *want = kern_find((kern_path)p);
        int rc = kern_init(err, sizeof err);
        if (want) {
            ck_assert_msg(rc == 0, "PSD_SIMD=%s: %s", names[p], err);
            ck_assert_ptr_eq(kern_active(), want);
        } else {
            char expect[64];
            snprintf(expect, sizeof expect, "PSD_SIMD=%s: this CPU does not support %s",
                     names[p], isa[p]);
            ck_assert_int_eq(rc, -1);
            ck_assert_msg(strstr(err, expect) != NULL, "message: %s", err);
        }
    }
}
END_TEST

/* ------------------------------------------------------------ suite */

/* The kernels suite: generic reference, every usable SIMD path against it,
 * and the dispatch (kern_find, kern_path_from_name, kern_init). */
Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");

    TCase *tg = tcase_create("generic");
    tcase_set_timeout(tg, 120);
    tcase_add_test(tg, test_generic_sgemm_known);
    tcase_add_test(tg, test_generic_sgemm_vs_double);
    tcase_add_test(tg, test_sgemm_check_catches_errors);
    suite_add_tcase(s, tg);

    TCase *ts = tcase_create("simd_sgemm");
    tcase_set_timeout(ts, 600);
    tcase_add_test(ts, test_simd_sgemm_exact_edges);
    tcase_add_test(ts, test_simd_sgemm_random_edges);
    tcase_add_test(ts, test_simd_sgemm_cnn_shapes);
    tcase_add_test(ts, test_simd_sgemm_threads);
    suite_add_tcase(s, ts);

    TCase *te = tcase_create("simd_elementwise");
    tcase_set_timeout(te, 60);
    tcase_add_test(te, test_simd_relu);
    tcase_add_test(te, test_simd_axpy);
    tcase_add_test(te, test_simd_sgd_step);
    tcase_add_test(te, test_fma_peak_counts);
    suite_add_tcase(s, te);

    TCase *td = tcase_create("dispatch");
    tcase_add_checked_fixture(td, dispatch_setup, dispatch_teardown);
    tcase_add_test(td, test_path_from_name);
    tcase_add_test(td, test_find_tables);
    tcase_add_test(td, test_init_default_best);
    tcase_add_test(td, test_init_bad_name);
    tcase_add_test(td, test_init_each_path);
    suite_add_tcase(s, td);

    return s;
}
