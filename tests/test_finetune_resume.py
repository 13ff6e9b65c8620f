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


# --- kills at several points, damaged files between the kill and the resume ------------------------------
SHORT = 4  # epochs of the runs below


def _short(data, out, *extra):
    cmd = [*COMMAND, str(data), "--out", str(out), *extra]
    cmd[cmd.index("--epochs") + 1] = str(SHORT)
    return cmd


def _kill_at(cmd, line_start: str, delay: float = 0.0) -> str:
    """Run `cmd`, SIGKILL it when a log line starting with `line_start` appears (after `delay` s)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(line_start):
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed:\n" + "".join(seen)
    return "".join(seen)


def _finish(cmd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _same_run(a: Path, b: Path):
    from safetensors.torch import load_file

    ra, rb = _records(a), _records(b)
    assert len(ra) == len(rb) == SHORT
    assert ra == rb  # bit-identical metrics, every epoch
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not (wa[k] == wb[k]).all()]
    assert not different, f"{len(different)} of {len(wa)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_ref")
    data = write_digits(root / "digits", per_class=16, classes=5)
    r = _finish(_short(data, root / "full"))
    assert r.returncode == 0, r.stdout + r.stderr
    return data, root / "full"


KILL_POINTS = {
    # (log line that triggers the kill, delay after it, damage done before resuming)
    "while-building-the-prefix-cache": ("caching the frozen prefix", 1.0, None),
    "prefix-cache-built-no-checkpoint-yet": ("prefix cache:", 0.0, None),
    "after-epoch-1-then-prefix-cache-zeroed": ("epoch 1/", 0.0, "zero"),
    "after-epoch-3": ("epoch 3/", 0.0, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_resume_is_bit_identical_from_a_kill_at_any_point(reference, tmp_path, point):
    data, full = reference
    trigger, delay, damage = KILL_POINTS[point]
    out = tmp_path / "run"
    _kill_at(_short(data, out), trigger, delay)
    if point == "prefix-cache-built-no-checkpoint-yet":
        assert not (out / "checkpoint" / "last.pt").exists(), "the kill came too late for this point"
    if damage == "zero":  # a quarter of each cache zeroed: once a different model / wrong metrics, exit 0
        for f in (out / "cache").glob("prefix-*/*.f16"):
            raw = bytearray(f.read_bytes())
            raw[: len(raw) // 4] = bytes(len(raw) // 4)
            f.write_bytes(bytes(raw))
    r = _finish(_short(data, out, "--resume"))
    assert r.returncode == 0, r.stdout + r.stderr
    if damage == "zero":
        assert "computing it again" in r.stdout + r.stderr
    _same_run(full, out)


@pytest.mark.slow
def test_a_checkpoint_with_a_flipped_bit_is_refused_by_resume(reference, tmp_path):
    data, _ = reference
    out = tmp_path / "run"
    _kill_at(_short(data, out), "epoch 3/")
    last = out / "checkpoint" / "last.pt"
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    last.write_bytes(bytes(raw))
    r = _finish(_short(data, out, "--resume"))
    assert r.returncode != 0 and str(last) in r.stdout + r.stderr and "damaged" in r.stdout + r.stderr
