"""hymenoptera, efficientnet_lite0: `fit --strategy auto` (ours) vs a plain linear probe on
eager-PyTorch features (baseline), in one process. Target: val accuracy >= 0.95, wall <= 20 s.

    .venv/bin/python bench/bench_transfer_hymenoptera.py [--data ../shared/datasets/hymenoptera]

Runs, each with a fresh feature cache (nothing reused between them unless said):
  ours/cold     auto, ONNX export + its check included (a once-per-model cost: the exported file is cached)
  ours/engine   auto, ONNX file already exported, no cached features: the normal first run on new data
  ours/cached   auto again on the same cache: features reused, only the plan + fit run
  baseline      eager-PyTorch features, top-layer logistic-regression probe (L-BFGS, CV'd L2)
Wall times are decode + features + plan + fit (excluding imports and writing the run directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from transferzoo.transfer import fit
from transferzoo.transfer.config import FeatureConfig, FitConfig
from transferzoo.transfer.data import scan_folder
from transferzoo.transfer.features.engine import Extractor
from transferzoo.transfer.probe.cv import cross_validate
from transferzoo.transfer.probe.linear import fit_probe
from transferzoo.transfer.threads import torch_threads
from transferzoo.zoo.config import override

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def ours(data: Path, cache: Path, label: str) -> dict:
    cfg = override(FitConfig(strategy="auto"), {"features.cache_dir": str(cache)})
    t = time.perf_counter()
    res = fit(data, cfg)
    wall = time.perf_counter() - t
    s = res.summary
    r = {
        "run": label,
        "val_accuracy": s["val_accuracy"],
        "wall_s": round(wall, 2),
        "strategy": s["strategy"],
        "feature_set": s["feature_set"],
        "engine": s["feature_engine"],
        "features_s": s["timings"]["features_seconds"],
        "plan_s": s["timings"].get("plan_seconds"),
        "cv_s": s["timings"]["cv_seconds"],
        "knn_val": s["knn"]["val_accuracy"],
    }
    print(r, flush=True)
    return r


def baseline(data: Path, cache: Path) -> dict:
    t = time.perf_counter()
    s = scan_folder(data)
    ex = Extractor("efficientnet_lite0", FeatureConfig(engine="torch", cache_dir=str(cache)), progress=False)
    fs = ex.extract([x.path for x in s.train + s.val])
    n = len(s.train)
    y = np.array([x.label for x in s.train + s.val])
    X = fs.get("top")
    with torch_threads(1):
        cv = cross_validate(X[:n], y[:n], 2, folds=5, repeats=1)
        p = fit_probe(X[:n], y[:n], 2, cv.best_lambda)
    acc = float((p.predict(X[n:]) == y[n:]).mean())
    r = {
        "run": "baseline (eager torch, top probe)",
        "val_accuracy": round(acc, 6),
        "wall_s": round(time.perf_counter() - t, 2),
        "features_s": fs.timings["compute_seconds"],
    }
    print(r, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "hymenoptera"))
    args = ap.parse_args()
    data = Path(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="bench_hym_"))
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}", flush=True)
    cold = ours(data, tmp / "c1", "ours/cold (incl. ONNX export)")
    # same ONNX file, empty feature cache: copy the exported engine only
    src = next((tmp / "c1").iterdir())
    dst = tmp / "c2" / src.name
    (dst / "chunks").mkdir(parents=True)
    for f in ("features.onnx", "features.onnx.check.json", "classifier.npy", "meta.json"):
        shutil.copy(src / f, dst / f)
    engine = ours(data, tmp / "c2", "ours/engine ready, features not cached")
    cached = ours(data, tmp / "c2", "ours/features cached")
    base = baseline(data, tmp / "c3")
    print(f"\nload average after: {os.getloadavg()}")
    print("| run | val accuracy | wall s |\n|---|---|---|")
    for r in (cold, engine, cached, base):
        print(f"| {r['run']} | {r['val_accuracy']:.4f} | {r['wall_s']:.1f} |")
    print(
        f"\nspeed-up vs baseline: cold {base['wall_s'] / cold['wall_s']:.2f}x, engine ready "
        f"{base['wall_s'] / engine['wall_s']:.2f}x, cached {base['wall_s'] / cached['wall_s']:.1f}x"
    )
    print(f"accuracy: ours {engine['val_accuracy']:.4f} vs baseline {base['val_accuracy']:.4f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
