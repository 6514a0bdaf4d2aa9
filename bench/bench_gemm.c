/* Single-thread GEMM rates for the shapes the backbones issue: OpenBLAS
 * sgemm, oneDNN's dnnl_sgemm (float32, its own AVX-512 JIT kernels), and our
 * AVX512_BF16 kernel (nn/gemm_bf16.c). Rates come from the thread's CPU time
 * (best of several repetitions), so they stay meaningful on a machine shared
 * with other work. This is the measurement behind the kernel choice in
 * bench/README-backbone.md.
 *
 * usage: bench_gemm [--reps 5] */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/cpu.h"
#include "../nn/nn_internal.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct {
    const char *what;
    int ta, tb, M, N, K;
} shape;

enum { LIB_OPENBLAS, LIB_DNNL, LIB_BF16 };

static double rate(int lib, const shape *s, const float *A, const float *B, float *C, int reps)
{
    const int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N, ldc = s->N;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = cpu_now();
        if (lib == LIB_OPENBLAS)
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N,
                        s->K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
        else if (lib == LIB_DNNL)
            dnnl_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
        else
            nn_gemm(AF_PRECISION_BF16, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
        double dt = cpu_now() - t0;
        if (r > 0 && dt < best) best = dt; /* r == 0 warms up */
    }
    return 2.0 * s->M * s->N * (double)s->K / best / 1e9;
}

int main(int argc, char **argv)
{
    int reps = 5;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    static const shape shapes[] = {
        {"winograd fwd, 64 ch, 1024 tiles", 0, 0, 64, 1024, 64},
        {"winograd fwd, 128 ch", 0, 0, 128, 1024, 128},
        {"winograd fwd, 256 ch", 0, 0, 256, 512, 256},
        {"winograd fwd, 512 ch", 0, 0, 512, 256, 512},
        {"winograd dW, 64 ch (NT)", 0, 1, 64, 64, 1024},
        {"winograd dW, 256 ch (NT)", 0, 1, 256, 256, 512},
        {"im2col fwd, 3x3/2 128->128, 512 cols", 0, 0, 128, 512, 1152},
        {"im2col dW, 3x3/2 256 (NT)", 0, 1, 256, 2304, 1536},
        {"col2im dcol (TN), 3x3/2 256", 1, 0, 2304, 512, 256},
        {"1x1 r50 bottleneck, 256->64, 3136 cols", 0, 0, 64, 3136, 256},
        {"square 1024", 0, 0, 1024, 1024, 1024},
    };
    openblas_set_num_threads(1);
    const af_cpu_features *f = af_cpu();
    printf("kernels: %s\nsingle thread, GFLOP/s from thread CPU time, best of %d\n\n", af_cpu_kernels_describe(AF_PRECISION_BF16), reps);
    printf("%-40s %9s %9s %9s %8s\n", "shape (M x N x K)", "openblas", "dnnl f32", "ours bf16", "bf16/ob");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
        float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4);
        for (size_t j = 0; j < na; j++) A[j] = (float)((j * 7919) % 1000) / 1000.0f - 0.5f;
        for (size_t j = 0; j < nb; j++) B[j] = (float)((j * 104729) % 1000) / 1000.0f - 0.5f;
        double ob = rate(LIB_OPENBLAS, s, A, B, C, reps), dn = rate(LIB_DNNL, s, A, B, C, reps);
        char bf[32] = "-", ratio[32] = "-";
        if (f->avx512_bf16) {
            double b = rate(LIB_BF16, s, A, B, C, reps);
            snprintf(bf, sizeof bf, "%.1f", b);
            snprintf(ratio, sizeof ratio, "%.2fx", b / ob);
        }
        char name[96];
        snprintf(name, sizeof name, "%s %dx%dx%d", s->what, s->M, s->N, s->K);
        printf("%-40.40s %9.1f %9.1f %9s %8s\n", name, ob, dn, bf, ratio);
        free(A), free(B), free(C);
    }
    return 0;
}
