"""Prometheus metrics of one service instance (its own registry: no global state)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kie_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.errors = Counter(
            "kie_errors", "Failed requests by endpoint and kind", ["endpoint", "kind"], registry=r
        )
        self.latency = Histogram(
            "kie_request_latency_seconds",
            "Request latency (whole request) by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.extraction_latency = Histogram(
            "kie_extraction_latency_seconds",
            "Latency of successful extractions (image preparation + model + parsing)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.parse = Counter(
            "kie_parse", "Parse outcome of model outputs", ["method", "truncated"], registry=r
        )
        self.in_flight = Gauge(
            "kie_in_flight", "Model calls running (timed-out ones included)", registry=r
        )
        self.queued = Gauge("kie_queued", "Requests waiting for an extraction slot", registry=r)
        self.admitted = Gauge(
            "kie_admitted", "Requests inside the service (body reading included)", registry=r
        )
        self.abandoned = Gauge(
            "kie_abandoned",
            "Model calls still running whose request was answered 504 (they keep their slot)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
