"""The Spark engine through Spark Connect: a client session (`sc://`) of a Connect server
started from the pyspark wheel (`sbin/start-connect-server.sh`, over local[2]). Every stage's
`mapInArrow` kernels run in the server's Python workers and give what the local engine gives;
the features stage's day statistics travel in the task closure (Connect has no broadcast)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.kernels.clean import CleanConfig, clean_documents
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.spark import SparkResource

pytestmark = pytest.mark.spark

REPO = Path(__file__).parents[1]
DAY = date(2026, 11, 16)
NAME = "minilm-logreg-sentiment"


@pytest.fixture(scope="module")
def connect(connect_master):
    resource = SparkResource(master=connect_master, app_name="test-spark-connect")
    session = resource.spark_session
    yield session
    resource.stop()
    # pyspark marks the process as a Connect client for good: classic sessions of the next
    # test files in this worker would refuse to start
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    landing = REPO / "data" / "landing"
    if not (landing / DAY.isoformat()).is_dir():
        pytest.fail(f"no sample corpus under {landing}: run `make data` first")
    docs = read_landing_day(landing, DAY).docs
    picked = pl.concat(
        [
            docs.filter(pl.col("source") == s).sort("doc_id").head(12)
            for s in ("bbc_news", "movie_reviews", "reviews_fr")
        ]
    )
    first = picked.sort("doc_id").row(0, named=True)
    planted = pl.DataFrame(
        [
            first | {"doc_id": "ffff_duplicate", "source_id": "dup"},
            first | {"doc_id": "zzzz_empty", "text": "<p> </p>"},
        ],
        schema=picked.schema,
    )
    return pl.concat([picked, planted])


def test_every_stage_runs_through_spark_connect_as_on_the_local_engine(connect, raw):
    assert spark_engine.is_connect(connect)  # a Connect client, not a classic session
    models = ModelResource(device="cpu", dtype="float32")
    config = workers.model_config(models)
    cleaned = clean_documents(raw, DAY, CleanConfig())
    on_connect = spark_engine.clean_on_spark(connect, raw, CleanConfig())
    assert on_connect.docs.equals(cleaned.docs)
    assert on_connect.quarantine.equals(cleaned.quarantine)
    assert on_connect.docs.filter(pl.col("doc_id") == "ffff_duplicate")["is_duplicate"].item()

    embedder = models.embedder
    tokens = tokenize_documents(cleaned.docs, embedder.tokenizer, embedder.read_length)
    assert spark_engine.tokenize_on_spark(connect, cleaned.docs, config).equals(tokens)

    features = build_features(cleaned.docs, tokens, embedder)
    meta: dict = {}
    # A config no stage used before: tokenize_on_spark's Python workers may be reused and
    # already hold the embedder, and this asserts each worker loads its own at most once.
    fresh = config | {"batch_tokens": 8_192}
    on_spark = spark_engine.features_on_spark(connect, cleaned.docs, tokens, fresh, metadata=meta)
    assert on_spark["tfidf_terms"].equals(features["tfidf_terms"])  # the day's statistics
    cosine = np.sum(on_spark["embedding"].to_numpy() * features["embedding"].to_numpy(), axis=1)
    assert cosine.min() >= 1 - 1e-5
    assert 1 <= meta["model_loads"] <= meta["python_workers"]
    assert all(n <= 1 for n in meta["model_loads_by_worker"].values())

    head = SentimentHead(
        ("negative", "positive"),
        np.random.default_rng(7).normal(size=(1, embedder.dim)),
        np.zeros(1),
        embedder.name,
        embedder.version,
    )
    local = predict_documents(
        cleaned.docs, features, head, models.entity_recognizer, sentiment_model_name=NAME
    )
    predicted = spark_engine.predict_on_spark(
        connect, cleaned.docs, features, head, config, sentiment_model_name=NAME, languages=["en"]
    )
    assert predicted.drop("sentiment_score").equals(local.drop("sentiment_score"))
    assert local["entities"].list.len().sum() > 10
