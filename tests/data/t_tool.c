/* data_tool: `arcface-data` as a user runs it: pack an image folder and the
 * Fashion-MNIST test split, `info` prints "images: N classes: C" first,
 * `verify` passes a good file and lists a corrupted record by file, key and
 * offset with a non-zero exit, and usage errors (-j -4 among them) exit 2. */
#include "test_data.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path)
{
    size_t n = 0;
    uint8_t *b = t_read_file(path, &n);
    if (!b) return strdup("");
    char *s = realloc(b, n + 1);
    s[n] = 0;
    return s;
}

static int run_tool(const char *dir, char **out, const char *args)
{
    char log[4200];
    snprintf(log, sizeof log, "%s/tool.log", dir);
    int rc = t_run("%s %s > %s 2>&1", t_tool, args, log);
    *out = slurp(log);
    return rc;
}

void t_tool_cmd(void)
{
    if (!t_tool) {
        CHECK(0, "no arcface-data path given");
        return;
    }
    char *dir = t_mkdtemp(), *out = NULL;
    char args[8192], p[4200];
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 2 + c; k++) {
            snprintf(p, sizeof p, "%s/folder/person%d", dir, c);
            t_run("mkdir -p %s", p);
            size_t len;
            uint8_t *jpg = t_make_jpeg(112, 112, 3, (uint32_t)(c * 7 + k), 90, &len);
            snprintf(p, sizeof p, "%s/folder/person%d/%d.jpg", dir, c, k);
            t_write_file(p, jpg, len);
            free(jpg);
        }
    snprintf(args, sizeof args, "pack %s/folder %s/faces", dir, dir);
    int rc = run_tool(dir, &out, args);
    CHECK(rc == 0, "pack exited %d: %s", rc, out);
    free(out);
    snprintf(args, sizeof args, "info %s/faces.rec", dir);
    rc = run_tool(dir, &out, args);
    printf("  info: %.*s", (int)(strchr(out, '\n') ? strchr(out, '\n') - out + 1 : (long)strlen(out)), out);
    CHECK(rc == 0 && strncmp(out, "images: 9 classes: 3\n", 21) == 0, "info exited %d, printed: %s", rc, out);
    free(out);
    snprintf(args, sizeof args, "verify %s/faces -j 2", dir);
    rc = run_tool(dir, &out, args);
    CHECK(rc == 0 && strstr(out, ": 0 corrupt"), "verify of a good file exited %d: %s", rc, out);
    free(out);
    /* A thread count that is not 1..256 is a usage error, not a silent 1. */
    const char *bad_j[] = {"-4", "0", "abc", "2x", "257"};
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, "verify %s/faces -j %s", dir, bad_j[i]);
        rc = run_tool(dir, &out, args);
        CHECK(rc == 2 && strstr(out, "-j"), "verify -j %s exited %d (expected 2 naming -j): %s", bad_j[i], rc, out);
        free(out);
    }

    /* Corrupt key 4's image bytes and key 7's magic. */
    char idx[4200], rec[4200];
    snprintf(idx, sizeof idx, "%s/faces.idx", dir);
    snprintf(rec, sizeof rec, "%s/faces.rec", dir);
    size_t tl;
    char *text = (char *)t_read_file(idx, &tl);
    af_recordio_idx_entry *e = NULL;
    size_t ne = 0;
    CHECK_OK(af_recordio_idx_parse(text, tl, &e, &ne, idx));
    uint64_t o4 = 0, o7 = 0;
    for (size_t i = 0; i < ne; i++) {
        if (e[i].key == 4) o4 = e[i].offset;
        if (e[i].key == 7) o7 = e[i].offset;
    }
    FILE *f = fopen(rec, "r+b");
    fseek(f, (long)(o4 + 8 + 24 + 200), SEEK_SET);
    for (int i = 0; i < 400; i++) fputc(0x33, f);
    fseek(f, (long)o7, SEEK_SET);
    fputs("JUNK", f);
    fclose(f);
    snprintf(args, sizeof args, "verify %s/faces", dir);
    rc = run_tool(dir, &out, args);
    char k4[128], k7[128];
    snprintf(k4, sizeof k4, "faces.rec key 4 at offset %" PRIu64, o4);
    snprintf(k7, sizeof k7, "faces.rec key 7 at offset %" PRIu64, o7);
    printf("  verify of a damaged file (exit %d):\n%s", rc, out);
    CHECK(rc == 1 && strstr(out, k4) && strstr(out, k7) && strstr(out, ": 2 corrupt"),
          "verify exited %d, expected 1 and both '%s' and '%s' listed", rc, k4, k7);
    free(out);
    free(e);
    free(text);

    /* Fashion-MNIST IDX files -> RecordIO, lossless (PNG). */
    snprintf(args, sizeof args, "pack fmnist-test:/usr/share/datasets/fashion-mnist %s/fm", dir);
    rc = run_tool(dir, &out, args);
    CHECK(rc == 0, "pack of Fashion-MNIST exited %d: %s", rc, out);
    free(out);
    snprintf(args, sizeof args, "info %s/fm", dir);
    rc = run_tool(dir, &out, args);
    CHECK(rc == 0 && strncmp(out, "images: 10000 classes: 10\n", 26) == 0, "info of packed Fashion-MNIST: %s", out);
    free(out);
    af_dataset *fm = NULL, *packed = NULL;
    snprintf(p, sizeof p, "%s/fm", dir);
    if (CHECK_OK(af_dataset_open(&fm, "fmnist-test:/usr/share/datasets/fashion-mnist", NULL)) &&
        CHECK_OK(af_dataset_open(&packed, p, NULL))) {
        /* Packing groups by class (stably): packed image r of class k is the
         * r-th image of class k in the original. */
        af_dataset_scratch *ws = NULL;
        af_dataset_scratch_init(&ws);
        uint8_t a[28 * 28], b[28 * 28];
        int checked = 0, same = 0;
        int64_t r = 0;
        for (int k = 0; k < 10; k++) {
            int64_t seen = 0;
            for (int64_t i = 0; i < 10000 && seen < 3; i++) {
                int64_t la, lb;
                af_dataset_get_u8(fm, i, a, &la, ws);
                if (la != k) continue;
                /* find the packed position: class k starts after all smaller classes */
                if (seen == 0) {
                    r = 0;
                    for (int64_t q = 0; q < 10000; q++) {
                        int64_t lq;
                        af_dataset_get_label(fm, q, &lq, ws);
                        r += lq < k;
                    }
                }
                CHECK_OK(af_dataset_get_u8(packed, r + seen, b, &lb, ws));
                same += lb == k && memcmp(a, b, sizeof a) == 0;
                checked++;
                seen++;
            }
        }
        printf("  packed Fashion-MNIST: %d of %d sampled images identical to the IDX pixels\n", same, checked);
        CHECK(same == checked && checked == 30, "%d of %d packed Fashion-MNIST images identical", same, checked);
        af_dataset_scratch_free(ws);
    }
    af_dataset_close(fm);
    af_dataset_close(packed);

    rc = run_tool(dir, &out, "");
    CHECK(rc == 2, "no arguments: exit %d, expected 2", rc);
    free(out);
    rc = run_tool(dir, &out, "frobnicate x");
    CHECK(rc == 2, "unknown command: exit %d, expected 2", rc);
    free(out);
    snprintf(args, sizeof args, "info %s/nothing-here", dir);
    rc = run_tool(dir, &out, args);
    CHECK(rc == 1 && strstr(out, "nothing-here"), "info on a missing path: exit %d: %s", rc, out);
    free(out);
    t_rmtree(dir);
    free(dir);
}
