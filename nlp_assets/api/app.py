"""The FastAPI app: submit documents, read results, launch and follow backfills.

Run it with ``uvicorn nlp_assets.api.app:create_app --factory`` (`make api`). Endpoints, roles
and settings: docs/api.md. Nothing here logs a request body or a document's text.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, cast

import polars as pl
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from nlp_assets.api import submit as submitting
from nlp_assets.api.accepted import AcceptedLog, accepted_log
from nlp_assets.api.auth import Authenticator, AuthError, Forbidden, Principal, require
from nlp_assets.api.backfills import DagsterUnavailable, NotFound, PipelineClient
from nlp_assets.api.config import PUBLIC_PATHS, SMALL_BODY_BYTES, ApiSettings
from nlp_assets.api.guard import Guard, printable
from nlp_assets.api.keys import KeyStore, key_store
from nlp_assets.api.metrics import ApiMetrics
from nlp_assets.api.ratelimit import RateLimiter, RateLimiterUnavailable
from nlp_assets.api.results import (
    Results,
    frame_csv,
    frame_parquet,
    frame_records,
    parse_day,
)

log = logging.getLogger("nlp_assets.api")
access_log = logging.getLogger("nlp_assets.api.access")

PARQUET = "application/vnd.apache.parquet"
PARQUET_TYPES = (PARQUET, "application/x-parquet", "application/parquet")
MAX_BACKFILL_DAYS = 366
#: The largest `limit` or `offset` a caller may ask for (a day never has more rows).
MAX_ROWS = 100_000_000


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

    def dagster(self) -> PipelineClient:
        if not self.config.dagster_graphql_url:
            raise HTTPException(
                503, "backfills need NLP_DAGSTER_GRAPHQL_URL (the Dagster webserver's /graphql)"
            )
        return PipelineClient.from_url(self.config.dagster_graphql_url)


def _kafka_config() -> dict[str, Any]:
    from nlp_assets.kafka.resource import kafka_from_env

    return kafka_from_env().client_config()


def build_services(config: ApiSettings) -> Services:
    keys = key_store(config)
    sink: Any
    if config.kafka_bootstrap:
        sink = submitting.KafkaSink(_kafka_config(), config.kafka_topic)
    else:
        sink = submitting.LandingSink(config.landing_dir)
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
        metrics=ApiMetrics(),
        failures=RateLimiter(
            rate=config.auth_failure_rate_per_second,
            burst=config.auth_failure_burst,
            redis_url=config.redis_url,
            prefix=f"{config.redis_prefix}:auth-failures",
        ),
    )


# response models (the OpenAPI schema) ----------------------------------------------------
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


class DocumentOutcome(BaseModel):
    index: int = Field(description="Position of the record in the request (0-based).")
    status: str = Field(description="accepted, duplicate (of an earlier record) or rejected.")
    doc_id: str | None = None
    destination: str | None = Field(None, description="kafka:<topic> or landing:<day>/api/<file>")
    reason: str | None = Field(None, description="Why the record was rejected.")


class SubmitResponse(BaseModel):
    accepted: int
    rejected: int
    duplicates: int
    results: list[DocumentOutcome]


class BackfillRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    start: date = Field(alias="from", description="First day (YYYY-MM-DD).")
    end: date = Field(alias="to", description="Last day, inclusive.")


class BackfillResponse(BaseModel):
    backfill_id: str
    partitions: list[str]
    run_ids: list[str]
    status_url: str


def create_app(config: ApiSettings | None = None) -> FastAPI:
    config = config or ApiSettings.from_env()
    services = build_services(config)
    app = FastAPI(
        title="NLP pipeline API",
        version="1",
        description="Submit text, read sentiment and entities, launch backfills. "
        "Authenticate with an API key (`nlp keys create`) or a JWT: Authorize, then "
        "'Bearer <token>'.",
        responses=ERRORS,
        docs_url=None,  # served below from the package's own Swagger UI files, not a CDN
        openapi_url=None,  # served below, to a reader: only /healthz is anonymous
        redoc_url=None,
    )
    app.state.services = services
    if not access_log.handlers:  # uvicorn configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    bearer = HTTPBearer(auto_error=False, description="An API key (nlp_...) or a JWT.")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    metrics = services.metrics

    def refused(request: Request, error: AuthError) -> HTTPException:
        """401, or 429 once this client address has failed too often (guessing is metered)."""
        metrics.rejections.labels("unauthenticated").inc()
        client = request.client.host if request.client else "-"
        try:
            decision = services.failures.take(f"ip:{client}")
        except RateLimiterUnavailable:
            return HTTPException(503, "service unavailable", {"Retry-After": "5"})
        if not decision.allowed:
            metrics.rejections.labels("rate limited").inc()
            return HTTPException(
                429,
                "too many failed authentications from your address: "
                f"retry after {decision.retry_after_s} s",
                {"Retry-After": str(decision.retry_after_s)},
            )
        return HTTPException(401, str(error), {"WWW-Authenticate": "Bearer"})

    def caller(role: str) -> Callable[..., Principal]:
        def dependency(
            request: Request,
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
            api_key: str | None = Depends(header_key),
        ) -> Principal:
            authorization = request.headers.get("authorization")
            try:
                principal = services.auth.authenticate(authorization, api_key)
            except AuthError as error:
                raise refused(request, error) from None
            except Forbidden as error:
                metrics.rejections.labels("forbidden").inc()
                raise HTTPException(403, str(error)) from None
            except ConnectionError as error:  # the key store; its reason is for the server log
                log.warning("credential store unavailable: %s", printable(str(error), 300))
                raise HTTPException(
                    503, "credential store unavailable", {"Retry-After": "5"}
                ) from None
            request.state.principal = principal.subject
            try:
                decision = services.limiter.take(principal.subject)
            except RateLimiterUnavailable as error:
                raise HTTPException(503, str(error), {"Retry-After": "5"}) from None
            if not decision.allowed:
                metrics.rejections.labels("rate limited").inc()
                raise HTTPException(
                    429,
                    f"rate limit of {config.rate_per_second:g}/s (burst {config.rate_burst}) "
                    f"for {principal.subject} exceeded: retry after {decision.retry_after_s} s",
                    {"Retry-After": str(decision.retry_after_s)},
                )
            try:
                require(principal, role)
            except Forbidden as error:
                metrics.rejections.labels("forbidden").inc()
                raise HTTPException(403, str(error)) from None
            return principal

        return dependency

    reader = Depends(caller("reader"))
    submitter = Depends(caller("submitter"))
    operator = Depends(caller("operator"))

    # middleware: caps and refusals before routing (inner), then metrics and an access log
    # without bodies (outer, so it sees the Guard's answers too) ------------------------------
    def body_cap(method: str, path: str) -> int:
        return config.max_body_bytes if path == "/v1/documents" else SMALL_BODY_BYTES

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

    _swagger_ui(app, reader)

    # health ------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], summary="The process is up (no credential needed).")
    async def healthz() -> dict[str, str]:  # on the event loop: it proves the loop is free
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Postgres, Redis, Kafka and Dagster reachable.")
    def readyz(_: Principal = reader) -> JSONResponse:
        checks = readiness(services)
        failed = [name for name, state in checks.items() if state not in ("ok", "not configured")]
        body: dict[str, Any] = {"status": "ready" if not failed else "not ready", "checks": checks}
        if failed:
            body["failed"] = failed
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics of this replica.",
        responses={200: {"content": {"text/plain": {}}}},
    )
    def prometheus(_: Principal = reader) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # documents ---------------------------------------------------------------------------
    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/Document"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/Document"}},
                        ]
                    },
                    "example": {"id": "42", "text": "Great service, thank you!", "source": "web"},
                },
                "application/x-ndjson": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    }

    @app.post(
        "/v1/documents",
        tags=["documents"],
        status_code=202,
        response_model=SubmitResponse,
        summary="Submit one document, a batch (JSON array) or an NDJSON upload.",
        description="Each record is validated like a Kafka message of the raw stage (a JSON "
        "object with `id` and `text`; optional `source`, `timestamp`, `priority`, `metadata`). "
        "202 when at least one record was accepted; 422 when none was; each entry of `results` "
        "says what became of its record. 413 past the body or batch cap.",
        openapi_extra=body_doc,
        responses={
            422: {"model": SubmitResponse, "description": "No record accepted (see results)"}
        },
    )
    async def post_documents(request: Request, principal: Principal = submitter) -> JSONResponse:
        content_type = request.headers.get("content-type", "application/json")
        body = await _read_body(request, config, metrics, content_type)
        if content_type.lower().startswith("multipart/form-data"):
            request._body = body  # the form parser reads the bounded body, not the socket
            body, content_type = await _multipart_file(request, config.max_body_bytes)
        try:  # parsing is CPU work: off the event loop, stopped at the record cap
            items = await run_in_threadpool(
                submitting.split_body, body, content_type, max_batch=config.max_batch
            )
        except submitting.BodyError as error:
            metrics.rejections.labels("batch too large" if error.too_large else "bad body").inc()
            raise HTTPException(413 if error.too_large else 400, str(error)) from None
        try:
            checked = await run_in_threadpool(
                submitting.validate,
                items,
                source=config.default_source,
                max_record_bytes=config.max_record_bytes,
                channels=principal.channels,
            )
        except submitting.ChannelRefused as error:
            metrics.rejections.labels("forbidden").inc()
            raise HTTPException(403, str(error)) from None
        if checked.records:
            # `validate` sends only records whose doc_id it computed: none is None
            ids = cast("list[str]", [o.doc_id for o in checked.sent])
            try:
                where = await run_in_threadpool(services.sink.send, checked.records, ids)
            except submitting.SinkUnavailable as error:
                raise HTTPException(503, str(error), {"Retry-After": "5"}) from None
            for outcome in checked.sent:
                outcome.destination = where
            metrics.accepted.labels(services.sink.name).inc(len(checked.records))
            try:
                await run_in_threadpool(services.accepted.record, ids, where)
            except Exception as error:  # sent all the same: the status says so once processed
                log.warning(
                    "could not record %d accepted documents: %s", len(ids), type(error).__name__
                )
        counts = {"accepted": 0, "rejected": 0, "duplicate": 0}
        for outcome in checked.outcomes:
            counts[outcome.status] += 1
            if outcome.status == "rejected":
                metrics.rejections.labels(submitting.reason_label(outcome.reason or "")).inc()
        return JSONResponse(
            {
                "accepted": counts["accepted"],
                "rejected": counts["rejected"],
                "duplicates": counts["duplicate"],
                "results": [o.as_json() for o in checked.outcomes],
            },
            status_code=202 if counts["accepted"] or counts["duplicate"] else 422,
        )

    @app.get(
        "/v1/documents/{doc_id}",
        tags=["documents"],
        summary="A document's status: processed (with its prediction), quarantined, accepted.",
    )
    def get_document(doc_id: str, _: Principal = reader) -> dict[str, Any]:
        if not doc_id.isalnum() or len(doc_id) > 64:
            raise HTTPException(400, "doc_id is the 16 hex digits a submission returned")
        prediction = services.results.prediction(doc_id)
        if prediction is not None:
            return {
                "doc_id": doc_id,
                "status": "processed",
                "day": prediction.get("ingest_date"),
                "prediction": prediction,
            }
        quarantined = services.results.quarantined(doc_id)
        if quarantined is not None:
            return {"doc_id": doc_id, "status": "quarantined", **quarantined}
        accepted = services.accepted.lookup(doc_id)
        if accepted is not None:  # sent on, not yet processed
            where = accepted["destination"]  # landing:<day>/api/<part> or kafka:<topic>
            day = where.split(":", 1)[1].split("/", 1)[0] if where.startswith("landing:") else None
            return {"doc_id": doc_id, "status": "accepted", "day": day, **accepted}
        raise HTTPException(
            404,
            f"no prediction, quarantine row or accepted submission for {doc_id} in the last "
            f"{config.lookup_days} days: never submitted through this API, or submitted to "
            "Kafka without DATABASE_URL and not yet processed",
        )

    # a day's results -----------------------------------------------------------------------
    def day_or_400(day: str) -> str:
        try:
            return parse_day(day)
        except ValueError as error:
            raise HTTPException(400, str(error)) from None

    @app.get(
        "/v1/days/{day}/predictions",
        tags=["results"],
        summary="A day's predictions: JSON (paged), CSV or Parquet by Accept.",
        responses={
            200: {"content": {"text/csv": {}, PARQUET: {}, "application/json": {}}},
            406: {"description": "No format of Accept", "content": {"text/plain": {}}},
        },
    )
    def get_predictions(
        request: Request,
        day: str,
        source: str | None = None,
        language: str | None = None,
        label: str | None = Query(None, description="positive or negative"),
        limit: int | None = Query(
            None, ge=1, le=MAX_ROWS, description="JSON default 100; files: all"
        ),
        offset: int = Query(0, ge=0, le=MAX_ROWS),
        _: Principal = reader,
    ) -> Response:
        frame = services.results.predictions(
            day_or_400(day), source=source, language=language, label=label
        )
        return _respond(request, frame, limit, offset, config.max_page_size)

    @app.get(
        "/v1/days/{day}/aggregates",
        tags=["results"],
        summary="A day's aggregates (day x language x label): JSON, CSV or Parquet by Accept.",
        responses={
            200: {"content": {"text/csv": {}, PARQUET: {}, "application/json": {}}},
            406: {"description": "No format of Accept", "content": {"text/plain": {}}},
        },
    )
    def get_aggregates(request: Request, day: str, _: Principal = reader) -> Response:
        frame = services.results.aggregates(day_or_400(day))
        return _respond(request, frame, None, 0, config.max_page_size)

    @app.get(
        "/v1/days/{day}/report",
        tags=["results"],
        summary="A day's HTML report.",
        responses={200: {"content": {"text/html": {}}}},
    )
    def get_report(day: str, _: Principal = reader) -> FileResponse:
        path = services.results.report_path(day_or_400(day))
        if path is None:
            raise HTTPException(404, f"no report for {day}: materialise that day's reports first")
        return FileResponse(path, media_type="text/html")

    # backfills and runs --------------------------------------------------------------------
    @app.post(
        "/v1/backfills",
        tags=["backfills"],
        status_code=202,
        response_model=BackfillResponse,
        summary="Backfill the daily pipeline for a day range (through the Dagster webserver).",
    )
    def post_backfill(
        request: BackfillRequest, principal: Principal = operator
    ) -> BackfillResponse:
        if request.end < request.start:
            raise HTTPException(422, f"'to' ({request.end}) is before 'from' ({request.start})")
        count = (request.end - request.start).days + 1  # checked before any work per day
        if count > MAX_BACKFILL_DAYS:
            raise HTTPException(422, f"{count} days; backfill at most {MAX_BACKFILL_DAYS}")
        days = [(request.start + timedelta(days=i)).isoformat() for i in range(count)]
        client = services.dagster()
        try:
            launched = client.launch_backfill(
                config.dagster_job, days, {"nlp/requested_by": principal.subject}
            )
        except DagsterUnavailable as error:
            raise HTTPException(503, str(error), {"Retry-After": "10"}) from None
        except ValueError as error:  # partitions outside the job's partitions definition
            raise HTTPException(422, str(error)) from None
        return BackfillResponse(
            backfill_id=launched.backfill_id,
            partitions=launched.partitions,
            run_ids=launched.run_ids,
            status_url=f"/v1/runs/{launched.backfill_id}",
        )

    @app.get("/v1/runs/{run_id}", tags=["backfills"], summary="A run's or a backfill's status.")
    def get_run(run_id: str, _: Principal = operator) -> dict[str, Any]:
        if not run_id.replace("-", "").isalnum() or len(run_id) > 64:
            raise HTTPException(400, "run_id is a Dagster run id or backfill id")
        try:
            return services.dagster().lookup(run_id)
        except NotFound as error:
            raise HTTPException(404, str(error)) from None
        except DagsterUnavailable as error:
            raise HTTPException(503, str(error), {"Retry-After": "10"}) from None

    _document_schema(app)
    return app


def _swagger_ui(app: FastAPI, reader: Any) -> None:
    """`/docs`: Swagger UI from the `swagger-ui-bundle-v2` package's files (served under
    /docs/static), so the page works where no CDN can be reached. The page and the schema need a
    reader's credential like every route but /healthz (a browser gets there through the
    ingress's sign-in, which adds it); each call made from the page needs its own (Authorize)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Principal = reader) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Principal = reader) -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )


def _document_schema(app: FastAPI) -> None:
    """The Document schema referenced by the submit endpoint's request body."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Document"] = {
            "type": "object",
            "required": ["id", "text"],
            "properties": {
                "id": {"type": ["string", "integer"], "description": "Your id for it."},
                "text": {"type": "string"},
                "source": {"type": "string", "description": "Default: api"},
                "timestamp": {"type": ["string", "integer"], "description": "ISO 8601 or epoch"},
                "priority": {"type": "integer"},
                "metadata": {"type": "object"},
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _read_body(
    request: Request, config: ApiSettings, metrics: ApiMetrics, content_type: str
) -> bytes:
    """The body (the Guard has refused it with 413 as soon as it passed the byte cap). NDJSON
    lines are counted as they stream in, so the record cap stops a long upload early too."""
    ndjson = content_type.split(";")[0].strip().lower() in submitting.NDJSON_TYPES
    chunks: list[bytes] = []
    newlines, check_at = 0, config.max_batch
    async for chunk in request.stream():
        chunks.append(chunk)
        if ndjson:
            newlines += chunk.count(b"\n")
            if newlines > check_at:  # blank lines do not count: check exactly, now and then
                check_at = newlines * 2
                lines = sum(1 for line in b"".join(chunks).split(b"\n") if line.strip())
                if lines > config.max_batch:
                    metrics.rejections.labels("batch too large").inc()
                    raise HTTPException(
                        413,
                        f"more than {config.max_batch} documents in one request; send at "
                        f"most {config.max_batch} per request",
                    )
    return b"".join(chunks)


async def _multipart_file(request: Request, cap: int) -> tuple[bytes, str]:
    """The one file of a multipart upload (field `file`), as NDJSON."""
    try:
        form = await request.form(max_files=1, max_fields=5, max_part_size=cap)
    except Exception as error:  # malformed multipart
        raise HTTPException(400, f"invalid multipart body: {error}"[:300]) from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "multipart upload needs a file in the field 'file'")
    return await upload.read(), "application/x-ndjson"


def _respond(
    request: Request, frame: pl.DataFrame, limit: int | None, offset: int, max_page: int
) -> Response:
    accept = request.headers.get("accept", "application/json").lower()
    total = frame.height
    if any(kind in accept for kind in PARQUET_TYPES):
        page = frame.slice(offset, limit) if limit else frame.slice(offset)
        return Response(
            frame_parquet(page), media_type=PARQUET, headers={"X-Total-Count": str(total)}
        )
    if "text/csv" in accept:
        page = frame.slice(offset, limit) if limit else frame.slice(offset)
        return Response(
            frame_csv(page), media_type="text/csv", headers={"X-Total-Count": str(total)}
        )
    if accept not in ("", "*/*") and "json" not in accept and "*/*" not in accept:
        return PlainTextResponse(
            f"cannot produce {accept[:80]}: ask for application/json, text/csv or {PARQUET}",
            status_code=406,
        )
    size = min(limit or 100, max_page)
    page = frame.slice(offset, size)
    next_offset = offset + size if offset + size < total else None
    return JSONResponse(
        {
            "total": total,
            "offset": offset,
            "limit": size,
            "next_offset": next_offset,
            "items": frame_records(page),
        },
        headers={"X-Total-Count": str(total)},
    )


def readiness(services: Services) -> dict[str, str]:
    """Each dependency: ok, not configured, or what failed (never a secret)."""
    config = services.config
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

        AdminClient(_kafka_config()).list_topics(timeout=config.readiness_timeout_s)

    def dagster() -> None:
        PipelineClient.from_url(
            config.dagster_graphql_url or "", timeout=max(1, int(config.readiness_timeout_s))
        ).ping()

    probe("postgres", bool(config.database_url), postgres)
    probe("redis", bool(config.redis_url), services.limiter.ping)
    probe("kafka", bool(config.kafka_bootstrap), kafka)
    probe("dagster", bool(config.dagster_graphql_url), dagster)
    probe("storage", not config.kafka_bootstrap, services.sink.check)
    return checks
