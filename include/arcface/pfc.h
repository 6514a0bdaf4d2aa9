/* Class sharding and Partial FC sampling (arcface_torch partial_fc_v2 semantics).
 *
 * Shards: C classes over P shards in contiguous ranges,
 *   num_local(r)   = C / P + (r < C % P)
 *   class_start(r) = (C / P) * r + min(r, C % P).
 * Sampling, per shard and step: num_sample = (int)(rate * num_local); all
 * positives of the global batch that fall in the shard are kept, the rest is
 * filled with uniformly random negatives without replacement; the chosen
 * indices are sorted and labels remapped to positions in that list. If the
 * positives alone exceed num_sample, only the positives are kept. The choice is
 * a pure function of (seed, step, shard) and the batch labels, so every rank
 * computes the same set without a message. */
#ifndef ARCFACE_PFC_H
#define ARCFACE_PFC_H

#include <stdint.h>

#include "arcface/status.h"

int64_t af_shard_count(int64_t C, int P, int r);
int64_t af_shard_start(int64_t C, int P, int r);
/* The shard that owns class c (0 <= c < C). */
int af_shard_owner(int64_t C, int P, int64_t c);

/* Buffers sized once for one shard; no allocation per step. */
typedef struct {
    int64_t num_local, num_sample;
    int maxB;
    int64_t cap;           /* capacity of index: max(num_sample, maxB) */
    int64_t *index;        /* (cap) chosen local class ids, sorted */
    int64_t count;         /* how many are chosen this step */
    int64_t *pos;          /* (maxB) unique sorted positives */
    int64_t *hash;         /* open-addressing set for Floyd's algorithm */
    uint64_t hash_mask;
} af_pfc_sampler;

af_status af_pfc_sampler_init(af_pfc_sampler *s, int64_t num_local, double rate, int maxB);
void af_pfc_sampler_free(af_pfc_sampler *s);

/* labels (B): local class id in [0, num_local) or -1 (not in this shard).
 * Fills s->index[0..s->count) and writes remapped labels (position in index, or -1)
 * to labels_out (B). With rate >= 1 (num_sample == num_local) every class is chosen. */
af_status af_pfc_sample(af_pfc_sampler *s, const int64_t *labels, int B, uint64_t seed, int64_t step, int shard,
                        int64_t *labels_out);

#endif

/* ---- Sampling over the whole class space ----
 * The sampled set is defined over S logical shards of the C classes (the
 * `sample_shards` setting), not over the parameter servers, so that it is the
 * same whatever the number of servers: training with any layout gives the
 * same numbers. S = 1 samples globally; S = 8 reproduces arcface_torch on 8
 * GPUs. The result is the sorted list of sampled global class ids and, for each
 * row of the global batch, the position of its class in that list. */
typedef struct {
    int64_t C;
    int S;
    int maxB;
    af_pfc_sampler *shard;  /* (S) */
    int64_t *lab, *remap;   /* (maxB) scratch */
    int64_t *ids;           /* (max_total) sorted global class ids */
    int64_t K;              /* how many this step */
    int64_t max_total;
    int64_t *target;        /* (maxB) position of each row's class in ids */
} af_pfc_global;

af_status af_pfc_global_init(af_pfc_global *g, int64_t C, int S, double rate, int maxB);
void af_pfc_global_free(af_pfc_global *g);
/* The most classes one step can sample (sizes buffers on workers and servers). */
int64_t af_pfc_max_total(int64_t C, int S, double rate, int maxB);
/* labels: B global class ids in [0, C). */
af_status af_pfc_global_sample(af_pfc_global *g, const int64_t *labels, int B, uint64_t seed, int64_t step);
