"""`POST /v1/predict`'s work: texts to the pipeline's predictions, answered now, written nowhere.

The same kernels as the stages, in the same order: cleaning and language id
(`clean_documents`), the embedder's tokens (`tokenize_documents`), embeddings through the result
cache (`CachedEmbedder`), then sentiment (the latest trained head, or the configured text model,
with the A/B split by document id) and entities (`predict_documents`, with `prediction_models`).
The models are the pipeline's registry (`models_from_env`, as the code location builds it): with
`NLP_MODEL_SERVER_URL` set they run on the model server, which batches concurrent requests;
without it they load in this process once.

Requests are batched: every request queued while the previous kernel call ran (up to
`BATCH_TEXTS` texts) becomes one call (`resources/models/batching.py`), because a call's fixed
cost (frames, cleaning, the predictions kernel) is most of a one-text request's cost. Each
request gets its own texts' answers; the model work of the API process is one call at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nlp_assets.lake import Lake
from nlp_assets.resources.models.batching import Batcher, BatchMetrics

if TYPE_CHECKING:  # the kernels (scikit-learn, spaCy's helpers) load on the first request
    from nlp_assets.kernels.sentiment import SentimentHead

#: How long a loaded sentiment head is used before the lake is asked for a newer one.
HEAD_CHECK_SECONDS = 30.0
SOURCE = "api-predict"
#: Texts one kernel call takes at most (several requests' worth: a request has at most 64).
BATCH_TEXTS = 256


class NotReady(RuntimeError):
    """No trained sentiment head yet, or it does not match the embedder (503)."""


def text_id(text: str) -> str:
    """The document id a text gets here (the A/B split is by document id)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Predictor:
    """The models, result cache and sentiment head of the API process, built on first use."""

    def __init__(self, lake_dir: str, metrics: BatchMetrics):
        self.lake_dir, self.lake = lake_dir, Lake(lake_dir)
        self._starting = threading.Lock()  # starting the batcher (in the event loop: brief)
        self._built: tuple[Any, Any] | None = None
        self._head: tuple[SentimentHead, int | None, float] | None = None
        self._metrics = metrics
        self._batcher: Batcher | None = None
        # what `_resources` entered (their init contexts hold an in-memory Dagster instance,
        # whose SQLite connection must be closed by the thread that opened it: the batcher's)
        self._contexts = contextlib.ExitStack()

    def submit(self, texts: list[str], *, embedding: bool = False) -> Future:
        """Queue one request's texts for the next kernel call; the future gives
        `(answers, seconds)` for `response`, or the call's error (`NotReady`, ...)."""
        with self._starting:
            if self._batcher is None:  # its thread starts with the first request
                self._batcher = Batcher(
                    "/v1/predict",
                    self._run,
                    self._metrics,
                    max_rows=BATCH_TEXTS,
                    on_close=self._contexts.close,
                )
        return self._batcher.submit([(text, embedding) for text in texts])

    def predict(self, texts: list[str], *, embedding: bool = False) -> dict[str, Any]:
        """One request's answer, waiting for its kernel call."""
        return response(self.submit(texts, embedding=embedding).result())

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def _run(self, items: list[tuple[str, bool]]) -> list[tuple[dict[str, Any], str | None]]:
        """The batcher's call: each item's answer (with its embedding when it asked for one)
        and the embedder that made it."""
        texts = [text for text, _ in items]
        answers, embedder = self._predict_texts(texts, embedding=any(e for _, e in items))
        for answer, (_, wanted) in zip(answers, items, strict=True):
            if not wanted:
                answer.pop("embedding", None)
        return [(answer, embedder) for answer in answers]

    def _resources(self) -> tuple[Any, Any]:
        """Built once, by the batcher's thread (the only caller)."""
        if self._built is None:
            # the pipeline's own resources from the same environment, without loading the
            # code location (its Spark, Kafka and schema-check libraries)
            from nlp_assets.resources.model_cache import model_cache_from_env
            from nlp_assets.resources.models import models_from_env

            models, cache = (
                self._contexts.enter_context(resource.process_config_and_initialize_cm())
                for resource in (models_from_env(self.lake_dir), model_cache_from_env())
            )
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

    def _predict_texts(
        self, texts: list[str], *, embedding: bool
    ) -> tuple[list[dict[str, Any]], str]:
        from nlp_assets.engines.workers import prediction_models
        from nlp_assets.kernels.clean import clean_documents
        from nlp_assets.kernels.ingest import RAW_SCHEMA
        from nlp_assets.kernels.predict import predict_documents
        from nlp_assets.kernels.sentiment import SENTIMENT_MODEL_NAME
        from nlp_assets.kernels.tokenize import tokenize_documents
        from nlp_assets.resources.model_cache import CacheStats
        from nlp_assets.resources.models import CachedEmbedder, InferenceStats

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
        return results, f"{embedder.name}@{embedder.version}"


def response(part: tuple[list[tuple[dict[str, Any], str | None]], float]) -> dict[str, Any]:
    """A request's body from its slice of a kernel call (`Predictor.submit`'s result)."""
    answers, seconds = part
    embedded = [name for answer, name in answers if "embedding" in answer]
    return {
        "results": [answer for answer, _ in answers],
        "embedding_model": embedded[0] if embedded else None,
        "seconds": round(seconds, 4),  # this request's share of the call
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
