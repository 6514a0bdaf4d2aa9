/* arcface-train: the training job. Run under mpirun or srun; the last `ps` ranks
 * are parameter servers, the others workers (include/arcface/ctx.h); a job of
 * one rank trains alone and is the reference every layout reproduces.
 *
 *   arcface-train [CONFIG_FILE] [--key value | --key=value ...]
 *
 * Keys are arcface_torch's (include/arcface/config.h). Rank 0 prints the
 * resolved configuration and writes it to OUTPUT/config.txt, then logs every
 * `frequent` steps to the console and OUTPUT/metrics.csv.
 * Signals: SIGUSR1 or SIGTERM to any rank, worker or server (mpirun and srun
 * forward SIGUSR1 to every rank; jobs/launch.sh turns SIGTERM to mpirun into
 * that) makes every rank finish the current step, write a checkpoint and exit
 * with status 3; `--resume auto` (the default) then continues from it.
 * Exit status: 0 done; 1 error; 2 usage or configuration error (anything found at
 * start, before the first step, a resume the checkpoint refuses included); 3
 * stopped by a signal after a complete checkpoint. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "arcface/config.h"
#include "arcface/trainer.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_PREEMPTED = 3 };

static int usage(void)
{
    fprintf(stderr, "usage: arcface-train [CONFIG_FILE] [--key value | --key=value ...]\n"
                    "keys (arcface_torch names): network embedding_size margin_list scale sample_rate "
                    "interclass_filtering_threshold batch_size lr momentum weight_decay optimizer num_classes "
                    "num_epoch warmup_epoch gradient_acc seed output frequent rec ps ...; see include/arcface/config.h\n");
    return 2;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage();
    int provided;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "arcface-train: error: MPI_Init_thread failed\n");
        return EXIT_ERROR;
    }
    /* The loader's threads never call MPI, so FUNNELED is all this needs. */
    if (provided < MPI_THREAD_FUNNELED) {
        fprintf(stderr, "arcface-train: error: the MPI library provides thread level %d, MPI_THREAD_FUNNELED (%d) is "
                        "needed for the data loader's threads\n", provided, MPI_THREAD_FUNNELED);
        MPI_Abort(MPI_COMM_WORLD, EXIT_ERROR);
    }
    af_trainer_install_signals();
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    static af_config cfg;
    af_status st;
    af_config_defaults(&cfg);
    if ((st = af_config_parse_args(&cfg, argc, argv, 1)) || (st = af_config_check(&cfg))) {
        if (rank == 0) fprintf(stderr, "arcface-train: error: %s\n", af_errmsg());
        MPI_Finalize();
        return st == AF_ERR_ARG ? EXIT_USAGE : EXIT_ERROR;
    }
    af_trainer_outcome out;
    st = af_trainer_run(&cfg, MPI_COMM_WORLD, &out);
    if (st == AF_ERR_INTERRUPTED) {
        if (rank == 0) printf("arcface-train: %s; exit status %d (rerun with resume = auto to continue)\n", af_errmsg(),
                              EXIT_PREEMPTED);
        fflush(stdout);
        MPI_Finalize();
        return EXIT_PREEMPTED;
    }
    if (st && out.must_abort) {
        /* Peers may be blocked in a collective or waiting on this rank: abort the job. */
        fprintf(stderr, "arcface-train: rank %d (%s): error: %s\n", rank, out.is_server ? "server" : "worker",
                af_errmsg());
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (st) {
        if (!out.quiet) fprintf(stderr, "arcface-train: rank %d: error: %s\n", rank, af_errmsg());
        MPI_Finalize();
        /* A configuration the job or its checkpoint cannot take (a refused resume included). */
        return st == AF_ERR_ARG || out.startup_error ? EXIT_USAGE : EXIT_ERROR;
    }
    if (rank == 0) printf("arcface-train: done\n");
    fflush(stdout);
    MPI_Finalize();
    return EXIT_OK;
}
