/* cnn.h - the CNN engine: models, the flat parameter vector, layers, and a
 * multi-threaded forward/backward over a minibatch.
 *
 * Parameter layout (docs/model.md): all parameters live in ONE flat float32
 * vector, layer by layer in model order, each parameterised layer
 * contributing its weight then its bias, in PyTorch's shapes and order
 * (conv weight (O,C,KH,KW), linear weight (OUT,IN)).  Gradients use the same
 * layout.  A parameter server shards contiguous ranges of this vector.
 *
 * Activation layout inside the engine: convolutional tensors are (C,N,H,W)
 * ("CNHW": the batch inside the channel) so that a convolution over the
 * whole minibatch is one GEMM; linear layers see (N,F) with F in PyTorch's
 * (C,H,W) flatten order.
 */
#ifndef PSD_CNN_H
#define PSD_CNN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define CNN_MAX_LAYERS 16
#define CNN_NAME_MAX 32

typedef enum cnn_layer_kind {
    CNN_LAYER_CONV = 0, /* conv2d, valid padding, stride 1 */
    CNN_LAYER_MAXPOOL,  /* k x k window, stride k, floor */
    CNN_LAYER_RELU,
    CNN_LAYER_LINEAR,
    CNN_LAYER_KIND_MAX
} cnn_layer_kind;

/* One entry of a model's definition. */
typedef struct cnn_layer_spec {
    cnn_layer_kind kind;
    int out;  /* conv: output channels; linear: output features */
    int k;    /* conv: kernel side; maxpool: window side */
} cnn_layer_spec;

/* A model definition: adding a model is one entry in the table in cnn.c.
 * Every model ends in log-softmax with NLL loss over the last layer's
 * outputs (which must be a linear layer). */
typedef struct cnn_model_spec {
    const char *name;
    int in_c, in_h, in_w;
    int nlayers;
    cnn_layer_spec layers[CNN_MAX_LAYERS];
} cnn_model_spec;

/* A layer with its shapes and parameter offsets resolved. */
typedef struct cnn_layer {
    cnn_layer_kind kind;
    int in_c, in_h, in_w;    /* linear: in_c = features, in_h = in_w = 1 */
    int out_c, out_h, out_w; /* linear: out_c = features */
    int k;
    int fan_in;              /* parameterised layers */
    size_t w_off, w_len;     /* weight range in the flat vector */
    size_t b_off, b_len;     /* bias range */
    char name[CNN_NAME_MAX]; /* e.g. "conv1", "fc2", "pool1" */
} cnn_layer;

typedef struct cnn_model {
    const char *name;
    int nlayers;
    cnn_layer layers[CNN_MAX_LAYERS];
    int in_c, in_h, in_w;
    int classes;
    size_t nparams;
} cnn_model;

/* Resolve a model by name ("ray", "lenet").  Returns 0, or -1 with a message
 * listing the known models. */
int cnn_model_init(cnn_model *m, const char *name, char *err, size_t errlen);

/* Resolve a model from an explicit definition (tests).  Returns 0 or -1. */
int cnn_model_from_spec(cnn_model *m, const cnn_model_spec *spec, char *err, size_t errlen);

/* Names of the built-in models, comma-separated, for --help. */
const char *cnn_model_names(void);

/* Floating-point operations of one training step (forward + backward) and of
 * one forward pass, per sample, counting a multiply-add as 2. */
double cnn_model_train_flops(const cnn_model *m);
double cnn_model_forward_flops(const cnn_model *m);

/* Initialise params[lo..hi) of the flat vector as a fresh model seeded with
 * `seed` would hold them: PyTorch's default scheme (Kaiming-uniform with
 * a = sqrt(5) for weights, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the
 * same bound for biases).  Each value depends only on (seed, index), so any
 * range can be initialised on its own.  `params` points at element lo. */
void cnn_params_init(const cnn_model *m, uint64_t seed, float *params, size_t lo, size_t hi);

/* CRC-32 (zlib's) of n weights as fp32 little-endian bytes, the way the
 * protocol sends them: what a PULL with PROTO_FLAG_SEED says of the initial
 * weights it holds (docs/protocol.md, PULL). */
uint32_t cnn_params_crc(const float *params, size_t n);

/* Name of the parameter tensor holding flat index i, e.g. "conv2.weight",
 * or NULL if i is out of range. */
const char *cnn_param_name(const cnn_model *m, size_t i, char *buf, size_t buflen);

/* ------------------------------------------------------------------ layers
 * The building blocks, usable on their own (tests check each against finite
 * differences).  Shapes are given on every tensor argument. */

/* im2col for a CNHW input: x (C,N,H,W) -> cols (C*KH*KW, N*OH*OW). */
void conv2d_im2col(const float *restrict x, int c, int n, int h, int w, int kh, int kw,
                   float *restrict cols);

/* y (O,N,OH,OW) = conv(x (C,N,H,W), wt (O,C,KH,KW)) + b (O).
 * cols (C*KH*KW, N*OH*OW) receives x's im2col (kept for the backward pass). */
void conv2d_forward(const kern_ops *k, const float *x, int c, int n, int h, int w,
                    const float *wt, const float *b, int o, int kh, int kw,
                    float *cols, float *y);

/* Given dy (O,N,OH,OW) and cols from the forward pass: dw (O,C,KH,KW) and
 * db (O) are overwritten; if dx (C,N,H,W) is not NULL it is overwritten too,
 * using dcols (C*KH*KW, N*OH*OW) as scratch. */
void conv2d_backward(const kern_ops *k, const float *dy, int c, int n, int h, int w,
                     const float *wt, int o, int kh, int kw, const float *cols,
                     float *dw, float *db, float *dx, float *dcols);

/* y (P, H/k, W/k) = max over k x k windows of x (P,H,W) (P planes); arg
 * (P, H/k, W/k) receives each maximum's offset within its plane. */
void maxpool_forward(const float *restrict x, int p, int h, int w, int k,
                     float *restrict y, int32_t *restrict arg);

/* dx (P,H,W) = scatter of dy (P,H/k,W/k) to the argmax positions (dx is
 * overwritten). */
void maxpool_backward(const float *restrict dy, const int32_t *restrict arg, int p, int h,
                      int w, int k, float *restrict dx);

/* y (N,OUT) = x (N,IN) * wt^T (OUT,IN) + b (OUT). */
void linear_forward(const kern_ops *k, const float *x, int n, int in, const float *wt,
                    const float *b, int out, float *y);

/* From dy (N,OUT): dw (OUT,IN), db (OUT) overwritten; dx (N,IN) overwritten
 * unless NULL. */
void linear_backward(const kern_ops *k, const float *dy, const float *x, int n, int in,
                     const float *wt, int out, float *dw, float *db, float *dx);

/* Log-softmax + NLL: logits (N,C), labels (N).  Returns the SUM of the
 * per-sample losses; if dlogits (N,C) is not NULL it receives
 * scale * d(sum loss)/d(logits) (scale = 1/batch gives the mean's gradient).
 * *correct (if not NULL) gets the number of argmax hits. */
double logsoftmax_nll(const float *logits, const uint8_t *labels, int n, int classes,
                      float scale, float *dlogits, int *correct);

/* (C,N,HW) <-> (N,C*HW) */
void cnn_chw_to_nf(const float *restrict x, int c, int n, int hw, float *restrict y);
void cnn_nf_to_chw(const float *restrict x, int c, int n, int hw, float *restrict y);

/* ------------------------------------------------------------------ engine
 * Forward/backward over a minibatch, split across threads. */
typedef struct cnn_engine cnn_engine;

/* Create an engine for model m on kernel table k with `threads` threads
 * (1..64) and batches of up to max_batch samples.  Returns NULL with a
 * message on failure.  The engine keeps a pointer to m. */
cnn_engine *cnn_engine_new(const cnn_model *m, const kern_ops *k, int threads, int max_batch,
                           char *err, size_t errlen);
void cnn_engine_free(cnn_engine *e);

/* Mean gradient of the loss over the minibatch x (n, in_c*in_h*in_w), y (n),
 * 1 <= n <= max_batch, at params (nparams): grad (nparams) is overwritten.
 * *loss_sum gets the summed loss, *correct the number of argmax hits (either
 * pointer may be NULL). */
void cnn_engine_grad(cnn_engine *e, const float *params, const float *x, const uint8_t *y,
                     int n, float *grad, double *loss_sum, int *correct);

/* Optional: with one thread, cnn_engine_grad calls fn(ctx, from) during
 * the backward pass each time a layer's gradient is done: grad[from ..
 * nparams) then holds its final values (a layer's parameters follow the
 * layer before's, and backward runs from the last layer), 0 < from <
 * nparams.  workerd sends a shard's slice of the push as soon as it is
 * final.  With more threads the gradient is summed over them at the end,
 * and fn is not called.  NULL turns it off. */
typedef void (*cnn_grad_ready_fn)(void *ctx, size_t from);
void cnn_engine_on_grad_ready(cnn_engine *e, cnn_grad_ready_fn fn, void *ctx);

/* Forward only over any number of samples (chunked by max_batch); sums the
 * loss and counts correct predictions. */
void cnn_engine_eval(cnn_engine *e, const float *params, const float *x, const uint8_t *y,
                     size_t n, double *loss_sum, size_t *correct);

/* Forward only, logits (n, classes) for n <= max_batch samples (tests). */
void cnn_engine_logits(cnn_engine *e, const float *params, const float *x, int n, float *logits);

#endif
