/* The margin softmax's row kernels (include/arcface/margin_rows.h, both
 * instances of nn/kern.h) against the scalar loops of core/margin.c, which
 * they are to replace: af_margin_forward / af_margin_backward on rows whose
 * label is -1 (so every entry takes the element-wise path) must give the same
 * bits. Rows mix cosines inside and outside [-1, 1], above and below the
 * filtering threshold, exact ties with it, and NaN; lengths leave every
 * vector remainder; backward runs out of place and in place. Exits 77 (a
 * ctest skip) where the CPU has no AVX-512, after checking the baseline. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/cpu.h"
#include "arcface/margin.h"
#include "arcface/margin_rows.h"
#include "arcface/rng.h"
#include "kern.h"

static int failures;

/* bitwise equality, NaN equal to NaN */
static size_t mismatch(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) && !(isnan(a[i]) && isnan(b[i]))) return i + 1;
    return 0;
}

static void check(const nn_kern_table *K, const char *name)
{
    af_rng rng;
    af_rng_seed(&rng, 11, AF_RNG_STREAM_TEST, 0, 0);
    const size_t lens[] = {1, 7, 15, 16, 17, 31, 33, 67, 1000};
    const float thrs[] = {0.0f, 0.3f, -0.5f};
    int cases = 0;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (size_t ti = 0; ti < sizeof thrs / sizeof *thrs; ti++) {
            const size_t n = lens[li];
            af_margin m = {.s = 64.0f, .m1 = 1.0f, .m2 = 0.5f, .m3 = 0.0f, .grad = AF_MARGIN_GRAD_ARCFACE_TORCH,
                           .filter_threshold = thrs[ti]};
            float *c = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float)),
                  *out = malloc(n * sizeof(float));
            if (!c || !g || !ref || !out) {
                printf("out of memory\n");
                failures++;
                return;
            }
            for (size_t j = 0; j < n; j++) {
                c[j] = 1.3f * (2.0f * (float)af_rng_uniform(&rng) - 1.0f);
                g[j] = (float)af_rng_normal(&rng);
            }
            if (n > 3) c[1] = thrs[ti] > 0 ? thrs[ti] : 1.0f, c[2] = NAN, c[3] = -1.0f;
            const int64_t label = -1;
            af_margin_forward(&m, c, &label, NULL, 1, (int)n, ref);
            K->margin_row_fwd(c, out, n, m.s, m.filter_threshold);
            size_t bad = mismatch(ref, out, n);
            af_margin_backward(&m, c, &label, NULL, 1, (int)n, g, ref);
            K->margin_row_bwd(c, g, out, n, m.s, m.filter_threshold);
            size_t bad_b = mismatch(ref, out, n);
            memcpy(out, g, n * sizeof(float));
            K->margin_row_bwd(c, out, out, n, m.s, m.filter_threshold);
            size_t bad_i = mismatch(ref, out, n);
            if (bad || bad_b || bad_i) {
                printf("FAIL %s: K %zu, threshold %g: first differing entry forward %zd, backward %zd, in place %zd\n",
                       name, n, thrs[ti], (ssize_t)bad - 1, (ssize_t)bad_b - 1, (ssize_t)bad_i - 1);
                failures++;
            }
            cases++;
            free(c), free(g), free(ref), free(out);
        }
    printf("%s: %d rows forward, backward and in-place backward against core/margin.c: %s\n", name, cases,
           failures ? "FAIL" : "bit for bit");
}

int main(void)
{
    check(&nn_kern_baseline, "baseline");
    int skipped = 0;
    if (nn_kern_avx512 && af_cpu()->avx512) {
        check(nn_kern_avx512, "avx512");
    } else {
        printf("SKIP avx512: this CPU (or AF_ISA) has no AVX-512\n");
        skipped = 1;
    }
    /* the public entry point reaches the instance nn_kern() chose */
    float c[3] = {0.5f, 2.0f, -0.2f}, o[3];
    af_margin_row_forward(c, o, 3, 2.0f, 0.0f);
    if (o[0] != 1.0f || o[1] != 2.0f || o[2] != -0.4f) {
        printf("FAIL af_margin_row_forward: %g %g %g, expected 1 2 -0.4\n", o[0], o[1], o[2]);
        failures++;
    }
    if (failures) return 1;
    return skipped ? 77 : 0;
}
