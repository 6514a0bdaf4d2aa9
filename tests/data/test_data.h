/* Shared helpers for the data module's test executable (tests/data/): a
 * failure counter that never stops early (one run reports every broken
 * check, with the measured value and the expectation), scratch directories,
 * file helpers, and the Python reference runner. Each t_*.c file is one
 * ctest entry: `test_data NAME PYTHON SRCDIR [TOOL]`. */
#ifndef ARCFACE_TESTS_DATA_H
#define ARCFACE_TESTS_DATA_H

#include <arcface/data.h>
#include <arcface/image.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int t_checks, t_failures;
/* A reference (PIL, torch, ...) is missing: the group still runs what it can,
 * but reports a skip (exit 77) instead of a pass when nothing failed. */
void t_skip(const char *why);
extern const char *t_python; /* /usr/bin/python3 with numpy (and torch) */
extern const char *t_srcdir; /* tests/data, for the .py helpers */
extern const char *t_tool;   /* the arcface-data binary, for the tool test */

#define CHECK(cond, ...)                                                                                         \
    do {                                                                                                         \
        t_checks++;                                                                                              \
        if (!(cond)) {                                                                                           \
            t_failures++;                                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                 \
            fprintf(stderr, __VA_ARGS__);                                                                        \
            fputc('\n', stderr);                                                                                 \
        }                                                                                                        \
    } while (0)

/* Evaluates to 1 when expr returned AF_OK, else reports the message. */
#define CHECK_OK(expr) t_check_ok((expr), #expr, __FILE__, __LINE__)
int t_check_ok(af_status st, const char *expr, const char *file, int line);

/* Expects status `want` and a message containing every non-NULL needle. */
#define CHECK_ERR(expr, want, ...) t_check_err((expr), (want), #expr, __FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)
int t_check_err(af_status st, af_status want, const char *expr, const char *file, int line, ...);

/* A fresh directory under $TMPDIR (or /tmp), removed by t_rmtree. */
char *t_mkdtemp(void);
void t_rmtree(const char *dir);
int t_write_file(const char *path, const void *buf, size_t len);
uint8_t *t_read_file(const char *path, size_t *len);
/* Runs a shell command; returns its exit status (or -1). */
int t_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether `python -c "import MODULE"` works. */
int t_python_has(const char *module);

/* A deterministic test picture (smooth gradients, an edge, a little noise). */
void t_make_picture(uint8_t *hwc, int h, int w, int c, uint32_t seed);
/* Encoded test picture; *len set; malloc'd. */
uint8_t *t_make_jpeg(int h, int w, int c, uint32_t seed, int quality, size_t *len);

/* The subtests, one ctest entry each. */
void t_image(void);
void t_recordio(void);
void t_loader(void);
void t_datasets(void);
void t_tool_cmd(void);
void t_fuzz_replay(void);

#endif
