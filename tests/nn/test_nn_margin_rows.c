/* The margin softmax's row kernels (include/arcface/margin_rows.h, both
 * instances of nn/kern.h) against references nobody here wrote the kernels
 * for:
 *  - margin rows against the scalar loops of core/margin.c:
 *    af_margin_forward / af_margin_backward on rows whose label is -1 (so
 *    every entry takes the element-wise path) must give the same bits. Rows
 *    mix cosines inside and outside [-1, 1], above and below the filtering
 *    threshold, exact ties with it, and NaN; lengths leave every vector
 *    remainder; backward runs out of place and in place.
 *  - softmax rows: the max against a plain loop (exact), exp against libm's
 *    expf (within 2 ulp, measured and printed) and, for the sum over j !=
 *    skip, against a double sum of libm's exp (2 float ulp), on rows of
 *    logits from -2s to 0 with -inf, NaN and underflowing entries; y = a x
 *    exactly; the double dot product against a serial double sum, within
 *    the bound of a reordered sum.
 *  - the two instances on the same rows: exponentials and sums bit for bit
 *    (that is what makes the whole loss independent of the instance).
 * Exits 77 (a ctest skip) where the CPU has no AVX-512, after checking the
 * baseline. */
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
    int cases = 0, failed = failures;
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
           failures > failed ? "FAIL" : "bit for bit");
}

/* distance in units in the last place between two finite floats of one sign (or 0) */
static double ulps(float a, float b)
{
    if (a == b) return 0;
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    return fabs((double)ia - (double)ib);
}

#define SM_MAXN 5000
#define SM_ROWS 14

/* The softmax rows of one instance on fixed rows; exps and sums kept for the cross-instance check. */
static void check_softmax(const nn_kern_table *K, const char *name, float *exps, double *sums)
{
    af_rng rng;
    af_rng_seed(&rng, 12, AF_RNG_STREAM_TEST, 0, 0);
    const size_t lens[] = {1, 15, 16, 17, 33, 1000, SM_MAXN};
    const double tol_ulp = 2, tol_sum = 2.4e-7; /* 2 ulp of float: each exponential is rounded once */
    double worst_ulp = 0, worst_sum = 0;
    int bad = 0, rows = 0;
    float *l = malloc(SM_MAXN * sizeof(float)), *e = malloc(SM_MAXN * sizeof(float)),
          *y = malloc(SM_MAXN * sizeof(float));
    if (!l || !e || !y) {
        printf("out of memory\n");
        failures++;
        return;
    }
    size_t off = 0;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
        for (int rep = 0; rep < 2; rep++, rows++) {
            const size_t n = lens[li];
            for (size_t j = 0; j < n; j++) l[j] = (float)(128.0 * (af_rng_uniform(&rng) - 1.0)) + 3.0f;
            if (n > 8) l[3] = -INFINITY, l[5] = -100.0f, l[6] = -87.5f, l[7] = -86.9f, l[8] = 3.0f;
            /* the plain loop's max, NaN-free rows */
            float mx = -INFINITY;
            for (size_t j = 0; j < n; j++) mx = l[j] > mx ? l[j] : mx;
            float kmx = K->row_max(l, n);
            if (memcmp(&kmx, &mx, sizeof mx)) {
                printf("FAIL %s row_max: K %zu: %.9g, plain loop %.9g\n", name, n, kmx, mx);
                bad++;
            }
            ptrdiff_t skip = rep ? (ptrdiff_t)(n / 2) : -1;
            memcpy(e, l, n * sizeof(float));
            double s = K->row_exp_sum(e, n, mx, skip), ref = 0;
            for (size_t j = 0; j < n; j++) {
                const float x = l[j] - mx, want = expf(x);
                /* below -87 the kernel returns 0 by design (expf < 1.7e-38 there) */
                double u = x < -87.0f ? (e[j] == 0.0f ? 0 : 1e9) : ulps(e[j], want);
                if (u > worst_ulp) worst_ulp = u;
                if ((ptrdiff_t)j != skip) ref += exp((double)l[j] - mx);
            }
            double rel = fabs(s - ref) / ref;
            if (rel > worst_sum) worst_sum = rel;
            if (off + n <= 2 * SM_MAXN * 2 + 4096) {
                memcpy(exps + off, e, n * sizeof(float));
                off += n;
            }
            sums[rows] = s;
            /* the double dot product (L2 norms), against a serial double sum with its error bound */
            double d, dref = 0, mag = 0;
            for (size_t j = 0; j < n; j++) {
                y[j] = (float)af_rng_normal(&rng);
                double t = (double)e[j] * y[j];
                dref += t, mag += fabs(t);
            }
            d = K->dot_d(e, y, n);
            sums[SM_ROWS + rows] = d;
            if (!(fabs(d - dref) <= 2.0 * n * 1.12e-16 * mag)) {
                printf("FAIL %s dot_d: K %zu: %.17g, serial double sum %.17g (bound %.3g)\n", name, n, d, dref,
                       2.0 * n * 1.12e-16 * mag);
                bad++;
            }
            /* y = a x, out of place and in place */
            K->row_scale(l, y, n, 0.37f);
            for (size_t j = 0; j < n; j++)
                if (memcmp(&(float){0.37f * l[j]}, &y[j], sizeof(float))) {
                    printf("FAIL %s row_scale: K %zu entry %zu\n", name, n, j);
                    bad++;
                    break;
                }
        }
    /* NaN: ignored by the max (as the scalar loop), propagated by exp */
    float nanrow[20];
    for (int j = 0; j < 20; j++) nanrow[j] = (float)-j;
    nanrow[4] = NAN, nanrow[17] = NAN;
    float nmx = K->row_max(nanrow, 20);
    double ns = K->row_exp_sum(nanrow, 20, 0.0f, -1);
    if (nmx != 0.0f || !isnan(nanrow[4]) || !isnan(ns) || nanrow[0] != 1.0f) {
        printf("FAIL %s NaN row: max %g (expected 0), exp(NaN) %g, sum %g (expected NaN), exp(0) %g\n", name, nmx,
               nanrow[4], ns, nanrow[0]);
        bad++;
    }
    float empty = K->row_max(nanrow, 0);
    if (!(isinf(empty) && empty < 0)) {
        printf("FAIL %s row_max of an empty row: %g, expected -inf\n", name, empty);
        bad++;
    }
    if (worst_ulp > tol_ulp || worst_sum > tol_sum) bad++;
    printf("%s: %d softmax rows: exp vs expf worst %.0f ulp (tolerance %.0f), sum vs double libm exp worst relative "
           "%.2e (tolerance %.0e), max and a*x exact: %s\n",
           name, rows, worst_ulp, tol_ulp, worst_sum, tol_sum, bad ? "FAIL" : "ok");
    failures += bad;
    free(l), free(e), free(y);
}

#define SM_EXPS (2 * SM_MAXN * 2 + 4096)

int main(void)
{
    static float exps_b[SM_EXPS], exps_a[SM_EXPS];
    static double sums_b[2 * SM_ROWS], sums_a[2 * SM_ROWS];
    check_softmax(&nn_kern_baseline, "baseline", exps_b, sums_b);
    check(&nn_kern_baseline, "baseline");
    int skipped = 0;
    if (nn_kern_avx512 && af_cpu()->avx512) {
        check(nn_kern_avx512, "avx512");
        check_softmax(nn_kern_avx512, "avx512", exps_a, sums_a);
        size_t bad = mismatch(exps_b, exps_a, SM_EXPS);
        int sbad = memcmp(sums_b, sums_a, sizeof sums_a) != 0;
        printf("avx512 vs baseline on the same softmax rows: exponentials %s, sums and double dot products %s\n",
               bad ? "DIFFER" : "bit for bit", sbad ? "DIFFER" : "bit for bit");
        if (bad) printf("FAIL first differing exponential at %zu: %.9g vs %.9g\n", bad - 1, exps_a[bad - 1],
                        exps_b[bad - 1]);
        if (bad || sbad) failures++;
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
