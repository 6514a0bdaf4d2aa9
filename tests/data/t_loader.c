/* data_loader: the epoch permutation and the worker split.
 *  - the permutation is a bijection for awkward sizes, differs between
 *    epochs, and spreads values evenly;
 *  - over an epoch, W workers together see every sample exactly once
 *    (drop_last), or once plus exactly the wrap-around padding;
 *  - W workers' local batches concatenated in worker order are bit for bit
 *    the batch one process with batch b*W gets (labels, indices, pixels,
 *    flips included);
 *  - the same (seed, epoch, position) gives the same batches, whatever the
 *    thread count, and a run resumed from a checkpointed position with a
 *    different W continues exactly;
 *  - bad configurations are refused; wait time is reported. */
#include "test_data.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPEC "synthetic:ids=13,per_id=8,size=12,channels=3,seed=4" /* 104 images */
#define PER (3 * 12 * 12)

static void check_permutation(void)
{
    const int64_t sizes[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097, 65537};
    int all_ok = 1;
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int64_t n = sizes[k];
        uint8_t *seen = calloc((size_t)n, 1);
        int64_t diff_epochs = 0;
        af_epoch_perm p0, p1;
        af_epoch_perm_init(&p0, 42, 0, n);
        af_epoch_perm_init(&p1, 42, 1, n);
        int ok = 1;
        for (int64_t i = 0; i < n; i++) {
            int64_t v = af_epoch_perm_at(&p0, i);
            ok &= v >= 0 && v < n && !seen[v];
            if (v >= 0 && v < n) seen[v] = 1;
            diff_epochs += v != af_epoch_perm_at(&p1, i);
        }
        CHECK(ok, "n = %" PRId64 ": not a permutation", n);
        if (n >= 16) CHECK(diff_epochs > n / 2, "n = %" PRId64 ": epochs 0 and 1 agree at %" PRId64 " positions", n,
                           n - diff_epochs);
        all_ok &= ok;
        free(seen);
    }
    /* Where does position 0 go, over many epochs? Uniform over 10 values. */
    int count[10] = {0};
    for (int e = 0; e < 20000; e++) {
        af_epoch_perm p;
        af_epoch_perm_init(&p, 7, e, 10);
        count[af_epoch_perm_at(&p, 0)]++;
    }
    double worst = 0;
    for (int v = 0; v < 10; v++) worst = fmax(worst, fabs(count[v] - 2000.0) / 2000.0);
    /* Displacement: a good shuffle moves an element about n/3 on average. */
    af_epoch_perm p;
    af_epoch_perm_init(&p, 9, 3, 100000);
    double disp = 0;
    for (int64_t i = 0; i < 100000; i++) disp += fabs((double)af_epoch_perm_at(&p, i) - (double)i);
    disp /= 100000.0 * 100000.0;
    int flips = 0;
    for (int i = 0; i < 100000; i++) flips += af_sampler_flip(5, 2, i);
    printf("  permutation: bijective for 10 sizes: %s; perm(0) over 20000 epochs: worst bin off by %.1f%%; mean "
           "displacement %.3f n (ideal 0.333); flips %.4f (ideal 0.5)\n",
           all_ok ? "yes" : "NO", 100 * worst, disp, flips / 100000.0);
    CHECK(worst < 0.08, "perm(0) not uniform: a bin is off by %.1f%%", 100 * worst);
    CHECK(fabs(disp - 1.0 / 3) < 0.01, "mean displacement %.4f n, expected 0.333 n", disp);
    CHECK(abs(flips - 50000) < 1000, "%d flips of 100000", flips);
}

/* One epoch (and one batch more) of worker w of W; indices (steps, b). */
static int64_t run_worker(af_dataset *ds, int b, int W, int w, int drop_last, int threads, uint64_t seed,
                          int64_t steps, float *images, int64_t *labels, int64_t *index)
{
    af_loader_config cfg = {.batch = b, .world = W, .rank = w, .seed = seed, .drop_last = drop_last, .flip = 1,
                            .threads = threads};
    af_loader *ld = NULL;
    if (!CHECK_OK(af_loader_open(&ld, ds, &cfg))) return -1;
    int64_t spe = af_loader_steps_per_epoch(ld);
    for (int64_t s = 0; s < steps; s++)
        if (!CHECK_OK(af_loader_next(ld, images + (size_t)s * b * PER, labels + s * b, index + s * b)))
            break;
    af_loader_close(ld);
    return spe;
}

static void check_coverage(af_dataset *ds)
{
    const int64_t n = af_dataset_size(ds);
    const int b = 5;
    for (int drop_last = 0; drop_last < 2; drop_last++)
        for (int W = 1; W <= 4; W++) {
            int64_t G = (int64_t)b * W, spe = drop_last ? n / G : (n + G - 1) / G;
            int *count = calloc((size_t)n, sizeof *count);
            int64_t *idx = malloc(sizeof(int64_t) * spe * b), *lab = malloc(sizeof(int64_t) * spe * b);
            float *img = malloc(sizeof(float) * spe * b * PER);
            for (int w = 0; w < W; w++) {
                int64_t got = run_worker(ds, b, W, w, drop_last, W == 3 ? 2 : 0, 11, spe, img, lab, idx);
                CHECK(got == spe, "W=%d: %" PRId64 " steps per epoch, expected %" PRId64, W, got, spe);
                for (int64_t i = 0; i < spe * b; i++) count[idx[i]]++;
            }
            int64_t once = 0, twice = 0, never = 0, more = 0, total = spe * G;
            for (int64_t i = 0; i < n; i++) {
                once += count[i] == 1;
                twice += count[i] == 2;
                never += count[i] == 0;
                more += count[i] > 2;
            }
            printf("  W=%d b=%d drop_last=%d: %" PRId64 " positions over %" PRId64 " images: %" PRId64
                   " seen once, %" PRId64 " twice, %" PRId64 " never\n",
                   W, b, drop_last, total, n, once, twice, never);
            if (drop_last)
                CHECK(once == total && twice == 0 && more == 0, "drop_last W=%d: %" PRId64 " once, %" PRId64 " twice",
                      W, once, twice);
            else
                CHECK(never == 0 && more == 0 && twice == total - n, "W=%d: %" PRId64 " never, %" PRId64
                      " twice (expected %" PRId64 " padding repeats)", W, never, twice, total - n);
            /* The padding repeats the start of the epoch's order. */
            if (!drop_last && total > n) {
                af_epoch_perm p;
                af_epoch_perm_init(&p, 11, 0, n);
                int ok = 1;
                for (int64_t i = 0; i < total - n; i++) ok &= count[af_epoch_perm_at(&p, i)] == 2;
                CHECK(ok, "W=%d: padding is not the first %" PRId64 " positions of the order", W, total - n);
            }
            free(count);
            free(idx);
            free(lab);
            free(img);
        }
}

/* W workers with batch b versus one process with batch b*W. */
static void check_concat(af_dataset *ds)
{
    const int b = 3, steps = 12;
    for (int W = 2; W <= 4; W++) {
        int G = b * W;
        float *one = malloc(sizeof(float) * steps * G * PER), *part = malloc(sizeof(float) * steps * b * PER);
        int64_t *l1 = malloc(sizeof(int64_t) * steps * G), *i1 = malloc(sizeof(int64_t) * steps * G);
        int64_t *lp = malloc(sizeof(int64_t) * steps * b), *ip = malloc(sizeof(int64_t) * steps * b);
        run_worker(ds, G, 1, 0, 0, 2, 99, steps, one, l1, i1);
        int same = 1;
        for (int w = 0; w < W; w++) {
            run_worker(ds, b, W, w, 0, w % 2, 99, steps, part, lp, ip);
            for (int s = 0; s < steps; s++)
                for (int i = 0; i < b; i++) {
                    size_t g = (size_t)s * G + (size_t)w * b + i, l = (size_t)s * b + i;
                    same &= l1[g] == lp[l] && i1[g] == ip[l] &&
                            memcmp(one + g * PER, part + l * PER, PER * sizeof(float)) == 0;
                }
        }
        printf("  W=%d x b=%d vs 1 x b=%d over %d steps (into the 2nd epoch, flips on): %s\n", W, b, G, steps,
               same ? "identical" : "DIFFERENT");
        CHECK(same, "W=%d: concatenated worker batches differ from the single-process batch", W);
        free(one);
        free(part);
        free(l1);
        free(i1);
        free(lp);
        free(ip);
    }
}

static int batches_equal(af_dataset *ds, af_loader_config a, af_loader_config b, int steps)
{
    af_loader *la = NULL, *lb = NULL;
    int eq = 1;
    int bs = a.batch;
    float *x = malloc(sizeof(float) * bs * PER), *y = malloc(sizeof(float) * bs * PER);
    int64_t lx[64], ly[64], ix[64], iy[64];
    if (!CHECK_OK(af_loader_open(&la, ds, &a)) || !CHECK_OK(af_loader_open(&lb, ds, &b))) {
        eq = -1;
        goto done;
    }
    for (int s = 0; s < steps; s++) {
        if (!CHECK_OK(af_loader_next(la, x, lx, ix)) || !CHECK_OK(af_loader_next(lb, y, ly, iy))) {
            eq = -1;
            break;
        }
        eq &= memcmp(x, y, sizeof(float) * bs * PER) == 0 && memcmp(lx, ly, sizeof(int64_t) * bs) == 0 &&
              memcmp(ix, iy, sizeof(int64_t) * bs) == 0;
    }
done:
    af_loader_close(la);
    af_loader_close(lb);
    free(x);
    free(y);
    return eq;
}

static void check_determinism(af_dataset *ds)
{
    af_loader_config base = {.batch = 8, .world = 2, .rank = 1, .seed = 5, .flip = 1};
    af_loader_config c = base;
    c.threads = 2;
    c.prefetch = 1;
    int r1 = batches_equal(ds, base, c, 20);
    c.threads = 2;
    c.prefetch = 5;
    int r2 = batches_equal(ds, base, c, 20);
    c = base;
    c.seed = 6;
    int r3 = batches_equal(ds, base, c, 3);
    printf("  same seed: inline vs 2 threads/ring 1: %s, vs 2 threads/ring 5: %s; seed 5 vs 6: %s\n",
           r1 == 1 ? "identical" : "DIFFERENT", r2 == 1 ? "identical" : "DIFFERENT", r3 == 0 ? "different" : "SAME");
    CHECK(r1 == 1 && r2 == 1, "thread count or ring size changed the batches");
    CHECK(r3 == 0, "changing the seed did not change the batches");
}

static void check_flip(af_dataset *ds)
{
    af_loader_config a = {.batch = 16, .world = 1, .seed = 8, .flip = 1}, b = a;
    b.flip = 0;
    af_loader *la = NULL, *lb = NULL;
    CHECK_OK(af_loader_open(&la, ds, &a));
    CHECK_OK(af_loader_open(&lb, ds, &b));
    float x[16 * PER], y[16 * PER];
    int64_t l[16], ix[16], iy[16];
    int ok = 1, flipped = 0;
    for (int s = 0; s < 2; s++) {
        CHECK_OK(af_loader_next(la, x, l, ix));
        CHECK_OK(af_loader_next(lb, y, l, iy));
        for (int i = 0; i < 16; i++) {
            int f = af_sampler_flip(8, 0, s * 16 + i);
            flipped += f;
            for (int ch = 0; ch < 3; ch++)
                for (int r = 0; r < 12; r++)
                    for (int col = 0; col < 12; col++)
                        ok &= x[i * PER + (ch * 12 + r) * 12 + col] == y[i * PER + (ch * 12 + r) * 12 + (f ? 11 - col : col)];
        }
    }
    printf("  flip: %d of 32 images mirrored, each exactly as af_sampler_flip(seed, epoch, position) says: %s\n",
           flipped, ok ? "yes" : "NO");
    CHECK(ok, "flipped images do not match af_sampler_flip");
    af_loader_close(la);
    af_loader_close(lb);
}

static void check_resume(af_dataset *ds)
{
    /* Run A: W=2, b=4 (G=8), 7 steps; checkpoint; then 3 more steps.
     * Run B: resumed from the checkpoint with W=4, b=2. */
    const int steps_before = 16, steps_after = 5; /* 104 images / 8 = 13 steps: crosses an epoch */
    af_loader_config a0 = {.batch = 4, .world = 2, .rank = 0, .seed = 21, .flip = 1, .threads = 1}, a1 = a0;
    a1.rank = 1;
    af_loader *l0 = NULL, *l1 = NULL;
    CHECK_OK(af_loader_open(&l0, ds, &a0));
    CHECK_OK(af_loader_open(&l1, ds, &a1));
    float img[4 * PER];
    int64_t lab[4], idx0[4];
    for (int s = 0; s < steps_before; s++) {
        CHECK_OK(af_loader_next(l0, img, lab, idx0));
        CHECK_OK(af_loader_next(l1, img, lab, idx0));
    }
    int64_t epoch = af_loader_epoch(l0), pos = af_loader_position(l0);
    printf("  checkpoint after %d steps of 13 per epoch: epoch %" PRId64 " position %" PRId64 "\n", steps_before, epoch,
           pos);
    CHECK(epoch == 1 && pos == 3 * 8, "epoch %" PRId64 " position %" PRId64 ", expected 1 and 24", epoch, pos);
    CHECK(af_loader_epoch(l1) == epoch && af_loader_position(l1) == pos, "workers disagree on the position");
    int64_t want[5][8], got[5][8];
    float wimg[5][8 * PER], gimg[5][8 * PER];
    for (int s = 0; s < steps_after; s++) {
        CHECK_OK(af_loader_next(l0, wimg[s], lab, want[s]));
        CHECK_OK(af_loader_next(l1, wimg[s] + 4 * PER, lab, want[s] + 4));
    }
    af_loader_close(l0);
    af_loader_close(l1);
    int same = 1;
    for (int w = 0; w < 4; w++) {
        af_loader_config c = {.batch = 2, .world = 4, .rank = w, .seed = 21, .flip = 1, .start_epoch = epoch,
                              .start_pos = pos, .threads = w % 2};
        af_loader *ld = NULL;
        if (!CHECK_OK(af_loader_open(&ld, ds, &c))) continue;
        for (int s = 0; s < steps_after; s++) CHECK_OK(af_loader_next(ld, gimg[s] + w * 2 * PER, lab, got[s] + w * 2));
        af_loader_close(ld);
    }
    for (int s = 0; s < steps_after; s++)
        same &= memcmp(want[s], got[s], sizeof want[s]) == 0 && memcmp(wimg[s], gimg[s], sizeof wimg[s]) == 0;
    printf("  resumed with 4 workers x 2 instead of 2 x 4: next %d global batches %s\n", steps_after,
           same ? "identical" : "DIFFERENT");
    CHECK(same, "the resumed run does not continue with the same samples");

    /* start_pos at the very end of an epoch is the start of the next. */
    af_loader_config e = {.batch = 8, .world = 1, .seed = 21, .start_epoch = 2, .start_pos = 13 * 8};
    af_loader *ld = NULL;
    if (CHECK_OK(af_loader_open(&ld, ds, &e)))
        CHECK(af_loader_epoch(ld) == 3 && af_loader_position(ld) == 0, "end-of-epoch start: epoch %" PRId64
              " position %" PRId64, af_loader_epoch(ld), af_loader_position(ld));
    af_loader_close(ld);
}

static void check_config_errors(af_dataset *ds)
{
    af_loader *ld = NULL;
    af_loader_config c = {.batch = 4, .world = 2, .rank = 0, .start_pos = 4};
    CHECK_ERR(af_loader_open(&ld, ds, &c), AF_ERR_ARG, "multiple of the global batch 8");
    c = (af_loader_config){.batch = 100, .world = 2, .drop_last = 1};
    CHECK_ERR(af_loader_open(&ld, ds, &c), AF_ERR_ARG, "fewer than one global batch");
    c = (af_loader_config){.batch = 4, .world = 2, .rank = 2};
    CHECK_ERR(af_loader_open(&ld, ds, &c), AF_ERR_ARG, "rank 2");
    c = (af_loader_config){.batch = 0, .world = 1};
    CHECK_ERR(af_loader_open(&ld, ds, &c), AF_ERR_ARG, "batch 0");
    /* Without drop_last a dataset smaller than the global batch is padded. */
    c = (af_loader_config){.batch = 100, .world = 2};
    if (CHECK_OK(af_loader_open(&ld, ds, &c)))
        CHECK(af_loader_steps_per_epoch(ld) == 1, "%" PRId64 " steps", af_loader_steps_per_epoch(ld));
    af_loader_close(ld);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void check_wait(void)
{
    af_dataset *ds = NULL;
    if (!CHECK_OK(af_dataset_open(&ds, "synthetic:ids=50,per_id=4,size=64", NULL))) return;
    float *img = malloc(sizeof(float) * 8 * 3 * 64 * 64);
    int64_t lab[8];
    for (int threads = 0; threads <= 1; threads++) {
        af_loader_config c = {.batch = 8, .world = 1, .seed = 1, .threads = threads, .prefetch = 4};
        af_loader *ld = NULL;
        if (!CHECK_OK(af_loader_open(&ld, ds, &c))) continue;
        double t0 = now(), work = 0;
        for (int s = 0; s < 12; s++) {
            CHECK_OK(af_loader_next(ld, img, lab, NULL));
            /* A "training step" far slower than decoding 8 small images. */
            double w0 = now();
            while (now() - w0 < 0.02) {
            }
            work += now() - w0;
        }
        af_loader_stats st;
        af_loader_get_stats(ld, &st);
        printf("  %s: 12 steps, %.3f s total, data wait %.3f s (%.0f%% of the run)\n",
               threads ? "1 decode thread" : "inline decode", now() - t0, st.wait_s,
               100 * st.wait_s / (now() - t0));
        CHECK(st.batches == 12 && st.wait_s >= 0, "stats: %" PRId64 " batches, wait %.3f", st.batches, st.wait_s);
        if (!threads) CHECK(st.wait_s > 0, "inline decoding reported no wait");
        (void)work;
        af_loader_close(ld);
    }
    free(img);
    af_dataset_close(ds);
}

void t_loader(void)
{
    check_permutation();
    af_dataset *ds = NULL;
    if (!CHECK_OK(af_dataset_open(&ds, SPEC, NULL))) return;
    check_coverage(ds);
    check_concat(ds);
    check_determinism(ds);
    check_flip(ds);
    check_resume(ds);
    check_config_errors(ds);
    af_dataset_close(ds);
    check_wait();
}
