"""run: the whole pipeline from one YAML file."""

from __future__ import annotations

import argparse
import sys

from ._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline in a YAML file: plan, fit, export (parity-gated), serve check")
    p.add_argument("pipeline", nargs="?", help="PIPELINE.yaml")
    p.add_argument("--print-default-config", action="store_true", help="print a commented starting point and exit")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from transferzoo.pipeline.config import DEFAULT_YAML, load_pipeline

    if args.print_default_config:
        sys.stdout.write(DEFAULT_YAML)
        return 0
    if not args.pipeline:
        raise ValueError("give a PIPELINE.yaml (start from `transferzoo run --print-default-config > pipeline.yaml`)")
    cfg = load_pipeline(args.pipeline)  # everything validated before any work starts
    from transferzoo.pipeline.runner import run_pipeline

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    res = run_pipeline(cfg, log=log)
    if args.json:
        print_json(res.summary())
    else:
        print(f"\nreport: {res.report}")
    return 0
