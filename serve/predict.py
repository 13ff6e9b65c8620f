"""`transferzoo predict MODEL.onnx IMAGE...`: classify image files with an exported model, torch-free,
with exactly the server's preprocessing (from the file's metadata)."""

from __future__ import annotations

import os

import numpy as np

from .config import Limits
from .errors import ServeError
from .model import Model


def predict_onnx(
    model_path: str | os.PathLike,
    image_paths: list[str | os.PathLike],
    top_k: int = 5,
    batch_size: int = 16,
    threads: int = 0,
) -> list[dict]:
    """Per image {'path', 'top': [{'index', 'label', 'probability'}...]} or {'path', 'error'}: an
    unreadable image is reported on its own line, it does not stop the others."""
    from .app import top_classes
    from .preprocess import decode_image, to_input

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such file")
    model = Model(model_path, threads=threads)
    pre = model.meta.preprocess
    if pre is None:
        raise ValueError(
            f"{model_path}: no preprocessing metadata (input_size, mean, std...); export it with `transferzoo export`"
        )
    limits = Limits()
    results: dict[int, dict] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def flush():
        if not batch:
            return
        x = np.stack([a for _, a in batch])
        out = model.run({model.inputs[0].name: x})[model.outputs[0].name]
        for row, (i, _) in enumerate(batch):
            results[i] = {"path": os.fspath(image_paths[i]), "top": top_classes(out[row], model, top_k)}
        batch.clear()

    for i, path in enumerate(image_paths):
        try:
            with open(path, "rb") as f:
                data = f.read(limits.max_body_bytes + 1)
            if len(data) > limits.max_body_bytes:
                raise ServeError(f"file larger than {limits.max_body_bytes} bytes")
            batch.append(
                (
                    i,
                    to_input(
                        decode_image(data, limits.max_image_pixels, limits.image_formats), pre, limits.max_image_pixels
                    ),
                )
            )
        except ServeError as e:
            results[i] = {"path": os.fspath(path), "error": e.message}
        except FileNotFoundError:
            results[i] = {"path": os.fspath(path), "error": "no such file"}
        except IsADirectoryError:
            results[i] = {"path": os.fspath(path), "error": "is a directory, not an image"}
        except PermissionError:
            results[i] = {"path": os.fspath(path), "error": "permission denied"}
        if len(batch) >= batch_size:
            flush()
    flush()
    return [results[i] for i in range(len(image_paths))]
