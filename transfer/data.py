"""The user's image folder: scan, validate, split.

Layouts (class sub-folders hold the images; the sub-folder name is the class name):
- ``ROOT/train/<class>/...`` + ``ROOT/val/<class>/...`` (+ optional ``ROOT/test/<class>/...``):
  the given split is used as is (``given_split=True``);
- ``ROOT/train/<class>/...`` alone: train is split into train/val (stratified, seeded);
- ``ROOT/<class>/...``: split into train/val(/test), stratified per class with a fixed seed.

Scanning streams through the folder with ``os.scandir`` (only paths are kept, never pixels) and
validates every file by decoding it: a JPEG is decoded at reduced DCT scale (``Image.draft``),
which still reads the whole entropy-coded stream, so truncation is caught at a fraction of the
cost of a full decode; other formats are decoded fully. Non-image, truncated, corrupt and
decompression-bomb files are listed in ``DataSplits.skipped`` with the reason (``strict=True``
makes any of them fatal). Hidden files (``.DS_Store``...) are ignored.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferzoo import zoo
from transferzoo.zoo.images import IMAGE_EXTENSIONS, MAX_PIXELS


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path
    label: int  # class index


@dataclass
class DataSplits:
    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[tuple[str, str]]  # (path, reason)
    given_split: bool
    seed: int = 0
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    warnings: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): left out on request
    audit: dict | None = None  # transfer.audit's findings for report.md ({'counts', 'lines', 'result'})

    def split(self, name: str) -> list[Sample]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def class_counts(self, split: str = "train") -> dict[str, int]:
        counts = np.bincount([s.label for s in self.split(split)], minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def imbalance(self, split: str = "train") -> float:
        """Largest class count / smallest class count (1.0 = balanced)."""
        counts = [n for n in self.class_counts(split).values()]
        return float(max(counts) / max(1, min(counts))) if counts else 1.0

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "classes": list(self.classes),
            "num_classes": len(self.classes),
            "given_split": self.given_split,
            "num_train": len(self.train),
            "num_val": len(self.val),
            "num_test": len(self.test),
            "class_counts": {s: self.class_counts(s) for s in ("train", "val", "test") if self.split(s)},
            "imbalance": round(self.imbalance("train"), 3),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "warnings": list(self.warnings),
            "excluded": [{"path": p, "reason": r} for p, r in self.excluded],
            **({"audit": {k: self.audit[k] for k in ("counts", "lines")}} if self.audit else {}),
        }

    def describe(self) -> str:
        """Human-readable summary: sizes, class counts, imbalance, skipped files."""
        how = (
            "given train/val split"
            if self.given_split
            else (
                f"stratified split, seed {self.seed}, val {self.val_fraction:g}"
                + (f", test {self.test_fraction:g}" if self.test_fraction else "")
            )
        )
        lines = [
            f"{self.root}: {len(self.classes)} classes, {len(self.train)} train / {len(self.val)} val"
            + (f" / {len(self.test)} test" if self.test else "")
            + f" images ({how})"
        ]
        tc, vc = self.class_counts("train"), self.class_counts("val")
        width = max(len(c) for c in self.classes)
        for c in self.classes:
            lines.append(f"  {c.ljust(width)}  train {tc[c]:6d}  val {vc[c]:6d}")
        lines.append(f"  imbalance (largest / smallest train class): {self.imbalance('train'):.2f}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            for p, r in self.skipped[:20]:
                lines.append(f"    {p}: {r}")
            if len(self.skipped) > 20:
                lines.append(f"    ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def check_image(path: str, max_pixels: int = MAX_PIXELS) -> str | None:
    """None if `path` decodes as an image (the reason it does not, otherwise). Cheaper than
    `zoo.load_rgb` for JPEGs (reduced-scale decode), same acceptance rules."""
    try:
        zoo.images.decode(path, max_pixels, reduced=True)
        return None
    except zoo.ImageError as e:
        return e.reason


def _list_class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=True) and not e.name.startswith("."))


def _dir_id(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk_files(folder: Path, skipped: list, seen: set):
    """Every non-hidden file below `folder`, in a deterministic (sorted) order, streamed. Symlinked
    folders are followed once: a folder in `seen` (the data folder and its class folders, or one
    walked already: a symlink loop such as `ln -s .. loop`, or a second link to one folder) and a
    folder that cannot be read are listed as skipped, not recursed into."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:  # EACCES, ELOOP
        skipped.append((os.path.abspath(folder), f"cannot read folder ({e.strerror or e})"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_dir, is_file = e.is_dir(follow_symlinks=True), e.is_file(follow_symlinks=True)
            ident = _dir_id(e.path) if is_dir else None
        except OSError as err:  # a link loop (ELOOP) or a dangling link
            skipped.append((os.path.abspath(e.path), f"cannot read ({err.strerror or err})"))
            continue
        if is_dir:
            if ident in seen:
                skipped.append((os.path.abspath(e.path), "folder scanned already (a symlink loop or a second link)"))
                continue
            seen.add(ident)
            yield from _walk_files(Path(e.path), skipped, seen)
        elif is_file:
            yield os.path.abspath(e.path)


def _scan_split(folder: Path, classes: list[str], skipped: list, verify: bool, workers: int) -> list[Sample]:
    class_dirs = [folder / c for c in classes if (folder / c).is_dir()]
    # the data folder (and the one above a train/ or val/ split) and every class folder: a link back to them is a loop
    seen = {_dir_id(d) for d in [folder, folder.parent, *class_dirs]}

    def candidates():
        for label, c in enumerate(classes):
            d = folder / c
            if not d.is_dir():
                continue
            for p in _walk_files(d, skipped, seen):
                if not p.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append((p, f"not an image file extension (expected one of {', '.join(IMAGE_EXTENSIONS)})"))
                    continue
                yield p, label

    samples: list[Sample] = []
    if not verify:
        return [Sample(p, label) for p, label in candidates()]
    # Decoding releases the GIL, so threads give real parallelism; map() keeps order and, with a
    # bounded window, memory stays flat however large the folder.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: list = []

        def drain(n):
            while len(window) > n:
                (p, label), fut = window.pop(0)
                reason = fut.result()
                if reason is None:
                    samples.append(Sample(p, label))
                else:
                    skipped.append((p, reason))

        for item in candidates():
            window.append((item, pool.submit(check_image, item[0])))
            drain(4 * workers)
        drain(0)
    return samples


def _stratified(samples: list[Sample], n_classes: int, fractions: list[float], seed: int) -> list[list[Sample]]:
    """Split per class: each fraction of each class (at least one image when the fraction > 0)."""
    rng = np.random.default_rng(seed)
    out: list[list[Sample]] = [[] for _ in range(len(fractions) + 1)]
    by_class: list[list[Sample]] = [[] for _ in range(n_classes)]
    for s in samples:
        by_class[s.label].append(s)
    for items in by_class:
        order = rng.permutation(len(items))
        start = 0
        for k, f in enumerate(fractions):
            n = int(round(len(items) * f)) if f > 0 else 0
            n = max(n, 1) if f > 0 else 0
            out[k + 1].extend(items[i] for i in order[start : start + n])
            start += n
        out[0].extend(items[i] for i in order[start:])
    return [sorted(o, key=lambda s: (s.label, s.path)) for o in out]


def scan_folder(
    root,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    strict: bool = False,
    verify: bool = True,
    workers: int | None = None,
) -> DataSplits:
    """Scan and validate an image folder, and split it (see the module docstring).

    verify=False only checks file extensions (fast; bad files then fail later, at decode time).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"data folder {root} is not a directory")
    root = root.resolve()
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got {test_fraction}")
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    skipped: list[tuple[str, str]] = []
    has_train, has_val, has_test = ((root / s).is_dir() for s in ("train", "val", "test"))
    base = root / "train" if has_train else root
    classes = _list_class_dirs(base)
    if has_train and not classes:
        raise ValueError(f"{base} has no class sub-folders: expected {base}/<class name>/<images>")
    if len(classes) < 2:
        found = f"found only {classes[0]!r}" if classes else "found none"
        raise ValueError(
            f"{base} needs at least 2 class sub-folders (one per class, holding its images); {found}. "
            f"Expected layout: {root}/<class>/<image> or {root}/train/<class>/<image> + {root}/val/<class>/<image>"
        )
    splits_warnings: list[str] = []
    train = _scan_split(base, classes, skipped, verify, workers)
    given = has_train and has_val
    test: list[Sample] = []
    if given:
        val_classes = _list_class_dirs(root / "val")
        extra = sorted(set(val_classes) - set(classes))
        if extra:
            raise ValueError(
                f"{root / 'val'} has class folder(s) {extra} that {base} does not have; "
                "train and val must have the same class sub-folders"
            )
        val = _scan_split(root / "val", classes, skipped, verify, workers)
        if has_test:
            test = _scan_split(root / "test", classes, skipped, verify, workers)
    _check_nonempty(train, classes, base, "train")
    if given:
        missing = [c for c, n in zip(classes, np.bincount([s.label for s in val], minlength=len(classes))) if n == 0]
        if missing:
            raise ValueError(
                f"the val split ({root / 'val'}) has no images of class(es) {missing}: "
                "every class needs validation images (add some, or remove val/ to split train automatically)"
            )
    else:
        small = [c for c, n in zip(classes, np.bincount([s.label for s in train], minlength=len(classes))) if n < 2]
        if small:
            raise ValueError(
                f"class(es) {small} have fewer than 2 images: cannot split them into train and val; add images"
            )
        fractions = [val_fraction] + ([test_fraction] if test_fraction > 0 and not has_test else [])
        parts = _stratified(train, len(classes), fractions, seed)
        train, val = parts[0], parts[1]
        if len(parts) > 2:
            test = parts[2]
        elif has_test:
            test = _scan_split(root / "test", classes, skipped, verify, workers)
        _check_nonempty(train, classes, base, "train (after splitting)")
    if strict and skipped:
        listing = "\n".join(f"  {p}: {r}" for p, r in skipped[:50])
        raise ValueError(f"{len(skipped)} file(s) in {root} cannot be used (strict mode):\n{listing}")
    out = DataSplits(
        root=root,
        classes=classes,
        train=train,
        val=val,
        test=test,
        skipped=skipped,
        given_split=given,
        seed=seed,
        val_fraction=0.0 if given else val_fraction,
        test_fraction=0.0 if given else test_fraction,
        warnings=splits_warnings,
    )
    if out.imbalance("train") >= 3.0:
        splits_warnings.append(
            f"classes are imbalanced ({out.imbalance('train'):.1f}x between the largest and the "
            "smallest class): accuracy alone can mislead, read the confusion matrix"
        )
    return out


def _check_nonempty(samples: list[Sample], classes: list[str], folder: Path, what: str) -> None:
    counts = np.bincount([s.label for s in samples], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ValueError(
            f"class folder(s) {empty} in {folder} have no usable images ({what}); "
            "add images or remove the empty folder(s)"
        )


class ImageDataset:
    """(transformed image, class index) pairs; decoding with `zoo.load_rgb` (EXIF, RGB, bomb-safe).
    A map-style dataset for torch's DataLoader (which needs only __len__ and __getitem__), so that
    scanning a folder does not import torch."""

    def __init__(self, samples: list[Sample], transform):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i) -> tuple:
        s = self.samples[i]
        img = zoo.load_rgb(s.path)
        return (self.transform(img) if self.transform is not None else img), s.label
