"""export(source, options): build the graph, prove it, package it, write it — in that order.

1. Real images: `--parity-data DIR`, else the run's val split, else scikit-image's sample photos.
2. The module to export: TF-'same' convs frozen at the fixed input size (export.static_padding),
   wrapped with in-graph preprocessing when asked (export.preprocess_graph).
3. For each exporter in order (export.onnx_export): export, `onnx.checker.check_model(full_check=True)`,
   strict shape inference, then parity against the *original* PyTorch module on random inputs at
   batch 1 and 3 (proves the dynamic batch axis) and on the real images. The first graph that passes
   everything is kept; one that fails is reported and the next exporter tried.
4. `--quantize int8|fp16`: convert the verified graph, check it again, gate it against the fp32 graph
   on the real images (export.parity tolerances).
5. Metadata (export.metadata) into the file; model and parity report written atomically, together.
   Nothing is written if any step fails: an existing file at the output path stays as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from transferzoo import zoo
from transferzoo.zoo import runtime
from transferzoo.zoo.config import ConfigError
from transferzoo.zoo.fileio import atomic_commit, json_bytes

from . import images, metadata, onnx_export, parity, quantize
from .errors import ExportError, GateError
from .options import ExportOptions
from .preprocess_graph import WithPreprocessing
from .sources import Source
from .static_padding import freeze_same_padding

RANDOM_BATCHES = (1, 3)


@dataclass
class ExportResult:
    path: Path
    report_path: Path
    report: dict


def parity_images(source: Source, opts: ExportOptions) -> images.Batch:
    if opts.parity_data is not None:
        imgs = images.from_folder(opts.parity_data, source.labels)
    elif "val" in source.splits:
        imgs = source.splits["val"]
    else:
        imgs = images.sample_photos()
    try:
        return images.prepare(imgs.subset(opts.parity_limit), source.preprocessing)
    except zoo.ZooError as e:
        raise zoo.ZooError(f"{e}; pass --parity-data DIR (real images, ideally in class sub-folders)") from None


def calibration_images(source: Source, opts: ExportOptions) -> images.Batch:
    if opts.calibration is not None:
        imgs = images.from_folder(opts.calibration, source.labels)
    elif "train" in source.splits:
        imgs = source.splits["train"]
    else:
        raise zoo.ZooError(
            "--quantize int8 needs calibration images: this source has no train split, "
            "pass --calibration DIR (a folder of real images like the ones it will see)"
        )
    return images.prepare(imgs.subset(opts.calibration_limit), source.preprocessing)


def _torch_out(module: torch.nn.Module, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [module(torch.from_numpy(x[i : i + batch_size])).float().numpy() for i in range(0, len(x), batch_size)]
        )


def structural_checks(model: onnx.ModelProto) -> None:
    """onnx.checker with full_check and strict shape inference; raises on the first problem."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def _random_inputs(pre: zoo.Preprocessing, uint8: bool, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    c, h, w = pre.input_size
    if uint8:
        return {b: rng.integers(0, 256, size=(b, h, w, c), dtype=np.uint8) for b in RANDOM_BATCHES}
    return {b: rng.standard_normal((b, c, h, w)).astype(np.float32) for b in RANDOM_BATCHES}


def _verify(
    model: onnx.ModelProto,
    checks: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    tol: parity.Tolerance,
    threads: int,
    reference_name: str,
) -> list[parity.Comparison]:
    sess = runtime.session(model, threads)
    return [
        parity.compare(name, ref, parity.onnx_outputs(sess, x), tol, labels, reference_name)
        for name, x, ref, labels in checks
    ]


def export(source: Source, opts: ExportOptions, log=lambda msg: None) -> ExportResult:
    """Export `source` per `opts`; raises ExportError (no graph), GateError (a graph failed a check)."""
    if opts.out is None:
        raise ConfigError("out", "required: the MODEL.onnx file to write")
    opts.check_paths()
    t0 = time.perf_counter()
    pre = source.preprocessing
    uint8 = opts.with_preprocessing
    if opts.quantize == "int8" and opts.calibration is None and "train" not in source.splits:
        calibration_images(source, opts)  # fails now, with its message, not after the fp32 export
    batch = parity_images(source, opts)
    log(
        f"parity images: {len(batch.names)} from {batch.origin}"
        + (f" ({len(batch.skipped)} unreadable skipped)" if batch.skipped else "")
    )

    reference = source.model.eval()
    frozen, n_frozen = freeze_same_padding(reference, pre.input_size)
    if uint8:
        reference, frozen = WithPreprocessing(reference, pre).eval(), WithPreprocessing(frozen, pre).eval()
    real_x = batch.uint8 if uint8 else batch.float
    random_x = _random_inputs(pre, uint8)
    checks = [(f"random batch {b}", x, _torch_out(reference, x), None) for b, x in random_x.items()]
    checks.append(("real images", real_x, _torch_out(reference, real_x), batch.labels))
    example = torch.from_numpy(random_x[RANDOM_BATCHES[-1]][:2])
    output_name = "probabilities" if source.output_format == "probabilities" else "logits"

    attempts: list[dict] = []
    chosen: tuple[str, onnx.ModelProto, list[parity.Comparison]] | None = None
    for exporter in onnx_export.exporter_order(opts.exporter, source.family):
        t = time.perf_counter()
        attempt: dict = {"exporter": exporter}
        attempts.append(attempt)
        try:
            graph = onnx_export.to_onnx(frozen, example, exporter, opts.opset, output_names=(output_name,))
        except Exception as e:  # any exporter failure: record it, try the next exporter
            attempt.update(stage="export", error=onnx_export.short_error(e), op=onnx_export.failing_op(e))
            log(f"{exporter}: export failed: {attempt['error']}")
            continue
        attempt["export_seconds"] = round(time.perf_counter() - t, 2)
        try:
            structural_checks(graph)
        except Exception as e:
            attempt.update(stage="checker", error=onnx_export.short_error(e))
            log(f"{exporter}: graph failed onnx checks: {attempt['error']}")
            continue
        comps = _verify(graph, checks, parity.FP32, opts.threads, "pytorch")
        attempt.update(stage="parity", comparisons=[c.to_dict() for c in comps], passed=all(c.passed for c in comps))
        if attempt["passed"]:
            chosen = (exporter, graph, comps)
            log(f"{exporter}: graph passed checks and fp32 parity ({attempt['export_seconds']} s)")
            break
        log(
            f"{exporter}: parity failed: "
            + "; ".join(f"{c.name}: {', '.join(c.failures)}" for c in comps if not c.passed)
        )

    report = {
        "output": str(opts.out),
        "source": source.describe(),
        "images": batch.describe(),
        "input_format": "uint8_nhwc" if uint8 else "float32_nchw",
        "opset": opts.opset,
        "same_padding_convs_frozen": n_frozen,
        "attempts": attempts,
    }
    if chosen is None:
        report["passed"] = False
        if all(a.get("stage") == "export" for a in attempts):
            raise ExportError(str(onnx_export.explain(source.source_model, opts.opset, attempts)))
        failed = [a for a in attempts if a.get("stage") != "export"]
        raise GateError(_gate_message("fp32", source, failed[-1]), report)

    exporter, graph, comps = chosen
    report["exporter"] = exporter
    report["checks"] = {"onnx_checker_full": "passed", "strict_shape_inference": "passed"}
    report["fp32"] = [c.to_dict() for c in comps]
    final, precision, all_comps = graph, "fp32", list(comps)

    if opts.quantize:
        final, qcomps, qinfo = _quantized(graph, source, opts, real_x, batch, log)
        precision = opts.quantize
        report[opts.quantize] = [c.to_dict() for c in qcomps]
        report["quantization"] = qinfo
        all_comps += qcomps
        if not all(c.passed for c in qcomps):
            report["passed"] = False
            raise GateError(
                _gate_message(opts.quantize, source, {"comparisons": [c.to_dict() for c in qcomps]}), report
            )

    report["passed"] = True
    report["precision"] = precision
    report["seconds"] = round(time.perf_counter() - t0, 1)
    summary = parity.summary(all_comps)
    metadata.attach(
        final,
        metadata.build(
            source,
            input_format=report["input_format"],
            exporter=exporter,
            parity=summary,
            precision=precision,
            opset=opts.opset,
        ),
    )
    data = final.SerializeToString()
    report["size_bytes"] = len(data)
    atomic_commit({opts.out: data, opts.report_path: json_bytes(report)})
    log(f"wrote {opts.out} ({len(data) / 1e6:.1f} MB) and {opts.report_path}")
    return ExportResult(opts.out, opts.report_path, report)


def _quantized(
    fp32: onnx.ModelProto, source: Source, opts: ExportOptions, real_x: np.ndarray, batch: images.Batch, log
):
    t = time.perf_counter()
    info: dict = {"precision": opts.quantize}
    if opts.quantize == "int8":
        calib = calibration_images(source, opts)
        bits = quantize.int8_weight_bits()
        info.update(
            calibration=calib.describe(),
            method=f"static QDQ, per-channel {bits}-bit int8 weights, uint8 activations, MinMax; "
            "head after pooling float; stem input channels padded to a multiple of 4",
            op_types=list(quantize.INT8_OP_TYPES),
            weight_bits=bits,
            weight_bits_reason="this CPU has VNNI/AMX int8 dot products"
            if bits == 8
            else "this CPU has no VNNI: 8-bit weights would saturate AVX2's int16 multiply-add",
            pad_stem=True,
            pad_stem_reason="onnxruntime's fast int8 conv kernels need input channels % 4 == 0; "
            "an RGB stem padded with a zero channel uses them (same fp32 outputs)",
        )
        log(f"int8: calibrating on {len(calib.names)} images from {calib.origin} ({bits}-bit weights)")
        model = quantize.quantize_int8(
            fp32, calib.uint8 if opts.with_preprocessing else calib.float, weight_bits=bits, pad_stem=info["pad_stem"]
        )
        tol = parity.INT8
    else:
        model, tool = quantize.to_fp16(fp32)
        info["converter"] = tool
        tol = parity.FP16
    info["seconds"] = round(time.perf_counter() - t, 1)
    try:
        structural_checks(model)
    except Exception as e:
        raise ExportError(
            f"the {opts.quantize} graph of {source.source_model} fails onnx checks: {onnx_export.short_error(e)}"
        ) from None
    ref_sess = runtime.session(fp32, opts.threads)
    sess = runtime.session(model, opts.threads)
    comps = []
    for b, x in _random_inputs(source.preprocessing, opts.with_preprocessing).items():
        out = parity.onnx_outputs(sess, x)  # dynamic batch still works; numbers reported, gate is on real images
        c = parity.compare(
            f"random batch {b}",
            parity.onnx_outputs(ref_sess, x),
            out,
            parity.Tolerance(tol.name, min_top1_agreement=0.0),
            None,
            "onnx fp32",
        )
        comps.append(c)
    comps.append(
        parity.compare(
            "real images",
            parity.onnx_outputs(ref_sess, real_x),
            parity.onnx_outputs(sess, real_x),
            tol,
            batch.labels,
            "onnx fp32",
        )
    )
    return model, comps, info


def _gate_message(stage: str, source: Source, attempt: dict) -> str:
    lines = [f"{stage} parity gate failed for {source.source_model}; nothing was written."]
    for c in attempt.get("comparisons", []):
        acc = ""
        if c.get("accuracy_onnx") is not None:
            acc = f", accuracy {c['accuracy_reference']:.2%} ({c['reference']}) vs {c['accuracy_onnx']:.2%} (onnx)"
        flag = "ok" if c["passed"] else "FAIL: " + "; ".join(c["failures"])
        lines.append(
            f"  {c['name']:<14} n={c['count']:<4} max|diff|={c['max_abs_diff']:.3g} min cos={c['min_cosine']:.6f} "
            f"top-1 agree={c['top1_agreement']:.2%}{acc}  {flag}"
        )
    if attempt.get("error"):
        lines.append(f"  {attempt['exporter']}: {attempt['error']}")
    return "\n".join(lines)
