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


def write_val_bin(path, n_pairs, size=28):
    """An insightface verification file (pickle of encoded images and issame
    flags) of n_pairs pairs over a few distinct 8-bit grayscale PNGs, written
    with zlib and struct only: how long an evaluation takes is what matters."""
    import pickle
    import random
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    def png(pixels):
        raw = b"".join(b"\0" + bytes(pixels[y * size:(y + 1) * size]) for y in range(size))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

    rng = random.Random(5)
    images = [png([rng.randrange(256) for _ in range(size * size)]) for _ in range(8)]
    bins, issame = [], []
    for k in range(n_pairs):
        bins += [images[k % 8], images[(k + k % 2) % 8]]
        issame.append(k % 2 == 0)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=2)
