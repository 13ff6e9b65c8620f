"""The finetuning CLI: `lr-find`, `fit --strategy partial|full` (through transferzoo.cli.main),
including the errors a user can act on; DDP with 2 CPU processes under torchrun."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
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


@pytest.mark.slow
def test_auto_fit_runs_exactly_the_plans_settings_and_flags_override_them(digits, tmp_path, capsys):
    """One source of truth: `plan` prints the settings of the strategy it picks; `fit` under auto
    runs exactly those (its config.yaml says so); a flag or a --config key overrides one and the
    plan keeps it (and lists it as pinned)."""
    from transferzoo.transfer.planner import PLANNED

    cache = ["--cache-dir", str(tmp_path / "features")]
    fast = ["--among", "partial", "--pilot", "off", "--views", "1", "--workers", "0", "--epochs", "2", "--no-progress"]
    assert main(["plan", str(digits), "--json", *cache, *fast]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["strategy"] == "partial" and set(p["settings"]) == set(PLANNED["partial"])
    st = p["settings"]
    # the plan's own choices: 32 px images are finetuned at the model's 224 px (None; no budget asks for
    # less); the blocks it unfreezes; the strategy's resolved lr; the pinned flags as given
    assert st["finetune.image_size"] is None and st["finetune.unfreeze"] == p["unfreeze_blocks"] >= 1
    assert "finetune at the model's 224 px, upscaled" in "\n".join(p["reasons"])
    assert st["finetune.lr"] == 1e-3 and st["finetune.epochs"] == 2 and st["finetune.views"] == 1
    assert "finetune.epochs" in p["pinned"] and "finetune.image_size" not in p["pinned"]
    assert all(k in p["strategies"]["partial"] for k in ("predicted_accuracy", "predicted_seconds"))
    assert "runs with (fit uses exactly these" not in json.dumps(p)  # the text form prints that line

    run = tmp_path / "run"
    assert main(["fit", str(digits), "--out", str(run), "--json", *cache, *fast]) == 0
    s = json.loads(capsys.readouterr().out)
    conf = yaml.safe_load((run / "config.yaml").read_text())
    ran = {k: conf[k.split(".")[0]][k.split(".")[1]] for k in PLANNED["partial"]}
    assert s["strategy"] == conf["strategy"] == "partial" and ran == st  # exactly the printed numbers
    assert s["image_size"] == 224 and s["trained_blocks"] == st["finetune.unfreeze"]
    assert json.loads((run / "plan.json").read_text())["settings"] == st

    # a flag and a --config key override the plan's choices; the rest stays the plan's
    extra = tmp_path / "lr.yaml"
    extra.write_text("finetune: {lr: 0.0005}\n")
    run2 = tmp_path / "run2"
    argv = ["fit", str(digits), "--out", str(run2), "--json", "--config", str(extra), "--image-size", "48"]
    assert main([*argv, *cache, *fast]) == 0
    s2 = json.loads(capsys.readouterr().out)
    conf2 = yaml.safe_load((run2 / "config.yaml").read_text())
    assert conf2["finetune"]["image_size"] == 48 == s2["image_size"] and conf2["finetune"]["lr"] == 5e-4
    plan2 = json.loads((run2 / "plan.json").read_text())
    assert {"finetune.image_size", "finetune.lr"} <= set(plan2["pinned"])
    assert plan2["settings"] == dict(st, **{"finetune.image_size": 48, "finetune.lr": 5e-4})


def test_planned_settings_keep_what_the_user_pinned():
    """The plan's numbers replace only what the user left alone: a pinned key (a flag or a config
    key, even at its default value) and any non-default value stay as given."""
    from transferzoo.transfer.config import FinetuneConfig, FitConfig, pinned_keys
    from transferzoo.transfer.planner import PLANNED, apply_plan, planned_settings

    cfg = FitConfig(finetune=FinetuneConfig(epochs=3))
    pinned = pinned_keys(cfg, {"finetune.image_size"})
    assert pinned == {"finetune.epochs", "finetune.image_size"}
    st = planned_settings("partial", cfg, pinned, 500, unfreeze=4, image_size=64)
    assert set(st) == set(PLANNED["partial"]) and st["finetune.unfreeze"] == 4
    assert st["finetune.image_size"] is None and st["finetune.epochs"] == 3 and st["finetune.lr"] == 1e-3
    full = planned_settings("full", cfg, frozenset(), 500, unfreeze=4, image_size=64)
    assert full["finetune.image_size"] == 64 and full["finetune.lr"] == pytest.approx(1e-3 / 3)
    ran = apply_plan(cfg, {"strategy": "partial", "settings": st})
    assert ran.strategy == "partial" and ran.finetune.unfreeze == 4 and ran.finetune.epochs == 3
    probe = planned_settings("stages", cfg, frozenset(), 500, unfreeze=4, image_size=64)
    assert probe["probe.cv_repeats"] == 2 and len(probe["probe.lambdas"]) == 8


def test_the_finetuning_size_is_the_models_unless_a_budget_needs_less_and_the_pilot_matches_the_full_runs_steps():
    """Image size: the model's own (None), small images upscaled, unless partial at that size is over
    the --budget: then the native short side rounded up to 32 px, never below MIN_IMAGE_SIZE, never
    above the model's. The pilot's batch shrinks with its share of the images, so its epochs take the
    full run's number of optimizer steps (never below MIN_PILOT_BATCH, never above the full run's batch)."""
    from transferzoo.transfer import planner
    from transferzoo.transfer.finetune.pilot import MIN_PILOT_BATCH, pilot_batch

    assert planner.MIN_IMAGE_SIZE == 128
    for native in (25, 32, 64, 100, 150, 210, 500):
        assert planner.image_size_for(native, 224)[0] is None  # no budget to fit: the model's 224 px
    assert "finetune at the model's 224 px, upscaled" in planner.image_size_for(100, 224)[1]

    def small(native):
        return planner.image_size_for(native, 224, over_budget=True)[0]

    assert small(32) == small(64) == small(100) == 128 and small(150) == 160
    assert small(210) is None and small(500) is None  # nothing to save: the model's size
    assert "finetune at 128 px, not 224, to fit the --budget" in planner.image_size_for(100, 224, True)[1]

    assert pilot_batch(64, 600, 1650) == 23  # 27 steps per epoch, the full run's ceil(1650 / 64) = 26
    assert abs(math.ceil(600 / pilot_batch(64, 600, 1650)) - math.ceil(1650 / 64)) <= 1
    assert pilot_batch(64, 600, 600) == 64 and pilot_batch(64, 600, 300) == 64  # never above the run's
    assert pilot_batch(64, 600, 100_000) == MIN_PILOT_BATCH


def test_the_pilot_is_cut_to_a_share_of_partials_predicted_time_or_skipped():
    """The pilot's size comes from the plan's one cost model (predict_seconds): all its images when
    that fits in PILOT_COST_SHARE of partial's predicted time (beyond the fixed set-up both pay), else
    the most that fit (the next image would not), and never below PILOT_MIN_SHARE of them (then it is
    over the cap and the plan skips it)."""
    from transferzoo.transfer import planner
    from transferzoo.transfer.config import FitConfig

    st = planner.planned_settings("partial", FitConfig(), frozenset(), 3000, unfreeze=4, image_size=64)
    cost = {64: {"prefix_forward": 0.004, "forward": 0.004, "forward_backward": 0.012}}
    one_view = dict(st, **{"finetune.views": 1})

    def secs(n):
        return planner.predict_seconds("partial", one_view, n, 300, cost, {}, None)

    for n_train, case in ((20000, "whole"), (1400, "cut"), (800, "skipped")):
        partial = planner.predict_seconds("partial", st, n_train, n_train // 4, cost, {}, None)
        n, t, cap = planner.pilot_size(st, 600, 300, cost, {}, partial)
        fixed = planner.FINETUNE_FIXED_SECONDS  # both runs pay it: the share bounds the rest
        assert cap == pytest.approx(fixed + planner.PILOT_COST_SHARE * (partial - fixed), abs=0.1) and t == secs(n)
        if case == "whole":
            assert n == 600 and t <= cap
        elif case == "cut":
            assert 300 <= n < 600 and secs(n) <= cap < secs(n + 1)
        else:
            assert n == math.ceil(planner.PILOT_MIN_SHARE * 600) and t > cap
    assert planner.pilot_size(st, 600, 300, cost, {}, 20.0, bounded=False)[0] == 600  # --pilot on: all of them

    # the other bound: what the plan's predictions leave within auto's cost target. With it the
    # "skipped" case runs, on the most images that fit it; below the share's cap it changes nothing.
    partial = planner.predict_seconds("partial", st, 800, 200, cost, {}, None)
    share_cap = planner.pilot_size(st, 600, 300, cost, {}, partial)[2]
    spare = (secs(450) + secs(451)) / 2
    n, t, cap = planner.pilot_size(st, 600, 300, cost, {}, partial, spare_seconds=spare)
    assert cap == pytest.approx(spare, abs=0.1) and cap > share_cap and t == secs(n)
    assert 300 < n < 600 and secs(n) <= cap < secs(n + 1)  # the floor was over the share's cap: now 450-odd
    assert planner.pilot_size(st, 600, 300, cost, {}, partial, spare_seconds=share_cap / 2)[2] == share_cap


def test_the_pilots_spare_seconds_keep_auto_within_half_of_trying_everything():
    """pilot_spare_seconds: features + plan + pilot + the costliest strategy a pilot leads to is
    AUTO_COST_SHARE of features + all four strategies, by the plan's predictions."""
    from transferzoo.transfer import planner

    pred = {"linear": 15.0, "stages": 46.0, "partial": 106.0, "full": 289.0}  # flowers200's plan
    spare = planner.pilot_spare_seconds(pred, features_seconds=18.0, plan_seconds=5.0)
    auto = 18.0 + 5.0 + spare + 106.0
    assert auto == pytest.approx(planner.AUTO_COST_SHARE * (18.0 + sum(pred.values())), abs=0.1)
    assert spare == pytest.approx(0.5 * (18 + 456) - 18 - 5 - 106, abs=0.1)  # 108 s
    # where stages is the costliest a pilot can lead to, that is what auto pays after it; full never is
    pred_stages = dict(pred, stages=200.0, partial=50.0)
    assert planner.pilot_spare_seconds(pred_stages, 0.0, 0.0) == pytest.approx(0.5 * 554 - 200, abs=0.1)
    # nothing to spare where partial is predicted above full (eurosat's plan): the share's cap rules
    eurosat = {"linear": 33.2, "stages": 75.6, "partial": 356.5, "full": 309.3}
    assert planner.pilot_spare_seconds(eurosat, features_seconds=38.8, plan_seconds=20.0) < 0


def test_the_pilots_holdout_grows_from_a_quarter_to_a_third_to_reach_the_resolution():
    """A quarter of the training images (at most auto.pilot_holdout); when that measures the probe's
    accuracy more coarsely than PILOT_RESOLUTION, as many as reach it, up to a third (the pilot still
    trains on twice what it is scored on); and pilot_rows holds out that many, stratified."""
    import numpy as np

    from transferzoo.transfer import planner
    from transferzoo.transfer.finetune.pilot import pilot_rows

    R = planner.PILOT_RESOLUTION
    assert planner.holdout_size(20000, 300, 0.9)[0] == 300  # the cap
    n, se = planner.holdout_size(1600, 300, 0.9)
    assert n == 300 and se == pytest.approx(math.sqrt(0.09 / 300))  # a quarter is 400: capped, fine enough
    n, se = planner.holdout_size(800, 300, 0.905)  # flowers200: a quarter, 200, measures it to +-0.0207
    assert n == math.ceil(0.905 * 0.095 / R**2) == 215 and se <= R
    n, se = planner.holdout_size(244, 300, 0.95)  # hymenoptera: even a third (81) is too coarse
    assert n == 81 and se > R
    n, se = planner.holdout_size(244, 300, 1.0)  # fine already: a quarter; never a zero variance, 99 %'s at least
    assert n == 61 and se == pytest.approx(math.sqrt(0.01 * 0.99 / 61))
    assert planner.holdout_size(244, 50, 0.95)[0] == 50  # the user's cap holds while growing too
    y = np.repeat(np.arange(5), 160)
    hold, pil = pilot_rows(y, 215, 600, seed=0)
    assert len(hold) == 215 and len(pil) == 585 and not set(hold) & set(pil)
    assert np.bincount(y[hold]).tolist() == [43] * 5


def test_plan_budget_removes_what_does_not_fit(digits, tmp_path, capsys):
    """--budget removes every strategy predicted to take longer; when nothing fits, the cheapest
    strategy auto may choose is taken and the plan says so. Each strategy comes with its predicted
    accuracy and time."""
    argv = ["plan", str(digits), "--json", "--cache-dir", str(tmp_path / "f"), "--pilot", "off", "--budget", "0.001"]
    assert main([*argv, "--among", "stages", "partial", "full"]) == 0
    p = json.loads(capsys.readouterr().out)
    st = p["strategies"]
    cheapest = min(("stages", "partial", "full"), key=lambda n: st[n]["predicted_seconds"])
    assert p["strategy"] == cheapest and "chosen anyway" in st[cheapest]["why_not"]
    assert not st["full"]["allowed"] and "over the budget" in st["full"]["why_not"]
    assert st["linear"]["why_not"] == "not in auto.among"
    assert st["stages"]["predicted_accuracy"] > 0.2 and st["partial"]["predicted_accuracy"] is None
    assert all(s["predicted_seconds"] > 0 for s in st.values())
    assert st["partial"]["predicted_seconds"] < st["full"]["predicted_seconds"]
    assert "pilot: not run: switched off" in "\n".join(p["reasons"])
    # partial at the model's 224 px is over the budget: the plan finetunes at the 32 px images' 128 px floor
    assert "finetune at 128 px, not 224, to fit the --budget" in "\n".join(p["reasons"])
    pinned = main([*argv, "--among", "partial", "--image-size", "96"])
    p = json.loads(capsys.readouterr().out)
    assert pinned == 0 and p["settings"]["finetune.image_size"] == 96 and "96 px (pinned)" in "\n".join(p["reasons"])


def test_a_forced_pilot_runs_and_its_difference_predicts_partial(digits, tmp_path, capsys):
    """--pilot on: the planned partial recipe really runs on held-out training images (the finetuning
    stack loaded on demand), and the plan's partial accuracy comes from the pilot's paired difference."""
    argv = ["plan", str(digits), "--json", "--cache-dir", str(tmp_path / "f"), "--pilot", "on", "--no-audit"]
    assert main([*argv, "--no-progress"]) == 0
    p = json.loads(capsys.readouterr().out)
    line = next(r for r in p["reasons"] if r.startswith("pilot:"))
    assert re.search(r"pilot: finetune \d\.\d{3} vs probe \d\.\d{3} on the same \d+ held-out training images", line)
    partial = p["strategies"]["partial"]
    assert "pilot" in partial["accuracy_from"] and 0.0 <= partial["predicted_accuracy"] <= 1.0


def test_partial_takes_its_ties_the_table_breaks_the_probes_ties_else_the_cheaper():
    """With a pilot, the highest predicted accuracy decides; within TIE of it partial takes the tie
    (the pilot trained on fewer images than the full run: finetuning's gain grows with the data), a
    tie of the probes goes to the table's choice when it is among them, else to the cheaper; without
    a pilot, the table."""
    from transferzoo.transfer.planner import TIE, decide

    def strategies(partial_acc, stages_acc=0.918, linear_acc=0.905):
        accs = {"linear": linear_acc, "stages": stages_acc, "partial": partial_acc, "full": None}
        secs = {"linear": 26, "stages": 61, "partial": 306, "full": 494}
        return {n: {"predicted_accuracy": accs[n], "predicted_seconds": secs[n], "why_not": None} for n in accs}

    allowed = ["linear", "stages", "partial", "full"]
    pilot = {"finetune_minus_probe": {"difference": 0.003, "standard_error": 0.016, "images": 300}}
    # the suite's flowers64 plan: linear 0.873, stages 0.874, partial 0.878 tie; the table says linear
    s, why = decide(strategies(0.8775, 0.8742, 0.8733), allowed, pilot, "linear", "little data, similar -> linear")
    assert s == "partial" and "a tie of linear, stages, partial (within 0.005), which partial takes" in why
    # partial a little below the top still takes the tie (eurosat200: stages 0.936, partial 0.933)
    assert decide(strategies(0.933, 0.9363), allowed, pilot, "stages", "x")[0] == "partial"
    # a tie of the probes only: the table's choice among them, else the cheaper
    probes_tie = strategies(0.85, 0.910, 0.908)
    assert decide(probes_tie, allowed, pilot, "stages", "x")[0] == "stages"
    s, why = decide(probes_tie, allowed, pilot, "partial", "x")
    assert s == "linear" and "the cheaper wins" in why
    # outside the tie the prediction decides, whatever the table says
    s, why = decide(strategies(0.918 + 2 * TIE), allowed, pilot, "linear", "x")
    assert s == "partial" and why.endswith(f"no other within {TIE}")
    assert decide(strategies(0.8), allowed, pilot, "partial", "x")[0] == "stages"
    # just inside / outside the tie, partial below the top
    assert decide(strategies(0.918 - 0.9 * TIE), allowed, pilot, "stages", "x")[0] == "partial"
    assert decide(strategies(0.918 - 1.1 * TIE), allowed, pilot, "linear", "x")[0] == "stages"
    # no pilot: the table
    assert decide(strategies(None), allowed, None, "stages", "little data, different -> stages")[0] == "stages"


def test_partials_predicted_epoch_cost_is_the_measured_step_of_the_blocks_it_trains(tmp_path, monkeypatch):
    """measured_top_step times a training step of the top k blocks on the prefix's output (kept as a
    record: the second call builds nothing), and predict_seconds uses it for partial's epochs where
    it was measured, a quarter of a whole-model step where it was not."""
    from transferzoo.transfer import planner
    from transferzoo.transfer.config import FitConfig
    from transferzoo.zoo import assembly as za

    monkeypatch.setenv("TRANSFERZOO_CACHE", str(tmp_path))
    one = planner.measured_top_step("efficientnet_lite0", [64], 1, 2)
    four = planner.measured_top_step("efficientnet_lite0", [64], 4, 2)
    assert 0 < one[64] and four[64] > 2 * one[64]  # 4 of 8 blocks cost several times the top one
    monkeypatch.setattr(za, "build", lambda *a, **k: pytest.fail("the stored record was not used"))
    assert planner.measured_top_step("efficientnet_lite0", [64], 4, 2) == four

    st = planner.planned_settings("partial", FitConfig(), frozenset(), 1000, unfreeze=4, image_size=64)
    c = {"prefix_forward": 0.0015, "forward": 0.004, "forward_backward": 0.012}  # the prefix runs in onnxruntime
    measured = {64: dict(c, top_step={"4": 0.02})}
    epochs, views = st["finetune.epochs"], st["finetune.views"]
    prefix = 0.0015 * (1000 * views + 200)
    fixed = planner.FINETUNE_FIXED_SECONDS
    got = planner.predict_seconds("partial", st, 1000, 200, measured, {}, None)
    assert got == pytest.approx(prefix + 0.02 * epochs * 1000 + fixed, abs=0.1)
    fallback = planner.predict_seconds("partial", st, 1000, 200, {64: c}, {}, None)
    assert fallback == pytest.approx(prefix + 0.012 * 0.25 * epochs * 1000 + fixed, abs=0.1)


def test_torch_work_is_calibrated_by_onnxruntime_on_one_thread_not_by_its_lead_over_torch(monkeypatch, tmp_path):
    """forward_cost scales partial's prefix (onnxruntime, like the feature pass) by the pass's seconds
    per image, and torch's work (training steps, full's forward passes) by the pass's speed-up over
    onnxruntime on one thread, measured once on the cached feature model and kept as a record: one
    scale for both had carried onnxruntime's per-thread lead over torch into full's estimate (3.95x low)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from transferzoo.transfer import planner
    from transferzoo.transfer.features.engine import FeatureSet

    monkeypatch.setenv("TRANSFERZOO_CACHE", str(tmp_path / "cache"))
    torch1 = 0.030  # torch, one thread, per image
    monkeypatch.setattr(planner, "measured_forward", lambda m, sizes, b: {s: torch1 for s in sizes})
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "features.onnx")
    n = 100
    timings = {"compute_seconds": 1.5, "engine_seconds": 0.5, "infer_seconds": 0.8, "cached_images": 0}
    fs = FeatureSet(
        [f"{i}.jpg" for i in range(n)],
        np.ones(n, bool),
        {},
        None,
        engine="onnxruntime",
        timings=timings,
        cache={"dir": str(tmp_path)},
    )
    cost = planner.forward_cost("efficientnet_lite0", [224], fs)[224]
    onnx1 = planner.measured_onnx_forward("efficientnet_lite0", tmp_path / "features.onnx", 224)
    assert onnx1 > 0 and len(list((tmp_path / "cache" / "costs").glob("*.onnx.json"))) == 1
    assert cost["prefix_forward"] == pytest.approx((1.5 - 0.5) / n, abs=1e-5)  # the pass as run, the export out
    assert cost["forward"] == pytest.approx(torch1 * (0.8 / n) / onnx1, rel=1e-3)
    assert cost["forward_backward"] == pytest.approx(planner.FORWARD_BACKWARD * cost["forward"], rel=1e-3)
    (tmp_path / "features.onnx").unlink()  # the record is reused: nothing left to measure
    assert planner.measured_onnx_forward("efficientnet_lite0", tmp_path / "features.onnx", 224) == onnx1

    # a torch feature pass is torch's own speed-up: one scale; no pass: one thread over the cores
    fs.engine = "torch"
    assert planner.forward_cost("efficientnet_lite0", [224], fs)[224]["forward"] == pytest.approx(1.0 / n, abs=1e-5)
    cores = os.cpu_count() or 1
    none = planner.forward_cost("efficientnet_lite0", [224], None)[224]
    assert none["forward"] == none["prefix_forward"] == pytest.approx(torch1 / cores, abs=1e-5)
    # every feature cached: no pass to calibrate by, but the prefix still runs at onnxruntime's speed
    fs.engine, fs.timings = "cache", {"cached_images": n}
    cached = planner.forward_cost("efficientnet_lite0", [224], fs)[224]
    assert cached["forward"] == pytest.approx(torch1 / cores, abs=1e-5)
    assert cached["prefix_forward"] == pytest.approx(onnx1 / cores, abs=1e-5)


def test_a_whole_model_step_costs_at_least_the_prefix_forward_and_the_top_blocks_step(monkeypatch):
    """forward_cost's whole-model step (full's epochs) is FORWARD_BACKWARD forward passes, or the
    forward pass plus the top blocks' measured step where that is more, so the plan never predicts
    full faster than partial training a part of the same model (CI once saw 40.0 s against 40.2 s)."""
    from transferzoo.transfer import planner
    from transferzoo.transfer.config import FitConfig

    f = 0.004
    monkeypatch.setattr(planner, "measured_forward", lambda m, sizes, b: {s: f for s in sizes})
    for top in (0.002, 0.02):  # below and above (FORWARD_BACKWARD - 1) forward passes
        monkeypatch.setattr(planner, "measured_top_step", lambda m, sizes, k, b, top=top: {s: top for s in sizes})
        cost = planner.forward_cost("efficientnet_lite0", [224], None, unfreeze={4})
        scale = 1.0 / (os.cpu_count() or 1)
        want = max(planner.FORWARD_BACKWARD * f, f + top) * scale
        assert cost[224]["forward_backward"] == pytest.approx(want, abs=1e-5)
        st = {n: planner.planned_settings(n, FitConfig(), frozenset(), 1000, 4, None) for n in ("partial", "full")}
        partial, full = (planner.predict_seconds(n, st[n], 1000, 250, cost, {}, None) for n in ("partial", "full"))
        assert partial < full
