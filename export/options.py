"""`transferzoo export` settings (torch-free, so the pipeline file can be checked without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferzoo.zoo.config import Config, ConfigError, setting

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 18
OPSET_RANGE = (13, 20)  # 13: per-channel QuantizeLinear; 20: what both exporters handle here
QUANTIZE = (None, "int8", "fp16")


@dataclass(frozen=True)
class ExportOptions(Config):
    """`transferzoo export` settings; the pipeline's `export:` section is the same class."""

    out: Path | None = None  # MODEL.onnx (its parity report goes to MODEL.parity.json)
    opset: int = setting(DEFAULT_OPSET, ge=OPSET_RANGE[0], le=OPSET_RANGE[1])
    exporter: str = setting("auto", choices=("auto",) + EXPORTERS)
    quantize: str | None = setting(None, choices=QUANTIZE)  # int8: static QDQ, per-channel; fp16
    calibration: Path | None = None  # int8 calibration images (default: the run's train split)
    parity_data: Path | None = None  # real images for the gate (default: the run's val split, or sample photos)
    with_preprocessing: bool = False  # uint8 NHWC RGB pixels in, normalisation inside the graph
    parity_limit: int = setting(200, ge=1)
    calibration_limit: int = setting(128, ge=1)
    threads: int = setting(2, ge=1)  # torch and onnxruntime threads for the checks

    def check(self):
        if self.out is not None:
            if self.out.suffix != ".onnx":
                raise ConfigError("out", f"must end in .onnx, got {self.out}")
            if self.out.is_dir():
                raise ConfigError("out", f"{self.out} is a directory")
        if self.calibration is not None and self.quantize != "int8":
            raise ConfigError("calibration", "only applies to quantize: int8")

    def check_paths(self) -> None:
        """The image folders exist (checked where they are used: a pipeline file's paths are
        relative to the file until it is resolved)."""
        for name in ("calibration", "parity_data"):
            v = getattr(self, name)
            if v is not None and not v.is_dir():
                raise ConfigError(name, f"{v}: not a directory (expected a folder of real images)")

    @property
    def report_path(self) -> Path:
        return self.out.with_suffix(".parity.json")
