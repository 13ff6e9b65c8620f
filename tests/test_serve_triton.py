"""`transferzoo serve` beside a real Triton server (2.51, tests/triton_server.py) on the same repository
written by `transferzoo deploy`: the same requests through the same client give identical outputs and
metadata, and the same status for each bad input.

Triton here runs the repository with the Python backend (the pytriton wheel has no onnxruntime backend) and
a model.py that runs the same model.onnx with the same session options and threads. Each test that takes
`clients` runs through tritonclient.http and tritonclient.grpc (PROTOCOLS).

Skipped (with the reason) where the server binary is not there: `python tests/triton_server.py fetch`.
"""

from __future__ import annotations

import importlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from serve_fixtures import TINY_LABELS, ServerProcess, rand
from triton_server import TritonProcess, python_backend_repo, unavailable
from tritonclient.utils import InferenceServerException

from transferzoo.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]
MAX_BATCH = 8


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_onnx, tiny_u8_onnx, lite0_onnx):
    root = tmp_path_factory.mktemp("triton")
    for onnx in (tiny_onnx, tiny_u8_onnx, lite0_onnx):
        args = ["deploy", str(onnx), "--triton-repo", str(root / "repo"), "--max-batch", str(MAX_BATCH)]
        assert main([*args, "--threads", "1", "--instances", "2"]) == 0
    return root


@pytest.fixture(scope="module")
def servers(repo):
    """{'ours': ..., 'triton': ...}, both serving the repository (Triton: its Python-backend copy)."""
    triton_repo = python_backend_repo(repo / "repo", repo / "python_repo")
    with ServerProcess(repo / "repo", "--grpc-port", "0") as ours, TritonProcess(triton_repo) as triton:
        yield {"ours": ours, "triton": triton}
        assert ours.alive(), "transferzoo serve died during the comparison"
        assert triton.proc.poll() is None, "tritonserver died during the comparison"


# protocol -> (client module, the server attribute holding its address)
PROTOCOLS = {"http": ("tritonclient.http", "address"), "grpc": ("tritonclient.grpc", "grpc_address")}


@dataclass
class Side:
    """One server spoken to through one protocol's tritonclient."""

    mod: object  # tritonclient.http or tritonclient.grpc
    address: str

    def __post_init__(self):
        self.client = self.new()

    def new(self):
        return self.mod.InferenceServerClient(self.address)

    def metadata(self, what: str, *args):
        kw = {"as_json": True} if self.mod.__name__.endswith("grpc") else {}  # gRPC: a protobuf otherwise
        return getattr(self.client, f"get_{what}_metadata")(*args, **kw)


@pytest.fixture(params=sorted(PROTOCOLS))
def clients(request, servers):
    """{'ours': Side, 'triton': Side}: the same client class against both servers."""
    module, attr = PROTOCOLS[request.param]
    mod = importlib.import_module(module)
    return {k: Side(mod, getattr(s, attr)) for k, s in servers.items()}


def infer(side, model, x, *, binary=True, classes=0, datatype="FP32", client=None):
    http = not side.mod.__name__.endswith("grpc")  # gRPC tensors are always binary
    inp = side.mod.InferInput("input", list(x.shape), datatype)
    inp.set_data_from_numpy(x, **({"binary_data": binary} if http else {}))
    kw = {"binary_data": binary} if http else {}
    out = side.mod.InferRequestedOutput("logits", class_count=classes, **kw)
    return (client or side.client).infer(model, [inp], outputs=[out]).as_numpy("logits")


def both(clients, fn):
    return fn(clients["ours"]), fn(clients["triton"])


def test_health_and_readiness_agree(clients):
    for side in clients.values():
        c = side.client
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("tiny") and c.is_model_ready("tiny_u8")
        assert not c.is_model_ready("missing")


def test_server_metadata_extensions(clients):
    ours, triton = both(clients, lambda c: c.metadata("server"))
    assert {"binary_tensor_data", "classification"} <= set(ours["extensions"]) & set(triton["extensions"])


@pytest.mark.parametrize("model", ["tiny", "tiny_u8"])
def test_model_metadata_is_identical(clients, model):
    ours, triton = both(clients, lambda c: c.metadata("model", model))
    for key in ("name", "versions", "inputs", "outputs"):
        assert ours[key] == triton[key], key
    # On purpose: the platform is the config's (Triton here says "python": its backend, not the model's), and
    # our metadata adds the ONNX file's metadata as parameters.
    assert ours["platform"] == "onnxruntime_onnx" and triton["platform"] == "python"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("rows", [1, 5])
def test_float_outputs_are_identical(clients, tiny_onnx, binary, rows):
    x = rand((rows, 3, 64, 64), seed=rows)
    ours, triton = both(clients, lambda c: infer(c, "tiny", x, binary=binary))
    np.testing.assert_array_equal(ours, triton)
    ref = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_outputs_are_identical(clients, binary):
    x = rand((3, 64, 64, 3), seed=7, dtype=np.uint8)
    ours, triton = both(clients, lambda c: infer(c, "tiny_u8", x, binary=binary, datatype="UINT8"))
    np.testing.assert_array_equal(ours, triton)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_is_identical(clients, binary):
    """Triton classifies with labels.txt, we with the ONNX metadata; deploy wrote one from the other."""
    x = rand((4, 3, 64, 64), seed=3)
    ours, triton = both(clients, lambda c: infer(c, "tiny", x, binary=binary, classes=2))
    assert ours.shape == triton.shape == (4, 2)
    for a, b in zip(ours.ravel(), triton.ravel()):  # bytes from binary outputs, str from JSON ones
        sa, ia, la = (a.decode() if isinstance(a, bytes) else a).split(":")
        sb, ib, lb = (b.decode() if isinstance(b, bytes) else b).split(":")
        assert (ia, la) == (ib, lb) and la in TINY_LABELS
        assert float(sa) == pytest.approx(float(sb), rel=1e-5, abs=1e-6)


def test_a_real_photo_is_classified_alike(clients, lite0_onnx):
    """efficientnet_lite0 with its ImageNet weights and 1000 labels (commas, apostrophes: labels.txt must
    carry them as the metadata does) on a real photo, preprocessed from the model's metadata."""
    from skimage import data

    from transferzoo.serve.model import Model
    from transferzoo.serve.preprocess import to_input

    pre = Model(lite0_onnx, threads=1).meta.preprocess
    x = to_input(Image.fromarray(data.chelsea()), pre)[None]
    ours, triton = both(clients, lambda c: infer(c, "lite0", x, classes=5))
    labels = lambda top: [t.decode().split(":", 2)[2] for t in top.ravel()]  # noqa: E731
    assert labels(ours) == labels(triton)
    assert any("cat" in label for label in labels(ours)[:2]), labels(ours)


def test_concurrent_requests_are_identical(clients):
    """16 at once: both servers batch them (dynamic batching), each answer is still its own rows."""
    xs = [rand((1 + i % 3, 3, 64, 64), seed=100 + i) for i in range(32)]
    outs = {}
    for k, side in clients.items():
        local = threading.local()  # one client per caller thread, as a user would run them

        def call(x, side=side, local=local):
            if not hasattr(local, "client"):
                local.client = side.new()
            return infer(side, "tiny", x, client=local.client)

        with ThreadPoolExecutor(16) as pool:
            outs[k] = list(pool.map(call, xs))
    for a, b in zip(outs["ours"], outs["triton"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # batches may differ, so bit-equality may not hold


# --- bad input: the same status from both -----------------------------------------------------------------

X = rand((2, 3, 64, 64))


def _json(inputs, outputs=None, **extra):
    body = {"inputs": inputs, **extra}
    if outputs is not None:
        body["outputs"] = outputs
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def _tensor(name="input", datatype="FP32", shape=(2, 3, 64, 64), data=None):
    data = X.ravel().tolist() if data is None else data
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def _binary(size=None, payload=None, **header):
    raw = X.tobytes() if payload is None else payload
    inp = {"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "parameters": {"binary_data_size": size}}
    inp.update(header)
    if inp["parameters"]["binary_data_size"] is None:
        inp["parameters"]["binary_data_size"] = len(raw)
    h = json.dumps({"inputs": [inp]}).encode()
    return {"content": h + raw, "headers": {"Inference-Header-Content-Length": str(len(h))}}


INFER = "/v2/models/tiny/infer"
BAD = {
    "not-json": (INFER, {"content": b"{not json"}),
    "no-inputs": (INFER, _json([])),
    "unknown-input-name": (INFER, _json([_tensor(name="pixels")])),
    "wrong-datatype": (INFER, _json([_tensor(datatype="INT32", data=[1] * X.size)])),
    "wrong-rank": (INFER, _json([_tensor(shape=(2, 3, 64 * 64), data=X.ravel().tolist())])),
    "wrong-dim": (INFER, _json([_tensor(shape=(2, 3, 32, 128))])),
    "too-few-values": (INFER, _json([_tensor(data=X.ravel().tolist()[:-1])])),
    "unknown-output": (INFER, _json([_tensor()], [{"name": "probs"}])),
    "batch-over-max": (INFER, _json([_tensor(shape=(MAX_BATCH + 1, 3, 64, 64), data=[0.0] * (9 * 12288))])),
    "binary-size-short": (INFER, _binary(size=X.nbytes - 4)),
    "binary-size-over-body": (INFER, _binary(size=X.nbytes + 4096)),
    "header-length-over-body": (INFER, {"content": b"{}", "headers": {"Inference-Header-Content-Length": "99"}}),
    "inputs-not-a-list": (INFER, {"content": b'{"inputs": {"name": "input"}}'}),
    "input-without-name": (INFER, _json([{"datatype": "FP32", "shape": [1], "data": [1.0]}])),
    "unknown-datatype": (INFER, _json([_tensor(datatype="FP128")])),
    "negative-dim": (INFER, _json([_tensor(shape=(-2, 3, 64, 64))])),
    "input-twice": (INFER, _json([_tensor(), _tensor()])),
    "data-not-numbers": (INFER, _json([_tensor(data=["a"] * X.size)])),
    "binary-size-too-long": (INFER, _binary(size=X.nbytes + 4, payload=X.tobytes() + b"\0" * 4)),
    "binary-and-data": (INFER, _binary(data=[1.0])),
    "classification-on-uint8-model": (
        "/v2/models/tiny_u8/infer",
        _json([_tensor(datatype="UINT8", shape=(1, 64, 64, 3), data=[0] * 12288)], [{"name": "nope"}]),
    ),
    "unknown-model": ("/v2/models/nope/infer", _json([_tensor()])),
    "unknown-version": ("/v2/models/tiny/versions/7/infer", _json([_tensor()])),
}
# Where Triton's answer differs from ours on purpose (README "Deploying"): {case: (ours, triton)}. Triton
# answers a body it cannot parse into a request with 500 (its JSON reader's errors are INTERNAL); a client's
# mistake is a 4xx here.
MALFORMED = ("not-json", "too-few-values", "data-not-numbers", "input-without-name", "inputs-not-a-list")
MALFORMED += ("negative-dim",)
DIFFERENT = {case: (400, 500) for case in MALFORMED}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_the_same_status(servers, case):
    path, kw = BAD[case]
    got = {}
    for k, s in servers.items():
        r = httpx.post(s.url + path, timeout=30, **kw)
        got[k] = r.status_code
        assert isinstance(r.json().get("error"), str), (k, r.text[:300])
    assert 400 <= got["ours"] < 500, got
    assert (got["ours"], got["triton"]) == DIFFERENT.get(case, (got["triton"], got["triton"])), got


def test_tritonclient_raises_alike(clients):
    """A wrong shape and an unknown model: the same status from both (HTTP code, or gRPC status code)."""
    for bad in (lambda c: infer(c, "tiny", rand((2, 3, 32, 32))), lambda c: infer(c, "nope", X)):
        status = {}
        for k, c in clients.items():
            with pytest.raises(InferenceServerException) as e:
                bad(c)
            status[k] = e.value.status()
        assert status["ours"] == status["triton"] and status["ours"], status
    # and both still answer correctly afterwards
    ours, triton = both(clients, lambda c: infer(c, "tiny", X))
    np.testing.assert_array_equal(ours, triton)
