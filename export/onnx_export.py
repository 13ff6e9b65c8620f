"""torch -> ONNX with either exporter, batch dimension dynamic, H and W fixed.

Two exporters ship with torch: the TorchScript-based tracer (`dynamo=False`) and the
torch.export-based one (`dynamo=True`). For timm CNNs the tracer is ~10x faster to run and its
graphs are what onnxruntime fuses best, so `auto` tries it first and falls back to dynamo when it
fails to export or its graph fails the parity gate (see `export.pipeline`). Families listed in
`PREFERRED` start with another order. Which one was used is reported and stored in the metadata.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn

from transferzoo.zoo import runtime
from transferzoo.zoo.fileio import atomic_write

from .errors import ExportError
from .options import DEFAULT_OPSET, EXPORTERS, OPSET_RANGE

PREFERRED: dict[str, tuple[str, ...]] = {}  # family -> order, where the default order is not the best


def exporter_order(choice: str, family: str) -> tuple[str, ...]:
    if choice == "auto":
        return PREFERRED.get(family, EXPORTERS)
    if choice not in EXPORTERS:
        raise ValueError(f"exporter must be auto, {' or '.join(EXPORTERS)}; got {choice!r}")
    return (choice,)


@contextlib.contextmanager
def _quiet():
    """Exporters print progress, IR dumps (from C++, straight to file descriptor 1) and deprecation
    warnings; send all of it to stderr so stdout stays clean for --json."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    exporter: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_names: tuple[str, ...] = ("logits",),
) -> onnx.ModelProto:
    """Export `module` (eval mode) traced at `example`; dimension 0 of the input and of every output
    is dynamic ('batch'). The one place that calls torch.onnx.export."""
    module = module.eval()
    names = list(output_names)
    with torch.no_grad(), _quiet():
        if exporter == "torchscript":
            buf = io.BytesIO()
            torch.onnx.export(
                module,
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=names,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *names]},
                do_constant_folding=True,
            )
            return onnx.load_from_string(buf.getvalue())
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                output_names=names,
                dynamic_shapes=({0: batch},),
                optimize=True,
                verbose=False,
            )
            return prog.model_proto
    raise ValueError(f"unknown exporter {exporter!r}")


def max_relative_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest |got - want| over all outputs, each relative to its output's scale (at least 1)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return float("inf")
        worst = max(worst, float(np.abs(g - w).max() / max(1.0, float(np.abs(w).max()))))
    return worst


def verified_session(
    module: nn.Module,
    path: str | os.PathLike,
    check_inputs: torch.Tensor,
    *,
    output_names: tuple[str, ...] = ("output",),
    input_name: str = "input",
    tol: float = 1e-3,
    threads: int = 0,
    providers: list | None = None,
):
    """torch module -> ONNX file at `path` (atomically) -> an onnxruntime session that is proven to
    compute what the module computes on `check_inputs` (real images where there are some): max
    |onnxruntime - torch| relative to each output's scale <= `tol`, else RuntimeError and no file.
    Returns (session, the measured difference)."""
    module = module.eval()
    graph = to_onnx(module, check_inputs[:2], "torchscript", DEFAULT_OPSET, input_name, output_names)
    onnx.checker.check_model(graph)
    sess = runtime.session(graph, threads, providers=providers)
    with torch.inference_mode():
        want = module(check_inputs)
    want = [t.float().numpy() for t in (want if isinstance(want, (tuple, list)) else (want,))]
    got = sess.run(None, {input_name: np.ascontiguousarray(check_inputs.numpy(), dtype=np.float32)})
    worst = max_relative_diff(got, want)
    if worst > tol:
        raise RuntimeError(f"onnxruntime disagrees with PyTorch by {worst:.2e} (> {tol}) on {len(check_inputs)} inputs")
    atomic_write(path, graph.SerializeToString())
    return sess, worst


_OP_PATTERNS = (
    r"ONNX export of operator ([\w:.]+)",
    r"operator ['\"]?([\w:.]+)['\"]? (?:is not supported|not supported)",
    r"(aten::[\w.]+)",
    r"(aten\.[\w.]+)",
    r"OpOverload\(op='([\w.:]+)'",
)


def failing_op(exc: BaseException) -> str | None:
    """The operator an exporter complained about, from its message (None when it names none)."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    for pat in _OP_PATTERNS:
        m = re.search(pat, text)
        if m:
            return m.group(1)
    return None


def explain(model_name: str, opset: int, failures: list[dict]) -> ExportError:
    """One error for every exporter that failed: the op, the model, and what to try."""
    ops = sorted({f["op"] for f in failures if f.get("op")})
    what = f"operator {', '.join(ops)}" if ops else "the model"
    lines = [f"cannot export {model_name} to ONNX: {what} could not be converted."]
    for f in failures:
        lines.append(f"  {f['exporter']} exporter (opset {opset}): {f['error']}")
    tried = {f["exporter"] for f in failures}
    hints = []
    if tried != set(EXPORTERS):
        other = next(e for e in EXPORTERS if e not in tried)
        hints.append(f"try the other exporter: --exporter {other}")
    if opset < OPSET_RANGE[1]:
        hints.append(f"try a newer opset: --opset {OPSET_RANGE[1]} (newer opsets add operators)")
    hints.append("replace the custom layer with a standard torch module (timm exportable layers are used already)")
    lines.append("Hints: " + "; ".join(hints))
    return ExportError("\n".join(lines))


def short_error(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:limit]}{'...' if len(msg) > limit else ''}"
