"""Large JSON request bodies parsed in a helper process, so the server's own interpreter is not held.

`json.loads` and turning its lists into numpy arrays hold the GIL for their whole run: on a worker
thread a 14.5 MB JSON infer body still stalled every other request, health checks included, for
0.5 s (bench/bench_serve_stalls.py). Here bodies over PROCESS_JSON_BYTES go to a small spawned
process pool (numpy and the standard library only: no onnxruntime, no torch), which parses the JSON
and converts each input's numeric `data` list with the same `np.asarray` the protocol uses; arrays
come back by pickle (a memory copy). Everything else (validation, limits, errors) stays in
`protocol`. If the pool is unavailable or a worker dies, the body is parsed in-process as before.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

PROCESS_JSON_BYTES = 1 << 20  # JSON bodies larger than this are parsed in the helper process
WORKERS = 2

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def parse(text: bytes) -> tuple[str, object]:
    """('ok', object) with numeric input data as arrays, ('deep', None) or ('malformed', message).
    Runs in the helper process."""
    try:
        obj = json.loads(text)
    except RecursionError:
        return "deep", None
    except (ValueError, UnicodeDecodeError) as e:
        return "malformed", str(e)
    inputs = obj.get("inputs") if isinstance(obj, dict) else None
    for inp in inputs if isinstance(inputs, list) else ():
        if isinstance(inp, dict) and isinstance(inp.get("data"), list):
            try:
                arr = np.asarray(inp["data"])
            except (ValueError, TypeError, OverflowError):
                continue  # the protocol raises the same error in-process, naming the input
            if arr.dtype.kind in "biuf":
                inp["data"] = arr
    return "ok", obj


def _ignore_sigint() -> None:
    """Ctrl-C reaches the whole process group: the server shuts its helpers down itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn, not fork: the server process runs onnxruntime and event-loop threads
            _pool = ProcessPoolExecutor(
                WORKERS, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
            )
        return _pool


async def parse_async(text: bytes | bytearray) -> tuple[str, object] | None:
    """`parse` in the helper process; None when it could not run there (the caller parses in-process)."""
    import asyncio

    global _pool
    try:
        return await asyncio.wrap_future(_get_pool().submit(parse, bytes(text)))
    except (BrokenProcessPool, OSError, RuntimeError):
        with _lock:
            _pool = None  # a worker died (out of memory?): a fresh pool next time
        return None


def shutdown() -> None:
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
