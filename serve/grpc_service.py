"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, as `tritonclient.grpc`
speaks it), on the HTTP server's event loop with its models, batchers, limits, API key and metrics.

The service stubs are the ones `tritonclient[grpc]` ships (`tritonclient.grpc.service_pb2*`,
generated from Triton's `grpc_service.proto`): the same generated code as the client's, so the
wire format cannot drift from what tritonclient sends, and no protoc step in the build.

Served: ServerLive, ServerReady (no API key: probes), ServerMetadata, ModelReady, ModelMetadata,
RepositoryIndex (the read-only repository extension, as over HTTP) and ModelInfer (inputs as
`raw_input_contents` or typed `contents`; outputs always as `raw_output_contents`, as Triton
answers; `classification` on an output: top k as BYTES "score:index[:label]"). The other RPCs
answer UNIMPLEMENTED. Every client error is a defined gRPC status (serve.errors' HTTP status mapped
by STATUS_CODES), never UNKNOWN; an oversized message is refused by grpc itself with
RESOURCE_EXHAUSTED (max receive size = --max-body-mb).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from transferzoo import __version__

from .errors import BadRequest, NotFound, ServeError, Unauthorized
from .metrics import UNKNOWN_MODEL
from .protocol import (
    MAX_COUNT,
    MAX_RANK,
    MAX_TIMEOUT_US,
    OutputRequest,
    _bytes_tensor,
    _check_against_model,
    check_feeds,
    check_finite,
    classification,
)

log = logging.getLogger("serve.grpc")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository_readonly"]

# InferTensorContents field per datatype (the typed alternative to raw_input_contents)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _param(p: pb.InferParameter):
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _int_param(params, key: str, where: str, lo: int, hi: int, what: str = "an integer") -> int | None:
    """An integer parameter within [lo, hi] (the same ranges as the HTTP path's), None when absent."""
    if key not in params:
        return None
    p = params[key]
    if p.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        raise BadRequest(f"{where}: parameter {key!r} must be {what}, got {_param(p)!r}")
    v = p.int64_param if p.HasField("int64_param") else p.uint64_param
    if not lo <= v <= hi:
        raise BadRequest(f"{where}: parameter {key!r} must be {what} from {lo} to {hi}, got {v}")
    return v


RAW_INPUT_CONTENTS = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
    raise IndexError("varint longer than 10 bytes")


def split_raw_contents(data: bytes) -> tuple[bytes, list[memoryview]] | None:
    """A serialized ModelInferRequest -> (the message without its raw_input_contents, those as views
    into `data`), or None when the top level is not plain well-formed wire data (the caller then
    parses `data` whole, so a malformed message gets exactly protobuf's answer).

    Why: protobuf copies a bytes field into its arena when parsing and again into a new bytes
    object on access; for an image's tensor (600 KB) those copies, of memory not in cache, were
    the largest share of the server's own memmove time per request. Only the top level is walked
    (a handful of fields); the small rest is parsed by protobuf as before."""
    raw: list[memoryview] = []
    keep: list[tuple[int, int]] = []
    view = memoryview(data)
    i, n = 0, len(data)
    try:
        while i < n:
            start = i
            tag, i = _varint(data, i)
            wire = tag & 7
            if wire == 0:
                _, i = _varint(data, i)
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                size, i = _varint(data, i)
                if tag >> 3 == RAW_INPUT_CONTENTS:
                    if i + size > n:
                        return None
                    raw.append(view[i : i + size])
                    i += size
                    continue
                i += size
            else:  # groups (3, 4) or invalid wire types: protobuf's own error
                return None
            if i > n:
                return None
            keep.append((start, i))
    except IndexError:  # truncated varint
        return None
    if not raw:
        return None
    return b"".join(data[a:b] for a, b in keep), raw


class InferMessage:
    """What the ModelInfer deserializer hands on: the parsed request, and its raw_input_contents
    as views into the received bytes when they were split off (else the message's own field)."""

    __slots__ = ("request", "raw")

    def __init__(self, request: pb.ModelInferRequest, raw):
        self.request, self.raw = request, raw

    @classmethod
    def parse(cls, data: bytes) -> "InferMessage":
        """DecodeError for bytes that are not a ModelInferRequest."""
        split = split_raw_contents(data)
        if split is None:
            req = pb.ModelInferRequest.FromString(data)
            return cls(req, req.raw_input_contents)
        rest, raw = split
        req = pb.ModelInferRequest.FromString(rest)
        return cls(req, raw)


def parse_request(
    req: pb.ModelInferRequest, model, raw=None
) -> tuple[dict[str, np.ndarray], list[OutputRequest], float | None]:
    """(feeds, outputs, the client's timeout in s) from a ModelInferRequest, checked as strictly as
    the HTTP path (serve.protocol): names, datatypes, shapes against the model, sizes, NaN/inf.
    `raw`: the raw_input_contents when split off the message (InferMessage), else the message's."""
    if not req.inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if raw is None:
        raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs: give one per input, in input order, "
            "or none (typed contents)"
        )
    timeout_us = _int_param(req.parameters, "timeout", "request", 1, MAX_TIMEOUT_US, "an integer (microseconds)")
    feeds: dict[str, np.ndarray] = {}
    for i, inp in enumerate(req.inputs):
        name, datatype = inp.name, inp.datatype
        if name in feeds:
            raise BadRequest(f"input {name!r} given twice")
        if len(inp.shape) > MAX_RANK or any(d < 0 for d in inp.shape):
            raise BadRequest(f"inputs[{i}]: 'shape' must be at most {MAX_RANK} non-negative integers")
        shape = tuple(inp.shape)
        dtype = _check_against_model(name, datatype, shape, model)
        count = math.prod(shape)
        if raw:
            data = raw[i]
            expected = count * np.dtype(dtype).itemsize
            if len(data) != expected:
                raise BadRequest(
                    f"input {name!r}: {len(data)} bytes of raw_input_contents but shape {list(shape)} of {datatype} "
                    f"needs {expected}"
                )
            arr = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise BadRequest(f"input {name!r}: {datatype} needs raw_input_contents")
            values = getattr(inp.contents, field)
            if len(values) != count:
                raise BadRequest(
                    f"input {name!r}: {len(values)} values in contents.{field}, shape {list(shape)} needs {count}"
                )
            arr = np.asarray(values)
            if np.dtype(dtype).kind in "iu" and arr.size:
                info = np.iinfo(dtype)
                if int(arr.min()) < info.min or int(arr.max()) > info.max:
                    raise BadRequest(f"input {name!r}: values outside the {datatype} range {info.min}..{info.max}")
            arr = arr.astype(dtype, copy=False).reshape(shape)
        feeds[name] = check_finite(name, arr)
    check_feeds(feeds, model)
    names = {o.name for o in model.outputs}
    outputs = []
    for i, o in enumerate(req.outputs):
        if o.name not in names:
            raise BadRequest(f"model {model.name!r} has no output {o.name!r}; outputs: {sorted(names)}")
        if any(r.name == o.name for r in outputs):  # as Triton does: a repeated output multiplies the response
            raise BadRequest(f"outputs[{i}]: output {o.name!r} requested twice")
        k = _int_param(o.parameters, "classification", f"outputs[{i}]", 0, MAX_COUNT) or 0
        outputs.append(OutputRequest(o.name, True, k))
    if not outputs:
        outputs = [OutputRequest(o.name, True) for o in model.outputs]
    return feeds, outputs, None if timeout_us is None else timeout_us / 1e6


def encode_response(model, rid: str, outputs: list[OutputRequest], results) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name=model.name, model_version="1", id=rid)
    for o in outputs:
        arr = results[o.name]
        datatype = next(t.datatype for t in model.outputs if t.name == o.name)
        if o.classification:
            arr, datatype = classification(arr, o.classification, model.meta.labels), "BYTES"
            blob = _bytes_tensor(arr)
        else:
            blob = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        resp.outputs.add(name=o.name, datatype=datatype, shape=arr.shape)
        resp.raw_output_contents.append(blob)
    return resp


class InferenceService:
    def __init__(self, state):
        self.state = state
        self.api_key = state.config.api_key()

    # --- shared with the HTTP side: auth, model lookup, errors, metrics ----------------------
    def _authorize(self, context) -> None:
        if self.api_key is None:
            return
        auth = next((v for k, v in context.invocation_metadata() if k == "authorization"), "")
        if isinstance(auth, bytes):
            auth = auth.decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise Unauthorized("missing or wrong API key: send metadata 'authorization: Bearer <key>'")

    def _model(self, name: str, version: str):
        m = self.state.models.get(name)
        if m is None:
            raise NotFound(f"unknown model {name!r}; served: {sorted(self.state.models)}")
        if version not in ("", "1"):
            raise NotFound(f"model {name!r} has no version {version!r} (only '1')")
        return m

    async def _call(self, context, handler, auth: bool = True, on_status=None):
        """handler() with the API key checked; a ServeError becomes its gRPC status, anything else
        INTERNAL (a fault of the server, logged), never grpc's UNKNOWN."""
        try:
            if auth:
                self._authorize(context)
            resp = await handler()
        except ServeError as e:
            if on_status:
                on_status(e.status)
            await context.abort(STATUS_CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), e.message)
        except Exception as e:
            log.exception("internal error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"[:500])
        if on_status:
            on_status(200)
        return resp

    # --- health and metadata -----------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state.ready())

    async def ServerMetadata(self, request, context):
        async def handle():
            return pb.ServerMetadataResponse(name="transferzoo", version=__version__, extensions=EXTENSIONS)

        return await self._call(context, handle)

    async def ModelReady(self, request, context):
        async def handle():
            # an unknown model is not ready (Triton's answer too), not an error
            known = request.name in self.state.models and request.version in ("", "1")
            return pb.ModelReadyResponse(ready=known and self.state.ready())

        return await self._call(context, handle)

    async def ModelMetadata(self, request, context):
        async def handle():
            md = self._model(request.name, request.version).metadata()
            tensors = lambda ts: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in ts]  # noqa: E731
            return pb.ModelMetadataResponse(
                name=md["name"],
                versions=md["versions"],
                platform=md["platform"],
                inputs=tensors(md["inputs"]),
                outputs=tensors(md["outputs"]),
            )

        return await self._call(context, handle)

    async def RepositoryIndex(self, request, context):
        async def handle():
            state = "READY" if self.state.ready() else "UNAVAILABLE"
            models = [
                pb.RepositoryIndexResponse.ModelIndex(name=n, version="1", state=state) for n in self.state.models
            ]
            if request.ready and state != "READY":
                models = []
            return pb.RepositoryIndexResponse(models=models)

        return await self._call(context, handle)

    # --- inference -----------------------------------------------------------------------------
    async def ModelInfer(self, message: InferMessage, context):
        state, cfg = self.state, self.state.config
        request = message.request
        name = request.model_name
        label = name if name in state.models else UNKNOWN_MODEL
        gauge = state.metrics.inflight_for(label)
        gauge.inc()
        t0, status = time.perf_counter(), 500

        async def handle():
            model = self._model(name, request.model_version)
            batcher = state.batchers[name]
            with batcher.announce() as arrival:
                feeds, outputs, client_timeout = parse_request(request, model, message.raw)
                timeout = min(cfg.timeout_s, client_timeout or cfg.timeout_s)
                remaining = context.time_remaining()  # the client's gRPC deadline, when it set one
                if remaining is not None:
                    timeout = min(timeout, max(remaining, 1e-3))
                results = await batcher.submit(feeds, timeout, arrival)
            return encode_response(model, request.id, outputs, results)

        def set_status(s: int):
            nonlocal status
            status = s

        try:
            return await self._call(context, handle, on_status=set_status)
        except asyncio.CancelledError:  # the client went away or its deadline passed: its outcome, not ours
            status = 499
            raise
        finally:
            gauge.dec()
            state.metrics.observe_request(label, "grpc_infer", status, time.perf_counter() - t0)


class _Malformed:
    """What the deserializer hands on for bytes that are not the request message (grpc would answer
    INTERNAL for a deserializer that raises; a client's garbage is INVALID_ARGUMENT)."""

    def __init__(self, error: str):
        self.error = error


SERVED = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer", "RepositoryIndex")
SERVICE = "inference.GRPCInferenceService"


def _handlers(service: InferenceService) -> grpc.GenericRpcHandler:
    """The served RPCs with the generated message classes (the others have no handler: UNIMPLEMENTED)."""
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    handlers = {}
    for name in SERVED:
        req_cls = getattr(pb, methods[name].input_type.name)
        resp_cls = getattr(pb, methods[name].output_type.name)

        parse = InferMessage.parse if name == "ModelInfer" else req_cls.FromString

        def deserialize(data: bytes, cls=req_cls, parse=parse):
            try:
                return parse(data)
            except DecodeError as e:
                return _Malformed(f"malformed {cls.__name__} message: {e}")

        async def call(request, context, method=getattr(service, name)):
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
            return await method(request, context)

        handlers[name] = grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=deserialize, response_serializer=resp_cls.SerializeToString
        )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def bind(state, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """The service bound to host:port (0: a free one), not yet started (`await server.start()` on the
    event loop that is to run it) -> (server, bound port). OSError when the port is taken."""
    limit = state.config.limits.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second server on the same port is an error, not a silent share
        ],
        maximum_concurrent_rpcs=None,
    )
    server.add_generic_rpc_handlers((_handlers(InferenceService(state)),))
    try:
        bound = server.add_insecure_port(f"{'[' + host + ']' if ':' in host else host}:{port}")
    except RuntimeError:  # grpc's "Failed to bind": the port is taken or the address is not this machine's
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}: the port is in use (choose another --grpc-port)")
    return server, bound
