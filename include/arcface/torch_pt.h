/* PyTorch state_dict files (.pt / .pth) in the zip format torch >= 1.6
 * writes: an archive `<name>/data.pkl` (a pickle of an OrderedDict from
 * key to tensor, each tensor made by torch._utils._rebuild_tensor_v2 over a
 * storage named by a persistent id) plus one raw little-endian file per
 * storage, `<name>/data/<storage key>`.
 *
 * The pickle is read by a restricted unpickler that knows only the opcodes
 * and the few globals a state_dict needs (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2 / _rebuild_parameter, torch.*Storage); any
 * other global is refused by name, nothing is ever executed, and every size
 * and offset taken from the file is bounds- and overflow-checked. The zip is
 * read with libzip. Models saved whole (torch.save(model)) are refused: they
 * need the model's Python class. */
#ifndef ARCFACE_TORCH_PT_H
#define ARCFACE_TORCH_PT_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/status.h"

#define AF_PT_MAXDIM 8

typedef enum {
    AF_PT_FLOAT32, AF_PT_FLOAT64, AF_PT_FLOAT16, AF_PT_BFLOAT16, AF_PT_INT64, AF_PT_INT32, AF_PT_INT16,
    AF_PT_INT8, AF_PT_UINT8, AF_PT_BOOL, AF_PT_DTYPE_COUNT
} af_pt_dtype;

/* One state_dict entry, as the pickle describes it. */
typedef struct {
    char *key;                      /* NUL-terminated copy */
    af_pt_dtype dtype;
    int ndim;
    int64_t shape[AF_PT_MAXDIM];
    int64_t numel;
    char storage[64];               /* the storage's name: data/<storage> in the archive */
    int64_t storage_numel;          /* elements the storage holds, as the pickle states */
    int64_t offset;                 /* element offset of the tensor in its storage */
} af_pt_entry;

/* Bounds against hostile files (each keeps allocations around 100 MiB). */
#define AF_PT_MAX_VALUES  (1u << 22)
#define AF_PT_MAX_MEMO    (1u << 22)
#define AF_PT_MAX_ENTRIES (1u << 20)

/* Parses a data.pkl held in memory into *entries (n of them, in the file's
 * order). `what` names the data in messages. On failure nothing is returned. */
af_status af_pt_parse_pickle(const void *buf, size_t len, const char *what, af_pt_entry **entries, size_t *n);
void af_pt_entries_free(af_pt_entry *entries, size_t n);

struct zip;
typedef struct {
    char path[1024];
    struct zip *zip;
    char prefix[256];               /* "<name>/" of the archive's data.pkl */
    af_pt_entry *e;
    size_t n;
} af_pt_file;

/* Opens and parses `path`. A leading "module." on every key (a state_dict of
 * a DistributedDataParallel wrapper) is dropped. */
af_status af_pt_open(af_pt_file *f, const char *path);
const af_pt_entry *af_pt_find(const af_pt_file *f, const char *key);
/* Reads entry e's elements (contiguous, in its own dtype) into dst, which
 * holds dst_bytes; the storage file must hold exactly what the pickle says. */
af_status af_pt_read(const af_pt_file *f, const af_pt_entry *e, void *dst, size_t dst_bytes);
void af_pt_close(af_pt_file *f);

const char *af_pt_dtype_name(af_pt_dtype d);
size_t af_pt_dtype_size(af_pt_dtype d);

/* The embedding size of a backbone state_dict: the width of its last batch
 * norm (iResNet's `features`, MobileFaceNet's `features.layers.3`). */
af_status af_pt_embedding_size(const char *path, int *emb);

/* 1 when `path` starts with a zip signature (so is taken for a .pt). */
int af_pt_is_zip(const char *path);

#endif
