/* HDF5 checkpoints. One file per checkpoint, OUTPUT/checkpoints/ckpt_<step>.h5:
 *   /backbone/<key>       every backbone parameter and buffer under its PyTorch
 *                         state_dict key (h5py + load_state_dict(strict=True))
 *   /fc/weight            (num_classes, embedding_size) float32, global class order
 *   /fc/momentum          same shape: SGD momentum, or AdamW exp_avg
 *   /fc/exp_avg_sq        AdamW only
 *   /optimizer/backbone/... the backbone optimizer state (flat, trainable order)
 *   /config               the TrainConfig protobuf (proto/arcface.proto), uint8
 *   root attributes       format_version, step (optimizer steps done), epoch,
 *                         sample_position, num_classes, embedding_size, network,
 *                         num_workers, num_servers, seed, fc_adam_t, backbone_opt_steps
 * The fc rows are written collectively by all ranks with parallel HDF5 (MPI-IO),
 * each server writing its own rows; worker 0 then adds the rest serially.
 * Atomic: written under a temporary name, fsynced, renamed, the directory
 * fsynced, and only then OUTPUT/checkpoints/latest updated (same dance). All
 * random draws in training are counter-based functions of (seed, step, ...),
 * so the seed and step are the complete RNG state.
 * Fault injection (tests only): ARCFACE_FAULT_KILL_IN_CHECKPOINT=N makes rank 0
 * SIGKILL itself while writing the checkpoint of step N, after the file is
 * complete and before it is renamed. */
#ifndef ARCFACE_CKPT_H
#define ARCFACE_CKPT_H

#include <stdint.h>

#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/paramserver.h"
#include "arcface/status.h"

#define AF_CKPT_FORMAT_VERSION 1

struct af_worker;

typedef struct {
    int64_t step;            /* optimizer steps done */
    int64_t epoch;           /* loader position of the next sample */
    int64_t sample_position;
} af_ckpt_state;

/* Collective over ctx->world. Servers pass their shard and w = NULL; workers
 * pass w (worker 0's state is what is stored) and shard = NULL, except in a
 * single-process job where the worker passes its local shard. */
af_status af_ckpt_write(const af_ctx *ctx, const af_config *cfg, const af_ps_shard *shard,
                        const struct af_worker *w, const af_ckpt_state *state, const char *path);

/* OUTPUT/checkpoints/ckpt_<step>.h5 */
void af_ckpt_path(const af_config *cfg, int64_t step, char *buf, size_t cap);

/* ---- Reading and resuming ---- */

typedef struct {
    int64_t format_version, step, epoch, sample_position, num_classes, embedding_size;
    int64_t num_workers, num_servers, seed, backbone_opt_steps, fc_adam_t;
    char network[32];
    /* from the stored TrainConfig */
    int64_t global_batch;
    int gradient_acc, sample_shards;
    char optimizer[16], fc_update[16];
} af_ckpt_info;

/* Reads the root attributes and the stored configuration; fails, naming the
 * file and the missing or malformed field, on anything that is not a complete
 * checkpoint. */
af_status af_ckpt_read_info(const char *path, af_ckpt_info *info);
/* Refuses a checkpoint whose num_classes, embedding_size, network, global batch,
 * gradient_acc, sample_shards, optimizer or fc_update differ from the run's,
 * naming the field. The number of workers and servers may differ. */
af_status af_ckpt_check(const af_ckpt_info *info, const af_config *cfg, const af_ctx *ctx, const char *path);
/* Server (or single process): rows [s->start, s->start + s->count) of the fc
 * weights and optimizer state — only its own rows are read. */
af_status af_ckpt_load_shard(const char *path, af_ps_shard *s, const af_ckpt_info *info);
/* Worker: backbone parameters and buffers, backbone optimizer state. */
af_status af_ckpt_load_worker(const char *path, struct af_worker *w, const af_ckpt_info *info);
/* resume = "auto": the checkpoint OUTPUT/checkpoints/latest names, if any
 * (*found = 0 when there is none; a `latest` naming a missing file is an error);
 * "none": *found = 0; anything else: that file, which must exist. */
af_status af_ckpt_resolve(const af_config *cfg, char *path, size_t cap, int *found);

#endif
