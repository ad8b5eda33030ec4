"""The FastAPI app: submit documents, read results, launch and follow backfills.

Run it with ``uvicorn nlp_assets.api.app:create_app --factory`` (`make api`), or over TLS with
``python -m nlp_assets.api.serve``. Endpoints, roles and settings: docs/api.md. The routes live
in `nlp_assets.api.routers` (one router per concern); here the app is put together: the Guard
(caps and refusals before routing), metrics and the access log, error handlers, the routers.
Nothing here logs a request body or a document's text.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from nlp_assets import logs, tracing
from nlp_assets.api.config import BODY_PATHS, PUBLIC_PATHS, SMALL_BODY_BYTES, ApiSettings
from nlp_assets.api.guard import Guard, printable
from nlp_assets.api.routers import backfills, documents, health, predict, results
from nlp_assets.api.services import Services, build_services

log = logging.getLogger("nlp_assets.api")
access_log = logging.getLogger("nlp_assets.api.access")

__all__ = ["Services", "create_app"]


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="What was wrong: a sentence, or one entry per invalid field (422)."
    )


#: The error answers every route may give (docs/api.md), so a client and schemathesis know them.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Unusable request (a control character in the path or query, a bad value)"),
        (401, "No valid credential"),
        (403, "Role too low, or a channel the credential is not bound to"),
        (404, "Not found"),
        (413, "Body or batch over its cap"),
        (422, "Invalid parameters or body"),
        (429, "Rate limited (see Retry-After)"),
        (503, "A dependency is unavailable (see Retry-After)"),
    )
}


def create_app(config: ApiSettings | None = None) -> FastAPI:
    config = config or ApiSettings.from_env()
    services = build_services(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        services.predictor.close()  # its batching thread ends after the queued requests

    app = FastAPI(
        lifespan=lifespan,
        title="NLP pipeline API",
        version="1",
        description="Submit text, read sentiment and entities, launch backfills. "
        "Authenticate with an API key (`nlp keys create`) or a JWT: Authorize, then "
        "'Bearer <token>'.",
        responses=ERRORS,
        docs_url=None,  # served by the health router from the package's own files, no CDN
        openapi_url=None,  # served by the health router, to a reader: only /healthz is anonymous
        redoc_url=None,
    )
    app.state.services = services
    # uvicorn configures only its own loggers: ours, the access log and uvicorn's in
    # NLP_LOG_FORMAT, secrets redacted (nlp_assets/logs.py)
    logs.configure()
    metrics = services.metrics

    # middleware: caps and refusals before routing (inner), then metrics and an access log
    # without bodies (outer, so it sees the Guard's answers too) ------------------------------
    def body_cap(method: str, path: str) -> int:
        return config.max_body_bytes if path in BODY_PATHS else SMALL_BODY_BYTES

    app.add_middleware(
        Guard,
        body_cap=body_cap,
        public=PUBLIC_PATHS,
        on_refusal=lambda reason: metrics.rejections.labels(reason).inc(),
    )

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", None) or "unmatched"
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
            access_log.info(  # caller text escaped: no control character reaches the log
                "%s %s %s %d %.1fms %s",
                request.client.host if request.client else "-",
                printable(request.method, 16),
                printable(request.scope["path"]),  # as sent: URL parsing drops \n
                status,
                elapsed * 1000,
                printable(getattr(request.state, "principal", "-")),
            )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError):
        # pydantic puts the offending input in each error: never echo a body back
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in error.errors()
        ]
        metrics.rejections.labels("invalid request").inc()
        return JSONResponse({"detail": details}, status_code=422)

    @app.exception_handler(ConnectionError)
    async def unavailable(_request: Request, error: ConnectionError):
        return JSONResponse({"detail": str(error)}, 503, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal(_request: Request, error: Exception):
        incident = uuid.uuid4().hex[:12]
        log.error("unhandled %s (incident %s)", type(error).__name__, incident, exc_info=error)
        return JSONResponse(
            {"detail": f"internal error (incident {incident}); the server log has it"}, 500
        )

    _swagger_files(app)
    for router in (
        health.router,
        documents.router,
        predict.router,
        results.router,
        backfills.router,
    ):
        app.include_router(router)
    document_schema(app)
    if tracing.configure("nlp-api"):  # OTEL_EXPORTER_OTLP_ENDPOINT set: a span per request
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            excluded_urls="healthz,readyz,metrics",
            exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
        )
    return app


def _swagger_files(app: FastAPI) -> None:
    """Swagger UI's files from the `swagger-ui-bundle-v2` package, under /docs/static."""
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")


def document_schema(app: FastAPI) -> None:
    """The Document schema referenced by the submit endpoint's request body."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Document"] = documents.DOCUMENT_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
