/* The training loader: which images (sampler.c), decoded by background
 * threads into a ring of `prefetch` batch slots, handed out in order.
 *
 * Work is claimed one image at a time from a single counter (job j = image
 * j % b of batch j / b), so all threads help finish the oldest batch first
 * and a slow JPEG delays one image, not a thread's whole batch. A thread
 * may start batch s only after the consumer has released batch s - R (R =
 * ring size). Results depend only on (seed, epoch, position): not on the
 * thread count, on which thread decoded what, or on timing, and an error
 * surfaces with the batch that holds the bad image. */
#include "dataset_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SKIP_TRIES 64

typedef struct {
    float *images;  /* (b, C, H, W) */
    int64_t *labels; /* (b) */
    int64_t *index;  /* (b) */
    int64_t seq;     /* batch held, -1 if none */
    int done;        /* images finished */
    af_status st;    /* first failure by image position */
    int err_i;
    char msg[1024];
    int64_t corrupt;      /* images of this batch replaced under skip_corrupt */
    char corrupt_msg[512]; /* the latest of their messages */
} slot;

struct af_loader {
    af_dataset *ds;
    af_loader_config cfg;
    int64_t n, G, steps, per_image; /* per_image: C*H*W floats */
    int64_t base_step;              /* absolute step (epoch * steps + k) of batch seq 0 */

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready;
    int64_t consumed; /* batches handed out */
    int64_t next_job;
    int stop;
    int R;
    slot *slots;
    pthread_t *threads;
    int nthreads;
    af_dataset_scratch **ws; /* one per thread, or one for inline decoding */
    int nws;

    slot inline_slot; /* skip bookkeeping when threads == 0 */
    af_status failed;
    char failed_msg[1024];
    double wait_s;
    int64_t corrupt;
    char last_corrupt[512];
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int skippable(af_status st) { return st == AF_ERR_FORMAT || st == AF_ERR_CORRUPT; }

/* Image i of batch seq: decode it into img and say which dataset index it
 * came from. Called without the lock held. */
static af_status load_one(af_loader *ld, int64_t seq, int i, float *img, int64_t *label, int64_t *index,
                          af_dataset_scratch *ws, slot *s)
{
    const af_loader_config *c = &ld->cfg;
    int64_t abs = ld->base_step + seq, epoch = abs / ld->steps, k = abs % ld->steps;
    int64_t pos = k * ld->G + (int64_t)c->rank * c->batch + i;
    af_epoch_perm perm;
    af_epoch_perm_init(&perm, c->seed, epoch, ld->n);
    int64_t idx = af_sampler_index(&perm, pos);
    int flip = c->flip && af_sampler_flip(c->seed, epoch, pos);
    af_status st = af_dataset_get_ws(ld->ds, idx, img, label, flip, ws);
    for (int t = 1; st != AF_OK && c->skip_corrupt && skippable(st) && t <= SKIP_TRIES; t++) {
        /* Counted with the batch and published when it is handed out, so the
         * count does not depend on how far ahead the threads have got. */
        pthread_mutex_lock(&ld->mu);
        s->corrupt++;
        snprintf(s->corrupt_msg, sizeof s->corrupt_msg, "%s", af_errmsg());
        pthread_mutex_unlock(&ld->mu);
        /* The substitute depends on the index only, so every worker and
         * every rerun picks the same one. */
        idx = (idx + 1) % ld->n;
        st = af_dataset_get_ws(ld->ds, idx, img, label, flip, ws);
    }
    if (st != AF_OK && c->skip_corrupt && skippable(st))
        af_error_wrap(st, "%d consecutive corrupt images, giving up", SKIP_TRIES + 1);
    *index = idx;
    return st;
}

static void *worker_main(void *arg)
{
    void **a = arg;
    af_loader *ld = a[0];
    af_dataset_scratch *ws = a[1];
    free(arg);
    const int b = ld->cfg.batch;
    pthread_mutex_lock(&ld->mu);
    while (!ld->stop) {
        int64_t j = ld->next_job, seq = j / b;
        if (seq - ld->consumed >= ld->R) { /* its slot still holds an unread batch */
            pthread_cond_wait(&ld->cv_work, &ld->mu);
            continue;
        }
        ld->next_job++;
        int i = (int)(j % b);
        slot *s = &ld->slots[seq % ld->R];
        if (i == 0) { /* jobs are claimed in order, so this runs first */
            s->seq = seq;
            s->done = 0;
            s->st = AF_OK;
            s->err_i = b;
            s->msg[0] = 0;
            s->corrupt = 0;
            s->corrupt_msg[0] = 0;
        }
        pthread_mutex_unlock(&ld->mu);
        af_status st =
            load_one(ld, seq, i, s->images + (size_t)i * ld->per_image, &s->labels[i], &s->index[i], ws, s);
        pthread_mutex_lock(&ld->mu);
        if (st != AF_OK && i < s->err_i) {
            s->st = st;
            s->err_i = i;
            snprintf(s->msg, sizeof s->msg, "%s", af_errmsg());
        }
        if (++s->done == b) pthread_cond_broadcast(&ld->cv_ready);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

af_status af_loader_next(af_loader *ld, float *images, int64_t *labels, int64_t *index_out)
{
    const int b = ld->cfg.batch;
    if (ld->failed != AF_OK) return af_errorf(ld->failed, "%s", ld->failed_msg);
    double t0 = now_s();
    if (ld->nthreads == 0) {
        af_status st = AF_OK;
        slot *s = &ld->inline_slot;
        s->corrupt = 0;
        s->corrupt_msg[0] = 0;
        for (int i = 0; i < b && st == AF_OK; i++) {
            int64_t idx;
            st = load_one(ld, ld->consumed, i, images + (size_t)i * ld->per_image, &labels[i], &idx, ld->ws[0], s);
            if (index_out) index_out[i] = idx;
        }
        ld->wait_s += now_s() - t0;
        ld->corrupt += s->corrupt;
        if (s->corrupt) snprintf(ld->last_corrupt, sizeof ld->last_corrupt, "%s", s->corrupt_msg);
        if (st != AF_OK) {
            ld->failed = st;
            snprintf(ld->failed_msg, sizeof ld->failed_msg, "%s", af_errmsg());
            return st;
        }
        ld->consumed++;
        return AF_OK;
    }
    pthread_mutex_lock(&ld->mu);
    int64_t seq = ld->consumed;
    slot *s = &ld->slots[seq % ld->R];
    while (!(s->seq == seq && s->done == b)) pthread_cond_wait(&ld->cv_ready, &ld->mu);
    ld->wait_s += now_s() - t0;
    if (s->st != AF_OK) {
        ld->failed = s->st;
        snprintf(ld->failed_msg, sizeof ld->failed_msg, "%s", s->msg);
        pthread_mutex_unlock(&ld->mu);
        return af_errorf(ld->failed, "%s", ld->failed_msg);
    }
    ld->corrupt += s->corrupt;
    if (s->corrupt) snprintf(ld->last_corrupt, sizeof ld->last_corrupt, "%s", s->corrupt_msg);
    pthread_mutex_unlock(&ld->mu);
    /* The slot cannot be refilled before `consumed` moves on: copy unlocked. */
    memcpy(images, s->images, (size_t)b * ld->per_image * sizeof *images);
    memcpy(labels, s->labels, (size_t)b * sizeof *labels);
    if (index_out) memcpy(index_out, s->index, (size_t)b * sizeof *index_out);
    pthread_mutex_lock(&ld->mu);
    ld->consumed++;
    pthread_cond_broadcast(&ld->cv_work);
    pthread_mutex_unlock(&ld->mu);
    return AF_OK;
}

static af_status check_config(const af_dataset *ds, const af_loader_config *c, int64_t *steps)
{
    int64_t n = af_dataset_size(ds);
    if (c->batch < 1 || c->batch > (1 << 20) || c->world < 1 || c->world > (1 << 20) || c->rank < 0 ||
        c->rank >= c->world)
        return af_errorf(AF_ERR_ARG, "loader: batch %d, world %d, rank %d: expected batch >= 1, world >= 1 and "
                         "0 <= rank < world", c->batch, c->world, c->rank);
    if (c->threads < 0 || c->threads > 256 || c->prefetch < 0 || c->prefetch > 256)
        return af_errorf(AF_ERR_ARG, "loader: threads %d, prefetch %d: expected 0..256", c->threads, c->prefetch);
    if (n < 1 || n > ((int64_t)1 << 62))
        return af_errorf(AF_ERR_ARG, "loader: dataset of %" PRId64 " images, expected 1 .. 2^62", n);
    int64_t G = (int64_t)c->batch * c->world;
    int64_t positions = af_sampler_epoch_positions(n, G, c->drop_last);
    if (positions == 0)
        return af_errorf(AF_ERR_ARG, "loader: %s has %" PRId64 " images, fewer than one global batch of %" PRId64
                         " (batch %d x %d workers) with drop_last", af_dataset_describe(ds), n, G, c->batch, c->world);
    if (c->start_epoch < 0 || c->start_pos < 0 || c->start_pos % G != 0 || c->start_pos > positions)
        return af_errorf(AF_ERR_ARG, "loader: start epoch %" PRId64 " position %" PRId64 ": expected epoch >= 0 and a "
                         "position that is a multiple of the global batch %" PRId64 " within the epoch's %" PRId64
                         " positions (was the global batch changed since the checkpoint?)",
                         c->start_epoch, c->start_pos, G, positions);
    *steps = positions / G;
    return AF_OK;
}

static void loader_free(af_loader *ld)
{
    if (ld->slots)
        for (int r = 0; r < ld->R; r++) {
            free(ld->slots[r].images);
            free(ld->slots[r].labels);
            free(ld->slots[r].index);
        }
    free(ld->slots);
    if (ld->ws)
        for (int t = 0; t < ld->nws; t++) af_dataset_scratch_free(ld->ws[t]);
    free(ld->ws);
    free(ld->threads);
    pthread_cond_destroy(&ld->cv_work);
    pthread_cond_destroy(&ld->cv_ready);
    pthread_mutex_destroy(&ld->mu);
    free(ld);
}

void af_loader_close(af_loader *ld)
{
    if (!ld) return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv_work);
    pthread_mutex_unlock(&ld->mu);
    for (int t = 0; t < ld->nthreads; t++) pthread_join(ld->threads[t], NULL);
    loader_free(ld);
}

af_status af_loader_open(af_loader **out, af_dataset *ds, const af_loader_config *cfg)
{
    *out = NULL;
    int64_t steps = 0;
    af_status st = check_config(ds, cfg, &steps);
    if (st != AF_OK) return st;
    af_loader *ld = af_calloc(1, sizeof *ld, "loader");
    if (!ld) return AF_ERR_NOMEM;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv_work, NULL);
    pthread_cond_init(&ld->cv_ready, NULL);
    ld->ds = ds;
    ld->cfg = *cfg;
    ld->n = af_dataset_size(ds);
    ld->G = (int64_t)cfg->batch * cfg->world;
    ld->steps = steps;
    int c, h, w;
    af_dataset_shape(ds, &c, &h, &w);
    ld->per_image = (int64_t)c * h * w;
    ld->base_step = cfg->start_epoch * steps + cfg->start_pos / ld->G;
    ld->nthreads = cfg->threads;
    ld->R = cfg->prefetch ? cfg->prefetch : 2 + cfg->threads / 4;
    ld->nws = cfg->threads ? cfg->threads : 1;
    st = AF_ERR_NOMEM;
    ld->ws = af_calloc((size_t)ld->nws, sizeof *ld->ws, "loader scratch table");
    if (!ld->ws) goto fail;
    for (int t = 0; t < ld->nws; t++)
        if ((st = af_dataset_scratch_init(&ld->ws[t])) != AF_OK) goto fail;
    if (ld->nthreads == 0) {
        *out = ld;
        return AF_OK;
    }
    st = AF_ERR_NOMEM;
    ld->slots = af_calloc((size_t)ld->R, sizeof *ld->slots, "loader ring");
    if (!ld->slots) goto fail;
    for (int r = 0; r < ld->R; r++) {
        slot *s = &ld->slots[r];
        s->seq = -1;
        s->images = af_malloc((size_t)cfg->batch * ld->per_image * sizeof(float), "loader batch images");
        s->labels = af_malloc((size_t)cfg->batch * sizeof(int64_t), "loader batch labels");
        s->index = af_malloc((size_t)cfg->batch * sizeof(int64_t), "loader batch indices");
        if (!s->images || !s->labels || !s->index) goto fail;
    }
    ld->threads = af_calloc((size_t)ld->nthreads, sizeof *ld->threads, "loader threads");
    if (!ld->threads) goto fail;
    for (int t = 0; t < cfg->threads; t++) {
        void **arg = malloc(2 * sizeof *arg);
        int e = arg ? 0 : ENOMEM;
        if (arg) {
            arg[0] = ld;
            arg[1] = ld->ws[t];
            e = pthread_create(&ld->threads[t], NULL, worker_main, arg);
        }
        if (e != 0) {
            free(arg);
            st = af_errorf(AF_ERR_IO, "loader: cannot start decode thread %d of %d: %s", t + 1, cfg->threads,
                           strerror(e));
            ld->nthreads = t; /* af_loader_close joins the ones that did start */
            af_loader_close(ld);
            return st;
        }
    }
    *out = ld;
    return AF_OK;
fail:
    loader_free(ld);
    return st;
}

int64_t af_loader_epoch(const af_loader *ld) { return (ld->base_step + ld->consumed) / ld->steps; }
int64_t af_loader_position(const af_loader *ld) { return (ld->base_step + ld->consumed) % ld->steps * ld->G; }
int64_t af_loader_steps_per_epoch(const af_loader *ld) { return ld->steps; }

void af_loader_get_stats(af_loader *ld, af_loader_stats *st)
{
    pthread_mutex_lock(&ld->mu);
    st->wait_s = ld->wait_s;
    st->batches = ld->consumed;
    st->corrupt_skipped = ld->corrupt;
    snprintf(st->last_corrupt, sizeof st->last_corrupt, "%s", ld->last_corrupt);
    pthread_mutex_unlock(&ld->mu);
    /* Decoding shares the cores with the training threads when there are no
     * spare ones: its CPU time is what it takes from them (--profile). */
    st->decode_cpu_s = 0;
    for (int t = 0; t < ld->nthreads; t++) {
        clockid_t cid;
        struct timespec ts;
        if (!pthread_getcpuclockid(ld->threads[t], &cid) && !clock_gettime(cid, &ts))
            st->decode_cpu_s += (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
}
