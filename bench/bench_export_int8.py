"""INT8 (static QDQ, per-channel) vs fp32 onnxruntime on EfficientNet-Lite0, side by side in one
process, with the accuracy gate on real images.

Both graphs come from `export.pipeline.export` (the int8 one passed its gate: top-1 agreement
>= 98 % and accuracy drop <= 1 point vs fp32 on the parity images). Default model: Lite0 with its
real ImageNet head, calibrated on hymenoptera/train, gated on hymenoptera/val (ImageNet has no
ants/bees labels for these photos, so agreement with fp32 is the accuracy metric). Pass a run
directory (a Lite0 fine-tuned on hymenoptera) as SOURCE to get accuracies too.

It also quantizes with only the weight-bearing ops (Conv, Gemm, MatMul) — what many recipes do —
to show why export quantizes Clip/Relu/Add as well: otherwise every ReLU6 sits between a
DequantizeLinear and a QuantizeLinear and int8 is no faster than fp32.

Timing: interleaved rounds (fp32 call, int8 call, repeat), medians, ORT level ALL, two measures:
wall time on --threads threads (spinning), what a caller sees, which on shared cores swings with the
load; and the calling thread's CPU time per run on 1 thread (time.thread_time), which other processes
on the cores barely move. Target: int8 >= 2.0x fp32 at batch 1 and 16.

    .venv/bin/python bench/bench_export_int8.py
    .venv/bin/python bench/bench_export_int8.py runs/ants_lite0 --json
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HYMENOPTERA = Path(os.environ.get("TRANSFERZOO_SHARED", REPO.parent / "shared" / "datasets")) / "hymenoptera"


def timed(sessions: dict, x: np.ndarray, rounds: int, clock=time.perf_counter) -> dict[str, float]:
    names = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    times = {k: [] for k in sessions}
    for k, s in sessions.items():
        s.run(None, {names[k]: x})
    for _ in range(rounds):
        for k, s in sessions.items():
            t = clock()
            s.run(None, {names[k]: x})
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", default="efficientnet_lite0")
    ap.add_argument("--calibration", default=str(HYMENOPTERA / "train"))
    ap.add_argument("--parity-data", default=str(HYMENOPTERA / "val"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from transferzoo.export import quantize
    from transferzoo.export.images import from_folder, prepare
    from transferzoo.export.pipeline import ExportOptions, export
    from transferzoo.export.sources import load_source
    from transferzoo.zoo import runtime

    torch.set_num_threads(args.threads)
    src = load_source(args.source)
    is_run = src.kind == "run"
    data = {} if is_run else {"calibration": args.calibration, "parity_data": args.parity_data}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export(
            src,
            ExportOptions(
                out=tmp / "fp32.onnx", threads=args.threads, parity_data=None if is_run else args.parity_data
            ),
        )
        int8 = export(src, ExportOptions(out=tmp / "int8.onnx", quantize="int8", threads=args.threads, **data))
        gate = next(c for c in int8.report["int8"] if c["name"] == "real images")
        # the naive recipe, for comparison (not gated, not written by export)
        import onnx

        calib = prepare(from_folder(args.calibration).subset(128), src.preprocessing) if not is_run else None
        naive = None
        if calib is not None:
            naive = quantize.quantize_int8(onnx.load(str(fp32.path)), calib.float, op_types=("Conv", "Gemm", "MatMul"))
        sessions = {
            "fp32": runtime.session(str(fp32.path), args.threads, spinning=True),
            "int8": runtime.session(str(int8.path), args.threads, spinning=True),
        }
        if naive is not None:
            sessions["int8 (Conv/Gemm/MatMul only)"] = runtime.session(naive, args.threads, spinning=True)
        one_thread = {
            k: runtime.session(m, 1)
            for k, m in (("fp32", str(fp32.path)), ("int8", str(int8.path)), ("int8 (Conv/Gemm/MatMul only)", naive))
            if m is not None
        }
        rows = []
        rng = np.random.default_rng(0)
        for b in (1, 16):
            x = rng.standard_normal((b, *src.preprocessing.input_size)).astype(np.float32)
            rounds = args.rounds if b == 1 else max(4, args.rounds // 3)
            t = timed(sessions, x, rounds)
            c = timed(one_thread, x, rounds, time.thread_time)
            for k in sessions:
                rows.append(
                    {
                        "batch": b,
                        "graph": k,
                        "ms": round(t[k] * 1e3, 2),
                        "speedup_vs_fp32": round(t["fp32"] / t[k], 2),
                        "cpu_ms_1_thread": round(c[k] * 1e3, 2),
                        "cpu_speedup_vs_fp32_1_thread": round(c["fp32"] / c[k], 2),
                    }
                )
        sizes = {"fp32": fp32.report["size_bytes"], "int8": int8.report["size_bytes"]}
    out = {
        "source": args.source,
        "threads": args.threads,
        "loadavg_1min": os.getloadavg()[0],
        "gate": gate,
        "calibration": int8.report["quantization"]["calibration"]["origin"],
        "sizes": sizes,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{args.source}: int8 gate on {gate['count']} real images ({int8.report['images']['origin']}): "
        f"top-1 agreement with fp32 {gate['top1_agreement']:.2%}"
        + (
            f", accuracy {gate['accuracy_reference']:.2%} -> {gate['accuracy_onnx']:.2%}"
            if gate["accuracy_onnx"] is not None
            else ""
        )
        + f"  [{'passed' if gate['passed'] else 'FAILED'}]"
    )
    print(f"calibration: {out['calibration']}; size {sizes['fp32'] / 1e6:.1f} MB -> {sizes['int8'] / 1e6:.1f} MB")
    print(
        f"onnxruntime, {args.threads} threads, median of interleaved rounds "
        f"(1-min load average {out['loadavg_1min']:.1f} on {os.cpu_count()} CPUs: other work shares these cores)"
    )
    print(f"{'':>37}{'wall, ' + str(args.threads) + ' threads':>18}{'cpu, 1 thread':>18}")
    print(f"{'batch':>5}  {'graph':<30}{'ms':>9}{'vs fp32':>9}{'ms':>9}{'vs fp32':>9}")
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['graph']:<30}{r['ms']:>9.2f}{r['speedup_vs_fp32']:>8.2f}x"
            f"{r['cpu_ms_1_thread']:>9.2f}{r['cpu_speedup_vs_fp32_1_thread']:>8.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
