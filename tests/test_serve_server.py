"""The server end to end, started with the CLI as a user would, spoken to with tritonclient.http (its
defaults: binary tensors) and plain HTTP; every answer is compared with onnxruntime run directly."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import timm
import tritonclient.http as th
from PIL import Image
from serve_fixtures import TINY_LABELS, TINY_PRE, ServerProcess, ort_run, rand
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def server(tiny_onnx, tiny_u8_onnx, lite0_onnx):
    with ServerProcess(
        tiny_onnx, tiny_u8_onnx, lite0_onnx, "--max-batch", "16", "--threads", "1", "--instances", "2"
    ) as s:
        yield s
        assert s.alive(), "the server died during the tests"


@pytest.fixture(scope="module")
def client(server):
    return th.InferenceServerClient(server.address)


def timm_eval(img: Image.Image, pre: dict) -> np.ndarray:
    tf = timm.data.create_transform(
        input_size=tuple(pre["input_size"]),
        interpolation=pre["interpolation"],
        crop_pct=pre["crop_pct"],
        crop_mode=pre["crop_mode"],
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
    )
    return tf(img).numpy()


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


# --- tritonclient ------------------------------------------------------------------------------------


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("lite0")
    assert not client.is_model_ready("missing")
    meta = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(meta["extensions"])


def test_model_metadata(client):
    md = client.get_model_metadata("lite0")
    assert md["name"] == "lite0" and md["versions"] == ["1"]
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert md["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    assert md["parameters"]["input_format"] == "float32_nchw"
    assert client.get_model_metadata("tiny_u8")["inputs"][0] == {
        "name": "input",
        "datatype": "UINT8",
        "shape": [-1, 64, 64, 3],
    }
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "404" and "unknown model" in e.value.message()


@pytest.mark.parametrize(
    "model,shape,dtype,triton",
    [
        ("tiny", (1, 3, 64, 64), np.float32, "FP32"),
        ("tiny", (5, 3, 64, 64), np.float32, "FP32"),
        ("tiny_u8", (3, 64, 64, 3), np.uint8, "UINT8"),
        ("lite0", (2, 3, 224, 224), np.float32, "FP32"),
    ],
)
def test_infer_binary_defaults_equal_onnxruntime(client, model, shape, dtype, triton, serve_models_dir):
    x = rand(shape, seed=len(model) + shape[0], dtype=dtype)
    inp = th.InferInput("input", list(shape), triton)
    inp.set_data_from_numpy(x)  # binary_data=True: the client's default
    result = client.infer(model, [inp])
    got = result.as_numpy("logits")
    assert result.get_output("logits")["parameters"]["binary_data_size"] == got.nbytes
    np.testing.assert_array_equal(got, ort_run(serve_models_dir / f"{model}.onnx", x))


def test_infer_json_tensors_and_json_outputs(client, tiny_onnx):
    x = rand((2, 3, 64, 64), seed=7)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    result = client.infer(
        "tiny", [inp], outputs=[th.InferRequestedOutput("logits", binary_data=False)], request_id="r-42"
    )
    assert result.get_response()["id"] == "r-42"
    assert "data" in result.get_output("logits")
    np.testing.assert_allclose(result.as_numpy("logits"), ort_run(tiny_onnx, x), rtol=1e-6, atol=1e-7)


def test_infer_gzip_and_deflate_both_ways(client, tiny_onnx):
    x = rand((3, 3, 64, 64), seed=3)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for algo in ("gzip", "deflate"):
        r = client.infer("tiny", [inp], request_compression_algorithm=algo, response_compression_algorithm=algo)
        np.testing.assert_array_equal(r.as_numpy("logits"), ort_run(tiny_onnx, x))


def test_classification_extension(client, lite0_onnx, sample_photos):
    x = timm_eval(
        Image.open(sample_photos["chelsea"]).convert("RGB"),
        TINY_PRE | {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic"},
    )[None]
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = client.infer("lite0", [inp], outputs=[th.InferRequestedOutput("logits", class_count=3)])
    top = [s.decode().split(":", 2) for s in r.as_numpy("logits")[0]]
    logits = ort_run(lite0_onnx, x)[0]
    assert [int(i) for _, i, _ in top] == list(np.argsort(-logits)[:3])
    assert [float(s) for s, _, _ in top] == pytest.approx(np.sort(logits)[::-1][:3].tolist(), rel=1e-6)
    assert any("cat" in label for _, _, label in top)  # real weights, real photo


def test_plain_http_json_infer(server, tiny_onnx):
    x = rand((2, 3, 64, 64), seed=11)
    body = {
        "id": "a",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": x.tolist()}],
        "outputs": [
            {"name": "logits"},
        ],
    }
    r = httpx.post(server.url + "/v2/models/tiny/infer", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    out = r.json()["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [2, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), ort_run(tiny_onnx, x), rtol=1e-6, atol=1e-7)
    body["outputs"] = [{"name": "logits", "parameters": {"classification": 2}}]
    cls = httpx.post(server.url + "/v2/models/tiny/versions/1/infer", json=body).json()["outputs"][0]
    assert cls["datatype"] == "BYTES" and cls["shape"] == [2, 2]
    ref = ort_run(tiny_onnx, x)
    for row, labels in zip(np.array(cls["data"]).reshape(2, 2), ref):
        assert [s.split(":")[2] for s in row] == [TINY_LABELS[i] for i in np.argsort(-labels)[:2]]


def test_large_json_bodies_parsed_in_the_helper_process_answer_the_same(server, tiny_onnx):
    """JSON over 1 MB is parsed in a helper process (json.loads holds the GIL): the same answers and
    the same errors as in-process parsing."""
    from transferzoo.serve.jsonparse import PROCESS_JSON_BYTES

    x = rand((12, 3, 64, 64), seed=12)
    inp = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    body = json.dumps({"inputs": [inp]}).encode()
    assert len(body) > PROCESS_JSON_BYTES
    url = server.url + "/v2/models/tiny/infer"
    r = httpx.post(url, content=body, timeout=60)
    assert r.status_code == 200, r.text[:300]
    got = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(12, 3)
    np.testing.assert_allclose(got, ort_run(tiny_onnx, x), rtol=1e-6, atol=1e-7)
    pad = b" " * PROCESS_JSON_BYTES
    for bad, status, words in [
        (body[:-5] + pad, 400, "malformed JSON"),
        (pad + b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nested deeper"),
        (json.dumps({"inputs": [dict(inp, data=["a"] * x.size)]}).encode() + pad, 400, "not FP32"),
        (json.dumps({"inputs": [dict(inp, data=x.ravel().tolist()[:-1])]}).encode() + pad, 400, "elements"),
        (json.dumps({"inputs": [dict(inp, data=[True] * x.size)]}).encode() + pad, 400, "bool"),
    ]:
        r = httpx.post(url, content=bad, timeout=60)
        assert r.status_code == status and words in r.json()["error"], (r.status_code, r.text[:200])


# --- /classify ---------------------------------------------------------------------------------------


def test_classify_multipart_and_raw_match_timm_and_onnxruntime(server, lite0_onnx, tiny_u8_onnx, sample_photos):
    from transferzoo import zoo

    pre = zoo.preprocessing("efficientnet_lite0").to_dict()
    for name, path in sample_photos.items():
        data = path.read_bytes()
        r1 = httpx.post(
            server.url + "/v2/models/lite0/classify?top_k=3", files={"file": (path.name, data, "image/png")}
        )
        r2 = httpx.post(
            server.url + "/v2/models/lite0/classify?top_k=3", content=data, headers={"Content-Type": "image/png"}
        )
        assert r1.status_code == r2.status_code == 200
        assert r1.json() == r2.json()
        p = softmax(ort_run(lite0_onnx, timm_eval(Image.open(path).convert("RGB"), pre)[None])[0].astype(np.float64))
        top = r1.json()["top"]
        assert [t["index"] for t in top] == list(np.argsort(-p)[:3])
        assert [t["probability"] for t in top] == pytest.approx(np.sort(p)[::-1][:3].tolist(), abs=2e-6)
    # uint8_nhwc model: the server crops/resizes but does not normalise
    data = sample_photos["coffee"].read_bytes()
    top = httpx.post(server.url + "/v2/models/tiny_u8/classify?top_k=3", content=data).json()["top"]
    img = Image.open(sample_photos["coffee"]).convert("RGB")
    x = (
        (timm_eval(img, TINY_PRE | {"mean": [0, 0, 0], "std": [1, 1, 1]}) * 255)
        .round()
        .astype(np.uint8)
        .transpose(1, 2, 0)[None]
    )
    p = softmax(ort_run(tiny_u8_onnx, x)[0].astype(np.float64))
    assert [t["label"] for t in top] == [TINY_LABELS[i] for i in np.argsort(-p)]


def test_classify_real_photo_labels(server, sample_photos):
    top = httpx.post(server.url + "/v2/models/lite0/classify", content=sample_photos["coffee"].read_bytes()).json()[
        "top"
    ]
    assert len(top) == 5 and top[0]["label"] == "espresso"  # efficientnet_lite0's real ImageNet weights
    assert sum(t["probability"] for t in top) <= 1.0 + 1e-6


# --- batching: many concurrent, different requests each get their own answer ------------------------


def test_concurrent_different_requests_get_their_own_results(server, tiny_onnx, lite0_onnx, sample_photos):
    xs = [rand((1 + i % 3, 3, 64, 64), seed=100 + i) for i in range(48)]
    refs = [ort_run(tiny_onnx, x) for x in xs]

    def one(i):
        c = th.InferenceServerClient(server.address)
        inp = th.InferInput("input", list(xs[i].shape), "FP32")
        inp.set_data_from_numpy(xs[i])
        return c.infer("tiny", [inp]).as_numpy("logits")

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(one, range(len(xs))))
    for got, ref in zip(outs, refs):
        np.testing.assert_allclose(
            got, ref, rtol=1e-5, atol=1e-6
        )  # batch composition may change the kernel path slightly
    # images through /classify, concurrently: each answer is its own image's
    imgs = [(n, p.read_bytes()) for n, p in sample_photos.items()] * 4
    with httpx.Client() as c:
        solo = {
            n: c.post(server.url + "/v2/models/lite0/classify?top_k=1", content=d).json()["top"][0]["index"]
            for n, d in imgs[:3]
        }
    with ThreadPoolExecutor(12) as pool:
        res = list(
            pool.map(
                lambda nd: (nd[0], httpx.post(server.url + "/v2/models/lite0/classify?top_k=1", content=nd[1]).json()),
                imgs,
            )
        )
    assert len(set(solo.values())) == 3
    for n, r in res:
        assert r["top"][0]["index"] == solo[n]
    # the batch-size histogram saw batches larger than 1
    text = httpx.get(server.url + "/metrics").text
    buckets = {
        float(l.split('le="')[1].split('"')[0]): float(l.split()[-1])
        for l in text.splitlines()
        if l.startswith("transferzoo_batch_size_bucket{") and 'model="tiny"' in l
    }
    assert buckets[float("inf")] > buckets[1.0], "no request was ever batched with another"


def test_metrics(server):
    httpx.get(server.url + "/v2/models/nope")
    httpx.post(server.url + "/v2/models/tiny/infer", content=b"{bad json")
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "transferzoo_requests_total",
        "transferzoo_request_latency_seconds_bucket",
        "transferzoo_queue_time_seconds_bucket",
        "transferzoo_batch_size_bucket",
        "transferzoo_inflight_requests",
    ):
        assert name in text
    assert 'transferzoo_requests_total{endpoint="infer",model="tiny",outcome="client_error"}' in text
    ok = [
        l
        for l in text.splitlines()
        if l.startswith('transferzoo_requests_total{endpoint="infer",model="tiny",outcome="ok"}')
    ]
    assert ok and float(ok[0].split()[-1]) >= 1


# --- servers with other settings ---------------------------------------------------------------------


def test_api_key(tiny_onnx):
    env = {"SERVE_TEST_KEY": "s3cret-token"}
    with ServerProcess(tiny_onnx, "--api-key-env", "SERVE_TEST_KEY", env=env) as s:
        assert httpx.get(s.url + "/v2/health/live").status_code == 200  # probes need no key
        r = httpx.get(s.url + "/v2/models/tiny")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "error" in r.json()
        assert httpx.get(s.url + "/v2/models/tiny", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(s.url + "/metrics").status_code == 401
        c = th.InferenceServerClient(s.address)
        x = rand((1, 3, 64, 64))
        inp = th.InferInput("input", [1, 3, 64, 64], "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as e:
            c.infer("tiny", [inp])
        assert e.value.status() == "401"
        r = c.infer("tiny", [inp], headers={"Authorization": "Bearer s3cret-token"})
        np.testing.assert_array_equal(r.as_numpy("logits"), ort_run(tiny_onnx, x))


def test_cli_rejects_bad_settings(tiny_onnx, tmp_path):
    from transferzoo.cli import main

    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    assert main(["serve", str(tiny_onnx), "--max-batch", "0"]) == 2
    assert main(["serve", str(tiny_onnx), "--instances", "0"]) == 2
    assert main(["serve", str(tiny_onnx), "--api-key-env", "SURELY_NOT_SET_1234"]) == 2
    assert main(["serve", str(tiny_onnx), f"tiny={tiny_onnx}"]) == 2  # two models named tiny
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["serve", str(bad)]) == 2


def test_threads_default_divides_the_cores_among_instances(tiny_onnx):
    import os

    from transferzoo.serve.config import ServerConfig

    cores = os.cpu_count() or 1
    assert (
        ServerConfig(models=(str(tiny_onnx),)).threads_per_run() == 0
    )  # one instance: onnxruntime's all-cores default
    assert ServerConfig(models=(str(tiny_onnx),), instances=2).threads_per_run() == max(1, cores // 2)
    assert ServerConfig(models=(str(tiny_onnx),), instances=4 * cores).threads_per_run() == 1
    assert (
        ServerConfig(models=(str(tiny_onnx),), instances=2, threads=3).threads_per_run() == 3
    )  # an explicit count wins


def _lite0_infer(address, x):
    c = th.InferenceServerClient(address, network_timeout=120)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        return c.infer("lite0", [inp]).as_numpy("logits")
    except InferenceServerException as e:
        return e


def test_full_queue_is_503_and_timeouts_are_504(lite0_onnx):
    x = rand((8, 3, 224, 224), seed=5)
    ref = ort_run(lite0_onnx, x)
    with ServerProcess(lite0_onnx, "--max-batch", "8", "--max-queue", "1", "--threads", "1") as s:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: _lite0_infer(s.address, x), range(8)))
        rejected = [o for o in outs if isinstance(o, InferenceServerException)]
        assert rejected and all(e.status() == "503" for e in rejected)
        for o in outs:
            if not isinstance(o, InferenceServerException):
                np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
        r = httpx.post(
            s.url + "/v2/models/lite0/infer",
            json={
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [0.0] * (3 * 224 * 224)}
                ]
            },
        )
        assert r.status_code == 200
    with ServerProcess(lite0_onnx, "--max-batch", "8", "--timeout-s", "0.02", "--threads", "1") as s:
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: _lite0_infer(s.address, x), range(4)))
        assert any(isinstance(o, InferenceServerException) and o.status() == "504" for o in outs)
        assert httpx.get(s.url + "/v2/health/live").status_code == 200


@pytest.mark.parametrize("drain", [0, 1.5])
def test_graceful_shutdown_finishes_in_flight_requests(lite0_onnx, drain):
    x = rand((8, 3, 224, 224), seed=9)
    ref = ort_run(lite0_onnx, x)
    s = ServerProcess(lite0_onnx, "--max-batch", "8", "--threads", "1", "--drain-s", str(drain))
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_lite0_infer, s.address, x) for _ in range(4)]
        time.sleep(0.3)  # they are queued or running now (each runs alone: --max-batch 8)
        s.proc.send_signal(signal.SIGTERM)
        if drain:
            time.sleep(0.2)
            assert httpx.get(s.url + "/v2/health/ready").status_code == 503  # draining: not ready...
            assert httpx.get(s.url + "/v2/health/live").status_code == 200  # ...but still serving
        outs = [f.result(timeout=120) for f in futures]
    for o in outs:
        assert not isinstance(o, Exception), o
        np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
    rc = s.proc.wait(60)
    assert rc == 0, "".join(s.stderr_lines)  # a graceful shutdown is a success
    assert not any("Traceback" in l for l in s.stderr_lines), "".join(s.stderr_lines)
