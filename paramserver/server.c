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
 * changes nothing.
 *
 * Bounded failure: a worker waits for the answer to its pull, so a refused
 * pull reaches it at once and the worker ends the job. Nobody waits for an
 * answer to a push, a commit or a shutdown: when one of those from a worker is
 * refused, the server replies and also returns the error, so its rank ends the
 * job (main aborts) instead of waiting for a message that will never come.
 * A signal that reaches a server (ctx->stop_flag) is passed on to every worker
 * (AF_TAG_STOP); the workers agree on it and checkpoint as for their own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/msg.h"
#include "arcface/paramserver.h"
#include "arcface/transport.h"

typedef struct {
    const af_ctx *ctx;
    af_ps_shard *s;
    af_link in, out;      /* requests from any worker; replies (core/transport.c) */
    void *stage;          /* replies' rows on their way out (af_link_send_fill) */
    char *rowbuf;         /* (chunk + one row) a split push's rows, assembled whole */
    int64_t max_rows;
    char *seen;           /* (W) which workers this phase has heard from */
    int stop_sent;        /* the signal number passed on to the workers (0: none yet) */
    MPI_Request *stop_req; /* (W) */
} server;

/* Between probes: passes a signal that reached this rank on to every worker.
 * The sends are small and complete without the workers receiving them. */
static af_status poll_signal(void *user)
{
    server *sv = user;
    const af_ctx *c = sv->ctx;
    if (!c->stop_flag || !*c->stop_flag || sv->stop_sent) return AF_OK;
    sv->stop_sent = *c->stop_flag;
    fprintf(stderr, "server rank %d: signal %d; asking the workers to checkpoint and stop\n", c->rank, sv->stop_sent);
    for (int w = 0; w < c->W; w++) {
        int rc = MPI_Isend(&sv->stop_sent, 1, MPI_INT, w, AF_TAG_STOP, c->world, &sv->stop_req[w]);
        if (rc != MPI_SUCCESS)
            return af_errorf(AF_ERR_MPI, "server rank %d: passing signal %d on to worker rank %d failed (MPI code %d)",
                             c->rank, sv->stop_sent, w, rc);
    }
    return AF_OK;
}

/* Labels the wait for the progress deadline (include/arcface/ctx.h). It names
 * a culprit only when one worker alone is missing from the phase: with two or
 * more missing, the one stopped may hold the others in a collective. */
static af_status recv_request(server *sv, int source, int *from, const char *phase, int64_t step, af_wait_kind kind)
{
    int peer = source, missing = 0;
    for (int w = 0; source < 0 && w < sv->ctx->W; w++)
        if (!sv->seen[w]) { peer = w; missing++; }
    if (missing > 1) {
        peer = -1;
        if (kind == AF_WAIT_PEER) kind = AF_WAIT_GROUP;
    }
    af_ctx_wait(phase, step, peer, kind);
    af_status st = af_link_recv(&sv->in, source, AF_TAG_REQUEST, from, poll_signal, sv);
    af_ctx_wait_done();
    return st;
}

static void reply_error(server *sv, int to, const char *msg)
{
    Arcface__ErrorReply er = ARCFACE__ERROR_REPLY__INIT;
    er.rank = sv->ctx->rank;
    er.message = (char *)msg;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_ERROR;
    env.error = &er;
    if (af_link_send(&sv->out, to, AF_TAG_REPLY, &env))
        fprintf(stderr, "server rank %d: could not send an error reply to rank %d: %s\n", sv->ctx->rank, to, af_errmsg());
}

static int is_worker(const server *sv, int from) { return from >= 0 && from < sv->ctx->W; }

/* The rows a pull asked for, as the bytes of one (n, D) array, read from the
 * shard piece by piece while the reply goes out. */
typedef struct {
    const af_ps_shard *s;
    const int64_t *ids;
} gather_job;

static void gather_bytes(void *user, size_t off, size_t n, void *dst)
{
    const gather_job *j = user;
    const size_t row = sizeof(float) * (size_t)j->s->D;
    char *o = dst;
    while (n) {
        size_t i = off / row, in = off % row, take = row - in < n ? row - in : n;
        memcpy(o, (const char *)(j->s->w + (size_t)(j->ids[i] - j->s->start) * j->s->D) + in, take);
        o += take;
        off += take;
        n -= take;
    }
}

/* Answers one pull; AF_ERR_PROTO (already replied to) for a bad one. */
static af_status handle_pull(server *sv, int from, int64_t t)
{
    const Arcface__PullRequest *p = sv->in.mb.env->pull;
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
    if (af_ps_shard_check_ids(sv->s, p->class_ids, (int64_t)p->n_class_ids)) {
        snprintf(msg, sizeof msg, "pull from rank %d: %s", from, af_errmsg());
        goto bad;
    }
    Arcface__PullReply r = ARCFACE__PULL_REPLY__INIT;
    r.step = t;
    r.count = (int64_t)p->n_class_ids;
    r.dim = sv->s->D;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PULL_REPLY;
    env.pull_reply = &r;
    gather_job job = {sv->s, p->class_ids};
    af_ctx_wait("a worker to take the pull reply of micro-step", t, from, AF_WAIT_REPLY);
    af_status st = af_link_send_fill(&sv->out, from, AF_TAG_REPLY, &env, sizeof(float) * (size_t)r.count * sv->s->D,
                                     gather_bytes, &job, sv->stage);
    af_ctx_wait_done();
    return st;
bad:
    reply_error(sv, from, msg);
    return af_errorf(AF_ERR_PROTO, "%s", msg);
}

/* A split push's rows arrive in chunks that may cut rows: whole rows are
 * applied as soon as they are complete, the cut one waits in rowbuf. */
typedef struct {
    server *sv;
    const int64_t *ids;
    int64_t next;   /* rows applied so far */
    size_t have;    /* bytes of the next row already in rowbuf */
} push_job;

static af_status push_rows(void *user, size_t off, size_t n, const void *bytes)
{
    push_job *j = user;
    const size_t row = sizeof(float) * (size_t)j->sv->s->D;
    (void)off;
    memcpy(j->sv->rowbuf + j->have, bytes, n);
    j->have += n;
    int64_t whole = (int64_t)(j->have / row);
    af_status st = af_ps_shard_accumulate(j->sv->s, j->ids + j->next, whole, (const float *)j->sv->rowbuf);
    if (st) return st;
    j->next += whole;
    j->have -= (size_t)whole * row;
    memmove(j->sv->rowbuf, j->sv->rowbuf + (size_t)whole * row, j->have);
    return AF_OK;
}

static af_status handle_push(server *sv, int from, int64_t t)
{
    const Arcface__PushRequest *p = sv->in.mb.env->push;
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
    if (!p->data.data) { /* split: the rows follow, chunk by chunk */
        if (af_ps_shard_check_push(sv->s, p->class_ids, (int64_t)n)) {
            snprintf(msg, sizeof msg, "push from rank %d: %s", from, af_errmsg());
            goto bad;
        }
        push_job j = {sv, p->class_ids, 0, 0};
        af_status st = af_link_recv_data(&sv->in, push_rows, &j);
        if (st) return af_error_wrap(st, "push from rank %d", from);
        return AF_OK;
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
    size_t rows = (size_t)sv.max_rows, chunk = (size_t)cfg->msg_chunk_bytes;
    if ((st = af_link_init(&sv.in, ctx->world, AF_LINK_RECV_REQUESTS, chunk, cap, rows,
                           rows * (8 + sizeof(float) * s->D))) ||
        (st = af_link_init(&sv.out, ctx->world, AF_LINK_SEND, chunk, cap, 16, rows * sizeof(float) * s->D)))
        goto done;
    sv.stage = af_malloc(af_link_stage_bytes(chunk, rows * sizeof(float) * s->D), "pull reply stage");
    size_t data = rows * sizeof(float) * s->D;
    sv.rowbuf = af_malloc((chunk < data ? chunk : data) + sizeof(float) * s->D, "split push rows");
    sv.seen = af_calloc(nw, 1, "worker phase flags");
    sv.stop_req = af_malloc(sizeof(MPI_Request) * nw, "signal forwarding requests");
    if (!sv.stage || !sv.rowbuf || !sv.seen || !sv.stop_req) { st = AF_ERR_NOMEM; goto done; }
    for (size_t w = 0; w < nw; w++) sv.stop_req[w] = MPI_REQUEST_NULL;
    for (int64_t opt = first_opt_step;; opt++) {
        /* Between optimizer steps: worker 0 may ask for a checkpoint or a
         * shutdown before the next pulls; other workers' pulls may come first. */
        for (int m = 0; m < acc; m++) {
            int64_t t = opt * acc + m;
            memset(sv.seen, 0, nw);
            for (int got = 0; got < W;) {
                int from;
                st = recv_request(&sv, MPI_ANY_SOURCE, &from, "the pull of micro-step", t, AF_WAIT_PEER);
                if (st) {
                    if (st != AF_ERR_PROTO) goto done;
                    reply_error(&sv, from, af_errmsg());
                    if (!is_worker(&sv, from)) continue;
                    goto done; /* maybe a push or commit, which nobody resends */
                }
                Arcface__Envelope *env = sv.in.mb.env;
                if (m == 0 && from == 0 && env->body_case == ARCFACE__ENVELOPE__BODY_SHUTDOWN) {
                    if (got == 0) {
                        st = env->shutdown->interrupted ? AF_ERR_INTERRUPTED : AF_OK;
                        if (st) af_errorf(st, "stopped by a signal after the checkpoint of step %lld",
                                          (long long)env->shutdown->opt_step);
                        goto done;
                    }
                    reply_error(&sv, from, "shutdown while pulls of a step are outstanding");
                    st = af_errorf(AF_ERR_PROTO, "shutdown from rank 0 while pulls of micro-step %lld are outstanding",
                                   (long long)t);
                    goto done;
                }
                if (m == 0 && from == 0 && env->body_case == ARCFACE__ENVELOPE__BODY_CHECKPOINT && checkpoint) {
                    int64_t ck = env->checkpoint->opt_step;
                    if ((st = af_ctx_fault(ctx, "checkpoint", ck)) || (st = checkpoint(user, ck, env->checkpoint->path)))
                        goto done;
                    af_ctx_progress();
                    /* Worker 0 may evaluate now, before the next pull: its signs of
                     * life bound the wait (ctx.h), signals are passed on meanwhile. */
                    int evaluated, failed;
                    if ((st = af_ctx_eval_follow(ctx, ck, poll_signal, &sv, &evaluated, &failed))) goto done;
                    if (failed) {
                        st = af_errorf(AF_ERR_ARG, "worker 0 failed to evaluate after the checkpoint of step %lld (see "
                                       "its message)", (long long)ck);
                        goto done;
                    }
                    continue;
                }
                if (!is_worker(&sv, from) || env->body_case != ARCFACE__ENVELOPE__BODY_PULL || sv.seen[from]) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "unexpected %s message from rank %d while waiting for the pulls of "
                             "micro-step %lld", af_msg_type_name(env), from, (long long)t);
                    reply_error(&sv, from, msg);
                    /* A pull's sender waits for this answer; any other message's does not. */
                    if (!is_worker(&sv, from) || env->body_case == ARCFACE__ENVELOPE__BODY_PULL) continue;
                    st = af_errorf(AF_ERR_PROTO, "%s", msg);
                    goto done;
                }
                if (got == 0 && m == 0 && (st = af_ctx_fault(ctx, "pull", opt))) goto done;
                st = handle_pull(&sv, from, t);
                if (st == AF_ERR_PROTO) continue;
                if (st) goto done;
                sv.seen[from] = 1;
                got++;
            }
            memset(sv.seen, 0, nw);
            for (int got = 0; got < W;) {
                int from;
                if ((st = recv_request(&sv, MPI_ANY_SOURCE, &from, "the push of micro-step", t, AF_WAIT_PEER))) {
                    if (st != AF_ERR_PROTO) goto done;
                    reply_error(&sv, from, af_errmsg());
                    if (!is_worker(&sv, from)) continue;
                    goto done; /* a push or commit nobody will resend */
                }
                Arcface__Envelope *env = sv.in.mb.env;
                if (!is_worker(&sv, from) || env->body_case != ARCFACE__ENVELOPE__BODY_PUSH || sv.seen[from]) {
                    char msg[256];
                    snprintf(msg, sizeof msg, "unexpected %s message from rank %d while waiting for the pushes of "
                             "micro-step %lld", af_msg_type_name(env), from, (long long)t);
                    reply_error(&sv, from, msg);
                    if (!is_worker(&sv, from)) continue;
                    st = af_errorf(AF_ERR_PROTO, "%s", msg);
                    goto done;
                }
                if (got == 0 && m == 0 && (st = af_ctx_fault(ctx, "push", opt))) goto done;
                /* A refused push (replied to) ends the job: its sender does not wait for an answer. */
                if ((st = handle_push(&sv, from, t))) goto done;
                sv.seen[from] = 1;
                got++;
            }
        }
        for (;;) {
            int from;
            if ((st = recv_request(&sv, 0, &from, "the commit of optimizer step", opt, AF_WAIT_PEER))) {
                if (st != AF_ERR_PROTO) goto done;
                reply_error(&sv, from, af_errmsg());
                if (!is_worker(&sv, from)) continue;
                goto done; /* a push or commit nobody will resend */
            }
            Arcface__Envelope *env = sv.in.mb.env;
            if (env->body_case == ARCFACE__ENVELOPE__BODY_COMMIT && env->commit->opt_step == opt &&
                env->commit->pushes_per_worker == acc) {
                if ((st = af_ctx_fault(ctx, "commit", opt))) goto done;
                af_ps_shard_apply(s, env->commit->lr);
                af_ctx_progress();
                break;
            }
            char msg[256];
            snprintf(msg, sizeof msg, "expected the commit of optimizer step %lld from rank 0, got %s", (long long)opt,
                     af_msg_type_name(env));
            if (env->body_case == ARCFACE__ENVELOPE__BODY_COMMIT)
                snprintf(msg + strlen(msg), sizeof msg - strlen(msg), " of step %lld with %lld pushes per worker "
                         "(expected %d)", (long long)env->commit->opt_step, (long long)env->commit->pushes_per_worker, acc);
            reply_error(&sv, from, msg);
            /* Worker 0 does not wait for an answer to its commit: end the job. */
            st = af_errorf(AF_ERR_PROTO, "%s", msg);
            goto done;
        }
    }
done:
    if (st && st != AF_ERR_INTERRUPTED) af_error_wrap(st, "parameter server %d (rank %d)", ctx->server_rank, ctx->rank);
    for (size_t w = 0; sv.stop_req && w < nw; w++)
        if (sv.stop_req[w] != MPI_REQUEST_NULL) MPI_Request_free(&sv.stop_req[w]);
    af_link_free(&sv.in);
    af_link_free(&sv.out);
    free(sv.stage);
    free(sv.rowbuf);
    free(sv.seen);
    free(sv.stop_req);
    return st;
}
