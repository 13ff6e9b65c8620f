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
    """numpy's BLAS on `n` threads for the block, every other BLAS library on one, and torch's pool
    on `n` when something has imported torch.

    Why every other BLAS on one: a second OpenBLAS (scipy's, when something in the process loaded
    it) spinning beside numpy's on 2 cores stalled both (flowers' CV, when the solver was scipy's
    L-BFGS-B: 34.8 s with both pools on 2 threads, 16.5 s with scipy's on 1). And why a bound at
    all: OpenBLAS threads spin while they wait, so a 2-thread pool on a loaded 2-core machine made
    small matmuls and QRs 10-150x slower."""
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    numpy_blas = [c.filepath for c in blas.lib_controllers if "numpy" in c.filepath]
    with contextlib.ExitStack() as stack:
        if numpy_blas:  # wheels: numpy's own OpenBLAS, found by its path
            stack.enter_context(blas.limit(limits=1))
            stack.enter_context(blas.select(filepath=numpy_blas).limit(limits=max(1, n)))
        else:  # one shared BLAS (a system or conda build): n for all
            stack.enter_context(blas.limit(limits=max(1, n)))
        if "torch" in sys.modules:
            stack.enter_context(torch_threads(n))
        yield


def probe_threads(rows: int, dim: int, cores: int) -> int:
    """Small full-batch problems are dominated by per-op overhead, and a thread pool makes
    them several times slower on a loaded machine: one thread until the matrices get large."""
    return 1 if rows * dim < 4_000_000 else cores
