/* Worker <-> parameter-server messages: protobuf-c Envelopes (proto/arcface.proto)
 * carried as MPI_BYTE messages. Requests go to a server on AF_TAG_REQUEST;
 * replies come back on AF_TAG_REPLY. Decoding never trusts the peer: the
 * size is checked before receiving (an oversized message is consumed and
 * refused), the protocol version is checked, and unpacking allocates from a
 * fixed arena, so a malformed message costs an error, never a crash and never
 * an allocation per step. */
#ifndef ARCFACE_MSG_H
#define ARCFACE_MSG_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "arcface.pb-c.h"
#include "arcface/status.h"

/* 2: split messages (Envelope.bulk_bytes, include/arcface/transport.h). */
#define AF_PROTOCOL_VERSION 2u
#define AF_TAG_REQUEST 7001
#define AF_TAG_REPLY 7002
/* Server -> every worker: one int, the number of a signal that reached the
 * server (outside the Envelope protocol: workers probe for it once a step). */
#define AF_TAG_STOP 7003

typedef struct {
    uint8_t *buf;          /* (cap) wire bytes */
    size_t cap;
    uint8_t *arena;        /* (arena_cap) for unpacked messages */
    size_t arena_cap, arena_used;
    ProtobufCAllocator alloc;
    Arcface__Envelope *env; /* the last unpacked message (in the arena) */
} af_msgbuf;

/* cap: the largest wire message accepted or sent; max_ids: the most class ids
 * one message may carry (sizes the unpack arena). */
af_status af_msgbuf_init(af_msgbuf *m, size_t cap, size_t max_ids);
/* The same with the wire buffer and the arena sized separately. */
af_status af_msgbuf_init_sized(af_msgbuf *m, size_t cap, size_t arena_cap);
void af_msgbuf_free(af_msgbuf *m);
/* size bytes, 16-byte aligned, from the arena of the current message (NULL
 * when it is full); freed when the next message is unpacked. */
void *af_msgbuf_alloc(af_msgbuf *m, size_t size);

/* "pull", "pull_reply", "push", ... or "empty". */
const char *af_msg_type_name(const Arcface__Envelope *env);

/* Packs env (its version is set here) into m->buf; *len gets the size. */
af_status af_msg_pack(Arcface__Envelope *env, af_msgbuf *m, size_t *len);
/* Blocking send of an Envelope. */
af_status af_msg_send(MPI_Comm comm, int dest, int tag, Arcface__Envelope *env, af_msgbuf *m);

/* Receives the next message on `tag` from `source` (or MPI_ANY_SOURCE) into m
 * and unpacks it into m->env; *from gets the sender. A message that is too
 * large, does not parse, has another protocol version or no body is consumed
 * and reported as AF_ERR_PROTO with *from set (so a server can answer it). */
af_status af_msg_recv(MPI_Comm comm, int source, int tag, af_msgbuf *m, int *from);
/* The same, calling poll(user) between sleeps while no message is there (1 ms
 * apart, up to 10 ms apart in a long wait: core/msg.c); a non-OK status from
 * poll ends the wait with that status (*from = -1). This is how a waiting
 * rank notices signals and deadlines. */
typedef af_status (*af_msg_poll_fn)(void *user);
af_status af_msg_recv_poll(MPI_Comm comm, int source, int tag, af_msgbuf *m, int *from, af_msg_poll_fn poll,
                           void *user);
/* MPI_Waitall without holding a core: after a short busy phase it sleeps
 * between tests (backing off to 1 ms, up to 10 ms in a long wait). A large
 * send completes only when the receiver's MPI gets round to it (rendezvous),
 * which for a server's reply is after the worker's whole forward pass;
 * MPI_Waitall would spin all that time on a core the worker's threads need.
 * Returns MPI_Testall's code. */
int af_mpi_waitall_patiently(int n, MPI_Request *req);
/* Unpacks `len` bytes already in m->buf (after an MPI_Irecv completed). */
af_status af_msg_unpack(af_msgbuf *m, size_t len, int from);

#endif
