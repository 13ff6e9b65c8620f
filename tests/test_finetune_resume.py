"""`--resume` after a real `kill -9`: the resumed run ends with exactly the metrics and weights of an
uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_data import write_digits

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 12
COMMAND = [
    sys.executable,
    "-m",
    "transferzoo",
    "fit",
    "--strategy",
    "partial",
    "--unfreeze",
    "1",
    "--epochs",
    str(EPOCHS),
    "--views",
    "2",
    "--image-size",
    "64",
    "--train-batch-size",
    "32",
    "--workers",
    "0",
    "--seed",
    "3",
    "--mixup",
    "0.2",
    "--no-progress",
]


def _run(data, out, resume=False, kill_after_epochs=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = COMMAND + [str(data), "--out", str(out)] + (["--resume"] if resume else [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_epochs is None:
        out_text, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out_text
        return out_text
    metrics = Path(out) / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after_epochs:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: " + proc.stdout.read()
    return None


def _records(run_dir):
    rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


@pytest.mark.slow
def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    data = write_digits(tmp_path / "digits", per_class=16, classes=5)
    _run(data, tmp_path / "full")
    _run(data, tmp_path / "killed", kill_after_epochs=3)
    killed_at = len(_records(tmp_path / "killed"))
    assert 3 <= killed_at < EPOCHS and not (tmp_path / "killed" / "run.json").exists()
    log = _run(data, tmp_path / "killed", resume=True)
    assert "resumed after epoch" in log
    a, b = _records(tmp_path / "full"), _records(tmp_path / "killed")
    assert len(a) == len(b) == EPOCHS
    for ra, rb in zip(a, b):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (ra["epoch"], k)
    sa = json.loads((tmp_path / "full" / "metrics.json").read_text())
    sb = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert sa["val_accuracy"] == sb["val_accuracy"] > 0.4  # 5 classes: chance is 0.2
    wa, wb = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "killed" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() <= 1e-6, k
