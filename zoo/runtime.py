"""onnxruntime sessions, built one way for the feature engine, the prefix cache, export's checks,
the benchmarks and the server (torch-free: `serve` uses it).

Settings, and why:
- intra-op threads = `threads` (0: onnxruntime's default, all cores), one inter-op thread and
  sequential execution: these CNNs are chains, so a second inter-op pool only adds contention;
- no spinning: onnxruntime's threads otherwise busy-wait between runs, stealing the cores that
  decode threads, the HTTP side or a second instance need (measured here: a batch-1 run ~4x slower
  with spinning on a shared 2-core machine, ~20% slower feature extraction);
- full graph optimisation (constant folding, Conv+BN/activation fusion, layout transforms).
"""

from __future__ import annotations

import os

OPT_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int = 0, *, spinning: bool = False, opt_level: str = "all", log_severity: int = 3):
    import onnxruntime as ort

    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: all cores), got {threads}")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if opt_level not in levels:
        raise ValueError(f"opt_level must be one of {', '.join(OPT_LEVELS)}, got {opt_level!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[opt_level]
    so.log_severity_level = log_severity
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return so


def session(model, threads: int = 0, *, providers: list | None = None, **options):
    """An InferenceSession for a path, serialized bytes or an onnx.ModelProto (CPU unless
    `providers` names others)."""
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(
        model, session_options(threads, **options), providers=providers or ["CPUExecutionProvider"]
    )
