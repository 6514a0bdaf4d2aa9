/* training.log (include/arcface/logfile.h): stdout and stderr are replaced by
 * stdio streams (glibc fopencookie) that write to the console descriptor and to
 * the log file, so every existing printf reaches both without a logging layer
 * threaded through the code. */
#include "arcface/logfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int fd;      /* the console: a dup of the original descriptor */
    FILE *file;  /* shared by both streams */
} tee;

static ssize_t tee_write(void *cookie, const char *buf, size_t n)
{
    tee *t = cookie;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(t->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* a closed console must not stop the log file */
        done += (size_t)w;
    }
    fwrite(buf, 1, n, t->file);
    fflush(t->file);
    return (ssize_t)n;
}

static int tee_close(void *cookie)
{
    tee *t = cookie;
    return close(t->fd);
}

af_status af_log_tee(const char *dir)
{
    static tee out, err;
    char path[4096];
    snprintf(path, sizeof path, "%s/training.log", dir);
    FILE *f = fopen(path, "a");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot open the training log: %s", path, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    out = (tee){.fd = dup(STDOUT_FILENO), .file = f};
    err = (tee){.fd = dup(STDERR_FILENO), .file = f};
    if (out.fd < 0 || err.fd < 0) {
        fclose(f);
        return af_errorf(AF_ERR_IO, "%s: cannot duplicate the console descriptors: %s", path, strerror(errno));
    }
    cookie_io_functions_t io = {.write = tee_write, .close = tee_close};
    FILE *o = fopencookie(&out, "w", io), *e = fopencookie(&err, "w", io);
    if (!o || !e) {
        fclose(f);
        return af_errorf(AF_ERR_IO, "%s: cannot create the log streams", path);
    }
    setvbuf(o, NULL, _IOLBF, 0);
    setvbuf(e, NULL, _IONBF, 0);
    stdout = o;
    stderr = e;
    return AF_OK;
}
