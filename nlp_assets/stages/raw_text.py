import time
from datetime import date

import dagster as dg

from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.schemas import raw_text_schema
from nlp_assets.stages.common import stage_asset, stage_result
from resources.folders import DayFolder
from resources.lake import LakeResource


@stage_asset(
    "raw_text",
    group="ingest",
    kinds={"polars", "parquet"},
    description="Documents landed for the day (JSONL, CSV, Parquet, TXT under "
    "<landing>/<day>/) with stable doc_ids; unparseable files and records are quarantined.",
)
def raw_text(context: dg.AssetExecutionContext, landing: DayFolder, lake: LakeResource):
    started = time.perf_counter()
    result = read_landing_day(landing.path, date.fromisoformat(context.partition_key))
    docs = result.docs
    return stage_result(
        context,
        docs,
        raw_text_schema(),
        started=started,
        lake=lake,
        quarantine=result.quarantine,
        metadata={
            "files_read": result.files_read,
            "landing_dir": dg.MetadataValue.path(str(landing.day_dir(context.partition_key))),
            "sources": dg.MetadataValue.json(
                dict(docs.group_by("source").len().sort("source").iter_rows())
            ),
        },
    )
