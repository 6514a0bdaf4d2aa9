/* The training configuration: arcface_torch-style files (config.key = value,
 * Python literals), key = value files, command-line overrides winning over the
 * file, errors naming the key (and file:line) for unknown keys and bad values,
 * range checks naming the key, and a written configuration that reads back equal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arcface/config.h"

static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s", name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void expect_error(af_status st, const char *needle, const char *what)
{
    CHECK(st != AF_OK && strstr(af_errmsg(), needle), "%s: expected an error naming '%s', got %s", what, needle,
          st ? af_errmsg() : "success");
    if (st) printf("%-34s -> %s\n", what, af_errmsg());
}

int main(void)
{
    af_config c;
    af_config_defaults(&c);
    const char *py = write_file("cfg_torch.py",
        "from easydict import EasyDict as edict\n"
        "config = edict()\n"
        "config.margin_list = (1.0, 0.0, 0.4)   # CosFace\n"
        "config.network = \"r50\"\n"
        "config.embedding_size = 512\n"
        "config.sample_rate = 0.3\n"
        "config.fp16 = True\n");
    af_status st = af_config_load_file(&c, py);
    CHECK(!st && !c.ignored[0] && !strcmp(c.network, "r50") && c.margin_list[2] == 0.4f,
          "an arcface_torch file loads ('%s' ignored) %s", c.ignored, st ? af_errmsg() : "");
    CHECK(c.fp16 == 1 && af_config_precision(&c) == AF_PRECISION_BF16, "fp16 = True means bf16 (fp16 %d)", c.fp16);
    CHECK(!af_config_set(&c, "precision", "fp32", "command line") && af_config_precision(&c) == AF_PRECISION_FP32,
          "an explicit precision = fp32 wins over fp16 = True");
    CHECK(!af_config_set(&c, "precision", "bf16", "command line") && !af_config_set(&c, "fp16", "False", "x") &&
          af_config_precision(&c) == AF_PRECISION_BF16, "precision = bf16");
    af_config_defaults(&c);
    CHECK(af_config_precision(&c) == AF_PRECISION_FP32, "the default precision is fp32");
    af_config_set(&c, "precision", "fp16", "command line");
    expect_error(af_config_check(&c), "key 'precision': must be 'fp32' or 'bf16', got 'fp16'", "bad precision");

    af_config_defaults(&c);
    const char *kv = write_file("cfg_kv.conf",
        "# comment\n"
        "config.margin_list = (1.0, 0.0, 0.4)\n"
        "network = 'r50'\n"
        "batch_size = 64\n"
        "sample_rate = 0.3\n"
        "easy_margin = True\n"
        "rec = \"/data/ms1m\"\n");
    char *argv[] = {"prog", (char *)kv, "--batch_size", "32", "--lr=0.05", "--loader-threads", "3"};
    st = af_config_parse_args(&c, 7, argv, 1);
    CHECK(!st, "parse: %s", af_errmsg());
    CHECK(c.margin_list[0] == 1.0f && c.margin_list[1] == 0.0f && c.margin_list[2] == 0.4f, "margin_list (%g,%g,%g)",
          c.margin_list[0], c.margin_list[1], c.margin_list[2]);
    CHECK(!strcmp(c.network, "r50") && !strcmp(c.rec, "/data/ms1m") && c.easy_margin == 1, "strings and bools");
    CHECK(c.batch_size == 32 && c.lr == 0.05f && c.loader_threads == 3, "command line overrides the file (%d %g %d)",
          c.batch_size, c.lr, c.loader_threads);
    CHECK(c.sample_rate == 0.3 && (long)(c.sample_rate * 100000) == 30000, "sample_rate is a double: int(0.3 * 1e5) = %ld",
          (long)(c.sample_rate * 100000));
    CHECK(!af_config_check(&c), "check: %s", af_errmsg());

    /* Round trip through af_config_write. */
    FILE *f = fopen("cfg_written.conf", "w");
    af_config_write(&c, f);
    fclose(f);
    af_config d;
    af_config_defaults(&d);
    st = af_config_load_file(&d, "cfg_written.conf");
    /* Provenance differs by design (file:line vs command line). */
    memset(c.where, 0, sizeof c.where);
    memset(d.where, 0, sizeof d.where);
    CHECK(!st && !memcmp(&c, &d, sizeof c), "written configuration reads back equal (%s)", st ? af_errmsg() : "");

    af_config_defaults(&c);
    expect_error(af_config_set(&c, "lr", "fast", "command line"), "key 'lr' expects a number, got 'fast'", "bad number");
    expect_error(af_config_set(&c, "batch_size", "12.5", "x.conf:3"), "x.conf:3: key 'batch_size' expects an integer",
                 "bad integer");
    expect_error(af_config_set(&c, "margin_list", "(1.0, 0.5)", "command line"), "key 'margin_list' expects three",
                 "two margins");
    expect_error(af_config_set(&c, "flip", "maybe", "command line"), "key 'flip' expects true/false", "bad bool");
    expect_error(af_config_set(&c, "lerning_rate", "0.1", "command line"), "unknown configuration key 'lerning_rate'",
                 "misspelt key");
    char *argv2[] = {"prog", "--lr"};
    expect_error(af_config_parse_args(&c, 2, argv2, 1), "'--lr' needs a value", "option without value");
    expect_error(af_config_load_file(&c, "/nonexistent.conf"), "/nonexistent.conf", "missing file");
    const char *junk = write_file("cfg_junk.conf", "network = r18\nthis line has no equals sign\n");
    expect_error(af_config_load_file(&c, junk), "cfg_junk.conf:2: expected 'config.key = value' or 'key = value'", "malformed line");

    struct { const char *key, *value, *needle; } ranges[] = {
        {"sample_rate", "1.5", "'sample_rate': must be in [1e-05, 1]"},
        {"momentum", "1", "'momentum': must be in [0, 1)"},
        {"margin_list", "0.5,0.5,0", "'margin_list': m1 must be in [1, 4]"},
        {"fc_update", "lazy", "'fc_update': must be 'sparse' or 'dense'"},
        {"warmup_epoch", "30", "'warmup_epoch': must be < num_epoch"},
        {"margin_grad", "numeric", "'margin_grad': must be 'analytic' or 'arcface_torch'"},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        af_config_defaults(&c);
        CHECK(!af_config_set(&c, ranges[i].key, ranges[i].value, "test"), "set %s", ranges[i].key);
        expect_error(af_config_check(&c), ranges[i].needle, ranges[i].key);
    }
    /* insightface's default (every fc row stepped); sparse is the opt-in, for SGD and AdamW (lazy) alike. */
    af_config_defaults(&c);
    CHECK(!strcmp(c.fc_update, "dense"), "default fc_update is dense, as arcface_torch's SGD on one Parameter, got '%s'",
          c.fc_update);
    CHECK(!af_config_set(&c, "optimizer", "adamw", "test") && !af_config_set(&c, "fc_update", "sparse", "test") &&
          !af_config_check(&c), "adamw + fc_update = sparse is accepted (lazy AdamW): %s", af_errmsg());
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
