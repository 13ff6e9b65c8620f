"""onnxruntime fp32 (our exported, verified graph) vs PyTorch eager, side by side in one process.

Each model is exported with `export.pipeline.export` (random weights are fine for speed; Lite0 uses
its real weights), then timed at batch 1 and 16 in interleaved rounds (one PyTorch call, one
onnxruntime call, repeat) so both sides see the same background load; medians are compared.
Both sides get the same thread budget: torch.set_num_threads(T), ORT intra_op_num_threads=T,
graph optimisation level ALL. Targets: efficientnet_lite0 >= 4x, resnet50 and
mobilenetv3_large_100 >= 2x, at batch 1 and 16.

    .venv/bin/python bench/bench_export_speed.py                      # the three target models, 2 threads
    .venv/bin/python bench/bench_export_speed.py --models resnet18 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"efficientnet_lite0": 4.0, "resnet50": 2.0, "mobilenetv3_large_100": 2.0}


def bench_model(name: str, batches: list[int], rounds: int, threads: int, tmp: Path) -> list[dict]:
    import torch

    from transferzoo import zoo
    from transferzoo.export.pipeline import ExportOptions, export
    from transferzoo.export.sources import load_zoo
    from transferzoo.zoo import runtime

    real = bool(zoo.available_sources(zoo.get(name)))
    src = load_zoo(name, random_weights=not real)
    res = export(src, ExportOptions(out=tmp / f"{name}.onnx", parity_limit=2, threads=threads))
    sess = runtime.session(str(res.path), threads, spinning=True)
    inp = sess.get_inputs()[0].name
    model = src.model.eval()
    rows = []
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.standard_normal((b, *src.preprocessing.input_size)).astype(np.float32)
        xt = torch.from_numpy(x)
        t_torch, t_ort = [], []
        with torch.inference_mode():
            model(xt), sess.run(None, {inp: x})  # warm-up
            for _ in range(rounds):
                t = time.perf_counter()
                model(xt)
                t_torch.append(time.perf_counter() - t)
                t = time.perf_counter()
                sess.run(None, {inp: x})
                t_ort.append(time.perf_counter() - t)
        pt, ot = statistics.median(t_torch), statistics.median(t_ort)
        rows.append(
            {
                "model": name,
                "weights": "real" if real else "random",
                "batch": b,
                "exporter": res.report["exporter"],
                "torch_ms": round(pt * 1e3, 2),
                "ort_ms": round(ot * 1e3, 2),
                "speedup": round(pt / ot, 2),
                "target": TARGETS.get(name),
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(TARGETS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument(
        "--rounds", type=int, default=15, help="interleaved timing rounds per batch size (batch 16: a third)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import os

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for b in args.batches:
                rounds = args.rounds if b < 8 else max(3, args.rounds // 3)
                rows += bench_model(name, [b], rounds, args.threads, Path(tmp))
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"threads": args.threads, "loadavg_1min": load, "rows": rows}, indent=2))
        return 0
    print(
        f"PyTorch eager vs onnxruntime fp32, {args.threads} threads, median of interleaved rounds "
        f"(1-min load average {load:.1f} on {os.cpu_count()} CPUs: other work shares these cores)"
    )
    print(f"{'model':<24}{'weights':<8}{'batch':>6}{'torch ms':>11}{'ort ms':>10}{'speedup':>9}{'target':>8}")
    for r in rows:
        tgt = f">={r['target']:g}x" if r["target"] else ""
        flag = "" if not r["target"] else ("  ok" if r["speedup"] >= r["target"] else "  MISS")
        print(
            f"{r['model']:<24}{r['weights']:<8}{r['batch']:>6}{r['torch_ms']:>11.1f}{r['ort_ms']:>10.1f}"
            f"{r['speedup']:>8.2f}x{tgt:>8}{flag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
