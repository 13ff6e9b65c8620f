"""A zoo backbone with a new head: the model every training strategy produces and export rebuilds.

It is described by a small serialisable `HeadSpec` + `ModelSpec` (stored in a run directory as JSON),
so export can rebuild it from files alone. The state dict keys are `backbone.*` and `head.*`.

- stages=None: the backbone's own pooled pre-logits features (timm `num_classes=0`), e.g. 1280-d
  for EfficientNet-Lite0 (after its conv_head).
- stages=[i, j, ...]: global-average-pooled outputs of those feature stages (timm `features_only`,
  indices into `feature_info`), concatenated: the "linear classifiers from different stages" probe.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from .errors import ZooError

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
    # the pretrained ImageNet head's log-probabilities as features: Linear(pretrained classifier) ->
    # LogSoftmax -> Linear (the "imagenet" feature set of transfer's probes)
    "log_softmax": functools.partial(nn.LogSoftmax, dim=1),
}


@dataclass(frozen=True)
class HeadSpec:
    kind: str = "linear"  # 'linear' | 'mlp'
    hidden: int = 0  # mlp hidden width
    activation: str = "relu"
    dropout: float = 0.0

    def __post_init__(self):
        if self.kind not in ("linear", "mlp"):
            raise ZooError(f"head kind must be 'linear' or 'mlp', got {self.kind!r}")
        if self.kind == "mlp" and self.hidden <= 0:
            raise ZooError("an 'mlp' head needs hidden > 0")
        if self.activation not in ACTIVATIONS:
            raise ZooError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ZooError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ModelSpec:
    model: str  # zoo name
    num_classes: int
    stages: tuple[int, ...] | None = None
    head: HeadSpec = field(default_factory=HeadSpec)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages) if self.stages is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["head"] = HeadSpec(**d.get("head", {}))
        if d.get("stages") is not None:
            d["stages"] = tuple(int(s) for s in d["stages"])
        return cls(**d)


def make_head(in_features: int, num_classes: int, spec: HeadSpec) -> nn.Module:
    if spec.kind == "linear":
        layers: list[nn.Module] = [nn.Dropout(spec.dropout)] if spec.dropout else []
        return nn.Sequential(*layers, nn.Linear(in_features, num_classes))
    act = ACTIVATIONS[spec.activation]
    return nn.Sequential(
        nn.Linear(in_features, spec.hidden), act(), nn.Dropout(spec.dropout), nn.Linear(spec.hidden, num_classes)
    )


class TransferModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, stages: tuple[int, ...] | None):
        super().__init__()
        self.backbone, self.head, self.stages = backbone, head, stages

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.stages is None:
            return self.backbone(x)  # timm num_classes=0: pooled pre-logits features
        return torch.cat([f.mean(dim=(2, 3)) for f in self.backbone(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def feature_dim(spec: ModelSpec) -> int:
    from .model_info import info

    i = info(spec.model)
    if spec.stages is None:
        return i.num_features
    return sum(i.stages[s].num_chs for s in spec.stages)


def build(spec: ModelSpec, pretrained: bool = True, weights=None) -> TransferModel:
    """The backbone with its pretrained weights (or random, to load a trained state dict into)."""
    from .factory import create
    from .model_info import info

    n_stages = len(info(spec.model).stages)
    if spec.stages is not None and any(not 0 <= s < n_stages for s in spec.stages):
        raise ZooError(f"stages {list(spec.stages)} out of range: {spec.model} has stages 0..{n_stages - 1}")
    kw = {}
    if spec.drop_path_rate:
        kw["drop_path_rate"] = spec.drop_path_rate
    if spec.stages is None:
        backbone = create(spec.model, pretrained=pretrained, weights=weights, num_classes=0, drop_rate=spec.drop_rate, **kw)
    else:
        backbone = create(spec.model, pretrained=pretrained, weights=weights, features_only=True, out_indices=spec.stages, **kw)
    return TransferModel(backbone, make_head(feature_dim(spec), spec.num_classes, spec.head), spec.stages)
