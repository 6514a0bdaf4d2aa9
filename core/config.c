/* Parsing, checking and printing of the training configuration
 * (include/arcface/config.h). One table lists every key with its type and
 * place in af_config, so parsing, printing and "unknown key" come from the
 * same source. */
#include "arcface/config.h"
#include "arcface/transport.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_INT, T_I64, T_U64, T_FLOAT, T_DOUBLE, T_BOOL, T_STR, T_FLOAT3 } key_type;

typedef struct {
    const char *name;
    key_type type;
    size_t off;
    size_t size; /* for strings */
} key_def;

#define K(name, type) {#name, type, offsetof(af_config, name), sizeof(((af_config *)0)->name)}
static const key_def keys[] = {
    K(network, T_STR), K(embedding_size, T_INT), K(dropout, T_FLOAT),
    K(margin_list, T_FLOAT3), K(scale, T_FLOAT), K(margin_grad, T_STR), K(easy_margin, T_BOOL),
    K(interclass_filtering_threshold, T_FLOAT),
    K(sample_rate, T_DOUBLE), K(sample_shards, T_INT), K(fc_update, T_STR), K(num_classes, T_I64),
    K(batch_size, T_INT), K(lr, T_FLOAT), K(momentum, T_FLOAT), K(weight_decay, T_FLOAT), K(clip_grad, T_FLOAT),
    K(optimizer, T_STR), K(num_epoch, T_INT), K(warmup_epoch, T_INT), K(gradient_acc, T_INT),
    K(max_steps, T_I64), K(seed, T_U64),
    K(rec, T_STR), K(flip, T_BOOL), K(skip_corrupt, T_BOOL), K(loader_threads, T_INT),
    K(ps, T_INT), K(threads, T_INT), K(msg_chunk_bytes, T_I64),
    K(output, T_STR), K(frequent, T_INT), K(profile, T_BOOL), K(save_every, T_INT), K(keep_checkpoints, T_INT),
    K(resume, T_STR), K(resume_allow_changes, T_STR), K(verbose, T_INT), K(val_targets, T_STR),
};
#undef K
#define NKEYS (sizeof keys / sizeof keys[0])

void af_config_defaults(af_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->network, sizeof c->network, "fmnist");
    c->embedding_size = 512;
    c->margin_list[0] = 1.0f; c->margin_list[1] = 0.5f; c->margin_list[2] = 0.0f;
    c->scale = 64;
    snprintf(c->margin_grad, sizeof c->margin_grad, "analytic");
    c->sample_rate = 1.0f;
    c->sample_shards = 1;
    snprintf(c->fc_update, sizeof c->fc_update, "sparse");
    c->batch_size = 128;
    c->lr = 0.1f; c->momentum = 0.9f; c->weight_decay = 5e-4f; c->clip_grad = 5.0f;
    snprintf(c->optimizer, sizeof c->optimizer, "sgd");
    c->num_epoch = 20;
    c->gradient_acc = 1;
    c->seed = 2048;
    snprintf(c->rec, sizeof c->rec, "fmnist:/usr/share/datasets/fashion-mnist");
    c->flip = 1;
    c->loader_threads = 2;
    c->ps = 1;
    c->msg_chunk_bytes = AF_CHUNK_DEFAULT;
    snprintf(c->output, sizeof c->output, "work_dirs/arcface");
    c->frequent = 10;
    c->keep_checkpoints = 3;
    snprintf(c->resume, sizeof c->resume, "auto");
}

/* arcface_torch keys with no meaning here (GPU, DALI, wandb, derived values):
 * accepted so its config files load, and listed in af_config.ignored. */
static const char *const ignored_keys[] = {
    "fp16", "dali", "dali_aug", "num_workers", "save_all_states", "using_wandb", "wandb_key", "wandb_entity",
    "wandb_project", "wandb_log_all", "wandb_resume", "suffix_run_name", "notes", "num_image", "total_batch_size",
    "warmup_step", "total_step",
};

static const key_def *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

/* Strips surrounding blanks and one level of matching quotes, in place. */
static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) {
        s[n - 1] = 0;
        s++;
    }
    return s;
}

static int parse_double(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return end != s && *end == 0 && errno == 0 && isfinite(*v);
}

static int parse_ll(const char *s, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return end != s && *end == 0 && errno == 0;
}

af_status af_config_set(af_config *c, const char *key, const char *value, const char *where)
{
    const key_def *k = find_key(key);
    if (!k) {
        for (size_t i = 0; i < sizeof ignored_keys / sizeof ignored_keys[0]; i++)
            if (!strcmp(key, ignored_keys[i])) {
                size_t n = strlen(c->ignored);
                if (!strstr(c->ignored, key) && n + strlen(key) + 2 < sizeof c->ignored)
                    snprintf(c->ignored + n, sizeof c->ignored - n, "%s%s", n ? " " : "", key);
                return AF_OK;
            }
        return af_errorf(AF_ERR_ARG, "%s: unknown configuration key '%s'", where, key);
    }
    char buf[AF_CFG_STR * 2];
    if (strlen(value) >= sizeof buf)
        return af_errorf(AF_ERR_ARG, "%s: value of key '%s' is too long", where, key);
    strcpy(buf, value);
    char *v = trim(buf);
    void *dst = (char *)c + k->off;
    double d;
    long long ll;
    switch (k->type) {
    case T_INT:
        if (!parse_ll(v, &ll) || ll < -2147483647LL || ll > 2147483647LL)
            return af_errorf(AF_ERR_ARG, "%s: key '%s' expects an integer, got '%s'", where, key, v);
        *(int *)dst = (int)ll;
        break;
    case T_I64:
        if (!parse_ll(v, &ll)) return af_errorf(AF_ERR_ARG, "%s: key '%s' expects an integer, got '%s'", where, key, v);
        *(int64_t *)dst = ll;
        break;
    case T_U64:
        if (!parse_ll(v, &ll) || ll < 0)
            return af_errorf(AF_ERR_ARG, "%s: key '%s' expects a non-negative integer, got '%s'", where, key, v);
        *(uint64_t *)dst = (uint64_t)ll;
        break;
    case T_FLOAT:
        if (!parse_double(v, &d)) return af_errorf(AF_ERR_ARG, "%s: key '%s' expects a number, got '%s'", where, key, v);
        *(float *)dst = (float)d;
        break;
    case T_DOUBLE:
        if (!parse_double(v, &d)) return af_errorf(AF_ERR_ARG, "%s: key '%s' expects a number, got '%s'", where, key, v);
        *(double *)dst = d;
        break;
    case T_BOOL:
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) *(int *)dst = 1;
        else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) *(int *)dst = 0;
        else return af_errorf(AF_ERR_ARG, "%s: key '%s' expects true/false or 1/0, got '%s'", where, key, v);
        break;
    case T_STR:
        if (strlen(v) >= k->size) return af_errorf(AF_ERR_ARG, "%s: value of key '%s' is too long", where, key);
        strcpy((char *)dst, v);
        break;
    case T_FLOAT3: {
        /* (m1, m2, m3), [m1, m2, m3] or m1,m2,m3 */
        size_t n = strlen(v);
        if (n >= 2 && ((v[0] == '(' && v[n - 1] == ')') || (v[0] == '[' && v[n - 1] == ']'))) {
            v[n - 1] = 0;
            v++;
        }
        float out[3];
        int got = 0;
        for (char *save = NULL, *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (got == 3 || !parse_double(trim(tok), &d))
                return af_errorf(AF_ERR_ARG, "%s: key '%s' expects three numbers m1,m2,m3, got '%s'", where, key, value);
            out[got++] = (float)d;
        }
        if (got != 3)
            return af_errorf(AF_ERR_ARG, "%s: key '%s' expects three numbers m1,m2,m3, got '%s'", where, key, value);
        memcpy(dst, out, sizeof out);
        break;
    }
    }
    return AF_OK;
}

af_status af_config_load_file(af_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot open configuration file: %s", path, strerror(errno));
    char line[1024], where[AF_CFG_STR + 32];
    int lineno = 0;
    af_status st = AF_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        /* arcface_torch config files: skip their imports and `config = edict()`. */
        if (!strncmp(s, "from ", 5) || !strncmp(s, "import ", 7)) continue;
        char *eq = strchr(s, '=');
        if (!eq) { st = af_errorf(AF_ERR_ARG, "%s: expected 'key = value', got '%s'", where, s); break; }
        *eq = 0;
        char *key = trim(s);
        if (!strncmp(key, "config.", 7)) key += 7;
        if (!strcmp(key, "config")) continue;
        if ((st = af_config_set(c, key, eq + 1, where))) break;
    }
    fclose(f);
    return st;
}

af_status af_config_parse_args(af_config *c, int argc, char **argv, int first)
{
    af_status st;
    /* The configuration file (a bare argument) applies before any override. */
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], "--", 2)) {
            if ((st = af_config_load_file(c, argv[i]))) return st;
        } else if (!strchr(argv[i], '=')) {
            i++;
        }
    }
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], "--", 2)) continue;
        char key[128];
        const char *val, *arg = argv[i] + 2, *eq = strchr(arg, '=');
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            if (i + 1 >= argc) return af_errorf(AF_ERR_ARG, "command line: option '--%s' needs a value", arg);
            snprintf(key, sizeof key, "%s", arg);
            val = argv[++i];
        }
        for (char *p = key; *p; p++) if (*p == '-') *p = '_';
        if ((st = af_config_set(c, key, val, "command line"))) return st;
    }
    return AF_OK;
}

af_status af_config_check(const af_config *c)
{
#define REQUIRE(cond, key, ...) do { if (!(cond)) return af_errorf(AF_ERR_ARG, "configuration key '" key "': " __VA_ARGS__); } while (0)
    REQUIRE(c->embedding_size > 0 && c->embedding_size <= 65536, "embedding_size", "must be in [1, 65536], got %d", c->embedding_size);
    REQUIRE(c->dropout >= 0 && c->dropout < 1, "dropout", "must be in [0, 1), got %g", c->dropout);
    REQUIRE(c->margin_list[0] >= 1, "margin_list", "m1 must be >= 1, got %g", c->margin_list[0]);
    REQUIRE(c->margin_list[1] >= 0 && c->margin_list[1] < 3.14159f, "margin_list", "m2 must be in [0, pi), got %g", c->margin_list[1]);
    REQUIRE(c->margin_list[2] >= 0, "margin_list", "m3 must be >= 0, got %g", c->margin_list[2]);
    REQUIRE(c->scale > 0, "scale", "must be > 0, got %g", c->scale);
    REQUIRE(!strcmp(c->margin_grad, "analytic") || !strcmp(c->margin_grad, "arcface_torch"), "margin_grad",
            "must be 'analytic' or 'arcface_torch', got '%s'", c->margin_grad);
    REQUIRE(c->interclass_filtering_threshold < 1, "interclass_filtering_threshold", "must be < 1, got %g", c->interclass_filtering_threshold);
    REQUIRE(c->sample_rate > 0 && c->sample_rate <= 1, "sample_rate", "must be in (0, 1], got %g", c->sample_rate);
    REQUIRE(c->sample_shards >= 1, "sample_shards", "must be >= 1, got %d", c->sample_shards);
    REQUIRE(!strcmp(c->fc_update, "sparse") || !strcmp(c->fc_update, "dense"), "fc_update",
            "must be 'sparse' or 'dense', got '%s'", c->fc_update);
    REQUIRE(c->num_classes >= 0, "num_classes", "must be >= 0 (0: from the dataset), got %lld", (long long)c->num_classes);
    REQUIRE(c->msg_chunk_bytes >= AF_CHUNK_MIN && c->msg_chunk_bytes <= AF_CHUNK_DEFAULT, "msg_chunk_bytes",
            "must be in [%lld, %lld] (one MPI message), got %lld", (long long)AF_CHUNK_MIN, (long long)AF_CHUNK_DEFAULT,
            (long long)c->msg_chunk_bytes);
    REQUIRE(c->batch_size >= 1, "batch_size", "must be >= 1, got %d", c->batch_size);
    REQUIRE(c->lr >= 0, "lr", "must be >= 0, got %g", c->lr);
    REQUIRE(c->momentum >= 0 && c->momentum < 1, "momentum", "must be in [0, 1), got %g", c->momentum);
    REQUIRE(c->weight_decay >= 0, "weight_decay", "must be >= 0, got %g", c->weight_decay);
    REQUIRE(c->clip_grad >= 0, "clip_grad", "must be >= 0 (0: no clipping), got %g", c->clip_grad);
    REQUIRE(!strcmp(c->optimizer, "sgd") || !strcmp(c->optimizer, "adamw"), "optimizer", "must be 'sgd' or 'adamw', got '%s'", c->optimizer);
    REQUIRE(strcmp(c->optimizer, "adamw") || !strcmp(c->fc_update, "dense"), "optimizer",
            "'adamw' needs fc_update = dense (AdamW's bias correction is per step, not per sampled row)");
    REQUIRE(c->num_epoch >= 1, "num_epoch", "must be >= 1, got %d", c->num_epoch);
    REQUIRE(c->warmup_epoch >= 0 && c->warmup_epoch < c->num_epoch, "warmup_epoch", "must be in [0, num_epoch), got %d", c->warmup_epoch);
    REQUIRE(c->gradient_acc >= 1, "gradient_acc", "must be >= 1, got %d", c->gradient_acc);
    REQUIRE(c->max_steps >= 0, "max_steps", "must be >= 0, got %lld", (long long)c->max_steps);
    REQUIRE(c->rec[0], "rec", "must name a dataset");
    REQUIRE(c->loader_threads >= 0 && c->loader_threads <= 64, "loader_threads", "must be in [0, 64], got %d", c->loader_threads);
    REQUIRE(c->ps >= 0, "ps", "must be >= 0, got %d", c->ps);
    REQUIRE(c->threads >= 0, "threads", "must be >= 0, got %d", c->threads);
    REQUIRE(c->output[0], "output", "must name a folder");
    REQUIRE(c->frequent >= 1, "frequent", "must be >= 1, got %d", c->frequent);
    REQUIRE(c->save_every >= 0, "save_every", "must be >= 0, got %d", c->save_every);
    REQUIRE(c->keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1, got %d", c->keep_checkpoints);
    REQUIRE(c->verbose >= 0, "verbose", "must be >= 0, got %d", c->verbose);
#undef REQUIRE
    return AF_OK;
}

void af_config_write(const af_config *c, FILE *f)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const void *p = (const char *)c + k->off;
        fprintf(f, "%s = ", k->name);
        switch (k->type) {
        case T_INT: case T_BOOL: fprintf(f, "%d\n", *(const int *)p); break;
        case T_I64: fprintf(f, "%lld\n", (long long)*(const int64_t *)p); break;
        case T_U64: fprintf(f, "%llu\n", (unsigned long long)*(const uint64_t *)p); break;
        case T_FLOAT: fprintf(f, "%.9g\n", *(const float *)p); break;
        case T_DOUBLE: fprintf(f, "%.17g\n", *(const double *)p); break;
        case T_STR: fprintf(f, "\"%s\"\n", (const char *)p); break;
        case T_FLOAT3: {
            const float *v = p;
            fprintf(f, "(%.9g, %.9g, %.9g)\n", v[0], v[1], v[2]);
            break;
        }
        }
    }
}
