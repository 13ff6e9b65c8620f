"""Prometheus metrics (prometheus_client, one registry per server): requests by model, endpoint
and outcome; latency, queue-time and batch-size histograms; in-flight gauge."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series: they double the output and nobody here reads them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

UNKNOWN_MODEL = "-"  # label for requests naming no served model (keeps label cardinality bounded)


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 503 or status == 429:
        return "rejected"
    if status == 504:
        return "timeout"
    return "client_error" if status < 500 else "error"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "transferzoo_requests",
            "Requests by model, endpoint and outcome",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "transferzoo_request_latency_seconds",
            "Time from request start to response, per model and endpoint",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "transferzoo_queue_time_seconds",
            "Time a request waited in the batching queue",
            ["model"],
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "transferzoo_batch_size", "Rows per onnxruntime run", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inflight = Gauge("transferzoo_inflight_requests", "Requests being handled now", ["model"], registry=r)
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels):
        """metric.labels(*labels), looked up once: labels() takes a lock and builds a key on every
        call, and these run on every request (label values are bounded: models x endpoints x outcomes)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def inflight_for(self, model: str):
        return self._child(self.inflight, model)

    def observe_request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self._child(self.requests, model, endpoint, outcome_for(status)).inc()
        self._child(self.latency, model, endpoint).observe(seconds)

    def observe_batch(self, model: str, rows: int, queue_times: list[float]) -> None:
        self._child(self.batch_size, model).observe(rows)
        h = self._child(self.queue_time, model)
        for t in queue_times:
            h.observe(t)

    def render(self) -> bytes:
        return generate_latest(self.registry)
