/* Sharded equals unsharded: the same margin-softmax problem with its classes
 * split over the ranks of MPI_COMM_WORLD (run under mpirun -np 1..4) gives the
 * same loss and gradients as the whole problem on one rank, within 1e-5
 * relative. Every rank builds the same problem from a fixed seed and computes
 * the unsharded reference itself on MPI_COMM_SELF. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/margin.h"
#include "arcface/pfc.h"
#include "arcface/rng.h"

enum { B = 16, C = 37, D = 24 };

static double relmax(const float *a, const float *b, size_t n)
{
    double d = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const af_margin cfgs[] = {
        {.s = 64, .m1 = 1, .m2 = 0.5f},
        {.s = 64, .m1 = 1, .m3 = 0.4f, .grad = AF_MARGIN_GRAD_ARCFACE_TORCH},
        {.s = 30, .m1 = 1.2f, .m2 = 0.2f, .m3 = 0.1f, .filter_threshold = 0.2f},
        {.s = 16, .m1 = 1, .m2 = 0.5f, .easy_margin = 1, .grad = AF_MARGIN_GRAD_ARCFACE_TORCH},
    };
    const int ncfg = (int)(sizeof cfgs / sizeof cfgs[0]);
    const double tol = 1e-5;
    static float x[B * D], w[C * D], gx_ref[B * D], gw_ref[C * D], gx[B * D], gw[C * D];
    int64_t y[B], yl[B];
    int64_t n = af_shard_count(C, P, rank), start = af_shard_start(C, P, rank);
    af_fc_ws ref_ws, ws;
    if (af_fc_ws_init(&ref_ws, B, C, D) || af_fc_ws_init(&ws, B, (int)n, D)) MPI_Abort(MPI_COMM_WORLD, 1);
    int failures = 0;
    double worst = 0;
    for (int c = 0; c < ncfg; c++) {
        af_rng r;
        af_rng_seed(&r, 99, AF_RNG_STREAM_TEST, (uint64_t)c, 0);
        for (int i = 0; i < B * D; i++) x[i] = af_rng_normal(&r);
        for (int i = 0; i < C * D; i++) w[i] = af_rng_normal(&r);
        for (int b = 0; b < B; b++) y[b] = (int64_t)af_rng_below(&r, C);
        /* Pull some targets close so that p(target) spans small to large. */
        for (int b = 0; b < B; b += 3)
            for (int k = 0; k < D; k++) w[y[b] * D + k] = x[b * D + k] + 0.3f * af_rng_normal(&r);

        double ref_loss, loss;
        memset(gx_ref, 0, sizeof gx_ref);
        memset(gw_ref, 0, sizeof gw_ref);
        if (af_fc_loss(&cfgs[c], x, B, B, w, C, y, MPI_COMM_SELF, &ref_ws, &ref_loss, gx_ref, gw_ref))
            MPI_Abort(MPI_COMM_WORLD, 2);

        for (int b = 0; b < B; b++) yl[b] = y[b] >= start && y[b] < start + n ? y[b] - start : -1;
        memset(gx, 0, sizeof gx);
        memset(gw, 0, sizeof gw);
        if (af_fc_loss(&cfgs[c], x, B, B, w + start * D, (int)n, yl, MPI_COMM_WORLD, &ws, &loss, gx, gw)) {
            fprintf(stderr, "rank %d: %s\n", rank, af_errmsg());
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        /* Feature gradients are per-slice partial sums; centre gradients are per shard. */
        MPI_Allreduce(MPI_IN_PLACE, gx, B * D, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double el = fabs(loss - ref_loss) / fabs(ref_loss);
        double ex = relmax(gx, gx_ref, B * D);
        double ew = relmax(gw, gw_ref + start * D, (size_t)n * D);
        double e[3] = {el, ex, ew};
        MPI_Allreduce(MPI_IN_PLACE, e, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        int ok = e[0] <= tol && e[1] <= tol && e[2] <= tol;
        failures += !ok;
        worst = fmax(worst, fmax(e[0], fmax(e[1], e[2])));
        if (rank == 0)
            printf("P=%d config %d: loss %.6f ref %.6f rel %.2e | dx %.2e | dw %.2e %s\n", P, c, loss, ref_loss, e[0],
                   e[1], e[2], ok ? "ok" : "FAIL");
    }
    if (rank == 0) {
        printf("worst relative difference over %d shards: %.3e (tolerance %.0e)\n", P, worst, tol);
        printf("%d passed, %d failed\n", ncfg - failures, failures);
    }
    af_fc_ws_free(&ref_ws);
    af_fc_ws_free(&ws);
    MPI_Finalize();
    return failures ? 1 : 0;
}
