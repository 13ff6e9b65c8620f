"""Full-batch L-BFGS for the probes: scipy's L-BFGS-B driving an objective computed in torch
(`minimize`: value and gradients from any function, e.g. the hand-written `losses.batched_ce_l2`;
`lbfgs`: the gradient from autograd, for the other heads, losses and penalties).

Why not torch.optim.LBFGS: every torch.optim optimizer imports torch._dynamo on first use (1.4 s
here, as long as the whole CV of a small dataset), and a run on cached features needs nothing else
from it. The objective and its gradient stay in torch (autograd, batched matmuls); scipy only sees
one flat float64 vector per call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def minimize(params: list[torch.Tensor], value_and_grads: Callable, max_iter: int, gtol: float) -> dict:
    """Minimise over `params` (updated in place), `value_and_grads()` -> (scalar, [gradient of each
    param]) at their current values. Stops at `max_iter` iterations (1.25x as many evaluations), a
    max-abs gradient <= `gtol`, or when the objective stops changing (relative 1e-10):
    torch.optim.LBFGS's criteria with its defaults here.
    -> {"evals", "objective", "iterations", "converged"}."""
    from scipy.optimize import minimize as scipy_minimize

    ends = np.cumsum([p.numel() for p in params]).tolist()
    spans = list(zip([0] + ends[:-1], ends))

    # thousands of calls on small problems: one copy per parameter each way, no intermediate arrays
    def unpack(x: np.ndarray) -> None:
        xt = torch.from_numpy(x)
        with torch.no_grad():
            for p, (a, b) in zip(params, spans):
                p.copy_(xt[a:b].view_as(p))

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        unpack(x)
        obj, grads = value_and_grads()
        out = np.empty(ends[-1])  # a new array per call: scipy keeps the previous gradient
        ot = torch.from_numpy(out)
        for g, (a, b) in zip(grads, spans):
            ot[a:b].copy_(g.reshape(-1))
        return float(obj), out

    x0 = torch.cat([p.detach().reshape(-1) for p in params]).double().numpy()
    res = scipy_minimize(
        f,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxfun": int(max_iter * 1.25), "maxcor": 20, "gtol": gtol, "ftol": 1e-10},
    )
    unpack(res.x)
    return {"evals": int(res.nfev), "objective": float(res.fun), "iterations": int(res.nit), "converged": res.success}


def lbfgs(params: list[torch.Tensor], objective: Callable[[], torch.Tensor], max_iter: int, gtol: float) -> dict:
    """`minimize` with the gradient from autograd: `objective()` is a scalar built from `params`,
    which require grad."""

    def value_and_grads():
        for p in params:
            p.grad = None
        obj = objective()
        obj.backward()
        return obj.detach(), [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

    return minimize(params, value_and_grads, max_iter, gtol)
