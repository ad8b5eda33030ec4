"""An example downstream asset: another team's daily table built on `predictions`.

It depends on the pipeline the normal Dagster way (an asset input read through the lake IO
manager), shares the daily partitions (a run for 2026-11-18 reads that day's predictions) and
lives in its own group. Copy this shape for your own assets.
"""

import dagster as dg
import polars as pl

from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import SCOPE_DAY

SENTIMENT_BY_SOURCE_SCHEMA: dict[str, pl.DataType] = {
    "ingest_date": pl.Date(),
    "source": pl.String(),
    "n_docs": pl.UInt32(),
    "n_scored": pl.UInt32(),
    "positive_share": pl.Float64(),
    "mean_sentiment_score": pl.Float64(),
}


def sentiment_by_source(predictions: pl.DataFrame) -> pl.DataFrame:
    """Per day and source: documents, how many the sentiment model scored, the share of those
    that are positive and their mean P(positive) (null when none was scored). Duplicates are
    left out so a re-posted text counts once."""
    scored = pl.col("sentiment_label").is_not_null()
    return (
        predictions.filter(~pl.col("is_duplicate"))
        .group_by("ingest_date", "source")
        .agg(
            n_docs=pl.len(),
            n_scored=scored.sum(),
            positive_share=(pl.col("sentiment_label") == "positive").sum() / scored.sum(),
            mean_sentiment_score=pl.col("sentiment_score").mean(),
        )
        .with_columns(positive_share=pl.when(pl.col("n_scored") > 0).then(pl.col("positive_share")))
        .sort("ingest_date", "source")
        .cast(SENTIMENT_BY_SOURCE_SCHEMA)  # type: ignore[arg-type]
    )


@dg.asset(
    name="sentiment_by_source",
    group_name="downstream",
    kinds={"polars", "parquet"},
    description="Example downstream asset: per day and source, documents, scored documents, "
    "positive share and mean P(positive) (duplicates excluded). Reads the whole day of "
    "predictions through the lake IO manager.",
    partitions_def=daily_partitions,
    io_manager_key="lake_io_manager",
    ins={"predictions": dg.AssetIn(metadata=SCOPE_DAY)},
    automation_condition=dg.AutomationCondition.eager(),
)
def sentiment_by_source_asset(
    context: dg.AssetExecutionContext, predictions: pl.DataFrame
) -> pl.DataFrame:
    frame = sentiment_by_source(predictions)
    context.add_output_metadata({"sources": frame.height})
    return frame
