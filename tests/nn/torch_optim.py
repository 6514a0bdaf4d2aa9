"""SGD (with clip_grad_norm_ at 5) and AdamW against torch.optim, step by step.

And the fc class centres as the default configuration trains them: a
parameter-server shard, each step pushed the gradients of a different sampled
subset of classes, against arcface_torch's PartialFC_V2, whose whole weight is
one torch Parameter indexed by the sampled classes (weight[index] in forward),
stepped by torch.optim.SGD (momentum 0.9, weight decay 5e-4; no clipping, which
arcface_torch applies to the backbone only) or AdamW: momentum and weight decay
move the rows nobody sampled too.

And lazy AdamW (optimizer = adamw, fc_update = sparse), which arcface_torch
does not have, against its definition here: torch.optim.SparseAdam on the
sparse gradient of the sampled rows (state['step'] counts optimizer steps, so
the bias correction is global), with AdamW's decoupled decay w[rows] *= 1 - lr
wd applied to those rows just before each step. Rows nobody sampled keep their
weights and moments. The schedule holds a row never sampled and a row sampled
at steps 0 and 4 only; both the server's direct path (gradient_acc 1) and its
accumulator (gradient_acc 2) are checked, weights and both moments.

usage: torch_optim.py DUMP_EXE WORKDIR [--tol 1e-6]
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch


def lazy_adamw(f, tol, worst):
    ids, g = np.array(f["sadam_ids"]), np.array(f["sadam_g"])
    lr, wd = float(f["sadam_lr"][0]), float(f["sadam_wd"][0])
    w0 = np.array(f["fc_w0"]).reshape(f["sadam1_w"].shape[1:])
    steps, C = ids.shape[0], w0.shape[0]
    # The schedule must hold what the test is about, or it proves nothing.
    sampled = [set(ids[s].tolist()) for s in range(steps)]
    never = [c for c in range(C) if not any(c in x for x in sampled)]
    gap = [c for c in range(C) if any(c in sampled[s] and c not in sampled[s - 1] and c not in sampled[s - 2]
                                      and any(c in sampled[q] for q in range(s - 2)) for s in range(3, steps))]
    if 1 not in never or [s for s in range(steps) if 0 in sampled[s]] != [0, 4] or len(gap) < 2:
        print("FAIL: the lazy AdamW schedule lacks a row never sampled, row 0 at steps 0 and 4, or rows back after "
              "a gap: never %s, back after >= 2 idle steps %s" % (never, gap))
        worst["lazy adamw schedule"] = float("inf")
        return
    for path in (1, 2):
        weight = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        opt = torch.optim.SparseAdam([weight], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        errs = {"w": [], "m": [], "v": []}
        for s in range(steps):
            rows = torch.from_numpy(ids[s])
            with torch.no_grad():
                weight[rows] *= 1 - lr * wd
            weight.grad = torch.sparse_coo_tensor(rows[None, :], torch.from_numpy(g[s]), w0.shape)
            opt.step()
            st = opt.state[weight]
            for key, ref in (("w", weight), ("m", st["exp_avg"]), ("v", st["exp_avg_sq"])):
                ref = ref.detach().numpy()
                ours = np.array(f["sadam%d_%s" % (path, key)][s])
                errs[key].append(float(np.abs(ours - ref).max() / np.abs(ref).max()))
        ref = weight.detach().numpy()
        ours = np.array(f["sadam%d_w" % path][steps - 1])
        for key in errs:
            worst["lazy adamw %d %s" % (path, key)] = max(errs[key])
        print("lazy adamw (gradient_acc %d, lr %g, wd %g), %d steps of %d of %d rows vs SparseAdam + decoupled decay: "
              "worst relative error weights %.3g, exp_avg %.3g, exp_avg_sq %.3g (tolerance %.0e); row 1 (never "
              "sampled) moved %.3g in PyTorch, %.3g here; row 0 (steps 0 and 4) moved %.4g / %.4g; %d rows back after "
              ">= 2 idle steps" % (
                  path, lr, wd, steps, ids.shape[1], C, max(errs["w"]), max(errs["m"]), max(errs["v"]), tol,
                  float(np.abs(ref[1] - w0[1]).max()), float(np.abs(ours[1] - w0[1]).max()),
                  float(np.abs(ref[0] - w0[0]).max()), float(np.abs(ours[0] - w0[0]).max()), len(gap)))


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
    lazy_adamw(f, a.tol, worst)
    if max(worst.values()) > a.tol:
        print("FAIL")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
