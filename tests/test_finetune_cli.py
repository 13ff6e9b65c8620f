"""The finetuning CLI: `lr-find`, `fit --strategy partial|full` (through transferzoo.cli.main),
including the errors a user can act on; DDP with 2 CPU processes under torchrun."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_data import write_digits

from transferzoo.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--image-size", "64", "--views", "1", "--train-batch-size", "16", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("digits"), per_class=24, classes=5)


def test_lr_find_cli_suggests_a_learning_rate_and_plots(digits, tmp_path, capsys):
    out = tmp_path / "lrf"
    rc = main(
        [
            "lr-find",
            str(digits),
            "--steps",
            "30",
            "--out",
            str(out),
            "--json",
            *[a for a in SMALL if a != "--no-progress"],
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert 1e-6 < res["suggestion"] < 1.0 and res["steps"] >= 10
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads((out / "lr_find.json").read_text())
    assert all(math.isfinite(l) for l in curve["losses"][:-1])
    assert curve["lrs"] == sorted(curve["lrs"])
    assert not (out / "cache").exists()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["lr-find", "{data}", "--start-lr", "0"], "--start-lr"),
        (["lr-find", "/nonexistent/folder"], "does not exist"),
        (["fit", "{data}", "--strategy", "partial", "--epochs", "0"], "--epochs: expected >= 1, got 0"),
        (
            ["fit", "{data}", "--strategy", "partial", "--warmup-epochs", "7"],
            "--warmup-epochs: must be below epochs (6), got 7.0",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(digits, argv, match, capsys):
    rc = main([a.replace("{data}", str(digits)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and match in err and "Traceback" not in err


def test_flag_choices_come_from_the_settings(digits, capsys):
    with pytest.raises(SystemExit) as e:  # argparse refuses it, listing the choices FinetuneConfig declares
        main(["fit", str(digits), "--strategy", "partial", "--optimizer", "lion"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'lion'" in err and "'adamw'" in err


def test_divergence_stops_fit_with_a_clear_message(digits, tmp_path, capsys):
    rc = main(
        [
            "fit",
            str(digits),
            "--strategy",
            "partial",
            "--optimizer",
            "sgd",
            "--lr",
            "9",
            "--epochs",
            "3",
            "--warmup-epochs",
            "0",
            "--label-smoothing",
            "0",
            "--out",
            str(tmp_path / "run"),
            *SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "diverged" in err and "Lower the learning rate" in err
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.slow
def test_fit_partial_cli_writes_a_run_with_curves(digits, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["fit", str(digits), "--strategy", "partial", "--epochs", "4", "--out", str(run), "--json", *SMALL])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["strategy"] == "partial" and s["val_accuracy"] > 0.5  # 5 classes: chance 0.2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert (run / "curves.png").exists() and "## Training" in (run / "report.md").read_text()
    from transferzoo.transfer.config import load_config

    cfg = load_config(run / "config.yaml")  # the resolved config reloads with --config
    assert cfg.strategy == "partial" and cfg.finetune.views == 1 and cfg.finetune.epochs == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["partial", "full"])
def test_ddp_two_cpu_processes_under_torchrun(digits, tmp_path, strategy):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "transferzoo",
        "fit",
        str(digits),
        "--strategy",
        strategy,
        "--epochs",
        "4",
        "--out",
        str(run),
        "--json",
        *SMALL,
    ]
    if strategy == "full":
        cmd += ["--image-size", "48"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((run / "metrics.json").read_text())
    assert s["world_size"] == 2 and s["strategy"] == strategy
    assert s["val_accuracy"] > 0.4, s["val_accuracy"]  # 5 classes: chance 0.2
    hist = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 4 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    # both ranks ran (each printed its JSON summary), only rank 0 wrote the run directory
    assert p.stdout.count('"world_size": 2') == 2


@pytest.mark.slow
def test_search_and_overfit_check(digits, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "fit",
            str(digits),
            "--strategy",
            "partial",
            "--epochs",
            "2",
            "--search",
            "3",
            "--overfit-check",
            "10",
            "--out",
            str(run),
            "--json",
            *SMALL,
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    trials = s["search"]
    assert len(trials) == 3 and len({t["lr"] for t in trials}) == 3
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["val_loss"]))
    assert s["lr"] == pytest.approx(best["lr"]) and s["weight_decay"] == pytest.approx(best["weight_decay"])
    assert s["overfit_check"]["passed"] and s["overfit_check"]["images"] == 10
    report = (run / "report.md").read_text()
    assert "Random search" in report and "overfit check on 10 images" in report
