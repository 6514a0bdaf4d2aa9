/* A parameter server fed garbage (run under mpirun -np 2): rank 0 plays a worker
 * that sends a real server (rank 1, af_server_run) undecodable bytes, a truncated
 * protobuf, another protocol version, an oversized message, unexpected types, a
 * second pull, out-of-range class ids, payloads of the wrong size and split-message
 * headers (core/transport.c) whose bulk claim is impossible. Each must be
 * answered with an ErrorReply naming the problem, and the shard must be intact:
 * a valid pull afterwards returns exactly the initial rows, and after a valid
 * push + commit exactly the SGD update a local shard computes.
 * A refused pull leaves the server serving (its sender waits for the answer);
 * anything else refused from a worker — nobody waits for an answer to a push,
 * commit or undecodable bytes — also ends af_server_run with that error, so the
 * job ends instead of waiting (bounded failure). The test then checks the
 * returned error and restarts the server on the same shard (tags 98/99). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/msg.h"
#include "arcface/paramserver.h"
#include "arcface/transport.h"

enum { C = 50, D = 8, NIDS = 5 };
static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static af_ctx ctx;
static af_config cfg;
static af_msgbuf tx, rx;

static void send_raw(const void *buf, int len) { MPI_Send(buf, len, MPI_BYTE, 1, AF_TAG_REQUEST, ctx.world); }

static void send_env(Arcface__Envelope *env)
{
    if (af_msg_send(ctx.world, 1, AF_TAG_REQUEST, env, &tx)) { printf("send: %s\n", af_errmsg()); exit(1); }
}

/* Receives the server's next reply; returns its error text or NULL for a non-error. */
static const char *reply(void)
{
    int from;
    if (af_msg_recv(ctx.world, 1, AF_TAG_REPLY, &rx, &from)) { printf("reply: %s\n", af_errmsg()); exit(1); }
    return rx.env->body_case == ARCFACE__ENVELOPE__BODY_ERROR ? rx.env->error->message : NULL;
}

static void expect_error(const char *what, const char *needle)
{
    const char *e = reply();
    CHECK(e && strstr(e, needle), "%s: expected an error mentioning '%s', got %s", what, needle, e ? e : "a non-error");
    if (e) printf("%-28s -> error: %s\n", what, e);
}

/* A refusal that must also end the server: its error reply, then the error
 * af_server_run returned (sent back by the test's server rank), then a restart
 * of the server at optimizer step `restart`. */
static void expect_fatal(const char *what, const char *needle, int64_t restart)
{
    expect_error(what, needle);
    char msg[1024] = "";
    MPI_Recv(msg, sizeof msg, MPI_CHAR, 1, 99, ctx.world, MPI_STATUS_IGNORE);
    msg[sizeof msg - 1] = 0;
    CHECK(strstr(msg, needle) != NULL, "%s: the server must return the error, it returned '%s'", what, msg);
    printf("%-28s -> server ended: %s\n", "", msg);
    MPI_Send(&restart, 1, MPI_INT64_T, 1, 98, ctx.world);
}

static void pull(int64_t step, const int64_t *ids, int n)
{
    Arcface__PullRequest p = ARCFACE__PULL_REQUEST__INIT;
    p.step = step;
    p.n_class_ids = (size_t)n;
    p.class_ids = (int64_t *)ids;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PULL;
    env.pull = &p;
    send_env(&env);
}

static void push(int64_t step, const int64_t *ids, int n, const float *g, size_t bytes)
{
    Arcface__PushRequest p = ARCFACE__PUSH_REQUEST__INIT;
    p.step = step;
    p.n_class_ids = (size_t)n;
    p.class_ids = (int64_t *)ids;
    p.dim = D;
    p.data.len = bytes;
    p.data.data = (uint8_t *)g;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PUSH;
    env.push = &p;
    send_env(&env);
}

static void check_rows(const char *what, const af_ps_shard *ref, const int64_t *ids, int n)
{
    const char *e = reply();
    CHECK(!e && rx.env->body_case == ARCFACE__ENVELOPE__BODY_PULL_REPLY, "%s: no pull reply (%s)", what, e ? e : "?");
    if (e || rx.env->body_case != ARCFACE__ENVELOPE__BODY_PULL_REPLY) return;
    const float *got = (const float *)rx.env->pull_reply->data.data;
    CHECK(rx.env->pull_reply->data.len == sizeof(float) * n * D, "%s: payload %zu bytes", what,
          rx.env->pull_reply->data.len);
    float want[NIDS * D];
    af_ps_shard_gather(ref, ids, n, want);
    double d = 0;
    for (int i = 0; i < n * D; i++) d = fmax(d, fabs((double)got[i] - want[i]));
    printf("%-28s -> %d rows, max difference from the expected rows %.3g\n", what, n, d);
    CHECK(d == 0, "%s: rows differ from the expected ones by %g", what, d);
}

static void worker(void)
{
    af_ps_shard ref; /* what the server's shard must hold */
    af_ps_shard_init(&ref, 0, C, D, C, &cfg);
    af_ps_shard_init_weights(&ref, cfg.seed);
    af_msgbuf_init(&tx, 1 << 16, 1024);
    af_msgbuf_init(&rx, 1 << 16, 1024);
    const int64_t ids[NIDS] = {0, 7, 13, 31, 49};
    const int64_t bad_ids[2] = {3, 50};

    uint8_t junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
    send_raw(junk, sizeof junk);
    expect_fatal("undecodable bytes", "not a valid protobuf", 0);

    Arcface__PullRequest p = ARCFACE__PULL_REQUEST__INIT;
    p.n_class_ids = NIDS;
    p.class_ids = (int64_t *)ids;
    Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
    env.body_case = ARCFACE__ENVELOPE__BODY_PULL;
    env.pull = &p;
    size_t len;
    af_msg_pack(&env, &tx, &len);
    send_raw(tx.buf, (int)len - 3);
    expect_fatal("truncated protobuf", "not a valid protobuf", 0);

    env.version = 99;
    len = arcface__envelope__pack(&env, tx.buf);
    send_raw(tx.buf, (int)len);
    expect_fatal("wrong protocol version", "protocol version 99", 0);

    uint8_t *big = calloc(1 << 22, 1);
    send_raw(big, 1 << 22);
    free(big);
    expect_fatal("oversized message", "limit", 0);

    /* Split messages (core/transport.c): headers whose bulk claims are refused
     * before any bulk is received, then a valid split pull. */
    Arcface__StepCommit sc = ARCFACE__STEP_COMMIT__INIT;
    Arcface__Envelope es = ARCFACE__ENVELOPE__INIT;
    es.body_case = ARCFACE__ENVELOPE__BODY_COMMIT;
    es.commit = &sc;
    es.bulk_bytes = 64;
    send_env(&es);
    expect_fatal("commit claiming bulk bytes", "carries no bulk", 0);
    Arcface__PullRequest sp = ARCFACE__PULL_REQUEST__INIT;
    es.body_case = ARCFACE__ENVELOPE__BODY_PULL;
    es.pull = &sp;
    es.bulk_bytes = (uint64_t)8 << 30;
    send_env(&es);
    expect_fatal("split pull of 2^30 ids", "more than this rank accepts", 0);
    Arcface__PushRequest spu = ARCFACE__PUSH_REQUEST__INIT;
    spu.dim = D;
    es.body_case = ARCFACE__ENVELOPE__BODY_PUSH;
    es.push = &spu;
    es.bulk_bytes = 8 + 4 * D + 1;
    send_env(&es);
    expect_fatal("split push, partial row", "not whole rows", 0);
    es.body_case = ARCFACE__ENVELOPE__BODY_PULL;
    es.bulk_bytes = sizeof ids;
    send_env(&es);
    MPI_Send(ids, (int)sizeof ids, MPI_BYTE, 1, AF_TAG_BULK_REQUEST, ctx.world);
    check_rows("valid split pull", &ref, ids, NIDS);
    pull(0, ids, NIDS);
    expect_fatal("second pull of a step", "unexpected pull", 0);

    Arcface__ErrorReply er = ARCFACE__ERROR_REPLY__INIT;
    er.message = "hello";
    Arcface__Envelope e2 = ARCFACE__ENVELOPE__INIT;
    e2.body_case = ARCFACE__ENVELOPE__BODY_ERROR;
    e2.error = &er;
    send_env(&e2);
    expect_fatal("unexpected message type", "unexpected error message", 0);

    float g[NIDS * D];
    for (int i = 0; i < NIDS * D; i++) g[i] = 0.1f * (float)(i % 7) - 0.3f;
    push(0, ids, NIDS, g, sizeof g);
    expect_fatal("push before the pulls", "unexpected push", 0);

    pull(0, bad_ids, 2);
    expect_error("class id out of range", "class id 50");
    pull(5, ids, NIDS);
    expect_error("pull for a wrong step", "micro-step 5");

    pull(0, ids, NIDS);
    check_rows("valid pull after garbage", &ref, ids, NIDS);
    pull(0, ids, NIDS);
    expect_fatal("second pull of a step", "unexpected pull", 0);

    pull(0, ids, NIDS);
    check_rows("pull after a restart", &ref, ids, NIDS);
    push(0, ids, NIDS, g, sizeof g - 4);
    expect_fatal("push payload too short", "payload bytes", 0);
    pull(0, ids, NIDS);
    check_rows("pull after a refused push", &ref, ids, NIDS);
    push(0, bad_ids, 2, g, 2 * D * sizeof(float));
    expect_fatal("push with a bad class id", "class id 50", 0);
    pull(0, ids, NIDS);
    check_rows("pull after a refused push", &ref, ids, NIDS);
    push(0, ids, NIDS, g, sizeof g);
    af_ps_shard_accumulate(&ref, ids, NIDS, g);

    Arcface__StepCommit c = ARCFACE__STEP_COMMIT__INIT;
    c.opt_step = 0;
    c.pushes_per_worker = 1;
    c.lr = 0.5f;
    Arcface__Envelope e3 = ARCFACE__ENVELOPE__INIT;
    e3.body_case = ARCFACE__ENVELOPE__BODY_COMMIT;
    e3.commit = &c;
    c.opt_step = 3;
    send_env(&e3);
    expect_fatal("commit of a wrong step", "commit of optimizer step 0", 0);
    /* The accumulated push survives the refused commit: an empty push completes the step. */
    pull(0, ids, NIDS);
    check_rows("pull after a refused commit", &ref, ids, NIDS);
    push(0, ids, 0, g, 0);
    c.opt_step = 0;
    send_env(&e3);
    af_ps_shard_apply(&ref, 0.5f);

    pull(1, ids, NIDS);
    check_rows("pull after push + commit", &ref, ids, NIDS);
    push(1, ids, NIDS, g, sizeof g);
    af_ps_shard_accumulate(&ref, ids, NIDS, g);
    c.opt_step = 1;
    send_env(&e3);
    af_ps_shard_apply(&ref, 0.5f);
    const int64_t other[3] = {1, 2, 48};
    pull(2, other, 3);
    check_rows("untouched rows intact", &ref, other, 3);
    push(2, other, 0, g, 0);
    c.opt_step = 2;
    send_env(&e3);

    Arcface__Shutdown sd = ARCFACE__SHUTDOWN__INIT;
    Arcface__Envelope e4 = ARCFACE__ENVELOPE__INIT;
    e4.body_case = ARCFACE__ENVELOPE__BODY_SHUTDOWN;
    e4.shutdown = &sd;
    send_env(&e4);
    af_ps_shard_free(&ref);
    af_msgbuf_free(&tx);
    af_msgbuf_free(&rx);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    af_config_defaults(&cfg);
    cfg.embedding_size = D;
    cfg.batch_size = 4;
    cfg.momentum = 0.9f;
    cfg.weight_decay = 0.01f;
    if (af_ctx_init(&ctx, MPI_COMM_WORLD, 1, C)) { printf("ctx: %s\n", af_errmsg()); return 1; }
    if (ctx.size != 2) { printf("run with mpirun -np 2\n"); return 1; }
    int st = 0;
    if (ctx.role == AF_ROLE_WORKER) {
        worker();
    } else {
        af_ps_shard s;
        af_ps_shard_init(&s, 0, C, D, C, &cfg);
        af_ps_shard_init_weights(&s, cfg.seed);
        int64_t first = 0;
        while ((st = af_server_run(&ctx, &cfg, &s, first, NULL, NULL)) == AF_ERR_PROTO) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", af_errmsg());
            MPI_Send(msg, (int)strlen(msg) + 1, MPI_CHAR, 0, 99, ctx.world);
            MPI_Recv(&first, 1, MPI_INT64_T, 0, 98, ctx.world, MPI_STATUS_IGNORE);
        }
        if (st) printf("server returned an error: %s\n", af_errmsg());
        af_ps_shard_free(&s);
    }
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, ctx.world);
    MPI_Allreduce(MPI_IN_PLACE, &st, 1, MPI_INT, MPI_MAX, ctx.world);
    if (ctx.rank == 0) printf("%d passed, %d failed\n", checks - failures, failures + (st != 0));
    af_ctx_free(&ctx);
    MPI_Finalize();
    return failures || st ? 1 : 0;
}
