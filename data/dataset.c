/* af_dataset: turns a spec string into one of the four formats and does
 * what all of them share: the output shape, the label range check that
 * catches a corrupt header before it indexes a class-centre table, and the
 * uint8 -> normalised float step (see include/arcface/data.h). */
#include "dataset_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- scratch --------------------------------------------------------------- */

af_status af_dataset_scratch_init(af_dataset_scratch **out)
{
    *out = af_calloc(1, sizeof **out, "dataset scratch");
    return *out ? AF_OK : AF_ERR_NOMEM;
}

void af_dataset_scratch_free(af_dataset_scratch *ws)
{
    if (!ws) return;
    af_image_decoder_free(ws->dec);
    free(ws->rbuf);
    free(ws->pbuf);
    free(ws->pix);
    free(ws->tmp);
    free(ws->rtmp);
    free(ws);
}

af_status af_scratch_grow(uint8_t **p, size_t *cap, size_t need, const char *what)
{
    if (need <= *cap) return AF_OK;
    /* Round up so that a slowly growing record size does not realloc every time. */
    size_t nc = need + need / 4 + 64;
    uint8_t *q = realloc(*p, nc);
    if (!q) return af_errorf(AF_ERR_NOMEM, "out of memory growing %s to %zu bytes", what, nc);
    *p = q;
    *cap = nc;
    return AF_OK;
}

af_status af_scratch_decoder(af_dataset_scratch *ws, af_image_decoder **dec)
{
    if (!ws->dec) {
        af_status st = af_image_decoder_init(&ws->dec);
        if (st != AF_OK) return st;
    }
    *dec = ws->dec;
    return AF_OK;
}

af_status af_ds_emit_pixels(const af_dataset *ds, const uint8_t *src, int sh, int sw, int sc, uint8_t *hwc,
                            af_dataset_scratch *ws)
{
    if (sh == ds->h && sw == ds->w) {
        af_image_convert_channels(src, sh, sw, sc, hwc, ds->c);
        return AF_OK;
    }
    af_status st = af_scratch_grow(&ws->tmp, &ws->tmpcap, (size_t)sh * sw * ds->c, "pixel conversion buffer");
    if (st != AF_OK) return st;
    af_image_convert_channels(src, sh, sw, sc, ws->tmp, ds->c);
    size_t need = af_image_resize_tmp_bytes(ds->h, ds->w);
    if (need > ws->rtmpcap) {
        void *q = realloc(ws->rtmp, need);
        if (!q) return af_errorf(AF_ERR_NOMEM, "out of memory for resize coefficients");
        ws->rtmp = q;
        ws->rtmpcap = need;
    }
    return af_image_resize(ws->tmp, sh, sw, ds->c, hwc, ds->h, ds->w, ws->rtmp);
}

af_status af_read_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    af_status st;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = af_errorf(AF_ERR_FORMAT, "%s: %lld bytes, expected at most %zu", path, (long long)sb.st_size, max_bytes);
        goto fail;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    buf = af_malloc(n + 1, path);
    if (!buf) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            st = af_errorf(AF_ERR_IO, "%s: read failed at offset %zu of %zu: %s", path, got, n,
                           r < 0 ? strerror(errno) : "unexpected end of file");
            goto fail;
        }
        got += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
    *out = buf;
    *len = n;
    return AF_OK;
fail:
    free(buf);
    close(fd);
    return st;
}

/* ---- opening ---------------------------------------------------------------- */

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* A .rec path, a prefix, or a directory holding train.rec / train.idx. */
static af_status open_recordio_path(af_dataset *ds, const char *path, const af_dataset_opts *o)
{
    size_t n = strlen(path);
    char *rec = af_malloc(n + 16, "path"), *idx = af_malloc(n + 16, "path");
    af_status st = AF_ERR_NOMEM;
    if (!rec || !idx) goto done;
    if (is_dir(path)) {
        snprintf(rec, n + 16, "%s/train.rec", path);
        snprintf(idx, n + 16, "%s/train.idx", path);
    } else if (ends_with(path, ".rec")) {
        snprintf(rec, n + 16, "%s", path);
        snprintf(idx, n + 16, "%.*s.idx", (int)(n - 4), path);
    } else {
        snprintf(rec, n + 16, "%s.rec", path);
        snprintf(idx, n + 16, "%s.idx", path);
    }
    st = af_ds_open_recordio(ds, rec, idx, o);
done:
    free(rec);
    free(idx);
    return st;
}

static int fmnist_dir(const char *dir)
{
    static const char *const names[] = {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte",
                                        "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"};
    char p[4096];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (is_file(p)) return 1;
    }
    return 0;
}

static af_status dispatch(af_dataset *ds, const char *spec, const af_dataset_opts *o)
{
    if (has_prefix(spec, "synthetic:")) return af_ds_open_synthetic(ds, spec + 10, o);
    if (strcmp(spec, "synthetic") == 0) return af_ds_open_synthetic(ds, "", o);
    if (has_prefix(spec, "fmnist-test:")) return af_ds_open_fmnist(ds, spec + 12, AF_DATASET_SPLIT_TEST, o);
    if (has_prefix(spec, "fmnist:")) return af_ds_open_fmnist(ds, spec + 7, AF_DATASET_SPLIT_TRAIN, o);
    if (has_prefix(spec, "recordio:")) return open_recordio_path(ds, spec + 9, o);
    if (has_prefix(spec, "folder:")) return af_ds_open_folder(ds, spec + 7, o);
    if (is_dir(spec)) {
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s/train.rec", spec);
        snprintf(b, sizeof b, "%s/train.idx", spec);
        if (is_file(a) && is_file(b)) return af_ds_open_recordio(ds, a, b, o);
        if (fmnist_dir(spec)) return af_ds_open_fmnist(ds, spec, o->split, o);
        return af_ds_open_folder(ds, spec, o);
    }
    if (is_file(spec) && ends_with(spec, ".rec")) return open_recordio_path(ds, spec, o);
    /* One of the Fashion-MNIST IDX files themselves: its directory, its split. */
    const char *base = strrchr(spec, '/') ? strrchr(spec, '/') + 1 : spec;
    int train = has_prefix(base, "train-images-idx3-ubyte") || has_prefix(base, "train-labels-idx1-ubyte");
    int test = has_prefix(base, "t10k-images-idx3-ubyte") || has_prefix(base, "t10k-labels-idx1-ubyte");
    if (is_file(spec) && (train || test)) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%.*s", base > spec ? (int)(base - spec - 1) : 1, base > spec ? spec : ".");
        return af_ds_open_fmnist(ds, dir, test ? AF_DATASET_SPLIT_TEST : AF_DATASET_SPLIT_TRAIN, o);
    }
    char r[4096];
    snprintf(r, sizeof r, "%s.rec", spec);
    if (is_file(r)) return open_recordio_path(ds, spec, o);
    return af_errorf(AF_ERR_ARG,
                     "dataset '%s': cannot tell its format: expected a directory (train.rec + train.idx, "
                     "Fashion-MNIST IDX files, or one sub-folder per identity), PREFIX.rec with PREFIX.idx, or a "
                     "fmnist:DIR, fmnist-test:DIR, folder:DIR, recordio:PATH or synthetic:K=V,... spec",
                     spec);
}

af_status af_dataset_open(af_dataset **out, const char *spec, const af_dataset_opts *opts)
{
    *out = NULL;
    af_dataset_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (o.channels != 0 && o.channels != 1 && o.channels != 3)
        return af_errorf(AF_ERR_ARG, "dataset '%s': channels %d requested, expected 1 or 3 (0 = native)", spec,
                         o.channels);
    if (o.height < 0 || o.width < 0 || o.height > 16384 || o.width > 16384 || (!o.height != !o.width))
        return af_errorf(AF_ERR_ARG, "dataset '%s': output size %d x %d, expected both 1..16384 or both 0 (native)",
                         spec, o.height, o.width);
    if (o.num_classes < 0)
        return af_errorf(AF_ERR_ARG, "dataset '%s': num_classes %" PRId64 ", expected >= 0", spec, o.num_classes);
    af_dataset *ds = af_calloc(1, sizeof *ds, "dataset");
    if (!ds) return AF_ERR_NOMEM;
    af_status st = dispatch(ds, spec, &o);
    if (st != AF_OK) {
        free(ds);
        return st;
    }
    if (o.channels) ds->c = o.channels;
    if (o.height) {
        ds->h = o.height;
        ds->w = o.width;
    }
    if (o.num_classes) ds->classes = o.num_classes;
    *out = ds;
    return AF_OK;
}

void af_dataset_close(af_dataset *ds)
{
    if (!ds) return;
    if (ds->ops && ds->ops->close) ds->ops->close(ds->impl);
    free(ds);
}

int64_t af_dataset_size(const af_dataset *ds) { return ds->n; }
int64_t af_dataset_num_classes(const af_dataset *ds) { return ds->classes; }
const char *af_dataset_format(const af_dataset *ds) { return ds->ops->name; }
const char *af_dataset_describe(const af_dataset *ds) { return ds->describe; }

void af_dataset_shape(const af_dataset *ds, int *c, int *h, int *w)
{
    if (c) *c = ds->c;
    if (h) *h = ds->h;
    if (w) *w = ds->w;
}

void af_dataset_locate(const af_dataset *ds, int64_t index, char *buf, size_t cap)
{
    if (index < 0 || index >= ds->n) {
        snprintf(buf, cap, "(index %" PRId64 " outside [0, %" PRId64 "))", index, ds->n);
        return;
    }
    ds->ops->locate(ds, index, buf, cap);
}

/* ---- reading ---------------------------------------------------------------- */

static af_status check_index(const af_dataset *ds, int64_t index)
{
    if (index < 0 || index >= ds->n)
        return af_errorf(AF_ERR_ARG, "%s: image index %" PRId64 " outside [0, %" PRId64 ")", ds->describe, index,
                         ds->n);
    return AF_OK;
}

static af_status check_label(const af_dataset *ds, int64_t index, int64_t label)
{
    if (label >= 0 && label < ds->classes) return AF_OK;
    char loc[512];
    ds->ops->locate(ds, index, loc, sizeof loc);
    return af_errorf(AF_ERR_CORRUPT, "%s: label %" PRId64 " outside [0, %" PRId64 ") (the number of classes)", loc,
                     label, ds->classes);
}

af_status af_dataset_get_u8(const af_dataset *ds, int64_t index, uint8_t *hwc, int64_t *label,
                            af_dataset_scratch *ws)
{
    af_status st = check_index(ds, index);
    if (st != AF_OK) return st;
    int64_t lab = -1;
    st = ds->ops->get_u8(ds, index, hwc, &lab, ws);
    if (st == AF_OK) st = check_label(ds, index, lab);
    if (st == AF_OK && label) *label = lab;
    return st;
}

af_status af_dataset_get_label(const af_dataset *ds, int64_t index, int64_t *label, af_dataset_scratch *ws)
{
    af_status st = check_index(ds, index);
    if (st != AF_OK) return st;
    int64_t lab = -1;
    st = ds->ops->get_label(ds, index, &lab, ws);
    if (st == AF_OK) st = check_label(ds, index, lab);
    if (st == AF_OK) *label = lab;
    return st;
}

af_status af_dataset_get_encoded(const af_dataset *ds, int64_t index, const uint8_t **bytes, size_t *len,
                                 int64_t *label, af_dataset_scratch *ws)
{
    af_status st = check_index(ds, index);
    if (st != AF_OK) return st;
    if (!ds->ops->get_encoded)
        return af_errorf(AF_ERR_ARG, "%s: %s datasets hold raw pixels, not encoded images", ds->describe,
                         ds->ops->name);
    int64_t lab = -1;
    st = ds->ops->get_encoded(ds, index, bytes, len, &lab, ws);
    if (st == AF_OK) st = check_label(ds, index, lab);
    if (st == AF_OK && label) *label = lab;
    return st;
}

af_status af_dataset_get_ws(const af_dataset *ds, int64_t index, float *chw, int64_t *label, int flip,
                            af_dataset_scratch *ws)
{
    af_status st = af_scratch_grow(&ws->pix, &ws->pixcap, (size_t)ds->c * ds->h * ds->w, "image pixels");
    if (st != AF_OK) return st;
    st = af_dataset_get_u8(ds, index, ws->pix, label, ws);
    if (st != AF_OK) return st;
    af_image_normalize_chw(ws->pix, ds->h, ds->w, ds->c, flip, chw);
    return AF_OK;
}

af_status af_dataset_get(const af_dataset *ds, int64_t index, float *chw, int64_t *label, int flip)
{
    af_dataset_scratch *ws = NULL;
    af_status st = af_dataset_scratch_init(&ws);
    if (st != AF_OK) return st;
    st = af_dataset_get_ws(ds, index, chw, label, flip, ws);
    af_dataset_scratch_free(ws);
    return st;
}
