"""Data scanning: odd files, errors, stratified splits, ImageDataset decoding."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferzoo.transfer.data import DataSplits, ImageDataset, Sample, scan_folder


def _photo(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr)


def _bomb_png(path: Path, w=40000, h=40000):
    """A valid PNG whose header declares w x h pixels (1.6 Gpx): must be refused before decoding."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _make_odd_folder(root: Path) -> dict[str, Path]:
    a, b = root / "alpha", root / "beta"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    files = {}
    for i in range(5):
        _photo(seed=i).save(a / f"a{i}.jpg", quality=90)
        _photo(seed=10 + i).save(b / f"b{i}.png")
    # odd but valid
    _photo(seed=20).convert("CMYK").save(a / "cmyk.jpg")
    pal = _photo(seed=21).convert("P")
    pal.info["transparency"] = 0
    pal.save(b / "palette.png", transparency=0)
    _photo(seed=22).convert("L").save(a / "gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    _photo((60, 30), seed=23).save(b / "rotated.jpg", exif=exif)
    files["rotated"] = b / "rotated.jpg"
    # bad
    full = io.BytesIO()
    _photo((256, 256), seed=24).save(full, format="JPEG", quality=95)
    (a / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (b / "notes.jpg").write_text("this is text, not a JPEG")
    _bomb_png(a / "bomb.png")
    (a / "readme.txt").write_text("not an image extension")
    (a / ".DS_Store").write_bytes(b"\0\0")
    files["truncated"], files["text"], files["bomb"], files["txt"] = (
        a / "truncated.jpg",
        b / "notes.jpg",
        a / "bomb.png",
        a / "readme.txt",
    )
    return files


def test_odd_files_skipped_and_listed(tmp_path):
    files = _make_odd_folder(tmp_path)
    s = scan_folder(tmp_path, val_fraction=0.25, seed=0)
    assert isinstance(s, DataSplits)
    assert s.classes == ["alpha", "beta"] and not s.given_split
    skipped = {Path(p).name: r for p, r in s.skipped}
    assert set(skipped) == {"truncated.jpg", "notes.jpg", "bomb.png", "readme.txt"}
    assert "truncated" in skipped["truncated.jpg"] or "decode" in skipped["truncated.jpg"]
    assert "not an image" in skipped["notes.jpg"]
    assert "bomb" in skipped["bomb.png"] or "exceeds" in skipped["bomb.png"]
    used = {Path(x.path).name for x in s.train + s.val}
    assert {"cmyk.jpg", "palette.png", "gray.png", "rotated.jpg"} <= used
    assert len(used) == 14 and all(Path(x.path).is_absolute() for x in s.train)
    # every used image decodes to RGB through the dataset, EXIF rotation applied
    ds = ImageDataset(s.train + s.val, transform=None)
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.mode == "RGB" and label in (0, 1)
    rot = ImageDataset([Sample(str(files["rotated"]), 1)], transform=None)[0][0]
    assert rot.size == (30, 60)
    assert "skipped 4 file(s)" in s.describe()


def test_strict_makes_bad_files_fatal(tmp_path):
    _make_odd_folder(tmp_path)
    with pytest.raises(ValueError, match="strict"):
        scan_folder(tmp_path, strict=True)


def test_dataset_applies_transform(tmp_path):
    _photo().save(tmp_path / "x.jpg")
    ds = ImageDataset([Sample(str(tmp_path / "x.jpg"), 3)], transform=lambda im: torch.zeros(3, im.size[1], im.size[0]))
    x, y = ds[0]
    assert x.shape == (3, 48, 64) and y == 3 and len(ds) == 1


def _folder(root: Path, counts: dict[str, int], split: str | None = None):
    for c, n in counts.items():
        d = root / split / c if split else root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _photo((16, 16), seed=i).save(d / f"{i}.png")


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path / "nope")
    _folder(tmp_path / "one", {"only": 3})
    with pytest.raises(ValueError, match="at least 2 class"):
        scan_folder(tmp_path / "one")
    _folder(tmp_path / "empty", {"a": 3})
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(ValueError, match=r"\['b'\].*no usable images"):
        scan_folder(tmp_path / "empty")
    _folder(tmp_path / "v", {"a": 3, "b": 3}, "train")
    _folder(tmp_path / "v", {"a": 2}, "val")
    with pytest.raises(ValueError, match=r"val split.*\['b'\]"):
        scan_folder(tmp_path / "v")
    _folder(tmp_path / "tiny", {"a": 3, "b": 1})
    with pytest.raises(ValueError, match="fewer than 2"):
        scan_folder(tmp_path / "tiny")
    with pytest.raises(ValueError, match="val_fraction"):
        scan_folder(tmp_path / "v", val_fraction=1.5)


def test_stratified_split_fixed_seed(tmp_path):
    _folder(tmp_path, {"a": 20, "b": 10, "c": 5})
    s1 = scan_folder(tmp_path, val_fraction=0.2, seed=3, verify=False)
    s2 = scan_folder(tmp_path, val_fraction=0.2, seed=3, verify=False)
    s3 = scan_folder(tmp_path, val_fraction=0.2, seed=4, verify=False)
    assert s1.val == s2.val and s1.train == s2.train
    assert s1.val != s3.val
    assert s1.class_counts("val") == {"a": 4, "b": 2, "c": 1}
    assert s1.class_counts("train") == {"a": 16, "b": 8, "c": 4}
    assert not set(s1.train) & set(s1.val)
    assert s1.imbalance() == 4.0 and any("imbalanced" in w for w in s1.warnings)
    s4 = scan_folder(tmp_path, val_fraction=0.2, test_fraction=0.2, seed=0, verify=False)
    assert s4.class_counts("test") == {"a": 4, "b": 2, "c": 1}
    assert len(s4.train) + len(s4.val) + len(s4.test) == 35


def test_given_split_used(tmp_path):
    _folder(tmp_path, {"x": 4, "y": 3}, "train")
    _folder(tmp_path, {"x": 2, "y": 2}, "val")
    s = scan_folder(tmp_path)
    assert s.given_split and len(s.train) == 7 and len(s.val) == 4
    assert s.summary()["class_counts"]["val"] == {"x": 2, "y": 2}


def test_hymenoptera_scan(hymenoptera):
    s = scan_folder(hymenoptera)
    assert s.classes == ["ants", "bees"] and s.given_split
    assert len(s.train) + len(s.val) + len(s.skipped) == 398
    assert len(s.val) == 153


def test_symlink_loops_are_skipped_with_a_reason(tmp_path):
    """`ln -s .. DATA/a/loop` once raised OSError [Errno 40] out of the scan."""
    root = tmp_path / "data"
    _folder(root, {"a": 3, "b": 3})
    (root / "a" / "loop").symlink_to("..")  # back to the data folder: a's images would repeat, b's leak into a
    (root / "b" / "self").symlink_to(".")
    (root / "b" / "ring1").mkdir()
    (root / "b" / "ring1" / "ring2").symlink_to("../ring1")
    (root / "a" / "dangling").symlink_to("no-such-folder")
    (root / "a" / "twice").symlink_to(root / "b" / "ring1")  # a second link to one folder: followed once
    s = scan_folder(root, val_fraction=0.34, seed=0)
    used = sorted(Path(x.path).relative_to(root).parts[0] for x in s.train + s.val)
    assert used == ["a"] * 3 + ["b"] * 3, used
    reasons = {Path(p).name: r for p, r in s.skipped}
    assert {"loop", "self", "ring2"} <= set(reasons), reasons
    assert all("scanned already" in reasons[n] for n in ("loop", "self", "ring2"))


def test_a_strip_image_is_skipped_not_a_memory_error(tmp_path):
    """A 1 x 40000 PNG (242 bytes) passed the scan, then its eval resize (shorter side to 224) asked
    for 224 x 8960000 pixels: MemoryError through the CLI. It is now refused per file at the scan,
    and the eval transform refuses any resize over the pixel limit before allocating it."""
    from transferzoo import zoo

    root = tmp_path / "data"
    _folder(root, {"a": 3, "b": 3})
    Image.new("RGB", (1, 40000)).save(root / "a" / "strip.png")
    Image.new("RGB", (30000, 2)).save(root / "b" / "wide.png")
    s = scan_folder(root, val_fraction=0.34, seed=0)
    reasons = {Path(p).name: r for p, r in s.skipped}
    assert "aspect ratio" in reasons["strip.png"] and "aspect ratio" in reasons["wide.png"], reasons
    assert len(s.train) + len(s.val) == 6
    with pytest.raises(zoo.ImageError, match="over the limit"):
        zoo.transforms("efficientnet_lite0")(Image.new("RGB", (1, 95)).resize((2, 60000)))
    assert zoo.transforms("efficientnet_lite0")(Image.new("RGB", (60, 200))).shape == (3, 224, 224)
