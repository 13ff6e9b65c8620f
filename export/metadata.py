"""The metadata written into every exported file (`metadata_props`), as documented in
export/ONNX_METADATA.md: string values, lists and objects JSON-encoded."""

from __future__ import annotations

import json

import onnx

FORMAT_VERSION = "1"


def build(
    source, *, input_format: str, exporter: str, parity: dict, precision: str = "fp32", opset: int | None = None
) -> dict[str, str]:
    """Every key of the table in ONNX_METADATA.md, for `source` (an export.sources.Source)."""
    import timm
    import torch

    pre = source.preprocessing
    meta = {
        "transferzoo.format": FORMAT_VERSION,
        "labels": json.dumps(list(source.labels)),
        "input_format": input_format,
        "output_format": source.output_format,
        "input_size": json.dumps(list(pre.input_size)),
        "mean": json.dumps(list(pre.mean)),
        "std": json.dumps(list(pre.std)),
        "interpolation": pre.interpolation,
        "crop_pct": json.dumps(pre.crop_pct),
        "crop_mode": pre.crop_mode,
        "source_model": source.source_model,
        "weights_sha256": source.weights_sha256 or "",
        "checkpoint_sha256": source.checkpoint_sha256 or "",
        "source_kind": source.kind,
        "run_summary": json.dumps(source.run_summary or {}, default=str),
        "parity": json.dumps(parity, default=str),
        "exporter": exporter,
        "precision": precision,
        "opset": str(opset or ""),
        "export_versions": json.dumps({"torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__}),
    }
    if source.members:
        meta["ensemble_members"] = json.dumps([m.describe() for m in source.members], default=str)
    return meta


def attach(model: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    model.producer_name = "transferzoo"
    return model


def read(path_or_model) -> dict:
    """The metadata of an exported file, JSON values decoded (for tests and tools)."""
    model = (
        path_or_model
        if isinstance(path_or_model, onnx.ModelProto)
        else onnx.load(str(path_or_model), load_external_data=False)
    )
    out = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out
