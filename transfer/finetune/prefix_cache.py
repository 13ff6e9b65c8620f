"""The frozen prefix, run once: activations entering the first trained block, cached on disk.

Partial finetuning trains only the top blocks, yet a naive loop runs the whole frozen network on
every image every epoch. Here the backbone is cut where training starts:

    prefix (frozen, eval mode)  ->  cached activations  ->  suffix (trained) -> head

and the prefix's outputs are stored for a fixed number V of augmented views of every training image
(plus one eval view of every validation image) in a memory-mapped float16 file. Each epoch then reads
one view per image from disk (a random one) and runs only the suffix, so an epoch costs a fraction
of a forward pass of the whole network, and memory holds one batch, not the dataset.

The cut needs the backbone's forward to be the chain of its children (nn.Sequential containers
flattened): true of timm's CNNs (EfficientNet, MobileNet, ResNet, RegNet, ConvNeXt, DenseNet...).
`split_backbone` checks the chain against the real forward on a probe input and returns None when
it differs; the caller then streams images through the whole model instead.

Augmentations are seeded per (image, view), so a cache is reproducible: the same seed gives the same
file with any number of DataLoader workers, and a resumed run rebuilds exactly what it lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from transferzoo.export.onnx_export import verified_session
from transferzoo.zoo.fileio import commit, file_digest, write_json

from .loop import to_device


def _chain(module: nn.Module, prefix: str = ""):
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _chain(child, full + ".")
        elif not isinstance(child, nn.Identity):
            yield full, child


class Chain(nn.Module):
    """A run of backbone modules applied in order (shares the modules, so training them trains the model)."""

    def __init__(self, named: list[tuple[str, nn.Module]], head: nn.Module | None = None):
        super().__init__()
        self.names = [n for n, _ in named]
        self.mods = nn.ModuleList([m for _, m in named])
        self.head = head

    def forward(self, x):
        for m in self.mods:
            x = m(x)
        return self.head(x) if self.head is not None else x


@dataclass
class Split:
    prefix: Chain  # frozen
    suffix: Chain  # trained, ends with the model's head
    cut: str  # name of the first trained module


def split_backbone(model, probe_size: int = 64) -> Split | None:
    """Cut `model` (a TransferModel with stages=None) before its first trainable backbone module.
    None when the backbone is not a plain chain, or when nothing in the backbone is frozen."""
    backbone = model.backbone
    named = list(_chain(backbone))
    first = next((i for i, (_, m) in enumerate(named) if any(p.requires_grad for p in m.parameters())), None)
    if first is None or first == 0:
        return None
    # nothing trainable may hide in the prefix, and the chain must reproduce the real forward
    if any(p.requires_grad for _, m in named[:first] for p in m.parameters()):
        return None
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            device = next(backbone.parameters()).device
            x = torch.randn(2, 3, probe_size, probe_size, generator=g).to(device)
            ref = backbone(x)
            y = x
            for _, m in named:
                y = m(y)
            ok = y.shape == ref.shape and torch.allclose(y, ref, rtol=1e-4, atol=1e-5)
    except Exception:  # a module that cannot run on its own (needs extra inputs): not a chain
        ok = False
    finally:
        backbone.train(was_training)
    if not ok:
        return None
    prefix, suffix = Chain(named[:first]), Chain(named[first:], head=model.head)
    return Split(prefix=prefix.eval(), suffix=suffix, cut=named[first][0])


@contextlib.contextmanager
def preserved_rng():
    """The global Python/numpy/torch RNG states restored after the block, whatever it draws."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


@contextlib.contextmanager
def seeded_rng(seed: int, *keys: int):
    """Python/torch/numpy RNGs seeded from (seed, keys) inside the block, restored after it: per-sample
    augmentation independent of the number of workers, and building a cache in the main process
    (workers=0) leaves the global RNG streams exactly where reusing the cache leaves them."""
    h = hashlib.blake2b(repr((seed,) + keys).encode(), digest_size=8).digest()
    s = int.from_bytes(h, "little") & 0x7FFF_FFFF
    with preserved_rng():
        random.seed(s)
        torch.manual_seed(s)
        np.random.seed(s)
        yield


class ViewDataset(torch.utils.data.Dataset):
    """Item j = view (j % views) of sample (j // views), augmented with a per-(sample, view) seed."""

    def __init__(self, samples, transform, views: int, seed: int, load):
        self.samples, self.transform, self.views, self.seed, self.load = list(samples), transform, views, seed, load

    def __len__(self):
        return len(self.samples) * self.views

    def __getitem__(self, j):
        i, v = divmod(j, self.views)
        s = self.samples[i]
        with seeded_rng(self.seed, i, v):
            return self.transform(self.load(s.path)), s.label


class TorchPrefix:
    name = "torch"

    def __init__(self, prefix: nn.Module, device: torch.device, amp: bool):
        self.prefix, self.device, self.amp = prefix, device, amp

    def __call__(self, xb: torch.Tensor) -> np.ndarray:
        xb = to_device(xb, self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.prefix(xb).float().cpu().numpy()


class OrtPrefix:
    """The prefix exported to ONNX and run by onnxruntime: on CPU several times faster than eager
    PyTorch (bench/bench_finetune_prefix.py). Verified against PyTorch at export."""

    name = "onnxruntime"

    def __init__(self, prefix: nn.Module, path: Path, input_size, threads: int = 0):
        # a private generator: checking the export must not move the global RNG streams
        dummy = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
        self.session, _ = verified_session(prefix, path, dummy, input_name="x", output_names=("y",), threads=threads)

    def __call__(self, xb: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {"x": np.ascontiguousarray(xb.numpy(), dtype=np.float32)})[0]


def prefix_engine(
    prefix: nn.Module, cache_dir: Path, input_size, device: torch.device, amp: bool, engine: str = "auto"
):
    """onnxruntime on CPU when the export verifies (engine 'auto' / 'onnxruntime'), else PyTorch."""
    if device.type == "cpu" and engine in ("auto", "onnxruntime"):
        try:
            return OrtPrefix(prefix, cache_dir / "prefix.onnx", input_size)
        except Exception as e:  # noqa: BLE001 - any export/runtime failure falls back to eager PyTorch
            if engine == "onnxruntime":
                raise ValueError(f"the onnxruntime prefix engine failed ({e}); use engine 'torch'") from None
    return TorchPrefix(prefix, device, amp)


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CachedSplit:
    """A memory-mapped block of prefix activations: rows = sample * views + view."""

    path: Path
    x: np.memmap  # (N * views, C, H, W) float16
    y: np.ndarray  # (N,) int64 labels
    views: int

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        order = np.argsort(rows)  # read in file order, return in the asked order
        out = np.empty((len(rows),) + self.x.shape[1:], dtype=np.float32)
        out[order] = self.x[rows[order]]
        return torch.from_numpy(out)


def _digest(path: Path) -> str:
    return file_digest(path, "blake2b")


def _reusable(data_path: Path, meta_path: Path, key: str) -> str | None:
    """None when the cache at `data_path` is complete for `key` and intact; else why it is not."""
    if not meta_path.exists():
        return "absent"
    try:
        meta = json.loads(meta_path.read_text())
        shape = [int(d) for d in meta["shape"]]
    except (OSError, ValueError, KeyError, TypeError):
        return "has an unreadable record"
    if meta.get("key") != key or not meta.get("complete"):
        return "absent"  # another run's settings, or a build that was interrupted: not damage
    if not data_path.exists():
        return "is missing its data file"
    size = data_path.stat().st_size
    if size != math.prod(shape) * 2 or size != meta.get("bytes"):
        return f"has {size} bytes, {math.prod(shape) * 2} expected (truncated?)"
    if meta.get("blake2b") != _digest(data_path):
        return "does not match the checksum recorded when it was built (damaged)"
    return None


def _open(path: Path, meta: dict, mode: str) -> np.memmap:
    return np.memmap(path, dtype=np.float16, mode=mode, shape=tuple(meta["shape"]))


def build_split_cache(
    cache_dir: Path,
    name: str,
    key: str,
    run_prefix,
    samples,
    transform,
    views: int,
    seed: int,
    *,
    input_size: tuple[int, int, int],
    batch_size: int,
    workers: int,
    load,
    device: torch.device,
    progress: bool = False,
    rank: int = 0,
    world: int = 1,
    barrier=None,
    log=None,
) -> CachedSplit:
    """Compute (or reuse, when `<name>.json` says it is complete for `key` and the file's bytes match
    the checksum recorded when it was built) one split's cache. A damaged cache (a truncated or
    garbled file, a zeroed block) is computed again, with a `log` line saying why: reusing it would
    train a different model, or report wrong metrics, with exit 0.
    Under DDP every rank computes a contiguous slice of the rows into the same file."""
    from tqdm import tqdm

    cache_dir.mkdir(parents=True, exist_ok=True)
    data_path, meta_path = cache_dir / f"{name}.f16", cache_dir / f"{name}.json"
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    reason = _reusable(data_path, meta_path, key)
    if reason is None:
        meta = json.loads(meta_path.read_text())
        return CachedSplit(data_path, _open(data_path, meta, "r"), labels, views)
    if reason != "absent" and log is not None and rank == 0:
        log(f"prefix cache {data_path} {reason}: computing it again")
    ds = ViewDataset(samples, transform, views, seed, load)
    probe = run_prefix(torch.zeros(1, *input_size)).shape[1:]  # output shape (zeros: no decode, no RNG)
    meta = {"key": key, "shape": [len(ds), *probe], "views": views, "complete": False}
    # every rank fills its rows of one file under a name of its own; rank 0 renames it into place
    # once all are done, so `data_path` only ever holds a complete cache
    partial = data_path.with_name(f".{data_path.name}.partial")
    if rank == 0:
        meta_path.unlink(missing_ok=True)
        _open(partial, meta, "w+").flush()
    if barrier:
        barrier()
    per = -(-len(ds) // world)
    lo, hi = rank * per, min(len(ds), (rank + 1) * per)
    out = _open(partial, meta, "r+")
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, range(lo, hi)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    row = lo
    with tqdm(total=hi - lo, desc=f"caching {name} activations", unit="img", disable=not progress, leave=False) as bar:
        for xb, _ in loader:
            a = run_prefix(xb)
            out[row : row + len(a)] = a.astype(np.float16)
            row += len(a)
            bar.update(len(a))
    out.flush()
    del out
    if barrier:
        barrier()
    if rank == 0:
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        commit(partial, data_path)
        meta["complete"] = True
        meta["bytes"] = data_path.stat().st_size
        meta["blake2b"] = _digest(data_path)
        write_json(meta_path, meta)
    if barrier:
        barrier()
    return CachedSplit(data_path, _open(data_path, meta, "r"), labels, views)


def remove(cache_dir: Path) -> None:
    shutil.rmtree(cache_dir, ignore_errors=True)
