/* Communicators, roles and the class-to-server map (include/arcface/ctx.h). */
#include "arcface/ctx.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arcface/pfc.h"

af_status af_ctx_init(af_ctx *c, MPI_Comm job, int ps, int64_t num_classes)
{
    memset(c, 0, sizeof *c);
    c->workers = c->servers = MPI_COMM_NULL;
    if (MPI_Comm_dup(job, &c->world) != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Comm_dup failed");
    if (MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(c->world, &c->rank) != MPI_SUCCESS || MPI_Comm_size(c->world, &c->size) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "setting up the job's communicator (error handler, rank, size) failed");
    c->num_classes = num_classes;
    if (c->size == 1) {
        c->W = 1;
        c->P = 0;
    } else {
        if (ps < 1 || ps >= c->size)
            return af_errorf(AF_ERR_ARG, "configuration key 'ps': a job of %d ranks needs 1 .. %d parameter servers, got %d",
                             c->size, c->size - 1, ps);
        c->P = ps;
        c->W = c->size - ps;
    }
    if (c->P > 0 && num_classes < c->P)
        return af_errorf(AF_ERR_ARG, "%lld classes cannot be split over %d parameter servers", (long long)num_classes, c->P);
    c->role = c->rank < c->W ? AF_ROLE_WORKER : AF_ROLE_SERVER;
    c->worker_rank = c->role == AF_ROLE_WORKER ? c->rank : -1;
    c->server_rank = c->role == AF_ROLE_SERVER ? c->rank - c->W : -1;
    MPI_Comm split;
    if (MPI_Comm_split(c->world, (int)c->role, c->rank, &split) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "MPI_Comm_split into workers and servers failed");
    if (c->role == AF_ROLE_WORKER) c->workers = split; else c->servers = split;
    if (MPI_Comm_set_errhandler(split, MPI_ERRORS_RETURN) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: setting MPI_ERRORS_RETURN on the %s communicator failed", c->rank,
                         c->role == AF_ROLE_WORKER ? "workers'" : "servers'");
    return AF_OK;
}

void af_ctx_free(af_ctx *c)
{
    if (c->workers != MPI_COMM_NULL) MPI_Comm_free(&c->workers);
    if (c->servers != MPI_COMM_NULL) MPI_Comm_free(&c->servers);
    if (c->world != MPI_COMM_NULL && c->world) MPI_Comm_free(&c->world);
}

int af_ctx_server_world_rank(const af_ctx *c, int server) { return c->W + server; }
int af_ctx_class_owner(const af_ctx *c, int64_t cls) { return af_shard_owner(c->num_classes, c->P, cls); }
int64_t af_ctx_server_start(const af_ctx *c, int server) { return af_shard_start(c->num_classes, c->P, server); }
int64_t af_ctx_server_count(const af_ctx *c, int server) { return af_shard_count(c->num_classes, c->P, server); }

af_status af_ctx_agree(const af_ctx *c, af_status local)
{
    /* Lowest failing rank wins: encode as (rank) where failing, size otherwise. */
    int mine = local ? c->rank : c->size, first;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->world) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: MPI_Allreduce for error agreement failed", c->rank);
    if (first == c->size) return AF_OK;
    if (local) return local;
    return af_errorf(AF_ERR_MPI, "rank %d stopped because rank %d failed (see its message)", c->rank, first);
}

/* Parsed once: the variable is read before any thread but the main one runs. */
static struct {
    int parsed, rank;
    long long step;
    char phase[32], action[32];
} fault;

int af_ctx_fault_hit(const af_ctx *c, const char *phase, int64_t step, const char **action)
{
    if (!fault.parsed) {
        fault.parsed = 1;
        fault.rank = -1;
        const char *v = getenv("ARCFACE_FAULT");
        if (v && *v) {
            fault.action[0] = 0;
            int n = sscanf(v, "%d:%31[a-z]:%lld:%31[a-z]", &fault.rank, fault.phase, &fault.step, fault.action);
            if (n < 3) {
                fprintf(stderr, "arcface: ignoring ARCFACE_FAULT='%s' (expected RANK:PHASE:STEP[:ACTION])\n", v);
                fault.rank = -1;
            }
            if (n == 3) strcpy(fault.action, "kill");
        }
    }
    if (fault.rank != c->rank || fault.step != step || strcmp(fault.phase, phase)) return 0;
    if (action) *action = fault.action;
    /* The time of the fault, for the tests to measure how long the job takes to end. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(stderr, "arcface: rank %d: ARCFACE_FAULT: %s at %s of step %lld, unix time %.3f\n", c->rank,
            strcmp(fault.action, "kill") ? fault.action : "SIGKILL", phase, (long long)step,
            (double)ts.tv_sec + ts.tv_nsec * 1e-9);
    fflush(stderr);
    return 1;
}

af_status af_ctx_fault(const af_ctx *c, const char *phase, int64_t step)
{
    const char *action;
    if (!af_ctx_fault_hit(c, phase, step, &action)) return AF_OK;
    if (!strcmp(action, "kill")) raise(SIGKILL);
    if (!strcmp(action, "error"))
        return af_errorf(AF_ERR_IO, "rank %d: injected error at %s of step %lld (ARCFACE_FAULT)", c->rank, phase,
                         (long long)step);
    return AF_OK;
}

/* The watchdog's state: progress times in milliseconds of CLOCK_MONOTONIC,
 * written by the main thread, read by the watchdog thread. */
static struct {
    _Atomic long long last_ms, longest_ms;
    _Atomic int local_work;
    const volatile sig_atomic_t *stop_flag; /* copied: the ctx may be freed before the process ends */
    int rank, started;
    double grace_s;
} wd;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void af_ctx_progress(void)
{
    long long now = now_ms(), gap = now - atomic_load(&wd.last_ms);
    if (gap > atomic_load(&wd.longest_ms)) atomic_store(&wd.longest_ms, gap);
    atomic_store(&wd.last_ms, now);
}

void af_ctx_local_work(int on)
{
    atomic_store(&wd.local_work, on);
    af_ctx_progress();
}

static void *watchdog(void *arg)
{
    (void)arg;
    long long signal_ms = 0;
    int sig = 0;
    for (;;) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        if (!sig) {
            if (!(sig = *wd.stop_flag)) continue;
            signal_ms = now_ms();
        }
        if (atomic_load(&wd.local_work)) {
            atomic_store(&wd.last_ms, now_ms());
            continue;
        }
        long long last = atomic_load(&wd.last_ms), idle = now_ms() - (last > signal_ms ? last : signal_ms);
        double bound = 3e-3 * (double)atomic_load(&wd.longest_ms);
        if (bound < wd.grace_s) bound = wd.grace_s;
        if ((double)idle * 1e-3 <= bound) continue;
        /* Only async-signal-safe calls from here: the main thread may hold any lock. */
        char msg[512];
        int n = snprintf(msg, sizeof msg, "arcface-train: rank %d: error: signal %d arrived %.1f s ago and this rank "
                         "has made no progress for %.1f s (bound %.1f s = max(ARCFACE_STOP_GRACE, 3 x the longest "
                         "step so far)): a peer rank is gone or stuck; exiting without a checkpoint\n",
                         wd.rank, sig, (now_ms() - signal_ms) * 1e-3, idle * 1e-3, bound);
        if (n > 0) { ssize_t w = write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1); (void)w; }
        _exit(1);
    }
    return NULL;
}

af_status af_ctx_watchdog_start(const af_ctx *c)
{
    if (!c->stop_flag || wd.started) return AF_OK;
    wd.started = 1;
    wd.stop_flag = c->stop_flag;
    wd.rank = c->rank;
    const char *g = getenv("ARCFACE_STOP_GRACE");
    wd.grace_s = g && atof(g) > 0 ? atof(g) : 10.0;
    atomic_store(&wd.last_ms, now_ms());
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, watchdog, NULL);
    pthread_attr_destroy(&a);
    if (rc) return af_errorf(AF_ERR_NOMEM, "rank %d: cannot start the stop watchdog thread (error %d)", c->rank, rc);
    return AF_OK;
}
