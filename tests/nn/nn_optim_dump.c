/* Test helper for torch_optim.py: runs SGD (momentum, weight decay, with
 * gradient-norm clipping at 5 before each step, as arcface_torch) and AdamW
 * for a few steps on random gradients, writing the initial weights, every
 * step's gradients, and the weights after every step.
 * Then the fc class centres of a parameter-server shard as the trainer builds
 * it from the default configuration (SGD and AdamW), each step pushed the
 * gradients of a different random subset of classes (Partial FC sampling):
 * fc_w0, fc_ids (STEPS, K), fc_g (STEPS, K, FD), fc_sgd and fc_adamw (STEPS, FC, FD).
 *
 * usage: nn_optim_dump OUT.h5 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/config.h"
#include "arcface/h5io.h"
#include "arcface/optim.h"
#include "arcface/paramserver.h"
#include "arcface/rng.h"

#define N 1000
#define STEPS 6
#define FC 40 /* classes */
#define FD 8  /* embedding size */
#define K 12  /* sampled per step */

/* Runs the shard the default configuration (with `optimizer`) gives for STEPS
 * steps of the pushes in ids/g, writing the weights after each step into out. */
static int fc_run(const char *optimizer, const float *w0, int64_t ids[STEPS][K], float g[STEPS][K][FD],
                  float out[STEPS][FC][FD])
{
    af_config cfg;
    af_config_defaults(&cfg);
    snprintf(cfg.optimizer, sizeof cfg.optimizer, "%s", optimizer);
    af_ps_shard sh;
    if (af_ps_shard_init(&sh, 0, FC, FD, K, &cfg)) return 1;
    memcpy(sh.w, w0, sizeof(float) * FC * FD);
    float lr = !strcmp(optimizer, "adamw") ? AF_ADAMW_LR : 0.1f;
    int rc = 0;
    for (int s = 0; s < STEPS && !rc; s++) {
        rc = af_ps_shard_accumulate(&sh, ids[s], K, &g[s][0][0]) != AF_OK;
        af_ps_shard_apply(&sh, lr);
        memcpy(out[s], sh.w, sizeof(float) * FC * FD);
    }
    af_ps_shard_free(&sh);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    const char *path = argv[1];
    hid_t f;
    if (af_h5_create(path, &f)) return 1;
    af_rng r;
    af_rng_seed(&r, 3, AF_RNG_STREAM_TEST, 0, 0);
    static float w0[N], g[STEPS][N], wsgd[STEPS][N], wadam[STEPS][N], norms[STEPS];
    for (int i = 0; i < N; i++) w0[i] = af_rng_normal(&r);
    /* gradient scales alternate around the clipping threshold */
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < N; i++) g[s][i] = (s % 2 ? 0.5f : 0.05f) * af_rng_normal(&r);
    af_sgd sgd;
    af_adamw adam;
    if (af_sgd_init(&sgd, N) || af_adamw_init(&adam, N)) return 1;
    float w[N], w2[N], gc[N];
    memcpy(w, w0, sizeof w);
    memcpy(w2, w0, sizeof w);
    for (int s = 0; s < STEPS; s++) {
        memcpy(gc, g[s], sizeof gc);
        norms[s] = (float)af_clip_grad_norm(gc, N, 5.0);
        af_sgd_step(&sgd, w, gc, 0.1f, 0.9f, 5e-4f);
        memcpy(wsgd[s], w, sizeof w);
        af_adamw_step(&adam, w2, g[s], AF_ADAMW_LR, 0.9f, 0.999f, 1e-8f, AF_ADAMW_WEIGHT_DECAY);
        memcpy(wadam[s], w2, sizeof w2);
    }
    /* fc: K distinct classes a step (a partial Fisher-Yates shuffle), gradients of the scale a margin loss gives */
    static float fw0[FC * FD], fg[STEPS][K][FD], fsgd[STEPS][FC][FD], fadam[STEPS][FC][FD];
    static int64_t fids[STEPS][K];
    for (int i = 0; i < FC * FD; i++) fw0[i] = 0.01f * af_rng_normal(&r);
    for (int s = 0; s < STEPS; s++) {
        int64_t perm[FC];
        for (int i = 0; i < FC; i++) perm[i] = i;
        for (int i = 0; i < K; i++) {
            int j = i + (int)af_rng_below(&r, (uint64_t)(FC - i));
            int64_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
            fids[s][i] = perm[i];
            for (int k = 0; k < FD; k++) fg[s][i][k] = 0.1f * af_rng_normal(&r);
        }
    }
    if (fc_run("sgd", fw0, fids, fg, fsgd) || fc_run("adamw", fw0, fids, fg, fadam)) {
        fprintf(stderr, "fc shard: %s\n", af_errmsg());
        return 1;
    }
    hsize_t f1[1] = {FC * FD}, fi[2] = {STEPS, K}, fgd[3] = {STEPS, K, FD}, fw[3] = {STEPS, FC, FD};
    hsize_t d1[1] = {N}, d2[2] = {STEPS, N}, ds[1] = {STEPS};
    int st = af_h5_write(f, path, "w0", AF_H5_F32, 1, d1, w0) || af_h5_write(f, path, "g", AF_H5_F32, 2, d2, g) ||
             af_h5_write(f, path, "sgd", AF_H5_F32, 2, d2, wsgd) ||
             af_h5_write(f, path, "adamw", AF_H5_F32, 2, d2, wadam) ||
             af_h5_write(f, path, "norms", AF_H5_F32, 1, ds, norms) ||
             af_h5_write(f, path, "fc_w0", AF_H5_F32, 1, f1, fw0) ||
             af_h5_write(f, path, "fc_ids", AF_H5_I64, 2, fi, fids) ||
             af_h5_write(f, path, "fc_g", AF_H5_F32, 3, fgd, fg) ||
             af_h5_write(f, path, "fc_sgd", AF_H5_F32, 3, fw, fsgd) ||
             af_h5_write(f, path, "fc_adamw", AF_H5_F32, 3, fw, fadam);
    H5Fclose(f);
    af_sgd_free(&sgd);
    af_adamw_free(&adam);
    if (st) fprintf(stderr, "%s\n", af_errmsg());
    return st;
}
