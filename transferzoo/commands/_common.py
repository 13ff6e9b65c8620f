"""Helpers shared by the sub-commands: output, and flags bound to typed settings."""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from pathlib import Path


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[str], file=None) -> None:
    """A plain aligned text table (no dependency): header, rule, rows."""
    file = file or sys.stdout
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip(), file=file)


def process_seconds() -> float | None:
    """Seconds since this process started, interpreter start-up included (Linux /proc; else None)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def stderr_log(quiet: bool):
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    return log


class SettingFlags:
    """Command-line flags bound to dotted keys of a settings class (`zoo.config`): each flag's type,
    `choices` and on/off form come from the dataclass field, so a flag accepts exactly what the
    YAML key does, and an error names the flag."""

    def __init__(self, cls):
        self.cls = cls
        self.flags: dict[str, str] = {}  # dotted key -> flag

    def add(self, parser, flag: str, dotted: str, help: str, *, off: bool = False, metavar: str | None = None):
        """`off=True`: a switch that sets a bool setting to false (e.g. --no-progress)."""
        from transferzoo.zoo.config import field_type, rule

        self.flags[dotted] = flag
        dest = "setting:" + dotted
        tp = field_type(self.cls, dotted)
        if tp is bool:
            parser.add_argument(flag, dest=dest, action="store_false" if off else "store_true", default=None, help=help)
            return
        kw: dict = {"dest": dest, "default": None, "help": help, "metavar": metavar}
        if typing.get_origin(tp) in (list, tuple):
            kw["nargs"] = "+"
            tp = typing.get_args(tp)[0]
        choices = rule(self.cls, dotted, "choices")
        if choices is not None:
            kw["choices"] = [c for c in choices if c is not None]
            kw.pop("metavar")
        parser.add_argument(flag, type=str if tp is Path else tp, **kw)

    def values(self, args: argparse.Namespace) -> dict:
        """{dotted key: value} for the flags given on the command line."""
        return {k: getattr(args, "setting:" + k) for k in self.flags if getattr(args, "setting:" + k, None) is not None}

    def apply(self, base, args: argparse.Namespace, extra: dict | None = None):
        """`base` with the given flags (and `extra` dotted values) applied; errors name the flag."""
        from transferzoo.zoo.config import ConfigError, override

        values = dict(self.values(args), **(extra or {}))
        try:
            return override(base, values) if values else base
        except ConfigError as e:
            flag = self.flags.get(e.key)
            if flag and not e.detail.startswith("unknown"):
                raise ConfigError(flag, e.detail) from None
            raise
