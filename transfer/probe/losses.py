"""The default probe's objective (linear head, softmax cross-entropy, L2 penalty), value and
gradient written out in numpy, and the log-loss every probe is scored with. The other heads, losses
and penalties are torch autograd Functions (`autograd_losses`), imported only when asked for.
"""

from __future__ import annotations

import numpy as np


def batched_ce_l2(Z: np.ndarray, y: np.ndarray, norm: np.ndarray, num_classes: int, lam: float):
    """The default probe's objective (softmax cross-entropy + lam * 0.5 ||W||^2) for B independent
    problems at once, value and gradient by hand: the CV fits every fold of a grid this way,
    thousands of evaluations (autograd's graph and engine were 3x the arithmetic here).
    Z [B, n, d] float32, y [B, n] (int), norm [B, n] row weights (1 / rows per problem; 0 for padding).
    -> f(W [B, C, d], b [B, 1, C]) -> (objective, [dW, db]), the objective
    sum_b (sum_i norm_bi CE_bi + lam * 0.5 ||W_b||^2).
    Scores are held classes-first ([B, C, n]): the softmax then reduces over C rows of n contiguous
    values, not over n runs of C (10 folds of 392 x 392, 2 classes: 1.6-1.9 ms an evaluation, 2.1-2.3
    the other way)."""
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    ZT = Z.transpose(0, 2, 1)  # a view: BLAS reads it transposed
    B, n = y.shape
    onehot = np.zeros((B, num_classes, n), np.float32)
    np.put_along_axis(onehot, np.asarray(y)[:, None, :], 1.0, axis=1)
    wrow = np.asarray(norm, np.float32)[:, None, :]
    target = onehot * wrow

    def f(W: np.ndarray, b: np.ndarray):
        s = np.matmul(W, ZT)  # [B, C, n]
        s += b.transpose(0, 2, 1)
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        z = e.sum(axis=1, keepdims=True)
        s -= np.log(z)  # log-probabilities
        obj = -np.sum(s * target, dtype=np.float64) + 0.5 * lam * np.sum(W * W, dtype=np.float64)
        e /= z
        e -= onehot
        e *= wrow  # d obj / d scores
        dW = np.matmul(e, Z)
        dW += lam * W
        return obj, [dW, e.sum(axis=2)[:, None, :]]

    return f


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax (numpy), shifted by each row's max."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits against labels (numpy)."""
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean())
