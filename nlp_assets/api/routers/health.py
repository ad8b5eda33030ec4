"""Liveness (the only anonymous route), readiness, metrics, and the docs (a reader's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nlp_assets.api.auth import Principal
from nlp_assets.api.deps import reader
from nlp_assets.api.services import Services, kafka_config, services

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (no credential needed).")
async def healthz() -> dict[str, str]:  # on the event loop: it proves the loop is free
    return {"status": "ok"}


@router.get("/readyz", summary="Postgres, Redis, Kafka and Dagster reachable.")
def readyz(_: Principal = reader, found: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    checks = readiness(found)
    failed = [name for name, state in checks.items() if state not in ("ok", "not configured")]
    body: dict[str, Any] = {"status": "ready" if not failed else "not ready", "checks": checks}
    if failed:
        body["failed"] = failed
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this replica.",
    responses={200: {"content": {"text/plain": {}}}},
)
def prometheus(_: Principal = reader, found: Services = Depends(services)) -> Response:  # noqa: B008
    return Response(generate_latest(found.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Principal = reader) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
def docs(request: Request, _: Principal = reader) -> Response:
    """Swagger UI from the `swagger-ui-bundle-v2` package's files (under /docs/static), so the
    page works where no CDN can be reached. The page and the schema need a reader's credential
    like every route but /healthz (a browser gets there through the ingress's sign-in, which
    adds it); each call made from the page needs its own (Authorize)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": False},
    )


def readiness(found: Services) -> dict[str, str]:
    """Each dependency: ok, not configured, or what failed (never a secret)."""
    config = found.config
    checks: dict[str, str] = {}

    def probe(name: str, configured: bool, check: Callable[[], None]) -> None:
        if not configured:
            checks[name] = "not configured"
            return
        try:
            check()
            checks[name] = "ok"
        except Exception as error:
            from nlp_assets.resources.warehouse import redact_url

            failed = f"failed: {type(error).__name__}: {error}"
            checks[name] = redact_url(failed, keep_user=True)[:300]

    def postgres() -> None:
        import psycopg2

        conn = psycopg2.connect(
            config.database_url, connect_timeout=max(1, int(config.readiness_timeout_s))
        )
        try:
            conn.cursor().execute("SELECT 1")
        finally:
            conn.close()

    def kafka() -> None:
        from confluent_kafka.admin import AdminClient

        AdminClient(kafka_config()).list_topics(timeout=config.readiness_timeout_s)

    def dagster() -> None:
        from nlp_assets.api.backfills import PipelineClient

        PipelineClient.from_url(
            config.dagster_graphql_url or "", timeout=max(1, int(config.readiness_timeout_s))
        ).ping()

    probe("postgres", bool(config.database_url), postgres)
    probe("redis", bool(config.redis_url), found.limiter.ping)
    probe("kafka", bool(config.kafka_bootstrap), kafka)
    probe("dagster", bool(config.dagster_graphql_url), dagster)
    probe("storage", not config.kafka_bootstrap, found.sink.check)
    return checks
