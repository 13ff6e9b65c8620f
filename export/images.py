"""Real images for the parity gate and for int8 calibration, preprocessed exactly like timm's eval
transform (resize shorter side to H / crop_pct with the model's filter, centre crop, /255,
normalise): the resize and crop run in PIL (giving the uint8 pixels a `--with-preprocessing` graph
takes), the rest in numpy (`zoo.images.normalise`), bit-identical to timm's ToTensor + Normalize."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferzoo import zoo
from transferzoo.zoo.factory import resize_crop
from transferzoo.zoo.images import IMAGE_EXTENSIONS, normalise
from transferzoo.zoo.model_info import Preprocessing


@dataclass
class ImageSet:
    """Images (paths or in-memory PIL images) with optional class indices into the model's labels."""

    origin: str  # human description: 'val split of runs/x', 'folder /data/val', 'scikit-image sample photos'
    items: list  # str paths or PIL images
    names: list[str]
    labels: list[int] | None = None
    skipped: list[dict] = field(default_factory=list)  # {'path', 'reason'}: unreadable files

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, limit: int | None) -> "ImageSet":
        """At most `limit` images, spread evenly over the list (so every class stays represented)."""
        if limit is None or len(self) <= limit:
            return self
        idx = sorted(set(np.linspace(0, len(self) - 1, limit).round().astype(int).tolist()))
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return ImageSet(
            self.origin,
            pick(self.items),
            pick(self.names),
            pick(self.labels) if self.labels is not None else None,
            self.skipped,
        )


@dataclass
class Batch:
    """Preprocessed pixels of an ImageSet: `uint8` N x H x W x 3, `float` N x 3 x H x W (normalised)."""

    uint8: np.ndarray
    float: np.ndarray
    labels: np.ndarray | None
    names: list[str]
    origin: str
    skipped: list[dict]

    def describe(self) -> dict:
        return {
            "origin": self.origin,
            "count": len(self.names),
            "labelled": self.labels is not None,
            "skipped": self.skipped,
        }


def from_split(tsv: str | os.PathLike, data_root: str | os.PathLike, origin: str) -> ImageSet:
    """A run directory's split file: `path<TAB>class_index` per line, paths relative to data_root."""
    tsv = Path(tsv)
    if not tsv.is_file():
        raise zoo.ZooError(f"split file not found: {tsv}")
    items, labels = [], []
    with open(tsv, newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or not row[1].strip().lstrip("-").isdigit():
                raise zoo.ZooError(f"{tsv}:{lineno}: expected 'path<TAB>class_index', got {row!r}")
            items.append(str(Path(data_root) / row[0]))
            labels.append(int(row[1]))
    if not items:
        raise zoo.ZooError(f"split file {tsv} lists no images")
    return ImageSet(origin, items, [os.path.relpath(p, data_root) for p in items], labels)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def from_folder(root: str | os.PathLike, class_names: list[str] | None = None) -> ImageSet:
    """Images under `root`. When its sub-folders are named after the model's classes (an ImageFolder
    layout, like hymenoptera/val/{ants,bees}) they carry labels; otherwise all images are unlabelled
    (parity then reports agreement, not accuracy)."""
    root = Path(root)
    if not root.is_dir():
        raise zoo.ZooError(f"image folder not found: {root}")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    items, labels = [], []
    index = {c: i for i, c in enumerate(class_names or [])}
    labelled = bool(subdirs) and all(d in index for d in subdirs)
    if labelled:
        for d in subdirs:
            for p in _image_files(root / d):
                items.append(str(p))
                labels.append(index[d])
    else:
        items = [str(p) for p in _image_files(root)]
    if not items:
        raise zoo.ZooError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return ImageSet(f"folder {root}", items, [os.path.relpath(p, root) for p in items], labels if labelled else None)


SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field")


def sample_photos() -> ImageSet:
    """scikit-image's bundled colour photos (no download): the real-image check for a bare zoo model."""
    try:
        from PIL import Image
        from skimage import data
    except ImportError:
        raise zoo.ZooError(
            "no parity images: pass --parity-data DIR (or pip install scikit-image for its sample photos)"
        ) from None
    imgs = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in SAMPLE_PHOTOS]
    return ImageSet("scikit-image sample photos", imgs, list(SAMPLE_PHOTOS))


def prepare(images: ImageSet, pre: Preprocessing) -> Batch:
    """Decode and preprocess; unreadable files are skipped and listed (never silently)."""
    steps = resize_crop(pre)
    pixels, names, labels, skipped = [], [], [], list(images.skipped)
    for i, item in enumerate(images.items):
        try:
            img = zoo.load_rgb(item) if isinstance(item, (str, os.PathLike)) else item
        except zoo.ImageError as e:
            skipped.append({"path": e.path, "reason": e.reason})
            continue
        arr = np.asarray(steps(img), dtype=np.uint8)
        assert arr.shape == (pre.input_size[1], pre.input_size[2], 3), arr.shape
        pixels.append(arr)
        names.append(images.names[i])
        if images.labels is not None:
            labels.append(images.labels[i])
    if not pixels:
        raise zoo.ZooError(f"none of the {len(images)} images from {images.origin} could be read")
    u8 = np.stack(pixels)
    return Batch(
        u8,
        normalise(u8, pre.mean, pre.std),
        np.asarray(labels) if images.labels is not None else None,
        names,
        images.origin,
        skipped,
    )
