"""An independent reader for what `arcface-data pack` / af_recordio_pack
writes, following insightface's MXFaceDataset and MXNet's recordio.py with
`struct` only. Checks the insightface layout and that the image bytes are
the folder's files, byte for byte.

  check_pack.py PREFIX FOLDER

Exits non-zero on the first mismatch; prints what it checked.
"""
import os
import struct
import sys

MAGIC = 0xCED7230A


def read_record(buf, off):
    out = b""
    first = True
    while True:
        magic, lrec = struct.unpack_from("<II", buf, off)
        assert magic == MAGIC, "bad magic at %d" % off
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        assert (cflag in (0, 1)) if first else (cflag in (2, 3)), "cflag %d at %d" % (cflag, off)
        if not first:
            out += struct.pack("<I", MAGIC)
        out += buf[off + 8:off + 8 + length]
        off += 8 + length + (-length) % 4
        first = False
        if cflag in (0, 3):
            return out


def unpack(rec):
    flag, label, rid, rid2 = struct.unpack_from("<IfQQ", rec, 0)
    s = rec[24:]
    if flag > 0:
        label = list(struct.unpack_from("<%df" % flag, s, 0))
        s = s[4 * flag:]
    return flag, label, rid, s


def main():
    prefix, folder = sys.argv[1:3]
    buf = open(prefix + ".rec", "rb").read()
    idx = {}
    for line in open(prefix + ".idx"):
        k, o = line.split("\t")
        idx[int(k)] = int(o)
    flag, lab, _, data = unpack(read_record(buf, idx[0]))
    assert flag == 2 and data == b"", "record 0: flag %d, %d data bytes" % (flag, len(data))
    a, b = int(lab[0]), int(lab[1])
    ids = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    files = []
    for c, d in enumerate(ids):
        for fn in sorted(os.listdir(os.path.join(folder, d))):
            if fn.lower().endswith((".jpg", ".jpeg", ".png")) and not fn.startswith("."):
                files.append((c, os.path.join(folder, d, fn)))
    assert a == len(files) + 1 and b == a + len(ids), "header (%d, %d) for %d files, %d ids" % (a, b, len(files), len(ids))
    for key in range(1, a):  # MXFaceDataset: imgidx = range(1, header0[0])
        flag, label, rid, img = unpack(read_record(buf, idx[key]))
        label = label[0] if isinstance(label, list) else label
        c, path = files[key - 1]
        assert int(label) == c, "key %d: label %r, expected %d" % (key, label, c)
        assert rid == key, "key %d: id %d" % (key, rid)
        assert img == open(path, "rb").read(), "key %d: bytes differ from %s" % (key, path)
    for j, key in enumerate(range(a, b)):
        flag, lab, _, data = unpack(read_record(buf, idx[key]))
        want = [k for k in range(1, a) if files[k - 1][0] == j]
        lo, hi = int(lab[0]), int(lab[1])
        assert flag == 2 and data == b"", "identity record %d" % key
        assert list(range(lo, hi)) == want, "identity %d: range [%d, %d), expected keys %r" % (j, lo, hi, want)
    assert len(idx) == b, "idx has %d keys, expected %d" % (len(idx), b)
    print("check_pack.py: %d images, %d identities, header (%d, %d): layout and bytes match" % (a - 1, b - a, a, b))


if __name__ == "__main__":
    main()
