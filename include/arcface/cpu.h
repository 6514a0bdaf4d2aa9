/* What the CPU this process runs on can do, detected once at run time, and
 * the precision a backbone computes in. Every kernel choice that depends on
 * the instruction set goes through af_cpu(): the binary is built for a
 * portable baseline (x86-64-v3: AVX2 + FMA) and the AVX-512 / AVX512_BF16
 * kernels, compiled with function target attributes, are only reached after
 * af_cpu() said the CPU (and the OS, for the wider register state) has them.
 *
 * AF_ISA=avx2 (or =baseline) in the environment caps the detection, so the
 * AVX2-only path can be run and tested on an AVX-512 machine. */
#ifndef ARCFACE_CPU_H
#define ARCFACE_CPU_H

typedef struct {
    int avx2;        /* AVX2 + FMA */
    int avx512;      /* AVX-512 F, BW, VL, DQ with the OS saving the zmm state */
    int avx512_bf16; /* VDPBF16PS / VCVTNE2PS2BF16 */
    int amx_bf16;    /* reported only; no kernel uses AMX yet */
    const char *capped; /* the AF_ISA value that lowered the detection, or NULL */
} af_cpu_features;

/* Detected on the first call; thread-safe afterwards (the result never changes). */
const af_cpu_features *af_cpu(void);

/* The numeric precision of convolutions and GEMMs. BF16 rounds both GEMM
 * operands to bfloat16 and accumulates in float32; everything else (master
 * weights, optimizer state, batch-norm statistics, loss) stays float32. */
typedef enum { AF_PRECISION_FP32 = 0, AF_PRECISION_BF16 = 1 } af_precision;

/* "fp32" / "bf16". */
const char *af_precision_name(af_precision p);
/* The precision that runs for a requested one on this CPU: BF16 falls back
 * to FP32 where AVX512_BF16 is missing. */
af_precision af_precision_effective(af_precision want);

/* One line naming the instruction sets found and the kernels a backbone of
 * precision `p` uses, e.g. "avx512 avx512_bf16; conv/GEMM bf16 (own AVX512_BF16
 * kernel), fp32 OpenBLAS". Static storage; not thread-safe. */
const char *af_cpu_kernels_describe(af_precision p);

#endif
