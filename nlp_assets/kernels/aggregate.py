"""Stage 6, aggregates: per day x language x sentiment label, counts, mean score, top terms."""

from __future__ import annotations

import polars as pl

from nlp_assets.kernels.features import NGRAM_STRUCT

ENTITY_COUNT_STRUCT = pl.Struct({"text": pl.String(), "label": pl.String(), "count": pl.Int64()})

AGGREGATES_SCHEMA: dict[str, pl.DataType] = {
    "ingest_date": pl.Date(),
    "lang": pl.String(),
    "sentiment_label": pl.String(),
    "n_docs": pl.Int64(),
    "n_duplicates": pl.Int64(),
    "mean_sentiment_score": pl.Float64(),
    "top_entities": pl.List(ENTITY_COUNT_STRUCT),
    "top_ngrams": pl.List(NGRAM_STRUCT),
}

GROUP = ["ingest_date", "lang", "sentiment_label"]
TOP_ORDER = [*([False] * len(GROUP)), True, False]
#: Numbers, dates and amounts are entities to spaCy but say little as "top entities".
NUMERIC_ENTITY_LABELS = ("CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME")


def aggregate_day(
    predictions: pl.DataFrame, features: pl.DataFrame, top_k: int = 10
) -> pl.DataFrame:
    """Groups of the day's predictions; a null sentiment label is the group of skipped docs.

    Top entities count mentions (text and label) of named things, not numbers or dates;
    top n-grams add up each document's n-gram counts (the per-document top list the features
    stage keeps).
    """
    keyed = predictions.select([*GROUP, "doc_id", "is_duplicate", "sentiment_score", "entities"])
    base = keyed.group_by(GROUP).agg(
        pl.len().cast(pl.Int64).alias("n_docs"),
        pl.col("is_duplicate").sum().cast(pl.Int64).alias("n_duplicates"),
        pl.col("sentiment_score").mean().alias("mean_sentiment_score"),
    )
    entities = (
        keyed.select([*GROUP, "entities"])
        .explode("entities")
        .drop_nulls("entities")
        .unnest("entities")
        .filter(~pl.col("label").is_in(NUMERIC_ENTITY_LABELS))
        .group_by([*GROUP, "text", "label"])
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort(
            [*GROUP, "count", "text"],
            descending=TOP_ORDER,
            nulls_last=True,
        )
        .group_by(GROUP, maintain_order=True)
        .agg(pl.struct("text", "label", "count").head(top_k).alias("top_entities"))
    )
    ngrams = (
        keyed.select([*GROUP, "doc_id"])
        .join(features.select("doc_id", "ngrams"), on="doc_id", how="inner")
        .explode("ngrams")
        .drop_nulls("ngrams")
        .unnest("ngrams")
        .group_by([*GROUP, "ngram"])
        .agg(pl.col("count").sum().cast(pl.Int64))
        .sort(
            [*GROUP, "count", "ngram"],
            descending=TOP_ORDER,
            nulls_last=True,
        )
        .group_by(GROUP, maintain_order=True)
        .agg(pl.struct("ngram", "count").head(top_k).alias("top_ngrams"))
    )
    return (
        base.join(entities, on=GROUP, how="left", nulls_equal=True)
        .join(ngrams, on=GROUP, how="left", nulls_equal=True)
        .with_columns(
            pl.col("top_entities").fill_null(pl.lit([], dtype=pl.List(ENTITY_COUNT_STRUCT))),
            pl.col("top_ngrams").fill_null(pl.lit([], dtype=pl.List(NGRAM_STRUCT))),
        )
        .sort(GROUP, nulls_last=True)
        .select(list(AGGREGATES_SCHEMA))
        .cast(AGGREGATES_SCHEMA)  # type: ignore[arg-type]
    )


MODEL_VERSIONS_SCHEMA: dict[str, pl.DataType] = {
    "task": pl.String(),
    "model": pl.String(),
    "version": pl.String(),
    "n_docs": pl.Int64(),
    "positive_share": pl.Float64(),
    "mean_sentiment_score": pl.Float64(),
    "entities_per_doc": pl.Float64(),
}


def model_version_figures(predictions: pl.DataFrame) -> pl.DataFrame:
    """Per model version that served documents (sentiment and entities): how many it served
    and what it said, so the two sides of an A/B test can be compared. Skipped documents
    (no prediction) are left out."""
    served = predictions.filter(pl.col("skipped_reason").is_null())
    sentiment = served.group_by("sentiment_model", "sentiment_model_version").agg(
        pl.len().cast(pl.Int64).alias("n_docs"),
        (pl.col("sentiment_label") == "positive").mean().alias("positive_share"),
        pl.col("sentiment_score").mean().alias("mean_sentiment_score"),
    )
    entities = served.group_by("ner_model", "ner_model_version").agg(
        pl.len().cast(pl.Int64).alias("n_docs"),
        pl.col("entities").list.len().mean().cast(pl.Float64).alias("entities_per_doc"),
    )
    return (
        pl.concat(
            [
                sentiment.select(
                    pl.lit("sentiment").alias("task"),
                    pl.col("sentiment_model").alias("model"),
                    pl.col("sentiment_model_version").alias("version"),
                    "n_docs",
                    "positive_share",
                    "mean_sentiment_score",
                    pl.lit(None, dtype=pl.Float64).alias("entities_per_doc"),
                ),
                entities.select(
                    pl.lit("entities").alias("task"),
                    pl.col("ner_model").alias("model"),
                    pl.col("ner_model_version").alias("version"),
                    "n_docs",
                    pl.lit(None, dtype=pl.Float64).alias("positive_share"),
                    pl.lit(None, dtype=pl.Float64).alias("mean_sentiment_score"),
                    "entities_per_doc",
                ),
            ],
            how="vertical_relaxed",
        )
        .cast(MODEL_VERSIONS_SCHEMA)  # type: ignore[arg-type]
        .sort("task", "model", "version")
    )
