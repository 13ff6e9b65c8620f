"""What limits INT8 at batch 16: int8 vs fp32 onnxruntime on EfficientNet-Lite0 at batch 1 and 16
for quantizer / session variants, and where the int8 graph's time goes, per op type.

    .venv/bin/python bench/bench_int8_batch.py [--calibration ../shared/datasets/hymenoptera/train]

Variants (export.quantize.quantize_int8 is the "export" row; the others change one thing):
  export           QDQ, per-channel int8 weights, 7-bit (reduce_range), uint8 activations, head float
  full-range       8-bit weights (no reduce_range): what a VNNI / AMX CPU could take without saturation
  per-tensor       one scale per weight tensor instead of per output channel
  level=extended   the same graph with ORT_ENABLE_EXTENDED instead of ALL (no layout transforms)
Timing: interleaved rounds (fp32, then each variant), medians, the same threads for all; speed only
(the accuracy gate is export's: tests/test_export_real.py, bench/bench_export_int8.py). Then one
profiled run of the export variant at batch 16: seconds per op type (QLinearConv, Conv kept float,
QuantizeLinear / DequantizeLinear at float boundaries, ...) and the float ops left.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HYMENOPTERA = Path(os.environ.get("TRANSFERZOO_SHARED", REPO.parent / "shared" / "datasets")) / "hymenoptera"


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return " ".join(have) or "none of avx2/avx512/vnni/amx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibration", default=str(HYMENOPTERA / "train"))
    ap.add_argument("--images", type=int, default=64, help="calibration images")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import onnxruntime.quantization as q
    import torch

    from transferzoo import zoo
    from transferzoo.export import quantize
    from transferzoo.export.images import from_folder, prepare
    from transferzoo.export.onnx_export import to_onnx
    from transferzoo.zoo import runtime

    torch.set_num_threads(args.threads)
    name = "efficientnet_lite0"
    pre = zoo.preprocessing(name)
    model = zoo.create(name, pretrained=True).eval()
    fp32 = to_onnx(model, torch.zeros(1, *pre.input_size))
    calib = prepare(from_folder(args.calibration).subset(args.images), pre).float
    print(f"CPU flags: {cpu_flags()}; onnxruntime {ort.__version__}; {args.threads} threads; load {os.getloadavg()}")

    real_quantize_static = q.quantize_static

    def variant(**overrides):
        """export's quantize_int8 with one quantize_static argument changed (it imports the
        function from onnxruntime.quantization when called)."""

        def patched(*a, **kw):
            kw.update(overrides)
            return real_quantize_static(*a, **kw)

        saved = q.quantize_static
        q.quantize_static = patched
        try:
            return quantize.quantize_int8(fp32, calib)
        finally:
            q.quantize_static = saved

    t = time.perf_counter()
    graphs = {
        "export": quantize.quantize_int8(fp32, calib),
        "full-range": variant(reduce_range=False),
        "per-tensor": variant(per_channel=False),
    }
    print(f"quantized 3 variants in {time.perf_counter() - t:.0f} s")
    sessions = {"fp32": runtime.session(fp32, args.threads, spinning=True)}
    for k, g in graphs.items():
        sessions[k] = runtime.session(g, args.threads, spinning=True)
    sessions["level=extended"] = runtime.session(graphs["export"], args.threads, spinning=True, opt_level="extended")
    inp = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    rng = np.random.default_rng(0)
    print(f"{'batch':>5}  {'graph':<16}{'ms':>9}{'vs fp32':>9}")
    for b in (1, 16):
        x = rng.standard_normal((b, *pre.input_size)).astype(np.float32)
        times = defaultdict(list)
        for k, s in sessions.items():
            s.run(None, {inp[k]: x})
        for _ in range(args.rounds if b == 1 else max(4, args.rounds // 2)):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {inp[k]: x})
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in sessions:
            print(f"{b:>5}  {k:<16}{med[k] * 1e3:9.2f}{med['fp32'] / med[k]:8.2f}x", flush=True)

    # where the export variant's time goes at batch 16
    with tempfile.TemporaryDirectory() as tmp:
        so = runtime.session_options(args.threads, spinning=True)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "int8")
        s = ort.InferenceSession(graphs["export"].SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = rng.standard_normal((16, *pre.input_size)).astype(np.float32)
        for _ in range(4):
            s.run(None, {s.get_inputs()[0].name: x})
        prof = json.loads(Path(s.end_profiling()).read_text())
    by_op: Counter = Counter()
    for ev in prof:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev["args"].get("op_name", "?")] += ev["dur"]
    total = sum(by_op.values()) or 1
    print("\nexport int8 graph at batch 16, share of kernel time by op type (4 runs, after ORT's fusions):")
    for op, us in by_op.most_common(12):
        print(f"  {op:<28s} {us / total:6.1%}  {us / 4e3:8.2f} ms/run")
    g = graphs["export"].graph
    float_ops = Counter(n.op_type for n in g.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
    print(f"int8 graph nodes (before ORT fuses QDQ pairs into QLinear ops): {dict(float_ops)}")
    print(
        f"QuantizeLinear {sum(n.op_type == 'QuantizeLinear' for n in g.node)}, "
        f"DequantizeLinear {sum(n.op_type == 'DequantizeLinear' for n in g.node)}; fp32 nodes: "
        f"{dict(Counter(n.op_type for n in onnx.load_from_string(fp32.SerializeToString()).graph.node))}"
    )


if __name__ == "__main__":
    main()
