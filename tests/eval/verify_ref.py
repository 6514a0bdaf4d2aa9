"""Reference for eval_verify: insightface's verification protocol written
directly in NumPy from its description (calculate_roc, calculate_accuracy,
calculate_val, calculate_val_far, KFold(10, shuffle=False), XNorm), run on
random embeddings with planted same pairs, and on quantised distances that
land exactly on thresholds.

usage: verify_ref.py OUTDIR     (writes OUTDIR/cases.txt and OUTDIR/NAME.case)

NAME.case, little-endian:
  int64 n_pairs, int64 dim (0: no embeddings, distances only)
  float32 emb[2N, dim], float32 emb_flip[2N, dim]
  uint8 issame[N], float64 dist[N]            (distances the reference used)
  float64: xnorm, acc[10], best_thr[10], acc_mean, acc_std,
           roc_thr[400], roc_tpr[400], roc_fpr[400],
           then for FAR 1e-3 and 1e-4: thr[10], tar[10], far[10], tar_mean, tar_std, far_mean
"""
import os
import sys

try:
    import numpy as np
except ModuleNotFoundError:
    print(f"SKIP: NumPy, the reference, is not installed for {sys.executable}")
    sys.exit(77)

FOLDS = 10


def kfold(n):
    """sklearn KFold(n_splits=10, shuffle=False)."""
    sizes = np.full(FOLDS, n // FOLDS, dtype=np.int64)
    sizes[:n % FOLDS] += 1
    start = 0
    idx = np.arange(n)
    for s in sizes:
        test = idx[start:start + s]
        train = np.concatenate([idx[:start], idx[start + s:]])
        yield train, test
        start += s


def rate(a, b):
    # insightface's 0-for-0/0 (calculate_accuracy); calculate_val_far would raise.
    return 0.0 if b == 0 else float(a) / float(b)


def accuracy_at(thresholds, dist, same):
    """calculate_accuracy for every threshold at once: tpr, fpr, acc."""
    pred = dist[None, :] < thresholds[:, None]
    tp = np.sum(pred & same[None, :], axis=1)
    fp = np.sum(pred & ~same[None, :], axis=1)
    tn = np.sum(~pred & ~same[None, :], axis=1)
    fn = np.sum(~pred & same[None, :], axis=1)
    tpr = np.array([rate(a, a + b) for a, b in zip(tp, fn)])
    fpr = np.array([rate(a, a + b) for a, b in zip(fp, tn)])
    acc = (tp + tn).astype(np.float64) / dist.size
    return tpr, fpr, acc


def val_far(threshold, dist, same):
    pred = dist < threshold
    ta = np.sum(pred & same)
    fa = np.sum(pred & ~same)
    return rate(ta, np.sum(same)), rate(fa, np.sum(~same))


def slinear(xs, ys, x):
    """scipy interp1d(xs, ys, kind='slinear')(x) for x inside [xs[0], xs[-1]]:
    interp1d stable-sorts xs, builds a degree-1 B-spline with knots
    [xs0, xs..., xsN-1] and evaluates it on the interval found by
    'largest knot <= x' (capped at the last interval); a zero-length interval
    evaluates to 0."""
    try:
        from scipy import interpolate
        return float(interpolate.interp1d(xs, ys, kind='slinear')(x))
    except ImportError:
        pass
    order = np.argsort(xs, kind='mergesort')
    xs, ys = xs[order], ys[order]
    j = int(np.searchsorted(xs, x, side='right')) - 1
    j = min(max(j, 0), len(xs) - 2)
    xa, xb = xs[j], xs[j + 1]
    if xa == xb:
        return 0.0
    w = 1.0 / (xb - xa)
    out = 0.0
    out += ys[j] * (w * (xb - x))
    out += ys[j + 1] * (w * (x - xa))
    return out


def calculate_roc(dist, same):
    thresholds = np.arange(0, 4, 0.01)
    tprs = np.zeros((FOLDS, len(thresholds)))
    fprs = np.zeros((FOLDS, len(thresholds)))
    acc = np.zeros(FOLDS)
    best = np.zeros(FOLDS)
    for f, (train, test) in enumerate(kfold(len(dist))):
        _, _, acc_train = accuracy_at(thresholds, dist[train], same[train])
        b = np.argmax(acc_train)
        tprs[f], fprs[f], _ = accuracy_at(thresholds, dist[test], same[test])
        _, _, a = accuracy_at(thresholds[b:b + 1], dist[test], same[test])
        acc[f] = a[0]
        best[f] = thresholds[b]
    return thresholds, np.mean(tprs, 0), np.mean(fprs, 0), acc, best


def calculate_val(dist, same, far_target):
    thresholds = np.arange(0, 4, 0.001)
    val = np.zeros(FOLDS)
    far = np.zeros(FOLDS)
    thr = np.zeros(FOLDS)
    for f, (train, test) in enumerate(kfold(len(dist))):
        pred = dist[train][None, :] < thresholds[:, None]
        n_diff = np.sum(~same[train])
        far_train = np.array([rate(x, n_diff) for x in np.sum(pred & ~same[train][None, :], axis=1)])
        if np.max(far_train) >= far_target:
            threshold = slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[f], far[f] = val_far(threshold, dist[test], same[test])
        thr[f] = threshold
    return thr, val, far, np.mean(val), np.std(val), np.mean(far)


def normalize(x):
    """sklearn.preprocessing.normalize(x) (L2, rows)."""
    norms = np.sqrt(np.einsum('ij,ij->i', x, x))
    norms[norms == 0.0] = 1.0
    return x / norms[:, None]


def write_case(outdir, name, emb, flip, same, dist, xnorm):
    n = len(same)
    dim = 0 if emb is None else emb.shape[1]
    thr, tpr, fpr, acc, best = calculate_roc(dist, same)
    parts = [np.array([n, dim], dtype='<i8').tobytes()]
    if dim:
        parts += [emb.astype('<f4').tobytes(), flip.astype('<f4').tobytes()]
    parts += [same.astype(np.uint8).tobytes(), dist.astype('<f8').tobytes()]
    ref = [np.array([xnorm]), acc, best, np.array([np.mean(acc), np.std(acc)]), thr, tpr, fpr]
    summary = []
    for target in (1e-3, 1e-4):
        vthr, val, far, vm, vs, fm = calculate_val(dist, same, target)
        ref += [vthr, val, far, np.array([vm, vs, fm])]
        summary.append('TAR@FAR=%g %.4f' % (target, vm))
    parts.append(np.concatenate(ref).astype('<f8').tobytes())
    with open(os.path.join(outdir, name + '.case'), 'wb') as f:
        f.write(b''.join(parts))
    print('  %-16s N=%5d acc %.5f+-%.5f %s' % (name, n, np.mean(acc), np.std(acc), ' '.join(summary)))
    return name


def embedding_case(outdir, rng, name, n, dim=64):
    same = rng.random(n) < 0.5
    base = rng.standard_normal((n, dim))
    # Per-pair noise from clean to heavy, so same-pair distances overlap the
    # different pairs' (about 2) and accuracy is neither 50% nor 100%.
    scale = rng.uniform(0.6, 2.4, size=(n, 1))
    e = np.empty((2 * n, dim))
    e[0::2] = base + scale * rng.standard_normal((n, dim))
    other = rng.standard_normal((n, dim))
    e[1::2] = np.where(same[:, None], base, other) + scale * rng.standard_normal((n, dim))
    e *= rng.uniform(5, 30, size=(2 * n, 1))          # raw norms vary, as a network's do
    emb = e.astype(np.float32)
    flip = (e + 0.3 * rng.standard_normal(e.shape) * np.abs(e).mean()).astype(np.float32)
    # insightface test(): float64 copies of the network outputs.
    e0, e1 = emb.astype(np.float64), flip.astype(np.float64)
    xnorm = np.mean([np.linalg.norm(r) for r in e0] + [np.linalg.norm(r) for r in e1])
    x = normalize(e0 + e1)
    dist = np.sum(np.square(x[0::2] - x[1::2]), 1)
    return write_case(outdir, name, emb, flip, same, dist, xnorm)


def quantised_case(outdir, rng, name, n):
    """Distances exactly on the 0.01 and 0.001 thresholds (ties for '<' and
    for argmax), a few NaN, labels correlated with distance."""
    coarse = np.arange(0, 4, 0.01)
    fine = np.arange(0, 4, 0.001)
    dist = np.where(rng.random(n) < 0.5,
                    coarse[rng.integers(0, len(coarse), n)], fine[rng.integers(0, len(fine), n)])
    same = rng.random(n) < np.clip(1.2 - dist / 2.5, 0.05, 0.95)
    dist[rng.integers(0, n, 3)] = np.nan
    return write_case(outdir, name, None, None, same, dist, np.nan)


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(20240607)
    names = []
    for n in (10, 37, 100, 999, 1003, 6000):
        names.append(embedding_case(outdir, rng, 'emb_n%d' % n, n))
    names.append(quantised_case(outdir, rng, 'quant_n2503', 2503))
    names.append(quantised_case(outdir, rng, 'quant_n6000', 6000))
    # Folds without same pairs: insightface's 0/0 cases.
    same = np.zeros(23, dtype=bool)
    same[[3, 15]] = True
    dist = rng.uniform(0, 4, 23)
    names.append(write_case(outdir, 'sparse_n23', None, None, same, dist, np.nan))
    with open(os.path.join(outdir, 'cases.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')


if __name__ == '__main__':
    main()
