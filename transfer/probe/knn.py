"""k-nearest-neighbour classifier on cached features: the cheap baseline the plan reports next to
the probes. Features are standardised with the training mean / std; distance L2 or L1; the metric
and k are chosen by leave-one-out accuracy on the training set (each training image classified by
its k nearest *other* training images), which costs one distance matrix for all k at once.
Votes are majority, ties broken by the nearer neighbours."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .linear import standardiser

METRICS = ("l2", "l1")
L1_TILE = 1 << 18  # floats of one [query rows, train rows, dim] difference tile (1 MB: stays in cache)
L1_QUERY_ROWS = 8


def _distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """[len(a), len(b)] distances in float32: L2 through the Gram matrix (what torch.cdist does
    beyond 25 rows); L1 in cache-sized tiles, one reused buffer per thread, the query rows spread over
    the cores (numpy's ufuncs release the GIL): 6.9 s for 3251 x 3251 x 1280 here, torch.cdist 7.5 s,
    a whole [1, n, d] block per query row (a 16 MB temporary each) 2.4x slower."""
    if metric not in METRICS:
        raise ValueError(f"kNN metric must be one of {list(METRICS)}, got {metric!r}")
    if metric == "l2":
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
    out = np.empty((len(a), len(b)), np.float32)
    qb, d = L1_QUERY_ROWS, a.shape[1]
    nb = max(1, L1_TILE // (qb * max(1, d)))

    def rows(lo_hi: tuple[int, int]) -> None:
        buf = np.empty((qb, nb, d), np.float32)
        for i in range(*lo_hi, qb):
            q = a[i : min(lo_hi[1], i + qb), None, :]
            for j in range(0, len(b), nb):
                t = buf[: len(q), : min(nb, len(b) - j)]
                np.subtract(q, b[None, j : j + nb, :], out=t)
                np.abs(t, out=t)
                out[i : i + len(q), j : j + t.shape[1]] = t.sum(axis=2)

    cores = os.cpu_count() or 1
    step = max(qb, -(-len(a) // (4 * cores)) // qb * qb)  # 4 chunks a core: even when one is slowed
    with ThreadPoolExecutor(max_workers=cores) as pool:
        list(pool.map(rows, [(s, min(len(a), s + step)) for s in range(0, len(a), step)]))
    return out


def _nearest(d: np.ndarray, k: int) -> np.ndarray:
    """Indices [n, k] of each row's k smallest entries, nearest first."""
    idx = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(d), 1))
    order = np.argsort(np.take_along_axis(d, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _vote(neigh_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """neigh_labels [n, k] sorted nearest first -> predicted class [n]."""
    n, k = neigh_labels.shape
    scores = np.zeros((n, num_classes))
    weight = 1.0 + 1e-6 * np.arange(k, 0, -1, dtype=np.float64)  # nearer neighbours break ties
    rows = np.arange(n)
    for j in range(k):  # a neighbour's class gets its vote (columns of one row are distinct neighbours)
        scores[rows, neigh_labels[:, j]] += weight[j]
    return scores.argmax(1)


@dataclass
class KNN:
    metric: str
    k: int
    mean: np.ndarray
    std: np.ndarray
    train: np.ndarray
    labels: np.ndarray
    num_classes: int

    def predict(self, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
        out = []
        k = min(self.k, len(self.labels))
        for i in range(0, len(X), chunk):
            q = ((X[i : i + chunk] - self.mean) / self.std).astype(np.float32)
            idx = _nearest(_distances(q, self.train, self.metric), k)
            out.append(_vote(self.labels[idx], self.num_classes))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def fit_knn(X: np.ndarray, y: np.ndarray, num_classes: int, metric: str = "l2", k: int = 5) -> KNN:
    mean, std = standardiser(X)
    z = ((X - mean) / std).astype(np.float32)
    return KNN(metric, int(k), mean, std, z, np.asarray(y, dtype=np.int64), num_classes)


def select_knn(
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    metrics=("l2", "l1"),
    ks=(1, 3, 5, 7, 11, 15, 21),
    max_rows: int = 5000,
    seed: int = 0,
) -> dict:
    """Leave-one-out accuracy for every (metric, k) on the training rows (a uniform random subsample
    of at most `max_rows` of them) -> {"metric", "k", "loo_accuracy", "rows", "table"}."""
    y = np.asarray(y)
    idx = np.arange(len(y))
    if len(y) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), max_rows, replace=False))
    mean, std = standardiser(X[idx])
    z = ((X[idx] - mean) / std).astype(np.float32)
    labels = y[idx].astype(np.int64)
    ks = sorted(k for k in set(int(k) for k in ks) if k < len(idx))
    table = []
    for metric in metrics:
        d = _distances(z, z, metric)
        np.fill_diagonal(d, np.inf)  # leave one out
        order = _nearest(d, max(ks))
        for k in ks:
            acc = float((_vote(labels[order[:, :k]], num_classes) == labels).mean())
            table.append({"metric": metric, "k": k, "loo_accuracy": round(acc, 5)})
    best = max(table, key=lambda r: (r["loo_accuracy"], -r["k"]))  # ties: the smaller k
    return {
        "metric": best["metric"],
        "k": best["k"],
        "loo_accuracy": best["loo_accuracy"],
        "rows": int(len(idx)),
        "table": table,
    }
