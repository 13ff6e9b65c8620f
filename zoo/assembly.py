"""A zoo backbone with a new head: the model every training strategy produces and export rebuilds,
built from its description (`zoo.spec.ModelSpec`). The state dict keys are `backbone.*` and `head.*`.
"""

from __future__ import annotations

import functools
import hashlib

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
        return nn.Sequential(*layers, nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, spec.hidden),
        activation(spec.activation),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, num_classes),
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

    A frozen backbone is the same tensors in every run on the same weights, so they are kept in the
    cache (`cache_root()/backbones`, safetensors, keyed by the timm model, its version, the stages
    and the weights' sha256; the file's own sha256 checked before reuse): a run that trains only a
    head on cached features then writes its model without building one (which needs timm).
    """
    from safetensors.torch import load, save

    from . import sources
    from .fileio import atomic_write, cache_root, read_record, write_record
    from .model_info import timm_version
    from .registry import get

    entry = get(spec.model)
    sha = sources.weights_sha256(entry, weights)
    which = "top" if spec.stages is None else "stages" + "-".join(map(str, spec.stages))
    stem = cache_root() / "backbones" / f"{entry.name}-{which}-{sha[:16]}"
    key = {"timm_name": entry.timm_name, "timm": timm_version()[0], "stages": spec.stages, "weights_sha256": sha}
    rec = read_record(stem.with_suffix(".json"), key)
    blob = stem.with_suffix(".safetensors")
    if rec is not None and blob.is_file():
        data = blob.read_bytes()
        if hashlib.sha256(data).hexdigest() == rec["file_sha256"]:
            return load(data), rec["provenance"], None
    model = build(spec, pretrained=True, weights=weights)
    state = {f"backbone.{k}": v.detach().contiguous().clone() for k, v in model.backbone.state_dict().items()}
    prov = weights_provenance(model)
    data = save(state, metadata={"format": "pt"})
    digest = hashlib.sha256(data).hexdigest()
    try:
        atomic_write(blob, data)
    except OSError:  # a read-only cache: built again next time
        return state, prov, model
    write_record(stem.with_suffix(".json"), key, {"file_sha256": digest, "provenance": prov})
    return state, prov, model
