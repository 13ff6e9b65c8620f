"""Full-batch L-BFGS for the probes: scipy's L-BFGS-B on numpy arrays (`minimize`: value and
gradients from any function, e.g. the hand-written `losses.batched_ce_l2`; `lbfgs`: the gradient
from torch's autograd, for the MLP head and the other losses and penalties).

Why numpy and scipy, not torch.optim.LBFGS: the default probe needs nothing from torch, and a run on
cached features that never imports it starts 1.1-2.5 s sooner here; and every torch.optim optimizer
imports torch._dynamo on first use (1.4 s more). scipy only sees one flat float64 vector per call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def minimize(params: list[np.ndarray], value_and_grads: Callable, max_iter: int, gtol: float) -> dict:
    """Minimise over `params` (numpy arrays, updated in place), `value_and_grads()` -> (scalar,
    [gradient of each param]) at their current values. Stops at `max_iter` iterations (1.25x as many
    evaluations), a max-abs gradient <= `gtol`, or when the objective stops changing (relative 1e-10):
    torch.optim.LBFGS's criteria with its defaults here.
    -> {"evals", "objective", "iterations", "converged"}."""
    from scipy.optimize import minimize as scipy_minimize

    ends = np.cumsum([p.size for p in params]).tolist()
    spans = list(zip([0] + ends[:-1], ends))

    # thousands of calls on small problems: one copy per parameter each way, no intermediate arrays
    def unpack(x: np.ndarray) -> None:
        for p, (a, b) in zip(params, spans):
            p[...] = x[a:b].reshape(p.shape)

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        unpack(x)
        obj, grads = value_and_grads()
        out = np.empty(ends[-1])  # a new array per call: scipy keeps the previous gradient
        for g, (a, b) in zip(grads, spans):
            out[a:b] = np.asarray(g).reshape(-1)
        return float(obj), out

    x0 = np.concatenate([p.reshape(-1) for p in params]).astype(np.float64)
    res = scipy_minimize(
        f,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxfun": int(max_iter * 1.25), "maxcor": 20, "gtol": gtol, "ftol": 1e-10},
    )
    unpack(res.x)
    return {"evals": int(res.nfev), "objective": float(res.fun), "iterations": int(res.nit), "converged": res.success}


def lbfgs(params: list, objective: Callable, max_iter: int, gtol: float) -> dict:
    """`minimize` over torch tensors with the gradient from autograd: `objective()` is a scalar built
    from `params`, which require grad. L-BFGS-B writes the tensors through numpy views of their
    storage (CPU tensors share it)."""
    import torch

    views = [p.detach().numpy() for p in params]

    def value_and_grads():
        for p in params:
            p.grad = None
        obj = objective()
        obj.backward()
        return float(obj.detach()), [
            (p.grad if p.grad is not None else torch.zeros_like(p)).numpy() for p in params
        ]

    return minimize(views, value_and_grads, max_iter, gtol)
