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
  Hashing is memoised in the same database by (absolute path, size, mtime_ns, ctime_ns, inode), so
  a second run does not re-read unchanged files; a file rewritten in place with its old size and
  mtime restored still changes its ctime (which no user call can set), and a replaced one its inode.
- ``stat``: absolute path + size + mtime_ns, no read at all (fastest; a moved folder is recomputed).

Chunks are written whole (temp file + os.replace) and indexed only after they exist, so a killed
run leaves a consistent cache; rows are gathered through numpy memmaps, so nothing but the
requested rows is read into memory. Each chunk's checksum (blake2b of its files) is recorded when
it is written and verified the first time a process reuses it: a damaged chunk (zeroed, truncated)
is logged, removed and its images computed again, never served as features.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from transferzoo.zoo.fileio import atomic_commit, atomic_write, file_digest, write_json

FORMAT_VERSION = 1
log = logging.getLogger("transferzoo.features")


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
            # added columns (a cache written before them gets them empty: its chunks are re-verified, or
            # recomputed, and its memo entries re-hashed)
            for table, column in (("chunks", "digest TEXT"), ("hashes", "ctime INTEGER"), ("hashes", "ino INTEGER")):
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column.split()[0] not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        self._mm: dict[tuple[int, str], np.ndarray] = {}
        self._verified: dict[int, bool] = {}  # chunk -> its files match the recorded checksum

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
            q = f"SELECT path, size, mtime, ctime, ino, digest FROM hashes WHERE path IN ({','.join('?' * len(part))})"
            for path, size, mtime, ctime, ino, digest in cur.execute(q, part):
                memo[path] = ((size, mtime, ctime, ino), digest)
        keys: list[str | None] = [None] * len(paths)
        todo = []
        for i, (p, st) in enumerate(zip(paths, stats)):
            m = memo.get(os.path.abspath(p))
            if m and m[0] == _stat_key(st):
                keys[i] = "c:" + m[1]
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                digests = list(pool.map(lambda i: _hash_file(paths[i]), todo))
            rows = []
            for i, d in zip(todo, digests):
                keys[i] = "c:" + d
                rows.append((os.path.abspath(paths[i]), *_stat_key(stats[i]), d))
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO hashes (path, size, mtime, ctime, ino, digest) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
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
                if self._chunk_ok(c):
                    found[k] = (c, r)
        return [found.get(k) for k in keys]

    def _chunk_files(self, chunk: int) -> list[Path]:
        return [self.dir / "chunks" / f"{chunk:07d}.{name}.npy" for name in sorted(self.outputs)]

    def _chunk_ok(self, chunk: int) -> bool:
        """The chunk's files all exist and match the checksum recorded when they were written
        (checked once per process; a mismatch is logged and the chunk removed, so its rows are
        computed again)."""
        ok = self._verified.get(chunk)
        if ok is not None:
            return ok
        files = self._chunk_files(chunk)
        if not all(f.exists() for f in files):
            return False  # being written by another process, or removed: not cached (yet)
        row = self._db.execute("SELECT rows, digest FROM chunks WHERE id = ?", (chunk,)).fetchone()
        recorded = row[1] if row else None
        ok = recorded is not None and _files_digest(files) == recorded
        if not ok:
            why = "has no recorded checksum (an older cache)" if recorded is None else "does not match its checksum"
            log.warning(
                "feature cache chunk %s %s: its %s rows are computed again", files[0], why, row[0] if row else "?"
            )
            self._mm = {k: v for k, v in self._mm.items() if k[0] != chunk}
            for f in files:
                f.unlink(missing_ok=True)
        self._verified[chunk] = ok
        return ok

    def add(self, keys: list[str], arrays: dict[str, np.ndarray]) -> None:
        """Store one chunk: arrays[name] is [len(keys), dim] for every output."""
        n = len(keys)
        if n == 0:
            return
        assert set(arrays) == set(self.outputs), (sorted(arrays), sorted(self.outputs))
        blobs = {}
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name], dtype=np.float32)
            assert arr.shape == (n, self.outputs[name]), (name, arr.shape)
            blobs[name] = _npy_bytes(arr)
        digest = _bytes_digest(blobs.values())
        with self._lock:
            with self._db:
                chunk = self._db.execute("INSERT INTO chunks (rows, digest) VALUES (?, ?)", (n, digest)).lastrowid
            for name, blob in blobs.items():
                atomic_write(self.dir / "chunks" / f"{chunk:07d}.{name}.npy", blob)
            self._verified[chunk] = True
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
        blob = _npy_bytes(arr)
        p = self.dir / f"{name}.npy"
        atomic_commit({p: blob, p.with_name(p.name + ".blake2b"): _bytes_digest([blob])})

    def get_array(self, name: str) -> np.ndarray | None:
        """The array stored under `name`, None when absent or damaged (then logged: the caller computes it)."""
        p = self.dir / f"{name}.npy"
        check = p.with_name(p.name + ".blake2b")
        if not p.exists():
            return None
        if not check.exists() or check.read_text().strip() != _files_digest([p]):
            log.warning("cached array %s does not match its checksum: computing it again", p)
            return None
        return np.load(p)

    def close(self) -> None:
        self._mm.clear()
        self._db.close()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _bytes_digest(blobs) -> str:
    h = hashlib.blake2b(digest_size=16)
    for b in blobs:
        h.update(b)
    return h.hexdigest()


def _files_digest(files: list[Path]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in files:
        with open(f, "rb") as fh:
            hashlib.file_digest(fh, lambda: h)  # noqa: B023 - one running hash over every file, in order
    return h.hexdigest()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
