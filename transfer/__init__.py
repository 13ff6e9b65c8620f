"""transfer: from a folder of labelled images to a trained model (backbone + new head).

    from transfer import scan_folder, plan, fit, FitConfig
    splits = scan_folder("data/")                 # validate + split (DataSplits)
    p = plan("data/")                             # measure size + similarity, pick a strategy (dict)
    res = fit("data/", FitConfig(strategy="auto"), out="runs/x")   # run dir per transfer/RUN_DIR.md

Heavy modules (torch, timm, onnxruntime) load on first use of plan/fit.
"""
from __future__ import annotations

from .config import FitConfig, load_config
from .data import DataSplits, ImageDataset, Sample, scan_folder


def plan(data, cfg: FitConfig | None = None, log=None, val_baselines: bool = True) -> dict:
    from .fit import plan as _plan

    return _plan(data, cfg, log=log, val_baselines=val_baselines)


def fit(data, cfg: FitConfig | None = None, out=None, log=None):
    from .fit import fit as _fit

    return _fit(data, cfg, out=out, log=log)


__all__ = ["FitConfig", "load_config", "DataSplits", "ImageDataset", "Sample", "scan_folder", "plan", "fit"]
