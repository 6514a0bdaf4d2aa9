/* Reading PyTorch's zip-format state_dicts (see include/arcface/torch_pt.h).
 *
 * The unpickler is a stack machine over values that are small structs:
 * tuples are contiguous runs in an item pool (they are built at once and
 * never change), dicts are ids whose (key, value) pairs go to one global
 * list in SETITEM order, so a dict fetched back from the memo is the same
 * dict. MARK positions live on a stack of their own, so no opcode reaches
 * below the innermost MARK. Only the result dict's pairs are kept at STOP;
 * nested dicts (the `_metadata` state, backward hooks) are parsed and
 * dropped. */
#include "arcface/torch_pt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

/* ---- values ---------------------------------------------------------------- */

enum {
    PV_NONE, PV_BOOL, PV_INT, PV_STR, PV_TUPLE, PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR,
};
static const char *const pv_names[] = {"None", "a bool", "an int", "a string", "a tuple",
                                       "a dict", "a global", "a storage", "a tensor"};

/* the globals a state_dict may name */
enum { G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER, G_STORAGE };

typedef struct {
    uint8_t kind;
    uint8_t dtype;      /* G_STORAGE globals and storages */
    uint32_t n;         /* string length, tuple length */
    int64_t i;          /* int, bool, global id, tuple start, dict id, tensor id, storage numel */
    const uint8_t *p;   /* string bytes (in the pickle buffer), storage key */
    size_t key_n;       /* storage key length */
} pv;

typedef struct { int64_t dict; pv key, val; } pair;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    const char *what;
    pv *stack; size_t nstack, capstack;
    size_t *marks; size_t nmarks, capmarks;
    pv *items; size_t nitems, capitems;
    pv *memo; size_t capmemo;
    pair *pairs; size_t npairs, cappairs;
    af_pt_entry *tensors; size_t ntensors, captensors;
    int64_t ndicts;
    size_t nvalues; /* everything allocated so far, against AF_PT_MAX_VALUES */
} up;

static af_status bad(const up *u, size_t at, const char *fmt, const char *detail)
{
    return af_errorf(AF_ERR_FORMAT, "%s: pickle byte %zu: %s%s", u->what, at, fmt, detail ? detail : "");
}

/* Grows *arr (of elem-size items) to hold at least need, within the value budget. */
static int grow(up *u, void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 1;
    if (need > AF_PT_MAX_VALUES || u->nvalues > AF_PT_MAX_VALUES) return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    if (nc > AF_PT_MAX_VALUES) nc = AF_PT_MAX_VALUES;
    void *q = realloc(*arr, nc * elem);
    if (!q) return 0;
    u->nvalues += nc - *cap;
    *arr = q;
    *cap = nc;
    return 1;
}

static af_status push(up *u, pv v)
{
    if (!grow(u, (void **)&u->stack, &u->capstack, u->nstack + 1, sizeof(pv)))
        return bad(u, u->pos, "too many values on the stack", NULL);
    u->stack[u->nstack++] = v;
    return AF_OK;
}

/* Values above the innermost MARK (or the whole stack when none). */
static size_t floor_of_stack(const up *u) { return u->nmarks ? u->marks[u->nmarks - 1] : 0; }

static af_status pop(up *u, pv *v, size_t at)
{
    if (u->nstack <= floor_of_stack(u)) return bad(u, at, "stack underflow", NULL);
    *v = u->stack[--u->nstack];
    return AF_OK;
}

static af_status need(const up *u, size_t n)
{
    if (n > u->len - u->pos) return bad(u, u->pos, "the pickle ends inside an opcode's argument", NULL);
    return AF_OK;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Makes a tuple of the top n values. */
static af_status make_tuple(up *u, size_t n, size_t at)
{
    if (n > u->nstack - floor_of_stack(u)) return bad(u, at, "stack underflow", NULL);
    if (!grow(u, (void **)&u->items, &u->capitems, u->nitems + n, sizeof(pv)))
        return bad(u, at, "too many tuple items", NULL);
    pv t = {.kind = PV_TUPLE, .n = (uint32_t)n, .i = (int64_t)u->nitems};
    if (n) memcpy(u->items + u->nitems, u->stack + u->nstack - n, n * sizeof(pv)); /* items is NULL before the first */
    u->nitems += n;
    u->nstack -= n;
    return push(u, t);
}

static int str_is(const pv *v, const char *s)
{
    return v->kind == PV_STR && v->n == strlen(s) && memcmp(v->p, s, v->n) == 0;
}

static const struct { const char *name; af_pt_dtype d; } storages[] = {
    {"FloatStorage", AF_PT_FLOAT32}, {"DoubleStorage", AF_PT_FLOAT64}, {"HalfStorage", AF_PT_FLOAT16},
    {"BFloat16Storage", AF_PT_BFLOAT16}, {"LongStorage", AF_PT_INT64}, {"IntStorage", AF_PT_INT32},
    {"ShortStorage", AF_PT_INT16}, {"CharStorage", AF_PT_INT8}, {"ByteStorage", AF_PT_UINT8},
    {"BoolStorage", AF_PT_BOOL},
};

static af_status global(up *u, const uint8_t *mod, size_t nmod, const uint8_t *name, size_t nname, size_t at)
{
    char full[160];
    snprintf(full, sizeof full, "%.*s.%.*s", (int)(nmod < 64 ? nmod : 64), (const char *)mod,
             (int)(nname < 64 ? nname : 64), (const char *)name);
    pv g = {.kind = PV_GLOBAL};
    if (!strcmp(full, "collections.OrderedDict")) g.i = G_ORDERED_DICT;
    else if (!strcmp(full, "torch._utils._rebuild_tensor_v2")) g.i = G_REBUILD_TENSOR_V2;
    else if (!strcmp(full, "torch._utils._rebuild_parameter")) g.i = G_REBUILD_PARAMETER;
    else {
        size_t k = 0, ns = sizeof storages / sizeof storages[0];
        while (k < ns && !(nmod == 5 && !memcmp(mod, "torch", 5) && !strcmp(full + 6, storages[k].name))) k++;
        if (k == ns)
            return af_errorf(AF_ERR_FORMAT,
                             "%s: pickle byte %zu: refusing global '%s' (a state_dict needs only "
                             "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage; a "
                             "whole model saved with torch.save(model) cannot be read, save model.state_dict())",
                             u->what, at, full);
        g.i = G_STORAGE;
        g.dtype = (uint8_t)storages[k].d;
    }
    return push(u, g);
}

/* ('storage', torch.XStorage, key, location, numel) -> a storage */
static af_status persistent_load(up *u, pv id, size_t at)
{
    if (id.kind != PV_TUPLE || id.n != 5)
        return bad(u, at, "persistent id is not ('storage', torch.<type>Storage, key, location, numel)", NULL);
    const pv *t = u->items + id.i;
    if (!str_is(&t[0], "storage") || t[1].kind != PV_GLOBAL ||
        t[1].i != G_STORAGE || t[2].kind != PV_STR || t[4].kind != PV_INT)
        return bad(u, at, "persistent id is not ('storage', torch.<type>Storage, key, location, numel)", NULL);
    if (t[2].n == 0 || t[2].n >= sizeof ((af_pt_entry *)0)->storage || memchr(t[2].p, '/', t[2].n) ||
        memchr(t[2].p, 0, t[2].n))
        return bad(u, at, "a storage key must be a short name without '/'", NULL);
    if (t[4].i < 0) return bad(u, at, "negative storage size", NULL);
    pv s = {.kind = PV_STORAGE, .dtype = t[1].dtype, .i = t[4].i, .p = t[2].p, .key_n = t[2].n};
    return push(u, s);
}

static int64_t int_or(const pv *v, int64_t dflt) { return v->kind == PV_INT ? v->i : dflt; }

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static af_status rebuild_tensor(up *u, pv args, size_t at)
{
    if (args.kind != PV_TUPLE || args.n < 6)
        return bad(u, at, "_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)", NULL);
    const pv *a = u->items + args.i;
    if (a[0].kind != PV_STORAGE || a[1].kind != PV_INT ||
        a[2].kind != PV_TUPLE || a[3].kind != PV_TUPLE || a[2].n != a[3].n)
        return bad(u, at, "_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)", NULL);
    if (a[2].n > AF_PT_MAXDIM) return bad(u, at, "tensor has more than 8 dimensions", NULL);
    if (!grow(u, (void **)&u->tensors, &u->captensors, u->ntensors + 1, sizeof(af_pt_entry)) ||
        u->ntensors >= AF_PT_MAX_ENTRIES)
        return bad(u, at, "too many tensors", NULL);
    af_pt_entry e = {.dtype = (af_pt_dtype)a[0].dtype, .ndim = (int)a[2].n, .storage_numel = a[0].i,
                     .offset = a[1].i, .numel = 1};
    memcpy(e.storage, a[0].p, a[0].key_n);
    e.storage[a[0].key_n] = 0;
    if (e.offset < 0 || e.offset > e.storage_numel) return bad(u, at, "tensor offset outside its storage", NULL);
    const pv *size = u->items + a[2].i, *stride = u->items + a[3].i;
    int64_t want = 1;
    for (int d = e.ndim - 1; d >= 0; d--) {
        int64_t n = int_or(&size[d], -1), s = int_or(&stride[d], -1);
        if (n < 0 || s < 0) return bad(u, at, "tensor size and stride must be non-negative ints", NULL);
        /* only contiguous tensors (what state_dict() holds); size-1 dims may have any stride */
        if (n != 1 && s != want) return bad(u, at, "tensor is not contiguous (its stride is not row-major)", NULL);
        e.shape[d] = n;
        if (n && want > INT64_MAX / n) return bad(u, at, "tensor size overflows", NULL);
        want *= n;
    }
    e.numel = want;
    if (e.numel > e.storage_numel - e.offset) return bad(u, at, "tensor extends past the end of its storage", NULL);
    u->tensors[u->ntensors] = e;
    return push(u, (pv){.kind = PV_TENSOR, .i = (int64_t)u->ntensors++});
}

static af_status reduce(up *u, size_t at)
{
    pv args = {0}, fn = {0};
    af_status st;
    if ((st = pop(u, &args, at)) || (st = pop(u, &fn, at))) return st;
    if (fn.kind != PV_GLOBAL || args.kind != PV_TUPLE) return bad(u, at, "REDUCE needs a global and a tuple", NULL);
    switch (fn.i) {
    case G_ORDERED_DICT:
        if (args.n) return bad(u, at, "OrderedDict called with arguments", NULL);
        return push(u, (pv){.kind = PV_DICT, .i = u->ndicts++});
    case G_REBUILD_TENSOR_V2: return rebuild_tensor(u, args, at);
    case G_REBUILD_PARAMETER:
        if (args.n < 1 || u->items[args.i].kind != PV_TENSOR)
            return bad(u, at, "_rebuild_parameter needs a tensor", NULL);
        return push(u, u->items[args.i]);
    default: return bad(u, at, "a storage type cannot be called", NULL);
    }
}

static af_status setitems(up *u, size_t npairs_vals, size_t at)
{
    size_t base = u->nstack - npairs_vals;
    if (base < floor_of_stack(u) + 1 || u->stack[base - 1].kind != PV_DICT) return bad(u, at, "SETITEM(S) target is not a dict", NULL);
    if (npairs_vals % 2) return bad(u, at, "SETITEMS with an odd number of values", NULL);
    if (!grow(u, (void **)&u->pairs, &u->cappairs, u->npairs + npairs_vals / 2, sizeof(pair)))
        return bad(u, at, "too many dict items", NULL);
    for (size_t k = base; k < u->nstack; k += 2)
        u->pairs[u->npairs++] = (pair){u->stack[base - 1].i, u->stack[k], u->stack[k + 1]};
    u->nstack = base;
    return AF_OK;
}

static af_status memo_put(up *u, uint64_t idx, size_t at)
{
    if (u->nstack == 0) return bad(u, at, "memo store from an empty stack", NULL);
    /* writers number memo slots 0, 1, 2, ..., one per PUT, so a slot past the pickle's length is hostile */
    if (idx >= AF_PT_MAX_MEMO || idx >= u->len) return bad(u, at, "memo index too large", NULL);
    size_t old = u->capmemo;
    if (!grow(u, (void **)&u->memo, &u->capmemo, (size_t)idx + 1, sizeof(pv))) return bad(u, at, "memo too large", NULL);
    if (u->capmemo > old) memset(u->memo + old, 0xff, (u->capmemo - old) * sizeof(pv));
    u->memo[idx] = u->stack[u->nstack - 1];
    return AF_OK;
}

static af_status memo_get(up *u, uint64_t idx, size_t at)
{
    if (idx >= u->capmemo || u->memo[idx].kind == 0xff) return bad(u, at, "memo fetch of an unset index", NULL);
    return push(u, u->memo[idx]);
}

static af_status run(up *u, pv *result)
{
    af_status st = AF_OK;
    size_t nmemo = 0; /* MEMOIZE's next index */
    while (!st) {
        const size_t at = u->pos;
        if (u->pos >= u->len) return bad(u, at, "the pickle ends without STOP", NULL);
        const uint8_t op = u->buf[u->pos++];
        switch (op) {
        case 0x80: /* PROTO */
            if (!(st = need(u, 1)) && u->buf[u->pos++] > 5) st = bad(u, at, "unsupported pickle protocol", NULL);
            break;
        case 0x95: /* FRAME: framing is only a hint */
            if (!(st = need(u, 8))) u->pos += 8;
            break;
        case '.': /* STOP */
            if (u->nmarks || u->nstack != 1) return bad(u, at, "STOP with other than one value on the stack", NULL);
            *result = u->stack[0];
            return AF_OK;
        case '(': /* MARK */
            if (!grow(u, (void **)&u->marks, &u->capmarks, u->nmarks + 1, sizeof(size_t)))
                return bad(u, at, "too many marks", NULL);
            u->marks[u->nmarks++] = u->nstack;
            break;
        case 'N': st = push(u, (pv){.kind = PV_NONE}); break;
        case 0x88: st = push(u, (pv){.kind = PV_BOOL, .i = 1}); break;
        case 0x89: st = push(u, (pv){.kind = PV_BOOL, .i = 0}); break;
        case 'K':
            if (!(st = need(u, 1))) st = push(u, (pv){.kind = PV_INT, .i = u->buf[u->pos++]});
            break;
        case 'M':
            if (!(st = need(u, 2))) st = push(u, (pv){.kind = PV_INT, .i = (int64_t)le(u->buf + u->pos, 2)}), u->pos += 2;
            break;
        case 'J':
            if (!(st = need(u, 4))) st = push(u, (pv){.kind = PV_INT, .i = (int32_t)le(u->buf + u->pos, 4)}), u->pos += 4;
            break;
        case 0x8a: { /* LONG1: n-byte two's complement */
            if ((st = need(u, 1))) break;
            uint8_t n = u->buf[u->pos++];
            if (n > 8) return bad(u, at, "integer wider than 64 bits", NULL);
            if ((st = need(u, n))) break;
            uint64_t v = n ? le(u->buf + u->pos, n) : 0;
            if (n && n < 8 && (u->buf[u->pos + n - 1] & 0x80)) v |= ~0ull << (8 * n);
            u->pos += n;
            st = push(u, (pv){.kind = PV_INT, .i = (int64_t)v});
            break;
        }
        case 'X': case 0x8c: case 0x8d: { /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8 */
            int w = op == 'X' ? 4 : op == 0x8c ? 1 : 8;
            if ((st = need(u, (size_t)w))) break;
            uint64_t n = le(u->buf + u->pos, w);
            u->pos += (size_t)w;
            if (n > u->len - u->pos || n > UINT32_MAX) return bad(u, at, "string runs past the end of the pickle", NULL);
            st = push(u, (pv){.kind = PV_STR, .n = (uint32_t)n, .p = u->buf + u->pos});
            u->pos += (size_t)n;
            break;
        }
        case 'c': { /* GLOBAL 'module\nname\n' */
            const uint8_t *m = u->buf + u->pos, *e1 = memchr(m, '\n', u->len - u->pos);
            const uint8_t *n = e1 ? e1 + 1 : NULL;
            const uint8_t *e2 = n ? memchr(n, '\n', (size_t)(u->buf + u->len - n)) : NULL;
            if (!e2) return bad(u, at, "GLOBAL without two newline-terminated names", NULL);
            u->pos = (size_t)(e2 + 1 - u->buf);
            st = global(u, m, (size_t)(e1 - m), n, (size_t)(e2 - n), at);
            break;
        }
        case 0x93: { /* STACK_GLOBAL */
            pv name = {0}, mod = {0};
            if ((st = pop(u, &name, at)) || (st = pop(u, &mod, at))) break;
            if (name.kind != PV_STR || mod.kind != PV_STR) return bad(u, at, "STACK_GLOBAL needs two strings", NULL);
            st = global(u, mod.p, mod.n, name.p, name.n, at);
            break;
        }
        case ')': st = make_tuple(u, 0, at); break;
        case 0x85: case 0x86: case 0x87: st = make_tuple(u, (size_t)(op - 0x84), at); break;
        case 't': /* TUPLE */
            if (!u->nmarks) return bad(u, at, "TUPLE without MARK", NULL);
            st = make_tuple(u, u->nstack - u->marks[u->nmarks - 1], at);
            if (!st) { /* the tuple replaces the mark */
                pv t = u->stack[--u->nstack];
                u->nmarks--;
                st = push(u, t);
            }
            break;
        case '}': st = push(u, (pv){.kind = PV_DICT, .i = u->ndicts++}); break;
        case 's': /* SETITEM */
            if (u->nstack < floor_of_stack(u) + 2) return bad(u, at, "stack underflow", NULL);
            st = setitems(u, 2, at);
            break;
        case 'u': { /* SETITEMS */
            if (!u->nmarks) return bad(u, at, "SETITEMS without MARK", NULL);
            size_t mk = u->marks[--u->nmarks];
            st = setitems(u, u->nstack - mk, at);
            break;
        }
        case 'b': { /* BUILD: only the state of an OrderedDict (its _metadata), which is not needed */
            pv state = {0};
            if ((st = pop(u, &state, at))) break;
            if (u->nstack <= floor_of_stack(u) || u->stack[u->nstack - 1].kind != PV_DICT)
                return bad(u, at, "BUILD of something other than a dict", NULL);
            break;
        }
        case 'Q': { /* BINPERSID */
            pv id = {0};
            if (!(st = pop(u, &id, at))) st = persistent_load(u, id, at);
            break;
        }
        case 'R': st = reduce(u, at); break;
        case 'q':
            if (!(st = need(u, 1))) st = memo_put(u, u->buf[u->pos++], at);
            break;
        case 'r':
            if (!(st = need(u, 4))) st = memo_put(u, le(u->buf + u->pos, 4), at), u->pos += 4;
            break;
        case 0x94: st = memo_put(u, nmemo++, at); break;
        case 'h':
            if (!(st = need(u, 1))) st = memo_get(u, u->buf[u->pos++], at);
            break;
        case 'j':
            if (!(st = need(u, 4))) st = memo_get(u, le(u->buf + u->pos, 4), at), u->pos += 4;
            break;
        case '0': { /* POP */
            pv v = {0};
            st = pop(u, &v, at);
            break;
        }
        default: {
            char d[48];
            snprintf(d, sizeof d, " (0x%02x)", op);
            return bad(u, at, "opcode not used by a state_dict", d);
        }
        }
    }
    return st;
}

void af_pt_entries_free(af_pt_entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++) free(e[i].key);
    free(e);
}

af_status af_pt_parse_pickle(const void *buf, size_t len, const char *what, af_pt_entry **entries, size_t *n)
{
    up u = {.buf = buf, .len = len, .what = what};
    pv res = {0};
    af_pt_entry *out = NULL;
    size_t nout = 0;
    af_status st = run(&u, &res);
    if (!st && res.kind != PV_DICT)
        st = af_errorf(AF_ERR_FORMAT, "%s: the pickle holds %s, not a state_dict (a dict of tensors)", what,
                       pv_names[res.kind]);
    for (size_t k = 0; !st && k < u.npairs; k++) nout += u.pairs[k].dict == res.i;
    if (!st && !(out = af_calloc(nout ? nout : 1, sizeof *out, "state_dict entries"))) st = AF_ERR_NOMEM;
    size_t j = 0;
    for (size_t k = 0; !st && k < u.npairs; k++) {
        const pair *p = &u.pairs[k];
        if (p->dict != res.i) continue;
        if (p->key.kind != PV_STR) {
            st = af_errorf(AF_ERR_FORMAT, "%s: state_dict key %zu is %s, not a string", what, j, pv_names[p->key.kind]);
            break;
        }
        if (p->val.kind != PV_TENSOR) {
            st = af_errorf(AF_ERR_FORMAT, "%s: state_dict key '%.*s' holds %s, not a tensor", what, (int)p->key.n,
                           (const char *)p->key.p, pv_names[p->val.kind]);
            break;
        }
        out[j] = u.tensors[p->val.i];
        if (!(out[j].key = af_malloc(p->key.n + 1, "a state_dict key"))) { st = AF_ERR_NOMEM; break; }
        memcpy(out[j].key, p->key.p, p->key.n);
        out[j].key[p->key.n] = 0;
        j++;
    }
    free(u.stack); free(u.marks); free(u.items); free(u.memo); free(u.pairs); free(u.tensors);
    if (st) {
        af_pt_entries_free(out, j);
        return st;
    }
    *entries = out;
    *n = nout;
    return AF_OK;
}

/* ---- the archive --------------------------------------------------------------- */

static const char *const dtype_names[] = {"float32", "float64", "float16", "bfloat16", "int64",
                                          "int32",   "int16",   "int8",    "uint8",    "bool"};
static const size_t dtype_sizes[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};

const char *af_pt_dtype_name(af_pt_dtype d) { return d < AF_PT_DTYPE_COUNT ? dtype_names[d] : "?"; }
size_t af_pt_dtype_size(af_pt_dtype d) { return d < AF_PT_DTYPE_COUNT ? dtype_sizes[d] : 0; }

int af_pt_is_zip(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char b[4] = {0};
    if (!f) return 0;
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;
}

/* Reads a whole archive member; *out is malloc'ed. */
static af_status read_member(const af_pt_file *f, zip_int64_t idx, const char *name, uint64_t max, uint8_t **out,
                             size_t *n)
{
    zip_stat_t zs;
    if (zip_stat_index(f->zip, (zip_uint64_t)idx, 0, &zs) || !(zs.valid & ZIP_STAT_SIZE))
        return af_errorf(AF_ERR_FORMAT, "%s: cannot stat '%s' in the archive", f->path, name);
    if (zs.size > max)
        return af_errorf(AF_ERR_FORMAT, "%s: '%s' holds %llu bytes, expected at most %llu", f->path, name,
                         (unsigned long long)zs.size, (unsigned long long)max);
    uint8_t *b = af_malloc(zs.size ? (size_t)zs.size : 1, name);
    if (!b) return AF_ERR_NOMEM;
    zip_file_t *zf = zip_fopen_index(f->zip, (zip_uint64_t)idx, 0);
    zip_int64_t got = zf ? zip_fread(zf, b, zs.size) : -1;
    if (zf) zip_fclose(zf);
    if (got < 0 || (uint64_t)got != zs.size) {
        free(b);
        return af_errorf(AF_ERR_FORMAT, "%s: '%s' is truncated or unreadable (read %lld of %llu bytes)", f->path, name,
                         (long long)got, (unsigned long long)zs.size);
    }
    *out = b;
    *n = (size_t)zs.size;
    return AF_OK;
}

af_status af_pt_open(af_pt_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    FILE *probe = fopen(path, "rb");
    if (!probe) return af_errorf(AF_ERR_IO, "%s: cannot open", path);
    fclose(probe);
    if (!af_pt_is_zip(path))
        return af_errorf(AF_ERR_FORMAT, "%s: not a zip archive, so not a PyTorch >= 1.6 .pt file (files written with "
                         "_use_new_zipfile_serialization=False are not supported; re-save with torch.save)", path);
    int err = 0;
    f->zip = zip_open(path, ZIP_RDONLY, &err);
    if (!f->zip) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        af_status st = af_errorf(AF_ERR_FORMAT, "%s: not a readable zip archive (libzip: %s)", path,
                                 zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return st;
    }
    /* data.pkl one folder down: "<name>/data.pkl" */
    zip_int64_t n = zip_get_num_entries(f->zip, 0), pkl = -1;
    for (zip_int64_t i = 0; i < n && pkl < 0; i++) {
        const char *nm = zip_get_name(f->zip, (zip_uint64_t)i, 0);
        const char *sl = nm ? strchr(nm, '/') : NULL;
        if (sl && !strcmp(sl + 1, "data.pkl") && (size_t)(sl - nm) + 1 < sizeof f->prefix) {
            pkl = i;
            snprintf(f->prefix, sizeof f->prefix, "%.*s", (int)(sl - nm + 1), nm);
        }
    }
    af_status st = AF_OK;
    if (pkl < 0) st = af_errorf(AF_ERR_FORMAT, "%s: the archive has no <name>/data.pkl, so is not a torch.save file", path);
    char name[512];
    snprintf(name, sizeof name, "%sbyteorder", f->prefix);
    zip_int64_t bo = st ? -1 : zip_name_locate(f->zip, name, 0);
    if (bo >= 0) {
        uint8_t *b;
        size_t len;
        if (!(st = read_member(f, bo, name, 16, &b, &len))) {
            if (!(len >= 6 && !memcmp(b, "little", 6)))
                st = af_errorf(AF_ERR_FORMAT, "%s: storages are not little-endian ('%s')", path, name);
            free(b);
        }
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(name, sizeof name, "%sdata.pkl", f->prefix);
    if (!st) st = read_member(f, pkl, name, (uint64_t)1 << 30, &buf, &len);
    if (!st) {
        char what[1100];
        snprintf(what, sizeof what, "%s: %s", path, name);
        st = af_pt_parse_pickle(buf, len, what, &f->e, &f->n);
    }
    free(buf);
    if (!st && f->n) { /* a DistributedDataParallel state_dict: drop "module." */
        size_t k = 0;
        while (k < f->n && !strncmp(f->e[k].key, "module.", 7)) k++;
        for (size_t i = 0; k == f->n && i < f->n; i++) memmove(f->e[i].key, f->e[i].key + 7, strlen(f->e[i].key) - 6);
    }
    if (st) af_pt_close(f);
    return st;
}

const af_pt_entry *af_pt_find(const af_pt_file *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].key, key)) return &f->e[i];
    return NULL;
}

af_status af_pt_read(const af_pt_file *f, const af_pt_entry *e, void *dst, size_t dst_bytes)
{
    const size_t es = af_pt_dtype_size(e->dtype);
    /* numel and offset were checked against storage_numel at parse time */
    if ((uint64_t)e->storage_numel > UINT64_MAX / es || (uint64_t)e->numel * es != dst_bytes)
        return af_errorf(AF_ERR_ARG, "%s: key '%s': %lld %s elements do not fill %zu bytes", f->path, e->key,
                         (long long)e->numel, af_pt_dtype_name(e->dtype), dst_bytes);
    char name[512];
    snprintf(name, sizeof name, "%sdata/%s", f->prefix, e->storage);
    zip_int64_t idx = zip_name_locate(f->zip, name, 0);
    if (idx < 0) return af_errorf(AF_ERR_FORMAT, "%s: key '%s': storage '%s' is missing from the archive", f->path, e->key, name);
    const uint64_t want = (uint64_t)e->storage_numel * es;
    zip_stat_t zs;
    if (zip_stat_index(f->zip, (zip_uint64_t)idx, 0, &zs) || !(zs.valid & ZIP_STAT_SIZE) || zs.size != want)
        return af_errorf(AF_ERR_FORMAT, "%s: key '%s': storage '%s' holds %llu bytes, expected %llu (%lld %s elements)",
                         f->path, e->key, name, (unsigned long long)zs.size, (unsigned long long)want,
                         (long long)e->storage_numel, af_pt_dtype_name(e->dtype));
    uint8_t *b;
    size_t len;
    af_status st = read_member(f, idx, name, want, &b, &len);
    if (st) return af_error_wrap(st, "key '%s'", e->key);
    memcpy(dst, b + (size_t)e->offset * es, dst_bytes);
    free(b);
    return AF_OK;
}

void af_pt_close(af_pt_file *f)
{
    if (f->zip) zip_discard(f->zip);
    af_pt_entries_free(f->e, f->n);
    f->zip = NULL;
    f->e = NULL;
    f->n = 0;
}

af_status af_pt_embedding_size(const char *path, int *emb)
{
    af_pt_file f;
    af_status st = af_pt_open(&f, path);
    if (st) return st;
    /* every backbone here ends with a batch norm over the embedding */
    const af_pt_entry *last = NULL;
    for (size_t i = 0; i < f.n; i++) {
        size_t n = strlen(f.e[i].key);
        if (n >= 13 && !strcmp(f.e[i].key + n - 13, ".running_mean") && f.e[i].ndim == 1) last = &f.e[i];
    }
    if (!last || last->shape[0] < 1 || last->shape[0] > 1 << 20)
        st = af_errorf(AF_ERR_FORMAT, "%s: no batch-norm running_mean to take the embedding size from", path);
    else *emb = (int)last->shape[0];
    af_pt_close(&f);
    return st;
}
