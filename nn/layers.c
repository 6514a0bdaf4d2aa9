/* The simple layers: residual add, flatten, dropout, Linear; and the OpenBLAS
 * thread guard every GEMM-issuing layer uses. */
#include "arcface/nn.h"

#include <cblas.h>
#include <string.h>

#include "arcface/rng.h"
#include "nn_internal.h"

int nn_blas_single_begin(void)
{
    int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
}

void nn_blas_single_end(int saved)
{
    if (saved != 1) openblas_set_num_threads(saved);
}

void af_add_forward(size_t n, const float *a, const float *b, float *y, int nthreads)
{
#pragma omp parallel for simd num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void copy_or_add(size_t n, const float *src, float *dst, int accum, int nthreads)
{
    if (!dst) return;
    if (accum) {
#pragma omp parallel for simd num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
        for (size_t i = 0; i < n; i++) dst[i] += src[i];
    } else {
        memcpy(dst, src, sizeof(float) * n);
    }
}

void af_add_backward(size_t n, const float *dy, float *da, int da_accum, float *db, int db_accum, int nthreads)
{
    copy_or_add(n, dy, da, da_accum, nthreads);
    copy_or_add(n, dy, db, db_accum, nthreads);
}

void af_flatten_forward(int c, int B, int hw, const float *x, float *y, int nthreads)
{
    if (hw == 1) {
        memcpy(y, x, sizeof(float) * (size_t)c * B);
        return;
    }
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++)
        for (int b = 0; b < B; b++) {
            const float *src = x + ((size_t)ch * B + b) * hw;
            for (int s = 0; s < hw; s++) y[((size_t)ch * hw + s) * B + b] = src[s];
        }
}

void af_flatten_backward(int c, int B, int hw, const float *dy, float *dx, int dx_accum, int nthreads)
{
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int ch = 0; ch < c; ch++)
        for (int b = 0; b < B; b++) {
            float *dst = dx + ((size_t)ch * B + b) * hw;
            for (int s = 0; s < hw; s++) {
                float v = dy[((size_t)ch * hw + s) * B + b];
                dst[s] = dx_accum ? dst[s] + v : v;
            }
        }
}

/* One row's mask, drawn in element order from the row's own generator. */
static void dropout_row(int f, int B, int b, float p, const af_nn_ctx *ctx, uint64_t salt, const float *src,
                        float *dst, int accum)
{
    af_rng r;
    uint64_t seed = ctx ? ctx->seed : 0, step = ctx ? ctx->step : 0;
    int64_t row = (ctx ? ctx->row_offset : 0) + b;
    af_rng_seed(&r, seed, AF_RNG_STREAM_DROPOUT, step, (uint64_t)row + (salt << 48));
    const float scale = 1.0f / (1.0f - p);
    for (int e = 0; e < f; e++) {
        float v = af_rng_uniform(&r) >= p ? src[(size_t)e * B + b] * scale : 0.0f;
        if (accum) dst[(size_t)e * B + b] += v;
        else dst[(size_t)e * B + b] = v;
    }
}

void af_dropout_forward(int f, int B, float p, const af_nn_ctx *ctx, uint64_t salt, const float *x, float *y,
                        int nthreads)
{
    if (p <= 0.0f) {
        memcpy(y, x, sizeof(float) * (size_t)f * B);
        return;
    }
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int b = 0; b < B; b++) dropout_row(f, B, b, p, ctx, salt, x, y, 0);
}

void af_dropout_backward(int f, int B, float p, const af_nn_ctx *ctx, uint64_t salt, const float *dy, float *dx,
                         int dx_accum, int nthreads)
{
    if (p <= 0.0f) {
        copy_or_add((size_t)f * B, dy, dx, dx_accum, nthreads);
        return;
    }
#pragma omp parallel for num_threads(nthreads < 1 ? 1 : nthreads) schedule(static)
    for (int b = 0; b < B; b++) dropout_row(f, B, b, p, ctx, salt, dy, dx, dx_accum);
}

void af_linear_forward(int fin, int fout, int B, const float *x, const float *w, const float *bias, float *y,
                       int nthreads)
{
    af_linear_forward_prec(AF_PRECISION_FP32, fin, fout, B, x, w, bias, y, nthreads);
}

void af_linear_backward(int fin, int fout, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *dbias, int nthreads)
{
    af_linear_backward_prec(AF_PRECISION_FP32, fin, fout, B, x, w, dy, dx, dx_accum, dw, dbias, nthreads);
}

void af_linear_forward_prec(af_precision prec, int fin, int fout, int B, const float *x, const float *w,
                            const float *bias, float *y, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    int saved = nn_blas_single_begin();
#pragma omp parallel num_threads(nthreads)
    {
        size_t lo, hi;
        nn_split((size_t)fout, nn_thread_id(), nn_thread_count(), &lo, &hi);
        if (hi > lo) {
            if (bias)
                for (size_t o = lo; o < hi; o++)
                    for (int b = 0; b < B; b++) y[o * B + b] = bias[o];
            nn_gemm(prec, 0, 0, (int)(hi - lo), B, fin, 1.0f, w + lo * fin, fin, x,
                        B, bias ? 1.0f : 0.0f, y + lo * B, B);
        }
    }
    nn_blas_single_end(saved);
}

void af_linear_backward_prec(af_precision prec, int fin, int fout, int B, const float *x, const float *w,
                             const float *dy, float *dx, int dx_accum, float *dw, float *dbias, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    int saved = nn_blas_single_begin();
#pragma omp parallel num_threads(nthreads)
    {
        const int t = nn_thread_id(), T = nn_thread_count();
        size_t lo, hi;
        nn_split((size_t)fout, t, T, &lo, &hi);
        if (hi > lo) {
            nn_gemm(prec, 0, 1, (int)(hi - lo), fin, B, 1.0f, dy + lo * B, B, x, B,
                        1.0f, dw + lo * fin, fin);
            if (dbias)
                for (size_t o = lo; o < hi; o++) {
                    double s = 0.0;
                    for (int b = 0; b < B; b++) s += dy[o * B + b];
                    dbias[o] += (float)s;
                }
        }
        if (dx) {
            nn_split((size_t)fin, t, T, &lo, &hi);
            if (hi > lo)
                nn_gemm(prec, 1, 0, (int)(hi - lo), B, fout, 1.0f, w + lo, fin, dy, B,
                            dx_accum ? 1.0f : 0.0f, dx + lo * B, B);
        }
    }
    nn_blas_single_end(saved);
}
