/* The face-recognition backbones of insightface's arcface_torch, in C:
 * iResNet r18/r34/r50/r100/r200, MobileFaceNet (mbf, mbf_large), and a small network for
 * 28x28 single-channel images (fmnist).
 *
 * A model is a table of layers built once for an architecture, an input
 * shape and a maximum batch. Its trainable parameters are one contiguous
 * float array (laid out in forward order, so backward finishes gradients
 * from the end of the array towards the start), their gradients one parallel
 * array, and the batch-norm running statistics a separate array. A table of
 * named tensors maps every PyTorch state_dict() key of the arcface_torch
 * module to its place, so a model moves to and from PyTorch by name.
 * All memory (activations, gradient buffers, scratch) is allocated when the
 * model is built; forward and backward allocate nothing.
 *
 * Distributed use: every worker builds the same model, loads or initialises
 * the same weights, and passes an af_nn_ctx (see nn.h) whose allreduce hook
 * sums batch-norm statistics over workers, so W workers with B/W rows each
 * compute what one process with B rows would. Parameter gradients are each
 * worker's own contribution; summing them over workers gives the gradient of
 * the global batch (the trainer's loss gradient must already carry the
 * global normalisation, e.g. 1/global_batch for a mean). */
#ifndef ARCFACE_BACKBONE_H
#define ARCFACE_BACKBONE_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arcface/nn.h"
#include "arcface/status.h"

#define AF_BACKBONE_KEY_MAX 96

typedef enum {
    AF_TENSOR_KIND_PARAM = 0, /* trainable: params[offset..], gradient at grads[offset..] */
    AF_TENSOR_KIND_FIXED,     /* a parameter PyTorch does not train (features.weight of iResNet): params[offset..] */
    AF_TENSOR_KIND_BUFFER,    /* running_mean / running_var: buffers[offset..] */
    AF_TENSOR_KIND_COUNT,     /* num_batches_tracked: counts[offset], an int64 scalar */
} af_tensor_kind;

/* One state_dict entry. */
typedef struct {
    char key[AF_BACKBONE_KEY_MAX]; /* e.g. "layer1.0.downsample.1.running_var" */
    af_tensor_kind kind;
    int ndim;                      /* 0 for num_batches_tracked */
    int64_t shape[4];
    size_t offset;                 /* into params, buffers or counts, by kind */
    size_t numel;
} af_backbone_tensor;

typedef struct {
    const char *arch;   /* "r18", "r34", "r50", "r100", "r200", "mbf", "mbf_large", "fmnist" */
    int in_c, in_h, in_w; /* 0 = the architecture's default (3x112x112; 1x28x28 for fmnist) */
    int embedding;      /* 0 = 512 */
    float dropout;      /* before the fc layer (iResNet, fmnist); 0 as arcface_torch's default */
    int max_batch;      /* largest B a forward call may pass (per worker) */
    int nthreads;       /* 0 = OpenMP's default */
    uint64_t seed;      /* weight initialisation */
    int profile;        /* accumulate per-layer times for af_backbone_profile_print */
    int no_winograd;    /* 3x3 stride-1 layers by im2col + sgemm instead of Winograd F(2x2,3x3)
                           (slower; for comparison and as a fallback) */
    af_precision precision; /* FP32 (default) or BF16 mixed precision: GEMM operands of convolutions and
                               linear layers in bfloat16, everything else float32 */
} af_backbone_config;

struct af_net;

typedef struct {
    af_backbone_config cfg;   /* with defaults filled in */
    char arch[16];
    float *params;            /* (n_params): trainable [0, n_trainable), then fixed */
    float *grads;             /* (n_trainable) */
    size_t n_params, n_trainable;
    float *buffers;           /* (n_buffers): running means and variances */
    size_t n_buffers;
    int64_t *counts;          /* (n_counts): num_batches_tracked of each batch norm */
    size_t n_counts;
    af_backbone_tensor *tensors; /* (n_tensors), in state_dict order */
    size_t n_tensors;
    size_t workspace_bytes;   /* activations, gradient buffers and scratch, allocated at build */
    af_precision precision;   /* what runs: cfg.precision, or FP32 where the CPU lacks AVX512_BF16 */
    struct af_net *net;
} af_backbone;

/* Builds the model and initialises its weights from cfg->seed as arcface_torch
 * does (iResNet convs N(0, 0.1); MobileFaceNet Kaiming normal, fan_out; batch
 * norm weight 1 and bias 0; PReLU 0.25; running mean 0, variance 1). On
 * failure *m is left freed. Equal on all ranks. */
af_status af_backbone_init(af_backbone *m, const af_backbone_config *cfg);
void af_backbone_free(af_backbone *m);
/* Re-initialises weights and buffers from a seed, deterministically. */
void af_backbone_init_weights(af_backbone *m, uint64_t seed);

/* Forward pass of B rows x (B, in_c, in_h, in_w), NCHW, already normalised.
 * train != 0 uses batch statistics (synchronised through ctx, which may be
 * NULL for one process), updates the running statistics and applies dropout;
 * train == 0 uses the running statistics. *emb receives a pointer to the
 * (B, embedding) raw embeddings, before L2 normalisation, valid until the
 * next forward. B is per rank; ctx fields as documented in nn.h. */
af_status af_backbone_forward(af_backbone *m, const float *x, int B, int train, const af_nn_ctx *ctx,
                              const float **emb);
/* Backward of the last (training-mode) forward: demb (B, embedding) is dL/demb
 * for this worker's rows. ADDS into m->grads, calling ctx->grads_ready as
 * ranges of it become final. ctx must be equivalent to the forward's. */
af_status af_backbone_backward(af_backbone *m, const float *demb, const af_nn_ctx *ctx);
void af_backbone_zero_grad(af_backbone *m);

/* With cfg.profile set: prints the layers taking the most time over all
 * passes so far (forward and backward separately), then clears the counts. */
void af_backbone_profile_print(af_backbone *m, FILE *f, int top);

/* Forward multiply-accumulates per sample (convolutions and linear layers). */
double af_backbone_macs(const af_backbone *m);

/* The entry for a state_dict key, or NULL. */
const af_backbone_tensor *af_backbone_find(const af_backbone *m, const char *key);

/* Writes every state_dict entry as a dataset `group`/key (group NULL means
 * "/backbone") of an open HDF5 file: float32 tensors with PyTorch's shapes,
 * num_batches_tracked as an int64 scalar. `path` names the file in messages.
 * Called by whichever rank writes the checkpoint. */
af_status af_backbone_save(const af_backbone *m, hid_t file, const char *path, const char *group);
/* Reads the model back. Fails, naming the first offending key, if a key is
 * missing, has the wrong shape or type, or if the group holds a key this
 * architecture does not have; on failure the model is unchanged. */
af_status af_backbone_load(af_backbone *m, hid_t file, const char *path, const char *group);
/* The same from a PyTorch state_dict saved with torch.save (zip format, see
 * torch_pt.h), with insightface's key names; keys may carry DDP's "module.". */
af_status af_backbone_load_pt(af_backbone *m, const char *path);
/* Writes the model as ONNX (opset 11, eval mode, as insightface's
 * torch2onnx.py): input "data" (N, in_c, in_h, in_w) with N free, output
 * "embedding" (N, embedding). Written to PATH.tmp, synced and renamed. */
af_status af_backbone_export_onnx(const af_backbone *m, const char *path);
/* A .pt (recognised by its zip signature) or an HDF5 file with /backbone. */
af_status af_backbone_load_file(af_backbone *m, const char *path);

#endif
