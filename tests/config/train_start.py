"""arcface-train and arcface-eval with insightface-style config files: what is
checked at start, and the familiar output.

Config files are written here in insightface arcface_torch's forms (a base.py
in the same configs/ folder, `config.key = <expression>` lines) into a scratch
folder that is the working directory, as `python train_v2.py configs/x.py` is
run from the arcface_torch folder. Cases:
  1. rec that does not exist            -> exit 2, naming 'rec' and configs/x.py:LINE, nothing written
  2. a vit_* network                    -> exit 2, naming 'network' and the reason
  3. the config path is a directory     -> exit 2 (it trained on the defaults with exit 0)
  4. an unterminated " in the file      -> exit 2 naming file:line (it was taken literally)
  5. val_targets ['lfw'] under 1 worker + 1 server (mpirun): resolved as
     <rec>/lfw.bin, missing -> exit 2 on every rank before the first step (no
     checkpoint written; it failed only after the whole run)
  6. a synthetic-data run in the 3millions.py form: trains; output = None is
     work_dirs/<config name>; training.log holds rank 0's log; the verification
     result is logged in insightface's CallBackVerification form, and its
     Accuracy-Flip equals metrics.csv's accuracy; the log names base.py, the
     ignored keys and the ignored margin terms of (1.0, 0.3, 0.2)
  7. arcface-eval with --roc-dir naming a file, or a missing second target ->
     fails before the first target is embedded; otherwise it prints the best
     threshold of each fold (10 numbers)
  8. arcface-eval on a Fashion-MNIST network trained on 3-channel images (it
     refused the checkpoint's conv1.weight): the training run's accuracy on the
     same .bin
  9. gradient_acc 2 with verbose 2 (the same run): evaluated every 2
     micro-batches and logged as [tiny][2], [tiny][4], as arcface_torch's
     global_step (it evaluated every 2 optimizer steps, logged as [tiny][2])
usage: train_start.py ARCFACE_TRAIN ARCFACE_EVAL MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import csv
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import struct
import time
import zlib

FMNIST = "/usr/share/datasets/fashion-mnist"

BASE = """from easydict import EasyDict as edict

config = edict()
config.margin_list = (1.0, 0.5, 0.0)
config.network = "r50"
config.resume = False
config.save_all_states = False
config.output = "base_output"
config.embedding_size = 512
config.sample_rate = 1
config.fp16 = False
config.batch_size = 128
config.optimizer = "sgd"
config.lr = 0.1
config.momentum = 0.9
config.weight_decay = 5e-4
config.verbose = 2000
config.frequent = 10
config.dali = False
config.gradient_acc = 1
config.seed = 2048
config.num_workers = 2
config.using_wandb = False
config.save_artifacts = False
config.wandb_resume = False # resume wandb run
"""

HEAD = "from easydict import EasyDict as edict\n\n# make training faster\nconfig = edict()\n"

failures = 0


def check(ok, what, detail=""):
    global failures
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n     {detail}" if detail and not ok else ""))


def png(w, h, pixels):
    """An 8-bit grayscale PNG, with zlib and struct only."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + bytes(pixels[y * w:(y + 1) * w]) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_bin(path, n_pairs, size=28):
    """An insightface verification file: pickle of (encoded images, issame list)."""
    rng = random.Random(5)
    bins, issame = [], []
    for k in range(n_pairs):
        same = k % 2 == 0
        a = [rng.randrange(256) for _ in range(size * size)]
        b = [min(255, max(0, v + rng.randrange(-110, 111))) for v in a] if same else \
            [rng.randrange(256) for _ in range(size * size)]
        bins += [png(size, size, a), png(size, size, b)]
        issame.append(same)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=2)


def run(cmd, cwd, timeout=120):
    t0 = time.time()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return r, time.time() - t0


def main():
    train, evaluate, mpirun, work = sys.argv[1], sys.argv[2], sys.argv[3].split("|"), sys.argv[4]
    if not os.path.isdir(FMNIST):
        print(f"skip: {FMNIST} (Debian's dataset-fashion-mnist) is not installed")
        return 77
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "configs"))

    def put(name, body):
        with open(os.path.join(work, "configs", name), "w") as f:
            f.write(HEAD + body)
        return "configs/" + name

    with open(os.path.join(work, "configs", "base.py"), "w") as f:
        f.write(BASE)
    fast = ["--max_steps", "2", "--threads", "1", "--loader_threads", "1"]

    # 1. A dataset that does not exist.
    cfg = put("ms1m_form.py", 'config.network = "r18"\nconfig.output = None\n'
              'config.rec = "/nonexistent/train_tmp/ms1m-retinaface-t1"\n'
              'config.num_classes = 93431\nconfig.num_epoch = 20\nconfig.warmup_epoch = config.num_epoch // 10\n'
              "config.val_targets = ['lfw', 'cfp_fp', \"agedb_30\"]\n")
    r, dt = run([train, cfg] + fast, work)
    check(r.returncode == 2 and "configs/ms1m_form.py:7: configuration key 'rec'" in r.stderr
          and not os.path.exists(os.path.join(work, "work_dirs", "ms1m_form")),
          f"missing rec: exit {r.returncode} in {dt:.1f} s, names rec and configs/ms1m_form.py:7, writes nothing",
          r.stderr.strip()[-400:])

    # 2. A network insightface has and this system does not.
    cfg = put("vit_form.py", 'config.margin_list = (1.0, 0.0, 0.4)\nconfig.network = "vit_t_dp005_mask0"\n'
              'config.rec = "synthetic"\nconfig.num_epoch = 40\nconfig.warmup_epoch = config.num_epoch // 10\n')
    r, dt = run([train, cfg] + fast, work)
    check(r.returncode == 2 and "configs/vit_form.py:6: configuration key 'network'" in r.stderr
          and "vision transformers" in r.stderr, f"vit network: exit {r.returncode}, refused naming the line and why",
          r.stderr.strip()[-400:])

    # 3. A folder given as the configuration file.
    r, dt = run([train, "configs", "--output", "out_dir_case"] + fast, work)
    check(r.returncode == 2 and "is a directory" in r.stderr and not os.path.exists(os.path.join(work, "out_dir_case")),
          f"config path is a directory: exit {r.returncode}", (r.stdout + r.stderr).strip()[-400:])

    # 4. An unterminated string.
    cfg = put("quote.py", 'config.network = "fmnist\nconfig.rec = "synthetic"\n')
    r, dt = run([train, cfg] + fast, work)
    check(r.returncode == 2 and "configs/quote.py:5: key 'network': unterminated string" in r.stderr,
          f"unterminated string: exit {r.returncode}", (r.stdout + r.stderr).strip()[-400:])

    # 5. A validation target that is not there, on a 1 + 1 layout.
    cfg = put("val_form.py", f'config.network = "fmnist"\nconfig.embedding_size = 16\nconfig.output = None\n'
              f'config.rec = "{FMNIST}"\nconfig.batch_size = 16\nconfig.num_epoch = 1\n'
              f"config.val_targets = ['lfw']\n")
    r, dt = run(mpirun + ["-np", "2", train, cfg, "--ps", "1"] + fast, work)
    out = os.path.join(work, "work_dirs", "val_form")
    check(r.returncode == 2 and "configs/val_form.py:11: configuration key 'val_targets'" in r.stderr
          and f"{FMNIST}/lfw.bin" in r.stderr and not os.path.exists(os.path.join(out, "checkpoints")),
          f"val_targets ['lfw'] -> {FMNIST}/lfw.bin missing: exit {r.returncode} in {dt:.1f} s, before any step",
          r.stderr.strip()[-600:])

    # 6. A run in the 3millions.py form, on insightface's "synthetic" data.
    tiny_bin = os.path.join(work, "tiny.bin")
    write_bin(tiny_bin, 40)
    cfg = put("synth_form.py", 'config.loss = "cosface"\nconfig.margin_list = (1.0, 0.3, 0.2)\n'
              'config.network = "fmnist"\nconfig.resume = False\nconfig.output = None\nconfig.embedding_size = 32\n'
              'config.sample_rate = 0.99\nconfig.fp16 = True\nconfig.batch_size = 8 # per rank\n'
              'config.lr = 0.1  # batch size is 512\n\nconfig.rec = "synthetic"\nconfig.num_classes = 3 * 1000\n'
              f'config.num_epoch = 30\nconfig.warmup_epoch = -1\nconfig.val_targets = ["{tiny_bin}"]\n'
              'config.verbose = 2\nconfig.frequent = 1\n')
    r, dt = run([train, cfg] + fast, work, timeout=300)
    out = os.path.join(work, "work_dirs", "synth_form")
    log_path = os.path.join(out, "training.log")
    check(r.returncode == 0, f"synthetic form trains: exit {r.returncode} in {dt:.1f} s", r.stderr.strip()[-600:])
    log = open(log_path).read() if os.path.exists(log_path) else ""
    check(bool(log) and "Training: " in log and "arcface-train: done" in log and log.count("\n") >= 10,
          f"training.log in work_dirs/synth_form (output = None): {log.count(chr(10))} lines")
    pat = r"^Training: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}-\[tiny\]\[2\]"
    xn = re.search(pat + r"XNorm: (\d+\.\d{6})$", log, re.M)
    flip = re.search(pat + r"Accuracy-Flip: (\d\.\d{5})\+-(\d\.\d{5})$", log, re.M)
    high = re.search(pat + r"Accuracy-Highest: (\d\.\d{5})$", log, re.M)
    check(bool(xn and flip and high), "insightface's [tiny][2]XNorm / Accuracy-Flip / Accuracy-Highest lines",
          "\n     ".join(l for l in log.splitlines() if "[tiny]" in l) or "(no such lines)")
    rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv")))) if os.path.exists(
        os.path.join(out, "metrics.csv")) else []
    acc = [row.get("val_tiny_acc") for row in rows if row.get("val_tiny_acc")]
    if flip and acc:
        d = abs(float(flip.group(1)) - float(acc[-1]))
        check(d <= 5e-6, f"Accuracy-Flip {flip.group(1)} = metrics.csv accuracy {float(acc[-1]):.6f} "
              f"(|difference| {d:.1e}, tolerance 5e-6: the rounding to 5 decimals)")
        check(float(high.group(1)) >= float(flip.group(1)), "Accuracy-Highest >= Accuracy-Flip")
    else:
        check(False, "metrics.csv has the evaluation's accuracy")
    check("base.py was applied first" in log and re.search(r"ignoring arcface_torch keys.*\bloss\b", log) is not None
          and "m1 = 1, m2 = 0.3 are ignored" in log and 'resume = "none"' in log,
          "the log names base.py, the ignored keys, the ignored margin terms, and resume False -> none")

    # 7. arcface-eval: a bad --roc-dir fails before embedding; thresholds printed.
    r, dt = run([train, "--network", "fmnist", "--embedding_size", "16", "--rec",
                 "synthetic:ids=20,per_id=4,size=28,channels=1", "--batch_size", "8", "--resume", "none",
                 "--output", "eval_model"] + fast, work)
    check(r.returncode == 0, f"a model for arcface-eval: exit {r.returncode}", r.stderr[-300:])
    ckpt_dir = os.path.join(work, "eval_model", "checkpoints")
    ckpt = os.path.join(ckpt_dir, open(os.path.join(ckpt_dir, "latest")).read().strip()) if os.path.exists(
        os.path.join(ckpt_dir, "latest")) else "missing.h5"
    r, dt = run([evaluate, "--model", ckpt, "--target", tiny_bin, "--roc-dir", log_path], work)
    check(r.returncode != 0 and "--roc-dir" in r.stderr and "not a folder" in r.stderr and "accuracy" not in r.stdout,
          f"arcface-eval --roc-dir FILE: exit {r.returncode} in {dt:.1f} s before any target ran", r.stderr[-300:])
    r, dt = run([evaluate, "--model", ckpt, "--target", tiny_bin, "--target", os.path.join(work, "nope.bin")], work)
    check(r.returncode != 0 and "nope.bin" in r.stderr and "accuracy" not in r.stdout,
          f"arcface-eval with a missing second target fails before the first runs: exit {r.returncode}", r.stderr[-300:])
    r, dt = run([evaluate, "--model", ckpt, "--target", tiny_bin], work)
    m = re.search(r"^tiny: best threshold per fold .*?:((?: \d+\.\d\d){10})$", r.stdout, re.M)
    check(r.returncode == 0 and m is not None, "arcface-eval prints the best threshold of each of the 10 folds",
          r.stdout[-400:] + r.stderr[-300:])
    if m:
        print(f"     thresholds:{m.group(1)}")

    # 8. A Fashion-MNIST network trained on 3-channel images: the checkpoint names
    # the architecture, not the channels, and arcface-eval built the 1-channel
    # network and refused its conv1.weight. It must evaluate the model as the
    # trainer did: the same accuracy on the same .bin as the run's own evaluation.
    r, dt = run([train, "--network", "fmnist", "--embedding_size", "16", "--rec",
                 "synthetic:ids=20,per_id=4,size=28,channels=3", "--batch_size", "8", "--resume", "none",
                 "--output", "rgb_model", "--val_targets", tiny_bin, "--verbose", "2", "--gradient_acc", "2"] + fast,
                work)
    check(r.returncode == 0, f"a fmnist-network model trained on 3-channel images: exit {r.returncode}", r.stderr[-300:])
    # 9. (the same run) gradient_acc 2: arcface_torch's global_step, which verbose
    # counts and its log lines show, is the micro-batch: evaluations at micro-batch
    # 2 and 4 (optimizer steps 1 and 2), logged as [tiny][2] and [tiny][4].
    steps = re.findall(r"-\[tiny\]\[(\d+)\]XNorm", r.stdout)
    check(steps == ["2", "4"], f"gradient_acc 2, verbose 2: evaluated and logged at global steps {steps} "
          "(micro-batches, as arcface_torch), expected ['2', '4']")
    rgb_dir = os.path.join(work, "rgb_model")
    rows = list(csv.DictReader(open(os.path.join(rgb_dir, "metrics.csv")))) if os.path.exists(
        os.path.join(rgb_dir, "metrics.csv")) else []
    acc = [row.get("val_tiny_acc") for row in rows if row.get("val_tiny_acc")]
    latest = os.path.join(rgb_dir, "checkpoints", "latest")
    ckpt = os.path.join(rgb_dir, "checkpoints", open(latest).read().strip()) if os.path.exists(latest) else "missing.h5"
    r, dt = run([evaluate, "--model", ckpt, "--target", tiny_bin, "--threads", "1"], work)
    m = re.search(r"^tiny: \d+ pairs, accuracy (\d\.\d{5})", r.stdout, re.M)
    ok = r.returncode == 0 and m is not None and bool(acc)
    d = abs(float(m.group(1)) - float(acc[-1])) if m and acc else float("nan")
    check(ok and d <= 5e-6, f"arcface-eval on the 3-channel model: exit {r.returncode} in {dt:.1f} s, tiny accuracy "
          f"{m.group(1) if m else '-'} vs the training run's {acc[-1] if acc else '-'} (|difference| {d:.1e}, "
          "tolerance 5e-6: the rounding to 5 decimals)",
          r.stdout[-400:] + r.stderr[-300:])
    print(f"{'all passed' if not failures else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
