"""Finetuning on the CPU: a whole-model training step in channels-first (NCHW) against channels-last
(NHWC) memory, per registry model, in one process.

    .venv/bin/python bench/bench_memory_format.py [--models efficientnet_lite0 resnet50 ...] [--batch 16]
        [--threads N] [--repeats 3]

Each step is what `fit` runs: train mode, forward, cross-entropy, backward, AdamW's update, on random
inputs at the model's own input size with random weights (the cost does not depend on them). The two
layouts alternate step by step, so that the load of a shared machine falls on both alike; the best
of `--repeats` per layout is printed in ms per image, with the eval-mode forward pass (full's
validation) beside it, and channels-last over channels-first as a ratio (< 1: channels-last faster).
Before 2026-12-07 `fit` used channels-last on CUDA only.

`--fit DATA [--old-ref REF] [--epochs N]` times, instead, `transferzoo fit DATA --strategy full` as a user
does, from the shell, for this tree and for the merge-base with REF (bench_cold_start's old tree and
its way of running it), alternating, `--repeats` each, and prints the wall times, their ratio and the
val accuracies (different kernels round differently: not bit-identical).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transferzoo.zoo import assembly as za  # noqa: E402
from transferzoo.zoo import preprocessing  # noqa: E402

MODELS = (
    "efficientnet_lite0",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "resnet18",
    "resnet50",
    "convnext_nano",
    "regnety_016",
    "densenet121",
)
LAYOUTS = {"channels-first": torch.contiguous_format, "channels-last": torch.channels_last}


def measure(name: str, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    size = preprocessing(name).input_size[-1]
    model = za.build(za.ModelSpec(name, 10), pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    best = {k: {"step": float("inf"), "forward": float("inf")} for k in LAYOUTS}
    for r in range(repeats + 1):  # the first round: allocations, oneDNN's kernel selection
        for layout, fmt in LAYOUTS.items():
            model.to(memory_format=fmt)
            xi = x.contiguous(memory_format=fmt)
            model.train()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xi), y).backward()
            opt.step()
            step = (time.perf_counter() - t) / batch
            model.eval()
            with torch.no_grad():
                t = time.perf_counter()
                model(xi)
                fwd = (time.perf_counter() - t) / batch
            if r:
                best[layout]["step"] = min(best[layout]["step"], step)
                best[layout]["forward"] = min(best[layout]["forward"], fwd)
    return best


def fit_wall(args) -> None:
    import bench_cold_start as bcs

    tmp = Path(tempfile.mkdtemp(prefix="bench-memfmt-"))
    try:
        old = bcs.old_tree(args.old_ref, tmp)
        farm = bcs.package_farm(old, tmp / "farm")
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(old)], check=True, capture_output=True)
        cache = tmp / "cache"  # shared: model info and weights, never features (full streams images)
        rows: dict[str, list[dict]] = {"old": [], "new": []}
        for r in range(args.repeats):
            for side, f in (("old", farm), ("new", None)):
                out = tmp / f"{side}{r}"
                res = bcs.run_fit(f, args.fit, cache, out, profile=False, strategy="full", extra=args.extra)
                rows[side].append(res)
                acc = res["val_accuracy"]
                print(f"{side} #{r + 1}: {res['wall_s']:.1f} s wall, val accuracy {acc:.4f}", flush=True)
        new = statistics.median(x["wall_s"] for x in rows["new"])
        old_s = statistics.median(x["wall_s"] for x in rows["old"])
        flags = " ".join(args.extra)
        print(f"fit --strategy full {flags}: new {new:.1f} s, old {old_s:.1f} s, new/old {new / old_s:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit", type=Path, help="time `fit DATA --strategy full`, this tree against --old-ref")
    ap.add_argument("--old-ref", default="main")
    ap.add_argument("--epochs", type=int, help="fit's --epochs (default: its own)")
    args = ap.parse_args()
    if args.fit is not None:
        args.extra = ["--epochs", str(args.epochs)] if args.epochs else []
        args.fit = args.fit.resolve()
        return fit_wall(args)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} threads, torch {torch.__version__}, best of {args.repeats}")
    heads = ("step NCHW", "step NHWC", "ratio", "fwd NCHW", "fwd NHWC", "ratio")
    print(f"{'model':24s} " + " ".join(f"{h:>10s}" for h in heads))
    for name in args.models:
        b = measure(name, args.batch, args.repeats)
        cf, cl = b["channels-first"], b["channels-last"]
        cells = [f"{d[k] * 1e3:.1f}ms" for k in ("step",) for d in (cf, cl)] + [f"{cl['step'] / cf['step']:.2f}"]
        cells += [f"{d['forward'] * 1e3:.1f}ms" for d in (cf, cl)] + [f"{cl['forward'] / cf['forward']:.2f}"]
        print(f"{name:24s} " + " ".join(f"{c:>10s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
