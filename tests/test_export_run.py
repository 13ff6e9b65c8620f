"""Exporting training runs (run directories per transfer/RUN_DIR.md) through the CLI: metadata,
parity on the run's val split, in-graph preprocessing, ensembles, bare checkpoints, predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import safetensors.torch
import torch

from transferzoo import zoo
from transferzoo.cli import main
from transferzoo.export import images, metadata
from transferzoo.zoo import assembly as za

pytestmark = pytest.mark.shared_data
REPO = Path(__file__).resolve().parents[1]


def _rebuild(run_dir: Path) -> torch.nn.Module:
    """The RUN_DIR.md recipe, independent of export.sources."""
    run = json.loads((run_dir / "run.json").read_text())
    model = za.build(za.ModelSpec.from_dict(run["spec"]), pretrained=False)
    model.load_state_dict(safetensors.torch.load_file(run_dir / "model.safetensors"))
    return model.eval()


def _val_batch(run_dir: Path):
    run = json.loads((run_dir / "run.json").read_text())
    s = images.from_split(run_dir / "splits" / "val.tsv", run["data_root"], "val")
    return images.prepare(s, zoo.preprocessing(run["spec"]["model"]))


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_run_dir_export_via_subprocess(mv3_run, tmp_path):
    out = tmp_path / "ants.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "transferzoo", "export", str(mv3_run), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout is pure JSON: exporter chatter goes to stderr
    assert report["passed"] and report["source"]["kind"] == "run"
    assert report["images"]["origin"].startswith("val split of") and report["images"]["labelled"]
    assert json.loads(out.with_suffix(".parity.json").read_text()) == report

    meta = metadata.read(out)
    run = json.loads((mv3_run / "run.json").read_text())
    assert meta["labels"] == ["ants", "bees"] and meta["input_format"] == "float32_nchw"
    assert meta["output_format"] == "logits" and meta["input_size"] == [3, 224, 224]
    assert (
        meta["mean"] == list(run["preprocessing"]["mean"])
        and meta["interpolation"] == run["preprocessing"]["interpolation"]
    )
    assert meta["source_model"] == "mobilenetv3_small_100.lamb_in1k" and meta["exporter"] == report["exporter"]
    assert meta["checkpoint_sha256"] == zoo.fileio.sha256_file(mv3_run / "model.safetensors")
    assert meta["run_summary"] == run["summary"] and meta["parity"]["passed"] is True

    # independent check: the file's logits on the val images equal the rebuilt PyTorch model's
    b = _val_batch(mv3_run)
    with torch.no_grad():
        ref = _rebuild(mv3_run)(torch.from_numpy(b.float)).numpy()
    got = _ort(out, b.float)
    assert np.abs(ref - got).max() <= 1e-4 and (ref.argmax(1) == got.argmax(1)).all()
    assert ort.InferenceSession(str(out)).get_inputs()[0].shape[0] == "batch"  # dynamic batch


@pytest.mark.slow
def test_with_preprocessing_equals_float_path(mv3_run, tmp_path):
    f32, u8 = tmp_path / "f32.onnx", tmp_path / "u8.onnx"
    assert main(["export", str(mv3_run), "--out", str(f32)]) == 0
    assert main(["export", str(mv3_run), "--out", str(u8), "--with-preprocessing"]) == 0
    assert metadata.read(u8)["input_format"] == "uint8_nhwc"
    b = _val_batch(mv3_run)
    a, c = _ort(f32, b.float), _ort(u8, b.uint8)  # the same images: floats vs raw pixels
    assert np.abs(a - c).max() <= 1e-4 and (a.argmax(1) == c.argmax(1)).all()
    inp = ort.InferenceSession(str(u8)).get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [224, 224, 3]

    # serve's torch-free predict reads the metadata and gives the same answer for both files
    from transferzoo.serve.predict import predict_onnx

    paths = [str(Path(json.loads((mv3_run / "run.json").read_text())["data_root"]) / n) for n in b.names[:3]]
    p1 = [r.to_dict() if hasattr(r, "to_dict") else r for r in predict_onnx(str(f32), paths, top_k=2)]
    p2 = [r.to_dict() if hasattr(r, "to_dict") else r for r in predict_onnx(str(u8), paths, top_k=2)]
    assert [r["top"][0]["label"] for r in p1] == [r["top"][0]["label"] for r in p2]
    for r1, r2 in zip(p1, p2):
        assert abs(r1["top"][0]["probability"] - r2["top"][0]["probability"]) < 1e-4


@pytest.mark.slow
def test_ensemble_averages_member_probabilities(mv3_run, mv3_run_b, tmp_path):
    out = tmp_path / "ens.onnx"
    assert main(["export", "--ensemble", str(mv3_run), str(mv3_run_b), "--out", str(out)]) == 0
    meta = metadata.read(out)
    assert meta["output_format"] == "probabilities" and meta["source_kind"] == "ensemble"
    assert len(meta["ensemble_members"]) == 2
    b = _val_batch(mv3_run)
    with torch.no_grad():
        x = torch.from_numpy(b.float)
        ref = ((_rebuild(mv3_run)(x).softmax(-1) + _rebuild(mv3_run_b)(x).softmax(-1)) / 2).numpy()
    got = _ort(out, b.float)
    assert np.abs(ref - got).max() <= 1e-5 and np.allclose(got.sum(1), 1, atol=1e-5)
    # the members really differ, so averaging is observable
    with torch.no_grad():
        assert not torch.allclose(_rebuild(mv3_run)(x), _rebuild(mv3_run_b)(x))


def test_ensemble_members_must_agree(mv3_run, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(mv3_run, other)
    run = json.loads((other / "run.json").read_text())
    run["labels"] = ["wasps", "bees"]
    (other / "run.json").write_text(json.dumps(run))
    assert main(["export", "--ensemble", str(mv3_run), str(other), "--out", str(tmp_path / "e.onnx")]) == 2
    assert "disagree on labels" in capsys.readouterr().err
    assert main(["export", "--ensemble", str(mv3_run), "--out", str(tmp_path / "e.onnx")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_bare_checkpoint_with_model_and_labels(tmp_path, hymenoptera):
    torch.manual_seed(0)
    model = zoo.create("mobilenetv3_small_100", pretrained=False, num_classes=2).eval()
    ckpt = tmp_path / "ckpt.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(ckpt))
    (tmp_path / "labels.txt").write_text("ants\nbees\n")
    out = tmp_path / "c.onnx"
    rc = main(
        [
            "export",
            str(ckpt),
            "--model",
            "mobilenetv3_small_100",
            "--labels",
            str(tmp_path / "labels.txt"),
            "--parity-data",
            str(hymenoptera / "val"),
            "--parity-limit",
            "10",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.with_suffix(".parity.json").read_text())
    assert report["images"]["labelled"] and report["images"]["count"] == 10  # folder names matched the labels
    meta = metadata.read(out)
    assert meta["labels"] == ["ants", "bees"] and meta["source_kind"] == "checkpoint"
    assert meta["checkpoint_sha256"] == zoo.fileio.sha256_file(ckpt)
    # wrong architecture for the checkpoint -> a clear error, nothing written
    assert main(["export", str(ckpt), "--model", "resnet18", "--out", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
