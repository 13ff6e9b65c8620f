"""Thread counts for a block of work: small problems run faster on one thread.

`compute_threads` bounds numpy's BLAS pool (threadpoolctl) and, where torch is already loaded,
torch's intra-op pool: the probes run on numpy, so a run on cached features never imports torch
(1.1-2.5 s of a 3-7 s run here); `torch_threads` is for the code that is torch anyway.
"""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def compute_threads(n: int):
    """numpy's BLAS limited to `n` threads for the block (OpenBLAS threads spin while they wait, so a
    2-thread pool on a loaded 2-core machine made small matmuls and QRs 10-150x slower), and
    torch's too when something has imported it."""
    from threadpoolctl import threadpool_limits

    with contextlib.ExitStack() as stack:
        stack.enter_context(threadpool_limits(max(1, n), user_api="blas"))
        if "torch" in sys.modules:
            stack.enter_context(torch_threads(n))
        yield


def probe_threads(rows: int, dim: int, cores: int) -> int:
    """Small full-batch problems are dominated by per-op overhead, and a thread pool makes
    them several times slower on a loaded machine: one thread until the matrices get large."""
    return 1 if rows * dim < 4_000_000 else cores
