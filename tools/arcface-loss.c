/* arcface-loss IN.h5 OUT.h5: evaluates the margin-softmax loss and its gradients
 * on given tensors, for checking against other implementations.
 *
 * IN.h5: datasets features (B, D) float32 raw, weight (C, D) float32 raw,
 * labels (B) int64 in [0, C) or -1 (the row's class is not among these
 * centres: no margin, as for a row owned by another shard); root attributes s, m1, m2, m3, and optionally
 * mode ("analytic" | "arcface_torch"), easy_margin (0/1), filter_threshold, block_rows (centre rows per
 * block of the fc kernels; default: their own choice, which covers small C in one block).
 * OUT.h5: loss (scalar float64), grad_features (B, D), grad_weight (C, D): the
 * gradients of the mean loss w.r.t. the raw inputs. */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/h5io.h"
#include "arcface/margin.h"

static af_status read_attr_float(hid_t f, const char *path, const char *name, int required, float dflt, float *out)
{
    double v = dflt;
    if (required || af_h5_attr_exists(f, name)) {
        af_status st = af_h5_attr_get_double(f, path, name, &v);
        if (st) return st;
    }
    *out = (float)v;
    return AF_OK;
}

static af_status run(const char *in, const char *out)
{
    hid_t f = -1, o = -1;
    float *x = NULL, *w = NULL, *gx = NULL, *gw = NULL;
    int64_t *labels = NULL;
    af_fc_ws ws = {0};
    hsize_t xd[2], wd[2], ld[1];
    af_margin m = {.grad = AF_MARGIN_GRAD_ANALYTIC};
    af_status st;

    if ((st = af_h5_open_read(in, &f))) goto fail;
    if ((st = af_h5_read(f, in, "features", AF_H5_F32, 2, xd, (void **)&x))) goto fail;
    if ((st = af_h5_read(f, in, "weight", AF_H5_F32, 2, wd, (void **)&w))) goto fail;
    if ((st = af_h5_read(f, in, "labels", AF_H5_I64, 1, ld, (void **)&labels))) goto fail;
    if (xd[1] != wd[1]) {
        st = af_errorf(AF_ERR_FORMAT, "%s: features have D = %llu but weight has D = %llu", in,
                       (unsigned long long)xd[1], (unsigned long long)wd[1]);
        goto fail;
    }
    if (ld[0] != xd[0]) {
        st = af_errorf(AF_ERR_FORMAT, "%s: %llu labels for %llu feature rows", in, (unsigned long long)ld[0],
                       (unsigned long long)xd[0]);
        goto fail;
    }
    if (xd[0] == 0 || wd[0] == 0 || xd[1] == 0 || xd[0] > 1u << 20 || wd[0] > 1u << 24 || xd[1] > 1u << 16) {
        st = af_errorf(AF_ERR_FORMAT, "%s: unsupported sizes B=%llu C=%llu D=%llu", in, (unsigned long long)xd[0],
                       (unsigned long long)wd[0], (unsigned long long)xd[1]);
        goto fail;
    }
    int B = (int)xd[0], C = (int)wd[0], D = (int)xd[1];
    for (int b = 0; b < B; b++)
        if (labels[b] < -1 || labels[b] >= C) {
            st = af_errorf(AF_ERR_FORMAT, "%s: labels[%d] = %lld is outside [0, %d) (or -1 for none)", in, b,
                           (long long)labels[b], C);
            goto fail;
        }
    if ((st = read_attr_float(f, in, "s", 1, 0, &m.s)) || (st = read_attr_float(f, in, "m1", 1, 0, &m.m1)) ||
        (st = read_attr_float(f, in, "m2", 1, 0, &m.m2)) || (st = read_attr_float(f, in, "m3", 1, 0, &m.m3)) ||
        (st = read_attr_float(f, in, "filter_threshold", 0, 0, &m.filter_threshold)))
        goto fail;
    if (af_h5_attr_exists(f, "easy_margin")) {
        double v;
        if ((st = af_h5_attr_get_double(f, in, "easy_margin", &v))) goto fail;
        m.easy_margin = v != 0;
    }
    if (af_h5_attr_exists(f, "mode")) {
        char mode[64];
        if ((st = af_h5_attr_get_str(f, in, "mode", mode, sizeof mode))) goto fail;
        if ((st = af_margin_grad_parse(mode, &m.grad))) { af_error_wrap(st, "%s: attribute 'mode'", in); goto fail; }
    }
    if ((st = af_margin_check(&m))) { af_error_wrap(st, "%s", in); goto fail; }

    if ((st = af_fc_ws_init(&ws, B, C, D))) goto fail;
    if (af_h5_attr_exists(f, "block_rows")) {
        double v;
        if ((st = af_h5_attr_get_double(f, in, "block_rows", &v))) goto fail;
        if (!(v >= 1 && v <= ws.blk)) {
            st = af_errorf(AF_ERR_FORMAT, "%s: attribute block_rows = %g, expected 1 .. %d", in, v, ws.blk);
            goto fail;
        }
        af_fc_ws_set_block(&ws, (int)v);
    }
    gx = af_calloc((size_t)B * D, sizeof(float), "grad_features");
    gw = af_calloc((size_t)C * D, sizeof(float), "grad_weight");
    if (!gx || !gw) { st = AF_ERR_NOMEM; goto fail; }
    double loss;
    if ((st = af_fc_loss(&m, x, B, B, w, C, labels, MPI_COMM_SELF, &ws, &loss, gx, gw))) goto fail;

    if ((st = af_h5_create(out, &o))) goto fail;
    if ((st = af_h5_write(o, out, "loss", AF_H5_F64, 0, NULL, &loss)) ||
        (st = af_h5_write(o, out, "grad_features", AF_H5_F32, 2, xd, gx)) ||
        (st = af_h5_write(o, out, "grad_weight", AF_H5_F32, 2, wd, gw)))
        goto fail;
    if (H5Fclose(o) < 0) { o = -1; st = af_errorf(AF_ERR_IO, "%s: close failed", out); goto fail; }
    o = -1;
    st = AF_OK;
fail:
    if (o >= 0) { H5Fclose(o); remove(out); }
    if (f >= 0) H5Fclose(f);
    af_fc_ws_free(&ws);
    free(x); free(w); free(gx); free(gw); free(labels);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN.h5 OUT.h5\n", argv[0]);
        return 2;
    }
    MPI_Init(&argc, &argv);
    af_status st = run(argv[1], argv[2]);
    if (st) fprintf(stderr, "arcface-loss: error: %s\n", af_errmsg());
    MPI_Finalize();
    return st ? 1 : 0;
}
