"""The plan's decision and its evidence on several real datasets, as one markdown table (README).

    .venv/bin/python bench/bench_transfer_plan_table.py [--model efficientnet_lite0] [--out plan_table.md]

Datasets: scikit-learn digits and scikit-image lfw_subset (rendered by transfer.sample_data),
../shared/datasets/hymenoptera, flowers, and flowers subsampled to 10 images per class (the
subsample is a folder of symlinks). Features come from the on-disk cache after the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transferzoo.transfer.config import FitConfig
from transferzoo.transfer.sample_data import subsample_folder, write_digits, write_lfw_subset
from transferzoo.transfer.strategies import plan
from transferzoo.zoo.config import override

SHARED = Path(os.environ.get("TRANSFERZOO_SHARED", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip", nargs="*", default=[])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="plan_table_"))
    sets = {
        "digits (sklearn)": lambda: write_digits(tmp / "digits"),
        "lfw_subset (skimage)": lambda: write_lfw_subset(tmp / "lfw"),
        "hymenoptera": lambda: SHARED / "hymenoptera",
        "flowers, 10 per class": lambda: subsample_folder(SHARED / "flowers", tmp / "flowers10", 10),
        "flowers": lambda: SHARED / "flowers",
    }
    rows = []
    for name, make in sets.items():
        if name in args.skip:
            continue
        folder = make()
        if not Path(folder).is_dir():
            print(f"skip {name}: {folder} not found", file=sys.stderr)
            continue
        cfg = FitConfig(model=args.model)
        if "10 per class" in name:
            cfg = override(cfg, {"data.val_fraction": 0.3})
        t = time.perf_counter()
        p = plan(folder, cfg, log=lambda m: print(m, file=sys.stderr))
        ev = p["evidence"]
        sim = ev["similarity"]
        conf = sim["imagenet_head"] or {}
        probes = ev["probes"]
        row = {
            "dataset": name,
            "train imgs / class (median)": ev["size"]["median_per_class"],
            "classes": ev["size"]["num_classes"],
            "size": ev["size"]["level"],
            "CV acc top / imagenet": f"{probes['top']['cv_accuracy']:.3f} / "
            "{probes.get('imagenet', {}).get('cv_accuracy', float('nan')):.3f}",
            "best stage (CV acc)": f"{sim['best_stage']} ({probes[sim['best_stage']]['cv_accuracy']:.3f})",
            "stage - final (margin)": f"{sim['stage_minus_final_cv_accuracy']:+.3f} ({sim['stage_margin']:.3f})",
            "ImageNet top-1 prob": conf.get("mean_top1_probability"),
            "similarity": sim["level"],
            "kNN LOO acc": ev["knn"]["loo_accuracy"] if ev.get("knn") else None,
            "val acc (best final probe / stage probe / kNN)": " / ".join(
                f"{v:.3f}" for v in p["val_baselines"].values()
            ),
            "decision": p["strategy"]
            + (f" (unfreeze {p['unfreeze_blocks']}/{p['num_blocks']})" if p["unfreeze_blocks"] else ""),
            "seconds": round(time.perf_counter() - t, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = list(rows[0]) if rows else []
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    text = "\n".join(md)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
