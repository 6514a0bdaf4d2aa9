/* PNG charts of a training run and of a ROC curve, drawn by gnuplot.
 *
 * The CSV is parsed here rather than by gnuplot so that a malformed file gets
 * a message naming its line and column, and so that empty fields (a row
 * without an evaluation) simply drop out: the data go to gnuplot as inline
 * datablocks of finite points only. The script is written to a temporary file
 * and gnuplot is started with posix_spawnp, so no shell sees the paths and a
 * missing gnuplot is reported as such. */
#include "arcface/eval.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- CSV --------------------------------------------------------------- */

typedef struct {
    char **name;     /* (ncol) header fields */
    size_t ncol, nrow;
    double *v;       /* (nrow, ncol); NAN where the field is empty */
} table;

static void table_free(table *t)
{
    for (size_t c = 0; c < t->ncol; c++) free(t->name[c]);
    free(t->name);
    free(t->v);
    *t = (table){0};
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

static af_status read_all(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return af_errorf(AF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    af_status st = AF_OK;
    size_t cap = 1 << 16, n = 0;
    char *buf = af_malloc(cap, "CSV text");
    if (!buf) {
        st = AF_ERR_NOMEM;
        goto fail;
    }
    for (;;) {
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                st = af_errorf(AF_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, cap * 2);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        st = af_errorf(AF_ERR_IO, "%s: read error", path);
        goto fail;
    }
    if (memchr(buf, 0, n)) {
        st = af_errorf(AF_ERR_FORMAT, "%s: contains a NUL byte; expected CSV text", path);
        goto fail;
    }
    buf[n] = 0;
    fclose(f);
    *out = buf;
    return AF_OK;
fail:
    free(buf);
    fclose(f);
    return st;
}

static af_status table_read(const char *path, table *t)
{
    *t = (table){0};
    char *text = NULL;
    af_status st = read_all(path, &text);
    if (st) return st;
    size_t line_no = 0, capv = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        char *l = trim(line);
        if (!*l) continue;
        size_t nf = 1;
        for (char *p = l; *p; p++) nf += *p == ',';
        if (!t->name) {
            t->name = af_calloc(nf, sizeof(char *), "CSV header");
            if (!t->name) { st = AF_ERR_NOMEM; goto fail; }
            t->ncol = nf;
            char *field = l;
            for (size_t c = 0; c < nf; c++) {
                char *comma = strchr(field, ',');
                if (comma) *comma = 0;
                if (!(t->name[c] = strdup(trim(field)))) {
                    st = af_errorf(AF_ERR_NOMEM, "%s: out of memory for the header", path);
                    goto fail;
                }
                field = comma ? comma + 1 : field;
            }
            continue;
        }
        if (nf != t->ncol) {
            st = af_errorf(AF_ERR_FORMAT, "%s: line %zu has %zu fields, the header has %zu", path, line_no, nf,
                           t->ncol);
            goto fail;
        }
        if (t->nrow == capv) {
            capv = capv ? 2 * capv : 64;
            double *nv = realloc(t->v, capv * t->ncol * sizeof(double));
            if (!nv) { st = af_errorf(AF_ERR_NOMEM, "%s: out of memory at line %zu", path, line_no); goto fail; }
            t->v = nv;
        }
        double *row = t->v + t->nrow * t->ncol;
        char *field = l;
        for (size_t c = 0; c < nf; c++) {
            char *comma = strchr(field, ',');
            if (comma) *comma = 0;
            char *s = trim(field), *end;
            if (!*s) {
                row[c] = NAN;
            } else {
                errno = 0;
                row[c] = strtod(s, &end);
                if (*end || end == s) {
                    st = af_errorf(AF_ERR_FORMAT, "%s: line %zu, column '%s': '%.40s' is not a number", path,
                                   line_no, t->name[c], s);
                    goto fail;
                }
            }
            field = comma ? comma + 1 : field;
        }
        t->nrow++;
    }
    if (!t->name) {
        st = af_errorf(AF_ERR_FORMAT, "%s: empty; expected a header row", path);
        goto fail;
    }
    free(text);
    return AF_OK;
fail:
    free(text);
    table_free(t);
    return st;
}

static int table_col(const table *t, const char *name)
{
    for (size_t c = 0; c < t->ncol; c++)
        if (strcmp(t->name[c], name) == 0) return (int)c;
    return -1;
}

static af_status table_need(const table *t, const char *path, const char *name, int *col)
{
    *col = table_col(t, name);
    if (*col >= 0) return AF_OK;
    char header[512] = "";
    for (size_t c = 0, n = 0; c < t->ncol && n < sizeof header - 1; c++)
        n += (size_t)snprintf(header + n, sizeof header - n, "%s%s", c ? "," : "", t->name[c]);
    return af_errorf(AF_ERR_FORMAT, "%s: no column '%s' in the header '%s'", path, name, header);
}

/* ---- gnuplot ----------------------------------------------------------- */

/* A gnuplot single-quoted string: only '' needs escaping; a newline cannot
 * be said at all, so such a path is refused. */
static af_status put_quoted(FILE *f, const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r')
            return af_errorf(AF_ERR_ARG, "plot: path or name '%s' contains a line break", s);
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        if (*p == '\'') fputc('\'', f);
        fputc(*p, f);
    }
    fputc('\'', f);
    return AF_OK;
}

static int point_ok(const table *t, size_t r, int xc, int yc, int positive_x)
{
    double x = t->v[r * t->ncol + xc], y = t->v[r * t->ncol + yc];
    return isfinite(x) && isfinite(y) && (!positive_x || x > 0);
}

/* Writes datablock $name of the finite (x, y) points and returns how many;
 * writes nothing when there are none (gnuplot refuses an empty plot). */
static size_t put_block(FILE *f, const char *name, const table *t, int xc, int yc, int positive_x)
{
    size_t n = 0;
    for (size_t r = 0; r < t->nrow; r++) n += (size_t)point_ok(t, r, xc, yc, positive_x);
    if (!n) return 0;
    fprintf(f, "$%s << EOD\n", name);
    for (size_t r = 0; r < t->nrow; r++)
        if (point_ok(t, r, xc, yc, positive_x))
            fprintf(f, "%.17g %.17g\n", t->v[r * t->ncol + xc], t->v[r * t->ncol + yc]);
    fprintf(f, "EOD\n");
    return n;
}

static void put_terminal(FILE *f)
{
    /* Debian's gnuplot-nox has pngcairo; a build without cairo still has
     * the libgd png terminal. noenhanced keeps val_lfw from becoming a subscript. */
    fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
               "  set terminal pngcairo noenhanced size 960,600\n"
               "} else {\n"
               "  set terminal png noenhanced size 960,600\n"
               "}\n"
               "set grid\nset key top right\n");
}

static af_status script_open(char *path, size_t cap, FILE **f)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    if (snprintf(path, cap, "%s/arcface-plot-XXXXXX", dir) >= (int)cap)
        return af_errorf(AF_ERR_ARG, "plot: TMPDIR '%s' is too long", dir);
    int fd = mkstemp(path);
    if (fd < 0) return af_errorf(AF_ERR_IO, "plot: cannot create a script file in %s: %s", dir, strerror(errno));
    *f = fdopen(fd, "w");
    if (!*f) {
        close(fd);
        unlink(path);
        return af_errorf(AF_ERR_IO, "plot: fdopen: %s", strerror(errno));
    }
    return AF_OK;
}

static af_status gnuplot_run(const char *gnuplot, const char *script, const char *what)
{
    if (!gnuplot) gnuplot = "gnuplot";
    char *argv[] = {(char *)gnuplot, (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, gnuplot, NULL, NULL, argv, environ);
    if (rc == ENOENT)
        return af_errorf(AF_ERR_IO, "plot: cannot run '%s' to draw %s: not found (install gnuplot-nox, "
                         "e.g. apt-get install gnuplot-nox)", gnuplot, what);
    if (rc) return af_errorf(AF_ERR_IO, "plot: cannot run '%s' to draw %s: %s", gnuplot, what, strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return af_errorf(AF_ERR_IO, "plot: waitpid for %s: %s", gnuplot, strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return AF_OK;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return af_errorf(AF_ERR_IO, "plot: '%s' could not be started to draw %s (exit status 127; is gnuplot "
                         "installed? apt-get install gnuplot-nox)", gnuplot, what);
    if (WIFEXITED(status))
        return af_errorf(AF_ERR_IO, "plot: %s exited with status %d while drawing %s (its message is above)",
                         gnuplot, WEXITSTATUS(status), what);
    return af_errorf(AF_ERR_IO, "plot: %s was killed by signal %d while drawing %s", gnuplot, WTERMSIG(status),
                     what);
}

static af_status png_check(const char *path)
{
    static const unsigned char magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return af_errorf(AF_ERR_IO, "plot: gnuplot left no %s: %s", path, strerror(errno));
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got != sizeof head || memcmp(head, magic, sizeof magic) != 0)
        return af_errorf(AF_ERR_FORMAT, "plot: %s is not a PNG file (%zu bytes read)", path, got);
    return AF_OK;
}

static af_status path_join(char *out, size_t cap, const char *dir, const char *name)
{
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap)
        return af_errorf(AF_ERR_ARG, "plot: output path %s/%s is too long", dir, name);
    return AF_OK;
}

/* ---- charts ------------------------------------------------------------ */

typedef struct {
    const char *column, *file, *ylabel, *title;
    unsigned bit;
} simple_chart;

static const simple_chart simple_charts[] = {
    {"loss", "loss.png", "loss", "training loss", AF_PLOT_CHART_LOSS},
    {"lr", "lr.png", "learning rate", "learning rate", AF_PLOT_CHART_LR},
    {"samples_per_sec", "throughput.png", "samples / s", "throughput", AF_PLOT_CHART_THROUGHPUT},
};
#define N_SIMPLE (sizeof simple_charts / sizeof simple_charts[0])

af_status af_plot_metrics(const char *csv_path, const char *outdir, const char *gnuplot, unsigned *charts)
{
    af_status st = AF_OK;
    table t;
    FILE *f = NULL;
    char script[4096] = "", png[4096];
    unsigned drawn = 0;
    int xc, cols[N_SIMPLE];
    if (charts) *charts = 0;
    if ((st = table_read(csv_path, &t))) return st;
    if ((st = table_need(&t, csv_path, "step", &xc))) goto fail;
    for (size_t i = 0; i < N_SIMPLE; i++)
        if ((st = table_need(&t, csv_path, simple_charts[i].column, &cols[i]))) goto fail;
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        st = af_errorf(AF_ERR_IO, "plot: cannot create %s: %s", outdir, strerror(errno));
        goto fail;
    }
    if ((st = script_open(script, sizeof script, &f))) goto fail;
    put_terminal(f);
    for (size_t i = 0; i < N_SIMPLE; i++) {
        const simple_chart *c = &simple_charts[i];
        char block[16];
        snprintf(block, sizeof block, "d%zu", i);
        if (!put_block(f, block, &t, xc, cols[i], 0)) continue;   /* nothing to draw yet */
        if ((st = path_join(png, sizeof png, outdir, c->file))) goto fail;
        fprintf(f, "set output ");
        if ((st = put_quoted(f, png))) goto fail;
        fprintf(f, "\nset title '%s'\nset xlabel 'step'\nset ylabel '%s'\n", c->title, c->ylabel);
        fprintf(f, "plot $%s using 1:2 with lines linewidth 2 title ", block);
        if ((st = put_quoted(f, c->column))) goto fail;
        fprintf(f, "\nunset output\n");
        drawn |= c->bit;
    }
    /* Every val_* column with at least one value becomes a line of val.png. */
    size_t n_val = 0;
    for (size_t c = 0; c < t.ncol; c++) {
        if (strncmp(t.name[c], "val_", 4) != 0) continue;
        char block[32];
        snprintf(block, sizeof block, "v%zu", c);
        if (put_block(f, block, &t, xc, (int)c, 0)) n_val++;
    }
    if (n_val) {
        if ((st = path_join(png, sizeof png, outdir, "val.png"))) goto fail;
        fprintf(f, "set output ");
        if ((st = put_quoted(f, png))) goto fail;
        fprintf(f, "\nset title 'verification accuracy'\nset xlabel 'step'\nset ylabel 'accuracy'\nset key bottom right\nplot ");
        size_t k = 0;
        for (size_t c = 0; c < t.ncol; c++) {
            if (strncmp(t.name[c], "val_", 4) != 0) continue;
            int any = 0;
            for (size_t r = 0; r < t.nrow && !any; r++) any = point_ok(&t, r, xc, (int)c, 0);
            if (!any) continue;
            fprintf(f, "%s$v%zu using 1:2 with linespoints linewidth 2 title ", k++ ? ", " : "", c);
            if ((st = put_quoted(f, t.name[c]))) goto fail;
        }
        fprintf(f, "\nunset output\n");
        drawn |= AF_PLOT_CHART_VAL;
    }
    if (fclose(f) != 0) {
        f = NULL;
        st = af_errorf(AF_ERR_IO, "plot: cannot write script %s: %s", script, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (!drawn) {
        st = af_errorf(AF_ERR_FORMAT, "%s: no data rows with a step and a value to plot", csv_path);
        goto fail;
    }
    if ((st = gnuplot_run(gnuplot, script, csv_path))) goto fail;
    for (size_t i = 0; i < N_SIMPLE + 1; i++) {
        unsigned bit = i < N_SIMPLE ? simple_charts[i].bit : AF_PLOT_CHART_VAL;
        if (!(drawn & bit)) continue;
        if ((st = path_join(png, sizeof png, outdir, i < N_SIMPLE ? simple_charts[i].file : "val.png"))) goto fail;
        if ((st = png_check(png))) goto fail;
    }
    if (charts) *charts = drawn;
fail:
    if (f) fclose(f);
    if (script[0]) unlink(script);
    table_free(&t);
    return st;
}

af_status af_plot_roc(const char *roc_csv, const char *png_path, const char *gnuplot)
{
    af_status st = AF_OK;
    table t;
    FILE *f = NULL;
    char script[4096] = "";
    int fc, tc;
    if ((st = table_read(roc_csv, &t))) return st;
    if ((st = table_need(&t, roc_csv, "fpr", &fc)) || (st = table_need(&t, roc_csv, "tpr", &tc))) goto fail;
    if ((st = script_open(script, sizeof script, &f))) goto fail;
    put_terminal(f);
    if (!put_block(f, "roc", &t, fc, tc, 1)) {
        st = af_errorf(AF_ERR_FORMAT, "%s: no point with FPR > 0 to draw on a log axis", roc_csv);
        goto fail;
    }
    fprintf(f, "set output ");
    if ((st = put_quoted(f, png_path))) goto fail;
    fprintf(f, "\nset title 'ROC'\nset xlabel 'false accept rate'\nset ylabel 'true accept rate'\n"
               "set logscale x\nset format x '1e%%L'\nset xrange [*:1]\nset yrange [0:1.02]\n"
               "set key bottom right\nplot $roc using 1:2 with lines linewidth 2 title 'ROC'\nunset output\n");
    if (fclose(f) != 0) {
        f = NULL;
        st = af_errorf(AF_ERR_IO, "plot: cannot write script %s: %s", script, strerror(errno));
        goto fail;
    }
    f = NULL;
    if ((st = gnuplot_run(gnuplot, script, roc_csv))) goto fail;
    st = png_check(png_path);
fail:
    if (f) fclose(f);
    if (script[0]) unlink(script);
    table_free(&t);
    return st;
}
