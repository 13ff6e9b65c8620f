"""export: a run directory, checkpoint, zoo model or ensemble -> a verified ONNX file."""
from __future__ import annotations

import argparse
import sys

from ._common import print_json

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export to ONNX, verified against PyTorch on real images before anything is written",
        description="Export SOURCE (a run directory, a checkpoint file, a zoo model name) or an ensemble of run "
                    "directories to ONNX. The graph is checked (onnx.checker, strict shape inference) and compared "
                    "with PyTorch on random inputs and real images; a failing gate writes nothing and exits 1.")
    p.add_argument("source", nargs="?", help="run directory, checkpoint file or zoo model name")
    p.add_argument("--out", required=True, help="output MODEL.onnx (its parity report goes to MODEL.parity.json)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="auto: TorchScript-based first, dynamo if that fails to export or to pass parity")
    p.add_argument("--quantize", choices=("int8", "fp16"), help="static int8 (QDQ, per-channel) or float16")
    p.add_argument("--calibration", metavar="DIR", help="int8 calibration images (default: the run's train split)")
    p.add_argument("--parity-data", metavar="DIR",
                   help="real images for the parity gate (default: the run's val split, or scikit-image sample photos)")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="graph input is uint8 RGB N x H x W x 3; normalisation happens in the graph")
    p.add_argument("--ensemble", nargs="+", metavar="RUN", help="run directories to average (probabilities)")
    p.add_argument("--model", help="zoo architecture of a bare checkpoint file")
    p.add_argument("--labels", metavar="FILE", help="class names for a bare checkpoint (JSON list or one per line)")
    p.add_argument("--random-weights", action="store_true", help="zoo model with random weights (speed tests only)")
    p.add_argument("--parity-limit", type=int, default=200, help="at most this many real images for parity")
    p.add_argument("--calibration-limit", type=int, default=128, help="at most this many calibration images")
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")
    p.set_defaults(func=cmd_export)


def _log(quiet: bool):
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)
    return log


def cmd_export(args) -> int:
    import torch

    from transferzoo.export.errors import GateError
    from transferzoo.export.onnx_export import DEFAULT_OPSET
    from transferzoo.export.pipeline import ExportOptions, export
    from transferzoo.export.sources import load_source

    opts = ExportOptions(out=args.out, opset=args.opset or DEFAULT_OPSET, exporter=args.exporter, quantize=args.quantize,
                         calibration=args.calibration, parity_data=args.parity_data,
                         with_preprocessing=args.with_preprocessing, parity_limit=args.parity_limit,
                         calibration_limit=args.calibration_limit, threads=args.threads)
    torch.set_num_threads(opts.threads)
    source = load_source(args.source, ensemble=args.ensemble, model_name=args.model, labels_file=args.labels,
                         random_weights=args.random_weights)
    try:
        result = export(source, opts, log=_log(args.json))
    except GateError as e:
        if args.json:
            print_json(e.report)
        print(f"error: {e}", file=sys.stderr)
        return 1
    r = result.report
    if args.json:
        print_json(r)
        return 0
    print(f"{result.path}  ({r['precision']}, exporter {r['exporter']}, opset {r['opset']}, "
          f"{r['input_format']}, {r['size_bytes'] / 1e6:.1f} MB)")
    print(f"checks: onnx.checker full_check passed, strict shape inference passed; "
          f"{r['images']['count']} real images from {r['images']['origin']}")
    for stage in ("fp32", r["precision"]) if r["precision"] != "fp32" else ("fp32",):
        for c in r[stage]:
            acc = ""
            if c["accuracy_onnx"] is not None:
                acc = f"  accuracy {c['accuracy_reference']:.2%} -> {c['accuracy_onnx']:.2%}"
            print(f"  {stage} vs {c['reference']:<9} {c['name']:<14} max|diff| {c['max_abs_diff']:.2e}  "
                  f"min cos {c['min_cosine']:.6f}  top-1 agree {c['top1_agreement']:.2%}{acc}")
    print(f"parity report: {result.report_path}")
    return 0
