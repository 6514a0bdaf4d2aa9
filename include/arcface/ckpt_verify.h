/* Verified checkpoints: what makes a checkpoint trustworthy before a resume.
 *
 * Every dataset of a checkpoint carries a `crc32` attribute: zlib's CRC-32 of
 * its elements in native byte order, row-major (Python: zlib.crc32(a.tobytes())
 * of the h5py array). The /fc rows are written collectively, each server its
 * own contiguous rows; each server checksums its rows in memory and rank 0
 * joins the parts with crc32_combine, so nobody re-reads the class centres at
 * write time. The root carries `checksum` = "crc32", `datasets` (how many
 * datasets the file holds) and `attributes_crc32`, the CRC-32 of the other root
 * attributes as "name=value;" lines in name order, so a changed `step` or a
 * deleted dataset is caught as well as a flipped byte.
 *
 * Verification is collective: every rank reads an equal share of the /fc
 * rows, so a resume reads the centres once more, spread over the job; rank 0
 * reads the rest. Non-finite values in any floating-point dataset are refused
 * too (a NaN written with a fresh checksum is still a NaN).
 *
 * `--resume auto` walks the checkpoints newest first and takes the first that
 * verifies, setting aside (renaming to *.h5.bad) each newer one it skipped and
 * saying why; it never starts fresh while a checkpoint, a set-aside *.h5.bad or
 * a `latest` naming a vanished file exists. */
#ifndef ARCFACE_CKPT_VERIFY_H
#define ARCFACE_CKPT_VERIFY_H

#include <stdint.h>

#include <hdf5.h>

#include "arcface/ckpt.h"
#include "arcface/ctx.h"
#include "arcface/status.h"

/* One row-split item (the fc and its optimizer state) as this rank holds it:
 * data (nrows, row_len) float32, rows [row0, row0 + nrows); data NULL or
 * nrows 0 where the rank holds none. */
typedef struct {
    const char *name;
    const float *data;
    int64_t row0, nrows, row_len;
} af_ckpt_rows;

/* Collective over ctx->world, with the same n items in the same order on every
 * rank: crc[i] is the CRC-32 of the whole item i (the ranks' parts joined in row
 * order). Fails on every rank, naming the rank, the rows and the item, if any
 * part holds a non-finite value: nothing is written then. */
af_status af_ckpt_rows_checksums(const af_ctx *ctx, int n, const af_ckpt_rows *items, uint32_t *crc,
                                 const char *path);

/* Rank 0, file open read-write after everything else is written: gives every
 * dataset its crc32 attribute (the row-split ones from rows_crc, computed by
 * af_ckpt_rows_checksums; the others by reading them back) and the root its
 * checksum attributes. */
af_status af_ckpt_seal(hid_t f, const char *path, int nrows, const char *const rows_names[], const uint32_t rows_crc[]);

/* Refuses impossible root attributes (negative step, no classes, ...) naming
 * the file and the attribute. Local. */
af_status af_ckpt_info_sane(const af_ckpt_info *info, const char *path);

/* Collective: checksums, dataset count, root attributes and finiteness of the
 * checkpoint at `path`. A checkpoint written before checksums existed is
 * accepted with a note from rank 0. */
af_status af_ckpt_verify(const af_ctx *ctx, const char *path);

/* Rank 0: removes leftover *.tmp files (a checkpoint interrupted by a crash or
 * a full disk) from OUTPUT/checkpoints, saying so. */
af_status af_ckpt_remove_tmp(const af_config *cfg);

/* Collective. Finds the checkpoint to resume from and verifies it:
 *   resume = "none": *found = 0;
 *   resume = a file: that file, which must read and verify;
 *   resume = "auto": the newest OUTPUT/checkpoints/ckpt_*.h5 that reads and
 *   verifies; each newer one is set aside as *.h5.bad (once one verifies) with
 *   the reason printed by rank 0. *found = 0 only when the folder holds no
 *   trace of a run; an error, with nothing renamed, when checkpoints exist and
 *   none verifies, and when only *.h5.bad files or a dangling `latest` remain.
 * On success with *found, info holds the chosen checkpoint's root attributes. */
af_status af_ckpt_find(const af_ctx *ctx, const af_config *cfg, char *path, size_t cap, int *found,
                       af_ckpt_info *info);

#endif
