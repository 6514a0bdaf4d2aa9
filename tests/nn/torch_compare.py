"""Compares the C backbone with the PyTorch reference on the same weights.

Runs nn_torch_dump (which writes weights, inputs, and its own results of a
training-mode forward, backward and eval-mode forward to an HDF5 file),
loads /backbone into the reference module with load_state_dict(strict=True)
- the HDF5 round trip - and repeats the computation in PyTorch, in float64
(the reference) and float32 (to show PyTorch's own rounding). Every compared
tensor's error is max|ours - ref| / max|ref|; the test fails if any exceeds
the tolerance.

usage: torch_compare.py DUMP_EXE ARCH BATCH WORKDIR [--tol 1e-3] [--embedding D] [--hw N] [--no-eval]
       [--remove-dump]
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


def rel(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max(), 1e-30)
    return float(np.abs(ours - ref).max() / scale)


def follow_branches(model, masks, kinks):
    """Makes every PReLU take the side of the kink our forward took (masks:
    module name -> bool array, True where the input was > 0), recording in
    kinks how far from 0 each input where the sides differ lies."""
    handles = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.PReLU):
            continue
        mask = torch.from_numpy(masks[name])

        def hook(mod, inp, out, mask=mask, name=name):
            u = inp[0]
            w = mod.weight.view(1, -1, *([1] * (u.dim() - 2)))
            differ = mask != (u > 0)
            if differ.any():
                rms = u.detach().pow(2).mean().sqrt()
                kinks.append((name, int(differ.sum()), float(u.detach()[differ].abs().max() / rms)))
            return torch.where(mask, u, w * u)
        handles.append(mod.register_forward_hook(hook))
    return handles


def run_torch(f, arch, emb_dim, dtype, masks=None, kinks=None):
    g = f["backbone"]
    in_c, in_hw = f["x"].shape[1], f["x"].shape[2]
    model = arcface_ref.build(arch, emb_dim, in_c=in_c, in_hw=in_hw)
    arcface_ref.load_state(model, g)
    model = model.to(dtype)
    x = torch.from_numpy(np.array(f["x"])).to(dtype)
    demb = torch.from_numpy(np.array(f["demb"])).to(dtype)
    model.train()
    handles = follow_branches(model, masks, kinks) if masks is not None else []
    emb = model(x)
    for h in handles:
        h.remove()
    (emb * demb).sum().backward()
    grads = {k: p.grad.detach().numpy() for k, p in model.named_parameters() if p.requires_grad}
    bufs = {k: b.detach().numpy() for k, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        emb_eval = model(x)
    return emb.detach().numpy(), grads, bufs, emb_eval.numpy(), model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("arch")
    ap.add_argument("batch", type=int)
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--embedding", type=int, default=512)
    ap.add_argument("--hw", type=int, default=0, help="a smaller square input, for deep networks")
    ap.add_argument("--no-eval", action="store_true",
                    help="skip the eval-mode forward: with these random weights and running statistics a very deep "
                         "network's activations grow past float32's range (torch_pt.py checks eval mode instead)")
    ap.add_argument("--remove-dump", action="store_true",
                    help="delete the dump afterwards (r200's is ~850 MB)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, "torch_compare_%s.h5" % a.arch)
    subprocess.run([a.exe, "--arch", a.arch, "--batch", str(a.batch), "--out", path,
                    "--embedding", str(a.embedding)] + (["--hw", str(a.hw)] if a.hw else []), check=True)
    failures = []
    with h5py.File(path, "r") as f:
        order = f.attrs["state_dict_order"]
        order = (order.decode() if isinstance(order, bytes) else order).split()
        if order != list(arcface_ref.build(a.arch, a.embedding, in_c=f["x"].shape[1],
                                           in_hw=f["x"].shape[2]).state_dict().keys()):
            failures.append("the tensor table is not in PyTorch's state_dict order")
        else:
            print("tensor table: the %d keys of state_dict(), in its order" % len(order))
        masks = {k: np.array(v).astype(bool) for k, v in f["out/prelu_positive"].items()}
        kinks = []
        e64, g64, b64, ev64, model = run_torch(f, a.arch, a.embedding, torch.float64, masks, kinks)
        if len(masks) != sum(isinstance(m, torch.nn.PReLU) for m in model.modules()):
            failures.append("PReLU branch masks for %d modules, the model has %d" % (
                len(masks), sum(isinstance(m, torch.nn.PReLU) for m in model.modules())))
        nflip = sum(k[1] for k in kinks)
        far = max([k[2] for k in kinks] + [0.0])
        print("PReLU inputs on the other side of 0 than in float64: %d, all within %.2g x RMS of 0 (limit 1e-4)"
              % (nflip, far))
        if far > 1e-4:
            failures.append("a PReLU input %.3g x RMS away from 0 took the wrong branch (%s)" % (
                far, max(kinks, key=lambda k: k[2])[0]))
        e32, g32, b32, ev32, _ = run_torch(f, a.arch, a.embedding, torch.float32)
        out = f["out"]
        # the trainable set must agree both ways, or a key is missing a gradient
        ours_keys = set(out["grad"].keys())
        if ours_keys != set(g64.keys()):
            failures.append("trainable parameters differ: only C %s, only torch %s" % (
                sorted(ours_keys - set(g64)), sorted(set(g64) - ours_keys)))
        rows = [("embeddings (train)", np.array(out["emb_train"]), e64, e32)]
        if a.no_eval:
            print("eval-mode forward not compared (--no-eval): float64 reference reaches %.3g" % np.abs(ev64).max())
        else:
            rows.append(("embeddings (eval)", np.array(out["emb_eval"]), ev64, ev32))
        for k in sorted(g64):
            if k in out["grad"]:
                rows.append(("grad " + k, np.array(out["grad"][k]), g64[k], g32[k]))
        for k in sorted(b64):
            rows.append(("after-step " + k, np.array(out["after"][k]), b64[k], b32[k]))
        worst = ("", 0.0)
        table = []
        ill = []
        for name, ours, ref, ref32 in rows:
            if ours.shape != ref.shape:
                failures.append("%s: shape %s, torch %s" % (name, ours.shape, ref.shape))
                continue
            if np.issubdtype(ref.dtype, np.integer):
                if not np.array_equal(ours, ref):
                    failures.append("%s: %s, torch %s" % (name, ours, ref))
                continue
            e = rel(ours, ref)
            e_t32 = rel(ref32, ref)
            table.append((e, e_t32, name))
            if not np.isfinite(e):
                failures.append("%s: not finite" % name)
            elif e_t32 > a.tol / 10:
                # Cancellation-dominated (e.g. the gradient of a batch-norm bias whose
                # output is renormalised downstream is exactly 0): float32 can only
                # reach the rounding noise of its summands, so ask for PyTorch
                # float32's own accuracy, within a factor.
                ill.append((e, e_t32, name))
                if e > 10 * e_t32:
                    failures.append("%s: relative error %.3g, more than 10x PyTorch float32's %.3g on this "
                                    "ill-conditioned tensor" % (name, e, e_t32))
            else:
                if e > worst[1]:
                    worst = (name, e)
                if e > a.tol:
                    failures.append("%s: relative error %.3g > %.1g" % (name, e, a.tol))
        print("%s batch %d: %d tensors compared with PyTorch float64; worst relative error %.3g (%s), tolerance %.1g"
              % (a.arch, a.batch, len(rows), worst[1], worst[0], a.tol))
        print("  (relative error of a tensor: max|ours - torch| / max|torch|)")
        table = sorted(t for t in table if t not in ill)[::-1]
        print("  the largest errors (ours and PyTorch float32's, both against float64):")
        for e, e_t32, name in table[:6]:
            print("    %-50s ours %.3g   torch-float32 %.3g" % (name, e, e_t32))
        if ill:
            ratio = max(e / max(t, 1e-300) for e, t, _ in ill)
            print("  %d ill-conditioned tensors (PyTorch float32 itself off by more than %.0e; true value ~0): "
                  "our error at most %.2gx PyTorch float32's (limit 10x)" % (len(ill), a.tol / 10, ratio))
        if not a.no_eval:
            print("  embeddings: train %.3g, eval %.3g; vs PyTorch float32: train %.3g, eval %.3g" % (
                rel(out["emb_train"], e64), rel(out["emb_eval"], ev64),
                rel(out["emb_train"], e32), rel(out["emb_eval"], ev32)))
    if a.remove_dump:
        os.remove(path)
    if failures:
        for s in failures[:20]:
            print("FAIL " + s)
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
