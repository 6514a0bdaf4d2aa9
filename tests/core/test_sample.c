/* Partial FC sampling and class sharding (run under mpirun -np 2 by ctest, so
 * that two real ranks check they choose the same set without a message):
 * shard arithmetic, the num_sample formula, positives always kept, sorted and
 * remapped labels, determinism in (seed, step, shard), and uniformity of the
 * negatives by a chi-square test with a fixed seed. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/pfc.h"
#include "arcface/rng.h"

static int failures, checks;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static void test_shards(void)
{
    const int64_t Cs[] = {1, 7, 37, 1000, 1000003};
    for (size_t i = 0; i < sizeof Cs / sizeof Cs[0]; i++)
        for (int P = 1; P <= 7; P++) {
            int64_t next = 0;
            for (int r = 0; r < P; r++) {
                int64_t n = af_shard_count(Cs[i], P, r), s = af_shard_start(Cs[i], P, r);
                CHECK(s == next, "C=%lld P=%d shard %d starts at %lld, expected %lld", (long long)Cs[i], P, r,
                      (long long)s, (long long)next);
                CHECK(n == Cs[i] / P + (r < Cs[i] % P), "C=%lld P=%d shard %d count %lld", (long long)Cs[i], P, r,
                      (long long)n);
                if (n > 0) {
                    CHECK(af_shard_owner(Cs[i], P, s) == r && af_shard_owner(Cs[i], P, s + n - 1) == r,
                          "C=%lld P=%d: owner of [%lld, %lld) is not %d", (long long)Cs[i], P, (long long)s,
                          (long long)(s + n), r);
                }
                next = s + n;
            }
            CHECK(next == Cs[i], "C=%lld P=%d: shards cover %lld classes", (long long)Cs[i], P, (long long)next);
        }
}

/* One sampling call with invariants checked; returns a hash of the chosen set. */
static uint64_t sample_checked(af_pfc_sampler *s, const int64_t *lab, int B, uint64_t seed, int64_t step, int shard)
{
    int64_t out[256];
    if (af_pfc_sample(s, lab, B, seed, step, shard, out)) {
        printf("FAIL af_pfc_sample: %s\n", af_errmsg());
        failures++;
        return 0;
    }
    int npos = 0;
    int64_t uniq[256];
    for (int b = 0; b < B; b++) {
        if (lab[b] < 0) continue;
        int dup = 0;
        for (int i = 0; i < npos; i++) dup |= uniq[i] == lab[b];
        if (!dup) uniq[npos++] = lab[b];
    }
    int64_t expect = npos > s->num_sample ? npos : s->num_sample;
    if (s->num_sample >= s->num_local) expect = s->num_local;
    CHECK(s->count == expect, "count %lld, expected %lld (num_sample %lld, positives %d)", (long long)s->count,
          (long long)expect, (long long)s->num_sample, npos);
    for (int64_t i = 1; i < s->count; i++)
        CHECK(s->index[i - 1] < s->index[i], "index not strictly increasing at %lld", (long long)i);
    for (int64_t i = 0; i < s->count; i++)
        CHECK(s->index[i] >= 0 && s->index[i] < s->num_local, "index[%lld] = %lld out of range", (long long)i,
              (long long)s->index[i]);
    for (int b = 0; b < B; b++) {
        if (lab[b] < 0) { CHECK(out[b] == -1, "row %d: label -1 remapped to %lld", b, (long long)out[b]); continue; }
        CHECK(out[b] >= 0 && out[b] < s->count && s->index[out[b]] == lab[b],
              "row %d: positive %lld not kept or wrongly remapped (%lld)", b, (long long)lab[b], (long long)out[b]);
    }
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < s->count; i++) h = (h ^ (uint64_t)s->index[i]) * 1099511628211ull;
    return h;
}

static void test_sampling(int rank)
{
    const int B = 64;
    int64_t lab[64];
    const double rates[] = {0.1, 0.3, 0.5, 1.0};
    for (size_t ri = 0; ri < 4; ri++) {
        af_pfc_sampler s;
        int64_t nl = 997;
        if (af_pfc_sampler_init(&s, nl, rates[ri], B)) { failures++; return; }
        CHECK(s.num_sample == (int64_t)(rates[ri] * nl), "num_sample %lld for rate %g", (long long)s.num_sample,
              rates[ri]);
        for (int64_t step = 0; step < 50; step++) {
            af_rng r;
            af_rng_seed(&r, 5, AF_RNG_STREAM_TEST, (uint64_t)step, ri);
            for (int b = 0; b < B; b++) lab[b] = af_rng_below(&r, 4) == 0 ? -1 : (int64_t)af_rng_below(&r, nl);
            uint64_t h = sample_checked(&s, lab, B, 1234, step, 3);
            uint64_t h2 = sample_checked(&s, lab, B, 1234, step, 3);
            CHECK(h == h2, "rate %g step %lld: the same (seed, step, shard) chose a different set", rates[ri],
                  (long long)step);
            /* Across real ranks: both must have chosen the same set. */
            uint64_t other;
            MPI_Allreduce(&h, &other, 1, MPI_UINT64_T, MPI_BXOR, MPI_COMM_WORLD);
            int P;
            MPI_Comm_size(MPI_COMM_WORLD, &P);
            if (P == 2) CHECK(other == 0, "rank %d: ranks chose different sets at step %lld", rank, (long long)step);
            if (rates[ri] < 1 && step > 0) {
                uint64_t h3 = sample_checked(&s, lab, B, 1234, step + 1000, 3);
                uint64_t h4 = sample_checked(&s, lab, B, 1234, step, 4);
                CHECK(h3 != h && h4 != h, "rate %g: other step/shard gave the same set", rates[ri]);
            }
        }
        af_pfc_sampler_free(&s);
    }
    /* More positives than num_sample: only the positives are kept. */
    af_pfc_sampler s;
    if (af_pfc_sampler_init(&s, 100, 0.05, B)) { failures++; return; }
    for (int b = 0; b < B; b++) lab[b] = (b * 7) % 100;
    sample_checked(&s, lab, B, 1, 0, 0);
    CHECK(s.count > s.num_sample, "positives-only case kept %lld of %lld", (long long)s.count, (long long)s.num_sample);
    af_pfc_sampler_free(&s);
}

static void test_uniformity(void)
{
    /* 48 candidate negatives, 8 drawn per step, 20000 steps: each candidate is
     * expected 20000 * 8 / 48 times. Chi-square with 47 degrees of freedom; the
     * 0.1% critical value is 82.72. */
    enum { NL = 50, STEPS = 20000 };
    const int64_t lab[2] = {3, 17};
    af_pfc_sampler s;
    if (af_pfc_sampler_init(&s, NL, 0.2, 2)) { failures++; return; }
    int64_t out[2];
    double cnt[NL] = {0};
    for (int64_t step = 0; step < STEPS; step++) {
        af_pfc_sample(&s, lab, 2, 42, step, 0, out);
        for (int64_t i = 0; i < s.count; i++) cnt[s.index[i]] += 1;
    }
    CHECK(cnt[3] == STEPS && cnt[17] == STEPS, "positives kept %g and %g times of %d", cnt[3], cnt[17], STEPS);
    double expected = (double)STEPS * (s.num_sample - 2) / (NL - 2), chi2 = 0;
    for (int c = 0; c < NL; c++)
        if (c != 3 && c != 17) chi2 += (cnt[c] - expected) * (cnt[c] - expected) / expected;
    printf("chi-square of negative counts: %.2f with 47 dof (0.1%% critical value 82.72)\n", chi2);
    CHECK(chi2 < 82.72, "negatives not uniform: chi-square %.2f", chi2);
    af_pfc_sampler_free(&s);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    test_shards();
    test_sampling(rank);
    if (rank == 0) test_uniformity();
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%d checks, %d passed, %d failed\n", checks, checks - failures, failures);
    MPI_Finalize();
    return failures ? 1 : 0;
}
