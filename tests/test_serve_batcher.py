"""The dynamic batcher on its own: concurrent callers get their own rows back, batches respect
max_batch (a request that does not fit is carried to the next batch), several instances run
batches at the same time, a full queue is 503, a timed-out request is 504 and skipped, and a lone
request does not wait for company."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from transferzoo.serve.batcher import Batcher
from transferzoo.serve.errors import BadRequest, Overloaded, RequestTimeout
from transferzoo.serve.metrics import Metrics
from transferzoo.serve.model import Model


class SlowModel:
    """Wraps a Model; records batch sizes and how many runs overlapped; optionally sleeps to hold the worker."""

    def __init__(self, model: Model, delay: float = 0.0):
        self.m, self.delay, self.batches = model, delay, []
        self.name, self.batched = model.name, model.batched
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def run(self, feeds):
        with self.lock:
            self.batches.append(next(iter(feeds.values())).shape[0])
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.delay)
        try:
            return self.m.run(feeds)
        finally:
            with self.lock:
                self.running -= 1


def _x(rows, seed):
    return np.random.default_rng(seed).standard_normal((rows, 3, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("instances", [1, 2])
def test_concurrent_callers_get_their_own_rows(tiny_onnx, instances):
    model = SlowModel(Model(tiny_onnx, threads=1), delay=0.02)
    ref = ort.InferenceSession(str(tiny_onnx))
    b = Batcher(model, max_batch=8, max_delay_s=0.005, max_queue=100, metrics=Metrics(), instances=instances)
    b.start()
    xs = [_x(1 + i % 3, i) for i in range(30)]

    async def go():
        return await asyncio.gather(*(b.submit({"input": x}, 30) for x in xs))

    outs = asyncio.run(go())
    b.stop()
    assert not any(t.is_alive() for t in b._threads)  # every worker ended
    assert model.most_running == instances  # one run at a time per instance, and the instances overlap
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["logits"], ref.run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)
    assert sum(model.batches) == sum(x.shape[0] for x in xs)
    assert max(model.batches) <= 8 and max(model.batches) > 3  # batched, never over the limit


def test_limits_queue_timeout_and_no_wait_when_alone(tiny_onnx):
    model = SlowModel(Model(tiny_onnx, threads=1), delay=0.3)
    b = Batcher(model, max_batch=4, max_delay_s=0.5, max_queue=2)
    b.start()

    async def go():
        with pytest.raises(BadRequest, match="max-batch"):
            await b.submit({"input": _x(5, 0)}, 5)
        t0 = time.perf_counter()
        await b.submit({"input": _x(1, 0)}, 5)  # alone: runs at once, does not sit out max_delay (0.5 s)
        alone = time.perf_counter() - t0
        first = asyncio.ensure_future(b.submit({"input": _x(1, 1)}, 5))  # occupies the worker
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit({"input": _x(1, 2)}, 0.1)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as e:
            await b.submit({"input": _x(1, 3)}, 5)
        assert e.value.headers["Retry-After"]
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        return alone, results

    alone, results = asyncio.run(go())
    b.stop()
    assert alone < 0.3 + 0.15
    assert isinstance(results[0], dict)
    assert all(isinstance(r, RequestTimeout) for r in results[1:])
    assert model.batches == [1, 1]  # the timed-out requests were skipped, not run
