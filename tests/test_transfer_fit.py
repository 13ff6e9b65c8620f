"""Feature engine, cache, and `plan` / `fit` end to end on real (package-shipped) images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from transferzoo.cli import main
from transferzoo.transfer.config import FeatureConfig, FitConfig, ProbeConfig, load_config
from transferzoo.transfer.features import sets as featsets
from transferzoo.transfer.features.engine import Extractor, image_decoder
from transferzoo.transfer.rundir import load_model
from transferzoo.transfer.sample_data import write_digits, write_lfw_subset
from transferzoo.transfer.strategies import fit
from transferzoo.zoo import assembly as za
from transferzoo.zoo.config import from_dict, override


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("featcache")


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"), per_class=10)


@pytest.fixture(scope="module")
def lfw_dir(tmp_path_factory):
    return write_lfw_subset(tmp_path_factory.mktemp("lfw"), per_class=30)


def _paths(folder, n=None):
    return sorted(str(p) for p in folder.rglob("*.png"))[:n]


def test_feature_outputs_equal_transfer_model_features(sample_photos, cache_dir):
    paths = [str(p) for p in sample_photos.values()]
    fs = Extractor("efficientnet_lite0", FeatureConfig(cache_dir=str(cache_dir)), progress=False).extract(paths)
    assert fs.ok.all() and fs.engine in ("onnxruntime", "torch")
    decode = image_decoder("efficientnet_lite0")
    x = torch.from_numpy(np.stack([decode(p) for p in paths]))
    with torch.no_grad():
        top = za.build(za.ModelSpec("efficientnet_lite0", 2)).eval().features(x).numpy()
        st = za.build(za.ModelSpec("efficientnet_lite0", 2, stages=(1, 3))).eval().features(x).numpy()
    np.testing.assert_allclose(fs.get("top"), top, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(featsets.build(fs, "stage1+stage3"), st, atol=1e-4, rtol=1e-4)
    # the ImageNet head still recognises the photo of a cat through the cached features
    from transferzoo.zoo.labels import imagenet_labels

    top1 = [imagenet_labels()[i].lower() for i in featsets.build(fs, "imagenet").argmax(1)]
    assert "cat" in top1[list(sample_photos).index("chelsea")]


def test_onnxruntime_and_torch_engines_agree(digits_dir, cache_dir, tmp_path):
    paths = _paths(digits_dir, 6)
    ort_fs = Extractor(
        "efficientnet_lite0", FeatureConfig(cache_dir=str(cache_dir), engine="onnxruntime"), progress=False
    ).extract(paths)
    torch_fs = Extractor(
        "efficientnet_lite0", FeatureConfig(cache_dir=str(tmp_path), engine="torch"), progress=False
    ).extract(paths)
    assert torch_fs.engine == "torch"
    for name in ("top", "stage2", "stage4"):
        np.testing.assert_allclose(ort_fs.get(name), torch_fs.get(name), atol=1e-4, rtol=1e-4)


def test_cache_reused_by_content_not_by_stat(digits_dir, cache_dir, tmp_path):
    paths = _paths(digits_dir, 12)
    cfg = FeatureConfig(cache_dir=str(cache_dir))
    first = Extractor("efficientnet_lite0", cfg, progress=False).extract(paths)
    again = Extractor("efficientnet_lite0", cfg, progress=False).extract(paths)
    assert again.timings["computed_images"] == 0 and again.engine == "cache"
    np.testing.assert_array_equal(first.get("top"), again.get("top"))
    copy = tmp_path / "copy"
    shutil.copytree(digits_dir, copy)
    moved = [str(copy / p[len(str(digits_dir)) + 1 :]) for p in paths]
    same = Extractor("efficientnet_lite0", cfg, progress=False).extract(moved)
    assert same.timings["computed_images"] == 0  # same bytes, other folder: content key hits
    stat_cfg = FeatureConfig(cache_dir=str(cache_dir), cache_key="stat")
    by_stat = Extractor("efficientnet_lite0", stat_cfg, progress=False).extract(moved[:3])
    assert by_stat.timings["computed_images"] == 3
    np.testing.assert_allclose(by_stat.get("top"), first.get("top")[:3], atol=1e-5)
    chunks = list((cache_dir).rglob("chunks/*.top.npy"))
    assert chunks and all(np.load(c, mmap_mode="r").dtype == np.float32 for c in chunks)


def test_damaged_feature_cache_and_onnx_model_are_recomputed(digits_dir, tmp_path, caplog):
    """A zeroed chunk once gave val accuracy 0.5 instead of 0.967 with exit 0; a garbled cached
    features.onnx must be exported again, not trusted because its check file exists."""
    import logging

    paths = _paths(digits_dir, 6)
    cfg = FeatureConfig(cache_dir=str(tmp_path), engine="onnxruntime")
    first = Extractor("efficientnet_lite0", cfg, progress=False).extract(paths)
    assert first.timings["engine"]["exported"]
    for chunk in tmp_path.rglob("chunks/*.top.npy"):
        raw = bytearray(chunk.read_bytes())
        raw[-len(raw) // 4 :] = bytes(len(raw) // 4)
        chunk.write_bytes(bytes(raw))
    onnx_file = next(tmp_path.rglob("features.onnx"))
    raw = bytearray(onnx_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = Extractor("efficientnet_lite0", cfg, progress=False).extract(paths)
    assert "does not match its checksum" in caplog.text and "does not match its check record" in caplog.text
    assert again.timings["computed_images"] == 6 and again.timings["engine"]["exported"]
    np.testing.assert_array_equal(again.get("top"), first.get("top"))


def test_fit_linear_model_equals_probe_on_real_images(digits_dir, cache_dir, tmp_path):
    cfg = override(
        FitConfig(strategy="linear"),
        {
            "features.cache_dir": str(cache_dir),
            "data.val_fraction": 0.3,
            "probe.cv_repeats": 1,
            "probe.cv_folds": 3,
            "probe.lambdas": [0.01, 0.1, 1.0],
        },
    )
    res = fit(digits_dir, cfg, out=tmp_path / "run")
    s = res.summary
    assert s["strategy"] == "linear" and s["num_classes"] == 10
    assert s["val_accuracy"] > 0.5  # chance is 0.1
    model, run = load_model(tmp_path / "run")
    ctx = res.context
    val = ctx.splits.val
    decode = image_decoder("efficientnet_lite0")
    with torch.no_grad():
        got = model(torch.from_numpy(np.stack([decode(x.path) for x in val]))).numpy()
    want = res.probe.logits(featsets.build(ctx.features, s["feature_set"], ctx.rows["val"]))
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
    yva = np.array([x.label for x in val])
    assert float((got.argmax(1) == yva).mean()) == pytest.approx(s["val_accuracy"], abs=1e-6)
    assert run["labels"] == [str(i) for i in range(10)]


def test_cli_fit_stages_mlp_json(lfw_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    conf = tmp_path / "fast.yaml"
    conf.write_text("probe: {cv_folds: 3, cv_repeats: 1, max_iter: 60}\n")
    rc = main(
        [
            "fit",
            str(lfw_dir),
            "--strategy",
            "stages",
            "--head",
            "mlp",
            "--hidden",
            "32",
            "--activation",
            "elu",
            "--lambdas",
            "0.1",
            "--config",
            str(conf),
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    for key in ("strategy", "model", "val_accuracy", "num_classes", "num_train", "num_val", "wall_seconds"):
        assert key in s
    assert s["strategy"] == "stages" and s["head"] == "mlp" and s["val_accuracy"] >= 0.75  # chance 0.5
    for f in (
        "run.json",
        "model.safetensors",
        "config.yaml",
        "labels.json",
        "plan.json",
        "metrics.json",
        "confusion.png",
        "report.md",
        "splits/train.tsv",
        "splits/val.tsv",
    ):
        assert (out / f).is_file(), f
    assert yaml.safe_load((out / "config.yaml").read_text())["probe"]["activation"] == "elu"
    model, run = load_model(out)
    assert run["spec"]["head"]["kind"] == "mlp"


def test_cli_plan_json_and_auto_fit(lfw_dir, cache_dir, tmp_path, capsys):
    rc = main(["plan", str(lfw_dir), "--json", "--cache-dir", str(cache_dir)])
    assert rc == 0
    p = json.loads(capsys.readouterr().out)
    assert p["strategy"] in ("linear", "stages")
    ev = p["evidence"]
    assert {"top", "stage0", "stage4"} <= set(ev["probes"]) and ev["knn"]["loo_accuracy"] > 0.7
    assert ev["size"]["level"] == "little" and p["val_baselines"]
    conf = tmp_path / "fast.yaml"
    conf.write_text("probe: {cv_folds: 3, cv_repeats: 1, lambdas: [0.01, 0.1, 1.0]}\n")
    rc = main(
        [
            "fit",
            str(lfw_dir),
            "--config",
            str(conf),
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(tmp_path / "auto"),
            "--json",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["planned_strategy"] == p["strategy"] and s["val_accuracy"] >= 0.75
    assert json.loads((tmp_path / "auto" / "plan.json").read_text())["strategy"] == p["strategy"]


def test_config_file_and_errors(tmp_path, lfw_dir, capsys):
    good = tmp_path / "c.yaml"
    good.write_text("model: efficientnet_lite0\nprobe: {loss: hinge, lambdas: [0.1]}\nfeatures: {batch_size: 8}\n")
    cfg = load_config(good)
    assert cfg.probe.loss == "hinge" and cfg.probe.lambdas == [0.1] and cfg.features.batch_size == 8
    with pytest.raises(ValueError, match=r"probe\.activaton.*did you mean 'activation'"):
        from_dict(FitConfig, {"probe": {"activaton": "relu"}})
    with pytest.raises(ValueError, match=r"features\.batch_size.*expected int"):
        from_dict(FitConfig, {"features": {"batch_size": "big"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: linear\nknn: {kk: 3}\n")
    assert main(["fit", str(lfw_dir), "--config", str(bad)]) == 2
    assert "knn.kk" in capsys.readouterr().err
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    assert main(["plan", str(tmp_path / "one")]) == 2
    assert "at least 2 class" in capsys.readouterr().err
    assert main(["fit", str(lfw_dir), "--model", "efficientnet_lit0"]) == 2
    assert "did you mean" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared_data
def test_hymenoptera_auto(hymenoptera, cache_dir, tmp_path):
    cfg = FitConfig(features=FeatureConfig(cache_dir=str(cache_dir)))
    res = fit(hymenoptera, cfg, out=tmp_path / "run")
    s = res.summary
    assert s["planned_strategy"] == "linear" and s["num_val"] == 153
    assert s["val_accuracy"] >= 0.94  # measured 0.954 (bench/bench_transfer_hymenoptera.py)
    assert s["knn"]["val_accuracy"] > 0.85


def test_written_config_reloads(lfw_dir, cache_dir, tmp_path):
    cfg = FitConfig(
        strategy="linear",
        features=FeatureConfig(cache_dir=str(cache_dir)),
        probe=ProbeConfig(cv_folds=3, cv_repeats=1, lambdas=[0.1]),
    )
    fit(lfw_dir, cfg, out=tmp_path / "run")
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert "k-nearest" in (tmp_path / "run" / "report.md").read_text()


def test_cached_backbone_run_writes_the_same_model(digits_dir, cache_dir, tmp_path, monkeypatch):
    """A second run reuses the checksummed backbone (no network built, the head checked on the
    features): its run directory's model still computes the probe on real images, and its backbone
    tensors are the first run's."""
    from safetensors.numpy import load_file

    monkeypatch.setenv("TRANSFERZOO_CACHE", str(tmp_path / "zc"))
    cfg = override(
        FitConfig(strategy="stages"),
        {"features.cache_dir": str(cache_dir), "data.val_fraction": 0.3, "probe.cv_folds": 3, "probe.lambdas": [0.1]},
    )
    runs = [fit(digits_dir, cfg, out=tmp_path / f"run{i}") for i in range(2)]
    assert [r.summary["parity_checked"] for r in runs] == ["model on images", "head on features"]
    decode = image_decoder("efficientnet_lite0")
    for i, res in enumerate(runs):
        model, _ = load_model(tmp_path / f"run{i}")
        val = res.context.splits.val
        with torch.no_grad():
            got = model(torch.from_numpy(np.stack([decode(x.path) for x in val]))).numpy()
        want = res.probe.logits(
            featsets.build(res.context.features, res.summary["feature_set"], res.context.rows["val"])
        )
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
    a, b = (load_file(str(tmp_path / f"run{i}" / "model.safetensors")) for i in range(2))
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("backbone."):
            np.testing.assert_array_equal(a[k], b[k])
