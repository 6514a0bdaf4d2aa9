"""arcface-loss on bad files: each must exit non-zero with a message that names
the file and the field at fault, and must not leave an output file behind.
usage: loss_bad_input.py ARCFACE_LOSS_BINARY WORKDIR"""
import os
import subprocess
import sys

import h5py
import numpy as np


def good(f, B=3, C=4, D=5):
    f["features"] = np.ones((B, D), np.float32)
    f["weight"] = np.arange(C * D, dtype=np.float32).reshape(C, D)
    f["labels"] = np.array([0, 1, 3][:B], np.int64)
    for a, v in (("s", 64.0), ("m1", 1.0), ("m2", 0.5), ("m3", 0.0)):
        f.attrs[a] = v


def case_missing(f):
    good(f)
    del f["weight"]


def case_rank(f):
    good(f)
    del f["features"]
    f["features"] = np.ones((3, 5, 1), np.float32)


def case_dtype(f):
    good(f)
    del f["labels"]
    f["labels"] = np.array([0.0, 1.0, 2.0], np.float32)


def case_label_range(f):
    good(f)
    f["labels"][1] = 4


def case_label_negative(f):
    good(f)
    f["labels"][2] = -2


def case_dim(f):
    good(f)
    del f["weight"]
    f["weight"] = np.ones((4, 6), np.float32)


def case_count(f):
    good(f)
    del f["labels"]
    f["labels"] = np.array([0, 1], np.int64)


def case_attr(f):
    good(f)
    del f.attrs["m2"]


def case_mode(f):
    good(f)
    f.attrs["mode"] = "sideways"


def case_margin(f):
    good(f)
    f.attrs["m1"] = 0.5


CASES = [  # (name, builder, words the message must contain)
    ("missing dataset", case_missing, ["'weight'", "missing"]),
    ("wrong rank", case_rank, ["'features'", "rank 3", "expected 2"]),
    ("wrong dtype", case_dtype, ["'labels'", "integer"]),
    ("label out of range", case_label_range, ["labels[1]", "4", "[0, 4)"]),
    ("label below -1", case_label_negative, ["labels[2]", "-2"]),
    ("D mismatch", case_dim, ["D = 5", "D = 6"]),
    ("label count", case_count, ["2 labels", "3 feature rows"]),
    ("missing attribute", case_attr, ["'m2'"]),
    ("bad mode", case_mode, ["'sideways'", "analytic"]),
    ("bad margin", case_margin, ["m1", ">= 1"]),
]


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failed = 0
    for name, build, words in CASES + [("not an HDF5 file", None, ["cannot open"])]:
        fin, fout = os.path.join(work, "in.h5"), os.path.join(work, "out.h5")
        for p in (fin, fout):
            if os.path.exists(p):
                os.remove(p)
        if build:
            with h5py.File(fin, "w") as f:
                build(f)
        else:
            open(fin, "w").write("not hdf5\n")
        r = subprocess.run([binary, fin, fout], capture_output=True, text=True)
        msg = r.stderr.strip()
        ok = r.returncode != 0 and fin in msg and all(w in msg for w in words) and not os.path.exists(fout)
        failed += not ok
        print(f"{name:20s} exit {r.returncode} {'ok' if ok else 'FAIL'}: {msg}")
    # and the good file works
    with h5py.File(fin, "w") as f:
        good(f)
    r = subprocess.run([binary, fin, fout], capture_output=True, text=True)
    ok = r.returncode == 0 and os.path.exists(fout)
    failed += not ok
    print(f"{'good file':20s} exit {r.returncode} {'ok' if ok else 'FAIL'}")
    n = len(CASES) + 2
    print(f"{n - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
