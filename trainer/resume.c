/* The resume decision: a checkpoint continues a run only if the run is the same
 * one. seed and step are the whole RNG state, so any key that shapes the
 * trajectory (data, model, margin, sampling, optimizer, batch) must match, or
 * the user must say resume_allow_changes = key,... (or all) to continue anyway;
 * lr, num_epoch, output, max_steps, frequent, save_every and the layout may
 * change freely. num_classes may grow (class growth, issue 11). */
#include <stdio.h>
#include <string.h>

#include "arcface/data.h"
#include "resume.h"

/* Keys whose change makes the checkpoint's state a different shape: no
 * override can load it. */
static const char *const structural[] = {"network", "embedding_size", "optimizer"};
/* Every key compared, in the order the message lists them. */
static const char *const compared[] = {
    "seed", "rec", "network", "embedding_size", "margin_list", "scale", "margin_grad", "easy_margin",
    "interclass_filtering_threshold", "sample_rate", "sample_shards", "optimizer", "fc_update", "gradient_acc",
    "dropout", "batch_size",
};
#define N_COMPARED (sizeof compared / sizeof compared[0])

static int in_list(const char *list, const char *key)
{
    char buf[AF_CFG_STR];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        if (!strcmp(t, key) || !strcmp(t, "all")) return 1;
    return 0;
}

static af_status check_allow_list(const char *list)
{
    char buf[AF_CFG_STR];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int known = !strcmp(t, "all");
        for (size_t i = 0; i < N_COMPARED && !known; i++) known = !strcmp(t, compared[i]);
        if (!known) {
            char keys[512];
            size_t u = 0;
            for (size_t i = 0; i < N_COMPARED && u < sizeof keys; i++)
                u += (size_t)snprintf(keys + u, sizeof keys - u, "%s%s", i ? ", " : "", compared[i]);
            return af_errorf(AF_ERR_ARG, "configuration key 'resume_allow_changes': '%s' is not a key a resume compares "
                             "(one of: %s; or all)", t, keys);
        }
    }
    return AF_OK;
}

static void f3(char *b, size_t cap, const float *v)
{
    snprintf(b, cap, "(%.9g, %.9g, %.9g)", v[0], v[1], v[2]);
}

/* The value of `key` in c, as text (global batch for batch_size). */
static void value_of(const char *key, const af_config *c, int64_t global_batch, char *b, size_t cap)
{
    if (!strcmp(key, "seed")) snprintf(b, cap, "%llu", (unsigned long long)c->seed);
    else if (!strcmp(key, "rec")) snprintf(b, cap, "'%s'", c->rec);
    else if (!strcmp(key, "network")) snprintf(b, cap, "'%s'", c->network);
    else if (!strcmp(key, "embedding_size")) snprintf(b, cap, "%d", c->embedding_size);
    else if (!strcmp(key, "margin_list")) f3(b, cap, c->margin_list);
    else if (!strcmp(key, "scale")) snprintf(b, cap, "%.9g", c->scale);
    else if (!strcmp(key, "margin_grad")) snprintf(b, cap, "'%s'", c->margin_grad);
    else if (!strcmp(key, "easy_margin")) snprintf(b, cap, "%s", c->easy_margin ? "True" : "False");
    else if (!strcmp(key, "interclass_filtering_threshold")) snprintf(b, cap, "%.9g", c->interclass_filtering_threshold);
    else if (!strcmp(key, "sample_rate")) snprintf(b, cap, "%.17g", c->sample_rate);
    else if (!strcmp(key, "sample_shards")) snprintf(b, cap, "%d", c->sample_shards);
    else if (!strcmp(key, "optimizer")) snprintf(b, cap, "'%s'", c->optimizer);
    else if (!strcmp(key, "fc_update")) snprintf(b, cap, "'%s'", c->fc_update);
    else if (!strcmp(key, "gradient_acc")) snprintf(b, cap, "%d", c->gradient_acc);
    else if (!strcmp(key, "dropout")) snprintf(b, cap, "%.9g", c->dropout);
    else if (!strcmp(key, "batch_size")) snprintf(b, cap, "%lld", (long long)global_batch);
    else snprintf(b, cap, "?");
}

af_status af_resume_check(af_ckpt_info *info, const af_config *cfg, const af_ctx *ctx, const af_dataset *ds,
                          const char *path, int log)
{
    af_status st = check_allow_list(cfg->resume_allow_changes);
    if (st) return st;
    int grows = ctx->num_classes > info->num_classes;
    char refused[3072] = "", allowed[3072] = "", a[300], b[300];
    char refused_keys[512] = "";
    size_t nr = 0, na = 0, nk = 0;
    int n_refused = 0;
    /* Listed with the other differences, not instead of them: the user should
     * learn everything that stands in the way from one refusal. */
    if (ctx->num_classes < info->num_classes) {
        nr += (size_t)snprintf(refused, sizeof refused, "\n  num_classes: checkpoint %lld, this run %lld (a resume may "
                               "add classes but never drop them: cannot be allowed)", (long long)info->num_classes,
                               (long long)ctx->num_classes);
        nk += (size_t)snprintf(refused_keys, sizeof refused_keys, "num_classes");
        n_refused++;
    }
    for (size_t i = 0; i < N_COMPARED; i++) {
        const char *key = compared[i];
        value_of(key, &info->cfg, info->global_batch, a, sizeof a);
        value_of(key, cfg, (int64_t)cfg->batch_size * ctx->W, b, sizeof b);
        if (!strcmp(a, b)) continue;
        const char *label = strcmp(key, "batch_size") ? key : "global batch (batch_size x workers)";
        int structural_key = 0;
        for (size_t k = 0; k < sizeof structural / sizeof *structural; k++) structural_key |= !strcmp(key, structural[k]);
        /* A larger dataset is how classes grow: its rec differs by nature. */
        int ok = !structural_key && ((grows && !strcmp(key, "rec")) || in_list(cfg->resume_allow_changes, key));
        char *dst = ok ? allowed : refused;
        size_t *u = ok ? &na : &nr, cap = ok ? sizeof allowed : sizeof refused;
        if (*u < cap)
            *u += (size_t)snprintf(dst + *u, cap - *u, "\n  %s: checkpoint %s, this run %s%s", label, a, b,
                                   structural_key ? " (the state has another shape: cannot be allowed)"
                                   : ok && grows && !strcmp(key, "rec") ? " (with the growth in classes)" : "");
        n_refused += !ok;
        if (!ok && nk < sizeof refused_keys)
            nk += (size_t)snprintf(refused_keys + nk, sizeof refused_keys - nk, "%s%s", n_refused > 1 ? ", " : "", key);
    }
    if (n_refused) {
        /* The values may not fit one error message: rank 0 lists them first. */
        if (log) {
            fprintf(stderr, "arcface-train: %s: the run differs from the checkpoint's:%s\n", path, refused);
            fflush(stderr);
        }
        return af_errorf(AF_ERR_ARG, "%s: this run differs from the checkpoint's in %d key%s (%s; values listed by rank "
                         "0); refusing to resume%s. resume_allow_changes = KEY,... (or all) continues despite a "
                         "difference; a new output folder or resume = none starts afresh", path, n_refused,
                         n_refused > 1 ? "s" : "", refused_keys,
                         ctx->num_classes < info->num_classes ? " (a resume may add classes but never drop them)" : "");
    }
    /* The position is the checkpoint's place in its own dataset's epoch. A
     * different dataset (class growth, or rec allowed to change) is a
     * deliberate new start of the data: its epoch begins at its first sample,
     * as every insightface resume does (arcface_torch resumes at an epoch's
     * start). The same dataset must still hold the position. */
    int64_t G = (int64_t)cfg->batch_size * ctx->W, n_img = af_dataset_size(ds);
    int64_t positions = af_sampler_epoch_positions(n_img, G, 1);
    if (strcmp(info->cfg.rec, cfg->rec)) {
        if (info->sample_position && log)
            printf("resume: the dataset changed ('%s' -> '%s'): epoch %lld starts at its first sample, not at the "
                   "checkpoint's sample %lld of the old dataset\n", info->cfg.rec, cfg->rec, (long long)info->epoch,
                   (long long)info->sample_position);
        info->sample_position = 0;
    } else if (info->sample_position > positions) {
        return af_errorf(AF_ERR_ARG, "%s: the checkpoint stopped at sample %lld of epoch %lld, but rec '%s' now holds "
                         "%lld images (%s), %lld samples an epoch at the global batch %lld: the data behind rec changed "
                         "since the checkpoint; refusing to resume. Point rec at the checkpoint's data, or resume = none "
                         "(or a new output folder) to start afresh", path, (long long)info->sample_position,
                         (long long)info->epoch, cfg->rec, (long long)n_img, af_dataset_describe(ds),
                         (long long)positions, (long long)G);
    }
    if (log && allowed[0]) printf("resume: continuing despite these differences (resume_allow_changes = '%s'):%s\n",
                                  cfg->resume_allow_changes, allowed);
    if (log && grows)
        printf("resume: class growth from %lld to %lld classes: the %lld existing rows keep their weights and optimizer "
               "state; rows [%lld, %lld) start as a fresh run's (from seed %llu and class id, zero optimizer state)\n",
               (long long)info->num_classes, (long long)ctx->num_classes, (long long)info->num_classes,
               (long long)info->num_classes, (long long)ctx->num_classes, (unsigned long long)cfg->seed);
    return AF_OK;
}
