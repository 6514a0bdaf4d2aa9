/* Checked HDF5 helpers; see include/arcface/h5io.h. Every HDF5 call's return
 * code is checked and every size computed from a file is checked for overflow
 * before it reaches malloc: the files are input, and a crafted one must not make
 * us allocate less than H5Dread then writes. */
#include "arcface/h5io.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void af_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
    char *buf;
    size_t cap, used;
} stack_text;

static herr_t stack_walk(unsigned n, const H5E_error2_t *e, void *user)
{
    (void)n;
    stack_text *t = user;
    if (t->used + 1 >= t->cap || !e->desc || !e->desc[0]) return 0;
    int k = snprintf(t->buf + t->used, t->cap - t->used, "%s%s", t->used ? "; " : "", e->desc);
    if (k > 0) t->used += (size_t)k < t->cap - t->used ? (size_t)k : t->cap - t->used - 1;
    return 0;
}

const char *af_h5_error_text(char *buf, size_t cap)
{
    if (!cap) return buf;
    buf[0] = 0;
    stack_text t = {buf, cap, 0};
    /* The innermost entries carry the operating system's reason (errno text). */
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, stack_walk, &t);
    if (errno == ENOSPC && !strstr(buf, "No space left on device"))
        snprintf(buf + t.used, cap - t.used, "%sNo space left on device", t.used ? "; " : "");
    return buf;
}

af_status af_h5_open_read(const char *path, hid_t *out)
{
    af_h5_quiet();
    *out = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*out < 0) return af_errorf(AF_ERR_IO, "%s: cannot open as HDF5 (missing, unreadable or not an HDF5 file)", path);
    return AF_OK;
}

af_status af_h5_create(const char *path, hid_t *out)
{
    af_h5_quiet();
    *out = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (*out < 0) return af_errorf(AF_ERR_IO, "%s: cannot create HDF5 file", path);
    return AF_OK;
}

static hid_t mem_type(af_h5_type t)
{
    switch (t) {
    case AF_H5_F32: return H5T_NATIVE_FLOAT;
    case AF_H5_F64: return H5T_NATIVE_DOUBLE;
    case AF_H5_I64: return H5T_NATIVE_INT64;
    case AF_H5_I32: return H5T_NATIVE_INT32;
    case AF_H5_U8:  return H5T_NATIVE_UINT8;
    }
    return H5T_NATIVE_FLOAT;
}

static size_t type_size(af_h5_type t)
{
    return t == AF_H5_F64 || t == AF_H5_I64 ? 8 : t == AF_H5_U8 ? 1 : 4;
}

static const char *type_name(af_h5_type t)
{
    switch (t) {
    case AF_H5_F32: return "float32";
    case AF_H5_F64: return "float64";
    case AF_H5_I64: return "int64";
    case AF_H5_I32: return "int32";
    case AF_H5_U8:  return "uint8";
    }
    return "?";
}

int af_h5_exists(hid_t file, const char *name)
{
    /* H5Lexists needs every intermediate link to exist; walk the path. */
    char buf[1024];
    size_t n = strlen(name);
    if (n >= sizeof buf) return 0;
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (H5Lexists(file, buf, H5P_DEFAULT) <= 0) return 0;
            buf[i] = c;
        }
    }
    return 1;
}

af_status af_h5_shape(hid_t file, const char *path, const char *name, int *rank, hsize_t dims[AF_H5_MAXRANK])
{
    if (!af_h5_exists(file, name)) return af_errorf(AF_ERR_FORMAT, "%s: missing dataset '%s'", path, name);
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return af_errorf(AF_ERR_FORMAT, "%s: '%s' is not a dataset", path, name);
    hid_t sp = H5Dget_space(ds);
    if (sp < 0) {
        H5Dclose(ds);
        return af_errorf(AF_ERR_FORMAT, "%s: cannot read the shape of dataset '%s'", path, name);
    }
    int r = H5Sget_simple_extent_ndims(sp);
    af_status st = AF_OK;
    if (r < 0 || r > AF_H5_MAXRANK) st = af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has unsupported rank %d", path, name, r);
    else if (H5Sget_simple_extent_dims(sp, dims, NULL) < 0)
        st = af_errorf(AF_ERR_FORMAT, "%s: cannot read the dimensions of dataset '%s'", path, name);
    else *rank = r;
    H5Sclose(sp);
    H5Dclose(ds);
    return st;
}

static af_status check_class(hid_t ds, const char *path, const char *name, af_h5_type type)
{
    hid_t ft = H5Dget_type(ds);
    if (ft < 0) return af_errorf(AF_ERR_FORMAT, "%s: cannot read the type of dataset '%s'", path, name);
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    int want_float = type == AF_H5_F32 || type == AF_H5_F64;
    if (want_float && cls != H5T_FLOAT)
        return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' must be a floating-point array (%s)", path, name, type_name(type));
    if (!want_float && cls != H5T_INTEGER)
        return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' must be an integer array (%s)", path, name, type_name(type));
    return AF_OK;
}

static af_status read_common(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                             hsize_t dims[], const hsize_t *want, void **out, void *into)
{
    int r;
    hsize_t d[AF_H5_MAXRANK];
    af_status st = af_h5_shape(file, path, name, &r, d);
    if (st) return st;
    if (r != rank) return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has rank %d, expected %d", path, name, r, rank);
    size_t n = 1;
    for (int i = 0; i < r; i++) {
        if (want && d[i] != want[i])
            return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' dimension %d is %llu, expected %llu", path, name, i,
                             (unsigned long long)d[i], (unsigned long long)want[i]);
        if (dims) dims[i] = d[i];
        if (d[i] > SIZE_MAX || __builtin_mul_overflow(n, (size_t)d[i], &n))
            return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' has %d dimensions whose product overflows (dimension %d is %llu)",
                             path, name, r, i, (unsigned long long)d[i]);
    }
    size_t bytes;
    if (__builtin_mul_overflow(n, type_size(type), &bytes) || bytes > (size_t)PTRDIFF_MAX)
        return af_errorf(AF_ERR_FORMAT, "%s: dataset '%s' holds %zu elements, too many bytes as %s", path, name, n,
                         type_name(type));
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return af_errorf(AF_ERR_FORMAT, "%s: cannot open dataset '%s'", path, name);
    if ((st = check_class(ds, path, name, type))) { H5Dclose(ds); return st; }
    void *buf = into;
    if (!buf && !(buf = af_malloc(bytes ? bytes : 1, name))) { H5Dclose(ds); return AF_ERR_NOMEM; }
    if (n && H5Dread(ds, mem_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        if (!into) free(buf);
        H5Dclose(ds);
        return af_errorf(AF_ERR_IO, "%s: failed to read dataset '%s' as %s", path, name, type_name(type));
    }
    H5Dclose(ds);
    if (out) *out = buf;
    return AF_OK;
}

af_status af_h5_read(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                     hsize_t dims[], void **out)
{
    return read_common(file, path, name, type, rank, dims, NULL, out, NULL);
}

af_status af_h5_read_into(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                          const hsize_t dims[], void *buf)
{
    return read_common(file, path, name, type, rank, NULL, dims, NULL, buf);
}

af_status af_h5_write(hid_t file, const char *path, const char *name, af_h5_type type, int rank,
                      const hsize_t dims[], const void *buf)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t sp = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
    hid_t ds = -1;
    af_status st = AF_OK;
    char why[512];
    if (lcpl < 0 || sp < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        st = af_errorf(AF_ERR_IO, "%s: cannot prepare dataset '%s' (HDF5 property or dataspace)", path, name);
    else if ((ds = H5Dcreate2(file, name, mem_type(type), sp, lcpl, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        st = af_errorf(AF_ERR_IO, "%s: cannot create dataset '%s': %s", path, name, af_h5_error_text(why, sizeof why));
    else if (H5Dwrite(ds, mem_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        st = af_errorf(AF_ERR_IO, "%s: cannot write dataset '%s': %s", path, name, af_h5_error_text(why, sizeof why));
    if (ds >= 0 && H5Dclose(ds) < 0 && !st)
        st = af_errorf(AF_ERR_IO, "%s: cannot close dataset '%s': %s", path, name, af_h5_error_text(why, sizeof why));
    if (sp >= 0) H5Sclose(sp);
    if (lcpl >= 0) H5Pclose(lcpl);
    return st;
}

int af_h5_attr_exists(hid_t obj, const char *name) { return H5Aexists(obj, name) > 0; }

static af_status attr_read(hid_t obj, const char *path, const char *name, hid_t mt, void *v, int want_float)
{
    if (!af_h5_attr_exists(obj, name)) return af_errorf(AF_ERR_FORMAT, "%s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return af_errorf(AF_ERR_FORMAT, "%s: cannot open attribute '%s'", path, name);
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = ft < 0 ? H5T_NO_CLASS : H5Tget_class(ft);
    if (ft >= 0) H5Tclose(ft);
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    af_status st = AF_OK;
    if (n != 1) st = af_errorf(AF_ERR_FORMAT, "%s: attribute '%s' must be a scalar, has %lld elements", path, name, (long long)n);
    else if (cls != H5T_FLOAT && cls != H5T_INTEGER)
        st = af_errorf(AF_ERR_FORMAT, "%s: attribute '%s' must be a number", path, name);
    else if (!want_float && cls == H5T_FLOAT)
        st = af_errorf(AF_ERR_FORMAT, "%s: attribute '%s' must be an integer", path, name);
    else if (H5Aread(a, mt, v) < 0) st = af_errorf(AF_ERR_IO, "%s: cannot read attribute '%s'", path, name);
    H5Aclose(a);
    return st;
}

af_status af_h5_attr_get_double(hid_t obj, const char *path, const char *name, double *v)
{
    return attr_read(obj, path, name, H5T_NATIVE_DOUBLE, v, 1);
}

af_status af_h5_attr_get_i64(hid_t obj, const char *path, const char *name, int64_t *v)
{
    return attr_read(obj, path, name, H5T_NATIVE_INT64, v, 0);
}

af_status af_h5_attr_get_str(hid_t obj, const char *path, const char *name, char *buf, size_t cap)
{
    if (!af_h5_attr_exists(obj, name)) return af_errorf(AF_ERR_FORMAT, "%s: missing attribute '%s'", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return af_errorf(AF_ERR_FORMAT, "%s: cannot open attribute '%s'", path, name);
    hid_t ft = H5Aget_type(a);
    if (ft < 0) {
        H5Aclose(a);
        return af_errorf(AF_ERR_FORMAT, "%s: cannot read the type of attribute '%s'", path, name);
    }
    af_status st = AF_OK;
    if (H5Tget_class(ft) != H5T_STRING) {
        st = af_errorf(AF_ERR_FORMAT, "%s: attribute '%s' must be a string", path, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        /* h5py writes UTF-8; HDF5 will not convert between character sets */
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
            H5Aread(a, mt, &s) < 0 || !s)
            st = af_errorf(AF_ERR_IO, "%s: cannot read attribute '%s'", path, name);
        else { snprintf(buf, cap, "%s", s); H5free_memory(s); }
        if (mt >= 0) H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(ft);
        char *tmp = sz == 0 || sz == SIZE_MAX ? NULL : af_malloc(sz + 1, name);
        if (!tmp) st = sz ? AF_ERR_NOMEM : af_errorf(AF_ERR_FORMAT, "%s: attribute '%s' has no size", path, name);
        else {
            /* Read with NULL padding into a buffer one byte longer: a NULL-terminated
             * memory type of the file's size would drop the last character of a string
             * stored without a terminator (h5py's fixed-length "S3" for "r50"). */
            hid_t mt = H5Tcopy(H5T_C_S1);
            if (mt < 0 || H5Tset_size(mt, sz) < 0 || H5Tset_strpad(mt, H5T_STR_NULLPAD) < 0 ||
                H5Tset_cset(mt, H5Tget_cset(ft)) < 0 || H5Aread(a, mt, tmp) < 0)
                st = af_errorf(AF_ERR_IO, "%s: cannot read attribute '%s'", path, name);
            else { tmp[sz] = 0; snprintf(buf, cap, "%s", tmp); }
            if (mt >= 0) H5Tclose(mt);
            free(tmp);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return st;
}

static af_status attr_write(hid_t obj, const char *name, hid_t t, const void *v)
{
    char why[512];
    if (af_h5_attr_exists(obj, name) && H5Adelete(obj, name) < 0)
        return af_errorf(AF_ERR_IO, "cannot replace attribute '%s': %s", name, af_h5_error_text(why, sizeof why));
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    af_status st = AF_OK;
    if (a < 0 || H5Awrite(a, t, v) < 0)
        st = af_errorf(AF_ERR_IO, "cannot write attribute '%s': %s", name, af_h5_error_text(why, sizeof why));
    if (a >= 0 && H5Aclose(a) < 0 && !st) st = af_errorf(AF_ERR_IO, "cannot close attribute '%s'", name);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

af_status af_h5_attr_set_double(hid_t obj, const char *name, double v) { return attr_write(obj, name, H5T_NATIVE_DOUBLE, &v); }
af_status af_h5_attr_set_i64(hid_t obj, const char *name, int64_t v) { return attr_write(obj, name, H5T_NATIVE_INT64, &v); }

af_status af_h5_attr_set_str(hid_t obj, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0 || H5Tset_size(t, strlen(v) + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        if (t >= 0) H5Tclose(t);
        return af_errorf(AF_ERR_IO, "cannot make the string type of attribute '%s'", name);
    }
    af_status st = attr_write(obj, name, t, v);
    H5Tclose(t);
    return st;
}
