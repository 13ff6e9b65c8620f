"""Start-up and time estimates: `fit --profile`, the console script's exit, measured per-image
costs and what a strategy should take, the finetuning ETA. No timing is asserted (load varies):
only that the figures exist, are consistent and add up."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from transferzoo.cli import main
from transferzoo.transfer.config import FeatureConfig
from transferzoo.transfer.features.costs import ImageCosts, measure_costs
from transferzoo.transfer.features.engine import Extractor
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
        "imports: torch, onnxruntime, transfer",
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


def test_measured_costs_are_positive_and_feed_an_estimate(digits_dir, tmp_path):
    paths = sorted(str(p) for p in digits_dir.rglob("*.png"))
    ex = Extractor("efficientnet_lite0", FeatureConfig(cache_dir=str(tmp_path), batch_size=4), progress=False)
    c = measure_costs(ex, paths + [str(tmp_path / "not-an-image.png")], train=True, train_batch=2, repeats=1)
    assert c.images == 4 and c.engine in ("onnxruntime", "torch")
    for v in (c.decode_s, c.features_s, c.train_step_s):
        assert 0 < v < 60 and math.isfinite(v)
    est = c.expected_seconds("partial", num_images=1000, num_train=800, epochs=3)
    assert 0 < est < c.expected_seconds("full", num_images=1000, num_train=800, epochs=30)
    with pytest.raises(ValueError, match="none of the images decodes"):
        measure_costs(ex, [str(tmp_path / "not-an-image.png")])


def test_expected_seconds_counts_what_it_says():
    c = ImageCosts(
        decode_s=0.004, features_s=0.005, train_step_s=0.03, decode_workers=2, threads=2, engine="x", images=8
    )
    # decoding (2 workers: 0.002 s an image) hides behind inference (0.005 s): 1000 images take 5 s
    assert c.extraction_s(1000) == pytest.approx(5.0)
    assert c.expected_seconds("linear", 1000, 800) == pytest.approx(5.0)
    assert c.expected_seconds("auto", 1000, 800, cached_images=1000) == 0
    # full: 2 epochs x 800 x 0.03 + 2 val passes x 200 x 0.005
    assert c.expected_seconds("full", 1000, 800, epochs=2) == pytest.approx(48 + 2.0)
    # partial: the prefix over 2 views, then a quarter of the step per image
    assert c.expected_seconds("partial", 1000, 800, epochs=2, unfreeze_fraction=0.25) == pytest.approx(8 + 12 + 2)
    with pytest.raises(ValueError, match="unknown strategy"):
        c.expected_seconds("lineer", 10, 8)
    with pytest.raises(ValueError, match="train_step_s"):
        ImageCosts(0.1, 0.1, None, 1, 1, "x", 1).expected_seconds("full", 10, 8)


def test_finetuning_eta():
    # half of the first epoch in 10 s: 10 s more for it, then 2 epochs at 20 s
    assert run_seconds_left(10.0, 5, 10, 2, []) == pytest.approx(50.0)
    # once epochs have been timed (evaluation included) they set the pace of the rest
    assert run_seconds_left(10.0, 5, 10, 2, [30.0, 34.0]) == pytest.approx(10.0 + 64.0)
    assert [fmt_seconds(s) for s in (0.4, 12, 245, 3720)] == ["0s", "12s", "4m05s", "1h02m"]
