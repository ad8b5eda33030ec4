"""Prometheus metrics of the API, in their own registry (the pipeline's are elsewhere)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nlp_api_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nlp_api_request_seconds",
            "Request latency by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.rejections = Counter(
            "nlp_api_rejections",
            "Refused documents and requests by reason kind (validation, auth, caps, limits).",
            ["reason"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "nlp_api_documents_accepted",
            "Documents accepted, by destination (kafka or landing).",
            ["destination"],
            registry=self.registry,
        )
        # POST /v1/predict's batching (resources/models/batching.py), labelled by route
        self.queue_depth = Gauge(
            "nlp_api_predict_queue_depth",
            "POST /v1/predict requests waiting for the next kernel call.",
            ["route"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "nlp_api_predict_batch_rows",
            "Texts per kernel call of POST /v1/predict.",
            ["route"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "nlp_api_predict_batch_requests",
            "POST /v1/predict requests answered by one kernel call (batching across callers).",
            ["route"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "nlp_api_predict_batch_seconds",
            "Seconds per kernel call of POST /v1/predict.",
            ["route"],
            registry=self.registry,
        )
