"""Probe internals: hand-written losses/penalties vs numerical gradients, L-BFGS fits, CV picks,
head folding, kNN. Features are sklearn's real digit scans (64 pixels), not random tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from transferzoo.transfer.probe.autograd_losses import (
    L2Penalty,
    MulticlassHinge,
    SmoothL1Penalty,
    SoftmaxCrossEntropy,
    penalty,
)
from transferzoo.transfer.probe.cv import cross_validate, stratified_folds
from transferzoo.transfer.probe.knn import fit_knn, select_knn
from transferzoo.transfer.probe.linear import ProbeSpec, fit_probe, forward
from transferzoo.transfer.probe.losses import batched_ce_l2
from transferzoo.transfer.threads import compute_threads


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small full-batch fits: one thread is fastest (as transfer.strategies does for them)."""
    with compute_threads(1):
        yield


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X, y = d.data.astype(np.float32), d.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, va = order[:700], order[700:]
    return X[tr], y[tr], X[va], y[va]


def test_losses_and_penalties_gradcheck():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 3])
    assert torch.autograd.gradcheck(lambda t: SoftmaxCrossEntropy.apply(t, y), (s,))
    assert torch.autograd.gradcheck(lambda t: MulticlassHinge.apply(t, y), (s,))
    w = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(L2Penalty.apply, (w,))
    assert torch.autograd.gradcheck(SmoothL1Penalty.apply, (w,))
    assert torch.autograd.gradcheck(lambda t: penalty(t, "elasticnet", 0.3), (w,))


def test_losses_match_reference_values():
    s = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    assert torch.allclose(SoftmaxCrossEntropy.apply(s, y), torch.nn.functional.cross_entropy(s, y))
    # Weston-Watkins by hand: row 0: max(0,1-2+1)+max(0,.1-2+1)=0; row 1: max(0,.5+1+1)+max(0,2.5+1+1)=2.5+4.5
    assert float(MulticlassHinge.apply(s, y)) == pytest.approx((0 + 7.0) / 2)
    w = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    assert float(L2Penalty.apply(w)) == pytest.approx(12.5)
    assert float(SmoothL1Penalty.apply(w)) == pytest.approx(7.0 - 2 * 1e-3, abs=1e-5)  # |w| - eps per weight


def test_folds_are_stratified_and_disjoint():
    y = np.array([0] * 10 + [1] * 5 + [2] * 20)
    parts = stratified_folds(y, 5, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    for p in parts:
        assert np.bincount(y[p], minlength=3).tolist() == [2, 1, 4]


def test_cv_picks_lowest_log_loss_and_generalises(digits):
    Xtr, ytr, Xva, yva = digits
    lambdas = (1e-4, 1e-2, 1.0, 30.0)
    cv = cross_validate(Xtr, ytr, 10, lambdas, folds=3, repeats=1)
    assert cv.best_lambda == cv.lambdas[int(np.argmin(cv.log_loss))]
    assert cv.best_lambda != 30.0  # an absurdly strong penalty underfits: CV must not pick it
    assert cv.log_loss[-1] > 2 * min(cv.log_loss)
    p = fit_probe(Xtr, ytr, 10, cv.best_lambda)
    assert (p.predict(Xva) == yva).mean() > 0.94
    strong = fit_probe(Xtr, ytr, 10, 30.0)
    assert (strong.predict(Xva) == yva).mean() < (p.predict(Xva) == yva).mean()


def test_cv_grid_extends_past_an_edge(digits):
    """A grid whose every value is too strong: CV's best sits on the weak edge, so the grid grows
    downwards (by its own log step) until the optimum is inside it, and says what it added."""
    Xtr, ytr, _, _ = digits
    X, y = Xtr[:400], ytr[:400]
    cv = cross_validate(X, y, 10, (3.0, 30.0), folds=3, repeats=1, extend=3)
    assert cv.extended and all(l < 3.0 for l in cv.extended)
    assert cv.lambdas == sorted(cv.lambdas) and cv.lambdas[-1] == 30.0
    assert cv.best_lambda < 3.0 and cv.best_lambda == cv.lambdas[int(np.argmin(cv.log_loss))]
    assert cv.to_dict()["extended"] == [float(f"{l:.3g}") for l in cv.extended]
    # each step is the grid's own ratio (x10 here)
    np.testing.assert_allclose(cv.extended, [0.3, 0.03, 0.003][: len(cv.extended)], rtol=1e-9)
    # an interior optimum adds nothing; a one-value grid is the user's choice and never grows
    inner = cross_validate(X, y, 10, (1e-4, 1e-2, 1.0, 30.0), folds=3, repeats=1)
    assert inner.extended == [] and inner.lambdas == [1e-4, 1e-2, 1.0, 30.0]
    one = cross_validate(X, y, 10, (30.0,), folds=3, repeats=1)
    assert one.extended == [] and one.best_lambda == 30.0
    # the strong edge grows too (hinge criterion: accuracy), capped at `extend` steps
    weak = cross_validate(X, y, 10, (1e-8, 1e-7), ProbeSpec(loss="hinge", max_iter=50), folds=3, repeats=1, extend=1)
    assert len(weak.extended) <= 1 and all(l > 1e-7 for l in weak.extended)


@pytest.mark.parametrize(
    "spec",
    [
        ProbeSpec(loss="hinge"),
        ProbeSpec(head="mlp", hidden=64, activation="gelu", max_iter=150),
        ProbeSpec(head="mlp", hidden=32, activation="leaky_relu", max_iter=150),
        ProbeSpec(head="mlp", hidden=32, activation="elu", max_iter=150),
    ],
)
def test_other_heads_and_losses_learn(digits, spec):
    Xtr, ytr, Xva, yva = digits
    p = fit_probe(Xtr, ytr, 10, 1e-3, spec)
    assert (p.predict(Xva) == yva).mean() > 0.9


def test_l1_is_sparser_than_l2(digits):
    Xtr, ytr, _, _ = digits
    l1 = fit_probe(Xtr, ytr, 10, 0.05, ProbeSpec(penalty="l1"))
    l2 = fit_probe(Xtr, ytr, 10, 0.05, ProbeSpec(penalty="l2"))

    def small(p):
        return float((np.abs(p.layers[0][0]) < 1e-2).mean())

    assert small(l1) > small(l2) + 0.2
    en = fit_probe(Xtr, ytr, 10, 0.05, ProbeSpec(penalty="elasticnet", l1_ratio=0.5))
    assert small(l2) < small(en) < small(l1) + 1e-9


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_folded_head_equals_probe(digits, head):
    Xtr, ytr, Xva, _ = digits
    p = fit_probe(Xtr, ytr, 10, 1e-2, ProbeSpec(head=head, hidden=16, max_iter=50))
    raw = forward(p.head_layers(), p.spec.activation, Xva)  # on raw features, no standardisation
    np.testing.assert_allclose(raw, p.logits(Xva), rtol=1e-4, atol=1e-3)


def test_knn_selection_and_accuracy(digits):
    Xtr, ytr, Xva, yva = digits
    sel = select_knn(Xtr, ytr, 10, metrics=("l2", "l1"), ks=(1, 3, 5, 9))
    assert {r["metric"] for r in sel["table"]} == {"l2", "l1"} and len(sel["table"]) == 8
    assert sel["loo_accuracy"] == max(r["loo_accuracy"] for r in sel["table"])
    knn = fit_knn(Xtr, ytr, 10, sel["metric"], sel["k"])
    assert (knn.predict(Xva) == yva).mean() > 0.95
    # k=1 on the training set itself is a lookup: every point is its own nearest neighbour
    assert (fit_knn(Xtr, ytr, 10, "l1", 1).predict(Xtr[:50]) == ytr[:50]).all()


def test_batched_ce_l2_value_and_gradient():
    """The hand-written default objective: its value is the per-problem mean cross-entropy (padding
    rows ignored) + lam * 0.5 ||W||^2, and its gradients are autograd's of that expression
    (checked in float64 against torch's own cross_entropy, so it is not the same code twice)."""
    g = torch.Generator().manual_seed(1)
    B, n, d, C, lam = 3, 5, 6, 4, 0.3
    Z = torch.randn(B, n, d, dtype=torch.float64, generator=g)
    y = torch.randint(0, C, (B, n), generator=g)
    rows = [5, 3, 4]
    w = torch.tensor([[1.0] * r + [0.0] * (n - r) for r in rows], dtype=torch.float64)
    W = torch.randn(B, C, d, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(B, 1, C, dtype=torch.float64, generator=g, requires_grad=True)
    want = (
        sum(torch.nn.functional.cross_entropy(Z[i, :r] @ W[i].T + b[i], y[i, :r]) for i, r in enumerate(rows))
        + lam * 0.5 * (W * W).sum()
    )
    want.backward()
    f = batched_ce_l2(Z.float().numpy(), y.numpy(), (w / w.sum(dim=1, keepdim=True)).numpy(), C, lam)
    obj, (dW, db) = f(W.detach().float().numpy(), b.detach().float().numpy())  # numpy, float32
    assert obj == pytest.approx(float(want.detach()), rel=1e-5)
    np.testing.assert_allclose(dW, W.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(db, b.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_batched_cv_matches_fold_by_fold(digits):
    """The default path stacks the folds into one L-BFGS problem; the MLP-free reference path
    (elasticnet with l1_ratio 0 = pure L2, fitted fold by fold) must give the same CV numbers."""
    Xtr, ytr, _, _ = digits
    lambdas = (1e-3, 1e-1, 3.0)
    fast = cross_validate(Xtr[:300], ytr[:300], 10, lambdas, folds=3, repeats=1)
    ref = cross_validate(
        Xtr[:300], ytr[:300], 10, lambdas, ProbeSpec(penalty="elasticnet", l1_ratio=0.0), folds=3, repeats=1
    )
    assert fast.best_lambda == ref.best_lambda
    np.testing.assert_allclose(fast.log_loss, ref.log_loss, rtol=0.03, atol=2e-3)
    np.testing.assert_allclose(fast.accuracy, ref.accuracy, atol=0.01)


def test_row_space_is_the_same_problem(digits, monkeypatch):
    """Fewer training rows than features (36 per fold, 64 pixels): CV runs in the rows' own span
    (n coordinates). Inner products with every row are kept, so the CV numbers are the full
    problem's."""
    import transferzoo.transfer.probe.cv as cvm

    Xtr, ytr, _, _ = digits
    X, y = Xtr[:45], ytr[:45] % 3  # 3 classes, 15 images each at most
    z = (X[:30] - X.mean(0)) / (X.std(0) + 1)
    zq, vq = cvm.row_space(z, X[30:])
    assert zq.shape == (30, 30) and vq.shape == (15, 30)
    np.testing.assert_allclose(zq @ vq.T, z @ X[30:].T, rtol=1e-4, atol=1e-2)
    lambdas = (1e-2, 1e-1, 1.0)
    reduced = cross_validate(X, y, 3, lambdas, folds=3, repeats=1)
    monkeypatch.setattr(cvm, "row_space", lambda z, zva: (z, zva))
    full = cross_validate(X, y, 3, lambdas, folds=3, repeats=1)
    assert reduced.best_lambda == full.best_lambda
    np.testing.assert_allclose(reduced.log_loss, full.log_loss, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(reduced.accuracy, full.accuracy)


def test_fit_probe_in_the_row_space_is_the_full_fit(digits):
    """fit_probe on fewer rows than features solves in the rows' span and maps the weights back:
    the same logits on unseen rows as the full-dimensional autograd fit of the same objective
    (elasticnet with l1_ratio 0 = pure L2), at the same objective value."""
    Xtr, ytr, Xva, _ = digits
    X, y = Xtr[:40], ytr[:40]  # 40 rows < 64 pixels
    fast = fit_probe(X, y, 10, 0.1)
    ref = fit_probe(X, y, 10, 0.1, ProbeSpec(penalty="elasticnet", l1_ratio=0.0))
    lf, lr = fast.logits(Xva), ref.logits(Xva)
    assert np.abs(lf - lr).max() <= 1e-3 * np.abs(lr).max()  # both stop at gtol 1e-6 in float32
    assert (lf.argmax(1) == lr.argmax(1)).mean() > 0.99
    assert fast.info["objective"] == pytest.approx(ref.info["objective"], rel=1e-4)


def test_knn_distances_match_scipy_on_ragged_tiles(digits, monkeypatch):
    """L1 runs in tiles of query rows x training rows (and chunks over threads), L2 through the Gram
    matrix: both equal scipy's cdist, with sizes that leave partial tiles at every edge."""
    from scipy.spatial.distance import cdist

    import transferzoo.transfer.probe.knn as knn

    Xtr, _, Xva, _ = digits
    monkeypatch.setattr(knn, "L1_TILE", 3 * 64 * 5)  # tiles of 3 query x 5 training rows: 37 x 53 leaves partial ones
    monkeypatch.setattr(knn, "L1_QUERY_ROWS", 3)
    a, b = Xva[:37], Xtr[:53]
    np.testing.assert_allclose(knn._distances(a, b, "l1"), cdist(a, b, "cityblock"), rtol=1e-5)
    np.testing.assert_allclose(knn._distances(a, b, "l2"), cdist(a, b), rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="l1"):
        knn._distances(a, b, "cosine")


def test_solver_reaches_scipys_optimum_in_fewer_evaluations(digits):
    """The numpy L-BFGS against scipy's L-BFGS-B (what the probes used until 2026-12-07) on the
    default objective over real digit scans, five problems batched as the CV stacks its folds: the
    same optimum (objective and weights), no more evaluations."""
    so = pytest.importorskip("scipy.optimize")
    from transferzoo.transfer.probe.solver import minimize

    Xtr, ytr, _, _ = digits
    z = (Xtr - Xtr.mean(0)) / (Xtr.std(0) + 1)
    parts = stratified_folds(ytr, 5, 0)
    Z = np.stack([z[p[:100]] for p in parts]).astype(np.float32)
    Y = np.stack([ytr[p[:100]] for p in parts])
    f = batched_ce_l2(Z, Y, np.full(Y.shape, 0.01, np.float32), 10, 1e-2)
    W, b = np.zeros((5, 10, 64), np.float32), np.zeros((5, 1, 10), np.float32)
    ours = minimize([W, b], lambda: f(W, b), 500, gtol=1e-6)

    def flat(x):
        obj, (dW, db) = f(x[:3200].reshape(5, 10, 64).astype(np.float32), x[3200:].reshape(5, 1, 10).astype(np.float32))
        return float(obj), np.concatenate([dW.ravel(), db.ravel()]).astype(np.float64)

    ref = so.minimize(
        flat,
        np.zeros(3250),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500, "maxcor": 20, "gtol": 1e-6, "ftol": 1e-10},
    )
    assert ours["converged"] and ours["iterations"] <= 500
    assert ours["objective"] <= ref.fun * (1 + 1e-6)
    np.testing.assert_allclose(W.ravel(), ref.x[:3200], atol=2e-3 * np.abs(ref.x).max())
    assert ours["evals"] <= ref.nfev


def test_solver_on_a_non_convex_valley_and_at_its_limits():
    """Rosenbrock's valley (not convex, as the MLP head's objective is not): the solver still finds
    the minimum, dropping the pairs without positive curvature. A function that is infinite past a
    wall is backtracked from, not stepped into; `max_iter` bounds iterations and 1.25x as many
    evaluations; a non-finite start returns unconverged."""
    from transferzoo.transfer.probe.solver import minimize

    x = np.array([-1.2, 1.0])

    def rosen():
        a, b = x
        return (1 - a) ** 2 + 100 * (b - a * a) ** 2, [
            np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
        ]

    r = minimize([x], rosen, 500, gtol=1e-8)
    assert r["converged"] and np.abs(x - 1).max() < 1e-4

    v = np.array([3.0])

    def walled():  # (v - 9)^2 for v < 5, infinite beyond: the minimum on the finite side is at the wall
        return ((v[0] - 9) ** 2, [2 * (v - 9)]) if v[0] < 5 else (np.inf, [np.full(1, np.nan)])

    r = minimize([v], walled, 40, gtol=1e-8)
    assert np.isfinite(r["objective"]) and 4.9 < v[0] < 5 and r["evals"] <= 50

    x[:] = (-1.2, 1.0)
    r = minimize([x], rosen, 5, gtol=1e-12)
    assert not r["converged"] and r["iterations"] <= 5 and r["evals"] <= 6

    n = np.zeros(1)
    r = minimize([n], lambda: (np.nan, [np.zeros(1)]), 10, gtol=1e-6)
    assert not r["converged"] and r["evals"] == 1
