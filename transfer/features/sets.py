"""Named feature sets built from the cached outputs, and the TransferModel head each one becomes.

- ``top``: the backbone's pooled pre-logits features (``ModelSpec(stages=None)``).
- ``imagenet``: log-probabilities of the *pretrained* ImageNet head applied to ``top``: the
  network's own view of "which ImageNet classes is this", a strong feature when the data resembles
  ImageNet. As a model: ``stages=None`` + head ``Linear(pretrained classifier) -> LogSoftmax ->
  Linear(new)`` (``HeadSpec(kind="mlp", hidden=1000, activation="log_softmax")``).
- ``stageI`` and ``stageI+stageJ+...``: global-average-pooled outputs of those feature stages,
  concatenated in ascending order (``ModelSpec(stages=(I, J, ...))``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from transferzoo.transfer.probe.linear import Probe
from transferzoo.zoo import assembly as za

from .engine import FeatureSet


def stage_sets(num_stages: int) -> list[str]:
    """Every single stage, and every run of consecutive stages that ends at the last one."""
    last = num_stages - 1
    singles = [f"stage{i}" for i in range(num_stages)]
    suffixes = ["+".join(f"stage{j}" for j in range(i, num_stages)) for i in range(last - 1, -1, -1)]
    return singles + suffixes


def stages_of(name: str) -> tuple[int, ...] | None:
    if name in ("top", "imagenet"):
        return None
    return tuple(sorted(int(p[len("stage") :]) for p in name.split("+")))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def build(fs: FeatureSet, name: str, rows=None, view: str = "orig") -> np.ndarray:
    """The [n, dim] matrix of feature set `name` for `rows` (all rows when None)."""
    sel = slice(None) if rows is None else rows

    def get(out):
        return fs.get(out, view)[sel]

    if name == "top":
        return get("top")
    if name == "imagenet":
        if fs.classifier is None:
            raise ValueError("the 'imagenet' feature set needs the model's pretrained classifier")
        w, b = fs.classifier
        return _log_softmax(get("top") @ w.T + b).astype(np.float32)
    parts = [get(f"stage{i}") for i in stages_of(name)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1)) if len(parts) > 1 else parts[0]


def transfer_head(model_name: str, name: str, probe: Probe, classifier) -> tuple[za.ModelSpec, nn.Module]:
    """The TransferModel spec and head (`za.make_head`, in eval mode) computing exactly `probe` on
    feature set `name`: the model is the pretrained backbone (`za.pretrained_backbone(spec)`) + it."""
    layers = probe.head_layers()  # [Linear] or [Linear, act, Linear], on raw features
    if name == "imagenet":
        if len(layers) != 1:
            raise ValueError("the 'imagenet' feature set takes a linear probe only")
        w, b = classifier
        spec = za.ModelSpec(
            model_name,
            probe.num_classes,
            stages=None,
            head=za.HeadSpec(kind="mlp", hidden=int(w.shape[0]), activation="log_softmax"),
        )
        head = za.make_head(za.feature_dim(spec), spec.num_classes, spec.head)
        with torch.no_grad():
            head[0].weight.copy_(torch.from_numpy(w))
            head[0].bias.copy_(torch.from_numpy(b))
            _copy(head[3], layers[0])
        return spec, head.eval()
    if probe.spec.head == "linear":
        hspec = za.HeadSpec(kind="linear")
    else:
        hspec = za.HeadSpec(kind="mlp", hidden=probe.spec.hidden, activation=probe.spec.activation)
    spec = za.ModelSpec(model_name, probe.num_classes, stages=stages_of(name), head=hspec)
    head = za.make_head(za.feature_dim(spec), spec.num_classes, spec.head)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    src = [m for m in layers if isinstance(m, nn.Linear)]
    assert len(linears) == len(src), (head, layers)
    with torch.no_grad():
        for dst, s in zip(linears, src):
            _copy(dst, s)
    return spec, head.eval()


def _copy(dst: nn.Linear, src: nn.Linear) -> None:
    assert dst.weight.shape == src.weight.shape, (dst.weight.shape, src.weight.shape)
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
