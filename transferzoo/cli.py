"""`transferzoo` entry point. Sub-commands live in `transferzoo/commands/`, one module per area; each
defines `register(subparsers)`, which adds its parsers and sets `func(args) -> int`. The modules
import their heavy dependencies (torch, timm, onnx) only when a command runs.

The error boundary is here: user mistakes (ValueError and its ZooError subclasses, missing files)
print one line `error: ...` and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands import audit_cmds, demo, deploy_cmds, export_cmds, run_cmds, serve_cmds, transfer_cmds, zoo_cmds

# in the order `--help` lists them
COMMANDS = (demo, run_cmds, zoo_cmds, transfer_cmds, audit_cmds, export_cmds, deploy_cmds, serve_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferzoo",
        description="From a folder of labelled images to a verified ONNX model behind an inference server.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: `main()`, then exit without tearing the interpreter down. Everything a
    command writes is written (atomically, fsync'd) before it returns; what is left is freeing
    torch's and timm's modules, which takes 1-3 s here after a `fit`: as long as the job itself on a
    cached run. Streams are flushed first; an exception still exits the normal way (traceback)."""
    import logging

    rc = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    logging.shutdown()
    os._exit(rc)
