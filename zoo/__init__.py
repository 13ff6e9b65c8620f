"""zoo: a registry of pretrained CNN backbones on top of timm, and the foundations every other
package stands on.

    from transferzoo import zoo
    zoo.list_models("resnet*")                  # registry names
    zoo.list_models(available_only=True)        # those with weights on this machine
    zoo.get("efficientnet_lite0")               # the registry entry
    zoo.info("efficientnet_lite0")              # preprocessing, params, feature stages (from timm)
    model = zoo.create("efficientnet_lite0", num_classes=5)
    tf = zoo.transforms("efficientnet_lite0")   # timm eval transform

What it holds: the registry (`registry`), weight sources (`sources`), what timm knows about an entry
(`model_info`), model building (`factory`, `assembly`, `spec`), the pretrained backbone tensors kept in
the cache (`backbones`, numpy: a head trained on cached features is saved without torch), the layer
table (`layers`); and the shared
foundations: errors a user can act on (`errors`), typed configuration (`config`), atomic files and
digests (`fileio`), safe image decoding (`images`), onnxruntime sessions (`runtime`).

`zoo` imports none of transfer/export/serve. Importing it costs no torch or timm: the names below
load their module on first use (PEP 562), so the torch-free server can use `zoo.images`,
`zoo.runtime` and `zoo.config`.
"""

from __future__ import annotations

import importlib

# public name -> the submodule that defines it
_API = {
    "ZooError": "errors",
    "UnknownModelError": "errors",
    "WeightsUnavailableError": "errors",
    "ChecksumMismatchError": "errors",
    "ImageError": "errors",
    "REGISTRY": "registry",
    "ModelEntry": "registry",
    "PackageWeights": "registry",
    "get": "registry",
    "ModelInfo": "model_info",
    "Preprocessing": "model_info",
    "Stage": "model_info",
    "info": "model_info",
    "preprocessing": "model_info",
    "create": "factory",
    "transforms": "factory",
    "ResolvedWeights": "sources",
    "available_sources": "sources",
    "resolve": "sources",
    "load_rgb": "images",
}
_SUBMODULES = (
    "assembly",
    "config",
    "errors",
    "factory",
    "fileio",
    "images",
    "labels",
    "layers",
    "model_info",
    "predict",
    "registry",
    "runtime",
    "sources",
    "spec",
)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_SUBMODULES))


def list_models(pattern: str | None = None, available_only: bool = False) -> list[str]:
    """Registry names matching a shell-style pattern; with available_only, only those whose weights
    are on this machine now (an installed package or the local cache)."""
    from .registry import REGISTRY, names
    from .sources import available_sources

    out = names(pattern)
    if available_only:
        out = [n for n in out if available_sources(REGISTRY[n])]
    return out


__all__ = sorted(_API) + ["list_models"]
