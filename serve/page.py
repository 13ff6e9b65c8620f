"""A page for people: `GET /` shows the served models (inputs, labels, parity figures from the
export) and lets a person drop or pick an image and see the top classes. Plain HTML + JS from the
package's static/ folder, no third-party assets; it talks to the server's own endpoints:
`GET /page/models` (below) and `POST /v2/models/NAME/classify`.

The page itself needs no API key (it holds no data); `/page/models` and /classify need the key when
the server has one, and the page asks for it."""

from __future__ import annotations

import json
from importlib import resources

from fastapi import Depends
from fastapi.responses import HTMLResponse, JSONResponse

# shown beside each model: what a person deciding whether to trust it wants to read
SHOWN_METADATA = ("source_model", "source_kind", "precision", "input_format", "output_format", "exporter", "opset")


def _html() -> str:
    return (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")


def _json_or_none(raw: dict, key: str):
    try:
        return json.loads(raw[key]) if raw.get(key) else None
    except json.JSONDecodeError:
        return None


def describe(model) -> dict:
    meta = model.meta
    pre = meta.preprocess
    return {
        "name": model.name,
        "inputs": [t.to_dict() for t in model.inputs],
        "outputs": [t.to_dict() for t in model.outputs],
        "labels": list(meta.labels) if meta.labels else None,
        "parity": _json_or_none(meta.raw, "parity"),
        "metadata": {k: meta.raw[k] for k in SHOWN_METADATA if meta.raw.get(k)},
        "classify": pre is not None,  # an image can go to /classify (the server knows the preprocessing)
        "input_size": list(pre.size) if pre else None,
    }


def add_page(app, state, authorize) -> None:
    html = _html()  # read once: package data does not change while serving

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(html, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.get("/page/models", dependencies=[Depends(authorize)], include_in_schema=False)
    async def page_models():
        return JSONResponse({"models": [describe(m) for m in state.models.values()], "ready": state.ready()})
