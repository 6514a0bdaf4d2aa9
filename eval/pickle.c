/* A restricted unpickler for insightface verification sets (see
 * include/arcface/pickle.h): a small stack machine over the opcodes that
 * pickle.dump((bins, issame_list), f) emits under Python 2 and 3, followed by
 * a check that the result has that shape.
 *
 * Values are small structs; lists and tuples live in a pool and are referred
 * to by index, so a list memoised before its APPENDS (as Python writes it) is
 * the same list when fetched from the memo. The stack of MARK positions is
 * kept apart from the value stack, as CPython's C unpickler does, so that an
 * opcode cannot reach below the innermost MARK. */
#include "arcface/pickle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- opcode names, for error messages ---------------------------------- */

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
    OP_FLOAT = 'F', OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L',
    OP_BININT2 = 'M', OP_NONE = 'N', OP_PERSID = 'P', OP_BINPERSID = 'Q',
    OP_REDUCE = 'R', OP_STRING = 'S', OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U',
    OP_UNICODE = 'V', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_DICT = 'd', OP_EMPTY_DICT = '}', OP_APPENDS = 'e',
    OP_GET = 'g', OP_BINGET = 'h', OP_INST = 'i', OP_LONG_BINGET = 'j',
    OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83,
    OP_EXT4 = 0x84, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C', OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98,
};

static const char *const opnames[256] = {
    [OP_MARK] = "MARK", [OP_STOP] = "STOP", [OP_POP] = "POP", [OP_POP_MARK] = "POP_MARK",
    [OP_DUP] = "DUP", [OP_FLOAT] = "FLOAT", [OP_INT] = "INT", [OP_BININT] = "BININT",
    [OP_BININT1] = "BININT1", [OP_LONG] = "LONG", [OP_BININT2] = "BININT2",
    [OP_NONE] = "NONE", [OP_PERSID] = "PERSID", [OP_BINPERSID] = "BINPERSID",
    [OP_REDUCE] = "REDUCE", [OP_STRING] = "STRING", [OP_BINSTRING] = "BINSTRING",
    [OP_SHORT_BINSTRING] = "SHORT_BINSTRING", [OP_UNICODE] = "UNICODE",
    [OP_BINUNICODE] = "BINUNICODE", [OP_APPEND] = "APPEND", [OP_BUILD] = "BUILD",
    [OP_GLOBAL] = "GLOBAL", [OP_DICT] = "DICT", [OP_EMPTY_DICT] = "EMPTY_DICT",
    [OP_APPENDS] = "APPENDS", [OP_GET] = "GET", [OP_BINGET] = "BINGET",
    [OP_INST] = "INST", [OP_LONG_BINGET] = "LONG_BINGET", [OP_LIST] = "LIST",
    [OP_EMPTY_LIST] = "EMPTY_LIST", [OP_OBJ] = "OBJ", [OP_PUT] = "PUT",
    [OP_BINPUT] = "BINPUT", [OP_LONG_BINPUT] = "LONG_BINPUT", [OP_SETITEM] = "SETITEM",
    [OP_TUPLE] = "TUPLE", [OP_EMPTY_TUPLE] = "EMPTY_TUPLE", [OP_SETITEMS] = "SETITEMS",
    [OP_BINFLOAT] = "BINFLOAT", [OP_PROTO] = "PROTO", [OP_NEWOBJ] = "NEWOBJ",
    [OP_EXT1] = "EXT1", [OP_EXT2] = "EXT2", [OP_EXT4] = "EXT4", [OP_TUPLE1] = "TUPLE1",
    [OP_TUPLE2] = "TUPLE2", [OP_TUPLE3] = "TUPLE3", [OP_NEWTRUE] = "NEWTRUE",
    [OP_NEWFALSE] = "NEWFALSE", [OP_LONG1] = "LONG1", [OP_LONG4] = "LONG4",
    [OP_BINBYTES] = "BINBYTES", [OP_SHORT_BINBYTES] = "SHORT_BINBYTES",
    [OP_SHORT_BINUNICODE] = "SHORT_BINUNICODE", [OP_BINUNICODE8] = "BINUNICODE8",
    [OP_BINBYTES8] = "BINBYTES8", [OP_EMPTY_SET] = "EMPTY_SET", [OP_ADDITEMS] = "ADDITEMS",
    [OP_FROZENSET] = "FROZENSET", [OP_NEWOBJ_EX] = "NEWOBJ_EX",
    [OP_STACK_GLOBAL] = "STACK_GLOBAL", [OP_MEMOIZE] = "MEMOIZE", [OP_FRAME] = "FRAME",
    [OP_BYTEARRAY8] = "BYTEARRAY8", [OP_NEXT_BUFFER] = "NEXT_BUFFER",
    [OP_READONLY_BUFFER] = "READONLY_BUFFER",
};

const char *af_pickle_opcode_name(uint8_t op) { return opnames[op]; }

/* ---- values ------------------------------------------------------------ */

enum vkind {
    V_UNSET = 0,    /* an empty memo slot */
    V_BYTES,        /* bytes, Python 2 str or bytearray: s.p, s.n */
    V_STR,          /* unicode text, still UTF-8: s.p, s.n */
    V_BOOL,         /* i */
    V_INT,          /* i */
    V_LIST,         /* seq */
    V_TUPLE,        /* seq */
    V_CODECS_ENCODE,/* the callable _codecs.encode */
    V_BYTES_TYPE,   /* the callable bytes (builtins / __builtin__) */
};

static const char *const vkind_names[] = {
    [V_UNSET] = "nothing", [V_BYTES] = "a byte string", [V_STR] = "a unicode string",
    [V_BOOL] = "a bool", [V_INT] = "an int", [V_LIST] = "a list", [V_TUPLE] = "a tuple",
    [V_CODECS_ENCODE] = "the function _codecs.encode", [V_BYTES_TYPE] = "the type bytes",
};

typedef struct {
    uint8_t kind;
    size_t off;    /* offset of the opcode that made it, for messages */
    union {
        struct { const uint8_t *p; size_t n; } s;
        int64_t i;
        size_t seq;
    };
} val;

typedef struct { val *item; size_t n, cap; } seq;

struct af_verbin_chunk {
    struct af_verbin_chunk *next;
    size_t used, cap;
    uint8_t data[];
};

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    const char *what;
    int protocol;

    val *stack; size_t nstack, capstack;
    size_t *marks; size_t nmarks, capmarks;
    val *memo; size_t capmemo, memo_count;
    seq *seqs; size_t nseqs, capseqs;
    size_t live;   /* values on the stack plus items in all lists and tuples */

    struct af_verbin_chunk **decoded;   /* where latin-1 decodes go (owned by the af_verbin) */
} upk;

/* ---- errors ------------------------------------------------------------ */

static af_status op_error(const upk *u, af_status s, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Every message about an opcode has the same shape, so a reader of a failed
 * run learns what, where and which opcode without a hex dump. */
static af_status op_error(const upk *u, af_status s, size_t off, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint8_t op = u->buf[off];
    const char *name = opnames[op];
    return af_errorf(s, "%s: pickle opcode 0x%02x (%s) at offset %zu: %s", u->what, op,
                     name ? name : "unknown opcode", off, msg);
}

/* ---- growable arrays --------------------------------------------------- */

static af_status grow(void **p, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap) return AF_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return af_errorf(AF_ERR_NOMEM, "out of memory growing %s to %zu entries", what, c);
    *p = q;
    *cap = c;
    return AF_OK;
}

static af_status count_live(upk *u, size_t off, size_t more)
{
    if (more > AF_VERBIN_MAX_VALUES - u->live)
        return op_error(u, AF_ERR_FORMAT, off,
                        "more than %u values alive at once; a verification set needs far fewer",
                        AF_VERBIN_MAX_VALUES);
    u->live += more;
    return AF_OK;
}

static af_status push(upk *u, val v)
{
    af_status st = count_live(u, v.off, 1);
    if (st) return st;
    st = grow((void **)&u->stack, &u->capstack, u->nstack + 1, sizeof(val), "the pickle stack");
    if (st) return st;
    u->stack[u->nstack++] = v;
    return AF_OK;
}

/* Values above the innermost MARK: what an opcode may consume. */
static size_t avail(const upk *u)
{
    return u->nstack - (u->nmarks ? u->marks[u->nmarks - 1] : 0);
}

static af_status need_stack(const upk *u, size_t off, size_t n)
{
    if (avail(u) < n)
        return op_error(u, AF_ERR_FORMAT, off, "needs %zu value%s on the stack above the last MARK, found %zu",
                        n, n == 1 ? "" : "s", avail(u));
    return AF_OK;
}

static af_status seq_new(upk *u, size_t off, enum vkind kind, const val *items, size_t n, val *out)
{
    af_status st = grow((void **)&u->seqs, &u->capseqs, u->nseqs + 1, sizeof(seq), "the pickle list pool");
    if (st) return st;
    seq *s = &u->seqs[u->nseqs];
    *s = (seq){0};
    if (n) {
        if ((st = count_live(u, off, n))) return st;
        if ((st = grow((void **)&s->item, &s->cap, n, sizeof(val), "a pickle tuple"))) return st;
        memcpy(s->item, items, n * sizeof(val));
        s->n = n;
    }
    *out = (val){.kind = (uint8_t)kind, .off = off, .seq = u->nseqs++};
    return AF_OK;
}

static af_status seq_extend(upk *u, size_t off, val list, const val *items, size_t n)
{
    if (list.kind != V_LIST)
        return op_error(u, AF_ERR_FORMAT, off, "appends to %s (made at offset %zu), expected a list",
                        vkind_names[list.kind], list.off);
    if (!n) return AF_OK;   /* MARK APPENDS with nothing between; an empty list has no array yet */
    seq *s = &u->seqs[list.seq];
    af_status st = count_live(u, off, n);
    if (st) return st;
    if ((st = grow((void **)&s->item, &s->cap, s->n + n, sizeof(val), "a pickle list"))) return st;
    memcpy(s->item + s->n, items, n * sizeof(val));
    s->n += n;
    return AF_OK;
}

/* ---- reading operands -------------------------------------------------- */

static af_status take(upk *u, size_t off, uint64_t n, const char *field, const uint8_t **p)
{
    if (n > u->len - u->pos)
        return op_error(u, AF_ERR_FORMAT, off, "truncated: needs %llu bytes of %s, only %zu remain",
                        (unsigned long long)n, field, u->len - u->pos);
    *p = u->buf + u->pos;
    u->pos += (size_t)n;
    return AF_OK;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static af_status take_uint(upk *u, size_t off, int n, uint64_t *v)
{
    const uint8_t *p = NULL;
    char field[32];
    snprintf(field, sizeof field, "%d-byte operand", n);
    af_status st = take(u, off, (uint64_t)n, field, &p);
    if (!st) *v = le(p, n);
    return st;
}

/* An opcode with a byte count followed by that many bytes. */
static af_status take_counted(upk *u, size_t off, int count_bytes, int is_signed, val *v,
                              enum vkind kind)
{
    uint64_t n;
    af_status st = take_uint(u, off, count_bytes, &n);
    if (st) return st;
    if (is_signed && count_bytes == 4 && (n & 0x80000000u))
        return op_error(u, AF_ERR_FORMAT, off, "negative length %d", (int)(int32_t)(uint32_t)n);
    const uint8_t *p = NULL;
    if ((st = take(u, off, n, "string data", &p))) return st;
    *v = (val){.kind = (uint8_t)kind, .off = off, .s = {p, (size_t)n}};
    return AF_OK;
}

/* One newline-terminated line of a GLOBAL operand. */
static af_status take_line(upk *u, size_t off, const char *field, const uint8_t **p, size_t *n)
{
    const uint8_t *start = u->buf + u->pos;
    const uint8_t *nl = memchr(start, '\n', u->len - u->pos);
    if (!nl)
        return op_error(u, AF_ERR_FORMAT, off, "truncated: %s has no terminating newline", field);
    *p = start;
    *n = (size_t)(nl - start);
    u->pos += *n + 1;
    return AF_OK;
}

static int text_is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static af_status resolve_global(upk *u, size_t off, const uint8_t *mod, size_t nmod,
                                const uint8_t *name, size_t nname, val *out)
{
    if (text_is(mod, nmod, "_codecs") && text_is(name, nname, "encode")) {
        *out = (val){.kind = V_CODECS_ENCODE, .off = off};
        return AF_OK;
    }
    if ((text_is(mod, nmod, "__builtin__") || text_is(mod, nmod, "builtins")) &&
        text_is(name, nname, "bytes")) {
        *out = (val){.kind = V_BYTES_TYPE, .off = off};
        return AF_OK;
    }
    int m = nmod > 64 ? 64 : (int)nmod, k = nname > 64 ? 64 : (int)nname;
    return op_error(u, AF_ERR_FORMAT, off,
                    "refers to '%.*s.%.*s'; a verification .bin may only use _codecs.encode and bytes "
                    "(bins must be a list of bytes and issame_list a list of bools, not e.g. a numpy array)",
                    m, (const char *)mod, k, (const char *)name);
}

/* ---- latin-1 ----------------------------------------------------------- */

static af_status chunk_alloc(upk *u, size_t n, uint8_t **out)
{
    struct af_verbin_chunk *c = *u->decoded;
    if (!c || c->cap - c->used < n) {
        /* Chunks of 1 MiB keep 12,000 small images from costing 12,000 mallocs. */
        size_t cap = n > ((size_t)1 << 20) ? n : (size_t)1 << 20;
        c = af_malloc(sizeof *c + cap, "latin-1 decoded images");
        if (!c) return AF_ERR_NOMEM;
        c->next = *u->decoded;
        c->used = 0;
        c->cap = cap;
        *u->decoded = c;
    }
    *out = c->data + c->used;
    c->used += n;
    return AF_OK;
}

/* Python 3 writes bytes at protocol 2 as _codecs.encode(text, 'latin1'), text
 * holding one code point per byte; the pickle stores that text as UTF-8. */
static af_status latin1_decode(upk *u, size_t off, val text, val *out)
{
    const uint8_t *p = text.s.p;
    size_t n = text.s.n, m = 0;
    for (size_t i = 0; i < n; i++, m++) {
        if (p[i] < 0x80) continue;
        if ((p[i] == 0xc2 || p[i] == 0xc3) && i + 1 < n && (p[i + 1] & 0xc0) == 0x80) {
            i++;
            continue;
        }
        return op_error(u, AF_ERR_FORMAT, off,
                        "the text made at offset %zu has a character above U+00FF or invalid UTF-8 "
                        "at its byte %zu (0x%02x); latin-1 text was expected",
                        text.off, i, p[i]);
    }
    uint8_t *dst;
    af_status st = chunk_alloc(u, m, &dst);
    if (st) return st;
    for (size_t i = 0, k = 0; i < n; i++, k++) {
        if (p[i] < 0x80) dst[k] = p[i];
        else { dst[k] = (uint8_t)((p[i] & 0x03) << 6 | (p[i + 1] & 0x3f)); i++; }
    }
    *out = (val){.kind = V_BYTES, .off = off, .s = {dst, m}};
    return AF_OK;
}

static af_status reduce(upk *u, size_t off, val fn, val args, val *out)
{
    const seq *a = args.kind == V_TUPLE ? &u->seqs[args.seq] : NULL;
    if (!a)
        return op_error(u, AF_ERR_FORMAT, off, "arguments are %s (made at offset %zu), expected a tuple",
                        vkind_names[args.kind], args.off);
    if (fn.kind == V_BYTES_TYPE) {
        if (a->n != 0)
            return op_error(u, AF_ERR_FORMAT, off, "bytes() with %zu arguments; only bytes() is supported", a->n);
        *out = (val){.kind = V_BYTES, .off = off, .s = {(const uint8_t *)"", 0}};
        return AF_OK;
    }
    if (fn.kind == V_CODECS_ENCODE) {
        if (a->n != 2 || a->item[0].kind != V_STR || a->item[1].kind != V_STR)
            return op_error(u, AF_ERR_FORMAT, off,
                            "_codecs.encode called with %zu arguments; expected (text, 'latin1')", a->n);
        val enc = a->item[1];
        if (!text_is(enc.s.p, enc.s.n, "latin1") && !text_is(enc.s.p, enc.s.n, "latin-1")) {
            int k = enc.s.n > 32 ? 32 : (int)enc.s.n;
            return op_error(u, AF_ERR_FORMAT, off, "_codecs.encode with encoding '%.*s'; expected 'latin1'",
                            k, (const char *)enc.s.p);
        }
        return latin1_decode(u, off, a->item[0], out);
    }
    return op_error(u, AF_ERR_FORMAT, off, "calls %s (made at offset %zu); only _codecs.encode and bytes may be called",
                    vkind_names[fn.kind], fn.off);
}

/* ---- memo -------------------------------------------------------------- */

static af_status memo_put(upk *u, size_t off, uint64_t key)
{
    af_status st = need_stack(u, off, 1);
    if (st) return st;
    /* Picklers number memo keys from 0 up, one per object, so a key at or
     * beyond the data length is never needed; the bound caps the memo array. */
    if (key >= AF_VERBIN_MAX_MEMO || key >= u->len)
        return op_error(u, AF_ERR_FORMAT, off, "memo key %llu exceeds the limit %zu",
                        (unsigned long long)key, u->len < AF_VERBIN_MAX_MEMO ? u->len : (size_t)AF_VERBIN_MAX_MEMO);
    size_t old = u->capmemo;
    if ((st = grow((void **)&u->memo, &u->capmemo, (size_t)key + 1, sizeof(val), "the pickle memo"))) return st;
    memset(u->memo + old, 0, (u->capmemo - old) * sizeof(val));
    if (u->memo[key].kind == V_UNSET) u->memo_count++;
    u->memo[key] = u->stack[u->nstack - 1];
    return AF_OK;
}

static af_status memo_get(upk *u, size_t off, uint64_t key)
{
    if (key >= u->capmemo || u->memo[key].kind == V_UNSET)
        return op_error(u, AF_ERR_FORMAT, off, "memo key %llu was never stored", (unsigned long long)key);
    return push(u, u->memo[key]);
}

/* ---- the machine ------------------------------------------------------- */

static af_status run(upk *u, val *result)
{
    af_status st = AF_OK;
    while (u->pos < u->len) {
        size_t off = u->pos++;
        uint8_t op = u->buf[off];
        val v = {.off = off};
        uint64_t n = 0;
        switch (op) {
        case OP_PROTO:
            if ((st = take_uint(u, off, 1, &n))) return st;
            if (n < 2 || n > 5)
                return op_error(u, AF_ERR_FORMAT, off, "protocol %llu; protocols 2 to 5 are supported",
                                (unsigned long long)n);
            u->protocol = (int)n;
            break;
        case OP_FRAME:
            /* Frames only group opcodes for buffered reading; here it is
             * enough that the frame lies inside the data. */
            if ((st = take_uint(u, off, 8, &n))) return st;
            if (n > u->len - u->pos)
                return op_error(u, AF_ERR_FORMAT, off, "truncated: frame of %llu bytes, only %zu remain",
                                (unsigned long long)n, u->len - u->pos);
            break;
        case OP_MARK:
            if ((st = grow((void **)&u->marks, &u->capmarks, u->nmarks + 1, sizeof(size_t), "the pickle marks")))
                return st;
            if ((st = count_live(u, off, 1))) return st;   /* bounds the mark stack too */
            u->marks[u->nmarks++] = u->nstack;
            break;
        case OP_STOP:
            if ((st = need_stack(u, off, 1))) return st;
            *result = u->stack[u->nstack - 1];
            return AF_OK;

        case OP_EMPTY_LIST:
        case OP_EMPTY_TUPLE:
            if ((st = seq_new(u, off, op == OP_EMPTY_LIST ? V_LIST : V_TUPLE, NULL, 0, &v))) return st;
            if ((st = push(u, v))) return st;
            break;
        case OP_TUPLE1:
        case OP_TUPLE2:
        case OP_TUPLE3: {
            size_t k = (size_t)(op - OP_TUPLE1 + 1);
            if ((st = need_stack(u, off, k))) return st;
            u->nstack -= k;
            u->live -= k;
            if ((st = seq_new(u, off, V_TUPLE, u->stack + u->nstack, k, &v))) return st;
            if ((st = push(u, v))) return st;
            break;
        }
        case OP_TUPLE:
        case OP_LIST:
        case OP_APPENDS: {
            if (!u->nmarks) return op_error(u, AF_ERR_FORMAT, off, "no MARK before it");
            size_t mark = u->marks[--u->nmarks];
            u->live--;
            size_t k = u->nstack - mark;
            if (op == OP_APPENDS) {
                size_t fence = u->nmarks ? u->marks[u->nmarks - 1] : 0;
                if (mark <= fence)
                    return op_error(u, AF_ERR_FORMAT, off, "no list below its MARK");
                u->nstack = mark;
                u->live -= k;
                if ((st = seq_extend(u, off, u->stack[mark - 1], u->stack + mark, k))) return st;
            } else {
                u->nstack = mark;
                u->live -= k;
                /* k may be 0 before anything was ever pushed, when stack is still NULL. */
                const val *items = k ? u->stack + mark : NULL;
                if ((st = seq_new(u, off, op == OP_LIST ? V_LIST : V_TUPLE, items, k, &v))) return st;
                if ((st = push(u, v))) return st;
            }
            break;
        }
        case OP_APPEND:
            if ((st = need_stack(u, off, 2))) return st;
            u->nstack--;
            u->live--;
            if ((st = seq_extend(u, off, u->stack[u->nstack - 1], u->stack + u->nstack, 1))) return st;
            break;

        case OP_SHORT_BINSTRING:
        case OP_SHORT_BINBYTES:
            if ((st = take_counted(u, off, 1, 0, &v, V_BYTES)) || (st = push(u, v))) return st;
            break;
        case OP_BINSTRING:
            if ((st = take_counted(u, off, 4, 1, &v, V_BYTES)) || (st = push(u, v))) return st;
            break;
        case OP_BINBYTES:
            if ((st = take_counted(u, off, 4, 0, &v, V_BYTES)) || (st = push(u, v))) return st;
            break;
        case OP_BINBYTES8:
        case OP_BYTEARRAY8:
            if ((st = take_counted(u, off, 8, 0, &v, V_BYTES)) || (st = push(u, v))) return st;
            break;
        case OP_SHORT_BINUNICODE:
            if ((st = take_counted(u, off, 1, 0, &v, V_STR)) || (st = push(u, v))) return st;
            break;
        case OP_BINUNICODE:
            if ((st = take_counted(u, off, 4, 0, &v, V_STR)) || (st = push(u, v))) return st;
            break;
        case OP_BINUNICODE8:
            if ((st = take_counted(u, off, 8, 0, &v, V_STR)) || (st = push(u, v))) return st;
            break;

        case OP_NEWTRUE:
        case OP_NEWFALSE:
            v.kind = V_BOOL;
            v.i = op == OP_NEWTRUE;
            if ((st = push(u, v))) return st;
            break;
        case OP_BININT:
        case OP_BININT1:
        case OP_BININT2: {
            int k = op == OP_BININT ? 4 : op == OP_BININT1 ? 1 : 2;
            if ((st = take_uint(u, off, k, &n))) return st;
            v.kind = V_INT;
            v.i = k == 4 ? (int64_t)(int32_t)(uint32_t)n : (int64_t)n;
            if ((st = push(u, v))) return st;
            break;
        }

        case OP_BINPUT:
        case OP_LONG_BINPUT:
            if ((st = take_uint(u, off, op == OP_BINPUT ? 1 : 4, &n))) return st;
            if ((st = memo_put(u, off, n))) return st;
            break;
        case OP_MEMOIZE:
            if ((st = memo_put(u, off, u->memo_count))) return st;
            break;
        case OP_BINGET:
        case OP_LONG_BINGET:
            if ((st = take_uint(u, off, op == OP_BINGET ? 1 : 4, &n))) return st;
            if ((st = memo_get(u, off, n))) return st;
            break;

        case OP_GLOBAL: {
            const uint8_t *mod = NULL, *name = NULL;
            size_t nmod = 0, nname = 0;
            if ((st = take_line(u, off, "module name", &mod, &nmod))) return st;
            if ((st = take_line(u, off, "global name", &name, &nname))) return st;
            if ((st = resolve_global(u, off, mod, nmod, name, nname, &v))) return st;
            if ((st = push(u, v))) return st;
            break;
        }
        case OP_STACK_GLOBAL: {
            if ((st = need_stack(u, off, 2))) return st;
            val mod = u->stack[u->nstack - 2], name = u->stack[u->nstack - 1];
            if (mod.kind != V_STR || name.kind != V_STR)
                return op_error(u, AF_ERR_FORMAT, off, "module and name are %s and %s, expected two strings",
                                vkind_names[mod.kind], vkind_names[name.kind]);
            u->nstack -= 2;
            u->live -= 2;
            if ((st = resolve_global(u, off, mod.s.p, mod.s.n, name.s.p, name.s.n, &v))) return st;
            if ((st = push(u, v))) return st;
            break;
        }
        case OP_REDUCE: {
            if ((st = need_stack(u, off, 2))) return st;
            val fn = u->stack[u->nstack - 2], args = u->stack[u->nstack - 1];
            u->nstack -= 2;
            u->live -= 2;
            if ((st = reduce(u, off, fn, args, &v))) return st;
            if ((st = push(u, v))) return st;
            break;
        }
        default:
            return op_error(u, AF_ERR_FORMAT, off,
                            opnames[op] ? "unsupported here; a verification .bin holds only "
                                          "(list of byte strings, list of bools)"
                                        : "not a pickle opcode");
        }
    }
    return af_errorf(AF_ERR_FORMAT, "%s: truncated: %zu bytes of pickle data end without a STOP opcode",
                     u->what, u->len);
}

/* ---- the expected shape ------------------------------------------------ */

static af_status check_shape(upk *u, val top, af_verbin *vb)
{
    if ((top.kind != V_TUPLE && top.kind != V_LIST) || u->seqs[top.seq].n != 2)
        return af_errorf(AF_ERR_FORMAT,
                         "%s: the pickled object (made at offset %zu) is %s of %zu items; expected the "
                         "pair (bins, issame_list)",
                         u->what, top.off, vkind_names[top.kind],
                         top.kind == V_TUPLE || top.kind == V_LIST ? u->seqs[top.seq].n : 0);
    val bv = u->seqs[top.seq].item[0], iv = u->seqs[top.seq].item[1];
    if (bv.kind != V_LIST && bv.kind != V_TUPLE)
        return af_errorf(AF_ERR_FORMAT, "%s: bins (made at offset %zu) is %s, expected a list of byte strings",
                         u->what, bv.off, vkind_names[bv.kind]);
    if (iv.kind != V_LIST && iv.kind != V_TUPLE)
        return af_errorf(AF_ERR_FORMAT, "%s: issame_list (made at offset %zu) is %s, expected a list of bools",
                         u->what, iv.off, vkind_names[iv.kind]);
    const seq *bins = &u->seqs[bv.seq], *same = &u->seqs[iv.seq];
    if (bins->n != 2 * same->n)
        return af_errorf(AF_ERR_FORMAT,
                         "%s: bins holds %zu images and issame_list %zu pairs; expected bins to hold "
                         "2 * %zu = %zu images",
                         u->what, bins->n, same->n, same->n, 2 * same->n);
    for (size_t i = 0; i < bins->n; i++)
        if (bins->item[i].kind != V_BYTES)
            return af_errorf(AF_ERR_FORMAT, "%s: bins[%zu] (made at offset %zu) is %s, expected a byte string",
                             u->what, i, bins->item[i].off, vkind_names[bins->item[i].kind]);
    for (size_t i = 0; i < same->n; i++) {
        val s = same->item[i];
        if (s.kind == V_BOOL || (s.kind == V_INT && (s.i == 0 || s.i == 1))) continue;
        if (s.kind == V_INT)
            return af_errorf(AF_ERR_FORMAT, "%s: issame_list[%zu] (made at offset %zu) is the int %lld, "
                             "expected a bool (or 0 or 1)", u->what, i, s.off, (long long)s.i);
        return af_errorf(AF_ERR_FORMAT, "%s: issame_list[%zu] (made at offset %zu) is %s, expected a bool",
                         u->what, i, s.off, vkind_names[s.kind]);
    }

    size_t n = same->n;
    vb->image = af_malloc((2 * n) * sizeof *vb->image, "verification image pointers");
    vb->image_len = af_malloc((2 * n) * sizeof *vb->image_len, "verification image lengths");
    vb->issame = af_malloc(n, "verification issame list");
    if (!vb->image || !vb->image_len || !vb->issame) return AF_ERR_NOMEM;
    for (size_t i = 0; i < 2 * n; i++) {
        vb->image[i] = bins->item[i].s.p;
        vb->image_len[i] = bins->item[i].s.n;
    }
    for (size_t i = 0; i < n; i++) vb->issame[i] = same->item[i].i != 0;
    vb->n_pairs = n;
    vb->protocol = u->protocol;
    return AF_OK;
}

/* ---- public ------------------------------------------------------------ */

static void verbin_release(af_verbin *vb)
{
    free(vb->image);
    free(vb->image_len);
    free(vb->issame);
    for (struct af_verbin_chunk *c = vb->decoded, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    vb->image = NULL;
    vb->image_len = NULL;
    vb->issame = NULL;
    vb->decoded = NULL;
    vb->n_pairs = 0;
}

af_status af_verbin_parse(af_verbin *vb, const void *buf, size_t len, const char *what)
{
    *vb = (af_verbin){0};
    if (!what) what = "verification .bin";
    if (!buf && len) return af_errorf(AF_ERR_ARG, "%s: NULL buffer of %zu bytes", what, len);
    upk u = {.buf = buf, .len = len, .what = what, .decoded = &vb->decoded};
    val top = {0};
    af_status st = run(&u, &top);
    if (!st) st = check_shape(&u, top, vb);
    for (size_t i = 0; i < u.nseqs; i++) free(u.seqs[i].item);
    free(u.seqs);
    free(u.stack);
    free(u.marks);
    free(u.memo);
    if (st) verbin_release(vb);
    return st;
}

af_status af_verbin_load(af_verbin *vb, const char *path)
{
    *vb = (af_verbin){0};
    af_status st = AF_OK;
    void *map = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = af_errorf(AF_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (sb.st_size == 0) {
        st = af_errorf(AF_ERR_FORMAT, "%s: empty file; expected a pickled (bins, issame_list)", path);
        goto fail;
    }
    len = (size_t)sb.st_size;
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        map = NULL;
        st = af_errorf(AF_ERR_IO, "%s: cannot map %zu bytes: %s", path, len, strerror(errno));
        goto fail;
    }
    /* The parse walks the file once from the start; images are read later in order. */
    (void)madvise(map, len, MADV_SEQUENTIAL);
    close(fd);
    fd = -1;
    if ((st = af_verbin_parse(vb, map, len, path))) goto fail;
    vb->map = map;
    vb->map_len = len;
    return AF_OK;
fail:
    if (map) munmap(map, len);
    if (fd >= 0) close(fd);
    return st;
}

void af_verbin_free(af_verbin *vb)
{
    if (!vb) return;
    verbin_release(vb);
    if (vb->map) munmap(vb->map, vb->map_len);
    vb->map = NULL;
    vb->map_len = 0;
}
