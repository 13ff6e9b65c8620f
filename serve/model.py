"""An onnxruntime session with what export/ONNX_METADATA.md says about it: labels, input format,
preprocessing. No torch, no zoo: everything comes from the .onnx file."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferzoo.zoo import runtime

# onnxruntime type -> (KServe V2 datatype, numpy dtype)
ORT_TYPES: dict[str, tuple[str, type]] = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(double)": ("FP64", np.float64),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(bool)": ("BOOL", np.bool_),
}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Preprocess:
    """The eval transform: resize shorter side to H / crop_pct, centre crop H x W, then normalise
    (float32_nchw) or hand over RGB pixels (uint8_nhwc)."""

    input_format: str  # 'float32_nchw' | 'uint8_nhwc'
    size: tuple[int, int]  # H, W
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    crop_mode: str


@dataclass(frozen=True)
class ModelMeta:
    labels: tuple[str, ...] | None
    output_format: str  # 'logits' | 'probabilities'
    preprocess: Preprocess | None  # None: a plain ONNX file without transferzoo metadata (infer only)
    raw: dict[str, str]


def _json(raw: dict, key: str, path: str):
    try:
        return json.loads(raw[key])
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{path}: metadata {key!r} is not valid JSON: {raw[key]!r}") from None


def parse_metadata(raw: dict[str, str], path: str = "model") -> ModelMeta:
    """Metadata per export/ONNX_METADATA.md; errors name the file and the key."""
    labels = None
    if "labels" in raw:
        labels = _json(raw, "labels", path)
        if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
            raise ValueError(f"{path}: metadata 'labels' must be a JSON list of strings")
        labels = tuple(labels)
    output_format = raw.get("output_format", "logits")
    if output_format not in ("logits", "probabilities"):
        raise ValueError(f"{path}: metadata output_format must be 'logits' or 'probabilities', got {output_format!r}")
    pre = None
    if "input_size" in raw:
        fmt = raw.get("input_format", "float32_nchw")
        if fmt not in ("float32_nchw", "uint8_nhwc"):
            raise ValueError(f"{path}: metadata input_format must be 'float32_nchw' or 'uint8_nhwc', got {fmt!r}")
        size = _json(raw, "input_size", path)
        if not (
            isinstance(size, list)
            and len(size) == 3
            and size[0] == 3
            and all(isinstance(s, int) and 1 <= s <= 8192 for s in size)
        ):
            raise ValueError(f"{path}: metadata input_size must be [3, H, W], got {raw['input_size']!r}")
        mean = _json(raw, "mean", path) if "mean" in raw else [0.0, 0.0, 0.0]
        std = _json(raw, "std", path) if "std" in raw else [1.0, 1.0, 1.0]
        for key, v in (("mean", mean), ("std", std)):
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise ValueError(f"{path}: metadata {key} must be a list of 3 numbers, got {v!r}")
        if any(s == 0 for s in std):
            raise ValueError(f"{path}: metadata std must not contain 0")
        interp = raw.get("interpolation", "bilinear")
        if interp not in INTERPOLATIONS:
            raise ValueError(f"{path}: metadata interpolation must be one of {INTERPOLATIONS}, got {interp!r}")
        try:
            crop_pct = float(raw.get("crop_pct", "0.875"))
        except ValueError:
            raise ValueError(f"{path}: metadata crop_pct is not a number: {raw['crop_pct']!r}") from None
        if not 0.05 <= crop_pct <= 2.0:
            raise ValueError(f"{path}: metadata crop_pct must be in 0.05..2, got {crop_pct}")
        crop_mode = raw.get("crop_mode", "center")
        if crop_mode not in ("center", "squash", "border"):
            raise ValueError(f"{path}: metadata crop_mode must be center, squash or border, got {crop_mode!r}")
        pre = Preprocess(
            fmt,
            (size[1], size[2]),
            tuple(float(x) for x in mean),
            tuple(float(x) for x in std),
            interp,
            crop_pct,
            crop_mode,
        )
    return ModelMeta(labels, output_format, pre, dict(raw))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # KServe V2 name, e.g. FP32
    dtype: type  # numpy
    shape: tuple[int, ...]  # -1 for dynamic dimensions

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(arg, path: str) -> TensorSpec:
    if arg.type not in ORT_TYPES:
        raise ValueError(f"{path}: tensor {arg.name!r} has type {arg.type}, which this server does not handle")
    datatype, dtype = ORT_TYPES[arg.type]
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, dtype, shape)


class Model:
    """One served model: name, session, tensor specs and metadata. `run` may be called by several
    worker threads at once (serve.batcher's instances): onnxruntime's run is thread-safe."""

    def __init__(self, path: str | os.PathLike, name: str | None = None, threads: int = 0):
        self.path = os.fspath(path)
        self.name = name or Path(self.path).stem
        if not NAME_RE.match(self.name):
            raise ValueError(
                f"{self.path}: model name {self.name!r} must be letters, digits, '_', '.', '-' (rename the file "
                "or use NAME=PATH)"
            )
        try:
            self.session = runtime.session(self.path, threads)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise ValueError(f"{self.path}: onnxruntime cannot load this file ({e})") from None
        self.meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.inputs = tuple(_spec(a, self.path) for a in self.session.get_inputs())
        self.outputs = tuple(_spec(a, self.path) for a in self.session.get_outputs())
        self.output_names = [o.name for o in self.outputs]
        self.options = None  # ServeOptions from a Triton config.pbtxt (serve.repository); None: the server's
        # Dynamic batching needs a dynamic leading dimension on every tensor.
        self.batched = all(t.shape and t.shape[0] == -1 for t in self.inputs + self.outputs)
        pre = self.meta.preprocess
        if pre is not None:
            h, w = pre.size
            want = ("FP32", (-1, 3, h, w)) if pre.input_format == "float32_nchw" else ("UINT8", (-1, h, w, 3))
            got = self.inputs[0]
            if (
                got.datatype != want[0]
                or len(got.shape) != 4
                or any(g not in (-1, x) for g, x in zip(got.shape[1:], want[1][1:]))
            ):
                raise ValueError(
                    f"{self.path}: metadata says {pre.input_format} {list(want[1])} but input {got.name!r} is "
                    f"{got.datatype} {list(got.shape)}"
                )
        if self.meta.labels is not None and self.outputs[0].shape[-1] not in (-1, len(self.meta.labels)):
            raise ValueError(
                f"{self.path}: {len(self.meta.labels)} labels but output {self.outputs[0].name!r} has "
                f"{self.outputs[0].shape[-1]} classes"
            )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    def metadata(self) -> dict:
        """KServe V2 model metadata."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parameters": {k: v for k, v in self.meta.raw.items() if k not in ("labels", "run_summary", "parity")},
        }
