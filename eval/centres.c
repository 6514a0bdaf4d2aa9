/* Evaluation of labelled sets without a pair list of their own (Fashion-MNIST):
 * nearest-class-centre accuracy, and the deterministic verification pair list
 * whose rule is spelled out in include/arcface/eval.h. */
#include "arcface/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/rng.h"

static af_status check_labels(const int32_t *labels, size_t n, int n_classes, const char *who)
{
    if (n_classes <= 0) return af_errorf(AF_ERR_ARG, "%s: %d classes, expected at least 1", who, n_classes);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return af_errorf(AF_ERR_ARG, "%s: label %d of image %zu is outside [0, %d)", who, labels[i], i,
                             n_classes);
    return AF_OK;
}

/* 1 / |x|, or 1 for a zero vector (sklearn's convention: it stays zero). */
static double inv_norm_f(const float *x, size_t dim)
{
    double s = 0;
    for (size_t k = 0; k < dim; k++) s += (double)x[k] * x[k];
    return s > 0 ? 1.0 / sqrt(s) : 1.0;
}

af_status af_centres_mean(const float *emb, const int32_t *labels, size_t n, size_t dim, int n_classes,
                          float *centres)
{
    af_status st = check_labels(labels, n, n_classes, "class centres");
    if (st) return st;
    double *sum = af_calloc((size_t)n_classes * dim, sizeof(double), "class centre sums");
    size_t *count = af_calloc((size_t)n_classes, sizeof(size_t), "class centre counts");
    if (!sum || !count) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const float *e = emb + i * dim;
        double inv = inv_norm_f(e, dim), *s = sum + (size_t)labels[i] * dim;
        for (size_t k = 0; k < dim; k++) s[k] += e[k] * inv;
        count[labels[i]]++;
    }
    for (size_t c = 0; c < (size_t)n_classes; c++)
        for (size_t k = 0; k < dim; k++)
            centres[c * dim + k] = count[c] ? (float)(sum[c * dim + k] / (double)count[c]) : 0.0f;
fail:
    free(sum);
    free(count);
    return st;
}

af_status af_centres_accuracy(const float *emb, const int32_t *labels, size_t n, size_t dim,
                              const float *centres, int n_classes, double *accuracy, int32_t *pred)
{
    af_status st = check_labels(labels, n, n_classes, "nearest-centre accuracy");
    if (st) return st;
    if (!n) return af_errorf(AF_ERR_ARG, "nearest-centre accuracy: no images");
    double *unit = af_malloc((size_t)n_classes * dim * sizeof(double), "normalised class centres");
    if (!unit) return AF_ERR_NOMEM;
    for (size_t c = 0; c < (size_t)n_classes; c++) {
        double inv = inv_norm_f(centres + c * dim, dim);
        for (size_t k = 0; k < dim; k++) unit[c * dim + k] = centres[c * dim + k] * inv;
    }
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        const float *e = emb + i * dim;
        /* Dividing by the embedding's norm would scale every cosine alike
         * and cannot move the argmax, so it is skipped. */
        int best = 0;
        double best_cos = -INFINITY;
        for (int c = 0; c < n_classes; c++) {
            const double *u = unit + (size_t)c * dim;
            double dot = 0;
            for (size_t k = 0; k < dim; k++) dot += e[k] * u[k];
            if (dot > best_cos) {
                best_cos = dot;
                best = c;
            }
        }
        if (pred) pred[i] = best;
        correct += best == labels[i];
    }
    *accuracy = (double)correct / (double)n;
    free(unit);
    return AF_OK;
}

/* Open-addressing set of unordered pairs, to refuse a pair already drawn. */
typedef struct { uint64_t *slot; size_t mask; } pair_set;

static uint64_t pair_key(uint32_t i, uint32_t j)
{
    uint32_t lo = i < j ? i : j, hi = i < j ? j : i;
    return ((uint64_t)hi << 32 | lo) + 1;   /* + 1 keeps 0 free to mean "empty" */
}

/* Returns 1 when key was already present, else inserts it and returns 0. */
static int pair_set_add(pair_set *s, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    for (size_t p = (size_t)(h >> 20) & s->mask;; p = (p + 1) & s->mask) {
        if (s->slot[p] == key) return 1;
        if (!s->slot[p]) {
            s->slot[p] = key;
            return 0;
        }
    }
}

af_status af_pairs_make(const int32_t *labels, size_t n, int n_classes, uint64_t seed, size_t n_pairs,
                        int32_t *a, int32_t *b, uint8_t *issame)
{
    af_status st = check_labels(labels, n, n_classes, "pair list");
    if (st) return st;
    if (n_pairs % 2) return af_errorf(AF_ERR_ARG, "pair list: %zu pairs, expected an even number", n_pairs);
    if (n > INT32_MAX) return af_errorf(AF_ERR_ARG, "pair list: %zu images exceed int32 indices", n);
    if (n_classes < 2 && n_pairs)
        return af_errorf(AF_ERR_ARG, "pair list: different-class pairs need at least 2 classes, have %d", n_classes);
    size_t *first = af_calloc((size_t)n_classes + 1, sizeof(size_t), "pair list class offsets");
    int32_t *members = af_malloc((n ? n : 1) * sizeof(int32_t), "pair list class members");
    size_t *pos = af_malloc((n ? n : 1) * sizeof(size_t), "pair list positions");
    pair_set set = {0};
    size_t cap = 16;
    while (cap < 2 * n_pairs) cap *= 2;
    set.slot = af_calloc(cap, sizeof(uint64_t), "pair list seen set");
    set.mask = cap - 1;
    if (!first || !members || !pos || !set.slot) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    /* Counting sort: members[first[c] .. first[c+1]) lists class c in index order. */
    for (size_t i = 0; i < n; i++) first[labels[i] + 1]++;
    for (int c = 0; c < n_classes; c++) {
        if (first[c + 1] < 2) {
            st = af_errorf(AF_ERR_ARG, "pair list: class %d has %zu images; every class needs at least 2", c,
                           first[c + 1]);
            goto fail;
        }
        first[c + 1] += first[c];
    }
    {
        size_t *fill = af_malloc((size_t)n_classes * sizeof(size_t), "pair list fill");
        if (!fill) {
            st = AF_ERR_NOMEM;
            goto fail;
        }
        memcpy(fill, first, (size_t)n_classes * sizeof(size_t));
        for (size_t i = 0; i < n; i++) {
            size_t c = (size_t)labels[i];
            pos[i] = fill[c] - first[c];
            members[fill[c]++] = (int32_t)i;
        }
        free(fill);
    }
    for (size_t k = 0; k < n_pairs; k++) {
        int same = k % 2 == 0;
        uint64_t attempt;
        for (attempt = 0; attempt < 1000; attempt++) {
            af_rng r;
            af_rng_seed(&r, seed, AF_RNG_STREAM_TEST, AF_PAIRS_RNG_TAG | attempt << 32, k);
            size_t i = (size_t)af_rng_below(&r, n), j;
            size_t c = (size_t)labels[i];
            if (same) {
                size_t m = first[c + 1] - first[c], u = (size_t)af_rng_below(&r, m - 1);
                j = (size_t)members[first[c] + (u < pos[i] ? u : u + 1)];
            } else {
                size_t d = 1 + (size_t)af_rng_below(&r, (uint64_t)n_classes - 1);
                size_t c2 = (c + d) % (size_t)n_classes;
                j = (size_t)members[first[c2] + af_rng_below(&r, first[c2 + 1] - first[c2])];
            }
            if (pair_set_add(&set, pair_key((uint32_t)i, (uint32_t)j))) continue;
            a[k] = (int32_t)i;
            b[k] = (int32_t)j;
            issame[k] = (uint8_t)same;
            break;
        }
        if (attempt == 1000) {
            st = af_errorf(AF_ERR_ARG, "pair list: no new %s pair for pair %zu after 1000 draws; "
                           "%zu pairs is too many for %zu images", same ? "same-class" : "different-class",
                           k, n_pairs, n);
            goto fail;
        }
    }
fail:
    free(first);
    free(members);
    free(pos);
    free(set.slot);
    return st;
}
