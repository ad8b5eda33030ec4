from datetime import date

import numpy as np
import polars as pl
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from nlp_assets.kernels.features import (
    build_features,
    features_schema,
    long_ngram_frame,
    ngram_counts,
    stop_words,
    tfidf_top_terms,
)
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.models import MIN_COSINE
from nlp_assets.resources.models.device import BATCH_ROWS

DAY = date(2026, 11, 16)
TEXTS = [
    "The new update made the app faster. The app loads quickly now.",
    "Le service client était très lent et la livraison en retard.",
    "Stock markets fell sharply as investors worried about interest rates.",
    "The app crashed twice today; the new update is buggy.",
]


def _cleaned(texts: list[str], langs: list[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{i:016x}" for i in range(len(texts))],
            "ingest_date": [DAY] * len(texts),
            "text": texts,
            "lang": langs or ["en"] * len(texts),
        },
        schema={"doc_id": pl.String, "ingest_date": pl.Date, "text": pl.String, "lang": pl.String},
    )


def test_ngrams_skip_stop_word_edges_and_count_repeats():
    counts = ngram_counts(["the", "app", "is", "fast", "and", "the", "app", "is", "new"])
    assert counts["app"] == 2
    assert "the" not in counts and "the app" not in counts and "app is" not in counts
    assert counts["app is fast"] == 1  # stop words inside an n-gram are kept
    assert max(len(g.split()) for g in counts) == 3


def test_ngrams_use_the_documents_language_stop_words():
    german = ["die", "katze", "und", "der", "hund"]
    assert "und" not in ngram_counts(german, lang="de")
    assert "katze und der hund" not in ngram_counts(german, lang="de")
    assert "katze" in ngram_counts(german, lang="de")


def test_tfidf_matches_scikit_learn_on_the_same_terms():
    docs = [t.lower().replace(".", "").replace(";", "").split() for t in TEXTS]
    ids = [f"d{i}" for i in range(len(docs))]
    long = long_ngram_frame(ids, docs, ["en"] * len(docs))
    ours = tfidf_top_terms(long, len(docs), top_k=1_000)

    # scikit-learn on exactly our unigram and bigram vocabulary
    vocab = sorted(set(long.filter(pl.col("n") <= 2)["ngram"].to_list()))
    vectorizer = TfidfVectorizer(
        vocabulary=vocab, ngram_range=(1, 2), token_pattern=r"\S+", lowercase=False
    )
    matrix = vectorizer.fit_transform([" ".join(d) for d in docs]).toarray()
    for row, doc_id in enumerate(ids):
        terms = ours.filter(pl.col("doc_id") == doc_id)["tfidf_terms"][0].to_list()
        for term in terms:
            expected = matrix[row, vectorizer.vocabulary_[term["term"]]]
            assert term["score"] == pytest.approx(expected, rel=1e-9)
        scores = [t["score"] for t in terms]
        assert scores == sorted(scores, reverse=True)


def test_features_rows_align_with_tokens_and_embeddings_are_unit_vectors(embedder):
    cleaned = _cleaned(TEXTS, ["en", "fr", "en", "en"])
    tokens = tokenize_documents(cleaned, embedder.tokenizer, 256)
    frame = build_features(cleaned, tokens, embedder)
    assert frame.schema == pl.Schema(features_schema(embedder.dim))
    assert frame["doc_id"].to_list() == cleaned["doc_id"].to_list()
    vectors = frame["embedding"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the two app-update reviews are closer to each other than to the markets news
    sim = vectors @ vectors.T
    assert sim[0, 3] > sim[0, 2] + 0.2
    assert frame["tfidf_terms"][0].to_list()[0]["term"] == "app"
    assert frame["embedding_model_version"][0] == embedder.version


def test_batched_embeddings_equal_one_at_a_time(embedder):
    """Length-sorted, padded batches give the same vectors as unbatched inference."""
    texts = [*TEXTS, "short", " ".join(["long text"] * 200)]
    ids = embedder.tokenize(texts)
    batched = embedder.embed_token_ids(ids)
    single = np.vstack([embedder.embed_token_ids([row]) for row in ids])
    cosine = np.sum(batched * single, axis=1)
    # bf16 autocast (the default on CPUs with bf16) rounds differently per batch shape
    assert cosine.min() > (0.99999 if embedder.dtype == "float32" else MIN_COSINE)


def test_empty_day_gives_an_empty_frame_with_the_schema(embedder):
    cleaned = _cleaned([])
    frame = build_features(cleaned, tokenize_documents(cleaned, embedder.tokenizer, 256), embedder)
    assert frame.height == 0
    assert frame.schema == pl.Schema(features_schema(embedder.dim))


def test_cpu_batches_are_capped_at_the_measured_rows_and_embed_the_same(embedder):
    """Batches of at most 64 texts on CPU (device.BATCH_ROWS, measured) give the vectors one
    budget-sized batch gives."""
    texts = [f"short review number {i}, quite good" for i in range(150)]
    assert embedder.device == "cpu" and embedder.batch_rows == BATCH_ROWS["cpu"] == 64
    capped = embedder.embed_texts(texts)
    embedder.batch_rows = 0  # the token budget alone: all 150 texts in one batch
    try:
        whole = embedder.embed_texts(texts)
    finally:
        embedder.batch_rows = BATCH_ROWS["cpu"]
    if embedder.dtype == "float32":
        assert np.abs(capped - whole).max() < 1e-5
    else:
        assert np.sum(capped * whole, axis=1).min() >= MIN_COSINE


@pytest.mark.parametrize("lang", ["en", "fr", "de", "nl", "es", "it", "pt", "ru", "ja"])
def test_stop_words_are_spacys_for_the_language(lang: str):
    import spacy.util

    expected = frozenset(spacy.util.get_lang_class(lang).Defaults.stop_words)
    assert expected and stop_words(lang) == expected


@pytest.mark.parametrize("lang", [None, "", "xx", "../../etc", "EN"])
def test_stop_words_of_an_unknown_or_odd_language_are_english(lang: str | None):
    assert stop_words(lang) == stop_words("en") and "the" in stop_words(lang)
