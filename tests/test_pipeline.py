"""`transferzoo run` and `transferzoo demo`: the main job, end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferzoo.cli import main
from transferzoo.pipeline.config import DEFAULT_YAML, load_pipeline


def cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "transferzoo", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    from transferzoo.transfer.sample_data import write_lfw_subset

    return write_lfw_subset(tmp_path_factory.mktemp("lfw") / "faces", per_class=40)


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_default_config_is_valid_once_data_is_set(tmp_path, faces):
    cfg = yaml.safe_load(DEFAULT_YAML)
    cfg["data"] = str(faces)
    loaded = load_pipeline(write_yaml(tmp_path / "p.yaml", cfg))
    assert loaded.fit.model == "efficientnet_lite0" and loaded.export.enabled and loaded.serve.enabled


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            {"fit": {"probe": {"activaton": "relu"}}},
            "unknown config key 'fit.probe.activaton' (did you mean 'activation'?)",
        ),
        ({"export": {"quantize": "int4"}}, "export.quantize: expected one of null, 'int8' or 'fp16', got 'int4'"),
        ({"serve": {"requests": "many"}}, "serve.requests: expected int, got 'many'"),
        ({"export": {"out": "x.onnx"}}, "unknown config key 'export.out'"),
        ({"serve": {"limits": {"max_json_depth": 1}}}, "serve.limits.max_json_depth: expected 2..256, got 1"),
        ({"serve": {"instances": 0}}, "serve.instances: expected 1..64, got 0"),
        ({"data": "no/such/folder"}, "data: folder"),
        ({"export": {"parity_data": "missing"}}, "export.parity_data: folder"),
        ({"fit": {"model": "resnt50"}}, "did you mean 'resnet50'"),
        ({"export": {"enabled": False}}, "serve.enabled: serving needs export.enabled"),
        (
            {"fit": {"strategy": "magic"}},
            "fit.strategy: expected one of 'auto', 'linear', 'stages', 'partial' or 'full', got 'magic'",
        ),
    ],
)
def test_bad_configs_name_the_key_and_write_nothing(tmp_path, faces, capsys, patch, message):
    cfg = {"data": str(faces), "out": str(tmp_path / "out")}
    for k, v in patch.items():
        cfg[k] = v
    rc = main(["run", str(write_yaml(tmp_path / "p.yaml", cfg))])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err
    assert not (tmp_path / "out").exists()  # validated before any work


def test_print_default_config(capsys):
    assert main(["run", "--print-default-config"]) == 0
    assert capsys.readouterr().out == DEFAULT_YAML


@pytest.mark.slow
def test_run_pipeline_end_to_end_then_resume(tmp_path, faces):
    """plan -> fit -> export (parity) -> served requests; a re-run reuses finished stages and reproduces
    the numbers; a changed export setting re-runs export only."""
    cfg = {
        "data": str(faces),
        "out": "out",
        "fit": {"strategy": "auto", "progress": False},
        "serve": {"requests": 8, "threads": 1, "instances": 2},
    }
    pipe = write_yaml(tmp_path / "pipeline.yaml", cfg)
    r = cli("run", pipe, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads(r.stdout)
    out = tmp_path / "out"  # relative to the YAML file
    assert first["val_accuracy"] >= 0.85, first
    assert first["export"]["top1_agreement"] == 1.0 and first["export"]["max_abs_diff"] <= 1e-4
    assert first["serve"]["max_abs_diff_vs_onnxruntime"] <= 1e-4 and first["serve"]["classify_accuracy"] >= 0.75
    for name in (
        "model.onnx",
        "model.parity.json",
        "serve.json",
        "report.md",
        "state.json",
        "run/model.safetensors",
        "run/plan.json",
        "run/report.md",
    ):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "The plan and its evidence" in report and "tritonclient" in report

    cfg["serve"]["enabled"] = False
    write_yaml(pipe, cfg)
    r = cli("run", pipe, "--json")
    second = json.loads(r.stdout)
    assert second["skipped_stages"] == ["fit", "export"], (r.stderr[-2000:], (out / "state.json").read_text())
    assert second["val_accuracy"] == first["val_accuracy"]

    cfg["export"] = {"with_preprocessing": True}
    write_yaml(pipe, cfg)
    third = json.loads(cli("run", pipe, "--json").stdout)
    assert third["skipped_stages"] == ["fit"]
    from transferzoo.serve.model import Model

    assert Model(out / "model.onnx").meta.preprocess.input_format == "uint8_nhwc"


@pytest.mark.slow
def test_demo_runs_the_whole_job(tmp_path):
    r = cli("demo", "--out", tmp_path / "demo", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["val_accuracy"] >= 0.9
    assert s["export"]["top1_agreement"] == 1.0
    assert s["serve"]["max_abs_diff_vs_onnxruntime"] <= 1e-4
    assert Path(s["report"]).is_file()
    assert "tiger cat" in r.stderr or "tabby" in r.stderr or "Egyptian cat" in r.stderr  # the pretrained check
