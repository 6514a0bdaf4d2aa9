/* A parameter server's shard of the class centres (fc weights): rows
 * [start, start + count) of the global (num_classes, D) matrix, their optimizer
 * state, and (with gradient_acc > 1) the accumulator of the gradients pushed
 * during one optimizer step.
 *
 * Memory: weights and momentum are count x D x 4 bytes each (AdamW adds a
 * second moment), plus an int32 slot per row. With gradient_acc = 1
 * ("direct" mode) each touched row's gradient arrives exactly once per
 * optimizer step and goes straight into the optimizer state (SGD momentum
 * v = mu v + g + wd w, AdamW's moments: the parts without the learning rate,
 * which only the commit brings); the slot only marks the row, and the commit
 * does the rest (w -= lr v). A row pushed twice in one step is refused.
 * With gradient_acc > 1 gradients are summed first into an accumulator of
 * max_touched x D floats (the slot maps a row to its place there).
 *
 * Update modes (optimizer step with learning rate lr; wd weight decay, mu momentum):
 *   sparse  only rows pushed this step: g = acc + wd w; v = mu v + g; w -= lr v
 *           (PLSC's sparse momentum, partial_fc v1);
 *   dense   every row, every step, with g = 0 for rows nobody pushed: exactly
 *           arcface_torch v2, where the whole fc weight is one torch SGD parameter.
 *   AdamW dense: torch.optim.AdamW semantics with one step count per shard.
 *   AdamW sparse (lazy): only rows pushed this step: w *= 1 - lr wd (AdamW's
 *           decoupled decay, first), then torch.optim.SparseAdam's step on
 *           those rows, whose bias correction counts optimizer steps (adam_t,
 *           SparseAdam's state['step']), not the steps a row was sampled in.
 * Row c is initialised N(0, 0.01) from (seed, c) alone, so the initial matrix is
 * the same whatever the number of servers. */
#ifndef ARCFACE_PARAMSERVER_H
#define ARCFACE_PARAMSERVER_H

#include <stdint.h>

#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/state.h"
#include "arcface/status.h"

typedef enum { AF_FC_SPARSE = 0, AF_FC_DENSE = 1 } af_fc_update;

typedef struct {
    int64_t start, count;
    int D;
    af_fc_update mode;
    int adamw;
    float momentum, weight_decay, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
    int64_t adam_t;
    float *w;            /* (count, D) */
    float *mom;          /* (count, D) momentum (SGD) or exp_avg (AdamW) */
    float *mom2;         /* (count, D) exp_avg_sq (AdamW), else NULL */
    int direct;          /* gradient_acc = 1: gradients go straight into the optimizer state */
    int32_t *slot;       /* (count) row -> accumulator slot (direct: 0), -1 if untouched this step */
    float *acc;          /* (max_touched, D), NULL when direct */
    int64_t *touched;    /* (max_touched) local rows in slot order, NULL when direct */
    int64_t n_touched, max_touched;
} af_ps_shard;

af_status af_ps_shard_init(af_ps_shard *s, int64_t start, int64_t count, int D, int64_t max_touched,
                           const af_config *cfg);
void af_ps_shard_free(af_ps_shard *s);
/* Initial weights N(0, 0.01), row c from (seed, global class c). */
void af_ps_shard_init_weights(af_ps_shard *s, uint64_t seed);

/* AF_ERR_PROTO naming the first of the n global class ids outside the shard. */
af_status af_ps_shard_check_ids(const af_ps_shard *s, const int64_t *ids, int64_t n);
/* out (n, D) = rows of the given global class ids. Fails, touching nothing, if
 * an id is outside the shard. */
af_status af_ps_shard_gather(const af_ps_shard *s, const int64_t *ids, int64_t n, float *out);
/* Adds grads (n, D) into the accumulator rows of the given ids (direct mode:
 * into the optimizer state). Checks every id, the accumulator capacity (direct:
 * that no row comes twice in one optimizer step) before changing anything. */
af_status af_ps_shard_accumulate(af_ps_shard *s, const int64_t *ids, int64_t n, const float *grads);
/* The checks af_ps_shard_accumulate makes before changing anything, alone:
 * for a push whose rows arrive in pieces after its ids (a split push). */
af_status af_ps_shard_check_push(af_ps_shard *s, const int64_t *ids, int64_t n);
/* Applies the optimizer step and clears the accumulator. */
void af_ps_shard_apply(af_ps_shard *s, float lr);

/* Registers the shard's checkpointable state: its rows of /fc/weight and of the
 * optimizer state (/fc/momentum: SGD momentum or AdamW exp_avg; /fc/exp_avg_sq),
 * as rows of (num_classes, D), and the AdamW step count fc_adam_t (0 under SGD). */
af_status af_ps_shard_register_state(af_ps_shard *s, int64_t num_classes, af_state *reg);

/* Bytes of weights + optimizer state, and of everything the shard holds. */
size_t af_ps_shard_state_bytes(const af_ps_shard *s);
size_t af_ps_shard_total_bytes(const af_ps_shard *s);

/* The server rank's main loop: answers pulls, accumulates pushes, applies
 * commits, until a shutdown. Checkpoint requests call `checkpoint` (collective
 * with the workers). Malformed or unexpected messages are answered with an
 * ErrorReply and leave the shard untouched. */
typedef af_status (*af_ps_checkpoint_fn)(void *user, int64_t opt_step, const char *path);
af_status af_server_run(const af_ctx *ctx, const af_config *cfg, af_ps_shard *s, int64_t first_opt_step,
                        af_ps_checkpoint_fn checkpoint, void *user);

#endif
