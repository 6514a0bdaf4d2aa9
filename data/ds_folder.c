/* Image-folder datasets: ROOT/<identity>/<image>.{jpg,jpeg,png}, labels by
 * byte-wise sorted folder name (the order torchvision's ImageFolder and
 * Python's sorted() give, so labels agree with PyTorch tooling). Paths are
 * kept in one string pool relative to ROOT and opened with openat() against
 * a directory descriptor held for the dataset's lifetime. */
#include "dataset_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define FOLDER_MAX_FILE (256u << 20)

typedef struct {
    char *root;
    int dirfd;
    char *pool;       /* "identity/file\0" strings */
    size_t *name_off; /* (n) into pool */
    int64_t *labels;  /* (n) */
} folder;

static void folder_locate(const af_dataset *ds, int64_t i, char *buf, size_t cap)
{
    const folder *f = ds->impl;
    snprintf(buf, cap, "%s/%s", f->root, f->pool + f->name_off[i]);
}

static af_status folder_read(const af_dataset *ds, int64_t i, af_dataset_scratch *ws, size_t *len, char *what,
                             size_t wcap)
{
    const folder *f = ds->impl;
    folder_locate(ds, i, what, wcap);
    af_status st;
    int fd = openat(f->dirfd, f->pool + f->name_off[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", what, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot stat: %s", what, strerror(errno));
        goto done;
    }
    if (sb.st_size <= 0 || (uint64_t)sb.st_size > FOLDER_MAX_FILE) {
        st = af_errorf(AF_ERR_FORMAT, "%s: %lld bytes, expected 1 to %u", what, (long long)sb.st_size, FOLDER_MAX_FILE);
        goto done;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    if ((st = af_scratch_grow(&ws->rbuf, &ws->rcap, n, "image file buffer")) != AF_OK) goto done;
    while (got < n) {
        ssize_t k = pread(fd, ws->rbuf + got, n - got, (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            st = af_errorf(AF_ERR_IO, "%s: read failed at offset %zu of %zu: %s", what, got, n,
                           k < 0 ? strerror(errno) : "file shrank");
            goto done;
        }
        got += (size_t)k;
    }
    *len = n;
done:
    close(fd);
    return st;
}

static af_status folder_get_u8(const af_dataset *ds, int64_t i, uint8_t *hwc, int64_t *label,
                               af_dataset_scratch *ws)
{
    const folder *f = ds->impl;
    char what[1024];
    size_t len = 0;
    af_status st = folder_read(ds, i, ws, &len, what, sizeof what);
    if (st != AF_OK) return st;
    af_image_decoder *dec;
    if ((st = af_scratch_decoder(ws, &dec)) != AF_OK) return st;
    *label = f->labels[i];
    return af_image_decoder_decode(dec, ws->rbuf, len, ds->h, ds->w, ds->c, hwc, what);
}

static af_status folder_get_label(const af_dataset *ds, int64_t i, int64_t *label, af_dataset_scratch *ws)
{
    (void)ws;
    *label = ((const folder *)ds->impl)->labels[i];
    return AF_OK;
}

static af_status folder_get_encoded(const af_dataset *ds, int64_t i, const uint8_t **bytes, size_t *len,
                                    int64_t *label, af_dataset_scratch *ws)
{
    char what[1024];
    af_status st = folder_read(ds, i, ws, len, what, sizeof what);
    if (st != AF_OK) return st;
    if (af_image_sniff(ws->rbuf, *len) == AF_IMAGE_FORMAT_UNKNOWN)
        return af_errorf(AF_ERR_FORMAT, "%s: neither JPEG nor PNG", what);
    *bytes = ws->rbuf;
    *label = ((const folder *)ds->impl)->labels[i];
    return AF_OK;
}

static void folder_close(void *impl)
{
    folder *f = impl;
    if (!f) return;
    if (f->dirfd >= 0) close(f->dirfd);
    free(f->root);
    free(f->pool);
    free(f->name_off);
    free(f->labels);
    free(f);
}

static const af_dataset_ops folder_ops = {
    .name = "folder",
    .get_u8 = folder_get_u8,
    .get_label = folder_get_label,
    .get_encoded = folder_get_encoded,
    .locate = folder_locate,
    .close = folder_close,
};

/* ---- scanning ----------------------------------------------------------------- */

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static void strvec_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static af_status strvec_push(strvec *s, const char *x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        char **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return af_errorf(AF_ERR_NOMEM, "out of memory listing a directory");
        s->v = nv;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(x))) return af_errorf(AF_ERR_NOMEM, "out of memory listing a directory");
    s->n++;
    return AF_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

/* Sorted names in directory `fd` that are directories (want_dir) or image files. */
static af_status list_dir(int fd, const char *path, int want_dir, strvec *out)
{
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0) close(dup_fd);
        return af_errorf(AF_ERR_IO, "%s: cannot list: %s", path, strerror(errno));
    }
    af_status st = AF_OK;
    struct dirent *de;
    while (st == AF_OK && (errno = 0, de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        struct stat sb;
        if (fstatat(fd, de->d_name, &sb, 0) != 0) continue; /* dangling link */
        if (want_dir ? S_ISDIR(sb.st_mode) : (S_ISREG(sb.st_mode) && image_ext(de->d_name)))
            st = strvec_push(out, de->d_name);
    }
    closedir(d);
    if (st == AF_OK && out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return st;
}

af_status af_ds_open_folder(af_dataset *ds, const char *dir, const af_dataset_opts *o)
{
    af_status st = AF_ERR_NOMEM;
    strvec ids = {0}, files = {0};
    size_t pool_len = 0, pool_cap = 0, n = 0, cap = 0;
    folder *f = af_calloc(1, sizeof *f, "image folder dataset");
    if (!f) return AF_ERR_NOMEM;
    f->dirfd = -1;
    ds->ops = &folder_ops;
    ds->impl = f;
    if (!(f->root = strdup(dir))) goto fail;
    f->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->dirfd < 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot open the image folder: %s", dir, strerror(errno));
        goto fail;
    }
    if ((st = list_dir(f->dirfd, dir, 1, &ids)) != AF_OK) goto fail;
    if (ids.n == 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: no sub-folders, expected one per identity holding .jpg/.png images", dir);
        goto fail;
    }
    for (size_t c = 0; c < ids.n; c++) {
        int sub = openat(f->dirfd, ids.v[c], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sub < 0) {
            st = af_errorf(AF_ERR_IO, "%s/%s: cannot open: %s", dir, ids.v[c], strerror(errno));
            goto fail;
        }
        st = list_dir(sub, ids.v[c], 0, &files);
        close(sub);
        if (st != AF_OK) goto fail;
        for (size_t k = 0; k < files.n; k++) {
            size_t need = strlen(ids.v[c]) + 1 + strlen(files.v[k]) + 1;
            if (pool_len + need > pool_cap) {
                size_t nc = (pool_cap + need) * 2;
                char *np = realloc(f->pool, nc);
                if (!np) {
                    st = af_errorf(AF_ERR_NOMEM, "out of memory for image paths");
                    goto fail;
                }
                f->pool = np;
                pool_cap = nc;
            }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 1024;
                size_t *no = realloc(f->name_off, nc * sizeof *no);
                if (no) f->name_off = no;
                int64_t *nl = no ? realloc(f->labels, nc * sizeof *nl) : NULL;
                if (!nl) {
                    st = af_errorf(AF_ERR_NOMEM, "out of memory for %zu image entries", nc);
                    goto fail;
                }
                f->labels = nl;
                cap = nc;
            }
            f->name_off[n] = pool_len;
            f->labels[n] = (int64_t)c;
            pool_len += (size_t)snprintf(f->pool + pool_len, need, "%s/%s", ids.v[c], files.v[k]) + 1;
            n++;
        }
        strvec_free(&files);
    }
    ds->n = (int64_t)n;
    ds->classes = (int64_t)ids.n;
    if (n == 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: %zu identity folders but no .jpg/.jpeg/.png files in them", dir, ids.n);
        goto fail;
    }
    if (!o->height || !o->channels) {
        af_dataset_scratch *ws = NULL;
        if ((st = af_dataset_scratch_init(&ws)) != AF_OK) goto fail;
        char what[1024];
        size_t len = 0;
        st = folder_read(ds, 0, ws, &len, what, sizeof what);
        if (st == AF_OK) st = af_image_probe(ws->rbuf, len, &ds->h, &ds->w, &ds->c, what);
        af_dataset_scratch_free(ws);
        if (st != AF_OK) {
            af_error_wrap(st, "%s: reading the first image for the native size (or pass a size)", dir);
            goto fail;
        }
    }
    snprintf(ds->describe, sizeof ds->describe, "folder %s: %" PRId64 " images, %" PRId64 " identity folders", dir,
             ds->n, ds->classes);
    strvec_free(&ids);
    return AF_OK;
fail:
    strvec_free(&ids);
    strvec_free(&files);
    folder_close(f);
    ds->impl = NULL;
    return st;
}
