/* data_datasets: the formats other than RecordIO, and what is common.
 *  - Fashion-MNIST (the installed Debian files) against an independent
 *    gzip+numpy reader, bit for bit after normalisation; broken IDX files;
 *  - image folders: sorted-name labels, empty identities, ignored files,
 *    pixels equal to decoding the file, a corrupt file named in the error;
 *  - synthetic identities: deterministic, identities held out by id_offset
 *    and images by img_offset are exactly the images a larger spec has, and
 *    images of one identity resemble each other more than other identities
 *    (nearest-centroid accuracy far above chance);
 *  - spec dispatch, and concurrent reads equal serial ones. */
#include "test_data.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static void check_fmnist(const char *dir)
{
    struct stat sb;
    if (stat(FMNIST_DIR "/train-images-idx3-ubyte.gz", &sb) != 0) {
        CHECK(0, "%s missing: install Debian's dataset-fashion-mnist (scripts/install-deps.sh does)", FMNIST_DIR);
        return;
    }
    for (int split = 0; split < 2; split++) {
        const char *spec = split ? "fmnist-test:" FMNIST_DIR : "fmnist:" FMNIST_DIR;
        int64_t want_n = split ? 10000 : 60000;
        af_dataset *ds = NULL;
        if (!CHECK_OK(af_dataset_open(&ds, spec, NULL))) continue;
        int c, h, w;
        af_dataset_shape(ds, &c, &h, &w);
        CHECK(af_dataset_size(ds) == want_n && af_dataset_num_classes(ds) == 10 && c == 1 && h == 28 && w == 28,
              "%s: %" PRId64 " images, %" PRId64 " classes, %dx%dx%d", spec, af_dataset_size(ds),
              af_dataset_num_classes(ds), c, h, w);
        const int count = 64;
        int64_t step = (want_n - 1) / (count - 1);
        char f32[4200], lab[4200];
        snprintf(f32, sizeof f32, "%s/fm.f32", dir);
        snprintf(lab, sizeof lab, "%s/fm.lab", dir);
        int rc = t_run("%s %s/ref_fmnist.py %s %s 0 %" PRId64 " %d %s %s", t_python, t_srcdir, FMNIST_DIR,
                       split ? "test" : "train", step, count, f32, lab);
        CHECK(rc == 0, "ref_fmnist.py failed (%d)", rc);
        size_t fl = 0, ll = 0;
        float *ref = (float *)t_read_file(f32, &fl);
        int64_t *rl = (int64_t *)t_read_file(lab, &ll);
        int same = 0;
        float img[28 * 28];
        if (ref && rl && fl == sizeof(float) * 28 * 28 * count && ll == sizeof(int64_t) * count)
            for (int i = 0; i < count; i++) {
                int64_t l;
                if (!CHECK_OK(af_dataset_get(ds, i * step, img, &l, 0))) continue;
                int eq = l == rl[i] && memcmp(img, ref + i * 28 * 28, sizeof img) == 0;
                CHECK(eq, "%s image %" PRId64 ": label %" PRId64 " vs %" PRId64 " or pixels differ", spec, i * step, l,
                      rl[i]);
                same += eq;
            }
        printf("  %s: %" PRId64 " images; %d of %d sampled images bit-identical to gzip+numpy+torchvision maths\n",
               spec, af_dataset_size(ds), same, count);
        free(ref);
        free(rl);
        af_dataset_close(ds);
    }
    /* Resized to 3 x 32 x 32 through the options: grey replicated. */
    af_dataset *ds = NULL;
    af_dataset_opts o = {.height = 32, .width = 32, .channels = 3};
    if (CHECK_OK(af_dataset_open(&ds, FMNIST_DIR, &o))) { /* a bare DIR: Fashion-MNIST, train split */
        int c, h, w;
        af_dataset_shape(ds, &c, &h, &w);
        float img[3 * 32 * 32];
        int64_t l;
        CHECK_OK(af_dataset_get(ds, 17, img, &l, 0));
        CHECK(c == 3 && h == 32 && w == 32 && !strcmp(af_dataset_format(ds), "fmnist"), "%s %dx%dx%d",
              af_dataset_format(ds), c, h, w);
        CHECK(memcmp(img, img + 1024, 4096) == 0 && memcmp(img, img + 2048, 4096) == 0, "channels differ");
        af_dataset_close(ds);
    }
    /* One of the IDX files named directly: its directory and split. */
    if (CHECK_OK(af_dataset_open(&ds, FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", NULL))) {
        CHECK(af_dataset_size(ds) == 10000, "IDX file path: %" PRId64 " images, expected the test split's 10000",
              af_dataset_size(ds));
        af_dataset_close(ds);
    }
    /* Broken copies of the (small) test split. */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/fm_bad", dir);
    t_run("mkdir -p %s && cp %s/t10k-images-idx3-ubyte.gz %s/", sub, FMNIST_DIR, sub);
    t_run("head -c 3000 %s/t10k-labels-idx1-ubyte.gz > %s/t10k-labels-idx1-ubyte.gz", FMNIST_DIR, sub);
    char spec[4300];
    snprintf(spec, sizeof spec, "fmnist-test:%s", sub);
    CHECK_ERR(af_dataset_open(&ds, spec, NULL), AF_ERR_FORMAT, "t10k-labels-idx1-ubyte.gz", "gzip");
    t_run("rm %s/t10k-labels-idx1-ubyte.gz && printf '\\000\\000\\010\\001\\000\\000\\000\\003abc' > "
          "%s/t10k-labels-idx1-ubyte", sub, sub);
    CHECK_ERR(af_dataset_open(&ds, spec, NULL), AF_ERR_FORMAT, "t10k-labels-idx1-ubyte", "3 labels", "10000");
    snprintf(spec, sizeof spec, "fmnist:%s", sub);
    CHECK_ERR(af_dataset_open(&ds, spec, NULL), AF_ERR_IO, "train-images-idx3-ubyte");
}

static void check_folder(const char *dir)
{
    const char *ids[3] = {"zed", "Alice", "bob"}; /* sorted bytewise: Alice, bob, zed */
    const int counts[3] = {2, 3, 0};
    char p[4200];
    uint8_t *files[8];
    size_t lens[8];
    int nf = 0;
    for (int c = 0; c < 3; c++) {
        snprintf(p, sizeof p, "%s/faces/%s", dir, ids[c]);
        t_run("mkdir -p %s", p);
        for (int k = 0; k < counts[c]; k++) {
            snprintf(p, sizeof p, "%s/faces/%s/%c.jpeg", dir, ids[c], 'q' - k);
            files[nf] = t_make_jpeg(50, 40, 3, (uint32_t)(c * 5 + k), 90, &lens[nf]);
            t_write_file(p, files[nf], lens[nf]);
            nf++;
        }
    }
    snprintf(p, sizeof p, "%s/faces/.hidden", dir);
    t_run("mkdir -p %s && touch %s/faces/Alice/.x.jpg %s/faces/bob/readme.md %s/faces/loose.jpg", p, dir, dir, dir);
    snprintf(p, sizeof p, "%s/faces", dir);
    af_dataset *ds = NULL;
    if (!CHECK_OK(af_dataset_open(&ds, p, NULL))) return;
    int c, h, w;
    af_dataset_shape(ds, &c, &h, &w);
    printf("  %s\n", af_dataset_describe(ds));
    CHECK(af_dataset_size(ds) == 5 && af_dataset_num_classes(ds) == 3 && c == 3 && h == 50 && w == 40,
          "folder: %" PRId64 " images %" PRId64 " classes %dx%dx%d, expected 5, 3, 3x50x40", af_dataset_size(ds),
          af_dataset_num_classes(ds), c, h, w);
    /* Alice (created second: files[2..4], names q, p, o -> sorted o, p, q), then zed (files[0..1]). */
    const int want_file[5] = {4, 3, 2, 1, 0}, want_label[5] = {0, 0, 0, 2, 2};
    af_dataset_scratch *ws = NULL;
    af_dataset_scratch_init(&ws);
    uint8_t a[50 * 40 * 3], b[50 * 40 * 3];
    int good = 0;
    for (int i = 0; i < 5 && i < af_dataset_size(ds); i++) {
        int64_t l;
        if (!CHECK_OK(af_dataset_get_u8(ds, i, a, &l, ws))) continue;
        CHECK_OK(af_image_decode(files[want_file[i]], lens[want_file[i]], 50, 40, b, "ref"));
        int eq = l == want_label[i] && memcmp(a, b, sizeof a) == 0;
        CHECK(eq, "folder image %d: label %" PRId64 " (expected %d) or pixels differ", i, l, want_label[i]);
        good += eq;
    }
    printf("  folder: %d of 5 images with the sorted-name label and the file's pixels\n", good);
    char loc[512];
    af_dataset_locate(ds, 0, loc, sizeof loc);
    CHECK(strstr(loc, "faces/Alice/o.jpeg") != NULL, "locate: %s", loc);
    af_dataset_scratch_free(ws);
    af_dataset_close(ds);
    /* A broken file is named. */
    snprintf(p, sizeof p, "%s/faces/zed/p.jpeg", dir);
    t_write_file(p, files[0], lens[0] / 3);
    snprintf(p, sizeof p, "folder:%s/faces", dir);
    if (CHECK_OK(af_dataset_open(&ds, p, NULL))) {
        float img[3 * 50 * 40];
        int64_t l;
        CHECK_ERR(af_dataset_get(ds, 3, img, &l, 0), AF_ERR_FORMAT, "faces/zed/p.jpeg", "JPEG");
        af_dataset_close(ds);
    }
    snprintf(p, sizeof p, "%s/faces/zed", dir);
    CHECK_ERR(af_dataset_open(&ds, p, NULL), AF_ERR_FORMAT, "no sub-folders");
    for (int i = 0; i < nf; i++) free(files[i]);
}

static int64_t get_u8_hash(af_dataset *ds, int64_t i, uint8_t *buf, size_t n)
{
    int64_t l = -1;
    af_dataset_scratch *ws = NULL;
    af_dataset_scratch_init(&ws);
    if (af_dataset_get_u8(ds, i, buf, &l, ws) != AF_OK) memset(buf, 0, n);
    af_dataset_scratch_free(ws);
    return l;
}

static void check_synthetic(void)
{
    af_dataset *a = NULL, *b = NULL, *held = NULL, *more = NULL;
    const int S = 48, PERID = 20, IDS = 30;
    char spec[256];
    snprintf(spec, sizeof spec, "synthetic:ids=%d,per_id=%d,size=%d,seed=3", IDS, PERID, S);
    if (!CHECK_OK(af_dataset_open(&a, spec, NULL)) || !CHECK_OK(af_dataset_open(&b, spec, NULL))) return;
    size_t n = (size_t)S * S * 3;
    uint8_t *x = malloc(n), *y = malloc(n);
    int det = 1;
    for (int i = 0; i < 5; i++) {
        int64_t la = get_u8_hash(a, i * 37, x, n), lb = get_u8_hash(b, i * 37, y, n);
        det &= la == lb && la == (i * 37) / PERID && memcmp(x, y, n) == 0;
    }
    CHECK(det, "synthetic images are not deterministic or labels are not index / per_id");
    /* Held-out identities and images are the larger spec's. */
    snprintf(spec, sizeof spec, "synthetic:ids=5,per_id=%d,size=%d,seed=3,id_offset=25", PERID, S);
    CHECK_OK(af_dataset_open(&held, spec, NULL));
    snprintf(spec, sizeof spec, "synthetic:ids=%d,per_id=5,size=%d,seed=3,img_offset=20", IDS, S);
    CHECK_OK(af_dataset_open(&more, spec, NULL));
    if (held && more) {
        int64_t l1 = get_u8_hash(held, 2 * PERID + 7, x, n); /* identity 27, image 7 */
        get_u8_hash(a, 27 * PERID + 7, y, n);
        CHECK(l1 == 2 && memcmp(x, y, n) == 0, "id_offset: label %" PRId64 " or pixels differ from the full spec", l1);
        af_dataset *big = NULL;
        snprintf(spec, sizeof spec, "synthetic:ids=%d,per_id=25,size=%d,seed=3", IDS, S);
        CHECK_OK(af_dataset_open(&big, spec, NULL));
        get_u8_hash(more, 4 * 5 + 3, x, n); /* identity 4, image 20 + 3 */
        get_u8_hash(big, 4 * 25 + 23, y, n);
        CHECK(big && memcmp(x, y, n) == 0, "img_offset: pixels differ from the larger spec");
        get_u8_hash(a, 4 * PERID + 3, y, n);
        CHECK(memcmp(x, y, n) != 0, "img_offset repeats training images");
        af_dataset_close(big);
    }
    /* Identity is in the pixels: nearest centroid on the central half of
     * each image (the face; the background is a nuisance), standardised per
     * image (lighting gain and offset are nuisances too); centroids from
     * images 0..9, tested on images 10..19. */
    float *cent = calloc((size_t)IDS * n, sizeof(float)), *img = malloc(sizeof(float) * n);
    const int lo = S / 4, hi = S - S / 4;
    int correct = 0, tested = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int id = 0; id < IDS; id++)
            for (int j = pass * 10; j < pass * 10 + 10; j++) {
                int64_t l;
                CHECK_OK(af_dataset_get(a, id * PERID + j, img, &l, 0));
                double m = 0, v = 0;
                int cnt = 0;
                for (int ch = 0; ch < 3; ch++)
                    for (int y = lo; y < hi; y++)
                        for (int x = lo; x < hi; x++) {
                            double q = img[(ch * S + y) * S + x];
                            m += q;
                            v += q * q;
                            cnt++;
                        }
                m /= cnt;
                v = sqrt(fmax(v / cnt - m * m, 0)) + 1e-6;
                for (size_t k = 0; k < n; k++) img[k] = (float)((img[k] - m) / v);
                if (pass == 0) {
                    for (size_t k = 0; k < n; k++) cent[id * n + k] += img[k] / 10;
                    continue;
                }
                double best = INFINITY;
                int arg = -1;
                for (int c = 0; c < IDS; c++) {
                    double d = 0;
                    for (int ch = 0; ch < 3; ch++)
                        for (int y = lo; y < hi; y++)
                            for (int x = lo; x < hi; x++) {
                                size_t k = (size_t)(ch * S + y) * S + x;
                                double e = img[k] - cent[c * n + k];
                                d += e * e;
                            }
                    if (d < best) best = d, arg = c;
                }
                correct += arg == id;
                tested++;
            }
    double acc = (double)correct / tested;
    printf("  synthetic: deterministic; id_offset/img_offset hold-outs match the larger spec; nearest-centroid "
           "accuracy %.3f over %d identities (chance %.3f)\n", acc, IDS, 1.0 / IDS);
    CHECK(acc > 0.5, "identities are not recognisable: nearest-centroid accuracy %.3f, expected > 0.5", acc);
    free(cent);
    free(img);
    af_dataset_close(b);
    CHECK_ERR(af_dataset_open(&b, "synthetic:ids=3,colour=2", NULL), AF_ERR_ARG, "unknown key 'colour'");
    CHECK_ERR(af_dataset_open(&b, "synthetic:ids=-3", NULL), AF_ERR_ARG, "ids=-3");
    CHECK_ERR(af_dataset_open(&b, "synthetic:channels=2", NULL), AF_ERR_ARG, "channels 1 or 3");
    af_dataset_close(a);
    af_dataset_close(held);
    af_dataset_close(more);
    free(x);
    free(y);
}

typedef struct {
    af_dataset *ds;
    int t;
    float *out;
    int64_t n;
    int bad;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    af_dataset_scratch *ws = NULL;
    af_dataset_scratch_init(&ws);
    int c, h, w;
    af_dataset_shape(r->ds, &c, &h, &w);
    size_t per = (size_t)c * h * w;
    for (int64_t i = r->t; i < r->n; i += 4) {
        int64_t l;
        r->bad += af_dataset_get_ws(r->ds, i, r->out + (size_t)i * per, &l, (int)(i & 1), ws) != AF_OK;
    }
    af_dataset_scratch_free(ws);
    return NULL;
}

static void check_dispatch_and_threads(const char *dir)
{
    af_dataset *ds = NULL, *src = NULL;
    CHECK_ERR(af_dataset_open(&ds, "/nonexistent/thing", NULL), AF_ERR_ARG, "/nonexistent/thing",
              "cannot tell its format");
    CHECK_ERR(af_dataset_open(&ds, "synthetic:", &(af_dataset_opts){.channels = 2}), AF_ERR_ARG, "channels 2");
    char prefix[4200], spec[4300];
    snprintf(prefix, sizeof prefix, "%s/th", dir);
    if (!CHECK_OK(af_dataset_open(&src, "synthetic:ids=10,per_id=6,size=40", NULL))) return;
    CHECK_OK(af_recordio_pack(src, prefix, NULL, NULL, NULL));
    af_dataset_close(src);
    for (int form = 0; form < 3; form++) { /* PREFIX, PREFIX.rec, recordio:PREFIX */
        snprintf(spec, sizeof spec, form == 0 ? "%s" : form == 1 ? "%s.rec" : "recordio:%s", prefix);
        if (CHECK_OK(af_dataset_open(&ds, spec, NULL)))
            CHECK(!strcmp(af_dataset_format(ds), "recordio") && af_dataset_size(ds) == 60, "%s: %s", spec,
                  af_dataset_describe(ds));
        af_dataset_close(ds);
        ds = NULL;
    }
    if (!CHECK_OK(af_dataset_open(&ds, prefix, NULL))) return;
    int64_t n = af_dataset_size(ds);
    size_t per = 3 * 40 * 40;
    float *serial = malloc(sizeof(float) * n * per), *par = malloc(sizeof(float) * n * per);
    af_dataset_scratch *ws = NULL;
    af_dataset_scratch_init(&ws);
    for (int64_t i = 0; i < n; i++) {
        int64_t l;
        CHECK_OK(af_dataset_get_ws(ds, i, serial + i * per, &l, (int)(i & 1), ws));
    }
    af_dataset_scratch_free(ws);
    pthread_t th[4];
    reader r[4];
    for (int t = 0; t < 4; t++) {
        r[t] = (reader){.ds = ds, .t = t, .out = par, .n = n};
        pthread_create(&th[t], NULL, read_all, &r[t]);
    }
    int bad = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        bad += r[t].bad;
    }
    int same = memcmp(serial, par, sizeof(float) * n * per) == 0;
    printf("  4 threads reading one RecordIO dataset: %s to serial reads, %d errors\n", same ? "identical" : "DIFFERENT",
           bad);
    CHECK(same && !bad, "concurrent reads differ from serial ones");
    free(serial);
    free(par);
    af_dataset_close(ds);
}

void t_datasets(void)
{
    char *dir = t_mkdtemp();
    check_fmnist(dir);
    check_folder(dir);
    check_synthetic();
    check_dispatch_and_threads(dir);
    t_rmtree(dir);
    free(dir);
}
