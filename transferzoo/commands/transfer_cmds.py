"""plan, fit: from a folder of labelled images to a trained model (transfer learning)."""
from __future__ import annotations

import argparse
import sys

from ._common import print_json

ORDER = 20


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="image folder: <class>/<images>, or train/<class>/... + val/<class>/...")
    p.add_argument("--model", help="zoo backbone (default efficientnet_lite0)")
    p.add_argument("--config", metavar="FILE.yaml", help="settings file (see transfer/config.py); flags override it")
    p.add_argument("--weights", help="explicit pretrained weight file")
    p.add_argument("--val-fraction", type=float, help="val share when the folder has no train/val split (0.2)")
    p.add_argument("--test-fraction", type=float, help="test share split off as well (0)")
    p.add_argument("--seed", type=int, help="split / CV seed (0)")
    p.add_argument("--strict", action="store_true", default=None, help="unreadable or non-image files are an error")
    p.add_argument("--engine", choices=("auto", "onnxruntime", "torch"), help="feature engine (auto: onnxruntime if it verifies)")
    p.add_argument("--batch-size", type=int, help="feature extraction batch size (8)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--cache-dir", help="feature cache (default ~/.cache/transferzoo/features, or $TRANSFERZOO_CACHE)")
    p.add_argument("--cache-key", choices=("content", "stat"), help="identify images by content hash or by path+size+mtime")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="measure a dataset and say which transfer strategy fits it, with the evidence")
    _common(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("fit", help="train a classifier on an image folder (transfer learning) and write a run directory")
    _common(p)
    p.add_argument("--strategy", choices=("auto", "linear", "stages", "partial", "full"), help="(auto: as the plan says)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to write (default runs/<data folder name>)")
    p.add_argument("--head", choices=("linear", "mlp"), help="probe head (linear)")
    p.add_argument("--hidden", type=int, help="mlp head width (256)")
    p.add_argument("--activation", choices=("relu", "leaky_relu", "elu", "gelu"), help="mlp activation (relu)")
    p.add_argument("--loss", choices=("ce", "hinge"), help="softmax cross-entropy or multiclass SVM hinge (ce)")
    p.add_argument("--penalty", choices=("l2", "l1", "elasticnet"), help="weight penalty (l2)")
    p.add_argument("--l1-ratio", type=float, help="elasticnet: share of L1 (0.5)")
    p.add_argument("--lambdas", type=float, nargs="+", help="penalty strengths tried by CV (default: log grid 1e-4..10)")
    p.add_argument("--flip-augment", action="store_true", default=None, help="also train on horizontally flipped images")
    from .finetune_cmds import add_finetune_args

    add_finetune_args(p)
    p.set_defaults(func=cmd_fit)


_FLAGS = {
    "model": "model", "weights": "weights", "strategy": "strategy",
    "val_fraction": "data.val_fraction", "test_fraction": "data.test_fraction", "seed": "data.seed", "strict": "data.strict",
    "engine": "features.engine", "batch_size": "features.batch_size", "threads": "features.threads",
    "cache_dir": "features.cache_dir", "cache_key": "features.cache_key", "flip_augment": "features.flip_augment",
    "head": "probe.head", "hidden": "probe.hidden", "activation": "probe.activation", "loss": "probe.loss",
    "penalty": "probe.penalty", "l1_ratio": "probe.l1_ratio", "lambdas": "probe.lambdas", "progress": "progress",
}


def build_config(args):
    from transferzoo.transfer.config import FitConfig, load_config, replace_path

    cfg = load_config(args.config) if args.config else FitConfig()
    for flag, path in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            replace_path(cfg, path, value)
    from .finetune_cmds import finetune_overrides

    cfg.finetune = dict(cfg.finetune or {}, **finetune_overrides(args))
    return cfg.validate()


def _logger(quiet: bool):
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    return log


def cmd_plan(args) -> int:
    from transferzoo.transfer.fit import plan
    from transferzoo.transfer.plan import format_plan

    cfg = build_config(args)
    p = plan(args.data, cfg, log=_logger(args.json))
    if args.json:
        print_json(p)
    else:
        print(format_plan(p))
    return 0


def cmd_fit(args) -> int:
    from pathlib import Path

    from transferzoo.transfer.fit import fit

    cfg = build_config(args)
    out = args.out or str(Path("runs") / Path(args.data).resolve().name)
    res = fit(args.data, cfg, out=out, log=_logger(args.json))
    s = res.summary
    if args.json:
        print_json({k: v for k, v in s.items() if k not in ("confusion", "cv")} | {"run_dir": str(res.run_dir)})
    else:
        print(f"strategy {s['strategy']}" + (f" (plan: {s['planned_strategy']})" if s.get("planned_strategy") != s["strategy"] else "")
              + f", model {s['model']}" + (f", features {s['feature_set']}" if s.get("feature_set") else ""))
        print(f"val accuracy {s['val_accuracy']:.4f} on {s['num_val']} images ({s['num_classes']} classes, "
              f"{s['num_train']} training images) in {s['wall_seconds']:.1f} s")
        if s.get("knn"):
            print(f"kNN baseline ({s['knn']['metric']}, k={s['knn']['k']}): val accuracy {s['knn']['val_accuracy']:.4f}")
        print(f"run directory: {res.run_dir}")
    return 0
