"""`fit`: from a folder of images to a run directory. Strategies:

- ``linear``: a probe on the final features (``top``, and ``imagenet`` = the pretrained head's
  log-probabilities, when the head is linear), the feature set and penalty strength chosen by CV.
- ``stages``: the same over every stage's pooled features and their concatenations (plus the final
  features), best by CV.
- ``auto``: runs the plan (`transfer.plan`) and then the strategy it picks. When the plan picks a
  strategy this build does not have (``partial`` / ``full`` come with the finetuning package), it
  says so and runs ``stages`` (data "different") or ``linear`` instead.
- ``partial`` / ``full``: registered by the finetuning package through `register_strategy`
  (module ``transfer.finetune_plugin``, imported if present, calls it).

All cached-feature strategies run the backbone once per image (`transfer.engine`, on-disk cache),
fit full-batch, and write the same run directory (`transfer.rundir`).
"""
from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from transferzoo import zoo

from .features import sets as featsets
from .config import FitConfig
from .data import DataSplits, Sample, scan_folder
from transferzoo.transfer.features.engine import Extractor, FeatureSet
from transferzoo.transfer.probe.knn import fit_knn, select_knn
from .plan import baselines_on_val, make_plan
from .threads import probe_threads, torch_threads
from transferzoo.transfer.probe.linear import DEFAULT_LAMBDAS, ProbeSpec, _log_loss, cross_validate, fit_probe
from transferzoo.transfer.report.markdown import confusion_matrix


@dataclass
class FitContext:
    """Everything a strategy needs; part 2's strategies receive the same object."""

    data_root: Path
    cfg: FitConfig
    splits: DataSplits
    run_dir: Path | None
    log: Callable[[str], None]
    t0: float
    plan: dict | None = None
    planned_strategy: str | None = None
    timings: dict = field(default_factory=dict)
    features: FeatureSet | None = None
    rows: dict = field(default_factory=dict)  # split name -> row indices into `features`


@dataclass
class FitResult:
    summary: dict
    run_dir: Path | None
    plan: dict | None
    model: torch.nn.Module | None = None
    spec: object = None
    written: bool = False  # a strategy that wrote the run directory itself sets this
    probe: object = None  # cached-feature strategies: the fitted transfer.probe.Probe
    context: FitContext | None = None


STRATEGIES: dict[str, Callable[[FitContext], FitResult]] = {}


def register_strategy(name: str, fn: Callable[[FitContext], FitResult]) -> None:
    STRATEGIES[name] = fn


def available_strategies() -> list[str]:
    _load_plugins()
    return sorted(STRATEGIES)


def _load_plugins() -> None:
    try:
        importlib.import_module(f"{__package__}.finetune_plugin")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.finetune_plugin":
            raise


# -- data + features ----------------------------------------------------------------------------
def load_splits(data, cfg: FitConfig, log) -> DataSplits:
    splits = scan_folder(data, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                         seed=cfg.data.seed, strict=cfg.data.strict)
    log(splits.describe())
    return splits


def extract(ctx: FitContext, extractor: Extractor | None = None) -> FeatureSet:
    """Features of every image of every split (one pipeline), rows indexed per split in ctx.rows.
    Images that fail to decode here are dropped from the splits and listed as skipped."""
    s, cfg = ctx.splits, ctx.cfg
    t = time.perf_counter()
    ex = extractor or Extractor(cfg.model, cfg.features, weights=cfg.weights, progress=cfg.progress)
    order = s.train + s.val + s.test
    fs = ex.extract([x.path for x in order], flip=cfg.features.flip_augment)
    if fs.failures:
        if cfg.data.strict:
            raise ValueError("cannot decode (strict mode): " + "; ".join(f"{p}: {r}" for p, r in fs.failures[:20]))
        bad = {p for p, _ in fs.failures}
        s.skipped.extend(fs.failures)
        s.train, s.val, s.test = ([x for x in lst if x.path not in bad] for lst in (s.train, s.val, s.test))
        ctx.log(f"skipped {len(bad)} image(s) that failed to decode")
    pos = {p: i for i, p in enumerate(fs.paths)}
    ctx.rows = {name: np.array([pos[os.path.abspath(x.path)] for x in s.split(name)], dtype=np.int64)
                for name in ("train", "val", "test")}
    ctx.features = fs
    ctx.timings["features_seconds"] = round(time.perf_counter() - t, 3)
    ctx.timings["feature_engine"] = fs.engine
    ctx.timings["features"] = fs.timings
    n = len(order)
    ctx.log(f"features: {n} images in {ctx.timings['features_seconds']:.1f} s ({fs.engine}; "
            f"{fs.timings['cached_images']} from cache)")
    return fs


# -- probe strategies ---------------------------------------------------------------------------
def _probe_spec(cfg: FitConfig) -> ProbeSpec:
    p = cfg.probe
    return ProbeSpec(head=p.head, hidden=p.hidden, activation=p.activation, loss=p.loss, penalty=p.penalty,
                     l1_ratio=p.l1_ratio, max_iter=p.max_iter)


def candidate_sets(strategy: str, cfg: FitConfig, fs: FeatureSet) -> list[str]:
    finals = ["top"] + (["imagenet"] if fs.classifier is not None and cfg.probe.head == "linear" else [])
    if strategy == "linear":
        return finals
    return featsets.stage_sets(len(zoo.info(cfg.model).stages)) + finals


def fit_probe_strategy(ctx: FitContext, strategy: str) -> FitResult:
    cfg, s, fs = ctx.cfg, ctx.splits, ctx.features
    assert fs is not None
    C = len(s.classes)
    spec = _probe_spec(cfg)
    ytr = np.array([x.label for x in s.train])
    yva = np.array([x.label for x in s.val])
    tr, va = ctx.rows["train"], ctx.rows["val"]
    flip = cfg.features.flip_augment
    repeats = cfg.probe.cv_repeats or (2 if len(ytr) < 2000 else 1)
    lambdas = tuple(cfg.probe.lambdas or DEFAULT_LAMBDAS)
    cores = cfg.features.threads or os.cpu_count() or 1
    t = time.perf_counter()
    cv_table = {}
    names = candidate_sets(strategy, cfg, fs)
    ctx.log(f"{strategy}: cross-validating {len(names)} feature set(s) x {len(lambdas)} penalties "
            f"({cfg.probe.cv_folds}-fold x {repeats})")
    for name in names:
        X = featsets.build(fs, name, tr)
        Xf = featsets.build(fs, name, tr, view="flip") if flip else None
        with torch_threads(probe_threads(len(X) * (2 if flip else 1), X.shape[1], cores)):
            cv = cross_validate(X, ytr, C, lambdas, spec, folds=cfg.probe.cv_folds, repeats=repeats,
                                seed=cfg.data.seed, X_aug=Xf)
        cv_table[name] = cv
        ctx.log(f"  {name:<24s} dim {X.shape[1]:5d}  CV accuracy {cv.best_accuracy:.3f}  "
                + (f"log-loss {cv.best_log_loss:.4f}  " if spec.loss == "ce" else "") + f"lambda {cv.best_lambda:.3g}")
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
    with torch_threads(probe_threads(len(Xfit), X.shape[1], cores)):
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
        knn_info = {"metric": sel["metric"], "k": sel["k"], "loo_accuracy": sel["loo_accuracy"],
                    "val_accuracy": round(float((kv == yva).mean()), 6)}

    t = time.perf_counter()
    mspec, model = featsets.transfer_model(cfg.model, best, probe, fs.classifier, weights=cfg.weights)
    parity = parity_check(model, s.val[:4], logits[:4], cfg.model)
    ctx.timings["model_seconds"] = round(time.perf_counter() - t, 3)

    cm = confusion_matrix(yva, pred, C)
    summary = {
        "strategy": strategy, "planned_strategy": ctx.planned_strategy or strategy, "model": zoo.get(cfg.model).name,
        "val_accuracy": round(acc, 6), "val_loss": round(_log_loss(logits, yva), 6) if spec.loss == "ce" else None,
        "num_classes": C, "num_train": len(s.train), "num_val": len(s.val), "num_test": len(s.test),
        "wall_seconds": None, "feature_set": best, "stages": list(mspec.stages) if mspec.stages else None,
        "head": spec.head, "loss": spec.loss, "penalty": spec.penalty, "lambda": lam,
        "cv": {n: c.to_dict() for n, c in cv_table.items()}, "knn": knn_info,
        "flip_augment": flip, "feature_engine": ctx.timings.get("feature_engine"),
        "parity_max_abs_diff": parity, "confusion": cm.tolist(),
        "per_class": {name: {"support": int(cm[i].sum()), "recall": round(float(cm[i, i] / max(1, cm[i].sum())), 4)}
                      for i, name in enumerate(s.classes)},
    }
    if s.test:
        yte = np.array([x.label for x in s.test])
        summary["test_accuracy"] = round(float((probe.predict(featsets.build(fs, best, ctx.rows["test"])) == yte).mean()), 6)
    return FitResult(summary=summary, run_dir=ctx.run_dir, plan=ctx.plan, model=model, spec=mspec, probe=probe, context=ctx)


@torch.no_grad()
def parity_check(model: torch.nn.Module, samples: list[Sample], cached_logits: np.ndarray, model_name: str) -> float | None:
    """Max |TransferModel(image) - probe(cached features)| on a few real val images: the saved
    model computes what was evaluated. Raises if they disagree."""
    if not samples:
        return None
    from transferzoo.transfer.features.engine import image_decoder

    decode = image_decoder(model_name)
    x = torch.from_numpy(np.stack([decode(s.path) for s in samples]))
    with torch_threads(1):  # 4 images: thread start-up costs more than it saves
        got = model.eval()(x).numpy()
    diff = float(np.abs(got - cached_logits).max())
    scale = max(1.0, float(np.abs(cached_logits).max()))
    assert diff <= 1e-3 * scale, f"saved model disagrees with the fitted probe by {diff}"
    return diff


register_strategy("linear", lambda ctx: fit_probe_strategy(ctx, "linear"))
register_strategy("stages", lambda ctx: fit_probe_strategy(ctx, "stages"))


# -- plan + fit ---------------------------------------------------------------------------------
def plan(data, cfg: FitConfig | None = None, log=None, val_baselines: bool = True) -> dict:
    """Scan, extract (cached) features and make the plan (see transfer.plan)."""
    cfg = (cfg or FitConfig()).validate()
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    ctx = FitContext(Path(data), cfg, load_splits(data, cfg, log), None, log, t0)
    extract(ctx)
    with torch_threads(1):
        p = make_plan(ctx.splits, ctx.features, ctx.rows["train"], cfg, log)
        if val_baselines:
            p["val_baselines"] = baselines_on_val(ctx.features, ctx.rows["train"], ctx.rows["val"], ctx.splits, p, cfg)
    p["data"] = {k: v for k, v in ctx.splits.summary().items() if k != "skipped"}
    p["data"]["skipped"] = len(ctx.splits.skipped)
    p["timings"] = dict(ctx.timings, wall_seconds=round(time.perf_counter() - t0, 2))
    return p


def fit(data, cfg: FitConfig | None = None, out=None, log=None) -> FitResult:
    """Run a strategy and write the run directory `out` (None: nothing written)."""
    cfg = (cfg or FitConfig()).validate()
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    _load_plugins()
    strategy = cfg.strategy
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not available in this installation "
                         f"(available: auto, {', '.join(sorted(STRATEGIES))}); it comes with transfer's finetuning package")
    t = time.perf_counter()
    ctx = FitContext(Path(data), cfg, load_splits(data, cfg, log), Path(out) if out else None, log, t0)
    ctx.timings["scan_seconds"] = round(time.perf_counter() - t, 3)
    if strategy in ("auto", "linear", "stages"):
        extract(ctx)
    if strategy == "auto":
        t = time.perf_counter()
        with torch_threads(1):
            ctx.plan = make_plan(ctx.splits, ctx.features, ctx.rows["train"], cfg, log)
        ctx.timings["plan_seconds"] = round(time.perf_counter() - t, 3)
        wanted = ctx.plan["strategy"]
        ctx.planned_strategy = wanted
        if wanted in STRATEGIES:
            strategy = wanted
        else:
            different = ctx.plan["evidence"]["similarity"]["level"] == "different"
            strategy = "stages" if different else "linear"
            note = (f"the plan chose {wanted!r}, which is not available in this installation (finetuning package "
                    f"missing); ran {strategy!r} instead")
            ctx.plan["ran"] = strategy
            ctx.plan["note"] = note
            log(f"note: {note}")
        for r in ctx.plan["reasons"]:
            log(f"plan: {r}")
    result = STRATEGIES[strategy](ctx)
    s = result.summary
    s["strategy"] = strategy
    s["planned_strategy"] = ctx.planned_strategy or strategy
    s.setdefault("timings", {}).update(ctx.timings)
    s["wall_seconds"] = round(time.perf_counter() - t0, 3)
    if ctx.run_dir is not None and not result.written:
        write(ctx, result)
        result.written = True
    return result


def write(ctx: FitContext, result: FitResult) -> Path:
    from .rundir import weights_provenance, write_run

    cfg_dict = ctx.cfg.to_dict()  # reloadable with --config (what ran is in metrics.json / plan.json)
    plan = ctx.plan or {"strategy": result.summary["strategy"], "planned": False,
                        "reasons": [f"strategy {result.summary['strategy']!r} chosen by the user (--strategy)"]}
    return write_run(ctx.run_dir, spec=result.spec, model=result.model, labels=ctx.splits.classes,
                     preprocessing=zoo.preprocessing(ctx.cfg.model), weights=weights_provenance(result.model),
                     summary=result.summary, config=cfg_dict, plan=plan, splits=ctx.splits)

