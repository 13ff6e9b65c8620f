"""zoo: a registry of pretrained CNN backbones on top of timm.

    import zoo
    zoo.list_models("resnet*")                  # registry names
    zoo.list_models(available_only=True)        # those with weights on this machine
    zoo.get("efficientnet_lite0")               # the registry entry
    zoo.info("efficientnet_lite0")              # preprocessing, params, feature stages (from timm)
    model = zoo.create("efficientnet_lite0", num_classes=5)
    tf = zoo.transforms("efficientnet_lite0")   # timm eval transform

`zoo` imports none of transfer/export/serve.
"""
from __future__ import annotations

from .errors import ChecksumMismatchError, ImageError, UnknownModelError, WeightsUnavailableError, ZooError
from .factory import create, transforms
from .images import load_rgb
from .info import ModelInfo, Preprocessing, Stage, info, preprocessing
from .registry import REGISTRY, ModelEntry, PackageWeights, get
from .registry import names as _names
from .sources import ResolvedWeights, available_sources, resolve, sha256_file


def list_models(pattern: str | None = None, available_only: bool = False) -> list[str]:
    """Registry names matching a shell-style pattern; with available_only, only those whose weights
    are on this machine now (an installed package or the local cache)."""
    out = _names(pattern)
    if available_only:
        out = [n for n in out if available_sources(REGISTRY[n])]
    return out


__all__ = [
    "REGISTRY", "ModelEntry", "PackageWeights", "ModelInfo", "Preprocessing", "Stage", "ResolvedWeights",
    "ZooError", "UnknownModelError", "WeightsUnavailableError", "ChecksumMismatchError", "ImageError",
    "list_models", "get", "info", "preprocessing", "create", "transforms", "resolve", "available_sources",
    "sha256_file", "load_rgb",
]
