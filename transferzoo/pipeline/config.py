"""The pipeline file (`transferzoo run PIPELINE.yaml`): typed sections validated before any work.

Unknown keys, wrong types and missing paths are reported with the key's path and what was
expected. Relative paths are relative to the YAML file's folder. The `fit` section is transfer's
own FitConfig (same keys as `transferzoo fit --config`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transferzoo.transfer.config import FitConfig, from_dict

QUANTIZE = (None, "int8", "fp16")


@dataclass
class ExportSection:
    enabled: bool = True
    opset: int | None = None  # None: export's default
    exporter: str = "auto"  # auto | torchscript | dynamo
    quantize: str | None = None  # null | int8 | fp16
    with_preprocessing: bool = False  # uint8 NHWC pixels in, normalisation inside the graph
    parity_data: str | None = None  # folder of class sub-folders; default: the run's val split
    calibration: str | None = None  # int8 calibration folder; default: the run's train split

    def validate(self, p="export"):
        if self.quantize not in QUANTIZE:
            raise ValueError(f"{p}.quantize: expected null, 'int8' or 'fp16', got {self.quantize!r}")
        if self.exporter not in ("auto", "torchscript", "dynamo"):
            raise ValueError(f"{p}.exporter: expected auto, torchscript or dynamo, got {self.exporter!r}")
        if self.calibration and self.quantize != "int8":
            raise ValueError(f"{p}.calibration: only used with quantize: int8")


@dataclass
class ServeSection:
    enabled: bool = True  # start the server on a free loopback port and send real images through it
    requests: int = 16  # validation images sent through tritonclient and the image endpoint
    max_batch: int = 32
    max_delay_ms: float = 5.0
    threads: int = 0  # onnxruntime threads per run (0: all cores)
    instances: int = 1  # concurrent onnxruntime runs (serve --instances)

    def validate(self, p="serve"):
        if not 1 <= self.requests <= 10_000:
            raise ValueError(f"{p}.requests: expected 1..10000, got {self.requests}")
        if not 1 <= self.max_batch <= 4096:
            raise ValueError(f"{p}.max_batch: expected 1..4096, got {self.max_batch}")
        if self.threads < 0:
            raise ValueError(f"{p}.threads: expected >= 0, got {self.threads}")
        if not 1 <= self.instances <= 64:
            raise ValueError(f"{p}.instances: expected 1..64, got {self.instances}")


@dataclass
class PipelineConfig:
    data: str = ""  # required: folder of class sub-folders (with or without train/ + val/)
    out: str = "runs/pipeline"
    fit: FitConfig = field(default_factory=FitConfig)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)

    def validate(self, base: Path = Path(".")) -> "PipelineConfig":
        if not self.data:
            raise ValueError("data: required: the folder of labelled images (class sub-folders)")
        self.data = _existing_dir(base, self.data, "data")
        self.out = str((base / self.out).resolve()) if not Path(self.out).is_absolute() else self.out
        for key in ("parity_data", "calibration"):
            if getattr(self.export, key):
                setattr(self.export, key, _existing_dir(base, getattr(self.export, key), f"export.{key}"))
        if self.fit.weights:
            w = (base / self.fit.weights) if not Path(self.fit.weights).is_absolute() else Path(self.fit.weights)
            if not w.is_file():
                raise ValueError(f"fit.weights: file {w} does not exist (expected a .safetensors or .pth weight file)")
            self.fit.weights = str(w.resolve())
        self.fit.validate()
        self.export.validate()
        self.serve.validate()
        if self.serve.enabled and not self.export.enabled:
            raise ValueError("serve.enabled: serving needs export.enabled: true (the server runs the exported ONNX file)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def stage_hash(self, *sections: str) -> str:
        """A fingerprint of the settings a stage depends on (a changed setting re-runs the stage)."""
        d = self.to_dict()
        blob = json.dumps({s: d[s] for s in sections}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _existing_dir(base: Path, value: str, key: str) -> str:
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_dir():
        raise ValueError(f"{key}: folder {path} does not exist (expected a folder of class sub-folders)")
    return str(path.resolve())


def load_pipeline(path) -> PipelineConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline file {path} does not exist (write one with `transferzoo run --print-default-config`)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    try:
        return from_dict(PipelineConfig, raw or {}).validate(path.parent)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


DEFAULT_YAML = """\
# transferzoo pipeline: data -> plan -> fit -> export (parity-gated ONNX) -> serve check.
# Run it with `transferzoo run THIS_FILE.yaml`. Relative paths are relative to this file.
data: path/to/images          # class sub-folders; with train/ + val/ (+ test/) splits or without
out: runs/pipeline            # every stage writes here; re-running resumes finished stages

fit:
  model: efficientnet_lite0   # `transferzoo models --available` lists what has weights here
  strategy: auto              # auto | linear | stages | partial | full (auto: the measured plan decides)
  data:
    val_fraction: 0.2         # used when the folder has no val/ split
    test_fraction: 0.0
    seed: 0                   # the same seed and config reproduce the same numbers
    strict: false             # true: an unreadable image stops the run instead of being skipped
  features:
    engine: auto              # auto | onnxruntime | torch (feature extraction for probes)
  probe:
    head: linear              # linear | mlp
    loss: ce                  # ce (softmax cross-entropy) | hinge (multiclass SVM)
    penalty: l2               # l2 | l1 | elasticnet; strength chosen by cross-validation
  finetune: {}                # partial/full settings, e.g. {epochs: 8, optimizer: adamw, lr: 0.001}

export:
  enabled: true
  quantize: null              # null | int8 (static QDQ, calibrated on the train split) | fp16
  with_preprocessing: false   # true: the model takes uint8 RGB pixels (N x H x W x 3)
  parity_data: null           # default: the run's validation split

serve:
  enabled: true               # start the server on a free loopback port and send real images
  requests: 16
  max_batch: 32
  max_delay_ms: 5.0
  threads: 0                  # onnxruntime threads per run (0: all cores)
  instances: 1                # concurrent runs; for throughput: number of cores, with threads: 1
"""
