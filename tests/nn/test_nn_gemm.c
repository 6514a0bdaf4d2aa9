/* The bf16 GEMM (nn/gemm_bf16.c) against a double-precision product of the
 * same operands rounded to bfloat16, for every transpose combination, sizes
 * that leave partial tiles and several K and N blocks, alpha/beta, and
 * beta = 0 over a C full of NaN (which must not leak into the result). The
 * rounding itself is checked bit for bit against the definition (nearest,
 * ties to even) on hand-made values. The float32 dispatch is checked against
 * cblas_sgemm. Exits 77 (a ctest skip) where the CPU lacks AVX512_BF16, after
 * the checks that do not need it. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/cpu.h"
#include "arcface/rng.h"
#include "nn_internal.h"

static int failures;
static af_rng rng;

static void report(const char *what, double err, double tol)
{
    int ok = err <= tol && isfinite(err);
    printf("%-64s %.3g (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void check_rounding(void)
{
    /* (input bits, expected bf16 bits) */
    static const uint32_t cases[][2] = {
        {0x3f800000u, 0x3f80u}, /* 1.0 exact */
        {0x3f808000u, 0x3f80u}, /* halfway, even below: stays */
        {0x3f818000u, 0x3f82u}, /* halfway, odd below: rounds up to even */
        {0x3f808001u, 0x3f81u}, /* just above halfway */
        {0x3f807fffu, 0x3f80u}, /* just below halfway */
        {0xbf818000u, 0xbf82u}, /* negative, ties to even */
        {0x7f7fffffu, 0x7f80u}, /* largest float rounds to infinity */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x = bits_to_float(cases[i][0]), y;
        nn_bf16_round(&x, &y, 1);
        uint32_t u;
        memcpy(&u, &y, sizeof u);
        if (u != cases[i][1] << 16) {
            printf("  bf16(0x%08x) = 0x%08x, expected 0x%08x\n", cases[i][0], u, cases[i][1] << 16);
            bad++;
        }
    }
    float nan = NAN, y;
    nn_bf16_round(&nan, &y, 1);
    if (!isnan(y)) bad++;
    report("bf16 rounding: nearest, ties to even, NaN kept (wrong cases)", bad, 0);
}

/* max |C - ref| / max |ref| where ref = alpha op(bf16 A) op(bf16 B) + beta C0 in double */
static double run_case(af_precision prec, int ta, int tb, int M, int N, int K, float alpha, float beta)
{
    const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    const size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(sizeof(float) * na), *B = malloc(sizeof(float) * nb), *C = malloc(sizeof(float) * nc);
    float *Ar = malloc(sizeof(float) * na), *Br = malloc(sizeof(float) * nb), *C0 = malloc(sizeof(float) * nc);
    for (size_t i = 0; i < na; i++) A[i] = af_rng_normal(&rng);
    for (size_t i = 0; i < nb; i++) B[i] = af_rng_normal(&rng);
    for (size_t i = 0; i < nc; i++) C0[i] = beta == 0.0f ? NAN : af_rng_normal(&rng);
    memcpy(C, C0, sizeof(float) * nc);
    if (prec == AF_PRECISION_BF16) {
        nn_bf16_round(A, Ar, na);
        nn_bf16_round(B, Br, nb);
    } else {
        memcpy(Ar, A, sizeof(float) * na);
        memcpy(Br, B, sizeof(float) * nb);
    }
    nn_gemm(prec, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double maxerr = 0.0, maxref = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                double a = ta ? Ar[(size_t)k * lda + i] : Ar[(size_t)i * lda + k];
                double b = tb ? Br[(size_t)j * ldb + k] : Br[(size_t)k * ldb + j];
                s += a * b;
            }
            double ref = alpha * s + (beta != 0.0f ? beta * (double)C0[(size_t)i * ldc + j] : 0.0);
            double e = fabs(C[(size_t)i * ldc + j] - ref);
            if (!(e <= maxerr)) maxerr = e; /* NaN propagates */
            if (fabs(ref) > maxref) maxref = fabs(ref);
        }
    /* padding columns of C must be untouched */
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            if (memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float))) maxerr = INFINITY;
    free(A); free(B); free(C); free(Ar); free(Br); free(C0);
    return maxerr / (maxref > 0 ? maxref : 1.0);
}

int main(void)
{
    af_rng_seed(&rng, 7, 0, 0, 0);
    const af_cpu_features *f = af_cpu();
    printf("cpu: %s\n", af_cpu_kernels_describe(AF_PRECISION_BF16));
    check_rounding();
    /* float32 accumulation of K products: relative error well below 1e-5 */
    const double tol = 2e-5;
    char what[128];
    report("fp32 dispatch NN 37x53x29 vs double", run_case(AF_PRECISION_FP32, 0, 0, 37, 53, 29, 1.0f, 0.5f), tol);
    int skipped = 0;
    if (!f->avx512_bf16) {
        printf("SKIP: this CPU has no AVX512_BF16; the bf16 kernel is not checked here\n");
        skipped = 1;
    } else {
        static const int sizes[][3] = {
            {1, 1, 1}, {8, 48, 2}, {7, 47, 3}, {9, 49, 5}, {64, 200, 27}, {100, 130, 777}, {13, 1600, 40}, {96, 97, 385},
        };
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                    const int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
                    const float alpha = s % 3 == 2 ? 0.75f : 1.0f, beta = s % 2 ? 0.0f : 1.25f;
                    snprintf(what, sizeof what, "bf16 %c%c M=%d N=%d K=%d alpha=%g beta=%g", ta ? 'T' : 'N',
                             tb ? 'T' : 'N', M, N, K, alpha, beta);
                    report(what, run_case(AF_PRECISION_BF16, ta, tb, M, N, K, alpha, beta), tol);
                }
    }
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return skipped ? 77 : 0;
}
