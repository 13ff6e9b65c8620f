"""export: a run directory, checkpoint, zoo model or ensemble -> a verified ONNX file."""

from __future__ import annotations

import argparse
import sys

from ._common import SettingFlags, print_json, stderr_log


def register(sub: argparse._SubParsersAction) -> None:
    from transferzoo.export.options import ExportOptions

    global EXPORT_FLAGS
    EXPORT_FLAGS = flags = SettingFlags(ExportOptions)
    p = sub.add_parser(
        "export",
        help="export to ONNX, verified against PyTorch on real images before anything is written",
        description="Export SOURCE (a run directory, a checkpoint file, a zoo model name) or an ensemble of run "
        "directories to ONNX. The graph is checked (onnx.checker, strict shape inference) and compared "
        "with PyTorch on random inputs and real images; a failing gate writes nothing and exits 1.",
    )
    p.add_argument("source", nargs="?", help="run directory, checkpoint file or zoo model name")
    flags.add(
        p, "--out", "out", "output MODEL.onnx (its parity report goes to MODEL.parity.json)", metavar="MODEL.onnx"
    )
    flags.add(p, "--opset", "opset", "ONNX opset (default 18)")
    flags.add(
        p, "--exporter", "exporter", "auto: TorchScript-based first, dynamo if that fails to export or to pass parity"
    )
    flags.add(p, "--quantize", "quantize", "static int8 (QDQ, per-channel) or float16")
    flags.add(
        p, "--calibration", "calibration", "int8 calibration images (default: the run's train split)", metavar="DIR"
    )
    flags.add(
        p,
        "--parity-data",
        "parity_data",
        "real images for the parity gate (default: the run's val split, or scikit-image sample photos)",
        metavar="DIR",
    )
    flags.add(
        p,
        "--with-preprocessing",
        "with_preprocessing",
        "graph input is uint8 RGB N x H x W x 3; normalisation happens in the graph",
    )
    p.add_argument("--ensemble", nargs="+", metavar="RUN", help="run directories to average (probabilities)")
    p.add_argument("--model", help="zoo architecture of a bare checkpoint file")
    p.add_argument("--labels", metavar="FILE", help="class names for a bare checkpoint (JSON list or one per line)")
    p.add_argument("--random-weights", action="store_true", help="zoo model with random weights (speed tests only)")
    flags.add(p, "--parity-limit", "parity_limit", "at most this many real images for parity (200)")
    flags.add(p, "--calibration-limit", "calibration_limit", "at most this many calibration images (128)")
    flags.add(p, "--threads", "threads", "torch and onnxruntime threads (2)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")
    p.set_defaults(func=cmd_export)


EXPORT_FLAGS: SettingFlags  # bound in register()


def cmd_export(args) -> int:
    import torch

    from transferzoo.export.errors import GateError
    from transferzoo.export.options import ExportOptions
    from transferzoo.export.pipeline import export
    from transferzoo.export.sources import load_source

    opts = EXPORT_FLAGS.apply(ExportOptions(), args)
    if opts.out is None:
        raise ValueError("--out MODEL.onnx is required")
    torch.set_num_threads(opts.threads)
    source = load_source(
        args.source,
        ensemble=args.ensemble,
        model_name=args.model,
        labels_file=args.labels,
        random_weights=args.random_weights,
    )
    try:
        result = export(source, opts, log=stderr_log(args.json))
    except GateError as e:
        if args.json:
            print_json(e.report)
        print(f"error: {e}", file=sys.stderr)
        return 1
    r = result.report
    if args.json:
        print_json(r)
        return 0
    print(
        f"{result.path}  ({r['precision']}, exporter {r['exporter']}, opset {r['opset']}, "
        f"{r['input_format']}, {r['size_bytes'] / 1e6:.1f} MB)"
    )
    print(
        f"checks: onnx.checker full_check passed, strict shape inference passed; "
        f"{r['images']['count']} real images from {r['images']['origin']}"
    )
    for stage in ("fp32", r["precision"]) if r["precision"] != "fp32" else ("fp32",):
        for c in r[stage]:
            acc = ""
            if c["accuracy_onnx"] is not None:
                acc = f"  accuracy {c['accuracy_reference']:.2%} -> {c['accuracy_onnx']:.2%}"
            print(
                f"  {stage} vs {c['reference']:<9} {c['name']:<14} max|diff| {c['max_abs_diff']:.2e}  "
                f"min cos {c['min_cosine']:.6f}  top-1 agree {c['top1_agreement']:.2%}{acc}"
            )
    print(f"parity report: {result.report_path}")
    return 0
