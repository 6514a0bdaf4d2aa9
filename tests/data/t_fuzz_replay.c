/* data_fuzz_replay: the libFuzzer target (fuzz_recordio.c) run over a fixed,
 * seeded set of inputs in the ordinary build, so that every CI run (and its
 * ASan+UBSan rerun) exercises the parser on hostile bytes even where clang's
 * libFuzzer is not built: a valid insightface-layout file (header record,
 * JPEG, PNG and split records, identity records) and thousands of
 * mutations (flipped bytes, truncations, rewritten length words, planted
 * magic words), plus random buffers. With AF_FUZZ_CORPUS=DIR set it also
 * writes its valid inputs there as seeds for tests/data/run_fuzz.sh. */
#include "test_data.h"

#include <arcface/rng.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *valid_rec(const char *dir, size_t *len)
{
    char prefix[4200], path[4300];
    snprintf(prefix, sizeof prefix, "%s/seed", dir);
    af_recordio_writer *w = NULL;
    if (!CHECK_OK(af_recordio_writer_open(&w, prefix))) return NULL;
    float hdr[2] = {5, 7};
    af_recordio_writer_put(w, 0, 2, 0, hdr, 0, 0, NULL, 0);
    size_t jl;
    uint8_t *jpg = t_make_jpeg(16, 12, 3, 1, 80, &jl);
    af_recordio_writer_put(w, 1, 0, 0, NULL, 1, 0, jpg, jl);
    uint8_t pix[8 * 8], *png = NULL;
    size_t pl = 0;
    t_make_picture(pix, 8, 8, 1, 2);
    if (af_image_have_png() && af_image_encode_png(pix, 8, 8, 1, &png, &pl) == AF_OK)
        af_recordio_writer_put(w, 2, 0, 1, NULL, 2, 0, png, pl);
    else
        af_recordio_writer_put(w, 2, 0, 1, NULL, 2, 0, jpg, jl);
    uint8_t split[40] = {0xff, 0xd8, 0xff, 0, 0x0a, 0x23, 0xd7, 0xce, 1, 2, 3, 4, 0x0a, 0x23, 0xd7, 0xce};
    af_recordio_writer_put(w, 3, 0, 1, NULL, 3, 0, split, sizeof split);
    float two[2] = {1, 7};
    af_recordio_writer_put(w, 4, 2, 0, two, 4, 0, jpg, jl);
    float r0[2] = {1, 2}, r1[2] = {2, 5};
    af_recordio_writer_put(w, 5, 2, 0, r0, 5, 0, NULL, 0);
    af_recordio_writer_put(w, 6, 2, 0, r1, 6, 0, NULL, 0);
    CHECK_OK(af_recordio_writer_commit(w));
    free(jpg);
    free(png);
    snprintf(path, sizeof path, "%s.rec", prefix);
    return t_read_file(path, len);
}

static void save(const char *corpus, int k, const uint8_t *buf, size_t n)
{
    if (!corpus) return;
    char p[4200];
    snprintf(p, sizeof p, "%s/seed%03d", corpus, k);
    t_write_file(p, buf, n);
}

void t_fuzz_replay(void)
{
    char *dir = t_mkdtemp();
    const char *corpus = getenv("AF_FUZZ_CORPUS");
    size_t blen = 0;
    uint8_t *base = valid_rec(dir, &blen);
    if (!base) {
        CHECK(0, "could not write the seed RecordIO file");
        t_rmtree(dir);
        free(dir);
        return;
    }
    size_t cap = blen * 2 + 1024;
    uint8_t *in = malloc(cap);
    af_rng r;
    af_rng_seed(&r, 12345, AF_RNG_STREAM_TEST, 0, 0);
    int runs = 0, saved = 0;
    for (int mode = 0; mode < 2; mode++) {
        in[0] = (uint8_t)mode;
        memcpy(in + 1, base, blen);
        LLVMFuzzerTestOneInput(in, blen + 1);
        save(corpus, saved++, in, blen + 1);
        runs++;
        for (int t = 0; t < 1200; t++) {
            size_t n = blen;
            memcpy(in + 1, base, blen);
            switch (af_rng_below(&r, 5)) {
            case 0: /* flip a few bytes */
                for (int k = 0, m = 1 + (int)af_rng_below(&r, 8); k < m; k++)
                    in[1 + af_rng_below(&r, blen)] ^= (uint8_t)(1 + af_rng_below(&r, 255));
                break;
            case 1: /* truncate */
                n = af_rng_below(&r, blen);
                break;
            case 2: { /* rewrite a length word of a frame to anything */
                size_t at = af_rng_below(&r, blen / 4) * 4;
                uint32_t v = (uint32_t)af_rng_u64(&r);
                if (af_rng_below(&r, 2)) v &= 0x1fffu;
                memcpy(in + 1 + at, &v, 4);
                break;
            }
            case 3: { /* plant the magic word at an aligned offset */
                size_t at = af_rng_below(&r, blen / 4) * 4;
                memcpy(in + 1 + at, "\x0a\x23\xd7\xce", 4);
                break;
            }
            default: /* random bytes */
                n = af_rng_below(&r, 600);
                for (size_t k = 0; k < n; k++) in[1 + k] = (uint8_t)af_rng_u64(&r);
                break;
            }
            LLVMFuzzerTestOneInput(in, n + 1);
            if (t < 8) save(corpus, saved++, in, n + 1);
            runs++;
        }
    }
    /* Inputs the fuzzer once found a problem with (run_fuzz.sh artifacts). */
    static const uint8_t found_header_b_overflow[] = {0x01, 0x0a, 0x23, 0xd7, 0xce, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x40, 0x00, 0x0a, 0x2f, 0x74, 0x6d, 0x70, 0x2f, 0x61, 0x66, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0x00, 0x0a, 0x23, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0xb7, 0x18, 0x00, 0x17, 0x00, 0x00, 0x00, 0x00};
    LLVMFuzzerTestOneInput(found_header_b_overflow, sizeof found_header_b_overflow);
    runs++;
    /* idx-looking text */
    const char *texts[] = {"0\t0\n1\t32\n", "1 2\n\n\n3\t4", "99999999999999999999\t1\n", "-1\t0\n", "0\t\n", "\t\t\n"};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        in[0] = 0;
        size_t n = strlen(texts[k]);
        memcpy(in + 1, texts[k], n);
        LLVMFuzzerTestOneInput(in, n + 1);
        runs++;
    }
    printf("  fuzz target ran on %d inputs (valid file of %zu bytes, mutations, random) without a crash%s\n", runs,
           blen, corpus ? "; seeds written" : "");
    CHECK(runs > 2000, "only %d inputs", runs);
    free(in);
    free(base);
    t_rmtree(dir);
    free(dir);
}
