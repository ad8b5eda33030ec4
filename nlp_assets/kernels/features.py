"""Stage 4, features: word n-grams, per-partition TF-IDF top terms, sentence embeddings."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

NGRAM_STRUCT = pl.Struct({"ngram": pl.String(), "count": pl.Int64()})
TERM_STRUCT = pl.Struct({"term": pl.String(), "score": pl.Float64()})

#: Letters with inner apostrophes; digits, punctuation and our [URL]-style masks are not words.
WORD = r"[^\W\d_]+(?:['’][^\W\d_]+)*"
MASK = r"\[(?:URL|EMAIL|PHONE)\]"


class Embedder(Protocol):
    name: str
    version: str
    dim: int

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray: ...


def features_schema(dim: int) -> dict[str, pl.DataType]:
    return {
        "doc_id": pl.String(),
        "ingest_date": pl.Date(),
        "ngrams": pl.List(NGRAM_STRUCT),
        "tfidf_terms": pl.List(TERM_STRUCT),
        "embedding": pl.Array(pl.Float32(), dim),
        "embedding_model": pl.String(),
        "embedding_model_version": pl.String(),
    }


def words(texts: pl.Expr) -> pl.Expr:
    """Lower-cased words of a text column (a list column)."""
    return texts.str.replace_all(MASK, " ").str.to_lowercase().str.extract_all(WORD)


LANG_CODE = re.compile(r"[a-z]{2,3}")


@cache
def stop_words(lang: str | None) -> frozenset[str]:
    """spaCy's stop words for the language (English for unknown or unsupported ones).

    Read from the file `spacy/lang/<lang>/stop_words.py` alone (a plain `STOP_WORDS` set):
    `spacy.util.get_lang_class` scans every installed package's entry points (0.4 s a
    language), and importing `spacy.lang.fr` compiles its tokenizer exceptions (3.8 s),
    profiled; a day of short texts detects about ten languages.
    """
    if not lang or not LANG_CODE.fullmatch(lang):
        lang = "en"
    spec = importlib.util.find_spec("spacy")
    roots = spec.submodule_search_locations if spec else None
    path = Path(next(iter(roots or [])), "lang", lang, "stop_words.py")
    if not path.is_file():
        return frozenset() if lang == "en" else stop_words("en")
    loader = importlib.util.spec_from_file_location(f"_spacy_stop_words_{lang}", path)
    if loader is None or loader.loader is None:
        return stop_words("en")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return frozenset(module.STOP_WORDS)


def ngram_counts(tokens: Sequence[str], max_n: int = 3, lang: str | None = "en") -> Counter[str]:
    """Word n-grams (1..max_n) that neither start nor end with a stop word."""
    counts: Counter[str] = Counter()
    stops = stop_words(lang)
    content = [len(w) > 1 and w not in stops for w in tokens]
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            if content[i] and content[i + n - 1]:
                counts[" ".join(tokens[i : i + n])] += 1
    return counts


def long_ngram_frame(
    doc_ids: Sequence[str], doc_words: Sequence[Sequence[str]], langs: Sequence[str | None]
) -> pl.DataFrame:
    """One row per (document, n-gram): doc_id, ngram, n (words), count."""
    ids: list[str] = []
    grams: list[str] = []
    counts: list[int] = []
    for doc_id, tokens, lang in zip(doc_ids, doc_words, langs, strict=True):
        for gram, count in ngram_counts(tokens, lang=lang).items():
            ids.append(doc_id)
            grams.append(gram)
            counts.append(count)
    return pl.DataFrame(
        {"doc_id": ids, "ngram": grams, "count": counts},
        schema={"doc_id": pl.String, "ngram": pl.String, "count": pl.Int64},
    ).with_columns((pl.col("ngram").str.count_matches(" ") + 1).cast(pl.Int8).alias("n"))


def tfidf_terms(long: pl.DataFrame) -> pl.DataFrame:
    """The (document, term) rows TF-IDF weighs: unigrams and bigrams."""
    return long.filter(pl.col("n") <= 2)


def document_frequencies(long: pl.DataFrame) -> pl.DataFrame:
    """`ngram`, `df`: in how many documents each TF-IDF term occurs."""
    return tfidf_terms(long).group_by("ngram").agg(pl.len().alias("df"))


def tfidf_top_terms(
    long: pl.DataFrame, n_docs: int, top_k: int = 10, doc_freq: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per-document top TF-IDF terms (unigrams and bigrams), idf over this set of documents.

    Smooth idf as in scikit-learn: ln((1 + N) / (1 + df)) + 1, weights L2-normalised per document.
    `doc_freq` and `n_docs` may describe a larger set than `long` (the whole day, when a
    distributed engine hands this function one batch of it).
    """
    terms = tfidf_terms(long)
    doc_freq = document_frequencies(long) if doc_freq is None else doc_freq
    return (
        # row order fixes the order of the norm's float sum: the same scores on every engine
        terms.join(doc_freq, on="ngram", maintain_order="left")
        .with_columns(
            (pl.col("count") * (((1 + n_docs) / (1 + pl.col("df"))).log() + 1)).alias("w")
        )
        .with_columns((pl.col("w") / (pl.col("w") ** 2).sum().over("doc_id").sqrt()).alias("score"))
        .sort(["doc_id", "score", "ngram"], descending=[False, True, False])
        .group_by("doc_id", maintain_order=True)
        .agg(pl.struct(pl.col("ngram").alias("term"), "score").head(top_k).alias("tfidf_terms"))
    )


def top_ngrams(long: pl.DataFrame, top_k: int = 50) -> pl.DataFrame:
    return (
        long.sort(["doc_id", "count", "ngram"], descending=[False, True, False])
        .group_by("doc_id", maintain_order=True)
        .agg(pl.struct("ngram", "count").head(top_k).alias("ngrams"))
    )


def build_features(
    cleaned: pl.DataFrame,
    tokens: pl.DataFrame,
    embedder: Embedder,
    *,
    top_ngrams_k: int = 50,
    top_terms_k: int = 10,
    doc_freq: pl.DataFrame | None = None,
    n_docs: int | None = None,
) -> pl.DataFrame:
    """One row per document of `tokens`, in its order.

    TF-IDF's idf is over these documents unless `doc_freq` (`ngram`, `df`) and `n_docs` give
    the statistics of the whole day they belong to.
    """
    docs = tokens.select("doc_id", "ingest_date", "token_ids").join(
        cleaned.select("doc_id", "text", "lang"), on="doc_id", how="left", maintain_order="left"
    )
    doc_words = docs.select(words(pl.col("text")).alias("w"))["w"].to_list()
    long = long_ngram_frame(
        docs["doc_id"].to_list(), [w or [] for w in doc_words], docs["lang"].to_list()
    )
    vectors = embedder.embed_token_ids(docs["token_ids"].to_list())
    schema = features_schema(embedder.dim)
    return (
        docs.select("doc_id", "ingest_date")
        .join(top_ngrams(long, top_ngrams_k), on="doc_id", how="left", maintain_order="left")
        .join(
            tfidf_top_terms(long, docs.height if n_docs is None else n_docs, top_terms_k, doc_freq),
            on="doc_id",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.col("ngrams").fill_null(pl.lit([], dtype=schema["ngrams"])),
            pl.col("tfidf_terms").fill_null(pl.lit([], dtype=schema["tfidf_terms"])),
            pl.Series("embedding", vectors.astype(np.float32), dtype=schema["embedding"]),
            pl.lit(embedder.name).alias("embedding_model"),
            pl.lit(embedder.version).alias("embedding_model_version"),
        )
        .select(list(schema))
        .cast(schema)  # type: ignore[arg-type]
    )
