/* The backbone as a table of layers: building it (state_dict entries,
 * parameter layout, gradient-buffer plan, the one workspace) and running it
 * forward and backward. The architectures themselves are in arch.c,
 * initialisation and HDF5 in backbone_io.c.
 *
 * Gradient buffers. Every activation is kept for the backward pass, but an
 * activation's gradient is only alive from the backward of its last consumer
 * to the backward of its producer. The build walks the table backwards once
 * and gives each gradient one of a few shared buffers ("slots"), so a whole
 * iResNet needs three or four activation-sized gradient buffers, not one per
 * layer. The consumer whose backward runs first overwrites the buffer, later
 * ones add, so no buffer is ever cleared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/backbone.h"
#include "net.h"
#include "nn_internal.h"

/* ---- building ------------------------------------------------------------ */

static int grow(void **p, int *cap, int need, size_t elem, af_backbone *m)
{
    if (need <= *cap) return 1;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) {
        m->net->st = af_errorf(AF_ERR_NOMEM, "out of memory building the %s layer table", m->arch);
        return 0;
    }
    *p = q;
    *cap = nc;
    return 1;
}

static int new_tensor(af_backbone *m, int c, int h, int w)
{
    struct af_net *n = m->net;
    if (!grow((void **)&n->t, &n->cap_t, n->n_t + 1, sizeof(net_tensor), m)) return -1;
    n->t[n->n_t] = (net_tensor){.c = c, .h = h, .w = w, .act = n->arena_floats, .slot = -1};
    n->arena_floats += nn_align((size_t)c * h * w * n->max_batch);
    return n->n_t++;
}

static net_op *new_op(af_backbone *m, net_op_kind kind, int in)
{
    struct af_net *n = m->net;
    if (n->st) return NULL;
    if (in < 0 || in >= n->n_t) {
        n->st = af_errorf(AF_ERR_ARG, "%s: layer %d has no valid input", m->arch, n->n_ops);
        return NULL;
    }
    if (!grow((void **)&n->ops, &n->cap_ops, n->n_ops + 1, sizeof(net_op), m)) return NULL;
    net_op *op = &n->ops[n->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in = in;
    op->res = op->out = -1;
    op->t_w = op->t_b = op->t_alpha = op->t_rm = op->t_rv = op->t_nbt = -1;
    return op;
}

/* Appends a state_dict entry; returns its id. */
static int new_entry(af_backbone *m, const char *prefix, const char *suffix, af_tensor_kind kind, int ndim,
                     const int64_t *shape, net_init init)
{
    struct af_net *n = m->net;
    if (n->st) return -1;
    if (m->n_tensors + 1 > n->cap_entries) {
        size_t nc = n->cap_entries ? n->cap_entries * 2 : 128;
        af_backbone_tensor *t = realloc(m->tensors, nc * sizeof *t);
        if (t) m->tensors = t;
        net_init *ni = realloc(n->init, nc * sizeof *ni);
        if (ni) n->init = ni;
        if (!t || !ni) {
            n->st = af_errorf(AF_ERR_NOMEM, "out of memory building the %s tensor table", m->arch);
            return -1;
        }
        n->cap_entries = nc;
    }
    af_backbone_tensor *e = &m->tensors[m->n_tensors];
    memset(e, 0, sizeof *e);
    int len = snprintf(e->key, sizeof e->key, "%s.%s", prefix, suffix);
    if (len < 0 || (size_t)len >= sizeof e->key) {
        n->st = af_errorf(AF_ERR_ARG, "%s: state_dict key '%s.%s' is too long", m->arch, prefix, suffix);
        return -1;
    }
    e->kind = kind;
    e->ndim = ndim;
    e->numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        e->numel *= (size_t)shape[i];
    }
    switch (kind) {
    case AF_TENSOR_KIND_PARAM: e->offset = m->n_trainable; m->n_trainable += e->numel; break;
    case AF_TENSOR_KIND_FIXED: e->offset = n->n_fixed; n->n_fixed += e->numel; break; /* moved after build */
    case AF_TENSOR_KIND_BUFFER: e->offset = m->n_buffers; m->n_buffers += e->numel; break;
    case AF_TENSOR_KIND_COUNT: e->offset = m->n_counts; m->n_counts += 1; break;
    }
    n->init[m->n_tensors] = init;
    return (int)m->n_tensors++;
}

static const net_init INIT_ZERO = {NET_INIT_CONST, 0.0f}, INIT_ONE = {NET_INIT_CONST, 1.0f};

int net_input(af_backbone *m, int c, int h, int w)
{
    int id = new_tensor(m, c, h, w);
    m->net->in_tensor = id;
    return id;
}

int net_conv(af_backbone *m, const char *key, int in, int cout, int kh, int kw, int stride, int pad, int groups,
             int bias, net_init winit)
{
    net_op *op = new_op(m, NET_OP_CONV, in);
    if (!op) return -1;
    struct af_net *n = m->net;
    const net_tensor *x = &n->t[in];
    af_status st = af_conv2d_init(&op->conv, x->c, cout, x->h, x->w, kh, kw, stride, stride, pad, pad, groups);
    if (st) {
        n->st = af_error_wrap(st, "%s: layer '%s'", m->arch, key);
        return -1;
    }
    if (m->cfg.no_winograd && op->conv.algo == AF_CONV2D_ALGO_WINOGRAD) op->conv.algo = AF_CONV2D_ALGO_IM2COL;
    op->conv.prec = m->precision;
    int64_t ws[4] = {cout, x->c / groups, kh, kw}, bs[1] = {cout};
    op->t_w = new_entry(m, key, "weight", AF_TENSOR_KIND_PARAM, 4, ws, winit);
    if (bias) op->t_b = new_entry(m, key, "bias", AF_TENSOR_KIND_PARAM, 1, bs, INIT_ZERO);
    n->macs += af_conv2d_macs(&op->conv);
    size_t need = af_conv2d_workspace(&op->conv, n->max_batch, n->nthreads);
    if (need > n->conv_ws_floats) n->conv_ws_floats = need;
    int out = new_tensor(m, cout, op->conv.oh, op->conv.ow);
    n->ops[n->n_ops - 1].out = out; /* new_tensor may not move ops, but be explicit */
    return n->st ? -1 : out;
}

int net_bn(af_backbone *m, const char *key, const char *prelu_key, int in, int res, int fixed_weight)
{
    net_op *op = new_op(m, NET_OP_BN, in);
    if (!op) return -1;
    struct af_net *n = m->net;
    const net_tensor *x = &n->t[in];
    if (res >= 0 && (n->t[res].c != x->c || n->t[res].h != x->h || n->t[res].w != x->w)) {
        n->st = af_errorf(AF_ERR_ARG, "%s: residual of '%s' has shape (%d,%d,%d), expected (%d,%d,%d)", m->arch, key,
                          n->t[res].c, n->t[res].h, n->t[res].w, x->c, x->h, x->w);
        return -1;
    }
    op->bn = (af_batchnorm){.c = x->c, .hw = x->h * x->w, .eps = 1e-5f, .momentum = 0.1f,
                            .prelu = prelu_key != NULL, .residual = res >= 0};
    op->res = res;
    int64_t cs[1] = {x->c};
    op->t_w = new_entry(m, key, "weight", fixed_weight ? AF_TENSOR_KIND_FIXED : AF_TENSOR_KIND_PARAM, 1, cs, INIT_ONE);
    op->t_b = new_entry(m, key, "bias", AF_TENSOR_KIND_PARAM, 1, cs, INIT_ZERO);
    op->t_rm = new_entry(m, key, "running_mean", AF_TENSOR_KIND_BUFFER, 1, cs, INIT_ZERO);
    op->t_rv = new_entry(m, key, "running_var", AF_TENSOR_KIND_BUFFER, 1, cs, INIT_ONE);
    op->t_nbt = new_entry(m, key, "num_batches_tracked", AF_TENSOR_KIND_COUNT, 0, cs, INIT_ZERO);
    if (prelu_key) op->t_alpha = new_entry(m, prelu_key, "weight", AF_TENSOR_KIND_PARAM, 1, cs,
                                           (net_init){NET_INIT_CONST, 0.25f});
    op->save = n->save_floats;
    n->save_floats += nn_align(2 * (size_t)x->c);
    if (2 * (size_t)x->c > n->acc_doubles) n->acc_doubles = 2 * (size_t)x->c;
    int c = x->c, h = x->h, w = x->w;
    int out = new_tensor(m, c, h, w);
    n->ops[n->n_ops - 1].out = out;
    return n->st ? -1 : out;
}

int net_flatten(af_backbone *m, int in)
{
    net_op *op = new_op(m, NET_OP_FLATTEN, in);
    if (!op) return -1;
    const net_tensor *x = &m->net->t[in];
    int f = x->c * x->h * x->w;
    int out = new_tensor(m, f, 1, 1);
    m->net->ops[m->net->n_ops - 1].out = out;
    return out;
}

int net_dropout(af_backbone *m, int in, float p)
{
    net_op *op = new_op(m, NET_OP_DROPOUT, in);
    if (!op) return -1;
    struct af_net *n = m->net;
    op->p = p;
    for (int i = 0; i < n->n_ops - 1; i++) op->salt += n->ops[i].kind == NET_OP_DROPOUT;
    const net_tensor *x = &n->t[in];
    int out = new_tensor(m, x->c, x->h, x->w);
    n->ops[n->n_ops - 1].out = out;
    return out;
}

int net_linear(af_backbone *m, const char *key, int in, int fout, int bias, net_init winit, net_init binit)
{
    net_op *op = new_op(m, NET_OP_LINEAR, in);
    if (!op) return -1;
    struct af_net *n = m->net;
    const net_tensor *x = &n->t[in];
    if (x->h != 1 || x->w != 1) {
        n->st = af_errorf(AF_ERR_ARG, "%s: linear layer '%s' needs a flattened input", m->arch, key);
        return -1;
    }
    op->fin = x->c;
    op->fout = fout;
    int64_t ws[2] = {fout, x->c}, bs[1] = {fout};
    op->t_w = new_entry(m, key, "weight", AF_TENSOR_KIND_PARAM, 2, ws, winit);
    if (bias) op->t_b = new_entry(m, key, "bias", AF_TENSOR_KIND_PARAM, 1, bs, binit);
    n->macs += (double)x->c * fout;
    int out = new_tensor(m, fout, 1, 1);
    n->ops[n->n_ops - 1].out = out;
    return n->st ? -1 : out;
}

/* Trainable range of an op; parameters are laid out in op order. */
static void op_param_range(const af_backbone *m, net_op *op)
{
    const int ids[3] = {op->t_w, op->t_b, op->t_alpha};
    op->pbegin = SIZE_MAX;
    op->pend = 0;
    for (int i = 0; i < 3; i++) {
        if (ids[i] < 0) continue;
        const af_backbone_tensor *e = &m->tensors[ids[i]];
        if (e->kind != AF_TENSOR_KIND_PARAM) continue;
        if (e->offset < op->pbegin) op->pbegin = e->offset;
        if (e->offset + e->numel > op->pend) op->pend = e->offset + e->numel;
    }
    if (op->pbegin == SIZE_MAX) op->pbegin = op->pend = 0;
}

/* Plans the gradient slots (see the file comment). */
static af_status plan_slots(af_backbone *m)
{
    struct af_net *n = m->net;
    int busy[NET_MAX_SLOTS] = {0};
    size_t need[NET_MAX_SLOTS] = {0};
    n->n_slots = 0;
#define TAKE_SLOT(tid)                                                                                     \
    do {                                                                                                   \
        int s_ = 0;                                                                                        \
        while (s_ < n->n_slots && busy[s_]) s_++;                                                          \
        if (s_ == NET_MAX_SLOTS) return af_errorf(AF_ERR_ARG, "%s: more than %d gradient buffers needed",  \
                                                  m->arch, NET_MAX_SLOTS);                                 \
        if (s_ == n->n_slots) n->n_slots++;                                                                \
        busy[s_] = 1;                                                                                      \
        n->t[tid].slot = s_;                                                                               \
        size_t sz_ = (size_t)n->t[tid].c * n->t[tid].h * n->t[tid].w * n->max_batch;                       \
        if (sz_ > need[s_]) need[s_] = sz_;                                                                \
    } while (0)
    TAKE_SLOT(n->out_tensor);
    for (int i = n->n_ops - 1; i >= 0; i--) {
        net_op *op = &n->ops[i];
        int ins[2] = {op->in, op->res};
        for (int k = 0; k < 2; k++) {
            int u = ins[k];
            if (u < 0 || u == n->in_tensor) continue;
            int *accum = k == 0 ? &op->in_accum : &op->res_accum;
            if (n->t[u].slot >= 0) *accum = 1;
            else {
                TAKE_SLOT(u);
                *accum = 0;
            }
        }
        if (n->t[op->out].slot >= 0) busy[n->t[op->out].slot] = 0;
    }
#undef TAKE_SLOT
    for (int s = 0; s < n->n_slots; s++) n->slot_floats[s] = nn_align(need[s]);
    return AF_OK;
}

static af_status finalize(af_backbone *m)
{
    struct af_net *n = m->net;
    n->out_tensor = n->n_t - 1;
    const net_tensor *o = &n->t[n->out_tensor];
    if (o->h != 1 || o->w != 1 || o->c != m->cfg.embedding)
        return af_errorf(AF_ERR_ARG, "%s: network output is (%d,%d,%d), expected an embedding of %d", m->arch, o->c,
                         o->h, o->w, m->cfg.embedding);
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].kind == AF_TENSOR_KIND_FIXED) m->tensors[i].offset += m->n_trainable;
    m->n_params = m->n_trainable + n->n_fixed;
    for (int i = 0; i < n->n_ops; i++) op_param_range(m, &n->ops[i]);
    af_status st = plan_slots(m);
    if (st) return st;
    m->params = af_calloc(m->n_params, sizeof(float), "backbone parameters");
    m->grads = af_calloc(m->n_trainable, sizeof(float), "backbone gradients");
    m->buffers = af_calloc(m->n_buffers, sizeof(float), "backbone running statistics");
    m->counts = af_calloc(m->n_counts, sizeof(int64_t), "backbone batch counters");
    if (!m->params || !m->grads || !m->buffers || !m->counts) return AF_ERR_NOMEM;
    /* one workspace: activations, gradient slots, BN saves, conv scratch, embeddings, BN sums */
    size_t emb = nn_align((size_t)m->cfg.embedding * n->max_batch);
    size_t floats = n->arena_floats + n->save_floats + nn_align(n->conv_ws_floats) + emb;
    for (int s = 0; s < n->n_slots; s++) floats += n->slot_floats[s];
    size_t bytes = floats * sizeof(float) + nn_align(n->acc_doubles) * sizeof(double);
    n->ws = aligned_alloc(64, bytes);
    if (!n->ws)
        return af_errorf(AF_ERR_NOMEM, "%s: out of memory allocating the %.1f MiB workspace for batch %d", m->arch,
                         bytes / 1048576.0, n->max_batch);
    m->workspace_bytes = bytes;
    if (m->cfg.profile && !(n->prof = af_calloc(2 * (size_t)n->n_ops, sizeof(double), "layer profile")))
        return AF_ERR_NOMEM;
    float *p = n->ws;
    n->arena = p; p += n->arena_floats;
    for (int s = 0; s < n->n_slots; s++) { n->slot[s] = p; p += n->slot_floats[s]; }
    n->save = p; p += n->save_floats;
    n->conv_ws = p; p += nn_align(n->conv_ws_floats);
    n->emb = p; p += emb;
    n->acc = (double *)p;
    return AF_OK;
}

af_status af_backbone_init(af_backbone *m, const af_backbone_config *cfg)
{
    memset(m, 0, sizeof *m);
    if (!cfg || !cfg->arch) return af_errorf(AF_ERR_ARG, "backbone: no architecture given");
    m->cfg = *cfg;
    snprintf(m->arch, sizeof m->arch, "%s", cfg->arch);
    m->cfg.arch = m->arch;
    int small = strcmp(cfg->arch, "fmnist") == 0;
    if (!m->cfg.in_c) m->cfg.in_c = small ? 1 : 3;
    if (!m->cfg.in_h) m->cfg.in_h = small ? 28 : 112;
    if (!m->cfg.in_w) m->cfg.in_w = small ? 28 : 112;
    if (!m->cfg.embedding) m->cfg.embedding = 512;
    if (!m->cfg.nthreads) m->cfg.nthreads = nn_default_threads();
    if (m->cfg.max_batch < 1 || m->cfg.in_c < 1 || m->cfg.in_h < 1 || m->cfg.in_w < 1 || m->cfg.embedding < 1 ||
        m->cfg.nthreads < 1)
        return af_errorf(AF_ERR_ARG, "backbone %s: invalid configuration (input %dx%dx%d, embedding %d, max batch %d, "
                         "%d threads)", m->arch, m->cfg.in_c, m->cfg.in_h, m->cfg.in_w, m->cfg.embedding,
                         m->cfg.max_batch, m->cfg.nthreads);
    if (!(m->cfg.dropout >= 0.0f && m->cfg.dropout < 1.0f))
        return af_errorf(AF_ERR_ARG, "backbone %s: dropout %g outside [0, 1)", m->arch, m->cfg.dropout);
    m->net = calloc(1, sizeof *m->net);
    if (!m->net) return af_errorf(AF_ERR_NOMEM, "out of memory building backbone %s", m->arch);
    m->net->nthreads = m->cfg.nthreads;
    m->precision = af_precision_effective(m->cfg.precision);
    m->net->max_batch = m->cfg.max_batch;
    af_status st = net_build_arch(m);
    if (!st) st = m->net->st;
    if (!st) st = finalize(m);
    if (st) {
        af_backbone_free(m);
        return st;
    }
    af_backbone_init_weights(m, m->cfg.seed);
    return AF_OK;
}

void af_backbone_free(af_backbone *m)
{
    if (m->net) {
        free(m->net->ops);
        free(m->net->t);
        free(m->net->init);
        free(m->net->ws);
        free(m->net->prof);
        free(m->net);
    }
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->counts);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

double af_backbone_macs(const af_backbone *m) { return m->net->macs; }

const af_backbone_tensor *af_backbone_find(const af_backbone *m, const char *key)
{
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].key, key) == 0) return &m->tensors[i];
    return NULL;
}

void af_backbone_zero_grad(af_backbone *m) { memset(m->grads, 0, m->n_trainable * sizeof(float)); }

/* ---- running -------------------------------------------------------------- */

static float *P(af_backbone *m, int id) { return id < 0 ? NULL : m->params + m->tensors[id].offset; }
static float *G(af_backbone *m, int id)
{
    return id < 0 || m->tensors[id].kind != AF_TENSOR_KIND_PARAM ? NULL : m->grads + m->tensors[id].offset;
}
static float *A(struct af_net *n, int tid) { return n->arena + n->t[tid].act; }
static float *D(struct af_net *n, int tid) { return n->t[tid].slot < 0 ? NULL : n->slot[n->t[tid].slot]; }

static af_bn_params bn_params(af_backbone *m, const net_op *op)
{
    return (af_bn_params){
        .gamma = P(m, op->t_w),
        .beta = P(m, op->t_b),
        .alpha = P(m, op->t_alpha),
        .running_mean = m->buffers + m->tensors[op->t_rm].offset,
        .running_var = m->buffers + m->tensors[op->t_rv].offset,
        .num_batches_tracked = m->counts + m->tensors[op->t_nbt].offset,
    };
}

af_status af_backbone_forward(af_backbone *m, const float *x, int B, int train, const af_nn_ctx *ctx,
                              const float **emb)
{
    struct af_net *n = m->net;
    const int T = n->nthreads;
    if (B < 1 || B > n->max_batch)
        return af_errorf(AF_ERR_ARG, "backbone %s: batch %d outside [1, %d] (the max_batch it was built for)", m->arch,
                         B, n->max_batch);
    if (train && ctx && ctx->global_batch > 0 && ctx->global_batch < B)
        return af_errorf(AF_ERR_ARG, "backbone %s: global batch %lld smaller than the local batch %d", m->arch,
                         (long long)ctx->global_batch, B);
    n->last_train = 0;
    /* NCHW -> CNHW */
    const net_tensor *in = &n->t[n->in_tensor];
    const size_t hw = (size_t)in->h * in->w;
    float *xa = A(n, n->in_tensor);
    for (int c = 0; c < in->c; c++)
        for (int b = 0; b < B; b++)
            memcpy(xa + ((size_t)c * B + b) * hw, x + ((size_t)b * in->c + c) * hw, hw * sizeof(float));
    for (int i = 0; i < n->n_ops; i++) {
        net_op *op = &n->ops[i];
        const net_tensor *ti = &n->t[op->in];
        af_status st = AF_OK;
        const double t0 = n->prof ? nn_wtime() : 0.0;
        switch (op->kind) {
        case NET_OP_CONV:
            af_conv2d_forward(&op->conv, B, A(n, op->in), P(m, op->t_w), P(m, op->t_b), A(n, op->out), n->conv_ws, T);
            break;
        case NET_OP_BN: {
            af_bn_params p = bn_params(m, op);
            st = af_batchnorm_forward(&op->bn, B, train, A(n, op->in), op->res >= 0 ? A(n, op->res) : NULL,
                                      A(n, op->out), &p, n->save + op->save, n->acc, ctx, T);
            break;
        }
        case NET_OP_FLATTEN: af_flatten_forward(ti->c, B, ti->h * ti->w, A(n, op->in), A(n, op->out), T); break;
        case NET_OP_DROPOUT:
            if (train) af_dropout_forward(ti->c, B, op->p, ctx, op->salt, A(n, op->in), A(n, op->out), T);
            else memcpy(A(n, op->out), A(n, op->in), sizeof(float) * (size_t)ti->c * B);
            break;
        case NET_OP_LINEAR:
            af_linear_forward_prec(m->precision, op->fin, op->fout, B, A(n, op->in), P(m, op->t_w), P(m, op->t_b),
                                   A(n, op->out), T);
            break;
        }
        if (st) return af_error_wrap(st, "backbone %s forward, layer %d", m->arch, i);
        if (n->prof) n->prof[i] += nn_wtime() - t0;
    }
    /* (D, B) -> (B, D) */
    const int Dm = m->cfg.embedding;
    const float *o = A(n, n->out_tensor);
    for (int d = 0; d < Dm; d++)
        for (int b = 0; b < B; b++) n->emb[(size_t)b * Dm + d] = o[(size_t)d * B + b];
    n->last_B = B;
    n->last_train = train != 0;
    *emb = n->emb;
    return AF_OK;
}

af_status af_backbone_backward(af_backbone *m, const float *demb, const af_nn_ctx *ctx)
{
    struct af_net *n = m->net;
    const int T = n->nthreads, B = n->last_B;
    if (!n->last_train)
        return af_errorf(AF_ERR_ARG, "backbone %s: backward needs a preceding training-mode forward", m->arch);
    const int Dm = m->cfg.embedding;
    float *dout = D(n, n->out_tensor);
    for (int d = 0; d < Dm; d++)
        for (int b = 0; b < B; b++) dout[(size_t)d * B + b] = demb[(size_t)b * Dm + d];
    size_t ready_end = m->n_trainable;
    for (int i = n->n_ops - 1; i >= 0; i--) {
        net_op *op = &n->ops[i];
        const net_tensor *ti = &n->t[op->in];
        float *dy = D(n, op->out), *dx = D(n, op->in);
        af_status st = AF_OK;
        const double t0 = n->prof ? nn_wtime() : 0.0;
        switch (op->kind) {
        case NET_OP_CONV:
            af_conv2d_backward(&op->conv, B, A(n, op->in), P(m, op->t_w), dy, dx, op->in_accum, G(m, op->t_w),
                               G(m, op->t_b), n->conv_ws, T);
            break;
        case NET_OP_BN: {
            af_bn_params p = bn_params(m, op);
            af_bn_grads g = {.dgamma = G(m, op->t_w), .dbeta = G(m, op->t_b), .dalpha = G(m, op->t_alpha)};
            st = af_batchnorm_backward(&op->bn, B, A(n, op->in), dy, dx, op->in_accum,
                                       op->res >= 0 ? D(n, op->res) : NULL, op->res_accum, &p, &g,
                                       n->save + op->save, n->acc, ctx, T);
            break;
        }
        case NET_OP_FLATTEN:
            if (dx) af_flatten_backward(ti->c, B, ti->h * ti->w, dy, dx, op->in_accum, T);
            break;
        case NET_OP_DROPOUT:
            if (dx) af_dropout_backward(ti->c, B, op->p, ctx, op->salt, dy, dx, op->in_accum, T);
            break;
        case NET_OP_LINEAR:
            af_linear_backward_prec(m->precision, op->fin, op->fout, B, A(n, op->in), P(m, op->t_w), dy, dx,
                                    op->in_accum, G(m, op->t_w), G(m, op->t_b), T);
            break;
        }
        if (st) return af_error_wrap(st, "backbone %s backward, layer %d", m->arch, i);
        if (n->prof) n->prof[n->n_ops + i] += nn_wtime() - t0;
        if (op->pend > op->pbegin) {
            if (ctx && ctx->grads_ready && op->pbegin < ready_end) ctx->grads_ready(ctx->user, op->pbegin, ready_end);
            if (op->pbegin < ready_end) ready_end = op->pbegin;
        }
    }
    if (ready_end > 0 && ctx && ctx->grads_ready) ctx->grads_ready(ctx->user, 0, ready_end);
    n->last_train = 0;
    return AF_OK;
}

void af_backbone_profile_print(af_backbone *m, FILE *f, int top)
{
    struct af_net *n = m->net;
    if (!n->prof) return;
    static const char *kinds[] = {"conv", "bn", "flatten", "dropout", "linear"};
    double total[2] = {0, 0};
    for (int i = 0; i < n->n_ops; i++) total[0] += n->prof[i], total[1] += n->prof[n->n_ops + i];
    fprintf(f, "%s: forward %.3f s, backward %.3f s; slowest layers:\n", m->arch, total[0], total[1]);
    /* repeatedly pick the largest remaining entry: top is small */
    char *used = calloc(2 * (size_t)n->n_ops, 1);
    for (int k = 0; used && k < top; k++) {
        int best = -1;
        for (int i = 0; i < 2 * n->n_ops; i++)
            if (!used[i] && (best < 0 || n->prof[i] > n->prof[best])) best = i;
        if (best < 0) break;
        used[best] = 1;
        const int i = best % n->n_ops, bwd = best >= n->n_ops;
        const net_op *op = &n->ops[i];
        const net_tensor *ti = &n->t[op->in], *to = &n->t[op->out];
        char what[128] = "";
        if (op->kind == NET_OP_CONV)
            snprintf(what, sizeof what, "%dx%d/%d g%d %s", op->conv.kh, op->conv.kw, op->conv.sh, op->conv.groups,
                     af_conv2d_algo_name(op->conv.algo));
        else if (op->kind == NET_OP_BN)
            snprintf(what, sizeof what, "%s%s", op->bn.prelu ? "+prelu" : "", op->bn.residual ? "+add" : "");
        fprintf(f, "  %-8s %3d %-7s (%d,%d,%d)->(%d,%d,%d) %-22s %7.3f s %5.1f%%  %s\n", bwd ? "backward" : "forward", i,
                kinds[op->kind], ti->c, ti->h, ti->w, to->c, to->h, to->w, what, n->prof[best],
                100.0 * n->prof[best] / (total[0] + total[1]), op->t_w >= 0 ? m->tensors[op->t_w].key : "");
    }
    free(used);
    memset(n->prof, 0, 2 * (size_t)n->n_ops * sizeof(double));
}
