/* The parameter-server rank's loop. Bulk-synchronous, in phases per
 * micro-step t: (1) one pull from every worker, answered at once (every update
 * of earlier optimizer steps is already applied); (2) one push from every
 * worker, summed into the accumulator; (3) after the last micro-step of an
 * optimizer step, worker 0's commit, which applies the update. Between
 * optimizer steps worker 0 may also ask for a checkpoint or a shutdown.
 * Within a phase messages are taken from any worker in arrival order; MPI's
 * per-sender ordering guarantees a worker's next message belongs to the
 * current phase. Anything else — undecodable, another protocol version, the
 * wrong type or step, a second pull from the same worker, ids outside the
 * shard, a payload of the wrong size — is answered with an ErrorReply and
 * changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/msg.h"
#include "arcface/paramserver.h"

typedef struct {
    const af_ctx *ctx;
    af_ps_shard *s;
    af_msgbuf in, out;
    float *rows;          /* (max_rows, D) gather buffer for replies */
    int64_t max_rows;
    char *seen;           /* (W) which workers this phase has heard from */
} server;

static void reply_error(server *sv, int to, const char *msg)
{
    Arcface__ErrorReply er = ARCFACE__ERROR_REPLY__INIT;
    er.rank = sv->ctx->rank;
    er.message = (char *)msg;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_ERROR;
    env.error = &er;
    if (af_msg_send(sv->ctx->world, to, AF_TAG_REPLY, &env, &sv->out))
        fprintf(stderr, "server rank %d: could not send an error reply to rank %d: %s\n", sv->ctx->rank, to, af_errmsg());
}

static int is_worker(const server *sv, int from) { return from >= 0 && from < sv->ctx->W; }

/* Answers one pull; AF_ERR_PROTO (already replied to) for a bad one. */
static af_status handle_pull(server *sv, int from, int64_t t)
{
    const Arcface__PullRequest *p = sv->in.env->pull;
    char msg[512];
    if (p->step != t) {
        snprintf(msg, sizeof msg, "pull from rank %d is for micro-step %lld, the server is at %lld", from,
                 (long long)p->step, (long long)t);
        goto bad;
    }
    if ((int64_t)p->n_class_ids > sv->max_rows) {
        snprintf(msg, sizeof msg, "pull from rank %d asks for %zu rows, more than the %lld the sampling allows", from,
                 p->n_class_ids, (long long)sv->max_rows);
        goto bad;
    }
    if (af_ps_shard_gather(sv->s, p->class_ids, (int64_t)p->n_class_ids, sv->rows)) {
        snprintf(msg, sizeof msg, "pull from rank %d: %s", from, af_errmsg());
        goto bad;
    }
    Arcface__PullReply r = ARCFACE__PULL_REPLY__INIT;
    r.step = t;
    r.count = (int64_t)p->n_class_ids;
    r.dim = sv->s->D;
    r.data.len = sizeof(float) * (size_t)r.count * sv->s->D;
    r.data.data = (uint8_t *)sv->rows;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PULL_REPLY;
    env.pull_reply = &r;
    return af_msg_send(sv->ctx->world, from, AF_TAG_REPLY, &env, &sv->out);
bad:
    reply_error(sv, from, msg);
    return af_errorf(AF_ERR_PROTO, "%s", msg);
}

static af_status handle_push(server *sv, int from, int64_t t)
{
    const Arcface__PushRequest *p = sv->in.env->push;
    char msg[512];
    size_t n = p->n_class_ids;
    if (p->step != t) {
        snprintf(msg, sizeof msg, "push from rank %d is for micro-step %lld, the server is at %lld", from,
                 (long long)p->step, (long long)t);
        goto bad;
    }
    if (p->dim != sv->s->D || p->data.len != sizeof(float) * n * (size_t)sv->s->D) {
        snprintf(msg, sizeof msg, "push from rank %d: %zu ids of dimension %d need %zu payload bytes, got %zu (dim %d)",
                 from, n, sv->s->D, sizeof(float) * n * (size_t)sv->s->D, p->data.len, p->dim);
        goto bad;
    }
    /* The arena gives 16-byte aligned blocks, so the payload is float-aligned. */
    if (af_ps_shard_accumulate(sv->s, p->class_ids, (int64_t)n, (const float *)p->data.data)) {
        snprintf(msg, sizeof msg, "push from rank %d: %s", from, af_errmsg());
        goto bad;
    }
    return AF_OK;
bad:
    reply_error(sv, from, msg);
    return af_errorf(AF_ERR_PROTO, "%s", msg);
}

af_status af_server_run(const af_ctx *ctx, const af_config *cfg, af_ps_shard *s, int64_t first_opt_step,
                        af_ps_checkpoint_fn checkpoint, void *user)
{
    server sv = {.ctx = ctx, .s = s};
    const int W = ctx->W, acc = cfg->gradient_acc;
    const size_t nw = (size_t)(W > 0 ? W : 1);
    /* A worker's slice of the sampled centres is at most ceil(K / W) rows. */
    sv.max_rows = s->max_touched < s->count ? s->max_touched : s->count;
    size_t cap = 4096 + (size_t)sv.max_rows * (12 + sizeof(float) * s->D);
    af_status st;
    if ((st = af_msgbuf_init(&sv.in, cap, (size_t)sv.max_rows)) || (st = af_msgbuf_init(&sv.out, cap, 16))) goto done;
    sv.rows = af_malloc(sizeof(float) * (size_t)(sv.max_rows ? sv.max_rows : 1) * s->D, "pull reply rows");
    sv.seen = af_calloc(nw, 1, "worker phase flags");
    if (!sv.rows || !sv.seen) { st = AF_ERR_NOMEM; goto done; }

    for (int64_t opt = first_opt_step;; opt++) {
        /* Between optimizer steps: worker 0 may ask for a checkpoint or a
         * shutdown before the next pulls; other workers' pulls may come first. */
        for (int m = 0; m < acc; m++) {
            int64_t t = opt * acc + m;
            memset(sv.seen, 0, nw);
            for (int got = 0; got < W;) {
                int from;
                if ((st = af_msg_recv(ctx->world, MPI_ANY_SOURCE, AF_TAG_REQUEST, &sv.in, &from))) {
                    if (st != AF_ERR_PROTO) goto done;
                    reply_error(&sv, from, af_errmsg());
                    continue;
                }
                Arcface__Envelope *env = sv.in.env;
                if (m == 0 && from == 0 && env->body_case == ARCFACE__ENVELOPE__BODY_SHUTDOWN) {
                    if (got == 0) {
                        st = env->shutdown->interrupted ? AF_ERR_INTERRUPTED : AF_OK;
                        if (st) af_errorf(st, "stopped by a signal after the checkpoint of step %lld",
                                          (long long)env->shutdown->opt_step);
                        goto done;
                    }
                    reply_error(&sv, from, "shutdown while pulls of a step are outstanding");
                    continue;
                }
                if (m == 0 && from == 0 && env->body_case == ARCFACE__ENVELOPE__BODY_CHECKPOINT && checkpoint) {
                    if ((st = checkpoint(user, env->checkpoint->opt_step, env->checkpoint->path))) goto done;
                    continue;
                }
                if (!is_worker(&sv, from) || env->body_case != ARCFACE__ENVELOPE__BODY_PULL || sv.seen[from]) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "unexpected %s message from rank %d while waiting for the pulls of "
                             "micro-step %lld", af_msg_type_name(env), from, (long long)t);
                    reply_error(&sv, from, msg);
                    continue;
                }
                st = handle_pull(&sv, from, t);
                if (st == AF_ERR_PROTO) continue;
                if (st) goto done;
                sv.seen[from] = 1;
                got++;
            }
            memset(sv.seen, 0, nw);
            for (int got = 0; got < W;) {
                int from;
                if ((st = af_msg_recv(ctx->world, MPI_ANY_SOURCE, AF_TAG_REQUEST, &sv.in, &from))) {
                    if (st != AF_ERR_PROTO) goto done;
                    reply_error(&sv, from, af_errmsg());
                    continue;
                }
                Arcface__Envelope *env = sv.in.env;
                if (!is_worker(&sv, from) || env->body_case != ARCFACE__ENVELOPE__BODY_PUSH || sv.seen[from]) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "unexpected %s message from rank %d while waiting for the pushes of "
                             "micro-step %lld", af_msg_type_name(env), from, (long long)t);
                    reply_error(&sv, from, msg);
                    continue;
                }
                st = handle_push(&sv, from, t);
                if (st == AF_ERR_PROTO) continue;
                if (st) goto done;
                sv.seen[from] = 1;
                got++;
            }
        }
        for (;;) {
            int from;
            if ((st = af_msg_recv(ctx->world, 0, AF_TAG_REQUEST, &sv.in, &from))) {
                if (st != AF_ERR_PROTO) goto done;
                reply_error(&sv, from, af_errmsg());
                continue;
            }
            Arcface__Envelope *env = sv.in.env;
            if (env->body_case == ARCFACE__ENVELOPE__BODY_COMMIT && env->commit->opt_step == opt &&
                env->commit->pushes_per_worker == acc) {
                af_ps_shard_apply(s, env->commit->lr);
                break;
            }
            char msg[256];
            snprintf(msg, sizeof msg, "expected the commit of optimizer step %lld from rank 0, got %s", (long long)opt,
                     af_msg_type_name(env));
            reply_error(&sv, from, msg);
        }
    }
done:
    if (st && st != AF_ERR_INTERRUPTED) af_error_wrap(st, "parameter server %d (rank %d)", ctx->server_rank, ctx->rank);
    af_msgbuf_free(&sv.in);
    af_msgbuf_free(&sv.out);
    free(sv.rows);
    free(sv.seen);
    return st;
}
