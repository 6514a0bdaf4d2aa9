/* The one GEMM entry point of the backbone's layers: float32 GEMMs go to
 * OpenBLAS, bf16 ones (a layer built with AF_PRECISION_BF16, on a CPU with
 * AVX512_BF16) to the kernel of gemm_bf16.c. The choice is made per call from
 * the layer's precision and the run-time CPU detection, so one binary serves
 * AVX2-only and AVX-512 machines. */
#include <cblas.h>

#include "arcface/cpu.h"
#include "nn_internal.h"

void nn_gemm(af_precision prec, int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
    if (prec == AF_PRECISION_BF16 && af_cpu()->avx512_bf16 &&
        nn_gemm_bf16(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == 0)
        return;
    /* float32, also when the bf16 kernel could not get its packing buffers */
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                A, lda, B, ldb, beta, C, ldc);
}
