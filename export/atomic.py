"""Atomic writes (zoo.fileio): `commit` writes all temp files first and only then renames them into
place, so a failure while writing leaves every existing file untouched."""
from __future__ import annotations

import json
import os

from transferzoo.zoo.fileio import atomic_commit


commit = atomic_commit


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def write_json(path: str | os.PathLike, obj) -> None:
    commit({path: json_bytes(obj)})
