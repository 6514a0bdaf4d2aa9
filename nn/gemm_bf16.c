/* A bfloat16 GEMM with float32 accumulation for CPUs with AVX512_BF16:
 * C (M, N) = alpha * op(A) op(B) + beta * C over float32 matrices, row-major,
 * whose operands are rounded to bfloat16 (round to nearest even) while they
 * are packed. This is what mixed precision means here: the backbone keeps
 * float32 activations and master weights, and only the multiplications of
 * the convolutions' and linear layers' GEMMs see bfloat16, exactly as under
 * PyTorch's bf16 autocast (whose outputs are additionally rounded to bf16).
 *
 * Structure (the usual Goto/BLIS one): B is packed per (KC x NC) panel into
 * strips of NR = 48 columns, A per (MC x KC) block into strips of MR = 8 rows,
 * both as pairs of consecutive k values in one 32-bit word, the operand
 * layout of VDPBF16PS; an 8 x 48 micro-kernel keeps 24 zmm accumulators.
 * Edges are zero-padded in the packed copies, and partial tiles go through a
 * small buffer, so the kernel itself has no edge cases.
 *
 * Every function with AVX-512 code carries a target attribute; the file is
 * compiled for the portable baseline and nothing here runs unless af_cpu()
 * reported AVX512_BF16 (nn_gemm in gemm.c checks). Single-threaded: callers
 * run one GEMM per thread. Packing buffers are per thread, grown on first use
 * (that is, during the warm-up step) and kept. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn_internal.h"

/* Round to nearest even, as VCVTNEPS2BF16 does for normal numbers (the
 * instruction also flushes denormals to zero; at bf16 precision that is
 * below any tolerance). NaN stays NaN. */
static inline uint32_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return u >> 16;
}
void nn_bf16_round(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = bf16_bits(x[i]) << 16;
        memcpy(&y[i], &u, sizeof u);
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define MR 8
#define NR 48
#define KC 384 /* even: k is packed in pairs */
#define MC 96  /* multiple of MR */
#define NC 1536 /* multiple of NR */

#define BF16_TARGET __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

static inline uint32_t bf16_pair(float lo, float hi) { return bf16_bits(lo) | bf16_bits(hi) << 16; }

static _Thread_local uint32_t *pack_a, *pack_b;

/* A (MC x KC block at rows i0.., k k0..) into strips of MR rows: strip s,
 * pair kp, row r at [(s * kpc + kp) * MR + r]. A(i, k) = A[i * rs + k * cs]. */
static void pack_a_block(const float *A, size_t rs, size_t cs, int mc, int kc, uint32_t *out)
{
    const int kpc = (kc + 1) / 2;
    for (int s = 0; s < (mc + MR - 1) / MR; s++) {
        uint32_t *o = out + (size_t)s * kpc * MR;
        for (int r = 0; r < MR; r++) {
            const int i = s * MR + r;
            if (i >= mc) {
                for (int kp = 0; kp < kpc; kp++) o[kp * MR + r] = 0;
                continue;
            }
            const float *a = A + (size_t)i * rs;
            int kp = 0;
            for (; 2 * kp + 1 < kc; kp++) o[kp * MR + r] = bf16_pair(a[(size_t)(2 * kp) * cs], a[(size_t)(2 * kp + 1) * cs]);
            if (kp < kpc) o[kp * MR + r] = bf16_pair(a[(size_t)(2 * kp) * cs], 0.0f);
        }
    }
}

/* 16 columns of rows k and k+1 into 16 pairs: x0's bf16 in the low half. */
BF16_TARGET static inline __m512i pair16(__m512 x0, __m512 x1)
{
    __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x0));
    __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x1));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* B (KC x NC panel at k0.., columns n0..) into strips of NR columns: strip s,
 * pair kp, column j at [(s * kpc + kp) * NR + j]. B(k, n) = B[k * rs + n * cs]. */
BF16_TARGET static void pack_b_panel(const float *B, size_t rs, size_t cs, int kc, int nc, uint32_t *out)
{
    const int kpc = (kc + 1) / 2;
    for (int s = 0; s < (nc + NR - 1) / NR; s++) {
        uint32_t *o = out + (size_t)s * kpc * NR;
        const int n0 = s * NR, nn = nc - n0 < NR ? nc - n0 : NR;
        if (cs == 1 && nn == NR) {
            /* rows contiguous in n: two rows at a time, 16 columns per vector */
            for (int kp = 0; kp < kpc; kp++) {
                const float *r0 = B + (size_t)(2 * kp) * rs + n0;
                const int has1 = 2 * kp + 1 < kc;
                for (int j = 0; j < NR; j += 16) {
                    __m512 x0 = _mm512_loadu_ps(r0 + j);
                    __m512 x1 = has1 ? _mm512_loadu_ps(r0 + rs + j) : _mm512_setzero_ps();
                    _mm512_storeu_si512((void *)(o + (size_t)kp * NR + j), pair16(x0, x1));
                }
            }
            continue;
        }
        for (int j = 0; j < NR; j++) {
            if (j >= nn) {
                for (int kp = 0; kp < kpc; kp++) o[(size_t)kp * NR + j] = 0;
                continue;
            }
            const float *b = B + (size_t)(n0 + j) * cs;
            int kp = 0;
            for (; 2 * kp + 1 < kc; kp++)
                o[(size_t)kp * NR + j] = bf16_pair(b[(size_t)(2 * kp) * rs], b[(size_t)(2 * kp + 1) * rs]);
            if (kp < kpc) o[(size_t)kp * NR + j] = bf16_pair(b[(size_t)(2 * kp) * rs], 0.0f);
        }
    }
}

/* c (mr x nr, ldc) = alpha * a_strip b_strip + beta * c, over kpc pairs. */
BF16_TARGET static void kernel_8x48(int kpc, const uint32_t *a, const uint32_t *b, float *c, size_t ldc, int mr, int nr,
                                    float alpha, float beta)
{
    __m512 acc[MR][3];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
    for (int p = 0; p < kpc; p++, a += MR, b += NR) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16));
        const __m512bh b2 = (__m512bh)_mm512_loadu_si512((const void *)(b + 32));
        for (int r = 0; r < MR; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
            acc[r][2] = _mm512_dpbf16_ps(acc[r][2], av, b2);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < 3; j++) {
                float *cp = c + r * ldc + 16 * j;
                __m512 v = _mm512_mul_ps(va, acc[r][j]);
                if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp), v);
                _mm512_storeu_ps(cp, v);
            }
        return;
    }
    float tmp[MR * NR] __attribute__((aligned(64)));
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < 3; j++) _mm512_store_ps(tmp + r * NR + 16 * j, _mm512_mul_ps(va, acc[r][j]));
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float *cp = c + r * ldc + j;
            *cp = beta != 0.0f ? tmp[r * NR + j] + beta * *cp : tmp[r * NR + j];
        }
}

int nn_gemm_bf16(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0 || alpha == 0.0f) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta != 0.0f ? beta * C[(size_t)i * ldc + j] : 0.0f;
        return 0;
    }
    if (!pack_a) {
        pack_a = aligned_alloc(64, sizeof(uint32_t) * (KC / 2) * MC);
        pack_b = aligned_alloc(64, sizeof(uint32_t) * (KC / 2) * NC);
        if (!pack_a || !pack_b) {
            free(pack_a);
            free(pack_b);
            pack_a = pack_b = NULL;
            return -1;
        }
    }
    const size_t rsa = transa ? 1 : (size_t)lda, csa = transa ? (size_t)lda : 1;
    const size_t rsb = transb ? 1 : (size_t)ldb, csb = transb ? (size_t)ldb : 1;
    for (int jc = 0; jc < N; jc += NC) {
        const int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = K - pc < KC ? K - pc : KC, kpc = (kc + 1) / 2;
            const float bt = pc == 0 ? beta : 1.0f;
            pack_b_panel(B + (size_t)pc * rsb + (size_t)jc * csb, rsb, csb, kc, nc, pack_b);
            for (int ic = 0; ic < M; ic += MC) {
                const int mc = M - ic < MC ? M - ic : MC;
                pack_a_block(A + (size_t)ic * rsa + (size_t)pc * csa, rsa, csa, mc, kc, pack_a);
                for (int jr = 0; jr < nc; jr += NR) {
                    const uint32_t *bs = pack_b + (size_t)(jr / NR) * kpc * NR;
                    const int nr = nc - jr < NR ? nc - jr : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        const int mr = mc - ir < MR ? mc - ir : MR;
                        kernel_8x48(kpc, pack_a + (size_t)(ir / MR) * kpc * MR, bs,
                                    C + (size_t)(ic + ir) * ldc + jc + jr, (size_t)ldc, mr, nr, alpha, bt);
                    }
                }
            }
        }
    }
    return 0;
}
#else
int nn_gemm_bf16(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc)
{
    (void)transa; (void)transb; (void)M; (void)N; (void)K; (void)alpha; (void)A; (void)lda; (void)B; (void)ldb;
    (void)beta; (void)C; (void)ldc;
    return -1;
}
#endif
