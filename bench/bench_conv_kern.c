/* The two instances of the element-wise and transform kernels (nn/kern.h)
 * side by side: the baseline (the build's -march, AVX2 by default) and the
 * AVX-512 one, on one thread, at the sizes the backbones run them (batch 32,
 * 112x112 input), alternating and keeping each one's best of several runs of
 * thread CPU time, so a shared machine can still compare them.
 *
 * usage: bench_conv_kern [--reps 5] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/cpu.h"
#include "kern.h"
#include "nn_internal.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *buf(size_t n)
{
    float *p = aligned_alloc(64, nn_align(n) * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_conv_kern: out of memory (%zu floats)\n", n);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    return p;
}

enum { K_BN_FWD, K_BN_BWD, K_PRELU_FWD, K_PRELU_BWD, K_WINO_IN, K_WINO_OUT, K_WINO_DY, K_DW_FWD, K_DW_BWD, K_MARGIN_FWD, K_MARGIN_BWD, K_N };
static const char *kname[K_N] = {"batch norm + PReLU + residual, fwd", "batch norm + PReLU, bwd (2 passes)",
                                 "PReLU fwd", "PReLU bwd", "Winograd input transform", "Winograd output transform",
                                 "Winograd dy transform", "depthwise 3x3 taps, fwd", "depthwise 3x3 taps, bwd (dw+dx)",
                                 "margin rows fwd (32 x 100k, filter)", "margin rows bwd (32 x 100k, filter)"};

typedef struct {
    float *x, *y, *r, *dy, *dx, *V, *M, *scratch;
    af_conv2d c;
    nn_wino_geom g;
    size_t n;   /* elements per channel for the element-wise kernels */
    int C;      /* channels */
    size_t grid; /* depthwise: the output grid of one plane */
    size_t off[9];
    float w9[9];
} data;

static void run(const nn_kern_table *K, int which, data *d)
{
    double s1, s2, s3;
    float dot[9];
    switch (which) {
    case K_BN_FWD:
        for (int c = 0; c < d->C; c++) K->bn_apply(d->x + c * d->n, d->r + c * d->n, d->y + c * d->n, d->n, 0.9f, 0.1f, 0.25f, 1);
        break;
    case K_BN_BWD:
        for (int c = 0; c < d->C; c++) {
            K->bn_bwd_sums(d->x + c * d->n, d->dy + c * d->n, d->n, 0.1f, 1.1f, 0.9f, 0.1f, 0.25f, 1, &s1, &s2, &s3);
            K->bn_bwd_dx(d->x + c * d->n, d->dy + c * d->n, d->dx + c * d->n, d->n, 0.1f, 1.1f, 0.9f, 0.1f, 0.01f,
                         0.02f, 0.25f, 1, 0);
        }
        break;
    case K_PRELU_FWD:
        for (int c = 0; c < d->C; c++) K->prelu_fwd(d->x + c * d->n, d->y + c * d->n, d->n, 0.25f);
        break;
    case K_PRELU_BWD:
        for (int c = 0; c < d->C; c++) K->prelu_bwd(d->x + c * d->n, d->dy + c * d->n, d->dx + c * d->n, d->n, 0.25f, 0);
        break;
    case K_WINO_IN:
        K->wino_input(&d->c, &d->g, 32, d->x, 0, d->g.rows, d->V, d->scratch);
        break;
    case K_WINO_OUT:
        K->wino_output(&d->c, &d->g, 32, d->M, 0, d->g.rows, d->y, 0, d->scratch);
        break;
    case K_WINO_DY:
        K->wino_dy(&d->c, &d->g, 32, d->dy, 0, d->g.rows, d->M, d->scratch);
        break;
    case K_DW_FWD:
        for (int p = 0; p < 64; p++) K->taps_fwd(d->y, d->grid, d->x + p * 4 * d->grid, d->off, d->w9, 9);
        break;
    case K_DW_BWD:
        for (int p = 0; p < 64; p++) {
            K->taps_dot(d->dy, d->grid, d->x + p * 4 * d->grid, d->off, dot, 9);
            for (int t = 0; t < 9; t++) K->axpy(d->dx + p * 4 * d->grid + d->off[t], d->dy, d->w9[t], d->grid);
        }
        break;
    case K_MARGIN_FWD:
        K->margin_row_fwd(d->x, d->y, (size_t)32 * 100000, 64.0f, 0.3f);
        break;
    case K_MARGIN_BWD:
        K->margin_row_bwd(d->x, d->dy, d->dx, (size_t)32 * 100000, 64.0f, 0.3f);
        break;
    }
}

int main(int argc, char **argv)
{
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_conv_kern [--reps 5]\n");
            return 2;
        }
    }
    if (!nn_kern_avx512 || !af_cpu()->avx512) {
        fprintf(stderr, "bench_conv_kern: this CPU (or AF_ISA) has no AVX-512: nothing to compare\n");
        return 2;
    }
    data d;
    memset(&d, 0, sizeof d);
    /* element-wise: 16 channels of a 56x56 stage at batch 32 (6.4 MB a tensor, L3-sized) */
    d.C = 16;
    d.n = (size_t)32 * 56 * 56;
    /* Winograd: a 64-channel 56x56 layer, one chunk of tile rows */
    if (af_conv2d_init(&d.c, 64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1)) {
        fprintf(stderr, "bench_conv_kern: %s\n", af_errmsg());
        return 1;
    }
    d.g.th = d.g.tw = 28;
    d.g.rows = (NN_WINO_CHUNK_FLOATS / (16 * 128) + 27) / 28;
    d.g.nt = d.g.rows * 28;
    /* depthwise: 56x56 planes padded to 58 columns, taps at the 3x3 offsets */
    d.grid = (size_t)56 * 58;
    for (int t = 0; t < 9; t++) {
        d.off[t] = (size_t)(t / 3) * 58 + t % 3;
        d.w9[t] = 0.1f * (t + 1);
    }
    /* the Winograd transforms index whole (64, 32, 56, 56) tensors */
    const size_t big = (size_t)64 * 32 * 56 * 56;
    d.x = buf(big);
    d.y = buf(big);
    d.r = buf(big);
    d.dy = buf(big);
    d.dx = buf(big);
    d.V = buf(16 * 64 * d.g.nt);
    d.M = buf(16 * 64 * d.g.nt);
    d.scratch = buf(64 * 1024);
    if (!d.x || !d.y || !d.r || !d.dy || !d.dx || !d.V || !d.M || !d.scratch) return 1;

    printf("kernels: %s\none thread, best of %d, thread CPU time\n", af_cpu_kernels_describe(AF_PRECISION_FP32), reps);
    printf("%-40s %12s %12s %8s\n", "kernel", "baseline ms", "avx512 ms", "speedup");
    const nn_kern_table *tab[2] = {&nn_kern_baseline, nn_kern_avx512};
    for (int k = 0; k < K_N; k++) {
        double best[2] = {1e30, 1e30};
        for (int r = -1; r < reps; r++)
            for (int i = 0; i < 2; i++) {
                double t0 = cpu_now();
                run(tab[i], k, &d);
                double t = cpu_now() - t0;
                if (r >= 0 && t < best[i]) best[i] = t;
            }
        printf("%-40s %12.3f %12.3f %7.2fx\n", kname[k], 1e3 * best[0], 1e3 * best[1], best[0] / best[1]);
    }
    return 0;
}
