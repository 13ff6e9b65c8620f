"""Every strategy's validation accuracy and wall time next to what `auto` chose, on digits
(scikit-learn), lfw_subset (scikit-image), hymenoptera, flowers and flowers at 10 images per class.

    .venv/bin/python bench/bench_strategies.py [--datasets digits lfw hymenoptera flowers10 flowers]
        [--strategies auto linear stages partial full] [--results bench_strategies.jsonl] [--table-only]
        [--epochs N] [--full-image-size 160] [--model efficientnet_lite0]

Long: every (dataset, strategy) pair is one `fit` and its result is appended to --results as soon
as it ends, so pairs can run separately (and resumed later); `--table-only` prints the markdown table
from the stored results. Each `fit` starts with a cold feature cache (its own temporary directory),
so every time includes its own feature pass. Datasets without a split use fit's default (val 0.2,
seed 0; flowers10: val 0.3).
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
from transferzoo.transfer.sample_data import subsample_folder, write_digits, write_lfw_subset
from transferzoo.transfer.strategies import fit
from transferzoo.zoo.config import override

SHARED = Path(os.environ.get("TRANSFERZOO_SHARED", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
DATASETS = ("digits", "lfw", "hymenoptera", "flowers10", "flowers")
STRATEGIES = ("auto", "linear", "stages", "partial", "full")


def folder(name: str, tmp: Path) -> Path:
    if name == "digits":
        return write_digits(tmp / "digits") if not (tmp / "digits").exists() else tmp / "digits"
    if name == "lfw":
        return write_lfw_subset(tmp / "lfw") if not (tmp / "lfw").exists() else tmp / "lfw"
    if name == "flowers10":
        return subsample_folder(SHARED / "flowers", tmp / "flowers10", 10)
    return SHARED / name


def run_one(name: str, strategy: str, tmp: Path, args) -> dict:
    data = folder(name, tmp)
    ft = {}
    if args.epochs:
        ft["epochs"] = args.epochs
    if strategy == "full" and args.full_image_size:
        ft["image_size"] = args.full_image_size
    cfg = FitConfig(model=args.model, strategy=strategy, finetune=ft, progress=False)
    cfg = override(cfg, {"features.cache_dir": tempfile.mkdtemp(prefix="bench_strat_cache_")})
    if name == "flowers10":
        cfg = override(cfg, {"data.val_fraction": 0.3})
    t = time.perf_counter()
    s = fit(
        data, cfg, out=tmp / "runs" / f"{name}-{strategy}", log=lambda m: print(m, file=sys.stderr, flush=True)
    ).summary
    return {
        "dataset": name,
        "strategy": strategy,
        "ran": s["strategy"],
        "planned": s.get("planned_strategy"),
        "val_accuracy": s["val_accuracy"],
        "seconds": round(time.perf_counter() - t, 1),
        "unfreeze": s.get("trained_blocks"),
        "image_size": s.get("image_size"),
        "num_train": s["num_train"],
        "num_val": s["num_val"],
        "load_average": os.getloadavg()[0],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def table(results: list[dict]) -> str:
    latest = {}
    for r in results:
        latest[(r["dataset"], r["strategy"])] = r
    lines = [
        "| dataset | " + " | ".join(s for s in STRATEGIES if s != "auto") + " | auto chose | auto | auto - best |",
        "| --- " * 8 + "|",
    ]
    for d in DATASETS:
        row = {s: latest.get((d, s)) for s in STRATEGIES}
        if not any(row.values()):
            continue
        cells = []
        for s in STRATEGIES[1:]:
            r = row[s]
            cells.append(f"{r['val_accuracy']:.3f} ({r['seconds']:.0f}s)" if r else "-")
        known = [row[s]["val_accuracy"] for s in STRATEGIES if row[s]]
        a = row["auto"]
        auto_cell = f"{a['val_accuracy']:.3f} ({a['seconds']:.0f}s)" if a else "-"
        chose = (a["ran"] + (f" (k={a['unfreeze']})" if a["ran"] == "partial" else "")) if a else "-"
        gap = f"{a['val_accuracy'] - max(known):+.3f}" if a else "-"
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {chose} | {auto_cell} | {gap} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--results", default="bench_strategies.jsonl")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=None, help="finetuning epochs (default: FinetuneConfig's)")
    ap.add_argument("--full-image-size", type=int, default=None, help="input size for `full` (CPU: e.g. 160)")
    args = ap.parse_args()
    path = Path(args.results)
    if not args.table_only:
        tmp = Path(tempfile.mkdtemp(prefix="bench_strategies_"))
        for d in args.datasets:
            for s in args.strategies:
                if (
                    d not in ("digits", "lfw", "flowers10")
                    and not (SHARED / ("flowers" if d == "flowers10" else d)).is_dir()
                ):
                    print(f"skip {d}: not found", file=sys.stderr)
                    continue
                r = run_one(d, s, tmp, args)
                print(json.dumps(r), flush=True)
                with path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    results = [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []
    print(f"\nefficientnet_lite0, 2-core CPU (load average at each run in {path}); val accuracy (wall seconds)\n")
    print(table(results))


if __name__ == "__main__":
    main()
