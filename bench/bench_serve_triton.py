"""`transferzoo serve` vs a real Triton (2.51, tests/triton_server.py) on the same deployed repository, side
by side in one run: the same .onnx file, the same instances and threads (config.pbtxt from `transferzoo deploy`),
the same client (tritonclient.http, binary tensors, one image per request, one client per caller thread).

Triton runs the model in its Python backend (the only one the pytriton wheel ships) with a model.py that calls
the same onnxruntime session: each batch crosses a process boundary (shared memory to the backend stub) that
Triton's onnxruntime backend would not, so Triton's figures here are a lower bound on what it does with that
backend. In interleaved rounds, both servers: concurrency 16 for S seconds (throughput, p50/p99), then
concurrency 1 (p50/p99). Ratios are ours / Triton's (throughput: > 1 is ours faster; latency: < 1 is ours
faster). Both servers and the client share this machine's cores: on a loaded machine the figures are noisy.

    python tests/triton_server.py fetch                # once: the server (55 MB) + its numpy<2 venv
    .venv/bin/python bench/bench_serve_triton.py       # efficientnet_lite0, --instances 2 --threads 1
    .venv/bin/python bench/bench_serve_triton.py --model runs/bench/lite0_u8.onnx --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))


def pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .onnx file (default: efficientnet_lite0, exported once to runs/bench/)")
    ap.add_argument("--instances", type=int, default=os.cpu_count() or 1, help="instances (default: the cores)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per instance (default 1)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--queue-delay-us", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement window (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import bench_serve
    from serve_fixtures import ServerProcess
    from triton_server import TritonProcess, python_backend_repo, unavailable

    from transferzoo.cli import main as cli

    why = unavailable()
    if why:
        raise SystemExit(why)
    path = bench_serve.model_path(args.model)
    sess = bench_serve.ort_session(path, args.threads)
    shape = tuple(sess.get_inputs()[0].shape[1:])
    bench_serve.UINT8 = sess.get_inputs()[0].type == "tensor(uint8)"
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        repo = Path(tmp) / "repo"
        deploy = ["deploy", str(path), "--triton-repo", str(repo), "--name", "m"]
        deploy += ["--instances", str(args.instances), "--threads", str(args.threads)]
        deploy += ["--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us)]
        if cli(deploy) != 0:
            raise SystemExit("deploy failed")
        triton_repo = python_backend_repo(repo, Path(tmp) / "python_repo")
        print(
            f"model {path.name} {list(shape)}; both servers: {args.instances} instance(s) x {args.threads} thread(s), "
            f"max_batch {args.max_batch}, queue delay {args.queue_delay_us} us; {args.rounds} rounds x "
            f"{args.seconds} s per window; cores: {os.cpu_count()}",
            flush=True,
        )
        res = {k: {"c16": [], "lat16": [], "lat1": []} for k in ("ours", "triton")}
        with ServerProcess(repo) as ours, TritonProcess(triton_repo) as triton:
            servers = {"ours": ours, "triton": triton}
            for k, s in servers.items():  # warm both (first runs, connections)
                bench_serve.server_load(s.address, shape, 4, 1.0)
            for r in range(args.rounds):
                for k, s in servers.items():
                    rate, lat, rejected = bench_serve.server_load(s.address, shape, 16, args.seconds)
                    assert not rejected, f"{k}: {rejected} requests refused"
                    res[k]["c16"].append(rate)
                    res[k]["lat16"].extend(lat)
                    _, lat1, _ = bench_serve.server_load(s.address, shape, 1, args.seconds / 2)
                    res[k]["lat1"].extend(lat1)
                print(
                    f"round {r + 1}: ours {res['ours']['c16'][-1]:.1f} img/s, triton {res['triton']['c16'][-1]:.1f}",
                    flush=True,
                )
    out = {}
    for k, v in res.items():
        out[k] = {
            "c16_img_s": statistics.median(v["c16"]),
            "c16_p50_ms": 1000 * pct(v["lat16"], 0.5),
            "c16_p99_ms": 1000 * pct(v["lat16"], 0.99),
            "c1_p50_ms": 1000 * pct(v["lat1"], 0.5),
            "c1_p99_ms": 1000 * pct(v["lat1"], 0.99),
            "c1_requests": len(v["lat1"]),
        }
    out["ratio_ours_over_triton"] = {m: out["ours"][m] / out["triton"][m] for m in out["ours"] if m != "c1_requests"}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print("\n                     transferzoo serve   triton 2.51 (python backend)   ours/triton")
    rows = [
        ("concurrency 16 img/s", "c16_img_s", "{:.1f}"),
        ("concurrency 16 p50", "c16_p50_ms", "{:.2f} ms"),
        ("concurrency 16 p99", "c16_p99_ms", "{:.2f} ms"),
        ("concurrency 1 p50", "c1_p50_ms", "{:.2f} ms"),
        ("concurrency 1 p99", "c1_p99_ms", "{:.2f} ms"),
    ]
    for label, key, fmt in rows:
        print(
            f"{label:<21}{fmt.format(out['ours'][key]):>17}   {fmt.format(out['triton'][key]):>28}"
            f"   {out['ratio_ours_over_triton'][key]:>11.2f}"
        )
    print("(Triton's Python backend adds a process hop per batch that its onnxruntime backend would not.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
