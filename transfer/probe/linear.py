"""A classifier fit full-batch on cached features: a linear or MLP head on standardised features,
softmax cross-entropy or multiclass hinge loss, L2 / L1 / elastic-net penalty.

Objective (mean over the n training rows, features standardised with the training mean / std):

    loss(head(z), y) + lam * R(W)

The optimiser is L-BFGS (`solver`, on numpy) over all rows at once, on the hand-written
numpy `losses.batched_ce_l2` for the default probe (linear, ce, l2), and on torch's autograd for the
rest (imported only then): for a few thousand rows of pooled features this converges in tens of
milliseconds, far faster (and more exactly) than SGD epochs. A probe is its layers as numpy arrays;
`head_layers` folds the standardisation into the first, so the probe becomes an ordinary head on
raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transferzoo.zoo.spec import LOG_SOFTMAX

from ..config import DEFAULT_LAMBDAS  # noqa: F401  (re-exported: the probes' default grid)
from .losses import batched_ce_l2, log_softmax
from .solver import minimize

Layers = list[tuple[np.ndarray, np.ndarray]]  # (weight [out, in], bias [out]) per linear layer


@dataclass(frozen=True)
class ProbeSpec:
    head: str = "linear"  # linear | mlp
    hidden: int = 256
    activation: str = "relu"
    loss: str = "ce"
    penalty: str = "l2"
    l1_ratio: float = 0.5
    max_iter: int = 300

    @property
    def default(self) -> bool:
        """The probe solved in numpy without autograd (and without torch)."""
        return self.head == "linear" and self.loss == "ce" and self.penalty == "l2"


def _torch_net(in_dim: int, num_classes: int, spec: ProbeSpec, layers: Layers | None = None):
    """The torch module of the probe (the autograd path; an MLP's forward), with `layers` loaded."""
    import torch
    import torch.nn as nn

    from transferzoo.zoo.assembly import activation

    if spec.head == "linear":
        net = nn.Sequential(nn.Linear(in_dim, num_classes))
    else:
        net = nn.Sequential(
            nn.Linear(in_dim, spec.hidden), activation(spec.activation), nn.Linear(spec.hidden, num_classes)
        )
    if layers is not None:
        with torch.no_grad():
            for m, (w, b) in zip(_linears(net), layers):
                m.weight.copy_(torch.from_numpy(w))
                m.bias.copy_(torch.from_numpy(b))
    return net


def _linears(net) -> list:
    return [m for m in net if hasattr(m, "weight") and hasattr(m, "bias")]


def forward(layers: Layers, activation: str, z: np.ndarray) -> np.ndarray:
    """Logits of `layers` on rows `z`: numpy for a linear head; an MLP through torch (its
    activations are `zoo.assembly`'s)."""
    if len(layers) == 1:
        w, b = layers[0]
        return z @ w.T + b
    if activation == LOG_SOFTMAX:  # the 'imagenet' feature set's head: pretrained classifier -> log-softmax
        return forward(layers[1:], activation, log_softmax(z @ layers[0][0].T + layers[0][1]))
    import torch

    spec = ProbeSpec(head="mlp", hidden=layers[0][0].shape[0], activation=activation)
    net = _torch_net(layers[0][0].shape[1], layers[-1][0].shape[0], spec, layers)
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))).numpy()


@dataclass
class Probe:
    spec: ProbeSpec
    lam: float
    mean: np.ndarray
    std: np.ndarray
    layers: Layers  # on standardised features; an MLP's activation (spec.activation) between them
    num_classes: int
    info: dict = field(default_factory=dict)

    def logits(self, X: np.ndarray) -> np.ndarray:
        z = ((np.asarray(X, np.float32) - self.mean) / self.std).astype(np.float32)
        return forward(self.layers, self.spec.activation, z)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(1)

    def head_layers(self) -> Layers:
        """The same function on *raw* features: standardisation folded into the first layer
        (W' = W / std, b' = b - W' @ mean); the others unchanged."""
        (w, b), rest = self.layers[0], self.layers[1:]
        folded = (w / self.std[None, :]).astype(np.float32)
        return [(folded, (b - folded @ self.mean).astype(np.float32))] + list(rest)


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = X.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std < 1e-6] = 1.0  # constant features (e.g. dead channels): leave them at 0
    return mean, std


def row_basis(z: np.ndarray) -> np.ndarray | None:
    """Q [d, n], an orthonormal basis of the row space of z [n, d], when z has fewer rows than
    columns (else None): the L2 linear problem on z Q (n coordinates instead of d) is the same
    problem. Every gradient of an L2-penalised linear model started at 0 lies in that row space and
    L-BFGS is invariant under rotations, so the iterates, the optimum (W = W_q Q^T) and the logits are
    the d-dimensional problem's (in exact arithmetic), at n/d of the multiply-adds: 5x fewer on 245
    images of 1280 features. (The caller bounds BLAS's threads: `threads.compute_threads`.)"""
    n, d = z.shape
    return np.linalg.qr(np.ascontiguousarray(z.T, dtype=np.float32))[0] if n < d else None


def row_space(z: np.ndarray, zva: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z Q, zva Q) with Q = row_basis(z), or (z, zva) when z has at least as many rows as columns."""
    if z.shape[0] >= z.shape[1]:
        return z, zva
    z, zva = (np.ascontiguousarray(a, dtype=np.float32) for a in (z, zva))
    q = row_basis(z)
    return z @ q, zva @ q


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    lam: float,
    spec: ProbeSpec = ProbeSpec(),
    init: Probe | None = None,
    seed: int = 0,
    standardise: tuple | None = None,
) -> Probe:
    """Fit one probe full-batch with L-BFGS. `init` warm-starts from another probe (same shapes)."""
    mean, std = standardise if standardise is not None else standardiser(X)
    z = ((X - mean) / std).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    if spec.default:
        # the hand-written objective (no autograd), as one problem of the batched form; from 0 (no
        # warm start) in the rows' span when that is smaller (row_basis)
        q = row_basis(z) if init is None else None
        zq = z if q is None else z @ q
        if init is None:
            W = np.zeros((1, num_classes, zq.shape[1]), np.float32)
            b = np.zeros((1, 1, num_classes), np.float32)
        else:
            W, b = init.layers[0][0].copy()[None], init.layers[0][1].copy()[None, None]
        f = batched_ce_l2(zq[None], y[None], np.full((1, len(y)), 1.0 / len(y), np.float32), num_classes, lam)
        info = minimize([W, b], lambda: f(W, b), spec.max_iter, gtol=1e-6)
        layers = [((W[0] if q is None else W[0] @ q.T).astype(np.float32), b[0, 0].copy())]
    else:
        layers, info = _fit_autograd(z, y, num_classes, lam, spec, init, seed)
    return Probe(spec, lam, mean, std, layers, num_classes, {"objective": info["objective"], "evals": info["evals"]})


def _fit_autograd(z, y, num_classes, lam, spec: ProbeSpec, init: Probe | None, seed: int) -> tuple[Layers, dict]:
    """The other heads, losses and penalties: torch's autograd through `autograd_losses`."""
    import torch

    from .autograd_losses import loss_fn, penalty
    from .solver import lbfgs

    torch.manual_seed(seed)
    net = _torch_net(z.shape[1], num_classes, spec, init.layers if init is not None else None)
    if init is None and spec.head == "linear":
        with torch.no_grad():  # convex: start at the origin, deterministic
            net[0].weight.zero_()
            net[0].bias.zero_()
    zt, t = torch.from_numpy(z), torch.from_numpy(y)
    crit = loss_fn(spec.loss)
    weights = [m.weight for m in _linears(net)]

    def objective():
        obj = crit(net(zt), t)
        if lam > 0:
            obj = obj + lam * sum(penalty(w, spec.penalty, spec.l1_ratio) for w in weights)
        return obj

    info = lbfgs(list(net.parameters()), objective, spec.max_iter, gtol=1e-6)
    layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in _linears(net)]
    return layers, info
