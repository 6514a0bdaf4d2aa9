/* Test of nearest-class-centre accuracy and the Fashion-MNIST pair list:
 * accuracy against a direct cosine computation and against a planted number
 * of wrong labels; class-mean centres against a direct mean; the pair list's
 * counts, alternation, class rules, index range, uniqueness, determinism and
 * spread over classes, on a stand-in for the 10,000-image test split. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/eval.h"
#include "arcface/rng.h"
#include "eval_test_util.h"

#define N 10000
#define C 10
#define D 32

/* The nearest centre by cosine, computed the plain way: dot / (|e| |c|). */
static int brute_nearest(const float *e, const float *centres)
{
    int best = 0;
    double best_cos = -2;
    double ne = 0;
    for (int k = 0; k < D; k++) ne += (double)e[k] * e[k];
    for (int c = 0; c < C; c++) {
        double dot = 0, nc = 0;
        for (int k = 0; k < D; k++) {
            dot += (double)e[k] * centres[c * D + k];
            nc += (double)centres[c * D + k] * centres[c * D + k];
        }
        double cs = dot / sqrt(ne * nc);
        if (cs > best_cos) {
            best_cos = cs;
            best = c;
        }
    }
    return best;
}

static void test_accuracy(void)
{
    static float centres[C * D], emb[N * D];
    static int32_t labels[N], pred[N];
    af_rng r;
    af_rng_seed(&r, 1, AF_RNG_STREAM_TEST, 100, 0);
    for (int i = 0; i < C * D; i++) centres[i] = af_rng_normal(&r);
    for (int i = 0; i < N; i++) labels[i] = i % C;
    /* Noisy embeddings at random scales: some land nearer another centre. */
    for (int i = 0; i < N; i++) {
        float scale = 0.5f + 5 * af_rng_uniform(&r);
        for (int k = 0; k < D; k++)
            emb[i * D + k] = scale * (centres[labels[i] * D + k] + 2.0f * af_rng_normal(&r));
    }
    double acc;
    af_status st = af_centres_accuracy(emb, labels, N, D, centres, C, &acc, pred);
    CHECK(st == AF_OK, "accuracy: %s", af_errmsg());
    size_t correct = 0, disagree = 0;
    for (int i = 0; i < N; i++) {
        int b = brute_nearest(emb + i * D, centres);
        correct += b == labels[i];
        disagree += b != pred[i];
    }
    double want = (double)correct / N;
    CHECK(disagree == 0 && acc == want, "accuracy %.6f vs direct %.6f, %zu predictions differ", acc, want, disagree);
    CHECK(want > 0.3 && want < 0.99, "test data too easy or too hard: direct accuracy %.4f", want);
    printf("  noisy: accuracy %.4f, direct cosine %.4f, |diff| %.1e, %zu predictions differ\n", acc, want,
           fabs(acc - want), disagree);

    /* Planted: every embedding is a scaled copy of its class centre, then a
     * counted number of labels are moved to another class. */
    af_rng_seed(&r, 2, AF_RNG_STREAM_TEST, 100, 0);
    size_t moved = 0;
    for (int i = 0; i < N; i++) {
        labels[i] = i % C;
        for (int k = 0; k < D; k++) emb[i * D + k] = 3.0f * centres[labels[i] * D + k];
        if (af_rng_below(&r, 100) < 7) {
            labels[i] = (labels[i] + 1 + (int)af_rng_below(&r, C - 1)) % C;
            moved++;
        }
    }
    st = af_centres_accuracy(emb, labels, N, D, centres, C, &acc, NULL);
    want = (double)(N - moved) / N;
    CHECK(st == AF_OK && acc == want, "planted: accuracy %.6f, expected (N - %zu) / N = %.6f", acc, moved, want);
    printf("  planted: %zu of %d labels moved: accuracy %.6f, expected %.6f\n", moved, N, acc, want);

    /* Class-mean centres: compare with the mean of normalised embeddings. */
    for (int i = 0; i < N; i++) labels[i] = i % C;
    for (int i = 0; i < N * D; i++) emb[i] = af_rng_normal(&r) + (float)(i / D % C);
    static float mc[C * D];
    st = af_centres_mean(emb, labels, N, D, C, mc);
    CHECK(st == AF_OK, "centres_mean: %s", af_errmsg());
    double maxd = 0;
    for (int c = 0; c < C; c++)
        for (int k = 0; k < D; k++) {
            double s = 0;
            int cnt = 0;
            for (int i = c; i < N; i += C) {
                double nn = 0;
                for (int q = 0; q < D; q++) nn += (double)emb[i * D + q] * emb[i * D + q];
                s += emb[i * D + k] / sqrt(nn);
                cnt++;
            }
            maxd = fmax(maxd, fabs(s / cnt - mc[c * D + k]));
        }
    CHECK(maxd <= 1e-6, "class-mean centres differ from the direct mean by %.3g (tol 1e-6)", maxd);
    printf("  class-mean centres: max diff %.1e (tol 1e-6)\n", maxd);

    labels[5] = C;
    st = af_centres_accuracy(emb, labels, N, D, centres, C, &acc, NULL);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "image 5"), "label 10 of 10 classes accepted: %s", af_errmsg());
}

static void test_pairs(void)
{
    static int32_t labels[N], a[AF_FMNIST_PAIRS], b[AF_FMNIST_PAIRS], a2[AF_FMNIST_PAIRS], b2[AF_FMNIST_PAIRS];
    static uint8_t same[AF_FMNIST_PAIRS], same2[AF_FMNIST_PAIRS];
    /* The Fashion-MNIST test split has 1,000 images per class in no order. */
    af_rng r;
    af_rng_seed(&r, 3, AF_RNG_STREAM_TEST, 100, 0);
    for (int i = 0; i < N; i++) labels[i] = i % C;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)af_rng_below(&r, (uint64_t)i + 1);
        int32_t t = labels[i];
        labels[i] = labels[j];
        labels[j] = t;
    }
    af_status st = af_pairs_make(labels, N, C, AF_FMNIST_PAIR_SEED, AF_FMNIST_PAIRS, a, b, same);
    CHECK(st == AF_OK, "pairs: %s", af_errmsg());
    size_t n_same = 0, out_of_range = 0, wrong_class = 0, self = 0, not_alternating = 0, dup = 0;
    size_t other_class[C] = {0}, image_uses[C] = {0};
    for (int k = 0; k < AF_FMNIST_PAIRS; k++) {
        n_same += same[k];
        not_alternating += same[k] != (k % 2 == 0);
        if (a[k] < 0 || a[k] >= N || b[k] < 0 || b[k] >= N) {
            out_of_range++;
            continue;
        }
        self += a[k] == b[k];
        wrong_class += same[k] ? labels[a[k]] != labels[b[k]] : labels[a[k]] == labels[b[k]];
        if (!same[k]) other_class[(labels[b[k]] - labels[a[k]] + C) % C]++;
        image_uses[labels[a[k]]]++;
        for (int q = 0; q < k; q++)
            dup += (a[q] == a[k] && b[q] == b[k]) || (a[q] == b[k] && b[q] == a[k]);
    }
    CHECK(n_same == AF_FMNIST_PAIRS / 2, "%zu same-class pairs of %d, expected half", n_same, AF_FMNIST_PAIRS);
    CHECK(not_alternating == 0 && out_of_range == 0 && wrong_class == 0 && self == 0 && dup == 0,
          "pairs: %zu not alternating, %zu out of range, %zu of the wrong class kind, %zu self, %zu repeated",
          not_alternating, out_of_range, wrong_class, self, dup);
    /* The other class is uniform over the 9 others: about 333 each, sd ~17. */
    size_t lo = SIZE_MAX, hi = 0;
    for (int d = 1; d < C; d++) {
        lo = other_class[d] < lo ? other_class[d] : lo;
        hi = other_class[d] > hi ? other_class[d] : hi;
    }
    CHECK(other_class[0] == 0 && lo > 250 && hi < 420, "other-class offsets range %zu..%zu, expected ~333", lo, hi);
    printf("  pairs: %d, %zu same, offsets of the other class %zu..%zu (expected ~333), %zu repeated, "
           "%zu out of range\n", AF_FMNIST_PAIRS, n_same, lo, hi, dup, out_of_range);

    st = af_pairs_make(labels, N, C, AF_FMNIST_PAIR_SEED, AF_FMNIST_PAIRS, a2, b2, same2);
    size_t changed = 0;
    for (int k = 0; k < AF_FMNIST_PAIRS; k++) changed += a[k] != a2[k] || b[k] != b2[k] || same[k] != same2[k];
    CHECK(st == AF_OK && changed == 0, "a second call changed %zu pairs", changed);
    st = af_pairs_make(labels, N, C, AF_FMNIST_PAIR_SEED + 1, AF_FMNIST_PAIRS, a2, b2, same2);
    size_t differ = 0;
    for (int k = 0; k < AF_FMNIST_PAIRS; k++) differ += a[k] != a2[k] || b[k] != b2[k];
    CHECK(st == AF_OK && differ > AF_FMNIST_PAIRS * 9 / 10, "another seed changed only %zu pairs", differ);
    /* A prefix of the list does not depend on how long the list is. */
    st = af_pairs_make(labels, N, C, AF_FMNIST_PAIR_SEED, 100, a2, b2, same2);
    size_t prefix = 0;
    for (int k = 0; k < 100; k++) prefix += a[k] != a2[k] || b[k] != b2[k];
    CHECK(st == AF_OK && prefix == 0, "the first 100 of 100 pairs differ from the first 100 of 6000 in %zu", prefix);
    printf("  determinism: same seed %zu changed, seed+1 %zu of %d changed, 100-pair prefix %zu changed\n", changed,
           differ, AF_FMNIST_PAIRS, prefix);

    /* Refusals: a class with one image, a label out of range, an odd count,
     * more distinct pairs than exist. */
    int32_t tiny[6] = {0, 0, 1, 1, 2, 2};
    st = af_pairs_make(tiny, 6, 4, 1, 2, a2, b2, same2);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "class 3 has 0 images"), "empty class accepted: %s", af_errmsg());
    tiny[5] = 7;
    st = af_pairs_make(tiny, 6, 3, 1, 2, a2, b2, same2);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "label 7"), "label 7 of 3 classes accepted: %s", af_errmsg());
    tiny[5] = 2;
    st = af_pairs_make(tiny, 6, 3, 1, 3, a2, b2, same2);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "even"), "odd pair count accepted: %s", af_errmsg());
    st = af_pairs_make(tiny, 6, 3, 1, 10, a2, b2, same2);   /* only 3 same-class pairs exist */
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), "too many"), "10 pairs of 6 images accepted: %s", af_errmsg());
}

int main(void)
{
    test_accuracy();
    test_pairs();
    printf("eval_centres: %d failures\n", test_failures);
    return test_failures ? 1 : 0;
}
