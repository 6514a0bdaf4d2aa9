/* The training job (trainer/): start-up checks, output folder, resume, the step
 * loop, the evaluation schedule, the checkpoint protocol and stop signals.
 * tools/arcface-train.c parses the configuration and calls af_trainer_run();
 * everything that decides *when* (steps, checkpoints, evaluation, stopping)
 * lives here, the rooms below (worker/, paramserver/, ckpt/) decide *how*.
 * Resume: the checkpoint is checked against the run before the output folder is
 * touched (trainer/resume.c: a changed run is refused with AF_ERR_ARG unless
 * resume_allow_changes names the keys; num_classes may grow), then every rank
 * registers its state (include/arcface/state.h) and loads it.
 * Test hooks (environment): ARCFACE_LIST_STATE=1 (or =DIR: one file per rank) prints every rank's registry at
 * init; ARCFACE_TEST_CHECKPOINT_AT_RESUME=1 makes a resumed job checkpoint the
 * state it loaded before its first step. */
#ifndef ARCFACE_TRAINER_H
#define ARCFACE_TRAINER_H

#include <mpi.h>

#include "arcface/config.h"
#include "arcface/status.h"

/* How a job ended, for main() to choose its exit status. */
typedef struct {
    /* The error came after start-up: peers may be blocked in a collective or
     * waiting on this rank, so the caller must abort the whole job rather than
     * finalize. Resources are left allocated in that case. */
    int must_abort;
    int is_server;  /* this rank's role, for the error message */
    int startup_error; /* failed in the start-up checks, before the first step: a configuration error */
    int quiet;         /* a start-up error that a lower rank saw too and prints: print nothing */
} af_trainer_outcome;

/* SIGUSR1 and SIGTERM make the job finish the current step, checkpoint and stop
 * (af_trainer_run then returns AF_ERR_INTERRUPTED). Call once, right after MPI_Init. */
void af_trainer_install_signals(void);

/* Runs the whole job on every rank of `world` (collective; cfg must be equal on
 * all ranks and already checked with af_config_check). Returns AF_OK when the
 * job is done, AF_ERR_INTERRUPTED after a signal-time checkpoint, or an error
 * with af_errmsg() set. Does not call MPI_Init or MPI_Finalize. */
af_status af_trainer_run(const af_config *cfg, MPI_Comm world, af_trainer_outcome *out);

#endif
