/* arcface-eval: evaluates a trained model.
 *
 *   arcface-eval --model FILE --target SPEC [--target SPEC ...]
 *                [--results OUT.csv] [--roc-dir DIR] [--embeddings OUT.h5]
 *                [--batch N] [--threads N]
 *
 * FILE: a checkpoint (arcface-train) or an exported backbone (arcface-ckpt export);
 * the network and embedding size come from its attributes. Or a PyTorch .pt
 * state_dict (torch.save, insightface's key names) with --network NET. SPEC: an insightface
 * verification file (lfw.bin, cfp_fp.bin, agedb_30.bin) or fmnist-test:DIR (the
 * Fashion-MNIST test split: verification on the fixed 6,000 pairs, and
 * nearest-centre accuracy against the checkpoint's /fc/weight).
 * Prints per target the 10-fold accuracy (mean, std), XNorm, TAR at FAR 1e-3 and
 * 1e-4, the best threshold of each fold and, where it applies, the nearest-centre
 * accuracy; the targets and --roc-dir are checked before the first is embedded; --results writes them
 * as CSV (via OUT.csv.tmp, renamed at the end: a failure keeps the previous file), --roc-dir writes
 * TARGET_roc.csv and TARGET_roc.png, --embeddings the
 * combined embeddings (and labels) per target. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "arcface/backbone.h"
#include "arcface/eval.h"
#include "arcface/h5io.h"
#include "arcface/samefile.h"
#include "arcface/torch_pt.h"
#include "arcface/valset.h"

#define MAX_TARGETS 16

typedef struct {
    const char *model, *network, *results, *roc_dir, *emb_out;
    const char *targets[MAX_TARGETS];
    int n_targets, batch, threads;
} options;

static int usage(void)
{
    fprintf(stderr, "usage: arcface-eval --model FILE [--network NET] --target SPEC [--target SPEC ...] [--results OUT.csv] "
                    "[--roc-dir DIR] [--embeddings OUT.h5] [--batch N] [--threads N]\n"
                    "SPEC: an insightface .bin verification file, or fmnist-test:DIR\n"
                    "--network: the architecture of a PyTorch .pt model (r18 ... r200, mbf, mbf_large)\n");
    return 2;
}

/* The channel count a model was trained on, from its stem convolution's weight
 * (out, in_c, kh, kw): the attributes name the architecture, not the data, and a
 * Fashion-MNIST network trained on RGB images (or an iResNet on grey ones) must
 * be rebuilt for it. The stem is the first state_dict entry of every
 * architecture here; anything unexpected is left to af_backbone_load to name. */
static af_status trained_channels(hid_t f, const char *path, const af_backbone *bb, int *in_c)
{
    *in_c = bb->cfg.in_c;
    if (!bb->n_tensors) return AF_OK;
    const af_backbone_tensor *t = &bb->tensors[0];
    char name[AF_BACKBONE_KEY_MAX + 16];
    snprintf(name, sizeof name, "/backbone/%s", t->key);
    if (t->ndim != 4 || t->shape[1] != bb->cfg.in_c || !af_h5_exists(f, name)) return AF_OK;
    hsize_t dims[AF_H5_MAXRANK];
    int rank;
    af_status st = af_h5_shape(f, path, name, &rank, dims);
    if (st) return st;
    if (rank == 4 && dims[1] >= 1 && dims[1] <= 4) *in_c = (int)dims[1];
    return AF_OK;
}

/* Loads the backbone named by FILE's attributes; *centres gets /fc/weight when present. */
static af_status load_model(const options *o, af_backbone *bb, float **centres, int64_t *n_centres)
{
    *centres = NULL;
    *n_centres = 0;
    if (af_pt_is_zip(o->model)) { /* a state_dict carries no architecture: --network names it */
        int D;
        if (!o->network)
            return af_errorf(AF_ERR_ARG, "%s is a PyTorch state_dict: give its architecture with --network", o->model);
        af_status st = af_pt_embedding_size(o->model, &D);
        af_backbone_config bc = {.arch = o->network, .embedding = D, .max_batch = o->batch, .nthreads = o->threads};
        if (!st) st = af_backbone_init(bb, &bc);
        return st ? st : af_backbone_load_pt(bb, o->model);
    }
    hid_t f;
    af_status st = af_h5_open_read(o->model, &f);
    if (st) return st;
    char net[32];
    int64_t D;
    if ((st = af_h5_attr_get_str(f, o->model, "network", net, sizeof net)) ||
        (st = af_h5_attr_get_i64(f, o->model, "embedding_size", &D))) {
        af_error_wrap(st, "%s: not a checkpoint or exported model", o->model);
        goto done;
    }
    af_backbone_config bc = {.arch = net, .embedding = (int)D, .max_batch = o->batch, .nthreads = o->threads};
    if ((st = af_backbone_init(bb, &bc))) goto done;
    int in_c;
    if ((st = trained_channels(f, o->model, bb, &in_c))) goto done;
    if (in_c != bb->cfg.in_c) {
        af_backbone_free(bb);
        bc.in_c = in_c;
        if ((st = af_backbone_init(bb, &bc))) goto done;
    }
    if ((st = af_backbone_load(bb, f, o->model, "/backbone"))) goto done;
    *centres = NULL;
    *n_centres = 0;
    if (af_h5_exists(f, "/fc/weight")) {
        hsize_t dims[AF_H5_MAXRANK];
        int rank;
        if ((st = af_h5_shape(f, o->model, "/fc/weight", &rank, dims))) goto done;
        /* Only small class counts are candidates for nearest-centre accuracy. */
        if (rank == 2 && dims[1] == (hsize_t)D && dims[0] <= 100000) {
            if ((st = af_h5_read(f, o->model, "/fc/weight", AF_H5_F32, 2, dims, (void **)centres))) goto done;
            *n_centres = (int64_t)dims[0];
        }
    }
done:
    H5Fclose(f);
    return st;
}

static af_status run(const options *o)
{
    af_backbone bb = {0};
    float *centres = NULL;
    int64_t n_centres = 0;
    FILE *res = NULL;
    hid_t eo = -1;
    char res_tmp[4096] = "", emb_tmp[4096] = "";
    af_status st = load_model(o, &bb, &centres, &n_centres);
    if (st) goto done;
    printf("model: %s (%s, embedding %d%s)\n", o->model, bb.arch, bb.cfg.embedding,
           n_centres ? ", with trained class centres" : "");
    /* Everything the run will write or read is checked before the first target
     * is embedded, so a typo fails in seconds, not after the whole evaluation. */
    struct stat sb;
    if (o->roc_dir) {
        const char *why = NULL;
        if (mkdir(o->roc_dir, 0777) && errno != EEXIST) why = strerror(errno);
        else if (stat(o->roc_dir, &sb)) why = strerror(errno);
        else if (!S_ISDIR(sb.st_mode)) why = "it is not a folder";
        else if (access(o->roc_dir, W_OK)) why = strerror(errno);
        if (why) {
            st = af_errorf(AF_ERR_IO, "--roc-dir %s: expected a writable folder: %s", o->roc_dir, why);
            goto done;
        }
    }
    for (int t = 0; t < o->n_targets; t++)
        if ((st = af_valset_check(o->targets[t]))) {
            af_error_wrap(st, "--target %s", o->targets[t]);
            goto done;
        }
    /* Outputs are written beside their final names and renamed only once every
     * target is done: creating the sibling proves the folder writable now,
     * and a failed evaluation leaves the previous results as they were. */
    if (o->results) {
        snprintf(res_tmp, sizeof res_tmp, "%s.tmp", o->results);
        if (!(res = fopen(res_tmp, "w"))) {
            st = af_errorf(AF_ERR_IO, "--results %s: cannot write %s beside it: %s", o->results, res_tmp,
                           strerror(errno));
            res_tmp[0] = 0;
            goto done;
        }
        fprintf(res, "target,pairs,accuracy,accuracy_std,xnorm,tar_at_far_1e-3,tar_at_far_1e-4,centre_accuracy\n");
    }
    if (o->emb_out) {
        snprintf(emb_tmp, sizeof emb_tmp, "%s.tmp", o->emb_out);
        if ((st = af_h5_create(emb_tmp, &eo))) {
            af_error_wrap(st, "--embeddings %s", o->emb_out);
            emb_tmp[0] = 0;
            goto done;
        }
    }
    for (int t = 0; t < o->n_targets; t++) {
        af_valset *v;
        if ((st = af_valset_open(&v, o->targets[t], bb.cfg.in_c, bb.cfg.in_h, bb.cfg.in_w))) goto done;
        af_valset_result r;
        float *emb = NULL;
        st = af_valset_run(v, &bb, centres, n_centres, &r, o->emb_out ? &emb : NULL);
        if (!st) {
            const char *name = af_valset_name(v);
            printf("%s: %zu pairs, accuracy %.5f +- %.5f, XNorm %.4f, TAR@FAR=1e-3 %.5f, TAR@FAR=1e-4 %.5f", name,
                   r.ver.n_pairs, r.ver.acc_mean, r.ver.acc_std, r.ver.xnorm, r.ver.tar[0].tar_mean,
                   r.ver.tar[1].tar_mean);
            if (r.has_centre) printf(", nearest-centre accuracy %.5f", r.centre_acc);
            printf("\n");
            af_verify_print_thresholds(stdout, name, &r.ver);
            if (res) {
                fprintf(res, "%s,%zu,%.6f,%.6f,%.6f,%.6f,%.6f,", name, r.ver.n_pairs, r.ver.acc_mean, r.ver.acc_std,
                        r.ver.xnorm, r.ver.tar[0].tar_mean, r.ver.tar[1].tar_mean);
                if (r.has_centre) fprintf(res, "%.6f\n", r.centre_acc);
                else fprintf(res, "nan\n");
            }
            if (o->roc_dir) {
                char csv[1024], png[1024];
                snprintf(csv, sizeof csv, "%s/%s_roc.csv", o->roc_dir, name);
                snprintf(png, sizeof png, "%s/%s_roc.png", o->roc_dir, name);
                if (!(st = af_verify_roc_write(&r.ver, csv)) && !(st = af_plot_roc(csv, png, NULL)))
                    printf("%s: ROC curve %s\n", name, png);
            }
            if (!st && eo >= 0) {
                char key[128];
                hsize_t dims[2] = {(hsize_t)af_valset_images(v), (hsize_t)bb.cfg.embedding};
                snprintf(key, sizeof key, "/%s/embeddings", name);
                st = af_h5_write(eo, o->emb_out, key, AF_H5_F32, 2, dims, emb);
                if (!st && af_valset_labels(v)) {
                    snprintf(key, sizeof key, "/%s/labels", name);
                    st = af_h5_write(eo, o->emb_out, key, AF_H5_I32, 1, dims, af_valset_labels(v));
                }
            }
        }
        free(emb);
        af_valset_close(v);
        if (st) goto done;
    }
    fflush(stdout);
done:
    if (res && fclose(res) && !st) st = af_errorf(AF_ERR_IO, "%s: write failed", res_tmp);
    if (eo >= 0 && H5Fclose(eo) < 0 && !st) st = af_errorf(AF_ERR_IO, "%s: write failed", emb_tmp);
    if (!st && res_tmp[0] && rename(res_tmp, o->results))
        st = af_errorf(AF_ERR_IO, "--results: cannot rename %s to %s: %s", res_tmp, o->results, strerror(errno));
    if (!st && emb_tmp[0] && rename(emb_tmp, o->emb_out))
        st = af_errorf(AF_ERR_IO, "--embeddings: cannot rename %s to %s: %s", emb_tmp, o->emb_out, strerror(errno));
    if (st) {
        if (res_tmp[0]) unlink(res_tmp);
        if (emb_tmp[0]) unlink(emb_tmp);
    }
    free(centres);
    af_backbone_free(&bb);
    return st;
}

int main(int argc, char **argv)
{
    options o = {.batch = 64};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage();
        if (!v) return usage();
        if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--network")) o.network = v;
        else if (!strcmp(a, "--target") && o.n_targets < MAX_TARGETS) o.targets[o.n_targets++] = v;
        else if (!strcmp(a, "--results")) o.results = v;
        else if (!strcmp(a, "--roc-dir")) o.roc_dir = v;
        else if (!strcmp(a, "--embeddings")) o.emb_out = v;
        else if (!strcmp(a, "--batch")) o.batch = atoi(v);
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else return usage();
        i++;
    }
    if (!o.model || !o.n_targets || o.batch < 1) return usage();
    if (af_same_file(o.model, o.results) || af_same_file(o.model, o.emb_out)) {
        fprintf(stderr, "arcface-eval: error: an output is the same file as --model %s; refusing to overwrite it\n",
                o.model);
        return 2;
    }
    af_h5_quiet();
    af_status st = run(&o);
    if (st) fprintf(stderr, "arcface-eval: error: %s\n", af_errmsg());
    return st ? 1 : 0;
}
