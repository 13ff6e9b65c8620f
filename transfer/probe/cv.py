"""Repeated stratified k-fold cross-validation of a probe over a grid of penalty strengths."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .linear import DEFAULT_LAMBDAS, ProbeSpec, fit_probe, row_space, standardiser
from .losses import batched_ce_l2, log_loss
from .solver import minimize


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint index arrays, each class spread evenly (round-robin over a shuffled class)."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold_of[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # rotate, so small classes do not all land in fold 0
    return [np.flatnonzero(fold_of == f) for f in range(k)]


@dataclass
class CVResult:
    lambdas: list[float]
    accuracy: list[float]  # mean CV accuracy per lambda
    log_loss: list[float]  # mean CV log-loss per lambda (ce only; nan for hinge)
    best_lambda: float
    best_accuracy: float
    best_log_loss: float
    folds: int
    repeats: int
    criterion: str
    extended: list[float] = field(default_factory=list)  # lambdas added at the grid's edges

    def to_dict(self) -> dict:
        def r(v):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 5)

        return {
            "lambdas": [float(f"{l:.3g}") for l in self.lambdas],
            "cv_accuracy": [r(a) for a in self.accuracy],
            "cv_log_loss": [r(l) for l in self.log_loss],
            "best_lambda": float(f"{self.best_lambda:.3g}"),
            "best_cv_accuracy": r(self.best_accuracy),
            "best_cv_log_loss": r(self.best_log_loss),
            "folds": self.folds,
            "repeats": self.repeats,
            "criterion": self.criterion,
            "extended": [float(f"{l:.3g}") for l in self.extended],
        }


MAX_EXTEND = 4  # grid steps added at an edge, at most (each side)
LAMBDA_RANGE = (1e-8, 1e4)  # an extended grid stays inside this


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    lambdas=DEFAULT_LAMBDAS,
    spec: ProbeSpec = ProbeSpec(),
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    X_aug: np.ndarray | None = None,
    extend: int = MAX_EXTEND,
) -> CVResult:
    """k-fold CV (repeated with different shuffles) of the probe for each lambda.

    X_aug: an augmented copy of X (row i = a view of row i, e.g. horizontally flipped): it joins
    the training folds only, so a validation image's own flip never leaks into training.
    Criterion: lowest mean log-loss for ce (smoother than accuracy on small folds), highest
    accuracy for hinge; ties go to the stronger penalty.
    When the best lambda is the grid's smallest or largest (the optimum may lie beyond it), the
    grid grows by one step of its own log spacing in that direction, up to `extend` steps a side
    (a grid of one value is the user's choice and is never extended)."""
    y = np.asarray(y)
    present = np.bincount(y, minlength=num_classes)
    folds = int(max(2, min(folds, present[present > 0].min())))  # every class in every fold
    grid = sorted({float(l) for l in lambdas})
    acc, ll = _cv_grid(X, y, num_classes, grid, spec, folds, repeats, seed, X_aug)
    scores = {lam: (acc[:, i].mean(), ll[:, i].mean()) for i, lam in enumerate(grid)}
    added: list[float] = []
    steps = {0: 0, -1: 0}
    while len(grid) >= 2:
        best = _best(scores, spec)
        edge = 0 if best == grid[0] else -1 if best == grid[-1] else None
        if edge is None or steps[edge] >= extend:
            break
        ratio = grid[1] / grid[0] if edge == 0 else grid[-1] / grid[-2]
        lam = grid[0] / ratio if edge == 0 else grid[-1] * ratio
        if not LAMBDA_RANGE[0] <= lam <= LAMBDA_RANGE[1] or ratio <= 1:
            break
        steps[edge] += 1
        a, l = _cv_grid(X, y, num_classes, [lam], spec, folds, repeats, seed, X_aug)
        scores[lam] = (a[:, 0].mean(), l[:, 0].mean())
        grid = sorted(scores)
        added.append(lam)
    best = _best(scores, spec)
    return CVResult(
        grid,
        [float(scores[l][0]) for l in grid],
        [float(scores[l][1]) for l in grid],
        best,
        float(scores[best][0]),
        float(scores[best][1]),
        folds,
        repeats,
        "log_loss" if spec.loss == "ce" else "accuracy",
        added,
    )


def _best(scores: dict, spec: ProbeSpec) -> float:
    """The best lambda: lowest log-loss (ce) or highest accuracy (hinge), rounded so float noise
    does not decide; ties go to the strongest penalty."""
    if spec.loss == "ce":
        return min(scores, key=lambda l: (round(scores[l][1], 6), -l))
    return max(scores, key=lambda l: (round(scores[l][0], 6), l))


def _cv_grid(X, y, num_classes, grid, spec: ProbeSpec, folds, repeats, seed, X_aug):
    """CV accuracy and log-loss [repeats, len(grid)] for each lambda of `grid` (ascending)."""
    lambdas = sorted(grid)[::-1]  # strong -> weak: warm starts follow the path
    if spec.head == "linear" and spec.loss == "ce" and spec.penalty == "l2":
        acc, ll = _cv_batched(X, y, num_classes, lambdas, spec, folds, repeats, seed, X_aug)
        return acc[:, ::-1], ll[:, ::-1]
    acc = np.zeros((repeats, len(lambdas)))
    ll = np.zeros((repeats, len(lambdas)))
    for r in range(repeats):
        parts = stratified_folds(y, folds, seed + r)
        correct = np.zeros(len(lambdas))
        losses = np.zeros(len(lambdas))
        for va, Xtr, ytr in _fold_data(X, y, parts, X_aug):
            std = standardiser(Xtr)
            prev = None
            for li, lam in enumerate(lambdas):
                p = fit_probe(
                    Xtr,
                    ytr,
                    num_classes,
                    lam,
                    spec,
                    init=prev if spec.head == "linear" else None,
                    seed=seed,
                    standardise=std,
                )
                prev = p
                lg = p.logits(X[va])
                correct[li] += float((lg.argmax(1) == y[va]).sum())
                losses[li] += log_loss(lg, y[va]) * len(va) if spec.loss == "ce" else 0.0
        acc[r] = correct / len(y)
        ll[r] = losses / len(y) if spec.loss == "ce" else np.nan
    return acc[:, ::-1], ll[:, ::-1]


def _fold_data(X, y, parts, X_aug):
    """(validation rows, training features, training labels) per fold; flipped views (X_aug) of the
    training rows join the training set, never the validation set."""
    for f in range(len(parts)):
        tr = np.concatenate([parts[g] for g in range(len(parts)) if g != f])
        Xtr, ytr = X[tr], y[tr]
        if X_aug is not None:
            Xtr, ytr = np.concatenate([Xtr, X_aug[tr]]), np.concatenate([ytr, ytr])
        yield parts[f], Xtr, ytr


def _cv_batched(X, y, num_classes, lambdas, spec: ProbeSpec, folds, repeats, seed, X_aug):
    """The default probe (linear, ce, l2): every (repeat, fold) problem stacked into one batched
    objective (a sum of independent problems, so its minimiser is each problem's own), one L-BFGS
    run per lambda, warm-started along the path. Same optima as fitting the folds one by one, a
    fraction of the Python overhead. -> (accuracy [repeats, L], log_loss [repeats, L])."""
    probs = []
    for r in range(repeats):
        parts = stratified_folds(y, folds, seed + r)
        for va, Xtr, ytr in _fold_data(X, y, parts, X_aug):
            mean, std = standardiser(Xtr)
            z, zva = row_space((Xtr - mean) / std, (X[va] - mean) / std)
            probs.append((r, z, ytr, zva, y[va]))
    B, d = len(probs), max(p[1].shape[1] for p in probs)  # folds' row spaces may differ in size: pad
    n_max = max(len(p[2]) for p in probs)
    Z = np.zeros((B, n_max, d), np.float32)
    Y = np.zeros((B, n_max), np.int64)
    Wt = np.zeros((B, n_max), np.float32)
    for i, (_, z, yy, _, _) in enumerate(probs):
        Z[i, : len(yy), : z.shape[1]] = z
        Y[i, : len(yy)] = yy
        Wt[i, : len(yy)] = 1.0
    W = np.zeros((B, num_classes, d), np.float32)
    b = np.zeros((B, 1, num_classes), np.float32)
    norm = Wt / Wt.sum(axis=1, keepdims=True)
    acc = np.zeros((repeats, len(lambdas)))
    ll = np.zeros((repeats, len(lambdas)))
    for li, lam in enumerate(lambdas):
        f = batched_ce_l2(Z, Y, norm, num_classes, lam)
        minimize([W, b], lambda: f(W, b), spec.max_iter, gtol=1e-6 * B)
        for i, (r, _, _, zva, yva) in enumerate(probs):
            lg = zva.astype(np.float32) @ W[i, :, : zva.shape[1]].T + b[i]
            acc[r, li] += float((lg.argmax(1) == yva).sum())
            ll[r, li] += log_loss(lg, yva) * len(yva)
    return acc / len(y), ll / len(y)
