/* The state registry and its checkpoint plan, on two ranks (rank 0 a worker,
 * rank 1 a server): a round trip of whole, row-split and scalar items through
 * af_ckpt_write / af_ckpt_load_state is exact; rows past the file's keep their
 * values (growth); and every inconsistent registration is refused by all ranks
 * with a message naming the item and the ranks, before any file is published:
 * rows held by no rank, rows held twice, scalars that differ, a whole item rank 0
 * lacks, a name registered twice, a shape that differs on load.
 * usage (under mpirun -np 2): ckpt_state OUTPUT_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arcface/ckpt.h"
#include "arcface/state.h"

static int failures, rank;

static void check(int cond, const char *what)
{
    if (rank == 0) printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    failures += !cond;
}

/* Both ranks must fail, the message must name `needle`, no file published. */
static void expect_refused(const af_ctx *ctx, const af_config *cfg, const af_state *reg, const char *path,
                           const char *needle, const char *what)
{
    af_status st = af_ckpt_write(ctx, cfg, reg, 0, 1, path);
    int named = st != AF_OK && strstr(af_errmsg(), needle) != NULL, all;
    MPI_Allreduce(&named, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    char buf[600];
    snprintf(buf, sizeof buf, "%s: refused on every rank, naming \"%s\" (rank %d: %s)", what, needle, rank,
             st ? af_errmsg() : "accepted");
    check(all && access(path, F_OK) != 0, buf);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (argc != 2) {
        if (rank == 0) fprintf(stderr, "usage: ckpt_state OUTPUT_DIR\n");
        MPI_Finalize();
        return 2;
    }
    af_ctx ctx;
    af_config cfg;
    af_config_defaults(&cfg);
    snprintf(cfg.output, sizeof cfg.output, "%s", argv[1]);
    if (af_ctx_init(&ctx, MPI_COMM_WORLD, 1, 5)) {
        fprintf(stderr, "ctx: %s\n", af_errmsg());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/checkpoints/state.h5", argv[1]);

    /* rank 0: whole (2, 3) f32, whole () i64, rows [0, 3) of (5, 2); rank 1: rows [3, 5). Both: scalar s. */
    float whole[6] = {1.5f, -2, 3, 4, 5e-9f, 6}, rows[6];
    int64_t count = 77, s = 5, shape[2] = {2, 3};
    for (int i = 0; i < 6; i++) rows[i] = (float)(rank * 100 + i) + 0.25f;
    int64_t r0 = rank == 0 ? 0 : 3, nr = rank == 0 ? 3 : 2;
    af_state reg;
    af_state_init(&reg);
    af_status st = AF_OK;
    if (rank == 0 && !st) st = af_state_add_whole(&reg, "test", "/a/x", AF_STATE_F32, whole, 2, shape);
    if (rank == 0 && !st) st = af_state_add_whole(&reg, "test", "/a/count", AF_STATE_I64, &count, 0, NULL);
    if (!st) st = af_state_add_rows(&reg, "test", "/r", rows, 5, 2, r0, nr);
    if (!st) st = af_state_add_scalar(&reg, "test", "s", &s);
    check(!st, "registering");
    check(af_state_add_scalar(&reg, "again", "s", &s) == AF_ERR_ARG && strstr(af_errmsg(), "registered twice"),
          "a name registered twice is refused");
    check(af_state_add_rows(&reg, "test", "/bad", rows, 5, 2, 4, 2) == AF_ERR_ARG, "rows outside the matrix are refused");

    st = af_ckpt_write(&ctx, &cfg, &reg, 0, 1, path);
    check(!st, "writing the checkpoint");
    if (st && rank == 0) printf("  %s\n", af_errmsg());
    /* Load into zeroed copies. */
    float whole2[6] = {0}, rows2[6] = {0};
    int64_t count2 = 0, s2 = 0;
    af_state back;
    af_state_init(&back);
    if (rank == 0) af_state_add_whole(&back, "test", "/a/x", AF_STATE_F32, whole2, 2, shape);
    if (rank == 0) af_state_add_whole(&back, "test", "/a/count", AF_STATE_I64, &count2, 0, NULL);
    af_state_add_rows(&back, "test", "/r", rows2, 5, 2, r0, nr);
    af_state_add_scalar(&back, "test", "s", &s2);
    af_ckpt_info info = {.format_version = AF_CKPT_FORMAT_VERSION};
    st = af_ckpt_load_state(path, &back, &info);
    int same = !st && !memcmp(rows, rows2, sizeof(float) * (size_t)(nr * 2)) && s2 == s &&
               (rank || (!memcmp(whole, whole2, sizeof whole) && count2 == count)), all;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    check(all, "round trip: every item bit-identical on every rank");

    /* Growth: a (7, 2) matrix over the file's (5, 2): rows 5, 6 keep their values. */
    float grown[8];
    for (int i = 0; i < 8; i++) grown[i] = -1;
    af_state g;
    af_state_init(&g);
    af_state_add_rows(&g, "test", "/r", grown, 7, 2, rank == 0 ? 0 : 3, rank == 0 ? 3 : 4);
    st = af_ckpt_load_state(path, &g, &info);
    same = !st && !memcmp(grown, rows, sizeof(float) * (size_t)(nr * 2)) &&
           (rank == 0 || (grown[4] == -1 && grown[7] == -1));
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    check(all, "growth: the file's rows read, rows past them untouched");
    af_state_free(&g);

    /* Shrink or another shape: refused naming the item. */
    int64_t other[2] = {3, 2};
    af_state_init(&g);
    if (rank == 0) af_state_add_whole(&g, "test", "/a/x", AF_STATE_F32, whole2, 2, other);
    st = rank == 0 ? af_ckpt_load_state(path, &g, &info) : AF_ERR_FORMAT;
    check(st && (rank || strstr(af_errmsg(), "'/a/x' has shape (2, 3), this run's test has (3, 2)")),
          "loading a whole item of another shape is refused naming it");
    af_state_free(&g);
    af_state_init(&g);
    af_state_add_rows(&g, "test", "/r", grown, 4, 2, rank == 0 ? 0 : 3, rank == 0 ? 3 : 1);
    st = af_ckpt_load_state(path, &g, &info);
    check(st && strstr(af_errmsg(), "rows may only grow"), "loading fewer rows than the file holds is refused");
    af_state_free(&g);
    af_state_init(&g);
    af_state_add_scalar(&g, "test", "missing", &s2);
    st = af_ckpt_load_state(path, &g, &info);
    check(st && strstr(af_errmsg(), "missing"), "a scalar the file lacks is refused naming it");
    af_state_free(&g);

    /* Inconsistent registrations: nothing may be published. */
    snprintf(path, sizeof path, "%s/checkpoints/bad.h5", argv[1]);
    af_state bad;
    af_state_init(&bad);
    af_state_add_rows(&bad, "test", "/r", rows, 5, 2, rank == 0 ? 0 : 4, rank == 0 ? 3 : 1);
    expect_refused(&ctx, &cfg, &bad, path, "rows [3, 4) of '/r' are held by no rank", "a gap in the rows");
    af_state_free(&bad);
    af_state_init(&bad);
    af_state_add_rows(&bad, "test", "/r", rows, 5, 2, rank == 0 ? 0 : 2, 3);
    expect_refused(&ctx, &cfg, &bad, path, "rows [2, 3) of '/r' are held twice", "overlapping rows");
    af_state_free(&bad);
    af_state_init(&bad);
    int64_t v = 5 + rank;
    af_state_add_scalar(&bad, "test", "s", &v);
    expect_refused(&ctx, &cfg, &bad, path, "'s' is 5 on rank 0 but 6 on rank 1", "a scalar that differs");
    af_state_free(&bad);
    af_state_init(&bad);
    if (rank == 1) af_state_add_whole(&bad, "test", "/a/x", AF_STATE_F32, whole, 2, shape);
    expect_refused(&ctx, &cfg, &bad, path, "'/a/x' (registered by rank 1) is not held by rank 0", "a whole item rank 0 lacks");
    af_state_free(&bad);

    af_state_free(&reg);
    af_state_free(&back);
    int total;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s\n", total ? "FAILED" : "all passed");
    af_ctx_free(&ctx);
    MPI_Finalize();
    return total ? 1 : 0;
}
