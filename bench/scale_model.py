"""The scale model of issue 11 ("On paper, toward internet scale"): memory per rank,
bytes per step and step time of a Partial FC job at 10M, 100M and 1B identities on N
nodes, from constants measured on this code, and a check of one point against a run.

  measure BUILD [--out JSON]   measures the constants (bench_scale for the logits and the
                               server's per-row costs; per-role peak memory of small jobs
                               at two embedding sizes; framing bytes from --profile) and
                               writes them (default bench/results/scale_constants.json)
  model [--constants JSON]     prints the Markdown tables of the README section
  check BUILD [--constants JSON] [--classes 4000000 --dim 128 --rate 0.1 --batch 16]
                               predicts a 2-worker + 2-server job on this machine, runs it
                               and prints predicted against measured

The memory terms mirror core/capacity.c (what each role allocates) with the transient
per sampled row measured, not assumed:
  server  fixed + count x (4 D states + 4) + touched x (a_s x 4D + b_s)
  worker  fixed + backbone + slice x (a_w x 4D + b_w) + 8 x B_global x slice + 8 K
where count = C / P, K = sample_rate x C (the sampled classes of a step), slice = K / W,
touched = K / P, and a, b come from two jobs at D = 16 and D = 64 (sample_rate 1, where
every class is sampled, so the per-row terms dominate). Re-run `measure` after a change
to the transport, the server's or the worker's buffers, or the fc kernels.
Uses /usr/bin/python3 or any Python 3 (no third-party modules)."""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "results", "scale_constants.json")
MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1")
CHUNK = 1 << 20  # msg_chunk_bytes of every measured job: split messages, as a large job needs
GiB = 2**30
LOGIT_BYTES = 4  # one float per logit: the fc loss turns logits into probabilities and gradients in place
LOAD = []  # load average when the check started
CPU_AT = []  # (wall s, {rank: CPU s}) at each progress line of the last job


def cpu_times(out):
    """{rank: user + system CPU seconds} of the job's arcface-train processes (the ones
    whose command line names the output folder `out`)."""
    tick, got = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if out not in open(f"/proc/{pid}/cmdline").read() or open(f"/proc/{pid}/comm").read().strip() != "arcface-train":
                continue
            env = open(f"/proc/{pid}/environ").read().split("\0")
            rank = int(next(e.split("=", 1)[1] for e in env if e.startswith("OMPI_COMM_WORLD_RANK=")))
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            got[rank] = (int(f[11]) + int(f[12])) / tick  # utime, stime
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return got


# ---------------------------------------------------------------- measuring

def job(build, W, P, C, D, rate, batch, steps, extra=(), out=None):
    """Runs a job; returns (log, {rank: peak bytes})."""
    out = out or tempfile.mkdtemp(prefix="scale_model_")
    # One file per rank: lines on a shared stderr interleave.
    wrap = ["sh", "-c", f'exec /usr/bin/time -o {out}.peak.$OMPI_COMM_WORLD_RANK -f "%M" "$@"', "sh"]
    cmd = MPI + ["-np", str(W + P)] + wrap + [
        os.path.join(build, "bin", "arcface-train"), "--resume", "none", "--output", out, "--network", "fmnist",
        "--embedding_size", str(D), "--num_classes", str(C), "--ps", str(P), "--sample_rate", str(rate),
        "--batch_size", str(batch), "--max_steps", str(steps), "--save_every", "0", "--loader_threads", "1",
        "--threads", "1", "--msg_chunk_bytes", str(CHUNK), "--fc_update", "sparse",
        "--rec", "synthetic:ids=1000,per_id=2,size=28,channels=1,seed=1"] + list(extra)
    # stdout is read line by line so that each rank's CPU time can be sampled when a
    # progress line appears (CPU_AT: [(wall s, {rank: CPU s})], one entry per line).
    CPU_AT.clear()
    with tempfile.TemporaryFile(mode="w+") as err:
        pr = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
        lines = []
        for line in pr.stdout:
            lines.append(line)
            if line.startswith("Training: "):
                CPU_AT.append((time.monotonic(), cpu_times(out)))
        rc = pr.wait()
        err.seek(0)
        stderr = err.read()
    stdout = "".join(lines)
    subprocess.run(["rm", "-rf", out])
    if rc:
        sys.exit(f"the job C = {C}, D = {D} failed (exit {rc}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    peaks = {}
    for rank in range(W + P):
        path = f"{out}.peak.{rank}"
        try:
            peaks[rank] = int(open(path).read().split()[-1]) * 1024  # ru_maxrss in KiB
            os.remove(path)
        except (OSError, ValueError, IndexError) as e:
            sys.exit(f"no peak memory of rank {rank} from /usr/bin/time in {path}: {e}")
    return stdout, peaks


def profile_windows(log):
    """(steps, {timer: s/step}, {pulled, pushed, headers}) of each --profile line; the
    trainer prints averages since the first step, so windows are differences."""
    rows = []
    steps = [int(s) for s in re.findall(r"^Training: .* step (\d+)/", log, re.M)]
    prof = [l for l in log.splitlines() if l.strip().startswith("time per step")]
    for s, line in zip(steps, prof):
        t = {k: float(v) for k, v in re.findall(r"(\w+) ([0-9.]+)", line.split(":", 1)[1].split("|")[0])}
        b = {k: float(v) for k, v in re.findall(r"(pulled|pushed|headers) ([0-9.]+)", line)}
        rows.append((s, t, b))
    return rows


def window(rows, first=0, last=-1):
    """Per-step averages between two logged lines (the steps before the first dropped: warm-up)."""
    (s0, t0, b0), (s1, t1, b1) = rows[first], rows[last]
    n = s1 - s0
    avg = lambda a, b, k: (b[k] * s1 - a[k] * s0) / n
    return {k: avg(t0, t1, k) for k in t1}, {k: avg(b0, b1, k) for k in b1}


def measure(args):
    build = args.build
    bs = subprocess.run([os.path.join(build, "bin", "bench_scale"), "--reps", "3"], capture_output=True, text=True,
                        env=ENV, timeout=1800)
    if bs.returncode:
        sys.exit(f"bench_scale failed:\n{bs.stderr}")
    comp = json.loads(bs.stdout)
    # Per-role peaks: W = P = 2, batch 4, sample_rate 1, at two embedding sizes.
    W, P, batch, C1 = 2, 2, 4, 400_000
    G = W * batch
    fits, runs = {}, []
    for D in (16, 64):
        _, base = job(build, W, P, 1000, D, 1.0, batch, 3)
        _, big = job(build, W, P, C1, D, 1.0, batch, 3)
        runs.append({"D": D, "C": C1, "peaks_C1000": base, "peaks": big})
        srv = statistics.mean(big[r] - base[r] for r in range(W, W + P))
        wrk = statistics.mean(big[r] - base[r] for r in range(W))
        dC = C1 - 1000
        count = touched = dC / P
        slice_ = dC / W
        fits[D] = {"server_per_row": srv / touched - (4 * D * 2 + 4),
                   "worker_per_row": (wrk - LOGIT_BYTES * G * slice_ - 8 * dC) / slice_,
                   "server_fixed": statistics.mean(base[r] for r in range(W, W + P)),
                   "worker_fixed": statistics.mean(base[r] for r in range(W))}
        print(f"D = {D}: server {fits[D]['server_per_row']:.1f} B per touched row beyond its state, worker "
              f"{fits[D]['worker_per_row']:.1f} B per slice row beyond logits and ids", file=sys.stderr)
    a_s = (fits[64]["server_per_row"] - fits[16]["server_per_row"]) / (4 * 48)
    a_w = (fits[64]["worker_per_row"] - fits[16]["worker_per_row"]) / (4 * 48)
    mem = {"msg_chunk_bytes": CHUNK,
           "server_fixed_bytes": fits[16]["server_fixed"], "worker_fixed_bytes_fmnist": fits[16]["worker_fixed"],
           "server_rows_per_touched_row": a_s, "server_bytes_per_touched_row": fits[16]["server_per_row"] - a_s * 64,
           "worker_rows_per_slice_row": a_w, "worker_bytes_per_slice_row": fits[16]["worker_per_row"] - a_w * 64,
           "layout": f"{W} workers + {P} servers, batch {batch} per worker, sample_rate 1, 3 steps, C = 1,000 and "
                     f"{C1:,}, D = 16 and 64", "runs": runs}
    # Framing: bytes beyond the rows, per sampled row, split transport.
    log, _ = job(build, W, P, 100_000, 128, 0.1, 16, 4, ["--profile", "1", "--frequent", "2"])
    _, b = window(profile_windows(log))
    K = 10_000
    proto = {"framing_bytes_per_row": b["headers"] / K, "pulled_per_row": b["pulled"] / K,
             "pushed_per_row": b["pushed"] / K, "run": "C = 100,000, D = 128, sample_rate 0.1, 2 + 2, --profile 1"}
    lg = comp["logits"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {
        "measured_on": {"date": datetime.date.today().isoformat(), "cpu": cpu, "commit": commit,
                        "load_average": open("/proc/loadavg").read().split()[0],
                        "note": "Release build; CPU times of one thread (bench_scale), peak RSS (ru_maxrss)"},
        "compute": {"gemm_flops_per_s_per_core": statistics.median(x["gemm_flops_per_s"] for x in lg),
                    "elementwise_s_per_elem": statistics.median(x["elementwise_s_per_elem"] for x in lg),
                    "memcpy_bytes_per_s": comp["memcpy_bytes_per_s"], "server": comp["server"], "bench_scale": comp},
        "memory": mem,
        "protocol": proto,
        # Not measured by `measure`: the backbone, from bench/README-backbone.md.
        "backbone": {"arch": "r50", "params": 43590848, "samples_per_s_per_core": 4.75 / 2,
                     "peak_rss_bytes_per_sample": 2.78e9 / 32,
                     "source": "bench/README-backbone.md, 2026-11-28: r50 fp32, 2 threads, batch 32: 4.75 samples/s, "
                               "peak RSS 2.78 GB; parameters from tests/nn/arcface_ref.py's iresnet50"},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


# ---------------------------------------------------------------- the model

def predict(k, C, D, rate, b, W, P, cores=1, states=2, dense=False, bw=None, backbone=True):
    """Per-rank memory (bytes), bytes per step and seconds per step of one layout.
    W, P: worker and server ranks; b: batch per worker; cores: threads per worker;
    bw: link bytes/s (None: this machine's copy bandwidth)."""
    m, c, pr, bb = k["memory"], k["compute"], k["protocol"], k["backbone"]
    G = b * W
    K = min(C, max(int(rate * C), G))  # af_pfc_max_total: the batch's positives alone may exceed rate x C
    slice_, touched, count = K / W, K / P, C / P
    srv = (m["server_fixed_bytes"] + count * (4 * D * states + 4) +
           touched * (m["server_rows_per_touched_row"] * 4 * D + m["server_bytes_per_touched_row"]))
    fixed_w = bb["peak_rss_bytes_per_sample"] * b if backbone else m["worker_fixed_bytes_fmnist"]
    logits_mem = LOGIT_BYTES * G * slice_
    wrk = (fixed_w + slice_ * (m["worker_rows_per_slice_row"] * 4 * D + m["worker_bytes_per_slice_row"]) +
           logits_mem + 8 * K)
    row = 4 * D + pr["framing_bytes_per_row"] / 2  # the framing (ids, headers) splits over pull and push
    fc_w = 2 * slice_ * row
    ar_w = 2 * (W - 1) / W * 4 * bb["params"] if backbone and W > 1 else 0
    gather_w = (G - b) * D * 4
    bytes_w, bytes_s = fc_w + ar_w + gather_w, 2 * touched * row
    s = c["server"]
    t_server = touched * (s["pull_s_per_row"] + s["push_s_per_row"]) + (
        count * s["dense_update_s_per_row"] if dense else touched * s["sparse_update_s_per_touched_row"])
    t_gemm = 6 * G * slice_ * D / (c["gemm_flops_per_s_per_core"] * cores)
    t_elem = G * slice_ * c["elementwise_s_per_elem"]
    t_bb = b / (bb["samples_per_s_per_core"] * cores) if backbone else 0
    link = bw or c["memcpy_bytes_per_s"]
    t_net = max(bytes_w, bytes_s) / link
    return {"K": K, "slice": slice_, "G": G, "server_mem": srv, "worker_mem": wrk, "logits_mem": logits_mem,
            "bytes_worker": bytes_w, "bytes_worker_fc": fc_w, "bytes_server": bytes_s, "t_server": t_server,
            "t_gemm": t_gemm, "t_elem": t_elem, "t_backbone": t_bb, "t_net": t_net,
            "t_step": t_bb + t_gemm + t_elem + t_server + t_net}


def gib(x):
    return f"{x / GiB:,.1f}"


def layout(k, a, C, Wn, Pn, gbps):
    """The model for Wn worker nodes and Pn server nodes at a link of gbps Gb/s:
    per-node figures (a server node runs a.server_ranks server ranks)."""
    q = predict(k, C, a.dim, a.rate, a.batch, Wn, Pn * a.server_ranks, cores=a.cores, bw=gbps * 1e9 / 8)
    q["server_node_mem"] = q["server_mem"] * a.server_ranks
    q["bytes_server_node"] = q["bytes_server"] * a.server_ranks
    q["t_net"] = max(q["bytes_worker"], q["bytes_server_node"]) / (gbps * 1e9 / 8)
    # The server ranks of a node work in parallel; t_server is one rank's.
    compute = q["t_backbone"] + q["t_gemm"] + q["t_server"]
    q["t_step"] = compute + q["t_elem"] + q["t_net"]
    q["t_step_mt"] = compute + q["t_elem"] / a.cores + q["t_net"]  # element-wise part on all cores
    q["compute_mt"] = compute + q["t_elem"] / a.cores
    q["node"] = a.node_gib * GiB * a.usable
    return q


def largest(ok, lo=1e5, hi=1e13):
    """The largest C (to 0.1%) with ok(C), ok monotone decreasing."""
    if not ok(lo):
        return 0
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def model(args):
    k = json.load(open(args.constants))
    a = args
    mo = k["measured_on"]
    print(f"Constants: {os.path.relpath(args.constants)} (measured {mo['date']}, {mo['cpu']}, commit {mo['commit']}). "
          f"Assumed: D = {a.dim}, sample_rate {a.rate}, SGD with momentum (sparse), r50 backbone, batch {a.batch} per "
          f"worker node (one worker rank with {a.cores} threads), {a.server_ranks} server ranks per server node, "
          f"{a.node_gib:g} GiB nodes of which {a.usable:.0%} usable; N nodes = N/2 worker + N/2 server nodes.\n")
    print("| identities | nodes (W + P) | global batch | server node GiB | worker node GiB (logits) "
          "| GB/step per worker node / server node | backbone s | logits GEMMs s | logits element-wise s, 1 thread "
          "| server s | network s at 25 / 100 Gb/s | step s at 25 / 100 Gb/s | step s, element-wise on all cores, "
          "25 / 100 Gb/s | samples/s (that, 100 Gb/s) | fits in 256 GiB nodes? |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for C in (10_000_000, 100_000_000, 1_000_000_000):
        for N in a.nodes:
            q, r = layout(k, a, C, N // 2, N // 2, 25), layout(k, a, C, N // 2, N // 2, 100)
            bad = [w for w, m in (("server", q["server_node_mem"]), ("worker", q["worker_mem"])) if m > q["node"]]
            print(f"| {C:,} | {N} ({N // 2} + {N // 2}) | {q['G']:,} | {gib(q['server_node_mem'])} "
                  f"| {gib(q['worker_mem'])} ({gib(q['logits_mem'])}) | {q['bytes_worker'] / 1e9:.2f} / "
                  f"{q['bytes_server_node'] / 1e9:.2f} | {q['t_backbone']:.2f} | {q['t_gemm']:.2f} | {q['t_elem']:.1f} "
                  f"| {q['t_server']:.3f} | {q['t_net']:.2f} / {r['t_net']:.2f} | {q['t_step']:.1f} / {r['t_step']:.1f} "
                  f"| {q['t_step_mt']:.1f} / {r['t_step_mt']:.1f} | {r['G'] / r['t_step_mt']:,.0f} "
                  f"| {'no: ' + ' and '.join(bad) + ' memory' if bad else 'yes'} |")
    print("\nWhere each limit is reached, N/2 worker + N/2 server nodes (identities):\n")
    print("| nodes | server memory full | worker memory full (logits B_global x K/W) "
          "| network (25 Gb/s) slower than compute (element-wise on all cores) | the same at 100 Gb/s "
          "| first limit |")
    print("|---|---|---|---|---|---|")
    for N in (8, 16, 32, 64):
        W = P = N // 2
        lim = {"server memory": largest(lambda C: layout(k, a, C, W, P, 25)["server_node_mem"] <= a.node_gib * GiB * a.usable),
               "worker memory": largest(lambda C: layout(k, a, C, W, P, 25)["worker_mem"] <= a.node_gib * GiB * a.usable)}
        net = {g: largest(lambda C: layout(k, a, C, W, P, g)["t_net"] <= layout(k, a, C, W, P, g)["compute_mt"])
               for g in (25, 100)}
        lim["network at 25 Gb/s"] = net[25]
        first = min(lim, key=lim.get)
        f = lambda v: f"{v / 1e6:,.0f}M" if v < 1e12 else "never"
        print(f"| {N} | {f(lim['server memory'])} | {f(lim['worker memory'])} | {f(net[25])} | {f(net[100])} "
              f"| {first} at {f(lim[first])} |")
    # The largest C the cluster trains, over every worker/server split.
    best = (0, 0, 0)
    for Wn in range(1, a.cluster):
        Pn = a.cluster - Wn
        C = largest(lambda C: (lambda q: q["server_node_mem"] <= q["node"] and q["worker_mem"] <= q["node"])(
            layout(k, a, C, Wn, Pn, 25)))
        best = max(best, (C, Wn, Pn))
    C, Wn, Pn = best
    q, r = layout(k, a, C, Wn, Pn, 25), layout(k, a, C, Wn, Pn, 100)
    print(f"\n{a.cluster} nodes x {a.node_gib:g} GiB: at most {C / 1e9:.2f} billion identities, with {Wn} worker nodes "
          f"and {Pn} server nodes (global batch {q['G']:,}, K = {q['K']:,.0f} sampled classes a step): a server node "
          f"holds {gib(q['server_node_mem'])} GiB, a worker node {gib(q['worker_mem'])} GiB of which logits "
          f"{gib(q['logits_mem'])} GiB; a step takes {q['t_step']:.0f} s at 25 Gb/s ({r['t_step']:.0f} s at 100 Gb/s), "
          f"of which {q['t_elem']:.0f} s is the logits' element-wise part on one thread; with that part on all "
          f"{a.cores} cores, {q['t_step_mt']:.1f} s / {r['t_step_mt']:.1f} s "
          f"({r['G'] / r['t_step_mt']:,.0f} samples/s at 100 Gb/s).")


# ---------------------------------------------------------------- the check

def check(args):
    k = json.load(open(args.constants))
    W = P = 2
    C, D, rate, b = args.classes, args.dim, args.rate, args.batch
    p = predict(k, C, D, rate, b, W, P, cores=1, backbone=False)
    free = open("/proc/meminfo").read()
    avail = int(re.search(r"MemAvailable:\s+(\d+)", free).group(1)) * 1024
    need = 2 * p["server_mem"] + 2 * p["worker_mem"]
    print(f"predicted total {need / GiB:.1f} GiB; available {avail / GiB:.1f} GiB", file=sys.stderr)
    if need > 0.6 * avail:
        sys.exit("not enough free memory on this machine for the check now; try later or a smaller --classes")
    LOAD.append(open("/proc/loadavg").read().split()[0])
    # Three progress lines; the window is between the first two, so that the last
    # step's line (which mpirun may pass on late, after the final checkpoint) is not in it.
    third = args.steps // 3
    log, peaks = job(args.build, W, P, C, D, rate, b, args.steps, ["--profile", "1", "--frequent", str(third)])
    t, by = window(profile_windows(log), 0, 1)
    mib = lambda v: f"{v / 2**20:,.0f} MiB"
    print(f"\n### Check: C = {C:,}, D = {D}, sample_rate {rate}, {W} workers + {P} servers, batch {b} per worker, "
          f"fmnist, msg_chunk_bytes {CHUNK}, steps {third + 1}-{2 * third}\n")
    print("| quantity | predicted | measured | measured / predicted |")
    print("|---|---|---|---|")
    rows = [("server peak memory (rank 2, 3)", p["server_mem"], statistics.mean(peaks[r] for r in (2, 3)), mib),
            ("worker peak memory (rank 0, 1)", p["worker_mem"], statistics.mean(peaks[r] for r in (0, 1)), mib),
            ("bytes pulled per step (all workers)", p["K"] * 4 * D, by["pulled"], lambda v: f"{v:,.0f}"),
            ("bytes pushed per step (all workers)", p["K"] * 4 * D, by["pushed"], lambda v: f"{v:,.0f}"),
            ("framing bytes per step", p["K"] * k["protocol"]["framing_bytes_per_row"], by["headers"],
             lambda v: f"{v:,.0f}"),
            ]
    for name, pv, mv, fmt in rows:
        print(f"| {name} | {fmt(pv)} | {fmt(mv)} | {mv / pv:.2f} |")
    # The constants are CPU times of one thread; on a machine shared with other work a
    # rank gets only part of a core. Each rank's CPU time is sampled at the progress
    # lines: a worker polls while it waits (always runnable), so its CPU time over
    # wall time is the share of a core it got, and a phase's CPU time is its wall
    # time times that share. A server's CPU time includes what it spends waiting
    # inside MPI for split messages to complete.
    (t0, c0), (t1, c1) = CPU_AT[0], CPU_AT[1]
    n = third
    share = {r: (c1[r] - c0[r]) / (t1 - t0) for r in c1}
    sw = statistics.mean(share[r] for r in range(W))
    srv_cpu = statistics.mean(c1[r] - c0[r] for r in range(W, W + P)) / n
    srv_pred = p["t_server"] + (p["K"] / P) * 4 * D / k["compute"]["memcpy_bytes_per_s"]
    print(f"\n| time per step (load average {LOAD[0]} at start, {open('/proc/loadavg').read().split()[0]} at end; "
          f"the workers got {sw:.0%} of a core) | predicted CPU s | measured | measured / predicted |")
    print("|---|---|---|---|")
    print(f"| a server's CPU time (pull, push, sparse update of {p['K'] / P:,.0f} rows; receiving the pushes); "
          f"it used {srv_cpu * n / (t1 - t0):.0%} of a core | {srv_pred:.3f} | {srv_cpu:.3f} | {srv_cpu / srv_pred:.2f} |")
    print(f"| a worker's logits (af_fc_loss, one thread): wall {t['logits']:.3f} s x its share of a core "
          f"| {p['t_gemm'] + p['t_elem']:.3f} | {t['logits'] * sw:.3f} | {t['logits'] * sw / (p['t_gemm'] + p['t_elem']):.2f} |")
    print(f"| the whole step, wall (not predicted: fmnist's backbone is not in the model); the CPU samples' "
          f"window: {(t1 - t0) / n:.3f} s per step | | {sum(t.values()):.3f} | |")
    print(f"\n(peaks per rank: {', '.join(mib(peaks[r]) for r in sorted(peaks))})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("build")
    m.add_argument("--out", default=DEFAULT_JSON)
    o = sub.add_parser("model")
    o.add_argument("--constants", default=DEFAULT_JSON)
    o.add_argument("--dim", type=int, default=512)
    o.add_argument("--rate", type=float, default=0.1)
    o.add_argument("--batch", type=int, default=128, help="per worker node (arcface_torch's per-GPU batch)")
    o.add_argument("--cores", type=int, default=64, help="threads of a worker rank (one per worker node)")
    o.add_argument("--server_ranks", type=int, default=16, help="server ranks per server node")
    o.add_argument("--node_gib", type=float, default=256)
    o.add_argument("--usable", type=float, default=0.9)
    o.add_argument("--nodes", type=int, nargs="+", default=[8, 64])
    o.add_argument("--cluster", type=int, default=64)
    c = sub.add_parser("check")
    c.add_argument("build")
    c.add_argument("--constants", default=DEFAULT_JSON)
    c.add_argument("--classes", type=int, default=4_000_000)
    c.add_argument("--dim", type=int, default=128)
    c.add_argument("--rate", type=float, default=0.1)
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--steps", type=int, default=12)
    a = ap.parse_args()
    {"measure": measure, "model": model, "check": check}[a.cmd](a)


if __name__ == "__main__":
    main()
