"""Why the plan under-predicts `full`: its time model against a measured whole-model training step.

    .venv/bin/python bench/bench_step_cost.py [--model efficientnet_lite0] [--sizes 224 128 64] [--repeats 3]

The plan predicts full's epochs as FORWARD_BACKWARD (3) one-thread forward passes per image, scaled
by the run's feature-pass calibration (transfer.planner.forward_cost). This bench measures, in one
process and on one thread (as the plan measures), a forward pass in eval mode and a training step
(train mode, forward + backward) of the whole model per image at each size, and prints the step's
ratio to the forward pass next to the constant, with the plan's own measurement of partial's step
(planner.measured_top_step, top 1 and top 4 blocks on the cached prefix's output, measured afresh
in a temporary cache): the plan takes a whole-model step as the larger of FORWARD_BACKWARD forward
passes and one forward pass plus the top blocks' step. It then lists, from the suite's stored rows
(bench/results/strategies.json), full's measured own seconds over the plan's prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transferzoo.transfer import planner  # noqa: E402
from transferzoo.zoo import assembly as za  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def per_image(fn, batch: int, repeats: int) -> float:
    fn()  # the first call: allocations, kernel selection
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128, 64])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "strategies.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = za.build(za.ModelSpec(args.model, 10), pretrained=False)
    print(f"{args.model}, one thread, batch {args.batch}, best of {args.repeats}: seconds per image")
    assumed = planner.FORWARD_BACKWARD
    head = f"{'size':>5} {'forward':>9} {'train step':>11} {'ratio':>6}   (the plan assumes {assumed:g})"
    print(head + "  top-1 / top-4 step")
    os.environ["TRANSFERZOO_CACHE"] = tempfile.mkdtemp(prefix="bench_step_cost_")  # measure, do not reuse
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)

        def forward():
            with torch.no_grad():
                model.eval()(x)

        def step():
            model.train()
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        f, s = per_image(forward, args.batch, args.repeats), per_image(step, args.batch, args.repeats)
        tops = [planner.measured_top_step(args.model, [size], k, args.batch)[size] for k in (1, 4)]
        top = " / ".join("-" if t is None else f"{t / f:.2f}" for t in tops)
        print(f"{size:>5} {f:>9.4f} {s:>11.4f} {s / f:>6.2f}   {top:>31} forward passes")

    if args.results.exists():
        rows = json.loads(args.results.read_text())["rows"]
        ratios = []
        print("\nfull, measured own seconds / the plan's prediction, per stored row:")
        for key, a in sorted(rows.items()):
            name = key.split("/")[0]
            full = rows.get(f"{name}/full")
            if not key.endswith("/auto") or "plan" not in a or not full:
                continue
            pred = a["plan"]["strategies"]["full"]["predicted_seconds"]
            ratios.append(full["own_seconds"] / pred)
            print(f"  {name:<14} {full['own_seconds']:>7.0f} / {pred:>6.0f} = {ratios[-1]:.2f}")
        if ratios:
            lo, hi, med = min(ratios), max(ratios), statistics.median(ratios)
            print(f"  median {med:.2f}, range {lo:.2f}-{hi:.2f} over {len(ratios)}")


if __name__ == "__main__":
    main()
