/* What a worker rank does in one optimizer step (gradient_acc micro-steps):
 *   1. next local batch from the loader; labels all-gathered among workers;
 *   2. the sampled class set of the global batch (pfc.h: same on every rank);
 *   3. the sampled centres split contiguously among workers, each pulled by
 *      exactly one worker from its server — requests posted before the backbone
 *      forward so the transfer overlaps compute;
 *   4. backbone forward (batch norm synchronised over workers); embeddings
 *      all-gathered (global batch x D);
 *   5. margin logits of the whole global batch against this worker's slice of
 *      centres; distributed softmax cross-entropy over the workers;
 *   6. feature gradients reduce-scattered back to the worker owning each row;
 *      centre gradients pushed to their servers;
 *   7. backbone backward, with the gradient all-reduce started bucket by bucket
 *      while backward still runs; clipping and the optimizer step then run
 *      identically on every worker; worker 0 commits the step to the servers.
 * A single-process job (P = 0) holds all centres in a local shard and does the
 * same arithmetic without messages: the reference every layout must match. */
#ifndef ARCFACE_WORKER_H
#define ARCFACE_WORKER_H

#include <stdint.h>

#include "arcface/backbone.h"
#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/data.h"
#include "arcface/margin.h"
#include "arcface/msg.h"
#include "arcface/transport.h"
#include "arcface/optim.h"
#include "arcface/paramserver.h"
#include "arcface/pfc.h"
#include "arcface/state.h"

enum { AF_T_DATA, AF_T_FORWARD, AF_T_GATHER, AF_T_PULL_WAIT, AF_T_LOGITS, AF_T_BACKWARD, AF_T_ALLREDUCE,
       AF_T_PUSH_WAIT, AF_T_OPTIM, AF_T_COUNT };
extern const char *const af_timer_names[AF_T_COUNT];

typedef struct af_worker {
    const af_ctx *ctx;
    const af_config *cfg;
    int b, G, D, W, P, acc;
    af_margin margin;
    af_backbone bb;
    af_sgd sgd;
    af_adamw adamw;
    /* data */
    af_loader *loader;
    int64_t num_image;         /* images in the training dataset */
    float *images;             /* (b, C, H, W) */
    int64_t *labels;           /* (b) */
    int64_t *labels_g;         /* (G) */
    /* sampling and this worker's slice of the sampled centres */
    af_pfc_global pfc;
    int64_t max_slice;
    float *wslice;             /* (max_slice, D) pulled centres, then their gradients */
    int64_t *slice_labels;     /* (G) */
    int64_t lo, hi;            /* slice [lo, hi) of the sampled list */
    int64_t *srv_lo, *srv_hi;  /* (P) sub-ranges of the slice per server */
    af_fc_ws fcws;
    float *X, *dX;             /* (G, D) */
    float *dx_local;           /* (b, D) */
    /* servers (P > 0) or the local shard (P = 0) */
    af_link *rx, *tx;          /* (P) pull replies; pulls and pushes (core/transport.c) */
    af_msgbuf ctl;
    af_ps_shard local;
    /* gradient all-reduce buckets */
    MPI_Request *bucket_req;
    int n_buckets, max_buckets;
    size_t bucket_floats, pending_hi;
    int allreduce_now;
    int bucket_rc;             /* first failing MPI code of the bucket calls (inside backward) */
    /* accounting */
    double t[AF_T_COUNT];
    uint64_t bytes_pulled, bytes_pushed, msg_header_bytes;
    double last_loss, last_grad_norm;
} af_worker;

/* Collective over the workers. start_* place the loader (from a checkpoint or 0). */
af_status af_worker_init(af_worker *w, const af_ctx *ctx, const af_config *cfg, af_dataset *ds,
                         int64_t start_epoch, int64_t start_pos);
void af_worker_free(af_worker *w);
/* Registers the worker's checkpointable state: every backbone tensor under its
 * PyTorch state_dict key (/backbone/<key>), the backbone optimizer state
 * (/optimizer/backbone/..., backbone_opt_steps) and, in a single-process job,
 * the local fc shard. */
af_status af_worker_register_state(af_worker *w, af_state *reg);
/* One optimizer step number opt_step with learning rate lr; *loss is the mean
 * loss over its micro-steps (equal on all workers). */
af_status af_worker_step(af_worker *w, int64_t opt_step, float lr, double *loss);
/* Worker 0 tells every server to stop (after the last commit); interrupted: the
 * job stops early because of a signal. */
af_status af_worker_shutdown(af_worker *w, int64_t opt_step, int interrupted);
/* *sig: the number of a signal a server passed on (AF_TAG_STOP) since the last
 * call, else 0. Per worker; callers agree on it over the workers. */
af_status af_worker_poll_stop(af_worker *w, int *sig);

/* Learning rate of optimizer step `step` (0-based) under arcface_torch's
 * PolyScheduler: linear warmup from 0 over `warmup`, then (1 - progress)^2 down
 * to 0 at `total`, both counted in micro-batches as train_v2.py counts them
 * (num_image // total batch x warmup_epoch / num_epoch), with `acc` micro-batches
 * (gradient_acc) per step. A negative warmup (warmup_epoch = -1) is no warmup and
 * stretches the decay over total - warmup, as there. Depends on the step alone,
 * so a resumed run continues the same curve. */
float af_lr_at(float base, int64_t step, int acc, int64_t warmup, int64_t total);

#endif
