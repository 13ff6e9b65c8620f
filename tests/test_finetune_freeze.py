"""Freezing: the top k blocks train, the rest is frozen, and frozen BatchNorm layers keep their
running statistics through real training steps (train mode on the model)."""

from __future__ import annotations

import torch

from transferzoo.transfer.config import FinetuneConfig
from transferzoo.transfer.finetune.freeze import block_groups, train_mode, unfreeze_top
from transferzoo.transfer.finetune.optim import create_optimizer
from transferzoo.zoo import assembly as za


def _model():
    torch.manual_seed(0)
    return za.build(za.ModelSpec("efficientnet_lite0", 3), pretrained=False)


def _bn_stats(model):
    return {
        n: (m.running_mean.clone(), m.running_var.clone())
        for n, m in model.backbone.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }


def test_top_k_blocks_train_and_the_rest_is_frozen():
    model = _model()
    info = unfreeze_top(model, 2)
    groups = block_groups(model.backbone)
    assert info.num_blocks == len(groups) == 8 and info.trained_blocks == 2
    top = {n for g in groups[-2:] for n in g}
    for name, p in model.backbone.named_parameters():
        module = name.rsplit(".", 1)[0]
        assert p.requires_grad == (module in top), name
    assert all(p.requires_grad for p in model.head.parameters())
    assert 0 < info.trainable_params < info.total_params
    assert any(n.startswith("blocks.0") for n in info.frozen_norms) and not any(
        n.startswith("blocks.6") for n in info.frozen_norms
    )


def test_none_or_too_many_blocks_trains_everything():
    model = _model()
    info = unfreeze_top(model, None)
    assert info.trainable_params == info.total_params and info.frozen_norms == ()
    info = unfreeze_top(_model(), 99)
    assert info.trained_blocks == 8 and info.trainable_params == info.total_params


def test_frozen_batchnorm_running_stats_do_not_change_while_training():
    model = _model()
    info = unfreeze_top(model, 1)
    before = _bn_stats(model)
    frozen_params = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = create_optimizer(model, FinetuneConfig(lr=1e-2).resolved("partial"))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_mode(model, info)
        x, y = torch.randn(8, 3, 64, 64, generator=g) * 2 + 0.5, torch.randint(0, 3, (8,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _bn_stats(model)
    trained_bn = [n for n in before if n.startswith("blocks.6") or n == "bn2"]
    frozen_bn = [n for n in before if n not in trained_bn]
    assert trained_bn and frozen_bn
    for n in frozen_bn:
        assert torch.equal(before[n][0], after[n][0]) and torch.equal(before[n][1], after[n][1]), n
        assert not model.backbone.get_submodule(n).training
    # the trained blocks' BatchNorm layers do learn their statistics (the check above can fail)
    assert any(not torch.equal(before[n][0], after[n][0]) for n in trained_bn)
    for n, p in model.named_parameters():
        if n in frozen_params:
            assert torch.equal(p, frozen_params[n]), n
    # plain model.train() would have put them in training mode: train_mode is what protects them
    model.train()
    assert model.backbone.get_submodule(frozen_bn[0]).training
