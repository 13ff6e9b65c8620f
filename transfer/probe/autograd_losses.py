"""The probes' other losses and penalties (the MLP head, hinge, L1 / elastic net), written out by
hand (forward and backward) as torch autograd Functions; tests check each against numerical
gradients. Only these heads need torch: the default probe's objective is `losses.batched_ce_l2`.

- ``ce``: softmax cross-entropy; ``hinge``: multiclass SVM (Weston-Watkins),
  sum_{j != y} max(0, s_j - s_y + 1).
- ``l2``: 0.5 * ||W||^2; ``l1``: sum sqrt(w^2 + eps^2) - eps (a smooth L1, eps = 1e-3, so L-BFGS
  applies); ``elasticnet``: l1_ratio * l1 + (1 - l1_ratio) * l2. Biases are not penalised.
"""

from __future__ import annotations

import torch

L1_EPS = 1e-3


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
