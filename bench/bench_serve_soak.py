"""Server memory over many requests: RSS of the `transferzoo serve` process after a warm-up and
after N more requests (default 10,000) of a realistic mix, at concurrency 8:
70% binary infer (tritonclient), 10% JSON infer, 10% /classify of a JPEG, 10% bad requests
(malformed JSON, unknown model, truncated image, oversized batch). Every good answer is checked
against onnxruntime run directly. Target: RSS growth <= 50 MB.

    .venv/bin/python bench/bench_serve_soak.py                # tiny test model, 10k requests
    .venv/bin/python bench/bench_serve_soak.py --model runs/bench/lite0.onnx --requests 2000
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=".onnx with transferzoo metadata (default: the tiny test model, built once)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--instances",
        type=int,
        default=2,
        help="server --instances (default 2: concurrent runs, the throughput setting)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import httpx
    import onnxruntime as ort
    import psutil
    import tritonclient.http as th
    from PIL import Image
    from serve_fixtures import ServerProcess, build_tiny
    from skimage import data
    from tritonclient.utils import InferenceServerException

    path = Path(args.model) if args.model else REPO / "runs" / "bench" / "tiny.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_tiny(path)
    sess = ort.InferenceSession(str(path))
    shape = tuple(sess.get_inputs()[0].shape[1:])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1 + i % 2, *shape)).astype(np.float32) for i in range(16)]
    refs = [sess.run(None, {"input": x})[0] for x in xs]
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    local = threading.local()

    with ServerProcess(f"m={path}", "--threads", "1", "--instances", str(args.instances), "--max-queue", "1024") as s:
        proc = psutil.Process(s.proc.pid)

        def one(i: int) -> str:
            if not hasattr(local, "c"):
                local.c = th.InferenceServerClient(s.address, network_timeout=60)
                local.h = httpx.Client(base_url=s.url, timeout=60)
            k, x, ref = i % 10, xs[i % len(xs)], refs[i % len(xs)]
            if k < 7:
                inp = th.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                try:
                    got = local.c.infer("m", [inp]).as_numpy(sess.get_outputs()[0].name)
                except InferenceServerException as e:
                    return f"infer-{e.status()}"
                return "ok" if np.allclose(got, ref, rtol=1e-5, atol=1e-6) else "WRONG"
            if k == 7:
                r = local.h.post(
                    "/v2/models/m/infer",
                    json={
                        "inputs": [
                            {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
                        ]
                    },
                )
                return "ok" if r.status_code == 200 else f"json-{r.status_code}"
            if k == 8:
                r = local.h.post("/v2/models/m/classify", content=jpeg)
                return "ok" if r.status_code == 200 and len(r.json()["top"]) else f"classify-{r.status_code}"
            bad = [
                ("/v2/models/m/infer", b"{not json"),
                ("/v2/models/nope/infer", b"{}"),
                ("/v2/models/m/classify", jpeg[:500]),
                (
                    "/v2/models/m/infer",
                    json.dumps(
                        {
                            "inputs": [
                                {
                                    "name": "input",
                                    "datatype": "FP32",
                                    "shape": [64, *shape],
                                    "parameters": {"binary_data_size": 4},
                                }
                            ]
                        }
                    ).encode(),
                ),
            ][(i // 10) % 4]
            r = local.h.post(bad[0], content=bad[1])
            return "rejected-ok" if 400 <= r.status_code < 500 else f"bad-{r.status_code}"

        def run(n: int, offset: int) -> Counter:
            with ThreadPoolExecutor(args.concurrency) as pool:
                return Counter(pool.map(one, range(offset, offset + n)))

        run(args.warmup, 0)
        rss0 = proc.memory_info().rss
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], proc.memory_info().rss)

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        outcomes = run(args.requests, args.warmup)
        elapsed = time.perf_counter() - t0
        stop.set()
        rss1 = proc.memory_info().rss
        alive = s.alive()
    result = {
        "model": path.name,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 1),
        "outcomes": dict(outcomes),
        "rss_after_warmup_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "rss_peak_mb": round(peak[0] / 2**20, 1),
        "rss_growth_mb": round((rss1 - rss0) / 2**20, 1),
        "server_alive": alive,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.requests} requests at concurrency {args.concurrency} in {elapsed:.1f} s: {dict(outcomes)}")
        print(
            f"server RSS: {result['rss_after_warmup_mb']} MB after {args.warmup} warm-up requests -> "
            f"{result['rss_after_mb']} MB after "
            f"(peak {result['rss_peak_mb']} MB): growth {result['rss_growth_mb']} MB (target <= 50 MB)"
        )
    good = set(outcomes) <= {"ok", "rejected-ok"} and alive
    return 0 if good and rss1 - rss0 <= 50 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
