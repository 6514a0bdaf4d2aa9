"""An independent MXNet RecordIO writer for tests/data/t_recordio.c, written
from MXNet's recordio.py / dmlc-core recordio.cc description with `struct`
only (no MXNet, no project code).

  write_rec.py MANIFEST PREFIX MODE

MANIFEST: lines "label<TAB>jpeg_path"; writes PREFIX.rec and PREFIX.idx.
MODE:
  header   insightface layout: record 0 = IRHeader(flag=2, label=0) + floats
           (N+1, N+1+C); images keys 1..N; identity records N+1.. with
           [start, end) key ranges. Image 2 is written with flag=2 labels
           (label, 7.0) like a multi-label record; image 1 gets a JPEG comment
           holding the magic word at a 4-aligned payload offset, so that the
           writer must split it with the continuation flag.
  plain    no header record: every key is an image, keys 0, 3, 6, ... (not
           contiguous), idx lines in reverse order; image 5 multi-label
           (flag=2, labels (label, 7.0)).
"""
import struct
import sys

MAGIC = 0xCED7230A
IR_FORMAT = "IfQQ"  # flag, label, id, id2 (mxnet.recordio._IR_FORMAT)


def pack(flag_labels, label, rid, data):
    """mxnet.recordio.pack: a list label becomes flag=len, label=0, floats first."""
    if flag_labels is not None:
        return struct.pack(IR_FORMAT, len(flag_labels), 0.0, rid, 0) + struct.pack("<%df" % len(flag_labels), *flag_labels) + data
    return struct.pack(IR_FORMAT, 0, float(label), rid, 0) + data


def write_record(f, buf):
    """dmlc RecordIOWriter::WriteRecord: cut at 4-aligned magic words."""
    magic = struct.pack("<I", MAGIC)
    n = len(buf)
    lower = n & ~3
    dptr = 0
    parts = 0
    for i in range(0, lower, 4):
        if buf[i:i + 4] == magic:
            cflag = 1 if dptr == 0 else 2
            f.write(magic + struct.pack("<I", (cflag << 29) | (i - dptr)) + buf[dptr:i])
            dptr = i + 4
            parts += 1
    cflag = 3 if dptr != 0 else 0
    f.write(magic + struct.pack("<I", (cflag << 29) | (n - dptr)) + buf[dptr:])
    pad = (4 - n % 4) % 4
    f.write(b"\0" * pad)
    return parts + 1


def with_magic_comment(jpeg, header_len):
    """Insert a COM segment after SOI whose body holds the magic word at a
    payload offset that is a multiple of 4."""
    body = bytearray(b"xx" * 8)
    seg_start = header_len + 2 + 4  # payload offset of the COM body
    off = (-seg_start) % 4 + 4
    body[off:off + 4] = struct.pack("<I", MAGIC)
    seg = b"\xff\xfe" + struct.pack(">H", len(body) + 2) + bytes(body)
    return jpeg[:2] + seg + jpeg[2:]


def main():
    manifest, prefix, mode = sys.argv[1:4]
    items = []
    for line in open(manifest):
        if line.strip():
            lab, path = line.rstrip("\n").split("\t")
            items.append((int(lab), open(path, "rb").read()))
    idx_lines = []
    split_parts = 0
    with open(prefix + ".rec", "wb") as f:
        if mode == "header":
            n = len(items)
            classes = sorted(set(lab for lab, _ in items))
            idx_lines.append((0, f.tell()))
            write_record(f, pack([float(n + 1), float(n + 1 + len(classes))], 0, 0, b""))
            for k, (lab, data) in enumerate(items, start=1):
                idx_lines.append((k, f.tell()))
                if k == 1:
                    data = with_magic_comment(data, 24)
                    split_parts = write_record(f, pack(None, lab, k, data))
                elif k == 2:
                    write_record(f, pack([float(lab), 7.0], 0, k, data))
                else:
                    write_record(f, pack(None, lab, k, data))
            for j, c in enumerate(classes):
                keys = [k for k, (lab, _) in enumerate(items, start=1) if lab == c]
                key = n + 1 + j
                idx_lines.append((key, f.tell()))
                write_record(f, pack([float(min(keys)), float(max(keys) + 1)], 0, key, b""))
        elif mode == "plain":
            for k, (lab, data) in enumerate(items):
                idx_lines.append((3 * k, f.tell()))
                write_record(f, pack([float(lab), 7.0] if k == 5 else None, lab, 3 * k, data))
            idx_lines.reverse()
        else:
            sys.exit("unknown mode " + mode)
    with open(prefix + ".idx", "w") as f:
        for key, off in idx_lines:
            f.write("%d\t%d\n" % (key, off))
    print("write_rec.py: %d records, %s mode, split record parts: %d" % (len(idx_lines), mode, split_parts))


if __name__ == "__main__":
    main()
