/* Image decoding for training and evaluation: JPEG (libjpeg-turbo) and PNG
 * (libpng) bytes in, 8-bit HWC pixels of the size the network wants out,
 * plus the one normalisation every model input goes through.
 *
 * The training loader decodes millions of small JPEGs, so the hot path is a
 * reusable af_image_decoder (one per thread: it keeps the libjpeg state and
 * the scratch buffers between images and allocates nothing after warm-up).
 * af_image_decode() is the one-shot convenience form for cold paths such as
 * the evaluation code reading insightface .bin verification files.
 *
 * Conventions shared by every function here:
 *  - pixels are uint8, row-major HWC, channels RGB (c == 3) or grey (c == 1);
 *  - a resize is bilinear with half-pixel centres (PyTorch's
 *    interpolate(mode="bilinear", align_corners=False, antialias=False), and
 *    OpenCV's INTER_LINEAR), rounded to the nearest integer;
 *  - `what` names the image in error messages ("train.rec key 17 at offset
 *    4096"), so a failure says which record is bad;
 *  - bad bytes never crash: a truncated or corrupt JPEG (any libjpeg
 *    corrupt-data warning, not only its fatal errors), an unknown format or an
 *    image larger than AF_IMAGE_MAX_PIXELS returns AF_ERR_FORMAT.
 * All functions are thread-safe given distinct decoders. */
#ifndef ARCFACE_IMAGE_H
#define ARCFACE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/status.h"

/* Decoded images above this many pixels are refused: a 24-byte header could
 * otherwise claim 65535 x 65535 and make a decoder allocate 12 GiB. */
#define AF_IMAGE_MAX_PIXELS (1L << 25)

typedef enum { AF_IMAGE_FORMAT_UNKNOWN = 0, AF_IMAGE_FORMAT_JPEG, AF_IMAGE_FORMAT_PNG } af_image_format;

/* Format by magic bytes (JPEG: FF D8 FF; PNG: 89 'P' 'N' 'G' 0D 0A 1A 0A). */
af_image_format af_image_sniff(const uint8_t *buf, size_t len);

/* Size and channel count (1 for grey, 3 otherwise) stored in the header,
 * without decoding the pixels. */
af_status af_image_probe(const uint8_t *buf, size_t len, int *h, int *w, int *c, const char *what);

/* The one-shot decode the evaluation code uses: JPEG or PNG by magic, to RGB
 * of out_h x out_w, resized bilinearly if the stored size differs.
 * rgb: (out_h, out_w, 3). Allocates a temporary decoder. */
af_status af_image_decode(const uint8_t *buf, size_t len, int out_h, int out_w, uint8_t *rgb,
                          const char *what);

typedef struct af_image_decoder af_image_decoder;

af_status af_image_decoder_init(af_image_decoder **out);
void af_image_decoder_free(af_image_decoder *d);

/* Decodes to out_c channels (1 or 3; libjpeg/libpng do the colour
 * conversion) at out_h x out_w. hwc: (out_h, out_w, out_c). */
af_status af_image_decoder_decode(af_image_decoder *d, const uint8_t *buf, size_t len, int out_h,
                                  int out_w, int out_c, uint8_t *hwc, const char *what);

/* Bilinear resize (half-pixel centres, see above). src: (sh, sw, c), dst:
 * (dh, dw, c). `tmp` holds (dw * 2) ints and (dw + dh) floats worth of
 * coefficients: pass af_image_resize_tmp_bytes(dh, dw) bytes, or NULL to let
 * the function allocate (then it can fail with AF_ERR_NOMEM). */
size_t af_image_resize_tmp_bytes(int dh, int dw);
af_status af_image_resize(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh, int dw,
                          void *tmp);

/* Grey <-> RGB for pixel buffers that did not come through a decoder (IDX
 * files, synthetic images). RGB to grey uses ITU-R BT.601 weights. */
void af_image_convert_channels(const uint8_t *src, int h, int w, int src_c, uint8_t *dst, int dst_c);

/* The model input: dst[ch][y][x] = (src[y][x'][ch] / 255 - 0.5) / 0.5 with
 * x' = flip ? w-1-x : x, computed in float32 in exactly this order so that
 * it matches torchvision's ToTensor + Normalize(0.5, 0.5) bit for bit.
 * src: (h, w, c) uint8; dst: (c, h, w) float. */
void af_image_normalize_chw(const uint8_t *src, int h, int w, int c, int flip, float *dst);

/* Encoders, used by `arcface-data pack` for sources that are not files
 * already (IDX, synthetic) and by tests and benchmarks to make inputs.
 * *out is malloc'd; the caller frees it. */
af_status af_image_encode_jpeg(const uint8_t *hwc, int h, int w, int c, int quality, uint8_t **out,
                               size_t *out_len);
/* Fails with AF_ERR_ARG when the build has no libpng. */
af_status af_image_encode_png(const uint8_t *hwc, int h, int w, int c, uint8_t **out, size_t *out_len);
/* Whether PNG support was compiled in. */
int af_image_have_png(void);

#endif
