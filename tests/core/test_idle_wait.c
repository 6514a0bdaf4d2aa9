/* A rank that waits for a large send to complete must not spin a core
 * (issue 13: a parameter server's pull reply completes only after the
 * worker's forward pass, and MPI_Waitall spun one of the worker's two cores
 * all that time). Rank 0 sends a 4 MiB reply (af_link_isend, af_link_wait) while rank
 * 1 stays out of MPI for WAIT_S seconds; rank 0's thread CPU time over that
 * wait must stay under MAX_CPU_FRACTION of its wall time. Under mpirun -np 2. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/transport.h"

#define WAIT_S 1.0
#define MAX_CPU_FRACTION 0.05
#define BYTES ((size_t)4 << 20)

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size, fail = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (rank == 0) printf("FAIL: run with exactly 2 ranks, got %d\n", size);
        MPI_Finalize();
        return 1;
    }
    float *rows = calloc(BYTES / sizeof(float), sizeof(float));
    if (!rows) { printf("FAIL: rank %d: out of memory\n", rank); MPI_Abort(MPI_COMM_WORLD, 1); }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        af_link out;
        /* One chunk holds the whole message: it goes inline, as one rendezvous send. */
        if (af_link_init(&out, MPI_COMM_WORLD, AF_LINK_SEND, (size_t)1 << 30, BYTES + 4096, 16, BYTES)) {
            printf("FAIL: af_link_init: %s\n", af_errmsg());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        Arcface__PullReply r = ARCFACE__PULL_REPLY__INIT;
        r.step = 7;
        r.count = (int64_t)(BYTES / sizeof(float) / 512);
        r.dim = 512;
        r.data.len = BYTES;
        r.data.data = (uint8_t *)rows;
        Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
        env.body_case = ARCFACE__ENVELOPE__BODY_PULL_REPLY;
        env.pull_reply = &r;
        /* af_link_send is these two; only the wait is timed (packing copies the 4 MiB). */
        af_status st = af_link_isend(&out, 1, AF_TAG_REPLY, &env);
        double w0 = MPI_Wtime(), c0 = thread_cpu();
        if (!st) st = af_link_wait(&out, "sending");
        double wall = MPI_Wtime() - w0, cpu = thread_cpu() - c0;
        if (st) {
            printf("FAIL: af_link_isend/af_link_wait: %s\n", af_errmsg());
            fail = 1;
        }
        printf("sending %zu bytes to a rank out of MPI for %.1f s: wall %.3f s, CPU %.4f s = %.1f%% of wall "
               "(at most %.0f%% allowed)\n", BYTES, WAIT_S, wall, cpu, 100 * cpu / wall, 100 * MAX_CPU_FRACTION);
        /* A send that completed at once never waited: the check below would be vacuous. */
        if (wall < 0.5 * WAIT_S) {
            printf("FAIL: the send completed in %.3f s, before the receiver took it: no rendezvous to wait for\n", wall);
            fail = 1;
        }
        if (cpu > MAX_CPU_FRACTION * wall) {
            printf("FAIL: the sender spun while waiting: CPU %.4f s over %.3f s of wall time\n", cpu, wall);
            fail = 1;
        }
        af_link_free(&out);
    } else {
        struct timespec ts = {(time_t)WAIT_S, (long)((WAIT_S - (time_t)WAIT_S) * 1e9)};
        nanosleep(&ts, NULL);
        MPI_Status s;
        int count;
        MPI_Probe(0, AF_TAG_REPLY, MPI_COMM_WORLD, &s);
        MPI_Get_count(&s, MPI_BYTE, &count);
        char *buf = malloc((size_t)count);
        if (!buf) MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Recv(buf, count, MPI_BYTE, 0, AF_TAG_REPLY, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if ((size_t)count < BYTES) {
            printf("FAIL: rank 1 received %d bytes, expected at least %zu\n", count, BYTES);
            fail = 1;
        }
        free(buf);
    }
    int any = 0;
    MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && !any) printf("PASS\n");
    free(rows);
    MPI_Finalize();
    return any ? 1 : 0;
}
