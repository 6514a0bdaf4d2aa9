"""arcface-embed against PyTorch, weights going from PyTorch to us.

For each architecture: a reference module with PyTorch's own initialisation
and randomised batch-norm statistics is exported state_dict-key by key to
/backbone of an HDF5 file (as a PyTorch user would); arcface-embed runs it in
eval mode over a few images (in batches of 2, so the last batch is partial)
and its embeddings are compared with the module's. Then models with a
missing key, a wrong shape and an extra key must be refused with the key
named.

usage: torch_embed.py EMBED_EXE WORKDIR [--tol 1e-4]
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arcface_ref  # noqa: E402


def export(sd, path, drop=None, reshape=None, extra=None):
    with h5py.File(path, "w") as f:
        for k, v in sd.items():
            if k == drop:
                continue
            a = v.detach().numpy()
            if k == reshape:
                a = np.zeros((a.shape[0] + 1,) + a.shape[1:], a.dtype)
            f["backbone/" + k] = a
        if extra:
            f["backbone/" + extra] = np.zeros(3, np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    torch.manual_seed(0)
    fails = 0
    for arch, hw, c, d in (("fmnist", 28, 1, 128), ("r18", 112, 3, 512), ("mbf", 112, 3, 256)):
        model = arcface_ref.build(arch, d)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name.endswith("running_mean"):
                    buf.normal_(0, 0.1)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 1.5)
            for name, p in model.named_parameters():
                if p.dim() == 1 and name.endswith("weight"):
                    p.normal_(0.9, 0.1)
                elif p.dim() == 1 and name.endswith("bias"):
                    p.normal_(0, 0.1)
        model.eval()
        mpath = os.path.join(a.workdir, "embed_%s_model.h5" % arch)
        ipath = os.path.join(a.workdir, "embed_%s_images.h5" % arch)
        opath = os.path.join(a.workdir, "embed_%s_out.h5" % arch)
        export(model.state_dict(), mpath)
        x = torch.randn(5, c, hw, hw)
        with h5py.File(ipath, "w") as f:
            f["images"] = x.numpy()
        with torch.no_grad():
            ref = model(x).numpy()
        cmd = [a.exe, "--arch", arch, "--model", mpath, "--input", ipath, "--output", opath,
               "--embedding", str(d), "--batch", "2", "--threads", "2"]
        subprocess.run(cmd, check=True)
        with h5py.File(opath, "r") as f:
            ours = np.array(f["embeddings"])
        e = float(np.abs(ours - ref).max() / np.abs(ref).max()) if ours.shape == ref.shape else float("inf")
        ok = e <= a.tol
        fails += not ok
        print("%-6s 5 images %dx%dx%d -> %d: relative error %.3g (tolerance %.0e) %s" % (
            arch, c, hw, hw, d, e, a.tol, "ok" if ok else "FAIL"))
        # refusals, each naming the key
        keys = list(model.state_dict().keys())
        for what, kw, key in (("missing key", {"drop": keys[3]}, keys[3]),
                              ("wrong shape", {"reshape": keys[0]}, keys[0]),
                              ("extra key", {"extra": "head.weight"}, "head.weight")):
            bad = os.path.join(a.workdir, "embed_%s_bad.h5" % arch)
            export(model.state_dict(), bad, **kw)
            cmd[4] = bad
            r = subprocess.run(cmd, capture_output=True, text=True)
            ok = r.returncode != 0 and ("'%s'" % key) in r.stderr
            fails += not ok
            print("  %-12s refused, naming '%s': %s   [%s]" % (what, key, "ok" if ok else "FAIL", r.stderr.strip()))
            cmd[4] = mpath
    if fails:
        print("FAIL")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
