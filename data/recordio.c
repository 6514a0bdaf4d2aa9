/* The MXNet RecordIO container (dmlc-core's recordio.cc and MXNet's
 * recordio.py describe it; see include/arcface/data.h, section 4): frame
 * walking and reassembly, the IRHeader, the .idx text, and a writer that
 * splits records at magic words exactly like dmlc's RecordIOWriter so that
 * MXNet, insightface and we all read what it writes.
 *
 * Everything here parses untrusted bytes, which is why it is the fuzz
 * target's entry point: lengths are checked before every read, and all
 * integer fields are decoded little-endian byte by byte (no unaligned or
 * host-endian loads). */
#include "arcface/data.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static inline float rdf32(const uint8_t *p)
{
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static inline size_t pad4(size_t n) { return (n + 3) & ~(size_t)3; }

/* ---- frames ---------------------------------------------------------------- */

af_status af_recordio_frame_scan(const uint8_t *buf, size_t avail, af_recordio_frame *f, const char *what)
{
    memset(f, 0, sizeof *f);
    size_t pos = 0, payload = 0;
    int parts = 0;
    for (;;) {
        if (avail - pos < 8) {
            f->need = pos + 8;
            return AF_OK;
        }
        uint32_t magic = rd32(buf + pos);
        if (magic != AF_RECORDIO_MAGIC)
            return af_errorf(AF_ERR_FORMAT, "%s: bad magic 0x%08x at byte %zu of the record, expected 0x%08x", what,
                             magic, pos, AF_RECORDIO_MAGIC);
        uint32_t lrec = rd32(buf + pos + 4);
        uint32_t cflag = lrec >> 29, len = lrec & AF_RECORDIO_MAX_LEN;
        if (parts == 0 && cflag != 0 && cflag != 1)
            return af_errorf(AF_ERR_FORMAT,
                             "%s: record starts with continuation flag %u, expected 0 (whole) or 1 (first part)",
                             what, cflag);
        if (parts > 0 && cflag != 2 && cflag != 3)
            return af_errorf(AF_ERR_FORMAT,
                             "%s: part %d of a split record (byte %zu) has continuation flag %u, expected 2 or 3",
                             what, parts + 1, pos, cflag);
        payload += len + (parts > 0 ? 4u : 0u);
        if (payload > AF_RECORDIO_MAX_RECORD)
            return af_errorf(AF_ERR_FORMAT, "%s: record of more than %u bytes (part %d at byte %zu), refusing it",
                             what, AF_RECORDIO_MAX_RECORD, parts + 1, pos);
        parts++;
        size_t padded = pad4(len);
        if (avail - pos - 8 < padded) {
            f->need = pos + 8 + padded;
            return AF_OK;
        }
        pos += 8 + padded;
        if (cflag == 0 || cflag == 3) break;
    }
    f->consumed = pos;
    f->payload_len = payload;
    f->parts = parts;
    return AF_OK;
}

void af_recordio_frame_copy(const uint8_t *buf, const af_recordio_frame *f, uint8_t *payload)
{
    size_t pos = 0, out = 0;
    for (int i = 0; i < f->parts; i++) {
        uint32_t len = rd32(buf + pos + 4) & AF_RECORDIO_MAX_LEN;
        if (i > 0) { /* the writer cut the magic word out here */
            wr32(payload + out, AF_RECORDIO_MAGIC);
            out += 4;
        }
        memcpy(payload + out, buf + pos + 8, len);
        out += len;
        pos += 8 + pad4(len);
    }
}

/* ---- IRHeader -------------------------------------------------------------- */

af_status af_irheader_parse(const uint8_t *payload, size_t len, af_irheader *h, const char *what)
{
    memset(h, 0, sizeof *h);
    if (len < AF_IRHEADER_SIZE)
        return af_errorf(AF_ERR_FORMAT, "%s: record payload of %zu bytes, shorter than the %d-byte IRHeader", what,
                         len, AF_IRHEADER_SIZE);
    h->flag = rd32(payload);
    h->label = rdf32(payload + 4);
    h->id = rd64(payload + 8);
    h->id2 = rd64(payload + 16);
    uint64_t extra = (uint64_t)h->flag * 4;
    if (extra > len - AF_IRHEADER_SIZE)
        return af_errorf(AF_ERR_FORMAT,
                         "%s: IRHeader flag %" PRIu32 " announces %" PRIu32
                         " float labels (%" PRIu64 " bytes), but only %zu bytes follow the header",
                         what, h->flag, h->flag, extra, len - AF_IRHEADER_SIZE);
    h->labels = h->flag ? payload + AF_IRHEADER_SIZE : NULL;
    h->data = payload + AF_IRHEADER_SIZE + extra;
    h->data_len = len - AF_IRHEADER_SIZE - (size_t)extra;
    return AF_OK;
}

float af_irheader_label_at(const af_irheader *h, uint32_t i)
{
    return i < h->flag ? rdf32(h->labels + 4 * (size_t)i) : 0.0f;
}

float af_irheader_class(const af_irheader *h) { return h->flag ? rdf32(h->labels) : h->label; }

/* ---- .idx ------------------------------------------------------------------ */

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Decimal digits into *v; 0 if none or on overflow past max. */
static size_t parse_u64(const char *s, size_t n, uint64_t max, uint64_t *v)
{
    size_t i = 0;
    uint64_t x = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (max - d) / 10) return 0;
        x = x * 10 + d;
        i++;
    }
    *v = x;
    return i;
}

af_status af_recordio_idx_parse(const char *text, size_t len, af_recordio_idx_entry **entries, size_t *n,
                                const char *file)
{
    *entries = NULL;
    *n = 0;
    size_t cap = 0, cnt = 0, line = 0;
    af_recordio_idx_entry *e = NULL;
    size_t pos = 0;
    while (pos < len) {
        line++;
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - s) : len - pos;
        pos += ll + (nl ? 1 : 0);
        size_t i = 0;
        while (i < ll && is_blank(s[i])) i++;
        if (i == ll) continue; /* blank line */
        uint64_t key = 0, off = 0;
        size_t k = parse_u64(s + i, ll - i, INT64_MAX, &key);
        size_t j = i + k;
        size_t sep = j;
        while (j < ll && is_blank(s[j])) j++;
        size_t o = (k && j > sep) ? parse_u64(s + j, ll - j, INT64_MAX, &off) : 0;
        j += o;
        while (j < ll && is_blank(s[j])) j++;
        if (!k || !o || j != ll) {
            char shown[96];
            size_t m = 0, q = i;
            for (; q < ll && m + 3 < sizeof shown; q++) { /* printable, tab as \t */
                unsigned char c = (unsigned char)s[q];
                if (c == '\t') {
                    shown[m++] = '\\';
                    shown[m++] = 't';
                } else {
                    shown[m++] = (c >= 32 && c < 127) ? (char)c : '?';
                }
            }
            shown[m] = 0;
            free(e);
            return af_errorf(AF_ERR_FORMAT,
                             "%s line %zu: expected \"key<TAB>offset\" with non-negative integers, got \"%s\"%s", file,
                             line, shown, q < ll ? "..." : "");
        }
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 1024;
            af_recordio_idx_entry *ne = realloc(e, nc * sizeof *e);
            if (!ne) {
                free(e);
                return af_errorf(AF_ERR_NOMEM, "%s: out of memory for %zu index entries", file, nc);
            }
            e = ne;
            cap = nc;
        }
        e[cnt].key = (int64_t)key;
        e[cnt].offset = off;
        cnt++;
    }
    *entries = e;
    *n = cnt;
    return AF_OK;
}

/* ---- writer ---------------------------------------------------------------- */

struct af_recordio_writer {
    char *path[2], *tmp[2]; /* .rec, .idx */
    FILE *f[2];
    uint64_t offset;
    uint8_t *buf;
    size_t cap;
};

static char *str_cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = af_malloc(la + lb + 1, "path");
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static void writer_free(af_recordio_writer *w)
{
    for (int i = 0; i < 2; i++) {
        if (w->f[i]) fclose(w->f[i]);
        free(w->path[i]);
        free(w->tmp[i]);
    }
    free(w->buf);
    free(w);
}

af_status af_recordio_writer_open(af_recordio_writer **out, const char *prefix)
{
    *out = NULL;
    af_status st = AF_ERR_NOMEM;
    af_recordio_writer *w = af_calloc(1, sizeof *w, "RecordIO writer");
    if (!w) return AF_ERR_NOMEM;
    static const char *const ext[2] = {".rec", ".idx"}, *const tmpext[2] = {".rec.tmp", ".idx.tmp"};
    for (int i = 0; i < 2; i++) {
        w->path[i] = str_cat(prefix, ext[i]);
        w->tmp[i] = str_cat(prefix, tmpext[i]);
        if (!w->path[i] || !w->tmp[i]) goto fail;
        w->f[i] = fopen(w->tmp[i], "wb");
        if (!w->f[i]) {
            st = af_errorf(AF_ERR_IO, "%s: cannot create: %s", w->tmp[i], strerror(errno));
            goto fail;
        }
    }
    *out = w;
    return AF_OK;
fail:
    for (int i = 0; i < 2; i++)
        if (w->f[i]) remove(w->tmp[i]);
    writer_free(w);
    return st;
}

static af_status writer_bytes(af_recordio_writer *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f[0]) != n)
        return af_errorf(AF_ERR_IO, "%s: write failed at offset %" PRIu64 ": %s", w->tmp[0], w->offset,
                         strerror(errno));
    w->offset += n;
    return AF_OK;
}

static af_status writer_frame(af_recordio_writer *w, uint32_t cflag, const uint8_t *p, uint32_t len)
{
    uint8_t hdr[8];
    wr32(hdr, AF_RECORDIO_MAGIC);
    wr32(hdr + 4, cflag << 29 | len);
    af_status st = writer_bytes(w, hdr, 8);
    if (st == AF_OK) st = writer_bytes(w, p, len);
    return st;
}

af_status af_recordio_writer_put_raw(af_recordio_writer *w, int64_t key, const uint8_t *payload, size_t len)
{
    if (len > AF_RECORDIO_MAX_LEN)
        return af_errorf(AF_ERR_ARG, "%s: record %" PRId64 " has %zu bytes, RecordIO allows at most %u", w->path[0],
                         key, len, AF_RECORDIO_MAX_LEN);
    if (fprintf(w->f[1], "%" PRId64 "\t%" PRIu64 "\n", key, w->offset) < 0)
        return af_errorf(AF_ERR_IO, "%s: write failed: %s", w->tmp[1], strerror(errno));
    /* dmlc's RecordIOWriter: cut at every magic word at a 4-aligned offset,
     * dropping the word itself (the reader re-inserts it). */
    uint32_t n = (uint32_t)len, lower = n & ~3u, dptr = 0;
    af_status st;
    for (uint32_t i = 0; i < lower; i += 4) {
        if (rd32(payload + i) != AF_RECORDIO_MAGIC) continue;
        st = writer_frame(w, dptr == 0 ? 1u : 2u, payload + dptr, i - dptr);
        if (st != AF_OK) return st;
        dptr = i + 4;
    }
    st = writer_frame(w, dptr != 0 ? 3u : 0u, payload + dptr, n - dptr);
    if (st != AF_OK) return st;
    static const uint8_t zero[4] = {0, 0, 0, 0};
    return writer_bytes(w, zero, pad4(n) - n);
}

af_status af_recordio_writer_put(af_recordio_writer *w, int64_t key, uint32_t flag, float label,
                                 const float *labels, uint64_t id, uint64_t id2, const uint8_t *data, size_t len)
{
    size_t total = AF_IRHEADER_SIZE + (size_t)flag * 4 + len;
    if (total > AF_RECORDIO_MAX_LEN)
        return af_errorf(AF_ERR_ARG, "%s: record %" PRId64 " has %zu bytes, RecordIO allows at most %u", w->path[0],
                         key, total, AF_RECORDIO_MAX_LEN);
    if (total > w->cap) {
        uint8_t *nb = realloc(w->buf, total);
        if (!nb) return af_errorf(AF_ERR_NOMEM, "out of memory for a %zu-byte record", total);
        w->buf = nb;
        w->cap = total;
    }
    uint8_t *p = w->buf;
    uint32_t lu;
    wr32(p, flag);
    memcpy(&lu, &label, 4);
    wr32(p + 4, lu);
    wr64(p + 8, id);
    wr64(p + 16, id2);
    for (uint32_t i = 0; i < flag; i++) {
        memcpy(&lu, &labels[i], 4);
        wr32(p + AF_IRHEADER_SIZE + 4 * (size_t)i, lu);
    }
    if (len) memcpy(p + AF_IRHEADER_SIZE + (size_t)flag * 4, data, len);
    return af_recordio_writer_put_raw(w, key, p, total);
}

static af_status sync_close(FILE **f, const char *path)
{
    int bad = fflush(*f) != 0 || fsync(fileno(*f)) != 0;
    int e = errno;
    bad |= fclose(*f) != 0;
    *f = NULL;
    if (bad) return af_errorf(AF_ERR_IO, "%s: flush/fsync/close failed: %s", path, strerror(e ? e : errno));
    return AF_OK;
}

af_status af_recordio_writer_commit(af_recordio_writer *w)
{
    af_status st = AF_OK;
    for (int i = 0; i < 2 && st == AF_OK; i++) st = sync_close(&w->f[i], w->tmp[i]);
    for (int i = 0; i < 2 && st == AF_OK; i++)
        if (rename(w->tmp[i], w->path[i]) != 0)
            st = af_errorf(AF_ERR_IO, "rename %s -> %s failed: %s", w->tmp[i], w->path[i], strerror(errno));
    if (st == AF_OK) {
        /* The renames are durable only once the directory is synced. */
        char *dir = str_cat(w->path[0], "");
        if (!dir) {
            st = AF_ERR_NOMEM;
        } else {
            char *slash = strrchr(dir, '/');
            if (slash == dir) slash[1] = 0;
            else if (slash) *slash = 0;
            else strcpy(dir, ".");
            int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0 || fsync(fd) != 0)
                st = af_errorf(AF_ERR_IO, "%s: directory fsync failed: %s", dir, strerror(errno));
            if (fd >= 0) close(fd);
            free(dir);
        }
    }
    if (st != AF_OK)
        for (int i = 0; i < 2; i++) remove(w->tmp[i]);
    writer_free(w);
    return st;
}

void af_recordio_writer_abort(af_recordio_writer *w)
{
    if (!w) return;
    for (int i = 0; i < 2; i++) {
        if (w->f[i]) fclose(w->f[i]);
        w->f[i] = NULL;
        remove(w->tmp[i]);
    }
    writer_free(w);
}
