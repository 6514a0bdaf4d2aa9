/* Training data: the datasets face recognition ships (insightface RecordIO,
 * image folders), Fashion-MNIST for the built-in job, deterministic synthetic
 * identities for scale and open-set tests, and the loader that shuffles,
 * shards, decodes and normalises them in background threads.
 *
 * Four layers, each usable alone:
 *   1. af_dataset   - "image i": its label and its normalised float pixels.
 *   2. af_epoch_perm / af_sampler_* - which dataset index a worker takes at
 *      step k of epoch e: pure functions of (seed, epoch, position).
 *   3. af_loader    - layers 1 and 2 plus decode threads and a ring of ready
 *      batches.
 *   4. af_recordio_* - the MXNet RecordIO container (frames, IRHeader, .idx)
 *      and a writer, used by the dataset, `arcface-data pack` and the fuzzer.
 *
 * ---- Dataset specs (af_dataset_open) ------------------------------------
 *   DIR                    DIR/train.rec + DIR/train.idx (insightface layout),
 *                          else a Fashion-MNIST directory if it holds
 *                          train-images-idx3-ubyte[.gz], else an image folder
 *   PREFIX.rec | PREFIX    PREFIX.rec + PREFIX.idx
 *   recordio:PATH          RecordIO, as above, without guessing
 *   folder:DIR             DIR/<identity>/<image>.{jpg,jpeg,png}
 *   fmnist:DIR             Fashion-MNIST training split (60,000 images)
 *   fmnist-test:DIR        Fashion-MNIST test split (t10k, 10,000 images)
 *   DIR/train-images-idx3-ubyte.gz (or any of the four IDX files): that split
 *   synthetic:K=V,...      generated identities; keys (defaults): ids (1000),
 *                          per_id (20), size (112), channels (3), seed (1),
 *                          id_offset (0), img_offset (0); see "Synthetic".
 * The main job's default is "fmnist:/usr/share/datasets/fashion-mnist".
 *
 * ---- RecordIO datasets --------------------------------------------------
 * As insightface's MXFaceDataset reads them: if record 0 has flag > 0 its
 * labels (a, b) say that keys 1 .. a-1 are images and keys a .. b-1 identity
 * records ([start, end) key ranges, no image); otherwise every key in the
 * .idx is an image (a record 0 that holds image bytes is an image, whatever
 * its flag). The label is the IRHeader label (the first of the flag float
 * labels when flag > 0). Classes: opts.num_classes, else `property` beside
 * the .rec ("num_classes,h,w", as insightface ships it), else the number of
 * identity records, else one pass reading the first 64 bytes of every
 * record for the largest label + 1 (plain im2rec files).
 * a and b are float32, so above 2^24 keys they are rounded: the boundary is
 * corrected by looking at the records next to it.
 *
 * ---- Image folders ------------------------------------------------------
 * One sub-folder per identity; label = rank of the folder name in byte-wise
 * sorted order (Python's sorted(), torchvision's ImageFolder). Images are
 * *.jpg, *.jpeg, *.png (any case), sorted by name inside a folder; hidden
 * files and other files are ignored; an empty folder is still a class, so
 * that labels do not depend on which folders happen to hold images.
 *
 * ---- Fashion-MNIST ------------------------------------------------------
 * The four IDX files as published (gzip or not), 28 x 28 grey, 10 classes.
 *
 * ---- Synthetic identities ------------------------------------------------
 * Image j of identity i (label i, i < ids, j < per_id, index i*per_id + j) is
 * rendered from two random draws, both pure functions of the spec:
 *   identity (seed, id_offset + i): skin colour, the face ellipse's size,
 *     the eyes' spacing/height/size/colour, nose and mouth shape, and 6
 *     further anisotropic "feature" blobs (position, size, orientation,
 *     colour);
 *   nuisance (seed, id_offset + i, img_offset + j): a background colour; a
 *     pose-like warp (rotation ~ N(0, 8 deg), scale ~ 1 + N(0, 0.06), a
 *     horizontal squash like a yaw ~ 1 + N(0, 0.08), shift ~ N(0, 0.04) of
 *     the size); lighting (gain ~ 1 + N(0, 0.15), offset ~ N(0, 12) grey
 *     levels, a linear shading ramp of random direction and strength
 *     ~ N(0, 0.25)); per-pixel noise with sigma uniform in [2, 8] levels.
 * Nothing is stored per identity, so ids may be in the millions. Identity
 * i of a spec with id_offset=k is identity k+i of the same spec without
 * it, and image j with img_offset=m is image m+j: open-set tests train on
 * ids=1000 and evaluate on id_offset=1000 (identities never seen), or on
 * img_offset=per_id (unseen images of seen identities).
 *
 * ---- Thread safety -------------------------------------------------------
 * An open af_dataset is immutable: any number of threads may call the get
 * functions at once, each with its own af_dataset_scratch (files are read
 * with pread, never through a shared offset).
 *
 * ---- Errors -------------------------------------------------------------
 * Corrupt data (bad magic, a length past the end of the file, a truncated
 * record, an idx entry pointing nowhere, an undecodable image, a label
 * outside [0, num_classes)) is reported when that image is read, with
 * status AF_ERR_FORMAT or AF_ERR_CORRUPT and a message naming the file, the
 * key and the byte offset, so that the loader can skip it. Problems that
 * make the whole dataset unusable (missing files, an unparseable .idx line,
 * an unreadable record 0) fail af_dataset_open. */
#ifndef ARCFACE_DATA_H
#define ARCFACE_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/status.h"

/* ========================================================================
 * 1. Datasets
 * ======================================================================== */

typedef struct af_dataset af_dataset;

enum af_dataset_split { AF_DATASET_SPLIT_TRAIN = 0, AF_DATASET_SPLIT_TEST = 1 };

/* Zero-initialised means "everything native / detected". */
typedef struct {
    int height, width; /* output size; 0 = the dataset's own (first image's for files) */
    int channels;      /* 1 (grey) or 3 (RGB); 0 = the dataset's own */
    int split;         /* af_dataset_split, for a Fashion-MNIST DIR without prefix */
    int64_t num_classes; /* > 0: use this instead of detecting it */
} af_dataset_opts;

/* Opens `spec` (see the top of this file). opts may be NULL. */
af_status af_dataset_open(af_dataset **out, const char *spec, const af_dataset_opts *opts);
void af_dataset_close(af_dataset *ds);

int64_t af_dataset_size(const af_dataset *ds);        /* number of images */
int64_t af_dataset_num_classes(const af_dataset *ds); /* labels are in [0, this) */
void af_dataset_shape(const af_dataset *ds, int *c, int *h, int *w);
/* "recordio", "folder", "fmnist" or "synthetic". */
const char *af_dataset_format(const af_dataset *ds);
/* One line for logs: format, path or spec, and format-specific detail. */
const char *af_dataset_describe(const af_dataset *ds);
/* Where image `index` lives, for messages: "FILE key K at offset O",
 * "DIR/identity/file.jpg", "IDX-FILE image I", or the synthetic (id, image). */
void af_dataset_locate(const af_dataset *ds, int64_t index, char *buf, size_t cap);

/* Per-thread buffers (read buffer, decoder, pixels); allocation stops once
 * they have grown to the largest record. */
typedef struct af_dataset_scratch af_dataset_scratch;
af_status af_dataset_scratch_init(af_dataset_scratch **out);
void af_dataset_scratch_free(af_dataset_scratch *ws);

/* The model input for image `index`: chw (C, H, W) = (x/255 - 0.5)/0.5 of the
 * decoded (and, if flip, horizontally mirrored) image; *label its class.
 * Thread-safe. af_dataset_get allocates a scratch per call (convenience);
 * the loader uses af_dataset_get_ws. */
af_status af_dataset_get(const af_dataset *ds, int64_t index, float *chw, int64_t *label, int flip);
af_status af_dataset_get_ws(const af_dataset *ds, int64_t index, float *chw, int64_t *label, int flip,
                            af_dataset_scratch *ws);
/* The decoded 8-bit pixels, hwc (H, W, C), before flip and normalisation. */
af_status af_dataset_get_u8(const af_dataset *ds, int64_t index, uint8_t *hwc, int64_t *label,
                            af_dataset_scratch *ws);
/* The label alone (RecordIO: reads the record header, decodes nothing). */
af_status af_dataset_get_label(const af_dataset *ds, int64_t index, int64_t *label, af_dataset_scratch *ws);
/* The stored encoded image (RecordIO payload or folder file), without
 * decoding; *bytes points into ws until its next use. AF_ERR_ARG for
 * datasets that store raw pixels (fmnist, synthetic). */
af_status af_dataset_get_encoded(const af_dataset *ds, int64_t index, const uint8_t **bytes, size_t *len,
                                 int64_t *label, af_dataset_scratch *ws);

/* ========================================================================
 * 2. Epoch order and the worker split
 *
 * N samples, W workers, b samples per worker and step, G = b*W.
 * Epoch e visits the positions p = 0, 1, ... of a pseudo-random permutation
 * perm_e of [0, N) keyed by (seed, e). Global batch k is positions
 * [k*G, (k+1)*G); worker w takes the contiguous chunk [k*G + w*b,
 * k*G + (w+1)*b). So concatenating the W local batches in worker order gives
 * exactly the batch one process with batch G gets, and a run may resume
 * with another W as long as G is unchanged. (Over the epoch each worker
 * takes every W-th chunk of b: DistributedSampler's "every W-th", at chunk
 * rather than sample granularity, which is what makes the concatenation
 * exact.)
 * Tail: with drop_last the epoch is floor(N/G) global batches; without it,
 * ceil(N/G), and positions p >= N take perm_e(p mod N) (DistributedSampler's
 * wrap-around padding), so every worker gets the same number of steps.
 * Flip: image at position p of epoch e is flipped iff
 * af_sampler_flip(seed, e, p), whoever decodes it.
 * ======================================================================== */

/* perm_e: a 6-round Feistel network keyed by (seed, epoch) on the smallest
 * power of 4 >= n, cycle-walked into [0, n). Bijective, O(1) per query and
 * O(1) memory, so 100-million-image epochs cost nothing to "shuffle". */
typedef struct {
    int64_t n;
    int half_bits;
    uint64_t half_mask;
    uint64_t keys[6];
} af_epoch_perm;

void af_epoch_perm_init(af_epoch_perm *p, uint64_t seed, int64_t epoch, int64_t n);
/* perm_e(pos) for 0 <= pos < n. */
int64_t af_epoch_perm_at(const af_epoch_perm *p, int64_t pos);

/* Positions per epoch: floor or ceil(n / global_batch) * global_batch. */
int64_t af_sampler_epoch_positions(int64_t n, int64_t global_batch, int drop_last);
/* The dataset index at (possibly padded) position pos of the epoch. */
int64_t af_sampler_index(const af_epoch_perm *p, int64_t pos);
/* Whether the image at position pos of epoch `epoch` is mirrored (p = 0.5). */
int af_sampler_flip(uint64_t seed, int64_t epoch, int64_t pos);

/* ========================================================================
 * 3. The loader
 * ======================================================================== */

typedef struct af_loader af_loader;

typedef struct {
    int batch;          /* b, images per worker per step          (same on all ranks) */
    int world;          /* W, number of data-parallel workers     (same on all ranks) */
    int rank;           /* w, this worker, 0 <= w < W             (per rank) */
    uint64_t seed;      /*                                        (same on all ranks) */
    int64_t start_epoch; /*                                       (same on all ranks) */
    int64_t start_pos;  /* global samples of start_epoch already consumed; a multiple
                           of G = b*W. Checkpoints store af_loader_position(). (same) */
    int drop_last;      /*                                        (same on all ranks) */
    int flip;           /* random horizontal flip, p = 0.5        (same on all ranks) */
    int skip_corrupt;   /* replace a corrupt image by the next good index (i+1, i+2,
                           ... mod N; at most 64 tries) and count it, instead of
                           failing the batch                    (same on all ranks) */
    int threads;        /* decode threads; 0 = decode inside af_loader_next (per rank) */
    int prefetch;       /* ready batches kept ahead; 0 = 2 + threads/4 (per rank) */
} af_loader_config;

/* ds must stay open until af_loader_close. Fails if the config is
 * inconsistent or, with drop_last, the dataset is smaller than one global
 * batch. Starts the decode threads. */
af_status af_loader_open(af_loader **out, af_dataset *ds, const af_loader_config *cfg);

/* Blocks until this worker's next local batch is decoded and copies it out:
 * images (b, C, H, W), labels (b), index_out (b; optional, may be NULL): the
 * dataset index of each image (after skip_corrupt substitution).
 * A corrupt image without skip_corrupt fails exactly the batch holding it
 * (not an earlier one, whatever the threads did), with the dataset's
 * message; the loader then stays failed. */
af_status af_loader_next(af_loader *ld, float *images, int64_t *labels, int64_t *index_out);

/* Stops and joins the threads. */
void af_loader_close(af_loader *ld);

/* Where the next af_loader_next() will read: checkpoint these two and
 * reopen with start_epoch / start_pos to continue with the same samples. */
int64_t af_loader_epoch(const af_loader *ld);
int64_t af_loader_position(const af_loader *ld);
int64_t af_loader_steps_per_epoch(const af_loader *ld);

typedef struct {
    double wait_s;           /* time af_loader_next spent blocked on data, cumulative */
    int64_t batches;         /* batches returned */
    int64_t corrupt_skipped; /* corrupt images replaced (skip_corrupt), cumulative */
    char last_corrupt[512];  /* the message of the latest one, "" if none */
    double decode_cpu_s;     /* CPU time of the decode threads (inline decoding: 0, it is in wait_s), cumulative */
} af_loader_stats;

void af_loader_get_stats(af_loader *ld, af_loader_stats *st);

/* ========================================================================
 * 4. MXNet RecordIO
 *
 * A record is one or more frames: magic 0xced7230a (u32 LE), a length word
 * (u32 LE: upper 3 bits cflag, lower 29 bits length), `length` payload
 * bytes, zero padding to a multiple of 4. cflag 0 = a whole record; 1, 2, 3 =
 * first, middle, last part of a record that the writer split where its
 * payload held the magic word at a 4-aligned offset: the reader puts the
 * magic back between parts. The payload of an image record is the 24-byte
 * IRHeader {u32 flag; f32 label; u64 id; u64 id2}, then `flag` f32 labels
 * when flag > 0, then the image bytes. The .idx is text lines "key\toffset".
 * ======================================================================== */

#define AF_RECORDIO_MAGIC 0xced7230aU
#define AF_RECORDIO_MAX_LEN ((1u << 29) - 1) /* per frame */
#define AF_RECORDIO_MAX_RECORD (1u << 29)    /* reassembled; we refuse more */
#define AF_IRHEADER_SIZE 24

typedef struct {
    size_t consumed;    /* file bytes of the record: frame headers, payload, padding */
    size_t payload_len; /* reassembled payload bytes */
    int parts;          /* frames; 1 = payload is buf + 8 as is */
    size_t need;        /* non-zero: buf ends too soon, at least this many bytes are needed */
} af_recordio_frame;

/* Walks the frames of the record starting at buf[0]. AF_OK with f->need == 0
 * means complete; AF_OK with f->need > avail means read more and call again.
 * Bad magic, a bad cflag sequence or an oversized record: AF_ERR_FORMAT,
 * naming `what` and the byte offset within the record. */
af_status af_recordio_frame_scan(const uint8_t *buf, size_t avail, af_recordio_frame *f, const char *what);
/* Reassembles the payload of a scanned record (f->payload_len bytes). */
void af_recordio_frame_copy(const uint8_t *buf, const af_recordio_frame *f, uint8_t *payload);

typedef struct {
    uint32_t flag;
    float label;          /* as stored: 0 when flag > 0 in MXNet's pack() */
    uint64_t id, id2;
    const uint8_t *labels; /* flag f32 labels (unaligned) when flag > 0, else NULL */
    const uint8_t *data;  /* what follows: the image */
    size_t data_len;
} af_irheader;

af_status af_irheader_parse(const uint8_t *payload, size_t len, af_irheader *h, const char *what);
/* The class: labels[0] if flag > 0, else label. */
float af_irheader_class(const af_irheader *h);
float af_irheader_label_at(const af_irheader *h, uint32_t i); /* i < flag */

typedef struct {
    int64_t key;
    uint64_t offset;
} af_recordio_idx_entry;

/* Parses .idx text ("key<TAB>offset" lines; spaces accepted, blank lines and
 * a missing final newline too). *entries is malloc'd, in file order.
 * A malformed line is AF_ERR_FORMAT naming `file` and the line number. */
af_status af_recordio_idx_parse(const char *text, size_t len, af_recordio_idx_entry **entries, size_t *n,
                                const char *file);

/* Writes PREFIX.rec and PREFIX.idx through temporary files that
 * af_recordio_writer_commit fsyncs and renames into place (then fsyncs the
 * directory), so an interrupted pack never leaves a half dataset. */
typedef struct af_recordio_writer af_recordio_writer;
af_status af_recordio_writer_open(af_recordio_writer **out, const char *prefix);
/* One record: IRHeader {flag, label, id, id2}, flag labels, data. */
af_status af_recordio_writer_put(af_recordio_writer *w, int64_t key, uint32_t flag, float label,
                                 const float *labels, uint64_t id, uint64_t id2, const uint8_t *data,
                                 size_t len);
/* One record with an arbitrary payload (split at magic words like MXNet). */
af_status af_recordio_writer_put_raw(af_recordio_writer *w, int64_t key, const uint8_t *payload, size_t len);
af_status af_recordio_writer_commit(af_recordio_writer *w); /* frees w */
void af_recordio_writer_abort(af_recordio_writer *w);       /* removes the temporaries, frees w */

/* ---- Packing (arcface-data pack) -------------------------------------- */

typedef struct {
    int quality;  /* JPEG quality for images that are not stored encoded; 0 = 95 */
    int no_png;   /* store grey images as JPEG too (default: lossless PNG) */
    void (*progress)(int64_t done, int64_t total, void *arg);
    void *progress_arg;
} af_pack_opts;

/* Writes src as an insightface RecordIO dataset: record 0 (flag 2, labels
 * (N+1, N+1+C)), image keys 1..N grouped by class in ascending order
 * (stable within a class), then one identity record per class (key N+1+c,
 * flag 2, labels (first key, last key + 1)). Encoded sources (RecordIO,
 * folders) are copied byte for byte; raw ones are encoded (JPEG, or PNG for
 * grey). opts may be NULL. */
af_status af_recordio_pack(const af_dataset *src, const char *out_prefix, const af_pack_opts *opts,
                           int64_t *images_out, int64_t *classes_out);

#endif
