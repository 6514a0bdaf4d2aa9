/* bench_backbone: one training step of a backbone (forward in training mode,
 * backward, gradient clipping at 5, SGD with momentum and weight decay), ours
 * against PyTorch's in the same run, with OpenBLAS's sgemm rate measured
 * alongside as the machine's ceiling.
 *
 *   bench_backbone [--arch r18,r50,mbf] [--batch 32] [--steps 3] [--threads 2] [--rounds 2]
 *                  [--no-torch] [--no-winograd] [--profile] [--python /usr/bin/python3] [--peer PATH]
 *
 * Each measurement runs in a process of its own (ours in a forked child, the
 * PyTorch peer, bench_backbone_peer.py, as a child python), so the reported
 * peak resident memory is that measurement's alone. On a shared machine other
 * processes can only slow a step down, so each side reports its fastest step,
 * and ours and PyTorch's alternate for --rounds rounds, keeping each one's
 * best. Training FLOPs are taken
 * as 3 x the forward pass (2 x multiply-accumulates). Results are described
 * in bench/README-backbone.md. */
#include <cblas.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arcface/backbone.h"
#include "arcface/optim.h"
#include "arcface/rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* CPU seconds used by all threads of this process */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Best of a few 3072^3 sgemm calls on `threads` OpenBLAS threads, GFLOP/s. */
static double sgemm_rate(int threads)
{
    const int n = 3072;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) a[i] = b[i] = 1.0f / (1 + i % 7), c[i] = 0;
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(threads);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    openblas_set_num_threads(saved);
    free(a), free(b), free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

typedef struct {
    double sps, cpu_sps, fwd, bwd, opt, gmacs;
    long rss;
    int ok;
} result;

/* Runs in a forked child: builds, warms up, times `steps` steps. */
static int no_winograd;
static af_precision precision;

static result run_ours(const char *arch, int batch, int steps, int threads, int profile)
{
    result r = {0};
    af_backbone_config cfg = {.arch = arch, .max_batch = batch, .nthreads = threads, .seed = 1, .profile = profile,
                              .no_winograd = no_winograd, .precision = precision};
    af_backbone m;
    if (af_backbone_init(&m, &cfg)) {
        fprintf(stderr, "bench_backbone: %s\n", af_errmsg());
        return r;
    }
    af_sgd sgd;
    if (af_sgd_init(&sgd, m.n_trainable)) return r;
    const size_t nx = (size_t)batch * m.cfg.in_c * m.cfg.in_h * m.cfg.in_w, ne = (size_t)batch * m.cfg.embedding;
    float *x = malloc(nx * sizeof(float)), *demb = malloc(ne * sizeof(float));
    af_rng g;
    af_rng_seed(&g, 1, AF_RNG_STREAM_TEST, 0, 0);
    for (size_t i = 0; i < nx; i++) x[i] = af_rng_normal(&g);
    for (size_t i = 0; i < ne; i++) demb[i] = af_rng_normal(&g) / batch;
    for (int s = -1; s < steps; s++) { /* step -1 is the warm-up */
        const float *emb;
        double c0 = cpu_now(), t0 = now();
        af_backbone_zero_grad(&m);
        if (af_backbone_forward(&m, x, batch, 1, NULL, &emb)) return r;
        double t1 = now();
        if (af_backbone_backward(&m, demb, NULL)) return r;
        double t2 = now();
        af_clip_grad_norm(m.grads, m.n_trainable, 5.0);
        af_sgd_step(&sgd, m.params, m.grads, 0.1f, 0.9f, 5e-4f);
        double t3 = now(), cpu = cpu_now() - c0;
        if (s >= 0 && (r.cpu_sps == 0 || batch * threads / cpu > r.cpu_sps)) r.cpu_sps = batch * threads / cpu;
        /* the fastest step: other processes on a shared machine only ever slow a step down */
        if (s >= 0 && (r.fwd == 0 || t3 - t0 < r.fwd + r.bwd + r.opt)) r.fwd = t1 - t0, r.bwd = t2 - t1, r.opt = t3 - t2;
        if (s == -1 && profile) af_backbone_profile_print(&m, stderr, 0); /* discard warm-up */
    }
    if (profile) af_backbone_profile_print(&m, stderr, 25);
    r.sps = batch / (r.fwd + r.bwd + r.opt);
    r.gmacs = af_backbone_macs(&m) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss = ru.ru_maxrss * 1024L;
    r.ok = 1;
    free(x), free(demb);
    af_sgd_free(&sgd);
    af_backbone_free(&m);
    return r;
}

static const char *loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f || !fgets(buf, sizeof buf, f)) snprintf(buf, sizeof buf, "unknown");
    if (f) fclose(f);
    buf[strcspn(buf, "\n")] = 0;
    return buf;
}

static result ours_in_child(const char *arch, int batch, int steps, int threads, int profile)
{
    result r = {0};
    int fd[2];
    if (pipe(fd)) return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result c = run_ours(arch, batch, steps, threads, profile);
        ssize_t w = write(fd[1], &c, sizeof c);
        _exit(w == (ssize_t)sizeof c ? 0 : 1);
    }
    close(fd[1]);
    if (pid < 0 || read(fd[0], &r, sizeof r) != (ssize_t)sizeof r) r.ok = 0;
    close(fd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    return r;
}

static result torch_peer(const char *python, const char *peer, const char *arch, int batch, int steps, int threads)
{
    result r = {0};
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d '%s' '%s' %s %d %d %d %s", threads, python, peer, arch, batch, steps,
             threads, af_precision_name(precision));
    FILE *p = popen(cmd, "r");
    if (!p) return r;
    char name[32];
    double sps;
    long rss;
    double cpu_sps;
    if (fscanf(p, "%31s %lf %ld %lf", name, &sps, &rss, &cpu_sps) == 4) {
        r.sps = sps;
        r.cpu_sps = cpu_sps;
        r.rss = rss;
        r.ok = 1;
    }
    if (pclose(p) != 0) r.ok = 0;
    return r;
}

int main(int argc, char **argv)
{
    char archs[256] = "r18,r50,mbf";
    int batch = 32, steps = 3, threads = 2, no_torch = 0, profile = 0, rounds = 2;
    const char *python = "/usr/bin/python3";
    char peer[4096], src[4096];
    snprintf(src, sizeof src, "%s", __FILE__); /* the peer script lives beside this source */
    snprintf(peer, sizeof peer, "%s/bench_backbone_peer.py", dirname(src));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--arch")) snprintf(archs, sizeof archs, "%s", v), i++;
        else if (!strcmp(a, "--batch")) batch = atoi(v), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(a, "--rounds")) rounds = atoi(v), i++;
        else if (!strcmp(a, "--python")) python = v, i++;
        else if (!strcmp(a, "--peer")) snprintf(peer, sizeof peer, "%s", v), i++;
        else if (!strcmp(a, "--no-torch")) no_torch = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (!strcmp(a, "--no-winograd")) no_winograd = 1;
        else if (!strcmp(a, "--precision") && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            precision = strcmp(v, "bf16") ? AF_PRECISION_FP32 : AF_PRECISION_BF16, i++;
        else {
            fprintf(stderr, "usage: bench_backbone [--arch r18,r50,mbf] [--batch 32] [--steps 3] [--threads 2] "
                            "[--no-torch] [--no-winograd] [--precision fp32|bf16] [--profile] [--python PY] [--peer PATH]\n");
            return 2;
        }
    }
    if (batch < 2 || steps < 1 || threads < 1) {
        fprintf(stderr, "bench_backbone: need batch >= 2, steps >= 1, threads >= 1\n");
        return 2;
    }
    double peak = sgemm_rate(threads);
    printf("kernels: %s\n", af_cpu_kernels_describe(precision));
    if (af_precision_effective(precision) != precision)
        printf("warning: this CPU has no AVX512_BF16; bf16 falls back to fp32 (PyTorch's peer still uses bf16 autocast)\n");
    printf("training step (forward, backward, clip, SGD) at batch %d, %d threads: fastest of %d steps after a warm-up, "
           "best of %d alternating rounds\n", batch, threads, steps, rounds);
    printf("OpenBLAS sgemm (3072^3) on %d threads: %.1f GFLOP/s at the start (the %%sgemm column uses the best of\n"
           "this and the measurements between architectures, printed at the end)\n", threads, peak);
    printf("samples/s from the fastest wall-clock step; in brackets, from the fastest step's CPU time divided by\n"
           "the thread count, an estimate for an idle machine when other work shares the cores (load now %s)\n\n",
           loadavg());
    printf("%-5s %9s %9s %6s %9s %7s %11s %10s %10s   %s\n", "arch", "ours/s", "torch/s", "ratio", "GFLOP/s",
           "%sgemm", "fwd/bwd/opt", "RSS ours", "RSS torch", "[ours/s torch/s ratio from CPU time]");
    int failed = 0;
    for (char *save = NULL, *arch = strtok_r(archs, ",", &save); arch; arch = strtok_r(NULL, ",", &save)) {
        /* alternate ours and PyTorch's so that both see the same background load; keep each one's best */
        result o = {0}, t = {0};
        for (int k = 0; k < rounds; k++) {
            result a = ours_in_child(arch, batch, steps, threads, profile && k == 0);
            if (a.ok && (!o.ok || a.sps > o.sps)) o = a;
            if (no_torch) continue;
            result b = torch_peer(python, peer, arch, batch, steps, threads);
            if (b.ok && (!t.ok || b.sps > t.sps)) t = b;
        }
        if (!o.ok) {
            printf("%-5s failed\n", arch);
            failed = 1;
            continue;
        }
        /* the ceiling too is measured again between architectures, keeping its best */
        const double again = sgemm_rate(threads);
        if (again > peak) peak = again;
        const double gflops = 3.0 * 2.0 * o.gmacs * o.sps;
        char ts[16] = "-", ratio[16] = "-", trss[16] = "-", cpu[64];
        snprintf(cpu, sizeof cpu, "[%.2f - -]", o.cpu_sps);
        if (t.ok) {
            snprintf(cpu, sizeof cpu, "[%.2f %.2f %.2fx]", o.cpu_sps, t.cpu_sps, o.cpu_sps / t.cpu_sps);
            snprintf(ts, sizeof ts, "%.2f", t.sps);
            snprintf(ratio, sizeof ratio, "%.2fx", o.sps / t.sps);
            snprintf(trss, sizeof trss, "%.2f GB", t.rss / 1e9);
        }
        const double tot = o.fwd + o.bwd + o.opt;
        printf("%-5s %9.2f %9s %6s %9.1f %6.0f%% %3.0f/%2.0f/%2.0f%% %7.2f GB %10s   %s\n", arch, o.sps, ts, ratio,
               gflops, 100.0 * gflops / peak, 100 * o.fwd / tot, 100 * o.bwd / tot, 100 * o.opt / tot, o.rss / 1e9,
               trss, cpu);
        fflush(stdout);
    }
    printf("\nOpenBLAS sgemm, best measured: %.1f GFLOP/s\n", peak);
    return failed;
}
