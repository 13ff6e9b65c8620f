"""Measured per-image costs on this machine, and the wall time a strategy should take from them.

`measure_costs` times, on a few real images of the dataset (after one warm-up call each):
- ``decode_s``: decoding + the eval transform of one image, on one thread (the feature pipeline runs
  `decode_workers` of these in parallel, overlapped with inference);
- ``features_s``: the feature engine (`Extractor.engine`: onnxruntime or torch, all threads) per
  image at the extraction batch size;
- ``train_step_s`` (``train=True``): forward + backward + optimizer step of the whole model in
  training mode, per image, at `train_batch` (random weights: the cost does not depend on them).
`expected_seconds` turns them into a strategy's wall time (see its docstring for what it counts).
These are estimates for planning, never asserted against in tests (timing varies with load).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ImageCosts:
    decode_s: float  # seconds per image, one decode thread
    features_s: float  # seconds per image, the feature engine (all `threads`)
    train_step_s: float | None  # seconds per image, a full training step (None: not measured)
    decode_workers: int
    threads: int
    engine: str
    images: int  # how many images the figures were measured on

    def to_dict(self) -> dict:
        return asdict(self)

    def extraction_s(self, n: int) -> float:
        """Features of `n` uncached images: decoding and inference overlap, the slower one sets the pace."""
        return n * max(self.decode_s / max(1, self.decode_workers), self.features_s)

    def expected_seconds(
        self,
        strategy: str,
        num_images: int,
        num_train: int,
        epochs: int = 6,
        *,
        cached_images: int = 0,
        unfreeze_fraction: float = 0.125,
        views: int = 2,
    ) -> float:
        """Wall seconds of `fit --strategy <strategy>` on `num_images` (train + val + test), of
        which `num_train` train and `cached_images` have features cached. Counted: feature
        extraction; for ``partial`` the frozen prefix run once per cached view (`views`, each a
        features-sized pass) then `epochs` of training steps through the top `unfreeze_fraction`
        of the network; for ``full`` `epochs` of full training steps; for the finetuning
        strategies one validation pass per epoch. Not counted: imports, the probes' CV (seconds on
        cached features) and writing the run directory."""
        if strategy not in ("linear", "stages", "auto", "partial", "full"):
            raise ValueError(f"unknown strategy {strategy!r}")
        todo = max(0, num_images - cached_images)
        if strategy in ("linear", "stages", "auto"):
            return self.extraction_s(todo)
        if self.train_step_s is None:
            raise ValueError("finetuning estimates need train_step_s: measure_costs(..., train=True)")
        num_val = max(0, num_images - num_train)
        val = epochs * self.extraction_s(num_val)  # eval is a forward pass, as the features are
        if strategy == "partial":
            prefix = views * self.extraction_s(num_train)
            return prefix + epochs * num_train * self.train_step_s * unfreeze_fraction + val
        return epochs * num_train * max(self.train_step_s, self.decode_s / max(1, self.decode_workers)) + val


def _timed(fn, repeats: int) -> float:
    """Best of `repeats` calls after one warm-up (the minimum is the least disturbed by load)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_costs(
    extractor, paths: list[str], *, train: bool = False, train_batch: int = 8, repeats: int = 2
) -> ImageCosts:
    """Per-image costs of `extractor` (a `features.engine.Extractor`) on up to its batch size of
    `paths` (real images of the dataset; at least one must decode)."""
    from .engine import image_decoder

    decode = image_decoder(extractor.model_name)
    n = max(1, min(len(paths), extractor.cfg.batch_size))
    xs, used = [], []
    for p in paths:
        if len(xs) >= n:
            break
        try:
            xs.append(decode(p))
            used.append(p)
        except Exception:  # an unreadable file says nothing about the cost
            continue
    if not xs:
        raise ValueError("measure_costs: none of the images decodes")
    decode_s = _timed(lambda: [decode(p) for p in used], repeats) / len(used)
    x = np.stack(xs)
    engine = extractor.engine(x)
    features_s = _timed(lambda: engine(x), repeats) / len(x)
    train_s = _train_step_seconds(extractor.model_name, x, train_batch, extractor.threads, repeats) if train else None
    return ImageCosts(
        decode_s=round(decode_s, 6),
        features_s=round(features_s, 6),
        train_step_s=None if train_s is None else round(train_s, 6),
        decode_workers=max(1, min(4, extractor.threads)),
        threads=extractor.threads,
        engine=engine.name,
        images=len(x),
    )


def _train_step_seconds(model_name: str, x: np.ndarray, batch: int, threads: int, repeats: int) -> float:
    import torch

    from transferzoo import zoo
    from transferzoo.transfer.threads import torch_threads

    model = zoo.create(model_name, pretrained=False, num_classes=2).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    xb = torch.from_numpy(np.resize(x, (batch, *x.shape[1:])).astype(np.float32))
    yb = torch.arange(batch) % 2

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    with torch_threads(threads or os.cpu_count() or 1):
        return _timed(step, repeats) / batch
