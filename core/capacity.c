/* Start-up capacity check (af_check_capacity in include/arcface/transport.h):
 * before anything large is allocated, each rank adds up what its role must
 * hold for this configuration and layout and compares it with the limits that
 * apply: its address-space limit, the memory the kernel says is available on
 * its node (shared by every rank there), and the int ranges that MPI counts
 * and the fc kernels take. Sizes are computed in double, so a configuration
 * far beyond 64 bits still gets a message rather than a wrapped number. The
 * formulas mirror the allocations in paramserver/shard.c, core/margin.c,
 * core/sample.c, worker/worker.c and core/transport.c. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/pfc.h"
#include "arcface/transport.h"

typedef struct {
    const char *what;  /* the quantity, for the message */
    double bytes;
    const char *fix;   /* what to change */
} need;

static const char *human(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int i = 0;
    while (b >= 1024 && i < 6) { b /= 1024; i++; }
    snprintf(buf, n, "%.1f %s", b, u[i]);
    return buf;
}

/* MemAvailable of this node in bytes; < 0 when unknown. */
static double mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Fills needs[] for this rank; returns how many. Also checks the int limits
 * (into *bad, a message). */
static int rank_needs(const af_ctx *c, const af_config *cfg, need *nd, char *bad, size_t badn)
{
    const double D = cfg->embedding_size, chunk = (double)cfg->msg_chunk_bytes;
    const int W = c->W, P = c->P, G = cfg->batch_size * W;
    const int64_t C = c->num_classes;
    const double states = !strcmp(cfg->optimizer, "adamw") ? 3 : 2;
    int64_t K = af_pfc_max_total(C, cfg->sample_shards, cfg->sample_rate, G);
    int n = 0;
    if (c->role == AF_ROLE_SERVER || P == 0) {
        int64_t count = P ? af_ctx_server_count(c, c->server_rank) : C;
        int64_t touch = K * cfg->gradient_acc < count ? K * cfg->gradient_acc : count;
        /* gradient_acc = 1 needs no accumulator (paramserver/shard.c, direct mode). */
        nd[n++] = (need){"the server's shard of the fc centres (weights, optimizer state, slot map, accumulator)",
                         (double)count * (4 * D * states + 4) +
                             (cfg->gradient_acc > 1 ? (4 * D + 8) * (double)touch : 0),
                         "add servers (ps) or nodes, or use fewer classes"};
        if (touch > INT32_MAX && !*bad)
            snprintf(bad, badn, "a server shard would touch %lld rows in one optimizer step, more than its int32 slot "
                     "map indexes (%d): add servers (ps), lower sample_rate or gradient_acc", (long long)touch, INT32_MAX);
        if (P) {
            double rows = (double)(K < count ? K : count), inl = 4096 + rows * (12 + 4 * D);
            double data = rows * 4 * D, stage = (double)af_link_stage_bytes((size_t)chunk, (size_t)data);
            nd[n++] = (need){"the server's message buffers and reply stage",
                             af_link_bytes(AF_LINK_RECV_REQUESTS, chunk, inl, rows, rows * (8 + 4 * D)) +
                                 af_link_bytes(AF_LINK_SEND, chunk, inl, 16, data) + stage,
                             "add servers (ps), or lower sample_rate or msg_chunk_bytes"};
        }
    }
    if (c->role == AF_ROLE_WORKER) {
        double slice = ((double)K + W - 1) / W;
        nd[n++] = (need){"the worker's logits and their gradients (global batch x sampled classes / workers, 1 float "
                         "each)", 1.0 * G * slice * 4, "add workers, lower sample_rate or batch_size"};
        nd[n++] = (need){"the worker's slice of the sampled centres (pulled rows, then their gradients) and ids",
                         slice * D * 4 + 8 * (double)K, "add workers or lower sample_rate"};
        double links = 0;
        for (int p = 0; p < P; p++) {
            double cnt = (double)af_ctx_server_count(c, p), rows = cnt < slice ? cnt : slice;
            double inl = 4096 + rows * (12 + 4 * D), bulk = rows * (8 + 4 * D);
            links += af_link_bytes(AF_LINK_RECV_REPLIES, chunk, inl, 16, bulk) +
                     af_link_bytes(AF_LINK_SEND, chunk, inl, rows, bulk);
        }
        if (P) nd[n++] = (need){"the worker's message buffers", links, "add workers, or lower sample_rate or msg_chunk_bytes"};
        if (slice > INT_MAX && !*bad)
            snprintf(bad, badn, "a worker's slice of the sampled centres is %.0f rows (sampled classes %lld / %d workers), "
                     "more than the fc kernels index (%d): add workers or lower sample_rate", slice, (long long)K, W,
                     INT_MAX);
        if ((double)G * slice > (double)INT64_MAX / 8 && !*bad)
            snprintf(bad, badn, "a worker's logits would be %.3g elements: add workers or lower sample_rate",
                     (double)G * slice);
    }
    return n;
}

af_status af_check_capacity(const af_ctx *c, const af_config *cfg)
{
    need nd[8];
    char bad[512] = "", msg[1024] = "", b1[32], b2[32], b3[32], b4[32];
    int n = rank_needs(c, cfg, nd, bad, sizeof bad);
    double total = 0;
    int big = 0;
    for (int i = 0; i < n; i++) {
        total += nd[i].bytes;
        if (nd[i].bytes > nd[big].bytes) big = i;
    }
    /* Ranks on one node share its memory. */
    MPI_Comm node;
    double node_total = total;
    int on_node = 1, largest = 1; /* this rank needs the most on its node: it speaks for the node */
    if (MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        struct { double v; int r; } me = {total, 0}, top;
        MPI_Comm_rank(node, &me.r);
        MPI_Allreduce(&total, &node_total, 1, MPI_DOUBLE, MPI_SUM, node);
        MPI_Allreduce(&me, &top, 1, MPI_DOUBLE_INT, MPI_MAXLOC, node);
        largest = top.r == me.r;
        MPI_Comm_size(node, &on_node);
        MPI_Comm_free(&node);
    }
    const char *role = c->role == AF_ROLE_SERVER ? "server" : "worker";
    int idx = c->role == AF_ROLE_SERVER ? c->server_rank : c->worker_rank;
    struct rlimit rl;
    double avail = mem_available();
    if (*bad) {
        snprintf(msg, sizeof msg, "%s %d (rank %d): %s", role, idx, c->rank, bad);
    } else if (n && !getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY && total > (double)rl.rlim_cur) {
        snprintf(msg, sizeof msg, "%s %d (rank %d) must hold %s in all, more than its address-space limit of %s "
                 "(ulimit -v); the largest part is %s: %s; %s", role, idx, c->rank, human(total, b1, sizeof b1),
                 human((double)rl.rlim_cur, b2, sizeof b2), nd[big].what, human(nd[big].bytes, b3, sizeof b3), nd[big].fix);
    } else if (n && largest && avail > 0 && node_total > avail) {
        snprintf(msg, sizeof msg, "%s %d (rank %d) must hold %s; the largest part is %s: %s; with the other ranks on "
                 "its node (%d in all) that is %s, more than the %s the node has available (MemAvailable in "
                 "/proc/meminfo): %s", role, idx, c->rank, human(total, b1, sizeof b1), nd[big].what,
                 human(nd[big].bytes, b2, sizeof b2), on_node, human(node_total, b3, sizeof b3),
                 human(avail, b4, sizeof b4), nd[big].fix);
    }
    /* Every rank fails with the first failing rank's message and exit 2, so no
     * rank waits and the launcher's exit status does not depend on who ends first. */
    int mine = *msg ? c->rank : c->size, first;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->world) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: the capacity check's all-reduce failed", c->rank);
    if (first == c->size) return AF_OK;
    if (MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, c->world) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: the capacity check's broadcast failed", c->rank);
    return af_errorf(AF_ERR_ARG, "the job does not fit: %s", msg);
}
