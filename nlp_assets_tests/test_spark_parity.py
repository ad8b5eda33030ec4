"""Both engines on the same documents give the same rows and values (real local Spark).

Input: 190 documents of the sample corpus day 2026-11-16 (every source, news articles and
reviews in four languages), plus planted rows: an exact duplicate whose original lands in
another Spark partition, and a text that is empty after cleaning (quarantined). Each stage
gets the same upstream frame on both engines, so a difference points at one stage. Spark runs
`local[2]` with two partitions or more per stage, so whole-day views (duplicates, TF-IDF) are
really split across tasks. Embeddings run in float32 here: parity within 1e-5 cosine; with
bf16 autocast the batch composition (which differs between engines) moves values by ~1e-4.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import redis

from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.kernels.clean import CleanConfig, clean_documents
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.predict import ab_candidate_rows, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import CacheStats, ModelCacheResource
from nlp_assets.resources.models import ABTest, InferenceStats, ModelResource, ModelSpec
from nlp_assets_tests.spark_cluster import spark_resource

pytestmark = pytest.mark.spark

REPO = Path(__file__).parents[1]
DAY = date(2026, 11, 16)
PER_SOURCE = {
    "bbc_news": 40,
    "movie_reviews": 40,
    "drug_reviews": 30,
    "reviews_fr": 22,
    "reviews_de": 21,
    "reviews_nl": 19,
    "text_files": 10,
    "web_feedback": 8,
}
NAME = "minilm-logreg-sentiment"


@pytest.fixture(scope="module")
def spark(spark_master):
    """One session per engine (local[2], then the standalone cluster), stopped after."""
    resource = spark_resource(spark_master, "test-spark-parity")
    session = resource.spark_session
    assert session.sparkContext.master == spark_master
    assert session.sparkContext.defaultParallelism == 2
    yield session
    resource.stop()


@pytest.fixture(scope="module")
def models() -> ModelResource:
    return ModelResource(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    landing = REPO / "data" / "landing"
    if not (landing / DAY.isoformat()).is_dir():
        pytest.fail(f"no sample corpus under {landing}: run `make data` first")
    docs = read_landing_day(landing, DAY).docs
    picked = pl.concat(
        [docs.filter(pl.col("source") == s).sort("doc_id").head(n) for s, n in PER_SOURCE.items()]
    )
    original = picked.sort("doc_id").row(0, named=True)  # the smallest doc_id: the original
    planted = pl.DataFrame(
        [
            original | {"doc_id": "ffff_duplicate_of_first", "source_id": "dup"},
            original | {"doc_id": "zzzz_empty_too", "text": "<script>x()</script>"},
            original | {"doc_id": "ffff_empty_after_cleaning", "text": "<p> <br/> </p>"},
        ],
        schema=picked.schema,
    )
    return pl.concat([picked, planted])


@pytest.fixture(scope="module")
def cleaned(raw):
    return clean_documents(raw, DAY, CleanConfig())


@pytest.fixture(scope="module")
def tokens(cleaned, models):
    embedder = models.embedder
    return tokenize_documents(cleaned.docs, embedder.tokenizer, embedder.read_length)


@pytest.fixture(scope="module")
def features(cleaned, tokens, models):
    return build_features(cleaned.docs, tokens, models.embedder)


@pytest.fixture(scope="module")
def head(models) -> SentimentHead:
    """A fixed head over the embeddings (its weights do not matter for parity)."""
    rng = np.random.default_rng(7)
    embedder = models.embedder
    return SentimentHead(
        ("negative", "positive"),
        rng.normal(size=(1, embedder.dim)),
        np.zeros(1),
        embedder.name,
        embedder.version,
    )


def test_cleaned_text_same_rows_duplicates_over_the_day_and_quarantine(spark, raw, cleaned):
    on_spark = spark_engine.clean_on_spark(spark, raw, CleanConfig())
    assert on_spark.docs.equals(cleaned.docs)
    assert on_spark.quarantine.equals(cleaned.quarantine)
    assert cleaned.docs.height + cleaned.quarantine.height == raw.height  # nothing lost
    refused = cleaned.quarantine["doc_id"].to_list()
    assert refused[-2:] == ["zzzz_empty_too", "ffff_empty_after_cleaning"]  # input order
    planted = on_spark.docs.filter(pl.col("doc_id") == "ffff_duplicate_of_first").row(0, named=True)
    assert planted["is_duplicate"] and planted["duplicate_of"] == raw["doc_id"].min()
    # The original and its duplicate were cleaned in different Spark tasks: the day-wide
    # window, not the kernel's batch-local rule, marked it.
    partitions = (
        spark_engine.to_spark(spark, raw)
        .rdd.mapPartitionsWithIndex(lambda i, rows: [(i, r["doc_id"]) for r in rows])
        .collect()
    )
    where = {doc_id: i for i, doc_id in partitions}
    assert where["ffff_duplicate_of_first"] != where[raw["doc_id"].min()]


def test_tokens_are_identical(spark, cleaned, tokens, models):
    on_spark = spark_engine.tokenize_on_spark(spark, cleaned.docs, workers.model_config(models))
    assert on_spark.height == cleaned.docs.height
    assert on_spark.equals(tokens)


def test_features_same_ngrams_tfidf_over_the_day_and_embeddings(
    spark, cleaned, tokens, features, models
):
    on_spark = spark_engine.features_on_spark(
        spark, cleaned.docs, tokens, workers.model_config(models)
    )
    assert on_spark.schema == features.schema
    assert on_spark["doc_id"].to_list() == features["doc_id"].to_list()
    for column in ("ingest_date", "ngrams", "embedding_model", "embedding_model_version"):
        assert on_spark[column].equals(features[column]), column
    local_terms = features["tfidf_terms"].to_list()
    spark_terms = on_spark["tfidf_terms"].to_list()
    for mine, theirs in zip(local_terms, spark_terms, strict=True):
        assert [t["term"] for t in theirs] == [t["term"] for t in mine]
        np.testing.assert_allclose(
            [t["score"] for t in theirs], [t["score"] for t in mine], rtol=1e-12
        )
    cosine = np.sum(on_spark["embedding"].to_numpy() * features["embedding"].to_numpy(), axis=1)
    assert cosine.min() >= 1 - 1e-5


def test_tfidf_statistics_really_are_the_days(cleaned, tokens):
    """What the broadcast buys: idf over half a day gives other terms than over the day."""

    class Zeros:
        name, version, dim = "zeros", "0", 2

        def embed_token_ids(self, token_ids):
            return np.zeros((len(token_ids), 2), dtype=np.float32)

    whole = build_features(cleaned.docs, tokens, Zeros())
    half = build_features(cleaned.docs, tokens.head(tokens.height // 2), Zeros())
    joined = half.join(whole, on="doc_id", suffix="_day")
    assert (joined["tfidf_terms"] != joined["tfidf_terms_day"]).any()


def test_predictions_are_identical(spark, cleaned, features, head, models):
    local = predict_documents(
        cleaned.docs, features, head, models.entity_recognizer, sentiment_model_name=NAME
    )
    on_spark = spark_engine.predict_on_spark(
        spark,
        cleaned.docs,
        features,
        head,
        workers.model_config(models),
        sentiment_model_name=NAME,
        languages=["en"],
    )
    assert on_spark.drop("sentiment_score").equals(local.drop("sentiment_score"))
    np.testing.assert_allclose(
        on_spark["sentiment_score"].fill_null(-1).to_numpy(),
        local["sentiment_score"].fill_null(-1).to_numpy(),
        rtol=1e-9,
    )
    assert local["entities"].list.len().sum() > 100  # real entities were compared
    assert local["skipped_reason"].is_not_null().sum() >= 62  # fr/de/nl kept, not dropped


def test_each_python_worker_loads_the_model_once(spark, models):
    """Twelve tasks on two cores: the workers are reused and load the embedder once each."""
    config = workers.model_config(models)

    def probe(batches):
        import os as _os

        import pyarrow as pa

        from nlp_assets.engines import workers as w

        for batch in batches:
            w.embedder(config)
            loads = max(w.loads.values())
            yield pa.RecordBatch.from_pylist(
                [{"pid": _os.getpid(), "loads": loads, "rows": batch.num_rows}]
            )

    seen = (
        spark.range(0, 1200, numPartitions=12)
        .mapInArrow(probe, "pid long, loads long, rows long")
        .toArrow()
        .to_pylist()
    )
    assert sum(r["rows"] for r in seen) == 1200
    assert len(seen) == 12
    assert {r["loads"] for r in seen} == {1}
    assert len({r["pid"] for r in seen}) < len(seen)  # workers served several tasks


def test_spark_reads_the_lake_as_the_read_api_does(spark, cleaned, features, tmp_path):
    """Parts written by the IO manager (two days, one with a micro-batch part) read by Spark."""
    lake = Lake(tmp_path)
    half = features.height // 2
    lake.write("features", "2026-11-16", features.head(half))
    lake.write("features", "2026-11-16", features.slice(half), "kafka-p0-0-99")
    next_day = features.head(3).with_columns(pl.lit(date(2026, 11, 17)).alias("ingest_date"))
    lake.write("features", "2026-11-17", next_day)
    days = ["2026-11-16", "2026-11-17"]
    on_spark = spark_engine.collect(
        spark_engine.read_lake(spark, str(tmp_path), "features", days), features.schema
    )
    expected = lake.read_days("features", days).sort("ingest_date", "doc_id")
    assert on_spark.height == features.height + 3
    assert on_spark.equals(expected)
    with pytest.raises(FileNotFoundError, match="no files"):
        spark_engine.read_lake(spark, str(tmp_path), "features", ["2026-11-18"])


# model-result cache, A/B versions and model loads on both engines -------------------------------
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_cache(monkeypatch):
    """The real Redis on 127.0.0.1:6379 under a namespace of this test, emptied after: the
    cache config the driver ships to the executors (URL resolved from the driver's env)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis: the test fails here, with the connection error
    namespace = f"nlp-spark-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("NLP_TEST_SPARK_REDIS_URL", REDIS_URL)
    yield ModelCacheResource(url_env_var="NLP_TEST_SPARK_REDIS_URL", namespace=namespace)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1_000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_features_second_run_is_served_by_the_cache_from_the_executors(
    spark, cleaned, tokens, features, models, redis_cache
):
    config, cache = workers.model_config(models), redis_cache.worker_config()
    first_meta: dict = {}
    first = spark_engine.features_on_spark(
        spark, cleaned.docs, tokens, config, cache_config=cache, metadata=first_meta
    )
    n = tokens.height
    assert first_meta["cache_hits"] + first_meta["cache_misses"] == n
    assert first_meta["cache_misses"] > 0 and first_meta["cache_errors"] == 0
    second_meta: dict = {}
    second = spark_engine.features_on_spark(
        spark, cleaned.docs, tokens, config, cache_config=cache, metadata=second_meta
    )
    assert second_meta["cache_hits"] == n and second_meta["cache_misses"] == 0
    # Cached vectors are the computed ones. A text twice in the day may be computed in two
    # partitions on the first run (the last write is what the cache keeps): those rows agree
    # to float rounding of their batches, every other row exactly.
    first, second = first.sort("doc_id"), second.sort("doc_id")
    assert second.drop("embedding").equals(first.drop("embedding"))
    a, b = (np.vstack(frame["embedding"].to_numpy()) for frame in (first, second))
    texts = first.join(cleaned.docs.select("doc_id", "text"), on="doc_id", how="left")["text"]
    once = ~texts.is_duplicated().to_numpy()
    assert np.array_equal(a[once], b[once])
    assert np.abs(a - b).max() <= 1e-6
    cosine = np.sum(second["embedding"].to_numpy() * features["embedding"].to_numpy(), axis=1)
    assert cosine.min() >= 1 - 1e-5  # and the local engine's
    # the executors wrote under the local engine's keys: one per distinct (text, token ids)
    stored = redis.Redis.from_url(REDIS_URL).keys(f"{redis_cache.namespace}:*")
    assert len(stored) == cleaned.docs["text"].n_unique()


@pytest.mark.redis
def test_ab_split_and_cache_give_each_document_the_local_engines_model_version(
    spark, cleaned, features, head, redis_cache
):
    """An entities A/B test (the same spaCy pipeline under a second version label) on both
    engines: the same documents go to v2, with the same entities; a second Spark run is
    served from Redis and changes nothing."""
    ab = ModelResource(
        device="cpu",
        dtype="float32",
        registry=[
            ModelSpec(name="spacy-entities-v2", task="entities", format="spacy", version="v2")
        ],
        ab_tests=[ABTest(task="entities", candidate="spacy-entities-v2", share=0.5)],
    )
    stats = CacheStats()
    chosen = workers.prediction_models(
        ab,
        ab.serve,
        ab.model_registry().get,
        cache=None,
        namespace="",
        stats=stats,
        inference=InferenceStats(),
    )
    local = predict_documents(
        cleaned.docs,
        features,
        head,
        chosen.ner,
        sentiment_model_name=NAME,
        ner_candidate=chosen.candidates["entities"],
    )
    runs = []
    for _ in range(2):
        meta: dict = {}
        frame = spark_engine.predict_on_spark(
            spark,
            cleaned.docs,
            features,
            head,
            workers.model_config(ab),
            sentiment_model_name=NAME,
            languages=["en"],
            cache_config=redis_cache.worker_config(),
            metadata=meta,
        )
        runs.append((frame, meta))
    (first, first_meta), (second, second_meta) = runs
    versions = local["ner_model_version"]
    assert set(versions) == {"3.8.0", "v2"}
    english = local.filter(pl.col("lang") == "en")
    to_b = ab_candidate_rows(english["doc_id"].to_list(), 0.5)
    assert 0 < to_b.sum() < english.height
    assert english.filter(pl.Series(to_b))["ner_model_version"].unique().to_list() == ["v2"]
    for frame in (first, second):
        assert frame.select("doc_id", "ner_model", "ner_model_version").equals(
            local.select("doc_id", "ner_model", "ner_model_version")
        )
        assert frame["entities"].equals(local["entities"])
    # a duplicate text may hit what another executor just wrote: misses >= distinct texts
    assert first_meta["cache_hits"] + first_meta["cache_misses"] == english.height
    assert first_meta["cache_misses"] >= english["doc_id"].n_unique() - 1 > 0
    assert second_meta["cache_hits"] == english.height and second_meta["cache_misses"] == 0
    assert second_meta["model_loads"] <= second_meta["python_workers"]


def test_executors_load_each_model_once_not_per_batch(spark, cleaned, tokens, models):
    """A model config no test used before (so every worker loads it fresh), in batches of 16
    rows: many batches, yet each Python worker loads the embedder once, and says so."""
    fresh = workers.model_config(models) | {"batch_tokens": 8_192}
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
    try:
        meta: dict = {}
        spark_engine.features_on_spark(spark, cleaned.docs, tokens, fresh, metadata=meta)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert meta["spark_batches"] >= tokens.height // 16 > meta["python_workers"] >= 1
    assert 1 <= meta["model_loads"] <= meta["python_workers"]
    assert all(n <= 1 for n in meta["model_loads_by_worker"].values())
    assert len(meta["model_loads_by_worker"]) == meta["python_workers"]
