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

from transferzoo.transfer.probe.linear import Layers, Probe, forward
from transferzoo.transfer.probe.losses import log_softmax
from transferzoo.zoo.spec import LOG_SOFTMAX, HeadSpec, ModelSpec

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
        return log_softmax(get("top") @ w.T + b).astype(np.float32)
    parts = [get(f"stage{i}") for i in stages_of(name)]
    return np.ascontiguousarray(np.concatenate(parts, axis=1)) if len(parts) > 1 else parts[0]


def transfer_head(model_name: str, name: str, probe: Probe, classifier) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """The TransferModel spec and the state dict of its head (`zoo.assembly.make_head(spec.head)`'s
    keys, numpy arrays) computing exactly `probe` on feature set `name`: the model is the pretrained
    backbone (`zoo.backbones` / `zoo.assembly.pretrained_backbone(spec)`) + it."""
    layers = probe.head_layers()  # [(W, b)] or [(W, b), (W, b)], on raw features
    if name == "imagenet":
        if len(layers) != 1:
            raise ValueError("the 'imagenet' feature set takes a linear probe only")
        w, b = classifier
        layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32))] + layers
        hspec = HeadSpec(kind="mlp", hidden=int(w.shape[0]), activation=LOG_SOFTMAX)
        spec = ModelSpec(model_name, probe.num_classes, stages=None, head=hspec)
    else:
        if probe.spec.head == "linear":
            hspec = HeadSpec(kind="linear")
        else:
            hspec = HeadSpec(kind="mlp", hidden=probe.spec.hidden, activation=probe.spec.activation)
        spec = ModelSpec(model_name, probe.num_classes, stages=stages_of(name), head=hspec)
    positions = hspec.linear_positions()
    assert len(positions) == len(layers), (hspec, len(layers))
    state = {}
    for i, (w, b) in zip(positions, layers):
        state[f"{i}.weight"], state[f"{i}.bias"] = np.ascontiguousarray(w), np.ascontiguousarray(b)
    return spec, state


def head_layers(hspec: HeadSpec, state: dict[str, np.ndarray]) -> Layers:
    """The (W, b) layers of a head state dict written by `transfer_head`."""
    return [(state[f"{i}.weight"], state[f"{i}.bias"]) for i in hspec.linear_positions()]


def head_logits(hspec: HeadSpec, state: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """What the saved head computes on `features` (the backbone's output for the head's spec)."""
    return forward(head_layers(hspec, state), hspec.activation, np.asarray(features, np.float32))
