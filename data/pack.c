/* af_recordio_pack: any dataset to an insightface-layout RecordIO pair, as
 * insightface's own packing lays it out (record 0 header, image records
 * grouped by identity, identity records with [start, end) key ranges), so
 * that MXFaceDataset, DALI-free PyTorch loaders and this project all read
 * the result. Images that are already encoded files are copied byte for
 * byte: re-encoding a JPEG only loses quality. */
#include "dataset_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

af_status af_recordio_pack(const af_dataset *src, const char *out_prefix, const af_pack_opts *opts,
                           int64_t *images_out, int64_t *classes_out)
{
    af_pack_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    int quality = o.quality ? o.quality : 95;
    int64_t n = af_dataset_size(src), C = af_dataset_num_classes(src);
    int c, h, w;
    af_dataset_shape(src, &c, &h, &w);
    af_status st = AF_ERR_NOMEM;
    af_recordio_writer *wr = NULL;
    af_dataset_scratch *ws = NULL;
    int64_t *labels = NULL, *order = NULL, *start = NULL;
    uint8_t *pix = NULL, *enc = NULL;
    if ((st = af_dataset_scratch_init(&ws)) != AF_OK) goto fail;
    st = AF_ERR_NOMEM;
    labels = af_malloc((size_t)n * sizeof *labels, "pack labels");
    order = af_malloc((size_t)n * sizeof *order, "pack order");
    start = af_calloc((size_t)C + 1, sizeof *start, "pack class starts");
    pix = af_malloc((size_t)c * h * w, "pack pixels");
    if (!labels || !order || !start || !pix) goto fail;

    /* Counting sort by label: stable, so a class keeps its source order. */
    for (int64_t i = 0; i < n; i++) {
        if ((st = af_dataset_get_label(src, i, &labels[i], ws)) != AF_OK) goto fail;
        start[labels[i] + 1]++;
    }
    for (int64_t k = 0; k < C; k++) start[k + 1] += start[k];
    {
        int64_t *fill = af_malloc((size_t)C * sizeof *fill, "pack fill");
        if (!fill) {
            st = AF_ERR_NOMEM;
            goto fail;
        }
        memcpy(fill, start, (size_t)C * sizeof *fill);
        for (int64_t i = 0; i < n; i++) order[fill[labels[i]]++] = i;
        free(fill);
    }

    if ((st = af_recordio_writer_open(&wr, out_prefix)) != AF_OK) goto fail;
    float hdr[2] = {(float)(n + 1), (float)(n + 1 + C)};
    if ((st = af_recordio_writer_put(wr, 0, 2, 0.0f, hdr, 0, 0, NULL, 0)) != AF_OK) goto fail;
    int encoded = strcmp(af_dataset_format(src), "recordio") == 0 || strcmp(af_dataset_format(src), "folder") == 0;
    for (int64_t r = 0; r < n; r++) {
        int64_t i = order[r], key = r + 1, label;
        const uint8_t *bytes;
        size_t len;
        if (encoded) {
            st = af_dataset_get_encoded(src, i, &bytes, &len, &label, ws);
        } else {
            st = af_dataset_get_u8(src, i, pix, &label, ws);
            free(enc);
            enc = NULL;
            if (st == AF_OK)
                st = (c == 1 && !o.no_png && af_image_have_png()) ? af_image_encode_png(pix, h, w, c, &enc, &len)
                                                                  : af_image_encode_jpeg(pix, h, w, c, quality, &enc, &len);
            bytes = enc;
        }
        if (st != AF_OK) {
            char loc[512];
            af_dataset_locate(src, i, loc, sizeof loc);
            af_error_wrap(st, "packing image %" PRId64 " (%s)", i, loc);
            goto fail;
        }
        if ((st = af_recordio_writer_put(wr, key, 0, (float)label, NULL, (uint64_t)key, 0, bytes, len)) != AF_OK)
            goto fail;
        if (o.progress && ((r + 1) % 1000 == 0 || r + 1 == n)) o.progress(r + 1, n, o.progress_arg);
    }
    for (int64_t k = 0; k < C; k++) {
        int64_t key = n + 1 + k;
        float range[2] = {(float)(start[k] + 1), (float)(start[k + 1] + 1)};
        if ((st = af_recordio_writer_put(wr, key, 2, 0.0f, range, (uint64_t)key, 0, NULL, 0)) != AF_OK) goto fail;
    }
    st = af_recordio_writer_commit(wr);
    wr = NULL;
    if (st != AF_OK) goto fail;
    if (images_out) *images_out = n;
    if (classes_out) *classes_out = C;
fail:
    af_recordio_writer_abort(wr);
    af_dataset_scratch_free(ws);
    free(labels);
    free(order);
    free(start);
    free(pix);
    free(enc);
    return st;
}
