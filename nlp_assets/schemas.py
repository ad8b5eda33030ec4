"""The data contract of each stage as a pandera schema (checked as a blocking asset check)."""

import pandera.polars as pa
import polars as pl

from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.clean import CLEANED_SCHEMA
from nlp_assets.kernels.features import features_schema
from nlp_assets.kernels.ingest import RAW_SCHEMA
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.kernels.quality import QUALITY_NULLABLE, QUALITY_SCHEMA
from nlp_assets.kernels.tokenize import TOKENS_SCHEMA

HEX16 = r"^[0-9a-f]{16}$"
NULLABLE = {
    "source_id",
    "event_time",
    "metadata",
    "duplicate_of",
    "sentiment_label",
    "sentiment_score",
    "skipped_reason",
    "mean_sentiment_score",
    "traceparent",
    "trace_id",
}


def _unit_norm(data: pa.PolarsData) -> pl.LazyFrame:
    """Sentence embeddings are L2-normalised and finite."""
    norm = pl.col(data.key).arr.to_list().list.eval(pl.element().pow(2)).list.sum().sqrt()
    return data.lazyframe.select(((norm - 1).abs() < 1e-3).fill_null(False))


def _schema(
    dtypes: dict[str, pl.DataType], checks: dict[str, list[pa.Check]], unique: tuple[str, ...] = ()
) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                dtype,
                checks=checks.get(name, []),
                nullable=name in NULLABLE,
                unique=name in unique,
            )
            for name, dtype in dtypes.items()
        },
        strict=True,
        ordered=False,
    )


def raw_text_schema() -> pa.DataFrameSchema:
    return _schema(RAW_SCHEMA, {"doc_id": [pa.Check.str_matches(HEX16)]}, unique=("doc_id",))


def cleaned_text_schema(max_chars: int = 100_000) -> pa.DataFrameSchema:
    return _schema(
        CLEANED_SCHEMA,
        {
            "doc_id": [pa.Check.str_matches(HEX16)],
            "n_chars": [pa.Check.in_range(1, max_chars)],
            "content_hash": [pa.Check.str_matches(r"^[0-9a-f]{64}$")],
            "lang_score": [pa.Check.in_range(0.0, 1.0)],
        },
        unique=("doc_id",),
    )


def tokens_schema() -> pa.DataFrameSchema:
    return _schema(TOKENS_SCHEMA, {"n_tokens": [pa.Check.ge(2)]}, unique=("doc_id",))


def features_schema_for(dim: int) -> pa.DataFrameSchema:
    return _schema(
        features_schema(dim),
        {"embedding": [pa.Check(_unit_norm, error="embedding is not unit-norm")]},
        unique=("doc_id",),
    )


def predictions_schema() -> pa.DataFrameSchema:
    return _schema(
        PREDICTIONS_SCHEMA,
        {
            "sentiment_label": [pa.Check.isin(["positive", "negative"])],
            "sentiment_score": [pa.Check.in_range(0.0, 1.0)],
        },
        unique=("doc_id",),
    )


def aggregates_schema() -> pa.DataFrameSchema:
    return _schema(
        AGGREGATES_SCHEMA,
        {
            "n_docs": [pa.Check.ge(1)],
            "n_duplicates": [pa.Check.ge(0)],
            "mean_sentiment_score": [pa.Check.in_range(0.0, 1.0)],
        },
    )


def quality_schema() -> pa.DataFrameSchema:
    share = [pa.Check.in_range(0.0, 1.0)]
    checks = {
        name: share
        for name in QUALITY_SCHEMA
        if name.endswith("_share") or name == "mean_sentiment_score"
    }
    checks |= {
        name: [pa.Check.ge(0)] for name, dtype in QUALITY_SCHEMA.items() if dtype == pl.Int64
    }
    checks["centroid_distance"] = [pa.Check.in_range(0.0, 2.0)]
    return pa.DataFrameSchema(
        {
            name: pa.Column(dtype, checks=checks.get(name, []), nullable=name in QUALITY_NULLABLE)
            for name, dtype in QUALITY_SCHEMA.items()
        },
        unique=["ingest_date", "source"],
        strict=True,
        ordered=False,
    )


def reports_schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "ingest_date": pa.Column(pl.Date),
            "artifact": pa.Column(pl.String, unique=True),
            "path": pa.Column(pl.String),
            "format": pa.Column(pl.String),
            "bytes": pa.Column(pl.Int64, checks=[pa.Check.gt(0)]),
        },
        strict=True,
    )
