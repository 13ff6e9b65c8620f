"""ImageNet-1k class names, from timm's bundled dataset info (no download), kept as a record in the
cache (`zoo.fileio.write_record`, keyed by timm's version) so that reading them costs no timm import."""

from __future__ import annotations

import functools


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    from .fileio import cache_root, read_record, write_record
    from .model_info import timm_version

    path, key = cache_root() / "imagenet_labels.json", {"timm": timm_version()[0], "subset": "imagenet-1k"}
    stored = read_record(path, key)
    if isinstance(stored, list) and len(stored) == 1000:
        return tuple(stored)
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    labels = tuple(info.index_to_description(i) for i in range(1000))
    write_record(path, key, list(labels))
    return labels
