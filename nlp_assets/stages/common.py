"""What every stage asset does the same way: schema check, quarantine, metadata, retries."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandera.polars as pa
import polars as pl

from nlp_assets import metrics
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import LakeResource, markdown_preview, run_part

SCHEMA_CHECK = "schema"
FAILURE_PREVIEW_ROWS = 10

#: Transient failures (the file system, a model read from a mount) are retried. Bad data never
#: raises (it is quarantined) and a failed schema check is a blocking check result, so neither
#: is retried.
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)


def stage_asset(
    name: str,
    *,
    group: str,
    kinds: set[str],
    description: str,
    check_specs: Sequence[dg.AssetCheckSpec] = (),
    **kwargs: Any,
):
    """`@asset` with what every stage shares: daily partitions, the lake IO manager, a
    blocking schema check (beside any `check_specs` of the stage's own), retries of transient
    errors.

    Stage functions return `stage_result(...)` (a MaterializeResult carrying the value) and
    carry no return annotation: Dagster would read `-> MaterializeResult` as "no value".
    """
    return dg.asset(
        name=name,
        group_name=group,
        kinds=kinds,
        description=description,
        partitions_def=daily_partitions,
        io_manager_key="lake_io_manager",
        check_specs=[
            dg.AssetCheckSpec(
                SCHEMA_CHECK,
                asset=name,
                blocking=True,
                description=f"{name} matches its pandera schema (nlp_assets.schemas)",
            ),
            *check_specs,
        ],
        retry_policy=RETRY_POLICY,
        **kwargs,
    )


def schema_check(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> dg.AssetCheckResult:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        failures = errors.failure_cases
        return dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failure_cases": failures.height,
                "failures": dg.MetadataValue.md(
                    markdown_preview(failures.head(FAILURE_PREVIEW_ROWS))
                ),
            },
        )
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK, passed=True, metadata={"rows": frame.height}
    )


def quarantine_metadata(quarantine: pl.DataFrame) -> dict[str, Any]:
    reasons = (
        quarantine.group_by("reason").agg(pl.len().alias("rows")).sort("rows", descending=True)
        if quarantine.height
        else pl.DataFrame({"reason": [], "rows": []})
    )
    return {
        "quarantined": quarantine.height,
        "quarantine_reasons": dg.MetadataValue.md(markdown_preview(reasons.head(20))),
    }


def stage_result(
    context: dg.AssetExecutionContext,
    frame: pl.DataFrame,
    schema: pa.DataFrameSchema,
    *,
    started: float,
    lake: LakeResource | None = None,
    quarantine: pl.DataFrame | None = None,
    metadata: Mapping[str, Any] | None = None,
):
    """Value, schema check and metadata of one stage materialisation.

    Quarantined rows are written beside the stage's data (the same part, so a retry replaces
    them) and counted, so every input row is either in the output or in quarantine.
    """
    extra: dict[str, Any] = dict(metadata or {})
    if quarantine is not None and lake is not None:
        stage = context.asset_key.to_user_string()
        if len(context.partition_keys) > 1:  # a single-run backfill of a range: per day
            path = lake.lake().write_days(f"quarantine/{stage}", context.partition_keys, quarantine)
        else:
            path = lake.lake().write_quarantine(
                stage, context.partition_key, quarantine, run_part(context)
            )
        extra |= quarantine_metadata(quarantine) | {
            "quarantine_path": dg.MetadataValue.path(str(path))
        }
    if quarantine is not None:  # every input row is in the output or in quarantine
        extra.setdefault("docs_in", frame.height + quarantine.height)
    extra["seconds"] = round(time.perf_counter() - started, 3)
    metrics.export_stage_metrics(  # best effort: warns, never fails the run
        job=metrics.job_of(context),
        asset=context.asset_key.to_user_string(),
        partition=context.partition_key if context.has_partition_key else None,
        metadata=extra,
        rows_out=frame.height,
        warn=context.log.warning,
    )
    return dg.MaterializeResult(
        value=frame, metadata=extra, check_results=[schema_check(frame, schema)]
    )
