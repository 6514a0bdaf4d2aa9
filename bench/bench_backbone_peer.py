"""PyTorch peer of bench_backbone: one training step (forward, backward,
clip_grad_norm_(5), SGD with momentum and weight decay) of an arcface_torch
backbone: the fastest of STEPS steps after a warm-up, with the process's peak
resident memory.

usage: bench_backbone_peer.py ARCH BATCH STEPS THREADS [fp32|bf16]
(bf16: forward under torch.autocast("cpu", dtype=torch.bfloat16))
prints one line: ARCH samples_per_s peak_rss_bytes samples_per_s_from_cpu_time
"""
import os
import resource
import sys
import time

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "nn"))
import arcface_ref  # noqa: E402


def main():
    arch, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    bf16 = len(sys.argv) > 5 and sys.argv[5] == "bf16"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = arcface_ref.build(arch, 512)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    c = 1 if arch == "fmnist" else 3
    hw = 28 if arch == "fmnist" else 112
    x = torch.randn(batch, c, hw, hw)
    demb = torch.randn(batch, 512) / batch

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(x)
        (emb.float() * demb).sum().backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)
        opt.step()

    step()  # warm-up: allocations, kernel selection
    dt = cpu = float("inf")
    for _ in range(steps):  # the fastest step, as bench_backbone reports its own
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        dt = min(dt, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("%s %.4f %d %.4f" % (arch, batch / dt, rss, batch * threads / cpu), flush=True)


if __name__ == "__main__":
    main()
