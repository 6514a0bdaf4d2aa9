"""PyTorch reference for the margin-softmax core (run with Debian's /usr/bin/python3).

Generates random problems, runs `arcface-loss IN.h5 OUT.h5` on each and compares
the loss and both gradients with an independent float64 PyTorch implementation:
  * analytic mode: autograd through the combined margin cos(m1*theta + m2) - m3
    with the original ArcFace fallback past theta + m = pi;
  * arcface_torch mode: insightface arcface_torch's CombinedMarginLoss.forward
    (losses.py at commit 7fadd420) restated line by line: m1 = 1, m3 = 0 ->
    arccos/cos under no_grad (straight-through); m3 > 0 -> target - m3 alone
    (m1, m2 ignored); m1 != 1 with m3 = 0 -> it raises, so arcface-loss must
    refuse. easy_margin (not in that class; kept here as an extension) uses a
    detach formulation of the same branches.
Also asserted: in arcface_torch mode (1, 0.3, 0.2) gives exactly the loss and
gradients of (1, 0, 0.2), as insightface's does.
Relative error: |a - b| / max|b| per tensor. Exit status 1 on any failure.
usage: margin_torch_ref.py ARCFACE_LOSS_BINARY WORKDIR
"""
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

TOL = 1e-4
torch.set_default_dtype(torch.float64)


def combined_margin_loss(logits, labels, s, m1, m2, m3, t):
    """insightface arcface_torch losses.py CombinedMarginLoss.forward (commit 7fadd420), restated."""
    index_positive = torch.where(labels != -1)[0]
    if t > 0:
        with torch.no_grad():
            dirty = logits > t
            dirty = dirty.double()
            mask = torch.ones([index_positive.size(0), logits.size(1)])
            mask.scatter_(1, labels[index_positive].view(-1, 1), 0)
            dirty[index_positive] *= mask
            tensor_mul = 1 - dirty
        logits = tensor_mul * logits
    target_logit = logits[index_positive, labels[index_positive].view(-1)]
    if m1 == 1.0 and m3 == 0.0:
        with torch.no_grad():
            target_logit.arccos_()
            logits.arccos_()
            final_target_logit = target_logit + m2
            logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
            logits.cos_()
        logits = logits * s
    elif m3 > 0:
        final_target_logit = target_logit - m3
        logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
        logits = logits * s
    else:
        raise ValueError("insightface's CombinedMarginLoss raises for m1 != 1 with m3 = 0")
    return logits


class DistCE(torch.autograd.Function):
    """arcface_torch's DistCrossEntropyFunc on one rank, restated: the loss clamps
    p(target) at 1e-30, and the backward is (p - onehot) / B for every row."""

    @staticmethod
    def forward(ctx, logits, label):
        p = torch.softmax(logits, dim=1)
        idx = torch.where(label != -1)[0]
        pt = torch.zeros(logits.size(0))
        pt[idx] = p[idx, label[idx]]
        ctx.save_for_backward(p, label)
        return -(pt.clamp_min(1e-30).log()).mean()

    @staticmethod
    def backward(ctx, g):
        p, label = ctx.saved_tensors
        grad = p.clone()
        idx = torch.where(label != -1)[0]
        grad[idx, label[idx]] -= 1
        return grad / p.size(0) * g, None


def reference(x, w, y, s, m1, m2, m3, mode, easy, t):
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(y, dtype=torch.int64)
    cos = (F.normalize(x) @ F.normalize(w).T).clamp(-1, 1)
    if mode == "arcface_torch" and not easy:
        loss = DistCE.apply(combined_margin_loss(cos, y, s, m1, m2, m3, t), y)
        loss.backward()
        return loss.item(), x.grad.numpy(), w.grad.numpy()
    B, C = cos.shape
    idx = torch.where(y != -1)[0]
    if t > 0:
        with torch.no_grad():
            dirty = (cos > t).double()
            mask = torch.ones(idx.numel(), C)
            mask[torch.arange(idx.numel()), y[idx]] = 0
            dirty[idx] *= mask
        cos = cos * (1 - dirty)
    ct = cos[idx, y[idx]]
    if mode == "analytic":
        a = m1 * torch.acos(ct) + m2
        tgt = torch.cos(a) - m3
        tgt = torch.where(a > math.pi, ct - m3 - math.sin(math.pi - m2) * m2, tgt)
        if easy:
            tgt = torch.where(ct > 0, tgt, ct)
        logits = cos.index_put((idx, y[idx]), tgt)
    else:
        if m3 > 0:
            m1, m2 = 1.0, 0.0  # insightface's CosFace branch ignores them
        with torch.no_grad():
            a = m1 * torch.acos(ct) + m2
            tgt = torch.cos(a) - m3
            tgt = torch.where(ct > 0, tgt, ct)
            final = cos.index_put((idx, y[idx]), tgt)
        logits = cos + (final - cos).detach()
    loss = DistCE.apply(logits * s, y)
    loss.backward()
    return loss.item(), x.grad.numpy(), w.grad.numpy()


def make_case(rng, k):
    """Case k: a configuration cycling through the margin families and edge cases."""
    fams = [(64, 1.0, 0.5, 0.0), (64, 1.0, 0.0, 0.4), (64, 1.35, 0.0, 0.0), (30, 2.0, 0.0, 0.0),
            (64, 1.0, 0.3, 0.2), (32, 1.2, 0.2, 0.1), (8, 1.0, 0.5, 0.0), (16, 1.5, 0.1, 0.05)]
    s, m1, m2, m3 = fams[k % len(fams)]
    mode = "analytic" if (k // len(fams)) % 2 == 0 else "arcface_torch"
    B = int(rng.integers(2, 9))
    C = int(rng.integers(2, 40))
    D = int(rng.choice([3, 8, 32, 64]))
    easy, t, kind = 0, 0.0, "random"
    special = k % 7
    if special == 1:
        easy = 1
    elif special == 2:
        t = 0.15
    elif special == 3:
        B = 1
    elif special == 4:
        C = 1
    elif special == 5:
        kind = "near0"
    elif special == 6:
        kind = "nearpi"
    x = rng.standard_normal((B, D)).astype(np.float32)
    w = rng.standard_normal((C, D)).astype(np.float32) * rng.uniform(0.5, 3)
    y = rng.integers(0, C, size=B).astype(np.int64)
    if k % 5 == 4 and B > 1:
        y[rng.integers(0, B)] = -1  # a row whose class is not among these centres
    if kind in ("near0", "nearpi"):
        sign = 1 if kind == "near0" else -1
        for b in range(B):
            if y[b] < 0:
                continue
            # target angle between 0.02 and 0.15 rad from 0 (or from pi)
            u = x[b] / np.linalg.norm(x[b])
            v = rng.standard_normal(D)
            v -= v.dot(u) * u
            v /= np.linalg.norm(v)
            ang = rng.uniform(0.02, 0.15)
            w[y[b]] = (sign * math.cos(ang) * u + math.sin(ang) * v) * rng.uniform(0.5, 2)
    return dict(x=x, w=w, y=y, s=s, m1=m1, m2=m2, m3=m3, mode=mode, easy=easy, t=t, kind=kind)


def relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(b)), 1e-12)
    return float(np.max(np.abs(a - b)) / scale)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(20261128)
    n_cases, worst, failures = 48, (0.0, ""), 0
    for k in range(n_cases):
        c = make_case(rng, k)
        fin, fout = os.path.join(work, f"case{k}.h5"), os.path.join(work, f"case{k}.out.h5")
        with h5py.File(fin, "w") as f:
            f["features"], f["weight"], f["labels"] = c["x"], c["w"], c["y"]
            for a in ("s", "m1", "m2", "m3"):
                f.attrs[a] = float(c[a])
            f.attrs["mode"] = c["mode"]
            f.attrs["easy_margin"] = c["easy"]
            f.attrs["filter_threshold"] = c["t"]
            # The fc kernels stream the centres in blocks of rows: a quarter of
            # the cases in one block, the rest in blocks of 1, 3 or 7 rows.
            if k % 4:
                f.attrs["block_rows"] = min((1, 3, 7)[k % 4 - 1], c["w"].shape[0])
        r = subprocess.run([binary, fin, fout], capture_output=True, text=True)
        if c["mode"] == "arcface_torch" and c["m1"] != 1.0 and c["m3"] == 0.0:
            ok = r.returncode != 0 and "raises for m1 != 1 with m3 = 0" in r.stderr
            failures += not ok
            print(f"case {k:2d} arcface_torch m=({c['m1']:g},{c['m2']:g},{c['m3']:g}): refused as insightface raises: "
                  f"{'ok' if ok else 'FAIL (exit %d: %s)' % (r.returncode, r.stderr.strip()[-200:])}")
            continue
        if r.returncode != 0:
            print(f"case {k}: arcface-loss failed: {r.stderr.strip()}")
            failures += 1
            continue
        with h5py.File(fout, "r") as f:
            loss, gx, gw = float(f["loss"][()]), f["grad_features"][()], f["grad_weight"][()]
        rl, rgx, rgw = reference(c["x"], c["w"], c["y"], c["s"], c["m1"], c["m2"], c["m3"], c["mode"], c["easy"], c["t"])
        e = (abs(loss - rl) / max(abs(rl), 1e-12), relerr(gx, rgx), relerr(gw, rgw))
        desc = (f"case {k:2d} blk {(0, 1, 3, 7)[k % 4] or 'all'} {c['mode']:13s} s={c['s']:<4g} "
                f"m=({c['m1']:g},{c['m2']:g},{c['m3']:g}) "
                f"easy={c['easy']} t={c['t']:g} {c['kind']:6s} B={c['x'].shape[0]} C={c['w'].shape[0]} "
                f"D={c['x'].shape[1]}")
        ok = max(e) <= TOL
        failures += not ok
        print(f"{desc}: loss {loss:.6f} ref {rl:.6f} rel {e[0]:.2e} | dx {e[1]:.2e} | dw {e[2]:.2e} "
              f"{'ok' if ok else 'FAIL'}")
        if max(e) > worst[0]:
            worst = (max(e), desc)
    # (1, 0.3, 0.2) and (1, 0, 0.2) are the same loss in arcface_torch mode.
    c = make_case(rng, 1)
    outs = []
    for m2 in (0.3, 0.0):
        fin, fout = os.path.join(work, f"cosface_m2_{m2}.h5"), os.path.join(work, f"cosface_m2_{m2}.out.h5")
        with h5py.File(fin, "w") as f:
            f["features"], f["weight"], f["labels"] = c["x"], c["w"], c["y"]
            for a, v in (("s", 64.0), ("m1", 1.0), ("m2", m2), ("m3", 0.2)):
                f.attrs[a] = v
            f.attrs["mode"], f.attrs["easy_margin"], f.attrs["filter_threshold"] = "arcface_torch", 0, 0.0
        r = subprocess.run([binary, fin, fout], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"(1, {m2}, 0.2): arcface-loss failed: {r.stderr.strip()}")
            return 1
        with h5py.File(fout, "r") as f:
            outs.append((float(f["loss"][()]), f["grad_features"][()], f["grad_weight"][()]))
    d = max(abs(outs[0][0] - outs[1][0]), float(np.max(np.abs(outs[0][1] - outs[1][1]))),
            float(np.max(np.abs(outs[0][2] - outs[1][2]))))
    same = d == 0.0
    failures += not same
    print(f"arcface_torch (1, 0.3, 0.2) vs (1, 0, 0.2): largest difference {d:.3e} (expected exactly 0) "
          f"{'ok' if same else 'FAIL'}")
    print(f"worst relative difference {worst[0]:.3e} (tolerance {TOL:.0e}) at {worst[1]}")
    print(f"{n_cases - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
