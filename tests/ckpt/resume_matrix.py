"""Exact resume for every optimizer combination, and the state registry listed.

For each cell of
    optimizer / fc_update:  sgd + sparse, sgd + dense, adamw + dense,
                            adamw + sparse (lazy AdamW: sampled rows only, the
                            bias correction counting optimizer steps)
    gradient_acc:           1, 3
    dropout:                0, 0.2
    layout (workers+servers): 1+1, 2+2 (same global batch)
an uninterrupted run of N optimizer steps that also checkpoints at step K is the
reference; a second job resumes from that step-K file in a fresh output folder
and runs to N. Checked bit for bit with h5py:
  - round trip: the resumed job checkpoints the state it just loaded, before any
    step (ARCFACE_TEST_CHECKPOINT_AT_RESUME=1): equal to the step-K file in every
    dataset and attribute, so every registered item is restored (one registered
    but not restored, or re-initialised after loading, differs);
  - the final step-N checkpoints: every dataset (floats, integers, the stored
    configuration) and every attribute equal; state that changes but is not
    registered (lost at the resume) makes them differ;
  - the losses of steps K+1..N in metrics.csv equal as printed (9 digits);
  - the registry as listed by every rank (ARCFACE_LIST_STATE=1): each item is in
    the checkpoint, and everything in the checkpoint is a registered item or
    metadata.
And an AdamW checkpoint resumed with the other fc_update (dense -> sparse and
back: the moments and fc_adam_t fit both) is refused as any changed run is:
exit 2 naming fc_update, nothing written.
usage: resume_matrix.py ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR [FILTER]"""
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

BIN, MPIRUN, WORK = sys.argv[1], sys.argv[2].split("|"), sys.argv[3]
FILTER = sys.argv[4] if len(sys.argv) > 4 else ""
N, K, GLOBAL = 3, 2, 4
COMMON = ["--network", "fmnist", "--embedding_size", "16", "--num_classes", "23", "--frequent", "1",
          "--loader_threads", "1", "--threads", "1", "--keep_checkpoints", "10", "--sample_rate", "0.5",
          "--num_epoch", "2", "--warmup_epoch", "1", "--max_steps", str(N),
          "--rec", "synthetic:ids=23,per_id=4,size=28,channels=1,seed=9"]
# Written by ckpt/ itself from the configuration, not by an owner.
METADATA = {"format_version", "num_classes", "embedding_size", "network", "num_workers", "num_servers", "seed",
            "config",
            # the checksums of the file itself (ckpt/verify.c)
            "checksum", "datasets", "attributes_crc32"}


def run(out, W, P, extra, env=None):
    shutil.rmtree(out, ignore_errors=True)
    cmd = MPIRUN + ["-np", str(W + P), BIN] + COMMON + ["--batch_size", str(GLOBAL // W), "--ps", str(P),
                                                       "--output", out] + extra
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))
    return r.returncode, r.stdout + r.stderr


def ckpt(out, step):
    return os.path.join(out, "checkpoints", f"ckpt_{step:08d}.h5")


def contents(path):
    """Every dataset (any dtype) and every attribute (root and per object), by name."""
    t = {}
    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            t["@" + k] = np.asarray(v)

        def visit(name, o):
            for k, v in o.attrs.items():
                t[name + "@" + k] = np.asarray(v)
            if isinstance(o, h5py.Dataset):
                t[name] = o[()]
        f.visititems(visit)
    return t


def differences(a, b):
    missing = [p for p in (a, b) if not os.path.exists(p)]
    if missing:
        return [f"(no file {p})" for p in missing], 0
    ta, tb = contents(a), contents(b)
    bad = sorted(k for k in set(ta) | set(tb)
                 if k not in ta or k not in tb or ta[k].dtype != tb[k].dtype or not np.array_equal(ta[k], tb[k]))
    return bad, len(ta)


def losses(out):
    rows = {}
    with open(os.path.join(out, "metrics.csv")) as f:
        head = f.readline().strip().split(",")
        for line in f:
            r = dict(zip(head, line.strip().split(",")))
            rows[int(r["step"])] = r["step_loss"]
    return rows


def registry(log):
    """{name: kind} of every item any rank listed."""
    items = {}
    for m in re.finditer(r"^rank \d+: state (\w+) \w+ (\S+) owner=", log, re.M):
        items[m.group(2).lstrip("/")] = m.group(1)
    return items


def cell(opt, fc, acc, drop, W, P):
    name = f"{opt}_{fc}_acc{acc}_drop{drop}_{W}+{P}"
    extra = ["--optimizer", opt, "--fc_update", fc, "--gradient_acc", str(acc), "--dropout", str(drop),
             "--lr", "0.05" if opt == "sgd" else "0.002"]
    ref, res = os.path.join(WORK, name, "ref"), os.path.join(WORK, name, "resumed")
    notes, ok = [], True
    rc, log = run(ref, W, P, extra + ["--save_every", str(K)])
    if rc:
        return name, False, [f"reference run failed (exit {rc}):\n{log[-2000:]}"]
    # Each rank writes its registry to a file of its own: on stdout, mpirun may
    # interleave one rank's line with another's.
    listing = os.path.join(WORK, name, "state")
    shutil.rmtree(listing, ignore_errors=True)
    os.makedirs(listing)
    rc, log = run(res, W, P, extra + ["--resume", ckpt(ref, K)],
                  env={"ARCFACE_TEST_CHECKPOINT_AT_RESUME": "1", "ARCFACE_LIST_STATE": listing})
    if rc:
        return name, False, [f"resumed run failed (exit {rc}):\n{log[-2000:]}"]
    bad, n = differences(ckpt(res, K), ckpt(ref, K))
    ok &= not bad
    notes.append(f"round trip at step {K}: {n} datasets and attributes, differing: {bad}")
    bad, n = differences(ckpt(res, N), ckpt(ref, N))
    ok &= not bad
    notes.append(f"final step {N}: {n} datasets and attributes, differing: {bad}")
    la, lb = losses(ref), losses(res)
    lbad = [s for s in range(K + 1, N + 1) if la.get(s) != lb.get(s) or la.get(s) is None]
    ok &= not lbad
    notes.append(f"losses of steps {K + 1}..{N}: differing at {lbad}")
    reg = registry("".join(open(os.path.join(listing, n)).read() for n in sorted(os.listdir(listing))))
    ok &= len(os.listdir(listing)) == W + P
    notes.append(f"registry listings: {len(os.listdir(listing))} of {W + P} ranks")
    have = contents(ckpt(res, N)) if os.path.exists(ckpt(res, N)) else {}
    names = {k.lstrip("@") for k in have if "@" not in k[1:]}
    missing = sorted(k for k in reg if k not in names)
    unowned = sorted(k for k in names if k not in reg and k not in METADATA)
    ok &= bool(reg) and not missing and not unowned
    notes.append(f"registry: {len(reg)} items; registered but not in the checkpoint: {missing[:6]}; in the "
                 f"checkpoint but registered by nobody: {len(unowned)} {unowned[:6]}")
    if opt == "adamw" and have:
        t = have
        got = int(t["@fc_adam_t"]) if "@fc_adam_t" in t else None
        ok &= got == N
        notes.append(f"fc_adam_t = {got} after {N} steps (expected {N})")
    return name, ok, notes


def changed_fc_update(fc, other):
    """Resumes the adamw + fc cell's step-K checkpoint with fc_update = other."""
    src = ckpt(os.path.join(WORK, f"adamw_{fc}_acc1_drop0_1+1", "ref"), K)
    what = f"adamw checkpoint with fc_update = {fc} resumed with {other}"
    if not os.path.exists(src):
        return what, True, ["skipped: its cell was filtered out"]
    out = os.path.join(WORK, f"adamw_{fc}_to_{other}")
    rc, log = run(out, 1, 1, ["--optimizer", "adamw", "--fc_update", other, "--gradient_acc", "1", "--dropout", "0",
                              "--lr", "0.002", "--resume", src])
    written = os.path.exists(out)
    named = "fc_update" in log and f"'{fc}'" in log and f"'{other}'" in log
    return what, rc == 2 and named and not written, [
        f"exit {rc} (expected 2), fc_update named with both values: {named}, output folder written: {written}: "
        f"{[l for l in log.splitlines() if 'fc_update' in l][:1]}"]


def main():
    cells = [(o, f, a, d, W, P) for (o, f) in (("sgd", "sparse"), ("sgd", "dense"), ("adamw", "dense"),
                                               ("adamw", "sparse"))
             for a in (1, 3) for d in (0, 0.2) for (W, P) in ((1, 1), (2, 2))]
    cells = [c for c in cells if FILTER in "_".join(map(str, c))]
    # Two jobs at a time: the 1+1 ones use a core each; the 2+2 ones mostly wait on each other.
    failures = 0
    checks = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        for jobs in ([lambda c=c: cell(*c) for c in cells],
                     [lambda: changed_fc_update("dense", "sparse"), lambda: changed_fc_update("sparse", "dense")]):
            for name, ok, notes in ex.map(lambda j: j(), jobs):
                checks += 1
                failures += not ok
                print(("ok   " if ok else "FAIL ") + name)
                for n in notes:
                    print("       " + n)
                sys.stdout.flush()
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
