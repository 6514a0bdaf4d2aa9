/* libFuzzer target for the RecordIO reader (build: -DARCFACE_FUZZ=ON with
 * clang, run: tests/data/run_fuzz.sh). The same function is linked into
 * test_data, whose `fuzz_replay` group feeds it a fixed set of valid,
 * mutated and random inputs under the ordinary (ASan) unit-test build.
 *
 * The first input byte picks what the rest is:
 *   even: bytes of a .rec file, walked in memory frame by frame, every
 *         payload's IRHeader parsed and its image probed and decoded; then
 *         the same bytes parsed as .idx text;
 *   odd:  bytes of a .rec file written to disk with an .idx built by
 *         walking its frames (plus one entry at an offset taken from the
 *         input), then opened with af_dataset_open and every image read:
 *         the path training takes, record-0 layout detection included. */
#include <arcface/data.h>
#include <arcface/image.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk_memory(const uint8_t *data, size_t size)
{
    af_image_decoder *dec = NULL;
    if (af_image_decoder_init(&dec) != AF_OK) return;
    size_t pos = 0;
    for (int records = 0; pos < size && records < 256; records++) {
        af_recordio_frame f;
        if (af_recordio_frame_scan(data + pos, size - pos, &f, "fuzz.rec") != AF_OK || f.need) break;
        uint8_t *payload = malloc(f.payload_len ? f.payload_len : 1);
        if (!payload) break;
        af_recordio_frame_copy(data + pos, &f, payload);
        af_irheader h;
        if (af_irheader_parse(payload, f.payload_len, &h, "fuzz.rec") == AF_OK) {
            volatile float sink = af_irheader_class(&h);
            for (uint32_t i = 0; i < h.flag && i < 64; i++) sink += af_irheader_label_at(&h, i);
            (void)sink;
            int ih, iw, ic;
            if (h.data_len && af_image_probe(h.data, h.data_len, &ih, &iw, &ic, "fuzz image") == AF_OK) {
                uint8_t out[16 * 16 * 3];
                af_image_decoder_decode(dec, h.data, h.data_len, 16, 16, 1 + 2 * (records & 1), out, "fuzz image");
            }
        }
        free(payload);
        pos += f.consumed;
    }
    af_image_decoder_free(dec);
    af_recordio_idx_entry *e = NULL;
    size_t n = 0;
    if (af_recordio_idx_parse((const char *)data, size, &e, &n, "fuzz.idx") == AF_OK) free(e);
}

static void walk_dataset(const uint8_t *data, size_t size)
{
    char prefix[64], path[80];
    snprintf(prefix, sizeof prefix, "/tmp/af_fuzz_%d", (int)getpid());
    snprintf(path, sizeof path, "%s.rec", prefix);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, size, f);
    fclose(f);
    snprintf(path, sizeof path, "%s.idx", prefix);
    f = fopen(path, "w");
    if (!f) return;
    size_t pos = 0;
    int key = 0;
    while (pos < size && key < 64) {
        af_recordio_frame fr;
        fprintf(f, "%d\t%zu\n", key++, pos);
        if (af_recordio_frame_scan(data + pos, size - pos, &fr, "fuzz.rec") != AF_OK || fr.need) break;
        pos += fr.consumed;
    }
    if (size >= 4) { /* one entry wherever the input says */
        uint32_t off;
        memcpy(&off, data, 4);
        fprintf(f, "%d\t%u\n", key, off % (unsigned)(size + 16));
    }
    fclose(f);
    af_dataset *ds = NULL;
    af_dataset_opts o = {.height = 12, .width = 12};
    if (af_dataset_open(&ds, prefix, &o) == AF_OK) {
        af_dataset_scratch *ws = NULL;
        if (af_dataset_scratch_init(&ws) == AF_OK) {
            int c, h, w;
            af_dataset_shape(ds, &c, &h, &w);
            float img[3 * 12 * 12];
            for (int64_t i = 0; i < af_dataset_size(ds) && i < 64; i++) {
                int64_t label;
                af_dataset_get_ws(ds, i, img, &label, (int)(i & 1), ws);
                char loc[256];
                af_dataset_locate(ds, i, loc, sizeof loc);
            }
            af_dataset_scratch_free(ws);
        }
        af_dataset_close(ds);
    }
    snprintf(path, sizeof path, "%s.rec", prefix);
    unlink(path);
    snprintf(path, sizeof path, "%s.idx", prefix);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) walk_dataset(data + 1, size - 1);
    else walk_memory(data + 1, size - 1);
    af_error_clear();
    return 0;
}
