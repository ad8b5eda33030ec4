"""`POST /v1/predict`: the pipeline's answer for a text, now, written nowhere. Its answers equal
the `predictions` rows the stages write for the same texts; its caps, roles and bad bodies are
refused with a reason (never a 500, never a lake write); concurrent callers each get their own
answers; no trained head yet is a 503 that says what to do."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlp_assets import settings as nlp_settings
from nlp_assets.api.app import create_app
from nlp_assets.api.config import ApiSettings
from nlp_assets.api.keys import key_store
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets.resources.models import MAX_PROBA_DIFF, ModelResource
from nlp_assets_tests import model_stages

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def day_and_api(tmp_path_factory: pytest.TempPathFactory):
    """A lake where the stages predicted 40 real documents of a day (their raw texts kept), and
    the API on it with a submitter's and a reader's key."""
    tmp = tmp_path_factory.mktemp("predict")
    models = ModelResource(device="cpu")
    day = date.fromisoformat(model_stages.DAY)
    raw = read_landing_day(Path(nlp_settings.landing_dir()), day).docs.sample(n=80, seed=11)
    cleaned = clean_documents(raw, day).docs.filter(pl.col("lang") == "en").head(40)
    lake_root = tmp / "lake"
    model_stages.write_model_inputs(lake_root, models)  # the head (and 40 other documents)
    Lake(lake_root).write("cleaned_text", model_stages.DAY, cleaned)
    model_stages.materialize_model_steps(lake_root, models, ModelCacheResource(enabled=False))
    rows = Lake(lake_root).read_day("predictions", model_stages.DAY)
    raw_text = dict(zip(raw["doc_id"].to_list(), raw["text"].to_list(), strict=True))
    config = ApiSettings(
        keys_file=str(tmp / "api" / "keys.json"),
        landing_dir=str(tmp / "landing"),
        lake_dir=str(lake_root),
        reports_dir=str(tmp / "reports"),
        predict_max_texts=16,
        rate_per_second=1_000.0,  # the limiter is tested elsewhere; here, the answers
        rate_burst=1_000,
    )
    store = key_store(config)
    _, submitter = store.create("app", "submitter")
    _, reader = store.create("dashboard", "reader")
    with TestClient(create_app(config)) as client:
        yield client, rows, raw_text, lake_root, submitter, reader


def post(client: TestClient, key: str, body: object):
    return client.post("/v1/predict", json=body, headers={"X-API-Key": key})


def test_answers_equal_the_pipeline_rows_for_the_same_texts(day_and_api):
    client, rows, raw_text, _, key, _ = day_and_api
    rows = rows.filter(pl.col("doc_id").is_in(list(raw_text)))
    assert rows.height >= 16
    for chunk in (rows.head(16), rows.slice(16, 16)):
        texts = [raw_text[d] for d in chunk["doc_id"]]
        response = post(client, key, {"texts": texts, "embedding": True})
        assert response.status_code == 200, response.text
        answers = response.json()["results"]
        assert len(answers) == len(texts)
        for row, answer in zip(chunk.iter_rows(named=True), answers, strict=True):
            assert answer["language"] == row["lang"]
            assert answer["sentiment"]["label"] == row["sentiment_label"]
            assert abs(answer["sentiment"]["score"] - row["sentiment_score"]) <= MAX_PROBA_DIFF
            assert answer["sentiment"]["model"] == (
                f"{row['sentiment_model']}@{row['sentiment_model_version']}"
            )
            assert answer["ner_model"] == f"{row['ner_model']}@{row['ner_model_version']}"
            found = {
                (e["text"], e["label"], e["start_char"], e["end_char"]) for e in row["entities"]
            }
            assert {tuple(e.values()) for e in answer["entities"]} == found
            assert len(answer["embedding"]) == 384
    assert sum(len(r) for r in rows["entities"]) > 10  # real entities were compared


def test_caps_roles_and_bad_bodies_are_refused_with_a_reason(day_and_api):
    client, _, _, _, key, reader = day_and_api
    assert client.post("/v1/predict", json={"texts": ["fine"]}).status_code == 401
    refused = post(client, reader, {"texts": ["fine"]})
    assert refused.status_code == 403 and "submitter" in refused.text
    too_many = post(client, key, {"texts": ["a good film"] * 17})
    assert too_many.status_code == 413 and "at most 16" in too_many.text
    too_long = post(client, key, {"texts": ["x" * (nlp_settings.kafka_max_message_bytes() + 1)]})
    assert too_long.status_code == 413 and "cap of a record" in too_long.text
    for body in ({"texts": []}, {"texts": "one"}, {"texts": [1]}, {"text": ["a"]}, [], None):
        assert post(client, key, body).status_code == 422, body
    empty = post(client, key, {"texts": ["   ", "A lovely, warm film."]})
    assert empty.status_code == 200
    first, second = empty.json()["results"]
    assert first == {"error": "empty after cleaning"}
    assert second["sentiment"]["label"] in ("positive", "negative")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_hostile_json_is_never_a_500_and_writes_nothing(day_and_api, body):
    client, _, _, lake_root, key, _ = day_and_api
    before = sorted(p.name for p in Path(lake_root).iterdir())
    wrapped = {"texts": body} if isinstance(body, list) else body
    response = post(client, key, wrapped)
    assert response.status_code in (200, 413, 422), response.text
    assert sorted(p.name for p in Path(lake_root).iterdir()) == before


def test_concurrent_callers_are_batched_and_each_gets_the_answer_for_its_own_text(day_and_api):
    client, _, _, _, key, _ = day_and_api
    batches = client.app.state.services.metrics.registry
    texts = [
        f"The {w} was {a}, said reviewer {i}."
        for i, (w, a) in enumerate(
            (w, a)
            for w in ("film", "hotel", "meal", "phone", "show")
            for a in ("superb", "dreadful")
        )
    ]
    alone = {t: post(client, key, {"texts": [t]}).json()["results"][0] for t in texts}

    def calls() -> tuple[float, float]:
        labels = {"route": "/v1/predict"}
        return (
            batches.get_sample_value("nlp_api_predict_batch_requests_count", labels) or 0.0,
            batches.get_sample_value("nlp_api_predict_batch_requests_sum", labels) or 0.0,
        )

    before = calls()
    together: dict[str, dict] = {}
    barrier = threading.Barrier(len(texts))

    def call(text: str) -> None:
        barrier.wait()
        together[text] = post(client, key, {"texts": [text]}).json()["results"][0]

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for text in texts:
        assert together[text]["sentiment"]["label"] == alone[text]["sentiment"]["label"]
        assert abs(together[text]["sentiment"]["score"] - alone[text]["sentiment"]["score"]) <= (
            MAX_PROBA_DIFF
        )
        assert together[text]["entities"] == alone[text]["entities"]
    kernel_calls, requests = (after - was for after, was in zip(calls(), before, strict=True))
    assert requests == len(texts)
    assert kernel_calls < len(texts)  # requests that arrived together shared a kernel call


def test_a_closed_api_leaves_no_connection_for_another_thread_to_finalise(
    day_and_api, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The models' init contexts hold an in-memory Dagster instance opened in the batcher's
    thread; left to the collector, its SQLite connection was finalised by whichever thread ran
    it, logging errors (one such finaliser broke a CI run)."""
    import gc

    _, _, _, lake_root, _, _ = day_and_api
    config = ApiSettings(
        keys_file=str(tmp_path / "keys.json"),
        landing_dir=str(tmp_path / "landing"),
        lake_dir=str(lake_root),
        reports_dir=str(tmp_path / "reports"),
    )
    _, key = key_store(config).create("app", "submitter")
    with TestClient(create_app(config)) as client:
        assert post(client, key, {"texts": ["A fine day."]}).status_code == 200
        predictor = client.app.state.services.predictor
    predictor._batcher._thread.join(10)
    del client, predictor
    with caplog.at_level("ERROR", logger="sqlalchemy"):
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy")] == []


def test_without_a_trained_sentiment_model_the_answer_is_503_saying_what_to_do(tmp_path: Path):
    config = ApiSettings(
        keys_file=str(tmp_path / "keys.json"),
        landing_dir=str(tmp_path / "landing"),
        lake_dir=str(tmp_path / "lake"),
        reports_dir=str(tmp_path / "reports"),
    )
    _, key = key_store(config).create("app", "submitter")
    with TestClient(create_app(config)) as client:
        response = post(client, key, {"texts": ["Good."]})
    assert response.status_code == 503
    assert "materialise the asset sentiment_model" in response.text
