"""What `transferzoo export SOURCE` can export, loaded into one `Source`:

- a run directory (transfer/RUN_DIR.md): rebuilt from run.json + model.safetensors; its val split
  is the parity set and its train split the int8 calibration set;
- a checkpoint file: `model.safetensors` inside a run directory (same as the run), or a timm-keyed
  state dict of a zoo model (`--model NAME` says which);
- a zoo model name: the registry's pretrained weights (ImageNet labels);
- several run directories (`--ensemble`): one model averaging their probabilities.

Models are built under timm's `set_layer_config(exportable=True)`: activations come out as plain
modules instead of memory-efficient custom autograd functions that exporters cannot trace.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import timm.layers
import torch.nn as nn

from transferzoo import zoo
from transferzoo.zoo import assembly as za
from transferzoo.zoo.fileio import sha256_file
from transferzoo.zoo.labels import imagenet_labels
from transferzoo.zoo.sources import read_state_dict

from .ensemble import ProbabilityEnsemble
from .images import ImageSet, from_split

RUN_FORMAT = "transferzoo-run/1"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass
class Source:
    kind: str  # 'run' | 'checkpoint' | 'zoo' | 'ensemble'
    name: str  # what the user named
    model: nn.Module  # eval mode, float32 N x 3 x H x W in
    labels: list[str]
    preprocessing: zoo.Preprocessing
    source_model: str  # zoo entry ('efficientnet_lite0.in1k'); members joined by ',' for an ensemble
    family: str
    weights_sha256: str | None = None  # the pretrained backbone weight file
    checkpoint_sha256: str | None = None  # the trained weights exported (run's model.safetensors, a checkpoint)
    run_summary: dict | None = None
    output_format: str = "logits"
    splits: dict[str, ImageSet] = field(default_factory=dict)
    members: list["Source"] = field(default_factory=list)

    def describe(self) -> dict:
        d = {
            "kind": self.kind,
            "name": self.name,
            "source_model": self.source_model,
            "weights_sha256": self.weights_sha256,
            "checkpoint_sha256": self.checkpoint_sha256,
            "num_classes": len(self.labels),
            "output_format": self.output_format,
        }
        if self.members:
            d["members"] = [m.describe() for m in self.members]
        return d


def _exportable():
    return timm.layers.set_layer_config(exportable=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise zoo.ZooError(f"{path} is not valid JSON ({e})") from None


def _preprocessing(d: dict, where: str) -> zoo.Preprocessing:
    try:
        return zoo.Preprocessing(
            input_size=tuple(int(v) for v in d["input_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
            crop_mode=str(d.get("crop_mode", "center")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise zoo.ZooError(f"{where}: bad 'preprocessing' entry ({type(e).__name__}: {e})") from None


def _load_weights(model: nn.Module, path: Path, what: str) -> None:
    state = read_state_dict(path)  # ZooError naming the file when it is corrupt or truncated
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise zoo.ZooError(f"{path} does not fit {what}: {' '.join(first[:3])[:400]}") from None


def load_run(run_dir: str | os.PathLike, weights: str | os.PathLike | None = None) -> Source:
    run_dir = Path(run_dir)
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise zoo.ZooError(f"{run_dir} is not a run directory (no run.json); see transfer/RUN_DIR.md")
    run = _read_json(run_json)
    if run.get("format") != RUN_FORMAT:
        raise zoo.ZooError(f"{run_json}: format {run.get('format')!r} is not {RUN_FORMAT!r}")
    try:
        spec = za.ModelSpec.from_dict(run["spec"])
        labels = [str(v) for v in run["labels"]]
    except (KeyError, TypeError) as e:
        raise zoo.ZooError(f"{run_json}: missing or bad entry {e}") from None
    if len(labels) != spec.num_classes:
        raise zoo.ZooError(f"{run_json}: {len(labels)} labels but the model has {spec.num_classes} classes")
    weights = Path(weights) if weights else run_dir / "model.safetensors"
    if not weights.is_file():
        raise zoo.ZooError(f"weight file not found: {weights}")
    with _exportable():
        model = za.build(spec, pretrained=False)
    _load_weights(model, weights, f"the model in {run_json} ({spec.model}, {spec.num_classes} classes)")
    pre = (
        _preprocessing(run["preprocessing"], str(run_json)) if "preprocessing" in run else zoo.preprocessing(spec.model)
    )
    entry = zoo.get(spec.model)
    splits = {}
    data_root = run.get("data_root")
    for split, rel in (run.get("splits") or {}).items():
        if data_root and (run_dir / rel).is_file():
            splits[split] = from_split(run_dir / rel, data_root, f"{split} split of {run_dir}")
    return Source(
        "run",
        str(run_dir),
        model.eval(),
        labels,
        pre,
        entry.name,
        entry.family,
        weights_sha256=(run.get("weights") or {}).get("sha256"),
        checkpoint_sha256=sha256_file(weights),
        run_summary=run.get("summary"),
        splits=splits,
    )


def load_zoo(name: str, random_weights: bool = False) -> Source:
    entry = zoo.get(name)
    with _exportable():
        model = zoo.create(entry.name, pretrained=not random_weights)
    prov = model.pretrained_cfg.get("transferzoo", {})
    return Source(
        "zoo",
        name,
        model.eval(),
        list(imagenet_labels()),
        zoo.preprocessing(entry.name),
        entry.name,
        entry.family,
        weights_sha256=prov.get("sha256"),
    )


def _labels_file(path: str | os.PathLike, n: int) -> list[str]:
    path = Path(path)
    text = path.read_text()
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(labels, list) or len(labels) != n:
        raise zoo.ZooError(f"{path}: expected {n} class names (JSON list or one per line), got {len(labels)}")
    return [str(v) for v in labels]


def load_checkpoint(path: str | os.PathLike, model_name: str | None, labels_file: str | None = None) -> Source:
    path = Path(path)
    if (path.parent / "run.json").is_file():
        return load_run(path.parent, weights=path)
    if not model_name:
        raise zoo.ZooError(
            f"{path}: a bare checkpoint needs --model NAME (the zoo architecture it belongs to); "
            "for a training run, pass its run directory instead"
        )
    entry = zoo.get(model_name)
    state = read_state_dict(path)
    if any(k.startswith(("backbone.", "head.")) for k in state):
        raise zoo.ZooError(f"{path} holds a transferzoo run's weights (backbone.* / head.*): export its run directory")
    with _exportable():
        probe = zoo.create(entry.name, pretrained=False)
    head_key = f"{probe.pretrained_cfg.get('classifier', 'classifier')}.weight"
    if head_key not in state:
        raise zoo.ZooError(f"{path} has no {head_key!r}: not a {entry.name} state dict")
    n = int(state[head_key].shape[0])
    with _exportable():
        model = probe if n == probe.num_classes else zoo.create(entry.name, pretrained=False, num_classes=n)
    _load_weights(model, path, f"{entry.name} with {n} classes")
    if labels_file:
        labels = _labels_file(labels_file, n)
    elif n == 1000:
        labels = list(imagenet_labels())
    else:
        labels = [f"class_{i}" for i in range(n)]
    return Source(
        "checkpoint",
        str(path),
        model.eval(),
        labels,
        zoo.preprocessing(entry.name),
        entry.name,
        entry.family,
        checkpoint_sha256=sha256_file(path),
    )


def load_ensemble(run_dirs: list[str | os.PathLike]) -> Source:
    if len(run_dirs) < 2:
        raise zoo.ZooError("--ensemble needs at least two run directories")
    members = [load_run(d) for d in run_dirs]
    first = members[0]
    for m in members[1:]:
        if m.labels != first.labels:
            raise zoo.ZooError(
                f"ensemble members disagree on labels: {m.name} has {m.labels}, {first.name} has {first.labels}"
            )
        if m.preprocessing != first.preprocessing:
            diff = {
                k: (v, getattr(m.preprocessing, k))
                for k, v in first.preprocessing.to_dict().items()
                if getattr(m.preprocessing, k) != v
            }
            raise zoo.ZooError(
                f"ensemble members need the same preprocessing; {m.name} differs from {first.name}: {diff}"
            )
    model = ProbabilityEnsemble([m.model for m in members]).eval()
    return Source(
        "ensemble",
        ", ".join(m.name for m in members),
        model,
        first.labels,
        first.preprocessing,
        ",".join(m.source_model for m in members),
        first.family,
        output_format="probabilities",
        splits=first.splits,
        members=members,
        run_summary={"members": [m.run_summary for m in members]},
    )


def load_source(
    source: str | os.PathLike | None,
    ensemble: list[str] | None = None,
    model_name: str | None = None,
    labels_file: str | None = None,
    random_weights: bool = False,
) -> Source:
    """Resolve what the user named: run directory, checkpoint file, zoo model name, or an ensemble."""
    if ensemble:
        return load_ensemble(([source] if source else []) + list(ensemble))
    if not source:
        raise zoo.ZooError("nothing to export: name a run directory, a checkpoint, a zoo model, or use --ensemble")
    path = Path(source)
    if path.is_dir():
        return load_run(path)
    if path.is_file():
        return load_checkpoint(path, model_name, labels_file)
    if os.sep in str(source) or str(source).endswith(CHECKPOINT_SUFFIXES):
        raise zoo.ZooError(f"no such file or directory: {source}")
    return load_zoo(str(source), random_weights=random_weights)
