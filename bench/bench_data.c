/* bench_data: is the data path fast enough to never starve a worker?
 *
 * Packs synthetic 112x112 faces as JPEG (quality 95, like insightface's
 * packs) into a temporary RecordIO file, then measures on one core, in the
 * same run and interleaved so that machine noise hits both alike:
 *   plain   libjpeg-turbo alone: a reused decompressor decoding the JPEG
 *           bytes from memory to RGB (the ceiling for any JPEG pipeline);
 *   ours    af_dataset_get_ws: pread of the record, frame and IRHeader
 *           parse, label check, the same decode, flip, normalise to CHW float;
 * and then the threaded loader's throughput with 1 and 2 decode threads.
 * Targets (issue #5): ours >= 80% of plain, and >= 1,000 images/s per core.
 * Single-core figures are thread CPU time, best of --repeat per chunk of 50
 * images with the paths interleaved; loader figures are wall time. Exit
 * status 1 if a target is missed. Results and the command line are recorded in bench/README-data.md.
 *
 *   bench_data [--images N] [--repeat R] [--quality Q] [--size S] [--dir TMP] */
#include <arcface/data.h>
#include <arcface/image.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* stdio first: jpeglib.h uses FILE */
#include <jpeglib.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Per-core rates are measured in this thread's CPU time, so that other
 * processes on a shared machine do not count against either side. */
static double cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_data: %s: %s\n", what, af_errmsg());
    exit(2);
}

/* libjpeg-turbo on its own, the way a minimal C decoder would call it. */
static double plain_decode(struct jpeg_decompress_struct *cinfo, uint8_t **jpg, size_t *len, int lo, int hi,
                           int size, uint8_t *rgb)
{
    struct jpeg_decompress_struct ci = *cinfo;
    double t0 = cpu();
    for (int i = lo; i < hi; i++) {
        jpeg_mem_src(&ci, jpg[i], (unsigned long)len[i]);
        jpeg_read_header(&ci, TRUE);
        ci.out_color_space = JCS_RGB;
        jpeg_start_decompress(&ci);
        while (ci.output_scanline < ci.output_height) {
            JSAMPROW rows[16];
            int k = 0;
            for (unsigned y = ci.output_scanline; y < ci.output_height && k < 16; y++, k++)
                rows[k] = rgb + (size_t)y * size * 3;
            jpeg_read_scanlines(&ci, rows, (JDIMENSION)k);
        }
        jpeg_finish_decompress(&ci);
    }
    double t = cpu() - t0;
    *cinfo = ci;
    return t;
}

static double ours_decode(const af_dataset *ds, int lo, int hi, float *chw, af_dataset_scratch *ws)
{
    double t0 = cpu();
    for (int i = lo; i < hi; i++) {
        int64_t label;
        if (af_dataset_get_ws(ds, i, chw, &label, i & 1, ws) != AF_OK) die("af_dataset_get_ws");
    }
    return cpu() - t0;
}

static double ours_u8(const af_dataset *ds, int lo, int hi, uint8_t *hwc, af_dataset_scratch *ws)
{
    double t0 = cpu();
    for (int i = lo; i < hi; i++) {
        int64_t label;
        if (af_dataset_get_u8(ds, i, hwc, &label, ws) != AF_OK) die("af_dataset_get_u8");
    }
    return cpu() - t0;
}

static double loader_rate(af_dataset *ds, int threads, int batch, int steps, double *wait)
{
    af_loader_config c = {.batch = batch, .world = 1, .seed = 1, .flip = 1, .threads = threads, .prefetch = 4};
    af_loader *ld = NULL;
    if (af_loader_open(&ld, ds, &c) != AF_OK) die("af_loader_open");
    int cc, h, w;
    af_dataset_shape(ds, &cc, &h, &w);
    float *img = malloc(sizeof(float) * batch * cc * h * w);
    int64_t *lab = malloc(sizeof(int64_t) * batch);
    if (af_loader_next(ld, img, lab, NULL) != AF_OK) die("af_loader_next"); /* threads started, ring warm */
    double t0 = now();
    for (int s = 0; s < steps; s++)
        if (af_loader_next(ld, img, lab, NULL) != AF_OK) die("af_loader_next");
    double t = now() - t0;
    af_loader_stats st;
    af_loader_get_stats(ld, &st);
    *wait = st.wait_s;
    af_loader_close(ld);
    free(img);
    free(lab);
    return (double)steps * batch / t;
}

int main(int argc, char **argv)
{
    int n = 2000, repeat = 5, quality = 95, size = 112;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--images")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--quality")) quality = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) tmp = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_data [--images N] [--repeat R] [--quality Q] [--size S] [--dir TMP]\n");
            return 2;
        }
    }
    if (n < 100 || repeat < 1 || size < 8) {
        fprintf(stderr, "bench_data: need --images >= 100, --repeat >= 1, --size >= 8\n");
        return 2;
    }
    char spec[256], prefix[4096];
    snprintf(spec, sizeof spec, "synthetic:ids=%d,per_id=20,size=%d,seed=7", (n + 19) / 20, size);
    snprintf(prefix, sizeof prefix, "%s/bench_data_%d", tmp, (int)getpid());
    af_dataset *syn = NULL, *ds = NULL;
    if (af_dataset_open(&syn, spec, NULL) != AF_OK) die(spec);
    double t0 = now();
    af_pack_opts po = {.quality = quality};
    if (af_recordio_pack(syn, prefix, &po, NULL, NULL) != AF_OK) die("pack");
    double pack_s = now() - t0;
    if (af_dataset_open(&ds, prefix, NULL) != AF_OK) die(prefix);
    n = (int)af_dataset_size(ds);

    /* The JPEG bytes in memory, for the plain decoder. */
    af_dataset_scratch *ws = NULL;
    af_dataset_scratch_init(&ws);
    uint8_t **jpg = malloc(sizeof *jpg * n);
    size_t *len = malloc(sizeof *len * n), total = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *b;
        int64_t l;
        if (af_dataset_get_encoded(ds, i, &b, &len[i], &l, ws) != AF_OK) die("get_encoded");
        jpg[i] = malloc(len[i]);
        memcpy(jpg[i], b, len[i]);
        total += len[i];
    }
    uint8_t *rgb = malloc((size_t)size * size * 3);
    float *chw = malloc(sizeof(float) * 3 * size * size);

    /* Synthetic rendering, for scale tests that skip JPEG entirely. */
    double syn_best = 1e9;
    for (int r = 0; r < repeat; r++) {
        double s0 = cpu();
        for (int i = 0; i < 200; i++) {
            int64_t l;
            af_dataset_get_u8(syn, i, rgb, &l, ws);
        }
        double s = cpu() - s0;
        if (s < syn_best) syn_best = s;
    }

    /* Warm caches (page cache, decoder buffers), then interleave the three
     * paths chunk by chunk and keep each chunk's best time per path: a burst
     * of load from elsewhere then spoils one sample, not one side. */
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&cinfo);
    ours_decode(ds, 0, n, chw, ws);
    plain_decode(&cinfo, jpg, len, 0, n, size, rgb);
    enum { CHUNK = 50 };
    int chunks = (n + CHUNK - 1) / CHUNK;
    double *best = malloc(sizeof(double) * 3 * chunks);
    for (int k = 0; k < 3 * chunks; k++) best[k] = 1e9;
    for (int r = 0; r < repeat; r++)
        for (int k = 0; k < chunks; k++) {
            int lo = k * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
            double a = plain_decode(&cinfo, jpg, len, lo, hi, size, rgb);
            double b = ours_decode(ds, lo, hi, chw, ws);
            double c = ours_u8(ds, lo, hi, rgb, ws);
            if (a < best[3 * k]) best[3 * k] = a;
            if (b < best[3 * k + 1]) best[3 * k + 1] = b;
            if (c < best[3 * k + 2]) best[3 * k + 2] = c;
        }
    double best_plain = 0, best_ours = 0, best_u8 = 0;
    for (int k = 0; k < chunks; k++) {
        best_plain += best[3 * k];
        best_ours += best[3 * k + 1];
        best_u8 += best[3 * k + 2];
    }
    free(best);
    jpeg_destroy_decompress(&cinfo);
    double plain = n / best_plain, ours = n / best_ours, u8 = n / best_u8;
    double w1, w2;
    double l1 = loader_rate(ds, 1, 128, n / 128 * 2, &w1);
    double l2 = loader_rate(ds, 2, 128, n / 128 * 2, &w2);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_data: %d synthetic %dx%d faces, JPEG quality %d, %.1f KiB/image on average (packed in %.1f s); "
           "CPU time, best of %d per 50-image chunk; %ld cores online\n",
           n, size, size, quality, total / 1024.0 / n, pack_s, repeat, cores);
    printf("  %-58s %10s %10s\n", "path (one core)", "images/s", "vs plain");
    printf("  %-58s %10.0f %9.1f%%\n", "libjpeg-turbo plain decode (memory -> RGB)", plain, 100.0);
    printf("  %-58s %10.0f %9.1f%%\n", "ours: pread + RecordIO parse + decode (uint8 HWC)", u8, 100 * u8 / plain);
    printf("  %-58s %10.0f %9.1f%%\n", "ours: ... + flip + normalise to float CHW (training input)", ours,
           100 * ours / plain);
    printf("  %-58s %10.0f\n", "synthetic identity rendering (no JPEG), for comparison", 200 / syn_best);
    printf("  loader, batch 128: 1 thread %.0f images/s (consumer waited %.2f s), 2 threads %.0f images/s "
           "(%.0f per thread; waited %.2f s)\n",
           l1, w1, l2, l2 / 2, w2);
    int ok_ratio = ours >= 0.8 * plain, ok_rate = ours >= 1000;
    printf("targets: ours/plain = %.3f (>= 0.80: %s); ours = %.0f images/s per core (>= 1000: %s)\n", ours / plain,
           ok_ratio ? "met" : "MISSED", ours, ok_rate ? "met" : "MISSED");

    for (int i = 0; i < n; i++) free(jpg[i]);
    free(jpg);
    free(len);
    free(rgb);
    free(chw);
    af_dataset_scratch_free(ws);
    af_dataset_close(ds);
    af_dataset_close(syn);
    char p[4200];
    snprintf(p, sizeof p, "%s.rec", prefix);
    unlink(p);
    snprintf(p, sizeof p, "%s.idx", prefix);
    unlink(p);
    return ok_ratio && ok_rate ? 0 : 1;
}
