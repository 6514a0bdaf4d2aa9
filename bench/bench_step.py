"""The full training step, ours against PyTorch's, in float32 and bf16.

Ours: the real trainer (build/bin/arcface-train under mpirun), 1 worker + 1
parameter server, synthetic 112x112 data, Partial FC at C = 10,000 classes and
sample_rate 0.1, ArcFace (s = 64, m = 0.5), SGD, batch 32, the worker on 2
threads; samples/s of each logged step (--frequent 1) after the first, and
with --profile 1 where the rest of the step's time goes (the decode threads'
CPU per step, the server's share of a core).
PyTorch: bench_step_peer.py, the same step in one process on 2 threads
(arcface_torch's modules, PartialFC_V2 sampling, CombinedMarginLoss), in
float32 and under bf16 autocast. Backbone only: bench_backbone --no-torch
(forward, backward, clip, SGD of the backbone alone, same batch and threads),
for the "full step within 10% of the backbone step" target.

Each round runs every (arch, precision) of ours, PyTorch's and the backbone
alone, one after another, so all see the same background load. Two figures per
side: the median over all its timed steps of all rounds, and the fastest step.
bench_backbone reports only its fastest step, so "full / backbone" compares
fastest with fastest (the same statistic on both sides); the medians are the
figures for ours against PyTorch. The machine may be shared: the load average
is recorded with every measurement.

usage: /usr/bin/python3 bench/bench_step.py BUILD_DIR [--arch r18,r50,mbf] [--precision fp32,bf16]
           [--rounds 2] [--steps 2] [--json bench_step.json] [--no-backbone] [--no-torch]
Writes JSON and prints a Markdown table (recorded in bench/README-step.md).
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
BATCH, C, RATE, THREADS = 32, 10000, 0.1, 2


def cpu_info():
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    keep = [x for x in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16",
                        "amx_tile") if x in flags]
    return {"model": model, "flags": keep, "cores": os.cpu_count(), "machine": platform.machine(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")


def ours(build, arch, prec, steps, tmp):
    out = os.path.join(tmp, "%s-%s" % (arch, prec))
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", os.path.join(build, "bin", "arcface-train"),
           "--network", arch, "--embedding_size", "512", "--num_classes", str(C), "--ps", "1",
           "--rec", "synthetic:ids=%d,per_id=4,size=112,channels=3,seed=1" % C,
           "--batch_size", str(BATCH), "--sample_rate", str(RATE), "--lr", "0.1", "--optimizer", "sgd",
           "--max_steps", str(steps + 1), "--frequent", "1", "--threads", str(THREADS), "--loader_threads", "1",
           "--precision", prec, "--resume", "none", "--save_every", "0", "--output", out, "--profile", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if r.returncode:
        sys.exit("ours %s %s failed:\n%s\n%s" % (arch, prec, r.stdout[-3000:], r.stderr[-3000:]))
    sps = [float(x) for x in re.findall(r"speed ([0-9.]+) samples/s", r.stdout)]
    cpu = re.findall(r"cpu per step \(s\): worker process ([0-9.]+), of it decode threads ([0-9.]+); wall ([0-9.]+)",
                     r.stdout)
    srv = re.search(r"server 0 \(rank \d+\): CPU [0-9.]+ s over [0-9.]+ s of training \(([0-9.]+)% of one core\)",
                    r.stdout)
    kern = re.search(r"kernels: (.*)", r.stdout)
    subprocess.run(["rm", "-rf", out])
    prof = {"worker_cpu_s": [float(c[0]) for c in cpu[1:]], "decode_cpu_s": [float(c[1]) for c in cpu[1:]],
            "server_core_pct": float(srv.group(1)) if srv else None}
    return sps[1:], kern.group(1) if kern else "", prof


def peer(arch, prec, steps):
    cmd = ["/usr/bin/python3", os.path.join(HERE, "bench_step_peer.py"), arch, prec, str(BATCH), str(steps),
           str(THREADS), str(C), str(RATE)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, OMP_NUM_THREADS=str(THREADS)))
    if r.returncode:
        sys.exit("PyTorch %s %s failed:\n%s" % (arch, prec, r.stderr[-3000:]))
    return [BATCH / float(t) for t in r.stdout.split()[2:]]


def backbone(build, arch, prec, steps):
    cmd = [os.path.join(build, "bin", "bench_backbone"), "--arch", arch, "--no-torch", "--steps", str(steps),
           "--rounds", "1", "--precision", prec]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    m = re.search(r"^%s\s+([0-9.]+)" % arch, r.stdout, re.M)
    return [float(m.group(1))] if m else []


def stat(v, best=False):
    return (max(v) if best else statistics.median(v)) if v else None


def summary(a, res, kernels, loads, prof, t_start):
    med = {k: stat(v) for k, v in res.items()}
    best = {k: stat(v, True) for k, v in res.items()}
    out = {"cpu": cpu_info(), "kernels": kernels, "batch": BATCH, "classes": C, "sample_rate": RATE,
           "threads": THREADS, "rounds": a.rounds, "steps_per_round": a.steps, "load_average": loads,
           "seconds": round(time.time() - t_start, 1),
           "samples_per_s": {"%s/%s/%s" % k: v for k, v in res.items()},
           "median_samples_per_s": {"%s/%s/%s" % k: v for k, v in med.items()},
           "best_samples_per_s": {"%s/%s/%s" % k: v for k, v in best.items()},
           "ours_profile": {"%s/%s" % k: v for k, v in prof.items()}}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    return out, med, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--arch", default="r18,r50,mbf")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", default="bench_step.json")
    ap.add_argument("--no-backbone", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="ours and the backbone alone (full / backbone only)")
    a = ap.parse_args()
    archs, precs = a.arch.split(","), a.precision.split(",")
    tmp = tempfile.mkdtemp(prefix="bench_step_")
    res = {(x, p, side): [] for x in archs for p in precs for side in ("ours", "torch", "backbone")}
    kernels, loads = {}, []
    prof = {(x, p): {"worker_cpu_s": [], "decode_cpu_s": [], "server_core_pct": []} for x in archs for p in precs}
    t_start = time.time()
    for rnd in range(a.rounds):
        for x in archs:
            for p in precs:
                loads.append(loadavg())
                sps, kernels[p], pr = ours(a.build, x, p, a.steps, tmp)
                res[(x, p, "ours")] += sps
                for k in ("worker_cpu_s", "decode_cpu_s"):
                    prof[(x, p)][k] += pr[k]
                prof[(x, p)]["server_core_pct"].append(pr["server_core_pct"])
                if not a.no_torch:
                    res[(x, p, "torch")] += peer(x, p, a.steps)
                if not a.no_backbone:
                    res[(x, p, "backbone")] += backbone(a.build, x, p, a.steps)
                print("round %d %s %s: ours %s, torch %s, backbone %s (load %.1f)" % (
                    rnd + 1, x, p, res[(x, p, "ours")][-a.steps:], res[(x, p, "torch")][-a.steps:],
                    res[(x, p, "backbone")][-1:], loads[-1]), file=sys.stderr, flush=True)
                out, med, best = summary(a, res, kernels, loads, prof, t_start)  # written as it goes
    ci = out["cpu"]
    print("CPU: %s, %d cores, flags %s; 2 threads each; batch %d, C = %d, sample_rate %g; %d rounds x %d "
          "steps; load average during the run %.1f-%.1f" % (ci["model"], ci["cores"], " ".join(ci["flags"]), BATCH, C,
                                                            RATE, a.rounds, a.steps, min(loads), max(loads)))
    print()
    print("| arch | precision | ours, samples/s (median, fastest) | PyTorch, samples/s (median, fastest) "
          "| ours / PyTorch | ours bf16 / ours fp32 | backbone only, fastest | full / backbone (fastest) "
          "| decode CPU per step | server, % of a core |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v: "%.2f" % v if v else "-"
    for x in archs:
        for p in precs:
            o, t, ob, tb, b = (med[(x, p, "ours")], med[(x, p, "torch")], best[(x, p, "ours")],
                               best[(x, p, "torch")], best[(x, p, "backbone")])
            o32 = med.get((x, "fp32", "ours"))
            dec = stat(prof[(x, p)]["decode_cpu_s"])
            srv = stat([v for v in prof[(x, p)]["server_core_pct"] if v is not None])
            print("| %s | %s | %s, %s | %s, %s | %s | %s | %s | %s | %s | %s |" % (
                x, p, f(o), f(ob), f(t), f(tb), "%.2fx" % (o / t) if o and t else "-",
                "%.2fx" % (o / o32) if p == "bf16" and o and o32 else "-", f(b),
                "%.2f" % (ob / b) if ob and b else "-", "%.0f ms" % (1000 * dec) if dec is not None else "-",
                "%.1f%%" % srv if srv is not None else "-"))
    print("\nJSON: %s (%.0f s)" % (a.json, out["seconds"]))


if __name__ == "__main__":
    main()
