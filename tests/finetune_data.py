"""Small real image folders for the finetuning tests: scikit-learn's handwritten digits (real 8x8
scans), written as PNG class folders. Deterministic, no network, a second or two to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_digits(root: Path, per_class: int = 20, classes: int = 10, size: int = 32, offset: int = 0) -> Path:
    """root/<digit>/<i>.png: `per_class` images of each of the first `classes` digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    for c in range(classes):
        idx = np.flatnonzero(d.target == c)[offset : offset + per_class]
        (root / str(c)).mkdir(exist_ok=True)
        for i in idx:
            img = (d.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(255 - img).resize((size, size), Image.BILINEAR).save(root / str(c) / f"{i}.png")
    return root
