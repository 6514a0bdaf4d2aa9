"""PyTorch peer of bench_step.py: arcface_torch's full training step on one
process - backbone forward, Partial FC (arcface_torch's PartialFC_V2 sampling:
the batch's classes plus random others up to sample_rate x C), ArcFace
(s = 64, m = 0.5) on the normalised embeddings and centres, cross entropy,
backward, clip_grad_norm_(backbone, 5), SGD (momentum 0.9, weight decay 5e-4)
over backbone and centres - on synthetic 112x112 images, in float32 or under
torch.autocast("cpu", dtype=torch.bfloat16) (arcface_torch's fp16 = True,
which also runs the fc logits in half precision).

usage: bench_step_peer.py ARCH PRECISION BATCH STEPS THREADS [CLASSES] [SAMPLE_RATE]
prints one line: ARCH PRECISION then the seconds of every step after a warm-up step
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "nn"))
import arcface_ref  # noqa: E402


def main():
    arch, prec = sys.argv[1], sys.argv[2]
    batch, steps, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    C = int(sys.argv[6]) if len(sys.argv) > 6 else 10000
    rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.1
    bf16 = prec == "bf16"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = arcface_ref.build(arch, 512)
    model.train()
    centres = torch.nn.Parameter(torch.normal(0, 0.01, (C, 512)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD([{"params": params}, {"params": [centres]}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    K = int(rate * C)
    s, m = 64.0, 0.5
    cos_m, sin_m = math.cos(m), math.sin(m)

    def step():
        x = torch.randn(batch, 3, 112, 112)
        labels = torch.randint(0, C, (batch,))
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(x)
        # PartialFC_V2.sample: positives first, then random negatives, sorted
        with torch.no_grad():
            pos = torch.unique(labels)
            perm = torch.rand(C)
            perm[pos] = 2.0
            index = torch.topk(perm, k=max(K, pos.numel()))[1].sort()[0]
            local = torch.searchsorted(index, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = F.linear(F.normalize(emb), F.normalize(centres[index]))
        logits = logits.float().clamp(-1, 1)
        # ArcFace as arcface_torch's CombinedMarginLoss (m1 = 1, m2 = 0.5, m3 = 0)
        target = logits[torch.arange(batch), local]
        sin_t = torch.sqrt(1.0 - target * target)
        cos_tm = target * cos_m - sin_t * sin_m
        logits = logits.clone()
        logits[torch.arange(batch), local] = cos_tm
        loss = F.cross_entropy(logits * s, local)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)
        opt.step()

    step()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print("%s %s %s" % (arch, prec, " ".join("%.4f" % t for t in times)), flush=True)


if __name__ == "__main__":
    main()
