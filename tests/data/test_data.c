/* The data module's test executable: `test_data NAME PYTHON SRCDIR [TOOL]`
 * runs one group of checks (image, recordio, loader, datasets, tool,
 * fuzz_replay) and exits non-zero if any check failed. Helpers shared by
 * the groups live here (see test_data.h). */
#include "test_data.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int t_checks, t_failures;
const char *t_python = "/usr/bin/python3", *t_srcdir = ".", *t_tool = NULL;

int t_check_ok(af_status st, const char *expr, const char *file, int line)
{
    t_checks++;
    if (st == AF_OK) return 1;
    t_failures++;
    fprintf(stderr, "FAIL %s:%d: %s returned %s: %s\n", file, line, expr, af_strerror(st), af_errmsg());
    return 0;
}

int t_check_err(af_status st, af_status want, const char *expr, const char *file, int line, ...)
{
    t_checks++;
    int ok = st == want;
    const char *msg = af_errmsg();
    va_list ap;
    va_start(ap, line);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(msg, needle)) {
            ok = 0;
            fprintf(stderr, "  message lacks \"%s\"\n", needle);
        }
    va_end(ap);
    if (!ok) {
        t_failures++;
        fprintf(stderr, "FAIL %s:%d: %s returned %s (expected %s): %s\n", file, line, expr, af_strerror(st),
                af_strerror(want), msg);
    } else {
        printf("  expected error: %s\n", msg);
    }
    return ok;
}

char *t_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/af_data_test_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(p)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        exit(2);
    }
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void t_rmtree(const char *dir)
{
    if (dir) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int t_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(buf, 1, len, f) == len;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

uint8_t *t_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

int t_run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fflush(stderr);
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

int t_python_has(const char *module)
{
    return t_run("%s -c 'import %s' >/dev/null 2>&1", t_python, module) == 0;
}

void t_make_picture(uint8_t *hwc, int h, int w, int c, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                s = s * 1664525u + 1013904223u;
                int v = (x * 255 / (w > 1 ? w - 1 : 1) * (k + 1) + y * 3 * (int)(seed % 7 + 1)) / (k + 2);
                if ((x - w / 2) * (x - w / 2) + (y - h / 3) * (y - h / 3) < h * w / 16) v = 255 - v;
                v += (int)(s >> 28) - 8;
                hwc[((size_t)y * w + x) * c + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
}

uint8_t *t_make_jpeg(int h, int w, int c, uint32_t seed, int quality, size_t *len)
{
    uint8_t *pix = malloc((size_t)h * w * c), *out = NULL;
    t_make_picture(pix, h, w, c, seed);
    if (af_image_encode_jpeg(pix, h, w, c, quality, &out, len) != AF_OK) {
        fprintf(stderr, "JPEG encode failed: %s\n", af_errmsg());
        exit(2);
    }
    free(pix);
    return out;
}

static int t_skips;

void t_skip(const char *why)
{
    t_skips++;
    printf("  SKIP: %s\n", why);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_data image|recordio|loader|datasets|tool|fuzz_replay [PYTHON SRCDIR [TOOL]]\n");
        return 2;
    }
    if (argc > 2) t_python = argv[2];
    if (argc > 3) t_srcdir = argv[3];
    if (argc > 4) t_tool = argv[4];
    const char *name = argv[1];
    if (!strcmp(name, "image")) t_image();
    else if (!strcmp(name, "recordio")) t_recordio();
    else if (!strcmp(name, "loader")) t_loader();
    else if (!strcmp(name, "datasets")) t_datasets();
    else if (!strcmp(name, "tool")) t_tool_cmd();
    else if (!strcmp(name, "fuzz_replay")) t_fuzz_replay();
    else {
        fprintf(stderr, "unknown test group '%s'\n", name);
        return 2;
    }
    printf("data_%s: %d checks, %d failed%s\n", name, t_checks, t_failures,
           t_skips && !t_failures ? "; reported as skipped: a reference is missing (see SKIP above)" : "");
    return t_failures ? 1 : t_skips ? 77 : 0;
}
