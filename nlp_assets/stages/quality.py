"""The `quality` asset: per day and source, figures of the day's predictions and how far the
day moved from the previous seven days, with a non-blocking shift check (docs/quality.md)."""

import time
from datetime import date, timedelta

import dagster as dg
import polars as pl

from nlp_assets.kernels.quality import (
    BASELINE_DAYS,
    SourceStats,
    day_stats,
    quality_figures,
    quarantine_sources,
    shift_findings,
)
from nlp_assets.lake import Lake
from nlp_assets.resources.lake import SCOPE_DAY, LakeResource, markdown_preview
from nlp_assets.schemas import quality_schema
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import QUARANTINE_STAGES, stage_asset, stage_result

_HISTORY_PREDICTIONS = ["doc_id", "source", "sentiment_label", "skipped_reason"]

#: Warns (never blocks) when a day's predictions moved from the previous seven days beyond the
#: thresholds of `nlp_assets.kernels.quality` (docs/quality.md); evaluated with each
#: materialisation of `quality`, so it judges the partition just computed.
QUALITY_SHIFT_CHECK = "quality_shift"
quality_shift_spec = dg.AssetCheckSpec(
    QUALITY_SHIFT_CHECK,
    asset="quality",
    blocking=False,
    description="Per source with enough documents: the embedding centroid, the positive share "
    "and the skipped share stay within their thresholds of the previous seven days "
    "(docs/quality.md).",
)


def quality_shift_result(
    findings: list[str], judged: list[str], not_judged: list[str]
) -> dg.AssetCheckResult:
    """The shift check's result: WARN with one line per figure past its threshold."""
    return dg.AssetCheckResult(
        check_name=QUALITY_SHIFT_CHECK,
        passed=not findings,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(findings) or "no shift beyond the thresholds",
        metadata={
            "shifts": len(findings),
            "judged_sources": ", ".join(judged) or "none",
            "not_judged_sources": ", ".join(not_judged) or "none",
        },
    )


@stage_asset(
    "quality",
    group="analytics",
    kinds={"polars", "parquet"},
    description="Per day x source: label mix, mean P(positive), shares of skipped and "
    "quarantined documents, entities per document and per 100 tokens, and the cosine distance "
    "of the day's embedding centroid from the previous seven days'. The quality_shift check "
    "warns when a source moved beyond the thresholds in docs/quality.md.",
    scope="day",
    ins={
        "predictions": dg.AssetIn(metadata=SCOPE_DAY),
        "features": dg.AssetIn(metadata=SCOPE_DAY),
    },
    check_specs=[quality_shift_spec],
)
def quality(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    predictions: pl.DataFrame,
    features: pl.DataFrame,
):
    started = time.perf_counter()
    day = date.fromisoformat(context.partition_key)
    store = lake.lake()
    history = previous_days_stats(store, day)
    raw = store.read_day(
        "raw_text", day.isoformat(), missing_ok=True, columns=["doc_id", "source", "file"]
    )
    quarantined = [store.read_quarantine(stage, day) for stage in stage_names(QUARANTINE_STAGES)]
    quarantine = pl.concat(
        [frame.select("doc_id", "file") for frame in quarantined if frame.width]
        or [pl.DataFrame(schema={"doc_id": pl.String, "file": pl.String})]
    )
    tokens = store.read_day(
        "tokens", day.isoformat(), missing_ok=True, columns=["doc_id", "n_tokens"]
    )
    frame = quality_figures(
        day,
        predictions,
        features,
        history=history,
        tokens=tokens if tokens.height else None,
        quarantine_source=quarantine_sources(quarantine, raw),
    )
    verdict = shift_findings(frame)
    result = stage_result(
        context,
        frame,
        quality_schema(),
        started=started,
        metadata={
            "sources": frame.height,
            "baseline_days": max(frame["baseline_days"].to_list(), default=0),
            "figures": dg.MetadataValue.md(markdown_preview(frame.drop("label_mix"))),
        },
    )
    shift = quality_shift_result(verdict.findings, verdict.judged, verdict.not_judged)
    return dg.MaterializeResult(
        value=result.value,
        metadata=result.metadata,
        check_results=[*(result.check_results or []), shift],
    )


def previous_days_stats(store: Lake, day: date) -> list[dict[str, SourceStats]]:
    """`day_stats` of each of the `BASELINE_DAYS` days before `day` that has predictions,
    oldest first, read from the lake one day at a time (the columns it needs only). Days
    before the data starts are simply absent: the first day has no baseline."""
    history = []
    for back in range(BASELINE_DAYS, 0, -1):
        previous = (day - timedelta(days=back)).isoformat()
        predictions = store.read_day(
            "predictions", previous, missing_ok=True, columns=_HISTORY_PREDICTIONS
        )
        if not predictions.height:
            continue
        features = store.read_day(
            "features", previous, missing_ok=True, columns=["doc_id", "embedding"]
        )
        history.append(day_stats(predictions, features))
    return history
