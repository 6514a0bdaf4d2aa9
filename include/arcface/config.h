/* The training configuration: arcface_torch's key names (network, embedding_size,
 * margin_list, scale, sample_rate, interclass_filtering_threshold, batch_size,
 * lr, momentum, weight_decay, optimizer, num_classes, num_epoch, warmup_epoch,
 * gradient_acc, seed, output, frequent, rec, verbose, val_targets, ...) plus the
 * keys this system adds (ps, fc_update, sample_shards, margin_grad, ...).
 *
 * Sources, later ones winning: defaults, a configuration file, then
 * command-line `--key value` or `--key=value`.
 *
 * Configuration files are insightface arcface_torch's configs/NAME.py as they are:
 * `from easydict import EasyDict as edict`, `config = edict()`, then
 * `config.key = <Python expression>` lines: numbers (5e-4), strings, None,
 * True/False, tuples and lists, + - * / // % ** and parentheses, and
 * `config.other_key` for a key set earlier in the same file. As insightface's
 * utils_config.get_config does, a file NAME.py applies base.py from its own
 * folder first, and output = None means work_dirs/NAME. resume = True/False is
 * arcface_torch's switch (True: continue from output's checkpoint = auto here;
 * False: start over = none). val_targets names ('lfw') are resolved against the
 * rec folder at start (af_valset_resolve_targets). The older `key = value` form
 * (bare values such as r18 or fmnist:/data allowed) reads the same way.
 * Unknown keys and bad values are errors naming the key and the file and
 * line; every key remembers where it was set (af_config_where). Every rank
 * parses the same sources, so the result is equal on all ranks. */
#ifndef ARCFACE_CONFIG_H
#define ARCFACE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "arcface/cpu.h"
#include "arcface/status.h"

#define AF_CFG_STR 256
#define AF_CFG_MAX_VAL 8
#define AF_CFG_MAX_KEYS 64

typedef struct {
    /* model */
    char network[32];
    int embedding_size;
    float dropout;
    /* margin softmax */
    float margin_list[3];
    float scale;
    char margin_grad[32];         /* arcface_torch (default: insightface's straight-through gradient) | analytic */
    int easy_margin;
    float interclass_filtering_threshold;
    /* partial fc */
    double sample_rate;           /* double, so that int(rate * n) is Python's */
    int sample_shards;            /* logical class shards sampling is defined over (not the server count) */
    char fc_update[16];           /* dense (default, arcface_torch) | sparse (sampled rows; lazy AdamW) */
    int64_t num_classes;          /* 0: the dataset's */
    /* optimisation */
    int batch_size;               /* per worker */
    float lr, momentum, weight_decay, clip_grad;
    char optimizer[16];           /* sgd | adamw */
    int num_epoch, warmup_epoch, gradient_acc;
    int64_t max_steps;            /* > 0: stop after this many optimizer steps */
    uint64_t seed;
    /* data */
    char rec[AF_CFG_STR];
    int flip, skip_corrupt, loader_threads;
    /* layout and threads */
    int ps;                       /* parameter-server ranks */
    int threads;                  /* compute threads per worker (0: OpenMP default) */
    char precision[16];           /* fp32 | bf16 | "" (unset: bf16 when fp16 is true, else fp32) */
    int fp16;                     /* arcface_torch's switch for mixed precision: means bf16 here */
    int64_t msg_chunk_bytes;      /* largest MPI message between workers and servers (core/transport.c) */
    double comm_timeout;          /* seconds a rank waits for another before it ends the job (0: forever);
                                     default 1800, torch.distributed's; the deadline is never below 3 x the
                                     longest step; waits for worker 0's evaluation count from its last
                                     sign of life (ctx.h) */
    /* output, checkpoints, logging, evaluation */
    char output[AF_CFG_STR];
    int frequent;
    int profile;                  /* per-step time breakdown in the log */
    int save_every;               /* checkpoint every N optimizer steps (0: only at the end) */
    int keep_checkpoints;
    char resume[AF_CFG_STR];      /* auto | none | PATH */
    char resume_allow_changes[AF_CFG_STR]; /* keys a resume may change although they shape the run:
                                              comma-separated (seed,sample_rate,...) or "all"; empty: none */
    int verbose;                  /* evaluate every N steps (0: only at the end) */
    char val_targets[AF_CFG_STR]; /* comma-separated specs */
    char init_from[AF_CFG_STR];   /* a fresh run starts from these backbone weights (.pt state_dict or .h5) */
    /* arcface_torch keys that were given but mean nothing here (fp16, dali,
     * wandb_*, ...), space-separated, for the log. Not a setting. */
    char ignored[512];
    /* Provenance, for messages: where each key was last set ("FILE:LINE",
     * "command line"; empty: the default), and the base.py applied first. */
    char where[AF_CFG_MAX_KEYS][128];
    char base_file[AF_CFG_STR + 32];
} af_config;

void af_config_defaults(af_config *c);
/* Applies a file of key = value lines. */
af_status af_config_load_file(af_config *c, const char *path);
/* Applies one key = value; `where` names its origin for messages. */
af_status af_config_set(af_config *c, const char *key, const char *value, const char *where);
/* Applies --key value / --key=value arguments from argv[first..argc); a bare
 * positional argument is taken as the config file (applied first). */
af_status af_config_parse_args(af_config *c, int argc, char **argv, int first);
/* Range and consistency checks; the message names the key and where it was set.
 * Also refuses what arcface_torch refuses (margin_list with m1 != 1 and m3 = 0
 * under margin_grad = arcface_torch) and insightface networks not built here. */
af_status af_config_check(const af_config *c);
/* Where key was last set: "FILE:LINE", "command line" or "default". */
const char *af_config_where(const af_config *c, const char *key);
/* Prints what the log should say about how the configuration was read: the
 * base.py merged first, keys ignored, margin terms ignored as insightface
 * ignores them. Each line starts with prefix. */
void af_config_notes(const af_config *c, FILE *f, const char *prefix);
/* The backbone precision the configuration asks for (precision, else fp16). */
af_precision af_config_precision(const af_config *c);
/* Writes every key as `key = value`, re-readable by af_config_load_file. */
void af_config_write(const af_config *c, FILE *f);

#endif
