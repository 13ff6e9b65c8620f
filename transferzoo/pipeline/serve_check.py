"""Start `transferzoo serve` on a free loopback port, as a user would, and prove it answers right:
the real tritonclient (binary tensors) and the image endpoint, each compared with onnxruntime run
directly on the same inputs. Used by the pipeline's serve stage and the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from transferzoo.serve.config import ServeOptions


class ServerProcess:
    """`transferzoo serve MODEL --port 0` in a child process; the port is read from its banner."""

    def __init__(self, model: Path, options: ServeOptions | None = None, startup_s: float = 120):
        o = options or ServeOptions()
        cmd = [
            sys.executable,
            "-m",
            "transferzoo",
            "serve",
            str(model),
            "--port",
            "0",
            "--max-batch",
            str(o.max_batch),
            "--max-delay-ms",
            str(o.max_delay_ms),
            "--max-queue",
            str(o.max_queue),
            "--threads",
            str(o.threads),
            "--instances",
            str(o.instances),
            "--timeout-s",
            str(o.timeout_s),
            "--max-body-mb",
            str(o.limits.max_body_bytes / (1 << 20)),
            "--max-json-mb",
            str(o.limits.max_json_bytes / (1 << 20)),
            "--max-image-pixels",
            str(o.limits.max_image_pixels),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
        self.lines: list[str] = []
        self.url = self._wait_for_banner(startup_s)
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()
        self._wait_ready(startup_s)

    def _wait_for_banner(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            m = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if m:
                return m.group(1)
        self.stop()
        raise RuntimeError("the server did not start:\n" + "\n".join(self.lines[-20:]))

    def _read_rest(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server at {self.url} never became ready")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _val_images(run_dir: Path, n: int) -> list[tuple[Path, int]]:
    from transferzoo.export.images import from_split

    run = json.loads((run_dir / "run.json").read_text())
    val = from_split(run_dir / run["splits"]["val"], run["data_root"], "val split")
    step = max(1, len(val) // n)  # spread over the classes, deterministic
    return [(Path(p), int(c)) for p, c in list(zip(val.items, val.labels))[::step][:n]]


def serve_check(model_path: Path, run_dir: Path, cfg, log=print) -> dict:
    """`cfg`: the pipeline's serve section (a ServeOptions with `requests`)."""
    import tritonclient.http as httpclient

    from transferzoo.serve.model import Model
    from transferzoo.serve.preprocess import decode_image, to_input

    images = _val_images(run_dir, cfg.requests)
    direct = Model(model_path, threads=cfg.threads_per_run())  # the same threads per run as the server's
    limits = cfg.limits
    xs = [
        to_input(decode_image(p.read_bytes(), limits.max_image_pixels, limits.image_formats), direct.meta.preprocess)
        for p, _ in images
    ]
    in_name, out_name = direct.inputs[0].name, direct.outputs[0].name
    ref = [direct.run({in_name: x[None]})[out_name][0] for x in xs]

    with ServerProcess(model_path, cfg) as server:
        log(f"server up at {server.url}")
        host = server.url.removeprefix("http://")
        client = httpclient.InferenceServerClient(url=host)
        if not (client.is_server_live() and client.is_model_ready(direct.name)):
            raise RuntimeError(
                f"the server at {server.url} answers but says it is not live or {direct.name!r} is not ready"
            )
        meta = client.get_model_metadata(direct.name)
        dtype = direct.inputs[0].datatype
        served, lat_ms = [], []
        for x in xs:
            inp = httpclient.InferInput(in_name, [1, *x.shape], dtype)
            inp.set_data_from_numpy(x[None], binary_data=True)
            t = time.perf_counter()
            r = client.infer(direct.name, [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=True)])
            lat_ms.append((time.perf_counter() - t) * 1e3)
            served.append(r.as_numpy(out_name)[0])
        correct = 0
        for (path, label), _ in zip(images, xs):
            req = urllib.request.Request(
                f"{server.url}/v2/models/{direct.name}/classify?top_k=1",
                data=path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                top = json.loads(r.read())["top"][0]
            correct += int(top["index"] == label)
        client.close()
    direct_ms = []  # timed after the server is gone, so the two do not share the cores
    for x in xs:
        t = time.perf_counter()
        direct.run({in_name: x[None]})
        direct_ms.append((time.perf_counter() - t) * 1e3)
    diff = float(np.max(np.abs(np.stack(served) - np.stack(ref))))
    report = {
        "url": server.url,
        "model_name": direct.name,
        "inputs": meta.get("inputs"),
        "requests": len(images),
        "max_abs_diff_vs_onnxruntime": diff,
        "classify_accuracy": round(correct / len(images), 4),
        "latency_ms_p50": round(statistics.median(lat_ms), 2),
        "direct_ms_p50": round(statistics.median(direct_ms), 2),
        "exit_code": server.proc.returncode,
    }
    log(
        f"tritonclient: {len(images)} requests, max |served - onnxruntime| = {diff:.2e}, "
        f"p50 {report['latency_ms_p50']} ms (direct {report['direct_ms_p50']} ms); image endpoint accuracy "
        f"{report['classify_accuracy']:.3f}"
    )
    if diff > 1e-4:
        raise RuntimeError(f"served outputs differ from onnxruntime by {diff}")
    return report
