"""The flowers target: `fit --strategy auto` on ../shared/datasets/flowers (no split given: the
default stratified split, seed 0) must reach val accuracy >= 0.95 within 10 minutes on 2 cores.
Baseline in the same process: the linear probe (`--strategy linear`) on the same split.

    .venv/bin/python bench/bench_finetune_flowers.py [--data DIR] [--image-size 160] [--views 2] [--epochs 5]
        [--skip-baseline] [--strategy auto] [--json out.json]

Prints val accuracy, wall seconds and peak RSS (this process; DataLoader workers separately) for
each side, and the ratios. The feature cache starts empty (a temporary directory), so `auto` pays
for the plan's feature extraction; the baseline then reuses those cached features (its time is
printed with and without the feature pass auto measured).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transferzoo.transfer.config import FitConfig
from transferzoo.transfer.strategies import fit
from transferzoo.zoo.config import override

SHARED = Path(os.environ.get("TRANSFERZOO_SHARED", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def peak_rss_mb() -> tuple[float, float]:
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "flowers"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--image-size", type=int, default=None, help="finetuning input size (default: FinetuneConfig's)")
    ap.add_argument("--views", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--unfreeze", type=int, default=None)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"{args.data} not found")
    cache = tempfile.mkdtemp(prefix="bench_ft_cache_")
    out = Path(tempfile.mkdtemp(prefix="bench_ft_run_"))
    ft = {
        k: v
        for k, v in {
            "image_size": args.image_size,
            "views": args.views,
            "epochs": args.epochs,
            "unfreeze": args.unfreeze,
        }.items()
        if v is not None
    }
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)

    cfg = override(
        FitConfig(model=args.model, strategy=args.strategy, finetune=ft, progress=False), {"features.cache_dir": cache}
    )
    t = time.perf_counter()
    res = fit(args.data, cfg, out=out / "ours", log=log)
    ours_s = time.perf_counter() - t
    ours = res.summary
    rss = peak_rss_mb()
    rows = [
        {
            "side": f"ours ({args.strategy} -> {ours['strategy']})",
            "val_accuracy": ours["val_accuracy"],
            "seconds": round(ours_s, 1),
            "peak_rss_mb": round(rss[0]),
            "worker_peak_rss_mb": round(rss[1]),
        }
    ]
    base = None
    if not args.skip_baseline:
        cfg = override(FitConfig(model=args.model, strategy="linear", progress=False), {"features.cache_dir": cache})
        t = time.perf_counter()
        base = fit(args.data, cfg, out=out / "linear", log=log).summary
        base_s = time.perf_counter() - t
        feat_s = (ours.get("timings") or {}).get("features_seconds") or 0.0
        rows.append(
            {
                "side": "baseline (linear probe)",
                "val_accuracy": base["val_accuracy"],
                "seconds": round(base_s + feat_s, 1),
                "note": f"{base_s:.1f}s with cached features + {feat_s:.1f}s feature pass",
            }
        )
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    print("\n| side | val accuracy | wall s | peak RSS MB (workers) |\n| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['side']} | {r['val_accuracy']:.4f} | {r['seconds']} | "
            + (f"{r['peak_rss_mb']} ({r['worker_peak_rss_mb']})" if "peak_rss_mb" in r else "-")
            + " |"
        )
    print(
        f"\nours: {ours['strategy']} (plan: {ours.get('planned_strategy')}), "
        f"unfreeze {ours.get('trained_blocks')}/{ours.get('num_blocks')}, {ours.get('image_size')} px, "
        f"views {(ours.get('prefix_cache') or {}).get('views')}, epochs {ours.get('epochs_run')}; "
        f"target: val >= 0.95 in <= 600 s -> {'MET' if ours['val_accuracy'] >= 0.95 and ours_s <= 600 else 'NOT MET'}"
    )
    if base is not None:
        print(
            f"accuracy gain over the linear probe: {ours['val_accuracy'] - base['val_accuracy']:+.4f}; "
            f"time ratio ours / linear: {ours_s / max(rows[1]['seconds'], 1e-9):.2f}x"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "ours": {k: v for k, v in ours.items() if k != "confusion"}}, indent=2, default=str
            )
        )


if __name__ == "__main__":
    main()
