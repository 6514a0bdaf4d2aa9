/* data_image: JPEG/PNG decoding against independent decoders (PIL when
 * installed; a hand-built PNG), bilinear resize against PyTorch's
 * interpolate, normalisation against torchvision's ToTensor+Normalize
 * arithmetic, and bad bytes (truncated, garbage, lying headers) failing
 * cleanly with the image named in the message. */
#include "test_data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int max_abs_diff_u8(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

static void check_against_pil(const char *dir, int have_pil)
{
    enum { K = 3 };
    const int shapes[K][3] = {{112, 112, 3}, {37, 61, 3}, {50, 40, 1}};
    uint8_t *ours[K];
    char jobs[4200], p[4200];
    snprintf(jobs, sizeof jobs, "%s/pil_jobs.txt", dir);
    FILE *jf = fopen(jobs, "w");
    af_image_decoder *d = NULL;
    CHECK_OK(af_image_decoder_init(&d));
    for (int s = 0; s < K; s++) {
        int h = shapes[s][0], w = shapes[s][1], c = shapes[s][2];
        size_t len;
        uint8_t *jpg = t_make_jpeg(h, w, c, 11 + s, 90, &len);
        ours[s] = calloc((size_t)h * w * c, 1);
        CHECK_OK(af_image_decoder_decode(d, jpg, len, h, w, c, ours[s], "test jpeg"));
        int ph, pw, pc;
        if (CHECK_OK(af_image_probe(jpg, len, &ph, &pw, &pc, "probe")))
            CHECK(ph == h && pw == w && pc == c, "probe says %dx%dx%d, expected %dx%dx%d", ph, pw, pc, h, w, c);
        snprintf(p, sizeof p, "%s/pil%d.jpg", dir, s);
        t_write_file(p, jpg, len);
        fprintf(jf, "pil_decode %s %s/pil%d.raw\n", p, dir, s);
        free(jpg);
    }
    fclose(jf);
    af_image_decoder_free(d);
    int ran = have_pil && t_run("%s %s/ref_image.py jobs %s", t_python, t_srcdir, jobs) == 0;
    CHECK(!have_pil || ran, "PIL decode failed");
    for (int s = 0; s < K; s++) {
        int h = shapes[s][0], w = shapes[s][1], c = shapes[s][2];
        if (!ran) {
            printf("  PIL not installed: JPEG %dx%dx%d decoded, no PIL cross-check\n", h, w, c);
        } else {
            snprintf(p, sizeof p, "%s/pil%d.raw", dir, s);
            size_t rl = 0;
            uint8_t *ref = t_read_file(p, &rl);
            CHECK(ref && rl == (size_t)h * w * c, "PIL output has %zu bytes, expected %d", rl, h * w * c);
            if (ref && rl == (size_t)h * w * c) {
                int m = max_abs_diff_u8(ours[s], ref, rl);
                printf("  JPEG %dx%dx%d q90: max |ours - PIL| = %d (tolerance 1)\n", h, w, c, m);
                CHECK(m <= 1, "JPEG %dx%dx%d: max |ours - PIL| = %d > 1", h, w, c, m);
            }
            free(ref);
        }
        free(ours[s]);
    }
}

static void check_grey_rgb(void)
{
    size_t len;
    uint8_t *jpg = t_make_jpeg(24, 20, 1, 3, 95, &len);
    uint8_t g[24 * 20], rgb[24 * 20 * 3];
    CHECK_OK(af_image_decode(jpg, len, 24, 20, rgb, "grey jpeg as rgb"));
    af_image_decoder *d = NULL;
    CHECK_OK(af_image_decoder_init(&d));
    CHECK_OK(af_image_decoder_decode(d, jpg, len, 24, 20, 1, g, "grey jpeg"));
    int same = 1;
    for (int i = 0; i < 24 * 20; i++) same &= rgb[3 * i] == g[i] && rgb[3 * i + 1] == g[i] && rgb[3 * i + 2] == g[i];
    CHECK(same, "a grey JPEG decoded to RGB is not R = G = B = grey");
    af_image_decoder_free(d);
    free(jpg);
}

static void check_png(const char *dir)
{
    if (!af_image_have_png()) {
        printf("  built without libpng: PNG checks skipped\n");
        return;
    }
    for (int c = 1; c <= 3; c += 2) {
        uint8_t pix[33 * 17 * 3], back[33 * 17 * 3];
        t_make_picture(pix, 33, 17, c, 9);
        uint8_t *png = NULL;
        size_t len = 0;
        CHECK_OK(af_image_encode_png(pix, 33, 17, c, &png, &len));
        af_image_decoder *d = NULL;
        CHECK_OK(af_image_decoder_init(&d));
        if (CHECK_OK(af_image_decoder_decode(d, png, len, 33, 17, c, back, "png")))
            CHECK(memcmp(pix, back, (size_t)33 * 17 * c) == 0, "PNG %d-channel round trip is not lossless", c);
        /* Truncated PNG: an error, not a crash. */
        CHECK_ERR(af_image_decoder_decode(d, png, len / 2, 33, 17, c, back, "half.png"), AF_ERR_FORMAT, "half.png",
                  "PNG");
        af_image_decoder_free(d);
        free(png);
        /* Alpha is dropped, not composited (as PIL's convert and OpenCV do). */
        char p[4200], r[4200];
        snprintf(p, sizeof p, "%s/alpha%d.png", dir, c);
        snprintf(r, sizeof r, "%s/alpha%d.raw", dir, c);
        if (!t_python_has("numpy")) {
            t_skip("NumPy is missing: no PNG with alpha to decode");
            continue;
        }
        if (t_run("%s %s/ref_image.py png_alpha %s %s %d", t_python, t_srcdir, p, r, c) != 0) {
            CHECK(0, "ref_image.py png_alpha failed");
            continue;
        }
        size_t pl, rl;
        uint8_t *pb = t_read_file(p, &pl), *rb = t_read_file(r, &rl);
        uint8_t out[7 * 5 * 3];
        af_image_decoder *d2 = NULL;
        CHECK_OK(af_image_decoder_init(&d2));
        if (CHECK_OK(af_image_decoder_decode(d2, pb, pl, 7, 5, c, out, "alpha png"))) {
            int m = max_abs_diff_u8(out, rb, rl);
            printf("  PNG with alpha (%d colour channels, built by Python zlib): max diff %d\n", c, m);
            CHECK(rl == (size_t)7 * 5 * c && m == 0, "PNG with alpha: max diff %d, expected 0", m);
        }
        af_image_decoder_free(d2);
        free(pb);
        free(rb);
    }
}

/* Resize against torch.nn.functional.interpolate and the normalisation
 * against torchvision's arithmetic, in one Python process (one torch import). */
static void check_resize_normalize(const char *dir, int have_torch)
{
    enum { K = 4 };
    const int cases[K][4] = {{48, 64, 112, 112}, {112, 112, 28, 28}, {37, 61, 112, 96}, {5, 3, 4, 9}};
    uint8_t *src[K], *dst[K];
    char jobs[4200], p[4200];
    snprintf(jobs, sizeof jobs, "%s/jobs.txt", dir);
    FILE *jf = fopen(jobs, "w");
    for (int k = 0; k < K; k++) {
        int sh = cases[k][0], sw = cases[k][1], dh = cases[k][2], dw = cases[k][3], c = 3;
        src[k] = malloc((size_t)sh * sw * c);
        dst[k] = malloc((size_t)dh * dw * c);
        t_make_picture(src[k], sh, sw, c, 21 + k);
        CHECK_OK(af_image_resize(src[k], sh, sw, c, dst[k], dh, dw, NULL));
        snprintf(p, sizeof p, "%s/rs%d.raw", dir, k);
        t_write_file(p, src[k], (size_t)sh * sw * c);
        fprintf(jf, "torch_resize %s %d %d %d %d %d %s/rs%d.f32\n", p, sh, sw, c, dh, dw, dir, k);
    }
    fprintf(jf, "norm_table %s/norm.f32\n", dir);
    fclose(jf);
    int ran = have_torch && t_run("%s %s/ref_image.py jobs %s", t_python, t_srcdir, jobs) == 0;
    CHECK(!have_torch || ran, "ref_image.py jobs failed");
    for (int k = 0; k < K; k++) {
        int sh = cases[k][0], sw = cases[k][1], dh = cases[k][2], dw = cases[k][3], c = 3;
        if (!ran) {
            printf("  torch not importable: resize %dx%d -> %dx%d unchecked against PyTorch\n", sh, sw, dh, dw);
            continue;
        }
        snprintf(p, sizeof p, "%s/rs%d.f32", dir, k);
        size_t rl = 0;
        float *ref = (float *)t_read_file(p, &rl);
        if (ref && rl == (size_t)dh * dw * c * 4) {
            double m = 0;
            for (size_t i = 0; i < (size_t)dh * dw * c; i++) m = fmax(m, fabs((double)dst[k][i] - ref[i]));
            printf("  resize %dx%d -> %dx%d: max |ours - unrounded torch| = %.4f (tolerance 0.51)\n", sh, sw, dh,
                   dw, m);
            CHECK(m <= 0.51, "resize %dx%d -> %dx%d: max diff %.4f > 0.51 from torch bilinear", sh, sw, dh, dw, m);
        } else {
            CHECK(0, "torch resize output has %zu bytes", rl);
        }
        free(ref);
    }
    for (int k = 0; k < K; k++) {
        free(src[k]);
        free(dst[k]);
    }
    /* Decode with resize goes through the same path. */
    size_t len;
    uint8_t *jpg = t_make_jpeg(48, 64, 3, 5, 90, &len);
    uint8_t full[48 * 64 * 3], a[112 * 112 * 3], b[112 * 112 * 3];
    CHECK_OK(af_image_decode(jpg, len, 48, 64, full, "native"));
    CHECK_OK(af_image_decode(jpg, len, 112, 112, a, "resized"));
    CHECK_OK(af_image_resize(full, 48, 64, 3, b, 112, 112, NULL));
    CHECK(memcmp(a, b, sizeof a) == 0, "decode-with-resize differs from decode then af_image_resize");
    free(jpg);

    uint8_t ramp[256];
    for (int i = 0; i < 256; i++) ramp[i] = (uint8_t)i;
    float out[256];
    af_image_normalize_chw(ramp, 1, 256, 1, 0, out);
    CHECK(out[0] == -1.0f && out[255] == 1.0f, "normalise(0) = %g, normalise(255) = %g, expected -1 and 1",
          (double)out[0], (double)out[255]);
    if (ran) {
        snprintf(p, sizeof p, "%s/norm.f32", dir);
        size_t rl = 0;
        float *ref = (float *)t_read_file(p, &rl);
        int bad = rl != sizeof out;
        for (int i = 0; i < 256 && !bad; i++) bad = memcmp(&out[i], &ref[i], 4) != 0;
        printf("  normalisation vs torchvision ToTensor+Normalize(0.5,0.5): %s\n", bad ? "DIFFERS" : "bit-identical");
        CHECK(!bad, "normalisation is not bit-identical to torch's");
        free(ref);
    }
    /* Layout: CHW planes, flip mirrors columns. */
    uint8_t img[2 * 3 * 3];
    for (int i = 0; i < 18; i++) img[i] = (uint8_t)(i * 13);
    float x[18], f[18];
    af_image_normalize_chw(img, 2, 3, 3, 0, x);
    af_image_normalize_chw(img, 2, 3, 3, 1, f);
    int ok = 1;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 2; y++)
            for (int xx = 0; xx < 3; xx++) {
                float want = ((float)img[(y * 3 + xx) * 3 + ch] / 255.0f - 0.5f) / 0.5f;
                ok &= x[(ch * 2 + y) * 3 + xx] == want && f[(ch * 2 + y) * 3 + (2 - xx)] == want;
            }
    CHECK(ok, "normalise: CHW layout or flip wrong");
}

static void check_bad_bytes(void)
{
    size_t len;
    uint8_t *jpg = t_make_jpeg(64, 64, 3, 7, 90, &len);
    uint8_t out[64 * 64 * 3];
    af_image_decoder *d = NULL;
    CHECK_OK(af_image_decoder_init(&d));
    CHECK_ERR(af_image_decoder_decode(d, jpg, len * 6 / 10, 64, 64, 3, out, "truncated.jpg"), AF_ERR_FORMAT,
              "truncated.jpg", "undecodable JPEG");
    CHECK_ERR(af_image_decoder_decode(d, jpg, 0, 64, 64, 3, out, "empty"), AF_ERR_FORMAT, "empty");
    uint8_t junk[300];
    for (int i = 0; i < 300; i++) junk[i] = (uint8_t)(i * 37 + 11);
    CHECK_ERR(af_image_decoder_decode(d, junk, sizeof junk, 64, 64, 3, out, "junk"), AF_ERR_FORMAT, "junk",
              "neither JPEG");
    /* JPEG magic followed by garbage. */
    junk[0] = 0xff;
    junk[1] = 0xd8;
    junk[2] = 0xff;
    CHECK_ERR(af_image_decoder_decode(d, junk, sizeof junk, 64, 64, 3, out, "fake.jpg"), AF_ERR_FORMAT, "fake.jpg");
    /* A header claiming 65000 x 65000: refused before any allocation. */
    uint8_t *big = malloc(len);
    memcpy(big, jpg, len);
    int patched = 0;
    for (size_t i = 0; i + 9 < len; i++)
        if (big[i] == 0xff && big[i + 1] == 0xc0) { /* SOF0: len(2) precision(1) height(2) width(2) */
            big[i + 5] = big[i + 7] = 0xfd;
            big[i + 6] = big[i + 8] = 0xe8;
            patched = 1;
            break;
        }
    CHECK(patched, "no SOF0 marker in the test JPEG");
    CHECK_ERR(af_image_decoder_decode(d, big, len, 64, 64, 3, out, "huge.jpg"), AF_ERR_FORMAT, "huge.jpg", "pixels");
    /* Flipped bits in the entropy-coded data: an error or a (wrong) picture, never a crash. */
    int errors = 0;
    for (int t = 0; t < 50; t++) {
        memcpy(big, jpg, len);
        size_t at = len / 3 + (size_t)t * 7 % (len / 2);
        big[at] ^= (uint8_t)(0x5a + t);
        errors += af_image_decoder_decode(d, big, len, 64, 64, 3, out, "flipped") != AF_OK;
    }
    printf("  50 JPEGs with a corrupted byte in the scan: %d rejected, %d decoded\n", errors, 50 - errors);
    /* The decoder is reusable after every failure above. */
    CHECK_OK(af_image_decoder_decode(d, jpg, len, 64, 64, 3, out, "good after bad"));
    CHECK_ERR(af_image_decoder_decode(d, jpg, len, 64, 64, 2, out, "two channels"), AF_ERR_ARG, "two channels");
    af_image_decoder_free(d);
    free(big);
    free(jpg);
}

void t_image(void)
{
    char *dir = t_mkdtemp();
    int have_pil = t_python_has("PIL"), have_torch = t_python_has("torch");
    printf("references: PIL %s, torch %s\n", have_pil ? "yes" : "no", have_torch ? "yes" : "no");
    if (!have_pil) t_skip("PIL is missing: JPEG decoding is not cross-checked");
    if (!have_torch) t_skip("torch is missing: resize and normalisation are not cross-checked");
    check_against_pil(dir, have_pil);
    check_grey_rgb();
    check_png(dir);
    check_resize_normalize(dir, have_torch);
    check_bad_bytes();
    t_rmtree(dir);
    free(dir);
}
