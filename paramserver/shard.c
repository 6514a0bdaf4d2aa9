/* Class-centre shard storage and its optimizer (include/arcface/paramserver.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/paramserver.h"
#include "arcface/rng.h"

/* Salt that keeps fc initialisation apart from the backbone's in the INIT stream. */
#define FC_INIT_SALT 0xfc00000000000000ull

/* torch's AdamW / SparseAdam defaults. They are Python floats there: tensors are
 * multiplied by beta cast to float32, but 1 - beta is taken in double first
 * (1 - 0.999f in float is 1.7e-5 off 0.001, which shows in exp_avg_sq). */
#define ADAM_BETA1 0.9
#define ADAM_BETA2 0.999

af_status af_ps_shard_init(af_ps_shard *s, int64_t start, int64_t count, int D, int64_t max_touched,
                           const af_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->start = start;
    s->count = count;
    s->D = D;
    s->mode = strcmp(cfg->fc_update, "dense") ? AF_FC_SPARSE : AF_FC_DENSE;
    s->adamw = !strcmp(cfg->optimizer, "adamw");
    s->momentum = cfg->momentum;
    s->weight_decay = cfg->weight_decay;
    s->beta1 = (float)ADAM_BETA1;
    s->beta2 = (float)ADAM_BETA2;
    s->one_minus_beta1 = (float)(1.0 - ADAM_BETA1);
    s->one_minus_beta2 = (float)(1.0 - ADAM_BETA2);
    s->eps = 1e-8f;
    s->max_touched = max_touched < count ? max_touched : count;
    /* With one push per optimizer step every touched row gets its gradient
     * exactly once (workers' slices of the sampled ids are disjoint), so it
     * can go straight into the optimizer state: no accumulator at all. */
    s->direct = cfg->gradient_acc <= 1;
    size_t rows = (size_t)count * D;
    s->w = af_malloc(sizeof(float) * rows, "fc shard weights");
    s->mom = af_calloc(rows, sizeof(float), "fc shard momentum");
    s->mom2 = s->adamw ? af_calloc(rows, sizeof(float), "fc shard AdamW second moment") : NULL;
    s->slot = af_malloc(sizeof(int32_t) * (count ? count : 1), "fc shard slot map");
    if (!s->direct) {
        s->acc = af_malloc(sizeof(float) * (size_t)(s->max_touched ? s->max_touched : 1) * D,
                           "fc gradient accumulator");
        s->touched = af_malloc(sizeof(int64_t) * (s->max_touched ? s->max_touched : 1), "fc touched rows");
    }
    if (!s->w || !s->mom || (s->adamw && !s->mom2) || !s->slot || (!s->direct && (!s->acc || !s->touched))) {
        af_ps_shard_free(s);
        return AF_ERR_NOMEM;
    }
    for (int64_t i = 0; i < count; i++) s->slot[i] = -1;
    /* calloc'd pages are not resident until written; touch the optimizer state
     * now so that a shard that does not fit fails at start, not hours in when
     * sparse updates have finally reached every row. */
    memset(s->mom, 0, sizeof(float) * rows);
    if (s->mom2) memset(s->mom2, 0, sizeof(float) * rows);
    if (s->max_touched > INT32_MAX) {
        af_ps_shard_free(s);
        return af_errorf(AF_ERR_ARG, "fc shard: %lld rows touched per step is too many", (long long)max_touched);
    }
    return AF_OK;
}

void af_ps_shard_free(af_ps_shard *s)
{
    free(s->w); free(s->mom); free(s->mom2); free(s->slot); free(s->acc); free(s->touched);
    memset(s, 0, sizeof *s);
}

void af_ps_shard_init_weights(af_ps_shard *s, uint64_t seed)
{
    for (int64_t i = 0; i < s->count; i++) {
        af_rng r;
        af_rng_seed(&r, seed, AF_RNG_STREAM_INIT, FC_INIT_SALT, (uint64_t)(s->start + i));
        float *row = s->w + (size_t)i * s->D;
        for (int k = 0; k < s->D; k++) row[k] = 0.01f * af_rng_normal(&r);
    }
}

static af_status check_ids(const af_ps_shard *s, const int64_t *ids, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < s->start || ids[i] >= s->start + s->count)
            return af_errorf(AF_ERR_PROTO, "class id %lld (item %lld) is not in this shard [%lld, %lld)",
                             (long long)ids[i], (long long)i, (long long)s->start, (long long)(s->start + s->count));
    return AF_OK;
}

af_status af_ps_shard_check_ids(const af_ps_shard *s, const int64_t *ids, int64_t n)
{
    return check_ids(s, ids, n);
}

af_status af_ps_shard_gather(const af_ps_shard *s, const int64_t *ids, int64_t n, float *out)
{
    af_status st = check_ids(s, ids, n);
    if (st) return st;
    for (int64_t i = 0; i < n; i++)
        memcpy(out + (size_t)i * s->D, s->w + (size_t)(ids[i] - s->start) * s->D, sizeof(float) * s->D);
    return AF_OK;
}

/* The part of the optimizer step that does not need the learning rate,
 * for one row's gradient g: SGD's v = mu v + (g + wd w), AdamW's moments.
 * apply() finishes it with the same expressions the whole-step update uses. */
static void stash_row(af_ps_shard *s, int64_t r, const float *g)
{
    const int D = s->D;
    float *w = s->w + (size_t)r * D, *m = s->mom + (size_t)r * D;
    if (s->adamw) {
        float *v = s->mom2 + (size_t)r * D;
        for (int k = 0; k < D; k++) {
            float gk = g ? g[k] : 0.0f;
            m[k] = s->beta1 * m[k] + s->one_minus_beta1 * gk;
            v[k] = s->beta2 * v[k] + s->one_minus_beta2 * gk * gk;
        }
        return;
    }
    for (int k = 0; k < D; k++) {
        float d = (g ? g[k] : 0.0f) + s->weight_decay * w[k];
        m[k] = s->momentum * m[k] + d;
    }
}

af_status af_ps_shard_check_push(af_ps_shard *s, const int64_t *ids, int64_t n)
{
    af_status st = check_ids(s, ids, n);
    if (st) return st;
    if (s->direct) {
        /* A row twice in one step would be applied twice: mark (-2) to find
         * repeats inside this push too, then unmark. */
        for (int64_t i = 0; i < n && !st; i++) {
            int32_t *sl = &s->slot[ids[i] - s->start];
            if (*sl != -1)
                st = af_errorf(AF_ERR_PROTO, "class id %lld (item %lld) %s in this optimizer step; with gradient_acc "
                               "= 1 every row comes once a step", (long long)ids[i], (long long)i,
                               *sl == -2 ? "comes twice in this push" : "was already pushed");
            else
                *sl = -2;
        }
        for (int64_t i = 0; i < n; i++)
            if (s->slot[ids[i] - s->start] == -2) s->slot[ids[i] - s->start] = -1;
        return st;
    }
    int64_t fresh = 0;
    for (int64_t i = 0; i < n; i++) fresh += s->slot[ids[i] - s->start] < 0;
    /* Duplicates inside one push would be counted twice above: that only
     * over-estimates, so the check stays safe. */
    if (s->n_touched + fresh > s->max_touched)
        return af_errorf(AF_ERR_PROTO, "push of %lld rows would touch %lld rows this step, more than the %lld the "
                         "sampling allows", (long long)n, (long long)(s->n_touched + fresh), (long long)s->max_touched);
    return AF_OK;
}

af_status af_ps_shard_accumulate(af_ps_shard *s, const int64_t *ids, int64_t n, const float *grads)
{
    af_status st = af_ps_shard_check_push(s, ids, n);
    if (st) return st;
    if (s->direct) {
        for (int64_t i = 0; i < n; i++) {
            s->slot[ids[i] - s->start] = 0;
            stash_row(s, ids[i] - s->start, grads + (size_t)i * s->D);
        }
        s->n_touched += n;
        return AF_OK;
    }
    const int D = s->D;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = ids[i] - s->start;
        float *a;
        if (s->slot[r] < 0) {
            s->slot[r] = (int32_t)s->n_touched;
            s->touched[s->n_touched] = r;
            a = s->acc + (size_t)s->n_touched++ * D;
            memcpy(a, grads + (size_t)i * D, sizeof(float) * D);
        } else {
            a = s->acc + (size_t)s->slot[r] * D;
            const float *g = grads + (size_t)i * D;
            for (int k = 0; k < D; k++) a[k] += g[k];
        }
    }
    return AF_OK;
}

static void sgd_row(float *w, float *v, const float *g, int D, float lr, float mu, float wd)
{
    for (int k = 0; k < D; k++) {
        float d = (g ? g[k] : 0.0f) + wd * w[k];
        v[k] = mu * v[k] + d;
        w[k] -= lr * v[k];
    }
}

/* Lazy (sparse) AdamW's step size for the step the shard is about to take:
 * torch.optim.SparseAdam's lr * sqrt(bc2) / bc1, in double as torch computes
 * it from Python floats. The bias correction counts optimizer steps (adam_t,
 * SparseAdam's state['step'] for the one fc Parameter), not the steps a row
 * was sampled in: a row back after a gap is corrected like every other row. */
static float lazy_adamw_step_size(const af_ps_shard *s, float lr)
{
    double bc1 = 1.0 - pow(ADAM_BETA1, (double)s->adam_t), bc2 = 1.0 - pow(ADAM_BETA2, (double)s->adam_t);
    return (float)(lr * sqrt(bc2) / bc1);
}

/* The weight part of lazy AdamW for one touched row whose moments are already
 * updated: AdamW's decoupled decay first (as torch.optim.AdamW orders it), then
 * SparseAdam's step, eps added to sqrt(v) before the bias correction. */
static void lazy_adamw_row(float *w, const float *m, const float *v, int D, float decay, float step_size, float eps)
{
    for (int k = 0; k < D; k++) {
        w[k] *= decay;
        w[k] -= step_size * (m[k] / (sqrtf(v[k]) + eps));
    }
}

/* Direct mode's optimizer step: rows nobody pushed get their zero-gradient
 * stash (dense mode only), then the learning-rate part for the rows that move. */
static void apply_direct(af_ps_shard *s, float lr)
{
    const int D = s->D;
    const int dense = s->mode == AF_FC_DENSE;
    float step = lr, sbc2 = 1;
    if (s->adamw) {
        s->adam_t++;
        double bc1 = 1.0 - pow(ADAM_BETA1, (double)s->adam_t), bc2 = 1.0 - pow(ADAM_BETA2, (double)s->adam_t);
        step = dense ? (float)(lr / bc1) : lazy_adamw_step_size(s, lr);
        sbc2 = (float)sqrt(bc2);
    }
    for (int64_t r = 0; r < s->count; r++) {
        int touched = s->slot[r] >= 0;
        if (!touched && !dense) continue;
        if (!touched) stash_row(s, r, NULL);
        s->slot[r] = -1;
        float *w = s->w + (size_t)r * D, *m = s->mom + (size_t)r * D;
        if (s->adamw && !dense) {
            lazy_adamw_row(w, m, s->mom2 + (size_t)r * D, D, 1.0f - lr * s->weight_decay, step, s->eps);
        } else if (s->adamw) {
            const float *v = s->mom2 + (size_t)r * D;
            for (int k = 0; k < D; k++) {
                w[k] *= 1.0f - lr * s->weight_decay;
                w[k] -= step * m[k] / (sqrtf(v[k]) / sbc2 + s->eps);
            }
        } else {
            for (int k = 0; k < D; k++) w[k] -= lr * m[k];
        }
    }
    s->n_touched = 0;
}

void af_ps_shard_apply(af_ps_shard *s, float lr)
{
    const int D = s->D;
    if (s->direct) {
        apply_direct(s, lr);
        return;
    }
    if (s->adamw && s->mode == AF_FC_SPARSE) {
        s->adam_t++;
        const float step_size = lazy_adamw_step_size(s, lr), decay = 1.0f - lr * s->weight_decay;
        for (int64_t i = 0; i < s->n_touched; i++) {
            int64_t r = s->touched[i];
            stash_row(s, r, s->acc + (size_t)i * D);
            lazy_adamw_row(s->w + (size_t)r * D, s->mom + (size_t)r * D, s->mom2 + (size_t)r * D, D, decay,
                           step_size, s->eps);
        }
    } else if (s->adamw) {
        /* torch.optim.AdamW: decoupled decay, bias-corrected moments. */
        s->adam_t++;
        double bc1 = 1.0 - pow(ADAM_BETA1, (double)s->adam_t), bc2 = 1.0 - pow(ADAM_BETA2, (double)s->adam_t);
        float step = (float)(lr / bc1), sbc2 = (float)sqrt(bc2);
        for (int64_t r = 0; r < s->count; r++) {
            float *w = s->w + (size_t)r * D, *m = s->mom + (size_t)r * D, *v = s->mom2 + (size_t)r * D;
            const float *g = s->slot[r] >= 0 ? s->acc + (size_t)s->slot[r] * D : NULL;
            for (int k = 0; k < D; k++) {
                float gk = g ? g[k] : 0.0f;
                w[k] *= 1.0f - lr * s->weight_decay;
                m[k] = s->beta1 * m[k] + s->one_minus_beta1 * gk;
                v[k] = s->beta2 * v[k] + s->one_minus_beta2 * gk * gk;
                w[k] -= step * m[k] / (sqrtf(v[k]) / sbc2 + s->eps);
            }
        }
    } else if (s->mode == AF_FC_DENSE) {
        for (int64_t r = 0; r < s->count; r++) {
            const float *g = s->slot[r] >= 0 ? s->acc + (size_t)s->slot[r] * D : NULL;
            sgd_row(s->w + (size_t)r * D, s->mom + (size_t)r * D, g, D, lr, s->momentum, s->weight_decay);
        }
    } else {
        for (int64_t i = 0; i < s->n_touched; i++) {
            int64_t r = s->touched[i];
            sgd_row(s->w + (size_t)r * D, s->mom + (size_t)r * D, s->acc + (size_t)i * D, D, lr, s->momentum,
                    s->weight_decay);
        }
    }
    for (int64_t i = 0; i < s->n_touched; i++) s->slot[s->touched[i]] = -1;
    s->n_touched = 0;
}

af_status af_ps_shard_register_state(af_ps_shard *s, int64_t num_classes, af_state *reg)
{
    af_status st;
    if ((st = af_state_add_rows(reg, "fc shard", "/fc/weight", s->w, num_classes, s->D, s->start, s->count)) ||
        (st = af_state_add_rows(reg, "fc optimizer", "/fc/momentum", s->mom, num_classes, s->D, s->start, s->count)))
        return st;
    if (s->adamw &&
        (st = af_state_add_rows(reg, "fc optimizer", "/fc/exp_avg_sq", s->mom2, num_classes, s->D, s->start, s->count)))
        return st;
    /* Every shard steps once per optimizer step, so all servers hold the same count. */
    return af_state_add_scalar(reg, "fc optimizer", "fc_adam_t", &s->adam_t);
}

size_t af_ps_shard_state_bytes(const af_ps_shard *s)
{
    return sizeof(float) * (size_t)s->count * s->D * (s->adamw ? 3 : 2);
}

size_t af_ps_shard_total_bytes(const af_ps_shard *s)
{
    return af_ps_shard_state_bytes(s) + sizeof(int32_t) * (size_t)s->count +
           (s->direct ? 0 : (sizeof(float) * s->D + sizeof(int64_t)) * (size_t)s->max_touched);
}
