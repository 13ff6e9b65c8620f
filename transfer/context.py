"""What every strategy receives and returns (`FitContext`, `FitResult`), and the two steps they
share: scanning the folder and extracting features of every split."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .config import FitConfig
from .data import DataSplits, scan_folder
from .features.engine import Extractor, FeatureSet

if TYPE_CHECKING:
    import torch


@dataclass
class FitContext:
    """Everything a strategy needs."""

    data_root: Path
    cfg: FitConfig
    splits: DataSplits
    run_dir: Path | None
    log: Callable[[str], None]
    t0: float
    resume: bool = False  # finetuning: continue from the run directory's checkpoint
    plan: dict | None = None
    planned_strategy: str | None = None
    timings: dict = field(default_factory=dict)
    features: FeatureSet | None = None
    rows: dict = field(default_factory=dict)  # split name -> row indices into `features`
    extractor: Extractor | None = None  # what extracted `features` (the audit reads its content keys)


@dataclass
class FitResult:
    summary: dict
    run_dir: Path | None
    plan: dict | None
    model: torch.nn.Module | None = None  # finetuning: the trained TransferModel
    spec: object = None
    # cached-feature strategies write the model without building it: its state dict and the
    # pretrained weights' provenance (zoo.assembly.pretrained_backbone + the probe's head)
    state: dict | None = None
    weights: dict | None = None
    written: bool = False  # a strategy that wrote the run directory itself sets this
    probe: object = None  # cached-feature strategies: the fitted transfer.probe.linear.Probe
    context: FitContext | None = None


def load_splits(data, cfg: FitConfig, log) -> DataSplits:
    splits = scan_folder(
        data,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.data.seed,
        strict=cfg.data.strict,
    )
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
    ctx.rows = {
        name: np.array([pos[os.path.abspath(x.path)] for x in s.split(name)], dtype=np.int64)
        for name in ("train", "val", "test")
    }
    ctx.features, ctx.extractor = fs, ex
    ctx.timings["features_seconds"] = round(time.perf_counter() - t, 3)
    ctx.timings["feature_engine"] = fs.engine
    # every feature from the cache: no device ran (and asking auto which one would import torch)
    device = ex.device if fs.timings["computed_images"] else "none (cached)"
    ctx.timings["feature_device"] = device
    ctx.timings["features"] = fs.timings
    n = len(order)
    ctx.log(
        f"features: {n} images in {ctx.timings['features_seconds']:.1f} s ({fs.engine} on {device}; "
        f"{fs.timings['cached_images']} from cache)"
    )
    return fs
