"""Custom Hugging Face checkpoints by configuration: tiny BERT sequence and token classifiers
built and saved here (no download), loaded through the registry, served by the prediction
kernel, and a broken checkpoint replaced by its fallback."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from nlp_assets.kernels.predict import Candidate, ab_candidate_rows, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.resources.model_cache import CacheStats, LruCache
from nlp_assets.resources.models import (
    CachedEntities,
    InferenceStats,
    ModelLoadError,
    ModelResource,
    ModelSpec,
    SequenceClassifier,
    TextSentiment,
    TokenClassifier,
    default_embedding_model_path,
)

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = [
    "The film was wonderful and the cast was great.",
    "Awful plot, I left after twenty minutes.",
    "Tim Cook visited Berlin and Paris last week.",
    "ok",
]


def _tiny_config(**labels):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30_522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **labels,
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERT checkpoints with MiniLM's (BERT WordPiece) tokenizer, saved like any user's."""
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    root = tmp_path_factory.mktemp("checkpoints")
    tokenizer = AutoTokenizer.from_pretrained(default_embedding_model_path())
    torch.manual_seed(0)
    seq = BertForSequenceClassification(
        _tiny_config(num_labels=2, id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1})
    )
    tok = BertForTokenClassification(
        _tiny_config(
            num_labels=len(NER_LABELS),
            id2label=dict(enumerate(NER_LABELS)),
            label2id={label: i for i, label in enumerate(NER_LABELS)},
        )
    )
    for name, model in (("sequence", seq), ("token", tok)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # no weights, no tokenizer
    out = {"sequence": root / "sequence", "token": root / "token", "broken": broken}
    return out


def _resource(checkpoints, **extra) -> ModelResource:
    return ModelResource(
        device="cpu",
        registry=[
            ModelSpec(
                name="tiny-sentiment",
                task="sentiment",
                format="hf-sequence-classification",
                source=str(checkpoints["sequence"]),
                label_map={"NEG": "negative", "POS": "positive"},
                max_length=64,
            ),
            ModelSpec(
                name="tiny-ner",
                task="entities",
                format="hf-token-classification",
                source=str(checkpoints["token"]),
                max_length=64,
            ),
            ModelSpec(
                name="broken-ner",
                task="entities",
                format="hf-token-classification",
                source=str(checkpoints["broken"]),
                fallback="spacy-entities",
            ),
        ],
        **extra,
    )


def test_a_sequence_classifier_serves_sentiment_by_configuration(checkpoints):
    resource = _resource(checkpoints, sentiment="tiny-sentiment")
    served = resource.serve("sentiment")
    model = served.model
    assert isinstance(model, SequenceClassifier) and not served.fallback
    assert model.labels == ("negative", "positive")
    assert len(model.version) == 12  # content hash of the weights
    proba = model.predict_proba_texts(TEXTS)
    assert proba.shape == (len(TEXTS), 2) and np.allclose(proba.sum(axis=1), 1)
    # batched and sorted by length, but in input order: same as one at a time
    single = np.vstack([model.predict_proba_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(proba, single, atol=2e-2 if model.dtype != "float32" else 1e-5)

    # through the prediction kernel, with the result cache: every row names the model
    n = len(TEXTS)
    ids = [f"{i:016x}" for i in range(n)]
    cleaned = pl.DataFrame(
        {"doc_id": ids, "source": "s", "lang": "en", "is_duplicate": False, "text": TEXTS}
    )
    features = pl.DataFrame(
        {
            "doc_id": ids,
            "ingest_date": [date(2026, 11, 16)] * n,
            "embedding": pl.Series(
                np.ones((n, 2), dtype=np.float32), dtype=pl.Array(pl.Float32, 2)
            ),
        }
    )
    stats, cache = CacheStats(), LruCache()
    text_model = TextSentiment(model, cache, "t", stats, InferenceStats())
    frame = predict_documents(
        cleaned,
        features,
        None,
        CachedEntities(resource.serve("entities").model, cache, "t", stats, InferenceStats()),
        sentiment_model_name="unused",
        sentiment_text_model=text_model,
    )
    assert set(frame["sentiment_model"]) == {"tiny-sentiment"}
    assert set(frame["sentiment_model_version"]) == {model.version}
    np.testing.assert_allclose(frame["sentiment_score"].to_numpy(), proba[:, 1], atol=1e-9)


def test_a_token_classifier_serves_entities_with_spans_into_the_text(checkpoints):
    resource = _resource(checkpoints, entities="tiny-ner")
    model = resource.serve("entities").model
    assert isinstance(model, TokenClassifier)
    found = model.entities(TEXTS)
    assert len(found) == len(TEXTS)
    assert sum(len(f) for f in found) > 0  # random weights: some tokens are entities
    for text, entities in zip(TEXTS, found, strict=True):
        for e in entities:
            assert text[e["start_char"] : e["end_char"]] == e["text"]
            assert e["label"] in {"PER", "LOC"}


def test_a_checkpoint_failing_to_load_is_replaced_by_its_fallback(checkpoints):
    resource = _resource(checkpoints, entities="broken-ner")
    served = resource.serve("entities")
    assert served.fallback and served.served_by == "spacy-entities"
    assert "broken-ner failed to load or warm up" in served.fallback_reason
    assert served.model.entities(["Tim Cook visited Berlin."])[0]


def test_ab_test_between_two_checkpoints_in_the_prediction_kernel(checkpoints):
    resource = _resource(checkpoints)
    ner_a = resource.serve("entities").model
    ner_b = resource.model_registry().get("tiny-ner").model
    n = 60
    ids = [f"{i:016x}" for i in range(n)]
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    cleaned = pl.DataFrame(
        {"doc_id": ids, "source": "s", "lang": "en", "is_duplicate": False, "text": texts}
    )
    features = pl.DataFrame(
        {
            "doc_id": ids,
            "ingest_date": [date(2026, 11, 16)] * n,
            "embedding": pl.Series(
                np.ones((n, 2), dtype=np.float32), dtype=pl.Array(pl.Float32, 2)
            ),
        }
    )
    head = SentimentHead(("negative", "positive"), np.ones((1, 2)), np.zeros(1), "m", "v")
    frame = predict_documents(
        cleaned,
        features,
        head,
        ner_a,
        sentiment_model_name="head",
        ner_candidate=Candidate(ner_b, 0.3),
    )
    expected_b = ab_candidate_rows(ids, 0.3)
    assert np.array_equal(frame["ner_model"].to_numpy() == "tiny-ner", expected_b)
    assert set(frame["ner_model"]) == {"tiny-ner", ner_a.name}


def test_an_uncached_hugging_face_id_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resource = ModelResource(
        device="cpu",
        registry=[
            ModelSpec(
                name="remote",
                task="entities",
                format="hf-token-classification",
                source="no-such-org/no-such-model",
            )
        ],
        entities="remote",
    )
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1"):
        resource.serve("entities")
