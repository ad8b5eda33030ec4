"""Prometheus metrics of the API, in their own registry (the pipeline's are elsewhere)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from nlp_assets.api.predict import BATCH_TEXTS
from nlp_assets.resources.models.batching import BatchMetrics


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
        self.batching = BatchMetrics(
            "nlp_api_predict",
            "route",
            self.registry,
            requests="Requests",
            rows="Texts",
            call="POST /v1/predict kernel call",
            max_rows=BATCH_TEXTS,
        )
