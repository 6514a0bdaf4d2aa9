/* Whether a checkpoint may be resumed by this run (trainer/resume.c). */
#ifndef ARCFACE_TRAINER_RESUME_H
#define ARCFACE_TRAINER_RESUME_H

#include "arcface/ckpt.h"
#include "arcface/config.h"
#include "arcface/ctx.h"
#include "arcface/data.h"

/* Compares the run with the checkpoint's stored configuration. Every key that
 * shapes the trajectory and differs is listed (all of them, in one message);
 * unless resume_allow_changes names it (or is "all"), the resume is refused
 * with AF_ERR_ARG. A larger num_classes is class growth and always allowed
 * (a different rec then comes with it); a smaller one is refused, listed with
 * the other differences. A resume on a different dataset (ds) starts the
 * checkpoint's epoch at its first sample (info->sample_position set to 0);
 * on the same rec, a position beyond ds's epoch is refused naming both. When
 * `log`, the allowed differences and the growth are printed. Equal on all
 * ranks. */
af_status af_resume_check(af_ckpt_info *info, const af_config *cfg, const af_ctx *ctx, const af_dataset *ds,
                          const char *path, int log);

#endif
