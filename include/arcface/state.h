/* The state registry: everything a checkpoint must hold, registered once at
 * init by the code that owns it (the worker's backbone and its optimizer, each
 * fc shard and its optimizer, the trainer's step and loader position), so that
 * ckpt/ writes and reads a list of named items and knows no owner's struct, and
 * a new buffer or optimizer cannot be forgotten by a checkpoint.
 *
 * Three kinds of item:
 *   WHOLE   a dataset held whole, identical on every rank that registers it
 *           (backbone parameters, the backbone optimizer): world rank 0 writes it,
 *           every holder reads it;
 *   ROWS    rows [row0, row0 + nrows) of a (total_rows, row_len) matrix that is
 *           split over ranks (fc weights and their optimizer state, by class):
 *           every holder writes and reads only its rows; rows beyond those in a
 *           checkpoint keep their fresh initialisation (class growth on resume);
 *   SCALAR  an int64 root attribute, equal on every rank that registers it
 *           (step counts, loader position).
 * The registry keeps pointers to the owners' memory; owners must outlive it. */
#ifndef ARCFACE_STATE_H
#define ARCFACE_STATE_H

#include <stdint.h>
#include <stdio.h>

#include "arcface/status.h"

#define AF_STATE_NAME_MAX 160
#define AF_STATE_MAXDIM 4

typedef enum { AF_STATE_WHOLE, AF_STATE_ROWS, AF_STATE_SCALAR } af_state_kind;
typedef enum { AF_STATE_F32, AF_STATE_I64 } af_state_type;

typedef struct {
    char name[AF_STATE_NAME_MAX];  /* HDF5 dataset path ("/fc/weight"), or attribute name for SCALAR */
    char owner[32];                /* who registered it, for the listing and messages */
    af_state_kind kind;
    af_state_type type;
    void *data;                    /* WHOLE: prod(shape) elements; ROWS: (nrows, row_len); SCALAR: one int64 */
    int ndim;                      /* WHOLE: 0..4; ROWS: 2 (total_rows, row_len); SCALAR: 0 */
    int64_t shape[AF_STATE_MAXDIM];
    int64_t row0, nrows;           /* ROWS only */
} af_state_item;

typedef struct {
    af_state_item *items;
    int n, cap;
} af_state;

void af_state_init(af_state *s);
void af_state_free(af_state *s);
af_status af_state_add_whole(af_state *s, const char *owner, const char *name, af_state_type type, void *data,
                             int ndim, const int64_t *shape);
/* data (nrows, row_len) float32: rows [row0, row0 + nrows) of a (total_rows, row_len) matrix. */
af_status af_state_add_rows(af_state *s, const char *owner, const char *name, float *data, int64_t total_rows,
                            int64_t row_len, int64_t row0, int64_t nrows);
af_status af_state_add_scalar(af_state *s, const char *owner, const char *name, int64_t *value);
const af_state_item *af_state_find(const af_state *s, const char *name);
/* Elements held by this rank (WHOLE: prod(shape); ROWS: nrows * row_len; SCALAR: 1). */
int64_t af_state_item_numel(const af_state_item *it);
/* One line per item: kind, name, owner, shape. */
void af_state_print(const af_state *s, FILE *f, const char *prefix);

#endif
