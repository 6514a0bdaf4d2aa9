/* Backbone weights in and out: deterministic initialisation from a seed, and
 * the HDF5 form, one dataset per PyTorch state_dict key under a group
 * (default "/backbone"), which PyTorch users load with
 *   sd = {k: torch.from_numpy(np.array(v)) for k, v in f["backbone"].items()}
 *   model.load_state_dict(sd, strict=True)
 * Loading validates everything before it changes anything: the model is
 * either fully replaced or untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/backbone.h"
#include "arcface/h5io.h"
#include "arcface/rng.h"
#include "arcface/torch_pt.h"
#include "net.h"

/* Entry i is filled from its own generator keyed (seed, INIT, i), so
 * initialising one tensor never shifts another's draws. */
void af_backbone_init_weights(af_backbone *m, uint64_t seed)
{
    for (size_t i = 0; i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        const net_init in = m->net->init[i];
        if (e->kind == AF_TENSOR_KIND_COUNT) {
            m->counts[e->offset] = 0;
            continue;
        }
        float *dst = (e->kind == AF_TENSOR_KIND_BUFFER ? m->buffers : m->params) + e->offset;
        af_rng r;
        af_rng_seed(&r, seed, AF_RNG_STREAM_INIT, i, 0);
        for (size_t j = 0; j < e->numel; j++) {
            switch (in.kind) {
            case NET_INIT_CONST: dst[j] = in.a; break;
            case NET_INIT_NORMAL: dst[j] = in.a * af_rng_normal(&r); break;
            case NET_INIT_UNIFORM: dst[j] = in.a * (2.0f * af_rng_uniform(&r) - 1.0f); break;
            }
        }
    }
}

static void entry_dims(const af_backbone_tensor *e, hsize_t d[4])
{
    for (int i = 0; i < e->ndim; i++) d[i] = (hsize_t)e->shape[i];
}

static const void *entry_data(const af_backbone *m, const af_backbone_tensor *e)
{
    switch (e->kind) {
    case AF_TENSOR_KIND_PARAM:
    case AF_TENSOR_KIND_FIXED: return m->params + e->offset;
    case AF_TENSOR_KIND_BUFFER: return m->buffers + e->offset;
    case AF_TENSOR_KIND_COUNT: return m->counts + e->offset;
    }
    return NULL;
}

af_status af_backbone_save(const af_backbone *m, hid_t file, const char *path, const char *group)
{
    if (!group) group = "/backbone";
    char name[256];
    for (size_t i = 0; i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        hsize_t d[4];
        entry_dims(e, d);
        snprintf(name, sizeof name, "%s/%s", group, e->key);
        af_h5_type type = e->kind == AF_TENSOR_KIND_COUNT ? AF_H5_I64 : AF_H5_F32;
        af_status st = af_h5_write(file, path, name, type, e->ndim, d, entry_data(m, e));
        if (st) return st;
    }
    return AF_OK;
}

/* "(a, b, c)" */
static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    snprintf(buf, cap, "(");
    for (int k = 0; k < ndim; k++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", k ? ", " : "", (long long)shape[k]);
    snprintf(buf + strlen(buf), cap - strlen(buf), ")");
}

/* Loads read into these copies, which replace the model's arrays only when
 * every read succeeded. */
typedef struct {
    float *params, *buffers;
    int64_t *counts;
} staging;

static af_status staging_init(const af_backbone *m, staging *s)
{
    s->params = af_malloc(m->n_params * sizeof(float), "backbone parameters being loaded");
    s->buffers = af_malloc(m->n_buffers * sizeof(float) + 1, "backbone statistics being loaded");
    s->counts = af_malloc(m->n_counts * sizeof(int64_t) + 1, "backbone counters being loaded");
    return s->params && s->buffers && s->counts ? AF_OK : AF_ERR_NOMEM;
}

static void *staging_dst(const staging *s, const af_backbone_tensor *e)
{
    return e->kind == AF_TENSOR_KIND_COUNT    ? (void *)(s->counts + e->offset)
           : e->kind == AF_TENSOR_KIND_BUFFER ? (void *)(s->buffers + e->offset)
                                              : (void *)(s->params + e->offset);
}

static af_status staging_finish(af_backbone *m, staging *s, af_status st)
{
    if (!st) {
        memcpy(m->params, s->params, m->n_params * sizeof(float));
        memcpy(m->buffers, s->buffers, m->n_buffers * sizeof(float));
        memcpy(m->counts, s->counts, m->n_counts * sizeof(int64_t));
    }
    free(s->params);
    free(s->buffers);
    free(s->counts);
    return st;
}

typedef struct {
    const af_backbone *m;
    char extra[AF_BACKBONE_KEY_MAX + 32];
    int found_extra;
} extra_scan;

static herr_t scan_extra(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    (void)info;
    extra_scan *s = data;
    if (af_backbone_find(s->m, name)) return 0;
    snprintf(s->extra, sizeof s->extra, "%s", name);
    s->found_extra = 1;
    return 1; /* stop at the first */
}

af_status af_backbone_load(af_backbone *m, hid_t file, const char *path, const char *group)
{
    if (!group) group = "/backbone";
    if (!af_h5_exists(file, group))
        return af_errorf(AF_ERR_FORMAT, "%s: no group '%s' holding a %s backbone", path, group, m->arch);
    char name[256];
    /* 1. every key present with the right shape and type, in table order */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        snprintf(name, sizeof name, "%s/%s", group, e->key);
        if (!af_h5_exists(file, name))
            return af_errorf(AF_ERR_FORMAT, "%s: %s backbone key '%s' is missing from group '%s'", path, m->arch,
                             e->key, group);
        int rank;
        hsize_t d[AF_H5_MAXRANK];
        af_status st = af_h5_shape(file, path, name, &rank, d);
        if (st) return af_error_wrap(st, "%s backbone key '%s'", m->arch, e->key);
        int ok = rank == e->ndim;
        for (int k = 0; ok && k < rank; k++) ok = d[k] == (hsize_t)e->shape[k];
        if (!ok) {
            char got[160], want[160];
            int64_t dd[AF_H5_MAXRANK];
            for (int k = 0; k < rank; k++) dd[k] = (int64_t)d[k];
            shape_str(got, sizeof got, rank, dd);
            shape_str(want, sizeof want, e->ndim, e->shape);
            return af_errorf(AF_ERR_FORMAT, "%s: %s backbone key '%s' has shape %s, expected %s", path, m->arch,
                             e->key, got, want);
        }
    }
    /* 2. nothing this architecture does not have */
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) return af_errorf(AF_ERR_FORMAT, "%s: '%s' is not a group", path, group);
    extra_scan s = {.m = m};
    herr_t it = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, scan_extra, &s);
    H5Gclose(g);
    if (it < 0) return af_errorf(AF_ERR_IO, "%s: cannot list group '%s'", path, group);
    if (s.found_extra)
        return af_errorf(AF_ERR_FORMAT, "%s: group '%s' has key '%s', which the %s backbone does not have", path, group,
                         s.extra, m->arch);
    /* 3. read into copies, commit only when all reads succeeded */
    staging sg;
    af_status st = staging_init(m, &sg);
    for (size_t i = 0; !st && i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        hsize_t d[4];
        entry_dims(e, d);
        snprintf(name, sizeof name, "%s/%s", group, e->key);
        st = af_h5_read_into(file, path, name, e->kind == AF_TENSOR_KIND_COUNT ? AF_H5_I64 : AF_H5_F32, e->ndim, d,
                             staging_dst(&sg, e));
        if (st) st = af_error_wrap(st, "%s backbone key '%s'", m->arch, e->key);
    }
    return staging_finish(m, &sg, st);
}

/* Same contract as af_backbone_load, from a torch.save'd state_dict: every
 * key of the architecture present with its shape, float32 (int64 for
 * num_batches_tracked), and no other key; all or nothing. */
af_status af_backbone_load_pt(af_backbone *m, const char *path)
{
    af_pt_file f;
    af_status st = af_pt_open(&f, path);
    if (st) return st;
    for (size_t i = 0; !st && i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        const af_pt_entry *p = af_pt_find(&f, e->key);
        const af_pt_dtype want = e->kind == AF_TENSOR_KIND_COUNT ? AF_PT_INT64 : AF_PT_FLOAT32;
        int ok = p && p->ndim == e->ndim;
        for (int k = 0; ok && k < e->ndim; k++) ok = p->shape[k] == e->shape[k];
        if (!p) {
            st = af_errorf(AF_ERR_FORMAT, "%s: %s backbone key '%s' is missing from the state_dict", path, m->arch,
                           e->key);
        } else if (!ok) {
            char got[160], exp[160];
            shape_str(got, sizeof got, p->ndim, p->shape);
            shape_str(exp, sizeof exp, e->ndim, e->shape);
            st = af_errorf(AF_ERR_FORMAT, "%s: %s backbone key '%s' has shape %s, expected %s", path, m->arch, e->key,
                           got, exp);
        } else if (p->dtype != want) {
            st = af_errorf(AF_ERR_FORMAT, "%s: %s backbone key '%s' is %s, expected %s (convert with .float() before "
                           "saving)", path, m->arch, e->key, af_pt_dtype_name(p->dtype), af_pt_dtype_name(want));
        }
    }
    for (size_t i = 0; !st && i < f.n; i++)
        if (!af_backbone_find(m, f.e[i].key))
            st = af_errorf(AF_ERR_FORMAT, "%s: state_dict key '%s' is not part of the %s backbone", path, f.e[i].key,
                           m->arch);
    staging sg = {0};
    if (!st) st = staging_init(m, &sg);
    for (size_t i = 0; !st && i < m->n_tensors; i++) {
        const af_backbone_tensor *e = &m->tensors[i];
        size_t bytes = e->kind == AF_TENSOR_KIND_COUNT ? sizeof(int64_t) : e->numel * sizeof(float);
        st = af_pt_read(&f, af_pt_find(&f, e->key), staging_dst(&sg, e), bytes);
    }
    af_pt_close(&f);
    return staging_finish(m, &sg, st);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

af_status af_backbone_load_file(af_backbone *m, const char *path)
{
    /* by content; a .pt/.pth name that is no zip gets the .pt reader's explanation */
    if (af_pt_is_zip(path) || ends_with(path, ".pt") || ends_with(path, ".pth")) return af_backbone_load_pt(m, path);
    hid_t f;
    af_status st = af_h5_open_read(path, &f);
    if (st) return af_error_wrap(st, "%s is neither an HDF5 model nor a PyTorch .pt", path);
    st = af_backbone_load(m, f, path, NULL);
    H5Fclose(f);
    return st;
}
