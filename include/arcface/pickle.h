/* Reader for insightface verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin,
 * ...): each file is a Python pickle of the pair (bins, issame_list), where bins
 * holds 2N encoded images (JPEG or PNG byte strings; images 2k and 2k+1 form
 * pair k) and issame_list holds N booleans.
 *
 * This is not a general unpickler. It runs only the opcodes such a file needs
 * (protocols 2 to 5, Python 2 str or Python 3 bytes, memo and frame opcodes,
 * and the `_codecs.encode(text, 'latin1')` form Python 3 writes for bytes at
 * protocol 2); anything else is refused with the opcode, its name and its
 * byte offset. It never executes code and never reads outside the buffer.
 *
 * The images are not copied: af_verbin.image[i] points into the file's memory
 * map (or the caller's buffer), except for images that Python 3 wrote as
 * latin-1 text at protocol 2, which have to be decoded into storage the
 * af_verbin owns. Decoding the images is the caller's job (af_image_decode). */
#ifndef ARCFACE_PICKLE_H
#define ARCFACE_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "arcface/status.h"

/* Bounds that keep a hostile file from making the reader allocate without
 * limit (at most about 128 MiB each): memo keys (also bounded by the data
 * length), and the values alive at once (stack plus list and tuple items).
 * lfw.bin (12,000 images) needs fewer than 50,000 of each. */
#define AF_VERBIN_MAX_MEMO   (1u << 22)
#define AF_VERBIN_MAX_VALUES (1u << 22)

struct af_verbin_chunk;

typedef struct {
    size_t n_pairs;            /* N */
    const uint8_t **image;     /* (2N) start of each encoded image */
    size_t *image_len;         /* (2N) its length in bytes (may be 0) */
    uint8_t *issame;           /* (N) 1 when images 2k and 2k+1 show one identity */
    int protocol;              /* the PROTO opcode's value, or 0 when absent */

    /* Private: what the pointers above point into. */
    void *map;                 /* mmap of af_verbin_load, or NULL */
    size_t map_len;
    struct af_verbin_chunk *decoded;  /* images decoded from latin-1 text */
} af_verbin;

/* Parses a verification set held in memory. The buffer must outlive `vb`
 * (vb->image points into it). `what` names the data in error messages, e.g.
 * the file path. On failure `vb` is left empty (safe to free). */
af_status af_verbin_parse(af_verbin *vb, const void *buf, size_t len, const char *what);

/* Maps `path` read-only and parses it; the mapping lives until af_verbin_free. */
af_status af_verbin_load(af_verbin *vb, const char *path);

/* Releases everything vb owns; vb may be zeroed or the result of a failed parse. */
void af_verbin_free(af_verbin *vb);

/* The name of pickle opcode `op` ("BINBYTES"), or NULL when it is not one. */
const char *af_pickle_opcode_name(uint8_t op);

#endif
