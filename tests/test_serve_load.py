"""A bounded load test: 2000 requests at concurrency 32 against a small queue. Nothing is lost:
every request gets its own correct answer or an explicit 503 with Retry-After; none hangs."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as th
from serve_fixtures import ServerProcess
from tritonclient.utils import InferenceServerException

N_REQUESTS, CONCURRENCY = 2000, 32


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_2000_requests_at_concurrency_32_lose_nothing(tiny_onnx):
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 3, 3, 64, 64)).astype(np.float32) for i in range(40)]
    sess = ort.InferenceSession(str(tiny_onnx))
    refs = [sess.run(None, {"input": x})[0] for x in inputs]
    local = threading.local()

    with ServerProcess(tiny_onnx, "--max-batch", "32", "--max-queue", "4", "--threads", "1", "--instances", "2") as s:

        def one(i):
            x = inputs[i % len(inputs)]
            if i % 5 == 4:  # every fifth request is plain JSON over httpx
                if not hasattr(local, "http"):
                    local.http = httpx.Client(base_url=s.url, timeout=60)
                body = {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
                    ]
                }
                r = local.http.post("/v2/models/tiny/infer", json=body)
                if r.status_code == 503:
                    assert r.headers.get("retry-after") and "error" in r.json()
                    return "503"
                assert r.status_code == 200, r.text
                got = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(x.shape[0], 3)
            else:
                if not hasattr(local, "client"):
                    local.client = th.InferenceServerClient(s.address, connection_timeout=60, network_timeout=60)
                inp = th.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                try:
                    got = local.client.infer("tiny", [inp]).as_numpy("logits")
                except InferenceServerException as e:
                    assert e.status() == "503", e
                    return "503"
            np.testing.assert_allclose(got, refs[i % len(inputs)], rtol=1e-5, atol=1e-6)
            return "ok"

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = Counter(pool.map(one, range(N_REQUESTS), timeout=540))
        assert sum(outcomes.values()) == N_REQUESTS and set(outcomes) <= {"ok", "503"}, outcomes
        assert outcomes["ok"] >= N_REQUESTS // 4, outcomes
        metrics = httpx.get(s.url + "/metrics").text
        served = sum(
            float(l.split()[-1])
            for l in metrics.splitlines()
            if l.startswith("transferzoo_requests_total{") and 'model="tiny"' in l and 'endpoint="infer"' in l
        )
        assert served == N_REQUESTS  # the server accounted for every one
        assert s.alive()
    print(f"load: {dict(outcomes)}")
