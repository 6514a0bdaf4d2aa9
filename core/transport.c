/* Chunked, 64-bit bulk transport between worker and server ranks
 * (include/arcface/transport.h). A split message is its header Envelope on
 * the message tag, then its id segment and its row segment, each cut into
 * MPI_BYTE messages of at most l->chunk bytes, on the bulk tag; MPI keeps
 * messages of one sender, tag and communicator in order, and a receiver takes
 * a header's chunks before that sender's next header, so chunks never mix. */
#include "arcface/transport.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int bulk_tag(int tag) { return tag == AF_TAG_REPLY ? AF_TAG_BULK_REPLY : AF_TAG_BULK_REQUEST; }

static size_t nchunks(size_t bytes, size_t chunk) { return (bytes + chunk - 1) / chunk; }

/* Wire buffer and arena of a link; the buffer never exceeds one chunk, as
 * nothing larger travels inline. */
static void link_sizes(af_link_use use, double chunk, double max_inline, double max_ids, double max_bulk,
                       double *cap, double *arena)
{
    *cap = max_inline < chunk ? max_inline : chunk;
    *arena = 65536;
    if (use != AF_LINK_SEND) *arena += *cap + 8 * max_ids;
    /* A split push's rows stream through one chunk (af_link_recv_data). */
    if (use == AF_LINK_RECV_REQUESTS && max_inline > chunk) *arena += chunk;
    (void)max_bulk;
}

double af_link_bytes(af_link_use use, double chunk, double max_inline, double max_ids, double max_bulk)
{
    double cap, arena;
    link_sizes(use, chunk, max_inline, max_ids, max_bulk, &cap, &arena);
    return cap + arena + sizeof(MPI_Request) * (3 + 8 * max_ids / chunk + max_bulk / chunk);
}

af_status af_link_init(af_link *l, MPI_Comm comm, af_link_use use, size_t chunk, size_t max_inline, size_t max_ids,
                       size_t max_bulk)
{
    memset(l, 0, sizeof *l);
    if (chunk < (size_t)AF_CHUNK_MIN || chunk > (size_t)INT_MAX)
        return af_errorf(AF_ERR_ARG, "configuration key 'msg_chunk_bytes': must be in [%lld, %d], got %zu",
                         (long long)AF_CHUNK_MIN, INT_MAX, chunk);
    l->comm = comm;
    l->chunk = chunk;
    l->peer = -1;
    double capd, arenad;
    link_sizes(use, (double)chunk, (double)max_inline, (double)max_ids, (double)max_bulk, &capd, &arenad);
    size_t cap = (size_t)capd, arena = (size_t)arenad;
    af_status st = af_msgbuf_init_sized(&l->mb, cap, arena);
    if (st) return st;
    l->max_bulk = max_bulk;
    if (use == AF_LINK_RECV_REQUESTS && max_inline > chunk && !(l->stage = af_malloc(chunk, "transport stage"))) {
        af_link_free(l);
        return AF_ERR_NOMEM;
    }
    l->max_req = (int)(1 + nchunks(8 * max_ids, chunk) + nchunks(max_bulk, chunk) + 2);
    l->req = af_malloc(sizeof(MPI_Request) * (size_t)l->max_req, "transport requests");
    if (!l->req) {
        af_link_free(l);
        return AF_ERR_NOMEM;
    }
    for (int i = 0; i < l->max_req; i++) l->req[i] = MPI_REQUEST_NULL;
    return AF_OK;
}

void af_link_free(af_link *l)
{
    for (int i = 0; l->req && i < l->n_req; i++)
        if (l->req[i] != MPI_REQUEST_NULL) {
            MPI_Cancel(&l->req[i]);
            MPI_Request_free(&l->req[i]);
        }
    af_msgbuf_free(&l->mb);
    free(l->req);
    free(l->stage);
    memset(l, 0, sizeof *l);
}

/* The bulk fields of an Envelope: where its ids and rows live. */
typedef struct {
    int64_t **ids;
    size_t *n_ids;
    ProtobufCBinaryData *data;
} bulk_fields;

static bulk_fields fields_of(Arcface__Envelope *env)
{
    bulk_fields f = {0};
    switch (env->body_case) {
    case ARCFACE__ENVELOPE__BODY_PULL:
        f.ids = &env->pull->class_ids;
        f.n_ids = &env->pull->n_class_ids;
        break;
    case ARCFACE__ENVELOPE__BODY_PUSH:
        f.ids = &env->push->class_ids;
        f.n_ids = &env->push->n_class_ids;
        f.data = &env->push->data;
        break;
    case ARCFACE__ENVELOPE__BODY_PULL_REPLY: f.data = &env->pull_reply->data; break;
    default: break;
    }
    return f;
}

int af_link_splits(const af_link *l, Arcface__Envelope *env)
{
    env->version = AF_PROTOCOL_VERSION;
    env->bulk_bytes = 0;
    return arcface__envelope__get_packed_size(env) > l->chunk;
}

static af_status mpi_fail(int rc, const char *what, const char *type, int peer)
{
    return af_errorf(AF_ERR_MPI, "%s a %s message %s rank %d failed (MPI code %d)", what, type,
                     !strcmp(what, "sending") ? "to" : "from", peer, rc);
}

/* Posts the chunks of one segment. */
static af_status post_segment(af_link *l, void *p, size_t bytes, int send, const char *type)
{
    for (size_t off = 0; off < bytes; off += l->chunk) {
        size_t n = bytes - off < l->chunk ? bytes - off : l->chunk;
        if (l->n_req >= l->max_req)
            return af_errorf(AF_ERR_PROTO, "%s message %s rank %d needs more than the %d chunks sized for", type,
                             send ? "to" : "from", l->peer, l->max_req);
        MPI_Request *r = &l->req[l->n_req];
        int rc = send ? MPI_Isend((char *)p + off, (int)n, MPI_BYTE, l->peer, bulk_tag(l->tag), l->comm, r)
                      : MPI_Irecv((char *)p + off, (int)n, MPI_BYTE, l->peer, bulk_tag(l->tag), l->comm, r);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, send ? "sending" : "receiving", type, l->peer);
        l->n_req++;
    }
    return AF_OK;
}

/* Packs and posts env; split, its ids always follow, its data only when
 * post_data (af_link_send_fill streams the data itself). */
static af_status link_isend(af_link *l, int dest, int tag, Arcface__Envelope *env, int post_data)
{
    const char *type = af_msg_type_name(env);
    if (l->n_req)
        return af_errorf(AF_ERR_PROTO, "sending a %s message to rank %d while the previous one is in flight", type, dest);
    l->peer = dest;
    l->tag = tag;
    int split = l->last_split = af_link_splits(l, env);
    bulk_fields f = fields_of(env);
    int64_t *ids = NULL;
    size_t n_ids = 0;
    ProtobufCBinaryData data = {0, NULL};
    if (split) {
        /* The header goes without its bulk; the caller's Envelope is restored below. */
        if (f.ids) { ids = *f.ids; n_ids = *f.n_ids; *f.ids = NULL; *f.n_ids = 0; }
        if (f.data) { data = *f.data; f.data->len = 0; f.data->data = NULL; }
        env->bulk_bytes = 8 * n_ids + data.len;
    }
    size_t len = 0;
    af_status st = af_msg_pack(env, &l->mb, &len);
    if (split) {
        if (f.ids) { *f.ids = ids; *f.n_ids = n_ids; }
        if (f.data) *f.data = data;
        env->bulk_bytes = 0;
    }
    if (st) return af_error_wrap(st, "message to rank %d", dest);
    l->last_wire = len;
    int rc = MPI_Isend(l->mb.buf, (int)len, MPI_BYTE, dest, tag, l->comm, &l->req[0]);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "sending", type, dest);
    l->n_req = 1;
    if (split && ((st = post_segment(l, ids, 8 * n_ids, 1, type)) ||
                  (post_data && (st = post_segment(l, data.data, data.len, 1, type)))))
        return st;
    return AF_OK;
}

af_status af_link_isend(af_link *l, int dest, int tag, Arcface__Envelope *env)
{
    return link_isend(l, dest, tag, env, 1);
}

/* Chunks of a filled message in flight at once: each one's completion waits
 * for the receiver to run its MPI progress, which on a busy node takes a
 * scheduler slice, so several go out per wait (up to 8 MiB staged). */
static size_t stage_slots(size_t chunk)
{
    size_t k = ((size_t)8 << 20) / chunk;
    return k < 2 ? 2 : k > 8 ? 8 : k;
}

size_t af_link_stage_bytes(size_t chunk, size_t max_data)
{
    /* Inline (data below one chunk) it is staged whole; split, a few chunks. */
    if (max_data <= chunk) return max_data ? max_data : 1;
    size_t slots = stage_slots(chunk), need = (max_data + chunk - 1) / chunk;
    return (need < slots ? need : slots) * chunk;
}

af_status af_link_send_fill(af_link *l, int dest, int tag, Arcface__Envelope *env, size_t data_len,
                            af_link_fill_fn fill, void *user, void *stage)
{
    bulk_fields f = fields_of(env);
    if (!f.data) return af_errorf(AF_ERR_ARG, "a %s message carries no data to fill", af_msg_type_name(env));
    f.data->len = data_len;
    f.data->data = NULL;
    if (!af_link_splits(l, env)) {
        fill(user, 0, data_len, stage);
        f.data->data = stage;
        return af_link_send(l, dest, tag, env);
    }
    af_status st = link_isend(l, dest, tag, env, 0);
    if (st) {
        af_link_wait(l, "sending");
        return st;
    }
    /* Stage slots: some fill while the others' chunks are on the wire. */
    const char *type = af_msg_type_name(env);
    const int base = l->n_req;
    size_t slots = stage_slots(l->chunk), need = nchunks(data_len, l->chunk);
    if (need < slots) slots = need;
    if (base + (int)slots > l->max_req) {
        af_link_wait(l, "sending");
        return af_errorf(AF_ERR_PROTO, "%s message to rank %d: no room for its data chunks", type, dest);
    }
    for (size_t k = 0; k < slots; k++) l->req[base + k] = MPI_REQUEST_NULL;
    l->n_req = base + (int)slots;
    size_t i = 0;
    for (size_t off = 0; off < data_len; off += l->chunk, i++) {
        size_t n = data_len - off < l->chunk ? data_len - off : l->chunk;
        MPI_Request *r = &l->req[base + i % slots];
        char *slot = (char *)stage + (i % slots) * l->chunk;
        int rc = af_mpi_waitall_patiently(1, r); /* not a spin: the worker may be busy computing */
        if (rc == MPI_SUCCESS) {
            fill(user, off, n, slot);
            rc = MPI_Isend(slot, (int)n, MPI_BYTE, dest, bulk_tag(tag), l->comm, r);
        }
        if (rc != MPI_SUCCESS) {
            af_link_wait(l, "sending");
            return mpi_fail(rc, "sending", type, dest);
        }
    }
    return af_link_wait(l, "sending a message");
}

af_status af_link_wait(af_link *l, const char *what)
{
    if (!l->n_req) return AF_OK;
    int rc = af_mpi_waitall_patiently(l->n_req, l->req);
    l->n_req = 0;
    if (rc != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "%s with rank %d failed (MPI code %d)", what, l->peer, rc);
    return AF_OK;
}

af_status af_link_send(af_link *l, int dest, int tag, Arcface__Envelope *env)
{
    af_status st = af_link_isend(l, dest, tag, env);
    if (st) {
        af_link_wait(l, "sending");
        return st;
    }
    return af_link_wait(l, "sending a message");
}

af_status af_link_post_reply(af_link *l, int src, int tag, void *dst, size_t bulk_bytes)
{
    if (l->n_req) return af_errorf(AF_ERR_PROTO, "posting a reply from rank %d while another is in flight", src);
    l->peer = src;
    l->tag = tag;
    l->bulk_expected = bulk_bytes;
    l->mb.env = NULL;
    int rc = MPI_Irecv(l->mb.buf, (int)l->mb.cap, MPI_BYTE, src, tag, l->comm, &l->req[0]);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "receiving", "reply", src);
    l->n_req = 1;
    l->mb.arena_used = 0;
    return post_segment(l, dst, bulk_bytes, 0, "reply");
}

/* The posted bulk receives of a reply that will not come. */
static void cancel_bulk(af_link *l)
{
    for (int i = 1; i < l->n_req; i++) {
        MPI_Cancel(&l->req[i]);
        MPI_Wait(&l->req[i], MPI_STATUS_IGNORE);
    }
    l->n_req = 0;
}

af_status af_link_finish_reply(af_link *l)
{
    MPI_Status s;
    int count, rc = MPI_Wait(&l->req[0], &s);
    if (rc == MPI_SUCCESS) rc = MPI_Get_count(&s, MPI_BYTE, &count);
    if (rc != MPI_SUCCESS) {
        cancel_bulk(l);
        return mpi_fail(rc, "receiving", "reply", l->peer);
    }
    af_status st = af_msg_unpack(&l->mb, (size_t)count, l->peer);
    if (st) {
        cancel_bulk(l);
        return st;
    }
    Arcface__Envelope *env = l->mb.env;
    if (env->body_case == ARCFACE__ENVELOPE__BODY_ERROR) {
        cancel_bulk(l);
        return AF_OK;
    }
    if (env->bulk_bytes != l->bulk_expected) {
        cancel_bulk(l);
        return af_errorf(AF_ERR_PROTO, "%s message from rank %d carries %llu split bytes, expected %zu",
                         af_msg_type_name(env), l->peer, (unsigned long long)env->bulk_bytes, l->bulk_expected);
    }
    if (l->n_req > 1) {
        rc = MPI_Waitall(l->n_req - 1, l->req + 1, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) {
            l->n_req = 0;
            return af_errorf(AF_ERR_MPI, "receiving the %zu split bytes of a %s message from rank %d failed (MPI "
                             "code %d)", l->bulk_expected, af_msg_type_name(env), l->peer, rc);
        }
    }
    l->n_req = 0;
    l->last_wire = (size_t)count;
    return AF_OK;
}

/* Blocking receive of one segment's chunks from `from` (server side). */
static af_status recv_segment(af_link *l, int from, void *p, size_t bytes, const char *type)
{
    for (size_t off = 0; off < bytes; off += l->chunk) {
        size_t n = bytes - off < l->chunk ? bytes - off : l->chunk;
        MPI_Status s;
        int count, rc = MPI_Recv((char *)p + off, (int)n, MPI_BYTE, from, bulk_tag(l->tag), l->comm, &s);
        if (rc == MPI_SUCCESS) rc = MPI_Get_count(&s, MPI_BYTE, &count);
        if (rc != MPI_SUCCESS)
            return af_errorf(AF_ERR_MPI, "receiving bytes %zu..%zu of a split %s message from rank %d failed (MPI "
                             "code %d)", off, off + n, type, from, rc);
        if ((size_t)count != n)
            return af_errorf(AF_ERR_PROTO, "split %s message from rank %d: chunk at byte %zu has %d bytes, expected %zu",
                             type, from, off, count, n);
    }
    return AF_OK;
}

af_status af_link_recv_data(af_link *l, af_link_sink_fn sink, void *user)
{
    size_t total = l->pending;
    af_status st = AF_OK;
    l->pending = 0;
    for (size_t off = 0; off < total; off += l->chunk) {
        size_t n = total - off < l->chunk ? total - off : l->chunk;
        MPI_Status ms;
        int count, rc = MPI_Recv(l->stage, (int)n, MPI_BYTE, l->peer, bulk_tag(l->tag), l->comm, &ms);
        if (rc == MPI_SUCCESS) rc = MPI_Get_count(&ms, MPI_BYTE, &count);
        if (rc != MPI_SUCCESS)
            return af_errorf(AF_ERR_MPI, "receiving bytes %zu..%zu of a split push from rank %d failed (MPI code %d)",
                             off, off + n, l->peer, rc);
        if ((size_t)count != n)
            return af_errorf(AF_ERR_PROTO, "split push from rank %d: chunk at byte %zu of its rows has %d bytes, "
                             "expected %zu", l->peer, off, count, n);
        /* After a refusal the rest is still received, so the stream stays in step. */
        if (sink && !st) st = sink(user, off, n, l->stage);
    }
    return st;
}

af_status af_link_recv(af_link *l, int source, int tag, int *from, af_msg_poll_fn poll, void *user)
{
    af_status st;
    if (l->pending && (st = af_link_recv_data(l, NULL, NULL))) return st;
    l->tag = tag;
    st = af_msg_recv_poll(l->comm, source, tag, &l->mb, from, poll, user);
    if (st) return st;
    l->peer = *from;
    l->last_wire = 0;
    Arcface__Envelope *env = l->mb.env;
    uint64_t bulk = env->bulk_bytes;
    if (!bulk) return AF_OK;
    const char *type = af_msg_type_name(env);
    bulk_fields f = fields_of(env);
    size_t n_ids = 0, data = 0;
    if (env->body_case == ARCFACE__ENVELOPE__BODY_PULL) {
        n_ids = bulk / 8;
    } else if (env->body_case == ARCFACE__ENVELOPE__BODY_PUSH && env->push->dim > 0) {
        uint64_t per = 8 + 4 * (uint64_t)env->push->dim;
        n_ids = bulk / per;
        data = n_ids * 4 * (size_t)env->push->dim;
    } else {
        return af_errorf(AF_ERR_PROTO, "%s message from rank %d claims %llu split bytes; it carries no bulk", type,
                         *from, (unsigned long long)bulk);
    }
    if ((f.ids && *f.n_ids) || (f.data && f.data->len) || 8 * (uint64_t)n_ids + data != bulk)
        return af_errorf(AF_ERR_PROTO, "split %s message from rank %d: %llu bytes are not whole rows, or the header "
                         "carries bulk too", type, *from, (unsigned long long)bulk);
    int64_t *ids = af_msgbuf_alloc(&l->mb, 8 * n_ids);
    if ((n_ids && !ids) || bulk > l->max_bulk || (data && !l->stage))
        return af_errorf(AF_ERR_PROTO, "split %s message from rank %d of %llu bytes (%zu rows) is more than this rank "
                         "accepts", type, *from, (unsigned long long)bulk, n_ids);
    if ((st = recv_segment(l, *from, ids, 8 * n_ids, type))) return st;
    *f.ids = ids;
    *f.n_ids = n_ids;
    if (f.data) {
        /* The rows stay on the wire until the caller takes them (af_link_recv_data). */
        f.data->data = NULL;
        f.data->len = data;
        l->pending = data;
    }
    return AF_OK;
}
