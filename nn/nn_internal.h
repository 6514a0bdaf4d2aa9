/* Private helpers shared by the nn/ sources: thread partitioning and the
 * OpenBLAS thread-count guard. */
#ifndef ARCFACE_NN_INTERNAL_H
#define ARCFACE_NN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/cpu.h"
#include "arcface/nn.h"

#ifdef _OPENMP
#include <omp.h>
static inline int nn_thread_id(void) { return omp_get_thread_num(); }
static inline int nn_thread_count(void) { return omp_get_num_threads(); }
static inline int nn_default_threads(void) { return omp_get_max_threads(); }
static inline double nn_wtime(void) { return omp_get_wtime(); }
#else
#include <time.h>
static inline double nn_wtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static inline int nn_thread_id(void) { return 0; }
static inline int nn_thread_count(void) { return 1; }
static inline int nn_default_threads(void) { return 1; }
#endif

/* Each of our threads issues its own single-threaded GEMM; OpenBLAS's own
 * pool would otherwise be entered by several callers at once. begin returns
 * the caller's setting for end to restore. */
int nn_blas_single_begin(void);
void nn_blas_single_end(int saved);

/* [lo, hi) of n items for part t of T, balanced to within one item. */
static inline void nn_split(size_t n, int t, int T, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)t / (size_t)T;
    *hi = n * (size_t)(t + 1) / (size_t)T;
}

/* Floats of im2col scratch one thread may use per tile: large enough for
 * efficient GEMM panels, small enough to stay in the L2/L3 caches. */
#define NN_COL_TILE_FLOATS (1u << 18)
/* ...but at least this many columns per GEMM call (see conv.c, tile_rows). */
#define NN_FWD_MIN_COLS 512
#define NN_DW_MIN_COLS 1536

/* The direct (grouped/depthwise) convolution: conv_direct.c. */
size_t nn_direct_workspace(const af_conv2d *c);
void nn_direct_forward(const af_conv2d *c, int B, const float *x, const float *w, const float *bias, float *y,
                       float *ws, int nthreads);
void nn_direct_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                        int dx_accum, float *dw, float *ws, int nthreads);

/* Winograd F(2x2, 3x3): conv_winograd.c. Chunks of tiles hold at least
 * NN_WINO_MIN_TILES tiles, more while 16*(cin+cout)*tiles fits the budget. */
#define NN_WINO_CHUNK_FLOATS (1u << 20)
#define NN_WINO_MIN_TILES 256
size_t nn_winograd_workspace(const af_conv2d *c, int max_batch, int nthreads);
void nn_winograd_forward(const af_conv2d *c, int B, const float *x, const float *w, float *y, float *ws, int nthreads);
void nn_winograd_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                          int dx_accum, float *dw, float *ws, int nthreads);

/* oneDNN's float32 convolutions (conv_dnnl.c): wanted says whether this
 * layer should use them (CPU, shape, AF_DNNL); forward and backward return 0
 * when they did the work and -1 when the caller must use its own path (no
 * libdnnl, or oneDNN failed). backward needs dbias == NULL (the caller's). */
int nn_dnnl_active(void); /* built with oneDNN, AVX-512 CPU, not AF_DNNL=0 */
int nn_dnnl_bf16_active(void); /* and bf16 layers too: AVX512_BF16, not AF_DNNL_BF16=0 */
long nn_dnnl_calls(void);  /* forward and backward calls oneDNN ran so far (tests) */
int nn_dnnl_wanted(const af_conv2d *c);
int nn_dnnl_forward(const af_conv2d *c, int B, const float *x, const float *w, float *y, int nthreads);
int nn_dnnl_backward(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, float *dx,
                     int dx_accum, float *dw, int nthreads);

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, cblas's conventions
 * (trans != 0 means op(X) = X^T); single-threaded. BF16 rounds A and B to
 * bfloat16 and accumulates in float32 where the CPU has AVX512_BF16, and is
 * float32 elsewhere: gemm.c. */
void nn_gemm(af_precision prec, int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);
/* The AVX512_BF16 kernel itself (gemm_bf16.c); only to be called after
 * af_cpu()->avx512_bf16. Returns 0, or -1 when its buffers could not be had. */
int nn_gemm_bf16(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc);
/* y[i] = x[i] rounded to the nearest bfloat16 (ties to even), as a float. */
void nn_bf16_round(const float *x, float *y, size_t n);

/* Workspace pieces are 64-byte aligned; sizes are rounded in floats. */
static inline size_t nn_align(size_t floats) { return (floats + 15) & ~(size_t)15; }

#endif
