"""The pretrained backbone's tensors, kept in the cache: a frozen backbone is the same tensors in
every run on the same weights, so a run that trains only a head on cached features writes its model
from this file, without building the network (which needs timm) or importing torch.

`cache_root()/backbones/<model>-<top|stagesI-J>-<weights sha256[:16]>.safetensors`, with a record
keyed by the timm model, its version, the stages and the weights' sha256 that holds the file's own
sha256 (checked before reuse) and the weights' provenance. `zoo.assembly.pretrained_backbone` fills it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .spec import ModelSpec


def _where(spec: ModelSpec, weights=None) -> tuple[Path, dict]:
    from . import sources
    from .fileio import cache_root
    from .model_info import timm_version
    from .registry import get

    entry = get(spec.model)
    sha = sources.weights_sha256(entry, weights)
    which = "top" if spec.stages is None else "stages" + "-".join(map(str, spec.stages))
    stem = cache_root() / "backbones" / f"{entry.name}-{which}-{sha[:16]}"
    key = {"timm_name": entry.timm_name, "timm": timm_version()[0], "stages": spec.stages, "weights_sha256": sha}
    return stem, key


def cached(spec: ModelSpec, weights=None) -> tuple[dict[str, np.ndarray], dict] | None:
    """(the `backbone.*` arrays, the weights' provenance) from the cache, or None when absent, stale
    or damaged (its sha256 does not match the record)."""
    from safetensors.numpy import load

    from .fileio import read_record

    stem, key = _where(spec, weights)
    rec = read_record(stem.with_suffix(".json"), key)
    blob = stem.with_suffix(".safetensors")
    if rec is None or not blob.is_file():
        return None
    data = blob.read_bytes()
    if hashlib.sha256(data).hexdigest() != rec["file_sha256"]:
        return None
    return load(data), rec["provenance"]


def store(spec: ModelSpec, weights, data: bytes, provenance: dict) -> bool:
    """Keep `data` (safetensors bytes of the `backbone.*` tensors) for `spec`; False where the cache
    is read-only (the backbone is then built again next time)."""
    from .fileio import atomic_write, write_record

    stem, key = _where(spec, weights)
    try:
        atomic_write(stem.with_suffix(".safetensors"), data)
    except OSError:
        return False
    digest = hashlib.sha256(data).hexdigest()
    write_record(stem.with_suffix(".json"), key, {"file_sha256": digest, "provenance": provenance})
    return True
