"""Per-epoch training checkpoints for `--resume`: model, optimizer, scheduler, every RNG, the epoch
history and the best-so-far weights, in one file written atomically (temp file + os.replace), so a
`kill -9` at any moment leaves either the previous checkpoint or the new one, never a torn file.
Loaded with `torch.load(weights_only=True)`: plain tensors, numbers, strings and containers only.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from transferzoo.zoo.fileio import atomic_write

NAME = "last.pt"


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save(ckpt_dir: str | os.PathLike, state: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(Path(ckpt_dir) / NAME, buf.getvalue())


def load(ckpt_dir: str | os.PathLike) -> dict | None:
    path = Path(ckpt_dir) / NAME
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-facing problem, not a bug
        raise ValueError(f"cannot read checkpoint {path} ({e}); delete it to start over") from None
