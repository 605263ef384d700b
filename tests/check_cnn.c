/* check_cnn.c - the CNN engine against an independent double-precision
 * reference: every layer's forward and backward, and the gradient of both
 * whole models against central finite differences in double precision.
 * Also: parameter layout and initialisation, threads, and every SIMD path
 * against the scalar one on whole-model gradients. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cnn.h"
#include "kernels.h"
#include "rng.h"

#define PINNED_LENET_42 0x692f3b53u /* cnn_params_crc of lenet seed 42 */

/* ------------------------------------------------------------ helpers */

static void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * rng_uniform(&r);
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc(n * sizeof(double));
    ck_assert_ptr_nonnull(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* Compare analytic (float) with numeric (double) gradients: each element
 * must satisfy |a - n| <= rtol * max(|n|, floor), floor = 1e-2 * max|n|.
 * Returns the worst ratio |a-n| / max(|n|, floor) (must be <= rtol). */
static double grad_rel_err(const float *a, const double *num, size_t n, size_t *worst_i)
{
    double gmax = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(num[i]) > gmax)
            gmax = fabs(num[i]);
    double floor_ = gmax * 1e-2 + 1e-12, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - num[i]);
        double den = fabs(num[i]) > floor_ ? fabs(num[i]) : floor_;
        if (d / den > worst) {
            worst = d / den;
            if (worst_i)
                *worst_i = i;
        }
    }
    return worst;
}

#define GRAD_RTOL 2e-3

typedef double (*loss_fn)(const void *ctx);

/* Central differences of loss(ctx) with respect to v[0..n), which the loss
 * reads through ctx: num[i] = (L(v + eps e_i) - L(v - eps e_i)) / 2 eps. */
static void numeric_grad(double *v, size_t n, double eps, loss_fn loss, const void *ctx,
                         double *num)
{
    for (size_t i = 0; i < n; i++) {
        double save = v[i];
        v[i] = save + eps;
        double lp = loss(ctx);
        v[i] = save - eps;
        double lm = loss(ctx);
        v[i] = save;
        num[i] = (lp - lm) / (2 * eps);
    }
}

/* ------------------------------------------ double-precision reference
 * NCHW layout, naive loops, written independently of cnn.c. */

/* x (N,C,H,W) -> y (N,O,OH,OW) */
static void ref_conv(const double *x, int n, int c, int h, int w, const double *wt,
                     const double *b, int o, int k, double *y)
{
    int oh = h - k + 1, ow = w - k + 1;
    for (int ni = 0; ni < n; ni++)
        for (int oi = 0; oi < o; oi++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    double s = b[oi];
                    for (int ci = 0; ci < c; ci++)
                        for (int a = 0; a < k; a++)
                            for (int bb = 0; bb < k; bb++)
                                s += wt[((oi * c + ci) * k + a) * k + bb] *
                                     x[((ni * c + ci) * h + i + a) * w + j + bb];
                    y[((ni * o + oi) * oh + i) * ow + j] = s;
                }
}

/* x (P,H,W) -> y (P,H/k,W/k) */
static void ref_pool(const double *x, int p, int h, int w, int k, double *y)
{
    int oh = h / k, ow = w / k;
    for (int pi = 0; pi < p; pi++)
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                double m = -INFINITY;
                for (int a = 0; a < k; a++)
                    for (int bb = 0; bb < k; bb++) {
                        double v = x[(pi * h + i * k + a) * w + j * k + bb];
                        if (v > m)
                            m = v;
                    }
                y[(pi * oh + i) * ow + j] = m;
            }
}

/* x (N,IN) -> y (N,OUT) */
static void ref_linear(const double *x, int n, int in, const double *wt, const double *b,
                       int out, double *y)
{
    for (int ni = 0; ni < n; ni++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++)
                s += wt[o * in + i] * x[ni * in + i];
            y[ni * out + o] = s;
        }
}

/* mean NLL of log-softmax over n rows */
static double ref_nll(const double *z, const uint8_t *labels, int n, int classes)
{
    double total = 0;
    for (int i = 0; i < n; i++) {
        double mx = z[i * classes];
        for (int j = 1; j < classes; j++)
            if (z[i * classes + j] > mx)
                mx = z[i * classes + j];
        double s = 0;
        for (int j = 0; j < classes; j++)
            s += exp(z[i * classes + j] - mx);
        total += mx + log(s) - z[i * classes + labels[i]];
    }
    return total / n;
}

/* Mean loss of model m at params p on x (N, in) in NCHW, in double. */
static double ref_model_loss(const cnn_model *m, const double *p, const double *x,
                             const uint8_t *labels, int n)
{
    size_t cap = (size_t)n * m->in_c * m->in_h * m->in_w;
    for (int i = 0; i < m->nlayers; i++) {
        size_t s = (size_t)n * m->layers[i].out_c * m->layers[i].out_h * m->layers[i].out_w;
        if (s > cap)
            cap = s;
    }
    double *a = malloc(cap * sizeof(double)), *b = malloc(cap * sizeof(double));
    ck_assert(a && b);
    memcpy(a, x, (size_t)n * m->in_c * m->in_h * m->in_w * sizeof(double));
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        size_t osz = (size_t)n * l->out_c * l->out_h * l->out_w;
        switch (l->kind) {
        case CNN_LAYER_CONV:
            ref_conv(a, n, l->in_c, l->in_h, l->in_w, p + l->w_off, p + l->b_off, l->out_c,
                     l->k, b);
            break;
        case CNN_LAYER_MAXPOOL:
            ref_pool(a, n * l->in_c, l->in_h, l->in_w, l->k, b);
            break;
        case CNN_LAYER_RELU:
            for (size_t j = 0; j < osz; j++)
                b[j] = a[j] > 0 ? a[j] : 0;
            break;
        case CNN_LAYER_LINEAR: /* NCHW flattened per sample is PyTorch's order */
            ref_linear(a, n, l->in_c, p + l->w_off, p + l->b_off, l->out_c, b);
            break;
        default:
            ck_abort();
        }
        double *t = a;
        a = b;
        b = t;
    }
    double loss = ref_nll(a, labels, n, m->classes);
    free(a);
    free(b);
    return loss;
}

/* ------------------------------------------------------------- layers */

/* L = sum(conv(x) * r) in double, NCHW. */
typedef struct conv_ctx {
    const double *x, *w, *b;
    double *y;
    const double *r;
    int n, c, h, wd, o, k;
    size_t ys;
} conv_ctx;

static double conv_loss(const void *p)
{
    const conv_ctx *t = p;
    ref_conv(t->x, t->n, t->c, t->h, t->wd, t->w, t->b, t->o, t->k, t->y);
    double s = 0;
    for (size_t q = 0; q < t->ys; q++)
        s += t->y[q] * t->r[q];
    return s;
}

/* conv2d on CNHW: forward against the reference, backward against central
 * differences of L = sum(y * r). */
static void check_conv(const kern_ops *k, int c, int n, int h, int w, int o, int ks)
{
    int oh = h - ks + 1, ow = w - ks + 1;
    size_t xs = (size_t)c * n * h * w, ws = (size_t)o * c * ks * ks;
    size_t ys = (size_t)o * n * oh * ow, cs = (size_t)c * ks * ks * n * oh * ow;
    float *x = malloc(xs * 4), *wt = malloc(ws * 4), *b = malloc(o * 4), *y = malloc(ys * 4);
    float *r = malloc(ys * 4), *cols = malloc(cs * 4), *dcols = malloc(cs * 4);
    float *dw = malloc(ws * 4), *db = malloc(o * 4), *dx = malloc(xs * 4);
    fill_uniform(x, xs, 1, -1, 1);
    fill_uniform(wt, ws, 2, -1, 1);
    fill_uniform(b, o, 3, -1, 1);
    fill_uniform(r, ys, 4, -1, 1);
    conv2d_forward(k, x, c, n, h, w, wt, b, o, ks, ks, cols, y);
    conv2d_backward(k, r, c, n, h, w, wt, o, ks, ks, cols, dw, db, dx, dcols);

    /* reference in NCHW */
    double *xd = malloc(xs * 8), *wd = to_double(wt, ws), *bd = to_double(b, o);
    double *yd = malloc(ys * 8), *rd = malloc(ys * 8);
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            for (int j = 0; j < h * w; j++)
                xd[((size_t)ni * c + ci) * h * w + j] = x[((size_t)ci * n + ni) * h * w + j];
    for (int oi = 0; oi < o; oi++)
        for (int ni = 0; ni < n; ni++)
            for (int j = 0; j < oh * ow; j++)
                rd[((size_t)ni * o + oi) * oh * ow + j] = r[((size_t)oi * n + ni) * oh * ow + j];
    ref_conv(xd, n, c, h, w, wd, bd, o, ks, yd);
    for (int oi = 0; oi < o; oi++)
        for (int ni = 0; ni < n; ni++)
            for (int j = 0; j < oh * ow; j++) {
                double want = yd[((size_t)ni * o + oi) * oh * ow + j];
                double got = y[((size_t)oi * n + ni) * oh * ow + j];
                if (!(fabs(got - want) <= 1e-4 * (1 + fabs(want))))
                    ck_abort_msg("%s conv forward o=%d n=%d j=%d: %g vs %g", k->name, oi, ni, j,
                                 got, want);
            }

    conv_ctx ctx = { xd, wd, bd, yd, rd, n, c, h, w, o, ks, ys };
    double *num = malloc((xs > ws ? xs : ws) * 8);
    numeric_grad(wd, ws, 1e-5, conv_loss, &ctx, num);
    ck_assert_double_le(grad_rel_err(dw, num, ws, NULL), GRAD_RTOL);
    numeric_grad(bd, (size_t)o, 1e-5, conv_loss, &ctx, num);
    ck_assert_double_le(grad_rel_err(db, num, (size_t)o, NULL), GRAD_RTOL);
    /* input: numeric in NCHW, compare after mapping dx (CNHW) */
    float *dx_nchw = malloc(xs * 4);
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            for (int j = 0; j < h * w; j++)
                dx_nchw[((size_t)ni * c + ci) * h * w + j] = dx[((size_t)ci * n + ni) * h * w + j];
    numeric_grad(xd, xs, 1e-5, conv_loss, &ctx, num);
    ck_assert_double_le(grad_rel_err(dx_nchw, num, xs, NULL), GRAD_RTOL);
    free(x); free(wt); free(b); free(y); free(r); free(cols); free(dcols);
    free(dw); free(db); free(dx); free(xd); free(wd); free(bd); free(yd); free(rd);
    free(num); free(dx_nchw);
}

START_TEST(test_conv_grad)
{
    const kern_ops *k = &kern_generic_ops;
    check_conv(k, 1, 2, 6, 5, 3, 3);
    check_conv(k, 3, 2, 7, 9, 4, 3);
    check_conv(k, 2, 3, 8, 8, 5, 5);
    check_conv(k, 2, 1, 4, 4, 2, 4); /* kernel as large as the input */
}
END_TEST

/* L = sum(pool(x) * r) in double. */
typedef struct pool_ctx {
    const double *x;
    double *y;
    const float *r;
    int p, h, w, k;
    size_t ys;
} pool_ctx;

static double pool_loss(const void *q)
{
    const pool_ctx *t = q;
    ref_pool(t->x, t->p, t->h, t->w, t->k, t->y);
    double s = 0;
    for (size_t i = 0; i < t->ys; i++)
        s += t->y[i] * t->r[i];
    return s;
}

static void check_pool(int p, int h, int w, int k)
{
    int oh = h / k, ow = w / k;
    size_t xs = (size_t)p * h * w, ys = (size_t)p * oh * ow;
    float *x = malloc(xs * 4), *y = malloc(ys * 4), *r = malloc(ys * 4), *dx = malloc(xs * 4);
    int32_t *arg = malloc(ys * 4);
    fill_uniform(x, xs, 11, -1, 1);
    fill_uniform(r, ys, 12, -1, 1);
    maxpool_forward(x, p, h, w, k, y, arg);
    maxpool_backward(r, arg, p, h, w, k, dx);
    double *xd = to_double(x, xs), *yd = malloc(ys * 8), *num = malloc(xs * 8);
    ref_pool(xd, p, h, w, k, yd);
    for (size_t i = 0; i < ys; i++)
        if (y[i] != yd[i])
            ck_abort_msg("maxpool forward [%zu]: %g vs %g", i, (double)y[i], yd[i]);
    pool_ctx ctx = { xd, yd, r, p, h, w, k, ys };
    numeric_grad(xd, xs, 1e-6, pool_loss, &ctx, num);
    ck_assert_double_le(grad_rel_err(dx, num, xs, NULL), GRAD_RTOL);
    free(x); free(y); free(r); free(dx); free(arg); free(xd); free(yd); free(num);
}

START_TEST(test_pool_grad)
{
    check_pool(3, 6, 6, 2);
    check_pool(2, 7, 9, 2); /* odd sizes: the last row/column is dropped */
    check_pool(4, 26, 26, 3);
    check_pool(1, 5, 5, 5);
}
END_TEST

/* L = sum(linear(x) * r) in double. */
typedef struct lin_ctx {
    const double *x, *w, *b;
    double *y;
    const float *r;
    int n, in, out;
} lin_ctx;

static double lin_loss(const void *p)
{
    const lin_ctx *t = p;
    ref_linear(t->x, t->n, t->in, t->w, t->b, t->out, t->y);
    double s = 0;
    for (int q = 0; q < t->n * t->out; q++)
        s += t->y[q] * t->r[q];
    return s;
}

START_TEST(test_linear_grad)
{
    const kern_ops *k = &kern_generic_ops;
    const int n = 3, in = 17, out = 5;
    float x[3 * 17], wt[5 * 17], b[5], y[15], r[15], dw[5 * 17], db[5], dx[3 * 17];
    fill_uniform(x, sizeof(x) / 4, 21, -1, 1);
    fill_uniform(wt, sizeof(wt) / 4, 22, -1, 1);
    fill_uniform(b, 5, 23, -1, 1);
    fill_uniform(r, 15, 24, -1, 1);
    linear_forward(k, x, n, in, wt, b, out, y);
    linear_backward(k, r, x, n, in, wt, out, dw, db, dx);
    double *xd = to_double(x, sizeof(x) / 4), *wd = to_double(wt, sizeof(wt) / 4);
    double *bd = to_double(b, 5), yd[15], num[5 * 17];
    ref_linear(xd, n, in, wd, bd, out, yd);
    for (int i = 0; i < 15; i++)
        ck_assert_double_eq_tol(y[i], yd[i], 1e-5);
    lin_ctx ctx = { xd, wd, bd, yd, r, n, in, out };
    double *vecs[3] = { wd, bd, xd };
    float *grads[3] = { dw, db, dx };
    size_t lens[3] = { sizeof(wt) / 4, 5, sizeof(x) / 4 };
    for (int v = 0; v < 3; v++) {
        numeric_grad(vecs[v], lens[v], 1e-5, lin_loss, &ctx, num);
        ck_assert_double_le(grad_rel_err(grads[v], num, lens[v], NULL), GRAD_RTOL);
    }
    free(xd); free(wd); free(bd);
}
END_TEST

START_TEST(test_relu)
{
    const kern_ops *k = &kern_generic_ops;
    float x[37], dx[37], dy[37];
    fill_uniform(x, 37, 31, -1, 1);
    fill_uniform(dy, 37, 32, -1, 1);
    float y[37];
    memcpy(y, x, sizeof(x));
    k->relu_forward(y, 37);
    memcpy(dx, dy, sizeof(dy));
    k->relu_backward(dx, y, 37);
    for (int i = 0; i < 37; i++) {
        ck_assert_float_eq(y[i], x[i] > 0 ? x[i] : 0);
        /* derivative of max(x,0): 1 where x > 0 */
        ck_assert_float_eq(dx[i], x[i] > 0 ? dy[i] : 0);
    }
}
END_TEST

typedef struct nll_ctx {
    const double *z;
    const uint8_t *labels;
    int n, classes;
} nll_ctx;

static double nll_loss(const void *p)
{
    const nll_ctx *t = p;
    return ref_nll(t->z, t->labels, t->n, t->classes);
}

START_TEST(test_logsoftmax_grad)
{
    const int n = 4, c = 10;
    float z[40], dz[40];
    uint8_t lab[4] = { 3, 0, 9, 3 };
    fill_uniform(z, 40, 41, -3, 3);
    int correct = -1;
    double loss = logsoftmax_nll(z, lab, n, c, 1.0f / n, dz, &correct);
    double *zd = to_double(z, 40), num[40];
    ck_assert_double_eq_tol(loss / n, ref_nll(zd, lab, n, c), 1e-6);
    nll_ctx ctx = { zd, lab, n, c };
    numeric_grad(zd, 40, 1e-6, nll_loss, &ctx, num);
    ck_assert_double_le(grad_rel_err(dz, num, 40, NULL), GRAD_RTOL);
    int hits = 0;
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int j = 1; j < c; j++)
            if (z[i * c + j] > z[i * c + best])
                best = j;
        hits += best == lab[i];
    }
    ck_assert_int_eq(correct, hits);
    free(zd);
}
END_TEST

/* -------------------------------------------------------- whole models */

typedef struct model_ctx {
    const cnn_model *m;
    const double *p, *x;
    const uint8_t *labels;
    int n;
} model_ctx;

static double model_loss(const void *q)
{
    const model_ctx *t = q;
    return ref_model_loss(t->m, t->p, t->x, t->labels, t->n);
}

/* Gradient of model m (batch n) from the engine vs central differences of
 * the double reference, on `nsample` parameters (all if 0) spread over every
 * tensor. */
static void check_model_grad(const cnn_model *m, int n, size_t nsample, int threads)
{
    char err[256];
    cnn_engine *e = cnn_engine_new(m, &kern_generic_ops, threads, n, err, sizeof(err));
    ck_assert_msg(e != NULL, "%s", err);
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    float *p = malloc(m->nparams * 4), *g = malloc(m->nparams * 4);
    float *x = malloc(in * n * 4);
    uint8_t *lab = malloc(n);
    cnn_params_init(m, 7, p, 0, m->nparams);
    fill_uniform(x, in * n, 8, -1, 2);
    rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)rng_below(&r, (uint64_t)m->classes);
    double loss;
    cnn_engine_grad(e, p, x, lab, n, g, &loss, NULL);

    double *pd = to_double(p, m->nparams), *xd = to_double(x, in * n);
    ck_assert_double_eq_tol(loss / n, ref_model_loss(m, pd, xd, lab, n), 1e-4);

    /* choose the parameters: every index, or nsample spread over each
     * tensor in proportion, at least 4 per tensor */
    size_t cnt = 0;
    size_t *idx = malloc(m->nparams * sizeof(size_t));
    for (int li = 0; li < m->nlayers; li++) {
        const cnn_layer *l = &m->layers[li];
        size_t offs[2] = { l->w_off, l->b_off }, lens[2] = { l->w_len, l->b_len };
        for (int t = 0; t < 2; t++) {
            if (!lens[t])
                continue;
            size_t want = nsample ? nsample * lens[t] / m->nparams : lens[t];
            if (want < 4)
                want = 4;
            if (want > lens[t])
                want = lens[t];
            for (size_t j = 0; j < want; j++)
                idx[cnt++] = offs[t] + (want == lens[t] ? j : rng_below(&r, lens[t]));
        }
    }
    float *ga = malloc(cnt * 4);
    double *num = malloc(cnt * 8);
    model_ctx ctx = { m, pd, xd, lab, n };
    for (size_t j = 0; j < cnt; j++) {
        numeric_grad(pd + idx[j], 1, 1e-5, model_loss, &ctx, num + j);
        ga[j] = g[idx[j]];
    }
    size_t worst = 0;
    double rel = grad_rel_err(ga, num, cnt, &worst);
    char name[64];
    ck_assert_msg(rel <= GRAD_RTOL, "%s: gradient of %s[%zu] %g vs numeric %g (rel %g)",
                  m->name, cnn_param_name(m, idx[worst], name, sizeof(name)), idx[worst],
                  (double)ga[worst], num[worst], rel);
    free(idx); free(ga); free(num); free(pd); free(xd);
    free(p); free(g); free(x); free(lab);
    cnn_engine_free(e);
}

START_TEST(test_model_grad_ray)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof(err)), 0);
    check_model_grad(&m, 4, 0, 1); /* all 1,960 parameters */
}
END_TEST

START_TEST(test_model_grad_lenet)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "lenet", err, sizeof(err)), 0);
    check_model_grad(&m, 2, 300, 1);
}
END_TEST

/* A model with 2 input channels, two linear layers after pooling and
 * threads: the layout conversions (NCHW <-> CNHW, flatten) are exercised. */
START_TEST(test_model_grad_custom)
{
    cnn_model_spec spec = { "custom", 2, 11, 10, 7,
                            { { CNN_LAYER_CONV, 3, 3 },
                              { CNN_LAYER_RELU, 0, 0 },
                              { CNN_LAYER_MAXPOOL, 0, 2 },
                              { CNN_LAYER_CONV, 4, 2 },
                              { CNN_LAYER_LINEAR, 6, 0 },
                              { CNN_LAYER_RELU, 0, 0 },
                              { CNN_LAYER_LINEAR, 3, 0 } } };
    cnn_model m;
    char err[256];
    ck_assert_msg(cnn_model_from_spec(&m, &spec, err, sizeof(err)) == 0, "%s", err);
    check_model_grad(&m, 5, 0, 1);
    check_model_grad(&m, 5, 0, 3); /* 5 samples over 3 threads */
}
END_TEST

/* ---------------------------------------------------- layout and init */

START_TEST(test_model_table)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof(err)), 0);
    ck_assert_uint_eq(m.nparams, 1960);
    ck_assert_int_eq(m.classes, 10);
    ck_assert_int_eq(cnn_model_init(&m, "lenet", err, sizeof(err)), 0);
    ck_assert_uint_eq(m.nparams, 431080);
    /* the documented layout: conv1.w 500, conv1.b 20, conv2.w 25000, ... */
    ck_assert_uint_eq(m.layers[0].w_off, 0);
    ck_assert_uint_eq(m.layers[0].b_off, 500);
    ck_assert_uint_eq(m.layers[3].w_off, 520);
    ck_assert_uint_eq(m.layers[3].b_off, 25520);
    ck_assert_uint_eq(m.layers[6].w_off, 25570);
    ck_assert_uint_eq(m.layers[6].w_len, 400000);
    ck_assert_uint_eq(m.layers[8].b_off, 431070);
    char name[64];
    ck_assert_str_eq(cnn_param_name(&m, 0, name, sizeof(name)), "conv1.weight");
    ck_assert_str_eq(cnn_param_name(&m, 25519, name, sizeof(name)), "conv2.weight");
    ck_assert_str_eq(cnn_param_name(&m, 431079, name, sizeof(name)), "fc2.bias");
    ck_assert_ptr_null(cnn_param_name(&m, 431080, name, sizeof(name)));
    /* FLOPs of a training step: lenet, per sample */
    ck_assert_double_eq_tol(cnn_model_forward_flops(&m), 2.0 * (288000 + 1600000 + 400000 + 5000),
                            1);
    ck_assert_int_eq(cnn_model_init(&m, "resnet", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown model 'resnet'"));
    ck_assert_ptr_nonnull(strstr(err, "lenet"));
}
END_TEST

/* The CRC a PULL with SEED sends: zlib's CRC-32 of the fp32 little-endian
 * bytes, across its 4 KiB chunks; and of lenet's initial weights for seed
 * 42, pinned: the same on every architecture (a shard and a worker on
 * different ones must agree, else every seeded pull goes out in full). */
START_TEST(test_params_crc)
{
    static const float two[2] = {1.0f, -2.0f};
    static const uint8_t le[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};
    ck_assert_uint_eq(cnn_params_crc(two, 2), (uint32_t)crc32(0L, le, 8));
    ck_assert_uint_eq(cnn_params_crc(two, 0), (uint32_t)crc32(0L, Z_NULL, 0));
    float *x = malloc(5000 * sizeof(float));
    uint8_t *b = malloc(5000 * 4);
    ck_assert(x && b);
    for (size_t i = 0; i < 5000; i++) {
        x[i] = (float)i * 0.37f - 100.0f;
        uint32_t u;
        memcpy(&u, &x[i], 4);
        for (int j = 0; j < 4; j++)
            b[4 * i + (size_t)j] = (uint8_t)(u >> (8 * j));
    }
    ck_assert_uint_eq(cnn_params_crc(x, 5000), (uint32_t)crc32(0L, b, 5000 * 4));
    x[4999] = -x[4999];
    ck_assert_uint_ne(cnn_params_crc(x, 5000), (uint32_t)crc32(0L, b, 5000 * 4));
    free(x);
    free(b);
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "lenet", err, sizeof(err)), 0);
    float *w = malloc(m.nparams * 4);
    ck_assert_ptr_nonnull(w);
    cnn_params_init(&m, 42, w, 0, m.nparams);
    ck_assert_uint_eq(cnn_params_crc(w, m.nparams), PINNED_LENET_42);
    free(w);
}
END_TEST

START_TEST(test_init)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "lenet", err, sizeof(err)), 0);
    float *a = malloc(m.nparams * 4), *b = malloc(m.nparams * 4);
    cnn_params_init(&m, 42, a, 0, m.nparams);
    cnn_params_init(&m, 42, b, 0, m.nparams);
    ck_assert_mem_eq(a, b, m.nparams * 4);
    /* any range on its own gives the same values (a shard initialises its
     * range without the rest) */
    size_t lo = 1234, hi = 300017;
    cnn_params_init(&m, 42, b, lo, hi);
    ck_assert_mem_eq(a + lo, b, (hi - lo) * 4);
    /* another seed differs */
    cnn_params_init(&m, 43, b, 0, m.nparams);
    ck_assert(memcmp(a, b, m.nparams * 4) != 0);
    /* PyTorch's bounds: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), mean ~ 0 */
    for (int li = 0; li < m.nlayers; li++) {
        const cnn_layer *l = &m.layers[li];
        if (!l->w_len)
            continue;
        double bound = 1 / sqrt((double)l->fan_in), sum = 0, maxabs = 0;
        for (size_t i = l->w_off; i < l->b_off + l->b_len; i++) {
            if (!(fabs(a[i]) <= bound))
                ck_abort_msg("init [%zu] = %g outside +-%g", i, (double)a[i], bound);
            sum += a[i];
            if (fabs(a[i]) > maxabs)
                maxabs = fabs(a[i]);
        }
        size_t cnt = l->w_len + l->b_len;
        ck_assert(fabs(sum / cnt) < 0.1 * bound);
        ck_assert(maxabs > 0.8 * bound); /* the range is used, not shrunk */
    }
    free(a);
    free(b);
}
END_TEST

/* ------------------------------------------- threads and SIMD paths */

static void engine_grad_hook(const cnn_model *m, const kern_ops *k, int threads, int n, float *g,
                             double *loss, cnn_grad_ready_fn fn, void *ctx)
{
    char err[256];
    cnn_engine *e = cnn_engine_new(m, k, threads, n, err, sizeof(err));
    ck_assert_msg(e != NULL, "%s", err);
    cnn_engine_on_grad_ready(e, fn, ctx);
    size_t in = (size_t)m->in_c * m->in_h * m->in_w;
    float *p = malloc(m->nparams * 4), *x = malloc(in * n * 4);
    uint8_t *lab = malloc(n);
    cnn_params_init(m, 5, p, 0, m->nparams);
    fill_uniform(x, in * n, 6, -0.5, 2.5);
    for (int i = 0; i < n; i++)
        lab[i] = (uint8_t)(i * 7 % 10);
    cnn_engine_grad(e, p, x, lab, n, g, loss, NULL);
    free(p); free(x); free(lab);
    cnn_engine_free(e);
}

static void engine_grad(const cnn_model *m, const kern_ops *k, int threads, int n, float *g,
                        double *loss)
{
    engine_grad_hook(m, k, threads, n, g, loss, NULL, NULL);
}

static void assert_close(const float *a, const float *b, size_t n, double rtol, const char *what)
{
    double amax = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > amax)
            amax = fabs(b[i]);
    /* plain ifs: a passing ck_assert costs a write(2), 431,080 per lenet */
    for (size_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= rtol * (fabs(b[i]) + 1e-2 * amax)))
            ck_abort_msg("%s: [%zu] %g vs %g", what, i, (double)a[i], (double)b[i]);
}

START_TEST(test_threads_match)
{
    const char *names[2] = { "ray", "lenet" };
    for (int mi = 0; mi < 2; mi++) {
        cnn_model m;
        char err[256];
        ck_assert_int_eq(cnn_model_init(&m, names[mi], err, sizeof(err)), 0);
        float *g1 = malloc(m.nparams * 4), *g2 = malloc(m.nparams * 4);
        double l1, l2;
        engine_grad(&m, &kern_generic_ops, 1, 13, g1, &l1);
        for (int t = 2; t <= 4; t++) {
            engine_grad(&m, &kern_generic_ops, t, 13, g2, &l2);
            ck_assert_double_eq_tol(l1, l2, 1e-4 * fabs(l1));
            assert_close(g2, g1, m.nparams, 1e-4, names[mi]);
        }
        /* fewer samples than threads */
        engine_grad(&m, &kern_generic_ops, 1, 1, g1, &l1);
        engine_grad(&m, &kern_generic_ops, 3, 1, g2, &l2);
        assert_close(g2, g1, m.nparams, 1e-5, "1 sample, 3 threads");
        free(g1);
        free(g2);
    }
}
END_TEST

/* cnn_engine_on_grad_ready: each call's grad[from..) already holds the
 * final gradient (bit for bit what a run without the hook returns), the
 * rest is not written yet; one call per layer with parameters, last layer
 * first, none for the first layer; none with 2 threads. */
typedef struct ready_rec {
    const cnn_model *m;
    float *g;
    const float *ref;
    size_t from[CNN_MAX_LAYERS];
    int calls;
} ready_rec;

static void ready_check(void *ctx, size_t from)
{
    ready_rec *r = ctx;
    size_t np = r->m->nparams;
    ck_assert(from > 0 && from < np && r->calls < CNN_MAX_LAYERS);
    r->from[r->calls++] = from;
    if (memcmp(r->g + from, r->ref + from, (np - from) * sizeof(float)) != 0)
        ck_abort_msg("%s: grad[%zu..) not final at the call", r->m->name, from);
    for (size_t i = 0; i < from; i++) /* still the poison: NaN bits 0xffffffff */
        if (!isnan(r->g[i]))
            ck_abort_msg("%s: grad[%zu] written before the call for %zu", r->m->name, i, from);
}

START_TEST(test_grad_ready)
{
    const char *names[2] = { "ray", "lenet" };
    for (int mi = 0; mi < 2; mi++) {
        cnn_model m;
        char err[256];
        ck_assert_int_eq(cnn_model_init(&m, names[mi], err, sizeof(err)), 0);
        size_t np = m.nparams;
        float *ref = malloc(np * 4), *g = malloc(np * 4);
        double l1, l2;
        engine_grad(&m, &kern_generic_ops, 1, 9, ref, &l1);
        ready_rec r = { .m = &m, .g = g, .ref = ref };
        memset(g, 0xff, np * 4);
        engine_grad_hook(&m, &kern_generic_ops, 1, 9, g, &l2, ready_check, &r);
        ck_assert(memcmp(g, ref, np * 4) == 0 && l1 == l2);
        int want = 0;
        for (int i = m.nlayers - 1; i > 0; i--)
            if (m.layers[i].w_len) {
                ck_assert_msg(want < r.calls && r.from[want] == m.layers[i].w_off,
                              "%s: call %d of %d", names[mi], want, r.calls);
                want++;
            }
        ck_assert_int_eq(r.calls, want);
        ck_assert_int_ge(r.calls, 1);
        /* two threads sum their gradients at the end: no calls */
        r.calls = 0;
        engine_grad_hook(&m, &kern_generic_ops, 2, 9, g, &l2, ready_check, &r);
        ck_assert_int_eq(r.calls, 0);
        assert_close(g, ref, np, 1e-4, "2 threads");
        free(ref);
        free(g);
    }
}
END_TEST

START_TEST(test_simd_paths_match)
{
    const char *names[2] = { "ray", "lenet" };
    int tested = 0;
    for (int pth = 0; pth < KERN_PATH_MAX; pth++) {
        const kern_ops *k = kern_find((kern_path)pth);
        if (!k || pth == KERN_PATH_SCALAR)
            continue;
        tested++;
        for (int mi = 0; mi < 2; mi++) {
            cnn_model m;
            char err[256];
            ck_assert_int_eq(cnn_model_init(&m, names[mi], err, sizeof(err)), 0);
            float *g1 = malloc(m.nparams * 4), *g2 = malloc(m.nparams * 4);
            double l1, l2;
            engine_grad(&m, &kern_generic_ops, 1, 19, g1, &l1);
            engine_grad(&m, k, 2, 19, g2, &l2);
            ck_assert_double_eq_tol(l1, l2, 1e-4 * fabs(l1));
            assert_close(g2, g1, m.nparams, 1e-3, k->name);
            free(g1);
            free(g2);
        }
    }
#if defined(__x86_64__) || defined(__aarch64__)
    ck_assert_msg(tested > 0, "no SIMD path found on this CPU");
#endif
}
END_TEST

START_TEST(test_engine_errors)
{
    cnn_model m;
    char err[256];
    ck_assert_int_eq(cnn_model_init(&m, "ray", err, sizeof(err)), 0);
    ck_assert_ptr_null(cnn_engine_new(&m, &kern_generic_ops, 0, 8, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "threads"));
    ck_assert_ptr_null(cnn_engine_new(&m, &kern_generic_ops, 1, 0, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "batch"));
    cnn_model_spec bad = { "bad", 1, 8, 8, 2, { { CNN_LAYER_CONV, 2, 9 }, { CNN_LAYER_LINEAR, 2, 0 } } };
    ck_assert_int_eq(cnn_model_from_spec(&m, &bad, err, sizeof(err)), -1);
    cnn_model_spec nolin = { "nolin", 1, 8, 8, 1, { { CNN_LAYER_CONV, 2, 3 } } };
    ck_assert_int_eq(cnn_model_from_spec(&m, &nolin, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "last layer"));
}
END_TEST

Suite *cnn_suite(void)
{
    Suite *s = suite_create("cnn");
    TCase *tc = tcase_create("layers");
    tcase_add_test(tc, test_params_crc);
    tcase_add_test(tc, test_conv_grad);
    tcase_add_test(tc, test_pool_grad);
    tcase_add_test(tc, test_linear_grad);
    tcase_add_test(tc, test_relu);
    tcase_add_test(tc, test_logsoftmax_grad);
    suite_add_tcase(s, tc);
    tc = tcase_create("models");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_model_grad_ray);
    tcase_add_test(tc, test_model_grad_lenet);
    tcase_add_test(tc, test_model_grad_custom);
    tcase_add_test(tc, test_model_table);
    tcase_add_test(tc, test_init);
    tcase_add_test(tc, test_threads_match);
    tcase_add_test(tc, test_grad_ready);
    tcase_add_test(tc, test_simd_paths_match);
    tcase_add_test(tc, test_engine_errors);
    suite_add_tcase(s, tc);
    return s;
}
