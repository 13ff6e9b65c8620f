"""Parameter groups (discriminative LRs, layer-wise decay), optimizers and schedule shapes."""

from __future__ import annotations

import math

import pytest
import torch

from transferzoo.transfer.config import FinetuneConfig
from transferzoo.transfer.finetune.freeze import unfreeze_top
from transferzoo.transfer.finetune.optim import create_optimizer, create_schedule, param_groups
from transferzoo.zoo import assembly as za


def _model(k):
    torch.manual_seed(0)
    m = za.build(za.ModelSpec("efficientnet_lite0", 4), pretrained=False)
    unfreeze_top(m, k)
    return m


def _scale_of(groups, param):
    return next(g["lr_scale"] for g in groups if any(p is param for p in g["params"]))


def test_partial_groups_hold_only_trainable_params_with_discriminative_lrs():
    m = _model(2)
    groups = param_groups(m, FinetuneConfig(layer_decay=0.5).resolved("partial"))
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == sum(1 for p in m.parameters() if p.requires_grad)
    b = m.backbone
    head = _scale_of(groups, m.head[-1].weight)
    top = _scale_of(groups, b.conv_head.weight)
    block6 = _scale_of(groups, b.blocks[6][0].conv_pw.weight)
    block5_last = _scale_of(groups, b.blocks[5][3].conv_pw.weight)
    block5_first = _scale_of(groups, b.blocks[5][0].conv_pw.weight)
    # timm's fine groups: blocks.6.0 and conv_head form the top layer, blocks.5.x one layer each
    assert head == 1.0 and top == 1.0 and block6 == 1.0
    assert block5_last == pytest.approx(0.5) and block5_first == pytest.approx(0.5**4)
    # no weight decay on biases and norm parameters
    for g in groups:
        if any(p.ndim <= 1 for p in g["params"]):
            assert g["weight_decay"] == 0.0


def test_full_layer_decay_spans_the_network():
    m = _model(None)
    groups = param_groups(m, FinetuneConfig(layer_decay=0.8).resolved("full"))
    stem = _scale_of(groups, m.backbone.conv_stem.weight)
    n_layers = 1 + 16  # stem, 16 blocks (the last shares its layer with conv_head): timm's fine group_matcher
    assert stem == pytest.approx(0.8 ** (n_layers - 1))
    cfg = FinetuneConfig(layer_decay=0.8, lr=1e-3, warmup_epochs=0).resolved("full")
    opt = create_optimizer(m, cfg)
    create_schedule(opt, cfg, steps_per_epoch=10)  # timm's scheduler applies each group's scale once
    lrs = {g["lr"] for g in opt.param_groups}
    head = next(g["lr"] for g in opt.param_groups if any(p is m.head[-1].weight for p in g["params"]))
    assert head == pytest.approx(1e-2)  # full: the new head learns 10x faster
    assert max(lrs - {head}) == pytest.approx(1e-3) and min(lrs) == pytest.approx(1e-3 * stem)


@pytest.mark.parametrize(
    "name,cls,extra",
    [
        ("sgd", torch.optim.SGD, {"nesterov": False}),
        ("nesterov", torch.optim.SGD, {"nesterov": True}),
        ("rmsprop", torch.optim.RMSprop, {}),
        ("adagrad", torch.optim.Adagrad, {}),
        ("adam", torch.optim.Adam, {}),
        ("adamw", torch.optim.AdamW, {}),
    ],
)
def test_optimizers(name, cls, extra):
    opt = create_optimizer(_model(1), FinetuneConfig(optimizer=name).resolved("partial"))
    assert type(opt) is cls
    for k, v in extra.items():
        assert opt.defaults[k] == v
    if name in ("sgd", "nesterov", "rmsprop"):
        assert opt.defaults["momentum"] == 0.9


def _trace(schedule, steps=100, warmup_epochs=1, epochs=10):
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    cfg = FinetuneConfig(schedule=schedule, warmup_epochs=warmup_epochs, epochs=epochs, min_lr_ratio=0.0).resolved(
        "partial"
    )
    sched = create_schedule(opt, cfg, steps_per_epoch=steps // epochs)
    out = [opt.param_groups[0]["lr"]]
    for t in range(1, steps + 1):
        sched.step_update(num_updates=t)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_is_linear_then_cosine_decays_to_the_floor():
    lr = _trace("cosine")
    assert lr[0] == pytest.approx(0.01)
    assert lr[5] == pytest.approx(0.01 + 0.99 * 5 / 10, rel=1e-6)  # linear warmup over 10 steps
    assert lr[10] == pytest.approx(1.0)
    decay = lr[10:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    mid = 10 + 45
    assert lr[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)), abs=0.02)
    assert lr[-1] == pytest.approx(0.0, abs=1e-3)


def test_linear_schedule_is_a_straight_line():
    lr = _trace("linear")
    diffs = [a - b for a, b in zip(lr[10:], lr[11:])]
    assert max(diffs) == pytest.approx(min(diffs), rel=1e-3) and lr[-1] == pytest.approx(0.0, abs=1e-6)


def test_inverse_sqrt_schedule():
    lr = _trace("inverse_sqrt")
    assert lr[10] == pytest.approx(1.0)
    assert lr[40] == pytest.approx(lr[10] * math.sqrt(10 / 40), rel=0.02)  # 1/sqrt(t) after warmup
    assert lr[-1] < lr[80]  # the final cooldown
