"""Cached use of the models (what the stages call), over `resources.model_cache`.

`CachedEmbedder`, `CachedEntities` and `TextSentiment` wrap a loaded model so that each result
is read from the result cache when there, computed and stored when not; `cache_version` names
what besides the input changes a result; `step_metadata` is the model metadata of one step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from nlp_assets.resources.model_cache import (
    CacheStats,
    ResultCache,
    cached_compute,
    entities_codec,
    probabilities_codec,
    vector_codec,
)
from nlp_assets.resources.models.adapters import SentenceEmbedder, SequenceClassifier
from nlp_assets.resources.models.specs import InferenceStats, Served

T = TypeVar("T")


def cache_version(model: Any) -> str:
    """The version a model's results are cached under: torch models add their dtype (bf16 and
    fp32 outputs differ slightly) and output settings (max_length, pooling, labels), spaCy its
    enabled pipes; test doubles have only a version."""
    return getattr(model, "cache_version", model.version)


def embedding_input_key(text: str, token_ids: Sequence[int]) -> str:
    """sha256 of a text and the token ids the embedder reads for it: a vector is keyed on its
    exact input, so token ids cut at another max_length or windows cap never share a key.
    The window width, step, cap and pooling are in the embedder's `cache_version`, the key's
    other half (`output_settings`)."""
    digest = hashlib.sha256(text.encode("utf-8"))
    digest.update(b"\0")
    digest.update(np.asarray(token_ids, dtype="<u4").tobytes())
    return digest.hexdigest()


class _Cached:
    """A model whose results are read from, or computed into, one cache namespace."""

    def __init__(
        self,
        model: Any,
        cache: ResultCache | None,
        namespace: str,
        stats: CacheStats,
        inference: InferenceStats,
        warn: Callable[[str], None] | None = None,
    ):
        self.model, self.cache, self.namespace, self.stats = model, cache, namespace, stats
        self.inference, self.warn = inference, warn
        self.name, self.version = model.name, model.version

    def _cached(
        self,
        inputs: Sequence[str],
        compute: Callable[[list[int]], Sequence[T]],
        codec: tuple[Callable[[T], bytes], Callable[[bytes], T]],
        input_keys: Sequence[str] | None = None,
    ) -> list[T]:
        """`compute(indices)` for the inputs the cache misses, the cache for the rest."""
        encode, decode = codec
        return cached_compute(
            list(inputs),
            compute,
            cache=self.cache,
            namespace=self.namespace,
            model=self.name,
            version=cache_version(self.model),
            encode=encode,
            decode=decode,
            stats=self.stats,
            warn=self.warn,
            input_keys=input_keys,
        )


class CachedEmbedder(_Cached):
    """An embedder whose results are cached by sha256 of the text each token list came from
    and of the token list itself (`texts` aligned with the token lists the kernel passes)."""

    def __init__(
        self,
        embedder: SentenceEmbedder,
        texts: Sequence[str],
        cache: ResultCache | None,
        namespace: str,
        stats: CacheStats,
        inference: InferenceStats,
        warn: Callable[[str], None] | None = None,
    ):
        super().__init__(embedder, cache, namespace, stats, inference, warn)
        self.embedder, self.texts, self.dim = embedder, texts, embedder.dim

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if len(token_ids) != len(self.texts) or any(t is None for t in self.texts):
            raise ValueError(
                f"{len(token_ids)} token lists for {len(self.texts)} texts (or a text is "
                "missing): every tokenised document needs its cleaned text"
            )
        vectors = self._cached(
            self.texts,
            lambda idx: list(
                self.embedder.embed_token_ids([token_ids[i] for i in idx], self.inference)
            ),
            vector_codec(self.dim, unit_norm=True),
            input_keys=[
                embedding_input_key(text, ids)
                for text, ids in zip(self.texts, token_ids, strict=True)
            ],
        )
        return np.vstack(vectors) if vectors else np.zeros((0, self.dim), dtype=np.float32)


class CachedEntities(_Cached):
    """An entity model whose results are cached by sha256 of the text (JSON values)."""

    def entities(self, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
        return self._cached(
            texts,
            lambda idx: self.model.entities([texts[i] for i in idx], self.inference),
            entities_codec(),
        )


class TextSentiment(_Cached):
    """A sequence classifier serving the sentiment task, cached by text (JSON probabilities)."""

    model: SequenceClassifier

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    def predict_proba_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = self._cached(
            texts,
            lambda idx: self.model.predict_proba_texts(
                [texts[i] for i in idx], self.inference
            ).tolist(),
            probabilities_codec(len(self.labels)),
        )
        return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(self.labels))


def served_metadata(served: Sequence[Served]) -> dict[str, Any]:
    """What the served models say of themselves: `backend`, `model_fallback_reason`, and
    `model_server` / `model_server_fallback` / `model_server_fallback_reason` when a model
    server is configured (resources/models/remote.py). Keys with nothing to say are left out."""
    out: dict[str, Any] = {}
    backends = [f"{s.model.name}: {s.model.backend}" for s in served if hasattr(s.model, "backend")]
    if backends:
        out["backend"] = ", ".join(backends)
    reasons = [s.fallback_reason for s in served if s.fallback]
    if reasons:
        out["model_fallback_reason"] = "; ".join(reasons)
    remote = [s.model for s in served if hasattr(s.model, "served_from")]
    if remote:
        out["model_server"] = ", ".join(sorted({m.served_from for m in remote}))
        fallbacks = [
            f"{m.name}: {m.server_fallback_reason}" for m in remote if m.server_fallback_reason
        ]
        out["model_server_fallback"] = int(bool(fallbacks))
        if fallbacks:
            out["model_server_fallback_reason"] = "; ".join(fallbacks)
    return out


def step_metadata(
    served: Sequence[Served], cache: CacheStats, inference: InferenceStats
) -> dict[str, Any]:
    """The contract's model metadata of one step (numbers are exported as metrics)."""
    out: dict[str, Any] = {
        **cache.metadata(),
        **inference.metadata(),
        "model_fallback": int(any(s.fallback for s in served)),
        "device": getattr(served[0].model, "device", "cpu") if served else "cpu",
        "dtype": ", ".join(
            f"{s.model.name}: {getattr(s.model, 'dtype', 'float32')}" for s in served
        ),
    }
    out.update(served_metadata(served))
    if cache.warnings:
        out["cache_warning"] = cache.warnings[0]
    return out
