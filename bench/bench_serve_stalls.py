"""Event-loop stalls from hostile bodies: the longest /v2/health/live latency seen while the server
inflates a gzip bomb (65 MB of zeros in 64 KB: inflated on a worker thread up to the 64 MB limit,
then 413) and parses large JSON infer bodies (~11 MB: parsed on a worker thread, but json.loads holds
the GIL), against the same probe on an idle server, in one run. Timings are noisy on a shared
machine: run it alone.

    .venv/bin/python bench/bench_serve_stalls.py
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def probe(url: str, stop: threading.Event) -> list[float]:
    import httpx

    lat = []
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get("/v2/health/live")
            lat.append(time.perf_counter() - t)
            time.sleep(0.005)
    return lat


def under(url: str, load, seconds: float = 3.0) -> tuple[float, float, list[int]]:
    """(p50, max) health latency in ms while `load` runs in a loop for `seconds` (or idle if None)."""
    import httpx

    stop, out, statuses = threading.Event(), [], []
    t = threading.Thread(target=lambda: out.extend(probe(url, stop)))
    t.start()
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.monotonic() < end:
            if load is None:
                time.sleep(0.05)
            else:
                statuses.append(load(c).status_code)
    stop.set()
    t.join()
    lat = np.asarray(out) * 1000
    return float(np.median(lat)), float(lat.max()), sorted(set(statuses))


def main() -> int:
    import tempfile

    from serve_fixtures import ServerProcess, build_tiny

    path = Path(tempfile.mkdtemp()) / "tiny.onnx"
    build_tiny(path)
    bomb = gzip.compress(b"\0" * (65 << 20), 9)
    x = np.random.default_rng(0).standard_normal((60, 3, 64, 64)).astype(np.float32)
    big = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()
    print(f"gzip bomb: {len(bomb)} bytes -> {65 << 20} inflated; JSON body: {len(big) / 2**20:.1f} MiB")
    with ServerProcess(f"tiny={path}", "--threads", "1", "--max-batch", "64") as s:
        rows = {
            "idle": under(s.url, None),
            "gzip bomb (413)": under(
                s.url,
                lambda c: c.post("/v2/models/tiny/infer", content=bomb, headers={"Content-Encoding": "gzip"}),
            ),
            "11 MB JSON infer": under(
                s.url,
                lambda c: c.post("/v2/models/tiny/infer", content=big, headers={"Content-Type": "application/json"}),
            ),
        }
    base = rows["idle"][1]
    for name, (p50, mx, st) in rows.items():
        print(f"{name:>18}: health p50 {p50:6.1f} ms  max {mx:7.1f} ms  ({mx / base:5.1f}x idle max)  statuses {st}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
