"""Checks two arcface-cpu checkpoints with h5py, independently of the C reader.

  same_checkpoint.py A.h5 B.h5
      every dataset (any dtype) and every attribute of the two files must be equal
      bit for bit, and both files must hold the same names: a resumed run against an
      uninterrupted one.
  same_checkpoint.py --grown OLD.h5 NEW.h5
      NEW continues OLD with more classes: its num_classes attribute and /fc/weight
      rows are larger, its step is later, and every array in it is finite.
Prints what it compared and each difference; exit 0 when the check holds, 1 if not.
"""
import sys

import h5py
import numpy as np


def items(path):
    """{name: value} for every dataset ('/x') and attribute ('/x@a') in the file."""
    out = {}
    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            out["/@" + k] = v

        def visit(name, obj):
            for k, v in obj.attrs.items():
                out["/" + name + "@" + k] = v
            if isinstance(obj, h5py.Dataset):
                out["/" + name] = obj[()]
        f.visititems(visit)
    return out


def equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":  # bit for bit, NaN included
        return a.tobytes() == b.tobytes()
    return np.array_equal(a, b)


def same(pa, pb):
    a, b = items(pa), items(pb)
    only = sorted(set(a) ^ set(b))
    bad = sorted(k for k in set(a) & set(b) if not equal(a[k], b[k]))
    n_el = sum(np.asarray(v).size for v in a.values())
    print(f"same_checkpoint: {len(a)} datasets and attributes ({n_el} values) compared bit for bit; "
          f"{len(bad)} differ, {len(only)} in one file only")
    for k in only:
        print(f"  only in {'the first' if k in a else 'the second'} file: {k}")
    for k in bad:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape == y.shape and x.dtype.kind in "fiu" and y.dtype.kind in "fiu":
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            print(f"  differs: {k} shape {x.shape}, {int(np.count_nonzero(d))} values, max |a-b| {d.max():.3g}")
        else:
            print(f"  differs: {k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
    return not bad and not only


def grown(po, pn):
    o, n = items(po), items(pn)
    ok = True

    def check(cond, what):
        nonlocal ok
        print(f"  {'ok' if cond else 'FAIL'}: {what}")
        ok = ok and bool(cond)
    co, cn = int(o["/@num_classes"]), int(n["/@num_classes"])
    check(cn > co, f"num_classes {co} -> {cn}")
    check(n["/fc/weight"].shape[0] == cn and o["/fc/weight"].shape[0] == co,
          f"/fc/weight rows {o['/fc/weight'].shape[0]} -> {n['/fc/weight'].shape[0]}")
    check(int(n["/@step"]) > int(o["/@step"]), f"step {int(o['/@step'])} -> {int(n['/@step'])}")
    bad = [k for k, v in n.items() if np.asarray(v).dtype.kind == "f" and not np.all(np.isfinite(v))]
    check(not bad, f"every float array finite{'' if not bad else ': not ' + ', '.join(bad)}")
    return ok


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "--grown":
        return 0 if grown(args[1], args[2]) else 1
    if len(args) == 2:
        return 0 if same(args[0], args[1]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
