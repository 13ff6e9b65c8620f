"""serve: ONNX models behind an Open Inference Protocol (KServe V2) HTTP server with dynamic batching."""

from __future__ import annotations

import argparse

from ._common import SettingFlags

SERVE_FLAGS: SettingFlags  # bound in register()


def register(sub: argparse._SubParsersAction) -> None:
    from transferzoo.serve.config import ServerConfig

    global SERVE_FLAGS
    SERVE_FLAGS = flags = SettingFlags(ServerConfig)
    p = sub.add_parser(
        "serve",
        help="serve .onnx models over HTTP and gRPC (KServe V2 / Triton protocol, dynamic batching)",
        description="Serve exported .onnx models. Each is named after its file (or NAME=PATH). "
        "Endpoints: /v2/health/{live,ready}, /v2/models/NAME[/ready], POST /v2/models/NAME/infer "
        "(JSON or binary tensors, tritonclient-compatible), POST /v2/models/NAME/classify "
        "(an image -> top-k labels), /metrics (Prometheus), / (a page: models, labels, try an image). "
        "With --grpc-port: inference.GRPCInferenceService (tritonclient.grpc).",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL.onnx",
        help="model files, optionally NAME=PATH, or Triton model repository folders (transferzoo deploy)",
    )
    flags.add(p, "--host", "host", "address to bind (default 127.0.0.1: this machine only)")
    flags.add(p, "--port", "port", "port (default 8000; 0: a free one, printed at start)")
    flags.add(
        p,
        "--grpc-port",
        "grpc_port",
        "also serve the Open Inference Protocol over gRPC on this port (tritonclient.grpc; default off, "
        "Triton's port is 8001; 0: a free one, printed at start)",
    )
    flags.add(p, "--max-batch", "max_batch", "most rows per onnxruntime run (default 32)")
    flags.add(
        p, "--max-delay-ms", "max_delay_ms", "longest a batch waits for requests that are already arriving (default 5)"
    )
    flags.add(p, "--max-queue", "max_queue", "queued requests per model before answering 503 (default 256)")
    flags.add(
        p, "--threads", "threads", "onnxruntime threads per run (default 0: all cores, divided among the instances)"
    )
    flags.add(
        p,
        "--instances",
        "instances",
        "concurrent runs per model, like Triton's instance count (default 1); for "
        "throughput on N cores try --instances N (threads then default to 1 per run)",
    )
    flags.add(p, "--timeout-s", "timeout_s", "per-request limit, queue + inference (504 after; default 30)")
    flags.add(
        p,
        "--drain-s",
        "drain_s",
        "on SIGTERM, answer not-ready but keep serving this long before shutting down (default 0)",
    )
    p.add_argument("--max-body-mb", type=float, help="request body limit, also after decompression (default 64)")
    p.add_argument(
        "--max-json-mb",
        type=float,
        help="limit for the JSON part of a request (default 16; large tensors belong in binary data)",
    )
    flags.flags.update(
        {"limits.max_body_bytes": "--max-body-mb", "limits.max_json_bytes": "--max-json-mb"}
    )  # errors name them
    flags.add(
        p,
        "--max-image-pixels",
        "limits.max_image_pixels",
        "largest image accepted by /classify, decoded or resized (default 40M)",
    )
    flags.add(
        p, "--body-timeout-s", "limits.body_timeout_s", "a request body must arrive within this (408 after; default 60)"
    )
    flags.add(
        p,
        "--max-connections",
        "limits.max_connections",
        "open connections + requests in flight before answering 503 (default 512)",
    )
    flags.add(
        p,
        "--api-key-env",
        "api_key_env",
        "require 'Authorization: Bearer <key>' with the key from env var VAR",
        metavar="VAR",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from transferzoo.serve.config import ServerConfig
    from transferzoo.serve.server import run

    mb = {"limits.max_body_bytes": args.max_body_mb, "limits.max_json_bytes": args.max_json_mb}
    extra = {k: int(v * (1 << 20)) for k, v in mb.items() if v is not None}
    config = SERVE_FLAGS.apply(ServerConfig(models=tuple(args.models)), args, extra)
    return run(config)
