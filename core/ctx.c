/* Communicators, roles and the class-to-server map (include/arcface/ctx.h). */
#include "arcface/ctx.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "arcface/msg.h"
#include "arcface/pfc.h"

/* Every rank's pid and host, for the progress deadline to look at peers on its
 * own host when the wait cannot name its culprit (a collective). */
static struct {
    long long *pid_host; /* (size, 2): pid, hash of the host name */
    int size;
    long long my_host;
    int other_hosts;     /* some rank runs on another host: /proc does not show them all */
} peers;

static long long host_hash(void)
{
    char h[256] = "";
    /* Test hook: ranks of one machine posing as ranks of several hosts. */
    const char *t = getenv("ARCFACE_TEST_HOST");
    if (t && *t) snprintf(h, sizeof h, "%s", t);
    else gethostname(h, sizeof h - 1);
    unsigned long long x = 1469598103934665603ull;
    for (const char *p = h; *p; p++) x = (x ^ (unsigned char)*p) * 1099511628211ull;
    return (long long)(x >> 1);
}

static af_status exchange_pids(const af_ctx *c)
{
    long long mine[2] = {(long long)getpid(), host_hash()};
    long long *all = af_malloc(sizeof(long long) * 2 * (size_t)c->size, "the ranks' process ids");
    if (!all) return AF_ERR_NOMEM;
    if (MPI_Allgather(mine, 2, MPI_LONG_LONG, all, 2, MPI_LONG_LONG, c->world) != MPI_SUCCESS) {
        free(all);
        return af_errorf(AF_ERR_MPI, "rank %d: exchanging process ids failed", c->rank);
    }
    free(peers.pid_host); /* a process may set up more than one job (the tests do) */
    peers.pid_host = all;
    peers.size = c->size;
    peers.my_host = mine[1];
    peers.other_hosts = 0;
    for (int r = 0; r < c->size; r++) peers.other_hosts |= all[2 * r + 1] != mine[1];
    return AF_OK;
}

af_status af_ctx_init(af_ctx *c, MPI_Comm job, int ps, int64_t num_classes)
{
    memset(c, 0, sizeof *c);
    c->workers = c->servers = MPI_COMM_NULL;
    if (MPI_Comm_dup(job, &c->world) != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "MPI_Comm_dup failed");
    if (MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(c->world, &c->rank) != MPI_SUCCESS || MPI_Comm_size(c->world, &c->size) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "setting up the job's communicator (error handler, rank, size) failed");
    c->num_classes = num_classes;
    af_status pst = exchange_pids(c);
    if (pst) return pst;
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

static int first_failure = -1;

int af_ctx_first_failure(void) { return first_failure; }

af_status af_ctx_agree(const af_ctx *c, af_status local)
{
    /* Lowest failing rank wins: encode as (rank) where failing, size otherwise. */
    int mine = local ? c->rank : c->size, first;
    af_ctx_wait("the agreement on errors", -1, -1, AF_WAIT_GROUP);
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->world);
    af_ctx_wait_done();
    if (rc != MPI_SUCCESS) return af_errorf(AF_ERR_MPI, "rank %d: MPI_Allreduce for error agreement failed", c->rank);
    if (first == c->size) return AF_OK;
    if (first_failure < 0) first_failure = first;
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
    return af_ctx_fault_act(c, phase, step, action);
}

af_status af_ctx_fault_act(const af_ctx *c, const char *phase, int64_t step, const char *action)
{
    if (!strcmp(action, "kill")) raise(SIGKILL);
    if (!strcmp(action, "stop")) raise(SIGSTOP); /* goes on after a SIGCONT */
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
    double grace_s, timeout_s;
    /* The current labelled wait (af_ctx_wait); the label is a static string. */
    _Atomic(const char *) wait_phase;
    _Atomic long long wait_what, wait_since_ms;
    _Atomic int wait_peer, wait_kind;
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
    /* Closes the gap before the work; the work itself is no step and must not
     * stretch the deadline (3 x the longest step) for the rest of the run. */
    if (on) af_ctx_progress();
    else atomic_store(&wd.last_ms, now_ms());
}

void af_ctx_wait(const char *phase, long long what, int peer, af_wait_kind kind)
{
    atomic_store(&wd.wait_phase, NULL); /* the watchdog never sees a half-written label */
    atomic_store(&wd.wait_what, what);
    atomic_store(&wd.wait_peer, peer);
    atomic_store(&wd.wait_kind, (int)kind);
    atomic_store(&wd.wait_since_ms, now_ms());
    atomic_store(&wd.wait_phase, phase);
}

void af_ctx_wait_done(void)
{
    /* A wait for worker 0's evaluation is no step: like local work, it must not
     * stretch the deadline (3 x the longest step) for the rest of the run. */
    if (atomic_load(&wd.wait_phase) && atomic_load(&wd.wait_kind) == AF_WAIT_LIVE) atomic_store(&wd.last_ms, now_ms());
    atomic_store(&wd.wait_phase, NULL);
}

/* Appends the ranks on this host whose process is stopped (state T or t in
 * /proc/PID/stat) to buf; returns how many, and the first in *first. Only
 * open/read/close: called once the deadline has passed. */
static int stopped_peers(char *buf, size_t cap, int *first)
{
    int n = 0;
    size_t used = strlen(buf);
    for (int r = 0; r < peers.size; r++) {
        if (r == wd.rank || peers.pid_host[2 * r + 1] != peers.my_host) continue;
        char path[64], st[512];
        snprintf(path, sizeof path, "/proc/%lld/stat", peers.pid_host[2 * r]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t k = read(fd, st, sizeof st - 1);
        close(fd);
        if (k <= 0) continue;
        st[k] = 0;
        const char *q = strrchr(st, ')'); /* the state follows the command name, which may hold spaces */
        if (!q || (q[2] != 'T' && q[2] != 't')) continue;
        if (!n++) *first = r;
        if (used < cap)
            used += (size_t)snprintf(buf + used, cap - used, "%s%d (pid %lld)", n > 1 ? ", " : "", r,
                                     peers.pid_host[2 * r]);
    }
    return n;
}

/* The progress deadline (include/arcface/ctx.h); returns only if it has not
 * passed. Async-signal-safe calls only once it has: the main thread may hold
 * any lock. */
static void check_deadline(long long now)
{
    double base = 3e-3 * (double)atomic_load(&wd.longest_ms);
    if (base < wd.timeout_s) base = wd.timeout_s;
    const char *phase = atomic_load(&wd.wait_phase);
    long long what = atomic_load(&wd.wait_what), since = atomic_load(&wd.wait_since_ms);
    int peer = atomic_load(&wd.wait_peer), kind = atomic_load(&wd.wait_kind);
    double slack = 0;
    /* A live wait names its culprit (rank 0) and is re-armed at every sign of life. */
    if (!phase) since = atomic_load(&wd.last_ms);
    else if (kind != AF_WAIT_LIVE) slack = kind * (base / 4 < 30 ? base / 4 : 30);
    double idle = (double)(now - since) * 1e-3, bound = base + slack;
    if (idle <= bound) return;
    char msg[1024], whom[96] = "", step[48] = "", stopped[256] = "";
    int first_stopped = -1, n_stopped = stopped_peers(stopped, sizeof stopped, &first_stopped);
    /* An indirect wait that finds no stopped rank here cannot tell the culprit
     * when ranks run on other hosts; one of those may see it stopped on its own
     * host and name it. Give it the time to speak first, and the launcher the
     * time to end the others after it (mpirun: SIGTERM, then SIGKILL 1 s later),
     * so that its message is the job's only one. */
    double defer = 0;
    if (phase && (kind == AF_WAIT_PEER || kind == AF_WAIT_GROUP) && !n_stopped && peers.other_hosts)
        defer = base / 4 < 3 ? 3 : base / 4 < 30 ? base / 4 : 30;
    if (idle <= bound + defer) return;
    bound += defer;
    /* A peer found stopped on this host is the culprit: a collective cannot name
     * it, and a wait for one rank may be for a rank itself held by the stopped one. */
    if (n_stopped == 1 && peer != first_stopped) {
        if (peer >= 0) snprintf(whom, sizeof whom, " (from rank %d; held up by rank %d)", peer, first_stopped);
        else snprintf(whom, sizeof whom, " (held up by rank %d)", first_stopped);
        peer = first_stopped;
    } else if (peer >= 0) snprintf(whom, sizeof whom, " (held up by rank %d)", peer);
    else if (phase) snprintf(whom, sizeof whom, " (a collective: held up by one of its ranks)");
    if (phase && what >= 0) snprintf(step, sizeof step, " %lld", what);
    int n = snprintf(msg, sizeof msg, "arcface-train: rank %d: error: waited %.1f s for %s%s%s, more than the progress "
                     "deadline of %.1f s (comm_timeout %.1f s, 3 x the longest step so far %.1f s%s): %s is stopped, "
                     "hung or far slower than before%s%s%s; ending the job\n", wd.rank, idle,
                     phase ? phase : "progress since the last step", step, whom, bound, wd.timeout_s,
                     3e-3 * (double)atomic_load(&wd.longest_ms),
                     defer > 0 ? ", plus the slack of an indirect wait and the time for a rank on another host to name "
                                 "its culprit" : slack > 0 ? ", plus the slack of an indirect wait" : "",
                     peer >= 0 ? "that rank" : phase ? "a rank" : "this rank",
                     n_stopped ? " (stopped on this host, e.g. by SIGSTOP: rank " : "", stopped, n_stopped ? ")" : "");
    if (n > 0) { ssize_t w = write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1); (void)w; }
    _exit(1);
}

static void *watchdog(void *arg)
{
    (void)arg;
    long long signal_ms = 0;
    int sig = 0;
    for (;;) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        if (wd.timeout_s > 0 && !atomic_load(&wd.local_work)) check_deadline(now_ms());
        if (!sig) {
            if (!wd.stop_flag || !(sig = *wd.stop_flag)) continue;
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
    if ((!c->stop_flag && !(c->comm_timeout > 0)) || wd.started) return AF_OK;
    wd.started = 1;
    wd.stop_flag = c->stop_flag;
    wd.rank = c->rank;
    wd.timeout_s = c->comm_timeout > 0 ? c->comm_timeout : 0;
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

/* Worker 0's evaluation messages (include/arcface/ctx.h). The sender's state:
 * one buffer and one request per destination, so a destination that does not
 * take its messages (stopped) holds at most one, and nothing piles up. */
enum { EV_NONE = 0, EV_BEGIN = 1, EV_BEAT = 2, EV_END = 3, EV_FAILED = 4 };

static struct {
    long long (*buf)[2]; /* (size) step, kind */
    MPI_Request *req;    /* (size) */
    int size, active;
    long long step, last_ms;
} ev;

static af_status ev_alloc(const af_ctx *c)
{
    if (ev.size == c->size) return AF_OK;
    free(ev.buf);
    free(ev.req);
    ev.size = 0;
    ev.buf = af_malloc(sizeof *ev.buf * (size_t)c->size, "evaluation message buffers");
    ev.req = af_malloc(sizeof *ev.req * (size_t)c->size, "evaluation message requests");
    if (!ev.buf || !ev.req) return AF_ERR_NOMEM;
    for (int r = 0; r < c->size; r++) ev.req[r] = MPI_REQUEST_NULL;
    ev.size = c->size;
    return AF_OK;
}

/* 1 when the last message to rank r has completed (or there was none). */
static af_status ev_idle(const af_ctx *c, int r, int *idle)
{
    *idle = 1;
    if (ev.req[r] == MPI_REQUEST_NULL) return AF_OK;
    if (MPI_Test(&ev.req[r], idle, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: sending worker 0's evaluation message of step %lld to rank %d failed",
                         c->rank, ev.step, r);
    return AF_OK;
}

static af_status ev_send(const af_ctx *c, int r, int kind)
{
    ev.buf[r][0] = ev.step;
    ev.buf[r][1] = kind;
    if (MPI_Isend(ev.buf[r], 2, MPI_LONG_LONG, r, AF_TAG_EVAL, c->world, &ev.req[r]) != MPI_SUCCESS)
        return af_errorf(AF_ERR_MPI, "rank %d: sending worker 0's evaluation message of step %lld to rank %d failed",
                         c->rank, ev.step, r);
    return AF_OK;
}

/* Every message sent so far completes; a rank that does not take its own is
 * named by the deadline. */
static af_status ev_complete(const af_ctx *c)
{
    for (int r = 1; r < ev.size; r++) {
        if (ev.req[r] == MPI_REQUEST_NULL) continue;
        af_ctx_wait("a rank to take worker 0's evaluation message of step", ev.step, r, AF_WAIT_REPLY);
        int rc = af_mpi_waitall_patiently(1, &ev.req[r]);
        af_ctx_wait_done();
        if (rc != MPI_SUCCESS)
            return af_errorf(AF_ERR_MPI, "rank %d: sending worker 0's evaluation message of step %lld to rank %d failed",
                             c->rank, ev.step, r);
    }
    return AF_OK;
}

af_status af_ctx_eval_announce(const af_ctx *c, int64_t step, int evaluates)
{
    if (c->size == 1 || c->rank != 0) return AF_OK;
    af_status st = ev_alloc(c);
    if (st) return st;
    ev.step = step;
    if (!evaluates) {
        for (int r = c->W; r < c->size && !st; r++) st = ev_send(c, r, EV_NONE);
        return st ? st : ev_complete(c);
    }
    for (int r = 1; r < c->size && !st; r++) st = ev_send(c, r, EV_BEGIN);
    ev.active = 1;
    ev.last_ms = now_ms();
    return st;
}

/* Often enough that a waiting rank's deadline (at least comm_timeout) and stop
 * watchdog (at least ARCFACE_STOP_GRACE) never take a live worker 0 for a
 * stuck one; rarely enough to cost nothing. */
static double ev_interval_s(void)
{
    double t = 2.0;
    if (wd.timeout_s > 0 && wd.timeout_s / 4 < t) t = wd.timeout_s / 4;
    if (wd.grace_s > 0 && wd.grace_s / 4 < t) t = wd.grace_s / 4;
    return t;
}

af_status af_ctx_eval_beat(void *ctx)
{
    const af_ctx *c = ctx;
    if (!ev.active) return AF_OK;
    long long now = now_ms();
    if ((double)(now - ev.last_ms) * 1e-3 < ev_interval_s()) return AF_OK;
    ev.last_ms = now;
    af_status st = AF_OK;
    for (int r = 1; r < ev.size && !st; r++) {
        int idle;
        if (!(st = ev_idle(c, r, &idle)) && idle) st = ev_send(c, r, EV_BEAT);
    }
    return st;
}

af_status af_ctx_eval_end(const af_ctx *c, int failed)
{
    if (!ev.active) return AF_OK;
    ev.active = 0;
    af_status st = ev_complete(c);
    for (int r = 1; r < ev.size && !st; r++) st = ev_send(c, r, failed ? EV_FAILED : EV_END);
    return st ? st : ev_complete(c);
}

af_status af_ctx_eval_follow(const af_ctx *c, int64_t step, af_status (*poll)(void *), void *user, int *evaluated,
                             int *failed)
{
    *evaluated = *failed = 0;
    if (c->size == 1 || c->rank == 0) return AF_OK;
    static const char *const first = "worker 0's word on whether it evaluates after the checkpoint of step";
    static const char *const live = "a sign of life from worker 0's evaluation at step";
    af_ctx_wait(first, step, 0, AF_WAIT_LIVE);
    af_status st = AF_OK;
    for (;;) {
        MPI_Status s;
        int flag = 0;
        if (MPI_Iprobe(0, AF_TAG_EVAL, c->world, &flag, &s) != MPI_SUCCESS) {
            st = af_errorf(AF_ERR_MPI, "rank %d: probing for worker 0's evaluation messages failed", c->rank);
            break;
        }
        if (!flag) {
            if (poll && (st = poll(user))) break;
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
            continue;
        }
        long long m[2];
        if (MPI_Recv(m, 2, MPI_LONG_LONG, 0, AF_TAG_EVAL, c->world, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
            st = af_errorf(AF_ERR_MPI, "rank %d: receiving worker 0's evaluation message failed", c->rank);
            break;
        }
        int valid = *evaluated ? m[1] >= EV_BEAT && m[1] <= EV_FAILED : m[1] == EV_NONE || m[1] == EV_BEGIN;
        if (m[0] != step || !valid) {
            st = af_errorf(AF_ERR_PROTO, "rank %d: worker 0's evaluation message (step %lld, kind %lld) is not what "
                           "follows the checkpoint of step %lld%s", c->rank, m[0], m[1], (long long)step,
                           *evaluated ? " in an evaluation" : "");
            break;
        }
        if (m[1] == EV_NONE) break;
        if (m[1] >= EV_END) {
            *failed = m[1] == EV_FAILED;
            break;
        }
        *evaluated = 1;
        /* A sign of life: the deadline counts from here, the stop watchdog too
         * (last_ms first: the label is briefly unset while it is re-armed). */
        atomic_store(&wd.last_ms, now_ms());
        af_ctx_wait(live, step, 0, AF_WAIT_LIVE);
    }
    af_ctx_wait_done();
    return st;
}
