"""The `partial` and `full` strategies: `transferzoo fit DATA --strategy partial|full`, and `auto`
when the plan picks them.

Settings are the fit config's `finetune:` section (`transfer.config.FinetuneConfig`, YAML or CLI
flags), resolved for the strategy; the number of blocks to unfreeze defaults to the plan's
`unfreeze_blocks` (auto) or 1. The strategy writes the run directory itself (it adds metrics.jsonl,
curves.png, misclassified.png and the training section of report.md).
"""

from __future__ import annotations

import time

from transferzoo.zoo.config import to_dict

from ..context import FitContext, FitResult
from .finetuner import Finetuner


def run(ctx: FitContext, strategy: str) -> FitResult:
    cfg = ctx.cfg.finetune.resolved(strategy, ctx.cfg.data.seed)
    plan = ctx.plan
    ft = Finetuner(
        ctx.splits,
        ctx.cfg.model,
        strategy,
        cfg,
        run_dir=ctx.run_dir,
        plan=plan,
        weights=ctx.cfg.weights,
        log=ctx.log,
        progress=ctx.cfg.progress,
        resume=ctx.resume,
    )
    try:
        res = ft.train()
        s = res.summary
        s["planned_strategy"] = ctx.planned_strategy or strategy
        s["timings"] = dict(ctx.timings)
        s["wall_seconds"] = round(time.perf_counter() - ctx.t0, 3)
        if plan is None:
            plan = {
                "strategy": strategy,
                "planned": False,
                "unfreeze_blocks": ft.freeze.trained_blocks,
                "reasons": [f"strategy {strategy!r} chosen by the user (--strategy)"],
            }
        # reloadable with --config: the settings as they ran (what the search picked included)
        config = to_dict(ctx.cfg)
        config["finetune"] = to_dict(res.config)
        if ft.unfreeze is not None:
            config["finetune"]["unfreeze"] = ft.unfreeze
        written = False
        if ctx.run_dir is not None:
            ft.write_run(res, plan, config)
            written = True
        return FitResult(
            summary=s, run_dir=ctx.run_dir, plan=plan, model=res.model, spec=res.spec, written=written, context=ctx
        )
    finally:
        ft.close()
