"""`transferzoo fit` settings: one typed dataclass tree (`zoo.config`), checked at the boundary.

A YAML file (`--config FILE.yaml`) holds any subset of the fields, nested as below; unknown keys are
an error naming the key path (e.g. ``probe.activaton``) and the closest valid name. CLI flags
override the file. The resolved config (every field, defaults included) goes to config.yaml.

    model: efficientnet_lite0
    strategy: auto            # auto | linear | stages | partial | full
    data: {val_fraction: 0.2, test_fraction: 0.0, seed: 0, strict: false}
    features: {engine: auto, device: auto, batch_size: 8, threads: null, cache_dir: null, cache_key: content,
               flip_augment: false}
    probe: {head: linear, hidden: 256, activation: relu, loss: ce, penalty: l2, l1_ratio: 0.5,
            lambdas: null, cv_folds: 5, cv_repeats: null, max_iter: 300}
    knn: {enabled: true, metrics: [l2, l1], ks: [1, 3, 5, 7, 11, 15, 21]}
    finetune: {optimizer: adamw, lr: null, epochs: 6, ...}   # partial / full (FinetuneConfig)
    auto: {among: [linear, stages, partial, full], budget_minutes: null, pilot: auto, ...}   # AutoConfig

Under `auto`, the plan sets the chosen strategy's hyperparameters (`planner.PLANNED`) except the
ones the user pinned (`pinned_keys`: a --config file's keys, flags, non-default values); the run's
config.yaml holds exactly the values that ran.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from transferzoo.transfer.audit.config import AuditConfig
from transferzoo.zoo.config import Config, ConfigError, flatten, load_yaml, setting
from transferzoo.zoo.fileio import cache_root
from transferzoo.zoo.spec import ACTIVATIONS, HEAD_KINDS

STRATEGIES = ("auto", "linear", "stages", "partial", "full")  # what `fit --strategy` takes
PROBE_STRATEGIES = ("linear", "stages")  # cached features + a probe fit full-batch
FINETUNE_STRATEGIES = ("partial", "full")  # gradient steps through the backbone
ENGINES = ("auto", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")  # feature extraction; auto: CUDA when torch sees a GPU, else the CPU
CACHE_KEYS = ("content", "stat")
LOSSES = ("ce", "hinge")
PENALTIES = ("l2", "l1", "elasticnet")
METRICS = ("l2", "l1")
OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")
INITS = ("xavier", "he")
AMP = ("auto", "bf16", "off")

PILOTS = ("auto", "on", "off")
# the probes' default penalty grid: log-spaced 1e-4..10 (CV extends it past an edge it picks)
DEFAULT_LAMBDAS = tuple(float(f"{10 ** (-4 + 5 * i / 7):.6g}") for i in range(8))

# a good starting learning rate for each optimizer (the LR finder or --search refine it)
DEFAULT_LR = {"sgd": 0.01, "nesterov": 0.01, "rmsprop": 1e-4, "adagrad": 0.01, "adam": 1e-3, "adamw": 1e-3}


def default_cache_dir() -> Path:
    return cache_root() / "features"


@dataclass(frozen=True)
class DataConfig(Config):
    val_fraction: float = setting(0.2, gt=0, lt=1)  # used when the folder has no train/ + val/ split
    test_fraction: float = setting(0.0, ge=0, lt=1)
    seed: int = setting(0, ge=0)
    strict: bool = False  # unreadable / non-image files are fatal instead of skipped

    def check(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "test_fraction",
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}",
            )


@dataclass(frozen=True)
class FeatureConfig(Config):
    engine: str = setting("auto", choices=ENGINES)  # auto: onnxruntime if the export verifies, else torch
    device: str = setting("auto", choices=DEVICES)  # cuda: ORT's CUDA provider, else torch bf16 (checked vs CPU)
    batch_size: int = setting(8, ge=1, le=4096)  # ORT on CPU: 2-8 equally fast here, 32 ~1.3x slower, +700 MB arena
    threads: int | None = setting(None, ge=1)  # None: all cores
    cache_dir: str | None = None  # None: $TRANSFERZOO_CACHE/features or ~/.cache/transferzoo/features
    cache_key: str = setting("content", choices=CACHE_KEYS)  # content: file bytes; stat: path+size+mtime
    flip_augment: bool = False  # also cache horizontally flipped views and train on them

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


@dataclass(frozen=True)
class ProbeConfig(Config):
    head: str = setting("linear", choices=HEAD_KINDS)
    hidden: int = setting(256, ge=1)  # mlp head width
    activation: str = setting("relu", choices=ACTIVATIONS)
    loss: str = setting("ce", choices=LOSSES)  # ce: softmax cross-entropy; hinge: multiclass SVM (Weston-Watkins)
    penalty: str = setting("l2", choices=PENALTIES)
    l1_ratio: float = setting(0.5, ge=0, le=1)  # elasticnet: share of the L1 term
    lambdas: list[float] | None = setting(None, ge=0)  # regularisation strengths tried by CV; None: a log grid
    cv_folds: int = setting(5, ge=2, le=20)
    cv_repeats: int | None = setting(None, ge=1, le=10)  # None: 2 below 2000 training images, else 1
    max_iter: int = setting(300, ge=1)  # L-BFGS iterations per fit

    def check(self):
        if self.lambdas is not None and not self.lambdas:
            raise ConfigError("lambdas", "give at least one value (or null for the default grid)")

    def resolved(self, num_train: int) -> ProbeConfig:
        """The settings as they run on `num_train` training images: lambdas and cv_repeats filled in."""
        return dataclasses.replace(
            self,
            lambdas=list(self.lambdas or DEFAULT_LAMBDAS),
            cv_repeats=self.cv_repeats or (2 if num_train < 2000 else 1),
        )


@dataclass(frozen=True)
class KnnConfig(Config):
    enabled: bool = True
    metrics: list[str] = setting(default_factory=lambda: ["l2", "l1"], choices=METRICS)
    ks: list[int] = setting(default_factory=lambda: [1, 3, 5, 7, 11, 15, 21], ge=1)

    def check(self):
        for name in ("metrics", "ks"):
            if not getattr(self, name):
                raise ConfigError(name, "give at least one value")


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """`partial` / `full` settings. Every default was chosen on the benchmarks (bench/bench_finetune*.py);
    `resolved(strategy, seed)` fills the ones left to the strategy (lr, head_lr_scale, seed)."""

    unfreeze: int | None = setting(None, ge=1)  # partial: top blocks trained; None: the plan's, else 1
    # optimisation
    optimizer: str = setting("adamw", choices=OPTIMIZERS)
    lr: float | None = setting(None, gt=0, lt=10)  # None: DEFAULT_LR[optimizer] (partial) or a third of it (full)
    weight_decay: float = setting(0.05, ge=0, lt=1)
    momentum: float = setting(0.9, ge=0, lt=1)  # sgd / nesterov / rmsprop
    layer_decay: float = setting(0.75, gt=0, le=1)  # LR multiplier per layer going down from the top
    head_lr_scale: float | None = setting(None, gt=0)  # the new head's LR relative to lr; None: 1 (partial), 10 (full)
    schedule: str = setting("cosine", choices=SCHEDULES)
    warmup_epochs: float = setting(1.0, ge=0)
    min_lr_ratio: float = setting(0.01, ge=0, le=1)  # the schedule's final LR as a fraction of lr
    epochs: int = setting(6, ge=1)
    batch_size: int = setting(64, ge=2)
    grad_clip: float = setting(0.0, ge=0)  # max gradient norm, 0 = off
    # regularisation
    label_smoothing: float = setting(0.1, ge=0, lt=1)
    dropout: float = setting(0.2, ge=0, lt=1)  # before the new head
    drop_path: float = setting(0.0, ge=0, lt=1)  # stochastic depth (models that support it)
    init: str = setting("xavier", choices=INITS)  # new layers: Glorot or Kaiming
    # augmentation (timm.data.create_transform(is_training=True) and timm.data.Mixup)
    image_size: int | None = setting(None, ge=32, le=1024)  # None: the model's pretrained input size
    scale_min: float = setting(0.25, gt=0, le=1)  # random resized crop: smallest area fraction
    hflip: float = setting(0.5, ge=0, le=1)
    vflip: float = setting(0.0, ge=0, le=1)
    color_jitter: float = setting(0.2, ge=0, le=1)  # 0 = off
    auto_augment: str | None = None  # e.g. 'rand-m9-mstd0.5' (timm RandAugment)
    random_erasing: float = setting(0.0, ge=0, le=1)  # cutout / random erasing probability
    mixup: float = setting(0.0, ge=0)  # mixup alpha, 0 = off
    cutmix: float = setting(0.0, ge=0)  # cutmix alpha, 0 = off
    # prefix cache (partial): frozen layers run once per image and augmented view, never per epoch
    cache_prefix: bool = True
    views: int = setting(2, ge=1)  # augmented views cached per training image
    prefix_engine: str = setting("auto", choices=ENGINES)  # auto: onnxruntime on CPU if it verifies
    # the loop
    patience: int = setting(0, ge=0)  # early stopping: epochs without val improvement, 0 = off
    divergence_factor: float = setting(3.0, gt=1)  # stop when the loss exceeds this times the initial loss
    overfit_check: int = setting(0, ge=0)  # >0: first check the model can overfit this many training images
    search: int = setting(0, ge=0)  # >0: random search over lr / weight decay with this many trials first
    search_epochs: int = setting(2, ge=1)
    seed: int | None = setting(None, ge=0)  # None: the data split's seed
    workers: int | None = setting(None, ge=0)  # DataLoader worker processes; None = min(4, cpu count)
    amp: str = setting("auto", choices=AMP)  # bf16 autocast: auto (on CUDA only), bf16, off
    checkpoint: bool = True  # write checkpoint/ each epoch (for --resume)

    def check(self):
        if self.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs", f"must be below epochs ({self.epochs}), got {self.warmup_epochs}")

    def resolved(self, strategy: str, seed: int = 0) -> FinetuneConfig:
        """The settings as they run for `strategy`: lr, head_lr_scale and seed filled in."""
        if strategy not in FINETUNE_STRATEGIES:
            raise ConfigError("strategy", f"expected one of {', '.join(FINETUNE_STRATEGIES)}, got {strategy!r}")
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer] / (3 if strategy == "full" else 1)
        head = self.head_lr_scale if self.head_lr_scale is not None else (10.0 if strategy == "full" else 1.0)
        return dataclasses.replace(self, lr=lr, head_lr_scale=head, seed=seed if self.seed is None else self.seed)

    @property
    def uses_mixup(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclass(frozen=True)
class AutoConfig(Config):
    """How `auto` decides (transfer.planner): which strategies it may pick, the time they must fit,
    and the pilot finetune that measures whether finetuning pays on this data."""

    among: list[str] = setting(default_factory=lambda: list(STRATEGIES[1:]), choices=STRATEGIES[1:])
    budget_minutes: float | None = setting(None, gt=0)  # strategies predicted to take longer are removed
    pilot: str = setting("auto", choices=PILOTS)  # auto: when it can resolve a 1-point difference and fits
    pilot_images: int = setting(600, ge=20)  # training images the pilot finetunes on (at most), the planned recipe
    pilot_holdout: int = setting(300, ge=20)  # held-out training images both sides are scored on (at most)

    def check(self):
        if not self.among:
            raise ConfigError("among", "give at least one strategy")


@dataclass(frozen=True)
class FitConfig(Config):
    model: str = "efficientnet_lite0"
    strategy: str = setting("auto", choices=STRATEGIES)
    weights: str | None = None  # explicit pretrained weight file
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)  # transfer/audit: duplicates, label errors, outliers
    auto: AutoConfig = field(default_factory=AutoConfig)
    progress: bool | None = None  # None: progress bars only when stderr is a TTY

    def check(self):
        from transferzoo.zoo.errors import UnknownModelError
        from transferzoo.zoo.registry import get

        try:
            get(self.model)
        except UnknownModelError as e:
            raise ConfigError("model", str(e)) from None


def load_config(path) -> FitConfig:
    return load_yaml(path, FitConfig)


def pinned_keys(cfg: FitConfig, explicit=()) -> frozenset[str]:
    """The dotted settings the user chose: `explicit` (keys of a --config file, flags given) and
    every setting that differs from its default. `auto` never changes these."""
    default, mine = flatten(FitConfig().to_dict()), flatten(cfg.to_dict())
    return frozenset(explicit) | {k for k, v in mine.items() if default.get(k) != v}
