/* Absurd values of the keys that shape the loss and the update are refused at
 * start, and the values of insightface's own configs are not.
 *
 * scale = 1e30 (and lr = 1e30, margins far outside a cosine's range, ...) used
 * to train to a loss saturated at the probability clamp (-ln 1e-30 = 69.08) or
 * to NaN and end "done" with exit 0. Each absurd value, set from the command
 * line and from an arcface_torch .py config, must fail af_config_check with
 * AF_ERR_ARG (exit 2 in arcface-train) and a message naming the key, the value,
 * the accepted range and, for a file, file:line. Every value set in the
 * arcface_torch configs shipped with insightface (configs/NAME.py: s = 64, margins
 * (1, 0.5, 0), (1, 0, 0.4), (1, 0.3, 0.2), lr 0.001-0.4,
 * weight_decay 5e-4 and 0.1, sample_rate 0.1-1, embedding 512) must pass.
 * Also: af_errorf keeps messages longer than the old 1024-byte buffer whole,
 * and marks one that is cut. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arcface/config.h"

static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static void base(af_config *c)
{
    af_config_defaults(c);
    /* af_config_check reads nothing but the values; rec just must be set. */
    snprintf(c->rec, sizeof c->rec, "synthetic:ids=10,per_id=2");
}

/* key = value from the command line: refused naming key, value and range. */
static void refused(const char *key, const char *value, const char *range)
{
    af_config c;
    base(&c);
    af_status st = af_config_set(&c, key, value, "command line");
    if (st == AF_OK) st = af_config_check(&c);
    const char *m = af_errmsg();
    char quoted[80];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    CHECK(st == AF_ERR_ARG && strstr(m, quoted) && strstr(m, range), "%s = %s: status %d (want %d), message: %s", key,
          value, st, AF_ERR_ARG, m);
    printf("%s %s = %s: %s\n", st == AF_ERR_ARG ? "refused " : "ACCEPTED", key, value, m);
}

static void accepted(const char *key, const char *value)
{
    af_config c;
    base(&c);
    af_status st = af_config_set(&c, key, value, "command line");
    if (st == AF_OK) st = af_config_check(&c);
    CHECK(st == AF_OK, "%s = %s (an insightface config's value) is refused: %s", key, value, af_errmsg());
}

int main(void)
{
    /* absurd values, with the text of the accepted range that must be named */
    refused("scale", "1e30", "(0, 128]");
    refused("scale", "1000", "(0, 128]");
    refused("lr", "1e30", "[0, 10]");
    refused("lr", "11", "[0, 10]");
    refused("weight_decay", "1e30", "[0, 1]");
    refused("momentum", "1e30", "[0, 1)");
    refused("sample_rate", "1e-30", "[1e-05, 1]");
    refused("embedding_size", "1", "[2, 65536]");
    refused("embedding_size", "100000000", "[2, 65536]");
    refused("margin_list", "(1.0, 0.5, 1e30)", "[0, 1]");
    refused("margin_list", "(1e30, 0.0, 0.0)", "[1, 4]");
    refused("margin_list", "(1.0, 1e30, 0.0)", "[0, pi)");
    refused("comm_timeout", "-1", "[0, 1e7]");

    /* every value insightface's arcface_torch configs set */
    const char *ok[][2] = {
        {"scale", "64"}, {"scale", "30"}, {"scale", "128"},
        {"margin_list", "(1.0, 0.5, 0.0)"}, {"margin_list", "(1.0, 0.0, 0.4)"}, {"margin_list", "(1.0, 0.3, 0.2)"},
        {"lr", "0.1"}, {"lr", "0.2"}, {"lr", "0.4"}, {"lr", "0.001"}, {"lr", "0.02"},
        {"weight_decay", "5e-4"}, {"weight_decay", "0.1"}, {"momentum", "0.9"},
        {"sample_rate", "1.0"}, {"sample_rate", "0.3"}, {"sample_rate", "0.2"}, {"sample_rate", "0.1"},
        {"embedding_size", "512"}, {"embedding_size", "128"}, {"comm_timeout", "0"}, {"comm_timeout", "1800"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) accepted(ok[i][0], ok[i][1]);

    /* from a .py config: the message names the file and the line */
    char dir[] = "/tmp/af_config_bounds_XXXXXX", path[64];
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    snprintf(path, sizeof path, "%s/x.py", dir);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); return 1; }
    fputs("from easydict import EasyDict as edict\nconfig = edict()\nconfig.rec = \"synthetic:ids=10,per_id=2\"\n"
          "config.lr = 0.1\nconfig.scale = 1e30\n", f);
    fclose(f);
    af_config c;
    af_config_defaults(&c);
    af_status st = af_config_load_file(&c, path);
    if (st == AF_OK) st = af_config_check(&c);
    char where[80];
    snprintf(where, sizeof where, "%s:5", path);
    CHECK(st == AF_ERR_ARG && strstr(af_errmsg(), where) && strstr(af_errmsg(), "'scale'") &&
          strstr(af_errmsg(), "1e+30"), "config.scale = 1e30 on line 5 of %s: status %d, message: %s", path, st,
          af_errmsg());
    printf("from a file: %s\n", af_errmsg());
    unlink(path);
    rmdir(dir);

    /* messages past the old 1024-byte buffer stay whole; a cut one is marked */
    char big[3000];
    memset(big, 'k', sizeof big - 2);
    big[sizeof big - 2] = '!';
    big[sizeof big - 1] = 0;
    af_errorf(AF_ERR_ARG, "%s", big);
    af_error_wrap(AF_ERR_ARG, "/a/checkpoint/path.h5");
    size_t len = strlen(af_errmsg());
    CHECK(len == strlen("/a/checkpoint/path.h5: ") + strlen(big) && af_errmsg()[len - 1] == '!',
          "a %zu-byte message with a prefix came back as %zu bytes ending in '%c'", strlen(big), len,
          len ? af_errmsg()[len - 1] : '?');
    char *huge = malloc(20000);
    memset(huge, 'h', 19999);
    huge[19999] = 0;
    af_errorf(AF_ERR_ARG, "%s", huge);
    len = strlen(af_errmsg());
    CHECK(len > 4000 && strstr(af_errmsg(), "truncated]") && len < 19999,
          "a 19999-byte message: %zu bytes kept, marked as cut: %d", len, strstr(af_errmsg(), "truncated]") != NULL);
    af_error_wrap(AF_ERR_ARG, "prefix");
    CHECK(strstr(af_errmsg(), "truncated]") != NULL, "a cut message wrapped again is still marked as cut");
    free(huge);

    printf("%d checks, %d failed\n", checks, failures);
    return failures != 0;
}
