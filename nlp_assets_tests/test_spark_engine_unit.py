"""The Spark engine's own logic without a JVM: engine choice, Arrow round trips, range splits."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest

from nlp_assets.engines import LOCAL, SPARK
from nlp_assets.engines.arrow import from_spark_arrow, spark_schema, to_spark_arrow
from nlp_assets.engines.switch import EngineConfig, choose_engine
from nlp_assets.kernels.features import features_schema
from nlp_assets.kernels.tokenize import TOKENS_SCHEMA
from nlp_assets.lake import Lake
from nlp_assets.resources.lake import PART_TAG
from nlp_assets.resources.spark import SparkResource, spark_from_env

DAY = date(2026, 11, 16)


class _Context:
    """What `choose_engine` reads of an asset context: the run's tags and a logger."""

    def __init__(self, tags: dict[str, str]):
        self.run = SimpleNamespace(tags=tags)
        self.messages: list[str] = []
        self.log = SimpleNamespace(info=self.messages.append)


@pytest.fixture(autouse=True)
def _asset_context(monkeypatch):
    import dagster as dg

    monkeypatch.setattr(dg, "AssetExecutionContext", _Context)  # run_part's isinstance check


def test_engine_choice():
    whole_day = _Context({})
    assert choose_engine(whole_day, EngineConfig(), 10**6) == LOCAL
    spark = EngineConfig(engine="spark", spark_min_docs=1_000)
    assert choose_engine(whole_day, spark, 1_000) == SPARK
    assert choose_engine(whole_day, spark, 999) == LOCAL
    assert "999 documents < spark_min_docs=1000" in whole_day.messages[-1]
    micro_batch = _Context({PART_TAG: "kafka-p0-0-99"})
    assert choose_engine(micro_batch, spark, 10**6) == LOCAL
    assert "micro-batch" in micro_batch.messages[-1]


def test_stage_frames_survive_the_trip_through_spark_arrow_types():
    frame = pl.DataFrame(
        {
            "doc_id": ["a", "b"],
            "ingest_date": [DAY, DAY],
            "token_ids": [[101, 4_000_000_000 % 2**31, 102], []],
            "n_tokens": [3, 0],
            "truncated": [False, True],
        },
        schema=TOKENS_SCHEMA,
    )
    table = to_spark_arrow(frame)
    assert table.schema.field("token_ids").type == pa.list_(pa.int64())
    assert table.schema.field("doc_id").type == pa.string()
    assert from_spark_arrow(table, TOKENS_SCHEMA).equals(frame)
    schema = features_schema(3)
    features = pl.DataFrame(
        {
            "doc_id": ["a"],
            "ingest_date": [DAY],
            "ngrams": [[{"ngram": "x y", "count": 2}]],
            "tfidf_terms": [[{"term": "x", "score": 0.5}]],
            "embedding": [[0.25, -0.5, 1.0]],
            "embedding_model": ["m"],
            "embedding_model_version": ["v"],
        },
        schema=schema,
    )
    assert from_spark_arrow(to_spark_arrow(features), schema).equals(features)
    assert spark_schema(schema)["embedding"].dataType.simpleString() == "array<float>"


def test_a_range_is_written_day_by_day_and_stray_days_are_refused(tmp_path):
    lake = Lake(tmp_path)
    frame = pl.DataFrame({"doc_id": ["a", "b", "c"], "ingest_date": [DAY, DAY, date(2026, 11, 18)]})
    lake.write("x", "2026-11-16", frame.head(1), "kafka-p0-0-9")  # an older micro-batch part
    lake.write_days("x", ["2026-11-16", "2026-11-17", "2026-11-18"], frame)
    assert lake.part_names("x", "2026-11-16") == ["day"]
    assert lake.read_day("x", "2026-11-16")["doc_id"].to_list() == ["a", "b"]
    assert lake.read_day("x", "2026-11-17").height == 0  # the day exists, empty
    assert lake.read_day("x", "2026-11-18")["doc_id"].to_list() == ["c"]
    with pytest.raises(ValueError, match=r"outside the days written"):
        lake.write_days("x", ["2026-11-16"], frame)
    with pytest.raises(ValueError, match="needs an ingest_date"):
        lake.write_days("x", ["2026-11-16", "2026-11-17"], frame.drop("ingest_date"))


def test_spark_resource_from_the_environment(monkeypatch):
    monkeypatch.setenv("NLP_SPARK_MASTER", "spark://spark-master:7077")
    monkeypatch.setenv("NLP_SPARK_CONF", '{"spark.executor.memory": "8g"}')
    resource = spark_from_env()
    assert resource.master == "spark://spark-master:7077"
    assert resource.spark_config == {"spark.executor.memory": "8g"}
    assert not resource.started  # lazy: nothing started until a stage asks
    monkeypatch.setenv("NLP_SPARK_CONF", "[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        spark_from_env()
    assert SparkResource().master == "local[*]"
