"""SGD (with clip_grad_norm_ at 5) and AdamW against torch.optim, step by step.

And the fc class centres as the default configuration trains them: a
parameter-server shard, each step pushed the gradients of a different sampled
subset of classes, against arcface_torch's PartialFC_V2, whose whole weight is
one torch Parameter indexed by the sampled classes (weight[index] in forward),
stepped by torch.optim.SGD (momentum 0.9, weight decay 5e-4; no clipping, which
arcface_torch applies to the backbone only) or AdamW: momentum and weight decay
move the rows nobody sampled too.

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
    w0 = np.array(f["fc_w0"]).reshape(f["fc_sgd"].shape[1:])
    ids, fg = np.array(f["fc_ids"]), np.array(f["fc_g"])
    for name in ("sgd", "adamw"):
        weight = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        if name == "sgd":
            opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.AdamW([weight], lr=1e-3, weight_decay=5e-4)
        errs = []
        for s in range(ids.shape[0]):
            index = torch.from_numpy(ids[s])
            # d(sum(sub * g)) / d sub = g: the pushed gradient reaches weight through its index
            (weight[index] * torch.from_numpy(fg[s])).sum().backward()
            opt.step()
            opt.zero_grad()
            ref = weight.detach().numpy().copy()
            ours = np.array(f["fc_" + name][s])
            errs.append(float(np.abs(ours - ref).max() / np.abs(ref).max()))
            if s == 1:
                # rows sampled in neither step 0 nor 1: moved by momentum and decay alone
                idle = np.setdiff1d(np.arange(w0.shape[0]), np.concatenate([ids[0], ids[1]]))
                moved = (float(np.abs(ref[idle] - w0[idle]).max()), float(np.abs(ours[idle] - w0[idle]).max()))
        key = "fc " + name
        worst[key] = max(errs)
        print("%-9s %d steps, %d of %d classes sampled a step: worst relative error %.3g (tolerance %.0e); after "
              "2 steps the %d rows sampled in neither moved %.3g in PyTorch, %.3g here" % (
                  key, ids.shape[0], ids.shape[1], w0.shape[0], worst[key], a.tol, len(idle), moved[0], moved[1]))
    if max(worst.values()) > a.tol:
        print("FAIL")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
