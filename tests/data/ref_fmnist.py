"""Independent Fashion-MNIST reference for tests/data/t_datasets.c: reads the
IDX files with gzip + numpy, normalises like torchvision
(ToTensor + Normalize(0.5, 0.5)) in float32.

  ref_fmnist.py DIR train|test FIRST STEP COUNT OUT_F32 OUT_LABELS

writes images FIRST, FIRST+STEP, ... (COUNT of them) as float32 (COUNT,1,28,28)
and their labels as int64."""
import gzip
import sys

import numpy as np


def main():
    d, split, first, step, count, out_f, out_l = sys.argv[1:8]
    stem = "train" if split == "train" else "t10k"
    with gzip.open("%s/%s-images-idx3-ubyte.gz" % (d, stem)) as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    assert magic == 0x803, hex(magic)
    imgs = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows, cols)
    with gzip.open("%s/%s-labels-idx1-ubyte.gz" % (d, stem)) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)
    sel = [int(first) + int(step) * i for i in range(int(count))]
    x = imgs[sel].astype(np.float32)
    x = (x / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    x.reshape(len(sel), 1, rows, cols).astype(np.float32).tofile(out_f)
    labels[sel].astype(np.int64).tofile(out_l)
    print("ref_fmnist.py: %s split, %d images, %d selected" % (split, n, len(sel)))


if __name__ == "__main__":
    main()
