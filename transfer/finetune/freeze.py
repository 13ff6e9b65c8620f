"""Which parts of a backbone train: the top k blocks (timm's coarse `group_matcher` groups, the same
"blocks" `zoo.info(...).blocks` lists and the plan counts), the rest frozen.

Frozen means: `requires_grad=False` (timm.utils.freeze / unfreeze) AND every normalisation layer in
the frozen part kept in eval mode, so its BatchNorm running statistics are never updated, whatever
mode the rest of the model is in. Use `train_mode(model, frozen)` instead of `model.train()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch.nn as nn
from timm.utils.model import freeze, unfreeze


@dataclass(frozen=True)
class FreezeInfo:
    num_blocks: int  # coarse groups in the backbone
    trained_blocks: int  # how many of them train (from the top)
    trained_modules: tuple[str, ...]  # backbone module names that train
    frozen_norms: tuple[str, ...]  # backbone norm layers kept in eval mode
    trainable_params: int
    total_params: int

    def to_dict(self) -> dict:
        return {
            "num_blocks": self.num_blocks,
            "trained_blocks": self.trained_blocks,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
        }


def block_groups(backbone: nn.Module) -> list[list[str]]:
    """Module names per coarse group, in forward order (timm's group_matcher)."""
    if not hasattr(backbone, "group_matcher"):
        raise ValueError(
            f"{type(backbone).__name__} has no timm group_matcher: cannot tell its blocks apart for partial finetuning"
        )
    groups = timm.models.group_modules(backbone, backbone.group_matcher(coarse=True))
    return [list(groups[k]) for k in sorted(groups)]


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)) or "Norm" in type(m).__name__


def unfreeze_top(model: nn.Module, k: int | None) -> FreezeInfo:
    """Freeze `model.backbone` except its last `k` blocks (None or >= all blocks: everything trains).
    The model's head (if any, outside the backbone) always trains."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    groups = block_groups(backbone)
    n = len(groups)
    k = n if k is None else max(1, min(int(k), n))
    trained = [name for g in groups[n - k :] for name in g]
    # include_bn_running_stats=False: keep nn.BatchNorm modules (and state-dict keys) as they are;
    # running stats are protected by eval mode instead (see train_mode)
    freeze(backbone, include_bn_running_stats=False)
    if trained:
        unfreeze(backbone, submodules=trained, include_bn_running_stats=False)
    frozen_norms = tuple(
        name
        for name, m in backbone.named_modules()
        if _is_norm(m)
        and any(True for _ in m.parameters(recurse=False))
        and not any(p.requires_grad for p in m.parameters(recurse=False))
    )
    # norms without affine parameters cannot be told apart by requires_grad: use the group listing
    trained_set = set(trained)
    frozen_norms += tuple(
        name
        for name, m in backbone.named_modules()
        if _is_norm(m)
        and not any(True for _ in m.parameters(recurse=False))
        and not any(name == t or name.startswith(t + ".") for t in trained_set)
    )
    return FreezeInfo(
        num_blocks=n,
        trained_blocks=k,
        trained_modules=tuple(trained),
        frozen_norms=frozen_norms,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def train_mode(model: nn.Module, info: FreezeInfo | None) -> nn.Module:
    """model.train(), then the frozen part's norm layers back to eval (running stats untouched)."""
    model.train()
    if info is not None and info.frozen_norms:
        backbone = model.backbone if hasattr(model, "backbone") else model
        for name in info.frozen_norms:
            backbone.get_submodule(name).eval()
    return model
