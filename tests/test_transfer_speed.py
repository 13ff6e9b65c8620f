"""Start-up and time estimates: `fit --profile`, the console script's exit, the finetuning ETA.
No timing is asserted (load varies):
only that the figures exist, are consistent and add up."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from transferzoo.cli import main
from transferzoo.transfer.finetune.loop import fmt_seconds, run_seconds_left
from transferzoo.transfer.sample_data import write_digits


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"), per_class=4)


def _profile(err: str) -> dict[str, float]:
    block = err[err.index("profile (seconds):") :].splitlines()[1:]
    return {
        m.group(1).strip(): float(m.group(2)) for m in (re.match(r"\s+(.*?)\s+(-?\d+\.\d+)$", ln) for ln in block) if m
    }


def test_fit_profile_lists_every_phase_cold_then_cached(digits_dir, tmp_path, capsys):
    conf = tmp_path / "fast.yaml"
    conf.write_text("probe: {cv_folds: 2, cv_repeats: 1, lambdas: [0.1]}\n")
    argv = ["fit", str(digits_dir), "--strategy", "linear", "--config", str(conf), "--cache-dir", str(tmp_path / "c")]
    argv += ["--out", str(tmp_path / "run"), "--no-progress", "--profile"]
    assert main(argv) == 0
    cold = _profile(capsys.readouterr().err)
    for phase in (
        "imports: the transfer stack (numpy, onnxruntime, ...)",
        "scan the folder",
        "features: build + check the engine (or load it)",
        "features: inference",
        "features: waiting for JPEG decoding",
        "CV of the candidate feature sets",
        "model: build + parity check on images",
        "write the run directory",
        "total (process, as timed from the shell)",
    ):
        assert phase in cold and cold[phase] >= 0, (phase, cold)
    parts = sum(v for k, v in cold.items() if not k.startswith("total"))
    assert cold["total (process, as timed from the shell)"] >= 0.99 * parts - 0.05  # the phases do not overlap
    assert main(argv) == 0  # cached: no engine, no inference
    cached = _profile(capsys.readouterr().err)
    assert "features: inference" not in cached and "CV of the candidate feature sets" in cached


def test_console_script_exits_with_the_commands_status_and_output(tmp_path):
    """`python -m transferzoo` (what the console script runs) exits right after the command
    (os._exit) and loses nothing it printed."""
    missing = tmp_path / "missing"
    p = subprocess.run([sys.executable, "-m", "transferzoo", "plan", str(missing)], capture_output=True, text=True)
    assert p.returncode == 2 and "error:" in p.stderr and str(missing) in p.stderr
    p = subprocess.run([sys.executable, "-m", "transferzoo", "models"], capture_output=True, text=True)
    assert p.returncode == 0 and "efficientnet_lite0" in p.stdout


def test_finetuning_eta():
    # half of the first epoch in 10 s: 10 s more for it, then 2 epochs at 20 s
    assert run_seconds_left(10.0, 5, 10, 2, []) == pytest.approx(50.0)
    # once epochs have been timed (evaluation included) they set the pace of the rest
    assert run_seconds_left(10.0, 5, 10, 2, [30.0, 34.0]) == pytest.approx(10.0 + 64.0)
    assert [fmt_seconds(s) for s in (0.4, 12, 245, 3720)] == ["0s", "12s", "4m05s", "1h02m"]


def test_a_run_on_cached_features_imports_neither_torch_nor_timm(digits_dir, tmp_path):
    """`fit --strategy auto` (plan, audit, CV, kNN, model file) on cached features and a cached
    backbone runs on numpy and safetensors alone: torch's import is 1-2.5 s of a 3-7 s run here,
    scipy.optimize's 0.5-0.65 s (the solver is numpy's since 2026-12-07). The first run (features
    computed, ONNX engine exported) loads torch and timm."""
    conf = tmp_path / "fast.yaml"
    conf.write_text("probe: {cv_folds: 2, cv_repeats: 1, lambdas: [0.1, 1.0]}\n")
    code = (
        "import sys, json; from transferzoo.cli import main; "
        f"rc = main(['fit', {str(digits_dir)!r}, '--strategy', 'auto', '--config', {str(conf)!r}, "
        f"'--cache-dir', {str(tmp_path / 'c')!r}, '--out', sys.argv[1], '--no-progress']); "
        "print(json.dumps([rc, 'torch' in sys.modules, 'timm' in sys.modules, 'scipy' in sys.modules]))"
    )
    env = {**__import__("os").environ, "TRANSFERZOO_CACHE": str(tmp_path / "zc")}

    def run(out):
        p = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        return __import__("json").loads(p.stdout.strip().splitlines()[-1])

    assert run(tmp_path / "r1")[:3] == [0, True, True]
    assert run(tmp_path / "r2") == [0, False, False, False]
    # the model written without torch is the one a torch run wrote, byte for byte
    assert (tmp_path / "r1" / "model.safetensors").read_bytes() == (tmp_path / "r2" / "model.safetensors").read_bytes()
