"""The server's settings, typed and checked where they are built (`zoo.config`): `ServeOptions`
(batching, runtime, limits: also the pipeline's `serve:` section) and `ServerConfig` (what to serve,
where, and who may call it)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from transferzoo.zoo.config import Config, ConfigError, setting

MB = 1 << 20


@dataclass(frozen=True)
class Limits(Config):
    """What one request may cost the server. Anything over a limit is refused with a 4xx."""

    max_body_bytes: int = setting(64 * MB, ge=1024)  # request body, after decompression too (413)
    max_image_pixels: int = setting(40_000_000, ge=1)  # decoded image size: width x height (413: decompression bomb)
    max_json_bytes: int = setting(16 * MB, ge=1024)  # the JSON part of a request (413): numbers cost ~10x their text
    max_json_depth: int = setting(32, ge=2, le=256)  # nesting of the JSON request header (400)
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # PIL format names (415 else)
    body_timeout_s: float = setting(60.0, gt=0, le=3600)  # the whole body must arrive within this (408)
    max_connections: int = setting(512, ge=1)  # open connections + requests in flight before 503 (uvicorn's cap)


@dataclass(frozen=True)
class ServeOptions(Config):
    """How each model is run: dynamic batching, onnxruntime threads and instances, request limits."""

    max_batch: int = setting(32, ge=1, le=4096)  # rows per onnxruntime run
    max_delay_ms: float = setting(5.0, ge=0, le=10_000)  # how long a batch may wait for requests already arriving
    max_queue: int = setting(256, ge=1)  # queued requests per model before 503
    threads: int = setting(0, ge=0)  # onnxruntime intra-op threads per run (0: all cores, divided among the instances)
    instances: int = setting(1, ge=1, le=64)  # concurrent onnxruntime runs per model (Triton's instance count)
    timeout_s: float = setting(30.0, gt=0, le=3600)  # per request, queue + run (504)
    limits: Limits = field(default_factory=Limits)

    def threads_per_run(self, cpus: int | None = None) -> int:
        """`threads`; when it is 0 (all cores) and several instances run at once, the cores are
        divided among them: each run on all cores would only fight the others. With `cpus` (another
        machine's cores: `transferzoo deploy`) the count is always explicit, never 0."""
        if self.threads or (self.instances == 1 and cpus is None):
            return self.threads
        return max(1, (cpus or os.cpu_count() or 1) // self.instances)


@dataclass(frozen=True, kw_only=True)
class ServerConfig(ServeOptions):
    models: tuple[str, ...]  # .onnx paths, NAME=PATH, or Triton model repository folders (serve.repository)
    host: str = "127.0.0.1"
    port: int = setting(8000, ge=0, le=65535)
    grpc_port: int | None = setting(None, ge=0, le=65535)  # the gRPC service on host:grpc_port (None: off; 0: free)
    drain_s: float = setting(0.0, ge=0, le=600)  # after SIGTERM: seconds of readiness=false while still serving
    api_key_env: str | None = None  # name of the environment variable that holds the bearer token

    def check(self):
        if not self.models:
            raise ConfigError("models", "give at least one MODEL.onnx to serve")
        for arg in self.models:
            m = parse_model_arg(arg)[1]
            if os.path.isdir(m):  # a Triton model repository (serve.repository checks it when loading)
                continue
            if not str(m).endswith(".onnx"):
                raise ConfigError(
                    "models",
                    f"{m}: expected an .onnx file (export one with `transferzoo export`) or a Triton model "
                    "repository folder (`transferzoo deploy`)",
                )
            if not os.path.isfile(m):
                raise FileNotFoundError(f"{m}: no such file")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                raise ConfigError(
                    "host", f"{self.host!r}: give an IP address (127.0.0.1 for this machine only, 0.0.0.0 for all)"
                ) from None
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ConfigError("api_key_env", f"{self.api_key_env}: that environment variable is not set or empty")

    def api_key(self) -> str | None:
        return os.environ[self.api_key_env] if self.api_key_env else None


def parse_model_arg(arg: str) -> tuple[str | None, str]:
    """'NAME=path.onnx' (serve under NAME) or 'path.onnx' (serve under the file's stem) -> (name or None, path)."""
    if "=" in arg and not os.path.exists(arg):
        name, path = arg.split("=", 1)
        return name, path
    return None, arg
