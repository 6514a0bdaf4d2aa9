/* Whole-model checks that need no PyTorch:
 *  - synchronised batch norm: two workers (threads) holding 2 rows each,
 *    summing statistics through the allreduce hook, reproduce one process
 *    holding all 4 rows (embeddings, summed gradients, running statistics),
 *    dropout included;
 *  - the gradient-ready hook: ranges arrive from the end of the array to
 *    the start, cover [0, n_trainable) exactly once, and are final;
 *  - HDF5 round trip, and load errors naming the offending key with the
 *    model left unchanged;
 *  - deterministic initialisation, state_dict bookkeeping, argument errors.
 * Small inputs (28x28 and 32x32) keep it fast enough for AddressSanitizer. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arcface/backbone.h"
#include "arcface/h5io.h"
#include "arcface/rng.h"

static int failures;

static void check(const char *what, double err, double tol)
{
    int ok = err <= tol && isfinite(err);
    printf("  %-62s %.3g (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static void expect(const char *what, int cond)
{
    printf("  %-62s %s\n", what, cond ? "ok" : "FAIL");
    if (!cond) failures++;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

/* ---- two workers in threads, summing through a barrier ---- */

typedef struct {
    pthread_barrier_t bar;
    double *buf[2];
    double *scratch[2];
} group;

typedef struct {
    group *g;
    int rank;
    af_backbone *m;
    const float *x;
    const float *demb;
    float emb[2 * 512];
    af_nn_ctx ctx;
    size_t ranges[4096][2];
    int nranges;
    float *snapshot; /* grads as they were when reported ready */
    af_status st;
} worker;

static af_status thread_allreduce(void *user, double *buf, size_t n)
{
    worker *w = user;
    group *g = w->g;
    g->buf[w->rank] = buf;
    pthread_barrier_wait(&g->bar);
    for (size_t i = 0; i < n; i++) g->scratch[w->rank][i] = g->buf[0][i] + g->buf[1][i];
    pthread_barrier_wait(&g->bar);
    memcpy(buf, g->scratch[w->rank], n * sizeof(double));
    return AF_OK;
}

static void record_ready(void *user, size_t b, size_t e)
{
    worker *w = user;
    if (w->nranges < 4096) {
        w->ranges[w->nranges][0] = b;
        w->ranges[w->nranges][1] = e;
    }
    w->nranges++;
    memcpy(w->snapshot + b, w->m->grads + b, (e - b) * sizeof(float));
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const float *emb;
    const int D = w->m->cfg.embedding;
    af_backbone_zero_grad(w->m);
    w->st = af_backbone_forward(w->m, w->x, 2, 1, &w->ctx, &emb);
    if (!w->st) {
        memcpy(w->emb, emb, 2 * D * sizeof(float));
        w->st = af_backbone_backward(w->m, w->demb, &w->ctx);
    }
    return NULL;
}

static void test_sync(const char *arch, int hw, float dropout)
{
    printf("%s %dx%d, dropout %.1f: one process with 4 rows vs two workers with 2 rows each\n", arch, hw, hw, dropout);
    af_backbone_config cfg = {.arch = arch, .in_h = hw, .in_w = hw, .embedding = 64, .dropout = dropout,
                              .max_batch = 4, .nthreads = 2, .seed = 3};
    af_backbone one, w0, w1;
    if (af_backbone_init(&one, &cfg)) {
        printf("init: %s\nFAIL\n", af_errmsg());
        failures++;
        return;
    }
    cfg.max_batch = 2;
    cfg.nthreads = 1;
    af_backbone_init(&w0, &cfg);
    af_backbone_init(&w1, &cfg);
    const int D = 64;
    const size_t per = (size_t)one.cfg.in_c * hw * hw;
    af_rng r;
    af_rng_seed(&r, 5, AF_RNG_STREAM_TEST, 0, 0);
    float *x = malloc(4 * per * sizeof(float)), *demb = malloc(4 * D * sizeof(float));
    for (size_t i = 0; i < 4 * per; i++) x[i] = af_rng_normal(&r);
    for (size_t i = 0; i < 4 * (size_t)D; i++) demb[i] = af_rng_normal(&r);
    af_nn_ctx c1 = {.global_batch = 4, .seed = 9, .step = 2};
    const float *emb;
    af_backbone_zero_grad(&one);
    af_status st = af_backbone_forward(&one, x, 4, 1, &c1, &emb);
    float *emb1 = malloc(4 * D * sizeof(float));
    if (!st) memcpy(emb1, emb, 4 * D * sizeof(float));
    if (!st) st = af_backbone_backward(&one, demb, &c1);
    expect("single process forward/backward", st == AF_OK);

    group g;
    pthread_barrier_init(&g.bar, NULL, 2);
    size_t maxc = 4096;
    g.scratch[0] = malloc(maxc * sizeof(double));
    g.scratch[1] = malloc(maxc * sizeof(double));
    worker *ws = calloc(2, sizeof(worker));
    af_backbone *wm[2] = {&w0, &w1};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        ws[k] = (worker){.g = &g, .rank = k, .m = wm[k], .x = x + 2 * k * per, .demb = demb + 2 * k * D};
        ws[k].ctx = (af_nn_ctx){.allreduce = thread_allreduce, .grads_ready = record_ready, .user = &ws[k],
                                .global_batch = 4, .row_offset = 2 * k, .seed = 9, .step = 2};
        ws[k].snapshot = calloc(wm[k]->n_trainable, sizeof(float));
        pthread_create(&th[k], NULL, worker_main, &ws[k]);
    }
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    expect("workers forward/backward", ws[0].st == AF_OK && ws[1].st == AF_OK);
    float *embw = malloc(4 * D * sizeof(float));
    memcpy(embw, ws[0].emb, 2 * D * sizeof(float));
    memcpy(embw + 2 * D, ws[1].emb, 2 * D * sizeof(float));
    check("embeddings: workers vs one process (relative)", rel_err(embw, emb1, 4 * (size_t)D), 1e-4);
    float *gsum = malloc(one.n_trainable * sizeof(float));
    for (size_t i = 0; i < one.n_trainable; i++) gsum[i] = w0.grads[i] + w1.grads[i];
    /* Some gradients are exactly 0 in exact arithmetic (a bias followed by a
     * training-mode batch norm) and are rounding noise in float, so each
     * tensor's error is relative to max(its largest value, 1e-2 x the
     * largest gradient anywhere). (With 1e-3 the noise of fc.bias, a sum of
     * cancelling float32 terms, crossed 1e-4 depending only on the compiler's
     * vectorisation: 1.09e-4 in the -O2 x86-64-v3 ASan build.) */
    double gmax = 0.0, worst = 0.0;
    for (size_t i = 0; i < one.n_trainable; i++) gmax = fmax(gmax, fabs(one.grads[i]));
    const char *worst_key = "";
    int floored = 0;
    for (size_t i = 0; i < one.n_tensors; i++) {
        const af_backbone_tensor *e = &one.tensors[i];
        if (e->kind != AF_TENSOR_KIND_PARAM) continue;
        double d = 0.0, sc = 0.0;
        for (size_t j = e->offset; j < e->offset + e->numel; j++) {
            d = fmax(d, fabs((double)gsum[j] - one.grads[j]));
            sc = fmax(sc, fabs(one.grads[j]));
        }
        if (sc < 1e-2 * gmax) floored++, sc = 1e-2 * gmax;
        if (d / sc > worst) worst = d / sc, worst_key = e->key;
    }
    char label[160];
    snprintf(label, sizeof label, "summed worker grads vs one process (worst %.24s; %d near 0)", worst_key, floored);
    check(label, worst, 1e-4);
    check("running mean/var: worker 0 vs one process",
          rel_err(w0.buffers, one.buffers, one.n_buffers), 1e-5);
    check("running mean/var: worker 1 vs worker 0 (must be identical)",
          rel_err(w1.buffers, w0.buffers, one.n_buffers), 0.0);
    int counts_ok = 1;
    for (size_t i = 0; i < one.n_counts; i++) counts_ok &= one.counts[i] == 1 && w0.counts[i] == 1;
    expect("num_batches_tracked == 1 everywhere", counts_ok);

    /* the gradient-ready ranges */
    worker *w = &ws[0];
    int ok = w->nranges > 1 && w->nranges <= 4096;
    size_t expect_end = w0.n_trainable;
    for (int i = 0; ok && i < w->nranges; i++) {
        ok = w->ranges[i][1] == expect_end && w->ranges[i][0] < w->ranges[i][1];
        expect_end = w->ranges[i][0];
    }
    ok = ok && expect_end == 0;
    char l2[128];
    snprintf(l2, sizeof l2, "grads_ready: %d ranges, descending, covering [0, %zu)", w->nranges, w0.n_trainable);
    expect(l2, ok);
    check("grads_ready: values at report time equal the final values",
          rel_err(w->snapshot, w0.grads, w0.n_trainable), 0.0);

    for (int k = 0; k < 2; k++) free(ws[k].snapshot);
    free(ws), free(g.scratch[0]), free(g.scratch[1]);
    pthread_barrier_destroy(&g.bar);
    free(x), free(demb), free(emb1), free(embw), free(gsum);
    af_backbone_free(&one);
    af_backbone_free(&w0);
    af_backbone_free(&w1);
}

/* ---- HDF5 ---- */

static int msg_has(const char *needle) { return strstr(af_errmsg(), needle) != NULL; }

static void test_io(void)
{
    printf("HDF5 save/load (fmnist)\n");
    char path[] = "/tmp/nn_backbone_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        failures++;
        return;
    }
    close(fd);
    af_backbone_config cfg = {.arch = "fmnist", .embedding = 32, .max_batch = 3, .nthreads = 2, .seed = 1};
    af_backbone a, b;
    af_backbone_init(&a, &cfg);
    cfg.seed = 2;
    af_backbone_init(&b, &cfg);
    /* make buffers and counts non-trivial */
    for (size_t i = 0; i < a.n_buffers; i++) a.buffers[i] += 0.01f * (float)i;
    for (size_t i = 0; i < a.n_counts; i++) a.counts[i] = 40 + (int64_t)i;
    hid_t f;
    af_h5_create(path, &f);
    expect("save", af_backbone_save(&a, f, path, NULL) == AF_OK);
    H5Fclose(f);
    af_h5_open_read(path, &f);
    expect("load into a model with other weights", af_backbone_load(&b, f, path, NULL) == AF_OK);
    H5Fclose(f);
    expect("params, buffers and counts identical after the round trip",
           !memcmp(a.params, b.params, a.n_params * sizeof(float)) &&
               !memcmp(a.buffers, b.buffers, a.n_buffers * sizeof(float)) &&
               !memcmp(a.counts, b.counts, a.n_counts * sizeof(int64_t)));
    float x[3 * 28 * 28];
    af_rng r;
    af_rng_seed(&r, 1, AF_RNG_STREAM_TEST, 9, 0);
    for (int i = 0; i < 3 * 28 * 28; i++) x[i] = af_rng_normal(&r);
    const float *e;
    float ea[3 * 32];
    af_backbone_forward(&a, x, 3, 0, NULL, &e);
    memcpy(ea, e, sizeof ea);
    af_backbone_forward(&b, x, 3, 0, NULL, &e);
    check("eval embeddings after the round trip (bitwise)", rel_err(e, ea, 3 * 32), 0.0);

    /* errors: each names the key and leaves the model as it was */
    float *before = malloc(b.n_params * sizeof(float));
    af_backbone_init_weights(&b, 77); /* so that a partial load would show */
    memcpy(before, b.params, b.n_params * sizeof(float));
    hid_t rw = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(rw, "/backbone/bn3.running_var", H5P_DEFAULT);
    af_status st = af_backbone_load(&b, rw, path, NULL);
    printf("    -> %s\n", af_errmsg());
    expect("missing key: error names 'bn3.running_var'", st != AF_OK && msg_has("'bn3.running_var'"));
    float bad[7] = {0};
    hsize_t d7[1] = {7};
    af_h5_write(rw, path, "/backbone/bn3.running_var", AF_H5_F32, 1, d7, bad);
    st = af_backbone_load(&b, rw, path, NULL);
    printf("    -> %s\n", af_errmsg());
    expect("wrong shape: error names 'bn3.running_var' and both shapes",
           st != AF_OK && msg_has("'bn3.running_var'") && msg_has("(7)") && msg_has("(64)"));
    H5Ldelete(rw, "/backbone/bn3.running_var", H5P_DEFAULT);
    hsize_t d64[1] = {64};
    af_h5_write(rw, path, "/backbone/bn3.running_var", AF_H5_F32, 1, d64, a.buffers);
    af_h5_write(rw, path, "/backbone/head.weight", AF_H5_F32, 1, d7, bad);
    st = af_backbone_load(&b, rw, path, NULL);
    printf("    -> %s\n", af_errmsg());
    expect("unexpected key: error names 'head.weight'", st != AF_OK && msg_has("'head.weight'"));
    expect("model unchanged by the failed loads", !memcmp(before, b.params, b.n_params * sizeof(float)));
    H5Ldelete(rw, "/backbone/head.weight", H5P_DEFAULT);
    expect("load succeeds again once repaired", af_backbone_load(&b, rw, path, NULL) == AF_OK);
    H5Fclose(rw);

    af_backbone other;
    af_backbone_config oc = {.arch = "r18", .in_h = 16, .in_w = 16, .embedding = 32, .max_batch = 2, .nthreads = 1};
    af_backbone_init(&other, &oc);
    af_h5_open_read(path, &f);
    st = af_backbone_load(&other, f, path, NULL);
    printf("    -> %s\n", af_errmsg());
    expect("an fmnist file into r18: error names conv1.weight (wrong shape)", st != AF_OK && msg_has("'conv1.weight'"));
    st = af_backbone_load(&other, f, path, "/nothere");
    expect("missing group is an error", st != AF_OK && msg_has("/nothere"));
    H5Fclose(f);
    af_backbone_free(&other);
    free(before);
    af_backbone_free(&a);
    af_backbone_free(&b);
    unlink(path);
}

/* ---- bookkeeping ---- */

static void test_tables(void)
{
    printf("state_dict tables, initialisation, argument checks\n");
    af_backbone_config cfg = {.arch = "r18", .max_batch = 1, .nthreads = 1, .seed = 4};
    af_backbone m;
    if (af_backbone_init(&m, &cfg)) {
        printf("init r18: %s\nFAIL\n", af_errmsg());
        failures++;
        return;
    }
    const af_backbone_tensor *t = af_backbone_find(&m, "layer1.0.downsample.1.running_var");
    expect("r18 has layer1.0.downsample.1.running_var (64)",
           t && t->kind == AF_TENSOR_KIND_BUFFER && t->ndim == 1 && t->shape[0] == 64);
    t = af_backbone_find(&m, "fc.weight");
    expect("r18 fc.weight is (512, 25088)", t && t->ndim == 2 && t->shape[0] == 512 && t->shape[1] == 25088);
    t = af_backbone_find(&m, "features.weight");
    expect("features.weight is fixed, stored after the trainable range, equal to 1",
           t && t->kind == AF_TENSOR_KIND_FIXED && t->offset >= m.n_trainable && m.params[t->offset] == 1.0f);
    t = af_backbone_find(&m, "layer4.1.bn3.num_batches_tracked");
    expect("num_batches_tracked is a 0-d counter", t && t->kind == AF_TENSOR_KIND_COUNT && t->ndim == 0);
    /* layout: trainable tensors tile [0, n_trainable) in table order */
    size_t next = 0;
    int tiled = 1;
    for (size_t i = 0; i < m.n_tensors; i++)
        if (m.tensors[i].kind == AF_TENSOR_KIND_PARAM) {
            tiled &= m.tensors[i].offset == next;
            next += m.tensors[i].numel;
        }
    expect("trainable tensors are contiguous, in table order", tiled && next == m.n_trainable);
    char msg[96];
    snprintf(msg, sizeof msg, "r18: %zu trainable + %zu fixed parameters, %.2f GMACs", m.n_trainable,
             m.n_params - m.n_trainable, af_backbone_macs(&m) / 1e9);
    expect(msg, m.n_params - m.n_trainable == 512);
    /* conv init N(0, 0.1): the sample std of conv1 */
    t = af_backbone_find(&m, "layer3.0.conv1.weight");
    double s2 = 0.0;
    for (size_t i = 0; i < t->numel; i++) s2 += (double)m.params[t->offset + i] * m.params[t->offset + i];
    check("iResNet conv init std vs 0.1 (|difference|)", fabs(sqrt(s2 / t->numel) - 0.1), 2e-3);
    float *p0 = malloc(m.n_params * sizeof(float));
    memcpy(p0, m.params, m.n_params * sizeof(float));
    af_backbone_init_weights(&m, 4);
    expect("init with the same seed is identical", !memcmp(p0, m.params, m.n_params * sizeof(float)));
    af_backbone_init_weights(&m, 5);
    expect("another seed gives other weights", memcmp(p0, m.params, m.n_params * sizeof(float)) != 0);
    free(p0);

    const float *e;
    float x[3 * 112 * 112] = {0};
    expect("batch above max_batch is an error", af_backbone_forward(&m, x, 2, 0, NULL, &e) != AF_OK);
    expect("backward without a training forward is an error", af_backbone_backward(&m, x, NULL) != AF_OK);
    expect("training with one value per channel is an error", af_backbone_forward(&m, x, 1, 1, NULL, &e) != AF_OK);
    printf("    -> %s\n", af_errmsg());
    af_backbone_free(&m);

    af_backbone_config bad = {.arch = "r19", .max_batch = 1};
    expect("unknown architecture is an error", af_backbone_init(&m, &bad) != AF_OK && msg_has("r19"));
    af_backbone_config mb = {.arch = "mbf", .max_batch = 1, .nthreads = 1};
    expect("mbf builds", af_backbone_init(&m, &mb) == AF_OK);
    t = af_backbone_find(&m, "features.layers.0.layers.0.weight");
    expect("mbf GDC weight is (512, 1, 7, 7)", t && t->shape[0] == 512 && t->shape[1] == 1 && t->shape[2] == 7);
    t = af_backbone_find(&m, "layers.1.layers.0.weight");
    expect("mbf layers.1 grouped conv weight is (128, 2, 3, 3)", t && t->shape[0] == 128 && t->shape[1] == 2);
    af_backbone_free(&m);
}

int main(void)
{
    test_sync("fmnist", 28, 0.3f);
    test_sync("r18", 32, 0.2f);
    test_sync("mbf", 32, 0.0f);
    test_io();
    test_tables();
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
