/* Test helper for torch_compare.py: builds a backbone, perturbs its weights
 * and statistics away from the initial values (so that every parameter
 * matters), writes them under /backbone together with a random input and
 * output gradient, runs one training step (forward, backward) and one eval
 * forward, and writes what it computed under /out for PyTorch to check.
 *
 * usage: nn_torch_dump --arch A --batch B --out FILE.h5 [--embedding D]
 *                      [--threads T] [--seed S] [--hw N] [--precision fp32|bf16]
 * --hw runs a square input smaller than the architecture's own, so that a
 * deep network (r200) gets a full gradient check at a small cost.
 * With --precision bf16 it exits 77 (a ctest skip) where the CPU has no
 * AVX512_BF16. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/backbone.h"
#include "arcface/h5io.h"
#include "arcface/rng.h"
#include "net.h" /* private: to export the PReLU branch decisions */

static int fail(const char *what)
{
    fprintf(stderr, "nn_torch_dump: %s: %s\n", what, af_errmsg());
    return 1;
}

int main(int argc, char **argv)
{
    af_backbone_config cfg = {.arch = "fmnist", .max_batch = 4, .nthreads = 2, .seed = 1};
    const char *out = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--arch")) cfg.arch = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) cfg.max_batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--embedding")) cfg.embedding = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) cfg.nthreads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) cfg.seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--hw")) cfg.in_h = cfg.in_w = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--precision") && !strcmp(argv[i + 1], "bf16")) cfg.precision = AF_PRECISION_BF16;
        else if (!strcmp(argv[i], "--precision") && !strcmp(argv[i + 1], "fp32")) cfg.precision = AF_PRECISION_FP32;
        else {
            fprintf(stderr, "nn_torch_dump: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "usage: nn_torch_dump --arch A --batch B --out FILE.h5\n");
        return 2;
    }
    if (af_precision_effective(cfg.precision) != cfg.precision) {
        printf("SKIP: no AVX512_BF16 on this CPU (%s)\n", af_cpu_kernels_describe(cfg.precision));
        return 77;
    }
    af_backbone m;
    if (af_backbone_init(&m, &cfg)) return fail("init");
    const int B = cfg.max_batch, D = m.cfg.embedding;
    af_rng r;
    af_rng_seed(&r, cfg.seed, AF_RNG_STREAM_TEST, 1, 0);
    for (size_t i = 0; i < m.n_tensors; i++) {
        const af_backbone_tensor *e = &m.tensors[i];
        if (e->kind == AF_TENSOR_KIND_COUNT) {
            m.counts[e->offset] = 7;
            continue;
        }
        float *p = (e->kind == AF_TENSOR_KIND_BUFFER ? m.buffers : m.params) + e->offset;
        const char *suffix = strrchr(e->key, '.') + 1;
        for (size_t j = 0; j < e->numel; j++) {
            if (!strcmp(suffix, "running_mean")) p[j] = 0.1f * af_rng_normal(&r);
            else if (!strcmp(suffix, "running_var")) p[j] = 0.5f + af_rng_uniform(&r);
            else if (!strcmp(suffix, "bias")) p[j] = 0.1f * af_rng_normal(&r);
            else if (e->ndim == 1) p[j] = 0.8f + 0.2f * af_rng_normal(&r); /* BN gamma, PReLU slope */
        }
    }
    hid_t f;
    if (af_h5_create(out, &f)) return fail("create");
    if (af_backbone_save(&m, f, out, NULL)) return fail("save");
    /* the table's order, which should be PyTorch's state_dict order */
    size_t klen = 1;
    for (size_t i = 0; i < m.n_tensors; i++) klen += strlen(m.tensors[i].key) + 1;
    char *keys = calloc(klen, 1);
    for (size_t i = 0; i < m.n_tensors; i++) strcat(strcat(keys, m.tensors[i].key), "\n");
    if (af_h5_attr_set_str(f, "state_dict_order", keys)) return fail("write key order");
    free(keys);
    const size_t nx = (size_t)B * m.cfg.in_c * m.cfg.in_h * m.cfg.in_w;
    float *x = malloc(nx * sizeof(float)), *demb = malloc((size_t)B * D * sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = af_rng_normal(&r);
    for (size_t i = 0; i < (size_t)B * D; i++) demb[i] = af_rng_normal(&r);
    hsize_t dx[4] = {B, m.cfg.in_c, m.cfg.in_h, m.cfg.in_w}, de[2] = {B, D};
    if (af_h5_write(f, out, "x", AF_H5_F32, 4, dx, x) || af_h5_write(f, out, "demb", AF_H5_F32, 2, de, demb))
        return fail("write inputs");
    const float *emb;
    af_backbone_zero_grad(&m);
    if (af_backbone_forward(&m, x, B, 1, NULL, &emb)) return fail("forward (train)");
    if (af_h5_write(f, out, "out/emb_train", AF_H5_F32, 2, de, emb)) return fail("write");
    for (int i = 0; i < m.net->n_ops; i++) {
        const net_op *op = &m.net->ops[i];
        if (op->kind != NET_OP_BN || !op->bn.prelu) continue;
        const net_tensor *t = &m.net->t[op->in];
        const int C = t->c, HW = t->h * t->w;
        const float *xin = m.net->arena + t->act, *save = m.net->save + op->save;
        const float *gamma = m.params + m.tensors[op->t_w].offset, *beta = m.params + m.tensors[op->t_b].offset;
        unsigned char *mask = malloc((size_t)B * C * HW);
        for (int c = 0; c < C; c++) {
            /* the same float expression as af_batchnorm_forward */
            const float scale = gamma[c] * save[C + c], shift = beta[c] - save[c] * scale;
            for (int b = 0; b < B; b++)
                for (int s = 0; s < HW; s++) {
                    float u = xin[((size_t)c * B + b) * HW + s] * scale + shift;
                    mask[((size_t)b * C + c) * HW + s] = u > 0.0f;
                }
        }
        char key[AF_BACKBONE_KEY_MAX + 32];
        snprintf(key, sizeof key, "out/prelu_positive/%s", m.tensors[op->t_alpha].key);
        *strrchr(key, '.') = 0; /* the module, without ".weight" */
        hsize_t dm[4] = {B, C, t->h, t->w};
        if (af_h5_write(f, out, key, AF_H5_U8, 4, dm, mask)) return fail("write");
        free(mask);
    }
    if (af_backbone_backward(&m, demb, NULL)) return fail("backward");
    char name[256];
    for (size_t i = 0; i < m.n_tensors; i++) {
        const af_backbone_tensor *e = &m.tensors[i];
        hsize_t d[4];
        for (int k = 0; k < e->ndim; k++) d[k] = (hsize_t)e->shape[k];
        af_status st = AF_OK;
        if (e->kind == AF_TENSOR_KIND_PARAM) {
            snprintf(name, sizeof name, "out/grad/%s", e->key);
            st = af_h5_write(f, out, name, AF_H5_F32, e->ndim, d, m.grads + e->offset);
        } else if (e->kind == AF_TENSOR_KIND_BUFFER) {
            snprintf(name, sizeof name, "out/after/%s", e->key);
            st = af_h5_write(f, out, name, AF_H5_F32, e->ndim, d, m.buffers + e->offset);
        } else if (e->kind == AF_TENSOR_KIND_COUNT) {
            snprintf(name, sizeof name, "out/after/%s", e->key);
            st = af_h5_write(f, out, name, AF_H5_I64, 0, d, m.counts + e->offset);
        }
        if (st) return fail("write");
    }
    if (af_backbone_forward(&m, x, B, 0, NULL, &emb)) return fail("forward (eval)");
    if (af_h5_write(f, out, "out/emb_eval", AF_H5_F32, 2, de, emb)) return fail("write");
    H5Fclose(f);
    free(x);
    free(demb);
    af_backbone_free(&m);
    return 0;
}
