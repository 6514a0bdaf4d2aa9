/* Optimisers over flat parameter arrays, with PyTorch's semantics, so that a
 * run can be compared step by step with torch.optim and resumed from a
 * checkpoint of the flat state:
 *  - SGD with momentum and L2 weight decay (torch.optim.SGD, dampening 0,
 *    no Nesterov): g' = g + wd*w; v = g' on the first step, else mu*v + g';
 *    w -= lr*v.
 *  - AdamW (torch.optim.AdamW, amsgrad off): w *= 1 - lr*wd; m, v moments
 *    with bias correction; w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 *  - Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_).
 * The arrays passed are the trainable range only (a backbone's params and
 * grads over [0, n_trainable)); non-trainable parameters are never touched.
 * Every update is element-wise and single-threaded in index order, hence
 * deterministic; the state is plain arrays plus a step count, checkpointable
 * as is. Arguments must be equal on all ranks that hold a replica. */
#ifndef ARCFACE_OPTIM_H
#define ARCFACE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/status.h"

typedef struct {
    size_t n;
    float *momentum; /* (n) velocity; meaningless until steps > 0 */
    int64_t steps;   /* updates done; 0 means the velocity is initialised from the next gradient */
} af_sgd;

af_status af_sgd_init(af_sgd *o, size_t n);
void af_sgd_free(af_sgd *o);
/* w (n) -= lr * velocity; g (n) is not modified. */
void af_sgd_step(af_sgd *o, float *w, const float *g, float lr, float momentum, float weight_decay);

typedef struct {
    size_t n;
    float *m;      /* (n) first moment */
    float *v;      /* (n) second moment */
    int64_t steps;
} af_adamw;

/* Defaults of arcface_torch's AdamW configurations. */
#define AF_ADAMW_LR 1e-3f
#define AF_ADAMW_WEIGHT_DECAY 0.1f

af_status af_adamw_init(af_adamw *o, size_t n);
void af_adamw_free(af_adamw *o);
void af_adamw_step(af_adamw *o, float *w, const float *g, float lr, float beta1, float beta2, float eps,
                   float weight_decay);

/* Scales g (n) by max_norm / (|g| + 1e-6) when that is below 1; returns |g|,
 * the global L2 norm before clipping (accumulated in double). */
double af_clip_grad_norm(float *g, size_t n, double max_norm);

#endif
