"""Writes the test inputs for eval_pickle: verification .bin files pickled by
CPython itself (protocols 2 to 5, Python 3 bytes) or assembled opcode by
opcode the way Python 2's cPickle writes str (BINSTRING / SHORT_BINSTRING),
each with a .expect file holding what the reader must return; and malformed
files with the phrases their error message must contain.

usage: pickle_cases.py OUTDIR      (writes OUTDIR/cases.txt and the files)

cases.txt lines:  good<TAB>NAME   or   bad<TAB>NAME<TAB>phrase<TAB>phrase...
NAME.expect: u64 N, then 2N times (u64 length, bytes), then N issame bytes.
"""
import os
import pickle
import random
import struct
import sys


def expect_bytes(bins, issame):
    out = [struct.pack('<Q', len(issame))]
    for b in bins:
        out.append(struct.pack('<Q', len(b)))
        out.append(bytes(b))
    out.append(bytes(1 if s else 0 for s in issame))
    return b''.join(out)


class Py2Pickler:
    """Protocol-2 output as Python 2's cPickle writes (bins, issame_list)
    with str items: memoised strings and lists, APPENDS in batches of 1000,
    APPEND for a batch of one, BINGET for a repeated object."""

    def __init__(self, proto=2, long_memo_from=256, top_mark_tuple=False):
        self.out = bytearray()
        self.memo = {}
        self.proto = proto
        self.long_memo_from = long_memo_from
        self.top_mark_tuple = top_mark_tuple

    def put(self):
        k = len(self.memo)
        if k < self.long_memo_from and k < 256:
            self.out += b'q' + struct.pack('<B', k)
        else:
            self.out += b'r' + struct.pack('<I', k)
        return k

    def get(self, k):
        if k < 256:
            self.out += b'h' + struct.pack('<B', k)
        else:
            self.out += b'j' + struct.pack('<I', k)

    def save(self, obj):
        if isinstance(obj, bool):
            self.out += b'\x88' if obj else b'\x89'
        elif isinstance(obj, int):
            self.out += b'K' + struct.pack('<B', obj)
        elif isinstance(obj, bytes):
            if id(obj) in self.memo:
                self.get(self.memo[id(obj)])
                return
            if len(obj) < 256:
                self.out += b'U' + struct.pack('<B', len(obj)) + obj
            else:
                self.out += b'T' + struct.pack('<i', len(obj)) + obj
            self.memo[id(obj)] = self.put()
        elif isinstance(obj, list):
            self.out += b']'
            self.memo[id(obj)] = self.put()
            for i in range(0, len(obj), 1000):
                batch = obj[i:i + 1000]
                if len(batch) == 1:
                    self.save(batch[0])
                    self.out += b'a'
                else:
                    self.out += b'('
                    for x in batch:
                        self.save(x)
                    self.out += b'e'
        else:
            raise TypeError(type(obj))

    def dump(self, pair):
        if self.proto >= 2:
            self.out += b'\x80' + bytes([self.proto])
        if self.top_mark_tuple:
            self.out += b'('
        for x in pair:
            self.save(x)
        self.out += b't' if self.top_mark_tuple else b'\x86'
        self.put()
        self.out += b'.'
        return bytes(self.out)


def make_set(rng, n_pairs, big=True):
    """Images of many sizes around the one-byte and four-byte length
    boundaries, one past the 64 KiB frame size, one of every byte value (for
    the latin-1 path), an empty one, and one object used twice (memo get)."""
    sizes = [0, 1, 255, 256, 257, 1000]
    if big:
        sizes.append(70000)
    bins = []
    for i in range(2 * n_pairs):
        n = sizes[i] if i < len(sizes) else rng.choice([rng.randrange(0, 300), rng.randrange(300, 3000)])
        bins.append(bytes(rng.getrandbits(8) for _ in range(n)))
    if len(bins) > 8:
        bins[7] = bytes(range(256))
        bins[8] = bins[3]          # the same object twice
    issame = [rng.random() < 0.5 for _ in range(n_pairs)]
    return bins, issame


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    rng = random.Random(7)
    cases = []

    def good(name, data, bins, issame):
        # Every good file must load in CPython to what the .expect file says.
        b2, s2 = pickle.loads(data, encoding='bytes')
        assert [bytes(x) for x in b2] == [bytes(x) for x in bins], name
        assert [bool(x) for x in s2] == [bool(x) for x in issame], name
        with open(os.path.join(outdir, name + '.pkl'), 'wb') as f:
            f.write(data)
        with open(os.path.join(outdir, name + '.expect'), 'wb') as f:
            f.write(expect_bytes(bins, issame))
        cases.append('good\t' + name)

    def bad(name, data, *phrases):
        with open(os.path.join(outdir, name + '.pkl'), 'wb') as f:
            f.write(data)
        cases.append('\t'.join(['bad', name] + list(phrases)))

    # 1001 pairs: issame needs a batch of 1000 then a lone APPEND; 2002
    # images take LONG_BINPUT / LONG_BINGET memo keys past 255.
    bins, issame = make_set(rng, 1001)
    for proto in (2, 3, 4, 5):
        good('py3_p%d' % proto, pickle.dumps((bins, issame), protocol=proto), bins, issame)
    small_bins, small_same = make_set(rng, 6, big=False)
    for proto in (2, 3, 4, 5):
        good('py3_small_p%d' % proto, pickle.dumps((small_bins, small_same), protocol=proto),
             small_bins, small_same)
    # The pure-Python pickler makes the same opcodes by another code path.
    good('py3_pure_p2', _pure_dumps((small_bins, small_same), 2), small_bins, small_same)
    # A tuple of images, ints 0/1 for the labels, bytearray (BYTEARRAY8) at protocol 5.
    ints = [int(s) for s in small_same]
    good('py3_tuple_ints_p4', pickle.dumps((tuple(small_bins), ints), protocol=4), small_bins, small_same)
    good('py3_bytearray_p5', pickle.dumps(([bytearray(b) for b in small_bins], small_same), protocol=5),
         small_bins, small_same)
    good('py3_empty_p4', pickle.dumps(([], []), protocol=4), [], [])
    # Found by fuzz_pickle: MARK APPENDS with no items onto an empty list, and
    # MARK LIST before anything was pushed (both once did NULL + 0).
    good('empty_appends', b'\x80\x02](e](e\x86.', [], [])
    good('mark_list_first', b'\x80\x02(l(l\x86.', [], [])

    # Python 2 str items, hand-assembled.
    good('py2_p2', Py2Pickler().dump((bins, issame)), bins, issame)
    good('py2_small_p2', Py2Pickler().dump((small_bins, small_same)), small_bins, small_same)
    good('py2_longmemo_p2', Py2Pickler(long_memo_from=0).dump((small_bins, small_same)),
         small_bins, small_same)
    good('py2_noproto_marktuple', Py2Pickler(proto=1, top_mark_tuple=True).dump((small_bins, small_same)),
         small_bins, small_same)

    # ---- malformed ---------------------------------------------------------
    ok2 = pickle.dumps(([b'ab', b'cd'], [True]), protocol=2)
    bad('unknown_opcode', b'\x80\x02\xa0' + ok2[2:], '0xa0', 'not a pickle opcode', 'offset 2')
    bad('dict', pickle.dumps({b'a': 1}, protocol=4), '0x7d', 'EMPTY_DICT', 'offset 11')
    bad('bins_odd', pickle.dumps(([b'a', b'b', b'c'], [True]), protocol=4),
        'bins holds 3 images', 'issame_list 1 pairs', '2 * 1 = 2')
    bad('bins_short', pickle.dumps(([b'a', b'b'], [True, False]), protocol=2),
        'bins holds 2 images', '2 * 2 = 4')
    bad('issame_bytes', pickle.dumps(([b'a', b'b'], [b'x']), protocol=3),
        'issame_list[0]', 'byte string', 'expected a bool')
    bad('issame_int2', pickle.dumps(([b'a', b'b', b'c', b'd'], [True, 2]), protocol=4),
        'issame_list[1]', 'the int 2', 'expected a bool')
    bad('issame_none', pickle.dumps(([b'a', b'b'], [None]), protocol=2), '0x4e', '(NONE)', 'offset')
    bad('bins_str', pickle.dumps((['text', b'b'], [True]), protocol=4), 'bins[0]', 'unicode string')
    bad('not_a_pair', pickle.dumps([b'a'], protocol=4), 'expected the pair')
    bad('proto6', b'\x80\x06]\x94.', '(PROTO)', 'offset 0', 'protocol 6')
    bad('binget_unset', b'\x80\x02h\x05.', '(BINGET)', 'memo key 5 was never stored')
    bad('binstring_negative', b'\x80\x02T\xff\xff\xff\xff', '(BINSTRING)', 'negative length -1')
    bad('binbytes8_huge', b'\x80\x04\x8e' + struct.pack('<Q', 1 << 63) + b'x.',
        '(BINBYTES8)', 'truncated', '9223372036854775808')
    bad('frame_too_long', b'\x80\x04\x95' + struct.pack('<Q', 1000) + b'].', '(FRAME)', 'truncated')
    bad('appends_no_mark', b'\x80\x02]e.', '(APPENDS)', 'no MARK')
    bad('tuple2_underflow', b'\x80\x02]\x86.', '(TUPLE2)', 'needs 2 values')
    bad('mark_hides_stack', b'\x80\x02](\x86.', '(TUPLE2)', 'above the last MARK')
    bad('long_binput_huge', b'\x80\x02]r\xff\xff\xff\xff.', '(LONG_BINPUT)', 'exceeds the limit')
    bad('no_stop', ok2[:-1], 'truncated', 'without a STOP')
    bad('empty', b'', 'empty file')
    # _codecs.encode of text that is not latin-1.
    euro = '\u20ac'.encode('utf-8')
    bad('codecs_not_latin1',
        b'\x80\x02c_codecs\nencode\nX' + struct.pack('<I', len(euro)) + euro +
        b'X\x06\x00\x00\x00latin1\x86R.', '(REDUCE)', 'above U+00FF')
    bad('codecs_utf8',
        b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00utf-8\x86R.', "'utf-8'")
    bad('global_os_system', b'\x80\x02cos\nsystem\n.', '(GLOBAL)', "'os.system'")
    bad('global_no_newline', b'\x80\x02c_codecs', '(GLOBAL)', 'truncated')
    try:
        import numpy as np
        arr = np.array([True, False])
        bad('issame_numpy_p2', pickle.dumps(([b'a'] * 4, arr), protocol=2), '(GLOBAL)', 'numpy')
        bad('issame_numpy_p4', pickle.dumps(([b'a'] * 4, arr), protocol=4), '(STACK_GLOBAL)', 'numpy')
    except ImportError:
        pass

    with open(os.path.join(outdir, 'cases.txt'), 'w') as f:
        f.write('\n'.join(cases) + '\n')
    print('pickle_cases.py: wrote %d cases to %s' % (len(cases), outdir))


def _pure_dumps(obj, proto):
    import io
    buf = io.BytesIO()
    pickle._Pickler(buf, protocol=proto).dump(obj)
    return buf.getvalue()


if __name__ == '__main__':
    main()
