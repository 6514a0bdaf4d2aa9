"""SGD (with clip_grad_norm_ at 5) and AdamW against torch.optim, step by step.

usage: torch_optim.py DUMP_EXE WORKDIR [--tol 1e-6]
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=1e-6)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, "torch_optim.h5")
    subprocess.run([a.exe, path], check=True)
    f = h5py.File(path, "r")
    g = np.array(f["g"])
    worst = {}
    for name in ("sgd", "adamw"):
        p = torch.nn.Parameter(torch.from_numpy(np.array(f["w0"])))
        if name == "sgd":
            opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
        errs = []
        for s in range(g.shape[0]):
            p.grad = torch.from_numpy(g[s].copy())
            if name == "sgd":
                n = float(torch.nn.utils.clip_grad_norm_([p], max_norm=5.0))
                errs.append(abs(n - float(f["norms"][s])) / n)
            opt.step()
            ref = p.detach().numpy()
            ours = np.array(f[name][s])
            errs.append(float(np.abs(ours - ref).max() / np.abs(ref).max()))
        worst[name] = max(errs)
        print("%-6s %d steps: worst relative error %.3g (tolerance %.0e)" % (name, g.shape[0], worst[name], a.tol))
    if max(worst.values()) > a.tol:
        print("FAIL")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
