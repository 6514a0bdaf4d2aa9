/* Envelope transport over MPI with checked decoding (include/arcface/msg.h). */
#include "arcface/msg.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *arena_alloc(void *data, size_t size)
{
    af_msgbuf *m = data;
    size_t at = (m->arena_used + 15) & ~(size_t)15;
    if (size > m->arena_cap || at > m->arena_cap - size) return NULL;
    m->arena_used = at + size;
    return m->arena + at;
}

static void arena_free(void *data, void *p) { (void)data; (void)p; }

void *af_msgbuf_alloc(af_msgbuf *m, size_t size) { return arena_alloc(m, size); }

af_status af_msgbuf_init(af_msgbuf *m, size_t cap, size_t max_ids)
{
    /* Unpacked: the payload bytes (<= cap), every id as an int64 (a varint on
     * the wire may be a single byte), and the message structs. */
    return af_msgbuf_init_sized(m, cap, cap + 8 * max_ids + 65536);
}

af_status af_msgbuf_init_sized(af_msgbuf *m, size_t cap, size_t arena_cap)
{
    memset(m, 0, sizeof *m);
    m->cap = cap;
    m->arena_cap = arena_cap;
    m->buf = af_malloc(cap, "message buffer");
    m->arena = af_malloc(m->arena_cap, "message unpack arena");
    if (!m->buf || !m->arena) {
        af_msgbuf_free(m);
        return AF_ERR_NOMEM;
    }
    m->alloc.alloc = arena_alloc;
    m->alloc.free = arena_free;
    m->alloc.allocator_data = m;
    return AF_OK;
}

void af_msgbuf_free(af_msgbuf *m)
{
    free(m->buf);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

const char *af_msg_type_name(const Arcface__Envelope *env)
{
    if (!env) return "undecodable";
    switch (env->body_case) {
    case ARCFACE__ENVELOPE__BODY_PULL: return "pull";
    case ARCFACE__ENVELOPE__BODY_PULL_REPLY: return "pull_reply";
    case ARCFACE__ENVELOPE__BODY_PUSH: return "push";
    case ARCFACE__ENVELOPE__BODY_COMMIT: return "commit";
    case ARCFACE__ENVELOPE__BODY_CHECKPOINT: return "checkpoint";
    case ARCFACE__ENVELOPE__BODY_SHUTDOWN: return "shutdown";
    case ARCFACE__ENVELOPE__BODY_ERROR: return "error";
    default: return "empty";
    }
}

af_status af_msg_pack(Arcface__Envelope *env, af_msgbuf *m, size_t *len)
{
    env->version = AF_PROTOCOL_VERSION;
    size_t n = arcface__envelope__get_packed_size(env);
    if (n > m->cap)
        return af_errorf(AF_ERR_PROTO, "%s message of %zu bytes exceeds the %zu-byte limit", af_msg_type_name(env), n,
                         m->cap);
    *len = arcface__envelope__pack(env, m->buf);
    return AF_OK;
}

af_status af_msg_send(MPI_Comm comm, int dest, int tag, Arcface__Envelope *env, af_msgbuf *m)
{
    size_t len = 0;
    af_status st = af_msg_pack(env, m, &len);
    if (st) return st;
    if (len > INT_MAX)
        return af_errorf(AF_ERR_PROTO, "%s message of %zu bytes to rank %d is more than one MPI call carries (%d); "
                         "bulk messages go through core/transport.c", af_msg_type_name(env), len, dest, INT_MAX);
    int rc = MPI_Send(m->buf, (int)len, MPI_BYTE, dest, tag, comm);
    if (rc != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "sending %s message to rank %d failed (MPI code %d)", af_msg_type_name(env), dest, rc);
    return AF_OK;
}

af_status af_msg_unpack(af_msgbuf *m, size_t len, int from)
{
    m->arena_used = 0;
    m->env = arcface__envelope__unpack(&m->alloc, len, m->buf);
    if (!m->env)
        return af_errorf(AF_ERR_PROTO, "message from rank %d (%zu bytes) is not a valid protobuf Envelope (truncated, "
                         "corrupt or too large to unpack)", from, len);
    if (m->env->version != AF_PROTOCOL_VERSION)
        return af_errorf(AF_ERR_PROTO, "%s message from rank %d has protocol version %u, expected %u",
                         af_msg_type_name(m->env), from, m->env->version, AF_PROTOCOL_VERSION);
    if (m->env->body_case == ARCFACE__ENVELOPE__BODY__NOT_SET)
        return af_errorf(AF_ERR_PROTO, "message from rank %d has no body", from);
    return AF_OK;
}

/* MPI_Probe and MPI_Wait busy-poll a core while they wait. A server waits
 * most of the time, and on a node it shares with workers that core is worth
 * more to them: poll briefly, then sleep between polls, backing off to 1 ms,
 * and in a long wait (a worker's forward or backward pass) to an eighth of
 * the time waited so far, at most 10 ms: each wake-up costs tens of
 * microseconds of a core, so 1 ms sleeps still took about 5% of one, and a
 * message noticed a few ms late is one that nobody needed sooner. A waiter
 * keeps one of these per wait; patience_pause says when to sleep. */
typedef struct {
    double t0;
    long sleep_ns;
} patience;

static patience patience_start(void) { return (patience){MPI_Wtime(), 20000}; }

/* Nothing during the short busy phase; after it, one sleep. */
static void patience_pause(patience *p)
{
    if (MPI_Wtime() - p->t0 < 50e-6) return;
    struct timespec ts = {0, p->sleep_ns};
    nanosleep(&ts, NULL);
    double cap = (MPI_Wtime() - p->t0) * 1e9 / 8;
    cap = cap < 1e6 ? 1e6 : cap > 1e7 ? 1e7 : cap;
    if (p->sleep_ns < (long)cap) p->sleep_ns = 2 * p->sleep_ns < (long)cap ? 2 * p->sleep_ns : (long)cap;
}

static af_status probe_patiently(MPI_Comm comm, int source, int tag, MPI_Status *s, af_msg_poll_fn poll,
                                 void *user)
{
    patience pt = patience_start();
    for (;;) {
        int flag = 0, rc = MPI_Iprobe(source, tag, comm, &flag, s);
        if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Iprobe failed (code %d)", rc);
        if (flag) return AF_OK;
        if (MPI_Wtime() - pt.t0 < 50e-6) continue;
        af_status st = poll ? poll(user) : AF_OK;
        if (st) return st;
        patience_pause(&pt);
    }
}

int af_mpi_waitall_patiently(int n, MPI_Request *req)
{
    patience pt = patience_start();
    for (;;) {
        int flag = 0, rc = MPI_Testall(n, req, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS || flag) return rc;
        patience_pause(&pt);
    }
}

af_status af_msg_recv(MPI_Comm comm, int source, int tag, af_msgbuf *m, int *from)
{
    return af_msg_recv_poll(comm, source, tag, m, from, NULL, NULL);
}

af_status af_msg_recv_poll(MPI_Comm comm, int source, int tag, af_msgbuf *m, int *from, af_msg_poll_fn poll,
                           void *user)
{
    MPI_Status s;
    *from = -1;
    af_status st = probe_patiently(comm, source, tag, &s, poll, user);
    if (st) return st;
    int count, rc = MPI_Get_count(&s, MPI_BYTE, &count);
    if (rc != MPI_SUCCESS || count == MPI_UNDEFINED)
        return af_errorf(AF_ERR_MPI, "MPI_Get_count of a message from rank %d failed (code %d)", s.MPI_SOURCE, rc);
    *from = s.MPI_SOURCE;
    m->env = NULL;
    if ((size_t)count > m->cap) {
        /* Consumed into a scratch buffer of its own size, freed at once: a
         * truncating receive is not safe, Open MPI's single-copy (CMA) path
         * writes the whole message past the buffer (heap corruption, seen with
         * a 4 MiB message into a 6 KiB buffer). Only on this error path. */
        void *scratch = malloc((size_t)count);
        if (!scratch)
            return af_errorf(AF_ERR_PROTO, "message from rank %d is %d bytes, more than the %zu-byte limit (and no "
                             "memory to discard it)", s.MPI_SOURCE, count, m->cap);
        MPI_Recv(scratch, count, MPI_BYTE, s.MPI_SOURCE, tag, comm, MPI_STATUS_IGNORE);
        free(scratch);
        return af_errorf(AF_ERR_PROTO, "message from rank %d is %d bytes, more than the %zu-byte limit", s.MPI_SOURCE,
                         count, m->cap);
    }
    rc = MPI_Recv(m->buf, count, MPI_BYTE, s.MPI_SOURCE, tag, comm, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "receiving from rank %d failed (code %d)", s.MPI_SOURCE, rc);
    return af_msg_unpack(m, (size_t)count, s.MPI_SOURCE);
}
