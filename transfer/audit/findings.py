"""The four findings, computed from what fitting already has: each image's content hash (the feature
cache key), its pooled features, and out-of-fold probabilities of a linear probe on them.

Everything here is plain numpy on arrays (plus the project's probe for the out-of-fold step); it reads
no image files except to confirm a same-pixels candidate pair (`pixel_twins`).

- `exact_groups`: images with the same bytes (same content key), joined with same-decoded-pixels
  pairs (`pixel_twins`: pairs whose features are all but identical, confirmed by decoding both);
- `similarity_scan`: one blocked pass over the cosine-similarity matrix of L2-normalised features:
  each image's two nearest images, the pairs above a high similarity, and each image's per-class
  k-NN similarity (for outliers) -- memory is [block, n], never [n, n];
- `near_pairs`: near-duplicates from those (mutual nearest images that stand out from the rest);
- `out_of_fold_probabilities`: k-fold probe probabilities, copies of one image kept in one fold
  (a copy in the training fold would vouch for its own label);
- `label_issues`: confident learning (Northcutt et al., 2021) on those probabilities;
- `outliers`: images whose best per-class k-NN similarity is far below the rest (robust z-score).
"""

from __future__ import annotations

import numpy as np

from transferzoo.transfer.probe.cv import stratified_folds
from transferzoo.transfer.probe.linear import ProbeSpec, fit_probe

SCAN_BLOCK = 1024  # rows of the similarity matrix held at once
MAX_PAIRS = 20000  # high-similarity pairs kept (the most similar first)
PIXEL_CANDIDATE_SIM = 0.9995  # feature cosine above which a pair is decoded to compare pixels
MAX_PIXEL_CHECKS = 2000
# L-BFGS iterations of each out-of-fold probe: on flowers 30 give the same flags as 300 (bench_audit), 3x faster
OOF_MAX_ITER = 30


def normalise_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return [g for g in out.values() if len(g) > 1]


def similarity_scan(Z: np.ndarray, labels: np.ndarray, num_classes: int, high: float, k: int = 5):
    """One pass over Z @ Z.T (Z: L2-normalised rows) in blocks.
    -> (pairs [m, 2] with i < j and similarity >= min(high, PIXEL_CANDIDATE_SIM), their similarities
        (most similar first), top2_idx [n, 2] and top2_sim [n, 2] (each image's two nearest other images),
        knn [n, num_classes]: mean similarity to the k nearest other images of each class (nan: class too small))."""
    n = len(Z)
    floor = min(high, PIXEL_CANDIDATE_SIM)
    knn = np.full((n, num_classes), np.nan, dtype=np.float32)
    top2_idx = np.full((n, 2), -1, dtype=np.int64)
    top2_sim = np.full((n, 2), -np.inf, dtype=np.float32)
    pi, pj, ps = [], [], []
    cols = [np.flatnonzero(labels == c) for c in range(num_classes)]
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    Zt = Z.T  # the caller bounds BLAS's threads (threads.compute_threads)
    for start in range(0, n, SCAN_BLOCK):
        stop = min(n, start + SCAN_BLOCK)
        S = Z[start:stop] @ Zt  # [b, n]
        rows = np.arange(stop - start)
        S[rows, start + rows] = -np.inf  # not its own neighbour
        if n > 2:
            t2 = np.argpartition(-S, 1, axis=1)[:, :2]
            v2 = np.take_along_axis(S, t2, axis=1)
            o = np.argsort(-v2, axis=1)
            top2_idx[start:stop] = np.take_along_axis(t2, o, axis=1)
            top2_sim[start:stop] = np.take_along_axis(v2, o, axis=1)
        ii, jj = np.nonzero(S >= floor)
        keep = start + ii < jj
        pi.append(start + ii[keep])
        pj.append(jj[keep])
        ps.append(S[ii[keep], jj[keep]])
        for c, idx in enumerate(cols):
            kk = min(k, len(idx) - 1)  # an image of class c has len(idx) - 1 others
            if kk < 1:
                continue
            part = -np.partition(-S[:, idx], kk - 1, axis=1)[:, :kk]
            part[~np.isfinite(part)] = np.nan
            knn[start:stop, c] = np.nanmean(part, axis=1)
    i, j, s = (np.concatenate(a) if a else np.zeros(0) for a in (pi, pj, ps))
    order = np.argsort(-s, kind="stable")[:MAX_PAIRS]
    pairs = np.stack([i[order], j[order]], axis=1).astype(np.int64)
    return pairs, s[order].astype(np.float32), top2_idx, top2_sim, knn


def near_pairs(top2_idx, top2_sim, pairs, sims, gap: float, min_sim: float, high: float) -> dict:
    """{(i, j): similarity} of near-duplicate pairs (i < j). A pair qualifies when
    - i and j are each other's nearest image and each is closer to the other by at least `gap` than to
      its second-nearest image (the pair stands out from its neighbourhood: a class of look-alike
      photos has no such gap), and their similarity is at least `min_sim`; or
    - their similarity is at least `high` (the same photo: this catches 3+ copies of one image,
      which are each other's second neighbours and so have no gap)."""
    out = {}
    n = len(top2_idx)
    for i in range(n):
        j = int(top2_idx[i, 0])
        if j < 0 or i > j and int(top2_idx[j, 0]) == i:
            continue  # counted from the smaller index
        if int(top2_idx[j, 0]) != i:
            continue
        s = float(top2_sim[i, 0])
        if s >= min_sim and s - float(top2_sim[i, 1]) >= gap and s - float(top2_sim[j, 1]) >= gap:
            out[(min(i, j), max(i, j))] = s
    for (i, j), s in zip(pairs, sims):
        if s < high:
            break
        out[(int(i), int(j))] = float(s)
    return out


def pixel_twins(paths: list[str], pairs: np.ndarray, sims: np.ndarray, same_key: set) -> list[tuple[int, int]]:
    """Pairs (not already byte-identical) whose decoded pixels are identical. Only pairs whose
    features are all but identical are decoded, so this reads a handful of files, not the folder."""
    from transferzoo import zoo

    out = []
    checked = 0
    for (i, j), s in zip(pairs, sims):
        if s < PIXEL_CANDIDATE_SIM or checked >= MAX_PIXEL_CHECKS:
            break  # pairs are sorted by similarity
        if (int(i), int(j)) in same_key:
            continue
        checked += 1
        try:
            a, b = np.asarray(zoo.load_rgb(paths[i])), np.asarray(zoo.load_rgb(paths[j]))
        except zoo.ImageError:
            continue
        if a.shape == b.shape and np.array_equal(a, b):
            out.append((int(i), int(j)))
    return out


def out_of_fold_probabilities(
    X: np.ndarray, y: np.ndarray, num_classes: int, groups: np.ndarray, folds: int = 5, lam: float = 0.1, seed=0
) -> np.ndarray:
    """[n, C] probabilities, each row from a probe that never saw that image (nor a copy of it).
    `groups[i]`: the representative index of image i's exact-duplicate group (i itself if none)."""
    y = np.asarray(y)
    reps = np.unique(groups)
    present = np.bincount(y[reps], minlength=num_classes)
    folds = int(max(2, min(folds, present[present > 0].min())))
    fold_of_rep = np.empty(len(y), dtype=np.int64)
    for f, idx in enumerate(stratified_folds(y[reps], folds, seed)):
        fold_of_rep[reps[idx]] = f
    fold_of = fold_of_rep[groups]
    P = np.zeros((len(y), num_classes), dtype=np.float64)
    for f in range(folds):
        va, tr = np.flatnonzero(fold_of == f), np.flatnonzero(fold_of != f)
        probe = fit_probe(X[tr], y[tr], num_classes, lam, ProbeSpec(max_iter=OOF_MAX_ITER))
        lg = probe.logits(X[va]).astype(np.float64)
        lg -= lg.max(axis=1, keepdims=True)
        e = np.exp(lg)
        P[va] = e / e.sum(axis=1, keepdims=True)
    return P


def label_issues(P: np.ndarray, y: np.ndarray, min_margin: float = 0.0) -> list[dict]:
    """Confident learning: class j's threshold t_j is the mean probability of j over the images
    labelled j; an image labelled i is an issue when its confident class (the most probable class
    whose probability reaches its threshold) is some j != i and the probe's top class is j as well
    (cleanlab's 'both' rule). Ranked by the margin p_j - p_i (normalised margin), most likely first."""
    y = np.asarray(y)
    C = P.shape[1]
    t = np.array([P[y == j, j].mean() if np.any(y == j) else 1.0 for j in range(C)])
    above = P >= t[None, :]
    masked = np.where(above, P, -1.0)
    conf = masked.argmax(axis=1)
    has = above.any(axis=1)
    top = P.argmax(axis=1)
    n = np.arange(len(y))
    margin = P[n, conf] - P[n, y]
    flag = has & (conf != y) & (top == conf) & (margin > min_margin)
    out = [
        {
            "index": int(i),
            "suggested": int(conf[i]),
            "given_prob": float(P[i, y[i]]),
            "suggested_prob": float(P[i, conf[i]]),
            "score": float(margin[i]),
        }
        for i in np.flatnonzero(flag)
    ]
    return sorted(out, key=lambda d: -d["score"])


def outlier_scores(knn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best per-class k-NN similarity, the class it is best for, robust z-score of it). A low z:
    the image is far from every class, its own included."""
    filled = np.where(np.isnan(knn), -np.inf, knn)
    best = filled.max(axis=1)
    nearest = filled.argmax(axis=1)
    finite = np.isfinite(best)
    med = np.median(best[finite]) if finite.any() else 0.0
    mad = np.median(np.abs(best[finite] - med)) if finite.any() else 0.0
    z = (best - med) / max(1.4826 * mad, 1e-6)
    return best, nearest, z
