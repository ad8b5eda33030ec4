"""Backfills of the daily pipeline and the status of runs (an operator's)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from nlp_assets.api.auth import Principal
from nlp_assets.api.deps import operator
from nlp_assets.api.services import Services, services

router = APIRouter(tags=["backfills"])

MAX_BACKFILL_DAYS = 366


class BackfillRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    start: date = Field(alias="from", description="First day (YYYY-MM-DD).")
    end: date = Field(alias="to", description="Last day, inclusive.")


class BackfillResponse(BaseModel):
    backfill_id: str
    partitions: list[str]
    run_ids: list[str]
    status_url: str


@router.post(
    "/v1/backfills",
    status_code=202,
    response_model=BackfillResponse,
    summary="Backfill the daily pipeline for a day range (through the Dagster webserver).",
)
def post_backfill(
    request: BackfillRequest,
    principal: Principal = operator,
    found: Services = Depends(services),  # noqa: B008
) -> BackfillResponse:
    from nlp_assets.api.backfills import DagsterUnavailable

    if request.end < request.start:
        raise HTTPException(422, f"'to' ({request.end}) is before 'from' ({request.start})")
    count = (request.end - request.start).days + 1  # checked before any work per day
    if count > MAX_BACKFILL_DAYS:
        raise HTTPException(422, f"{count} days; backfill at most {MAX_BACKFILL_DAYS}")
    days = [(request.start + timedelta(days=i)).isoformat() for i in range(count)]
    client = found.dagster()
    try:
        launched = client.launch_backfill(
            found.config.dagster_job, days, {"nlp/requested_by": principal.subject}
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


@router.get("/v1/runs/{run_id}", summary="A run's or a backfill's status.")
def get_run(
    run_id: str,
    _: Principal = operator,
    found: Services = Depends(services),  # noqa: B008
) -> dict[str, Any]:
    from nlp_assets.api.backfills import DagsterUnavailable, NotFound

    if not run_id.replace("-", "").isalnum() or len(run_id) > 64:
        raise HTTPException(400, "run_id is a Dagster run id or backfill id")
    try:
        return found.dagster().lookup(run_id)
    except NotFound as error:
        raise HTTPException(404, str(error)) from None
    except DagsterUnavailable as error:
        raise HTTPException(503, str(error), {"Retry-After": "10"}) from None
