"""Server vs onnxruntime run directly, side by side in one run, on the same ORT thread count.

  1. onnxruntime alone: throughput at batch 1..32; the best batch is the baseline.
  2. `transferzoo serve` (the CLI, subprocess) is started; then, in interleaved rounds so that both
     sides see the same background load: onnxruntime at its best batch for S seconds, the server
     at concurrency 16 (tritonclient.http, binary, one image per request) for S seconds, and
     latency pairs (a direct batch-1 run, then the same request through the server at concurrency 1).

Targets: server throughput at concurrency 16 >= 80% of the best-batch baseline; added p50 latency
at concurrency 1 <= 2 ms. The load generator runs on the same cores as the server (as does
everything else on a shared machine): the figures are conservative for the server.

    .venv/bin/python bench/bench_serve.py                 # efficientnet_lite0 (`transferzoo export`ed once to runs/bench/)
    .venv/bin/python bench/bench_serve.py --threads 2 --seconds 8 --json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def model_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    path = REPO / "runs" / "bench" / "lite0.onnx"
    if not path.exists():  # exported once, as a user would
        from transferzoo.cli import main as cli

        path.parent.mkdir(parents=True, exist_ok=True)
        if cli(["export", "efficientnet_lite0", "--out", str(path)]) != 0:
            raise SystemExit("export failed")
    return path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    from serve.model import session_options

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


UINT8 = False  # set from the model: uint8_nhwc models (--with-preprocessing) take RGB pixels


def sample(seed: int, n: int, shape) -> np.ndarray:
    """A batch of inputs of the model's own type (float32 NCHW, or uint8 NHWC pixels)."""
    rng = np.random.default_rng(seed)
    if UINT8:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def triton_type() -> str:
    return "UINT8" if UINT8 else "FP32"


def ort_throughput(sess, shape, batches, seconds) -> dict[int, float]:
    out = {}
    for b in batches:
        x = sample(b, b, shape)
        sess.run(None, {"input": x})  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(batches):
            sess.run(None, {"input": x})
            n += b
        out[b] = n / (time.perf_counter() - t0)
    return out


def ort_latency(sess, shape, n) -> list[float]:
    x = sample(0, 1, shape)
    sess.run(None, {"input": x})
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        ts.append(time.perf_counter() - t0)
    return ts


def server_load(address: str, shape, concurrency: int, seconds: float, n_max: int | None = None) -> tuple[float, list[float], int]:
    """(images/s, per-request latencies, 503s) with `concurrency` threads, each its own client."""
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    x = sample(1, 1, shape)
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    rejected = [0]
    lock = threading.Lock()

    def worker():
        c = th.InferenceServerClient(address, network_timeout=120)
        inp = th.InferInput("input", list(x.shape), triton_type())
        inp.set_data_from_numpy(x)
        c.infer("m", [inp])  # connect + warm
        mine = []
        while time.perf_counter() < stop and (n_max is None or len(mine) < n_max):
            t0 = time.perf_counter()
            try:
                c.infer("m", [inp])
            except InferenceServerException:
                with lock:
                    rejected[0] += 1
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return len(lat) / (time.perf_counter() - t0), lat, rejected[0]


def ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .onnx file with transferzoo metadata (default: efficientnet_lite0, exported once)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads, both sides (default 2)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement window (default 2)")
    ap.add_argument("--latency-n", type=int, default=300, help="latency pairs in all (default 300)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    ap.add_argument("--max-batch", type=int, default=0, help="server --max-batch (default: onnxruntime's best batch from the sweep)")
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from serve_fixtures import ServerProcess

    path = model_path(args.model)
    sess = ort_session(path, args.threads)
    shape = tuple(sess.get_inputs()[0].shape[1:])
    global UINT8
    UINT8 = sess.get_inputs()[0].type == "tensor(uint8)"
    batches = [1, 2, 4, 8, 16, 32]
    print(f"model {path.name} input {shape}, onnxruntime threads={args.threads}, cpus={os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f} (shared machine)", file=sys.stderr)

    base = ort_throughput(sess, shape, batches, args.seconds * 2)  # sweep once to find the best batch
    best_b = max(batches, key=base.get)
    xb = sample(2, best_b, shape)
    x1 = sample(1, 1, shape)
    rounds = []
    max_batch = args.max_batch or best_b  # default: the batch size onnxruntime itself does best with here
    with ServerProcess(f"m={path}", "--threads", str(args.threads), "--max-batch", str(max_batch),
                       "--max-delay-ms", str(args.max_delay_ms), "--max-queue", "1024") as s:
        import httpx
        import tritonclient.http as th

        client = th.InferenceServerClient(s.address)
        inp = th.InferInput("input", list(x1.shape), triton_type())
        inp.set_data_from_numpy(x1)
        client.infer("m", [inp])
        pairs = []
        for r in range(args.rounds):  # A/B interleaved: both sides see the same background load
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                sess.run(None, {"input": xb})
                n += best_b
            ort_ips = n / (time.perf_counter() - t0)
            srv_ips, _, rej = server_load(s.address, shape, 16, args.seconds)
            for _ in range(args.latency_n // args.rounds):  # latency pairs: direct run, then the same through the server
                t0 = time.perf_counter()
                sess.run(None, {"input": x1})
                t1 = time.perf_counter()
                client.infer("m", [inp])
                pairs.append((t1 - t0, time.perf_counter() - t1))
            rounds.append({"ort_best_batch_ips": round(ort_ips, 1), "server_c16_ips": round(srv_ips, 1), "server_c16_503s": rej})
            print(f"round {r + 1}: onnxruntime batch {best_b}: {ort_ips:.1f} images/s, server c16: {srv_ips:.1f} images/s "
                  f"(ratio {srv_ips / ort_ips:.2f}), load avg {os.getloadavg()[0]:.1f}", file=sys.stderr)
        metrics = httpx.get(s.url + "/metrics").text
    direct = [d for d, _ in pairs]
    served = [v for _, v in pairs]
    ratio = sum(r["server_c16_ips"] for r in rounds) / sum(r["ort_best_batch_ips"] for r in rounds)
    median_ratio = statistics.median(r["server_c16_ips"] / r["ort_best_batch_ips"] for r in rounds)
    vals = {l.split()[0]: float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("transferzoo_batch_size_")}
    mean_batch = vals.get('transferzoo_batch_size_sum{model="m"}', 0) / max(vals.get('transferzoo_batch_size_count{model="m"}', 1), 1)
    result = {
        "model": path.name, "threads": args.threads, "cpus": os.cpu_count(), "server_max_batch": max_batch,
        "ort_sweep_images_per_s": {str(b): round(v, 1) for b, v in base.items()}, "ort_best_batch": best_b,
        "rounds": rounds, "throughput_ratio": round(ratio, 3), "throughput_ratio_median_round": round(median_ratio, 3), "server_mean_batch": round(mean_batch, 2),
        "direct_p50_ms": round(statistics.median(direct) * 1000, 3), "server_c1_p50_ms": round(statistics.median(served) * 1000, 3),
        "added_p50_ms": round((statistics.median(served) - statistics.median(direct)) * 1000, 3),
        "added_median_of_pairs_ms": round(statistics.median(v - d for d, v in pairs) * 1000, 3),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("onnxruntime alone, images/s by batch: " + ", ".join(f"b{b}={v:.1f}" for b, v in base.items()) + f" -> best batch {best_b}")
        print(f"throughput, {args.rounds} interleaved rounds of {args.seconds:g} s: server at concurrency 16 (one image per request) / "
              f"onnxruntime at batch {best_b} = {ratio:.2f}, median of rounds {median_ratio:.2f} (target >= 0.80; server --max-batch {max_batch}, mean batch {mean_batch:.1f})")
        print(f"latency p50, batch 1, {len(pairs)} interleaved pairs: direct {ms(statistics.median(direct))}, through the server "
              f"{ms(statistics.median(served))} -> added {ms(statistics.median(served) - statistics.median(direct))} "
              f"(median of pairwise differences {ms(statistics.median(v - d for d, v in pairs))}; target <= 2 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
