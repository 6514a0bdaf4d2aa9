/* A convolution's per-sample results must not depend on the batch it is
 * called with beyond float rounding: the trainer's invariant
 * (tests/trainer/invariant.py, 2-3 workers against one process with the same
 * global batch) rests on it. For every algorithm a layer can run here (ours,
 * and oneDNN's where nn/conv_dnnl.c uses it, the default on AVX-512 CPUs;
 * float32, and bf16 where the CPU has AVX512_BF16),
 * the same layer is run on a batch of 12 and on its halves and thirds (the
 * invariant's local batches) in one process: the forward output and input
 * gradient of each sample must agree within TOL of the tensor's RMS, and the
 * weight gradient of the whole batch with the sum of the parts' within TOL.
 * The reference is the same layer at another batch size, so nothing is
 * hard-coded; the measured differences are printed, with the per-sample ones
 * also in ulps (oneDNN 2.6 measured 0 ulps: bit-identical across batch sizes;
 * OpenBLAS's GEMMs under our im2col, Winograd and 1x1 algorithms do not, as
 * their column blocks fall differently, and differ by rounding).
 *
 * What it catches: a oneDNN primitive, reorder or pool buffer built for one
 * batch size and used for another (the cache is keyed by shape and batch). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arcface/cpu.h"
#include "arcface/nn.h"
#include "arcface/rng.h"

/* relative to the tensor's RMS (y, dx: the largest per-sample difference; dw: in
 * the L2 norm); float rounding of these sums is ~1e-7, a wrong result ~1 */
#define TOL 1e-5

static af_rng rng;
static int failures;

typedef struct {
    const char *name;
    int cin, cout, hw, k, s, p;
} shape;

static float *randv(size_t n)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = af_rng_normal(&rng);
    return v;
}

/* samples [b0, b0+n) of a (C, B, HW) tensor into (C, n, HW) */
static void slice(const float *src, int C, int B, size_t hw, int b0, int n, float *dst)
{
    for (int c = 0; c < C; c++) memcpy(dst + (size_t)c * n * hw, src + ((size_t)c * B + b0) * hw, n * hw * sizeof(float));
}

static long ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return labs((long)ia - (long)ib);
}

/* max ulps between part (C, n, HW) and samples [b0, b0+n) of whole (C, B, HW);
 * *maxabs: the largest absolute difference */
static long cmp_slice(const float *whole, const float *part, int C, int B, size_t hw, int b0, int n, size_t *ndiff,
                      double *maxabs)
{
    long m = 0;
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < (size_t)n * hw; i++) {
            const float a = whole[((size_t)c * B + b0) * hw + i], b = part[(size_t)c * n * hw + i];
            long u = ulps(a, b);
            if (u) ++*ndiff;
            if (u > m) m = u;
            if (fabs((double)a - b) > *maxabs || a != a || b != b) *maxabs = a == a && b == b ? fabs((double)a - b) : INFINITY;
        }
    return m;
}

static double rms(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s / (n ? n : 1));
}

typedef struct {
    float *y, *dx, *dw;
} result;

static result run(const af_conv2d *c, int B, const float *x, const float *w, const float *dy, int nthreads)
{
    const size_t nx = (size_t)c->cin * B * c->h * c->w, ny = (size_t)c->cout * B * c->oh * c->ow;
    const size_t nw = (size_t)c->cout * c->cin * c->kh * c->kw;
    result r = {malloc(ny * sizeof(float)), malloc(nx * sizeof(float)), calloc(nw, sizeof(float))};
    float *ws = malloc((af_conv2d_workspace(c, B, nthreads) + 1) * sizeof(float));
    af_conv2d_forward(c, B, x, w, NULL, r.y, ws, nthreads);
    af_conv2d_backward(c, B, x, w, dy, r.dx, 0, r.dw, NULL, ws, nthreads);
    free(ws);
    return r;
}

static void check(const shape *s, af_conv2d_algo algo, af_precision prec, int B, int parts, int nthreads)
{
    af_conv2d c;
    if (af_conv2d_init(&c, s->cin, s->cout, s->hw, s->hw, s->k, s->k, s->s, s->s, s->p, s->p, 1) != AF_OK) {
        printf("%s: init failed\n", s->name);
        failures++;
        return;
    }
    if (!af_conv2d_algo_ok(&c, algo)) return;
    c.algo = algo;
    c.prec = prec; /* after the algorithm, as the backbone sets it */
    const size_t hw = (size_t)c.h * c.w, ohw = (size_t)c.oh * c.ow;
    const size_t nw = (size_t)c.cout * c.cin * c.kh * c.kw;
    float *x = randv((size_t)c.cin * B * hw), *w = randv(nw), *dy = randv((size_t)c.cout * B * ohw);
    result whole = run(&c, B, x, w, dy, nthreads);
    const int n = B / parts;
    float *xs = malloc((size_t)c.cin * n * hw * sizeof(float)), *dys = malloc((size_t)c.cout * n * ohw * sizeof(float));
    double *dwsum = calloc(nw, sizeof(double));
    long my = 0, mdx = 0;
    size_t dy_n = 0, dx_n = 0;
    double ay = 0.0, adx = 0.0;
    for (int p = 0; p < parts; p++) {
        slice(x, c.cin, B, hw, p * n, n, xs);
        slice(dy, c.cout, B, ohw, p * n, n, dys);
        result part = run(&c, n, xs, w, dys, nthreads);
        long u = cmp_slice(whole.y, part.y, c.cout, B, ohw, p * n, n, &dy_n, &ay);
        if (u > my) my = u;
        u = cmp_slice(whole.dx, part.dx, c.cin, B, hw, p * n, n, &dx_n, &adx);
        if (u > mdx) mdx = u;
        for (size_t i = 0; i < nw; i++) dwsum[i] += part.dw[i];
        free(part.y), free(part.dx), free(part.dw);
    }
    const double ry = ay / rms(whole.y, (size_t)c.cout * B * ohw), rdx = adx / rms(whole.dx, (size_t)c.cin * B * hw);
    double e = 0.0, ref = 0.0;
    for (size_t i = 0; i < nw; i++) {
        double d = whole.dw[i] - dwsum[i];
        e += d * d;
        ref += dwsum[i] * dwsum[i];
    }
    const double rdw = sqrt(e / (ref > 0 ? ref : 1));
    const int ok = ry <= TOL && rdx <= TOL && rdw <= TOL;
    printf("%-8s %-8s %s B=%d vs %dx%d (tol %.0e): y %.1e (%ld ulp, %zu differ)  dx %.1e (%ld ulp, %zu differ)  "
           "dw %.1e  %s\n",
           s->name, af_conv2d_algo_name(algo), af_precision_name(prec), B, parts, n, TOL, ry, my, dy_n, rdx, mdx, dx_n, rdw, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    free(x), free(w), free(dy), free(xs), free(dys), free(dwsum);
    free(whole.y), free(whole.dx), free(whole.dw);
}

/* A layer run with nthreads = 1 must compute on the calling thread alone: the
 * process's CPU time may not exceed the thread's by more than the 10% that
 * housekeeping can take. (oneDNN's primitives keep the OpenMP thread count of
 * their creation; conv_dnnl.c once created them with the process default, so
 * a --threads 1 trainer ran them on every core.) On a 1-core machine this
 * cannot fail, and says so. */
static void check_one_thread(void)
{
    af_conv2d c;
    const int B = 8;
    af_conv2d_init(&c, 64, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1);
    const size_t nx = (size_t)64 * B * 28 * 28, nw = (size_t)64 * 64 * 9;
    float *x = randv(nx), *w = randv(nw), *dy = randv(nx);
    result warm = run(&c, B, x, w, dy, 1); /* primitive creation and JIT outside the timing */
    struct timespec p0, p1, t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &p0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (int r = 0; r < 3; r++) {
        result again = run(&c, B, x, w, dy, 1);
        free(again.y), free(again.dx), free(again.dw);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &p1);
    const double tp = (p1.tv_sec - p0.tv_sec) + 1e-9 * (p1.tv_nsec - p0.tv_nsec);
    const double tt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    const double ratio = tp / (tt > 0 ? tt : 1e-9);
    const int ok = ratio <= 1.1;
    printf("nthreads = 1 (%s, %ld cores online): process / calling thread CPU time %.3f (tol 1.1)%s  %s\n",
           af_conv2d_algo_name(c.algo), sysconf(_SC_NPROCESSORS_ONLN), ratio,
           sysconf(_SC_NPROCESSORS_ONLN) < 2 ? " (one core: cannot fail here)" : "", ok ? "ok" : "FAIL");
    if (!ok) failures++;
    free(x), free(w), free(dy), free(warm.y), free(warm.dx), free(warm.dw);
}

int main(int argc, char **argv)
{
    /* the trainer's shapes: the fmnist net of tests/trainer/invariant.py (conv1 is
     * 1-channel), and a few of the iResNet ones at a small plane */
    static const shape shapes[] = {
        {"fmnist2", 32, 64, 28, 3, 2, 1}, {"fmnist3", 64, 64, 14, 3, 1, 1}, {"fmnist4", 64, 128, 14, 3, 2, 1},
        {"r_3x3s1", 64, 64, 12, 3, 1, 1}, {"r_3x3s2", 64, 128, 12, 3, 2, 1}, {"r_1x1s2", 64, 128, 12, 1, 2, 0},
        {"r_1x1s1", 128, 128, 6, 1, 1, 0},
    };
    int nthreads = argc > 1 ? atoi(argv[1]) : 1;
    af_rng_seed(&rng, 11, 0, 0, 0);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int a = 0; a <= AF_CONV2D_ALGO_DNNL; a++)
            for (int p = 0; p < 2; p++) {
                /* bf16 where the CPU has it (else it would silently be float32 again) */
                if (p && af_precision_effective(AF_PRECISION_BF16) != AF_PRECISION_BF16) continue;
                check(&shapes[i], (af_conv2d_algo)a, (af_precision)p, 12, 2, nthreads);
                check(&shapes[i], (af_conv2d_algo)a, (af_precision)p, 12, 3, nthreads);
            }
    check_one_thread();
    printf("%s\n", failures ? "FAILED" : "all ok");
    return failures ? 1 : 0;
}
