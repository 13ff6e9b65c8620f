"""Server vs onnxruntime run directly, side by side in one run, on the same number of threads.

The server runs `--instances K --threads t` (K concurrent onnxruntime runs of t threads each; default
K = the number of cores, t = 1: the throughput setting of README's serving section). Its baselines
use the same T = K x t threads:
  * the issue's baseline: one onnxruntime run at a time with T intra-op threads, at its best batch;
  * the strongest: the best of that and K concurrent runs of t threads (the server's own layout),
    at their best batch. On a small CPU the second is much faster (no barrier between threads).
Then, in interleaved rounds so that every side sees the same background load: the baselines for S
seconds each, the server at concurrency 16 (tritonclient.http, binary, one image per request) for S
seconds, and latency pairs (a direct batch-1 run of t threads, then the same request through the
server at concurrency 1).

Targets: server throughput at concurrency 16 >= 80% of the baseline; added p50 latency at
concurrency 1 <= 2 ms. The load generator runs on the same cores as the server (as does everything
else on a shared machine): the figures are conservative for the server.

    .venv/bin/python bench/bench_serve.py                 # efficientnet_lite0 (exported once to runs/bench/)
    .venv/bin/python bench/bench_serve.py --instances 1 --threads 2   # one run at a time (the server's default layout)
    .venv/bin/python bench/bench_serve.py --model runs/bench/lite0_u8.onnx --json
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
    from transferzoo.zoo import runtime

    return runtime.session(str(path), threads)


UINT8 = False  # set from the model: uint8_nhwc models (--with-preprocessing) take RGB pixels


def sample(seed: int, n: int, shape) -> np.ndarray:
    """A batch of inputs of the model's own type (float32 NCHW, or uint8 NHWC pixels)."""
    rng = np.random.default_rng(seed)
    if UINT8:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def triton_type() -> str:
    return "UINT8" if UINT8 else "FP32"


def ort_rate(sess, x: np.ndarray, callers: int, seconds: float) -> float:
    """images/s with `callers` threads each running `sess` on x back to back (onnxruntime's run is
    thread-safe and releases the GIL)."""
    sess.run(None, {"input": x})  # warm-up
    counts = [0] * callers
    stop = time.perf_counter() + seconds

    def loop(i):
        while time.perf_counter() < stop:
            sess.run(None, {"input": x})
            counts[i] += len(x)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def sweep(sess, callers: int, shape, batches, seconds) -> dict[int, float]:
    return {b: ort_rate(sess, sample(b, b, shape), callers, seconds / len(batches)) for b in batches}


def server_load(
    address: str, shape, concurrency: int, seconds: float, n_max: int | None = None, protocol: str = "http"
) -> tuple[float, list[float], int]:
    """(images/s, per-request latencies, rejections) with `concurrency` threads, each its own
    tritonclient of `protocol` (http: address host:port of HTTP; grpc: of the gRPC port)."""
    import importlib

    from tritonclient.utils import InferenceServerException

    th = importlib.import_module(f"tritonclient.{protocol}")
    client_kw = {"network_timeout": 120} if protocol == "http" else {}

    x = sample(1, 1, shape)
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    rejected = [0]
    lock = threading.Lock()

    def worker():
        c = th.InferenceServerClient(address, **client_kw)
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
    ap.add_argument(
        "--model", help="an .onnx file with transferzoo metadata (default: efficientnet_lite0, exported once)"
    )
    ap.add_argument(
        "--instances", type=int, default=os.cpu_count() or 1, help="server --instances (default: the number of cores)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads per run, server and baselines (default 1)"
    )
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement window (default 2)")
    ap.add_argument("--latency-n", type=int, default=300, help="latency pairs in all (default 300)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    ap.add_argument(
        "--max-batch", type=int, default=0, help="server --max-batch (default: the best batch of the server's layout)"
    )
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from serve_fixtures import ServerProcess

    path = model_path(args.model)
    k, t = args.instances, args.threads
    total = k * t
    one_run = ort_session(path, total)  # the issue's baseline: one run at a time on all T threads
    per_run = ort_session(path, t)  # the server's layout: K runs of t threads (shared session, as in the server)
    shape = tuple(one_run.get_inputs()[0].shape[1:])
    global UINT8
    UINT8 = one_run.get_inputs()[0].type == "tensor(uint8)"
    batches = [1, 2, 4, 8, 16, 32]
    print(
        f"model {path.name} input {shape}, server --instances {k} --threads {t} ({total} threads), "
        f"cpus={os.cpu_count()}, "
        f"load avg {os.getloadavg()[0]:.2f} (shared machine)",
        file=sys.stderr,
    )

    layouts = {f"1x{total}": (one_run, 1)}
    if k > 1:
        layouts[f"{k}x{t}"] = (per_run, k)
    sweeps = {name: sweep(sess, callers, shape, batches, args.seconds * 2) for name, (sess, callers) in layouts.items()}
    best = {name: max(batches, key=sw.get) for name, sw in sweeps.items()}  # sweep once to find each best batch
    issue_name = f"1x{total}"
    strongest_name = max(sweeps, key=lambda n: sweeps[n][best[n]])
    server_layout = f"{k}x{t}" if k > 1 else issue_name
    max_batch = args.max_batch or best[server_layout]
    x1 = sample(1, 1, shape)
    rounds = []
    with ServerProcess(
        f"m={path}",
        "--instances",
        str(k),
        "--threads",
        str(t),
        "--max-batch",
        str(max_batch),
        "--max-delay-ms",
        str(args.max_delay_ms),
        "--max-queue",
        "1024",
    ) as s:
        import httpx
        import tritonclient.http as th

        client = th.InferenceServerClient(s.address)
        inp = th.InferInput("input", list(x1.shape), triton_type())
        inp.set_data_from_numpy(x1)
        client.infer("m", [inp])
        pairs = []
        for r in range(args.rounds):  # A/B interleaved: every side sees the same background load
            row = {}
            for name in dict.fromkeys([issue_name, strongest_name]):
                sess, callers = layouts[name]
                row[f"ort_{name}_b{best[name]}_ips"] = round(
                    ort_rate(sess, sample(2, best[name], shape), callers, args.seconds), 1
                )
            srv_ips, _, rej = server_load(s.address, shape, 16, args.seconds)
            row["server_c16_ips"], row["server_c16_503s"] = round(srv_ips, 1), rej
            for _ in range(
                args.latency_n // args.rounds
            ):  # latency pairs: direct run (t threads), then the same through the server
                t0 = time.perf_counter()
                per_run.run(None, {"input": x1})
                t1 = time.perf_counter()
                client.infer("m", [inp])
                pairs.append((t1 - t0, time.perf_counter() - t1))
            rounds.append(row)
            base_issue = row[f"ort_{issue_name}_b{best[issue_name]}_ips"]
            base_strong = row[f"ort_{strongest_name}_b{best[strongest_name]}_ips"]
            print(
                f"round {r + 1}: onnxruntime {issue_name} b{best[issue_name]} {base_issue:.1f}, "
                f"{strongest_name} b{best[strongest_name]} "
                f"{base_strong:.1f} images/s; server c16 {srv_ips:.1f} (ratio {srv_ips / base_issue:.2f} / "
                f"{srv_ips / base_strong:.2f}), "
                f"load avg {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
            )
        metrics = httpx.get(s.url + "/metrics").text

    def ratio(name):
        key = f"ort_{name}_b{best[name]}_ips"
        return sum(r["server_c16_ips"] for r in rounds) / sum(r[key] for r in rounds), statistics.median(
            r["server_c16_ips"] / r[key] for r in rounds
        )

    direct = [d for d, _ in pairs]
    served = [v for _, v in pairs]
    vals = {l.split()[0]: float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("transferzoo_batch_size_")}
    mean_batch = vals.get('transferzoo_batch_size_sum{model="m"}', 0) / max(
        vals.get('transferzoo_batch_size_count{model="m"}', 1), 1
    )
    r_issue, r_issue_med = ratio(issue_name)
    r_strong, r_strong_med = ratio(strongest_name)
    result = {
        "model": path.name,
        "instances": k,
        "threads_per_run": t,
        "cpus": os.cpu_count(),
        "server_max_batch": max_batch,
        "ort_sweeps_images_per_s": {name: {str(b): round(v, 1) for b, v in sw.items()} for name, sw in sweeps.items()},
        "issue_baseline": f"{issue_name} b{best[issue_name]}",
        "strongest_baseline": f"{strongest_name} b{best[strongest_name]}",
        "rounds": rounds,
        "ratio_vs_issue_baseline": round(r_issue, 3),
        "ratio_vs_issue_baseline_median_round": round(r_issue_med, 3),
        "ratio_vs_strongest": round(r_strong, 3),
        "ratio_vs_strongest_median_round": round(r_strong_med, 3),
        "server_mean_batch": round(mean_batch, 2),
        "direct_p50_ms": round(statistics.median(direct) * 1000, 3),
        "server_c1_p50_ms": round(statistics.median(served) * 1000, 3),
        "added_p50_ms": round((statistics.median(served) - statistics.median(direct)) * 1000, 3),
        "added_median_of_pairs_ms": round(statistics.median(v - d for d, v in pairs) * 1000, 3),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, sw in sweeps.items():
            print(
                f"onnxruntime alone, {name} (runs x threads), images/s by batch: "
                + ", ".join(f"b{b}={v:.1f}" for b, v in sw.items())
                + f" -> best batch {best[name]}"
            )
        print(
            f"throughput, {args.rounds} interleaved rounds of {args.seconds:g} s, server at concurrency 16 (one "
            "image per request, "
            f"--instances {k} --threads {t} --max-batch {max_batch}, mean batch {mean_batch:.1f}):"
        )
        print(
            f"  / onnxruntime {issue_name} at batch {best[issue_name]} (the issue's baseline) = {r_issue:.2f}, "
            f"median of rounds {r_issue_med:.2f} (target >= 0.80)"
        )
        if strongest_name != issue_name:
            print(
                f"  / onnxruntime {strongest_name} at batch {best[strongest_name]} (the strongest on {total} "
                f"threads) = {r_strong:.2f}, median of rounds {r_strong_med:.2f}"
            )
        print(
            f"latency p50, batch 1, {len(pairs)} interleaved pairs: direct ({t} thread{'s' * (t > 1)}) "
            f"{ms(statistics.median(direct))}, "
            f"through the server {ms(statistics.median(served))} -> added "
            f"{ms(statistics.median(served) - statistics.median(direct))} "
            f"(median of pairwise differences {ms(statistics.median(v - d for d, v in pairs))}; target <= 2 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
