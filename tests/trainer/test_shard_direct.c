/* The fc shard's direct mode (gradient_acc = 1, paramserver/shard.c): each
 * pushed row's gradient goes straight into the optimizer state and the commit
 * finishes the step, with no accumulator. Checked against the accumulator path
 * (gradient_acc = 2 with every push in one micro-step: sum first, then the
 * whole update at once, the code every other test and the PyTorch-checked
 * trainer runs use) for sparse and dense SGD and AdamW over several steps
 * with two "workers" pushing disjoint rows: weights and optimizer state must
 * agree within TOL (printed with the measured difference). And a row pushed
 * twice in one step, which direct mode would apply twice, must be refused
 * naming the class id, leaving the shard exactly as it was. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/paramserver.h"
#include "arcface/rng.h"

enum { START = 100, COUNT = 60, D = 8, STEPS = 4 };
#define TOL 1e-6

static int failures;

static double maxdiff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static int init(af_ps_shard *s, const char *update, const char *opt, int acc)
{
    af_config cfg;
    af_config_defaults(&cfg);
    snprintf(cfg.fc_update, sizeof cfg.fc_update, "%s", update);
    snprintf(cfg.optimizer, sizeof cfg.optimizer, "%s", opt);
    cfg.gradient_acc = acc;
    cfg.momentum = 0.9f;
    cfg.weight_decay = 5e-3f;
    if (af_ps_shard_init(s, START, COUNT, D, COUNT, &cfg)) {
        fprintf(stderr, "af_ps_shard_init: %s\n", af_errmsg());
        return 1;
    }
    af_ps_shard_init_weights(s, 11);
    return 0;
}

static void compare_modes(const char *update, const char *opt)
{
    af_ps_shard a, b;
    if (init(&a, update, opt, 1) || init(&b, update, opt, 2)) exit(1);
    if (!a.direct || b.direct) {
        printf("%s %s: direct mode is %d / %d for gradient_acc 1 / 2 (expected 1 / 0) FAIL\n", update, opt, a.direct,
               b.direct);
        failures++;
    }
    af_rng r;
    af_rng_seed(&r, 5, AF_RNG_STREAM_TEST, 0, 0);
    int64_t ids[COUNT];
    float g[COUNT * D];
    for (int t = 0; t < STEPS; t++) {
        /* About half the rows, in random order, split between two pushes. */
        int n = 0;
        for (int i = 0; i < COUNT; i++)
            if (af_rng_below(&r, 2)) ids[n++] = START + i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)af_rng_below(&r, (uint64_t)i + 1);
            int64_t x = ids[i]; ids[i] = ids[j]; ids[j] = x;
        }
        for (int i = 0; i < n * D; i++) g[i] = af_rng_normal(&r);
        int h = n / 2;
        if (af_ps_shard_accumulate(&a, ids, h, g) || af_ps_shard_accumulate(&a, ids + h, n - h, g + h * D) ||
            af_ps_shard_accumulate(&b, ids, h, g) || af_ps_shard_accumulate(&b, ids + h, n - h, g + h * D)) {
            printf("%s %s step %d: push refused: %s FAIL\n", update, opt, t, af_errmsg());
            failures++;
            break;
        }
        af_ps_shard_apply(&a, 0.1f + 0.05f * t);
        af_ps_shard_apply(&b, 0.1f + 0.05f * t);
    }
    size_t n = (size_t)COUNT * D;
    double dw = maxdiff(a.w, b.w, n), dm = maxdiff(a.mom, b.mom, n), dv = a.mom2 ? maxdiff(a.mom2, b.mom2, n) : 0;
    /* The weights must have moved, or the comparison proves nothing. */
    af_ps_shard init0;
    if (init(&init0, update, opt, 1)) exit(1);
    double moved = maxdiff(a.w, init0.w, n);
    af_ps_shard_free(&init0);
    int ok = dw <= TOL && dm <= TOL && dv <= TOL && moved > 1e-3;
    failures += !ok;
    printf("%-6s %-5s: direct vs accumulator after %d steps: weights %.2e, state %.2e / %.2e (tolerance %.0e); "
           "weights moved %.2e %s\n", update, opt, STEPS, dw, dm, dv, TOL, moved, ok ? "ok" : "FAIL");
    af_ps_shard_free(&a);
    af_ps_shard_free(&b);
}

static void expect_refused(af_ps_shard *s, const char *what, const int64_t *ids, int n, const char *words)
{
    size_t bytes = sizeof(float) * (size_t)COUNT * D;
    float *w0 = malloc(bytes), *m0 = malloc(bytes);
    int32_t slot0[COUNT];
    memcpy(w0, s->w, bytes);
    memcpy(m0, s->mom, bytes);
    memcpy(slot0, s->slot, sizeof slot0);
    int64_t touched0 = s->n_touched;
    float g[4 * D];
    for (int i = 0; i < 4 * D; i++) g[i] = 1.0f;
    af_status st = af_ps_shard_accumulate(s, ids, n, g);
    int same = !memcmp(w0, s->w, bytes) && !memcmp(m0, s->mom, bytes) && !memcmp(slot0, s->slot, sizeof slot0) &&
               touched0 == s->n_touched;
    int ok = st == AF_ERR_PROTO && strstr(af_errmsg(), words) && same;
    failures += !ok;
    printf("%s: %s; shard unchanged: %s %s\n", what, st ? af_errmsg() : "accepted", same ? "yes" : "no",
           ok ? "ok" : "FAIL");
    free(w0);
    free(m0);
}

int main(void)
{
    compare_modes("sparse", "sgd");
    compare_modes("dense", "sgd");
    compare_modes("dense", "adamw");
    compare_modes("sparse", "adamw");

    af_ps_shard s;
    if (init(&s, "sparse", "sgd", 1)) return 1;
    float g[2 * D] = {0};
    const int64_t first[2] = {START + 1, START + 2}, again[2] = {START + 3, START + 2};
    const int64_t twice[2] = {START + 4, START + 4};
    if (af_ps_shard_accumulate(&s, first, 2, g)) {
        printf("first push refused: %s FAIL\n", af_errmsg());
        failures++;
    }
    expect_refused(&s, "a row pushed again in the same step", again, 2, "class id 102 (item 1) was already pushed");
    expect_refused(&s, "a row twice in one push", twice, 2, "class id 104 (item 1) comes twice in this push");
    af_ps_shard_apply(&s, 0.1f);
    if (af_ps_shard_accumulate(&s, again, 2, g)) {
        printf("the same rows in the next step refused: %s FAIL\n", af_errmsg());
        failures++;
    } else {
        printf("the same rows in the next step: accepted ok\n");
    }
    af_ps_shard_free(&s);
    printf("%s\n", failures ? "FAILED" : "all ok");
    return failures != 0;
}
