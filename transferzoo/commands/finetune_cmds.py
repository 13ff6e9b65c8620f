"""lr-find, plus the finetuning flags that `transferzoo fit` shares (`add_finetune_args`,
`train_config_from_args`)."""
from __future__ import annotations

import argparse

from ._common import print_json

ORDER = 25

# flag -> TrainConfig field (type from the dataclass); kept small: the rest go in --config YAML
_FLAGS = {
    "--unfreeze": ("unfreeze", int, "partial: number of top blocks to train (default: the plan's, else 1)"),
    "--epochs": ("epochs", int, "training epochs (default 6)"),
    "--lr": ("lr", float, "base learning rate (default: per optimizer; see `lr-find`)"),
    "--optimizer": ("optimizer", str, "sgd | nesterov | rmsprop | adagrad | adam | adamw (default adamw)"),
    "--schedule": ("schedule", str, "cosine | linear | inverse_sqrt | constant, after linear warmup (default cosine)"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warmup length in epochs (default 1)"),
    "--weight-decay": ("weight_decay", float, "weight decay (default 0.05)"),
    "--layer-decay": ("layer_decay", float, "LR multiplier per layer going down (default 0.75)"),
    "--train-batch-size": ("batch_size", int, "training batch size (default 64)"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing (default 0.1)"),
    "--dropout": ("dropout", float, "dropout before the new head (default 0.2)"),
    "--drop-path": ("drop_path", float, "stochastic depth rate (default 0)"),
    "--mixup": ("mixup", float, "mixup alpha (default 0 = off)"),
    "--cutmix": ("cutmix", float, "cutmix alpha (default 0 = off)"),
    "--random-erasing": ("random_erasing", float, "cutout / random erasing probability (default 0)"),
    "--image-size": ("image_size", int, "input size in pixels (default: the model's)"),
    "--views": ("views", int, "partial: augmented views cached per training image (default 2)"),
    "--patience": ("patience", int, "early stopping patience in epochs (default 0 = off)"),
    "--search": ("search", int, "random search over lr / weight decay with N short trials first"),
    "--overfit-check": ("overfit_check", int, "first check the model can overfit N training images"),
    "--init": ("init", str, "new layers' init: xavier | he (default xavier)"),
    "--workers": ("workers", int, "data loader worker processes (default min(4, CPUs))"),
    "--train-seed": ("seed", int, "training seed (default: the split seed, 0)"),
}


def add_finetune_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    g = p.add_argument_group("finetuning (partial / full)")
    for flag, (dest, typ, help_) in _FLAGS.items():
        if flag not in skip:
            g.add_argument(flag, dest=f"ft_{dest}", type=typ, default=None, metavar=dest.upper(), help=help_)
    if "--no-cache-prefix" not in skip:
        g.add_argument("--no-cache-prefix", dest="ft_cache_prefix", action="store_false", default=None,
                       help="partial: run the frozen prefix every epoch instead of caching its activations")
    if "--resume" not in skip:
        g.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint/")


def finetune_overrides(args) -> dict:
    """The finetuning flags given on the command line, as TrainConfig fields (for `fit`'s config)."""
    over = {dest: getattr(args, f"ft_{dest}", None) for _, (dest, _, _) in _FLAGS.items()}
    over["cache_prefix"] = getattr(args, "ft_cache_prefix", None)
    if getattr(args, "resume", False):
        over["resume"] = True
    return {k: v for k, v in over.items() if v is not None}


def train_config_from_args(args, strategy: str, base: dict | None = None):
    """TrainConfig from a YAML `finetune:` mapping (base) overridden by the CLI flags given."""
    from transferzoo.transfer.train_config import TrainConfig

    return TrainConfig.from_dict(dict(base or {}, strategy=strategy), **finetune_overrides(args))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test: loss against an exponentially rising LR, and a suggestion")
    p.add_argument("data", help="image folder (class sub-folders, optional train/ val/)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--strategy", choices=("partial", "full"), default="partial")
    p.add_argument("--steps", type=int, default=100, help="range-test steps (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--out", default="runs/lr-find", help="folder for lr_find.png and lr_find.json")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--json", action="store_true")
    add_finetune_args(p, skip=("--resume", "--search", "--overfit-check", "--patience", "--epochs"))
    p.set_defaults(func=cmd_lr_find)


def cmd_lr_find(args) -> int:
    from pathlib import Path

    from transferzoo.transfer.data import scan_folder
    from transferzoo.transfer.finetune.finetuner import Finetuner
    from transferzoo.transfer.finetune.lr_find import lr_find, plot_png
    from transferzoo.zoo.fileio import atomic_write, write_json

    if not 0 < args.start_lr < args.end_lr:
        raise ValueError("--start-lr must be > 0 and below --end-lr")
    if args.steps < 5:
        raise ValueError("--steps must be at least 5")
    cfg = train_config_from_args(args, args.strategy, {"checkpoint": False})
    splits = scan_folder(args.data, val_fraction=args.val_fraction, seed=cfg.seed)
    out = Path(args.out)
    ft = Finetuner(splits, args.model, cfg, run_dir=out)
    try:
        res = lr_find(ft, start=args.start_lr, end=args.end_lr, steps=args.steps)
    finally:
        ft.close()
        from transferzoo.transfer.finetune.prefix_cache import remove

        remove(out / "cache")
    atomic_write(out / "lr_find.png", plot_png(res, f"{ft.model_name}, {args.strategy}"))
    write_json(out / "lr_find.json", res.to_dict())
    if args.json:
        d = res.to_dict()
        print_json({"suggestion": d["suggestion"], "min_loss_lr": d["min_loss_lr"], "steps": d["steps"],
                    "plot": str(out / "lr_find.png")})
    else:
        print(f"suggested learning rate: {res.suggestion:.2e} (steepest descent of the loss; "
              f"lowest loss at {res.min_loss_lr:.2e})")
        print(f"plot: {out / 'lr_find.png'}; use it with: transferzoo fit {args.data} --strategy {args.strategy} "
              f"--lr {res.suggestion:.2e}")
    return 0
