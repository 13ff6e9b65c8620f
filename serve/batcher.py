"""Dynamic batching: worker threads per model (`instances`, Triton's instance count) run
onnxruntime on batches of queued requests, so the event loop never blocks on inference.

Policy: the worker takes every request already queued (up to max_batch rows). It waits up to
max_delay for more only while other requests for the model are still arriving (being received or
decoded by the server): at concurrency 1 a request never waits for company that is not coming, and
under load the queue that builds while a batch runs forms the next batch. With several instances one
worker at a time forms a batch (the others run theirs meanwhile); they share one onnxruntime
session, whose run() is thread-safe, so the weights are held once. The queue is bounded
(full -> Overloaded, 503); a request that times out is skipped if it has not started running.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import BadRequest, Overloaded, RequestTimeout
from .model import Model

log = logging.getLogger("serve.batcher")


@dataclass(eq=False)
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    abandoned: bool = False  # the caller timed out or went away: do not run it


class Arrival:
    """A request being received for a batcher; close() (idempotent) when it is queued or dropped."""

    def __init__(self, batcher: "Batcher"):
        self.batcher, self.open = batcher, True
        batcher._arriving_add(1)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.batcher._arriving_add(-1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _deliver(fut: asyncio.Future, result=None, exc: BaseException | None = None) -> None:
    if fut.done():  # cancelled by a timeout meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class Batcher:
    def __init__(
        self, model: Model, max_batch: int, max_delay_s: float, max_queue: int, metrics=None, instances: int = 1
    ):
        assert instances >= 1
        self.model, self.max_delay_s, self.metrics = model, max_delay_s, metrics
        self.max_rows = max_batch if model.batched else 1
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._carry: _Item | None = None
        self._arriving = 0
        self._lock = threading.Lock()
        self._forming = threading.Lock()  # held by the worker that is forming a batch (owns _carry)
        self._threads = [
            threading.Thread(target=self._work, name=f"batcher-{model.name}-{i}", daemon=True) for i in range(instances)
        ]
        self._stopped = False

    # --- event-loop side -------------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def announce(self) -> "Arrival":
        """Say that a request for this model is being received/decoded (see the module's policy)."""
        return Arrival(self)

    def _arriving_add(self, delta: int) -> None:
        with self._lock:
            self._arriving += delta

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    async def submit(
        self, feeds: dict[str, np.ndarray], timeout_s: float, arrival: "Arrival | None" = None
    ) -> dict[str, np.ndarray]:
        """Queue one request (rows along dim 0 of every input) and wait for its own rows of output."""
        if arrival is not None:
            arrival.close()
        rows = next(iter(feeds.values())).shape[0] if self.model.batched else 1
        if self.model.batched and rows > self.max_rows:
            raise BadRequest(f"batch of {rows} exceeds this server's --max-batch {self.max_rows}; split the request")
        if self._stopped:
            raise Overloaded("server is shutting down", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        item = _Item(feeds, rows, loop, loop.create_future())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded(
                f"model {self.model.name!r} has {self._queue.maxsize} requests queued; retry shortly",
                {"Retry-After": "1"},
            ) from None
        try:
            return await asyncio.wait_for(item.future, timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"no result within {timeout_s:g} s (server busy); retry or raise --timeout-s"
            ) from None
        finally:
            item.abandoned = True  # harmless once done; skips the run if it has not started

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued, then end the workers."""
        self._stopped = True
        if any(t.is_alive() for t in self._threads):
            self._queue.put(None)  # each worker that meets it puts it back for the next
            deadline = time.monotonic() + timeout_s
            for t in self._threads:
                t.join(max(0.0, deadline - time.monotonic()))

    # --- worker side -----------------------------------------------------------------------
    def _next(self, block: bool, timeout: float | None = None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        return self._queue.get(block, timeout)

    def _collect(self, first: _Item) -> list[_Item]:
        batch, rows = [first], first.rows
        deadline = first.enqueued + self.max_delay_s
        while rows < self.max_rows:
            try:
                item = self._next(block=False)
            except queue.Empty:
                wait = deadline - time.perf_counter()
                if wait <= 0 or self._arriving <= 0:
                    break
                try:
                    item = self._next(block=True, timeout=min(wait, 0.0005))
                except queue.Empty:
                    continue
            if item is None:  # stop sentinel: put back for the main loop
                self._queue.put(None)
                break
            if rows + item.rows > self.max_rows:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    def _work(self) -> None:
        while True:
            with self._forming:
                first = self._next(block=True)
                if first is None:
                    self._queue.put(None)
                    return
                batch = [it for it in self._collect(first) if not it.abandoned]
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        names = list(batch[0].feeds)
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {n: np.concatenate([it.feeds[n] for it in batch]) for n in names}
            out = self.model.run(feeds)
        except Exception as e:  # a failure in one batch is reported to its callers, never kills the worker
            log.exception("onnxruntime failed on a batch of %d", len(batch))
            for it in batch:
                it.loop.call_soon_threadsafe(_deliver, it.future, None, RuntimeError(f"inference failed: {e}"))
            return
        if self.metrics is not None:
            self.metrics.observe_batch(
                self.model.name, sum(it.rows for it in batch), [start - it.enqueued for it in batch]
            )
        offset = 0
        for it in batch:
            if self.model.batched:
                part = {k: v[offset : offset + it.rows] for k, v in out.items()}
            else:
                part = out
            offset += it.rows
            it.loop.call_soon_threadsafe(_deliver, it.future, part)
