"""The plan: measure the data, then pick the transfer strategy the folklore table prescribes.

                      similar to ImageNet          different from ImageNet
    little data       linear (top layer)           stages (probes on earlier stages / concatenations)
    a lot of data     partial (finetune the top    partial with the top half of the blocks, or
                      1/8 of the blocks, >= 1)     full when there is very much data

Measurements (all on the *training* split; validation images are never looked at by the plan):

Size: the median number of training images per class.
  - ``little`` below LOT_PER_CLASS (300), ``a lot`` from there; ``very much`` from
    VERY_MUCH_PER_CLASS (1000), where a full finetune of a "different" dataset pays off.

Similarity, two measurements on the frozen pretrained network:
  1. Stage probes: cross-validated accuracy of a linear probe on each stage's pooled features vs the
     final features (``top``, and the pretrained head's log-probabilities ``imagenet``). ImageNet
     features specialise towards the top; when an earlier stage beats the final features by more
     than the margin, the top layers are tuned to something this data is not: ``different``.
     margin = max(STAGE_MARGIN (0.01), one binomial standard error of the final CV accuracy,
     sqrt(p (1 - p) / n) over the n images probed): with 35 images a 1-image difference is noise.
  2. The pretrained ImageNet head's confidence: the mean top-1 softmax probability over the
     training images. Below CONFIDENCE_MIN (0.2; chance over 1000 classes is 0.001, photos of
     ImageNet-like objects give 0.5-0.8) the images look like nothing ImageNet knows: ``different``.
  The data is ``different`` if either says so, else ``similar``.

Also reported, as a baseline next to the probes: a k-NN classifier (L1/L2, k by leave-one-out).
"""

from __future__ import annotations

import math
import time

import numpy as np

from transferzoo import zoo
from transferzoo.transfer.features.engine import FeatureSet
from transferzoo.transfer.probe.cv import cross_validate
from transferzoo.transfer.probe.knn import fit_knn, select_knn
from transferzoo.transfer.probe.linear import ProbeSpec, fit_probe

from .config import FitConfig
from .data import DataSplits
from .features import sets as featsets

LOT_PER_CLASS = 300
VERY_MUCH_PER_CLASS = 1000
STAGE_MARGIN = 0.01
CONFIDENCE_MIN = 0.2
PLAN_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)  # coarse grid: the plan compares feature sets, fit refines
PLAN_MAX_ROWS = 2000  # stage probes use at most this many training images (stratified subsample)
THRESHOLDS = {
    "lot_per_class": LOT_PER_CLASS,
    "very_much_per_class": VERY_MUCH_PER_CLASS,
    "stage_margin": STAGE_MARGIN,
    "confidence_min": CONFIDENCE_MIN,
}


def _subsample(y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n = max(2, int(round(len(idx) * max_rows / len(y))))
        keep.append(rng.choice(idx, min(n, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def imagenet_confidence(fs: FeatureSet, rows) -> dict | None:
    if fs.classifier is None:
        return None
    logp = featsets.build(fs, "imagenet", rows)
    p = np.exp(logp)
    top1 = p.max(axis=1)
    ent = -(p * logp).sum(axis=1) / math.log(p.shape[1])
    from transferzoo.zoo.labels import imagenet_labels

    labels = imagenet_labels() if p.shape[1] == 1000 else None
    common = np.bincount(p.argmax(axis=1), minlength=p.shape[1]).argsort()[::-1][:5]
    return {
        "mean_top1_probability": round(float(top1.mean()), 4),
        "mean_normalised_entropy": round(float(ent.mean()), 4),
        "most_predicted": [labels[i] if labels else int(i) for i in common],
    }


def size_measure(splits: DataSplits) -> dict:
    counts = np.array(list(splits.class_counts("train").values()))
    median = float(np.median(counts))
    level = "very much" if median >= VERY_MUCH_PER_CLASS else ("a lot" if median >= LOT_PER_CLASS else "little")
    return {
        "num_train": int(counts.sum()),
        "num_classes": len(counts),
        "median_per_class": median,
        "min_per_class": int(counts.min()),
        "max_per_class": int(counts.max()),
        "level": level,
        "large": median >= LOT_PER_CLASS,
    }


def stage_probes(
    fs: FeatureSet, rows: np.ndarray, y: np.ndarray, num_classes: int, sets: list[str], seed: int = 0, log=None
) -> dict[str, dict]:
    out = {}
    for name in sets:
        t = time.perf_counter()
        X = featsets.build(fs, name, rows)
        cv = cross_validate(X, y, num_classes, PLAN_LAMBDAS, ProbeSpec(max_iter=100), folds=5, repeats=1, seed=seed)
        out[name] = {
            "dim": int(X.shape[1]),
            "cv_accuracy": round(cv.best_accuracy, 4),
            "cv_log_loss": round(cv.best_log_loss, 4),
            "lambda": cv.best_lambda,
            "seconds": round(time.perf_counter() - t, 2),
        }
        if log:
            log(f"  probe {name:<10s} dim {X.shape[1]:5d}  CV accuracy {cv.best_accuracy:.3f}")
    return out


def suggest(strategy: str, size: dict, model_name: str, different: bool) -> tuple[int, int, dict]:
    """(blocks to unfreeze, number of blocks, suggested hyperparameters) for a strategy."""
    blocks = zoo.info(model_name).blocks
    nb = len(blocks)
    if strategy in ("linear", "stages"):
        return (
            0,
            nb,
            {
                "lambdas": "log grid 1e-4..10, chosen by 5-fold CV",
                "optimizer": "L-BFGS (full batch)",
                "head": "linear",
                "loss": "ce",
            },
        )
    if strategy == "full":
        unfreeze = nb
    else:
        # "a few layers" (similar): the top eighth of the blocks, at least one -- on CPU every extra
        # block multiplies the epoch cost (flowers: 1 block 150 s, 2 blocks 348 s, same accuracy);
        # "many layers" (different): the top half, since low-level features need to adapt too.
        unfreeze = max(1, math.ceil(nb * (0.5 if different else 0.125)))
    n = size["num_train"]
    epochs = 10 if n >= 20000 else 15 if n >= 5000 else 20
    hp = {
        "unfreeze": unfreeze,
        "optimizer": "adamw",
        "lr": 1e-4 if strategy == "full" else 1e-3,
        "weight_decay": 0.05,
        "layer_decay": 0.75,
        "epochs": epochs,
        "batch_size": 64,
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "warmup_epochs": 1,
    }
    return unfreeze, nb, hp


def make_plan(splits: DataSplits, fs: FeatureSet, train_rows: np.ndarray, cfg: FitConfig, log=None) -> dict:
    """Measure and decide. `fs` holds features of at least the training images, `train_rows` are
    their row indices in `fs` (in `splits.train` order)."""
    t0 = time.perf_counter()
    y_all = np.array([s.label for s in splits.train])
    C = len(splits.classes)
    size = size_measure(splits)
    sub = _subsample(y_all, PLAN_MAX_ROWS, cfg.data.seed)
    rows, y = train_rows[sub], y_all[sub]
    num_stages = len(zoo.info(cfg.model).stages)
    finals = ["top"] + (["imagenet"] if fs.classifier is not None else [])
    stages = [f"stage{i}" for i in range(num_stages)]
    if log:
        log(f"plan: stage probes on {len(rows)} training images ({'subsample' if len(rows) < len(y_all) else 'all'})")
    probes = stage_probes(fs, rows, y, C, finals + stages, cfg.data.seed, log)
    best_final = max(finals, key=lambda n: probes[n]["cv_accuracy"])
    best_stage = max(stages, key=lambda n: probes[n]["cv_accuracy"])
    gap = probes[best_stage]["cv_accuracy"] - probes[best_final]["cv_accuracy"]
    conf = imagenet_confidence(fs, rows)
    p_final, n_probe = probes[best_final]["cv_accuracy"], len(rows)
    margin = max(STAGE_MARGIN, math.sqrt(max(p_final * (1 - p_final), 1e-12) / n_probe))
    stage_says = gap > margin
    conf_says = conf is not None and conf["mean_top1_probability"] < CONFIDENCE_MIN
    different = stage_says or conf_says
    sim = {
        "level": "different" if different else "similar",
        "best_final": best_final,
        "best_stage": best_stage,
        "stage_minus_final_cv_accuracy": round(gap, 4),
        "stage_margin": round(margin, 4),
        "by_stage_probes": "different" if stage_says else "similar",
        "imagenet_head": conf,
        "by_confidence": None if conf is None else ("different" if conf_says else "similar"),
    }
    # kNN baseline (leave-one-out on the training images, top features)
    Xk = featsets.build(fs, "top", rows)
    knn = (
        select_knn(Xk, y, C, metrics=tuple(cfg.knn.metrics), ks=tuple(cfg.knn.ks), seed=cfg.data.seed)
        if cfg.knn.enabled
        else None
    )

    if not size["large"]:
        strategy = "stages" if different else "linear"
    elif different and size["level"] == "very much":
        strategy = "full"
    else:
        strategy = "partial"
    unfreeze, nb, hp = suggest(strategy, size, cfg.model, different)
    reasons = [
        f"size: median {size['median_per_class']:g} training images per class -> {size['level']} "
        f"(a lot from {LOT_PER_CLASS}, very much from {VERY_MUCH_PER_CLASS})",
        f"stage probes: best earlier stage {best_stage} CV accuracy {probes[best_stage]['cv_accuracy']:.3f} vs final "
        f"{best_final} {probes[best_final]['cv_accuracy']:.3f} (gap {gap:+.3f}; earlier wins above +{margin:.3f}) -> "
        + sim["by_stage_probes"],
    ]
    if conf is not None:
        reasons.append(
            f"pretrained head confidence: mean top-1 probability {conf['mean_top1_probability']:.3f} "
            f"(different below {CONFIDENCE_MIN}) -> {sim['by_confidence']}"
        )
    table = {
        ("little", False): "linear classifier on the top layer",
        ("little", True): "linear classifiers on earlier stages",
        ("lot", False): f"finetune the top {unfreeze} of {nb} blocks",
        ("lot", True): f"finetune {'all' if strategy == 'full' else f'the top {unfreeze} of'} {nb} blocks",
    }
    reasons.append(
        f"decision: {size['level']} data, {sim['level']} -> {strategy} "
        f"({table[('lot' if size['large'] else 'little', different)]})"
    )
    return {
        "strategy": strategy,
        "model": zoo.get(cfg.model).name,
        "unfreeze_blocks": unfreeze,
        "num_blocks": nb,
        "hyperparameters": hp,
        "reasons": reasons,
        "evidence": {
            "size": size,
            "similarity": sim,
            "probes": probes,
            "knn": knn,
            "class_counts": splits.class_counts("train"),
            "imbalance": round(splits.imbalance("train"), 3),
        },
        "thresholds": THRESHOLDS,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def baselines_on_val(fs: FeatureSet, train_rows, val_rows, splits: DataSplits, plan: dict, cfg: FitConfig) -> dict:
    """Val accuracy of the plan's best final-layer probe, best stage probe and the kNN: the
    evidence table `plan` prints (fit on train, scored on val; cheap on cached features)."""
    ytr = np.array([s.label for s in splits.train])
    yva = np.array([s.label for s in splits.val])
    C = len(splits.classes)
    out = {}
    sim = plan["evidence"]["similarity"]
    for key in ("best_final", "best_stage"):
        name = sim[key]
        lam = plan["evidence"]["probes"][name]["lambda"]
        p = fit_probe(featsets.build(fs, name, train_rows), ytr, C, lam)
        out[f"probe_{name}"] = round(float((p.predict(featsets.build(fs, name, val_rows)) == yva).mean()), 4)
    knn = plan["evidence"].get("knn")
    if knn:
        k = fit_knn(featsets.build(fs, "top", train_rows), ytr, C, knn["metric"], knn["k"])
        out[f"knn_{knn['metric']}_k{knn['k']}"] = round(
            float((k.predict(featsets.build(fs, "top", val_rows)) == yva).mean()), 4
        )
    return out


def format_plan(plan: dict) -> str:
    ev = plan["evidence"]
    lines = [
        f"plan for {plan['model']}: {plan['strategy'].upper()}"
        + (f" (unfreeze {plan['unfreeze_blocks']} of {plan['num_blocks']} blocks)" if plan["unfreeze_blocks"] else "")
    ]
    lines += [f"  - {r}" for r in plan["reasons"]]
    lines.append("  feature-set probes (training images, 5-fold CV):")
    for name, p in ev["probes"].items():
        lines.append(
            f"    {name:<10s} dim {p['dim']:5d}  CV accuracy {p['cv_accuracy']:.3f}  log-loss {p['cv_log_loss']:.3f}"
        )
    if ev.get("knn"):
        k = ev["knn"]
        lines.append(f"  kNN baseline: {k['metric']}, k={k['k']}, leave-one-out accuracy {k['loo_accuracy']:.3f}")
    if plan.get("val_baselines"):
        lines.append("  on the val split: " + ", ".join(f"{k} {v:.3f}" for k, v in plan["val_baselines"].items()))
    lines.append("  suggested hyperparameters: " + ", ".join(f"{k}={v}" for k, v in plan["hyperparameters"].items()))
    return "\n".join(lines)
