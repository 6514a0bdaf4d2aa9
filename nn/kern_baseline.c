/* The baseline instance of kern_body.inc: compiled for the build's
 * -march (ARCFACE_MARCH, x86-64-v3 = AVX2 + FMA by default). */
#include "kern.h"

#include "arcface/cpu.h"

#define KATTR
#define KFN(name) name##_base
#define KATTR_WINO
#include "kern_body.inc"

const nn_kern_table nn_kern_baseline = KTABLE("baseline");

const nn_kern_table *nn_kern(void)
{
    return af_cpu()->avx512 && nn_kern_avx512 ? nn_kern_avx512 : &nn_kern_baseline;
}
