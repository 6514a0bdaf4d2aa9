/* Private to core/: the evaluator for the right-hand sides of insightface
 * arcface_torch config files (`config.key = <Python expression>`). It knows the
 * literals and operators those files use: int / float (1e-4) / str / None /
 * True / False, tuples and lists of scalars, + - * / // % **, unary minus,
 * parentheses, and `config.key` references to keys assigned earlier. */
#ifndef ARCFACE_PYCONF_H
#define ARCFACE_PYCONF_H

#include <stddef.h>

#define PYV_STR 256
#define PYV_ITEMS 16

typedef enum { PYV_NONE, PYV_BOOL, PYV_INT, PYV_FLOAT, PYV_STR_T, PYV_TUPLE, PYV_LIST } pyv_kind;

typedef struct {
    pyv_kind kind;
    long long i;          /* BOOL, INT */
    double f;             /* FLOAT */
    char s[PYV_STR];      /* STR */
} pyv_scalar;

typedef struct {
    pyv_kind kind;        /* scalar kinds, or TUPLE / LIST of scalars in items */
    pyv_scalar v;
    int n;
    pyv_scalar items[PYV_ITEMS];
} pyv;

/* Looks up `config.<key>`: returns 1 and fills *out when the key was set. */
typedef int (*pyv_lookup)(void *user, const char *key, pyv *out);

typedef enum {
    PYV_OK = 0,
    PYV_ERR_BARE,   /* not an expression, and nothing suggests one was meant (a legacy bare value) */
    PYV_ERR,        /* a broken expression: msg says why */
} pyv_status;

/* Evaluates text (one logical line, comments already removed). */
pyv_status pyv_eval(const char *text, pyv_lookup lookup, void *user, pyv *out, char *msg, size_t cap);
/* The value as text for af_config_set: numbers in full precision, strings raw,
 * True/False as 1/0, sequences comma-separated. Returns 0 if it does not fit. */
int pyv_format(const pyv *v, char *buf, size_t cap);
/* Where a '#' comment starts in line (outside string literals), or NULL. */
char *pyv_comment(char *line);
/* Bracket depth at the end of line (outside strings): > 0 means it continues. */
int pyv_depth(const char *line);

#endif
