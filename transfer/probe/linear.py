"""Classifiers fit full-batch on cached features: linear or MLP head, softmax cross-entropy or
multiclass hinge loss, L2 / L1 / elastic-net penalty, strength chosen by k-fold cross-validation.

Objective (mean over the n training rows, features standardised with the training mean / std):

    loss(head(z), y) + lam * R(W)

- loss ``ce``: softmax cross-entropy; ``hinge``: multiclass SVM (Weston-Watkins),
  sum_{j != y} max(0, s_j - s_y + 1).
- R ``l2``: 0.5 * ||W||^2; ``l1``: sum sqrt(w^2 + eps^2) - eps (a smooth L1, eps = 1e-3, so L-BFGS
  applies); ``elasticnet``: l1_ratio * l1 + (1 - l1_ratio) * l2. Biases are not penalised.

The losses and penalties are written out by hand (forward and backward) as autograd Functions;
tests check them against numerical gradients. The optimiser is torch.optim.LBFGS with a strong-Wolfe
line search over all rows at once: for a few thousand rows of pooled features this converges in
tens of milliseconds, far faster (and more exactly) than SGD epochs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from transferzoo.zoo.assembly import ACTIVATIONS

L1_EPS = 1e-3
DEFAULT_LAMBDAS = tuple(float(v) for v in np.logspace(-4, 1, 8))


# -- hand-written losses and penalties ----------------------------------------------------------
class SoftmaxCrossEntropy(torch.autograd.Function):
    """mean_i -log softmax(s_i)[y_i]; grad = (softmax(s) - onehot(y)) / n."""

    @staticmethod
    def forward(ctx, scores, y):
        shifted = scores - scores.max(dim=1, keepdim=True).values
        logz = shifted.exp().sum(dim=1, keepdim=True).log()
        logp = shifted - logz
        ctx.save_for_backward(logp, y)
        return -logp.gather(1, y[:, None]).mean()

    @staticmethod
    def backward(ctx, g):
        logp, y = ctx.saved_tensors
        grad = logp.exp()
        grad[torch.arange(len(y)), y] -= 1
        return grad * (g / len(y)), None


class BatchedSoftmaxCrossEntropy(torch.autograd.Function):
    """B independent problems at once: sum_b (sum_i w_bi CE_bi / sum_i w_bi). scores [B, n, C],
    y [B, n], w [B, n] (0 for padding rows). Used by CV to fit every fold in one L-BFGS run."""

    @staticmethod
    def forward(ctx, scores, y, w):
        shifted = scores - scores.max(dim=2, keepdim=True).values
        logp = shifted - shifted.exp().sum(dim=2, keepdim=True).log()
        norm = w / w.sum(dim=1, keepdim=True)
        ctx.save_for_backward(logp, y, norm)
        return -(logp.gather(2, y[:, :, None])[:, :, 0] * norm).sum()

    @staticmethod
    def backward(ctx, g):
        logp, y, norm = ctx.saved_tensors
        grad = logp.exp()
        grad.scatter_add_(2, y[:, :, None], -torch.ones_like(y[:, :, None], dtype=grad.dtype))
        return grad * (norm[:, :, None] * g), None, None


class MulticlassHinge(torch.autograd.Function):
    """mean_i sum_{j != y_i} max(0, s_ij - s_iy + margin) (Weston-Watkins multiclass SVM)."""

    @staticmethod
    def forward(ctx, scores, y, margin=1.0):
        correct = scores.gather(1, y[:, None])
        m = (scores - correct + margin).clamp(min=0)
        m[torch.arange(len(y)), y] = 0
        ctx.save_for_backward(m > 0, y)
        return m.sum() / len(y)

    @staticmethod
    def backward(ctx, g):
        active, y = ctx.saved_tensors
        grad = active.to(g.dtype if g.is_floating_point() else torch.float32)
        grad[torch.arange(len(y)), y] = -grad.sum(dim=1)
        return grad * (g / len(y)), None, None


class L2Penalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return 0.5 * (w * w).sum()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * w


class SmoothL1Penalty(torch.autograd.Function):
    """sum sqrt(w^2 + eps^2) - eps: |w| away from 0, differentiable at 0."""

    @staticmethod
    def forward(ctx, w, eps=L1_EPS):
        r = torch.sqrt(w * w + eps * eps)
        ctx.save_for_backward(w, r)
        return (r - eps).sum()

    @staticmethod
    def backward(ctx, g):
        w, r = ctx.saved_tensors
        return g * w / r, None


def loss_fn(name: str):
    return {"ce": SoftmaxCrossEntropy.apply, "hinge": MulticlassHinge.apply}[name]


def penalty(w: torch.Tensor, kind: str, l1_ratio: float = 0.5) -> torch.Tensor:
    if kind == "l2":
        return L2Penalty.apply(w)
    if kind == "l1":
        return SmoothL1Penalty.apply(w)
    if kind == "elasticnet":
        return l1_ratio * SmoothL1Penalty.apply(w) + (1 - l1_ratio) * L2Penalty.apply(w)
    raise ValueError(f"penalty must be l2, l1 or elasticnet, got {kind!r}")


# -- the probe ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeSpec:
    head: str = "linear"  # linear | mlp
    hidden: int = 256
    activation: str = "relu"
    loss: str = "ce"
    penalty: str = "l2"
    l1_ratio: float = 0.5
    max_iter: int = 300


def _net(in_dim: int, num_classes: int, spec: ProbeSpec) -> nn.Sequential:
    if spec.head == "linear":
        return nn.Sequential(nn.Linear(in_dim, num_classes))
    return nn.Sequential(nn.Linear(in_dim, spec.hidden), ACTIVATIONS[spec.activation](), nn.Linear(spec.hidden, num_classes))


@dataclass
class Probe:
    spec: ProbeSpec
    lam: float
    mean: np.ndarray
    std: np.ndarray
    net: nn.Sequential  # on standardised features
    num_classes: int
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def logits(self, X: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(((np.asarray(X, np.float32) - self.mean) / self.std).astype(np.float32))
        return self.net(z).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(1)

    def head_layers(self) -> list[nn.Module]:
        """The same function on *raw* features: standardisation folded into the first Linear
        (W' = W / std, b' = b - W' @ mean). Returns [Linear] or [Linear, act, Linear]."""
        first = self.net[0]
        folded = nn.Linear(first.in_features, first.out_features)
        with torch.no_grad():
            inv = torch.from_numpy((1.0 / self.std).astype(np.float32))
            w = first.weight * inv[None, :]
            folded.weight.copy_(w)
            folded.bias.copy_(first.bias - w @ torch.from_numpy(self.mean.astype(np.float32)))
        return [folded] + list(self.net[1:])


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = X.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std < 1e-6] = 1.0  # constant features (e.g. dead channels): leave them at 0
    return mean, std


def _weights(net: nn.Sequential) -> list[torch.Tensor]:
    return [m.weight for m in net if isinstance(m, nn.Linear)]


def fit_probe(X: np.ndarray, y: np.ndarray, num_classes: int, lam: float, spec: ProbeSpec = ProbeSpec(),
              init: Probe | None = None, seed: int = 0, standardise: tuple | None = None) -> Probe:
    """Fit one probe full-batch with L-BFGS. `init` warm-starts from another probe (same shapes)."""
    mean, std = standardise if standardise is not None else standardiser(X)
    z = torch.from_numpy(((X - mean) / std).astype(np.float32))
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    torch.manual_seed(seed)
    net = _net(z.shape[1], num_classes, spec)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    elif spec.head == "linear":
        nn.init.zeros_(net[0].weight)  # convex: start at the origin, deterministic
        nn.init.zeros_(net[0].bias)
    crit = loss_fn(spec.loss)
    opt = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=spec.max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")
    state = {"evals": 0}

    def closure():
        opt.zero_grad()
        obj = crit(net(z), t)
        if lam > 0:
            obj = obj + lam * sum(penalty(w, spec.penalty, spec.l1_ratio) for w in _weights(net))
        obj.backward()
        state["evals"] += 1
        state["obj"] = float(obj.detach())
        return obj

    opt.step(closure)
    return Probe(spec, lam, mean, std, net, num_classes, {"objective": state.get("obj"), "evals": state["evals"]})


# -- cross-validation ---------------------------------------------------------------------------
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


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


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

    def to_dict(self) -> dict:
        r = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 5)
        return {"lambdas": [float(f"{l:.3g}") for l in self.lambdas], "cv_accuracy": [r(a) for a in self.accuracy],
                "cv_log_loss": [r(l) for l in self.log_loss], "best_lambda": float(f"{self.best_lambda:.3g}"),
                "best_cv_accuracy": r(self.best_accuracy), "best_cv_log_loss": r(self.best_log_loss),
                "folds": self.folds, "repeats": self.repeats, "criterion": self.criterion}


def cross_validate(X: np.ndarray, y: np.ndarray, num_classes: int, lambdas=DEFAULT_LAMBDAS, spec: ProbeSpec = ProbeSpec(),
                   folds: int = 5, repeats: int = 1, seed: int = 0, X_aug: np.ndarray | None = None) -> CVResult:
    """k-fold CV (repeated with different shuffles) of the probe for each lambda.

    X_aug: an augmented copy of X (row i = a view of row i, e.g. horizontally flipped): it joins
    the training folds only, so a validation image's own flip never leaks into training.
    Criterion: lowest mean log-loss for ce (smoother than accuracy on small folds), highest
    accuracy for hinge; ties go to the stronger penalty."""
    y = np.asarray(y)
    present = np.bincount(y, minlength=num_classes)
    folds = int(max(2, min(folds, present[present > 0].min())))  # every class in every fold
    lambdas = sorted(float(l) for l in lambdas)[::-1]  # strong -> weak: warm starts follow the path
    acc = np.zeros((repeats, len(lambdas)))
    ll = np.zeros((repeats, len(lambdas)))
    if spec.head == "linear" and spec.loss == "ce" and spec.penalty == "l2":
        acc, ll = _cv_batched(X, y, num_classes, lambdas, spec, folds, repeats, seed, X_aug)
    for r in range(repeats if spec.head != "linear" or spec.loss != "ce" or spec.penalty != "l2" else 0):
        parts = stratified_folds(y, folds, seed + r)
        correct = np.zeros(len(lambdas))
        losses = np.zeros(len(lambdas))
        for va, Xtr, ytr in _fold_data(X, y, parts, X_aug):
            std = standardiser(Xtr)
            prev = None
            for li, lam in enumerate(lambdas):
                p = fit_probe(Xtr, ytr, num_classes, lam, spec, init=prev if spec.head == "linear" else None,
                              seed=seed, standardise=std)
                prev = p
                lg = p.logits(X[va])
                correct[li] += float((lg.argmax(1) == y[va]).sum())
                losses[li] += _log_loss(lg, y[va]) * len(va) if spec.loss == "ce" else 0.0
        acc[r] = correct / len(y)
        ll[r] = losses / len(y) if spec.loss == "ce" else np.nan
    acc_m, ll_m = acc.mean(0), ll.mean(0)
    if spec.loss == "ce":
        best = int(np.argmin(np.round(ll_m, 6)))  # argmin takes the first = strongest penalty on ties
        criterion = "log_loss"
    else:
        best = int(np.argmax(np.round(acc_m, 6)))
        criterion = "accuracy"
    order = list(range(len(lambdas)))[::-1]  # report in ascending lambda order
    lam_asc = [lambdas[i] for i in order]
    return CVResult(lam_asc, [float(acc_m[i]) for i in order], [float(ll_m[i]) for i in order], lambdas[best],
                    float(acc_m[best]), float(ll_m[best]), folds, repeats, criterion)


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
            probs.append((r, (Xtr - mean) / std, ytr, (X[va] - mean) / std, y[va]))
    B, d = len(probs), X.shape[1]
    n_max = max(len(p[2]) for p in probs)
    Z = torch.zeros(B, n_max, d)
    Y = torch.zeros(B, n_max, dtype=torch.long)
    Wt = torch.zeros(B, n_max)
    for i, (_, z, yy, _, _) in enumerate(probs):
        Z[i, :len(yy)] = torch.from_numpy(z.astype(np.float32))
        Y[i, :len(yy)] = torch.from_numpy(yy.astype(np.int64))
        Wt[i, :len(yy)] = 1.0
    W = torch.zeros(B, num_classes, d, requires_grad=True)
    b = torch.zeros(B, 1, num_classes, requires_grad=True)
    acc = np.zeros((repeats, len(lambdas)))
    ll = np.zeros((repeats, len(lambdas)))
    for li, lam in enumerate(lambdas):
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=spec.max_iter, history_size=20, tolerance_grad=1e-6 * B,
                                tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            obj = BatchedSoftmaxCrossEntropy.apply(torch.baddbmm(b, Z, W.transpose(1, 2)), Y, Wt)
            if lam > 0:
                obj = obj + lam * L2Penalty.apply(W)
            obj.backward()
            return obj

        opt.step(closure)
        with torch.no_grad():
            for i, (r, _, _, zva, yva) in enumerate(probs):
                lg = (torch.from_numpy(zva.astype(np.float32)) @ W[i].T + b[i]).numpy()
                acc[r, li] += float((lg.argmax(1) == yva).sum())
                ll[r, li] += _log_loss(lg, yva) * len(yva)
    return acc / len(y), ll / len(y)
