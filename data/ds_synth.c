/* Synthetic identities: images rendered on the fly from (seed, identity,
 * image) alone, so scale tests can ask for millions of classes without a
 * byte of storage and open-set tests can hold identities or images out by
 * offset. What an identity and a nuisance are is described in
 * include/arcface/data.h ("Synthetic identities"); the renderer below is
 * the definition. An identity is a face-like layout (skin-coloured ellipse
 * on a background, two eyes, nose and mouth shading, six further
 * anisotropic blobs); an image of it is that layout on a random background
 * seen through a similarity warp with a horizontal squash (pose), a
 * gain/offset/ramp (lighting) and pixel noise. */
#include "dataset_impl.h"

#include <arcface/rng.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYN_BLOBS 10 /* 2 eyes, nose, mouth, 6 free features */

typedef struct {
    uint64_t ids, per_id, seed, id_offset, img_offset;
    int size, channels;
} synth;

typedef struct {
    float x, y;       /* centre, canonical [0,1] coordinates */
    float qa, qb, qc; /* inverse covariance: q = qa dx^2 + 2 qb dx dy + qc dy^2 */
    float reach;      /* |dx|, |dy| beyond this contribute < e^-9 */
    float col[3];
    int paint;        /* 1: blend towards col (eyes); 0: add col (shading) */
} blob;

typedef struct {
    float skin[3];
    float cx, cy, rx, ry;
    blob b[SYN_BLOBS];
} identity;

static float unif(af_rng *r, float lo, float hi) { return lo + (hi - lo) * af_rng_uniform(r); }

static void blob_set(blob *b, float x, float y, float sx, float sy, float theta)
{
    float c = cosf(theta), s = sinf(theta), ix = 1.0f / (sx * sx), iy = 1.0f / (sy * sy);
    b->x = x;
    b->y = y;
    b->qa = c * c * ix + s * s * iy;
    b->qb = c * s * (ix - iy);
    b->qc = s * s * ix + c * c * iy;
    b->reach = 3.0f * (sx > sy ? sx : sy);
}

static void make_identity(const synth *s, uint64_t id, identity *f)
{
    af_rng r;
    af_rng_seed(&r, s->seed, AF_RNG_STREAM_SYNTH, id, 0);
    float tone = unif(&r, 0.25f, 0.95f);
    const float base[3] = {200, 160, 130}, off[3] = {45, 40, 30};
    for (int k = 0; k < 3; k++) f->skin[k] = (base[k] * tone + off[k]) * (1.0f + 0.08f * af_rng_normal(&r));
    f->cx = 0.5f + 0.01f * af_rng_normal(&r);
    f->cy = unif(&r, 0.5f, 0.55f);
    f->rx = unif(&r, 0.28f, 0.36f);
    f->ry = unif(&r, 0.36f, 0.46f);
    float ex = unif(&r, 0.12f, 0.19f), ey = unif(&r, 0.36f, 0.45f), es = unif(&r, 0.025f, 0.045f);
    float eye[3];
    for (int k = 0; k < 3; k++) eye[k] = unif(&r, 10, 90);
    for (int e = 0; e < 2; e++) {
        blob *b = &f->b[e];
        blob_set(b, f->cx + (e ? ex : -ex), ey, es * 1.3f, es, 0.1f * af_rng_normal(&r));
        memcpy(b->col, eye, sizeof eye);
        b->paint = 1;
    }
    blob *nose = &f->b[2];
    blob_set(nose, f->cx, unif(&r, 0.52f, 0.6f), unif(&r, 0.02f, 0.035f), unif(&r, 0.04f, 0.07f), 0);
    float shade = -unif(&r, 15, 45);
    for (int k = 0; k < 3; k++) nose->col[k] = shade;
    nose->paint = 0;
    blob *mouth = &f->b[3];
    blob_set(mouth, f->cx, unif(&r, 0.68f, 0.78f), unif(&r, 0.06f, 0.12f), unif(&r, 0.015f, 0.03f),
             0.08f * af_rng_normal(&r));
    mouth->col[0] = unif(&r, 100, 200);
    mouth->col[1] = unif(&r, 30, 90);
    mouth->col[2] = unif(&r, 40, 100);
    mouth->paint = 1;
    for (int i = 4; i < SYN_BLOBS; i++) {
        blob *b = &f->b[i];
        float a = unif(&r, 0, 6.2831853f), d = sqrtf(af_rng_uniform(&r)) * 0.8f;
        blob_set(b, f->cx + f->rx * d * cosf(a), f->cy + f->ry * d * sinf(a), unif(&r, 0.02f, 0.08f),
                 unif(&r, 0.02f, 0.08f), unif(&r, 0, 3.1415927f));
        for (int k = 0; k < 3; k++) b->col[k] = 50.0f * af_rng_normal(&r);
        b->paint = 0;
    }
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Approximately standard normal from one 64-bit draw (Irwin-Hall, 4 terms):
 * exact Gaussian noise is not the point, and Box-Muller per pixel would
 * cost more than everything else here. */
static float noise_normal(af_rng *r)
{
    uint64_t u = af_rng_u64(r);
    float s = (float)(u & 0xffff) + (float)((u >> 16) & 0xffff) + (float)((u >> 32) & 0xffff) + (float)(u >> 48);
    return (s * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

static void render(const synth *s, int64_t index, int h, int w, int c, uint8_t *hwc)
{
    uint64_t i = (uint64_t)index / s->per_id, j = (uint64_t)index % s->per_id;
    uint64_t idg = s->id_offset + i, imgg = s->img_offset + j;
    identity f;
    make_identity(s, idg, &f);
    af_rng r;
    af_rng_seed(&r, s->seed, AF_RNG_STREAM_SYNTH, idg, 1 + imgg);
    float th = clampf(af_rng_normal(&r) * 0.1396f, -0.44f, 0.44f); /* 8 degrees, clipped at 25 */
    float sc = clampf(1.0f + 0.06f * af_rng_normal(&r), 0.8f, 1.2f);
    float yaw = clampf(1.0f + 0.08f * af_rng_normal(&r), 0.75f, 1.25f);
    float tx = 0.04f * af_rng_normal(&r), ty = 0.04f * af_rng_normal(&r);
    float gain = clampf(1.0f + 0.15f * af_rng_normal(&r), 0.5f, 1.5f), bias = 12.0f * af_rng_normal(&r);
    float phi = unif(&r, 0, 6.2831853f), ramp = 0.25f * af_rng_normal(&r);
    float sigma = unif(&r, 2, 8);
    float bg[3]; /* a nuisance, so that a background cannot stand in for an identity */
    for (int k = 0; k < 3; k++) bg[k] = unif(&r, 30, 220);
    float ct = cosf(th), st = sinf(th), isx = 1.0f / (sc * yaw), isy = 1.0f / sc;
    float rc = ramp * cosf(phi), rs = ramp * sinf(phi);
    for (int y = 0; y < h; y++) {
        float v = ((float)y + 0.5f) / (float)h;
        for (int x = 0; x < w; x++) {
            float u = ((float)x + 0.5f) / (float)w;
            float px = u - 0.5f - tx, py = v - 0.5f - ty;
            float X = (ct * px + st * py) * isx + 0.5f, Y = (-st * px + ct * py) * isy + 0.5f;
            float ex = (X - f.cx) / f.rx, ey = (Y - f.cy) / f.ry;
            float m = clampf((1.0f - sqrtf(ex * ex + ey * ey)) * 12.0f + 0.5f, 0, 1); /* soft face edge */
            float col[3];
            for (int k = 0; k < 3; k++) col[k] = bg[k] + (f.skin[k] - bg[k]) * m;
            if (m > 0) {
                for (int b = 0; b < SYN_BLOBS; b++) {
                    const blob *bl = &f.b[b];
                    float dx = X - bl->x, dy = Y - bl->y;
                    if (fabsf(dx) > bl->reach || fabsf(dy) > bl->reach) continue;
                    float q = bl->qa * dx * dx + 2.0f * bl->qb * dx * dy + bl->qc * dy * dy;
                    if (q > 18.0f) continue;
                    float g = expf(-0.5f * q) * m;
                    for (int k = 0; k < 3; k++) col[k] = bl->paint ? col[k] + (bl->col[k] - col[k]) * g : col[k] + bl->col[k] * g;
                }
            }
            float light = gain * (1.0f + rc * (u - 0.5f) + rs * (v - 0.5f));
            uint8_t *o = hwc + ((size_t)y * w + x) * c;
            if (c == 1) {
                float gy = 0.299f * col[0] + 0.587f * col[1] + 0.114f * col[2];
                o[0] = (uint8_t)clampf(gy * light + bias + sigma * noise_normal(&r) + 0.5f, 0, 255);
            } else {
                for (int k = 0; k < 3; k++)
                    o[k] = (uint8_t)clampf(col[k] * light + bias + sigma * noise_normal(&r) + 0.5f, 0, 255);
            }
        }
    }
}

static af_status syn_get_u8(const af_dataset *ds, int64_t i, uint8_t *hwc, int64_t *label, af_dataset_scratch *ws)
{
    (void)ws;
    const synth *s = ds->impl;
    render(s, i, ds->h, ds->w, ds->c, hwc);
    *label = (int64_t)((uint64_t)i / s->per_id);
    return AF_OK;
}

static af_status syn_get_label(const af_dataset *ds, int64_t i, int64_t *label, af_dataset_scratch *ws)
{
    (void)ws;
    *label = (int64_t)((uint64_t)i / ((const synth *)ds->impl)->per_id);
    return AF_OK;
}

static void syn_locate(const af_dataset *ds, int64_t i, char *buf, size_t cap)
{
    const synth *s = ds->impl;
    snprintf(buf, cap, "synthetic identity %" PRIu64 " image %" PRIu64 " (seed %" PRIu64 ")",
             s->id_offset + (uint64_t)i / s->per_id, s->img_offset + (uint64_t)i % s->per_id, s->seed);
}

static void syn_close(void *impl) { free(impl); }

static const af_dataset_ops syn_ops = {
    .name = "synthetic",
    .get_u8 = syn_get_u8,
    .get_label = syn_get_label,
    .get_encoded = NULL,
    .locate = syn_locate,
    .close = syn_close,
};

af_status af_ds_open_synthetic(af_dataset *ds, const char *params, const af_dataset_opts *o)
{
    (void)o;
    synth *s = af_calloc(1, sizeof *s, "synthetic dataset");
    if (!s) return AF_ERR_NOMEM;
    *s = (synth){.ids = 1000, .per_id = 20, .seed = 1, .size = 112, .channels = 3};
    const char *p = params;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char key[32];
        unsigned long long v = 0;
        char *stop = NULL;
        size_t kl = eq ? (size_t)(eq - p) : len;
        snprintf(key, sizeof key, "%.*s", (int)(kl < sizeof key - 1 ? kl : sizeof key - 1), p);
        if (eq) v = strtoull(eq + 1, &stop, 10);
        if (!eq || stop != p + len || eq + 1 == stop || eq[1] == '-') {
            free(s);
            return af_errorf(AF_ERR_ARG, "synthetic spec '%s': '%.*s' is not KEY=non-negative integer", params,
                             (int)len, p);
        }
        if (!strcmp(key, "ids")) s->ids = v;
        else if (!strcmp(key, "per_id")) s->per_id = v;
        else if (!strcmp(key, "size")) s->size = v > 100000 ? 0 : (int)v;
        else if (!strcmp(key, "channels")) s->channels = v > 3 ? 0 : (int)v;
        else if (!strcmp(key, "seed")) s->seed = v;
        else if (!strcmp(key, "id_offset")) s->id_offset = v;
        else if (!strcmp(key, "img_offset")) s->img_offset = v;
        else {
            free(s);
            return af_errorf(AF_ERR_ARG,
                             "synthetic spec '%s': unknown key '%s', expected ids, per_id, size, channels, seed, "
                             "id_offset, img_offset",
                             params, key);
        }
        p += len + (end ? 1 : 0);
    }
    if (s->ids < 1 || s->per_id < 1 || s->ids > ((uint64_t)1 << 62) / s->per_id || s->size < 8 || s->size > 4096 ||
        (s->channels != 1 && s->channels != 3)) {
        free(s);
        return af_errorf(AF_ERR_ARG,
                         "synthetic spec '%s': expected ids >= 1, per_id >= 1, ids * per_id <= 2^62, size in "
                         "8..4096, channels 1 or 3",
                         params);
    }
    ds->ops = &syn_ops;
    ds->impl = s;
    ds->n = (int64_t)(s->ids * s->per_id);
    ds->classes = (int64_t)s->ids;
    ds->c = s->channels;
    ds->h = ds->w = s->size;
    snprintf(ds->describe, sizeof ds->describe,
             "synthetic ids=%" PRIu64 " per_id=%" PRIu64 " size=%d channels=%d seed=%" PRIu64 " id_offset=%" PRIu64
             " img_offset=%" PRIu64 ": %" PRId64 " images, %" PRId64 " classes",
             s->ids, s->per_id, s->size, s->channels, s->seed, s->id_offset, s->img_offset, ds->n, ds->classes);
    return AF_OK;
}
