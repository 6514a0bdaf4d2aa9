/* Evaluation of a trained embedding: the face-verification protocol of
 * insightface's eval/verification.py (10-fold accuracy, TAR at a given FAR,
 * ROC points, XNorm), nearest-class-centre accuracy and a reproducible pair
 * list for labelled sets such as Fashion-MNIST, the ROC CSV the evaluation
 * writes, and PNG charts of a training run drawn with gnuplot.
 *
 * Everything here is per process: nothing touches MPI. Embedding matrices are
 * row-major, one row per image. */
#ifndef ARCFACE_EVAL_H
#define ARCFACE_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arcface/status.h"

/* ---- Verification protocol (insightface eval/verification.py) ----------
 *
 * Pairs are split into AF_VERIFY_FOLDS contiguous folds in order, as
 * sklearn's KFold(n_splits=10, shuffle=False) does: every fold holds
 * N / 10 pairs and the first N % 10 folds one more. A pair is predicted
 * "same" when its squared L2 distance is strictly below the threshold.
 *
 * Accuracy: thresholds np.arange(0, 4, 0.01), i.e. i * 0.01 for i < 400. For
 * each fold the threshold with the best accuracy on the other nine folds
 * (the first one on ties, as np.argmax) is applied to the fold. Reported:
 * per-fold accuracy, their mean and population standard deviation (np.std).
 *
 * ROC: for each of those thresholds, TPR and FPR on each test fold, averaged
 * over the folds (what calculate_roc returns and insightface plots).
 *
 * TAR at FAR (calculate_val): thresholds np.arange(0, 4, 0.001). For each fold
 * the FAR of every threshold is measured on the nine training folds; when the
 * largest reaches the target, the threshold is scipy's
 * interp1d(far, thresholds, kind='slinear')(target), which is linear
 * interpolation between the last threshold whose FAR is <= target and the
 * next one; otherwise it is 0. TAR (insightface's "val") and FAR are then
 * measured on the test fold; reported are the mean and std of TAR and the mean
 * of FAR. insightface reports FAR 1e-3 only; 1e-4 is the same computation.
 * With LFW's 3,000 different pairs (2,700 per training split) one false accept
 * is already FAR 3.7e-4, so the 1e-4 threshold is interpolated between FAR 0
 * and the first false accept: a coarse figure on sets of that size.
 *
 * Where insightface would divide by zero (a fold without same pairs, or
 * without different pairs) the rate is taken as 0, as calculate_accuracy does
 * for TPR and FPR.
 *
 * Arithmetic is double, as in insightface (its embeddings are float64), and
 * means and std use NumPy's summation order, so results match NumPy to the
 * last bit given the same distances. */
#define AF_VERIFY_FOLDS     10
#define AF_VERIFY_ROC_STEPS 400    /* thresholds i * 0.01, i < 400 */
#define AF_VERIFY_VAL_STEPS 4000   /* thresholds i * 0.001, i < 4000 */
#define AF_VERIFY_N_FAR     2      /* the FAR targets reported: 1e-3 and 1e-4 */

typedef struct {
    double far_target;
    double threshold[AF_VERIFY_FOLDS];   /* interpolated on the training folds */
    double tar[AF_VERIFY_FOLDS];         /* on the test fold ("val") */
    double far[AF_VERIFY_FOLDS];         /* on the test fold */
    double tar_mean, tar_std, far_mean;
} af_verify_tar;

typedef struct {
    size_t n_pairs;
    double accuracy[AF_VERIFY_FOLDS];        /* test fold at its best threshold */
    double best_threshold[AF_VERIFY_FOLDS];  /* chosen on the training folds */
    double acc_mean, acc_std;
    af_verify_tar tar[AF_VERIFY_N_FAR];      /* FAR 1e-3, then 1e-4 */
    /* Mean L2 norm of the raw embeddings, both views counted separately
     * (insightface's XNorm); set by af_verify_run, NAN from af_verify_evaluate. */
    double xnorm;
    double roc_threshold[AF_VERIFY_ROC_STEPS];
    double roc_tpr[AF_VERIFY_ROC_STEPS];     /* mean over the test folds */
    double roc_fpr[AF_VERIFY_ROC_STEPS];
} af_verify_result;

/* out = normalise(emb + emb_flip) row by row, in double, as insightface's
 * test() does with sklearn.preprocessing.normalize (a zero row stays zero).
 * emb_flip may be NULL to evaluate without the flipped view. *xnorm (may be
 * NULL) receives the mean L2 norm over all rows of emb and of emb_flip. */
af_status af_verify_embed_combine(const float *emb,      /* (n, dim) */
                                  const float *emb_flip, /* (n, dim) or NULL */
                                  size_t n, size_t dim,
                                  double *out,           /* (n, dim) */
                                  double *xnorm);

/* dist[k] = |emb[2k] - emb[2k+1]|^2: the pair layout of the .bin files. */
void af_verify_pair_dist(const double *emb,  /* (2 * n_pairs, dim) */
                         size_t n_pairs, size_t dim,
                         double *dist);      /* (n_pairs) */

/* dist[k] = |emb[a[k]] - emb[b[k]]|^2 for pair lists such as af_pairs_make's;
 * an index outside [0, n_images) is an error. */
af_status af_verify_pair_dist_indexed(const double *emb, /* (n_images, dim) */
                                      size_t n_images, size_t dim,
                                      const int32_t *a, const int32_t *b,
                                      size_t n_pairs, double *dist);

/* The whole protocol on given squared distances; n_pairs >= 10 (one pair
 * per fold at least, as KFold requires). issame[k] is 0 or nonzero. */
af_status af_verify_evaluate(const double *dist, const uint8_t *issame,
                             size_t n_pairs, af_verify_result *res);

/* TAR at one FAR target in (0, 1], as described above. */
af_status af_verify_tar_at_far(const double *dist, const uint8_t *issame,
                               size_t n_pairs, double far_target,
                               af_verify_tar *out);

/* Convenience for a .bin set: combine the two views of 2 * n_pairs images,
 * take the pair distances and run the protocol, setting res->xnorm. */
af_status af_verify_run(const float *emb,      /* (2 * n_pairs, dim) */
                        const float *emb_flip, /* (2 * n_pairs, dim) or NULL */
                        size_t n_pairs, size_t dim,
                        const uint8_t *issame, af_verify_result *res);

/* Writes one target's result as insightface's CallBackVerification logs it,
 * so log parsers written for arcface_torch keep working:
 *   Training: <time>-[lfw][2000]XNorm: 22.123456
 *   Training: <time>-[lfw][2000]Accuracy-Flip: 0.99500+-0.00300
 *   Training: <time>-[lfw][2000]Accuracy-Highest: 0.99550
 * (the "Training: %(asctime)s-" prefix is its init_logging format; Accuracy-Flip
 * is the accuracy of the flip-combined embedding). *highest carries the best
 * accuracy so far for this target across calls (start it at 0). */
void af_verify_log_insightface(FILE *f, const char *name, long long step, const af_verify_result *res,
                               double *highest);
/* Writes the best threshold of each fold (chosen on the other nine), one line. */
void af_verify_print_thresholds(FILE *f, const char *name, const af_verify_result *res);

/* Writes res's ROC as CSV with header "threshold,fpr,tpr" (one row per
 * threshold, increasing), atomically (temporary file, fsync, rename). This is
 * the input of `arcface-plot roc`. */
af_status af_verify_roc_write(const af_verify_result *res, const char *path);

/* ---- Nearest class centre and pair lists (Fashion-MNIST) --------------- */

/* centres[c] = mean over images of class c of their L2-normalised embeddings
 * (a class without images gets a zero centre). A label outside
 * [0, n_classes) is an error. One way to get centres; the ArcFace class
 * weights are another. */
af_status af_centres_mean(const float *emb,        /* (n, dim) */
                          const int32_t *labels,   /* (n) */
                          size_t n, size_t dim, int n_classes,
                          float *centres);         /* (n_classes, dim) */

/* Nearest-centre accuracy: each embedding and each centre is L2-normalised
 * (a zero vector stays zero), the predicted class is the argmax of the cosine
 * (first on ties), and *accuracy is the fraction equal to the label. pred
 * (may be NULL) receives the predictions. */
af_status af_centres_accuracy(const float *emb,      /* (n, dim) */
                              const int32_t *labels, /* (n) */
                              size_t n, size_t dim,
                              const float *centres,  /* (n_classes, dim) */
                              int n_classes,
                              double *accuracy, int32_t *pred /* (n) or NULL */);

/* The Fashion-MNIST verification list: 6,000 pairs over the 10,000 test
 * images, 3,000 same-class and 3,000 different-class. */
#define AF_FMNIST_PAIRS     6000
#define AF_FMNIST_PAIR_SEED 20240607u
#define AF_PAIRS_RNG_TAG    0x50414952u   /* "PAIR": the rng key word a */

/* Makes n_pairs (even) verification pairs over n labelled images, no pair
 * twice. The list is a pure function of (labels, seed):
 *
 *   classes: for each class c, list_c = the indices i with labels[i] == c in
 *     increasing order; every class in [0, n_classes) needs >= 2 images.
 *   pair k, attempt t = 0, 1, ...:
 *     r = af_rng_seed(seed, AF_RNG_STREAM_TEST, AF_PAIRS_RNG_TAG | t << 32, k);
 *     i = af_rng_below(r, n); c = labels[i].
 *     k even (same class): u = af_rng_below(r, |list_c| - 1);
 *       j = list_c[u < pos ? u : u + 1] where pos is i's place in list_c.
 *     k odd (different class): d = 1 + af_rng_below(r, n_classes - 1);
 *       c2 = (c + d) % n_classes; j = list_c2[af_rng_below(r, |list_c2|)].
 *     If the unordered pair {i, j} is one of pairs 0..k-1, try attempt t + 1
 *     (up to 1000 attempts, then an error); else a[k] = i, b[k] = j,
 *     issame[k] = (k even).
 *
 * So pairs alternate same/different, i != j, and the other class of a
 * different pair is uniform over the other classes. (Without the retry a
 * list of 6,000 over Fashion-MNIST would hold about one repeated pair.) */
af_status af_pairs_make(const int32_t *labels, size_t n, int n_classes,
                        uint64_t seed, size_t n_pairs,
                        int32_t *a, int32_t *b, uint8_t *issame);

/* ---- Charts (gnuplot) -------------------------------------------------- */

enum af_plot_chart {
    AF_PLOT_CHART_LOSS       = 1 << 0,   /* loss.png */
    AF_PLOT_CHART_LR         = 1 << 1,   /* lr.png */
    AF_PLOT_CHART_THROUGHPUT = 1 << 2,   /* throughput.png */
    AF_PLOT_CHART_VAL        = 1 << 3,   /* val.png */
};

/* Draws charts of a training metrics CSV into outdir (created if missing):
 * loss.png, lr.png and throughput.png against step, and val.png with every
 * val_* column when any of them has a value. The CSV has a header row naming
 * at least step, loss, lr and samples_per_sec; fields may be empty (a row
 * without an evaluation has empty val_* fields) and such points are left out.
 * gnuplot is the program to run (NULL: "gnuplot" on PATH); it must have the
 * pngcairo or png terminal. *charts (may be NULL) gets the af_plot_chart bits
 * of the files written. */
af_status af_plot_metrics(const char *csv_path, const char *outdir,
                          const char *gnuplot, unsigned *charts);

/* Draws the ROC curve (TPR against FPR, FPR on a log axis, so points with
 * FPR 0 are left out) of a CSV with fpr and tpr columns, as
 * af_verify_roc_write writes. */
af_status af_plot_roc(const char *roc_csv, const char *png_path, const char *gnuplot);

#endif
