/* Status strings and the thread-local error message (see include/arcface/status.h). */
#include "arcface/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char errbuf[1024];

static const char *const names[AF_STATUS_COUNT] = {
    [AF_OK] = "ok",
    [AF_ERR_ARG] = "invalid argument",
    [AF_ERR_IO] = "I/O error",
    [AF_ERR_FORMAT] = "malformed input",
    [AF_ERR_NOMEM] = "out of memory",
    [AF_ERR_MPI] = "MPI error",
    [AF_ERR_PROTO] = "protocol error",
    [AF_ERR_CORRUPT] = "corrupt data",
    [AF_ERR_INTERRUPTED] = "interrupted",
};

const char *af_strerror(af_status s)
{
    if ((int)s < 0 || s >= AF_STATUS_COUNT) return "unknown status";
    return names[s];
}

af_status af_errorf(af_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return s;
}

af_status af_error_wrap(af_status s, const char *fmt, ...)
{
    char prefix[512], old[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    const char *rest = old[0] ? old : af_strerror(s);
    size_t pl = strnlen(prefix, sizeof prefix - 1), rl = strlen(rest);
    /* Truncation of an over-long message is acceptable; the prefix comes first. */
    if (pl > sizeof errbuf - 3) pl = sizeof errbuf - 3;
    if (rl > sizeof errbuf - 3 - pl) rl = sizeof errbuf - 3 - pl;
    memcpy(errbuf, prefix, pl);
    memcpy(errbuf + pl, ": ", 2);
    memcpy(errbuf + pl + 2, rest, rl);
    errbuf[pl + 2 + rl] = 0;
    return s;
}

const char *af_errmsg(void) { return errbuf[0] ? errbuf : "(no detail)"; }
void af_error_clear(void) { errbuf[0] = 0; }

void *af_malloc(size_t bytes, const char *what)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) af_errorf(AF_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *af_calloc(size_t n, size_t size, const char *what)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) af_errorf(AF_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}
