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
    /* Set by main() from the `comm_timeout` key before af_ctx_watchdog_start:
     * the progress deadline in seconds (0: none). */
    double comm_timeout;
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
/* The lowest failing rank of the first agreement that failed in this process
 * (-1: none failed): the rank whose own message is the job's, which it alone
 * prints; later agreements only pass that failure on. */
int af_ctx_first_failure(void);

/* Fault injection for the failure tests: ARCFACE_FAULT="RANK:PHASE:STEP[:ACTION]"
 * makes world rank RANK act at PHASE ("pull", "forward", "push", "commit",
 * "checkpoint") of optimizer step STEP. ACTION "kill" (the default) is a
 * SIGKILL, as a node failure would be; "error" makes the phase fail with an
 * error; "stop" a SIGSTOP (the rank goes on after a SIGCONT), as a hung rank
 * would be; other actions ("badpush", "badcommit", "nan") are for the caller to act on.
 * ARCFACE_TEST_HOST=NAME, also for the tests: this rank counts as running on
 * host NAME (the progress deadline's look at its peers, below), so ranks of one
 * machine can pose as ranks of several hosts.
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
 * af_ctx_watchdog_start: once per process, after c->stop_flag and c->comm_timeout
 * are set (per rank); it also runs the progress deadline below.
 * af_ctx_progress: call after each step, checkpoint and evaluation. */
af_status af_ctx_watchdog_start(const af_ctx *c);
void af_ctx_progress(void);
/* on = 1 around work that waits for no other rank (worker 0's evaluation):
 * the watchdog counts it as progress. */
void af_ctx_local_work(int on);

/* The progress deadline: a bound on every wait for another rank, armed from
 * the start whether or not a signal came. A rank stopped (SIGSTOP), hung or
 * spinning holds its peers; without this they would wait for it until the
 * allocation's time limit. While a wait is labelled (af_ctx_wait), it may last
 * D = max(comm_timeout, 3 x the longest gap between progress calls so far)
 * seconds plus a slack that grows with how indirectly the wait names its
 * culprit: a reply owed by one rank (AF_WAIT_REPLY) fires first, a wait for
 * the next request of a given rank (AF_WAIT_PEER) D/4 (at most 30 s) later,
 * a collective where the culprit is unknown (AF_WAIT_GROUP) twice that, so
 * the message that names the stuck rank is the one the job ends with. A rank
 * whose wait names no culprit (or one only indirectly: AF_WAIT_PEER, GROUP)
 * looks for a stopped peer on its own host (/proc) and names it; when it finds
 * none and ranks run on other hosts, it waits D/4 (3 to 30 s) more, so that
 * a rank on the culprit's host, which can name it, speaks first. Outside
 * labelled waits a rank may go D without progress (a loop spinning in a bug).
 * AF_WAIT_LIVE marks a wait for worker 0's evaluation (af_ctx_eval_follow):
 * D applies to the time since its last sign of life, not since the wait
 * began, and the wait, however long, does not count as a step. Then the rank
 * prints the rank and phase it waited for and exits with status 1; the
 * launcher ends the others. Labels are static strings; `what` is a step or -1.
 * Per rank, main thread only. */
typedef enum { AF_WAIT_REPLY = 0, AF_WAIT_PEER = 1, AF_WAIT_GROUP = 2, AF_WAIT_LIVE = 3 } af_wait_kind;
void af_ctx_wait(const char *phase, long long what, int peer, af_wait_kind kind);
void af_ctx_wait_done(void);

/* Worker 0's evaluation under the progress deadline. After a checkpoint worker
 * 0 evaluates val_targets while every other rank waits for it; an evaluation
 * (r100, three 12k-pair sets) may legitimately outlast comm_timeout, so the
 * others bound the time since worker 0's last sign of life instead: a message
 * every few seconds (min(2 s, comm_timeout / 4, ARCFACE_STOP_GRACE / 4))
 * between evaluation batches. A stopped or hung worker 0 thus ends the job
 * within D of its last message, and a long evaluation never does.
 * Messages travel on AF_TAG_EVAL in the world communicator, from world rank 0
 * only, two int64 each (the checkpoint's step and what follows), and every one
 * sent is received, so nothing is left unmatched:
 * - af_ctx_eval_announce, worker 0 after every checkpoint: evaluates 0 tells
 *   each server that no evaluation follows; 1 begins one, to every other rank.
 * - af_ctx_eval_beat(ctx), worker 0 between batches (an af_valset progress
 *   hook): a sign of life when the interval has passed; to a rank whose last
 *   message has not yet completed, none (never more than one in flight each).
 * - af_ctx_eval_end, worker 0 after the evaluation: the end and whether it
 *   failed; returns once every message it sent has completed.
 * - af_ctx_eval_follow, servers after every checkpoint, workers 1.. when an
 *   evaluation follows (they keep the same schedule): takes the messages
 *   until "none" or the end, under an AF_WAIT_LIVE wait naming rank 0; poll
 *   (may be NULL) is called between probes (a server passes signals on).
 *   *evaluated: one took place; *failed: worker 0 reported its failure.
 * A job of one rank sends and takes nothing. */
#define AF_TAG_EVAL 7006 /* 7001-7005: include/arcface/msg.h, transport.h */
af_status af_ctx_eval_announce(const af_ctx *c, int64_t step, int evaluates);
af_status af_ctx_eval_beat(void *ctx);
af_status af_ctx_eval_end(const af_ctx *c, int failed);
af_status af_ctx_eval_follow(const af_ctx *c, int64_t step, af_status (*poll)(void *), void *user, int *evaluated,
                             int *failed);

int af_ctx_fault_hit(const af_ctx *c, const char *phase, int64_t step, const char **action);
af_status af_ctx_fault(const af_ctx *c, const char *phase, int64_t step);
/* Carries out "kill" and "error" for a hit the caller has already taken
 * (af_ctx_fault_hit), whose other actions it handles itself ("nan" at
 * "forward": a non-finite embedding on that worker). */
af_status af_ctx_fault_act(const af_ctx *c, const char *phase, int64_t step, const char *action);

#endif
