/* Status codes and the per-thread error message every module reports through.
 *
 * A failing function returns a non-OK af_status and leaves a human-readable
 * message (naming the file, record, rank or field at fault and what was
 * expected) in af_errmsg(). Only main() prints it and exits. */
#ifndef ARCFACE_STATUS_H
#define ARCFACE_STATUS_H

#include <stddef.h>

typedef enum {
    AF_OK = 0,
    AF_ERR_ARG,      /* bad argument or configuration value */
    AF_ERR_IO,       /* open/read/write/fsync/rename failed */
    AF_ERR_FORMAT,   /* file or message content is malformed */
    AF_ERR_NOMEM,    /* allocation failed */
    AF_ERR_MPI,      /* an MPI call failed, or a peer reported an error */
    AF_ERR_PROTO,    /* protocol violation between ranks */
    AF_ERR_CORRUPT,  /* data decoded but failed a consistency check */
    AF_ERR_INTERRUPTED, /* stopped by a signal after a clean checkpoint */
    AF_STATUS_COUNT
} af_status;

const char *af_strerror(af_status s);

/* Sets the calling thread's message and returns s, so that
 *   return af_errorf(AF_ERR_FORMAT, "%s: dataset 'labels' has rank %d, expected 1", path, r);
 * reports and fails in one line. */
af_status af_errorf(af_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with more context ("while loading X: ..."). */
af_status af_error_wrap(af_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *af_errmsg(void);
void af_error_clear(void);

/* Checked allocation: on failure sets the message (naming what) and returns NULL. */
void *af_malloc(size_t bytes, const char *what);
void *af_calloc(size_t n, size_t size, const char *what);

#endif
