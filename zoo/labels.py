"""ImageNet-1k class names, from timm's bundled dataset info (no download)."""

from __future__ import annotations

import functools


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(1000))
