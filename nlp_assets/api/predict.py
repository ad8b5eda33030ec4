"""`POST /v1/predict`'s work: texts to the pipeline's predictions, answered now, written nowhere.

The same kernels as the stages, in the same order: cleaning and language id
(`clean_documents`), the embedder's tokens (`tokenize_documents`), embeddings through the result
cache (`CachedEmbedder`), then sentiment (the latest trained head, or the configured text model,
with the A/B split by document id) and entities (`predict_documents`, with `prediction_models`).
The models are the pipeline's registry (`build_resources()["models"]`): with
`NLP_MODEL_SERVER_URL` set they run on the model server, which batches concurrent requests;
without it they load in this process once, and model work is serialised here.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nlp_assets import settings
from nlp_assets.lake import Lake

if TYPE_CHECKING:  # the kernels (scikit-learn, spaCy's helpers) load on the first request
    from nlp_assets.kernels.sentiment import SentimentHead

#: How long a loaded sentiment head is used before the lake is asked for a newer one.
HEAD_CHECK_SECONDS = 30.0
SOURCE = "api-predict"


class NotReady(RuntimeError):
    """No trained sentiment head yet, or it does not match the embedder (503)."""


def text_id(text: str) -> str:
    """The document id a text gets here (the A/B split is by document id)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Predictor:
    """The models, result cache and sentiment head of the API process, built on first use."""

    def __init__(self, lake_dir: str):
        self.lake_dir, self.lake = lake_dir, Lake(lake_dir)
        self._lock = threading.Lock()  # building; and model work without a server
        self._built: tuple[Any, Any] | None = None
        self._head: tuple[SentimentHead, int | None, float] | None = None

    def _resources(self) -> tuple[Any, Any]:
        with self._lock:
            if self._built is None:
                from nlp_assets.definitions import build_resources

                resources = build_resources(lake_dir=self.lake_dir)
                models = resources["models"].process_config_and_initialize()  # type: ignore[attr-defined]
                cache = resources["model_cache"].process_config_and_initialize()  # type: ignore[attr-defined]
                self._built = (models, cache)
            return self._built

    def head(self) -> SentimentHead:
        """The latest materialised `sentiment_model` (re-read when its table has a newer
        version, checked at most every `HEAD_CHECK_SECONDS`)."""
        now = time.monotonic()
        if self._head is not None and now - self._head[2] < HEAD_CHECK_SECONDS:
            return self._head[0]
        version = self.lake.version("sentiment_model")
        if version is None:
            raise NotReady(
                "no sentiment model yet: materialise the asset sentiment_model (make run does)"
            )
        if self._head is None or self._head[1] != version:
            from nlp_assets.kernels.sentiment import SentimentHead

            head = SentimentHead.from_frame(self.lake.read_part("sentiment_model", None))
            self._head = (head, version, now)
        else:
            self._head = (self._head[0], version, now)
        return self._head[0]

    def predict(self, texts: list[str], *, embedding: bool = False) -> dict[str, Any]:
        from nlp_assets.engines.workers import prediction_models
        from nlp_assets.kernels.clean import clean_documents
        from nlp_assets.kernels.ingest import RAW_SCHEMA
        from nlp_assets.kernels.predict import predict_documents
        from nlp_assets.kernels.tokenize import tokenize_documents
        from nlp_assets.resources.model_cache import CacheStats
        from nlp_assets.resources.models import CachedEmbedder, InferenceStats
        from nlp_assets.stages.predictions import SENTIMENT_MODEL_NAME

        head = self.head()
        models, cache = self._resources()
        unique = list(dict.fromkeys(texts))
        now = datetime.now(UTC)
        raw = pl.DataFrame(
            {
                "doc_id": [text_id(t) for t in unique],
                "source": [SOURCE] * len(unique),
                "event_time": [now] * len(unique),
                "ingest_date": [now.date()] * len(unique),
                "text": unique,
            }
        ).with_columns(
            pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in RAW_SCHEMA.items()
            if name not in ("doc_id", "source", "event_time", "ingest_date", "text")
        )
        cleaned = clean_documents(raw.select(list(RAW_SCHEMA)).cast(RAW_SCHEMA), now.date())  # type: ignore[arg-type]
        refused = {row["doc_id"]: row["reason"] for row in cleaned.quarantine.iter_rows(named=True)}
        docs = cleaned.docs
        stats, inference = CacheStats(), InferenceStats()
        server = settings.model_server() is not None
        with contextlib.nullcontext() if server else self._lock:
            served = models.serve("embedding")
            embedder = served.model
            if embedder.version != head.embedding_model_version:
                raise NotReady(
                    f"sentiment_model was trained on {head.embedding_model}@"
                    f"{head.embedding_model_version} embeddings but the embedder is "
                    f"{embedder.name}@{embedder.version}: re-materialise sentiment_model"
                )
            tokens = tokenize_documents(docs, embedder.tokenizer, embedder.read_length)
            cached = dict(
                cache=cache.backend(),
                namespace=cache.namespace,
                stats=stats,
                inference=inference,
            )
            vectors = CachedEmbedder(embedder, docs["text"].to_list(), **cached).embed_token_ids(
                tokens["token_ids"].to_list()
            )
            features = tokens.select("doc_id", "ingest_date").with_columns(
                pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, embedder.dim))
            )
            chosen = prediction_models(models, models.serve, models.model_registry().get, **cached)
            frame = predict_documents(
                docs,
                features,
                head,
                chosen.ner,
                sentiment_model_name=SENTIMENT_MODEL_NAME,
                sentiment_text_model=chosen.text_model,
                sentiment_candidate=chosen.candidates.get("sentiment"),
                ner_candidate=chosen.candidates.get("entities"),
            )
        by_id = {row["doc_id"]: row for row in frame.iter_rows(named=True)}
        vector_of = dict(zip(docs["doc_id"].to_list(), vectors, strict=True))
        results = []
        for text in texts:
            doc_id = text_id(text)
            if doc_id in refused:
                results.append({"error": refused[doc_id]})
                continue
            results.append(_answer(by_id[doc_id], vector_of[doc_id] if embedding else None))
        return {
            "results": results,
            "embedding_model": f"{embedder.name}@{embedder.version}" if embedding else None,
            "cache_hits": stats.hits,
            "model_seconds": round(stats.model_seconds, 4),
        }


def _answer(row: dict[str, Any], vector: np.ndarray | None) -> dict[str, Any]:
    """One text's answer: what its row of `predictions` would hold."""
    out: dict[str, Any] = {
        "language": row["lang"],
        "sentiment": None
        if row["sentiment_label"] is None
        else {
            "label": row["sentiment_label"],
            "score": row["sentiment_score"],
            "model": f"{row['sentiment_model']}@{row['sentiment_model_version']}",
        },
        "entities": [
            {k: e[k] for k in ("text", "label", "start_char", "end_char")}
            for e in row["entities"] or []
        ],
        "ner_model": f"{row['ner_model']}@{row['ner_model_version']}",
        "skipped_reason": row["skipped_reason"],
    }
    if vector is not None:
        out["embedding"] = [float(x) for x in vector]
    return out
