/* The face-verification protocol of insightface's eval/verification.py (see
 * include/arcface/eval.h for what is computed), and the ROC CSV.
 *
 * insightface loops over thresholds and recounts every pair each time; here
 * each pair is binned once by the first threshold it falls below, and the
 * counts at every threshold of every fold are prefix sums of those bins. The
 * comparison is the same `dist < threshold` on the same doubles, so the
 * counts, and everything computed from them, are identical. */
#include "arcface/eval.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const double far_targets[AF_VERIFY_N_FAR] = {1e-3, 1e-4};

/* np.arange(0, 4, step) fills element i with 0 + i * step. */
static double threshold_at(size_t i, double step) { return (double)i * step; }

/* NumPy's pairwise summation (what np.sum, np.mean and np.std use on a
 * contiguous float64 array), so means and stds match NumPy bit for bit. */
static double np_sum(const double *a, size_t n)
{
    if (n < 8) {
        double r = 0.0;
        for (size_t i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        size_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return np_sum(a, n2) + np_sum(a + n2, n - n2);
}

static double np_mean(const double *a, size_t n) { return np_sum(a, n) / (double)n; }

static double np_std(const double *a, size_t n)
{
    double m = np_mean(a, n), d[AF_VERIFY_FOLDS];
    for (size_t i = 0; i < n; i++) d[i] = (a[i] - m) * (a[i] - m);
    return sqrt(np_sum(d, n) / (double)n);
}

/* sklearn KFold(n_splits, shuffle=False): contiguous folds, the first n % k
 * one larger. start has k + 1 entries. */
static void kfold_bounds(size_t n, size_t start[AF_VERIFY_FOLDS + 1])
{
    size_t base = n / AF_VERIFY_FOLDS, extra = n % AF_VERIFY_FOLDS;
    start[0] = 0;
    for (size_t f = 0; f < AF_VERIFY_FOLDS; f++) start[f + 1] = start[f] + base + (f < extra);
}

/* The index of the first threshold i * step (i < n_steps) that d is strictly
 * below, or n_steps when there is none (NaN is below nothing, as in NumPy). */
static size_t first_above(double d, double step, size_t n_steps)
{
    if (isnan(d)) return n_steps;
    if (d < 0) return 0;
    double guess = floor(d / step) + 1;
    size_t g = guess >= (double)n_steps ? n_steps : (size_t)guess;
    /* The division can round either way; settle it with the real comparison. */
    while (g > 0 && threshold_at(g - 1, step) > d) g--;
    while (g < n_steps && !(threshold_at(g, step) > d)) g++;
    return g;
}

/* Per fold, the number of same and different pairs predicted "same" at each
 * threshold: pred_same[f][i] = #{same pairs of fold f with dist < thr[i]}.
 * Row AF_VERIFY_FOLDS holds the totals over all folds. */
typedef struct {
    size_t n_steps;
    size_t *pred_same;   /* (FOLDS + 1, n_steps) */
    size_t *pred_diff;   /* (FOLDS + 1, n_steps) */
    size_t n_same[AF_VERIFY_FOLDS + 1], n_diff[AF_VERIFY_FOLDS + 1];
    size_t start[AF_VERIFY_FOLDS + 1];
} fold_counts;

static void fold_counts_free(fold_counts *c)
{
    free(c->pred_same);
    free(c->pred_diff);
}

static af_status fold_counts_make(fold_counts *c, const double *dist, const uint8_t *issame,
                                  size_t n_pairs, double step, size_t n_steps)
{
    *c = (fold_counts){.n_steps = n_steps};
    size_t rows = AF_VERIFY_FOLDS + 1, stride = n_steps + 1;
    /* One spare column per row: bin n_steps collects pairs below no threshold. */
    c->pred_same = af_calloc(rows * stride, sizeof(size_t), "verification same-pair counts");
    c->pred_diff = af_calloc(rows * stride, sizeof(size_t), "verification different-pair counts");
    if (!c->pred_same || !c->pred_diff) {
        fold_counts_free(c);
        return AF_ERR_NOMEM;
    }
    kfold_bounds(n_pairs, c->start);
    for (size_t f = 0; f < AF_VERIFY_FOLDS; f++) {
        size_t *hs = c->pred_same + f * stride, *hd = c->pred_diff + f * stride;
        for (size_t k = c->start[f]; k < c->start[f + 1]; k++) {
            size_t b = first_above(dist[k], step, n_steps);
            if (issame[k]) { hs[b]++; c->n_same[f]++; }
            else           { hd[b]++; c->n_diff[f]++; }
        }
        /* A pair binned at b is predicted same at every threshold from b on. */
        for (size_t i = 1; i < n_steps; i++) {
            hs[i] += hs[i - 1];
            hd[i] += hd[i - 1];
        }
        size_t *ts = c->pred_same + AF_VERIFY_FOLDS * stride, *td = c->pred_diff + AF_VERIFY_FOLDS * stride;
        for (size_t i = 0; i < n_steps; i++) {
            ts[i] += hs[i];
            td[i] += hd[i];
        }
        c->n_same[AF_VERIFY_FOLDS] += c->n_same[f];
        c->n_diff[AF_VERIFY_FOLDS] += c->n_diff[f];
    }
    return AF_OK;
}

static size_t at(const fold_counts *c, const size_t *m, size_t f, size_t i)
{
    return m[f * (c->n_steps + 1) + i];
}

/* float(a) / float(b), or 0 where insightface has 0 / 0 (see eval.h). */
static double ratio(size_t a, size_t b) { return b ? (double)a / (double)b : 0.0; }

static af_status check_args(const double *dist, const uint8_t *issame, size_t n_pairs, const void *res)
{
    if (!dist || !issame || !res) return af_errorf(AF_ERR_ARG, "verification: NULL argument");
    if (n_pairs < AF_VERIFY_FOLDS)
        return af_errorf(AF_ERR_ARG, "verification: %zu pairs cannot be split into %d folds; need at least %d",
                         n_pairs, AF_VERIFY_FOLDS, AF_VERIFY_FOLDS);
    return AF_OK;
}

af_status af_verify_tar_at_far(const double *dist, const uint8_t *issame, size_t n_pairs,
                               double far_target, af_verify_tar *out)
{
    af_status st = check_args(dist, issame, n_pairs, out);
    if (st) return st;
    if (!(far_target > 0 && far_target <= 1))
        return af_errorf(AF_ERR_ARG, "verification: FAR target %g is outside (0, 1]", far_target);
    const double step = 0.001;
    const size_t T = AF_VERIFY_VAL_STEPS;
    fold_counts c;
    if ((st = fold_counts_make(&c, dist, issame, n_pairs, step, T))) return st;
    double *far_train = af_malloc(T * sizeof(double), "FAR per threshold");
    if (!far_train) {
        fold_counts_free(&c);
        return AF_ERR_NOMEM;
    }
    *out = (af_verify_tar){.far_target = far_target};
    for (size_t f = 0; f < AF_VERIFY_FOLDS; f++) {
        size_t n_diff_train = c.n_diff[AF_VERIFY_FOLDS] - c.n_diff[f];
        double far_max = -1;
        for (size_t i = 0; i < T; i++) {
            far_train[i] = ratio(at(&c, c.pred_diff, AF_VERIFY_FOLDS, i) - at(&c, c.pred_diff, f, i), n_diff_train);
            if (far_train[i] > far_max) far_max = far_train[i];
        }
        double thr = 0.0;
        if (far_max >= far_target) {
            /* scipy's slinear interp1d: FAR never decreases with the
             * threshold, so the points are already sorted; take the segment
             * from the last point with FAR <= target (at most the one before
             * last) to the next, and evaluate it as scipy's B-spline does,
             * including its 0 for a zero-length last segment. */
            size_t j = 0;
            for (size_t i = 0; i < T; i++)
                if (far_train[i] <= far_target) j = i;
            if (j > T - 2) j = T - 2;
            double xa = far_train[j], xb = far_train[j + 1];
            if (xb != xa) {
                double w = 1.0 / (xb - xa);
                double h0 = w * (xb - far_target), h1 = w * (far_target - xa);
                thr = 0.0;
                thr += threshold_at(j, step) * h0;
                thr += threshold_at(j + 1, step) * h1;
            }
        }
        size_t ta = 0, fa = 0;
        for (size_t k = c.start[f]; k < c.start[f + 1]; k++)
            if (dist[k] < thr) {
                if (issame[k]) ta++;
                else fa++;
            }
        out->threshold[f] = thr;
        out->tar[f] = ratio(ta, c.n_same[f]);
        out->far[f] = ratio(fa, c.n_diff[f]);
    }
    out->tar_mean = np_mean(out->tar, AF_VERIFY_FOLDS);
    out->tar_std = np_std(out->tar, AF_VERIFY_FOLDS);
    out->far_mean = np_mean(out->far, AF_VERIFY_FOLDS);
    free(far_train);
    fold_counts_free(&c);
    return AF_OK;
}

af_status af_verify_evaluate(const double *dist, const uint8_t *issame, size_t n_pairs,
                             af_verify_result *res)
{
    af_status st = check_args(dist, issame, n_pairs, res);
    if (st) return st;
    const double step = 0.01;
    const size_t T = AF_VERIFY_ROC_STEPS;
    const size_t ALL = AF_VERIFY_FOLDS;
    fold_counts c;
    if ((st = fold_counts_make(&c, dist, issame, n_pairs, step, T))) return st;

    memset(res, 0, sizeof *res);
    res->n_pairs = n_pairs;
    res->xnorm = NAN;
    for (size_t i = 0; i < T; i++) res->roc_threshold[i] = threshold_at(i, step);

    for (size_t f = 0; f < AF_VERIFY_FOLDS; f++) {
        size_t n_test = c.start[f + 1] - c.start[f], n_train = n_pairs - n_test;
        size_t diff_train = c.n_diff[ALL] - c.n_diff[f];
        /* Best threshold on the training folds: np.argmax keeps the first maximum. */
        size_t best = 0;
        double best_acc = -1;
        for (size_t i = 0; i < T; i++) {
            size_t tp = at(&c, c.pred_same, ALL, i) - at(&c, c.pred_same, f, i);
            size_t fp = at(&c, c.pred_diff, ALL, i) - at(&c, c.pred_diff, f, i);
            double acc = (double)(tp + (diff_train - fp)) / (double)n_train;
            if (acc > best_acc) {
                best_acc = acc;
                best = i;
            }
        }
        /* The fold's ROC, summed over folds in order as np.mean(axis=0) does. */
        for (size_t i = 0; i < T; i++) {
            res->roc_tpr[i] += ratio(at(&c, c.pred_same, f, i), c.n_same[f]);
            res->roc_fpr[i] += ratio(at(&c, c.pred_diff, f, i), c.n_diff[f]);
        }
        size_t tp = at(&c, c.pred_same, f, best), tn = c.n_diff[f] - at(&c, c.pred_diff, f, best);
        res->accuracy[f] = (double)(tp + tn) / (double)n_test;
        res->best_threshold[f] = threshold_at(best, step);
    }
    for (size_t i = 0; i < T; i++) {
        res->roc_tpr[i] /= AF_VERIFY_FOLDS;
        res->roc_fpr[i] /= AF_VERIFY_FOLDS;
    }
    res->acc_mean = np_mean(res->accuracy, AF_VERIFY_FOLDS);
    res->acc_std = np_std(res->accuracy, AF_VERIFY_FOLDS);
    fold_counts_free(&c);

    for (int t = 0; t < AF_VERIFY_N_FAR; t++)
        if ((st = af_verify_tar_at_far(dist, issame, n_pairs, far_targets[t], &res->tar[t]))) return st;
    return AF_OK;
}

af_status af_verify_embed_combine(const float *emb, const float *emb_flip, size_t n, size_t dim,
                                  double *out, double *xnorm)
{
    if (!emb || !out || (n && !dim)) return af_errorf(AF_ERR_ARG, "verification: bad embedding arguments");
    double norm_sum = 0;
    for (size_t r = 0; r < n; r++) {
        const float *e = emb + r * dim, *g = emb_flip ? emb_flip + r * dim : NULL;
        double *o = out + r * dim, ss = 0, se = 0, sg = 0;
        for (size_t k = 0; k < dim; k++) {
            se += (double)e[k] * e[k];
            o[k] = (double)e[k] + (g ? (double)g[k] : 0.0);
            ss += o[k] * o[k];
        }
        norm_sum += sqrt(se);
        if (g) {
            for (size_t k = 0; k < dim; k++) sg += (double)g[k] * g[k];
            norm_sum += sqrt(sg);
        }
        /* sklearn leaves a zero row as it is rather than dividing by 0. */
        double norm = sqrt(ss);
        if (norm == 0) norm = 1;
        for (size_t k = 0; k < dim; k++) o[k] /= norm;
    }
    if (xnorm) *xnorm = n ? norm_sum / (double)(emb_flip ? 2 * n : n) : NAN;
    return AF_OK;
}

static double sqdist(const double *x, const double *y, size_t dim)
{
    double s = 0;
    for (size_t k = 0; k < dim; k++) {
        double d = x[k] - y[k];
        s += d * d;
    }
    return s;
}

void af_verify_pair_dist(const double *emb, size_t n_pairs, size_t dim, double *dist)
{
    for (size_t k = 0; k < n_pairs; k++) dist[k] = sqdist(emb + 2 * k * dim, emb + (2 * k + 1) * dim, dim);
}

af_status af_verify_pair_dist_indexed(const double *emb, size_t n_images, size_t dim, const int32_t *a,
                                      const int32_t *b, size_t n_pairs, double *dist)
{
    for (size_t k = 0; k < n_pairs; k++) {
        if (a[k] < 0 || (size_t)a[k] >= n_images || b[k] < 0 || (size_t)b[k] >= n_images)
            return af_errorf(AF_ERR_ARG, "verification pair %zu is (%d, %d); images are numbered 0 to %zu",
                             k, a[k], b[k], n_images - 1);
        dist[k] = sqdist(emb + (size_t)a[k] * dim, emb + (size_t)b[k] * dim, dim);
    }
    return AF_OK;
}

af_status af_verify_run(const float *emb, const float *emb_flip, size_t n_pairs, size_t dim,
                        const uint8_t *issame, af_verify_result *res)
{
    af_status st = AF_OK;
    double xnorm = NAN;
    double *comb = af_malloc(2 * n_pairs * dim * sizeof(double), "combined verification embeddings");
    double *dist = af_malloc(n_pairs * sizeof(double), "verification pair distances");
    if (!comb || !dist) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    if ((st = af_verify_embed_combine(emb, emb_flip, 2 * n_pairs, dim, comb, &xnorm))) goto fail;
    af_verify_pair_dist(comb, n_pairs, dim, dist);
    if ((st = af_verify_evaluate(dist, issame, n_pairs, res))) goto fail;
    res->xnorm = xnorm;
fail:
    free(comb);
    free(dist);
    return st;
}

af_status af_verify_roc_write(const af_verify_result *res, const char *path)
{
    af_status st = AF_OK;
    char tmp[4096];
    int fd = -1;
    FILE *f = NULL;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return af_errorf(AF_ERR_ARG, "%s: path too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    f = fdopen(fd, "w");
    if (!f) {
        st = af_errorf(AF_ERR_IO, "%s: fdopen: %s", tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    fprintf(f, "threshold,fpr,tpr\n");
    for (size_t i = 0; i < AF_VERIFY_ROC_STEPS; i++)
        fprintf(f, "%.17g,%.17g,%.17g\n", res->roc_threshold[i], res->roc_fpr[i], res->roc_tpr[i]);
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: write: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        st = af_errorf(AF_ERR_IO, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    /* The rename is durable only once the directory is synced. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return AF_OK;
fail:
    if (f) fclose(f);
    unlink(tmp);
    return st;
}

void af_verify_log_insightface(FILE *f, const char *name, long long step, const af_verify_result *res,
                               double *highest)
{
    /* Python logging's %(asctime)s: local time with milliseconds after a comma. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char t[48];
    strftime(t, sizeof t, "%Y-%m-%d %H:%M:%S", &tm);
    if (res->acc_mean > *highest) *highest = res->acc_mean;
    fprintf(f, "Training: %s,%03d-[%s][%lld]XNorm: %f\n", t, (int)(ts.tv_nsec / 1000000), name, step, res->xnorm);
    fprintf(f, "Training: %s,%03d-[%s][%lld]Accuracy-Flip: %1.5f+-%1.5f\n", t, (int)(ts.tv_nsec / 1000000), name, step,
            res->acc_mean, res->acc_std);
    fprintf(f, "Training: %s,%03d-[%s][%lld]Accuracy-Highest: %1.5f\n", t, (int)(ts.tv_nsec / 1000000), name, step,
            *highest);
}

void af_verify_print_thresholds(FILE *f, const char *name, const af_verify_result *res)
{
    fprintf(f, "%s: best threshold per fold (squared L2 distance, chosen on the other nine folds):", name);
    for (int k = 0; k < AF_VERIFY_FOLDS; k++) fprintf(f, " %.2f", res->best_threshold[k]);
    fprintf(f, "\n");
}
