"""Optimizer and learning-rate schedule for finetuning, from timm.

Parameter groups: timm's `param_groups_layer_decay` on the backbone (fine-grained `group_matcher`
layers; LR scale `layer_decay ** depth_from_top`, no weight decay on biases and norm parameters)
plus the new head at `head_lr_scale`. Frozen parameters are left out. For `partial` this gives
discriminative learning rates over the unfrozen blocks; for `full`, layer-wise LR decay over the
whole network. timm's schedulers apply each group's `lr_scale`.
"""

from __future__ import annotations

import torch.nn as nn
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from timm.scheduler import create_scheduler_v2

from transferzoo.transfer.config import FinetuneConfig

# our names -> timm's (timm's 'sgd' is Nesterov; plain momentum SGD is 'momentum')
TIMM_OPT = {
    "sgd": "momentum",
    "nesterov": "nesterov",
    "rmsprop": "rmsprop",
    "adagrad": "adagrad",
    "adam": "adam",
    "adamw": "adamw",
}
TIMM_SCHED = {"cosine": "cosine", "linear": "poly", "inverse_sqrt": "rsqrt", "constant": "constant"}


def param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """`cfg` resolved for its strategy (FinetuneConfig.resolved): head_lr_scale is set."""
    if cfg.head_lr_scale is None or cfg.lr is None:
        raise ValueError("param_groups needs a resolved FinetuneConfig (cfg.resolved(strategy))")
    backbone = model.backbone if hasattr(model, "backbone") else model
    groups = []
    if any(p.requires_grad for p in backbone.parameters()):
        groups = param_groups_layer_decay(backbone, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
        for g in groups:
            g["group"] = "backbone"
    head = getattr(model, "head", None)
    if head is not None:
        decay = [p for p in head.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in head.parameters() if p.requires_grad and p.ndim <= 1]
        for params, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr_scale": cfg.head_lr_scale, "group": "head"})
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    return groups


def create_optimizer(model: nn.Module, cfg: FinetuneConfig, lr: float | None = None):
    lr = cfg.lr if lr is None else lr
    kw = {}
    if cfg.optimizer in ("sgd", "nesterov", "rmsprop"):
        kw["momentum"] = cfg.momentum
    groups = param_groups(model, cfg)
    # every group starts at `lr`: timm's schedulers multiply by each group's `lr_scale` from step 0
    return create_optimizer_v2(groups, opt=TIMM_OPT[cfg.optimizer], lr=lr, weight_decay=cfg.weight_decay, **kw)


def create_schedule(optimizer, cfg: FinetuneConfig, steps_per_epoch: int, epochs: int | None = None):
    """A timm scheduler stepped per update (`sched.step_update(n)`), with linear warmup."""
    epochs = cfg.epochs if epochs is None else epochs
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(min(cfg.warmup_epochs, epochs - 1e-9) * steps_per_epoch)) if cfg.warmup_epochs else 0
    warmup = min(warmup, total - 1)
    base = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    kw = {}
    if cfg.schedule == "linear":
        kw["decay_rate"] = 1.0  # poly power 1
    if cfg.schedule == "inverse_sqrt":
        # stable phase lr * sqrt(warmup / t), then a short linear cooldown to min_lr at the end
        kw["decay_epochs"] = max(1, total // 10)
        kw["stable_timescale"] = max(1, warmup)
    sched, _ = create_scheduler_v2(
        optimizer,
        sched=TIMM_SCHED[cfg.schedule],
        num_epochs=total - warmup,
        warmup_epochs=warmup,
        warmup_prefix=True,
        warmup_lr=base * 0.01 if warmup else base,
        min_lr=base * cfg.min_lr_ratio,
        step_on_epochs=False,
        updates_per_epoch=1,
        **kw,
    )
    return sched
