import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from nlp_assets.kernels.report import TREND_DAYS, markdown_preview, write_report
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import SCOPE_DAY, LakeResource
from nlp_assets.schemas import reports_schema
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import QUARANTINE_STAGES, stage_asset, stage_result


@stage_asset(
    "reports",
    group="analytics",
    kinds={"html", "parquet"},
    description="A self-contained HTML report per day with charts, sentiment by source, the "
    "quality figures with their trend over the last days, and exports of predictions and "
    "aggregates as JSON, CSV and Parquet. The value is the manifest of files written.",
    scope="day",
    ins={
        "predictions": dg.AssetIn(metadata=SCOPE_DAY),
        "aggregates": dg.AssetIn(metadata=SCOPE_DAY),
        "quality": dg.AssetIn(metadata=SCOPE_DAY),
    },
)
def reports(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    report_folder: DayFolder,
    predictions: pl.DataFrame,
    aggregates: pl.DataFrame,
    quality: pl.DataFrame,
):
    started = time.perf_counter()
    day = date.fromisoformat(context.partition_key)
    quarantined = {
        stage: lake.lake().read_quarantine(stage, day).height
        for stage in stage_names(QUARANTINE_STAGES)
    }
    # the trend: the previous days' quality figures as the lake has them, then this day's
    earlier = [(day - timedelta(days=back)).isoformat() for back in range(TREND_DAYS - 1, 0, -1)]
    trend = pl.concat([lake.lake().read_days("quality", earlier), quality], how="diagonal_relaxed")
    out_dir = report_folder.day_dir(context.partition_key)
    manifest = write_report(
        day, predictions, aggregates, out_dir, quarantine_counts=quarantined, quality=trend
    )
    chart = Path(manifest.filter(pl.col("artifact") == "chart_label_mix")["path"][0]).read_bytes()
    return stage_result(
        context,
        manifest,
        reports_schema(),
        started=started,
        metadata={
            "report": dg.MetadataValue.path(str(out_dir / "report.html")),
            "report_preview": dg.MetadataValue.md(markdown_preview(day, predictions, chart)),
        },
    )
