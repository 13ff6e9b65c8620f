"""ONNX files for the serve tests, carrying the metadata of export/ONNX_METADATA.md.

Built with export's own torch -> ONNX step (TorchScript exporter, dynamic batch axis), without its
parity gate (the tiny nets have random weights):
- `lite0`: efficientnet_lite0 with its real ImageNet weights, float32_nchw, 1000 ImageNet labels.
- `tiny`: a small random-weight conv net (3 classes, 64x64, bilinear), float32_nchw: fast tests.
- `tiny_u8`: the same net with preprocessing in the graph (uint8_nhwc input).
The builders are plain functions so bench/ can reuse them; the pytest fixtures cache them per session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY_LABELS = ["ants", "bees", "wasps"]
TINY_PRE = {
    "input_size": [3, 64, 64],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def _metadata(pre: dict, labels: list[str], input_format: str, source: str) -> dict[str, str]:
    return {
        "transferzoo.format": "1",
        "labels": json.dumps(labels),
        "input_format": input_format,
        "output_format": "logits",
        "input_size": json.dumps(list(pre["input_size"])),
        "mean": json.dumps(list(pre["mean"])),
        "std": json.dumps(list(pre["std"])),
        "interpolation": pre["interpolation"],
        "crop_pct": str(pre["crop_pct"]),
        "crop_mode": pre["crop_mode"],
        "source_model": source,
        "exporter": "torchscript",
    }


def _export(model, example, path: Path, meta: dict[str, str]) -> Path:
    import onnx

    from transferzoo.export.onnx_export import to_onnx
    from transferzoo.zoo.fileio import atomic_write

    proto = to_onnx(model, example, "torchscript", 17)
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    atomic_write(path, proto.SerializeToString())
    return path


def _tiny_net():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(TINY_LABELS)),
    )


def build_tiny(path: Path) -> Path:
    import torch

    return _export(
        _tiny_net(), torch.zeros(1, 3, 64, 64), path, _metadata(TINY_PRE, TINY_LABELS, "float32_nchw", "tiny-test-net")
    )


def build_tiny_u8(path: Path) -> Path:
    import torch
    import torch.nn as nn

    class WithPreprocessing(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(TINY_PRE["mean"]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(TINY_PRE["std"]).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            return self.net((x.permute(0, 3, 1, 2).float() - self.mean) / self.std)

    example = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    return _export(
        WithPreprocessing(_tiny_net()), example, path, _metadata(TINY_PRE, TINY_LABELS, "uint8_nhwc", "tiny-test-net")
    )


def build_lite0(path: Path) -> Path:
    import torch

    from transferzoo import zoo
    from transferzoo.zoo.labels import imagenet_labels

    model = zoo.create("efficientnet_lite0")
    pre = zoo.preprocessing("efficientnet_lite0").to_dict()
    meta = _metadata(pre, list(imagenet_labels()), "float32_nchw", "efficientnet_lite0.in1k")
    return _export(model, torch.zeros(1, *pre["input_size"]), path, meta)


@pytest.fixture(scope="session")
def serve_models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve_models")


@pytest.fixture(scope="session")
def tiny_onnx(serve_models_dir) -> Path:
    return build_tiny(serve_models_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_u8_onnx(serve_models_dir) -> Path:
    return build_tiny_u8(serve_models_dir / "tiny_u8.onnx")


@pytest.fixture(scope="session")
def lite0_onnx(serve_models_dir) -> Path:
    return build_lite0(serve_models_dir / "lite0.onnx")


def ort_run(path, x):
    """onnxruntime alone on `path`: the reference a server's answer is compared with."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def rand(shape, seed=0, dtype=None):
    """A seeded random tensor: standard normal float32, or uint8 pixels (dtype=np.uint8)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype or np.float32)


# --- a server started as a user starts it: the CLI in a subprocess, on a free loopback port ----------------

REPO = Path(__file__).resolve().parents[1]


class ServerProcess:
    """`transferzoo serve ARGS --port 0`; the port is read from its 'listening on' line, then
    /v2/health/ready is polled. stop() sends SIGTERM and returns the exit code."""

    def __init__(self, *args: str, env: dict | None = None, start_timeout: float = 60.0):
        import re
        import subprocess
        import sys
        import threading
        import time

        import httpx

        cmd = [sys.executable, "-m", "transferzoo", "serve", *map(str, args), "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
        )
        self.stderr_lines: list[str] = []
        threading.Thread(target=lambda: self.stderr_lines.extend(self.proc.stderr), daemon=True).start()
        self.port = None
        deadline = time.monotonic() + start_timeout
        line = self.proc.stdout.readline()  # blocks until the server prints, or exits
        m = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if not m:
            self.proc.wait(10)
            raise RuntimeError(f"server did not start (rc={self.proc.returncode}): {line}{''.join(self.stderr_lines)}")
        self.port = int(m.group(1))
        g = re.search(r"grpc://[\d.]+:(\d+)", line)  # with --grpc-port
        self.grpc_address = f"127.0.0.1:{g.group(1)}" if g else None
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {env['SERVE_TEST_KEY']}"} if env and "SERVE_TEST_KEY" in env else {}
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server never became ready")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
