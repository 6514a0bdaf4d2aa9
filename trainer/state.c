/* The state registry (include/arcface/state.h): a flat list of named items that
 * point into their owners' memory. Names are unique; a second registration of
 * a name is an error, since two owners of one checkpoint item would silently
 * overwrite each other. */
#include <stdlib.h>
#include <string.h>

#include "arcface/state.h"

void af_state_init(af_state *s) { memset(s, 0, sizeof *s); }

void af_state_free(af_state *s)
{
    free(s->items);
    memset(s, 0, sizeof *s);
}

static af_status add(af_state *s, const af_state_item *it)
{
    if (strlen(it->name) >= AF_STATE_NAME_MAX - 1 || !it->name[0])
        return af_errorf(AF_ERR_ARG, "state registry: item name '%s' is empty or too long", it->name);
    if (af_state_find(s, it->name))
        return af_errorf(AF_ERR_ARG, "state registry: '%s' registered twice (by %s and %s)", it->name,
                         af_state_find(s, it->name)->owner, it->owner);
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        af_state_item *p = realloc(s->items, sizeof *p * (size_t)cap);
        if (!p) return af_errorf(AF_ERR_NOMEM, "state registry: out of memory at %d items", s->n);
        s->items = p;
        s->cap = cap;
    }
    s->items[s->n++] = *it;
    return AF_OK;
}

static void set_names(af_state_item *it, const char *owner, const char *name)
{
    snprintf(it->owner, sizeof it->owner, "%s", owner);
    /* Longer than the buffer: keep a marker the length check in add() rejects. */
    if ((size_t)snprintf(it->name, sizeof it->name, "%s", name) >= sizeof it->name) it->name[sizeof it->name - 1] = 'x';
}

af_status af_state_add_whole(af_state *s, const char *owner, const char *name, af_state_type type, void *data,
                             int ndim, const int64_t *shape)
{
    af_state_item it = {.kind = AF_STATE_WHOLE, .type = type, .data = data, .ndim = ndim};
    set_names(&it, owner, name);
    if (ndim < 0 || ndim > AF_STATE_MAXDIM) return af_errorf(AF_ERR_ARG, "state registry: '%s' has %d dimensions", name, ndim);
    for (int k = 0; k < ndim; k++) it.shape[k] = shape[k];
    return add(s, &it);
}

af_status af_state_add_rows(af_state *s, const char *owner, const char *name, float *data, int64_t total_rows,
                            int64_t row_len, int64_t row0, int64_t nrows)
{
    af_state_item it = {.kind = AF_STATE_ROWS, .type = AF_STATE_F32, .data = data, .ndim = 2,
                        .shape = {total_rows, row_len}, .row0 = row0, .nrows = nrows};
    set_names(&it, owner, name);
    if (row0 < 0 || nrows < 0 || row0 + nrows > total_rows)
        return af_errorf(AF_ERR_ARG, "state registry: '%s' rows [%lld, %lld) outside [0, %lld)", name, (long long)row0,
                         (long long)(row0 + nrows), (long long)total_rows);
    return add(s, &it);
}

af_status af_state_add_scalar(af_state *s, const char *owner, const char *name, int64_t *value)
{
    af_state_item it = {.kind = AF_STATE_SCALAR, .type = AF_STATE_I64, .data = value};
    set_names(&it, owner, name);
    return add(s, &it);
}

const af_state_item *af_state_find(const af_state *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->items[i].name, name)) return &s->items[i];
    return NULL;
}

int64_t af_state_item_numel(const af_state_item *it)
{
    if (it->kind == AF_STATE_SCALAR) return 1;
    if (it->kind == AF_STATE_ROWS) return it->nrows * it->shape[1];
    int64_t n = 1;
    for (int k = 0; k < it->ndim; k++) n *= it->shape[k];
    return n;
}

void af_state_print(const af_state *s, FILE *f, const char *prefix)
{
    static const char *kinds[] = {"whole", "rows", "scalar"};
    for (int i = 0; i < s->n; i++) {
        const af_state_item *it = &s->items[i];
        fprintf(f, "%sstate %s %s %s owner=%s shape=(", prefix, kinds[it->kind], it->type == AF_STATE_F32 ? "f32" : "i64",
                it->name, it->owner);
        for (int k = 0; k < it->ndim; k++) fprintf(f, "%s%lld", k ? "," : "", (long long)it->shape[k]);
        if (it->kind == AF_STATE_ROWS) fprintf(f, ") rows=[%lld,%lld)\n", (long long)it->row0, (long long)(it->row0 + it->nrows));
        else fprintf(f, ")\n");
    }
}
