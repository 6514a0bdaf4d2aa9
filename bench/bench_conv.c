/* Per-layer convolution benchmark: our path (af_conv2d: Winograd, im2col or
 * 1x1 GEMM through OpenBLAS or the bf16 kernel, direct depthwise) against
 * oneDNN's convolution primitives, for every distinct convolution shape of
 * r18, r50 and mbf at batch 32, 112x112, in one run.
 *
 * oneDNN gets its best case: the primitives are created with format "any",
 * so they pick their own blocked layouts (nChw16c ...), and the time of the
 * primitive alone is reported; separately, the reorders that would bring our
 * (C, B, H, W) activations and (O, I, kh, kw) weights into those layouts and
 * the results back (what using oneDNN per layer inside our network costs on
 * top) are timed and added in the "+reorder" columns. Backward is dx and dw:
 * ours is one af_conv2d_backward call, oneDNN's is backward-data plus
 * backward-weights. Every figure is the best of --reps runs after a warm-up,
 * in process CPU time (see cpu_now), on one thread by default: per thread is
 * how both run inside the backbone's layers, and it is what a shared machine
 * can measure.
 *
 * --precision bf16-f32dst: oneDNN's bf16 primitives with float32 forward and
 * backward-data destinations, the rounding of our own bf16 path.
 *
 * usage: bench_conv [--arch r18,r50,mbf] [--batch 32] [--threads 1] [--reps 3]
 *                   [--precision fp32|bf16|bf16-f32dst] */
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arcface/backbone.h"
#include "arcface/cpu.h"
#include "arcface/nn.h"
#include "net.h"

/* The process's CPU time, not wall time: on a shared machine a run preempted
 * by other jobs would otherwise look slow. With one thread (the default) it
 * is the computation's own time; with more, threads waiting at barriers
 * count too, on both sides alike. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static dnnl_engine_t eng;
static dnnl_stream_t strm;
static int reps = 3;

#define CK(x)                                                                                     \
    do {                                                                                          \
        dnnl_status_t s_ = (x);                                                                   \
        if (s_ != dnnl_success) {                                                                 \
            fprintf(stderr, "bench_conv: %s: %s (line %d)\n", #x, dnnl_status2str(s_), __LINE__); \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)

static float *fill(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof(float));
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* best wall time of reps runs of one primitive, after a warm-up run */
static int time_prim(dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args, double *best)
{
    *best = 1e30;
    for (int r = -1; r < reps; r++) {
        double t0 = cpu_now();
        CK(dnnl_primitive_execute(p, strm, nargs, args));
        CK(dnnl_stream_wait(strm));
        double t = cpu_now() - t0;
        if (r >= 0 && t < *best) *best = t;
    }
    return 0;
}

/* A memory in the primitive's layout for `want`; when that differs from the
 * user layout `user` (holding `data`), the reorder between them is timed
 * (direction: user -> primitive, or back when to_user) and added to *reorder. */
static int prim_mem(const dnnl_memory_desc_t *user, void *data, const dnnl_memory_desc_t *want, int to_user,
                    dnnl_memory_t *out, double *reorder)
{
    CK(dnnl_memory_create(out, want, eng, DNNL_MEMORY_ALLOCATE));
    if (dnnl_memory_desc_equal(user, want)) {
        CK(dnnl_memory_set_data_handle(*out, data));
        return 0;
    }
    dnnl_memory_t um;
    CK(dnnl_memory_create(&um, user, eng, data));
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t rp;
    if (to_user)
        CK(dnnl_reorder_primitive_desc_create(&rpd, want, eng, user, eng, NULL));
    else
        CK(dnnl_reorder_primitive_desc_create(&rpd, user, eng, want, eng, NULL));
    CK(dnnl_primitive_create(&rp, rpd));
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, to_user ? *out : um}, {DNNL_ARG_TO, to_user ? um : *out}};
    double t;
    if (time_prim(rp, 2, a, &t)) return -1;
    *reorder += t;
    dnnl_primitive_destroy(rp);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(um);
    return 0;
}

typedef struct {
    double fwd, fwd_r, bwd, bwd_r; /* primitive alone, and the reorders on top */
} dnnl_times;

/* oneDNN's forward, backward-data and backward-weights for layer c at batch B */
static int run_dnnl(const af_conv2d *c, int B, int bf16, float *x, float *w, float *y, float *dy, float *dx,
                    float *dw, dnnl_times *t)
{
    memset(t, 0, sizeof *t);
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    const int G = c->groups;
    /* our layout: (C, B, H, W) is an NCHW tensor with strides (HW, B*HW, W, 1) */
    dnnl_dims_t xd = {B, c->cin, c->h, c->w}, yd = {B, c->cout, c->oh, c->ow};
    dnnl_dims_t xs = {(dnnl_dim_t)c->h * c->w, (dnnl_dim_t)B * c->h * c->w, c->w, 1};
    dnnl_dims_t ys = {(dnnl_dim_t)c->oh * c->ow, (dnnl_dim_t)B * c->oh * c->ow, c->ow, 1};
    dnnl_memory_desc_t xu, yu, wu, xa, ya, wa;
    CK(dnnl_memory_desc_init_by_strides(&xu, 4, xd, dnnl_f32, xs));
    CK(dnnl_memory_desc_init_by_strides(&yu, 4, yd, dnnl_f32, ys));
    if (G == 1) {
        dnnl_dims_t wd = {c->cout, c->cin, c->kh, c->kw};
        CK(dnnl_memory_desc_init_by_tag(&wu, 4, wd, dnnl_f32, dnnl_oihw));
        CK(dnnl_memory_desc_init_by_tag(&wa, 4, wd, dt, dnnl_format_tag_any));
    } else {
        dnnl_dims_t wd = {G, c->cout / G, c->cin / G, c->kh, c->kw};
        CK(dnnl_memory_desc_init_by_tag(&wu, 5, wd, dnnl_f32, dnnl_goihw));
        CK(dnnl_memory_desc_init_by_tag(&wa, 5, wd, dt, dnnl_format_tag_any));
    }
    CK(dnnl_memory_desc_init_by_tag(&xa, 4, xd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&ya, 4, yd, dt, dnnl_format_tag_any));
    /* bf16 == 2: float32 destinations (forward dst, backward-data diff_src), the
     * rounding of our own bf16 path (operands in bf16, float32 accumulation and outputs) */
    dnnl_memory_desc_t yf = ya, xbd = xa;
    if (bf16 == 2) yf.data_type = xbd.data_type = dnnl_f32;
    dnnl_dims_t st = {c->sh, c->sw}, pl = {c->ph, c->pw};
    dnnl_dims_t pr = {(c->oh - 1) * c->sh + c->kh - c->h - c->ph, (c->ow - 1) * c->sw + c->kw - c->w - c->pw};

    dnnl_convolution_desc_t fd, bdd, bwd;
    dnnl_primitive_desc_t fpd, bdpd, bwpd;
    CK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_auto, &xa, &wa, NULL, &yf, st,
                                          pl, pr));
    CK(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL));
    CK(dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_auto, &xbd, &wa, &ya, st, pl, pr));
    CK(dnnl_primitive_desc_create(&bdpd, &bdd, NULL, eng, fpd));
    /* the weight gradient stays float32 (master weights) in both precisions */
    dnnl_memory_desc_t dwa = wa;
    dwa.data_type = dnnl_f32;
    CK(dnnl_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_auto, &xa, &dwa, NULL, &ya, st, pl, pr));
    CK(dnnl_primitive_desc_create(&bwpd, &bwd, NULL, eng, fpd));

    dnnl_memory_t mx, mw, my, mdy, mw2, mdx, mx2, mdy2, mdw;
    /* forward */
    if (prim_mem(&xu, x, dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0), 0, &mx, &t->fwd_r) ||
        prim_mem(&wu, w, dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0), 0, &mw, &t->fwd_r) ||
        prim_mem(&yu, y, dnnl_primitive_desc_query_md(fpd, dnnl_query_dst_md, 0), 1, &my, &t->fwd_r))
        return -1;
    dnnl_primitive_t fp, bdp, bwp;
    CK(dnnl_primitive_create(&fp, fpd));
    dnnl_exec_arg_t fa[3] = {{DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, my}};
    if (time_prim(fp, 3, fa, &t->fwd)) return -1;
    /* backward data */
    if (prim_mem(&yu, dy, dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_dst_md, 0), 0, &mdy, &t->bwd_r) ||
        prim_mem(&wu, w, dnnl_primitive_desc_query_md(bdpd, dnnl_query_weights_md, 0), 0, &mw2, &t->bwd_r) ||
        prim_mem(&xu, dx, dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_src_md, 0), 1, &mdx, &t->bwd_r))
        return -1;
    CK(dnnl_primitive_create(&bdp, bdpd));
    dnnl_exec_arg_t da[3] = {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, mw2}, {DNNL_ARG_DIFF_SRC, mdx}};
    double tb;
    if (time_prim(bdp, 3, da, &tb)) return -1;
    t->bwd += tb;
    /* backward weights (its src and diff_dst reorders counted again unless
     * the layouts match those already made: a real integration could share them) */
    double r2 = 0.0;
    const dnnl_memory_desc_t *xw = dnnl_primitive_desc_query_md(bwpd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *yw = dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *xf = dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *yb = dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_dst_md, 0);
    if (prim_mem(&xu, x, xw, 0, &mx2, &r2) || prim_mem(&yu, dy, yw, 0, &mdy2, &r2) ||
        prim_mem(&wu, dw, dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_weights_md, 0), 1, &mdw, &t->bwd_r))
        return -1;
    if (!dnnl_memory_desc_equal(xw, xf) || !dnnl_memory_desc_equal(yw, yb)) t->bwd_r += r2;
    CK(dnnl_primitive_create(&bwp, bwpd));
    dnnl_exec_arg_t wa2[3] = {{DNNL_ARG_SRC, mx2}, {DNNL_ARG_DIFF_DST, mdy2}, {DNNL_ARG_DIFF_WEIGHTS, mdw}};
    if (time_prim(bwp, 3, wa2, &tb)) return -1;
    t->bwd += tb;
    dnnl_primitive_destroy(fp);
    dnnl_primitive_destroy(bdp);
    dnnl_primitive_destroy(bwp);
    dnnl_memory_t ms[] = {mx, mw, my, mdy, mw2, mdx, mx2, mdy2, mdw};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) dnnl_memory_destroy(ms[i]);
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_desc_destroy(bdpd);
    dnnl_primitive_desc_destroy(bwpd);
    return 0;
}

static void run_ours(const af_conv2d *c, int B, int T, float *x, float *w, float *y, float *dy, float *dx, float *dw,
                     float *ws, double *fwd, double *bwd)
{
    *fwd = *bwd = 1e30;
    for (int r = -1; r < reps; r++) {
        double t0 = cpu_now();
        af_conv2d_forward(c, B, x, w, NULL, y, ws, T);
        double t1 = cpu_now();
        af_conv2d_backward(c, B, x, w, dy, dx, 0, dw, NULL, ws, T);
        double t2 = cpu_now();
        if (r < 0) continue;
        if (t1 - t0 < *fwd) *fwd = t1 - t0;
        if (t2 - t1 < *bwd) *bwd = t2 - t1;
    }
}

static int same_shape(const af_conv2d *a, const af_conv2d *b)
{
    return a->cin == b->cin && a->cout == b->cout && a->h == b->h && a->w == b->w && a->kh == b->kh &&
           a->kw == b->kw && a->sh == b->sh && a->sw == b->sw && a->ph == b->ph && a->pw == b->pw &&
           a->groups == b->groups;
}

static int bench_arch(const char *arch, int B, int T, int bf16)
{
    af_backbone m;
    af_backbone_config cfg = {.arch = arch, .max_batch = 1, .nthreads = T, .seed = 1};
    if (af_backbone_init(&m, &cfg)) {
        fprintf(stderr, "bench_conv: %s\n", af_errmsg());
        return -1;
    }
    af_conv2d shapes[64];
    int count[64], ns = 0;
    for (int i = 0; i < m.net->n_ops; i++) {
        if (m.net->ops[i].kind != NET_OP_CONV) continue;
        const af_conv2d *c = &m.net->ops[i].conv;
        int k = 0;
        while (k < ns && !same_shape(&shapes[k], c)) k++;
        if (k == ns) {
            if (ns == 64) break;
            shapes[ns] = *c;
            count[ns++] = 0;
        }
        count[k]++;
    }
    af_backbone_free(&m);
    printf("\n%s, batch %d, %d threads, %s: per-layer ms of CPU time (best of %d); ours/oneDNN > 1 means oneDNN is faster\n", arch,
           B, T, bf16 == 2 ? "bf16 (oneDNN: f32 destinations)" : bf16 ? "bf16" : "fp32", reps);
    printf("%-34s %3s %-8s | %8s %8s %8s %6s | %8s %8s %8s %6s\n", "layer (cin>cout hxw kxk/s g)", "n", "ours",
           "fwd ours", "dnnl", "+reord", "ratio", "bwd ours", "dnnl", "+reord", "ratio");
    double tot[6] = {0};
    for (int k = 0; k < ns; k++) {
        af_conv2d c = shapes[k];
        c.prec = bf16 ? AF_PRECISION_BF16 : AF_PRECISION_FP32;
        c.algo = af_conv2d_own_algo(&c); /* "ours" is our own path, not conv_dnnl.c */
        const size_t nx = (size_t)c.cin * B * c.h * c.w, ny = (size_t)c.cout * B * c.oh * c.ow;
        const size_t nw = (size_t)c.cout * (c.cin / c.groups) * c.kh * c.kw;
        float *x = fill(nx, 1), *w = fill(nw, 2), *y = fill(ny, 3), *dy = fill(ny, 4), *dx = fill(nx, 5),
              *dw = fill(nw, 6), *ws = fill(af_conv2d_workspace(&c, B, T) + 16, 7);
        if (!x || !w || !y || !dy || !dx || !dw || !ws) {
            fprintf(stderr, "bench_conv: out of memory at layer %d of %s\n", k, arch);
            return -1;
        }
        double of, ob;
        run_ours(&c, B, T, x, w, y, dy, dx, dw, ws, &of, &ob);
        dnnl_times d;
        if (run_dnnl(&c, B, bf16, x, w, y, dy, dx, dw, &d)) return -1;
        char name[64];
        snprintf(name, sizeof name, "%d>%d %dx%d %dx%d/%d g%d", c.cin, c.cout, c.h, c.w, c.kh, c.kw, c.sh, c.groups);
        printf("%-34s %3d %-8s | %8.2f %8.2f %8.2f %5.2fx | %8.2f %8.2f %8.2f %5.2fx\n", name, count[k],
               af_conv2d_algo_name(c.algo), 1e3 * of, 1e3 * d.fwd, 1e3 * (d.fwd + d.fwd_r), of / (d.fwd + d.fwd_r),
               1e3 * ob, 1e3 * d.bwd, 1e3 * (d.bwd + d.bwd_r), ob / (d.bwd + d.bwd_r));
        fflush(stdout);
        double v[6] = {of, d.fwd, d.fwd + d.fwd_r, ob, d.bwd, d.bwd + d.bwd_r};
        for (int i = 0; i < 6; i++) tot[i] += count[k] * v[i];
        free(x), free(w), free(y), free(dy), free(dx), free(dw), free(ws);
    }
    printf("%-34s %3s %-8s | %8.1f %8.1f %8.1f %5.2fx | %8.1f %8.1f %8.1f %5.2fx\n", "all convolutions (x n)", "", "",
           1e3 * tot[0], 1e3 * tot[1], 1e3 * tot[2], tot[0] / tot[2], 1e3 * tot[3], 1e3 * tot[4], 1e3 * tot[5],
           tot[3] / tot[5]);
    return 0;
}

int main(int argc, char **argv)
{
    const char *archs = "r18,r50,mbf";
    int B = 32, T = 1, bf16 = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--arch") && v) archs = argv[++i];
        else if (!strcmp(a, "--batch") && v) B = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v) T = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--precision") && v) {
            const char *p = argv[++i];
            bf16 = !strcmp(p, "bf16") ? 1 : !strcmp(p, "bf16-f32dst") ? 2 : 0;
        }
        else {
            fprintf(stderr, "usage: bench_conv [--arch r18,r50,mbf] [--batch 32] [--threads 1] [--reps 3] "
                            "[--precision fp32|bf16|bf16-f32dst]\n");
            return 2;
        }
    }
    if (B < 1 || T < 1 || reps < 1) {
        fprintf(stderr, "bench_conv: batch, threads and reps must be >= 1\n");
        return 2;
    }
    if (bf16 && af_precision_effective(AF_PRECISION_BF16) != AF_PRECISION_BF16) {
        fprintf(stderr, "bench_conv: bf16 asked for, but this CPU has no AVX512_BF16\n");
        return 2;
    }
    omp_set_num_threads(T);
    const dnnl_version_t *ver = dnnl_version();
    printf("kernels: %s\noneDNN %d.%d.%d (cpu runtime %s)\n", af_cpu_kernels_describe(bf16 ? AF_PRECISION_BF16 : 0),
           ver->major, ver->minor, ver->patch, ver->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&strm, eng, dnnl_stream_default_flags)) {
        fprintf(stderr, "bench_conv: no oneDNN CPU engine\n");
        return 1;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", archs);
    for (char *s = strtok(buf, ","); s; s = strtok(NULL, ","))
        if (bench_arch(s, B, T, bf16)) return 1;
    return 0;
}
