/* HDF5 checkpoints of the state registry (include/arcface/ckpt.h, state.h).
 * Writing: every rank describes the items it registered; the descriptions are
 * gathered so that all ranks agree on one plan (the row-split datasets to
 * create, in one order; rows covered exactly once; whole items held by rank 0;
 * scalars equal wherever held), create those datasets collectively with
 * parallel HDF5 and each write their own rows; world rank 0 then adds the whole
 * items, the scalars and the metadata serially, and the temporary file is
 * fsynced and renamed and `latest` updated. Reading is per rank: each reads its
 * own items, and of a row-split item only its own rows. Writing and reading one
 * item each happen in one function (write_rows_item, write_whole_item,
 * read_item). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
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

/* ---- the write plan: every rank's items, gathered ---- */

typedef struct {
    char name[AF_STATE_NAME_MAX];
    int32_t kind, type, ndim, rank;
    int64_t shape[AF_STATE_MAXDIM], row0, nrows, value;
} item_desc;

static int desc_cmp(const void *a, const void *b)
{
    const item_desc *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    if (x->row0 != y->row0) return x->row0 < y->row0 ? -1 : 1;
    return x->rank - y->rank;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t u = (size_t)snprintf(buf, cap, "(");
    for (int k = 0; k < ndim && u < cap; k++) u += (size_t)snprintf(buf + u, cap - u, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (u < cap) snprintf(buf + u, cap - u, ")");
}

/* Collective over ctx->world: *all (sorted by name, then first row) holds every
 * rank's items. */
static af_status gather_plan(const af_ctx *ctx, const af_state *reg, item_desc **all, int *n_all)
{
    int size;
    MPI_Comm_size(ctx->world, &size);
    item_desc *mine = af_calloc((size_t)(reg->n ? reg->n : 1), sizeof *mine, "checkpoint item list");
    int *counts = af_calloc((size_t)size, sizeof(int), "checkpoint plan counts");
    int *displs = af_calloc((size_t)size, sizeof(int), "checkpoint plan offsets");
    af_status st = mine && counts && displs ? AF_OK : AF_ERR_NOMEM;
    *all = NULL;
    *n_all = 0;
    if ((st = af_ctx_agree(ctx, st))) goto done;
    for (int i = 0; i < reg->n; i++) {
        const af_state_item *it = &reg->items[i];
        item_desc *d = &mine[i];
        snprintf(d->name, sizeof d->name, "%s", it->name);
        d->kind = it->kind;
        d->type = it->type;
        d->ndim = it->ndim;
        d->rank = ctx->rank;
        memcpy(d->shape, it->shape, sizeof d->shape);
        d->row0 = it->row0;
        d->nrows = it->nrows;
        d->value = it->kind == AF_STATE_SCALAR ? *(const int64_t *)it->data : 0;
    }
    int bytes = (int)(reg->n * sizeof *mine);
    if (MPI_Allgather(&bytes, 1, MPI_INT, counts, 1, MPI_INT, ctx->world) != MPI_SUCCESS) {
        st = af_errorf(AF_ERR_MPI, "checkpoint: gathering the item counts of every rank failed");
        goto done;
    }
    int64_t total = 0;
    for (int r = 0; r < size; r++) {
        displs[r] = (int)total;
        total += counts[r];
    }
    *all = af_malloc((size_t)(total ? total : 1), "checkpoint plan");
    if ((st = af_ctx_agree(ctx, *all ? AF_OK : AF_ERR_NOMEM))) goto done;
    if (MPI_Allgatherv(mine, bytes, MPI_BYTE, *all, counts, displs, MPI_BYTE, ctx->world) != MPI_SUCCESS) {
        st = af_errorf(AF_ERR_MPI, "checkpoint: gathering the item lists of every rank failed");
        goto done;
    }
    *n_all = (int)(total / (int64_t)sizeof **all);
    qsort(*all, (size_t)*n_all, sizeof **all, desc_cmp);
done:
    free(mine);
    free(counts);
    free(displs);
    if (st) {
        free(*all);
        *all = NULL;
    }
    return st;
}

/* Same verdict on every rank (all hold the same plan): each name one kind and
 * shape; rows tiled exactly once; whole items held by rank 0; scalars equal. */
static af_status check_plan(const item_desc *d, int n, const char *path)
{
    char a[96], b[96];
    for (int i = 0, j; i < n; i = j) {
        int64_t next_row = 0, have_rank0 = 0;
        for (j = i; j < n && !strcmp(d[j].name, d[i].name); j++) {
            const item_desc *x = &d[j];
            if (x->kind != d[i].kind || x->type != d[i].type || x->ndim != d[i].ndim ||
                memcmp(x->shape, d[i].shape, sizeof x->shape)) {
                shape_str(a, sizeof a, d[i].ndim, d[i].shape);
                shape_str(b, sizeof b, x->ndim, x->shape);
                return af_errorf(AF_ERR_PROTO, "%s: item '%s' is %s on rank %d but %s on rank %d", path, x->name, a,
                                 d[i].rank, b, x->rank);
            }
            if (x->kind == AF_STATE_SCALAR && x->value != d[i].value)
                return af_errorf(AF_ERR_PROTO, "%s: '%s' is %lld on rank %d but %lld on rank %d", path, x->name,
                                 (long long)d[i].value, d[i].rank, (long long)x->value, x->rank);
            have_rank0 |= x->rank == 0;
            if (x->kind == AF_STATE_ROWS && x->nrows > 0) {
                if (x->row0 != next_row)
                    return af_errorf(AF_ERR_PROTO, "%s: rows [%lld, %lld) of '%s' are held %s (rank %d starts at %lld)",
                                     path, (long long)(x->row0 < next_row ? x->row0 : next_row),
                                     (long long)(x->row0 < next_row ? next_row : x->row0), x->name,
                                     x->row0 < next_row ? "twice" : "by no rank", x->rank, (long long)x->row0);
                next_row += x->nrows;
            }
        }
        if (d[i].kind == AF_STATE_ROWS && next_row != d[i].shape[0])
            return af_errorf(AF_ERR_PROTO, "%s: rows [%lld, %lld) of '%s' are held by no rank", path,
                             (long long)next_row, (long long)d[i].shape[0], d[i].name);
        if (d[i].kind == AF_STATE_WHOLE && !have_rank0)
            return af_errorf(AF_ERR_PROTO, "%s: '%s' (registered by rank %d) is not held by rank 0, which writes whole "
                             "items", path, d[i].name, d[i].rank);
    }
    return AF_OK;
}

/* ---- one item ---- */

static hid_t mem_type(af_state_type t) { return t == AF_STATE_I64 ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT; }

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

/* Collective: every rank creates the dataset; a rank holding rows writes them. */
static af_status write_rows_item(hid_t f, const char *tmp, int rank, const item_desc *d, const af_state_item *mine)
{
    hsize_t dims[2] = {(hsize_t)d->shape[0], (hsize_t)d->shape[1]};
    char why[512], room[256];
    hid_t space = H5Screate_simple(2, dims, NULL), lcpl = H5Pcreate(H5P_LINK_CREATE), ds = -1;
    if (space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        ds = H5Dcreate2(f, d->name, mem_type(d->type), space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    af_status st = ds < 0 ? af_errorf(AF_ERR_IO, "%s: rank %d cannot create '%s': %s", tmp, rank, d->name,
                                      af_h5_error_text(why, sizeof why)) : AF_OK;
    /* The MPI-IO driver moves at most 2 GiB per call ("can't convert from size
     * to size_i" above that: a 40M x 16 shard is 2.56 GB), so rows go in
     * slabs of at most 1 GiB; the writes are independent, any count per rank. */
    const size_t esz = d->type == AF_STATE_I64 ? 8 : 4, per = (size_t)(1 << 30) / (esz * (dims[1] ? dims[1] : 1));
    for (int64_t r0 = 0; !st && mine && r0 < mine->nrows; r0 += (int64_t)per) {
        int64_t n = mine->nrows - r0 < (int64_t)per ? mine->nrows - r0 : (int64_t)per;
        hsize_t start[2] = {(hsize_t)(mine->row0 + r0), 0}, count[2] = {(hsize_t)n, dims[1]};
        hid_t fs = H5Scopy(space), ms = H5Screate_simple(2, count, NULL);
        const char *src = (const char *)mine->data + (size_t)r0 * dims[1] * esz;
        if (fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
            H5Dwrite(ds, mem_type(d->type), ms, fs, H5P_DEFAULT, src) < 0)
            st = af_errorf(AF_ERR_IO, "%s: rank %d could not write rows [%lld, %lld) of %s%s: %s", tmp, rank,
                           (long long)(mine->row0 + r0), (long long)(mine->row0 + r0 + n), d->name,
                           space_note(tmp, room, sizeof room), af_h5_error_text(why, sizeof why));
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
    }
    if (ds >= 0 && H5Dclose(ds) < 0 && !st)
        st = af_errorf(AF_ERR_IO, "%s: closing '%s' failed%s: %s", tmp, d->name, space_note(tmp, room, sizeof room),
                       af_h5_error_text(why, sizeof why));
    if (lcpl >= 0) H5Pclose(lcpl);
    if (space >= 0) H5Sclose(space);
    return st;
}

static af_status write_whole_item(hid_t f, const char *tmp, const af_state_item *it)
{
    hsize_t dims[AF_STATE_MAXDIM];
    for (int k = 0; k < it->ndim; k++) dims[k] = (hsize_t)it->shape[k];
    return af_h5_write(f, tmp, it->name, it->type == AF_STATE_I64 ? AF_H5_I64 : AF_H5_F32, it->ndim, dims, it->data);
}

static af_status write_scalar_item(hid_t f, const char *tmp, const item_desc *d)
{
    af_status st = af_h5_attr_set_i64(f, d->name, d->value);
    return st ? af_error_wrap(st, "%s", tmp) : AF_OK;
}

/* Format 1 stored fc_adam_t = 0 whenever servers held the fc (the step count
 * lived on the servers and was never sent); its true value is the optimizer
 * step, since every shard steps once per optimizer step. */
static int legacy_adam_t(const af_ckpt_info *info, const char *name)
{
    return info->format_version == 1 && info->num_servers > 0 && !strcmp(name, "fc_adam_t");
}

/* This rank's part of one item: a whole item, its rows of a row-split one (rows
 * past the file's keep their fresh initialisation: class growth), a scalar. */
static af_status read_item(hid_t f, const char *path, const af_state_item *it, const af_ckpt_info *info)
{
    if (it->kind == AF_STATE_SCALAR) {
        if (legacy_adam_t(info, it->name)) {
            *(int64_t *)it->data = info->fc_adam_t;
            return AF_OK;
        }
        af_status st = af_h5_attr_get_i64(f, path, it->name, it->data);
        return st ? af_error_wrap(st, "%s: %s state '%s'", path, it->owner, it->name) : AF_OK;
    }
    if (!af_h5_exists(f, it->name))
        return af_errorf(AF_ERR_FORMAT, "%s: missing '%s' (%s state this run registers)", path, it->name, it->owner);
    int rank;
    hsize_t dims[AF_H5_MAXRANK];
    af_status st = af_h5_shape(f, path, it->name, &rank, dims);
    if (st) return st;
    char want[96], got[96];
    int64_t g[AF_H5_MAXRANK];
    for (int k = 0; k < rank && k < AF_H5_MAXRANK; k++) g[k] = (int64_t)dims[k];
    shape_str(want, sizeof want, it->ndim, it->shape);
    shape_str(got, sizeof got, rank, g);
    if (it->kind == AF_STATE_WHOLE) {
        int ok = rank == it->ndim;
        for (int k = 0; ok && k < rank; k++) ok = g[k] == it->shape[k];
        if (!ok) return af_errorf(AF_ERR_FORMAT, "%s: '%s' has shape %s, this run's %s has %s", path, it->name, got,
                                  it->owner, want);
        return af_h5_read_into(f, path, it->name, it->type == AF_STATE_I64 ? AF_H5_I64 : AF_H5_F32, rank, dims, it->data);
    }
    if (rank != 2 || g[1] != it->shape[1] || g[0] > it->shape[0])
        return af_errorf(AF_ERR_FORMAT, "%s: '%s' has shape %s, this run's %s has %s (rows may only grow)", path,
                         it->name, got, it->owner, want);
    int64_t hi = it->row0 + it->nrows < g[0] ? it->row0 + it->nrows : g[0];
    if (hi <= it->row0) return AF_OK;
    hid_t ds = H5Dopen2(f, it->name, H5P_DEFAULT), fs = ds < 0 ? -1 : H5Dget_space(ds);
    hsize_t off[2] = {(hsize_t)it->row0, 0}, cnt[2] = {(hsize_t)(hi - it->row0), dims[1]};
    hid_t ms = H5Screate_simple(2, cnt, NULL);
    herr_t rc = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (rc >= 0) rc = H5Dread(ds, mem_type(it->type), ms, fs, H5P_DEFAULT, it->data);
    char why[512];
    af_h5_error_text(why, sizeof why);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ds >= 0) H5Dclose(ds);
    if (rc < 0) return af_errorf(AF_ERR_IO, "%s: reading rows [%lld, %lld) of '%s' failed: %s", path,
                                 (long long)it->row0, (long long)hi, it->name, why);
    return AF_OK;
}

/* ---- writing ---- */

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

/* Rank 0: whole items, scalars and metadata into the file the collective part made. */
static af_status write_serial_part(const af_ctx *ctx, const af_config *cfg, const af_state *reg, const item_desc *plan,
                                   int n_plan, int64_t num_image, const char *tmp, int n_rows,
                                   const char *const rows_names[], const uint32_t rows_crc[])
{
    char why[512];
    hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return af_errorf(AF_ERR_IO, "%s: cannot reopen checkpoint for writing: %s", tmp, af_h5_error_text(why, sizeof why));
    af_status st = AF_OK;
    for (int i = 0; i < reg->n && !st; i++)
        if (reg->items[i].kind == AF_STATE_WHOLE) st = write_whole_item(f, tmp, &reg->items[i]);
    for (int i = 0; i < n_plan && !st; i++)
        if (plan[i].kind == AF_STATE_SCALAR && (i == 0 || strcmp(plan[i].name, plan[i - 1].name)))
            st = write_scalar_item(f, tmp, &plan[i]);
    if (!st) st = write_config_blob(f, tmp, ctx, cfg, num_image);
    if (!st && ((st = af_h5_attr_set_i64(f, "format_version", AF_CKPT_FORMAT_VERSION)) ||
                (st = af_h5_attr_set_i64(f, "num_classes", ctx->num_classes)) ||
                (st = af_h5_attr_set_i64(f, "embedding_size", cfg->embedding_size)) ||
                (st = af_h5_attr_set_str(f, "network", cfg->network)) ||
                (st = af_h5_attr_set_i64(f, "num_workers", ctx->W)) ||
                (st = af_h5_attr_set_i64(f, "num_servers", ctx->P)) ||
                (st = af_h5_attr_set_i64(f, "seed", (int64_t)cfg->seed))))
        af_error_wrap(st, "%s", tmp);
    /* Last: the checksums cover everything above, root attributes included. */
    if (!st) st = af_ckpt_seal(f, tmp, n_rows, rows_names, rows_crc);
    if (H5Fclose(f) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: close failed: %s", tmp, af_h5_error_text(why, sizeof why));
    char room[256];
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

af_status af_ckpt_write(const af_ctx *ctx, const af_config *cfg, const af_state *reg, int64_t num_image, int64_t step,
                        const char *path)
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
    item_desc *plan;
    int n_plan;
    if ((st = gather_plan(ctx, reg, &plan, &n_plan))) return st;
    if ((st = af_ctx_agree(ctx, check_plan(plan, n_plan, path)))) goto done;

    /* Checksums of the row-split items, and the refusal of NaN/Inf state, before
     * anything is written (include/arcface/ckpt_verify.h). */
    enum { MAX_ROWS_ITEMS = 16 };
    af_ckpt_rows rows[MAX_ROWS_ITEMS];
    const char *rows_names[MAX_ROWS_ITEMS];
    uint32_t rows_crc[MAX_ROWS_ITEMS];
    int n_rows = 0;
    for (int i = 0; i < n_plan && !st; i++) {
        if (plan[i].kind != AF_STATE_ROWS || (i > 0 && !strcmp(plan[i].name, plan[i - 1].name))) continue;
        if (n_rows == MAX_ROWS_ITEMS) {
            st = af_errorf(AF_ERR_PROTO, "%s: more than %d row-split items", path, MAX_ROWS_ITEMS);
            break;
        }
        const af_state_item *mine = af_state_find(reg, plan[i].name);
        rows_names[n_rows] = plan[i].name;
        rows[n_rows++] = (af_ckpt_rows){.name = plan[i].name, .data = mine ? mine->data : NULL,
                                        .row0 = mine ? mine->row0 : 0, .nrows = mine ? mine->nrows : 0,
                                        .row_len = plan[i].shape[1]};
    }
    if (st || (st = af_ckpt_rows_checksums(ctx, n_rows, rows, rows_crc, path))) goto done;

    char why[512], room[256];
    af_h5_quiet(); /* our messages replace HDF5's stack on every rank */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = -1;
    if (fapl >= 0 && H5Pset_fapl_mpio(fapl, ctx->world, MPI_INFO_NULL) >= 0)
        f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (f < 0) st = af_errorf(AF_ERR_IO, "%s: cannot create checkpoint file (parallel HDF5): %s", tmp,
                              af_h5_error_text(why, sizeof why));
    /* Creation is collective, so every rank reaches it even after a local error. */
    if ((st = af_ctx_agree(ctx, st))) { if (f >= 0) H5Fclose(f); goto cleanup; }
    /* Dataset creation is collective too: every rank walks the same plan in the
     * same order, also after a local write error. */
    for (int i = 0; i < n_plan; i++) {
        if (plan[i].kind != AF_STATE_ROWS || (i > 0 && !strcmp(plan[i].name, plan[i - 1].name))) continue;
        const af_state_item *mine = af_state_find(reg, plan[i].name);
        af_status s = write_rows_item(f, tmp, ctx->rank, &plan[i], mine);
        if (s && !st) st = s;
    }
    /* The data reaches the file system here at the latest: a full disk shows up now. */
    if (H5Fclose(f) < 0 && !st)
        st = af_errorf(AF_ERR_IO, "%s: closing the parallel checkpoint failed%s: %s", tmp,
                       space_note(tmp, room, sizeof room), af_h5_error_text(why, sizeof why));
    if ((st = af_ctx_agree(ctx, st))) goto cleanup;
    if (ctx->rank == 0) {
        st = write_serial_part(ctx, cfg, reg, plan, n_plan, num_image, tmp, n_rows, rows_names, rows_crc);
        /* Fault injection for the tests: die with the file complete but not yet
         * renamed, as a node failure in the middle of a checkpoint would. */
        const char *kill_at = getenv("ARCFACE_FAULT_KILL_IN_CHECKPOINT");
        if (kill_at && atoll(kill_at) == step) raise(SIGKILL);
        if (!st && !(st = durable_rename(tmp, path)) &&
            !(st = update_latest(cfg, path)))
            prune(cfg);
    }
    st = af_ctx_agree(ctx, st);
cleanup:
    /* A partial file would keep a full disk full: the previous checkpoint and
     * `latest` are untouched until the rename, so removing it loses nothing. */
    if (st && ctx->rank == 0 && unlink(tmp) == 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", af_errmsg());
        af_errorf(st, "%s (the partial %s was removed; the previous checkpoint and `latest` are unchanged)", msg, tmp);
    }
done:
    free(plan);
    return st;
}

/* ---- reading ---- */

static af_status attr_i64(hid_t f, const char *path, const char *name, int64_t *v)
{
    af_status st = af_h5_attr_get_i64(f, path, name, v);
    if (st) af_error_wrap(st, "%s is not a complete checkpoint", path);
    return st;
}

static void stored_config(const Arcface__TrainConfig *tc, af_config *c)
{
    af_config_defaults(c);
    snprintf(c->network, sizeof c->network, "%s", tc->network ? tc->network : "");
    c->embedding_size = tc->embedding_size;
    for (size_t k = 0; k < 3; k++) c->margin_list[k] = k < tc->n_margin_list ? tc->margin_list[k] : 0.0f;
    c->scale = tc->scale;
    snprintf(c->margin_grad, sizeof c->margin_grad, "%s", tc->margin_grad ? tc->margin_grad : "");
    c->easy_margin = tc->easy_margin;
    c->sample_rate = tc->sample_rate;
    c->sample_shards = tc->sample_shards;
    c->interclass_filtering_threshold = tc->interclass_filtering_threshold;
    c->batch_size = tc->batch_size;
    c->lr = tc->lr;
    c->momentum = tc->momentum;
    c->weight_decay = tc->weight_decay;
    snprintf(c->optimizer, sizeof c->optimizer, "%s", tc->optimizer ? tc->optimizer : "");
    snprintf(c->fc_update, sizeof c->fc_update, "%s", tc->fc_update ? tc->fc_update : "");
    c->num_classes = tc->num_classes;
    c->num_epoch = tc->num_epoch;
    c->warmup_epoch = tc->warmup_epoch;
    c->gradient_acc = tc->gradient_acc;
    c->seed = tc->seed;
    snprintf(c->rec, sizeof c->rec, "%s", tc->rec ? tc->rec : "");
    c->dropout = tc->dropout;
    c->clip_grad = tc->clip_grad;
    c->max_steps = tc->max_steps;
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
    if (info->format_version != 1 && info->format_version != AF_CKPT_FORMAT_VERSION) {
        st = af_errorf(AF_ERR_FORMAT, "%s: checkpoint format_version %lld, this program reads 1 and %d", path,
                       (long long)info->format_version, AF_CKPT_FORMAT_VERSION);
        goto done;
    }
    if ((st = attr_i64(f, path, "step", &info->step)) || (st = attr_i64(f, path, "epoch", &info->epoch)) ||
        (st = attr_i64(f, path, "sample_position", &info->sample_position)) ||
        (st = attr_i64(f, path, "num_classes", &info->num_classes)) ||
        (st = attr_i64(f, path, "embedding_size", &info->embedding_size)) ||
        (st = attr_i64(f, path, "num_workers", &info->num_workers)) ||
        (st = attr_i64(f, path, "num_servers", &info->num_servers)) || (st = attr_i64(f, path, "seed", &info->seed)))
        goto done;
    /* Optimizer state, for the listing: the registry's load requires whatever it registered. */
    const char *opt_attr[2] = {"backbone_opt_steps", "fc_adam_t"};
    int64_t *opt_val[2] = {&info->backbone_opt_steps, &info->fc_adam_t};
    for (int i = 0; i < 2; i++)
        if (af_h5_attr_exists(f, opt_attr[i]) && (st = attr_i64(f, path, opt_attr[i], opt_val[i]))) goto done;
    if ((st = af_h5_attr_get_str(f, path, "network", info->network, sizeof info->network))) goto done;
    if ((st = af_h5_read(f, path, "/config", AF_H5_U8, 1, &n, (void **)&blob))) goto done;
    tc = arcface__train_config__unpack(NULL, n, blob);
    if (!tc) { st = af_errorf(AF_ERR_FORMAT, "%s: /config is not a TrainConfig message", path); goto done; }
    stored_config(tc, &info->cfg);
    info->num_image = tc->num_image;
    info->global_batch = (int64_t)tc->batch_size * tc->num_workers;
    info->gradient_acc = tc->gradient_acc;
    info->sample_shards = tc->sample_shards;
    snprintf(info->optimizer, sizeof info->optimizer, "%s", tc->optimizer);
    snprintf(info->fc_update, sizeof info->fc_update, "%s", tc->fc_update);
    if (info->format_version == 1 && info->num_servers > 0)
        info->fc_adam_t = !strcmp(info->optimizer, "adamw") ? info->step : 0;
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

typedef struct {
    const af_state *reg;
    char group[AF_STATE_NAME_MAX], extra[AF_STATE_NAME_MAX * 2];
} extra_scan;

static herr_t scan_extra(hid_t g, const char *name, const H5L_info_t *linfo, void *data)
{
    (void)g;
    (void)linfo;
    extra_scan *s = data;
    char full[AF_STATE_NAME_MAX * 2];
    snprintf(full, sizeof full, "%s/%s", s->group, name);
    if (af_state_find(s->reg, full)) return 0;
    snprintf(s->extra, sizeof s->extra, "%s", full);
    return 1;
}

/* A group this rank owns whole items in must hold nothing else: a dataset no
 * one registered would be state this run silently drops (another network or
 * optimizer). */
static af_status check_no_extra(hid_t f, const char *path, const af_state *reg)
{
    for (int i = 0; i < reg->n; i++) {
        const af_state_item *it = &reg->items[i];
        const char *slash = strrchr(it->name, '/');
        if (it->kind != AF_STATE_WHOLE || !slash || slash == it->name) continue;
        extra_scan s = {.reg = reg};
        snprintf(s.group, sizeof s.group, "%.*s", (int)(slash - it->name), it->name);
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) {
            const char *o = reg->items[k].name, *os = strrchr(o, '/');
            seen = reg->items[k].kind == AF_STATE_WHOLE && os && (size_t)(os - o) == strlen(s.group) &&
                   !strncmp(o, s.group, strlen(s.group));
        }
        if (seen) continue;
        hid_t g = H5Gopen2(f, s.group, H5P_DEFAULT);
        if (g < 0) return af_errorf(AF_ERR_FORMAT, "%s: '%s' is not a group", path, s.group);
        herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, scan_extra, &s);
        H5Gclose(g);
        if (rc < 0) return af_errorf(AF_ERR_IO, "%s: cannot list group '%s'", path, s.group);
        if (rc > 0)
            return af_errorf(AF_ERR_FORMAT, "%s: holds '%s', which this run does not have (another network or "
                             "optimizer?)", path, s.extra);
    }
    return AF_OK;
}

af_status af_ckpt_load_state(const char *path, const af_state *reg, const af_ckpt_info *info)
{
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return st;
    for (int i = 0; i < reg->n && !st; i++) st = read_item(f, path, &reg->items[i], info);
    if (!st) st = check_no_extra(f, path, reg);
    H5Fclose(f);
    return st;
}
