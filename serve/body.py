"""Reading a request body within a size limit, before and after Content-Encoding (gzip, deflate):
a body or a decompressed body over the limit is a 413 as soon as it crosses it, never buffered.

Memory follows the bytes that arrived, not the ones announced: the buffer grows as data comes in, so
a client that declares Content-Length: 64 MB and sends nothing holds nothing. The whole body must
arrive within `timeout_s` (408 after), so a slow or idle client cannot hold a connection and its
buffer forever. Inflating runs on a worker thread (zlib releases the GIL): a bomb that takes 200 ms
to reach the limit does not stall the event loop, health checks included."""

from __future__ import annotations

import asyncio
import zlib

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, BodyTimeout, PayloadTooLarge, UnsupportedMediaType

CHUNK = 1 << 16
STEP = 1 << 20  # most bytes inflated per zlib call
INLINE_INFLATE_BYTES = 1 << 14  # compressed bodies larger than this are inflated on a worker thread


def _too_large(limit: int, what: str = "request body") -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes")


async def read_raw(request: Request, limit: int, timeout_s: float | None = None) -> bytearray:
    declared = request.headers.get("content-length")
    size = None
    if declared is not None:
        if not declared.strip().isdigit() or len(declared.strip()) > 20:
            raise BadRequest(f"Content-Length is not a number: {declared[:40]!r}")
        size = int(declared)
        if size > limit:
            raise _too_large(limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _receive(request, limit, size)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout_s:g} s") from None


async def _receive(request: Request, limit: int, size: int | None) -> bytearray:
    """The body, in a buffer grown as chunks arrive (never sized from the header alone); bytearray
    growth is amortised, so a large body costs a few reallocations, not one per chunk."""
    buf = bytearray()
    cap = limit if size is None else size
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                if size is None:
                    raise _too_large(limit)
                raise BadRequest("request body is longer than its Content-Length")
    except ClientDisconnect:
        raise BadRequest("client disconnected before sending the whole body") from None
    if size is not None and len(buf) != size:
        raise BadRequest("client disconnected before sending the whole body")
    return buf


def decompress(data: bytes | bytearray, encoding: str, limit: int) -> bytes | bytearray:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":  # zlib-wrapped (what the RFC and tritonclient mean) or raw; 32+ auto-detects zlib/gzip
        wbits = 32 + zlib.MAX_WBITS if data[:1] in (b"\x78", b"\x1f") else -zlib.MAX_WBITS
    else:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)")
    d = zlib.decompressobj(wbits)
    out = bytearray()
    view = memoryview(data)
    try:
        for i in range(0, len(data), CHUNK):
            piece = view[i : i + CHUNK]
            while True:
                # at most STEP bytes per call: 64 KB of a bomb inflates to 64 MB, and the copy into `out`
                # holds the GIL; small steps keep every other thread (the event loop) running
                out += d.decompress(piece, min(STEP, limit + 1 - len(out)))
                if len(out) > limit:
                    raise _too_large(limit, "decompressed request body")
                piece = d.unconsumed_tail
                if not piece:
                    break
        out += d.flush()
    except zlib.error as e:
        raise BadRequest(f"corrupt {encoding} body: {e}") from None
    if len(out) > limit:
        raise _too_large(limit, "decompressed request body")
    if not d.eof:
        raise BadRequest(f"truncated {encoding} body")
    if d.unused_data:
        raise BadRequest(f"{len(d.unused_data)} bytes of garbage after the {encoding} stream")
    return out


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes | bytearray:
    raw = await read_raw(request, limit, timeout_s)
    encoding = request.headers.get("content-encoding", "")
    if encoding.strip().lower() in ("", "identity"):
        return raw
    if len(raw) > INLINE_INFLATE_BYTES:
        return await run_in_threadpool(decompress, raw, encoding, limit)
    return decompress(raw, encoding, limit)
