"""Stage 5, predictions: sentiment (label, P(positive)) and named entities per document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl

from nlp_assets.kernels.sentiment import SentimentHead

ENTITY_STRUCT = pl.Struct(
    {"text": pl.String(), "label": pl.String(), "start_char": pl.Int64(), "end_char": pl.Int64()}
)

PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "ingest_date": pl.Date(),
    "source": pl.String(),
    "lang": pl.String(),
    "is_duplicate": pl.Boolean(),
    "sentiment_label": pl.String(),
    "sentiment_score": pl.Float64(),
    "sentiment_model": pl.String(),
    "sentiment_model_version": pl.String(),
    "entities": pl.List(ENTITY_STRUCT),
    "ner_model": pl.String(),
    "ner_model_version": pl.String(),
    "skipped_reason": pl.String(),
}

POSITIVE = "positive"


class EntityModel(Protocol):
    name: str
    version: str

    def entities(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]: ...


def predict_documents(
    cleaned: pl.DataFrame,
    features: pl.DataFrame,
    head: SentimentHead,
    ner: EntityModel,
    *,
    sentiment_model_name: str,
    languages: Sequence[str] = ("en",),
) -> pl.DataFrame:
    """Predict for every document of `features`; languages the models were not built for are
    kept with null predictions and a `skipped_reason`, never dropped."""
    docs = features.select("doc_id", "ingest_date", "embedding").join(
        cleaned.select("doc_id", "source", "lang", "is_duplicate", "text"),
        on="doc_id",
        how="left",
        maintain_order="left",
    )
    supported = docs["lang"].is_in(list(languages)).to_numpy()
    if features.height and not np.all(docs["embedding"].is_not_null().to_numpy()):
        raise ValueError("features has documents without an embedding")

    labels: list[str | None] = [None] * docs.height
    scores: list[float | None] = [None] * docs.height
    entities: list[list[dict[str, Any]]] = [[] for _ in range(docs.height)]
    rows = np.flatnonzero(supported)
    if rows.size:
        embeddings = docs["embedding"].to_numpy()[rows]
        proba = head.predict_proba(embeddings)
        positive = head.labels.index(POSITIVE)
        for r, p in zip(rows, proba, strict=True):
            labels[r] = head.labels[int(p.argmax())]
            scores[r] = float(p[positive])
        texts = docs["text"].to_list()
        for r, ents in zip(rows, ner.entities([texts[r] for r in rows]), strict=True):
            entities[r] = ents

    skipped = [
        None if ok else f"language '{lang}' is not among the models' languages {list(languages)}"
        for ok, lang in zip(supported, docs["lang"].to_list(), strict=True)
    ]
    return (
        docs.select("doc_id", "ingest_date", "source", "lang", "is_duplicate")
        .with_columns(
            pl.Series("sentiment_label", labels, dtype=pl.String),
            pl.Series("sentiment_score", scores, dtype=pl.Float64),
            pl.lit(sentiment_model_name).alias("sentiment_model"),
            pl.lit(head.version).alias("sentiment_model_version"),
            pl.Series("entities", entities, dtype=pl.List(ENTITY_STRUCT)),
            pl.lit(ner.name).alias("ner_model"),
            pl.lit(ner.version).alias("ner_model_version"),
            pl.Series("skipped_reason", skipped, dtype=pl.String),
        )
        .cast(PREDICTIONS_SCHEMA)  # type: ignore[arg-type]
    )
