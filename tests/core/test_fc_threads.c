/* The margin softmax's loss does not depend on the threads or on the
 * instruction set: af_fc_loss (several ragged blocks, rows whose class is in
 * another slice, two margin configurations: arcface_torch's default and the
 * analytic combined margin with inter-class filtering and easy_margin) gives
 * the same bits for loss, the row sums, dx and dw on 1, 2 and 3 threads.
 *
 *   --write FILE    also writes the 1-thread results (run under AF_ISA=avx2:
 *                   the baseline instance of the row kernels)
 *   --compare FILE  also compares them bit for bit with FILE; exits 77 (a
 *                   ctest skip) after the thread check where this process
 *                   runs the baseline instance itself (no AVX-512), so
 *                   there is nothing to compare. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/margin.h"
#include "arcface/margin_rows.h"
#include "arcface/rng.h"

/* D small so that the cosines spread over most of [-1, 1]: the exponentials
 * then span more than double's 53 bits, and a sum taken in another order
 * would round differently (at D = 64 it would mostly be exact). */
enum { B = 37, K = 1001, D = 12, BLK = 96, NCFG = 2 };

typedef struct {
    double loss;
    double rows[3 * B]; /* the workspace's row buffer: 1 - p(target), the sums of exponentials */
    float dx[B * D], dw[K * D];
} result;

static int run(const af_margin *m, const float *x, const float *w, const int64_t *y, int threads, result *r)
{
    af_fc_ws ws;
    if (af_fc_ws_init(&ws, B, K, D)) return 1;
    af_fc_ws_set_block(&ws, BLK);
    af_fc_ws_set_threads(&ws, threads);
    memset(r->dx, 0, sizeof r->dx);
    af_status st = af_fc_loss(m, x, B, B, w, K, y, MPI_COMM_SELF, &ws, &r->loss, r->dx, r->dw);
    memcpy(r->rows, ws.rowbuf, sizeof r->rows);
    af_fc_ws_free(&ws);
    if (st) fprintf(stderr, "af_fc_loss: %s\n", af_errmsg());
    return st != AF_OK;
}

/* 0 when bit-identical; else prints the first difference and the largest one */
static int differ(const char *what, const result *a, const result *b)
{
    if (!memcmp(&a->loss, &b->loss, sizeof a->loss) && !memcmp(a->rows, b->rows, sizeof a->rows) &&
        !memcmp(a->dx, b->dx, sizeof a->dx) &&
        !memcmp(a->dw, b->dw, sizeof a->dw))
        return 0;
    double mdx = 0, mdw = 0, mrow = 0;
    for (int i = 0; i < 3 * B; i++) mrow = fmax(mrow, fabs(a->rows[i] - b->rows[i]) / fabs(b->rows[i]));
    for (int i = 0; i < B * D; i++) mdx = fmax(mdx, fabs((double)a->dx[i] - b->dx[i]));
    for (int i = 0; i < K * D; i++) mdw = fmax(mdw, fabs((double)a->dw[i] - b->dw[i]));
    printf("FAIL %s: loss %.17g vs %.17g, largest relative difference of the row sums %.3e, largest |difference| "
           "dx %.3e, dw %.3e (expected bit for bit)\n", what, a->loss, b->loss, mrow, mdx, mdw);
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const char *write = NULL, *compare = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--write")) write = argv[i + 1];
        else if (!strcmp(argv[i], "--compare")) compare = argv[i + 1];
    }
    const af_margin cfgs[NCFG] = {
        {.s = 64, .m1 = 1, .m2 = 0.5f, .m3 = 0, .grad = AF_MARGIN_GRAD_ARCFACE_TORCH},
        {.s = 64, .m1 = 1.1f, .m2 = 0.3f, .m3 = 0.1f, .grad = AF_MARGIN_GRAD_ANALYTIC, .easy_margin = 1,
         .filter_threshold = 0.2f},
    };
    static float x[B * D], w[K * D];
    int64_t y[B];
    af_rng rng;
    af_rng_seed(&rng, 21, AF_RNG_STREAM_TEST, 0, 0);
    for (int i = 0; i < B * D; i++) x[i] = (float)af_rng_normal(&rng);
    for (int i = 0; i < K * D; i++) w[i] = (float)af_rng_normal(&rng);
    for (int b = 0; b < B; b++) y[b] = b % 5 == 4 ? -1 : (int64_t)af_rng_below(&rng, K);
    /* a few targets close to their centres: large cosines, the margin and the filter both act */
    for (int b = 0; b < 6; b++)
        if (y[b] >= 0)
            for (int k = 0; k < D; k++) x[b * D + k] = w[y[b] * D + k] + 0.3f * x[b * D + k];
    static result ref[NCFG], r;
    int fail = 0;
    for (int c = 0; c < NCFG; c++) {
        if (run(&cfgs[c], x, w, y, 1, &ref[c])) return 1;
        for (int t = 2; t <= 3; t++) {
            if (run(&cfgs[c], x, w, y, t, &r)) return 1;
            char what[64];
            snprintf(what, sizeof what, "config %d, %d threads vs 1", c, t);
            fail |= differ(what, &r, &ref[c]);
        }
    }
    printf("af_fc_loss (%s row kernels), %d x %d at D %d in blocks of %d, %d configs: 2 and 3 threads vs 1 %s\n",
           af_margin_rows_instance(), B, K, D, BLK, NCFG, fail ? "DIFFER" : "bit for bit");
    if (write) {
        FILE *f = fopen(write, "wb");
        if (!f || fwrite(ref, sizeof ref, 1, f) != 1 || fclose(f)) {
            fprintf(stderr, "cannot write %s\n", write);
            return 1;
        }
    }
    int skip = 0;
    if (compare) {
        static result other[NCFG];
        FILE *f = fopen(compare, "rb");
        if (!f || fread(other, sizeof other, 1, f) != 1) {
            fprintf(stderr, "cannot read %s (%d results written by core_fc_threads --write under AF_ISA=avx2)\n",
                    compare, NCFG);
            return 1;
        }
        fclose(f);
        if (strcmp(af_margin_rows_instance(), "avx512")) {
            printf("SKIP avx512 vs baseline: this process runs the %s instance (no AVX-512 or AF_ISA set)\n",
                   af_margin_rows_instance());
            skip = 1;
        } else {
            int dif = 0;
            for (int c = 0; c < NCFG; c++) {
                char what[64];
                snprintf(what, sizeof what, "config %d, avx512 vs baseline (%s)", c, compare);
                dif |= differ(what, &ref[c], &other[c]);
            }
            printf("af_fc_loss avx512 vs baseline (AF_ISA=avx2 run): %s\n", dif ? "DIFFER" : "bit for bit");
            fail |= dif;
        }
    }
    MPI_Finalize();
    return fail ? 1 : skip ? 77 : 0;
}
