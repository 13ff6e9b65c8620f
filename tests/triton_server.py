"""A real Triton server (2.51, from the `nvidia-pytriton==0.7.0` wheel) for checking `transferzoo serve`
against it, used by tests/test_serve_triton.py and bench/bench_serve_triton.py.

    python tests/triton_server.py fetch      # download + unpack into ~/.cache/transferzoo-triton (55 MB)

The wheel bundles `tritonserver` with only the Python backend (no onnxruntime backend), so the repository
that `transferzoo deploy` writes is served with its platform line swapped for `backend: "python"` and a
`model.py` that runs the same model.onnx through `transferzoo.zoo.runtime.session` (the server's session
options, with the config's intra_op_thread_count) and batches the requests Triton's dynamic batcher hands
it into one run, as Triton's onnxruntime backend does.

How the Python backend finds its Python (learned here, Triton 2.51): each model instance is a separate
process, `backends/python/triton_python_backend_stub`, that embeds the interpreter it was built for.
pytriton ships stubs for 3.8-3.13 under `python_backend_stubs/3.X/`; the right one is copied into
`backends/python/`. The stub links `libpython3.X.so.1.0`, found through LD_LIBRARY_PATH — without this
Python's LIBDIR there, the loader takes Debian's /lib libpython, whose stdlib does not match, and the stub
dies at start. The stub ignores PYTHONPATH (it runs with -E semantics) and
has no program name, so Python looks for `python3` on PATH to find its prefix: a venv's `bin/python3` first
on PATH makes that venv's site-packages the stub's (its pyvenv.cfg is honoured). The backend itself needs
only numpy, and numpy < 2: its pybind11 reads numpy 1's array descriptor layout, so under numpy 2 every
output tensor has size 0 ("output tensor shape does not match size of output"), the reason for pytriton's
numpy<2 pin. So `fetch` makes STUB_VENV (this Python, numpy 1.26 only), the server runs with its bin/ first
on PATH, and `model.py` adds our venv's site-packages with `site.addsitedir` (a config parameter) for
onnxruntime and transferzoo (onnxruntime's wheels work with numpy 1 and 2). The main environment keeps
numpy 2. (Per model, EXECUTION_ENV_PATH with a conda-pack archive is Triton's own answer; not needed here.)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

WHEEL = "nvidia-pytriton==0.7.0"
CACHE = Path(os.environ.get("TRANSFERZOO_TRITON_DIR", Path.home() / ".cache" / "transferzoo-triton"))
ROOT = CACHE / "unpacked" / "pytriton" / "tritonserver"
BINARY = ROOT / "bin" / "tritonserver"
STUB = "triton_python_backend_stub"
STUB_VENV = CACHE / f"stub-venv-{sys.version_info.major}.{sys.version_info.minor}"  # numpy<2 for the stub only
PY = f"{sys.version_info.major}.{sys.version_info.minor}"

MODEL_PY = '''"""Python-backend twin of Triton's onnxruntime backend for one model.onnx (tests/triton_server.py)."""
import json
import site

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        site.addsitedir(params["site_packages"])
        from transferzoo.zoo import runtime

        path = f"{args['model_repository']}/{args['model_version']}/model.onnx"
        self.session = runtime.session(path, int(params.get("intra_op_thread_count", "0")))
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        feeds = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        rows = [f[0].shape[0] for f in feeds]
        batch = {n: np.concatenate([f[k] for f in feeds]) for k, n in enumerate(self.inputs)}
        results = self.session.run(self.outputs, batch)
        out, start = [], 0
        for n in rows:
            tensors = [pb_utils.Tensor(name, r[start : start + n].copy()) for name, r in zip(self.outputs, results)]
            out.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return out
'''


def fetch() -> Path:
    """Download and unpack the wheel (pip, no dependencies) and put this Python's stub in place."""
    if not BINARY.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(CACHE), "-q"], check=True
        )
        wheel = next(CACHE.glob("nvidia_pytriton-0.7.0-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(CACHE / "unpacked")
        wheel.unlink()  # unpacked, it is not needed again
    if not (STUB_VENV / "bin" / "python3").is_file():
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(STUB_VENV)], check=True)
        subprocess.run([str(STUB_VENV / "bin" / "python3"), "-m", "pip", "install", "-q", "numpy<2"], check=True)
    prepare()
    return BINARY


def prepare() -> None:
    BINARY.chmod(0o755)
    stub = ROOT / "python_backend_stubs" / PY / STUB
    if not stub.is_file():
        raise RuntimeError(f"pytriton ships no Python backend stub for Python {PY}")
    target = ROOT / "backends" / "python" / STUB
    if not target.is_file():
        shutil.copy2(stub, target)
    target.chmod(0o755)


def unavailable() -> str | None:
    """Why the server cannot run here (None: it can)."""
    if sys.platform != "linux":
        return "the pytriton wheel's tritonserver is Linux x86-64 only"
    if not BINARY.is_file():
        return f"no tritonserver at {BINARY}: run `python tests/triton_server.py fetch`"
    if not (STUB_VENV / "bin" / "python3").is_file():
        return f"no Python for the backend stub at {STUB_VENV}: run `python tests/triton_server.py fetch`"
    if not (ROOT / "python_backend_stubs" / PY / STUB).is_file():
        return f"pytriton ships no Python backend stub for Python {PY}"
    return None


def python_backend_repo(src: Path, dst: Path) -> Path:
    """A copy of a `transferzoo deploy` repository that the Python-backend-only server loads."""
    site_packages = sysconfig.get_paths()["purelib"]
    for folder in sorted(p for p in src.iterdir() if (p / "config.pbtxt").is_file()):
        out = dst / folder.name
        shutil.copytree(folder, out)
        text = (out / "config.pbtxt").read_text()
        text, n = re.subn(r'^platform: "onnxruntime_onnx"$', 'backend: "python"', text, flags=re.M)
        assert n == 1, text
        text += f'parameters {{\n  key: "site_packages"\n  value {{\n    string_value: "{site_packages}"\n  }}\n}}\n'
        (out / "config.pbtxt").write_text(text)
        for version in (p for p in out.iterdir() if p.is_dir() and p.name.isdigit()):
            (version / "model.py").write_text(MODEL_PY)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonProcess:
    """tritonserver on free loopback ports for REPO; waits for /v2/health/ready. Use as a context manager."""

    def __init__(self, repo: Path, start_timeout: float = 120.0):
        import httpx

        prepare()
        self.http_port, self.grpc_port = _free_port(), _free_port()
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join((str(STUB_VENV / "bin"), env.get("PATH", "")))  # the stub's Python
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")) if p
        )
        cmd = [
            str(BINARY),
            f"--model-repository={repo}",
            f"--backend-directory={ROOT / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
        ]
        self.log = open(repo.parent / "tritonserver.log", "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.address = f"127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"tritonserver did not become ready (rc={self.proc.returncode}):\n{self.log.read()[-4000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python tests/triton_server.py fetch")
    print(fetch())
