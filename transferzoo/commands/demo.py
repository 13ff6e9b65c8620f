"""demo: the main job on an embedded default, no input needed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on an embedded real dataset (no data needed)")
    p.add_argument("--out", default="runs/demo", help="where the demo writes its files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from transferzoo.demo import run_demo

    return run_demo(args)
