"""The backbone in bf16 mixed precision against PyTorch's bf16 autocast.

Runs nn_torch_dump --precision bf16 (weights, input, and our training-mode
forward, backward and eval forward in bf16), then computes the same in PyTorch
twice on the same weights: in float64 (the truth) and in float32 under
torch.autocast("cpu", dtype=torch.bfloat16) (what a PyTorch user's bf16
training computes). For every tensor (embeddings, every parameter gradient,
running statistics) the error is the relative norm ||x - float64|| /
||float64|| (the max-norm of one random realisation of bf16 rounding noise
is too erratic to compare at batch 4). The test fails when, for any tensor,
ours exceeds max(FACTOR x autocast's, FLOOR) (defaults 4 and 1e-2), or when
the median over tensors of ours / autocast's exceeds MEDIAN (default 1.5):
bf16 training here must be about as accurate as PyTorch's. It also fails
when our training embeddings are within 1e-4 of float64, which would mean
bf16 never ran.

usage: torch_compare_bf16.py DUMP_EXE ARCH BATCH WORKDIR [--hw N] [--factor 4] [--floor 1e-2] [--median 1.5]
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


def rel(x, ref):
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm((x - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-30))


def run_torch(f, arch, emb_dim, dtype, autocast):
    in_c, in_hw = f["x"].shape[1], f["x"].shape[2]
    model = arcface_ref.build(arch, emb_dim, in_c=in_c, in_hw=in_hw)
    arcface_ref.load_state(model, f["backbone"])
    model = model.to(dtype)
    x = torch.from_numpy(np.array(f["x"])).to(dtype)
    demb = torch.from_numpy(np.array(f["demb"])).to(dtype)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        emb = model(x)
    (emb.to(dtype) * demb).sum().backward()
    grads = {k: p.grad.detach().double().numpy() for k, p in model.named_parameters() if p.requires_grad}
    bufs = {k: b.detach().double().numpy() for k, b in model.named_buffers() if b.dtype.is_floating_point}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        emb_eval = model(x)
    return emb.detach().double().numpy(), grads, bufs, emb_eval.double().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("arch")
    ap.add_argument("batch", type=int)
    ap.add_argument("workdir")
    ap.add_argument("--hw", type=int, default=0)
    ap.add_argument("--embedding", type=int, default=512)
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--median", type=float, default=1.5)
    ap.add_argument("--floor", type=float, default=1e-2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, "torch_compare_bf16_%s.h5" % a.arch)
    cmd = [a.exe, "--arch", a.arch, "--batch", str(a.batch), "--out", path, "--embedding", str(a.embedding),
           "--precision", "bf16"]
    if a.hw:
        cmd += ["--hw", str(a.hw)]
    r = subprocess.run(cmd)
    if r.returncode == 77:
        print("SKIP: the dump reports no AVX512_BF16 on this CPU")
        sys.exit(77)
    if r.returncode != 0:
        print("FAIL: %s exited with %d" % (a.exe, r.returncode))
        sys.exit(1)
    failures = []
    with h5py.File(path, "r") as f:
        e64, g64, b64, ev64 = run_torch(f, a.arch, a.embedding, torch.float64, False)
        eac, gac, bac, evac = run_torch(f, a.arch, a.embedding, torch.float32, True)
        out = f["out"]
        rows = [("embeddings (train)", np.array(out["emb_train"]), e64, eac),
                ("embeddings (eval)", np.array(out["emb_eval"]), ev64, evac)]
        for k in sorted(g64):
            rows.append(("grad " + k, np.array(out["grad"][k]), g64[k], gac[k]))
        for k in sorted(b64):
            rows.append(("after-step " + k, np.array(out["after"][k]), b64[k], bac[k]))
        table = []
        for name, ours, ref, ac in rows:
            if ours.shape != ref.shape:
                failures.append("%s: shape %s, torch %s" % (name, ours.shape, ref.shape))
                continue
            e, e_ac = rel(ours, ref), rel(ac, ref)
            table.append((e / max(e_ac, 1e-30), e, e_ac, name))
            if not e <= max(a.factor * e_ac, a.floor):
                failures.append("%s: %.3g from float64, autocast %.3g (limit max(%gx, %g))" % (
                    name, e, e_ac, a.factor, a.floor))
        med = float(np.median([t[0] for t in table]))
        if not med <= a.median:
            failures.append("median over tensors of our error / autocast's %.3g > %g" % (med, a.median))
        e_train = rel(out["emb_train"], e64)
        if not e_train > 1e-4:
            failures.append("training embeddings only %.3g from float64: bf16 was not engaged" % e_train)
        print("%s batch %d%s in bf16: %d tensors; error against float64, ours and PyTorch bf16 autocast's:" % (
            a.arch, a.batch, " at %dx%d" % (a.hw, a.hw) if a.hw else "", len(rows)))
        for _, e, e_ac, name in [t for t in table if t[3].startswith("embeddings")]:
            print("    %-52s ours %.3g   autocast %.3g" % (name, e, e_ac))
        print("  the tensors where ours is furthest from float64 relative to autocast:")
        for ratio, e, e_ac, name in sorted(table)[::-1][:6]:
            print("    %-52s ours %.3g   autocast %.3g   (%.2fx)" % (name, e, e_ac, ratio))
        print("  median over tensors of ours / autocast's: %.3g (limit %g); per tensor limit max(%gx autocast's, %g)"
              % (med, a.median, a.factor, a.floor))
    if failures:
        for s in failures[:20]:
            print("FAIL " + s)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
