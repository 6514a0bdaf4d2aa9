/* Checksums, verification and the choice of checkpoint to resume from; see
 * include/arcface/ckpt_verify.h. The CRC is zlib's, so h5py + zlib check a
 * checkpoint without this program, and crc32_combine joins the servers' row
 * ranges (or the verifying ranks' shares) in row order without re-reading. */
#include "arcface/ckpt_verify.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "arcface/h5io.h"

#define BLOCK_BYTES (8u << 20)

/* crc32_z takes size_t; this keeps call sites short. */
static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n) { return (uint32_t)crc32_z(crc, p, n); }

static int64_t count_nonfinite(const void *p, size_t n, size_t tsize, int64_t *first)
{
    int64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = tsize == 8 ? ((const double *)p)[i] : ((const float *)p)[i];
        if (!isfinite(v) && bad++ == 0) *first = (int64_t)i;
    }
    return bad;
}

af_status af_ckpt_rows_checksums(const af_ctx *ctx, int n, const af_ckpt_rows *items, uint32_t *crc,
                                 const char *path)
{
    /* Per rank and item: first row, rows, crc, non-finite count. */
    const int F = 4 * n;
    int64_t *mine = af_calloc((size_t)(F ? F : 1), sizeof(int64_t), "checkpoint checksums");
    int64_t *all = af_malloc(sizeof(int64_t) * (size_t)(F ? F : 1) * (size_t)ctx->size, "checkpoint checksum table");
    af_status st = af_ctx_agree(ctx, mine && all ? AF_OK : AF_ERR_NOMEM);
    if (st) goto done;
    for (int i = 0; i < n; i++) {
        const af_ckpt_rows *it = &items[i];
        if (!it->data || it->nrows <= 0) continue;
        size_t elems = (size_t)it->nrows * (size_t)it->row_len;
        int64_t first = 0;
        mine[4 * i] = it->row0;
        mine[4 * i + 1] = it->nrows;
        mine[4 * i + 2] = crc_bytes(0, it->data, elems * sizeof(float));
        mine[4 * i + 3] = count_nonfinite(it->data, elems, sizeof(float), &first);
    }
    if (F && MPI_Allgather(mine, F, MPI_INT64_T, all, F, MPI_INT64_T, ctx->world) != MPI_SUCCESS) {
        st = af_errorf(AF_ERR_MPI, "rank %d: MPI_Allgather of the checkpoint checksums failed", ctx->rank);
        goto done;
    }
    /* Every rank sees the same table, so every rank reaches the same verdict. */
    for (int i = 0; i < n && !st; i++) {
        for (int r = 0; r < ctx->size && !st; r++) {
            const int64_t *e = &all[(size_t)r * F + 4 * i];
            if (e[3])
                st = af_errorf(AF_ERR_CORRUPT, "%s: rank %d holds %lld non-finite values in rows [%lld, %lld) of %s; "
                               "refusing to write a checkpoint of NaN/Inf state", path, r, (long long)e[3],
                               (long long)e[0], (long long)(e[0] + e[1]), items[i].name);
        }
        /* The parts in row order (the write plan has checked that they tile). */
        crc[i] = 0;
        for (int64_t next = 0; !st;) {
            int r = 0;
            while (r < ctx->size && !(all[(size_t)r * F + 4 * i + 1] > 0 && all[(size_t)r * F + 4 * i] == next)) r++;
            if (r == ctx->size) break;
            const int64_t *e = &all[(size_t)r * F + 4 * i];
            z_off_t bytes = (z_off_t)e[1] * (z_off_t)items[i].row_len * (z_off_t)sizeof(float);
            crc[i] = (uint32_t)crc32_combine(crc[i], (uLong)(uint32_t)e[2], bytes);
            next += e[1];
        }
    }
done:
    free(mine);
    free(all);
    return st;
}

/* ---- reading a dataset back: CRC and finiteness of rows [r0, r1) ---- */

typedef struct {
    int64_t crc, bytes, nonfinite, first_bad, failed;
} part_sum;

static af_status sum_rows(hid_t f, const char *path, const char *name, int whole, hsize_t r0, hsize_t r1,
                          part_sum *out)
{
    memset(out, 0, sizeof *out);
    char why[256];
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), ft = -1, mt = -1, fs = -1, ms = -1;
    void *buf = NULL;
    af_status st = AF_OK;
    if (ds < 0 || (ft = H5Dget_type(ds)) < 0 || (mt = H5Tget_native_type(ft, H5T_DIR_ASCEND)) < 0 ||
        (fs = H5Dget_space(ds)) < 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: cannot open dataset '%s': %s", path, name, af_h5_error_text(why, sizeof why));
        goto done;
    }
    int is_float = H5Tget_class(ft) == H5T_FLOAT;
    size_t tsize = H5Tget_size(mt);
    int nd = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[AF_H5_MAXRANK];
    if (nd < 0 || nd > AF_H5_MAXRANK || H5Sget_simple_extent_dims(fs, dims, NULL) < 0 || tsize == 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has an unreadable shape", path, name);
        goto done;
    }
    size_t row_elems = 1, row_bytes;
    for (int i = 1; i < nd; i++)
        if (dims[i] > SIZE_MAX || __builtin_mul_overflow(row_elems, (size_t)dims[i], &row_elems)) {
            st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has a row size that overflows", path, name);
            goto done;
        }
    if (__builtin_mul_overflow(row_elems, tsize, &row_bytes)) {
        st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has a row size that overflows", path, name);
        goto done;
    }
    if (nd == 0) {
        /* A scalar: one "row" of one element. */
        if (!(buf = af_malloc(tsize, name))) { st = AF_ERR_NOMEM; goto done; }
        if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            out->failed = 1;
            st = af_errorf(AF_ERR_IO, "%s: cannot read dataset '%s': %s", path, name, af_h5_error_text(why, sizeof why));
            goto done;
        }
        out->crc = crc_bytes(0, buf, tsize);
        out->bytes = (int64_t)tsize;
        if (is_float) out->nonfinite = count_nonfinite(buf, 1, tsize, &out->first_bad);
        goto done;
    }
    if (whole) { r0 = 0; r1 = dims[0]; }
    if (r1 > dims[0] || r0 > r1) {
        st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has %llu rows, fewer than %llu", path, name,
                       (unsigned long long)dims[0], (unsigned long long)r1);
        goto done;
    }
    hsize_t block = row_bytes ? BLOCK_BYTES / row_bytes : 1;
    if (block < 1) block = 1;
    if (block > r1 - r0) block = r1 - r0 ? r1 - r0 : 1;
    if (row_bytes && !(buf = af_malloc((size_t)block * row_bytes, name))) { st = AF_ERR_NOMEM; goto done; }
    uint32_t crc = 0;
    for (hsize_t r = r0; r < r1 && row_bytes; r += block) {
        hsize_t nb = r1 - r < block ? r1 - r : block;
        hsize_t off[AF_H5_MAXRANK] = {r}, cnt[AF_H5_MAXRANK] = {nb};
        for (int i = 1; i < nd; i++) cnt[i] = dims[i];
        if (ms >= 0) H5Sclose(ms);
        ms = H5Screate_simple(nd, cnt, NULL);
        if (ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0 ||
            H5Dread(ds, mt, ms, fs, H5P_DEFAULT, buf) < 0) {
            out->failed = 1;
            st = af_errorf(AF_ERR_IO, "%s: cannot read rows [%llu, %llu) of dataset '%s' (truncated or damaged?): %s",
                           path, (unsigned long long)r, (unsigned long long)(r + nb), name,
                           af_h5_error_text(why, sizeof why));
            goto done;
        }
        crc = crc_bytes(crc, buf, (size_t)nb * row_bytes);
        if (is_float && !out->nonfinite) {
            int64_t first = 0;
            out->nonfinite = count_nonfinite(buf, (size_t)nb * row_elems, tsize, &first);
            out->first_bad = (int64_t)r + first / (int64_t)(row_elems ? row_elems : 1);
        } else if (is_float) {
            int64_t first = 0;
            out->nonfinite += count_nonfinite(buf, (size_t)nb * row_elems, tsize, &first);
        }
    }
    out->crc = crc;
    out->bytes = (int64_t)((r1 - r0) * row_bytes);
done:
    free(buf);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (ds >= 0) H5Dclose(ds);
    return st;
}

/* ---- the list of datasets and the root attribute text ---- */

typedef struct {
    char **names;
    int n, cap;
} name_list;

static herr_t visit_link(hid_t g, const char *name, const H5L_info_t *info, void *user)
{
    (void)info;
    name_list *l = user;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->names, sizeof *p * (size_t)cap);
        if (!p) return -1;
        l->names = p;
        l->cap = cap;
    }
    size_t len = strlen(name) + 2;
    if (!(l->names[l->n] = malloc(len))) return -1;
    snprintf(l->names[l->n++], len, "/%s", name);
    return 0;
}

static void names_free(name_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static af_status list_datasets(hid_t f, const char *path, name_list *l)
{
    memset(l, 0, sizeof *l);
    if (H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, visit_link, l) < 0) {
        names_free(l);
        return af_errorf(AF_ERR_FORMAT, "%s: cannot list the datasets (damaged file?)", path);
    }
    return AF_OK;
}

typedef struct {
    hid_t f;
    const char *path;
    char text[8192];
    size_t used;
    af_status st;
} attr_text;

static herr_t add_attr(hid_t loc, const char *name, const H5A_info_t *ainfo, void *user)
{
    (void)loc;
    (void)ainfo;
    attr_text *t = user;
    if (!strcmp(name, "attributes_crc32")) return 0;
    char val[512];
    hid_t a = H5Aopen(t->f, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    H5T_class_t cls = ft < 0 ? H5T_NO_CLASS : H5Tget_class(ft);
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    af_status st = AF_OK;
    if (cls == H5T_INTEGER) {
        int64_t v;
        if (!(st = af_h5_attr_get_i64(t->f, t->path, name, &v))) snprintf(val, sizeof val, "%lld", (long long)v);
    } else if (cls == H5T_FLOAT) {
        double v;
        if (!(st = af_h5_attr_get_double(t->f, t->path, name, &v))) snprintf(val, sizeof val, "%.17g", v);
    } else if (cls == H5T_STRING) {
        st = af_h5_attr_get_str(t->f, t->path, name, val, sizeof val);
    } else {
        st = af_errorf(AF_ERR_FORMAT, "%s: root attribute '%s' is neither a number nor a string", t->path, name);
    }
    if (st) { t->st = st; return -1; }
    int k = snprintf(t->text + t->used, sizeof t->text - t->used, "%s=%s;", name, val);
    if (k < 0 || (size_t)k >= sizeof t->text - t->used) {
        t->st = af_errorf(AF_ERR_FORMAT, "%s: too many root attributes", t->path);
        return -1;
    }
    t->used += (size_t)k;
    return 0;
}

static af_status attributes_crc(hid_t f, const char *path, uint32_t *crc)
{
    static attr_text t; /* 8 KiB: off the stack */
    memset(&t, 0, sizeof t);
    t.f = f;
    t.path = path;
    hsize_t idx = 0;
    if (H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_INC, &idx, add_attr, &t) < 0)
        return t.st ? t.st : af_errorf(AF_ERR_FORMAT, "%s: cannot list the root attributes", path);
    *crc = crc_bytes(0, t.text, t.used);
    return AF_OK;
}

static int is_fc(const char *name, int nfc, const char *const fc_names[])
{
    for (int i = 0; i < nfc; i++)
        if (!strcmp(name, fc_names[i])) return i;
    return -1;
}

static af_status set_crc_attr(hid_t f, const char *path, const char *name, uint32_t crc)
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return af_errorf(AF_ERR_IO, "%s: cannot reopen dataset '%s' to store its checksum", path, name);
    af_status st = af_h5_attr_set_i64(ds, "crc32", crc);
    if (st) af_error_wrap(st, "%s: dataset '%s'", path, name);
    if (H5Dclose(ds) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: cannot close dataset '%s'", path, name);
    return st;
}

af_status af_ckpt_seal(hid_t f, const char *path, int nfc, const char *const fc_names[], const uint32_t fc_crc[])
{
    name_list l;
    af_status st = list_datasets(f, path, &l);
    if (st) return st;
    for (int i = 0; i < l.n && !st; i++) {
        int k = is_fc(l.names[i], nfc, fc_names);
        uint32_t crc;
        if (k >= 0) crc = fc_crc[k];
        else {
            part_sum s;
            if ((st = sum_rows(f, path, l.names[i], 1, 0, 0, &s))) break;
            if (s.nonfinite) {
                st = af_errorf(AF_ERR_CORRUPT, "%s: dataset '%s' holds %lld non-finite values (the first in row %lld); "
                               "refusing to write a checkpoint of NaN/Inf state", path, l.names[i],
                               (long long)s.nonfinite, (long long)s.first_bad);
                break;
            }
            crc = (uint32_t)s.crc;
        }
        st = set_crc_attr(f, path, l.names[i], crc);
    }
    uint32_t acrc = 0;
    if (!st && !(st = af_h5_attr_set_str(f, "checksum", "crc32")) && !(st = af_h5_attr_set_i64(f, "datasets", l.n)) &&
        !(st = attributes_crc(f, path, &acrc)))
        st = af_h5_attr_set_i64(f, "attributes_crc32", acrc);
    names_free(&l);
    return st;
}

af_status af_ckpt_info_sane(const af_ckpt_info *info, const char *path)
{
#define RANGE(field, cond, want) \
    if (!(cond)) return af_errorf(AF_ERR_CORRUPT, "%s: root attribute '" #field "' is %lld, expected " want, path, \
                                  (long long)info->field)
    RANGE(step, info->step >= 0, "a step count >= 0");
    RANGE(epoch, info->epoch >= 0, ">= 0");
    RANGE(sample_position, info->sample_position >= 0, ">= 0");
    RANGE(num_classes, info->num_classes >= 1, ">= 1");
    RANGE(embedding_size, info->embedding_size >= 1 && info->embedding_size <= (1 << 20), "1 .. 2^20");
    RANGE(num_workers, info->num_workers >= 1, ">= 1");
    RANGE(num_servers, info->num_servers >= 0, ">= 0");
    RANGE(backbone_opt_steps, info->backbone_opt_steps >= 0, ">= 0");
    RANGE(fc_adam_t, info->fc_adam_t >= 0, ">= 0");
    RANGE(global_batch, info->global_batch >= 1, "batch_size x workers >= 1 in /config");
#undef RANGE
    if (info->gradient_acc < 1)
        return af_errorf(AF_ERR_CORRUPT, "%s: /config has gradient_acc = %d, expected >= 1", path, info->gradient_acc);
    return AF_OK;
}

static af_status stored_crc(hid_t f, const char *path, const char *name, uint32_t *crc)
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return af_errorf(AF_ERR_FORMAT, "%s: cannot open dataset '%s'", path, name);
    int64_t v = -1;
    af_status st = AF_OK;
    if (!af_h5_attr_exists(ds, "crc32"))
        st = af_errorf(AF_ERR_CORRUPT, "%s: dataset '%s' has no crc32 attribute although the file is checksummed", path,
                       name);
    else if (!(st = af_h5_attr_get_i64(ds, path, "crc32", &v)) && (v < 0 || v > UINT32_MAX))
        st = af_errorf(AF_ERR_CORRUPT, "%s: dataset '%s' has crc32 = %lld, not a CRC-32", path, name, (long long)v);
    H5Dclose(ds);
    *crc = (uint32_t)v;
    return st;
}

static af_status verdict(const char *path, const char *name, uint32_t stored, uint32_t computed, int64_t nonfinite,
                         int64_t first_bad)
{
    if (nonfinite)
        return af_errorf(AF_ERR_CORRUPT, "%s: dataset '%s' holds %lld non-finite values (the first in row %lld); "
                         "refusing NaN/Inf state", path, name, (long long)nonfinite, (long long)first_bad);
    if (stored != computed)
        return af_errorf(AF_ERR_CORRUPT, "%s: dataset '%s' fails its checksum (stored crc32 %08x, computed %08x): "
                         "the file is damaged", path, name, stored, computed);
    return AF_OK;
}

/* Verified in shares by all ranks; any other dataset by rank 0. */
#define N_FC 3
static const char *const FC_NAMES[N_FC] = {"/fc/weight", "/fc/momentum", "/fc/exp_avg_sq"};

/* Rank 0: the root attributes, the dataset count, and every non-fc dataset. */
static af_status verify_serial(hid_t f, const char *path)
{
    char scheme[32];
    af_status st = af_h5_attr_get_str(f, path, "checksum", scheme, sizeof scheme);
    if (st) return st;
    if (strcmp(scheme, "crc32"))
        return af_errorf(AF_ERR_FORMAT, "%s: root attribute 'checksum' is '%s', this program checks 'crc32'", path, scheme);
    int64_t want_n, want_acrc;
    uint32_t acrc = 0;
    if ((st = af_h5_attr_get_i64(f, path, "datasets", &want_n)) ||
        (st = af_h5_attr_get_i64(f, path, "attributes_crc32", &want_acrc)) || (st = attributes_crc(f, path, &acrc)))
        return st;
    if ((int64_t)acrc != want_acrc)
        return af_errorf(AF_ERR_CORRUPT, "%s: the root attributes fail their checksum (stored crc32 %08llx, computed "
                         "%08x): an attribute such as step or num_classes was changed", path,
                         (unsigned long long)want_acrc, acrc);
    name_list l;
    if ((st = list_datasets(f, path, &l))) return st;
    if (l.n != want_n)
        st = af_errorf(AF_ERR_CORRUPT, "%s: holds %d datasets, the checkpoint was written with %lld", path, l.n,
                       (long long)want_n);
    for (int i = 0; i < l.n && !st; i++) {
        if (is_fc(l.names[i], N_FC, FC_NAMES) >= 0) continue;
        part_sum s;
        uint32_t want;
        if (!(st = stored_crc(f, path, l.names[i], &want)) && !(st = sum_rows(f, path, l.names[i], 1, 0, 0, &s)))
            st = verdict(path, l.names[i], want, (uint32_t)s.crc, s.nonfinite, s.first_bad);
    }
    names_free(&l);
    return st;
}

/* All ranks: each reads an equal share of the rows of every /fc dataset. */
static af_status verify_fc(const af_ctx *ctx, hid_t f, const char *path)
{
    af_status st = AF_OK;
    part_sum *all = af_malloc(sizeof(part_sum) * (size_t)ctx->size, "checkpoint verification table");
    if (!all) return AF_ERR_NOMEM; /* agreed on by the caller */
    for (int i = 0; i < N_FC && !st; i++) {
        const char *name = FC_NAMES[i];
        if (!af_h5_exists(f, name)) continue;
        int rank;
        hsize_t dims[AF_H5_MAXRANK];
        if ((st = af_h5_shape(f, path, name, &rank, dims))) break;
        if (rank != 2) { st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has rank %d, expected 2", path, name, rank); break; }
        hsize_t share = (dims[0] + (hsize_t)ctx->size - 1) / (hsize_t)ctx->size;
        hsize_t r0 = share * (hsize_t)ctx->rank, r1 = r0 + share;
        if (r0 > dims[0]) r0 = dims[0];
        if (r1 > dims[0]) r1 = dims[0];
        part_sum mine;
        char mine_msg[512] = "";
        if (sum_rows(f, path, name, 0, r0, r1, &mine)) {
            mine.failed = 1;
            snprintf(mine_msg, sizeof mine_msg, "%s", af_errmsg());
        }
        if (MPI_Allgather(&mine, 5, MPI_INT64_T, all, 5, MPI_INT64_T, ctx->world) != MPI_SUCCESS) {
            st = af_errorf(AF_ERR_MPI, "rank %d: MPI_Allgather of the verification sums failed", ctx->rank);
            break;
        }
        uint32_t crc = 0, want;
        int64_t nonfinite = 0, first_bad = -1;
        for (int r = 0; r < ctx->size && !st; r++) {
            if (all[r].failed) {
                st = r == ctx->rank ? af_errorf(AF_ERR_IO, "%s", mine_msg)
                                    : af_errorf(AF_ERR_IO, "%s: rank %d could not read its share of '%s' (truncated or "
                                                "damaged file; see its message)", path, r, name);
                break;
            }
            crc = (uint32_t)crc32_combine(crc, (uLong)all[r].crc, (z_off_t)all[r].bytes);
            if (all[r].nonfinite && first_bad < 0) first_bad = all[r].first_bad;
            nonfinite += all[r].nonfinite;
        }
        if (!st && !(st = stored_crc(f, path, name, &want))) st = verdict(path, name, want, crc, nonfinite, first_bad);
    }
    free(all);
    return st;
}

af_status af_ckpt_verify(const af_ctx *ctx, const char *path)
{
    hid_t f = -1;
    af_status st = af_ctx_agree(ctx, af_h5_open_read(path, &f));
    if (st) {
        if (f >= 0) H5Fclose(f);
        return st;
    }
    if (!af_h5_attr_exists(f, "checksum")) {
        if (ctx->rank == 0) {
            printf("resume: note: %s was written without checksums; its data is not verified\n", path);
            fflush(stdout);
        }
        H5Fclose(f);
        return AF_OK;
    }
    af_status serial = ctx->rank == 0 ? verify_serial(f, path) : AF_OK;
    char serial_msg[1024];
    snprintf(serial_msg, sizeof serial_msg, "%s", serial ? af_errmsg() : "");
    st = verify_fc(ctx, f, path);
    H5Fclose(f);
    /* Rank 0's own finding first: it is the one that prints. */
    if (serial) st = af_errorf(serial, "%s", serial_msg);
    return af_ctx_agree(ctx, st);
}

af_status af_ckpt_remove_tmp(const af_config *cfg)
{
    char dir[AF_CFG_STR + 32];
    snprintf(dir, sizeof dir, "%s/checkpoints", cfg->output);
    DIR *d = opendir(dir);
    if (!d) return AF_OK; /* no folder yet: nothing left over */
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".tmp")) continue;
        char p[AF_CFG_STR + 320];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        double mb = stat(p, &sb) ? 0 : sb.st_size / 1e6;
        if (unlink(p))
            printf("arcface-train: warning: cannot remove the leftover partial checkpoint %s: %s\n", p, strerror(errno));
        else
            printf("arcface-train: removed %s (%.1f MB), a partial file left by an interrupted checkpoint\n", p, mb);
    }
    closedir(d);
    fflush(stdout);
    return AF_OK;
}

static int cmp_desc(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

/* Rank 0 lists OUTPUT/checkpoints/ckpt_<step>.h5, newest first, and counts
 * what else says a run was here: ckpt_<step>.h5.bad files set aside by an
 * earlier resume, and a `latest` naming a file that is gone (*dangling gets
 * that name, "" if latest is absent or names a file that exists). */
static int list_steps(const af_config *cfg, long long *steps, int cap, int *n_bad, char *dangling, size_t dcap)
{
    char dir[AF_CFG_STR + 32];
    snprintf(dir, sizeof dir, "%s/checkpoints", cfg->output);
    *n_bad = 0;
    dangling[0] = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long s;
        int end = 0;
        if (sscanf(e->d_name, "ckpt_%lld.h5%n", &s, &end) != 1 || end <= 0) continue;
        if (e->d_name[end] == 0 && n < cap) steps[n++] = s;
        else if (!strcmp(e->d_name + end, ".bad")) ++*n_bad;
    }
    closedir(d);
    qsort(steps, (size_t)n, sizeof *steps, cmp_desc);
    char p[AF_CFG_STR + 320], name[256] = "";
    snprintf(p, sizeof p, "%s/latest", dir);
    FILE *f = fopen(p, "r");
    if (f) {
        if (!fgets(name, sizeof name, f)) name[0] = 0;
        fclose(f);
        name[strcspn(name, "\r\n")] = 0;
        snprintf(p, sizeof p, "%s/%s", dir, name);
        if (name[0] && access(p, F_OK)) snprintf(dangling, dcap, "%s", name);
    }
    return n;
}

static af_status open_and_verify(const af_ctx *ctx, const char *path, af_ckpt_info *info)
{
    double t0 = MPI_Wtime();
    af_status st = af_ckpt_read_info(path, info);
    if (!st) st = af_ckpt_info_sane(info, path);
    if ((st = af_ctx_agree(ctx, st)) || (st = af_ckpt_verify(ctx, path))) return st;
    struct stat sb;
    if (ctx->rank == 0 && !stat(path, &sb)) {
        printf("resume: %s verified (%.1f MB in %.2f s over %d ranks)\n", path, sb.st_size / 1e6, MPI_Wtime() - t0,
               ctx->size);
        fflush(stdout);
    }
    return AF_OK;
}

af_status af_ckpt_find(const af_ctx *ctx, const af_config *cfg, char *path, size_t cap, int *found,
                       af_ckpt_info *info)
{
    *found = 0;
    if (ctx->rank == 0) af_ckpt_remove_tmp(cfg);
    if (!strcmp(cfg->resume, "none")) return AF_OK;
    af_status st;
    if (strcmp(cfg->resume, "auto")) {
        st = access(cfg->resume, R_OK) ? af_errorf(AF_ERR_IO, "configuration key 'resume': %s: %s", cfg->resume,
                                                    strerror(errno)) : AF_OK;
        if ((st = af_ctx_agree(ctx, st))) return st;
        snprintf(path, cap, "%s", cfg->resume);
        if ((st = open_and_verify(ctx, path, info))) return st;
        *found = 1;
        return AF_OK;
    }
    enum { MAX_CKPT = 4096 };
    static long long steps[MAX_CKPT];
    int n_bad = 0;
    char dangling[256] = "";
    int n = ctx->rank == 0 ? list_steps(cfg, steps, MAX_CKPT, &n_bad, dangling, sizeof dangling) : 0;
    if (MPI_Bcast(&n, 1, MPI_INT, 0, ctx->world) != MPI_SUCCESS ||
        (n && MPI_Bcast(steps, n, MPI_LONG_LONG, 0, ctx->world) != MPI_SUCCESS))
        return af_errorf(AF_ERR_MPI, "rank %d: MPI_Bcast of the checkpoint list failed", ctx->rank);
    if (n == 0) {
        /* Set-aside or vanished checkpoints are still a run's history: a fresh
         * start would prune and overwrite what is left of it (issue 10). */
        st = AF_OK;
        if (ctx->rank == 0 && (n_bad || dangling[0])) {
            char what[600] = "";
            if (n_bad)
                snprintf(what, sizeof what, "%d damaged checkpoint%s set aside as ckpt_*.h5.bad", n_bad,
                         n_bad > 1 ? "s" : "");
            if (dangling[0])
                snprintf(what + strlen(what), sizeof what - strlen(what), "%s`latest` naming %s, which is missing",
                         n_bad ? " and " : "", dangling);
            st = af_errorf(AF_ERR_CORRUPT, "%s/checkpoints: no ckpt_*.h5 to resume from, but it holds %s: a run "
                           "was here; refusing to start fresh over it. Pass --resume FILE to resume from a file, or "
                           "--resume none (or another --output) to start over deliberately", cfg->output, what);
        }
        return af_ctx_agree(ctx, st);
    }
    if (ctx->rank == 0) {
        char latest[AF_CFG_STR + 32];
        snprintf(latest, sizeof latest, "%s/checkpoints/latest", cfg->output);
        if (access(latest, F_OK))
            printf("resume: %s is missing, but %d checkpoint%s exist%s: resuming from the newest that verifies\n",
                   latest, n, n > 1 ? "s" : "", n > 1 ? "" : "s");
    }
    for (int i = 0; i < n; i++) {
        af_ckpt_path(cfg, steps[i], path, cap);
        if (!(st = open_and_verify(ctx, path, info))) {
            *found = 1;
            /* Set aside, not deleted, and only now that one verifies: pruning
             * counts only ckpt_<step>.h5, so a damaged newer file can no longer
             * push a good one out; with none verifying, the folder stays as it
             * was and the next start refuses the same way. */
            for (int k = 0; k < i && ctx->rank == 0; k++) {
                char skipped[4200], bad[4300];
                af_ckpt_path(cfg, steps[k], skipped, sizeof skipped);
                snprintf(bad, sizeof bad, "%s.bad", skipped);
                if (rename(skipped, bad)) printf("resume: warning: cannot rename %s to %s: %s\n", skipped, bad,
                                                 strerror(errno));
                else printf("resume: set %s aside as %s\n", skipped, bad);
            }
            if (i > 0 && ctx->rank == 0) printf("resume: falling back to %s, the newest that verifies\n", path);
            fflush(stdout);
            return AF_OK;
        }
        if (ctx->rank == 0) {
            printf("resume: skipping %s: %s\n", path, af_errmsg());
            fflush(stdout);
        }
    }
    return af_errorf(AF_ERR_CORRUPT, "%s/checkpoints: none of the %d checkpoints verifies (reasons above; none was "
                     "renamed or removed); refusing to start fresh over them. Pass --resume FILE to choose one, or "
                     "--resume none (or another --output) to start over deliberately", cfg->output, n);
}
