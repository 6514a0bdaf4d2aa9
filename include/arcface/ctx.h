/* The distributed context: one struct owns the communicators (world, workers,
 * servers) and the class-to-server map; nothing below main() touches
 * MPI_COMM_WORLD.
 *
 * Rank layout: of N world ranks, ranks 0 .. W-1 are workers (worker w is world
 * rank w) and the last P ranks W .. N-1 are parameter servers (server p is world
 * rank W + p), P = the `ps` setting. With mpirun's default by-slot mapping the
 * servers thus land on the last node(s); see jobs/README for placing them. A job
 * of one rank is the single-process reference: that rank is worker 0 and holds
 * every class itself (P = 0). Server p owns classes [start_p, start_p + count_p)
 * with count_p = C / P + (p < C % P), start_p = (C / P) p + min(p, C % P). */
#ifndef ARCFACE_CTX_H
#define ARCFACE_CTX_H

#include <mpi.h>
#include <signal.h>
#include <stdint.h>

#include "arcface/status.h"

typedef enum { AF_ROLE_WORKER = 0, AF_ROLE_SERVER = 1 } af_role;

typedef struct {
    MPI_Comm world;      /* duplicate of the job's communicator, errors returned */
    MPI_Comm workers;    /* the workers; MPI_COMM_NULL on servers */
    MPI_Comm servers;    /* the servers; MPI_COMM_NULL on workers */
    int rank, size;      /* in world */
    af_role role;
    int W, P;            /* workers, servers (P = 0: single process) */
    int worker_rank;     /* -1 on servers */
    int server_rank;     /* -1 on workers */
    int64_t num_classes;
    /* Set by main() to its signal flag (NULL: none). Servers poll it while they
     * wait and pass a signal on to the workers, who decide when to stop. */
    const volatile sig_atomic_t *stop_flag;
} af_ctx;

/* Collective over `job`. ps: number of server ranks (ignored for a job of one rank). */
af_status af_ctx_init(af_ctx *c, MPI_Comm job, int ps, int64_t num_classes);
void af_ctx_free(af_ctx *c);

int af_ctx_server_world_rank(const af_ctx *c, int server);
int af_ctx_class_owner(const af_ctx *c, int64_t cls);
int64_t af_ctx_server_start(const af_ctx *c, int server);
int64_t af_ctx_server_count(const af_ctx *c, int server);

/* Agreement on failure (collective over world): returns AF_OK on every rank if
 * every rank passed AF_OK, else an error on every rank. A failing rank keeps its
 * own message; the others get one naming the lowest failing rank. */
af_status af_ctx_agree(const af_ctx *c, af_status local);

/* Fault injection for the failure tests: ARCFACE_FAULT="RANK:PHASE:STEP[:ACTION]"
 * makes world rank RANK act at PHASE ("pull", "forward", "push", "commit",
 * "checkpoint") of optimizer step STEP. ACTION "kill" (the default) is a
 * SIGKILL, as a node failure would be; "error" makes the phase fail with an
 * error; other actions ("badpush", "badcommit") are for the caller to act on.
 * af_ctx_fault_hit returns 1 (and *action) when this rank, phase and step match;
 * af_ctx_fault carries out "kill" and "error" and returns AF_OK otherwise.
 * Without the variable both cost one branch. Per rank. */
/* The stop watchdog: a bound on every wait once a stop signal has arrived.
 * After *c->stop_flag becomes non-zero, a rank that makes no progress (no
 * af_ctx_progress call) for max(grace, 3 x the longest gap between progress
 * calls so far) seconds prints why and exits with status 1: a peer is gone or
 * stuck (srun ending a step after a rank died sends SIGTERM to the others, which
 * would otherwise wait for the dead rank until Slurm's KillWait). grace is
 * ARCFACE_STOP_GRACE seconds, default 10. Before a signal it does nothing:
 * mpirun itself ends a job whose rank died, srun --kill-on-bad-exit signals it.
 * af_ctx_watchdog_start: once per process, after c->stop_flag is set (per rank).
 * af_ctx_progress: call after each step, checkpoint and evaluation. */
af_status af_ctx_watchdog_start(const af_ctx *c);
void af_ctx_progress(void);
/* on = 1 around work that waits for no other rank (worker 0's evaluation):
 * the watchdog counts it as progress. */
void af_ctx_local_work(int on);

int af_ctx_fault_hit(const af_ctx *c, const char *phase, int64_t step, const char **action);
af_status af_ctx_fault(const af_ctx *c, const char *phase, int64_t step);

#endif
