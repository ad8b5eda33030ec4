"""A day's results: predictions, aggregates (JSON, CSV or Parquet by Accept) and the report."""

from __future__ import annotations

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from nlp_assets.api.auth import Principal
from nlp_assets.api.deps import reader
from nlp_assets.api.results import frame_csv, frame_parquet, frame_records, parse_day
from nlp_assets.api.services import Services, services

router = APIRouter(tags=["results"])

PARQUET = "application/vnd.apache.parquet"
PARQUET_TYPES = (PARQUET, "application/x-parquet", "application/parquet")
#: The largest `limit` or `offset` a caller may ask for (a day never has more rows).
MAX_ROWS = 100_000_000
FORMATS = {
    200: {"content": {"text/csv": {}, PARQUET: {}, "application/json": {}}},
    406: {"description": "No format of Accept", "content": {"text/plain": {}}},
}


def day_or_400(day: str) -> str:
    try:
        return parse_day(day)
    except ValueError as error:
        raise HTTPException(400, str(error)) from None


@router.get(
    "/v1/days/{day}/predictions",
    summary="A day's predictions: JSON (paged), CSV or Parquet by Accept.",
    responses=FORMATS,  # type: ignore[arg-type]
)
def get_predictions(
    request: Request,
    day: str,
    source: str | None = None,
    language: str | None = None,
    label: str | None = Query(None, description="positive or negative"),
    limit: int | None = Query(None, ge=1, le=MAX_ROWS, description="JSON default 100; files: all"),
    offset: int = Query(0, ge=0, le=MAX_ROWS),
    _: Principal = reader,
    found: Services = Depends(services),  # noqa: B008
) -> Response:
    frame = found.results.predictions(
        day_or_400(day), source=source, language=language, label=label
    )
    return respond(request, frame, limit, offset, found.config.max_page_size)


@router.get(
    "/v1/days/{day}/aggregates",
    summary="A day's aggregates (day x language x label): JSON, CSV or Parquet by Accept.",
    responses=FORMATS,  # type: ignore[arg-type]
)
def get_aggregates(
    request: Request,
    day: str,
    _: Principal = reader,
    found: Services = Depends(services),  # noqa: B008
) -> Response:
    frame = found.results.aggregates(day_or_400(day))
    return respond(request, frame, None, 0, found.config.max_page_size)


@router.get(
    "/v1/days/{day}/report",
    summary="A day's HTML report.",
    responses={200: {"content": {"text/html": {}}}},
)
def get_report(
    day: str,
    _: Principal = reader,
    found: Services = Depends(services),  # noqa: B008
) -> FileResponse:
    path = found.results.report_path(day_or_400(day))
    if path is None:
        raise HTTPException(404, f"no report for {day}: materialise that day's reports first")
    return FileResponse(path, media_type="text/html")


def respond(
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
