"""What limits INT8 at batch 16: int8 vs fp32 onnxruntime on EfficientNet-Lite0 at batch 1 and 16
for quantizer / session variants, and where the int8 graph's time goes, per op type.

    .venv/bin/python bench/bench_int8_batch.py [--calibration ../shared/datasets/hymenoptera/train]

Variants (export.quantize.quantize_int8: QDQ, per-channel int8 weights, uint8 activations, head float;
each row changes one thing):
  7-bit            weights in 7 bits (reduce_range): what export uses on CPUs without VNNI (AVX2)
  8-bit            weights in 8 bits: what export uses on CPUs with VNNI / AMX (nothing saturates)
  8-bit + Pad      8-bit, and the (frozen TF-"same") Pad ops quantized too: no float island around them
  per-tensor       8-bit, one scale per weight tensor instead of per output channel
  level=extended   export's choice for this CPU with ORT_ENABLE_EXTENDED instead of ALL
Each also gets its top-1 agreement with fp32 on real images (the gate's measure, >= 98 %).
Timing: interleaved rounds (fp32, then each variant), medians, the same threads for all; speed only
(the accuracy gate is export's: tests/test_export_real.py, bench/bench_export_int8.py). Then one
profiled run of export's choice at batch 16: seconds per op type (QLinearConv, Conv kept float,
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
    ap.add_argument("--parity-data", default=str(HYMENOPTERA / "val"), help="real images for top-1 agreement")
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
    from transferzoo.export.static_padding import freeze_same_padding
    from transferzoo.zoo import runtime

    torch.set_num_threads(args.threads)
    name = "efficientnet_lite0"
    pre = zoo.preprocessing(name)
    model = zoo.create(name, pretrained=True).eval()
    model, _ = freeze_same_padding(model, pre.input_size)  # as export does: static Pad + Conv, no Shape chains
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
            return quantize.quantize_int8(fp32, calib, weight_bits=8)
        finally:
            q.quantize_static = saved

    t = time.perf_counter()
    graphs = {
        "7-bit": quantize.quantize_int8(fp32, calib, weight_bits=7),
        "8-bit": quantize.quantize_int8(fp32, calib, weight_bits=8),
        "8-bit + Pad": quantize.quantize_int8(fp32, calib, weight_bits=8, op_types=(*quantize.INT8_OP_TYPES, "Pad")),
        "per-tensor": variant(per_channel=False),
    }
    chosen = f"{quantize.int8_weight_bits()}-bit"
    print(f"export's choice on this CPU: {chosen}")
    print(f"quantized {len(graphs)} variants in {time.perf_counter() - t:.0f} s")
    sessions = {"fp32": runtime.session(fp32, args.threads, spinning=True)}
    for k, g in graphs.items():
        sessions[k] = runtime.session(g, args.threads, spinning=True)
    sessions["level=extended"] = runtime.session(graphs[chosen], args.threads, spinning=True, opt_level="extended")
    inp = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    # top-1 agreement with fp32 on real images (the gate's measure; the gate wants >= 98 %)
    real = prepare(from_folder(args.parity_data), pre).float
    top1 = {
        k: np.concatenate([s.run(None, {inp[k]: real[i : i + 16]})[0].argmax(1) for i in range(0, len(real), 16)])
        for k, s in sessions.items()
    }
    for k in sessions:
        if k != "fp32":
            print(
                f"{k:<16} top-1 agreement with fp32 on {len(real)} real images: {(top1[k] == top1['fp32']).mean():.2%}"
            )
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
        s = ort.InferenceSession(graphs[chosen].SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = rng.standard_normal((16, *pre.input_size)).astype(np.float32)
        for _ in range(4):
            s.run(None, {s.get_inputs()[0].name: x})
        prof = json.loads(Path(s.end_profiling()).read_text())
    by_op: Counter = Counter()
    for ev in prof:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev["args"].get("op_name", "?")] += ev["dur"]
    total = sum(by_op.values()) or 1
    print(f"\n{chosen} int8 graph at batch 16, share of kernel time by op type (4 runs, after ORT's fusions):")
    for op, us in by_op.most_common(12):
        print(f"  {op:<28s} {us / total:6.1%}  {us / 4e3:8.2f} ms/run")
    g = graphs[chosen].graph
    float_ops = Counter(n.op_type for n in g.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
    print(f"int8 graph nodes (before ORT fuses QDQ pairs into QLinear ops): {dict(float_ops)}")
    print(
        f"QuantizeLinear {sum(n.op_type == 'QuantizeLinear' for n in g.node)}, "
        f"DequantizeLinear {sum(n.op_type == 'DequantizeLinear' for n in g.node)}; fp32 nodes: "
        f"{dict(Counter(n.op_type for n in onnx.load_from_string(fp32.SerializeToString()).graph.node))}"
    )


if __name__ == "__main__":
    main()
