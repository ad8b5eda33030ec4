"""What the routes share: the settings, the key store, authentication, rate limiters, the
sink, the accepted log, the results reader and the metrics (built once in `create_app`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from nlp_assets.api import submit as submitting
from nlp_assets.api.accepted import AcceptedLog, accepted_log
from nlp_assets.api.auth import Authenticator
from nlp_assets.api.config import ApiSettings
from nlp_assets.api.keys import KeyStore, key_store
from nlp_assets.api.metrics import ApiMetrics
from nlp_assets.api.predict import Predictor
from nlp_assets.api.ratelimit import RateLimiter
from nlp_assets.api.results import Results

if TYPE_CHECKING:
    from nlp_assets.api.backfills import PipelineClient


@dataclass
class Services:
    config: ApiSettings
    keys: KeyStore
    auth: Authenticator
    limiter: RateLimiter
    sink: Any
    accepted: AcceptedLog
    results: Results
    metrics: ApiMetrics
    failures: RateLimiter  # failed authentications, per client address
    predictor: Predictor  # POST /v1/predict (models built on its first request)

    def dagster(self) -> PipelineClient:
        from nlp_assets.api.backfills import PipelineClient

        if not self.config.dagster_graphql_url:
            raise HTTPException(
                503, "backfills need NLP_DAGSTER_GRAPHQL_URL (the Dagster webserver's /graphql)"
            )
        return PipelineClient.from_url(self.config.dagster_graphql_url)


def services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    return request.app.state.services


def kafka_config() -> dict[str, Any]:
    from nlp_assets.kafka.resource import kafka_from_env

    return kafka_from_env().client_config()


def build_services(config: ApiSettings) -> Services:
    keys = key_store(config)
    sink: Any
    if config.kafka_bootstrap:
        sink = submitting.KafkaSink(kafka_config(), config.kafka_topic)
    else:
        sink = submitting.LandingSink(config.landing_dir)
    metrics = ApiMetrics()
    return Services(
        config=config,
        keys=keys,
        auth=Authenticator(config, keys),
        limiter=RateLimiter(
            rate=config.rate_per_second,
            burst=config.rate_burst,
            redis_url=config.redis_url,
            prefix=config.redis_prefix,
        ),
        sink=sink,
        accepted=accepted_log(config, submitting.API_LANDING_DIR),
        results=Results(config),
        metrics=metrics,
        failures=RateLimiter(
            rate=config.auth_failure_rate_per_second,
            burst=config.auth_failure_burst,
            redis_url=config.redis_url,
            prefix=f"{config.redis_prefix}:auth-failures",
        ),
        predictor=Predictor(config.lake_dir, metrics.batching),
    )
