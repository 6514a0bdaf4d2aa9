"""Durable, verified checkpoints and the bad input around them, with real runs
(1 worker + 1 server under mpirun unless said otherwise; 4-step runs of the
fmnist network on synthetic identities, a checkpoint every 2 steps).

  checksums      every dataset's crc32 attribute equals zlib.crc32 of the array
                 h5py reads, and attributes_crc32 that of the root attributes as
                 "name=value;" lines (zlib + h5py are the reference)
  damage         flipped bytes in /fc/weight and /fc/momentum, NaN in /fc/weight
                 under a recomputed checksum, step = -5, step changed to 3, a
                 truncated file: `--resume auto` skips the newest checkpoint
                 naming file and dataset (or attribute), sets it aside as .bad,
                 resumes from the older one and finishes; `--resume FILE` of a
                 damaged file is refused (flipped weight, step = -5); all
                 checkpoints damaged: refused, no fresh start, nothing deleted
                 or renamed, and refused again (exit 2) when started again;
                 only *.h5.bad files, or only a `latest` naming a missing file:
                 refused with exit 2, nothing written
  latest         a missing checkpoints/latest with checkpoints present resumes
                 from the newest instead of starting fresh and pruning
  metrics        after a fallback resume each step appears once in metrics.csv
  tmp            a leftover *.tmp in checkpoints/ is removed at start, saying so
  disk full      output on a tmpfs that holds one checkpoint but not two: the run
                 fails naming "No space left on device", leaves no .tmp, and the
                 step-2 checkpoint and `latest` are intact and verify (skips if
                 tmpfs cannot be mounted)
  non-finite     a NaN embedding (ARCFACE_FAULT 0:forward:2:nan) stops with exit 1 naming the step and
                 the quantity; no checkpoint holds a non-finite value
  bad input      --output under /proc or a file, 3 ranks: non-zero exit within
                 the timeout (it hung); a bad rec keeps the dataset's message;
                 --batch_size 2147483647 is refused naming batch_size; r2060
                 and vit_t are refused listing r18 ... r200 (and mbf, mbf_large)
  eval.sbatch    run with bash: the results land in <run>/eval; arcface-eval
                 failing after start (bad --embeddings) keeps results.csv
The disk-full case runs alone with a last argument `disk_full` (its own ctest,
which reports a skip where tmpfs cannot be mounted).
usage: durable.py BIN_DIR MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR SOURCE_DIR [disk_full]"""
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

try:
    import h5py
    import numpy as np
except ImportError as e:
    print(f"SKIP: reference tools missing ({e})")
    sys.exit(77)

BIN, MPIRUN, WORK, SRC = sys.argv[1], sys.argv[2].split("|"), sys.argv[3], sys.argv[4]
TRAIN = os.path.join(BIN, "arcface-train")
REC = "synthetic:ids=23,per_id=4,size=28,channels=1,seed=9"
COMMON = ["--network", "fmnist", "--embedding_size", "16", "--num_classes", "23", "--frequent", "1",
          "--loader_threads", "1", "--threads", "1", "--save_every", "2", "--keep_checkpoints", "10",
          "--sample_rate", "1.0", "--rec", REC, "--batch_size", "8"]
failures, checks = 0, 0


def check(cond, msg):
    global failures, checks
    checks += 1
    failures += not cond
    print(("ok   " if cond else "FAIL ") + msg, flush=True)


def run(out, steps=4, np_=2, ps=1, extra=(), timeout=120):
    cmd = MPIRUN + ["-np", str(np_), TRAIN] + COMMON + ["--max_steps", str(steps), "--ps", str(ps),
                                                         "--output", out] + list(extra)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout + r.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out_text = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        return "timeout", out_text, time.time() - t0


def ckpt(out, step):
    return os.path.join(out, "checkpoints", f"ckpt_{step:08d}.h5")


def lines(log, needle):
    return [l for l in log.splitlines() if needle in l]


def crc_report(path):
    """(bad datasets, attribute crc ok, non-finite datasets) by h5py + zlib alone."""
    bad, nonfinite = [], []
    with h5py.File(path, "r") as f:
        def visit(name, o):
            if isinstance(o, h5py.Dataset):
                a = np.ascontiguousarray(o[()])
                if "crc32" not in o.attrs or zlib.crc32(a.tobytes()) != int(o.attrs["crc32"]):
                    bad.append(name)
                if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                    nonfinite.append(name)
        f.visititems(visit)
        text = ""
        for k in sorted(f.attrs):
            if k == "attributes_crc32":
                continue
            v = f.attrs[k]
            v = v.decode() if isinstance(v, bytes) else str(int(v))
            text += f"{k}={v};"
        attr_ok = "attributes_crc32" in f.attrs and zlib.crc32(text.encode()) == int(f.attrs["attributes_crc32"])
    return bad, attr_ok, nonfinite


def fresh_copy(base, name):
    out = os.path.join(WORK, name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    return out


def metric_steps(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return [int(l.split(",")[0]) for l in f.read().splitlines()[1:] if l]


def damage_cases(base):
    def flip(path, name):
        with h5py.File(path, "r+") as f:
            a = f[name][()]
            b = a.view(np.uint32)
            b[3, 5] ^= 0x00400000  # one mantissa bit: a plausible value, the crc32 attribute kept
            f[name][...] = a

    def nan_recomputed(path):
        with h5py.File(path, "r+") as f:
            a = f["fc/weight"][()]
            a[7, 2] = np.nan
            f["fc/weight"][...] = a
            f["fc/weight"].attrs["crc32"] = zlib.crc32(a.tobytes())

    def set_attr(path, key, v):
        with h5py.File(path, "r+") as f:
            f.attrs[key] = np.int64(v)

    def truncate(path):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)

    cases = [("flip fc/weight", lambda p: flip(p, "fc/weight"), ["/fc/weight", "checksum"]),
             ("flip fc/momentum", lambda p: flip(p, "fc/momentum"), ["/fc/momentum", "checksum"]),
             ("NaN fc/weight", nan_recomputed, ["/fc/weight", "non-finite"]),
             ("step = -5", lambda p: set_attr(p, "step", -5), ["'step' is -5"]),
             ("step = 3", lambda p: set_attr(p, "step", 3), ["root attributes fail their checksum"]),
             ("truncated", truncate, ["ckpt_00000004.h5"])]
    for i, (what, hurt, needles) in enumerate(cases):
        out = fresh_copy(base, f"damage{i}")
        hurt(ckpt(out, 4))
        if i in (0, 3):
            # --resume FILE: refused, naming the file and what is wrong (two cases
            # suffice: the same verification runs as for auto).
            rc, log, _ = run(out, 6, extra=["--resume", ckpt(out, 4)])
            err = lines(log, "error")
            check(rc not in (0, "timeout") and
                  any("ckpt_00000004.h5" in l and all(n in l for n in needles) for l in err),
                  f"{what}: --resume FILE refused (rc {rc}): {err[:1]}")
        # --resume auto: skips it, saying why, and continues from step 2 to the end.
        rc, log, _ = run(out, 6)
        skip = lines(log, "skipping")
        check(rc == 0 and any(all(n in l for n in needles) for l in skip) and
              lines(log, "at optimizer step 2") and os.path.exists(ckpt(out, 4) + ".bad"),
              f"{what}: --resume auto falls back to step 2 (rc {rc}): {skip[:1]}")
        if i == 0:
            steps = metric_steps(out)
            check(steps == list(range(1, 7)), f"metrics.csv holds each step once after the fallback: {steps}")
            bad, attr_ok, nf = crc_report(ckpt(out, 6))
            check(not bad and attr_ok and not nf, f"the resumed run's step-6 checkpoint verifies with zlib ({bad})")


def main():
    os.makedirs(WORK, exist_ok=True)
    base = os.path.join(WORK, "base")
    shutil.rmtree(base, ignore_errors=True)
    rc, log, dt = run(base)
    check(rc == 0, f"base run: 4 steps, checkpoints at 2 and 4 (rc {rc}, {dt:.1f} s)")
    if rc != 0:
        print(log)
        return
    for s in (2, 4):
        bad, attr_ok, nf = crc_report(ckpt(base, s))
        check(not bad and attr_ok and not nf,
              f"step {s}: every dataset's crc32 and attributes_crc32 match zlib's (bad: {bad}, attrs ok: {attr_ok})")

    if MODE == "disk_full":
        disk_full(base)
        return
    damage_cases(base)

    out = fresh_copy(base, "all_bad")
    for s in (2, 4):
        with h5py.File(ckpt(out, s), "r+") as f:
            f.attrs["step"] = np.int64(-5)
    history = {n: open(os.path.join(out, n), "rb").read() for n in ("metrics.csv", "training.log")}
    rc, log, _ = run(out, 6)
    left = sorted(os.listdir(os.path.join(out, "checkpoints")))
    check(rc not in (0, "timeout") and lines(log, "none of the 2 checkpoints verifies") and
          not lines(log, "starting fresh") and len([n for n in left if n.startswith("ckpt_")]) == 2,
          f"every checkpoint damaged: refused, not started fresh, nothing deleted (rc {rc}, left {left})")
    # The same command again (what a requeue does) must refuse again: the first
    # refusal used to rename both to *.h5.bad and the second then started fresh.
    rc, log, _ = run(out, 6)
    left2 = sorted(os.listdir(os.path.join(out, "checkpoints")))
    kept = {n: open(os.path.join(out, n), "rb").read() == b for n, b in history.items()}
    check(rc == 2 and lines(log, "refusing to start fresh") and not lines(log, "starting fresh") and left2 == left
          and all(kept.values()), f"every checkpoint damaged, started again: refused again with exit 2, the folder "
          f"as it was (rc {rc}, left {left2}, metrics.csv / training.log kept: {kept})")
    # Set-aside files alone, and a `latest` naming a vanished file alone, are a
    # run's history too: exit 2 naming what was found and how to start over.
    for what in ("bad", "dangling"):
        out = fresh_copy(base, f"only_{what}")
        cdir = os.path.join(out, "checkpoints")
        for s in (2, 4):
            if what == "bad":
                os.rename(ckpt(out, s), ckpt(out, s) + ".bad")
            else:
                os.unlink(ckpt(out, s))
        if what == "bad":
            os.unlink(os.path.join(cdir, "latest"))
        before = sorted(os.listdir(cdir)), open(os.path.join(out, "metrics.csv"), "rb").read()
        rc, log, _ = run(out, 6)
        need = ("2 damaged checkpoints set aside" if what == "bad"
                else "`latest` naming ckpt_00000004.h5, which is missing")
        after = sorted(os.listdir(cdir)), open(os.path.join(out, "metrics.csv"), "rb").read()
        check(rc == 2 and lines(log, need) and lines(log, "--resume none") and before == after,
              f"only {'*.h5.bad files' if what == 'bad' else 'a dangling latest'}: refused with exit 2 naming it, "
              f"nothing written (rc {rc}): {lines(log, 'error')[:1]}")

    out = fresh_copy(base, "no_latest")
    os.unlink(os.path.join(out, "checkpoints", "latest"))
    rc, log, _ = run(out, 6, extra=["--keep_checkpoints", "1"])
    check(rc == 0 and lines(log, "at optimizer step 4") and not lines(log, "starting fresh"),
          f"missing `latest`: resumed from step 4, not a fresh start (rc {rc}): {lines(log, 'resume')[:2]}")
    check(metric_steps(out) == list(range(1, 7)), f"metrics.csv steps once each: {metric_steps(out)}")

    out = fresh_copy(base, "tmp_left")
    junk = ckpt(out, 5) + ".tmp"
    with open(junk, "wb") as f:
        f.write(b"\0" * 100000)
    rc, log, _ = run(out, 4)
    check(rc == 0 and not os.path.exists(junk) and lines(log, "removed") and lines(log, "ckpt_00000005.h5.tmp"),
          f"leftover .tmp removed at start, saying so: {lines(log, 'removed')[:1]}")

    non_finite()
    bad_input()
    eval_sbatch(base)


def disk_full(base):
    # 20000 classes make the fc rows (written collectively through MPI-IO) most of
    # the file, so the disk fills up inside the parallel write, not only in rank
    # 0's serial part.
    extra = ["--num_classes", "20000"]
    probe = os.path.join(WORK, "disk_probe")
    shutil.rmtree(probe, ignore_errors=True)
    rc, log, _ = run(probe, 2, extra=extra)
    if rc != 0:
        check(False, f"disk full: the probe run failed (rc {rc})")
        print(log)
        return
    size = os.path.getsize(ckpt(probe, 2))
    mnt = os.path.join(WORK, "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5) // 4096 * 4096}", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"SKIP disk full: cannot mount a tmpfs here ({r.stderr.strip()})")
        global skipped_disk
        skipped_disk = True
        return
    try:
        out = os.path.join(mnt, "run")
        rc, log, _ = run(out, 4, extra=extra)
        # Our own message, not HDF5's stack printed on the side.
        err = [l for l in lines(log, "error") if l.startswith("arcface-train:")]
        names = sorted(os.listdir(os.path.join(out, "checkpoints")))
        check(rc not in (0, "timeout") and any("No space left on device" in l for l in err),
              f"disk full: the error names it (rc {rc}, checkpoint {size / 1e6:.1f} MB, tmpfs 1.5x): {err[:1]}")
        check(not [n for n in names if n.endswith(".tmp")], f"disk full: no partial .tmp left: {names}")
        latest = open(os.path.join(out, "checkpoints", "latest")).read().strip()
        ok = os.path.exists(ckpt(out, 2)) and latest == "ckpt_00000002.h5"
        with h5py.File(ckpt(out, 2), "r") as f:
            ok = ok and int(f.attrs["step"]) == 2 and f["fc/weight"].shape == (20000, 16)
        check(ok, f"disk full: the step-2 checkpoint and `latest` ({latest}) are intact")
    finally:
        subprocess.run(["umount", mnt])


def non_finite():
    # lr = 1e30 or scale = 1e30, which made a run non-finite, are refused at start
    # now (tests/trainer/config_bounds.py); a NaN embedding injected on worker
    # rank 0 at step 2 (ARCFACE_FAULT ...:nan) stands for a run that diverges.
    for key, fault in (("loss", "0:forward:2:nan"),):
        out = os.path.join(WORK, f"nonfinite_{key}")
        shutil.rmtree(out, ignore_errors=True)
        os.environ["ARCFACE_FAULT"] = fault
        try:
            rc, log, _ = run(out, 4, extra=["--save_every", "1"])
        finally:
            del os.environ["ARCFACE_FAULT"]
        val = fault
        err = lines(log, "error")
        check(rc == 1 and any("not finite" in l and "step" in l for l in err) and not lines(log, "arcface-train: done"),
              f"{key} = {val}: exit 1 naming the step and the quantity (rc {rc}): {err[:1]}")
        cdir = os.path.join(out, "checkpoints")
        files = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
        nf = [n for n in files if n.endswith(".h5") and crc_report(os.path.join(cdir, n))[2]]
        check(not nf and not [n for n in files if n.endswith(".tmp")], f"{key} = {val}: no checkpoint of NaN state ({files})")


def bad_input():
    blocker = os.path.join(WORK, "a_file")
    open(blocker, "w").close()
    for what, out in (("under /proc", "/proc/arcface_durable_test"), ("a file", blocker)):
        rc, log, dt = run(out, 2, np_=3, ps=1, timeout=60)
        check(rc not in (0, "timeout") and lines(log, out), f"--output {what}, 3 ranks: exit {rc} in {dt:.1f} s, "
              f"naming it: {lines(log, 'error')[:1]}")
    rc, log, _ = run(os.path.join(WORK, "badrec"), 2, extra=["--rec", os.path.join(WORK, "missing.rec")])
    err = lines(log, "error")
    check(rc not in (0, "timeout") and any("missing.rec" in l for l in err) and not lines(log, "cannot be split"),
          f"a bad rec keeps the dataset's message: {err[:1]}")
    # The refusals of insightface networks not built here list every one that is.
    for net in ("r2060", "vit_t"):
        rc, log, _ = run(os.path.join(WORK, net), 2, extra=["--network", net])
        err = " ".join(lines(log, "error"))
        missing = [n for n in ("r18", "r34", "r50", "r100", "r200") + (("mbf", "mbf_large") if net == "vit_t" else ())
                   if re.search(r"\b%s\b" % n, err) is None]
        check(rc == 2 and not missing, f"--network {net}: refused (rc {rc}) listing every backbone (missing {missing})")
    rc, log, _ = run(os.path.join(WORK, "hugebatch"), 2, extra=["--batch_size", "2147483647"])
    err = lines(log, "error")
    check(rc not in (0, "timeout") and any("batch_size" in l for l in err) and not lines(log, "runtime error"),
          f"--batch_size 2147483647 refused naming batch_size (rc {rc}): {err[:1]}")


def eval_sbatch(base):
    # A model file in the run folder itself (an exported backbone, or a checkpoint
    # copied there) must give <run>/eval, not <run>/../eval outside the run.
    model = os.path.join(base, "model.h5")
    shutil.copy(ckpt(base, 4), model)
    for m in (model, ckpt(base, 4)):
        shutil.rmtree(os.path.join(base, "eval"), ignore_errors=True)
        env = dict(os.environ, BIN_DIR=BIN, MODEL=m, THREADS="1",
                   TARGETS="synthetic:ids=60,per_id=20,size=28,channels=1,seed=5")
        env.pop("OUT", None)
        r = subprocess.run(["bash", os.path.join(SRC, "jobs", "eval.sbatch")], capture_output=True, text=True,
                           env=env, cwd=WORK, timeout=120)
        want = os.path.join(base, "eval", "results.csv")
        check(r.returncode == 0 and os.path.exists(want), f"eval.sbatch, MODEL={os.path.relpath(m, WORK)}: writes {want} "
              f"(rc {r.returncode}) {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    # A failed evaluation keeps the previous results (it used to empty them at start).
    if os.path.exists(want):
        prev = open(want, "rb").read()
        r = subprocess.run([os.path.join(BIN, "arcface-eval"), "--model", model, "--threads", "1", "--target",
                            "synthetic:ids=60,per_id=20,size=28,channels=1,seed=5", "--results", want,
                            "--embeddings", os.path.join(WORK, "no_such_folder", "emb.h5")],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode != 0 and open(want, "rb").read() == prev and not os.path.exists(want + ".tmp")
              and "no_such_folder" in r.stderr, f"arcface-eval failing after start: rc {r.returncode}, the previous "
              f"results.csv kept ({len(prev)} bytes), no .tmp left: {r.stderr.strip().splitlines()[-1:]}")


skipped_disk = False
MODE = sys.argv[5] if len(sys.argv) > 5 else "all"
if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{checks} checks, {failures} failures, {time.time() - t0:.1f} s")
    sys.exit(1 if failures else (77 if skipped_disk else 0))
