/* arcface-embed: runs a backbone in eval mode over a file of images.
 *
 *   arcface-embed --arch ARCH --model MODEL.h5|MODEL.pt --input X.h5 --output E.h5
 *                 [--embedding D] [--batch N] [--threads T]
 *
 * (--network is another name for --arch; a .pt's embedding size is read
 * from the file.) Reads the weights from group /backbone of MODEL.h5 (one dataset per
 * PyTorch state_dict key, as af_backbone_save writes and as a PyTorch user
 * exports them) or from a state_dict saved by torch.save, the dataset `images` (N, C, H, W) float32, already
 * normalised, from X.h5, and writes `embeddings` (N, D) float32, raw (before
 * L2 normalisation), to E.h5. Images are streamed in batches; the output is
 * written to E.h5.tmp, synced and renamed, so an interrupted run never
 * leaves a partial E.h5. An output that is the input or the model (by
 * inode, not by name) is refused with exit status 2. */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arcface/backbone.h"
#include "arcface/h5io.h"
#include "arcface/samefile.h"
#include "arcface/torch_pt.h"

static void usage(void)
{
    fprintf(stderr, "usage: arcface-embed --arch ARCH --model MODEL.h5|MODEL.pt --input X.h5 --output E.h5 "
                    "[--embedding D] [--batch N] [--threads T]\n"
                    "  ARCH: r18, r34, r50, r100, r200, mbf, mbf_large or fmnist\n");
}

/* Reads rows [r0, r0+n) of a rank-`rank` float dataset into buf. */
static af_status read_rows(hid_t ds, const char *path, int rank, const hsize_t *dims, hsize_t r0, hsize_t n, float *buf)
{
    hsize_t start[4] = {r0, 0, 0, 0}, count[4];
    for (int i = 0; i < rank; i++) count[i] = i ? dims[i] : n;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(rank, count, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0) e = H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    if (e < 0)
        return af_errorf(AF_ERR_IO, "%s: cannot read images %llu..%llu", path, (unsigned long long)r0,
                         (unsigned long long)(r0 + n - 1));
    return AF_OK;
}

static af_status write_rows(hid_t ds, const char *path, hsize_t D, hsize_t r0, hsize_t n, const float *buf)
{
    hsize_t start[2] = {r0, 0}, count[2] = {n, D};
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(2, count, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0) e = H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return e < 0 ? af_errorf(AF_ERR_IO, "%s: cannot write embeddings", path) : AF_OK;
}

static af_status sync_path(const char *p, int dir)
{
    int fd = open(p, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot open to sync", p);
    int e = fsync(fd);
    close(fd);
    return e ? af_errorf(AF_ERR_IO, "%s: fsync failed", p) : AF_OK;
}

int main(int argc, char **argv)
{
    af_backbone_config cfg = {0};
    const char *model_path = NULL, *in_path = NULL, *out_path = NULL;
    int batch = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        if (!v) {
            fprintf(stderr, "arcface-embed: option %s needs a value\n", a);
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--arch") || !strcmp(a, "--network")) cfg.arch = v;
        else if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--input")) in_path = v;
        else if (!strcmp(a, "--output")) out_path = v;
        else if (!strcmp(a, "--embedding")) cfg.embedding = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--threads")) cfg.nthreads = atoi(v);
        else {
            fprintf(stderr, "arcface-embed: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (!cfg.arch || !model_path || !in_path || !out_path || batch < 1 || cfg.embedding < 0) {
        usage();
        return 2;
    }
    if (af_same_file(out_path, in_path) || af_same_file(out_path, model_path)) {
        fprintf(stderr, "arcface-embed: --output %s is the same file as the %s %s; refusing to overwrite it\n",
                out_path, af_same_file(out_path, in_path) ? "--input" : "--model",
                af_same_file(out_path, in_path) ? in_path : model_path);
        return 2;
    }
    af_h5_quiet();
    af_status st = AF_OK;
    hid_t fin = -1, fout = -1, ds_in = -1, ds_out = -1;
    float *x = NULL;
    af_backbone m = {0};
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);

    int rank;
    hsize_t dims[AF_H5_MAXRANK];
    if ((st = af_h5_open_read(in_path, &fin))) goto fail;
    if ((st = af_h5_shape(fin, in_path, "images", &rank, dims))) goto fail;
    if (rank != 4) {
        st = af_errorf(AF_ERR_FORMAT, "%s: dataset 'images' has rank %d, expected 4 (N, C, H, W)", in_path, rank);
        goto fail;
    }
    ds_in = H5Dopen2(fin, "images", H5P_DEFAULT);
    {
        hid_t t = H5Dget_type(ds_in);
        int is_float = H5Tget_class(t) == H5T_FLOAT;
        H5Tclose(t);
        if (!is_float) {
            st = af_errorf(AF_ERR_FORMAT, "%s: dataset 'images' must be float32", in_path);
            goto fail;
        }
    }
    const hsize_t N = dims[0];
    cfg.in_c = (int)dims[1];
    cfg.in_h = (int)dims[2];
    cfg.in_w = (int)dims[3];
    cfg.max_batch = N && (hsize_t)batch > N ? (int)N : batch;
    /* a state_dict states its embedding size (an HDF5 model takes --embedding, default 512) */
    if (!cfg.embedding && af_pt_is_zip(model_path) && (st = af_pt_embedding_size(model_path, &cfg.embedding)))
        goto fail;
    if ((st = af_backbone_init(&m, &cfg))) goto fail;
    if ((st = af_backbone_load_file(&m, model_path))) goto fail;
    const hsize_t D = (hsize_t)m.cfg.embedding;
    if ((st = af_h5_create(tmp, &fout))) goto fail;
    {
        hsize_t od[2] = {N, D};
        hid_t sp = H5Screate_simple(2, od, NULL);
        ds_out = H5Dcreate2(fout, "embeddings", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(sp);
        if (ds_out < 0) {
            st = af_errorf(AF_ERR_IO, "%s: cannot create dataset 'embeddings'", tmp);
            goto fail;
        }
    }
    const size_t per = (size_t)cfg.in_c * cfg.in_h * cfg.in_w;
    x = af_malloc((size_t)cfg.max_batch * per * sizeof(float), "a batch of images");
    if (!x) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    for (hsize_t r0 = 0; r0 < N; r0 += (hsize_t)cfg.max_batch) {
        hsize_t n = N - r0 < (hsize_t)cfg.max_batch ? N - r0 : (hsize_t)cfg.max_batch;
        const float *emb;
        if ((st = read_rows(ds_in, in_path, 4, dims, r0, n, x))) goto fail;
        if ((st = af_backbone_forward(&m, x, (int)n, 0, NULL, &emb))) goto fail;
        if ((st = write_rows(ds_out, tmp, D, r0, n, emb))) goto fail;
    }
    H5Dclose(ds_out);
    ds_out = -1;
    if (H5Fclose(fout) < 0) {
        fout = -1;
        st = af_errorf(AF_ERR_IO, "%s: cannot close", tmp);
        goto fail;
    }
    fout = -1;
    if ((st = sync_path(tmp, 0))) goto fail;
    if (rename(tmp, out_path)) {
        st = af_errorf(AF_ERR_IO, "cannot rename %s to %s", tmp, out_path);
        goto fail;
    }
    {
        char dirbuf[4096];
        snprintf(dirbuf, sizeof dirbuf, "%s", out_path);
        if ((st = sync_path(dirname(dirbuf), 1))) goto fail;
    }
    fprintf(stderr, "arcface-embed: %llu embeddings of dimension %llu written to %s\n", (unsigned long long)N,
            (unsigned long long)D, out_path);
fail:
    if (ds_out >= 0) H5Dclose(ds_out);
    if (fout >= 0) H5Fclose(fout);
    if (st) unlink(tmp);
    if (ds_in >= 0) H5Dclose(ds_in);
    if (fin >= 0) H5Fclose(fin);
    free(x);
    if (m.net) af_backbone_free(&m);
    if (st) {
        fprintf(stderr, "arcface-embed: %s\n", af_errmsg());
        return 1;
    }
    return 0;
}
