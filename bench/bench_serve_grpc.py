"""gRPC beside HTTP beside onnxruntime alone, in one run, on the same threads (bench/bench_serve.py's
method: read its docstring for the layouts).

The server runs `--instances K --threads t --grpc-port 0`. In interleaved rounds, so that every side
sees the same background load: onnxruntime alone at its best layout and batch (the strongest of one
run of K x t threads and K concurrent runs of t threads, both swept once first), the server at
concurrency 16 over gRPC with two load generators (raw binary tensors, one image per request):
  * tritonclient.grpc, one client per thread (what a Python user runs);
  * raw: grpc generic unary calls of a pre-serialized ModelInferRequest from one asyncio loop
    (the response is received whole but not decoded): about what a C++ load generator such as
    Triton's perf_analyzer costs per request, so that less of the shared cores goes to the client;
the same over HTTP (tritonclient.http, binary), and latency at concurrency 1 (a direct batch-1 run
of t threads, the same request over HTTP, over gRPC with tritonclient, over gRPC raw), interleaved.

Target: gRPC throughput at concurrency 16 >= 0.9 of onnxruntime alone at its best layout; the added
p50 at concurrency 1 printed beside HTTP's. The load generator runs on the same cores as the server:
the figures are conservative for the server, and noisy on a shared machine (the load average is
printed each round). On a loaded machine the throughput ratio is biased towards the server (its 18
runnable threads get a larger share of the cores than onnxruntime's 2), so the bench also prints a
CPU-normalised ratio: onnxruntime's CPU time per image over the server's plus the load generator's
CPU time per request, which is what the throughput ratio is on a dedicated machine where both keep
the cores busy, and moves little with background load.

    .venv/bin/python bench/bench_serve_grpc.py                 # efficientnet_lite0 (exported once to runs/bench/)
    .venv/bin/python bench/bench_serve_grpc.py --rounds 4 --seconds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bs  # noqa: E402  (the shared helpers: model export, onnxruntime rates, HTTP load)
import numpy as np  # noqa: E402


def grpc_load(address: str, shape, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """bench_serve's load through tritonclient.grpc: one gRPC client per thread."""
    return bs.server_load(address, shape, concurrency, seconds, protocol="grpc")


def infer_request_bytes(x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest for model "m" input "input" with x as raw_input_contents (what
    tritonclient.grpc sends for the same call)."""
    from tritonclient.grpc import service_pb2 as pb

    inp = pb.ModelInferRequest.InferInputTensor(name="input", datatype=bs.triton_type(), shape=list(x.shape))
    return pb.ModelInferRequest(model_name="m", inputs=[inp], raw_input_contents=[x.tobytes()]).SerializeToString()


def check_response(data: bytes, rows: int) -> None:
    """The raw generator does not decode its answers; the first one is checked here."""
    from tritonclient.grpc import service_pb2 as pb

    r = pb.ModelInferResponse.FromString(data)
    if not r.outputs or r.outputs[0].shape[0] != rows or len(r.raw_output_contents) != len(r.outputs):
        raise SystemExit(f"unexpected ModelInfer response from the server: {r}")


def raw_grpc_load(address: str, shape, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """(images/s, per-request latencies, rejections): `concurrency` calls kept in flight on one
    grpc.aio channel from one event loop, each sending the same pre-serialized request and not
    decoding the answer (the per-request cost of a C++ load generator, as near as Python gets)."""
    import asyncio

    import grpc

    x = bs.sample(1, 1, shape)
    blob = infer_request_bytes(x)

    async def run():
        async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)]) as ch:
            call = ch.unary_unary(MODEL_INFER)  # no (de)serializers: bytes in, bytes out
            check_response(await call(blob), len(x))  # connect + warm
            lat: list[float] = []
            rejected = 0
            stop = time.perf_counter() + seconds

            async def worker():
                nonlocal rejected
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    try:
                        await call(blob)
                    except grpc.aio.AioRpcError:
                        rejected += 1
                        continue
                    lat.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return len(lat) / (time.perf_counter() - t0), lat, rejected

    return asyncio.run(run())


MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(load, pid: int, *args):
    """load(*args) -> (images/s, latencies, rejected, server CPU ms per request, client CPU ms per request):
    CPU time per request moves far less with the machine's background load than throughput does."""
    s0, c0 = proc_cpu(pid), sum(os.times()[:2])
    ips, lat, rej = load(*args)
    s1, c1 = proc_cpu(pid), sum(os.times()[:2])
    n = max(len(lat), 1)
    return ips, lat, rej, 1000 * (s1 - s0) / n, 1000 * (c1 - c0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an .onnx file with transferzoo metadata (default: efficientnet_lite0)")
    ap.add_argument("--instances", type=int, default=os.cpu_count() or 1, help="server --instances (default: cores)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per run (default 1)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement window (default 2)")
    ap.add_argument("--latency-n", type=int, default=240, help="latency quadruples in all (default 240)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--max-batch", type=int, default=0, help="server --max-batch (default: the layout's best batch)")
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import grpc
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from serve_fixtures import ServerProcess

    path = bs.model_path(args.model)
    k, t = args.instances, args.threads
    total = k * t
    one_run = bs.ort_session(path, total)
    per_run = bs.ort_session(path, t)
    shape = tuple(one_run.get_inputs()[0].shape[1:])
    bs.UINT8 = one_run.get_inputs()[0].type == "tensor(uint8)"
    batches = [1, 2, 4, 8, 16, 32]
    print(
        f"model {path.name} input {shape}, server --instances {k} --threads {t} ({total} threads), "
        f"cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f} (shared machine)",
        file=sys.stderr,
    )
    layouts = {f"1x{total}": (one_run, 1)}
    if k > 1:
        layouts[f"{k}x{t}"] = (per_run, k)
    sweeps = {n: bs.sweep(sess, callers, shape, batches, args.seconds * 2) for n, (sess, callers) in layouts.items()}
    best = {n: max(batches, key=sw.get) for n, sw in sweeps.items()}
    strongest = max(sweeps, key=lambda n: sweeps[n][best[n]])
    server_layout = f"{k}x{t}" if k > 1 else f"1x{total}"
    max_batch = args.max_batch or best[server_layout]
    x1 = bs.sample(1, 1, shape)
    rounds, triples = [], []
    with ServerProcess(
        f"m={path}",
        "--grpc-port",
        "0",
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
        hc = th.InferenceServerClient(s.address)
        hi = th.InferInput("input", list(x1.shape), bs.triton_type())
        hi.set_data_from_numpy(x1)
        gc = tg.InferenceServerClient(s.grpc_address)
        gi = tg.InferInput("input", list(x1.shape), bs.triton_type())
        gi.set_data_from_numpy(x1)
        hc.infer("m", [hi])
        gc.infer("m", [gi])
        raw_channel = grpc.insecure_channel(s.grpc_address)
        raw_call = raw_channel.unary_unary(MODEL_INFER)  # latency at concurrency 1, raw: bytes in, bytes out
        blob1 = infer_request_bytes(x1)
        check_response(raw_call(blob1), 1)
        sess, callers = layouts[strongest]
        for r in range(args.rounds):
            c0 = sum(os.times()[:2])
            ort_ips = bs.ort_rate(sess, bs.sample(2, best[strongest], shape), callers, args.seconds)
            ort_cpu = 1000 * (sum(os.times()[:2]) - c0) / max(ort_ips * args.seconds, 1)  # ms of CPU per image
            row = {"ort_ips": round(ort_ips, 1), "ort_cpu_ms": round(ort_cpu, 3)}
            g_ips, _, g_rej, g_srv, g_cli = measured(grpc_load, s.proc.pid, s.grpc_address, shape, 16, args.seconds)
            r_ips, _, r_rej, r_srv, r_cli = measured(raw_grpc_load, s.proc.pid, s.grpc_address, shape, 16, args.seconds)
            h_ips, _, h_rej, h_srv, h_cli = measured(bs.server_load, s.proc.pid, s.address, shape, 16, args.seconds)
            row |= {"grpc_c16_ips": round(g_ips, 1), "grpc_raw_c16_ips": round(r_ips, 1)}
            row["http_c16_ips"] = round(h_ips, 1)
            row["rejected"] = g_rej + r_rej + h_rej
            row |= {"grpc_server_cpu_ms": round(g_srv, 3), "grpc_client_cpu_ms": round(g_cli, 3)}
            row |= {"grpc_raw_server_cpu_ms": round(r_srv, 3), "grpc_raw_client_cpu_ms": round(r_cli, 3)}
            row |= {"http_server_cpu_ms": round(h_srv, 3), "http_client_cpu_ms": round(h_cli, 3)}
            for _ in range(args.latency_n // args.rounds):
                t0 = time.perf_counter()
                per_run.run(None, {"input": x1})
                t1 = time.perf_counter()
                hc.infer("m", [hi])
                t2 = time.perf_counter()
                gc.infer("m", [gi])
                t3 = time.perf_counter()
                raw_call(blob1)
                triples.append((t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3))
            row["load_avg"] = round(os.getloadavg()[0], 2)
            rounds.append(row)
            print(
                f"round {r + 1}: onnxruntime {strongest} b{best[strongest]} {row['ort_ips']:.1f} images/s; "
                f"gRPC c16 tritonclient {g_ips:.1f} ({g_ips / row['ort_ips']:.2f}), raw {r_ips:.1f} "
                f"({r_ips / row['ort_ips']:.2f}), HTTP c16 {h_ips:.1f} "
                f"({h_ips / row['ort_ips']:.2f}), load avg {row['load_avg']:.1f}",
                file=sys.stderr,
            )
        gc.close()
        raw_channel.close()

    def ratio(key):
        return sum(r[key] for r in rounds) / sum(r["ort_ips"] for r in rounds), statistics.median(
            r[key] / r["ort_ips"] for r in rounds
        )

    med = statistics.median
    direct, http, grpc_, raw = ([tr[i] for tr in triples] for i in range(4))
    result = {
        "model": path.name,
        "instances": k,
        "threads_per_run": t,
        "cpus": os.cpu_count(),
        "server_max_batch": max_batch,
        "ort_sweeps_images_per_s": {n: {str(b): round(v, 1) for b, v in sw.items()} for n, sw in sweeps.items()},
        "baseline": f"{strongest} b{best[strongest]}",
        "rounds": rounds,
        "grpc_ratio": round(ratio("grpc_c16_ips")[0], 3),
        "grpc_ratio_median_round": round(ratio("grpc_c16_ips")[1], 3),
        "grpc_raw_ratio": round(ratio("grpc_raw_c16_ips")[0], 3),
        "grpc_raw_ratio_median_round": round(ratio("grpc_raw_c16_ips")[1], 3),
        "http_ratio": round(ratio("http_c16_ips")[0], 3),
        "http_ratio_median_round": round(ratio("http_c16_ips")[1], 3),
        "cpu_ms_per_request_median": {
            k: round(med(r[k] for r in rounds), 3)
            for k in (
                "ort_cpu_ms",
                "grpc_server_cpu_ms",
                "http_server_cpu_ms",
                "grpc_client_cpu_ms",
                "grpc_raw_server_cpu_ms",
                "grpc_raw_client_cpu_ms",
                "http_client_cpu_ms",
            )
        },
        # the throughput ratio a dedicated machine would give when both sides keep the cores busy: onnxruntime's
        # CPU per image over the server's + load generator's CPU per request (robust to background load)
        "grpc_cpu_ratio": round(
            med(r["ort_cpu_ms"] / (r["grpc_server_cpu_ms"] + r["grpc_client_cpu_ms"]) for r in rounds), 3
        ),
        "grpc_raw_cpu_ratio": round(
            med(r["ort_cpu_ms"] / (r["grpc_raw_server_cpu_ms"] + r["grpc_raw_client_cpu_ms"]) for r in rounds), 3
        ),
        "http_cpu_ratio": round(
            med(r["ort_cpu_ms"] / (r["http_server_cpu_ms"] + r["http_client_cpu_ms"]) for r in rounds), 3
        ),
        # the same with the load generator on other machines (as in production): the server's CPU alone
        "grpc_server_cpu_ratio": round(med(r["ort_cpu_ms"] / r["grpc_server_cpu_ms"] for r in rounds), 3),
        "grpc_raw_server_cpu_ratio": round(med(r["ort_cpu_ms"] / r["grpc_raw_server_cpu_ms"] for r in rounds), 3),
        "http_server_cpu_ratio": round(med(r["ort_cpu_ms"] / r["http_server_cpu_ms"] for r in rounds), 3),
        "direct_p50_ms": round(med(direct) * 1000, 3),
        "http_c1_p50_ms": round(med(http) * 1000, 3),
        "grpc_c1_p50_ms": round(med(grpc_) * 1000, 3),
        "grpc_raw_c1_p50_ms": round(med(raw) * 1000, 3),
        "http_added_p50_ms": round((med(http) - med(direct)) * 1000, 3),
        "grpc_added_p50_ms": round((med(grpc_) - med(direct)) * 1000, 3),
        "grpc_raw_added_p50_ms": round((med(raw) - med(direct)) * 1000, 3),
        "load_avg": [r["load_avg"] for r in rounds],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for n, sw in sweeps.items():
        print(
            f"onnxruntime alone, {n} (runs x threads), images/s by batch: "
            + ", ".join(f"b{b}={v:.1f}" for b, v in sw.items())
            + f" -> best batch {best[n]}"
        )
    print(
        f"throughput, {args.rounds} interleaved rounds of {args.seconds:g} s, concurrency 16, one image per request, "
        f"--instances {k} --threads {t} --max-batch {max_batch}, / onnxruntime {strongest} at batch {best[strongest]} "
        "(its best layout on these threads):"
    )
    print(
        f"  gRPC, tritonclient.grpc     = {result['grpc_ratio']:.2f}, median of rounds "
        f"{result['grpc_ratio_median_round']:.2f} (target >= 0.90)"
    )
    print(
        f"  gRPC, raw pre-serialized    = {result['grpc_raw_ratio']:.2f}, median of rounds "
        f"{result['grpc_raw_ratio_median_round']:.2f} (target >= 0.90; a cheaper client on the same cores)"
    )
    print(
        f"  HTTP, tritonclient.http     = {result['http_ratio']:.2f}, median of rounds "
        f"{result['http_ratio_median_round']:.2f}"
    )
    cpu = result["cpu_ms_per_request_median"]
    print(
        f"CPU per image at concurrency 16 (median of rounds): onnxruntime alone {cpu['ort_cpu_ms']:.2f} ms; server "
        f"process (incl. onnxruntime) / load generator: gRPC tritonclient {cpu['grpc_server_cpu_ms']:.2f} / "
        f"{cpu['grpc_client_cpu_ms']:.2f} ms, gRPC raw {cpu['grpc_raw_server_cpu_ms']:.2f} / "
        f"{cpu['grpc_raw_client_cpu_ms']:.2f} ms, HTTP {cpu['http_server_cpu_ms']:.2f} / "
        f"{cpu['http_client_cpu_ms']:.2f} ms"
    )
    print(
        f"  -> CPU-normalised ratio (what a dedicated machine would give, robust to background load): "
        f"gRPC tritonclient {result['grpc_cpu_ratio']:.2f}, raw {result['grpc_raw_cpu_ratio']:.2f}, HTTP "
        f"{result['http_cpu_ratio']:.2f}; with the load generator elsewhere (server CPU only): gRPC tritonclient "
        f"{result['grpc_server_cpu_ratio']:.2f}, raw {result['grpc_raw_server_cpu_ratio']:.2f}, HTTP "
        f"{result['http_server_cpu_ratio']:.2f}"
    )
    print(
        f"latency p50, batch 1, concurrency 1, {len(triples)} interleaved quadruples: direct ({t} thread"
        f"{'s' * (t > 1)}) {bs.ms(med(direct))}; HTTP {bs.ms(med(http))} (added {bs.ms(med(http) - med(direct))}); "
        f"gRPC tritonclient {bs.ms(med(grpc_))} (added {bs.ms(med(grpc_) - med(direct))}); gRPC raw "
        f"{bs.ms(med(raw))} (added {bs.ms(med(raw) - med(direct))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
