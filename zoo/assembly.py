"""A zoo backbone with a new head: the model every training strategy produces and export rebuilds,
built from its description (`zoo.spec.ModelSpec`). The state dict keys are `backbone.*` and `head.*`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from .errors import ZooError
from .spec import LOG_SOFTMAX, HeadSpec, ModelSpec

__all__ = ["HeadSpec", "ModelSpec", "TransferModel", "build", "feature_dim", "make_head", "activation"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    LOG_SOFTMAX: functools.partial(nn.LogSoftmax, dim=1),
}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def make_head(in_features: int, num_classes: int, spec: HeadSpec) -> nn.Module:
    if spec.kind == "linear":
        layers: list[nn.Module] = [nn.Dropout(spec.dropout)] if spec.dropout else []
        head = nn.Sequential(*layers, nn.Linear(in_features, num_classes))
    else:
        head = nn.Sequential(
            nn.Linear(in_features, spec.hidden),
            activation(spec.activation),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, num_classes),
        )
    assert tuple(i for i, m in enumerate(head) if isinstance(m, nn.Linear)) == spec.linear_positions(), head
    return head


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
        backbone = create(
            spec.model, pretrained=pretrained, weights=weights, num_classes=0, drop_rate=spec.drop_rate, **kw
        )
    else:
        backbone = create(
            spec.model, pretrained=pretrained, weights=weights, features_only=True, out_indices=spec.stages, **kw
        )
    return TransferModel(backbone, make_head(feature_dim(spec), spec.num_classes, spec.head), spec.stages)


def weights_provenance(model: nn.Module) -> dict:
    """{"name", "source", "location", "sha256"} of the pretrained weights a (Transfer)Model's
    backbone started from (what `zoo.create` recorded in its pretrained_cfg)."""
    backbone = getattr(model, "backbone", model)
    tz = dict((getattr(backbone, "pretrained_cfg", None) or {}).get("transferzoo") or {})
    return {k: tz.get(k) for k in ("name", "source", "location", "sha256")}


def pretrained_backbone(spec: ModelSpec, weights=None) -> tuple[dict[str, torch.Tensor], dict, TransferModel | None]:
    """The `backbone.*` tensors of `build(spec)` with pretrained weights, the weights' provenance
    ({"name", "source", "location", "sha256"}), and the model itself when it had to be built.
    Kept in the cache (`zoo.backbones`, checksummed): reused, nothing is built."""
    from safetensors.torch import save

    from . import backbones

    hit = backbones.cached(spec, weights)
    if hit is not None:
        return {k: torch.from_numpy(v) for k, v in hit[0].items()}, hit[1], None
    model = build(spec, pretrained=True, weights=weights)
    state = {f"backbone.{k}": v.detach().contiguous().clone() for k, v in model.backbone.state_dict().items()}
    prov = weights_provenance(model)
    backbones.store(spec, weights, save(state, metadata={"format": "pt"}), prov)
    return state, prov, model
