"""Atomic file writes, shared by everything that writes artifacts (run directories, checkpoints,
ONNX files, reports): each file goes to a temp file in the target's folder, is fsynced, then
os.replace'd into place, so a crash never leaves a half-written file and never clobbers a good one.

`atomic_commit` writes all temp files first and only then renames them, so a failure while
writing (disk full, serialisation error) leaves every existing file untouched."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_for(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_commit(files: dict[str | os.PathLike, bytes | str]) -> None:
    """Write {path: data} atomically: all temp files first, then the renames."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append((_temp_for(path, data.encode("utf-8") if isinstance(data, str) else data), path))
    except BaseException:
        for tmp, _ in temps:
            os.unlink(tmp)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    atomic_commit({path: data})
    return Path(path)
