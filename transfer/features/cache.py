"""On-disk cache of pooled features, so the backbone runs once per image and model, ever.

Layout (one directory per feature extractor identity)::

    CACHE_DIR/<model key>/index.sqlite        file key -> (chunk, row)
    CACHE_DIR/<model key>/chunks/<id>.<output>.npy   float32 [rows, dim], immutable once written
    CACHE_DIR/<model key>/meta.json           what the key stands for

The model key is a hash of: the zoo model name, the pretrained weights' sha256, the preprocessing
(input size, mean, std, interpolation, crop), the list of outputs (stages + top) and a format
version. The engine (onnxruntime or torch) is not part of the key: both are checked to agree.

The file key identifies an image and a view ("orig" or "flip"):
- ``content`` (default): blake2b of the file's bytes. Renaming or copying a folder keeps its cache.
  Hashing is memoised in the same database by (absolute path, size, mtime_ns), so a second run
  does not re-read unchanged files.
- ``stat``: absolute path + size + mtime_ns, no read at all (fastest; a moved folder is recomputed).

Chunks are written whole (temp file + os.replace) and indexed only after they exist, so a killed
run leaves a consistent cache; rows are gathered through numpy memmaps, so nothing but the
requested rows is read into memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from transferzoo.zoo.fileio import atomic_write, file_digest, write_json

FORMAT_VERSION = 1


def model_key(identity: dict) -> str:
    blob = json.dumps(dict(identity, format=FORMAT_VERSION), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _hash_file(path: str) -> str:
    return file_digest(path, lambda: hashlib.blake2b(digest_size=16))


class FeatureCache:
    def __init__(self, cache_dir, identity: dict, outputs: dict[str, int], key_mode: str = "content"):
        if key_mode not in ("content", "stat"):
            raise ValueError(f"cache key mode must be 'content' or 'stat', got {key_mode!r}")
        self.identity, self.outputs, self.key_mode = identity, dict(outputs), key_mode
        self.key = model_key(dict(identity, outputs=self.outputs))
        self.dir = Path(cache_dir).expanduser() / self.key
        (self.dir / "chunks").mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(meta, {"identity": identity, "outputs": self.outputs})
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.dir / "index.sqlite", timeout=60, check_same_thread=False)
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, chunk INTEGER, row INTEGER)")
            self._db.execute("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, rows INTEGER)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, digest TEXT)"
            )
        self._mm: dict[tuple[int, str], np.ndarray] = {}

    # -- keys -----------------------------------------------------------------------------------
    def file_keys(self, paths: list[str], workers: int = 4) -> list[str]:
        """One key per path (see the module docstring). Missing files raise FileNotFoundError."""
        stats = [os.stat(p) for p in paths]
        if self.key_mode == "stat":
            return [f"s:{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}" for p, st in zip(paths, stats)]
        memo = {}
        cur = self._db.cursor()
        for i in range(0, len(paths), 500):
            part = [os.path.abspath(p) for p in paths[i : i + 500]]
            q = f"SELECT path, size, mtime, digest FROM hashes WHERE path IN ({','.join('?' * len(part))})"
            for path, size, mtime, digest in cur.execute(q, part):
                memo[path] = (size, mtime, digest)
        keys: list[str | None] = [None] * len(paths)
        todo = []
        for i, (p, st) in enumerate(zip(paths, stats)):
            m = memo.get(os.path.abspath(p))
            if m and m[0] == st.st_size and m[1] == st.st_mtime_ns:
                keys[i] = "c:" + m[2]
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                digests = list(pool.map(lambda i: _hash_file(paths[i]), todo))
            rows = []
            for i, d in zip(todo, digests):
                keys[i] = "c:" + d
                rows.append((os.path.abspath(paths[i]), stats[i].st_size, stats[i].st_mtime_ns, d))
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)
        return keys  # type: ignore[return-value]

    # -- lookup / store -------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> list[tuple[int, int] | None]:
        found: dict[str, tuple[int, int]] = {}
        cur = self._db.cursor()
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):
            part = uniq[i : i + 500]
            q = f"SELECT key, chunk, row FROM entries WHERE key IN ({','.join('?' * len(part))})"
            for k, c, r in cur.execute(q, part):
                if self._chunk_complete(c):
                    found[k] = (c, r)
        return [found.get(k) for k in keys]

    def _chunk_complete(self, chunk: int) -> bool:
        return all((self.dir / "chunks" / f"{chunk:07d}.{name}.npy").exists() for name in self.outputs)

    def add(self, keys: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Store one chunk: arrays[name] is [len(keys), dim] for every output."""
        n = len(keys)
        if n == 0:
            return
        assert set(arrays) == set(self.outputs), (sorted(arrays), sorted(self.outputs))
        with self._lock:
            with self._db:
                chunk = self._db.execute("INSERT INTO chunks (rows) VALUES (?)", (n,)).lastrowid
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr, dtype=np.float32)
                assert arr.shape == (n, self.outputs[name]), (name, arr.shape)
                atomic_write(self.dir / "chunks" / f"{chunk:07d}.{name}.npy", _npy_bytes(arr))
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", [(k, chunk, r) for r, k in enumerate(keys)]
                )

    def _memmap(self, chunk: int, name: str) -> np.ndarray:
        mm = self._mm.get((chunk, name))
        if mm is None:
            mm = np.load(self.dir / "chunks" / f"{chunk:07d}.{name}.npy", mmap_mode="r")
            self._mm[(chunk, name)] = mm
        return mm

    def gather(self, locations: list[tuple[int, int]], name: str, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at `locations` of output `name`, in order ([n, dim] float32). `out` may be a memmap."""
        dim = self.outputs[name]
        if out is None:
            out = np.empty((len(locations), dim), dtype=np.float32)
        by_chunk: dict[int, list[tuple[int, int]]] = {}
        for i, (c, r) in enumerate(locations):
            by_chunk.setdefault(c, []).append((i, r))
        for c, items in by_chunk.items():
            idx = np.array([i for i, _ in items])
            rows = np.array([r for _, r in items])
            out[idx] = self._memmap(c, name)[rows]
        return out

    def stats(self) -> dict:
        n = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        size = sum(p.stat().st_size for p in (self.dir / "chunks").glob("*.npy"))
        return {"dir": str(self.dir), "entries": int(n), "bytes": int(size)}

    def put_array(self, name: str, arr: np.ndarray) -> None:
        atomic_write(self.dir / f"{name}.npy", _npy_bytes(arr))

    def get_array(self, name: str) -> np.ndarray | None:
        p = self.dir / f"{name}.npy"
        return np.load(p) if p.exists() else None

    def close(self) -> None:
        self._mm.clear()
        self._db.close()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
