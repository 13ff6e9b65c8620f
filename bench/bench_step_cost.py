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

`--calibration SIZE` (default 224) checks the calibration at SIZE. The plan's one-thread torch
timings are scaled to the run by its feature pass, which runs in onnxruntime on every core. Until
2026-12-07 one scale (ORT per image on N threads / torch forward on 1 thread) carried ORT's speed over
torch into every torch estimate, and full trains in torch; now torch work is scaled by ORT's own
N-thread / 1-thread ratio (like with like, planner.measured_onnx_forward). At SIZE it measures ORT per
image on N threads and on 1 (the exported model), torch's whole-model training step on N threads at
the finetuning batch, and prints that step over the plan's prediction, and over the old one.
Every torch timing is taken in the layout fit trains in (channels-last since 2026-12-07).
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
from transferzoo.transfer.finetune.loop import MEMORY_FORMAT  # noqa: E402
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


def calibration(model, size: int, fwd1: float, step1: float, top4: float | None, args) -> None:
    """The plan's full-step prediction and a like-with-like one against a measured N-thread step."""
    from transferzoo.export.onnx_export import verified_session

    cores = os.cpu_count() or 1
    xf = torch.randn(8, 3, size, size)  # the feature pass's batch (features.batch_size)
    path = Path(os.environ["TRANSFERZOO_CACHE"]) / "model.onnx"
    sess = {n: verified_session(model.eval(), path, xf[:2], threads=n)[0] for n in (cores, 1)}
    name = sess[1].get_inputs()[0].name
    ort = {n: per_image(lambda s=s: s.run(None, {name: xf.numpy()}), len(xf), args.repeats) for n, s in sess.items()}
    xt = torch.randn(args.train_batch, 3, size, size).contiguous(memory_format=MEMORY_FORMAT)

    def step():
        model.train()
        model.zero_grad(set_to_none=True)
        model(xt).sum().backward()

    torch.set_num_threads(cores)
    measured = per_image(step, args.train_batch, max(2, args.repeats - 1))
    top4_measured = top_step_on_threads(args.model, size, 4, args.train_batch, cores, max(2, args.repeats - 1))
    torch.set_num_threads(1)
    whole = max(planner.FORWARD_BACKWARD * fwd1, fwd1 + (top4 or 0.0))  # forward_cost's whole-model step
    plan, before = whole * ort[cores] / ort[1], whole * ort[cores] / fwd1  # the calibration now, before 2026-12-07
    print(
        f"      calibration at {size}: ORT {ort[cores] * 1e3:.1f} ms/img on {cores} threads, {ort[1] * 1e3:.1f} on 1; "
        f"torch forward on 1 thread {fwd1 * 1e3:.1f} (ORT is {fwd1 / ort[1]:.2f}x faster per thread)\n"
        f"      whole-model step on {cores} threads, batch {args.train_batch}: measured {measured * 1e3:.1f} ms/img; "
        f"the plan predicts {plan * 1e3:.1f} (measured / plan {measured / plan:.2f}); "
        f"the old calibration predicted {before * 1e3:.1f} ({measured / before:.2f}); "
        f"the measured one-thread step {step1 * 1e3:.1f} x ORT's speed-up: {step1 * ort[cores] / ort[1] * 1e3:.1f}"
    )
    if top4 is not None and top4_measured is not None:
        plan4, before4 = top4 * ort[cores] / ort[1], top4 * ort[cores] / fwd1
        print(
            f"      partial's top-4 step on the prefix's output, {cores} threads, batch {args.train_batch}: measured "
            f"{top4_measured * 1e3:.1f} ms/img; the plan predicts {plan4 * 1e3:.1f} ({top4_measured / plan4:.2f}); "
            f"the old calibration {before4 * 1e3:.1f} ({top4_measured / before4:.2f})"
        )


def top_step_on_threads(name: str, size: int, unfreeze: int, batch: int, threads: int, repeats: int) -> float | None:
    """A training step of partial's top `unfreeze` blocks on the prefix's output (as the pilot and
    partial run it), per image, on `threads` threads: what measured_top_step predicts from one."""
    split = planner.partial_split(name, unfreeze)
    if split is None:
        return None
    with torch.no_grad():
        h = split.prefix(torch.randn(batch, 3, size, size)).contiguous(memory_format=MEMORY_FORMAT)
    split.suffix.to(memory_format=MEMORY_FORMAT).train()
    torch.set_num_threads(threads)
    return per_image(lambda: split.suffix(h).sum().backward(), batch, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128, 64])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "strategies.json")
    ap.add_argument("--calibration", type=int, default=224, help="the size to test the calibration at (0: skip)")
    ap.add_argument("--train-batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = za.build(za.ModelSpec(args.model, 10), pretrained=False).to(memory_format=MEMORY_FORMAT)
    print(f"{args.model}, one thread, batch {args.batch}, best of {args.repeats}: seconds per image")
    assumed = planner.FORWARD_BACKWARD
    head = f"{'size':>5} {'forward':>9} {'train step':>11} {'ratio':>6}   (the plan assumes {assumed:g})"
    print(head + "  top-1 / top-4 step")
    os.environ["TRANSFERZOO_CACHE"] = tempfile.mkdtemp(prefix="bench_step_cost_")  # measure, do not reuse
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=MEMORY_FORMAT)

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
        if size == args.calibration:
            calibration(model, size, f, s, tops[1], args)

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
