"""A changed run is refused, not continued; class growth on resume.

From one short run (1 worker + 1 server, SGD, 23 classes, checkpoint at step 2):
  every key at once  resuming with another seed, rec, network, embedding_size,
                     margin_list, scale, margin_grad, easy_margin,
                     interclass_filtering_threshold, sample_rate, sample_shards,
                     optimizer, fc_update, gradient_acc, dropout and global batch
                     exits 2 naming each of them with both values, and leaves the
                     output folder exactly as it was (no file written, touched or
                     pruned);
  some allowed       resume_allow_changes = seed,sample_rate with seed,
                     sample_rate and scale changed: exit 2 naming scale only;
                     with seed and sample_rate changed: trains on, the log lists
                     both; `all` does not let another network through; an unknown
                     name in the list is an error naming it;
  free keys          lr, num_epoch, max_steps, frequent, save_every, output and
                     the layout (2+2, same global batch) change without a word;
  growth             the same checkpoint resumed on a dataset with 31 identities
                     and 2 servers: the state it loaded (checkpointed before any
                     step) holds rows 0..22 of /fc/weight and /fc/momentum and the
                     backbone bit-identical to the checkpoint, rows 23..30 equal
                     to a fresh run's initial weights (a fresh 31-class run with
                     lr = 0 keeps them as initialised) and zero momentum, the log
                     says so, and it trains on; resuming that 31-class checkpoint
                     with 23 classes and another seed, optimizer and fc_update
                     is refused (exit 2) naming all five differences; growth
                     onto a 4-image dataset from the checkpoint's sample 8
                     restarts the epoch on the new dataset (exit 0, logged);
                     the image folder behind the same rec shrunk under the
                     checkpoint's position: refused at start-up (exit 2);
  format 1           an AdamW checkpoint rewritten as format 1 with fc_adam_t = 0
                     (what the old trainer wrote whenever servers held the fc)
                     resumes with fc_adam_t = step.
usage: refuse.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR"""
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib

import h5py
import numpy as np

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
REC23 = "synthetic:ids=23,per_id=4,size=28,channels=1,seed=9"
REC31 = "synthetic:ids=31,per_id=4,size=28,channels=1,seed=9"
BASE = {"network": "fmnist", "embedding_size": "16", "frequent": "1", "loader_threads": "1", "threads": "1",
        "keep_checkpoints": "10", "sample_rate": "0.5", "num_epoch": "2", "warmup_epoch": "1", "lr": "0.05",
        "rec": REC23, "max_steps": "2", "batch_size": "4", "ps": "1",
        "fc_update": "sparse"}  # not the default: the changed run below switches it to dense
failures, checks = 0, 0


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg)
    sys.stdout.flush()


def run(out, n, keys, env=None):
    args = []
    for k, v in dict(BASE, **keys).items():
        args += ["--" + k, v]
    r = subprocess.run(MPIRUN + ["-np", str(n), BIN] + args + ["--output", out], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout + r.stderr


def ckpt(out, step):
    return os.path.join(out, "checkpoints", f"ckpt_{step:08d}.h5")


def png(path, a):
    """An 8-bit greyscale PNG, written with zlib alone."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + row.tobytes() for row in a)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", a.shape[1], a.shape[0], 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def snapshot(folder):
    """Every file under folder: size, mtime and content hash."""
    s = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                s[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
    return s


def main():
    ref = os.path.join(WORK, "ref")
    shutil.rmtree(WORK, ignore_errors=True)
    rc, log = run(ref, 2, {"save_every": "1"})
    check(rc == 0, f"reference run (exit {rc})")
    if rc:
        print(log[-3000:])
        return 1

    # Every key at once, resumed with resume = auto into the reference's own folder.
    changed = {"seed": "7", "rec": REC23.replace("seed=9", "seed=10"), "network": "r18", "embedding_size": "32",
               "margin_list": "1.0,0.4,0.0", "scale": "32", "margin_grad": "analytic", "easy_margin": "1",
               "interclass_filtering_threshold": "0.1", "sample_rate": "0.25", "sample_shards": "2",
               "optimizer": "adamw", "fc_update": "dense", "gradient_acc": "2", "dropout": "0.1", "batch_size": "2"}
    labels = {"batch_size": "global batch (batch_size x workers): checkpoint 4, this run 2",
              "seed": "seed: checkpoint 2048, this run 7", "network": "network: checkpoint 'fmnist', this run 'r18'",
              "sample_rate": "sample_rate: checkpoint 0.5, this run 0.25", "scale": "scale: checkpoint 64, this run 32"}
    before = snapshot(ref)
    rc, log = run(ref, 2, dict(changed, max_steps="3"))
    named = [k for k in changed if labels.get(k, "\n  " + k + ": checkpoint ") in log]
    check(rc == 2 and "refusing to resume" in log and f"differs from the checkpoint's in {len(changed)} keys (" in log
          and len(named) == len(changed),
          f"all {len(changed)} changed keys refused at once (exit {rc}); named: {len(named)}, missing: "
          f"{[k for k in changed if k not in named]}")
    after = snapshot(ref)
    check(before == after, f"the refused resume left the output folder as it was ({len(before)} files; changed: "
          f"{sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))})")

    resume2 = {"resume": ckpt(ref, 2), "max_steps": "3"}
    rc, log = run(os.path.join(WORK, "partly"), 2, dict(resume2, seed="7", sample_rate="0.25", scale="32",
                                                      resume_allow_changes="seed,sample_rate"))
    check(rc == 2 and "in 1 key (scale;" in log and labels["scale"] in log and "seed:" not in log,
          f"allowed seed,sample_rate but scale also changed: refused naming scale only (exit {rc})")
    check(not os.path.exists(os.path.join(WORK, "partly")), "nothing was written for the refused resume")
    rc, log = run(os.path.join(WORK, "allowed"), 2, dict(resume2, seed="7", sample_rate="0.25",
                                                       resume_allow_changes="seed,sample_rate"))
    check(rc == 0 and "continuing despite these differences" in log and labels["seed"] in log
          and labels["sample_rate"] in log and os.path.exists(ckpt(os.path.join(WORK, "allowed"), 3)),
          f"allowed seed,sample_rate: trained on, the log lists both (exit {rc})")
    rc, log = run(os.path.join(WORK, "all"), 2, dict(resume2, network="r18", resume_allow_changes="all"))
    check(rc == 2 and "cannot be allowed" in log, f"resume_allow_changes = all does not let another network "
          f"through (exit {rc})")
    rc, log = run(os.path.join(WORK, "unknown"), 2, dict(resume2, resume_allow_changes="seed,lrr"))
    check(rc == 2 and "'lrr' is not a key a resume compares" in log, f"an unknown name in resume_allow_changes "
          f"is an error naming it (exit {rc})")

    rc, log = run(os.path.join(WORK, "free"), 4, dict(resume2, lr="0.01", num_epoch="3", max_steps="4", frequent="2",
                                                    save_every="2", batch_size="2", ps="2"))
    check(rc == 0 and "differences" not in log and os.path.exists(ckpt(os.path.join(WORK, "free"), 4)),
          f"lr, num_epoch, max_steps, frequent, save_every, output and the layout changed freely (exit {rc})")

    # Class growth: 23 -> 31 classes, 1 -> 2 servers.
    grown = os.path.join(WORK, "grown")
    rc, log = run(grown, 4, dict(resume2, rec=REC31, batch_size="2", ps="2"),
                  env={"ARCFACE_TEST_CHECKPOINT_AT_RESUME": "1"})
    check(rc == 0 and "class growth from 23 to 31 classes" in log and os.path.exists(ckpt(grown, 3)),
          f"resumed with 31 classes on 2 servers: the log says so and it trained on to step 3 (exit {rc})")
    fresh = os.path.join(WORK, "fresh31")
    rc2, _ = run(fresh, 2, {"rec": REC31, "lr": "0", "max_steps": "1"})
    if rc == 0 and rc2 == 0:
        with h5py.File(ckpt(ref, 2), "r") as a, h5py.File(ckpt(grown, 2), "r") as g, \
                h5py.File(ckpt(fresh, 1), "r") as f0:
            w, m = g["fc/weight"][()], g["fc/momentum"][()]
            check(w.shape == (31, 16) and np.array_equal(w[:23], a["fc/weight"][()])
                  and np.array_equal(m[:23], a["fc/momentum"][()]),
                  "grown: rows 0..22 of /fc/weight and /fc/momentum bit-identical to the checkpoint")
            d = np.abs(w[23:] - f0["fc/weight"][23:]).max()
            check(np.array_equal(w[23:], f0["fc/weight"][23:]) and not m[23:].any(),
                  f"grown: rows 23..30 equal a fresh run's initial weights (max difference {d}) with zero momentum")
            bb = [k for k in a["backbone"] if not np.array_equal(a["backbone"][k][()], g["backbone"][k][()])]
            check(not bb and int(g.attrs["step"]) == 2, f"grown: backbone and step as in the checkpoint {bb}")
        with h5py.File(ckpt(grown, 3), "r") as g3:
            check(np.isfinite(g3["fc/weight"][()]).all(), "grown: the step after the growth is finite")
    else:
        check(False, f"growth runs failed (exit {rc}, fresh run exit {rc2})")
    # Dropping classes is named with every other difference, not instead of them.
    rc, log = run(os.path.join(WORK, "shrink"), 2, {"resume": ckpt(grown, 3), "max_steps": "4", "seed": "7",
                                                   "optimizer": "adamw", "fc_update": "dense"})
    keys = "num_classes, seed, rec, optimizer, fc_update"
    check(rc == 2 and "may add classes but never drop them" in log and f"in 5 keys ({keys};" in log
          and "num_classes: checkpoint 31, this run 23" in log and labels["seed"] in log,
          f"31 -> 23 classes with seed, optimizer and fc_update changed: refused naming all five (exit {rc}): "
          f"{[l for l in log.splitlines() if 'refusing' in l][:1]}")

    # Growth onto a dataset whose epoch ends before the checkpoint's position
    # (sample 8 of epoch 0; 4 images here): a new dataset starts its epoch at its
    # first sample, and the log says so (it used to fail in the loader, exit 1).
    small = os.path.join(WORK, "grown_small")
    rc, log = run(small, 2, dict(resume2, rec="synthetic:ids=2,per_id=2,size=28,channels=1,seed=9", num_classes="24",
                                 num_epoch="10"))
    check(rc == 0 and "epoch 0 starts at its first sample, not at the checkpoint's sample 8" in log
          and os.path.exists(ckpt(small, 3)), f"growth onto a 4-image dataset from sample 8: trained on from the new "
          f"dataset's first sample (exit {rc}) {[l for l in log.splitlines() if 'error' in l][:1]}")

    # The same rec, but the files behind it changed and no longer reach the
    # checkpoint's position: a start-up refusal naming the dataset, its image
    # count and the position (it used to fail in the loader after start-up).
    root = os.path.join(WORK, "faces")
    for i in range(23):
        os.makedirs(os.path.join(root, "id%02d" % i))
        for k in range(4):
            png(os.path.join(root, "id%02d" % i, "%d.png" % k), np.random.default_rng(i * 4 + k)
                .integers(0, 256, (28, 28), dtype=np.uint8))
    folder_run = os.path.join(WORK, "folder")
    rc, log = run(folder_run, 2, {"rec": root})
    for i in range(1, 23):
        shutil.rmtree(os.path.join(root, "id%02d" % i))
    if rc == 0:
        rc, log = run(folder_run, 2, {"rec": root, "num_classes": "23", "max_steps": "3"})
        err = [l for l in log.splitlines() if "error" in l]
        check(rc == 2 and any("stopped at sample 8 of epoch 0" in l and "now holds 4 images" in l and root in l
                              for l in err), f"the folder behind rec shrank to 4 images under the checkpoint's "
              f"sample 8: refused at start-up naming both (exit {rc}): {err[:1]}")
    else:
        check(False, f"the image-folder run failed (exit {rc}): {log[-500:]}")

    # Format 1: fc_adam_t was written as 0 when servers held the fc.
    adam = os.path.join(WORK, "adamw")
    rc, log = run(adam, 2, {"optimizer": "adamw", "fc_update": "dense", "lr": "0.002"})
    old = os.path.join(WORK, "format1.h5")
    if rc == 0:
        shutil.copy(ckpt(adam, 2), old)
        with h5py.File(old, "r+") as f:
            f.attrs["format_version"] = np.int64(1)
            f.attrs["fc_adam_t"] = np.int64(0)
            # Format 1 predates the checksums (ckpt/verify.c): a real one has none.
            for k in ("checksum", "datasets", "attributes_crc32"):
                if k in f.attrs:
                    del f.attrs[k]
        out = os.path.join(WORK, "adamw_from_format1")
        rc, log = run(out, 2, {"optimizer": "adamw", "fc_update": "dense", "lr": "0.002", "resume": old,
                               "max_steps": "2"}, env={"ARCFACE_TEST_CHECKPOINT_AT_RESUME": "1"})
        t = None
        if rc == 0:
            with h5py.File(ckpt(out, 2), "r") as f:
                t = int(f.attrs["fc_adam_t"])
        check(rc == 0 and t == 2, f"a format-1 AdamW checkpoint resumes with fc_adam_t = {t} (expected 2, exit {rc})")
    else:
        check(False, f"AdamW run failed (exit {rc})")

    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
