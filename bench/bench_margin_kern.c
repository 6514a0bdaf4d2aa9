/* The margin softmax's row kernels (nn/kern.h: row max, exp with the sum of
 * the exponentials, scaling, the double dot product of the L2 norms) in both
 * instances, against the scalar loops core/dist_ce.c and core/margin.c ran
 * before issue 13 (expf per logit and a serial double sum), on one thread,
 * thread CPU time, best of --reps: the logits of 32 x 100,000 sampled classes
 * and the L2 norms of 6 x 1,024 centres at D = 512 (six blocks' passes).
 * usage: bench_margin_kern [--reps 5] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/cpu.h"
#include "kern.h"

enum { B = 32, K = 100000, D = 512, NW = 1024 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* the loops before: kept out of line so they are timed as they were compiled */
__attribute__((noinline)) static double scalar_exp_sum(float *l, size_t n, float mx, ptrdiff_t skip)
{
    double sum = 0;
    for (size_t j = 0; j < n; j++) {
        l[j] = expf(l[j] - mx);
        sum += (ptrdiff_t)j == skip ? 0.0 : l[j];
    }
    return sum;
}

__attribute__((noinline)) static double scalar_sumsq(const float *a, size_t n)
{
    double s = 0;
    for (size_t k = 0; k < n; k++) s += (double)a[k] * a[k];
    return s;
}

int main(int argc, char **argv)
{
    int reps = argc == 3 && !strcmp(argv[1], "--reps") ? atoi(argv[2]) : 5;
    if (reps < 1) {
        fprintf(stderr, "usage: bench_margin_kern [--reps 5]\n");
        return 2;
    }
    float *l = malloc(sizeof(float) * B * K), *c = malloc(sizeof(float) * B * K), *w = malloc(sizeof(float) * NW * D);
    if (!l || !c || !w) {
        fprintf(stderr, "bench_margin_kern: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)B * K; i++) c[i] = (float)((i * 2654435761u) % 20000) / 10000.0f - 1.0f;
    for (size_t i = 0; i < (size_t)NW * D; i++) w[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    printf("kernels: %s\none thread, thread CPU time, best of %d; logits %d x %d, L2 norms 6 x %d rows of %d\n",
           af_cpu_kernels_describe(AF_PRECISION_FP32), reps, B, K, NW, D);
    printf("%-16s %10s %14s %10s %14s\n", "instance", "max ms", "exp + sum ms", "scale ms", "L2 sums ms");
    const nn_kern_table *tab[3] = {NULL, &nn_kern_baseline, af_cpu()->avx512 ? nn_kern_avx512 : NULL};
    volatile double sink = 0;
    for (int t = 0; t < 3; t++) {
        if (t == 2 && !tab[2]) {
            printf("%-16s (this CPU has no AVX-512, or AF_ISA capped it)\n", "avx512");
            continue;
        }
        const nn_kern_table *k = tab[t];
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        for (int r = 0; r < reps; r++) {
            for (size_t i = 0; i < (size_t)B * K; i++) l[i] = 64.0f * c[i];
            double t0 = now();
            for (size_t b = 0; k && b < B; b++) sink += k->row_max(l + b * K, K);
            double t1 = now();
            for (size_t b = 0; b < B; b++)
                sink += k ? k->row_exp_sum(l + b * K, K, 64.0f, 5) : scalar_exp_sum(l + b * K, K, 64.0f, 5);
            double t2 = now();
            for (size_t b = 0; k && b < B; b++) k->row_scale(l + b * K, l + b * K, K, 0.5f);
            double t3 = now();
            for (int q = 0; q < 6; q++)
                for (size_t i = 0; i < NW; i++) sink += k ? k->dot_d(w + i * D, w + i * D, D) : scalar_sumsq(w + i * D, D);
            double t4 = now();
            double d[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
            for (int q = 0; q < 4; q++) best[q] = d[q] < best[q] ? d[q] : best[q];
        }
        if (k) printf("%-16s %10.2f %14.2f %10.2f %14.2f\n", k->name, 1e3 * best[0], 1e3 * best[1], 1e3 * best[2], 1e3 * best[3]);
        else printf("%-16s %10s %14.2f %10s %14.2f\n", "scalar (before)", "", 1e3 * best[1], "", 1e3 * best[3]);
    }
    free(l), free(c), free(w);
    return 0;
}
