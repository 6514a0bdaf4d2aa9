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
    if (train) {
        const double count = (double)bn_global_rows(ctx, B) * bn->hw;
        if (count < 2)
            return af_errorf(AF_ERR_ARG, "batchnorm: training needs more than one value per channel (global batch %lld x %d)",
                             (long long)bn_global_rows(ctx, B), bn->hw);
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int c = 0; c < C; c++) {
            const float *xc = x + c * n;
            double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
            for (size_t i = 0; i < n; i++) {
                double v = xc[i];
                s1 += v;
                s2 += v * v;
            }
            acc[c] = s1;
            acc[C + c] = s2;
        }
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
        const float *xc = x + c * n;
        float *yc = y + c * n;
        const float *rc = bn->residual ? r + c * n : NULL;
        if (bn->prelu && rc) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float u = xc[i] * scale + shift;
                yc[i] = (u > 0.0f ? u : a * u) + rc[i];
            }
        } else if (bn->prelu) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float u = xc[i] * scale + shift;
                yc[i] = u > 0.0f ? u : a * u;
            }
        } else if (rc) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) yc[i] = xc[i] * scale + shift + rc[i];
        } else {
#pragma omp simd
            for (size_t i = 0; i < n; i++) yc[i] = xc[i] * scale + shift;
        }
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
    /* pass 1: local sums of the gradient reaching the affine output, and the
     * residual's gradient (a plain copy of dy) */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < C; c++) {
        const float mean = save[c], invstd = save[C + c];
        const float gm = p->gamma[c], bt = p->beta[c];
        const float *xc = x + c * n, *dyc = dy + c * n;
        double sd = 0.0, sdx = 0.0, sda = 0.0;
        /* the PReLU input exactly as the forward computed it, so that the
         * branch taken here is the one the forward took */
        const float scale = gm * invstd, shift = bt - mean * scale;
        if (bn->prelu) {
            const float a = p->alpha[c];
#pragma omp simd reduction(+ : sd, sdx, sda)
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                float u = xc[i] * scale + shift;
                float d = dyc[i];
                float du = u > 0.0f ? d : a * d;
                sda += u > 0.0f ? 0.0f : d * u;
                sd += du;
                sdx += du * xh;
            }
        } else {
#pragma omp simd reduction(+ : sd, sdx)
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                float d = dyc[i];
                sd += d;
                sdx += d * xh;
            }
        }
        if (bn->residual && dr) {
            float *drc = dr + c * n;
            if (dr_accum)
                for (size_t i = 0; i < n; i++) drc[i] += dyc[i];
            else
                memcpy(drc, dyc, sizeof(float) * n);
        }
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
        const float *xc = x + c * n, *dyc = dy + c * n;
        float *dxc = dx + c * n;
        if (bn->prelu && dx_accum) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                float u = xc[i] * k + shift;
                float du = u > 0.0f ? dyc[i] : a * dyc[i];
                dxc[i] += k * (du - m1 - xh * m2);
            }
        } else if (bn->prelu) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                float u = xc[i] * k + shift;
                float du = u > 0.0f ? dyc[i] : a * dyc[i];
                dxc[i] = k * (du - m1 - xh * m2);
            }
        } else if (dx_accum) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                dxc[i] += k * (dyc[i] - m1 - xh * m2);
            }
        } else {
#pragma omp simd
            for (size_t i = 0; i < n; i++) {
                float xh = (xc[i] - mean) * invstd;
                dxc[i] = k * (dyc[i] - m1 - xh * m2);
            }
        }
    }
    return AF_OK;
}

void af_prelu_forward(int c, int B, int hw, const float *x, const float *alpha, float *y, int nthreads)
{
    const size_t n = (size_t)B * hw;
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const float a = alpha[ch];
        const float *xc = x + ch * n;
        float *yc = y + ch * n;
#pragma omp simd
        for (size_t i = 0; i < n; i++) yc[i] = xc[i] > 0.0f ? xc[i] : a * xc[i];
    }
}

void af_prelu_backward(int c, int B, int hw, const float *x, const float *alpha, const float *dy, float *dx,
                       int dx_accum, float *dalpha, int nthreads)
{
    const size_t n = (size_t)B * hw;
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const float a = alpha[ch];
        const float *xc = x + ch * n, *dyc = dy + ch * n;
        float *dxc = dx ? dx + ch * n : NULL;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += xc[i] > 0.0f ? 0.0f : dyc[i] * xc[i];
        if (dalpha) dalpha[ch] += (float)s;
        if (dxc && dx_accum) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) dxc[i] += xc[i] > 0.0f ? dyc[i] : a * dyc[i];
        } else if (dxc) {
#pragma omp simd
            for (size_t i = 0; i < n; i++) dxc[i] = xc[i] > 0.0f ? dyc[i] : a * dyc[i];
        }
    }
}

/* L2 normalisation of embeddings lives in core/margin.c (include/arcface/l2norm.h),
 * shared with the margin softmax. */
