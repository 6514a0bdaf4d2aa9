/* Finite-difference check of the analytic margin-softmax gradient: the gradient
 * of the mean loss w.r.t. raw features and raw centres from af_fc_loss against
 * central differences of the loss, for ArcFace, CosFace, SphereFace, a
 * combination, easy_margin and filtering, including near-pi targets that hit the
 * fallback branch. float32 forward, so h and the tolerance are sized for it. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/margin.h"
#include "arcface/rng.h"

static double loss_at(const af_margin *m, const float *x, int B, const float *w, int K, const int64_t *y,
                      af_fc_ws *ws)
{
    double l;
    if (af_fc_loss(m, x, B, B, w, K, y, MPI_COMM_SELF, ws, &l, NULL, NULL)) {
        fprintf(stderr, "af_fc_loss: %s\n", af_errmsg());
        exit(1);
    }
    return l;
}

/* Max over entries of |analytic - numeric| / max|numeric|, over a random subset. */
static double check(const af_margin *m, float *x, int B, float *w, int K, const int64_t *y, af_fc_ws *ws,
                    float *v, const float *g, int n, af_rng *r)
{
    const float h = 2e-3f;
    double maxdiff = 0, maxref = 1e-12;
    for (int t = 0; t < 24; t++) {
        int i = (int)af_rng_below(r, (uint64_t)n);
        float old = v[i];
        v[i] = old + h;
        double lp = loss_at(m, x, B, w, K, y, ws);
        v[i] = old - h;
        double lm = loss_at(m, x, B, w, K, y, ws);
        v[i] = old;
        double num = (lp - lm) / (2 * h);
        double d = fabs(num - g[i]);
        if (d > maxdiff) maxdiff = d;
        if (fabs(num) > maxref) maxref = fabs(num);
    }
    return maxdiff / maxref;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const af_margin cfgs[] = {
        {.s = 8, .m1 = 1, .m2 = 0.5f, .m3 = 0},
        {.s = 8, .m1 = 1, .m2 = 0, .m3 = 0.4f},
        {.s = 8, .m1 = 1.35f, .m2 = 0, .m3 = 0},
        {.s = 8, .m1 = 1.2f, .m2 = 0.2f, .m3 = 0.1f},
        {.s = 8, .m1 = 1, .m2 = 0.5f, .m3 = 0, .easy_margin = 1},
        {.s = 8, .m1 = 1, .m2 = 0.5f, .m3 = 0, .filter_threshold = 0.3f},
        {.s = 4, .m1 = 1, .m2 = 0.5f, .m3 = 0},
    };
    const int ncfg = (int)(sizeof cfgs / sizeof cfgs[0]);
    const int B = 5, K = 7, D = 6;
    const double tol = 2e-3;
    af_fc_ws ws;
    if (af_fc_ws_init(&ws, B, K, D)) return 1;
    float x[B * D], w[K * D], gx[B * D], gw[K * D];
    int64_t y[B];
    int failures = 0;
    double worst = 0;
    for (int c = 0; c < ncfg; c++) {
        af_rng r;
        af_rng_seed(&r, 7, AF_RNG_STREAM_TEST, (uint64_t)c, 0);
        for (int i = 0; i < B * D; i++) x[i] = af_rng_normal(&r);
        for (int i = 0; i < K * D; i++) w[i] = af_rng_normal(&r);
        for (int b = 0; b < B; b++) y[b] = (int64_t)af_rng_below(&r, K);
        /* No label -1 rows here: with every class on one rank, such a row's loss is the
         * constant -log(1e-30) while DistCrossEntropy's backward still gives p / B —
         * by design, since in training a row's target is always on some shard. */
        if (c == ncfg - 1) /* a target near pi: the theta + m > pi fallback branch */
            for (int k = 0; k < D; k++) w[y[0] * D + k] = -x[k] + 0.05f * af_rng_normal(&r);
        memset(gx, 0, sizeof gx);
        memset(gw, 0, sizeof gw);
        double l;
        if (af_fc_loss(&cfgs[c], x, B, B, w, K, y, MPI_COMM_SELF, &ws, &l, gx, gw)) {
            fprintf(stderr, "af_fc_loss: %s\n", af_errmsg());
            return 1;
        }
        double ex = check(&cfgs[c], x, B, w, K, y, &ws, x, gx, B * D, &r);
        double ew = check(&cfgs[c], x, B, w, K, y, &ws, w, gw, K * D, &r);
        int ok = ex <= tol && ew <= tol;
        failures += !ok;
        if (ex > worst) worst = ex;
        if (ew > worst) worst = ew;
        printf("config %d (s=%g m=(%g,%g,%g) easy=%d t=%g): loss %.5f  d/dx rel %.2e  d/dw rel %.2e  %s\n", c,
               cfgs[c].s, cfgs[c].m1, cfgs[c].m2, cfgs[c].m3, cfgs[c].easy_margin, cfgs[c].filter_threshold, l, ex,
               ew, ok ? "ok" : "FAIL");
    }
    printf("worst finite-difference relative difference %.3e (tolerance %.0e)\n", worst, tol);
    printf("%d passed, %d failed\n", ncfg - failures, failures);
    af_fc_ws_free(&ws);
    MPI_Finalize();
    return failures ? 1 : 0;
}
