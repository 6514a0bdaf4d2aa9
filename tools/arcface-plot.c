/* arcface-plot: PNG charts of a training run or of a verification ROC curve.
 *
 *   arcface-plot metrics OUTPUT/metrics.csv OUTDIR   loss.png, lr.png, throughput.png, val.png
 *   arcface-plot roc ROC.csv OUT.png                 ROC curve (CSV from af_verify_roc_write)
 *
 * The drawing is in eval/plot.c (af_plot_metrics, af_plot_roc); this is only
 * the command line. gnuplot (Debian gnuplot-nox) must be on PATH, or named by
 * the environment variable ARCFACE_GNUPLOT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/eval.h"
#include "arcface/status.h"

static int usage(FILE *f)
{
    fprintf(f, "usage: arcface-plot metrics METRICS.csv OUTDIR\n"
               "       arcface-plot roc ROC.csv OUT.png\n"
               "Draws PNG charts with gnuplot (set ARCFACE_GNUPLOT to use another binary).\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return usage(stdout);
    if (argc != 4) return usage(stderr);
    const char *gnuplot = getenv("ARCFACE_GNUPLOT");
    if (gnuplot && !*gnuplot) gnuplot = NULL;
    af_status st;
    if (!strcmp(argv[1], "metrics")) {
        unsigned charts = 0;
        st = af_plot_metrics(argv[2], argv[3], gnuplot, &charts);
        if (!st) {
            static const struct { unsigned bit; const char *file; } files[] = {
                {AF_PLOT_CHART_LOSS, "loss.png"}, {AF_PLOT_CHART_LR, "lr.png"},
                {AF_PLOT_CHART_THROUGHPUT, "throughput.png"}, {AF_PLOT_CHART_VAL, "val.png"}};
            for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
                if (charts & files[i].bit) printf("wrote %s/%s\n", argv[3], files[i].file);
        }
    } else if (!strcmp(argv[1], "roc")) {
        st = af_plot_roc(argv[2], argv[3], gnuplot);
        if (!st) printf("wrote %s\n", argv[3]);
    } else {
        fprintf(stderr, "arcface-plot: unknown chart kind '%s'\n", argv[1]);
        return usage(stderr);
    }
    if (st) {
        fprintf(stderr, "arcface-plot: %s: %s\n", af_strerror(st), af_errmsg());
        return 1;
    }
    return 0;
}
