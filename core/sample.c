/* Class-shard arithmetic and Partial FC sampling (include/arcface/pfc.h).
 *
 * Negatives are drawn with Floyd's algorithm over the num_local - npos classes
 * that are not positives: O(k) expected time and memory for k negatives, so the
 * cost of a step does not grow with the number of classes a shard owns. The
 * j-th non-positive class is found by merging the sorted draws with the sorted
 * positives. */
#include "arcface/pfc.h"

#include <stdlib.h>
#include <string.h>

#include "arcface/rng.h"

int64_t af_shard_count(int64_t C, int P, int r) { return C / P + (r < C % P); }
int64_t af_shard_start(int64_t C, int P, int r) { return C / P * r + (r < C % P ? r : C % P); }

int af_shard_owner(int64_t C, int P, int64_t c)
{
    int64_t q = C / P, rem = C % P;
    /* The first rem shards hold q + 1 classes each. */
    if (c < rem * (q + 1)) return (int)(c / (q + 1));
    return (int)(rem + (c - rem * (q + 1)) / q);
}

af_status af_pfc_sampler_init(af_pfc_sampler *s, int64_t num_local, double rate, int maxB)
{
    memset(s, 0, sizeof *s);
    if (!(rate > 0 && rate <= 1)) return af_errorf(AF_ERR_ARG, "sample_rate must be in (0, 1], got %g", rate);
    if (num_local < 0 || maxB < 1) return af_errorf(AF_ERR_ARG, "sampler: num_local %lld, batch %d", (long long)num_local, maxB);
    s->num_local = num_local;
    s->num_sample = (int64_t)(rate * (double)num_local);
    s->maxB = maxB;
    s->cap = s->num_sample > maxB ? s->num_sample : maxB;
    uint64_t hcap = 16;
    while (hcap < 2 * (uint64_t)s->cap) hcap <<= 1;
    s->hash_mask = hcap - 1;
    s->index = af_malloc(sizeof(int64_t) * s->cap, "sampled class index");
    s->pos = af_malloc(sizeof(int64_t) * maxB, "positive classes");
    s->hash = rate < 1 ? af_malloc(sizeof(int64_t) * hcap, "sampling hash set") : NULL;
    if (!s->index || !s->pos || (rate < 1 && !s->hash)) {
        af_pfc_sampler_free(s);
        return AF_ERR_NOMEM;
    }
    return AF_OK;
}

void af_pfc_sampler_free(af_pfc_sampler *s)
{
    free(s->index); free(s->pos); free(s->hash);
    memset(s, 0, sizeof *s);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Returns 1 if v was newly inserted. Keys are >= 0; -1 marks empty. */
static int hash_insert(af_pfc_sampler *s, int64_t v)
{
    uint64_t h = ((uint64_t)v * 0x9e3779b97f4a7c15ull) >> 7;
    for (;; h++) {
        int64_t *slot = &s->hash[h & s->hash_mask];
        if (*slot == v) return 0;
        if (*slot < 0) { *slot = v; return 1; }
    }
}

static int64_t lower_bound(const int64_t *a, int64_t n, int64_t v)
{
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

af_status af_pfc_sample(af_pfc_sampler *s, const int64_t *labels, int B, uint64_t seed, int64_t step, int shard,
                        int64_t *labels_out)
{
    if (B > s->maxB) return af_errorf(AF_ERR_ARG, "sampler sized for batch %d, got %d", s->maxB, B);
    int64_t npos = 0;
    for (int b = 0; b < B; b++) {
        if (labels[b] < -1 || labels[b] >= s->num_local)
            return af_errorf(AF_ERR_ARG, "shard %d: label %lld of row %d outside [-1, %lld)", shard,
                             (long long)labels[b], b, (long long)s->num_local);
        if (labels[b] >= 0) s->pos[npos++] = labels[b];
    }
    qsort(s->pos, npos, sizeof(int64_t), cmp_i64);
    int64_t u = 0;
    for (int64_t i = 0; i < npos; i++)
        if (u == 0 || s->pos[i] != s->pos[u - 1]) s->pos[u++] = s->pos[i];
    npos = u;

    if (s->num_sample >= s->num_local) {
        for (int64_t i = 0; i < s->num_local; i++) s->index[i] = i;
        s->count = s->num_local;
    } else if (npos >= s->num_sample) {
        memcpy(s->index, s->pos, sizeof(int64_t) * npos);
        s->count = npos;
    } else {
        int64_t k = s->num_sample - npos, n = s->num_local - npos;
        af_rng r;
        af_rng_seed(&r, seed, AF_RNG_STREAM_SAMPLE, (uint64_t)step, (uint64_t)shard);
        memset(s->hash, 0xff, sizeof(int64_t) * (s->hash_mask + 1));
        int64_t *neg = s->index + npos;
        int64_t got = 0;
        /* Floyd: for j in [n-k, n): draw t in [0, j]; take t, or j if t is taken. */
        for (int64_t j = n - k; j < n; j++) {
            int64_t t = (int64_t)af_rng_below(&r, (uint64_t)j + 1);
            neg[got++] = hash_insert(s, t) ? t : (hash_insert(s, j), j);
        }
        qsort(neg, k, sizeof(int64_t), cmp_i64);
        /* The j-th non-positive class: skip over the positives at or below it. */
        int64_t p = 0;
        for (int64_t i = 0; i < k; i++) {
            while (p < npos && s->pos[p] <= neg[i] + p) p++;
            neg[i] += p;
        }
        /* Merge positives (sorted) and negatives (sorted, disjoint) into index. */
        int64_t *tmp = s->hash; /* reuse: hash capacity >= 2 * cap */
        int64_t a = 0, c = 0, o = 0;
        while (a < npos || c < k) {
            if (c >= k || (a < npos && s->pos[a] < neg[c])) tmp[o++] = s->pos[a++];
            else tmp[o++] = neg[c++];
        }
        memcpy(s->index, tmp, sizeof(int64_t) * o);
        s->count = o;
    }
    for (int b = 0; b < B; b++)
        labels_out[b] = labels[b] < 0 ? -1 : lower_bound(s->index, s->count, labels[b]);
    return AF_OK;
}

af_status af_pfc_global_init(af_pfc_global *g, int64_t C, int S, double rate, int maxB)
{
    memset(g, 0, sizeof *g);
    if (S < 1 || S > C) return af_errorf(AF_ERR_ARG, "sample_shards must be in [1, %lld], got %d", (long long)C, S);
    g->C = C;
    g->S = S;
    g->maxB = maxB;
    g->shard = af_calloc((size_t)S, sizeof *g->shard, "sampling shards");
    g->lab = af_malloc(sizeof(int64_t) * maxB, "sampling labels");
    g->remap = af_malloc(sizeof(int64_t) * maxB, "sampling remap");
    g->target = af_malloc(sizeof(int64_t) * maxB, "sampling targets");
    if (!g->shard || !g->lab || !g->remap || !g->target) goto nomem;
    for (int s = 0; s < S; s++) {
        af_status st = af_pfc_sampler_init(&g->shard[s], af_shard_count(C, S, s), rate, maxB);
        if (st) { af_pfc_global_free(g); return st; }
    }
    g->max_total = af_pfc_max_total(C, S, rate, maxB);
    if (!(g->ids = af_malloc(sizeof(int64_t) * (g->max_total ? g->max_total : 1), "sampled class ids"))) goto nomem;
    return AF_OK;
nomem:
    af_pfc_global_free(g);
    return AF_ERR_NOMEM;
}

void af_pfc_global_free(af_pfc_global *g)
{
    if (g->shard)
        for (int s = 0; s < g->S; s++) af_pfc_sampler_free(&g->shard[s]);
    free(g->shard); free(g->lab); free(g->remap); free(g->ids); free(g->target);
    memset(g, 0, sizeof *g);
}

af_status af_pfc_global_sample(af_pfc_global *g, const int64_t *labels, int B, uint64_t seed, int64_t step)
{
    if (B > g->maxB) return af_errorf(AF_ERR_ARG, "sampling sized for %d rows, got %d", g->maxB, B);
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= g->C)
            return af_errorf(AF_ERR_ARG, "row %d: label %lld outside [0, %lld)", b, (long long)labels[b], (long long)g->C);
    g->K = 0;
    for (int s = 0; s < g->S; s++) {
        int64_t start = af_shard_start(g->C, g->S, s), n = af_shard_count(g->C, g->S, s);
        for (int b = 0; b < B; b++) g->lab[b] = labels[b] >= start && labels[b] < start + n ? labels[b] - start : -1;
        af_status st = af_pfc_sample(&g->shard[s], g->lab, B, seed, step, s, g->remap);
        if (st) return st;
        for (int b = 0; b < B; b++)
            if (g->remap[b] >= 0) g->target[b] = g->K + g->remap[b];
        for (int64_t i = 0; i < g->shard[s].count; i++) g->ids[g->K + i] = start + g->shard[s].index[i];
        g->K += g->shard[s].count;
    }
    return AF_OK;
}

int64_t af_pfc_max_total(int64_t C, int S, double rate, int maxB)
{
    int64_t total = 0;
    for (int s = 0; s < S; s++) {
        int64_t n = af_shard_count(C, S, s), k = (int64_t)(rate * (double)n);
        if (k < maxB) k = maxB; /* positives alone may exceed num_sample */
        total += k < n ? k : n;
    }
    return total;
}
