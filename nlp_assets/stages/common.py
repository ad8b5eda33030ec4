"""What every stage asset does the same way: schema check, quarantine, metadata, retries, and
the facts other code asks about a stage, kept as asset tags (`stage_asset`'s arguments).

Jobs, checks, schedules and sensors select stages by these tags (the selections below); code
that needs names resolves a selection with `nlp_assets.stages.stage_names`. No list of stage
names is kept by hand anywhere else.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import dagster as dg
import pandera.polars as pa
import polars as pl
from opentelemetry import trace

from nlp_assets import metrics, tracing
from nlp_assets.engines.sink import Committed, LakeSink, Summary
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import (
    DAY_PART,
    PART_TAG,
    SCOPE_DAY,
    LakeResource,
    markdown_preview,
    run_part,
)

SCHEMA_CHECK = "schema"
FAILURE_PREVIEW_ROWS = 10

#: Transient failures (the file system, a model read from a mount) are retried. Bad data never
#: raises (it is quarantined) and a failed schema check is a blocking check result, so neither
#: is retried.
RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)

# --- stage facts, as asset tags (the UI shows them; selections below use them) ---------------
#: Every stage of the daily pipeline (the `daily_pipeline` job): raw text to report.
PIPELINE_TAG, PIPELINE_DAILY = "nlp/pipeline", "daily"
#: "part": computes the run's part (a micro-batch, or the whole day in a backfill); "day":
#: always computes the whole day (Kafka micro-batches refresh these at most every
#: NLP_KAFKA_DAY_REFRESH_MINUTES, the topic's sensor once more after the day closed).
SCOPE_TAG = "nlp/scope"
Scope = Literal["part", "day"]
#: Runs on either engine (local polars or Spark, `EngineConfig`); its backfills are single runs.
ENGINE_TAG, ENGINE_LOCAL_OR_SPARK = "nlp/engine", "local_or_spark"
#: Its quarantined rows are refused documents (counted by `quality` and the report).
QUARANTINE_TAG = "nlp/quarantine"
#: Serves models from the registry through the result cache (reports `model_fallback` and the
#: cache figures that the `model_health` check reads).
MODELS_TAG = "nlp/models"
TRUE = "true"

PIPELINE = dg.AssetSelection.tag(PIPELINE_TAG, PIPELINE_DAILY)
DAY_SCOPE = dg.AssetSelection.tag(SCOPE_TAG, "day")
ENGINE_STAGES = dg.AssetSelection.tag(ENGINE_TAG, ENGINE_LOCAL_OR_SPARK)
QUARANTINE_STAGES = dg.AssetSelection.tag(QUARANTINE_TAG, TRUE)
MODEL_STAGES = dg.AssetSelection.tag(MODELS_TAG, TRUE)


def stage_tags(
    scope: Scope, *, engines: bool = False, quarantine: bool = False, models: bool = False
) -> dict[str, str]:
    """The tags of a pipeline stage: its scope and whichever facts hold for it."""
    tags = {PIPELINE_TAG: PIPELINE_DAILY, SCOPE_TAG: scope}
    if engines:
        tags[ENGINE_TAG] = ENGINE_LOCAL_OR_SPARK
    if quarantine:
        tags[QUARANTINE_TAG] = TRUE
    if models:
        tags[MODELS_TAG] = TRUE
    return tags


def stage_asset(
    name: str,
    *,
    group: str,
    kinds: set[str],
    description: str,
    scope: Scope,
    engines: bool = False,
    quarantine: bool = False,
    models: bool = False,
    check_specs: Sequence[dg.AssetCheckSpec] = (),
    **kwargs: Any,
):
    """`@asset` with what every stage shares: daily partitions, the lake IO manager, a
    blocking schema check (beside any `check_specs` of the stage's own), retries of transient
    errors, and its facts as tags (`stage_tags`). `scope="day"` also stores the value as the
    whole day (`SCOPE_DAY` metadata for the IO manager), even in a micro-batch run.

    Stage functions return `stage_result(...)` (a MaterializeResult carrying the value) and
    carry no return annotation: Dagster would read `-> MaterializeResult` as "no value".
    """
    asset = dg.asset(
        name=name,
        group_name=group,
        kinds=kinds,
        description=description,
        tags=stage_tags(scope, engines=engines, quarantine=quarantine, models=models),
        metadata=SCOPE_DAY if scope == "day" else None,
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
    return lambda fn: asset(_traced(fn))


# --- traces: one span per step (nlp_assets.tracing) ------------------------------------------
#: Metadata a stage reports, as its step span's attributes.
SPAN_ATTRIBUTES = {
    "docs_in": "nlp.rows_in",
    "quarantined": "nlp.quarantined",
    "engine": "nlp.engine",
    "cache_hits": "nlp.cache_hits",
    "cache_misses": "nlp.cache_misses",
    "model_seconds": "nlp.model_seconds",
    "model_fallback": "nlp.model_fallback",
    "sentiment_model": "nlp.model.sentiment",
    "ner_model": "nlp.model.ner",
    "kafka_range": "nlp.kafka_range",
}


def _partition(context: dg.AssetExecutionContext) -> str | None:
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    keys = context.partition_keys
    return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"


@contextmanager
def step_span(context: dg.AssetExecutionContext) -> Iterator[None]:
    """The step's span, a child of the run's trace (`tracing.run_parent`), current while the
    stage computes; kept open for the IO manager, which ends it after its commit
    (`end_step_span`). A step that raises ends it here, with the error."""
    if not tracing.configure("nlp-run"):
        yield
        return
    asset = context.asset_key.to_user_string()
    span = tracing.tracer().start_span(
        f"step {asset}",
        context=tracing.run_parent(context.run.tags, context.run_id),
        attributes=tracing.clean_attributes(
            {
                "nlp.asset": asset,
                "nlp.partition": _partition(context),
                "nlp.part": context.run.tags.get(PART_TAG, DAY_PART),
                "nlp.run_id": context.run_id,
                "nlp.job": context.job_name,
            }
        ),
    )
    try:
        with trace.use_span(span, end_on_exit=False):
            yield
    except BaseException:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end()
        tracing.flush()
        raise
    tracing.hold(tracing.step_key(context.run_id, asset), span)


def _traced(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def compute(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        with step_span(context):
            return fn(context, *args, **kwargs)

    return compute


def _span_metadata(metadata: Mapping[str, Any], rows_out: int) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = {
        attribute: getattr(metadata[key], "value", metadata[key])
        for key, attribute in SPAN_ATTRIBUTES.items()
        if key in metadata
    }
    span.set_attributes(tracing.clean_attributes({**attributes, "nlp.rows_out": rows_out}))


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


def committed_check(committed: Committed) -> dg.AssetCheckResult:
    """The schema check of rows the Spark executors wrote: each file's rows were checked
    where they were written (`engines.sink.file_summary`); uniqueness is checked per file."""
    if committed.schema_failures:
        return dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "failure_cases": committed.schema_failures,
                "failures": dg.MetadataValue.json(committed.failure_cases),
            },
        )
    return dg.AssetCheckResult(
        check_name=SCHEMA_CHECK,
        passed=True,
        metadata={"rows": committed.rows, "checked_in": "executors, per file"},
    )


def lake_sink(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    check: Any,
    summary: Summary | None = None,
) -> LakeSink:
    """Where a Spark stage's executors write its rows: its table, the run's days (committed
    in one transaction that holds the run's leases); `check` gives the pandera schema of a
    frame, `summary` the counts the stage reports (`engines.sink`)."""
    return LakeSink(
        lake.lake(),
        context.asset_key.to_user_string(),
        list(context.partition_keys),
        check=check,
        summary=summary,
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
    frame: pl.DataFrame | Committed,
    schema: pa.DataFrameSchema | None,
    *,
    started: float,
    lake: LakeResource | None = None,
    quarantine: pl.DataFrame | None = None,
    metadata: Mapping[str, Any] | None = None,
):
    """Value, schema check and metadata of one stage materialisation.

    Quarantined rows are written beside the stage's data (the same part, so a retry replaces
    them) and counted, so every input row is either in the output or in quarantine.

    `frame` may be the rows the Spark engine already committed (`Committed`): the value then
    carries that commit, the IO manager only records it, and the schema check is the one the
    executors ran (`schema` unused).
    """
    extra: dict[str, Any] = dict(metadata or {})
    if quarantine is not None and lake is not None:
        stage = context.asset_key.to_user_string()
        if len(context.partition_keys) > 1:  # a single-run backfill of a range: per day
            written = lake.lake().write_days(
                f"quarantine/{stage}", context.partition_keys, quarantine
            )
        else:
            written = lake.lake().write_quarantine(
                stage, context.partition_key, quarantine, run_part(context)
            )
        extra |= quarantine_metadata(quarantine) | {
            "quarantine_path": dg.MetadataValue.path(written.uri),
            "quarantine_table_version": written.version,
        }
    rows = frame.rows if isinstance(frame, Committed) else frame.height
    if quarantine is not None:  # every input row is in the output or in quarantine
        extra.setdefault("docs_in", rows + quarantine.height)
    extra["seconds"] = round(time.perf_counter() - started, 3)
    _span_metadata(extra, rows)
    if isinstance(frame, pl.DataFrame) and "traceparent" in frame.columns:
        linked = tracing.link_documents(frame["traceparent"])
        if linked:
            extra["traces_linked"] = linked
    metrics.export_stage_metrics(  # best effort: warns, never fails the run
        job=metrics.job_of(context),
        asset=context.asset_key.to_user_string(),
        partition=context.partition_key if context.has_partition_key else None,
        metadata=extra,
        rows_out=rows,
        warn=context.log.warning,
    )
    if isinstance(frame, Committed):
        check = committed_check(frame)
    else:
        assert schema is not None
        check = schema_check(frame, schema)
    return dg.MaterializeResult(value=frame, metadata=extra, check_results=[check])
