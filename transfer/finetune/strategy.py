"""Registers the `partial` and `full` strategies with `transfer.fit` (which imports this module if
present): `transferzoo fit DATA --strategy partial|full`, and `auto` when the plan picks them.

Settings come from the fit config's `finetune:` mapping (YAML or CLI flags; see
`transfer.train_config.TrainConfig`); the number of blocks to unfreeze defaults to the plan's
`unfreeze_blocks` (auto) or 1. The strategy writes the run directory itself (it adds
metrics.jsonl, curves.png, misclassified.png and the training section of report.md).
"""
from __future__ import annotations

import time

from transferzoo.transfer.fit import FitContext, FitResult, register_strategy
from transferzoo.transfer.train_config import TrainConfig


def train_config(ctx: FitContext, strategy: str) -> TrainConfig:
    d = dict(ctx.cfg.finetune or {})
    d["strategy"] = strategy
    if ctx.cfg.progress is not None:
        d.setdefault("progress", ctx.cfg.progress)
    d.setdefault("seed", ctx.cfg.data.seed)
    return TrainConfig.from_dict(d)


def run_finetune(ctx: FitContext, strategy: str) -> FitResult:
    from .finetuner import Finetuner

    cfg = train_config(ctx, strategy)
    plan = ctx.plan
    ft = Finetuner(ctx.splits, ctx.cfg.model, cfg, run_dir=ctx.run_dir, plan=plan, weights=ctx.cfg.weights, log=ctx.log)
    try:
        res = ft.train()
        s = res.summary
        s["planned_strategy"] = ctx.planned_strategy or strategy
        s["timings"] = dict(ctx.timings)
        s["wall_seconds"] = round(time.perf_counter() - ctx.t0, 3)
        if plan is None:
            plan = {"strategy": strategy, "planned": False, "unfreeze_blocks": ft.freeze.trained_blocks,
                    "reasons": [f"strategy {strategy!r} chosen by the user (--strategy)"]}
        config = ctx.cfg.to_dict()  # reloadable with --config (what ran is in metrics.json)
        config["finetune"] = res.config.to_dict()
        written = False
        if ctx.run_dir is not None:
            ft.write_run(res, plan, config)
            written = True
        return FitResult(summary=s, run_dir=ctx.run_dir, plan=plan, model=res.model, spec=res.spec, written=written,
                         context=ctx)
    finally:
        ft.close()


register_strategy("partial", lambda ctx: run_finetune(ctx, "partial"))
register_strategy("full", lambda ctx: run_finetune(ctx, "full"))
