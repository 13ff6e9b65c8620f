"""serve: ONNX models behind an Open Inference Protocol (KServe V2) HTTP server with dynamic batching."""
from __future__ import annotations

import argparse

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve .onnx models over HTTP (KServe V2 / Triton protocol, dynamic batching)",
                       description="Serve exported .onnx models. Each is named after its file (or NAME=PATH). "
                                   "Endpoints: /v2/health/{live,ready}, /v2/models/NAME[/ready], POST /v2/models/NAME/infer "
                                   "(JSON or binary tensors, tritonclient-compatible), POST /v2/models/NAME/classify "
                                   "(an image -> top-k labels), /metrics (Prometheus).")
    p.add_argument("models", nargs="+", metavar="MODEL.onnx", help="model files, optionally NAME=PATH")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one, printed at start)")
    p.add_argument("--max-batch", type=int, default=32, help="most rows per onnxruntime run (default 32)")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="longest a batch waits for requests that are already arriving (default 5)")
    p.add_argument("--max-queue", type=int, default=256, help="queued requests per model before answering 503 (default 256)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per run (default 0: all cores, divided among the instances)")
    p.add_argument("--instances", type=int, default=1,
                   help="concurrent runs per model, like Triton's instance count (default 1); for throughput on "
                        "N cores try --instances N (threads then default to 1 per run)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request limit, queue + inference (504 after; default 30)")
    p.add_argument("--drain-s", type=float, default=0.0,
                   help="on SIGTERM, answer not-ready but keep serving this long before shutting down (default 0)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="request body limit, also after decompression (default 64)")
    p.add_argument("--max-json-mb", type=float, default=16.0,
                   help="limit for the JSON part of a request (default 16; large tensors belong in binary data)")
    p.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image accepted by /classify (default 40M)")
    p.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer <key>' with the key from env var VAR")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from transferzoo.serve.config import Limits, ServerConfig
    from transferzoo.serve.server import run

    limits = Limits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_json_bytes=int(args.max_json_mb * (1 << 20)),
                    max_image_pixels=args.max_image_pixels)
    config = ServerConfig(models=tuple(args.models), host=args.host, port=args.port, max_batch=args.max_batch,
                          max_delay_ms=args.max_delay_ms, max_queue=args.max_queue, threads=args.threads, instances=args.instances,
                          timeout_s=args.timeout_s, drain_s=args.drain_s, api_key_env=args.api_key_env, limits=limits)
    return run(config)
