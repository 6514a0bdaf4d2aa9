/* core/h5io.c against files a careful user or an attacker could hand it:
 *   - a dataset whose dimensions multiply past 64 bits, and one whose element
 *     count fits but whose byte count does not (2^62 float32 = 2^64 bytes, which
 *     wrapped to a 0-byte buffer that H5Dread then overran): both refused with a
 *     message naming the file and dataset, before any allocation;
 *   - a fixed-length string attribute without a terminating NUL, as h5py writes
 *     np.bytes_("r50") (H5T_STR_NULLPAD, size 3): read back whole, not "r5";
 *   - a normal round trip, so the checks above cannot pass by refusing everything.
 * The files are made here with the HDF5 C API; the datasets are chunked and never
 * written, so a 2^62-element dataset costs a few hundred bytes on disk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/h5io.h"

static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static void make_huge(hid_t f, const char *name, int rank, const hsize_t *dims)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[AF_H5_MAXRANK];
    for (int i = 0; i < rank; i++) chunk[i] = 1;
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t ds = H5Dcreate2(f, name, H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0) printf("note: HDF5 refused to create %s\n", name);
    else H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static void expect_refused(hid_t f, const char *path, const char *name, const char *needle)
{
    void *buf = NULL;
    hsize_t dims[AF_H5_MAXRANK];
    int rank;
    if (af_h5_shape(f, path, name, &rank, dims)) {
        printf("%s: not created by this HDF5 (%s); case skipped\n", name, af_errmsg());
        return;
    }
    af_status st = af_h5_read(f, path, name, AF_H5_F32, rank, dims, &buf);
    CHECK(st != AF_OK && strstr(af_errmsg(), path) && strstr(af_errmsg(), name) && strstr(af_errmsg(), needle),
          "%s: expected a refusal naming the file, the dataset and '%s', got %s", name, needle,
          st ? af_errmsg() : "success");
    if (st) printf("%-14s -> %s\n", name, af_errmsg());
    free(buf);
}

int main(void)
{
    const char *path = "h5io_crafted.h5";
    hid_t f;
    if (af_h5_create(path, &f)) { printf("FAIL: %s\n", af_errmsg()); return 1; }
    const hsize_t wrap_elems[3] = {1ull << 32, 1ull << 32, 16}; /* 2^68 elements */
    const hsize_t wrap_bytes[1] = {1ull << 62};                 /* 2^62 elements, 2^64 bytes */
    make_huge(f, "/elements", 3, wrap_elems);
    make_huge(f, "/bytes", 1, wrap_bytes);

    /* h5py's np.bytes_("r50"): fixed length 3, NULL padded, no terminator. */
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 3);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "network", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "r50");
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);

    const float small[6] = {1, 2, 3, 4, 5, 6};
    const hsize_t sdims[2] = {2, 3};
    CHECK(af_h5_write(f, path, "/g/small", AF_H5_F32, 2, sdims, small) == AF_OK, "write: %s", af_errmsg());
    CHECK(af_h5_attr_set_str(f, "terminated", "mbf") == AF_OK, "attr: %s", af_errmsg());
    H5Fclose(f);

    if (af_h5_open_read(path, &f)) { printf("FAIL: %s\n", af_errmsg()); return 1; }
    expect_refused(f, path, "/elements", "overflows");
    expect_refused(f, path, "/bytes", "too many bytes");

    char s[32];
    af_status st = af_h5_attr_get_str(f, path, "network", s, sizeof s);
    CHECK(st == AF_OK && !strcmp(s, "r50"), "unterminated fixed-length string: expected 'r50', got '%s' (%s)", s,
          st ? af_errmsg() : "ok");
    printf("unterminated 'r50' reads as '%s'\n", s);
    st = af_h5_attr_get_str(f, path, "terminated", s, sizeof s);
    CHECK(st == AF_OK && !strcmp(s, "mbf"), "terminated string: expected 'mbf', got '%s'", s);

    float *back = NULL;
    hsize_t d[2];
    st = af_h5_read(f, path, "/g/small", AF_H5_F32, 2, d, (void **)&back);
    CHECK(st == AF_OK && d[0] == 2 && d[1] == 3 && back && !memcmp(back, small, sizeof small),
          "round trip of a 2x3 float32 dataset failed (%s)", st ? af_errmsg() : "values differ");
    free(back);
    H5Fclose(f);
    remove(path);
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
