/* Validation sets: loading (.bin pickles, Fashion-MNIST test split), running a
 * backbone over them with the flip rule, and scoring (include/arcface/valset.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arcface/data.h"
#include "arcface/image.h"
#include "arcface/pickle.h"
#include "arcface/valset.h"

struct af_valset {
    char name[64];
    char path[512];
    int c, h, w;
    int64_t n;                 /* images */
    /* .bin */
    int is_bin;
    af_verbin vb;
    af_image_decoder *dec;
    uint8_t *rgb, *pix;        /* (h, w, 3), (h, w, c) */
    /* fmnist */
    af_dataset *ds;
    int32_t *labels;           /* (n) */
    int n_classes;
    int32_t *pa, *pb;          /* pair list */
    uint8_t *issame;
    size_t n_pairs;
    /* Called after every batch (af_valset_set_progress); NULL: none. */
    af_status (*progress)(void *);
    void *progress_user;
};

static void base_name(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

void af_valset_spec_name(const char *spec, char *buf, size_t cap)
{
    size_t len = strlen(spec);
    if (len > 4 && !strcmp(spec + len - 4, ".bin")) base_name(spec, buf, cap);
    else snprintf(buf, cap, "fmnist");
}

af_status af_valset_check(const char *spec)
{
    /* Open once now: a missing or broken file fails here, before any work. */
    af_status st;
    size_t len = strlen(spec);
    if (len > 4 && !strcmp(spec + len - 4, ".bin")) {
        af_verbin vb;
        st = af_verbin_load(&vb, spec);
        if (!st) af_verbin_free(&vb);
    } else {
        af_dataset *ds;
        af_dataset_opts o = {.split = AF_DATASET_SPLIT_TEST};
        st = af_dataset_open(&ds, spec, &o);
        if (!st) af_dataset_close(ds);
    }
    return st;
}

/* The folder insightface would look in for <name>.bin: rec if it is one, else
 * the folder of the PREFIX or PREFIX.rec it names. 0 when rec has no folder. */
static int rec_folder(const char *rec, char *out, size_t cap)
{
    static const char *const prefixes[] = {"recordio:", "folder:", "fmnist:"};
    if (!strncmp(rec, "synthetic", 9)) return 0;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (!strncmp(rec, prefixes[i], strlen(prefixes[i]))) rec += strlen(prefixes[i]);
    struct stat sb;
    if (!stat(rec, &sb) && S_ISDIR(sb.st_mode)) {
        snprintf(out, cap, "%s", rec);
        return 1;
    }
    const char *slash = strrchr(rec, '/');
    /* A rec that does not exist: insightface joins the name to it all the same. */
    if (stat(rec, &sb)) snprintf(out, cap, "%s", rec);
    else snprintf(out, cap, "%.*s", slash ? (int)(slash - rec) : 1, slash ? rec : ".");
    return 1;
}

af_status af_valset_resolve_targets(const af_config *cfg, int max, char (*spec)[AF_CFG_STR], char (*name)[64], int *n)
{
    char buf[AF_CFG_STR], dir[AF_CFG_STR];
    const char *where = af_config_where(cfg, "val_targets");
    *n = 0;
    snprintf(buf, sizeof buf, "%s", cfg->val_targets);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t len = strlen(t);
        while (len && t[len - 1] == ' ') t[--len] = 0;
        if (!*t) continue;
        if (*n == max)
            return af_errorf(AF_ERR_ARG, "%s: configuration key 'val_targets': more than %d targets", where, max);
        char *out = spec[*n];
        int bare = !strchr(t, '/') && !strchr(t, ':') && !(len > 4 && !strcmp(t + len - 4, ".bin"));
        if (bare) {
            if (!rec_folder(cfg->rec, dir, sizeof dir))
                return af_errorf(AF_ERR_ARG, "%s: configuration key 'val_targets': '%s' means <rec folder>/%s.bin as in "
                                 "insightface, but rec = '%s' has no folder; give the path of a .bin", where, t, t,
                                 cfg->rec);
            if ((size_t)snprintf(out, AF_CFG_STR, "%s/%s.bin", dir, t) >= AF_CFG_STR)
                return af_errorf(AF_ERR_ARG, "%s: configuration key 'val_targets': path for '%s' is too long", where, t);
        } else {
            snprintf(out, AF_CFG_STR, "%s", t);
        }
        af_valset_spec_name(out, name[*n], 64);
        af_status st = af_valset_check(out);
        if (st)
            return af_error_wrap(st, "%s: configuration key 'val_targets': '%s'%s%s", where, t, bare ? " (resolved as " : "",
                                 bare ? "<rec folder>/NAME.bin, as insightface does)" : "");
        (*n)++;
    }
    return AF_OK;
}

af_status af_valset_open(af_valset **out, const char *spec, int c, int h, int w)
{
    af_valset *v = af_calloc(1, sizeof *v, "validation set");
    if (!v) return AF_ERR_NOMEM;
    v->c = c; v->h = h; v->w = w;
    snprintf(v->path, sizeof v->path, "%s", spec);
    af_status st;
    size_t len = strlen(spec);
    if (len > 4 && !strcmp(spec + len - 4, ".bin")) {
        v->is_bin = 1;
        af_valset_spec_name(spec, v->name, sizeof v->name);
        if ((st = af_verbin_load(&v->vb, spec))) goto fail;
        v->n = (int64_t)(2 * v->vb.n_pairs);
        v->n_pairs = v->vb.n_pairs;
        v->issame = v->vb.issame;
        if ((st = af_image_decoder_init(&v->dec))) goto fail;
        v->rgb = af_malloc((size_t)h * w * 3, "decoded image");
        v->pix = af_malloc((size_t)h * w * 3, "converted image");
        if (!v->rgb || !v->pix) { st = AF_ERR_NOMEM; goto fail; }
    } else {
        af_valset_spec_name(spec, v->name, sizeof v->name);
        af_dataset_opts o = {.height = h, .width = w, .channels = c, .split = AF_DATASET_SPLIT_TEST};
        if ((st = af_dataset_open(&v->ds, spec, &o))) goto fail;
        v->n = af_dataset_size(v->ds);
        v->n_classes = (int)af_dataset_num_classes(v->ds);
        v->labels = af_malloc(sizeof(int32_t) * v->n, "validation labels");
        v->pa = af_malloc(sizeof(int32_t) * AF_FMNIST_PAIRS, "pairs");
        v->pb = af_malloc(sizeof(int32_t) * AF_FMNIST_PAIRS, "pairs");
        v->issame = af_malloc(AF_FMNIST_PAIRS, "pair flags");
        if (!v->labels || !v->pa || !v->pb || !v->issame) { st = AF_ERR_NOMEM; goto fail; }
        af_dataset_scratch *ws;
        if ((st = af_dataset_scratch_init(&ws))) goto fail;
        for (int64_t i = 0; i < v->n && !st; i++) {
            int64_t l;
            st = af_dataset_get_label(v->ds, i, &l, ws);
            v->labels[i] = (int32_t)l;
        }
        af_dataset_scratch_free(ws);
        if (st) goto fail;
        v->n_pairs = AF_FMNIST_PAIRS;
        if ((st = af_pairs_make(v->labels, (size_t)v->n, v->n_classes, AF_FMNIST_PAIR_SEED, v->n_pairs, v->pa, v->pb,
                                v->issame)))
            goto fail;
    }
    *out = v;
    return AF_OK;
fail:
    af_error_wrap(st, "validation set '%s'", spec);
    af_valset_close(v);
    return st;
}

void af_valset_close(af_valset *v)
{
    if (!v) return;
    if (v->is_bin) af_verbin_free(&v->vb);
    else free(v->issame);
    if (v->dec) af_image_decoder_free(v->dec);
    if (v->ds) af_dataset_close(v->ds);
    free(v->rgb); free(v->pix); free(v->labels); free(v->pa); free(v->pb);
    free(v);
}

const char *af_valset_name(const af_valset *v) { return v->name; }
int64_t af_valset_images(const af_valset *v) { return v->n; }
int af_valset_classes(const af_valset *v) { return v->is_bin ? 0 : v->n_classes; }
const int32_t *af_valset_labels(const af_valset *v) { return v->labels; }

void af_valset_set_progress(af_valset *v, af_status (*fn)(void *), void *user)
{
    v->progress = fn;
    v->progress_user = user;
}

/* Image i of the set as model input (c, h, w), mirrored if flip. */
static af_status load_image(af_valset *v, int64_t i, int flip, float *chw)
{
    if (!v->is_bin) {
        int64_t label;
        return af_dataset_get(v->ds, i, chw, &label, flip);
    }
    char what[600];
    snprintf(what, sizeof what, "%s image %lld", v->path, (long long)i);
    af_status st = af_image_decoder_decode(v->dec, v->vb.image[i], v->vb.image_len[i], v->h, v->w, v->c, v->pix, what);
    if (st) return st;
    af_image_normalize_chw(v->pix, v->h, v->w, v->c, flip, chw);
    return AF_OK;
}

af_status af_valset_run(af_valset *v, af_backbone *bb, const float *centres, int64_t n_centres,
                        af_valset_result *r, float **emb_out)
{
    const int D = bb->cfg.embedding, B = bb->cfg.max_batch;
    const size_t img = (size_t)v->c * v->h * v->w;
    memset(r, 0, sizeof *r);
    float *x = af_malloc(sizeof(float) * img * B, "validation batch");
    float *e = af_malloc(sizeof(float) * (size_t)v->n * D, "embeddings");
    float *ef = af_malloc(sizeof(float) * (size_t)v->n * D, "mirrored embeddings");
    double *en = af_malloc(sizeof(double) * (size_t)v->n * D, "combined embeddings");
    double *dist = af_malloc(sizeof(double) * v->n_pairs, "pair distances");
    float *ecomb = NULL;
    af_status st = AF_OK;
    if (!x || !e || !ef || !en || !dist) { st = AF_ERR_NOMEM; goto done; }
    for (int flip = 0; flip < 2 && !st; flip++) {
        float *dst = flip ? ef : e;
        for (int64_t s = 0; s < v->n && !st; s += B) {
            int nb = (int)(v->n - s < B ? v->n - s : B);
            for (int k = 0; k < nb && !st; k++) st = load_image(v, s + k, flip, x + img * k);
            const float *out;
            if (!st && !(st = af_backbone_forward(bb, x, nb, 0, NULL, &out)))
                memcpy(dst + (size_t)s * D, out, sizeof(float) * (size_t)nb * D);
            if (!st && v->progress) st = v->progress(v->progress_user);
        }
    }
    if (st) goto done;
    if ((st = af_verify_embed_combine(e, ef, (size_t)v->n, (size_t)D, en, &r->ver.xnorm))) goto done;
    double xnorm = r->ver.xnorm;
    if (v->is_bin) af_verify_pair_dist(en, v->n_pairs, (size_t)D, dist);
    else if ((st = af_verify_pair_dist_indexed(en, (size_t)v->n, (size_t)D, v->pa, v->pb, v->n_pairs, dist))) goto done;
    if ((st = af_verify_evaluate(dist, v->issame, v->n_pairs, &r->ver))) goto done;
    r->ver.xnorm = xnorm;
    /* The combined embedding in float, for centres and for the caller. */
    ecomb = e;
    for (size_t i = 0; i < (size_t)v->n * D; i++) ecomb[i] = (float)en[i];
    if (centres && !v->is_bin && n_centres == v->n_classes) {
        if ((st = af_centres_accuracy(ecomb, v->labels, (size_t)v->n, (size_t)D, centres, v->n_classes, &r->centre_acc,
                                      NULL)))
            goto done;
        r->has_centre = 1;
    }
    if (emb_out) {
        *emb_out = ecomb;
        e = NULL;
    }
done:
    free(x); free(e); free(ef); free(en); free(dist);
    return st;
}
