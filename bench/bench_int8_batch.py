"""What limits INT8 at batch 1 and 16: int8 vs fp32 onnxruntime on EfficientNet-Lite0 for quantizer /
session variants, each with its top-1 agreement on real images, and where the time goes per conv kind.

    .venv/bin/python bench/bench_int8_batch.py [--calibration ../shared/datasets/hymenoptera/train]

Variants (export.quantize.quantize_int8: QDQ, per-channel int8 weights, uint8 activations, head
float, stem input padded to 4 channels; each row changes one thing):
  export           what export writes on this CPU (8-bit weights with VNNI/AMX, else 7)
  3-ch stem        the stem not padded (export's graph before): its int8 conv cannot use MLAS's
                   symmetric kernels (input channels % 4 != 0)
  float stem       the stem not padded, and kept float (the stem conv and its ReLU6 excluded)
  7-bit / 8-bit    the other weight width (reduce_range on or off)
  per-tensor       one scale per weight tensor instead of per output channel
  float dw         depthwise convs (group > 1) and their ReLU6 excluded from quantization, as
                   onnxruntime loads it: its WeightBiasQuantization pass re-quantizes them per-tensor
  float dw, no WBQ the same with that pass disabled: the depthwise convs really run fp32
  QOperator        QLinearConv etc. in the file instead of QDQ pairs onnxruntime fuses
  s8 act           int8 activations instead of uint8
  level=extended   export's graph with ORT_ENABLE_EXTENDED instead of ALL (no NHWC / NCHWc layouts)
Timing, two measures, both int8 vs fp32 in one process, interleaved rounds, medians:
  wall, --threads threads (spinning): what a caller sees; on shared cores it swings with the load;
  cpu, 1 thread: the calling thread's CPU time per run (time.thread_time), which other processes on
  the cores barely move: the kernels' own cost.
Then per conv at batch 16, 1 thread, from onnxruntime's profiler, summed by kind (stem, depthwise,
pointwise), for fp32 and export's int8 graph.
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

from bench_export_int8 import timed  # noqa: E402  (the same interleaved-median timer as the headline bench)


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return " ".join(have) or "none of avx2/avx512/vnni/amx"


def conv_profile(model, x: np.ndarray, kinds: list[str], runs: int = 4) -> dict[str, float]:
    """ms per run by conv kind (the graph's Convs in order, fused or quantized) and other ops, 1 thread."""
    import onnxruntime as ort

    from transferzoo.zoo import runtime

    with tempfile.TemporaryDirectory() as tmp:
        so = runtime.session_options(1)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "p")
        s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            s.run(None, {s.get_inputs()[0].name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = len(nodes) // (runs + 1)
    durations = defaultdict(list)
    ops = []
    for i, e in enumerate(nodes[per_run:]):
        durations[i % per_run].append(e["dur"])
        if i < per_run:
            ops.append(e["args"].get("op_name", "?"))
    out: Counter = Counter()
    conv_i = 0
    for i, op in enumerate(ops):
        us = statistics.median(durations[i])
        if op in ("Conv", "FusedConv", "QLinearConv"):
            out[kinds[conv_i] if conv_i < len(kinds) else "conv?"] += us / 1e3
            conv_i += 1
        else:
            out[op] += us / 1e3
    return dict(out)


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
    bits = quantize.int8_weight_bits()
    print(f"CPU flags: {cpu_flags()}; onnxruntime {ort.__version__}; load {os.getloadavg()}")
    print(f"export's choice on this CPU: {bits}-bit weights, stem input padded to 4 channels")

    real_quantize_static = q.quantize_static

    def variant(float_convs=None, pad_stem: bool = True, **overrides):
        """export's quantize_int8 with quantize_static arguments changed (it imports the function
        from onnxruntime.quantization when called); float_convs(conv nodes) picks convs to add, with
        the activation after each, to nodes_to_exclude (names from the prepared graph it is given)."""

        def patched(prepared, *a, **kw):
            kw.update(overrides)
            if float_convs is not None:
                g = onnx.load(prepared).graph
                keep = {n.name for n in float_convs([n for n in g.node if n.op_type == "Conv"])}
                outs = {o for n in g.node if n.name in keep for o in n.output}
                acts = {n.name for n in g.node if n.op_type in ("Clip", "Relu") and n.input[0] in outs}
                kw["nodes_to_exclude"] = list(kw["nodes_to_exclude"]) + sorted(keep | acts)
            return real_quantize_static(prepared, *a, **kw)

        q.quantize_static = patched
        try:
            return quantize.quantize_int8(fp32, calib, weight_bits=bits, pad_stem=pad_stem)
        finally:
            q.quantize_static = real_quantize_static

    def depthwise(convs):
        return [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]

    t = time.perf_counter()
    other_bits = 15 - bits
    graphs = {
        "export": quantize.quantize_int8(fp32, calib, weight_bits=bits),
        "3-ch stem": quantize.quantize_int8(fp32, calib, weight_bits=bits, pad_stem=False),
        "float stem": variant(float_convs=lambda convs: convs[:1], pad_stem=False),
        f"{other_bits}-bit": quantize.quantize_int8(fp32, calib, weight_bits=other_bits),
        "per-tensor": variant(per_channel=False),
        "float dw": variant(float_convs=depthwise),
        "QOperator": variant(quant_format=q.QuantFormat.QOperator),
        "s8 act": variant(activation_type=q.QuantType.QInt8),
    }
    print(f"quantized {len(graphs)} variants in {time.perf_counter() - t:.0f} s")

    def sessions(threads: int, spinning: bool) -> dict:
        ss = {"fp32": runtime.session(fp32, threads, spinning=spinning)}
        for k, g in graphs.items():
            ss[k] = runtime.session(g, threads, spinning=spinning)
        so = runtime.session_options(threads, spinning=spinning)
        ss["float dw, no WBQ"] = ort.InferenceSession(
            graphs["float dw"].SerializeToString(),
            so,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["WeightBiasQuantization"],
        )
        ss["level=extended"] = runtime.session(graphs["export"], threads, spinning=spinning, opt_level="extended")
        return ss

    wall_sessions = sessions(args.threads, spinning=True)
    inp = {k: s.get_inputs()[0].name for k, s in wall_sessions.items()}
    real = prepare(from_folder(args.parity_data), pre).float
    top1 = {
        k: np.concatenate([s.run(None, {inp[k]: real[i : i + 16]})[0].argmax(1) for i in range(0, len(real), 16)])
        for k, s in wall_sessions.items()
    }
    agreement = {k: float((top1[k] == top1["fp32"]).mean()) for k in wall_sessions}
    cpu_sessions = sessions(1, spinning=False)
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, *pre.input_size)).astype(np.float32) for b in (1, 16)}
    res = {}
    for b, x in xs.items():
        rounds = args.rounds if b == 1 else max(4, args.rounds // 2)
        res[("wall", b)] = timed(wall_sessions, x, rounds, time.perf_counter)
        res[("cpu", b)] = timed(cpu_sessions, x, rounds, time.thread_time)
    print(f"load after timing {os.getloadavg()} on {os.cpu_count()} CPUs")
    wall_head = f"wall, {args.threads} threads: b1"
    print(f"{'':<18}{'top-1 agr.':>11}  {wall_head:>22}{'b16':>8}  {'cpu, 1 thread: b1':>18}{'b16':>8}")
    for k in wall_sessions:
        cells = [res[(m, b)]["fp32"] / res[(m, b)][k] for m in ("wall", "cpu") for b in (1, 16)]
        print(f"{k:<18}{agreement[k]:>10.2%}  {cells[0]:>21.2f}x{cells[1]:>7.2f}x  {cells[2]:>17.2f}x{cells[3]:>7.2f}x")
    print(
        "fp32 ms: " + ", ".join(f"{m} b{b} {res[(m, b)]['fp32'] * 1e3:.1f}" for m in ("wall", "cpu") for b in (1, 16))
    )

    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    kinds = [
        "stem"
        if i == 0
        else "depthwise conv"
        if any(a.name == "group" and a.i > 1 for a in n.attribute)
        else "pointwise/dense conv"
        for i, n in enumerate(convs)
    ]
    prof = {
        k: conv_profile(g, xs[16], kinds)
        for k, g in (("fp32", fp32), ("3-ch stem", graphs["3-ch stem"]), ("export", graphs["export"]))
    }
    print("\nbatch 16, 1 thread, onnxruntime profiler, ms per run (median of 4 runs per node):")
    rows = sorted(set().union(*prof.values()), key=lambda r: -prof["fp32"].get(r, 0) - prof["export"].get(r, 0))
    print(f"  {'':<24}{'fp32':>9}{'3-ch stem':>11}{'export':>9}")
    for r in rows:
        print(
            f"  {r:<24}"
            + "".join(f"{prof[k].get(r, 0):>{w}.2f}" for k, w in (("fp32", 9), ("3-ch stem", 11), ("export", 9)))
        )
    print(
        f"  {'total':<24}"
        + "".join(f"{sum(prof[k].values()):>{w}.2f}" for k, w in (("fp32", 9), ("3-ch stem", 11), ("export", 9)))
    )


if __name__ == "__main__":
    main()
