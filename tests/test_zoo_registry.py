"""The registry's metadata, checked entry by entry (all problems collected, asserted once), and every
architecture built and run. Generated from the registry, so a new entry is tested by adding it."""

from __future__ import annotations

import json
import os
import re

import pytest
import timm
import torch

from transferzoo import zoo
from transferzoo.zoo import assembly as za
from transferzoo.zoo.layers import layer_table

LICENSES = {"apache-2.0", "bsd-3-clause", "mit", "cc-by-4.0"}


def test_registry_metadata_is_consistent():
    problems: list[str] = []
    names = zoo.list_models()
    if len(names) < 12:
        problems.append(f"only {len(names)} entries; the registry promises at least 12")
    families = {zoo.get(n).family for n in names}
    if len(families) < 5:
        problems.append(f"only {len(families)} families: {sorted(families)}")
    for name in names:
        e = zoo.REGISTRY[name]
        if not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", e.name):
            problems.append(f"{name}: not an arch.tag name")
        if e.timm_arch not in timm.list_models():
            problems.append(f"{name}: timm has no architecture {e.timm_arch!r}")
        try:
            cfg = timm.models.get_pretrained_cfg(e.timm_name)
        except Exception as err:  # collect, do not stop at the first
            problems.append(f"{name}: no timm pretrained config {e.timm_name!r} ({err})")
            continue
        if cfg is None:
            problems.append(f"{name}: no timm pretrained config {e.timm_name!r}")
            continue
        if e.license not in LICENSES:
            problems.append(f"{name}: unexpected license {e.license!r}")
        if cfg.license and cfg.license != e.license:
            problems.append(f"{name}: license {e.license!r} but timm says {cfg.license!r}")
        i = zoo.info(name)
        p = i.preprocessing
        if p.input_size[0] != 3 or min(p.input_size[1:]) < 64:
            problems.append(f"{name}: odd input size {p.input_size}")
        if not (len(p.mean) == len(p.std) == 3 and all(0 < s <= 1 for s in p.std)):
            problems.append(f"{name}: bad mean/std {p.mean} {p.std}")
        if not 0.5 < p.crop_pct <= 1.0:
            problems.append(f"{name}: crop_pct {p.crop_pct}")
        if p.interpolation not in ("bilinear", "bicubic", "nearest"):
            problems.append(f"{name}: interpolation {p.interpolation}")
        if i.num_params < 1_000_000:
            problems.append(f"{name}: {i.num_params} parameters is implausible for an ImageNet CNN")
        if len(i.stages) < 4:
            problems.append(f"{name}: {len(i.stages)} feature stages (expected >= 4)")
        if [s.reduction for s in i.stages] != sorted(s.reduction for s in i.stages):
            problems.append(f"{name}: stage reductions not increasing: {[s.reduction for s in i.stages]}")
        if len(i.blocks) < 3:
            problems.append(f"{name}: only {len(i.blocks)} finetuning groups from group_matcher")
        for pkg in e.packages:
            if not re.fullmatch(r"[0-9a-f]{64}", pkg.sha256):
                problems.append(f"{name}: package {pkg.distribution} has no pinned sha256")
            if pkg.adapter not in ("positional", "timm"):
                problems.append(f"{name}: unknown adapter {pkg.adapter}")
        if not e.packages and not cfg.hf_hub_id and not cfg.url:
            problems.append(f"{name}: no weight source at all")
    assert not problems, "registry problems:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_architecture_builds_and_runs(name):
    """Random weights: the architecture, its head reset and its feature stages all work."""
    i = zoo.info(name)
    size = i.preprocessing.input_size[1:]
    model = zoo.create(name, pretrained=False, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    feats = zoo.create(name, pretrained=False, features_only=True).eval()
    with torch.no_grad():
        maps = feats(torch.randn(1, 3, *size))
    assert [m.shape[1] for m in maps] == [s.num_chs for s in i.stages]


@pytest.mark.parametrize(
    "name", ["efficientnet_lite0", "resnet18", "mobilenetv3_small_100", "convnext_nano", "regnety_016", "densenet121"]
)
def test_inspect_totals_equal_real_parameter_count(name):
    model = zoo.create(name, pretrained=False)
    rows, totals = layer_table(model, (224, 224))
    assert totals["params_formula"] == sum(p.numel() for p in model.parameters()) == zoo.info(name).num_params
    assert totals["shapes_match"], totals["mismatches"]
    convs = [r for r in rows if r.kind in ("conv", "dwconv", "gconv")]
    assert convs and all(r.params == r.real_params for r in convs)


def test_inspect_formula_on_tf_same_padding_at_odd_size():
    """TF-'same' convs pad asymmetrically; the formula must still predict every output volume."""
    model = zoo.create("efficientnet_lite0", pretrained=False)
    for size in [(224, 224), (225, 231)]:
        rows, totals = layer_table(model, size)
        assert totals["shapes_match"], (size, totals["mismatches"])
    rows, _ = layer_table(model, (224, 224))
    stem = rows[0]  # 3x3 stride 2 on 224: 1 pixel of padding in all, after the image only
    assert (stem.P, stem.out) == ("0/1", "112 x 112 x 32")


def test_name_resolution():
    assert zoo.get("efficientnet_lite0").name == "efficientnet_lite0.in1k"
    assert zoo.get("tf_efficientnet_lite0").name == "efficientnet_lite0.in1k"
    assert zoo.get("resnet50.a1_in1k").timm_arch == "resnet50"
    assert zoo.list_models("resnet*") == ["resnet18.a1_in1k", "resnet34.a1_in1k", "resnet50.a1_in1k"]
    with pytest.raises(zoo.UnknownModelError, match="did you mean 'resnet50'"):
        zoo.get("resnt50")


def test_records_are_keyed_and_checksummed(tmp_path, caplog):
    from transferzoo.zoo.fileio import read_record, write_record

    path = tmp_path / "r.json"
    write_record(path, {"v": 1}, {"x": [1, 2]})
    assert read_record(path, {"v": 1}) == {"x": [1, 2]}
    assert read_record(path, {"v": 2}) is None  # computed for something else
    path.write_text(path.read_text().replace("2", "3"))
    assert read_record(path, {"v": 1}) is None and "checksum" in caplog.text
    assert read_record(tmp_path / "missing.json", {"v": 1}) is None


def test_model_info_is_read_from_its_record_without_timm(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, json; from transferzoo import zoo; i = zoo.info('efficientnet_lite0'); "
        "print(json.dumps([i.num_params, i.num_features, [s.num_chs for s in i.stages], list(i.blocks), "
        "i.preprocessing.to_dict(), 'timm' in sys.modules]))"
    )
    env = dict(os.environ, TRANSFERZOO_CACHE=str(tmp_path))
    out = [
        json.loads(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        )
        for _ in range(2)
    ]
    assert out[0][:-1] == out[1][:-1]  # the same info from timm and from the record
    assert out[0][-1] is True and out[1][-1] is False  # the second process never imported timm
    rec = next((tmp_path / "model_info").glob("*.json"))
    rec.write_text(rec.read_text().replace('"num_params": ', '"num_params": 1'))  # tampered: read timm again
    again = json.loads(
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert again[:-1] == out[0][:-1] and again[-1] is True


def test_pretrained_backbone_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERZOO_CACHE", str(tmp_path))
    spec = za.ModelSpec("efficientnet_lite0", 3, stages=(2, 3))
    first, prov, built = za.pretrained_backbone(spec)
    assert built is not None and prov["sha256"] and prov["source"] == "package"
    again, prov2, built2 = za.pretrained_backbone(spec)
    assert built2 is None and prov2 == prov and again.keys() == first.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    blob = next((tmp_path / "backbones").glob("*.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))  # a damaged file is not reused: built again
    _, _, built3 = za.pretrained_backbone(spec)
    assert built3 is not None
