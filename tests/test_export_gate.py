"""The gate and the bad-input paths: nothing is written unless every check passes, and errors name
what went wrong (op, model, file) with a hint."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import torch.nn as nn
from export_helpers import module_source, tiny_net
from onnx import numpy_helper

from transferzoo.cli import main
from transferzoo.export import onnx_export, parity
from transferzoo.export.errors import ExportError, GateError
from transferzoo.export.pipeline import ExportOptions, export


class WithOp(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.body, self.fn = tiny_net(), fn

    def forward(self, x):
        return self.fn(self.body[:5](x))


def test_tiny_model_exports_and_passes(tmp_path):
    res = export(module_source(tiny_net()), ExportOptions(out=tmp_path / "t.onnx", parity_limit=3))
    assert res.path.is_file() and res.report["passed"] and res.report["exporter"] == "torchscript"
    assert [c["name"] for c in res.report["fp32"]] == ["random batch 1", "random batch 3", "real images"]
    assert all(c["max_abs_diff"] <= 1e-4 and c["top1_agreement"] == 1.0 for c in res.report["fp32"])
    assert json.loads(res.report_path.read_text())["passed"] is True


def test_unexportable_op_names_op_and_model_and_hints(tmp_path):
    model = WithOp(lambda y: torch.histc(y.flatten(1), 4).unsqueeze(0).expand(y.shape[0], -1))
    out = tmp_path / "h.onnx"
    with pytest.raises(ExportError) as e:
        export(module_source(model, name="histnet"), ExportOptions(out=out, parity_limit=2))
    msg = str(e.value)
    assert "histc" in msg and "histnet" in msg and "--opset" in msg
    assert "torchscript exporter" in msg and "dynamo exporter" in msg  # both were tried
    assert not out.exists() and not list(tmp_path.iterdir())


def test_exporter_falls_back_and_says_which_was_used(tmp_path):
    # grid_sample needs opset 16 in the TorchScript exporter; at opset 15 it fails and dynamo takes over
    grid = torch.zeros(1, 2, 2, 2)
    model = WithOp(
        lambda y: nn.functional.grid_sample(y, grid.expand(y.shape[0], -1, -1, -1), align_corners=False).flatten(1)[
            :, :4
        ]
    )
    res = export(module_source(model), ExportOptions(out=tmp_path / "g.onnx", opset=15, parity_limit=2))
    first, second = res.report["attempts"]
    assert first["exporter"] == "torchscript" and first["stage"] == "export" and "grid_sampler" in first["op"]
    assert second["exporter"] == "dynamo" and second["passed"] and res.report["exporter"] == "dynamo"
    meta = {p.key: p.value for p in onnx.load(str(res.path)).metadata_props}
    assert meta["exporter"] == "dynamo"


def _tampered(real_to_onnx):
    def to_onnx(*args, **kwargs):
        g = real_to_onnx(*args, **kwargs)
        init = max(g.graph.initializer, key=lambda t: int(numpy_helper.to_array(t).size))
        arr = numpy_helper.to_array(init).copy()
        arr.flat[0] += 0.5  # one wrong weight: a silently wrong graph
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        return g

    return to_onnx


def test_tampered_graph_fails_gate_and_leaves_existing_file(tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous good model")
    monkeypatch.setattr(onnx_export, "to_onnx", _tampered(onnx_export.to_onnx))
    with pytest.raises(GateError) as e:
        export(module_source(tiny_net()), ExportOptions(out=out, parity_limit=3))
    assert "max abs diff" in str(e.value) and "nothing was written" in str(e.value)
    assert [a["exporter"] for a in e.value.report["attempts"]] == ["torchscript", "dynamo"]
    assert all(a["passed"] is False for a in e.value.report["attempts"])
    assert out.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no report, no temp files


@pytest.mark.shared_data
def test_cli_forced_failing_gate_exits_1_prints_numbers_writes_nothing(mv3_run, tmp_path, monkeypatch, capsys):
    from transferzoo.export import pipeline

    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    monkeypatch.setattr(pipeline.parity, "FP32", parity.Tolerance("fp32", max_abs_diff=-1.0))
    rc = main(["export", str(mv3_run), "--out", str(out), "--exporter", "torchscript", "--parity-limit", "4"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "parity gate failed" in err and "max|diff|=" in err and "top-1 agree=" in err and "real images" in err
    assert out.read_bytes() == b"keep me" and not out.with_suffix(".parity.json").exists()


@pytest.mark.shared_data
def test_corrupt_checkpoint_is_a_clear_error(mv3_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mv3_run, run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors" in err and "Traceback" not in err
    assert main(["export", str(weights), "--out", str(out)]) == 2  # the checkpoint named directly
    assert "cannot read weight file" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_bad_sources_are_clear_errors(tmp_path, capsys):
    assert main(["export", "resnet5", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "w.pth").write_bytes(b"\x80garbage")
    assert main(["export", str(tmp_path / "w.pth"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--model NAME" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "w.pth"), "--model", "resnet18", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "cannot read weight file" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "resnet18",
                "--random-weights",
                "--quantize",
                "int8",
                "--out",
                str(tmp_path / "m.onnx"),
                "--parity-limit",
                "1",
            ]
        )
        == 2
    )
    assert "--calibration DIR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "w.pth"]


@pytest.mark.shared_data
def test_run_whose_images_moved_says_what_to_do(mv3_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mv3_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["data_root"] = str(tmp_path / "moved_away")
    (run / "run.json").write_text(json.dumps(meta))
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "could be read" in err and "--parity-data DIR" in err
