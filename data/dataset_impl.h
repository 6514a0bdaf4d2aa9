/* Private to data/: the dataset object shared by the four formats, each of
 * which (ds_recordio.c, ds_folder.c, ds_fmnist.c, ds_synth.c) fills in a
 * table of operations; dataset.c does what is common (spec dispatch, shape
 * overrides, the label range check, normalisation). */
#ifndef ARCFACE_DATA_DATASET_IMPL_H
#define ARCFACE_DATA_DATASET_IMPL_H

#include "arcface/data.h"
#include "arcface/image.h"

typedef struct {
    const char *name;
    /* Pixels at the dataset's output shape (ds->h, ds->w, ds->c). */
    af_status (*get_u8)(const af_dataset *ds, int64_t i, uint8_t *hwc, int64_t *label, af_dataset_scratch *ws);
    af_status (*get_label)(const af_dataset *ds, int64_t i, int64_t *label, af_dataset_scratch *ws);
    /* NULL for formats that hold raw pixels. */
    af_status (*get_encoded)(const af_dataset *ds, int64_t i, const uint8_t **bytes, size_t *len, int64_t *label,
                             af_dataset_scratch *ws);
    void (*locate)(const af_dataset *ds, int64_t i, char *buf, size_t cap);
    void (*close)(void *impl);
} af_dataset_ops;

struct af_dataset {
    const af_dataset_ops *ops;
    void *impl;
    int64_t n;       /* images */
    int64_t classes; /* labels in [0, classes) */
    int c, h, w;     /* output shape */
    char describe[768];
};

struct af_dataset_scratch {
    af_image_decoder *dec; /* created on first use */
    uint8_t *rbuf;         /* bytes read from a file */
    size_t rcap;
    uint8_t *pbuf;         /* a split RecordIO payload, reassembled */
    size_t pcap;
    uint8_t *pix;          /* (h, w, c) pixels for af_dataset_get_ws */
    size_t pixcap;
    uint8_t *tmp;          /* format conversions before a resize */
    size_t tmpcap;
    void *rtmp;            /* resize coefficients */
    size_t rtmpcap;
};

/* Grows *p to at least `need` bytes; `what` names the buffer on failure. */
af_status af_scratch_grow(uint8_t **p, size_t *cap, size_t need, const char *what);
af_status af_scratch_decoder(af_dataset_scratch *ws, af_image_decoder **dec);

/* Converts channels and resizes raw pixels (src: (sh, sw, sc)) to the
 * dataset's output shape. */
af_status af_ds_emit_pixels(const af_dataset *ds, const uint8_t *src, int sh, int sw, int sc, uint8_t *hwc,
                            af_dataset_scratch *ws);

/* Reads a whole small file (idx, property, IDX) into a malloc'd buffer with
 * a terminating NUL (not counted in *len). */
af_status af_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Backends: each sets ds->ops, impl, n, classes and its native c, h, w. */
af_status af_ds_open_recordio(af_dataset *ds, const char *rec_path, const char *idx_path,
                              const af_dataset_opts *o);
af_status af_ds_open_folder(af_dataset *ds, const char *dir, const af_dataset_opts *o);
af_status af_ds_open_fmnist(af_dataset *ds, const char *dir, int split, const af_dataset_opts *o);
af_status af_ds_open_synthetic(af_dataset *ds, const char *params, const af_dataset_opts *o);

#endif
