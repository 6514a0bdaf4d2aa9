/* Test helper for torch_optim.py: runs SGD (momentum, weight decay, with
 * gradient-norm clipping at 5 before each step, as arcface_torch) and AdamW
 * for a few steps on random gradients, writing the initial weights, every
 * step's gradients, and the weights after every step.
 *
 * usage: nn_optim_dump OUT.h5 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/h5io.h"
#include "arcface/optim.h"
#include "arcface/rng.h"

#define N 1000
#define STEPS 6

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
    hsize_t d1[1] = {N}, d2[2] = {STEPS, N}, ds[1] = {STEPS};
    int st = af_h5_write(f, path, "w0", AF_H5_F32, 1, d1, w0) || af_h5_write(f, path, "g", AF_H5_F32, 2, d2, g) ||
             af_h5_write(f, path, "sgd", AF_H5_F32, 2, d2, wsgd) ||
             af_h5_write(f, path, "adamw", AF_H5_F32, 2, d2, wadam) ||
             af_h5_write(f, path, "norms", AF_H5_F32, 1, ds, norms);
    H5Fclose(f);
    af_sgd_free(&sgd);
    af_adamw_free(&adam);
    if (st) fprintf(stderr, "%s\n", af_errmsg());
    return st;
}
