"""The pilot: a short, bounded `partial` finetune on a subsample of the training images, scored next
to the probe on the same held-out training images, so the plan can see whether finetuning pays on
*this* data (and what a full run costs) instead of guessing from size and similarity.

    holdout H (the plan's holdout_size: a quarter to a third, <= auto.pilot_holdout; stratified)
        | pilot set P (<= auto.pilot_images others)
    probe:    the plan's best feature set and penalty, fit on P's cached features -> accuracy on H
    finetune: the planned `partial` recipe (same epochs, 1 cached view) on P, with the batch
              shrunk so it takes about the full run's optimizer steps (`pilot_batch`) -> accuracy on H

Both sides see the same images, so the comparison is paired: its standard error comes from the
images where they disagree (McNemar), not from two independent accuracies. The finetune's timings
(prefix pass per image, training step per image) give the full run's predicted time. The validation
split is never touched.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..config import FinetuneConfig
from ..data import DataSplits
from . import prefix_cache as pc
from .finetuner import Finetuner


def pilot_rows(y: np.ndarray, n_holdout: int, n_pilot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(holdout, pilot) index arrays into `y`, disjoint, each stratified by class: the holdout takes
    about n_holdout images (the plan sizes it: planner.holdout_size), the pilot set up to n_pilot of the rest."""
    rng = np.random.default_rng([seed, 11])
    hold_share = min(0.5, n_holdout / len(y))
    pilot_share = min(1.0, n_pilot / max(1, len(y) * (1 - hold_share)))
    hold, pilot = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        h = max(1, int(round(len(idx) * hold_share)))
        rest = idx[h:]
        hold.append(idx[:h])
        pilot.append(rest[: max(2, int(round(len(rest) * pilot_share)))])
    return np.sort(np.concatenate(hold)), np.sort(np.concatenate(pilot))


MIN_PILOT_BATCH = 8


def pilot_batch(batch_size: int, n_pilot: int, n_full: int) -> int:
    """The pilot's batch: the full run's, scaled by n_pilot / n_full (at least MIN_PILOT_BATCH), so
    that its epochs on n_pilot images take about as many optimizer steps as the full run's on n_full, at the
    same number of images processed. With the full run's batch, a pilot on 600 of 1650 images takes
    60 steps to the full run's 155 (6 epochs of 64): half-trained, it measures how fast finetuning
    starts rather than where it ends, and under-predicts it (digits' pilot at 3 epochs: 21 steps,
    0.33 against the probe's 0.87). BiT's HyperRule sizes small-data finetuning in steps for the same
    reason."""
    return int(min(batch_size, max(MIN_PILOT_BATCH, round(batch_size * n_pilot / max(1, n_full)))))


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Accuracy difference of two classifiers' correctness vectors on the same images, with its
    standard error from the discordant pairs."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n = len(a)
    d = a.astype(float) - b.astype(float)
    se = math.sqrt(max(float(d.var(ddof=1)) if n > 1 else 0.0, 1e-12) / n)
    return {"difference": round(float(d.mean()), 4), "standard_error": round(se, 4), "images": n}


def run_pilot(
    splits: DataSplits,
    model: str,
    ft_cfg: FinetuneConfig,
    probe_correct_fn,
    *,
    n_holdout: int,
    n_pilot: int,
    seed: int,
    weights=None,
    log=None,
) -> dict:
    """The pilot as described above. `ft_cfg` is the planned `partial` config (the pilot runs it on
    the subsample, with one cached view); `probe_correct_fn(holdout_rows, pilot_rows) -> bool
    array` scores the probe side."""
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    y = np.array([s.label for s in splits.train])
    hold, pil = pilot_rows(y, n_holdout, n_pilot, seed)
    probe_ok = np.asarray(probe_correct_fn(hold, pil), bool)
    sub = replace(splits, train=[splits.train[i] for i in pil], val=[splits.train[i] for i in hold], test=[])
    epochs = ft_cfg.epochs
    cfg = replace(
        ft_cfg,
        batch_size=pilot_batch(ft_cfg.batch_size, len(pil), len(y)),
        views=1,
        checkpoint=False,
        patience=0,
        search=0,
        overfit_check=0,
    )
    log(
        f"plan: pilot finetune ({cfg.unfreeze} block(s), {cfg.image_size or 'model'} px, {epochs} epochs, "
        f"batch {cfg.batch_size}) "
        f"on {len(pil)} training images, scored with the probe on {len(hold)} held-out training images"
    )
    ft = Finetuner(sub, model, "partial", cfg, weights=weights, log=lambda m: None, progress=False)
    try:
        res = ft.train()
    finally:
        ft.close()
        pc.remove(ft.cache_dir)
    ft_ok = res.val_pred == res.val_true
    s = res.summary
    prefix_s = (s.get("prefix_cache") or {}).get("seconds")
    train_s = sum(h["seconds"] for h in res.history)
    out = {
        "holdout_images": int(len(hold)),
        "pilot_images": int(len(pil)),
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "image_size": s["image_size"],
        "unfreeze": s["trained_blocks"],
        "probe_accuracy": round(float(probe_ok.mean()), 4),
        "finetune_accuracy": round(float(ft_ok.mean()), 4),
        "finetune_minus_probe": paired(ft_ok, probe_ok),
        "prefix_seconds_per_image": None if prefix_s is None else prefix_s / (len(pil) + len(hold)),
        "train_seconds_per_image_epoch": train_s / (epochs * len(pil)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    d = out["finetune_minus_probe"]
    log(
        f"plan: pilot: finetune {out['finetune_accuracy']:.3f} vs probe {out['probe_accuracy']:.3f} on the same "
        f"{len(hold)} images ({d['difference']:+.3f} +- {d['standard_error']:.3f}) in {out['seconds']:.0f} s"
    )
    return out
