"""Independent references for tests/data/t_image.c (run by /usr/bin/python3).

  pil_decode IN OUT              IN decoded by PIL (RGB, or L for grey) -> raw bytes
  torch_resize IN SH SW C DH DW OUT
                                 raw uint8 (SH,SW,C) -> torch bilinear, align_corners=False,
                                 antialias=False -> float32 (DH,DW,C)
  norm_table OUT                 float32 ((v/255 - 0.5)/0.5) for v = 0..255, torchvision order
  png_alpha OUT_PNG OUT_RAW C    a hand-built PNG with alpha (C=3: RGBA, C=1: grey+alpha),
                                 written with zlib + struct only; OUT_RAW = pixels without alpha
  jobs FILE                      each line of FILE is one of the above (one interpreter and
                                 one torch import for all of them)
"""
import struct
import sys
import zlib

import numpy as np


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def main():
    if sys.argv[1] == "jobs":
        for line in open(sys.argv[2]):
            if line.strip():
                run(line.split())
    else:
        run(sys.argv[1:])


def run(argv):
    argv = [None] + argv
    cmd = argv[1]
    if cmd == "pil_decode":
        from PIL import Image
        im = Image.open(argv[2])
        im = im.convert("L" if im.mode == "L" else "RGB")
        open(argv[3], "wb").write(np.asarray(im, dtype=np.uint8).tobytes())
    elif cmd == "torch_resize":
        import torch
        import torch.nn.functional as F
        sh, sw, c, dh, dw = map(int, argv[3:8])
        a = np.fromfile(argv[2], dtype=np.uint8).reshape(sh, sw, c).astype(np.float32)
        t = torch.from_numpy(a).permute(2, 0, 1)[None]
        r = F.interpolate(t, size=(dh, dw), mode="bilinear", align_corners=False, antialias=False)
        r[0].permute(1, 2, 0).contiguous().numpy().astype(np.float32).tofile(argv[8])
    elif cmd == "norm_table":
        import torch
        x = torch.arange(256, dtype=torch.uint8).float().div(255)  # ToTensor
        x = (x - 0.5) / 0.5  # Normalize(mean=0.5, std=0.5)
        x.numpy().astype(np.float32).tofile(argv[2])
    elif cmd == "png_alpha":
        c = int(argv[4])
        h, w = 7, 5
        rng = np.random.default_rng(5)
        px = rng.integers(0, 256, size=(h, w, c + 1), dtype=np.uint8)
        color_type = 6 if c == 3 else 4
        raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
        png = (b"\x89PNG\r\n\x1a\n"
               + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
               + png_chunk(b"IDAT", zlib.compress(raw))
               + png_chunk(b"IEND", b""))
        open(argv[2], "wb").write(png)
        open(argv[3], "wb").write(px[:, :, :c].tobytes())
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
