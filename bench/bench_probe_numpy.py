"""The probes on numpy (this tree) against the probes on torch (an older tree): the same decisions
and accuracies, and the time of `fit --strategy linear|stages` as a user times it, on real datasets
larger than hymenoptera (hymenoptera's cold / cached runs: bench/bench_cold_start.py).

    .venv/bin/python bench/bench_probe_numpy.py --old-ref 6a56ea2 [--datasets flowers eurosat] [--repeats 2]

Both trees share one feature cache (the same format), filled first by a throw-away run, so the
timed runs measure the probes (the plan's, the CV, the final fit, kNN with its L1 distances, the
audit) and the process around them, not feature extraction. Old and new alternate run by run; per
(dataset, strategy) it prints each side's median wall and CPU seconds, the ratio, and whether the
feature set, penalty and val accuracy agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cold_start as cold  # noqa: E402
from bench_cold_start import REPO, SHARED, SUBPACKAGES, old_tree, package_farm  # noqa: E402


def run_fit(farm: Path | None, data: Path, strategy: str, cache: Path, out: Path) -> dict:
    r = cold.run_fit(farm, data, cache, out, profile=False, strategy=strategy)
    s = r["summary"]
    return {
        "wall_s": r["wall_s"],
        "cpu_s": r["cpu_s"],
        "val_accuracy": s["val_accuracy"],
        "feature_set": s.get("feature_set"),
        "lambda": s.get("lambda"),
        "knn": (s.get("knn") or {}).get("val_accuracy"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["flowers", "eurosat-rgb"])
    ap.add_argument("--strategies", nargs="+", default=["linear", "stages"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--old-ref", required=True, help="the old side (probes on torch): a commit")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-probe-numpy-"))
    try:
        tree = old_tree(args.old_ref, tmp)
        sides = {"old": package_farm(tree, tmp / "old-pkg"), "new": None}
        for t in (tree, REPO):
            dirs = [str(t / d) for d in ("transferzoo", *SUBPACKAGES)]
            subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True, capture_output=True)
        cache = tmp / "cache"
        rows = []
        for name in args.datasets:
            data = SHARED / name
            if not data.is_dir():
                raise SystemExit(f"no dataset at {data}")
            print(f"{name}: filling the feature cache ...", flush=True)
            run_fit(None, data, "linear", cache, tmp / "warm")
            for strategy in args.strategies:
                got: dict[str, list[dict]] = {}
                for r in range(args.repeats):
                    for side, farm in sides.items():
                        res = run_fit(farm, data, strategy, cache, tmp / f"run-{side}")
                        got.setdefault(side, []).append(res)
                        print(f"  {name} {strategy} repeat {r + 1} {side}: {json.dumps(res)}", flush=True)
                rows.append((name, strategy, got))
        print()
        head = f"{'dataset':12s} {'strategy':8s} {'old wall':>9s} {'new wall':>9s} {'new/old':>8s} {'CPU new/old':>12s}"
        print(head + "  agree")
        for name, strategy, got in rows:
            w = {s: statistics.median(x["wall_s"] for x in got[s]) for s in got}
            c = {s: statistics.median(x["cpu_s"] for x in got[s]) for s in got}
            o, n = got["old"][-1], got["new"][-1]
            same = [k for k in ("feature_set", "val_accuracy", "knn") if o[k] == n[k]]
            lam = "same lambda" if o["lambda"] == n["lambda"] else f"lambda {o['lambda']:.3g} -> {n['lambda']:.3g}"
            print(
                f"{name:12s} {strategy:8s} {w['old']:9.2f} {w['new']:9.2f} {w['new'] / w['old']:8.2f} "
                f"{c['new'] / c['old']:12.2f}  {', '.join(same) or 'none'}; {lam}; "
                f"val {o['val_accuracy']:.4f} -> {n['val_accuracy']:.4f}, kNN {o['knn']} -> {n['knn']}"
            )
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
