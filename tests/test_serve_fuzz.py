"""Bad input of every kind gets a 4xx with a JSON {"error": ...} body: never a 500, never a dead
server. After the whole suite the server still answers correctly."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from serve_fixtures import ServerProcess

LIMIT_MB = 2
LIMIT = LIMIT_MB << 20
MAX_PIXELS = 1_000_000
BODY_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 48


@pytest.fixture(scope="module")
def server(tiny_onnx, tiny_u8_onnx):
    with ServerProcess(
        tiny_onnx,
        tiny_u8_onnx,
        "--max-batch",
        "16",
        "--max-body-mb",
        str(LIMIT_MB),
        "--max-json-mb",
        "0.9",
        "--max-image-pixels",
        str(MAX_PIXELS),
        "--threads",
        "1",
        "--body-timeout-s",
        str(BODY_TIMEOUT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _photo(fmt: str, size=(96, 80), mode="RGB") -> bytes:
    from skimage import data

    img = Image.fromarray(data.chelsea()).resize(size).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


JPEG, PNG = _photo("JPEG"), _photo("PNG")


def _bomb(fmt: str, size) -> bytes:
    buf = io.BytesIO()
    Image.new("1" if fmt != "JPEG" else "L", size).save(
        buf, format=fmt, **({"compression": "tiff_lzw"} if fmt == "TIFF" else {})
    )
    return buf.getvalue()


def _jpeg_with_size(w: int, h: int) -> bytes:
    """A real JPEG whose SOF header claims w x h (a lie about its size)."""
    data = bytearray(JPEG)
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, h, w)
    return bytes(data)


def _png_bad_crc() -> bytes:
    data = bytearray(PNG)
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def _png_corrupt_idat() -> bytes:
    data = bytearray(PNG)
    i = data.index(b"IDAT") + 8
    data[i : i + 64] = b"\x00" * 64
    return bytes(data)


def _multipart(parts: list[tuple[str, bytes, str | None]], boundary="XyZ123") -> tuple[bytes, str]:
    out = b""
    for name, content, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _other_format(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


# --- cases: (id, method, path, request kwargs, expected status) -------------------------------------------

CASES: list[tuple] = []


def case(cid, status, path="/v2/models/tiny/infer", method="POST", **kw):
    CASES.append(pytest.param(method, path, kw, status, id=cid))


C = "/v2/models/tiny/classify"
# images: truncated, corrupt, not images, unsupported formats, bombs, bad uploads
for frac in (0.05, 0.2, 0.5, 0.8, 0.95):
    case(f"jpeg-truncated-{frac}", 400, C, content=JPEG[: int(len(JPEG) * frac)])
    case(f"png-truncated-{frac}", 400, C, content=PNG[: int(len(PNG) * frac)])
case("png-bad-crc", 400, C, content=_png_bad_crc())
case("png-corrupt-idat", 400, C, content=_png_corrupt_idat())
case("jpeg-header-only", 400, C, content=JPEG[:200])
case("jpeg-magic-then-garbage", 400, C, content=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
case("png-magic-then-garbage", 400, C, content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
case("gif-magic-then-garbage", 400, C, content=b"GIF89a" + b"\xff" * 50)
case("random-bytes", 415, C, content=np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
case("empty-image", 400, C, content=b"")
case("text-as-image", 415, C, content=b"hello, this is not an image", headers={"Content-Type": "image/jpeg"})
case(
    "svg-as-image",
    415,
    C,
    content=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    headers={"Content-Type": "image/svg+xml"},
)
case("eps-refused", 415, C, content=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
for fmt in ("ICO", "PPM", "TGA", "PCX", "SGI"):
    case(f"format-not-accepted-{fmt}", 415, C, content=_other_format(fmt))
for fmt, size in (
    ("PNG", (20000, 20000)),
    ("PNG", (1001, 1000)),
    ("GIF", (5000, 5000)),
    ("BMP", (1200, 1000)),
    ("TIFF", (4000, 4000)),
):
    case(f"pixel-bomb-{fmt}-{size[0]}x{size[1]}", 413, C, content=_bomb(fmt, size))
case("pixel-bomb-jpeg-header-lies", 413, C, content=_jpeg_with_size(60000, 60000))
# tiny files whose *resize* is huge: the shorter side to 73 px makes a 1 x 40000 strip 73 x 2920000 (10 GB once)
for size in ((1, 40000), (40000, 1), (1, 100000), (2, 30000), (1, 5000)):
    case(f"resize-bomb-{size[0]}x{size[1]}", 413, C, content=_bomb("PNG", size))
case("jpeg-zero-size", 400, C, content=_jpeg_with_size(0, 0))
case("content-type-json", 415, C, content=JPEG, headers={"Content-Type": "application/json"})
case("content-type-text", 415, C, content=JPEG, headers={"Content-Type": "text/plain"})
case(
    "multipart-no-file",
    400,
    C,
    content=_multipart([("note", b"hi", None)])[0],
    headers={"Content-Type": _multipart([])[1]},
)
case(
    "multipart-bad-boundary",
    400,
    C,
    content=_multipart([("file", JPEG, "a.jpg")], "AAA")[0],
    headers={"Content-Type": "multipart/form-data; boundary=BBB"},
)
case("multipart-no-boundary", 400, C, content=b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"})
case(
    "multipart-truncated-image",
    400,
    C,
    content=_multipart([("file", JPEG[:300], "a.jpg")])[0],
    headers={"Content-Type": _multipart([])[1]},
)
case(
    "multipart-too-many-files",
    400,
    C,
    content=_multipart([("f", JPEG, f"{i}.jpg") for i in range(6)])[0],
    headers={"Content-Type": _multipart([])[1]},
)
for k in ("0", "-1", "abc", "100000", "1.5"):
    case(f"top_k={k}", 400, C + f"?top_k={k}", content=JPEG)
case("classify-unknown-model", 404, "/v2/models/nope/classify", content=JPEG)
case("classify-gzip-bomb", 413, C, content=gzip.compress(b"\x00" * (LIMIT * 3)), headers={"Content-Encoding": "gzip"})

# /infer: malformed JSON
for i, body in enumerate(
    [
        b"{",
        b"[",
        b"nul",
        b'{"inputs": [}',
        b"\xff\xfe\x00",
        b"",
        b'{"inputs": [1, 2,]}',
        b"{'inputs': []}",
        b'{"inputs": NaN',
        b'"\\ud800"',
    ]
):
    case(f"malformed-json-{i}", 400, content=body)
for i, body in enumerate(["123", '"str"', "[]", "null", "true"]):
    case(f"json-not-object-{i}", 400, content=body.encode())


def infer_body(**over):
    inp = {"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.5] * (3 * 64 * 64)}
    inp.update(over.pop("inp", {}))
    body = {"inputs": [inp]}
    body.update(over)
    return json.dumps(body).encode()


case("no-inputs", 400, content=b'{"outputs": []}')
case("inputs-empty", 400, content=b'{"inputs": []}')
case("inputs-not-list", 400, content=b'{"inputs": {"name": "input"}}')
case("input-not-object", 400, content=b'{"inputs": ["input"]}')
case("input-no-name", 400, content=infer_body(inp={"name": None}))
case("input-name-number", 400, content=infer_body(inp={"name": 3}))
case("input-unknown-name", 400, content=infer_body(inp={"name": "image"}))
for dt in ("FLOAT32", "fp32", "BF16", "STRING", "", "FP32 "):
    case(f"datatype-unknown-{dt or 'empty'}", 400, content=infer_body(inp={"datatype": dt}))
case("datatype-number", 400, content=infer_body(inp={"datatype": 32}))
for dt in ("UINT8", "FP64", "INT64", "FP16", "BYTES", "BOOL"):
    case(f"datatype-mismatch-{dt}", 400, content=infer_body(inp={"datatype": dt}))
for i, shape in enumerate(
    [
        [3, 64, 64],
        [1, 3, 64],
        [1, 3, 64, 64, 1],
        [1, 3, 32, 32],
        [1, 1, 64, 64],
        [1, 64, 64, 3],
        [0, 3, 64, 64],
        [-1, 3, 64, 64],
        [1.0, 3, 64, 64],
        ["1", 3, 64, 64],
        [True, 3, 64, 64],
        "1,3,64,64",
        None,
        [1] * 20,
        [10**12, 3, 64, 64],
    ]
):
    case(f"bad-shape-{i}", 400, content=infer_body(inp={"shape": shape}))
case("data-too-short", 400, content=infer_body(inp={"data": [0.5] * 100}))
case("data-too-long", 400, content=infer_body(inp={"data": [0.5] * (3 * 64 * 64 + 1)}))
case("data-strings", 400, content=infer_body(inp={"data": ["0.5"] * (3 * 64 * 64)}))
case("data-nulls", 400, content=infer_body(inp={"data": [None] * (3 * 64 * 64)}))
case("data-bools", 400, content=infer_body(inp={"data": [True] * (3 * 64 * 64)}))
case("data-dict", 400, content=infer_body(inp={"data": {"a": 1}}))
case("data-ragged", 400, content=infer_body(inp={"data": [[0.5] * 10, [0.5] * 11]}))
case("data-mixed-nesting", 400, content=infer_body(inp={"data": [0.5, [0.5, 0.5]] + [0.5] * 12285}))
case("data-nan", 400, content=infer_body(inp={"data": [float("nan")] * (3 * 64 * 64)}))
case("data-infinity", 400, content=infer_body(inp={"data": [float("inf")] + [0.0] * (3 * 64 * 64 - 1)}))
case("data-missing", 400, content=infer_body(inp={"data": None}).replace(b'"data": null', b'"x": 1'))
case("data-and-binary", 400, content=infer_body(inp={"parameters": {"binary_data_size": 4}}))
U8 = "/v2/models/tiny_u8/infer"
u8 = {"name": "input", "datatype": "UINT8", "shape": [1, 64, 64, 3]}
case("uint8-out-of-range-high", 400, U8, json={"inputs": [dict(u8, data=[300] * 12288)]})
case("uint8-negative", 400, U8, json={"inputs": [dict(u8, data=[-1] * 12288)]})
case("uint8-floats", 400, U8, json={"inputs": [dict(u8, data=[0.5] * 12288)]})
case("uint8-as-fp32", 400, U8, json={"inputs": [dict(u8, datatype="FP32", data=[0] * 12288)]})
case("duplicate-input", 400, content=json.dumps({"inputs": [json.loads(infer_body())["inputs"][0]] * 2}).encode())
case(
    "batch-over-max-batch",
    400,
    json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [17, 3, 64, 64], "data": [0.0] * (17 * 12288)}]},
)
case("outputs-unknown", 400, content=infer_body(outputs=[{"name": "probs"}]))
case("outputs-not-list", 400, content=infer_body(outputs={"name": "logits"}))
case("outputs-empty", 400, content=infer_body(outputs=[]))
case("outputs-entry-string", 400, content=infer_body(outputs=["logits"]))
case(
    "classification-negative",
    400,
    content=infer_body(outputs=[{"name": "logits", "parameters": {"classification": -2}}]),
)
case(
    "classification-string",
    400,
    content=infer_body(outputs=[{"name": "logits", "parameters": {"classification": "3"}}]),
)
case(
    "binary-data-not-bool", 400, content=infer_body(outputs=[{"name": "logits", "parameters": {"binary_data": "yes"}}])
)
case("parameters-not-object", 400, content=infer_body(parameters=[1, 2]))
case("binary-data-output-not-bool", 400, content=infer_body(parameters={"binary_data_output": 1}))
case("timeout-negative", 400, content=infer_body(parameters={"timeout": -5}))
case("timeout-string", 400, content=infer_body(parameters={"timeout": "1s"}))
# numbers are range-checked where they are parsed: a 400-digit timeout once overflowed float() into a 500
case("timeout-400-digits", 400, content=infer_body(parameters={"timeout": 10**400}))
case("timeout-over-an-hour", 400, content=infer_body(parameters={"timeout": 3601 * 10**6}))
case("timeout-float", 400, content=infer_body(parameters={"timeout": 1e300}))
case(
    "classification-400-digits",
    400,
    content=infer_body(outputs=[{"name": "logits", "parameters": {"classification": 10**400}}]),
)
case("shape-400-digits", 400, content=infer_body(inp={"shape": [10**400, 3, 64, 64]}))
# a repeated output multiplied the response (2000 x 'logits' in 40 KB -> 41 MB of JSON); Triton refuses it too
case("outputs-duplicate", 400, content=infer_body(outputs=[{"name": "logits"}] * 2))
case("outputs-duplicate-2000", 400, content=infer_body(outputs=[{"name": "logits"}] * 2000))
case("id-not-string", 400, content=infer_body(id=12))
for depth in (40, 1000, 100_000):
    case(f"deep-json-lists-{depth}", 400, content=b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}")
    case(f"deep-json-objects-{depth}", 400, content=b'{"inputs": [' + b'{"a":' * depth + b"1" + b"}" * depth + b"]}")
case("deep-json-in-parameters", 400, content=infer_body(parameters=json.loads("[" * 50 + "]" * 50)))

# binary tensor extension: header lengths and sizes that do not add up
X = np.zeros((1, 3, 64, 64), np.float32).tobytes()


def binary(size=len(X), payload=X, shape=(1, 3, 64, 64), extra=None):
    inp = {"name": "input", "datatype": "FP32", "shape": list(shape), "parameters": {"binary_data_size": size}}
    if extra:
        inp.update(extra)
    header = json.dumps({"inputs": [inp]}).encode()
    return header, payload


for i, hl in enumerate(["abc", "0", "-5", "99999999", "1.5", ""]):
    h, p = binary()
    case(f"header-length-bad-{i}", 400, content=h + p, headers={"Inference-Header-Content-Length": hl})
h, p = binary()
case("header-length-cuts-json", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h) - 5)})
case("header-length-into-binary", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h) + 8)})
for cid, (size, payload) in {
    "size-smaller-than-shape": (len(X) - 4, X[:-4]),
    "size-larger-than-shape": (len(X) + 4, X + b"\0" * 4),
    "payload-short": (len(X), X[:-100]),
    "payload-long": (len(X), X + b"\0" * 100),
    "payload-missing": (len(X), b""),
    "size-zero": (0, b""),
    "size-odd": (len(X) - 1, X[:-1]),
}.items():
    h, p = binary(size, payload)
    case(f"binary-{cid}", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h))})
for cid, size in {
    "negative": -4,
    "string": "49152",
    "float": 49152.0,
    "bool": True,
    "null": None,
    "400-digits": 10**400,
}.items():
    h, p = binary(size)
    case(f"binary-size-{cid}", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h))})
h, p = binary()
case("binary-without-header-length", 400, content=h + p)
h, p = binary(shape=(1, 3, 64, 63))
case("binary-wrong-shape", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h))})
h, p = binary(extra={"datatype": "FP16"}, size=len(X) // 2, payload=X[: len(X) // 2])
case("binary-wrong-datatype", 400, content=h + p, headers={"Inference-Header-Content-Length": str(len(h))})

# body size, encodings
case("huge-body", 413, content=b"{" + b" " * (LIMIT + 10) + b"}")
case(
    "json-over-json-limit",
    413,
    json={
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [12, 3, 64, 64], "data": [0.123456] * (12 * 12288)}]
    },
)
case("huge-body-chunked", 413, content=iter([b" " * (1 << 16)] * (LIMIT // (1 << 16) + 4)))
case("huge-binary-tensor", 413, content=b"{}" + b"\0" * (LIMIT + 1), headers={"Inference-Header-Content-Length": "2"})
case("gzip-bomb", 413, content=gzip.compress(b" " * (LIMIT * 8)), headers={"Content-Encoding": "gzip"})
case("deflate-bomb", 413, content=zlib.compress(b" " * (LIMIT * 8)), headers={"Content-Encoding": "deflate"})
case("gzip-corrupt", 400, content=b"\x1f\x8b\x08\x00" + b"\xff" * 40, headers={"Content-Encoding": "gzip"})
case("gzip-truncated", 400, content=gzip.compress(infer_body())[:200], headers={"Content-Encoding": "gzip"})
case("gzip-trailing-garbage", 400, content=gzip.compress(infer_body()) + b"junk", headers={"Content-Encoding": "gzip"})
case("gzip-claimed-not-gzip", 400, content=infer_body(), headers={"Content-Encoding": "gzip"})
case("encoding-br", 415, content=infer_body(), headers={"Content-Encoding": "br"})
case("encoding-compress", 415, content=infer_body(), headers={"Content-Encoding": "compress"})

# routes and models
case("unknown-model-infer", 404, "/v2/models/nope/infer", content=infer_body())
case("unknown-model-metadata", 404, "/v2/models/nope", method="GET")
case("unknown-model-ready", 404, "/v2/models/nope/ready", method="GET")
case("unknown-version-metadata", 404, "/v2/models/tiny/versions/2", method="GET")
case("unknown-version-infer", 404, "/v2/models/tiny/versions/7/infer", content=infer_body())
case("path-traversal-model", 404, "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", content=infer_body())
case("unknown-route", 404, "/v2/nothing/here", method="GET")
case("get-on-infer", 405, "/v2/models/tiny/infer", method="GET")
case("delete-model", 405, "/v2/models/tiny", method="DELETE")


def test_enough_cases():
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize("method,path,kw,status", CASES)
def test_bad_input_is_a_4xx_with_a_json_error(http, method, path, kw, status):
    r = http.request(method, path, **kw)
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body


def test_server_still_answers_correctly_after_the_fuzz(server, http, tiny_onnx):
    import tritonclient.http as th

    assert server.alive()
    x = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    c = th.InferenceServerClient(server.address)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
    np.testing.assert_array_equal(c.infer("tiny", [inp]).as_numpy("logits"), ref)
    assert http.post("/v2/models/tiny/classify", content=JPEG).status_code == 200
    metrics = http.get("/metrics").text
    assert 'outcome="error"' not in metrics  # no 5xx was ever counted


# --- the HTTP layer: framing errors, bodies that never arrive, connection floods --------------------------


def _raw(server, data: bytes, read_timeout: float = 10.0) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            out += part
    return out


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ],
    ids=["request-line", "content-length-text", "chunk-size-garbage", "header-no-colon", "nul-in-path"],
)
def test_malformed_http_framing_gets_the_json_error_shape(server, request_bytes):
    status, body = _status_and_json(_raw(server, request_bytes))
    assert status == 400 and "malformed HTTP request" in body["error"], body


def test_a_body_that_never_arrives_is_a_408_and_costs_no_memory_up_front(server):
    import socket
    import time

    def rss() -> int:
        with open(f"/proc/{server.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024

    head = f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT}\r\n\r\n".encode() + b"{"
    before = rss()
    socks = []
    try:
        for _ in range(16):  # 16 x 2 MB announced: the buffer was once allocated from the header alone
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(head)
            socks.append(s)
        time.sleep(0.3)
        grown = rss() - before
        assert grown < 8 * LIMIT, f"{grown} bytes held for 16 idle bodies declaring {LIMIT} each"
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            part = socks[0].recv(65536)  # answered once BODY_TIMEOUT_S has passed
            if not part:
                break
            raw += part
        status, body = _status_and_json(raw)
        assert status == 408 and "did not arrive" in body["error"], body
    finally:
        for s in socks:
            s.close()


def test_connections_over_the_cap_get_503_and_the_server_recovers(server, http):
    import socket
    import time

    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=10) as fresh:
            assert fresh.get("/v2/health/live").status_code == 503
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while http.get("/v2/health/live").status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover after the connection flood"
        time.sleep(0.1)


# --- property-based: V2 requests generated from the protocol's schema, images of odd sizes ---------------
# Every generated request, valid or not, must get a non-5xx answer with a JSON body (an "error" for a 4xx);
# every valid request the generator happens to build must get the right answer; after each batch a known
# request is answered exactly as onnxruntime answers it; the server's peak resident memory stays bounded.
# derandomize: the same examples on every run (CI), no example database written to the repository.

from hypothesis import HealthCheck, Verbosity, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ_BATCH = 40  # a known-good request after every this many generated ones
FUZZ = {"requests": 0, "5xx": 0, "ok": 0, "checks": 0}
FUZZ_SETTINGS = settings(
    max_examples=300,
    print_blob=False,
    verbosity=Verbosity.quiet,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
_ints = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, 1, 3, 64, 12288, 49152, 2**31, 2**63, -(10**30)]),
    st.sampled_from([10**309, 10**400, 10**1000, -(10**400)]),  # past float range: once a 500 (OverflowError)
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_junk = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6
)
_shapes = st.one_of(
    st.sampled_from([[1, 3, 64, 64], [2, 3, 64, 64], [1, 64, 64, 3], [3, 64, 64]]),
    st.lists(_ints, max_size=9),
    _junk,
)
_datatypes = st.one_of(st.sampled_from(["FP32", "FP16", "FP64", "UINT8", "INT64", "BOOL", "BYTES", "fp32", ""]), _junk)
_out_names = st.sampled_from(["logits", "logits", "probs", ""])


@st.composite
def _outputs(draw):
    outs = []
    for _ in range(draw(st.integers(0, 3))):
        o = {"name": draw(st.one_of(_out_names, _junk))}
        if draw(st.booleans()):
            o["parameters"] = draw(
                st.one_of(
                    st.fixed_dictionaries({}, optional={"classification": _ints, "binary_data": st.booleans() | _junk}),
                    _junk,
                )
            )
        outs.append(o)
    return outs


@st.composite
def v2_requests(draw):
    """(path, body bytes, headers, (model, input) when valid else None, whether it sets its own timeout).
    A third are valid requests (JSON or binary tensors); the rest have fields from the wrong part of the schema."""
    model = draw(st.sampled_from(["tiny", "tiny", "tiny_u8", "nope"]))
    u8 = model == "tiny_u8"
    batch = draw(st.integers(1, 3))
    shape = [batch, 64, 64, 3] if u8 else [batch, 3, 64, 64]
    dtype, datatype = (np.uint8, "UINT8") if u8 else (np.float32, "FP32")
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape, dtype=np.uint8) if u8 else rng.standard_normal(shape).astype(np.float32)
    binary = draw(st.booleans())
    inp = {"name": "input", "datatype": datatype, "shape": shape}
    payload = b""
    if binary:
        payload = x.tobytes()
        inp["parameters"] = {"binary_data_size": len(payload)}
    else:
        inp["data"] = x.ravel().tolist()
    req: dict = {"inputs": [inp]}
    valid = model != "nope"
    mutations = draw(st.lists(st.sampled_from(range(12)), max_size=3, unique=True)) if draw(st.integers(0, 2)) else []
    for m in sorted(mutations):  # 11 (the whole request replaced) last
        valid = False
        if m == 0:
            inp["name"] = draw(st.one_of(st.just("image"), _junk))
        elif m == 1:
            inp["datatype"] = draw(_datatypes)
        elif m == 2:
            inp["shape"] = draw(_shapes)
        elif m == 3:
            inp["data"] = draw(_junk)
        elif m == 4:
            inp.setdefault("parameters", {})["binary_data_size"] = draw(st.one_of(_ints, _junk))
        elif m == 5:
            req["parameters"] = {"timeout": draw(st.one_of(_ints, _junk))}
        elif m == 6:
            req["outputs"] = draw(_outputs())
        elif m == 7:
            req["inputs"] = [inp] * draw(st.integers(0, 3))
        elif m == 8:
            req["id"] = draw(_junk)
        elif m == 9:
            req["parameters"] = draw(_junk)
        elif m == 10:
            payload = payload[: draw(st.integers(0, max(0, len(payload) - 1)))] if payload else b"\0" * 5
        elif m == 11:
            req = draw(_junk)
    body = json.dumps(req).encode()
    headers = {"Content-Type": "application/json"}
    if binary and (payload or not valid):
        headers["Inference-Header-Content-Length"] = str(len(body))
        body += payload
    if draw(st.integers(0, 5)) == 0:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    # a client's own timeout of a few microseconds may expire in the queue: a 504 is the right answer then
    own_timeout = isinstance(req, dict) and isinstance(req.get("parameters"), dict) and "timeout" in req["parameters"]
    return f"/v2/models/{model}/infer", body, headers, (model, x) if valid else None, own_timeout


@st.composite
def odd_images(draw):
    """Images with odd dimensions (1 px wide, extreme aspect, prime sizes) in every accepted format."""
    w = draw(st.one_of(st.integers(1, 9), st.integers(10, 400), st.sampled_from([1, 2, 997, 3000, 40000])))
    h = draw(st.one_of(st.integers(1, 9), st.integers(10, 400), st.sampled_from([1, 3, 991, 5000, 100000])))
    w, h = (w, max(1, min(h, 1_200_000 // w))) if w * h > 1_200_000 else (w, h)
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"]))
    if fmt == "JPEG" and mode not in ("RGB", "L"):
        mode = "RGB"
    if (fmt == "WEBP" and max(w, h) > 16383) or (fmt in ("GIF", "JPEG", "BMP") and max(w, h) > 65000):
        fmt = "PNG"  # past what the format can store
    buf = io.BytesIO()
    Image.new(mode, (w, h), draw(st.integers(0, 255)) if mode in ("L", "P", "1") else (10, 200, 30)).save(buf, fmt)
    data = buf.getvalue()
    cut = draw(st.sampled_from([None, None, None, 0.5, 0.9]))
    return (data[: int(len(data) * cut)] if cut else data), (w, h)


def _reference(tiny_onnx, tiny_u8_onnx):
    cache = {}

    def run(model, x):
        if model not in cache:
            cache[model] = ort.InferenceSession(str(tiny_onnx if model == "tiny" else tiny_u8_onnx))
        return cache[model].run(None, {"input": x})[0]

    return run


def _peak_rss(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) * 1024


def _known_good(http, ref):
    x = np.random.default_rng(7).standard_normal((2, 3, 64, 64)).astype(np.float32)
    r = http.post(
        "/v2/models/tiny/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": x.ravel().tolist()}]},
    )
    assert r.status_code == 200, r.text[:300]
    got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    np.testing.assert_allclose(got, ref("tiny", x), rtol=1e-6, atol=1e-6)
    FUZZ["checks"] += 1


def _count(http, ref, r, own_timeout=False):
    FUZZ["requests"] += 1
    if r.status_code >= 500 and not (own_timeout and r.status_code == 504):
        FUZZ["5xx"] += 1
    if FUZZ["requests"] % FUZZ_BATCH == 0:
        _known_good(http, ref)


def test_generated_v2_requests_never_get_a_5xx(server, http, tiny_onnx, tiny_u8_onnx):
    ref = _reference(tiny_onnx, tiny_u8_onnx)

    @FUZZ_SETTINGS
    @given(v2_requests())
    def prop(case):
        path, body, headers, expect, own_timeout = case
        r = http.post(path, content=body, headers=headers)
        _count(http, ref, r, own_timeout)
        assert r.status_code < 500 or (own_timeout and r.status_code == 504), (r.status_code, r.text[:300])
        out = r.json()
        if r.status_code >= 400:
            assert isinstance(out.get("error"), str) and out["error"], out
        if expect is not None:
            assert r.status_code == 200, r.text[:300]
            model, x = expect
            o = out["outputs"][0]
            got = (
                np.frombuffer(r.content[int(r.headers["inference-header-content-length"]) :], np.float32)
                if "data" not in o
                else np.asarray(o["data"], np.float32)
            )
            np.testing.assert_allclose(got.reshape(x.shape[0], -1), ref(model, x), rtol=1e-5, atol=1e-5)

    prop()
    _known_good(http, ref)


def test_generated_odd_images_never_get_a_5xx_and_memory_stays_bounded(server, http, tiny_onnx, tiny_u8_onnx):
    ref = _reference(tiny_onnx, tiny_u8_onnx)

    @settings(FUZZ_SETTINGS, max_examples=200)
    @given(odd_images(), st.sampled_from(["tiny", "tiny_u8"]))
    def prop(image, model):
        data, (w, h) = image
        r = http.post(f"/v2/models/{model}/classify", content=data)
        _count(http, ref, r)
        assert r.status_code < 500, (r.status_code, r.text[:300])
        if r.status_code == 200:
            assert len(r.json()["top"]) == 3
        else:
            assert r.status_code in (400, 413, 415) and r.json()["error"], (w, h, r.text[:300])

    prop()
    _known_good(http, ref)
    peak = _peak_rss(server)
    print(
        f"\nfuzz: {FUZZ['requests']} generated requests, {FUZZ['5xx']} 5xx, {FUZZ['checks']} known-good checks, "
        f"server peak RSS {peak / 2**20:.0f} MiB"
    )
    assert FUZZ["5xx"] == 0
    # the worst image allowed is 1 Mpx decoded and 1 Mpx resized: far below this; a resize bomb once took GBs
    assert peak < 1200 * 2**20, f"server peak RSS {peak / 2**20:.0f} MiB"
