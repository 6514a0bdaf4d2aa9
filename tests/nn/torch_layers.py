"""Single layers against torch.nn.functional (float64 reference).

Runs nn_layers_dump, then recomputes every case's outputs and gradients with
PyTorch on the same inputs and parameters. Error of a tensor:
max|ours - torch| / max|torch|; the test fails above the tolerance (1e-4).

With --bf16 the layers that have a bf16 mode (convolutions, Linear) run in
it, and the reference is PyTorch's own mixed precision: the same functions in
float32 under torch.autocast("cpu", dtype=torch.bfloat16), forward and
backward. Each tensor must then be within the tolerance (1e-2 by default) of
autocast's, AND at most 2x as far from the float64 result as autocast's is
(so ours is no less accurate than PyTorch's bf16); a tensor no further than
1e-4 from float64 shows bf16 was not engaged at all, and fails too (except
where we compute in float32 by design: bias gradients, grouped and depthwise
convolutions).

Without --isa (and without AF_DNNL=0 in the environment), the convolutions
that nn/conv_dnnl.c hands to oneDNN (float32, on an AVX-512 CPU, where libdnnl
was found) run there. With --isa avx2 the dump
runs with AF_ISA=avx2, so the baseline (AVX2) kernels are the ones checked; with
--isa avx512 (and AF_DNNL=0) it must run our own AVX-512 kernels, and a
CPU without them is a skip (77). Either way the dump's "kernels:" line must
name the instance asked for, so a dispatch that quietly picked the other one
fails.

usage: torch_layers.py DUMP_EXE WORKDIR [--tol 1e-4] [--bf16] [--isa avx2|avx512]
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F


DTYPE = torch.float64


def t(g, k):
    return torch.from_numpy(np.array(g[k])).to(DTYPE)


def leaf(g, k):
    return t(g, k).requires_grad_(True)


def case_autocast(g):
    """float32 inputs, the layer under bf16 autocast; results back in float32."""
    global DTYPE
    DTYPE = torch.float32
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            desc, out = case(g)
    finally:
        DTYPE = torch.float64
    return desc, out


def case(g):
    kind = g.attrs["kind"]
    kind = kind.decode() if isinstance(kind, bytes) else kind
    a = [int(g.attrs["a%d" % i]) for i in range(8) if ("a%d" % i) in g.attrs]
    out = {}
    if kind == "conv":
        s, p, groups, bias = a
        x, w = leaf(g, "x"), leaf(g, "w")
        b = leaf(g, "b") if bias else None
        y = F.conv2d(x, w, b, stride=s, padding=p, groups=groups)
        y.backward(t(g, "dy"))
        out = {"y": y, "dx": x.grad, "dw": w.grad}
        if bias:
            out["db"] = b.grad
        desc = "conv %s k%d s%d p%d g%d" % (tuple(x.shape), w.shape[2], s, p, groups)
    elif kind == "bn":
        prelu, residual, is1d = a
        x, gm, bt = leaf(g, "x"), leaf(g, "gamma"), leaf(g, "beta")
        if is1d:
            x4 = x.view(x.shape[0], x.shape[1])
        else:
            x4 = x
        rm, rv = t(g, "running_mean_before"), t(g, "running_var_before")
        y = F.batch_norm(x4, rm, rv, gm, bt, training=True, momentum=0.1, eps=1e-5)
        al = r = None
        if prelu:
            al = leaf(g, "alpha")
            y = F.prelu(y, al)
        if residual:
            r = leaf(g, "r")
            y = y + r
        y = y.view(x.shape)
        y.backward(t(g, "dy"))
        out = {"y": y, "dx": x.grad, "dgamma": gm.grad, "dbeta": bt.grad, "running_mean": rm, "running_var": rv}
        if prelu:
            out["dalpha"] = al.grad
        if residual:
            out["dr"] = r.grad
        desc = "batchnorm%s %s%s%s" % ("1d" if is1d else "2d", tuple(x.shape), " +prelu" if prelu else "",
                                       " +residual" if residual else "")
    elif kind == "prelu":
        x, al = leaf(g, "x"), leaf(g, "alpha")
        y = F.prelu(x, al)
        y.backward(t(g, "dy"))
        out = {"y": y, "dx": x.grad, "dalpha": al.grad}
        desc = "prelu %s" % (tuple(x.shape),)
    elif kind == "linear":
        x = t(g, "x")
        x = x.view(x.shape[0], x.shape[1]).requires_grad_(True)
        w, b = leaf(g, "w"), leaf(g, "b")
        y = F.linear(x, w, b)
        dy = t(g, "dy")
        y.backward(dy.view(y.shape))
        out = {"y": y.view(y.shape[0], -1, 1, 1), "dx": x.grad.view(x.shape[0], -1, 1, 1), "dw": w.grad, "db": b.grad}
        desc = "linear %d -> %d, batch %d" % (w.shape[1], w.shape[0], x.shape[0])
    elif kind == "l2norm":
        x = leaf(g, "x")
        y = F.normalize(x, dim=1)
        y.backward(t(g, "dy"))
        out = {"y": y, "dx": x.grad}
        desc = "l2norm %s" % (tuple(x.shape),)
    else:
        raise ValueError(kind)
    return desc, {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
                  for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=None)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--isa", choices=["avx2", "avx512"])
    a = ap.parse_args()
    if a.tol is None:
        a.tol = 1e-2 if a.bf16 else 1e-4
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, "torch_layers%s%s.h5" % ("_bf16" if a.bf16 else "", "_" + a.isa if a.isa else ""))
    env = dict(os.environ)
    args = [a.exe, path, "bf16" if a.bf16 else "fp32"]
    if a.isa == "avx2":
        env["AF_ISA"] = "avx2"
    elif a.isa == "avx512":
        env.pop("AF_ISA", None)
        env["AF_DNNL"] = "0"  # our own AVX-512 kernels, not oneDNN's, for the convolutions too
        args.append("avx512")
    r = subprocess.run(args, env=env, stdout=subprocess.PIPE, universal_newlines=True)
    sys.stdout.write(r.stdout)
    if r.returncode == 77:
        print("SKIP: the dump reports that this CPU lacks the instructions asked for")
        sys.exit(77)
    if r.returncode != 0:
        print("FAIL: %s exited with %d" % (a.exe, r.returncode))
        sys.exit(1)
    # where the dump says oneDNN runs the groups-1 convolutions, it must have run some
    if "conv/GEMM fp32 (oneDNN" in r.stdout and "oneDNN convolution calls: 0\n" in r.stdout:
        print("FAIL: the kernels line names oneDNN, but no convolution ran through it")
        sys.exit(1)
    want = {"avx2": "transforms, depthwise fp32 baseline", "avx512": "transforms, depthwise fp32 avx512"}.get(a.isa)
    if want and want not in r.stdout:
        print("FAIL: asked for the %s kernels, but the dump ran: %s" % (a.isa, r.stdout.strip()))
        sys.exit(1)
    worst, fails = 0.0, 0
    with h5py.File(path, "r") as f:
        for name in sorted(f.keys(), key=lambda s: int(s.split("_")[1])):
            desc, ref = case(f[name])
            if a.bf16:
                ref64 = ref
                desc, ref = case_autocast(f[name])
            errs = []
            for k, r in ref.items():
                ours = np.array(f[name][k], dtype=np.float64)
                if ours.shape != r.shape:
                    print("FAIL %s %s: shape %s, torch %s" % (desc, k, ours.shape, r.shape))
                    fails += 1
                    continue
                e = float(np.abs(ours - r).max() / max(np.abs(r).max(), 1e-30))
                worst = max(worst, e)
                if not e <= a.tol:
                    print("FAIL %s %s: relative error %.3g > %.0e" % (desc, k, e, a.tol))
                    fails += 1
                if not a.bf16:
                    errs.append("%s %.2g" % (k, e))
                    continue
                # both against float64: ours, and PyTorch's autocast
                r64 = ref64[k]
                scale = max(np.abs(r64).max(), 1e-30)
                e_ours = float(np.abs(ours - r64).max() / scale)
                e_torch = float(np.abs(r.astype(np.float64) - r64).max() / scale)
                errs.append("%s %.2g (f64: ours %.2g, autocast %.2g)" % (k, e, e_ours, e_torch))
                if not e_ours <= 2 * max(e_torch, 1e-6):
                    print("FAIL %s %s: %.3g from float64, more than 2x autocast's %.3g" % (desc, k, e_ours, e_torch))
                    fails += 1
                # bias gradients (sums) and grouped/depthwise convolutions (direct
                # loops) have no GEMM and stay float32 by design
                g = f[name]
                kind = g.attrs["kind"]
                kind = kind.decode() if isinstance(kind, bytes) else kind
                by_gemm = k != "db" and (kind == "linear" or (kind == "conv" and int(g.attrs["a2"]) == 1))
                if by_gemm and not e_ours > 1e-4:
                    print("FAIL %s %s: only %.3g from float64: bf16 was not engaged" % (desc, k, e_ours))
                    fails += 1
            print("%-48s %s" % (desc, ", ".join(errs)))
    print("worst relative error %.3g%s, tolerance %.0e" % (worst, " against bf16 autocast" if a.bf16 else "", a.tol))
    if fails:
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
