/* The AVX-512 instance of kern_body.inc: the same loops with a function
 * target attribute (F, BW, VL, DQ and a preferred vector width of 512 bits,
 * which the compiler's generic tuning would otherwise keep at 256), so they
 * vectorise to zmm registers. Only reached through nn_kern() after af_cpu()
 * found AVX-512; the rest of the binary stays at the baseline. */
#include "kern.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#define KFN(name) name##_avx512
#define KATTR_WINO __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=256")))
#include "kern_body.inc"

static const nn_kern_table table = KTABLE("avx512");
const nn_kern_table *const nn_kern_avx512 = &table;
#else
const nn_kern_table *const nn_kern_avx512 = NULL;
#endif
