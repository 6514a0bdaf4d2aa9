/* Parsing, checking and printing of the training configuration
 * (include/arcface/config.h). One table lists every key with its type and
 * place in af_config, so parsing, printing and "unknown key" come from the
 * same source. Files are read as insightface's arcface_torch reads its
 * configs/NAME.py (base.py first, Python expressions on the right, evaluated by
 * core/pyconf.c); the older key = value files are the same grammar with bare
 * values allowed. Each key remembers where it was last set (file:line), so a
 * check at start can name the line to fix. */
#include "arcface/config.h"
#include "arcface/transport.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arcface/margin.h"
#include "pyconf.h"

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
    K(ps, T_INT), K(threads, T_INT), K(precision, T_STR), K(fp16, T_BOOL), K(msg_chunk_bytes, T_I64),
    K(comm_timeout, T_DOUBLE),
    K(output, T_STR), K(frequent, T_INT), K(profile, T_BOOL), K(save_every, T_INT), K(keep_checkpoints, T_INT),
    K(resume, T_STR), K(resume_allow_changes, T_STR), K(verbose, T_INT), K(val_targets, T_STR), K(init_from, T_STR),
};
#undef K
#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= AF_CFG_MAX_KEYS, "af_config.where has a slot per key");

void af_config_defaults(af_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->network, sizeof c->network, "fmnist");
    c->embedding_size = 512;
    c->margin_list[0] = 1.0f; c->margin_list[1] = 0.5f; c->margin_list[2] = 0.0f;
    c->scale = 64;
    snprintf(c->margin_grad, sizeof c->margin_grad, "arcface_torch");
    c->sample_rate = 1.0f;
    c->sample_shards = 1;
    /* insightface's default: PartialFC_V2's weight is one torch Parameter, so
     * SGD's momentum and weight decay move every row every step. */
    snprintf(c->fc_update, sizeof c->fc_update, "dense");
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
    c->comm_timeout = 1800; /* torch.distributed's default; see the key in config.h */
    snprintf(c->output, sizeof c->output, "work_dirs/arcface");
    c->frequent = 10;
    c->keep_checkpoints = 3;
    snprintf(c->resume, sizeof c->resume, "auto");
}

/* arcface_torch keys with no meaning here (GPU, DALI, wandb, derived values,
 * and keys its train_v2.py never reads: loss, decay_epoch, lr_func; it takes
 * margin_list and the polynomial schedule instead): accepted so its config
 * files load, and listed in af_config.ignored. */
static const char *const ignored_keys[] = {
    "dali", "dali_aug", "num_workers", "save_all_states", "using_wandb", "wandb_key", "wandb_entity",
    "wandb_project", "wandb_log_all", "wandb_resume", "suffix_run_name", "notes", "num_image", "total_batch_size",
    "warmup_step", "total_step", "save_artifacts", "loss", "decay_epoch", "lr_func",
};

static int is_ignored(const char *key)
{
    for (size_t i = 0; i < sizeof ignored_keys / sizeof ignored_keys[0]; i++)
        if (!strcmp(key, ignored_keys[i])) return 1;
    return 0;
}

static void add_word(char *list, size_t cap, const char *word)
{
    size_t n = strlen(list), w = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += w)
        if ((p == list || p[-1] == ' ') && (p[w] == ' ' || !p[w])) return;
    if (n + w + 2 < cap) snprintf(list + n, cap - n, "%s%s", n ? " " : "", word);
}

const char *af_config_where(const af_config *c, const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, key)) return c->where[i][0] ? c->where[i] : "default";
    return "default";
}

static const key_def *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static char *trim_blanks(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Strips surrounding blanks and one level of matching quotes, in place. */
static char *trim(char *s)
{
    s = trim_blanks(s);
    size_t n = strlen(s);
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

/* raw: value is already a Python value's text (no quotes to strip). */
static af_status set_key(af_config *c, const char *key, const char *value, const char *where, int raw)
{
    const key_def *k = find_key(key);
    if (!k) {
        if (is_ignored(key)) {
            add_word(c->ignored, sizeof c->ignored, key);
            return AF_OK;
        }
        return af_errorf(AF_ERR_ARG, "%s: unknown configuration key '%s'", where, key);
    }
    char buf[AF_CFG_STR * 2];
    if (strlen(value) >= sizeof buf)
        return af_errorf(AF_ERR_ARG, "%s: value of key '%s' is too long", where, key);
    strcpy(buf, value);
    char *v = raw ? buf : trim(buf);
    if (!raw && (*v == '"' || *v == '\'') && (strlen(v) < 2 || v[strlen(v) - 1] != *v))
        return af_errorf(AF_ERR_ARG, "%s: key '%s': unterminated string: the %c is never closed in '%s'", where, key, *v, v);
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
    snprintf(c->where[k - keys], sizeof c->where[0], "%s", where);
    return AF_OK;
}

af_status af_config_set(af_config *c, const char *key, const char *value, const char *where)
{
    return set_key(c, key, value, where, 0);
}


/* One file being read: the values its own lines assigned, for config.KEY
 * references (each arcface_torch file builds its own edict, so a reference
 * sees only earlier lines of the same file). */
typedef struct {
    char key[64];
    pyv val;
} sym;

typedef struct {
    const char *path;
    const char *stem;   /* the config's name, for output = None */
    char stem_buf[AF_CFG_STR];
    sym syms[128];
    int nsyms;
} loader;

static int lookup(void *user, const char *key, pyv *out)
{
    loader *L = user;
    for (int i = L->nsyms - 1; i >= 0; i--)
        if (!strcmp(L->syms[i].key, key)) {
            *out = L->syms[i].val;
            return 1;
        }
    return 0;
}

static void remember(loader *L, const char *key, const pyv *v)
{
    for (int i = 0; i < L->nsyms; i++)
        if (!strcmp(L->syms[i].key, key)) {
            L->syms[i].val = *v;
            return;
        }
    if (L->nsyms == (int)(sizeof L->syms / sizeof L->syms[0])) return;
    snprintf(L->syms[L->nsyms].key, sizeof L->syms[0].key, "%s", key);
    L->syms[L->nsyms++].val = *v;
}

/* key = <value text> at `where`: evaluates the value and applies it. */
/* cmdline: a command-line value, which is taken as typed unless it is a Python
 * literal that means something else (False, None, ['lfw']): a path such as
 * /data/run(2) or a number-like name must not be evaluated. */
static af_status assign(af_config *c, loader *L, const char *key, char *text, const char *where, int cmdline)
{
    pyv v;
    char msg[256], out[AF_CFG_STR * 2];
    pyv_status ps = pyv_eval(text, lookup, L, &v, msg, sizeof msg);
    if (ps == PYV_ERR && !cmdline) return af_errorf(AF_ERR_ARG, "%s: key '%s': %s", where, key, msg);
    if (ps != PYV_OK) return set_key(c, key, text, where, 0); /* key = value files: r18, fmnist:/data */
    const key_def *k = find_key(key);
    if (cmdline && k && k->type == T_STR && (v.kind == PYV_INT || v.kind == PYV_FLOAT))
        return set_key(c, key, text, where, 0);
    remember(L, key, &v);
    int scalar = v.kind != PYV_TUPLE && v.kind != PYV_LIST;
    if (!strcmp(key, "output") && scalar && v.kind == PYV_NONE) {
        /* utils_config.get_config: output None means work_dirs/<config name>. */
        snprintf(out, sizeof out, "work_dirs/%s", L->stem);
        return set_key(c, key, out, where, 1);
    }
    if (!strcmp(key, "resume") && scalar && v.kind == PYV_BOOL)
        /* arcface_torch's switch: True continues from the run's own checkpoint in
         * output, False starts over. */
        return set_key(c, key, v.v.i ? "auto" : "none", where, 1);
    if (scalar && v.kind == PYV_NONE && !is_ignored(key))
        return af_errorf(AF_ERR_ARG, "%s: key '%s': None is not a value of this key (only output = None is: "
                         "work_dirs/<config name>)", where, key);
    if (!pyv_format(&v, out, sizeof out)) return af_errorf(AF_ERR_ARG, "%s: value of key '%s' is too long", where, key);
    return set_key(c, key, out, where, 1);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static af_status load_one(af_config *c, const char *path, const char *stem)
{
    struct stat sb;
    if (stat(path, &sb)) return af_errorf(AF_ERR_IO, "%s: cannot open configuration file: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return af_errorf(AF_ERR_ARG, "%s: configuration file is a %s, expected a regular file", path,
                         S_ISDIR(sb.st_mode) ? "directory" : "special file");
    if (sb.st_size > (1 << 20)) return af_errorf(AF_ERR_ARG, "%s: configuration file is larger than 1 MiB", path);
    FILE *f = fopen(path, "r");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot open configuration file: %s", path, strerror(errno));
    static loader L; /* 128 values: too big for the stack of a worker thread */
    memset(&L, 0, sizeof L);
    L.path = path;
    L.stem = stem;
    char line[1024], stmt[4096], where[AF_CFG_STR + 32];
    int lineno = 0, first = 0, in_def = 0;
    size_t used = 0;
    af_status st = AF_OK;
    while (!st && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            st = af_errorf(AF_ERR_ARG, "%s:%d: line longer than %d characters", path, lineno, (int)sizeof line - 2);
            break;
        }
        /* A function definition (older configs' lr_step_func): its body is the
         * indented lines after it; the value it defines is not used here. */
        if (in_def && (line[0] == ' ' || line[0] == '\t' || line[0] == '\n' || line[0] == '\r')) continue;
        in_def = 0;
        char *hash = pyv_comment(line);
        if (hash) *hash = 0;
        char *s = trim_blanks(line);
        if (!used) {
            if (!*s) continue;
            if (!strncmp(s, "def ", 4) || !strncmp(s, "class ", 6)) { in_def = 1; continue; }
            if (!strncmp(s, "from ", 5) || !strncmp(s, "import ", 7)) continue;
            first = lineno;
        }
        if (used + strlen(s) + 2 >= sizeof stmt) {
            st = af_errorf(AF_ERR_ARG, "%s:%d: statement longer than %d characters", path, first, (int)sizeof stmt - 2);
            break;
        }
        used += (size_t)snprintf(stmt + used, sizeof stmt - used, "%s%s", used ? " " : "", s);
        /* An open bracket or a trailing backslash continues the statement. */
        if (used && stmt[used - 1] == '\\') { stmt[--used] = 0; continue; }
        if (pyv_depth(stmt) > 0) continue;
        used = 0;
        snprintf(where, sizeof where, "%s:%d", path, first);
        char *eq = strchr(stmt, '=');
        if (!eq || eq[1] == '=') {
            st = af_errorf(AF_ERR_ARG, "%s: expected 'config.key = value' or 'key = value', got '%s'", where, stmt);
            break;
        }
        *eq = 0;
        char *key = trim_blanks(stmt), *val = trim_blanks(eq + 1);
        if (!strcmp(key, "config")) continue; /* config = edict() */
        if (!strncmp(key, "config.", 7)) key += 7;
        int ok = *key && !isdigit((unsigned char)*key);
        for (const char *p = key; *p; p++) ok &= isalnum((unsigned char)*p) || *p == '_';
        if (!ok) {
            st = af_errorf(AF_ERR_ARG, "%s: '%s' is not a key: expected 'config.key = value' or 'key = value'", where, key);
            break;
        }
        if (!*val) {
            st = af_errorf(AF_ERR_ARG, "%s: key '%s' has no value", where, key);
            break;
        }
        st = assign(c, &L, key, val, where, 0);
    }
    if (!st && used)
        st = af_errorf(AF_ERR_ARG, "%s:%d: the statement that starts here never closes its bracket", path, first);
    if (!st && ferror(f)) st = af_errorf(AF_ERR_IO, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    return st;
}

static const char *config_stem(const char *path, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    snprintf(buf, cap, "%s", b ? b + 1 : path);
    size_t n = strlen(buf);
    if (n > 3 && !strcmp(buf + n - 3, ".py")) buf[n - 3] = 0;
    return buf;
}

af_status af_config_load_file(af_config *c, const char *path)
{
    /* insightface's get_config: configs/base.py first, then the named file
     * over it; output = None (in either) names work_dirs/<config name>. */
    char stem[AF_CFG_STR], dir[AF_CFG_STR + 16], base[AF_CFG_STR + 32];
    const char *b = strrchr(path, '/');
    snprintf(stem, sizeof stem, "%s", b ? b + 1 : path);
    if (ends_with(stem, ".py")) stem[strlen(stem) - 3] = 0;
    snprintf(dir, sizeof dir, "%.*s", b ? (int)(b - path) : 1, b ? path : ".");
    snprintf(base, sizeof base, "%s/base.py", dir);
    struct stat sb;
    if (ends_with(path, ".py") && strcmp(b ? b + 1 : path, "base.py") && !stat(base, &sb) && S_ISREG(sb.st_mode)) {
        af_status st = load_one(c, base, stem);
        if (st) return st;
        snprintf(c->base_file, sizeof c->base_file, "%s", base);
    }
    return load_one(c, path, stem);
}

af_status af_config_parse_args(af_config *c, int argc, char **argv, int first)
{
    af_status st;
    static loader cl; /* output = None on the command line names the config file's folder too */
    memset(&cl, 0, sizeof cl);
    cl.stem = "arcface";
    /* The configuration file (a bare argument) applies before any override. */
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], "--", 2)) {
            if ((st = af_config_load_file(c, argv[i]))) return st;
            cl.stem = config_stem(argv[i], cl.stem_buf, sizeof cl.stem_buf);
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
        char text[AF_CFG_STR * 2];
        if (strlen(val) >= sizeof text) return af_errorf(AF_ERR_ARG, "command line: value of '--%s' is too long", key);
        strcpy(text, val);
        if ((st = assign(c, &cl, key, text, "command line", 1))) return st;
    }
    return AF_OK;
}

/* arcface_torch's fp16 = True asks for half-precision autocast; on a CPU the
 * half type that computes fast is bfloat16. An explicit precision wins. */
af_precision af_config_precision(const af_config *c)
{
    if (!strcmp(c->precision, "bf16")) return AF_PRECISION_BF16;
    if (!strcmp(c->precision, "fp32")) return AF_PRECISION_FP32;
    return c->fp16 ? AF_PRECISION_BF16 : AF_PRECISION_FP32;
}

af_status af_config_check(const af_config *c)
{
    /* Messages start with where the key was set, so the line to fix is named. */
#define REQUIRE(cond, key, ...) do { if (!(cond)) { af_errorf(AF_ERR_ARG, "configuration key '" key "': " __VA_ARGS__); \
    return af_error_wrap(AF_ERR_ARG, "%s", af_config_where(c, key)); } } while (0)
    /* Bounds on the values that shape the loss and the update (no real
     * insightface config comes near them: s = 64, margins up to 0.5, lr up to
     * 0.4, weight_decay up to 0.1, embedding 512): a value outside trains to a
     * loss saturated at the probability clamp (69.08) or to NaN, and used to end
     * "done" with exit 0. !(x <= hi) also refuses NaN. */
    REQUIRE(c->embedding_size >= 2 && c->embedding_size <= 65536, "embedding_size", "must be in [2, 65536], got %d", c->embedding_size);
    REQUIRE(c->dropout >= 0 && c->dropout < 1, "dropout", "must be in [0, 1), got %g", c->dropout);
    REQUIRE(c->margin_list[0] >= 1 && c->margin_list[0] <= 4, "margin_list", "m1 must be in [1, 4] (SphereFace's "
            "largest), got %g", c->margin_list[0]);
    REQUIRE(c->margin_list[1] >= 0 && c->margin_list[1] < 3.14159f, "margin_list", "m2 must be in [0, pi), got %g", c->margin_list[1]);
    REQUIRE(c->margin_list[2] >= 0 && c->margin_list[2] <= 1, "margin_list", "m3 must be in [0, 1] (a cosine "
            "margin; CosFace uses 0.35-0.4), got %g", c->margin_list[2]);
    REQUIRE(c->scale > 0 && c->scale <= 128, "scale", "must be in (0, 128] (insightface uses 64; at s > 128 the "
            "loss of a fresh run saturates at the probability clamp), got %g", c->scale);
    REQUIRE(strcmp(c->margin_grad, "arcface_torch") || c->margin_list[0] == 1 || c->margin_list[2] > 0, "margin_list",
            "(%g, %g, %g) under margin_grad = arcface_torch: insightface's CombinedMarginLoss supports m1 = 1 with "
            "m3 = 0 (ArcFace) or m3 > 0 (CosFace, m1 and m2 ignored) and raises for m1 != 1 with m3 = 0; "
            "set margin_grad = analytic for the paper's combined margin",
            c->margin_list[0], c->margin_list[1], c->margin_list[2]);
    REQUIRE(!strcmp(c->margin_grad, "analytic") || !strcmp(c->margin_grad, "arcface_torch"), "margin_grad",
            "must be 'analytic' or 'arcface_torch', got '%s'", c->margin_grad);
    REQUIRE(c->interclass_filtering_threshold < 1, "interclass_filtering_threshold", "must be < 1, got %g", c->interclass_filtering_threshold);
    REQUIRE(c->sample_rate >= 1e-5 && c->sample_rate <= 1, "sample_rate", "must be in [1e-05, 1] (insightface "
            "uses 0.1-1), got %g", c->sample_rate);
    REQUIRE(c->sample_shards >= 1, "sample_shards", "must be >= 1, got %d", c->sample_shards);
    REQUIRE(!strcmp(c->fc_update, "sparse") || !strcmp(c->fc_update, "dense"), "fc_update",
            "must be 'sparse' or 'dense', got '%s'", c->fc_update);
    REQUIRE(c->num_classes >= 0, "num_classes", "must be >= 0 (0: from the dataset), got %lld", (long long)c->num_classes);
    REQUIRE(c->msg_chunk_bytes >= AF_CHUNK_MIN && c->msg_chunk_bytes <= AF_CHUNK_MAX, "msg_chunk_bytes",
            "must be in [%lld, %lld] (one MPI message), got %lld", (long long)AF_CHUNK_MIN, (long long)AF_CHUNK_MAX,
            (long long)c->msg_chunk_bytes);
    REQUIRE(c->batch_size >= 1, "batch_size", "must be >= 1, got %d", c->batch_size);
    REQUIRE(c->lr >= 0 && c->lr <= 10, "lr", "must be in [0, 10] (insightface uses up to 0.4), got %g", c->lr);
    REQUIRE(c->momentum >= 0 && c->momentum < 1, "momentum", "must be in [0, 1), got %g", c->momentum);
    REQUIRE(c->weight_decay >= 0 && c->weight_decay <= 1, "weight_decay", "must be in [0, 1] (insightface uses "
            "5e-4 with SGD, 0.1 with AdamW), got %g", c->weight_decay);
    REQUIRE(c->comm_timeout >= 0 && c->comm_timeout <= 1e7, "comm_timeout", "must be in [0, 1e7] seconds (0: no "
            "progress deadline), got %g", c->comm_timeout);
    REQUIRE(c->clip_grad >= 0, "clip_grad", "must be >= 0 (0: no clipping), got %g", c->clip_grad);
    REQUIRE(!strcmp(c->optimizer, "sgd") || !strcmp(c->optimizer, "adamw"), "optimizer", "must be 'sgd' or 'adamw', got '%s'", c->optimizer);
    REQUIRE(c->num_epoch >= 1, "num_epoch", "must be >= 1, got %d", c->num_epoch);
    /* Negative: no warmup, as insightface's PolyScheduler takes warmup_epoch = -1
     * (its decay then runs over total + |warmup| steps; af_lr_at does the same). */
    REQUIRE(c->warmup_epoch < c->num_epoch, "warmup_epoch", "must be < num_epoch (negative: no warmup), got %d", c->warmup_epoch);
    REQUIRE(c->gradient_acc >= 1, "gradient_acc", "must be >= 1, got %d", c->gradient_acc);
    REQUIRE(c->max_steps >= 0, "max_steps", "must be >= 0, got %lld", (long long)c->max_steps);
    REQUIRE(c->rec[0], "rec", "must name a dataset");
    REQUIRE(strncmp(c->network, "vit", 3), "network", "'%s': insightface's vision transformers (vit_*) are not "
            "implemented here; the backbones are the iResNets (r18, r34, r50, r100, r200) and MobileFaceNets (mbf, "
            "mbf_large)", c->network);
    REQUIRE(strcmp(c->network, "r2060"), "network", "'r2060': insightface's 2060-layer iResNet is not implemented here; "
            "the iResNets are r18, r34, r50, r100 and r200");
    REQUIRE(!c->precision[0] || !strcmp(c->precision, "fp32") || !strcmp(c->precision, "bf16"), "precision",
            "must be 'fp32' or 'bf16', got '%s'", c->precision);
    REQUIRE(c->loader_threads >= 0 && c->loader_threads <= 64, "loader_threads", "must be in [0, 64], got %d", c->loader_threads);
    REQUIRE(c->ps >= 0, "ps", "must be >= 0, got %d", c->ps);
    REQUIRE(c->threads >= 0, "threads", "must be >= 0, got %d", c->threads);
    REQUIRE(c->output[0], "output", "must name a folder");
    REQUIRE(c->frequent >= 1, "frequent", "must be >= 1, got %d", c->frequent);
    REQUIRE(c->save_every >= 0, "save_every", "must be >= 0, got %d", c->save_every);
    REQUIRE(c->keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1, got %d", c->keep_checkpoints);
    REQUIRE(c->verbose >= 0, "verbose", "must be >= 0, got %d", c->verbose);
    REQUIRE(!c->init_from[0] || access(c->init_from, R_OK) == 0, "init_from", "cannot read '%s'", c->init_from);
#undef REQUIRE
    return AF_OK;
}

void af_config_notes(const af_config *c, FILE *f, const char *prefix)
{
    if (c->base_file[0])
        fprintf(f, "%s%s was applied first, as insightface's get_config does\n", prefix, c->base_file);
    if (c->ignored[0]) fprintf(f, "%signoring arcface_torch keys that do not apply here: %s\n", prefix, c->ignored);
    af_margin m = {.s = c->scale, .m1 = c->margin_list[0], .m2 = c->margin_list[1], .m3 = c->margin_list[2]};
    if (af_margin_grad_parse(c->margin_grad, &m.grad) == AF_OK) {
        char note[256];
        if (af_margin_note(&m, note, sizeof note)) fprintf(f, "%s%s\n", prefix, note);
    } else {
        af_error_clear();
    }
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
