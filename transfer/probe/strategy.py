"""The `linear` and `stages` strategies: a probe fit full-batch on cached features.

- ``linear``: a probe on the final features (``top``, and ``imagenet`` = the pretrained head's
  log-probabilities, when the head is linear), the feature set and penalty strength chosen by CV.
- ``stages``: the same over every stage's pooled features and their concatenations (plus the final
  features), best by CV.
The result is a TransferModel's state dict (the pretrained backbone + a head computing exactly the
probe), checked against the probe's logits before it is returned: the whole model on real
validation images when its backbone was built in this run; on a reused, checksummed backbone
(`zoo.backbones`, whose ONNX feature engine was checked against it on real images when it was
built) the head on the validation features -- so a run on cached features never builds the
network, and (numpy arrays, safetensors.numpy) never imports torch.
"""

from __future__ import annotations

import os
import time

import numpy as np

from transferzoo import zoo
from transferzoo.zoo import backbones

from ..config import FitConfig
from ..context import FitContext, FitResult
from ..data import Sample
from ..features import sets as featsets
from ..features.engine import FeatureSet, image_decoder
from ..report.markdown import confusion_matrix
from ..threads import compute_threads, probe_threads
from .cv import cross_validate
from .knn import fit_knn, select_knn
from .linear import ProbeSpec, fit_probe
from .losses import log_loss


def _probe_spec(cfg: FitConfig) -> ProbeSpec:
    p = cfg.probe
    return ProbeSpec(
        head=p.head,
        hidden=p.hidden,
        activation=p.activation,
        loss=p.loss,
        penalty=p.penalty,
        l1_ratio=p.l1_ratio,
        max_iter=p.max_iter,
    )


def candidate_sets(strategy: str, cfg: FitConfig, fs: FeatureSet) -> list[str]:
    finals = ["top"] + (["imagenet"] if fs.classifier is not None and cfg.probe.head == "linear" else [])
    if strategy == "linear":
        return finals
    return featsets.stage_sets(len(zoo.info(cfg.model).stages)) + finals


def run(ctx: FitContext, strategy: str) -> FitResult:
    cfg, s, fs = ctx.cfg, ctx.splits, ctx.features
    assert fs is not None
    C = len(s.classes)
    spec = _probe_spec(cfg)
    ytr = np.array([x.label for x in s.train])
    yva = np.array([x.label for x in s.val])
    tr, va = ctx.rows["train"], ctx.rows["val"]
    flip = cfg.features.flip_augment
    pcfg = cfg.probe.resolved(len(ytr))
    repeats, lambdas = pcfg.cv_repeats, tuple(pcfg.lambdas)
    cores = cfg.features.threads or os.cpu_count() or 1
    t = time.perf_counter()
    cv_table = {}
    names = candidate_sets(strategy, cfg, fs)
    ctx.log(
        f"{strategy}: cross-validating {len(names)} feature set(s) x {len(lambdas)} penalties "
        f"({cfg.probe.cv_folds}-fold x {repeats})"
    )
    for name in names:
        X = featsets.build(fs, name, tr)
        Xf = featsets.build(fs, name, tr, view="flip") if flip else None
        with compute_threads(probe_threads(len(X) * (2 if flip else 1), X.shape[1], cores)):
            cv = cross_validate(
                X, ytr, C, lambdas, spec, folds=cfg.probe.cv_folds, repeats=repeats, seed=cfg.data.seed, X_aug=Xf
            )
        cv_table[name] = cv
        ctx.log(
            f"  {name:<24s} dim {X.shape[1]:5d}  CV accuracy {cv.best_accuracy:.3f}  "
            + (f"log-loss {cv.best_log_loss:.4f}  " if spec.loss == "ce" else "")
            + f"lambda {cv.best_lambda:.3g}"
        )
    if spec.loss == "ce":
        best = min(names, key=lambda n: (round(cv_table[n].best_log_loss, 6), -cv_table[n].best_accuracy))
    else:
        best = max(names, key=lambda n: (round(cv_table[n].best_accuracy, 6), -featsets.build(fs, n, tr[:1]).shape[1]))
    ctx.timings["cv_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    X = featsets.build(fs, best, tr)
    Xfit, yfit = X, ytr
    if flip:
        Xfit, yfit = np.concatenate([X, featsets.build(fs, best, tr, view="flip")]), np.concatenate([ytr, ytr])
    lam = cv_table[best].best_lambda
    with compute_threads(probe_threads(len(Xfit), X.shape[1], cores)):
        probe = fit_probe(Xfit, yfit, C, lam, spec, seed=cfg.data.seed)
    Xva = featsets.build(fs, best, va)
    logits = probe.logits(Xva)
    pred = logits.argmax(1)
    acc = float((pred == yva).mean())
    ctx.timings["fit_seconds"] = round(time.perf_counter() - t, 3)
    ctx.log(f"chose {best} (lambda {lam:.3g}): val accuracy {acc:.4f} on {len(yva)} images")

    knn_info = None
    if cfg.knn.enabled:
        Xk = featsets.build(fs, "top", tr)
        sel = select_knn(Xk, ytr, C, tuple(cfg.knn.metrics), tuple(cfg.knn.ks), seed=cfg.data.seed)
        kv = fit_knn(Xk, ytr, C, sel["metric"], sel["k"]).predict(featsets.build(fs, "top", va))
        knn_info = {
            "metric": sel["metric"],
            "k": sel["k"],
            "loo_accuracy": sel["loo_accuracy"],
            "val_accuracy": round(float((kv == yva).mean()), 6),
        }

    t = time.perf_counter()
    mspec, head = featsets.transfer_head(cfg.model, best, probe, fs.classifier)
    hit, built = backbones.cached(mspec, cfg.weights), None
    if hit is None:  # built now (timm and torch): the whole model is checked on images
        from transferzoo.zoo import assembly as za

        tensors, weights, built = za.pretrained_backbone(mspec, weights=cfg.weights)
        backbone = {k: v.numpy() for k, v in tensors.items()}
    else:
        backbone, weights = hit
    if built is not None:
        diff = parity_check(built, head, s.val[:4], logits[:4], cfg.model)
        parity = {"checked": "model on images", "max_abs_diff": diff}
    else:  # a verified cached backbone (the engine was checked against it when built): the head
        inputs = featsets.build(fs, "top" if best == "imagenet" else best, va[:4])  # what the backbone gives the head
        got = featsets.head_logits(mspec.head, head, inputs)
        diff = _agree(got, logits[:4], "validation rows") if len(inputs) else None
        parity = {"checked": "head on features", "max_abs_diff": diff}
    state = {**backbone, **{f"head.{k}": v for k, v in head.items()}}
    ctx.timings["model_seconds"] = round(time.perf_counter() - t, 3)

    cm = confusion_matrix(yva, pred, C)
    summary = {
        "strategy": strategy,
        "planned_strategy": ctx.planned_strategy or strategy,
        "model": zoo.get(cfg.model).name,
        "val_accuracy": round(acc, 6),
        "val_loss": round(log_loss(logits, yva), 6) if spec.loss == "ce" else None,
        "num_classes": C,
        "num_train": len(s.train),
        "num_val": len(s.val),
        "num_test": len(s.test),
        "wall_seconds": None,
        "feature_set": best,
        "stages": list(mspec.stages) if mspec.stages else None,
        "head": spec.head,
        "loss": spec.loss,
        "penalty": spec.penalty,
        "lambda": lam,
        "cv": {n: c.to_dict() for n, c in cv_table.items()},
        "knn": knn_info,
        "flip_augment": flip,
        "feature_engine": ctx.timings.get("feature_engine"),
        "parity_max_abs_diff": parity["max_abs_diff"],
        "parity_checked": parity["checked"],
        "confusion": cm.tolist(),
        "per_class": {
            name: {"support": int(cm[i].sum()), "recall": round(float(cm[i, i] / max(1, cm[i].sum())), 4)}
            for i, name in enumerate(s.classes)
        },
    }
    if s.test:
        yte = np.array([x.label for x in s.test])
        summary["test_accuracy"] = round(
            float((probe.predict(featsets.build(fs, best, ctx.rows["test"])) == yte).mean()), 6
        )
    return FitResult(
        summary=summary,
        run_dir=ctx.run_dir,
        plan=ctx.plan,
        spec=mspec,
        state=state,
        weights=weights,
        probe=probe,
        context=ctx,
    )


def _agree(got: np.ndarray, cached_logits: np.ndarray, what: str) -> float:
    diff = float(np.abs(got - cached_logits).max())
    scale = max(1.0, float(np.abs(cached_logits).max()))
    if diff > 1e-3 * scale:
        raise RuntimeError(
            f"the model to be saved disagrees with the fitted probe by {diff:.2e} on {len(got)} {what}; "
            "nothing was written (run with --engine torch to rule out the ONNX engine)"
        )
    return diff


def parity_check(model, head: dict, samples: list[Sample], cached_logits: np.ndarray, model_name: str) -> float | None:
    """Max |TransferModel(image) - probe(cached features)| on a few real val images, with `head`
    (the state dict to be saved) loaded into `model`: the saved model computes what was evaluated.
    Raises if they disagree."""
    import torch

    from ..threads import torch_threads

    model.head.load_state_dict({k: torch.from_numpy(v) for k, v in head.items()})
    if not samples:
        return None
    decode = image_decoder(model_name)
    x = torch.from_numpy(np.stack([decode(s.path) for s in samples]))
    with torch_threads(1), torch.no_grad():  # 4 images: thread start-up costs more than it saves
        got = model.eval()(x).numpy()
    return _agree(got, cached_logits, "validation images")
