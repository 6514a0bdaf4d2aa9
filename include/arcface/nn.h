/* The backbone's layers: forward and backward passes over buffers the caller
 * owns, in the style of llm.c. No function here allocates; each takes its
 * scratch space from a workspace the caller sized with the matching
 * *_workspace() function when the network was built.
 *
 * Layout. Activations are stored channel-major, (C, B, H, W) ("CNHW"), not
 * PyTorch's (B, C, H, W): every channel's values over the whole batch are one
 * contiguous row, so batch-norm statistics are plain row reductions and a
 * convolution over the whole batch is one GEMM, out(C_out, B*OH*OW) =
 * W(C_out, K) x col(K, B*OH*OW). Flat activations (after flatten) are
 * (F, B), the same thing with H = W = 1. Embeddings handed to and from the
 * trainer are (B, D) row-major, the usual layout.
 *
 * Gradients. Parameter gradients are always ADDED into (one zero_grad per
 * step clears them). Input gradients take a flag `dx_accum`: 0 overwrites dx,
 * 1 adds into it, so a tensor used twice (a residual shortcut) receives its
 * second contribution without a memset of the whole buffer first.
 *
 * Threads. Every function takes `nthreads` and runs an OpenMP team of that
 * size; GEMMs inside are single-threaded OpenBLAS calls, one per thread, so
 * the functions set OpenBLAS to one thread while they run and restore the
 * caller's setting on return. Results do not depend on the thread count
 * except for the summation order of weight gradients (rounding only). */
#ifndef ARCFACE_NN_H
#define ARCFACE_NN_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/cpu.h"
#include "arcface/status.h"

/* ---- Distributed-training context ------------------------------------- */

/* Sums buf[0..n) element-wise over all workers, in place. Every worker calls
 * it the same number of times in the same order (once per batch-norm layer in
 * forward, once in backward), so any blocking collective works. */
typedef af_status (*af_nn_allreduce_fn)(void *user, double *buf, size_t n);
/* Called during backward once the parameter gradients in [begin, end) of the
 * flat gradient array are final; ranges arrive from the end of the array
 * towards its start, contiguous and without overlap. */
typedef void (*af_nn_grads_ready_fn)(void *user, size_t begin, size_t end);

/* What a forward/backward needs to know about the other workers. A NULL
 * context, or a zeroed one, means a single process. All fields except
 * row_offset must be equal on all workers. */
typedef struct {
    af_nn_allreduce_fn allreduce;     /* NULL: statistics are local */
    af_nn_grads_ready_fn grads_ready; /* NULL: not called */
    void *user;                       /* passed to both hooks */
    int64_t global_batch;  /* samples over all workers; 0 means this call's B */
    int64_t row_offset;    /* global row of this worker's local row 0 (per rank) */
    uint64_t seed;         /* dropout masks are a function of (seed, step, row, element) */
    uint64_t step;
} af_nn_ctx;

/* ---- Conv2d ------------------------------------------------------------- */

typedef enum {
    AF_CONV2D_ALGO_GEMM1X1 = 0, /* 1x1, stride 1, no padding: the input is already the GEMM operand */
    AF_CONV2D_ALGO_IM2COL,      /* groups == 1: tiled im2col + sgemm */
    AF_CONV2D_ALGO_DIRECT,      /* grouped and depthwise: direct loops over planes */
    AF_CONV2D_ALGO_WINOGRAD,    /* 3x3, stride 1, padding 1, groups 1, >= 16 channels: F(2x2, 3x3) */
    AF_CONV2D_ALGO_DNNL,        /* oneDNN's primitives (nn/conv_dnnl.c): layers of the shapes measured faster,
                                   on AVX-512 CPUs, when built with libdnnl (float32, and bf16 unless 1x1); any
                                   other call (a bias, a bf16 1x1 layer) runs af_conv2d_own_algo's algorithm */
} af_conv2d_algo;

/* A convolution's geometry; af_conv2d_init fills the derived fields and picks
 * the fastest algorithm. A caller may set `algo` to another algorithm that
 * supports the geometry (af_conv2d_algo_ok) before sizing the workspace; the
 * tests do, to check every algorithm against the others. */
typedef struct {
    int cin, cout, kh, kw, sh, sw, ph, pw, groups;
    int h, w, oh, ow;     /* input and output plane */
    af_conv2d_algo algo;
    int flip_dx;          /* dx computed as a stride-1 convolution of dy with the flipped kernel */
    af_precision prec;    /* of the GEMMs (FP32 from init; BF16 rounds their operands, see arcface/cpu.h);
                             the direct algorithm always computes in float32 */
} af_conv2d;

af_status af_conv2d_init(af_conv2d *c, int cin, int cout, int h, int w, int kh, int kw, int sh, int sw,
                         int ph, int pw, int groups);
int af_conv2d_algo_ok(const af_conv2d *c, af_conv2d_algo algo);
const char *af_conv2d_algo_name(af_conv2d_algo algo);
/* The algorithm of our own that runs the layer when oneDNN does not. */
af_conv2d_algo af_conv2d_own_algo(const af_conv2d *c);
/* Scratch floats forward+backward need for batches up to max_batch. */
size_t af_conv2d_workspace(const af_conv2d *c, int max_batch, int nthreads);
/* Multiply-accumulates per sample in the forward pass. */
double af_conv2d_macs(const af_conv2d *c);

/* y = conv(x, w) + bias.
 * x (cin, B, h, w); w (cout, cin/groups, kh, kw); bias (cout) or NULL; y (cout, B, oh, ow). */
void af_conv2d_forward(const af_conv2d *c, int B, const float *x, const float *w, const float *bias, float *y,
                       float *ws, int nthreads);
/* dw (like w) += dL/dw; dbias (cout, may be NULL) += dL/dbias; dx (like x, may be
 * NULL when the input needs no gradient) = or += dL/dx. */
void af_conv2d_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *dbias, float *ws, int nthreads);

/* ---- BatchNorm2d / BatchNorm1d, with optional fused PReLU or residual add ---- */

/* y = BN(x) [then PReLU(y) with per-channel slopes] [then y += r].
 * BatchNorm1d over (F, B) is the same layer with hw = 1. */
typedef struct {
    int c, hw;
    float eps;       /* 1e-5, as PyTorch */
    float momentum;  /* 0.1, as PyTorch */
    int prelu;       /* fuse PReLU after the affine step */
    int residual;    /* fuse a residual add after everything else */
} af_batchnorm;

typedef struct {
    const float *gamma;     /* (c) */
    const float *beta;      /* (c) */
    const float *alpha;     /* (c) PReLU slopes, when prelu */
    float *running_mean;    /* (c), updated in training mode */
    float *running_var;     /* (c), unbiased, updated in training mode */
    int64_t *num_batches_tracked;
} af_bn_params;

typedef struct {
    float *dgamma, *dbeta, *dalpha; /* (c) each; NULL: that parameter is not trained */
} af_bn_grads;

/* Training mode (train != 0): per-channel sums over the local batch are summed
 * over workers through ctx->allreduce, normalisation uses the global count
 * ctx->global_batch * hw, and the running statistics are updated with the
 * global mean and unbiased variance. save (2, c) receives mean and 1/std for
 * the backward pass; acc is (2, c) doubles of scratch. Eval mode uses the
 * running statistics. x, r, y: (c, B, hw). */
af_status af_batchnorm_forward(const af_batchnorm *bn, int B, int train, const float *x, const float *r, float *y,
                               const af_bn_params *p, float *save, double *acc, const af_nn_ctx *ctx, int nthreads);
/* Backward of a training-mode forward. dgamma/dbeta/dalpha receive this
 * worker's partial sums (the trainer sums them over workers with all other
 * parameter gradients); dx uses the global reductions. dr (the residual's
 * gradient) = or += dy. */
af_status af_batchnorm_backward(const af_batchnorm *bn, int B, const float *x, const float *dy, float *dx,
                                int dx_accum, float *dr, int dr_accum, const af_bn_params *p, const af_bn_grads *g,
                                const float *save, double *acc, const af_nn_ctx *ctx, int nthreads);

/* ---- PReLU, residual add (unfused forms) -------------------------------- */

/* x, y: (c, B, hw); alpha (c). */
void af_prelu_forward(int c, int B, int hw, const float *x, const float *alpha, float *y, int nthreads);
void af_prelu_backward(int c, int B, int hw, const float *x, const float *alpha, const float *dy, float *dx,
                       int dx_accum, float *dalpha, int nthreads);
/* y = a + b over n floats; the backward is a copy of dy into both inputs. */
void af_add_forward(size_t n, const float *a, const float *b, float *y, int nthreads);
void af_add_backward(size_t n, const float *dy, float *da, int da_accum, float *db, int db_accum, int nthreads);

/* ---- Flatten, dropout, Linear ------------------------------------------- */

/* (c, B, hw) -> (c*hw, B), feature index c*hw + s exactly as torch.flatten of NCHW. */
void af_flatten_forward(int c, int B, int hw, const float *x, float *y, int nthreads);
void af_flatten_backward(int c, int B, int hw, const float *dy, float *dx, int dx_accum, int nthreads);

/* Inverted dropout over (f, B): y = x * keep / (1 - p), keep = (u >= p) where u is
 * the element-th uniform draw of af_rng keyed (seed, AF_RNG_STREAM_DROPOUT,
 * step, row_offset + b + (salt << 48)). The mask is thus a pure function of
 * (seed, step, global row, element): a batch split over workers draws the same
 * masks as the whole batch in one process. p in [0, 1). */
void af_dropout_forward(int f, int B, float p, const af_nn_ctx *ctx, uint64_t salt, const float *x, float *y,
                        int nthreads);
void af_dropout_backward(int f, int B, float p, const af_nn_ctx *ctx, uint64_t salt, const float *dy, float *dx,
                         int dx_accum, int nthreads);

/* y (fout, B) = w (fout, fin) x (fin, B) + bias (fout, may be NULL). */
void af_linear_forward(int fin, int fout, int B, const float *x, const float *w, const float *bias, float *y,
                       int nthreads);
void af_linear_backward(int fin, int fout, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *dbias, int nthreads);
/* The same with the GEMMs in precision `prec` (the two above are FP32). */
void af_linear_forward_prec(af_precision prec, int fin, int fout, int B, const float *x, const float *w,
                            const float *bias, float *y, int nthreads);
void af_linear_backward_prec(af_precision prec, int fin, int fout, int B, const float *x, const float *w,
                             const float *dy, float *dx, int dx_accum, float *dw, float *dbias, int nthreads);

/* ---- L2 normalisation of embeddings: af_l2norm_forward / af_l2norm_backward,
 * shared with the margin core, are declared in arcface/l2norm.h. */
#include "arcface/l2norm.h"

#endif
