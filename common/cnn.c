/* cnn.c - models, parameter layout, layers and the threaded engine.
 * See cnn.h for the layouts. */
#include "cnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "pool.h"
#include "proto.h"
#include "rng.h"

/* ------------------------------------------------------------------ models */

#define CONV(o, k) { CNN_LAYER_CONV, (o), (k) }
#define POOL(k) { CNN_LAYER_MAXPOOL, 0, (k) }
#define RELU { CNN_LAYER_RELU, 0, 0 }
#define LINEAR(o) { CNN_LAYER_LINEAR, (o), 0 }

/* The built-in models.  Adding one is one entry here. */
static const cnn_model_spec cnn_model_table[] = {
    /* The ConvNet of the reference Ray parameter-server example. */
    { "ray", 1, 28, 28, 4, { CONV(3, 3), POOL(3), RELU, LINEAR(10) } },
    /* LeNet-5 as in Caffe/PyTorch examples. */
    { "lenet", 1, 28, 28, 9,
      { CONV(20, 5), POOL(2), RELU, CONV(50, 5), POOL(2), RELU, LINEAR(500), RELU,
        LINEAR(10) } },
};

#define CNN_NMODELS (sizeof(cnn_model_table) / sizeof(cnn_model_table[0]))

const char *cnn_model_names(void)
{
    static char names[256];
    if (!names[0]) {
        size_t off = 0;
        for (size_t i = 0; i < CNN_NMODELS; i++)
            off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "",
                                    cnn_model_table[i].name);
    }
    return names;
}

int cnn_model_init(cnn_model *m, const char *name, char *err, size_t errlen)
{
    for (size_t i = 0; i < CNN_NMODELS; i++)
        if (name && strcmp(name, cnn_model_table[i].name) == 0)
            return cnn_model_from_spec(m, &cnn_model_table[i], err, errlen);
    snprintf(err, errlen, "unknown model '%s' (known: %s)", name ? name : "(null)",
             cnn_model_names());
    return -1;
}

int cnn_model_from_spec(cnn_model *m, const cnn_model_spec *spec, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->name = spec->name;
    m->in_c = spec->in_c;
    m->in_h = spec->in_h;
    m->in_w = spec->in_w;
    if (spec->nlayers < 1 || spec->nlayers > CNN_MAX_LAYERS || spec->in_c < 1 ||
        spec->in_h < 1 || spec->in_w < 1) {
        snprintf(err, errlen, "model %s: bad input shape or layer count", spec->name);
        return -1;
    }
    int c = spec->in_c, h = spec->in_h, w = spec->in_w;
    int flat = 0; /* has a linear layer flattened the data yet */
    size_t off = 0;
    int nconv = 0, npool = 0, nrelu = 0, nfc = 0;
    for (int i = 0; i < spec->nlayers; i++) {
        const cnn_layer_spec *ls = &spec->layers[i];
        cnn_layer *l = &m->layers[i];
        l->kind = ls->kind;
        l->in_c = c;
        l->in_h = h;
        l->in_w = w;
        l->k = ls->k;
        switch (ls->kind) {
        case CNN_LAYER_CONV:
            if (flat || ls->out < 1 || ls->k < 1 || ls->k > h || ls->k > w) {
                snprintf(err, errlen, "model %s: layer %d: bad convolution", spec->name, i);
                return -1;
            }
            snprintf(l->name, sizeof(l->name), "conv%d", ++nconv);
            l->fan_in = c * ls->k * ls->k;
            l->out_c = ls->out;
            l->out_h = h - ls->k + 1;
            l->out_w = w - ls->k + 1;
            l->w_len = (size_t)ls->out * (size_t)l->fan_in;
            l->b_len = (size_t)ls->out;
            break;
        case CNN_LAYER_MAXPOOL:
            if (flat || ls->k < 1 || ls->k > h || ls->k > w) {
                snprintf(err, errlen, "model %s: layer %d: bad max-pool", spec->name, i);
                return -1;
            }
            snprintf(l->name, sizeof(l->name), "pool%d", ++npool);
            l->out_c = c;
            l->out_h = h / ls->k;
            l->out_w = w / ls->k;
            break;
        case CNN_LAYER_RELU:
            snprintf(l->name, sizeof(l->name), "relu%d", ++nrelu);
            l->out_c = c;
            l->out_h = h;
            l->out_w = w;
            break;
        case CNN_LAYER_LINEAR:
            if (ls->out < 1) {
                snprintf(err, errlen, "model %s: layer %d: bad linear layer", spec->name, i);
                return -1;
            }
            snprintf(l->name, sizeof(l->name), "fc%d", ++nfc);
            l->in_c = c * h * w;
            l->in_h = l->in_w = 1;
            l->fan_in = l->in_c;
            l->out_c = ls->out;
            l->out_h = l->out_w = 1;
            l->w_len = (size_t)ls->out * (size_t)l->fan_in;
            l->b_len = (size_t)ls->out;
            flat = 1;
            break;
        default:
            snprintf(err, errlen, "model %s: layer %d: unknown kind", spec->name, i);
            return -1;
        }
        l->w_off = off;
        off += l->w_len;
        l->b_off = off;
        off += l->b_len;
        c = l->out_c;
        h = l->out_h;
        w = l->out_w;
    }
    if (m->layers[spec->nlayers - 1].kind != CNN_LAYER_LINEAR) {
        snprintf(err, errlen, "model %s: the last layer must be linear", spec->name);
        return -1;
    }
    m->nlayers = spec->nlayers;
    m->classes = c;
    m->nparams = off;
    return 0;
}

static double cnn_layer_mac(const cnn_layer *l)
{
    if (l->kind == CNN_LAYER_CONV)
        return (double)l->out_c * l->fan_in * l->out_h * l->out_w;
    if (l->kind == CNN_LAYER_LINEAR)
        return (double)l->out_c * l->in_c;
    return 0;
}

double cnn_model_forward_flops(const cnn_model *m)
{
    double f = 0;
    for (int i = 0; i < m->nlayers; i++)
        f += 2 * cnn_layer_mac(&m->layers[i]);
    return f;
}

double cnn_model_train_flops(const cnn_model *m)
{
    double f = 0;
    int first = 1;
    for (int i = 0; i < m->nlayers; i++) {
        double mac = cnn_layer_mac(&m->layers[i]);
        if (mac == 0)
            continue;
        /* forward, weight gradient, and input gradient except for the first
         * parameterised layer (its input is the data) */
        f += 2 * mac * (first ? 2 : 3);
        first = 0;
    }
    return f;
}

void cnn_params_init(const cnn_model *m, uint64_t seed, float *params, size_t lo, size_t hi)
{
    if (hi > m->nparams)
        hi = m->nparams;
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        if (l->w_len == 0)
            continue;
        float bound = 1.0f / sqrtf((float)l->fan_in);
        size_t a = l->w_off, b = l->b_off + l->b_len; /* weight then bias */
        size_t s = a > lo ? a : lo, e = b < hi ? b : hi;
        for (size_t j = s; j < e; j++)
            params[j - lo] = (2.0f * rng_unit_at(seed, j) - 1.0f) * bound;
    }
}

uint32_t cnn_params_crc(const float *params, size_t n)
{
    uint8_t buf[4096];
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < n; i += sizeof buf / 4) {
        size_t k = n - i < sizeof buf / 4 ? n - i : sizeof buf / 4;
        proto_floats_encode(buf, params + i, k);
        crc = crc32(crc, buf, (uInt)(4 * k));
    }
    return (uint32_t)crc;
}

const char *cnn_param_name(const cnn_model *m, size_t i, char *buf, size_t buflen)
{
    for (int j = 0; j < m->nlayers; j++) {
        const cnn_layer *l = &m->layers[j];
        if (l->w_len && i >= l->w_off && i < l->w_off + l->w_len) {
            snprintf(buf, buflen, "%s.weight", l->name);
            return buf;
        }
        if (l->b_len && i >= l->b_off && i < l->b_off + l->b_len) {
            snprintf(buf, buflen, "%s.bias", l->name);
            return buf;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ layers */

/* Sum of x (n) in 16 independent lanes: the compiler vectorises it without
 * reassociating, and it is not bound by one add's latency. */
static float cnn_sum(const float *restrict x, size_t n)
{
    float acc[16] = { 0 };
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += x[i + l];
    for (; i < n; i++)
        acc[i & 15] += x[i];
    float s = 0;
    for (int l = 0; l < 16; l++)
        s += acc[l];
    return s;
}

/* dst[0..n) = src[0..n) for the short rows of im2col; memcpy with constant
 * sizes is inlined, where a call per 8-float row would dominate. */
static inline void cnn_copy_row(float *restrict dst, const float *restrict src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        memcpy(dst + i, src + i, 8 * sizeof(float));
    if (i + 4 <= n) {
        memcpy(dst + i, src + i, 4 * sizeof(float));
        i += 4;
    }
    for (; i < n; i++)
        dst[i] = src[i];
}

void conv2d_im2col(const float *restrict x, int c, int n, int h, int w, int kh, int kw,
                   float *restrict cols)
{
    int oh = h - kh + 1, ow = w - kw + 1;
    size_t row_len = (size_t)n * oh * ow;
    for (int ci = 0; ci < c; ci++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                float *dst = cols + ((size_t)(ci * kh + i) * kw + j) * row_len;
                for (int ni = 0; ni < n; ni++) {
                    const float *src = x + ((size_t)ci * n + ni) * h * w + (size_t)i * w + j;
                    for (int y = 0; y < oh; y++) {
                        cnn_copy_row(dst, src + (size_t)y * w, ow);
                        dst += ow;
                    }
                }
            }
}

/* dx (C,N,H,W) += col2im(dcols (C*KH*KW, N*OH*OW)); dx must be zeroed. */
static void conv2d_col2im(const float *restrict dcols, int c, int n, int h, int w, int kh,
                          int kw, float *restrict dx)
{
    int oh = h - kh + 1, ow = w - kw + 1;
    size_t row_len = (size_t)n * oh * ow;
    for (int ci = 0; ci < c; ci++)
        for (int i = 0; i < kh; i++)
            for (int j = 0; j < kw; j++) {
                const float *src = dcols + ((size_t)(ci * kh + i) * kw + j) * row_len;
                for (int ni = 0; ni < n; ni++) {
                    float *dst = dx + ((size_t)ci * n + ni) * h * w + (size_t)i * w + j;
                    for (int y = 0; y < oh; y++) {
                        float *d = dst + (size_t)y * w;
                        for (int xx = 0; xx < ow; xx++)
                            d[xx] += src[xx];
                        src += ow;
                    }
                }
            }
}

void conv2d_forward(const kern_ops *k, const float *x, int c, int n, int h, int w,
                    const float *wt, const float *b, int o, int kh, int kw, float *cols,
                    float *y)
{
    int oh = h - kh + 1, ow = w - kw + 1;
    int cols_n = n * oh * ow, ckk = c * kh * kw;
    conv2d_im2col(x, c, n, h, w, kh, kw, cols);
    k->sgemm(0, 0, o, cols_n, ckk, wt, ckk, cols, cols_n, 0.0f, y, cols_n);
    for (int oi = 0; oi < o; oi++) {
        float *row = y + (size_t)oi * cols_n, bv = b[oi];
        for (int j = 0; j < cols_n; j++)
            row[j] += bv;
    }
}

void conv2d_backward(const kern_ops *k, const float *dy, int c, int n, int h, int w,
                     const float *wt, int o, int kh, int kw, const float *cols, float *dw,
                     float *db, float *dx, float *dcols)
{
    int oh = h - kh + 1, ow = w - kw + 1;
    int cols_n = n * oh * ow, ckk = c * kh * kw;
    /* dw (O, CKK) = dy (O, NOHOW) * cols^T */
    k->sgemm(0, 1, o, ckk, cols_n, dy, cols_n, cols, cols_n, 0.0f, dw, ckk);
    for (int oi = 0; oi < o; oi++)
        db[oi] = cnn_sum(dy + (size_t)oi * cols_n, (size_t)cols_n);
    if (dx) {
        /* dcols (CKK, NOHOW) = wt^T (CKK, O) * dy (O, NOHOW) */
        k->sgemm(1, 0, ckk, cols_n, o, wt, ckk, dy, cols_n, 0.0f, dcols, cols_n);
        memset(dx, 0, (size_t)c * n * h * w * sizeof(float));
        conv2d_col2im(dcols, c, n, h, w, kh, kw, dx);
    }
}

/* One max-pool over p planes; inlined with k a constant for the common
 * window sizes so the window loops unroll.  Ties go to the first element in
 * row-major order. */
static inline __attribute__((always_inline)) void
maxpool_forward_k(const float *restrict x, int p, int h, int w, const int k,
                  float *restrict y, int32_t *restrict arg)
{
    int oh = h / k, ow = w / k;
    for (int pi = 0; pi < p; pi++) {
        const float *plane = x + (size_t)pi * h * w;
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                int best = i * k * w + j * k;
                float bv = plane[best];
                for (int a = 0; a < k; a++)
                    for (int b = 0; b < k; b++) {
                        int idx = (i * k + a) * w + j * k + b;
                        if (plane[idx] > bv) {
                            bv = plane[idx];
                            best = idx;
                        }
                    }
                *y++ = bv;
                *arg++ = best;
            }
    }
}

void maxpool_forward(const float *restrict x, int p, int h, int w, int k, float *restrict y,
                     int32_t *restrict arg)
{
    if (k == 2)
        maxpool_forward_k(x, p, h, w, 2, y, arg);
    else if (k == 3)
        maxpool_forward_k(x, p, h, w, 3, y, arg);
    else
        maxpool_forward_k(x, p, h, w, k, y, arg);
}

void maxpool_backward(const float *restrict dy, const int32_t *restrict arg, int p, int h,
                      int w, int k, float *restrict dx)
{
    int ohw = (h / k) * (w / k);
    memset(dx, 0, (size_t)p * h * w * sizeof(float));
    for (int pi = 0; pi < p; pi++) {
        float *plane = dx + (size_t)pi * h * w;
        for (int j = 0; j < ohw; j++)
            plane[arg[j]] += dy[j];
        dy += ohw;
        arg += ohw;
    }
}

void linear_forward(const kern_ops *k, const float *x, int n, int in, const float *wt,
                    const float *b, int out, float *y)
{
    k->sgemm(0, 1, n, out, in, x, in, wt, in, 0.0f, y, out);
    for (int i = 0; i < n; i++)
        k->axpy(y + (size_t)i * out, b, 1.0f, (size_t)out);
}

void linear_backward(const kern_ops *k, const float *dy, const float *x, int n, int in,
                     const float *wt, int out, float *dw, float *db, float *dx)
{
    /* dw (OUT, IN) = dy^T (OUT, N) * x (N, IN) */
    k->sgemm(1, 0, out, in, n, dy, out, x, in, 0.0f, dw, in);
    memset(db, 0, (size_t)out * sizeof(float));
    for (int i = 0; i < n; i++)
        k->axpy(db, dy + (size_t)i * out, 1.0f, (size_t)out);
    if (dx)
        k->sgemm(0, 0, n, in, out, dy, out, wt, in, 0.0f, dx, in);
}

double logsoftmax_nll(const float *logits, const uint8_t *labels, int n, int classes,
                      float scale, float *dlogits, int *correct)
{
    double loss = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        int best = 0;
        float mx = z[0];
        for (int j = 1; j < classes; j++)
            if (z[j] > mx) {
                mx = z[j];
                best = j;
            }
        double sum = 0;
        for (int j = 0; j < classes; j++)
            sum += exp((double)z[j] - mx);
        double lse = mx + log(sum);
        int label = labels[i];
        loss += lse - z[label];
        hits += best == label;
        if (dlogits) {
            float *d = dlogits + (size_t)i * classes;
            for (int j = 0; j < classes; j++)
                d[j] = (float)(exp((double)z[j] - lse) - (j == label)) * scale;
        }
    }
    if (correct)
        *correct = hits;
    return loss;
}

void cnn_chw_to_nf(const float *restrict x, int c, int n, int hw, float *restrict y)
{
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            memcpy(y + ((size_t)ni * c + ci) * hw, x + ((size_t)ci * n + ni) * hw,
                   (size_t)hw * sizeof(float));
}

void cnn_nf_to_chw(const float *restrict x, int c, int n, int hw, float *restrict y)
{
    for (int ci = 0; ci < c; ci++)
        for (int ni = 0; ni < n; ni++)
            memcpy(y + ((size_t)ci * n + ni) * hw, x + ((size_t)ni * c + ci) * hw,
                   (size_t)hw * sizeof(float));
}

/* ------------------------------------------------------------------ engine */

/* One thread's buffers for up to `cap` samples. */
typedef struct cnn_work {
    int cap;
    float *input;                   /* (C,N,H,W) copy of the input when C > 1 */
    float *out[CNN_MAX_LAYERS];     /* output of each layer (ReLU: in place) */
    float *dout[CNN_MAX_LAYERS];    /* gradient of each layer's output */
    float *cols[CNN_MAX_LAYERS];    /* conv: im2col of the input */
    int32_t *arg[CNN_MAX_LAYERS];   /* maxpool: argmax */
    float *flat_in[CNN_MAX_LAYERS]; /* linear after spatial: (N,F) copy of input */
    float *dscratch;                /* dcols / flattened dx scratch */
    float *grad;                    /* (nparams) this thread's gradient */
    double loss;
    int correct;
    int n;
} cnn_work;

struct cnn_engine {
    const cnn_model *m;
    const kern_ops *k;
    int threads, max_batch;
    task_pool *pool;
    cnn_work *work;
    /* the current job */
    const float *params;
    const float *x;
    const uint8_t *y;
    int n;
    float *grad;
    float *logits;
    int want_grad;
    /* cnn_engine_on_grad_ready (one thread only) */
    cnn_grad_ready_fn ready_fn;
    void *ready_ctx;
    size_t ready_from; /* grad[ready_from, nparams) is final and copied out */
};

static void *cnn_alloc(size_t nfloats)
{
    void *p = NULL;
    size_t bytes = (nfloats ? nfloats : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

static void cnn_work_free(const cnn_model *m, cnn_work *w)
{
    free(w->input);
    for (int i = 0; i < m->nlayers; i++) {
        if (m->layers[i].kind != CNN_LAYER_RELU) {
            free(w->out[i]);
            free(w->dout[i]);
        }
        free(w->cols[i]);
        free(w->arg[i]);
        free(w->flat_in[i]);
    }
    free(w->dscratch);
    free(w->grad);
    memset(w, 0, sizeof(*w));
}

static int cnn_work_init(const cnn_model *m, cnn_work *w, int cap)
{
    memset(w, 0, sizeof(*w));
    w->cap = cap;
    size_t scratch = 0;
    size_t in_size = (size_t)m->in_c * m->in_h * m->in_w * cap;
    if (m->in_c > 1 && m->layers[0].kind != CNN_LAYER_LINEAR) {
        if (!(w->input = cnn_alloc(in_size)))
            return -1;
    }
    int spatial = m->layers[0].kind != CNN_LAYER_LINEAR;
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        size_t out_size = (size_t)l->out_c * l->out_h * l->out_w * cap;
        size_t in_sz = (size_t)l->in_c * l->in_h * l->in_w * cap;
        if (l->kind == CNN_LAYER_RELU && i > 0) {
            w->out[i] = w->out[i - 1];
            w->dout[i] = w->dout[i - 1];
            continue;
        }
        if (l->kind == CNN_LAYER_RELU) { /* a model starting with ReLU */
            if (!(w->out[i] = cnn_alloc(out_size)) || !(w->dout[i] = cnn_alloc(out_size)))
                return -1;
            continue;
        }
        if (!(w->out[i] = cnn_alloc(out_size)) || !(w->dout[i] = cnn_alloc(out_size)))
            return -1;
        if (l->kind == CNN_LAYER_CONV) {
            size_t cs = (size_t)l->fan_in * l->out_h * l->out_w * cap;
            if (!(w->cols[i] = cnn_alloc(cs)))
                return -1;
            if (cs > scratch)
                scratch = cs;
        } else if (l->kind == CNN_LAYER_MAXPOOL) {
            if (!(w->arg[i] = cnn_alloc(out_size)))
                return -1;
        } else if (l->kind == CNN_LAYER_LINEAR) {
            if (spatial) {
                if (!(w->flat_in[i] = cnn_alloc(in_sz)))
                    return -1;
                if (in_sz > scratch)
                    scratch = in_sz;
            }
            spatial = 0;
        }
    }
    if (!(w->dscratch = cnn_alloc(scratch)) || !(w->grad = cnn_alloc(m->nparams)))
        return -1;
    return 0;
}

/* Forward over w->n samples of x (N, C*H*W); returns the logits. */
static const float *cnn_forward(const cnn_model *m, const kern_ops *k, cnn_work *w,
                                const float *params, const float *x)
{
    int n = w->n;
    const float *in = x;
    if (w->input) {
        cnn_nf_to_chw(x, m->in_c, n, m->in_h * m->in_w, w->input);
        in = w->input;
    }
    int spatial = m->layers[0].kind != CNN_LAYER_LINEAR;
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        float *out = w->out[i];
        switch (l->kind) {
        case CNN_LAYER_CONV:
            conv2d_forward(k, in, l->in_c, n, l->in_h, l->in_w, params + l->w_off,
                           params + l->b_off, l->out_c, l->k, l->k, w->cols[i], out);
            break;
        case CNN_LAYER_MAXPOOL:
            maxpool_forward(in, l->in_c * n, l->in_h, l->in_w, l->k, out, w->arg[i]);
            break;
        case CNN_LAYER_RELU: {
            size_t sz = (size_t)l->out_c * l->out_h * l->out_w * n;
            if (out != in)
                memcpy(out, in, sz * sizeof(float));
            k->relu_forward(out, sz);
            break;
        }
        case CNN_LAYER_LINEAR:
            if (spatial) {
                const cnn_layer *p = i > 0 ? &m->layers[i - 1] : NULL;
                int c = p ? p->out_c : m->in_c;
                int hw = p ? p->out_h * p->out_w : m->in_h * m->in_w;
                if (w->flat_in[i]) {
                    cnn_chw_to_nf(in, c, n, hw, w->flat_in[i]);
                    in = w->flat_in[i];
                }
                spatial = 0;
            }
            linear_forward(k, in, n, l->in_c, params + l->w_off, params + l->b_off,
                           l->out_c, out);
            break;
        default:
            break;
        }
        in = out;
    }
    return in;
}

/* One thread: layer l's gradient is done, and with it everything above
 * (layers hold consecutive ranges, backward runs from the last): copy it
 * out and tell the caller.  Not for the first layer's: then the whole
 * gradient is done, and cnn_engine_grad returns. */
static void cnn_grad_ready(cnn_engine *e, const cnn_work *w, const cnn_layer *l)
{
    size_t from = l->w_off;
    if (!e->ready_fn || e->threads != 1 || from == 0 || from >= e->ready_from)
        return;
    memcpy(e->grad + from, w->grad + from, (e->ready_from - from) * sizeof(float));
    e->ready_from = from;
    e->ready_fn(e->ready_ctx, from);
}

/* Backward from dlogits (already in w->dout[last]); fills w->grad. */
static void cnn_backward(cnn_engine *e, cnn_work *w, const float *x)
{
    const cnn_model *m = e->m;
    const kern_ops *k = e->k;
    const float *params = e->params;
    int n = w->n;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        const cnn_layer *l = &m->layers[i];
        const float *in = i > 0 ? w->out[i - 1] : (w->input ? w->input : x);
        float *din = i > 0 ? w->dout[i - 1] : NULL;
        const float *dy = w->dout[i];
        switch (l->kind) {
        case CNN_LAYER_CONV:
            conv2d_backward(k, dy, l->in_c, n, l->in_h, l->in_w, params + l->w_off,
                            l->out_c, l->k, l->k, w->cols[i], w->grad + l->w_off,
                            w->grad + l->b_off, din, w->dscratch);
            cnn_grad_ready(e, w, l);
            break;
        case CNN_LAYER_MAXPOOL:
            if (din)
                maxpool_backward(dy, w->arg[i], l->in_c * n, l->in_h, l->in_w, l->k, din);
            break;
        case CNN_LAYER_RELU: {
            size_t sz = (size_t)l->out_c * l->out_h * l->out_w * n;
            if (din && din != dy)
                memcpy(din, dy, sz * sizeof(float));
            if (din)
                k->relu_backward(din, w->out[i], sz);
            break;
        }
        case CNN_LAYER_LINEAR:
            if (w->flat_in[i]) {
                const cnn_layer *p = &m->layers[i - 1];
                linear_backward(k, dy, w->flat_in[i], n, l->in_c, params + l->w_off, l->out_c,
                                w->grad + l->w_off, w->grad + l->b_off, w->dscratch);
                cnn_nf_to_chw(w->dscratch, p->out_c, n, p->out_h * p->out_w, din);
            } else {
                linear_backward(k, dy, in, n, l->in_c, params + l->w_off, l->out_c,
                                w->grad + l->w_off, w->grad + l->b_off, din);
            }
            cnn_grad_ready(e, w, l);
            break;
        default:
            break;
        }
    }
}

cnn_engine *cnn_engine_new(const cnn_model *m, const kern_ops *k, int threads, int max_batch,
                           char *err, size_t errlen)
{
    if (threads < 1 || threads > 64) {
        snprintf(err, errlen, "threads must be 1..64 (got %d)", threads);
        return NULL;
    }
    if (max_batch < 1) {
        snprintf(err, errlen, "batch size must be at least 1 (got %d)", max_batch);
        return NULL;
    }
    if (m->layers[0].kind == CNN_LAYER_RELU && m->in_c > 1) {
        snprintf(err, errlen, "model %s: cannot start with ReLU on multi-channel input", m->name);
        return NULL;
    }
    cnn_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->m = m;
    e->k = k;
    e->threads = threads;
    e->max_batch = max_batch;
    e->work = calloc((size_t)threads, sizeof(cnn_work));
    if (!e->work) {
        snprintf(err, errlen, "out of memory");
        free(e);
        return NULL;
    }
    int cap = (max_batch + threads - 1) / threads;
    for (int t = 0; t < threads; t++)
        if (cnn_work_init(m, &e->work[t], cap) != 0) {
            snprintf(err, errlen, "out of memory for %d threads x %d samples of %s",
                     threads, cap, m->name);
            cnn_engine_free(e);
            return NULL;
        }
    e->pool = pool_new(threads, err, errlen);
    if (!e->pool) {
        cnn_engine_free(e);
        return NULL;
    }
    return e;
}

void cnn_engine_free(cnn_engine *e)
{
    if (!e)
        return;
    pool_free(e->pool);
    if (e->work)
        for (int t = 0; t < e->threads; t++)
            cnn_work_free(e->m, &e->work[t]);
    free(e->work);
    free(e);
}

/* Samples [lo, hi) of n for thread t of T. */
static void cnn_split(int n, int t, int nt, int *lo, int *hi)
{
    *lo = (int)((long)n * t / nt);
    *hi = (int)((long)n * (t + 1) / nt);
}

static void cnn_job_cb(void *arg, int t, int nt)
{
    cnn_engine *e = arg;
    const cnn_model *m = e->m;
    cnn_work *w = &e->work[t];
    int lo, hi;
    cnn_split(e->n, t, nt, &lo, &hi);
    w->n = hi - lo;
    w->loss = 0;
    w->correct = 0;
    if (w->n == 0)
        return;
    size_t in_len = (size_t)m->in_c * m->in_h * m->in_w;
    const float *x = e->x + (size_t)lo * in_len;
    const float *logits = cnn_forward(m, e->k, w, e->params, x);
    if (e->logits) {
        memcpy(e->logits + (size_t)lo * m->classes, logits,
               (size_t)w->n * m->classes * sizeof(float));
        return;
    }
    float *dlogits = e->want_grad ? w->dout[m->nlayers - 1] : NULL;
    w->loss = logsoftmax_nll(logits, e->y + lo, w->n, m->classes, 1.0f / (float)e->n, dlogits,
                             &w->correct);
    if (e->want_grad)
        cnn_backward(e, w, x);
}

/* grad[range of thread t] = sum over threads with samples of their grads. */
static void cnn_reduce_cb(void *arg, int t, int nt)
{
    cnn_engine *e = arg;
    size_t np = e->m->nparams;
    /* ranges aligned to 16 floats */
    size_t chunk = ((np + (size_t)nt - 1) / (size_t)nt + 15) & ~(size_t)15;
    size_t lo = chunk * (size_t)t, hi = lo + chunk;
    if (hi > e->ready_from) /* one thread: copied as the layers finished */
        hi = e->ready_from;
    if (lo >= hi)
        return;
    int first = 1;
    for (int s = 0; s < e->threads; s++) {
        if (e->work[s].n == 0)
            continue;
        if (first)
            memcpy(e->grad + lo, e->work[s].grad + lo, (hi - lo) * sizeof(float));
        else
            e->k->axpy(e->grad + lo, e->work[s].grad + lo, 1.0f, hi - lo);
        first = 0;
    }
}

void cnn_engine_grad(cnn_engine *e, const float *params, const float *x, const uint8_t *y,
                     int n, float *grad, double *loss_sum, int *correct)
{
    e->params = params;
    e->x = x;
    e->y = y;
    e->n = n;
    e->grad = grad;
    e->logits = NULL;
    e->want_grad = 1;
    e->ready_from = e->m->nparams;
    pool_run(e->pool, cnn_job_cb, e);
    pool_run(e->pool, cnn_reduce_cb, e);
    double loss = 0;
    int hits = 0;
    for (int t = 0; t < e->threads; t++) {
        loss += e->work[t].loss;
        hits += e->work[t].correct;
    }
    if (loss_sum)
        *loss_sum = loss;
    if (correct)
        *correct = hits;
}

void cnn_engine_on_grad_ready(cnn_engine *e, cnn_grad_ready_fn fn, void *ctx)
{
    e->ready_fn = fn;
    e->ready_ctx = ctx;
}

void cnn_engine_eval(cnn_engine *e, const float *params, const float *x, const uint8_t *y,
                     size_t n, double *loss_sum, size_t *correct)
{
    const cnn_model *m = e->m;
    size_t in_len = (size_t)m->in_c * m->in_h * m->in_w;
    double loss = 0;
    size_t hits = 0;
    e->params = params;
    e->logits = NULL;
    e->want_grad = 0;
    for (size_t off = 0; off < n; off += (size_t)e->max_batch) {
        size_t cnt = n - off < (size_t)e->max_batch ? n - off : (size_t)e->max_batch;
        e->x = x + off * in_len;
        e->y = y + off;
        e->n = (int)cnt;
        pool_run(e->pool, cnn_job_cb, e);
        for (int t = 0; t < e->threads; t++) {
            loss += e->work[t].loss;
            hits += (size_t)e->work[t].correct;
        }
    }
    if (loss_sum)
        *loss_sum = loss;
    if (correct)
        *correct = hits;
}

void cnn_engine_logits(cnn_engine *e, const float *params, const float *x, int n, float *logits)
{
    e->params = params;
    e->x = x;
    e->y = NULL;
    e->n = n;
    e->logits = logits;
    e->want_grad = 0;
    pool_run(e->pool, cnn_job_cb, e);
    e->logits = NULL;
}
