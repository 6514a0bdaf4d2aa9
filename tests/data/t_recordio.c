/* data_recordio: the RecordIO container both ways.
 *  - frames: our writer's output read back by our frame parser, payloads
 *    holding the magic word at aligned and unaligned offsets (split records);
 *  - our packer: a folder packed and read back identically, and checked by
 *    an independent Python reader (check_pack.py);
 *  - an independent Python writer (write_rec.py): with and without the
 *    insightface header record, with a split record and a multi-label one;
 *  - every corruption the issue lists, each failing with file, key, offset;
 *  - the loader skipping corrupt records (counted) or failing the exact
 *    batch that holds one. */
#include "test_data.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC_LE 0x0a, 0x23, 0xd7, 0xce

/* ---- helpers ------------------------------------------------------------------- */

typedef struct {
    int64_t key;
    uint64_t off;
} kv;

/* The .idx of PREFIX as (key, offset) pairs in file order. */
static size_t read_idx(const char *prefix, kv *out, size_t cap)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.idx", prefix);
    size_t len;
    char *text = (char *)t_read_file(p, &len);
    af_recordio_idx_entry *e = NULL;
    size_t n = 0;
    if (!text || af_recordio_idx_parse(text, len, &e, &n, p) != AF_OK) n = 0;
    for (size_t i = 0; i < n && i < cap; i++) out[i] = (kv){e[i].key, e[i].offset};
    free(e);
    free(text);
    return n;
}

static uint64_t offset_of(const kv *t, size_t n, int64_t key)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].key == key) return t[i].off;
    return UINT64_MAX;
}

/* Copies PREFIX.{rec,idx} to DST.{rec,idx}, optionally truncating the .rec. */
static void copy_rec(const char *src, const char *dst, size_t truncate_to)
{
    char a[4200], b[4200];
    for (int k = 0; k < 2; k++) {
        const char *ext = k ? ".idx" : ".rec";
        snprintf(a, sizeof a, "%s%s", src, ext);
        snprintf(b, sizeof b, "%s%s", dst, ext);
        size_t len;
        uint8_t *buf = t_read_file(a, &len);
        if (!k && truncate_to && truncate_to < len) len = truncate_to;
        t_write_file(b, buf, len);
        free(buf);
    }
}

static void patch(const char *prefix, uint64_t off, const void *bytes, size_t n)
{
    char p[4200];
    snprintf(p, sizeof p, "%s.rec", prefix);
    FILE *f = fopen(p, "r+b");
    fseek(f, (long)off, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

/* A small insightface-layout dataset: n images with the given labels,
 * classes identity records. Returns the JPEGs (caller frees). */
static void write_dataset(const char *prefix, int n, const int *labels, int classes, uint8_t **jpg, size_t *jlen)
{
    af_recordio_writer *w = NULL;
    CHECK_OK(af_recordio_writer_open(&w, prefix));
    float hdr[2] = {(float)(n + 1), (float)(n + 1 + classes)};
    CHECK_OK(af_recordio_writer_put(w, 0, 2, 0, hdr, 0, 0, NULL, 0));
    for (int i = 0; i < n; i++) {
        jpg[i] = t_make_jpeg(40 + i, 36, 3, 100 + i, 90, &jlen[i]);
        CHECK_OK(af_recordio_writer_put(w, i + 1, 0, (float)labels[i], NULL, i + 1, 0, jpg[i], jlen[i]));
    }
    for (int c = 0; c < classes; c++) {
        float r[2] = {1, 1};
        CHECK_OK(af_recordio_writer_put(w, n + 1 + c, 2, 0, r, n + 1 + c, 0, NULL, 0));
    }
    CHECK_OK(af_recordio_writer_commit(w));
}

/* ---- 1. frames ------------------------------------------------------------------- */

static void check_frames(const char *dir)
{
    static const uint8_t m[4] = {MAGIC_LE};
    uint8_t payloads[8][64];
    size_t lens[8] = {0, 1, 7, 24, 32, 33, 40, 64};
    int want_parts[8];
    for (int p = 0; p < 8; p++) {
        for (size_t i = 0; i < lens[p]; i++) payloads[p][i] = (uint8_t)(i * 31 + p);
        want_parts[p] = 1;
    }
    /* magic at 0, at 8 and 12 (adjacent), at the very end, and unaligned at 5 */
    memcpy(payloads[4], m, 4);
    memcpy(payloads[4] + 8, m, 4);
    memcpy(payloads[4] + 12, m, 4);
    want_parts[4] = 4;
    memcpy(payloads[5] + 28, m, 4);
    want_parts[5] = 2;
    memcpy(payloads[6] + 5, m, 4); /* unaligned: must not split */
    memcpy(payloads[7] + 60, m, 4);
    want_parts[7] = 2;
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s/frames", dir);
    af_recordio_writer *w = NULL;
    CHECK_OK(af_recordio_writer_open(&w, prefix));
    for (int p = 0; p < 8; p++) CHECK_OK(af_recordio_writer_put_raw(w, 10 + p, payloads[p], lens[p]));
    CHECK_OK(af_recordio_writer_commit(w));
    kv t[16];
    size_t n = read_idx(prefix, t, 16);
    CHECK(n == 8, "idx has %zu entries, expected 8", n);
    char rp[4200];
    snprintf(rp, sizeof rp, "%s.rec", prefix);
    size_t flen;
    uint8_t *file = t_read_file(rp, &flen);
    CHECK(flen % 4 == 0, "file length %zu not a multiple of 4", flen);
    int ok = 0;
    for (size_t i = 0; i < n && i < 8; i++) {
        int p = (int)(t[i].key - 10);
        af_recordio_frame f;
        if (!CHECK_OK(af_recordio_frame_scan(file + t[i].off, flen - t[i].off, &f, "frames"))) continue;
        uint8_t back[80];
        af_recordio_frame_copy(file + t[i].off, &f, back);
        int same = f.need == 0 && f.payload_len == lens[p] && memcmp(back, payloads[p], lens[p]) == 0;
        CHECK(same, "payload %d (%zu bytes) read back as %zu bytes, need %zu", p, lens[p], f.payload_len, f.need);
        CHECK(f.parts == want_parts[p], "payload %d: %d frames, expected %d", p, f.parts, want_parts[p]);
        /* A short buffer asks for more instead of reading past it. */
        af_recordio_frame g;
        if (CHECK_OK(af_recordio_frame_scan(file + t[i].off, f.consumed - 1, &g, "short")))
            CHECK(g.need > f.consumed - 1, "short buffer: need %zu", g.need);
        ok += same;
    }
    printf("  frames: %d of 8 payloads (0..64 bytes, magic words aligned/unaligned) read back exactly\n", ok);
    free(file);
}

/* ---- 2. our packer ----------------------------------------------------------------- */

static void make_folder(const char *root, int *n_images)
{
    /* Unsorted creation order, an empty identity, a PNG and mixed sizes. */
    const char *ids[4] = {"id_b", "id_a", "id_c", "id_d_empty"};
    const int counts[4] = {3, 2, 4, 0};
    char p[4200];
    int total = 0;
    for (int c = 0; c < 4; c++) {
        snprintf(p, sizeof p, "%s/%s", root, ids[c]);
        t_run("mkdir -p %s", p);
        for (int k = 0; k < counts[c]; k++) {
            size_t len;
            uint8_t *img;
            if (c == 1 && k == 1 && af_image_have_png()) {
                uint8_t pix[30 * 30 * 3];
                t_make_picture(pix, 30, 30, 3, 77);
                af_image_encode_png(pix, 30, 30, 3, &img, &len);
                snprintf(p, sizeof p, "%s/%s/img%d.png", root, ids[c], k);
            } else {
                img = t_make_jpeg(112 - 8 * k, 112, 3, (uint32_t)(c * 10 + k), 92, &len);
                snprintf(p, sizeof p, "%s/%s/img%d.JPG", root, ids[c], k);
            }
            t_write_file(p, img, len);
            free(img);
            total++;
        }
    }
    snprintf(p, sizeof p, "%s/id_a/notes.txt", root);
    t_write_file(p, "not an image", 12);
    *n_images = total;
}

static void check_pack(const char *dir)
{
    char folder[4200], prefix[4200];
    snprintf(folder, sizeof folder, "%s/folder", dir);
    snprintf(prefix, sizeof prefix, "%s/packed", dir);
    int total = 0;
    make_folder(folder, &total);
    af_dataset *src = NULL, *rec = NULL;
    af_dataset_opts o = {.height = 112, .width = 112, .channels = 3};
    if (!CHECK_OK(af_dataset_open(&src, folder, &o))) return;
    int64_t n = 0, C = 0;
    CHECK_OK(af_recordio_pack(src, prefix, NULL, &n, &C));
    CHECK(n == total && C == 4, "packed %" PRId64 " images %" PRId64 " classes, expected %d and 4", n, C, total);
    char spec[4300];
    snprintf(spec, sizeof spec, "%s.rec", prefix);
    if (CHECK_OK(af_dataset_open(&rec, spec, &o))) {
        CHECK(af_dataset_size(rec) == n && af_dataset_num_classes(rec) == 4, "reopened: %" PRId64 " images, %" PRId64
              " classes", af_dataset_size(rec), af_dataset_num_classes(rec));
        af_dataset_scratch *w1 = NULL, *w2 = NULL;
        af_dataset_scratch_init(&w1);
        af_dataset_scratch_init(&w2);
        uint8_t a[112 * 112 * 3], b[112 * 112 * 3];
        int same = 0;
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *x, *y;
            size_t lx, ly;
            int64_t la, lb;
            if (!CHECK_OK(af_dataset_get_encoded(src, i, &x, &lx, &la, w1))) continue;
            if (!CHECK_OK(af_dataset_get_encoded(rec, i, &y, &ly, &lb, w2))) continue;
            int eq = lx == ly && memcmp(x, y, lx) == 0 && la == lb;
            CHECK_OK(af_dataset_get_u8(src, i, a, &la, w1));
            CHECK_OK(af_dataset_get_u8(rec, i, b, &lb, w2));
            eq &= memcmp(a, b, sizeof a) == 0;
            CHECK(eq, "image %" PRId64 ": packed copy differs (labels %" PRId64 " / %" PRId64 ")", i, la, lb);
            same += eq;
        }
        printf("  pack: %d of %" PRId64 " images read back with identical bytes, labels and pixels\n", same, n);
        af_dataset_scratch_free(w1);
        af_dataset_scratch_free(w2);
    }
    int rc = t_run("%s %s/check_pack.py %s %s", t_python, t_srcdir, prefix, folder);
    CHECK(rc == 0, "the independent Python reader rejected our pack (exit %d)", rc);
    af_dataset_close(rec);
    af_dataset_close(src);
}

/* ---- 3. an independent writer ---------------------------------------------------------- */

static void check_python_writer(const char *dir)
{
    const int labels[7] = {0, 0, 1, 1, 1, 2, 2};
    char manifest[4200], path[4200];
    snprintf(manifest, sizeof manifest, "%s/manifest.txt", dir);
    FILE *mf = fopen(manifest, "w");
    uint8_t *ref[7];
    for (int i = 0; i < 7; i++) {
        size_t len;
        uint8_t *jpg = t_make_jpeg(112, 112, 3, 500 + i, 90, &len);
        snprintf(path, sizeof path, "%s/py%d.jpg", dir, i);
        t_write_file(path, jpg, len);
        fprintf(mf, "%d\t%s\n", labels[i], path);
        ref[i] = malloc(112 * 112 * 3);
        CHECK_OK(af_image_decode(jpg, len, 112, 112, ref[i], "reference"));
        free(jpg);
    }
    fclose(mf);
    for (int mode = 0; mode < 2; mode++) {
        const char *name = mode ? "plain" : "header";
        char sub[4200], prefix[4300];
        snprintf(sub, sizeof sub, "%s/py_%s", dir, name);
        t_run("mkdir -p %s", sub);
        snprintf(prefix, sizeof prefix, "%s/train", sub);
        int rc = t_run("%s %s/write_rec.py %s %s %s", t_python, t_srcdir, manifest, prefix, name);
        CHECK(rc == 0, "write_rec.py %s failed (%d)", name, rc);
        if (rc) continue;
        af_dataset *ds = NULL;
        if (!CHECK_OK(af_dataset_open(&ds, sub, NULL))) continue; /* DIR with train.rec + train.idx */
        int c, h, w;
        af_dataset_shape(ds, &c, &h, &w);
        printf("  python %s: %s\n", name, af_dataset_describe(ds));
        CHECK(af_dataset_size(ds) == 7 && af_dataset_num_classes(ds) == 3 && c == 3 && h == 112 && w == 112,
              "%s: %" PRId64 " images, %" PRId64 " classes, %dx%dx%d; expected 7, 3, 3x112x112", name,
              af_dataset_size(ds), af_dataset_num_classes(ds), c, h, w);
        af_dataset_scratch *ws = NULL;
        af_dataset_scratch_init(&ws);
        uint8_t pix[112 * 112 * 3];
        int good = 0;
        for (int i = 0; i < 7 && i < af_dataset_size(ds); i++) {
            int64_t lab = -1;
            if (!CHECK_OK(af_dataset_get_u8(ds, i, pix, &lab, ws))) continue;
            int eq = lab == labels[i] && memcmp(pix, ref[i], sizeof pix) == 0;
            CHECK(eq, "%s image %d: label %" PRId64 " (expected %d) or pixels differ", name, i, lab, labels[i]);
            good += eq;
        }
        printf("  python %s: %d of 7 images with the right label and pixels\n", name, good);
        char loc[512];
        af_dataset_locate(ds, 2, loc, sizeof loc);
        CHECK(strstr(loc, mode ? "key 6 " : "key 3 ") != NULL, "%s: image 2 located as '%s'", name, loc);
        if (!mode) { /* key 1 must really be split */
            kv t[32];
            size_t n = read_idx(prefix, t, 32);
            char rp[4400];
            snprintf(rp, sizeof rp, "%s.rec", prefix);
            size_t flen;
            uint8_t *file = t_read_file(rp, &flen);
            uint64_t o1 = offset_of(t, n, 1);
            af_recordio_frame f = {0};
            if (o1 < flen) af_recordio_frame_scan(file + o1, flen - o1, &f, "key 1");
            printf("  python header: key 1 stored in %d frames (continuation flag)\n", f.parts);
            CHECK(f.parts >= 2, "key 1 was not split by the Python writer (parts %d)", f.parts);
            free(file);
        }
        af_dataset_scratch_free(ws);
        af_dataset_close(ds);
    }
    /* property beats a label scan */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/py_plain/property", dir);
    t_write_file(sub, "5,112,112\n", 10);
    snprintf(sub, sizeof sub, "%s/py_plain", dir);
    af_dataset *ds = NULL;
    if (CHECK_OK(af_dataset_open(&ds, sub, NULL)))
        CHECK(af_dataset_num_classes(ds) == 5, "property file ignored: %" PRId64 " classes", af_dataset_num_classes(ds));
    af_dataset_close(ds);
    for (int i = 0; i < 7; i++) free(ref[i]);
}

/* ---- 4. corruption -------------------------------------------------------------------- */

static af_status get1(const char *prefix, int64_t index)
{
    af_dataset *ds = NULL;
    af_status st = af_dataset_open(&ds, prefix, NULL);
    if (st != AF_OK) return st;
    float *img = malloc(sizeof(float) * 3 * 112 * 112);
    int64_t label;
    st = af_dataset_get(ds, index, img, &label, 0);
    free(img);
    af_dataset_close(ds);
    return st;
}

static void check_corruption(const char *dir)
{
    enum { N = 6 };
    const int labels[N] = {0, 1, 2, 0, 1, 2};
    uint8_t *jpg[N];
    size_t jlen[N];
    char good[4200], bad[4200], rec[4300], key[64], off[64];
    snprintf(good, sizeof good, "%s/good", dir);
    snprintf(bad, sizeof bad, "%s/bad", dir);
    snprintf(rec, sizeof rec, "%s.rec", bad);
    write_dataset(good, N, labels, 3, jpg, jlen);
    kv t[32];
    size_t nt = read_idx(good, t, 32);
    CHECK(nt == 1 + N + 3, "idx has %zu entries", nt);
    CHECK_OK(get1(good, N - 1));
    uint64_t o[N + 2];
    for (int k = 0; k <= N + 1; k++) o[k] = offset_of(t, nt, k);
#define KEY_OFF(k) (snprintf(key, sizeof key, "key %d ", (k)), snprintf(off, sizeof off, "offset %" PRIu64, o[k]))

    printf(" truncated file:\n");
    copy_rec(good, bad, o[N] + 20);
    KEY_OFF(N);
    CHECK_ERR(get1(bad, N - 1), AF_ERR_FORMAT, rec, key, off, "past the end");
    CHECK_OK(get1(bad, 0));

    printf(" bad magic:\n");
    copy_rec(good, bad, 0);
    patch(bad, o[3], "\xef\xbe\xad\xde", 4);
    KEY_OFF(3);
    CHECK_ERR(get1(bad, 2), AF_ERR_FORMAT, rec, key, off, "bad magic 0xdeadbeef");

    printf(" length past the end:\n");
    copy_rec(good, bad, 0);
    patch(bad, o[4] + 4, "\xff\xff\xff\x0f", 4);
    KEY_OFF(4);
    CHECK_ERR(get1(bad, 3), AF_ERR_FORMAT, rec, key, off, "past the end");

    printf(" undecodable JPEG:\n");
    copy_rec(good, bad, 0);
    uint8_t zeros[200];
    memset(zeros, 0x55, sizeof zeros);
    patch(bad, o[5] + 8 + 24 + 20, zeros, sizeof zeros);
    KEY_OFF(5);
    CHECK_ERR(get1(bad, 4), AF_ERR_FORMAT, rec, key, off, "JPEG");

    printf(" label outside [0, classes):\n");
    copy_rec(good, bad, 0);
    float seven = 7.0f;
    patch(bad, o[2] + 8 + 4, &seven, 4);
    KEY_OFF(2);
    CHECK_ERR(get1(bad, 1), AF_ERR_CORRUPT, rec, key, off, "label 7 outside [0, 3)");
    float half = 1.5f;
    patch(bad, o[2] + 8 + 4, &half, 4);
    CHECK_ERR(get1(bad, 1), AF_ERR_CORRUPT, rec, key, "not a non-negative integer");

    printf(" idx pointing nowhere:\n");
    copy_rec(good, bad, 0);
    {
        char idx[4300];
        snprintf(idx, sizeof idx, "%s.idx", bad);
        FILE *f = fopen(idx, "w");
        for (size_t i = 0; i < nt; i++)
            fprintf(f, "%" PRId64 "\t%" PRIu64 "\n", t[i].key,
                    t[i].key == 6 ? 99999999 : t[i].key == 5 ? o[5] + 12 : t[i].off);
        fclose(f);
    }
    CHECK_ERR(get1(bad, 5), AF_ERR_CORRUPT, rec, "key 6 ", "offset 99999999", "points past the end");
    snprintf(off, sizeof off, "offset %" PRIu64, o[5] + 12);
    CHECK_ERR(get1(bad, 4), AF_ERR_FORMAT, rec, "key 5 ", off, "bad magic");

    printf(" malformed idx line:\n");
    {
        char idx[4300];
        snprintf(idx, sizeof idx, "%s.idx", bad);
        const char *text = "0\t0\n1\t40\nthree\t80\n";
        t_write_file(idx, text, strlen(text));
        CHECK_ERR(get1(bad, 0), AF_ERR_FORMAT, idx, "line 3", "three");
    }

    printf(" records too short for their header, split wrongly, unreadable record 0:\n");
    {
        char p2[4200];
        snprintf(p2, sizeof p2, "%s/short", dir);
        af_recordio_writer *w = NULL;
        CHECK_OK(af_recordio_writer_open(&w, p2));
        CHECK_OK(af_recordio_writer_put(w, 0, 0, 0.0f, NULL, 0, 0, jpg[0], jlen[0])); /* key 0 is an image */
        CHECK_OK(af_recordio_writer_put_raw(w, 1, (const uint8_t *)"0123456789", 10));
        uint8_t liar[32] = {0xe8, 0x03}; /* flag 1000 with 8 bytes after the header */
        CHECK_OK(af_recordio_writer_put_raw(w, 2, liar, sizeof liar));
        CHECK_OK(af_recordio_writer_commit(w));
        af_dataset *ds = NULL;
        af_dataset_opts opt = {.num_classes = 3};
        if (CHECK_OK(af_dataset_open(&ds, p2, &opt))) {
            float *img = malloc(sizeof(float) * 3 * 112 * 112);
            int64_t lab;
            CHECK(af_dataset_size(ds) == 3, "no-header file: %" PRId64 " images, expected 3", af_dataset_size(ds));
            CHECK_OK(af_dataset_get(ds, 0, img, &lab, 0));
            CHECK_ERR(af_dataset_get(ds, 1, img, &lab, 0), AF_ERR_FORMAT, "key 1 ", "shorter than the 24-byte IRHeader");
            CHECK_ERR(af_dataset_get(ds, 2, img, &lab, 0), AF_ERR_FORMAT, "key 2 ", "announces 1000");
            free(img);
        }
        af_dataset_close(ds);
        /* cflag 1 followed by cflag 0 */
        uint8_t two[24] = {MAGIC_LE, 4, 0, 0, 0x20, 'a', 'b', 'c', 'd', MAGIC_LE, 4, 0, 0, 0, 'e', 'f', 'g', 'h'};
        af_recordio_frame f;
        CHECK_ERR(af_recordio_frame_scan(two, 24, &f, "split.rec key 9"), AF_ERR_FORMAT, "split.rec key 9",
                  "continuation flag 0");
        two[7] = 0x60; /* starts with cflag 3 */
        CHECK_ERR(af_recordio_frame_scan(two, 24, &f, "x"), AF_ERR_FORMAT, "starts with continuation flag 3");
        copy_rec(good, bad, 0);
        patch(bad, o[0], "XXXX", 4);
        CHECK_ERR(get1(bad, 0), AF_ERR_FORMAT, rec, "key 0 ", "header record", "bad magic");
        copy_rec(good, bad, 0);
        char rp[4300];
        snprintf(rp, sizeof rp, "%s.rec", bad);
        t_write_file(rp, "", 0);
        CHECK_ERR(get1(bad, 0), AF_ERR_CORRUPT, rec, "key 0 ");
    }
    for (int i = 0; i < N; i++) free(jpg[i]);
#undef KEY_OFF
}

/* ---- 5. the loader and corrupt records ------------------------------------------------- */

static void check_loader_corrupt(const char *dir)
{
    enum { N = 12 };
    int labels[N];
    for (int i = 0; i < N; i++) labels[i] = i % 3;
    uint8_t *jpg[N];
    size_t jlen[N];
    char good[4200], bad[4200];
    snprintf(good, sizeof good, "%s/lgood", dir);
    snprintf(bad, sizeof bad, "%s/lbad", dir);
    write_dataset(good, N, labels, 3, jpg, jlen);
    kv t[32];
    size_t nt = read_idx(good, t, 32);
    copy_rec(good, bad, 0);
    const int corrupt_keys[3] = {2, 6, 10}; /* dataset indices 1, 5, 9 */
    for (int k = 0; k < 3; k++) patch(bad, offset_of(t, nt, corrupt_keys[k]), "BAD!", 4);
    af_dataset *ds = NULL;
    af_dataset_opts o = {.height = 40, .width = 36, .channels = 3};
    if (!CHECK_OK(af_dataset_open(&ds, bad, &o))) return;
    const int b = 4;
    float *img = malloc(sizeof(float) * b * 3 * 40 * 36);
    int64_t lab[b], idx[b];
    af_loader_config cfg = {.batch = b, .world = 1, .rank = 0, .seed = 3, .skip_corrupt = 1, .threads = 2};
    af_loader *ld = NULL;
    if (CHECK_OK(af_loader_open(&ld, ds, &cfg))) {
        int seen_bad = 0;
        for (int s = 0; s < 3; s++) {
            if (!CHECK_OK(af_loader_next(ld, img, lab, idx))) break;
            for (int i = 0; i < b; i++) seen_bad += idx[i] == 1 || idx[i] == 5 || idx[i] == 9;
        }
        af_loader_stats st;
        af_loader_get_stats(ld, &st);
        printf("  skip_corrupt: %" PRId64 " skipped in one epoch of 12 (3 corrupt), last: %s\n", st.corrupt_skipped,
               st.last_corrupt);
        CHECK(st.corrupt_skipped == 3, "skipped %" PRId64 ", expected 3", st.corrupt_skipped);
        CHECK(seen_bad == 0, "%d corrupt indices were handed out", seen_bad);
        CHECK(strstr(st.last_corrupt, "bad magic") != NULL, "last corrupt message: %s", st.last_corrupt);
        af_loader_close(ld);
    }
    /* Without skipping: the batch that holds the first corrupt image fails,
     * the ones before it do not, whatever the threads got to first. */
    cfg.skip_corrupt = 0;
    af_epoch_perm perm;
    af_epoch_perm_init(&perm, cfg.seed, 0, N);
    int first_bad_step = -1;
    for (int p = 0; p < N && first_bad_step < 0; p++) {
        int64_t x = af_sampler_index(&perm, p);
        if (x == 1 || x == 5 || x == 9) first_bad_step = p / b;
    }
    if (CHECK_OK(af_loader_open(&ld, ds, &cfg))) {
        int failed_at = -1;
        for (int s = 0; s < 3 && failed_at < 0; s++)
            if (af_loader_next(ld, img, lab, idx) != AF_OK) failed_at = s;
        printf("  no skip: failed at step %d (first corrupt image is in step %d): %s\n", failed_at, first_bad_step,
               af_errmsg());
        CHECK(failed_at == first_bad_step, "failed at step %d, expected %d", failed_at, first_bad_step);
        CHECK(strstr(af_errmsg(), "bad magic") && strstr(af_errmsg(), "lbad.rec key "), "message: %s", af_errmsg());
        CHECK(af_loader_next(ld, img, lab, idx) != AF_OK, "a failed loader carried on");
        af_loader_close(ld);
    }
    free(img);
    af_dataset_close(ds);
    for (int i = 0; i < N; i++) free(jpg[i]);
}

void t_recordio(void)
{
    char *dir = t_mkdtemp();
    check_frames(dir);
    check_pack(dir);
    check_python_writer(dir);
    check_corruption(dir);
    check_loader_corrupt(dir);
    t_rmtree(dir);
    free(dir);
}
