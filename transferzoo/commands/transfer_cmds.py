"""plan, fit, lr-find: from a folder of labelled images to a trained model (transfer learning)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ._common import SettingFlags, print_json, process_seconds, stderr_log

# finetuning flags -> FinetuneConfig fields; kept small: the rest go in --config YAML
_FINETUNE_FLAGS = {
    "--unfreeze": ("unfreeze", "partial: number of top blocks to train (default: the plan's, else 1)"),
    "--epochs": ("epochs", "training epochs (default 6)"),
    "--lr": ("lr", "base learning rate (default: per optimizer; see `lr-find`)"),
    "--optimizer": ("optimizer", "default adamw"),
    "--schedule": ("schedule", "after linear warmup (default cosine)"),
    "--warmup-epochs": ("warmup_epochs", "linear warmup length in epochs (default 1)"),
    "--weight-decay": ("weight_decay", "weight decay (default 0.05)"),
    "--layer-decay": ("layer_decay", "LR multiplier per layer going down (default 0.75)"),
    "--train-batch-size": ("batch_size", "training batch size (default 64)"),
    "--label-smoothing": ("label_smoothing", "label smoothing (default 0.1)"),
    "--dropout": ("dropout", "dropout before the new head (default 0.2)"),
    "--drop-path": ("drop_path", "stochastic depth rate (default 0)"),
    "--mixup": ("mixup", "mixup alpha (default 0 = off)"),
    "--cutmix": ("cutmix", "cutmix alpha (default 0 = off)"),
    "--random-erasing": ("random_erasing", "cutout / random erasing probability (default 0)"),
    "--image-size": ("image_size", "input size in pixels (default: the model's)"),
    "--views": ("views", "partial: augmented views cached per training image (default 2)"),
    "--patience": ("patience", "early stopping patience in epochs (default 0 = off)"),
    "--search": ("search", "random search over lr / weight decay with N short trials first"),
    "--overfit-check": ("overfit_check", "first check the model can overfit N training images"),
    "--init": ("init", "new layers' init (default xavier)"),
    "--workers": ("workers", "data loader worker processes (default min(4, CPUs))"),
    "--train-seed": ("seed", "training seed (default: the split seed, 0)"),
}


def _data_flags(p: argparse.ArgumentParser, flags: SettingFlags) -> None:
    p.add_argument("data", help="image folder: <class>/<images>, or train/<class>/... + val/<class>/...")
    p.add_argument("--config", metavar="FILE.yaml", help="settings file (see transfer/config.py); flags override it")
    flags.add(p, "--model", "model", "zoo backbone (default efficientnet_lite0)")
    flags.add(p, "--weights", "weights", "explicit pretrained weight file")
    flags.add(p, "--val-fraction", "data.val_fraction", "val share when the folder has no train/val split (0.2)")
    flags.add(p, "--test-fraction", "data.test_fraction", "test share split off as well (0)")
    flags.add(p, "--seed", "data.seed", "split / CV seed (0)")
    flags.add(p, "--strict", "data.strict", "unreadable or non-image files are an error")
    flags.add(p, "--engine", "features.engine", "feature engine (auto: onnxruntime if it verifies)")
    flags.add(p, "--device", "features.device", "feature extraction device (auto: CUDA if visible, else CPU)")
    flags.add(p, "--batch-size", "features.batch_size", "feature extraction batch size (8)")
    flags.add(p, "--threads", "features.threads", "CPU threads (default: all cores)")
    flags.add(
        p,
        "--cache-dir",
        "features.cache_dir",
        "feature cache (default ~/.cache/transferzoo/features, or $TRANSFERZOO_CACHE)",
    )
    flags.add(p, "--cache-key", "features.cache_key", "identify images by content hash or by path+size+mtime")
    flags.add(p, "--no-progress", "progress", "no progress bars", off=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--profile", action="store_true", help="print where the seconds went (start-up, imports, ... write) to stderr"
    )


def _finetune_flags(p: argparse.ArgumentParser, flags: SettingFlags, skip: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("finetuning (partial / full)")
    for flag, (key, help_) in _FINETUNE_FLAGS.items():
        if flag not in skip:
            flags.add(g, flag, f"finetune.{key}", help_, metavar=key.upper())
    flags.add(
        g,
        "--no-cache-prefix",
        "finetune.cache_prefix",
        "partial: run the frozen prefix every epoch instead of caching its activations",
        off=True,
    )


def _training_flags(p: argparse.ArgumentParser, flags: SettingFlags) -> None:
    """What a strategy runs with (plan and fit): auto's choices, the probe, finetuning."""
    g = p.add_argument_group("auto (how the plan decides)")
    flags.add(g, "--budget", "auto.budget_minutes", "minutes: strategies predicted to take longer are not chosen")
    flags.add(g, "--among", "auto.among", "strategies auto may choose (default all four)")
    flags.add(
        g,
        "--pilot",
        "auto.pilot",
        "pilot finetune vs probe on held-out training images (auto: when it can tell the two apart)",
    )
    flags.add(p, "--head", "probe.head", "probe head (linear)")
    flags.add(p, "--hidden", "probe.hidden", "mlp head width (256)")
    flags.add(p, "--activation", "probe.activation", "mlp activation (relu)")
    flags.add(p, "--loss", "probe.loss", "softmax cross-entropy or multiclass SVM hinge (ce)")
    flags.add(p, "--penalty", "probe.penalty", "weight penalty (l2)")
    flags.add(p, "--l1-ratio", "probe.l1_ratio", "elasticnet: share of L1 (0.5)")
    flags.add(p, "--lambdas", "probe.lambdas", "penalty strengths tried by CV (default: log grid 1e-4..10)")
    flags.add(p, "--flip-augment", "features.flip_augment", "also train on horizontally flipped images")
    flags.add(
        p,
        "--no-audit",
        "audit.enabled",
        "skip the data audit (duplicates, label errors, outliers; in report.md)",
        off=True,
    )
    flags.add(
        p, "--exclude", "audit.exclude", "leave out the images listed in FILE (`audit --exclude-list` writes one)"
    )
    flags.add(p, "--exclude-flagged", "audit.exclude_flagged", "leave out what the data audit flags (see `audit`)")
    _finetune_flags(p, flags)


def register(sub: argparse._SubParsersAction) -> None:
    from transferzoo.transfer.config import FitConfig

    global FIT_FLAGS
    FIT_FLAGS = flags = SettingFlags(FitConfig)
    p = sub.add_parser("plan", help="measure a dataset and say which transfer strategy fits it, with the evidence")
    _data_flags(p, flags)
    _training_flags(p, flags)  # the same as fit's: the plan prints the settings fit will run with
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "fit", help="train a classifier on an image folder (transfer learning) and write a run directory"
    )
    _data_flags(p, flags)
    flags.add(p, "--strategy", "strategy", "(auto: as the plan says)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to write (default runs/<data folder name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted finetuning run from its checkpoint/")
    _training_flags(p, flags)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "lr-find", help="learning-rate range test: loss against an exponentially rising LR, and a suggestion"
    )
    _data_flags(p, flags)
    p.add_argument("--strategy", choices=("partial", "full"), default="partial")
    p.add_argument("--steps", type=int, default=100, help="range-test steps (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--out", default="runs/lr-find", help="folder for lr_find.png and lr_find.json")
    _finetune_flags(p, flags, skip=("--search", "--overfit-check", "--patience", "--epochs"))
    p.set_defaults(func=cmd_lr_find)


FIT_FLAGS: SettingFlags  # bound in register(): plan, fit and lr-find share these flags


def build_config(args):
    from transferzoo.transfer.config import FitConfig, load_config

    base = load_config(args.config) if args.config else FitConfig()
    return FIT_FLAGS.apply(base, args)


# (label, timings key, or a nested key "features.<key>") in the order the phases run
_PHASES = (
    ("scan the folder", "scan_seconds"),
    ("features: hash files, look up the cache", "features.keys_seconds"),
    ("features: build + check the engine (or load it)", "features.engine_seconds"),
    ("features: inference", "features.infer_seconds"),
    ("features: waiting for JPEG decoding", "features.decode_wait_seconds"),
    ("features: write the cache", "features.write_seconds"),
    ("plan: stage probes (CV) + kNN", "plan_seconds"),
    ("CV of the candidate feature sets", "cv_seconds"),
    ("final fit + kNN", "fit_seconds"),
    ("model: build + parity check on images", "model_seconds"),
    ("write the run directory", "write_seconds"),
)


def print_profile(timings: dict, startup: float | None, imports: float, file=None) -> None:
    """The phases of a `fit` / `plan` process, in seconds (`--profile`), on stderr."""
    file = file or sys.stderr
    feats = timings.get("features") or {}
    rows: list[tuple[str, float | None]] = [("start-up: interpreter + command line", startup)]
    rows.append(("imports: the transfer stack (numpy, onnxruntime, ...)", imports))
    for label, key in _PHASES:
        v = feats.get(key.split(".", 1)[1]) if key.startswith("features.") else timings.get(key)
        rows.append((label, v))
        if key == "scan_seconds" and "features_seconds" in timings and "total_seconds" in feats:
            # the rest of feature extraction: model info, opening the cache, gathering the rows
            rows.append(
                ("features: set-up (model info, cache) + gather", timings["features_seconds"] - feats["total_seconds"])
            )
    total = process_seconds()
    accounted = sum(v for _, v in rows if v)
    if total is not None:
        rows.append(("other (lazy imports, report)", max(0.0, total - accounted)))
    print("profile (seconds):", file=file)
    for label, v in rows:
        if v is not None:
            print(f"  {label:<52s} {v:7.2f}", file=file)
    print(
        f"  {'total (process, as timed from the shell)':<52s} {total if total is not None else accounted:7.2f}",
        file=file,
    )


def explicit_keys(args) -> set[str]:
    """Dotted settings the user gave: the --config file's keys and the flags on the command line
    (auto keeps these even where they equal a default)."""
    from transferzoo.zoo.config import flatten, read_yaml

    keys = set(FIT_FLAGS.values(args))
    if args.config:
        keys |= set(flatten(read_yaml(args.config)))
    return keys


def cmd_plan(args) -> int:
    startup, t = process_seconds(), time.perf_counter()
    from transferzoo.transfer.planner import format_plan
    from transferzoo.transfer.strategies import plan

    imports = time.perf_counter() - t
    cfg = build_config(args)
    p = plan(args.data, cfg, log=stderr_log(args.json), pinned=explicit_keys(args))
    if args.profile:
        print_profile(p["timings"], startup, imports)
    if args.json:
        print_json(p)
    else:
        print(format_plan(p))
        if p.get("audit"):
            print("data audit (details: transferzoo audit DATA):")
            print("\n".join("  " + line for line in p["audit"]["lines"]))
    return 0


def cmd_fit(args) -> int:
    startup, t = process_seconds(), time.perf_counter()
    from transferzoo.transfer.strategies import fit

    imports = time.perf_counter() - t
    cfg = build_config(args)
    out = args.out or str(Path("runs") / Path(args.data).resolve().name)
    res = fit(args.data, cfg, out=out, log=stderr_log(args.json), resume=args.resume, pinned=explicit_keys(args))
    s = res.summary
    if args.profile:
        print_profile(s.get("timings") or {}, startup, imports)
    if args.json:
        print_json({k: v for k, v in s.items() if k not in ("confusion", "cv")} | {"run_dir": str(res.run_dir)})
    else:
        print(
            f"strategy {s['strategy']}"
            + (f" (plan: {s['planned_strategy']})" if s.get("planned_strategy") != s["strategy"] else "")
            + f", model {s['model']}"
            + (f", features {s['feature_set']}" if s.get("feature_set") else "")
        )
        print(
            f"val accuracy {s['val_accuracy']:.4f} on {s['num_val']} images ({s['num_classes']} classes, "
            f"{s['num_train']} training images) in {s['wall_seconds']:.1f} s"
        )
        if s.get("knn"):
            print(
                f"kNN baseline ({s['knn']['metric']}, k={s['knn']['k']}): val accuracy {s['knn']['val_accuracy']:.4f}"
            )
        if s.get("num_excluded"):
            print(f"left out {s['num_excluded']} image(s): {res.run_dir}/excluded.tsv")
        print(f"run directory: {res.run_dir}")
    return 0


def cmd_lr_find(args) -> int:
    from transferzoo.transfer.data import scan_folder
    from transferzoo.transfer.finetune import prefix_cache
    from transferzoo.transfer.finetune.finetuner import Finetuner
    from transferzoo.transfer.finetune.lr_find import lr_find, plot_png
    from transferzoo.zoo.fileio import atomic_write, write_json

    if not 0 < args.start_lr < args.end_lr:
        raise ValueError("--start-lr must be > 0 and below --end-lr")
    if args.steps < 5:
        raise ValueError("--steps must be at least 5")
    cfg = build_config(args)
    ft_cfg = replace(cfg.finetune.resolved(args.strategy, cfg.data.seed), checkpoint=False)
    splits = scan_folder(args.data, val_fraction=cfg.data.val_fraction, seed=cfg.data.seed)
    out = Path(args.out)
    ft = Finetuner(
        splits,
        cfg.model,
        args.strategy,
        ft_cfg,
        run_dir=out,
        weights=cfg.weights,
        progress=cfg.progress,
        log=stderr_log(args.json),
    )
    try:
        res = lr_find(ft, start=args.start_lr, end=args.end_lr, steps=args.steps)
    finally:
        ft.close()
        prefix_cache.remove(out / "cache")
    atomic_write(out / "lr_find.png", plot_png(res, f"{ft.model_name}, {args.strategy}"))
    write_json(out / "lr_find.json", res.to_dict())
    if args.json:
        d = res.to_dict()
        print_json(
            {
                "suggestion": d["suggestion"],
                "min_loss_lr": d["min_loss_lr"],
                "steps": d["steps"],
                "plot": str(out / "lr_find.png"),
            }
        )
    else:
        print(
            f"suggested learning rate: {res.suggestion:.2e} (steepest descent of the loss; "
            f"lowest loss at {res.min_loss_lr:.2e})"
        )
        print(
            f"plot: {out / 'lr_find.png'}; use it with: transferzoo fit {args.data} --strategy {args.strategy} "
            f"--lr {res.suggestion:.2e}"
        )
    return 0
