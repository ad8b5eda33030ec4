from datetime import date

import polars as pl
import pytest

from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA, aggregate_day
from nlp_assets.kernels.features import NGRAM_STRUCT
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA

DAY = date(2026, 11, 16)


def _ent(text, label):
    return {"text": text, "label": label, "start_char": 0, "end_char": len(text)}


def _frames():
    rows = [
        # doc, lang, label, score, duplicate, entities, ngrams
        (
            "a",
            "en",
            "positive",
            0.9,
            False,
            [_ent("Acme", "ORG"), _ent("two", "CARDINAL")],
            [("great app", 2)],
        ),
        (
            "b",
            "en",
            "positive",
            0.7,
            True,
            [_ent("Acme", "ORG"), _ent("Berlin", "GPE")],
            [("great app", 1), ("fast", 1)],
        ),
        ("c", "en", "negative", 0.2, False, [_ent("Berlin", "GPE")], [("slow", 3)]),
        ("d", "fr", None, None, False, [], [("lent", 1)]),
    ]
    predictions = pl.DataFrame(
        {
            "doc_id": [r[0] for r in rows],
            "ingest_date": [DAY] * 4,
            "source": ["s"] * 4,
            "lang": [r[1] for r in rows],
            "is_duplicate": [r[4] for r in rows],
            "trace_id": [None] * 4,
            "sentiment_label": [r[2] for r in rows],
            "sentiment_score": [r[3] for r in rows],
            "sentiment_model": ["m"] * 4,
            "sentiment_model_version": ["v"] * 4,
            "entities": [r[5] for r in rows],
            "ner_model": ["n"] * 4,
            "ner_model_version": ["1"] * 4,
            "skipped_reason": [None, None, None, "language 'fr'"],
        },
        schema=PREDICTIONS_SCHEMA,
    )
    features = pl.DataFrame(
        {
            "doc_id": [r[0] for r in rows],
            "ngrams": [[{"ngram": g, "count": c} for g, c in r[6]] for r in rows],
        },
        schema={"doc_id": pl.String, "ngrams": pl.List(NGRAM_STRUCT)},
    )
    return predictions, features


def test_groups_counts_means_and_top_terms():
    frame = aggregate_day(*_frames())
    assert frame.schema == pl.Schema(AGGREGATES_SCHEMA)
    groups = {(r["lang"], r["sentiment_label"]): r for r in frame.iter_rows(named=True)}
    assert set(groups) == {("en", "positive"), ("en", "negative"), ("fr", None)}
    pos = groups[("en", "positive")]
    assert (pos["n_docs"], pos["n_duplicates"]) == (2, 1)
    assert pos["mean_sentiment_score"] == pytest.approx(0.8)
    assert pos["top_entities"][0] == {"text": "Acme", "label": "ORG", "count": 2}
    assert all(e["label"] != "CARDINAL" for e in pos["top_entities"])
    assert pos["top_ngrams"][0] == {"ngram": "great app", "count": 3}
    skipped = groups[("fr", None)]
    assert skipped["mean_sentiment_score"] is None and skipped["top_entities"] == []
    assert frame["n_docs"].sum() == 4


def test_empty_day_gives_no_groups():
    predictions, features = _frames()
    frame = aggregate_day(predictions.clear(), features.clear())
    assert frame.height == 0
    assert frame.schema == pl.Schema(AGGREGATES_SCHEMA)
