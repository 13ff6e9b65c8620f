"""Open Inference Protocol (KServe V2) requests and responses, with Triton's binary tensor data and
classification extensions, as `tritonclient.http` speaks them.

Request body: a JSON header, optionally followed by raw tensor bytes. When
`Inference-Header-Content-Length: N` is sent, the first N bytes are the JSON and each input with
`parameters.binary_data_size` takes that many bytes, in input order, from the rest (little-endian,
row-major). Outputs are binary when the output asks (`parameters.binary_data`) or, by default, when
the request says `parameters.binary_data_output`. `parameters.classification: k` on an output
returns, per row, the top k as BYTES "score:index[:label]".

Everything a client sends is validated here; a violation is a BadRequest (400) naming the field.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from .errors import BadRequest, PayloadTooLarge
from .model import Model

DATATYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
MAX_RANK = 8
MAX_TIMEOUT_US = 3600 * 10**6  # an hour: the server's own --timeout-s caps it anyway
MAX_COUNT = 1 << 62  # tensor element counts and byte sizes: far past any body, far from overflow


@dataclass
class OutputRequest:
    name: str
    binary: bool
    classification: int = 0  # top-k as BYTES when > 0


@dataclass
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[OutputRequest]
    timeout_s: float | None  # the client's own timeout (Triton: microseconds in parameters.timeout)


def json_depth_ok(obj, limit: int) -> bool:
    """Nesting of dicts/lists <= limit. Lists whose first element is a scalar are tensor data and
    are not walked (numpy rejects ragged nesting inside them)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values() if isinstance(v, (dict, list)))
        elif isinstance(o, list) and o and isinstance(o[0], (dict, list)):
            stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return True


def parse_header_length(value: str | None, body_len: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {value[:40]!r}") from None
    if not 0 < n <= body_len:
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body of {body_len} bytes")
    return n


def _loads(text: bytes, max_depth: int):
    try:
        obj = json.loads(text)
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not json_depth_ok(obj, max_depth):
        raise BadRequest(f"JSON nested deeper than {max_depth} levels")
    return obj


def _parsed(parsed: tuple[str, object], max_depth: int):
    status, obj = parsed
    if status == "deep" or (status == "ok" and not json_depth_ok(obj, max_depth)):
        raise BadRequest(f"JSON nested deeper than {max_depth} levels")
    if status == "malformed":
        raise BadRequest(f"malformed JSON: {obj}")
    return obj


def _bool_param(params: dict, key: str, where: str, default=False) -> bool:
    v = params.get(key, default)
    if not isinstance(v, bool):
        raise BadRequest(f"{where}: parameter {key!r} must be true or false, got {v!r}")
    return v


def _int_param(params: dict, key: str, where: str, lo: int, hi: int, what: str = "an integer") -> int:
    """An integer parameter within [lo, hi]: every number a client sends is range-checked before it
    is used (a 400-digit timeout once reached float() and overflowed into a 500)."""
    v = params[key]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise BadRequest(f"{where}: parameter {key!r} must be {what} from {lo} to {hi}, got {str(v)[:40]}")
    return v


def _params(obj: dict, where: str) -> dict:
    p = obj.get("parameters", {})
    if not isinstance(p, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return p


def _shape(v, where: str) -> tuple[int, ...]:
    if (
        not isinstance(v, list)
        or len(v) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_COUNT for d in v)
    ):
        raise BadRequest(
            f"{where}: 'shape' must be a list of at most {MAX_RANK} non-negative integers, got {str(v)[:80]}"
        )
    return tuple(v)


def _json_data(data, dtype: type, name: str, datatype: str) -> np.ndarray:
    """JSON 'data' (flat or nested) -> array of the declared type; no silent string parsing,
    float truncation or integer wrap-around."""
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"input {name!r}: 'data' is not a rectangular array of numbers ({e})") from None
    kind = np.dtype(dtype).kind
    ok = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[kind]
    if raw.size and raw.dtype.kind not in ok:
        raise BadRequest(f"input {name!r}: 'data' holds {raw.dtype} values, not {datatype}")
    if kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise BadRequest(f"input {name!r}: values outside the {datatype} range {info.min}..{info.max}")
    return raw.astype(dtype, copy=False)


def _check_against_model(name: str, datatype: str, shape: tuple[int, ...], model: Model) -> type:
    spec = next((t for t in model.inputs if t.name == name), None)
    if spec is None:
        raise BadRequest(f"model {model.name!r} has no input {name!r}; inputs: {[t.name for t in model.inputs]}")
    if datatype not in DATATYPES:
        raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}; one of {sorted(DATATYPES)}")
    if datatype != spec.datatype:
        raise BadRequest(f"input {name!r}: datatype {datatype} does not match the model's {spec.datatype}")
    if len(shape) != len(spec.shape) or any(s != -1 and s != d for s, d in zip(spec.shape, shape)):
        raise BadRequest(f"input {name!r}: shape {list(shape)} does not match the model's {list(spec.shape)} (-1: any)")
    if model.batched and shape[0] == 0:
        raise BadRequest(f"input {name!r}: batch size 0")
    return spec.dtype


def parse_infer_request(
    body: bytes,
    header_length: int | None,
    model: Model,
    max_json_depth: int,
    max_json_bytes: int = 16 << 20,
    parsed: tuple[str, object] | None = None,
) -> InferRequest:
    """`parsed`: the JSON already parsed by `serve.jsonparse.parse` (large bodies, in a helper process)."""
    header = body if header_length is None else body[:header_length]
    if len(header) > max_json_bytes:
        raise PayloadTooLarge(
            f"JSON part of {len(header)} bytes exceeds {max_json_bytes}: send large tensors as binary data "
            "(tritonclient's default; Inference-Header-Content-Length + binary_data_size)"
        )
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    req = _loads(header, max_json_depth) if parsed is None else _parsed(parsed, max_json_depth)
    if not isinstance(req, dict):
        raise BadRequest("the request must be a JSON object with 'inputs'")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("'id' must be a string")
    params = _params(req, "request")
    timeout_s = None
    if "timeout" in params:
        timeout_s = _int_param(params, "timeout", "request", 1, MAX_TIMEOUT_US, "an integer (microseconds)") / 1e6
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, inp in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(inp, dict):
            raise BadRequest(f"{where} must be an object")
        name, datatype = inp.get("name"), inp.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise BadRequest(f"{where}: 'name' and 'datatype' must be strings")
        if name in feeds:
            raise BadRequest(f"input {name!r} given twice")
        shape = _shape(inp.get("shape"), where)
        dtype = _check_against_model(name, datatype, shape, model)
        count = math.prod(shape)
        p = _params(inp, where)
        if "binary_data_size" in p:
            size = _int_param(p, "binary_data_size", f"input {name!r}", 0, MAX_COUNT)
            if "data" in inp:
                raise BadRequest(f"input {name!r}: give either 'data' or binary_data_size, not both")
            expected = count * np.dtype(dtype).itemsize
            if size != expected:
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} but shape {list(shape)} of {datatype} needs "
                    f"{expected} bytes"
                )
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left; check Inference-Header-Content-Length)"
                )
            arr = np.frombuffer(binary[offset : offset + size], dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
            offset += size
        else:
            if "data" not in inp:
                raise BadRequest(f"input {name!r}: no 'data' and no binary_data_size")
            arr = _json_data(inp["data"], dtype, name, datatype)
            if arr.size != count:
                raise BadRequest(f"input {name!r}: 'data' has {arr.size} elements, shape {list(shape)} needs {count}")
            arr = arr.reshape(shape)
        feeds[name] = check_finite(name, arr)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes after the JSON header are not claimed by any binary_data_size")
    check_feeds(feeds, model)
    return InferRequest(rid, feeds, _parse_outputs(req, params, model), timeout_s)


def check_finite(name: str, arr: np.ndarray) -> np.ndarray:
    """A decoded float input without NaN or infinity (HTTP and gRPC alike)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BadRequest(f"input {name!r}: contains NaN or infinity")
    return arr


def check_feeds(feeds: dict[str, np.ndarray], model: Model) -> None:
    """Every model input given, and one batch size across them (HTTP and gRPC alike)."""
    missing = [t.name for t in model.inputs if t.name not in feeds]
    if missing:
        raise BadRequest(f"missing input(s) {missing} for model {model.name!r}")
    if model.batched and len({a.shape[0] for a in feeds.values()}) > 1:
        raise BadRequest("inputs disagree on the batch size (first dimension)")


def _parse_outputs(req: dict, params: dict, model: Model) -> list[OutputRequest]:
    default_binary = _bool_param(params, "binary_data_output", "request")
    outs = req.get("outputs")
    if outs is None:
        return [OutputRequest(o.name, default_binary) for o in model.outputs]
    if not isinstance(outs, list) or not outs:
        raise BadRequest("'outputs' must be a non-empty list when given")
    result, names, seen = [], {o.name for o in model.outputs}, set()
    for i, o in enumerate(outs):
        where = f"outputs[{i}]"
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest(f"{where} must be an object with a string 'name'")
        if o["name"] not in names:
            raise BadRequest(f"model {model.name!r} has no output {o['name']!r}; outputs: {sorted(names)}")
        if o["name"] in seen:  # as Triton does: a repeated output would multiply the response (40 KB -> 41 MB)
            raise BadRequest(f"{where}: output {o['name']!r} requested twice")
        seen.add(o["name"])
        p = _params(o, where)
        k = _int_param(p, "classification", where, 0, MAX_COUNT) if "classification" in p else 0
        result.append(OutputRequest(o["name"], _bool_param(p, "binary_data", where, default_binary), k))
    return result


def classification(values: np.ndarray, k: int, labels: tuple[str, ...] | None) -> np.ndarray:
    """Triton's classification extension: per row the top k as 'score:index[:label]' (BYTES)."""
    if values.ndim == 0:
        raise BadRequest("classification needs an output with a class dimension")
    flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)
    k = min(k, flat.shape[1])
    idx = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    out = np.empty(idx.shape, dtype=object)
    for r in range(idx.shape[0]):
        for c, j in enumerate(idx[r]):
            s = f"{float(flat[r, j])}:{int(j)}"
            if labels is not None and j < len(labels):
                s += f":{labels[j]}"
            out[r, c] = s.encode()
    return out if values.ndim > 1 else out[0]


def _bytes_tensor(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.flat:
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_infer_response(model: Model, req: InferRequest, results: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """(body, header length or None when the body is plain JSON)."""
    outputs, blobs = [], []
    for o in req.outputs:
        arr = results[o.name]
        datatype = next(t.datatype for t in model.outputs if t.name == o.name)
        if o.classification:
            arr, datatype = classification(arr, o.classification, model.meta.labels), "BYTES"
        entry = {"name": o.name, "datatype": datatype, "shape": list(arr.shape)}
        if o.binary:
            blob = (
                _bytes_tensor(arr)
                if datatype == "BYTES"
                else np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode() for v in arr.flat]
        else:
            entry["data"] = arr.ravel().tolist()
        outputs.append(entry)
    resp = {"model_name": model.name, "model_version": "1", "outputs": outputs}
    if req.id is not None:
        resp["id"] = req.id
    header = json.dumps(resp).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
