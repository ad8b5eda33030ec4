"""Spark executors write a stage's rows into its Delta table; the driver only commits the
files (`nlp_assets.engines.sink`). Real Spark (`local[2]`): one commit per stage covering every
day of the range, the driver sees one small row per file, and the rows equal the local
engine's."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.engines.sink import FILE_SCHEMA, FileTarget, LakeSink, merge_summaries, write_files
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.lake import PARTITION, Lake
from nlp_assets.resources.models import ModelResource
from nlp_assets.schemas import tokens_schema
from nlp_assets_tests.spark_cluster import LOCAL_MASTER, spark_resource

DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
OUTSIDE = "2026-11-19"
TEXTS = [
    "The service was quick and the staff were friendly.",
    "Delivery took three weeks; nobody answered my e-mails.",
    "A short one.",
    "Prices went up again this quarter, analysts said on Monday.",
]


def _cleaned(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"{i:016x}" for i in range(n)],
            PARTITION: [date.fromisoformat(DAYS[i % len(DAYS)]) for i in range(n)],
            "text": [f"{TEXTS[i % len(TEXTS)]} Document {i}." for i in range(n)],
        }
    )


def _log_entry(table_uri: str, version: int) -> list[dict]:
    path = Path(table_uri) / "_delta_log" / f"{version:020d}.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.spark
def test_executors_write_the_range_and_the_driver_commits_it_once(tmp_path, monkeypatch):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    models = ModelResource(device="cpu", dtype="float32")
    config = workers.model_config(models)
    cleaned = _cleaned(600)
    lake = Lake(tmp_path / "lake")
    # what the table held before: stale rows of a day of the range, and a day outside it
    stale = tokenize_documents(cleaned.head(5), models.embedder.tokenizer, 16)
    lake.write_days(
        "tokens", DAYS, stale.with_columns(pl.lit(date.fromisoformat(DAYS[0])).alias(PARTITION))
    )
    outside = stale.head(2).with_columns(pl.lit(date.fromisoformat(OUTSIDE)).alias(PARTITION))
    lake.write("tokens", OUTSIDE, outside)
    before = lake.version("tokens")

    collected: list[int] = []  # what the driver collected: one row per file, nothing else
    commit = LakeSink.commit

    def counting_commit(self: LakeSink, files: pl.DataFrame):
        assert files.columns == list(FILE_SCHEMA)
        collected.append(files.height)
        return commit(self, files)

    monkeypatch.setattr(LakeSink, "commit", counting_commit)
    resource = spark_resource(LOCAL_MASTER, "test-lake-writes")
    try:
        sink = LakeSink(lake, "tokens", DAYS, check=lambda _f: tokens_schema())
        committed = spark_engine.tokenize_on_spark(
            resource.spark_session, cleaned, config, sink=sink
        )
    finally:
        resource.stop()

    assert not isinstance(committed, pl.DataFrame)
    assert committed.write.version == before + 1 == lake.version("tokens")  # one commit
    assert committed.rows == cleaned.height and committed.schema_failures == 0
    assert collected == [committed.files]
    adds = [a["add"] for a in _log_entry(lake.table_uri("tokens"), before + 1) if "add" in a]
    assert len(adds) == committed.files
    assert {a["partitionValues"][PARTITION] for a in adds} == set(DAYS)
    assert sum(json.loads(a["stats"])["numRecords"] for a in adds) == cleaned.height
    # the range's days replaced (stale rows gone), the day outside untouched
    assert lake.read_days("tokens", [OUTSIDE]).equals(outside)
    spark_rows = lake.read_days("tokens", DAYS).sort("doc_id")
    local_rows = tokenize_documents(
        cleaned, models.embedder.tokenizer, models.embedder.read_length
    ).sort("doc_id")
    assert spark_rows["doc_id"].is_unique().all()
    assert spark_rows.equals(local_rows)


def test_a_batch_becomes_one_file_per_day_with_its_statistics(tmp_path):
    lake = Lake(tmp_path / "lake")
    frame = pl.DataFrame(
        {
            "doc_id": ["b", "a", "c"],
            PARTITION: [date(2026, 1, 2), date(2026, 1, 1), date(2026, 1, 2)],
            "n": pl.Series([3, 1, 2], dtype=pl.UInt32),
        }
    )
    target = FileTarget(lake.table_uri("t"), summary=lambda f: {"rows_seen": f.height})
    files = write_files(frame, target)
    assert files["day"].to_list() == ["2026-01-01", "2026-01-02"]
    assert files["rows"].to_list() == [1, 2]
    stats = json.loads(files["stats"][1])
    assert stats["numRecords"] == 2
    assert (stats["minValues"]["doc_id"], stats["maxValues"]["doc_id"]) == ("b", "c")
    assert stats["nullCount"]["n"] == 0 and PARTITION not in stats["nullCount"]
    assert merge_summaries(json.loads(s) for s in files["summary"] if s)["rows_seen"] == 3
    sink = LakeSink(lake, "t", ["2026-01-01", "2026-01-02", "2026-01-03"])
    committed = sink.commit(files)
    assert committed.rows == 3 and committed.files == 2
    back = lake.read_days("t", sink.days).sort("doc_id")
    assert back.equals(frame.sort("doc_id"))  # UInt32 restored, ingest_date from the folder
    assert lake.find("t", sink.days, "doc_id", "a")["n"].to_list() == [1]
