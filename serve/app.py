"""The FastAPI app: KServe V2 routes, /classify, /metrics; errors as JSON {"error": ...}.

Inference never runs on the event loop (serve.batcher has `instances` worker threads per model), nor does
image decoding, inflating or large JSON parsing (thread pool; JSON over 1 MB in a helper process, `jsonparse`)."""

from __future__ import annotations

import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest
from starlette.routing import Route

from transferzoo import __version__

from .batcher import Batcher
from .body import read_body
from .config import ServerConfig
from .errors import BadRequest, NotFound, ServeError, Unauthorized, UnsupportedMediaType
from .jsonparse import PROCESS_JSON_BYTES
from .jsonparse import parse_async as parse_json_async
from .jsonparse import shutdown as shutdown_json_pool
from .metrics import UNKNOWN_MODEL, Metrics
from .model import Model
from .page import add_page
from .preprocess import decode_image, softmax, to_input
from .protocol import encode_infer_response, parse_header_length, parse_infer_request

log = logging.getLogger("serve")
INLINE_JSON_BYTES = 1 << 16  # JSON bodies larger than this are parsed on a worker thread
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository_readonly"]


@dataclass
class ServerState:
    config: ServerConfig
    models: dict[str, Model]
    metrics: Metrics = field(default_factory=Metrics)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    draining: bool = False

    def __post_init__(self):
        c = self.config
        for name, m in self.models.items():
            o = m.options or c
            self.batchers[name] = Batcher(m, o.max_batch, o.max_delay_ms / 1000, o.max_queue, self.metrics, o.instances)

    def ready(self) -> bool:
        return not self.draining and all(b.alive() for b in self.batchers.values())


def load_models(config: ServerConfig) -> dict[str, Model]:
    from . import repository
    from .config import parse_model_arg

    models: dict[str, Model] = {}
    for arg in config.models:
        name, path = parse_model_arg(arg)
        if os.path.isdir(path):  # a Triton model repository: each model as its config.pbtxt says
            if name is not None:
                raise ValueError(f"{arg}: models in a repository are named by their folders; drop '{name}='")
            for entry in repository.read(path, config):
                m = Model(entry.path, entry.name, threads=entry.options.threads_per_run())
                repository.check_labels(entry, m)
                m.options = entry.options
                if m.name in models:
                    raise ValueError(f"two models named {m.name!r} ({models[m.name].path} and {m.path})")
                models[m.name] = m
            continue
        m = Model(path, name, threads=config.threads_per_run())
        if m.name in models:
            raise ValueError(f"two models named {m.name!r} ({models[m.name].path} and {path}); name one with NAME=PATH")
        models[m.name] = m
    return models


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        for b in state.batchers.values():
            b.start()
        yield
        state.draining = True
        for b in state.batchers.values():
            b.stop(state.config.timeout_s)
        shutdown_json_pool()

    app = FastAPI(
        title="transferzoo serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.serve = state
    api_key = state.config.api_key()
    cfg, metrics = state.config, state.metrics

    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        msg = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404:
            msg = f"no route {request.method} {request.url.path}"
        return _error(e.status_code, msg, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return _error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(e).__name__}")

    async def authorize(request: Request):
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise Unauthorized(
                "missing or wrong API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
            )

    def get_model(name: str, version: str | None = None) -> Model:
        m = state.models.get(name)
        if m is None:
            raise NotFound(f"unknown model {name!r}; served: {sorted(state.models)}")
        if version not in (None, "", "1"):
            raise NotFound(f"model {name!r} has no version {version!r} (only '1')")
        return m

    async def tracked(name: str, endpoint: str, handler):
        label = name if name in state.models else UNKNOWN_MODEL
        gauge = metrics.inflight_for(label)
        gauge.inc()
        t0, status = time.perf_counter(), 500
        try:
            resp = await handler()
            status = resp.status_code
            return resp
        except ServeError as e:
            status = e.status
            raise
        finally:
            gauge.dec()
            metrics.observe_request(label, endpoint, status, time.perf_counter() - t0)

    # --- health and metadata (health needs no API key: probes) -----------------------------
    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        ok = state.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2", dependencies=[Depends(authorize)])
    async def server_metadata():
        return {"name": "transferzoo", "version": __version__, "extensions": EXTENSIONS}

    @app.get("/v2/models/{name}", dependencies=[Depends(authorize)])
    @app.get("/v2/models/{name}/versions/{version}", dependencies=[Depends(authorize)])
    async def model_metadata(name: str, version: str | None = None):
        return get_model(name, version).metadata()

    @app.get("/v2/models/{name}/ready", dependencies=[Depends(authorize)])
    @app.get("/v2/models/{name}/versions/{version}/ready", dependencies=[Depends(authorize)])
    async def model_ready(name: str, version: str | None = None):
        get_model(name, version)
        ok = state.ready()
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @app.post("/v2/repository/index", dependencies=[Depends(authorize)])
    async def repository_index():
        return [{"name": n, "version": "1", "state": "READY" if state.ready() else "UNAVAILABLE"} for n in state.models]

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    # --- inference -------------------------------------------------------------------------
    # The hot path is a plain Starlette route, matched first: FastAPI's per-request dependency and
    # parameter solving cost ~0.2 ms of event-loop CPU per request, taken from onnxruntime on a small
    # machine (bench/bench_serve.py). Auth, errors and metrics are the same as on every other route.
    async def infer(request: Request):
        name, version = request.path_params["name"], request.path_params.get("version")
        await authorize(request)

        async def handle():
            model = get_model(name, version)
            batcher = state.batchers[name]
            with batcher.announce() as arrival:
                body = await read_body(request, cfg.limits.max_body_bytes, cfg.limits.body_timeout_s)
                hlen = parse_header_length(request.headers.get("inference-header-content-length"), len(body))
                if hlen is None and len(body) > INLINE_JSON_BYTES:
                    parsed = None
                    if PROCESS_JSON_BYTES < len(body) <= cfg.limits.max_json_bytes:
                        parsed = await parse_json_async(body)  # json.loads holds the GIL: another process
                    req = await run_in_threadpool(
                        parse_infer_request,
                        body,
                        hlen,
                        model,
                        cfg.limits.max_json_depth,
                        cfg.limits.max_json_bytes,
                        parsed,
                    )
                else:
                    req = parse_infer_request(body, hlen, model, cfg.limits.max_json_depth, cfg.limits.max_json_bytes)
                timeout = min(cfg.timeout_s, req.timeout_s or cfg.timeout_s)
                results = await batcher.submit(req.feeds, timeout, arrival)
            out, json_len = encode_infer_response(model, req, results)
            if json_len is None:
                return Response(out, media_type="application/json")
            return Response(
                out, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(json_len)}
            )

        return await tracked(name, "infer", handle)

    for path in ("/v2/models/{name}/versions/{version}/infer", "/v2/models/{name}/infer"):
        app.router.routes.insert(0, Route(path, infer, methods=["POST"]))

    @app.post("/v2/models/{name}/classify", dependencies=[Depends(authorize)])
    async def classify(name: str, request: Request, top_k: int = Query(5, ge=1, le=1000)):
        async def handle():
            model = get_model(name)
            pre = model.meta.preprocess
            if pre is None:
                raise BadRequest(
                    f"model {name!r} carries no preprocessing metadata (input_size...); use /v2/models/{name}/infer"
                )
            batcher = state.batchers[name]
            with batcher.announce() as arrival:
                data = await _image_bytes(request, cfg.limits.max_body_bytes, cfg.limits.body_timeout_s)
                x = await run_in_threadpool(_prepare, data, pre, cfg)
                results = await batcher.submit({model.inputs[0].name: x[None]}, cfg.timeout_s, arrival)
            return JSONResponse(
                {"model_name": name, "top": top_classes(results[model.outputs[0].name][0], model, top_k)}
            )

        return await tracked(name, "classify", handle)

    add_page(app, state, authorize)  # GET /: a page for people (serve/page.py)
    return app


def _prepare(data: bytes, pre, cfg: ServerConfig) -> np.ndarray:
    img = decode_image(data, cfg.limits.max_image_pixels, cfg.limits.image_formats)
    return to_input(img, pre, cfg.limits.max_image_pixels)  # the resized image is bounded like the decoded one


def top_classes(row: np.ndarray, model: Model, top_k: int) -> list[dict]:
    """One output row -> [{'index', 'label', 'probability'}] best first (softmax unless the model
    already outputs probabilities)."""
    p = row.astype(np.float64) if model.meta.output_format == "probabilities" else softmax(row)
    order = np.argsort(-p, kind="stable")[:top_k]
    labels = model.meta.labels
    return [
        {
            "index": int(i),
            "label": labels[i] if labels and i < len(labels) else str(int(i)),
            "probability": round(float(p[i]), 6),
        }
        for i in order
    ]


async def _image_bytes(request: Request, limit: int, timeout_s: float) -> bytes:
    """The uploaded image: the first file of a multipart form, or the raw body (image/*,
    application/octet-stream or no Content-Type)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit, timeout_s)
    if ctype == "multipart/form-data":

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        replay = StarletteRequest(request.scope, receive)
        try:
            form = await replay.form(max_files=4, max_fields=16)
        except Exception as e:  # starlette/python-multipart parse errors
            raise BadRequest(f"malformed multipart body: {getattr(e, 'detail', e)}") from None
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        if not files:
            raise BadRequest("multipart body has no file part: send the image as a file field (e.g. -F file=@cat.jpg)")
        data = await files[0].read()
        await form.close()
        return data
    if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise UnsupportedMediaType(
            f"Content-Type {ctype!r}: send an image (image/*, application/octet-stream or multipart/form-data)"
        )
    return body
