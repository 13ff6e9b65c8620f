"""The pipeline file (`transferzoo run PIPELINE.yaml`): typed sections checked before any work.

Each section *is* the settings class of the command it runs: `fit` is transfer's FitConfig (the
same keys as `transferzoo fit --config`), `export` is export's ExportOptions and `serve` is the
server's ServeOptions, each with the pipeline's own switches added. Unknown keys, wrong types,
values out of range and missing paths are reported with the key's path (`zoo.config`). Relative
paths are relative to the YAML file's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from transferzoo.export.options import ExportOptions
from transferzoo.serve.config import ServeOptions
from transferzoo.transfer.config import FitConfig
from transferzoo.zoo.config import Config, ConfigError, load_yaml, setting, to_dict


@dataclass(frozen=True)
class ExportSection(ExportOptions):
    enabled: bool = True
    # the pipeline writes OUT/model.onnx itself: not a setting here
    out: Path | None = field(default=None, init=False)


@dataclass(frozen=True)
class ServeSection(ServeOptions):
    enabled: bool = True  # start the server on a free loopback port and send real images through it
    requests: int = setting(16, ge=1, le=10_000)  # validation images sent through tritonclient and the image endpoint


@dataclass(frozen=True)
class PipelineConfig(Config):
    data: str = ""  # required: folder of class sub-folders (with or without train/ + val/)
    out: str = "runs/pipeline"
    fit: FitConfig = field(default_factory=FitConfig)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)

    def check(self):
        if self.serve.enabled and not self.export.enabled:
            raise ConfigError(
                "serve.enabled", "serving needs export.enabled: true (the server runs the exported ONNX file)"
            )

    def resolved(self, base: Path = Path(".")) -> PipelineConfig:
        """Paths made absolute (relative ones are relative to `base`, the YAML file's folder) and checked."""
        if not self.data:
            raise ConfigError("data", "required: the folder of labelled images (class sub-folders)")
        changes: dict = {"data": _existing_dir(base, self.data, "data"), "out": str((base / self.out).resolve())}
        export = {
            k: _existing_dir(base, str(getattr(self.export, k)), f"export.{k}")
            for k in ("parity_data", "calibration")
            if getattr(self.export, k)
        }
        fit = self.fit
        if fit.weights:
            w = base / fit.weights
            if not w.is_file():
                raise ConfigError(
                    "fit.weights", f"file {w} does not exist (expected a .safetensors or .pth weight file)"
                )
            fit = dataclasses.replace(fit, weights=str(w.resolve()))
        return dataclasses.replace(self, **changes, fit=fit, export=dataclasses.replace(self.export, **export))

    def stage_hash(self, *sections: str) -> str:
        """A fingerprint of the settings a stage depends on (a changed setting re-runs the stage)."""
        d = to_dict(self)
        blob = json.dumps({s: d[s] for s in sections}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _existing_dir(base: Path, value: str, key: str) -> str:
    path = base / value
    if not path.is_dir():
        raise ConfigError(key, f"folder {path} does not exist (expected a folder of class sub-folders)")
    return str(path.resolve())


def load_pipeline(path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pipeline file {path} does not exist (write one with `transferzoo run --print-default-config`)"
        )
    cfg = load_yaml(path, PipelineConfig, "pipeline file")
    try:
        return cfg.resolved(path.parent)
    except ConfigError as e:
        raise ConfigError("", f"{path}: {e}") from None


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
