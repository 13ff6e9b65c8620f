"""`transferzoo fit` settings: one typed dataclass tree, validated at the boundary.

A YAML file (`--config FILE.yaml`) holds any subset of the fields, nested as below; unknown keys are
an error naming the key path (e.g. ``probe.activaton``) and the closest valid name. CLI flags
override the file. The resolved config (every field, defaults included) goes to config.yaml.

    model: efficientnet_lite0
    strategy: auto            # auto | linear | stages | partial | full
    data: {val_fraction: 0.2, test_fraction: 0.0, seed: 0, strict: false}
    features: {engine: auto, batch_size: 8, threads: null, cache_dir: null, cache_key: content, flip_augment: false}
    probe: {head: linear, hidden: 256, activation: relu, loss: ce, penalty: l2, l1_ratio: 0.5,
            lambdas: null, cv_folds: 5, cv_repeats: null, max_iter: 300}
    knn: {enabled: true, metrics: [l2, l1], ks: [1, 3, 5, 7, 11, 15, 21]}
    finetune: {...}           # partial / full settings (transfer.train_config.TrainConfig)
"""
from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

STRATEGIES = ("auto", "linear", "stages", "partial", "full")
ENGINES = ("auto", "onnxruntime", "torch")
CACHE_KEYS = ("content", "stat")
HEADS = ("linear", "mlp")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
LOSSES = ("ce", "hinge")
PENALTIES = ("l2", "l1", "elasticnet")
METRICS = ("l2", "l1")


def default_cache_dir() -> Path:
    env = os.environ.get("TRANSFERZOO_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transferzoo" / "features"


def _choice(path: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}")


@dataclass
class DataConfig:
    val_fraction: float = 0.2  # used when the folder has no train/ + val/ split
    test_fraction: float = 0.0
    seed: int = 0
    strict: bool = False  # unreadable / non-image files are fatal instead of skipped

    def validate(self, p="data"):
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"{p}.val_fraction: must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"{p}.test_fraction: must be in [0, 1) with val_fraction + test_fraction < 1")


@dataclass
class FeatureConfig:
    engine: str = "auto"  # auto: onnxruntime if the export verifies, else torch
    batch_size: int = 8  # ORT on CPU: 2-8 equally fast here, 32 ~1.3x slower and +700 MB arena (measured)
    threads: int | None = None  # None: all cores
    cache_dir: str | None = None  # None: $TRANSFERZOO_CACHE/features or ~/.cache/transferzoo/features
    cache_key: str = "content"  # content: file bytes (hash memoised by path+size+mtime); stat: path+size+mtime
    flip_augment: bool = False  # also cache horizontally flipped views and train on them

    def validate(self, p="features"):
        _choice(f"{p}.engine", self.engine, ENGINES)
        _choice(f"{p}.cache_key", self.cache_key, CACHE_KEYS)
        if not 1 <= self.batch_size <= 4096:
            raise ValueError(f"{p}.batch_size: must be in 1..4096, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"{p}.threads: must be >= 1 (or null for all cores)")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


@dataclass
class ProbeConfig:
    head: str = "linear"
    hidden: int = 256  # mlp head width
    activation: str = "relu"
    loss: str = "ce"  # ce: softmax cross-entropy; hinge: multiclass SVM (Weston-Watkins)
    penalty: str = "l2"
    l1_ratio: float = 0.5  # elasticnet: share of the L1 term
    lambdas: list[float] | None = None  # regularisation strengths tried by CV; None: a log grid
    cv_folds: int = 5
    cv_repeats: int | None = None  # None: 2 below 2000 training images, else 1
    max_iter: int = 300  # L-BFGS iterations per fit

    def validate(self, p="probe"):
        _choice(f"{p}.head", self.head, HEADS)
        _choice(f"{p}.activation", self.activation, ACTIVATIONS)
        _choice(f"{p}.loss", self.loss, LOSSES)
        _choice(f"{p}.penalty", self.penalty, PENALTIES)
        if self.hidden < 1:
            raise ValueError(f"{p}.hidden: must be >= 1")
        if not 0 <= self.l1_ratio <= 1:
            raise ValueError(f"{p}.l1_ratio: must be in [0, 1]")
        if self.lambdas is not None and (not self.lambdas or any(l < 0 for l in self.lambdas)):
            raise ValueError(f"{p}.lambdas: a non-empty list of values >= 0")
        if not 2 <= self.cv_folds <= 20:
            raise ValueError(f"{p}.cv_folds: must be in 2..20")
        if self.cv_repeats is not None and not 1 <= self.cv_repeats <= 10:
            raise ValueError(f"{p}.cv_repeats: must be in 1..10")
        if self.max_iter < 1:
            raise ValueError(f"{p}.max_iter: must be >= 1")


@dataclass
class KnnConfig:
    enabled: bool = True
    metrics: list[str] = field(default_factory=lambda: ["l2", "l1"])
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 7, 11, 15, 21])

    def validate(self, p="knn"):
        for m in self.metrics:
            _choice(f"{p}.metrics", m, METRICS)
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"{p}.ks: a non-empty list of integers >= 1")


@dataclass
class FitConfig:
    model: str = "efficientnet_lite0"
    strategy: str = "auto"
    weights: str | None = None  # explicit pretrained weight file
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    finetune: dict = field(default_factory=dict)  # partial / full: transfer.train_config.TrainConfig fields
    progress: bool | None = None  # None: progress bars only when stderr is a TTY

    def validate(self) -> "FitConfig":
        _choice("strategy", self.strategy, STRATEGIES)
        from transferzoo import zoo

        zoo.get(self.model)  # UnknownModelError with suggestions
        self.data.validate()
        self.features.validate()
        self.probe.validate()
        self.knn.validate()
        if self.finetune:
            try:
                from .train_config import TrainConfig
            except ImportError:
                pass
            else:
                TrainConfig.from_dict({k: v for k, v in self.finetune.items() if k != "strategy"})
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _type_ok(value, tp) -> tuple[bool, object]:
    """(ok, converted) for the simple types these dataclasses use."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            return type(None) in args, None
        for a in args:
            if a is type(None):
                continue
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _type_ok(v, inner)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def from_dict(cls, d: dict, path: str = ""):
    """Build dataclass `cls` from a nested mapping; unknown keys and wrong types raise ValueError
    with the key path."""
    if not isinstance(d, dict):
        raise ValueError(f"{path or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        kp = f"{path}.{key}" if path else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {kp!r}{hint}; valid keys here: {', '.join(known)}")
        tp = hints[key]
        if is_dataclass(tp):
            kwargs[key] = from_dict(tp, value if value is not None else {}, kp)
            continue
        ok, conv = _type_ok(value, tp)
        if not ok:
            raise ValueError(f"config key {kp!r}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
        kwargs[key] = conv
    return cls(**kwargs)


def load_config(path) -> FitConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    try:
        return from_dict(FitConfig, raw).validate()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def replace_path(cfg: FitConfig, dotted: str, value) -> None:
    """Set `a.b` on a config in place (CLI overrides); the value is type-checked like the file."""
    obj = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        obj = getattr(obj, p)
    tp = typing.get_type_hints(type(obj))[last]
    ok, conv = _type_ok(value, tp)
    if not ok:
        raise ValueError(f"{dotted}: expected {tp}, got {value!r}")
    setattr(obj, last, conv)

