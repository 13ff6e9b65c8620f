"""The plan's pilot finetune (transfer/finetune/pilot.py) on one dataset, with torch on 1 thread and
on every core, alternated in one process so both sides see the same machine load:

    .venv/bin/python bench/bench_pilot.py [--data DIR | --digits] [--rounds 2] [--epochs 3] [--image-size 128]

The pilot runs the planned `partial` recipe (here: the plan's settings for this folder, at
--image-size: 128 px, the size floor, by default; the plan itself uses the model's 224 px unless a
--budget needs less) on <= 600 training images. At 64 px (the old size floor) its convolutions were
tiny (4x4 to 2x2 maps at the top blocks) and at load 5-6 two threads took 1.87x the time of one (one
descheduled thread stalls every op); at 128 px on an idle machine two take 0.64x, and the pilot runs
on every core as the full run does. Prints seconds per side and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transferzoo.transfer import planner
from transferzoo.transfer.config import FitConfig
from transferzoo.transfer.context import load_splits
from transferzoo.transfer.finetune.pilot import run_pilot
from transferzoo.transfer.sample_data import write_digits
from transferzoo.transfer.threads import torch_threads
from transferzoo.zoo.config import override


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="image folder (default: scikit-learn digits)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=planner.MIN_IMAGE_SIZE)
    args = ap.parse_args()
    data = Path(args.data) if args.data else write_digits(Path(tempfile.mkdtemp(prefix="bench_pilot_")) / "digits")
    cfg = override(FitConfig(model=args.model), {"finetune.epochs": args.epochs, "progress": False})
    splits = load_splits(data, cfg, lambda m: None)
    size = args.image_size
    unfreeze, _ = planner.unfreeze_blocks(cfg.model, True)
    settings = planner.planned_settings("partial", cfg, frozenset(), len(splits.train), unfreeze, size)
    ft_cfg = override(cfg, settings).finetune
    cores = os.cpu_count() or 1
    times: dict[int, list[float]] = {1: [], cores: []}
    for r in range(args.rounds):
        for threads in (1, cores) if r % 2 == 0 else (cores, 1):
            with torch_threads(threads):
                t = time.perf_counter()
                out = run_pilot(
                    splits,
                    cfg.model,
                    ft_cfg,
                    lambda hold, pil: np.zeros(len(hold), bool),
                    n_holdout=planner.holdout_size(len(splits.train), cfg.auto.pilot_holdout, 0.9)[0],
                    n_pilot=cfg.auto.pilot_images,
                    seed=cfg.data.seed,
                )
                times[threads].append(time.perf_counter() - t)
            prefix, step = out["prefix_seconds_per_image"], out["train_seconds_per_image_epoch"]
            print(
                f"round {r} threads {threads}: {times[threads][-1]:.1f} s (prefix "
                f"{prefix * 1e3:.2f} ms/img, step {step * 1e3:.2f} ms/img/epoch, "
                f"{out['pilot_images']} + {out['holdout_images']} images), "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    one, many = (float(np.median(times[k])) for k in (1, cores))
    print(f"median: 1 thread {one:.1f} s, {cores} threads {many:.1f} s -> {cores} threads / 1 = {many / one:.2f}")


if __name__ == "__main__":
    main()
