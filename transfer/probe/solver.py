"""Full-batch L-BFGS for the probes on numpy arrays (`minimize`: value and gradients from any
function, e.g. the hand-written `losses.batched_ce_l2`; `lbfgs`: the gradient from torch's autograd,
for the MLP head and the other losses and penalties).

Why numpy, not torch.optim.LBFGS: the default probe needs nothing from torch, and a run on cached
features that never imports it starts 1.1-2.5 s sooner here; every torch.optim optimizer also
imports torch._dynamo on first use (1.4 s more). Why not scipy's L-BFGS-B (used until 2026-12-07):
`import scipy.optimize` loads linprog, shgo, scipy.special, scipy.fft and scipy.linalg for this one
routine, 0.5-0.65 s of a 3.5 s cached hymenoptera `fit`; and its Moré-Thuente line search spent
1.76 evaluations per iteration there against 1.24 for the backtracking below (the same 54 problems:
3697 against 2692 evaluations, 1.30 against 0.84 s in the solver, objectives within 3e-6).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

HISTORY = 20  # correction pairs kept (scipy's maxcor was set to the same)
ARMIJO = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO t g.d
FTOL = 1e-10  # stop when an iteration lowers the objective by less than this, relative


def minimize(params: list[np.ndarray], value_and_grads: Callable, max_iter: int, gtol: float) -> dict:
    """Minimise over `params` (numpy arrays, updated in place), `value_and_grads()` -> (scalar,
    [gradient of each param]) at their current values. Stops at `max_iter` iterations (1.25x as many
    evaluations), a max-abs gradient <= `gtol`, or when the objective stops changing (relative
    FTOL): torch.optim.LBFGS's criteria with its defaults here.
    -> {"evals", "objective", "iterations", "converged"}.

    L-BFGS (two-loop recursion, the newest pair's curvature as the initial scale) with a
    backtracking Armijo line search from the unit step. No Wolfe curvature test: the default
    probe's objective is convex, so every step gives s.y >= 0, and a step is then one evaluation
    (a weak-Wolfe search doubled the evaluations of the same iterations here); a pair with s.y not
    clearly positive (the MLP head is not convex) is dropped, which keeps the metric positive
    definite. The arithmetic is float64 on one flat vector; the parameters see it rounded to theirs."""
    ends = np.cumsum([p.size for p in params]).tolist()
    spans = list(zip([0] + ends[:-1], ends))

    def unpack(x: np.ndarray) -> None:
        for p, (a, b) in zip(params, spans):
            p[...] = x[a:b].reshape(p.shape)

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        unpack(x)
        obj, grads = value_and_grads()
        out = np.empty(ends[-1])
        for g, (a, b) in zip(grads, spans):
            out[a:b] = np.asarray(g).reshape(-1)
        return float(obj), out

    max_evals = int(max_iter * 1.25)
    x = np.concatenate([p.reshape(-1) for p in params]).astype(np.float64)
    f, g = fg(x)
    evals, iterations, converged = 1, 0, False
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=HISTORY)  # (s, y, 1 / s.y), oldest first
    while True:
        if not np.isfinite(f) or np.abs(g).max() <= gtol:
            converged = bool(np.isfinite(f))
            break
        if iterations >= max_iter or evals >= max_evals:
            break
        d, t = _direction(g, pairs)
        gd = float(g @ d)
        if gd >= 0:  # rounding made the metric useless: forget it, go downhill
            pairs.clear()
            d, t = _direction(g, pairs)
            gd = float(g @ d)
        accepted = False
        while evals < max_evals:
            xn = x + t * d
            fn, gn = fg(xn)
            evals += 1
            if np.isfinite(fn) and fn <= f + ARMIJO * t * gd:
                accepted = True
                break
            # the minimum of the quadratic through f, g.d and fn, kept to [0.1 t, 0.5 t]
            q = -gd * t * t / (2.0 * (fn - f - gd * t)) if np.isfinite(fn) else 0.0
            t = min(max(q, 0.1 * t), 0.5 * t)
        if not accepted:  # evaluations spent inside the line search: keep the best point seen
            if np.isfinite(fn) and fn < f:
                x, f, g = xn, fn, gn
            break
        s, y = xn - x, gn - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):
            pairs.append((s, y, 1.0 / sy))  # the oldest drops out past HISTORY
        iterations += 1
        drop = f - fn
        x, f, g = xn, fn, gn
        if drop <= FTOL * max(abs(f), abs(f + drop), 1.0):
            converged = True
            break
    unpack(x)
    return {"evals": evals, "objective": f, "iterations": iterations, "converged": converged}


def _direction(g: np.ndarray, pairs: deque) -> tuple[np.ndarray, float]:
    """(the L-BFGS direction -H g, its first trial step). With no pairs yet: steepest descent, the
    first step of length at most 1 (the scale of the problem is not known yet)."""
    if not pairs:
        return -g, min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-300))
    q = -g
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        alphas.append(a)
        q -= a * y
    s, y, _ = pairs[-1]
    q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        q += (a - rho * float(y @ q)) * s
    return q, 1.0


def lbfgs(params: list, objective: Callable, max_iter: int, gtol: float) -> dict:
    """`minimize` over torch tensors with the gradient from autograd: `objective()` is a scalar built
    from `params`, which require grad. The solver writes the tensors through numpy views of their
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
