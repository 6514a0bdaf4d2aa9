/* A small evaluator for the Python right-hand sides of insightface config files
 * (core/pyconf.h). A recursive-descent parser over one logical line that follows
 * Python 3's rules where the configs depend on them: int // int floors and stays
 * an int, / always gives a float, % takes the sign of the divisor, `config.x`
 * must have been assigned earlier in the same file (Python raises
 * AttributeError otherwise, as each file builds its own edict). */
#include "pyconf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *start;
    pyv_lookup lookup;
    void *user;
    char *msg;
    size_t cap;
    int failed;
    int depth;  /* nesting of brackets and unary operators: bounded, as each level holds a pyv on the stack */
} parser;

static int fail(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *ps, const char *fmt, ...)
{
    if (ps->failed) return 0;
    ps->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->msg, ps->cap, fmt, ap);
    va_end(ap);
    return 0;
}

static void skip(parser *ps) { while (*ps->p == ' ' || *ps->p == '\t') ps->p++; }

static int col(const parser *ps) { return (int)(ps->p - ps->start) + 1; }

static int is_num(const pyv_scalar *v) { return v->kind == PYV_BOOL || v->kind == PYV_INT || v->kind == PYV_FLOAT; }
static double num(const pyv_scalar *v) { return v->kind == PYV_FLOAT ? v->f : (double)v->i; }

static const char *kind_name(pyv_kind k)
{
    static const char *const n[] = {"NoneType", "bool", "int", "float", "str", "tuple", "list"};
    return n[k];
}

static int expr(parser *ps, pyv *out);

static int string_lit(parser *ps, pyv_scalar *out)
{
    out->kind = PYV_STR_T;
    size_t n = 0;
    /* Adjacent literals concatenate, as in Python. */
    while (*ps->p == '\'' || *ps->p == '"') {
        char q = *ps->p;
        int open = col(ps);
        ps->p++;
        while (*ps->p && *ps->p != q) {
            char c = *ps->p++;
            if (c == '\\' && *ps->p) {
                char e = *ps->p++;
                c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                if (e != 'n' && e != 't' && e != '\\' && e != '\'' && e != '"') {
                    if (n + 1 < sizeof out->s) out->s[n++] = '\\';
                }
            }
            if (n + 1 >= sizeof out->s) return fail(ps, "string literal at column %d is longer than %d characters", open,
                                                   (int)sizeof out->s - 1);
            out->s[n++] = c;
        }
        if (*ps->p != q) return fail(ps, "unterminated string literal: the %c opened at column %d is never closed", q, open);
        ps->p++;
        skip(ps);
    }
    out->s[n] = 0;
    return 1;
}

static int number_lit(parser *ps, pyv_scalar *out)
{
    char buf[64];
    size_t n = 0;
    int is_float = 0;
    const char *q = ps->p;
    while (isdigit((unsigned char)*q) || *q == '_' || *q == '.' ||
           ((*q == 'e' || *q == 'E') && (isdigit((unsigned char)q[1]) || ((q[1] == '-' || q[1] == '+') && isdigit((unsigned char)q[2])))) ||
           ((*q == '-' || *q == '+') && (q[-1] == 'e' || q[-1] == 'E'))) {
        if (*q == '.' || *q == 'e' || *q == 'E') is_float = 1;
        if (*q != '_' && n + 1 < sizeof buf) buf[n++] = *q;
        q++;
    }
    buf[n] = 0;
    if (isalpha((unsigned char)*q)) return fail(ps, "invalid number at column %d", col(ps));
    char *end;
    errno = 0;
    if (is_float) {
        out->kind = PYV_FLOAT;
        out->f = strtod(buf, &end);
    } else {
        out->kind = PYV_INT;
        out->i = strtoll(buf, &end, 10);
    }
    if (*end || errno) return fail(ps, "invalid or out-of-range number '%s' at column %d", buf, col(ps));
    ps->p = q;
    return 1;
}

static int name(parser *ps, char *buf, size_t cap)
{
    size_t n = 0;
    if (!isalpha((unsigned char)*ps->p) && *ps->p != '_') return 0;
    while (isalnum((unsigned char)*ps->p) || *ps->p == '_') {
        if (n + 1 < cap) buf[n++] = *ps->p;
        ps->p++;
    }
    buf[n] = 0;
    return 1;
}

/* ( ... ) or [ ... ]: a parenthesised expression, a tuple or a list of scalars. */
static int sequence(parser *ps, pyv *out)
{
    char close = *ps->p == '(' ? ')' : ']';
    int open = col(ps), commas = 0;
    ps->p++;
    skip(ps);
    out->kind = close == ')' ? PYV_TUPLE : PYV_LIST;
    out->n = 0;
    while (*ps->p != close) {
        pyv item;
        if (!expr(ps, &item)) return 0;
        if (close == ')' && out->n == 0 && *ps->p == ')' && !commas) {
            *out = item; /* (expr): just grouping */
            ps->p++;
            skip(ps);
            return 1;
        }
        if (item.kind == PYV_TUPLE || item.kind == PYV_LIST)
            return fail(ps, "nested %s inside a %s at column %d: only sequences of numbers and strings are supported",
                        kind_name(item.kind), kind_name(out->kind), open);
        if (out->n == PYV_ITEMS) return fail(ps, "more than %d items in the %s at column %d", PYV_ITEMS, kind_name(out->kind), open);
        out->items[out->n++] = item.v;
        if (*ps->p == ',') {
            commas++;
            ps->p++;
            skip(ps);
        } else if (*ps->p != close) {
            if (!*ps->p) return fail(ps, "the %c opened at column %d is never closed", close == ')' ? '(' : '[', open);
            return fail(ps, "expected ',' or '%c' at column %d, got '%c'", close, col(ps), *ps->p);
        }
    }
    ps->p++;
    skip(ps);
    return 1;
}

static int atom(parser *ps, pyv *out)
{
    skip(ps);
    out->n = 0;
    char c = *ps->p;
    if (c == '(' || c == '[') {
        if (++ps->depth > 32) return fail(ps, "brackets nested deeper than 32 levels at column %d", col(ps));
        int ok = sequence(ps, out);
        ps->depth--;
        return ok;
    }
    if (c == '\'' || c == '"') {
        if (!string_lit(ps, &out->v)) return 0;
        out->kind = PYV_STR_T;
        return 1;
    }
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)ps->p[1]))) {
        if (!number_lit(ps, &out->v)) return 0;
        out->kind = out->v.kind;
        skip(ps);
        return 1;
    }
    char id[128];
    int at = col(ps);
    if (!name(ps, id, sizeof id)) {
        if (!c) return fail(ps, "expected a value at column %d, got the end of the line", at);
        return fail(ps, "unexpected '%c' at column %d", c, at);
    }
    memset(&out->v, 0, sizeof out->v);
    if (!strcmp(id, "None")) out->v.kind = PYV_NONE;
    else if (!strcmp(id, "True") || !strcmp(id, "False")) { out->v.kind = PYV_BOOL; out->v.i = id[0] == 'T'; }
    else if (!strcmp(id, "config") && *ps->p == '.') {
        ps->p++;
        char key[128];
        if (!name(ps, key, sizeof key)) return fail(ps, "expected a key name after 'config.' at column %d", col(ps));
        if (!ps->lookup || !ps->lookup(ps->user, key, out))
            return fail(ps, "config.%s is not set earlier in this file (Python would raise AttributeError: "
                        "each file builds its own config)", key);
        skip(ps);
        return 1;
    } else {
        return fail(ps, "name '%s' at column %d is not defined (only None, True, False and config.KEY are)", id, at);
    }
    out->kind = out->v.kind;
    skip(ps);
    return 1;
}

static int scalar_of(parser *ps, const pyv *v, const char *op, pyv_scalar *out)
{
    if (v->kind == PYV_TUPLE || v->kind == PYV_LIST)
        return fail(ps, "operator '%s' on a %s is not supported", op, kind_name(v->kind));
    *out = v->v;
    return 1;
}

static int arith(parser *ps, const char *op, const pyv *a, const pyv *b, pyv *out)
{
    pyv_scalar x, y, r;
    if (!scalar_of(ps, a, op, &x) || !scalar_of(ps, b, op, &y)) return 0;
    memset(&r, 0, sizeof r);
    if (x.kind == PYV_STR_T && y.kind == PYV_STR_T && !strcmp(op, "+")) {
        if (strlen(x.s) + strlen(y.s) >= sizeof r.s) return fail(ps, "string too long after '+'");
        r.kind = PYV_STR_T;
        size_t nx = strlen(x.s);
        memcpy(r.s, x.s, nx);
        memcpy(r.s + nx, y.s, strlen(y.s) + 1);
    } else if (!is_num(&x) || !is_num(&y)) {
        return fail(ps, "unsupported operand types for %s: '%s' and '%s'", op, kind_name(x.kind), kind_name(y.kind));
    } else if (x.kind != PYV_FLOAT && y.kind != PYV_FLOAT && strcmp(op, "/") &&
               !(!strcmp(op, "**") && y.i < 0)) {
        long long u = x.i, v = y.i, w = 0;
        int ovf = 0;
        r.kind = PYV_INT;
        if (!strcmp(op, "+")) ovf = __builtin_add_overflow(u, v, &w);
        else if (!strcmp(op, "-")) ovf = __builtin_sub_overflow(u, v, &w);
        else if (!strcmp(op, "*")) ovf = __builtin_mul_overflow(u, v, &w);
        else if (!strcmp(op, "**")) {
            w = 1;
            for (long long k = 0; k < v && !ovf; k++) ovf = __builtin_mul_overflow(w, u, &w);
        } else {
            if (v == 0) return fail(ps, "division by zero in '%s'", op);
            if (u == (-9223372036854775807LL - 1) && v == -1) ovf = 1;
            else {
                long long q = u / v, m = u % v;
                if (m != 0 && ((m < 0) != (v < 0))) { q--; m += v; }
                w = !strcmp(op, "//") ? q : m;
            }
        }
        if (ovf) return fail(ps, "integer overflow in '%s'", op);
        r.i = w;
    } else {
        double u = num(&x), v = num(&y), w;
        r.kind = PYV_FLOAT;
        if ((!strcmp(op, "/") || !strcmp(op, "//") || !strcmp(op, "%")) && v == 0)
            return fail(ps, "division by zero in '%s'", op);
        if (!strcmp(op, "+")) w = u + v;
        else if (!strcmp(op, "-")) w = u - v;
        else if (!strcmp(op, "*")) w = u * v;
        else if (!strcmp(op, "/")) w = u / v;
        else if (!strcmp(op, "//")) w = floor(u / v);
        else if (!strcmp(op, "%")) { w = fmod(u, v); if (w != 0 && ((w < 0) != (v < 0))) w += v; }
        else w = pow(u, v);
        if (!isfinite(w)) return fail(ps, "'%s' gives a non-finite result", op);
        r.f = w;
    }
    out->kind = r.kind;
    out->v = r;
    out->n = 0;
    return 1;
}

static int unary(parser *ps, pyv *out);

static int power(parser *ps, pyv *out)
{
    if (!atom(ps, out)) return 0;
    if (ps->p[0] == '*' && ps->p[1] == '*') {
        ps->p += 2;
        pyv rhs;
        if (++ps->depth > 32) return fail(ps, "expression nested deeper than 32 levels at column %d", col(ps));
        int ok = unary(ps, &rhs);
        ps->depth--;
        if (!ok) return 0;
        return arith(ps, "**", out, &rhs, out);
    }
    return 1;
}

static int unary(parser *ps, pyv *out)
{
    skip(ps);
    if (*ps->p == '-' || *ps->p == '+') {
        char op = *ps->p++;
        if (++ps->depth > 32) return fail(ps, "expression nested deeper than 32 levels at column %d", col(ps));
        int ok = unary(ps, out);
        ps->depth--;
        if (!ok) return 0;
        pyv zero = {.kind = PYV_INT, .v = {.kind = PYV_INT}};
        if (op == '-') return arith(ps, "-", &zero, out, out);
        pyv_scalar s = {0};
        if (!scalar_of(ps, out, "+", &s)) return 0;
        if (!is_num(&s)) return fail(ps, "bad operand type for unary +: '%s'", kind_name(s.kind));
        return 1;
    }
    return power(ps, out);
}

static int term(parser *ps, pyv *out)
{
    if (!unary(ps, out)) return 0;
    for (;;) {
        const char *op;
        if (ps->p[0] == '/' && ps->p[1] == '/') op = "//";
        else if (ps->p[0] == '*' && ps->p[1] != '*') op = "*";
        else if (ps->p[0] == '/') op = "/";
        else if (ps->p[0] == '%') op = "%";
        else return 1;
        ps->p += strlen(op);
        pyv rhs;
        if (!unary(ps, &rhs) || !arith(ps, op, out, &rhs, out)) return 0;
    }
}

static int expr(parser *ps, pyv *out)
{
    if (!term(ps, out)) return 0;
    for (;;) {
        skip(ps);
        if (*ps->p != '+' && *ps->p != '-') return 1;
        const char *op = *ps->p == '+' ? "+" : "-";
        ps->p++;
        pyv rhs;
        if (!term(ps, &rhs) || !arith(ps, op, out, &rhs, out)) return 0;
    }
}

pyv_status pyv_eval(const char *text, pyv_lookup lookup, void *user, pyv *out, char *msg, size_t cap)
{
    parser ps = {.p = text, .start = text, .lookup = lookup, .user = user, .msg = msg, .cap = cap};
    memset(out, 0, sizeof *out);
    msg[0] = 0;
    if (expr(&ps, out) && *ps.p == ',') {
        /* a, b, c: a tuple without parentheses */
        pyv first = *out;
        if (first.kind == PYV_TUPLE || first.kind == PYV_LIST) fail(&ps, "nested sequence in a tuple");
        out->kind = PYV_TUPLE;
        out->n = 1;
        out->items[0] = first.v;
        while (!ps.failed && *ps.p == ',') {
            ps.p++;
            skip(&ps);
            if (!*ps.p) break;
            pyv item;
            if (!expr(&ps, &item)) break;
            if (item.kind == PYV_TUPLE || item.kind == PYV_LIST) { fail(&ps, "nested sequence in a tuple"); break; }
            if (out->n == PYV_ITEMS) { fail(&ps, "more than %d items in a tuple", PYV_ITEMS); break; }
            out->items[out->n++] = item.v;
        }
    }
    skip(&ps);
    if (!ps.failed && *ps.p) fail(&ps, "unexpected '%c' at column %d", *ps.p, col(&ps));
    if (!ps.failed) return PYV_OK;
    /* Nothing Python-like in it (no quote, bracket or config. reference, and
     * not starting like a number): a bare value of the key = value format,
     * such as r18 or fmnist:/data. */
    const char *t = text;
    while (*t == ' ' || *t == '\t') t++;
    if (!strpbrk(text, "'\"([])") && !strstr(text, "config.") && !isdigit((unsigned char)*t) && !strchr(".-+", *t))
        return PYV_ERR_BARE;
    return PYV_ERR;
}

static int fmt_scalar(const pyv_scalar *s, char *buf, size_t cap)
{
    int n;
    switch (s->kind) {
    case PYV_NONE: n = snprintf(buf, cap, "None"); break;
    case PYV_BOOL: n = snprintf(buf, cap, "%d", (int)s->i); break;
    case PYV_INT: n = snprintf(buf, cap, "%lld", s->i); break;
    case PYV_FLOAT: n = snprintf(buf, cap, "%.17g", s->f); break;
    default: n = snprintf(buf, cap, "%s", s->s); break;
    }
    return n >= 0 && (size_t)n < cap;
}

int pyv_format(const pyv *v, char *buf, size_t cap)
{
    if (v->kind != PYV_TUPLE && v->kind != PYV_LIST) return fmt_scalar(&v->v, buf, cap);
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < v->n; i++) {
        if (i) {
            if (used + 1 >= cap) return 0;
            buf[used++] = ',';
            buf[used] = 0;
        }
        if (!fmt_scalar(&v->items[i], buf + used, cap - used)) return 0;
        used += strlen(buf + used);
    }
    return 1;
}

char *pyv_comment(char *line)
{
    char q = 0;
    for (char *p = line; *p; p++) {
        if (q) {
            if (*p == '\\' && p[1]) p++;
            else if (*p == q) q = 0;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '#') {
            return p;
        }
    }
    return NULL;
}

int pyv_depth(const char *line)
{
    char q = 0;
    int d = 0;
    for (const char *p = line; *p; p++) {
        if (q) {
            if (*p == '\\' && p[1]) p++;
            else if (*p == q) q = 0;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '(' || *p == '[') {
            d++;
        } else if (*p == ')' || *p == ']') {
            d--;
        }
    }
    return d;
}
