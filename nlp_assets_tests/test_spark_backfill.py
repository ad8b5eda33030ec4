"""A three-day backfill on the Spark engine as ONE run (the preset job, a partition range),
against the same days run one by one on the local engine. Real Spark: `local[2]` and a
standalone cluster (a master and two workers, each its own JVM)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import backfill_pipeline_spark_job
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.lake import DayLocks, Lake
from nlp_assets.resources.models import ModelResource
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import ENGINE_STAGES as ENGINE_SELECTION
from nlp_assets_tests.spark_cluster import spark_resource

ENGINE_STAGES = stage_names(ENGINE_SELECTION)

pytestmark = pytest.mark.spark

REPO = Path(__file__).parents[1]
DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
SLICE = {"bbc_news.jsonl": 8, "reviews_multilingual.jsonl": 6, "web_feedback.jsonl": 1_000}
RANGE_TAGS = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}


def _spark_config(**extra) -> dict:
    return {"ops": {s: {"config": {"engine": "spark", **extra}} for s in ENGINE_STAGES}}


def _landing(root: Path) -> Path:
    full = REPO / "data" / "landing"
    for day in DAYS:
        if not (full / day).is_dir():
            pytest.fail(f"no sample corpus under {full}: run `make data` first")
        out = root / day
        out.mkdir(parents=True)
        for name, keep in SLICE.items():
            lines = (full / day / name).read_text(encoding="utf-8").splitlines(keepends=True)
            (out / name).write_text("".join(lines[:keep]), encoding="utf-8")
    return root


def _resources(
    root: Path, landing: Path, name: str, models: ModelResource, master: str = "local[2]"
) -> dict:
    resources = build_resources(
        lake_dir=str(root / name), landing_dir=str(landing), reports_dir=str(root / "reports")
    )
    resources["models"] = models
    resources["spark"] = spark_resource(master, f"test-{name}")
    head = SentimentHead(  # fixed weights: parity, not accuracy, is under test here
        ("negative", "positive"),
        np.random.default_rng(3).normal(size=(1, models.embedder.dim)),
        np.zeros(1),
        models.embedder.name,
        models.embedder.version,
    )
    Lake(root / name).write("sentiment_model", None, head.to_frame())
    return resources


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory, spark_master: str):
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    root = tmp_path_factory.mktemp("spark_backfill")
    landing = _landing(root / "landing")
    models = ModelResource(device="cpu", dtype="float32")
    spark_res = _resources(root, landing, "lake_spark", models, spark_master)
    local_res = _resources(root, landing, "lake_local", models)
    with dg.instance_for_test() as instance:
        for day in DAYS:  # raw text per day (the landing folder's stage), then local per day
            for resources in (spark_res, local_res):
                assert dg.materialize(
                    all_assets,
                    selection=["raw_text"],
                    partition_key=day,
                    instance=instance,
                    resources=resources,
                ).success
            assert dg.materialize(
                all_assets,
                selection=list(ENGINE_STAGES),
                partition_key=day,
                instance=instance,
                resources=local_res,
            ).success
        # The preset job over the whole range, one run; spark_min_docs=0 so small days use Spark.
        job = dg.Definitions(
            assets=all_assets, jobs=[backfill_pipeline_spark_job], resources=spark_res
        ).resolve_job_def("backfill_pipeline_spark")
        result = job.execute_in_process(
            instance=instance, tags=RANGE_TAGS, run_config=_spark_config(spark_min_docs=0)
        )
        session_left = SparkSession.getActiveSession()
        # engine spark, default spark_min_docs: a small day stays in-process
        small = dg.materialize(
            all_assets,
            selection=["cleaned_text"],
            partition_key=DAYS[0],
            instance=instance,
            resources=spark_res,
            run_config={"ops": {"cleaned_text": {"config": {"engine": "spark"}}}},
        )
        yield {
            "result": result,
            "small": small,
            "session_left": session_left,
            "spark_lake": Lake(root / "lake_spark"),
            "local_lake": Lake(root / "lake_local"),
        }


def test_one_run_materialised_every_day_of_every_stage_on_spark(backfill):
    result = backfill["result"]
    assert result.success
    events = result.get_asset_materialization_events()
    seen = {(e.asset_key.to_user_string(), e.partition) for e in events}
    assert seen == {(s, d) for s in ENGINE_STAGES for d in DAYS}
    for event in events:
        assert event.materialization.metadata["engine"].text == "spark"
    checks = result.get_asset_check_evaluations()
    assert {c.asset_key.to_user_string() for c in checks} == set(ENGINE_STAGES)
    assert all(c.passed for c in checks)
    assert backfill["session_left"] is None  # the run's resource stopped its session


def test_the_range_run_held_the_lake_lock_of_each_of_its_days(backfill):
    """A range run carries no dagster/partition tag; it takes each day's lake lease instead
    (nlp_assets.lake.DayLocks), so no run of one of its days writes while it does."""
    leases = DayLocks(backfill["spark_lake"].root, "a-reader")
    # DAYS[0] was taken again afterwards by the `small` run; the others are still the range's
    assert [leases.current(day).owner for day in DAYS[1:]] == [backfill["result"].run_id] * 2
    assert leases.current(DAYS[0]).owner == backfill["small"].run_id


def test_each_day_is_written_as_its_own_whole_day_part(backfill):
    lake = backfill["spark_lake"]
    for stage in (*ENGINE_STAGES, "quarantine/cleaned_text"):
        for day in DAYS:
            assert lake.part_names(stage, day) == ["day"], (stage, day)
            frame = lake.read_day(stage, day)
            assert set(frame["ingest_date"].cast(pl.String)) <= {day}


def test_each_stage_is_one_commit_of_files_the_executors_wrote(backfill):
    """The range run's rows of a stage are one Delta version covering every day of the range,
    made of the files the executors wrote (the driver got one row per file: `files_committed`),
    and the IO manager wrote nothing more (the version is the table's last)."""
    lake = backfill["spark_lake"]
    events = backfill["result"].get_asset_materialization_events()
    for stage in ENGINE_STAGES:
        metadata = [
            e.materialization.metadata for e in events if e.asset_key.to_user_string() == stage
        ]
        versions = {m["table_version"].value for m in metadata}
        files = {m["files_committed"].value for m in metadata}
        assert len(versions) == 1 and len(files) == 1, stage
        (version,), (n_files,) = versions, files
        table = lake.table(stage)
        # the next version is another run's (the `small` run rewrote cleaned_text's first day)
        later = [
            e.materialization.metadata["table_version"].value
            for e in backfill["small"].get_asset_materialization_events()
            if e.asset_key.to_user_string() == stage
        ]
        assert table is not None and table.version() == (later or [version])[-1], stage
        assert all(v == version + 1 for v in later), stage
        log = Path(lake.table_uri(stage)) / "_delta_log" / f"{version:020d}.json"
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        adds = [e["add"] for e in entries if "add" in e]
        assert len(adds) == n_files > 0, stage
        assert {a["partitionValues"]["ingest_date"] for a in adds} == set(DAYS), stage
        rows = sum(json.loads(a["stats"])["numRecords"] for a in adds)
        assert rows == sum(lake.day_rows(stage, day) for day in DAYS), stage
        assert {m["written_by"].value for m in metadata} == {"spark executors"}


def test_nothing_lost_per_day(backfill):
    lake = backfill["spark_lake"]
    for day in DAYS:
        raw = lake.read_day("raw_text", day)
        cleaned = lake.read_day("cleaned_text", day)
        refused = lake.read_quarantine("cleaned_text", day)
        assert cleaned.height + refused.height == raw.height > 0
        assert cleaned["doc_id"].is_unique().all()
        for stage in ("tokens", "features", "predictions"):
            assert lake.read_day(stage, day)["doc_id"].sort().equals(cleaned["doc_id"].sort())


def test_range_on_spark_equals_days_on_the_local_engine(backfill):
    spark_lake, local_lake = backfill["spark_lake"], backfill["local_lake"]
    for day in DAYS:
        for stage in ("cleaned_text", "tokens", "quarantine/cleaned_text"):
            assert spark_lake.read_day(stage, day).equals(local_lake.read_day(stage, day)), stage
        spark_f = spark_lake.read_day("features", day).sort("doc_id")
        local_f = local_lake.read_day("features", day).sort("doc_id")
        assert spark_f["ngrams"].equals(local_f["ngrams"])
        terms = [[t["term"] for t in row] for row in spark_f["tfidf_terms"].to_list()]
        assert terms == [[t["term"] for t in row] for row in local_f["tfidf_terms"].to_list()]
        cosine = np.sum(spark_f["embedding"].to_numpy() * local_f["embedding"].to_numpy(), axis=1)
        assert cosine.min() >= 1 - 1e-5
        spark_p = spark_lake.read_day("predictions", day).sort("doc_id")
        local_p = local_lake.read_day("predictions", day).sort("doc_id")
        same = ["doc_id", "lang", "entities", "skipped_reason", "sentiment_model_version"]
        assert spark_p.select(same).equals(local_p.select(same))
        np.testing.assert_allclose(
            spark_p["sentiment_score"].fill_null(-1).to_numpy(),
            local_p["sentiment_score"].fill_null(-1).to_numpy(),
            atol=1e-4,
        )


def test_a_small_day_stays_in_process_even_when_spark_is_asked_for(backfill):
    small = backfill["small"]
    assert small.success
    (event,) = small.get_asset_materialization_events()
    assert event.materialization.metadata["engine"].text == "local"
