/* Test helper for torch_layers.py: runs single layers (convolutions of every
 * algorithm at realistic sizes, batch norm in training mode with its fused
 * variants, PReLU, Linear, L2 norm) forward and backward on random data and
 * writes inputs, parameters and results to /case_N of an HDF5 file, in
 * PyTorch's NCHW layout, for torch.nn.functional to check.
 *
 * With "bf16" as second argument only the layers that have a bf16 mode
 * (convolutions, Linear) are written, computed in AF_PRECISION_BF16; it exits
 * 77 (a ctest skip) where the CPU has no AVX512_BF16.
 *
 * usage: nn_layers_dump OUT.h5 [fp32|bf16] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/h5io.h"
#include "arcface/nn.h"
#include "arcface/rng.h"
#include "nn_internal.h"

#define NT 2

static af_rng rng;
static hid_t file;
static const char *path;
static int ncase;
static int failed;
static af_precision prec = AF_PRECISION_FP32;

static float *randv(size_t n, float s, float shift)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = shift + s * af_rng_normal(&rng);
    return p;
}

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void put(const char *name, int rank, const hsize_t *d, const float *v)
{
    char full[128];
    snprintf(full, sizeof full, "case_%d/%s", ncase, name);
    if (af_h5_write(file, path, full, AF_H5_F32, rank, d, v)) {
        fprintf(stderr, "%s\n", af_errmsg());
        failed = 1;
    }
}

/* (C, B, HW) -> (B, C, HW) and write */
static void put_nchw(const char *name, int C, int B, int H, int W, const float *v)
{
    const size_t hw = (size_t)H * W;
    float *t = malloc((size_t)C * B * hw * sizeof(float));
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) memcpy(t + ((size_t)b * C + c) * hw, v + ((size_t)c * B + b) * hw, hw * sizeof(float));
    hsize_t d[4] = {B, C, H, W};
    put(name, 4, d, t);
    free(t);
}

static void attrs(const char *kind, const int *v, int n)
{
    char g[32];
    snprintf(g, sizeof g, "case_%d", ncase);
    hid_t gid = H5Gopen2(file, g, H5P_DEFAULT);
    af_h5_attr_set_str(gid, "kind", kind);
    static const char *names[] = {"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"};
    for (int i = 0; i < n; i++) af_h5_attr_set_i64(gid, names[i], v[i]);
    H5Gclose(gid);
}

static void conv_case(int B, int cin, int cout, int h, int w, int k, int s, int p, int g, int bias)
{
    af_conv2d c;
    if (af_conv2d_init(&c, cin, cout, h, w, k, k, s, s, p, p, g)) {
        fprintf(stderr, "%s\n", af_errmsg());
        failed = 1;
        return;
    }
    c.prec = prec;
    const size_t nx = (size_t)cin * B * h * w, nw = (size_t)cout * (cin / g) * k * k;
    const size_t ny = (size_t)cout * B * c.oh * c.ow;
    float *x = randv(nx, 1, 0), *wt = randv(nw, 0.3f, 0), *b = bias ? randv(cout, 0.3f, 0) : NULL;
    float *y = zeros(ny), *dy = randv(ny, 1, 0), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(cout);
    float *ws = zeros(af_conv2d_workspace(&c, B, NT));
    af_conv2d_forward(&c, B, x, wt, b, y, ws, NT);
    af_conv2d_backward(&c, B, x, wt, dy, dx, 0, dw, bias ? db : NULL, ws, NT);
    put_nchw("x", cin, B, h, w, x);
    hsize_t dwd[4] = {cout, cin / g, k, k}, dbd[1] = {cout};
    put("w", 4, dwd, wt);
    if (bias) put("b", 1, dbd, b);
    put_nchw("y", cout, B, c.oh, c.ow, y);
    put_nchw("dy", cout, B, c.oh, c.ow, dy);
    put_nchw("dx", cin, B, h, w, dx);
    put("dw", 4, dwd, dw);
    if (bias) put("db", 1, dbd, db);
    int a[4] = {s, p, g, bias};
    attrs("conv", a, 4);
    ncase++;
    free(x), free(wt), free(b), free(y), free(dy), free(dx), free(dw), free(db), free(ws);
}

static void bn_case(int B, int C, int H, int W, int prelu, int residual)
{
    const size_t n = (size_t)C * B * H * W;
    af_batchnorm bn = {.c = C, .hw = H * W, .eps = 1e-5f, .momentum = 0.1f, .prelu = prelu, .residual = residual};
    float *x = randv(n, 2, 0.5f), *r = residual ? randv(n, 1, 0) : NULL, *y = zeros(n), *dy = randv(n, 1, 0);
    float *gamma = randv(C, 0.3f, 1), *beta = randv(C, 0.3f, 0), *alpha = randv(C, 0.1f, 0.25f);
    float *rm = randv(C, 0.1f, 0), *rv = randv(C, 0.1f, 1), *save = zeros(2 * C);
    float *dx = zeros(n), *dr = zeros(n), *dg = zeros(C), *dbt = zeros(C), *da = zeros(C);
    double *acc = calloc(2 * C, sizeof(double));
    int64_t nbt = 0;
    hsize_t dc[1] = {C};
    put("running_mean_before", 1, dc, rm);
    put("running_var_before", 1, dc, rv);
    af_bn_params p = {gamma, beta, alpha, rm, rv, &nbt};
    af_bn_grads g = {dg, dbt, da};
    af_batchnorm_forward(&bn, B, 1, x, r, y, &p, save, acc, NULL, NT);
    af_batchnorm_backward(&bn, B, x, dy, dx, 0, dr, 0, &p, &g, save, acc, NULL, NT);
    put_nchw("x", C, B, H, W, x);
    if (residual) put_nchw("r", C, B, H, W, r);
    put("gamma", 1, dc, gamma);
    put("beta", 1, dc, beta);
    if (prelu) put("alpha", 1, dc, alpha);
    put_nchw("y", C, B, H, W, y);
    put_nchw("dy", C, B, H, W, dy);
    put_nchw("dx", C, B, H, W, dx);
    if (residual) put_nchw("dr", C, B, H, W, dr);
    put("dgamma", 1, dc, dg);
    put("dbeta", 1, dc, dbt);
    if (prelu) put("dalpha", 1, dc, da);
    put("running_mean", 1, dc, rm);
    put("running_var", 1, dc, rv);
    int a[3] = {prelu, residual, H * W == 1};
    attrs("bn", a, 3);
    ncase++;
    free(x), free(r), free(y), free(dy), free(gamma), free(beta), free(alpha), free(rm), free(rv), free(save);
    free(dx), free(dr), free(dg), free(dbt), free(da), free(acc);
}

static void prelu_case(int B, int C, int H, int W)
{
    const size_t n = (size_t)C * B * H * W;
    float *x = randv(n, 1, 0), *a = randv(C, 0.1f, 0.25f), *y = zeros(n), *dy = randv(n, 1, 0), *dx = zeros(n);
    float *da = zeros(C);
    af_prelu_forward(C, B, H * W, x, a, y, NT);
    af_prelu_backward(C, B, H * W, x, a, dy, dx, 0, da, NT);
    hsize_t dc[1] = {C};
    put_nchw("x", C, B, H, W, x);
    put("alpha", 1, dc, a);
    put_nchw("y", C, B, H, W, y);
    put_nchw("dy", C, B, H, W, dy);
    put_nchw("dx", C, B, H, W, dx);
    put("dalpha", 1, dc, da);
    attrs("prelu", NULL, 0);
    ncase++;
    free(x), free(a), free(y), free(dy), free(dx), free(da);
}

static void linear_case(int B, int fin, int fout)
{
    float *x = randv((size_t)fin * B, 1, 0), *w = randv((size_t)fout * fin, 0.2f, 0), *b = randv(fout, 0.2f, 0);
    float *y = zeros((size_t)fout * B), *dy = randv((size_t)fout * B, 1, 0), *dx = zeros((size_t)fin * B);
    float *dw = zeros((size_t)fout * fin), *db = zeros(fout);
    af_linear_forward_prec(prec, fin, fout, B, x, w, b, y, NT);
    af_linear_backward_prec(prec, fin, fout, B, x, w, dy, dx, 0, dw, db, NT);
    /* (F, B) is the transpose of PyTorch's (B, F): write it as a (F, B, 1, 1) "CNHW" tensor */
    put_nchw("x", fin, B, 1, 1, x);
    hsize_t dwd[2] = {fout, fin}, dbd[1] = {fout};
    put("w", 2, dwd, w);
    put("b", 1, dbd, b);
    put_nchw("y", fout, B, 1, 1, y);
    put_nchw("dy", fout, B, 1, 1, dy);
    put_nchw("dx", fin, B, 1, 1, dx);
    put("dw", 2, dwd, dw);
    put("db", 1, dbd, db);
    attrs("linear", NULL, 0);
    ncase++;
    free(x), free(w), free(b), free(y), free(dy), free(dx), free(dw), free(db);
}

static void l2norm_case(int B, int D)
{
    float *x = randv((size_t)B * D, 1, 0), *y = zeros((size_t)B * D), *n = zeros(B), *dy = randv((size_t)B * D, 1, 0);
    float *dx = zeros((size_t)B * D);
    af_l2norm_forward(B, D, x, y, n);
    af_l2norm_backward(B, D, y, n, dy, dx, 0);
    hsize_t d[2] = {B, D};
    put("x", 2, d, x);
    put("y", 2, d, y);
    put("dy", 2, d, dy);
    put("dx", 2, d, dx);
    attrs("l2norm", NULL, 0);
    ncase++;
    free(x), free(y), free(n), free(dy), free(dx);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4 || (argc >= 3 && strcmp(argv[2], "fp32") && strcmp(argv[2], "bf16")) ||
        (argc == 4 && strcmp(argv[3], "avx512"))) {
        fprintf(stderr, "usage: nn_layers_dump OUT.h5 [fp32|bf16] [avx512]\n");
        return 2;
    }
    path = argv[1];
    /* the test checks this line names the kernels it meant to hold */
    printf("kernels: %s\n", af_cpu_kernels_describe(argc >= 3 && !strcmp(argv[2], "bf16") ? AF_PRECISION_BF16
                                                                                          : AF_PRECISION_FP32));
    fflush(stdout);
    if (argc == 4 && !af_cpu()->avx512) {
        printf("SKIP: the AVX-512 kernels were asked for, and this CPU has no AVX-512 (or AF_ISA capped it)\n");
        return 77;
    }
    if (argc == 3 && !strcmp(argv[2], "bf16")) {
        if (af_precision_effective(AF_PRECISION_BF16) != AF_PRECISION_BF16) {
            printf("SKIP: no AVX512_BF16 on this CPU (%s)\n", af_cpu_kernels_describe(AF_PRECISION_BF16));
            return 77;
        }
        prec = AF_PRECISION_BF16;
    }
    af_rng_seed(&rng, 7, AF_RNG_STREAM_TEST, 0, 0);
    if (af_h5_create(path, &file)) {
        fprintf(stderr, "%s\n", af_errmsg());
        return 1;
    }
    /*        B  cin cout h   w   k  s  p  g  bias */
    conv_case(2, 3, 16, 20, 20, 3, 1, 1, 1, 0);   /* the iResNet stem: K = 27 */
    conv_case(2, 64, 64, 14, 14, 3, 1, 1, 1, 0);  /* Winograd F(2x2, 3x3) */
    conv_case(3, 32, 48, 7, 7, 3, 1, 1, 1, 0);    /* Winograd on an odd plane (iResNet's last stage) */
    conv_case(3, 32, 48, 15, 15, 3, 2, 1, 1, 0);  /* strided: col2im */
    conv_case(2, 32, 24, 9, 9, 1, 1, 0, 1, 1);    /* 1x1: plain GEMM, with bias */
    conv_case(2, 32, 64, 14, 14, 1, 2, 0, 1, 0);  /* the downsample shortcut */
    conv_case(2, 32, 32, 14, 14, 3, 1, 1, 32, 0); /* depthwise */
    conv_case(2, 32, 32, 14, 14, 3, 2, 1, 32, 0); /* depthwise, strided */
    conv_case(2, 32, 32, 12, 12, 3, 1, 1, 16, 0); /* grouped, 2 per group (mbf layers.1) */
    conv_case(3, 64, 64, 7, 7, 7, 1, 0, 64, 0);   /* the GDC head */
    /* planes wide enough that the transforms' and taps' loops run whole zmm
     * vectors and a remainder, not only remainders */
    conv_case(2, 16, 16, 40, 40, 3, 1, 1, 1, 0);  /* Winograd, 20 tiles a row */
    conv_case(1, 16, 24, 35, 35, 3, 1, 1, 1, 0);  /* Winograd, odd plane, 18 tiles a row */
    conv_case(2, 16, 16, 40, 40, 3, 1, 1, 16, 0); /* depthwise, 40x40 */
    conv_case(2, 16, 16, 41, 41, 3, 2, 1, 16, 0); /* depthwise, strided, odd */
    if (prec == AF_PRECISION_BF16) {
        conv_case(2, 128, 128, 14, 14, 3, 1, 1, 1, 0); /* Winograd with a long inner dimension */
        conv_case(2, 256, 64, 7, 7, 1, 1, 0, 1, 0);    /* 1x1, K = 256 */
        linear_case(5, 3136, 64);                     /* iResNet's fc: K = 64*7*7 */
        linear_case(3, 40, 12);
        H5Fclose(file);
        return failed;
    }
    bn_case(3, 8, 5, 5, 0, 0);
    bn_case(3, 8, 5, 5, 1, 0);
    bn_case(3, 8, 5, 5, 0, 1);
    bn_case(2, 8, 6, 4, 1, 1);
    bn_case(4, 16, 1, 1, 0, 0); /* BatchNorm1d */
    prelu_case(2, 6, 5, 4);
    bn_case(2, 4, 13, 11, 1, 1); /* rows of 286: whole vectors and a remainder */
    bn_case(3, 4, 9, 7, 0, 1);
    prelu_case(3, 4, 9, 7);
    linear_case(3, 40, 12);
    l2norm_case(4, 16);
    H5Fclose(file);
    printf("oneDNN convolution calls: %ld\n", nn_dnnl_calls());
    return failed;
}
