"""Build models and transforms for registry entries, with weights from `zoo.sources`."""

from __future__ import annotations

import logging
import math
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


def transform(pre, training: bool = False, **train_kwargs):
    """timm's transform for a `zoo.Preprocessing` (eval: resize, centre crop, ToTensor, Normalize;
    training: timm's augmentation, `train_kwargs` passed on). The one place transforms are built.
    The eval transform starts with `zoo.images.ResizeGuard`: an image whose resize would be huge (a
    1 x 40000 strip) is an ImageError before the resize allocates it. Training crops first (a
    RandomResizedCrop of at most the image), so its resize is bounded by the output size."""
    from torchvision import transforms as T

    from .images import ResizeGuard

    tf = timm.data.create_transform(
        input_size=pre.input_size,
        interpolation=pre.interpolation,
        mean=pre.mean,
        std=pre.std,
        crop_pct=pre.crop_pct,
        crop_mode=pre.crop_mode,
        is_training=training,
        **train_kwargs,
    )
    if training:
        return tf
    scale = math.floor(max(pre.input_size[1:]) / (pre.crop_pct or 1.0))
    return T.Compose([ResizeGuard(scale), *tf.transforms])


def transforms(name: str, training: bool = False, **train_kwargs):
    """timm's eval (or train-time augmentation) transform for a registry entry's preprocessing."""
    from .model_info import preprocessing

    return transform(preprocessing(name), training, **train_kwargs)


def resize_crop(pre):
    """The eval transform's PIL steps alone (resize, centre crop): PIL image in, H x W PIL image out.
    Callers normalise with `zoo.images.normalise` (numpy): torch's intra-op threads make ToTensor +
    Normalize ~6x slower on small tensors when called from several decode threads at once."""
    from torchvision import transforms as T

    tf = transform(pre)
    steps = list(tf.transforms)
    if [type(t).__name__ for t in steps[-2:]] not in (["MaybeToTensor", "Normalize"], ["ToTensor", "Normalize"]):
        raise AssertionError(f"timm's eval transform no longer ends with ToTensor + Normalize: {tf}")
    return T.Compose(steps[:-2])
