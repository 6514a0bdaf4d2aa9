/* xoshiro256** with splitmix64 seeding (public-domain algorithms by Blackman
 * and Vigna), keyed by (seed, stream, a, b); see include/arcface/rng.h. */
#include "arcface/rng.h"

#include <math.h>

uint64_t af_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void af_rng_seed(af_rng *r, uint64_t seed, uint64_t stream, uint64_t a, uint64_t b)
{
    /* Fold the key words through splitmix so nearby keys give unrelated streams. */
    uint64_t x = seed;
    uint64_t h = af_splitmix64(&x);
    x = h ^ stream; h = af_splitmix64(&x);
    x = h ^ a;      h = af_splitmix64(&x);
    x = h ^ b;      h = af_splitmix64(&x);
    x = h;
    for (int i = 0; i < 4; i++) r->s[i] = af_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t af_rng_u64(af_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t af_rng_below(af_rng *r, uint64_t n)
{
    /* Rejection on the top of the range keeps the draw exactly uniform. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = af_rng_u64(r); while (v >= limit);
    return v % n;
}

float af_rng_uniform(af_rng *r) { return (float)(af_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float af_rng_normal(af_rng *r)
{
    double u1 = ((double)(af_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(af_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
