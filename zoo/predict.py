"""Classify images with a pretrained zoo model (ImageNet labels): the first thing a user tries."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ImageError
from .factory import create, transforms
from .images import load_rgb
from .labels import imagenet_labels


@dataclass
class Prediction:
    path: str
    top: list[tuple[int, str, float]] | None  # (class id, label, probability)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "top": [{"index": i, "label": l, "probability": round(p, 6)} for i, l, p in self.top],
        }


@torch.no_grad()
def predict_images(
    name: str, paths: list[str | os.PathLike], top_k: int = 5, weights=None, batch_size: int = 16
) -> list[Prediction]:
    """Top-k ImageNet predictions for each path; unreadable files get a per-file error, not an exception."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    model = create(name, pretrained=True, weights=weights).eval()
    tf = transforms(name)
    labels = imagenet_labels()
    results: dict[int, Prediction] = {}
    batch: list[tuple[int, torch.Tensor]] = []

    def flush():
        if not batch:
            return
        probs = model(torch.stack([t for _, t in batch])).softmax(-1)
        p, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for row, (i, _) in enumerate(batch):
            results[i] = Prediction(
                os.fspath(paths[i]), [(int(c), labels[int(c)], float(q)) for c, q in zip(idx[row], p[row])]
            )
        batch.clear()

    for i, path in enumerate(paths):
        try:
            batch.append((i, tf(load_rgb(path))))
        except ImageError as e:
            results[i] = Prediction(os.fspath(path), None, e.reason)
        if len(batch) >= batch_size:
            flush()
    flush()
    return [results[i] for i in range(len(paths))]
