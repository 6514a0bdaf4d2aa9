/* Test of the charts: a small metrics CSV (val_* fields empty on rows
 * without an evaluation) must give four real PNG files, through the library
 * and through the arcface-plot command; a ROC CSV written by the verification
 * code must give a PNG; malformed input, a missing column and a missing
 * gnuplot must fail with a message saying so. Exits 77 (skipped) when gnuplot
 * is not installed.
 *
 * usage: eval_plot ARCFACE_PLOT_BINARY WORKDIR */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arcface/eval.h"
#include "eval_test_util.h"

/* A PNG starts with its 8-byte signature and an IHDR chunk holding width and
 * height (big-endian); returns the file size, 0 when it is not a PNG. */
static size_t png_size(const char *path, uint32_t *w, uint32_t *h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t len;
    unsigned char *p = slurp(path, &len);
    size_t ok = 0;
    if (p && len > 24 && !memcmp(p, sig, 8) && !memcmp(p + 12, "IHDR", 4)) {
        *w = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
        *h = (uint32_t)p[20] << 24 | (uint32_t)p[21] << 16 | (uint32_t)p[22] << 8 | p[23];
        ok = len;
    }
    free(p);
    return ok;
}

static void check_png(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint32_t w = 0, h = 0;
    size_t n = png_size(path, &w, &h);
    /* A chart with axes, labels and a line is several KiB; an empty canvas is far less. */
    CHECK(n > 4000 && w == 960 && h == 600, "%s: %zu bytes, %ux%u; expected a 960x600 PNG of > 4000 bytes", path, n,
          w, h);
    printf("  %-40s %7zu bytes, %ux%u\n", path, n, w, h);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void write_metrics(const char *path, int with_val)
{
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "step,epoch,loss,lr,samples_per_sec%s\n", with_val ? ",val_lfw,val_cfp_fp" : "");
    for (int s = 0; s <= 400; s += 10) {
        double loss = 45 * exp(-s / 150.0) + 2 + 0.3 * sin(s);
        double lr = s < 50 ? 0.1 * s / 50 : 0.1 * 0.5 * (1 + cos(M_PI * (s - 50) / 350.0));
        fprintf(f, "%d,%d,%.6f,%.6g,%.1f", s, s / 100, loss, lr, 900 + 40 * sin(s / 7.0));
        if (with_val) {
            if (s % 50 == 0 && s > 0) fprintf(f, ",%.5f,%.5f", 0.99 - 0.4 * exp(-s / 100.0), 0.9 - 0.4 * exp(-s / 120.0));
            else fprintf(f, ",,");
        }
        fprintf(f, "\r\n" + (s % 20 == 0));   /* mix CRLF and LF line ends */
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ARCFACE_PLOT WORKDIR\n", argv[0]);
        return 2;
    }
    char *probe[] = {"gnuplot", "-e", "exit", NULL};
    if (run_program(probe, "/dev/null") != 0) {
        printf("eval_plot: gnuplot is not installed; skipped\n");
        return 77;
    }
    char *work = argv[2];
    mkdir(work, 0755);
    char csv[2048], dir[2048], path[4096];
    snprintf(csv, sizeof csv, "%s/metrics.csv", work);
    write_metrics(csv, 1);

    /* The library. */
    snprintf(dir, sizeof dir, "%s/lib", work);
    unsigned charts = 0;
    af_status st = af_plot_metrics(csv, dir, NULL, &charts);
    CHECK(st == AF_OK, "af_plot_metrics: %s", af_errmsg());
    CHECK(charts == (AF_PLOT_CHART_LOSS | AF_PLOT_CHART_LR | AF_PLOT_CHART_THROUGHPUT | AF_PLOT_CHART_VAL),
          "charts drawn: 0x%x, expected 0xf", charts);
    check_png(dir, "loss.png");
    check_png(dir, "lr.png");
    check_png(dir, "throughput.png");
    check_png(dir, "val.png");

    /* The command. */
    snprintf(dir, sizeof dir, "%s/tool", work);
    snprintf(path, sizeof path, "%s/tool.log", work);
    char *cmd[] = {argv[1], "metrics", csv, dir, NULL};
    int rc = run_program(cmd, path);
    CHECK(rc == 0, "arcface-plot metrics exited %d (log in %s)", rc, path);
    check_png(dir, "loss.png");
    check_png(dir, "val.png");

    /* No val columns at all, and val columns never filled: no val.png. */
    snprintf(csv, sizeof csv, "%s/metrics_noval.csv", work);
    write_metrics(csv, 0);
    snprintf(dir, sizeof dir, "%s/noval", work);
    st = af_plot_metrics(csv, dir, NULL, &charts);
    snprintf(path, sizeof path, "%s/val.png", dir);
    CHECK(st == AF_OK && charts == 7 && access(path, F_OK) != 0, "without val columns: status %d, charts 0x%x, %s",
          st, charts, af_errmsg());
    snprintf(csv, sizeof csv, "%s/metrics_emptyval.csv", work);
    write_text(csv, "step,epoch,loss,lr,samples_per_sec,val_lfw\n1,0,5,0.1,100,\n2,0,4,0.1,110,\n");
    snprintf(dir, sizeof dir, "%s/emptyval", work);
    st = af_plot_metrics(csv, dir, NULL, &charts);
    CHECK(st == AF_OK && charts == 7, "empty val column: status %d, charts 0x%x, %s", st, charts, af_errmsg());

    /* ROC: from the verification code's own CSV. */
    double d[1000];
    uint8_t s[1000];
    for (int i = 0; i < 1000; i++) {
        s[i] = i % 2;
        d[i] = (s[i] ? 0.8 : 1.6) + 0.5 * sin(i * 12.9898) * sin(i * 78.233);
    }
    af_verify_result *r = malloc(sizeof *r);
    st = af_verify_evaluate(d, s, 1000, r);
    CHECK(st == AF_OK, "evaluate: %s", af_errmsg());
    snprintf(csv, sizeof csv, "%s/roc.csv", work);
    st = af_verify_roc_write(r, csv);
    CHECK(st == AF_OK, "roc write: %s", af_errmsg());
    snprintf(path, sizeof path, "%s/roc.png", work);
    char *roc[] = {argv[1], "roc", csv, path, NULL};
    snprintf(dir, sizeof dir, "%s/roc.log", work);
    rc = run_program(roc, dir);
    CHECK(rc == 0, "arcface-plot roc exited %d (log in %s)", rc, dir);
    check_png(work, "roc.png");
    free(r);

    /* Refusals, each with a message naming the problem. */
    snprintf(csv, sizeof csv, "%s/bad_fields.csv", work);
    write_text(csv, "step,epoch,loss,lr,samples_per_sec\n1,0,5,0.1,100\n2,0,4,0.1\n");
    st = af_plot_metrics(csv, work, NULL, NULL);
    CHECK(st == AF_ERR_FORMAT && strstr(af_errmsg(), "line 3 has 4 fields"), "short row: %s", af_errmsg());
    printf("  short row: %s\n", af_errmsg());
    snprintf(csv, sizeof csv, "%s/bad_number.csv", work);
    write_text(csv, "step,epoch,loss,lr,samples_per_sec\n1,0,five,0.1,100\n");
    st = af_plot_metrics(csv, work, NULL, NULL);
    CHECK(st == AF_ERR_FORMAT && strstr(af_errmsg(), "column 'loss'"), "not a number: %s", af_errmsg());
    printf("  not a number: %s\n", af_errmsg());
    snprintf(csv, sizeof csv, "%s/no_lr.csv", work);
    write_text(csv, "step,epoch,loss,samples_per_sec\n1,0,5,100\n");
    st = af_plot_metrics(csv, work, NULL, NULL);
    CHECK(st == AF_ERR_FORMAT && strstr(af_errmsg(), "no column 'lr'"), "missing lr: %s", af_errmsg());
    printf("  missing column: %s\n", af_errmsg());
    snprintf(csv, sizeof csv, "%s/metrics.csv", work);
    st = af_plot_metrics(csv, work, "/nonexistent/gnuplot", NULL);
    CHECK(st == AF_ERR_IO && strstr(af_errmsg(), "not found"), "missing gnuplot: %s", af_errmsg());
    printf("  missing gnuplot: %s\n", af_errmsg());
    snprintf(path, sizeof path, "%s/usage.log", work);
    char *bad_cmd[] = {argv[1], "histogram", csv, work, NULL};
    rc = run_program(bad_cmd, path);
    CHECK(rc == 2, "arcface-plot histogram exited %d, expected 2", rc);

    printf("eval_plot: %d failures\n", test_failures);
    return test_failures ? 1 : 0;
}
