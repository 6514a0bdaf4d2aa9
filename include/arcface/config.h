/* The training configuration: arcface_torch's key names (network, embedding_size,
 * margin_list, scale, sample_rate, interclass_filtering_threshold, batch_size,
 * lr, momentum, weight_decay, optimizer, num_classes, num_epoch, warmup_epoch,
 * gradient_acc, seed, output, frequent, rec, verbose, val_targets, ...) plus the
 * keys this system adds (ps, fc_update, sample_shards, margin_grad, ...).
 *
 * Sources, later ones winning: defaults, a `key = value` file (arcface_torch's
 * `config.key = value` lines and Python literals such as (1.0, 0.5, 0.0),
 * "r50" or True are accepted too), then command-line `--key value` or
 * `--key=value`. Unknown keys and bad values are errors naming the key (and
 * the file and line). Every rank parses the same sources, so the result is
 * equal on all ranks. */
#ifndef ARCFACE_CONFIG_H
#define ARCFACE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "arcface/status.h"

#define AF_CFG_STR 256
#define AF_CFG_MAX_VAL 8

typedef struct {
    /* model */
    char network[32];
    int embedding_size;
    float dropout;
    /* margin softmax */
    float margin_list[3];
    float scale;
    char margin_grad[32];         /* analytic | arcface_torch */
    int easy_margin;
    float interclass_filtering_threshold;
    /* partial fc */
    double sample_rate;           /* double, so that int(rate * n) is Python's */
    int sample_shards;            /* logical class shards sampling is defined over (not the server count) */
    char fc_update[16];           /* sparse | dense */
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
    int64_t msg_chunk_bytes;      /* largest MPI message between workers and servers (core/transport.c) */
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
    /* arcface_torch keys that were given but mean nothing here (fp16, dali,
     * wandb_*, ...), space-separated, for the log. Not a setting. */
    char ignored[256];
} af_config;

void af_config_defaults(af_config *c);
/* Applies a file of key = value lines. */
af_status af_config_load_file(af_config *c, const char *path);
/* Applies one key = value; `where` names its origin for messages. */
af_status af_config_set(af_config *c, const char *key, const char *value, const char *where);
/* Applies --key value / --key=value arguments from argv[first..argc); a bare
 * positional argument is taken as the config file (applied first). */
af_status af_config_parse_args(af_config *c, int argc, char **argv, int first);
/* Range and consistency checks; the message names the key. */
af_status af_config_check(const af_config *c);
/* Writes every key as `key = value`, re-readable by af_config_load_file. */
void af_config_write(const af_config *c, FILE *f);

#endif
