"""End to end, short: a fraction of an epoch of the main job's setup (Fashion-MNIST,
fmnist network, ArcFace, 2 workers + 1 server under mpirun) with periodic
evaluation, then arcface-eval on the checkpoint — on the Fashion-MNIST test split
and on an insightface-style .bin file written here by CPython's pickle (JPEG
pairs of test images, same/different class) — and arcface-plot on the metrics.
Checks that the metrics file has its columns and a decreasing loss, that the
checkpoint and evaluation results exist and are sensible, and that the charts are
PNG files.
usage: short_run.py BIN_DIR MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import csv
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
FMNIST = "/usr/share/datasets/fashion-mnist"
failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg)


def write_bin(path, n_pairs=300):
    """An insightface verification file: pickle of (bins, issame_list)."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], np.uint8)
    rng = np.random.default_rng(7)
    bins, issame = [], []
    for k in range(n_pairs):
        i = int(rng.integers(len(labels)))
        same = k % 2 == 0
        pool = np.where((labels == labels[i]) if same else (labels != labels[i]))[0]
        j = int(rng.choice(pool[pool != i]))
        for idx in (i, j):
            buf = io.BytesIO()
            Image.fromarray(images[idx]).convert("RGB").save(buf, format="JPEG", quality=95)
            bins.append(buf.getvalue())
        issame.append(same)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    out = os.path.join(WORK, "run")
    r = subprocess.run(MPIRUN + ["-np", "3", os.path.join(BIN, "arcface-train"), "--network", "fmnist",
                                 "--embedding_size", "64", "--batch_size", "32", "--ps", "1", "--max_steps", "120",
                                 "--frequent", "5", "--verbose", "60", "--save_every", "50", "--loader_threads", "1",
                                 "--threads", "1", "--val_targets", "fmnist-test:" + FMNIST, "--output", out],
                       capture_output=True, text=True, timeout=900)
    check(r.returncode == 0, f"training: 120 steps of 64 images, 2 workers + 1 server (exit {r.returncode})")
    if r.returncode:
        print(r.stdout[-3000:], r.stderr[-3000:])
        return 1
    progress = [l for l in r.stdout.splitlines() if l.startswith("Training:")]
    check(progress and "ETA" in progress[0] and "samples/s" in progress[0], f"progress line: {progress[:1]}")
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    cols = set(rows[0]) if rows else set()
    check({"step", "epoch", "loss", "lr", "samples_per_sec", "val_fmnist_acc", "val_fmnist_centre_acc"} <= cols,
          f"metrics.csv columns {sorted(cols)}")
    losses = [float(x["loss"]) for x in rows]
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    check(len(rows) == 24 and last < 0.8 * first, f"{len(rows)} rows; loss fell from {first:.2f} to {last:.2f}")
    vals = [float(x["val_fmnist_acc"]) for x in rows if x["val_fmnist_acc"]]
    check(len(vals) == 2 and vals[-1] > 0.75, f"periodic evaluations at steps 60 and 120: verification {vals}")
    ckpt = os.path.join(out, "checkpoints", "ckpt_00000120.h5")
    check(os.path.exists(ckpt) and os.path.exists(os.path.join(out, "config.txt")), "final checkpoint and config.txt")

    binfile = os.path.join(WORK, "fmnist_pairs.bin")
    write_bin(binfile)
    res = os.path.join(WORK, "eval", "results.csv")
    r = subprocess.run([os.path.join(BIN, "arcface-eval"), "--model", ckpt, "--target", "fmnist-test:" + FMNIST,
                        "--target", binfile, "--results", res, "--roc-dir", os.path.join(WORK, "eval"),
                        "--embeddings", os.path.join(WORK, "eval", "emb.h5")], capture_output=True, text=True,
                       timeout=600)
    print(r.stdout.strip())
    check(r.returncode == 0, f"arcface-eval (exit {r.returncode}) {r.stderr.strip()}")
    if r.returncode == 0:
        with open(res) as f:
            ev = {x["target"]: x for x in csv.DictReader(f)}
        fm, pb = ev.get("fmnist"), ev.get("fmnist_pairs")
        check(fm and 0.75 < float(fm["accuracy"]) <= 1 and 0.6 < float(fm["centre_accuracy"]) <= 1,
              f"fmnist: verification {fm and fm['accuracy']}, nearest-centre {fm and fm['centre_accuracy']}")
        check(pb and int(pb["pairs"]) == 300 and 0.7 < float(pb["accuracy"]) <= 1,
              f".bin written by CPython's pickle: {pb and pb['pairs']} pairs, accuracy {pb and pb['accuracy']}")
        for png in ("fmnist_roc.png", "fmnist_pairs_roc.png"):
            p = os.path.join(WORK, "eval", png)
            check(os.path.exists(p) and open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n", f"ROC chart {png}")
    r = subprocess.run([os.path.join(BIN, "arcface-plot"), "metrics", os.path.join(out, "metrics.csv"),
                        os.path.join(WORK, "plots")], capture_output=True, text=True)
    pngs = sorted(os.listdir(os.path.join(WORK, "plots"))) if r.returncode == 0 else []
    check(r.returncode == 0 and {"loss.png", "lr.png", "throughput.png", "val.png"} <= set(pngs), f"charts {pngs}")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
