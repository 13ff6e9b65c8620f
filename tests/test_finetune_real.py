"""Real finetuning runs on real images: partial (cached prefix) and full (streamed) on hymenoptera,
the run directory they write, and that the saved model reproduces the recorded validation result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferzoo.transfer.config import FinetuneConfig
from transferzoo.transfer.data import ImageDataset, scan_folder
from transferzoo.transfer.finetune.finetuner import Finetuner, transforms_for
from transferzoo.transfer.rundir import load_model


def finetune(splits, strategy, cfg, run_dir):
    ft = Finetuner(splits, "efficientnet_lite0", strategy, cfg, run_dir=run_dir, progress=False)
    try:
        res = ft.train()
        ft.write_run(res)
        return res
    finally:
        ft.close()


@pytest.mark.slow
@pytest.mark.shared_data
def test_partial_finetune_on_real_images_beats_chance_and_writes_the_run(hymenoptera, tmp_path):
    splits = scan_folder(hymenoptera)
    cfg = FinetuneConfig(unfreeze=1, epochs=2, views=1, image_size=128, batch_size=32)
    run = tmp_path / "run"
    res = finetune(splits, "partial", cfg, run)
    s = res.summary
    assert s["val_accuracy"] > 0.8, s  # two classes: chance is 0.5
    assert s["prefix_cache"]["cut"] == "blocks.6.0" and s["trained_blocks"] == 1
    for f in (
        "run.json",
        "model.safetensors",
        "config.yaml",
        "metrics.json",
        "metrics.jsonl",
        "curves.png",
        "confusion.png",
        "report.md",
        "checkpoint/last.pt",
        "splits/train.tsv",
    ):
        assert (run / f).exists(), f
    assert not (run / "cache").exists()  # the prefix cache is removed after a successful run
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    report = (run / "report.md").read_text()
    assert "## Training" in report and "curves.png" in report and "confusion.png" in report
    if s["val_accuracy"] < 1.0:
        assert (run / "misclassified.png").exists() and "Most confident mistakes" in report
    # the saved model, rebuilt from files alone and run on the real val images (not the cache),
    # reproduces the recorded predictions: the prefix cut and cache are exact (up to float16)
    model, meta = load_model(run)
    _, eval_tf = transforms_for(res.preprocessing, cfg)
    loader = torch.utils.data.DataLoader(ImageDataset(splits.val, eval_tf), batch_size=64)
    with torch.inference_mode():
        pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in loader])
    assert (pred != res.val_pred).sum() <= 1
    assert abs(float((pred == res.val_true).mean()) - s["val_accuracy"]) <= 1 / len(splits.val) + 1e-9
    assert meta["preprocessing"]["input_size"] == [3, 128, 128]


@pytest.mark.slow
@pytest.mark.shared_data
def test_full_finetune_streams_images_and_learns(hymenoptera, tmp_path):
    splits = scan_folder(hymenoptera)
    rng = np.random.default_rng(0)
    splits.train = [splits.train[i] for i in sorted(rng.choice(len(splits.train), 64, replace=False))]
    cfg = FinetuneConfig(epochs=3, warmup_epochs=0.5, image_size=96, batch_size=16, workers=1, checkpoint=False)
    res = finetune(splits, "full", cfg, tmp_path / "run")
    s = res.summary
    assert s["trainable_params"] == s["total_params"] and "prefix_cache" not in s
    # trained channels-last, handed back in the default layout (what export and safetensors take)
    assert all(p.is_contiguous() for p in res.model.parameters())
    assert s["val_accuracy"] > 0.75, s
    hist = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
