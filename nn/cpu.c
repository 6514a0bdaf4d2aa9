/* Run-time CPU detection (include/arcface/cpu.h). The cpuid bits for
 * AVX512_BF16 and AMX are read directly because not every compiler's
 * __builtin_cpu_supports knows them; the AVX-512 state check (XGETBV) comes
 * from __builtin_cpu_supports("avx512f"), which tests the OS support too. */
#include "arcface/cpu.h"

#include "kern.h"
#include "nn_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define AF_X86 1
#endif

static af_cpu_features detected;
static int detected_done;

static void detect(af_cpu_features *f)
{
    memset(f, 0, sizeof *f);
#ifdef AF_X86
    __builtin_cpu_init();
    f->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f->avx512 = f->avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 1, a, b, c, d);
        f->avx512_bf16 = f->avx512 && (a >> 5 & 1);
        __cpuid_count(7, 0, a, b, c, d);
        f->amx_bf16 = f->avx512 && (d >> 22 & 1);
    }
#endif
    const char *cap = getenv("AF_ISA");
    if (cap && *cap) {
        if (!strcmp(cap, "avx2")) {
            f->avx512 = f->avx512_bf16 = f->amx_bf16 = 0;
            f->capped = "avx2";
        } else if (!strcmp(cap, "avx512")) {
            f->avx512_bf16 = f->amx_bf16 = 0;
            f->capped = "avx512";
        } else if (!strcmp(cap, "baseline")) {
            f->avx2 = f->avx512 = f->avx512_bf16 = f->amx_bf16 = 0;
            f->capped = "baseline";
        }
    }
}

const af_cpu_features *af_cpu(void)
{
    /* Detection is idempotent, so two threads racing here store the same
     * values; the flag is only an optimisation. */
    if (!__atomic_load_n(&detected_done, __ATOMIC_ACQUIRE)) {
        af_cpu_features f;
        detect(&f);
        detected = f;
        __atomic_store_n(&detected_done, 1, __ATOMIC_RELEASE);
    }
    return &detected;
}

const char *af_precision_name(af_precision p) { return p == AF_PRECISION_BF16 ? "bf16" : "fp32"; }

af_precision af_precision_effective(af_precision want)
{
    return want == AF_PRECISION_BF16 && af_cpu()->avx512_bf16 ? AF_PRECISION_BF16 : AF_PRECISION_FP32;
}

const char *af_cpu_kernels_describe(af_precision p)
{
    static char buf[512];
    const af_cpu_features *f = af_cpu();
    snprintf(buf, sizeof buf, "cpu%s%s%s%s%s%s; conv/GEMM %s; batch norm, PReLU, transforms, depthwise %s; margin softmax rows %s",
             f->avx2 ? " avx2" : " (no avx2)", f->avx512 ? " avx512" : "", f->avx512_bf16 ? " avx512_bf16" : "",
             f->amx_bf16 ? " amx_bf16" : "", f->capped ? " capped by AF_ISA=" : "", f->capped ? f->capped : "",
             af_precision_effective(p) == AF_PRECISION_BF16
                ? nn_dnnl_bf16_active() ? "bf16 operands, fp32 accumulation (oneDNN for groups-1 convolutions of >= 16 "
                                          "input channels larger than 1x1, else own AVX512_BF16 kernel)"
                                        : "bf16 operands, fp32 accumulation (own AVX512_BF16 kernel)"
                : nn_dnnl_active() ? "fp32 (oneDNN for groups-1 convolutions of >= 16 input channels, else OpenBLAS sgemm)"
                                   : "fp32 (OpenBLAS sgemm)",
             nn_kern() == nn_kern_avx512 ? "fp32 avx512 (zmm)" : "fp32 baseline (the build's -march)",
             nn_kern() == nn_kern_avx512 ? "avx512" : "baseline");
    return buf;
}
