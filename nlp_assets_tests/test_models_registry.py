"""The model registry's own logic (lazy load, LRU, threads, fallback) and the A/B split, with
stand-in models; the real models are in test_models_custom.py and test_models_tolerance.py."""

from __future__ import annotations

import threading
import time
from datetime import date

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlp_assets.kernels.aggregate import model_version_figures
from nlp_assets.kernels.predict import Candidate, ab_candidate_rows, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.resources.models import (
    ModelLoadError,
    ModelRegistry,
    ModelResource,
    ModelSpec,
    gpu_op_tags,
    length_batches,
    spans,
)

MB = 1 << 20


class Stub:
    def __init__(self, name: str, memory_bytes: int):
        self.name, self.version, self.memory_bytes = name, "1", memory_bytes


def _specs(**fallbacks: str) -> dict[str, ModelSpec]:
    return {
        name: ModelSpec(
            name=name, task="entities", format="spacy", fallback=fallbacks.get(name, "")
        )
        for name in ("a", "b", "c")
    }


def _loader(sizes: dict[str, int], loads: list[str], broken: set[str] = frozenset()):
    def load(spec: ModelSpec):
        loads.append(spec.name)
        time.sleep(0.01)  # a load takes time: concurrent callers would overlap
        if spec.name in broken:
            raise ValueError("warm-up gave NaN")
        return Stub(spec.name, sizes[spec.name])

    return load


def test_models_load_lazily_once_and_the_least_recently_used_is_evicted():
    loads: list[str] = []
    registry = ModelRegistry(
        _specs(), 250 * MB, _loader({"a": 100 * MB, "b": 100 * MB, "c": 100 * MB}, loads)
    )
    assert registry.loaded() == [] and loads == []
    registry.get("a")
    registry.get("b")
    registry.get("a")  # a is now the most recent
    assert loads == ["a", "b"]
    registry.get("c")  # 300 MB > 250 MB: b goes
    assert registry.loaded() == ["a", "c"] and registry.evicted == ["b"]
    assert registry.memory_bytes() == 200 * MB
    registry.get("b")  # loads again, evicting a
    assert loads == ["a", "b", "c", "b"] and registry.loaded() == ["c", "b"]


def test_concurrent_steps_share_one_load():
    loads: list[str] = []
    registry = ModelRegistry(_specs(), 1_000 * MB, _loader({"a": MB, "b": MB, "c": MB}, loads))
    served: list[object] = []
    threads = [
        threading.Thread(target=lambda: served.append(registry.get("a").model)) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["a"] and len(served) == 8 and all(m is served[0] for m in served)


def test_a_model_failing_its_warm_up_is_replaced_by_its_fallback_and_says_so():
    loads: list[str] = []
    registry = ModelRegistry(
        _specs(a="b"), 1_000 * MB, _loader({"a": MB, "b": MB, "c": MB}, loads, broken={"a"})
    )
    served = registry.get("a")
    assert served.fallback and served.served_by == "b" and served.model.name == "b"
    assert "a failed to load or warm up" in served.fallback_reason
    assert "warm-up gave NaN" in served.fallback_reason
    assert not registry.get("b").fallback


def test_without_a_fallback_the_failure_is_a_clear_error():
    registry = ModelRegistry(_specs(), MB, _loader({"a": 1, "b": 1, "c": 1}, [], broken={"c"}))
    with pytest.raises(ModelLoadError, match=r"c failed to load or warm up.*warm-up gave NaN"):
        registry.get("c")
    with pytest.raises(ModelLoadError, match="no model 'zzz' in the registry"):
        registry.get("zzz")


def test_fallback_cycles_end_in_an_error():
    registry = ModelRegistry(
        _specs(a="b", b="a"), MB, _loader({"a": 1, "b": 1, "c": 1}, [], broken={"a", "b"})
    )
    with pytest.raises(ModelLoadError):
        registry.get("a")


def test_resource_registry_entries_replace_defaults_by_name_and_stay_plain_values():
    resource = ModelResource(
        device="cpu",
        registry=[
            ModelSpec(
                name="spacy-entities", task="entities", format="spacy", source="/models/other-spacy"
            )
        ],
    )
    specs = resource.specs()
    assert specs["spacy-entities"].source == "/models/other-spacy"
    assert specs["sentence-transformers/all-MiniLM-L6-v2"].task == "embedding"
    # a Spark worker rebuilds the same resource from plain field values
    import pickle

    config = {name: getattr(resource, name) for name in type(resource).model_fields}
    assert ModelResource(**pickle.loads(pickle.dumps(config))).specs() == specs


def test_ab_split_is_deterministic_by_doc_id_and_close_to_the_share():
    ids = [f"{i:016x}" for i in range(20_000)]
    split = ab_candidate_rows(ids, 0.2)
    assert 0.19 < split.mean() < 0.21
    # the same document lands on the same side whatever the batch
    assert np.array_equal(ab_candidate_rows(ids[::-1], 0.2), split[::-1])
    assert np.array_equal(ab_candidate_rows(ids[:100], 0.2), split[:100])
    assert not ab_candidate_rows(ids, 0.0).any() and ab_candidate_rows(ids, 1.0).all()
    assert not np.array_equal(ab_candidate_rows(ids, 0.2, salt="2"), split)


class TextModel:
    name, version, labels = "candidate-sentiment", "c1", ("negative", "positive")

    def predict_proba_texts(self, texts):
        return np.tile([0.1, 0.9], (len(texts), 1))


class Ner:
    def __init__(self, name):
        self.name, self.version = name, name + "-v"

    def entities(self, texts):
        return [
            [{"text": self.name, "label": "ORG", "start_char": 0, "end_char": 1}] for _ in texts
        ]


def test_ab_candidates_serve_their_share_and_every_row_names_its_model():
    n = 400
    ids = [f"{i:016x}" for i in range(n)]
    cleaned = pl.DataFrame(
        {
            "doc_id": ids,
            "source": "s",
            "lang": "en",
            "is_duplicate": False,
            "text": [f"text {i}" for i in range(n)],
        }
    )
    features = pl.DataFrame(
        {
            "doc_id": ids,
            "ingest_date": [date(2026, 11, 16)] * n,
            "embedding": pl.Series(
                np.full((n, 2), -1.0, dtype=np.float32), dtype=pl.Array(pl.Float32, 2)
            ),
        }
    )
    head = SentimentHead(("negative", "positive"), np.array([[1.0, 1.0]]), np.zeros(1), "m", "v")
    frame = predict_documents(
        cleaned,
        features,
        head,
        Ner("a"),
        sentiment_model_name="head",
        sentiment_candidate=Candidate(TextModel(), 0.25),
        ner_candidate=Candidate(Ner("b"), 0.5, salt="ner"),
    )
    to_b = ab_candidate_rows(ids, 0.25)
    by_model = frame["sentiment_model"].to_numpy()
    assert np.array_equal(by_model == "candidate-sentiment", to_b)
    assert set(frame.filter(pl.col("sentiment_model") == "head")["sentiment_label"]) == {"negative"}
    assert set(frame.filter(pl.col("sentiment_model") != "head")["sentiment_label"]) == {"positive"}
    assert np.array_equal(frame["ner_model"].to_numpy() == "b", ab_candidate_rows(ids, 0.5, "ner"))
    assert frame.filter(pl.col("ner_model") == "b")["ner_model_version"].unique().to_list() == [
        "b-v"
    ]

    figures = {(r["task"], r["model"]): r for r in model_version_figures(frame).to_dicts()}
    assert figures[("sentiment", "candidate-sentiment")]["n_docs"] == int(to_b.sum())
    assert figures[("sentiment", "head")]["n_docs"] == n - int(to_b.sum())
    assert figures[("sentiment", "candidate-sentiment")]["positive_share"] == 1.0
    assert figures[("sentiment", "head")]["positive_share"] == 0.0
    assert figures[("entities", "a")]["n_docs"] + figures[("entities", "b")]["n_docs"] == n
    assert figures[("entities", "b")]["entities_per_doc"] == 1.0


def test_length_batches_sort_and_respect_the_token_budget():
    lengths = [5, 300, 7, 120, 8, 9, 250]
    batches = list(length_batches(lengths, batch_tokens=400))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert max(lengths[i] for i in batch) * len(batch) <= 400 or len(batch) == 1
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=300),
    batch_tokens=st.integers(min_value=1, max_value=20_000),
    max_rows=st.integers(min_value=0, max_value=100),
)
def test_length_batches_take_every_text_once_within_the_row_cap_and_the_budget(
    lengths: list[int], batch_tokens: int, max_rows: int
):
    batches = list(length_batches(lengths, batch_tokens, max_rows))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert batch
        assert not max_rows or len(batch) <= max_rows
        assert max(lengths[i] for i in batch) * len(batch) <= batch_tokens or len(batch) == 1
    assert [lengths[i] for b in batches for i in b] == sorted(lengths)


def test_bio_labels_become_character_spans():
    text = "Tim Cook visited Berlin"
    offsets = [(0, 0), (0, 3), (4, 8), (9, 16), (17, 23), (0, 0)]
    labels = ["O", "B-PER", "I-PER", "O", "B-LOC", "O"]
    assert spans(text, labels, offsets) == [
        {"text": "Tim Cook", "label": "PER", "start_char": 0, "end_char": 8},
        {"text": "Berlin", "label": "LOC", "start_char": 17, "end_char": 23},
    ]


def test_model_steps_request_a_gpu_on_kubernetes_only_for_cuda(monkeypatch):
    monkeypatch.setenv("NLP_DEVICE", "cuda")
    resources = gpu_op_tags()["dagster-k8s/config"]["container_config"]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1"}
    monkeypatch.setenv("NLP_DEVICE", "auto")
    assert gpu_op_tags() == {}
