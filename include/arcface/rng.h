/* Counter-based random numbers: every random choice in training is a pure
 * function of (seed, purpose, step, index...), so any rank can recompute any
 * other rank's draw without a message, and a resumed run draws the same
 * numbers as an uninterrupted one. The generator is xoshiro256** seeded by
 * splitmix64 over a mix of the key words. */
#ifndef ARCFACE_RNG_H
#define ARCFACE_RNG_H

#include <stdint.h>

typedef struct { uint64_t s[4]; } af_rng;

/* Distinct streams for distinct purposes, so that e.g. changing the sampling
 * rate never shifts the data shuffle. */
enum af_rng_stream {
    AF_RNG_STREAM_SAMPLE = 1,  /* partial-fc negative sampling */
    AF_RNG_STREAM_SHUFFLE,     /* dataset epoch shuffle */
    AF_RNG_STREAM_AUGMENT,     /* flips and other augmentation */
    AF_RNG_STREAM_DROPOUT,
    AF_RNG_STREAM_INIT,        /* weight initialisation */
    AF_RNG_STREAM_SYNTH,       /* synthetic data */
    AF_RNG_STREAM_TEST,
};

uint64_t af_splitmix64(uint64_t *x);
/* Seeds from a key of up to four words (unused words 0). */
void af_rng_seed(af_rng *r, uint64_t seed, uint64_t stream, uint64_t a, uint64_t b);
uint64_t af_rng_u64(af_rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t af_rng_below(af_rng *r, uint64_t n);
/* Uniform float in [0, 1) with 24 random bits. */
float af_rng_uniform(af_rng *r);
/* Standard normal (Box-Muller, double internally). */
float af_rng_normal(af_rng *r);

#endif
