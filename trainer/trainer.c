/* The training job (include/arcface/trainer.h): opens the dataset, splits the
 * ranks into workers and servers, prepares the output folder, resolves and
 * checks the checkpoint to resume, then runs the step loop on workers (with the
 * checkpoint and evaluation schedule and the stop-signal agreement) and the
 * message loop on servers. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "arcface/ckpt.h"
#include "arcface/ckpt_verify.h"
#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/data.h"
#include "arcface/h5io.h"
#include "arcface/logfile.h"
#include "arcface/paramserver.h"
#include "arcface/state.h"
#include "arcface/trainer.h"
#include "arcface/transport.h"
#include "arcface/valset.h"
#include "arcface/worker.h"
#include "resume.h"

#define MAX_VAL 8

static volatile sig_atomic_t stop_signal;
static void on_stop_signal(int sig) { stop_signal = sig; }

typedef struct {
    af_ctx ctx;
    af_config cfg;           /* the caller's, copied */
    af_dataset *ds;
    af_worker w;
    af_ps_shard shard;
    int64_t total_steps, warmup_steps, stop_step, steps_per_epoch;
    int64_t lr_total, lr_warmup; /* the lr schedule's, in micro-batches (arcface_torch's total_step, warmup_step) */
    FILE *metrics;
    int resume;               /* a checkpoint is being resumed */
    char resume_path[AF_CFG_STR + 64];
    af_ckpt_info info;
    af_state reg;             /* this rank's checkpointable state */
    int64_t ck_step, ck_epoch, ck_pos; /* the trainer's own: optimizer steps done, loader position */
    uint64_t traffic[3];      /* pulled, pushed, header bytes: job totals at the last log */
    /* periodic evaluation (worker 0) */
    int n_val;
    char val_spec[MAX_VAL][AF_CFG_STR], val_name[MAX_VAL][64];
    af_valset *val[MAX_VAL];
    double val_best[MAX_VAL]; /* Accuracy-Highest so far */
    char val_row[1024];       /* the val_* fields of the next metrics row */
    char last_ckpt[AF_CFG_STR + 64];
    double win_cpu, win_decode; /* --profile: process and decode-thread CPU seconds at the last log */
} job;

/* val_targets: resolved (insightface names: <rec>/<name>.bin) and opened once at start. */
static af_status parse_val_targets(job *j)
{
    return af_valset_resolve_targets(&j->cfg, MAX_VAL, j->val_spec, j->val_name, &j->n_val);
}

static double resident_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

static af_status mkdir_p(const char *path)
{
    char buf[AF_CFG_STR + 16];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return af_errorf(AF_ERR_IO, "%s: mkdir: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return af_errorf(AF_ERR_IO, "%s: mkdir: %s", buf, strerror(errno));
    return AF_OK;
}

/* Products of configuration values end up as int element counts (MPI counts,
 * batch x embedding buffers): refuse values whose products do not fit. */
static af_status check_sizes(const job *j)
{
    const af_config *c = &j->cfg;
    int64_t G = (int64_t)c->batch_size * j->ctx.W;
    int64_t worst = G * (int64_t)(c->embedding_size > c->gradient_acc ? c->embedding_size : c->gradient_acc);
    if (G > INT32_MAX || worst > INT32_MAX)
        return af_errorf(AF_ERR_ARG, "configuration keys 'batch_size' (%d) x %d workers x 'embedding_size' (%d) or "
                         "'gradient_acc' (%d) = %lld exceeds %d, the largest element count this job can address",
                         c->batch_size, j->ctx.W, c->embedding_size, c->gradient_acc, (long long)worst, INT32_MAX);
    return AF_OK;
}

/* Rank 0: output folder, resolved configuration, metrics header. */
static af_status prepare_output(job *j)
{
    af_status st = mkdir_p(j->cfg.output);
    if (st || (st = af_log_tee(j->cfg.output))) return st;
    char path[AF_CFG_STR + 32];
    snprintf(path, sizeof path, "%s/config.txt", j->cfg.output);
    FILE *f = fopen(path, "w");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    af_config_write(&j->cfg, f);
    fprintf(f, "# resolved: num_classes = %lld, workers = %d, servers = %d\n", (long long)j->ctx.num_classes,
            j->ctx.W, j->ctx.P);
    fclose(f);
    printf("arcface-train: configuration (also in %s)\n", path);
    af_config_write(&j->cfg, stdout);
    af_config_notes(&j->cfg, stdout, "note: ");
    printf("dataset: %s\n", af_dataset_describe(j->ds));
    printf("kernels: %s\n", af_cpu_kernels_describe(af_config_precision(&j->cfg)));
    if (af_precision_effective(af_config_precision(&j->cfg)) != af_config_precision(&j->cfg))
        printf("warning: precision bf16 asked for, but this CPU has no AVX512_BF16: training in fp32\n");
    printf("layout: %d workers (ranks 0-%d), %d parameter servers%s, %lld classes, global batch %d\n", j->ctx.W,
           j->ctx.W - 1, j->ctx.P, j->ctx.P ? "" : " (single process: all classes local)",
           (long long)j->ctx.num_classes, j->cfg.batch_size * j->ctx.W);
    snprintf(path, sizeof path, "%s/metrics.csv", j->cfg.output);
    j->metrics = fopen(path, "a");
    if (!j->metrics) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fseek(j->metrics, 0, SEEK_END);
    if (ftell(j->metrics) == 0) {
        fprintf(j->metrics, "step,epoch,loss,step_loss,lr,samples_per_sec,grad_norm,data_wait_s");
        for (int i = 0; i < j->n_val; i++) fprintf(j->metrics, ",val_%s_acc,val_%s_centre_acc", j->val_name[i], j->val_name[i]);
        fprintf(j->metrics, "\n");
    }
    fflush(stdout);
    return AF_OK;
}

/* Rank 0, at the start: metrics.csv keeps its header and the rows of steps up to
 * `step` (the resumed checkpoint's, 0 for a fresh start), so that each step
 * appears once however often the job was interrupted. Rewritten under a
 * temporary name and renamed, so an interruption here loses nothing. */
static af_status metrics_truncate(job *j, int64_t step)
{
    char path[AF_CFG_STR + 32], tmp[AF_CFG_STR + 40], line[8192];
    snprintf(path, sizeof path, "%s/metrics.csv", j->cfg.output);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fflush(j->metrics); /* the header prepare_output wrote */
    FILE *in = fopen(path, "r"), *out = in ? fopen(tmp, "w") : NULL;
    if (!out) {
        if (in) fclose(in);
        return af_errorf(AF_ERR_IO, "%s: cannot rewrite for the resume: %s", in ? tmp : path, strerror(errno));
    }
    int64_t dropped = 0, first = 1;
    while (fgets(line, sizeof line, in)) {
        char *end;
        long long s = strtoll(line, &end, 10);
        /* The header (and anything that is not a step row) is kept as is. */
        if (first || end == line || *end != ',' || s <= step) fputs(line, out);
        else dropped++;
        first = 0;
    }
    int bad = ferror(in) | ferror(out);
    fclose(in);
    bad |= fclose(out) != 0;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return af_errorf(AF_ERR_IO, "%s: rewriting it failed: %s", path, strerror(errno));
    }
    if (dropped) printf("metrics: dropped %lld rows after step %lld from %s (they are run again)\n", (long long)dropped,
                        (long long)step, path);
    fclose(j->metrics);
    j->metrics = fopen(path, "a");
    if (!j->metrics) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return AF_OK;
}

/* Test hook: ARCFACE_LIST_STATE=1 prints every rank's registry once, at init;
 * ARCFACE_LIST_STATE=DIR writes it to DIR/state.rank<N>.txt instead, whole
 * lines that the launcher cannot interleave with other ranks' output. */
static af_status list_state(job *j)
{
    const char *e = getenv("ARCFACE_LIST_STATE");
    if (!e || !*e || !strcmp(e, "0")) return AF_OK;
    char prefix[48];
    snprintf(prefix, sizeof prefix, "rank %d: ", j->ctx.rank);
    if (!strcmp(e, "1")) {
        af_state_print(&j->reg, stdout, prefix);
        fflush(stdout);
        return AF_OK;
    }
    char path[AF_CFG_STR + 64];
    snprintf(path, sizeof path, "%s/state.rank%d.txt", e, j->ctx.rank);
    FILE *f = fopen(path, "w");
    if (!f) return af_errorf(AF_ERR_IO, "ARCFACE_LIST_STATE: %s: cannot write: %s", path, strerror(errno));
    af_state_print(&j->reg, f, prefix);
    if (fclose(f)) return af_errorf(AF_ERR_IO, "ARCFACE_LIST_STATE: %s: write failed: %s", path, strerror(errno));
    return AF_OK;
}

/* CPU seconds of every thread of this process: with --profile, how much of
 * the cores a step used (the training threads, decode threads, MPI). */
static double process_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static af_status server_checkpoint(void *user, int64_t opt_step, const char *path)
{
    job *j = user;
    return af_ckpt_write(&j->ctx, &j->cfg, &j->reg, 0, opt_step, path);
}

static af_status run_server(job *j)
{
    const af_ctx *c = &j->ctx;
    int p = c->server_rank, G = j->cfg.batch_size * c->W;
    int64_t start = af_ctx_server_start(c, p), count = af_ctx_server_count(c, p);
    int64_t touch = af_pfc_max_total(c->num_classes, j->cfg.sample_shards, j->cfg.sample_rate, G) * j->cfg.gradient_acc;
    af_status st = af_ps_shard_init(&j->shard, start, count, j->cfg.embedding_size, touch, &j->cfg);
    if (st) return st;
    af_ps_shard_init_weights(&j->shard, j->cfg.seed);
    if ((st = af_ps_shard_register_state(&j->shard, c->num_classes, &j->reg)) || (st = list_state(j))) return st;
    if (j->resume && (st = af_ckpt_load_state(j->resume_path, &j->reg, &j->info))) return st;
    printf("server %d (rank %d): classes [%lld, %lld) = %lld, weights + optimizer state %.1f MiB, shard total %.1f MiB, "
           "resident %.1f MiB\n", p, c->rank, (long long)start, (long long)(start + count), (long long)count,
           af_ps_shard_state_bytes(&j->shard) / 1048576.0, af_ps_shard_total_bytes(&j->shard) / 1048576.0,
           resident_mib());
    fflush(stdout);
    double w0 = MPI_Wtime(), c0 = process_cpu_s();
    st = af_server_run(c, &j->cfg, &j->shard, j->resume ? j->info.step : 0, server_checkpoint, j);
    if (!st && j->cfg.profile) {
        /* A server mostly waits; on a node it shares with workers, its CPU is theirs lost. */
        double wall = MPI_Wtime() - w0, cpu = process_cpu_s() - c0;
        printf("server %d (rank %d): CPU %.3f s over %.3f s of training (%.1f%% of one core)\n", p, c->rank, cpu, wall,
               wall > 0 ? 100 * cpu / wall : 0);
    }
    if (!st) {
        printf("server %d (rank %d): done, resident %.1f MiB (weights + optimizer state %.1f MiB)\n", p, c->rank,
               resident_mib(), af_ps_shard_state_bytes(&j->shard) / 1048576.0);
        fflush(stdout);
    }
    return st;
}

/* evaluates: worker 0 evaluates right after this checkpoint (the servers are
 * told either way, include/arcface/ctx.h). */
static af_status checkpoint(job *j, int64_t step, int evaluates)
{
    char *path = j->last_ckpt;
    af_ckpt_path(&j->cfg, step, path, sizeof j->last_ckpt);
    if (j->ctx.P > 0 && j->ctx.worker_rank == 0) {
        Arcface__CheckpointRequest cr = ARCFACE__CHECKPOINT_REQUEST__INIT;
        cr.opt_step = step;
        cr.path = path;
        Arcface__Envelope env = ARCFACE__ENVELOPE__INIT;
        env.body_case = ARCFACE__ENVELOPE__BODY_CHECKPOINT;
        env.checkpoint = &cr;
        for (int p = 0; p < j->ctx.P; p++) {
            int srv = af_ctx_server_world_rank(&j->ctx, p);
            af_ctx_wait("a server to take the checkpoint request of step", step, srv, AF_WAIT_REPLY);
            af_status st = af_msg_send(j->ctx.world, srv, AF_TAG_REQUEST, &env, &j->w.ctl);
            af_ctx_wait_done();
            if (st) return st;
        }
    }
    af_status fst = af_ctx_fault(&j->ctx, "checkpoint", step);
    if (fst) return fst;
    j->ck_step = step;
    j->ck_epoch = af_loader_epoch(j->w.loader);
    j->ck_pos = af_loader_position(j->w.loader);
    double t0 = MPI_Wtime();
    af_status st = af_ckpt_write(&j->ctx, &j->cfg, &j->reg, j->w.num_image, step, path);
    af_ctx_progress();
    if (!st) st = af_ctx_eval_announce(&j->ctx, step, evaluates);
    if (!st && j->ctx.rank == 0) {
        struct stat sb;
        double mb = stat(path, &sb) ? 0 : sb.st_size / 1e6, dt = MPI_Wtime() - t0;
        printf("checkpoint: %s (%.1f MB in %.2f s, %.0f MB/s)\n", path, mb, dt, mb / dt);
        fflush(stdout);
    }
    return st;
}

/* Worker 0 evaluates every val_target with the current backbone (eval mode) and
 * the class centres of the checkpoint just written; the other workers wait
 * without spinning, for its signs of life and the end (af_ctx_eval_follow; the
 * servers do the same), so that a worker 0 stopped or hung in an evaluation
 * ends the job within the progress deadline however long evaluations take.
 * The results go to the console and the next metrics row. */
static af_status evaluate(job *j, int64_t step, const char *ckpt_path)
{
    af_status st = AF_OK;
    if (j->ctx.worker_rank == 0) {
        af_ctx_local_work(1);
        printf("Eval: step %lld: evaluating %d target%s on worker 0\n", (long long)step, j->n_val, j->n_val > 1 ? "s" : "");
        fflush(stdout);
        af_backbone *bb = &j->w.bb;
        float *centres = NULL;
        int64_t nc = 0;
        hid_t f;
        if (!(st = af_h5_open_read(ckpt_path, &f))) {
            hsize_t dims[AF_H5_MAXRANK];
            int rank;
            if (j->ctx.num_classes <= 100000 &&
                !(st = af_h5_shape(f, ckpt_path, "/fc/weight", &rank, dims)) && rank == 2)
                if (!(st = af_h5_read(f, ckpt_path, "/fc/weight", AF_H5_F32, 2, dims, (void **)&centres))) nc = (int64_t)dims[0];
            H5Fclose(f);
        }
        char *row = j->val_row;
        size_t cap = sizeof j->val_row, used = 0;
        row[0] = 0;
        for (int i = 0; i < j->n_val && !st; i++) {
            if (!j->val[i] && (st = af_valset_open(&j->val[i], j->val_spec[i], bb->cfg.in_c, bb->cfg.in_h, bb->cfg.in_w)))
                break;
            af_valset_set_progress(j->val[i], af_ctx_eval_beat, &j->ctx);
            if ((st = af_ctx_eval_beat(&j->ctx))) break; /* opening a large .bin takes a while */
            af_valset_result r;
            double t0 = MPI_Wtime();
            if ((st = af_valset_run(j->val[i], bb, centres, nc, &r, NULL))) break;
            /* arcface_torch's global_step counts micro-batches */
            af_verify_log_insightface(stdout, j->val_name[i], (long long)step * j->cfg.gradient_acc, &r.ver,
                                      &j->val_best[i]);
            printf("Eval: step %lld %s: accuracy %.5f +- %.5f, XNorm %.4f, TAR@FAR=1e-3 %.5f", (long long)step,
                   j->val_name[i], r.ver.acc_mean, r.ver.acc_std, r.ver.xnorm, r.ver.tar[0].tar_mean);
            if (r.has_centre) printf(", nearest-centre accuracy %.5f", r.centre_acc);
            printf(" (%.1f s)\n", MPI_Wtime() - t0);
            used += (size_t)snprintf(row + used, cap - used, ",%.6f,", r.ver.acc_mean);
            if (r.has_centre && used < cap) used += (size_t)snprintf(row + used, cap - used, "%.6f", r.centre_acc);
        }
        free(centres);
        fflush(stdout);
        af_ctx_local_work(0);
        af_status est = af_ctx_eval_end(&j->ctx, st != AF_OK);
        return st ? st : est;
    }
    int evaluated, failed;
    if ((st = af_ctx_eval_follow(&j->ctx, step, NULL, NULL, &evaluated, &failed))) return st;
    if (failed) st = af_errorf(AF_ERR_ARG, "worker rank %d: worker 0 failed to evaluate (see its message)", j->ctx.rank);
    return st;
}

static void log_step(job *j, int64_t step, double loss, double step_loss, float lr, double *win_t0, int64_t *win_steps, double t_start,
                     int64_t first_step)
{
    const af_worker *w = &j->w;
    double now = MPI_Wtime(), dt = now - *win_t0;
    double sps = dt > 0 ? (double)*win_steps * w->G * w->acc / dt : 0;
    double per_step = (now - t_start) / (double)(step + 1 - first_step);
    double eta = per_step * (double)(j->stop_step - step - 1);
    int64_t epoch = step * w->acc / (j->steps_per_epoch ? j->steps_per_epoch : 1);
    af_loader_stats ls;
    af_loader_get_stats(w->loader, &ls);
    time_t tt = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime(&tt));
    printf("Training: %s step %lld/%lld epoch %lld loss %.4f lr %.6f speed %.1f samples/s ETA %dh%02dm%02ds\n", ts,
           (long long)(step + 1), (long long)j->stop_step, (long long)epoch, loss, lr, sps, (int)(eta / 3600),
           (int)fmod(eta / 60, 60), (int)fmod(eta, 60));
    if (ls.corrupt_skipped)
        printf("  data: %lld corrupt images skipped so far (skip_corrupt); the latest: %s\n",
               (long long)ls.corrupt_skipped, ls.last_corrupt);
    if (j->cfg.profile) {
        printf("  time per step (s):");
        for (int i = 0; i < AF_T_COUNT; i++) printf(" %s %.4f", af_timer_names[i], w->t[i] / (double)(step + 1 - first_step));
        printf(" | bytes/step (all workers) pulled %.0f pushed %.0f headers %.0f\n",
               (double)j->traffic[0] / (double)(step + 1 - first_step),
               (double)j->traffic[1] / (double)(step + 1 - first_step),
               (double)j->traffic[2] / (double)(step + 1 - first_step));
        /* Per step of this logging window: on a machine without spare cores,
         * CPU time beyond the backbone's own is what the rest of the step
         * takes from it (bench/README-step.md). */
        double cpu = process_cpu_s(), n = (double)*win_steps;
        printf("  cpu per step (s): worker process %.4f, of it decode threads %.4f; wall %.4f\n",
               (cpu - j->win_cpu) / n, (ls.decode_cpu_s - j->win_decode) / n, dt / n);
        j->win_cpu = cpu;
        j->win_decode = ls.decode_cpu_s;
    }
    fflush(stdout);
    fprintf(j->metrics, "%lld,%lld,%.9g,%.9g,%.9g,%.3f,%.6g,%.6f", (long long)(step + 1), (long long)epoch, loss,
            step_loss, lr, sps, w->last_grad_norm, ls.wait_s);
    if (j->val_row[0]) fprintf(j->metrics, "%s\n", j->val_row);
    else {
        for (int i = 0; i < j->n_val; i++) fprintf(j->metrics, ",,");
        fprintf(j->metrics, "\n");
    }
    j->val_row[0] = 0;
    fflush(j->metrics);
    *win_t0 = now;
    *win_steps = 0;
}

/* Whether optimizer step s (0-based, acc micro-batches) reaches a multiple of n
 * micro-batches: arcface_torch counts verbose and frequent in micro-batches
 * (global_step), so with gradient_acc > 1 they fire as often as there. */
static int every_micro(int64_t s, int acc, int n)
{
    return n > 0 && (s + 1) * acc / n > s * acc / n;
}

static af_status run_worker(job *j)
{
    af_status st = af_worker_init(&j->w, &j->ctx, &j->cfg, j->ds, j->resume ? j->info.epoch : 0,
                                  j->resume ? j->info.sample_position : 0);
    if (st) return st;
    if ((st = af_worker_register_state(&j->w, &j->reg)) ||
        (st = af_state_add_scalar(&j->reg, "trainer", "step", &j->ck_step)) ||
        (st = af_state_add_scalar(&j->reg, "loader", "epoch", &j->ck_epoch)) ||
        (st = af_state_add_scalar(&j->reg, "loader", "sample_position", &j->ck_pos)) || (st = list_state(j)))
        return st;
    if (j->resume && (st = af_ckpt_load_state(j->resume_path, &j->reg, &j->info))) return st;
    /* pretrained weights for a fresh run; a resumed one has its own (every worker reads the same file) */
    if (!j->resume && j->cfg.init_from[0] && (st = af_backbone_load_file(&j->w.bb, j->cfg.init_from)))
        return af_error_wrap(st, "configuration key 'init_from'");
    af_worker *w = &j->w;
    const int acc = j->cfg.gradient_acc;
    j->steps_per_epoch = af_loader_steps_per_epoch(w->loader);
    j->total_steps = j->steps_per_epoch * j->cfg.num_epoch / acc;
    j->warmup_steps = j->steps_per_epoch * j->cfg.warmup_epoch / acc;
    j->lr_total = j->steps_per_epoch * j->cfg.num_epoch;
    j->lr_warmup = j->steps_per_epoch * j->cfg.warmup_epoch;
    j->stop_step = j->cfg.max_steps > 0 && j->cfg.max_steps < j->total_steps ? j->cfg.max_steps : j->total_steps;
    if (j->ctx.rank == 0) {
        printf("schedule: %lld micro-steps per epoch, %lld optimizer steps in total (warmup %lld), stopping after %lld; "
               "lr: arcface_torch's PolyScheduler (power 2) over %lld micro-batches, warmup %lld\n",
               (long long)j->steps_per_epoch, (long long)j->total_steps, (long long)j->warmup_steps,
               (long long)j->stop_step, (long long)j->lr_total, (long long)j->lr_warmup);
        fflush(stdout);
    }
    int64_t first = j->resume ? j->info.step : 0, win_steps = 0;
    double win_loss = 0; /* summed over the logging window: the log shows its mean, as arcface_torch's AverageMeter */
    double t_start = MPI_Wtime(), win_t0 = t_start;
    if (j->cfg.profile) {
        af_loader_stats ls0;
        af_loader_get_stats(w->loader, &ls0);
        j->win_cpu = process_cpu_s();
        j->win_decode = ls0.decode_cpu_s;
    }
    /* Test hook: a checkpoint of the state just loaded, before any step, must
     * equal the one resumed from; an item registered but not restored (or
     * restored and then re-initialised) shows up as a difference. */
    const char *rt = getenv("ARCFACE_TEST_CHECKPOINT_AT_RESUME");
    if (j->resume && rt && *rt == '1' && (st = checkpoint(j, first, 0))) return st;
    if (first >= j->stop_step) {
        if (j->ctx.rank == 0) printf("arcface-train: the checkpoint is already at step %lld; nothing to do\n", (long long)first);
        return af_worker_shutdown(w, first, 0);
    }
    for (int64_t s = first; s < j->stop_step; s++) {
        float lr = af_lr_at(j->cfg.lr, s, acc, j->lr_warmup, j->lr_total);
        double loss;
        if ((st = af_worker_step(w, s, lr, &loss))) return af_error_wrap(st, "optimizer step %lld", (long long)s);
        win_steps++;
        win_loss += loss;
        int last = s + 1 == j->stop_step;
        int eval_now = j->n_val > 0 && (last || every_micro(s, acc, j->cfg.verbose));
        /* An evaluation needs the class centres, which live on the servers: it
         * reads them from a checkpoint of the same step. */
        int ckpt_now = last || eval_now || (j->cfg.save_every > 0 && (s + 1) % j->cfg.save_every == 0);
        double t_pause = MPI_Wtime(), cpu_pause = j->cfg.profile ? process_cpu_s() : 0;
        if (ckpt_now && (st = checkpoint(j, s + 1, eval_now))) return st;
        if (eval_now && (st = evaluate(j, s + 1, j->last_ckpt))) return st;
        /* Throughput and ETA leave checkpoint and evaluation time out. */
        t_pause = MPI_Wtime() - t_pause;
        if (j->cfg.profile) j->win_cpu += process_cpu_s() - cpu_pause;
        win_t0 += t_pause;
        t_start += t_pause;
        int log_now = every_micro(s, acc, j->cfg.frequent) || last || eval_now;
        if (log_now && j->cfg.profile && j->ctx.W > 1) {
            /* Traffic is per worker; the log shows the job's total. */
            uint64_t mine[3] = {w->bytes_pulled, w->bytes_pushed, w->msg_header_bytes}, sum[3];
            af_ctx_wait("the traffic all-reduce among workers after optimizer step", s, -1, AF_WAIT_GROUP);
            int rc = MPI_Allreduce(mine, sum, 3, MPI_UINT64_T, MPI_SUM, j->ctx.workers);
            af_ctx_wait_done();
            if (rc != MPI_SUCCESS)
                return af_errorf(AF_ERR_MPI, "worker rank %d: the traffic all-reduce failed", j->ctx.rank);
            j->traffic[0] = sum[0]; j->traffic[1] = sum[1]; j->traffic[2] = sum[2];
        } else {
            j->traffic[0] = w->bytes_pulled; j->traffic[1] = w->bytes_pushed; j->traffic[2] = w->msg_header_bytes;
        }
        if (log_now) {
            if (j->ctx.rank == 0)
                log_step(j, s, win_loss / (double)win_steps, loss, lr, &win_t0, &win_steps, t_start, first);
            win_steps = 0;
            win_loss = 0;
        }
        /* A signal may reach any subset of workers: agree on it every step. */
        int sig = stop_signal, fwd;
        if (j->ctx.P > 0 && (st = af_worker_poll_stop(w, &fwd))) return st;
        if (!sig && j->ctx.P > 0) sig = fwd;
        af_ctx_wait("the agreement on signals among workers after optimizer step", s, -1, AF_WAIT_GROUP);
        int rc = j->ctx.W > 1 ? MPI_Allreduce(MPI_IN_PLACE, &sig, 1, MPI_INT, MPI_MAX, j->ctx.workers) : MPI_SUCCESS;
        af_ctx_wait_done();
        if (rc != MPI_SUCCESS)
            return af_errorf(AF_ERR_MPI, "worker rank %d: the all-reduce agreeing on signals failed", j->ctx.rank);
        if (sig && !last) {
            if ((!ckpt_now && (st = checkpoint(j, s + 1, 0))) || (st = af_worker_shutdown(w, s + 1, 1))) return st;
            return af_errorf(AF_ERR_INTERRUPTED, "stopped by signal %d after the checkpoint of step %lld", sig,
                             (long long)(s + 1));
        }
    }
    return af_worker_shutdown(w, j->stop_step, 0);
}

static void job_free(job *j, int ctx_ready)
{
    fflush(stdout);
    for (int i = 0; i < j->n_val; i++) af_valset_close(j->val[i]);
    if (j->metrics) fclose(j->metrics);
    af_worker_free(&j->w);
    af_ps_shard_free(&j->shard);
    af_dataset_close(j->ds);
    af_state_free(&j->reg);
    if (ctx_ready) af_ctx_free(&j->ctx);
    free(j);
}

void af_trainer_install_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

af_status af_trainer_run(const af_config *cfg, MPI_Comm world, af_trainer_outcome *out)
{
    memset(out, 0, sizeof *out);
    job *jp = af_calloc(1, sizeof *jp, "trainer state");
    if (!jp) return AF_ERR_NOMEM;
    job *const j = jp;
    j->cfg = *cfg;
    int rank;
    MPI_Comm_rank(world, &rank);
    af_dataset_opts dopts = {.num_classes = 0};
    af_status st = af_dataset_open(&j->ds, j->cfg.rec, &dopts);
    int64_t C = 0;
    if (!st) {
        int64_t dc = af_dataset_num_classes(j->ds);
        C = j->cfg.num_classes ? j->cfg.num_classes : dc;
        if (C < dc)
            st = af_errorf(AF_ERR_ARG, "configuration key 'num_classes': %lld, but dataset '%s' has %lld classes",
                           (long long)C, j->cfg.rec, (long long)dc);
    } else {
        af_error_wrap(st, "%s: configuration key 'rec'", af_config_where(&j->cfg, "rec"));
    }
    /* The dataset's own message must survive the layout check that follows
     * (which, with 0 classes, fails too). */
    char first_msg[1024];
    snprintf(first_msg, sizeof first_msg, "%s", st ? af_errmsg() : "");
    af_status cst = af_ctx_init(&j->ctx, world, j->cfg.ps, C);
    if (cst && !st) st = cst;
    else if (st) af_errorf(st, "%s", first_msg);
    /* The lowest rank that failed at start-up, the one that prints the error
     * (every rank would print the same message otherwise). */
    int blame = -1;
    if (!cst) {
        j->ctx.stop_flag = &stop_signal;
        j->ctx.comm_timeout = j->cfg.comm_timeout;
        st = af_ctx_agree(&j->ctx, st);
    } else {
        /* The layout checks fail alike on every rank: agree on the world as given. */
        int mine = rank, first = 0;
        if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world) == MPI_SUCCESS) blame = first;
    }
    if (!st) st = af_ctx_watchdog_start(&j->ctx);
    if (!st) st = parse_val_targets(j);
    if (!st) st = check_sizes(j);
    if (!st) {
        /* Every rank finds, verifies and checks the same checkpoint; with
         * checkpoints present, none that verifies is an error, never a silent
         * fresh start (include/arcface/ckpt_verify.h). Checked before the output
         * folder is touched: a refused resume writes nothing. */
        st = af_ckpt_find(&j->ctx, &j->cfg, j->resume_path, sizeof j->resume_path, &j->resume, &j->info);
        if (!st && j->resume) st = af_resume_check(&j->info, &j->cfg, &j->ctx, j->ds, j->resume_path, rank == 0);
    }
    if (!cst) {
        /* Before anything large is allocated: a job that cannot fit fails now, on every rank. */
        af_status cap = af_check_capacity(&j->ctx, &j->cfg);
        if (!st) st = cap;
        st = af_ctx_agree(&j->ctx, st);
    }
    if (!st && rank == 0) st = prepare_output(j);
    /* Every rank agrees, including one whose own step above failed: a rank that
     * skipped this while the others waited in it would hang the job. */
    if (!cst) st = af_ctx_agree(&j->ctx, st);
    if (!st) {
        if (rank == 0) {
            if (j->resume)
                printf("resume: %s at optimizer step %lld (epoch %lld, sample %lld), written by %lld workers and %lld "
                       "servers\n", j->resume_path, (long long)j->info.step, (long long)j->info.epoch,
                       (long long)j->info.sample_position, (long long)j->info.num_workers, (long long)j->info.num_servers);
            else
                printf("resume: no checkpoint (resume = %s), starting fresh\n", j->cfg.resume);
            fflush(stdout);
        }
        if (!st && rank == 0) st = metrics_truncate(j, j->resume ? j->info.step : 0);
        st = af_ctx_agree(&j->ctx, st);
    }
    if (st) {
        /* Everything up to here checks what the configuration names (dataset,
         * validation files, output folder, checkpoint): a configuration error. */
        out->startup_error = 1;
        if (!cst) blame = af_ctx_first_failure();
        out->quiet = blame >= 0 && blame != rank;
        job_free(j, !cst);
        return st;
    }
    out->is_server = j->ctx.role == AF_ROLE_SERVER;
    {
        /* One line per rank so that a multi-node job shows where each role landed
         * (tests/slurm/two_nodes.sh checks that workers and servers span the nodes). */
        char host[MPI_MAX_PROCESSOR_NAME] = "?";
        int hlen = 0;
        if (MPI_Get_processor_name(host, &hlen) != MPI_SUCCESS) snprintf(host, sizeof host, "?");
        printf("rank %d: %s %d on host %s\n", rank, out->is_server ? "server" : "worker",
               out->is_server ? j->ctx.server_rank : j->ctx.worker_rank, host);
        fflush(stdout);
    }
    st = out->is_server ? run_server(j) : run_worker(j);
    if (st && st != AF_ERR_INTERRUPTED) {
        out->must_abort = 1;
        return st;
    }
    job_free(j, 1);
    return st;
}
