/* Finite-difference checks of every layer's backward pass (convolutions of
 * each algorithm: 1x1, im2col with flipped-kernel dx, strided col2im,
 * depthwise and grouped direct; oneDNN's where nn/conv_dnnl.c uses it; batch norm in its fused variants; PReLU, add,
 * flatten, dropout, linear, L2 norm), plus convolution forward against a
 * naive double-precision loop, and the dx_accum contract.
 *
 * The loss is L = sum(y * r) for a fixed random r, accumulated in double.
 * For a sample of coordinates of every input and parameter the analytic
 * gradient is compared with (L(v+h) - L(v-h)) / 2h; the error reported is
 * max|fd - analytic| / max|analytic| over the sample. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/nn.h"
#include "arcface/rng.h"

#define FD_TOL 3e-3
#define FD_H 3e-3f
#define NTHREADS 2

static af_rng rng;
static int failures;
static double worst_fd;

static float *randv(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * af_rng_normal(&rng);
    return p;
}

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void report(const char *what, double err, double tol)
{
    int ok = err <= tol && isfinite(err);
    printf("%-58s %.3g (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

/* ---- a generic FD driver over a closure that runs the forward pass ---- */

typedef struct {
    void (*forward)(void *st); /* writes st's output */
    const float *y;
    size_t ny;
    const float *r;
    void *st;
} fd_problem;

static double fd_loss(fd_problem *p)
{
    p->forward(p->st);
    double s = 0.0;
    for (size_t i = 0; i < p->ny; i++) s += (double)p->y[i] * p->r[i];
    return s;
}

static void fd_check(fd_problem *p, const char *name, float *v, size_t n, const float *grad, float h)
{
    size_t idx[48];
    size_t k = n < 48 ? n : 48;
    for (size_t i = 0; i < k; i++) idx[i] = n <= 48 ? i : af_rng_below(&rng, n);
    double maxg = 0.0, maxe = 0.0;
    for (size_t i = 0; i < k; i++) {
        const size_t j = idx[i];
        const float v0 = v[j];
        v[j] = v0 + h;
        double lp = fd_loss(p);
        v[j] = v0 - h;
        double lm = fd_loss(p);
        v[j] = v0;
        /* divide by the step actually taken after rounding v0 +- h to float */
        double fd = (lp - lm) / ((double)(float)(v0 + h) - (double)(float)(v0 - h));
        double e = fabs(fd - grad[j]);
        if (e > maxe) maxe = e;
        if (fabs(grad[j]) > maxg) maxg = fabs(grad[j]);
    }
    fd_loss(p); /* restore the output */
    double rel = maxe / (maxg > 1e-6 ? maxg : 1e-6);
    if (rel > worst_fd) worst_fd = rel;
    char label[160];
    snprintf(label, sizeof label, "  fd %s", name);
    report(label, rel, FD_TOL);
}

/* ---- convolution ---- */

typedef struct {
    af_conv2d c;
    int B;
    float *x, *w, *b, *y, *ws;
} conv_st;

static void conv_fwd(void *s)
{
    conv_st *t = s;
    af_conv2d_forward(&t->c, t->B, t->x, t->w, t->b, t->y, t->ws, NTHREADS);
}

static void conv_naive(const af_conv2d *c, int B, const float *x, const float *w, const float *bias, double *y)
{
    const int cpi = c->cin / c->groups, cpo = c->cout / c->groups;
    for (int co = 0; co < c->cout; co++)
        for (int b = 0; b < B; b++)
            for (int oy = 0; oy < c->oh; oy++)
                for (int ox = 0; ox < c->ow; ox++) {
                    double s = bias ? bias[co] : 0.0;
                    const int g = co / cpo;
                    for (int cl = 0; cl < cpi; cl++)
                        for (int ki = 0; ki < c->kh; ki++)
                            for (int kj = 0; kj < c->kw; kj++) {
                                int iy = oy * c->sh - c->ph + ki, ix = ox * c->sw - c->pw + kj;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) continue;
                                s += (double)w[((co * cpi + cl) * c->kh + ki) * c->kw + kj] *
                                     x[(((size_t)(g * cpi + cl) * B + b) * c->h + iy) * c->w + ix];
                            }
                    y[(((size_t)co * B + b) * c->oh + oy) * c->ow + ox] = s;
                }
}

static void test_conv_algo(const char *name, int B, int cin, int cout, int h, int w, int kh, int kw, int sh, int sw,
                           int ph, int pw, int groups, int bias, af_conv2d_algo which)
{
    conv_st t = {.B = B};
    if (af_conv2d_init(&t.c, cin, cout, h, w, kh, kw, sh, sw, ph, pw, groups)) {
        printf("conv %s: init failed: %s\nFAIL\n", name, af_errmsg());
        failures++;
        return;
    }
    t.c.algo = which;
    printf("conv %s (%s%s):\n", name, af_conv2d_algo_name(t.c.algo),
           t.c.flip_dx && t.c.algo == AF_CONV2D_ALGO_IM2COL ? ", flipped-kernel dx" : "");
    const size_t nx = (size_t)cin * B * h * w, nw = (size_t)cout * (cin / groups) * kh * kw;
    const size_t ny = (size_t)cout * B * t.c.oh * t.c.ow;
    t.x = randv(nx, 1.0f);
    t.w = randv(nw, 0.5f);
    t.b = bias ? randv(cout, 0.5f) : NULL;
    t.y = zeros(ny);
    t.ws = zeros(af_conv2d_workspace(&t.c, B, NTHREADS));
    float *r = randv(ny, 1.0f);
    /* forward against the naive loop */
    conv_fwd(&t);
    double *yref = malloc(ny * sizeof(double)), maxd = 0.0, maxr = 0.0;
    conv_naive(&t.c, B, t.x, t.w, t.b, yref);
    for (size_t i = 0; i < ny; i++) {
        maxd = fmax(maxd, fabs(t.y[i] - yref[i]));
        maxr = fmax(maxr, fabs(yref[i]));
    }
    report("  forward vs naive double loop", maxd / maxr, 1e-5);
    /* backward: dx overwrite, then the accumulate contract */
    float *dx = randv(nx, 100.0f), *dw = zeros(nw), *db = bias ? zeros(cout) : NULL;
    af_conv2d_backward(&t.c, B, t.x, t.w, r, dx, 0, dw, db, t.ws, NTHREADS);
    fd_problem p = {conv_fwd, t.y, ny, r, &t};
    fd_check(&p, "dx", t.x, nx, dx, FD_H);
    fd_check(&p, "dw", t.w, nw, dw, FD_H);
    if (bias) fd_check(&p, "dbias", t.b, cout, db, FD_H);
    float *dx2 = malloc(nx * sizeof(float)), *dw2 = malloc(nw * sizeof(float));
    for (size_t i = 0; i < nx; i++) dx2[i] = 1.0f;
    for (size_t i = 0; i < nw; i++) dw2[i] = dw[i];
    af_conv2d_backward(&t.c, B, t.x, t.w, r, dx2, 1, dw2, NULL, t.ws, NTHREADS);
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < nx; i++) {
        e = fmax(e, fabs(dx2[i] - 1.0f - dx[i]));
        s = fmax(s, fabs(dx[i]));
    }
    for (size_t i = 0; i < nw; i++) {
        e = fmax(e, fabs(dw2[i] - 2.0f * dw[i]) / 2.0);
        s = fmax(s, fabs(dw[i]));
    }
    report("  accumulate: dx += and dw += (second call)", e / s, 1e-5);
    free(t.x), free(t.w), free(t.b), free(t.y), free(t.ws), free(r), free(yref), free(dx), free(dw), free(db);
    free(dx2), free(dw2);
}

/* every algorithm that supports the geometry */
static void test_conv(const char *name, int B, int cin, int cout, int h, int w, int kh, int kw, int sh, int sw,
                      int ph, int pw, int groups, int bias)
{
    af_conv2d c;
    if (af_conv2d_init(&c, cin, cout, h, w, kh, kw, sh, sw, ph, pw, groups)) {
        printf("conv %s: init failed: %s\nFAIL\n", name, af_errmsg());
        failures++;
        return;
    }
    for (int a = 0; a <= AF_CONV2D_ALGO_DNNL; a++)
        if (af_conv2d_algo_ok(&c, (af_conv2d_algo)a))
            test_conv_algo(name, B, cin, cout, h, w, kh, kw, sh, sw, ph, pw, groups, bias, (af_conv2d_algo)a);
}

/* ---- batch norm ---- */

typedef struct {
    af_batchnorm bn;
    int B;
    float *x, *r, *y, *gamma, *beta, *alpha, *rm, *rv, *save;
    int64_t nbt;
    double *acc;
} bn_st;

static void bn_fwd(void *s)
{
    bn_st *t = s;
    af_bn_params p = {t->gamma, t->beta, t->alpha, t->rm, t->rv, &t->nbt};
    af_batchnorm_forward(&t->bn, t->B, 1, t->x, t->r, t->y, &p, t->save, t->acc, NULL, NTHREADS);
}

static void test_bn(const char *name, int B, int c, int hw, int prelu, int residual)
{
    printf("batchnorm %s:\n", name);
    bn_st t = {.bn = {.c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f, .prelu = prelu, .residual = residual}, .B = B};
    const size_t n = (size_t)c * B * hw;
    t.x = randv(n, 2.0f);
    for (size_t i = 0; i < n; i++) t.x[i] += 0.5f; /* a non-zero mean */
    t.r = residual ? randv(n, 1.0f) : NULL;
    t.y = zeros(n);
    t.gamma = randv(c, 0.3f);
    t.beta = randv(c, 0.3f);
    t.alpha = randv(c, 0.2f);
    for (int i = 0; i < c; i++) t.gamma[i] += 1.0f, t.alpha[i] += 0.25f;
    t.rm = zeros(c);
    t.rv = zeros(c);
    t.save = zeros(2 * c);
    t.acc = calloc(2 * c, sizeof(double));
    float *rr = randv(n, 1.0f);
    bn_fwd(&t);
    /* the forward against its definition: per channel mean 0 / var 1 before the affine step */
    if (!prelu && !residual) {
        double e = 0.0;
        for (int ch = 0; ch < c; ch++) {
            double m = 0.0, v = 0.0;
            for (size_t i = 0; i < (size_t)B * hw; i++) m += t.x[ch * (size_t)B * hw + i];
            m /= (double)B * hw;
            for (size_t i = 0; i < (size_t)B * hw; i++) v += pow(t.x[ch * (size_t)B * hw + i] - m, 2);
            v /= (double)B * hw;
            for (size_t i = 0; i < (size_t)B * hw; i++) {
                double ref = (t.x[ch * (size_t)B * hw + i] - m) / sqrt(v + 1e-5) * t.gamma[ch] + t.beta[ch];
                e = fmax(e, fabs(ref - t.y[ch * (size_t)B * hw + i]));
            }
        }
        report("  forward vs definition (abs)", e, 1e-5);
    }
    float *dx = zeros(n), *dr = residual ? zeros(n) : NULL, *dg = zeros(c), *dbt = zeros(c), *da = zeros(c);
    af_bn_params p = {t.gamma, t.beta, t.alpha, t.rm, t.rv, &t.nbt};
    af_bn_grads g = {dg, dbt, da};
    af_batchnorm_backward(&t.bn, B, t.x, rr, dx, 0, dr, 0, &p, &g, t.save, t.acc, NULL, NTHREADS);
    fd_problem pr = {bn_fwd, t.y, n, rr, &t};
    fd_check(&pr, "dx", t.x, n, dx, FD_H);
    fd_check(&pr, "dgamma", t.gamma, c, dg, FD_H);
    fd_check(&pr, "dbeta", t.beta, c, dbt, FD_H);
    if (prelu) fd_check(&pr, "dalpha", t.alpha, c, da, FD_H);
    if (residual) fd_check(&pr, "dresidual", t.r, n, dr, FD_H);
    free(t.x), free(t.r), free(t.y), free(t.gamma), free(t.beta), free(t.alpha), free(t.rm), free(t.rv);
    free(t.save), free(t.acc), free(rr), free(dx), free(dr), free(dg), free(dbt), free(da);
}

/* ---- the small layers ---- */

typedef struct {
    int kind, c, B, hw, fin, fout;
    float p;
    af_nn_ctx ctx;
    float *x, *x2, *w, *b, *y, *norms;
} small_st;

enum { K_PRELU, K_ADD, K_FLATTEN, K_DROPOUT, K_LINEAR, K_L2NORM };

static void small_fwd(void *s)
{
    small_st *t = s;
    switch (t->kind) {
    case K_PRELU: af_prelu_forward(t->c, t->B, t->hw, t->x, t->w, t->y, NTHREADS); break;
    case K_ADD: af_add_forward((size_t)t->c * t->B * t->hw, t->x, t->x2, t->y, NTHREADS); break;
    case K_FLATTEN: af_flatten_forward(t->c, t->B, t->hw, t->x, t->y, NTHREADS); break;
    case K_DROPOUT: af_dropout_forward(t->c, t->B, t->p, &t->ctx, 0, t->x, t->y, NTHREADS); break;
    case K_LINEAR: af_linear_forward(t->fin, t->fout, t->B, t->x, t->w, t->b, t->y, NTHREADS); break;
    case K_L2NORM: af_l2norm_forward(t->B, t->c, t->x, t->y, t->norms); break;
    }
}

static void test_small(void)
{
    const int C = 5, B = 3, HW = 6;
    const size_t n = (size_t)C * B * HW;
    float *r = randv(n, 1.0f);
    {
        printf("prelu:\n");
        small_st t = {.kind = K_PRELU, .c = C, .B = B, .hw = HW, .x = randv(n, 1.0f), .w = randv(C, 0.3f),
                      .y = zeros(n)};
        float *dx = zeros(n), *da = zeros(C);
        small_fwd(&t);
        af_prelu_backward(C, B, HW, t.x, t.w, r, dx, 0, da, NTHREADS);
        fd_problem p = {small_fwd, t.y, n, r, &t};
        fd_check(&p, "dx", t.x, n, dx, FD_H);
        fd_check(&p, "dalpha", t.w, C, da, FD_H);
        free(t.x), free(t.w), free(t.y), free(dx), free(da);
    }
    {
        printf("residual add:\n");
        small_st t = {.kind = K_ADD, .c = C, .B = B, .hw = HW, .x = randv(n, 1.0f), .x2 = randv(n, 1.0f),
                      .y = zeros(n)};
        float *da = zeros(n), *db = randv(n, 1.0f), *db0 = malloc(n * sizeof(float));
        memcpy(db0, db, n * sizeof(float));
        small_fwd(&t);
        af_add_backward(n, r, da, 0, db, 1, NTHREADS);
        for (size_t i = 0; i < n; i++) db[i] -= db0[i];
        fd_problem p = {small_fwd, t.y, n, r, &t};
        fd_check(&p, "da", t.x, n, da, FD_H);
        fd_check(&p, "db (accumulated)", t.x2, n, db, FD_H);
        free(t.x), free(t.x2), free(t.y), free(da), free(db), free(db0);
    }
    {
        printf("flatten:\n");
        small_st t = {.kind = K_FLATTEN, .c = C, .B = B, .hw = HW, .x = randv(n, 1.0f), .y = zeros(n)};
        float *dx = zeros(n);
        small_fwd(&t);
        /* the order must be torch.flatten's: feature c*HW + s of row b */
        double e = 0.0;
        for (int c = 0; c < C; c++)
            for (int b = 0; b < B; b++)
                for (int s = 0; s < HW; s++)
                    e = fmax(e, fabs(t.y[((size_t)c * HW + s) * B + b] - t.x[((size_t)c * B + b) * HW + s]));
        report("  forward order (abs)", e, 0.0);
        af_flatten_backward(C, B, HW, r, dx, 0, NTHREADS);
        fd_problem p = {small_fwd, t.y, n, r, &t};
        fd_check(&p, "dx", t.x, n, dx, FD_H);
        free(t.x), free(t.y), free(dx);
    }
    {
        printf("dropout p=0.3:\n");
        const int F = 200, BB = 6;
        const size_t nd = (size_t)F * BB;
        float *rd = randv(nd, 1.0f);
        small_st t = {.kind = K_DROPOUT, .c = F, .B = BB, .p = 0.3f, .x = randv(nd, 1.0f), .y = zeros(nd),
                      .ctx = {.seed = 11, .step = 5, .row_offset = 100}};
        float *dx = zeros(nd);
        small_fwd(&t);
        af_dropout_backward(F, BB, t.p, &t.ctx, 0, rd, dx, 0, NTHREADS);
        fd_problem p = {small_fwd, t.y, nd, rd, &t};
        fd_check(&p, "dx", t.x, nd, dx, FD_H);
        size_t kept = 0;
        double e = 0.0;
        for (size_t i = 0; i < nd; i++) {
            if (t.y[i] != 0.0f) {
                kept++;
                e = fmax(e, fabs(t.y[i] - t.x[i] / 0.7f));
            }
        }
        report("  kept values scaled by 1/(1-p) (abs)", e, 1e-6);
        double frac = (double)kept / nd;
        report("  |kept fraction - 0.7|", fabs(frac - 0.7), 0.05);
        /* rows 3..5 computed alone, as another worker would, draw the same masks */
        small_st u = t;
        u.B = 3;
        u.ctx.row_offset = 103;
        float *xs = malloc((size_t)F * 3 * sizeof(float)), *ys = zeros((size_t)F * 3);
        for (int f = 0; f < F; f++)
            for (int b = 0; b < 3; b++) xs[f * 3 + b] = t.x[f * BB + 3 + b];
        u.x = xs;
        u.y = ys;
        small_fwd(&u);
        double em = 0.0;
        for (int f = 0; f < F; f++)
            for (int b = 0; b < 3; b++) em = fmax(em, fabs(ys[f * 3 + b] - t.y[f * BB + 3 + b]));
        report("  mask depends on the global row only (abs)", em, 0.0);
        u.ctx.step = 6;
        small_fwd(&u);
        em = 0.0;
        for (int f = 0; f < F; f++)
            for (int b = 0; b < 3; b++) em = fmax(em, fabs(ys[f * 3 + b] - t.y[f * BB + 3 + b]));
        report("  a different step draws a different mask (expect > 0)", em > 0 ? 0.0 : 1.0, 0.0);
        free(t.x), free(t.y), free(dx), free(rd), free(xs), free(ys);
    }
    {
        printf("linear:\n");
        const int FIN = 13, FOUT = 7, BB = 5;
        const size_t ny = (size_t)FOUT * BB;
        float *rl = randv(ny, 1.0f);
        small_st t = {.kind = K_LINEAR, .fin = FIN, .fout = FOUT, .B = BB, .x = randv((size_t)FIN * BB, 1.0f),
                      .w = randv((size_t)FOUT * FIN, 0.5f), .b = randv(FOUT, 0.5f), .y = zeros(ny)};
        float *dx = zeros((size_t)FIN * BB), *dw = zeros((size_t)FOUT * FIN), *db = zeros(FOUT);
        small_fwd(&t);
        af_linear_backward(FIN, FOUT, BB, t.x, t.w, rl, dx, 0, dw, db, NTHREADS);
        fd_problem p = {small_fwd, t.y, ny, rl, &t};
        fd_check(&p, "dx", t.x, (size_t)FIN * BB, dx, FD_H);
        fd_check(&p, "dw", t.w, (size_t)FOUT * FIN, dw, FD_H);
        fd_check(&p, "dbias", t.b, FOUT, db, FD_H);
        free(t.x), free(t.w), free(t.b), free(t.y), free(dx), free(dw), free(db), free(rl);
    }
    {
        printf("l2 normalisation:\n");
        const int BB = 4, Dd = 9;
        const size_t nl = (size_t)BB * Dd;
        float *rl = randv(nl, 1.0f);
        small_st t = {.kind = K_L2NORM, .c = Dd, .B = BB, .x = randv(nl, 1.0f), .y = zeros(nl), .norms = zeros(BB)};
        float *dx = zeros(nl);
        small_fwd(&t);
        af_l2norm_backward(BB, Dd, t.y, t.norms, rl, dx, 0);
        fd_problem p = {small_fwd, t.y, nl, rl, &t};
        fd_check(&p, "dx", t.x, nl, dx, FD_H);
        double e = 0.0;
        for (int b = 0; b < BB; b++) {
            double s = 0.0;
            for (int j = 0; j < Dd; j++) s += (double)t.y[b * Dd + j] * t.y[b * Dd + j];
            e = fmax(e, fabs(sqrt(s) - 1.0));
        }
        report("  rows have unit norm (abs)", e, 1e-6);
        free(t.x), free(t.y), free(t.norms), free(dx), free(rl);
    }
    free(r);
}

int main(void)
{
    af_rng_seed(&rng, 42, AF_RNG_STREAM_TEST, 0, 0);
    /*        name                           B cin cout h  w kh kw sh sw ph pw g bias */
    test_conv("3x3 s1 p1 (+bias)",           3, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1);
    test_conv("3x3 s1 p1, even plane",        2, 5, 6, 8, 6, 3, 3, 1, 1, 1, 1, 1, 0);
    test_conv("3x3 s1 p1, 1 row / 1 column",  2, 4, 3, 1, 5, 3, 3, 1, 1, 1, 1, 1, 0);
    test_conv("3x3 s1 p1, 1x1 plane",         3, 4, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1, 0);
    test_conv("3x3 s2 p1",                   3, 4, 5, 7, 8, 3, 3, 2, 2, 1, 1, 1, 0);
    test_conv("1x1 s1",                      3, 6, 5, 4, 5, 1, 1, 1, 1, 0, 0, 1, 1);
    test_conv("1x1 s2 (shortcut)",           2, 6, 5, 7, 7, 1, 1, 2, 2, 0, 0, 1, 0);
    test_conv("3x2 kernel, stride (1,2)",    2, 3, 4, 6, 7, 3, 2, 1, 2, 1, 0, 1, 0);
    test_conv("2x3 kernel s1 p1",            2, 3, 4, 5, 6, 2, 3, 1, 1, 1, 1, 1, 0);
    test_conv("depthwise 3x3 s1 p1",         3, 6, 6, 7, 7, 3, 3, 1, 1, 1, 1, 6, 0);
    test_conv("depthwise 3x3 s2 p1",         3, 6, 6, 8, 7, 3, 3, 2, 2, 1, 1, 6, 0);
    test_conv("depthwise 4x4 valid (GDC)",   2, 5, 5, 4, 4, 4, 4, 1, 1, 0, 0, 5, 0);
    test_conv("grouped g=3, 2 in/2 out",     2, 6, 6, 6, 5, 3, 3, 1, 1, 1, 1, 3, 1);
    test_conv("grouped g=2, stride 2",       2, 4, 6, 7, 6, 3, 3, 2, 2, 1, 1, 2, 0);
    test_bn("2d", 3, 4, 10, 0, 0);
    test_bn("2d + prelu", 3, 4, 10, 1, 0);
    test_bn("2d + residual", 3, 4, 10, 0, 1);
    test_bn("2d + prelu + residual", 3, 4, 10, 1, 1);
    test_bn("1d (hw = 1)", 6, 5, 1, 0, 0);
    test_small();
    /* last, so that the random data of the cases above do not depend on
     * whether oneDNN is there (it adds one algorithm, and draws, per case) */
    /* 16 input channels: oneDNN's primitives too, where nn/conv_dnnl.c uses them */
    test_conv("3x3 s1 p1, 16 channels",      2, 16, 8, 6, 5, 3, 3, 1, 1, 1, 1, 1, 0);
    test_conv("3x3 s2 p1, 16 channels",      2, 16, 8, 7, 6, 3, 3, 2, 2, 1, 1, 1, 0);
    test_conv("1x1 s2, 16 channels",         2, 16, 8, 5, 5, 1, 1, 2, 2, 0, 0, 1, 0);
    printf("worst finite-difference error %.3g (tolerance %.0e)\n", worst_fd, FD_TOL);
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
