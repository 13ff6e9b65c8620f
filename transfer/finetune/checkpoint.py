"""Per-epoch training checkpoints for `--resume`: model, optimizer, scheduler, every RNG, the epoch
history and the best-so-far weights, in one file written atomically (temp file + os.replace), so a
`kill -9` at any moment leaves either the previous checkpoint or the new one, never a torn file.

The file is a one-line header holding the sha256 of what follows (`transferzoo-checkpoint/1 <hex>`),
then torch.save's bytes. A checkpoint whose bytes do not match (a flipped bit, a truncated copy) is
refused with a message naming the file, never resumed from: a damaged checkpoint would otherwise
give a different model with exit 0. Loaded with `torch.load(weights_only=True)`: plain tensors,
numbers, strings and containers only. Temp files of writes a kill interrupted are removed.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from transferzoo.zoo.fileio import atomic_write, remove_stale_temps

NAME = "last.pt"
MAGIC = b"transferzoo-checkpoint/1 "
HEADER = len(MAGIC) + 64 + 1  # magic, hex sha256, newline


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
    buf.write(b"\0" * HEADER)
    torch.save(state, buf)
    data = buf.getbuffer()
    data[:HEADER] = MAGIC + hashlib.sha256(data[HEADER:]).hexdigest().encode() + b"\n"
    del data
    path = atomic_write(Path(ckpt_dir) / NAME, buf.getvalue())
    remove_stale_temps(ckpt_dir, (NAME,))  # a previous run's killed writes (the run owns this folder)
    return path


def load(ckpt_dir: str | os.PathLike) -> dict | None:
    """The checkpoint in `ckpt_dir`, None when there is none; ValueError naming the file and what to
    do when it is damaged or was not written by this version."""
    ckpt_dir = Path(ckpt_dir)
    remove_stale_temps(ckpt_dir)
    path = ckpt_dir / NAME
    if not path.exists():
        return None
    fix = f"delete it (rm {path}) to start the run over, or run without --resume"
    data = path.read_bytes()
    head = data[:HEADER]
    if not head.startswith(MAGIC) or head[-1:] != b"\n":
        raise ValueError(f"checkpoint {path} has no checksum header (damaged, or written by an older version): {fix}")
    body = memoryview(data)[HEADER:]
    if hashlib.sha256(body).hexdigest().encode() != head[len(MAGIC) : -1]:
        raise ValueError(
            f"checkpoint {path} is damaged: its contents do not match the checksum it was written with "
            f"(a flipped bit or a truncated copy), so resuming from it would not reproduce the run: {fix}"
        )
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file is a user-facing problem, not a bug
        raise ValueError(f"cannot read checkpoint {path} ({e}): {fix}") from None
