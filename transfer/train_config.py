"""Settings of a finetuning run (`partial` / `full`), as one typed dataclass validated at the boundary.

Every field has a default chosen from the benchmarks (bench/bench_finetune*.py); a YAML file or CLI
flags override them by name (`TrainConfig.from_dict`), and an unknown or out-of-range setting is a
`ValueError` that says what is allowed.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace

OPTIMIZERS = ("sgd", "nesterov", "rmsprop", "adagrad", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")
INITS = ("xavier", "he")
STRATEGIES = ("partial", "full")
AMP = ("auto", "bf16", "off")

# a good starting learning rate for each optimizer (the LR finder or --search refine it)
DEFAULT_LR = {"sgd": 0.01, "nesterov": 0.01, "rmsprop": 1e-4, "adagrad": 0.01, "adam": 1e-3, "adamw": 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    strategy: str = "partial"  # 'partial': last `unfreeze` blocks + head; 'full': everything
    unfreeze: int | None = None  # partial: blocks (timm's coarse groups) trained, from the top; None = the plan's, else 1
    # optimisation
    optimizer: str = "adamw"
    lr: float | None = None  # None: DEFAULT_LR[optimizer] (partial) or a third of it (full)
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd / nesterov / rmsprop
    layer_decay: float = 0.75  # LR multiplier per layer going down from the top (discriminative LRs)
    head_lr_scale: float | None = None  # the new head's LR relative to `lr`; None: 1 (partial), 10 (full)
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # the schedule's final LR as a fraction of `lr`
    epochs: int = 6
    batch_size: int = 64
    grad_clip: float = 0.0  # max gradient norm, 0 = off
    # regularisation
    label_smoothing: float = 0.1
    dropout: float = 0.2  # before the new head
    drop_path: float = 0.0  # stochastic depth (models that support it)
    init: str = "xavier"  # new layers: 'xavier' (Glorot) or 'he' (Kaiming)
    # augmentation (timm.data.create_transform(is_training=True) and timm.data.Mixup)
    image_size: int | None = None  # None: the model's pretrained input size
    scale_min: float = 0.25  # random resized crop: smallest area fraction
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.2  # 0 = off
    auto_augment: str | None = None  # e.g. 'rand-m9-mstd0.5' (timm RandAugment)
    random_erasing: float = 0.0  # cutout / random erasing probability
    mixup: float = 0.0  # mixup alpha, 0 = off
    cutmix: float = 0.0  # cutmix alpha, 0 = off
    # prefix cache (partial): frozen layers run once per image and augmented view, never per epoch
    cache_prefix: bool = True
    views: int = 2  # augmented views cached per training image
    prefix_engine: str = "auto"  # 'auto' (onnxruntime on CPU if it verifies), 'onnxruntime', 'torch'
    # the loop
    patience: int = 0  # early stopping: epochs without val improvement, 0 = off
    divergence_factor: float = 3.0  # stop when the loss exceeds this times the initial loss
    overfit_check: int = 0  # >0: first check the model can overfit this many training images
    search: int = 0  # >0: random search over lr / weight decay with this many trials first
    search_epochs: int = 2
    seed: int = 0
    workers: int | None = None  # DataLoader worker processes; None = min(4, cpu count)
    amp: str = "auto"  # bf16 autocast: 'auto' (on CUDA only), 'bf16', 'off'
    checkpoint: bool = True  # write checkpoint/ each epoch (for --resume)
    resume: bool = False  # continue from the run directory's checkpoint/ (after an interruption)
    progress: bool | None = None  # progress bars; None = only when stderr is a TTY

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"finetune setting {name}={getattr(self, name)!r}: {why}")

        if self.strategy not in STRATEGIES:
            bad("strategy", f"must be one of {', '.join(STRATEGIES)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if self.init not in INITS:
            bad("init", f"must be one of {', '.join(INITS)}")
        if self.prefix_engine not in ("auto", "onnxruntime", "torch"):
            bad("prefix_engine", "must be one of auto, onnxruntime, torch")
        if self.amp not in AMP:
            bad("amp", f"must be one of {', '.join(AMP)}")
        if self.unfreeze is not None and self.unfreeze < 1:
            bad("unfreeze", "must be at least 1 (the number of top blocks to train)")
        if self.lr is not None and not 0 < self.lr < 10:
            bad("lr", "must be in (0, 10)")
        for name in ("weight_decay", "label_smoothing", "dropout", "drop_path", "random_erasing", "hflip", "vflip"):
            v = getattr(self, name)
            if not 0 <= v < 1 and not (name in ("hflip", "vflip", "random_erasing") and v == 1):
                bad(name, "must be in [0, 1)")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            bad("layer_decay", "must be in (0, 1] (1 = the same LR for every layer)")
        if self.head_lr_scale is not None and self.head_lr_scale <= 0:
            bad("head_lr_scale", "must be > 0")
        if self.epochs < 1:
            bad("epochs", "must be at least 1")
        if not 0 <= self.warmup_epochs < self.epochs:
            bad("warmup_epochs", f"must be in [0, epochs={self.epochs})")
        if not 0 <= self.min_lr_ratio <= 1:
            bad("min_lr_ratio", "must be in [0, 1]")
        if self.batch_size < 2:
            bad("batch_size", "must be at least 2")
        if self.grad_clip < 0:
            bad("grad_clip", "must be >= 0 (0 = off)")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            bad("image_size", "must be in [32, 1024] pixels")
        if not 0 < self.scale_min <= 1:
            bad("scale_min", "must be in (0, 1]")
        if not 0 <= self.color_jitter <= 1:
            bad("color_jitter", "must be in [0, 1]")
        if self.mixup < 0 or self.cutmix < 0:
            bad("mixup" if self.mixup < 0 else "cutmix", "alpha must be >= 0 (0 = off)")
        if self.views < 1:
            bad("views", "must be at least 1")
        if self.patience < 0:
            bad("patience", "must be >= 0 (0 = no early stopping)")
        if self.divergence_factor <= 1:
            bad("divergence_factor", "must be > 1")
        if self.overfit_check < 0 or self.search < 0:
            bad("overfit_check" if self.overfit_check < 0 else "search", "must be >= 0")
        if self.search_epochs < 1:
            bad("search_epochs", "must be at least 1")
        if self.workers is not None and self.workers < 0:
            bad("workers", "must be >= 0")

    # -- derived ------------------------------------------------------------------------------------
    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        lr = DEFAULT_LR[self.optimizer]
        return lr / 3 if self.strategy == "full" else lr

    @property
    def head_scale(self) -> float:
        if self.head_lr_scale is not None:
            return self.head_lr_scale
        return 10.0 if self.strategy == "full" else 1.0

    @property
    def uses_mixup(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolved_lr"] = self.base_lr
        return d

    @classmethod
    def from_dict(cls, d: dict | None, **overrides) -> "TrainConfig":
        """Build from a mapping (YAML `finetune:` section, CLI flags); None values mean 'default'.
        Unknown names are an error with the closest valid name."""
        known = {f.name: f for f in fields(cls)}
        merged = {k: v for k, v in dict(d or {}).items() if k != "resolved_lr"}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(merged) - set(known))
        if unknown:
            hints = []
            for u in unknown:
                close = difflib.get_close_matches(u, list(known), n=1)
                hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown finetune setting(s): {', '.join(hints)}; valid: {', '.join(sorted(known))}")
        kw = {}
        for k, v in merged.items():
            if v is None:
                continue
            t = known[k].type
            try:
                if t in ("int", "int | None") and not isinstance(v, bool):
                    v = int(v)
                elif t in ("float", "float | None"):
                    v = float(v)
                elif t in ("bool", "bool | None") and isinstance(v, str):
                    v = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}[v.lower()]
            except (TypeError, ValueError, KeyError):
                raise ValueError(f"finetune setting {k}={v!r}: expected {t}") from None
            kw[k] = v
        return cls(**kw)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)
