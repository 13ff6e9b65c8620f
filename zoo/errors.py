"""Errors a user can act on. Every error raised for bad input derives from ZooError (a ValueError),
so the CLI can print its message instead of a traceback."""

from __future__ import annotations

import difflib


class ZooError(ValueError):
    """Base class: a problem with the user's input or environment, with a message that says what to do."""


class UnknownModelError(ZooError):
    def __init__(self, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown model {name!r}{hint} (run `transferzoo models` to list them)")
        self.name, self.suggestions = name, close


class ChecksumMismatchError(ZooError):
    def __init__(self, path: str, expected: str, actual: str):
        super().__init__(
            f"checksum mismatch for weight file {path}: expected sha256 {expected}, got {actual}. "
            "The file is corrupt or was tampered with; delete it and reinstall its source."
        )
        self.path, self.expected, self.actual = path, expected, actual


class WeightsUnavailableError(ZooError):
    def __init__(self, name: str, tried: list[str], how: list[str]):
        lines = [f"no pretrained weights for {name!r} are available on this machine.", "Sources tried, in order:"]
        lines += [f"  - {t}" for t in tried]
        lines += ["To get weights:"] + [f"  - {h}" for h in how]
        super().__init__("\n".join(lines))
        self.name, self.tried = name, tried


class ImageError(ZooError):
    """A file that is not a readable image (or is too large to decode safely)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason
