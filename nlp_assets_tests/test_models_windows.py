"""Long documents: windows over the whole text, pooled into one vector (docs/models.md).

Most tests read windows of 48 tokens (the real model, a small layout) so a "long" document
stays cheap; one goes through the tokens and features kernels with the default layout.
"""

from __future__ import annotations

import copy
from datetime import date

import numpy as np
import polars as pl
import pytest

from nlp_assets import settings
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.model_cache import CacheStats, LruCache
from nlp_assets.resources.models import (
    CachedEmbedder,
    InferenceStats,
    ModelLoadError,
    ModelResource,
    SentenceEmbedder,
    default_embedding_model_path,
)

SENTENCES = [
    "The opening hour drags, and the dialogue is stiff.",
    "Then the second act finds its rhythm and the lead actor is superb.",
    "By the finale I was moved; the score and the photography are gorgeous.",
    "A few scenes run long, but the story earns its ending.",
    "Overall it is one of the warmest films of the year.",
]
LONG = " ".join(f"{s} (part {i})" for i in range(8) for s in SENTENCES)  # ~700 tokens
MEDIUM = " ".join(f"{s} (part {i})" for i in range(2) for s in SENTENCES)  # 178 tokens


def small(embedder: SentenceEmbedder, *, max_windows: int = 3, overlap: int = 8):
    """The same loaded model reading windows of 48 tokens."""
    out = copy.copy(embedder)
    out.max_length, out.max_windows, out.window_overlap = 48, max_windows, overlap
    return out


def independent_windows(ids: list[int], width: int, step: int, cap: int) -> list[list[int]]:
    """[CLS] + a slice of the text tokens + [SEP], slices `step` apart, computed here."""
    cls, text, sep = ids[0], ids[1:-1], ids[-1]
    windows = []
    for start in range(0, len(text), step):
        windows.append([cls, *text[start : start + width], sep])
        if start + width >= len(text) or len(windows) == cap:
            break
    return windows


def pooled(vectors: list[np.ndarray], weights: list[int]) -> np.ndarray:
    total = sum(w * v.astype(np.float64) for v, w in zip(vectors, weights, strict=True))
    return total / np.linalg.norm(total)


def tolerance(embedder: SentenceEmbedder) -> float:
    return 1e-5 if embedder.dtype == "float32" else 1e-2


def test_a_long_documents_vector_is_the_mean_of_its_windows_embedded_alone(
    embedder,
):
    model = small(embedder, max_windows=10)
    ids = model.tokenize([MEDIUM])[0]
    windows = independent_windows(ids, width=46, step=38, cap=10)
    assert len(windows) == 5 and model.windows(ids) == windows
    assert len(windows[-1]) < len(windows[0])  # shorter, yet it counts as much as the others
    alone = [model.embed_token_ids([w])[0] for w in windows]  # one window each: one pass
    expected = pooled(alone, [1] * len(windows))

    vector = model.embed_token_ids([ids])[0]

    np.testing.assert_allclose(vector, expected, atol=tolerance(model))
    assert float(vector @ alone[0]) < 0.99  # the later windows really count


def test_a_short_document_is_one_pass_as_before_windowing(embedder):
    short = "The battery lasts two days and the screen is bright."
    ids = embedder.tokenize([short])[0]
    first_window_only = copy.copy(embedder)
    first_window_only.max_windows = 1  # the embedder before windowing: its first 256 tokens

    assert first_window_only.tokenize([short])[0] == ids
    assert embedder.windows(ids) == [ids]
    alone = embedder.embed_token_ids([ids])
    np.testing.assert_array_equal(alone, embedder.embed_windows([ids]))
    np.testing.assert_array_equal(alone, first_window_only.embed_token_ids([ids]))
    # beside a long document in one call, the short one still gets its one-pass vector
    mixed = embedder.embed_token_ids([embedder.tokenize([LONG * 4])[0], ids])
    np.testing.assert_allclose(mixed[1], alone[0], atol=tolerance(embedder))


def test_the_windows_cap_bounds_what_is_read_and_the_text_beyond_it_changes_nothing(embedder):
    model = small(embedder, max_windows=2)
    ids = model.tokenize([LONG])[0]
    assert len(ids) == model.read_length == 48 + 38  # two windows, cut with its [SEP]
    assert ids[-1] == model.tokenizer.sep_token_id
    assert len(model.windows(ids)) == model.n_windows(len(ids)) == 2
    other_ending = LONG.replace("part 7", "part seven, a sad and dreadful ending")
    a, b = (model.embed_texts([text])[0] for text in (LONG, other_ending))
    np.testing.assert_array_equal(a, b)  # the change is past the cap: not read
    windows = independent_windows(ids, width=46, step=38, cap=2)
    alone = [model.embed_token_ids([w])[0] for w in windows]
    np.testing.assert_allclose(a, pooled(alone, [1, 1]), atol=tolerance(model))

    cleaned = pl.DataFrame(
        {"doc_id": ["long"], "ingest_date": [date(2026, 11, 16)], "text": [LONG]}
    )
    tokens = tokenize_documents(cleaned, model.tokenizer, model.read_length)
    assert tokens["token_ids"][0].to_list() == ids
    assert tokens["truncated"][0] and tokens["n_tokens"][0] > model.read_length


def test_the_windows_cap_is_the_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("NLP_EMBEDDING_MAX_WINDOWS", "3")
    resource = ModelResource(device="cpu")
    assert resource.max_windows == 3
    assert resource.specs()[resource.embedding_model_name].max_windows == 3
    assert ModelResource(device="cpu", max_windows=1).max_windows == 1  # config wins
    monkeypatch.setenv("NLP_EMBEDDING_MAX_WINDOWS", "0")
    with pytest.raises(ValueError, match="NLP_EMBEDDING_MAX_WINDOWS"):
        settings.embedding_max_windows()


def test_features_of_a_long_document_pool_all_its_windows_with_the_default_layout(embedder):
    text = " ".join([LONG] * 3)  # ~1,000 tokens: several 256-token windows
    cleaned = pl.DataFrame(
        {
            "doc_id": ["long", "short"],
            "ingest_date": [date(2026, 11, 16)] * 2,
            "text": [text, "Short and sweet."],
            "lang": ["en", "en"],
        }
    )
    tokens = tokenize_documents(cleaned, embedder.tokenizer, embedder.read_length)
    ids = tokens["token_ids"][0].to_list()
    windows = independent_windows(
        ids, embedder.max_length - 2, embedder.window_step, embedder.max_windows
    )
    assert len(windows) == embedder.n_windows(len(ids)) > 1

    frame = build_features(cleaned, tokens, embedder)

    vectors = embedder.embed_windows(windows)
    expected = pooled(list(vectors), [1] * len(windows))
    np.testing.assert_allclose(frame["embedding"][0].to_numpy(), expected, atol=tolerance(embedder))


def test_the_cache_misses_when_window_settings_differ_for_the_same_token_ids(embedder):
    """Vectors pooled under another overlap or cap are another cache entry, never served."""
    model = small(embedder, max_windows=4)
    texts = [LONG]
    ids = model.tokenize(texts)
    cache = LruCache(1 << 20)

    def run(m: SentenceEmbedder) -> tuple[CacheStats, np.ndarray]:
        stats = CacheStats()
        out = CachedEmbedder(m, texts, cache, "t", stats, InferenceStats()).embed_token_ids(ids)
        return stats, out

    first, vector = run(model)
    again, cached = run(model)
    more_overlap = small(embedder, max_windows=4, overlap=20)
    wider_cap = small(embedder, max_windows=8)  # reads the same ids: all fit in 4 windows
    versions = {m.cache_version for m in (model, more_overlap, wider_cap)}
    changed, other = run(more_overlap)
    capped, _ = run(wider_cap)

    assert len(versions) == 3
    assert (first.misses, again.hits, changed.misses, capped.misses) == (1, 1, 1, 1)
    np.testing.assert_array_equal(cached, vector)
    assert float(other[0] @ vector[0]) < 1 - 1e-6  # really another vector


def test_a_window_longer_than_the_models_positions_is_refused():
    with pytest.raises(ModelLoadError, match="512 positions"):
        SentenceEmbedder(default_embedding_model_path(), "too-long", "cpu", max_length=600)
