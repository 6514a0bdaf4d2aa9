/* Fashion-MNIST from its four IDX files (gzip-compressed as published and as
 * Debian's dataset-fashion-mnist installs them, or plain): 28 x 28 grey
 * images with labels 0..9, held in memory (47 MB for the training split)
 * because the whole file is smaller than one RecordIO shard's cache. */
#include "dataset_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAX_BYTES ((size_t)1 << 31)

typedef struct {
    char images_path[4096];
    int rows, cols;
    uint8_t *pixels; /* (n, rows, cols) */
    uint8_t *labels; /* (n) */
} fmnist;

static void fm_locate(const af_dataset *ds, int64_t i, char *buf, size_t cap)
{
    const fmnist *f = ds->impl;
    snprintf(buf, cap, "%s image %" PRId64 " (byte offset %" PRIu64 " after decompression)", f->images_path, i,
             16 + (uint64_t)i * f->rows * f->cols);
}

static af_status fm_get_u8(const af_dataset *ds, int64_t i, uint8_t *hwc, int64_t *label, af_dataset_scratch *ws)
{
    const fmnist *f = ds->impl;
    *label = f->labels[i];
    return af_ds_emit_pixels(ds, f->pixels + (size_t)i * f->rows * f->cols, f->rows, f->cols, 1, hwc, ws);
}

static af_status fm_get_label(const af_dataset *ds, int64_t i, int64_t *label, af_dataset_scratch *ws)
{
    (void)ws;
    *label = ((const fmnist *)ds->impl)->labels[i];
    return AF_OK;
}

static void fm_close(void *impl)
{
    fmnist *f = impl;
    if (!f) return;
    free(f->pixels);
    free(f->labels);
    free(f);
}

static const af_dataset_ops fm_ops = {
    .name = "fmnist",
    .get_u8 = fm_get_u8,
    .get_label = fm_get_label,
    .get_encoded = NULL,
    .locate = fm_locate,
    .close = fm_close,
};

/* Picks NAME.gz, else NAME, in dir. */
static af_status find_idx(const char *dir, const char *name, char *path, size_t cap)
{
    struct stat sb;
    snprintf(path, cap, "%s/%s.gz", dir, name);
    if (stat(path, &sb) == 0) return AF_OK;
    snprintf(path, cap, "%s/%s", dir, name);
    if (stat(path, &sb) == 0) return AF_OK;
    return af_errorf(AF_ERR_IO, "%s: neither %s.gz nor %s found (is dataset-fashion-mnist installed?)", dir, name,
                     name);
}

/* Whole (decompressed) file; zlib reads plain files transparently. */
static af_status gz_slurp(const char *path, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    gzFile g = gzopen(path, "rb");
    if (!g) return af_errorf(AF_ERR_IO, "%s: cannot open", path);
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    af_status st = AF_OK;
    if (!buf) {
        st = af_errorf(AF_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= IDX_MAX_BYTES) {
                st = af_errorf(AF_ERR_FORMAT, "%s: more than %zu bytes decompressed, not an IDX file", path,
                               IDX_MAX_BYTES);
                goto done;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                st = af_errorf(AF_ERR_NOMEM, "%s: out of memory at %zu bytes", path, cap * 2);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        size_t chunk = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        int k = gzread(g, buf + n, (unsigned)chunk);
        if (k < 0) {
            int err;
            const char *m = gzerror(g, &err);
            st = af_errorf(AF_ERR_FORMAT, "%s: gzip stream broken after %zu bytes: %s", path, n, m);
            goto done;
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    /* zlib reports a truncated gzip member as a plain end of file unless asked. */
    int err = Z_OK;
    const char *m = gzerror(g, &err);
    if (err != Z_OK) {
        st = af_errorf(AF_ERR_FORMAT, "%s: gzip stream ends early or is broken after %zu bytes: %s", path, n, m);
        goto done;
    }
done:
    gzclose(g);
    if (st != AF_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return AF_OK;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

af_status af_ds_open_fmnist(af_dataset *ds, const char *dir, int split, const af_dataset_opts *o)
{
    (void)o;
    const char *stem = split == AF_DATASET_SPLIT_TEST ? "t10k" : "train";
    char lab_path[4096], name[64];
    uint8_t *img = NULL, *lab = NULL;
    size_t ilen = 0, llen = 0;
    af_status st = AF_ERR_NOMEM;
    fmnist *f = af_calloc(1, sizeof *f, "Fashion-MNIST dataset");
    if (!f) return AF_ERR_NOMEM;
    ds->ops = &fm_ops;
    ds->impl = f;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", stem);
    if ((st = find_idx(dir, name, f->images_path, sizeof f->images_path)) != AF_OK) goto fail;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", stem);
    if ((st = find_idx(dir, name, lab_path, sizeof lab_path)) != AF_OK) goto fail;
    if ((st = gz_slurp(f->images_path, &img, &ilen)) != AF_OK) goto fail;
    if ((st = gz_slurp(lab_path, &lab, &llen)) != AF_OK) goto fail;

    if (ilen < 16 || be32(img) != 0x00000803u) {
        st = af_errorf(AF_ERR_FORMAT, "%s: bad IDX header (magic 0x%08x), expected 0x00000803 (u8, 3 dims)",
                       f->images_path, ilen >= 4 ? be32(img) : 0);
        goto fail;
    }
    if (llen < 8 || be32(lab) != 0x00000801u) {
        st = af_errorf(AF_ERR_FORMAT, "%s: bad IDX header (magic 0x%08x), expected 0x00000801 (u8, 1 dim)", lab_path,
                       llen >= 4 ? be32(lab) : 0);
        goto fail;
    }
    uint64_t n = be32(img + 4), rows = be32(img + 8), cols = be32(img + 12);
    if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || n == 0 || ilen - 16 != n * rows * cols) {
        st = af_errorf(AF_ERR_FORMAT, "%s: header says %" PRIu64 " images of %" PRIu64 " x %" PRIu64
                       ", expected exactly that many pixel bytes after the 16-byte header, found %zu",
                       f->images_path, n, rows, cols, ilen - 16);
        goto fail;
    }
    if (be32(lab + 4) != n || llen - 8 != n) {
        st = af_errorf(AF_ERR_FORMAT, "%s: header says %" PRIu32 " labels with %zu label bytes, expected %" PRIu64
                       " to match %s", lab_path, be32(lab + 4), llen - 8, n, f->images_path);
        goto fail;
    }
    f->rows = (int)rows;
    f->cols = (int)cols;
    f->pixels = malloc(ilen - 16);
    f->labels = malloc(n);
    if (!f->pixels || !f->labels) {
        st = af_errorf(AF_ERR_NOMEM, "out of memory for %" PRIu64 " Fashion-MNIST images", n);
        goto fail;
    }
    memcpy(f->pixels, img + 16, ilen - 16);
    memcpy(f->labels, lab + 8, n);
    int maxl = 0;
    for (uint64_t i = 0; i < n; i++)
        if (f->labels[i] > maxl) maxl = f->labels[i];
    ds->n = (int64_t)n;
    ds->classes = maxl + 1;
    ds->c = 1;
    ds->h = f->rows;
    ds->w = f->cols;
    snprintf(ds->describe, sizeof ds->describe, "fmnist %s split of %s: %" PRId64 " images, %" PRId64 " classes",
             split == AF_DATASET_SPLIT_TEST ? "test" : "train", dir, ds->n, ds->classes);
    free(img);
    free(lab);
    return AF_OK;
fail:
    free(img);
    free(lab);
    fm_close(f);
    ds->impl = NULL;
    return st;
}
