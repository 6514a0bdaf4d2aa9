/* The compute constants of the scale model (bench/scale_model.py, section "On
 * paper, toward internet scale" in bench/README-trainer.md), measured on the
 * code the trainer runs, one thread, from the thread's CPU time (best of
 * several repetitions) so that a shared machine does not inflate them:
 *
 *   logits   af_fc_loss (normalise, cosines, margin, softmax cross-entropy and
 *            both backward GEMMs) of a B x K slice at D, split into its three
 *            GEMMs (timed alone, the same cblas calls) and the rest, which is
 *            element-wise over B x K (the row kernels of margin_rows.h, on
 *            the worker's threads);
 *   server   a parameter-server shard at D: answering a pull (gather), a push
 *            (accumulate), and the optimizer step, sparse (touched rows only)
 *            and dense (every row of the shard), per row;
 *   memcpy   one core's copy bandwidth (a transfer between ranks of one node).
 *
 * Prints one JSON object (scale_model.py measure merges it into the constants).
 * usage: bench_scale [--reps 3] [--D 512] [--rows 200000]
 *        bench_scale --logits BxK [--threads T] [--reps 3] [--D 512]
 * The second form times only the logits of one B x K slice with the
 * element-wise passes on T threads (OpenBLAS stays on one: the GEMMs are
 * subtracted): thread CPU time for T = 1, else the process's CPU time and
 * the wall time, each best of reps; also without the cosine GEMM that the
 * backward pass recomputes per block (timed alone: it runs at GEMM speed and
 * scales with D, the rest does not). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "arcface/config.h"
#include "arcface/margin.h"
#include "arcface/margin_rows.h"
#include "arcface/paramserver.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double clock_now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void fill(float *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
}

/* Best-of-reps seconds of the whole fc loss and of its three GEMMs alone,
 * with the element-wise passes on `threads` threads, on clock `id` and, if
 * w_all is not NULL, on the wall clock. */
static int logits(int B, int K, int D, int reps, int threads, clockid_t id, double *t_all, double *t_gemm,
                  double *w_all, double *w_gemm, double *t_cos)
{
    af_fc_ws ws;
    float *x = malloc(sizeof(float) * B * D), *w = malloc(sizeof(float) * (size_t)K * D);
    float *dx = malloc(sizeof(float) * B * D), *dw = malloc(sizeof(float) * (size_t)K * D);
    int64_t *lab = malloc(sizeof(int64_t) * B);
    float *cosb = malloc(sizeof(float) * (size_t)B * K);
    if (!x || !w || !dx || !dw || !lab || !cosb || af_fc_ws_init(&ws, B, K, D)) {
        fprintf(stderr, "bench_scale: out of memory for the %d x %d logits at D = %d\n", B, K, D);
        return 1;
    }
    af_fc_ws_set_threads(&ws, threads);
    fill(x, (size_t)B * D, 1);
    fill(w, (size_t)K * D, 2);
    for (int b = 0; b < B; b++) lab[b] = b % 3 ? (b * 7919) % K : -1; /* some rows' classes sit in other slices */
    af_margin m = {64.0f, 1.0f, 0.5f, 0.0f, AF_MARGIN_GRAD_ARCFACE_TORCH, 0, 0.0f};
    *t_all = *t_gemm = 1e30;
    if (w_all) *w_all = *w_gemm = 1e30;
    if (t_cos) *t_cos = 1e30;
    for (int r = 0; r <= reps; r++) {
        double loss, t0 = clock_now(id), m0 = clock_now(CLOCK_MONOTONIC);
        if (af_fc_loss(&m, x, B, B, w, K, lab, MPI_COMM_SELF, &ws, &loss, dx, dw)) {
            fprintf(stderr, "bench_scale: af_fc_loss: %s\n", af_errmsg());
            return 1;
        }
        double t1 = clock_now(id), m1 = clock_now(CLOCK_MONOTONIC);
        /* The same three products over the whole slice (the loss runs them block by
         * block through its workspace, which holds one block, not K rows). */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, K, D, 1.0f, ws.xn, D, w, D, 0.0f, cosb, K);
        double tc = clock_now(id);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, K, 1.0f, ws.logits, K, w, D, 0.0f, ws.dxn, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, D, B, 1.0f, ws.logits, K, ws.xn, D, 0.0f, dw, D);
        double t2 = clock_now(id), m2 = clock_now(CLOCK_MONOTONIC);
        if (r && w_all && m1 - m0 < *w_all) *w_all = m1 - m0;
        if (r && w_all && m2 - m1 < *w_gemm) *w_gemm = m2 - m1;
        if (r && t_cos && tc - t1 < *t_cos) *t_cos = tc - t1;
        if (r && t1 - t0 < *t_all) *t_all = t1 - t0; /* the first repetition warms up */
        if (r && t2 - t1 < *t_gemm) *t_gemm = t2 - t1;
    }
    af_fc_ws_free(&ws);
    free(x), free(w), free(dx), free(dw), free(lab), free(cosb);
    return 0;
}

int main(int argc, char **argv)
{
    int reps = 3, D = 512, lB = 0, lK = 0, threads = 1;
    long rows = 200000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--logits") && sscanf(argv[i + 1], "%dx%d", &lB, &lK) == 2) continue;
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--D")) D = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rows")) rows = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_scale [--reps 3] [--D 512] [--rows 200000]\n"
                            "       bench_scale --logits BxK [--threads 1] [--reps 3] [--D 512]\n");
            return 2;
        }
    }
    if (reps < 1 || D < 1 || rows < 1000 || threads < 1 || ((lB || lK) && (lB < 1 || lK < 1))) {
        fprintf(stderr, "bench_scale: --reps >= 1, --D >= 1, --rows >= 1000, --threads >= 1 and --logits BxK with "
                        "B, K >= 1 expected\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    openblas_set_num_threads(1);
    if (lB) {
        double ta, tg, wa, wg, tc;
        if (logits(lB, lK, D, reps, threads, threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID, &ta,
                   &tg, &wa, &wg, &tc))
            return 1;
        double n = (double)lB * lK;
        printf("{\"B\": %d, \"K\": %d, \"D\": %d, \"threads\": %d, \"row_kernels\": \"%s\", \"fc_loss_cpu_s\": %.6f, "
               "\"gemm_cpu_s\": %.6f, \"elementwise_cpu_s_per_elem\": %.4g, \"fc_loss_wall_s\": %.6f, "
               "\"gemm_wall_s\": %.6f, \"elementwise_wall_s_per_elem\": %.4g, \"cos_gemm_cpu_s\": %.6f, "
               "\"elementwise_cpu_s_per_elem_without_recomputed_cos\": %.4g}\n",
               lB, lK, D, threads, af_margin_rows_instance(), ta, tg, (ta - tg) / n, wa, wg, (wa - wg) / n, tc,
               (ta - tg - tc) / n);
        MPI_Finalize();
        return 0;
    }
    printf("{\n  \"threads\": 1, \"D\": %d,\n  \"logits\": [", D);
    static const int shapes[][2] = {{256, 4096}, {1024, 4096}, {1024, 16384}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int B = shapes[i][0], K = shapes[i][1];
        double ta, tg;
        if (logits(B, K, D, reps, 1, CLOCK_THREAD_CPUTIME_ID, &ta, &tg, NULL, NULL, NULL)) return 1;
        double flops = 6.0 * B * K * D;
        printf("%s\n    {\"B\": %d, \"K\": %d, \"fc_loss_s\": %.6f, \"gemm_s\": %.6f, \"gemm_flops_per_s\": %.4g, "
               "\"elementwise_s_per_elem\": %.4g}", i ? "," : "", B, K, ta, tg, flops / tg,
               (ta - tg) / ((double)B * K));
        fflush(stdout);
    }
    printf("\n  ],\n");

    /* Shard: SGD with momentum, arcface_torch's defaults. The pulled and pushed
     * rows are a uniform sample of 10% of the shard, as sample_rate 0.1 gives. */
    af_config cfg;
    af_config_defaults(&cfg);
    af_ps_shard s;
    int64_t touched = rows / 10;
    if (af_ps_shard_init(&s, 0, rows, D, touched, &cfg)) {
        fprintf(stderr, "bench_scale: shard of %ld rows at D = %d: %s\n", rows, D, af_errmsg());
        return 1;
    }
    af_ps_shard_init_weights(&s, 1);
    int64_t *ids = malloc(sizeof(int64_t) * touched);
    float *buf = malloc(sizeof(float) * (size_t)touched * D);
    if (!ids || !buf) return 1;
    for (int64_t i = 0; i < touched; i++) ids[i] = i * 10 + (i * 7) % 10; /* distinct, spread over the shard */
    fill(buf, (size_t)touched * D, 3);
    double tg = 1e30, ta = 1e30, ts = 1e30, td = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = cpu_now();
        af_ps_shard_gather(&s, ids, touched, buf);
        double t1 = cpu_now();
        af_ps_shard_accumulate(&s, ids, touched, buf);
        double t2 = cpu_now();
        af_ps_shard_apply(&s, 0.01f);
        double t3 = cpu_now();
        if (r) {
            if (t1 - t0 < tg) tg = t1 - t0;
            if (t2 - t1 < ta) ta = t2 - t1;
            if (t3 - t2 < ts) ts = t3 - t2;
        }
    }
    s.mode = AF_FC_DENSE;
    for (int r = 0; r <= reps; r++) {
        af_ps_shard_accumulate(&s, ids, touched, buf);
        double t0 = cpu_now();
        af_ps_shard_apply(&s, 0.01f);
        double t1 = cpu_now();
        if (r && t1 - t0 < td) td = t1 - t0;
    }
    /* One copy of the bulk rows: what a transfer between two ranks of one node costs
     * (Open MPI's shared-memory path moves large messages with one copy, CMA). */
    size_t nb = (size_t)256 << 20;
    char *src = malloc(nb), *dst = malloc(nb);
    if (!src || !dst) return 1;
    memset(src, 1, nb), memset(dst, 2, nb);
    double tc = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = cpu_now();
        memcpy(dst, src, nb);
        double t1 = cpu_now();
        if (r && t1 - t0 < tc) tc = t1 - t0;
    }
    printf("  \"memcpy_bytes_per_s\": %.4g,\n", nb / tc + dst[nb / 2] * 0.0);
    free(src), free(dst);
    printf("  \"server\": {\"rows\": %ld, \"touched\": %lld, \"pull_s_per_row\": %.4g, \"push_s_per_row\": %.4g, "
           "\"sparse_update_s_per_touched_row\": %.4g, \"dense_update_s_per_row\": %.4g}\n}\n",
           rows, (long long)touched, tg / touched, ta / touched, ts / touched, td / rows);
    af_ps_shard_free(&s);
    free(ids), free(buf);
    MPI_Finalize();
    return 0;
}
