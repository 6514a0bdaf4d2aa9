/* Status strings and the thread-local error message (see include/arcface/status.h). */
#include "arcface/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 8 KiB: real messages come near the old 1 KiB (a resume refused in all 16
 * compared keys with a 320-byte checkpoint path is about 0.8 KiB before any
 * context is wrapped around it; a message quoting a peer's ErrorReply or a
 * list of val_targets paths can pass it); anything longer ends in a mark. */
#define ERRBUF 8192
static _Thread_local char errbuf[ERRBUF];
static const char cut_mark[] = " [... message truncated]";

/* Marks a message that did not fit, so that a cut is never mistaken for the end. */
static void mark_cut(size_t wanted)
{
    if (wanted >= sizeof errbuf) memcpy(errbuf + sizeof errbuf - sizeof cut_mark, cut_mark, sizeof cut_mark);
}

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
    int n = vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    if (n > 0) mark_cut((size_t)n);
    return s;
}

af_status af_error_wrap(af_status s, const char *fmt, ...)
{
    char prefix[1024], old[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, sizeof old);
    const char *rest = old[0] ? old : af_strerror(s);
    size_t pl = strnlen(prefix, sizeof prefix - 1), rl = strlen(rest);
    /* The prefix comes first; what does not fit is cut and marked. */
    size_t wanted = pl + 2 + rl;
    if (pl > sizeof errbuf - 3) pl = sizeof errbuf - 3;
    if (rl > sizeof errbuf - 3 - pl) rl = sizeof errbuf - 3 - pl;
    memcpy(errbuf + pl + 2, rest, rl);
    memcpy(errbuf, prefix, pl);
    memcpy(errbuf + pl, ": ", 2);
    errbuf[pl + 2 + rl] = 0;
    mark_cut(wanted);
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
