"""The server's settings: one typed dataclass, validated when it is built (the CLI's boundary)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may cost the server. Anything over a limit is refused with a 4xx."""

    max_body_bytes: int = 64 * MB  # request body, after decompression too (413)
    max_image_pixels: int = 40_000_000  # decoded image size: width x height (413: decompression bomb)
    max_json_bytes: int = 16 * MB  # the JSON part of a request (413): JSON numbers cost ~10x their text in memory
    max_json_depth: int = 32  # nesting of the JSON request header (400)
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # PIL format names (415 else)

    def __post_init__(self):
        if self.max_body_bytes < 1024:
            raise ValueError(f"max body size must be at least 1024 bytes, got {self.max_body_bytes}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max image pixels must be >= 1, got {self.max_image_pixels}")
        if self.max_json_bytes < 1024:
            raise ValueError(f"max JSON size must be at least 1024 bytes, got {self.max_json_bytes}")
        if not 2 <= self.max_json_depth <= 256:
            raise ValueError(f"max JSON depth must be in 2..256, got {self.max_json_depth}")


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[str, ...]  # .onnx paths
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32  # rows per onnxruntime run
    max_delay_ms: float = 5.0  # how long a batch may wait for requests that are already arriving
    max_queue: int = 256  # queued requests per model before 503
    threads: int = 0  # onnxruntime intra-op threads per run (0: all cores, divided among the instances)
    instances: int = 1  # concurrent onnxruntime runs per model (Triton's instance count), one session shared
    timeout_s: float = 30.0  # per request, queue + run (504)
    drain_s: float = 0.0  # after SIGTERM: seconds of readiness=false while still serving
    api_key_env: str | None = None  # name of the environment variable that holds the bearer token
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if not self.models:
            raise ValueError("give at least one MODEL.onnx to serve")
        for arg in self.models:
            m = parse_model_arg(arg)[1]
            if not str(m).endswith(".onnx"):
                raise ValueError(f"{m}: expected an .onnx file (export one with `transferzoo export`)")
            if not os.path.isfile(m):
                raise FileNotFoundError(f"{m}: no such file")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise ValueError(f"--host {self.host!r}: give an IP address (127.0.0.1 for this machine only, 0.0.0.0 for all)") from None
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if not 1 <= self.max_batch <= 4096:
            raise ValueError(f"--max-batch must be in 1..4096, got {self.max_batch}")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise ValueError(f"--max-delay-ms must be in 0..10000, got {self.max_delay_ms}")
        if self.max_queue < 1:
            raise ValueError(f"--max-queue must be >= 1, got {self.max_queue}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0: all cores), got {self.threads}")
        if not 1 <= self.instances <= 64:
            raise ValueError(f"--instances must be in 1..64, got {self.instances}")
        if not 0 < self.timeout_s <= 3600:
            raise ValueError(f"--timeout-s must be in (0, 3600], got {self.timeout_s}")
        if not 0 <= self.drain_s <= 600:
            raise ValueError(f"--drain-s must be in 0..600, got {self.drain_s}")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api-key-env {self.api_key_env}: that environment variable is not set or empty")

    def threads_per_run(self) -> int:
        """--threads; when it is 0 (all cores) and several instances run at once, the cores are
        divided among them: each run on all cores would only fight the others."""
        if self.threads or self.instances == 1:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.instances)

    def api_key(self) -> str | None:
        return os.environ[self.api_key_env] if self.api_key_env else None


def parse_model_arg(arg: str) -> tuple[str | None, str]:
    """'NAME=path.onnx' (serve under NAME) or 'path.onnx' (serve under the file's stem) -> (name or None, path)."""
    if "=" in arg and not os.path.exists(arg):
        name, path = arg.split("=", 1)
        return name, path
    return None, arg
