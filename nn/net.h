/* Private: the layer table a backbone is built into, and the builder calls
 * the architecture descriptions (arch.c) use. */
#ifndef ARCFACE_NN_NET_H
#define ARCFACE_NN_NET_H

#include "arcface/backbone.h"
#include "arcface/nn.h"

typedef enum {
    NET_OP_CONV,
    NET_OP_BN,      /* batch norm, optionally with PReLU and/or a residual add fused in */
    NET_OP_FLATTEN, /* (c, B, h, w) -> (c*h*w, B) */
    NET_OP_DROPOUT,
    NET_OP_LINEAR,
} net_op_kind;

/* An activation: per-sample shape; the buffer holds (c, B, h, w). */
typedef struct {
    int c, h, w;
    size_t act;  /* offset of its values in the activation arena, floats */
    int slot;    /* gradient buffer during backward; -1 when no gradient flows */
} net_tensor;

typedef struct {
    net_op_kind kind;
    int in, res, out;         /* tensor ids; res (residual input of a BN) is -1 when unused */
    int in_accum, res_accum;  /* backward adds into d(in)/d(res): another consumer wrote it first */
    af_conv2d conv;
    af_batchnorm bn;
    int fin, fout;            /* linear */
    float p;                  /* dropout */
    uint64_t salt;            /* dropout: distinguishes several dropout layers */
    int t_w, t_b, t_alpha, t_rm, t_rv, t_nbt; /* state_dict entry ids, -1 when absent */
    size_t save;              /* BN: offset of its (2, c) mean and 1/std in the save area */
    size_t pbegin, pend;      /* trainable parameters this op owns: [pbegin, pend) */
} net_op;

typedef enum { NET_INIT_CONST, NET_INIT_NORMAL, NET_INIT_UNIFORM } net_init_kind;
typedef struct {
    net_init_kind kind;
    float a; /* the constant, the standard deviation, or the bound */
} net_init;

#define NET_MAX_SLOTS 16

struct af_net {
    af_status st;             /* first builder error */
    net_op *ops;
    int n_ops, cap_ops;
    net_tensor *t;
    int n_t, cap_t;
    net_init *init;           /* per state_dict entry */
    size_t cap_entries;
    size_t n_fixed;           /* fixed parameters, placed after the trainable ones */
    size_t save_floats, acc_doubles, conv_ws_floats, arena_floats;
    int in_tensor, out_tensor;
    int nthreads, max_batch;
    double macs;
    /* the one workspace */
    void *ws;
    float *arena, *save, *conv_ws, *emb;
    double *acc;
    float *slot[NET_MAX_SLOTS];
    size_t slot_floats[NET_MAX_SLOTS];
    int n_slots;
    double *prof;             /* (2, n_ops) seconds in forward and backward, when profiling */
    /* what backward needs to know about the last forward */
    int last_B, last_train;
};

/* Builder calls: each appends an op (and its state_dict entries) and returns
 * the output tensor id, or -1 after recording an error in m->net->st.
 * `key` is the module prefix ("layer1.0.conv1"); entries get ".weight" etc. */
int net_input(af_backbone *m, int c, int h, int w);
int net_conv(af_backbone *m, const char *key, int in, int cout, int kh, int kw, int stride, int pad, int groups,
             int bias, net_init winit);
/* prelu_key non-NULL fuses PReLU; res >= 0 fuses "+ res"; fixed_weight makes
 * the weight a non-trainable parameter (iResNet's features.weight). */
int net_bn(af_backbone *m, const char *key, const char *prelu_key, int in, int res, int fixed_weight);
int net_flatten(af_backbone *m, int in);
int net_dropout(af_backbone *m, int in, float p);
int net_linear(af_backbone *m, const char *key, int in, int fout, int bias, net_init winit, net_init binit);

/* Appends the layers of cfg->arch to an empty model. */
af_status net_build_arch(af_backbone *m);

#endif
