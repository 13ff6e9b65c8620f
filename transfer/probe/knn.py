"""k-nearest-neighbour classifier on cached features: the cheap baseline the plan reports next to
the probes. Features are standardised with the training mean / std; distance L2 or L1; the metric
and k are chosen by leave-one-out accuracy on the training set (each training image classified by
its k nearest *other* training images), which costs one distance matrix for all k at once.
Votes are majority, ties broken by the nearer neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .linear import standardiser

P = {"l2": 2.0, "l1": 1.0}


def _distances(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    return torch.cdist(a, b, p=P[metric])


def _vote(neigh_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """neigh_labels [n, k] sorted nearest first -> predicted class [n]."""
    n, k = neigh_labels.shape
    scores = torch.zeros(n, num_classes, dtype=torch.float64)
    weight = 1.0 + 1e-6 * torch.arange(k, 0, -1, dtype=torch.float64)  # nearer neighbours break ties
    scores.scatter_add_(1, neigh_labels, weight.expand(n, k).contiguous())
    return scores.argmax(1)


@dataclass
class KNN:
    metric: str
    k: int
    mean: np.ndarray
    std: np.ndarray
    train: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def predict(self, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
        out = []
        k = min(self.k, len(self.labels))
        for i in range(0, len(X), chunk):
            q = torch.from_numpy(((X[i : i + chunk] - self.mean) / self.std).astype(np.float32))
            idx = _distances(q, self.train, self.metric).topk(k, dim=1, largest=False).indices
            out.append(_vote(self.labels[idx], self.num_classes))
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def fit_knn(X: np.ndarray, y: np.ndarray, num_classes: int, metric: str = "l2", k: int = 5) -> KNN:
    mean, std = standardiser(X)
    z = torch.from_numpy(((X - mean) / std).astype(np.float32))
    return KNN(metric, int(k), mean, std, z, torch.from_numpy(np.asarray(y, dtype=np.int64)), num_classes)


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
    z = torch.from_numpy(((X[idx] - mean) / std).astype(np.float32))
    labels = torch.from_numpy(y[idx].astype(np.int64))
    ks = sorted(k for k in set(int(k) for k in ks) if k < len(idx))
    table = []
    for metric in metrics:
        d = _distances(z, z, metric)
        d.fill_diagonal_(float("inf"))  # leave one out
        order = d.topk(max(ks), dim=1, largest=False).indices
        for k in ks:
            acc = float((_vote(labels[order[:, :k]], num_classes) == labels).double().mean())
            table.append({"metric": metric, "k": k, "loo_accuracy": round(acc, 5)})
    best = max(table, key=lambda r: (r["loo_accuracy"], -r["k"]))  # ties: the smaller k
    return {
        "metric": best["metric"],
        "k": best["k"],
        "loo_accuracy": best["loo_accuracy"],
        "rows": int(len(idx)),
        "table": table,
    }
