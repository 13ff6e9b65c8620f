"""transfer: from a folder of labelled images to a trained model (backbone + new head).

    from transferzoo.transfer import FitConfig, fit, plan, scan_folder
    splits = scan_folder("data/")                 # validate + split (DataSplits)
    p = plan("data/")                             # measure the data, pick a strategy (dict)
    res = fit("data/", FitConfig(strategy="auto"), out="runs/x")   # run dir per transfer/RUN_DIR.md

What it holds:
- `config` (every setting of `fit`, typed), `data` (scan, validate, split), `sample_data` (embedded
  datasets as folders), `context` (what strategies receive), `threads`;
- `features/`: the frozen backbone run once per image (engine), the on-disk feature cache, the named
  feature sets probes train on;
- `probe/`: classifiers fit full-batch on cached features (losses, the probe, cross-validation,
  k-NN) and the `linear` / `stages` strategies;
- `finetune/`: `partial` / `full` training (the finetuner, epoch loop, optimizers, freezing, the
  cached frozen prefix, checkpoints, DDP, the LR finder);
- `planner` (measure the data and decide), `strategies` (the strategy table, `plan`, `fit`),
  `rundir` (the run directory, transfer/RUN_DIR.md), `report/` (figures and report.md).

It may import `zoo` and `export` (the one verified torch -> ONNX helper), never `serve` or the CLI.
Importing the package is cheap: the names below load their modules on first use.
"""

from __future__ import annotations

import importlib

_API = {
    "FitConfig": "config",
    "load_config": "config",
    "DataSplits": "data",
    "ImageDataset": "data",
    "Sample": "data",
    "scan_folder": "data",
    "plan": "strategies",
    "fit": "strategies",
}


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_API)
