"""Submitting documents and asking after one (a submitter submits, a reader looks up)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from nlp_assets import tracing
from nlp_assets.api import submit as submitting
from nlp_assets.api.auth import Principal
from nlp_assets.api.config import ApiSettings
from nlp_assets.api.deps import reader, submitter
from nlp_assets.api.metrics import ApiMetrics
from nlp_assets.api.services import Services, services

log = logging.getLogger("nlp_assets.api")
router = APIRouter(tags=["documents"])


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


#: The Document schema (`components.schemas.Document`, added by `app.document_schema`).
DOCUMENT_SCHEMA = {
    "type": "object",
    "required": ["id", "text"],
    "properties": {
        "id": {"type": ["string", "integer"], "description": "Your id for it."},
        "text": {"type": "string"},
        "source": {
            "type": "string",
            "description": "The channel; one the credential is bound to (default: its first).",
        },
        "timestamp": {"type": ["string", "integer"], "description": "ISO 8601 or epoch"},
        "priority": {"type": "integer"},
        "metadata": {"type": "object"},
    },
}

BODY_DOC = {
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


@router.post(
    "/v1/documents",
    status_code=202,
    response_model=SubmitResponse,
    summary="Submit one document, a batch (JSON array) or an NDJSON upload.",
    description="Each record is validated like a Kafka message of the raw stage (a JSON "
    "object with `id` and `text`; optional `source`, `timestamp`, `priority`, `metadata`). "
    "202 when at least one record was accepted; 422 when none was; each entry of `results` "
    "says what became of its record. 403 when a record names a channel the credential is not "
    "bound to. 413 past the body or batch cap.",
    openapi_extra=BODY_DOC,
    responses={422: {"model": SubmitResponse, "description": "No record accepted (see results)"}},
)
async def post_documents(
    request: Request,
    principal: Principal = submitter,
    found: Services = Depends(services),  # noqa: B008
) -> JSONResponse:
    config, metrics = found.config, found.metrics
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
        # the request's span (FastAPI instrumentation) travels with each document
        traceparent = tracing.current_traceparent()
        for record in checked.records:
            record.pop("traceparent", None)  # never a caller's: the API's span is the parent
            if traceparent:
                record["traceparent"] = traceparent
        try:
            where = await run_in_threadpool(found.sink.send, checked.records, ids)
        except submitting.SinkUnavailable as error:
            raise HTTPException(503, str(error), {"Retry-After": "5"}) from None
        for outcome in checked.sent:
            outcome.destination = where
        metrics.accepted.labels(found.sink.name).inc(len(checked.records))
        try:
            await run_in_threadpool(found.accepted.record, ids, where)
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


@router.get(
    "/v1/documents/{doc_id}",
    summary="A document's status: processed (with its prediction), quarantined, accepted.",
)
def get_document(
    doc_id: str,
    _: Principal = reader,
    found: Services = Depends(services),  # noqa: B008
) -> dict[str, Any]:
    if not doc_id.isalnum() or len(doc_id) > 64:
        raise HTTPException(400, "doc_id is the 16 hex digits a submission returned")
    # one index probe; the day it names bounds the lake reads (none: the last N days)
    accepted = found.accepted.lookup(doc_id)
    days = ingest_days(accepted) if accepted is not None else None
    prediction = found.results.prediction(doc_id, days)
    if prediction is not None:
        return {
            "doc_id": doc_id,
            "status": "processed",
            "day": prediction.get("ingest_date"),
            **found.results.trace(doc_id, prediction.get("ingest_date")),
            "prediction": prediction,
        }
    quarantined = found.results.quarantined(doc_id, days)
    if quarantined is not None:
        return {"doc_id": doc_id, "status": "quarantined", **quarantined}
    if accepted is not None:  # sent on, not yet processed
        where = accepted["destination"]  # landing:<day>/api/<part> or kafka:<topic>
        day = where.split(":", 1)[1].split("/", 1)[0] if where.startswith("landing:") else None
        return {"doc_id": doc_id, "status": "accepted", "day": day, **accepted}
    raise HTTPException(
        404,
        f"no prediction, quarantine row or accepted submission for {doc_id} in the last "
        f"{found.config.lookup_days} days: never submitted through this API, or submitted to "
        "Kafka without DATABASE_URL and not yet processed",
    )


def ingest_days(accepted: dict[str, Any]) -> list[str]:
    """The lake days an accepted document can be in: its landing folder's day; sent to Kafka,
    the day it was accepted and the next (a micro-batch takes the day its sensor tick plans)."""
    where = accepted["destination"]
    if where.startswith("landing:"):
        return [where.split(":", 1)[1].split("/", 1)[0]]
    sent = datetime.fromisoformat(accepted["accepted_at"]).astimezone(UTC).date()
    today = datetime.now(UTC).date()
    return [d.isoformat() for d in (sent + timedelta(days=1), sent) if d <= today]


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
