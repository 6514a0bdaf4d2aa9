/* insightface arcface_torch config files as they are, through the parser:
 * config files written here in every form insightface's configs/ folder uses
 * (imports, `config = edict()`, `config.key = <expression>`: numbers such as
 * 5e-4, strings in either quote, None/True/False, tuples and lists, // * and
 * parentheses, config.num_epoch // 10, a key assigned twice, trailing comments,
 * the older files' def lr_step_func and decay_epoch), merged over a base.py of
 * the same folder as utils_config.get_config does; then one config per
 * insightface network family through af_config_check (iResNets and mbf start, vit_ and
 * r2060 are refused naming the reason); then broken files, each of which must
 * fail naming the file and line and what is wrong. The values expected below
 * are Python's: each expression's value is written next to it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arcface/config.h"

static int failures, checks;
#define CHECK(cond, ...) do { checks++; if (!(cond)) { failures++; printf("FAIL line %d: ", __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static const char *put(const char *dir, const char *name, const char *text)
{
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) { perror(p); exit(1); }
    fputs(text, f);
    fclose(f);
    return p;
}

/* The base.py form: every key insightface's base.py sets, including the
 * commented-out AdamW block and the wandb keys (save_artifacts among them). */
static const char base_py[] =
    "from easydict import EasyDict as edict\n"
    "\n"
    "# make training faster\n"
    "config = edict()\n"
    "\n"
    "# Margin Base Softmax\n"
    "config.margin_list = (1.0, 0.5, 0.0)\n"
    "config.network = \"r50\"\n"
    "config.resume = False\n"
    "config.save_all_states = False\n"
    "config.output = \"base_output_dir\"\n"
    "config.embedding_size = 512\n"
    "config.sample_rate = 1\n"
    "config.interclass_filtering_threshold = 0\n"
    "config.fp16 = False\n"
    "config.batch_size = 96\n"
    "config.optimizer = \"sgd\"\n"
    "config.lr = 0.1\n"
    "config.momentum = 0.9\n"
    "config.weight_decay = 5e-4\n"
    "# config.optimizer = \"adamw\"\n"
    "# config.lr = 0.001\n"
    "config.verbose = 2000\n"
    "config.frequent = 10\n"
    "config.dali = False \n"
    "config.gradient_acc = 1\n"
    "config.seed = 2048\n"
    "config.num_workers = 2\n"
    "config.wandb_key = \"XXXXXXXX#not-a-comment\"\n"
    "config.suffix_run_name = None\n"
    "config.using_wandb = False\n"
    "config.wandb_entity = \"entity\"\n"
    "config.wandb_project = \"project\"\n"
    "config.wandb_log_all = True\n"
    "config.save_artifacts = False\n"
    "config.wandb_resume = False # resume wandb run\n";

/* The ms1mv3_r50.py form. */
static const char arcface_py[] =
    "from easydict import EasyDict as edict\n"
    "\n"
    "# make training faster\n"
    "# our RAM is 256G\n"
    "config = edict()\n"
    "config.margin_list = (1.0, 0.5, 0.0)\n"
    "config.network = \"r100\"\n"
    "config.resume = False\n"
    "config.output = None\n"
    "config.embedding_size = 512\n"
    "config.sample_rate = 1.0\n"
    "config.fp16 = True\n"
    "config.momentum = 0.9\n"
    "config.weight_decay = 5e-4\n"
    "config.batch_size = 128\n"
    "config.lr = 0.2\n"
    "config.verbose = 2000\n"
    "config.dali = False\n"
    "\n"
    "config.rec = \"/nonexistent/train_tmp/ms1m-retinaface-t1\"\n"
    "config.num_classes = 93431\n"
    "config.num_image = 5179510\n"
    "config.num_epoch = 25\n"
    "config.warmup_epoch = 2\n"
    "config.val_targets = ['lfw', 'cfp_fp', \"agedb_30\"]\n";

/* The AdamW / ViT / WebFace42M form: expressions and references. */
static const char expr_py[] =
    "from easydict import EasyDict as edict\n"
    "config = edict()\n"
    "config.margin_list = (1.0, 0.0, 0.4)\n"
    "config.network = \"mbf\"\n"
    "config.resume = True\n"
    "config.output = 'runs/expr'\n"
    "config.sample_rate = 0.3\n"
    "config.interclass_filtering_threshold = 0.4\n"
    "config.weight_decay = 0.1\n"
    "config.batch_size = 256\n"
    "config.gradient_acc = 12 # total batchsize is 256 * 12\n"
    "config.optimizer = \"adamw\"\n"
    "config.lr = 0.001\n"
    "config.dali = True\n"
    "config.rec = \"/nonexistent/train_tmp/WebFace42M\"\n"
    "config.num_classes = 2059906\n"
    "config.num_image = 42474557\n"
    "config.num_epoch = 40\n"
    "config.warmup_epoch = config.num_epoch // 10\n"             /* 4 */
    "config.verbose = (config.num_image // config.batch_size) % 1000 + 2 ** 3\n" /* 165916 % 1000 + 8 = 924 */
    "config.frequent = -7 // 2 + 30\n"                            /* -4 + 30 = 26 */
    "config.scale = 7 / 2 * 16\n"                                 /* 56.0 */
    "config.seed = 30 * 10000\n"                                  /* 300000 */
    "config.val_targets = ['lfw']\n"
    "config.val_targets = []\n"
    "config.dali_aug = True\n";

/* The older form (3millions.py, glint360k_mbf.py, ms1mv3_r2060.py): loss,
 * decay_epoch, a function definition and lr_func, warmup_epoch = -1, a list
 * over several lines, rec = "synthetic". */
static const char old_py[] =
    "from easydict import EasyDict as edict\n"
    "\n"
    "# configs for test speed\n"
    "\n"
    "config = edict()\n"
    "config.loss = \"cosface\"\n"
    "config.network = \"r18\"\n"
    "config.resume = False\n"
    "config.output = None\n"
    "config.embedding_size = 256\n"
    "config.sample_rate = 0.99\n"
    "config.fp16 = True\n"
    "config.batch_size = 64 # total_batch_size = batch_size * num_gpus\n"
    "config.lr = 0.1  # batch size is 512\n"
    "\n"
    "config.rec = \"synthetic\"\n"
    "config.num_classes = 300 * 10000\n"
    "config.num_epoch = 30\n"
    "config.warmup_epoch = -1\n"
    "config.decay_epoch = [10, 20, 25]\n"
    "config.val_targets = [\n"
    "    \"lfw\",\n"
    "    'cfp_fp',\n"
    "]\n"
    "\n"
    "def lr_step_func(epoch):\n"
    "    return ((epoch + 1) / (4 + 1)) ** 2 if epoch < config.warmup_epoch else 0.1 ** len(\n"
    "        [m for m in [11, 17, 22] if m - 1 <= epoch])\n"
    "config.lr_func = lr_step_func\n";

static af_status load(af_config *c, const char *path)
{
    af_config_defaults(c);
    af_status st = af_config_load_file(c, path);
    if (st) printf("  load %s: %s\n", path, af_errmsg());
    return st;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-6 * fmax(1, fabs(b)); }

int main(void)
{
    const char *dir = "insightface_configs";
    mkdir(dir, 0777);
    af_config c;

    /* 1. base.py merged first, the job file over it. */
    put(dir, "base.py", base_py);
    const char *p = put(dir, "ms1mv3_r100.py", arcface_py);
    CHECK(!load(&c, p), "ms1mv3 form loads");
    CHECK(!strcmp(c.network, "r100") && c.lr == 0.2f && c.batch_size == 128 && c.num_classes == 93431 &&
          c.num_epoch == 25 && c.warmup_epoch == 2, "job values: network %s lr %g batch %d classes %lld epochs %d/%d",
          c.network, c.lr, c.batch_size, (long long)c.num_classes, c.num_epoch, c.warmup_epoch);
    CHECK(c.seed == 2048 && c.frequent == 10 && !strcmp(c.optimizer, "sgd") && c.gradient_acc == 1,
          "base.py values under the job's: seed %llu frequent %d optimizer %s", (unsigned long long)c.seed, c.frequent,
          c.optimizer);
    CHECK(!strcmp(c.output, "work_dirs/ms1mv3_r100"), "output None -> work_dirs/<config name>: '%s'", c.output);
    CHECK(!strcmp(c.resume, "none"), "resume False -> none: '%s'", c.resume);
    CHECK(!strcmp(c.val_targets, "lfw,cfp_fp,agedb_30"), "val_targets list: '%s'", c.val_targets);
    CHECK(c.margin_list[0] == 1 && c.margin_list[1] == 0.5f && c.margin_list[2] == 0, "margin_list tuple");
    CHECK(c.weight_decay == 5e-4f && c.sample_rate == 1.0, "5e-4 and 1.0: %g %g", c.weight_decay, c.sample_rate);
    CHECK(strstr(c.ignored, "save_artifacts") && strstr(c.ignored, "num_image") &&
          strstr(c.ignored, "wandb_resume") && strstr(c.ignored, "suffix_run_name"), "ignored keys listed: '%s'", c.ignored);
    /* fp16 = True is arcface_torch's mixed-precision switch: bf16 here, not an ignored key. */
    CHECK(!strstr(c.ignored, "fp16") && c.fp16 && af_config_precision(&c) == AF_PRECISION_BF16,
          "fp16 = True -> precision bf16 (fp16 %d, ignored '%s')", c.fp16, c.ignored);
    CHECK(strstr(c.base_file, "insightface_configs/base.py") != NULL, "base.py recorded: '%s'", c.base_file);
    CHECK(!strcmp(af_config_where(&c, "lr"), "insightface_configs/ms1mv3_r100.py:16"), "where(lr) = %s",
          af_config_where(&c, "lr"));
    CHECK(!strcmp(af_config_where(&c, "seed"), "insightface_configs/base.py:27"), "where(seed) = %s",
          af_config_where(&c, "seed"));
    CHECK(!strcmp(af_config_where(&c, "scale"), "default"), "where(scale) = %s", af_config_where(&c, "scale"));
    CHECK(!af_config_check(&c), "ms1mv3 form passes the checks: %s", af_errmsg());

    /* base.py alone; a job file that leaves output unset keeps base's. */
    p = put(dir, "base_only.py", "config.network = 'r18'\n");
    CHECK(!load(&c, p) && !strcmp(c.output, "base_output_dir") && !strcmp(c.network, "r18"),
          "output from base.py when the job does not set it: '%s'", c.output);

    /* 2. Expressions and references. */
    p = put(dir, "wf42m_expr.py", expr_py);
    CHECK(!load(&c, p), "expression form loads");
    CHECK(c.warmup_epoch == 4, "config.num_epoch // 10 = 4, got %d", c.warmup_epoch);
    CHECK(c.verbose == 924, "(42474557 // 256) %% 1000 + 2 ** 3 = 924, got %d", c.verbose);
    CHECK(c.frequent == 26, "-7 // 2 + 30 = 26 (floor division), got %d", c.frequent);
    CHECK(near(c.scale, 56.0), "7 / 2 * 16 = 56.0 (true division), got %g", c.scale);
    CHECK(c.seed == 300000, "30 * 10000 = 300000, got %llu", (unsigned long long)c.seed);
    CHECK(!strcmp(c.val_targets, ""), "a key assigned twice: the last wins ([]), got '%s'", c.val_targets);
    CHECK(!strcmp(c.resume, "auto"), "resume True -> auto, got '%s'", c.resume);
    CHECK(!strcmp(c.output, "runs/expr") && c.gradient_acc == 12 && c.interclass_filtering_threshold == 0.4f,
          "strings in single quotes, trailing comments");
    CHECK(strstr(c.ignored, "dali_aug") != NULL, "dali_aug ignored: '%s'", c.ignored);

    /* 3. The older form. */
    p = put(dir, "old_form.py", old_py);
    CHECK(!load(&c, p), "older form loads");
    CHECK(c.num_classes == 3000000 && c.warmup_epoch == -1 && !strcmp(c.rec, "synthetic") &&
          !strcmp(c.val_targets, "lfw,cfp_fp") && !strcmp(c.output, "work_dirs/old_form"),
          "older form values: classes %lld warmup %d rec %s val '%s' output %s", (long long)c.num_classes,
          c.warmup_epoch, c.rec, c.val_targets, c.output);
    CHECK(strstr(c.ignored, "loss") && strstr(c.ignored, "decay_epoch") && strstr(c.ignored, "lr_func"),
          "loss, decay_epoch, lr_func ignored (train_v2 never reads them): '%s'", c.ignored);
    CHECK(!af_config_check(&c), "warmup_epoch = -1 accepted (no warmup): %s", af_errmsg());

    /* 4. Each insightface network family: starts, or is refused for a reason that holds. */
    struct { const char *network, *margins, *refusal; } nets[] = {
        {"r18", "(1.0, 0.5, 0.0)", NULL}, {"r34", "(1.0, 0.0, 0.4)", NULL}, {"r50", "(1.0, 0.5, 0.0)", NULL},
        {"r100", "(1.0, 0.0, 0.4)", NULL}, {"mbf", "(1.0, 0.5, 0.0)", NULL},
        {"vit_t_dp005_mask0", "(1.0, 0.0, 0.4)", "vision transformers (vit_*) are not implemented"},
        {"vit_b_dp005_mask_005", "(1.0, 0.0, 0.4)", "vision transformers (vit_*) are not implemented"},
        {"vit_h", "(1.0, 0.0, 0.4)", "vision transformers (vit_*) are not implemented"},
        {"r2060", "(1.0, 0.5, 0.0)", "2060-layer iResNet is not implemented"},
    };
    for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
        char text[512], name[64];
        snprintf(text, sizeof text, "from easydict import EasyDict as edict\nconfig = edict()\nconfig.margin_list = %s\n"
                 "config.network = \"%s\"\nconfig.output = None\n", nets[i].margins, nets[i].network);
        snprintf(name, sizeof name, "net_%s.py", nets[i].network);
        p = put(dir, name, text);
        CHECK(!load(&c, p), "%s loads", name);
        af_status st = af_config_check(&c);
        if (!nets[i].refusal) {
            CHECK(!st, "%s passes: %s", nets[i].network, af_errmsg());
        } else {
            CHECK(st && strstr(af_errmsg(), nets[i].refusal) && strstr(af_errmsg(), ":4: configuration key 'network'"),
                  "%s refused naming the line and the reason, got '%s'", nets[i].network, st ? af_errmsg() : "success");
            if (st) printf("  %-22s -> %s\n", nets[i].network, af_errmsg());
        }
    }

    /* 5. Margins: arcface_torch is the default; its rules. */
    af_config_defaults(&c);
    CHECK(!strcmp(c.margin_grad, "arcface_torch"), "default margin_grad is arcface_torch, got '%s'", c.margin_grad);
    p = put(dir, "sphere.py", "config.margin_list = (1.35, 0.0, 0.0)\n");
    CHECK(!load(&c, p), "sphere loads");
    af_status st = af_config_check(&c);
    CHECK(st && strstr(af_errmsg(), "raises for m1 != 1 with m3 = 0") && strstr(af_errmsg(), "sphere.py:1"),
          "m1 != 1, m3 = 0 refused in arcface_torch mode naming the line: %s", st ? af_errmsg() : "success");
    af_config_set(&c, "margin_grad", "analytic", "command line");
    CHECK(!af_config_check(&c), "the same margins pass with margin_grad = analytic: %s", af_errmsg());

    /* 5b. Command-line overrides: Python literals where they are ones, the text as typed otherwise. */
    {
        p = put(dir, "cli_job.py", "config.network = 'r18'\n");
        char *argv[] = {"prog", (char *)p, "--resume", "False", "--val_targets", "['lfw', 'cfp_fp']", "--output", "None",
                        "--rec", "/data/run(2)/ms1m", "--network", "2024", "--margin_list", "1.0,0.3,0.2", "--lr=1e-3"};
        af_config_defaults(&c);
        st = af_config_parse_args(&c, (int)(sizeof argv / sizeof argv[0]), argv, 1);
        CHECK(!st, "command line parses: %s", st ? af_errmsg() : "");
        CHECK(!strcmp(c.resume, "none") && !strcmp(c.val_targets, "lfw,cfp_fp") &&
              !strcmp(c.output, "work_dirs/cli_job") && !strcmp(c.rec, "/data/run(2)/ms1m") && !strcmp(c.network, "2024") &&
              c.margin_list[1] == 0.3f && c.lr == 1e-3f,
              "command line: resume '%s' val '%s' output '%s' rec '%s' network '%s' m2 %g lr %g", c.resume, c.val_targets,
              c.output, c.rec, c.network, c.margin_list[1], c.lr);
        CHECK(!strcmp(af_config_where(&c, "lr"), "command line"), "where(lr) = %s", af_config_where(&c, "lr"));
        char *argv3[] = {"prog", "--optimizer", "adamw"};
        af_config_defaults(&c);
        st = af_config_parse_args(&c, 3, argv3, 1);
        CHECK(!st && !strcmp(c.fc_update, "dense") && !af_config_check(&c),
              "optimizer adamw without fc_update: dense, as arcface_torch steps every row ('%s')", c.fc_update);
        char *argv4[] = {"prog", "--optimizer", "adamw", "--fc_update", "sparse"};
        af_config_defaults(&c);
        st = af_config_parse_args(&c, 5, argv4, 1);
        CHECK(!st && !strcmp(c.fc_update, "sparse") && !af_config_check(&c),
              "an explicit fc_update = sparse with adamw is taken (lazy AdamW): %s", af_errmsg());
        char *argv2[] = {"prog", "--network", "\"r50"};
        af_config_defaults(&c);
        st = af_config_parse_args(&c, 3, argv2, 1);
        CHECK(st && strstr(af_errmsg(), "command line: key 'network': unterminated string"),
              "unterminated quote on the command line: %s", st ? af_errmsg() : "success");
    }

    /* 6. Broken files: each names the file, the line and what is wrong. */
    struct { const char *name, *text, *needle; } bad[] = {
        {"unterminated.py", "config = edict()\nconfig.network = \"r50\nconfig.lr = 0.1\n",
         "unterminated.py:2: key 'network': unterminated string literal"},
        {"unterminated.conf", "lr = 0.1\nnetwork = \"r50\n", "unterminated.conf:2: key 'network': unterminated string"},
        {"forward_ref.py", "config = edict()\nconfig.warmup_epoch = config.num_epoch // 10\nconfig.num_epoch = 20\n",
         "forward_ref.py:2: key 'warmup_epoch': config.num_epoch is not set earlier in this file"},
        {"open_list.py", "config.val_targets = ['lfw', 'cfp_fp'\nconfig.lr = 0.1\n", "open_list.py:1"},
        {"div0.py", "config.num_epoch = 10 // 0\n", "div0.py:1: key 'num_epoch': division by zero"},
        {"typo.py", "config.learning_rate = 0.1\n", "typo.py:1: unknown configuration key 'learning_rate'"},
        {"none.py", "config.network = None\n", "none.py:1: key 'network': None is not a value of this key"},
        {"string_lr.py", "config.lr = \"fast\"\n", "string_lr.py:1: key 'lr' expects a number, got 'fast'"},
        {"nested.py", "config.margin_list = ((1.0, 0.5), 0.0)\n", "nested.py:1: key 'margin_list': nested tuple"},
        {"two_margins.py", "config.margin_list = (1.0, 0.5)\n", "two_margins.py:1: key 'margin_list' expects three"},
        {"statement.py", "config = edict()\nprint(config)\n", "statement.py:2: expected 'config.key = value'"},
        {"junk_op.py", "config.lr = 0.1 +\n", "junk_op.py:1: key 'lr': expected a value at column 6"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = put(dir, bad[i].name, bad[i].text);
        af_config_defaults(&c);
        st = af_config_load_file(&c, p);
        CHECK(st && strstr(af_errmsg(), bad[i].needle), "%s: expected an error naming '%s', got '%s'", bad[i].name,
              bad[i].needle, st ? af_errmsg() : "success");
        if (st) printf("  %-18s -> %s\n", bad[i].name, af_errmsg());
    }
    /* Deep nesting is refused, not a stack overflow. */
    {
        char deep[3000] = "config.lr = ";
        for (int i = 0; i < 100; i++) strcat(deep, "(");
        strcat(deep, "1");
        for (int i = 0; i < 100; i++) strcat(deep, ")");
        strcat(deep, "\n");
        p = put(dir, "deep.py", deep);
        af_config_defaults(&c);
        st = af_config_load_file(&c, p);
        CHECK(st && strstr(af_errmsg(), "nested deeper than 32"), "deep nesting refused: %s", st ? af_errmsg() : "success");
        char minus[2100] = "config.lr = ";
        for (int i = 0; i < 200; i++) strcat(minus, "-");
        strcat(minus, "1\n");
        p = put(dir, "minus.py", minus);
        af_config_defaults(&c);
        st = af_config_load_file(&c, p);
        CHECK(st && strstr(af_errmsg(), "nested deeper than 32"), "a run of unary minus refused: %s", st ? af_errmsg() : "success");
        p = put(dir, "two_power.py", "config.lr = 2 ** -1\nconfig.frequent = 2 ** 10 // 4\n");
        CHECK(!load(&c, p) && c.lr == 0.5f && c.frequent == 256, "2 ** -1 = 0.5, 2 ** 10 // 4 = 256: %g %d", c.lr, c.frequent);
    }
    /* A folder given as the configuration file. */
    af_config_defaults(&c);
    st = af_config_load_file(&c, dir);
    CHECK(st && strstr(af_errmsg(), "is a directory, expected a regular file"), "a directory is refused: %s",
          st ? af_errmsg() : "success");
    if (st) printf("  %-18s -> %s\n", "(directory)", af_errmsg());
    /* A range check names where the key was set. */
    p = put(dir, "rate.py", "config = edict()\nconfig.sample_rate = 1.5\n");
    CHECK(!load(&c, p), "rate loads");
    st = af_config_check(&c);
    CHECK(st && strstr(af_errmsg(), "rate.py:2: configuration key 'sample_rate'"), "check names file:line: %s",
          st ? af_errmsg() : "success");
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
