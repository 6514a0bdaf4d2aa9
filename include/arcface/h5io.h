/* Small, checked helpers over the HDF5 C API for the files this project reads
 * and writes (loss inputs, models, embeddings, checkpoints). Every failure
 * names the file and the dataset or attribute, and what was expected.
 * HDF5's own error stack printing is switched off by af_h5_quiet(); our
 * messages replace it. */
#ifndef ARCFACE_H5IO_H
#define ARCFACE_H5IO_H

#include <hdf5.h>
#include <stdint.h>

#include "arcface/status.h"

#define AF_H5_MAXRANK 8

typedef enum { AF_H5_F32, AF_H5_F64, AF_H5_I64, AF_H5_I32, AF_H5_U8 } af_h5_type;

void af_h5_quiet(void);
/* The current thread's HDF5 error stack as one line (the operating system's
 * reason, e.g. "No space left on device", included where HDF5 recorded it);
 * for messages after a failed HDF5 call. Returns buf. */
const char *af_h5_error_text(char *buf, size_t cap);

/* Opens an existing file read-only (serial). On failure *out is -1. */
af_status af_h5_open_read(const char *path, hid_t *out);
/* Creates/truncates a file for writing (serial). */
af_status af_h5_create(const char *path, hid_t *out);

/* Shape of dataset `name` (rank and dims); fails if missing. */
af_status af_h5_shape(hid_t file, const char *path, const char *name, int *rank, hsize_t dims[AF_H5_MAXRANK]);

/* Reads a whole dataset into a new buffer after checking its class (float or
 * integer, matching `type`), and that its rank equals `rank` (dims returned).
 * Conversion between widths of the same class is left to HDF5. `path` is the
 * file name for messages. *out is malloc'd; the caller frees it. */
af_status af_h5_read(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                     hsize_t dims[], void **out);
/* Reads into a caller buffer whose expected dims are given; mismatch is an error. */
af_status af_h5_read_into(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                          const hsize_t dims[], void *buf);

/* Writes a dataset, creating intermediate groups ("a/b/c" creates a and a/b). */
af_status af_h5_write(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                      const hsize_t dims[], const void *buf);

int af_h5_exists(hid_t file, const char *name);
int af_h5_attr_exists(hid_t obj, const char *name);
/* Scalar attributes on object `obj` (a file or group id). */
af_status af_h5_attr_get_double(hid_t obj, const char *path, const char *name, double *v);
af_status af_h5_attr_get_i64(hid_t obj, const char *path, const char *name, int64_t *v);
af_status af_h5_attr_get_str(hid_t obj, const char *path, const char *name, char *buf, size_t cap);
af_status af_h5_attr_set_double(hid_t obj, const char *name, double v);
af_status af_h5_attr_set_i64(hid_t obj, const char *name, int64_t v);
af_status af_h5_attr_set_str(hid_t obj, const char *name, const char *v);

#endif
