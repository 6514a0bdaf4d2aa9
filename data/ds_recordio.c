/* RecordIO datasets as insightface lays them out (train.rec + train.idx,
 * record 0 describing where images end and identity records begin); see
 * include/arcface/data.h for the rules. The .idx is read once into a
 * per-image offset table; each image is then one pread of the bytes up to
 * the next image's offset, so readers share no file position and a record
 * costs one system call. */
#include "dataset_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A span hint above this is not trusted (sparse or unordered idx): read
 * this much and let the frame header ask for the rest. */
#define RIO_MAX_HINT (1u << 20)
#define RIO_DEFAULT_HINT (64u << 10)

typedef struct {
    char *rec_path;
    int fd;
    uint64_t file_size;
    uint64_t *offsets;  /* (n) byte offset of each image record */
    int64_t *keys;      /* (n) its idx key, or NULL when keys are first_key + i */
    int64_t first_key;
    int increasing;     /* offsets ascend with the index: the next offset bounds a record */
    int header0;        /* record 0 is an insightface dataset header */
    int64_t id_begin;   /* with header0: first identity key */
    int64_t ids;        /* identity records found */
} rio;

static int64_t rio_key(const rio *r, int64_t i) { return r->keys ? r->keys[i] : r->first_key + i; }

static void rio_locate(const af_dataset *ds, int64_t i, char *buf, size_t cap)
{
    const rio *r = ds->impl;
    snprintf(buf, cap, "%s key %" PRId64 " at offset %" PRIu64, r->rec_path, rio_key(r, i), r->offsets[i]);
}

static af_status pread_full(int fd, uint8_t *buf, size_t n, uint64_t off, const char *what)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return af_errorf(AF_ERR_IO, "%s: read of %zu bytes failed: %s", what, n, strerror(errno));
        if (k == 0)
            return af_errorf(AF_ERR_FORMAT, "%s: file ends after %zu of %zu bytes (truncated?)", what, got, n);
        got += (size_t)k;
    }
    return AF_OK;
}

/* The payload of the record at `off`; *payload points into ws. `hint` is
 * how many bytes the record probably occupies. */
static af_status rio_read_at(const rio *r, uint64_t off, size_t hint, af_dataset_scratch *ws,
                             const uint8_t **payload, size_t *plen, const char *what)
{
    if (off >= r->file_size || r->file_size - off < 8)
        return af_errorf(AF_ERR_CORRUPT,
                         "%s: the idx points past the end of %s (%" PRIu64
                         " bytes; a record needs at least its 8-byte frame header there)",
                         what, r->rec_path, r->file_size);
    uint64_t left = r->file_size - off;
    size_t want = hint < 8 ? 8 : hint;
    if (want > left) want = (size_t)left;
    af_recordio_frame f;
    for (;;) {
        af_status st = af_scratch_grow(&ws->rbuf, &ws->rcap, want, "record buffer");
        if (st == AF_OK) st = pread_full(r->fd, ws->rbuf, want, off, what);
        if (st == AF_OK) st = af_recordio_frame_scan(ws->rbuf, want, &f, what);
        if (st != AF_OK) return st;
        if (!f.need) break;
        if (f.need > left)
            return af_errorf(AF_ERR_FORMAT,
                             "%s: record needs %zu bytes, past the end of %s (%" PRIu64 " bytes, %" PRIu64
                             " left from this offset)",
                             what, f.need, r->rec_path, r->file_size, left);
        /* A split record announces one part at a time: read generously. */
        size_t more = f.need + (f.need >> 1) + 64;
        want = more > left ? (size_t)left : more;
    }
    if (f.parts == 1) {
        *payload = ws->rbuf + 8;
    } else {
        af_status st = af_scratch_grow(&ws->pbuf, &ws->pcap, f.payload_len, "payload buffer");
        if (st != AF_OK) return st;
        af_recordio_frame_copy(ws->rbuf, &f, ws->pbuf);
        *payload = ws->pbuf;
    }
    *plen = f.payload_len;
    return AF_OK;
}

static size_t rio_hint(const rio *r, int64_t i, int64_t n)
{
    if (r->increasing) {
        uint64_t end = i + 1 < n ? r->offsets[i + 1] : r->file_size;
        if (end > r->offsets[i] && end - r->offsets[i] <= RIO_MAX_HINT) return (size_t)(end - r->offsets[i]);
    }
    return RIO_DEFAULT_HINT;
}

static af_status label_of(const af_irheader *h, int64_t *label, const char *what)
{
    float f = af_irheader_class(h);
    if (!(f >= 0.0f && f < 9.0e15f) || f != floorf(f))
        return af_errorf(AF_ERR_CORRUPT, "%s: label %g is not a non-negative integer", what, (double)f);
    *label = (int64_t)f;
    return AF_OK;
}

/* Header and image bytes of image i. */
static af_status rio_image(const af_dataset *ds, int64_t i, af_dataset_scratch *ws, af_irheader *h,
                           int64_t *label, char *what, size_t wcap)
{
    const rio *r = ds->impl;
    rio_locate(ds, i, what, wcap);
    const uint8_t *p;
    size_t len;
    af_status st = rio_read_at(r, r->offsets[i], rio_hint(r, i, ds->n), ws, &p, &len, what);
    if (st == AF_OK) st = af_irheader_parse(p, len, h, what);
    if (st == AF_OK) st = label_of(h, label, what);
    return st;
}

static af_status rio_get_u8(const af_dataset *ds, int64_t i, uint8_t *hwc, int64_t *label, af_dataset_scratch *ws)
{
    char what[512];
    af_irheader h;
    af_status st = rio_image(ds, i, ws, &h, label, what, sizeof what);
    if (st != AF_OK) return st;
    if (h.data_len == 0) return af_errorf(AF_ERR_FORMAT, "%s: record holds no image bytes", what);
    af_image_decoder *dec;
    st = af_scratch_decoder(ws, &dec);
    if (st != AF_OK) return st;
    return af_image_decoder_decode(dec, h.data, h.data_len, ds->h, ds->w, ds->c, hwc, what);
}

static af_status rio_get_label(const af_dataset *ds, int64_t i, int64_t *label, af_dataset_scratch *ws)
{
    char what[512];
    af_irheader h;
    return rio_image(ds, i, ws, &h, label, what, sizeof what);
}

static af_status rio_get_encoded(const af_dataset *ds, int64_t i, const uint8_t **bytes, size_t *len,
                                 int64_t *label, af_dataset_scratch *ws)
{
    char what[512];
    af_irheader h;
    af_status st = rio_image(ds, i, ws, &h, label, what, sizeof what);
    if (st != AF_OK) return st;
    if (h.data_len == 0) return af_errorf(AF_ERR_FORMAT, "%s: record holds no image bytes", what);
    *bytes = h.data;
    *len = h.data_len;
    return AF_OK;
}

static void rio_close(void *impl)
{
    rio *r = impl;
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    free(r->rec_path);
    free(r->offsets);
    free(r->keys);
    free(r);
}

static const af_dataset_ops rio_ops = {
    .name = "recordio",
    .get_u8 = rio_get_u8,
    .get_label = rio_get_label,
    .get_encoded = rio_get_encoded,
    .locate = rio_locate,
    .close = rio_close,
};

/* ---- opening ------------------------------------------------------------------ */

/* The label of image i from the first 64 bytes of its record: the frame
 * header, the IRHeader and the first float label. The open-time label scan
 * of an index without a header record (plain im2rec output: Glint360K,
 * WebFace42M) then reads 64 bytes per image instead of every image. Falls
 * back to reading the whole record when the first frame is too short. */
static af_status rio_label_fast(const rio *r, int64_t i, af_dataset_scratch *ws, int64_t *label)
{
    char what[512];
    snprintf(what, sizeof what, "%s key %" PRId64 " at offset %" PRIu64, r->rec_path, rio_key(r, i), r->offsets[i]);
    uint8_t b[64];
    uint64_t off = r->offsets[i];
    if (off < r->file_size && r->file_size - off >= sizeof b && pread_full(r->fd, b, sizeof b, off, what) == AF_OK) {
        /* b: magic, length word, then IRHeader {flag, label, id, id2}, labels[0] */
        uint32_t w[9];
        for (int k = 0; k < 9; k++)
            w[k] = (uint32_t)b[4 * k] | (uint32_t)b[4 * k + 1] << 8 | (uint32_t)b[4 * k + 2] << 16 |
                   (uint32_t)b[4 * k + 3] << 24;
        uint32_t cflag = w[1] >> 29, len = w[1] & AF_RECORDIO_MAX_LEN, flag = w[2];
        if (w[0] == AF_RECORDIO_MAGIC && (cflag == 0 || cflag == 1) && len >= AF_IRHEADER_SIZE + 4) {
            float f;
            memcpy(&f, flag ? &w[8] : &w[3], 4);
            if (!(f >= 0.0f && f < 9.0e15f) || f != floorf(f))
                return af_errorf(AF_ERR_CORRUPT, "%s: label %g is not a non-negative integer", what, (double)f);
            *label = (int64_t)f;
            return AF_OK;
        }
    }
    const uint8_t *p;
    size_t len;
    af_irheader h;
    af_status st = rio_read_at(r, off, RIO_DEFAULT_HINT, ws, &p, &len, what);
    if (st == AF_OK) st = af_irheader_parse(p, len, &h, what);
    if (st == AF_OK) st = label_of(&h, label, what);
    return st;
}

static int cmp_key(const void *a, const void *b)
{
    int64_t x = ((const af_recordio_idx_entry *)a)->key, y = ((const af_recordio_idx_entry *)b)->key;
    return (x > y) - (x < y);
}

/* Entry with `key` in the key-sorted table, or NULL. */
static const af_recordio_idx_entry *find_key(const af_recordio_idx_entry *e, size_t n, int64_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e[mid].key < key) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && e[lo].key == key ? &e[lo] : NULL;
}

/* Reads the record with `key`: 1 = image (has bytes), 0 = identity record
 * (flag >= 2, no bytes), -1 = missing or unreadable. */
static int record_kind(const rio *r, const af_recordio_idx_entry *e, size_t n, int64_t key, af_dataset_scratch *ws)
{
    const af_recordio_idx_entry *x = find_key(e, n, key);
    if (!x) return -1;
    char what[512];
    snprintf(what, sizeof what, "%s key %" PRId64 " at offset %" PRIu64, r->rec_path, key, x->offset);
    const uint8_t *p;
    size_t len;
    af_irheader h;
    if (rio_read_at(r, x->offset, 256, ws, &p, &len, what) != AF_OK || af_irheader_parse(p, len, &h, what) != AF_OK) {
        af_error_clear();
        return -1;
    }
    if (h.data_len > 0) return 1;
    return h.flag >= 2 ? 0 : -1;
}

/* insightface's `property` file: "num_classes,height,width". 0 if absent. */
static af_status read_property(const char *rec_path, int64_t *classes)
{
    *classes = 0;
    size_t n = strlen(rec_path);
    char *p = af_malloc(n + 16, "path");
    if (!p) return AF_ERR_NOMEM;
    memcpy(p, rec_path, n + 1);
    char *slash = strrchr(p, '/');
    strcpy(slash ? slash + 1 : p, "property");
    char *text = NULL;
    size_t len = 0;
    af_status st = AF_OK;
    struct stat sb;
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
        st = af_read_file(p, 4096, &text, &len);
        if (st == AF_OK) {
            long long c = 0;
            if (sscanf(text, " %lld", &c) != 1 || c <= 0)
                st = af_errorf(AF_ERR_FORMAT, "%s: expected \"num_classes,height,width\", got \"%.40s\"", p, text);
            else
                *classes = c;
        }
    }
    free(text);
    free(p);
    return st;
}

af_status af_ds_open_recordio(af_dataset *ds, const char *rec_path, const char *idx_path, const af_dataset_opts *o)
{
    af_status st = AF_ERR_NOMEM;
    af_recordio_idx_entry *e = NULL;
    size_t ne = 0;
    char *text = NULL;
    size_t tlen = 0;
    af_dataset_scratch *ws = NULL;
    rio *r = af_calloc(1, sizeof *r, "RecordIO dataset");
    if (!r) return AF_ERR_NOMEM;
    r->fd = -1;
    ds->ops = &rio_ops;
    ds->impl = r;
    r->rec_path = strdup(rec_path);
    if (!r->rec_path) goto fail;
    if ((st = af_dataset_scratch_init(&ws)) != AF_OK) goto fail;

    r->fd = open(rec_path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot open the RecordIO file: %s", rec_path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(r->fd, &sb) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot stat: %s", rec_path, strerror(errno));
        goto fail;
    }
    r->file_size = (uint64_t)sb.st_size;
    if ((st = af_read_file(idx_path, (size_t)1 << 34, &text, &tlen)) != AF_OK) goto fail;
    if ((st = af_recordio_idx_parse(text, tlen, &e, &ne, idx_path)) != AF_OK) goto fail;
    free(text);
    text = NULL;
    if (ne == 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: no \"key<TAB>offset\" lines, expected one per record", idx_path);
        goto fail;
    }
    int sorted = 1;
    for (size_t i = 1; i < ne && sorted; i++) sorted = e[i].key > e[i - 1].key;
    if (!sorted) {
        qsort(e, ne, sizeof *e, cmp_key);
        for (size_t i = 1; i < ne; i++)
            if (e[i].key == e[i - 1].key) {
                st = af_errorf(AF_ERR_FORMAT, "%s: key %" PRId64 " appears more than once (offsets %" PRIu64
                               " and %" PRIu64 ")", idx_path, e[i].key, e[i - 1].offset, e[i].offset);
                goto fail;
            }
    }

    /* Record 0 decides the layout. A record 0 that carries an image is an
     * im2rec multi-label image, not a header, whatever its flag says. */
    size_t img_lo = 0, img_hi = ne; /* images are e[img_lo, img_hi) */
    if (e[0].key == 0) {
        char what[512];
        snprintf(what, sizeof what, "%s key 0 at offset %" PRIu64 " (the dataset header record)", rec_path,
                 e[0].offset);
        const uint8_t *p;
        size_t len;
        af_irheader h;
        st = rio_read_at(r, e[0].offset, 4096, ws, &p, &len, what);
        if (st == AF_OK) st = af_irheader_parse(p, len, &h, what);
        if (st != AF_OK) goto fail;
        if (h.flag > 0 && h.data_len == 0) {
            r->header0 = 1;
            float a = af_irheader_label_at(&h, 0), b = h.flag >= 2 ? af_irheader_label_at(&h, 1) : a;
            if (!(a >= 1.0f && a < 9.0e15f)) {
                st = af_errorf(AF_ERR_FORMAT, "%s: header label[0] = %g, expected 1 + the number of images", what,
                               (double)a);
                goto fail;
            }
            int64_t bound = (int64_t)llroundf(a);
            /* float32 keys above 2^24 are rounded: move the boundary to
             * where the records change from images to identities. */
            for (int step = 0; step < 16 && bound > 1 && record_kind(r, e, ne, bound - 1, ws) == 0; step++) bound--;
            for (int step = 0; step < 16 && record_kind(r, e, ne, bound, ws) == 1; step++) bound++;
            r->id_begin = bound;
            img_lo = 1;
            while (img_lo < ne && e[img_lo].key < 1) img_lo++;
            img_hi = img_lo;
            while (img_hi < ne && e[img_hi].key < bound) img_hi++;
            r->ids = (int64_t)(ne - img_hi);
            if (r->ids == 0 && b > a && b < 9.0e15f && (int64_t)llroundf(b) > bound)
                r->ids = (int64_t)llroundf(b) - bound;
        }
    }
    ds->n = (int64_t)(img_hi - img_lo);
    if (ds->n <= 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: no image records (%zu idx entries%s)", idx_path, ne,
                       r->header0 ? ", the header says none are images" : "");
        goto fail;
    }
    r->offsets = af_malloc((size_t)ds->n * sizeof *r->offsets, "record offsets");
    if (!r->offsets) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    r->first_key = e[img_lo].key;
    int dense = 1;
    r->increasing = 1;
    for (int64_t i = 0; i < ds->n; i++) {
        r->offsets[i] = e[img_lo + i].offset;
        dense &= e[img_lo + i].key == r->first_key + i;
        if (i) r->increasing &= r->offsets[i] > r->offsets[i - 1];
    }
    if (!dense) {
        r->keys = af_malloc((size_t)ds->n * sizeof *r->keys, "record keys");
        if (!r->keys) {
            st = AF_ERR_NOMEM;
            goto fail;
        }
        for (int64_t i = 0; i < ds->n; i++) r->keys[i] = e[img_lo + i].key;
    }
    free(e);
    e = NULL;

    /* Classes: caller, property file, identity records, else a label scan. */
    const char *classes_from = "caller";
    ds->classes = o->num_classes;
    if (!ds->classes) {
        if ((st = read_property(rec_path, &ds->classes)) != AF_OK) goto fail;
        classes_from = "property file";
    }
    if (!ds->classes && r->ids > 0) {
        ds->classes = r->ids;
        classes_from = "identity records";
    }
    if (!ds->classes) {
        int64_t maxl = -1;
        for (int64_t i = 0; i < ds->n; i++) {
            int64_t l = -1;
            if (rio_label_fast(r, i, ws, &l) == AF_OK && l > maxl) maxl = l;
        }
        af_error_clear();
        ds->classes = maxl + 1;
        classes_from = "largest label + 1";
        if (ds->classes <= 0) {
            st = af_errorf(AF_ERR_FORMAT, "%s: no record has a readable label", rec_path);
            goto fail;
        }
    }

    /* Native shape: the first image that decodes a header. */
    if (!o->height || !o->channels) {
        int found = 0;
        char first_err[512] = "";
        for (int64_t i = 0; i < ds->n && i < 16 && !found; i++) {
            char what[512];
            af_irheader h;
            int64_t l;
            int ih, iw, ic;
            st = rio_image(ds, i, ws, &h, &l, what, sizeof what);
            if (st == AF_OK) st = af_image_probe(h.data, h.data_len, &ih, &iw, &ic, what);
            if (st == AF_OK) {
                ds->h = ih;
                ds->w = iw;
                ds->c = ic;
                found = 1;
            } else if (!first_err[0]) {
                snprintf(first_err, sizeof first_err, "%s", af_errmsg());
            }
        }
        if (!found) {
            st = af_errorf(AF_ERR_FORMAT, "%s: none of the first images has a readable header (first error: %s)",
                           rec_path, first_err);
            goto fail;
        }
    }
    snprintf(ds->describe, sizeof ds->describe,
             "recordio %s: %" PRId64 " images, %" PRId64 " classes (%s), %s, keys %" PRId64 "..%" PRId64 "%s",
             rec_path, ds->n, ds->classes, classes_from,
             r->header0 ? "insightface header record" : "no header record", rio_key(r, 0), rio_key(r, ds->n - 1),
             r->keys ? " (not contiguous)" : "");
    af_dataset_scratch_free(ws);
    return AF_OK;
fail:
    free(e);
    free(text);
    af_dataset_scratch_free(ws);
    rio_close(r);
    ds->impl = NULL;
    return st;
}
