"""Atomic writes: every file goes to a temp file in the target's directory, then os.replace.

`commit` writes all temp files first and only then renames them into place, so a failure while
writing (disk full, serialisation error) leaves every existing file untouched."""
from __future__ import annotations

import json
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


def commit(files: dict[str | os.PathLike, bytes]) -> None:
    """Write {path: bytes} atomically (all temp files first, then the renames)."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append((_temp_for(path, data), path))
    except BaseException:
        for tmp, _ in temps:
            os.unlink(tmp)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def write_json(path: str | os.PathLike, obj) -> None:
    commit({path: json_bytes(obj)})
