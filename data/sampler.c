/* Epoch order and the worker split (include/arcface/data.h, section 2): pure
 * functions of (seed, epoch, position), so every worker, every decode thread
 * and a resumed run agree on which image sits where without talking.
 *
 * The shuffle is a keyed Feistel permutation instead of a Fisher-Yates array
 * because a worker only needs its own 1/W of each epoch: it evaluates the
 * permutation at those positions in O(1) each, and memory stays O(1) even
 * for the hundred-million-image synthetic runs. */
#include "arcface/data.h"

#include "arcface/rng.h"

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void af_epoch_perm_init(af_epoch_perm *p, uint64_t seed, int64_t epoch, int64_t n)
{
    int bits = 2;
    while (bits < 62 && ((uint64_t)1 << bits) < (uint64_t)n) bits += 2;
    p->n = n;
    p->half_bits = bits / 2;
    p->half_mask = ((uint64_t)1 << p->half_bits) - 1;
    af_rng r;
    af_rng_seed(&r, seed, AF_RNG_STREAM_SHUFFLE, (uint64_t)epoch, 0);
    for (int k = 0; k < 6; k++) p->keys[k] = af_rng_u64(&r);
}

static uint64_t feistel(const af_epoch_perm *p, uint64_t x)
{
    uint64_t l = x >> p->half_bits, r = x & p->half_mask;
    for (int k = 0; k < 6; k++) {
        uint64_t t = l ^ (mix64(r ^ p->keys[k]) & p->half_mask);
        l = r;
        r = t;
    }
    return l << p->half_bits | r;
}

int64_t af_epoch_perm_at(const af_epoch_perm *p, int64_t pos)
{
    /* Cycle walking: the Feistel net permutes [0, 4^k) with 4^k < 4n, so
     * iterating until the value falls in [0, n) takes < 4 steps on average
     * and stays a bijection of [0, n). */
    uint64_t x = (uint64_t)pos;
    do x = feistel(p, x);
    while (x >= (uint64_t)p->n);
    return (int64_t)x;
}

int64_t af_sampler_epoch_positions(int64_t n, int64_t global_batch, int drop_last)
{
    if (n <= 0 || global_batch <= 0) return 0;
    int64_t steps = drop_last ? n / global_batch : (n + global_batch - 1) / global_batch;
    return steps * global_batch;
}

int64_t af_sampler_index(const af_epoch_perm *p, int64_t pos) { return af_epoch_perm_at(p, pos % p->n); }

int af_sampler_flip(uint64_t seed, int64_t epoch, int64_t pos)
{
    af_rng r;
    af_rng_seed(&r, seed, AF_RNG_STREAM_AUGMENT, (uint64_t)epoch, (uint64_t)pos);
    return (int)(af_rng_u64(&r) >> 63);
}
