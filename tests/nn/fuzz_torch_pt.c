/* libFuzzer target for the .pt pickle reader (built with -DARCFACE_FUZZ=ON
 * and clang): any data.pkl must parse or fail with a message, never crash,
 * read outside the buffer or allocate without bound. Seed: a data.pkl from
 * any torch.save'd state_dict, e.g. `unzip -p model.pt '*data.pkl' > seed/1`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/torch_pt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    af_pt_entry *e = NULL;
    size_t n = 0;
    if (af_pt_parse_pickle(data, size, "fuzz", &e, &n) == AF_OK) {
        /* what a caller does next: the extent stays inside the storage */
        for (size_t i = 0; i < n; i++)
            if (e[i].offset < 0 || e[i].numel > e[i].storage_numel - e[i].offset || !e[i].key) abort();
        af_pt_entries_free(e, n);
    } else if (!strcmp(af_errmsg(), "(no detail)")) {
        abort(); /* every refusal must say why */
    }
    return 0;
}
