/* The worker rank's training step (see include/arcface/worker.h for the
 * sequence). Everything is sized in af_worker_init; a step allocates nothing:
 * messages pack into per-server buffers and unpack into fixed arenas. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "arcface/worker.h"

const char *const af_timer_names[AF_T_COUNT] = {
    "data", "forward", "gather", "pull_wait", "logits", "backward", "allreduce", "push_wait", "optim",
};

/* Gradient all-reduce bucket size: large enough that per-call latency is
 * amortised, small enough that the first buckets start early in backward. */
#define BUCKET_FLOATS ((size_t)1 << 20)

float af_lr_at(float base, int64_t step, int acc, int64_t warmup, int64_t total)
{
    /* arcface_torch steps its scheduler after every micro-batch, and its
     * constructor leaves last_epoch at -1 after computing the lr of 0: the
     * update that ends micro-batch k (1-based) runs at the lr of k - 2, and
     * the first one at that of 0. */
    int64_t e = (step + 1) * (int64_t)(acc > 0 ? acc : 1) - 2;
    if (e < 0) e = 0;
    if (e < warmup) return (float)((double)base * ((double)e / (double)warmup));
    if (total <= warmup) return base;
    /* Past total only where insightface's loader outruns its own schedule
     * (there the curve would rise again); here the decay ends at 0. */
    if (e > total) e = total;
    double a = 1.0 - (double)(e - warmup) / (double)(total - warmup);
    return (float)((double)base * (a * a));
}

static af_status sum_doubles(void *user, double *buf, size_t n)
{
    af_worker *w = user;
    af_ctx_wait("the batch-norm statistics all-reduce among workers", -1, -1, AF_WAIT_GROUP);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, w->ctx->workers);
    af_ctx_wait_done();
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "worker %d: batch-norm statistics all-reduce failed", w->ctx->rank);
    return AF_OK;
}

/* Called inside backward, which cannot return a status: the first failing
 * code is kept in bucket_rc and reported after backward. */
static void launch_bucket(af_worker *w, size_t begin, size_t end)
{
    int rc = MPI_Iallreduce(MPI_IN_PLACE, w->bb.grads + begin, (int)(end - begin), MPI_FLOAT, MPI_SUM,
                            w->ctx->workers, &w->bucket_req[w->n_buckets]);
    if (rc != MPI_SUCCESS) {
        if (!w->bucket_rc) w->bucket_rc = rc;
        return;
    }
    w->n_buckets++;
}

static void grads_ready(void *user, size_t begin, size_t end)
{
    af_worker *w = user;
    (void)end;
    if (!w->allreduce_now) return;
    if (w->pending_hi - begin >= w->bucket_floats && w->n_buckets < w->max_buckets - 1) {
        launch_bucket(w, begin, w->pending_hi);
        w->pending_hi = begin;
    } else if (w->n_buckets) {
        /* Open MPI progresses non-blocking collectives inside MPI calls. */
        int flag, rc = MPI_Testall(w->n_buckets, w->bucket_req, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS && !w->bucket_rc) w->bucket_rc = rc;
    }
}

static int64_t lower_bound(const int64_t *a, int64_t lo, int64_t hi, int64_t v)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

af_status af_worker_init(af_worker *w, const af_ctx *ctx, const af_config *cfg, af_dataset *ds,
                         int64_t start_epoch, int64_t start_pos)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
    w->cfg = cfg;
    w->b = cfg->batch_size;
    w->W = ctx->W;
    w->P = ctx->P;
    w->G = w->b * w->W;
    w->D = cfg->embedding_size;
    w->acc = cfg->gradient_acc;
    const int64_t C = ctx->num_classes;
    af_status st;
    w->margin = (af_margin){.s = cfg->scale, .m1 = cfg->margin_list[0], .m2 = cfg->margin_list[1],
                            .m3 = cfg->margin_list[2], .easy_margin = cfg->easy_margin,
                            .filter_threshold = cfg->interclass_filtering_threshold};
    if ((st = af_margin_grad_parse(cfg->margin_grad, &w->margin.grad))) return st;
    if ((st = af_margin_check(&w->margin))) return st;

    int c, h, wd;
    af_dataset_shape(ds, &c, &h, &wd);
    af_backbone_config bc = {.arch = cfg->network, .in_c = c, .in_h = h, .in_w = wd, .embedding = w->D,
                             .dropout = cfg->dropout, .max_batch = w->b, .nthreads = cfg->threads, .seed = cfg->seed,
                             .precision = af_config_precision(cfg)};
    if ((st = af_backbone_init(&w->bb, &bc))) return af_error_wrap(st, "configuration key 'network'");
    if (!strcmp(cfg->optimizer, "sgd")) st = af_sgd_init(&w->sgd, w->bb.n_trainable);
    else st = af_adamw_init(&w->adamw, w->bb.n_trainable);
    if (st) goto fail;

    af_loader_config lc = {.batch = w->b, .world = w->W, .rank = ctx->worker_rank, .seed = cfg->seed,
                           .start_epoch = start_epoch, .start_pos = start_pos, .drop_last = 1, .flip = cfg->flip,
                           .skip_corrupt = cfg->skip_corrupt, .threads = cfg->loader_threads};
    if ((st = af_loader_open(&w->loader, ds, &lc))) goto fail;
    w->num_image = af_dataset_size(ds);

    if ((st = af_pfc_global_init(&w->pfc, C, cfg->sample_shards, cfg->sample_rate, w->G))) goto fail;
    w->max_slice = (w->pfc.max_total + w->W - 1) / w->W;
    size_t img = (size_t)c * h * wd;
    w->images = af_malloc(sizeof(float) * img * w->b, "input batch");
    w->labels = af_malloc(sizeof(int64_t) * w->b, "labels");
    w->labels_g = af_malloc(sizeof(int64_t) * w->G, "global labels");
    w->wslice = af_malloc(sizeof(float) * (size_t)(w->max_slice ? w->max_slice : 1) * w->D, "centre slice");
    w->slice_labels = af_malloc(sizeof(int64_t) * w->G, "slice labels");
    w->X = af_malloc(sizeof(float) * (size_t)w->G * w->D, "global features");
    w->dX = af_malloc(sizeof(float) * (size_t)w->G * w->D, "global feature grads");
    w->dx_local = af_malloc(sizeof(float) * (size_t)w->b * w->D, "local feature grads");
    if (!w->images || !w->labels || !w->labels_g || !w->wslice || !w->slice_labels || !w->X ||
        !w->dX || !w->dx_local) { st = AF_ERR_NOMEM; goto fail; }
    if ((st = af_fc_ws_init(&w->fcws, w->G, (int)w->max_slice, w->D))) goto fail;
    af_fc_ws_set_threads(&w->fcws, cfg->threads);

    if (w->P == 0) {
        int64_t touch = w->pfc.max_total * w->acc;
        if ((st = af_ps_shard_init(&w->local, 0, C, w->D, touch < C ? touch : C, cfg))) goto fail;
        af_ps_shard_init_weights(&w->local, cfg->seed);
    } else {
        w->rx = af_calloc((size_t)w->P, sizeof *w->rx, "reply links");
        w->tx = af_calloc((size_t)w->P, sizeof *w->tx, "request links");
        w->srv_lo = af_malloc(sizeof(int64_t) * w->P, "server ranges");
        w->srv_hi = af_malloc(sizeof(int64_t) * w->P, "server ranges");
        if (!w->rx || !w->tx || !w->srv_lo || !w->srv_hi) { st = AF_ERR_NOMEM; goto fail; }
        size_t largest = 0;
        for (int p = 0; p < w->P; p++) {
            int64_t cnt = af_ctx_server_count(ctx, p), rows = cnt < w->max_slice ? cnt : w->max_slice;
            size_t cap = 4096 + (size_t)rows * (12 + sizeof(float) * w->D);
            size_t bulk = (size_t)rows * (8 + sizeof(float) * w->D);
            if (cap > largest) largest = cap;
            size_t chunk = (size_t)cfg->msg_chunk_bytes;
            if ((st = af_link_init(&w->rx[p], ctx->world, AF_LINK_RECV_REPLIES, chunk, cap, 16, bulk)) ||
                (st = af_link_init(&w->tx[p], ctx->world, AF_LINK_SEND, chunk, cap, (size_t)rows, bulk)))
                goto fail;
        }
        /* Said once, so a log shows which path the bulk takes (tests check it). */
        if (ctx->worker_rank == 0 && largest > (size_t)cfg->msg_chunk_bytes)
            printf("transport: messages of up to %zu bytes between a worker and a server go split into chunks of at "
                   "most %lld bytes (msg_chunk_bytes)\n", largest, (long long)cfg->msg_chunk_bytes);
        if ((st = af_msgbuf_init(&w->ctl, 4096, 16))) goto fail;
    }
    w->bucket_floats = BUCKET_FLOATS;
    w->max_buckets = (int)(w->bb.n_trainable / BUCKET_FLOATS) + 4;
    w->bucket_req = af_malloc(sizeof(MPI_Request) * w->max_buckets, "all-reduce requests");
    if (!w->bucket_req) { st = AF_ERR_NOMEM; goto fail; }
    return AF_OK;
fail:
    af_worker_free(w);
    return st;
}

af_status af_worker_register_state(af_worker *w, af_state *reg)
{
    af_backbone *bb = &w->bb;
    char name[AF_STATE_NAME_MAX];
    af_status st = AF_OK;
    for (size_t i = 0; i < bb->n_tensors && !st; i++) {
        const af_backbone_tensor *e = &bb->tensors[i];
        snprintf(name, sizeof name, "/backbone/%s", e->key);
        int count = e->kind == AF_TENSOR_KIND_COUNT;
        void *data = count ? (void *)(bb->counts + e->offset)
                   : e->kind == AF_TENSOR_KIND_BUFFER ? (void *)(bb->buffers + e->offset) : (void *)(bb->params + e->offset);
        st = af_state_add_whole(reg, "backbone", name, count ? AF_STATE_I64 : AF_STATE_F32, data, e->ndim, e->shape);
    }
    int64_t n = (int64_t)bb->n_trainable;
    if (st) return st;
    if (!strcmp(w->cfg->optimizer, "sgd")) {
        if ((st = af_state_add_whole(reg, "backbone optimizer", "/optimizer/backbone/momentum", AF_STATE_F32,
                                     w->sgd.momentum, 1, &n)) ||
            (st = af_state_add_scalar(reg, "backbone optimizer", "backbone_opt_steps", &w->sgd.steps)))
            return st;
    } else if ((st = af_state_add_whole(reg, "backbone optimizer", "/optimizer/backbone/exp_avg", AF_STATE_F32,
                                        w->adamw.m, 1, &n)) ||
               (st = af_state_add_whole(reg, "backbone optimizer", "/optimizer/backbone/exp_avg_sq", AF_STATE_F32,
                                        w->adamw.v, 1, &n)) ||
               (st = af_state_add_scalar(reg, "backbone optimizer", "backbone_opt_steps", &w->adamw.steps))) {
        return st;
    }
    return w->P == 0 ? af_ps_shard_register_state(&w->local, w->ctx->num_classes, reg) : AF_OK;
}

void af_worker_free(af_worker *w)
{
    if (w->loader) af_loader_close(w->loader);
    af_backbone_free(&w->bb);
    af_sgd_free(&w->sgd);
    af_adamw_free(&w->adamw);
    af_pfc_global_free(&w->pfc);
    af_fc_ws_free(&w->fcws);
    af_ps_shard_free(&w->local);
    for (int p = 0; p < w->P && w->rx; p++) af_link_free(&w->rx[p]);
    for (int p = 0; p < w->P && w->tx; p++) af_link_free(&w->tx[p]);
    af_msgbuf_free(&w->ctl);
    free(w->rx); free(w->tx); free(w->srv_lo); free(w->srv_hi);
    free(w->images); free(w->labels); free(w->labels_g); free(w->wslice);
    free(w->slice_labels); free(w->X); free(w->dX); free(w->dx_local); free(w->bucket_req);
    memset(w, 0, sizeof *w);
}

static af_status mpi_check(int rc, const af_worker *w, const char *what)
{
    if (rc == MPI_SUCCESS) return AF_OK;
    return af_errorf(AF_ERR_MPI, "worker %d: %s failed (MPI code %d)", w->ctx->rank, what, rc);
}

/* The size a pull reply of n rows will have on the wire, to know before
 * asking whether it will come split (then its rows land in dst directly). */
static int reply_splits(af_worker *w, int p, int64_t t, int64_t n)
{
    Arcface__PullReply r = ARCFACE__PULL_REPLY__INIT;
    r.step = t;
    r.count = n;
    r.dim = w->D;
    r.data.len = sizeof(float) * (size_t)n * w->D;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PULL_REPLY;
    env.pull_reply = &r;
    return af_link_splits(&w->rx[p], &env);
}

/* Posts the reply receives, then the pull requests, one per server. */
static af_status post_pulls(af_worker *w, int64_t t)
{
    const int64_t *ids = w->pfc.ids;
    for (int p = 0; p < w->P; p++) {
        int64_t s0 = af_ctx_server_start(w->ctx, p), s1 = s0 + af_ctx_server_count(w->ctx, p);
        w->srv_lo[p] = lower_bound(ids, w->lo, w->hi, s0);
        w->srv_hi[p] = lower_bound(ids, w->srv_lo[p], w->hi, s1);
        int64_t n = w->srv_hi[p] - w->srv_lo[p];
        int srv = af_ctx_server_world_rank(w->ctx, p);
        float *dst = w->wslice + (size_t)(w->srv_lo[p] - w->lo) * w->D;
        size_t bulk = reply_splits(w, p, t, n) ? sizeof(float) * (size_t)n * w->D : 0;
        af_status st = af_link_post_reply(&w->rx[p], srv, AF_TAG_REPLY, dst, bulk);
        if (st) return af_error_wrap(st, "worker %d: posting the pull reply of micro-step %lld", w->ctx->rank, (long long)t);
        Arcface__PullRequest pr = ARCFACE__PULL_REQUEST__INIT;
        pr.step = t;
        pr.n_class_ids = (size_t)n;
        pr.class_ids = (int64_t *)ids + w->srv_lo[p];
        Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
        env.body_case = ARCFACE__ENVELOPE__BODY_PULL;
        env.pull = &pr;
        if ((st = af_link_isend(&w->tx[p], srv, AF_TAG_REQUEST, &env)))
            return af_error_wrap(st, "worker %d: pull of micro-step %lld", w->ctx->rank, (long long)t);
        /* Class ids count as message overhead, inline or split. */
        w->msg_header_bytes += w->tx[p].last_wire + (w->tx[p].last_split ? 8 * (size_t)n : 0);
    }
    return AF_OK;
}

static af_status finish_pulls(af_worker *w, int64_t t)
{
    af_status st;
    for (int p = 0; p < w->P; p++) {
        af_ctx_wait("a server to take the pull of micro-step", t, af_ctx_server_world_rank(w->ctx, p), AF_WAIT_REPLY);
        if ((st = af_link_wait(&w->tx[p], "sending a pull"))) return st;
    }
    for (int p = 0; p < w->P; p++) {
        int srv = af_ctx_server_world_rank(w->ctx, p);
        af_ctx_wait("the pull reply of micro-step", t, srv, AF_WAIT_REPLY);
        st = af_link_finish_reply(&w->rx[p]);
        af_ctx_wait_done();
        if (st)
            return af_error_wrap(st, "worker %d: pull reply of micro-step %lld", w->ctx->rank, (long long)t);
        const Arcface__Envelope *env = w->rx[p].mb.env;
        if (env->body_case == ARCFACE__ENVELOPE__BODY_ERROR)
            return af_errorf(AF_ERR_PROTO, "parameter server rank %d refused a request of worker %d: %s", srv,
                             w->ctx->rank, env->error->message);
        int64_t n = w->srv_hi[p] - w->srv_lo[p];
        size_t bytes = sizeof(float) * (size_t)n * w->D;
        float *dst = w->wslice + (size_t)(w->srv_lo[p] - w->lo) * w->D;
        int split = env->bulk_bytes != 0;
        if (env->body_case != ARCFACE__ENVELOPE__BODY_PULL_REPLY || env->pull_reply->step != t ||
            env->pull_reply->count != n || env->pull_reply->dim != w->D ||
            env->pull_reply->data.len != (split ? 0 : bytes))
            return af_errorf(AF_ERR_PROTO, "worker %d: bad %s message from server rank %d for micro-step %lld "
                             "(expected a pull_reply of %lld rows of dimension %d)", w->ctx->rank,
                             af_msg_type_name(env), srv, (long long)t, (long long)n, w->D);
        if (!split) memcpy(dst, env->pull_reply->data.data, bytes); /* split: already in dst */
        w->bytes_pulled += bytes;
        w->msg_header_bytes += w->rx[p].last_wire - (split ? 0 : bytes);
    }
    return AF_OK;
}

static af_status post_pushes(af_worker *w, int64_t t)
{
    for (int p = 0; p < w->P; p++) {
        Arcface__PushRequest pr = ARCFACE__PUSH_REQUEST__INIT;
        int64_t n = w->srv_hi[p] - w->srv_lo[p];
        const char *fault;
        pr.step = t;
        /* Fault injection: a push the server must refuse. */
        if (af_ctx_fault_hit(w->ctx, "push", t / w->acc, &fault) && !strcmp(fault, "badpush")) pr.step = t + 1000;
        pr.n_class_ids = (size_t)n;
        pr.class_ids = w->pfc.ids + w->srv_lo[p];
        pr.dim = w->D;
        pr.data.len = sizeof(float) * (size_t)n * w->D;
        /* The slice holds the centre gradients now (af_fc_loss wrote them over the centres). */
        pr.data.data = (uint8_t *)(w->wslice + (size_t)(w->srv_lo[p] - w->lo) * w->D);
        Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
        env.body_case = ARCFACE__ENVELOPE__BODY_PUSH;
        env.push = &pr;
        af_status st = af_link_isend(&w->tx[p], af_ctx_server_world_rank(w->ctx, p), AF_TAG_REQUEST, &env);
        if (st) return af_error_wrap(st, "worker %d: push of micro-step %lld", w->ctx->rank, (long long)t);
        w->bytes_pushed += pr.data.len;
        /* Inline, the wire message holds the rows; split, only the header. */
        w->msg_header_bytes += w->tx[p].last_split ? w->tx[p].last_wire + 8 * (size_t)n : w->tx[p].last_wire - pr.data.len;
    }
    return AF_OK;
}

static af_status commit(af_worker *w, int64_t opt_step, float lr)
{
    if (w->P == 0) {
        af_ps_shard_apply(&w->local, lr);
        return AF_OK;
    }
    if (w->ctx->worker_rank != 0) return AF_OK;
    Arcface__StepCommit c = ARCFACE__STEP_COMMIT__INIT;
    c.opt_step = opt_step;
    const char *fault;
    if (af_ctx_fault_hit(w->ctx, "commit", opt_step, &fault) && !strcmp(fault, "badcommit")) c.opt_step += 1000;
    c.pushes_per_worker = w->acc;
    c.lr = lr;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_COMMIT;
    env.commit = &c;
    for (int p = 0; p < w->P; p++) {
        int srv = af_ctx_server_world_rank(w->ctx, p);
        af_ctx_wait(env.body_case == ARCFACE__ENVELOPE__BODY_COMMIT ? "a server to take the commit of optimizer step"
                    : "a server to take the shutdown after optimizer step", opt_step, srv, AF_WAIT_REPLY);
        af_status st = af_msg_send(w->ctx->world, srv, AF_TAG_REQUEST, &env, &w->ctl);
        af_ctx_wait_done();
        if (st) return st;
    }
    return AF_OK;
}

af_status af_worker_shutdown(af_worker *w, int64_t opt_step, int interrupted)
{
    if (w->P == 0 || w->ctx->worker_rank != 0) return AF_OK;
    Arcface__Shutdown s = ARCFACE__SHUTDOWN__INIT;
    s.opt_step = opt_step;
    s.interrupted = interrupted != 0;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_SHUTDOWN;
    env.shutdown = &s;
    for (int p = 0; p < w->P; p++) {
        int srv = af_ctx_server_world_rank(w->ctx, p);
        af_ctx_wait(env.body_case == ARCFACE__ENVELOPE__BODY_COMMIT ? "a server to take the commit of optimizer step"
                    : "a server to take the shutdown after optimizer step", opt_step, srv, AF_WAIT_REPLY);
        af_status st = af_msg_send(w->ctx->world, srv, AF_TAG_REQUEST, &env, &w->ctl);
        af_ctx_wait_done();
        if (st) return st;
    }
    return AF_OK;
}

af_status af_worker_poll_stop(af_worker *w, int *sig)
{
    *sig = 0;
    for (;;) {
        int flag, got;
        MPI_Status s;
        int rc = MPI_Iprobe(MPI_ANY_SOURCE, AF_TAG_STOP, w->ctx->world, &flag, &s);
        if (rc != MPI_SUCCESS) return mpi_check(rc, w, "probing for a signal passed on by a server");
        if (!flag) return AF_OK;
        rc = MPI_Recv(&got, 1, MPI_INT, s.MPI_SOURCE, AF_TAG_STOP, w->ctx->world, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_check(rc, w, "receiving a signal passed on by a server");
        if (!*sig) *sig = got;
    }
}

/* Between pull replies the only message a server sends is an ErrorReply to a
 * push or commit of ours: read it as soon as it is there rather than at the
 * next pull, where it would arrive a step late or, after the last step, never. */
static af_status check_server_errors(af_worker *w)
{
    for (int p = 0; p < w->P; p++) {
        int srv = af_ctx_server_world_rank(w->ctx, p), flag, from;
        MPI_Status s;
        af_status st = mpi_check(MPI_Iprobe(srv, AF_TAG_REPLY, w->ctx->world, &flag, &s), w, "probing for replies");
        if (st) return st;
        if (!flag) continue;
        if ((st = af_msg_recv(w->ctx->world, srv, AF_TAG_REPLY, &w->ctl, &from))) return st;
        const Arcface__Envelope *env = w->ctl.env;
        if (env->body_case == ARCFACE__ENVELOPE__BODY_ERROR)
            return af_errorf(AF_ERR_PROTO, "parameter server rank %d refused a request of worker %d: %s", srv,
                             w->ctx->rank, env->error->message);
        return af_errorf(AF_ERR_PROTO, "worker %d: unexpected %s message from server rank %d between steps",
                         w->ctx->rank, af_msg_type_name(env), srv);
    }
    return AF_OK;
}

af_status af_worker_step(af_worker *w, int64_t opt_step, float lr, double *loss)
{
    const af_config *cfg = w->cfg;
    const int b = w->b, G = w->G, D = w->D, W = w->W, wr = w->ctx->worker_rank;
    MPI_Comm comm = w->ctx->workers;
    af_nn_ctx nc = {.allreduce = W > 1 ? sum_doubles : NULL, .grads_ready = grads_ready, .user = w,
                    .global_batch = G, .row_offset = (int64_t)wr * b, .seed = cfg->seed};
    double total_loss = 0, t0;
    af_status st;
    for (int m = 0; m < w->acc; m++) {
        int64_t t = opt_step * w->acc + m;
        nc.step = (uint64_t)t;

        t0 = MPI_Wtime();
        if ((st = af_loader_next(w->loader, w->images, w->labels, NULL))) return st;
        w->t[AF_T_DATA] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        if (W > 1) {
            af_ctx_wait("the label all-gather among workers of micro-step", t, -1, AF_WAIT_GROUP);
            st = mpi_check(MPI_Allgather(w->labels, b, MPI_INT64_T, w->labels_g, b, MPI_INT64_T, comm), w,
                           "label all-gather");
            af_ctx_wait_done();
            if (st) return st;
        } else {
            memcpy(w->labels_g, w->labels, sizeof(int64_t) * b);
        }
        if ((st = af_pfc_global_sample(&w->pfc, w->labels_g, G, cfg->seed, t)))
            return af_error_wrap(st, "worker %d, micro-step %lld", w->ctx->rank, (long long)t);
        int64_t K = w->pfc.K;
        w->lo = K * wr / W;
        w->hi = K * (wr + 1) / W;
        int64_t k = w->hi - w->lo;
        if (m == 0 && (st = af_ctx_fault(w->ctx, "pull", opt_step))) return st;
        if (w->P > 0) {
            if ((st = post_pulls(w, t))) return st;
        } else if ((st = af_ps_shard_gather(&w->local, w->pfc.ids + w->lo, k, w->wslice))) {
            return st;
        }
        w->t[AF_T_GATHER] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        const float *emb;
        if (m == 0) af_backbone_zero_grad(&w->bb);
        if ((st = af_backbone_forward(&w->bb, w->images, b, 1, &nc, &emb))) return st;
        const char *fault;
        if (m == 0 && af_ctx_fault_hit(w->ctx, "forward", opt_step, &fault)) {
            /* Test hook: a non-finite embedding, as a diverging run would produce. */
            if (!strcmp(fault, "nan")) ((float *)emb)[0] = NAN;
            else if ((st = af_ctx_fault_act(w->ctx, "forward", opt_step, fault))) return st;
        }
        w->t[AF_T_FORWARD] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        if (W > 1) {
            af_ctx_wait("the embedding all-gather among workers of micro-step", t, -1, AF_WAIT_GROUP);
            st = mpi_check(MPI_Allgather(emb, b * D, MPI_FLOAT, w->X, b * D, MPI_FLOAT, comm), w, "embedding all-gather");
            af_ctx_wait_done();
            if (st) return st;
        } else {
            memcpy(w->X, emb, sizeof(float) * (size_t)b * D);
        }
        w->t[AF_T_GATHER] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        if (w->P > 0 && (st = finish_pulls(w, t))) return st;
        w->t[AF_T_PULL_WAIT] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        for (int r = 0; r < G; r++) {
            int64_t g = w->pfc.target[r];
            w->slice_labels[r] = g >= w->lo && g < w->hi ? g - w->lo : -1;
        }
        memset(w->dX, 0, sizeof(float) * (size_t)G * D);
        double l;
        af_ctx_wait("the margin-softmax all-reduces among workers of micro-step", t, -1, AF_WAIT_GROUP);
        st = af_fc_loss(&w->margin, w->X, G, G, w->wslice, (int)k, w->slice_labels, comm, &w->fcws, &l, w->dX,
                        w->wslice);
        af_ctx_wait_done();
        if (st) return st;
        total_loss += l;
        if (W > 1) {
            af_ctx_wait("the feature-gradient reduce-scatter among workers of micro-step", t, -1, AF_WAIT_GROUP);
            st = mpi_check(MPI_Reduce_scatter_block(w->dX, w->dx_local, b * D, MPI_FLOAT, MPI_SUM, comm), w,
                           "feature-gradient reduce-scatter");
            af_ctx_wait_done();
            if (st) return st;
        } else {
            memcpy(w->dx_local, w->dX, sizeof(float) * (size_t)b * D);
        }
        if (m == 0 && (st = af_ctx_fault(w->ctx, "push", opt_step))) return st;
        if (w->P > 0) {
            if ((st = post_pushes(w, t))) return st;
        } else if ((st = af_ps_shard_accumulate(&w->local, w->pfc.ids + w->lo, k, w->wslice))) {
            return st;
        }
        w->t[AF_T_LOGITS] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        w->allreduce_now = m == w->acc - 1 && W > 1;
        w->pending_hi = w->bb.n_trainable;
        w->n_buckets = 0;
        w->bucket_rc = 0;
        if ((st = af_backbone_backward(&w->bb, w->dx_local, &nc))) return st;
        w->t[AF_T_BACKWARD] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        if (w->allreduce_now) {
            if (w->pending_hi > 0) launch_bucket(w, 0, w->pending_hi);
            if ((st = mpi_check(w->bucket_rc, w, "starting the gradient all-reduce"))) return st;
            af_ctx_wait("the gradient all-reduce among workers of micro-step", t, -1, AF_WAIT_GROUP);
            st = mpi_check(MPI_Waitall(w->n_buckets, w->bucket_req, MPI_STATUSES_IGNORE), w, "gradient all-reduce");
            af_ctx_wait_done();
            if (st) return st;
        }
        w->t[AF_T_ALLREDUCE] += MPI_Wtime() - t0;

        t0 = MPI_Wtime();
        for (int p = 0; p < w->P; p++) {
            af_ctx_wait("a server to take the push of micro-step", t, af_ctx_server_world_rank(w->ctx, p), AF_WAIT_REPLY);
            if ((st = af_link_wait(&w->tx[p], "sending a push"))) return st;
        }
        af_ctx_wait_done();
        if (w->P > 0 && (st = check_server_errors(w))) return st;
        w->t[AF_T_PUSH_WAIT] += MPI_Wtime() - t0;
    }

    t0 = MPI_Wtime();
    float *g = w->bb.grads, *p = w->bb.params;
    size_t n = w->bb.n_trainable;
    /* A non-finite loss or gradient would reach every weight through the update
     * and then a checkpoint: stop before the optimizer touches anything. The
     * loss and the all-reduced gradients are equal on all workers, so all of
     * them stop here together. */
    if (!isfinite(total_loss))
        return af_errorf(AF_ERR_CORRUPT, "the loss is %g, not finite; stopped before the update, so no checkpoint "
                         "holds NaN/Inf state (is lr = %g or scale = %g too large?)", total_loss / w->acc, (double)lr,
                         (double)cfg->scale);
    double gnorm = 0;
    if (cfg->clip_grad > 0) gnorm = w->last_grad_norm = af_clip_grad_norm(g, n, cfg->clip_grad);
    else {
        for (size_t i = 0; i < n; i++) gnorm += (double)g[i] * g[i];
        w->last_grad_norm = 0;
    }
    if (!isfinite(gnorm))
        return af_errorf(AF_ERR_CORRUPT, "the backbone gradient norm is %g, not finite; stopped before the update, so "
                         "no checkpoint holds NaN/Inf state (is lr = %g or scale = %g too large?)", gnorm, (double)lr,
                         (double)cfg->scale);
    if (!strcmp(cfg->optimizer, "sgd")) af_sgd_step(&w->sgd, p, g, lr, cfg->momentum, cfg->weight_decay);
    else af_adamw_step(&w->adamw, p, g, lr, 0.9f, 0.999f, 1e-8f, cfg->weight_decay);
    if ((st = af_ctx_fault(w->ctx, "commit", opt_step)) || (st = commit(w, opt_step, lr))) return st;
    w->t[AF_T_OPTIM] += MPI_Wtime() - t0;
    *loss = total_loss / w->acc;
    w->last_loss = *loss;
    af_ctx_progress();
    return AF_OK;
}
