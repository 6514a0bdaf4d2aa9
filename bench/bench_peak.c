/* The arithmetic peak of one core, per instruction kind: 256-bit FMA (what
 * OpenBLAS's Haswell kernels and our AVX2 baseline issue), 512-bit FMA (what
 * oneDNN's float32 JIT and our AVX-512 kernels issue) and 512-bit VDPBF16PS
 * (our bf16 GEMM). Independent accumulator chains (12 ymm, 24 zmm) cover each
 * instruction's latency; rates come from the
 * thread's CPU time, best of the repetitions, so a shared machine lowers them
 * little. This is the ceiling behind "bf16 >= 1.8x our own float32": the ratio
 * a perfect bf16 kernel can reach over a perfect float32 one is this
 * VDPBF16PS / FMA ratio at the register width the float32 path uses.
 *
 * usage: bench_peak [--reps 3] [--iters 100000000] */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/cpu.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The sink keeps the compiler from dropping the chains. */
static volatile float sink;

/* 12 chains for ymm (AVX2 has 16 registers), 24 for zmm (VDPBF16PS's latency
 * on Zen 5 needs more than 12 chains to reach its throughput). */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define CHAINS24(X) CHAINS(X) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

__attribute__((target("avx2,fma"))) static double fma256(long n)
{
    __m256 a[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    double t0 = cpu_now();
    for (long k = 0; k < n; k++) {
#define F256(i) a[i] = _mm256_fmadd_ps(a[i], x, y);
        CHAINS(F256)
    }
    double t = cpu_now() - t0;
    float b[8], s = 0;
    for (int i = 0; i < 12; i++) { _mm256_storeu_ps(b, a[i]); s += b[0]; }
    sink = s;
    return (double)n * 12 * 8 * 2 / t;
}

__attribute__((target("avx512f"))) static double fma512(long n)
{
    __m512 a[24], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
    double t0 = cpu_now();
    for (long k = 0; k < n; k++) {
#define F512(i) a[i] = _mm512_fmadd_ps(a[i], x, y);
        CHAINS24(F512)
    }
    double t = cpu_now() - t0;
    float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(a[i]);
    sink = s;
    return (double)n * 24 * 16 * 2 / t;
}

__attribute__((target("avx512f,avx512bf16"))) static double dpbf16(long n)
{
    __m512 a[24];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3f80);
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
    double t0 = cpu_now();
    for (long k = 0; k < n; k++) {
#define DP(i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
        CHAINS24(DP)
    }
    double t = cpu_now() - t0;
    float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(a[i]);
    sink = s;
    return (double)n * 24 * 16 * 2 * 2 / t; /* 16 lanes, a pair of products each, multiply + add */
}

static double best(double (*f)(long), long n, int reps)
{
    double b = 0;
    for (int r = 0; r < reps; r++) {
        double v = f(n);
        if (v > b) b = v;
    }
    return b;
}

int main(int argc, char **argv)
{
    int reps = 3;
    long n = 100000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) n = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_peak [--reps 3] [--iters 100000000]\n");
            return 2;
        }
    }
    if (reps < 1 || n < 1) {
        fprintf(stderr, "bench_peak: --reps and --iters must be positive\n");
        return 2;
    }
    const af_cpu_features *c = af_cpu();
    printf("cpu: %s\n", af_cpu_kernels_describe(AF_PRECISION_BF16));
    double y = c->avx2 ? best(fma256, n, reps) : 0;
    double z = c->avx512 ? best(fma512, n, reps) : 0;
    double d = c->avx512_bf16 ? best(dpbf16, n, reps) : 0;
    printf("one core, GFLOP/s (thread CPU time, best of %d):\n", reps);
    if (c->avx2) printf("  ymm FMA fp32      %7.1f\n", y / 1e9);
    else printf("  ymm FMA fp32      skipped: no AVX2\n");
    if (c->avx512) printf("  zmm FMA fp32      %7.1f  (%.2fx ymm)\n", z / 1e9, z / y);
    else printf("  zmm FMA fp32      skipped: no AVX-512\n");
    if (c->avx512_bf16)
        printf("  zmm VDPBF16PS     %7.1f  (%.2fx zmm FMA, %.2fx ymm FMA)\n", d / 1e9, d / z, d / y);
    else printf("  zmm VDPBF16PS     skipped: no AVX512_BF16\n");
    return 0;
}
