from datetime import date

import numpy as np
import polars as pl

from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead

DAY = date(2026, 11, 16)
DIM = 4


class FakeNer:
    name = "fake_ner"
    version = "1.0"

    def __init__(self):
        self.seen: list[str] = []

    def entities(self, texts):
        self.seen.extend(texts)
        return [
            [{"text": t.split()[0], "label": "ORG", "start_char": 0, "end_char": len(t.split()[0])}]
            for t in texts
        ]


def _inputs(langs: list[str]):
    n = len(langs)
    ids = [f"{i:016x}" for i in range(n)]
    cleaned = pl.DataFrame(
        {
            "doc_id": ids,
            "source": ["s"] * n,
            "lang": langs,
            "is_duplicate": [False] * n,
            "text": [f"Acme doc {i}" for i in range(n)],
        }
    )
    vectors = np.zeros((n, DIM), dtype=np.float32)
    vectors[:, 0] = [1.0 if i % 2 else -1.0 for i in range(n)]
    # features in another order than cleaned: the join must not rely on row order
    features = pl.DataFrame(
        {
            "doc_id": ids[::-1],
            "ingest_date": [DAY] * n,
            "embedding": pl.Series(vectors[::-1], dtype=pl.Array(pl.Float32, DIM)),
        }
    )
    head = SentimentHead(
        ("negative", "positive"), np.array([[5.0, 0, 0, 0]]), np.array([0.0]), "m", "v"
    )
    return cleaned, features, head


def test_labels_scores_and_entities_per_document_with_model_versions():
    cleaned, features, head = _inputs(["en", "en", "en", "en"])
    ner = FakeNer()
    frame = predict_documents(cleaned, features, head, ner, sentiment_model_name="sent")
    assert frame.schema == pl.Schema(PREDICTIONS_SCHEMA)
    by_id = {r["doc_id"]: r for r in frame.iter_rows(named=True)}
    assert by_id[f"{1:016x}"]["sentiment_label"] == "positive"
    assert by_id[f"{0:016x}"]["sentiment_label"] == "negative"
    assert by_id[f"{1:016x}"]["sentiment_score"] == np.float64(1 / (1 + np.exp(-5.0)))
    assert by_id[f"{0:016x}"]["entities"][0] == {
        "text": "Acme",
        "label": "ORG",
        "start_char": 0,
        "end_char": 4,
    }
    assert set(frame["sentiment_model_version"]) == {head.version}
    assert set(frame["ner_model"]) == {"fake_ner"} and set(frame["ner_model_version"]) == {"1.0"}
    assert frame["doc_id"].to_list() == features["doc_id"].to_list()


def test_unsupported_languages_are_kept_with_a_reason_and_not_sent_to_the_models():
    cleaned, features, head = _inputs(["en", "fr", "de", "en"])
    ner = FakeNer()
    frame = predict_documents(cleaned, features, head, ner, sentiment_model_name="sent")
    assert frame.height == 4
    skipped = frame.filter(pl.col("lang") != "en")
    assert skipped["sentiment_label"].null_count() == 2
    assert skipped["entities"].list.len().to_list() == [0, 0]
    assert all("'fr'" in r or "'de'" in r for r in skipped["skipped_reason"])
    assert frame.filter(pl.col("lang") == "en")["skipped_reason"].null_count() == 2
    assert sorted(ner.seen) == ["Acme doc 0", "Acme doc 3"]


def test_real_entities_have_spans_into_the_cleaned_text(ner):
    cleaned, features, head = _inputs(["en"])
    text = "Apple opened a new office in Berlin with Tim Cook."
    cleaned = cleaned.with_columns(pl.lit(text).alias("text"))
    frame = predict_documents(cleaned, features, head, ner, sentiment_model_name="sent")
    entities = frame["entities"][0].to_list()
    assert {(e["text"], e["label"]) for e in entities} >= {
        ("Berlin", "GPE"),
        ("Tim Cook", "PERSON"),
    }
    for e in entities:
        assert text[e["start_char"] : e["end_char"]] == e["text"]
