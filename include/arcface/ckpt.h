/* HDF5 checkpoints of the state registry (include/arcface/state.h). One file per
 * checkpoint, OUTPUT/checkpoints/ckpt_<step>.h5; what is in it is what the
 * owners registered, today:
 *   /backbone/<key>       every backbone parameter and buffer under its PyTorch
 *                         state_dict key (h5py + load_state_dict(strict=True))
 *   /fc/weight            (num_classes, embedding_size) float32, global class order
 *   /fc/momentum          same shape: SGD momentum, or AdamW exp_avg
 *   /fc/exp_avg_sq        AdamW only
 *   /optimizer/backbone/... the backbone optimizer state (flat, trainable order)
 *   root attributes       registered scalars: step (optimizer steps done), epoch,
 *                         sample_position, backbone_opt_steps, fc_adam_t (the fc
 *                         shards' AdamW step count, 0 under SGD); and metadata:
 *                         format_version, num_classes, embedding_size, network,
 *                         num_workers, num_servers, seed
 *   /config               the TrainConfig protobuf (proto/arcface.proto), uint8
 * Every dataset carries a `crc32` attribute and the root `checksum`, `datasets`
 * and `attributes_crc32`; they are verified before a resume
 * (include/arcface/ckpt_verify.h).
 * Row-split items (the fc) are written collectively by all ranks with parallel
 * HDF5 (MPI-IO), each writing its own rows; world rank 0 then adds the rest.
 * Atomic: written under a temporary name, fsynced, renamed, the directory
 * fsynced, and only then OUTPUT/checkpoints/latest updated (same dance). All
 * random draws in training are counter-based functions of (seed, step, ...),
 * so the seed and step are the complete RNG state.
 * Format 2 differs from 1 only in fc_adam_t, which format 1 stored as 0
 * whenever servers held the fc; reading format 1, it is taken as the step.
 * Fault injection (tests only): ARCFACE_FAULT_KILL_IN_CHECKPOINT=N makes rank 0
 * SIGKILL itself while writing the checkpoint of step N, after the file is
 * complete and before it is renamed. */
#ifndef ARCFACE_CKPT_H
#define ARCFACE_CKPT_H

#include <stdint.h>

#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/state.h"
#include "arcface/status.h"

#define AF_CKPT_FORMAT_VERSION 2

/* Collective over ctx->world; every rank passes its own registry. Fails, before
 * creating anything, unless the ranks' items agree: a row-split item's rows
 * covered exactly once, whole items held by rank 0, scalars equal wherever
 * registered. num_image (the training set's size) and step are rank 0's. */
af_status af_ckpt_write(const af_ctx *ctx, const af_config *cfg, const af_state *reg, int64_t num_image, int64_t step,
                        const char *path);

/* OUTPUT/checkpoints/ckpt_<step>.h5 */
void af_ckpt_path(const af_config *cfg, int64_t step, char *buf, size_t cap);

/* ---- Reading and resuming ---- */

typedef struct {
    int64_t format_version, step, epoch, sample_position, num_classes, embedding_size;
    int64_t num_workers, num_servers, seed, backbone_opt_steps, fc_adam_t;
    char network[32];
    /* from the stored TrainConfig */
    af_config cfg;           /* the keys TrainConfig records; the others at their defaults */
    int64_t num_image, global_batch;
    int gradient_acc, sample_shards;
    char optimizer[16], fc_update[16];
} af_ckpt_info;

/* Reads the root attributes and the stored configuration; fails, naming the
 * file and the missing or malformed field, on anything that is not a complete
 * checkpoint. */
af_status af_ckpt_read_info(const char *path, af_ckpt_info *info);
/* Per rank: reads every item of reg (of a row-split item only this rank's rows;
 * rows beyond the file's keep their values: class growth). Fails naming the
 * item on a missing item, a shape that differs, or a dataset in a group of
 * whole items that the registry does not have. */
af_status af_ckpt_load_state(const char *path, const af_state *reg, const af_ckpt_info *info);

#endif
