/* Test of the verification protocol against a NumPy implementation of
 * insightface's (tests/eval/verify_ref.py) on the same distances: per-fold
 * accuracies and best thresholds exactly, means and stds, ROC points, and TAR
 * at FAR 1e-3 and 1e-4; then the whole path from raw embeddings (combine
 * with the flipped view, XNorm, distances) against NumPy's float64 path.
 *
 * usage: eval_verify PYTHON verify_ref.py WORKDIR */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/eval.h"
#include "eval_test_util.h"

#define T AF_VERIFY_ROC_STEPS
#define F AF_VERIFY_FOLDS

typedef struct {
    double xnorm, acc[F], best[F], acc_mean, acc_std, roc_thr[T], roc_tpr[T], roc_fpr[T];
    struct { double thr[F], tar[F], far[F], tar_mean, tar_std, far_mean; } tar[2];
} reference;

/* Largest |a - b|, counting NaN against NaN as equal and NaN against a number as infinite. */
static double maxdiff(const double *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        double d = fabs(a[i] - b[i]);
        if (isnan(d)) d = INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static size_t n_unequal(const double *a, const double *b, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(double)) != 0;
    return k;
}

/* Compares a result with the reference; prints the differences. */
static void compare(const char *name, const char *path_kind, const af_verify_result *r, const reference *ref)
{
    const double tol = 1e-12;   /* for values NumPy sums in its own order */
    CHECK(n_unequal(r->best_threshold, ref->best, F) == 0, "%s %s: best thresholds differ (max %.3g)", name,
          path_kind, maxdiff(r->best_threshold, ref->best, F));
    CHECK(n_unequal(r->accuracy, ref->acc, F) == 0, "%s %s: fold accuracies differ (max %.3g)", name, path_kind,
          maxdiff(r->accuracy, ref->acc, F));
    CHECK(n_unequal(r->roc_threshold, ref->roc_thr, T) == 0, "%s %s: thresholds differ from np.arange", name,
          path_kind);
    double d_mean = fabs(r->acc_mean - ref->acc_mean), d_std = fabs(r->acc_std - ref->acc_std);
    CHECK(d_mean <= tol && d_std <= tol, "%s %s: acc mean/std differ by %.3g/%.3g (tol %g)", name, path_kind, d_mean,
          d_std, tol);
    double d_roc = fmax(maxdiff(r->roc_tpr, ref->roc_tpr, T), maxdiff(r->roc_fpr, ref->roc_fpr, T));
    CHECK(d_roc <= tol, "%s %s: ROC differs by %.3g (tol %g)", name, path_kind, d_roc, tol);
    double d_tar = 0, d_thr = 0;
    size_t tar_fold_unequal = 0;
    for (int t = 0; t < 2; t++) {
        const af_verify_tar *a = &r->tar[t];
        d_thr = fmax(d_thr, maxdiff(a->threshold, ref->tar[t].thr, F));
        tar_fold_unequal += n_unequal(a->tar, ref->tar[t].tar, F) + n_unequal(a->far, ref->tar[t].far, F);
        d_tar = fmax(d_tar, fabs(a->tar_mean - ref->tar[t].tar_mean));
        d_tar = fmax(d_tar, fabs(a->tar_std - ref->tar[t].tar_std));
        d_tar = fmax(d_tar, fabs(a->far_mean - ref->tar[t].far_mean));
    }
    CHECK(d_thr <= tol, "%s %s: TAR thresholds differ by %.3g (tol %g)", name, path_kind, d_thr, tol);
    CHECK(tar_fold_unequal == 0, "%s %s: %zu per-fold TAR/FAR values differ", name, path_kind, tar_fold_unequal);
    CHECK(d_tar <= tol, "%s %s: TAR mean/std or FAR mean differ by %.3g (tol %g)", name, path_kind, d_tar, tol);
    printf("  %-12s %-10s acc %.5f+-%.5f  TAR@1e-3 %.4f  TAR@1e-4 %.4f | diffs: acc mean %.1e std %.1e, "
           "ROC %.1e, TAR thr %.1e, TAR %.1e, unequal folds %zu\n",
           name, path_kind, r->acc_mean, r->acc_std, r->tar[0].tar_mean, r->tar[1].tar_mean, d_mean, d_std, d_roc,
           d_thr, d_tar, n_unequal(r->accuracy, ref->acc, F) + tar_fold_unequal);
}

static int run_case(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.case", dir, name);
    size_t len;
    unsigned char *buf = slurp(path, &len);
    if (!buf) return 1;
    int64_t hdr[2];
    memcpy(hdr, buf, sizeof hdr);
    size_t n = (size_t)hdr[0], dim = (size_t)hdr[1], pos = sizeof hdr;
    size_t need = pos + (dim ? 2 * 2 * n * dim * sizeof(float) : 0) + n + n * sizeof(double) + sizeof(reference);
    if (len != need) {
        CHECK(0, "%s: %zu bytes, expected %zu", name, len, need);
        free(buf);
        return 1;
    }
    float *emb = NULL, *flip = NULL;
    if (dim) {
        emb = malloc(2 * n * dim * sizeof(float));
        flip = malloc(2 * n * dim * sizeof(float));
        memcpy(emb, buf + pos, 2 * n * dim * sizeof(float));
        pos += 2 * n * dim * sizeof(float);
        memcpy(flip, buf + pos, 2 * n * dim * sizeof(float));
        pos += 2 * n * dim * sizeof(float);
    }
    uint8_t *same = malloc(n);
    double *dist = malloc(n * sizeof(double));
    reference *ref = malloc(sizeof *ref);
    memcpy(same, buf + pos, n);
    pos += n;
    memcpy(dist, buf + pos, n * sizeof(double));
    pos += n * sizeof(double);
    memcpy(ref, buf + pos, sizeof *ref);
    free(buf);

    af_verify_result *r = malloc(sizeof *r);
    af_status st = af_verify_evaluate(dist, same, n, r);
    CHECK(st == AF_OK, "%s: evaluate failed: %s", name, af_errmsg());
    if (!st) compare(name, "distances", r, ref);

    if (dim) {
        /* The full path: our combine and distances instead of NumPy's. */
        double *comb = malloc(2 * n * dim * sizeof(double)), *mydist = malloc(n * sizeof(double)), xnorm;
        st = af_verify_embed_combine(emb, flip, 2 * n, dim, comb, &xnorm);
        CHECK(st == AF_OK, "%s: combine failed: %s", name, af_errmsg());
        af_verify_pair_dist(comb, n, dim, mydist);
        double d_dist = maxdiff(mydist, dist, n), d_xnorm = fabs(xnorm - ref->xnorm) / ref->xnorm;
        CHECK(d_dist <= 1e-12, "%s: distances differ from NumPy's by %.3g (tol 1e-12)", name, d_dist);
        CHECK(d_xnorm <= 1e-12, "%s: XNorm %.17g vs NumPy %.17g: relative difference %.3g (tol 1e-12)", name, xnorm,
              ref->xnorm, d_xnorm);
        st = af_verify_run(emb, flip, n, dim, same, r);
        CHECK(st == AF_OK, "%s: run failed: %s", name, af_errmsg());
        /* Distances equal to 1e-12 cannot straddle a threshold unless one lies
         * within 1e-12 of it, which random data does not do. */
        if (!st) compare(name, "embeddings", r, ref);
        CHECK(r->xnorm == xnorm, "%s: af_verify_run XNorm %.17g, combine %.17g", name, r->xnorm, xnorm);
        printf("  %-12s embeddings: distance max diff %.1e, XNorm %.6f relative diff %.1e\n", name, d_dist, xnorm,
               d_xnorm);
        free(comb);
        free(mydist);
    }
    free(r);
    free(ref);
    free(dist);
    free(same);
    free(emb);
    free(flip);
    return 0;
}

/* Arguments the protocol must refuse, and the ROC CSV round trip. */
static void check_edges(const char *dir)
{
    double dist[9] = {0};
    uint8_t same[9] = {0};
    af_verify_result *r = malloc(sizeof *r);
    af_status st = af_verify_evaluate(dist, same, 9, r);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "9 pairs"), "9 pairs accepted or wrong message: %s", af_errmsg());
    af_verify_tar tar;
    double d10[10] = {0};
    uint8_t s10[10] = {0};
    st = af_verify_tar_at_far(d10, s10, 10, 0.0, &tar);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "FAR target"), "FAR target 0 accepted: %s", af_errmsg());

    /* Zero rows stay zero in combine (sklearn), no NaN. */
    float z[4] = {0, 0, 0, 0};
    double out[4], xn;
    st = af_verify_embed_combine(z, z, 2, 2, out, &xn);
    CHECK(st == AF_OK && out[0] == 0 && out[3] == 0 && xn == 0, "zero rows: %g %g xnorm %g", out[0], out[3], xn);

    int32_t a[2] = {0, 5}, b[2] = {1, 1};
    double comb[8] = {0}, pd[2];
    st = af_verify_pair_dist_indexed(comb, 4, 2, a, b, 2, pd);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "pair 1"), "index 5 of 4 images accepted: %s", af_errmsg());

    /* TAR where the training FAR hits the target exactly, so the threshold is
     * a grid point and a test distance sits on it. Each fold of 10: pair 0
     * same at distance 1.0, pair 1 different at 0.5, pairs 2..9 different at
     * 1.0. The nine training folds hold 81 different pairs; their FAR is 0
     * up to threshold 0.5, 9/81 on (0.5, 1.0] and 1 beyond; for target 9/81
     * the last threshold with FAR <= target is 1.0 and the interpolation
     * weight of the next is 0, so the threshold is exactly 1.0. On the test
     * fold the same pair (1.0) is not below it: TAR 0; the different pair at
     * 0.5 is: FAR 1/9. */
    {
        double ed[100];
        uint8_t es[100];
        for (int i = 0; i < 100; i++) {
            es[i] = i % 10 == 0;
            ed[i] = i % 10 == 1 ? 0.5 : 1.0;
        }
        st = af_verify_tar_at_far(ed, es, 100, 9.0 / 81.0, &tar);
        CHECK(st == AF_OK, "exact-FAR case: %s", af_errmsg());
        double thr_err = 0, tar_err = 0, far_err = 0;
        for (int f = 0; f < F; f++) {
            thr_err = fmax(thr_err, fabs(tar.threshold[f] - 1.0));
            tar_err = fmax(tar_err, fabs(tar.tar[f]));
            far_err = fmax(far_err, fabs(tar.far[f] - 1.0 / 9.0));
        }
        CHECK(thr_err == 0 && tar_err == 0 && far_err == 0,
              "exact-FAR case: threshold off by %.3g, TAR off by %.3g, FAR off by %.3g (all must be 0)", thr_err,
              tar_err, far_err);
        printf("  exact-FAR case: threshold %.17g (expected 1), TAR %.3g (expected 0), FAR %.6f (expected 1/9)\n",
               tar.threshold[0], tar.tar[0], tar.far[0]);
    }

    double d[100];
    uint8_t s[100];
    for (int i = 0; i < 100; i++) {
        s[i] = i % 2;
        d[i] = s[i] ? 0.5 + 0.01 * i : 1.5 - 0.005 * i;
    }
    st = af_verify_evaluate(d, s, 100, r);
    CHECK(st == AF_OK, "evaluate: %s", af_errmsg());
    char path[4096];
    snprintf(path, sizeof path, "%s/roc.csv", dir);
    st = af_verify_roc_write(r, path);
    CHECK(st == AF_OK, "roc write: %s", af_errmsg());
    FILE *f = fopen(path, "r");
    char line[256];
    size_t rows = 0, bad = 0;
    if (f && fgets(line, sizeof line, f)) {
        CHECK(strcmp(line, "threshold,fpr,tpr\n") == 0, "ROC CSV header is '%s'", line);
        double thr, fpr, tpr;
        while (fscanf(f, "%lf,%lf,%lf", &thr, &fpr, &tpr) == 3) {
            bad += rows >= T || thr != r->roc_threshold[rows] || fpr != r->roc_fpr[rows] || tpr != r->roc_tpr[rows];
            rows++;
        }
    }
    if (f) fclose(f);
    CHECK(rows == T && bad == 0, "ROC CSV: %zu rows (expected %d), %zu differ after the round trip", rows, T, bad);
    printf("  edges: argument checks done; ROC CSV %zu rows, %zu differ after the round trip\n", rows, bad);
    free(r);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PYTHON verify_ref.py WORKDIR\n", argv[0]);
        return 2;
    }
    char *gen[] = {argv[1], argv[2], argv[3], NULL};
    int grc = run_program(gen, NULL);
    if (grc == 77) {
        printf("SKIP: NumPy, the reference, is not installed for %s\n", argv[1]);
        return 77;
    }
    if (grc != 0) {
        fprintf(stderr, "FAIL: the NumPy reference did not run\n");
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.txt", argv[3]);
    FILE *list = fopen(path, "r");
    if (!list) {
        fprintf(stderr, "FAIL: no %s\n", path);
        return 1;
    }
    char name[256];
    int cases = 0;
    while (fscanf(list, "%255s", name) == 1) {
        test_failures += run_case(argv[3], name);
        cases++;
    }
    fclose(list);
    CHECK(cases >= 9, "only %d cases", cases);
    check_edges(argv[3]);
    printf("eval_verify: %d cases: %d failures\n", cases, test_failures);
    return test_failures ? 1 : 0;
}
