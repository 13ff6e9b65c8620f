"""`plan` and `fit`: from a folder of images to a plan, or to a run directory.

Strategies, one implementation each (the table below):
- ``linear`` / ``stages``: probes fit full-batch on cached features (`transfer.probe.strategy`);
- ``partial`` / ``full``: finetuning (`transfer.finetune.strategy`);
- ``auto``: runs the plan (`transfer.planner`) and then the strategy it picks.
Every strategy writes the same run directory (`transfer.rundir`, transfer/RUN_DIR.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from transferzoo import zoo

from .audit.run import fit_hook, plan_hook
from .config import FitConfig
from .context import FitContext, FitResult, extract, load_splits
from .planner import apply_plan, baselines_on_val, make_plan
from .threads import compute_threads


# imported when used: a probe run never loads the finetuning stack (its optimisers, data loaders,
# DDP and checkpoint code) and vice versa
def _probe(strategy: str) -> Callable[[FitContext], FitResult]:
    def run(ctx: FitContext) -> FitResult:
        from .probe import strategy as probe_strategy

        return probe_strategy.run(ctx, strategy)

    return run


def _finetune(strategy: str) -> Callable[[FitContext], FitResult]:
    def run(ctx: FitContext) -> FitResult:
        from .finetune import strategy as finetune_strategy

        return finetune_strategy.run(ctx, strategy)

    return run


STRATEGIES: dict[str, Callable[[FitContext], FitResult]] = {
    "linear": _probe("linear"),
    "stages": _probe("stages"),
    "partial": _finetune("partial"),
    "full": _finetune("full"),
}


def plan(data, cfg: FitConfig | None = None, log=None, val_baselines: bool = True, pinned=()) -> dict:
    """Scan, extract (cached) features and make the plan (see transfer.planner). `pinned`: dotted
    settings the user set explicitly (config.pinned_keys), which the plan keeps."""
    cfg = cfg or FitConfig()
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    ctx = FitContext(Path(data), cfg, load_splits(data, cfg, log), None, log, t0)
    extract(ctx)
    audit = plan_hook(ctx)
    with compute_threads(1):
        p = make_plan(ctx.splits, ctx.features, ctx.rows["train"], cfg, log, pinned, ctx.timings["features_seconds"])
        if val_baselines:
            p["val_baselines"] = baselines_on_val(ctx.features, ctx.rows["train"], ctx.rows["val"], ctx.splits, p, cfg)
    p["data"] = {k: v for k, v in ctx.splits.summary().items() if k != "skipped"}
    p["data"]["skipped"] = len(ctx.splits.skipped)
    if audit is not None:
        p["audit"] = audit
    p["timings"] = dict(ctx.timings, wall_seconds=round(time.perf_counter() - t0, 2))
    return p


def fit(data, cfg: FitConfig | None = None, out=None, log=None, resume: bool = False, pinned=()) -> FitResult:
    """Run a strategy and write the run directory `out` (None: nothing written). `resume`: a
    finetuning run continues from `out`'s checkpoint (after an interruption, even kill -9).
    Under auto the plan's settings for the strategy it picks replace the defaults (exactly what
    `plan` prints), except `pinned` dotted keys and settings that differ from their defaults."""
    cfg = cfg or FitConfig()
    log = log or (lambda m: None)
    t0 = time.perf_counter()
    strategy = cfg.strategy
    t = time.perf_counter()
    ctx = FitContext(Path(data), cfg, load_splits(data, cfg, log), Path(out) if out else None, log, t0, resume=resume)
    ctx.timings["scan_seconds"] = round(time.perf_counter() - t, 3)
    if strategy in ("auto", "linear", "stages"):
        extract(ctx)
    fit_hook(ctx)  # transfer.audit: the findings for report.md, and what to leave out (--exclude ...)
    if strategy == "auto":
        t = time.perf_counter()
        with compute_threads(1):
            ctx.plan = make_plan(
                ctx.splits, ctx.features, ctx.rows["train"], cfg, log, pinned, ctx.timings["features_seconds"]
            )
        ctx.timings["plan_seconds"] = round(time.perf_counter() - t, 3)
        strategy = ctx.planned_strategy = ctx.plan["strategy"]
        ctx.cfg = apply_plan(cfg, ctx.plan)
        for r in ctx.plan["reasons"]:
            log(f"plan: {r}")
    result = STRATEGIES[strategy](ctx)
    s = result.summary
    s["strategy"] = strategy
    s["planned_strategy"] = ctx.planned_strategy or strategy
    s.setdefault("timings", {}).update(ctx.timings)
    s["wall_seconds"] = round(time.perf_counter() - t0, 3)
    if ctx.splits.audit:
        s["audit"] = ctx.splits.audit["counts"]
    if ctx.splits.excluded:
        s["num_excluded"] = len(ctx.splits.excluded)
    if ctx.run_dir is not None and not result.written:
        t = time.perf_counter()
        write(ctx, result)
        result.written = True
        # after metrics.json is written: the run directory's own figures exclude it
        s["timings"]["write_seconds"] = round(time.perf_counter() - t, 3)
    return result


def write(ctx: FitContext, result: FitResult) -> Path:
    from .rundir import write_run

    if result.weights is None:  # a finetuned model: its weights' provenance (torch is loaded already)
        from transferzoo.zoo import assembly as za

        result.weights = za.weights_provenance(result.model)

    plan = ctx.plan or {
        "strategy": result.summary["strategy"],
        "planned": False,
        "reasons": [f"strategy {result.summary['strategy']!r} chosen by the user (--strategy)"],
    }
    return write_run(
        ctx.run_dir,
        spec=result.spec,
        state=result.state if result.state is not None else result.model.state_dict(),
        labels=ctx.splits.classes,
        preprocessing=zoo.preprocessing(ctx.cfg.model),
        weights=result.weights,
        summary=result.summary,
        config=ctx.cfg.to_dict(),
        plan=plan,
        splits=ctx.splits,
    )
