"""Atomic file writes and file digests, shared by everything that writes or reuses artifacts (run
directories, checkpoints, caches, ONNX files, reports).

Every file goes to a temp file in the target's folder, is fsynced, then renamed into place and the
folder fsynced, so a crash never leaves a half-written file and never clobbers a good one.
`atomic_commit` writes all temp files first and only then renames them, so a failure while writing
(disk full, serialisation error) leaves every existing file untouched. This module is the only
place that renames files into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def cache_root() -> Path:
    """Where transferzoo keeps what it reuses (features, feature models, model info):
    $TRANSFERZOO_CACHE, else $XDG_CACHE_HOME/transferzoo, else ~/.cache/transferzoo."""
    env = os.environ.get("TRANSFERZOO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transferzoo"


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temp name beside `path` (same folder, so the rename cannot cross file systems)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename a finished temp file into place and make the rename durable."""
    path = Path(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = temp_path_for(path)
    # 0o666 through the process umask (what open() gives), without toggling the umask
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_commit(files: dict[str | os.PathLike, bytes | str]) -> None:
    """Write {path: data} atomically: all temp files first, then the renames."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append((_write_temp(path, data.encode("utf-8") if isinstance(data, str) else data), path))
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)
    for folder in {path.parent for _, path in temps}:
        _fsync_dir(folder)


def remove_stale_temps(folder: str | os.PathLike, names: tuple[str, ...] | None = None) -> list[Path]:
    """Remove the temp files that writes interrupted by a kill left in `folder` (`.NAME.<hex>.tmp`;
    only those of `names` when given). Call it where one process owns the folder (a run directory,
    its checkpoint folder) before writing there: a temp file of a live writer elsewhere would go too."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(f".*.*{TEMP_SUFFIX}"):
        stem = p.name[1 : -len(TEMP_SUFFIX)]
        target, _, token = stem.rpartition(".")
        if len(token) != 8 or not all(c in "0123456789abcdef" for c in token) or not target:
            continue
        if names is not None and target not in names:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    atomic_commit({path: data})
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a file name (torch.onnx.export, np.memmap): yields a temp path beside
    `path`, renamed onto it when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: str | os.PathLike, algorithm: str | Callable = "sha256") -> str:
    """Hex digest of a file's bytes (`hashlib.file_digest`: chunked, no copy into Python)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def _json_default(o):
    if is_dataclass(o):
        return asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def json_bytes(obj) -> bytes:
    """Indented JSON for the files people read (numpy values, paths and dataclasses converted)."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write(path, json_bytes(obj))


def _record_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_record(path: str | os.PathLike, key: dict, value) -> bool:
    """A reusable result on disk: `value` (JSON types) with the `key` it was computed for and the
    sha256 of its content (read back with `read_record`). Best effort: a cache that cannot be
    written (read-only, full) costs the computation again next time, never the job (False, warned)."""
    try:
        write_json(path, {"key": key, "value": value, "sha256": _record_digest(value)})
    except OSError as e:
        logging.getLogger(__name__).warning("could not write %s (%s); it is computed again next time", path, e)
        return False
    return True


def read_record(path: str | os.PathLike, key: dict):
    """The value `write_record` stored at `path` for exactly `key`; None when the file is missing,
    unreadable, for another key, or does not match its checksum (the caller computes it again)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    key = json.loads(json.dumps(key))  # as stored: tuples are lists in JSON
    if not isinstance(rec, dict) or rec.get("key") != key or "value" not in rec:
        return None
    if rec.get("sha256") != _record_digest(rec["value"]):
        logging.getLogger(__name__).warning("%s does not match its checksum; computing it again", path)
        return None
    return rec["value"]
