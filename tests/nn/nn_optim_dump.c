/* Test helper for torch_optim.py: runs SGD (momentum, weight decay, with
 * gradient-norm clipping at 5 before each step, as arcface_torch) and AdamW
 * for a few steps on random gradients, writing the initial weights, every
 * step's gradients, and the weights after every step.
 * Then the fc class centres of a parameter-server shard as the trainer builds
 * it from the default configuration (SGD and AdamW), each step pushed the
 * gradients of a different random subset of classes (Partial FC sampling):
 * fc_w0, fc_ids (STEPS, K), fc_g (STEPS, K, FD), fc_sgd and fc_adamw (STEPS, FC, FD).
 * Then lazy AdamW (optimizer = adamw, fc_update = sparse) on a schedule with a
 * row never sampled (1) and a row sampled at steps 0 and 4 only (0), through
 * the direct path (gradient_acc 1) and the accumulator (gradient_acc 2, each
 * step pushed in two halves): sadam_ids, sadam_g, sadam_lr, sadam_wd, and per
 * path sadam{1,2}_{w,m,v} (STEPS, FC, FD) after every step.
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

/* Runs the shard the configuration cfg gives for STEPS steps of the pushes in
 * ids/g (in two halves when gradient_acc > 1), writing the weights after each
 * step into out and, if given, the optimizer's first and second moments. */
static int fc_run_cfg(const af_config *cfg, float lr, const float *w0, int64_t ids[STEPS][K], float g[STEPS][K][FD],
                      float out[STEPS][FC][FD], float out_m[STEPS][FC][FD], float out_v[STEPS][FC][FD])
{
    af_ps_shard sh;
    if (af_ps_shard_init(&sh, 0, FC, FD, K, cfg)) return 1;
    memcpy(sh.w, w0, sizeof(float) * FC * FD);
    const int h = cfg->gradient_acc > 1 ? K / 2 : K;
    int rc = 0;
    for (int s = 0; s < STEPS && !rc; s++) {
        rc = af_ps_shard_accumulate(&sh, ids[s], h, &g[s][0][0]) != AF_OK ||
             (h < K && af_ps_shard_accumulate(&sh, ids[s] + h, K - h, &g[s][h][0]) != AF_OK);
        af_ps_shard_apply(&sh, lr);
        memcpy(out[s], sh.w, sizeof(float) * FC * FD);
        if (out_m) memcpy(out_m[s], sh.mom, sizeof(float) * FC * FD);
        if (out_v) memcpy(out_v[s], sh.mom2, sizeof(float) * FC * FD);
    }
    af_ps_shard_free(&sh);
    return rc;
}

/* The default configuration with `optimizer` (dense fc). */
static int fc_run(const char *optimizer, const float *w0, int64_t ids[STEPS][K], float g[STEPS][K][FD],
                  float out[STEPS][FC][FD])
{
    af_config cfg;
    af_config_defaults(&cfg);
    snprintf(cfg.optimizer, sizeof cfg.optimizer, "%s", optimizer);
    return fc_run_cfg(&cfg, !strcmp(optimizer, "adamw") ? AF_ADAMW_LR : 0.1f, w0, ids, g, out, NULL, NULL);
}

/* Lazy AdamW's lr and weight decay: large enough that decaying a row nobody
 * sampled (1e-3 a step) stands far above the tolerance. */
#define SADAM_LR 0.01f
#define SADAM_WD 0.1f

/* Lazy AdamW through the direct path (acc 1) or the accumulator (acc 2). */
static int sadam_run(int acc, const float *w0, int64_t ids[STEPS][K], float g[STEPS][K][FD], float w[STEPS][FC][FD],
                     float m[STEPS][FC][FD], float v[STEPS][FC][FD])
{
    af_config cfg;
    af_config_defaults(&cfg);
    snprintf(cfg.optimizer, sizeof cfg.optimizer, "adamw");
    snprintf(cfg.fc_update, sizeof cfg.fc_update, "sparse");
    cfg.weight_decay = SADAM_WD;
    cfg.gradient_acc = acc;
    return fc_run_cfg(&cfg, SADAM_LR, w0, ids, g, w, m, v);
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
    /* Lazy AdamW's schedule: K of rows 2..FC-1 a step, except that row 0 takes
     * the last place at steps 0 and 4; row 1 is never sampled. */
    static int64_t sids[STEPS][K];
    static float sg[STEPS][K][FD], sw[2][STEPS][FC][FD], sm[2][STEPS][FC][FD], sv[2][STEPS][FC][FD];
    for (int s = 0; s < STEPS; s++) {
        int64_t perm[FC - 2];
        for (int i = 0; i < FC - 2; i++) perm[i] = i + 2;
        for (int i = 0; i < K; i++) {
            int j = i + (int)af_rng_below(&r, (uint64_t)(FC - 2 - i));
            int64_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
            sids[s][i] = i == K - 1 && (s == 0 || s == 4) ? 0 : perm[i];
            for (int k = 0; k < FD; k++) sg[s][i][k] = 0.1f * af_rng_normal(&r);
        }
    }
    if (fc_run("sgd", fw0, fids, fg, fsgd) || fc_run("adamw", fw0, fids, fg, fadam) ||
        sadam_run(1, fw0, sids, sg, sw[0], sm[0], sv[0]) || sadam_run(2, fw0, sids, sg, sw[1], sm[1], sv[1])) {
        fprintf(stderr, "fc shard: %s\n", af_errmsg());
        return 1;
    }
    const float slr = SADAM_LR, swd = SADAM_WD;
    hsize_t one[1] = {1};
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
             af_h5_write(f, path, "fc_adamw", AF_H5_F32, 3, fw, fadam) ||
             af_h5_write(f, path, "sadam_ids", AF_H5_I64, 2, fi, sids) ||
             af_h5_write(f, path, "sadam_g", AF_H5_F32, 3, fgd, sg) ||
             af_h5_write(f, path, "sadam_lr", AF_H5_F32, 1, one, &slr) ||
             af_h5_write(f, path, "sadam_wd", AF_H5_F32, 1, one, &swd);
    for (int a = 0; a < 2 && !st; a++) {
        char n[3][16];
        snprintf(n[0], sizeof n[0], "sadam%d_w", a + 1);
        snprintf(n[1], sizeof n[1], "sadam%d_m", a + 1);
        snprintf(n[2], sizeof n[2], "sadam%d_v", a + 1);
        st = af_h5_write(f, path, n[0], AF_H5_F32, 3, fw, sw[a]) || af_h5_write(f, path, n[1], AF_H5_F32, 3, fw, sm[a]) ||
             af_h5_write(f, path, n[2], AF_H5_F32, 3, fw, sv[a]);
    }
    H5Fclose(f);
    af_sgd_free(&sgd);
    af_adamw_free(&adam);
    if (st) fprintf(stderr, "%s\n", af_errmsg());
    return st;
}
