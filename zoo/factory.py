"""Build models and transforms for registry entries, with weights from `zoo.sources`."""
from __future__ import annotations

import logging
import os

import timm
import torch.nn as nn

from . import sources
from .registry import get


def create(
    name: str,
    pretrained: bool = True,
    num_classes: int | None = None,
    features_only: bool = False,
    weights: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """A timm model for a registry entry.

    pretrained: load ImageNet weights from the first available source (see `zoo.sources`); a new
    `num_classes` keeps the backbone and gives a freshly initialised head, as timm does.
    features_only / out_indices / drop_rate / drop_path_rate...: passed to `timm.create_model`.
    The weights' provenance is kept in `model.pretrained_cfg['transferzoo']`.
    """
    entry = get(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if features_only:
        kwargs["features_only"] = True
    if not pretrained:
        model = timm.create_model(entry.timm_arch, pretrained=False, **kwargs)
        model.pretrained_cfg = dict(model.pretrained_cfg, transferzoo={"name": entry.name, "source": "random"})
        return model
    resolved = sources.resolve(entry, weights)
    # timm's own loader does the rest (dropping a mismatched classifier, features_only filtering).
    # Its notes about the head keys it drops on purpose are expected here, so they are not shown.
    builder_log = logging.getLogger("timm.models._builder")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)
    try:
        model = timm.create_model(
            entry.timm_name, pretrained=True, pretrained_cfg_overlay={"state_dict": resolved.state_dict}, **kwargs
        )
    finally:
        builder_log.setLevel(level)
    cfg = dict(model.pretrained_cfg)
    cfg.pop("state_dict", None)  # do not keep a second reference to every tensor
    cfg["transferzoo"] = {"name": entry.name, **resolved.provenance()}
    model.pretrained_cfg = cfg
    if hasattr(model, "default_cfg"):
        model.default_cfg = cfg
    return model


def transforms(name: str, training: bool = False, **overrides):
    """timm's eval (or train-time augmentation) transform built from the entry's pretrained config."""
    cfg = timm.models.get_pretrained_cfg(get(name).timm_name).to_dict()
    data_cfg = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
    data_cfg.update(overrides)
    return timm.data.create_transform(**data_cfg, is_training=training)
