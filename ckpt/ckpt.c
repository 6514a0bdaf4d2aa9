/* Writing HDF5 checkpoints (include/arcface/ckpt.h): collective fc rows with
 * parallel HDF5, then worker 0 adds the backbone, optimizer state and metadata,
 * then the temporary file is fsynced and renamed and `latest` updated. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <hdf5.h>

#include "arcface.pb-c.h"
#include "arcface/ckpt.h"
#include "arcface/ckpt_verify.h"
#include "arcface/h5io.h"
#include "arcface/worker.h"

void af_ckpt_path(const af_config *cfg, int64_t step, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/checkpoints/ckpt_%08lld.h5", cfg->output, (long long)step);
}

static af_status fsync_path(const char *path, int dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc) return af_errorf(AF_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return AF_OK;
}

/* Durable replace: tmp is complete and fsynced; rename it over dst, fsync the folder. */
static af_status durable_rename(const char *tmp, const char *dst)
{
    af_status st = fsync_path(tmp, 0);
    if (st) return st;
    if (rename(tmp, dst)) return af_errorf(AF_ERR_IO, "rename %s -> %s failed: %s", tmp, dst, strerror(errno));
    char d[4096];
    snprintf(d, sizeof d, "%s", dst);
    return fsync_path(dirname(d), 1);
}

/* After a failed write: MPI-IO reports a short write without errno, and HDF5's
 * stack then says only "file write failed". A file system with (almost) no
 * room left at that moment is the reason, and the user must read it as such. */
static const char *space_note(const char *file, char *buf, size_t cap)
{
    char d[4300];
    snprintf(d, sizeof d, "%s", file);
    struct statvfs sv;
    buf[0] = 0;
    if (!statvfs(dirname(d), &sv) && (double)sv.f_bavail * (double)sv.f_frsize < 4.0 * 1048576)
        snprintf(buf, cap, " (No space left on device: %.0f bytes free in the checkpoint folder's file system)",
                 (double)sv.f_bavail * (double)sv.f_frsize);
    return buf;
}

static const char *const FC_NAMES[3] = {"/fc/weight", "/fc/momentum", "/fc/exp_avg_sq"};

static af_status write_fc_collective(const af_ctx *ctx, const af_config *cfg, const af_ps_shard *shard,
                                     const char *tmp)
{
    const hsize_t C = (hsize_t)ctx->num_classes, D = (hsize_t)cfg->embedding_size;
    int adamw = !strcmp(cfg->optimizer, "adamw");
    char why[512], room[512];
    af_h5_quiet(); /* our messages replace HDF5's stack on every rank */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = -1;
    if (fapl >= 0 && H5Pset_fapl_mpio(fapl, ctx->world, MPI_INFO_NULL) >= 0)
        f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    af_status st = AF_OK;
    if (f < 0) st = af_errorf(AF_ERR_IO, "%s: cannot create checkpoint file (parallel HDF5): %s", tmp,
                              af_h5_error_text(why, sizeof why));
    /* Creation is collective, so every rank reaches it even after a local error. */
    if ((st = af_ctx_agree(ctx, st))) { if (f >= 0) H5Fclose(f); return st; }
    hid_t g = H5Gcreate2(f, "/fc", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {C, D};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t ds[3] = {-1, -1, -1};
    int nds = adamw ? 3 : 2;
    /* Dataset creation is collective too: every rank creates all of them. */
    for (int i = 0; i < nds && g >= 0 && space >= 0; i++)
        ds[i] = H5Dcreate2(f, FC_NAMES[i], H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    for (int i = 0; i < nds && !st; i++)
        if (ds[i] < 0) st = af_errorf(AF_ERR_IO, "%s: cannot create %s: %s", tmp, FC_NAMES[i], af_h5_error_text(why, sizeof why));
    if (!st && shard && shard->count > 0) {
        hsize_t start[2] = {(hsize_t)shard->start, 0}, count[2] = {(hsize_t)shard->count, D};
        hid_t fs = H5Scopy(space);
        hid_t ms = H5Screate_simple(2, count, NULL);
        const float *src[3] = {shard->w, shard->mom, shard->mom2};
        if (fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
            st = af_errorf(AF_ERR_IO, "%s: rank %d cannot select its rows (HDF5 dataspace)", tmp, ctx->rank);
        for (int i = 0; i < nds && !st; i++)
            if (H5Dwrite(ds[i], H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, src[i]) < 0)
                st = af_errorf(AF_ERR_IO, "%s: rank %d could not write rows [%lld, %lld) of %s%s: %s", tmp, ctx->rank,
                               (long long)shard->start, (long long)(shard->start + shard->count), FC_NAMES[i],
                               space_note(tmp, room, sizeof room), af_h5_error_text(why, sizeof why));
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
    }
    for (int i = 0; i < nds; i++)
        if (ds[i] >= 0 && H5Dclose(ds[i]) < 0 && !st)
            st = af_errorf(AF_ERR_IO, "%s: closing %s failed: %s", tmp, FC_NAMES[i], af_h5_error_text(why, sizeof why));
    if (space >= 0) H5Sclose(space);
    if (g >= 0) H5Gclose(g);
    else if (!st) st = af_errorf(AF_ERR_IO, "%s: cannot create group /fc: %s", tmp, af_h5_error_text(why, sizeof why));
    /* The data reaches the file system here at the latest: a full disk shows up now. */
    if (H5Fclose(f) < 0 && !st)
        st = af_errorf(AF_ERR_IO, "%s: closing the parallel checkpoint failed%s: %s", tmp, space_note(tmp, room, sizeof room),
                       af_h5_error_text(why, sizeof why));
    return st;
}

static af_status write_config_blob(hid_t f, const char *path, const af_ctx *ctx, const af_config *cfg,
                                   int64_t num_image /* images in the training dataset */)
{
    Arcface__TrainConfig tc = ARCFACE__TRAIN_CONFIG__INIT;
    float margins[3] = {cfg->margin_list[0], cfg->margin_list[1], cfg->margin_list[2]};
    tc.network = (char *)cfg->network;
    tc.embedding_size = cfg->embedding_size;
    tc.n_margin_list = 3;
    tc.margin_list = margins;
    tc.scale = cfg->scale;
    tc.margin_grad = (char *)cfg->margin_grad;
    tc.easy_margin = cfg->easy_margin;
    tc.sample_rate = cfg->sample_rate;
    tc.sample_shards = cfg->sample_shards;
    tc.interclass_filtering_threshold = cfg->interclass_filtering_threshold;
    tc.batch_size = cfg->batch_size;
    tc.num_workers = ctx->W;
    tc.lr = cfg->lr;
    tc.momentum = cfg->momentum;
    tc.weight_decay = cfg->weight_decay;
    tc.optimizer = (char *)cfg->optimizer;
    tc.fc_update = (char *)cfg->fc_update;
    tc.num_classes = ctx->num_classes;
    tc.num_epoch = cfg->num_epoch;
    tc.warmup_epoch = cfg->warmup_epoch;
    tc.gradient_acc = cfg->gradient_acc;
    tc.seed = cfg->seed;
    tc.rec = (char *)cfg->rec;
    tc.dropout = cfg->dropout;
    tc.clip_grad = cfg->clip_grad;
    tc.max_steps = cfg->max_steps;
    tc.num_image = num_image;
    size_t n = arcface__train_config__get_packed_size(&tc);
    uint8_t *buf = af_malloc(n ? n : 1, "config message");
    if (!buf) return AF_ERR_NOMEM;
    arcface__train_config__pack(&tc, buf);
    hsize_t dims[1] = {n};
    af_status st = af_h5_write(f, path, "/config", AF_H5_U8, 1, dims, buf);
    free(buf);
    return st;
}

static af_status write_serial_part(const af_ctx *ctx, const af_config *cfg, const struct af_worker *w,
                                   const af_ckpt_state *state, const char *tmp, const uint32_t fc_crc[])
{
    char why[512];
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return af_errorf(AF_ERR_IO, "%s: cannot reopen checkpoint for writing: %s", tmp, af_h5_error_text(why, sizeof why));
    af_status st;
    const af_backbone *bb = &w->bb;
    hsize_t n = bb->n_trainable;
    if ((st = af_backbone_save(bb, f, tmp, "/backbone"))) goto done;
    if (!strcmp(cfg->optimizer, "sgd")) {
        if ((st = af_h5_write(f, tmp, "/optimizer/backbone/momentum", AF_H5_F32, 1, &n, w->sgd.momentum))) goto done;
    } else {
        if ((st = af_h5_write(f, tmp, "/optimizer/backbone/exp_avg", AF_H5_F32, 1, &n, w->adamw.m)) ||
            (st = af_h5_write(f, tmp, "/optimizer/backbone/exp_avg_sq", AF_H5_F32, 1, &n, w->adamw.v)))
            goto done;
    }
    if ((st = write_config_blob(f, tmp, ctx, cfg, w->num_image))) goto done;
    int64_t opt_steps = strcmp(cfg->optimizer, "sgd") ? w->adamw.steps : w->sgd.steps;
    int64_t adam_t = ctx->P == 0 ? w->local.adam_t : 0;
    if ((st = af_h5_attr_set_i64(f, "format_version", AF_CKPT_FORMAT_VERSION)) ||
        (st = af_h5_attr_set_i64(f, "step", state->step)) || (st = af_h5_attr_set_i64(f, "epoch", state->epoch)) ||
        (st = af_h5_attr_set_i64(f, "sample_position", state->sample_position)) ||
        (st = af_h5_attr_set_i64(f, "num_classes", ctx->num_classes)) ||
        (st = af_h5_attr_set_i64(f, "embedding_size", cfg->embedding_size)) ||
        (st = af_h5_attr_set_str(f, "network", cfg->network)) ||
        (st = af_h5_attr_set_i64(f, "num_workers", ctx->W)) || (st = af_h5_attr_set_i64(f, "num_servers", ctx->P)) ||
        (st = af_h5_attr_set_i64(f, "seed", (int64_t)cfg->seed)) ||
        (st = af_h5_attr_set_i64(f, "backbone_opt_steps", opt_steps)) ||
        (st = af_h5_attr_set_i64(f, "fc_adam_t", adam_t)))
        goto done;
    st = af_ckpt_seal(f, tmp, strcmp(cfg->optimizer, "adamw") ? 2 : 3, FC_NAMES, fc_crc);
done:
    if (H5Fclose(f) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: close failed: %s", tmp, af_h5_error_text(why, sizeof why));
    char room[512];
    if (st && space_note(tmp, room, sizeof room)[0] && !strstr(af_errmsg(), "No space left on device")) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", af_errmsg());
        af_errorf(st, "%s%s", msg, room);
    }
    return st;
}

static af_status update_latest(const af_config *cfg, const char *path)
{
    char tmp[4200], dst[4096];
    snprintf(dst, sizeof dst, "%s/checkpoints/latest", cfg->output);
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *f = fopen(tmp, "w");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    const char *base = strrchr(path, '/');
    int bad = fprintf(f, "%s\n", base ? base + 1 : path) < 0;
    bad |= fclose(f) != 0;
    af_status st = bad ? af_errorf(AF_ERR_IO, "%s: write failed: %s", tmp, strerror(errno)) : durable_rename(tmp, dst);
    if (st) unlink(tmp);
    return st;
}

/* Keeps the newest `keep_checkpoints` checkpoints; names carry the step. */
static void prune(const af_config *cfg)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints", cfg->output);
    DIR *d = opendir(dir);
    if (!d) return;
    long long steps[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        long long st;
        char tail[8];
        if (sscanf(e->d_name, "ckpt_%lld.%7s", &st, tail) == 2 && !strcmp(tail, "h5")) steps[n++] = st;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= cfg->keep_checkpoints) {
            char path[4200];
            snprintf(path, sizeof path, "%s/ckpt_%08lld.h5", dir, steps[i]);
            unlink(path);
        }
    }
}

af_status af_ckpt_write(const af_ctx *ctx, const af_config *cfg, const af_ps_shard *shard,
                        const struct af_worker *w, const af_ckpt_state *state, const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    af_status st = AF_OK;
    if (ctx->rank == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoints", cfg->output);
        if (mkdir(cfg->output, 0777) && errno != EEXIST) st = af_errorf(AF_ERR_IO, "%s: mkdir: %s", cfg->output, strerror(errno));
        else if (mkdir(dir, 0777) && errno != EEXIST) st = af_errorf(AF_ERR_IO, "%s: mkdir: %s", dir, strerror(errno));
    }
    if ((st = af_ctx_agree(ctx, st))) return st;
    /* Checksums (and the refusal of NaN/Inf state) before anything is written. */
    uint32_t fc_crc[AF_CKPT_MAX_FC];
    if ((st = af_ckpt_fc_checksums(ctx, shard, cfg->embedding_size, strcmp(cfg->optimizer, "adamw") ? 2 : 3,
                                   FC_NAMES, fc_crc, path)))
        return st;
    st = af_ctx_agree(ctx, write_fc_collective(ctx, cfg, shard, tmp));
    if (!st && ctx->rank == 0) {
        st = write_serial_part(ctx, cfg, w, state, tmp, fc_crc);
        /* Fault injection for the tests: die with the file complete but not yet
         * renamed, as a node failure in the middle of a checkpoint would. */
        const char *kill_at = getenv("ARCFACE_FAULT_KILL_IN_CHECKPOINT");
        if (kill_at && atoll(kill_at) == state->step) raise(SIGKILL);
        if (!st && !(st = durable_rename(tmp, path)) &&
            !(st = update_latest(cfg, path)))
            prune(cfg);
    }
    /* A partial file would keep a full disk full: the previous checkpoint and
     * `latest` are untouched until the rename, so removing it loses nothing. */
    if (st && ctx->rank == 0 && unlink(tmp) == 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", af_errmsg());
        af_errorf(st, "%s (the partial %s was removed; the previous checkpoint and `latest` are unchanged)", msg, tmp);
    }
    return af_ctx_agree(ctx, st);
}

/* ------------------------------------------------------------------------ */

static af_status attr_i64(hid_t f, const char *path, const char *name, int64_t *v)
{
    af_status st = af_h5_attr_get_i64(f, path, name, v);
    if (st) af_error_wrap(st, "%s is not a complete checkpoint", path);
    return st;
}

af_status af_ckpt_read_info(const char *path, af_ckpt_info *info)
{
    memset(info, 0, sizeof *info);
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return af_error_wrap(st, "%s is not a readable checkpoint", path);
    uint8_t *blob = NULL;
    Arcface__TrainConfig *tc = NULL;
    hsize_t n;
    if ((st = attr_i64(f, path, "format_version", &info->format_version))) goto done;
    if (info->format_version != AF_CKPT_FORMAT_VERSION) {
        st = af_errorf(AF_ERR_FORMAT, "%s: checkpoint format_version %lld, this program reads %d", path,
                       (long long)info->format_version, AF_CKPT_FORMAT_VERSION);
        goto done;
    }
    if ((st = attr_i64(f, path, "step", &info->step)) || (st = attr_i64(f, path, "epoch", &info->epoch)) ||
        (st = attr_i64(f, path, "sample_position", &info->sample_position)) ||
        (st = attr_i64(f, path, "num_classes", &info->num_classes)) ||
        (st = attr_i64(f, path, "embedding_size", &info->embedding_size)) ||
        (st = attr_i64(f, path, "num_workers", &info->num_workers)) ||
        (st = attr_i64(f, path, "num_servers", &info->num_servers)) || (st = attr_i64(f, path, "seed", &info->seed)) ||
        (st = attr_i64(f, path, "backbone_opt_steps", &info->backbone_opt_steps)) ||
        (st = attr_i64(f, path, "fc_adam_t", &info->fc_adam_t)))
        goto done;
    if ((st = af_h5_attr_get_str(f, path, "network", info->network, sizeof info->network))) goto done;
    if ((st = af_h5_read(f, path, "/config", AF_H5_U8, 1, &n, (void **)&blob))) goto done;
    tc = arcface__train_config__unpack(NULL, n, blob);
    if (!tc) { st = af_errorf(AF_ERR_FORMAT, "%s: /config is not a TrainConfig message", path); goto done; }
    info->global_batch = (int64_t)tc->batch_size * tc->num_workers;
    info->gradient_acc = tc->gradient_acc;
    info->sample_shards = tc->sample_shards;
    snprintf(info->optimizer, sizeof info->optimizer, "%s", tc->optimizer);
    snprintf(info->fc_update, sizeof info->fc_update, "%s", tc->fc_update);
    const char *need[] = {"/fc/weight", "/fc/momentum", "/backbone"};
    for (int i = 0; i < 3; i++)
        if (!af_h5_exists(f, need[i])) {
            st = af_errorf(AF_ERR_FORMAT, "%s: missing '%s'", path, need[i]);
            goto done;
        }
done:
    if (tc) arcface__train_config__free_unpacked(tc, NULL);
    free(blob);
    H5Fclose(f);
    return st;
}

af_status af_ckpt_check(const af_ckpt_info *info, const af_config *cfg, const af_ctx *ctx, const char *path)
{
#define MISMATCH(field, fmt, a, b) af_errorf(AF_ERR_ARG, "%s: checkpoint has " field " = " fmt ", this run has " fmt \
                                             "; refusing to resume", path, a, b)
    if (info->num_classes != ctx->num_classes)
        return MISMATCH("num_classes", "%lld", (long long)info->num_classes, (long long)ctx->num_classes);
    if (info->embedding_size != cfg->embedding_size)
        return MISMATCH("embedding_size", "%lld", (long long)info->embedding_size, (long long)cfg->embedding_size);
    if (strcmp(info->network, cfg->network)) return MISMATCH("network", "'%s'", info->network, cfg->network);
    if (info->global_batch != (int64_t)cfg->batch_size * ctx->W)
        return MISMATCH("global batch (batch_size x workers)", "%lld", (long long)info->global_batch,
                        (long long)cfg->batch_size * ctx->W);
    if (info->gradient_acc != cfg->gradient_acc) return MISMATCH("gradient_acc", "%d", info->gradient_acc, cfg->gradient_acc);
    if (info->sample_shards != cfg->sample_shards)
        return MISMATCH("sample_shards", "%d", info->sample_shards, cfg->sample_shards);
    if (strcmp(info->optimizer, cfg->optimizer)) return MISMATCH("optimizer", "'%s'", info->optimizer, cfg->optimizer);
    if (strcmp(info->fc_update, cfg->fc_update)) return MISMATCH("fc_update", "'%s'", info->fc_update, cfg->fc_update);
#undef MISMATCH
    return AF_OK;
}

static af_status read_rows(hid_t f, const char *path, const char *name, int64_t start, int64_t count, int D, float *out)
{
    int rank;
    hsize_t dims[AF_H5_MAXRANK];
    af_status st = af_h5_shape(f, path, name, &rank, dims);
    if (st) return st;
    if (rank != 2 || dims[1] != (hsize_t)D || dims[0] < (hsize_t)(start + count))
        return af_errorf(AF_ERR_FORMAT, "%s: '%s' has the wrong shape for rows [%lld, %lld) of dimension %d", path, name,
                         (long long)start, (long long)(start + count), D);
    if (count == 0) return AF_OK;
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), fs = ds < 0 ? -1 : H5Dget_space(ds), ms = -1;
    hsize_t off[2] = {(hsize_t)start, 0}, cnt[2] = {(hsize_t)count, (hsize_t)D};
    herr_t rc = -1;
    if (fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0 &&
        (ms = H5Screate_simple(2, cnt, NULL)) >= 0)
        rc = H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out);
    char why[512];
    af_h5_error_text(why, sizeof why);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ds >= 0) H5Dclose(ds);
    if (rc < 0) return af_errorf(AF_ERR_IO, "%s: reading rows [%lld, %lld) of '%s' failed: %s", path, (long long)start,
                                 (long long)(start + count), name, why);
    return AF_OK;
}

af_status af_ckpt_load_shard(const char *path, af_ps_shard *s, const af_ckpt_info *info)
{
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return st;
    if ((st = read_rows(f, path, "/fc/weight", s->start, s->count, s->D, s->w)) ||
        (st = read_rows(f, path, "/fc/momentum", s->start, s->count, s->D, s->mom)))
        goto done;
    if (s->adamw && (st = read_rows(f, path, "/fc/exp_avg_sq", s->start, s->count, s->D, s->mom2))) goto done;
    s->adam_t = info->fc_adam_t;
done:
    H5Fclose(f);
    return st;
}

af_status af_ckpt_load_worker(const char *path, struct af_worker *w, const af_ckpt_info *info)
{
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return st;
    hsize_t n = w->bb.n_trainable;
    if ((st = af_backbone_load(&w->bb, f, path, "/backbone"))) goto done;
    if (!strcmp(w->cfg->optimizer, "sgd")) {
        if ((st = af_h5_read_into(f, path, "/optimizer/backbone/momentum", AF_H5_F32, 1, &n, w->sgd.momentum))) goto done;
        w->sgd.steps = info->backbone_opt_steps;
    } else {
        if ((st = af_h5_read_into(f, path, "/optimizer/backbone/exp_avg", AF_H5_F32, 1, &n, w->adamw.m)) ||
            (st = af_h5_read_into(f, path, "/optimizer/backbone/exp_avg_sq", AF_H5_F32, 1, &n, w->adamw.v)))
            goto done;
        w->adamw.steps = info->backbone_opt_steps;
    }
    if (w->P == 0) st = af_ckpt_load_shard(path, &w->local, info);
done:
    H5Fclose(f);
    return st;
}

af_status af_ckpt_resolve(const af_config *cfg, char *path, size_t cap, int *found)
{
    *found = 0;
    if (!strcmp(cfg->resume, "none")) return AF_OK;
    if (strcmp(cfg->resume, "auto")) {
        if (access(cfg->resume, R_OK))
            return af_errorf(AF_ERR_IO, "configuration key 'resume': %s: %s", cfg->resume, strerror(errno));
        snprintf(path, cap, "%s", cfg->resume);
        *found = 1;
        return AF_OK;
    }
    char latest[AF_CFG_STR + 32], name[512];
    snprintf(latest, sizeof latest, "%s/checkpoints/latest", cfg->output);
    FILE *fl = fopen(latest, "r");
    if (!fl) return AF_OK; /* no checkpoint yet: a fresh start */
    int ok = fgets(name, sizeof name, fl) != NULL;
    fclose(fl);
    name[strcspn(name, "\r\n")] = 0;
    if (!ok || !name[0] || strchr(name, '/'))
        return af_errorf(AF_ERR_FORMAT, "%s: expected the file name of the newest checkpoint", latest);
    snprintf(path, cap, "%s/checkpoints/%s", cfg->output, name);
    if (access(path, R_OK))
        return af_errorf(AF_ERR_IO, "%s names %s, which cannot be read: %s", latest, path, strerror(errno));
    *found = 1;
    return AF_OK;
}
