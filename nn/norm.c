/* Batch normalisation (with the fused PReLU and residual-add variants the
 * backbones use after almost every convolution), standalone PReLU, and L2
 * normalisation of embeddings.
 *
 * Batch statistics are synchronised: each worker sums x and x^2 per channel
 * over its own rows in double precision, the caller's allreduce hook adds the
 * sums over workers, and the mean and variance come from the global count.
 * The backward pass reduces sum(dy) and sum(dy * xhat) the same way, so W
 * workers holding B/W rows each compute what one process holding all B rows
 * would. Nothing but the two per-channel sums travels.
 *
 * The fused layers keep only the convolution output x: the normalised value
 * and the PReLU input are recomputed from x, mean and 1/std in the backward
 * pass, which costs a multiply-add per element and saves a full activation
 * buffer per layer. */
#include "arcface/nn.h"

#include <math.h>
#include <string.h>

#include "kern.h"
#include "nn_internal.h"

static af_status bn_allreduce(const af_nn_ctx *ctx, double *acc, size_t n, const char *what)
{
    if (!ctx || !ctx->allreduce) return AF_OK;
    af_status st = ctx->allreduce(ctx->user, acc, n);
    if (st) return af_error_wrap(st, "batchnorm: allreduce of %s", what);
    return AF_OK;
}

static int64_t bn_global_rows(const af_nn_ctx *ctx, int B)
{
    return ctx && ctx->global_batch > 0 ? ctx->global_batch : B;
}

af_status af_batchnorm_forward(const af_batchnorm *bn, int B, int train, const float *x, const float *r, float *y,
                               const af_bn_params *p, float *save, double *acc, const af_nn_ctx *ctx, int nthreads)
{
    const int C = bn->c;
    const size_t n = (size_t)B * bn->hw;
    if (nthreads < 1) nthreads = 1;
    const nn_kern_table *K = nn_kern();
    if (train) {
        const double count = (double)bn_global_rows(ctx, B) * bn->hw;
        if (count < 2)
            return af_errorf(AF_ERR_ARG, "batchnorm: training needs more than one value per channel (global batch %lld x %d)",
                             (long long)bn_global_rows(ctx, B), bn->hw);
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int c = 0; c < C; c++) K->bn_sums(x + c * n, n, &acc[c], &acc[C + c]);
        af_status st = bn_allreduce(ctx, acc, 2 * (size_t)C, "sum(x), sum(x^2)");
        if (st) return st;
        const double m = bn->momentum, unbias = count / (count - 1.0);
        for (int c = 0; c < C; c++) {
            double mean = acc[c] / count;
            double var = acc[C + c] / count - mean * mean;
            if (var < 0.0) var = 0.0;
            save[c] = (float)mean;
            save[C + c] = (float)(1.0 / sqrt(var + bn->eps));
            p->running_mean[c] = (float)((1.0 - m) * p->running_mean[c] + m * mean);
            p->running_var[c] = (float)((1.0 - m) * p->running_var[c] + m * var * unbias);
        }
        if (p->num_batches_tracked) *p->num_batches_tracked += 1;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (train) {
            mean = save[c];
            invstd = save[C + c];
        } else {
            mean = p->running_mean[c];
            invstd = (float)(1.0 / sqrt((double)p->running_var[c] + bn->eps));
        }
        const float scale = p->gamma[c] * invstd, shift = p->beta[c] - mean * scale;
        const float a = bn->prelu ? p->alpha[c] : 1.0f;
        K->bn_apply(x + c * n, bn->residual ? r + c * n : NULL, y + c * n, n, scale, shift, a, bn->prelu);
    }
    return AF_OK;
}

af_status af_batchnorm_backward(const af_batchnorm *bn, int B, const float *x, const float *dy, float *dx,
                                int dx_accum, float *dr, int dr_accum, const af_bn_params *p, const af_bn_grads *g,
                                const float *save, double *acc, const af_nn_ctx *ctx, int nthreads)
{
    const int C = bn->c;
    const size_t n = (size_t)B * bn->hw;
    const double count = (double)bn_global_rows(ctx, B) * bn->hw;
    if (nthreads < 1) nthreads = 1;
    const nn_kern_table *K = nn_kern();
    /* pass 1: local sums of the gradient reaching the affine output, and the
     * residual's gradient (a plain copy of dy) */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < C; c++) {
        const float mean = save[c], invstd = save[C + c];
        const float gm = p->gamma[c], bt = p->beta[c];
        const float scale = gm * invstd, shift = bt - mean * scale;
        double sd, sdx, sda;
        K->bn_bwd_sums(x + c * n, dy + c * n, n, mean, invstd, scale, shift, bn->prelu ? p->alpha[c] : 1.0f,
                       bn->prelu, &sd, &sdx, &sda);
        if (bn->residual && dr) K->copy_add(dy + c * n, dr + c * n, n, dr_accum);
        acc[c] = sd;
        acc[C + c] = sdx;
        if (g->dgamma) g->dgamma[c] += (float)sdx;
        if (g->dbeta) g->dbeta[c] += (float)sd;
        if (bn->prelu && g->dalpha) g->dalpha[c] += (float)sda;
    }
    if (!dx) return AF_OK;
    af_status st = bn_allreduce(ctx, acc, 2 * (size_t)C, "sum(dy), sum(dy*xhat)");
    if (st) return st;
    /* pass 2: dx = gamma/std * (du - mean(du) - xhat * mean(du * xhat)) over the global batch */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < C; c++) {
        const float mean = save[c], invstd = save[C + c];
        const float gm = p->gamma[c], bt = p->beta[c];
        const float k = gm * invstd, shift = bt - mean * k;
        const float m1 = (float)(acc[c] / count), m2 = (float)(acc[C + c] / count);
        const float a = bn->prelu ? p->alpha[c] : 1.0f;
        K->bn_bwd_dx(x + c * n, dy + c * n, dx + c * n, n, mean, invstd, k, shift, m1, m2, a, bn->prelu, dx_accum);
    }
    return AF_OK;
}

void af_prelu_forward(int c, int B, int hw, const float *x, const float *alpha, float *y, int nthreads)
{
    const size_t n = (size_t)B * hw;
    const nn_kern_table *K = nn_kern();
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++) K->prelu_fwd(x + ch * n, y + ch * n, n, alpha[ch]);
}

void af_prelu_backward(int c, int B, int hw, const float *x, const float *alpha, const float *dy, float *dx,
                       int dx_accum, float *dalpha, int nthreads)
{
    const size_t n = (size_t)B * hw;
    const nn_kern_table *K = nn_kern();
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        double s = K->prelu_bwd(x + ch * n, dy + ch * n, dx ? dx + ch * n : NULL, n, alpha[ch], dx_accum);
        if (dalpha) dalpha[ch] += (float)s;
    }
}

/* L2 normalisation of embeddings lives in core/margin.c (include/arcface/l2norm.h),
 * shared with the margin softmax. */
