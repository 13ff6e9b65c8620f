"""torch's intra-op thread count, set for a block: small problems run faster on one thread."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def probe_threads(rows: int, dim: int, cores: int) -> int:
    """Small full-batch problems are dominated by per-op overhead, and torch's thread pool makes
    them several times slower on a loaded machine: one thread until the matrices get large."""
    return 1 if rows * dim < 4_000_000 else cores
