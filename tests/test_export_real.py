"""Real weights, real images: EfficientNet-Lite0's ImageNet weights (offline package) exported and
gated on real photos; a Lite0 fine-tuned on hymenoptera exported fp32, int8 and fp16 with the gates
on its real val split."""

from __future__ import annotations

import collections
import json

import onnx
import pytest

from transferzoo.cli import main
from transferzoo.export import metadata

pytestmark = pytest.mark.slow


def test_lite0_real_weights_on_real_photos_and_predict(tmp_path, sample_photos, capsys):
    out = tmp_path / "lite0.onnx"
    assert main(["export", "efficientnet_lite0", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".parity.json").read_text())
    real = next(c for c in report["fp32"] if c["name"] == "real images")
    assert report["images"]["origin"] == "scikit-image sample photos" and real["count"] == 6
    assert real["max_abs_diff"] <= 1e-4 and real["top1_agreement"] == 1.0 and real["min_cosine"] > 0.99999
    meta = metadata.read(out)
    assert meta["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert len(meta["labels"]) == 1000 and meta["interpolation"] == "bicubic" and meta["crop_pct"] == 0.875
    # TF-'same' padding is frozen at 224 x 224: no per-conv Shape/Ceil/Pad arithmetic left in the graph
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert report["same_padding_convs_frozen"] == 5 and ops["Ceil"] == 0 and ops["Shape"] == 0
    capsys.readouterr()

    photos = [str(sample_photos[n]) for n in ("chelsea", "coffee")]
    assert main(["predict", str(out), *photos, "--top-k", "1", "--json"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", "efficientnet_lite0", *photos, "--top-k", "1", "--json"]) == 0
    from_torch = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["label"] for r in from_onnx] == [r["top"][0]["label"] for r in from_torch]
    assert "cat" in from_onnx[0]["top"][0]["label"]  # chelsea is a cat: real weights, real answer
    for a, b in zip(from_onnx, from_torch):
        assert abs(a["top"][0]["probability"] - b["top"][0]["probability"]) < 1e-4


def test_trained_run_fp32_and_int8_gates_on_real_val_images(lite0_run, tmp_path):
    run_dir, torch_acc = lite0_run
    assert torch_acc >= 0.85  # the fitted head really learned ants vs bees
    out = tmp_path / "q.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--quantize", "int8"]) == 0
    report = json.loads(out.with_suffix(".parity.json").read_text())
    fp32 = next(c for c in report["fp32"] if c["name"] == "real images")
    int8 = next(c for c in report["int8"] if c["name"] == "real images")
    assert fp32["count"] == 153 and fp32["accuracy_reference"] == pytest.approx(torch_acc)
    assert fp32["accuracy_onnx"] == fp32["accuracy_reference"] and fp32["max_abs_diff"] <= 1e-4
    assert int8["reference"] == "onnx fp32" and int8["passed"]
    assert int8["top1_agreement"] >= 0.98 and int8["accuracy_reference"] - int8["accuracy_onnx"] <= 0.01
    assert report["quantization"]["calibration"]["origin"].startswith("train split")
    meta = metadata.read(out)
    assert meta["precision"] == "int8" and meta["parity"]["int8"]["top1_agreement"] == int8["top1_agreement"]
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert report["size_bytes"] < 0.4 * 4.0e6 * 4  # int8 weights: well under the fp32 size (~16 MB)


def test_trained_run_fp16_gate(lite0_run, tmp_path):
    run_dir, _ = lite0_run
    out = tmp_path / "h.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--quantize", "fp16", "--parity-limit", "60"]) == 0
    report = json.loads(out.with_suffix(".parity.json").read_text())
    fp16 = next(c for c in report["fp16"] if c["name"] == "real images")
    assert fp16["passed"] and fp16["min_cosine"] >= 0.999 and fp16["top1_agreement"] >= 0.99
    assert metadata.read(out)["precision"] == "fp16"
    inits = onnx.load(str(out)).graph.initializer
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in inits) > len(inits) // 2


def test_int8_gate_failure_writes_nothing(lite0_run, tmp_path, monkeypatch, capsys):
    from transferzoo.export import parity, pipeline

    run_dir, _ = lite0_run
    out = tmp_path / "q.onnx"
    out.write_bytes(b"keep")
    monkeypatch.setattr(pipeline.parity, "INT8", parity.Tolerance("int8", min_top1_agreement=1.01))
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--out",
                str(out),
                "--quantize",
                "int8",
                "--parity-limit",
                "40",
                "--calibration-limit",
                "16",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "int8 parity gate failed" in err and "top-1 agree=" in err
    assert out.read_bytes() == b"keep" and not out.with_suffix(".parity.json").exists()
