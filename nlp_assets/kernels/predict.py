"""Stage 5, predictions: sentiment (label, P(positive)) and named entities per document."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import polars as pl

from nlp_assets.kernels.ingest import traceparent_column

if TYPE_CHECKING:  # scikit-learn stays out of readers of the schema (the API's slim image)
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
    "trace_id": pl.String(),  # the document's trace (its raw traceparent's), nlp_assets.tracing
    "sentiment_label": pl.String(),
    "sentiment_score": pl.Float64(),
    "sentiment_model": pl.String(),
    "sentiment_model_version": pl.String(),
    "entities": pl.List(ENTITY_STRUCT),
    "ner_model": pl.String(),
    "ner_model_version": pl.String(),
    "skipped_reason": pl.String(),
}
#: The columns of PREDICTIONS_SCHEMA the models fill (the first six are the document's).
PREDICTED_COLUMNS: tuple[str, ...] = tuple(PREDICTIONS_SCHEMA)[6:]

POSITIVE = "positive"


class EntityModel(Protocol):
    name: str
    version: str

    def entities(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]: ...


class TextSentimentModel(Protocol):
    """A sentiment model reading text (e.g. a Hugging Face sequence classifier)."""

    name: str
    version: str
    labels: tuple[str, ...]

    def predict_proba_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Candidate:
    """An A/B candidate: serves the documents whose doc_id hash falls under `share`."""

    model: Any
    share: float
    salt: str = ""


def ab_candidate_rows(doc_ids: Sequence[str], share: float, salt: str = "") -> np.ndarray:
    """Deterministic A/B split: True where a document goes to the candidate. The same doc_id
    always lands on the same side, whatever else is in the batch."""
    if share <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    cut = math.floor(share * 2**64)
    return np.array(
        [
            int.from_bytes(hashlib.sha256(f"{salt}\x1f{d}".encode()).digest()[:8], "big") < cut
            for d in doc_ids
        ],
        dtype=bool,
    )


def _sentiment(
    model: SentimentHead | TextSentimentModel, embeddings: np.ndarray, texts: list[str]
) -> tuple[list[str], list[float]]:
    """Labels and P(positive) from a head over embeddings or a text model."""
    from nlp_assets.kernels.sentiment import SentimentHead

    if isinstance(model, SentimentHead):
        proba = model.predict_proba(embeddings)
    else:
        proba = model.predict_proba_texts(texts)
    if POSITIVE not in model.labels:
        raise ValueError(
            f"sentiment model {getattr(model, 'name', 'head')} has labels {model.labels}, none "
            f"is {POSITIVE!r}: map them with the registry entry's label_map"
        )
    positive = model.labels.index(POSITIVE)
    labels = [model.labels[int(i)] for i in proba.argmax(axis=1)]
    return labels, [float(p) for p in proba[:, positive]]


def trace_id_expr(cleaned: pl.DataFrame) -> pl.Expr:
    """The trace id of each document's `traceparent` (a table written before traces: null)."""
    return traceparent_column(cleaned).str.slice(3, 32).alias("trace_id")


def predict_documents(
    cleaned: pl.DataFrame,
    features: pl.DataFrame,
    head: SentimentHead | None,
    ner: EntityModel,
    *,
    sentiment_model_name: str,
    languages: Sequence[str] = ("en",),
    sentiment_text_model: TextSentimentModel | None = None,
    sentiment_candidate: Candidate | None = None,
    ner_candidate: Candidate | None = None,
) -> pl.DataFrame:
    """Predict for every document of `features`; languages the models were not built for are
    kept with null predictions and a `skipped_reason`, never dropped.

    Sentiment comes from `head` (over the embeddings) unless `sentiment_text_model` serves it.
    A candidate serves its deterministic share of documents (by doc_id hash); every row records
    the name and version of the model that served it."""
    docs = features.select("doc_id", "ingest_date", "embedding").join(
        cleaned.select("doc_id", "source", "lang", "is_duplicate", "text", trace_id_expr(cleaned)),
        on="doc_id",
        how="left",
        maintain_order="left",
    )
    supported = docs["lang"].is_in(list(languages)).to_numpy()
    if features.height and not np.all(docs["embedding"].is_not_null().to_numpy()):
        raise ValueError("features has documents without an embedding")

    n = docs.height
    labels: list[str | None] = [None] * n
    scores: list[float | None] = [None] * n
    entities: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    sentiment_a = sentiment_text_model or head
    if sentiment_a is None:
        raise ValueError("no sentiment model: pass the trained head or a text model")
    name_a = sentiment_text_model.name if sentiment_text_model else sentiment_model_name
    sent_names, sent_versions = [name_a] * n, [sentiment_a.version] * n
    ner_names, ner_versions = [ner.name] * n, [ner.version] * n
    doc_ids = docs["doc_id"].to_list()
    texts = docs["text"].to_list()
    rows = np.flatnonzero(supported)
    if rows.size:
        embeddings = docs["embedding"].to_numpy()[rows]
        ids = [doc_ids[r] for r in rows]
        to_b = (
            ab_candidate_rows(ids, sentiment_candidate.share, sentiment_candidate.salt)
            if sentiment_candidate
            else np.zeros(rows.size, dtype=bool)
        )
        for arm, model, name in (
            (~to_b, sentiment_a, name_a),
            (to_b, sentiment_candidate.model if sentiment_candidate else None, ""),
        ):
            if model is None or not arm.any():
                continue
            arm_rows = rows[arm]
            arm_labels, arm_scores = _sentiment(
                model, embeddings[arm], [texts[r] for r in arm_rows]
            )
            for r, lab, score in zip(arm_rows, arm_labels, arm_scores, strict=True):
                labels[r], scores[r] = lab, score
                # name is "" only on the candidate's arm, whose model (Any) has its own name
                sent_names[r], sent_versions[r] = name or cast(Any, model).name, model.version
        to_b = (
            ab_candidate_rows(ids, ner_candidate.share, ner_candidate.salt)
            if ner_candidate
            else np.zeros(rows.size, dtype=bool)
        )
        for arm, model in ((~to_b, ner), (to_b, ner_candidate.model if ner_candidate else None)):
            if model is None or not arm.any():
                continue
            arm_rows = rows[arm]
            for r, ents in zip(arm_rows, model.entities([texts[r] for r in arm_rows]), strict=True):
                entities[r] = ents
                ner_names[r], ner_versions[r] = model.name, model.version

    skipped = [
        None if ok else f"language '{lang}' is not among the models' languages {list(languages)}"
        for ok, lang in zip(supported, docs["lang"].to_list(), strict=True)
    ]
    return (
        docs.select("doc_id", "ingest_date", "source", "lang", "is_duplicate", "trace_id")
        .with_columns(
            pl.Series("sentiment_label", labels, dtype=pl.String),
            pl.Series("sentiment_score", scores, dtype=pl.Float64),
            pl.Series("sentiment_model", sent_names, dtype=pl.String),
            pl.Series("sentiment_model_version", sent_versions, dtype=pl.String),
            pl.Series("entities", entities, dtype=pl.List(ENTITY_STRUCT)),
            pl.Series("ner_model", ner_names, dtype=pl.String),
            pl.Series("ner_model_version", ner_versions, dtype=pl.String),
            pl.Series("skipped_reason", skipped, dtype=pl.String),
        )
        .cast(PREDICTIONS_SCHEMA)  # type: ignore[arg-type]
    )
