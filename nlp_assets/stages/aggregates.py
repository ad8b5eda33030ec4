import time

import dagster as dg
import polars as pl

from nlp_assets.kernels.aggregate import aggregate_day, model_version_figures
from nlp_assets.resources.lake import SCOPE_DAY, markdown_preview
from nlp_assets.schemas import aggregates_schema
from nlp_assets.stages.common import stage_asset, stage_result


@stage_asset(
    "aggregates",
    group="analytics",
    kinds={"polars", "parquet"},
    description="Per day x language x sentiment label: documents, duplicates, mean P(positive), "
    "top entities and top n-grams. Always recomputed over the whole day.",
    scope="day",
    ins={
        "predictions": dg.AssetIn(metadata=SCOPE_DAY),
        "features": dg.AssetIn(metadata=SCOPE_DAY),
    },
)
def aggregates(
    context: dg.AssetExecutionContext, predictions: pl.DataFrame, features: pl.DataFrame
):
    started = time.perf_counter()
    frame = aggregate_day(predictions, features)
    versions = model_version_figures(predictions)  # per model version: A/B comparison
    return stage_result(
        context,
        frame,
        aggregates_schema(),
        started=started,
        metadata={
            "groups": frame.height,
            "model_versions": dg.MetadataValue.md(markdown_preview(versions)),
            "model_version_figures": dg.MetadataValue.json(versions.to_dicts()),
        },
    )
