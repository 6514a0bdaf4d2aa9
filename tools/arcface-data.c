/* arcface-data: look at, check and convert training datasets.
 *
 *   arcface-data info   SPEC             images, classes, format, shape
 *   arcface-data verify SPEC [-j N]      decode every image, list the corrupt ones
 *   arcface-data pack   SPEC OUT_PREFIX  write OUT_PREFIX.rec / .idx (insightface layout)
 *
 * SPEC is anything af_dataset_open takes (include/arcface/data.h): a
 * RecordIO directory or PREFIX.rec, an image folder, a Fashion-MNIST
 * directory (fmnist:DIR / fmnist-test:DIR), or synthetic:K=V,...
 * Exit status: 0 fine, 1 corrupt images or a failure, 2 usage. */
#include <arcface/data.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: arcface-data info   SPEC [--split train|test]\n"
            "       arcface-data verify SPEC [--split train|test] [-j THREADS] [--max-list N]\n"
            "       arcface-data pack   SPEC OUT_PREFIX [--split train|test] [--quality Q] [--no-png]\n"
            "SPEC: DIR (train.rec+train.idx | Fashion-MNIST IDX files | one sub-folder per identity),\n"
            "      PREFIX.rec, recordio:PATH, folder:DIR, fmnist:DIR, fmnist-test:DIR,\n"
            "      synthetic:ids=N,per_id=N,size=N,channels=1|3,seed=N,id_offset=N,img_offset=N\n");
}

static int fail(const char *what)
{
    fprintf(stderr, "arcface-data: %s: %s\n", what, af_errmsg());
    return 1;
}

/* ---- verify ------------------------------------------------------------------ */

typedef struct {
    const af_dataset *ds;
    int64_t lo, hi;
    char **errors; /* (hi - lo), NULL where fine */
    int64_t bad;
    af_status st; /* non-data failure (out of memory) */
} verify_job;

static void *verify_range(void *arg)
{
    verify_job *j = arg;
    af_dataset_scratch *ws = NULL;
    int c, h, w;
    af_dataset_shape(j->ds, &c, &h, &w);
    uint8_t *pix = malloc((size_t)c * h * w);
    if (af_dataset_scratch_init(&ws) != AF_OK || !pix) {
        j->st = AF_ERR_NOMEM;
        goto done;
    }
    for (int64_t i = j->lo; i < j->hi; i++) {
        int64_t label;
        af_status st = af_dataset_get_u8(j->ds, i, pix, &label, ws);
        if (st == AF_OK) continue;
        if (st == AF_ERR_NOMEM) {
            j->st = st;
            break;
        }
        j->errors[i - j->lo] = strdup(af_errmsg());
        j->bad++;
    }
done:
    free(pix);
    af_dataset_scratch_free(ws);
    return NULL;
}

static int cmd_verify(const af_dataset *ds, int threads, int64_t max_list)
{
    int64_t n = af_dataset_size(ds);
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    verify_job jobs[256];
    pthread_t tid[256];
    char **errors = calloc((size_t)n, sizeof *errors);
    if (!errors) {
        fprintf(stderr, "arcface-data: out of memory for %" PRId64 " entries\n", n);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int running[256];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (verify_job){.ds = ds, .lo = n * t / threads, .hi = n * (t + 1) / threads};
        jobs[t].errors = errors + jobs[t].lo;
        running[t] = pthread_create(&tid[t], NULL, verify_range, &jobs[t]) == 0;
        if (!running[t]) verify_range(&jobs[t]); /* no thread to be had: do it here */
    }
    int64_t bad = 0;
    int oom = 0;
    for (int t = 0; t < threads; t++) {
        if (running[t]) pthread_join(tid[t], NULL);
        bad += jobs[t].bad;
        oom |= jobs[t].st != AF_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t listed = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!errors[i]) continue;
        if (listed++ < max_list) printf("corrupt: %s\n", errors[i]);
        free(errors[i]);
    }
    free(errors);
    if (listed > max_list) printf("... and %" PRId64 " more corrupt images\n", listed - max_list);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("verified %" PRId64 " images in %.1f s (%.0f images/s, %d threads): %" PRId64 " corrupt\n", n, s,
           s > 0 ? (double)n / s : 0.0, threads, bad);
    if (oom) {
        fprintf(stderr, "arcface-data: verify ran out of memory; not every image was checked\n");
        return 1;
    }
    return bad ? 1 : 0;
}

/* ---- pack --------------------------------------------------------------------- */

static void progress(int64_t done, int64_t total, void *arg)
{
    (void)arg;
    if (done % 100000 == 0 || done == total) fprintf(stderr, "packed %" PRId64 " / %" PRId64 "\n", done, total);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        usage();
        return 2;
    }
    const char *cmd = argv[1], *spec = argv[2], *out = NULL;
    af_dataset_opts o;
    memset(&o, 0, sizeof o);
    af_pack_opts po;
    memset(&po, 0, sizeof po);
    int threads = 1;
    int64_t max_list = 1000;
    int argi = 3;
    if (!strcmp(cmd, "pack")) {
        if (argc < 4) {
            usage();
            return 2;
        }
        out = argv[3];
        argi = 4;
    } else if (strcmp(cmd, "info") && strcmp(cmd, "verify")) {
        usage();
        return 2;
    }
    for (; argi < argc; argi++) {
        const char *a = argv[argi], *v = argi + 1 < argc ? argv[argi + 1] : NULL;
        if (!strcmp(a, "--split") && v) {
            if (strcmp(v, "train") && strcmp(v, "test")) {
                usage();
                return 2;
            }
            o.split = !strcmp(v, "test") ? AF_DATASET_SPLIT_TEST : AF_DATASET_SPLIT_TRAIN;
            argi++;
        } else if (!strcmp(a, "-j") && v) {
            char *end;
            long t = strtol(v, &end, 10);
            if (end == v || *end || t < 1 || t > 256) {
                fprintf(stderr, "arcface-data: -j %s: expected a number of threads from 1 to 256\n", v);
                return 2;
            }
            threads = (int)t;
            argi++;
        } else if (!strcmp(a, "--max-list") && v) {
            max_list = atoll(v);
            argi++;
        } else if (!strcmp(a, "--quality") && v) {
            po.quality = atoi(v);
            if (po.quality < 1 || po.quality > 100) {
                fprintf(stderr, "arcface-data: --quality %s, expected 1..100\n", v);
                return 2;
            }
            argi++;
        } else if (!strcmp(a, "--no-png")) {
            po.no_png = 1;
        } else {
            fprintf(stderr, "arcface-data: unknown or incomplete option '%s'\n", a);
            usage();
            return 2;
        }
    }
    af_dataset *ds = NULL;
    if (af_dataset_open(&ds, spec, &o) != AF_OK) return fail(spec);
    int rc = 0;
    if (!strcmp(cmd, "info")) {
        int c, h, w;
        af_dataset_shape(ds, &c, &h, &w);
        printf("images: %" PRId64 " classes: %" PRId64 "\n", af_dataset_size(ds), af_dataset_num_classes(ds));
        printf("format: %s\n", af_dataset_format(ds));
        printf("shape: %d x %d x %d (C x H x W)\n", c, h, w);
        printf("detail: %s\n", af_dataset_describe(ds));
    } else if (!strcmp(cmd, "verify")) {
        printf("%s\n", af_dataset_describe(ds));
        rc = cmd_verify(ds, threads, max_list);
    } else {
        po.progress = progress;
        int64_t n = 0, C = 0;
        if (af_dataset_size(ds) + af_dataset_num_classes(ds) + 1 > ((int64_t)1 << 24))
            fprintf(stderr, "arcface-data: warning: more than 2^24 keys; the float32 header labels are inexact "
                    "(this project's reader corrects for it, insightface's MXFaceDataset may not)\n");
        if (af_recordio_pack(ds, out, &po, &n, &C) != AF_OK) {
            rc = fail("pack");
        } else {
            printf("images: %" PRId64 " classes: %" PRId64 "\n", n, C);
            printf("wrote %s.rec and %s.idx (record 0 header, %" PRId64 " image records, %" PRId64
                   " identity records)\n", out, out, n, C);
        }
    }
    af_dataset_close(ds);
    return rc;
}
