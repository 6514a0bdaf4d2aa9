/* Bulk data between worker and parameter-server ranks: the only code that
 * moves class ids and centre rows over MPI point-to-point.
 *
 * A message is one protobuf Envelope (include/arcface/msg.h). When its packed
 * size is at most the chunk limit (configuration key msg_chunk_bytes, default
 * 1 MiB, at most just under 2 GiB) it travels inline as one MPI_BYTE message.
 * Otherwise it is split: the Envelope goes without its bulk fields (class_ids,
 * data) and with bulk_bytes set, followed on a separate tag by the raw bulk
 * bytes (the ids as int64, then the float rows) in MPI_BYTE messages of at
 * most the chunk limit each. So no single MPI count exceeds INT_MAX and no
 * protobuf length prefix exceeds 2^31, whatever the number of rows; every
 * size on the way is size_t / int64_t.
 *
 * Both sides know the shape of what they expect (a worker knows how many rows
 * its pull asked for), so receives of a split reply are posted before the
 * request goes out and land directly in the caller's rows: no copy and the
 * same overlap as an inline reply. A server receives a split request's ids
 * into its unpack arena, so the caller sees the same Envelope either way,
 * except that a split push's rows (data.data NULL, data.len set) are taken one
 * chunk at a time with af_link_recv_data after the caller has checked the
 * header and ids: no whole-size landing buffer. Pull replies go out the same
 * way (af_link_send_fill). Buffers and request arrays are sized once; nothing
 * is allocated per message. */
#ifndef ARCFACE_TRANSPORT_H
#define ARCFACE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/msg.h"

/* Raw bulk chunks of split requests / replies. */
#define AF_TAG_BULK_REQUEST 7004
#define AF_TAG_BULK_REPLY 7005

/* The bounds of msg_chunk_bytes: one MPI count, rounded down to a page; the
 * floor leaves room for every header Envelope. The default keeps every
 * buffer that holds a whole inline message or one chunk small (a few per
 * peer), while 1 MiB MPI messages still run at full bandwidth. */
#define AF_CHUNK_MAX ((int64_t)2147483647 - 4095)
#define AF_CHUNK_DEFAULT ((int64_t)1 << 20)
#define AF_CHUNK_MIN ((int64_t)4096)

/* One direction of traffic with one peer (or any peer, for a server's
 * receives). Owns the wire buffer, the unpack arena and the MPI requests of
 * one message in flight. */
typedef struct {
    MPI_Comm comm;
    size_t chunk;          /* largest MPI message in bytes */
    af_msgbuf mb;          /* wire bytes (at most chunk) and unpack arena */
    MPI_Request *req;      /* (max_req) header + bulk chunks of the message in flight */
    int n_req, max_req;
    int peer, tag;         /* of the message in flight */
    size_t bulk_expected;  /* bytes of bulk posted for a reply (0: expect it inline) */
    size_t max_bulk;       /* the most bulk bytes one received message may claim */
    void *stage;           /* (chunk) a split push's rows pass through here */
    size_t pending;        /* bytes of a split push's rows not yet received */
    size_t last_wire;      /* header / inline bytes of the last message (for byte counters) */
    int last_split;        /* the last message sent went split */
} af_link;

/* What a link does, which sizes its unpack arena: a link that only sends
 * needs none; one that receives replies (their split bulk lands in the
 * caller's rows) needs room for an inline message; one that receives split
 * requests also holds their bulk. */
typedef enum { AF_LINK_SEND, AF_LINK_RECV_REPLIES, AF_LINK_RECV_REQUESTS } af_link_use;

/* max_inline: the largest whole Envelope this link carries (before
 * splitting); max_ids: the most class ids in one message; max_bulk: the most
 * bulk bytes (ids + rows) in one message. */
af_status af_link_init(af_link *l, MPI_Comm comm, af_link_use use, size_t chunk, size_t max_inline, size_t max_ids,
                       size_t max_bulk);
/* The bytes af_link_init allocates (for the start-up capacity check). */
double af_link_bytes(af_link_use use, double chunk, double max_inline, double max_ids, double max_bulk);
void af_link_free(af_link *l);

/* 1 if env (its bulk fields set) would travel split at this chunk limit. */
int af_link_splits(const af_link *l, Arcface__Envelope *env);

/* Posts env to dest (header on tag, bulk on the matching bulk tag). env's
 * bulk memory must stay unchanged until af_link_wait. */
af_status af_link_isend(af_link *l, int dest, int tag, Arcface__Envelope *env);
/* Blocking send of env whose data field (data_len bytes) is not in memory as
 * one array: fill(user, off, n, dst) writes its bytes [off, off + n) to dst.
 * They are staged through stage (af_link_stage_bytes: data_len when the
 * message goes inline, else up to 8 chunks in flight, at most 8 MiB unless a
 * chunk is larger), so a server answers a pull from its shard rows without a
 * whole-size copy. */
typedef void (*af_link_fill_fn)(void *user, size_t off, size_t n, void *dst);
af_status af_link_send_fill(af_link *l, int dest, int tag, Arcface__Envelope *env, size_t data_len,
                            af_link_fill_fn fill, void *user, void *stage);
/* Bytes of the stage af_link_send_fill needs for data of up to max_data bytes. */
size_t af_link_stage_bytes(size_t chunk, size_t max_data);
/* Completes whatever this link has in flight; what names it in errors. */
af_status af_link_wait(af_link *l, const char *what);
/* Blocking send: af_link_isend + af_link_wait. */
af_status af_link_send(af_link *l, int dest, int tag, Arcface__Envelope *env);

/* Worker side of a reply whose shape is known: posts the receive of the
 * header from src on tag and, when bulk_bytes > 0 (the reply will be split),
 * the receives of its bulk straight into dst. */
af_status af_link_post_reply(af_link *l, int src, int tag, void *dst, size_t bulk_bytes);
/* Waits for the posted reply and unpacks it into l->mb.env. An ErrorReply
 * cancels the bulk receives and is returned as AF_OK with env->body_case ==
 * ERROR, for the caller to report; a reply split otherwise than posted is
 * AF_ERR_PROTO. On success with bulk, the rows are already in dst. */
af_status af_link_finish_reply(af_link *l);

/* Server side: the next Envelope on tag from source (or MPI_ANY_SOURCE), its
 * bulk (if split) received into the arena and hung on the Envelope's fields,
 * so l->mb.env looks as if it came inline. Size checks come before any bulk
 * is received: a split message claiming more than max_ids / max_bulk is
 * refused (AF_ERR_PROTO, *from set). poll as in af_msg_recv_poll. */
af_status af_link_recv(af_link *l, int source, int tag, int *from, af_msg_poll_fn poll, void *user);
/* The rows of the split push af_link_recv just returned (data.data NULL):
 * receives them chunk by chunk and hands each to sink(user, off, n, bytes)
 * (bytes [off, off + n) of the rows; NULL sink: discard). The first sink
 * error stops the handing, not the receiving, and is returned. A later
 * af_link_recv discards rows nobody took. */
typedef af_status (*af_link_sink_fn)(void *user, size_t off, size_t n, const void *bytes);
af_status af_link_recv_data(af_link *l, af_link_sink_fn sink, void *user);

/* Start-up capacity check (core/capacity.c), collective over ctx->world:
 * every rank adds up what its role must hold (a server its shard and message
 * buffers, a worker its logits B_global x K/W, centre slice and buffers) and
 * compares it with its address-space limit, the MemAvailable of its node (the
 * sum over the ranks there) and the int ranges of MPI counts and fc kernels.
 * If any rank does not fit, every rank returns AF_ERR_ARG with that rank's
 * message, naming the quantity, its size and what to change. */
af_status af_check_capacity(const af_ctx *ctx, const af_config *cfg);

#endif
