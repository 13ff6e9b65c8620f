"""The training loop on real data (scikit-learn's digits, 8x8 scans as 64-d vectors) with a linear
head: initial-loss check, divergence stop, early stopping, metrics, settings validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from transferzoo.transfer.config import FinetuneConfig, FitConfig
from transferzoo.transfer.finetune.loop import LoopData, TrainingDiverged, run
from transferzoo.transfer.finetune.optim import create_optimizer, create_schedule
from transferzoo.zoo.config import from_dict


class Probe(nn.Module):
    def __init__(self, scale=0.0):
        super().__init__()
        self.backbone = nn.Identity()
        self.head = nn.Linear(64, 10)
        nn.init.normal_(self.head.weight, std=scale) if scale else nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(x)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _data(digits, bs=100):
    (xt, yt), (xv, yv) = digits

    def train(epoch):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), bs):
            j = order[i : i + bs]
            yield xt[j], yt[j]

    return LoopData(train=train, val=lambda: iter([(xv, yv)]), steps_per_epoch=math.ceil(len(xt) / bs))


def _run(model, cfg, digits, logs=None):
    cfg = cfg.resolved("partial")
    data = _data(digits, cfg.batch_size)
    opt = create_optimizer(model, cfg)
    sched = create_schedule(opt, cfg, data.steps_per_epoch)
    return run(
        module=model,
        set_train=model.train,
        state_module=model,
        optimizer=opt,
        scheduler=sched,
        data=data,
        cfg=cfg,
        num_classes=10,
        device=torch.device("cpu"),
        log=(logs.append if logs is not None else lambda s: None),
    )


def test_training_learns_and_logs_every_epoch(digits):
    cfg = FinetuneConfig(optimizer="sgd", lr=0.5, epochs=4, warmup_epochs=0, batch_size=100)
    res = _run(Probe(), cfg, digits)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.history[-1]["val_accuracy"] > 0.75  # chance is 0.1
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert set(res.history[0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}


def test_initial_loss_is_ln_c_for_a_fresh_head(digits):
    res = _run(Probe(), FinetuneConfig(lr=1e-3, epochs=1, warmup_epochs=0, label_smoothing=0.0), digits)
    assert res.checks["initial_loss"] == pytest.approx(math.log(10), abs=1e-3) and res.checks["initial_loss_ok"]


def test_a_badly_initialised_head_is_flagged(digits):
    logs = []
    res = _run(Probe(scale=3.0), FinetuneConfig(lr=1e-3, epochs=1, warmup_epochs=0), digits, logs)
    assert not res.checks["initial_loss_ok"] and res.initial_loss > 2 * math.log(10)
    assert any("far from ln(10)" in m for m in logs)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 9.0), ("adam", 5.0)])
def test_divergence_stops_the_run_with_a_clear_message(digits, optimizer, lr):
    cfg = FinetuneConfig(
        optimizer=optimizer, lr=lr, momentum=0.99, epochs=5, warmup_epochs=0, label_smoothing=0.0, weight_decay=0.0
    )
    with pytest.raises(
        TrainingDiverged, match=r"diverged at epoch \d+, step \d+: .*(initial loss|loss is).*Lower the learning rate"
    ):
        _run(Probe(), cfg, digits)


def test_early_stopping_keeps_the_best_epoch(digits):
    # a learning rate so small that validation cannot improve after the first epoch
    cfg = FinetuneConfig(optimizer="sgd", lr=1e-9, epochs=10, warmup_epochs=0, patience=2)
    model = Probe()
    res = _run(model, cfg, digits)
    assert res.stopped == "early_stopping" and len(res.history) < 10
    assert res.best_epoch == max(res.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))["epoch"]


def test_settings_are_validated_with_actionable_messages():
    with pytest.raises(ValueError, match="optimizer: expected one of .*'adamw'.*got 'lion'"):
        FinetuneConfig(optimizer="lion")
    with pytest.raises(ValueError, match="warmup_epochs: must be below epochs"):
        FinetuneConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match="did you mean 'weight_decay'"):
        from_dict(FinetuneConfig, {"weight_decy": 0.1})
    with pytest.raises(ValueError, match="epochs: expected int, got 'many'"):
        from_dict(FinetuneConfig, {"epochs": "many"})
    with pytest.raises(ValueError, match=r"finetune.lr: expected \(0, 10\), got -1"):
        from_dict(FitConfig, {"finetune": {"lr": -1}})
    cfg = from_dict(FinetuneConfig, {"optimizer": "sgd", "epochs": 3, "views": 2}).resolved("partial")
    assert cfg.epochs == 3 and cfg.views == 2 and cfg.lr == 0.01 and cfg.head_lr_scale == 1
    full = FinetuneConfig().resolved("full", seed=5)
    assert full.lr == pytest.approx(1e-3 / 3) and full.head_lr_scale == 10 and full.seed == 5


class TinyConv(nn.Module):
    """A conv net over digits as 3-channel 8x8 images that records the layout of what it is fed."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 10)
        self.seen: list[tuple[bool, bool]] = []  # (training, channels-last)

    def forward(self, x):
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        self.seen.append((self.training, nhwc))
        return self.head(torch.relu(self.backbone(x)).flatten(1))


def test_image_batches_reach_the_model_channels_last_in_training_and_validation(digits):
    # oneDNN's NHWC kernels: a CPU training step 0.59x as long for efficientnet_lite0
    (xt, yt), (xv, yv) = digits
    as_images = lambda x: x.view(-1, 1, 8, 8).repeat(1, 3, 1, 1)  # noqa: E731 (NCHW, as a loader yields)
    model = TinyConv()
    cfg = FinetuneConfig(optimizer="adamw", lr=0.01, epochs=3, warmup_epochs=0, batch_size=100)
    res = _run(model, cfg, ((as_images(xt), yt), (as_images(xv), yv)))
    assert {t for t, _ in model.seen} == {True, False}  # both phases ran
    assert all(nhwc for _, nhwc in model.seen), model.seen[:5]
    assert res.history[-1]["val_accuracy"] > 0.5  # and it still learns (chance 0.1)


def test_the_plan_measures_costs_in_the_layout_fit_trains_in():
    # the planner names the layout without importing torch (a plan on cached features imports none)
    from transferzoo.transfer import planner
    from transferzoo.transfer.finetune.loop import MEMORY_FORMAT

    assert f"torch.{planner._LAYOUT['memory_format']}" == str(MEMORY_FORMAT)
