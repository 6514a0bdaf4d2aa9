/* JPEG/PNG decode, bilinear resize, normalisation and encoders (see
 * include/arcface/image.h). The JPEG path keeps one libjpeg decompressor per
 * af_image_decoder and aborts (rather than continues) on libjpeg's
 * corrupt-data warnings, because a half-grey face is worse for training than
 * a skipped one and because a lying header on a short buffer would otherwise
 * make libjpeg synthesise a huge image out of nothing. */
#include "arcface/image.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <jerror.h>
#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#ifdef AF_HAVE_PNG
#include <png.h>
#endif

/* ---- libjpeg error handling ------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

static void jerr_exit(j_common_ptr c)
{
    jerr_mgr *e = (jerr_mgr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings that real datasets carry on images that decode correctly. */
static int jwarn_benign(int code)
{
    return code == JWRN_EXTRANEOUS_DATA || code == JWRN_ADOBE_XFORM || code == JWRN_JFIF_MAJOR ||
           code == JWRN_BOGUS_ICC || code == JWRN_NOT_SEQUENTIAL;
}

static void jerr_emit(j_common_ptr c, int level)
{
    if (level >= 0) return; /* trace messages */
    if (jwarn_benign(c->err->msg_code)) return;
    jerr_exit(c);
}

static void jerr_setup(jerr_mgr *e)
{
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jerr_exit;
    e->pub.emit_message = jerr_emit;
    e->msg[0] = 0;
}

/* ---- decoder ------------------------------------------------------------ */

struct af_image_decoder {
    struct jpeg_decompress_struct cinfo;
    jerr_mgr jerr;
    int cinfo_ready;
    uint8_t *full; /* (src_h, src_w, c) when the stored size needs a resize */
    size_t full_cap;
    uint8_t *conv; /* PNG pixels before alpha drop / channel conversion */
    size_t conv_cap;
    void *rtmp; /* resize coefficients */
    size_t rtmp_cap;
};

static int grow(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap) return 1;
    uint8_t *q = realloc(*p, need);
    if (!q) return 0;
    *p = q;
    *cap = need;
    return 1;
}

af_status af_image_decoder_init(af_image_decoder **out)
{
    *out = NULL;
    af_image_decoder *d = af_calloc(1, sizeof *d, "image decoder");
    if (!d) return AF_ERR_NOMEM;
    jerr_setup(&d->jerr);
    d->cinfo.err = &d->jerr.pub;
    if (setjmp(d->jerr.jb)) {
        af_status st = af_errorf(AF_ERR_NOMEM, "libjpeg could not create a decompressor: %s", d->jerr.msg);
        free(d);
        return st;
    }
    jpeg_create_decompress(&d->cinfo);
    d->cinfo_ready = 1;
    *out = d;
    return AF_OK;
}

void af_image_decoder_free(af_image_decoder *d)
{
    if (!d) return;
    if (d->cinfo_ready) jpeg_destroy_decompress(&d->cinfo);
    free(d->full);
    free(d->conv);
    free(d->rtmp);
    free(d);
}

af_image_format af_image_sniff(const uint8_t *buf, size_t len)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff) return AF_IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(buf, png_magic, 8) == 0) return AF_IMAGE_FORMAT_PNG;
    return AF_IMAGE_FORMAT_UNKNOWN;
}

static af_status check_dims(long h, long w, const char *what)
{
    if (h <= 0 || w <= 0 || h * w > AF_IMAGE_MAX_PIXELS)
        return af_errorf(AF_ERR_FORMAT, "%s: image of %ld x %ld pixels, expected 1 to %ld pixels", what,
                         h, w, (long)AF_IMAGE_MAX_PIXELS);
    return AF_OK;
}

static af_status check_out(int h, int w, int c, const char *what)
{
    if (h <= 0 || w <= 0 || (long)h * w > AF_IMAGE_MAX_PIXELS || (c != 1 && c != 3))
        return af_errorf(AF_ERR_ARG, "%s: requested output %d x %d x %d, expected a positive size and 1 or 3 channels",
                         what, h, w, c);
    return AF_OK;
}

static af_status resize_with(af_image_decoder *d, const uint8_t *src, int sh, int sw, int c, uint8_t *dst,
                             int dh, int dw)
{
    size_t need = af_image_resize_tmp_bytes(dh, dw);
    if (need > d->rtmp_cap) {
        void *q = realloc(d->rtmp, need);
        if (!q) return af_errorf(AF_ERR_NOMEM, "out of memory for %zu bytes of resize coefficients", need);
        d->rtmp = q;
        d->rtmp_cap = need;
    }
    return af_image_resize(src, sh, sw, c, dst, dh, dw, d->rtmp);
}

/* The part of a JPEG decode that libjpeg may longjmp out of. Kept out of
 * line so that no local of the caller is live across setjmp. */
static __attribute__((noinline)) af_status decode_jpeg_body(af_image_decoder *d, const uint8_t *buf,
                                                             size_t len, int out_h, int out_w, int out_c,
                                                             uint8_t *hwc, const char *what)
{
    struct jpeg_decompress_struct *ci = &d->cinfo;
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    af_status st = check_dims(ci->image_height, ci->image_width, what);
    if (st != AF_OK) goto abort;
    if (ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK) {
        st = af_errorf(AF_ERR_FORMAT, "%s: CMYK JPEG, expected greyscale or RGB/YCbCr", what);
        goto abort;
    }
    ci->out_color_space = out_c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(ci);
    int h = (int)ci->output_height, w = (int)ci->output_width;
    int direct = h == out_h && w == out_w;
    uint8_t *dst = hwc;
    if (!direct) {
        if (!grow(&d->full, &d->full_cap, (size_t)h * w * out_c)) {
            st = af_errorf(AF_ERR_NOMEM, "%s: out of memory for a %d x %d image", what, h, w);
            goto abort;
        }
        dst = d->full;
    }
    size_t stride = (size_t)w * out_c;
    while (ci->output_scanline < ci->output_height) {
        /* Several rows per call lets libjpeg-turbo skip its internal copy for
         * the upsampled chroma rows. */
        JSAMPROW rows[16];
        int n = 0;
        for (unsigned y = ci->output_scanline; y < ci->output_height && n < 16; y++, n++)
            rows[n] = dst + (size_t)y * stride;
        jpeg_read_scanlines(ci, rows, (JDIMENSION)n);
    }
    jpeg_finish_decompress(ci);
    if (!direct) return resize_with(d, d->full, h, w, out_c, hwc, out_h, out_w);
    return AF_OK;
abort:
    jpeg_abort_decompress(ci);
    return st;
}

static af_status decode_jpeg(af_image_decoder *d, const uint8_t *buf, size_t len, int out_h, int out_w,
                             int out_c, uint8_t *hwc, const char *what)
{
    if (setjmp(d->jerr.jb)) {
        jpeg_abort_decompress(&d->cinfo);
        return af_errorf(AF_ERR_FORMAT, "%s: undecodable JPEG (%zu bytes): %s", what, len, d->jerr.msg);
    }
    return decode_jpeg_body(d, buf, len, out_h, out_w, out_c, hwc, what);
}

#ifdef AF_HAVE_PNG
static af_status decode_png(af_image_decoder *d, const uint8_t *buf, size_t len, int out_h, int out_w,
                            int out_c, uint8_t *hwc, const char *what)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, buf, len))
        return af_errorf(AF_ERR_FORMAT, "%s: undecodable PNG (%zu bytes): %s", what, len, img.message);
    af_status st = check_dims(img.height, img.width, what);
    if (st != AF_OK) {
        png_image_free(&img);
        return st;
    }
    /* Keep the file's alpha and drop it ourselves: PIL and OpenCV discard
     * alpha rather than composite, and datasets were made with those. */
    int color = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
    int alpha = (img.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    img.format = color ? (alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : (alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY);
    int fc = (color ? 3 : 1) + alpha;
    int h = (int)img.height, w = (int)img.width;
    size_t n = (size_t)h * w;
    if (!grow(&d->conv, &d->conv_cap, n * fc)) {
        png_image_free(&img);
        return af_errorf(AF_ERR_NOMEM, "%s: out of memory for a %d x %d PNG", what, h, w);
    }
    if (!png_image_finish_read(&img, NULL, d->conv, 0, NULL))
        return af_errorf(AF_ERR_FORMAT, "%s: undecodable PNG (%zu bytes): %s", what, len, img.message);
    if (alpha) { /* squeeze out the alpha channel in place */
        int cc = fc - 1;
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < cc; k++) d->conv[i * cc + k] = d->conv[i * fc + k];
        fc = cc;
    }
    int direct = h == out_h && w == out_w;
    uint8_t *dst = direct ? hwc : NULL;
    if (!direct) {
        if (!grow(&d->full, &d->full_cap, n * out_c))
            return af_errorf(AF_ERR_NOMEM, "%s: out of memory for a %d x %d image", what, h, w);
        dst = d->full;
    }
    af_image_convert_channels(d->conv, h, w, fc, dst, out_c);
    if (!direct) return resize_with(d, d->full, h, w, out_c, hwc, out_h, out_w);
    return AF_OK;
}
#endif

af_status af_image_decoder_decode(af_image_decoder *d, const uint8_t *buf, size_t len, int out_h,
                                  int out_w, int out_c, uint8_t *hwc, const char *what)
{
    af_status st = check_out(out_h, out_w, out_c, what);
    if (st != AF_OK) return st;
    switch (af_image_sniff(buf, len)) {
    case AF_IMAGE_FORMAT_JPEG: return decode_jpeg(d, buf, len, out_h, out_w, out_c, hwc, what);
    case AF_IMAGE_FORMAT_PNG:
#ifdef AF_HAVE_PNG
        return decode_png(d, buf, len, out_h, out_w, out_c, hwc, what);
#else
        return af_errorf(AF_ERR_FORMAT, "%s: PNG image, but this build has no libpng", what);
#endif
    default: break;
    }
    uint8_t b[4] = {0, 0, 0, 0};
    memcpy(b, buf, len < 4 ? len : 4);
    return af_errorf(AF_ERR_FORMAT,
                     "%s: %zu bytes starting %02x %02x %02x %02x are neither JPEG (ff d8 ff) nor PNG (89 50 4e 47)",
                     what, len, b[0], b[1], b[2], b[3]);
}

af_status af_image_decode(const uint8_t *buf, size_t len, int out_h, int out_w, uint8_t *rgb,
                          const char *what)
{
    af_image_decoder *d = NULL;
    af_status st = af_image_decoder_init(&d);
    if (st != AF_OK) return st;
    st = af_image_decoder_decode(d, buf, len, out_h, out_w, 3, rgb, what);
    af_image_decoder_free(d);
    return st;
}

typedef struct {
    struct jpeg_decompress_struct ci;
    jerr_mgr e;
    int h, w, c;
} jpeg_probe_ctx;

static __attribute__((noinline)) void jpeg_probe_body(jpeg_probe_ctx *p, const uint8_t *buf, size_t len)
{
    jpeg_mem_src(&p->ci, buf, (unsigned long)len);
    jpeg_read_header(&p->ci, TRUE);
    p->h = (int)p->ci.image_height;
    p->w = (int)p->ci.image_width;
    p->c = p->ci.num_components == 1 ? 1 : 3;
}

af_status af_image_probe(const uint8_t *buf, size_t len, int *h, int *w, int *c, const char *what)
{
    af_image_format f = af_image_sniff(buf, len);
    if (f == AF_IMAGE_FORMAT_JPEG) {
        jpeg_probe_ctx p;
        memset(&p, 0, sizeof p); /* so that a destroy before create is a no-op */
        jerr_setup(&p.e);
        p.ci.err = &p.e.pub;
        if (setjmp(p.e.jb)) {
            jpeg_destroy_decompress(&p.ci);
            return af_errorf(AF_ERR_FORMAT, "%s: unreadable JPEG header: %s", what, p.e.msg);
        }
        jpeg_create_decompress(&p.ci);
        jpeg_probe_body(&p, buf, len);
        *h = p.h;
        *w = p.w;
        *c = p.c;
        jpeg_destroy_decompress(&p.ci);
        return check_dims(*h, *w, what);
    }
#ifdef AF_HAVE_PNG
    if (f == AF_IMAGE_FORMAT_PNG) {
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        if (!png_image_begin_read_from_memory(&img, buf, len))
            return af_errorf(AF_ERR_FORMAT, "%s: unreadable PNG header: %s", what, img.message);
        *h = (int)img.height;
        *w = (int)img.width;
        *c = (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
        png_image_free(&img);
        return check_dims(*h, *w, what);
    }
#endif
    return af_errorf(AF_ERR_FORMAT, "%s: %zu bytes that are neither JPEG nor PNG%s", what, len,
                     f == AF_IMAGE_FORMAT_PNG ? " (PNG support not built)" : "");
}

/* ---- pixels --------------------------------------------------------------- */

size_t af_image_resize_tmp_bytes(int dh, int dw)
{
    return ((size_t)dw + dh) * (2 * sizeof(int) + sizeof(float));
}

/* PyTorch's source index for align_corners=False (area_pixel_compute_source_index). */
static void resize_coeffs(int src, int dst, int *i0, int *i1, float *lam)
{
    float scale = (float)src / (float)dst;
    for (int o = 0; o < dst; o++) {
        float s = scale * ((float)o + 0.5f) - 0.5f;
        if (s < 0) s = 0;
        int a = (int)s;
        if (a > src - 1) a = src - 1;
        float l = s - (float)a;
        if (l > 1) l = 1;
        i0[o] = a;
        i1[o] = a + (a < src - 1);
        lam[o] = l;
    }
}

af_status af_image_resize(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh, int dw,
                          void *tmp)
{
    void *own = NULL;
    if (!tmp) {
        tmp = own = af_malloc(af_image_resize_tmp_bytes(dh, dw), "resize coefficients");
        if (!own) return AF_ERR_NOMEM;
    }
    int *xi0 = tmp, *xi1 = xi0 + dw, *yi0 = xi1 + dw, *yi1 = yi0 + dh;
    float *xl = (float *)(yi1 + dh), *yl = xl + dw;
    resize_coeffs(sw, dw, xi0, xi1, xl);
    resize_coeffs(sh, dh, yi0, yi1, yl);
    for (int y = 0; y < dh; y++) {
        const uint8_t *r0 = src + (size_t)yi0[y] * sw * c, *r1 = src + (size_t)yi1[y] * sw * c;
        float ly = yl[y], hy = 1.0f - ly;
        uint8_t *o = dst + (size_t)y * dw * c;
        for (int x = 0; x < dw; x++) {
            float lx = xl[x], hx = 1.0f - lx;
            int a = xi0[x] * c, b = xi1[x] * c;
            for (int k = 0; k < c; k++) {
                float v = hy * (hx * r0[a + k] + lx * r0[b + k]) + ly * (hx * r1[a + k] + lx * r1[b + k]);
                v += 0.5f;
                o[x * c + k] = v >= 255.0f ? 255 : (uint8_t)v;
            }
        }
    }
    free(own);
    return AF_OK;
}

void af_image_convert_channels(const uint8_t *src, int h, int w, int src_c, uint8_t *dst, int dst_c)
{
    size_t n = (size_t)h * w;
    if (src_c == dst_c) {
        if (src != dst) memmove(dst, src, n * dst_c);
    } else if (src_c == 1) {
        for (size_t i = n; i-- > 0;) { /* backwards so that dst may alias src */
            uint8_t g = src[i];
            dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = g;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = (uint8_t)((299u * src[3 * i] + 587u * src[3 * i + 1] + 114u * src[3 * i + 2] + 500u) / 1000u);
    }
}

/* Mirrors each of `rows` rows of w floats in place. */
static void reverse_rows(float *p, size_t rows, int w)
{
    for (size_t r = 0; r < rows; r++) {
        float *o = p + r * (size_t)w;
        for (int x = 0; x < w / 2; x++) {
            float t = o[x];
            o[x] = o[w - 1 - x];
            o[w - 1 - x] = t;
        }
    }
}

/* Converts forward and mirrors afterwards: GCC vectorises the stride-3
 * forward gather but not a backward one, and this runs on every pixel of
 * every training image (3x faster than the fused mirrored gather). */
void af_image_normalize_chw(const uint8_t *src, int h, int w, int c, int flip, float *dst)
{
    size_t plane = (size_t)h * w;
    if (c == 3) {
        for (int y = 0; y < h; y++) {
            const uint8_t *row = src + (size_t)y * w * 3;
            float *o0 = dst + (size_t)y * w, *o1 = o0 + plane, *o2 = o1 + plane;
            for (int x = 0; x < w; x++) {
                o0[x] = ((float)row[3 * x] / 255.0f - 0.5f) / 0.5f;
                o1[x] = ((float)row[3 * x + 1] / 255.0f - 0.5f) / 0.5f;
                o2[x] = ((float)row[3 * x + 2] / 255.0f - 0.5f) / 0.5f;
            }
        }
    } else {
        for (size_t i = 0; i < plane; i++) dst[i] = ((float)src[i] / 255.0f - 0.5f) / 0.5f;
    }
    if (flip) reverse_rows(dst, (size_t)c * h, w);
}

/* ---- encoders ------------------------------------------------------------ */

typedef struct {
    struct jpeg_compress_struct ci;
    jerr_mgr e;
    unsigned char *buf; /* owned by libjpeg's memory destination until we take it */
    unsigned long size;
} jpeg_enc_ctx;

static __attribute__((noinline)) void encode_jpeg_body(jpeg_enc_ctx *x, const uint8_t *hwc, int h, int w,
                                                       int c, int quality)
{
    struct jpeg_compress_struct *ci = &x->ci;
    jpeg_mem_dest(ci, &x->buf, &x->size);
    ci->image_width = (JDIMENSION)w;
    ci->image_height = (JDIMENSION)h;
    ci->input_components = c;
    ci->in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, quality, TRUE);
    jpeg_start_compress(ci, TRUE);
    while (ci->next_scanline < ci->image_height) {
        JSAMPROW row = (JSAMPROW)(hwc + (size_t)ci->next_scanline * w * c);
        jpeg_write_scanlines(ci, &row, 1);
    }
    jpeg_finish_compress(ci);
}

af_status af_image_encode_jpeg(const uint8_t *hwc, int h, int w, int c, int quality, uint8_t **out,
                               size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    af_status st = check_out(h, w, c, "JPEG encoder input");
    if (st != AF_OK) return st;
    jpeg_enc_ctx *x = af_calloc(1, sizeof *x, "JPEG encoder");
    if (!x) return AF_ERR_NOMEM;
    jerr_setup(&x->e);
    x->ci.err = &x->e.pub;
    if (setjmp(x->e.jb)) {
        af_status err = af_errorf(AF_ERR_FORMAT, "JPEG encoding of a %d x %d x %d image failed: %s", h, w, c,
                                  x->e.msg);
        jpeg_destroy_compress(&x->ci);
        free(x->buf);
        free(x);
        return err;
    }
    jpeg_create_compress(&x->ci);
    encode_jpeg_body(x, hwc, h, w, c, quality);
    jpeg_destroy_compress(&x->ci);
    *out = x->buf;
    *out_len = x->size;
    free(x);
    return AF_OK;
}

int af_image_have_png(void)
{
#ifdef AF_HAVE_PNG
    return 1;
#else
    return 0;
#endif
}

af_status af_image_encode_png(const uint8_t *hwc, int h, int w, int c, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    af_status st = check_out(h, w, c, "PNG encoder input");
    if (st != AF_OK) return st;
#ifdef AF_HAVE_PNG
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, hwc, 0, NULL))
        return af_errorf(AF_ERR_FORMAT, "PNG encoding of a %d x %d x %d image failed: %s", h, w, c, img.message);
    uint8_t *buf = af_malloc(size, "PNG encoder output");
    if (!buf) return AF_ERR_NOMEM;
    if (!png_image_write_to_memory(&img, buf, &size, 0, hwc, 0, NULL)) {
        free(buf);
        return af_errorf(AF_ERR_FORMAT, "PNG encoding of a %d x %d x %d image failed: %s", h, w, c, img.message);
    }
    *out = buf;
    *out_len = size;
    return AF_OK;
#else
    (void)hwc;
    return af_errorf(AF_ERR_ARG, "PNG encoding requested, but this build has no libpng");
#endif
}
