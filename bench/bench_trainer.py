"""Benchmarks of the distributed trainer (issue: the distributed trainer), run on
this machine with the synthetic data source:

  memory   C = 1,000,000 classes x D = 512 on 2 parameter servers: each server's
           resident memory against (C/P) x D x 4 x 2 bytes (weights + momentum)
  scaling  step time with a fixed number of sampled classes (K = 1000) as C grows
           10k -> 100k -> 1M (1 worker + 1 server)
  bytes    bytes pulled and pushed per step against 2 x K x D x 4, plus headers
  peers    2 workers + 1 server against one process with the same total threads
           (2), same global batch: samples/s ratio
  ckpt     writing the checkpoint of C = 1,000,000 x 512 (weights + momentum) from 2
           servers against `dd conv=fsync` of the same number of bytes to the same disk

usage: /usr/bin/python3 bench/bench_trainer.py BUILD_DIR [memory scaling bytes peers]
Prints a Markdown table per benchmark (recorded in bench/README-trainer.md)."""
import os
import re
import statistics
import subprocess
import sys
import tempfile

BUILD = sys.argv[1]
WHICH = sys.argv[2:] or ["memory", "scaling", "bytes", "peers", "ckpt"]
BIN = os.path.join(BUILD, "bin", "arcface-train")
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
TMP = tempfile.mkdtemp(prefix="bench_trainer_")


def train(np_, args, tag):
    out = os.path.join(TMP, tag)
    # Identity scale: only the sampled rows are stepped (fc_update = sparse, not
    # the default dense update of insightface, which costs C x D every step).
    cmd = ([] if np_ == 1 else MPI + ["-np", str(np_)]) + [BIN, "--resume", "none", "--output", out,
                                                          "--fc_update", "sparse"] + args
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=3600)
    if r.returncode:
        sys.exit(f"{tag} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def speeds(log):
    return [float(x) for x in re.findall(r"speed ([0-9.]+) samples/s", log)]


def step_times(log):
    """Per-step seconds of each timer from the last --profile line."""
    lines = [l for l in log.splitlines() if l.strip().startswith("time per step")]
    parts = dict(re.findall(r"(\w+) ([0-9.]+)", lines[-1].split(":", 1)[1].split("|")[0]))
    b = dict(re.findall(r"(pulled|pushed|headers) ([0-9.]+)", lines[-1]))
    return {k: float(v) for k, v in parts.items()}, {k: float(v) for k, v in b.items()}


def synth(ids, size=28):
    return f"synthetic:ids={ids},per_id=2,size={size},channels=1,seed=1"


def memory():
    C, D, P = 1_000_000, 512, 2
    log = train(1 + P, ["--network", "fmnist", "--embedding_size", str(D), "--num_classes", str(C), "--ps", str(P),
                        "--rec", synth(1000), "--batch_size", "32", "--sample_rate", "0.001", "--max_steps", "5",
                        "--frequent", "5", "--save_every", "0"], "memory")
    print("\n### Server memory, C = 1,000,000, D = 512, 2 servers\n")
    print("| server | classes | weights + momentum (expected) | resident at start | resident at end | overhead |")
    print("|---|---|---|---|---|---|")
    starts = re.findall(r"server (\d) \(rank \d+\): classes \[(\d+), (\d+)\) = \d+, weights \+ optimizer state ([0-9.]+) MiB"
                        r".*resident ([0-9.]+) MiB", log)
    ends = dict(re.findall(r"server (\d) \(rank \d+\): done, resident ([0-9.]+) MiB", log))
    for s, a, b, state, rss in starts:
        n = int(b) - int(a)
        expect = n * D * 4 * 2 / 2**20
        end = float(ends.get(s, "nan"))
        print(f"| {s} | {n:,} | {expect:.1f} MiB (reported {float(state):.1f}) | {float(rss):.1f} MiB | {end:.1f} MiB "
              f"| {100 * (end - expect) / expect:+.2f}% ({end - expect:.1f} MiB) |")


def scaling():
    D, K = 512, 1000
    print("\n### Step time with K = 1000 sampled classes, 1 worker + 1 server, fmnist net, batch 32, D = 512\n")
    print("| classes C | sample_rate | median samples/s | ms per step | vs C = 10k |")
    print("|---|---|---|---|---|")
    base = None
    for C in (10_000, 100_000, 1_000_000):
        log = train(2, ["--network", "fmnist", "--embedding_size", str(D), "--num_classes", str(C), "--ps", "1",
                        "--rec", synth(1000), "--batch_size", "32", "--sample_rate", str(K / C), "--max_steps", "60",
                        "--frequent", "10", "--threads", "1"], f"scale{C}")
        sps = statistics.median(speeds(log)[1:])
        ms = 32 / sps * 1000
        base = base or ms
        print(f"| {C:,} | {K / C:g} | {sps:.1f} | {ms:.1f} | {ms / base:.3f}x |")


def bytes_moved():
    D = 512
    print("\n### Bytes between workers and servers per step\n")
    print("| layout | K | pulled B/step | pushed B/step | 2 x K x D x 4 | headers B/step |")
    print("|---|---|---|---|---|---|")
    for W, P in ((1, 1), (2, 2)):
        C = 100_000
        log = train(W + P, ["--network", "fmnist", "--embedding_size", str(D), "--num_classes", str(C), "--ps", str(P),
                            "--rec", synth(1000), "--batch_size", "16", "--sample_rate", "0.01", "--max_steps", "10",
                            "--frequent", "10", "--profile", "1"], f"bytes{W}{P}")
        _, b = step_times(log)
        K = int(0.01 * C)
        print(f"| {W} workers + {P} servers | {K} | {b['pulled']:,.0f} | {b['pushed']:,.0f} | "
              f"{2 * K * D * 4:,} | {b['headers']:,.0f} |")


def peers():
    common = ["--network", "fmnist", "--embedding_size", "128", "--num_classes", "1000", "--rec", synth(1000),
              "--max_steps", "60", "--frequent", "10", "--sample_rate", "1.0"]
    print("\n### 2 workers + 1 server vs one process, same total threads (2), global batch 64\n")
    print("| run | median samples/s (5 runs of 60 steps) |")
    print("|---|---|")
    one, two = [], []
    for i in range(5):
        one.append(statistics.median(speeds(train(1, common + ["--batch_size", "64", "--threads", "2",
                                                              "--loader_threads", "1"], f"one{i}"))[1:]))
        two.append(statistics.median(speeds(train(3, common + ["--batch_size", "32", "--threads", "1", "--ps", "1",
                                                              "--loader_threads", "1"], f"two{i}"))[1:]))
    print(f"| one process, 2 threads | {statistics.median(one):.1f} |")
    print(f"| 2 workers x 1 thread + 1 server | {statistics.median(two):.1f} |")
    print(f"| ratio | {statistics.median(two) / statistics.median(one):.3f} |")


def ckpt():
    C, D = 1_000_000, 512
    print("\n### Checkpoint of C = 1,000,000 x D = 512 from 2 servers vs dd of the same bytes (3 runs each)\n")
    print("| run | MB | checkpoint s | dd s | checkpoint / dd |")
    print("|---|---|---|---|---|")
    ratios = []
    for i in range(3):
        log = train(3, ["--network", "fmnist", "--embedding_size", str(D), "--num_classes", str(C), "--ps", "2",
                        "--rec", synth(1000), "--batch_size", "32", "--sample_rate", "0.001", "--max_steps", "1"],
                    f"ckpt{i}")
        m = re.search(r"checkpoint: (\S+) \(([0-9.]+) MB in ([0-9.]+) s", log)
        path, mb, secs = m.group(1), float(m.group(2)), float(m.group(3))
        target = os.path.join(os.path.dirname(path), "dd.bin")
        r = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={int(mb * 1e6 / 2**20) + 1}",
                            "conv=fsync"], capture_output=True, text=True)
        dd = float(re.search(r"copied, ([0-9.]+) s", r.stderr).group(1))
        os.remove(target)
        subprocess.run(["rm", "-rf", os.path.join(TMP, f"ckpt{i}")])
        ratios.append(secs / dd)
        print(f"| {i + 1} | {mb:.0f} | {secs:.2f} | {dd:.2f} | {secs / dd:.2f} |")
    print(f"| median | | | | {statistics.median(ratios):.2f} |")


for name in WHICH:
    {"memory": memory, "scaling": scaling, "bytes": bytes_moved, "peers": peers, "ckpt": ckpt}[name]()
