"""Real, package-shipped image sets written as class-folder datasets (no download):

- `write_digits(out)`: scikit-learn's handwritten digits (1797 8x8 greyscale scans, classes 0-9),
  upscaled 4x (nearest) to 32x32 PNGs: ``out/0/0000.png`` ...
- `write_lfw_subset(out)`: scikit-image's ``lfw_subset`` (200 25x25 greyscale crops: 100 faces from
  Labeled Faces in the Wild, 100 non-face patches), classes ``face`` and ``not_face``.

Both are "different from ImageNet" data in the plan's sense (tiny greyscale images), which is why
the plan table uses them. `per_class` keeps the first N images of each class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _write(out: Path, images, labels, names: list[str], per_class: int | None, scale: int) -> Path:
    out = Path(out)
    counts = {n: 0 for n in names}
    for i, (img, lab) in enumerate(zip(images, labels)):
        name = names[int(lab)]
        if per_class is not None and counts[name] >= per_class:
            continue
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(img)
        if scale > 1:
            pil = pil.resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
        pil.save(d / f"{i:04d}.png")
        counts[name] += 1
    return out


def write_digits(out, per_class: int | None = None, scale: int = 4) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255).round().astype(np.uint8)
    return _write(out, imgs, d.target, [str(i) for i in range(10)], per_class, scale)


def write_lfw_subset(out, per_class: int | None = None, scale: int = 1) -> Path:
    from skimage import data

    a = data.lfw_subset()  # first 100: faces, last 100: not faces
    imgs = (a * 255).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * (len(a) - 100))
    return _write(out, imgs, labels, ["face", "not_face"], per_class, scale)


def subsample_folder(src, dst, per_class: int) -> Path:
    """A class-folder dataset with the first `per_class` files of each class of `src`, as symlinks
    (e.g. flowers at 10 images per class: the "little data" end of the plan table)."""
    import os

    src, dst = Path(src), Path(dst)
    for cdir in sorted(p for p in src.iterdir() if p.is_dir()):
        out = dst / cdir.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(cdir.iterdir())[:per_class]:
            if not (out / f.name).exists():
                os.symlink(f, out / f.name)
    return dst
