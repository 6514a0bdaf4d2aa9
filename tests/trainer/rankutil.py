"""Helpers the trainer fault tests share: finding a running job's rank by its pid,
and the step its checkpoints reached."""
import os
import re


def rank_pid(out, rank):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv[0].endswith(b"arcface-train") or out.encode() not in argv:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
            if env.get(b"OMPI_COMM_WORLD_RANK") == str(rank).encode():
                return int(pid)
        except OSError:
            continue
    return None


def latest_step(out):
    try:
        with open(os.path.join(out, "checkpoints", "latest")) as f:
            return int(re.search(r"(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return -1
