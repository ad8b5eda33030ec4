import json
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from nlp_assets.kernels.report import TREND_DAYS, markdown_preview, write_report
from nlp_assets.lake import QUARANTINE
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import SCOPE_DAY, LakeResource
from nlp_assets.schemas import reports_schema
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import QUARANTINE_STAGES, stage_asset, stage_result


#: Beside report.html: the lake table versions the report was built from.
TABLE_VERSIONS_FILE = "table_versions.json"


@stage_asset(
    "reports",
    group="analytics",
    kinds={"html", "parquet"},
    description="A self-contained HTML report per day with charts, sentiment by source, the "
    "quality figures with their trend over the last days, and exports of predictions and "
    "aggregates as JSON, CSV and Parquet. The value is the manifest of files written; the "
    "lake table versions it read are in its metadata and table_versions.json.",
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
    store = lake.lake()
    # The table versions this report reads, recorded so that it can be rebuilt later with
    # `as_of=` (docs/lake.md): the run holds the day's lease, so no other run changes this
    # day between its inputs' load and now; the tables read here are read at these versions.
    quarantine_tables = {stage: f"{QUARANTINE}/{stage}" for stage in stage_names(QUARANTINE_STAGES)}
    read = ["predictions", "aggregates", "quality", *quarantine_tables.values()]
    versions = {table: store.version(table) for table in read}
    quarantined = {
        stage: store.read_quarantine(stage, day, as_of=versions[table]).height
        if versions[table] is not None
        else 0
        for stage, table in quarantine_tables.items()
    }
    # the trend: the previous days' quality figures as the lake has them, then this day's
    earlier = [(day - timedelta(days=back)).isoformat() for back in range(TREND_DAYS - 1, 0, -1)]
    trend = pl.concat(
        [store.read_days("quality", earlier, as_of=versions["quality"]), quality],
        how="diagonal_relaxed",
    )
    out_dir = report_folder.day_dir(context.partition_key)
    manifest = write_report(
        day, predictions, aggregates, out_dir, quarantine_counts=quarantined, quality=trend
    )
    (out_dir / TABLE_VERSIONS_FILE).write_text(json.dumps(versions, indent=1, sort_keys=True))
    chart = Path(manifest.filter(pl.col("artifact") == "chart_label_mix")["path"][0]).read_bytes()
    return stage_result(
        context,
        manifest,
        reports_schema(),
        started=started,
        metadata={
            "report": dg.MetadataValue.path(str(out_dir / "report.html")),
            "table_versions": dg.MetadataValue.json(versions),
            "report_preview": dg.MetadataValue.md(markdown_preview(day, predictions, chart)),
        },
    )
