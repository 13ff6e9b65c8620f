"""Smaller / faster variants of a verified fp32 graph.

int8: onnxruntime's static quantization in QDQ format, per-channel int8 weights, uint8 activations
(the u8s8 pair is onnxruntime's fast path on x86 VNNI), calibrated with MinMax on real training
images. The graph first goes through `quant_pre_process` (symbolic shape inference + onnxruntime's
basic optimisations: Conv+BN folding, constant folding), which the quantizer needs to see fusable
patterns. Quantized op types include Clip and Relu: the quantizer then folds each activation into
the preceding Conv's output range. Without them every ReLU6 sits between a DequantizeLinear and a
QuantizeLinear and the int8 graph is *slower* than fp32 (measured: 0.7-1.0x on EfficientNet-Lite0).

Two choices keep the int8 graph within the gate. On CPUs without VNNI (AVX2 only, measured on hymenoptera
val: top-1 agreement with fp32 96.1% -> 98.0%, accuracy drop 2.0 -> 0.7 points) weights are quantized to
7 bits (`reduce_range`), because AVX2's u8 x s8 multiply-add saturates its int16 intermediate with full
8-bit weights. On CPUs with VNNI or AMX (avx512_vnni / avx_vnni / amx_int8: products accumulate in int32,
nothing saturates) the weights keep all 8 bits: 7 bits there only cost precision (lite0 with its ImageNet
head, 153 hymenoptera val photos: 94.8% top-1 agreement with 7 bits, 99.3% with 8;
bench/bench_int8_batch.py). Since the gate runs on the exporting machine's kernels, an int8 file is
checked for CPUs like that one; `weight_bits` records which. And the head after the last global
pooling stays float: it is a few small matrices, costs nothing to keep, and is where a fitted head's
narrow margins between classes live.

The stem's input channels are padded to 4 (`pad_stem_channels`: a zero channel in a Pad before the
first conv, zero weights for it; the float graph's outputs are unchanged, to the bit). onnxruntime's
fast int8 convs on x86 (MLAS's "symmetric" kernels: indirect, requantization fused) need input channels
% 4 == 0; a 3-channel RGB stem falls back to im2col + a generic u8s8 GEMM and is slower int8 than fp32
(lite0, batch 16, 1 thread: 5.5 ms vs 4.3 ms fp32; padded: 3.5 ms plus 0.7 ms for the Pad). Measured
on an AVX-512 VNNI EPYC, 1 thread, CPU time per run (bench/bench_int8_batch.py): int8 vs fp32 1.74x ->
1.92x at batch 1, 2.23x -> 2.32x at batch 16. Keeping the stem float instead gains as much at batch 1
but loses at batch 16 (reordering and quantizing its 32-channel output). Keeping any conv float mid-graph
does not work as one would think: onnxruntime's WeightBiasQuantization pass gives a float Conv between
a DequantizeLinear and a QuantizeLinear per-tensor int8 weights when the session loads (depthwise convs
"kept float" that way: top-1 agreement 98.7% -> 87.6%; really float: 0.7-1.4x, slower than fp32).

fp16: weights and activations in float16, inputs and outputs kept float32 (keep_io_types), via
onnxconverter-common's converter when installed, else the same converter shipped in onnxruntime.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "Clip", "Relu", "Add")
POOLING_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")


def head_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes downstream of the last global pooling (the classifier head), in graph order.

    The *last* pooling in topological order: squeeze-excite blocks pool too, mid-network."""
    pools = [i for i, n in enumerate(graph.node) if n.op_type in POOLING_OPS]
    if not pools:
        return []
    reached = set(graph.node[pools[-1]].output)
    head = []
    for n in graph.node[pools[-1] + 1 :]:
        if reached.intersection(n.input):
            reached.update(n.output)
            head.append(n.name)
    return head


SYMMETRIC_CONV_CHANNEL_MULTIPLE = 4  # MLAS's int8 symmetric conv kernels need input channels % 4 == 0


def pad_stem_channels(graph: onnx.GraphProto, multiple: int = SYMMETRIC_CONV_CHANNEL_MULTIPLE) -> str | None:
    """Pad the first Conv's input channels up to `multiple` (see the module docstring), in place: a
    constant-zero Pad on its input and zero weights for the new channels. Returns the conv's name, or
    None where nothing was padded (already a multiple, grouped, or weights not an initializer)."""
    from onnx import helper, numpy_helper

    convs = [n for n in graph.node if n.op_type == "Conv"]
    weights = {t.name: t for t in graph.initializer}
    if not convs or convs[0].input[1] not in weights:
        return None
    stem = convs[0]
    group = next((a.i for a in stem.attribute if a.name == "group"), 1)
    w = numpy_helper.to_array(weights[stem.input[1]])
    extra = -w.shape[1] % multiple
    if group != 1 or extra == 0:
        return None
    zeros = np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)
    weights[stem.input[1]].CopyFrom(numpy_helper.from_array(np.concatenate([w, zeros], axis=1), stem.input[1]))
    rank = w.ndim
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + 1] = extra  # channels (axis 1), at the end
    pads_name, padded = f"{stem.name}_channel_pads", f"{stem.input[0]}_channel_padded"
    graph.initializer.append(numpy_helper.from_array(pads, pads_name))
    pad = helper.make_node("Pad", [stem.input[0], pads_name], [padded], name=f"{stem.name}_channel_pad")
    stem.input[0] = padded
    graph.node.insert(list(graph.node).index(stem), pad)
    return stem.name


INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products that accumulate in int32


def cpu_flags() -> set[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(ln.split(":", 1)[1].split()) for ln in f if ln.startswith("flags")), set())
    except OSError:
        return set()


def int8_weight_bits(flags: set[str] | None = None) -> int:
    """8 where the CPU has VNNI / AMX int8 dot products, else 7 (see the module docstring)."""
    flags = cpu_flags() if flags is None else flags
    return 8 if any(f in flags for f in INT8_DOT_FLAGS) else 7


def quantize_int8(
    fp32: onnx.ModelProto,
    calibration: np.ndarray,
    batch_size: int = 8,
    op_types: tuple[str, ...] = INT8_OP_TYPES,
    weight_bits: int | None = None,
    pad_stem: bool = True,
) -> onnx.ModelProto:
    """Static QDQ int8 quantization calibrated on `calibration` (the graph's input format);
    `weight_bits` 7 or 8 (None: `int8_weight_bits()` for this CPU); `pad_stem`: `pad_stem_channels`
    first."""
    weight_bits = int8_weight_bits() if weight_bits is None else weight_bits
    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = fp32.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(0, len(calibration), batch_size))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {input_name: calibration[i : i + batch_size]}

    with tempfile.TemporaryDirectory(prefix="transferzoo-quant-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(fp32, src)
        quant_pre_process(str(src), str(pre))
        prepared = onnx.load(str(pre))
        for i, n in enumerate(prepared.graph.node):
            n.name = n.name or f"{n.op_type}_{i}"  # nodes_to_exclude matches by name
        if pad_stem:
            pad_stem_channels(prepared.graph)  # after quant_pre_process, which fuses the TF-same Pad into the Conv
        onnx.save(prepared, pre)
        cwd = os.getcwd()
        os.chdir(tmp)  # the calibrator writes augmented_model.onnx into the current directory in some versions
        try:
            quantize_static(
                str(pre),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(op_types),
                nodes_to_exclude=head_nodes(prepared.graph),
                reduce_range=weight_bits == 7,
            )
        finally:
            os.chdir(cwd)
        return onnx.load(str(out))


def to_fp16(fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """float16 weights and compute, float32 inputs/outputs; and which converter did it."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16

        tool = "onnxconverter-common"
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        tool = "onnxruntime.transformers.float16"
    model = convert_float_to_float16(fp32, keep_io_types=True)
    toposort(model.graph)  # the converter appends its input Casts at the end of the node list
    return model, tool


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an input nobody produces: " + pending[0].name)
        for n in ready:
            available.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
