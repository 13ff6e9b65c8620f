"""The probes' cross-validation with and without the row-space reduction, in one process.

    .venv/bin/python bench/bench_probe_cv.py [--data ../shared/datasets/hymenoptera] [--rounds 3]

What `fit --strategy linear` cross-validates (the `top` and `imagenet` feature sets, the default
8-penalty grid, 5 folds x 2 repeats), on the dataset's cached training features (extracted first
if the cache lacks them). "full": every fold fitted in all d feature dimensions; "row space": in
the span of the fold's n training rows (transfer.probe.cv.row_space; the same problem when n < d).
Rounds alternate the two sides; medians of wall and CPU seconds, the ratio, and the CV numbers of
both (they must agree).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import transferzoo.transfer.probe.cv as cvm
from transferzoo.transfer.config import FitConfig
from transferzoo.transfer.data import scan_folder
from transferzoo.transfer.features import sets as featsets
from transferzoo.transfer.features.engine import Extractor
from transferzoo.transfer.probe.linear import DEFAULT_LAMBDAS, ProbeSpec
from transferzoo.transfer.threads import torch_threads

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "hymenoptera"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    splits = scan_folder(args.data)
    cfg = FitConfig()
    fs = Extractor(cfg.model, cfg.features, progress=False).extract([x.path for x in splits.train])
    rows = np.arange(len(splits.train))
    y = np.array([x.label for x in splits.train])
    sets = {name: featsets.build(fs, name, rows) for name in ("top", "imagenet")}
    sides = {"full": lambda z, zva: (z, zva), "row space": cvm.row_space}
    times: dict[str, list[tuple[float, float]]] = {s: [] for s in sides}
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for side, reduce in sides.items():
            cvm.row_space = reduce
            wall, cpu = time.perf_counter(), time.process_time()
            with torch_threads(1):  # as fit runs problems of this size
                results[side] = {
                    n: cvm.cross_validate(X, y, len(splits.classes), DEFAULT_LAMBDAS, ProbeSpec(), folds=5, repeats=2)
                    for n, X in sets.items()
                }
            times[side].append((time.perf_counter() - wall, time.process_time() - cpu))
    cvm.row_space = sides["row space"]
    print(f"{args.data}: {len(y)} training images, sets " + ", ".join(f"{n} ({X.shape[1]})" for n, X in sets.items()))
    med = {s: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for s, v in times.items()}
    for side, (w, c) in med.items():
        cv = results[side]
        picks = "; ".join(f"{n}: lambda {r.best_lambda:.3g}, CV acc {r.best_accuracy:.4f}" for n, r in cv.items())
        print(f"  {side:<10s} wall {w:6.2f} s  cpu {c:6.2f} s   {picks}")
    (w_new, c_new), (w_old, c_old) = med["row space"], med["full"]
    print(f"ratio row space / full: wall {w_new / w_old:.2f}, cpu {c_new / c_old:.2f}")


if __name__ == "__main__":
    main()
