/* Test of the verification .bin reader against files CPython wrote
 * (tests/eval/pickle_cases.py): every byte string and bool must be what
 * Python pickled; every malformed file must fail with a message naming the
 * opcode and offset; every truncation of a good file must fail cleanly; and
 * random corruptions must never crash (run under ASan in CI).
 *
 * usage: eval_pickle PYTHON pickle_cases.py WORKDIR */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/pickle.h"
#include "arcface/rng.h"
#include "eval_test_util.h"

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Compares vb with the .expect file; returns the number of mismatches. */
static int compare_expect(const af_verbin *vb, const unsigned char *e, size_t elen, const char *name)
{
    size_t pos = 0;
    if (elen < 8) {
        CHECK(0, "%s: expect file too short", name);
        return 1;
    }
    size_t n = (size_t)rd64(e);
    pos = 8;
    if (vb->n_pairs != n) {
        CHECK(0, "%s: read %zu pairs, Python wrote %zu", name, vb->n_pairs, n);
        return 1;
    }
    size_t bad = 0, bytes = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        size_t len = (size_t)rd64(e + pos);
        pos += 8;
        if (vb->image_len[i] != len || (len && memcmp(vb->image[i], e + pos, len) != 0)) {
            if (bad < 3)
                fprintf(stderr, "%s: image %zu differs (read %zu bytes, Python wrote %zu)\n", name, i,
                        vb->image_len[i], len);
            bad++;
        }
        pos += len;
        bytes += len;
    }
    for (size_t i = 0; i < n; i++)
        if (vb->issame[i] != e[pos + i]) {
            if (bad < 3) fprintf(stderr, "%s: issame[%zu] is %d, Python wrote %d\n", name, i, vb->issame[i], e[pos + i]);
            bad++;
        }
    CHECK(bad == 0, "%s: %zu of %zu images+labels differ", name, bad, 3 * n);
    printf("  %-24s protocol %d, %5zu pairs, %8zu image bytes: %zu differences\n", name, vb->protocol, n, bytes,
           bad);
    return bad != 0;
}

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Every prefix of a good file (all of them for small files, a spread for big
 * ones) must fail, with "truncated" in the message; none may read past the
 * end, which ASan checks because each prefix is its own allocation. */
static void check_truncations(const unsigned char *buf, size_t len, const char *name, size_t *n_tried)
{
    size_t step = len <= 3000 ? 1 : len <= 60000 ? len / 1499 : len / 127;
    size_t first_bad = (size_t)-1;
    for (size_t cut = 0; cut < len; cut += step) {
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        af_verbin vb;
        af_status st = af_verbin_parse(&vb, copy, cut, name);
        if (st == AF_OK || !contains(af_errmsg(), "truncated")) {
            if (first_bad == (size_t)-1) {
                first_bad = cut;
                fprintf(stderr, "%s cut at %zu: status %d, message: %s\n", name, cut, st, af_errmsg());
            }
        }
        af_verbin_free(&vb);
        free(copy);
        (*n_tried)++;
    }
    CHECK(first_bad == (size_t)-1, "%s: a truncation at %zu bytes did not fail as truncated", name, first_bad);
}

/* Random corruptions: each parse must return (OK or an error with a message)
 * without crashing, and an OK result must be self-consistent. */
static void check_mutations(const unsigned char *buf, size_t len, const char *name, uint64_t salt, int rounds,
                            size_t *n_ok, size_t *n_err)
{
    for (int r = 0; r < rounds; r++) {
        af_rng g;
        af_rng_seed(&g, 42, AF_RNG_STREAM_TEST, salt, (uint64_t)r);
        size_t n = len;
        unsigned char *m = malloc(len + 16);
        memcpy(m, buf, len);
        int kind = (int)af_rng_below(&g, 3);
        int edits = 1 + (int)af_rng_below(&g, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)af_rng_below(&g, n);
            if (kind == 0) m[at] = (unsigned char)af_rng_u64(&g);              /* replace a byte */
            else if (kind == 1) m[at] ^= (unsigned char)(1u << af_rng_below(&g, 8));  /* flip a bit */
            else if (n > 1) { memmove(m + at, m + at + 1, n - at - 1); n--; }  /* delete a byte */
        }
        unsigned char *exact = malloc(n ? n : 1);   /* exact size, so ASan sees any overread */
        memcpy(exact, m, n);
        af_verbin vb;
        af_error_clear();
        af_status st = af_verbin_parse(&vb, exact, n, name);
        if (st == AF_OK) {
            (*n_ok)++;
            for (size_t i = 0; i < 2 * vb.n_pairs; i++)
                CHECK(vb.image_len[i] == 0 || (vb.image[i] != NULL), "%s mutation %d: NULL image %zu", name, r, i);
        } else {
            (*n_err)++;
            CHECK(strcmp(af_errmsg(), "(no detail)") != 0, "%s mutation %d: error %d without a message", name, r, st);
        }
        af_verbin_free(&vb);
        free(exact);
        free(m);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s PYTHON pickle_cases.py WORKDIR\n", argv[0]);
        return 2;
    }
    char *gen[] = {argv[1], argv[2], argv[3], NULL};
    if (run_program(gen, NULL) != 0) {
        fprintf(stderr, "FAIL: %s %s did not write the cases\n", argv[1], argv[2]);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.txt", argv[3]);
    FILE *list = fopen(path, "r");
    if (!list) {
        fprintf(stderr, "FAIL: no %s\n", path);
        return 1;
    }
    int n_good = 0, n_bad = 0;
    size_t n_trunc = 0, n_mut_ok = 0, n_mut_err = 0;
    char line[4096];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = 0;
        char *save, *kind = strtok_r(line, "\t", &save), *name = strtok_r(NULL, "\t", &save);
        if (!kind || !name) continue;
        char pkl[4096];
        snprintf(pkl, sizeof pkl, "%s/%s.pkl", argv[3], name);
        af_verbin vb;
        if (!strcmp(kind, "good")) {
            n_good++;
            char exp[4096];
            snprintf(exp, sizeof exp, "%s/%s.expect", argv[3], name);
            size_t elen, plen;
            unsigned char *e = slurp(exp, &elen), *p = slurp(pkl, &plen);
            if (!e || !p) { CHECK(0, "%s: cannot read its files", name); free(e); free(p); continue; }
            /* Through the mmap path ... */
            af_status st = af_verbin_load(&vb, pkl);
            CHECK(st == AF_OK, "%s: load failed: %s", name, af_errmsg());
            if (!st) compare_expect(&vb, e, elen, name);
            af_verbin_free(&vb);
            /* ... and from a buffer the caller owns, which must not be copied. */
            st = af_verbin_parse(&vb, p, plen, name);
            CHECK(st == AF_OK, "%s: parse failed: %s", name, af_errmsg());
            if (!st && vb.protocol >= 3) {
                size_t inside = 0;
                for (size_t i = 0; i < 2 * vb.n_pairs; i++)
                    inside += vb.image[i] >= p && vb.image[i] + vb.image_len[i] <= p + plen;
                CHECK(inside == 2 * vb.n_pairs, "%s: only %zu of %zu images point into the file buffer", name,
                      inside, 2 * vb.n_pairs);
            }
            af_verbin_free(&vb);
            check_truncations(p, plen, name, &n_trunc);
            if (plen < 20000) check_mutations(p, plen, name, (uint64_t)n_good, 300, &n_mut_ok, &n_mut_err);
            free(e);
            free(p);
        } else {
            n_bad++;
            af_status st = af_verbin_load(&vb, pkl);
            const char *msg = af_errmsg();
            CHECK(st != AF_OK, "%s: malformed file was accepted", name);
            int all = 1;
            for (char *ph = strtok_r(NULL, "\t", &save); ph; ph = strtok_r(NULL, "\t", &save))
                if (!contains(msg, ph)) {
                    CHECK(0, "%s: message lacks '%s': %s", name, ph, msg);
                    all = 0;
                }
            printf("  %-22s %s: %s\n", name, all && st ? "rejected" : "WRONG", msg);
            af_verbin_free(&vb);
        }
    }
    fclose(list);
    CHECK(n_good >= 15 && n_bad >= 20, "only %d good and %d bad cases were written", n_good, n_bad);
    printf("eval_pickle: %d good files, %d malformed, %zu truncations, %zu mutations (%zu parsed, %zu rejected): "
           "%d failures\n",
           n_good, n_bad, n_trunc, n_mut_ok + n_mut_err, n_mut_ok, n_mut_err, test_failures);
    return test_failures ? 1 : 0;
}
