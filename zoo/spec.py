"""What a trained model is, as data: the zoo backbone, which of its features feed the head, and the
head. Stored in a run directory (run.json) so export can rebuild the model from files alone; built
into modules by `zoo.assembly`. Torch-free.

- stages=None: the backbone's own pooled pre-logits features (timm `num_classes=0`), e.g. 1280-d
  for EfficientNet-Lite0 (after its conv_head).
- stages=(i, j, ...): global-average-pooled outputs of those feature stages (timm `features_only`,
  indices into `feature_info`), concatenated: the "linear classifiers from different stages" probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config, ConfigError, from_dict, setting, to_dict

HEAD_KINDS = ("linear", "mlp")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")  # what a user may pick for an MLP head
# the pretrained ImageNet head's log-probabilities as features: Linear(pretrained classifier) ->
# LogSoftmax -> Linear (transfer's "imagenet" feature set); a head transfer builds, not a user choice
LOG_SOFTMAX = "log_softmax"


@dataclass(frozen=True)
class HeadSpec(Config):
    kind: str = setting("linear", choices=HEAD_KINDS)
    hidden: int = setting(0, ge=0)  # mlp hidden width
    activation: str = setting("relu", choices=ACTIVATIONS + (LOG_SOFTMAX,))
    dropout: float = setting(0.0, ge=0.0, lt=1.0)

    def linear_positions(self) -> tuple[int, ...]:
        """Where `zoo.assembly.make_head` puts the Linear layers of its Sequential: the head's state
        dict keys are `{i}.weight` / `{i}.bias` for these i (so a head is written without torch)."""
        if self.kind == "linear":
            return (1,) if self.dropout else (0,)
        return (0, 3)

    def check(self):
        if self.kind == "mlp" and self.hidden <= 0:
            raise ConfigError("hidden", "an 'mlp' head needs hidden > 0")


@dataclass(frozen=True)
class ModelSpec(Config):
    model: str  # zoo name
    num_classes: int = setting(ge=1)
    stages: tuple[int, ...] | None = None
    head: HeadSpec = field(default_factory=HeadSpec)
    drop_rate: float = setting(0.0, ge=0.0, lt=1.0)
    drop_path_rate: float = setting(0.0, ge=0.0, lt=1.0)

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return from_dict(cls, d, "spec")
