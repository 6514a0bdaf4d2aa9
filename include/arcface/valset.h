/* Validation sets and running a model on them: insightface verification files
 * (lfw.bin, cfp_fp.bin, agedb_30.bin: encoded image pairs and issame flags) and
 * the Fashion-MNIST test split (the fixed 6,000-pair list of eval.h, plus class
 * labels for nearest-centre accuracy).
 *
 * Embedding rule, as insightface's verification.py: e = normalise(f(x) + f(flip x))
 * with the backbone in eval mode; images are decoded and converted to the
 * model's channels and size, then normalised as in training ((x/255 - 0.5)/0.5).
 * Nearest-centre accuracy uses the same e against the trained class centres
 * (the fc weights), by cosine. */
#ifndef ARCFACE_VALSET_H
#define ARCFACE_VALSET_H

#include <stdint.h>

#include "arcface/backbone.h"
#include "arcface/config.h"
#include "arcface/eval.h"
#include "arcface/status.h"

typedef struct af_valset af_valset;

/* Resolves and checks cfg->val_targets at the start of a run, so a bad target
 * fails before the first step, not at the first evaluation. Entries are
 * comma-separated: a .bin path, fmnist-test:DIR, or a bare name resolved as
 * insightface's CallBackVerification does, <rec folder>/<name>.bin (the rec
 * folder: rec itself, or the folder of a PREFIX.rec; recordio:, folder: and
 * fmnist: prefixes removed). Each resolved file is opened and parsed once.
 * Fills spec[i] (the resolved spec) and name[i] (its short name) for up to max
 * targets; *n = their number. Errors name val_targets, where it was set, the
 * entry and the file. Equal on all ranks: everything. */
af_status af_valset_resolve_targets(const af_config *cfg, int max, char (*spec)[AF_CFG_STR], char (*name)[64], int *n);
/* Opens spec as af_valset_open would and closes it (a .bin is parsed, not
 * decoded): a check at start that the target will load. */
af_status af_valset_check(const char *spec);
/* The short name a spec will have (as af_valset_name), without opening it. */
void af_valset_spec_name(const char *spec, char *buf, size_t cap);
/* spec: a .bin path, or fmnist-test:DIR. c, h, w: the model's input. */
af_status af_valset_open(af_valset **out, const char *spec, int c, int h, int w);
void af_valset_close(af_valset *v);
/* Short name for logs and metric columns: the file's base name ("lfw") or "fmnist". */
const char *af_valset_name(const af_valset *v);
int64_t af_valset_images(const af_valset *v);
/* The number of classes nearest-centre accuracy needs (0: not a labelled set). */
int af_valset_classes(const af_valset *v);

typedef struct {
    af_verify_result ver;      /* 10-fold protocol: acc_mean, acc_std, tar[], roc, xnorm */
    int has_centre;
    double centre_acc;         /* nearest-centre accuracy, when centres were given */
} af_valset_result;

/* Embeds every image and its mirror with bb (eval mode, batches of at most
 * bb->cfg.max_batch) and evaluates. centres (n_centres, D) or NULL; n_centres
 * must equal af_valset_classes() to be used. emb (optional): *emb receives a
 * malloc'd (images, D) float array of the combined, normalised embeddings. */
af_status af_valset_run(af_valset *v, af_backbone *bb, const float *centres, int64_t n_centres,
                        af_valset_result *r, float **emb);
/* fn(user) is called after every batch of af_valset_run, from its thread; a
 * non-OK return stops the run with that status. For a caller that must show it
 * is alive during a long evaluation (the trainer's worker 0, whose peers wait
 * for it under the progress deadline, include/arcface/ctx.h). fn NULL: none. */
void af_valset_set_progress(af_valset *v, af_status (*fn)(void *), void *user);
/* Labels of the images (NULL for .bin sets). */
const int32_t *af_valset_labels(const af_valset *v);

#endif
