/* libFuzzer target for the verification .bin reader (built with
 * -DARCFACE_FUZZ=ON and clang): any input must parse or fail with a message,
 * never crash or read outside the buffer. A seed corpus is the small .pkl
 * files eval_pickle writes, e.g.
 *   build/tests/eval/fuzz_pickle -max_total_time=60 build/tests/eval/pickle_cases */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    af_verbin vb;
    if (af_verbin_parse(&vb, data, size, "fuzz") == AF_OK) {
        /* Touch every image byte so ASan checks the pointers the reader returned. */
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < 2 * vb.n_pairs; i++)
            for (size_t k = 0; k < vb.image_len[i]; k++) sink ^= vb.image[i][k];
        for (size_t i = 0; i < vb.n_pairs; i++) sink ^= vb.issame[i];
        (void)sink;
    } else if (!strcmp(af_errmsg(), "(no detail)")) {
        abort();   /* every refusal must say why */
    }
    af_verbin_free(&vb);
    return 0;
}
