"""The gRPC service end to end: the server started with the CLI (`--grpc-port 0`), spoken to with the
real tritonclient.grpc (sync and asyncio, batched and concurrent) and, for what that client never sends
(typed contents, garbage), with grpc's own channel and tritonclient's generated stubs. Every answer
is compared with onnxruntime run directly, and with the same server's HTTP answer; the bad-input half
checks that each bad request gets its defined status and the server stays correct."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
import tritonclient.http as th
from serve_fixtures import REPO, TINY_LABELS, ServerProcess, ort_run, rand
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

LIMIT_MB = 2


@pytest.fixture(scope="module")
def server(tiny_onnx, tiny_u8_onnx):
    with ServerProcess(
        tiny_onnx,
        tiny_u8_onnx,
        "--grpc-port",
        "0",
        "--max-batch",
        "16",
        "--threads",
        "1",
        "--instances",
        "2",
        "--max-body-mb",
        str(LIMIT_MB),
    ) as s:
        assert s.grpc_address, "the server did not print its gRPC address"
        yield s
        assert s.alive(), "the server died during the tests"


@pytest.fixture(scope="module")
def client(server):
    with tg.InferenceServerClient(server.grpc_address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_address) as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)


def grpc_input(x: np.ndarray, datatype="FP32", name="input") -> tg.InferInput:
    inp = tg.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


# --- tritonclient.grpc, sync -------------------------------------------------------------------------


def test_health_and_metadata_match_http(server, client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("missing") and not client.is_model_ready("tiny", "2")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "transferzoo" and {"binary_tensor_data", "classification"} <= set(meta["extensions"])
    http = th.InferenceServerClient(server.address)
    for name in ("tiny", "tiny_u8"):
        g = client.get_model_metadata(name, as_json=True)
        h = http.get_model_metadata(name)
        assert g["name"] == h["name"] and g["versions"] == h["versions"] and g["platform"] == h["platform"]
        for key in ("inputs", "outputs"):
            # protobuf's JSON form writes int64 as strings
            assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in g[key]] == h[key]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in e.value.message()
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("tiny", "1", "READY"),
        ("tiny_u8", "1", "READY"),
    ]


@pytest.mark.parametrize(
    "model,shape,dtype,triton",
    [
        ("tiny", (1, 3, 64, 64), np.float32, "FP32"),
        ("tiny", (7, 3, 64, 64), np.float32, "FP32"),
        ("tiny_u8", (3, 64, 64, 3), np.uint8, "UINT8"),
    ],
)
def test_infer_raw_tensors_equal_onnxruntime(client, model, shape, dtype, triton, serve_models_dir):
    x = rand(shape, seed=shape[0], dtype=dtype)
    r = client.infer(model, [grpc_input(x, triton)], request_id="g-1")
    assert r.get_response().id == "g-1" and r.get_response().model_version == "1"
    np.testing.assert_array_equal(r.as_numpy("logits"), ort_run(serve_models_dir / f"{model}.onnx", x))


def test_same_answer_as_http_and_compression(server, client, tiny_onnx):
    x = rand((4, 3, 64, 64), seed=21)
    hi = th.InferInput("input", list(x.shape), "FP32")
    hi.set_data_from_numpy(x)
    via_http = th.InferenceServerClient(server.address).infer("tiny", [hi]).as_numpy("logits")
    via_grpc = client.infer("tiny", [grpc_input(x)]).as_numpy("logits")
    np.testing.assert_array_equal(via_grpc, via_http)
    for algo in ("gzip", "deflate"):
        r = client.infer("tiny", [grpc_input(x)], compression_algorithm=algo)
        np.testing.assert_array_equal(r.as_numpy("logits"), ort_run(tiny_onnx, x))


def test_classification_parameter(server, client, tiny_onnx):
    x = rand((3, 3, 64, 64), seed=5)
    r = client.infer("tiny", [grpc_input(x)], outputs=[tg.InferRequestedOutput("logits", class_count=2)])
    out = r.as_numpy("logits")
    assert out.shape == (3, 2) and r.get_output("logits").datatype == "BYTES"
    ref = ort_run(tiny_onnx, x)
    for row, logits in zip(out, ref):
        parts = [s.decode().split(":") for s in row]
        assert [int(i) for _, i, _ in parts] == list(np.argsort(-logits)[:2])
        assert [lab for _, _, lab in parts] == [TINY_LABELS[i] for i in np.argsort(-logits)[:2]]
        assert [float(s) for s, _, _ in parts] == pytest.approx(np.sort(logits)[::-1][:2].tolist(), rel=1e-6)
    # the same strings as the HTTP classification extension
    hi = th.InferInput("input", list(x.shape), "FP32")
    hi.set_data_from_numpy(x)
    h = th.InferenceServerClient(server.address).infer(
        "tiny", [hi], outputs=[th.InferRequestedOutput("logits", class_count=2)]
    )
    assert h.as_numpy("logits").tolist() == out.tolist()


def test_typed_contents_instead_of_raw(stub, tiny_onnx):
    """KServe clients may send `contents.fp32_contents` rather than raw bytes."""
    x = rand((2, 3, 64, 64), seed=8)
    req = pb.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="input", datatype="FP32", shape=x.shape).contents.fp32_contents.extend(x.ravel().tolist())
    resp = stub.ModelInfer(req)
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(list(resp.outputs[0].shape))
    np.testing.assert_allclose(got, ort_run(tiny_onnx, x), rtol=1e-6, atol=1e-7)


def test_concurrent_sync_clients_each_get_their_own_results(server, tiny_onnx):
    xs = [rand((1 + i % 3, 3, 64, 64), seed=200 + i) for i in range(48)]
    refs = [ort_run(tiny_onnx, x) for x in xs]

    def one(i):
        with tg.InferenceServerClient(server.grpc_address) as c:
            return c.infer("tiny", [grpc_input(xs[i])]).as_numpy("logits")

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(one, range(len(xs))))
    for got, ref in zip(outs, refs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)  # batch composition may change the kernel path


def test_aio_client_concurrent_and_batched(server, tiny_onnx):
    xs = [rand((1 + i % 4, 3, 64, 64), seed=300 + i) for i in range(64)]
    refs = [ort_run(tiny_onnx, x) for x in xs]

    async def go():
        async with tga.InferenceServerClient(server.grpc_address) as c:
            assert await c.is_server_ready()
            assert (await c.get_model_metadata("tiny")).name == "tiny"
            inputs = []
            for x in xs:
                inp = tga.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                inputs.append(inp)
            results = await asyncio.gather(*(c.infer("tiny", [inp]) for inp in inputs))
            return [r.as_numpy("logits") for r in results]

    outs = asyncio.run(go())
    for got, ref in zip(outs, refs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    text = httpx.get(server.url + "/metrics").text
    buckets = {
        float(l.split('le="')[1].split('"')[0]): float(l.split()[-1])
        for l in text.splitlines()
        if l.startswith("transferzoo_batch_size_bucket{") and 'model="tiny"' in l
    }
    assert buckets[float("inf")] > buckets[1.0], "no gRPC request was ever batched with another"
    ok = [
        l
        for l in text.splitlines()
        if l.startswith('transferzoo_requests_total{endpoint="grpc_infer",model="tiny",outcome="ok"}')
    ]
    assert ok and float(ok[0].split()[-1]) >= len(xs)


# --- the bad-input half: every answer a defined status, never UNKNOWN or INTERNAL ---------------------

C = grpc.StatusCode
X1 = rand((1, 3, 64, 64), seed=1)


def _req(model="tiny", shape=(1, 3, 64, 64), datatype="FP32", raw=None, name="input", **kw) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, **kw)
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    req.raw_input_contents.append(X1.tobytes() if raw is None else raw)
    return req


def _nan():
    x = X1.copy()
    x[0, 0, 0, 0] = np.nan
    return _req(raw=x.tobytes())


def _inf():
    x = X1.copy()
    x[0, 1, 2, 3] = -np.inf
    return _req(raw=x.tobytes())


def _two_inputs():
    req = _req()
    req.inputs.add(name="input", datatype="FP32", shape=(1, 3, 64, 64))
    req.raw_input_contents.append(X1.tobytes())
    return req


def _raw_count_mismatch():
    req = _req()
    req.raw_input_contents.append(b"")
    return req


def _output(name="logits", **params):
    req = _req()
    o = req.outputs.add(name=name)
    for k, v in params.items():
        setattr(o.parameters[k], "string_param" if isinstance(v, str) else "int64_param", v)
    return req


def _param(key, value):
    req = _req()
    setattr(req.parameters[key], "string_param" if isinstance(value, str) else "int64_param", value)
    return req


def _output_twice():
    req = _req()
    req.outputs.add(name="logits")
    req.outputs.add(name="logits")
    return req


def _contents(n):
    req = pb.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="input", datatype="FP32", shape=(1, 3, 64, 64)).contents.fp32_contents.extend([0.0] * n)
    return req


def _u8_contents_out_of_range():
    req = pb.ModelInferRequest(model_name="tiny_u8")
    t = req.inputs.add(name="input", datatype="UINT8", shape=(1, 64, 64, 3))
    t.contents.uint_contents.extend([300] * (64 * 64 * 3))
    return req


BAD: list = [
    ("unknown-model", lambda: _req(model="nope"), C.NOT_FOUND),
    ("empty-model-name", lambda: _req(model=""), C.NOT_FOUND),
    ("unknown-version", lambda: _req(model_version="7"), C.NOT_FOUND),
    ("no-inputs", lambda: pb.ModelInferRequest(model_name="tiny"), C.INVALID_ARGUMENT),
    ("unknown-input", lambda: _req(name="image"), C.INVALID_ARGUMENT),
    ("wrong-datatype", lambda: _req(datatype="FP16", raw=X1.astype(np.float16).tobytes()), C.INVALID_ARGUMENT),
    ("unknown-datatype", lambda: _req(datatype="FLOAT"), C.INVALID_ARGUMENT),
    ("wrong-rank", lambda: _req(shape=(3, 64, 64)), C.INVALID_ARGUMENT),
    ("wrong-spatial", lambda: _req(shape=(1, 3, 32, 128)), C.INVALID_ARGUMENT),
    ("rank-over-8", lambda: _req(shape=(1,) * 9), C.INVALID_ARGUMENT),
    ("negative-dim", lambda: _req(shape=(-1, 3, 64, 64)), C.INVALID_ARGUMENT),
    ("batch-zero", lambda: _req(shape=(0, 3, 64, 64), raw=b""), C.INVALID_ARGUMENT),
    ("raw-too-short", lambda: _req(raw=X1.tobytes()[:-4]), C.INVALID_ARGUMENT),
    ("raw-too-long", lambda: _req(raw=X1.tobytes() + b"\0\0\0\0"), C.INVALID_ARGUMENT),
    ("raw-empty", lambda: _req(raw=b""), C.INVALID_ARGUMENT),
    ("raw-count-mismatch", _raw_count_mismatch, C.INVALID_ARGUMENT),
    ("huge-shape-claim", lambda: _req(shape=(1 << 40, 3, 64, 64)), C.INVALID_ARGUMENT),
    ("nan", _nan, C.INVALID_ARGUMENT),
    ("inf", _inf, C.INVALID_ARGUMENT),
    ("input-twice", _two_inputs, C.INVALID_ARGUMENT),
    ("unknown-output", lambda: _output("probs"), C.INVALID_ARGUMENT),
    ("classification-negative", lambda: _output(classification=-1), C.INVALID_ARGUMENT),
    ("classification-string", lambda: _output(classification="3"), C.INVALID_ARGUMENT),
    ("timeout-zero", lambda: _param("timeout", 0), C.INVALID_ARGUMENT),
    ("timeout-string", lambda: _param("timeout", "1s"), C.INVALID_ARGUMENT),
    ("timeout-over-an-hour", lambda: _param("timeout", (1 << 63) - 1), C.INVALID_ARGUMENT),
    ("output-twice", _output_twice, C.INVALID_ARGUMENT),
    ("contents-too-few", lambda: _contents(10), C.INVALID_ARGUMENT),
    ("contents-too-many", lambda: _contents(3 * 64 * 64 + 1), C.INVALID_ARGUMENT),
    ("contents-out-of-range", _u8_contents_out_of_range, C.INVALID_ARGUMENT),
    (
        "batch-over-max-batch",
        lambda: _req(shape=(17, 3, 64, 64), raw=np.zeros((17, 3, 64, 64), np.float32).tobytes()),
        C.INVALID_ARGUMENT,
    ),
    (
        "message-over-limit",
        lambda: _req(shape=(48, 3, 64, 64), raw=np.zeros((48, 3, 64, 64), np.float32).tobytes()),
        C.RESOURCE_EXHAUSTED,  # 2.4 MB > --max-body-mb 2: refused by grpc before it is parsed
    ),
]


@pytest.mark.parametrize("factory,code", [pytest.param(f, c, id=i) for i, f, c in BAD])
def test_bad_infer_request_gets_its_status(stub, factory, code):
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(factory(), timeout=30)
    assert e.value.code() == code, e.value.details()
    assert e.value.details()  # a message a user can act on


def test_bad_bytes_and_bad_metadata_calls(server, stub):
    with grpc.insecure_channel(server.grpc_address) as ch:
        for method in ("ModelInfer", "ModelMetadata", "ServerMetadata"):
            raw = ch.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as e:
                raw(b"\xff\xff\xff\xff garbage, not protobuf", timeout=10)
            assert e.value.code() == C.INVALID_ARGUMENT, (method, e.value.details())
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")(b"", timeout=10)
        assert e.value.code() == C.UNIMPLEMENTED
    # a message whose compressed form is small but whose decompressed size is over the limit
    big = _req(shape=(48, 3, 64, 64), raw=np.zeros((48, 3, 64, 64), np.float32).tobytes())
    assert len(gzip.compress(big.SerializeToString())) < 50_000
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(big, timeout=30, compression=grpc.Compression.Gzip)
    assert e.value.code() == C.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny", version="3"))
    assert e.value.code() == C.NOT_FOUND


DEFINED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.DEADLINE_EXCEEDED}


def test_mutated_messages_get_defined_statuses(server):
    """Byte flips and truncations of a valid request (its header fields come first on the wire):
    whatever they decode to, the answer is a defined status, never UNKNOWN or INTERNAL."""
    req = _req(id="fuzz")
    req.outputs.add(name="logits").parameters["classification"].int64_param = 2
    wire = req.SerializeToString()
    header = len(wire) - len(req.raw_input_contents[0])
    cases = _fuzz_cases(wire, header, seed=14, n=300)
    seen = {}
    with grpc.insecure_channel(server.grpc_address) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for data in cases:
            try:
                call(data, timeout=30)
                code = C.OK
            except grpc.RpcError as e:
                code = e.code()
                assert code in DEFINED, (code, e.details(), data[:header].hex())
            seen[code] = seen.get(code, 0) + 1
    assert seen.get(C.INVALID_ARGUMENT, 0) > 50 and server.alive(), seen


def _fuzz_cases(wire: bytes, header: int, seed: int, n: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    cases = [wire[:k] for k in rng.integers(1, len(wire), n // 6)]
    for _ in range(n - len(cases)):
        b = bytearray(wire)
        for i in rng.integers(0, header + 8, rng.integers(1, 4)):
            b[i] = int(rng.integers(0, 256))
        cases.append(bytes(b))
    return cases


def _parsed(data: bytes):
    """(request without raw_input_contents, [raw bytes]) by the server's parser and by protobuf alone,
    or the exception type each raised."""
    from google.protobuf.message import DecodeError

    from transferzoo.serve.grpc_service import InferMessage

    try:
        m = InferMessage.parse(data)
        raw = [bytes(r) for r in m.raw]
        req = pb.ModelInferRequest()
        req.CopyFrom(m.request)
        req.ClearField("raw_input_contents")
        ours = (req.SerializeToString(deterministic=True), raw)
    except DecodeError:
        ours = DecodeError
    try:
        ref = pb.ModelInferRequest.FromString(data)
        raw = list(ref.raw_input_contents)
        ref.ClearField("raw_input_contents")
        theirs = (ref.SerializeToString(deterministic=True), raw)
    except DecodeError:
        theirs = DecodeError
    return ours, theirs


def test_raw_contents_split_off_parse_as_protobuf_does():
    """The ModelInfer deserializer takes raw_input_contents as views of the received bytes instead of
    protobuf's copies: on valid messages (fields in any order, repeated, unknown ones), truncated and
    byte-flipped ones, it gives what protobuf gives, or fails where protobuf fails."""
    from transferzoo.serve.grpc_service import split_raw_contents

    req = _two_inputs()
    req.id = "split"
    req.outputs.add(name="logits").parameters["classification"].int64_param = 2
    wire = req.SerializeToString()
    a, b = X1.tobytes(), rand((1, 3, 64, 64), seed=5).tobytes()
    tail = pb.ModelInferRequest(id="late", raw_input_contents=[b]).SerializeToString()
    unknown = b"\x98\x06\x07" + b"\xa2\x06\x03abc"  # fields 99 (varint) and 100 (bytes): kept as unknown
    valid = [wire, wire + tail, tail + wire, unknown + wire, wire + unknown, _req().SerializeToString()]
    split = split_raw_contents(wire + tail)
    assert split is not None and [bytes(r) for r in split[1]] == [a, a, b]  # in wire order, views not copies
    assert all(isinstance(r, memoryview) for r in split[1])
    header = len(wire) - len(a)
    cases = valid + _fuzz_cases(wire, header, seed=15, n=600) + [b"", b"\xff\xff\xff\xff garbage", b"\x3a\x80"]
    failed = 0
    for data in cases:
        ours, theirs = _parsed(data)
        assert ours == theirs, data[: header + 8].hex()
        failed += not isinstance(ours, tuple)
    assert all(isinstance(_parsed(d)[0], tuple) for d in valid) and failed > 30


def test_server_still_correct_after_the_bad_inputs(server, client, tiny_onnx):
    x = rand((5, 3, 64, 64), seed=99)
    np.testing.assert_array_equal(client.infer("tiny", [grpc_input(x)]).as_numpy("logits"), ort_run(tiny_onnx, x))
    assert client.is_server_ready()
    text = httpx.get(server.url + "/metrics").text
    assert 'transferzoo_requests_total{endpoint="grpc_infer",model="tiny",outcome="client_error"}' in text
    assert 'outcome="error"' not in text


# --- servers with other settings ---------------------------------------------------------------------


def test_api_key_metadata(tiny_onnx):
    env = {"SERVE_TEST_KEY": "s3cret-token"}
    with ServerProcess(tiny_onnx, "--grpc-port", "0", "--api-key-env", "SERVE_TEST_KEY", env=env) as s:
        with tg.InferenceServerClient(s.grpc_address) as c:
            assert c.is_server_live() and c.is_server_ready()  # probes need no key
            x = rand((1, 3, 64, 64))
            for call in (
                lambda h: c.get_model_metadata("tiny", headers=h),
                lambda h: c.get_server_metadata(headers=h),
                lambda h: c.is_model_ready("tiny", headers=h),
                lambda h: c.get_model_repository_index(headers=h),
                lambda h: c.infer("tiny", [grpc_input(x)], headers=h),
            ):
                for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
                    with pytest.raises(InferenceServerException) as e:
                        call(headers)
                    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
            r = c.infer("tiny", [grpc_input(x)], headers={"authorization": "Bearer s3cret-token"})
            np.testing.assert_array_equal(r.as_numpy("logits"), ort_run(tiny_onnx, x))


def test_grpc_is_off_by_default_and_a_taken_port_is_an_error(tiny_onnx):
    with ServerProcess(tiny_onnx) as s:
        assert s.grpc_address is None
        with ServerProcess(tiny_onnx, "--grpc-port", "0") as s2:
            port = s2.grpc_address.split(":")[1]
            cmd = [sys.executable, "-m", "transferzoo", "serve", str(tiny_onnx), "--port", "0", "--grpc-port", port]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
            assert r.returncode == 1 and "listening" not in r.stdout
            assert f"cannot listen for gRPC on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_full_queue_is_unavailable_and_timeouts_are_deadline_exceeded(lite0_onnx):
    x = rand((8, 3, 224, 224), seed=5)
    ref = ort_run(lite0_onnx, x)
    with ServerProcess(lite0_onnx, "--grpc-port", "0", "--max-batch", "8", "--max-queue", "1", "--threads", "1") as s:

        def one(timeout_us=None):
            with tg.InferenceServerClient(s.grpc_address) as c:
                try:
                    return c.infer("lite0", [grpc_input(x)], timeout=timeout_us, client_timeout=120).as_numpy("logits")
                except InferenceServerException as e:
                    return e

        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda _: one(), range(8)))
        rejected = [o for o in outs if isinstance(o, InferenceServerException)]
        assert rejected and all(e.status() == "StatusCode.UNAVAILABLE" for e in rejected)
        for o in outs:
            if not isinstance(o, InferenceServerException):
                np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(one)
            time.sleep(0.3)  # that batch of 8 runs now (~0.3 s on one thread): the next one waits behind it
            late = one(1000)  # Triton's timeout parameter: 1 ms
            assert not isinstance(running.result(), Exception)
        assert isinstance(late, InferenceServerException) and late.status() == "StatusCode.DEADLINE_EXCEEDED", late
        assert s.alive()


@pytest.mark.slow
def test_sigterm_finishes_grpc_calls_in_flight(lite0_onnx):
    import signal

    x = rand((8, 3, 224, 224), seed=9)
    ref = ort_run(lite0_onnx, x)
    s = ServerProcess(lite0_onnx, "--grpc-port", "0", "--max-batch", "8", "--threads", "1", "--drain-s", "1.5")

    def one():
        with tg.InferenceServerClient(s.grpc_address) as c:
            return c.infer("lite0", [grpc_input(x)], client_timeout=120).as_numpy("logits")

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(one) for _ in range(3)]
        time.sleep(0.3)  # queued or running now (each runs alone: --max-batch 8)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with tg.InferenceServerClient(s.grpc_address) as c:
            assert c.is_server_live() and not c.is_server_ready()  # draining: not ready, still serving
        outs = [f.result(timeout=120) for f in futures]
    for o in outs:
        np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-5)
    assert s.proc.wait(60) == 0, "".join(s.stderr_lines)
    assert not any("Traceback" in line for line in s.stderr_lines), "".join(s.stderr_lines)
