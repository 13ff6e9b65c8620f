"""What timm knows about an entry, read from timm itself and cached: preprocessing, parameter count,
feature stages. Models are built on the meta device, so this costs milliseconds and no memory."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import timm
import torch

from .registry import ModelEntry, get


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    crop_mode: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stage:
    """One feature stage from timm's `feature_info`: where a pyramid level ends."""

    index: int  # position in feature_info (what features_only's out_indices takes)
    module: str
    num_chs: int
    reduction: int


@dataclass(frozen=True)
class ModelInfo:
    entry: ModelEntry
    preprocessing: Preprocessing
    num_params: int
    num_features: int  # width of the pooled pre-logits features
    stages: tuple[Stage, ...]
    blocks: tuple[
        str, ...
    ]  # backbone finetuning groups in forward order (timm's coarse group_matcher, classifier excluded)
    fixed_input_size: bool


def preprocessing(name: str) -> Preprocessing:
    cfg = timm.models.get_pretrained_cfg(get(name).timm_name)
    return Preprocessing(
        input_size=tuple(cfg.input_size),
        mean=tuple(float(v) for v in cfg.mean),
        std=tuple(float(v) for v in cfg.std),
        interpolation=cfg.interpolation,
        crop_pct=float(cfg.crop_pct),
        crop_mode=cfg.crop_mode,
    )


@functools.cache
def info(name: str) -> ModelInfo:
    entry = get(name)
    with torch.device("meta"):
        model = timm.create_model(entry.timm_arch, pretrained=False)
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    # Finetuning groups of the backbone only: the ImageNet classifier's own group is not a block
    # (transfer replaces it with a new head that always trains).
    head = timm.models.get_pretrained_cfg(entry.timm_name).classifier or "classifier"
    heads = (head,) if isinstance(head, str) else tuple(head)
    groups = {k: v for k, v in groups.items() if not all(n.startswith(heads) for n in v)}
    # Stage indices follow feature_info order; 'index' is what features_only(out_indices=...) expects.
    stages = tuple(
        Stage(index=i, module=f["module"], num_chs=int(f["num_chs"]), reduction=int(f["reduction"]))
        for i, f in enumerate(model.feature_info)
    )
    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    return ModelInfo(
        entry=entry,
        preprocessing=preprocessing(name),
        num_params=sum(p.numel() for p in model.parameters()),
        # MobileNetV3 (and others with a conv head after pooling) have pre-logits wider than num_features
        num_features=int(getattr(model, "head_hidden_size", None) or model.num_features),
        stages=stages,
        blocks=tuple(str(k) for k in groups),
        fixed_input_size=bool(cfg.fixed_input_size),
    )
