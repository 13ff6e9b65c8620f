"""The weights are real, their sources are tried in order, and tampering is refused."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from transferzoo import zoo
from transferzoo.zoo import sources
from transferzoo.zoo.fileio import sha256_file
from transferzoo.zoo.predict import predict_images

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_lite0_weights_are_real_imagenet_weights(sample_photos):
    chelsea, coffee = predict_images("efficientnet_lite0", [sample_photos["chelsea"], sample_photos["coffee"]], top_k=1)
    assert chelsea.top[0][0] in CAT_CLASSES, chelsea.top
    assert coffee.top[0][0] in (967, 968), coffee.top  # espresso or cup
    assert coffee.top[0][2] > 0.5


def test_package_source_is_pinned_and_recorded():
    m = zoo.create("efficientnet_lite0", num_classes=4)
    prov = m.pretrained_cfg["transferzoo"]
    assert prov["source"] == "package"
    assert prov["sha256"] == zoo.get("efficientnet_lite0").packages[0].sha256
    assert m.get_classifier().out_features == 4


def _package_copy(tmp_path, monkeypatch, mutate=None):
    """Point the lite0 package source at a copy of its file (optionally altered)."""
    pkg = zoo.get("efficientnet_lite0").packages[0]
    src = sources.package_file(pkg)
    dst = tmp_path / pkg.relpath
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    if mutate:
        mutate(dst)
    monkeypatch.setattr(sources, "package_file", lambda p: dst if p is pkg else None)
    return dst


def test_tampered_package_file_is_refused(tmp_path, monkeypatch):
    def flip_a_byte(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    path = _package_copy(tmp_path, monkeypatch, flip_a_byte)
    with pytest.raises(zoo.ChecksumMismatchError) as err:
        zoo.create("efficientnet_lite0")
    assert str(path) in str(err.value)


def test_explicit_file_wins_and_corrupt_file_is_a_clear_error(tmp_path):
    ref = zoo.create("resnet18", pretrained=False)
    good = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(good))
    loaded = zoo.create("resnet18", weights=good)
    assert loaded.pretrained_cfg["transferzoo"]["source"] == "file"
    for k, v in ref.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(zoo.ZooError, match="cannot read weight file"):
        zoo.create("resnet18", weights=bad)
    with pytest.raises(zoo.ZooError, match="not found"):
        zoo.create("resnet18", weights=tmp_path / "missing.pth")


def test_raw_package_file_passed_explicitly_is_adapted():
    path = sources.package_file(zoo.get("efficientnet_lite0").packages[0])
    m = zoo.create("efficientnet_lite0", weights=path)
    ref = zoo.create("efficientnet_lite0")
    assert torch.equal(m.conv_stem.weight, ref.conv_stem.weight)


def test_offline_without_any_source_names_every_source_tried():
    with pytest.raises(zoo.WeightsUnavailableError) as err:
        zoo.create("resnet50")
    msg = str(err.value)
    for words in ("explicit file", "weight package", "cache", "hub download", "offline"):
        assert words in msg, (words, msg)


def _fake_hf_cache(root, repo_id: str, payload: bytes, blob_name: str):
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "blobs" / blob_name).write_bytes(payload)
    commit = "0" * 40
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    os.symlink(f"../../blobs/{blob_name}", snap / "model.safetensors")


@pytest.mark.parametrize("tamper", [False, True])
def test_hf_cache_source_is_verified_against_its_blob_name(tmp_path, monkeypatch, tamper):
    import huggingface_hub.constants as hfc

    ref = zoo.create("resnet18", pretrained=False)
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(f))
    payload = f.read_bytes()
    sha = sha256_file(f)
    cache = tmp_path / "hub"
    _fake_hf_cache(cache, "timm/resnet18.a1_in1k", payload + (b"x" if tamper else b""), sha)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    assert "cache" in zoo.available_sources(zoo.get("resnet18"))
    if tamper:
        with pytest.raises(zoo.ChecksumMismatchError):
            zoo.create("resnet18")
    else:
        m = zoo.create("resnet18")
        assert m.pretrained_cfg["transferzoo"]["source"] == "cache"
        assert torch.equal(m.fc.weight, ref.fc.weight)


def test_images_decode_safely(tmp_path):
    from PIL import Image

    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(zoo.ImageError, match="not an image"):
        zoo.load_rgb(bad)
    trunc = tmp_path / "trunc.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "ok.jpg", quality=95)
    trunc.write_bytes((tmp_path / "ok.jpg").read_bytes()[:300])
    with pytest.raises(zoo.ImageError):
        zoo.load_rgb(trunc)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert zoo.load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.jpg")
    assert zoo.load_rgb(tmp_path / "cmyk.jpg").mode == "RGB"
    with pytest.raises(zoo.ImageError, match="exceeds"):
        zoo.load_rgb(tmp_path / "ok.jpg", max_pixels=100)
