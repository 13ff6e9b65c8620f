"""What timm knows about an entry: preprocessing, parameter count, feature stages, finetuning
blocks. Read from timm itself (models built on the meta device: milliseconds, no memory) and kept
in a record on disk, so a process that only reuses cached features never imports timm (2 s here).

The record (`cache_root()/model_info/<name>.json`) is keyed by what it was read from -- the timm
arch and pretrained tag, timm's version and install path, this module's schema -- and carries the
sha256 of its content: a record that does not match is read again from timm and rewritten.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .fileio import cache_root, read_record, write_record
from .registry import ModelEntry, get

SCHEMA = 1  # bump when ModelInfo's fields or how they are read change


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
    return info(name).preprocessing


@functools.cache
def info(name: str) -> ModelInfo:
    entry = get(name)
    path, key = cache_root() / "model_info" / f"{entry.name}.json", _record_key(entry)
    fields = read_record(path, key)
    if fields is None:
        fields = _read_timm(entry)
        write_record(path, key, fields)
    pre = fields["preprocessing"]
    return ModelInfo(
        entry=entry,
        preprocessing=Preprocessing(
            input_size=tuple(pre["input_size"]),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            interpolation=pre["interpolation"],
            crop_pct=pre["crop_pct"],
            crop_mode=pre["crop_mode"],
        ),
        num_params=fields["num_params"],
        num_features=fields["num_features"],
        stages=tuple(Stage(**s) for s in fields["stages"]),
        blocks=tuple(fields["blocks"]),
        fixed_input_size=fields["fixed_input_size"],
    )


def timm_version() -> tuple[str, str]:
    """(version, install folder) of timm, read from its files without importing it."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.origin:
        raise ModuleNotFoundError("timm is not installed")
    folder = Path(spec.origin).parent
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (folder / "version.py").read_text())
    return (m.group(1) if m else "unknown"), str(folder)


def _record_key(entry: ModelEntry) -> dict:
    version, folder = timm_version()
    return {"schema": SCHEMA, "timm_name": entry.timm_name, "timm": version, "timm_path": folder}


def _read_timm(entry: ModelEntry) -> dict:
    """ModelInfo's fields (JSON types) from timm: the pretrained config and a meta-device model."""
    import timm
    import torch

    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    with torch.device("meta"):
        model = timm.create_model(entry.timm_arch, pretrained=False)
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    # Finetuning groups of the backbone only: the ImageNet classifier's own group is not a block
    # (transfer replaces it with a new head that always trains).
    head = cfg.classifier or "classifier"
    heads = (head,) if isinstance(head, str) else tuple(head)
    groups = {k: v for k, v in groups.items() if not all(n.startswith(heads) for n in v)}
    return {
        "preprocessing": {
            "input_size": [int(v) for v in cfg.input_size],
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
            "interpolation": cfg.interpolation,
            "crop_pct": float(cfg.crop_pct),
            "crop_mode": cfg.crop_mode,
        },
        "num_params": int(sum(p.numel() for p in model.parameters())),
        # MobileNetV3 (and others with a conv head after pooling) have pre-logits wider than num_features
        "num_features": int(getattr(model, "head_hidden_size", None) or model.num_features),
        # Stage indices follow feature_info order; 'index' is what features_only(out_indices=...) expects.
        "stages": [
            {"index": i, "module": f["module"], "num_chs": int(f["num_chs"]), "reduction": int(f["reduction"])}
            for i, f in enumerate(model.feature_info)
        ],
        "blocks": [str(k) for k in groups],
        "fixed_input_size": bool(cfg.fixed_input_size),
    }
